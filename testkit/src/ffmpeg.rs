//! The synthetic stream every live test and bench publishes (`testsrc2` + a sine tone, x264 and
//! AAC), as one ffmpeg command line, and ffprobe's JSON.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

/// How the test pattern's video is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// x264 zerolatency: no B-frames, decode order = presentation order.
    ZeroLatency,
    /// Two B-frames, as from OBS's default x264 settings (decode order differs).
    BFrames,
}

/// What ffmpeg encodes: a `width`x`height` test pattern at `fps`, keyframe every `gop` frames,
/// with a 440 Hz tone unless `audio` is false.
#[derive(Debug, Clone)]
pub struct TestPattern {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub gop: u32,
    /// `-t`: stop after this many seconds (`None`: until killed).
    pub seconds: Option<u32>,
    /// `-re`: at the pace of real time, as a live encoder sends.
    pub realtime: bool,
    pub audio: bool,
    pub encoding: Encoding,
    /// x264 `-preset`.
    pub preset: &'static str,
    /// More output options (bitrate, muxer flags), before `-f`.
    pub extra: Vec<String>,
    /// Burns the wall clock into each frame as it is made, for glass-to-glass latency: a strip
    /// of 32 blocks of 16x16 pixels at the top left, block `i` (from the left) white when bit
    /// `i` of the Unix time in milliseconds mod 2^32 is set. `tests/browser/clock.mjs` reads it.
    pub clock: bool,
}

impl TestPattern {
    /// 30 fps, a keyframe a second, with audio, zerolatency `veryfast` x264, not paced, endless.
    pub fn new(width: u32, height: u32) -> Self {
        TestPattern {
            width,
            height,
            fps: 30,
            gop: 30,
            seconds: None,
            realtime: false,
            audio: true,
            encoding: Encoding::ZeroLatency,
            preset: "veryfast",
            extra: Vec::new(),
            clock: false,
        }
    }

    /// `ffmpeg ... -f format output` (stdin closed, stdout and stderr inherited).
    pub fn command(&self, format: &str, output: impl AsRef<OsStr>) -> std::process::Command {
        self.command_with(&crate::tools::ffmpeg(), format, output)
    }

    /// [`TestPattern::command`] run by the ffmpeg binary `ffmpeg`.
    pub fn command_with(&self, ffmpeg: &Path, format: &str, output: impl AsRef<OsStr>) -> std::process::Command {
        let mut cmd = std::process::Command::new(ffmpeg);
        cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]);
        if self.realtime {
            cmd.arg("-re");
        }
        cmd.args(["-f", "lavfi", "-i"]).arg(format!("testsrc2=size={}x{}:rate={}", self.width, self.height, self.fps));
        if self.audio {
            cmd.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]);
        }
        if self.clock {
            // The strip is its own small source (the expression runs per pixel), dated with the
            // wall clock when the frame is made (RTCTIME, microseconds), then overlaid.
            if self.realtime {
                cmd.arg("-re");
            }
            cmd.args(["-f", "lavfi", "-i"]).arg(format!("color=c=black:s=512x16:r={}", self.fps));
            let strip = usize::from(self.audio) + 1;
            let bits = "255*mod(floor(mod(floor(T*1000)\\,4294967296)/pow(2\\,floor(X/16)))\\,2)";
            cmd.arg("-filter_complex").arg(format!(
                "[{strip}:v]format=gray,settb=AVTB,setpts=RTCTIME,geq=lum='{bits}',settb=1/{fps},setpts=N[clock];\
                 [0:v][clock]overlay=0:0,format=yuv420p[v]",
                fps = self.fps
            ));
            cmd.args(["-map", "[v]"]);
            if self.audio {
                cmd.args(["-map", "1:a"]);
            }
        }
        cmd.args(["-c:v", "libx264", "-preset", self.preset, "-g", &self.gop.to_string(), "-pix_fmt", "yuv420p"]);
        match self.encoding {
            Encoding::ZeroLatency => cmd.args(["-tune", "zerolatency"]),
            Encoding::BFrames => cmd.args(["-bf", "2"]),
        };
        if self.audio {
            cmd.args(["-c:a", "aac", "-b:a", "128k"]);
        }
        if let Some(seconds) = self.seconds {
            cmd.args(["-t", &seconds.to_string()]);
        }
        cmd.args(&self.extra).args(["-f", format]).arg(output).stdin(Stdio::null());
        cmd
    }

    /// [`TestPattern::command`] for tokio, killed when dropped.
    pub fn tokio_command(&self, format: &str, output: impl AsRef<OsStr>) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::from(self.command(format, output));
        cmd.kill_on_drop(true);
        cmd
    }

    /// Publishes to `output` in container `format` (`flv` for RTMP, `mpegts` for SRT) in real
    /// time, its stderr into `log`; killed when dropped.
    pub fn publish(&self, format: &str, output: &str, log: &Path) -> tokio::process::Child {
        let log = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        TestPattern { realtime: true, ..self.clone() }
            .tokio_command(format, output)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", crate::tools::ffmpeg().display()))
    }
}

/// ffmpeg recording `seconds` of `url` (a playlist, say) into the file `out` without re-encoding;
/// its stderr goes to `log`, killed when dropped.
pub fn record(url: &str, seconds: u32, out: &Path, log: &Path) -> tokio::process::Child {
    let log = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    tokio::process::Command::new(crate::tools::ffmpeg())
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y", "-i", url, "-t", &seconds.to_string(), "-c", "copy"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", crate::tools::ffmpeg().display()))
}

/// `ffprobe -v error -of json ARGS`, bounded to 30 s; panics when it fails.
pub async fn ffprobe(args: &[&str]) -> Value {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(crate::tools::ffprobe())
            .args(["-v", "error", "-of", "json"])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("ffprobe timed out")
    .expect("running ffprobe");
    assert!(out.status.success(), "ffprobe {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("ffprobe's JSON")
}

/// The first stream of `probe` (ffprobe `-show_streams` JSON) with codec `codec`.
pub fn stream<'a>(probe: &'a Value, codec: &str) -> Option<&'a Value> {
    probe["streams"].as_array()?.iter().find(|s| s["codec_name"] == codec)
}

/// ffprobe's video (width, height) of `url`, asserting it is H.264 with AAC audio.
pub async fn probe_size(url: &str) -> (u64, u64) {
    let probe = ffprobe(&["-show_streams", url]).await;
    let video = stream(&probe, "h264").unwrap_or_else(|| panic!("no h264 in {url}: {probe}"));
    assert!(stream(&probe, "aac").is_some(), "no aac in {url}: {probe}");
    (video["width"].as_u64().unwrap_or(0), video["height"].as_u64().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_says_what_the_pattern_is() {
        let pattern =
            TestPattern { seconds: Some(2), realtime: true, encoding: Encoding::BFrames, ..TestPattern::new(320, 180) };
        let cmd = pattern.command("flv", "rtmp://127.0.0.1:1/live/k");
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let line = args.join(" ");
        assert!(line.contains("-re -f lavfi -i testsrc2=size=320x180:rate=30"), "{line}");
        assert!(line.contains("-bf 2") && !line.contains("zerolatency"), "{line}");
        assert!(line.ends_with("-c:a aac -b:a 128k -t 2 -f flv rtmp://127.0.0.1:1/live/k"), "{line}");
    }
}
