//! The publish lifecycle shared by RTMP and SRT ingest: the catalog decides, the origin takes the
//! stream.
//!
//! ```text
//! stream key ──▶ CatalogGate::start: key hash → channel (local read, linearizable fallback),
//!                 one publisher per channel on this node, StartSession
//!                   │ Publish
//!                   ▼
//! BridgeOutput ──▶ Publish::handle_output: Tracks → hls::Rendition "source" → LiveRegistry::open,
//!                                         samples → LiveHandle::push_video / push_audio
//!                   │ however the publish stops
//!                   ▼
//!                 Publish::end: LiveHandle::finish, EndIngestSession (only if the session is still ours)
//! ```
//!
//! One [`CatalogGate`] serves every protocol of a node: the set of channels it is publishing is
//! what tells this node's live sessions from stale ones left by a crash, so RTMP and SRT must share
//! it (otherwise a second publisher on the other protocol would "end a stale session" that is
//! live).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::IntCounter;
use raft::{now_millis, Catalog, CatalogError, Command, ProposeError, StreamSession};
use tokio::time::Instant;

use super::bridge::BridgeOutput;
use super::ladder::{LadderRun, LadderSource};
use super::srt::{self, FrameCounts, PublishGate, PublishSink, StreamRefused};
use super::{key_prefix, stream_key_hash, IngestConfig, IngestMetrics};
use crate::hls::{Pushed, Rendition};
use crate::origin::{LiveHandle, LiveRegistry, LiveRendition, OriginError};

/// The one rendition ingest produces; transcoding adds the others.
pub const SOURCE_RENDITION: &str = "source";
/// Bound on each catalog round trip made while a publisher waits for an answer.
const CATALOG_TIMEOUT: Duration = Duration::from_secs(10);

/// Decides publishes from the catalog and opens accepted streams in the origin. Cheap to clone;
/// clones share the set of channels being published.
#[derive(Clone)]
pub struct CatalogGate {
    shared: Arc<Shared>,
}

struct Shared {
    catalog: Catalog,
    registry: LiveRegistry,
    config: IngestConfig,
    metrics: IngestMetrics,
    /// Channels this process is publishing (or about to): refuses a second publisher without a
    /// catalog round trip, and tells our own stale sessions (left by a crash) from live ones.
    publishing: Mutex<HashSet<String>>,
}

/// Why a publish was refused. Each protocol maps it to its own answer; the gate has logged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    UnknownKey,
    /// The channel is live: another publisher, here or on another node.
    AlreadyLive,
    /// The catalog could not be read in time.
    CatalogUnavailable,
    /// The catalog did not commit `StartSession`.
    SessionNotStarted,
    /// No randomness for a session id.
    NoRandomness,
}

impl Refused {
    /// The `reason` label of `bitriver_ingest_rejected_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refused::UnknownKey => "bad_key",
            Refused::AlreadyLive => "already_live",
            Refused::CatalogUnavailable | Refused::SessionNotStarted => "catalog",
            Refused::NoRandomness => "internal",
        }
    }
}

impl From<Refused> for srt::Refusal {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::UnknownKey => srt::Refusal::UnknownKey,
            Refused::AlreadyLive => srt::Refusal::AlreadyLive,
            Refused::CatalogUnavailable | Refused::SessionNotStarted | Refused::NoRandomness => {
                srt::Refusal::Unavailable
            }
        }
    }
}

impl CatalogGate {
    pub fn new(catalog: Catalog, registry: LiveRegistry, config: IngestConfig, metrics: IngestMetrics) -> Self {
        let publishing = Mutex::new(HashSet::new());
        CatalogGate { shared: Arc::new(Shared { catalog, registry, config, metrics, publishing }) }
    }

    pub fn config(&self) -> &IngestConfig {
        &self.shared.config
    }

    pub fn metrics(&self) -> &IngestMetrics {
        &self.shared.metrics
    }

    /// Channels this node is publishing (or about to): the ingest leases it should renew.
    pub fn publishing(&self) -> HashSet<String> {
        self.shared.publishing.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// May `stream_key` publish? On yes, the catalog session has been started. `protocol`
    /// (`RTMP`, `SRT`) only names the ingest in logs.
    pub(crate) async fn start(
        &self,
        peer: SocketAddr,
        protocol: &'static str,
        stream_key: &str,
    ) -> Result<Publish, Refused> {
        let shared = &self.shared;
        let catalog = &shared.catalog;
        let hash = stream_key_hash(stream_key);
        // The lookup is keyed by the SHA-256 of the key, so no comparison of secret bytes happens
        // here that could leak timing about a stored key (the hash of a wrong key says nothing
        // about the right one).
        let lookup = |s: &raft::state::CatalogState| {
            s.channel_by_stream_key_hash(&hash).map(|c| {
                let current = c.current_session_id.as_ref().and_then(|id| s.session(id)).cloned();
                (c.id.clone(), current)
            })
        };
        let found = match catalog.read(lookup) {
            Some(found) => Some(found),
            // Not in this replica yet: the channel may have been created a moment ago elsewhere.
            None => match tokio::time::timeout(CATALOG_TIMEOUT, catalog.read_linearizable(lookup)).await {
                Ok(Ok(found)) => found,
                Ok(Err(error)) => {
                    tracing::warn!(%peer, %error, "{protocol} publish refused: catalog unavailable");
                    return Err(Refused::CatalogUnavailable);
                }
                Err(_) => {
                    tracing::warn!(%peer, "{protocol} publish refused: catalog read timed out");
                    return Err(Refused::CatalogUnavailable);
                }
            },
        };
        let Some((channel_id, current)) = found else {
            tracing::warn!(%peer, key_prefix = %key_prefix(stream_key), "{protocol} publish refused: unknown stream key");
            return Err(Refused::UnknownKey);
        };
        let already_live = || {
            tracing::warn!(%peer, channel = %channel_id,
                "{protocol} publish refused: channel already live (second publisher)");
            Err(Refused::AlreadyLive)
        };
        let Some(reservation) = Reservation::take(shared, &channel_id) else { return already_live() };
        if let Some(current) = current {
            if current.ingest_node != Some(catalog.node_id()) {
                return already_live();
            }
            // Our node's session, but no publish of ours holds the channel: left over from a
            // crash or a lost EndSession. End it and let this publish take over.
            tracing::info!(%peer, channel = %channel_id, stale_session = %current.id, "ending a stale session of this node");
            let end = Command::EndIngestSession {
                channel_id: channel_id.clone(),
                session_id: current.id.clone(),
                ended_at: now_millis(),
            };
            if let Err(error) = propose(catalog, end).await {
                tracing::warn!(%peer, channel = %channel_id, %error, "could not end the stale session");
            }
        }
        let Ok(session_id) = new_session_id() else { return Err(Refused::NoRandomness) };
        let session = StreamSession {
            id: session_id.clone(),
            channel_id: channel_id.clone(),
            started_at: now_millis(),
            ended_at: None,
            renditions: vec![SOURCE_RENDITION.to_owned()],
            peak_concurrent: 0,
            ingest_node: Some(catalog.node_id()),
        };
        match propose(catalog, Command::StartSession(session)).await {
            Ok(()) => {}
            Err(ProposeError::Rejected(CatalogError::AlreadyLive { .. })) => return already_live(),
            Err(error) => {
                tracing::warn!(%peer, channel = %channel_id, %error,
                    "{protocol} publish refused: could not start the session");
                return Err(Refused::SessionNotStarted);
            }
        }
        let m = &shared.metrics;
        Ok(Publish {
            bytes: m.bytes.with_label_values(&[&channel_id]),
            video_frames: m.frames.with_label_values(&[&channel_id, "video"]),
            audio_frames: m.frames.with_label_values(&[&channel_id, "audio"]),
            dropped: m.dropped_frames.with_label_values(&[&channel_id]),
            channel_id,
            session_id,
            peer,
            protocol,
            live: None,
            ladder: None,
            accepted_at: Instant::now(),
            first_part_published: false,
            reservation,
        })
    }
}

impl PublishGate for CatalogGate {
    type Publish = Publish;

    async fn start_publish(&self, peer: SocketAddr, stream_key: &str) -> Result<Publish, srt::Refusal> {
        self.start(peer, "SRT", stream_key).await.map_err(srt::Refusal::from)
    }
}

fn new_session_id() -> Result<String, ring::error::Unspecified> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 12];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A channel reserved for a publish on this node; released (and the publisher count decreased)
/// on drop, whatever way the connection ends.
struct Reservation {
    shared: Arc<Shared>,
    channel_id: String,
    counted: bool,
}

impl Reservation {
    fn take(shared: &Arc<Shared>, channel_id: &str) -> Option<Self> {
        let mut publishing = shared.publishing.lock().unwrap_or_else(PoisonError::into_inner);
        publishing.insert(channel_id.to_owned()).then(|| Reservation {
            shared: shared.clone(),
            channel_id: channel_id.to_owned(),
            counted: false,
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shared.publishing.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.channel_id);
        if self.counted {
            self.shared.metrics.active_publishers.dec();
        }
    }
}

/// An accepted publish: the catalog session, and the origin stream once the tracks are known.
/// Feed it the bridge's output with [`Publish::handle_output`]; end it with [`Publish::end`].
pub struct Publish {
    channel_id: String,
    session_id: String,
    peer: SocketAddr,
    protocol: &'static str,
    live: Option<LiveHandle>,
    /// The transcode of this publish, fed what `source` accepts.
    ladder: Option<Box<dyn LadderRun>>,
    accepted_at: Instant,
    first_part_published: bool,
    bytes: IntCounter,
    video_frames: IntCounter,
    audio_frames: IntCounter,
    dropped: IntCounter,
    reservation: Reservation,
}

impl Publish {
    pub fn channel_id(&self) -> &str {
        &self.channel_id
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Counts this publish in `bitriver_ingest_active_publishers` until it ends. (The SRT driver
    /// counts its connections itself.)
    pub(crate) fn count_publisher(&mut self) {
        self.reservation.counted = true;
        self.reservation.shared.metrics.active_publishers.inc();
    }

    pub(crate) fn bytes(&self) -> &IntCounter {
        &self.bytes
    }

    pub(crate) fn frames(&self, video: bool) -> &IntCounter {
        if video {
            &self.video_frames
        } else {
            &self.audio_frames
        }
    }

    pub(crate) fn dropped(&self) -> &IntCounter {
        &self.dropped
    }

    /// Moves one output of the bridge into the origin. Err: the origin takes no more of this
    /// stream (logged); the publish should end.
    pub fn handle_output(&mut self, output: BridgeOutput) -> Result<(), StreamRefused> {
        let (video, sample) = match output {
            BridgeOutput::Tracks { video, audio } => return self.open_live(video, audio),
            BridgeOutput::Video(sample) => (true, sample),
            BridgeOutput::Audio(sample) => (false, sample),
        };
        // Tracks always come first; without a stream there is nothing to feed.
        let Some(live) = &self.live else { return Ok(()) };
        let now = now_millis();
        // The ladder gets what `source` accepted, so every rendition starts at the same keyframe.
        let copy = self.ladder.is_some().then(|| sample.clone());
        let opened_before = if copy.is_some() && video && sample.keyframe { live.open_segment(0) } else { None };
        let pushed = if video { live.push_video(0, sample, now) } else { live.push_audio(0, sample, now) };
        if let (Some(ladder), Some(copy), Ok(Pushed::Buffered | Pushed::Published(_))) =
            (&mut self.ladder, copy, &pushed)
        {
            if video {
                let opened =
                    if copy.keyframe { live.open_segment(0).filter(|&msn| Some(msn) != opened_before) } else { None };
                ladder.video(&copy, now, opened);
            } else {
                ladder.audio(&copy, now);
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

    fn open_live(
        &mut self,
        video: Option<crate::cmaf::VideoConfig>,
        audio: Option<crate::cmaf::AudioConfig>,
    ) -> Result<(), StreamRefused> {
        let shared = &self.reservation.shared;
        let describe = format!(
            "video {} audio {}",
            video.as_ref().map_or("none".into(), |v| format!("{} {}x{}", v.codec_string, v.width, v.height)),
            audio
                .as_ref()
                .map_or("none".into(), |a| format!("{} {} Hz {} ch", a.codec_string, a.sample_rate, a.channels)),
        );
        let config = crate::hls::RenditionConfig {
            name: SOURCE_RENDITION.to_owned(),
            first_msn: first_msn_at(now_millis()),
            ..shared.config.rendition.clone()
        };
        let mut ladder = match (&shared.config.ladder, &video) {
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
            let config = crate::hls::RenditionConfig { name: rung.name, ..config.clone() };
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
        let opened = Rendition::new(config, video, audio).map_err(|e| e.to_string()).and_then(|r| {
            renditions.insert(0, LiveRendition::new(r));
            shared.registry.open(&self.channel_id, &self.session_id, renditions).map_err(|e| e.to_string())
        });
        match opened {
            Ok(live) => {
                tracing::info!(channel = %self.channel_id, tracks = %describe, "packaging started");
                if let Some(ladder) = &mut ladder {
                    ladder.attach(live.feed());
                    self.record_renditions(names);
                }
                self.ladder = ladder;
                self.live = Some(live);
                Ok(())
            }
            Err(error) => {
                shared.metrics.rejected.with_label_values(&["origin"]).inc();
                tracing::warn!(peer = %self.peer, channel = %self.channel_id, tracks = %describe, %error,
                    "cannot package this stream; closing");
                Err(StreamRefused)
            }
        }
    }

    /// Records the renditions this publish is served in on its catalog session (the session was
    /// started with `source` alone, before the ladder knew the source). In the background: the
    /// stream is already being served, and a failure only leaves the session's list short.
    fn record_renditions(&self, renditions: Vec<String>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let catalog = self.reservation.shared.catalog.clone();
        let (channel, session_id) = (self.channel_id.clone(), self.session_id.clone());
        runtime.spawn(async move {
            let command = Command::SetSessionRenditions { session_id, renditions };
            if let Err(error) = propose(&catalog, command).await {
                tracing::warn!(%channel, %error, "could not record the session's renditions");
            }
        });
    }

    /// Ends the publish (the last output was handed over): the origin stream finishes and the
    /// catalog session ends.
    pub async fn end(mut self, why: &str) {
        // Stops the transcode threads (they notice the closed queue), then ends the stream.
        self.ladder = None;
        if let Some(live) = self.live.take() {
            live.finish();
        }
        let catalog = &self.reservation.shared.catalog;
        // End only our own session: an admin may have ended it and a new one started meanwhile.
        let ours = catalog.read(|s| {
            s.channel(&self.channel_id).and_then(|c| c.current_session_id.clone()).as_deref()
                == Some(self.session_id.as_str())
        });
        if ours {
            // Fenced by the session id: if this node was cut off and the channel went live
            // elsewhere meanwhile, this end must not touch the newer session.
            let end = Command::EndIngestSession {
                channel_id: self.channel_id.clone(),
                session_id: self.session_id.clone(),
                ended_at: now_millis(),
            };
            if let Err(error) = propose(catalog, end).await {
                tracing::warn!(channel = %self.channel_id, session = %self.session_id, %error, "could not end the session");
            }
        }
        tracing::info!(peer = %self.peer, channel = %self.channel_id, session = %self.session_id,
            seconds = self.accepted_at.elapsed().as_secs(), reason = why, "{} publish ended", self.protocol);
    }
}

impl PublishSink for Publish {
    fn channel_id(&self) -> &str {
        &self.channel_id
    }

    fn handle_output(&mut self, output: BridgeOutput) -> Result<(), StreamRefused> {
        Publish::handle_output(self, output)
    }

    fn count(&mut self, counts: FrameCounts) {
        self.video_frames.inc_by(counts.video);
        self.audio_frames.inc_by(counts.audio);
        self.dropped.inc_by(counts.dropped);
    }

    async fn end(self, why: &'static str) {
        Publish::end(self, why).await;
    }
}

/// Proposes with a bound on the wait (the publisher is waiting, or the connection is ending).
async fn propose(catalog: &Catalog, command: Command) -> Result<(), ProposeError> {
    match tokio::time::timeout(CATALOG_TIMEOUT, catalog.propose(command)).await {
        Ok(result) => result.map(drop),
        Err(_) => Err(ProposeError::Unavailable("timed out".into())),
    }
}

/// First media sequence number of a broadcast starting at `now`: the wall clock in tenths of a
/// second. Segments are longer than that, so a later broadcast of the same channel always starts
/// above every number an earlier one used, and no part or segment URL is ever reused.
fn first_msn_at(now: raft::UnixMillis) -> u64 {
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
