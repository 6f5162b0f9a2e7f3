//! [`LivePublish`]: the origin side of one accepted publish, shared by RTMP and SRT and free of
//! the catalog.
//!
//! ```text
//! FeedOutput ──▶ LivePublish::handle_output: Tracks → hls::Rendition "source" (plus the ladder's
//!                  renditions) → LiveRegistry::open; samples → LiveHandle::push_video / push_audio
//!                  and, for the ladder, LadderRun::video / audio
//!                  │ however the publish stops
//!                  ▼
//!                LivePublish::finish: the ladder stops, LiveHandle::finish
//! ```
//!
//! The gate's sink (in the node, over the catalog) owns one of these per publish and adds what
//! the catalog needs: the session start, the renditions list ([`LivePublish::take_renditions`]),
//! the session end.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::time::Instant;

use super::gate::{Protocol, StreamRefused};
use super::ladder::{Ladder, LadderRun, LadderSource};
use super::packager_feed::FeedOutput;
use super::tap::{TapSource, TrackTap};
use super::{IngestConfig, IngestMetrics};
use crate::clock::{now_millis, UnixMillis};
use crate::cmaf::{AudioConfig, VideoConfig};
use crate::hls::{Pushed, Rendition, RenditionConfig};
use crate::origin::{LiveHandle, LiveRegistry, LiveRendition, OriginError};

/// The one rendition ingest produces; transcoding adds the others.
pub const SOURCE_RENDITION: &str = "source";

/// See the module docs. Feed it with [`LivePublish::handle_output`]; end it with
/// [`LivePublish::finish`].
pub struct LivePublish {
    channel_id: String,
    session_id: String,
    peer: SocketAddr,
    protocol: Protocol,
    registry: LiveRegistry,
    rendition: RenditionConfig,
    ladder_hook: Option<std::sync::Arc<dyn Ladder>>,
    tap_hook: Option<std::sync::Arc<dyn TrackTap>>,
    live: Option<LiveHandle>,
    /// The transcode of this publish, fed what `source` accepts.
    ladder: Option<Box<dyn LadderRun>>,
    /// The renditions served once the ladder joined, until taken.
    renditions: Option<Vec<String>>,
    accepted_at: Instant,
    /// The broadcast's first media sequence number when it is not this publish's to choose (a
    /// relayed source joined mid-broadcast, see [`LivePublish::starting_at`]).
    first_msn: Option<u64>,
    first_part_published: bool,
    dropped: IntCounter,
    rejected_origin: IntCounter,
}

impl LivePublish {
    /// A publish of `channel_id` accepted as `session_id`; nothing is opened in the origin until
    /// the feed knows the tracks.
    pub fn new(
        registry: LiveRegistry,
        config: &IngestConfig,
        metrics: &IngestMetrics,
        channel_id: String,
        session_id: String,
        peer: SocketAddr,
        protocol: Protocol,
    ) -> Self {
        LivePublish {
            dropped: metrics.dropped_frames.with_label_values(&[&channel_id]),
            rejected_origin: metrics.rejected.with_label_values(&["origin"]),
            channel_id,
            session_id,
            peer,
            protocol,
            registry,
            rendition: config.rendition.clone(),
            ladder_hook: config.ladder.clone(),
            tap_hook: config.tap.clone(),
            live: None,
            ladder: None,
            renditions: None,
            accepted_at: Instant::now(),
            first_msn: None,
            first_part_published: false,
        }
    }

    /// Packages from media sequence number `msn` instead of one derived from the clock: a
    /// transcode node re-packaging a relayed `source` from the segment it joined at, so its
    /// renditions are numbered as the ingest node numbers `source`.
    pub fn starting_at(mut self, msn: u64) -> Self {
        self.first_msn = Some(msn);
        self
    }

    pub fn channel_id(&self) -> &str {
        &self.channel_id
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Time since the publish was accepted.
    pub fn elapsed(&self) -> Duration {
        self.accepted_at.elapsed()
    }

    /// The renditions this publish is served in, once the transcode ladder joined (`source`
    /// first); `None` before, after the first call, or without a ladder.
    pub fn take_renditions(&mut self) -> Option<Vec<String>> {
        self.renditions.take()
    }

    /// Moves one output of the feed into the origin. Err: the origin takes no more of this
    /// stream (logged); the publish should end.
    pub fn handle_output(&mut self, output: FeedOutput) -> Result<(), StreamRefused> {
        self.handle_output_at(output, now_millis())
    }

    /// [`LivePublish::handle_output`] with the wall clock the sample is dated with: a relayed
    /// sample keeps the one the ingest node gave it.
    pub fn handle_output_at(&mut self, output: FeedOutput, now: UnixMillis) -> Result<(), StreamRefused> {
        let (video, sample) = match output {
            FeedOutput::Tracks { video, audio } => return self.open_live(video, audio),
            FeedOutput::Video(sample) => (true, sample),
            FeedOutput::Audio(sample) => (false, sample),
        };
        // Tracks always come first; without a stream there is nothing to feed.
        let Some(live) = &self.live else { return Ok(()) };
        // The ladder gets what `source` accepted, so every rendition starts at the same keyframe
        // (the relay's taps are fed by the registry itself, see `LiveFeed::set_tap`).
        let copy = self.ladder.is_some().then(|| sample.clone());
        let (pushed, opened) = if video {
            match live.push_video_opening(0, sample, now) {
                Ok((pushed, opened)) => (Ok(pushed), opened),
                Err(error) => (Err(error), None),
            }
        } else {
            (live.push_audio(0, sample, now), None)
        };
        if let (Some(copy), Ok(Pushed::Buffered | Pushed::Published(_))) = (copy, &pushed) {
            if let Some(ladder) = &mut self.ladder {
                if video {
                    ladder.video(&copy, now, opened);
                } else {
                    ladder.audio(&copy, now);
                }
            }
        }
        match pushed {
            Ok(Pushed::Published(_)) if !self.first_part_published => {
                self.first_part_published = true;
                tracing::info!(channel = %self.channel_id, session = %self.session_id,
                    after_ms = self.accepted_at.elapsed().as_millis() as u64, "first part published");
            }
            Ok(Pushed::Dropped(_)) => self.dropped.inc(),
            Ok(_) => {}
            Err(OriginError::Rendition { source, .. }) => {
                // The packager refused one sample; the stream goes on with the next.
                self.dropped.inc();
                tracing::debug!(channel = %self.channel_id, error = %source, "sample dropped");
            }
            Err(error) => {
                tracing::warn!(peer = %self.peer, channel = %self.channel_id, %error,
                    "origin stopped taking this stream; closing");
                return Err(StreamRefused);
            }
        }
        Ok(())
    }

    fn open_live(&mut self, video: Option<VideoConfig>, audio: Option<AudioConfig>) -> Result<(), StreamRefused> {
        let describe = format!(
            "video {} audio {}",
            video.as_ref().map_or("none".into(), |v| format!("{} {}x{}", v.codec_string, v.width, v.height)),
            audio
                .as_ref()
                .map_or("none".into(), |a| format!("{} {} Hz {} ch", a.codec_string, a.sample_rate, a.channels)),
        );
        let config = RenditionConfig {
            name: SOURCE_RENDITION.to_owned(),
            first_msn: self.first_msn.unwrap_or_else(|| first_msn_at(now_millis())),
            ..self.rendition.clone()
        };
        let mut ladder = match (&self.ladder_hook, &video) {
            (Some(ladder), Some(v)) => ladder.start(&LadderSource {
                channel_id: &self.channel_id,
                session_id: &self.session_id,
                video: v,
                audio: audio.as_ref(),
            }),
            _ => None,
        };
        let mut renditions = Vec::new();
        let mut names = vec![SOURCE_RENDITION.to_owned()];
        for rung in ladder.as_ref().map(|l| l.renditions()).unwrap_or_default() {
            names.push(rung.name.clone());
            let config = RenditionConfig { name: rung.name, ..config.clone() };
            match Rendition::new(config, Some(rung.video), audio.clone()) {
                Ok(r) => renditions.push(LiveRendition::new(r).with_bitrate(rung.bitrate)),
                Err(error) => {
                    // A rung we cannot package: serve the source alone rather than refuse it.
                    tracing::warn!(channel = %self.channel_id, %error, "transcode disabled for this publish");
                    ladder = None;
                    renditions.clear();
                    names.truncate(1);
                    break;
                }
            }
        }
        // What the relay publishes: every rendition, each with its own video track.
        let tracks: Vec<(String, Option<VideoConfig>)> = std::iter::once((SOURCE_RENDITION.to_owned(), video.clone()))
            .chain(renditions.iter().map(|r| (r.rendition.name().to_owned(), r.rendition.video_config().cloned())))
            .collect();
        let packaging = config.clone();
        let opened = Rendition::new(config, video, audio.clone()).map_err(|e| e.to_string()).and_then(|r| {
            renditions.insert(0, LiveRendition::new(r));
            self.registry.open(&self.channel_id, &self.session_id, renditions).map_err(|e| e.to_string())
        });
        match opened {
            Ok(live) => {
                tracing::info!(channel = %self.channel_id, tracks = %describe, "packaging started");
                if let Some(hook) = &self.tap_hook {
                    for (index, (name, video)) in tracks.iter().enumerate() {
                        let tap = hook.start(&TapSource {
                            channel_id: &self.channel_id,
                            session_id: &self.session_id,
                            rendition: name,
                            video: video.as_ref(),
                            audio: audio.as_ref(),
                            packaging: &RenditionConfig { name: name.clone(), ..packaging.clone() },
                        });
                        if let Some(tap) = tap {
                            live.feed().set_tap(index, tap);
                        }
                    }
                }
                if let Some(ladder) = &mut ladder {
                    ladder.attach(live.feed());
                    self.renditions = Some(names);
                }
                self.ladder = ladder;
                self.live = Some(live);
                Ok(())
            }
            Err(error) => {
                self.rejected_origin.inc();
                tracing::warn!(peer = %self.peer, channel = %self.channel_id, tracks = %describe, %error,
                    "cannot package this stream; closing");
                Err(StreamRefused)
            }
        }
    }

    /// Ends the origin side (the last output was handed over): the transcode threads stop (they
    /// notice the closed queue), then the stream finishes and its window stays servable for the
    /// registry's retention.
    pub fn finish(&mut self) {
        self.ladder = None;
        if let Some(live) = self.live.take() {
            live.finish();
        }
    }
}

/// First media sequence number of a broadcast starting at `now`: the wall clock in tenths of a
/// second. Segments are longer than that, so a later broadcast of the same channel always starts
/// above every number an earlier one used, and no part or segment URL is ever reused.
fn first_msn_at(now: UnixMillis) -> u64 {
    u64::try_from(now / 100).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::first_msn_at;

    #[test]
    fn a_later_broadcast_starts_above_an_hour_long_earlier_one() {
        let start = 1_790_000_000_000;
        let first = first_msn_at(start);
        // An hour of 1 s segments, then a reconnect ten seconds later.
        let last_of_first = first + 3600;
        let second = first_msn_at(start + 3_610_000);
        assert!(second > last_of_first, "{second} <= {last_of_first}");
        assert_eq!(first_msn_at(-5), 0);
    }
}
