//! Cross-site requests and DNS rebinding over real HTTP: writes and chat sockets from a foreign
//! `Origin` are refused, the node's own origin and `--allowed-origins` pass, and a loopback
//! request addressed to a foreign `Host` is not the development admin.

mod common;

use std::sync::Arc;

use common::{code, TestApi};
use control::same_origin::OriginPolicy;
use control::Mode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

const EVIL: &str = "http://evil.example";

async fn channel_count(api: &TestApi) -> usize {
    let (status, list) = api.get("/api/channels", None).await;
    assert_eq!(status, 200, "{list}");
    list.as_array().map_or_else(|| list["channels"].as_array().map_or(0, Vec::len), Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_a_foreign_origin_are_refused_and_change_nothing() {
    let api = TestApi::start().await;
    let own = format!("http://{}", api.addr);
    let (owner, token) = api.user("Owner", &["creator"]).await;
    let new_channel = json!({"ownerId": owner, "title": "Forged"});

    // The development admin (loopback, no token) from a page on another site: refused.
    let (status, body) =
        api.call_with("POST", "/api/channels", &[("origin", EVIL)], None, Some(new_channel.clone())).await;
    assert_eq!((status, code(&body)), (403, "cross_origin"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("--allowed-origins"), "{body}");
    // The same with the user's session, as a browser would attach it.
    let (status, body) =
        api.call_with("POST", "/api/channels", &[("origin", EVIL)], Some(&token), Some(new_channel.clone())).await;
    assert_eq!((status, code(&body)), (403, "cross_origin"), "{body}");
    // An opaque origin (`null`: sandboxed frames, some redirects) is foreign too.
    let (status, _) =
        api.call_with("POST", "/api/channels", &[("origin", "null")], None, Some(new_channel.clone())).await;
    assert_eq!(status, 403);
    assert_eq!(channel_count(&api).await, 0, "a refused write changed nothing");

    // The node's own pages pass, and so do clients that send no Origin (curl, the CLI).
    let (status, created) =
        api.call_with("POST", "/api/channels", &[("origin", &own)], None, Some(new_channel.clone())).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, _) = api.call_with("POST", "/api/channels", &[], None, Some(new_channel)).await;
    assert_eq!(status, 201);

    // The CORS-simple writes the issue names, and a delete, from the foreign page: refused.
    for (method, path) in [
        ("POST", format!("/api/channels/{id}/stream/start")),
        ("POST", format!("/api/channels/{id}/stream/stop")),
        ("POST", format!("/api/channels/{id}/stream-key/rotate")),
        ("DELETE", format!("/api/channels/{id}")),
    ] {
        let (status, body) = api.call_with(method, &path, &[("origin", EVIL)], None, None).await;
        assert_eq!((status, code(&body)), (403, "cross_origin"), "{method} {path}: {body}");
    }
    let (status, channel) = api.get(&format!("/api/channels/{id}"), None).await;
    assert_eq!((status, &channel["liveState"]), (200, &json!("offline")), "{channel}");
    // Reads are not writes: a foreign page may read what is public anyway.
    assert_eq!(api.call_with("GET", "/api/channels", &[("origin", EVIL)], None, None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_origins_may_write() {
    let api = TestApi::start_with(Mode::Development, |mut s| {
        s.origins = Arc::new(OriginPolicy::new(false, &["https://studio.example".to_owned()]).unwrap());
        s
    })
    .await;
    let (owner, _) = api.user("Owner", &["creator"]).await;
    let body = json!({"ownerId": owner, "title": "From the studio"});
    let (status, created) =
        api.call_with("POST", "/api/channels", &[("origin", "https://studio.example")], None, Some(body.clone())).await;
    assert_eq!(status, 201, "{created}");
    // Scheme and port are part of the origin.
    let (status, _) =
        api.call_with("POST", "/api/channels", &[("origin", "http://studio.example")], None, Some(body.clone())).await;
    assert_eq!(status, 403);
    let (status, _) =
        api.call_with("POST", "/api/channels", &[("origin", "https://studio.example:8443")], None, Some(body)).await;
    assert_eq!(status, 403);
}

/// DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 talks to the node
/// from loopback, but names its own host (and is same-origin with itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_admin_only_when_the_host_is_loopback() {
    let api = TestApi::start().await;
    let port = api.addr.port();
    let rebound = format!("evil.example:{port}");
    let rebound_origin = format!("http://evil.example:{port}");
    let user = json!({"displayName": "Rebound", "email": "rebound@example.com", "roles": ["admin"]});

    let (status, body) = api.call_with("POST", "/api/users", &[("host", &rebound)], None, Some(user.clone())).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");
    let headers = [("host", rebound.as_str()), ("origin", rebound_origin.as_str())];
    let (status, body) = api.call_with("POST", "/api/users", &headers, None, Some(user.clone())).await;
    assert_eq!(status, 401, "same-origin with itself, but still not the admin: {body}");
    let (_, who) = api.call_with("GET", "/api/auth/whoami", &[("host", &rebound)], None, None).await;
    assert_eq!(who["admin"], false, "{who}");
    let (status, _) = api.call_with("GET", "/api/users", &[("host", &rebound)], None, None).await;
    assert_eq!(status, 401);
    let (status, _) = api.get("/api/users", None).await;
    assert_eq!(status, 200, "nothing was created above, and the list is readable by the real admin");

    // Loopback names and addresses are local: the admin, as documented for curl.
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}")] {
        let (_, who) = api.call_with("GET", "/api/auth/whoami", &[("host", &host)], None, None).await;
        assert_eq!(who["admin"], true, "{host}: {who}");
    }
    let (status, body) = api.call_with("POST", "/api/users", &[("host", "localhost")], None, Some(user)).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_sockets_from_a_foreign_origin_are_refused() {
    let api = TestApi::start().await;
    let (owner, token) = api.user("Owner", &["creator"]).await;
    let (status, channel) = api.post("/api/channels", None, json!({"ownerId": owner, "title": "Talk"})).await;
    assert_eq!(status, 201, "{channel}");
    let url = format!("ws://{}/api/channels/{}/chat/ws", api.addr, channel["id"].as_str().unwrap());
    let open = |origin: String| {
        let mut request = url.clone().into_client_request().unwrap();
        request.headers_mut().insert("origin", origin.parse().unwrap());
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    match open(EVIL.to_owned()).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(code(&body), "cross_origin", "{body}");
        }
        other => panic!("expected a 403 refusal, got {:?}", other.map(|(_, r)| r.status())),
    }
    let (_, response) = open(format!("http://{}", api.addr)).await.expect("the node's own page may connect");
    assert_eq!(response.status().as_u16(), 101);
}
