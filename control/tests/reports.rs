//! Reports and appeals over the API on a real catalog: a report acted on by a moderator (the ban
//! applies with the decision), an appeal decided by someone other than the banning moderator;
//! nobody sees others' reports or decides their own appeal; bad input changes nothing.

mod common;

use common::TestApi;
use serde_json::{json, Value};

fn ids(list: &Value, key: &str) -> Vec<String> {
    list[key].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_action_appeal_and_decision_by_someone_else() {
    let api = TestApi::start_with(control::Mode::Production, |s| s).await;
    let (owner, owner_t) = api.user_with("owner", "Owner", &["creator"], None).await;
    let (moderator, mod_t) = api.user_with("moderator", "Moderator", &["viewer"], None).await;
    let (troll, troll_t) = api.user_with("troll", "Troll", &["viewer"], None).await;
    let (_, reporter_t) = api.user_with("reporter", "Reporter", &["viewer"], None).await;
    let (_, other_t) = api.user_with("other", "Other", &["viewer"], None).await;
    api.channel("c1", &owner, &[&moderator]).await;
    let (status, message) =
        api.post("/api/channels/c1/chat", Some(&troll_t), json!({"text": "you are all awful"})).await;
    assert_eq!(status, 201, "{message}");
    let message_id = message["id"].as_str().unwrap().to_owned();

    // Bad reports: refused, nothing filed.
    let report = |target_type: &str, target_id: &str| json!({"targetType": target_type, "targetId": target_id, "reason": "harassment"});
    assert_eq!(api.post("/api/reports", None, report("message", &message_id)).await.0, 401);
    for (body, status, field) in [
        (report("comment", &message_id), 422, Some("targetType")),
        (json!({"targetType": "message", "targetId": message_id, "reason": " "}), 422, Some("reason")),
        (json!({"targetType": "message", "targetId": message_id, "reason": "x".repeat(201)}), 422, Some("reason")),
        (report("message", "no-such-message"), 404, None),
        (report("user", "reporter"), 422, Some("targetId")),
    ] {
        let (got, answer) = api.post("/api/reports", Some(&reporter_t), body.clone()).await;
        assert_eq!(got, status, "{body}: {answer}");
        if let Some(field) = field {
            assert_eq!(answer["error"]["field"], field, "{answer}");
        }
    }
    let (_, all) = api.get("/api/reports", Some(&owner_t)).await;
    assert_eq!(all["reports"], json!([]), "refused reports filed nothing");

    let (status, filed) = api.post("/api/reports", Some(&reporter_t), report("message", &message_id)).await;
    assert_eq!(status, 201, "{filed}");
    let report_id = filed["id"].as_str().unwrap().to_owned();
    assert_eq!((filed["channelId"].as_str(), filed["subjectUserId"].as_str()), (Some("c1"), Some(troll.as_str())));
    assert_eq!(filed["excerpt"], "you are all awful");

    // Who sees it: the reporter and the channel's moderators; not the reported user, not others.
    for (token, sees) in [(&reporter_t, true), (&owner_t, true), (&mod_t, true), (&troll_t, false), (&other_t, false)] {
        let (status, list) = api.get("/api/reports?status=open", Some(token)).await;
        assert_eq!(status, 200);
        assert_eq!(ids(&list, "reports").contains(&report_id), sees, "{list}");
    }
    assert_eq!(api.get("/api/reports?status=maybe", Some(&owner_t)).await.0, 422);

    // Deciding: not the reporter; bad actions refused; the moderator bans.
    let resolve = format!("/api/reports/{report_id}/resolve");
    assert_eq!(api.post(&resolve, Some(&reporter_t), json!({"action": "ban"})).await.0, 403);
    for body in
        [json!({"action": "shout"}), json!({"action": "timeout"}), json!({"action": "ban", "durationSeconds": 5})]
    {
        assert_eq!(api.post(&resolve, Some(&mod_t), body.clone()).await.0, 422, "{body}");
    }
    assert_eq!(api.post("/api/reports/nope/resolve", Some(&mod_t), json!({"action": "dismiss"})).await.0, 404);
    let (status, resolved) = api.post(&resolve, Some(&mod_t), json!({"action": "ban", "note": "second time"})).await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["resolution"]["by"], json!(moderator));
    assert_eq!(resolved["resolution"]["action"], json!("ban"));
    let (status, _) = api.post("/api/channels/c1/chat", Some(&troll_t), json!({"text": "still here"})).await;
    assert_eq!(status, 403, "the ban applied with the decision");
    assert_eq!(api.post(&resolve, Some(&owner_t), json!({"action": "dismiss"})).await.0, 422, "decided once");
    let (_, open) = api.get("/api/reports?status=open", Some(&owner_t)).await;
    assert!(!ids(&open, "reports").contains(&report_id));

    // The appeal: once per ban; decided neither by the banning moderator nor by the appellant.
    let appeal_body = json!({"channelId": "c1", "text": "I was having a bad day"});
    assert_eq!(api.post("/api/appeals", Some(&other_t), appeal_body.clone()).await.0, 422, "not banned there");
    let (status, appeal) = api.post("/api/appeals", Some(&troll_t), appeal_body.clone()).await;
    assert_eq!(status, 201, "{appeal}");
    let appeal_id = appeal["id"].as_str().unwrap().to_owned();
    assert_eq!(api.post("/api/appeals", Some(&troll_t), appeal_body).await.0, 422, "one appeal per ban");
    let (_, mine) = api.get("/api/appeals", Some(&troll_t)).await;
    assert_eq!(ids(&mine, "appeals"), std::slice::from_ref(&appeal_id));
    let (_, theirs) = api.get("/api/appeals", Some(&other_t)).await;
    assert_eq!(theirs["appeals"], json!([]));
    let decide = format!("/api/appeals/{appeal_id}/decide");
    assert_eq!(api.post(&decide, Some(&mod_t), json!({"lift": true})).await.0, 403, "the banning moderator");
    assert_eq!(api.post(&decide, Some(&troll_t), json!({"lift": true})).await.0, 403, "the appellant");
    assert_eq!(api.post(&decide, Some(&other_t), json!({"lift": true})).await.0, 403, "not a moderator");
    let (status, decided) = api.post(&decide, Some(&owner_t), json!({"lift": true, "note": "one more chance"})).await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(
        (decided["decision"]["by"].as_str(), decided["decision"]["lift"].as_bool()),
        (Some("owner"), Some(true))
    );
    assert_eq!(api.post(&decide, Some(&owner_t), json!({"lift": false})).await.0, 422, "decided once");
    let (status, _) = api.post("/api/channels/c1/chat", Some(&troll_t), json!({"text": "thanks"})).await;
    assert_eq!(status, 201, "the ban was lifted with the decision");
}
