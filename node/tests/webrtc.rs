//! WHIP and WHEP on a real node: refusals of bad input over HTTP, strangers' datagrams on the
//! media port, sessions that never connect timing out (and their publish ending in the catalog),
//! and, in headless Chromium, a WHIP publish played by hls.js and an RTMP publish played over
//! WHEP.
//!
//! The browser tests need ffmpeg, ffprobe, node and Chromium (fail naming them unless
//! BITRIVER_ALLOW_SKIP=1).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::browser::{play_in_chromium, play_in_chromium_env, run_rtc_script};
use common::live::{create_channel, ffprobe, rtmp_url, start_with_rtmp, stream, wait_playable, MEDIA_TOOLS};
use common::NodeProc;

/// An offer as Chromium sends it for WHIP (trimmed): H.264 and VP8 video, Opus audio. Its ICE
/// credentials and fingerprint are made up, so a session from it never connects.
const OFFER: &str = include_str!("../../webrtc/tests/data/chromium-offer.sdp");

/// `(status, headers, body)` of one request.
async fn call(
    method: reqwest::Method,
    url: &str,
    content_type: Option<&str>,
    bearer: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new().request(method, url).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    if let Some(key) = bearer {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("request");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.text().await.unwrap_or_default())
}

/// The node's WebRTC media port, from `/healthz`.
async fn media_addr(node: &NodeProc) -> SocketAddr {
    let (_, body) = node.get("/healthz").await.expect("/healthz");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    health["components"]["listeners"]["webrtc"]["addr"]
        .as_str()
        .expect("a webrtc listener in /healthz")
        .parse()
        .unwrap()
}

async fn live_state(node: &NodeProc, id: &str) -> String {
    let (_, body) = node.get(&format!("/api/channels/{id}")).await.expect("channel");
    let channel: serde_json::Value = serde_json::from_str(&body).unwrap();
    channel["liveState"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn bad_offers_keys_sessions_and_datagrams_get_clear_answers_and_nothing_leaks() {
    let root = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(root.path(), "webrtc");
    start_with_rtmp(&mut node, &[]).await;
    let (id, key) = create_channel(&node, "WebRTC refusals").await;
    let whip = node.url("/whip");
    let post = reqwest::Method::POST;
    let sdp = Some("application/sdp");

    // Refused before any session: no key, a wrong key, not SDP, malformed SDP, no H.264, too big.
    let (status, headers, body) = call(post.clone(), &whip, sdp, None, OFFER).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers.get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Bearer"));
    let (status, _, body) = call(post.clone(), &whip, sdp, Some("live_not_a_key"), OFFER).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("unknown stream key"), "{body}");
    let (status, _, _) = call(post.clone(), &whip, Some("application/json"), Some(&key), OFFER).await;
    assert_eq!(status, 415);
    let (status, _, body) = call(post.clone(), &whip, sdp, Some(&key), "v=0\r\nthis is not SDP").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("malformed SDP"), "{body}");
    let vp8_only = OFFER.replace("a=rtpmap:102 H264/90000", "a=rtpmap:102 VP9/90000");
    let (status, _, body) = call(post.clone(), &whip, sdp, Some(&key), vp8_only).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("H.264"), "{body}");
    let (status, _, _) = call(post.clone(), &whip, sdp, Some(&key), vec![b'v'; 64 * 1024]).await;
    assert_eq!(status, 413);
    assert_eq!(live_state(&node, &id).await, "offline", "a refused WHIP offer started nothing");
    assert!(node.metric("bitriver_ingest_rejected_total{reason=\"bad_key\"}").await >= Some(1.0));

    // WHEP of a channel that is not live; unknown sessions.
    let (status, _, body) = call(post.clone(), &node.url(&format!("/whep/{id}")), sdp, None, OFFER).await;
    assert_eq!(status, 404, "{body}");
    let (status, _, _) = call(reqwest::Method::DELETE, &node.url("/whip/0123456789abcdef"), None, None, "").await;
    assert_eq!(status, 404);

    // A valid offer with the right key: a session (and the catalog's publish) that never
    // connects, since the offer's ICE credentials are made up.
    let (status, headers, answer) = call(post.clone(), &whip, sdp, Some(&key), OFFER).await;
    assert_eq!(status, 201, "{answer}");
    assert!(answer.contains("a=ice-lite") && answer.contains("H264/90000"), "{answer}");
    assert!(answer.contains(&format!(" {} typ host", media_addr(&node).await.port())), "{answer}");
    assert_eq!(headers.get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some("*"));
    let location = headers.get("location").expect("Location").to_str().unwrap().to_owned();
    assert!(location.starts_with("/whip/"), "{location}");
    assert_eq!(node.metric("bitriver_webrtc_sessions{kind=\"publish\"}").await, Some(1.0));
    // A second publisher is refused like RTMP's.
    let (status, _, body) = call(post.clone(), &whip, sdp, Some(&key), OFFER).await;
    assert_eq!(status, 409, "{body}");
    // Someone else's key cannot end it, nor can the WHEP path; trickle takes only fragments.
    let (_, channel) = node.get(&format!("/api/channels/{id}")).await.unwrap();
    let owner = serde_json::from_str::<serde_json::Value>(&channel).unwrap()["ownerId"].clone();
    let (status, other) =
        common::post_json(&node, "/api/channels", serde_json::json!({"ownerId": owner, "title": "Another"})).await;
    assert_eq!(status, 201, "{other}");
    let other_key = other["streamKey"].as_str().unwrap().to_owned();
    let (status, _, _) = call(reqwest::Method::DELETE, &node.url(&location), None, Some(&other_key), "").await;
    assert_eq!(status, 403);
    let session = location.trim_start_matches("/whip/");
    let (status, _, _) =
        call(reqwest::Method::DELETE, &node.url(&format!("/whep/{id}/{session}")), None, None, "").await;
    assert_eq!(status, 404);
    let trickle = Some("application/trickle-ice-sdpfrag");
    let (status, _, _) =
        call(reqwest::Method::PATCH, &node.url(&location), trickle, Some(&key), "a=candidate:nonsense\r\n").await;
    assert_eq!(status, 400);
    let candidate = "a=mid:0\r\na=candidate:1 1 udp 2113937151 127.0.0.1 9 typ host\r\n";
    let (status, _, _) = call(reqwest::Method::PATCH, &node.url(&location), trickle, Some(&key), candidate).await;
    assert_eq!(status, 204);

    // Strangers on the media port: garbage and a binding request for a ufrag nobody has.
    let media = media_addr(&node).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let before = node.metric("bitriver_webrtc_unrouted_datagrams_total").await.unwrap_or(0.0);
    let mut stun = vec![0, 1, 0, 12, 0x21, 0x12, 0xA4, 0x42];
    stun.extend_from_slice(&[9; 12]);
    stun.extend_from_slice(&[0, 6, 0, 7, b'n', b'o', b'b', b'o', b'd', b'y', b':', 0, 0, 0, 0, 0]);
    stun[3] = 12;
    // Paced, so the socket's receive buffer does not overflow on a busy machine (UDP may drop).
    for i in 0..300u32 {
        let garbage: Vec<u8> = (0..(i * 4 % 1200)).map(|b| (b * 31 + i) as u8).collect();
        socket.send_to(&garbage, media).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    socket.send_to(&stun, media).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = node.metric("bitriver_webrtc_unrouted_datagrams_total").await.unwrap_or(0.0);
        if now - before >= 150.0 {
            break;
        }
        assert!(Instant::now() < deadline, "unrouted datagrams counted: {} of 301 sent", now - before);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(node.is_running(), "the node survives garbage on its media port");

    // The session that never connected times out; its publish ends in the catalog.
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.metric("bitriver_webrtc_sessions{kind=\"publish\"}").await != Some(0.0) {
        assert!(Instant::now() < deadline, "the unconnected session never timed out:\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while live_state(&node, &id).await != "offline" {
        assert!(Instant::now() < deadline, "the channel stayed live after its WHIP session timed out");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(node.log_text().contains("ICE did not connect in time"), "{}", node.log_text());
    let (status, _, _) = call(reqwest::Method::DELETE, &node.url(&location), None, Some(&key), "").await;
    assert_eq!(status, 404, "a timed-out session is gone");
    node.wait_healthy(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_port_range_gives_each_session_its_own_port_and_ice_servers_go_in_link_headers() {
    let root = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(root.path(), "webrtc-range");
    let (first, _) = common::free_ports();
    let range = format!("{first}-{}", first + 3);
    let ice = "stun:stun.example.org:3478,turn:alice:s3cret@turn.example.org:3478?transport=udp";
    start_with_rtmp(&mut node, &["--webrtc-udp-ports", &range, "--webrtc-ice-servers", ice]).await;
    let (id, key) = create_channel(&node, "Range").await;

    let (status, headers, _) = call(reqwest::Method::OPTIONS, &node.url("/whip"), None, None, "").await;
    assert_eq!(status, 204);
    let links: Vec<&str> = headers.get_all("link").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(
        links,
        [
            "<stun:stun.example.org:3478>; rel=\"ice-server\"",
            "<turn:turn.example.org:3478?transport=udp>; rel=\"ice-server\"; username=\"alice\"; \
             credential=\"s3cret\"; credential-type=\"password\""
        ]
    );
    assert!(headers.get("access-control-allow-methods").is_some());

    let (status, headers, answer) =
        call(reqwest::Method::POST, &node.url("/whip"), Some("application/sdp"), Some(&key), OFFER).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(headers.get_all("link").iter().count(), 2);
    let port_of = |answer: &str| -> u16 {
        let line = answer.lines().find(|l| l.starts_with("a=candidate:")).expect("a host candidate");
        line.split(' ').nth(5).unwrap().parse().unwrap()
    };
    let publish_port = port_of(&answer);
    assert!((first..=first + 3).contains(&publish_port), "{publish_port} outside {range}");
    let location = headers.get("location").unwrap().to_str().unwrap().to_owned();
    let (status, _, _) = call(reqwest::Method::DELETE, &node.url(&location), None, Some(&key), "").await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while live_state(&node, &id).await != "offline" {
        assert!(Instant::now() < deadline, "DELETE did not end the publish:\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn browser_tools() -> bool {
    testkit::require_tools(&[MEDIA_TOOLS, testkit::tools::BROWSER].concat())
}

#[tokio::test]
async fn chromium_publishes_over_whip_and_hls_js_plays_the_llhls() {
    if !browser_tools() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(root.path(), "whip");
    start_with_rtmp(&mut node, &[]).await;
    let (id, key) = create_channel(&node, "WHIP from Chromium").await;

    // Chromium's fake camera and microphone, published for 30 s.
    let started = Instant::now();
    let whip = node.url("/whip");
    let publisher = tokio::task::spawn_blocking(move || run_rtc_script("whip.mjs", &[&whip, &key, "30"], &[]));
    let media = wait_playable(&node, &id, started).await;
    assert_eq!(live_state(&node, &id).await, "live");

    // The LL-HLS carries H.264 as published and AAC transcoded from Opus.
    let probe = ffprobe(&["-show_streams", &node.url(&format!("/hls/{id}/master.m3u8"))]).await;
    let video = stream(&probe, "h264").unwrap_or_else(|| panic!("no H.264 in {probe}"));
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(640), Some(360)), "{probe}");
    let audio = stream(&probe, "aac").unwrap_or_else(|| panic!("no AAC in {probe}"));
    assert_eq!(audio["sample_rate"], "48000", "{probe}");
    let playlist = node.get(&media).await.unwrap().1;
    assert!(playlist.contains("#EXT-X-PART:"), "{playlist}");

    // hls.js plays it through the edge.
    let url = node.edge_url(&format!("/hls/{id}/master.m3u8")).await;
    let played = tokio::task::spawn_blocking(move || play_in_chromium(&url, 3.0)).await.unwrap();
    let played = played.unwrap_or_else(|e| panic!("{e}\n{}", node.log_text()));
    println!("hls.js played the WHIP publish: latency {} s, stalls {}", played["latency"], played["stalls"]);

    // And a WHEP viewer plays it too: its wait for a keyframe goes back to the publisher (PLI).
    let whep = node.url(&format!("/whep/{id}"));
    let viewed = tokio::task::spawn_blocking(move || run_rtc_script("whep.mjs", &[&whep, "2"], &[])).await.unwrap();
    let viewed = viewed.unwrap_or_else(|e| panic!("{e}\n{}", node.log_text()));
    assert_eq!(viewed["audio"]["codec"], "audio/opus", "{viewed}");
    assert!(node.metric("bitriver_webrtc_keyframe_requests_total{reason=\"viewer\"}").await >= Some(1.0));
    assert!(node.metric("bitriver_webrtc_keyframe_requests_total{reason=\"segment\"}").await >= Some(1.0));
    println!("WHEP of the WHIP publish: first frame after {} ms", viewed["timeToFirstFrameMs"]);

    let published = publisher.await.unwrap().unwrap_or_else(|e| panic!("{e}\n{}", node.log_text()));
    assert_eq!(published["video"]["codec"], "video/H264", "{published}");
    assert!(published["video"]["keyFramesEncoded"].as_u64() > Some(5), "keyframes asked per segment: {published}");
    assert_eq!(published["deleteStatus"], 200, "{published}");
    println!(
        "WHIP: connected in {} ms, {} frames encoded",
        published["connectedMs"], published["video"]["framesEncoded"]
    );
    // DELETE ended the publish like an RTMP disconnect.
    let deadline = Instant::now() + Duration::from_secs(10);
    while live_state(&node, &id).await != "offline" {
        assert!(Instant::now() < deadline, "still live after DELETE:\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(node.log_text().contains("reason=\"deleted by the client\""), "{}", node.log_text());
}

#[tokio::test]
async fn chromium_plays_an_rtmp_publish_over_whep_with_glass_to_glass_latency() {
    if !browser_tools() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(root.path(), "whep");
    let rtmp = start_with_rtmp(&mut node, &[]).await;
    let (id, key) = create_channel(&node, "WHEP of RTMP").await;
    // The wall clock burned into each frame, so the browser can tell how old what it shows is.
    let pattern =
        testkit::ffmpeg::TestPattern { seconds: Some(60), clock: true, ..testkit::ffmpeg::TestPattern::new(640, 360) };
    let started = Instant::now();
    let _publisher = pattern.publish("flv", &rtmp_url(rtmp, &key), &root.path().join("ffmpeg.log"));
    wait_playable(&node, &id, started).await;

    let (_, body) = node.get(&format!("/api/channels/{id}")).await.unwrap();
    let channel: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(channel["whepUrl"], format!("/whep/{id}"), "{channel}");
    // Through the edge: it redirects the offer to the origin, which serves the media.
    let whep = node.edge_url(&format!("/whep/{id}")).await;
    let env = [("WHEP_CLOCK", "1".to_owned())];
    let played = tokio::task::spawn_blocking(move || run_rtc_script("whep.mjs", &[&whep, "5"], &env)).await.unwrap();
    let played = played.unwrap_or_else(|e| panic!("{e}\n{}", node.log_text()));
    assert_eq!(played["video"]["codec"], "video/H264", "{played}");
    assert!(played["video"]["framesDecodedGrowth"].as_u64() >= Some(60), "5 s of 30 fps: {played}");
    assert_eq!(played["audio"]["codec"], "audio/opus", "{played}");
    assert!(played["audio"]["packetsReceived"].as_u64() > Some(0), "{played}");
    assert_eq!(played["deleteStatus"], 200, "{played}");
    let session = played["location"].as_str().unwrap_or_default();
    assert!(session.starts_with(&node.url(&format!("/whep/{id}/"))), "the edge sent the offer to the origin: {played}");
    assert!(node.metric("bitriver_webrtc_frames_sent_total{kind=\"audio\"}").await > Some(0.0));

    // The same clock through LL-HLS and hls.js, for comparison (printed, not asserted).
    let url = node.edge_url(&format!("/hls/{id}/master.m3u8")).await;
    let env = [("PLAY_CLOCK", "1".to_owned())];
    let hls = tokio::task::spawn_blocking(move || play_in_chromium_env(&url, 5.0, &env)).await.unwrap();
    let hls_clock = hls.map(|s| s["clockLatencyMs"].clone()).unwrap_or_else(serde_json::Value::String);
    println!(
        "glass-to-glass on loopback (wall clock burned by ffmpeg, read from the frame on screen), ms: \
         WHEP {} (first frame after {} ms, jitter buffer {:.0} ms); LL-HLS through the edge {}",
        played["clockLatencyMs"],
        played["timeToFirstFrameMs"],
        played["video"]["jitterBufferMs"].as_f64().unwrap_or(0.0),
        hls_clock
    );
}
