//! `bitriver-load chat`: N WebSocket chat clients on one channel and one poster at a fixed rate.
//!
//! Sockets join evenly over `--ramp`; posting starts after the ramp and runs open loop for
//! `--duration` (one post per tick, whether or not earlier ones were answered) through
//! `POST /api/channels/{id}/chat`, the URL derived from the socket's. Each text carries a run id,
//! a sequence number and its send time on this process's monotonic clock, so a delivery's latency
//! (post → commit → fan-out → socket) is measured on one clock. After the last post the run
//! drains for up to `--drain` seconds.
//!
//! Posting needs an author: `--token` (bearer tokens, one per user), or `--user-id` (the
//! development-mode admin posts as that user from loopback), or, with neither, accounts that
//! this mode creates through the development-mode API. The node allows each user 5 messages per
//! 10 s, so posts rotate over the authors: `--rate` needs at least `2 × rate` of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures::StreamExt as _;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use url::Url;

use super::stats::{table, Counters, Percentiles};
use super::{finish, sample_until, Common};

/// Sockets connecting at once.
const CONNECTING_AT_ONCE: usize = 64;
/// Sequence numbers tracked per socket, in 64-bit words (4 M posts: 11 hours at 100/s).
const MAX_SEQ_WORDS: usize = 1 << 16;
/// Marker at the start of every text this mode posts.
const MARKER: &str = "bitriver-load ";

/// Flags of `chat`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ChatArgs {
    /// A channel's chat socket: `ws://HOST/api/channels/ID/chat/ws`.
    #[arg(long, env = "BITRIVER_LOAD_URL")]
    pub(crate) url: String,
    /// WebSocket clients.
    #[arg(long, env = "BITRIVER_LOAD_SOCKETS", default_value_t = 100)]
    pub(crate) sockets: usize,
    /// Messages posted per second (0: only listen).
    #[arg(long, env = "BITRIVER_LOAD_RATE", default_value_t = 5.0)]
    pub(crate) rate: f64,
    /// Seconds over which the sockets connect, before posting starts.
    #[arg(long, env = "BITRIVER_LOAD_RAMP", default_value_t = 2.0)]
    pub(crate) ramp: f64,
    /// Bearer tokens to post with, in turn.
    #[arg(long, env = "BITRIVER_LOAD_TOKEN", value_delimiter = ',')]
    pub(crate) token: Vec<String>,
    /// User ids the development-mode admin posts as, in turn (loopback, no token).
    #[arg(long, env = "BITRIVER_LOAD_USER_ID", value_delimiter = ',')]
    pub(crate) user_id: Vec<String>,
    /// Seconds to wait for deliveries after the last post.
    #[arg(long, env = "BITRIVER_LOAD_DRAIN", default_value_t = 2.0)]
    pub(crate) drain: f64,
    #[command(flatten)]
    pub(crate) common: Common,
}

#[derive(Debug, Default)]
struct Shared {
    duplicates: AtomicU64,
    closes: AtomicU64,
    first_close: Mutex<Option<String>>,
}

pub(crate) async fn run(args: ChatArgs) -> anyhow::Result<()> {
    args.common.validate()?;
    anyhow::ensure!(args.sockets > 0, "--sockets must be at least 1");
    anyhow::ensure!(args.rate >= 0.0 && args.rate.is_finite(), "--rate must be a number of messages per second");
    let ws = Url::parse(&args.url).map_err(|e| anyhow::anyhow!("--url {}: {e}", args.url))?;
    let post_url = post_url(&ws)?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let authors = if args.rate == 0.0 {
        Vec::new()
    } else if !args.token.is_empty() {
        args.token.iter().map(|t| Author::Token(t.clone())).collect()
    } else if !args.user_id.is_empty() {
        args.user_id.iter().map(|u| Author::User(u.clone())).collect()
    } else {
        create_users(&http, &ws, (args.rate * 2.5).ceil() as usize + 1).await?
    };
    if !authors.is_empty() && (authors.len() as f64) < args.rate * 2.0 {
        eprintln!(
            "note: {} authors for {} posts/s: the node allows a user 5 messages per 10 s, expect refusals",
            authors.len(),
            args.rate
        );
    }

    let counters = Arc::new(Counters::default());
    let shared = Arc::new(Shared::default());
    let epoch = Instant::now();
    let started_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let run_id: u32 = rand::random();
    let ramp = Duration::from_secs_f64(args.ramp.max(0.0));
    let post_from = epoch + ramp;
    let stop_at = post_from + args.common.duration();
    let close_at = stop_at + Duration::from_secs_f64(args.drain.max(0.0));

    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECTING_AT_ONCE));
    let mut sockets = Vec::with_capacity(args.sockets);
    for i in 0..args.sockets {
        let start = epoch + ramp.mul_f64(i as f64 / args.sockets as f64);
        let (ws, counters, shared, gate) = (ws.clone(), counters.clone(), shared.clone(), gate.clone());
        sockets.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let connected = {
                let _permit = gate.acquire().await;
                connect(&ws).await
            };
            match connected {
                Ok(socket) => {
                    Counters::add(&counters.active, 1);
                    let seen = read(socket, run_id, epoch, close_at, &counters, &shared).await;
                    Counters::dec(&counters.active);
                    Some(seen)
                }
                Err(e) => {
                    Counters::add(&counters.errors, 1);
                    note(&shared, format!("connect: {e:#}"));
                    None
                }
            }
        }));
    }

    let poster = {
        let (http, counters) = (http.clone(), counters.clone());
        let rate = args.rate;
        tokio::spawn(async move {
            post_loop(http, post_url, authors, rate, run_id, epoch, post_from, stop_at, counters).await
        })
    };
    let metrics_url = args.common.metrics_url(&ws);
    // Sampled through the drain, so late deliveries count.
    let sampler = sample_until(&counters, epoch, close_at, metrics_url.as_deref(), "sockets", args.common.quiet).await;
    let posts = poster.await?;
    let (mut connected, mut seen) = (0, 0);
    for s in sockets {
        if let Some(n) = s.await? {
            connected += 1;
            seen += n;
        }
    }
    let expected = posts.ok * connected as u64;
    let latency = Percentiles::of(&mut sampler.all_latency.clone());
    let duplicates = shared.duplicates.load(Ordering::Relaxed);
    let closes = shared.closes.load(Ordering::Relaxed);
    let first_close = shared.first_close.lock().ok().and_then(|f| f.clone());
    let ms = |f: fn(&Percentiles) -> f64| latency.map_or("-".to_owned(), |p| format!("{:.1}", f(&p)));
    let rows = vec![
        vec!["sockets connected / asked".into(), format!("{connected} / {}", args.sockets)],
        vec!["posts sent / ok / failed".into(), format!("{} / {} / {}", posts.sent, posts.ok, posts.failed)],
        vec!["deliveries (expected)".into(), format!("{seen} ({expected})")],
        vec!["missed, duplicates".into(), format!("{}, {duplicates}", expected.saturating_sub(seen))],
        vec![
            "delivery p50/p90/p99/max ms".into(),
            format!("{}/{}/{}/{}", ms(|p| p.p50), ms(|p| p.p90), ms(|p| p.p99), ms(|p| p.max)),
        ],
        vec!["sockets closed early".into(), closes.to_string()],
    ];
    let mut printed = table(&["chat", "value"], &rows);
    if let Some(e) = &posts.first_failure {
        printed += &format!("first failed post: {e}\n");
    }
    if let Some(e) = &first_close {
        printed += &format!("first socket problem: {e}\n");
    }
    let summary = json!({
        "sockets": args.sockets,
        "connected": connected,
        "posts_sent": posts.sent,
        "posts_ok": posts.ok,
        "posts_failed": posts.failed,
        "first_failed_post": posts.first_failure,
        "deliveries": seen,
        "expected_deliveries": expected,
        "missed": expected.saturating_sub(seen),
        "duplicates": duplicates,
        "delivery_ms": latency,
        "sockets_closed": closes,
        "first_socket_problem": first_close,
    });
    finish(&args.common, "chat", &args.url, started_unix_ms, epoch, sampler, summary, printed)
}

fn note(shared: &Shared, why: String) {
    if let Ok(mut first) = shared.first_close.lock() {
        first.get_or_insert(why);
    }
}

/// `http://HOST/api/channels/ID/chat` of `ws://HOST/api/channels/ID/chat/ws`.
fn post_url(ws: &Url) -> anyhow::Result<Url> {
    let mut url = ws.clone();
    let scheme = match ws.scheme() {
        "ws" => "http",
        "wss" => "https",
        other => anyhow::bail!("--url must be ws:// or wss://, not {other}://"),
    };
    url.set_scheme(scheme).map_err(|_| anyhow::anyhow!("cannot make an HTTP URL of {ws}"))?;
    let path = ws.path().strip_suffix("/ws").context("--url must end in /chat/ws")?.to_owned();
    url.set_path(&path);
    url.set_query(None);
    Ok(url)
}

/// Who a post is from.
#[derive(Debug, Clone)]
enum Author {
    Token(String),
    User(String),
}

/// Creates `n` viewer accounts as the development-mode admin.
async fn create_users(http: &reqwest::Client, ws: &Url, n: usize) -> anyhow::Result<Vec<Author>> {
    let mut base = post_url(ws)?;
    base.set_path("/api/users");
    let tag: u32 = rand::random();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let body = json!({"displayName": format!("Load {i}"), "email": format!("load-{tag:08x}-{i}@load.example")});
        let resp = http.post(base.clone()).json(&body).send().await.with_context(|| format!("POST {base}"))?;
        let status = resp.status();
        let answer: serde_json::Value = resp.json().await.unwrap_or_default();
        anyhow::ensure!(
            status == reqwest::StatusCode::CREATED,
            "creating chat authors failed ({status} {answer}); outside development mode pass --token or --user-id"
        );
        let id = answer["id"].as_str().context("no id in the created user")?;
        out.push(Author::User(id.to_owned()));
    }
    Ok(out)
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &Url) -> anyhow::Result<Socket> {
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024).write_buffer_size(0);
    let (socket, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true),
    )
    .await
    .context("no answer within 10 s")??;
    Ok(socket)
}

/// Reads frames until `close_at`, timing every message of this run; returns how many distinct
/// messages of this run arrived.
async fn read(
    mut socket: Socket,
    run_id: u32,
    epoch: Instant,
    close_at: Instant,
    c: &Counters,
    shared: &Shared,
) -> u64 {
    // One bit per sequence number: bounded by the posts of the run, not by deliveries.
    let mut seen: Vec<u64> = Vec::new();
    let mut distinct = 0;
    loop {
        let frame = tokio::select! {
            f = socket.next() => f,
            _ = tokio::time::sleep_until(close_at.into()) => {
                let _ = socket.close(None).await;
                return distinct;
            }
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(close))) => {
                shared.closes.fetch_add(1, Ordering::Relaxed);
                Counters::add(&c.errors, 1);
                note(shared, format!("closed by the server: {close:?}"));
                return distinct;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                shared.closes.fetch_add(1, Ordering::Relaxed);
                Counters::add(&c.errors, 1);
                note(shared, format!("socket error: {e}"));
                return distinct;
            }
            None => {
                shared.closes.fetch_add(1, Ordering::Relaxed);
                note(shared, "socket ended".to_owned());
                return distinct;
            }
        };
        let now_us = epoch.elapsed().as_micros() as u64;
        Counters::add(&c.bytes, text.len() as u64);
        if let Some((run, seq, sent_us)) = parse_text(text.as_str()) {
            if run != run_id {
                continue;
            }
            Counters::add(&c.requests, 1);
            let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
            if word >= MAX_SEQ_WORDS {
                continue;
            }
            if seen.len() <= word {
                seen.resize(word + 1, 0);
            }
            if seen[word] & bit == 0 {
                seen[word] |= bit;
                distinct += 1;
                c.latency(now_us.saturating_sub(sent_us) as f64 / 1000.0);
            } else {
                shared.duplicates.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// `(run, seq, sent µs)` of a `message` frame this mode posted (history frames are skipped: they
/// repeat old messages). A substring scan, not a JSON parse: every socket reads every frame.
fn parse_text(frame: &str) -> Option<(u32, u64, u64)> {
    if !frame.starts_with("{\"type\":\"message\"") {
        return None;
    }
    let start = frame.find(MARKER)? + MARKER.len();
    let rest = &frame[start..];
    let mut parts = rest[..rest.find('"')?].split(' ');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[derive(Debug, Default)]
struct Posts {
    sent: u64,
    ok: u64,
    failed: u64,
    first_failure: Option<String>,
}

/// Posts `rate` messages a second from `from` to `until`, open loop.
#[allow(clippy::too_many_arguments)]
async fn post_loop(
    http: reqwest::Client,
    url: Url,
    authors: Vec<Author>,
    rate: f64,
    run_id: u32,
    epoch: Instant,
    from: Instant,
    until: Instant,
    c: Arc<Counters>,
) -> Posts {
    let mut posts = Posts::default();
    if rate <= 0.0 || authors.is_empty() {
        return posts;
    }
    let every = Duration::from_secs_f64(1.0 / rate);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut at = from;
    let mut seq = 0u64;
    while at < until {
        tokio::time::sleep_until(at.into()).await;
        let sent_us = epoch.elapsed().as_micros() as u64;
        let author = authors[seq as usize % authors.len()].clone();
        let text = format!("{MARKER}{run_id} {seq} {sent_us}");
        let mut request = http.post(url.clone());
        let body = match &author {
            Author::Token(t) => {
                request = request.bearer_auth(t);
                json!({ "text": text })
            }
            Author::User(u) => json!({ "text": text, "userId": u }),
        };
        let request = request.json(&body);
        in_flight.spawn(async move {
            match request.send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => {
                    let status = r.status();
                    Err(format!("{status} {}", r.text().await.unwrap_or_default()))
                }
                Err(e) => Err(e.to_string()),
            }
        });
        posts.sent += 1;
        seq += 1;
        at += every;
    }
    while let Some(done) = in_flight.join_next().await {
        match done.unwrap_or_else(|e| Err(e.to_string())) {
            Ok(()) => posts.ok += 1,
            Err(e) => {
                posts.failed += 1;
                Counters::add(&c.errors, 1);
                posts.first_failure.get_or_insert(e);
            }
        }
    }
    posts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_its_own_messages_only() {
        let frame = r#"{"type":"message","message":{"id":"m1","text":"bitriver-load 7 42 123456","userId":"u"}}"#;
        assert_eq!(parse_text(frame), Some((7, 42, 123_456)));
        let history = r#"{"type":"history","messages":[{"text":"bitriver-load 7 42 123456"}]}"#;
        assert_eq!(parse_text(history), None);
        assert_eq!(parse_text(r#"{"type":"message","message":{"text":"hello"}}"#), None);
    }

    #[test]
    fn posts_go_to_the_channels_chat_endpoint() {
        let ws = Url::parse("ws://127.0.0.1:8080/api/channels/abc/chat/ws?history=0").unwrap();
        assert_eq!(post_url(&ws).unwrap().as_str(), "http://127.0.0.1:8080/api/channels/abc/chat");
        let wss = Url::parse("wss://live.example/api/channels/abc/chat/ws").unwrap();
        assert_eq!(post_url(&wss).unwrap().as_str(), "https://live.example/api/channels/abc/chat");
        assert!(post_url(&Url::parse("http://x/api/channels/abc/chat/ws").unwrap()).is_err());
    }
}
