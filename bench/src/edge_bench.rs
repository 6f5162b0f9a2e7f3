//! `edge-bench`: cache-hit throughput, latency and memory per idle connection of the pingora edge
//! beside nginx `proxy_cache`, both in front of the same origin on the same machine.
//!
//! The origin is a static nginx serving a 100 KB part, a 1 MB segment and a 1 KB init segment at
//! LL-HLS paths. The reference edge is nginx with `proxy_cache` (the configuration of
//! `edge-baseline`: `sendfile on; tcp_nodelay on; tcp_nopush off`, cache warmed first). Our edge
//! is `cache::Edge` (pingora + moka) run in this process on its own tokio runtime, with as many
//! worker threads as nginx has worker processes. Both send these hits with `sendfile`: nginx from
//! its cache files, the edge from the memfds its storage keeps bodies of 16 KB and more in
//! (fresh immutable hits on plain TCP skip pingora's hit path, see `cache/src/direct.rs`). Both caches are warmed and checked to answer
//! HIT, then `wrk --latency` loads each object at each connection count, one server after the
//! other. Memory per idle connection: RSS growth of the server processes after N keep-alive
//! connections have each fetched the init segment and stay open.
//!
//! `--protocol https` and `--protocol h2` load the same objects over TLS (one self-signed ECDSA
//! P-256 certificate for every server, TLS session cache on; nginx `listen ... ssl http2`): wrk
//! over HTTPS/1.1, or `h2load` over HTTP/2 (10 streams per connection). Then the edge sends hits
//! as slices of each body's mapped pages (`cache/src/pages.rs`), nginx reads its cache files
//! (no `sendfile` under TLS), and the idle-memory figure is skipped.
//!
//! Installs `nginx`, `wrk` and (for h2) `nghttp2-client` with apt-get when missing. Prints figures
//! and ratios; asserts nothing.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use cache::{Edge, EdgeConfig, Origin, OriginResolver};
use clap::Parser;

use testkit::process::{free_port, tail};
use testkit::procfs::{children, cpu_seconds_of, open_file_limit, rss_bytes_of};

#[derive(Debug, Parser)]
#[command(
    name = "edge-bench",
    about = "Edge cache hits: pingora edge beside nginx proxy_cache in front of the same origin",
    long_about = "Serves a 100 KB part and a 1 MB segment from a static nginx origin through nginx proxy_cache and \
                  through the bitriver edge (pingora + moka, in process), loads each warm cache with wrk at each \
                  connection count, and measures RSS per idle keep-alive connection. Prints figures and ratios; \
                  asserts nothing. Every flag has an EDGE_BENCH_* environment twin."
)]
struct Args {
    /// Connection counts of the throughput runs.
    #[arg(long, value_name = "N,...", env = "EDGE_BENCH_CONNS", value_delimiter = ',', default_values_t = [64, 256])]
    conns: Vec<usize>,
    /// Length of each wrk run, in seconds.
    #[arg(long, env = "EDGE_BENCH_SECONDS", default_value_t = 8)]
    seconds: u64,
    /// nginx worker processes, and serving threads of our edge (each its own runtime).
    #[arg(long, env = "EDGE_BENCH_WORKERS", default_value_t = 2)]
    workers: usize,
    /// Runs of each server per object and connection count, alternated (min/median/max printed).
    #[arg(long, env = "EDGE_BENCH_RUNS", default_value_t = 3)]
    runs: usize,
    /// wrk threads.
    #[arg(long, env = "EDGE_BENCH_WRK_THREADS", default_value_t = 2)]
    wrk_threads: usize,
    /// Idle keep-alive connections for the memory measurement (capped by the open-file limit).
    #[arg(long, env = "EDGE_BENCH_IDLE", default_value_t = 2000)]
    idle: usize,
    /// Serve the edge's hits through pingora's hit path only, bodies in memory
    /// (`EdgeConfig::direct_hits` off), to compare with the direct sendfile path.
    #[arg(long, env = "EDGE_BENCH_PINGORA_HITS")]
    pingora_hits: bool,
    /// Keep the edge's cached bodies in memfds instead of unnamed files in the bench's directory.
    #[arg(long, env = "EDGE_BENCH_MEMFD_BODIES")]
    memfd_bodies: bool,
    /// What viewers speak: `http1` (plain HTTP/1.1), `https` (HTTP/1.1 over TLS) or `h2`
    /// (HTTP/2 over TLS).
    #[arg(long, value_enum, env = "EDGE_BENCH_PROTOCOL", default_value = "http1")]
    protocol: Protocol,
    /// Directory for temp files [default: the system temp dir].
    #[arg(long, value_name = "DIR", env = "EDGE_BENCH_DIR")]
    dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Protocol {
    Http1,
    Https,
    H2,
}

impl Protocol {
    fn tls(self) -> bool {
        self != Protocol::Http1
    }

    fn label(self) -> &'static str {
        match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Https => "HTTPS (HTTP/1.1 over TLS)",
            Protocol::H2 => "HTTP/2 over TLS",
        }
    }
}

/// HTTP/2 streams each h2load connection keeps in flight.
const H2_STREAMS: usize = 10;

/// What is loaded: the path below each server, and its size.
const OBJECTS: [(&str, &str, usize); 2] =
    [("100 KB part", "/hls/bench/v/part1.0.m4s", 100 * 1024), ("1 MB segment", "/hls/bench/v/seg1.m4s", 1024 * 1024)];
/// A versioned header name, as the origin writes them (`hls_names::RenditionFile::Init`).
const INIT: &str = "/hls/bench/v/init-0000000000000001.mp4";

struct FixedOrigin(SocketAddr);

impl OriginResolver for FixedOrigin {
    fn origins(&self, _channel: &str) -> Vec<Origin> {
        vec![Origin { addr: self.0, tls: false, verify_tls: false, shield: false }]
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure_tools(args.protocol)?;
    let dir = tempfile::Builder::new()
        .prefix("edge-bench")
        .tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))
        .context("temp dir")?;
    let cert = args.protocol.tls().then(|| certificate(dir.path())).transpose()?;
    let nginx = Nginx::start(dir.path(), args.workers, cert.as_ref())?;

    let edge_runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let edge_port = free_port(false)?;
    let origin_addr: SocketAddr = format!("127.0.0.1:{}", nginx.plain_origin_port).parse()?;
    let (stop, registry) = edge_runtime.block_on(async {
        let registry = prometheus::Registry::new();
        let config = EdgeConfig {
            direct_hits: !args.pingora_hits,
            threads: args.workers,
            // As the node does (its data directory): files on this disk, not memfds.
            body_dir: (!args.memfd_bodies).then(|| dir.path().to_path_buf()),
            ..EdgeConfig::default()
        };
        let mut edge = Edge::new(config, Arc::new(FixedOrigin(origin_addr)), &registry)?;
        if let Some((cert, key)) = &cert {
            edge = edge.with_tls(cert, key)?;
        }
        let edge = Arc::new(edge);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", edge_port)).await?;
        let stop = tokio_util::sync::CancellationToken::new();
        let shutdown = stop.clone();
        tokio::spawn(async move { edge.serve(listener, shutdown, Duration::from_secs(1)).await });
        anyhow::Ok((stop, registry))
    })?;

    let client_runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let servers = [("nginx proxy_cache", nginx.edge_port, "x-cache-status"), ("bitriver edge", edge_port, "x-cache")];
    client_runtime.block_on(async {
        for (name, port, header) in servers {
            for path in OBJECTS.iter().map(|o| o.1).chain([INIT]) {
                warm(port, path, header, args.protocol.tls()).await.with_context(|| format!("warming {name}"))?;
            }
        }
        anyhow::Ok(())
    })?;

    println!(
        "edge-bench: cache hits over {}, {} -t{} -d{}s, {} nginx workers / edge threads, loopback, edge hits via {}",
        args.protocol.label(),
        if args.protocol == Protocol::H2 { format!("h2load -m{H2_STREAMS}") } else { "wrk".to_owned() },
        args.wrk_threads,
        args.seconds,
        args.workers,
        match (args.protocol.tls(), args.pingora_hits) {
            (true, _) => "pingora, bodies as slices of mapped pages",
            (false, true) => "pingora",
            (false, false) => "sendfile (direct)",
        }
    );
    println!(
        "{:<13} {:>5} {:<18} {:>23} {:>7} {:>8} {:>8} {:>10} {:>8}",
        "object", "conns", "server", "req/s min/median/max", "Gbit/s", "p50 ms", "p99 ms", "CPU us/req", "of limit"
    );
    // Server CPU: nginx's workers (static and proxy_cache are the same processes, loaded one at a
    // time), or this process (the edge's runtime; wrk is another process).
    let nginx_pids = nginx.worker_pids();
    let self_pid = vec![std::process::id()];
    let targets = [("static (limit)", nginx.origin_port), (servers[0].0, servers[0].1), (servers[1].0, servers[1].1)];
    let mut ratios = Vec::new();
    for (label, path, size) in OBJECTS {
        for &conns in &args.conns {
            // Runs alternate between the servers (a different one first each round), so a drift of
            // the machine's state hits all alike.
            let mut runs: Vec<Vec<(WrkRun, f64)>> = vec![Vec::new(); targets.len()];
            for round in 0..args.runs.max(1) {
                for k in 0..targets.len() {
                    let i = (k + round) % targets.len();
                    let port = targets[i].1;
                    let pids = if port == edge_port { &self_pid } else { &nginx_pids };
                    let cpu_before = cpu_seconds_of(pids);
                    let run = match args.protocol {
                        Protocol::H2 => h2load(port, path, conns, args.seconds, args.wrk_threads, dir.path())?,
                        protocol => wrk(port, path, conns, args.seconds, args.wrk_threads, protocol.tls())?,
                    };
                    let cpu_us = (cpu_seconds_of(pids) - cpu_before) * 1e6 / (run.rps * args.seconds as f64);
                    runs[i].push((run, cpu_us));
                }
            }
            let limit = median(runs[0].iter().map(|(r, _)| r.rps));
            let mut medians = Vec::new();
            for (i, (name, _)) in targets.iter().enumerate() {
                let rps: Vec<f64> = runs[i].iter().map(|(r, _)| r.rps).collect();
                let (lo, mid, hi) = (min(&rps), median(rps.iter().copied()), max(&rps));
                let p50 = median(runs[i].iter().map(|(r, _)| r.p50_ms));
                let p99 = median(runs[i].iter().map(|(r, _)| r.p99_ms));
                let cpu = median(runs[i].iter().map(|(_, c)| *c));
                let errors: Vec<&str> =
                    runs[i].iter().map(|(r, _)| r.errors.as_str()).filter(|e| !e.is_empty()).collect();
                println!(
                    "{label:<13} {conns:>5} {name:<18} {:>23} {:>7.2} {p50:>8.2} {p99:>8.2} {cpu:>10.1} {:>7.0}%{}",
                    format!("{lo:.0}/{mid:.0}/{hi:.0}"),
                    mid * size as f64 * 8.0 / 1e9,
                    100.0 * mid / limit,
                    if errors.is_empty() { String::new() } else { format!("  ({})", errors.join("; ")) }
                );
                medians.push((mid, p99, cpu));
            }
            let (nginx_m, edge_m) = (medians[1], medians[2]);
            ratios.push((label, conns, edge_m.0 / nginx_m.0, edge_m.1 / nginx_m.1, edge_m.2 / nginx_m.2));
        }
    }
    println!();
    for (label, conns, throughput, p99, cpu) in &ratios {
        println!(
            "ratio edge/nginx  {label:<13} {conns:>4} conns (medians): throughput x{throughput:.2}, p99 x{p99:.2}, CPU per hit x{cpu:.2}"
        );
    }
    // The figures are the sendfile path's only if it ran: the edge counts what it sent that way.
    let counter = |name: &str| -> f64 {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .map(|m| m.get_counter().get_value())
            .sum()
    };
    let (direct, hits) = (counter("bitriver_edge_direct_sends_total"), counter("bitriver_edge_cache_hits_total"));
    let early = counter("bitriver_edge_early_hits_total");
    println!(
        "edge hits sent straight to the socket (cache::direct): {direct:.0} of {hits:.0}, of them read before pingora (cache::early): {early:.0}"
    );
    if args.protocol.tls() {
        // Over TLS the direct path never runs, and the idle-memory probe speaks plain HTTP.
        stop.cancel();
        edge_runtime.shutdown_timeout(Duration::from_secs(2));
        return Ok(());
    }
    if !args.pingora_hits && direct < hits / 2.0 {
        bail!("the edge's direct (sendfile) path served {direct:.0} of {hits:.0} hits: the figures above are not its");
    }

    let idle = args.idle.min(usize::try_from(open_file_limit()).unwrap_or(usize::MAX).saturating_sub(500) / 2).max(10);
    println!();
    for (name, port, pids) in
        [("nginx proxy_cache", nginx.edge_port, &nginx_pids), ("bitriver edge", edge_port, &self_pid)]
    {
        let per = idle_memory(port, idle, pids)?;
        println!("memory per idle keep-alive connection ({idle} connections): {name}: {:.1} KB", per / 1024.0);
    }
    stop.cancel();
    edge_runtime.shutdown_timeout(Duration::from_secs(2));
    drop(nginx);
    Ok(())
}

/// A self-signed ECDSA P-256 certificate for 127.0.0.1 (openssl CLI): `(cert, key)` paths.
fn certificate(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running openssl")?;
    if !status.success() {
        bail!("openssl could not make a certificate");
    }
    Ok((cert, key))
}

/// apt-get install what is missing (quick when all are there).
fn ensure_tools(protocol: Protocol) -> anyhow::Result<()> {
    let h2load = (protocol == Protocol::H2).then_some(("nghttp2-client", "/usr/bin/h2load"));
    let missing: Vec<&str> = [("nginx", "/usr/sbin/nginx"), ("wrk", "/usr/bin/wrk")]
        .into_iter()
        .chain(h2load)
        .filter(|(_, path)| !Path::new(path).exists())
        .map(|(package, _)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("edge-bench: installing {missing:?} with apt-get ...");
    let update = std::process::Command::new("apt-get").args(["update", "-qq"]).status()?;
    let install = std::process::Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !update.success() || !install.success() {
        bail!("could not install {missing:?} (apt-get as root needed)");
    }
    Ok(())
}

/// GET twice; the second answer must be a cache hit.
async fn warm(port: u16, path: &str, header: &str, tls: bool) -> anyhow::Result<()> {
    let url = format!("{}://127.0.0.1:{port}{path}", if tls { "https" } else { "http" });
    if tls {
        return warm_tls(&url, header);
    }
    let client = reqwest::Client::new();
    for attempt in 0..2 {
        let resp = client.get(&url).send().await?;
        let status = resp.status();
        let cache = resp.headers().get(header).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        resp.bytes().await?;
        if status != 200 {
            bail!("{url}: {status}");
        }
        if attempt == 1 && cache != "HIT" {
            bail!("{url}: second request was not a cache hit ({header}: {cache:?})");
        }
    }
    Ok(())
}

/// [`warm`] over TLS, with curl (the bench's HTTP client has no TLS built in).
fn warm_tls(url: &str, header: &str) -> anyhow::Result<()> {
    for attempt in 0..2 {
        let out = std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-D", "-", url])
            .output()
            .context("running curl (apt-get install curl)")?;
        let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
        if !head.lines().next().is_some_and(|l| l.contains(" 200")) {
            bail!("{url}: {}", head.lines().next().unwrap_or("no answer"));
        }
        if attempt == 1 && !head.contains(&format!("{}: hit", header.to_lowercase())) {
            bail!("{url}: second request was not a cache hit:\n{head}");
        }
    }
    Ok(())
}

#[derive(Clone)]
struct WrkRun {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: String,
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut sorted: Vec<f64> = values.collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn wrk(port: u16, path: &str, conns: usize, seconds: u64, threads: usize, tls: bool) -> anyhow::Result<WrkRun> {
    let out = std::process::Command::new("wrk")
        .args(["-t", &threads.to_string(), "-c", &conns.to_string(), "-d", &format!("{seconds}s"), "--latency"])
        .arg(format!("{}://127.0.0.1:{port}{path}", if tls { "https" } else { "http" }))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))?;
    let percentile = |p: &str| {
        text.lines().map(str::trim).find_map(|l| l.strip_prefix(p)).map(|v| milliseconds(v.trim())).unwrap_or(f64::NAN)
    };
    let errors = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    Ok(WrkRun { rps, p50_ms: percentile("50%"), p99_ms: percentile("99%"), errors })
}

/// wrk's `123.45us`, `1.20ms`, `1.02s` in milliseconds.
fn milliseconds(v: &str) -> f64 {
    let (number, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, f64::NAN)
    };
    number.parse::<f64>().map_or(f64::NAN, |n| n * scale)
}

/// RSS growth of `pids` per keep-alive connection that fetched the init segment and stays open.
fn idle_memory(port: u16, count: usize, pids: &[u32]) -> anyhow::Result<f64> {
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_bytes_of(pids);
    let mut open = Vec::with_capacity(count);
    let request = format!("GET {INIT} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    for _ in 0..count {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.write_all(request.as_bytes())?;
        read_response(&mut stream)?;
        open.push(stream);
    }
    std::thread::sleep(Duration::from_millis(1000));
    let after = rss_bytes_of(pids);
    drop(open);
    Ok((after - before).max(0.0) / count as f64)
}

/// Read one HTTP/1.1 response with a `Content-Length` body.
fn read_response(stream: &mut std::net::TcpStream) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed mid-response");
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .context("response without content-length")?;
        if buf.len() >= end + 4 + length {
            return Ok(());
        }
    }
}

/// nginx serving the origin (static files) and the reference edge (`proxy_cache`).
/// `h2load` over HTTP/2 with TLS: `conns` connections of [`H2_STREAMS`] streams for `seconds`;
/// latencies from its per-request log.
fn h2load(port: u16, path: &str, conns: usize, seconds: u64, threads: usize, dir: &Path) -> anyhow::Result<WrkRun> {
    let log = dir.join("h2load.log");
    let _ = std::fs::remove_file(&log);
    let out = std::process::Command::new("h2load")
        .args(["-t", &threads.min(conns).to_string(), "-c", &conns.to_string(), "-m", &H2_STREAMS.to_string()])
        .args(["-D", &seconds.to_string(), "--log-file"])
        .arg(&log)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .context("running h2load (apt-get install nghttp2-client)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // "finished in 8.00s, 31234.56 req/s, 3.05GB/s"
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|v| v.trim_end_matches(" req/s").parse().ok())
        .with_context(|| format!("no req/s in h2load output:\n{text}"))?;
    // Log lines: start time (µs since the epoch), status, request time (µs).
    let mut micros: Vec<f64> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(2).and_then(|v| v.trim().parse().ok()))
        .collect();
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros.get(((micros.len() as f64 * q) as usize).min(micros.len().saturating_sub(1))).copied();
    let errors = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("requests:") && !l.contains(" 0 failed, 0 errored"))
        .collect::<Vec<_>>()
        .join("; ");
    Ok(WrkRun {
        rps,
        p50_ms: at(0.5).map_or(f64::NAN, |v| v / 1000.0),
        p99_ms: at(0.99).map_or(f64::NAN, |v| v / 1000.0),
        errors,
    })
}

struct Nginx {
    child: std::process::Child,
    origin_port: u16,
    plain_origin_port: u16,
    edge_port: u16,
    log: PathBuf,
}

impl Nginx {
    fn start(dir: &Path, workers: usize, cert: Option<&(PathBuf, PathBuf)>) -> anyhow::Result<Self> {
        let www = dir.join("www/hls/bench/v");
        for sub in ["cache", "logs", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::create_dir_all(&www)?;
        for (name, size) in
            [("part1.0.m4s", 100 * 1024), ("seg1.m4s", 1024 * 1024), ("init-0000000000000001.mp4", 1024)]
        {
            let body: Vec<u8> = (0..size).map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
            std::fs::write(www.join(name), body)?;
        }
        // The static server viewers' load goes to (the limit row; TLS like the edges), and the
        // same files in plain HTTP for both caches to fill from.
        let origin_port = free_port(false)?;
        let plain_origin_port = free_port(false)?;
        let edge_port = free_port(false)?;
        let d = dir.display();
        // Under TLS both nginx servers listen with the same certificate and HTTP/2 (nginx 1.22
        // syntax); sendfile does not apply to TLS connections.
        let (listen, tls) = match cert {
            Some((cert, key)) => (
                " ssl http2",
                format!(
                    "ssl_certificate {}; ssl_certificate_key {}; ssl_session_cache shared:SSL:10m; \
                     ssl_protocols TLSv1.2 TLSv1.3;",
                    cert.display(),
                    key.display()
                ),
            ),
            None => ("", String::new()),
        };
        let conf = format!(
            r#"daemon off;
master_process on;
worker_processes {workers};
error_log {d}/logs/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  sendfile on; tcp_nodelay on; keepalive_requests 1000000; keepalive_timeout 65;
  # Its best settings for hits: cache files stay open between requests.
  open_file_cache max=1000 inactive=60s; open_file_cache_valid 60s; open_file_cache_min_uses 1;
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy; fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
  types {{ video/iso.segment m4s; video/mp4 mp4; }}
  {tls}
  server {{ listen 127.0.0.1:{origin_port}{listen}; root {d}/www; }}
  server {{ listen 127.0.0.1:{plain_origin_port}; root {d}/www; }}
  proxy_cache_path {d}/cache levels=1:2 keys_zone=edge:10m max_size=1g inactive=10m use_temp_path=off;
  upstream origin {{ server 127.0.0.1:{plain_origin_port}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{edge_port}{listen}; tcp_nopush off;
    location / {{
      proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_cache edge; proxy_cache_valid 200 10m; proxy_cache_lock on;
      add_header X-Cache-Status $upstream_cache_status;
    }}
  }}
}}
"#
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let log = dir.join("logs/stderr.log");
        let child = std::process::Command::new("nginx")
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting nginx")?;
        let nginx = Nginx { child, origin_port, plain_origin_port, edge_port, log };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", edge_port)).is_ok() {
                return Ok(nginx);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("nginx did not start:\n{}", tail(&nginx.log));
    }

    /// The worker processes (children of the master).
    fn worker_pids(&self) -> Vec<u32> {
        children(self.child.id())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        testkit::process::signal(self.child.id(), testkit::process::Signal::QUIT);
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
