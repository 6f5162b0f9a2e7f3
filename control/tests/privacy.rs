//! A user's own data: the export holds everything stored about them; after they delete their
//! account, none of their personal fields is readable anywhere in the API or in an admin's export.

mod common;

use common::TestApi;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_holds_everything_and_deletion_leaves_nothing_personal() {
    let api = TestApi::start_with(control::Mode::Production, |s| s).await;
    let (_, admin_t) = api.user_with("admin", "Admin", &["admin"], None).await;
    let (bob, bob_t) = api.user_with("bob-owner", "Bob Streamer", &["creator"], None).await;
    let (alice, alice_t) = api.user_with("alice-7f3a", "Alice Quietly", &["creator"], None).await;
    let t = |token: &str| Some(token.to_owned());
    let (status, c1) = api.post("/api/channels", t(&bob_t).as_deref(), json!({"title": "Bob's"})).await;
    assert_eq!(status, 201, "{c1}");
    let c1 = c1["id"].as_str().unwrap().to_owned();
    let (status, c2) = api.post("/api/channels", t(&alice_t).as_deref(), json!({"title": "Alice's corner"})).await;
    assert_eq!(status, 201, "{c2}");
    let c2 = c2["id"].as_str().unwrap().to_owned();

    // What Alice leaves behind: a profile, a follow, a subscription, chat lines, a report.
    let profile = json!({"bio": "I knit on stream"});
    let (status, answer) = api.call("PUT", &format!("/api/profiles/{alice}"), Some(&alice_t), Some(profile)).await;
    assert_eq!(status, 200, "{answer}");
    for path in ["follow", "subscribe"] {
        let (status, answer) = api.post(&format!("/api/channels/{c1}/{path}"), Some(&alice_t), json!({})).await;
        assert!(status < 300, "{path}: {answer}");
    }
    let line = "hello from alice, my number is 555-0101";
    let (status, message) = api.post(&format!("/api/channels/{c1}/chat"), Some(&alice_t), json!({"text": line})).await;
    assert_eq!(status, 201, "{message}");
    let report = json!({"targetType": "channel", "targetId": c1, "reason": "loud music"});
    let (status, report) = api.post("/api/reports", Some(&alice_t), report).await;
    assert_eq!(status, 201, "{report}");

    // The export holds it all, and no secret.
    let resp = api.client.get(api.url("/api/me/export")).bearer_auth(&alice_t).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-disposition"].to_str().unwrap().starts_with("attachment"));
    let mine: Value = resp.json().await.unwrap();
    assert_eq!(mine["user"]["email"], "alice-7f3a@example.com");
    assert_eq!(mine["profile"]["bio"], "I knit on stream");
    assert_eq!(mine["follows"][0]["channelId"], json!(c1));
    assert_eq!(mine["subscriptions"][0]["channelId"], json!(c1));
    assert_eq!(mine["channels"][0]["id"], json!(c2));
    assert_eq!(mine["chatMessages"][0]["text"], line);
    assert_eq!(mine["reportsFiled"][0]["reason"], "loud music");
    assert_eq!(mine["loginSessions"].as_array().unwrap().len(), 1);
    let text = mine.to_string();
    assert!(!text.contains("tokenHash") && !text.contains("passwordHash") && !text.contains("streamKey"), "{text}");
    assert_eq!(api.get("/api/me/export", None).await.0, 401);

    // Bad input changes nothing.
    assert_eq!(api.call("DELETE", "/api/me?chat=shred", Some(&alice_t), None).await.0, 422);
    assert_eq!(api.get("/api/me/export", Some(&alice_t)).await.0, 200, "still there");

    assert_eq!(api.call("DELETE", "/api/me", Some(&alice_t), None).await.0, 204);
    assert_eq!(api.get("/api/me/export", Some(&alice_t)).await.0, 401, "the session ended with the account");

    // Nothing personal is readable anywhere: not in an admin's export, not in the chat, the
    // reports, the profiles, the users, the channels.
    let personal = [alice.as_str(), "alice-7f3a@example.com", "Alice Quietly", "I knit on stream", "Alice's corner"];
    let mut seen = Vec::new();
    for path in [
        "/api/export".to_owned(),
        format!("/api/channels/{c1}/chat?limit=100"),
        "/api/reports".to_owned(),
        "/api/users".to_owned(),
        "/api/channels".to_owned(),
        format!("/api/channels/{c1}"),
    ] {
        let (_, body) = api.get(&path, Some(&admin_t)).await;
        let body = body.to_string();
        for field in personal {
            if body.contains(field) {
                seen.push(format!("{field} in {path}: {body}"));
            }
        }
    }
    assert!(seen.is_empty(), "{seen:#?}");
    assert_eq!(api.get(&format!("/api/profiles/{alice}"), Some(&admin_t)).await.0, 404);
    assert_eq!(api.get(&format!("/api/channels/{c2}"), Some(&admin_t)).await.0, 404, "her channel went with her");
    // Her chat line stays (the default), by "Deleted user"; the report stays, by nobody.
    let (_, chat) = api.get(&format!("/api/channels/{c1}/chat?limit=100"), Some(&bob_t)).await;
    let kept = chat["messages"].as_array().unwrap().iter().find(|m| m["text"] == line).expect("the line stays");
    assert_eq!(kept["userDisplayName"], "Deleted user");
    let (_, reports) = api.get("/api/reports", Some(&admin_t)).await;
    assert_eq!(reports["reports"][0]["reporterId"], "deleted-user");
    let _ = bob;
}
