//! The tokio driver of RTMP ingest: accepts connections, moves bytes between each socket and its
//! [`ServerSession`], answers publish requests through the [`PublishGate`] (shared with SRT), and
//! feeds accepted media through [`FlvInput`] and the [`PackagerFeed`] into the gate's
//! [`PublishSink`].
//!
//! Per connection, in order: the handshake and `connect` must finish within
//! [`IngestConfig::handshake_timeout`]; `publish` must follow within
//! [`IngestConfig::idle_timeout`]; while publishing, media must keep coming with gaps shorter than
//! that. A publish is accepted when the gate accepts the key (the node's gate: the key's hash names
//! a channel that is not live, and the catalog commits a `StartSession` for it); the sink is ended
//! however the publish stops: unpublish, disconnect, timeout, protocol error or node shutdown.
//!
//! RTMPS is the same driver over a [`RtmpTransport`] that first completes a TLS handshake (the node's
//! `--rtmps-addr`), within the same handshake timeout; a client that does not speak TLS there is
//! closed, counted (`rejected{reason="tls"}`) and logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use prometheus::IntCounter;
use thread_runtimes::ThreadRuntimes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::flv_input::{Converted, FlvInput};
use super::gate::{Protocol, PublishGate, PublishSink, Refusal};
use super::packager_feed::{Handled, PackagerFeed};
use super::{IngestConfig, IngestMetrics};
use crate::rtmp::{CloseReason, Event, PublishRequestId, RejectReason, ServerSession, SessionConfig, SessionError};

/// The application name publishers use: `rtmp://host/live/{streamKey}`.
pub const APP: &str = "live";
const READ_BUFFER: usize = 64 * 1024;

/// How an accepted TCP connection becomes the byte stream RTMP runs on: as it is ([`Plain`]), or
/// after a TLS handshake (RTMPS; the node supplies it, media knows no TLS library).
pub trait RtmpTransport: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// `RTMP` or `RTMPS`, as logs name the listener.
    fn name(&self) -> &'static str;
    /// Opens the stream (runs inside the connection's handshake timeout).
    fn open(&self, tcp: TcpStream) -> impl std::future::Future<Output = std::io::Result<Self::Stream>> + Send;
    /// Whether the stream's bytes are the socket's as received (no TLS), so merged reads may take
    /// them from the socket directly. Default false.
    fn raw(&self) -> bool {
        false
    }
}

/// Plain RTMP over TCP.
#[derive(Debug, Clone, Copy)]
pub struct Plain;

impl RtmpTransport for Plain {
    type Stream = TcpStream;

    fn name(&self) -> &'static str {
        "RTMP"
    }

    async fn open(&self, tcp: TcpStream) -> std::io::Result<TcpStream> {
        Ok(tcp)
    }

    fn raw(&self) -> bool {
        true
    }
}

/// [`serve_rtmp_over`] plain RTMP.
pub async fn serve_rtmp<G: PublishGate>(
    listener: TcpListener,
    gate: Arc<G>,
    config: IngestConfig,
    metrics: IngestMetrics,
    shutdown: CancellationToken,
) {
    serve_rtmp_over(listener, Arc::new(Plain), gate, config, metrics, shutdown).await;
}

/// Accepts RTMP publishers on `listener` until `shutdown` is cancelled, then winds the publishes down
/// (each sink ended) for at most [`IngestConfig::shutdown_grace`]. `gate` decides the publishes;
/// the node shares it with its other ingest protocols (so that one channel has one publisher,
/// whatever the protocol).
///
/// Accept errors (e.g. out of file descriptors) are logged and retried; they never end the loop.
pub async fn serve_rtmp_over<G: PublishGate, T: RtmpTransport>(
    listener: TcpListener,
    transport: Arc<T>,
    gate: Arc<G>,
    config: IngestConfig,
    metrics: IngestMetrics,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let grace = config.shutdown_grace;
    let threads = match config.connection_threads {
        0 => None,
        count => match ThreadRuntimes::start(&transport.name().to_lowercase(), count, |_, thread| {
            metrics.thread_connections.with_label_values(&[thread])
        }) {
            Ok(threads) => Some(threads),
            Err(error) => {
                tracing::error!(%error, "could not start the RTMP connection threads; connections share the node's");
                None
            }
        },
    };
    let shared = Arc::new(Shared { gate, config, metrics });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut seed = handshake_seed();
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
            () = shutdown.cancelled() => break,
        };
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            shared.metrics.rejected.with_label_values(&["connection_limit"]).inc();
            tracing::warn!(%peer, max = shared.config.max_connections, "RTMP connection refused: too many connections");
            continue;
        };
        let _ = stream.set_nodelay(true);
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let (shared, transport, stop) = (shared.clone(), transport.clone(), stop_rx.clone());
        let Some(threads) = &threads else {
            tasks.spawn(serve_connection(shared, transport, stream, peer, seed, stop, permit));
            continue;
        };
        // Moved to the thread's runtime: its socket registers with that thread's reactor.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%peer, %error, "RTMP connection dropped: its socket could not move to a thread");
                continue;
            }
        };
        let (runtime, open) = threads.least_busy();
        let connection = async move {
            let _open = open;
            match TcpStream::from_std(stream) {
                Ok(stream) => serve_connection(shared, transport, stream, peer, seed, stop, permit).await,
                Err(error) => tracing::warn!(%peer, %error, "RTMP connection dropped: no socket on its thread"),
            }
        };
        tasks.spawn_on(connection, runtime);
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(left = tasks.len(), "RTMP connections did not wind down in time; aborting them");
        tasks.shutdown().await;
    }
}

/// One accepted connection, from the transport's handshake to its end; `permit` counts it against
/// the listener's connection limit while it lives.
async fn serve_connection<G: PublishGate, T: RtmpTransport>(
    shared: Arc<Shared<G>>,
    transport: Arc<T>,
    stream: TcpStream,
    peer: SocketAddr,
    seed: u64,
    stop: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) {
    let socket = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let handshake = shared.config.handshake_timeout;
    match tokio::time::timeout(handshake, transport.open(stream)).await {
        Ok(Ok(stream)) => {
            let socket = Socket { fd: socket, raw: transport.raw() };
            Connection::new(shared, stream, peer, seed, socket).run(stop).await;
        }
        Ok(Err(error)) => {
            shared.metrics.rejected.with_label_values(&["tls"]).inc();
            tracing::warn!(%peer, %error, "{} connection refused: TLS handshake failed (not a TLS client?)",
                transport.name());
        }
        Err(_) => {
            shared.metrics.rejected.with_label_values(&["timeout"]).inc();
            tracing::warn!(%peer, timeout = ?handshake, "{} connection refused: no TLS handshake in time",
                transport.name());
        }
    }
    drop(permit);
}

/// What every connection of one listener shares.
struct Shared<G> {
    gate: Arc<G>,
    config: IngestConfig,
    metrics: IngestMetrics,
}

fn handshake_seed() -> u64 {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 8];
    // The seed only varies the handshake filler; a fixed one still works.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u64::from_le_bytes(bytes)
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

/// An accepted publish and the FLV → CMAF conversion feeding it.
struct Publishing<P> {
    sink: P,
    input: FlvInput,
    feed: PackagerFeed,
    bytes: IntCounter,
    reads: IntCounter,
    video_frames: IntCounter,
    audio_frames: IntCounter,
    dropped: IntCounter,
    active_publishers: prometheus::IntGauge,
}

impl<P: PublishSink> Publishing<P> {
    fn new(sink: P, metrics: &IngestMetrics) -> Self {
        let channel = sink.channel_id().to_owned();
        metrics.active_publishers.inc();
        Publishing {
            sink,
            input: FlvInput::new(),
            feed: PackagerFeed::new(),
            bytes: metrics.bytes.with_label_values(&[&channel]),
            reads: metrics.reads.with_label_values(&[&channel]),
            video_frames: metrics.frames.with_label_values(&[&channel, "video"]),
            audio_frames: metrics.frames.with_label_values(&[&channel, "audio"]),
            dropped: metrics.dropped_frames.with_label_values(&[&channel]),
            active_publishers: metrics.active_publishers.clone(),
        }
    }

    /// Moves the feed's output into the sink.
    fn drain(&mut self) -> Result<(), End> {
        while let Some(output) = self.feed.poll_output() {
            self.sink.handle_output(output).map_err(|_| End::Unpackageable)?;
        }
        self.dropped.inc_by(self.feed.take_dropped());
        Ok(())
    }

    /// Ends the publish: the last samples go out, then the sink ends.
    async fn end(mut self, why: &'static str) {
        self.feed.finish();
        // The stream ends either way; a failure here was logged.
        let _ = self.drain();
        self.sink.end(why).await;
        self.active_publishers.dec();
    }
}

/// Held, `socket` signals readable only once [`HELD_LOW_WATER`] bytes wait (the kernel does not
/// wake the runtime for each frame); released, for any byte again, signalling at once if some wait.
#[allow(unsafe_code)]
fn hold_wakeups(socket: std::os::fd::RawFd, hold: bool) {
    let low_water: libc::c_int = if hold { HELD_LOW_WATER } else { 1 };
    // SAFETY: a plain setsockopt on a socket the connection's stream owns and keeps open, with a
    // pointer to an int that outlives the call and its size. A failure only costs the merging.
    unsafe {
        libc::setsockopt(
            socket,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&low_water).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A read of what `socket` holds now, without waiting (whatever its low-water mark); `None` when
/// it holds nothing.
#[allow(unsafe_code)]
fn recv_now(socket: std::os::fd::RawFd, buf: &mut BytesMut) -> Option<std::io::Result<usize>> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` is valid for writes of its length for the call; the socket is open (see
    // `hold_wakeups`).
    let n = unsafe { libc::recv(socket, spare.as_mut_ptr().cast(), spare.len(), libc::MSG_DONTWAIT) };
    match usize::try_from(n) {
        Ok(n) => {
            // SAFETY: recv initialised the first `n` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
            Some(Ok(n))
        }
        Err(_) => match std::io::Error::last_os_error() {
            e if e.kind() == std::io::ErrorKind::WouldBlock => None,
            e if e.kind() == std::io::ErrorKind::Interrupted => None,
            e => Some(Err(e)),
        },
    }
}

/// The low-water mark of a held socket: far above what a stream sends in any pause. Linux also
/// lets the receive window grow to it, so it is large enough not to slow a fast stream.
const HELD_LOW_WATER: libc::c_int = 1 << 20;

/// The next multiple of `period` since a process-wide origin: every connection pausing for merged
/// reads wakes on the same ticks, so the runtime wakes once per tick for all of them rather than
/// once per connection.
fn next_tick(period: Duration) -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    let period_ns = period.as_nanos().max(1);
    let ticks = origin.elapsed().as_nanos() / period_ns + 1;
    origin + Duration::from_nanos(u64::try_from(ticks * period_ns).unwrap_or(u64::MAX))
}

/// A publish refused: the metric label, what the encoder is told.
struct Refused(&'static str, RejectReason);

struct Connection<G: PublishGate, S> {
    shared: Arc<Shared<G>>,
    stream: S,
    peer: SocketAddr,
    session: ServerSession,
    publish: Option<Publishing<G::Publish>>,
    socket: Socket,
}

/// The TCP socket under a connection's stream (which owns it and keeps it open), for merged
/// reads.
#[derive(Debug, Clone, Copy)]
struct Socket {
    fd: std::os::fd::RawFd,
    /// The stream reads the socket's bytes as they are (plain TCP): a paused connection reads the
    /// socket directly at its tick, held all along, instead of releasing it and waiting for the
    /// runtime to see it readable.
    raw: bool,
}

impl<G: PublishGate, S: AsyncRead + AsyncWrite + Unpin + Send> Connection<G, S> {
    fn new(shared: Arc<Shared<G>>, stream: S, peer: SocketAddr, seed: u64, socket: Socket) -> Self {
        let session =
            ServerSession::new(SessionConfig { app: APP.to_owned(), handshake_seed: seed, ..Default::default() });
        Connection { shared, stream, peer, session, publish: None, socket }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let handshake_timeout = self.shared.config.handshake_timeout;
        let idle_timeout = self.shared.config.idle_timeout;
        let mut deadline = Instant::now() + handshake_timeout;
        let mut connected = false;
        // Handshake input; after it, reads go straight into the session's chunk buffer.
        let mut handshake = BytesMut::new();
        // One timer and one shutdown waiter for the whole connection, not one of each per read:
        // a read only moves `deadline`; the timer, when it fires, catches up with it.
        let timer = tokio::time::sleep_until(deadline);
        let stopped = stop.wait_for(|stop| *stop);
        // Merged reads: while publishing, a read that drained the socket is followed by a pause
        // of `read_merge`, so the next read takes every frame sent meanwhile in one go.
        let merge = self.shared.config.read_merge;
        let pause = tokio::time::sleep_until(deadline);
        let mut paused = false;
        tokio::pin!(timer, stopped, pause);
        // Whether the socket is held (signals readable only past a high low-water mark).
        let mut held = false;
        let end = loop {
            let direct = self.session.input_buffer(READ_BUFFER);
            let is_direct = direct.is_some();
            let buf = direct.unwrap_or_else(|| {
                handshake.clear();
                handshake.reserve(READ_BUFFER);
                &mut handshake
            });
            let room = buf.capacity() - buf.len();
            let mut merged = None;
            if std::mem::take(&mut paused) {
                // Data arriving meanwhile does not wake the runtime.
                if !held {
                    hold_wakeups(self.socket.fd, true);
                    held = true;
                }
                tokio::select! {
                    () = &mut pause => {}
                    _ = &mut stopped => break End::Shutdown,
                }
                if self.socket.raw {
                    match recv_now(self.socket.fd, buf) {
                        Some(read) => merged = Some(read),
                        None => {
                            // Nothing came in this tick: wait for the next.
                            pause.as_mut().reset(next_tick(merge));
                            paused = true;
                            if Instant::now() >= deadline {
                                break End::Timeout;
                            }
                            continue;
                        }
                    }
                }
            }
            let read = match merged {
                Some(read) => read,
                None => {
                    if std::mem::take(&mut held) {
                        hold_wakeups(self.socket.fd, false);
                    }
                    tokio::select! {
                        read = self.stream.read_buf(buf) => read,
                        () = &mut timer => {
                            if deadline > Instant::now() {
                                timer.as_mut().reset(deadline);
                                continue;
                            }
                            break End::Timeout;
                        }
                        _ = &mut stopped => break End::Shutdown,
                    }
                }
            };
            match read {
                Ok(0) => self.session.handle_eof(),
                Err(error) => {
                    tracing::debug!(peer = %self.peer, %error, "RTMP read failed");
                    self.session.handle_eof();
                }
                Ok(n) => {
                    if is_direct {
                        self.session.handle_appended(n);
                    } else {
                        self.session.handle_input(&handshake[..n]);
                    }
                    if let Some(p) = &self.publish {
                        p.bytes.inc_by(n as u64);
                        p.reads.inc();
                        if !merge.is_zero() && n < room {
                            pause.as_mut().reset(next_tick(merge));
                            paused = true;
                        }
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
                tracing::warn!(peer = %self.peer, channel = self.publish.as_ref().map(|p| p.sink.channel_id()),
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
                    if let (Some(p), Some((video, audio))) = (&mut self.publish, FlvInput::expected_tracks(&meta)) {
                        p.feed.expect_tracks(video, audio);
                        p.drain()?;
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
                tracing::warn!(%peer, channel = self.publish.as_ref().map(|p| p.sink.channel_id()), %error,
                    "RTMP protocol error; closing");
            }
        }
    }

    async fn on_publish(&mut self, request_id: PublishRequestId, app: &str, stream_key: &str) {
        let decided = if app == APP {
            self.shared.gate.start_publish(self.peer, Protocol::Rtmp, stream_key).await.map_err(rtmp_refusal)
        } else {
            tracing::warn!(peer = %self.peer, app, "RTMP publish refused: unknown application");
            Err(Refused("app", RejectReason::BadName))
        };
        match decided {
            Ok(sink) => {
                let publishing = Publishing::new(sink, &self.shared.metrics);
                if self.session.accept_publish(request_id).is_err() {
                    // Closed meanwhile: nothing to accept; give the session back.
                    self.publish = Some(publishing);
                    return self.end_publish("closed before accept").await;
                }
                tracing::info!(peer = %self.peer, channel = %publishing.sink.channel_id(),
                    session = %publishing.sink.session_id(), "RTMP publish accepted");
                self.publish = Some(publishing);
            }
            Err(Refused(label, reason)) => {
                self.shared.metrics.rejected.with_label_values(&[label]).inc();
                // Fails only if the session closed meanwhile, which needs no answer.
                let _ = self.session.reject_publish(request_id, reason);
            }
        }
    }

    fn on_media(&mut self, video: bool, timestamp_ms: u64, payload: &Bytes) -> Result<(), End> {
        let Some(p) = &mut self.publish else { return Ok(()) };
        let converted =
            if video { p.input.video(timestamp_ms, payload) } else { Ok(p.input.audio(timestamp_ms, payload)) };
        let handled = converted.and_then(|converted| match converted {
            Converted::Input(input) => p.feed.handle(input),
            Converted::Other => Ok(Handled::Other),
            Converted::Dropped => Ok(Handled::Dropped),
        });
        match handled {
            Ok(Handled::Frame) if video => p.video_frames.inc(),
            Ok(Handled::Frame) => p.audio_frames.inc(),
            Ok(Handled::Dropped) => p.dropped.inc(),
            Ok(Handled::Other) => {}
            Err(error) => {
                tracing::warn!(peer = %self.peer, channel = %p.sink.channel_id(), %error,
                    "cannot package this stream; closing");
                return Err(End::Unpackageable);
            }
        }
        p.drain()
    }

    /// Ends the publish, if any.
    async fn end_publish(&mut self, why: &'static str) {
        if let Some(p) = self.publish.take() {
            p.end(why).await;
        }
    }
}

/// What the encoder is told about a refused publish.
fn rtmp_refusal(refused: Refusal) -> Refused {
    let reason = match refused {
        Refusal::UnknownKey | Refusal::AlreadyLive => RejectReason::BadName,
        Refusal::CatalogUnavailable => RejectReason::Error("Catalog unavailable; retry.".into()),
        Refusal::SessionNotStarted => RejectReason::Error("Could not start the session; retry.".into()),
        _ => RejectReason::Error("Internal error; retry.".into()),
    };
    Refused(refused.label(), reason)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;

    use super::*;

    /// Whether `socket` polls readable within `wait_ms`.
    #[allow(unsafe_code)]
    fn readable(socket: &std::net::TcpStream, wait_ms: i32) -> bool {
        let mut fds = libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd, valid for the call.
        let ready = unsafe { libc::poll(&mut fds, 1, wait_ms) };
        ready == 1 && fds.revents & libc::POLLIN != 0
    }

    #[test]
    fn a_held_socket_does_not_signal_the_frames_that_arrive_until_released() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut publisher = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ingest, _) = listener.accept().unwrap();
        hold_wakeups(ingest.as_raw_fd(), true);
        publisher.write_all(&[7; 4000]).unwrap();
        publisher.write_all(&[8; 4000]).unwrap();
        assert!(!readable(&ingest, 100), "a held socket signalled a frame");
        hold_wakeups(ingest.as_raw_fd(), false);
        assert!(readable(&ingest, 0), "the released socket did not signal what waits");
    }

    #[test]
    fn merged_reads_wake_every_connection_on_the_same_ticks() {
        let period = Duration::from_millis(30);
        let before = Instant::now();
        let (a, b) = (next_tick(period), next_tick(period));
        assert!(a > before && a <= Instant::now() + period, "the tick is not within one period");
        std::thread::sleep(Duration::from_millis(7));
        let c = next_tick(period);
        assert!(b == a && (c == a || c == a + period), "ticks {a:?} {b:?} {c:?} are not on one grid");
    }
}
