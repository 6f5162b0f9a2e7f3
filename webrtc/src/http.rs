//! The WHIP and WHEP endpoints.
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /whip`, `Authorization: Bearer KEY`, `application/sdp` offer | 201, `Location: /whip/{session}`, SDP answer; 401 wrong key, 409 channel live, 415 not SDP, 400 malformed, 422 no H.264, 503 full |
//! | `POST /whep/{channelId}`, `application/sdp` offer | 201, `Location: /whep/{channelId}/{session}`, SDP answer; 307 to the node that packages it; 404 not live |
//! | `PATCH` a session, `application/trickle-ice-sdpfrag` | 204 (candidates added) |
//! | `DELETE` a session | 200; 404 unknown; 403 a WHIP session of another key |
//! | `OPTIONS` any of them | 204, CORS, `Link` ICE servers |
//!
//! Every answer carries `Link: <stun:...>; rel="ice-server"` for the configured servers (on the
//! 201 and on `OPTIONS`), and CORS headers for players and publishers on other sites: there is
//! no cookie here, WHIP is authorized by its bearer key and WHEP is public like the LL-HLS it
//! mirrors. Bodies are read up to [`MAX_SDP_BYTES`] before anything else happens.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use axum::Router;
use media::ingest::{IngestMetrics, Protocol, PublishGate, PublishSink, Refusal};
use rand::RngCore;
use str0m::{Candidate, IceCreds, Rtc, RtcConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::offer::{parse_offer, parse_trickle, Offer, OfferError, MAX_SDP_BYTES};
use crate::port::{Lease, MediaPorts};
use crate::session::{run_play, run_publish, Control};
use crate::whep_media::WhepHub;
use crate::{WebrtcConfig, WebrtcMetrics};

const SDP: &str = "application/sdp";
const TRICKLE: &str = "application/trickle-ice-sdpfrag";

/// What a running session is, for `PATCH` and `DELETE`.
#[derive(Debug)]
struct Entry {
    kind: Kind,
    /// The channel a viewer plays (checked against the URL).
    channel_id: String,
    /// A publisher's key (a `DELETE` that presents another is refused).
    key: Option<String>,
    control: mpsc::Sender<Control>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Publish,
    Play,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Publish => "publish",
            Kind::Play => "play",
        }
    }
}

struct Inner<G: PublishGate> {
    /// `None` on a node without the ingest role (WHEP only).
    gate: Option<Arc<G>>,
    ingest: IngestMetrics,
    hub: WhepHub,
    ports: MediaPorts,
    config: WebrtcConfig,
    metrics: WebrtcMetrics,
    sessions: Mutex<HashMap<String, Entry>>,
    tasks: TaskTracker,
    stop: CancellationToken,
    /// One crypto provider for every session (pure Rust, see Cargo.toml).
    crypto: Arc<str0m::config::CryptoProvider>,
    /// Where a channel not live here is (see [`Webrtc::with_locator`]).
    locator: Option<Locator>,
}

/// The WHEP URL of another node that packages a channel, if any.
pub type Locator = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The WHIP and WHEP service of a node. Cheap to clone.
pub struct Webrtc<G: PublishGate> {
    inner: Arc<Inner<G>>,
}

impl<G: PublishGate> Clone for Webrtc<G> {
    fn clone(&self) -> Self {
        Webrtc { inner: self.inner.clone() }
    }
}

impl<G: PublishGate> Webrtc<G> {
    /// `gate` decides WHIP publishes (the same gate as RTMP and SRT, with its metrics; `None`:
    /// WHEP only); `hub` must be the registry's observer (`LiveRegistry::set_observer`) for WHEP
    /// to find channels.
    pub fn new(
        gate: Option<Arc<G>>,
        ingest: IngestMetrics,
        hub: WhepHub,
        ports: MediaPorts,
        config: WebrtcConfig,
        metrics: WebrtcMetrics,
    ) -> Self {
        let inner = Inner {
            gate,
            ingest,
            hub,
            ports,
            config,
            metrics,
            sessions: Mutex::default(),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            locator: None,
        };
        Webrtc { inner: Arc::new(inner) }
    }

    /// A `POST /whep/{channelId}` for a channel live on another node is redirected (307, which
    /// WHEP clients follow with the same offer) to the URL `locator` gives. Call before cloning.
    pub fn with_locator(mut self, locator: Locator) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.locator = Some(locator);
        }
        self
    }

    /// The routes (see the module docs).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/whip", post(whip_post::<G>).options(preflight::<G>))
            .route("/whip/{session}", patch(whip_patch::<G>).delete(whip_delete::<G>).options(preflight::<G>))
            .route("/whep/{channel}", post(whep_post::<G>).options(preflight::<G>))
            .route("/whep/{channel}/{session}", patch(whep_patch::<G>).delete(whep_delete::<G>).options(preflight::<G>))
            .layer(axum::middleware::map_response(cors))
            .with_state(self.inner.clone())
    }

    /// The single media port's address (`None` in range mode).
    pub fn media_addr(&self) -> Option<SocketAddr> {
        self.inner.ports.local_addr()
    }

    /// Sessions running now.
    pub fn sessions(&self) -> usize {
        self.inner.lock().len()
    }

    /// Ends every session (publishers end their catalog sessions) and waits up to `grace`.
    pub async fn shut_down(&self, grace: Duration) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait()).await.is_err() {
            tracing::warn!(left = self.sessions(), "WebRTC sessions still ending after the grace period");
        }
        self.inner.ports.close();
    }
}

impl<G: PublishGate> Inner<G> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refuse(&self, kind: Kind, reason: &str, status: StatusCode, message: impl Into<String>) -> Response {
        self.metrics.refused.with_label_values(&[kind.label(), reason]).inc();
        text(status, message)
    }

    /// A str0m instance with our ICE credentials and candidates, the offer accepted.
    async fn negotiate(&self, offer: Offer) -> Result<(Rtc, Lease, String), String> {
        let ufrag = random_hex(8);
        let lease = self.ports.lease(&ufrag).await.map_err(|e| format!("no media port: {e}"))?;
        let mut rtc = RtcConfig::new()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_h264(true)
            .enable_opus(true)
            .set_local_ice_credentials(IceCreds { ufrag, pass: random_hex(24) })
            .set_crypto_provider(self.crypto.clone())
            .build(Instant::now());
        for addr in &lease.candidates {
            let candidate = Candidate::host(*addr, "udp").map_err(|e| format!("host candidate {addr}: {e}"))?;
            rtc.add_local_candidate(candidate);
        }
        let answer = rtc.sdp_api().accept_offer(offer.sdp).map_err(|e| format!("offer not acceptable: {e}"))?;
        Ok((rtc, lease, answer.to_sdp_string()))
    }

    /// Registers a new session and runs `run` (handed its control queue) on the session tracker;
    /// the session is forgotten when it ends. Returns its id.
    fn launch<F>(
        self: &Arc<Self>,
        kind: Kind,
        channel_id: &str,
        key: Option<String>,
        run: impl FnOnce(mpsc::Receiver<Control>) -> F,
    ) -> String
    where
        F: Future<Output = &'static str> + Send + 'static,
    {
        let id = random_hex(16);
        let (control, rx) = mpsc::channel(16);
        self.lock().insert(id.clone(), Entry { kind, channel_id: channel_id.to_owned(), key, control });
        self.metrics.sessions.with_label_values(&[kind.label()]).inc();
        let session = run(rx);
        let (inner, forget) = (self.clone(), id.clone());
        self.tasks.spawn(async move {
            session.await;
            inner.lock().remove(&forget);
            inner.metrics.sessions.with_label_values(&[kind.label()]).dec();
        });
        id
    }

    fn full(&self) -> bool {
        self.lock().len() >= self.config.max_sessions
    }

    /// The 201 of a new session.
    fn created(&self, location: String, answer: String) -> Response {
        let mut response = (StatusCode::CREATED, answer).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
        headers.insert("accept-patch", HeaderValue::from_static(TRICKLE));
        if let Ok(value) = HeaderValue::from_str(&format!("\"{}\"", random_hex(8))) {
            headers.insert(header::ETAG, value);
        }
        if let Ok(value) = HeaderValue::from_str(&location) {
            headers.insert(header::LOCATION, value);
        }
        self.links(headers);
        response
    }

    fn links(&self, headers: &mut HeaderMap) {
        for server in &self.config.ice_servers {
            if let Ok(value) = HeaderValue::from_str(&server.link()) {
                headers.append(header::LINK, value);
            }
        }
    }
}

async fn whip_post<G: PublishGate>(State(s): State<Arc<Inner<G>>>, request: Request) -> Response {
    let peer = peer_of(&request);
    let kind = Kind::Publish;
    let Some(gate) = &s.gate else {
        return s.refuse(kind, "no_ingest", StatusCode::NOT_FOUND, "this node does not ingest (no ingest role)");
    };
    if !content_type_is(request.headers(), SDP) {
        return s.refuse(kind, "content_type", StatusCode::UNSUPPORTED_MEDIA_TYPE, "the offer must be application/sdp");
    }
    let Some(key) = bearer(request.headers()) else {
        let mut response =
            s.refuse(kind, "bad_key", StatusCode::UNAUTHORIZED, "the stream key goes in Authorization: Bearer KEY");
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let offer = match parse_offer(&body) {
        Ok(offer) => offer,
        Err(error) => return refuse_offer(&s, kind, &error),
    };
    if s.full() {
        return s.refuse(kind, "full", StatusCode::SERVICE_UNAVAILABLE, "this node takes no more WebRTC sessions");
    }
    let audio = offer.opus;
    let sink = match gate.start_publish(peer, Protocol::Whip, &key).await {
        Ok(sink) => sink,
        Err(refusal) => {
            s.ingest.rejected.with_label_values(&[refusal.label()]).inc();
            let (status, message) = match refusal {
                Refusal::UnknownKey => (StatusCode::UNAUTHORIZED, "unknown stream key"),
                Refusal::AlreadyLive => (StatusCode::CONFLICT, "the channel is already live (another publisher)"),
                Refusal::CatalogUnavailable | Refusal::SessionNotStarted => {
                    (StatusCode::SERVICE_UNAVAILABLE, "the catalog is unavailable; retry")
                }
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "this node cannot take the publish"),
            };
            let mut response = s.refuse(kind, refusal.label(), status, message);
            if status == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            return response;
        }
    };
    let (rtc, lease, answer) = match s.negotiate(offer).await {
        Ok(negotiated) => negotiated,
        Err(message) => {
            sink.end("offer not acceptable").await;
            return s.refuse(kind, "offer", StatusCode::BAD_REQUEST, message);
        }
    };
    let channel_id = sink.channel_id().to_owned();
    tracing::info!(%peer, channel = %channel_id, session = %sink.session_id(), "WHIP publish accepted");
    let (hub, ingest, metrics, timeouts, stop) =
        (s.hub.clone(), s.ingest.clone(), s.metrics.clone(), s.config.timeouts, s.stop.clone());
    let id = s.launch(kind, &channel_id, Some(key), |control| {
        run_publish(rtc, lease, control, sink, audio, hub, ingest, metrics, timeouts, stop)
    });
    s.created(format!("/whip/{id}"), answer)
}

async fn whep_post<G: PublishGate>(
    State(s): State<Arc<Inner<G>>>,
    Path(channel): Path<String>,
    request: Request,
) -> Response {
    let kind = Kind::Play;
    if !content_type_is(request.headers(), SDP) {
        return s.refuse(kind, "content_type", StatusCode::UNSUPPORTED_MEDIA_TYPE, "the offer must be application/sdp");
    }
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Some(feed) = s.hub.channel(&channel) else {
        if let Some(url) = s.locator.as_ref().and_then(|locate| locate(&channel)) {
            if let Ok(location) = HeaderValue::from_str(&url) {
                let mut response = text(StatusCode::TEMPORARY_REDIRECT, "the channel is served by another node");
                response.headers_mut().insert(header::LOCATION, location);
                return response;
            }
        }
        return s.refuse(kind, "not_live", StatusCode::NOT_FOUND, "the channel is not live on this node");
    };
    let offer = match parse_offer(&body) {
        Ok(offer) => offer,
        Err(error) => return refuse_offer(&s, kind, &error),
    };
    if s.full() {
        return s.refuse(kind, "full", StatusCode::SERVICE_UNAVAILABLE, "this node takes no more WebRTC sessions");
    }
    let (rtc, lease, answer) = match s.negotiate(offer).await {
        Ok(negotiated) => negotiated,
        Err(message) => return s.refuse(kind, "offer", StatusCode::BAD_REQUEST, message),
    };
    let (hub, metrics, timeouts, stop) = (s.hub.clone(), s.metrics.clone(), s.config.timeouts, s.stop.clone());
    let id =
        s.launch(kind, &channel, None, |control| run_play(rtc, lease, control, feed, hub, metrics, timeouts, stop));
    s.created(format!("/whep/{channel}/{id}"), answer)
}

async fn whip_patch<G: PublishGate>(
    State(s): State<Arc<Inner<G>>>,
    Path(session): Path<String>,
    request: Request,
) -> Response {
    trickle(&s, Kind::Publish, None, &session, request).await
}

async fn whep_patch<G: PublishGate>(
    State(s): State<Arc<Inner<G>>>,
    Path((channel, session)): Path<(String, String)>,
    request: Request,
) -> Response {
    trickle(&s, Kind::Play, Some(&channel), &session, request).await
}

async fn trickle<G: PublishGate>(
    s: &Inner<G>,
    kind: Kind,
    channel: Option<&str>,
    session: &str,
    request: Request,
) -> Response {
    if !content_type_is(request.headers(), TRICKLE) {
        return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "trickle ICE takes application/trickle-ice-sdpfrag");
    }
    let presented = bearer(request.headers());
    let control = match find(s, kind, channel, session, presented.as_deref()) {
        Ok(control) => control,
        Err((status, message)) => return text(status, message),
    };
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let candidates = match parse_trickle(&body) {
        Ok(candidates) => candidates,
        Err(error) => return text(StatusCode::BAD_REQUEST, error.to_string()),
    };
    for candidate in candidates {
        if control.try_send(Control::Candidate(candidate)).is_err() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "the session is busy or ending; retry");
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn whip_delete<G: PublishGate>(
    State(s): State<Arc<Inner<G>>>,
    Path(session): Path<String>,
    headers: HeaderMap,
) -> Response {
    end(&s, Kind::Publish, None, &session, bearer(&headers).as_deref())
}

async fn whep_delete<G: PublishGate>(
    State(s): State<Arc<Inner<G>>>,
    Path((channel, session)): Path<(String, String)>,
) -> Response {
    end(&s, Kind::Play, Some(&channel), &session, None)
}

fn end<G: PublishGate>(s: &Inner<G>, kind: Kind, channel: Option<&str>, session: &str, key: Option<&str>) -> Response {
    match find(s, kind, channel, session, key) {
        // A full queue means the session is already busy ending.
        Ok(control) => {
            let _ = control.try_send(Control::Close);
            text(StatusCode::OK, "session ended")
        }
        Err((status, message)) => text(status, message),
    }
}

/// The control queue of session `id` of this kind (and channel, for a viewer). A WHIP request
/// that presents a key must present the session's.
fn find<G: PublishGate>(
    s: &Inner<G>,
    kind: Kind,
    channel: Option<&str>,
    id: &str,
    key: Option<&str>,
) -> Result<mpsc::Sender<Control>, (StatusCode, &'static str)> {
    let sessions = s.lock();
    let entry = sessions
        .get(id)
        .filter(|e| e.kind == kind && channel.is_none_or(|c| c == e.channel_id))
        .ok_or((StatusCode::NOT_FOUND, "no such session"))?;
    if let (Some(presented), Some(own)) = (key, &entry.key) {
        if !constant_time_eq(presented.as_bytes(), own.as_bytes()) {
            return Err((StatusCode::FORBIDDEN, "this session belongs to another stream key"));
        }
    }
    Ok(entry.control.clone())
}

async fn preflight<G: PublishGate>(State(s): State<Arc<Inner<G>>>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, PATCH, DELETE, OPTIONS"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    headers.insert("accept-post", HeaderValue::from_static(SDP));
    s.links(headers);
    response
}

/// CORS on every answer: WHIP and WHEP clients run on other sites, and no cookie is involved.
async fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers
        .insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Location, Link, ETag, Accept-Patch"));
    response
}

fn refuse_offer<G: PublishGate>(s: &Inner<G>, kind: Kind, error: &OfferError) -> Response {
    let (reason, status) = match error {
        OfferError::NoVideo | OfferError::NoH264 => ("codec", StatusCode::UNPROCESSABLE_ENTITY),
        OfferError::TooLarge(_) => ("too_large", StatusCode::PAYLOAD_TOO_LARGE),
        _ => ("malformed", StatusCode::BAD_REQUEST),
    };
    s.refuse(kind, reason, status, error.to_string())
}

/// The body, at most [`MAX_SDP_BYTES`] of it.
async fn read_body(request: Request) -> Result<bytes::Bytes, Response> {
    axum::body::to_bytes(request.into_body(), MAX_SDP_BYTES)
        .await
        .map_err(|_| text(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over {MAX_SDP_BYTES} bytes")))
}

fn peer_of(request: &Request) -> SocketAddr {
    request.extensions().get::<ConnectInfo<SocketAddr>>().map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |info| info.0)
}

fn content_type_is(headers: &HeaderMap, wanted: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(wanted))
}

/// The bearer token, if one is presented.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 256).then(|| token.to_owned())
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut response = (status, Body::from(message.into())).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
