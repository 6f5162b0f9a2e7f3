//! Media between nodes with real `bitriver` processes, each in a network namespace of its own
//! (see `common::netns`): ffmpeg publishes RTMP into an ingest-only node; two origin nodes of
//! the region subscribe to the channel's track over the cluster's QUIC and package it
//! themselves; an edge plays it from the primary origin, and keeps playing when that origin is
//! killed with SIGKILL mid-stream (same media sequence numbers from the standby, no
//! discontinuity, the failover counted).
//!
//! Needs ffmpeg and ffprobe (fails naming them unless BITRIVER_ALLOW_SKIP=1) and `ip`.

mod common;

use std::time::{Duration, Instant};

use common::fleet::{all_reported, call, channel_as_admin, member_at, start_fleet, Fleet};
use common::live::{publish, wait_url_body, Encoding};
use common::netns::Net;
use serde_json::json;

fn media_missing() -> bool {
    !testkit::require_tools(common::live::MEDIA_TOOLS)
}

/// The playlist's `EXT-X-MEDIA-SEQUENCE`, its newest segment's msn, and whether it has a
/// discontinuity.
fn playlist_facts(playlist: &str) -> (u64, Option<u64>, bool) {
    let sequence = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no media sequence in {playlist}"));
    let newest = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("seg").and_then(|r| r.strip_suffix(".m4s")))
        .filter_map(|n| n.parse().ok())
        .max();
    (sequence, newest, playlist.contains("#EXT-X-DISCONTINUITY"))
}

/// The URI of the playlist's newest `EXT-X-PART`.
fn newest_part(playlist: &str) -> Option<String> {
    let line = playlist.lines().rev().find(|l| l.starts_with("#EXT-X-PART:"))?;
    Some(line.split("URI=\"").nth(1)?.split('"').next()?.to_owned())
}

/// How often the test reads the playlist through the edge.
const POLL_EVERY: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_keeps_playing_from_the_standby_origin_when_the_primary_is_killed() {
    if media_missing() {
        return;
    }
    let Some(mut net) = Net::new() else { return };
    let root = tempfile::tempdir().unwrap();
    let members =
        [("ingest", "ingest", "a"), ("origin1", "origin", "a"), ("origin2", "origin", "a"), ("edge", "edge", "a")];
    let Fleet { spaces, control, token, mut nodes } = start_fleet(&mut net, root.path(), &members).await;
    let (id, key) = channel_as_admin(&control, &token).await;
    let [ingest, origin1, origin2, edge] = &mut nodes[..] else { unreachable!() };
    let cluster = all_reported(&control, &token, 5).await;
    let (o1, o2) = (member_at(&cluster, spaces[2].ip), member_at(&cluster, spaces[3].ip));
    let primary_id = bitriver_node::placement::rank(&id, &[o1, o2])[0];
    let (primary, standby, primary_ip, standby_ip) = if primary_id == o1 {
        (origin1, origin2, spaces[2].ip, spaces[3].ip)
    } else {
        (origin2, origin1, spaces[3].ip, spaces[2].ip)
    };

    let rtmp = format!("rtmp://{}:1935/live/{key}", spaces[1].ip);
    let mut publisher = publish("flv", &rtmp, 120, Encoding::ZeroLatency, &root.path().join("ffmpeg.log"));
    let edge_ip = spaces[4].ip;
    let playlist_url = format!("http://{edge_ip}:8081/hls/{id}/source/index.m3u8");
    let all = [&control, &*ingest, &*primary, &*standby, &*edge];
    let playlist = wait_url_body(&playlist_url, "#EXTINF", Duration::from_secs(40), &all).await;
    assert!(!playlist.contains("#EXT-X-DISCONTINUITY"), "{playlist}");

    // ffprobe reads the channel through the edge.
    let (width, height) = testkit::ffmpeg::probe_size(&format!("http://{edge_ip}:8081/hls/{id}/master.m3u8")).await;
    assert_eq!((width, height), (640, 360));

    // Both origins package the relayed track and name and write the same segments.
    let standby_playlist = wait_url_body(
        &format!("http://{standby_ip}:8080/hls/{id}/source/index.m3u8"),
        "#EXTINF",
        Duration::from_secs(20),
        &all,
    )
    .await;
    let (_, Some(newest), _) = playlist_facts(&standby_playlist) else { panic!("{standby_playlist}") };
    let segment = |ip| format!("http://{ip}:8080/hls/{id}/source/seg{newest}.m4s");
    let a = reqwest::get(segment(primary_ip)).await.unwrap();
    let b = reqwest::get(segment(standby_ip)).await.unwrap();
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200), "segment {newest} on both origins");
    let (a, b) = (a.bytes().await.unwrap(), b.bytes().await.unwrap());
    assert!(a.len() > 1000 && a == b, "segment {newest}: {} vs {} bytes, same content: {}", a.len(), b.len(), a == b);
    let init =
        |p: &str| p.lines().find_map(|l| l.split("URI=\"").nth(1).map(|r| r.split('"').next().unwrap().to_owned()));
    let primary_playlist = reqwest::get(format!("http://{primary_ip}:8080/hls/{id}/source/index.m3u8"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(init(&primary_playlist), init(&standby_playlist), "one init segment name");

    // Poll through the edge, kill -9 the primary, keep polling. Each new part's arrival time gives
    // the gap a player sees (printed: a benchmark figure, not asserted).
    let failovers_before = edge.metric("bitriver_edge_origin_failovers_total").await.unwrap_or(0.0);
    let mut before_kill = (0, 0);
    let mut sequences = Vec::new();
    let mut killed_at: Option<Instant> = None;
    let mut parts: Vec<(Instant, String)> = Vec::new();
    let started = Instant::now();
    let mut errors = 0;
    while started.elapsed() < Duration::from_secs(14) {
        if killed_at.is_none() && started.elapsed() >= Duration::from_secs(3) {
            primary.kill9();
            killed_at = Some(Instant::now());
        }
        match testkit::http::get(&playlist_url).await {
            Some((200, body)) => {
                let (sequence, newest, discontinuity) = playlist_facts(&body);
                assert!(!discontinuity, "a discontinuity after {:?}: {body}", started.elapsed());
                let newest = newest.unwrap_or(sequence);
                if let Some(&(last_sequence, last_newest)) = sequences.last() {
                    assert!(
                        sequence >= last_sequence && newest + 1 >= last_newest,
                        "the playlist went back: ({last_sequence}, {last_newest}) then ({sequence}, {newest}): {body}"
                    );
                }
                if killed_at.is_none() {
                    before_kill = (sequence, newest);
                }
                sequences.push((sequence, newest));
                if let Some(part) = newest_part(&body) {
                    if parts.last().is_none_or(|(_, last)| *last != part) {
                        parts.push((Instant::now(), part));
                    }
                }
            }
            other => {
                errors += 1;
                eprintln!("playlist through the edge: {other:?} at {:?}", started.elapsed());
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let killed_at = killed_at.expect("the primary was killed");
    // The longest wait between two new parts from just before the kill to 5 s after it.
    let around: Vec<Instant> = parts
        .iter()
        .map(|(at, _)| *at)
        .filter(|at| *at + Duration::from_secs(1) >= killed_at && *at <= killed_at + Duration::from_secs(5))
        .collect();
    let gap = around.windows(2).map(|w| w[1] - w[0]).max();
    if let Some(gap) = gap {
        eprintln!(
            "failover gap seen by a player: {:.0} ms, the longest wait for a new part from 1 s before the kill \
             to 5 s after ({} parts; a part lasts 200 ms; playlist polled every {} ms through the edge)",
            gap.as_secs_f64() * 1e3,
            around.len(),
            POLL_EVERY.as_millis()
        );
    }
    let after = *sequences.last().expect("playlists were read");
    eprintln!(
        "before the kill {before_kill:?}, at the end {after:?}, {errors} failed reads of {}",
        sequences.len() + errors
    );
    assert!(after.1 >= before_kill.1 + 5, "playback went on after the kill: {before_kill:?} -> {after:?}");
    // At most 400 ms of failed reads.
    assert!(errors <= 8, "{errors} playlist reads failed through the edge");
    let failovers = edge.metric("bitriver_edge_origin_failovers_total").await.unwrap_or(0.0);
    assert!(failovers > failovers_before, "the edge counted a failover ({failovers_before} -> {failovers})");
    assert!(edge.log_text().contains("trying the channel's next origin"), "{}", edge.log_text());
    // The segments after the kill come from the standby, under the numbers the primary used.
    let last = reqwest::get(format!("http://{edge_ip}:8081/hls/{id}/source/seg{}.m4s", after.1)).await.unwrap();
    assert_eq!(last.status(), 200);

    let _ = publisher.kill().await;
    drop(nodes);
    drop(control);
    drop(net);
}

/// A publish that arrives at an ingest node of region `b` for a channel whose home is region `a`
/// is accepted, said so in the ingest node's log, and packaged by `a`'s origin (over the relay),
/// not by an origin of `b`; an edge plays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_in_another_region_is_relayed_to_the_home_regions_origin() {
    if media_missing() {
        return;
    }
    let Some(mut net) = Net::new() else { return };
    let root = tempfile::tempdir().unwrap();
    let members = [
        ("origin-a", "origin", "a"),
        ("ingest-b", "ingest", "b"),
        ("origin-b", "origin", "b"),
        ("edge-b", "edge", "b"),
    ];
    let Fleet { spaces, control, token, mut nodes } = start_fleet(&mut net, root.path(), &members).await;
    let (id, key) = channel_as_admin(&control, &token).await;
    let (status, body) =
        call("PATCH", &control.url(&format!("/api/channels/{id}")), &token, Some(json!({"homeRegion": "a"}))).await;
    assert_eq!(status, 200, "{body}");

    let rtmp = format!("rtmp://{}:1935/live/{key}", spaces[2].ip);
    let mut publisher = publish("flv", &rtmp, 60, Encoding::ZeroLatency, &root.path().join("ffmpeg.log"));
    let [origin_a, ingest_b, origin_b, edge_b] = &mut nodes[..] else { unreachable!() };
    let all = [&control, &*origin_a, &*ingest_b, &*origin_b, &*edge_b];
    // Region a's origin packages it; region b's origin does not.
    let home = format!("http://{}:8080/hls/{id}/source/index.m3u8", spaces[1].ip);
    wait_url_body(&home, "#EXTINF", Duration::from_secs(40), &all).await;
    let away = testkit::http::get(&format!("http://{}:8080/hls/{id}/source/index.m3u8", spaces[3].ip)).await;
    assert!(away.as_ref().is_none_or(|(status, _)| *status == 404), "region b's origin packages it: {away:?}");
    // Played through region b's edge, from a's origin.
    let edge = format!("http://{}:8081/hls/{id}/source/index.m3u8", spaces[4].ip);
    wait_url_body(&edge, "#EXTINF", Duration::from_secs(20), &all).await;
    let log = ingest_b.log_text();
    assert!(log.contains("the channel's home is a: relaying it to a's origins"), "{log}");

    // Recorded by the channel's primary origin (region a's), which packages every rendition;
    // once published it plays through region b's edge, which asks that origin for it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    testkit::process::signal(publisher.id().expect("running"), testkit::process::Signal::INT);
    let _ = tokio::time::timeout(Duration::from_secs(10), publisher.wait()).await;
    let recordings = control.url(&format!("/api/recordings?channelId={id}"));
    let deadline = Instant::now() + Duration::from_secs(40);
    let recording = loop {
        let (_, list) = call("GET", &recordings, &token, None).await;
        if let Some(r) = list["recordings"].as_array().and_then(|l| l.first()).filter(|r| r["status"] == "ready") {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "no ready recording: {list}\n{}", origin_a.log_text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let recording_id = recording["id"].as_str().unwrap().to_owned();
    assert!(origin_a.data.join("recordings").join(&recording_id).exists(), "origin a holds the files");
    for other in [&*ingest_b, &*origin_b, &*edge_b] {
        assert!(!other.data.join("recordings").join(&recording_id).exists(), "{} holds a copy", other.name);
    }
    let vod = format!("http://{}:8081/vod/{recording_id}/master.m3u8", spaces[4].ip);
    assert_eq!(testkit::http::get(&vod).await.map(|(s, _)| s), Some(404), "a draft is not served by edges");
    let publish_url = control.url(&format!("/api/recordings/{recording_id}/publish"));
    let (status, body) = call("POST", &publish_url, &token, None).await;
    assert_eq!(status, 200, "{body}");
    let probe = testkit::ffmpeg::ffprobe(&["-show_entries", "format=duration", &vod]).await;
    let seconds: f64 = probe["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    let reported = recording["durationMs"].as_f64().unwrap() / 1000.0;
    assert!(seconds > 3.0 && (seconds - reported).abs() <= 1.0, "edge b serves {seconds} s, recorded {reported} s");
    println!("recording {recording_id} held by region a's origin, {seconds:.1} s through region b's edge");

    drop(nodes);
    drop(control);
    drop(net);
}

/// Every `bitriver_origin_requests_total{kind=...}` of `node`, summed.
async fn origin_requests(node: &common::NodeProc) -> f64 {
    let Some((_, body)) = node.get("/metrics").await else { return 0.0 };
    body.lines()
        .filter(|l| l.starts_with("bitriver_origin_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Draining the primary origin of a channel that plays through an edge: the edge stops asking it
/// (its request counter stands still), playback goes on from the other origins without a reset or
/// a discontinuity, and its `/healthz` says `drained` once it packages nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_origin_is_left_without_a_stop_in_playback() {
    if media_missing() {
        return;
    }
    let Some(mut net) = Net::new() else { return };
    let root = tempfile::tempdir().unwrap();
    let members = [
        ("ingest", "ingest", "a"),
        ("origin1", "origin", "a"),
        ("origin2", "origin", "a"),
        ("origin3", "origin", "a"),
        ("edge", "edge", "a"),
    ];
    let Fleet { spaces, control, token, nodes } = start_fleet(&mut net, root.path(), &members).await;
    let (id, key) = channel_as_admin(&control, &token).await;
    // Every member reports load before the publish, so placement sees all three origins.
    let cluster = all_reported(&control, &token, 6).await;
    let node_at = |i: usize| member_at(&cluster, spaces[i].ip);
    let origin_ids = [node_at(2), node_at(3), node_at(4)];
    let primary_id = bitriver_node::placement::rank(&id, &origin_ids)[0];
    let primary_at = 2 + origin_ids.iter().position(|&o| o == primary_id).unwrap();

    let rtmp = format!("rtmp://{}:1935/live/{key}", spaces[1].ip);
    let mut publisher = publish("flv", &rtmp, 120, Encoding::ZeroLatency, &root.path().join("ffmpeg.log"));
    let playlist_url = format!("http://{}:8081/hls/{id}/source/index.m3u8", spaces[5].ip);
    {
        let all: Vec<&common::NodeProc> = std::iter::once(&control).chain(nodes.iter()).collect();
        wait_url_body(&playlist_url, "#EXTINF", Duration::from_secs(40), &all).await;
    }
    let primary = &nodes[primary_at - 1];
    assert!(origin_requests(primary).await > 0.0, "the edge asked the primary first");

    let drain = control.url(&format!("/api/cluster/nodes/{primary_id}/drain"));
    let (status, body) = call("POST", &drain, &token, None).await;
    assert!(status < 300, "drain: {status} {body}");
    let drained_at = Instant::now();
    let mut last: Option<(u64, u64)> = None;
    let mut settled: Option<f64> = None;
    while drained_at.elapsed() < Duration::from_secs(10) {
        let (status, body) = testkit::http::get(&playlist_url).await.unwrap_or((0, String::new()));
        assert_eq!(status, 200, "playlist through the edge after the drain: {status} {body}");
        let (sequence, newest, discontinuity) = playlist_facts(&body);
        assert!(!discontinuity, "a discontinuity after the drain: {body}");
        let newest = newest.unwrap_or(sequence);
        if let Some((s0, n0)) = last {
            assert!(
                sequence >= s0 && newest + 1 >= n0,
                "the playlist went back: ({s0}, {n0}) then ({sequence}, {newest})"
            );
        }
        last = Some((sequence, newest));
        // Give in-flight blocking requests 3 s to end; from then on the drained node gets none.
        if drained_at.elapsed() >= Duration::from_secs(3) && settled.is_none() {
            settled = Some(origin_requests(primary).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (before, after) = (settled.expect("sampled"), origin_requests(primary).await);
    assert_eq!(before, after, "the edge kept asking the drained origin");
    let (_, newest_after) = last.unwrap();
    // Health: draining until it packages nothing, then drained.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let health = primary.get("/healthz").await.map(|(_, b)| b).unwrap_or_default();
        if health.contains("\"drained\"") {
            break;
        }
        assert!(Instant::now() < deadline, "the drained origin never said drained: {health}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // And playback is still going.
    let body =
        wait_url_body(&playlist_url, &format!("seg{}.m4s", newest_after + 2), Duration::from_secs(10), &[&control])
            .await;
    assert!(!body.contains("#EXT-X-DISCONTINUITY"), "{body}");

    let _ = publisher.kill().await;
    drop(nodes);
    drop(control);
    drop(net);
}

/// The host of the RTMP URL `GET /api/channels/{id}/ingest` names now.
async fn named_ingest(control: &common::NodeProc, token: &str, id: &str) -> Option<String> {
    let (status, body) = call("GET", &control.url(&format!("/api/channels/{id}/ingest")), token, None).await;
    let host = body["rtmpUrl"].as_str()?.strip_prefix("rtmp://")?.split(':').next()?.to_owned();
    (status == 200).then_some(host)
}

/// kill -9 of the ingest node mid-broadcast; the publisher reconnects (as OBS does, retrying
/// while the dead node's lease still holds the channel) to the ingest node the API names now:
/// the origin continues the same stream, so a player reading through the edge sees the media
/// sequence numbers go on and exactly one `EXT-X-DISCONTINUITY`, never an end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_reconnects_to_another_ingest_node_continues_after_one_discontinuity() {
    if media_missing() {
        return;
    }
    let Some(mut net) = Net::new() else { return };
    let root = tempfile::tempdir().unwrap();
    let members =
        [("ingest1", "ingest", "a"), ("ingest2", "ingest", "a"), ("origin", "origin", "a"), ("edge", "edge", "a")];
    let Fleet { spaces, control, token, mut nodes } = start_fleet(&mut net, root.path(), &members).await;
    let (id, key) = channel_as_admin(&control, &token).await;
    all_reported(&control, &token, 5).await;
    let first_host = named_ingest(&control, &token, &id).await.expect("an ingest URL");
    let first_at = if first_host == spaces[1].ip.to_string() { 1 } else { 2 };
    let second_host = spaces[3 - first_at].ip.to_string();

    let mut publisher = publish(
        "flv",
        &format!("rtmp://{first_host}:1935/live/{key}"),
        120,
        Encoding::ZeroLatency,
        &root.path().join("ff1.log"),
    );
    let edge_ip = spaces[4].ip;
    let playlist_url = format!("http://{edge_ip}:8081/hls/{id}/source/index.m3u8");
    {
        let all: Vec<&common::NodeProc> = std::iter::once(&control).chain(nodes.iter()).collect();
        wait_url_body(&playlist_url, "#EXTINF", Duration::from_secs(40), &all).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = playlist_facts(&testkit::http::get(&playlist_url).await.unwrap().1);

    nodes[first_at - 1].kill9();
    let _ = publisher.kill().await;
    let killed = Instant::now();
    // The API stops naming the dead node once its load reports go stale.
    loop {
        if named_ingest(&control, &token, &id).await.as_deref() == Some(second_host.as_str()) {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(20), "the API still names the dead ingest node");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Reconnect there, retrying while the channel is refused (the dead node's lease lasts 5 s).
    let rtmp = format!("rtmp://{second_host}:1935/live/{key}");
    let mut attempt = 0;
    let mut publisher = loop {
        attempt += 1;
        let mut p =
            publish("flv", &rtmp, 120, Encoding::ZeroLatency, &root.path().join(format!("ff-retry{attempt}.log")));
        tokio::time::sleep(Duration::from_secs(2)).await;
        if p.try_wait().unwrap().is_none() {
            break p;
        }
        assert!(killed.elapsed() < Duration::from_secs(40), "the reconnect was never accepted");
    };
    let reconnected = killed.elapsed();

    // Through the edge: the numbers go on, one discontinuity, no end.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        if let Some((200, body)) = testkit::http::get(&playlist_url).await {
            assert!(!body.contains("#EXT-X-ENDLIST"), "the stream ended for viewers: {body}");
            let facts = playlist_facts(&body);
            assert!(facts.0 >= before.0, "the playlist went back: {before:?} then {facts:?}: {body}");
            if facts.1.unwrap_or(0) >= before.1.unwrap_or(0) + 4 && facts.2 {
                break body;
            }
        }
        assert!(Instant::now() < deadline, "playback did not resume after the reconnect:\n{}", nodes[2].log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(after.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{after}");
    assert!(!after.contains("#EXT-X-DISCONTINUITY-SEQUENCE"), "{after}");
    let origin = &nodes[2];
    let origin_log = origin.log_text();
    assert!(origin_log.contains("the publisher reconnected: continuing the stream"), "{origin_log}");
    // The new ingest node numbered on from the origin's window itself: nothing to shift.
    let second = &nodes[2 - first_at];
    assert!(second.log_text().contains("continues the broadcast its origins still hold"), "{}", second.log_text());
    let resumed = origin_log.lines().find(|l| l.contains("the publisher reconnected")).unwrap();
    assert!(resumed.contains("offset=0"), "{resumed}");
    eprintln!(
        "reconnect accepted {:.1} s after the kill ({attempt} attempts); playlist {before:?} -> {:?}",
        reconnected.as_secs_f64(),
        playlist_facts(&after)
    );
    // ffprobe reads the stream across the discontinuity (and its new header).
    let (width, height) = testkit::ffmpeg::probe_size(&format!("http://{edge_ip}:8081/hls/{id}/master.m3u8")).await;
    assert_eq!((width, height), (640, 360));

    let _ = publisher.kill().await;
    drop(nodes);
    drop(control);
    drop(net);
}
