//! SRT ingest: encoders publish MPEG-TS over SRT (caller mode) to our listener.
//!
//! ```text
//! UDP ──▶ srt-tokio listener ── ConnectionRequest(stream id) ──▶ parse_stream_id ──▶ PublishGate
//!                                 ▲ reject (handshake)                               │ accept
//!                                 └──────────────────────────────────────────────────┘
//!         SRT socket ── TS payload ──▶ TsToCmaf (sans-IO: ts::TsDemuxer → PackagerFeed) ──▶ PublishSink
//! ```
//!
//! The SRT protocol itself is srt-tokio's (see the report in the module's PR for why, and for the
//! interop check against ffmpeg's libsrt caller). Access control happens in the handshake: the
//! caller's stream id is parsed with [`parse_stream_id`] and the key is handed to the
//! [`PublishGate`] (shared with RTMP); a refused key is rejected with an SRT
//! reject code before any media flows, so the encoder sees "connection rejected".
//!
//! Stream ids accepted: `#!::r=live/KEY,m=publish` (keys of the `#!::` list in any order; a
//! missing `m` means publish since this listener only ingests), `#!::r=KEY`, `live/KEY` and the
//! bare `KEY`. `m=request` (playback) and other modes are refused.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::{ConnectionRequest, SrtListener};
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::gate::{Protocol, PublishGate, PublishSink, Refusal, StreamRefused};
use super::packager_feed::{FeedError, FeedOutput, FrameCounts, PackagerFeed};
use super::{key_prefix, FrameCounters, IngestMetrics};
use crate::ts::{TsDemuxer, TsStats};

/// Longest stream id accepted (SRT allows 512 bytes).
const MAX_STREAM_ID: usize = 512;
/// The application part of `r=live/KEY`, as in `rtmp://host/live/KEY`.
const APP: &str = "live";

/// What the caller asks for in its stream id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamId {
    /// The stream key (secret).
    pub key: String,
}

/// Why a stream id was refused. Carries no key material (safe to log).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StreamIdError {
    #[error("no stream id (set streamid=#!::r=live/KEY,m=publish)")]
    Missing,
    #[error("stream id longer than {MAX_STREAM_ID} bytes")]
    TooLong,
    #[error("stream id asks for playback (m=request); this listener only takes publishers (m=publish)")]
    Playback,
    #[error("unsupported mode m={0} (use m=publish)")]
    UnsupportedMode(String),
    #[error("no stream key in the stream id (use r=live/KEY)")]
    NoKey,
    /// The application part of `r=APP/KEY` is not `live`.
    #[error("application {0:?} in the stream id is not live (use r=live/KEY)")]
    BadApp(String),
    #[error("stream key has characters outside printable ASCII")]
    BadKey,
}

/// Parses an SRT stream id into the publish request it makes. Pure; see the module docs for
/// the forms accepted.
pub fn parse_stream_id(stream_id: &str) -> Result<StreamId, StreamIdError> {
    if stream_id.len() > MAX_STREAM_ID {
        return Err(StreamIdError::TooLong);
    }
    let stream_id = stream_id.trim_end_matches('\0').trim();
    if stream_id.is_empty() {
        return Err(StreamIdError::Missing);
    }
    let resource = match stream_id.strip_prefix("#!::") {
        Some(list) => {
            let mut resource = None;
            for item in list.split(',') {
                let (name, value) = item.split_once('=').unwrap_or((item, ""));
                match name.trim() {
                    "r" => resource = Some(value.trim()),
                    "m" => match value.trim() {
                        "publish" => {}
                        "request" => return Err(StreamIdError::Playback),
                        other => return Err(StreamIdError::UnsupportedMode(other.chars().take(32).collect())),
                    },
                    // u (user), s (session), t (type), h (host) and custom keys: not used.
                    _ => {}
                }
            }
            resource.ok_or(StreamIdError::NoKey)?
        }
        None => stream_id,
    };
    let key = match resource.split_once('/') {
        Some((APP, key)) => key,
        Some((app, _)) => return Err(StreamIdError::BadApp(app.chars().take(32).collect())),
        None => resource,
    };
    if key.is_empty() {
        return Err(StreamIdError::NoKey);
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) || key.contains('/') {
        return Err(StreamIdError::BadKey);
    }
    Ok(StreamId { key: key.to_owned() })
}

/// Sans-IO: SRT payload (MPEG-TS) in, CMAF tracks and samples out: the demuxer's typed inputs
/// (90 kHz timestamps as the stream carries them) go straight into the same [`PackagerFeed`] as
/// RTMP's. After each `handle_input`, drain [`TsToCmaf::poll_output`].
#[derive(Debug, Default)]
pub struct TsToCmaf {
    demuxer: TsDemuxer,
    feed: PackagerFeed,
    /// Frames accepted by the feed (video, audio) and dropped since the last take.
    counts: FrameCounts,
}

impl TsToCmaf {
    pub fn new() -> Self {
        Self::default()
    }

    /// One SRT message (or any piece of the transport stream).
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), FeedError> {
        self.demuxer.handle_input(data);
        self.pump()
    }

    /// The publish ended: flush the demuxer and the feed.
    pub fn finish(&mut self) -> Result<(), FeedError> {
        self.demuxer.finish();
        let pumped = self.pump();
        self.feed.finish();
        self.counts.dropped += self.feed.take_dropped();
        pumped
    }

    /// The next track set or sample, in order.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<FeedOutput> {
        self.feed.poll_output()
    }

    pub fn take_counts(&mut self) -> FrameCounts {
        std::mem::take(&mut self.counts)
    }

    /// What the demuxer skipped or repaired.
    pub fn ts_stats(&self) -> &TsStats {
        self.demuxer.stats()
    }

    fn pump(&mut self) -> Result<(), FeedError> {
        let demuxer = &mut self.demuxer;
        self.feed.pump(std::iter::from_fn(|| demuxer.poll_event()), &mut self.counts)
    }
}

/// The SRT reject code an encoder sees for a refusal.
fn reject_reason(refusal: Refusal) -> RejectReason {
    RejectReason::Server(match refusal {
        // 2403 Forbidden.
        Refusal::UnknownKey => ServerRejectReason::Forbidden,
        // 2409 Conflict.
        Refusal::AlreadyLive => ServerRejectReason::Conflict,
        // 2503 Down: the encoder may retry.
        _ => ServerRejectReason::Down,
    })
}

/// Settings of the SRT ingest.
#[derive(Debug, Clone)]
pub struct SrtConfig {
    /// Publishers at once; more are rejected in the handshake (SRT 2402 Overload). Default 256.
    pub max_connections: usize,
    /// Receiver latency (the caller's may raise it). Default 200 ms, ffmpeg's `latency=200000`.
    pub latency: Duration,
    /// Longest silence from a publisher before it is dropped. Default 10 s.
    pub idle_timeout: Duration,
    /// Bound on the gate's decision while the caller's handshake waits. Default 5 s (libsrt
    /// callers give up after 3 s by default and retry).
    pub decision_timeout: Duration,
    /// How long shutdown waits for publishes to wind down. Default 5 s.
    pub shutdown_grace: Duration,
}

impl Default for SrtConfig {
    fn default() -> Self {
        SrtConfig {
            max_connections: 256,
            latency: Duration::from_millis(200),
            idle_timeout: Duration::from_secs(10),
            decision_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Accepts SRT publishers on `socket` (UDP, already bound) until `shutdown` is cancelled, then winds
/// the publishes down for at most [`SrtConfig::shutdown_grace`].
pub async fn serve_srt<G: PublishGate>(
    socket: UdpSocket,
    gate: Arc<G>,
    config: SrtConfig,
    metrics: IngestMetrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = socket.local_addr()?;
    let (mut listener, mut incoming) =
        SrtListener::builder().socket(socket).latency(config.latency).bind(local).await?;
    tracing::info!(addr = %local, "SRT ingest listening");
    let limit = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    loop {
        let request = tokio::select! {
            request = incoming.incoming().next() => match request {
                Some(request) => request,
                None => break,
            },
            () = shutdown.cancelled() => break,
        };
        while tasks.try_join_next().is_some() {}
        let connection =
            Connection { gate: gate.clone(), config: config.clone(), metrics: metrics.clone(), limit: limit.clone() };
        tasks.spawn(connection.run(request, stop_rx.clone()));
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(config.shutdown_grace, async { while tasks.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::warn!(left = tasks.len(), "SRT publishes did not wind down in time; aborting them");
        tasks.shutdown().await;
    }
    listener.close().await;
    Ok(())
}

struct Connection<G> {
    gate: Arc<G>,
    config: SrtConfig,
    metrics: IngestMetrics,
    limit: Arc<Semaphore>,
}

impl<G: PublishGate> Connection<G> {
    async fn run(self, request: ConnectionRequest, mut stop: watch::Receiver<bool>) {
        let peer = request.remote();
        let rejected = |label: &str| self.metrics.rejected.with_label_values(&[label]).inc();
        let stream_id = request.stream_id().map(|s| s.to_string()).unwrap_or_default();
        let key = match parse_stream_id(&stream_id) {
            Ok(id) => id.key,
            Err(error) => {
                rejected("stream_id");
                tracing::warn!(%peer, %error, "SRT connection refused: bad stream id");
                let reason = match error {
                    StreamIdError::Playback | StreamIdError::UnsupportedMode(_) => ServerRejectReason::BadMode,
                    _ => ServerRejectReason::BadRequest,
                };
                let _ = request.reject(RejectReason::Server(reason)).await;
                return;
            }
        };
        let Ok(permit) = self.limit.clone().try_acquire_owned() else {
            rejected("connection_limit");
            tracing::warn!(%peer, max = self.config.max_connections, "SRT connection refused: too many publishers");
            let _ = request.reject(RejectReason::Server(ServerRejectReason::Overload)).await;
            return;
        };
        let decided =
            tokio::time::timeout(self.config.decision_timeout, self.gate.start_publish(peer, Protocol::Srt, &key))
                .await;
        let publish = match decided {
            Ok(Ok(publish)) => publish,
            Ok(Err(refusal)) => {
                rejected(refusal.label());
                tracing::warn!(%peer, key_prefix = %key_prefix(&key), reason = refusal.label(),
                    "SRT publish refused in the handshake");
                let _ = request.reject(reject_reason(refusal)).await;
                return;
            }
            Err(_) => {
                rejected("catalog");
                tracing::warn!(%peer, "SRT publish refused: decision timed out");
                let _ = request.reject(reject_reason(Refusal::CatalogUnavailable)).await;
                return;
            }
        };
        let mut socket = match request.accept(None).await {
            Ok(socket) => socket,
            Err(error) => {
                tracing::info!(%peer, %error, "SRT caller left during the handshake");
                publish.end("handshake failed").await;
                return;
            }
        };
        self.metrics.active_publishers.inc();
        let counters = FrameCounters::new(&self.metrics, publish.channel_id());
        let bytes = self.metrics.bytes.with_label_values(&[publish.channel_id()]);
        tracing::info!(%peer, channel = %publish.channel_id(), session = %publish.session_id(), "SRT publish accepted");
        let mut publish = publish;
        let mut media = TsToCmaf::new();
        let why = loop {
            let received = tokio::select! {
                received = tokio::time::timeout(self.config.idle_timeout, socket.next()) => received,
                _ = stop.wait_for(|stop| *stop) => break "node shutting down",
            };
            let data = match received {
                Err(_) => {
                    tracing::warn!(%peer, channel = %publish.channel_id(), timeout = ?self.config.idle_timeout,
                        "SRT publisher stalled: no data; closing");
                    break "stalled";
                }
                Ok(None) => break "connection closed",
                Ok(Some(Err(error))) => {
                    tracing::info!(%peer, %error, "SRT connection failed");
                    break "connection failed";
                }
                Ok(Some(Ok((_, data)))) => data,
            };
            bytes.inc_by(data.len() as u64);
            if let Err(error) = media.handle_input(&data) {
                tracing::warn!(%peer, channel = %publish.channel_id(), %error, "cannot package this stream; closing");
                break "stream cannot be packaged";
            }
            if drain(&mut media, &mut publish, &counters).is_err() {
                break "origin refused the stream";
            }
        };
        if let Err(error) = media.finish() {
            tracing::debug!(%peer, %error, "stream ended with an unpackageable tail");
        }
        let _ = drain(&mut media, &mut publish, &counters);
        let stats = media.ts_stats().clone();
        tracing::info!(%peer, channel = %publish.channel_id(), reason = why, packets = stats.packets,
            discontinuities = stats.discontinuities, sync_losses = stats.sync_losses, dropped_pes = stats.dropped_pes,
            "SRT publish ended");
        publish.end(why).await;
        self.metrics.active_publishers.dec();
        drop(socket);
        drop(permit);
    }
}

fn drain<P: PublishSink>(media: &mut TsToCmaf, publish: &mut P, counters: &FrameCounters) -> Result<(), StreamRefused> {
    let drained = std::iter::from_fn(|| media.poll_output()).try_for_each(|output| publish.handle_output(output));
    counters.add(media.take_counts());
    drained
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_id_forms() {
        let key = |s: &str| parse_stream_id(s).map(|id| id.key);
        assert_eq!(key("#!::r=live/abc123,m=publish"), Ok("abc123".into()));
        assert_eq!(key("#!::m=publish,r=live/abc123"), Ok("abc123".into()));
        assert_eq!(key("#!::u=bob,r=abc123,m=publish,s=x"), Ok("abc123".into()));
        assert_eq!(key("#!::r=abc123"), Ok("abc123".into()));
        assert_eq!(key("abc123"), Ok("abc123".into()));
        assert_eq!(key("live/abc123"), Ok("abc123".into()));
        assert_eq!(key("live_0123abcd\0\0"), Ok("live_0123abcd".into()));
    }

    #[test]
    fn stream_id_refusals() {
        assert_eq!(parse_stream_id(""), Err(StreamIdError::Missing));
        assert_eq!(parse_stream_id("#!::r=live/abc,m=request"), Err(StreamIdError::Playback));
        assert_eq!(parse_stream_id("#!::m=request,r=live/abc"), Err(StreamIdError::Playback));
        assert_eq!(
            parse_stream_id("#!::r=live/abc,m=bidirectional"),
            Err(StreamIdError::UnsupportedMode("bidirectional".into()))
        );
        assert_eq!(parse_stream_id("#!::m=publish"), Err(StreamIdError::NoKey));
        assert_eq!(parse_stream_id("#!::r=live/,m=publish"), Err(StreamIdError::NoKey));
        assert!(matches!(parse_stream_id("#!::r=other/abc"), Err(StreamIdError::BadApp(_))));
        assert_eq!(parse_stream_id("a b"), Err(StreamIdError::BadKey));
        assert_eq!(parse_stream_id("live/a/b"), Err(StreamIdError::BadKey));
        assert_eq!(parse_stream_id(&"k".repeat(600)), Err(StreamIdError::TooLong));
        // Refusals never echo the key.
        let e = parse_stream_id("#!::r=secretkey,m=request").unwrap_err().to_string();
        assert!(!e.contains("secretkey"));
    }

    /// 29.97 fps (3003 ticks a frame) with a 2-frame composition offset: in milliseconds neither
    /// is a whole number, so a trip through FLV's clock would round every timestamp.
    #[test]
    fn srt_90khz_timestamps_survive_exactly() {
        use crate::test_support::{ts_video_stream, TsAccessUnit};
        let start = 126_001; // not a multiple of 90 either
        let units: Vec<TsAccessUnit> = (0..90)
            .map(|i| {
                let dts = start + i * 3003;
                TsAccessUnit { dts, pts: dts + 6006, keyframe: i % 30 == 0 }
            })
            .collect();
        let ts = ts_video_stream(&units);
        let mut media = TsToCmaf::new();
        for chunk in ts.chunks(1316) {
            media.handle_input(chunk).unwrap();
        }
        media.finish().unwrap();
        let out: Vec<FeedOutput> = std::iter::from_fn(|| media.poll_output()).collect();
        assert!(matches!(&out[0], FeedOutput::Tracks { video: Some(v), audio: None } if v.height == 360), "{out:?}");
        let samples: Vec<_> =
            out.iter().filter_map(|o| if let FeedOutput::Video(s) = o { Some(s) } else { None }).collect();
        assert_eq!(samples.len(), units.len());
        for (unit, sample) in units.iter().zip(&samples) {
            assert_eq!(sample.dts, unit.dts, "decode time kept to the tick");
            assert_eq!(sample.pts_offset, 6006, "composition offset kept to the tick");
            assert_eq!(sample.duration, 3003);
            assert_eq!(sample.keyframe, unit.keyframe);
        }
        assert_eq!(media.take_counts(), FrameCounts { video: 90, audio: 0, dropped: 0 });
    }

    proptest::proptest! {
        #[test]
        fn any_stream_id_parses_without_panic(s in ".{0,600}") {
            let _ = parse_stream_id(&s);
        }

        #[test]
        fn any_payload_through_ts_to_cmaf_without_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000)) {
            let mut m = TsToCmaf::new();
            let _ = m.handle_input(&data);
            while m.poll_output().is_some() {}
            let _ = m.finish();
            while m.poll_output().is_some() {}
        }
    }
}
