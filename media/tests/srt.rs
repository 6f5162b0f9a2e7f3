//! SRT ingest against a real SRT caller: ffmpeg 5.1 (libsrt) publishes MPEG-TS to `serve_srt` on
//! loopback; the test gate stands in for the catalog (one known key) and the test sink opens the
//! stream in the origin's `LiveRegistry`, served by the origin routes, which ffprobe reads.
//! Needs ffmpeg and ffprobe; fails naming a missing one.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use media::hls::{Pushed, Rendition, RenditionConfig};
use media::ingest::srt::{serve_srt, SrtConfig};
use media::ingest::FrameCounts;
use media::ingest::{FeedOutput, IngestMetrics, Protocol, PublishGate, PublishSink, Refusal, StreamRefused};
use media::origin::{self, LiveHandle, LiveRegistry, OriginConfig, OriginMetrics, RegistryConfig};
use testkit::ffmpeg::TestPattern;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

const KEY: &str = "live_0123456789abcdef";

#[derive(Debug, Default)]
struct Seen {
    /// Keys refused by the gate.
    refused: Vec<String>,
    tracks: Option<String>,
    counts: FrameCounts,
    parts: u64,
    samples: u64,
    ended: Option<&'static str>,
}

struct Gate {
    seen: Arc<Mutex<Seen>>,
    registry: LiveRegistry,
    metrics: IngestMetrics,
}

struct Sink {
    seen: Arc<Mutex<Seen>>,
    registry: LiveRegistry,
    metrics: IngestMetrics,
    live: Option<LiveHandle>,
}

impl PublishGate for Gate {
    type Publish = Sink;

    async fn start_publish(&self, _peer: SocketAddr, protocol: Protocol, stream_key: &str) -> Result<Sink, Refusal> {
        assert_eq!(protocol, Protocol::Srt);
        if stream_key != KEY {
            self.seen.lock().unwrap().refused.push(stream_key.to_owned());
            return Err(Refusal::UnknownKey);
        }
        Ok(Sink { seen: self.seen.clone(), registry: self.registry.clone(), metrics: self.metrics.clone(), live: None })
    }
}

impl PublishSink for Sink {
    fn channel_id(&self) -> &str {
        "ch1"
    }

    fn session_id(&self) -> &str {
        "session1"
    }

    fn handle_output(&mut self, output: FeedOutput) -> Result<(), StreamRefused> {
        let now = 1_700_000_000_000;
        let mut seen = self.seen.lock().unwrap();
        let pushed = match (output, &self.live) {
            (FeedOutput::Tracks { video, audio }, _) => {
                seen.tracks = Some(format!(
                    "{} {}x{} {}",
                    video.as_ref().map_or("-", |v| v.codec_string.as_str()),
                    video.as_ref().map_or(0, |v| v.width),
                    video.as_ref().map_or(0, |v| v.height),
                    audio.as_ref().map_or("-", |a| a.codec_string.as_str()),
                ));
                let config = RenditionConfig { name: "source".into(), ..RenditionConfig::default() };
                let rendition = Rendition::new(config, video, audio).map_err(|_| StreamRefused)?;
                self.live = Some(self.registry.open("ch1", "session1", vec![rendition]).map_err(|_| StreamRefused)?);
                return Ok(());
            }
            (FeedOutput::Video(sample), Some(live)) => live.push_video(0, sample, now),
            (FeedOutput::Audio(sample), Some(live)) => live.push_audio(0, sample, now),
            (_, None) => return Err(StreamRefused),
        };
        seen.samples += 1;
        if let Ok(Pushed::Published(_)) = pushed {
            seen.parts += 1;
        }
        Ok(())
    }

    async fn end(self, why: &'static str) {
        if let Some(live) = self.live {
            live.finish();
        }
        // The driver counted every frame in the ingest metrics before ending the sink.
        let frames = |kind: &str| self.metrics.frames.with_label_values(&["ch1", kind]).get();
        let counts = FrameCounts {
            video: frames("video"),
            audio: frames("audio"),
            dropped: self.metrics.dropped_frames.with_label_values(&["ch1"]).get(),
        };
        let mut seen = self.seen.lock().unwrap();
        seen.counts = counts;
        seen.ended = Some(why);
    }
}

fn have_ffmpeg() -> bool {
    testkit::require_tools(&["ffmpeg", "ffprobe"])
}

struct Harness {
    /// SRT (UDP) and origin HTTP addresses.
    srt: SocketAddr,
    http: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Starts `serve_srt` and the origin routes on free loopback ports.
async fn start() -> Harness {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let srt = socket.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = CancellationToken::new();
    let registry = LiveRegistry::new(RegistryConfig::default(), OriginMetrics::unregistered());
    let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = http_listener.local_addr().unwrap();
    let app = origin::routes(registry.clone(), OriginConfig::default());
    tokio::spawn(async move {
        let _ = axum::serve(http_listener, app).await;
    });
    let metrics = IngestMetrics::unregistered();
    let gate = Arc::new(Gate { seen: seen.clone(), registry, metrics: metrics.clone() });
    let shutdown = stop.clone();
    let task = tokio::spawn(async move {
        serve_srt(socket, gate, SrtConfig::default(), metrics, shutdown).await.unwrap();
    });
    Harness { srt, http, seen, stop, task }
}

/// ffmpeg publishes `seconds` of 320x240 H.264 + AAC with `stream_id`; returns whether it
/// succeeded.
async fn publish(addr: SocketAddr, stream_id: &str, seconds: u32) -> bool {
    // The stream id goes into the URL verbatim: ffmpeg 5.1 does not URL-decode it.
    let url = format!("srt://{addr}?latency=200000&pkt_size=1316&streamid={stream_id}");
    let pattern = TestPattern { seconds: Some(seconds), realtime: true, ..TestPattern::new(320, 240) };
    let child = pattern.tokio_command("mpegts", &url).stdout(Stdio::null()).status();
    matches!(tokio::time::timeout(Duration::from_secs(u64::from(seconds) + 20), child).await, Ok(Ok(s)) if s.success())
}

async fn wait_until(seen: &Mutex<Seen>, done: impl Fn(&Seen) -> bool) {
    for _ in 0..100 {
        if done(&seen.lock().unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_srt_and_ffprobe_reads_the_playlist() {
    if !have_ffmpeg() {
        return;
    }
    let Harness { srt, http, seen, stop, task } = start().await;
    let publisher = tokio::spawn(async move { publish(srt, &format!("#!::r=live/{KEY},m=publish"), 6).await });
    // While it publishes: the media playlist appears with H.264 and AAC in it.
    let playlist = format!("http://{http}/hls/ch1/source/index.m3u8");
    let mut probed = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(response) = reqwest::get(&playlist).await else { continue };
        if !response.status().is_success() || !response.text().await.unwrap_or_default().contains("#EXTINF") {
            continue;
        }
        let out = tokio::process::Command::new(testkit::tools::ffprobe())
            .args(["-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", &playlist])
            .output()
            .await
            .unwrap();
        probed = Some(String::from_utf8_lossy(&out.stdout).into_owned());
        break;
    }
    let probed = probed.expect("no playlist with a segment within 10 s");
    assert!(probed.contains("h264,320,240"), "{probed}");
    assert!(probed.contains("aac"), "{probed}");
    assert!(publisher.await.unwrap(), "ffmpeg publish failed");
    wait_until(&seen, |s| s.ended.is_some()).await;
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.ended, Some("connection closed"), "{s:?}");
        let tracks = s.tracks.as_deref().unwrap_or_default();
        assert!(tracks.starts_with("avc1.64") && tracks.ends_with(" 320x240 mp4a.40.2"), "{s:?}");
        // 6 s at 30 fps; 48 kHz AAC in 1024-sample frames (281). libsrt callers close with no
        // linger in live mode, so the last few hundred ms may never arrive.
        assert!((165..=180).contains(&s.counts.video), "{s:?}");
        assert!((250..=285).contains(&s.counts.audio), "{s:?}");
        assert_eq!(s.counts.dropped, 0, "{s:?}");
        assert!(s.parts >= 10, "{s:?}");
        assert!(s.refused.is_empty());
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_and_playback_are_refused_in_the_handshake() {
    if !have_ffmpeg() {
        return;
    }
    let Harness { srt: addr, seen, stop, task, .. } = start().await;
    let started = std::time::Instant::now();
    assert!(!publish(addr, "#!::r=live/wrongkey,m=publish", 3).await, "wrong key must be refused");
    // The handshake is refused: ffmpeg gives up at once instead of streaming for 3 s.
    assert!(started.elapsed() < Duration::from_secs(3));
    // Playback never reaches the gate.
    assert!(!publish(addr, &format!("#!::r=live/{KEY},m=request"), 1).await);
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.refused, vec!["wrongkey".to_owned()]);
        assert!(s.tracks.is_none() && s.ended.is_none(), "{s:?}");
    }
    // The key order in the `#!::` list is free, and the bare key works too.
    assert!(publish(addr, &format!("#!::m=publish,r={KEY}"), 1).await);
    wait_until(&seen, |s| s.ended.is_some()).await;
    assert!(seen.lock().unwrap().counts.video > 20);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_do_not_break_the_listener() {
    if !have_ffmpeg() {
        return;
    }
    let Harness { srt: addr, seen, stop, task, .. } = start().await;
    let junk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..2000usize {
        let len = [0, 1, 4, 16, 63, 64, 65, 200, 1316, 1500][i % 10];
        let mut datagram: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        if i % 3 == 0 && len >= 16 {
            // Looks like an SRT control packet (handshake, type 0).
            datagram[0] = 0x80;
            datagram[1] = 0;
        }
        let _ = junk.send_to(&datagram, addr).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(publish(addr, KEY, 2).await, "a publish after the junk must work");
    wait_until(&seen, |s| s.ended.is_some()).await;
    assert!(seen.lock().unwrap().counts.video > 50);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
}
