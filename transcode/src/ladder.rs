//! The ladder of one publish: a decode thread and one encode thread per rung, fed by the ingest
//! through bounded queues.
//!
//! ```text
//! Publish (tokio task) ── try_send ──▶ [input queue, bounded] ──▶ decode thread: H.264 decode once,
//!   never blocks: a full queue loses       │ Arc<frame> to each rung in the ladder  degrade policy,
//!   samples, and every rung restarts       ▼ (bounded, blocking)                     lag metric
//!   aligned at a later segment       rung thread ×N: swscale, libx264 (IDR where the source has a
//!                                    keyframe), AVCC ──▶ LiveFeed::push_video into rendition N;
//!                                    the source's AAC samples ──▶ LiveFeed::push_audio
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use ffmpeg_next::codec::{decoder, encoder, packet};
use ffmpeg_next::software::scaling;
use ffmpeg_next::util::frame;
use ffmpeg_next::{picture, Packet};
use media::clock::{now_millis, UnixMillis};
use media::cmaf::{Sample, VideoConfig, VIDEO_TIMESCALE};
use media::codec::h264;
use media::hls::Pushed;
use media::ingest::{Ladder, LadderRendition, LadderRun, LadderSource};
use media::origin::{LiveFeed, OriginError};

use crate::align::{Decision, DegradePolicy, Degrader, OutputTimer};
use crate::codec::{open_decoder, open_encoder, EncoderKind, HardwareProbe};
use crate::metrics::TranscodeMetrics;
use crate::spec::{LadderSpec, PlannedRung};
use crate::{ffi, init};

/// Samples waiting for the decode thread (~10 s of 30 fps video with 48 kHz audio).
const INPUT_QUEUE: usize = 1024;
/// Decoded frames waiting for one rung's encoder.
const RUNG_QUEUE: usize = 4;
/// Audio held by a rung until its first video sample opens its window.
const MAX_HELD_AUDIO: usize = 512;
/// `BANDWIDTH` share assumed for the passed-through audio before it is measured.
const AUDIO_BITRATE: u64 = 128_000;

/// The transcoder the ingest calls for each publish ([`Ladder`]): the configured rungs, the
/// encoder chosen at start, and the metrics.
pub struct TranscodeLadder {
    spec: LadderSpec,
    kind: EncoderKind,
    metrics: TranscodeMetrics,
    offline: bool,
    policy: DegradePolicy,
}

impl fmt::Debug for TranscodeLadder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TranscodeLadder").field("spec", &self.spec.to_string()).field("kind", &self.kind).finish()
    }
}

impl TranscodeLadder {
    /// A ladder of `spec`, encoding with the encoder `hardware` chose (libx264 if none).
    pub fn new(spec: LadderSpec, hardware: &HardwareProbe, metrics: TranscodeMetrics) -> Self {
        init();
        TranscodeLadder { spec, kind: hardware.chosen(), metrics, offline: false, policy: DegradePolicy::default() }
    }

    /// For input faster than real time (benchmarks, files): the ingest side blocks while the
    /// input queue is full instead of losing samples, and no rung is dropped for lag. Never for
    /// live ingest, where blocking would stall the source.
    pub fn offline(mut self) -> Self {
        self.offline = true;
        self
    }

    /// Other thresholds for dropping and readmitting rungs than the defaults.
    pub fn with_degrade_policy(mut self, policy: DegradePolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn spec(&self) -> &LadderSpec {
        &self.spec
    }

    pub fn encoder(&self) -> EncoderKind {
        self.kind
    }

    /// Opens the decoder and every rung's encoder for a `source` stream.
    fn prepare(&self, source: &LadderSource<'_>, plan: Vec<PlannedRung>) -> Result<Run, String> {
        let decoder = open_decoder(source.video)?;
        let mut rungs = Vec::with_capacity(plan.len());
        for rung in plan {
            let opened = match open_encoder(self.kind, &rung) {
                Err(error) if self.kind != EncoderKind::Software => {
                    tracing::warn!(rendition = %rung.name, %error, "hardware encoder failed; using libx264");
                    open_encoder(EncoderKind::Software, &rung).map(|(e, c)| (EncoderKind::Software, e, c))
                }
                other => other.map(|(e, c)| (self.kind, e, c)),
            };
            let (kind, encoder, config) = opened.map_err(|e| format!("rung {}: {e}", rung.name))?;
            rungs.push(RungSetup { rung, kind, encoder, config });
        }
        let audio = source.audio.map(|a| a.sample_rate);
        let renditions = rungs
            .iter()
            .map(|r| LadderRendition {
                name: r.rung.name.clone(),
                video: r.config.clone(),
                bitrate: u64::from(r.rung.kbps) * 1000 + if audio.is_some() { AUDIO_BITRATE } else { 0 },
            })
            .collect();
        Ok(Run {
            channel: source.channel_id.to_owned(),
            renditions,
            pending: Some((decoder, rungs)),
            input: None,
            seq: 0,
            lost: 0,
            audio_rate: audio,
            metrics: self.metrics.clone(),
            offline: self.offline,
            policy: self.policy,
        })
    }
}

impl Ladder for TranscodeLadder {
    fn start(&self, source: &LadderSource<'_>) -> Option<Box<dyn LadderRun>> {
        let (width, height) = (u32::from(source.video.width), u32::from(source.video.height));
        let plan = self.spec.plan(width, height);
        if plan.is_empty() {
            tracing::info!(channel = %source.channel_id, source = %format!("{width}x{height}"), ladder = %self.spec,
                "no rung at or below the source height; passthrough only");
            return None;
        }
        let names: Vec<_> = plan.iter().map(|r| format!("{}:{}x{}@{}k", r.name, r.width, r.height, r.kbps)).collect();
        match self.prepare(source, plan) {
            Ok(run) => {
                tracing::info!(channel = %source.channel_id, source = %format!("{width}x{height}"),
                    encoder = self.kind.codec_name(), rungs = %names.join(","), "transcode ladder started");
                Some(Box::new(run))
            }
            Err(error) => {
                tracing::warn!(channel = %source.channel_id, %error, "transcode unavailable; passthrough only");
                None
            }
        }
    }
}

struct RungSetup {
    rung: PlannedRung,
    kind: EncoderKind,
    encoder: encoder::video::Encoder,
    config: VideoConfig,
}

/// What the ingest sends the decode thread. `seq` numbers every sample offered, so the thread
/// sees when the queue was full and some were lost.
enum Input {
    Video { seq: u64, sample: Sample, now: UnixMillis, segment_start: Option<u64> },
    Audio { seq: u64, sample: Sample, now: UnixMillis },
}

/// One publish's ladder, as the ingest holds it.
struct Run {
    channel: String,
    renditions: Vec<LadderRendition>,
    /// Opened codecs, until `attach` moves them onto their threads.
    pending: Option<(decoder::Video, Vec<RungSetup>)>,
    input: Option<SyncSender<Input>>,
    seq: u64,
    lost: u64,
    audio_rate: Option<u32>,
    metrics: TranscodeMetrics,
    offline: bool,
    policy: DegradePolicy,
}

impl Run {
    fn offer(&mut self, input: Input) {
        let Some(tx) = &self.input else { return };
        if self.offline {
            if tx.send(input).is_err() {
                self.input = None;
            }
            return;
        }
        match tx.try_send(input) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.lost += 1;
                if self.lost.is_power_of_two() {
                    tracing::warn!(channel = %self.channel, lost = self.lost,
                        "transcode input queue full: samples lost, renditions will restart aligned");
                }
            }
            Err(TrySendError::Disconnected(_)) => self.input = None,
        }
    }
}

impl LadderRun for Run {
    fn renditions(&self) -> Vec<LadderRendition> {
        self.renditions.clone()
    }

    fn attach(&mut self, feed: LiveFeed) {
        let Some((decoder, rungs)) = self.pending.take() else { return };
        let mut links = Vec::with_capacity(rungs.len());
        for (i, setup) in rungs.into_iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel(RUNG_QUEUE);
            let shared = Arc::new(RungShared::default());
            let name = setup.rung.name.clone();
            let worker = RungWorker {
                channel: self.channel.clone(),
                index: i + 1,
                frames: self.metrics.frames.with_label_values(&[&self.channel, &name]),
                setup,
                feed: feed.clone(),
                shared: shared.clone(),
                audio_rate: self.audio_rate,
            };
            let spawned = thread::Builder::new().name(format!("transcode-{name}")).spawn(move || worker.run(rx));
            if let Err(error) = spawned {
                tracing::warn!(channel = %self.channel, %error, "cannot start a transcode thread; passthrough only");
                return;
            }
            links.push(RungLink { name, tx, shared, joined: true });
        }
        let (tx, rx) = mpsc::sync_channel(INPUT_QUEUE);
        let worker = DecodeWorker {
            channel: self.channel.clone(),
            decoder,
            degrader: Degrader::new(links.len(), 0, self.policy),
            links,
            metrics: self.metrics.clone(),
            started: Instant::now(),
            offline: self.offline,
        };
        match thread::Builder::new().name("transcode-decode".into()).spawn(move || worker.run(rx)) {
            Ok(_) => self.input = Some(tx),
            Err(error) => tracing::warn!(channel = %self.channel, %error, "cannot start the transcode decoder"),
        }
    }

    fn video(&mut self, sample: &Sample, now: UnixMillis, segment_start: Option<u64>) {
        let seq = self.seq;
        self.seq += 1;
        self.offer(Input::Video { seq, sample: sample.clone(), now, segment_start });
    }

    fn audio(&mut self, sample: &Sample, now: UnixMillis) {
        let seq = self.seq;
        self.seq += 1;
        self.offer(Input::Audio { seq, sample: sample.clone(), now });
    }
}

/// A decoded source frame, shared by every rung.
struct Decoded {
    frame: frame::Video,
    pts: i64,
    /// The wall clock the source sample was packaged with (program date-time follows it).
    now: UnixMillis,
    keyframe: bool,
    /// The source keyframe's presentation offset (see [`OutputTimer`]).
    pts_offset: i32,
}

enum RungMsg {
    Frame(Arc<Decoded>),
    Audio(Sample, UnixMillis),
    /// Stop encoding (the degrade policy dropped this rung); unlist the rendition.
    Pause,
    /// Start again, aligned: the next frame opens segment `msn` in the source.
    Rejoin(u64),
}

/// State a rung thread shares with the decode thread.
#[derive(Default)]
struct RungShared {
    /// Cleared by the decode thread to make the rung discard its queue at once.
    paused: AtomicBool,
    /// Milliseconds between the source sample and this rung's output of it, last frame.
    lag_ms: AtomicU64,
}

struct RungLink {
    name: String,
    tx: SyncSender<RungMsg>,
    shared: Arc<RungShared>,
    /// Frames go to this rung (it is not paused, or has rejoined).
    joined: bool,
}

struct FrameMeta {
    now: UnixMillis,
    keyframe: bool,
    pts_offset: i32,
    segment_start: Option<u64>,
}

struct DecodeWorker {
    channel: String,
    decoder: decoder::Video,
    degrader: Degrader,
    links: Vec<RungLink>,
    metrics: TranscodeMetrics,
    started: Instant,
    /// No degrade policy (input is not real time).
    offline: bool,
}

impl DecodeWorker {
    fn run(mut self, input: Receiver<Input>) {
        let mut meta: HashMap<i64, FrameMeta> = HashMap::new();
        let mut expected = 0;
        let mut need_keyframe = false;
        let mut readmit: Option<usize> = None;
        self.metrics.active_rungs.with_label_values(&[&self.channel]).set(self.links.len() as i64);
        while let Ok(msg) = input.recv() {
            let seq = match &msg {
                Input::Video { seq, .. } | Input::Audio { seq, .. } => *seq,
            };
            if seq != expected {
                // The ingest lost samples (full queue): every rung misses frames, so all stop
                // and rejoin later at a segment start, aligned again.
                let now_ms = self.clock_ms();
                for rung in self.degrader.drop_all(now_ms) {
                    self.pause(rung, "input queue overflowed");
                }
                self.decoder.flush();
                meta.clear();
                need_keyframe = true;
            }
            expected = seq + 1;
            match msg {
                Input::Audio { sample, now, .. } => {
                    for link in self.links.iter().filter(|l| l.joined) {
                        let _ = link.tx.send(RungMsg::Audio(sample.clone(), now));
                    }
                }
                Input::Video { sample, now, segment_start, .. } => {
                    if need_keyframe && !sample.keyframe {
                        continue;
                    }
                    need_keyframe = false;
                    let pts =
                        i64::try_from(sample.dts).unwrap_or(i64::MAX).saturating_add(i64::from(sample.pts_offset));
                    if meta.len() > 256 {
                        meta.clear(); // the decoder swallowed frames; don't grow without bound
                    }
                    meta.insert(
                        pts,
                        FrameMeta { now, keyframe: sample.keyframe, pts_offset: sample.pts_offset, segment_start },
                    );
                    let mut packet = Packet::copy(&sample.data);
                    packet.set_pts(Some(pts));
                    packet.set_dts(i64::try_from(sample.dts).ok());
                    if sample.keyframe {
                        packet.set_flags(packet::Flags::KEY);
                    }
                    if let Err(error) = self.decoder.send_packet(&packet) {
                        tracing::debug!(channel = %self.channel, %error, "frame not decoded");
                    }
                    self.drain(&mut meta, &mut readmit);
                }
            }
        }
        let _ = self.decoder.send_eof();
        self.drain(&mut meta, &mut readmit);
        let _ = self.metrics.lag_seconds.remove_label_values(&[&self.channel]);
        let _ = self.metrics.active_rungs.remove_label_values(&[&self.channel]);
        // Dropping the links ends the rung threads once they have flushed their encoders.
    }

    fn clock_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Hands every frame the decoder has ready to the joined rungs, applying the degrade policy.
    fn drain(&mut self, meta: &mut HashMap<i64, FrameMeta>, readmit: &mut Option<usize>) {
        loop {
            let mut decoded = frame::Video::empty();
            if self.decoder.receive_frame(&mut decoded).is_err() {
                return;
            }
            let Some(pts) = decoded.pts() else { continue };
            let Some(m) = meta.remove(&pts) else { continue };
            let decode_lag = u64::try_from(now_millis().saturating_sub(m.now)).unwrap_or(0);
            let rung_lag = self
                .links
                .iter()
                .filter(|l| l.joined)
                .map(|l| l.shared.lag_ms.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0);
            let lag = decode_lag.max(rung_lag);
            self.metrics.lag_seconds.with_label_values(&[&self.channel]).set(lag as f64 / 1000.0);
            let decision = if self.offline { Decision::Keep } else { self.degrader.observe(self.clock_ms(), lag) };
            match decision {
                Decision::Keep => {}
                Decision::Drop(rung) => {
                    let why = format!("ladder {lag} ms behind real time");
                    self.pause(rung, &why);
                    if readmit.as_ref() == Some(&rung) {
                        *readmit = None;
                    }
                }
                Decision::Readmit(rung) => *readmit = Some(rung),
            }
            if let (Some(rung), Some(msn)) = (*readmit, m.segment_start) {
                *readmit = None;
                self.rejoin(rung, msn);
            }
            let frame =
                Arc::new(Decoded { frame: decoded, pts, now: m.now, keyframe: m.keyframe, pts_offset: m.pts_offset });
            for link in self.links.iter().filter(|l| l.joined) {
                // Blocks while the rung is busy: a slow rung slows the ladder (and shows as lag),
                // never the source.
                let _ = link.tx.send(RungMsg::Frame(frame.clone()));
            }
        }
    }

    fn pause(&mut self, rung: usize, why: &str) {
        let Some(link) = self.links.get_mut(rung) else { return };
        if !link.joined {
            return;
        }
        link.joined = false;
        link.shared.paused.store(true, Ordering::Relaxed);
        link.shared.lag_ms.store(0, Ordering::Relaxed);
        let _ = link.tx.send(RungMsg::Pause);
        tracing::warn!(channel = %self.channel, rendition = %link.name, reason = why,
            "transcode falling behind: rendition dropped, the others stay live");
        self.metrics.degrade_events.with_label_values(&[&self.channel, "dropped"]).inc();
        self.metrics.active_rungs.with_label_values(&[&self.channel]).set(self.degrader.active_count() as i64);
    }

    fn rejoin(&mut self, rung: usize, msn: u64) {
        let Some(link) = self.links.get_mut(rung) else { return };
        link.joined = true;
        link.shared.paused.store(false, Ordering::Relaxed);
        let _ = link.tx.send(RungMsg::Rejoin(msn));
        tracing::info!(channel = %self.channel, rendition = %link.name, msn, "transcode keeping up again: rendition back");
        self.metrics.degrade_events.with_label_values(&[&self.channel, "readmitted"]).inc();
        self.metrics.active_rungs.with_label_values(&[&self.channel]).set(self.degrader.active_count() as i64);
    }
}

struct RungWorker {
    channel: String,
    /// Index of the rendition in the live stream (`source` is 0).
    index: usize,
    setup: RungSetup,
    feed: LiveFeed,
    shared: Arc<RungShared>,
    frames: prometheus::IntCounter,
    audio_rate: Option<u32>,
}

/// A rung thread's packaging state between frames.
#[derive(Default)]
struct RungState {
    timer: OutputTimer,
    /// A video sample went into the window since the (re)start: audio can follow.
    started: bool,
    paused: bool,
    held_audio: VecDeque<(Sample, UnixMillis)>,
    /// After a rejoin: audio before the first video sample belongs to the previous segment.
    rejoined: bool,
    audio_floor: Option<u64>,
    /// (pts, wall clock, source offset) of frames sent to the encoder, not yet out.
    in_flight: VecDeque<(i64, UnixMillis, i32)>,
    ended: bool,
}

impl RungWorker {
    fn run(mut self, rx: Receiver<RungMsg>) {
        let mut state = RungState::default();
        let mut scaler: Option<(ffmpeg_next::format::Pixel, u32, u32, scaling::Context)> = None;
        // Reused for every scaled picture (the encoders copy what they keep).
        let mut scaled = frame::Video::empty();
        for msg in rx.iter() {
            if state.ended {
                break;
            }
            match msg {
                RungMsg::Frame(decoded) => {
                    if state.paused || self.shared.paused.load(Ordering::Relaxed) {
                        continue;
                    }
                    let source = &decoded.frame;
                    let key = (source.format(), source.width(), source.height());
                    let rung = &self.setup.rung;
                    let same = key == (self.setup.kind.pixel_format(), rung.width, rung.height);
                    // A rung of the source's size and format encodes the decoded picture itself.
                    let mut reference = same.then(|| ffi::frame_ref(source)).flatten();
                    let picture = match reference.as_mut() {
                        Some(reference) => reference,
                        None => {
                            if scaler.as_ref().is_none_or(|(f, w, h, _)| (*f, *w, *h) != key) {
                                match scaling::Context::get(
                                    key.0,
                                    key.1,
                                    key.2,
                                    self.setup.kind.pixel_format(),
                                    rung.width,
                                    rung.height,
                                    scaling::Flags::BILINEAR,
                                ) {
                                    Ok(context) => scaler = Some((key.0, key.1, key.2, context)),
                                    Err(error) => {
                                        tracing::warn!(channel = %self.channel, %error, "cannot scale this source");
                                        continue;
                                    }
                                }
                            }
                            let Some((_, _, _, context)) = scaler.as_mut() else { continue };
                            if let Err(error) = context.run(source, &mut scaled) {
                                tracing::debug!(channel = %self.channel, %error, "frame not scaled");
                                continue;
                            }
                            &mut scaled
                        }
                    };
                    picture.set_pts(Some(decoded.pts));
                    picture.set_kind(if decoded.keyframe { picture::Type::I } else { picture::Type::None });
                    state.in_flight.push_back((decoded.pts, decoded.now, decoded.pts_offset));
                    if state.in_flight.len() > 64 {
                        state.in_flight.pop_front();
                    }
                    if let Err(error) = self.setup.encoder.send_frame(picture) {
                        tracing::debug!(channel = %self.channel, %error, "frame not encoded");
                        continue;
                    }
                    self.receive_packets(&mut state);
                }
                RungMsg::Audio(sample, now) => self.audio(&mut state, sample, now),
                RungMsg::Pause => {
                    state = RungState { paused: true, ..RungState::default() };
                    self.feed.set_listed(self.index, false);
                }
                RungMsg::Rejoin(msn) => {
                    state = RungState { rejoined: true, ..RungState::default() };
                    match self.feed.restart(self.index, msn) {
                        Ok(()) => self.feed.set_listed(self.index, true),
                        Err(error) => {
                            tracing::debug!(channel = %self.channel, %error, "rendition not restarted");
                            state.ended = true;
                        }
                    }
                }
            }
        }
        if !state.ended && !state.paused {
            let _ = self.setup.encoder.send_eof();
            self.receive_packets(&mut state);
            if let Some((sample, now)) = state.timer.finish() {
                self.push_video(&mut state, sample, now);
            }
        }
    }

    fn receive_packets(&mut self, state: &mut RungState) {
        let mut packet = Packet::empty();
        while self.setup.encoder.receive_packet(&mut packet).is_ok() {
            let Some(pts) = packet.pts() else { continue };
            while state.in_flight.front().is_some_and(|(p, _, _)| *p < pts) {
                state.in_flight.pop_front();
            }
            let Some((_, now, offset)) = state.in_flight.pop_front() else { continue };
            let data = h264::annexb_to_avcc(packet.data().unwrap_or_default());
            if let Some((sample, now)) = state.timer.push(pts, offset, packet.is_key(), data, now) {
                self.push_video(state, sample, now);
            }
        }
    }

    fn push_video(&self, state: &mut RungState, sample: Sample, now: UnixMillis) {
        let dts = sample.dts;
        match self.feed.push_video(self.index, sample, now) {
            Ok(Pushed::Dropped(_)) => {}
            Ok(_) => {
                self.frames.inc();
                let lag = u64::try_from(now_millis().saturating_sub(now)).unwrap_or(0);
                self.shared.lag_ms.store(lag, Ordering::Relaxed);
                if !state.started {
                    state.started = true;
                    if state.rejoined {
                        state.audio_floor = Some(dts);
                    }
                    let held: Vec<_> = state.held_audio.drain(..).collect();
                    for (sample, now) in held {
                        self.push_audio(state, sample, now);
                    }
                }
            }
            Err(OriginError::Ended { .. }) => state.ended = true,
            Err(error) => tracing::debug!(channel = %self.channel, %error, "rung sample dropped"),
        }
    }

    fn audio(&self, state: &mut RungState, sample: Sample, now: UnixMillis) {
        if state.paused {
            return;
        }
        if !state.started {
            if state.held_audio.len() >= MAX_HELD_AUDIO {
                state.held_audio.pop_front();
            }
            state.held_audio.push_back((sample, now));
            return;
        }
        self.push_audio(state, sample, now);
    }

    fn push_audio(&self, state: &mut RungState, sample: Sample, now: UnixMillis) {
        if let (Some(floor), Some(rate)) = (state.audio_floor, self.audio_rate) {
            let at = u128::from(sample.dts) * u128::from(VIDEO_TIMESCALE) / u128::from(rate.max(1));
            if at < u128::from(floor) {
                return;
            }
        }
        match self.feed.push_audio(self.index, sample, now) {
            Err(OriginError::Ended { .. }) => state.ended = true,
            Err(error) => tracing::debug!(channel = %self.channel, %error, "rung audio dropped"),
            Ok(_) => {}
        }
    }
}
