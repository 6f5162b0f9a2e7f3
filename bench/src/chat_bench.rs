//! `chat-bench`: chat fan-out latency and API throughput of a real `bitriver` node.
//!
//! The bench spawns the release `bitriver` binary as its own process (development mode, loopback
//! ports, a temp data dir), so every figure includes the node's real HTTP stack, middleware (audit
//! log, metrics, limits), catalog commits and chat sockets. Setup goes through the API as the
//! development admin (a loopback request without a token): one creator, `--channels` channels,
//! `--posters` viewer accounts.
//!
//! - **Fan-out**: for each count in `--clients` (1,000 then 5,000), that many WebSocket clients
//!   are connected to one channel's `/chat/ws` (sockets are added between runs, not reopened), then
//!   `--rate` messages/s are posted through `POST /api/channels/{id}/chat` for `--seconds`, open
//!   loop. Each text carries the run, a sequence number and its send time (µs since the bench
//!   started); every client takes its receive time when the frame arrives, so a delivery's latency
//!   is post → commit → apply → broadcast → socket → client, on one clock. Posts rotate over the
//!   poster accounts because the node allows each user 5 messages per 10 s and has no setting to
//!   change that (the node builds its `ChatConfig` with the defaults).
//! - **API throughput**: `--connections` HTTP/1.1 connections in closed loop for `--api-seconds`
//!   each against `GET /healthz`, `GET /metrics`, `GET /api/channels` and
//!   `POST /api/channels/{id}/chat`. The cheaper of the first two (higher requests/s) is the
//!   reference: the same client and node serving a route that does no API work, so `× ref` shows
//!   what the API itself costs.
//!
//! The node's CPU time comes from `/proc/PID/stat` (utime + stime) before and after each run, its
//! memory from `VmRSS` in `/proc/PID/status`, sampled every 100 ms. The bench shares the machine's
//! cores with the node; its own CPU time is printed too, since it competes with the node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use futures::{stream, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Barrier, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

/// WebSocket handshakes in flight at once while connecting clients.
const CONNECTING_AT_ONCE: usize = 200;
/// Setup requests (users, channels) in flight at once.
const SETUP_AT_ONCE: usize = 32;
/// File descriptors each process needs beyond one per socket (listeners, RocksDB, pools).
const FD_MARGIN: u64 = 512;
/// Marker that starts every benchmark message text: `cb RUN SEQ SENT_US`.
const TEXT_MARKER: &str = "\"text\":\"cb ";
/// Before a fan-out run, the node is quiet once no chat frame arrived for this long ...
const SETTLE_QUIET: Duration = Duration::from_millis(500);
/// ... and the run starts anyway after this long.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
/// Sampling period of the node's resident memory.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Parser)]
#[command(
    name = "chat-bench",
    about = "Chat fan-out latency and API throughput of a real bitriver node",
    long_about = "Spawns the release bitriver binary on loopback, connects WebSocket chat clients and posts \
                  messages through the REST API, then loads the API with concurrent HTTP/1.1 connections. \
                  Prints figures; asserts nothing. Every flag has a CHAT_BENCH_* environment twin."
)]
struct Args {
    /// The bitriver binary [default: $CARGO_TARGET_DIR/release/bitriver, else target/release/bitriver].
    #[arg(long, value_name = "PATH", env = "CHAT_BENCH_BITRIVER")]
    bitriver: Option<PathBuf>,

    /// Chat sockets open during each fan-out run, ascending (sockets are added between runs).
    #[arg(long, value_name = "N,...", env = "CHAT_BENCH_CLIENTS", value_delimiter = ',', default_values_t = [1000, 5000])]
    clients: Vec<usize>,

    /// Chat messages posted per second in each fan-out run (open loop).
    #[arg(long, env = "CHAT_BENCH_RATE", default_value_t = 100)]
    rate: u32,

    /// Length of each fan-out run's posting, in seconds.
    #[arg(long, env = "CHAT_BENCH_SECONDS", default_value_t = 10.0)]
    seconds: f64,

    /// Longest wait for outstanding deliveries after the last post was answered, in seconds.
    #[arg(long, env = "CHAT_BENCH_DRAIN_SECONDS", default_value_t = 5.0)]
    drain_seconds: f64,

    /// Length of each API throughput run, in seconds.
    #[arg(long, env = "CHAT_BENCH_API_SECONDS", default_value_t = 5.0)]
    api_seconds: f64,

    /// Concurrent HTTP/1.1 connections (each in closed loop) in the API throughput runs.
    #[arg(long, env = "CHAT_BENCH_CONNECTIONS", default_value_t = 64)]
    connections: usize,

    /// Channels created before the runs (what `GET /api/channels` lists).
    #[arg(long, env = "CHAT_BENCH_CHANNELS", default_value_t = 100)]
    channels: usize,

    /// Accounts that post. The node lets each post 5 messages per 10 s; posts rotate over them,
    /// so posting stays under the limit up to posters / 2 messages per second.
    #[arg(long, env = "CHAT_BENCH_POSTERS", default_value_t = 5000)]
    posters: usize,

    /// Directory for the node's temp data dir and log [default: the system temp dir].
    #[arg(long, value_name = "DIR", env = "CHAT_BENCH_DIR")]
    dir: Option<PathBuf>,
}

impl Args {
    fn validate(&self) -> anyhow::Result<()> {
        if self.clients.is_empty() || self.clients.contains(&0) {
            bail!("--clients: give one or more socket counts > 0");
        }
        if self.clients.windows(2).any(|w| w[0] > w[1]) {
            bail!("--clients: counts must be ascending (sockets are added between runs)");
        }
        if self.rate == 0 {
            bail!("--rate must be > 0");
        }
        for (flag, v) in [("--seconds", self.seconds), ("--api-seconds", self.api_seconds)] {
            if !(v > 0.0 && v <= 3600.0) {
                bail!("{flag} must be > 0 and at most 3600");
            }
        }
        if !(0.0..=600.0).contains(&self.drain_seconds) {
            bail!("--drain-seconds must be from 0 to 600");
        }
        if self.connections == 0 || self.channels == 0 || self.posters == 0 {
            bail!("--connections, --channels and --posters must be > 0");
        }
        Ok(())
    }

    fn bitriver_path(&self) -> PathBuf {
        testkit::process::bitriver_binary(self.bitriver.as_deref())
    }
}

use testkit::process::{free_port, BenchNode};
use testkit::procfs::{cpu_seconds, load_average, rss_kib, MachineCpu, Pid};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // The chat clients get their own threads: a post is sent (and timed) when it is due, not once
    // the posting task's turn comes after thousands of readers queued on the same workers.
    let readers = tokio::runtime::Builder::new_multi_thread().thread_name("chat-clients").enable_all().build()?;
    let result = runtime.block_on(run(args, readers.handle().clone()));
    readers.shutdown_background();
    result
}

async fn run(args: Args, readers: tokio::runtime::Handle) -> anyhow::Result<()> {
    let started = Instant::now();
    let load_before = load_average();
    let max_clients = args.clients.iter().copied().max().unwrap_or(0);
    check_fd_limit(max_clients as u64 + args.connections as u64 + FD_MARGIN)?;

    let bin = args.bitriver_path();
    eprintln!("starting {} ...", bin.display());
    let node = Node::start(&bin, args.dir.as_deref()).await?;
    eprintln!("  node pid {} on http://{} (log {})", node.pid, node.http, node.log.display());
    let result = bench(&args, &node, started, &load_before, &readers).await;
    if result.is_err() {
        eprintln!("node log tail:\n{}", node.log_tail());
    }
    node.stop().await;
    result
}

async fn bench(
    args: &Args,
    node: &Node,
    started: Instant,
    load_before: &str,
    readers: &tokio::runtime::Handle,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let base = format!("http://{}", node.http);

    let t = Instant::now();
    let setup = Setup::create(&http, &base, args.channels, args.posters).await?;
    eprintln!(
        "  setup: {} channels and {} accounts through the API in {:.1} s",
        setup.channels.len(),
        setup.posters.len() + 1,
        t.elapsed().as_secs_f64()
    );
    let posters = Arc::new(Posters { ids: setup.posters.clone(), next: AtomicUsize::new(0) });
    let chat_channel = setup.channels[0].clone();

    // ----- fan-out -----
    let clock = Instant::now();
    let shared = Arc::new(Fanout::default());
    let mut clients: Vec<ChatClient> = Vec::new();
    let rss_idle = node.rss_kib()?;
    let mut fanout = Vec::new();
    for (i, &target) in args.clients.iter().enumerate() {
        let run_id = i as u32 + 1;
        shared.run.store(run_id, Ordering::SeqCst);
        eprintln!("fan-out: connecting {} more sockets (to {target}) ...", target - clients.len());
        let t = Instant::now();
        let failed = connect_clients(node.http, &chat_channel, target, &mut clients, &shared, clock, readers).await;
        let connect_secs = t.elapsed().as_secs_f64();
        let (settle_secs, settled) = settle(&shared, clock, SETTLE_QUIET, SETTLE_LIMIT).await;
        eprintln!(
            "  {} open in {connect_secs:.1} s; posting {}/s for {} s ...",
            clients.len(),
            args.rate,
            args.seconds
        );
        let figures =
            fanout_run(args, node, &http, &base, &chat_channel, &posters, &clients, &shared, clock, run_id).await?;
        fanout.push(FanoutRow { target, connect_secs, connect_failed: failed, settle_secs, settled, ..figures });
    }
    for client in &clients {
        client.task.abort();
    }
    let closed_by_node = shared.closed.load(Ordering::SeqCst);
    let first_close = shared.first_close.lock().unwrap_or_else(|p| p.into_inner()).clone();
    drop(clients);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // ----- API throughput -----
    let api_for = Duration::from_secs_f64(args.api_seconds);
    let chat_path = format!("/api/channels/{chat_channel}/chat");
    let targets = [
        ("GET /healthz", Target::Get("/healthz".to_owned())),
        ("GET /metrics", Target::Get("/metrics".to_owned())),
        ("GET /api/channels", Target::Get("/api/channels".to_owned())),
        ("POST /api/channels/{id}/chat", Target::PostChat { path: chat_path, posters: posters.clone() }),
    ];
    let mut api_rows = Vec::new();
    for (name, target) in targets {
        eprintln!("api: {name} on {} connections for {} s ...", args.connections, args.api_seconds);
        let (cpu0, bench0, machine0) = (node.cpu_seconds()?, cpu_seconds(Pid::This)?, MachineCpu::now()?);
        let row = api_load(node.http, &target, args.connections, api_for).await?;
        let cpu = node.cpu_seconds()? - cpu0;
        let bench_cpu = cpu_seconds(Pid::This)? - bench0;
        let (irq_cpu, other_cpu) = machine0.since(cpu + bench_cpu)?;
        api_rows.push(ApiRow { name, cpu, bench_cpu, irq_cpu, other_cpu, ..row });
    }

    let report = Report {
        args,
        setup: &setup,
        load_before,
        rss_idle_kib: rss_idle,
        fanout: &fanout,
        closed_by_node,
        first_close,
        api: &api_rows,
        started,
    };
    report.print();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The node process
// ---------------------------------------------------------------------------------------------

/// The spawned `bitriver` node (`--roles control`, a temp data dir); killed when dropped.
struct Node {
    node: BenchNode,
    pid: u32,
    http: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Node {
    async fn start(bin: &Path, dir: Option<&Path>) -> anyhow::Result<Node> {
        let tmp = match dir {
            Some(d) => tempfile::Builder::new().prefix("chat-bench-").tempdir_in(d)?,
            None => tempfile::Builder::new().prefix("chat-bench-").tempdir()?,
        };
        let http = SocketAddr::from(([127, 0, 0, 1], free_port(false)?));
        let cluster = SocketAddr::from(([127, 0, 0, 1], free_port(true)?));
        let args = [
            "--mode".to_owned(),
            "development".to_owned(),
            "--addr".to_owned(),
            http.to_string(),
            "--cluster-addr".to_owned(),
            cluster.to_string(),
            "--data".to_owned(),
            tmp.path().join("data").display().to_string(),
            "--roles".to_owned(),
            "control".to_owned(),
        ];
        // Every bench client comes from 127.0.0.1: lift the per-address share of the sockets.
        let env = [("BITRIVER_LIVE_RATE_LOGIN_LIMIT", "1000000"), ("BITRIVER_LIVE_CHAT_SOCKETS_PER_CLIENT", "0")];
        let node = BenchNode::start(bin, tmp.path(), http, &args, &env).await?;
        Ok(Node { pid: node.pid, log: node.log.clone(), node, http, _dir: tmp })
    }

    /// User + system CPU time the node has used so far.
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        self.node.cpu_seconds()
    }

    /// Resident memory now, in KiB.
    fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(Pid::Of(self.pid))
    }

    fn log_tail(&self) -> String {
        self.node.log_tail()
    }

    async fn stop(self) {
        self.node.stop().await;
    }
}

/// The bench and the node (which inherits the limit) each hold one descriptor per socket.
fn check_fd_limit(need: u64) -> anyhow::Result<()> {
    let soft = testkit::procfs::open_file_limit();
    if soft < need {
        bail!(
            "the open-file limit is {soft}, the run needs about {need}: raise it with `ulimit -n {need}` \
             (or ask for fewer --clients)"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Setup through the API
// ---------------------------------------------------------------------------------------------

struct Setup {
    channels: Vec<String>,
    posters: Vec<String>,
}

impl Setup {
    async fn create(http: &reqwest::Client, base: &str, channels: usize, posters: usize) -> anyhow::Result<Setup> {
        let owner = created_id(
            http,
            format!("{base}/api/users"),
            json!({"displayName": "Bench Owner", "email": "owner@bench.example", "roles": ["creator"]}),
        )
        .await?;
        let channels = create_many(channels, |i| {
            created_id(
                http,
                format!("{base}/api/channels"),
                json!({"ownerId": owner, "title": format!("Bench channel {i}"), "tags": ["bench"]}),
            )
        })
        .await?;
        let posters = create_many(posters, |i| {
            created_id(
                http,
                format!("{base}/api/users"),
                json!({"displayName": format!("Poster {i}"), "email": format!("poster{i}@bench.example")}),
            )
        })
        .await?;
        Ok(Setup { channels, posters })
    }
}

async fn create_many<F, Fut>(n: usize, make: F) -> anyhow::Result<Vec<String>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    stream::iter(0..n).map(make).buffer_unordered(SETUP_AT_ONCE).collect::<Vec<_>>().await.into_iter().collect()
}

/// POST `body` as the development admin; the `id` of what was created.
async fn created_id(http: &reqwest::Client, url: String, body: Value) -> anyhow::Result<String> {
    let resp = http.post(&url).json(&body).send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let answer: Value = resp.json().await.with_context(|| format!("POST {url}: reading the answer"))?;
    if status != reqwest::StatusCode::CREATED {
        bail!("POST {url}: {status} {answer}");
    }
    answer["id"].as_str().map(str::to_owned).with_context(|| format!("POST {url}: no id in {answer}"))
}

/// Poster accounts, handed out round-robin across the whole bench so that each account's posts
/// are as far apart as they can be (the node's per-user limit is 5 per 10 s).
struct Posters {
    ids: Vec<String>,
    next: AtomicUsize,
}

impl Posters {
    fn next(&self) -> &str {
        &self.ids[self.next.fetch_add(1, Ordering::Relaxed) % self.ids.len()]
    }
}

// ---------------------------------------------------------------------------------------------
// Fan-out
// ---------------------------------------------------------------------------------------------

/// What every chat client shares.
#[derive(Default)]
struct Fanout {
    /// Deliveries of other runs (late ones) are not counted.
    run: AtomicU32,
    deliveries: AtomicU64,
    /// Latest receive time of the current run, µs on the bench clock.
    last_delivery_us: AtomicU64,
    /// Latest receive time of any text frame (any run), µs on the bench clock.
    last_frame_us: AtomicU64,
    /// Sum of `missed` of every `lagged` frame.
    lagged_missed: AtomicU64,
    lagged_frames: AtomicU64,
    /// Sockets the node closed (or that failed) while the bench wanted them open.
    closed: AtomicUsize,
    first_close: Mutex<Option<String>>,
}

impl Fanout {
    fn note_close(&self, why: String) {
        self.closed.fetch_add(1, Ordering::SeqCst);
        let mut first = self.first_close.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(why);
    }
}

struct ChatClient {
    /// `(seq, latency µs)` of every delivery of the current run, duplicates included.
    deliveries: Arc<Mutex<Vec<(u32, u32)>>>,
    task: JoinHandle<()>,
}

/// Open sockets until `clients` holds `target`; returns how many attempts failed (with the first
/// error printed).
async fn connect_clients(
    http: SocketAddr,
    channel: &str,
    target: usize,
    clients: &mut Vec<ChatClient>,
    shared: &Arc<Fanout>,
    clock: Instant,
    readers: &tokio::runtime::Handle,
) -> usize {
    let path = Arc::new(format!("/api/channels/{channel}/chat/ws?history=0"));
    let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let mut connecting = JoinSet::new();
    for _ in clients.len()..target {
        let (path, gate) = (path.clone(), gate.clone());
        // Opened on the readers' runtime, so that their sockets' readiness is driven there.
        connecting.spawn_on(
            async move {
                let _permit = gate.acquire_owned().await;
                ChatSocket::open(http, &path).await
            },
            readers,
        );
    }
    let mut failed = 0;
    while let Some(joined) = connecting.join_next().await {
        match joined.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(ws) => {
                let deliveries = Arc::new(Mutex::new(Vec::new()));
                let task = readers.spawn(read_chat(ws, shared.clone(), deliveries.clone(), clock));
                clients.push(ChatClient { deliveries, task });
            }
            Err(e) => {
                if failed == 0 {
                    eprintln!("  socket failed to connect: {e:#}");
                }
                failed += 1;
            }
        }
    }
    failed
}

/// One chat client's connection. The bench reads 5,000 of these on the cores the node uses, so
/// it does the least a client must: the upgrade by hand, then unmasked server frames parsed in
/// place from one buffer per read (no per-frame allocation or copy), a pong for each ping. A
/// general WebSocket client cost about 7 µs of the bench's CPU per socket per fan-out tick, as
/// much as the node spent writing it, and that contention was part of every figure.
struct ChatSocket {
    stream: TcpStream,
    /// Bytes read and not yet parsed (a frame split across reads, or what followed the upgrade).
    buf: Vec<u8>,
}

/// Largest server frame the bench accepts (a `history` frame is the largest the node sends).
const MAX_SERVER_FRAME: usize = 1 << 20;

impl ChatSocket {
    async fn open(http: SocketAddr, path: &str) -> anyhow::Result<ChatSocket> {
        let mut stream = TcpStream::connect(http).await?;
        stream.set_nodelay(true)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {http}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: Yml0cml2ZXItY2hhdC1iZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::with_capacity(4096);
        let head_len = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if buf.len() >= 16 * 1024 || stream.read_buf(&mut buf).await? == 0 {
                bail!("the upgrade answer ended or grew past 16 KiB: {:?}", String::from_utf8_lossy(&buf));
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_len]);
        if !head.starts_with("HTTP/1.1 101") {
            bail!("upgrade refused: {}", head.lines().next().unwrap_or_default());
        }
        buf.drain(..head_len);
        Ok(ChatSocket { stream, buf })
    }
}

/// A server frame at the start of `buf`: its opcode, where its payload is, and its whole length;
/// `None` until all of it is in `buf`. Server frames are never masked (RFC 6455 5.1).
fn server_frame(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let (len, at): (usize, usize) = match b1 & 0x7f {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (usize::from(n), 2),
    };
    let end = at.checked_add(len)?;
    (buf.len() >= end).then_some((b0 & 0x0f, at..end, end))
}

/// A masked pong frame carrying `payload` (control payloads are at most 125 bytes).
fn pong_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x17, 0xc3, 0x3e];
    let mut frame = vec![0x8a, 0x80 | payload.len().min(125) as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().take(125).enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// One chat client: timestamp every benchmark message it receives.
async fn read_chat(
    mut socket: ChatSocket,
    shared: Arc<Fanout>,
    deliveries: Arc<Mutex<Vec<(u32, u32)>>>,
    clock: Instant,
) {
    let why = 'read: loop {
        let mut parsed = 0;
        let now_us = clock.elapsed().as_micros() as u64;
        while let Some((opcode, payload, len)) = server_frame(&socket.buf[parsed..]) {
            let payload = &socket.buf[parsed..][payload];
            parsed += len;
            match opcode {
                0x1 => {
                    shared.last_frame_us.fetch_max(now_us, Ordering::Relaxed);
                    note_text(payload, now_us, &shared, &deliveries);
                }
                0x8 => {
                    let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                    break 'read format!("closed by the node: {code:?} {reason:?}");
                }
                0x9 => {
                    let pong = pong_frame(payload);
                    if let Err(e) = socket.stream.write_all(&pong).await {
                        break 'read format!("socket error answering a ping: {e}");
                    }
                }
                0x0 => break 'read "a fragmented frame (the node sends whole frames)".to_owned(),
                _ => {}
            }
        }
        socket.buf.drain(..parsed);
        if socket.buf.len() > MAX_SERVER_FRAME {
            break format!("a frame over {MAX_SERVER_FRAME} bytes");
        }
        match socket.stream.read_buf(&mut socket.buf).await {
            Ok(0) => break "socket ended".to_owned(),
            Ok(_) => {}
            Err(e) => break format!("socket error: {e}"),
        }
        if socket.buf.capacity() > 64 * 1024 && socket.buf.len() < 4096 {
            socket.buf.shrink_to(8 * 1024); // after a large history frame
        }
    };
    shared.note_close(why);
}

/// Count a text frame: a delivery of the current run, or a `lagged` notice.
fn note_text(payload: &[u8], now_us: u64, shared: &Fanout, deliveries: &Mutex<Vec<(u32, u32)>>) {
    let Ok(text) = std::str::from_utf8(payload) else { return };
    match parse_bench_text(text) {
        Some((run, seq, sent_us)) if run == shared.run.load(Ordering::Relaxed) => {
            let latency = now_us.saturating_sub(sent_us).min(u64::from(u32::MAX)) as u32;
            deliveries.lock().unwrap_or_else(|p| p.into_inner()).push((seq, latency));
            shared.deliveries.fetch_add(1, Ordering::Relaxed);
            shared.last_delivery_us.fetch_max(now_us, Ordering::Relaxed);
        }
        Some(_) => {}
        None => {
            if let Some(missed) = parse_lagged(text) {
                shared.lagged_frames.fetch_add(1, Ordering::Relaxed);
                shared.lagged_missed.fetch_add(missed, Ordering::Relaxed);
            }
        }
    }
}

/// `(run, seq, sent_us)` of a `message` frame the bench posted. A substring scan, not a JSON
/// parse: 5,000 clients share the machine's cores with the node.
fn parse_bench_text(frame: &str) -> Option<(u32, u32, u64)> {
    let start = frame.find(TEXT_MARKER)? + TEXT_MARKER.len();
    let rest = &frame[start..];
    let mut parts = rest[..rest.find('"')?].split(' ');
    let run = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent_us = parts.next()?.parse().ok()?;
    Some((run, seq, sent_us))
}

/// `missed` of a `{"type":"lagged","missed":N}` frame.
fn parse_lagged(frame: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(frame).ok()?;
    (v["type"] == "lagged").then(|| v["missed"].as_u64()).flatten()
}

#[derive(Default)]
struct FanoutRow {
    target: usize,
    connect_secs: f64,
    connect_failed: usize,
    /// Seconds the node took to go quiet (no frame for a while) before the run started.
    settle_secs: f64,
    settled: bool,
    open: usize,
    /// Posts answered 201.
    accepted: u64,
    /// Posts answered otherwise (or not at all).
    failed: u64,
    first_failure: Option<String>,
    /// Posts that reached at least one socket, or were answered 201.
    committed: u64,
    post_lat: Percentiles,
    issue_lag_max_ms: f64,
    /// Deliveries counted once per (socket, post).
    deliveries: u64,
    /// Second and later deliveries of the same post to the same socket.
    duplicates: u64,
    /// Committed posts a socket never got.
    missed: u64,
    lagged_frames: u64,
    lagged_missed: u64,
    delivery: Percentiles,
    deliveries_per_sec: f64,
    wall_secs: f64,
    node_cpu: f64,
    bench_cpu: f64,
    other_cpu: f64,
    irq_cpu: f64,
    rss_open_kib: u64,
    rss_peak_kib: u64,
}

/// Wait until no chat frame has arrived for `quiet` (leftovers of an earlier run), at most `limit`.
async fn settle(shared: &Fanout, clock: Instant, quiet: Duration, limit: Duration) -> (f64, bool) {
    let t = Instant::now();
    loop {
        let last = Duration::from_micros(shared.last_frame_us.load(Ordering::SeqCst));
        if clock.elapsed().saturating_sub(last) >= quiet {
            return (t.elapsed().as_secs_f64(), true);
        }
        if t.elapsed() >= limit {
            return (t.elapsed().as_secs_f64(), false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn fanout_run(
    args: &Args,
    node: &Node,
    http: &reqwest::Client,
    base: &str,
    channel: &str,
    posters: &Arc<Posters>,
    clients: &[ChatClient],
    shared: &Arc<Fanout>,
    clock: Instant,
    run_id: u32,
) -> anyhow::Result<FanoutRow> {
    for client in clients {
        client.deliveries.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
    shared.deliveries.store(0, Ordering::SeqCst);
    shared.last_delivery_us.store(0, Ordering::SeqCst);
    shared.lagged_frames.store(0, Ordering::SeqCst);
    shared.lagged_missed.store(0, Ordering::SeqCst);
    let closed_before = shared.closed.load(Ordering::SeqCst);

    let rss_open_kib = node.rss_kib()?;
    let rss_peak = Arc::new(AtomicU64::new(rss_open_kib));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (rss_peak, sampling, pid) = (rss_peak.clone(), sampling.clone(), node.pid);
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Ok(kib) = rss_kib(Pid::Of(pid)) {
                    rss_peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(RSS_SAMPLE_EVERY).await;
            }
        })
    };
    let node_cpu0 = node.cpu_seconds()?;
    let bench_cpu0 = cpu_seconds(Pid::This)?;
    let machine0 = MachineCpu::now()?;
    let t0 = Instant::now();

    // Open loop: one post per tick whether or not earlier ones were answered.
    let total = (f64::from(args.rate) * args.seconds).round().max(1.0) as u32;
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let url = Arc::new(format!("{base}/api/channels/{channel}/chat"));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut posts = JoinSet::new();
    let mut issue_lag_max = Duration::ZERO;
    let first_send_us = clock.elapsed().as_micros() as u64;
    for seq in 0..total {
        let scheduled = ticker.tick().await;
        issue_lag_max = issue_lag_max.max(scheduled.elapsed());
        let (http, url, user) = (http.clone(), url.clone(), posters.next().to_owned());
        posts.spawn(async move {
            let sent_us = clock.elapsed().as_micros() as u64;
            let body = json!({"text": format!("cb {run_id} {seq} {sent_us}"), "userId": user});
            let t = Instant::now();
            let resp = http.post(url.as_str()).json(&body).send().await;
            let took = t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
            let outcome = match resp {
                Ok(resp) if resp.status() == reqwest::StatusCode::CREATED => Ok(()),
                Ok(resp) => {
                    let status = resp.status();
                    Err(format!("{status} {}", resp.text().await.unwrap_or_default()))
                }
                Err(e) => Err(e.to_string()),
            };
            (seq, took, outcome)
        });
    }
    let mut committed = vec![false; total as usize];
    let mut post_lat = Vec::with_capacity(total as usize);
    let (mut failed, mut first_failure) = (0, None);
    while let Some(joined) = posts.join_next().await {
        let (seq, took, outcome) = joined?;
        post_lat.push(took);
        match outcome {
            Ok(()) => committed[seq as usize] = true,
            Err(e) => {
                failed += 1;
                first_failure.get_or_insert(e);
            }
        }
    }
    let accepted = u64::from(total) - failed;

    // Drain: every open socket should get every accepted post; stop early once frames stop coming.
    let open = clients.len();
    let expected = accepted * open as u64;
    let drain_until = Instant::now() + Duration::from_secs_f64(args.drain_seconds);
    while Instant::now() < drain_until {
        let quiet_for =
            clock.elapsed().saturating_sub(Duration::from_micros(shared.last_frame_us.load(Ordering::SeqCst)));
        let all_in = shared.deliveries.load(Ordering::SeqCst) >= expected;
        if (all_in && quiet_for >= Duration::from_millis(200)) || quiet_for >= Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall_secs = t0.elapsed().as_secs_f64();
    let node_cpu = node.cpu_seconds()? - node_cpu0;
    let bench_cpu = cpu_seconds(Pid::This)? - bench_cpu0;
    let (irq_cpu, other_cpu) = machine0.since(node_cpu + bench_cpu)?;
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    // Later frames of this run are no longer counted.
    shared.run.store(0, Ordering::SeqCst);

    // Per socket: the first delivery of each post counts; later ones are duplicates (the node
    // committed the post twice).
    let mut per_socket = Vec::with_capacity(open);
    let mut duplicates = 0;
    for client in clients {
        let mut mine = std::mem::take(&mut *client.deliveries.lock().unwrap_or_else(|p| p.into_inner()));
        mine.sort_unstable();
        let before = mine.len();
        mine.dedup_by_key(|(seq, _)| *seq);
        duplicates += (before - mine.len()) as u64;
        for (seq, _) in &mine {
            if let Some(c) = committed.get_mut(*seq as usize) {
                *c = true;
            }
        }
        per_socket.push(mine);
    }
    let committed = committed.iter().filter(|c| **c).count() as u64;
    let mut all: Vec<u32> = Vec::with_capacity(per_socket.iter().map(Vec::len).sum());
    let mut missed = 0;
    for mine in per_socket {
        missed += committed.saturating_sub(mine.len() as u64);
        all.extend(mine.into_iter().map(|(_, latency)| latency));
    }
    let deliveries = all.len() as u64;
    let last_us = shared.last_delivery_us.load(Ordering::SeqCst);
    let span_secs = last_us.saturating_sub(first_send_us) as f64 / 1e6;
    let closed_during = shared.closed.load(Ordering::SeqCst) - closed_before;
    if closed_during > 0 {
        eprintln!("  {closed_during} sockets were closed during the run");
    }
    Ok(FanoutRow {
        open,
        accepted,
        failed,
        first_failure,
        committed,
        post_lat: Percentiles::of(&mut post_lat),
        issue_lag_max_ms: issue_lag_max.as_secs_f64() * 1e3,
        deliveries,
        duplicates,
        missed,
        lagged_frames: shared.lagged_frames.load(Ordering::SeqCst),
        lagged_missed: shared.lagged_missed.load(Ordering::SeqCst),
        delivery: Percentiles::of(&mut all),
        deliveries_per_sec: if span_secs > 0.0 { deliveries as f64 / span_secs } else { 0.0 },
        wall_secs,
        node_cpu,
        bench_cpu,
        other_cpu,
        irq_cpu,
        rss_open_kib,
        rss_peak_kib: rss_peak.load(Ordering::SeqCst),
        ..FanoutRow::default()
    })
}

// ---------------------------------------------------------------------------------------------
// API throughput
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
enum Target {
    Get(String),
    /// A chat post as the next poster account.
    PostChat {
        path: String,
        posters: Arc<Posters>,
    },
}

impl Target {
    fn request(&self, host: &str) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
        let builder = hyper::Request::builder().header(hyper::header::HOST, host);
        Ok(match self {
            Target::Get(path) => builder.method(hyper::Method::GET).uri(path.as_str()).body(Full::new(Bytes::new()))?,
            Target::PostChat { path, posters } => {
                let body = json!({"text": "throughput run", "userId": posters.next()});
                builder
                    .method(hyper::Method::POST)
                    .uri(path.as_str())
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))?
            }
        })
    }
}

#[derive(Default)]
struct ApiRow {
    name: &'static str,
    ok: u64,
    not_ok: u64,
    first_not_ok: Option<String>,
    secs: f64,
    lat: Percentiles,
    cpu: f64,
    bench_cpu: f64,
    irq_cpu: f64,
    other_cpu: f64,
}

/// `connections` HTTP/1.1 connections, each sending its next request when the previous answer is
/// read, for `run_for` (timed from when all are connected).
async fn api_load(http: SocketAddr, target: &Target, connections: usize, run_for: Duration) -> anyhow::Result<ApiRow> {
    let host = http.to_string();
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        let stream = TcpStream::connect(http).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        senders.push(sender);
    }
    let start = Arc::new(Barrier::new(connections + 1));
    let deadline = Arc::new(Mutex::new(None::<Instant>));
    let target = Arc::new(target.clone());
    let mut workers = JoinSet::new();
    for mut sender in senders {
        let (start, deadline, target, host) = (start.clone(), deadline.clone(), target.clone(), host.clone());
        workers.spawn(async move {
            start.wait().await;
            let until = deadline.lock().unwrap_or_else(|p| p.into_inner()).context("no deadline")?;
            let (mut lat, mut not_ok, mut first_not_ok) = (Vec::new(), 0u64, None);
            while Instant::now() < until {
                sender.ready().await?;
                let t = Instant::now();
                let resp = sender.send_request(target.request(&host)?).await?;
                let status = resp.status();
                let body = resp.into_body().collect().await?.to_bytes();
                let took = t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                if status.is_success() {
                    lat.push(took);
                } else {
                    not_ok += 1;
                    first_not_ok.get_or_insert_with(|| format!("{status} {}", String::from_utf8_lossy(&body)));
                }
            }
            anyhow::Ok((lat, not_ok, first_not_ok))
        });
    }
    *deadline.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + run_for);
    let t0 = Instant::now();
    start.wait().await;
    let mut row = ApiRow::default();
    let mut all = Vec::new();
    while let Some(joined) = workers.join_next().await {
        let (mut lat, not_ok, first) = joined??;
        all.append(&mut lat);
        row.not_ok += not_ok;
        if row.first_not_ok.is_none() {
            row.first_not_ok = first;
        }
    }
    row.secs = t0.elapsed().as_secs_f64();
    row.ok = all.len() as u64;
    row.lat = Percentiles::of(&mut all);
    Ok(row)
}

// ---------------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------------

/// Percentiles of a set of µs samples, in ms.
#[derive(Debug, Default, Clone, Copy)]
struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(samples_us: &mut [u32]) -> Self {
        if samples_us.is_empty() {
            return Percentiles::default();
        }
        samples_us.sort_unstable();
        let at = |q: f64| {
            let i = ((samples_us.len() as f64 * q).ceil() as usize).clamp(1, samples_us.len()) - 1;
            f64::from(samples_us[i]) / 1e3
        };
        Percentiles { p50: at(0.50), p99: at(0.99), max: f64::from(samples_us[samples_us.len() - 1]) / 1e3 }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Report<'a> {
    args: &'a Args,
    setup: &'a Setup,
    load_before: &'a str,
    rss_idle_kib: u64,
    fanout: &'a [FanoutRow],
    closed_by_node: usize,
    first_close: Option<String>,
    api: &'a [ApiRow],
    started: Instant,
}

impl Report<'_> {
    fn print(&self) {
        let args = self.args;
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!();
        println!(
            "chat-bench: {} CPU cores shared by the node, the bench and anything else running; load average \
             before {}, after {}",
            cores,
            self.load_before,
            load_average()
        );
        println!();
        println!(
            "chat fan-out: one channel, {} msg/s posted through REST (open loop) for {} s per run, rotating over {} \
             accounts",
            args.rate,
            args.seconds,
            self.setup.posters.len()
        );
        println!();
        println!(
            "{:>7} {:>13} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>6} {:>6}",
            "sockets",
            "posts ok/fail",
            "committed",
            "deliv p50",
            "p99",
            "max",
            "post p50",
            "p99",
            "deliv/s",
            "missed",
            "dup",
            "lagged"
        );
        println!(
            "{:>7} {:>13} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>6} {:>6}",
            "", "", "", "ms", "ms", "ms", "ms", "ms", "", "", "", "frames"
        );
        println!("{}", "-".repeat(7 + 13 + 9 + 9 + 8 * 5 + 10 + 8 + 6 + 6 + 11));
        for r in self.fanout {
            println!(
                "{:>7} {:>13} {:>9} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>10.0} {:>8} {:>6} {:>6}",
                r.open,
                format!("{}/{}", r.accepted, r.failed),
                r.committed,
                r.delivery.p50,
                r.delivery.p99,
                r.delivery.max,
                r.post_lat.p50,
                r.post_lat.p99,
                r.deliveries_per_sec,
                r.missed,
                r.duplicates,
                r.lagged_frames
            );
        }
        println!();
        println!(
            "resources over each run (posting + drain); node RSS before any socket {:.0} MiB",
            mib(self.rss_idle_kib)
        );
        println!();
        println!(
            "{:>7} {:>6} {:>9} {:>10} {:>10} {:>10} {:>8} {:>11} {:>9} {:>9} {:>10}",
            "sockets",
            "run s",
            "node CPU",
            "node cores",
            "node CPU",
            "bench CPU",
            "irq CPU",
            "others' CPU",
            "RSS open",
            "RSS peak",
            "KiB/socket"
        );
        println!(
            "{:>7} {:>6} {:>9} {:>10} {:>10} {:>10} {:>8} {:>11} {:>9} {:>9} {:>10}",
            "", "", "s", "", "µs/deliv", "s", "s", "s", "MiB", "MiB", ""
        );
        println!("{}", "-".repeat(7 + 6 + 9 + 10 + 10 + 10 + 8 + 11 + 9 + 9 + 10 + 10));
        for r in self.fanout {
            let per_socket = r.rss_open_kib.saturating_sub(self.rss_idle_kib) as f64 / r.open.max(1) as f64;
            println!(
                "{:>7} {:>6.1} {:>9.1} {:>10.2} {:>10.1} {:>10.1} {:>8.1} {:>11.1} {:>9.0} {:>9.0} {:>10.0}",
                r.open,
                r.wall_secs,
                r.node_cpu,
                r.node_cpu / r.wall_secs,
                if r.deliveries > 0 { r.node_cpu * 1e6 / r.deliveries as f64 } else { 0.0 },
                r.bench_cpu,
                r.irq_cpu,
                r.other_cpu,
                mib(r.rss_open_kib),
                mib(r.rss_peak_kib),
                per_socket
            );
        }
        println!();
        for r in self.fanout {
            println!(
                "  {} sockets: connected in {:.1} s ({} failed), quiet after {:.1} s{}; issuer lag max {:.1} ms; {} \
                 deliveries; lagged frames told of {} skipped events",
                r.target,
                r.connect_secs,
                r.connect_failed,
                r.settle_secs,
                if r.settled { "" } else { " (NOT quiet: leftovers of the last run)" },
                r.issue_lag_max_ms,
                r.deliveries,
                r.lagged_missed
            );
            if r.failed > 0 {
                println!("    {} posts failed, first: {}", r.failed, r.first_failure.as_deref().unwrap_or(""));
            }
        }
        if self.closed_by_node > 0 {
            println!(
                "  {} sockets closed before the end, first: {}",
                self.closed_by_node,
                self.first_close.as_deref().unwrap_or_default()
            );
        }

        let reference = self
            .api
            .iter()
            .filter(|r| r.name == "GET /healthz" || r.name == "GET /metrics")
            .max_by(|a, b| rps(a).total_cmp(&rps(b)));
        let ref_rps = reference.map_or(0.0, rps);
        println!();
        println!(
            "API throughput: {} HTTP/1.1 connections in closed loop, {} s each, {} channels in the catalog; \
             reference = {}",
            args.connections,
            args.api_seconds,
            self.setup.channels.len(),
            reference.map_or("-", |r| r.name)
        );
        println!();
        println!(
            "{:<29} {:>8} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>9} {:>7} {:>11} {:>6}",
            "endpoint",
            "req/s",
            "p50",
            "p99",
            "max",
            "non-2xx",
            "node CPU",
            "node CPU",
            "bench CPU",
            "irq CPU",
            "others' CPU",
            "× ref"
        );
        println!(
            "{:<29} {:>8} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>9} {:>7} {:>11} {:>6}",
            "", "", "ms", "ms", "ms", "", "s", "µs/req", "s", "s", "s", ""
        );
        println!("{}", "-".repeat(29 + 8 + 7 * 4 + 8 + 8 + 9 + 7 + 11 + 6 + 11));
        for r in self.api {
            let per_req = if r.ok + r.not_ok > 0 { r.cpu * 1e6 / (r.ok + r.not_ok) as f64 } else { 0.0 };
            let times = if rps(r) > 0.0 { ref_rps / rps(r) } else { 0.0 };
            println!(
                "{:<29} {:>8.0} {:>7.2} {:>7.2} {:>7.1} {:>7} {:>8.1} {:>8.0} {:>9.1} {:>7.1} {:>11.1} {:>6.1}",
                r.name,
                rps(r),
                r.lat.p50,
                r.lat.p99,
                r.lat.max,
                r.not_ok,
                r.cpu,
                per_req,
                r.bench_cpu,
                r.irq_cpu,
                r.other_cpu,
                times
            );
        }
        println!();
        println!("× ref = reference req/s ÷ req/s: how many reference round trips one request costs.");
        for r in self.api.iter().filter(|r| r.not_ok > 0) {
            println!("  {}: {} non-2xx, first: {}", r.name, r.not_ok, r.first_not_ok.as_deref().unwrap_or(""));
        }
        println!("total time {:.1} s", self.started.elapsed().as_secs_f64());
    }
}

/// Successful requests per second.
fn rps(r: &ApiRow) -> f64 {
    if r.secs > 0.0 {
        r.ok as f64 / r.secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_of_each_length_form_and_split_across_reads() {
        let text = |payload: &[u8]| {
            let mut f = vec![0x81];
            match payload.len() {
                n if n < 126 => f.push(n as u8),
                n if n <= 0xffff => f.extend([126, (n >> 8) as u8, n as u8]),
                n => f.extend(std::iter::once(127).chain((n as u64).to_be_bytes())),
            }
            f.extend_from_slice(payload);
            f
        };
        for n in [0, 5, 125, 126, 300, 70_000] {
            let payload = vec![b'x'; n];
            let frame = text(&payload);
            let (opcode, at, len) = server_frame(&frame).expect("a whole frame");
            assert_eq!((opcode, &frame[at], len), (1, &payload[..], frame.len()), "{n} bytes");
            assert_eq!(server_frame(&frame[..frame.len() - 1]), None, "{n} bytes less one are not a frame");
        }
        let mut two = text(b"one");
        two.extend(text(b"two"));
        let (_, _, first) = server_frame(&two).unwrap();
        let (_, at, _) = server_frame(&two[first..]).unwrap();
        assert_eq!(&two[first..][at], b"two");
        assert_eq!(server_frame(&[0x81]), None);
    }

    #[test]
    fn a_pong_is_masked_and_carries_the_ping_payload() {
        let pong = pong_frame(b"hi");
        assert_eq!(&pong[..2], &[0x8a, 0x82]);
        let unmasked: Vec<u8> = pong[6..].iter().enumerate().map(|(i, b)| b ^ pong[2 + i % 4]).collect();
        assert_eq!(unmasked, b"hi");
    }

    #[test]
    fn bench_texts_and_lagged_notices_are_read() {
        let frame = r#"{"type":"message","message":{"id":"m1","text":"cb 3 17 123456","seq":9}}"#;
        assert_eq!(parse_bench_text(frame), Some((3, 17, 123456)));
        assert_eq!(parse_lagged(r#"{"type":"lagged","missed":4}"#), Some(4));
        assert_eq!(parse_bench_text(r#"{"type":"message","message":{"text":"hello"}}"#), None);
    }
}
