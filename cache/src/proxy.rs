//! The edge's pingora phases: which requests it takes, where it fetches from, what it caches.
//!
//! A request for `/hls/{channel}/...` gets its cache key from [`policy::parse`] (path plus the
//! LL-HLS parameters only), then pingora-cache looks it up in [`MokaStorage`]. On a miss the
//! first request takes the cache lock and fetches from the channel's origin; every concurrent
//! request for the same key waits on that lock and then reads the same fill as it arrives. Only
//! 200 answers are cached (never a 404, which for a hinted part turns into a 200 a moment later).
//! When the origin fails, parts and segments already held are served stale; anything else gets
//! a 502 or 504 with the API's JSON error body, whose message names no origin (the log does).
//! A fresh part, segment or init segment asked for with a plain GET on a plain-TCP keep-alive
//! connection is answered in `request_filter` by `direct`, before pingora's cache phases.

use std::any::Any;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora_cache::lock::CacheKeyLockImpl;
use pingora_cache::{CacheKey, CacheMeta, CachePhase, NoCacheReason, RespCacheable};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::direct::{self, DirectSocket};
use crate::metrics::EdgeMetrics;
use crate::policy::{self, Freshness, HlsRequest, NotServed, ObjectKind};
use crate::storage::MokaStorage;
use crate::viewers::{LastCounted, ViewerCounter};

/// Where an origin is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub addr: SocketAddr,
    /// Speak HTTPS to it.
    pub tls: bool,
    /// Check its certificate (off only for this node itself, reached on loopback).
    pub verify_tls: bool,
    /// Another edge of this region (the channel's regional shield) rather than an origin: asked
    /// first so that each object crosses regions once per region. Requests that come from an
    /// edge ([`VIA_EDGE`]) skip shields, so two edges never ask each other in a loop.
    pub shield: bool,
}

/// Request header an edge sets on what it asks a shield edge: that edge then goes to origins.
pub const VIA_EDGE: &str = "x-bitriver-via-edge";

/// Finds the origins serving a channel. `node/` implements it from the catalog replica, so this
/// crate knows nothing of the catalog.
pub trait OriginResolver: Send + Sync + 'static {
    /// The origins of a live channel, preferred first; empty if it is not live anywhere.
    fn origins(&self, channel: &str) -> Vec<Origin>;

    /// The origin holding a published recording; empty if there is none.
    fn recording_origins(&self, _recording: &str) -> Vec<Origin> {
        Vec::new()
    }
}

/// Timeouts towards origins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    /// Longer than the origin's blocking hold (three target durations), so a blocked playlist
    /// or hinted part is answered by the origin rather than cut off by the edge.
    pub read: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        UpstreamTimeouts { connect: Duration::from_secs(2), read: Duration::from_secs(20) }
    }
}

/// The shared, `'static` pieces pingora-cache wants references to.
pub(crate) struct CacheParts {
    pub(crate) storage: &'static MokaStorage,
    pub(crate) lock: &'static CacheKeyLockImpl,
}

/// The edge proxy: implements pingora's [`ProxyHttp`] phases.
pub struct EdgeProxy {
    pub(crate) resolver: Arc<dyn OriginResolver>,
    pub(crate) cache: CacheParts,
    pub(crate) freshness: Freshness,
    pub(crate) timeouts: UpstreamTimeouts,
    pub(crate) metrics: EdgeMetrics,
    pub(crate) viewers: Arc<ViewerCounter>,
}

/// Per-request state.
pub struct EdgeCtx {
    request: Option<HlsRequest>,
    origins: Vec<Origin>,
    attempt: usize,
    stale_served: bool,
    /// The viewer's address, for the unique-viewer count.
    client: Option<IpAddr>,
    /// The viewer's socket, on plain-TCP connections: fresh immutable hits go straight to it.
    direct: Option<Arc<DirectSocket>>,
    /// This request got (some of) an object from [`DirectSocket::send_hit`].
    direct_served: bool,
    /// Body bytes the direct path sent (pingora counts its own: `Session::body_bytes_sent`).
    direct_body_bytes: usize,
}

impl EdgeProxy {
    /// Counts and logs a retry on the channel's next origin (`ctx.attempt` already moved to it).
    fn failover(&self, ctx: &EdgeCtx, error: &Error) {
        self.metrics.origin_failovers.inc();
        let channel = ctx.request.as_ref().map_or("", |r| r.channel.as_str());
        let (from, to) = (&ctx.origins[ctx.attempt - 1], &ctx.origins[ctx.attempt % ctx.origins.len()]);
        tracing::warn!(channel, from = %from.addr, to = %to.addr, %error, "origin failed; trying the channel's next origin");
    }

    fn peer(&self, origin: &Origin) -> HttpPeer {
        let mut peer = HttpPeer::new(origin.addr, origin.tls, origin.addr.ip().to_string());
        peer.options.connection_timeout = Some(self.timeouts.connect);
        peer.options.read_timeout = Some(self.timeouts.read);
        peer.options.write_timeout = Some(self.timeouts.connect);
        peer.options.verify_cert = origin.verify_tls;
        peer.options.verify_hostname = origin.verify_tls;
        peer
    }
}

/// Write a JSON error in the API's shape: `{"error":{"code","message"}}`.
pub(crate) async fn respond_json_error(session: &mut Session, status: u16, code: &str, message: &str) -> Result<()> {
    let body = Bytes::from(serde_json::json!({"error": {"code": code, "message": message}}).to_string());
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header(header::CONTENT_TYPE, "application/json")?;
    header.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    header.insert_header(header::CACHE_CONTROL, "no-cache")?;
    header.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")?;
    session.set_keepalive(None);
    session.write_response_header(Box::new(header), false).await?;
    session.write_response_body(Some(body), true).await
}

/// WHEP (WebRTC playback) on the edge: the offer goes on to an origin that packages the channel
/// (307, which WHEP clients follow with the same body), and the media flows from there; the
/// edge caches HTTP, it does not relay WebRTC. A CORS preflight is answered here, since a
/// redirect cannot answer one. An origin reached on loopback (this node's own) is named by the
/// host the viewer used.
async fn whep_redirect(session: &mut Session, resolver: &dyn OriginResolver) -> Result<()> {
    let req = session.req_header();
    let path = req.uri.path().to_owned();
    let channel = path.trim_start_matches("/whep/").split('/').next().unwrap_or("");
    let valid = !channel.is_empty()
        && channel.len() <= 64
        && channel.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if req.method == http::Method::OPTIONS {
        let mut header = ResponseHeader::build(204, Some(4))?;
        header.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")?;
        header.insert_header(header::ACCESS_CONTROL_ALLOW_METHODS, "POST, OPTIONS")?;
        header.insert_header(header::ACCESS_CONTROL_ALLOW_HEADERS, "Authorization, Content-Type")?;
        header.insert_header(header::CONTENT_LENGTH, "0")?;
        session.write_response_header(Box::new(header), true).await?;
        return Ok(());
    }
    let origin = if valid { resolver.origins(channel).into_iter().find(|o| !o.shield) } else { None };
    let Some(origin) = origin else {
        return respond_json_error(session, 404, "not_found", "the channel is not live").await;
    };
    let host = if origin.addr.ip().is_loopback() || origin.addr.ip().is_unspecified() {
        let host = req.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        // `name:port`, `[v6]:port` or a bare name: the name.
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty() => name.to_owned(),
            _ => host.to_owned(),
        }
    } else {
        match origin.addr.ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        }
    };
    let scheme = if origin.tls { "https" } else { "http" };
    let location = format!("{scheme}://{host}:{}{path}", origin.addr.port());
    let mut header = ResponseHeader::build(307, Some(4))?;
    header.insert_header(header::LOCATION, location)?;
    header.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")?;
    header.insert_header(header::CACHE_CONTROL, "no-store")?;
    header.insert_header(header::CONTENT_LENGTH, "0")?;
    session.set_keepalive(None);
    session.write_response_header(Box::new(header), true).await
}

/// Whether a request may be answered by [`DirectSocket::send_hit`]: a GET of an immutable object
/// on a connection that stays open, at most with a `Range` (no conditional or 1.0 semantics to
/// honour, which pingora's hit path handles).
fn wants_direct(session: &Session, request: &HlsRequest) -> bool {
    let req = session.req_header();
    request.kind.is_immutable()
        && req.method == http::Method::GET
        && req.version == http::Version::HTTP_11
        && session.get_keepalive().is_some()
        && [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE, header::IF_MATCH, header::IF_RANGE]
            .iter()
            .all(|h| !req.headers.contains_key(h))
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = EdgeCtx;

    fn new_ctx(&self) -> EdgeCtx {
        EdgeCtx {
            request: None,
            origins: Vec::new(),
            attempt: 0,
            stale_served: false,
            client: None,
            direct: None,
            direct_served: false,
            direct_body_bytes: 0,
        }
    }

    fn on_connection_reuse(&self, _session: &mut Session, ctx: &mut EdgeCtx, prev_ctx: Box<dyn Any + Send + Sync>) {
        // Not only reuse: the accept loop hands every request of a plain-TCP connection its socket.
        if let Ok(direct) = prev_ctx.downcast::<Arc<DirectSocket>>() {
            ctx.direct = Some(*direct);
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut EdgeCtx) -> Result<bool> {
        self.metrics.requests.inc();
        if session.req_header().uri.path().starts_with("/whep/") {
            whep_redirect(session, self.resolver.as_ref()).await?;
            return Ok(true);
        }
        let req = session.req_header();
        let request = match policy::parse(req.uri.path(), req.uri.query()) {
            Ok(request) => request,
            Err(NotServed::NotFound) => {
                let message = format!("the edge serves /hls/{{channel}}/... only, not {}", req.uri.path());
                respond_json_error(session, 404, "not_found", &message).await?;
                return Ok(true);
            }
            Err(NotServed::BadRequest(malformed)) => {
                respond_json_error(session, 400, "bad_request", &malformed.to_string()).await?;
                return Ok(true);
            }
        };
        // Now, while the connection is surely open: the peer address is looked up lazily and
        // may be gone by the logging phase.
        ctx.client = client_ip(session);
        if let Some(direct) = ctx.direct.clone().filter(|_| wants_direct(session, &request)) {
            let hit = direct::fresh_hit(self.cache.storage, &request);
            // Several ranges make a multipart answer: pingora's hit path writes those.
            let hit = hit.and_then(|hit| Some((direct::hit_range(session.req_header(), hit.status, hit.size)?, hit)));
            if let Some((range, hit)) = hit {
                ctx.request = Some(request);
                // Before sending: once the viewer has the answer, the count must include it.
                self.metrics.cache_hits.inc();
                self.metrics.direct_sent(direct::sent_from(&hit));
                if let Err(e) = direct.send_hit(&hit, &range).await {
                    // Part of the answer may be out: the connection cannot carry another one.
                    session.set_keepalive(None);
                    return Err(Error::because(ErrorType::WriteError, "sending a cached object", e).into_down());
                }
                ctx.direct_served = range != direct::HitRange::Unsatisfiable;
                ctx.direct_body_bytes = range.body_len(hit.size);
                return Ok(true);
            }
        }
        ctx.request = Some(request);
        Ok(false)
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut EdgeCtx) -> Result<()> {
        let method = &session.req_header().method;
        if ctx.request.is_some() && (method == http::Method::GET || method == http::Method::HEAD) {
            session.cache.enable(self.cache.storage, None, None, Some(self.cache.lock), None);
        }
        Ok(())
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut EdgeCtx) -> Result<CacheKey> {
        let key = ctx.request.as_ref().map_or("", |r| r.key.as_str());
        Ok(CacheKey::new(key, ""))
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut EdgeCtx) -> Result<Box<HttpPeer>> {
        if ctx.origins.is_empty() {
            let (channel, vod) = ctx.request.as_ref().map_or(("", false), |r| (r.channel.as_str(), r.vod));
            ctx.origins = if vod { self.resolver.recording_origins(channel) } else { self.resolver.origins(channel) };
            if session.req_header().headers.contains_key(VIA_EDGE) {
                ctx.origins.retain(|o| !o.shield);
            }
            if ctx.origins.is_empty() {
                let why = if vod {
                    format!("recording {channel} is not published")
                } else {
                    format!("channel {channel} is not live")
                };
                return Error::e_explain(ErrorType::HTTPStatus(404), why);
            }
        }
        let origin = &ctx.origins[ctx.attempt % ctx.origins.len()];
        Ok(Box::new(self.peer(origin)))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut EdgeCtx,
    ) -> Result<()> {
        if let Some(request) = &ctx.request {
            // Ask for exactly what the cache key names: dropped parameters must not change the answer.
            let uri =
                request.key.parse::<http::Uri>().map_err(|e| Error::because(ErrorType::InternalError, "uri", e))?;
            upstream.set_uri(uri);
            self.metrics.origin_requests.with_label_values(&[request.kind.label()]).inc();
        }
        upstream.remove_header(&header::RANGE);
        let shield = !ctx.origins.is_empty() && ctx.origins[ctx.attempt % ctx.origins.len()].shield;
        if shield {
            upstream.insert_header(VIA_EDGE, "1")?;
        }
        self.metrics.upstream_requests.with_label_values(&[if shield { "shield" } else { "origin" }]).inc();
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut EdgeCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.metrics.origin_errors.inc();
        // Another origin of the channel may be up: try the next one, once each.
        if ctx.attempt + 1 < ctx.origins.len() {
            ctx.attempt += 1;
            self.failover(ctx, &e);
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut EdgeCtx,
        client_reused: bool,
    ) -> Box<Error> {
        self.metrics.origin_errors.inc();
        let mut e = e.more_context(format!("origin {peer}"));
        if ctx.attempt + 1 < ctx.origins.len() && session.req_header().method.is_idempotent() {
            ctx.attempt += 1;
            self.failover(ctx, &e);
            e.set_retry(true);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut EdgeCtx,
    ) -> Result<RespCacheable> {
        let Some(request) = &ctx.request else {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::NeverEnabled));
        };
        // Errors are not cached: a 404 for a hinted part is a 200 a moment later, a 503 passes.
        if resp.status != http::StatusCode::OK {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::OriginNotCache));
        }
        let origin_max_age =
            resp.headers.get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(policy::max_age);
        let ttl = self.freshness.ttl(request.kind, origin_max_age);
        let now = SystemTime::now();
        let stale_if_error = self.freshness.stale_if_error_secs(request.kind);
        Ok(RespCacheable::Cacheable(CacheMeta::new(now + ttl, now, 0, stale_if_error, resp.clone())))
    }

    fn should_serve_stale(&self, _session: &mut Session, ctx: &mut EdgeCtx, error: Option<&Error>) -> bool {
        let immutable = ctx.request.as_ref().is_some_and(|r| r.kind.is_immutable());
        let serve = immutable && error.is_some_and(|e| e.esource() == &ErrorSource::Upstream);
        if serve {
            ctx.stale_served = true;
        }
        serve
    }

    async fn response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &mut EdgeCtx) -> Result<()> {
        let label = match session.cache.phase() {
            CachePhase::Hit => "HIT",
            CachePhase::Stale | CachePhase::StaleUpdating => "STALE",
            CachePhase::Miss | CachePhase::Expired => "MISS",
            _ => "BYPASS",
        };
        if label == "HIT" || label == "STALE" {
            self.metrics.cache_hits.inc();
        }
        if ctx.stale_served {
            self.metrics.stale_served.inc();
        }
        resp.insert_header("x-cache", label)?;
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut EdgeCtx) -> FailToProxy {
        // The viewer gets a fixed message: the error itself names origin addresses (the cluster's
        // internal layout), which go to the log only.
        let (status, code, message) = match e.etype() {
            ErrorType::HTTPStatus(404) => {
                (404, "not_live", e.context.as_ref().map_or("not live".into(), |c| c.as_str().to_owned()))
            }
            ErrorType::HTTPStatus(code) => (*code, "origin_error", format!("origin answered {code}")),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                (504, "origin_timeout", "the origin did not answer in time".to_owned())
            }
            _ => match e.esource() {
                ErrorSource::Upstream => (502, "origin_unavailable", "no origin could be reached".to_owned()),
                ErrorSource::Downstream => {
                    return FailToProxy { error_code: 0, can_reuse_downstream: false };
                }
                _ => (500, "internal", "internal error".to_owned()),
            },
        };
        if status >= 500 {
            let path = ctx.request.as_ref().map_or("", |r| r.key.as_str());
            tracing::warn!(status, path, error = %e, "edge: answering with an error");
        }
        if let Err(write) = respond_json_error(session, status, code, &message).await {
            tracing::debug!(error = %write, "could not send the edge error response");
        }
        FailToProxy { error_code: status, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut EdgeCtx) {
        // A viewer is someone actually watching: playlists and parts that were served. Counting
        // failed requests would let made-up channel ids fill the counter.
        let answered = ctx.direct_served
            || session
                .response_written()
                .is_some_and(|r| r.status == http::StatusCode::OK || r.status == http::StatusCode::PARTIAL_CONTENT);
        let body_bytes = if ctx.direct_served { ctx.direct_body_bytes } else { session.body_bytes_sent() };
        if session.cache.enabled() && session.cache.lock_duration().is_some() && !session.cache.is_cache_lock_writer() {
            self.metrics.collapsed_waiters.inc();
        }
        let served = ctx.request.as_ref().filter(|_| answered);
        count_answer(&self.metrics, &self.viewers, self.cache.storage, served, ctx.client, None, body_bytes);
    }
}

/// What every answer adds once it is out, on pingora's path and on the edge's own
/// ([`DirectSocket::answer_early`]): a viewer of the channel if `served` is a live playlist or
/// part, its body bytes, and the cache's size as it now stands. `last` is the connection's
/// memory of its viewer's last count, where the caller keeps one.
pub(crate) fn count_answer(
    metrics: &EdgeMetrics,
    viewers: &ViewerCounter,
    storage: &MokaStorage,
    served: Option<&HlsRequest>,
    client: Option<IpAddr>,
    last: Option<&mut LastCounted>,
    body_bytes: usize,
) {
    if let Some(request) = served.filter(|r| !r.vod) {
        if matches!(request.kind, ObjectKind::Part | ObjectKind::BlockingPlaylist | ObjectKind::Playlist) {
            match last {
                Some(last) => viewers.seen_on_connection(last, &request.channel, client, Instant::now()),
                None => viewers.seen(&request.channel, client, Instant::now()),
            }
        }
    }
    metrics.body_bytes.inc_by(body_bytes as u64);
    // Written only when it changed (fills and evictions): a hit then only reads the gauge, and
    // the serving threads do not take its cache line from each other on every answer.
    let held = i64::try_from(storage.weighted_bytes()).unwrap_or(i64::MAX);
    if metrics.cache_bytes.get() != held {
        metrics.cache_bytes.set(held);
    }
}
