//! RTMP ingest end to end, in process, with real clients: a one-node catalog in a temp dir,
//! `serve_rtmp` and the origin routes on loopback, ffmpeg publishing, ffprobe and ffmpeg reading
//! the HLS output. Along the way: a wrong key, a second publisher, garbage bytes and a truncated
//! handshake must be refused without disturbing the live stream, and the session must end in the
//! catalog when the publisher stops.
//!
//! Needs ffmpeg and ffprobe; fails naming a missing one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bitriver_node::ingest_gate::CatalogGate;
use media::ingest::{serve_rtmp, IngestConfig, IngestMetrics};
use media::origin::{self, LiveRegistry, OriginConfig, OriginMetrics, RegistryConfig};
use raft::{stream_key_hash, Catalog, CatalogConfig, Channel, Command, LiveState, User};
use testkit::ffmpeg::{ffprobe, stream, TestPattern};
use testkit::http::get;
use testkit::process::{exit_within, signal, Signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;

const KEY: &str = "live_00112233445566778899aabbccddeeff00112233";
const WRONG_KEY: &str = "live_ffffffffffffffffffffffffffffffffffffffff";
const CHANNEL: &str = "chan-e2e";

/// Everything the code under test logs, for asserting on log lines.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("info,openraft=warn")
            .with_writer(move || LogSink(sink.clone()))
            .try_init();
        buf
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Harness {
    catalog: Catalog,
    metrics: IngestMetrics,
    rtmp: SocketAddr,
    http: SocketAddr,
    dir: tempfile::TempDir,
    stop: tokio_util::sync::CancellationToken,
    ingest: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(IngestConfig::default()).await
    }

    async fn start_with(config: IngestConfig) -> Self {
        logs();
        let dir = tempfile::tempdir().unwrap();
        let catalog_metrics = Arc::new(raft::metrics::CatalogMetrics::unregistered());
        let catalog = Catalog::start_with_metrics(CatalogConfig::local(&dir.path().join("catalog")), catalog_metrics)
            .await
            .unwrap();
        catalog.wait_ready(Duration::from_secs(10)).await.unwrap();
        let now = raft::now_millis();
        catalog
            .propose(Command::CreateUser(User {
                id: "u1".into(),
                display_name: "Streamer".into(),
                email: "streamer@example.com".into(),
                roles: vec!["creator".into()],
                password_hash: None,
                created_at: now,
            }))
            .await
            .unwrap();
        catalog
            .propose(Command::CreateChannel(Channel {
                id: CHANNEL.into(),
                owner_id: "u1".into(),
                title: "End to end".into(),
                category: None,
                tags: vec![],
                stream_key_hash: stream_key_hash(KEY),
                live_state: LiveState::Offline,
                current_session_id: None,
                moderators: vec![],
                created_at: now,
                updated_at: now,
            }))
            .await
            .unwrap();

        let registry = LiveRegistry::new(RegistryConfig::default(), OriginMetrics::unregistered());
        let metrics = IngestMetrics::unregistered();
        let rtmp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rtmp = rtmp_listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let gate = CatalogGate::new(catalog.clone(), registry.clone(), config.clone(), metrics.clone());
        let ingest = tokio::spawn(serve_rtmp(rtmp_listener, Arc::new(gate), config, metrics.clone(), stop.clone()));
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = http_listener.local_addr().unwrap();
        let app = origin::routes(registry, OriginConfig::default());
        let server = tokio::spawn(async move {
            axum::serve(http_listener, app).await.unwrap();
        });
        Harness { catalog, metrics, rtmp, http, dir, stop, ingest, server }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.ingest.abort();
        self.server.abort();
    }
}

/// ffmpeg publishing a `width`x`height` test pattern + a sine over RTMP; stderr goes to `log`.
fn publish(rtmp: SocketAddr, key: &str, (width, height): (u32, u32), seconds: u32, log: &Path) -> Child {
    TestPattern { seconds: Some(seconds), ..TestPattern::new(width, height) }.publish(
        "flv",
        &format!("rtmp://{rtmp}/live/{key}"),
        log,
    )
}

/// Connects, sends `bytes`, and expects the server to close the connection within `limit`.
async fn expect_closed(rtmp: SocketAddr, bytes: &[u8], limit: Duration) -> Duration {
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(rtmp).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    assert!(closed_within(&mut stream, limit).await, "server kept the connection open longer than {limit:?}");
    started.elapsed()
}

/// Reads (and drops) what the server sends until it closes the connection; false if it is still
/// open after `limit`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = vec![0u8; 8192];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_publish_is_served_as_hls_and_survives_intruders() {
    if !testkit::require_tools(&["ffmpeg", "ffprobe"]) {
        return;
    }
    let h = Harness::start().await;
    let media_playlist = h.url(&format!("/hls/{CHANNEL}/source/index.m3u8"));

    // 1. Publish; measure the time to the first playlist a plain HLS client can play.
    let started = Instant::now();
    let mut publisher = publish(h.rtmp, KEY, (640, 360), 60, &h.path("publisher.log"));
    let mut first_part = None;
    let first_playlist = loop {
        if let Some((200, body)) = get(&media_playlist).await {
            if body.contains("#EXT-X-PART:") {
                first_part.get_or_insert(started.elapsed());
            }
            if body.contains("#EXTINF") {
                break started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no playable playlist after 20 s\npublisher: {}\nlogs:\n{}",
            std::fs::read_to_string(h.path("publisher.log")).unwrap_or_default(),
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    println!(
        "latency: publish start -> first playlist with a part: {} ms, with a full segment: {} ms",
        first_part.unwrap_or(first_playlist).as_millis(),
        first_playlist.as_millis()
    );

    // 2. The catalog has the session, on this node.
    let (live_state, session) = h.catalog.read(|s| {
        let c = s.channel(CHANNEL).unwrap();
        (c.live_state, c.current_session_id.as_ref().and_then(|id| s.session(id)).cloned())
    });
    assert_eq!(live_state, LiveState::Live);
    let session = session.expect("current session");
    assert_eq!(session.ingest_node, Some(h.catalog.node_id()));
    assert_eq!(session.renditions, vec!["source".to_owned()]);

    // 3. ffprobe sees H.264 640x360 and AAC, through the multivariant playlist too.
    for url in [media_playlist.clone(), h.url(&format!("/hls/{CHANNEL}/master.m3u8"))] {
        let probe = ffprobe(&["-show_streams", &url]).await;
        let video = stream(&probe, "h264").unwrap_or_else(|| panic!("no h264 in {url}: {probe}"));
        assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(640), Some(360)), "{probe}");
        assert!(stream(&probe, "aac").is_some(), "no aac in {url}: {probe}");
    }

    // 4. Record 10 s with ffmpeg while intruders hit the RTMP port.
    let recording = h.path("out.mp4");
    let mut recorder = testkit::ffmpeg::record(&media_playlist, 10, &recording, &h.path("recorder.log"));

    // A wrong key: refused, logged with a key prefix only.
    let mut wrong = publish(h.rtmp, WRONG_KEY, (160, 120), 5, &h.path("wrong.log"));
    let status = exit_within(&mut wrong, Duration::from_secs(20), "wrong-key publisher").await;
    assert!(!status.success(), "a wrong key was accepted");
    // A second publisher on the live key: refused while the first goes on.
    let mut second = publish(h.rtmp, KEY, (160, 120), 5, &h.path("second.log"));
    let status = exit_within(&mut second, Duration::from_secs(20), "second publisher").await;
    assert!(!status.success(), "a second publisher was accepted");
    // Garbage: closed at once.
    let took = expect_closed(h.rtmp, b"GET / HTTP/1.1\r\nHost: bitriver\r\n\r\n", Duration::from_secs(3)).await;
    println!("garbage connection closed after {} ms", took.as_millis());
    // A truncated handshake (C0 and part of C1): closed at the handshake timeout.
    let mut truncated = vec![3u8];
    truncated.extend(std::iter::repeat_n(0x5a, 700));
    let took = expect_closed(h.rtmp, &truncated, Duration::from_secs(8)).await;
    println!("truncated handshake closed after {} ms", took.as_millis());

    let status = exit_within(&mut recorder, Duration::from_secs(45), "recorder").await;
    let recorder_log = std::fs::read_to_string(h.path("recorder.log")).unwrap_or_default();
    assert!(status.success(), "recording failed: {recorder_log}");
    assert!(recorder_log.trim().is_empty(), "recorder reported errors:\n{recorder_log}");
    let probe = ffprobe(&["-show_format", "-show_streams", recording.to_str().unwrap()]).await;
    let duration: f64 = probe["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    println!("recorded {duration:.2} s");
    assert!((9.0..=11.0).contains(&duration), "recorded {duration} s, expected ~10: {probe}");
    assert!(stream(&probe, "h264").is_some() && stream(&probe, "aac").is_some(), "{probe}");

    // The first publisher was never disturbed.
    assert!(publisher.try_wait().unwrap().is_none(), "the first publisher stopped");
    let logs = log_text();
    assert!(logs.contains("unknown stream key"), "no log line for the wrong key:\n{logs}");
    assert!(logs.contains("live_fff…"), "the wrong-key line lacks the key prefix:\n{logs}");
    assert!(!logs.contains(WRONG_KEY) && !logs.contains(KEY), "a full stream key was logged:\n{logs}");
    assert!(logs.contains("already live"), "no log line for the second publisher:\n{logs}");
    assert!(logs.contains("not an RTMP client"), "no log line for the garbage:\n{logs}");
    assert!(logs.contains("handshake not completed"), "no log line for the truncated handshake:\n{logs}");
    let rejected = |reason: &str| h.metrics.rejected.with_label_values(&[reason]).get();
    assert_eq!((rejected("bad_key"), rejected("already_live")), (1, 1));
    assert!(rejected("protocol") >= 1 && rejected("timeout") >= 1);
    assert!(h.metrics.frames.with_label_values(&[CHANNEL, "video"]).get() > 300);
    assert!(h.metrics.frames.with_label_values(&[CHANNEL, "audio"]).get() > 300);
    assert!(h.metrics.bytes.with_label_values(&[CHANNEL]).get() > 100_000);
    assert_eq!(h.metrics.active_publishers.get(), 1);

    // 5. The publisher stops: the session ends in the catalog and the playlist ends.
    signal(publisher.id().unwrap(), Signal::INT);
    exit_within(&mut publisher, Duration::from_secs(10), "publisher").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ended = h.catalog.read(|s| {
            let c = s.channel(CHANNEL).unwrap();
            let session = s.session(&session.id).unwrap();
            c.live_state == LiveState::Offline && c.current_session_id.is_none() && session.ended_at.is_some()
        });
        if ended {
            break;
        }
        assert!(Instant::now() < deadline, "session not ended after the publisher stopped\n{}", log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, body) = get(&media_playlist).await.expect("playlist after the end");
    assert!(body.contains("#EXT-X-ENDLIST"), "{body}");
    assert_eq!(h.metrics.active_publishers.get(), 0);

    if std::env::var_os("BITRIVER_TEST_SHOW_LOGS").is_some() {
        println!("{}", log_text());
    }

    // 6. Shutdown stops the listener.
    let mut h = h;
    h.stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), &mut h.ingest).await.expect("ingest stopped").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_reads_take_several_frames_per_read_and_lose_none() {
    if !testkit::require_tools(&["ffmpeg", "ffprobe"]) {
        return;
    }
    // On connection threads of their own, as the node runs them.
    let config =
        IngestConfig { read_merge: Duration::from_millis(100), connection_threads: 2, ..IngestConfig::default() };
    let h = Harness::start_with(config).await;
    // ffmpeg -re writes each frame when it is due: about 30 video and 47 audio frames a second.
    let mut publisher = publish(h.rtmp, KEY, (320, 180), 4, &h.path("publisher.log"));
    let on_threads = || ["rtmp-0", "rtmp-1"].map(|t| h.metrics.thread_connections.with_label_values(&[t]).get());
    let deadline = Instant::now() + Duration::from_secs(10);
    while on_threads().iter().sum::<i64>() != 1 {
        assert!(Instant::now() < deadline, "the publisher's connection never ran on a connection thread");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = exit_within(&mut publisher, Duration::from_secs(30), "publisher").await;
    let publisher_log = std::fs::read_to_string(h.path("publisher.log")).unwrap_or_default();
    assert!(status.success(), "publisher failed: {publisher_log}");

    // The publish ended (its last frames read at the last tick): every frame was counted and
    // packaged, and the ended playlist holds the whole four seconds.
    let media_playlist = h.url(&format!("/hls/{CHANNEL}/source/index.m3u8"));
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        if let Some((200, body)) = get(&media_playlist).await {
            if body.contains("#EXT-X-ENDLIST") {
                break body;
            }
        }
        assert!(Instant::now() < deadline, "the playlist never ended\n{}", log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let video = h.metrics.frames.with_label_values(&[CHANNEL, "video"]).get();
    let audio = h.metrics.frames.with_label_values(&[CHANNEL, "audio"]).get();
    let reads = h.metrics.reads.with_label_values(&[CHANNEL]).get();
    println!("{reads} reads for {video} video and {audio} audio frames");
    assert_eq!(video, 4 * 30, "video frames lost");
    assert!(audio >= 160, "audio frames lost: {audio}");
    // Held 100 ms between reads, each read takes several frames (one each without merging).
    assert!(reads > 0 && reads * 4 <= video + audio, "{reads} reads for {} frames", video + audio);

    let seconds: f64 = body
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|d| d.split(',').next()?.parse::<f64>().ok())
        .sum();
    assert!((3.9..=4.1).contains(&seconds), "{seconds} s packaged of 4:\n{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while on_threads() != [0, 0] {
        assert!(Instant::now() < deadline, "the connection never left its thread: {:?}", on_threads());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_connects_but_never_publishes_is_closed_at_the_idle_timeout_not_the_handshake_one() {
    let config = IngestConfig {
        handshake_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(1500),
        ..IngestConfig::default()
    };
    let h = Harness::start_with(config).await;
    let mut stream = rtmp_handshake(h.rtmp).await;
    stream.write_all(&rtmp_connect()).await.unwrap();
    let connected = Instant::now();
    // Past the handshake timeout (the connection's first deadline), the connection is still open:
    // `connect` moved its deadline, and the one timer it keeps followed.
    let mut buf = vec![0u8; 8192];
    let mut answered = 0;
    let still_open = connected + Duration::from_millis(900);
    while let Ok(read) = tokio::time::timeout_at(still_open.into(), stream.read(&mut buf)).await {
        let n = read.expect("the connection stays up past the handshake timeout");
        assert!(n > 0, "closed {} ms after connect, before the idle timeout", connected.elapsed().as_millis());
        answered += n;
    }
    assert!(answered > 0, "the server answered connect");
    assert_eq!(h.metrics.rejected.with_label_values(&["timeout"]).get(), 0);
    // ... and closed at the idle timeout, since nothing is published.
    assert!(closed_within(&mut stream, Duration::from_secs(10)).await, "the idle connection was never closed");
    assert_eq!(h.metrics.rejected.with_label_values(&["timeout"]).get(), 1);
    assert!(log_text().contains("did not publish"), "no log line for the idle client");
}

/// An RTMP connection past the handshake, as a raw client: C0+C1 out, S0+S1+S2 in, C2 out.
async fn rtmp_handshake(rtmp: SocketAddr) -> tokio::net::TcpStream {
    const SIZE: usize = 1536;
    let mut stream = tokio::net::TcpStream::connect(rtmp).await.unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend((0..SIZE).map(|i| (i * 7 % 256) as u8));
    stream.write_all(&c0c1).await.unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 2 * SIZE];
    stream.read_exact(&mut s0s1s2).await.unwrap();
    stream.write_all(&s0s1s2[1..1 + SIZE]).await.unwrap();
    stream
}

/// The `connect` command for application `live`, in chunks of the default size.
fn rtmp_connect() -> Vec<u8> {
    use media::rtmp::amf0::{encode_all, Amf0Value};
    use media::rtmp::chunk::{message_type, ChunkEncoder, RtmpMessage};
    let command = encode_all(&[
        Amf0Value::from("connect"),
        Amf0Value::Number(1.0),
        Amf0Value::Object(vec![("app".into(), Amf0Value::from("live"))]),
    ]);
    let msg = RtmpMessage {
        csid: 3,
        timestamp: 0,
        type_id: message_type::COMMAND_AMF0,
        stream_id: 0,
        payload: command.into(),
    };
    let mut out = Vec::new();
    ChunkEncoder::new().encode(&msg, &mut out).unwrap();
    out
}

/// A fmt 0 chunk header on `csid` declaring a message of `len` bytes of `type_id`.
fn chunk_header(csid: u8, len: u32, type_id: u8) -> Vec<u8> {
    let l = len.to_be_bytes();
    vec![csid, 0, 0, 0, l[1], l[2], l[3], type_id, 1, 0, 0, 0]
}

/// Peak resident memory of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_messages_before_the_stream_key_is_accepted_are_refused_and_ingest_stays_up() {
    use media::rtmp::chunk::{message_type, ChunkDecoder, ChunkEncoder, RtmpMessage};
    const MESSAGE: u32 = 0xff_ffff; // the largest length a chunk header can declare
    let h = Harness::start().await;
    let rss_before = peak_rss_kib();

    // Eight strangers at once, each trying to make the node hold 16 MiB (or, spread over chunk
    // streams, 2 MiB) before showing a stream key.
    let mut flooders = Vec::new();
    for i in 0..8usize {
        let rtmp = h.rtmp;
        flooders.push(tokio::spawn(async move {
            let mut stream = rtmp_handshake(rtmp).await;
            let mut wire = Vec::new();
            // Chunks of 128 bytes after the first: fmt 3 basic header (csid 3) + payload.
            let fmt3_chunks: Vec<u8> = (0..512).flat_map(|_| std::iter::once(0xc3).chain([0u8; 128])).collect();
            let mut body = Vec::new();
            match i % 4 {
                // A huge command after connect.
                0 => {
                    wire.extend(rtmp_connect());
                    wire.extend(chunk_header(3, MESSAGE, message_type::COMMAND_AMF0));
                    wire.extend([0u8; 128]);
                    body = fmt3_chunks;
                }
                // A huge video message before connect.
                1 => {
                    wire.extend(chunk_header(3, MESSAGE, message_type::VIDEO));
                    wire.extend([0u8; 128]);
                    body = fmt3_chunks;
                }
                // A 16 MiB chunk size, then one chunk of 16 MiB.
                2 => {
                    wire.extend(rtmp_connect());
                    ChunkEncoder::new().encode(&RtmpMessage::set_chunk_size(1 << 24), &mut wire).unwrap();
                    wire.extend(chunk_header(4, MESSAGE, message_type::VIDEO));
                    body = vec![0u8; 64 * 1024];
                }
                // Messages within the size limit on every chunk stream, each held half-sent.
                _ => {
                    wire.extend(rtmp_connect());
                    ChunkEncoder::new().encode(&RtmpMessage::set_chunk_size(32 * 1024), &mut wire).unwrap();
                    for csid in 4..64u8 {
                        wire.extend(chunk_header(csid, 64 * 1024, message_type::DATA_AMF0));
                        wire.extend(std::iter::repeat_n(0u8, 32 * 1024));
                    }
                }
            }
            let mut sent = 0usize;
            if stream.write_all(&wire).await.is_ok() {
                sent += wire.len();
                while !body.is_empty() && sent < MESSAGE as usize {
                    if stream.write_all(&body).await.is_err() {
                        break;
                    }
                    sent += body.len();
                }
            }
            // The node closes the connection (it may have done so while we were still writing).
            let mut buf = vec![0u8; 64 * 1024];
            let closed = tokio::time::timeout(Duration::from_secs(60), async {
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
            assert!(closed.is_ok(), "flooder {i} still connected after 60 s");
            sent
        }));
    }
    for flooder in flooders {
        flooder.await.unwrap();
    }
    let logs = log_text();
    // Refused for their size, not let through until some timeout.
    assert_eq!(logs.matches("exceeds the limit of 65536").count(), 6, "{logs}");
    assert_eq!(logs.matches("more than 262144 bytes in partly received messages").count(), 2, "{logs}");
    let rejected = |reason: &str| h.metrics.rejected.with_label_values(&[reason]).get();
    assert_eq!((rejected("protocol"), rejected("timeout")), (8, 0));
    let grown_mib = peak_rss_kib().saturating_sub(rss_before) / 1024;
    println!("peak memory grew by {grown_mib} MiB during the flood");
    assert!(grown_mib < 48, "the flood made the node hold {grown_mib} MiB");

    // The ingest is still up: a new client gets through the handshake and `connect`.
    assert!(!h.ingest.is_finished());
    let mut stream = rtmp_handshake(h.rtmp).await;
    stream.write_all(&rtmp_connect()).await.unwrap();
    let mut decoder = ChunkDecoder::new(1 << 20, 0);
    let mut buf = vec![0u8; 8192];
    let result = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before answering connect");
            decoder.handle_input(&buf[..n]);
            while let Some(msg) = decoder.poll_message().unwrap() {
                if msg.type_id == message_type::COMMAND_AMF0 {
                    return media::rtmp::amf0::decode_all(&msg.payload).unwrap();
                }
            }
        }
    })
    .await
    .expect("no answer to connect");
    assert_eq!(result[0], media::rtmp::amf0::Amf0Value::from("_result"), "{result:?}");
}
