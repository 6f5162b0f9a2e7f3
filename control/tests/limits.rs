//! The cross-cutting layers over real HTTP: rate limits, the body cap, audit events, metrics.

mod common;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use common::TestApi;
use control::limits::Limits;
use control::{ApiState, Mode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

async fn with_limits(limits: Limits) -> TestApi {
    TestApi::start_with(Mode::Development, move |mut s| {
        s.limits = Arc::new(limits);
        s
    })
    .await
}

/// POST returning the Retry-After header too.
async fn post_raw(api: &TestApi, path: &str, body: Value) -> (u16, Option<u64>, Value) {
    let resp = api.client.post(api.url(path)).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_attempts_are_limited_per_client_failed_or_not() {
    let api = with_limits(Limits { login_limit: 3, login_window: Duration::from_secs(60), ..Limits::default() }).await;
    let (status, _) = api
        .post(
            "/api/auth/signup",
            None,
            json!({"displayName": "Hal", "email": "hal@example.com", "password": "password-1"}),
        )
        .await;
    assert_eq!(status, 201);
    let good = json!({"email": "hal@example.com", "password": "password-1"});
    let bad = json!({"email": "hal@example.com", "password": "password-2"});

    assert_eq!(post_raw(&api, "/api/auth/login", bad.clone()).await.0, 401);
    assert_eq!(post_raw(&api, "/api/auth/login", good.clone()).await.0, 200);
    assert_eq!(post_raw(&api, "/api/auth/login", bad).await.0, 401);
    // The fourth attempt in the window is refused, even with the right password.
    let (status, retry, body) = post_raw(&api, "/api/auth/login", good).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let retry = retry.expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    // Other endpoints are not counted.
    let (status, _) = api
        .post(
            "/api/auth/signup",
            None,
            json!({"displayName": "Ivy", "email": "ivy@example.com", "password": "password-1"}),
        )
        .await;
    assert_eq!(status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_window_expires() {
    let api = with_limits(Limits { login_limit: 1, login_window: Duration::from_secs(1), ..Limits::default() }).await;
    let bad = json!({"email": "nobody@example.com", "password": "password-2"});
    assert_eq!(post_raw(&api, "/api/auth/login", bad.clone()).await.0, 401);
    let (status, retry, _) = post_raw(&api, "/api/auth/login", bad.clone()).await;
    assert_eq!((status, retry), (429, Some(1)));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(post_raw(&api, "/api/auth/login", bad).await.0, 401);
}

/// The defaults, as a node runs them: 100 signups within a minute from one address get 429s with
/// Retry-After once the address's share is spent, and logins go on working meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signup_flood_from_one_address_gets_429s_and_logins_go_on() {
    let api = TestApi::start().await;
    let defaults = Limits::default();
    assert!(defaults.signup_limit > 0 && defaults.signup_limit < 100, "{defaults:?}");
    // An account to sign in with, made by the development admin (not a signup).
    let steady = json!({"displayName": "Steady", "email": "steady@example.com", "password": "steady-password"});
    assert_eq!(post_raw(&api, "/api/users", steady).await.0, 201);
    let login = json!({"email": "steady@example.com", "password": "steady-password"});

    let started = std::time::Instant::now();
    let (mut created, mut limited) = (0, 0);
    for i in 0..100 {
        let body = json!({"displayName": format!("Flood {i}"), "email": format!("flood{i}@example.com"), "password": "password-1"});
        let (status, retry, answer) = post_raw(&api, "/api/auth/signup", body).await;
        match status {
            201 => created += 1,
            429 => {
                limited += 1;
                assert_eq!(answer["error"]["code"], "rate_limited", "{answer}");
                let retry = retry.expect("429 without Retry-After");
                assert!((1..=defaults.signup_window.as_secs()).contains(&retry), "Retry-After {retry}");
            }
            other => panic!("signup {i}: {other} {answer}"),
        }
        if i % 25 == 0 {
            let (status, _, answer) = post_raw(&api, "/api/auth/login", login.clone()).await;
            assert_eq!(status, 200, "login during the flood: {answer}");
        }
    }
    assert!(started.elapsed() < defaults.signup_window, "the flood outlasted the window; the counts mean nothing");
    assert_eq!((created, limited), (defaults.signup_limit, 100 - defaults.signup_limit));
    assert_eq!(post_raw(&api, "/api/auth/login", login).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signups_are_limited_node_wide_too() {
    // No per-address limit, 4 a minute across the node (bursts of 2).
    let api =
        with_limits(Limits { signup_limit: 0, signup_global_per_minute: NonZeroU32::new(4), ..Limits::unlimited() })
            .await;
    let signup = |i: u32| json!({"displayName": format!("N{i}"), "email": format!("n{i}@example.com"), "password": "password-1"});
    assert_eq!(post_raw(&api, "/api/auth/signup", signup(1)).await.0, 201);
    assert_eq!(post_raw(&api, "/api/auth/signup", signup(2)).await.0, 201);
    let (status, retry, body) = post_raw(&api, "/api/auth/signup", signup(3)).await;
    assert_eq!((status, &body["error"]["code"]), (429, &json!("rate_limited")), "{body}");
    assert!(retry.is_some_and(|r| (1..=15).contains(&r)), "{retry:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_rate_limit_answers_429() {
    let api =
        with_limits(Limits { global_rps: NonZeroU32::new(1), global_burst: NonZeroU32::new(2), ..Limits::unlimited() })
            .await;
    assert_eq!(api.get("/api/users", None).await.0, 200);
    assert_eq!(api.get("/api/users", None).await.0, 200);
    let resp = api.client.get(api.url("/api/users")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_in_the_json_shape() {
    let api = with_limits(Limits { max_body_bytes: 1024, ..Limits::unlimited() }).await;
    let big = json!({"displayName": "x".repeat(2000), "email": "big@example.com", "password": "password-1"});
    let (status, _, body) = post_raw(&api, "/api/auth/signup", big).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "body_too_large");
    // Under the cap, the same endpoint validates as usual.
    let small = json!({"displayName": "x".repeat(100), "email": "big@example.com", "password": "password-1"});
    assert_eq!(post_raw(&api, "/api/auth/signup", small).await.0, 422);

    // A chunked body (no Content-Length) is cut while it is read.
    let chunk = format!("{{\"displayName\":\"{}\"}}", "y".repeat(3000));
    let request = format!(
        "POST /api/auth/signup HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let mut stream = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"body_too_large\""), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_cap_is_one_mebibyte() {
    let api = TestApi::start().await;
    assert_eq!(Limits::default().max_body_bytes, 1024 * 1024);
    let big = json!({"displayName": "x".repeat(1024 * 1024 + 1), "email": "a@example.com", "password": "password-1"});
    let (status, _, body) = post_raw(&api, "/api/auth/signup", big).await;
    assert_eq!((status, &body["error"]["code"]), (413, &json!("body_too_large")));
}

// ---------------------------------------------------------------------------------------------
// Audit events
// ---------------------------------------------------------------------------------------------

static AUDIT: Mutex<Vec<BTreeMap<String, String>>> = Mutex::new(Vec::new());

struct CaptureAudit;

impl<S: tracing::Subscriber> Layer<S> for CaptureAudit {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() == control::audit::TARGET {
            let mut fields = Fields::default();
            event.record(&mut fields);
            AUDIT.lock().unwrap().push(fields.0);
        }
    }
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
}

fn capture_audit() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(CaptureAudit)).unwrap();
    });
}

fn audit_events(path: &str) -> Vec<BTreeMap<String, String>> {
    AUDIT.lock().unwrap().iter().filter(|e| e.get("path").map(String::as_str) == Some(path)).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_emits_one_audit_event() {
    capture_audit();
    let api = TestApi::start().await;
    let (status, session) = api
        .post(
            "/api/auth/signup",
            None,
            json!({"displayName": "Jay", "email": "jay@example.com", "password": "password-1"}),
        )
        .await;
    assert_eq!(status, 201);
    let id = session["user"]["id"].as_str().unwrap();
    let token = session["token"].as_str().unwrap();
    let path = format!("/api/users/{id}");

    // A read is not audited; a write by the user, a refused write, and the logout are.
    assert_eq!(api.get(&path, Some(token)).await.0, 200);
    assert_eq!(api.call("PATCH", &path, Some(token), Some(json!({"displayName": "Jay 2"}))).await.0, 200);
    assert_eq!(api.call("PATCH", &path, Some(token), Some(json!({"roles": ["admin"]}))).await.0, 403);
    assert_eq!(api.call("PATCH", &path, None, Some(json!({"displayName": "Jay 3"}))).await.0, 200);
    assert_eq!(api.call("DELETE", "/api/auth/session", Some(token), None).await.0, 204);
    assert_eq!(api.call("PATCH", &path, Some(token), Some(json!({"displayName": "Jay 4"}))).await.0, 401);

    let events = audit_events(&path);
    let summary: Vec<(&str, &str, &str)> =
        events.iter().map(|e| (e["method"].as_str(), e["status"].as_str(), e["user"].as_str())).collect();
    assert_eq!(
        summary,
        [("PATCH", "200", id), ("PATCH", "403", id), ("PATCH", "200", "dev-admin"), ("PATCH", "401", "invalid-token")]
    );
    assert!(events.iter().all(|e| e["remote_ip"] == "127.0.0.1"), "{events:?}");
    // The logout is attributed to the user who logged out (one event, not zero or two).
    let logouts: Vec<_> = audit_events("/api/auth/session").into_iter().filter(|e| e["user"] == id).collect();
    assert_eq!(logouts.len(), 1, "{logouts:?}");
    assert_eq!(logouts[0]["method"], "DELETE");
    assert_eq!(logouts[0]["status"], "204");
}

/// Chat posts over the WebSocket are writes too: one audit event each, with the status the same
/// post over REST would have had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_posts_over_the_socket_are_audited() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    capture_audit();
    let api = TestApi::start().await;
    let (author, token) = api.user("Author", &["viewer"]).await;
    let (status, channel) = api.post("/api/channels", None, json!({"ownerId": author, "title": "Audited"})).await;
    assert_eq!(status, 201, "{channel}");
    let path = format!("/api/channels/{}/chat/ws", channel["id"].as_str().unwrap());
    let mut request = format!("ws://{}{path}?history=0", api.addr).into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    ws.send(Message::text(r#"{"type":"message","text":"on the record"}"#)).await.unwrap();
    ws.send(Message::text(r#"{"type":"message","text":"   "}"#)).await.unwrap();
    // Both frames were handled once the refusal of the second comes back.
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(text) = frame {
            if serde_json::from_str::<Value>(text.as_str()).unwrap()["type"] == "error" {
                break;
            }
        }
    }
    let events = audit_events(&path);
    let summary: Vec<(&str, &str, &str)> =
        events.iter().map(|e| (e["method"].as_str(), e["status"].as_str(), e["user"].as_str())).collect();
    assert_eq!(summary, [("WS", "201", author.as_str()), ("WS", "422", author.as_str())], "{events:?}");
    assert!(events.iter().all(|e| e["remote_ip"] == "127.0.0.1"), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_writes_are_audited_in_production() {
    capture_audit();
    let api = TestApi::start_with(Mode::Production, |s| s).await;
    // A path unique to this test, so that events of concurrent tests don't mix in.
    let path = "/api/users/audit-anonymous-probe";
    assert_eq!(api.call("DELETE", path, None, None).await.0, 401);
    let events = audit_events(path);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["user"], "anonymous");
    assert_eq!(events[0]["status"], "401");
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_metrics_use_the_route_template() {
    let registry = prometheus::Registry::new();
    let reg = registry.clone();
    let api = TestApi::start_with(Mode::Development, move |s| ApiState::with_registry(s.catalog, s.mode, &reg)).await;
    assert_eq!(api.get("/api/users/first-missing-id", None).await.0, 404);
    assert_eq!(api.get("/api/users/second-missing-id", None).await.0, 404);
    assert_eq!(api.get("/api/users", None).await.0, 200);

    let families = registry.gather();
    let family = |name: &str| families.iter().find(|f| f.name() == name).unwrap_or_else(|| panic!("no {name}"));
    let label = |m: &prometheus::proto::Metric, name: &str| {
        m.get_label().iter().find(|l| l.name() == name).map(|l| l.value().to_owned()).unwrap_or_default()
    };
    let requests = family("bitriver_http_requests_total");
    let by_template = requests
        .get_metric()
        .iter()
        .find(|m| label(m, "route") == "/api/users/{id}" && label(m, "method") == "GET" && label(m, "status") == "404")
        .expect("a series for the template");
    assert_eq!(by_template.get_counter().get_value(), 2.0);
    assert!(requests.get_metric().iter().all(|m| !label(m, "route").contains("missing")), "raw paths leak into labels");
    let latency = family("bitriver_http_request_duration_seconds");
    let users = latency.get_metric().iter().find(|m| label(m, "route") == "/api/users").unwrap();
    assert_eq!(users.get_histogram().get_sample_count(), 1);
    family("bitriver_ws_connections");
    let chat = family("bitriver_chat_messages_total");
    let mut directions: Vec<String> = chat.get_metric().iter().map(|m| label(m, "direction")).collect();
    directions.sort();
    assert_eq!(directions, ["in", "out"]);
}
