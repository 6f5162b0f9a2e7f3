//! RTMPS: with `--tls-cert/--tls-key`, an ingest node also listens on `--rtmps-addr`, where
//! ffmpeg publishes over TLS into the same publish path as RTMP (the channel goes live and is
//! served over HTTPS); a client that speaks plain RTMP to that port is refused cleanly (counted,
//! logged) and the node stays up.
//!
//! Needs ffmpeg and curl (fails naming them unless BITRIVER_ALLOW_SKIP=1).

mod common;

use std::time::{Duration, Instant};

use common::live::{publish, Encoding, MEDIA_TOOLS};
use common::{free_ports, metric_in, NodeProc};
use serde_json::{json, Value};

/// `curl -sk` (the certificate is self-signed): (status, body).
fn curl(method: &str, url: &str, body: Option<&Value>) -> (u16, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sk", "--max-time", "10", "-X", method, "-w", "\n%{http_code}", url]);
    if let Some(body) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data", &body.to_string()]);
    }
    let out = cmd.output().expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

async fn wait_for(url: &str, needle: &str, limit: Duration, node: &NodeProc) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (status, body) = curl("GET", url, None);
        if status == 200 && body.contains(needle) {
            return body;
        }
        assert!(Instant::now() < deadline, "{url}: no {needle:?} ({status} {body})\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_rtmps_and_a_plain_rtmp_client_is_refused() {
    if !testkit::require_tools(&[MEDIA_TOOLS, &["curl"]].concat()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let (rtmps_port, _) = free_ports();
    let mut node = NodeProc::new(dir.path(), "rtmps");
    node.args.extend([
        "--tls-cert".to_owned(),
        cert_path.display().to_string(),
        "--tls-key".to_owned(),
        key_path.display().to_string(),
        "--rtmps-addr".to_owned(),
        format!("127.0.0.1:{rtmps_port}"),
        // Merged reads over TLS: the socket is released at each tick and read through TLS.
        "--rtmp-read-merge-ms".to_owned(),
        "50".to_owned(),
    ]);
    node.start();
    let base = format!("https://127.0.0.1:{}", node.http_port);
    wait_for(&format!("{base}/healthz"), "\"status\"", Duration::from_secs(30), &node).await;

    let user = json!({"displayName": "Streamer", "email": "streamer@example.com", "roles": ["creator"]});
    let (status, user) = curl("POST", &format!("{base}/api/users"), Some(&user));
    assert_eq!(status, 201, "{user}");
    let user: Value = serde_json::from_str(&user).unwrap();
    let channel = json!({"ownerId": user["id"], "title": "Secure", "tags": []});
    let (status, channel) = curl("POST", &format!("{base}/api/channels"), Some(&channel));
    assert_eq!(status, 201, "{channel}");
    let channel: Value = serde_json::from_str(&channel).unwrap();
    let (id, key) = (channel["id"].as_str().unwrap(), channel["streamKey"].as_str().unwrap());

    // A plain RTMP client on the RTMPS port: refused, counted and logged; the node stays up.
    let rtmps_as_plain = format!("rtmp://127.0.0.1:{rtmps_port}/live/{key}");
    let mut plain = publish("flv", &rtmps_as_plain, 30, Encoding::ZeroLatency, &dir.path().join("plain.log"));
    let status = tokio::time::timeout(Duration::from_secs(20), plain.wait()).await;
    assert!(matches!(status, Ok(Ok(s)) if !s.success()), "plain RTMP to the RTMPS port did not fail: {status:?}");
    let metrics = wait_for(&format!("{base}/metrics"), "reason=\"tls\"", Duration::from_secs(10), &node).await;
    assert!(metrics.contains("bitriver_ingest_rejected_total{reason=\"tls\"} 1"), "{metrics}");
    assert!(node.log_text().contains("RTMPS connection refused: TLS handshake failed"), "{}", node.log_text());
    let (status, body) = curl("GET", &format!("{base}/api/channels/{id}"), None);
    assert!(status == 200 && body.contains("\"offline\""), "nothing started: {body}");

    // ffmpeg over RTMPS: the channel goes live and plays from the HTTPS origin.
    let rtmps = format!("rtmps://127.0.0.1:{rtmps_port}/live/{key}");
    let mut publisher = publish("flv", &rtmps, 60, Encoding::ZeroLatency, &dir.path().join("rtmps.log"));
    let playlist = format!("{base}/hls/{id}/source/index.m3u8");
    wait_for(&playlist, "#EXTINF", Duration::from_secs(30), &node).await;
    let (status, body) = curl("GET", &format!("{base}/api/channels/{id}"), None);
    assert!(status == 200 && body.contains("\"live\""), "{body}");
    assert!(node.log_text().contains("RTMP"), "{}", node.log_text());
    // Merged: a read takes several frames.
    let (_, metrics) = curl("GET", &format!("{base}/metrics"), None);
    let counter = |series: String| metric_in(&metrics, &format!("{series} ")).unwrap_or(0.0);
    let reads = counter(format!("bitriver_ingest_reads_total{{channel=\"{id}\"}}"));
    let frames = counter(format!("bitriver_ingest_frames_total{{channel=\"{id}\",kind=\"video\"}}"))
        + counter(format!("bitriver_ingest_frames_total{{channel=\"{id}\",kind=\"audio\"}}"));
    assert!(reads > 0.0 && reads * 2.0 <= frames, "{reads} reads for {frames} frames");
    let _ = publisher.kill().await;
}
