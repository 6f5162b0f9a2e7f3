//! Running the edge inside the node's tokio runtime.
//!
//! pingora's own `Server` owns the process (daemonizing, signals, `run_forever` exits); the node
//! already has a runtime, listeners bound before start (so tests use port 0) and one shutdown
//! signal. So the edge keeps pingora's proxy ([`pingora_proxy::HttpProxy`], all of its HTTP and
//! cache logic) and drives it from its own accept loop: accept, optional TLS handshake, hand the
//! stream to the proxy, and on shutdown stop accepting, tell keep-alive connections to close and
//! wait (bounded) for requests in flight.
//!
//! Connections are served on threads of the edge's own, one single-threaded runtime each, as
//! nginx serves them from worker processes: a connection stays on the thread that took it, with
//! that thread's own `epoll`, so a hit never wakes another thread or moves a task between cores.
//! On one shared work-stealing runtime, two threads serving 256 busy connections spent about 40%
//! more CPU per 100 KB hit than one thread did. Each accepted connection goes to the thread with
//! the fewest open ones.

use std::future::Future;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::listeners::tls::{Acceptor, TlsSettings};
use pingora_core::protocols::http::v2;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::SocketDigest;
use pingora_core::protocols::{Digest, GetSocketDigest, ALPN};
use pingora_core::server::configuration::ServerConf;
use pingora_proxy::HttpProxy;
use prometheus::Registry;
use thread_runtimes::ThreadRuntimes;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::direct::{DirectSocket, EarlyHits, Pending};
use crate::metrics::EdgeMetrics;
use crate::policy::Freshness;
use crate::proxy::{CacheParts, EdgeProxy, OriginResolver, UpstreamTimeouts};
use crate::storage::MokaStorage;
use crate::viewers::{LastCounted, ViewerCounter};

/// Settings of one edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    /// Bytes of complete objects the cache may hold.
    pub cache_bytes: u64,
    pub freshness: Freshness,
    pub timeouts: UpstreamTimeouts,
    /// Viewer connections at once; more wait in the accept queue.
    pub max_connections: usize,
    /// Window of the unique-viewer count.
    pub viewer_window: Duration,
    /// Keep bodies of 16 KB and more in memfds and send fresh part, segment and init hits on
    /// plain-TCP connections with `sendfile`, past pingora's hit path (`direct`). Off:
    /// every answer goes through pingora and bodies stay in memory (for comparison runs).
    pub direct_hits: bool,
    /// Threads serving viewer connections, each with a runtime of its own; 0: one per core.
    pub threads: usize,
    /// Directory for the files of large cached bodies (unnamed, gone when evicted or when the
    /// process ends). Best on a disk filesystem, whose large folios `sendfile` sends in batches
    /// (`crate::pages`); `None`: memfds.
    pub body_dir: Option<PathBuf>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            cache_bytes: 256 * 1024 * 1024,
            freshness: Freshness::default(),
            timeouts: UpstreamTimeouts::default(),
            max_connections: 100_000,
            viewer_window: Duration::from_secs(30),
            direct_hits: true,
            threads: 0,
            body_dir: None,
        }
    }
}

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EdgeError {
    #[error("edge metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("edge TLS certificate {path}: {reason}")]
    Tls { path: String, reason: String },
}

/// A built edge: the proxy, its storage and its viewer counter. Serve it with [`Edge::serve`].
pub struct Edge {
    proxy: Arc<HttpProxy<EdgeProxy>>,
    storage: &'static MokaStorage,
    viewers: Arc<ViewerCounter>,
    metrics: EdgeMetrics,
    early: Arc<EarlyHits>,
    tls: Option<Arc<Acceptor>>,
    max_connections: usize,
    direct_hits: bool,
    threads: usize,
}

impl Edge {
    /// Build an edge whose metrics go to `registry`.
    ///
    /// The storage and the cache lock live for the rest of the process (pingora-cache takes
    /// `'static` references): build one edge per process, not one per request.
    pub fn new(config: EdgeConfig, resolver: Arc<dyn OriginResolver>, registry: &Registry) -> Result<Self, EdgeError> {
        let metrics = EdgeMetrics::new(registry)?;
        let mut storage = MokaStorage::new(config.cache_bytes);
        if !config.direct_hits {
            storage = storage.without_files();
        }
        if let Some(dir) = &config.body_dir {
            storage = storage.with_body_dir(dir);
        }
        let storage: &'static MokaStorage = Box::leak(Box::new(storage));
        // A fetch may hold the lock as long as the origin may hold a blocking request.
        let lock: &'static CacheKeyLockImpl = Box::leak(CacheLock::new_boxed(config.timeouts.read));
        let viewers = Arc::new(ViewerCounter::new(config.viewer_window));
        let early = Arc::new(EarlyHits { storage, metrics: metrics.clone(), viewers: viewers.clone() });
        let inner = EdgeProxy {
            resolver,
            cache: CacheParts { storage, lock },
            freshness: config.freshness,
            timeouts: config.timeouts,
            metrics: metrics.clone(),
            viewers: viewers.clone(),
        };
        let conf = Arc::new(ServerConf::default());
        let proxy = Arc::new(pingora_proxy::http_proxy(&conf, inner));
        Ok(Edge {
            proxy,
            storage,
            viewers,
            metrics,
            early,
            tls: None,
            max_connections: config.max_connections,
            direct_hits: config.direct_hits,
            threads: match config.threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
        })
    }

    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub fn with_tls(mut self, cert: &Path, key: &Path) -> Result<Self, EdgeError> {
        for path in [cert, key] {
            if let Err(e) = std::fs::metadata(path) {
                return Err(EdgeError::Tls { path: path.display().to_string(), reason: e.to_string() });
            }
        }
        let (Some(cert_path), Some(key_path)) = (cert.to_str(), key.to_str()) else {
            return Err(EdgeError::Tls { path: cert.display().to_string(), reason: "path is not UTF-8".into() });
        };
        let mut settings = TlsSettings::intermediate(cert_path, key_path)
            .map_err(|e| EdgeError::Tls { path: cert_path.to_owned(), reason: e.to_string() })?;
        // Browsers speak HTTP/2 when offered (ALPN h2, else http/1.1).
        settings.enable_h2();
        self.tls = Some(Arc::new(settings.build()));
        Ok(self)
    }

    /// The unique-viewer counter, for the node to report to the catalog.
    pub fn viewers(&self) -> Arc<ViewerCounter> {
        self.viewers.clone()
    }

    /// `bitriver_edge_connections`: viewer connections open now (for the node's load report).
    pub fn connections(&self) -> prometheus::IntGauge {
        self.metrics.connections.clone()
    }

    /// The cache storage (sizes, for health and tests).
    pub fn storage(&self) -> &'static MokaStorage {
        self.storage
    }

    /// Accept viewers on `listener` until `shutdown` is cancelled, then let requests in flight
    /// finish for at most `drain`. Accepting runs on the caller's runtime; connections are served
    /// on the edge's own threads (see the module docs).
    pub async fn serve(&self, listener: TcpListener, shutdown: CancellationToken, drain: Duration) {
        let threads = match ThreadRuntimes::start("edge", self.threads, |i, _| {
            self.metrics.thread_connections.with_label_values(&[&i.to_string()])
        }) {
            Ok(threads) => threads,
            Err(error) => {
                tracing::error!(%error, "edge: could not start its serving threads");
                return;
            }
        };
        // pingora's request loop takes its own shutdown watch; it turns when `shutdown` does.
        let (stopping, pingora_stop) = watch::channel(false);
        let limit = u32::try_from(self.max_connections.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        let slots = Arc::new(Semaphore::new(limit as usize));
        // Fresh hits skip pingora on plain TCP only, and only with direct hits on.
        let early = (self.direct_hits && self.tls.is_none()).then(|| self.early.clone());
        loop {
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => permit,
                () = shutdown.cancelled() => break,
            };
            let Ok(permit) = permit else { break };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.cancelled() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "edge accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // The socket moves to the serving thread's runtime, which registers it anew.
            let Ok(tcp) = tcp.into_std() else { continue };
            let (thread, open) = threads.least_busy();
            let (proxy, tls, early) = (self.proxy.clone(), self.tls.clone(), early.clone());
            // A child token: the connection's waits on it lock its own state, not one shared by
            // every connection on both threads.
            let (stop, pingora_stop) = (shutdown.child_token(), pingora_stop.clone());
            let connections = self.metrics.connections.clone();
            connections.inc();
            thread.spawn(async move {
                if let Ok(tcp) = tokio::net::TcpStream::from_std(tcp) {
                    serve_accepted(tcp, peer.ip(), proxy, tls, early, stop, pingora_stop).await;
                }
                drop(open);
                connections.dec();
                drop(permit);
            });
        }
        stopping.send_replace(true);
        // Keep-alive connections stop waiting for their next request; in-flight ones finish.
        self.proxy.http_cleanup().await;
        let all = limit;
        if tokio::time::timeout(drain, slots.acquire_many(all)).await.is_err() {
            tracing::warn!("edge: requests still in flight after {drain:?}; stopping anyway");
        }
        drop(threads);
    }
}

/// Serve one accepted connection on the current (serving) thread: its TLS handshake if the edge
/// has a certificate, then HTTP/2 or HTTP/1.1 requests until it closes. `early` is given on
/// plain TCP when fresh hits may skip pingora ([`crate::direct`], [`crate::early`]).
async fn serve_accepted(
    tcp: tokio::net::TcpStream,
    client: IpAddr,
    proxy: Arc<HttpProxy<EdgeProxy>>,
    tls: Option<Arc<Acceptor>>,
    early: Option<Arc<EarlyHits>>,
    stop: CancellationToken,
    pingora_stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let direct = early.and_then(|early| {
        DirectSocket::new(&tcp).map(|socket| Direct {
            socket: Arc::new(socket),
            early,
            client,
            last: LastCounted::default(),
        })
    });
    let digest = SocketDigest::from_raw_fd(tcp.as_raw_fd());
    let mut stream = L4Stream::from(tcp);
    stream.set_socket_digest(digest);
    let stream: pingora_core::protocols::Stream = match tls {
        None => Box::new(stream),
        Some(acceptor) => {
            match tokio::time::timeout(Duration::from_secs(10), Box::pin(acceptor.tls_handshake(stream))).await {
                Ok(Ok(tls)) => Box::new(tls),
                Ok(Err(error)) => {
                    tracing::debug!(%error, "edge TLS handshake failed");
                    return;
                }
                Err(_) => return,
            }
        }
    };
    if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
        serve_h2(stream, proxy, stop, pingora_stop).await;
    } else {
        serve_connection(stream, proxy, stop, pingora_stop, direct).await;
    }
}

/// Serve the streams of one HTTP/2 connection (ALPN h2 over TLS), each request on its own task,
/// until the viewer closes it, it has no new stream for [`IDLE_TIMEOUT`], or the edge stops.
/// pingora's frame and stream limits apply (its default `H2Options`).
async fn serve_h2(
    stream: pingora_core::protocols::Stream,
    proxy: Arc<HttpProxy<EdgeProxy>>,
    shutdown: CancellationToken,
    pingora_stop: watch::Receiver<bool>,
) {
    let digest = Arc::new(Digest {
        ssl_digest: stream.get_ssl_digest(),
        timing_digest: stream.get_timing_digest(),
        proxy_digest: stream.get_proxy_digest(),
        socket_digest: stream.get_socket_digest(),
    });
    let mut conn = match tokio::time::timeout(IDLE_TIMEOUT, v2::server::handshake(stream, None)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            tracing::debug!(%error, "edge HTTP/2 handshake failed");
            return;
        }
        Err(_) => return,
    };
    let mut requests = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = tokio::time::timeout(IDLE_TIMEOUT, v2::server::HttpSession::from_h2_conn(&mut conn, digest.clone())) => accepted,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok(Ok(Some(v2::server::H2Accept::Session(session)))) => {
                let (proxy, stop) = (proxy.clone(), pingora_stop.clone());
                requests.spawn(async move {
                    Box::pin(proxy.process_new_http(ServerSession::new_http2(session), &stop)).await;
                });
            }
            Ok(Ok(Some(v2::server::H2Accept::Rejected))) => {}
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
        }
        // Finished requests leave the set as the connection goes on.
        while requests.try_join_next().is_some() {}
    }
    // Let the requests in flight finish, then the connection goes (GOAWAY on drop).
    conn.graceful_shutdown();
    let _ = tokio::time::timeout(IDLE_TIMEOUT, async { while requests.join_next().await.is_some() {} }).await;
}

/// How long a keep-alive connection may sit idle between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A plain-TCP connection's way past pingora: its socket for direct sends, and what answering a
/// request before pingora needs.
struct Direct {
    socket: Arc<DirectSocket>,
    early: Arc<EarlyHits>,
    client: IpAddr,
    /// The channel this connection's viewer was last counted for.
    last: LastCounted,
}

/// Serve HTTP/1.1 requests on one connection until it closes. pingora's request future is large
/// (its whole proxy state machine), so it is boxed and lives only while a request is in
/// progress; between requests the connection waits for its next byte with a small future. That
/// is what keeps an idle viewer connection cheap (pingora's own keep-alive loop would hold the
/// request future, some 20 KB, for as long as the connection stays open). On plain TCP, a plain
/// `GET` of a fresh immutable hit is answered before pingora sees it ([`crate::early`]).
async fn serve_connection(
    stream: pingora_core::protocols::Stream,
    proxy: Arc<HttpProxy<EdgeProxy>>,
    shutdown: CancellationToken,
    pingora_stop: watch::Receiver<bool>,
    mut direct: Option<Direct>,
) {
    // Bytes read from the socket and not answered yet (see DirectSocket::next_request).
    let mut pending = Vec::new();
    // Registered once for the connection rather than once per request: the wait for the edge's
    // shutdown, and a timer for the idle limit that is only pushed back when it goes off early.
    let stopped = shutdown.cancelled();
    tokio::pin!(stopped);
    let idle = tokio::time::sleep(IDLE_TIMEOUT);
    tokio::pin!(idle);
    let mut next = Some((stream, None));
    while let Some((mut stream, settings)) = next.take() {
        let waiting = next_request(&mut stream, direct.as_ref(), &mut pending);
        let Some(waited) = unless_idle_or_stopped(waiting, stopped.as_mut(), idle.as_mut(), IDLE_TIMEOUT).await else {
            return;
        };
        match waited {
            Ok(Pending::Other) => {}
            Ok(Pending::Hit { request, hit }) => {
                let Some(direct) = &mut direct else { return };
                let answered =
                    direct.socket.answer_early(&direct.early, &request, &hit, Some(direct.client), &mut direct.last);
                if let Err(error) = answered.await {
                    tracing::debug!(%error, "edge: sending a cached object");
                    return;
                }
                next = Some((stream, settings));
                continue;
            }
            // Closed by the viewer.
            Ok(Pending::Closed) | Err(_) => return,
        }
        if !pending.is_empty() {
            // What was read of this request goes back in front of the socket, for pingora.
            let Ok(mut l4) = stream.into_any().downcast::<L4Stream>() else { return };
            l4.rewind(&pending);
            pending.clear();
            stream = l4;
        }
        let mut session = ServerSession::new_http1(stream);
        let stopping = shutdown.is_cancelled();
        session.set_keepalive(if stopping { None } else { Some(IDLE_TIMEOUT.as_secs()) });
        if let Some(settings) = settings {
            HttpPersistentSettings::apply_to_session(settings, &mut session);
        }
        // Reaches the request's context through ProxyHttp::on_connection_reuse.
        if let Some(direct) = &direct {
            session.set_connection_user_context(Some(Box::new(direct.socket.clone())));
        }
        let reused = Box::pin(proxy.process_new_http(session, &pingora_stop)).await;
        next = reused.map(ReusedHttpStream::consume);
    }
}

/// `waiting`'s output, or `None` once the edge stops or `limit` has passed since the call. `idle`
/// is the connection's one timer: when it goes off early (armed for an earlier wait), it is
/// pushed back to this wait's deadline instead of being re-registered for every request.
async fn unless_idle_or_stopped<T>(
    waiting: impl Future<Output = T>,
    mut stopped: Pin<&mut impl Future<Output = ()>>,
    mut idle: Pin<&mut Sleep>,
    limit: Duration,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    tokio::pin!(waiting);
    loop {
        tokio::select! {
            biased;
            () = &mut stopped => return None,
            output = &mut waiting => return Some(output),
            () = &mut idle => {
                if deadline <= Instant::now() {
                    return None;
                }
                idle.as_mut().reset(deadline);
            }
        }
    }
}

/// Wait for the first bytes of a connection's next request: on plain TCP, to read and look at them
/// ([`DirectSocket::next_request`]); otherwise (TLS) only to know one has begun.
async fn next_request(
    stream: &mut pingora_core::protocols::Stream,
    direct: Option<&Direct>,
    pending: &mut Vec<u8>,
) -> std::io::Result<Pending> {
    if let Some(direct) = direct {
        return direct.socket.next_request(&direct.early, pending).await;
    }
    let mut byte = [0u8; 1];
    // A byte of the next request is there (or peeking is not supported: let pingora read).
    stream.try_peek(&mut byte).await.map(|_| Pending::Other)
}

#[cfg(test)]
mod tests {
    use std::future::{pending, ready};

    use super::*;

    const LIMIT: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_after_the_limit_counted_from_its_current_wait() {
        let never = pending::<()>();
        tokio::pin!(never);
        let idle = tokio::time::sleep(LIMIT);
        tokio::pin!(idle);
        let start = Instant::now();

        // A first request arrives after 50 s: the timer, armed for 60 s, has not gone off.
        let slow = async {
            tokio::time::sleep(Duration::from_secs(50)).await;
            7
        };
        assert_eq!(unless_idle_or_stopped(slow, never.as_mut(), idle.as_mut(), LIMIT).await, Some(7));
        assert_eq!(start.elapsed(), Duration::from_secs(50));

        // The next never comes: the timer goes off at 60 s, early for this wait, and the
        // connection is idle only at 50 + 60 s.
        let answer = unless_idle_or_stopped(pending::<u8>(), never.as_mut(), idle.as_mut(), LIMIT).await;
        assert_eq!(answer, None);
        assert_eq!(start.elapsed(), Duration::from_secs(110));

        // Requests that are already there are answered, whatever the timer says.
        assert_eq!(unless_idle_or_stopped(ready(1), never.as_mut(), idle.as_mut(), LIMIT).await, Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_the_edge_ends_a_wait_before_its_request() {
        let stop = CancellationToken::new();
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        let idle = tokio::time::sleep(LIMIT);
        tokio::pin!(idle);
        let start = Instant::now();
        let stopper = tokio::spawn({
            let stop = stop.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                stop.cancel();
            }
        });
        let answer = unless_idle_or_stopped(pending::<u8>(), stopped.as_mut(), idle.as_mut(), LIMIT).await;
        assert_eq!(answer, None);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        stopper.await.unwrap();
        // Once stopped, even a request that is there is not taken.
        assert_eq!(unless_idle_or_stopped(ready(1), stopped.as_mut(), idle.as_mut(), LIMIT).await, None);
    }
}
