//! Processes the tests and benches run: free loopback ports, signals, bounded waits, log tails,
//! and a `bitriver` node spawned for a bench.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
pub use rustix::process::Signal;

/// Where test ports come from: below the kernel's ephemeral range (32768-60999 by default), so
/// the outgoing sockets of other tests running at the same time (QUIC clients, ffmpeg, browsers)
/// never take a port between the moment it is chosen and the moment a node binds it.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A loopback port free for both TCP and UDP, chosen at random from [`TEST_PORTS`] and reserved
/// for the life of this process: an advisory lock on `$TMPDIR/bitriver-test-ports/PORT` keeps
/// every other test process (and later calls here) off it until this process exits, so the nodes
/// a test starts seconds later still find it free. `udp` only says which protocol the caller means.
pub fn free_port(udp: bool) -> std::io::Result<u16> {
    use std::hash::{BuildHasher as _, Hasher as _};
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let _ = udp;
    let dir = std::env::temp_dir().join("bitriver-test-ports");
    std::fs::create_dir_all(&dir)?;
    let span = u64::from(TEST_PORTS.end - TEST_PORTS.start);
    for attempt in 0u64..2_000 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(attempt);
        hasher.write_u32(std::process::id());
        let port = TEST_PORTS.start + (hasher.finish() % span) as u16;
        let lock =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(port.to_string()))?;
        if lock.try_lock().is_err() {
            continue;
        }
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free test port in 20000-32000"))
}

/// Two different free loopback ports (see [`free_port`]): conventionally a TCP one and a UDP one.
pub fn free_ports() -> (u16, u16) {
    (free_port(false).expect("a free TCP port"), free_port(true).expect("a free UDP port"))
}

/// Sends `signal` to process `pid` (an encoder's Ctrl-C is [`Signal::INT`], a graceful stop
/// [`Signal::TERM`]). A process that is already gone is not an error.
pub fn signal(pid: u32, signal: Signal) {
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else { return };
    let _ = rustix::process::kill_process(pid, signal);
}

/// Sends SIGTERM to `child` and waits up to `limit` for it to exit; `None` if it did not (it is
/// then killed) or was not running.
pub fn terminate(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    signal(child.id(), Signal::TERM);
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Waits for `child` (started with piped stdout and stderr), reading both as it runs. Past
/// `limit` it gets SIGTERM (so a browser driver can close Chromium), then SIGKILL: `Ok(None)`.
pub fn wait_with_output(mut child: Child, limit: Duration) -> (std::io::Result<Option<ExitStatus>>, String, String) {
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let out_reader = read_all(Box::new(child.stdout.take().expect("piped stdout")));
    let err_reader = read_all(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(Some(status)),
            Ok(None) if Instant::now() >= deadline => {
                signal(child.id(), Signal::TERM);
                std::thread::sleep(Duration::from_secs(5));
                let _ = child.kill();
                let _ = child.wait();
                break Ok(None);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => break Err(e),
        }
    };
    (status, out_reader.join().unwrap_or_default(), err_reader.join().unwrap_or_default())
}

/// Waits up to `limit` for an async child to exit; panics naming `what` if it does not.
pub async fn exit_within(child: &mut tokio::process::Child, limit: Duration, what: &str) -> ExitStatus {
    tokio::time::timeout(limit, child.wait())
        .await
        .unwrap_or_else(|_| panic!("{what} did not exit within {limit:?}"))
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
}

/// The last 20 lines of a log file.
pub fn tail(path: &Path) -> String {
    tail_str(&std::fs::read_to_string(path).unwrap_or_default())
}

/// The last 20 lines of a text.
pub fn tail_str(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The `bitriver` binary a bench runs: `explicit`, else the release build in `$CARGO_TARGET_DIR`
/// (or `target`).
pub fn bitriver_binary(explicit: Option<&Path>) -> PathBuf {
    explicit.map(Path::to_path_buf).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), PathBuf::from);
        target.join("release").join("bitriver")
    })
}

/// The loopback ports of a node from [`BenchNode::start_all_in_one`].
#[derive(Debug, Clone, Copy)]
pub struct AllInOnePorts {
    pub http: u16,
    pub rtmp: u16,
    pub edge: u16,
}

/// A `bitriver` node a bench spawned; killed when dropped.
pub struct BenchNode {
    pub child: tokio::process::Child,
    pub pid: u32,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl BenchNode {
    /// Spawns `bin` with `args` (which must include `--addr` on `http`), logging to
    /// `dir/bitriver.log`, with only the `BITRIVER_LIVE_*` variables in `env` (an operator's own,
    /// a global rate limit say, would change the figures); waits until `/healthz` answers 2xx.
    pub async fn start(
        bin: &Path,
        dir: &Path,
        http: std::net::SocketAddr,
        args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        if !bin.is_file() {
            bail!(
                "{} not found: build it with `cargo build --release -p bitriver-node`, or pass --bitriver",
                bin.display()
            );
        }
        let log = dir.join("bitriver.log");
        let log_file = std::fs::File::create(&log)?;
        let mut cmd = tokio::process::Command::new(bin);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("BITRIVER_LIVE_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("spawning {}", bin.display()))?;
        let pid = child.id().context("the node exited at once")?;
        let url = format!("http://{http}/healthz");
        let mut alive = || match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("the node exited with {status}")),
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = crate::http::wait_healthy(&url, Duration::from_secs(30), &mut alive).await {
            bail!("{why}; its log:\n{}", tail(&log));
        }
        Ok(BenchNode { child, pid, log })
    }

    /// A node with every role but transcode (passthrough, as the media benches measure it) on
    /// free loopback ports: HTTP, RTMP and edge; SRT and WebRTC on ports of their own choosing.
    /// `extra` goes before `--data dir/data`.
    pub async fn start_all_in_one(bin: &Path, dir: &Path, extra: &[&str]) -> anyhow::Result<(Self, AllInOnePorts)> {
        let ports = AllInOnePorts { http: free_port(false)?, rtmp: free_port(false)?, edge: free_port(false)? };
        let http = std::net::SocketAddr::from(([127, 0, 0, 1], ports.http));
        let mut args: Vec<String> = [
            "--mode".to_owned(),
            "development".to_owned(),
            "--roles".to_owned(),
            "control,ingest,origin,edge".to_owned(),
            "--addr".to_owned(),
            http.to_string(),
            "--cluster-addr".to_owned(),
            format!("127.0.0.1:{}", free_port(true)?),
            "--rtmp-addr".to_owned(),
            format!("127.0.0.1:{}", ports.rtmp),
            "--srt-addr".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--webrtc-udp-port".to_owned(),
            "0".to_owned(),
            "--edge-addr".to_owned(),
            format!("127.0.0.1:{}", ports.edge),
        ]
        .into();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args.extend(["--data".to_owned(), dir.join("data").display().to_string()]);
        Ok((Self::start(bin, dir, http, &args, &[]).await?, ports))
    }

    /// User + system CPU seconds the node has used so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        crate::procfs::cpu_seconds(crate::procfs::Pid::Of(self.pid))
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminate_stops_a_child_and_tail_keeps_the_last_lines() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let status = terminate(&mut child, Duration::from_secs(5)).expect("sleep exits on SIGTERM");
        assert!(!status.success());
        let text: String = (0..30).map(|i| format!("line {i}\n")).collect();
        assert_eq!(tail_str(&text).lines().next(), Some("line 10"));
        assert_ne!(free_ports().0, 0);
    }
}
