//! `bitriver-load publishers`: N RTMP publishers replaying one pre-encoded FLV file.
//!
//! The file is read once; every publisher sends the same tag bodies (no encoder per publisher),
//! paced in real time, looping, with timestamps that start at 0 and keep growing across loops
//! (codec configuration is sent on the first pass only). Each publisher is a tokio task driving
//! a [`PublishClient`] (sans-IO) over one TCP connection.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use media::flv;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use url::Url;

use super::rtmp_client::{PublishClient, Status};
use super::stats::{table, Counters, Percentiles};
use super::{finish, sample_until, Common};

/// Largest FLV file read (it is held in memory and shared by every publisher).
const MAX_FILE_BYTES: u64 = 1 << 30;

/// Flags of `publishers`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PublishersArgs {
    /// The ingest's application URL, `rtmp://HOST:PORT/live`, or with a stream key appended
    /// (`rtmp://HOST:PORT/live/KEY`) when every publisher uses that one key.
    #[arg(long, env = "BITRIVER_LOAD_RTMP")]
    pub(crate) rtmp: String,
    /// Publishers.
    #[arg(long, env = "BITRIVER_LOAD_COUNT", default_value_t = 1)]
    pub(crate) count: usize,
    /// The FLV file to replay (H.264/AAC, e.g. made once with ffmpeg ... -f flv FILE).
    #[arg(long, env = "BITRIVER_LOAD_FILE")]
    pub(crate) file: std::path::PathBuf,
    /// Stream keys, one per publisher in turn.
    #[arg(long, env = "BITRIVER_LOAD_KEY", value_delimiter = ',')]
    pub(crate) key: Vec<String>,
    /// A file of stream keys, one per line (added to `--key`).
    #[arg(long, env = "BITRIVER_LOAD_KEYS_FILE")]
    pub(crate) keys_file: Option<std::path::PathBuf>,
    /// Seconds over which the publishers start, evenly spaced.
    #[arg(long, env = "BITRIVER_LOAD_RAMP", default_value_t = 0.0)]
    pub(crate) ramp: f64,
    #[command(flatten)]
    pub(crate) common: Common,
}

/// The replayed file: tags in order, timestamps from 0.
#[derive(Debug)]
struct Recording {
    tags: Vec<flv::FlvTag>,
    /// One loop's length, ms: the last timestamp plus the typical frame gap.
    loop_ms: u64,
}

impl Recording {
    fn parse(data: Bytes) -> anyhow::Result<Self> {
        let (_, mut at) = flv::read_file_header(&data).map_err(|e| anyhow::anyhow!("not an FLV file: {e}"))?;
        let mut tags = Vec::new();
        while at < data.len() {
            match flv::read_tag(&data.slice(at..)) {
                Ok((tag, used)) => {
                    at += used;
                    if matches!(tag.tag_type, flv::tag_type::AUDIO | flv::tag_type::VIDEO | flv::tag_type::SCRIPT_DATA)
                    {
                        tags.push(tag);
                    }
                }
                // A truncated last tag (a recording cut short) is dropped.
                Err(flv::FlvError::Incomplete) => break,
                Err(e) => anyhow::bail!("FLV tag at byte {at}: {e}"),
            }
        }
        anyhow::ensure!(tags.iter().any(|t| t.tag_type == flv::tag_type::VIDEO), "the FLV file has no video");
        let first = tags.iter().map(|t| t.timestamp).min().unwrap_or(0);
        for t in &mut tags {
            t.timestamp -= first;
        }
        let videos: Vec<u32> =
            tags.iter().filter(|t| t.tag_type == flv::tag_type::VIDEO).map(|t| t.timestamp).collect();
        let gap = videos.windows(2).map(|w| w[1].saturating_sub(w[0])).filter(|g| *g > 0).min().unwrap_or(33);
        let last = tags.iter().map(|t| t.timestamp).max().unwrap_or(0);
        Ok(Recording { tags, loop_ms: u64::from(last) + u64::from(gap) })
    }
}

/// A codec configuration tag (AVC sequence header, AAC AudioSpecificConfig): sent once.
fn is_config(tag: &flv::FlvTag) -> bool {
    let b = &tag.body;
    match tag.tag_type {
        flv::tag_type::VIDEO => b.len() > 1 && b[0] & 0x0f == 7 && b[1] == 0,
        flv::tag_type::AUDIO => b.len() > 1 && b[0] >> 4 == 10 && b[1] == 0,
        _ => true,
    }
}

pub(crate) async fn run(args: PublishersArgs) -> anyhow::Result<()> {
    args.common.validate()?;
    anyhow::ensure!(args.count > 0, "--count must be at least 1");
    let url = Url::parse(&args.rtmp).map_err(|e| anyhow::anyhow!("--rtmp {}: {e}", args.rtmp))?;
    anyhow::ensure!(url.scheme() == "rtmp", "--rtmp must be an rtmp:// URL");
    let host = url.host_str().context("--rtmp has no host")?.to_owned();
    let port = url.port().unwrap_or(1935);
    let mut segments: Vec<String> = url.path().trim_start_matches('/').split('/').map(str::to_owned).collect();
    let mut keys = args.key.clone();
    if let Some(path) = &args.keys_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        keys.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned));
    }
    if keys.is_empty() && segments.len() >= 2 {
        keys.push(segments.pop().unwrap_or_default());
    }
    anyhow::ensure!(!keys.is_empty(), "no stream key: pass --key, --keys-file, or end --rtmp with /KEY");
    let app = segments.first().filter(|s| !s.is_empty()).cloned().unwrap_or_else(|| "live".to_owned());
    let tc_url = format!("rtmp://{host}:{port}/{app}");
    let size = std::fs::metadata(&args.file).with_context(|| format!("reading {}", args.file.display()))?.len();
    anyhow::ensure!(size <= MAX_FILE_BYTES, "{} is larger than {MAX_FILE_BYTES} bytes", args.file.display());
    let recording = Arc::new(Recording::parse(Bytes::from(std::fs::read(&args.file)?))?);
    let target =
        tokio::net::lookup_host((host.as_str(), port)).await?.next().context("no address for the RTMP host")?;

    let counters = Arc::new(Counters::default());
    let epoch = Instant::now();
    let started_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let ramp = Duration::from_secs_f64(args.ramp.max(0.0));
    let stop_at = epoch + ramp + args.common.duration();
    let mut tasks = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let start = epoch + ramp.mul_f64(i as f64 / args.count as f64);
        let key = keys[i % keys.len()].clone();
        let (recording, counters, tc_url, app) = (recording.clone(), counters.clone(), tc_url.clone(), app.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let result = publish(target, &tc_url, &app, &key, i as u64, &recording, stop_at, &counters).await;
            if result.is_err() {
                Counters::add(&counters.errors, 1);
            }
            result
        }));
    }
    let metrics_url = args.common.metrics_url(&url);
    let sampler =
        sample_until(&counters, epoch, stop_at, metrics_url.as_deref(), "publishing", args.common.quiet).await;
    let (mut live, mut failures) = (0, Vec::new());
    let mut tags = 0;
    for task in tasks {
        match task.await? {
            Ok(sent) => {
                live += 1;
                tags += sent;
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    let lag = Percentiles::of(&mut sampler.all_latency.clone());
    let bytes = Counters::get(&counters.bytes);
    let secs = epoch.elapsed().as_secs_f64();
    let rows = vec![
        vec!["publishers live / asked".into(), format!("{live} / {}", args.count)],
        vec!["tags sent".into(), tags.to_string()],
        vec!["sent".into(), format!("{:.1} MB ({:.2} Mbit/s)", bytes as f64 / 1e6, bytes as f64 * 8.0 / secs / 1e6)],
        vec![
            "send lag p50/p99/max ms".into(),
            lag.map_or("-".into(), |l| format!("{:.1}/{:.1}/{:.1}", l.p50, l.p99, l.max)),
        ],
        vec!["file loop".into(), format!("{:.1} s, {} tags", recording.loop_ms as f64 / 1000.0, recording.tags.len())],
    ];
    let mut printed = table(&["publishers", "value"], &rows);
    if let Some(first) = failures.first() {
        printed += &format!("{} failed, first: {first}\n", failures.len());
    }
    let summary = json!({
        "publishers": args.count,
        "live": live,
        "failed": failures.len(),
        "first_failure": failures.first(),
        "tags": tags,
        "bytes": bytes,
        "mbit_per_s": bytes as f64 * 8.0 / secs / 1e6,
        "send_lag_ms": lag,
    });
    finish(&args.common, "publishers", &args.rtmp, started_unix_ms, epoch, sampler, summary, printed)
}

/// One publisher until `stop_at`; the number of tags it sent.
#[allow(clippy::too_many_arguments)]
async fn publish(
    target: std::net::SocketAddr,
    tc_url: &str,
    app: &str,
    key: &str,
    seed: u64,
    recording: &Recording,
    stop_at: Instant,
    c: &Counters,
) -> anyhow::Result<u64> {
    let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(target))
        .await
        .context("connect: no answer within 10 s")?
        .with_context(|| format!("connect {target}"))?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let mut client = PublishClient::new(tc_url, app, key, seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed);
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    // Handshake and commands.
    loop {
        if let Some(out) = client.poll_transmit() {
            wr.write_all(&out).await?;
        }
        match client.status() {
            Status::Live => break,
            Status::Failed(why) => anyhow::bail!("{key}: {why}"),
            Status::Connecting => {}
        }
        let n = tokio::time::timeout_at(deadline.into(), rd.read(&mut buf))
            .await
            .context("the ingest did not accept the publish within 10 s")??;
        anyhow::ensure!(n > 0, "{key}: the ingest closed the connection");
        client.handle_input(&buf[..n]);
    }
    Counters::add(&c.active, 1);
    let result = stream_media(&mut client, &mut rd, &mut wr, &mut buf, recording, stop_at, c).await;
    Counters::dec(&c.active);
    client.unpublish();
    if let Some(out) = client.poll_transmit() {
        let _ = wr.write_all(&out).await;
    }
    let _ = wr.shutdown().await;
    result
}

async fn stream_media(
    client: &mut PublishClient,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    buf: &mut [u8],
    recording: &Recording,
    stop_at: Instant,
    c: &Counters,
) -> anyhow::Result<u64> {
    let start = Instant::now();
    let mut sent = 0u64;
    for pass in 0u64.. {
        let offset = pass * recording.loop_ms;
        for tag in &recording.tags {
            if pass > 0 && is_config(tag) {
                continue;
            }
            let ts = offset + u64::from(tag.timestamp);
            let due = start + Duration::from_millis(ts);
            if due >= stop_at {
                return Ok(sent);
            }
            // Wait for the tag's time, answering the server (acknowledgements, pings) meanwhile.
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => break,
                    read = rd.read(buf) => {
                        let n = read?;
                        anyhow::ensure!(n > 0, "the ingest closed the connection");
                        client.handle_input(&buf[..n]);
                        if let Status::Failed(why) = client.status() {
                            anyhow::bail!("{why}");
                        }
                    }
                }
            }
            c.latency(due.elapsed().as_secs_f64() * 1000.0);
            client.send_tag(tag.tag_type, ts as u32, &tag.body);
            if let Some(out) = client.poll_transmit() {
                wr.write_all(&out).await?;
            }
            sent += 1;
            Counters::add(&c.requests, 1);
            Counters::add(&c.bytes, tag.body.len() as u64);
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(tag_type: u8, ts: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag_type];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&ts.to_be_bytes()[1..]);
        out.push((ts >> 24) as u8);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(body);
        out.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
        out
    }

    #[test]
    fn reads_a_recording_and_its_loop_length() {
        let mut file = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        file.extend(tag(18, 1000, b"\x02\x00\x0aonMetaData"));
        file.extend(tag(9, 1000, &[0x17, 0, 0, 0, 0]));
        file.extend(tag(8, 1000, &[0xaf, 0, 0x12, 0x10]));
        file.extend(tag(9, 1033, &[0x27, 1, 0, 0, 0]));
        file.extend(tag(9, 1066, &[0x27, 1, 0, 0, 0]));
        file.extend(&tag(8, 1070, &[0xaf, 1, 1])[..5]); // cut short
        let r = Recording::parse(Bytes::from(file)).unwrap();
        assert_eq!(r.tags.len(), 5);
        assert_eq!(r.tags[0].timestamp, 0);
        assert_eq!(r.loop_ms, 66 + 33);
        let config: Vec<bool> = r.tags.iter().map(is_config).collect();
        assert_eq!(config, [true, true, true, false, false]);
        assert!(Recording::parse(Bytes::from_static(b"<html>")).is_err());
    }
}
