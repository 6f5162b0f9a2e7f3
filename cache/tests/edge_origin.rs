//! The edge against a real HTTP origin on loopback: collapsing, streaming fills, eviction, faults.
//!
//! The origin here is a small axum server that lays objects out as the real origin does and can
//! hold part requests (as for a part not yet published), be stopped and be restarted on the
//! same port. End-to-end tests against the real node live in `node/tests/edge*.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cache::{Edge, EdgeConfig, Freshness, Origin, OriginResolver};
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What the test origin serves and counts.
#[derive(Default)]
struct OriginState {
    /// Requests per path (with query).
    requests: Mutex<HashMap<String, u64>>,
    /// Hold part requests until released.
    hold_parts: AtomicBool,
    released: Notify,
    /// Body size of segments and parts.
    object_size: Mutex<usize>,
}

impl OriginState {
    fn count(&self, path: &str) -> u64 {
        self.requests.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

async fn object(
    State(state): State<Arc<OriginState>>,
    Path((channel, rendition, file)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let mut path = format!("/hls/{channel}/{rendition}/{file}");
    if let Some(q) = &query {
        path = format!("{path}?{q}");
    }
    *state.requests.lock().unwrap().entry(path).or_default() += 1;
    if file == "index.m3u8" {
        let blocking = query.as_deref().is_some_and(|q| q.contains("_HLS_msn"));
        if blocking {
            // A blocking reload: answered once the part it names exists.
            if state.hold_parts.load(Ordering::SeqCst) {
                state.released.notified().await;
            }
        }
        let cache = if blocking { "public, max-age=2" } else { "no-cache" };
        let body = format!("#EXTM3U\n#EXT-X-VERSION:9\n# {}\n", query.unwrap_or_default());
        return ([(header::CACHE_CONTROL, cache), (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], body).into_response();
    }
    if file.starts_with("part404") {
        return (StatusCode::NOT_FOUND, "{\"error\":{\"code\":\"not_found\",\"message\":\"no\"}}").into_response();
    }
    if file.starts_with("part") && state.hold_parts.load(Ordering::SeqCst) {
        state.released.notified().await;
    }
    let body = object_body(&file, *state.object_size.lock().unwrap());
    (
        [(header::CACHE_CONTROL, "public, max-age=31536000, immutable"), (header::CONTENT_TYPE, "video/iso.segment")],
        body,
    )
        .into_response()
}

/// The body the test origin serves for `file`: different per file and per byte position, so
/// that a range cut at the wrong offset shows.
fn object_body(file: &str, size: usize) -> Vec<u8> {
    let fill = file.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    (0..size).map(|i| fill.wrapping_add((i % 251) as u8)).collect()
}

/// A running test origin; dropping the handle's task stops it.
struct TestOrigin {
    state: Arc<OriginState>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TestOrigin {
    async fn start(state: Arc<OriginState>, addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/hls/{channel}/{rendition}/{file}", get(object)).with_state(state.clone());
        // Our own accept loop, so that stopping the origin also cuts its open connections (as a
        // crashed process would), which `axum::serve` would leave running.
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), service).await;
                });
            }
        });
        TestOrigin { state, addr, task }
    }

    async fn new() -> Self {
        let state = Arc::new(OriginState::default());
        *state.object_size.lock().unwrap() = 1000;
        Self::start(state, "127.0.0.1:0".parse().unwrap()).await
    }

    fn stop(&self) {
        self.task.abort();
    }
}

struct Fixed(Mutex<Vec<Origin>>);

impl OriginResolver for Fixed {
    fn origins(&self, channel: &str) -> Vec<Origin> {
        if channel == "offline" {
            return Vec::new();
        }
        self.0.lock().unwrap().clone()
    }
}

fn origin(addr: SocketAddr) -> Origin {
    Origin { addr, tls: false, verify_tls: false, shield: false }
}

struct TestEdge {
    url: String,
    edge: Arc<Edge>,
    registry: Registry,
    _stop: tokio_util::sync::DropGuard,
}

async fn start_edge(origins: Vec<SocketAddr>, config: EdgeConfig) -> TestEdge {
    let registry = Registry::new();
    let resolver = Arc::new(Fixed(Mutex::new(origins.into_iter().map(origin).collect())));
    let edge = Arc::new(Edge::new(config, resolver, &registry).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let serving = edge.clone();
    let shutdown = stop.clone();
    tokio::spawn(async move { serving.serve(listener, shutdown, Duration::from_secs(1)).await });
    TestEdge { url, edge, registry, _stop: stop.drop_guard() }
}

fn metric(registry: &Registry, name: &str, label: Option<&str>) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| label.is_none_or(|l| m.get_label().iter().any(|p| p.value() == l)))
        .map(|m| m.get_counter().get_value() + m.get_gauge().get_value())
        .sum()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap()
}

/// Wait until `f` holds; the test's own timeout (nextest) bounds it.
async fn until(mut f: impl FnMut() -> bool) {
    while !f() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_viewers_of_an_unpublished_part_make_one_origin_request() {
    let origin = TestOrigin::new().await;
    origin.state.hold_parts.store(true, Ordering::SeqCst);
    let edge = start_edge(vec![origin.addr], EdgeConfig::default()).await;
    let http = client();
    const VIEWERS: usize = 300;
    for (path, origin_path) in [
        ("/hls/ch/v/part7.2.m4s?viewer=1", "/hls/ch/v/part7.2.m4s"),
        ("/hls/ch/v/index.m3u8?_HLS_part=3&_HLS_msn=7&player=x", "/hls/ch/v/index.m3u8?_HLS_msn=7&_HLS_part=3"),
    ] {
        let mut viewers = Vec::new();
        for i in 0..VIEWERS {
            let url = format!("{}{path}&n={i}", edge.url);
            let http = http.clone();
            viewers.push(tokio::spawn(async move {
                let resp = http.get(url).send().await.unwrap();
                (resp.status(), resp.bytes().await.unwrap())
            }));
        }
        until(|| origin.state.count(origin_path) >= 1).await;
        // Let the rest of the audience pile up behind the lock before the part is published.
        until(|| metric(&edge.registry, "bitriver_edge_requests_total", None) >= VIEWERS as f64).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        origin.state.released.notify_waiters();
        let mut bodies = Vec::new();
        for viewer in viewers {
            let (status, body) = viewer.await.unwrap();
            assert_eq!(status, 200);
            bodies.push(body);
        }
        assert!(bodies.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(origin.state.count(origin_path), 1, "{path}: one origin request for the whole audience");
        let requests = metric(&edge.registry, "bitriver_edge_requests_total", None);
        assert!(requests >= VIEWERS as f64);
    }
    assert_eq!(metric(&edge.registry, "bitriver_edge_origin_requests_total", Some("part")), 1.0);
    assert_eq!(metric(&edge.registry, "bitriver_edge_origin_requests_total", Some("playlist")), 1.0);
    assert!(metric(&edge.registry, "bitriver_edge_collapsed_waiters_total", None) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_cache_keys_and_errors() {
    let origin = TestOrigin::new().await;
    let edge = start_edge(vec![origin.addr], EdgeConfig::default()).await;
    let http = client();
    let get = |path: &str| http.get(format!("{}{path}", edge.url)).send();
    let first = get("/hls/ch/v/seg3.m4s?a=1").await.unwrap();
    assert_eq!(first.headers()["x-cache"], "MISS");
    let first = first.bytes().await.unwrap();
    // The viewer may have the body a moment before the edge has finished storing it (its last
    // phase records the stored bytes): the hit below must find a complete object.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while metric(&edge.registry, "bitriver_edge_cache_bytes", None) < 1000.0 {
        assert!(std::time::Instant::now() < deadline, "the segment was never stored");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = get("/hls/ch/v/seg3.m4s?b=2").await.unwrap();
    assert_eq!(second.headers()["x-cache"], "HIT");
    assert_eq!(second.bytes().await.unwrap(), first);
    assert_eq!(origin.state.count("/hls/ch/v/seg3.m4s"), 1);
    assert_eq!(metric(&edge.registry, "bitriver_edge_cache_hits_total", None), 1.0);
    // A small body stays in memory: hits go straight to the socket from there. (The first hit
    // may still find the object finishing its fill, which pingora's hit path serves: ask again.)
    let mut hits = 1.0;
    while metric(&edge.registry, "bitriver_edge_direct_sends_total", Some("memory")) < 1.0 && hits < 20.0 {
        let again = get("/hls/ch/v/seg3.m4s").await.unwrap();
        assert_eq!(again.headers()["x-cache"], "HIT");
        assert_eq!(again.bytes().await.unwrap(), first);
        hits += 1.0;
    }
    assert_eq!(metric(&edge.registry, "bitriver_edge_direct_sends_total", Some("memory")), 1.0);
    assert_eq!(metric(&edge.registry, "bitriver_edge_cache_hits_total", None), hits);
    assert!(metric(&edge.registry, "bitriver_edge_cache_bytes", None) >= 1000.0);

    // A 404 (a hinted part not there yet) is passed on and never cached.
    for _ in 0..2 {
        assert_eq!(get("/hls/ch/v/part404.0.m4s").await.unwrap().status(), 404);
    }
    assert_eq!(origin.state.count("/hls/ch/v/part404.0.m4s"), 2);

    // Not an HLS object, or a channel that is not live: JSON errors.
    let resp = get("/api/channels").await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let resp = get("/hls/offline/v/seg1.m4s").await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_live");

    // Plain playlists are shared only briefly: a later reload goes back to the origin.
    get("/hls/ch/v/index.m3u8").await.unwrap().bytes().await.unwrap();
    tokio::time::sleep(Freshness::default().playlist * 3).await;
    get("/hls/ch/v/index.m3u8").await.unwrap().bytes().await.unwrap();
    assert_eq!(origin.state.count("/hls/ch/v/index.m3u8"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_hits_are_sent_whole_on_a_reused_connection_and_by_pingora_when_conditional() {
    let origin = TestOrigin::new().await;
    *origin.state.object_size.lock().unwrap() = 300_000;
    let bodies = tempfile::tempdir().unwrap();
    let config = EdgeConfig { body_dir: Some(bodies.path().to_path_buf()), ..EdgeConfig::default() };
    let edge = start_edge(vec![origin.addr], config).await;
    let url = format!("{}/hls/ch/v/part7.2.m4s", edge.url);
    // One client with a connection pool: the hits below share one keep-alive connection.
    let http = reqwest::Client::new();
    let first = http.get(&url).send().await.unwrap();
    assert_eq!(first.headers()["x-cache"], "MISS");
    let body = first.bytes().await.unwrap();
    assert_eq!(body.len(), 300_000);
    // The complete body went into a file of its own, which fresh hits are sent from: an unnamed
    // one in the body directory.
    assert_eq!(edge.edge.storage().file_count(), 1);
    let in_dir = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.unwrap().path()).ok())
        .filter(|target| target.starts_with(bodies.path()))
        .count();
    assert_eq!(in_dir, 1, "one open body file in the body directory");
    assert_eq!(std::fs::read_dir(bodies.path()).unwrap().count(), 0, "and no name there");
    for _ in 0..3 {
        let hit = http.get(&url).send().await.unwrap();
        assert_eq!(hit.status(), 200);
        assert_eq!(hit.headers()["x-cache"], "HIT");
        assert_eq!(hit.headers()[header::CONTENT_LENGTH], "300000");
        assert_eq!(hit.headers()[header::CONTENT_TYPE], "video/iso.segment");
        assert!(hit.headers().contains_key(header::AGE));
        assert_eq!(hit.bytes().await.unwrap(), body);
    }
    // A conditional request goes through pingora's hit path, which reads the memfd back.
    let conditional = http.get(&url).header(header::IF_NONE_MATCH, "\"other\"").send().await.unwrap();
    assert_eq!(conditional.headers()["x-cache"], "HIT");
    assert_eq!(conditional.bytes().await.unwrap(), body);
    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["x-cache"], "HIT");
    assert_eq!(origin.state.count("/hls/ch/v/part7.2.m4s"), 1);
    assert_eq!(metric(&edge.registry, "bitriver_edge_cache_hits_total", None), 5.0);
    assert_eq!(metric(&edge.registry, "bitriver_edge_requests_total", None), 6.0);
    // The three plain hits took the sendfile fast path; the conditional GET and the HEAD did not.
    assert_eq!(metric(&edge.registry, "bitriver_edge_direct_sends_total", Some("sendfile")), 3.0);
    assert_eq!(metric(&edge.registry, "bitriver_edge_direct_sends_total", Some("memory")), 0.0);
    // Plain GETs: the edge read each of them itself, pingora never saw them.
    assert_eq!(metric(&edge.registry, "bitriver_edge_early_hits_total", None), 3.0);
    assert_eq!(metric(&edge.registry, "bitriver_edge_body_bytes_total", None), 5.0 * 300_000.0);
}

/// Send `requests` on `tcp` in one write and read one HTTP/1.1 answer (head, and a body of its
/// `content-length`) per request, in order: (head, body) each.
async fn exchange(tcp: &mut tokio::net::TcpStream, requests: &[u8], answers: usize) -> Vec<(String, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(requests).await.unwrap();
    let mut pending = Vec::new();
    let mut out = Vec::new();
    while out.len() < answers {
        let parsed = pending.windows(4).position(|w| w == b"\r\n\r\n").and_then(|end| {
            let head = String::from_utf8(pending[..end + 4].to_vec()).unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.parse().unwrap()))
                .unwrap_or(0);
            (pending.len() >= end + 4 + length).then(|| (head, end + 4, length))
        });
        if let Some((head, start, length)) = parsed {
            out.push((head, pending[start..start + length].to_vec()));
            pending.drain(..start + length);
            continue;
        }
        let mut buf = vec![0u8; 64 * 1024];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "the edge closed the connection after {} answers", out.len());
        pending.extend_from_slice(&buf[..n]);
    }
    assert!(pending.is_empty(), "bytes after the last answer");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_spread_over_the_serving_threads() {
    let origin = TestOrigin::new().await;
    let edge = start_edge(vec![origin.addr], EdgeConfig { threads: 2, ..EdgeConfig::default() }).await;
    let path = "/hls/ch/v/seg5.m4s";
    client().get(format!("{}{path}", edge.url)).send().await.unwrap().bytes().await.unwrap();
    let by_thread = |thread: &str| metric(&edge.registry, "bitriver_edge_thread_connections", Some(thread));
    until(|| by_thread("0") + by_thread("1") == 0.0).await;
    let addr = edge.url.trim_start_matches("http://").to_owned();
    let request = format!("GET {path} HTTP/1.1\r\nHost: edge\r\n\r\n");
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let answer = exchange(&mut tcp, request.as_bytes(), 1).await;
        assert_eq!(answer[0].1, object_body("seg5.m4s", 1000));
        open.push(tcp);
    }
    // Each new connection went to the thread with fewer open ones.
    assert_eq!((by_thread("0"), by_thread("1")), (2.0, 2.0));
    assert_eq!(metric(&edge.registry, "bitriver_edge_connections", None), 4.0);
    drop(open);
    until(|| by_thread("0") + by_thread("1") == 0.0).await;
    assert_eq!(metric(&edge.registry, "bitriver_edge_connections", None), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_split_and_closing_requests_are_answered_in_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = TestOrigin::new().await;
    let edge = start_edge(vec![origin.addr], EdgeConfig::default()).await;
    let (part, segment) = ("/hls/ch/v/part4.1.m4s", "/hls/ch/v/seg4.m4s");
    // A segment past the size from which a hit's head is corked in front of its body, a part
    // under it: answers sent both ways follow one another on the connection.
    for (path, size) in [(part, 100_000), (segment, 300_000)] {
        *origin.state.object_size.lock().unwrap() = size;
        client().get(format!("{}{path}", edge.url)).send().await.unwrap().bytes().await.unwrap();
    }
    until(|| edge.edge.storage().file_count() == 2).await;
    let (part_body, segment_body) = (object_body("part4.1.m4s", 100_000), object_body("seg4.m4s", 300_000));
    let addr = edge.url.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: edge\r\nUser-Agent: test\r\n\r\n");

    // Three requests in one write: the edge takes each off the socket whole, answers in order.
    let requests = format!("{}{}{}", get(part), get(segment), get(part));
    let answers = exchange(&mut tcp, requests.as_bytes(), 3).await;
    for ((head, body), expected) in answers.iter().zip([&part_body, &segment_body, &part_body]) {
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains("x-cache: hit\r\n"), "{head}");
        assert_eq!(body, expected);
    }
    assert_eq!(metric(&edge.registry, "bitriver_edge_early_hits_total", None), 3.0);
    // A conditional request on the same connection is pingora's, and the connection goes on.
    let conditional = format!("GET {segment} HTTP/1.1\r\nHost: edge\r\nIf-None-Match: \"x\"\r\n\r\n");
    let answers = exchange(&mut tcp, conditional.as_bytes(), 1).await;
    assert_eq!(answers[0].1, segment_body);
    assert_eq!(metric(&edge.registry, "bitriver_edge_early_hits_total", None), 3.0);
    assert_eq!(metric(&edge.registry, "bitriver_edge_cache_hits_total", None), 4.0);

    // A head that arrives in two pieces: answered whole, by whichever path sees it complete.
    let request = get(part);
    let (first, rest) = request.split_at(20);
    tcp.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answers = exchange(&mut tcp, rest.as_bytes(), 1).await;
    assert_eq!(answers[0].1, part_body);
    assert_eq!(metric(&edge.registry, "bitriver_edge_direct_sends_total", Some("sendfile")), 4.0);

    // `Connection: close` is pingora's: it answers and closes.
    let closing = format!("GET {part} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n");
    let answers = exchange(&mut tcp, closing.as_bytes(), 1).await;
    assert_eq!(answers[0].1, part_body);
    assert_eq!(tcp.read(&mut [0u8; 16]).await.unwrap(), 0, "closed after the answer");
    assert_eq!(metric(&edge.registry, "bitriver_edge_requests_total", None), 8.0);
    assert_eq!(origin.state.count(part), 1);
    // Viewers of the part: this connection and the client's that fetched it first, one address.
    assert_eq!(edge.edge.viewers().counts(std::time::Instant::now()), [("ch".to_owned(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_budget_evicts_old_objects_but_never_a_part_being_waited_for() {
    let origin = TestOrigin::new().await;
    *origin.state.object_size.lock().unwrap() = 100_000;
    let config = EdgeConfig { cache_bytes: 400_000, ..EdgeConfig::default() };
    let edge = start_edge(vec![origin.addr], config).await;
    let http = client();

    // Viewers wait for a part the origin has not published yet.
    origin.state.hold_parts.store(true, Ordering::SeqCst);
    let mut waiting = Vec::new();
    for _ in 0..20 {
        let url = format!("{}/hls/ch/v/part20.0.m4s", edge.url);
        let http = http.clone();
        waiting.push(tokio::spawn(async move { http.get(url).send().await.unwrap().bytes().await.unwrap() }));
    }
    until(|| origin.state.count("/hls/ch/v/part20.0.m4s") >= 1).await;

    // Meanwhile far more segments than the budget holds pass through.
    for msn in 0..12 {
        let body = http.get(format!("{}/hls/ch/v/seg{msn}.m4s", edge.url)).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(body.len(), 100_000);
    }
    edge.edge.storage().run_pending_tasks();
    assert!(edge.edge.storage().weighted_bytes() <= 400_000, "{}", edge.edge.storage().weighted_bytes());
    assert!(edge.edge.storage().object_count() < 12);

    origin.state.released.notify_waiters();
    for viewer in waiting {
        assert_eq!(viewer.await.unwrap().len(), 100_000);
    }
    assert_eq!(origin.state.count("/hls/ch/v/part20.0.m4s"), 1);

    // The oldest segment was evicted: asking again goes to the origin.
    http.get(format!("{}/hls/ch/v/seg0.m4s", edge.url)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(origin.state.count("/hls/ch/v/seg0.m4s"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_down_stale_parts_served_new_requests_fail_cleanly_then_recovery() {
    let origin = TestOrigin::new().await;
    let freshness = Freshness { immutable: Duration::from_millis(300), ..Freshness::default() };
    let edge = start_edge(vec![origin.addr], EdgeConfig { freshness, ..EdgeConfig::default() }).await;
    let http = client();
    let get = |path: &str| http.get(format!("{}{path}", edge.url)).send();
    let part = get("/hls/ch/v/part1.0.m4s").await.unwrap().bytes().await.unwrap();
    let segment = get("/hls/ch/v/seg1.m4s").await.unwrap().bytes().await.unwrap();

    origin.stop();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Expired, origin gone: the copies held are served stale.
    for (path, body) in [("/hls/ch/v/part1.0.m4s", &part), ("/hls/ch/v/seg1.m4s", &segment)] {
        let resp = get(path).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["x-cache"], "STALE");
        assert_eq!(&resp.bytes().await.unwrap(), body);
    }
    assert!(metric(&edge.registry, "bitriver_edge_stale_served_total", None) >= 2.0);
    // Something never fetched fails cleanly, without telling where the origin is.
    let resp = get("/hls/ch/v/seg2.m4s").await.unwrap();
    assert_eq!(resp.status(), 502);
    let body = resp.text().await.unwrap();
    assert_no_address(&body, origin.addr);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "origin_unavailable");
    let resp = get("/hls/ch/v/index.m3u8").await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_no_address(&resp.text().await.unwrap(), origin.addr);

    // The origin comes back on the same address: the edge serves again.
    let _back = TestOrigin::start(origin.state.clone(), origin.addr).await;
    let resp = get("/hls/ch/v/seg2.m4s").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().len(), 1000);
    assert_eq!(get("/hls/ch/v/index.m3u8").await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_to_the_next_origin_of_the_channel() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let origin = TestOrigin::new().await;
    let edge = start_edge(vec![dead, origin.addr], EdgeConfig::default()).await;
    let resp = client().get(format!("{}/hls/ch/v/seg5.m4s", edge.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(origin.state.count("/hls/ch/v/seg5.m4s"), 1);
    assert!(metric(&edge.registry, "bitriver_edge_origin_errors_total", None) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_slower_than_the_timeout_gets_a_504() {
    let origin = TestOrigin::new().await;
    origin.state.hold_parts.store(true, Ordering::SeqCst);
    let timeouts = cache::UpstreamTimeouts { connect: Duration::from_secs(1), read: Duration::from_millis(300) };
    let edge = start_edge(vec![origin.addr], EdgeConfig { timeouts, ..EdgeConfig::default() }).await;
    let resp = client().get(format!("{}/hls/ch/v/part9.0.m4s", edge.url)).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let body = resp.text().await.unwrap();
    assert_no_address(&body, origin.addr);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "origin_timeout");
}

/// An error body the edge sends a viewer must not name the origin (its address or port).
fn assert_no_address(body: &str, origin: SocketAddr) {
    assert!(!body.contains(&origin.ip().to_string()), "the body names the origin's address: {body}");
    assert!(!body.contains(&origin.port().to_string()), "the body names the origin's port: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_when_given_a_certificate() {
    if !testkit::require_tool("curl") {
        return;
    }
    let test_origin = TestOrigin::new().await;
    *test_origin.state.object_size.lock().unwrap() = 300_000;
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, key.cert.pem()).unwrap();
    std::fs::write(&key_path, key.signing_key.serialize_pem()).unwrap();
    let resolver = Arc::new(Fixed(Mutex::new(vec![origin(test_origin.addr)])));
    let edge = Edge::new(EdgeConfig::default(), resolver, &Registry::new()).unwrap();
    let edge = Arc::new(edge.with_tls(&cert_path, &key_path).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let serving = edge.clone();
    tokio::spawn(async move { serving.serve(listener, stop, Duration::from_secs(1)).await });
    // The miss, then hits: over TLS a hit is a slice of the body's mapped pages, not a copy,
    // and the same bytes.
    let fetch_with = |name: &str, version: &'static str| {
        let file = dir.path().join(name);
        let url = format!("https://127.0.0.1:{port}/hls/ch/v/seg1.m4s");
        async move {
            let out = tokio::process::Command::new(testkit::tools::path("curl"))
                .args(["-sk", version, "-D", "-", "-o"])
                .arg(&file)
                .arg(url)
                .output()
                .await
                .unwrap();
            (String::from_utf8_lossy(&out.stdout).to_lowercase(), std::fs::read(&file).unwrap())
        }
    };
    let fetch = |name: &str| fetch_with(name, "--http1.1");
    let (head, missed) = fetch("miss").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(missed.len(), 300_000);
    assert_eq!(edge.storage().page_reads(), 0);
    // The fill may still be moving into storage when the client has the last byte.
    let stored_by = std::time::Instant::now() + Duration::from_secs(10);
    while edge.storage().file_count() == 0 && std::time::Instant::now() < stored_by {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for n in 1..=2u64 {
        let (head, hit) = fetch("hit").await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("x-cache: hit"), "{head}");
        assert!(head.contains("content-length: 300000"), "{head}");
        assert!(head.contains("content-type: video/iso.segment"), "{head}");
        assert!(hit == missed, "a TLS hit differs from what the miss served");
        assert_eq!(edge.storage().page_reads(), n, "the hit did not read the mapped pages");
    }
    // HTTP/2 when the client offers it (ALPN h2): the same bytes and headers, from the pages.
    let (head, hit) = fetch_with("h2", "--http2").await;
    assert!(head.starts_with("http/2 200"), "{head}");
    assert!(head.contains("x-cache: hit"), "{head}");
    assert!(head.contains("content-length: 300000"), "{head}");
    assert!(head.contains("content-type: video/iso.segment"), "{head}");
    assert!(hit == missed, "an HTTP/2 hit differs from what the miss served");
    assert_eq!(edge.storage().page_reads(), 3, "the HTTP/2 hit did not read the mapped pages");
    // Several requests on one HTTP/2 connection, a range among them.
    let out = tokio::process::Command::new(testkit::tools::path("curl"))
        .args([
            "-sk",
            "--http2",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-r",
            "0-99",
            "-w",
            "%{http_version} %{http_code} %{size_download} %{num_connects}\\n",
        ])
        .arg(format!("https://127.0.0.1:{port}/hls/ch/v/seg1.m4s"))
        .arg(format!("https://127.0.0.1:{port}/hls/ch/v/seg1.m4s"))
        .output()
        .await
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(lines, "2 206 100 1\n2 206 100 0\n", "one connection, both ranges answered");
    // A missing certificate file is a clear error, not a panic.
    let resolver = Arc::new(Fixed(Mutex::new(Vec::new())));
    let edge = Edge::new(EdgeConfig::default(), resolver, &Registry::new()).unwrap();
    assert!(edge.with_tls(&dir.path().join("nope.pem"), &key_path).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_unique_viewers_of_served_playlists_and_parts() {
    let origin = TestOrigin::new().await;
    let edge = start_edge(vec![origin.addr], EdgeConfig::default()).await;
    // One client rotating its user agent on every request, then a second one from another
    // loopback address.
    for (client_addr, agents) in [([127, 0, 0, 1], ["a", "b", "c"]), ([127, 0, 0, 2], ["a", "a", "a"])] {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .local_address(std::net::IpAddr::from(client_addr))
            .build()
            .unwrap();
        for round in 0..5 {
            for agent in agents {
                for path in [format!("/hls/ch/v/index.m3u8?r={round}"), format!("/hls/ch/v/part{round}.0.m4s")] {
                    let resp = http
                        .get(format!("{}{path}", edge.url))
                        .header("user-agent", format!("{agent}{round}"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                }
            }
        }
        let viewers = if client_addr == [127, 0, 0, 1] { 1 } else { 2 };
        assert_eq!(edge.edge.viewers().counts(std::time::Instant::now()), [("ch".to_owned(), viewers)]);
    }
    // Failed requests are nobody's viewing.
    client().get(format!("{}/hls/offline/v/index.m3u8", edge.url)).send().await.unwrap();
    assert_eq!(edge.edge.viewers().counts(std::time::Instant::now()), [("ch".to_owned(), 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_requests_get_206_on_misses_and_hits_on_both_hit_paths() {
    let origin = TestOrigin::new().await;
    // direct_hits on: fresh hits on this keep-alive connection go out from `direct`; off: from
    // pingora's hit path. Large bodies live in memfds, small ones in memory.
    for (direct_hits, file, size) in [
        (true, "part3.0.m4s", 300_000),
        (true, "seg3.m4s", 1000),
        (false, "part3.0.m4s", 300_000),
        (false, "seg3.m4s", 1000),
    ] {
        let what = format!("direct_hits {direct_hits}, {file}");
        *origin.state.object_size.lock().unwrap() = size;
        let edge = start_edge(vec![origin.addr], EdgeConfig { direct_hits, ..EdgeConfig::default() }).await;
        let url = format!("{}/hls/ch{direct_hits}/v/{file}", edge.url);
        let full = object_body(file, size);
        // The miss on a connection of its own: the edge may close it once the fill behind the
        // range is done, and a client reusing it then would race that close.
        let miss = reqwest::Client::new().get(&url).header(header::RANGE, "bytes=100-199").send().await.unwrap();
        assert_eq!(miss.status(), StatusCode::PARTIAL_CONTENT, "{what}");
        assert_eq!(miss.headers()["x-cache"], "MISS", "{what}");
        assert_eq!(miss.headers()[header::CONTENT_RANGE], format!("bytes 100-199/{size}"), "{what}");
        assert_eq!(miss.bytes().await.unwrap(), full[100..200], "{what}");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while metric(&edge.registry, "bitriver_edge_cache_bytes", None) < size as f64 {
            assert!(std::time::Instant::now() < deadline, "{what}: never stored");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let http = reqwest::Client::new();
        let get = |range: &str| http.get(&url).header(header::RANGE, range).send();

        let tail = format!("bytes={}-", size - 5);
        for (range, bytes) in
            [("bytes=100-199", 100..200), ("bytes=-10", size - 10..size), (tail.as_str(), size - 5..size)]
        {
            let hit = get(range).await.unwrap();
            assert_eq!(hit.status(), StatusCode::PARTIAL_CONTENT, "{what}: {range}");
            assert_eq!(hit.headers()["x-cache"], "HIT", "{what}: {range}");
            let content_range = format!("bytes {}-{}/{size}", bytes.start, bytes.end - 1);
            assert_eq!(hit.headers()[header::CONTENT_RANGE], content_range, "{what}: {range}");
            assert_eq!(hit.headers()[header::CONTENT_LENGTH], bytes.len().to_string(), "{what}: {range}");
            assert_eq!(hit.headers()[header::CONTENT_TYPE], "video/iso.segment", "{what}: {range}");
            assert_eq!(hit.bytes().await.unwrap(), full[bytes], "{what}: {range}");
        }
        // Past the end: 416 with the size, no body; the connection serves on.
        let unsatisfiable = get(&format!("bytes={size}-")).await.unwrap();
        assert_eq!(unsatisfiable.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{what}");
        assert_eq!(unsatisfiable.headers()[header::CONTENT_RANGE], format!("bytes */{size}"), "{what}");
        assert!(unsatisfiable.bytes().await.unwrap().is_empty(), "{what}");
        let whole = http.get(&url).send().await.unwrap();
        assert_eq!(whole.status(), StatusCode::OK, "{what}");
        assert_eq!(whole.headers()["x-cache"], "HIT", "{what}");
        assert_eq!(whole.headers()[header::ACCEPT_RANGES], "bytes", "{what}");
        assert_eq!(whole.bytes().await.unwrap(), full, "{what}");
        assert_eq!(origin.state.count(&format!("/hls/ch{direct_hits}/v/{file}")), 1, "{what}");
    }

    // Viewers waiting on the cache lock for a part not published yet read it from the fill.
    *origin.state.object_size.lock().unwrap() = 100_000;
    origin.state.hold_parts.store(true, Ordering::SeqCst);
    let edge = start_edge(vec![origin.addr], EdgeConfig::default()).await;
    let http = client();
    let mut viewers = Vec::new();
    for i in 0..10usize {
        let (url, http) = (format!("{}/hls/ch/v/part9.0.m4s", edge.url), http.clone());
        let bytes = i * 9000..i * 9000 + 5000;
        viewers.push(tokio::spawn(async move {
            let range = format!("bytes={}-{}", bytes.start, bytes.end - 1);
            let resp = http.get(url).header(header::RANGE, range).send().await.unwrap();
            let content_range = resp.headers().get(header::CONTENT_RANGE).cloned();
            (resp.status(), content_range, resp.bytes().await.unwrap(), bytes)
        }));
    }
    until(|| origin.state.count("/hls/ch/v/part9.0.m4s") >= 1).await;
    until(|| metric(&edge.registry, "bitriver_edge_requests_total", None) >= 10.0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    origin.state.released.notify_waiters();
    let full = object_body("part9.0.m4s", 100_000);
    for viewer in viewers {
        let (status, content_range, body, bytes) = viewer.await.unwrap();
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        let expected = format!("bytes {}-{}/100000", bytes.start, bytes.end - 1);
        assert_eq!(content_range.unwrap(), expected.as_str());
        assert_eq!(body, full[bytes]);
    }
    assert_eq!(origin.state.count("/hls/ch/v/part9.0.m4s"), 1);
}
