//! Channels, stream keys, broadcasts, follows and the directory, over HTTP against a real catalog.

mod common;

use common::{code, field, TestApi};
use control::auth::token_hash;
use control::Mode;
use raft::Command;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough_works_in_dev_mode_without_a_token() {
    let api = TestApi::start().await;
    let (status, user) = api
        .post("/api/users", None, json!({"displayName":"River","email":"river@example.com","roles":["creator"]}))
        .await;
    assert_eq!(status, 201, "{user}");
    let owner = user["id"].as_str().unwrap();

    let (status, channel) = api
        .post(
            "/api/channels",
            None,
            json!({"ownerId": owner, "title": "River Rafting", "tags": ["outdoors", "travel"]}),
        )
        .await;
    assert_eq!(status, 201, "{channel}");
    let id = channel["id"].as_str().unwrap().to_owned();
    let key = channel["streamKey"].as_str().unwrap().to_owned();
    assert!(key.len() >= 32, "at least 128 bits of key: {key}");
    assert_eq!(channel["ownerId"], owner);
    assert_eq!(channel["tags"], json!(["outdoors", "travel"]));
    assert_eq!(channel["liveState"], "offline");
    assert!(channel.get("streamKeyHash").is_none());
    let by_key = api.catalog.read(|s| s.channel_by_stream_key_hash(&token_hash(&key)).map(|c| c.id.clone()));
    assert_eq!(by_key.as_deref(), Some(id.as_str()));
    let stored = api.catalog.read(|s| s.channel(&id).unwrap().stream_key_hash.clone());
    assert_ne!(stored, key, "only the hash is stored");

    let (status, session) =
        api.post(&format!("/api/channels/{id}/stream/start"), None, json!({"renditions":["1080p","720p"]})).await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["renditions"], json!(["1080p", "720p"]));
    assert_eq!(session["channelId"], id.as_str());

    let (status, got) = api.get(&format!("/api/channels/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(got["liveState"], "live");
    assert_eq!(got["currentSessionId"], session["id"]);
    assert_eq!(got["playbackUrl"], format!("/hls/{id}/master.m3u8"));
    assert_eq!((got["followers"].as_u64(), got["subscribers"].as_u64()), (Some(0), Some(0)));
    assert!(got.get("streamKey").is_none() && got.get("streamKeyHash").is_none(), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_owners_and_admins_manage_a_channel() {
    let api = TestApi::start_with(Mode::Production, |s| s).await;
    let (a, a_token) = api.user("Alice", &["creator"]).await;
    let (_b, b_token) = api.user("Bob", &["creator"]).await;
    let (_v, v_token) = api.user("Val", &["viewer"]).await;
    let (_admin, admin_token) = api.user("Root", &["admin"]).await;

    // Who may create: creators (for themselves) and admins; not viewers or anonymous callers.
    let body = json!({"title":"Alice live","tags":["Art"]});
    assert_eq!(api.post("/api/channels", None, body.clone()).await.0, 401);
    assert_eq!(api.post("/api/channels", Some(&v_token), body.clone()).await.0, 403);
    let (status, err) = api.post("/api/channels", Some(&b_token), json!({"ownerId": a, "title": "Not yours"})).await;
    assert_eq!(status, 403, "{err}");
    let (status, channel) = api.post("/api/channels", Some(&a_token), body).await;
    assert_eq!(status, 201, "{channel}");
    assert_eq!(channel["ownerId"], a.as_str(), "ownerId defaults to the caller");
    assert_eq!(channel["tags"], json!(["art"]));
    let id = channel["id"].as_str().unwrap().to_owned();

    // Bob can't touch Alice's channel.
    let path = format!("/api/channels/{id}");
    let (status, err) = api.call("PATCH", &path, Some(&b_token), Some(json!({"title":"Bob's now"}))).await;
    assert_eq!((status, code(&err)), (403, "forbidden"));
    assert_eq!(api.call("DELETE", &path, Some(&b_token), None).await.0, 403);
    assert_eq!(api.post(&format!("{path}/stream/start"), Some(&b_token), json!({})).await.0, 403);
    assert_eq!(api.post(&format!("{path}/stream/stop"), Some(&b_token), json!({})).await.0, 403);
    assert_eq!(api.call("POST", &format!("{path}/stream-key/rotate"), Some(&b_token), None).await.0, 403);
    assert_eq!(api.call("POST", &format!("{path}/stream-key/rotate"), None, None).await.0, 401);
    assert_eq!(api.catalog.read(|s| s.channel(&id).unwrap().title.clone()), "Alice live");

    // Alice and an admin can.
    let (status, patched) = api
        .call(
            "PATCH",
            &path,
            Some(&a_token),
            Some(json!({"title":"  Alice paints ","tags":["Art","ART","Painting"],"category":"Creative"})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["title"], "Alice paints");
    assert_eq!(patched["tags"], json!(["art", "painting"]));
    assert_eq!(patched["category"], "Creative");
    let (status, patched) = api.call("PATCH", &path, Some(&admin_token), Some(json!({"category":null}))).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["category"], Value::Null);
    assert_eq!(patched["title"], "Alice paints", "fields left out are kept");

    // Moderators must be existing users.
    let (status, err) =
        api.call("PATCH", &path, Some(&a_token), Some(json!({"moderators":[_b.clone(), "nobody"]}))).await;
    assert_eq!((status, field(&err)), (422, "moderators[1]"), "{err}");
    let (status, patched) = api.call("PATCH", &path, Some(&a_token), Some(json!({"moderators":[_b.clone()]}))).await;
    assert_eq!(status, 200);
    assert_eq!(patched["moderators"], json!([_b]));

    // Listing is public and filters by owner.
    let (_, mine) = api.post("/api/channels", Some(&b_token), json!({"title":"Bob's"})).await;
    let (status, list) = api.get(&format!("/api/channels?ownerId={a}"), None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id.as_str()]);
    assert!(list[0].get("streamKey").is_none() && list[0].get("streamKeyHash").is_none());
    let (_, all) = api.get("/api/channels", None).await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert!(all.as_array().unwrap().iter().any(|c| c["id"] == mine["id"]));

    // Delete: owner yes.
    assert_eq!(api.call("DELETE", &path, Some(&a_token), None).await.0, 204);
    assert_eq!(api.get(&path, None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_key_retires_the_old_one_at_once() {
    let api = TestApi::start_with(Mode::Production, |s| s).await;
    let (_a, a_token) = api.user("Alice", &["creator"]).await;
    let (_, channel) = api.post("/api/channels", Some(&a_token), json!({"title":"Keys"})).await;
    let id = channel["id"].as_str().unwrap().to_owned();
    let old_key = channel["streamKey"].as_str().unwrap().to_owned();

    let (status, rotated) =
        api.call("POST", &format!("/api/channels/{id}/stream-key/rotate"), Some(&a_token), None).await;
    assert_eq!(status, 200, "{rotated}");
    let new_key = rotated["streamKey"].as_str().unwrap().to_owned();
    assert_ne!(new_key, old_key);
    assert!(rotated.get("streamKeyHash").is_none());
    let lookup = |key: &str| {
        let hash = token_hash(key);
        api.catalog.read(move |s| s.channel_by_stream_key_hash(&hash).map(|c| c.id.clone()))
    };
    assert_eq!(lookup(&old_key), None, "old key must stop working immediately");
    assert_eq!(lookup(&new_key).as_deref(), Some(id.as_str()));
    let (_, got) = api.get(&format!("/api/channels/{id}"), None).await;
    assert!(got.get("streamKey").is_none(), "the key is shown only once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_start_stop_and_history() {
    let api = TestApi::start().await;
    let (owner, _) = api.user("River", &["creator"]).await;
    let (_, channel) = api.post("/api/channels", None, json!({"ownerId": owner, "title":"Live"})).await;
    let id = channel["id"].as_str().unwrap().to_owned();
    let start = format!("/api/channels/{id}/stream/start");
    let stop = format!("/api/channels/{id}/stream/stop");

    // Stopping what isn't live is a conflict.
    let (status, err) = api.call("POST", &stop, None, None).await;
    assert_eq!((status, code(&err)), (409, "not_live"), "{err}");

    // Bad renditions are named.
    let (status, err) = api.post(&start, None, json!({"renditions":["1080p","huge"]})).await;
    assert_eq!((status, field(&err)), (422, "renditions[1]"), "{err}");
    let (status, err) = api.post(&start, None, json!({"renditions":"720p"})).await;
    assert_eq!((status, field(&err)), (422, "renditions"), "{err}");

    // No body: the source rendition only.
    let (status, first) = api.call("POST", &start, None, None).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["renditions"], json!(["source"]));
    let (status, err) = api.post(&start, None, json!({"renditions":["720p"]})).await;
    assert_eq!((status, code(&err)), (409, "already_live"), "{err}");

    // A live channel can't be deleted.
    let (status, err) = api.call("DELETE", &format!("/api/channels/{id}"), None, None).await;
    assert_eq!((status, code(&err)), (409, "already_live"), "{err}");

    let (status, ended) = api.post(&stop, None, json!({"peakConcurrent": 42})).await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["peakConcurrent"], 42);
    assert!(ended["endedAt"].as_i64().is_some());

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (status, second) = api.post(&start, None, json!({"renditions":["720p","480p"]})).await;
    assert_eq!(status, 201);
    let (status, _) = api.call("POST", &stop, None, None).await;
    assert_eq!(status, 200);

    let (status, sessions) = api.get(&format!("/api/channels/{id}/sessions"), None).await;
    assert_eq!(status, 200);
    let sessions = sessions.as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["id"], second["id"], "newest first");
    assert_eq!(sessions[1]["id"], first["id"]);
    assert_eq!(sessions[1]["peakConcurrent"], 42);
    assert_eq!(sessions[0]["peakConcurrent"], 0);
    assert_eq!(sessions[0]["renditions"], json!(["720p", "480p"]));
    assert_eq!(api.get("/api/channels/nope/sessions", None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_validation_names_the_field() {
    let api = TestApi::start().await;
    let (owner, _) = api.user("River", &["creator"]).await;
    let cases = [
        (json!({"ownerId": owner, "title": "  "}), "title"),
        (json!({"ownerId": owner, "title": "x".repeat(141)}), "title"),
        (json!({"ownerId": owner, "title": "ok", "tags": ["fine", ""]}), "tags[1]"),
        (json!({"ownerId": owner, "title": "ok", "tags": ["y".repeat(33)]}), "tags[0]"),
        (
            json!({"ownerId": owner, "title": "ok", "tags": (0..11).map(|i| format!("t{i}")).collect::<Vec<_>>()}),
            "tags",
        ),
        (json!({"ownerId": "ghost", "title": "ok"}), "ownerId"),
        (json!({"title": "ok"}), "ownerId"),
        (json!({"ownerId": owner, "title": "ok", "streamKeyHash": "x"}), "streamKeyHash"),
    ];
    for (body, expected) in cases {
        let (status, err) = api.post("/api/channels", None, body.clone()).await;
        assert_eq!((status, field(&err)), (422, expected), "{body} -> {err}");
    }
    assert_eq!(api.catalog.read(|s| s.channels().count()), 0);
    let (status, _) = api.get("/api/channels/missing", None).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_and_subscriptions_count() {
    let api = TestApi::start_with(Mode::Production, |s| s).await;
    let (_owner, owner_token) = api.user("River", &["creator"]).await;
    let (_u1, t1) = api.user("Ann", &["viewer"]).await;
    let (_u2, t2) = api.user("Ben", &["viewer"]).await;
    let (_, channel) = api.post("/api/channels", Some(&owner_token), json!({"title":"Fans"})).await;
    let id = channel["id"].as_str().unwrap().to_owned();
    let follow = format!("/api/channels/{id}/follow");
    let subscribe = format!("/api/channels/{id}/subscribe");

    assert_eq!(api.call("POST", &follow, None, None).await.0, 401);
    let (status, r) = api.call("POST", &follow, Some(&t1), None).await;
    assert_eq!((status, r.clone()), (200, json!({"following": true, "followers": 1})));
    let (_, r) = api.call("POST", &follow, Some(&t1), None).await;
    assert_eq!(r, json!({"following": true, "followers": 1}), "following twice counts once");
    let (_, r) = api.call("POST", &follow, Some(&t2), None).await;
    assert_eq!(r, json!({"following": true, "followers": 2}));
    let (_, r) = api.call("DELETE", &follow, Some(&t1), None).await;
    assert_eq!(r, json!({"following": false, "followers": 1}));

    let (_, r) = api.call("POST", &subscribe, Some(&t2), None).await;
    assert_eq!(r, json!({"subscribed": true, "subscribers": 1}));
    let (_, got) = api.get(&format!("/api/channels/{id}"), None).await;
    assert_eq!((got["followers"].as_u64(), got["subscribers"].as_u64()), (Some(1), Some(1)));
    let (_, r) = api.call("DELETE", &subscribe, Some(&t2), None).await;
    assert_eq!(r, json!({"subscribed": false, "subscribers": 0}));

    assert_eq!(api.call("POST", "/api/channels/nope/follow", Some(&t1), None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_orders_live_first_searches_and_pages() {
    let api = TestApi::start().await;
    let (owner, _) = api.user("River", &["creator"]).await;
    let mut fans = Vec::new();
    for name in ["F1", "F2", "F3"] {
        fans.push(api.user(name, &["viewer"]).await.0);
    }
    let mut ids = std::collections::HashMap::new();
    for (title, tags, category) in [
        ("River Rafting", json!(["Outdoors", "water"]), Value::Null),
        ("Lake Fishing", json!(["outdoors"]), json!("Sports")),
        ("Mountain Biking", json!(["bikes"]), json!("Sports")),
        ("Cooking Show", json!(["kitchen"]), json!("Food")),
    ] {
        let (status, c) = api
            .post("/api/channels", None, json!({"ownerId": owner, "title": title, "tags": tags, "category": category}))
            .await;
        assert_eq!(status, 201, "{c}");
        ids.insert(title, c["id"].as_str().unwrap().to_owned());
    }
    let follow = |title: &str, n: usize| {
        let channel = ids[title].clone();
        let fans = fans[..n].to_vec();
        let catalog = api.catalog.clone();
        async move {
            for fan in fans {
                catalog.propose(Command::Follow { channel_id: channel.clone(), user_id: fan, at: 1 }).await.unwrap();
            }
        }
    };
    follow("Lake Fishing", 3).await;
    follow("Mountain Biking", 1).await;
    follow("Cooking Show", 1).await;
    for live in ["River Rafting", "Cooking Show"] {
        let (status, _) = api.call("POST", &format!("/api/channels/{}/stream/start", ids[live]), None, None).await;
        assert_eq!(status, 201);
    }

    let titles = |page: &Value| -> Vec<String> {
        page["items"].as_array().unwrap().iter().map(|i| i["title"].as_str().unwrap().to_owned()).collect()
    };
    let (status, page) = api.get("/api/directory", None).await;
    assert_eq!(status, 200, "{page}");
    // Live first (Cooking has a follower, River none), then offline by followers.
    assert_eq!(titles(&page), ["Cooking Show", "River Rafting", "Lake Fishing", "Mountain Biking"]);
    assert_eq!(page["nextCursor"], Value::Null);
    let first = &page["items"][0];
    assert_eq!(first["liveState"], "live");
    assert_eq!(first["followers"], 1);
    assert_eq!(first["ownerId"], owner.as_str());
    assert_eq!(first["ownerDisplayName"], "River");
    assert_eq!(first["category"], "Food");
    assert_eq!(first["playbackUrl"], format!("/hls/{}/master.m3u8", ids["Cooking Show"]));

    // Text search over title, tags and category, case-insensitively.
    assert_eq!(titles(&api.get("/api/directory?q=OUTDOORS", None).await.1), ["River Rafting", "Lake Fishing"]);
    assert_eq!(titles(&api.get("/api/directory?q=river", None).await.1), ["River Rafting"]);
    assert_eq!(titles(&api.get("/api/directory?q=sports", None).await.1), ["Lake Fishing", "Mountain Biking"]);
    assert_eq!(titles(&api.get("/api/directory?q=lake%20outdoors", None).await.1), ["Lake Fishing"]);
    assert!(titles(&api.get("/api/directory?q=opera", None).await.1).is_empty());
    assert_eq!(titles(&api.get("/api/directory?tag=Water", None).await.1), ["River Rafting"]);
    assert_eq!(titles(&api.get("/api/directory?category=food", None).await.1), ["Cooking Show"]);

    // Cursor pagination walks the same order without repeats.
    let (_, p1) = api.get("/api/directory?limit=3", None).await;
    assert_eq!(titles(&p1), ["Cooking Show", "River Rafting", "Lake Fishing"]);
    let cursor = p1["nextCursor"].as_str().expect("more pages").to_owned();
    let (_, p2) = api.get(&format!("/api/directory?limit=3&cursor={cursor}"), None).await;
    assert_eq!(titles(&p2), ["Mountain Biking"]);
    assert_eq!(p2["nextCursor"], Value::Null);
    let (_, p1) = api.get("/api/directory?limit=2", None).await;
    let (_, p2) = api.get(&format!("/api/directory?limit=2&cursor={}", p1["nextCursor"].as_str().unwrap()), None).await;
    assert_eq!(titles(&p2), ["Lake Fishing", "Mountain Biking"]);

    let (status, err) = api.get("/api/directory?cursor=garbage", None).await;
    assert_eq!((status, field(&err)), (422, "cursor"), "{err}");
    let (status, err) = api.get("/api/directory?limit=1000", None).await;
    assert_eq!((status, field(&err)), (422, "limit"), "{err}");
}
