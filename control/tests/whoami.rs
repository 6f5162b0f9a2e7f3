//! `GET /api/auth/whoami`: always 200, telling anonymous callers, the development admin and
//! signed-in users apart; a stale session cookie answers as anonymous and is cleared.

mod common;

use common::TestApi;
use control::Mode;
use serde_json::json;

#[tokio::test]
async fn tells_anonymous_dev_admin_and_users_apart() {
    // Development mode, loopback, no token: the development admin, without a user record.
    let dev = TestApi::start().await;
    let (status, body) = dev.get("/api/auth/whoami", None).await;
    assert_eq!((status, body), (200, json!({"user": null, "admin": true})));

    let (id, token) = dev.user_with("u1", "Viewer One", &["viewer"], None).await;
    let (status, body) = dev.get("/api/auth/whoami", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], id.as_str());
    assert_eq!(body["user"]["displayName"], "Viewer One");
    assert_eq!(body["admin"], false);
    assert!(body["user"].get("passwordHash").is_none(), "{body}");

    let (_, admin_token) = dev.user_with("a1", "Admin", &["admin"], None).await;
    let (_, body) = dev.get("/api/auth/whoami", Some(&admin_token)).await;
    assert_eq!(body["admin"], true);

    // Production: no token is anonymous, with a 200 rather than a 401.
    let prod = TestApi::start_with(Mode::Production, |s| s).await;
    let (status, body) = prod.get("/api/auth/whoami", None).await;
    assert_eq!((status, body), (200, json!({"user": null, "admin": false})));
}

#[tokio::test]
async fn a_stale_session_cookie_is_anonymous_and_cleared() {
    let api = TestApi::start_with(Mode::Production, |s| s).await;
    let resp = api
        .client
        .get(api.url("/api/auth/whoami"))
        .header("cookie", "bitriver_session=not-a-valid-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers().get("set-cookie").expect("the cookie is cleared").to_str().unwrap().to_owned();
    assert!(cookie.starts_with("bitriver_session=;") && cookie.contains("Max-Age=0"), "{cookie}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"user": null, "admin": false}));

    // Tokens in the query string stay refused, as everywhere else.
    let (status, body) = api.get("/api/auth/whoami?token=abc", None).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn relation_tells_follows_subscriptions_and_moderation() {
    let api = TestApi::start_with(Mode::Production, |s| s).await;
    let (owner, owner_token) = api.user_with("owner1", "Owner", &["creator"], None).await;
    let (_, fan_token) = api.user_with("fan1", "Fan", &["viewer"], None).await;
    let (status, channel) =
        api.post("/api/channels", Some(&owner_token), json!({"title": "Relations", "ownerId": owner})).await;
    assert_eq!(status, 201, "{channel}");
    let path = format!("/api/channels/{}/relation", channel["id"].as_str().unwrap());
    let none = json!({"following": false, "subscribed": false, "canModerate": false});

    assert_eq!(api.get(&path, None).await, (200, none.clone()), "anonymous");
    assert_eq!(api.get(&path, Some(&fan_token)).await, (200, none.clone()));
    let (_, owner_view) = api.get(&path, Some(&owner_token)).await;
    assert_eq!(owner_view["canModerate"], true);

    let follow = format!("/api/channels/{}/follow", channel["id"].as_str().unwrap());
    assert_eq!(api.post(&follow, Some(&fan_token), json!({})).await.0, 200);
    let (_, fan_view) = api.get(&path, Some(&fan_token)).await;
    assert_eq!(fan_view, json!({"following": true, "subscribed": false, "canModerate": false}));
    let subscribe = format!("/api/channels/{}/subscribe", channel["id"].as_str().unwrap());
    assert_eq!(api.post(&subscribe, Some(&fan_token), json!({})).await.0, 200);
    assert_eq!(api.get(&path, Some(&fan_token)).await.1["subscribed"], true);

    let (status, body) = api.get("/api/channels/nope/relation", None).await;
    assert_eq!(status, 404, "{body}");
}
