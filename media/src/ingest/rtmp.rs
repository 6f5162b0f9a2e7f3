//! The tokio driver of RTMP ingest: accepts connections, moves bytes between each socket and its
//! [`ServerSession`], answers publish requests from the catalog, and feeds accepted media through
//! [`FlvToCmaf`] into the origin's [`LiveRegistry`].
//!
//! Per connection, in order: the handshake and `connect` must finish within
//! [`IngestConfig::handshake_timeout`]; `publish` must follow within
//! [`IngestConfig::idle_timeout`]; while publishing, media must keep coming with gaps shorter than
//! that. A publish is accepted when the key's hash names a channel that is not live, and the
//! catalog commits a `StartSession` for it; the session is ended (`EndSession`) however the
//! publish stops: unpublish, disconnect, timeout, protocol error or node shutdown.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use prometheus::IntCounter;
use raft::{now_millis, Catalog, CatalogError, Command, ProposeError, StreamSession};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::bridge::{BridgeOutput, FlvToCmaf, Handled};
use super::{key_prefix, stream_key_hash, IngestConfig, IngestMetrics};
use crate::hls::{Pushed, Rendition};
use crate::origin::{LiveHandle, LiveRegistry, OriginError};
use crate::rtmp::{CloseReason, Event, PublishRequestId, RejectReason, ServerSession, SessionConfig, SessionError};

/// The application name publishers use: `rtmp://host/live/{streamKey}`.
pub const APP: &str = "live";
/// The one rendition ingest produces; transcoding adds the others.
pub const SOURCE_RENDITION: &str = "source";
/// Bound on each catalog round trip made while a publisher waits for an answer.
const CATALOG_TIMEOUT: Duration = Duration::from_secs(10);
const READ_BUFFER: usize = 64 * 1024;

/// What every connection task shares.
struct Shared {
    catalog: Catalog,
    registry: LiveRegistry,
    config: IngestConfig,
    metrics: IngestMetrics,
    /// Channels this process is publishing (or about to): refuses a second publisher without a
    /// catalog round trip, and tells our own stale sessions (left by a crash) from live ones.
    publishing: Mutex<HashSet<String>>,
}

impl Shared {
    /// May `stream_key` publish? On yes, the catalog session has been started.
    async fn start_publish(
        self: &Arc<Self>,
        peer: SocketAddr,
        app: &str,
        stream_key: &str,
    ) -> Result<Publish, Refusal> {
        let shared = self;
        let catalog = &shared.catalog;
        if app != APP {
            tracing::warn!(%peer, app, "RTMP publish refused: unknown application");
            return Err(Refusal("app", RejectReason::BadName));
        }
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
                    tracing::warn!(%peer, %error, "RTMP publish refused: catalog unavailable");
                    return Err(Refusal("catalog", RejectReason::Error("Catalog unavailable; retry.".into())));
                }
                Err(_) => {
                    tracing::warn!(%peer, "RTMP publish refused: catalog read timed out");
                    return Err(Refusal("catalog", RejectReason::Error("Catalog unavailable; retry.".into())));
                }
            },
        };
        let Some((channel_id, current)) = found else {
            tracing::warn!(%peer, key_prefix = %key_prefix(stream_key), "RTMP publish refused: unknown stream key");
            return Err(Refusal("bad_key", RejectReason::BadName));
        };
        let already_live = || {
            tracing::warn!(%peer, channel = %channel_id, "RTMP publish refused: channel already live (second publisher)");
            Err(Refusal("already_live", RejectReason::BadName))
        };
        let Some(reservation) = Reservation::take(shared, &channel_id) else { return already_live() };
        if let Some(current) = current {
            if current.ingest_node != Some(catalog.node_id()) {
                return already_live();
            }
            // Our node's session, but no publish of ours holds the channel: left over from a
            // crash or a lost EndSession. End it and let this publish take over.
            tracing::info!(%peer, channel = %channel_id, stale_session = %current.id, "ending a stale session of this node");
            let end =
                Command::EndSession { channel_id: channel_id.clone(), ended_at: now_millis(), peak_concurrent: None };
            if let Err(error) = propose(catalog, end).await {
                tracing::warn!(%peer, channel = %channel_id, %error, "could not end the stale session");
            }
        }
        let Ok(session_id) = new_session_id() else {
            return Err(Refusal("internal", RejectReason::Error("No randomness.".into())));
        };
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
                tracing::warn!(%peer, channel = %channel_id, %error, "RTMP publish refused: could not start the session");
                return Err(Refusal("catalog", RejectReason::Error("Could not start the session; retry.".into())));
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
            bridge: FlvToCmaf::new(),
            live: None,
            accepted_at: Instant::now(),
            first_part_published: false,
            reservation,
        })
    }
}

/// Accepts RTMP publishers on `listener` until `shutdown` resolves, then winds the publishes down
/// (each session ended in the catalog) for at most [`IngestConfig::shutdown_grace`].
///
/// Accept errors (e.g. out of file descriptors) are logged and retried; they never end the loop.
pub async fn serve_rtmp(
    listener: TcpListener,
    catalog: Catalog,
    registry: LiveRegistry,
    config: IngestConfig,
    metrics: IngestMetrics,
    shutdown: impl Future<Output = ()> + Send,
) {
    let limit = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let grace = config.shutdown_grace;
    let shared = Arc::new(Shared { catalog, registry, config, metrics, publishing: Mutex::new(HashSet::new()) });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut seed = handshake_seed();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "RTMP accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            shared.metrics.rejected.with_label_values(&["connection_limit"]).inc();
            tracing::warn!(%peer, max = shared.config.max_connections, "RTMP connection refused: too many connections");
            continue;
        };
        let _ = stream.set_nodelay(true);
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let connection = Connection::new(shared.clone(), stream, peer, seed);
        let stop = stop_rx.clone();
        tasks.spawn(async move {
            connection.run(stop).await;
            drop(permit);
        });
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(left = tasks.len(), "RTMP connections did not wind down in time; aborting them");
        tasks.shutdown().await;
    }
}

fn handshake_seed() -> u64 {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 8];
    // The seed only varies the handshake filler; a fixed one still works.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

fn new_session_id() -> Result<String, ring::error::Unspecified> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 12];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Why a connection's loop stopped (besides the session closing itself).
#[derive(Debug)]
enum End {
    /// The session closed (peer, protocol error, rejection); already logged.
    Closed,
    Timeout,
    Shutdown,
    Io(std::io::Error),
    /// The stream cannot be packaged, or the origin refused it; already logged.
    Unpackageable,
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

    fn count(&mut self) {
        self.counted = true;
        self.shared.metrics.active_publishers.inc();
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

/// An accepted publish: the catalog session, the conversion, and the origin stream once the
/// tracks are known.
struct Publish {
    channel_id: String,
    session_id: String,
    bridge: FlvToCmaf,
    live: Option<LiveHandle>,
    accepted_at: Instant,
    first_part_published: bool,
    bytes: IntCounter,
    video_frames: IntCounter,
    audio_frames: IntCounter,
    dropped: IntCounter,
    reservation: Reservation,
}

/// A publish refused: the metric label, what the encoder is told.
struct Refusal(&'static str, RejectReason);

struct Connection {
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    session: ServerSession,
    publish: Option<Publish>,
}

impl Connection {
    fn new(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, seed: u64) -> Self {
        let session =
            ServerSession::new(SessionConfig { app: APP.to_owned(), handshake_seed: seed, ..Default::default() });
        Connection { shared, stream, peer, session, publish: None }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let handshake_timeout = self.shared.config.handshake_timeout;
        let idle_timeout = self.shared.config.idle_timeout;
        let mut deadline = Instant::now() + handshake_timeout;
        let mut connected = false;
        let mut buf = vec![0u8; READ_BUFFER];
        let end = loop {
            let read = tokio::select! {
                read = tokio::time::timeout_at(deadline, self.stream.read(&mut buf)) => read,
                _ = stop.wait_for(|stop| *stop) => break End::Shutdown,
            };
            match read {
                Err(_elapsed) => break End::Timeout,
                Ok(Ok(0)) => self.session.handle_eof(),
                Ok(Err(error)) => {
                    tracing::debug!(peer = %self.peer, %error, "RTMP read failed");
                    self.session.handle_eof();
                }
                Ok(Ok(n)) => {
                    self.session.handle_input(&buf[..n]);
                    if let Some(p) = &self.publish {
                        p.bytes.inc_by(n as u64);
                    }
                }
            }
            let media_seen = match self.pump().await {
                Ok(media_seen) => media_seen,
                Err(end) => break end,
            };
            if self.session.is_closed() {
                break End::Closed;
            }
            if !connected && self.session.app().is_some() {
                connected = true;
                deadline = Instant::now() + idle_timeout;
            }
            if media_seen {
                deadline = Instant::now() + idle_timeout;
            }
        };
        let why = match &end {
            End::Closed => "connection closed",
            End::Shutdown => "node shutting down",
            End::Unpackageable => "stream cannot be packaged",
            End::Io(error) => {
                tracing::info!(peer = %self.peer, %error, "RTMP connection failed");
                "connection failed"
            }
            End::Timeout if !connected => {
                self.shared.metrics.rejected.with_label_values(&["timeout"]).inc();
                tracing::warn!(peer = %self.peer, timeout = ?handshake_timeout,
                    "RTMP handshake not completed in time (not an RTMP client?); closing");
                "handshake timeout"
            }
            End::Timeout if self.publish.is_none() => {
                self.shared.metrics.rejected.with_label_values(&["timeout"]).inc();
                tracing::warn!(peer = %self.peer, timeout = ?idle_timeout, "RTMP client connected but did not publish; closing");
                "publish timeout"
            }
            End::Timeout => {
                tracing::warn!(peer = %self.peer, channel = self.publish.as_ref().map(|p| p.channel_id.as_str()),
                    timeout = ?idle_timeout, "RTMP publisher stalled: no media; closing");
                "stalled"
            }
        };
        self.end_publish(why).await;
        let _ = self.stream.shutdown().await;
    }

    /// Sends what the session has to send and handles its events, until both are drained.
    /// Returns whether media arrived.
    async fn pump(&mut self) -> Result<bool, End> {
        let mut media_seen = false;
        loop {
            if let Some(out) = self.session.poll_transmit() {
                self.write(&out).await?;
            }
            let Some(event) = self.session.poll_event() else { return Ok(media_seen) };
            match event {
                Event::PublishRequested { request_id, app, stream_key } => {
                    self.on_publish(request_id, &app, &stream_key).await;
                }
                Event::Metadata(meta) => {
                    if let Some(p) = &mut self.publish {
                        p.bridge.handle_metadata(&meta);
                        p.drain(&self.shared, self.peer)?;
                    }
                }
                Event::Video { timestamp_ms, payload } => {
                    media_seen = true;
                    self.on_media(true, timestamp_ms, &payload)?;
                }
                Event::Audio { timestamp_ms, payload } => {
                    media_seen = true;
                    self.on_media(false, timestamp_ms, &payload)?;
                }
                Event::Unpublished => self.end_publish("unpublished").await,
                Event::Closed(reason) => self.log_close(reason),
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), End> {
        match tokio::time::timeout(self.shared.config.write_timeout, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(End::Io(error)),
            Err(_) => Err(End::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))),
        }
    }

    fn log_close(&self, reason: CloseReason) {
        let peer = self.peer;
        let rejected = |reason: &str| self.shared.metrics.rejected.with_label_values(&[reason]).inc();
        match reason {
            CloseReason::PeerClosed => tracing::debug!(%peer, "RTMP peer closed the connection"),
            CloseReason::PublishRejected => tracing::debug!(%peer, "RTMP publish refused; closing"),
            CloseReason::AppRejected { app } => {
                rejected("app");
                tracing::warn!(%peer, app = %app.chars().take(64).collect::<String>(),
                    "RTMP connect refused: unknown application (use rtmp://host/live/KEY)");
            }
            CloseReason::Protocol(SessionError::Handshake(error)) => {
                rejected("protocol");
                tracing::warn!(%peer, %error, "not an RTMP client (bad handshake); closing");
            }
            CloseReason::Protocol(error) => {
                rejected("protocol");
                tracing::warn!(%peer, channel = self.publish.as_ref().map(|p| p.channel_id.as_str()), %error,
                    "RTMP protocol error; closing");
            }
        }
    }

    async fn on_publish(&mut self, request_id: PublishRequestId, app: &str, stream_key: &str) {
        match self.shared.start_publish(self.peer, app, stream_key).await {
            Ok(mut publish) => {
                if self.session.accept_publish(request_id).is_err() {
                    // Closed meanwhile: nothing to accept; give the session back.
                    self.publish = Some(publish);
                    return self.end_publish("closed before accept").await;
                }
                publish.reservation.count();
                tracing::info!(peer = %self.peer, channel = %publish.channel_id, session = %publish.session_id,
                    "RTMP publish accepted");
                self.publish = Some(publish);
            }
            Err(Refusal(label, reason)) => {
                self.shared.metrics.rejected.with_label_values(&[label]).inc();
                // Fails only if the session closed meanwhile, which needs no answer.
                let _ = self.session.reject_publish(request_id, reason);
            }
        }
    }

    fn on_media(&mut self, video: bool, timestamp_ms: u64, payload: &Bytes) -> Result<(), End> {
        let Some(p) = &mut self.publish else { return Ok(()) };
        let handled = if video {
            p.bridge.handle_video(timestamp_ms, payload)
        } else {
            p.bridge.handle_audio(timestamp_ms, payload)
        };
        match handled {
            Ok(Handled::Frame) if video => p.video_frames.inc(),
            Ok(Handled::Frame) => p.audio_frames.inc(),
            Ok(Handled::Dropped) => p.dropped.inc(),
            Ok(Handled::Other) => {}
            Err(error) => {
                tracing::warn!(peer = %self.peer, channel = %p.channel_id, %error, "cannot package this stream; closing");
                return Err(End::Unpackageable);
            }
        }
        p.drain(&self.shared, self.peer)
    }

    /// Ends the publish, if any.
    async fn end_publish(&mut self, why: &str) {
        if let Some(p) = self.publish.take() {
            p.end(self.peer, why).await;
        }
    }
}

impl Publish {
    /// Ends the publish: the last samples go out, the origin stream finishes and the catalog
    /// session ends.
    async fn end(mut self, peer: SocketAddr, why: &str) {
        let shared = self.reservation.shared.clone();
        self.bridge.finish();
        // The stream ends either way; a failure here was logged.
        let _ = self.drain(&shared, peer);
        if let Some(live) = self.live.take() {
            live.finish();
        }
        let catalog = &shared.catalog;
        // End only our own session: an admin may have ended it and a new one started meanwhile.
        let ours = catalog.read(|s| {
            s.channel(&self.channel_id).and_then(|c| c.current_session_id.clone()).as_deref()
                == Some(self.session_id.as_str())
        });
        if ours {
            let end = Command::EndSession {
                channel_id: self.channel_id.clone(),
                ended_at: now_millis(),
                peak_concurrent: None,
            };
            if let Err(error) = propose(catalog, end).await {
                tracing::warn!(channel = %self.channel_id, session = %self.session_id, %error, "could not end the session");
            }
        }
        tracing::info!(%peer, channel = %self.channel_id, session = %self.session_id,
            seconds = self.accepted_at.elapsed().as_secs(), reason = why, "RTMP publish ended");
    }

    /// Moves the bridge's output into the origin.
    fn drain(&mut self, shared: &Shared, peer: SocketAddr) -> Result<(), End> {
        while let Some(output) = self.bridge.poll_output() {
            let (video, sample) = match output {
                BridgeOutput::Tracks { video, audio } => {
                    self.open_live(shared, peer, video, audio)?;
                    continue;
                }
                BridgeOutput::Video(sample) => (true, sample),
                BridgeOutput::Audio(sample) => (false, sample),
            };
            // Tracks always come first; without a stream there is nothing to feed.
            let Some(live) = &self.live else { continue };
            let now = now_millis();
            let pushed = if video { live.push_video(0, sample, now) } else { live.push_audio(0, sample, now) };
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
                    tracing::warn!(%peer, channel = %self.channel_id, %error, "origin stopped taking this stream; closing");
                    return Err(End::Unpackageable);
                }
            }
        }
        self.dropped.inc_by(self.bridge.take_dropped());
        Ok(())
    }

    fn open_live(
        &mut self,
        shared: &Shared,
        peer: SocketAddr,
        video: Option<crate::cmaf::VideoConfig>,
        audio: Option<crate::cmaf::AudioConfig>,
    ) -> Result<(), End> {
        let describe = format!(
            "video {} audio {}",
            video.as_ref().map_or("none".into(), |v| format!("{} {}x{}", v.codec_string, v.width, v.height)),
            audio
                .as_ref()
                .map_or("none".into(), |a| format!("{} {} Hz {} ch", a.codec_string, a.sample_rate, a.channels)),
        );
        let config =
            crate::hls::RenditionConfig { name: SOURCE_RENDITION.to_owned(), ..shared.config.rendition.clone() };
        let opened = Rendition::new(config, video, audio)
            .map_err(|e| e.to_string())
            .and_then(|r| shared.registry.open(&self.channel_id, &self.session_id, vec![r]).map_err(|e| e.to_string()));
        match opened {
            Ok(live) => {
                tracing::info!(channel = %self.channel_id, tracks = %describe, "packaging started");
                self.live = Some(live);
                Ok(())
            }
            Err(error) => {
                shared.metrics.rejected.with_label_values(&["origin"]).inc();
                tracing::warn!(%peer, channel = %self.channel_id, tracks = %describe, %error, "cannot package this stream; closing");
                Err(End::Unpackageable)
            }
        }
    }
}

/// Proposes with a bound on the wait (the publisher is waiting, or the connection is ending).
async fn propose(catalog: &Catalog, command: Command) -> Result<(), ProposeError> {
    match tokio::time::timeout(CATALOG_TIMEOUT, catalog.propose(command)).await {
        Ok(result) => result.map(drop),
        Err(_) => Err(ProposeError::Unavailable("timed out".into())),
    }
}
