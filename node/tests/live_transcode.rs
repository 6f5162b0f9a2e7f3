//! The transcode ladder against the real `bitriver` binary: a 640x360 broadcast over RTMP with
//! `--transcode-ladder 360p:800,180p:300` comes out as three renditions (source, 360p, 180p) that
//! ffprobe decodes at their sizes, whose segment N starts at the same decode time and program
//! date-time in every rendition, that the multivariant playlist lists with their attributes, and
//! that hls.js plays and switches between. A ladder taller than the source is not upscaled, and
//! a bad ladder string stops the node at start with the flag named.
//!
//! Needs ffmpeg and ffprobe (and Chromium for the player); fails naming a missing one.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::live::{create_channel, probe_size, publish, rtmp_url, start_with_rtmp, Encoding, MEDIA_TOOLS};
use common::{get_json, wait_for_body, NodeProc};
use serde_json::json;

/// A node with RTMP on a free port and the given ladder; returns it and the RTMP port.
async fn start_node(dir: &Path, ladder: &str) -> (NodeProc, u16) {
    let mut node = NodeProc::new(dir, "transcode");
    let rtmp_port = start_with_rtmp(&mut node, &["--transcode-ladder", ladder]).await;
    (node, rtmp_port)
}

/// ffmpeg publishing the 640x360 test pattern over RTMP for `seconds`.
fn publish_rtmp(dir: &Path, rtmp_port: u16, key: &str, seconds: u32, encoding: Encoding) -> tokio::process::Child {
    publish("flv", &rtmp_url(rtmp_port, key), seconds, encoding, &dir.join("ffmpeg.log"))
}

/// `(name, attributes)` of each `EXT-X-STREAM-INF` of a multivariant playlist, in order.
fn variants(master: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    let mut lines = master.lines();
    while let Some(line) = lines.next() {
        let Some(attrs) = line.strip_prefix("#EXT-X-STREAM-INF:") else { continue };
        let mut map = BTreeMap::new();
        // Attribute values never contain `,` except the quoted CODECS list.
        let mut rest = attrs;
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=').unwrap();
            let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
                let end = quoted.find('"').unwrap();
                (&quoted[..end], quoted[end + 1..].trim_start_matches(','))
            } else {
                after.split_once(',').unwrap_or((after, ""))
            };
            map.insert(key.to_owned(), value.to_owned());
            rest = next;
        }
        let uri = lines.next().unwrap();
        out.push((uri.trim_end_matches("/index.m3u8").to_owned(), map));
    }
    out
}

/// Complete segments of a media playlist: msn -> (program date-time, EXTINF duration).
fn segments(playlist: &str) -> BTreeMap<u64, (String, String)> {
    let mut out = BTreeMap::new();
    let mut pdt = String::new();
    let mut lines = playlist.lines();
    while let Some(line) = lines.next() {
        if let Some(p) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = p.to_owned();
        } else if let Some(d) = line.strip_prefix("#EXTINF:") {
            let uri = lines.next().unwrap();
            let msn = uri.strip_prefix("seg").and_then(|u| u.strip_suffix(".m4s")).unwrap().parse().unwrap();
            out.insert(msn, (pdt.clone(), d.trim_end_matches(',').to_owned()));
        }
    }
    out
}

/// `baseMediaDecodeTime` of track `track_id` in the first `moof` of a CMAF segment.
fn first_tfdt(segment: &[u8], track_id: u32) -> Option<u64> {
    fn boxes(data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut at = 0;
        std::iter::from_fn(move || {
            let header = data.get(at..at + 8)?;
            let size = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
            let body = data.get(at + 8..at + size)?;
            at += size.max(8);
            Some((&header[4..8], body))
        })
    }
    let (_, moof) = boxes(segment).find(|(kind, _)| *kind == b"moof")?;
    for (_, traf) in boxes(moof).filter(|(kind, _)| *kind == b"traf") {
        let tfhd = boxes(traf).find(|(kind, _)| *kind == b"tfhd")?.1;
        if u32::from_be_bytes(tfhd.get(4..8)?.try_into().ok()?) != track_id {
            continue;
        }
        let tfdt = boxes(traf).find(|(kind, _)| *kind == b"tfdt")?.1;
        return Some(if tfdt[0] == 1 {
            u64::from_be_bytes(tfdt.get(4..12)?.try_into().ok()?)
        } else {
            u64::from(u32::from_be_bytes(tfdt.get(4..8)?.try_into().ok()?))
        });
    }
    None
}

async fn bytes(node: &NodeProc, path: &str) -> Vec<u8> {
    let resp = reqwest::get(node.url(path)).await.unwrap();
    assert_eq!(resp.status(), 200, "GET {path}");
    resp.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ladder_renditions_are_aligned_and_hls_js_switches_between_them() {
    if !testkit::require_tools(&[MEDIA_TOOLS, testkit::tools::BROWSER].concat()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (node, rtmp_port) = start_node(dir.path(), "360p:800,180p:300").await;
    let health = get_json(&node, "/healthz").await;
    let transcode = &health["components"]["transcode"];
    assert_eq!(transcode["enabled"], true, "{health}");
    assert_eq!(transcode["ladder"], "360p:800,180p:300", "{health}");
    assert_eq!(transcode["encoder"], "libx264", "{health}");
    let probed: Vec<_> = transcode["hardware"].as_array().unwrap().iter().map(|h| h["name"].clone()).collect();
    assert_eq!(probed, [json!("h264_nvenc"), json!("h264_vaapi"), json!("h264_qsv")], "{health}");

    let (id, key) = create_channel(&node, "Ladder").await;
    let started = Instant::now();
    let _publisher = publish_rtmp(dir.path(), rtmp_port, &key, 50, Encoding::BFrames);

    let master_path = format!("/hls/{id}/master.m3u8");
    let master = wait_for_body(&node, &master_path, "180p/index.m3u8", started, Duration::from_secs(20)).await;
    let listed = variants(&master);
    let names: Vec<_> = listed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["source", "360p", "180p"], "{master}");
    let resolutions: Vec<_> = listed.iter().map(|(_, a)| a["RESOLUTION"].as_str()).collect();
    assert_eq!(resolutions, ["640x360", "640x360", "320x180"], "{master}");
    for (name, attrs) in &listed {
        let codecs = &attrs["CODECS"];
        assert!(codecs.starts_with("avc1.") && codecs.ends_with(",mp4a.40.2"), "{name}: {codecs}");
        assert!(attrs["BANDWIDTH"].parse::<u64>().unwrap() > 0, "{name}");
    }
    // Before anything is measured, rungs advertise their configured rate plus the audio.
    assert_eq!(listed[2].1["BANDWIDTH"], "428000", "{master}");

    // Four complete segments in every rendition.
    for name in names.iter() {
        let path = format!("/hls/{id}/{name}/index.m3u8");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, body) = node.get(&path).await.unwrap();
            if segments(&body).len() >= 4 {
                break;
            }
            assert!(Instant::now() < deadline, "{path} never had 4 segments:\n{body}\n{}", node.log_text());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // ffprobe decodes each rendition at its size.
    let mut sizes = Vec::new();
    for name in names.iter() {
        sizes.push(probe_size(&node.url(&format!("/hls/{id}/{name}/index.m3u8"))).await);
    }
    assert_eq!(sizes, [(640, 360), (640, 360), (320, 180)]);

    // The catalog session lists what the broadcast is served in.
    let sessions = get_json(&node, &format!("/api/channels/{id}/sessions")).await;
    let live = sessions.as_array().and_then(|s| s.iter().find(|s| s["endedAt"].is_null())).cloned();
    assert_eq!(live.map(|s| s["renditions"].clone()), Some(json!(["source", "360p", "180p"])), "{sessions}");

    // The same media sequence number starts at the same decode time and program date-time, and
    // lasts as long, in every rendition.
    let mut listings = Vec::new();
    for name in names.iter() {
        let (_, body) = node.get(&format!("/hls/{id}/{name}/index.m3u8")).await.unwrap();
        listings.push(segments(&body));
    }
    let common: Vec<u64> =
        listings[0].keys().copied().filter(|msn| listings.iter().all(|l| l.contains_key(msn))).collect();
    assert!(common.len() >= 3, "too few segments in common: {listings:?}");
    for msn in &common {
        let source = &listings[0][msn];
        for (name, listing) in names.iter().zip(&listings).skip(1) {
            assert_eq!(&listing[msn], source, "segment {msn} of {name}: (PDT, duration) differ from source");
        }
        let mut starts = Vec::new();
        for name in names.iter() {
            let segment = bytes(&node, &format!("/hls/{id}/{name}/seg{msn}.m4s")).await;
            starts.push(first_tfdt(&segment, 1).unwrap_or_else(|| panic!("no video tfdt in {name}/seg{msn}")));
        }
        assert!(starts.iter().all(|s| *s == starts[0]), "segment {msn} starts at different times: {starts:?}");
    }
    println!("aligned segments {common:?}");

    let lag = node.metric("bitriver_transcode_lag_seconds{").await;
    let (_, metrics) = node.get("/metrics").await.unwrap();
    assert!(metrics.contains("bitriver_transcode_lag_seconds{channel="), "no lag metric (got {lag:?})");
    assert!(metrics.contains(&format!("bitriver_transcode_active_rungs{{channel=\"{id}\"}} 2")), "{metrics}");

    // hls.js plays the multivariant playlist and switches to the 180p level on request (hls.js
    // orders levels by bandwidth, so 180p is its level 0; its automatic choice starts higher).
    let url = node.url(&master_path);
    let summary = tokio::task::spawn_blocking(move || common::browser::play_in_chromium_switching(&url, 4.0, 0))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary["levels"].as_array().map(Vec::len), Some(3), "{summary}");
    assert_eq!(summary["levels"][0]["height"], 180, "{summary}");
    assert_eq!(summary["level"], 0, "{summary}");
    assert!(summary["levelSwitches"].as_u64().unwrap() >= 1, "{summary}");
    assert!(summary["playedAfterSwitch"].as_f64().unwrap() >= 1.0, "{summary}");
    assert_eq!(summary["video"]["height"], 180, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rung_taller_than_the_source_is_not_encoded() {
    if !testkit::require_tools(MEDIA_TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (node, rtmp_port) = start_node(dir.path(), "720p:2000,180p:300").await;
    let (id, key) = create_channel(&node, "Ladder").await;
    let started = Instant::now();
    let _publisher = publish_rtmp(dir.path(), rtmp_port, &key, 30, Encoding::ZeroLatency);
    let master_path = format!("/hls/{id}/master.m3u8");
    let master = wait_for_body(&node, &master_path, "#EXT-X-STREAM-INF", started, Duration::from_secs(20)).await;
    let names: Vec<_> = variants(&master).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["source", "180p"], "{master}");
    let (status, _) = node.get(&format!("/hls/{id}/720p/index.m3u8")).await.unwrap();
    assert_eq!(status, 404);
    wait_for_body(&node, &format!("/hls/{id}/180p/index.m3u8"), "#EXTINF", started, Duration::from_secs(20)).await;
    assert_eq!(probe_size(&node.url(&format!("/hls/{id}/180p/index.m3u8"))).await, (320, 180));
    assert!(node.log_text().contains("transcode ladder started"), "{}", node.log_text());
}

#[test]
fn an_invalid_ladder_is_a_startup_error_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    for (ladder, env) in [("720p:fast", false), ("720p:3500,720p:2000", true)] {
        let mut node = NodeProc::new(dir.path(), "bad");
        if env {
            node.env.push(("BITRIVER_TRANSCODE_LADDER".into(), ladder.into()));
        } else {
            node.args = vec!["--transcode-ladder".into(), ladder.into()];
        }
        let out = node.command().output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{ladder}: {stderr}");
        assert!(stderr.contains("--transcode-ladder"), "{ladder}: {stderr}");
    }
}
