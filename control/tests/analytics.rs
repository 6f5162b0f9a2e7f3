//! Analytics overview and the catalog export, over HTTP against a real catalog with injected
//! viewer samples and chat posts.

mod common;

use common::TestApi;

use control::auth::token_hash;
use control::Mode;
use raft::{now_millis, ChatMessage, Command, StreamSession, ViewerSample};
use serde_json::{json, Value};

const SECRET_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$SECRET-HASH-MARKER";

/// Users here carry a recognisable hash so that tests can prove exports never leak it.
async fn user(api: &TestApi, name: &str, roles: &[&str]) -> (String, String) {
    let id = format!("{}-{}", name.to_lowercase().replace(' ', "-"), hex::encode(rand::random::<[u8; 4]>()));
    api.user_with(&id, name, roles, Some(SECRET_HASH)).await
}

const MIN: i64 = 60_000;

async fn sample(api: &TestApi, channel: &str, node: u64, at: i64, viewers: u64) {
    let sample = ViewerSample { channel_id: channel.to_owned(), node_id: node, viewers, at, watched_seconds: vec![] };
    api.catalog.propose(Command::ReportViewers(sample)).await.unwrap();
}

async fn chat(api: &TestApi, channel: &str, user: &str, at: i64, text: &str) {
    let message = ChatMessage {
        id: hex::encode(rand::random::<[u8; 8]>()),
        channel_id: channel.to_owned(),
        user_id: user.to_owned(),
        text: text.to_owned(),
        sent_at: at,
        seq: 0,
    };
    api.catalog.propose(Command::PostChat(message)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_from_injected_samples_and_chat() {
    let api = TestApi::start().await;
    let (owner, _) = user(&api, "River", &["creator"]).await;
    let (fan1, _) = user(&api, "Fan1", &["viewer"]).await;
    let (fan2, _) = user(&api, "Fan2", &["viewer"]).await;
    let (_, a) = api.post("/api/channels", None, json!({"ownerId": owner, "title": "Live Now"})).await;
    let (_, b) = api.post("/api/channels", None, json!({"ownerId": owner, "title": "Earlier"})).await;
    let (a, b) = (a["id"].as_str().unwrap().to_owned(), b["id"].as_str().unwrap().to_owned());

    // Channel A is live with 7 + 5 viewers on two nodes right now.
    assert_eq!(api.call("POST", &format!("/api/channels/{a}/stream/start"), None, None).await.0, 201);
    let now = now_millis();
    sample(&api, &a, 1, now - 70_000, 99).await; // node 1's older sample, superseded
    sample(&api, &a, 1, now - 5_000, 7).await;
    sample(&api, &a, 2, now - 10_000, 5).await;
    for fan in [&fan1, &fan2] {
        api.catalog.propose(Command::Follow { channel_id: a.clone(), user_id: fan.clone(), at: now }).await.unwrap();
    }

    // Channel B broadcast half an hour ago for ten minutes to 10 viewers: 100 viewer-minutes.
    let start = now - 30 * MIN;
    let session = StreamSession {
        id: "past".into(),
        channel_id: b.clone(),
        started_at: start,
        ended_at: None,
        renditions: vec!["source".into()],
        peak_concurrent: 0,
        ingest_node: None,
    };
    api.catalog.propose(Command::StartSession(session)).await.unwrap();
    for k in 0..10 {
        sample(&api, &b, 1, start + k * MIN, 10).await;
    }
    let end = Command::EndSession { channel_id: b.clone(), ended_at: start + 10 * MIN, peak_concurrent: None };
    api.catalog.propose(end).await.unwrap();

    // Chat: three lines on A today, one on B today, one on B yesterday.
    for text in ["one", "two", "three"] {
        chat(&api, &a, &fan1, now, text).await;
    }
    chat(&api, &b, &fan2, now, "today").await;
    chat(&api, &b, &fan2, now - 86_400_000, "yesterday").await;

    let (status, o) = api.get("/api/analytics/overview", None).await;
    assert_eq!(status, 200, "{o}");
    let summary = &o["summary"];
    assert_eq!(summary["liveViewers"], 12);
    assert_eq!(summary["streamsLive"], 1);
    assert_eq!(summary["chatMessages"], 4);
    // B's 100 viewer-minutes, plus A's one older sample (99 viewers counting 60 s: 99 minutes)
    // and its two current samples, which count from when they were taken until now (a few s).
    let watch = summary["watchTimeMinutes"].as_f64().unwrap();
    let current = (7.0 * 5.0 + 5.0 * 10.0) / 60.0;
    assert!((100.0 + 99.0 + current - 0.01..=100.0 + 99.0 + current + 1.5).contains(&watch), "{watch}");

    let per = o["perChannel"].as_array().unwrap();
    assert_eq!(per.len(), 2);
    assert_eq!(per[0]["channelId"], a.as_str(), "busiest first");
    assert_eq!(per[0]["title"], "Live Now");
    assert_eq!(per[0]["liveViewers"], 12);
    assert_eq!(per[0]["followers"], 2);
    assert_eq!(per[0]["chatMessages"], 3);
    assert_eq!(per[0]["avgWatchMinutes"], 0.0, "no ended session yet");
    assert_eq!(per[1]["channelId"], b.as_str());
    assert_eq!(per[1]["liveViewers"], 0);
    assert_eq!(per[1]["chatMessages"], 1);
    // 100 viewer-minutes over a peak of 10 concurrent viewers.
    assert_eq!(api.catalog.read(|s| s.session("past").unwrap().peak_concurrent), 10);
    assert_eq!(per[1]["avgWatchMinutes"], 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_and_export_are_for_admins() {
    let api = TestApi::start_with(Mode::Production, |s| s).await;
    let (_c, creator) = user(&api, "Creator", &["creator"]).await;
    let (_a, admin) = user(&api, "Admin", &["admin"]).await;
    for path in ["/api/analytics/overview", "/api/export"] {
        assert_eq!(api.get(path, None).await.0, 401, "{path}");
        assert_eq!(api.get(path, Some(&creator)).await.0, 403, "{path}");
        assert_eq!(api.get(path, Some(&admin)).await.0, 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_has_the_catalog_without_secrets() {
    let api = TestApi::start().await;
    let (owner, owner_token) = user(&api, "River", &["creator"]).await;
    let (fan, _) = user(&api, "Fan", &["viewer"]).await;
    let (_, channel) =
        api.post("/api/channels", None, json!({"ownerId": owner, "title": "Export me", "tags": ["x"]})).await;
    let id = channel["id"].as_str().unwrap().to_owned();
    let stream_key = channel["streamKey"].as_str().unwrap().to_owned();
    let key_hash = api.catalog.read(|s| s.channel(&id).unwrap().stream_key_hash.clone());
    api.call("POST", &format!("/api/channels/{id}/stream/start"), None, None).await;
    api.post(&format!("/api/channels/{id}/stream/stop"), None, json!({"peakConcurrent": 3})).await;
    api.catalog.propose(Command::Follow { channel_id: id.clone(), user_id: fan.clone(), at: 1 }).await.unwrap();
    chat(&api, &id, &fan, now_millis(), "hello export").await;
    let (status, _) =
        api.call("PUT", &format!("/api/profiles/{owner}"), None, Some(json!({"bio":"exported bio"}))).await;
    assert_eq!(status, 200);

    let before = now_millis();
    let resp = api.client.get(api.url("/api/export")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let disposition = resp.headers().get("content-disposition").unwrap().to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    let text = resp.text().await.unwrap();
    for secret in [key_hash.as_str(), stream_key.as_str(), token_hash(&owner_token).as_str(), "SECRET-HASH-MARKER"] {
        assert!(!text.contains(secret), "export leaks {secret}");
    }
    for key in ["passwordHash", "streamKeyHash", "streamKey\"", "tokenHash"] {
        assert!(!text.contains(key), "export has {key}");
    }
    let export: Value = serde_json::from_str(&text).unwrap();
    assert!(export["exportedAt"].as_i64().unwrap() >= before);
    let users = export["users"].as_array().unwrap();
    assert_eq!(users.len(), 2);
    assert!(users.iter().all(|u| u["hasPassword"] == true && u["email"].is_string()));
    assert_eq!(export["channels"][0]["id"], id.as_str());
    assert_eq!(export["channels"][0]["title"], "Export me");
    assert_eq!(export["sessions"][0]["peakConcurrent"], 3);
    assert_eq!(export["chat"][&id][0]["text"], "hello export");
    assert_eq!(export["profiles"][0]["bio"], "exported bio");
    assert_eq!(export["follows"][&id], json!({"followers": 1, "subscribers": 0}));
    assert!(export["nodes"].is_array());
}
