//! Recordings over the API: drafts are the owner's until published, clips are queued for the
//! node holding the recording, and bad requests get a clear 4xx with nothing changed.

mod common;

use common::{field, TestApi};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_publish_clips_and_bad_requests() {
    let api = TestApi::start_with(control::Mode::Production, |s| s).await;
    let (_, admin) = api.user_with("admin", "Admin", &["admin"], None).await;
    let (bob_id, bob) = api.user_with("bob", "Bob", &["creator"], None).await;
    let (_, eve) = api.user_with("eve", "Eve", &["creator"], None).await;
    api.channel("c1", &bob_id, &[]).await;
    let r = api.recording("r1", "c1", 20).await;
    let count = || api.catalog.read(|s| s.recordings().count());

    // A draft: listed and readable for its owner and admins only.
    let list = |token: Option<String>| {
        let api = &api;
        async move { api.get("/api/recordings?channelId=c1", token.as_deref()).await.1["recordings"].clone() }
    };
    assert_eq!(list(None).await, json!([]));
    assert_eq!(list(Some(eve.clone())).await, json!([]));
    assert_eq!(list(Some(bob.clone())).await[0]["id"], "r1");
    assert_eq!(list(Some(admin.clone())).await[0]["published"], false);
    assert_eq!(api.get(&format!("/api/recordings/{r}"), None).await.0, 404);
    assert_eq!(api.get(&format!("/api/recordings/{r}"), Some(&eve)).await.0, 404);
    let (status, own) = api.get(&format!("/api/recordings/{r}"), Some(&bob)).await;
    assert_eq!(status, 200);
    assert_eq!(own["playbackPath"], "/vod/r1/master.m3u8");
    assert_eq!(own["status"], "ready");

    // Someone else's draft does not exist for them; unknown ids are 404; nothing changes.
    let publish = format!("/api/recordings/{r}/publish");
    let clips = format!("/api/recordings/{r}/clips");
    assert_eq!(api.post(&publish, Some(&eve), json!({})).await.0, 404);
    assert_eq!(api.post(&clips, Some(&eve), json!({"startSeconds": 1, "endSeconds": 5})).await.0, 404);
    assert_eq!(api.call("DELETE", &format!("/api/recordings/{r}"), Some(&eve), None).await.0, 404);
    assert_eq!(api.post("/api/recordings/nope/publish", Some(&bob), json!({})).await.0, 404);
    assert_eq!(
        api.post("/api/recordings/nope/clips", Some(&bob), json!({"startSeconds": 1, "endSeconds": 5})).await.0,
        404
    );
    assert_eq!(api.post(&publish, None, json!({})).await.0, 401);

    // Clip ranges: inside the recording, end after start, numbers.
    for (body, bad) in [
        (json!({"startSeconds": 5, "endSeconds": 2}), "endSeconds"),
        (json!({"startSeconds": 5, "endSeconds": 5}), "endSeconds"),
        (json!({"startSeconds": 10, "endSeconds": 45}), "endSeconds"),
        (json!({"startSeconds": -1, "endSeconds": 4}), "startSeconds"),
        (json!({"startSeconds": 1, "endSeconds": 4, "title": "x".repeat(141)}), "title"),
    ] {
        let (status, answer) = api.post(&clips, Some(&bob), body.clone()).await;
        assert_eq!((status, field(&answer)), (422, bad), "{body}: {answer}");
    }
    assert_eq!(api.post(&clips, Some(&bob), json!({"startSeconds": "soon", "endSeconds": 4})).await.0 / 100, 4);
    assert_eq!(count(), 1, "refused requests made nothing");

    // Published: everyone sees it; others may still not manage it.
    let (status, published) = api.post(&publish, Some(&bob), json!({})).await;
    assert_eq!(status, 200, "{published}");
    assert_eq!(published["published"], true);
    assert_eq!(list(None).await[0]["id"], "r1");
    assert_eq!(api.get(&format!("/api/recordings/{r}"), Some(&eve)).await.0, 200);
    assert_eq!(api.post(&clips, Some(&eve), json!({"startSeconds": 1, "endSeconds": 5})).await.0, 403);
    assert_eq!(api.call("DELETE", &format!("/api/recordings/{r}"), Some(&eve), None).await.0, 403);

    // A clip is queued on the node holding the recording; it is listed under its source.
    let (status, clip) =
        api.post(&clips, Some(&bob), json!({"startSeconds": 4.5, "endSeconds": 12, "title": "Best bit"})).await;
    assert_eq!(status, 202, "{clip}");
    assert_eq!((clip["status"].as_str(), clip["kind"].as_str()), (Some("queued"), Some("clip")));
    assert_eq!((clip["clipStartMs"].as_u64(), clip["clipEndMs"].as_u64()), (Some(4500), Some(12_000)));
    assert_eq!(clip["title"], "Best bit");
    assert_eq!(clip["published"], false, "a clip is a draft of its own");
    let (_, listed) = api.get(&clips, Some(&bob)).await;
    assert_eq!(listed["recordings"][0]["id"], clip["id"]);
    assert_eq!(api.get(&clips, None).await.1["recordings"], json!([]), "the draft clip is not public");
    assert_eq!(list(None).await.as_array().unwrap().len(), 1, "clips are not listed as broadcasts");

    // Deleting hides at once; the node holding it removes the files and the entry.
    assert_eq!(api.call("DELETE", &format!("/api/recordings/{r}"), Some(&bob), None).await.0, 204);
    assert_eq!(api.get(&format!("/api/recordings/{r}"), Some(&bob)).await.0, 404);
    assert_eq!(list(None).await, json!([]));
    assert_eq!(api.call("DELETE", &format!("/api/recordings/{r}"), Some(&bob), None).await.0, 404);
}
