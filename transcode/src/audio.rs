//! Audio transcoders for WebRTC: Opus from a WHIP publisher into AAC-LC for LL-HLS
//! ([`OpusToAac`]), and the packager's AAC into Opus for WHEP viewers ([`AacToOpus`], once per
//! channel).
//!
//! Both run FFmpeg in-process (the native `opus` and `aac` decoders, the native `aac` and the
//! `libopus` encoders, swresample when the rate or layout differs) on bytes in memory: no
//! container, no probing. Decoded PCM goes through a small queue that cuts it into the encoder's
//! frame size and keeps the timeline: the pts of every output frame is the input time of its first
//! sample, so audio stays aligned to the input clock across lost or late packets (gaps are filled
//! with silence, packets that go backwards are dropped).
//!
//! Inputs are untrusted (a WHIP publisher sends whatever bytes it likes): sizes are bounded and an
//! Opus packet's table of contents is checked before FFmpeg sees it, and whatever FFmpeg refuses
//! comes back as an [`AudioError`] with the transcoder still usable.

use bytes::Bytes;
use ffmpeg_next::codec::{self, decoder, encoder};
use ffmpeg_next::format::sample::Type as SampleType;
use ffmpeg_next::format::Sample;
use ffmpeg_next::software::resampling;
use ffmpeg_next::{frame, ChannelLayout, Dictionary, Packet, Rational};
use media::codec::aac::AacConfig;

use crate::ffi;

/// Opus always runs at 48 kHz, and so does everything we output.
pub const OUTPUT_RATE: u32 = 48_000;
/// Samples per AAC frame.
pub const AAC_FRAME_SAMPLES: usize = 1024;
/// Samples per Opus packet we send to WHEP viewers (20 ms, what browsers expect).
pub const OPUS_FRAME_SAMPLES: usize = 960;
/// Largest Opus packet accepted: a legal one is at most 6 frames of 1275 bytes plus framing,
/// but over RTP (one packet per datagram) anything past this is not an Opus packet.
pub const MAX_OPUS_PACKET: usize = 4096;
/// Largest AAC frame accepted: 6144 bits per channel, 8 channels.
pub const MAX_AAC_FRAME: usize = 6144;
/// Longest hole in the input filled with silence (5 s). Past that the output timeline jumps with
/// the input's instead, so a hostile timestamp cannot make us encode hours of silence.
pub const MAX_FILLED_GAP: i64 = 5 * OUTPUT_RATE as i64;
/// How far (in 48 kHz samples) an AAC frame's pts may sit from where the previous frame ended
/// and still count as contiguous: the track's timescale may not be the sample rate (RTMP's is
/// milliseconds) and 44.1 kHz frames do not end on whole 48 kHz samples.
const AAC_PTS_TOLERANCE: i64 = 20 * 48;
/// Largest `samples x channels` of one decoded or resampled frame we accept (an Opus packet is
/// at most 120 ms; an AAC frame 2048 samples of 8 channels at 96 kHz upsampled stays far below).
const MAX_FRAME_SAMPLES: usize = 1 << 16;

/// One encoded audio frame: raw codec payload (AAC without ADTS, or one Opus packet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    pub data: Bytes,
    /// Input time of the frame's first sample, in the output's sample rate units (48 kHz). The
    /// decoded sound of this frame plays the encoder's delay ([`OpusToAac::encoder_delay`]) later.
    pub pts: i64,
    /// Samples, same units.
    pub duration: u32,
}

/// Why a transcoder refused its configuration or a packet. After a packet error the transcoder
/// is still usable: the packet counts as lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    #[error("audio configuration refused: {0}")]
    Config(String),
    #[error("{kind} of {len} bytes is over the {max}-byte limit")]
    TooLarge { kind: &'static str, len: usize, max: usize },
    #[error("malformed {kind}: {reason}")]
    Malformed { kind: &'static str, reason: String },
    #[error("decoding failed: {0}")]
    Decode(String),
    #[error("encoding failed: {0}")]
    Encode(String),
    #[error("resampling failed: {0}")]
    Resample(String),
    #[error("the transcoder was flushed; it takes no more input")]
    Flushed,
}

// ---------------------------------------------------------------------------------------------
// Opus -> AAC

/// WHIP ingest: Opus from a browser/OBS (48 kHz) -> AAC-LC for LL-HLS.
pub struct OpusToAac {
    decoder: decoder::Audio,
    converter: Converter,
    queue: PcmQueue,
    encoder: FrameEncoder,
    timeline: Timeline,
    channels: u8,
    asc: Bytes,
}

impl OpusToAac {
    /// `channels` from the SDP's opus/48000/2 (1 or 2); output AAC-LC 48 kHz with that many
    /// channels at `bitrate` bit/s.
    pub fn new(channels: u8, bitrate: u32) -> Result<Self, AudioError> {
        if !(1..=2).contains(&channels) {
            return Err(AudioError::Config(format!("{channels} Opus channels (1 or 2 supported)")));
        }
        check_bitrate(bitrate)?;
        crate::init();
        let layout = ChannelLayout::default(i32::from(channels));
        let decoder = open_decoder("opus", &opus_head(channels))?;
        let encoder = FrameEncoder::open("aac", Sample::F32(SampleType::Planar), layout, bitrate, AAC_FRAME_SAMPLES)?;
        Ok(OpusToAac {
            decoder,
            converter: Converter::new(layout),
            queue: PcmQueue::new(usize::from(channels)),
            encoder,
            timeline: Timeline::new(0),
            channels,
            asc: Bytes::copy_from_slice(&aac_lc_audio_specific_config(OUTPUT_RATE, channels)),
        })
    }

    pub fn sample_rate(&self) -> u32 {
        OUTPUT_RATE
    }

    pub fn channels(&self) -> u8 {
        self.channels
    }

    /// The AudioSpecificConfig (2 bytes) of the AAC output, for the CMAF init segment.
    pub fn audio_specific_config(&self) -> Bytes {
        self.asc.clone()
    }

    /// Samples between an output frame's pts and when its sound plays (the AAC encoder's
    /// priming, 1024), for an edit list if the packager wants one.
    pub fn encoder_delay(&self) -> u32 {
        self.encoder.delay as u32
    }

    /// One Opus packet with its RTP timestamp (48 kHz units, already unwrapped to i64 by the
    /// caller). Returns the AAC frames completed (1024 samples each), pts in 48 kHz units,
    /// monotonically increasing. A gap in the input timestamps (lost packets) is filled with
    /// silence so the output timeline stays aligned to the input clock; a packet that goes
    /// backwards is dropped with no error.
    pub fn push(&mut self, packet: &[u8], pts: i64) -> Result<Vec<AudioFrame>, AudioError> {
        if self.encoder.flushed {
            return Err(AudioError::Flushed);
        }
        if packet.len() > MAX_OPUS_PACKET {
            return Err(AudioError::TooLarge { kind: "Opus packet", len: packet.len(), max: MAX_OPUS_PACKET });
        }
        let samples = opus_packet_samples(packet)
            .map_err(|reason| AudioError::Malformed { kind: "Opus packet", reason: reason.into() })?;
        let step = self.timeline.step(pts);
        if step == Step::Drop {
            return Ok(Vec::new());
        }
        let decoded = decode(&mut self.decoder, packet)?;
        let mut out = Vec::new();
        self.start_at(step, pts, &mut out)?;
        let before = self.queue.len();
        for mut frame in decoded {
            self.converter.convert(&mut frame, &mut self.queue)?;
        }
        let got = (self.queue.len() - before) as i64;
        // What the decoder gave is the truth; the table of contents only bounds it.
        self.timeline.advance(pts, if got > 0 { got } else { i64::from(samples) }, OUTPUT_RATE);
        self.encoder.encode_whole_frames(&mut self.queue, &mut out)?;
        Ok(out)
    }

    /// Drains what is buffered at end of stream.
    pub fn flush(&mut self) -> Result<Vec<AudioFrame>, AudioError> {
        let mut out = Vec::new();
        self.encoder.finish(&mut self.queue, &mut out)?;
        Ok(out)
    }

    fn start_at(&mut self, step: Step, pts: i64, out: &mut Vec<AudioFrame>) -> Result<(), AudioError> {
        match step {
            Step::Start => self.queue.restart(pts),
            Step::Fill(samples) => self.queue.push_silence(samples as usize),
            Step::Jump => {
                self.encoder.pad_and_encode(&mut self.queue, out)?;
                self.queue.restart(pts);
            }
            Step::Contiguous | Step::Drop => {}
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// AAC -> Opus

/// WHEP playback: AAC from the packager -> Opus 48 kHz stereo, once per channel (not per viewer).
pub struct AacToOpus {
    decoder: decoder::Audio,
    converter: Converter,
    queue: PcmQueue,
    encoder: FrameEncoder,
    timeline: Timeline,
    source_rate: u32,
}

impl AacToOpus {
    /// `audio_specific_config` of the source track (any AAC-LC rate/channel layout we accept
    /// from RTMP/SRT; HE-AAC too).
    pub fn new(audio_specific_config: &[u8], bitrate: u32) -> Result<Self, AudioError> {
        if audio_specific_config.len() > 64 {
            return Err(AudioError::TooLarge {
                kind: "AudioSpecificConfig",
                len: audio_specific_config.len(),
                max: 64,
            });
        }
        let config = AacConfig::parse(&Bytes::copy_from_slice(audio_specific_config))
            .map_err(|e| AudioError::Config(e.to_string()))?;
        if !matches!(config.object_type, 2 | 5 | 29) {
            return Err(AudioError::Config(format!(
                "AAC object type {} (AAC-LC, HE-AAC and HE-AACv2 are supported)",
                config.object_type
            )));
        }
        check_bitrate(bitrate)?;
        crate::init();
        let decoder = open_decoder("aac", audio_specific_config)?;
        let stereo = ChannelLayout::STEREO;
        let encoder =
            FrameEncoder::open("libopus", Sample::F32(SampleType::Packed), stereo, bitrate, OPUS_FRAME_SAMPLES)?;
        Ok(AacToOpus {
            decoder,
            converter: Converter::new(stereo),
            queue: PcmQueue::new(2),
            encoder,
            timeline: Timeline::new(AAC_PTS_TOLERANCE),
            source_rate: config.sample_rate,
        })
    }

    /// Samples between an output packet's pts and when its sound plays (libopus's look-ahead,
    /// 312 = 6.5 ms).
    pub fn encoder_delay(&self) -> u32 {
        self.encoder.delay as u32
    }

    /// One raw AAC frame with its pts in `timescale` units (the track's timescale). Returns Opus
    /// packets of 20 ms (960 samples), pts in 48 kHz units continuing from the input's time.
    pub fn push(&mut self, frame: &[u8], pts: i64, timescale: u32) -> Result<Vec<AudioFrame>, AudioError> {
        if self.encoder.flushed {
            return Err(AudioError::Flushed);
        }
        if frame.len() > MAX_AAC_FRAME {
            return Err(AudioError::TooLarge { kind: "AAC frame", len: frame.len(), max: MAX_AAC_FRAME });
        }
        if frame.is_empty() {
            return Err(AudioError::Malformed { kind: "AAC frame", reason: "empty".into() });
        }
        if timescale == 0 {
            return Err(AudioError::Config("timescale 0".into()));
        }
        let pts = rescale(pts, timescale, OUTPUT_RATE);
        let step = self.timeline.step(pts);
        if step == Step::Drop {
            return Ok(Vec::new());
        }
        let decoded = decode(&mut self.decoder, frame)?;
        let mut out = Vec::new();
        match step {
            Step::Start => self.queue.restart(pts),
            Step::Fill(samples) => self.queue.push_silence(samples as usize),
            Step::Jump => {
                self.encoder.pad_and_encode(&mut self.queue, &mut out)?;
                self.queue.restart(pts);
            }
            Step::Contiguous | Step::Drop => {}
        }
        let mut source_samples = 0;
        for mut frame in decoded {
            source_samples += frame.samples() as i64;
            if frame.rate() > 0 {
                self.source_rate = frame.rate();
            }
            self.converter.convert(&mut frame, &mut self.queue)?;
        }
        if source_samples == 0 {
            // The decoder's first frame may come out with the next one; count it as a frame.
            source_samples = AAC_FRAME_SAMPLES as i64;
        }
        self.timeline.advance(pts, source_samples, self.source_rate);
        self.encoder.encode_whole_frames(&mut self.queue, &mut out)?;
        Ok(out)
    }

    /// Drains what is buffered at end of stream.
    pub fn flush(&mut self) -> Result<Vec<AudioFrame>, AudioError> {
        let mut out = Vec::new();
        if !self.encoder.flushed {
            self.converter.drain(&mut self.queue)?;
        }
        self.encoder.finish(&mut self.queue, &mut out)?;
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Timeline: where the next input should start, and what to do when it does not.

/// What to do with an input packet, given where the previous one ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The first packet: the output timeline starts at its pts.
    Start,
    /// Starts where the previous one ended (within the tolerance).
    Contiguous,
    /// Starts this many samples after the previous one ended: fill them with silence first.
    Fill(i64),
    /// Starts too far after the previous one to fill: the output timeline jumps to its pts.
    Jump,
    /// Starts before the previous one ended (a duplicate or a late, reordered packet).
    Drop,
}

/// The input's expected next pts, in 48 kHz samples.
#[derive(Debug, Clone)]
struct Timeline {
    next: Option<i64>,
    /// What `next` is short of, in 1/(48000 x rate) s: 1024 samples at 44.1 kHz are 1114.56
    /// 48 kHz samples, and dropping the .56 every frame would add up to a false gap in a minute.
    remainder: i64,
    tolerance: i64,
}

impl Timeline {
    fn new(tolerance: i64) -> Self {
        Timeline { next: None, remainder: 0, tolerance }
    }

    fn step(&self, pts: i64) -> Step {
        let Some(next) = self.next else { return Step::Start };
        let gap = pts.saturating_sub(next);
        if gap < -self.tolerance {
            Step::Drop
        } else if gap <= self.tolerance {
            Step::Contiguous
        } else if gap <= MAX_FILLED_GAP {
            Step::Fill(gap)
        } else {
            Step::Jump
        }
    }

    /// A packet at `pts` of `samples` at `rate` was taken. Contiguous packets chain on the
    /// expected time, not their own pts, so rounding in the input's timestamps does not add up.
    fn advance(&mut self, pts: i64, samples: i64, rate: u32) {
        let start = match self.next {
            Some(next) if (pts - next).abs() <= self.tolerance => next,
            _ => {
                self.remainder = 0;
                pts
            }
        };
        let rate = i64::from(rate.max(1));
        let total = samples.saturating_mul(i64::from(OUTPUT_RATE)).saturating_add(self.remainder);
        self.remainder = total.rem_euclid(rate);
        self.next = Some(start.saturating_add(total.div_euclid(rate)));
    }
}

/// `value` in units of 1/`from` s converted to units of 1/`to` s, rounded down.
fn rescale(value: i64, from: u32, to: u32) -> i64 {
    let scaled = (i128::from(value) * i128::from(to)).div_euclid(i128::from(from.max(1)));
    scaled.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

// ---------------------------------------------------------------------------------------------
// PCM: decoded frames converted to planar f32 at 48 kHz, queued until an encoder frame is full.

/// Planar f32 samples at 48 kHz and the input time of the first one.
struct PcmQueue {
    planes: Vec<Vec<f32>>,
    pts: i64,
}

impl PcmQueue {
    fn new(channels: usize) -> Self {
        PcmQueue { planes: vec![Vec::new(); channels], pts: 0 }
    }

    fn len(&self) -> usize {
        self.planes[0].len()
    }

    /// Starts the timeline over at `pts` (the queue is empty then).
    fn restart(&mut self, pts: i64) {
        debug_assert_eq!(self.len(), 0);
        self.pts = pts;
    }

    fn push_silence(&mut self, samples: usize) {
        for plane in &mut self.planes {
            plane.resize(plane.len() + samples, 0.0);
        }
    }

    /// Takes the first `samples` (fewer if the queue holds fewer) and their pts.
    fn take(&mut self, samples: usize) -> (Vec<Vec<f32>>, i64) {
        let n = samples.min(self.len());
        let taken = self.planes.iter_mut().map(|plane| plane.drain(..n).collect()).collect();
        let pts = self.pts;
        self.pts += n as i64;
        (taken, pts)
    }
}

/// Turns decoded frames into the queue's planar f32 48 kHz layout: a copy when they already are,
/// else through swresample (set up on the first frame that needs it, again if the input changes).
struct Converter {
    layout: ChannelLayout,
    resampler: Option<resampling::Context>,
}

impl Converter {
    fn new(layout: ChannelLayout) -> Self {
        Converter { layout, resampler: None }
    }

    fn convert(&mut self, input: &mut frame::Audio, queue: &mut PcmQueue) -> Result<(), AudioError> {
        let channels = queue.planes.len();
        if input.samples() * usize::from(input.channels()) > MAX_FRAME_SAMPLES {
            return Err(AudioError::Decode(format!("a decoded frame of {} samples", input.samples())));
        }
        if input.format() == Sample::F32(SampleType::Planar)
            && input.rate() == OUTPUT_RATE
            && usize::from(input.channels()) == channels
        {
            append(input, queue);
            return Ok(());
        }
        if input.rate() == 0 || input.channels() == 0 {
            return Err(AudioError::Decode("a decoded frame without rate or channels".into()));
        }
        if input.channel_layout().is_empty() || input.channel_layout().channels() != i32::from(input.channels()) {
            input.set_channel_layout(ChannelLayout::default(i32::from(input.channels())));
        }
        let wanted = (input.format(), input.channel_layout(), input.rate());
        let current = self.resampler.as_ref().map(|r| {
            let i = r.input();
            (i.format, i.channel_layout, i.rate)
        });
        if current != Some(wanted) {
            let resampler = resampling::Context::get(
                wanted.0,
                wanted.1,
                wanted.2,
                Sample::F32(SampleType::Planar),
                self.layout,
                OUTPUT_RATE,
            )
            .map_err(|e| AudioError::Resample(format!("{wanted:?} to 48 kHz: {e}")))?;
            self.resampler = Some(resampler);
        }
        let Some(resampler) = self.resampler.as_mut() else { return Ok(()) };
        // Room for the whole input at the output rate plus what the filter holds back.
        let capacity = rescale(input.samples() as i64, input.rate(), OUTPUT_RATE) as usize + 512;
        let mut output = frame::Audio::new(Sample::F32(SampleType::Planar), capacity, self.layout);
        resampler.run(input, &mut output).map_err(|e| AudioError::Resample(e.to_string()))?;
        append(&output, queue);
        Ok(())
    }

    /// Moves what swresample holds back into the queue (end of stream).
    fn drain(&mut self, queue: &mut PcmQueue) -> Result<(), AudioError> {
        let Some(resampler) = self.resampler.as_mut() else { return Ok(()) };
        let mut output = frame::Audio::new(Sample::F32(SampleType::Planar), 4096, self.layout);
        resampler.flush(&mut output).map_err(|e| AudioError::Resample(e.to_string()))?;
        append(&output, queue);
        Ok(())
    }
}

/// Appends a planar f32 frame of the queue's channel count.
fn append(frame: &frame::Audio, queue: &mut PcmQueue) {
    let samples = frame.samples();
    for (index, plane) in queue.planes.iter_mut().enumerate() {
        plane.extend_from_slice(&frame.plane::<f32>(index)[..samples]);
    }
}

// ---------------------------------------------------------------------------------------------
// FFmpeg codecs

fn check_bitrate(bitrate: u32) -> Result<(), AudioError> {
    if (6_000..=512_000).contains(&bitrate) {
        Ok(())
    } else {
        Err(AudioError::Config(format!("bit rate {bitrate} (6000..=512000 bit/s)")))
    }
}

/// Opens FFmpeg's decoder `name` with `extradata` (an OpusHead or an AudioSpecificConfig).
fn open_decoder(name: &str, extradata: &[u8]) -> Result<decoder::Audio, AudioError> {
    let codec =
        decoder::find_by_name(name).ok_or_else(|| AudioError::Config(format!("FFmpeg has no {name} decoder")))?;
    let mut context = codec::Context::new_with_codec(codec);
    if !ffi::set_extradata(&mut context, extradata) {
        return Err(AudioError::Config(format!("could not hand the {name} decoder its configuration")));
    }
    let mut decoder = context.decoder();
    decoder.set_packet_time_base(Rational::new(1, OUTPUT_RATE as i32));
    decoder.audio().map_err(|e| AudioError::Config(format!("opening the {name} decoder: {e}")))
}

/// Decodes one packet into the frames it completes.
fn decode(decoder: &mut decoder::Audio, data: &[u8]) -> Result<Vec<frame::Audio>, AudioError> {
    let packet = Packet::copy(data);
    decoder.send_packet(&packet).map_err(|e| AudioError::Decode(e.to_string()))?;
    let mut frames = Vec::new();
    loop {
        let mut frame = frame::Audio::empty();
        match decoder.receive_frame(&mut frame) {
            Ok(()) => frames.push(frame),
            Err(ffmpeg_next::Error::Other { errno: ffmpeg_next::util::error::EAGAIN }) => break,
            Err(ffmpeg_next::Error::Eof) => break,
            Err(e) => return Err(AudioError::Decode(e.to_string())),
        }
    }
    Ok(frames)
}

/// An opened audio encoder that takes frames of exactly `frame_size` samples from a [`PcmQueue`].
struct FrameEncoder {
    encoder: encoder::audio::Encoder,
    format: Sample,
    layout: ChannelLayout,
    frame_size: usize,
    /// Its pts shift (`initial_padding`), added back to the packets' pts.
    delay: i64,
    flushed: bool,
}

impl FrameEncoder {
    fn open(
        name: &str,
        format: Sample,
        layout: ChannelLayout,
        bitrate: u32,
        frame_size: usize,
    ) -> Result<Self, AudioError> {
        let codec =
            encoder::find_by_name(name).ok_or_else(|| AudioError::Config(format!("FFmpeg has no {name} encoder")))?;
        let context = codec::Context::new_with_codec(codec);
        let mut audio = context.encoder().audio().map_err(|e| AudioError::Config(format!("{name}: {e}")))?;
        audio.set_rate(OUTPUT_RATE as i32);
        audio.set_format(format);
        audio.set_channel_layout(layout);
        audio.set_channels(layout.channels());
        audio.set_bit_rate(bitrate as usize);
        audio.set_time_base(Rational::new(1, OUTPUT_RATE as i32));
        // The AudioSpecificConfig goes into the init segment, not in front of every frame.
        audio.set_flags(codec::Flags::GLOBAL_HEADER);
        let mut options = Dictionary::new();
        if name == "libopus" {
            options.set("frame_duration", "20");
            options.set("application", "audio");
        } else {
            options.set("profile", "aac_low");
        }
        let encoder =
            audio.open_as_with(codec, options).map_err(|e| AudioError::Config(format!("opening {name}: {e}")))?;
        if encoder.frame_size() as usize != frame_size {
            return Err(AudioError::Config(format!("{name} wants frames of {} samples", encoder.frame_size())));
        }
        let delay = ffi::initial_padding(&encoder);
        Ok(FrameEncoder { encoder, format, layout, frame_size, delay, flushed: false })
    }

    fn encode_whole_frames(&mut self, queue: &mut PcmQueue, out: &mut Vec<AudioFrame>) -> Result<(), AudioError> {
        while queue.len() >= self.frame_size {
            let (planes, pts) = queue.take(self.frame_size);
            self.send(&planes, pts, self.frame_size)?;
            self.receive(out)?;
        }
        Ok(())
    }

    /// Encodes what is queued, completed with silence to a whole frame (before a jump in time).
    fn pad_and_encode(&mut self, queue: &mut PcmQueue, out: &mut Vec<AudioFrame>) -> Result<(), AudioError> {
        let partial = queue.len() % self.frame_size;
        if partial > 0 {
            queue.push_silence(self.frame_size - partial);
        }
        self.encode_whole_frames(queue, out)
    }

    /// End of stream: the last partial frame as a short frame, then everything the encoder holds.
    fn finish(&mut self, queue: &mut PcmQueue, out: &mut Vec<AudioFrame>) -> Result<(), AudioError> {
        if self.flushed {
            return Ok(());
        }
        self.encode_whole_frames(queue, out)?;
        if queue.len() > 0 {
            let samples = queue.len();
            let (planes, pts) = queue.take(samples);
            self.send(&planes, pts, samples)?;
            self.receive(out)?;
        }
        self.flushed = true;
        self.encoder.send_eof().map_err(|e| AudioError::Encode(e.to_string()))?;
        self.receive(out)
    }

    fn send(&mut self, planes: &[Vec<f32>], pts: i64, samples: usize) -> Result<(), AudioError> {
        let mut frame = frame::Audio::new(self.format, samples, self.layout);
        frame.set_rate(OUTPUT_RATE);
        frame.set_pts(Some(pts));
        if self.format.is_planar() {
            for (index, plane) in planes.iter().enumerate() {
                frame.plane_mut::<f32>(index)[..samples].copy_from_slice(&plane[..samples]);
            }
        } else {
            let interleaved = frame.plane_mut::<f32>(0);
            for (index, plane) in planes.iter().enumerate() {
                for (i, sample) in plane[..samples].iter().enumerate() {
                    interleaved[i * planes.len() + index] = *sample;
                }
            }
        }
        self.encoder.send_frame(&frame).map_err(|e| AudioError::Encode(e.to_string()))
    }

    fn receive(&mut self, out: &mut Vec<AudioFrame>) -> Result<(), AudioError> {
        loop {
            let mut packet = Packet::empty();
            match self.encoder.receive_packet(&mut packet) {
                Ok(()) => {
                    let Some(data) = packet.data() else { continue };
                    let duration =
                        if packet.duration() > 0 { packet.duration() as u32 } else { self.frame_size as u32 };
                    let pts = packet.pts().unwrap_or(0) + self.delay;
                    out.push(AudioFrame { data: Bytes::copy_from_slice(data), pts, duration });
                }
                Err(ffmpeg_next::Error::Other { errno: ffmpeg_next::util::error::EAGAIN }) => return Ok(()),
                Err(ffmpeg_next::Error::Eof) => return Ok(()),
                Err(e) => return Err(AudioError::Encode(e.to_string())),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pure helpers

/// The 19-byte OpusHead (RFC 7845 5.1) the decoder takes as extradata: `channels`, no pre-skip
/// (RTP timestamps are the timeline), 48 kHz, no gain, mapping family 0.
fn opus_head(channels: u8) -> [u8; 19] {
    let mut head = [0u8; 19];
    head[..8].copy_from_slice(b"OpusHead");
    head[8] = 1;
    head[9] = channels;
    head[12..16].copy_from_slice(&OUTPUT_RATE.to_le_bytes());
    head
}

/// The 2-byte AudioSpecificConfig of AAC-LC at `rate` (one of the indexed rates) with
/// `channels` (1..=7 as channel configuration).
fn aac_lc_audio_specific_config(rate: u32, channels: u8) -> [u8; 2] {
    const RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];
    let index = RATES.iter().position(|&r| r == rate).unwrap_or(3) as u8;
    const AAC_LC: u8 = 2;
    [(AAC_LC << 3) | (index >> 1), ((index & 1) << 7) | ((channels & 0x0f) << 3)]
}

/// Samples (at 48 kHz) in an Opus packet by its table of contents (RFC 6716 3.1), or why it is
/// not a valid one.
fn opus_packet_samples(packet: &[u8]) -> Result<u32, &'static str> {
    let toc = *packet.first().ok_or("empty")?;
    let config = toc >> 3;
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => {
            let count = packet.get(1).ok_or("code 3 packet without a frame count")? & 0x3f;
            if count == 0 {
                return Err("code 3 packet with zero frames");
            }
            u32::from(count)
        }
    };
    let samples = frame * frames;
    if samples > 5760 {
        return Err("more than 120 ms of audio");
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_specific_configs_of_aac_lc() {
        assert_eq!(aac_lc_audio_specific_config(48000, 2), [0x11, 0x90]);
        assert_eq!(aac_lc_audio_specific_config(48000, 1), [0x11, 0x88]);
        assert_eq!(aac_lc_audio_specific_config(44100, 2), [0x12, 0x10]);
        let parsed = AacConfig::parse(&Bytes::copy_from_slice(&aac_lc_audio_specific_config(48000, 1))).unwrap();
        assert_eq!((parsed.object_type, parsed.sample_rate, parsed.channels), (2, 48000, 1));
    }

    #[test]
    fn our_audio_specific_config_is_what_the_encoder_writes() {
        for channels in [1, 2] {
            let t = OpusToAac::new(channels, 96_000).unwrap();
            // FFmpeg adds the backward-compatible "no SBR" extension after the two bytes.
            let written = ffi::extradata(&t.encoder.encoder);
            assert!(written.starts_with(&t.audio_specific_config()), "{channels} channels: {written:02x?}");
            assert_eq!(t.encoder_delay(), 1024);
        }
    }

    #[test]
    fn opus_heads() {
        let head = opus_head(2);
        assert_eq!(&head[..8], b"OpusHead");
        assert_eq!((head[8], head[9]), (1, 2));
        assert_eq!(u32::from_le_bytes(head[12..16].try_into().unwrap()), 48000);
        assert_eq!(head[18], 0);
    }

    #[test]
    fn opus_tables_of_contents() {
        // CELT fullband 20 ms, one frame (what browsers send).
        assert_eq!(opus_packet_samples(&[0xfc, 0x00]), Ok(960));
        // SILK 60 ms, two frames.
        assert_eq!(opus_packet_samples(&[(3 << 3) | 1]), Ok(5760));
        // Hybrid 10 ms, code 3 with 6 frames.
        assert_eq!(opus_packet_samples(&[(12 << 3) | 3, 6]), Ok(2880));
        assert!(opus_packet_samples(&[]).is_err());
        assert!(opus_packet_samples(&[(31 << 3) | 3]).is_err());
        assert!(opus_packet_samples(&[(31 << 3) | 3, 0]).is_err());
        // 49 frames of 2.5 ms: over 120 ms.
        assert!(opus_packet_samples(&[(16 << 3) | 3, 49]).is_err());
    }

    #[test]
    fn timeline_steps() {
        let mut t = Timeline::new(0);
        assert_eq!(t.step(1000), Step::Start);
        t.advance(1000, 960, 48000);
        assert_eq!(t.step(1960), Step::Contiguous);
        assert_eq!(t.step(1959), Step::Drop);
        assert_eq!(t.step(1000), Step::Drop);
        assert_eq!(t.step(2920), Step::Fill(960));
        assert_eq!(t.step(1960 + MAX_FILLED_GAP), Step::Fill(MAX_FILLED_GAP));
        assert_eq!(t.step(1961 + MAX_FILLED_GAP), Step::Jump);
        assert_eq!(t.step(i64::MAX), Step::Jump);
        assert_eq!(t.step(i64::MIN), Step::Drop);
        t.advance(2920, 960, 48000);
        assert_eq!(t.step(3880), Step::Contiguous);
    }

    #[test]
    fn a_tolerant_timeline_chains_on_expected_times() {
        // 44.1 kHz frames in a millisecond timescale: each pts rounds differently.
        let mut t = Timeline::new(AAC_PTS_TOLERANCE);
        let mut pts_ms = 0.0f64;
        let step_ms = 1024.0 * 1000.0 / 44100.0;
        for i in 0..1000 {
            let pts = rescale(pts_ms.round() as i64, 1000, 48000);
            let step = t.step(pts);
            assert!(matches!(step, Step::Start | Step::Contiguous), "frame {i}: {step:?}");
            t.advance(pts, 1024, 44100);
            pts_ms += step_ms;
        }
        // A frame lost: 23 ms of silence.
        let pts = rescale((pts_ms + step_ms).round() as i64, 1000, 48000);
        assert!(matches!(t.step(pts), Step::Fill(n) if (1000..1200).contains(&n)));
    }

    #[test]
    fn rescaling_rounds_down_and_saturates() {
        assert_eq!(rescale(44100, 44100, 48000), 48000);
        assert_eq!(rescale(1, 90000, 48000), 0);
        assert_eq!(rescale(-1, 90000, 48000), -1);
        assert_eq!(rescale(i64::MAX, 1, 48000), i64::MAX);
    }

    #[test]
    fn transcoders_are_send() {
        fn send<T: Send>() {}
        send::<OpusToAac>();
        send::<AacToOpus>();
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert!(matches!(OpusToAac::new(0, 96_000), Err(AudioError::Config(_))));
        assert!(matches!(OpusToAac::new(3, 96_000), Err(AudioError::Config(_))));
        assert!(matches!(OpusToAac::new(2, 0), Err(AudioError::Config(_))));
        assert!(matches!(AacToOpus::new(&[], 96_000), Err(AudioError::Config(_))));
        assert!(matches!(AacToOpus::new(&[0x17, 0x90], 96_000), Err(AudioError::Config(_))));
        // AAC Main (object type 1).
        assert!(matches!(AacToOpus::new(&[0x09, 0x90], 96_000), Err(AudioError::Config(_))));
        assert!(matches!(AacToOpus::new(&[0u8; 65], 96_000), Err(AudioError::TooLarge { .. })));
    }
}
