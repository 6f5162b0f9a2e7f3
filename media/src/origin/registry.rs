//! Which channels are live on this origin, their renditions' windows, and the wakers that blocked
//! requests wait on.
//!
//! The ingest side owns a [`LiveHandle`] per broadcast and pushes samples through it; the HTTP side
//! looks channels up by id and reads the same renditions. A rendition's packager sits behind a
//! plain mutex, held only for one push or one lookup (never across an `.await`), and a
//! `watch` channel per rendition carries its newest part so waiters wake without polling.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::Duration;

use crate::clock::UnixMillis;
use tokio::sync::watch;
use tokio::time::Instant;

use super::metrics::OriginMetrics;
use crate::cmaf::{Sample, VIDEO_TIMESCALE};
use crate::hls::{Latest, Pushed, Rendition, RenditionError, TrackKind};
use crate::ingest::{TapRun, TapSource, TrackTap};

/// Limits of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Channels held at once, live or recently ended. Opening one more evicts the oldest ended
    /// channel, or fails if all are live. Default 1024.
    pub max_channels: usize,
    /// How long an ended stream's window stays servable (players finishing the tail, the
    /// `EXT-X-ENDLIST` playlist). Default 30 s.
    pub ended_retention: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig { max_channels: 1024, ended_retention: Duration::from_secs(30) }
    }
}

impl RegistryConfig {
    /// Checks the settings, naming the bad one.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.max_channels == 0 {
            return Err("max_channels must be at least 1");
        }
        if self.ended_retention > Duration::from_secs(3600) {
            return Err("ended_retention must be at most one hour");
        }
        Ok(())
    }
}

/// One rendition handed to [`LiveRegistry::open`], with what the multivariant playlist advertises
/// until the window has measured it. `Rendition` converts into it with nothing configured.
#[derive(Debug)]
pub struct LiveRendition {
    pub rendition: Rendition,
    /// Configured peak bit rate (bits per second), for `BANDWIDTH` before the first segment is
    /// measured.
    pub bitrate: Option<u64>,
    /// Configured frame rate, for `FRAME-RATE`; measured from the video samples otherwise.
    pub frame_rate: Option<f64>,
}

impl LiveRendition {
    pub fn new(rendition: Rendition) -> Self {
        LiveRendition { rendition, bitrate: None, frame_rate: None }
    }

    pub fn with_bitrate(mut self, bits_per_second: u64) -> Self {
        self.bitrate = Some(bits_per_second);
        self
    }

    pub fn with_frame_rate(mut self, frames_per_second: f64) -> Self {
        self.frame_rate = Some(frames_per_second);
        self
    }
}

impl From<Rendition> for LiveRendition {
    fn from(rendition: Rendition) -> Self {
        LiveRendition::new(rendition)
    }
}

/// A segment a live rendition completed, with what a recorder needs to play it back alone.
#[derive(Debug, Clone)]
pub struct ClosedSegment {
    pub channel: Arc<str>,
    pub session: Arc<str>,
    pub rendition: Arc<str>,
    /// `CODECS=` of the rendition when the segment closed.
    pub codecs: String,
    /// Width and height of the video, if any.
    pub resolution: Option<(u16, u16)>,
    /// The header the segment names (`segment.init_id`).
    pub init: bytes::Bytes,
    pub segment: crate::hls::Segment,
}

/// Where complete segments go besides the live window: the recorder. Called outside the
/// packager's locks, in push order per rendition; must not block (hand the work to a task).
pub trait SegmentSink: Send + Sync + 'static {
    fn segment(&self, segment: ClosedSegment);
    /// The stream ended (finished, replaced or shut down) after its last segment was handed over.
    fn ended(&self, channel: &str, session: &str);
}

/// Why the registry refused an input. Each names the channel; none is worth retrying as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginError {
    #[error("channel {channel}: a live stream needs at least one rendition")]
    NoRenditions { channel: String },
    #[error("channel {channel}: rendition {rendition} listed twice")]
    DuplicateRendition { channel: String, rendition: String },
    /// Every slot holds a live channel; refuse the publish.
    #[error("channel {channel}: origin full ({max} channels live)")]
    TooManyChannels { channel: String, max: usize },
    #[error("channel {channel}: no rendition #{index}")]
    UnknownRendition { channel: String, index: usize },
    /// The stream was replaced by a newer session of the channel, or the origin shut down: the
    /// ingest driver should stop feeding this handle.
    #[error("channel {channel} session {session}: stream no longer live")]
    Ended { channel: String, session: String },
    /// The packager rejected the sample; the stream can go on with the next one.
    #[error("channel {channel}: {source}")]
    Rendition { channel: String, source: RenditionError },
}

/// What a rendition's watch channel carries: its newest part, and whether it has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Progress {
    pub(crate) latest: Option<Latest>,
    pub(crate) ended: bool,
}

/// A rendition's packager plus what the origin measures about it.
#[derive(Debug)]
pub(crate) struct RenditionState {
    pub(crate) rendition: Rendition,
    video_frames: u64,
    video_ticks: u64,
}

impl RenditionState {
    /// Average frame rate of the video pushed so far.
    pub(crate) fn measured_frame_rate(&self) -> Option<f64> {
        (self.video_ticks > 0).then(|| self.video_frames as f64 * f64::from(VIDEO_TIMESCALE) / self.video_ticks as f64)
    }
}

/// One rendition of a live channel.
#[derive(Debug)]
pub(crate) struct RenditionSlot {
    pub(crate) name: String,
    pub(crate) bitrate: Option<u64>,
    pub(crate) frame_rate: Option<f64>,
    /// Listed in the multivariant playlist (a transcoder unlists a rung it stopped feeding).
    listed: AtomicBool,
    state: Mutex<RenditionState>,
    progress: watch::Sender<Progress>,
    /// Where what this rendition accepts also goes (the relay, for nodes that package elsewhere).
    tap: Mutex<Option<SlotTap>>,
    /// The registry's own tap of `source` (WHEP viewers), beside `tap`.
    observer: Mutex<Option<SlotTap>>,
}

/// A rendition's tap; a newtype only so the slot stays `Debug`.
struct SlotTap(Box<dyn TapRun>);

impl std::fmt::Debug for SlotTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlotTap")
    }
}

impl RenditionSlot {
    /// The packager, locked. Hold it for one lookup or render, never across an `.await`.
    pub(crate) fn lock(&self) -> MutexGuard<'_, RenditionState> {
        // A panic while holding the lock is a bug already reported; the window itself stays
        // consistent between pushes, so keep serving it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A receiver that sees every publish after this call (the current value counts as seen).
    pub(crate) fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Whether the multivariant playlist lists this rendition.
    pub(crate) fn is_listed(&self) -> bool {
        self.listed.load(Ordering::Relaxed)
    }

    /// The newest part, without taking the packager lock (for rendition reports).
    pub(crate) fn latest(&self) -> Option<Latest> {
        self.progress.borrow().latest
    }
}

/// A live (or recently ended) stream of one channel: one session's renditions.
#[derive(Debug)]
pub(crate) struct LiveChannel {
    pub(crate) id: String,
    pub(crate) session: String,
    pub(crate) renditions: Vec<RenditionSlot>,
    ended_at: Mutex<Option<Instant>>,
    /// `bitriver_origin_forced_segment_cuts_total`.
    forced_cuts: prometheus::IntCounter,
    /// The recorder, if the node records.
    sink: Option<Arc<dyn SegmentSink>>,
}

impl std::fmt::Debug for dyn SegmentSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SegmentSink")
    }
}

impl LiveChannel {
    pub(crate) fn rendition(&self, name: &str) -> Option<&RenditionSlot> {
        self.renditions.iter().find(|r| r.name == name)
    }

    /// Rendition `index` of the stream, for the ingest side.
    fn slot(&self, index: usize) -> Result<&RenditionSlot, OriginError> {
        self.renditions.get(index).ok_or_else(|| OriginError::UnknownRendition { channel: self.id.clone(), index })
    }

    /// A packager's refusal as the ingest side sees it: a finished rendition means the stream ended.
    fn refused(&self, source: RenditionError) -> OriginError {
        match source {
            RenditionError::Finished { .. } => {
                OriginError::Ended { channel: self.id.clone(), session: self.session.clone() }
            }
            source => OriginError::Rendition { channel: self.id.clone(), source },
        }
    }

    /// The segment `state` completed since its newest was `before`, for the sink.
    fn closed_since(&self, slot: &RenditionSlot, state: &RenditionState, before: Option<u64>) -> Option<ClosedSegment> {
        self.sink.as_ref()?;
        let rendition = &state.rendition;
        let segment = rendition.newest_segment().filter(|s| Some(s.msn) != before)?;
        Some(ClosedSegment {
            channel: Arc::from(self.id.as_str()),
            session: Arc::from(self.session.as_str()),
            rendition: Arc::from(slot.name.as_str()),
            codecs: rendition.codecs(),
            resolution: rendition.video_config().map(|v| (v.width, v.height)),
            init: rendition.init_named(segment.init_id)?,
            segment: segment.clone(),
        })
    }

    fn record(&self, closed: Option<ClosedSegment>) {
        if let (Some(sink), Some(closed)) = (&self.sink, closed) {
            sink.segment(closed);
        }
    }

    fn ended_at(&self) -> Option<Instant> {
        *self.ended_at.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn expired(&self, retention: Duration, now: Instant) -> bool {
        self.ended_at().is_some_and(|at| now.saturating_duration_since(at) >= retention)
    }

    /// Finishes every rendition (publishing the tail) and wakes their waiters. Returns whether
    /// the stream was live until now.
    fn end(&self) -> bool {
        {
            let mut ended_at = self.ended_at.lock().unwrap_or_else(PoisonError::into_inner);
            if ended_at.is_some() {
                return false;
            }
            *ended_at = Some(Instant::now());
        }
        for slot in &self.renditions {
            let (latest, closed) = {
                let mut state = slot.lock();
                let before = state.rendition.newest_segment().map(|s| s.msn);
                if let Err(error) = state.rendition.finish() {
                    tracing::warn!(channel = %self.id, %error, "could not publish the last part");
                }
                (state.rendition.latest(), self.closed_since(slot, &state, before))
            };
            self.record(closed);
            slot.progress.send_replace(Progress { latest, ended: true });
            // The taps' tracks end with the stream (their subscribers are told).
            drop(slot.tap.lock().unwrap_or_else(PoisonError::into_inner).take());
            drop(slot.observer.lock().unwrap_or_else(PoisonError::into_inner).take());
        }
        if let Some(sink) = &self.sink {
            sink.ended(&self.id, &self.session);
        }
        true
    }
}

/// Channel id -> live stream. Cheap to clone (an `Arc` inside); one per node, shared by the ingest
/// driver (which calls [`LiveRegistry::open`]) and the origin router ([`super::routes`]).
#[derive(Debug, Clone)]
pub struct LiveRegistry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: RegistryConfig,
    metrics: OriginMetrics,
    channels: RwLock<HashMap<String, Arc<LiveChannel>>>,
    sink: RwLock<Option<Arc<dyn SegmentSink>>>,
    observer: RwLock<Option<Arc<dyn TrackTap>>>,
}

impl LiveRegistry {
    pub fn new(config: RegistryConfig, metrics: OriginMetrics) -> Self {
        let channels = RwLock::new(HashMap::new());
        LiveRegistry {
            inner: Arc::new(Inner { config, metrics, channels, sink: RwLock::new(None), observer: RwLock::new(None) }),
        }
    }

    /// Hands every sample the first rendition (`source`) of each stream opened from now on
    /// accepts to `tap` too (WHEP viewers): whatever feeds the stream, a local publish or a
    /// relayed one.
    pub fn set_observer(&self, tap: Arc<dyn TrackTap>) {
        *self.inner.observer.write().unwrap_or_else(PoisonError::into_inner) = Some(tap);
    }

    /// Hands every complete segment of the streams opened from now on to `sink` (the recorder).
    pub fn set_sink(&self, sink: Arc<dyn SegmentSink>) {
        *self.inner.sink.write().unwrap_or_else(PoisonError::into_inner) = Some(sink);
    }

    /// Starts serving a stream of `channel_id`: the ingest driver calls this once the publish is
    /// accepted, with one packager per rendition (all renditions of the ladder, `source` first
    /// by convention: the multivariant playlist lists them in this order). A previous stream of
    /// the channel is ended and replaced; its handle's pushes then fail with
    /// [`OriginError::Ended`].
    pub fn open<R: Into<LiveRendition>>(
        &self,
        channel_id: &str,
        session_id: &str,
        renditions: Vec<R>,
    ) -> Result<LiveHandle, OriginError> {
        let channel = channel_id.to_owned();
        if renditions.is_empty() {
            return Err(OriginError::NoRenditions { channel });
        }
        let mut slots: Vec<RenditionSlot> = Vec::with_capacity(renditions.len());
        for r in renditions {
            let LiveRendition { rendition, bitrate, frame_rate } = r.into();
            let name = rendition.name().to_owned();
            if slots.iter().any(|s| s.name == name) {
                return Err(OriginError::DuplicateRendition { channel, rendition: name });
            }
            let progress = watch::Sender::new(Progress { latest: rendition.latest(), ended: false });
            let state = Mutex::new(RenditionState { rendition, video_frames: 0, video_ticks: 0 });
            let listed = AtomicBool::new(true);
            let (tap, observer) = (Mutex::new(None), Mutex::new(None));
            slots.push(RenditionSlot { name, bitrate, frame_rate, listed, state, progress, tap, observer });
        }
        let observer = self.inner.observer.read().unwrap_or_else(PoisonError::into_inner).clone();
        if let (Some(observer), Some(slot)) = (observer, slots.first()) {
            let run = {
                let state = slot.lock();
                let rendition = &state.rendition;
                observer.start(&TapSource {
                    channel_id: &channel,
                    session_id,
                    rendition: &slot.name,
                    video: rendition.video_config(),
                    audio: rendition.audio_config(),
                    packaging: rendition.config(),
                })
            };
            *slot.observer.lock().unwrap_or_else(PoisonError::into_inner) = run.map(SlotTap);
        }
        let live = Arc::new(LiveChannel {
            id: channel.clone(),
            session: session_id.to_owned(),
            renditions: slots,
            ended_at: Mutex::new(None),
            forced_cuts: self.inner.metrics.forced_segment_cuts.clone(),
            sink: self.inner.sink.read().unwrap_or_else(PoisonError::into_inner).clone(),
        });

        let metrics = &self.inner.metrics;
        let mut channels = self.inner.channels.write().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let retention = self.inner.config.ended_retention;
        channels.retain(|_, c| !c.expired(retention, now));
        if !channels.contains_key(&channel) && channels.len() >= self.inner.config.max_channels {
            let oldest_ended = channels.iter().filter_map(|(id, c)| Some((c.ended_at()?, id))).min();
            match oldest_ended.map(|(_, id)| id.clone()) {
                Some(id) => {
                    channels.remove(&id);
                }
                None => return Err(OriginError::TooManyChannels { channel, max: self.inner.config.max_channels }),
            }
        }
        if let Some(previous) = channels.insert(channel.clone(), live.clone()) {
            if previous.end() {
                metrics.live_channels.dec();
                tracing::info!(channel = %channel, old_session = %previous.session, new_session = %session_id,
                    "live stream replaced by a new session");
            }
        }
        metrics.live_channels.inc();
        drop(channels);
        tracing::info!(channel = %channel, session = %session_id, renditions = live.renditions.len(), "live");
        Ok(LiveHandle { registry: self.clone(), channel: live })
    }

    /// Whether `channel_id` has a live (not ended) stream here.
    pub fn is_live(&self, channel_id: &str) -> bool {
        self.get(channel_id).is_some_and(|c| c.ended_at().is_none())
    }

    /// Session id of the channel's live or recently ended stream.
    pub fn session(&self, channel_id: &str) -> Option<String> {
        self.get(channel_id).map(|c| c.session.clone())
    }

    /// Ends the channel's live stream, if any: its publisher's next push fails with
    /// [`OriginError::Ended`] and the publish closes (the node lost the channel's ingest lease).
    pub fn end_channel(&self, channel_id: &str) {
        if let Some(channel) = self.get(channel_id) {
            self.end(&channel);
        }
    }

    /// Ends every live stream (waking all waiting requests, which answer at once), for graceful
    /// shutdown before the HTTP server drains.
    pub fn shutdown(&self) {
        let channels: Vec<_> = self.read().values().cloned().collect();
        for channel in channels {
            self.end(&channel);
        }
    }

    pub fn metrics(&self) -> &OriginMetrics {
        &self.inner.metrics
    }

    /// The channel's stream if it is live or ended less than `ended_retention` ago.
    pub(crate) fn get(&self, channel_id: &str) -> Option<Arc<LiveChannel>> {
        let channel = self.read().get(channel_id).cloned()?;
        (!channel.expired(self.inner.config.ended_retention, Instant::now())).then_some(channel)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<LiveChannel>>> {
        self.inner.channels.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends `channel`'s stream and drops it from the registry after the retention time. Lookups
    /// ignore expired streams anyway; the timer only gives the memory back sooner.
    fn end(&self, channel: &Arc<LiveChannel>) {
        if !channel.end() {
            return;
        }
        self.inner.metrics.live_channels.dec();
        tracing::info!(channel = %channel.id, session = %channel.session, "stream ended");
        // Handles may be dropped outside a runtime (tests, shutdown); then the next `open` sweeps.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let registry: Weak<Inner> = Arc::downgrade(&self.inner);
        let channel = Arc::downgrade(channel);
        let retention = self.inner.config.ended_retention;
        runtime.spawn(async move {
            tokio::time::sleep(retention).await;
            let (Some(inner), Some(channel)) = (registry.upgrade(), channel.upgrade()) else { return };
            let mut channels = inner.channels.write().unwrap_or_else(PoisonError::into_inner);
            if channels.get(&channel.id).is_some_and(|c| Arc::ptr_eq(c, &channel)) {
                channels.remove(&channel.id);
            }
        });
    }
}

/// The ingest side of one live stream. Push samples in decode order per track; finishing or
/// dropping the handle ends the stream (the window stays servable for `ended_retention`).
///
/// Methods take `&self`, so one handle can be shared (e.g. in an `Arc`) by tasks feeding
/// different renditions.
#[derive(Debug)]
pub struct LiveHandle {
    registry: LiveRegistry,
    channel: Arc<LiveChannel>,
}

impl LiveHandle {
    pub fn channel_id(&self) -> &str {
        &self.channel.id
    }

    pub fn session_id(&self) -> &str {
        &self.channel.session
    }

    /// Index of the rendition called `name`, for the push methods.
    pub fn rendition_index(&self, name: &str) -> Option<usize> {
        self.channel.renditions.iter().position(|r| r.name == name)
    }

    /// Media sequence number of the segment rendition `rendition` is building, if any.
    pub fn open_segment(&self, rendition: usize) -> Option<u64> {
        let slot = self.channel.renditions.get(rendition)?;
        let state = slot.lock();
        state.rendition.partial_segment().map(|p| p.msn)
    }

    /// Whether the stream is still live (not replaced, shut down or finished).
    pub fn is_live(&self) -> bool {
        self.channel.ended_at().is_none()
    }

    /// Adds a video sample (dts in 90 kHz ticks) to rendition `rendition` (its index in the list
    /// given to [`LiveRegistry::open`]). `now` is the ingest wall clock. Requests waiting for the
    /// part this publishes are woken before it returns.
    pub fn push_video(&self, rendition: usize, sample: Sample, now: UnixMillis) -> Result<Pushed, OriginError> {
        self.push_video_opening(rendition, sample, now).map(|(pushed, _)| pushed)
    }

    /// [`LiveHandle::push_video`] that also says which segment the sample opened, if it was a
    /// keyframe that did (what a transcoder aligns its rungs on).
    pub fn push_video_opening(
        &self,
        rendition: usize,
        sample: Sample,
        now: UnixMillis,
    ) -> Result<(Pushed, Option<u64>), OriginError> {
        push(&self.channel, rendition, TrackKind::Video, sample, now)
    }

    /// Adds an audio sample (dts in sample-rate ticks); see [`LiveHandle::push_video`].
    pub fn push_audio(&self, rendition: usize, sample: Sample, now: UnixMillis) -> Result<Pushed, OriginError> {
        push(&self.channel, rendition, TrackKind::Audio, sample, now).map(|(pushed, _)| pushed)
    }

    /// Ends the stream: publishes the last parts, playlists get `EXT-X-ENDLIST`, waiting requests
    /// are answered. Same as dropping the handle.
    pub fn finish(self) {
        drop(self);
    }

    /// A feeder of this stream's renditions for another thread (a transcoder): it pushes like the
    /// handle but does not own the stream, which still ends with the handle.
    pub fn feed(&self) -> LiveFeed {
        LiveFeed { channel: self.channel.clone() }
    }
}

/// Pushes into one live stream without owning it (see [`LiveHandle::feed`]). Once the stream has
/// ended, pushes fail with [`OriginError::Ended`].
#[derive(Debug, Clone)]
pub struct LiveFeed {
    channel: Arc<LiveChannel>,
}

impl LiveFeed {
    /// See [`LiveHandle::push_video`].
    pub fn push_video(&self, rendition: usize, sample: Sample, now: UnixMillis) -> Result<Pushed, OriginError> {
        push(&self.channel, rendition, TrackKind::Video, sample, now).map(|(pushed, _)| pushed)
    }

    /// See [`LiveHandle::push_audio`].
    pub fn push_audio(&self, rendition: usize, sample: Sample, now: UnixMillis) -> Result<Pushed, OriginError> {
        push(&self.channel, rendition, TrackKind::Audio, sample, now).map(|(pushed, _)| pushed)
    }

    pub fn is_live(&self) -> bool {
        self.channel.ended_at().is_none()
    }

    /// Sends every sample rendition `rendition` accepts from now on to `tap` too, in push order,
    /// with the wall clock it was pushed with and, for a keyframe that opened a segment, that
    /// segment's msn (what a remote packager needs to cut the same parts). Replaces (drops) an
    /// earlier tap; the tap is dropped when the stream is.
    pub fn set_tap(&self, rendition: usize, tap: Box<dyn TapRun>) {
        if let Some(slot) = self.channel.renditions.get(rendition) {
            *slot.tap.lock().unwrap_or_else(PoisonError::into_inner) = Some(SlotTap(tap));
        }
    }

    /// Lists or unlists rendition `rendition` in the multivariant playlist (its media playlist
    /// stays servable either way).
    pub fn set_listed(&self, rendition: usize, listed: bool) {
        if let Some(slot) = self.channel.renditions.get(rendition) {
            slot.listed.store(listed, Ordering::Relaxed);
        }
    }

    /// Continues rendition `rendition` with a new publish of the broadcast (see
    /// [`Rendition::resume`]): same window, one discontinuity, maybe a new header. Returns the
    /// msn the new publish's first segment gets.
    pub fn resume(
        &self,
        rendition: usize,
        video: Option<crate::cmaf::VideoConfig>,
        audio: Option<crate::cmaf::AudioConfig>,
    ) -> Result<u64, OriginError> {
        let slot = self.channel.slot(rendition)?;
        let (next, latest, closed) = {
            let mut state = slot.lock();
            let before = state.rendition.newest_segment().map(|s| s.msn);
            let next = state.rendition.resume(video, audio).map_err(|source| self.channel.refused(source))?;
            (next, state.rendition.latest(), self.channel.closed_since(slot, &state, before))
        };
        self.channel.record(closed);
        slot.progress.send_if_modified(|p| {
            let changed = p.latest != latest;
            p.latest = latest;
            changed
        });
        Ok(next)
    }

    /// Starts rendition `rendition` afresh at media sequence number `first_msn` (same settings
    /// and tracks, empty window): how a rendition that stopped being fed rejoins the others at a
    /// segment boundary without a gap in its numbering.
    pub fn restart(&self, rendition: usize, first_msn: u64) -> Result<(), OriginError> {
        let channel = &self.channel;
        let slot = channel.slot(rendition)?;
        // Segments are dated from the source's anchor (index 0), as the other renditions were.
        let anchor = if rendition == 0 { None } else { channel.renditions[0].lock().rendition.pdt_anchor() };
        let latest = {
            let mut state = slot.lock();
            let old = &state.rendition;
            if old.is_finished() {
                return Err(OriginError::Ended { channel: channel.id.clone(), session: channel.session.clone() });
            }
            let config = crate::hls::RenditionConfig { first_msn, ..old.config().clone() };
            let mut fresh = Rendition::new(config, old.video_config().cloned(), old.audio_config().cloned())
                .map_err(|source| OriginError::Rendition { channel: channel.id.clone(), source })?;
            fresh.set_pdt_anchor(anchor);
            *state = RenditionState { rendition: fresh, video_frames: 0, video_ticks: 0 };
            state.rendition.latest()
        };
        slot.progress.send_replace(Progress { latest, ended: false });
        Ok(())
    }
}

/// How the forced-cut warning names the limit (see [`crate::hls::Rendition::forced_cuts`]).
const MAX_SEGMENT_HINT: &str = "4 segment targets or 32 MiB";

/// Pushes one sample into rendition `index`: `(what the packager did, the msn of the segment the
/// sample opened if it is an accepted keyframe that opened one)`. Its tap, if any, gets the
/// accepted sample with the same.
fn push(
    channel: &LiveChannel,
    index: usize,
    track: TrackKind,
    sample: Sample,
    now: UnixMillis,
) -> Result<(Pushed, Option<u64>), OriginError> {
    let slot = channel.slot(index)?;
    let duration = u64::from(sample.duration);
    let keyframe = track == TrackKind::Video && sample.keyframe;
    let (result, opened, latest, forced, closed) = {
        let mut state = slot.lock();
        let newest_before = state.rendition.newest_segment().map(|s| s.msn);
        let mut tap = slot.tap.lock().unwrap_or_else(PoisonError::into_inner);
        let mut observer = slot.observer.lock().unwrap_or_else(PoisonError::into_inner);
        // The taps see what was accepted, in push order (the locks held): a copy of the sample
        // (its data is shared, not copied).
        let copy = (tap.is_some() || observer.is_some()).then(|| sample.clone());
        let open_segment = |state: &RenditionState| state.rendition.partial_segment().map(|p| p.msn);
        let opened_before = if keyframe { open_segment(&state) } else { None };
        let cuts_before = state.rendition.forced_cuts();
        let result = match track {
            TrackKind::Video => state.rendition.push_video(sample, now),
            TrackKind::Audio => state.rendition.push_audio(sample, now),
        };
        let forced = state.rendition.forced_cuts() > cuts_before;
        let accepted = matches!(result, Ok(Pushed::Buffered | Pushed::Published(_)));
        if track == TrackKind::Video && accepted {
            state.video_frames += 1;
            state.video_ticks = state.video_ticks.saturating_add(duration);
        }
        let opened =
            if keyframe && accepted { open_segment(&state).filter(|&msn| Some(msn) != opened_before) } else { None };
        if let (Some(copy), true) = (copy, accepted) {
            for SlotTap(tap) in tap.iter_mut().chain(observer.iter_mut()) {
                match track {
                    TrackKind::Video => tap.video(&copy, now, opened),
                    TrackKind::Audio => tap.audio(&copy, now),
                }
            }
        }
        drop(observer);
        drop(tap);
        // Not only `Published`: a keyframe that closes a segment whose last part was already
        // out publishes nothing new, yet completes the segment (and moves the preload hint),
        // which `_HLS_msn` requests and hinted-part requests are waiting for.
        let closed = channel.closed_since(slot, &state, newest_before);
        (result, opened, state.rendition.latest(), forced, closed)
    };
    channel.record(closed);
    if forced {
        channel.forced_cuts.inc();
        tracing::warn!(channel = %channel.id, rendition = %slot.name, limit = ?MAX_SEGMENT_HINT,
            "segment cut without a keyframe (the publisher sends none for too long; set a keyframe interval)");
    }
    let pushed = result.map_err(|source| channel.refused(source))?;
    if let Some(latest) = latest {
        // Outside the packager lock, so woken requests don't contend with us. Sends from
        // concurrent pushes (or `end`) may arrive out of order: only move forward.
        slot.progress.send_if_modified(|p| {
            let key = |l: Latest| (l.msn, l.part, l.segment_complete);
            let newer = !p.ended && p.latest.is_none_or(|old| key(latest) > key(old));
            if newer {
                p.latest = Some(latest);
            }
            newer
        });
    }
    Ok((pushed, opened))
}

impl Drop for LiveHandle {
    fn drop(&mut self) {
        self.registry.end(&self.channel);
    }
}
