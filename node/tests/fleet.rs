//! Fleet foundations with real `bitriver` processes: each node in a network namespace of its own
//! (a machine with its own non-loopback address, see `common::netns`) with every listener on a
//! wildcard address, as deployed. Covers advertised addresses (an edge on another machine reaches
//! the origin it finds in the directory), `/api/cluster`'s view of the members, load reports,
//! drain, and ingest leases (a node killed mid-broadcast does not leave its channel live).
//!
//! Needs ffmpeg (fails naming it unless BITRIVER_ALLOW_SKIP=1) and `ip` from iproute2 (same).

mod common;

use std::time::{Duration, Instant};

use common::fleet::{admin_token, call, channel_as_admin, join_args, wait_cluster};
use common::live::{create_channel, publish, rtmp_url, start_with_rtmp, wait_url_body, Encoding};
use common::netns::Net;
use common::{cli, get_json, NodeProc};
use serde_json::{json, Value};

/// Fails (or, with `BITRIVER_ALLOW_SKIP=1`, skips) like the other media tests when ffmpeg or
/// ffprobe is missing.
fn media_missing() -> bool {
    !testkit::require_tools(common::live::MEDIA_TOOLS)
}

fn member(cluster: &Value, node_id: u64) -> &Value {
    cluster["members"].as_array().unwrap().iter().find(|m| m["nodeId"] == node_id).unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_on_another_machine_reaches_the_origin_it_finds_in_the_directory() {
    if media_missing() {
        return;
    }
    let Some(mut net) = Net::new() else { return };
    let (ns_a, ns_b) = (net.add("origin"), net.add("edge"));
    let root = tempfile::tempdir().unwrap();

    let mut origin = net.node(&ns_a, root.path(), "origin");
    origin.args.extend(["--roles", "control,ingest,origin", "--region", "eu-west"].map(String::from));
    origin.start();
    origin.wait_healthy(Duration::from_secs(30)).await;
    let token = admin_token(&origin).await;
    let (id, key) = channel_as_admin(&origin, &token).await;

    let mut edge = net.node(&ns_b, root.path(), "edge");
    edge.args.extend(join_args(&origin, "edge"));
    edge.args.extend(["--region", "eu-east"].map(String::from));
    edge.start();
    edge.wait_healthy(Duration::from_secs(30)).await;

    // Both members, each at its own machine's address: no loopback anywhere.
    let cluster = wait_cluster(&origin, &token, "two members with listeners and load", |c| {
        let members = c["members"].as_array().map_or(&[][..], |m| m.as_slice());
        members.len() == 2
            && members.iter().all(|m| m["listeners"]["http"].is_string() && m["load"]["at"].as_i64().unwrap_or(0) > 0)
    })
    .await;
    let (a, b) = (ns_a.ip.to_string(), ns_b.ip.to_string());
    for m in cluster["members"].as_array().unwrap() {
        let mine = if m["roles"].as_array().unwrap().contains(&json!("edge")) { &b } else { &a };
        let listeners = m["listeners"].as_object().unwrap();
        for (name, addr) in listeners {
            let addr = addr.as_str().unwrap();
            assert!(addr.starts_with(&format!("{mine}:")), "{name} advertised at {addr}, not at {mine}: {cluster}");
        }
        assert!(m["addr"].as_str().unwrap().starts_with(&format!("{mine}:")), "cluster address: {cluster}");
        assert_eq!(m["health"], "ok", "{cluster}");
        assert_eq!(m["draining"], false);
    }
    let origin_member = cluster["members"].as_array().unwrap().iter().find(|m| m["listeners"]["rtmp"].is_string());
    let origin_member = origin_member.expect("the ingest node advertises rtmp");
    assert_eq!(origin_member["region"], "eu-west");
    assert_eq!(origin_member["listeners"]["srt"], format!("{a}:9000"));
    let edge_member = cluster["members"].as_array().unwrap().iter().find(|m| m["listeners"]["edge"].is_string());
    assert_eq!(edge_member.expect("the edge advertises its listener")["listeners"]["edge"], format!("{b}:8081"));

    // A broadcast into the origin's machine, watched through the edge's: the edge dials the
    // origin's advertised address (a loopback one would be its own machine).
    let rtmp = format!("rtmp://{a}:1935/live/{key}");
    let mut publisher = publish("flv", &rtmp, 60, Encoding::ZeroLatency, &root.path().join("ffmpeg.log"));
    let playlist_url = format!("http://{b}:8081/hls/{id}/source/index.m3u8");
    let playlist = wait_url_body(&playlist_url, "#EXTINF", Duration::from_secs(40), &[&origin, &edge]).await;
    let segment = playlist.lines().find(|l| l.starts_with("seg")).expect("a segment in the playlist");
    let resp = reqwest::get(format!("http://{b}:8081/hls/{id}/source/{segment}")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap().len() > 1000, "a segment of real media");
    assert!(edge.metric("bitriver_edge_origin_requests_total{kind=\"segment\"}").await.unwrap_or(0.0) >= 1.0);

    // Load reports: the origin counts the stream it packages.
    let origin_id = origin_member["nodeId"].as_u64().unwrap();
    wait_cluster(&origin, &token, "the origin's stream in its load", |c| {
        member(c, origin_id)["load"]["streams"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    // ... and the edge the viewer connection held open to it.
    let mut viewer = tokio::net::TcpStream::connect(format!("{b}:8081")).await.unwrap();
    let request = format!("GET /hls/{id}/source/{segment} HTTP/1.1\r\nHost: {b}\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut viewer, request.as_bytes()).await.unwrap();
    let edge_id = edge_member.unwrap()["nodeId"].as_u64().unwrap();
    wait_cluster(&origin, &token, "the edge's viewer connection in its load", |c| {
        member(c, edge_id)["load"]["connections"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    drop(viewer);

    let _ = publisher.kill().await;
    drop((origin, edge));
    drop(net);
}

/// Until `node` says channel `id` is offline, or `limit`; returns the channel's sessions.
async fn wait_offline(node: &NodeProc, id: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Some((200, body)) = node.get(&format!("/api/channels/{id}")).await {
            let channel: Value = serde_json::from_str(&body).unwrap();
            if channel["liveState"] == "offline" {
                return get_json(node, &format!("/api/channels/{id}/sessions")).await;
            }
        }
        assert!(Instant::now() < deadline, "channel {id} still live after {limit:?}:\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The one session in a `/api/channels/{id}/sessions` answer.
fn only_session(sessions: &Value) -> &Value {
    let list = sessions.as_array().or_else(|| sessions["sessions"].as_array()).expect("a session list");
    assert_eq!(list.len(), 1, "{sessions}");
    &list[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_ingest_node_leaves_no_live_channel_behind() {
    if media_missing() {
        return;
    }
    let Some(mut net) = Net::new() else { return };
    let spaces: Vec<_> = ["control", "ingest", "voter"].iter().map(|l| net.add(l)).collect();
    let root = tempfile::tempdir().unwrap();

    let mut control = net.node(&spaces[0], root.path(), "control");
    control.args.extend(["--roles", "control,origin"].map(String::from));
    control.start();
    control.wait_healthy(Duration::from_secs(30)).await;
    let token = admin_token(&control).await;
    let (id, key) = channel_as_admin(&control, &token).await;
    let mut ingest = net.node(&spaces[1], root.path(), "ingest");
    ingest.args.extend(join_args(&control, "ingest,origin"));
    ingest.start();
    let mut voter = net.node(&spaces[2], root.path(), "voter");
    voter.args.extend(join_args(&control, "control"));
    voter.start();
    ingest.wait_healthy(Duration::from_secs(30)).await;
    voter.wait_healthy(Duration::from_secs(30)).await;
    // Only control nodes vote: the ingest node is a learner, so killing it leaves the quorum whole.
    wait_cluster(&control, &token, "two voters and a learner", |c| {
        c["members"].as_array().is_some_and(|m| m.len() == 3 && m.iter().filter(|m| m["voter"] == true).count() == 2)
    })
    .await;

    let rtmp = format!("rtmp://{}:1935/live/{key}", spaces[1].ip);
    let mut publisher = publish("flv", &rtmp, 120, Encoding::ZeroLatency, &root.path().join("ffmpeg.log"));
    let live = format!("http://{}:8080/api/channels/{id}", spaces[0].ip);
    wait_url_body(&live, "\"live\"", Duration::from_secs(40), &[&control, &ingest]).await;
    // A few renewals in.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let killed_at = now_ms();
    let killed = Instant::now();
    ingest.kill9();
    let sessions = wait_offline(&control, &id, Duration::from_secs(30)).await;
    let offline_after = killed.elapsed();
    let session = only_session(&sessions);
    let ended_at = session["endedAt"].as_i64().unwrap_or_else(|| panic!("the session has no end: {sessions}"));
    eprintln!("offline {offline_after:?} after kill -9; session ended {} ms before the kill", killed_at - ended_at);
    // The end is the holder's last renewal: at most one renewal period (1 s) before the crash.
    assert!(ended_at <= killed_at && killed_at - ended_at <= 2_000, "ended at {ended_at}, killed at {killed_at}");
    assert!(
        offline_after <= raft::lease::INGEST_LEASE_TTL + Duration::from_secs(3),
        "offline only after {offline_after:?}"
    );
    assert!(control.log_text().contains("ingest lease expired"), "{}", control.log_text());

    let _ = publisher.kill().await;
    drop((control, ingest, voter));
    drop(net);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_ends_the_broadcast_it_crashed_in_and_drain_is_reported() {
    if media_missing() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(root.path(), "solo");
    let rtmp_port = start_with_rtmp(&mut node, &[]).await;
    let (id, key) = create_channel(&node, "Solo").await;
    let mut publisher =
        publish("flv", &rtmp_url(rtmp_port, &key), 120, Encoding::ZeroLatency, &root.path().join("ff.log"));
    wait_url_body(&node.url(&format!("/api/channels/{id}")), "\"live\"", Duration::from_secs(30), &[&node]).await;

    // Drain, through the CLI: /healthz says so while the node still holds the broadcast.
    let node_id = get_json(&node, "/healthz").await["nodeId"].as_u64().unwrap();
    let data = node.data.to_str().unwrap().to_owned();
    let (code, out, err) = cli(&["cluster", "drain", &node_id.to_string(), "--data", &data]);
    assert_eq!(code, 0, "{out}{err}");
    let health = get_json(&node, "/healthz").await;
    assert_eq!(health["status"], "draining", "{health}");
    assert_eq!(health["components"]["drain"]["ingestLeases"], 1, "{health}");
    let cluster = get_json(&node, "/api/cluster").await;
    assert_eq!(member(&cluster, node_id)["draining"], true, "{cluster}");
    // Undrain over HTTP (development mode: loopback is admin).
    let resp = reqwest::Client::new().post(node.url(&format!("/api/cluster/nodes/{node_id}/undrain"))).send().await;
    assert_eq!(resp.unwrap().status(), 200);
    assert_eq!(get_json(&node, "/healthz").await["status"], "ok");
    // Without NODE_ID the CLI drains the node of --data (what rolling-upgrade.yml runs).
    let (code, out, err) = cli(&["cluster", "drain", "--data", &data]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(get_json(&node, "/healthz").await["status"], "draining");
    let (code, out, err) = cli(&["cluster", "undrain", "--data", &data]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(get_json(&node, "/healthz").await["status"], "ok");
    let resp = reqwest::Client::new().post(node.url("/api/cluster/nodes/99/drain")).send().await.unwrap();
    assert_eq!(resp.status(), 404, "an unknown node");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // kill -9 mid-broadcast; the encoder gives up (no reconnect); the node comes back.
    let killed_at = now_ms();
    node.kill9();
    let _ = publisher.kill().await;
    node.start();
    node.wait_healthy(Duration::from_secs(30)).await;
    let sessions = wait_offline(&node, &id, Duration::from_secs(30)).await;
    let ended_at = only_session(&sessions)["endedAt"].as_i64().expect("the crashed session has ended");
    assert!(ended_at <= killed_at && killed_at - ended_at <= 2_000, "ended at {ended_at}, killed at {killed_at}");
}

/// Waits up to `limit` for an encoder to stop (refused or cut off); true if it did.
async fn exits_within(publisher: &mut tokio::process::Child, limit: Duration) -> bool {
    tokio::time::timeout(limit, publisher.wait()).await.is_ok()
}

async fn partition(node: &NodeProc, blocked: Vec<u64>) {
    match node.admin(raft::rpc::Request::Partition { blocked }).await {
        Ok(raft::rpc::Reply::Done) => {}
        other => panic!("{}: partition request failed: {other:?}", node.name),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_per_channel_fleet_wide_even_when_its_holder_is_cut_off() {
    if media_missing() {
        return;
    }
    let Some(mut net) = Net::new() else { return };
    let spaces: Vec<_> = ["control", "ingest-a", "ingest-b"].iter().map(|l| net.add(l)).collect();
    let root = tempfile::tempdir().unwrap();
    let mut control = net.node(&spaces[0], root.path(), "control");
    control.args.extend(["--roles", "control,origin"].map(String::from));
    control.start();
    control.wait_healthy(Duration::from_secs(30)).await;
    let token = admin_token(&control).await;
    let (id, key) = channel_as_admin(&control, &token).await;
    let mut a = net.node(&spaces[1], root.path(), "ingest-a");
    a.args.extend(join_args(&control, "ingest,origin"));
    a.start();
    a.wait_healthy(Duration::from_secs(30)).await;
    let mut b = net.node(&spaces[2], root.path(), "ingest-b");
    b.args.extend(join_args(&control, "ingest,origin"));
    b.start();
    b.wait_healthy(Duration::from_secs(30)).await;
    let node_id = |n: &NodeProc| {
        let n = n.url("/healthz");
        async move { reqwest::get(n).await.unwrap().json::<Value>().await.unwrap()["nodeId"].as_u64().unwrap() }
    };
    let (control_id, a_id, b_id) = (node_id(&control).await, node_id(&a).await, node_id(&b).await);
    wait_cluster(&control, &token, "three members", |c| c["members"].as_array().is_some_and(|m| m.len() == 3)).await;

    let url = |ns: usize| format!("rtmp://{}:1935/live/{key}", spaces[ns].ip);
    let log = |name: &str| root.path().join(format!("{name}.ffmpeg.log"));
    let mut first = publish("flv", &url(1), 120, Encoding::ZeroLatency, &log("first"));
    let channel_url = control.url(&format!("/api/channels/{id}"));
    wait_url_body(&channel_url, "\"live\"", Duration::from_secs(40), &[&control, &a]).await;

    // The same key on another ingest node: refused while A holds the lease.
    let mut second = publish("flv", &url(2), 120, Encoding::ZeroLatency, &log("second"));
    assert!(exits_within(&mut second, Duration::from_secs(20)).await, "a second publisher was let in on B");
    assert!(b.log_text().contains("already live"), "{}", b.log_text());
    let sessions = get_json(&control, &format!("/api/channels/{id}/sessions")).await;
    assert_eq!(only_session(&sessions)["ingestNode"], a_id, "{sessions}");

    // A is cut off from the others: its lease expires (the session ends near the cut), and A,
    // unable to renew for a whole lease, stops its publish.
    let cut_at = now_ms();
    partition(&a, vec![control_id, b_id]).await;
    partition(&control, vec![a_id]).await;
    partition(&b, vec![a_id]).await;
    let sessions = wait_offline(&control, &id, Duration::from_secs(30)).await;
    let ended_at = only_session(&sessions)["endedAt"].as_i64().expect("ended");
    // A renewal already on its way when the cut happened may still land: near the cut, not at it.
    assert!((ended_at - cut_at).abs() <= 2_000, "ended at {ended_at}, cut at {cut_at}");
    assert!(exits_within(&mut first, Duration::from_secs(20)).await, "A kept publishing without its lease");
    assert!(a.log_text().contains("stopping the publish"), "{}", a.log_text());

    // The broadcaster moves to B and goes live there; when A is back, its late end of the old
    // session does not touch the new one.
    let mut third = publish("flv", &url(2), 120, Encoding::ZeroLatency, &log("third"));
    wait_url_body(&channel_url, "\"live\"", Duration::from_secs(40), &[&control, &b]).await;
    for node in [&a, &control, &b] {
        partition(node, vec![]).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let channel = get_json(&control, &format!("/api/channels/{id}")).await;
    assert_eq!(channel["liveState"], "live", "{channel}");
    let sessions = get_json(&control, &format!("/api/channels/{id}/sessions")).await;
    let list = sessions.as_array().or_else(|| sessions["sessions"].as_array()).unwrap().clone();
    let current = list.iter().find(|s| s["id"] == channel["currentSessionId"]).expect("the current session listed");
    assert_eq!(current["ingestNode"], b_id, "{sessions}");
    assert!(current["endedAt"].is_null(), "{sessions}");

    let _ = third.kill().await;
    drop((control, a, b));
    drop(net);
}

/// Regional ingest sharding: `GET /api/channels/{id}/ingest` names a ready ingest node of the
/// channel's home region at its advertised (non-loopback) address; the owner sets the home, the
/// first publish sets it when nobody did, and a draining node is no longer named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_names_the_home_regions_ingest_node() {
    if media_missing() {
        return;
    }
    let Some(mut net) = Net::new() else { return };
    let spaces: Vec<_> = ["control", "ingest-eu", "ingest-us"].iter().map(|l| net.add(l)).collect();
    let root = tempfile::tempdir().unwrap();
    let mut control = net.node(&spaces[0], root.path(), "control");
    control.args.extend(["--roles", "control,origin", "--region", "eu"].map(String::from));
    control.start();
    control.wait_healthy(Duration::from_secs(30)).await;
    let token = admin_token(&control).await;
    let (id, key) = channel_as_admin(&control, &token).await;
    let mut nodes = Vec::new();
    for (ns, region) in [(&spaces[1], "eu"), (&spaces[2], "us")] {
        let mut node = net.node(ns, root.path(), &format!("ingest-{region}"));
        node.args.extend(join_args(&control, "ingest,origin"));
        node.args.extend(["--region", region].map(String::from));
        node.start();
        node.wait_healthy(Duration::from_secs(30)).await;
        nodes.push(node);
    }
    let ingest_url = control.url(&format!("/api/channels/{id}/ingest"));
    let channel_url = control.url(&format!("/api/channels/{id}"));
    let (eu_ip, us_ip) = (spaces[1].ip.to_string(), spaces[2].ip.to_string());
    // Until both ingest nodes have reported their load, one may be missing from the answer: wait
    // for the expected node, or (with `None`) for an answer that lists both.
    let point = |expect_ip: Option<String>| {
        let (url, token) = (ingest_url.clone(), token.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let (status, body) = call("GET", &url, &token, None).await;
                let ip = body["rtmpUrl"]
                    .as_str()
                    .and_then(|u| u.strip_prefix("rtmp://"))
                    .map(|u| u.split(':').next().unwrap().to_owned());
                let both = body["alternatives"].as_array().is_some_and(|a| a.len() == 1);
                if status == 200 && ip.is_some() && (if expect_ip.is_none() { both } else { ip == expect_ip }) {
                    return body;
                }
                assert!(Instant::now() < deadline, "GET {url}: {status} {body} (expected {expect_ip:?})");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    // No home yet: some ingest node, at its machine's address, with the other as the alternative.
    let first = point(None).await;
    assert!(first["homeRegion"].is_null(), "{first}");
    let rtmp = first["rtmpUrl"].as_str().unwrap();
    assert!(rtmp == format!("rtmp://{eu_ip}:1935/live") || rtmp == format!("rtmp://{us_ip}:1935/live"), "{first}");
    assert!(first["srtUrl"].as_str().unwrap().ends_with(":9000"), "{first}");
    assert_eq!(first["alternatives"].as_array().map(Vec::len), Some(1), "{first}");
    let (status, _) = call("GET", &ingest_url, "not-a-token", None).await;
    assert_eq!(status, 401);

    // The owner sets the home region: the answer follows. Unknown or malformed regions are refused.
    let (status, body) = call("PATCH", &channel_url, &token, Some(json!({"homeRegion": "us"}))).await;
    assert_eq!((status, &body["homeRegion"]), (200, &json!("us")), "{body}");
    let us = point(Some(us_ip.clone())).await;
    assert_eq!((&us["homeRegion"], &us["region"]), (&json!("us"), &json!("us")), "{us}");
    for bad in ["mars", "Not A Region"] {
        let (status, body) = call("PATCH", &channel_url, &token, Some(json!({"homeRegion": bad}))).await;
        assert_eq!(status, 422, "{bad}: {body}");
    }
    let (status, body) = call("PATCH", &channel_url, &token, Some(json!({"homeRegion": null}))).await;
    assert_eq!((status, &body["homeRegion"]), (200, &Value::Null), "{body}");

    // The first publish, into eu's ingest node, makes eu the home.
    let mut publisher = publish(
        "flv",
        &format!("rtmp://{eu_ip}:1935/live/{key}"),
        120,
        Encoding::ZeroLatency,
        &root.path().join("ff.log"),
    );
    wait_url_body(&channel_url, "\"live\"", Duration::from_secs(40), &[&control, &nodes[0]]).await;
    let channel = get_json(&control, &format!("/api/channels/{id}")).await;
    assert_eq!(channel["homeRegion"], "eu", "{channel}");
    let eu = point(Some(eu_ip.clone())).await;
    assert_eq!(eu["region"], "eu", "{eu}");

    // eu's node drains: the answer moves to the next choice (us), where a reconnect would land.
    let eu_id = eu["nodeId"].as_u64().unwrap();
    let (status, body) = call("POST", &control.url(&format!("/api/cluster/nodes/{eu_id}/drain")), &token, None).await;
    assert_eq!(status, 200, "{body}");
    let moved = point(Some(us_ip)).await;
    assert_eq!(moved["homeRegion"], "eu", "the home stays: {moved}");

    let _ = publisher.kill().await;
    drop((control, nodes));
    drop(net);
}
