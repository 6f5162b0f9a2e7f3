//! The original README's curl walkthrough, run with the real `curl` against a real `bitriver`:
//! create a user, create a channel, go live, publish a profile with top friends and donation
//! addresses, read the analytics overview, go off air. In development mode it works exactly as
//! written (loopback requests without a token act as an admin); in production mode the same
//! requests are refused with 401 until they carry the README's `Authorization: Bearer` header.
//!
//! The only departures from the README's text: the donation addresses are real-shaped ones (the
//! API checks address formats, and `0x123` / `bc1xyz` are not addresses), and `--write-out`
//! appends the status code so the test can check it.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use common::{cli_with_stdin, NodeProc};
use serde_json::{json, Value};

const STARTUP: Duration = Duration::from_secs(30);
const ETH_ADDRESS: &str = "0x32Be343B94f860124dC4fEe278FDCBD38C102D88";
const BTC_ADDRESS: &str = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq";

/// `curl -s --request METHOD URL [--header H]... [--data BODY]`, as the README writes it.
/// Returns the status code and the body parsed as JSON (`Null` for an empty body).
async fn curl(method: &str, url: &str, headers: &[&str], data: Option<&str>) -> (u16, Value) {
    let mut cmd = tokio::process::Command::new(testkit::tools::path("curl"));
    // `-q` first: ignore any ~/.curlrc; no proxy may sit between the test and loopback.
    cmd.args(["-q", "-s", "--max-time", "20", "--request", method, url]);
    for h in headers {
        cmd.args(["--header", h]);
    }
    if let Some(body) = data {
        cmd.args(["--data", body]);
    }
    cmd.args(["--write-out", "\n%{http_code}"]);
    for var in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
        cmd.env_remove(var);
    }
    let out = cmd.stdin(Stdio::null()).output().await.expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "curl {method} {url} failed: {:?}\n{stdout}", out.status);
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", stdout.as_str()));
    let code: u16 = code.trim().parse().unwrap_or_else(|_| panic!("no status from curl: {stdout:?}"));
    let body = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{method} {url}: body is not JSON ({e}): {body}"))
    };
    (code, body)
}

const JSON: &str = "Content-Type: application/json";

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// The README's profile body with the ids filled in and real-shaped addresses.
fn profile_body(channel_id: &str, friends: [&str; 2]) -> String {
    format!(
        r#"{{
    "bio":"Streaming straight from the river",
    "avatarUrl":"https://cdn.example.com/avatar.png",
    "bannerUrl":"https://cdn.example.com/banner.png",
    "featuredChannelId":"{channel_id}",
    "topFriends":["{}","{}"],
    "donationAddresses":[
      {{"currency":"eth","address":"{ETH_ADDRESS}","note":"main wallet"}},
      {{"currency":"btc","address":"{BTC_ADDRESS}"}}
    ]
  }}"#,
        friends[0], friends[1]
    )
}

fn user_body(name: &str, email: &str) -> String {
    format!(r#"{{"displayName":"{name}","email":"{email}","roles":["creator"]}}"#)
}

fn channel_body(owner_id: &str) -> String {
    format!(r#"{{"ownerId":"{owner_id}","title":"River Rafting","tags":["outdoors","travel"]}}"#)
}

const START_BODY: &str = r#"{"renditions":["1080p","720p"]}"#;
const STOP_BODY: &str = r#"{"peakConcurrent":42}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough_works_as_written_in_development_mode() {
    if !testkit::require_tool("curl") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(root.path(), "dev");
    node.args.extend(["--mode".into(), "development".into()]);
    node.start();
    node.wait_healthy(STARTUP).await;

    // Create a user.
    let (status, user) =
        curl("POST", &node.url("/api/users"), &[JSON], Some(&user_body("River", "river@example.com"))).await;
    assert_eq!(status, 201, "{user}");
    let owner_id = user["id"].as_str().expect("user id").to_owned();
    assert_eq!(owner_id.len(), 24, "{user}");
    assert_eq!(user["displayName"], "River");
    assert_eq!(user["email"], "river@example.com");
    assert_eq!(user["roles"], json!(["creator"]));
    assert!(user["createdAt"].as_i64().is_some_and(|t| t > 0), "{user}");
    assert!(user.get("passwordHash").is_none(), "{user}");

    // Create a channel for that user.
    let (status, channel) = curl("POST", &node.url("/api/channels"), &[JSON], Some(&channel_body(&owner_id))).await;
    assert_eq!(status, 201, "{channel}");
    let channel_id = channel["id"].as_str().expect("channel id").to_owned();
    assert_eq!(channel["ownerId"], owner_id.as_str());
    assert_eq!(channel["title"], "River Rafting");
    assert_eq!(channel["tags"], json!(["outdoors", "travel"]));
    assert_eq!(channel["liveState"], "offline");
    let stream_key = channel["streamKey"].as_str().expect("the stream key is shown at creation");
    assert!(stream_key.starts_with("live_") && stream_key.len() >= 37, "{stream_key}");
    assert!(channel.get("streamKeyHash").is_none(), "{channel}");

    // The key is shown once: reading the channel back does not show it.
    let channel_url = node.url(&format!("/api/channels/{channel_id}"));
    let (status, read) = curl("GET", &channel_url, &[], None).await;
    assert_eq!(status, 200, "{read}");
    assert!(read.get("streamKey").is_none() && read.get("streamKeyHash").is_none(), "{read}");

    // Start streaming.
    let (status, session) =
        curl("POST", &node.url(&format!("/api/channels/{channel_id}/stream/start")), &[JSON], Some(START_BODY)).await;
    assert_eq!(status, 201, "{session}");
    let session_id = session["id"].as_str().expect("session id").to_owned();
    assert_eq!(session["channelId"], channel_id.as_str());
    assert_eq!(session["renditions"], json!(["1080p", "720p"]));
    assert!(session["startedAt"].as_i64().is_some_and(|t| t > 0), "{session}");
    assert!(session["endedAt"].is_null(), "{session}");

    // The channel is live, with a playback URL.
    let (status, live) = curl("GET", &channel_url, &[], None).await;
    assert_eq!(status, 200, "{live}");
    assert_eq!(live["liveState"], "live");
    assert_eq!(live["currentSessionId"], session_id.as_str());
    assert_eq!(live["playbackUrl"], format!("/hls/{channel_id}/master.m3u8"));

    // Going live twice is refused.
    let (status, again) =
        curl("POST", &node.url(&format!("/api/channels/{channel_id}/stream/start")), &[JSON], Some(START_BODY)).await;
    assert_eq!(status, 409, "{again}");

    // Two friends, created the same way, then the profile with them as top friends.
    let mut friends = Vec::new();
    for (name, email) in [("Rapids", "rapids@example.com"), ("Eddy", "eddy@example.com")] {
        let (status, friend) = curl("POST", &node.url("/api/users"), &[JSON], Some(&user_body(name, email))).await;
        assert_eq!(status, 201, "{friend}");
        friends.push(friend["id"].as_str().unwrap().to_owned());
    }
    let body = profile_body(&channel_id, [&friends[0], &friends[1]]);
    let profile_url = node.url(&format!("/api/profiles/{owner_id}"));
    let (status, profile) = curl("PUT", &profile_url, &[JSON], Some(&body)).await;
    assert_eq!(status, 200, "{profile}");
    let check_profile = |profile: &Value| {
        assert_eq!(profile["userId"], owner_id.as_str());
        assert_eq!(profile["displayName"], "River");
        assert_eq!(profile["bio"], "Streaming straight from the river");
        assert_eq!(profile["avatarUrl"], "https://cdn.example.com/avatar.png");
        assert_eq!(profile["bannerUrl"], "https://cdn.example.com/banner.png");
        assert_eq!(profile["featuredChannelId"], channel_id.as_str());
        assert_eq!(
            profile["topFriends"],
            json!([
                {"id": friends[0], "displayName": "Rapids"},
                {"id": friends[1], "displayName": "Eddy"},
            ])
        );
        assert_eq!(
            profile["donationAddresses"],
            json!([
                {"currency": "ETH", "address": ETH_ADDRESS, "note": "main wallet"},
                {"currency": "BTC", "address": BTC_ADDRESS, "note": null},
            ])
        );
        assert_eq!(profile["live"], true);
        let channels = profile["channels"].as_array().unwrap();
        assert_eq!(channels.len(), 1, "{profile}");
        assert_eq!(channels[0]["id"], channel_id.as_str());
        assert_eq!(channels[0]["liveState"], "live");
    };
    check_profile(&profile);
    let (status, profile) = curl("GET", &profile_url, &[], None).await;
    assert_eq!(status, 200, "{profile}");
    check_profile(&profile);

    // The README's own placeholder addresses are refused, naming the field.
    let bad = body.replace(ETH_ADDRESS, "0x123");
    let (status, err) = curl("PUT", &profile_url, &[JSON], Some(&bad)).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["field"], "donationAddresses[0].address");

    // A chat line (the README: "Chat messages can be posted to /api/channels/CHANNEL_ID/chat").
    let chat_url = node.url(&format!("/api/channels/{channel_id}/chat"));
    let line = format!(r#"{{"message":"hello river","userId":"{}"}}"#, friends[0]);
    let (status, posted) = curl("POST", &chat_url, &[JSON], Some(&line)).await;
    assert_eq!(status, 201, "{posted}");
    assert_eq!(posted["text"], "hello river");
    assert_eq!(posted["userDisplayName"], "Rapids");
    let (status, page) = curl("GET", &format!("{chat_url}?limit=25"), &[], None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"][0]["id"], posted["id"]);

    // The analytics overview: exactly the documented shape, one stream live.
    let (status, overview) = curl("GET", &node.url("/api/analytics/overview"), &[], None).await;
    assert_eq!(status, 200, "{overview}");
    assert_eq!(keys(&overview), set(&["summary", "perChannel"]), "{overview}");
    let summary = &overview["summary"];
    assert_eq!(keys(summary), set(&["liveViewers", "streamsLive", "watchTimeMinutes", "chatMessages"]), "{summary}");
    assert_eq!(summary["streamsLive"], 1);
    assert_eq!(summary["liveViewers"], 0, "nothing reports viewers in this test");
    assert_eq!(summary["chatMessages"], 1);
    assert!(summary["watchTimeMinutes"].is_number(), "{summary}");
    let per_channel = overview["perChannel"].as_array().expect("perChannel is a list");
    assert_eq!(per_channel.len(), 1, "{overview}");
    let figures = &per_channel[0];
    assert_eq!(
        keys(figures),
        set(&["channelId", "title", "liveViewers", "followers", "avgWatchMinutes", "chatMessages"]),
        "{figures}"
    );
    assert_eq!(figures["channelId"], channel_id.as_str());
    assert_eq!(figures["title"], "River Rafting");
    assert_eq!(figures["chatMessages"], 1);

    // Stop the session with a peak audience; the session list shows it ended.
    let (status, ended) =
        curl("POST", &node.url(&format!("/api/channels/{channel_id}/stream/stop")), &[JSON], Some(STOP_BODY)).await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["id"], session_id.as_str());
    assert_eq!(ended["peakConcurrent"], 42);
    let ended_at = ended["endedAt"].as_i64().expect("endedAt set");
    assert!(ended_at >= session["startedAt"].as_i64().unwrap());

    let (status, sessions) = curl("GET", &node.url(&format!("/api/channels/{channel_id}/sessions")), &[], None).await;
    assert_eq!(status, 200, "{sessions}");
    let sessions = sessions.as_array().expect("a list of sessions");
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["id"], session_id.as_str());
    assert_eq!(sessions[0]["endedAt"], ended_at);
    assert_eq!(sessions[0]["peakConcurrent"], 42);
    assert_eq!(sessions[0]["renditions"], json!(["1080p", "720p"]));

    let (_, offline) = curl("GET", &channel_url, &[], None).await;
    assert_eq!(offline["liveState"], "offline");
    assert!(offline["currentSessionId"].is_null(), "{offline}");
    let (_, overview) = curl("GET", &node.url("/api/analytics/overview"), &[], None).await;
    assert_eq!(overview["summary"]["streamsLive"], 0);

    // Stopping again: nothing is live.
    let (status, _) =
        curl("POST", &node.url(&format!("/api/channels/{channel_id}/stream/stop")), &[JSON], Some(STOP_BODY)).await;
    assert_eq!(status, 409);
}

/// `bitriver user create ...` with the password on stdin; returns the new user's id.
fn create_admin(node: &NodeProc, email: &str, password: &str) -> String {
    let data = node.data.to_str().unwrap();
    let args = ["user", "create", "--admin", "--email", email, "--display-name", "Root", "--data", data];
    let (code, stdout, stderr) = cli_with_stdin(&args, &format!("{password}\n"));
    assert_eq!(code, 0, "user create: {stderr}");
    stdout.trim().to_owned()
}

fn assert_unauthorized(what: &str, (status, body): (u16, Value)) {
    assert_eq!(status, 401, "{what} without a token: {body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_refuses_the_walkthrough_without_a_token() {
    if !testkit::require_tool("curl") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(root.path(), "prod");
    node.args.extend(["--mode".into(), "production".into(), "--log-format".into(), "text".into()]);
    node.start();
    node.wait_healthy(STARTUP).await;

    // Every step of the walkthrough, exactly as written, is refused: loopback is no excuse.
    assert_unauthorized(
        "create user",
        curl("POST", &node.url("/api/users"), &[JSON], Some(&user_body("River", "river@example.com"))).await,
    );

    // An admin (made with the CLI) signs in; the README's Authorization header then works.
    let admin_id = create_admin(&node, "root@example.com", "root-password");
    let (status, login) = curl(
        "POST",
        &node.url("/api/auth/login"),
        &[JSON],
        Some(r#"{"email":"root@example.com","password":"root-password"}"#),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let token = login["token"].as_str().expect("a session token").to_owned();
    let bearer = format!("Authorization: Bearer {token}");
    let (status, session) = curl("GET", &node.url("/api/auth/session"), &[&bearer], None).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["user"]["id"], admin_id.as_str());
    assert_unauthorized("session", curl("GET", &node.url("/api/auth/session"), &[], None).await);

    // With the token: the user, two friends and the channel exist, so the refusals below are
    // about authentication and not about missing records.
    let authed = [JSON, bearer.as_str()];
    let (status, user) =
        curl("POST", &node.url("/api/users"), &authed, Some(&user_body("River", "river@example.com"))).await;
    assert_eq!(status, 201, "{user}");
    let owner_id = user["id"].as_str().unwrap().to_owned();
    let mut friends = Vec::new();
    for (name, email) in [("Rapids", "rapids@example.com"), ("Eddy", "eddy@example.com")] {
        let (status, friend) = curl("POST", &node.url("/api/users"), &authed, Some(&user_body(name, email))).await;
        assert_eq!(status, 201, "{friend}");
        friends.push(friend["id"].as_str().unwrap().to_owned());
    }
    assert_unauthorized(
        "create channel",
        curl("POST", &node.url("/api/channels"), &[JSON], Some(&channel_body(&owner_id))).await,
    );
    let (status, channel) = curl("POST", &node.url("/api/channels"), &authed, Some(&channel_body(&owner_id))).await;
    assert_eq!(status, 201, "{channel}");
    let channel_id = channel["id"].as_str().unwrap().to_owned();

    let start_url = node.url(&format!("/api/channels/{channel_id}/stream/start"));
    assert_unauthorized("start stream", curl("POST", &start_url, &[JSON], Some(START_BODY)).await);
    let (_, read) = curl("GET", &node.url(&format!("/api/channels/{channel_id}")), &[], None).await;
    assert_eq!(read["liveState"], "offline", "a refused start changed nothing");

    let profile_url = node.url(&format!("/api/profiles/{owner_id}"));
    let body = profile_body(&channel_id, [&friends[0], &friends[1]]);
    assert_unauthorized("profile", curl("PUT", &profile_url, &[JSON], Some(&body)).await);
    assert_unauthorized("analytics", curl("GET", &node.url("/api/analytics/overview"), &[], None).await);

    let (status, session) = curl("POST", &start_url, &authed, Some(START_BODY)).await;
    assert_eq!(status, 201, "{session}");
    let stop_url = node.url(&format!("/api/channels/{channel_id}/stream/stop"));
    assert_unauthorized("stop stream", curl("POST", &stop_url, &[JSON], Some(STOP_BODY)).await);
    let (status, profile) = curl("PUT", &profile_url, &authed, Some(&body)).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["topFriends"].as_array().map(Vec::len), Some(2));
    let (status, overview) = curl("GET", &node.url("/api/analytics/overview"), &[&bearer], None).await;
    assert_eq!(status, 200, "{overview}");
    assert_eq!(overview["summary"]["streamsLive"], 1);
    let (status, ended) = curl("POST", &stop_url, &authed, Some(STOP_BODY)).await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["peakConcurrent"], 42);

    // A forged token is no better than none.
    let forged = "Authorization: Bearer not-a-real-session-token";
    let (status, err) = curl("POST", &start_url, &[JSON, forged], Some(START_BODY)).await;
    assert_eq!(status, 401, "{err}");
}
