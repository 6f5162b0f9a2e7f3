//! Legal pages and the takedown workflow over the API: a notice hides the channel at once, its
//! owner sees it and counters once, an admin restores it; every step is in the exported history.

mod common;

use common::TestApi;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notice_hides_counter_restore_and_the_trail_exports() {
    let api = TestApi::start_with(control::Mode::Production, |s| s).await;
    let (_, admin) = api.user_with("admin", "Admin", &["admin"], None).await;
    let (_, bob) = api.user_with("bob", "Bob", &["creator"], None).await;
    let (_, eve) = api.user_with("eve", "Eve", &["viewer"], None).await;
    let (status, channel) = api.post("/api/channels", Some(&bob), json!({"title": "Covers"})).await;
    assert_eq!(status, 201);
    let c = channel["id"].as_str().unwrap().to_owned();

    // Legal pages: public to read, admins write, three names only.
    assert_eq!(api.get("/api/pages/terms", None).await.1["text"], "");
    assert_eq!(api.call("PUT", "/api/pages/terms", Some(&bob), Some(json!({"text": "x"}))).await.0, 403);
    assert_eq!(api.call("PUT", "/api/pages/cookies", Some(&admin), Some(json!({"text": "x"}))).await.0, 404);
    assert_eq!(api.call("PUT", "/api/pages/terms", Some(&admin), Some(json!({"text": "  "}))).await.0, 422);
    let (status, _) =
        api.call("PUT", "/api/pages/terms", Some(&admin), Some(json!({"text": "Be kind.\n\nNo piracy."}))).await;
    assert_eq!(status, 200);
    assert_eq!(api.get("/api/pages/terms", None).await.1["text"], "Be kind.\n\nNo piracy.");

    // Filing: admins only, a real channel, a real address.
    let notice = |channel: &str, email: &str| {
        json!({"channelId": channel, "claimantName": "Label Inc", "claimantEmail": email, "work": "Song A",
            "infringingUrl": format!("https://live.example/c/{channel}"), "statement": "I believe in good faith..."})
    };
    assert_eq!(api.post("/api/takedowns", Some(&bob), notice(&c, "legal@label.example")).await.0, 403);
    assert_eq!(api.post("/api/takedowns", Some(&admin), notice("nope", "legal@label.example")).await.0, 404);
    assert_eq!(api.post("/api/takedowns", Some(&admin), notice(&c, "not-an-address")).await.0, 422);
    assert_eq!(api.get(&format!("/api/channels/{c}"), None).await.0, 200, "nothing hidden by refused notices");
    let (status, filed) = api.post("/api/takedowns", Some(&admin), notice(&c, "legal@label.example")).await;
    assert_eq!(status, 201, "{filed}");
    let id = filed["id"].as_str().unwrap().to_owned();
    assert_eq!(filed["status"], "hidden");

    // Hidden: 451 to others, still there for its owner, not in the directory, no broadcast.
    assert_eq!(api.get(&format!("/api/channels/{c}"), Some(&eve)).await.0, 451);
    assert_eq!(api.get(&format!("/api/channels/{c}"), Some(&bob)).await.0, 200);
    let (_, directory) = api.get("/api/directory", None).await;
    assert!(!directory.to_string().contains(&c), "{directory}");
    let (status, _) = api.post(&format!("/api/channels/{c}/stream/start"), Some(&bob), json!({})).await;
    assert_eq!(status, 422, "no broadcast while hidden");

    // The owner is notified (sees the notice with the claimant's details); others see nothing.
    let (_, mine) = api.get("/api/takedowns", Some(&bob)).await;
    assert_eq!(mine["takedowns"][0]["claimantEmail"], "legal@label.example");
    assert_eq!(api.get("/api/takedowns", Some(&eve)).await.1["takedowns"], json!([]));

    let counter = format!("/api/takedowns/{id}/counter");
    assert_eq!(api.post(&counter, Some(&eve), json!({"text": "not mine to say"})).await.0, 403);
    assert_eq!(api.post(&counter, Some(&bob), json!({"text": "I own the rights: licence attached"})).await.0, 200);
    assert_eq!(api.post(&counter, Some(&bob), json!({"text": "again"})).await.0, 422, "one counter-notice");
    let decide = format!("/api/takedowns/{id}/decide");
    assert_eq!(api.post(&decide, Some(&bob), json!({"restore": true})).await.0, 403);
    let (status, restored) = api.post(&decide, Some(&admin), json!({"restore": true, "note": "licence checked"})).await;
    assert_eq!((status, restored["status"].as_str()), (200, Some("restored")), "{restored}");
    assert_eq!(api.post(&decide, Some(&admin), json!({"restore": false})).await.0, 422, "decided once");
    assert_eq!(api.get(&format!("/api/channels/{c}"), Some(&eve)).await.0, 200, "back for everyone");

    // The audit trail: who did what, when.
    assert_eq!(api.get("/api/takedowns/export", Some(&bob)).await.0, 403);
    let (status, trail) = api.get("/api/takedowns/export", Some(&admin)).await;
    assert_eq!(status, 200);
    let steps: Vec<(&str, &str)> = trail["takedowns"][0]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["what"].as_str().unwrap(), e["by"].as_str().unwrap()))
        .collect();
    assert_eq!(steps, [("notice", "admin"), ("counter", "bob"), ("restored", "admin")]);
}
