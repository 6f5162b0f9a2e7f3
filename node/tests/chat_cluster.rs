//! Chat across a three-node cluster of real `bitriver` processes: a message posted through one
//! node's REST API reaches chat sockets on the other two, a moderator's delete through a second
//! node removes it everywhere, and a ban through the third node stops the first node from
//! accepting the banned user's posts.

mod common;

use std::time::{Duration, Instant};

use common::{cli, wait_voters, NodeProc};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const STARTUP: Duration = Duration::from_secs(30);
/// How long a chat event may take to reach a socket on another node.
const DELIVERY: Duration = Duration::from_secs(5);
const PASSWORD: &str = "river-password";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `METHOD url` with an optional bearer token and JSON body; (status, JSON body or `Null`).
async fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method.parse().unwrap(), url).timeout(Duration::from_secs(15));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(b) = body {
        request = request.json(&b);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
    (status, value)
}

/// An account with a password (created by the development admin on `node`), signed in on `login_on`.
async fn account(node: &NodeProc, login_on: &NodeProc, name: &str, roles: &[&str]) -> (String, String) {
    let email = format!("{}@example.com", name.to_lowercase());
    let body = json!({"displayName": name, "email": email, "roles": roles, "password": PASSWORD});
    let (status, user) = call("POST", &node.url("/api/users"), None, Some(body)).await;
    assert_eq!(status, 201, "{user}");
    let id = user["id"].as_str().unwrap().to_owned();
    let login = json!({"email": email, "password": PASSWORD});
    let (status, session) = call("POST", &login_on.url("/api/auth/login"), None, Some(login)).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["user"]["id"], id.as_str());
    (id, session["token"].as_str().unwrap().to_owned())
}

/// Poll `node` until `check` holds for its local view of the channel (GET answers from the local
/// replica when it has the channel).
async fn wait_channel(node: &NodeProc, channel_id: &str, what: &str, check: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + DELIVERY;
    loop {
        let (status, channel) = call("GET", &node.url(&format!("/api/channels/{channel_id}")), None, None).await;
        if status == 200 && check(&channel) {
            return;
        }
        assert!(Instant::now() < deadline, "{}: never saw {what}: {status} {channel}", node.name);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A chat socket on `node`, returned once the server has sent its `history` frame (so it is
/// subscribed to the channel's events from then on).
async fn connect(node: &NodeProc, channel_id: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{}/api/channels/{channel_id}/chat/ws", node.http_port);
    let (mut ws, response) = tokio_tungstenite::connect_async(url.into_client_request().unwrap())
        .await
        .unwrap_or_else(|e| panic!("{}: chat socket refused: {e}", node.name));
    assert_eq!(response.status().as_u16(), 101);
    let history = next_json(&mut ws, &node.name).await;
    assert_eq!(history["type"], "history", "{history}");
    assert_eq!(history["messages"], json!([]), "{history}");
    ws
}

/// The next JSON frame within [`DELIVERY`] (pings and pongs skipped).
async fn next_json(ws: &mut Ws, who: &str) -> Value {
    let deadline = tokio::time::Instant::now() + DELIVERY;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("{who}: no chat event within {DELIVERY:?}"))
            .unwrap_or_else(|| panic!("{who}: socket ended"))
            .unwrap_or_else(|e| panic!("{who}: socket failed: {e}"));
        match frame {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("{who}: unexpected frame {other:?}"),
        }
    }
}

/// No text frame arrives within `wait`.
async fn assert_quiet(ws: &mut Ws, who: &str, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("{who}: expected no event, got {other:?}"),
        }
    }
}

/// Three nodes (ids 1 to 3) in one cluster, all voters, with a generous login limit.
async fn start_cluster(root: &std::path::Path) -> Vec<NodeProc> {
    let mut nodes: Vec<NodeProc> = (1..=3).map(|i| NodeProc::new(root, &format!("n{i}"))).collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        n.args.extend(["--node-id".into(), (i + 1).to_string()]);
        n.env.push(("BITRIVER_LIVE_RATE_LOGIN_LIMIT".into(), "1000".into()));
    }
    nodes[0].start();
    nodes[0].wait_healthy(STARTUP).await;
    let (code, token, err) = cli(&["cluster", "token", "--uses", "2", "--data", nodes[0].data.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let join = nodes[0].cluster_addr();
    for n in &mut nodes[1..] {
        n.args.extend(["--join".into(), join.clone(), "--join-token".into(), token.trim().to_owned()]);
        n.start();
    }
    for n in &mut nodes[1..] {
        n.wait_healthy(STARTUP).await;
    }
    wait_voters(&nodes[0], 3, STARTUP).await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_events_cross_nodes_and_moderation_holds_cluster_wide() {
    let root = tempfile::tempdir().unwrap();
    let nodes = start_cluster(root.path()).await;
    let [n1, n2, n3] = [&nodes[0], &nodes[1], &nodes[2]];

    // Accounts made on node 1; each signs in on the node it will act through.
    let (owner_id, owner) = account(n1, n1, "Owner", &["creator"]).await;
    let (viewer_id, viewer) = account(n1, n1, "Viewer", &["viewer"]).await;
    let (moderator_id, moderator) = account(n1, n2, "Moderator", &["viewer"]).await;

    // The owner's channel, with the moderator listed, through node 1.
    let (status, channel) =
        call("POST", &n1.url("/api/channels"), Some(&owner), Some(json!({"title": "Cluster chat"}))).await;
    assert_eq!(status, 201, "{channel}");
    assert_eq!(channel["ownerId"], owner_id.as_str());
    let channel_id = channel["id"].as_str().unwrap().to_owned();
    let channel_url = |n: &NodeProc, rest: &str| n.url(&format!("/api/channels/{channel_id}{rest}"));
    let patch = json!({"moderators": [moderator_id]});
    let (status, patched) = call("PATCH", &channel_url(n1, ""), Some(&owner), Some(patch)).await;
    assert_eq!(status, 200, "{patched}");
    for n in [n2, n3] {
        wait_channel(n, &channel_id, "the moderator", |c| c["moderators"] == json!([moderator_id])).await;
    }

    // Sockets on nodes 3 and 2; a viewer posts through node 1.
    let mut ws3 = connect(n3, &channel_id).await;
    let mut ws2 = connect(n2, &channel_id).await;
    let sent = Instant::now();
    let (status, posted) =
        call("POST", &channel_url(n1, "/chat"), Some(&viewer), Some(json!({"text": "hello from node 1"}))).await;
    assert_eq!(status, 201, "{posted}");
    assert_eq!(posted["userId"], viewer_id.as_str());
    let message_id = posted["id"].as_str().unwrap().to_owned();
    for (ws, who) in [(&mut ws3, "node 3"), (&mut ws2, "node 2")] {
        let event = next_json(ws, who).await;
        assert_eq!(event["type"], "message", "{who}: {event}");
        assert_eq!(event["message"], posted, "{who}: the same message as the post returned");
        assert_eq!(event["message"]["text"], "hello from node 1");
        assert_eq!(event["message"]["userDisplayName"], "Viewer");
    }
    assert!(sent.elapsed() < DELIVERY, "delivery took {:?}", sent.elapsed());

    // Only moderators delete: the viewer is refused through node 2, the moderator is not.
    let delete_url = channel_url(n2, &format!("/chat/{message_id}"));
    let (status, refused) = call("DELETE", &delete_url, Some(&viewer), None).await;
    assert_eq!(status, 403, "{refused}");
    let (status, body) = call("DELETE", &delete_url, Some(&moderator), None).await;
    assert_eq!(status, 204, "{body}");
    for (ws, who) in [(&mut ws3, "node 3"), (&mut ws2, "node 2")] {
        let event = next_json(ws, who).await;
        assert_eq!(event, json!({"type": "deleted", "messageId": message_id}), "{who}");
    }
    // Gone from history on every node.
    for n in [n1, n2, n3] {
        let (status, page) = call("GET", &channel_url(n, "/chat?limit=25"), None, None).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["messages"], json!([]), "{}: {page}", n.name);
    }

    // The moderator bans the viewer through node 3; node 1 then refuses the viewer's posts.
    let ban = json!({"userId": viewer_id, "reason": "spam"});
    let (status, record) = call("POST", &channel_url(n3, "/chat/bans"), Some(&moderator), Some(ban)).await;
    assert_eq!(status, 201, "{record}");
    assert_eq!(record["userId"], viewer_id.as_str());
    assert_eq!(record["by"], moderator_id.as_str());
    for (ws, who) in [(&mut ws3, "node 3"), (&mut ws2, "node 2")] {
        let event = next_json(ws, who).await;
        assert_eq!(event, json!({"type": "ban", "userId": viewer_id, "until": null}), "{who}");
    }
    let (status, refused) =
        call("POST", &channel_url(n1, "/chat"), Some(&viewer), Some(json!({"text": "let me back in"}))).await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "chat_banned", "{refused}");
    // The refused post reaches no socket; the owner still chats.
    let (status, posted) =
        call("POST", &channel_url(n1, "/chat"), Some(&owner), Some(json!({"text": "still open"}))).await;
    assert_eq!(status, 201, "{posted}");
    for (ws, who) in [(&mut ws3, "node 3"), (&mut ws2, "node 2")] {
        let event = next_json(ws, who).await;
        assert_eq!(event["type"], "message", "{who}: {event}");
        assert_eq!(event["message"]["text"], "still open", "{who}: the refused post must not appear");
    }
    assert_quiet(&mut ws3, "node 3", Duration::from_millis(300)).await;
}

/// A channel created, and a moderator appointed, through node 1 can be chatted in and moderated
/// through the other nodes at once, before their replicas have necessarily applied the change
/// (they catch up with the leader instead of answering 404 or 403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_made_a_moment_ago_on_another_node_is_usable_at_once() {
    let root = tempfile::tempdir().unwrap();
    let nodes = start_cluster(root.path()).await;
    let [n1, n2, n3] = [&nodes[0], &nodes[1], &nodes[2]];
    let (_, owner) = account(n1, n1, "Owner", &["creator"]).await;
    let (_, viewer) = account(n1, n2, "Viewer", &["viewer"]).await;
    let (moderator_id, moderator) = account(n1, n3, "Moderator", &["viewer"]).await;

    // Each round makes fresh channels through node 1 and uses each one right away elsewhere.
    for round in 0..3 {
        let mut fresh = Vec::new();
        for what in ["post", "history", "socket", "moderate"] {
            let body = json!({"title": format!("{what} {round}")});
            let (status, channel) = call("POST", &n1.url("/api/channels"), Some(&owner), Some(body)).await;
            assert_eq!(status, 201, "{channel}");
            let id = channel["id"].as_str().unwrap().to_owned();
            if what == "moderate" {
                let patch = json!({"moderators": [moderator_id]});
                let url = n1.url(&format!("/api/channels/{id}"));
                let (status, patched) = call("PATCH", &url, Some(&owner), Some(patch)).await;
                assert_eq!(status, 200, "{patched}");
            }
            fresh.push(id);
        }
        let url = |n: &NodeProc, id: &str, rest: &str| n.url(&format!("/api/channels/{id}{rest}"));

        let text = json!({"text": format!("first in round {round}")});
        let (status, posted) = call("POST", &url(n2, &fresh[0], "/chat"), Some(&viewer), Some(text)).await;
        assert_eq!(status, 201, "round {round}: post through node 2: {posted}");

        let (status, page) = call("GET", &url(n3, &fresh[1], "/chat"), None, None).await;
        assert_eq!(status, 200, "round {round}: history through node 3: {page}");

        let ws_url = format!("ws://127.0.0.1:{}/api/channels/{}/chat/ws", n2.http_port, fresh[2]);
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .unwrap_or_else(|e| panic!("round {round}: socket on node 2 refused: {e}"));
        assert_eq!(next_json(&mut ws, "node 2").await["type"], "history");

        let (status, bans) = call("GET", &url(n3, &fresh[3], "/chat/bans"), Some(&moderator), None).await;
        assert_eq!(status, 200, "round {round}: the new moderator through node 3: {bans}");
        assert_eq!(bans, json!({"bans": []}));
    }
}
