//! Viewers at the nearest edge, with real `bitriver` processes each on a "machine" of its own
//! (network namespaces, see `common::netns`): a control node, two edges in region `a` and one in
//! region `b`, and viewers in namespaces whose addresses the operator's network map puts in `a`
//! or `b` (or, for one, only a GeoIP database knows). Viewers ask with curl from their own
//! namespace, so the control node sees their real addresses.
//!
//! Covers `/play/{id}`, `edgePlaybackUrl`, the steering manifest and the steered playlist from
//! one choice; the trusted region header and `X-Forwarded-For` (believed from the trusted proxy
//! only); GeoIP; drain and a killed edge; bad network maps and a bad `--geoip-db`.
//!
//! Needs `ip` (iproute2) and `curl`; without them it fails naming them unless
//! BITRIVER_ALLOW_SKIP=1.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::fleet::{admin_token, call, join_args};
use common::netns::{Fetched, Net, Netns};
use common::{cli, NodeProc};
use serde_json::{json, Value};

const REGION_HEADER: &str = "X-Client-Region";

/// A small MaxMind-format database: `ip` is in Japan (continent AS).
fn geoip_db(path: &std::path::Path, ip: Ipv4Addr) {
    let mut writer = mmdb_writer::Writer::new("BitRiver-Test-Country");
    let record = json!({"country": {"iso_code": "JP"}, "continent": {"code": "AS"}});
    let net = ipnet::IpNet::from(ipnet::Ipv4Net::new(ip, 32).unwrap());
    writer.insert(net, &record).unwrap();
    std::fs::write(path, writer.to_bytes().unwrap()).unwrap();
}

fn tools_missing() -> bool {
    !testkit::require_tools(&["curl"])
}

/// `edge-{id}` by edge address `ip`, from `/api/cluster`.
async fn edge_ids(control: &NodeProc, token: &str, edges: &[&Netns]) -> BTreeMap<Ipv4Addr, u64> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (status, cluster) = call("GET", &control.url("/api/cluster"), token, None).await;
        let members = cluster["members"].as_array().cloned().unwrap_or_default();
        let ids: BTreeMap<Ipv4Addr, u64> = edges
            .iter()
            .filter_map(|ns| {
                let listener = format!("{}:8081", ns.ip);
                let m = members.iter().find(|m| m["listeners"]["edge"] == listener.as_str())?;
                // Reporting load: the routing health tracker sees it.
                (m["load"]["at"].as_i64().unwrap_or(0) > 0).then(|| (ns.ip, m["nodeId"].as_u64().unwrap()))
            })
            .collect();
        if status == 200 && ids.len() == edges.len() {
            return ids;
        }
        assert!(Instant::now() < deadline, "edges never all in /api/cluster: {cluster}\n{}", control.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `Location` of `/play/{id}` as `client` gets it.
fn play(client: &Netns, control: &NodeProc, id: &str, headers: &[&str]) -> Fetched {
    let answer = client.curl(&control.url(&format!("/play/{id}")), headers).expect("curl reached the control node");
    assert_eq!(answer.status, 302, "{answer:?}");
    assert_eq!(answer.header("cache-control"), Some("no-store"), "{answer:?}");
    answer
}

fn location(answer: &Fetched) -> String {
    answer.header("location").expect("a Location").to_owned()
}

fn master_on(edge: Ipv4Addr, id: &str) -> String {
    format!("http://{edge}:8081/hls/{id}/master.m3u8")
}

fn steering(client: &Netns, control: &NodeProc, id: &str) -> Vec<String> {
    let answer = client.curl(&control.url(&format!("/steering/{id}.json")), &[]).expect("steering answered");
    assert_eq!(answer.status, 200, "{answer:?}");
    let manifest: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(manifest["VERSION"], 1, "{manifest}");
    assert!(manifest["TTL"].as_u64().is_some_and(|t| (1..=10).contains(&t)), "{manifest}");
    manifest["PATHWAY-PRIORITY"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect()
}

fn edge_playback_url(client: &Netns, control: &NodeProc, id: &str) -> String {
    let answer = client.curl(&control.url(&format!("/api/channels/{id}")), &[]).expect("channel answered");
    assert_eq!(answer.status, 200, "{answer:?}");
    let channel: Value = serde_json::from_str(&answer.body).unwrap();
    channel["edgePlaybackUrl"].as_str().expect("edgePlaybackUrl").to_owned()
}

/// Polls until `check` holds for `/play`'s answer to `client`; returns the answer.
async fn wait_play(
    client: &Netns,
    control: &NodeProc,
    id: &str,
    what: &str,
    limit: Duration,
    check: impl Fn(&str) -> bool,
) -> (String, Duration) {
    let started = Instant::now();
    loop {
        let location = location(&play(client, control, id, &[]));
        if check(&location) {
            return (location, started.elapsed());
        }
        assert!(started.elapsed() < limit, "{what}: still {location} after {limit:?}\n{}", control.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_get_an_edge_of_their_region_from_play_channel_answers_and_steering() {
    if tools_missing() {
        return;
    }
    let Some(mut net) = Net::new() else { return };
    let ns_control = net.add("ctl");
    let (ns_a1, ns_a2, ns_b1) = (net.add("ea1"), net.add("ea2"), net.add("eb1"));
    let (client_a, client_b, client_geo) = (net.add("va"), net.add("vb"), net.add("vg"));
    let root = tempfile::tempdir().unwrap();
    let geo_path = root.path().join("country.mmdb");
    geoip_db(&geo_path, client_geo.ip);

    // The test process (the bridge) is the operator's load balancer.
    let mut control = net.node(&ns_control, root.path(), "control");
    control.args.extend(
        [
            "--roles",
            "control",
            "--region",
            "a",
            "--trusted-proxies",
            &format!("{}/32", net.bridge_ip()),
            "--client-region-header",
            REGION_HEADER,
            "--geoip-db",
            geo_path.to_str().unwrap(),
        ]
        .map(String::from),
    );
    control.start();
    control.wait_healthy(Duration::from_secs(30)).await;
    let token = admin_token(&control).await;

    let mut edges = Vec::new();
    for (ns, region) in [(&ns_a1, "a"), (&ns_a2, "a"), (&ns_b1, "b")] {
        let mut edge = net.node(ns, root.path(), &format!("edge-{}", ns.ip));
        edge.args.extend(join_args(&control, "edge"));
        edge.args.extend(["--region", region].map(String::from));
        edge.start();
        edges.push(edge);
    }
    for edge in &mut edges {
        edge.wait_healthy(Duration::from_secs(30)).await;
    }
    let ids = edge_ids(&control, &token, &[&ns_a1, &ns_a2, &ns_b1]).await;
    let pathway = |ip: Ipv4Addr| format!("edge-{}", ids[&ip]);

    // The operator's map: each region's viewers, and each other as neighbours; JP is in b.
    let regions = control.url("/api/regions");
    let (status, body) = call(
        "PUT",
        &format!("{regions}/a"),
        &token,
        Some(json!({"networks": [format!("{}/32", client_a.ip)], "neighbours": ["b"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["networks"], json!([format!("{}/32", client_a.ip)]));
    let (status, body) = call(
        "PUT",
        &format!("{regions}/b"),
        &token,
        Some(json!({"networks": [client_b.ip.to_string()], "neighbours": ["a"], "geo": ["jp"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["geo"], json!(["JP"]));
    assert_eq!(body["edges"], json!([ids[&ns_b1.ip]]));

    // Bad maps: clear 400s naming the field, nothing stored.
    for (region, body, field) in [
        ("mars", json!({"networks": ["10.99.0.0/16"]}), "region"),
        ("a", json!({"networks": ["10.99.0.0/33"]}), "networks[0]"),
        ("a", json!({"networks": ["not-a-network"]}), "networks[0]"),
        ("a", json!({"networks": [format!("{}/24", Ipv4Addr::from(u32::from(client_b.ip) & !0xff))]}), "networks[0]"),
        ("a", json!({"neighbours": ["mars"]}), "neighbours[0]"),
    ] {
        let (status, answer) = call("PUT", &format!("{regions}/{region}"), &token, Some(body.clone())).await;
        assert_eq!(status, 400, "PUT {region} {body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let (status, listed) = call("GET", &regions, &token, None).await;
    assert_eq!(status, 200);
    let listed: Vec<(String, Value)> = listed["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_owned(), r["networks"].clone()))
        .collect();
    assert_eq!(
        listed,
        [
            ("a".to_owned(), json!([format!("{}/32", client_a.ip)])),
            ("b".to_owned(), json!([format!("{}/32", client_b.ip)]))
        ],
        "bad maps stored nothing"
    );
    // Not an admin: no map.
    assert_eq!(client_a.curl(&regions, &[]).unwrap().status, 401);

    // A live channel with two renditions (started through the API: the steered playlist comes
    // from the catalog's session, no media needed).
    let user = json!({"displayName": "Streamer", "email": "streamer@example.com", "roles": ["creator"]});
    let (_, user) = call("POST", &control.url("/api/users"), &token, Some(user)).await;
    let channel = json!({"ownerId": user["id"], "title": "Routing", "tags": []});
    let (status, channel) = call("POST", &control.url("/api/channels"), &token, Some(channel)).await;
    assert_eq!(status, 201, "{channel}");
    let id = channel["id"].as_str().unwrap().to_owned();
    let start = json!({"renditions": ["source", "720p"]});
    let (status, body) =
        call("POST", &control.url(&format!("/api/channels/{id}/stream/start")), &token, Some(start)).await;
    assert!(status == 200 || status == 201, "{body}");

    // A viewer in b gets b's edge everywhere.
    let b_master = master_on(ns_b1.ip, &id);
    wait_play(&client_b, &control, &id, "b's viewer on b's edge", Duration::from_secs(20), |l| l == b_master).await;
    let answer = play(&client_b, &control, &id, &[]);
    assert_eq!(answer.header("x-bitriver-region"), Some("b; source=network"), "{answer:?}");
    assert_eq!(answer.header("vary"), Some(&*format!("X-Forwarded-For, {}", REGION_HEADER.to_ascii_lowercase())));
    assert_eq!(edge_playback_url(&client_b, &control, &id), b_master);
    // Wait out the hold (edges warm up for a few seconds after they first report) so that
    // every answer below comes from usable edges.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let b_steering = steering(&client_b, &control, &id);
    assert_eq!(b_steering[0], pathway(ns_b1.ip), "{b_steering:?}");
    assert_eq!(b_steering.len(), 3, "every edge is a pathway, neighbours after: {b_steering:?}");

    // A viewer in a gets one of a's edges, the same one every time (load is even).
    let a_edges = [master_on(ns_a1.ip, &id), master_on(ns_a2.ip, &id)];
    let a_master = location(&play(&client_a, &control, &id, &[]));
    assert!(a_edges.contains(&a_master), "{a_master} is not one of a's edges");
    for _ in 0..5 {
        assert_eq!(location(&play(&client_a, &control, &id, &[])), a_master, "the choice moved");
    }
    assert_eq!(edge_playback_url(&client_a, &control, &id), a_master);
    let a_first = if a_master == a_edges[0] { ns_a1.ip } else { ns_a2.ip };
    let a_other = if a_first == ns_a1.ip { ns_a2.ip } else { ns_a1.ip };
    assert_eq!(steering(&client_a, &control, &id), [pathway(a_first), pathway(a_other), pathway(ns_b1.ip)]);

    // The steered playlist: every rendition once per edge, absolute URIs, the steering server.
    let answer = client_a.curl(&control.url(&format!("/play/{id}/master.m3u8")), &[]).unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let playlist = &answer.body;
    assert!(
        playlist.contains(&format!(
            "#EXT-X-CONTENT-STEERING:SERVER-URI=\"/steering/{id}.json\",PATHWAY-ID=\"{}\"",
            pathway(a_first)
        )),
        "{playlist}"
    );
    assert_eq!(playlist.matches("#EXT-X-STREAM-INF").count(), 6, "{playlist}");
    for ip in [ns_a1.ip, ns_a2.ip, ns_b1.ip] {
        for rendition in ["source", "720p"] {
            let uri = format!("http://{ip}:8081/hls/{id}/{rendition}/index.m3u8");
            assert_eq!(playlist.lines().filter(|l| *l == uri).count(), 1, "{uri} once:\n{playlist}");
        }
        assert_eq!(
            playlist.matches(&format!("PATHWAY-ID=\"{}\"", pathway(ip))).count(),
            2 + usize::from(ip == a_first)
        );
    }

    // The load balancer's header wins from the trusted proxy; X-Forwarded-For names the viewer.
    let from_proxy = |headers: &[(&str, String)]| {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let mut request = client.get(control.url(&format!("/play/{id}")));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request
    };
    let resp = from_proxy(&[(REGION_HEADER, "b".into())]).send().await.unwrap();
    assert_eq!(resp.headers()["location"], b_master.as_str());
    assert_eq!(resp.headers()["x-bitriver-region"], "b; source=header");
    let resp = from_proxy(&[("X-Forwarded-For", format!("203.0.113.7, {}", client_a.ip))]).send().await.unwrap();
    assert_eq!(resp.headers()["location"], a_master.as_str(), "the viewer behind the proxy is in a");
    // From an untrusted viewer the header is ignored, and so is its X-Forwarded-For.
    let spoofed =
        play(&client_a, &control, &id, &[&format!("{REGION_HEADER}: b"), &format!("X-Forwarded-For: {}", client_b.ip)]);
    assert_eq!(location(&spoofed), a_master);
    assert_eq!(spoofed.header("x-bitriver-region"), Some("a; source=network"));

    // GeoIP: the viewer's address is in no network, the database puts it in JP, the map in b.
    let geo = play(&client_geo, &control, &id, &[]);
    assert_eq!(location(&geo), b_master, "{geo:?}");
    assert_eq!(geo.header("x-bitriver-region"), Some("b; source=geoip"));

    // Figures: routing answers per second from one control node (8 concurrent keep-alive
    // clients behind the trusted proxy, each request from a viewer in a by X-Forwarded-For), and
    // the share of those viewers on the channel's first edge.
    for (what, path) in [("/play", format!("/play/{id}")), ("steering", format!("/steering/{id}.json"))] {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let url = control.url(&path);
        let started = Instant::now();
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (client, url, xff, first) =
                    (client.clone(), url.clone(), client_a.ip.to_string(), a_master.clone());
                tokio::spawn(async move {
                    let mut on_first = 0;
                    for _ in 0..250 {
                        let resp = client.get(&url).header("X-Forwarded-For", &xff).send().await.unwrap();
                        assert!(resp.status().is_success() || resp.status().is_redirection());
                        on_first += usize::from(resp.headers().get("location").is_some_and(|l| l == first.as_str()));
                        let _ = resp.bytes().await;
                    }
                    on_first
                })
            })
            .collect();
        let mut on_first = 0;
        for worker in workers {
            on_first += worker.await.unwrap();
        }
        let took = started.elapsed();
        eprintln!(
            "routing bench: 2000 {what} answers in {} ms = {:.0}/s{}",
            took.as_millis(),
            2000.0 / took.as_secs_f64(),
            if what == "/play" {
                format!("; {:.1}% of region a's viewers on the channel's first edge", on_first as f64 / 20.0)
            } else {
                String::new()
            }
        );
        if what == "/play" {
            assert_eq!(on_first, 2000, "even load: every viewer of a on the same edge");
        }
    }

    // Drain a's chosen edge: new viewers in a get the other one within seconds, and never the
    // drained one again.
    let drained_id = ids[&a_first];
    let (status, body) =
        call("POST", &control.url(&format!("/api/cluster/nodes/{drained_id}/drain")), &token, None).await;
    assert_eq!(status, 200, "{body}");
    let other_master = master_on(a_other, &id);
    let (_, took) =
        wait_play(&client_a, &control, &id, "a's viewers off the drained edge", Duration::from_secs(5), |l| {
            l == other_master
        })
        .await;
    eprintln!("drain: new viewers moved off the drained edge after {} ms", took.as_millis());
    for _ in 0..10 {
        assert_eq!(location(&play(&client_a, &control, &id, &[])), other_master);
        assert!(!steering(&client_a, &control, &id).contains(&pathway(a_first)), "a drained edge is no pathway");
    }

    // Kill b's edge: b's viewers go to their neighbour a within a few seconds.
    edges[2].kill9();
    let (_, took) =
        wait_play(&client_b, &control, &id, "b's viewers on a neighbour's edge", Duration::from_secs(6), |l| {
            l == other_master
        })
        .await;
    eprintln!("kill -9: viewers moved off the dead edge after {} ms", took.as_millis());
    assert_eq!(steering(&client_b, &control, &id), [pathway(a_other)]);

    drop(edges);
    drop(control);
    drop(net);
}

#[test]
fn a_geoip_db_that_is_not_one_stops_the_node_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("not.mmdb");
    std::fs::write(&bogus, b"this is not a MaxMind database").unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (code, _, err) = cli(&["--geoip-db", bogus.to_str().unwrap(), "--data", data, "--addr", "127.0.0.1:0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--geoip-db"), "{err}");

    let (code, _, err) = cli(&["--trusted-proxies", "10.0.0.0/33", "--data", data, "--addr", "127.0.0.1:0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--trusted-proxies"), "{err}");
}

/// hls.js in Chromium plays the steered playlist of a real broadcast, and keeps playing when the
/// edge it plays from is killed (-9): the steering answer leaves the dead edge out and hls.js
/// moves to the other pathway. Prints the stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_through_steering_and_survives_its_edge_being_killed() {
    let tools = [common::live::MEDIA_TOOLS, testkit::tools::BROWSER, &["curl"]].concat();
    if !testkit::require_tools(&tools) {
        return;
    }
    let Some(mut net) = Net::new() else { return };
    let (ns_origin, ns_e1, ns_e2) = (net.add("org"), net.add("e1"), net.add("e2"));
    let root = tempfile::tempdir().unwrap();

    let mut origin = net.node(&ns_origin, root.path(), "origin");
    origin.args.extend(["--roles", "control,ingest,origin", "--region", "a"].map(String::from));
    origin.start();
    origin.wait_healthy(Duration::from_secs(30)).await;
    let token = admin_token(&origin).await;
    let mut edges = Vec::new();
    for ns in [&ns_e1, &ns_e2] {
        let mut edge = net.node(ns, root.path(), &format!("edge-{}", ns.ip));
        edge.args.extend(join_args(&origin, "edge"));
        edge.args.extend(["--region", "a"].map(String::from));
        edge.start();
        edges.push(edge);
    }
    for edge in &mut edges {
        edge.wait_healthy(Duration::from_secs(30)).await;
    }
    let ids = edge_ids(&origin, &token, &[&ns_e1, &ns_e2]).await;

    let user = json!({"displayName": "Streamer", "email": "streamer@example.com", "roles": ["creator"]});
    let (_, user) = call("POST", &origin.url("/api/users"), &token, Some(user)).await;
    let channel = json!({"ownerId": user["id"], "title": "Steered", "tags": []});
    let (_, channel) = call("POST", &origin.url("/api/channels"), &token, Some(channel)).await;
    let (id, key) = (channel["id"].as_str().unwrap().to_owned(), channel["streamKey"].as_str().unwrap().to_owned());
    let rtmp = format!("rtmp://{}:1935/live/{key}", ns_origin.ip);
    let log = root.path().join("ffmpeg.log");
    let mut publisher = common::live::publish("flv", &rtmp, 120, common::live::Encoding::ZeroLatency, &log);
    for ns in [&ns_e1, &ns_e2] {
        let url = format!("http://{}:8081/hls/{id}/source/index.m3u8", ns.ip);
        common::live::wait_url_body(&url, "#EXTINF", Duration::from_secs(40), &[&origin]).await;
    }
    // Past the hold, so both edges are usable pathways.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let steered = origin.url(&format!("/play/{id}/master.m3u8"));
    let body = reqwest::get(&steered).await.unwrap().text().await.unwrap();
    assert!(body.contains("#EXT-X-CONTENT-STEERING") && body.matches("PATHWAY-ID").count() >= 3, "{body}");
    let manifest: Value =
        reqwest::get(origin.url(&format!("/steering/{id}.json"))).await.unwrap().json().await.unwrap();
    let first = manifest["PATHWAY-PRIORITY"][0].as_str().unwrap().to_owned();
    let victim = if first == format!("edge-{}", ids[&ns_e1.ip]) { 0 } else { 1 };

    // The player: 25 s of real playback; its first edge dies 8 s in.
    std::env::set_var("PLAY_ALLOW_NON_LOOPBACK", "1");
    std::env::set_var("PLAY_TIMEOUT_S", "70");
    let url = steered.clone();
    let player = tokio::task::spawn_blocking(move || common::browser::play_in_chromium(&url, 25.0));
    tokio::time::sleep(Duration::from_secs(8)).await;
    edges[victim].kill9();
    let summary =
        player.await.unwrap().unwrap_or_else(|e| panic!("hls.js did not keep playing: {e}\n{}", origin.log_text()));
    let played = summary["playedSeconds"].as_f64().unwrap_or(0.0);
    assert!(played >= 25.0, "{summary}");
    let elapsed = summary["elapsedMs"].as_f64().unwrap_or(0.0);
    let start = summary["timeToFirstProgressMs"].as_f64().unwrap_or(0.0);
    eprintln!(
        "steering failover: played {played:.1} s; stalls {}; time not playing after the start ≈ {:.0} ms (kill -9 of edge-{})",
        summary["stalls"],
        (elapsed - start - played * 1000.0).max(0.0),
        ids[&if victim == 0 { ns_e1.ip } else { ns_e2.ip }],
    );
    let _ = publisher.kill().await;
    drop(edges);
    drop(origin);
    drop(net);
}
