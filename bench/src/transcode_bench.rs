//! `transcode-bench`: CPU cost of the in-process transcode ladder beside the ffmpeg CLI running the
//! same ladder on the same input, in the same run.
//!
//! The bench encodes a synthetic input once (ffmpeg testsrc2 at `--size`, 30 fps, `--seconds`
//! long, libx264 veryfast zerolatency, a keyframe every second, access unit delimiters) into a
//! raw `.h264` file. Then:
//!
//! - **bitriver**: the access units go, as fast as the ladder takes them, through the real
//!   pipeline: `transcode::TranscodeLadder` (offline mode: the input blocks instead of dropping,
//!   no degrade) feeding a `media::origin::LiveRegistry` stream of `source` plus one rendition per
//!   rung: one H.264 decode, swscale per rung, libx264 per rung, CMAF packaging. CPU time of this
//!   process from `/proc/self/stat`, from the first sample to the last rung sample packaged.
//! - **ffmpeg CLI**: `ffmpeg -i input.h264 -filter_complex "split=N, scale per rung" -c:v libx264
//!   (the same preset, tune, x264 parameters, rate control, IDR at the source keyframes) -f null`,
//!   its CPU time from `-benchmark` (getrusage of the ffmpeg process).
//!
//! Prints CPU seconds per second of input for both and the ratio bitriver / ffmpeg (aim: <= 1.0).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use media::cmaf::{Sample, VideoCodec, VideoConfig};
use media::codec::h264::{codec_string, split_access_units};
use media::hls::{Rendition, RenditionConfig};
use media::ingest::{Ladder, LadderSource};
use media::origin::{LiveRegistry, LiveRendition, OriginMetrics, RegistryConfig};
use testkit::ffmpeg::TestPattern;
use testkit::procfs::{cpu_seconds, Pid};
use transcode::{HardwareProbe, LadderSpec, TranscodeLadder, TranscodeMetrics, X264_PARAMS, X264_PRESET};

const FPS: u64 = 30;
const TICKS_PER_FRAME: u32 = 90_000 / FPS as u32;

#[derive(Debug, Parser)]
#[command(
    name = "transcode-bench",
    about = "CPU seconds per second of input: the in-process ladder beside the ffmpeg CLI running the same ladder",
    long_about = "Encodes a synthetic H.264 input once, runs it through bitriver's in-process ladder (decode once, \
                  scale and libx264 per rung, CMAF packaging) as fast as possible, then through the ffmpeg CLI with \
                  the same ladder and settings (-f null), and prints CPU seconds per second of input for both and \
                  their ratio. Asserts nothing. Every flag has a TRANSCODE_BENCH_* environment twin."
)]
struct Args {
    /// Input size, WIDTHxHEIGHT.
    #[arg(long, env = "TRANSCODE_BENCH_SIZE", default_value = "1280x720")]
    size: String,
    /// Input length in seconds (30 fps).
    #[arg(long, env = "TRANSCODE_BENCH_SECONDS", default_value_t = 10)]
    seconds: u64,
    /// The ladder (rungs taller than the input are skipped, as live).
    #[arg(long, env = "TRANSCODE_BENCH_LADDER", default_value = transcode::DEFAULT_LADDER)]
    ladder: String,
    /// The ffmpeg binary [default: ffmpeg on PATH].
    #[arg(long, env = "TRANSCODE_BENCH_FFMPEG")]
    ffmpeg: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (width, height) = args
        .size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .context("--size: expected WIDTHxHEIGHT")?;
    let spec = LadderSpec::parse(&args.ladder).context("--ladder")?;
    let plan = spec.plan(width, height);
    if plan.is_empty() {
        bail!("no rung of {spec} at or below {height}p");
    }
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("input.h264");
    println!("transcode-bench: input {width}x{height} 30 fps, {} s; ladder {spec}", args.seconds);
    let ffmpeg = args.ffmpeg.clone().unwrap_or_else(testkit::tools::ffmpeg);
    generate(&ffmpeg, &input, width, height, args.seconds)?;
    let (video, samples) = access_units(&std::fs::read(&input)?)?;
    let input_seconds = samples.len() as f64 / FPS as f64;
    let rungs: Vec<String> = plan.iter().map(|r| format!("{}x{}@{}k", r.width, r.height, r.kbps)).collect();
    println!("rungs: {}  ({} frames)", rungs.join(", "), samples.len());

    let ours = in_process(&spec, width, height, (video, samples))?;
    let cli = ffmpeg_cli(&ffmpeg, &input, &plan)?;

    println!();
    println!("| run | CPU s | wall s | CPU s per s of input |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, (cpu, wall)) in [("bitriver in-process ladder", ours), ("ffmpeg CLI, same ladder", cli)] {
        println!("| {name} | {cpu:.2} | {wall:.2} | {:.3} |", cpu / input_seconds);
    }
    println!();
    println!("ratio bitriver / ffmpeg CLI (CPU): {:.2}x  (aim <= 1.0x)", ours.0 / cli.0);
    Ok(())
}

/// The synthetic input: keyframe every second, no B-frames, an AUD before every access unit.
fn generate(ffmpeg: &Path, out: &Path, width: u32, height: u32, seconds: u64) -> anyhow::Result<()> {
    let pattern = TestPattern {
        fps: FPS as u32,
        seconds: Some(u32::try_from(seconds).context("--seconds")?),
        audio: false,
        extra: vec!["-x264-params".into(), "aud=1".into()],
        ..TestPattern::new(width, height)
    };
    let status =
        pattern.command_with(ffmpeg, "h264", out).status().with_context(|| format!("running {}", ffmpeg.display()))?;
    if !status.success() {
        bail!("ffmpeg could not generate the input ({status})");
    }
    Ok(())
}

/// The input as packager samples (AVCC, 90 kHz, 30 fps) plus its SPS and PPS.
fn access_units(data: &[u8]) -> anyhow::Result<(VideoConfig, Vec<Sample>)> {
    let es = split_access_units(data);
    let codec_string = es.sps.first().and_then(|sps| codec_string(sps)).context("input has no SPS")?;
    if es.pps.is_empty() || es.access_units.is_empty() {
        bail!("input has no PPS or no frames");
    }
    let samples = es
        .access_units
        .into_iter()
        .enumerate()
        .map(|(i, (data, keyframe))| {
            let dts = i as u64 * u64::from(TICKS_PER_FRAME);
            Sample { dts, pts_offset: 0, duration: TICKS_PER_FRAME, keyframe, data }
        })
        .collect();
    let sps = es.sps.into_iter().take(1).collect();
    let pps = es.pps.into_iter().take(1).collect();
    let config = VideoConfig { codec: VideoCodec::Avc1, sps, pps, width: 0, height: 0, codec_string };
    Ok((config, samples))
}

/// Runs the in-process ladder over `samples`; returns (CPU s, wall s).
fn in_process(
    spec: &LadderSpec,
    width: u32,
    height: u32,
    (mut video, samples): (VideoConfig, Vec<Sample>),
) -> anyhow::Result<(f64, f64)> {
    video.width = u16::try_from(width)?;
    video.height = u16::try_from(height)?;
    let metrics = TranscodeMetrics::unregistered();
    let ladder = TranscodeLadder::new(spec.clone(), &HardwareProbe::none(), metrics.clone()).offline();
    let source = LadderSource { channel_id: "bench", session_id: "bench", video: &video, audio: None };
    let cpu_start = cpu_seconds(Pid::This)?;
    let wall = Instant::now();
    let mut run = ladder.start(&source).context("the ladder did not start")?;
    let rungs = run.renditions();
    let config = RenditionConfig { name: "source".into(), ..RenditionConfig::default() };
    let mut renditions = vec![LiveRendition::new(Rendition::new(config.clone(), Some(video.clone()), None)?)];
    for rung in &rungs {
        let rendition = Rendition::new(
            RenditionConfig { name: rung.name.clone(), ..config.clone() },
            Some(rung.video.clone()),
            None,
        )?;
        renditions.push(LiveRendition::new(rendition));
    }
    let registry = LiveRegistry::new(RegistryConfig::default(), OriginMetrics::unregistered());
    let live = registry.open("bench", "bench", renditions)?;
    run.attach(live.feed());
    let frames = samples.len() as u64;
    for sample in samples {
        let now = raft::now_millis();
        let _ = live.push_video(0, sample.clone(), now);
        run.video(&sample, now, None);
    }
    drop(run);
    // The last sample of each rung is packaged once its thread has flushed the encoder.
    let counters: Vec<_> = rungs.iter().map(|r| metrics.frames.with_label_values(&["bench", &r.name])).collect();
    let deadline = Instant::now() + Duration::from_secs(600);
    while counters.iter().any(|c| c.get() < frames) {
        if Instant::now() > deadline {
            let done: Vec<_> = counters.iter().map(|c| c.get()).collect();
            bail!("the ladder stalled: {done:?} of {frames} frames per rung");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let cpu = cpu_seconds(Pid::This)? - cpu_start;
    Ok((cpu, wall.elapsed().as_secs_f64()))
}

/// The same ladder with the ffmpeg CLI; returns (CPU s, wall s) from `-benchmark`.
fn ffmpeg_cli(ffmpeg: &Path, input: &Path, plan: &[transcode::PlannedRung]) -> anyhow::Result<(f64, f64)> {
    let n = plan.len();
    let mut graph = format!("[0:v]split={n}");
    for i in 0..n {
        graph.push_str(&format!("[s{i}]"));
    }
    for (i, rung) in plan.iter().enumerate() {
        graph.push_str(&format!(";[s{i}]scale={}:{}:flags=bilinear[o{i}]", rung.width, rung.height));
    }
    let mut cmd = Command::new(ffmpeg);
    cmd.args(["-hide_banner", "-nostdin", "-benchmark", "-loglevel", "info", "-framerate", "30", "-i"])
        .arg(input)
        .args(["-filter_complex", &graph]);
    for (i, rung) in plan.iter().enumerate() {
        let rate = format!("{}k", rung.kbps);
        cmd.args(["-map", &format!("[o{i}]"), "-c:v", "libx264", "-preset", X264_PRESET, "-tune", "zerolatency"])
            .args(["-x264-params", X264_PARAMS, "-b:v", &rate, "-maxrate", &rate, "-bufsize", &rate])
            .args(["-bf", "0", "-forced-idr", "1", "-force_key_frames", "source", "-f", "null", "-"]);
    }
    let out = cmd.output().with_context(|| format!("running {}", ffmpeg.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("ffmpeg CLI ladder failed: {stderr}");
    }
    // "bench: utime=12.345s stime=0.678s rtime=4.567s"
    let line = stderr.lines().find(|l| l.contains("bench: utime=")).context("no -benchmark line from ffmpeg")?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let at = line.find(name).context("benchmark field")? + name.len();
        let value = line[at..].split('s').next().unwrap_or_default();
        Ok(value.parse()?)
    };
    Ok((field("utime=")? + field("stime=")?, field("rtime=")?))
}
