//! Streamer profiles over HTTP: who may edit, what is validated, and what a visitor sees.

mod common;

use common::{field, TestApi};
use control::Mode;
use serde_json::{json, Value};

const ETH: &str = "0x32Be343B94f860124dC4fEe278FDCBD38C102D88";
const BTC: &str = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_round_trip_with_friends_channels_and_donations() {
    let api = TestApi::start_with(Mode::Production, |s| s).await;
    let (river, token) = api.user("River", &["creator"]).await;
    let (f1, _) = api.user("Friend One", &["viewer"]).await;
    let (f2, _) = api.user("Friend Two", &["viewer"]).await;
    let (_, channel) = api.post("/api/channels", Some(&token), json!({"title":"River Rafting"})).await;
    let channel_id = channel["id"].as_str().unwrap().to_owned();
    api.call("POST", &format!("/api/channels/{channel_id}/stream/start"), Some(&token), None).await;

    // Before saving anything: an empty profile that still shows the user and their channels.
    let (status, empty) = api.get(&format!("/api/profiles/{river}"), None).await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["displayName"], "River");
    assert_eq!(empty["bio"], "");
    assert_eq!(empty["updatedAt"], Value::Null);

    let body = json!({
        "bio": "Streaming straight from the river",
        "avatarUrl": "https://cdn.example.com/avatar.png",
        "bannerUrl": "https://cdn.example.com/banner.png",
        "featuredChannelId": channel_id,
        "topFriends": [f1, f2],
        "donationAddresses": [
            {"currency": "eth", "address": ETH, "note": "main wallet"},
            {"currency": " btc", "address": BTC}
        ]
    });
    let (status, saved) = api.call("PUT", &format!("/api/profiles/{river}"), Some(&token), Some(body)).await;
    assert_eq!(status, 200, "{saved}");

    let (status, got) = api.get(&format!("/api/profiles/{river}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(got, saved, "PUT answers with what GET shows");
    assert_eq!(got["userId"], river.as_str());
    assert_eq!(got["displayName"], "River");
    assert_eq!(got["bio"], "Streaming straight from the river");
    assert_eq!(got["featuredChannelId"], channel_id.as_str());
    assert_eq!(
        got["topFriends"],
        json!([{"id": f1, "displayName": "Friend One"}, {"id": f2, "displayName": "Friend Two"}])
    );
    assert_eq!(got["donationAddresses"][0], json!({"currency":"ETH","address":ETH,"note":"main wallet"}));
    assert_eq!(got["donationAddresses"][1]["currency"], "BTC");
    let channels = got["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0]["id"], channel_id.as_str());
    assert_eq!(channels[0]["liveState"], "live");
    assert!(channels[0].get("streamKey").is_none() && channels[0].get("streamKeyHash").is_none());
    assert_eq!(got["live"], true);
    assert!(got["updatedAt"].as_i64().is_some());

    // The record in the catalog is normalized the same way.
    let stored = api.catalog.read(|s| s.profile(&river).cloned()).unwrap();
    assert_eq!(stored.donation_addresses[1].currency, "BTC");
    assert_eq!(stored.top_friends, [f1.clone(), f2.clone()]);

    assert_eq!(api.get("/api/profiles/nobody", None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_user_or_an_admin_edits_a_profile() {
    let api = TestApi::start_with(Mode::Production, |s| s).await;
    let (river, river_token) = api.user("River", &["creator"]).await;
    let (_other, other_token) = api.user("Other", &["creator"]).await;
    let (_admin, admin_token) = api.user("Root", &["admin"]).await;
    let path = format!("/api/profiles/{river}");
    let body = json!({"bio": "hi"});
    assert_eq!(api.call("PUT", &path, None, Some(body.clone())).await.0, 401);
    assert_eq!(api.call("PUT", &path, Some(&other_token), Some(body.clone())).await.0, 403);
    assert!(api.catalog.read(|s| s.profile(&river).is_none()));
    assert_eq!(api.call("PUT", &path, Some(&river_token), Some(body)).await.0, 200);
    let (status, r) = api.call("PUT", &path, Some(&admin_token), Some(json!({"bio": "set by admin"}))).await;
    assert_eq!((status, r["bio"].as_str()), (200, Some("set by admin")));
    assert_eq!(api.call("PUT", "/api/profiles/ghost", Some(&admin_token), Some(json!({}))).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_name_the_field() {
    let api = TestApi::start().await;
    let (river, _) = api.user("River", &["creator"]).await;
    let (other, _) = api.user("Other", &["creator"]).await;
    let mut friends = Vec::new();
    for i in 0..9 {
        friends.push(api.user(&format!("F{i}"), &["viewer"]).await.0);
    }
    let (_, own) = api.post("/api/channels", None, json!({"ownerId": river, "title": "Mine"})).await;
    let (_, theirs) = api.post("/api/channels", None, json!({"ownerId": other, "title": "Theirs"})).await;
    let xmr = format!("4{}", "A".repeat(94));

    let cases = [
        (json!({"bio": "x".repeat(2001)}), "bio"),
        (json!({"avatarUrl": "ftp://example.com/a.png"}), "avatarUrl"),
        (json!({"bannerUrl": format!("https://example.com/{}", "b".repeat(2040))}), "bannerUrl"),
        (json!({"featuredChannelId": theirs["id"]}), "featuredChannelId"),
        (json!({"featuredChannelId": "no-such-channel"}), "featuredChannelId"),
        (json!({"topFriends": friends}), "topFriends"),
        (json!({"topFriends": [friends[0], friends[0]]}), "topFriends"),
        (json!({"topFriends": [river]}), "topFriends"),
        (json!({"topFriends": ["ghost"]}), "topFriends"),
        (json!({"donationAddresses": [{"currency": "eth", "address": "0x123"}]}), "donationAddresses[0].address"),
        (
            json!({"donationAddresses": [{"currency": "eth", "address": ETH}, {"currency": "btc", "address": "bc1xyz"}]}),
            "donationAddresses[1].address",
        ),
        (json!({"donationAddresses": [{"currency": "BTC", "address": ETH}]}), "donationAddresses[0].address"),
        (json!({"donationAddresses": [{"currency": "xmr", "address": &xmr[..90]}]}), "donationAddresses[0].address"),
        (
            json!({"donationAddresses": [{"currency": "b!", "address": "a".repeat(20)}]}),
            "donationAddresses[0].currency",
        ),
        (
            json!({"donationAddresses": [{"currency": "sol", "address": "has spaces in it ok"}]}),
            "donationAddresses[0].address",
        ),
        (
            json!({"donationAddresses": [{"currency": "eth", "address": ETH, "note": "n".repeat(201)}]}),
            "donationAddresses[0].note",
        ),
        (json!({"donationAddresses": [{"currency": "eth"}]}), "donationAddresses[0].address"),
        (json!({"nickname": "unknown field"}), "nickname"),
    ];
    let path = format!("/api/profiles/{river}");
    for (body, expected) in cases {
        let (status, err) = api.call("PUT", &path, None, Some(body.clone())).await;
        assert_eq!((status, field(&err)), (422, expected), "{body} -> {err}");
    }
    assert!(api.catalog.read(|s| s.profile(&river).is_none()), "nothing stored by refused requests");

    // The limits themselves are accepted: eight friends, own featured channel, a valid XMR address.
    let body = json!({
        "topFriends": friends[..8],
        "featuredChannelId": own["id"],
        "donationAddresses": [{"currency": "xmr", "address": xmr}, {"currency": "Sol", "address": "7EcDhSYGxXyscszYEp35KHN8vvw3svAuLKTzXwCFLtV"}]
    });
    let (status, saved) = api.call("PUT", &path, None, Some(body)).await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["topFriends"].as_array().unwrap().len(), 8);
    assert_eq!(saved["donationAddresses"][1]["currency"], "SOL");
}
