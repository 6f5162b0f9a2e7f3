//! Opening FFmpeg's H.264 decoder and the rung encoders with the ladder's settings, and the
//! hardware encoders found at start.

use ffmpeg_next::codec::{self, decoder, encoder, threading};
use ffmpeg_next::format::Pixel;
use ffmpeg_next::{Dictionary, Rational};
use media::cmaf::{VideoConfig, VIDEO_TIMESCALE};
use media::codec::h264;

use crate::ffi;
use crate::spec::PlannedRung;

/// Frame rate told to encoders for rate control when the source does not say (timestamps rule;
/// this only seeds x264's estimates).
const NOMINAL_FPS: i32 = 30;

/// libx264 preset of every rung: fast enough for several rungs per core at 720p and below.
pub const X264_PRESET: &str = "veryfast";
/// x264 parameters beyond the preset: no keyframes of its own (keyframes come only where the
/// source has one, forced per frame), no B-frames, no lookahead (`tune=zerolatency`).
pub const X264_PARAMS: &str = "keyint=infinite:min-keyint=1:scenecut=0:bframes=0";

/// Which encoder implementation the rungs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderKind {
    /// libx264 on the CPU: the fallback, always present with Debian's FFmpeg.
    Software,
    /// NVIDIA NVENC (`h264_nvenc`), takes system-memory YUV 4:2:0 frames.
    Nvenc,
    /// Intel Quick Sync (`h264_qsv`), takes system-memory NV12 frames.
    Qsv,
}

impl EncoderKind {
    /// FFmpeg's name of the encoder.
    pub fn codec_name(self) -> &'static str {
        match self {
            EncoderKind::Software => "libx264",
            EncoderKind::Nvenc => "h264_nvenc",
            EncoderKind::Qsv => "h264_qsv",
        }
    }

    pub(crate) fn pixel_format(self) -> Pixel {
        match self {
            EncoderKind::Qsv => Pixel::NV12,
            _ => Pixel::YUV420P,
        }
    }

    /// Encoder options (FFmpeg `AVOption` names) for a rung of `kbps`: constant-ish bit rate
    /// with a one-second VBV, keyframes only when forced, IDR when forced, no B-frames.
    pub(crate) fn options(self, kbps: u32) -> Dictionary<'static> {
        let mut d = Dictionary::new();
        let rate = format!("{}k", kbps);
        d.set("b", &rate);
        d.set("maxrate", &rate);
        d.set("bufsize", &rate);
        d.set("bf", "0");
        d.set("forced-idr", "1");
        match self {
            EncoderKind::Software => {
                d.set("preset", X264_PRESET);
                d.set("tune", "zerolatency");
                d.set("x264-params", X264_PARAMS);
            }
            EncoderKind::Nvenc => {
                d.set("preset", "p2");
                d.set("tune", "ll");
                d.set("zerolatency", "1");
                d.set("rc", "cbr");
                d.set("g", "2147483647");
                d.set("no-scenecut", "1");
            }
            EncoderKind::Qsv => {
                d.set("preset", "veryfast");
                d.set("g", "2147483647");
                d.set("forced_idr", "1");
                d.set("look_ahead", "0");
            }
        }
        d
    }
}

/// The source decoder: H.264 in AVCC samples, the parameter sets from the source's track config.
pub(crate) fn open_decoder(source: &VideoConfig) -> Result<decoder::Video, String> {
    let codec = decoder::find(codec::Id::H264).ok_or("FFmpeg has no H.264 decoder")?;
    let mut context = codec::Context::new_with_codec(codec);
    let record = h264::decoder_config_record(&source.sps, &source.pps).map_err(|e| e.to_string())?;
    if !ffi::set_extradata(&mut context, &record) {
        return Err("could not hand the decoder its parameter sets".into());
    }
    // Slice threads add no delay; frame threads would hold frames back.
    let mut threads = threading::Config::kind(threading::Type::Slice);
    threads.count = 0;
    context.set_threading(threads);
    let mut decoder = context.decoder();
    decoder.set_packet_time_base(Rational::new(1, VIDEO_TIMESCALE as i32));
    decoder.video().map_err(|e| format!("opening the H.264 decoder: {e}"))
}

/// An opened rung encoder and the track config of what it produces.
pub(crate) fn open_encoder(
    kind: EncoderKind,
    rung: &PlannedRung,
) -> Result<(encoder::video::Encoder, VideoConfig), String> {
    let name = kind.codec_name();
    let codec = encoder::find_by_name(name).ok_or_else(|| format!("FFmpeg has no {name} encoder"))?;
    let context = codec::Context::new_with_codec(codec);
    let mut video = context.encoder().video().map_err(|e| format!("{name}: {e}"))?;
    video.set_width(rung.width);
    video.set_height(rung.height);
    video.set_format(kind.pixel_format());
    video.set_time_base(Rational::new(1, VIDEO_TIMESCALE as i32));
    video.set_frame_rate(Some(Rational::new(NOMINAL_FPS, 1)));
    video.set_max_b_frames(0);
    // Parameter sets once, in the header (init.mp4), not before every keyframe.
    video.set_flags(codec::Flags::GLOBAL_HEADER);
    let opened = video.open_as_with(codec, kind.options(rung.kbps)).map_err(|e| format!("opening {name}: {e}"))?;
    let header = ffi::extradata(&opened);
    let config = h264::video_config_from_annexb(&header, rung.width, rung.height)
        .ok_or_else(|| format!("{name} wrote no usable SPS/PPS header"))?;
    Ok((opened, config))
}

/// What hardware encoders this machine has: compiled into FFmpeg, and openable right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardwareProbe {
    /// One entry per known hardware H.264 encoder.
    pub encoders: Vec<HardwareEncoder>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardwareEncoder {
    /// FFmpeg name, `h264_nvenc`, `h264_vaapi`, `h264_qsv`.
    pub name: &'static str,
    /// FFmpeg was built with it.
    pub compiled: bool,
    /// It opened on this machine (a device is present and answers).
    pub openable: bool,
    /// The ladder will use it (the first openable one that takes system-memory frames).
    pub usable: bool,
}

impl HardwareProbe {
    /// Probes NVENC, VAAPI and QSV: a test encoder is opened for NVENC and QSV, and a VAAPI
    /// device for VAAPI (its encoder needs frames uploaded to the GPU, which the ladder does not
    /// do yet, so VAAPI is reported but not used).
    pub fn detect() -> Self {
        crate::init();
        // A missing driver is the expected answer here, not an error worth FFmpeg's log line.
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Fatal);
        let probe_rung = PlannedRung { name: "probe".into(), width: 256, height: 144, kbps: 500 };
        let mut encoders = Vec::new();
        for (name, kind) in
            [("h264_nvenc", Some(EncoderKind::Nvenc)), ("h264_vaapi", None), ("h264_qsv", Some(EncoderKind::Qsv))]
        {
            let compiled = encoder::find_by_name(name).is_some();
            let openable = compiled
                && match kind {
                    Some(kind) => open_encoder(kind, &probe_rung).is_ok(),
                    None => ffi::hw_device_opens("vaapi"),
                };
            encoders.push(HardwareEncoder { name, compiled, openable, usable: openable && kind.is_some() });
        }
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Error);
        HardwareProbe { encoders }
    }

    /// No hardware encoder at all (software only).
    pub fn none() -> Self {
        HardwareProbe { encoders: Vec::new() }
    }

    /// The encoder the ladder uses: the first usable hardware one, else libx264.
    pub fn chosen(&self) -> EncoderKind {
        let usable = |name: &str| self.encoders.iter().any(|e| e.name == name && e.usable);
        if usable("h264_nvenc") {
            EncoderKind::Nvenc
        } else if usable("h264_qsv") {
            EncoderKind::Qsv
        } else {
            EncoderKind::Software
        }
    }
}
