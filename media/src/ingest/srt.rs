//! SRT ingest: encoders publish MPEG-TS over SRT (caller mode) to our listener.
//!
//! ```text
//! UDP ──▶ srt-tokio listener ── ConnectionRequest(stream id) ──▶ parse_stream_id ──▶ PublishGate
//!                                 ▲ reject (handshake)                               │ accept
//!                                 └──────────────────────────────────────────────────┘
//!         SRT socket ── TS payload ──▶ TsToCmaf (sans-IO: ts::TsDemuxer → FlvToCmaf) ──▶ PublishSink
//! ```
//!
//! The SRT protocol itself is srt-tokio's (see the report in the module's PR for why, and for the
//! interop check against ffmpeg's libsrt caller). Access control happens in the handshake: the
//! caller's stream id is parsed with [`parse_stream_id`] and the key is handed to the
//! [`PublishGate`] (the catalog side shared with RTMP); a refused key is rejected with an SRT
//! reject code before any media flows, so the encoder sees "connection rejected".
//!
//! Stream ids accepted: `#!::r=live/KEY,m=publish` (keys of the `#!::` list in any order; a
//! missing `m` means publish since this listener only ingests), `#!::r=KEY`, `live/KEY` and the
//! bare `KEY`. `m=request` (playback) and other modes are refused.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::{ConnectionRequest, SrtListener};
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::bridge::{BridgeError, BridgeOutput, FlvToCmaf, Handled};
use super::{key_prefix, IngestMetrics};
use crate::ts::{TsDemuxer, TsEvent, TsStats};

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

/// Sans-IO: SRT payload (MPEG-TS) in, CMAF tracks and samples out, through the same
/// [`FlvToCmaf`] as RTMP (the demuxer's frames are handed to it as FLV tag bodies, which is the
/// bridge's public input). After each `handle_input`, drain [`TsToCmaf::poll_output`].
#[derive(Debug, Default)]
pub struct TsToCmaf {
    demuxer: TsDemuxer,
    bridge: FlvToCmaf,
    last_dts_ms: u64,
    /// Frames accepted by the bridge (video, audio) and dropped since the last take.
    counts: FrameCounts,
}

/// Frames counted by [`TsToCmaf`] since the last [`TsToCmaf::take_counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameCounts {
    pub video: u64,
    pub audio: u64,
    pub dropped: u64,
}

impl TsToCmaf {
    pub fn new() -> Self {
        Self::default()
    }

    /// One SRT message (or any piece of the transport stream).
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), BridgeError> {
        self.demuxer.handle_input(data);
        self.pump()
    }

    /// The publish ended: flush the demuxer and the bridge.
    pub fn finish(&mut self) -> Result<(), BridgeError> {
        self.demuxer.finish();
        let pumped = self.pump();
        self.bridge.finish();
        self.counts.dropped += self.bridge.take_dropped();
        pumped
    }

    /// The next track set or sample, in order.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<BridgeOutput> {
        self.bridge.poll_output()
    }

    pub fn take_counts(&mut self) -> FrameCounts {
        std::mem::take(&mut self.counts)
    }

    /// What the demuxer skipped or repaired.
    pub fn ts_stats(&self) -> &TsStats {
        self.demuxer.stats()
    }

    fn pump(&mut self) -> Result<(), BridgeError> {
        while let Some(event) = self.demuxer.poll_event() {
            let (video, handled) = match event {
                TsEvent::VideoConfig(config) => {
                    let mut body = BytesMut::with_capacity(5 + config.record.len());
                    body.put_slice(&[0x17, 0, 0, 0, 0]);
                    body.put_slice(&config.record);
                    (true, self.bridge.handle_video(self.last_dts_ms, &body.freeze())?)
                }
                TsEvent::Video { frame, .. } => {
                    self.last_dts_ms = frame.dts_ms;
                    // FLV's composition time is a signed 24-bit millisecond count.
                    let cts = frame.pts_ms.saturating_sub(frame.dts_ms).min(0x7F_FFFF) as u32;
                    let mut body = BytesMut::with_capacity(5 + frame.nalus.len());
                    body.put_u8(if frame.keyframe { 0x17 } else { 0x27 });
                    body.put_u8(1);
                    body.put_slice(&cts.to_be_bytes()[1..]);
                    body.put_slice(&frame.nalus);
                    (true, self.bridge.handle_video(frame.dts_ms, &body.freeze())?)
                }
                TsEvent::AudioConfig(config) => {
                    let body = [&[0xAF, 0][..], &config.asc].concat();
                    (false, self.bridge.handle_audio(self.last_dts_ms, &Bytes::from(body))?)
                }
                TsEvent::Audio { frame, .. } => {
                    let mut body = BytesMut::with_capacity(2 + frame.data.len());
                    body.put_slice(&[0xAF, 1]);
                    body.put_slice(&frame.data);
                    (false, self.bridge.handle_audio(frame.pts_ms, &body.freeze())?)
                }
            };
            match handled {
                Handled::Frame if video => self.counts.video += 1,
                Handled::Frame => self.counts.audio += 1,
                Handled::Dropped => self.counts.dropped += 1,
                Handled::Other => {}
            }
        }
        self.counts.dropped += self.bridge.take_dropped();
        Ok(())
    }
}

/// Why the gate refused a publish; decides the SRT reject code the encoder sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// No channel has this key (SRT 2403 Forbidden).
    UnknownKey,
    /// The channel is live from another publisher (SRT 2409 Conflict).
    AlreadyLive,
    /// The catalog could not answer; the encoder may retry (SRT 2503 Down).
    Unavailable,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::UnknownKey => "bad_key",
            Refusal::AlreadyLive => "already_live",
            Refusal::Unavailable => "catalog",
        }
    }

    fn reject_reason(self) -> RejectReason {
        RejectReason::Server(match self {
            Refusal::UnknownKey => ServerRejectReason::Forbidden,
            Refusal::AlreadyLive => ServerRejectReason::Conflict,
            Refusal::Unavailable => ServerRejectReason::Down,
        })
    }
}

/// The catalog and origin side of a publish, shared with RTMP ingest: decides whether a key may
/// publish (starting the catalog session) and hands back where the stream goes.
pub trait PublishGate: Send + Sync + 'static {
    type Publish: PublishSink;
    /// May `stream_key` publish from `peer`? On yes the catalog session has started. The
    /// implementation logs its refusals (without the key).
    fn start_publish(
        &self,
        peer: SocketAddr,
        stream_key: &str,
    ) -> impl Future<Output = Result<Self::Publish, Refusal>> + Send;
}

/// The sink takes no more of this stream (it has logged why); the publish ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the origin stopped taking this stream")]
pub struct StreamRefused;

/// One accepted publish: takes the bridge's output (tracks first, then samples) and ends the
/// session however the connection stops.
pub trait PublishSink: Send + 'static {
    /// The channel, for logs and metrics.
    fn channel_id(&self) -> &str;
    /// Err ends the publish (the origin refused the stream); the sink has logged why.
    fn handle_output(&mut self, output: BridgeOutput) -> Result<(), StreamRefused>;
    /// Frames seen, for the sink's counters.
    fn count(&mut self, _counts: FrameCounts) {}
    /// The publish is over (the last output was handed over): finish the origin stream, end the
    /// catalog session.
    fn end(self, why: &'static str) -> impl Future<Output = ()> + Send;
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
        let decided = tokio::time::timeout(self.config.decision_timeout, self.gate.start_publish(peer, &key)).await;
        let publish = match decided {
            Ok(Ok(publish)) => publish,
            Ok(Err(refusal)) => {
                rejected(refusal.label());
                tracing::warn!(%peer, key_prefix = %key_prefix(&key), reason = refusal.label(),
                    "SRT publish refused in the handshake");
                let _ = request.reject(refusal.reject_reason()).await;
                return;
            }
            Err(_) => {
                rejected("catalog");
                tracing::warn!(%peer, "SRT publish refused: decision timed out");
                let _ = request.reject(Refusal::Unavailable.reject_reason()).await;
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
        let bytes = self.metrics.bytes.with_label_values(&[publish.channel_id()]);
        tracing::info!(%peer, channel = %publish.channel_id(), "SRT publish accepted");
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
            if drain(&mut media, &mut publish).is_err() {
                break "origin refused the stream";
            }
        };
        if let Err(error) = media.finish() {
            tracing::debug!(%peer, %error, "stream ended with an unpackageable tail");
        }
        let _ = drain(&mut media, &mut publish);
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

fn drain<P: PublishSink>(media: &mut TsToCmaf, publish: &mut P) -> Result<(), StreamRefused> {
    while let Some(output) = media.poll_output() {
        publish.handle_output(output)?;
    }
    publish.count(media.take_counts());
    Ok(())
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
