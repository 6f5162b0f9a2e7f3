//! The tokio drivers of the relay: they move bytes between QUIC streams and the state machines
//! of [`crate::track`]; every decision is there or in the node.
//!
//! - Server ([`RelayHub`]): the ingest's [`TrackTap`]. One [`TrackCache`] per live channel; each
//!   subscriber has a bounded queue of encoded frames, and a subscriber that falls
//!   [`SUBSCRIBER_QUEUE`] frames behind is cut off (it re-subscribes and joins at the newest
//!   segment start) rather than holding memory for it. Streams of an authenticated connection
//!   arrive through [`RelayHub::serve_connection`]; the first frame must be a Subscribe within
//!   [`SUBSCRIBE_DEADLINE`] and [`crate::wire::MAX_CONTROL`] bytes.
//! - Subscriber ([`subscribe`]): one stream, frames into a [`Subscription`], events into the
//!   origin's [`LiveRegistry`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use media::clock::UnixMillis;
use media::cmaf::Sample;
use media::hls::Rendition;
use media::ingest::{TapRun, TapSource, TrackTap};
use media::origin::{LiveHandle, LiveRegistry};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::{mpsc, oneshot};

use crate::track::{Subscription, SubscriptionError, TrackCache, TrackEvent};
use crate::wire::{encode_to_bytes, Decoder, Frame, Packaging, WireError};

/// Encoded frames a subscriber may be behind before it is cut off (~15 s of 30 fps video with
/// 48 kHz audio).
pub const SUBSCRIBER_QUEUE: usize = 1024;
/// Subscribers of one channel at once (origins and transcoders of the region).
pub const MAX_SUBSCRIBERS: usize = 16;
/// Time from opening a stream to a complete Subscribe.
pub const SUBSCRIBE_DEADLINE: Duration = Duration::from_secs(5);
/// Time without a frame after which a subscription is given up (the publisher's node is gone
/// without closing; QUIC's idle timeout usually notices first).
pub const SILENCE: Duration = Duration::from_secs(10);
/// QUIC application error codes on relay streams.
pub mod code {
    pub const DONE: u32 = 0;
    pub const PROTOCOL: u32 = 1;
    pub const TOO_SLOW: u32 = 2;
    pub const FULL: u32 = 3;
}

/// Counters of the relay, on `/metrics`.
#[derive(Debug, Clone)]
pub struct RelayMetrics {
    /// `bitriver_relay_subscribers`: subscriptions served now.
    pub subscribers: IntGauge,
    /// `bitriver_relay_cut_subscribers_total`: subscribers cut off for falling behind.
    pub cut_subscribers: IntCounter,
    /// `bitriver_relay_subscriptions_total{outcome}`: subscriptions made by this node, by outcome.
    pub subscriptions: IntCounterVec,
    /// `bitriver_relay_diverged_total`: segment starts where a subscriber's packager disagreed
    /// with the publisher's (should stay 0).
    pub diverged: IntCounter,
    /// `bitriver_relay_bytes_total{direction}`: frame bytes sent and received.
    pub bytes: IntCounterVec,
    /// `bitriver_relay_unsent_frames_total`: frames of published tracks that had no subscriber,
    /// dropped without being encoded.
    pub unsent: IntCounter,
}

impl RelayMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self::unregistered()?;
        registry.register(Box::new(metrics.subscribers.clone()))?;
        registry.register(Box::new(metrics.cut_subscribers.clone()))?;
        registry.register(Box::new(metrics.subscriptions.clone()))?;
        registry.register(Box::new(metrics.diverged.clone()))?;
        registry.register(Box::new(metrics.bytes.clone()))?;
        registry.register(Box::new(metrics.unsent.clone()))?;
        Ok(metrics)
    }

    pub fn unregistered() -> prometheus::Result<Self> {
        Ok(RelayMetrics {
            subscribers: IntGauge::new("bitriver_relay_subscribers", "Relay subscriptions served now")?,
            cut_subscribers: IntCounter::new(
                "bitriver_relay_cut_subscribers_total",
                "Relay subscribers cut off for falling behind",
            )?,
            subscriptions: IntCounterVec::new(
                Opts::new("bitriver_relay_subscriptions_total", "Relay subscriptions made by this node, by outcome"),
                &["outcome"],
            )?,
            diverged: IntCounter::new(
                "bitriver_relay_diverged_total",
                "Segment starts where a subscriber's packager disagreed with the publisher's",
            )?,
            bytes: IntCounterVec::new(
                Opts::new("bitriver_relay_bytes_total", "Relay frame bytes, by direction"),
                &["direction"],
            )?,
            unsent: IntCounter::new(
                "bitriver_relay_unsent_frames_total",
                "Frames of published tracks without a subscriber, dropped unencoded",
            )?,
        })
    }
}

/// One published track and its subscribers.
#[derive(Debug)]
struct Published {
    session: String,
    cache: TrackCache,
    subscribers: Vec<mpsc::Sender<Bytes>>,
    /// Subscribers waiting for a complete join point: each gets its join frames through the
    /// oneshot, then the live frames through its queue.
    waiting: Vec<(oneshot::Sender<Vec<Bytes>>, mpsc::Sender<Bytes>)>,
}

impl Published {
    /// Sends what the cache has for the subscribers; cuts off the ones that fell behind; lets
    /// the waiting ones in once the cache has a join point.
    fn flush(&mut self, metrics: &RelayMetrics) {
        if self.subscribers.is_empty() {
            // Nobody to send to: the frames are not even encoded.
            let unsent = self.cache.discard_transmit();
            if unsent > 0 {
                metrics.unsent.inc_by(unsent as u64);
            }
        }
        while let Some(frame) = self.cache.poll_transmit() {
            metrics.bytes.with_label_values(&["sent"]).inc_by((frame.len() * self.subscribers.len()) as u64);
            self.subscribers.retain(|s| match s.try_send(frame.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics.cut_subscribers.inc();
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
        if !self.waiting.is_empty() && self.cache.can_join() {
            let join = self.cache.join();
            for (ready, queue) in self.waiting.drain(..) {
                if ready.send(join.clone()).is_ok() {
                    self.subscribers.push(queue);
                }
            }
        }
        self.cache.set_sending(!self.subscribers.is_empty());
    }
}

type Shared = Arc<Mutex<Published>>;

fn lock(p: &Shared) -> std::sync::MutexGuard<'_, Published> {
    p.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The server side: the tracks this node publishes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RelayHub {
    /// (channel, rendition) → its track.
    tracks: Arc<Mutex<HashMap<(String, String), Shared>>>,
    /// Whether another node may subscribe ([`RelayHub::set_replay_wanted`]).
    replay_wanted: Arc<AtomicBool>,
    metrics: RelayMetrics,
}

impl RelayHub {
    pub fn new(metrics: RelayMetrics) -> Self {
        RelayHub { tracks: Arc::default(), replay_wanted: Arc::new(AtomicBool::new(true)), metrics }
    }

    /// Whether tracks keep a replay for joiners (on at first). A node that knows no other node
    /// can subscribe turns it off: its tracks then skip holding every sample until the next
    /// keyframe segment. Turned on again, running tracks offer a join point from their second
    /// keyframe segment on; a subscriber to a track without one waits for it.
    pub fn set_replay_wanted(&self, wanted: bool) {
        self.replay_wanted.store(wanted, Ordering::Relaxed);
    }

    pub fn replay_wanted(&self) -> bool {
        self.replay_wanted.load(Ordering::Relaxed)
    }

    /// Media bytes the track of `channel`'s `rendition` holds for joiners, if it is published here.
    pub fn replay_bytes(&self, channel: &str, rendition: &str) -> Option<usize> {
        let tracks = self.tracks.lock().unwrap_or_else(PoisonError::into_inner);
        let published = tracks.get(&(channel.to_owned(), rendition.to_owned()))?;
        let bytes = lock(published).cache.replay_bytes();
        Some(bytes)
    }

    pub fn metrics(&self) -> &RelayMetrics {
        &self.metrics
    }

    /// Channels published here now (any rendition).
    pub fn channels(&self) -> Vec<String> {
        let tracks = self.tracks.lock().unwrap_or_else(PoisonError::into_inner);
        let channels: std::collections::BTreeSet<String> = tracks.keys().map(|(c, _)| c.clone()).collect();
        channels.into_iter().collect()
    }

    /// Serves the relay streams of one authenticated, authorised connection until it closes.
    pub async fn serve_connection(self, conn: quinn::Connection) {
        while let Ok((send, recv)) = conn.accept_bi().await {
            let hub = self.clone();
            let peer = conn.remote_address();
            tokio::spawn(async move {
                if let Err(error) = hub.serve_stream(send, recv).await {
                    tracing::debug!(%peer, %error, "relay stream ended");
                }
            });
        }
    }

    async fn serve_stream(&self, mut send: quinn::SendStream, mut recv: quinn::RecvStream) -> Result<(), String> {
        let (channel, rendition) = match tokio::time::timeout(SUBSCRIBE_DEADLINE, read_subscribe(&mut recv)).await {
            Ok(Ok(subscribe)) => subscribe,
            Ok(Err(error)) => {
                let _ = send.reset(code::PROTOCOL.into());
                return Err(error);
            }
            Err(_) => {
                let _ = send.reset(code::PROTOCOL.into());
                return Err("no subscribe within the deadline".into());
            }
        };
        let key = (channel.clone(), rendition.clone());
        let published = self.tracks.lock().unwrap_or_else(PoisonError::into_inner).get(&key).cloned();
        let refuse = |reason: &str| encode_to_bytes(&Frame::Refused { reason: reason.to_owned() });
        let Some(published) = published else {
            send.write_all(&refuse("not published here")).await.map_err(|e| e.to_string())?;
            let _ = send.finish();
            return Ok(());
        };
        let (tx, mut rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let (ready, join) = oneshot::channel();
        let session = {
            let mut p = lock(&published);
            if p.subscribers.len() + p.waiting.len() >= MAX_SUBSCRIBERS {
                None
            } else {
                // A subscriber shows the track is wanted elsewhere, whatever the hub was told.
                p.cache.keep_replay();
                // Under the lock: nothing published between the join frames and the live ones.
                p.waiting.push((ready, tx));
                p.flush(&self.metrics);
                Some(p.session.clone())
            }
        };
        let Some(session) = session else {
            send.write_all(&refuse("too many subscribers")).await.map_err(|e| e.to_string())?;
            let _ = send.finish();
            return Ok(());
        };
        // Until the cache has a join point (a replay kept only from now waits for its second
        // keyframe segment); a subscriber that goes away meanwhile stops the wait.
        let join = tokio::select! {
            join = join => join.map_err(|_| "the track ended".to_owned())?,
            _ = send.stopped() => return Err("the subscriber went away before joining".into()),
        };
        self.metrics.subscribers.inc();
        tracing::info!(%channel, %rendition, %session, "relay subscriber joined");
        let result = async {
            for frame in join {
                send.write_all(&frame).await.map_err(|e| e.to_string())?;
            }
            while let Some(frame) = rx.recv().await {
                send.write_all(&frame).await.map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        }
        .await;
        self.metrics.subscribers.dec();
        // The queue closed: the track ended (End was the last frame), or we cut it off.
        let ended = lock(&published).cache.is_ended();
        if ended {
            let _ = send.finish();
        } else {
            let _ = send.reset(code::TOO_SLOW.into());
        }
        result
    }
}

/// Reads the one Subscribe of a stream, within the control frame size.
async fn read_subscribe(recv: &mut quinn::RecvStream) -> Result<(String, String), String> {
    let mut decoder = Decoder::for_server();
    let mut buf = [0u8; 256];
    loop {
        match decoder.poll_frame() {
            Ok(Some(Frame::Subscribe { channel, rendition })) => return Ok((channel, rendition)),
            Ok(Some(_)) => return Err("expected subscribe".into()),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        let n = decoder.wants().min(buf.len());
        match recv.read(&mut buf[..n]).await {
            Ok(Some(read)) => decoder.handle_data(&buf[..read]),
            Ok(None) => return Err("stream closed before subscribe".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

impl TrackTap for RelayHub {
    fn start(&self, source: &TapSource<'_>) -> Option<Box<dyn TapRun>> {
        let c = source.packaging;
        let packaging = Packaging {
            epoch_msn: c.first_msn,
            part_target_us: u32::try_from(c.part_target.as_micros()).unwrap_or(u32::MAX),
            segment_target_us: u32::try_from(c.segment_target.as_micros()).unwrap_or(u32::MAX),
            playlist_segments: u16::try_from(c.playlist_segments).unwrap_or(u16::MAX),
            max_part_bytes: u32::try_from(c.max_part_bytes).unwrap_or(u32::MAX),
        };
        let mut cache = TrackCache::new(source.session_id, packaging, source.video.cloned(), source.audio.cloned());
        if !self.replay_wanted() {
            cache = cache.without_replay();
        }
        let published = Arc::new(Mutex::new(Published {
            session: source.session_id.to_owned(),
            cache,
            subscribers: Vec::new(),
            waiting: Vec::new(),
        }));
        let key = (source.channel_id.to_owned(), source.rendition.to_owned());
        let previous =
            self.tracks.lock().unwrap_or_else(PoisonError::into_inner).insert(key.clone(), published.clone());
        if let Some(previous) = previous {
            // A new session replaces the old one: its subscribers see it end and re-subscribe.
            let mut p = lock(&previous);
            p.cache.handle_end();
            p.flush(&self.metrics);
            p.subscribers.clear();
        }
        Some(Box::new(HubRun { hub: self.clone(), key, published }))
    }
}

/// One publish's track in the hub.
struct HubRun {
    hub: RelayHub,
    key: (String, String),
    published: Shared,
}

impl TapRun for HubRun {
    fn video(&mut self, sample: &Sample, now: UnixMillis, segment_start: Option<u64>) {
        let mut p = lock(&self.published);
        if segment_start.is_some() && self.hub.replay_wanted() {
            p.cache.keep_replay();
        }
        p.cache.handle_video(sample, now, segment_start);
        p.flush(&self.hub.metrics);
    }

    fn audio(&mut self, sample: &Sample, now: UnixMillis) {
        let mut p = lock(&self.published);
        p.cache.handle_audio(sample, now);
        p.flush(&self.hub.metrics);
    }
}

impl Drop for HubRun {
    fn drop(&mut self) {
        {
            let mut p = lock(&self.published);
            p.cache.handle_end();
            p.flush(&self.hub.metrics);
            // Dropping the senders ends every subscriber's stream after the End frame.
            p.subscribers.clear();
        }
        let mut tracks = self.hub.tracks.lock().unwrap_or_else(PoisonError::into_inner);
        if tracks.get(&self.key).is_some_and(|p| Arc::ptr_eq(p, &self.published)) {
            tracks.remove(&self.key);
        }
    }
}

/// Why a subscription stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    #[error("relay stream of channel {channel}: {reason}")]
    Stream { channel: String, reason: String },
    #[error("relay of channel {channel}: {source}")]
    Wire { channel: String, source: WireError },
    #[error("relay of channel {channel}: {source}")]
    Track { channel: String, source: SubscriptionError },
    #[error("relay of channel {channel}: nothing received for {0:?}", SILENCE)]
    Silent { channel: String },
    #[error("relay of channel {channel}: the origin refused the stream: {reason}")]
    Origin { channel: String, reason: String },
}

/// Subscribes to `channel`'s source track on `conn` and packages it into `registry` until the
/// broadcast ends (`Ok`: the stream is finished) or the subscription fails (`Err`). The open
/// stream lives in `live`, owned by the caller: after a failure it stays servable, without an
/// end, while the caller re-subscribes (which replaces it at the next join point, under the same
/// names); dropping it ends the stream.
pub async fn subscribe(
    conn: &quinn::Connection,
    channel: &str,
    registry: &LiveRegistry,
    metrics: &RelayMetrics,
    live: &mut Option<LiveHandle>,
) -> Result<(), RelayError> {
    let mut expected: Option<u64> = None;
    receive(conn, channel, media::ingest::SOURCE_RENDITION, metrics, |event| {
        match event {
            TrackEvent::Open { session, config, video, audio } => {
                let first = config.first_msn;
                let rendition = Rendition::new(config, video, audio)
                    .map_err(|e| RelayError::Origin { channel: channel.to_owned(), reason: e.to_string() })?;
                let handle = registry
                    .open(channel, &session, vec![rendition])
                    .map_err(|e| RelayError::Origin { channel: channel.to_owned(), reason: e.to_string() })?;
                tracing::info!(channel, session, first_msn = first, "packaging a relayed track");
                *live = Some(handle);
            }
            TrackEvent::Video { sample, now } => {
                let Some(handle) = live.as_ref() else { return Ok(()) };
                push_checked(handle, 0, sample, now, &mut expected, metrics);
            }
            TrackEvent::Audio { sample, now } => {
                if let Some(handle) = live.as_ref() {
                    if let Err(error) = handle.push_audio(0, sample, now) {
                        tracing::debug!(channel, %error, "relayed sample refused");
                    }
                }
            }
            TrackEvent::ExpectSegment { msn } => expected = Some(msn),
            TrackEvent::End => {
                if let Some(handle) = live.take() {
                    handle.finish();
                }
                tracing::info!(channel, "relayed broadcast ended");
            }
        }
        Ok(())
    })
    .await
}

/// Pushes a relayed video sample into rendition `index` of `handle`; after an
/// [`TrackEvent::ExpectSegment`] (`expected`), checks that the packager opened that segment, and
/// counts and logs it when it did not (it should never happen: packaging is deterministic).
pub fn push_checked(
    handle: &LiveHandle,
    index: usize,
    sample: Sample,
    now: UnixMillis,
    expected: &mut Option<u64>,
    metrics: &RelayMetrics,
) {
    let channel = handle.channel_id();
    if let Err(error) = handle.push_video(index, sample, now) {
        tracing::debug!(channel, %error, "relayed sample refused");
    }
    if let Some(msn) = expected.take() {
        let open = handle.open_segment(index);
        if open != Some(msn) {
            metrics.diverged.inc();
            tracing::warn!(channel, rendition = index, expected = msn, packaged = ?open,
                "relayed packaging diverged from the publisher's segment numbers");
        }
    }
}

/// Subscribes to track `rendition` of `channel` on `conn` and hands every event to `on_event`,
/// in order, until the track ends (`Ok`, after [`TrackEvent::End`] was handed over), the
/// subscription fails or `on_event` fails (`Err`).
pub async fn receive(
    conn: &quinn::Connection,
    channel: &str,
    rendition: &str,
    metrics: &RelayMetrics,
    mut on_event: impl FnMut(TrackEvent) -> Result<(), RelayError>,
) -> Result<(), RelayError> {
    // A refused or closed connection says why in its close reason, not in the stream's error.
    let stream_error = |reason: String| {
        let reason = match conn.close_reason() {
            Some(closed) => format!("{reason} ({closed})"),
            None => reason,
        };
        RelayError::Stream { channel: channel.to_owned(), reason }
    };
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| stream_error(e.to_string()))?;
    let subscribe = encode_to_bytes(&Frame::Subscribe { channel: channel.to_owned(), rendition: rendition.to_owned() });
    send.write_all(&subscribe).await.map_err(|e| stream_error(e.to_string()))?;
    let _ = send.finish();

    let mut decoder = Decoder::for_subscriber();
    let mut subscription = Subscription::new(rendition);
    let mut buf = vec![0u8; 64 << 10];
    let received = metrics.bytes.with_label_values(&["received"]);
    loop {
        let n = decoder.wants().min(buf.len());
        let read = match tokio::time::timeout(SILENCE, recv.read(&mut buf[..n])).await {
            Ok(Ok(Some(read))) => read,
            Ok(Ok(None)) => return Err(stream_error("closed by the publisher".into())),
            Ok(Err(e)) => return Err(stream_error(e.to_string())),
            Err(_) => return Err(RelayError::Silent { channel: channel.to_owned() }),
        };
        received.inc_by(read as u64);
        decoder.handle_data(&buf[..read]);
        loop {
            let frame = match decoder.poll_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(source) => return Err(RelayError::Wire { channel: channel.to_owned(), source }),
            };
            subscription
                .handle_frame(frame)
                .map_err(|source| RelayError::Track { channel: channel.to_owned(), source })?;
            while let Some(event) = subscription.poll_event() {
                let end = matches!(event, TrackEvent::End);
                on_event(event)?;
                if end {
                    return Ok(());
                }
            }
        }
    }
}
