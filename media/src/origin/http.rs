//! The origin's HTTP face: LL-HLS playlists, CMAF headers, segments and parts of the streams in a
//! [`LiveRegistry`], with blocking playlist reload and preload-hinted part requests.
//!
//! Every request looks its channel and rendition up, reads the packager under its lock for one
//! lookup or render, and answers. Requests for something about to be published (the playlist
//! update a `_HLS_msn`/`_HLS_part` asks for, the part a preload hint names) wait on the
//! rendition's watch channel, bounded by [`hls::blocking_timeout`] and by the number of requests
//! allowed to wait at once.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::metrics::Kind;
use super::registry::{LiveChannel, LiveRegistry, RenditionSlot};
use crate::hls::{self, BadReload, BlockingReload, PlaylistParams, Rendition, RenditionReport, Variant};
use hls_names::RenditionFile;

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const INIT_TYPE: &str = "video/mp4";
const MEDIA_TYPE: &str = "video/iso.segment";
/// Parts, segments and headers never change once published.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const EXPOSED_HEADERS: &str = "Content-Length, Content-Type, Cache-Control, Age, Date, Retry-After";

/// Settings of the origin's HTTP side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginConfig {
    /// Requests allowed to wait for a part at once (blocking playlist reloads and preload-hinted
    /// parts); more get 503 with `Retry-After: 1`. Default 10 000.
    pub max_waiting_requests: usize,
    /// Of those, how many one client address may hold, so one client cannot take every slot
    /// (an edge collapses its viewers into one request per object, so it needs few). Applies
    /// when the server is run with connect info (the node's is). Default 1 000.
    pub max_waiting_per_client: usize,
    /// `max-age` of `master.m3u8`: short, as `BANDWIDTH` follows the measured rate. Default 2 s.
    pub multivariant_max_age: Duration,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            max_waiting_requests: 10_000,
            max_waiting_per_client: 1_000,
            multivariant_max_age: Duration::from_secs(2),
        }
    }
}

impl OriginConfig {
    /// Checks the settings, naming the bad one.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.max_waiting_requests == 0 || self.max_waiting_requests > Semaphore::MAX_PERMITS {
            return Err("max_waiting_requests must be between 1 and 2^61");
        }
        if self.max_waiting_per_client == 0 || self.max_waiting_per_client > self.max_waiting_requests {
            return Err("max_waiting_per_client must be between 1 and max_waiting_requests");
        }
        if self.multivariant_max_age > Duration::from_secs(60) {
            return Err("multivariant_max_age must be at most 60 s");
        }
        Ok(())
    }
}

struct Origin {
    registry: LiveRegistry,
    config: OriginConfig,
    waiting: Semaphore,
    /// Waiting requests by client address.
    waiting_by_client: Mutex<HashMap<IpAddr, usize>>,
}

/// One client's waiting request; gives its slot back on drop.
struct ClientSlot<'a> {
    origin: &'a Origin,
    client: IpAddr,
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        let mut by_client = self.origin.waiting_by_client.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = by_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                by_client.remove(&self.client);
            }
        }
    }
}

/// The origin routes, ready to merge into the node's router:
///
/// - `GET /hls/{channel}/master.m3u8`
/// - `GET /hls/{channel}/{rendition}/index.m3u8` (`_HLS_msn`, `_HLS_part`, `_HLS_skip`)
/// - `GET /hls/{channel}/{rendition}/init-{id}.mp4`, `.../seg{msn}.m4s`, `.../part{msn}.{index}.m4s`
///
/// plus `HEAD` and CORS preflight (`OPTIONS`) on each. Metrics go to the registry's
/// [`super::OriginMetrics`]. There is no fallback route, so merging cannot conflict with another
/// router's.
pub fn routes(registry: LiveRegistry, config: OriginConfig) -> Router {
    let waiting = Semaphore::new(config.max_waiting_requests.min(Semaphore::MAX_PERMITS));
    let origin = Arc::new(Origin { registry, config, waiting, waiting_by_client: Mutex::default() });
    Router::new()
        .route("/hls/{channel}/master.m3u8", get(master).options(preflight))
        .route("/hls/{channel}/{rendition}/{file}", get(rendition_file).options(preflight))
        .layer(axum::middleware::map_response(cors))
        .with_state(origin)
}

/// The metrics kind of a rendition file.
fn kind(file: RenditionFile) -> Kind {
    match file {
        RenditionFile::Playlist => Kind::Playlist,
        RenditionFile::Init(_) => Kind::Init,
        RenditionFile::Segment(_) => Kind::Segment,
        RenditionFile::Part(..) => Kind::Part,
    }
}

async fn master(State(origin): State<Arc<Origin>>, Path(channel): Path<String>) -> Response {
    let metrics = origin.registry.metrics();
    metrics.request(Kind::Master);
    let Some(live) = origin.registry.get(&channel) else {
        return not_found(format!("channel {channel} is not live"));
    };
    let variants: Vec<Variant<'_>> = live
        .renditions
        .iter()
        .filter(|slot| slot.is_listed())
        .map(|slot| {
            let state = slot.lock();
            let r = &state.rendition;
            let (bandwidth, average_bandwidth) = match r.measured_bandwidth() {
                Some((peak, average)) => (peak.max(1), Some(average.max(1))),
                None => (slot.bitrate.unwrap_or_else(|| guessed_bandwidth(r)), None),
            };
            Variant {
                name: &slot.name,
                bandwidth,
                average_bandwidth,
                resolution: r.video_config().map(|v| (v.width, v.height)),
                codecs: r.codecs(),
                frame_rate: r.video_config().and(slot.frame_rate.or_else(|| state.measured_frame_rate())),
            }
        })
        .collect();
    let text = hls::multivariant_playlist(&variants);
    let cache = format!("public, max-age={}", origin.config.multivariant_max_age.as_secs());
    object(&origin, Kind::Master, text.into(), PLAYLIST_TYPE, &cache)
}

/// `BANDWIDTH` before anything is measured or configured: about 3 bits per pixel per second of
/// video (6.2 Mbit/s at 1080p, 0.7 at 360p) plus 128 kbit/s of audio. Players only use it to pick
/// a first variant; the measured rate replaces it after the first segment.
fn guessed_bandwidth(r: &Rendition) -> u64 {
    let video = r.video_config().map_or(0, |v| u64::from(v.width) * u64::from(v.height) * 3);
    let audio = if r.audio_config().is_some() { 128_000 } else { 0 };
    (video + audio).max(1)
}

async fn rendition_file(
    State(origin): State<Arc<Origin>>,
    Path((channel, rendition, file)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let Some(file) = RenditionFile::parse(&file) else {
        return not_found(format!("no {file} in rendition {rendition} of channel {channel}"));
    };
    origin.registry.metrics().request(kind(file));
    let Some(live) = origin.registry.get(&channel) else {
        return not_found(format!("channel {channel} is not live"));
    };
    let Some(slot) = live.rendition(&rendition) else {
        return not_found(format!("channel {channel} has no rendition {rendition}"));
    };
    match file {
        RenditionFile::Playlist => playlist(&origin, client, &live, slot, query.as_deref().unwrap_or("")).await,
        RenditionFile::Init(id) => {
            // Only the headers the window names answer (the current one, and an earlier one while
            // segments of a resumed publish's first part of the window need it): an old name is
            // a 404, so no player or cache ever gets a header under a URL that meant another one.
            let init = slot.lock().rendition.init_named(id);
            match init {
                Some(init) => object(&origin, Kind::Init, init, INIT_TYPE, IMMUTABLE),
                None => not_found(format!("{file} is not the header of {channel}/{rendition} now")),
            }
        }
        RenditionFile::Segment(msn) => {
            let segment = slot.lock().rendition.segment(msn);
            match segment {
                Some(bytes) => object(&origin, Kind::Segment, bytes, MEDIA_TYPE, IMMUTABLE),
                None => not_found(format!("segment {msn} of {channel}/{rendition} is not in the window")),
            }
        }
        RenditionFile::Part(msn, index) => {
            let (found, timeout) = {
                let state = slot.lock();
                (part_step(&state.rendition, msn, index), hls::blocking_timeout(&state.rendition))
            };
            let found = match found {
                Some(found) => found,
                None => match origin.wait(client, slot, timeout, |r| part_step(r, msn, index)).await {
                    Ok(found) => found,
                    Err(unavailable) => return unavailable,
                },
            };
            match found {
                Some(bytes) => object(&origin, Kind::Part, bytes, MEDIA_TYPE, IMMUTABLE),
                None => not_found(format!("part {msn}.{index} of {channel}/{rendition} is not available")),
            }
        }
    }
}

/// A part request: `Some(Some(bytes))` if published, `Some(None)` if it never will be or fell out of
/// the window (404), `None` to wait: it is the part the preload hint names, or the one after it in
/// the same segment. If the segment closes without it, the next check says 404.
fn part_step(r: &Rendition, msn: u64, index: u32) -> Option<Option<Bytes>> {
    if let Some(bytes) = r.part(msn, index) {
        return Some(Some(bytes));
    }
    match r.preload_hint() {
        Some((hint_msn, hint_index)) if msn == hint_msn && index.checked_sub(hint_index).is_some_and(|a| a <= 1) => {
            None
        }
        _ => Some(None),
    }
}

/// A playlist request: `Some(Ok)` to render now, `Some(Err)` for 400, `None` to wait.
fn playlist_step(query: PlaylistParams, r: &Rendition) -> Option<Result<(), BadReload>> {
    match BlockingReload::decide(query, r.latest(), r.part_target()) {
        BlockingReload::Ready => Some(Ok(())),
        BlockingReload::BadRequest(bad) => Some(Err(bad)),
        // An ended stream publishes nothing more: its final playlist (with EXT-X-ENDLIST) is the answer.
        BlockingReload::Wait if r.is_finished() => Some(Ok(())),
        BlockingReload::Wait => None,
    }
}

async fn playlist(
    origin: &Origin,
    client: Option<IpAddr>,
    live: &LiveChannel,
    slot: &RenditionSlot,
    query: &str,
) -> Response {
    let query = match PlaylistParams::parse(query) {
        Ok(query) => query,
        Err(_) => return bad_request(BadReload::Malformed),
    };
    let (step, timeout) = {
        let state = slot.lock();
        (playlist_step(query, &state.rendition), hls::blocking_timeout(&state.rendition))
    };
    let step = match step {
        Some(step) => step,
        None => match origin.wait(client, slot, timeout, |r| playlist_step(query, r)).await {
            Ok(step) => step,
            Err(unavailable) => return unavailable,
        },
    };
    if let Err(bad) = step {
        return bad_request(bad);
    }
    let reports: Vec<RenditionReport<'_>> = live
        .renditions
        .iter()
        .filter(|s| !std::ptr::eq(*s, slot))
        .filter_map(|s| Some(RenditionReport { name: &s.name, latest: s.latest()? }))
        .collect();
    let (text, target) = {
        let state = slot.lock();
        (hls::media_playlist(&state.rendition, query.skip, &reports), state.rendition.target_duration())
    };
    // A plain reload must always see the newest window. A blocking one names the update it asked
    // for, and any later copy still satisfies it: edges may share it among viewers for a target
    // duration, which is what lets them collapse the requests of a whole audience into one.
    let cache = if query.msn.is_some() { format!("public, max-age={target}") } else { "no-cache".to_owned() };
    object(origin, Kind::Playlist, text.into(), PLAYLIST_TYPE, &cache)
}

impl Origin {
    /// Takes one of `client`'s waiting slots, if it has one left.
    fn client_slot(&self, client: IpAddr) -> Option<ClientSlot<'_>> {
        let mut by_client = self.waiting_by_client.lock().unwrap_or_else(PoisonError::into_inner);
        let count = by_client.entry(client).or_insert(0);
        if *count >= self.config.max_waiting_per_client {
            return None;
        }
        *count += 1;
        Some(ClientSlot { origin: self, client })
    }

    /// Re-runs `check` on the rendition after every publish until it answers, for at most
    /// `timeout`. `Err` is the 503 to send (timed out, too many requests waiting, or too many
    /// from this `client`).
    async fn wait<T>(
        &self,
        client: Option<IpAddr>,
        slot: &RenditionSlot,
        timeout: Duration,
        mut check: impl FnMut(&Rendition) -> Option<T>,
    ) -> Result<T, Response> {
        let _client_slot = match client {
            Some(client) => match self.client_slot(client) {
                Some(slot) => Some(slot),
                None => {
                    return Err(unavailable("overloaded", "too many requests from this client are waiting".to_owned()))
                }
            },
            None => None,
        };
        let Ok(_permit) = self.waiting.try_acquire() else {
            return Err(unavailable("overloaded", "too many requests are waiting for parts".to_owned()));
        };
        let metrics = self.registry.metrics();
        metrics.blocking_waits.inc();
        let deadline = Instant::now() + timeout;
        // Subscribe before checking, so a part published in between still wakes us.
        let mut progress = slot.subscribe();
        loop {
            let answer = check(&slot.lock().rendition);
            if let Some(answer) = answer {
                return Ok(answer);
            }
            match tokio::time::timeout_at(deadline, progress.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives in the slot we borrow, so it cannot be gone; give up the same way.
                Ok(Err(_)) | Err(_) => {
                    metrics.blocking_timeouts.inc();
                    return Err(unavailable(
                        "timeout",
                        format!("nothing published on rendition {} within {timeout:?}", slot.name),
                    ));
                }
            }
        }
    }
}

fn object(origin: &Origin, kind: Kind, body: Bytes, content_type: &'static str, cache_control: &str) -> Response {
    origin.registry.metrics().served(kind, body.len());
    let cache_control = HeaderValue::from_str(cache_control).unwrap_or(HeaderValue::from_static("no-cache"));
    let headers =
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type)), (header::CACHE_CONTROL, cache_control)];
    (headers, body).into_response()
}

/// An error answer in the API's shape: `{"error":{"code","message"}}`. Never cached for long:
/// a 404 for a part ahead of the stream becomes a 200 soon.
fn error(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (status, headers, body).into_response()
}

fn not_found(message: String) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", message)
}

fn bad_request(bad: BadReload) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", bad.to_string())
}

fn unavailable(code: &str, message: String) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, code, message);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Players on other origins (the web UI, embeds) fetch without credentials: any origin may read.
async fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
    response
}

async fn preflight(request: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, HEAD, OPTIONS"));
    // Nothing here depends on request headers and no credentials are involved: allow what is asked.
    if let Some(asked) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::h264::{parse_sps, AvcConfig};
    use crate::hls::RenditionConfig;
    use crate::origin::{OriginMetrics, RegistryConfig};
    use crate::test_support::{frame, now_of, video_config_of};

    /// The `avcC` box body inside a CMAF header.
    fn avcc(init: &[u8]) -> AvcConfig {
        let at = init.windows(4).position(|w| w == b"avcC").expect("an avcC box");
        let size = u32::from_be_bytes(init[at - 4..at].try_into().unwrap()) as usize;
        AvcConfig::parse_record(&Bytes::copy_from_slice(&init[at + 4..at - 4 + size])).unwrap()
    }

    fn map_uri(playlist: &str) -> String {
        let line = playlist.lines().find(|l| l.starts_with("#EXT-X-MAP:")).expect("EXT-X-MAP");
        line.split('"').nth(1).unwrap().to_owned()
    }

    /// Forced cuts are counted in `bitriver_origin_forced_segment_cuts_total`.
    #[test]
    fn forced_cuts_are_counted() {
        let registry = LiveRegistry::new(RegistryConfig::default(), OriginMetrics::unregistered());
        let rendition = Rendition::new(RenditionConfig::default(), Some(video_config_of(640, 360)), None).unwrap();
        let live = registry.open("ch", "s", vec![rendition]).unwrap();
        for i in 0..400 {
            let _ = live.push_video(0, frame(i, 0), now_of(i)).unwrap();
        }
        assert_eq!(registry.metrics().forced_segment_cuts.get(), 3, "400 frames without a keyframe: 13.3 s");
    }

    /// One client address cannot take every blocking-playlist slot: past its share it gets 503
    /// at once, while another address still waits.
    #[tokio::test]
    async fn one_client_cannot_take_every_waiting_slot() {
        let registry = LiveRegistry::new(RegistryConfig::default(), OriginMetrics::unregistered());
        let rendition = Rendition::new(RenditionConfig::default(), Some(video_config_of(640, 360)), None).unwrap();
        let live = registry.open("ch", "s", vec![rendition]).unwrap();
        for i in 0..40 {
            let _ = live.push_video(0, frame(i, 30), now_of(i)).unwrap();
        }
        let config = OriginConfig { max_waiting_requests: 100, max_waiting_per_client: 2, ..OriginConfig::default() };
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = routes(registry.clone(), config).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        // Segment 1 is open; segment 2 is not coming soon, so these requests wait.
        let wait_for = |from: [u8; 4]| {
            let client = reqwest::Client::builder().local_address(IpAddr::from(from)).build().unwrap();
            let url = format!("http://127.0.0.1:{port}/hls/ch/source/index.m3u8?_HLS_msn=2");
            tokio::spawn(async move { client.get(url).send().await.unwrap() })
        };
        let held = [wait_for([127, 0, 0, 1]), wait_for([127, 0, 0, 1])];
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(held.iter().all(|h| !h.is_finished()), "both wait");
        let refused = wait_for([127, 0, 0, 1]).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()["retry-after"], "1");
        assert!(refused.text().await.unwrap().contains("from this client"));
        let other = wait_for([127, 0, 0, 2]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!other.is_finished(), "another address still gets a slot");
        // Slots come back when the waits end.
        live.finish();
        for h in held {
            assert_eq!(h.await.unwrap().status(), StatusCode::OK);
        }
        assert_eq!(other.await.unwrap().status(), StatusCode::OK);
        let again = wait_for([127, 0, 0, 1]).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK, "a finished stream answers at once");
    }

    /// A streamer reconnects at another resolution: the new broadcast's header has another URL,
    /// describes the new size, and the old URL is not answered with it.
    #[tokio::test]
    async fn a_reconnect_at_a_new_resolution_gets_a_new_init_url() {
        let registry = LiveRegistry::new(RegistryConfig::default(), OriginMetrics::unregistered());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/hls/ch", listener.local_addr().unwrap());
        let app = routes(registry.clone(), OriginConfig::default());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let get = |path: String| async move { reqwest::get(path).await.unwrap() };

        let mut inits = Vec::new();
        for (session, (width, height), first_msn) in [("s1", (640, 360), 1000), ("s2", (1280, 720), 2000)] {
            let config = RenditionConfig { first_msn, ..RenditionConfig::default() };
            let rendition = Rendition::new(config, Some(video_config_of(width, height)), None).unwrap();
            let live = registry.open("ch", session, vec![rendition]).unwrap();
            for i in 0..40 {
                let _ = live.push_video(0, frame(i, 30), now_of(i)).unwrap();
            }
            let playlist = get(format!("{base}/source/index.m3u8")).await.text().await.unwrap();
            let uri = map_uri(&playlist);
            let response = get(format!("{base}/source/{uri}")).await;
            assert_eq!(response.status(), StatusCode::OK, "{uri}");
            assert_eq!(response.headers()["cache-control"], IMMUTABLE);
            let header = avcc(&response.bytes().await.unwrap());
            let sps = parse_sps(&header.sps[0]).unwrap();
            assert_eq!((sps.width, sps.height), (u32::from(width), u32::from(height)), "{uri} describes {session}");
            inits.push(uri);
            live.finish();
        }
        assert_ne!(inits[0], inits[1]);
        let old = get(format!("{base}/source/{}", inits[0])).await;
        assert_eq!(old.status(), StatusCode::NOT_FOUND, "the first broadcast's header URL must not serve the second's");

        // The same configuration in a new broadcast still gets a new URL.
        let same = |first_msn| {
            let config = RenditionConfig { first_msn, ..RenditionConfig::default() };
            Rendition::new(config, Some(video_config_of(640, 360)), None).unwrap().init_id()
        };
        assert_ne!(same(1000), same(3000));
        assert_eq!(same(1000), same(1000));
    }
}
