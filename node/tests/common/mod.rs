//! Test harness: real `bitriver` processes on loopback, each with its own data dir.
#![allow(dead_code, unreachable_pub)]

pub mod browser;
pub mod live;

use std::fs::File;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raft::catalog::admin_call;
use raft::rpc::{Reply, Request};

pub const BIN: &str = env!("CARGO_BIN_EXE_bitriver");

/// A free TCP port and a free UDP port on loopback (racy by nature, good enough for tests).
pub fn free_ports() -> (u16, u16) {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    (tcp, udp)
}

/// One `bitriver` process (restartable on the same data dir and ports).
pub struct NodeProc {
    pub name: String,
    pub data: PathBuf,
    pub http_port: u16,
    pub cluster_port: u16,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    pub fn new(root: &Path, name: &str) -> Self {
        let (http_port, cluster_port) = free_ports();
        NodeProc {
            name: name.to_owned(),
            data: root.join(name),
            http_port,
            cluster_port,
            args: vec![],
            env: vec![],
            log: root.join(format!("{name}.log")),
            child: None,
        }
    }

    pub fn cluster_addr(&self) -> String {
        format!("127.0.0.1:{}", self.cluster_port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--data")
            .arg(&self.data)
            .arg("--addr")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .arg("--cluster-addr")
            .arg(self.cluster_addr())
            .args(["--rtmp-addr", "127.0.0.1:0", "--srt-addr", "127.0.0.1:0", "--edge-addr", "127.0.0.1:0"])
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
        Command::new("kill").arg("-TERM").arg(c.id().to_string()).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "{} did not exit after SIGTERM", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
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
        let resp = reqwest::get(self.url(path)).await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    }

    /// Wait for `/healthz` to answer 200.
    pub async fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((200, _)) = self.get("/healthz").await {
                return;
            }
            assert!(self.is_running(), "{} exited:\n{}", self.name, self.log_text());
            assert!(Instant::now() < deadline, "{} not healthy in {timeout:?}:\n{}", self.name, self.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
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
        format!("http://127.0.0.1:{}{path}", self.edge_port().await)
    }

    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
    }
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

/// Polls `path` until it answers 200 with a body containing `needle`.
pub async fn wait_for_body(node: &NodeProc, path: &str, needle: &str, started: Instant, limit: Duration) -> String {
    loop {
        if let Some((200, body)) = node.get(path).await {
            if body.contains(needle) {
                return body;
            }
        }
        assert!(started.elapsed() < limit, "{path} has no {needle:?} after {limit:?}\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
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
