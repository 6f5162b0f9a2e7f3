//! Helpers the benches share for running a real `bitriver` (or reference server) process:
//! free ports, CPU time from `/proc`, log tails and waiting for `/healthz`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// A free TCP (or UDP) port on loopback.
pub(crate) fn free_port(udp: bool) -> std::io::Result<u16> {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr().map(|a| a.port())
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")?.local_addr().map(|a| a.port())
    }
}

/// The last 20 lines of a log file.
pub(crate) fn tail(path: &Path) -> String {
    tail_str(&std::fs::read_to_string(path).unwrap_or_default())
}

/// The last 20 lines of a text.
pub(crate) fn tail_str(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// utime + stime of a `/proc/.../stat` file, in seconds.
pub(crate) fn cpu_seconds(stat_path: &str, ticks: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(stat_path).with_context(|| format!("reading {stat_path}"))?;
    // Fields after the command name (which may hold spaces and parentheses) start at field 3.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).context("unexpected /proc stat format")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<f64> {
        Ok(fields.get(n - 3).context("short /proc stat")?.parse::<u64>().context("unexpected /proc stat field")? as f64)
    };
    Ok((field(14)? + field(15)?) / ticks)
}

/// Poll `url` (a `/healthz`) until it answers 2xx; fail with the log's tail if the process exits
/// or `limit` passes first.
pub(crate) async fn wait_healthy(
    child: &mut tokio::process::Child,
    url: &str,
    log: &Path,
    limit: Duration,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the node exited with {status}; its log:\n{}", tail(log));
        }
        if let Ok(resp) = client.get(url).send().await {
            if resp.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the node did not become healthy within {limit:?}; its log:\n{}", tail(log));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `bitriver` binary a bench runs: the given path, else the release build in
/// `$CARGO_TARGET_DIR` (or `target`).
pub(crate) fn bitriver_binary(explicit: Option<&Path>) -> std::path::PathBuf {
    explicit.map(Path::to_path_buf).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), std::path::PathBuf::from);
        target.join("release").join("bitriver")
    })
}
