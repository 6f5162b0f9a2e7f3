//! Chat end to end: REST history and posting, moderation rules enforced by the catalog, the
//! per-user flood limit, and WebSocket clients (tokio-tungstenite) on a real server.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestApi;
use control::chat::{ChatConfig, ChatHub};
use control::{ApiState, Mode};
use futures::{SinkExt, StreamExt};
use raft::{now_millis, Command};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

/// A user with a live session: (id, bearer token).
async fn user(api: &TestApi, id: &str) -> (String, String) {
    api.user_with(id, &format!("{id} display"), &["viewer"], None).await
}

/// Start with a chat configuration (and keep a handle on the state for metrics and shutdown).
/// Channel `c1` of a user `owner`, and a user `viewer`: the viewer's token.
async fn viewer_of_c1(api: &TestApi) -> String {
    let (owner, _) = user(api, "owner").await;
    let (_, viewer_token) = user(api, "viewer").await;
    api.channel("c1", &owner, &[]).await;
    viewer_token
}

async fn start(mode: Mode, config: ChatConfig) -> (TestApi, ApiState) {
    start_hub(mode, ChatHub::new(config)).await
}

async fn start_hub(mode: Mode, hub: ChatHub) -> (TestApi, ApiState) {
    let kept = Arc::new(Mutex::new(None));
    let slot = kept.clone();
    let api = TestApi::start_with(mode, move |mut state| {
        state.chat = Arc::new(hub);
        *slot.lock().unwrap() = Some(state.clone());
        state
    })
    .await;
    let state = kept.lock().unwrap().take().unwrap();
    (api, state)
}

fn roomy() -> ChatConfig {
    ChatConfig { messages_per_window: 1000, ..ChatConfig::default() }
}

/// POST returning the headers too (for Retry-After).
async fn post_full(api: &TestApi, path: &str, token: Option<&str>, body: Value) -> (u16, Option<u64>, Value) {
    let mut req = api.client.post(api.url(path)).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

async fn say(api: &TestApi, channel: &str, token: &str, text: &str) -> (u16, Value) {
    api.post(&format!("/api/channels/{channel}/chat"), Some(token), json!({ "text": text })).await
}

async fn connect(api: &TestApi, channel: &str, token: Option<&str>, query: &str) -> Ws {
    let mut request = format!("ws://{}/api/channels/{channel}/chat/ws{query}", api.addr).into_client_request().unwrap();
    if let Some(t) = token {
        request.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let (ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 101);
    ws
}

/// The next JSON frame (pings and pongs skipped).
async fn next_json<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next()).await.expect("no frame in time").expect("socket ended");
        match frame.unwrap() {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The next frame of a type, skipping others (history, settings, ...).
async fn next_of<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, kind: &str) -> Value {
    loop {
        let frame = next_json(ws).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

/// No text frame arrives within `wait`.
async fn assert_quiet(ws: &mut Ws, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected silence, got {other:?}"),
        }
    }
}

/// Poll `cond` until it holds (panics after [`WAIT`]).
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The code of the close frame the server sends next (other frames skipped).
async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("socket not closed") {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_and_page_history_with_the_cursor() {
    let (api, _) = start(Mode::Development, roomy()).await;
    let (owner, _) = user(&api, "owner").await;
    let (viewer, token) = user(&api, "viewer").await;
    api.channel("c1", &owner, &[]).await;

    let mut ids = vec![];
    for i in 1..=7 {
        // Both field names work; the README's walkthrough posts `message` with `userId`.
        let body = if i % 2 == 0 {
            json!({ "text": format!("  line {i}  ") })
        } else {
            json!({ "message": format!("line {i}"), "userId": viewer })
        };
        let (status, msg) = api.post("/api/channels/c1/chat", Some(&token), body).await;
        assert_eq!(status, 201, "{msg}");
        assert_eq!(msg["text"], format!("line {i}"), "trimmed");
        assert_eq!(msg["userId"], viewer);
        assert_eq!(msg["userDisplayName"], "viewer display");
        assert_eq!(msg["channelId"], "c1");
        assert!(msg["sentAt"].as_i64().unwrap() > 0);
        ids.push(msg["id"].as_str().unwrap().to_owned());
    }

    // Newest page first; inside a page, oldest first.
    let (status, page) = api.get("/api/channels/c1/chat?limit=3", None).await;
    assert_eq!(status, 200, "{page}");
    let texts = |page: &Value| -> Vec<String> {
        page["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(texts(&page), ["line 5", "line 6", "line 7"]);
    let cursor = page["nextCursor"].as_str().unwrap().to_owned();
    let (_, page) = api.get(&format!("/api/channels/c1/chat?limit=3&before={cursor}"), None).await;
    assert_eq!(texts(&page), ["line 2", "line 3", "line 4"]);
    let cursor = page["nextCursor"].as_str().unwrap().to_owned();
    let (_, page) = api.get(&format!("/api/channels/c1/chat?limit=3&before={cursor}"), None).await;
    assert_eq!(texts(&page), ["line 1"]);
    assert!(page["nextCursor"].is_null());
    let seqs: Vec<u64> = page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len(), 1);

    // Default limit holds all 7, no cursor.
    let (_, page) = api.get("/api/channels/c1/chat", None).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 7);
    assert!(page["nextCursor"].is_null());
    assert_eq!(page["messages"][6]["id"], ids[6]);

    // Bad input names the field.
    for (query, field) in [("limit=0", "limit"), ("limit=101", "limit"), ("limit=x", "limit"), ("before=abc", "before")]
    {
        let (status, body) = api.get(&format!("/api/channels/c1/chat?{query}"), None).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}");
    }
    assert_eq!(api.get("/api/channels/nope/chat", None).await.0, 404);
    assert_eq!(say(&api, "nope", &token, "hi").await.0, 404);

    let (status, body) = say(&api, "c1", &token, "   ").await;
    assert_eq!((status, &body["error"]["field"]), (422, &json!("text")));
    let (status, body) = say(&api, "c1", &token, &"x".repeat(501)).await;
    assert_eq!((status, &body["error"]["field"]), (422, &json!("text")), "{body}");
    assert_eq!(say(&api, "c1", &token, &"é".repeat(500)).await.0, 201, "500 characters are fine");
    let (status, body) = api.post("/api/channels/c1/chat", Some(&token), json!({})).await;
    assert_eq!((status, &body["error"]["field"]), (422, &json!("text")));
    let (status, body) = api.post("/api/channels/c1/chat", Some(&token), json!({ "text": 5 })).await;
    assert_eq!((status, &body["error"]["field"]), (422, &json!("text")), "{body}");
    // Malformed JSON gets the JSON error shape.
    let resp = api
        .client
        .post(api.url("/api/channels/c1/chat"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"text\":")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.json::<Value>().await.unwrap()["error"]["code"].is_string());

    // A user posts only as themself; the development admin must say who posts.
    let (status, _) = api.post("/api/channels/c1/chat", Some(&token), json!({ "text": "hi", "userId": owner })).await;
    assert_eq!(status, 403);
    let (status, body) = api.post("/api/channels/c1/chat", None, json!({ "text": "hi" })).await;
    assert_eq!((status, &body["error"]["field"]), (422, &json!("userId")), "{body}");
    let (status, body) = api.post("/api/channels/c1/chat", None, json!({ "text": "hi", "userId": owner })).await;
    assert_eq!((status, &body["userId"]), (201, &json!(owner)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_requires_a_session_to_post_but_not_to_read() {
    let (api, _) = start(Mode::Production, roomy()).await;
    let (owner, token) = user(&api, "owner").await;
    api.channel("c1", &owner, &[]).await;
    let (status, body) = api.post("/api/channels/c1/chat", None, json!({ "text": "hi", "userId": owner })).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(say(&api, "c1", &token, "hi").await.0, 201);
    let (status, page) = api.get("/api/channels/c1/chat", None).await;
    assert_eq!((status, page["messages"].as_array().unwrap().len()), (200, 1));
    assert_eq!(api.call("DELETE", "/api/channels/c1/chat/whatever", None, None).await.0, 401);

    // An anonymous socket reads but may not send.
    let mut ws = connect(&api, "c1", None, "?history=0").await;
    send_text(&mut ws, r#"{"type":"message","text":"hello"}"#).await;
    let error = next_of(&mut ws, "error").await;
    assert_eq!(error["error"]["code"], "unauthorized", "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_receive_posts_and_deletions_of_their_channel_only() {
    let (api, state) = start(Mode::Development, roomy()).await;
    let (owner, owner_token) = user(&api, "owner").await;
    let (viewer, viewer_token) = user(&api, "viewer").await;
    let (_, other_token) = user(&api, "other").await;
    api.channel("c1", &owner, &[]).await;
    api.channel("c2", &owner, &[]).await;
    assert_eq!(say(&api, "c1", &viewer_token, "before anyone connected").await.0, 201);

    let mut a = connect(&api, "c1", Some(&viewer_token), "").await;
    let mut b = connect(&api, "c1", None, "").await;
    let mut elsewhere = connect(&api, "c2", None, "").await;
    for ws in [&mut a, &mut b] {
        let history = next_json(ws).await;
        assert_eq!(history["type"], "history");
        assert_eq!(history["messages"][0]["text"], "before anyone connected");
    }
    assert_eq!(next_json(&mut elsewhere).await["messages"], json!([]));
    assert_eq!(state.metrics.ws_connections.get(), 3);

    let (status, posted) = say(&api, "c1", &viewer_token, "hello sockets").await;
    assert_eq!(status, 201);
    for ws in [&mut a, &mut b] {
        let event = next_of(ws, "message").await;
        assert_eq!(event["message"]["id"], posted["id"]);
        assert_eq!(event["message"]["text"], "hello sockets");
        assert_eq!(event["message"]["userId"], viewer);
        assert_eq!(event["message"]["userDisplayName"], "viewer display");
    }

    // Only moderators delete.
    let id = posted["id"].as_str().unwrap();
    let path = format!("/api/channels/c1/chat/{id}");
    let (status, body) = api.call("DELETE", &path, Some(&other_token), None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(api.call("DELETE", &path, Some(&viewer_token), None).await.0, 403, "authors are not moderators");
    assert_eq!(api.call("DELETE", &path, Some(&owner_token), None).await.0, 204);
    for ws in [&mut a, &mut b] {
        let event = next_of(ws, "deleted").await;
        assert_eq!(event["messageId"], id);
    }
    assert_eq!(api.call("DELETE", &path, Some(&owner_token), None).await.0, 404, "already gone");
    let (_, page) = api.get("/api/channels/c1/chat", None).await;
    assert!(page["messages"].as_array().unwrap().iter().all(|m| m["id"] != id));

    // Nothing of c1 reached the c2 socket; c2's own traffic does.
    assert_quiet(&mut elsewhere, Duration::from_millis(300)).await;
    assert_eq!(say(&api, "c2", &other_token, "over here").await.0, 201);
    assert_eq!(next_of(&mut elsewhere, "message").await["message"]["text"], "over here");
    assert_quiet(&mut a, Duration::from_millis(300)).await;

    drop(a);
    drop(b);
    drop(elsewhere);
    wait_until("gauge back to 0", || state.metrics.ws_connections.get() == 0).await;
    assert!(state.metrics.chat_messages_in.get() >= 3);
    assert!(state.metrics.chat_messages_out.get() >= 3);
}

/// Events of one fan-out tick reach a socket in one write, each still its own frame, in catalog
/// order: a burst of posts arrives complete and in sequence, and a moderator's delete lands right
/// after the message it deletes and before the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_of_events_arrives_in_order_in_shared_writes() {
    let (api, state) = start(Mode::Development, roomy()).await;
    let (owner, owner_token) = user(&api, "owner").await;
    let (_, viewer_token) = user(&api, "viewer").await;
    api.channel("c1", &owner, &[]).await;
    let mut ws = connect(&api, "c1", None, "").await;
    assert_eq!(next_json(&mut ws).await["type"], "history");

    // A burst: 40 posts at once.
    let posts = (0..40).map(|i| {
        let (api, token) = (&api, viewer_token.clone());
        async move { say(api, "c1", &token, &format!("burst {i}")).await }
    });
    let posted = futures::future::join_all(posts).await;
    assert!(posted.iter().all(|(status, _)| *status == 201));
    let mut seqs = Vec::new();
    while seqs.len() < 40 {
        let frame = next_of(&mut ws, "message").await;
        seqs.push(frame["message"]["seq"].as_u64().expect("seq"));
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "out of order: {seqs:?}");
    assert!(state.metrics.chat_coalesced_writes.get() > 0, "no write carried a tick of several frames");

    // Post, delete it, post again, as fast as the API answers.
    let (_, first) = say(&api, "c1", &viewer_token, "to be deleted").await;
    let id = first["id"].as_str().unwrap().to_owned();
    let path = format!("/api/channels/c1/chat/{id}");
    assert_eq!(api.call("DELETE", &path, Some(&owner_token), None).await.0, 204);
    let (_, second) = say(&api, "c1", &viewer_token, "after the delete").await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let frame = next_json(&mut ws).await;
        match frame["type"].as_str() {
            Some("message") => seen.push(format!("message {}", frame["message"]["id"].as_str().unwrap())),
            Some("deleted") => seen.push(format!("deleted {}", frame["messageId"].as_str().unwrap())),
            _ => {}
        }
    }
    let second = second["id"].as_str().unwrap();
    assert_eq!(seen, [format!("message {id}"), format!("deleted {id}"), format!("message {second}")]);
    assert_quiet(&mut ws, Duration::from_millis(200)).await;
}

/// A tick goes from the fan-out straight into every socket's kernel buffer: with more sockets than
/// tokio lets one task poll I/O for at a time, every socket's write is still direct (none of
/// their tasks woken to write it), and each socket gets the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_reaches_every_socket_without_waking_its_task() {
    let config = ChatConfig { max_sockets_per_client: 0, ..roomy() };
    let (api, state) = start(Mode::Development, config).await;
    let viewer_token = viewer_of_c1(&api).await;
    let mut sockets = Vec::new();
    for _ in 0..300 {
        sockets.push(connect(&api, "c1", None, "?history=0").await);
    }
    wait_until("300 sockets open", || state.metrics.ws_connections.get() == 300).await;
    let direct_before = state.metrics.chat_direct_writes.get();
    assert_eq!(say(&api, "c1", &viewer_token, "to all").await.0, 201);
    for ws in &mut sockets {
        assert_eq!(next_of(ws, "message").await["message"]["text"], "to all");
    }
    assert_eq!(state.metrics.chat_direct_writes.get() - direct_before, 300, "every socket written directly");
}

/// Over HTTPS the fan-out writes through the TLS session: large messages in bursts arrive whole
/// and in order, written by the sweep, and the socket's own replies (an error for a binary frame)
/// share the connection with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_over_tls_arrives_whole_and_in_order() {
    let (api, state) = start(Mode::Development, roomy()).await;
    let viewer_token = viewer_of_c1(&api).await;

    // The same API over TLS, served as the node serves HTTPS (hyper, upgrades on).
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = listener.local_addr().unwrap();
    let app = control::router(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            let (acceptor, mut app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(service) = tower::Service::call(&mut app, peer).await;
                let tls = acceptor.accept(tcp).await.unwrap();
                let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                let service = hyper_util::service::TowerToHyperService::new(service);
                let _ = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service).await;
            });
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, tcp).await.unwrap();
    let url = format!("wss://localhost:{}/api/channels/c1/chat/ws?history=0", tls_addr.port());
    let (mut ws, response) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    assert_eq!(response.status().as_u16(), 101);
    wait_until("the socket open", || state.metrics.ws_connections.get() == 1).await;

    let direct_before = state.metrics.chat_direct_writes.get();
    let text = "\u{1d11e}".repeat(490); // 2 KB each, 50 KB a burst: many TLS records
    for burst in 0..4 {
        let texts: Vec<String> = (0..25).map(|i| format!("{burst:02}{i:02} {text}")).collect();
        let posts = texts.iter().map(|text| say(&api, "c1", &viewer_token, text));
        for (status, body) in futures::future::join_all(posts).await {
            assert_eq!(status, 201, "{body}");
        }
    }
    let mut seqs = Vec::new();
    while seqs.len() < 100 {
        let frame = next_of(&mut ws, "message").await;
        assert!(frame["message"]["text"].as_str().unwrap().ends_with(&text), "a whole message: {frame}");
        seqs.push(frame["message"]["seq"].as_u64().unwrap());
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "out of order: {seqs:?}");
    assert!(state.metrics.chat_direct_writes.get() > direct_before, "the sweep wrote through TLS");

    ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(next_of(&mut ws, "error").await["error"]["code"], "invalid_frame");
    assert_eq!(say(&api, "c1", &viewer_token, "after the error").await.0, 201);
    assert_eq!(next_of(&mut ws, "message").await["message"]["text"], "after the error");
}

/// A client that stops reading fills its socket's buffers: the node closes it once a tick's
/// frames wait longer than the write timeout, while a client reading beside it gets every message
/// in order, none skipped. One task serves each socket, so a blocked write must not hold others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_and_holds_nobody_up() {
    let config = ChatConfig { write_timeout: Duration::from_secs(1), messages_per_window: 10_000, ..roomy() };
    let (api, state) = start(Mode::Development, config).await;
    let viewer_token = viewer_of_c1(&api).await;
    let mut reader = connect(&api, "c1", None, "?history=0").await;
    // The stalled client: a small receive buffer, and it never reads after the upgrade.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(api.addr).await.unwrap();
    let url = format!("ws://{}/api/channels/c1/chat/ws?history=0", api.addr);
    let (_stalled, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await.unwrap();
    wait_until("both sockets open", || state.metrics.ws_connections.get() == 2).await;

    // 3,000 messages of 500 four-byte characters: about 6 MB for each socket, more than a
    // loopback send buffer grows to (4 MB at most by default).
    let text = "\u{1d11e}".repeat(495);
    let total = 3000;
    for chunk in (0..total).collect::<Vec<_>>().chunks(50) {
        let texts: Vec<String> = chunk.iter().map(|i| format!("{i:04} {text}")).collect();
        let posts = texts.iter().map(|text| say(&api, "c1", &viewer_token, text));
        for (status, body) in futures::future::join_all(posts).await {
            assert_eq!(status, 201, "{body}");
        }
        let mut got = 0;
        while got < chunk.len() {
            let frame = next_json(&mut reader).await;
            assert_eq!(frame["type"], "message", "the reading client is told of nothing else: {frame}");
            got += 1;
        }
    }
    wait_until("the stalled socket closed", || state.metrics.ws_connections.get() == 1).await;
    assert_eq!(say(&api, "c1", &viewer_token, "still here").await.0, 201);
    assert_eq!(next_json(&mut reader).await["message"]["text"], "still here");
}

/// A hub given a runtime runs its sockets there (the node gives them threads of their own), and
/// they work as on the runtime that accepted them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_run_on_the_runtime_the_hub_is_given() {
    let sockets = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (api, _) = start_hub(Mode::Development, ChatHub::new(roomy()).with_runtime(sockets.handle().clone())).await;
    let viewer_token = viewer_of_c1(&api).await;
    assert_eq!(sockets.handle().metrics().num_alive_tasks(), 0);
    let mut ws = connect(&api, "c1", None, "?history=0").await;
    assert_eq!(say(&api, "c1", &viewer_token, "across runtimes").await.0, 201);
    assert_eq!(next_of(&mut ws, "message").await["message"]["text"], "across runtimes");
    // The socket and the fan-out's dispatcher it started.
    assert_eq!(sockets.handle().metrics().num_alive_tasks(), 2);
    ws.close(None).await.unwrap();
    wait_until("the socket's task ended", || sockets.handle().metrics().num_alive_tasks() == 1).await;
    sockets.shutdown_background();
}

/// The node fans events out per channel: a socket of channel A gets A's one message and nothing of
/// the 500 posted to B around it, B's socket gets all of B's, in order, and a channel leaves the
/// fan-out with its last socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_channels_do_not_reach_sockets_of_other_channels() {
    let config = ChatConfig { channel_backlog: 1024, ..roomy() };
    let (api, state) = start(Mode::Development, config).await;
    let (owner, _) = user(&api, "owner").await;
    let (_, token) = user(&api, "viewer").await;
    api.channel("ca", &owner, &[]).await;
    api.channel("cb", &owner, &[]).await;
    api.channel("cc", &owner, &[]).await;
    let mut quiet = connect(&api, "ca", None, "?history=0").await;
    let mut busy = connect(&api, "cb", None, "?history=0").await;
    assert_eq!(state.chat.watched_channels(), 2, "the channels with sockets");

    // 500 posts to B, 8 at a time, with A's one message in the middle.
    let posts = futures::stream::iter(0..500)
        .map(|i| {
            let (api, token) = (&api, &token);
            async move {
                if i == 250 {
                    assert_eq!(say(api, "ca", token, "the only one for A").await.0, 201);
                }
                let (status, body) = say(api, "cb", token, &format!("b{i}")).await;
                assert_eq!(status, 201, "{body}");
                body["seq"].as_u64().unwrap()
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<u64>>();
    // Posting to a channel nobody watches here builds no frame.
    let unwatched = say(&api, "cc", &token, "nobody listens");
    let (mut seqs, (status, _)) = tokio::join!(posts, unwatched);
    assert_eq!(status, 201);
    assert_eq!(state.chat.watched_channels(), 2);

    seqs.sort_unstable();
    let mut received = Vec::with_capacity(seqs.len());
    while received.len() < seqs.len() {
        let frame = next_json(&mut busy).await;
        assert_eq!(frame["type"], "message", "{frame}");
        assert_eq!(frame["message"]["channelId"], "cb");
        received.push(frame["message"]["seq"].as_u64().unwrap());
    }
    assert_eq!(received, seqs, "B's socket gets every message of B once, in commit order");

    let only = next_json(&mut quiet).await;
    assert_eq!((&only["type"], &only["message"]["text"]), (&json!("message"), &json!("the only one for A")));
    assert_quiet(&mut quiet, Duration::from_millis(300)).await;
    assert_quiet(&mut busy, Duration::from_millis(100)).await;
    assert!(state.metrics.chat_messages_out.get() >= 501);

    drop(quiet);
    wait_until("A left the fan-out", || state.chat.watched_channels() == 1).await;
    drop(busy);
    wait_until("B left the fan-out", || state.chat.watched_channels() == 0).await;
    // A new socket starts over, and still gets live events.
    let mut again = connect(&api, "ca", None, "?history=0").await;
    assert_eq!(say(&api, "ca", &token, "back again").await.0, 201);
    assert_eq!(next_of(&mut again, "message").await["message"]["text"], "back again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_and_timeouts() {
    let (api, _) = start(Mode::Development, roomy()).await;
    let (owner, owner_token) = user(&api, "owner").await;
    let (_, mod_token) = user(&api, "moddy").await;
    let (troll, troll_token) = user(&api, "troll").await;
    let (sleepy, sleepy_token) = user(&api, "sleepy").await;
    let (_, viewer_token) = user(&api, "viewer").await;
    api.channel("c1", &owner, &["moddy"]).await;
    let mut ws = connect(&api, "c1", None, "?history=0").await;

    // Non-moderators can't ban or see bans.
    let (status, _) = api.post("/api/channels/c1/chat/bans", Some(&viewer_token), json!({ "userId": troll })).await;
    assert_eq!(status, 403);
    assert_eq!(api.get("/api/channels/c1/chat/bans", Some(&viewer_token)).await.0, 403);

    // Validation.
    for (body, field) in [
        (json!({ "userId": "" }), "userId"),
        (json!({ "userId": troll, "durationSeconds": 0 }), "durationSeconds"),
        (json!({ "userId": troll, "durationSeconds": 10_000_000 }), "durationSeconds"),
        (json!({ "userId": troll, "reason": "x".repeat(501) }), "reason"),
        (json!({ "userId": owner }), "userId"),
        (json!({ "userId": "moddy" }), "userId"),
    ] {
        let (status, resp) = api.post("/api/channels/c1/chat/bans", Some(&mod_token), body.clone()).await;
        assert_eq!((status, &resp["error"]["field"]), (422, &json!(field)), "{body}: {resp}");
    }
    let (status, _) = api.post("/api/channels/c1/chat/bans", Some(&mod_token), json!({ "userId": "ghost" })).await;
    assert_eq!(status, 404);

    // A ban (listed moderator).
    let (status, ban) =
        api.post("/api/channels/c1/chat/bans", Some(&mod_token), json!({ "userId": troll, "reason": "spam" })).await;
    assert_eq!(status, 201, "{ban}");
    assert_eq!((&ban["by"], &ban["until"], &ban["reason"]), (&json!("moddy"), &Value::Null, &json!("spam")));
    let event = next_of(&mut ws, "ban").await;
    assert_eq!((&event["userId"], &event["until"]), (&json!(troll), &Value::Null));
    let (status, body) = say(&api, "c1", &troll_token, "let me in").await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("chat_banned")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("banned"));
    let (status, bans) = api.get("/api/channels/c1/chat/bans", Some(&owner_token)).await;
    assert_eq!(status, 200);
    assert_eq!(bans["bans"][0]["userId"], troll);

    // Unban.
    let path = format!("/api/channels/c1/chat/bans/{troll}");
    assert_eq!(api.call("DELETE", &path, Some(&viewer_token), None).await.0, 403);
    assert_eq!(api.call("DELETE", &path, Some(&owner_token), None).await.0, 204);
    assert_eq!(next_of(&mut ws, "unban").await["userId"], troll);
    assert_eq!(api.call("DELETE", &path, Some(&owner_token), None).await.0, 404);
    assert_eq!(say(&api, "c1", &troll_token, "sorry").await.0, 201);

    // A two-second timeout.
    let (status, ban) = api
        .post("/api/channels/c1/chat/bans", Some(&owner_token), json!({ "userId": sleepy, "durationSeconds": 2 }))
        .await;
    assert_eq!(status, 201);
    let until = ban["until"].as_i64().unwrap();
    assert_eq!(next_of(&mut ws, "ban").await["until"], until);
    let (status, body) = say(&api, "c1", &sleepy_token, "hello?").await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("chat_banned")));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("until") && message.contains(&until.to_string()), "{message}");
    // Over the socket too, as an error event.
    let mut sleepy_ws = connect(&api, "c1", Some(&sleepy_token), "?history=0").await;
    send_text(&mut sleepy_ws, r#"{"type":"message","text":"hello?"}"#).await;
    assert_eq!(next_of(&mut sleepy_ws, "error").await["error"]["code"], "chat_banned");

    tokio::time::sleep(Duration::from_millis((until - now_millis()).max(0) as u64 + 100)).await;
    assert_eq!(say(&api, "c1", &sleepy_token, "awake").await.0, 201);
    let (_, bans) = api.get("/api/channels/c1/chat/bans", Some(&owner_token)).await;
    assert_eq!(bans["bans"], json!([]), "expired timeouts are not listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_mode_and_word_filter() {
    let (api, _) = start(Mode::Development, roomy()).await;
    let (owner, owner_token) = user(&api, "owner").await;
    let (_, viewer_token) = user(&api, "viewer").await;
    api.channel("c1", &owner, &[]).await;
    let settings_path = "/api/channels/c1/chat/settings";

    assert_eq!(api.get(settings_path, Some(&viewer_token)).await.0, 403);
    let (status, _) = api.call("PUT", settings_path, Some(&viewer_token), Some(json!({ "slowModeSecs": 5 }))).await;
    assert_eq!(status, 403);
    for (body, field) in [
        (json!({ "slowModeSecs": 3601 }), "slowModeSecs"),
        (json!({ "slowModeSecs": -1 }), "slowModeSecs"),
        (json!({ "filterMode": "yell" }), "filterMode"),
        (json!({ "blockedWords": ["ok", ""] }), "blockedWords[1]"),
        (json!({ "blockedWords": ["y".repeat(65)] }), "blockedWords[0]"),
        (json!({ "blockedWords": vec!["w"; 201] }), "blockedWords"),
    ] {
        let (status, resp) = api.call("PUT", settings_path, Some(&owner_token), Some(body.clone())).await;
        assert_eq!((status, &resp["error"]["field"]), (422, &json!(field)), "{body}: {resp}");
    }

    let mut owner_ws = connect(&api, "c1", Some(&owner_token), "?history=0").await;
    let mut viewer_ws = connect(&api, "c1", Some(&viewer_token), "?history=0").await;

    // Slow mode: one message per 3 s for viewers; moderators are exempt.
    let (status, settings) =
        api.call("PUT", settings_path, Some(&owner_token), Some(json!({ "slowModeSecs": 3 }))).await;
    assert_eq!((status, &settings["slowModeSecs"]), (200, &json!(3)), "{settings}");
    let event = next_of(&mut viewer_ws, "settings").await;
    assert_eq!(event["settings"]["slowModeSecs"], 3);
    assert!(event["settings"].get("blockedWords").is_none(), "viewers don't see the word list");
    assert!(next_of(&mut owner_ws, "settings").await["settings"]["blockedWords"].is_array());

    assert_eq!(say(&api, "c1", &viewer_token, "first").await.0, 201);
    let (status, retry_after, body) =
        post_full(&api, "/api/channels/c1/chat", Some(&viewer_token), json!({ "text": "second" })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("slow_mode")), "{body}");
    assert!(matches!(retry_after, Some(1..=3)), "{retry_after:?}");
    assert_eq!(say(&api, "c1", &owner_token, "owner one").await.0, 201);
    assert_eq!(say(&api, "c1", &owner_token, "owner two").await.0, 201);

    // Mask mode: PUT keeps slowModeSecs unless given.
    let (status, settings) = api
        .call(
            "PUT",
            settings_path,
            Some(&owner_token),
            Some(json!({ "slowModeSecs": 0, "blockedWords": ["Darn"], "filterMode": "mask" })),
        )
        .await;
    assert_eq!(status, 200);
    let chat_fields = json!({ "slowModeSecs": settings["slowModeSecs"], "blockedWords": settings["blockedWords"], "filterMode": settings["filterMode"] });
    assert_eq!(chat_fields, json!({ "slowModeSecs": 0, "blockedWords": ["darn"], "filterMode": "mask" }));
    assert_eq!(settings["blockLinks"], false, "automod stays off unless asked: {settings}");
    let (status, msg) = say(&api, "c1", &viewer_token, "what a DARN shame").await;
    assert_eq!((status, msg["text"].as_str()), (201, Some("what a **** shame")), "{msg}");
    loop {
        let event = next_of(&mut owner_ws, "message").await;
        if event["message"]["id"] == msg["id"] {
            assert_eq!(event["message"]["text"], "what a **** shame", "sockets get the masked text");
            break;
        }
    }
    let (_, settings) = api.get(settings_path, Some(&owner_token)).await;
    assert_eq!(settings["filterMode"], "mask");

    // Block mode refuses.
    let (status, _) = api.call("PUT", settings_path, Some(&owner_token), Some(json!({ "filterMode": "block" }))).await;
    assert_eq!(status, 200);
    let (status, body) = say(&api, "c1", &viewer_token, "darn it").await;
    assert_eq!((status, &body["error"]["field"]), (422, &json!("text")), "{body}");
    assert_eq!(say(&api, "c1", &viewer_token, "fine words").await.0, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_flood_limit() {
    // Default: 5 per 10 s per user.
    let (api, _) = start(Mode::Development, ChatConfig::default()).await;
    let (owner, owner_token) = user(&api, "owner").await;
    let (_, chatty_token) = user(&api, "chatty").await;
    api.channel("c1", &owner, &[]).await;
    for i in 0..5 {
        assert_eq!(say(&api, "c1", &chatty_token, &format!("m{i}")).await.0, 201);
    }
    let (status, retry_after, body) =
        post_full(&api, "/api/channels/c1/chat", Some(&chatty_token), json!({ "text": "one more" })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("chat_rate_limited")), "{body}");
    assert!(matches!(retry_after, Some(1..=10)), "{retry_after:?}");
    // Over the socket too; other users are unaffected.
    let mut ws = connect(&api, "c1", Some(&chatty_token), "?history=0").await;
    send_text(&mut ws, r#"{"type":"message","text":"sneaky"}"#).await;
    let error = next_of(&mut ws, "error").await;
    assert_eq!(error["error"]["code"], "chat_rate_limited");
    assert!(error["error"]["retryAfter"].as_u64().is_some());
    assert_eq!(say(&api, "c1", &owner_token, "calm").await.0, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_clients_send_and_bad_frames_only_hurt_their_sender() {
    let (api, _) = start(Mode::Development, roomy()).await;
    let (owner, _) = user(&api, "owner").await;
    let (viewer, viewer_token) = user(&api, "viewer").await;
    api.channel("c1", &owner, &[]).await;
    let mut sender = connect(&api, "c1", Some(&viewer_token), "?history=0").await;
    let mut watcher = connect(&api, "c1", None, "?history=0").await;

    send_text(&mut sender, r#"{"type":"message","text":"  from a socket  "}"#).await;
    for ws in [&mut sender, &mut watcher] {
        let event = next_of(ws, "message").await;
        assert_eq!((&event["message"]["text"], &event["message"]["userId"]), (&json!("from a socket"), &json!(viewer)));
    }

    // Malformed frames: an error event, and the socket keeps working.
    for bad in
        ["not json", r#"{"type":"shout","text":"x"}"#, r#"{"type":"message"}"#, r#"{"type":"message","text":""}"#]
    {
        send_text(&mut sender, bad).await;
        let error = next_json(&mut sender).await;
        assert_eq!(error["type"], "error", "{bad}: {error}");
        assert!(error["error"]["code"].is_string() && error["error"]["message"].is_string());
    }
    sender.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(next_json(&mut sender).await["error"]["code"], "invalid_frame");
    send_text(&mut sender, r#"{"type":"message","message":"still here","userId":"viewer"}"#).await;
    assert_eq!(next_of(&mut sender, "message").await["message"]["text"], "still here");
    // The watcher saw only the two messages, none of the errors.
    assert_eq!(next_json(&mut watcher).await["message"]["text"], "still here");

    // The development admin's socket must say who posts.
    let mut admin = connect(&api, "c1", None, "?history=0").await;
    send_text(&mut admin, r#"{"type":"message","text":"hi"}"#).await;
    assert_eq!(next_json(&mut admin).await["error"]["field"], "userId");

    // An oversized frame closes that socket (1009); the others carry on.
    send_text(&mut sender, &format!(r#"{{"type":"message","text":"{}"}}"#, "x".repeat(5000))).await;
    assert_eq!(close_code(&mut sender).await, Some(CloseCode::Size));
    let (_, other_token) = user(&api, "other").await;
    assert_eq!(say(&api, "c1", &other_token, "after the big one").await.0, 201);
    assert_eq!(next_of(&mut watcher, "message").await["message"]["text"], "after the big one");

    // Logging out ends the socket's right to post.
    let mut stale = connect(&api, "c1", Some(&viewer_token), "?history=0").await;
    api.catalog
        .propose(Command::DeleteAuthSession { token_hash: control::auth::token_hash(&viewer_token) })
        .await
        .unwrap();
    send_text(&mut stale, r#"{"type":"message","text":"ghost"}"#).await;
    assert_eq!(next_of(&mut stale, "error").await["error"]["code"], "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_rules_history_and_shutdown() {
    let (api, state) = start(Mode::Development, roomy()).await;
    let (owner, token) = user(&api, "owner").await;
    api.channel("c1", &owner, &[]).await;
    for i in 0..60 {
        api.post("/api/channels/c1/chat", None, json!({ "text": format!("m{i}"), "userId": owner })).await;
    }

    // History: the last 50 by default, fewer on request.
    let mut ws = connect(&api, "c1", None, "").await;
    let history = next_json(&mut ws).await;
    let messages = history["messages"].as_array().unwrap();
    assert_eq!((messages.len(), &messages[0]["text"], &messages[49]["text"]), (50, &json!("m10"), &json!("m59")));
    let mut few = connect(&api, "c1", Some(&token), "?history=2").await;
    assert_eq!(next_json(&mut few).await["messages"].as_array().unwrap().len(), 2);

    // Refusals before the upgrade are plain API errors.
    let refused = |query: &'static str, channel: &'static str| {
        let url = format!("ws://{}/api/channels/{channel}/chat/ws{query}", api.addr);
        async move {
            match tokio_tungstenite::connect_async(url).await {
                Err(WsError::Http(resp)) => resp.status().as_u16(),
                other => panic!("expected an HTTP refusal, got {:?}", other.map(|(_, r)| r.status())),
            }
        }
    };
    assert_eq!(refused("?token=abc", "c1").await, 400, "tokens in the query are refused");
    assert_eq!(refused("", "nope").await, 404);
    assert_eq!(refused("?history=51", "c1").await, 422);
    let (status, body) = api.get("/api/channels/c1/chat/ws", None).await;
    assert_eq!((status, &body["error"]["code"]), (426, &json!("websocket_required")), "{body}");

    // Deleting the channel closes its sockets normally.
    api.channel("c2", &owner, &[]).await;
    let mut doomed = connect(&api, "c2", None, "?history=0").await;
    api.catalog.propose(Command::DeleteChannel { id: "c2".into() }).await.unwrap();
    assert_eq!(close_code(&mut doomed).await, Some(CloseCode::Normal));

    // Shutdown closes every socket with 1001 and refuses new ones.
    // (The closed socket's task may still be finishing.)
    wait_until("two sockets open", || state.chat.open_sockets() == 2).await;
    state.chat.shutdown();
    for ws in [&mut ws, &mut few] {
        assert_eq!(close_code(ws).await, Some(CloseCode::Away));
    }
    assert_eq!(refused("", "c1").await, 503);
}

/// Refusal of a socket before the upgrade: (status, Retry-After, error code).
async fn refused_socket(request: impl IntoClientRequest + Unpin) -> (u16, Option<String>, String) {
    match tokio_tungstenite::connect_async(request).await {
        Err(WsError::Http(resp)) => {
            let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap_or_default();
            (resp.status().as_u16(), retry, body["error"]["code"].as_str().unwrap_or_default().to_owned())
        }
        other => panic!("expected an HTTP refusal, got {:?}", other.map(|(_, r)| r.status())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_only_its_share_of_the_chat_sockets() {
    let config = ChatConfig { max_sockets: 10, max_sockets_per_client: 3, ..roomy() };
    let (api, state) = start(Mode::Development, config).await;
    let (owner, _) = user(&api, "owner").await;
    api.channel("c1", &owner, &[]).await;
    let url = format!("ws://{}/api/channels/c1/chat/ws?history=0", api.addr);
    let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&api, "c1", None, "?history=0").await);
    }
    // The node has room for seven more, but not from this address.
    let (status, retry, code) = refused_socket(url.clone().into_client_request().unwrap()).await;
    assert_eq!((status, code.as_str()), (429, "too_many_sockets"));
    assert!(retry.is_some(), "429 without Retry-After");
    assert_eq!((state.chat.open_sockets(), state.chat.sockets_of(local)), (3, 3));

    // Another address (127.0.0.2 is loopback too, but another client) still gets in.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = socket.connect(api.addr).await.unwrap();
    let (mut other, response) = tokio_tungstenite::client_async(url.clone(), stream).await.unwrap();
    assert_eq!(response.status().as_u16(), 101);
    assert_eq!(state.chat.sockets_of("127.0.0.2".parse().unwrap()), 1);

    // A socket that closes gives its address the place back.
    let mut first = held.remove(0);
    first.close(None).await.unwrap();
    wait_until("the closed socket's place is back", || state.chat.sockets_of(local) == 2).await;
    held.push(connect(&api, "c1", None, "?history=0").await);
    assert_eq!(state.chat.open_sockets(), 4);
    other.close(None).await.unwrap();
    wait_until("the other address holds nothing", || state.chat.sockets_of("127.0.0.2".parse().unwrap()) == 0).await;
}

/// A user whose account is `age_ms` old, with a session: (id, bearer token).
async fn user_aged(api: &TestApi, id: &str, age_ms: i64) -> (String, String) {
    let now = now_millis();
    api.catalog
        .propose(Command::CreateUser(raft::User {
            id: id.into(),
            display_name: format!("{id} display"),
            email: format!("{id}@example.com"),
            roles: vec!["viewer".into()],
            password_hash: None,
            created_at: now - age_ms,
        }))
        .await
        .unwrap();
    let token = control::auth::new_token();
    let session = raft::AuthSession {
        token_hash: control::auth::token_hash(&token),
        user_id: id.into(),
        created_at: now,
        expires_at: now + 3_600_000,
    };
    api.catalog.propose(Command::CreateAuthSession(session)).await.unwrap();
    (id.into(), token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automod_blocks_links_and_spam_and_holds_new_accounts_for_review() {
    let (api, _) = start(Mode::Development, roomy()).await;
    let (owner, owner_token) = user(&api, "owner").await;
    let (_, regular_token) = user_aged(&api, "regular", 24 * 3_600_000).await;
    let (_, newbie_token) = user_aged(&api, "newbie", 60_000).await;
    api.channel("c1", &owner, &[]).await;
    let settings_path = "/api/channels/c1/chat/settings";

    for (body, field) in [
        (json!({ "allowedLinkDomains": ["not a domain"] }), "allowedLinkDomains[0]"),
        (json!({ "allowedLinkDomains": vec!["a.com"; 101] }), "allowedLinkDomains"),
        (json!({ "repeatWindowSecs": 3601 }), "repeatWindowSecs"),
        (json!({ "capsMaxPercent": 101 }), "capsMaxPercent"),
        (json!({ "maxEmotes": -1 }), "maxEmotes"),
        (json!({ "newAccountHoldMinutes": 10081 }), "newAccountHoldMinutes"),
        // One bad field refuses the whole change, automod and chat fields alike.
        (json!({ "blockLinks": true, "slowModeSecs": -1 }), "slowModeSecs"),
    ] {
        let (status, resp) = api.call("PUT", settings_path, Some(&owner_token), Some(body.clone())).await;
        assert_eq!((status, &resp["error"]["field"]), (422, &json!(field)), "{body}: {resp}");
    }
    let (_, settings) = api.get(settings_path, Some(&owner_token)).await;
    assert_eq!(settings["blockLinks"], false, "nothing changed: {settings}");

    let rules = json!({
        "blockLinks": true,
        "allowedLinkDomains": ["*.Example.com"],
        "repeatWindowSecs": 60,
        "capsMaxPercent": 70,
        "maxEmotes": 3,
        "newAccountHoldMinutes": 10,
    });
    let (status, settings) = api.call("PUT", settings_path, Some(&owner_token), Some(rules)).await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["allowedLinkDomains"], json!(["example.com"]));
    assert_eq!(settings["newAccountHoldMinutes"], 10);

    // Links: a blocked domain is refused, an allowed one (and its subdomains) passes.
    let (status, body) = say(&api, "c1", &regular_token, "free stuff at https://spam.test/win").await;
    assert_eq!((status, &body["error"]["field"]), (422, &json!("text")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("links are not allowed"), "{body}");
    assert_eq!(say(&api, "c1", &regular_token, "clip: https://clips.example.com/42").await.0, 201);
    // Spam limits: the same line twice, shouting, an emote flood.
    assert_eq!(say(&api, "c1", &regular_token, "hype hype").await.0, 201);
    assert_eq!(say(&api, "c1", &regular_token, "HYPE   hype").await.0, 422, "a repeat within the window");
    assert_eq!(say(&api, "c1", &regular_token, "WHY IS NOBODY LISTENING TO ME").await.0, 422);
    assert_eq!(say(&api, "c1", &regular_token, "🎉🎉🎉🎉🎉").await.0, 422);
    assert_eq!(say(&api, "c1", &regular_token, "🎉 nice one").await.0, 201);
    // The owner (a moderator) is exempt.
    assert_eq!(say(&api, "c1", &owner_token, "https://spam.test is fine from me").await.0, 201);

    // A new account's message is held: 202, not in the history, not on sockets, in the queue.
    let mut owner_ws = connect(&api, "c1", Some(&owner_token), "?history=0").await;
    let mut newbie_ws = connect(&api, "c1", Some(&newbie_token), "?history=0").await;
    let (status, held) = say(&api, "c1", &newbie_token, "hello, first time here").await;
    assert_eq!((status, &held["held"]), (202, &json!(true)), "{held}");
    let held_id = held["message"]["id"].as_str().unwrap().to_owned();
    let (_, history) = api.get("/api/channels/c1/chat?limit=50", None).await;
    assert!(!history.to_string().contains(&held_id), "held messages are not posted: {history}");
    assert_quiet(&mut owner_ws, Duration::from_millis(300)).await;
    send_text(&mut newbie_ws, r#"{"type":"message","text":"anyone there?"}"#).await;
    let frame = next_of(&mut newbie_ws, "held").await;
    assert!(frame["reason"].as_str().unwrap().contains("10 minutes"), "{frame}");

    assert_eq!(api.get("/api/channels/c1/chat/held", Some(&regular_token)).await.0, 403);
    let (status, queue) = api.get("/api/channels/c1/chat/held", Some(&owner_token)).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> =
        queue["messages"].as_array().unwrap().iter().map(|h| h["message"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{queue}");
    assert_eq!(ids[0], held_id, "oldest first");

    // Approval posts it (sockets see it), rejection drops the other; both leave the queue.
    let approve = format!("/api/channels/c1/chat/held/{held_id}/approve");
    assert_eq!(api.post(&approve, Some(&regular_token), json!({})).await.0, 403);
    let (status, posted) = api.post(&approve, Some(&owner_token), json!({})).await;
    assert_eq!((status, posted["id"].as_str()), (200, Some(held_id.as_str())), "{posted}");
    assert_eq!(next_of(&mut owner_ws, "message").await["message"]["id"], json!(held_id));
    assert_eq!(api.post(&approve, Some(&owner_token), json!({})).await.0, 404, "already decided");
    let reject = format!("/api/channels/c1/chat/held/{}/reject", ids[1]);
    assert_eq!(api.post(&reject, Some(&owner_token), json!({})).await.0, 204);
    let (_, queue) = api.get("/api/channels/c1/chat/held", Some(&owner_token)).await;
    assert_eq!(queue["messages"], json!([]));
    let (_, history) = api.get("/api/channels/c1/chat?limit=50", None).await;
    assert!(history.to_string().contains(&held_id) && !history.to_string().contains(ids[1]), "{history}");
}
