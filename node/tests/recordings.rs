//! Recordings against the real `bitriver` binary: a broadcast published with ffmpeg becomes a
//! draft recording (a VOD playlist ffprobe reads at the broadcast's length), public once
//! published and played by hls.js in Chromium through the edge; clips are cut from it; a
//! publisher who reconnects continues it behind one discontinuity; retention removes files and
//! entries together; a node killed mid-broadcast keeps the recording up to its last segment.
//!
//! Needs ffmpeg and ffprobe (and Chromium for the playback test); fails naming a missing one.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::browser::play_in_chromium;
use common::live::{create_channel, publish, rtmp_url, start_with_rtmp, Encoding, MEDIA_TOOLS};
use common::{get_json, post_json, NodeProc};
use serde_json::{json, Value};
use testkit::ffmpeg::ffprobe;

/// The segment target the node packages with: durations are checked to within one.
const SEGMENT: f64 = 1.0;

/// The channel's recordings as `/api/recordings` lists them to the (development-mode) admin.
async fn recordings_of(node: &NodeProc, channel: &str) -> Vec<Value> {
    let list = get_json(node, &format!("/api/recordings?channelId={channel}")).await;
    list["recordings"].as_array().cloned().unwrap_or_default()
}

/// Waits up to `limit` for the channel's only recording to satisfy `check`; returns it.
async fn wait_recording(node: &NodeProc, channel: &str, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let list = recordings_of(node, channel).await;
        if let [one] = list.as_slice() {
            if check(one) {
                return one.clone();
            }
        }
        assert!(Instant::now() < deadline, "recording of {channel} never got there: {list:?}\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What anyone not signed in (not the loopback admin of development mode) gets from `path`.
async fn anonymous_get(node: &NodeProc, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(node.url(path))
        .header("host", "viewer.example")
        .send()
        .await
        .expect("GET as a viewer");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// ffprobe's duration of a playlist (the sum of its segments for a VOD).
async fn duration_of(url: &str) -> f64 {
    let probe = ffprobe(&["-show_entries", "format=duration", url]).await;
    probe["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or_else(|| panic!("{url}: {probe}"))
}

/// Decodes every frame of `url` with ffmpeg: what a player does, without a screen.
async fn decodes_cleanly(url: &str) {
    let out = tokio::process::Command::new(testkit::tools::ffmpeg())
        .args(["-hide_banner", "-nostdin", "-v", "error", "-xerror", "-i", url, "-f", "null", "-"])
        .output()
        .await
        .expect("running ffmpeg");
    assert!(out.status.success(), "decoding {url}: {}", String::from_utf8_lossy(&out.stderr));
}

async fn wait_offline(node: &NodeProc, channel: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while get_json(node, &format!("/api/channels/{channel}")).await["liveState"] != "offline" {
        assert!(Instant::now() < deadline, "still live\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run_publisher(dir: &Path, name: &str, port: u16, key: &str, seconds: u32) {
    let mut publisher = publish("flv", &rtmp_url(port, key), seconds, Encoding::ZeroLatency, &dir.join(name));
    let status = tokio::time::timeout(Duration::from_secs(u64::from(seconds) + 30), publisher.wait()).await;
    assert!(matches!(status, Ok(Ok(s)) if s.success()), "ffmpeg {name}: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_becomes_a_draft_then_a_public_vod_with_clips() {
    if !testkit::require_tools(MEDIA_TOOLS) || !testkit::require_tools(testkit::tools::BROWSER) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(dir.path(), "vod");
    let port = start_with_rtmp(&mut node, &[]).await;
    let (channel, key) = create_channel(&node, "Recorded").await;

    run_publisher(dir.path(), "ffmpeg.log", port, &key, 20).await;
    wait_offline(&node, &channel).await;
    let recording = wait_recording(&node, &channel, Duration::from_secs(20), |r| r["status"] == "ready").await;
    let id = recording["id"].as_str().unwrap().to_owned();
    assert_eq!(recording["published"], false, "a draft: {recording}");
    assert_eq!(recording["title"], "Recorded");
    assert_eq!(recording["renditions"], json!(["source"]));
    assert!(recording["sizeBytes"].as_u64().unwrap() > 100_000, "{recording}");
    let reported = recording["durationMs"].as_f64().unwrap() / 1000.0;
    assert!((reported - 20.0).abs() <= SEGMENT, "duration {reported} s for a 20 s broadcast");

    // The draft plays for its owner (the loopback admin here), from the node holding it.
    let master = node.url(&format!("/vod/{id}/master.m3u8"));
    let media = node.url(&format!("/vod/{id}/source/index.m3u8"));
    let (_, playlist) = node.get(&format!("/vod/{id}/source/index.m3u8")).await.unwrap();
    assert!(playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD") && playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
    assert!(!playlist.contains("#EXT-X-DISCONTINUITY"), "one session, one timeline: {playlist}");
    let probed = duration_of(&master).await;
    assert!((probed - 20.0).abs() <= SEGMENT, "ffprobe reads {probed} s of a 20 s broadcast");
    let probe = ffprobe(&["-show_streams", &media]).await;
    assert!(testkit::ffmpeg::stream(&probe, "h264").is_some() && testkit::ffmpeg::stream(&probe, "aac").is_some());

    // Hidden from everyone else, and not served by the edge, until published.
    let (status, listed) = anonymous_get(&node, &format!("/api/recordings?channelId={channel}")).await;
    assert_eq!((status, &listed["recordings"]), (200, &json!([])));
    assert_eq!(anonymous_get(&node, &format!("/api/recordings/{id}")).await.0, 404);
    assert_eq!(anonymous_get(&node, &format!("/vod/{id}/master.m3u8")).await.0, 404);
    let edge_master = node.edge_url(&format!("/vod/{id}/master.m3u8")).await;
    assert_eq!(testkit::http::get(&edge_master).await.map(|(s, _)| s), Some(404));

    let (status, published) = post_json(&node, &format!("/api/recordings/{id}/publish"), json!({})).await;
    assert_eq!(status, 200, "{published}");
    assert_eq!(
        anonymous_get(&node, &format!("/api/recordings?channelId={channel}")).await.1["recordings"][0]["id"],
        id
    );
    assert!((duration_of(&edge_master).await - 20.0).abs() <= SEGMENT);
    let url = edge_master.clone();
    let played = tokio::task::spawn_blocking(move || play_in_chromium(&url, 3.0)).await.unwrap();
    let played = played.unwrap_or_else(|why| panic!("hls.js did not play the recording: {why}"));
    assert!(played["playedSeconds"].as_f64().unwrap_or(0.0) >= 3.0, "{played}");
    assert_eq!((played["video"]["width"].as_u64(), played["video"]["height"].as_u64()), (Some(640), Some(360)));

    // A clip of 5..12 s: queued, then ready at the cut's length (to within a segment), playable.
    let (status, clip) = post_json(
        &node,
        &format!("/api/recordings/{id}/clips"),
        json!({"startSeconds": 5, "endSeconds": 12, "title": "Highlight"}),
    )
    .await;
    assert_eq!(status, 202, "{clip}");
    let clip_id = clip["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let clip = loop {
        let clip = get_json(&node, &format!("/api/recordings/{clip_id}")).await;
        if clip["status"] == "ready" {
            break clip;
        }
        assert_ne!(clip["status"], "failed", "{clip}");
        assert!(Instant::now() < deadline, "clip never ready: {clip}\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let clip_master = node.url(&format!("/vod/{clip_id}/master.m3u8"));
    let clip_seconds = duration_of(&clip_master).await;
    assert!((clip_seconds - 7.0).abs() <= SEGMENT, "clip of 7 s is {clip_seconds} s");
    assert!((clip["durationMs"].as_f64().unwrap() / 1000.0 - clip_seconds).abs() < 0.1, "{clip}");
    decodes_cleanly(&clip_master).await;
    let (_, clips) = node.get(&format!("/api/recordings/{id}/clips")).await.unwrap();
    assert!(clips.contains(&clip_id), "{clips}");

    // Pictures: a poster and more along the timeline, 320 pixels wide, decoded from keyframes.
    let deadline = Instant::now() + Duration::from_secs(20);
    let pictured = loop {
        let r = get_json(&node, &format!("/api/recordings/{id}")).await;
        if r["thumbnails"].as_u64().unwrap_or(0) > 0 {
            break r;
        }
        assert!(Instant::now() < deadline, "no pictures: {r}\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(pictured["thumbnails"], 5, "{pictured}");
    let poster = pictured["posterPath"].as_str().unwrap().to_owned();
    let probe = ffprobe(&["-show_streams", &edge_master.replace("/master.m3u8", "/thumb0.jpg")]).await;
    let still = testkit::ffmpeg::stream(&probe, "mjpeg").unwrap_or_else(|| panic!("{poster}: {probe}"));
    assert_eq!((still["width"].as_u64(), still["height"].as_u64()), (Some(320), Some(180)));

    // A range past the end is refused; nothing new appears.
    let (status, _) =
        post_json(&node, &format!("/api/recordings/{id}/clips"), json!({"startSeconds": 15, "endSeconds": 40})).await;
    assert_eq!(status, 422);
    assert!(node.metric("bitriver_recording_segments_total").await.unwrap_or(0.0) >= 18.0);
    assert_eq!(node.terminate(), Some(0), "{}", node.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_who_reconnects_continues_the_recording_after_one_discontinuity() {
    if !testkit::require_tools(MEDIA_TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(dir.path(), "resume");
    let port = start_with_rtmp(&mut node, &[]).await;
    let (channel, key) = create_channel(&node, "Flaky uplink").await;
    run_publisher(dir.path(), "first.log", port, &key, 6).await;
    wait_offline(&node, &channel).await;
    run_publisher(dir.path(), "second.log", port, &key, 6).await;
    wait_offline(&node, &channel).await;

    let recording = wait_recording(&node, &channel, Duration::from_secs(20), |r| {
        r["status"] == "ready" && r["sessionIds"].as_array().is_some_and(|s| s.len() == 2)
    })
    .await;
    let id = recording["id"].as_str().unwrap();
    let (_, playlist) = node.get(&format!("/vod/{id}/source/index.m3u8")).await.unwrap();
    assert_eq!(playlist.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{playlist}");
    let seconds = duration_of(&node.url(&format!("/vod/{id}/master.m3u8"))).await;
    assert!((seconds - 12.0).abs() <= 2.0 * SEGMENT, "two 6 s publishes make {seconds} s");
    decodes_cleanly(&node.url(&format!("/vod/{id}/master.m3u8"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_drafts_and_published_recordings_files_and_entries_together() {
    if !testkit::require_tools(MEDIA_TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(dir.path(), "retention");
    let args = ["--recording-retention-unpublished", "8s", "--recording-retention-published", "2s"];
    let port = start_with_rtmp(&mut node, &args).await;
    let (draft_channel, draft_key) = create_channel(&node, "Kept as a draft").await;
    let (status, channel) = post_json(&node, "/api/channels", json!({"ownerId": get_json(&node, &format!("/api/channels/{draft_channel}")).await["ownerId"], "title": "Published"})).await;
    assert_eq!(status, 201, "{channel}");
    let (public_channel, public_key) =
        (channel["id"].as_str().unwrap().to_owned(), channel["streamKey"].as_str().unwrap().to_owned());
    tokio::join!(
        run_publisher(dir.path(), "draft.log", port, &draft_key, 4),
        run_publisher(dir.path(), "public.log", port, &public_key, 4)
    );
    let ready = |r: &Value| r["status"] == "ready";
    let draft = wait_recording(&node, &draft_channel, Duration::from_secs(20), ready).await;
    let public = wait_recording(&node, &public_channel, Duration::from_secs(20), ready).await;
    let (draft, public) = (draft["id"].as_str().unwrap().to_owned(), public["id"].as_str().unwrap().to_owned());
    let (status, _) = post_json(&node, &format!("/api/recordings/{public}/publish"), json!({})).await;
    assert_eq!(status, 200);
    let published_at = Instant::now();
    let on_disk = |id: &str| node.data.join("recordings").join(id).exists();
    assert!(on_disk(&draft) && on_disk(&public));

    // Each goes on its schedule: the published one 2 s after publication, the draft 8 s after
    // its end. Whenever the API still shows one, its files are there.
    let gone = |id: &str| {
        let id = id.to_owned();
        let node = &node;
        async move {
            let (status, _) = node.get(&format!("/api/recordings/{id}")).await.unwrap();
            (status == 404, node.data.join("recordings").join(&id).exists())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut public_gone_after = None;
    loop {
        let (public_hidden, public_files) = gone(&public).await;
        let (draft_hidden, draft_files) = gone(&draft).await;
        assert!(public_hidden || public_files, "the published recording is listed without its files");
        assert!(draft_hidden || draft_files, "the draft is listed without its files");
        if public_hidden && public_gone_after.is_none() {
            public_gone_after = Some(published_at.elapsed());
            assert!(!draft_hidden, "the draft went with the published one, before its retention");
        }
        if public_hidden && draft_hidden && !public_files && !draft_files {
            break;
        }
        assert!(Instant::now() < deadline, "retention did not remove both\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let public_gone_after = public_gone_after.unwrap();
    println!("published recording removed {:.1} s after publication (retention 2 s)", public_gone_after.as_secs_f64());
    assert!(public_gone_after >= Duration::from_secs(2), "removed before its retention");
    // The entries are gone from the catalog, not just hidden.
    let dump = node.dump().await;
    assert!(!dump.iter().any(|(k, _)| k.starts_with(b"rec/")), "recording entries left in the catalog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_broadcast_keeps_the_recording_up_to_its_last_segment() {
    if !testkit::require_tools(MEDIA_TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(dir.path(), "crash");
    let port = start_with_rtmp(&mut node, &[]).await;
    let (channel, key) = create_channel(&node, "Power cut").await;
    let mut publisher =
        publish("flv", &rtmp_url(port, &key), 60, Encoding::ZeroLatency, &dir.path().join("ffmpeg.log"));
    let recording = wait_recording(&node, &channel, Duration::from_secs(40), |r| {
        r["status"] == "recording" && r["durationMs"].as_u64().unwrap_or(0) >= 8_000
    })
    .await;
    let id = recording["id"].as_str().unwrap().to_owned();
    // While it is live, the channel has a picture, listed in the directory. It is decoded when
    // asked for, not as segments close: none was made in the 8 s nobody asked, then one serves
    // every request for the next 10 s.
    const POSTERS_MADE: &str = "bitriver_recording_live_posters_total";
    assert_eq!(node.metric(POSTERS_MADE).await, Some(0.0), "a live poster decoded before anyone asked");
    let poster = node.url(&format!("/hls/{channel}/poster.jpg"));
    let probe = ffprobe(&["-show_streams", &poster]).await;
    let still = testkit::ffmpeg::stream(&probe, "mjpeg").unwrap_or_else(|| panic!("live poster: {probe}"));
    assert_eq!((still["width"].as_u64(), still["height"].as_u64()), (Some(320), Some(180)));
    let (status, _) = node.get(&format!("/hls/{channel}/poster.jpg")).await.expect("poster again");
    assert_eq!(status, 200);
    assert_eq!(node.metric(POSTERS_MADE).await, Some(1.0), "one decode serves the requests of 10 s");
    let directory = get_json(&node, "/api/directory").await;
    let listed = directory["items"].as_array().unwrap().iter().find(|c| c["id"] == channel.as_str()).cloned();
    let poster_url = listed.as_ref().and_then(|c| c["posterUrl"].as_str()).unwrap_or_default();
    assert!(poster_url.ends_with(&format!("/hls/{channel}/poster.jpg")), "{directory}");
    node.kill9();
    let _ = publisher.kill().await;
    let journal = node.data.join("recordings").join(&id).join("source").join("segments.tsv");
    let written = std::fs::read_to_string(&journal).unwrap().lines().count();
    assert!(written >= 8, "{written} segments in the journal");

    node.start();
    node.wait_healthy(Duration::from_secs(30)).await;
    let recovered = wait_recording(&node, &channel, Duration::from_secs(30), |r| r["status"] == "ready").await;
    let seconds = recovered["durationMs"].as_f64().unwrap() / 1000.0;
    assert!(seconds >= written as f64 * 0.9 - SEGMENT, "{written} segments written, {seconds} s recovered");
    let master = node.url(&format!("/vod/{id}/master.m3u8"));
    let probed = duration_of(&master).await;
    assert!((probed - seconds).abs() <= SEGMENT, "ffprobe {probed} s, catalog {seconds} s");
    decodes_cleanly(&master).await;
}
