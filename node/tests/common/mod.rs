//! Test harness: real `bitriver` processes on loopback, each with its own data dir. Tools,
//! ports, signals and HTTP polling come from the workspace's one kit, `testkit`.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod browser;
pub mod fleet;
pub mod live;
pub mod netns;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raft::catalog::admin_call;
use raft::rpc::{Reply, Request};

pub use testkit::process::free_ports;

pub const BIN: &str = env!("CARGO_BIN_EXE_bitriver");

/// One `bitriver` process (restartable on the same data dir and ports).
pub struct NodeProc {
    pub name: String,
    pub data: PathBuf,
    pub http_port: u16,
    pub cluster_port: u16,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    /// RTMP (TCP), SRT (UDP) and edge (TCP) ports on loopback.
    pub media_ports: (u16, u16, u16),
    /// The network namespace the node runs in (see [`netns`]); `None`: this one, on loopback.
    pub netns: Option<String>,
    /// The address the test reaches the node's listeners at.
    pub host: String,
    child: Option<Child>,
}

impl NodeProc {
    pub fn new(root: &Path, name: &str) -> Self {
        let (http_port, cluster_port) = free_ports();
        let (rtmp_port, srt_port) = free_ports();
        let (edge_port, _) = free_ports();
        NodeProc {
            media_ports: (rtmp_port, srt_port, edge_port),
            name: name.to_owned(),
            data: root.join(name),
            http_port,
            cluster_port,
            args: vec![],
            env: vec![],
            log: root.join(format!("{name}.log")),
            netns: None,
            host: "127.0.0.1".to_owned(),
            child: None,
        }
    }

    pub fn cluster_addr(&self) -> String {
        format!("{}:{}", self.host, self.cluster_port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.http_port)
    }

    pub fn command(&self) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                // `ip netns exec` execs the binary: the child's pid is the node's.
                let mut cmd = Command::new(netns::IP);
                cmd.args(["netns", "exec", ns.as_str(), BIN]);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.arg("--data")
            .arg(&self.data)
            .arg("--addr")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .arg("--cluster-addr")
            .arg(self.cluster_addr())
            // Ports fixed at creation: a restarted node publishes the same addresses in the
            // node directory, so its records do not change across restarts.
            .arg("--rtmp-addr")
            .arg(format!("127.0.0.1:{}", self.media_ports.0))
            .arg("--srt-addr")
            .arg(format!("127.0.0.1:{}", self.media_ports.1))
            .arg("--edge-addr")
            .arg(format!("127.0.0.1:{}", self.media_ports.2))
            // Tests run nodes side by side: WebRTC on a free port (listed in `/healthz`).
            .args(["--webrtc-udp-port", "0"])
            .args(&self.args)
            .env("BITRIVER_LIVE_FAULT_INJECTION", "true")
            .env("BITRIVER_LIVE_LOG_FORMAT", "text")
            .env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = File::options().create(true).append(true).open(&self.log).unwrap();
        let child = self.command().stdout(Stdio::null()).stderr(log).spawn().expect("spawn bitriver");
        self.child = Some(child);
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let status = testkit::process::terminate(&mut c, Duration::from_secs(20));
        let status = status.unwrap_or_else(|| panic!("{} did not exit after SIGTERM:\n{}", self.name, self.log_text()));
        status.code()
    }

    /// Resident memory of the running process (`VmRSS` in `/proc/PID/status`).
    pub fn rss_bytes(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(kb * 1024)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn admin(&self, request: Request) -> std::io::Result<Reply> {
        admin_call(&self.data, &request).await
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        testkit::http::get(&self.url(path)).await
    }

    /// Wait for `/healthz` to answer 200.
    pub async fn wait_healthy(&mut self, timeout: Duration) {
        let url = self.url("/healthz");
        let mut alive = || if self.is_running() { Ok(()) } else { Err("exited".to_owned()) };
        if let Err(why) = testkit::http::wait_healthy(&url, timeout, &mut alive).await {
            panic!("{}: {why}:\n{}", self.name, self.log_text());
        }
    }

    pub async fn cluster(&self) -> Option<serde_json::Value> {
        let (status, body) = self.get("/api/cluster").await?;
        (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
    }

    pub async fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        match self.admin(Request::Dump).await {
            Ok(Reply::Dump(records)) => records,
            other => panic!("{}: dump failed: {other:?}", self.name),
        }
    }

    /// The port the node's edge listens on (the harness binds it on port 0), from `/healthz`.
    pub async fn edge_port(&self) -> u16 {
        let (_, body) = self.get("/healthz").await.expect("/healthz");
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        let addr = health["components"]["listeners"]["edge"]["addr"].as_str().expect("an edge listener in /healthz");
        addr.parse::<std::net::SocketAddr>().unwrap().port()
    }

    /// A URL on the node's edge.
    pub async fn edge_url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.edge_port().await)
    }

    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        metric_in(&body, name)
    }
}

/// The value of the series `name` (with its labels, e.g. `x_total{channel="c1"}`) in a
/// `/metrics` body.
pub fn metric_in(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A user command with a unique id and email.
pub fn create_user(id: &str) -> raft::Command {
    raft::Command::CreateUser(raft::User {
        id: id.to_owned(),
        display_name: format!("User {id}"),
        email: format!("{id}@example.com"),
        roles: vec!["viewer".into()],
        password_hash: None,
        created_at: 1,
    })
}

/// Propose through a node's admin socket; `Ok` only when the write was committed and applied.
pub async fn propose(node: &NodeProc, command: raft::Command) -> Result<raft::Response, String> {
    match node.admin(Request::Propose(command)).await {
        Ok(Reply::Propose(Ok(r))) => Ok(r),
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// User ids present in a dump.
pub fn user_ids(dump: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
    dump.iter()
        .filter_map(|(k, _)| k.strip_prefix(b"user/").map(|id| String::from_utf8_lossy(id).into_owned()))
        .collect()
}

/// Run `bitriver` with arguments (a CLI subcommand) and return (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).env("NO_COLOR", "1").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `bitriver ARGS` with `stdin` piped in; returns (exit code, stdout, stderr).
pub fn cli_with_stdin(args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// POST JSON (no token); returns (status, JSON body or Null).
pub async fn post_json(node: &NodeProc, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new().post(node.url(path)).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// GET that must answer 200 with JSON.
pub async fn get_json(node: &NodeProc, path: &str) -> serde_json::Value {
    let (status, body) = node.get(path).await.expect("request failed");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `path` until it answers 200 with a body containing `needle`, until `limit` after `started`.
pub async fn wait_for_body(node: &NodeProc, path: &str, needle: &str, started: Instant, limit: Duration) -> String {
    let left = limit.saturating_sub(started.elapsed());
    testkit::http::wait_body(&node.url(path), needle, left)
        .await
        .unwrap_or_else(|why| panic!("{why}\n{}", node.log_text()))
}

/// Wait until `node` reports `voters` voters and a leader in `/api/cluster`.
pub async fn wait_voters(node: &NodeProc, voters: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(c) = node.cluster().await {
            let count = c["members"].as_array().map_or(0, |m| m.iter().filter(|m| m["voter"] == true).count());
            if count == voters && c["leaderId"].is_u64() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "cluster never reached {voters} voters:\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
