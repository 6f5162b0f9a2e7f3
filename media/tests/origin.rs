//! The origin over real HTTP: an axum server on loopback, reqwest as the player, synthetic H.264
//! access units pushed through a `LiveHandle`. Each test also feeds a twin `Rendition` outside the
//! registry with the same samples, so served bytes can be compared with what the packager makes.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{frame_of, now_of, serve, video_config, T0};
use media::cmaf::{AudioConfig, Sample};
use media::hls::{Rendition, RenditionConfig};
use media::origin::{LiveHandle, LiveRegistry, LiveRendition, OriginError, OriginMetrics, RegistryConfig};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Long enough for a request that should wait to have answered if it didn't.
const STILL_PENDING: Duration = Duration::from_millis(300);

fn audio_config() -> AudioConfig {
    AudioConfig { asc: vec![0x11, 0x90], sample_rate: 48_000, channels: 2, codec_string: "mp4a.40.2".into() }
}

fn rendition(name: &str, audio: bool) -> Rendition {
    let config = RenditionConfig { name: name.into(), ..RenditionConfig::default() };
    Rendition::new(config, Some(video_config()), audio.then(audio_config)).unwrap()
}

/// Frame `i` of a 30 fps stream with a keyframe every second.
fn frame(i: u64) -> Sample {
    frame_of(i, 64)
}

/// A server with one live channel, and the twins of its renditions.
struct Live {
    base: String,
    client: reqwest::Client,
    registry: LiveRegistry,
    handle: Option<LiveHandle>,
    twins: Vec<Rendition>,
    next_frame: u64,
}

impl Live {
    async fn start(channel: &str, names: &[&str]) -> Self {
        let registry = LiveRegistry::new(RegistryConfig::default(), OriginMetrics::unregistered());
        let base = serve(registry.clone()).await;
        let renditions: Vec<_> = names.iter().map(|n| rendition(n, false)).collect();
        let handle = registry.open(channel, "session-1", renditions).unwrap();
        let twins = names.iter().map(|n| rendition(n, false)).collect();
        Live { base, client: reqwest::Client::new(), registry, handle: Some(handle), twins, next_frame: 0 }
    }

    /// Pushes the next `n` frames to every rendition (and its twin).
    fn push(&mut self, n: u64) {
        let handle = self.handle.as_ref().expect("live");
        for _ in 0..n {
            let i = self.next_frame;
            for (index, twin) in self.twins.iter_mut().enumerate() {
                let _ = handle.push_video(index, frame(i), now_of(i)).unwrap();
                let _ = twin.push_video(frame(i), now_of(i)).unwrap();
            }
            self.next_frame += 1;
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.base)).send().await.unwrap()
    }

    /// Starts a request that may wait; the task gives back status, headers and body.
    fn spawn_get(&self, path: &str) -> tokio::task::JoinHandle<(StatusCode, reqwest::header::HeaderMap, Bytes)> {
        let request = self.client.get(format!("{}{path}", self.base));
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let (status, headers) = (response.status(), response.headers().clone());
            (status, headers, response.bytes().await.unwrap())
        })
    }
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

async fn is_still_pending<T>(task: &mut tokio::task::JoinHandle<T>) -> bool {
    tokio::time::timeout(STILL_PENDING, task).await.is_err()
}

async fn error_code(response: reqwest::Response) -> String {
    assert_eq!(header(response.headers(), "content-type"), "application/json");
    assert_eq!(header(response.headers(), "access-control-allow-origin"), "*");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    body["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn blocking_reload_returns_once_the_part_is_published() {
    let mut live = Live::start("ch1", &["source", "360p"]).await;
    live.push(6); // part 0.0 published, part 0.1 hinted
    let mut waiting = live.spawn_get("/hls/ch1/source/index.m3u8?_HLS_msn=0&_HLS_part=1");
    assert!(is_still_pending(&mut waiting).await);

    live.push(6);
    let (status, headers, body) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-type"), "application/vnd.apple.mpegurl");
    assert_eq!(header(&headers, "cache-control"), "public, max-age=1");
    assert_eq!(header(&headers, "access-control-allow-origin"), "*");
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.contains("#EXT-X-PART:DURATION=0.20000,URI=\"part0.1.m4s\"\n"), "{text}");
    assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part0.2.m4s\"\n"), "{text}");
    assert!(text.contains("#EXT-X-RENDITION-REPORT:URI=\"../360p/index.m3u8\",LAST-MSN=0,LAST-PART=1\n"), "{text}");
    assert!(!text.contains("../source/"), "a rendition doesn't report itself:\n{text}");
    assert_eq!(live.registry.metrics().blocking_waits.get(), 1);

    // An update that already exists is answered at once.
    let response = live.get("/hls/ch1/360p/index.m3u8?_HLS_msn=0&_HLS_part=0").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(live.registry.metrics().blocking_waits.get(), 1);
    // A plain reload is never stale.
    let response = live.get("/hls/ch1/360p/index.m3u8").await;
    assert_eq!(header(response.headers(), "cache-control"), "no-cache");
}

#[tokio::test]
async fn waiting_for_a_segment_ends_when_the_next_keyframe_closes_it() {
    let mut live = Live::start("ch1", &["source"]).await;
    live.push(30); // all five parts of segment 0 are out, but it is complete only at the next keyframe
    let mut waiting = live.spawn_get("/hls/ch1/source/index.m3u8?_HLS_msn=0");
    assert!(is_still_pending(&mut waiting).await);
    live.push(1);
    let (status, _, body) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(std::str::from_utf8(&body).unwrap().contains("\nseg0.m4s\n"));
}

#[tokio::test]
async fn bad_blocking_requests_are_rejected_at_once() {
    let mut live = Live::start("ch1", &["source"]).await;
    live.push(6);
    for query in ["_HLS_part=1", "_HLS_msn=3", "_HLS_msn=3&_HLS_part=0", "_HLS_msn=x", "_HLS_skip=NO"] {
        let response = live.get(&format!("/hls/ch1/source/index.m3u8?{query}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(error_code(response).await, "bad_request");
    }
    assert_eq!(live.registry.metrics().blocking_waits.get(), 0);
}

#[tokio::test]
async fn nothing_published_for_three_target_durations_is_503() {
    let live = Live::start("ch1", &["source"]).await;
    let response = live.get("/hls/ch1/source/index.m3u8?_HLS_msn=0&_HLS_part=0").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(response.headers(), "retry-after"), "1");
    assert_eq!(error_code(response).await, "timeout");
    let metrics = live.registry.metrics();
    assert_eq!((metrics.blocking_waits.get(), metrics.blocking_timeouts.get()), (1, 1));
}

#[tokio::test]
async fn delta_update_is_smaller_with_the_same_tail() {
    let mut live = Live::start("ch1", &["source"]).await;
    live.push(314); // ten complete segments and two parts of the eleventh
    let full = live.get("/hls/ch1/source/index.m3u8").await.text().await.unwrap();
    let delta = live.get("/hls/ch1/source/index.m3u8?_HLS_skip=YES").await.text().await.unwrap();
    assert!(delta.len() < full.len());
    let delta: Vec<&str> = delta.lines().collect();
    let full: Vec<&str> = full.lines().collect();
    let skip = delta.iter().position(|l| l.starts_with("#EXT-X-SKIP:SKIPPED-SEGMENTS=")).expect("EXT-X-SKIP");
    let tail = &delta[skip + 1..];
    assert!(tail.iter().any(|l| l.starts_with("seg")));
    assert_eq!(tail, &full[full.len() - tail.len()..]);
    assert_eq!(delta[..skip], full[..skip]);
}

#[tokio::test]
async fn preload_hinted_part_waits_and_then_returns_its_bytes() {
    let mut live = Live::start("ch1", &["source"]).await;
    live.push(6); // hint: part 0.1
    let mut hinted = live.spawn_get("/hls/ch1/source/part0.1.m4s");
    let mut after_hinted = live.spawn_get("/hls/ch1/source/part0.2.m4s");
    assert!(is_still_pending(&mut hinted).await);
    // Further ahead is not worth waiting for.
    let response = live.get("/hls/ch1/source/part0.3.m4s").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(response).await, "not_found");
    let response = live.get("/hls/ch1/source/part1.0.m4s").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    live.push(6);
    let (status, headers, body) = hinted.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-type"), "video/iso.segment");
    assert_eq!(header(&headers, "cache-control"), "public, max-age=31536000, immutable");
    assert_eq!(body, live.twins[0].part(0, 1).unwrap());
    assert!(is_still_pending(&mut after_hinted).await);
    live.push(6);
    let (status, _, body) = after_hinted.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, live.twins[0].part(0, 2).unwrap());

    // The hint after the last part of a segment may never come: the keyframe that closes the
    // segment starts part 1.0 instead. The wait ends with 404 as soon as that happens.
    live.push(12); // frames 18..30: parts 0.3 and 0.4, hint 0.5
    let mut never = live.spawn_get("/hls/ch1/source/part0.5.m4s");
    assert!(is_still_pending(&mut never).await);
    live.push(1); // frame 30, a keyframe
    let (status, _, _) = never.await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(live.registry.metrics().blocking_timeouts.get(), 0);
}

#[tokio::test]
async fn init_segment_and_part_bytes_and_headers() {
    let mut live = Live::start("ch1", &["source"]).await;
    live.push(31); // segment 0 complete
    let twin = &live.twins[0];
    let init = hls_names::RenditionFile::Init(twin.init_id()).to_string();
    for (path, content_type, expected) in [
        (init.as_str(), "video/mp4", twin.init()),
        ("seg0.m4s", "video/iso.segment", twin.segment(0).unwrap()),
        ("part0.0.m4s", "video/iso.segment", twin.part(0, 0).unwrap()),
        ("part0.4.m4s", "video/iso.segment", twin.part(0, 4).unwrap()),
    ] {
        let response = live.get(&format!("/hls/ch1/source/{path}")).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        assert_eq!(header(headers, "content-type"), content_type, "{path}");
        assert_eq!(header(headers, "cache-control"), "public, max-age=31536000, immutable", "{path}");
        assert_eq!(header(headers, "access-control-allow-origin"), "*", "{path}");
        assert!(header(headers, "access-control-expose-headers").contains("Content-Length"));
        assert_eq!(response.bytes().await.unwrap(), expected, "{path}");
    }
    assert_eq!(&twin.init()[4..8], b"ftyp");
    for missing in ["seg1.m4s", "seg01.m4s", "part9.0.m4s", "clip.m4s", "init.mp4", "init-0000000000000000.mp4"] {
        let response = live.get(&format!("/hls/ch1/source/{missing}")).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(error_code(response).await, "not_found");
    }
    let metrics = live.registry.metrics();
    assert_eq!(metrics.requests.with_label_values(&["part"]).get(), 3);
    assert_eq!(metrics.bytes.with_label_values(&["init"]).get(), twin.init().len() as u64);

    let response = live
        .client
        .request(Method::OPTIONS, format!("{}/hls/ch1/source/part0.0.m4s", live.base))
        .header("Origin", "https://player.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "range")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let headers = response.headers();
    assert_eq!(header(headers, "access-control-allow-origin"), "*");
    assert!(header(headers, "access-control-allow-methods").contains("GET"));
    assert_eq!(header(headers, "access-control-allow-headers"), "range");
}

#[tokio::test]
async fn unknown_channels_and_renditions_are_404_json() {
    let live = Live::start("ch1", &["source"]).await;
    for path in [
        "/hls/nope/master.m3u8",
        "/hls/nope/source/index.m3u8",
        "/hls/nope/source/init-0000000000000000.mp4",
        "/hls/ch1/720p/index.m3u8",
        "/hls/ch1/720p/part0.0.m4s",
    ] {
        let response = live.get(path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(error_code(response).await, "not_found", "{path}");
    }
}

#[tokio::test]
async fn master_playlist_lists_renditions_with_codecs() {
    let registry = LiveRegistry::new(RegistryConfig::default(), OriginMetrics::unregistered());
    let base = serve(registry.clone()).await;
    let renditions = vec![
        LiveRendition::new(rendition("source", true)).with_bitrate(3_000_000),
        LiveRendition::new(rendition("360p", false)),
    ];
    let handle = registry.open("ch1", "s1", renditions).unwrap();
    let client = reqwest::Client::new();
    let response = client.get(format!("{base}/hls/ch1/master.m3u8")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(response.headers(), "content-type"), "application/vnd.apple.mpegurl");
    assert_eq!(header(response.headers(), "cache-control"), "public, max-age=2");
    let text = response.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "#EXTM3U");
    let inf: Vec<&str> = lines.iter().filter(|l| l.starts_with("#EXT-X-STREAM-INF:")).copied().collect();
    assert_eq!(inf.len(), 2, "{text}");
    // Before anything is measured: the configured bit rate, or a guess from the resolution.
    assert!(inf[0].contains("BANDWIDTH=3000000,"), "{text}");
    assert!(inf[0].contains("RESOLUTION=640x360"), "{text}");
    assert!(inf[0].contains("CODECS=\"avc1.42c01e,mp4a.40.2\""), "{text}");
    assert!(inf[1].contains("CODECS=\"avc1.42c01e\""), "{text}");
    assert!(lines.contains(&"source/index.m3u8") && lines.contains(&"360p/index.m3u8"), "{text}");

    for i in 0..31 {
        for index in 0..2 {
            let _ = handle.push_video(index, frame(i), now_of(i)).unwrap();
        }
    }
    let text = client.get(format!("{base}/hls/ch1/master.m3u8")).send().await.unwrap().text().await.unwrap();
    let inf: Vec<&str> = text.lines().filter(|l| l.starts_with("#EXT-X-STREAM-INF:")).collect();
    assert!(inf.iter().all(|l| l.contains("AVERAGE-BANDWIDTH=") && l.contains("FRAME-RATE=30.000")), "{text}");
    assert!(!inf[0].contains("BANDWIDTH=3000000,"), "measured replaces configured:\n{text}");
}

#[tokio::test]
async fn finishing_answers_waiters_with_the_final_playlist() {
    let mut live = Live::start("ch1", &["source"]).await;
    live.push(40);
    assert!(live.registry.is_live("ch1"));
    assert_eq!(live.registry.metrics().live_channels.get(), 1);
    let mut waiting = live.spawn_get("/hls/ch1/source/index.m3u8?_HLS_msn=1&_HLS_part=2");
    let hinted = live.spawn_get("/hls/ch1/source/part1.2.m4s");
    assert!(is_still_pending(&mut waiting).await);
    live.handle.take().unwrap().finish();

    let (status, _, body) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.ends_with("#EXT-X-ENDLIST\n") && !text.contains("PRELOAD-HINT"), "{text}");
    assert!(text.contains("seg1.m4s"), "the tail is published:\n{text}");
    assert_eq!(hinted.await.unwrap().0, StatusCode::NOT_FOUND);
    assert!(!live.registry.is_live("ch1"));
    assert_eq!(live.registry.metrics().live_channels.get(), 0);
    // Still servable for the retention time.
    assert_eq!(live.get("/hls/ch1/source/seg1.m4s").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_new_session_replaces_the_old_one() {
    let registry = LiveRegistry::new(RegistryConfig::default(), OriginMetrics::unregistered());
    let old = registry.open("ch1", "s1", vec![rendition("source", false)]).unwrap();
    let _ = old.push_video(0, frame(0), T0).unwrap();
    let new = registry.open("ch1", "s2", vec![rendition("source", false)]).unwrap();
    assert_eq!(registry.session("ch1").as_deref(), Some("s2"));
    assert!(!old.is_live() && new.is_live());
    assert!(matches!(old.push_video(0, frame(1), T0), Err(OriginError::Ended { .. })));
    drop(old); // must not end the new session
    assert!(registry.is_live("ch1"));
    assert_eq!(registry.metrics().live_channels.get(), 1);
    assert!(matches!(new.push_video(5, frame(0), T0), Err(OriginError::UnknownRendition { index: 5, .. })));
    assert!(new.push_video(0, frame(1), T0).is_ok());

    let duplicate = registry.open("ch2", "s", vec![rendition("a", false), rendition("a", false)]);
    assert!(matches!(duplicate, Err(OriginError::DuplicateRendition { .. })));
    assert!(matches!(registry.open("ch2", "s", Vec::<Rendition>::new()), Err(OriginError::NoRenditions { .. })));
}

#[tokio::test]
async fn channels_are_bounded_and_ended_ones_expire() {
    let config = RegistryConfig { max_channels: 1, ended_retention: Duration::from_millis(50) };
    let registry = LiveRegistry::new(config, OriginMetrics::unregistered());
    let base = serve(registry.clone()).await;
    let a = registry.open("a", "s", vec![rendition("source", false)]).unwrap();
    let refused = registry.open("b", "s", vec![rendition("source", false)]);
    assert!(matches!(refused, Err(OriginError::TooManyChannels { max: 1, .. })));
    a.finish();
    // An ended channel gives its slot to a new one.
    let _b = registry.open("b", "s", vec![rendition("source", false)]).unwrap();
    assert_eq!(registry.session("a"), None);

    let c = registry.open("b", "s2", vec![rendition("source", false)]).unwrap();
    c.finish();
    let master = format!("{base}/hls/b/master.m3u8");
    assert_eq!(reqwest::get(&master).await.unwrap().status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(reqwest::get(&master).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(registry.session("b"), None);
}

/// Every URI the playlists name is served, and the origin refuses every other spelling of it
/// exactly where the shared grammar (which the edge keys its cache with) refuses it.
#[tokio::test]
async fn playlist_uris_and_the_shared_grammar_agree() {
    let mut live = Live::start("ch1", &["source", "360p"]).await;
    live.push(95); // three segments and two parts of the fourth
    let master = live.get("/hls/ch1/master.m3u8").await.text().await.unwrap();
    let playlist = live.get("/hls/ch1/source/index.m3u8").await.text().await.unwrap();
    let mut uris: Vec<String> = playlist
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_owned)
        .chain(playlist.lines().filter(|l| !l.starts_with("#EXT-X-PRELOAD-HINT")).filter_map(|l| {
            let (_, rest) = l.split_once("URI=\"")?;
            Some(rest.split('"').next()?.to_owned())
        }))
        .collect();
    uris.sort();
    uris.dedup();
    assert!(uris.len() > 10, "{uris:?}");
    let mut names = Vec::new();
    for uri in &uris {
        let path = if let Some(sibling) = uri.strip_prefix("../") {
            format!("/hls/ch1/{sibling}")
        } else {
            format!("/hls/ch1/source/{uri}")
        };
        assert!(hls_names::HlsPath::parse(&path).is_some(), "{path} outside the grammar");
        assert_eq!(live.get(&path).await.status(), StatusCode::OK, "{path}");
        names.push(path);
    }
    for line in master.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let path = format!("/hls/ch1/{line}");
        assert!(hls_names::HlsPath::parse(&path).is_some(), "{path}");
        assert_eq!(live.get(&path).await.status(), StatusCode::OK, "{path}");
    }
    // Other spellings of the same objects: a leading zero before any number, upper case.
    for path in names.iter().filter(|p| p.ends_with(".m4s")) {
        let (dir, file) = path.rsplit_once('/').unwrap();
        let spellings = [file.replacen("seg", "seg0", 1), file.replacen("part", "part0", 1), file.to_uppercase()];
        for spelling in spellings.iter().filter(|s| *s != file) {
            let other = format!("{dir}/{spelling}");
            assert_eq!(hls_names::HlsPath::parse(&other), None, "{other}");
            assert_eq!(live.get(&other).await.status(), StatusCode::NOT_FOUND, "{other}");
        }
    }
}
