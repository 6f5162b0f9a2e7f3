//! One WebRTC peer: a str0m [`Rtc`] driven on its own task by its inbox of datagrams, its
//! deadlines and, for a viewer, the channel's frames.
//!
//! ```text
//! inbox (port.rs) ─┐                        ┌─▶ Transmit ──▶ UDP socket
//! timeout ─────────┼─▶ Rtc::handle_input ─▶ poll_output ─┤
//! control (HTTP) ──┤                        └─▶ Event: media in ──▶ WhipMedia ──▶ PublishSink (publish)
//! frames (play) ───┘ Writer::write                          keyframe request ──▶ WhepHub (play)
//! ```
//!
//! str0m's contract is kept here: every mutation is followed by draining `poll_output` to its
//! timeout. A session ends when the client deletes it, ICE does not connect in time or
//! disconnects, the publisher goes silent, the stream ends (viewer), or the node stops; either
//! way its routes and catalog session go with it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use media::ingest::{FrameCounters, IngestMetrics, PublishSink};
use str0m::format::Codec;
use str0m::media::{Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcError};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::port::{Datagram, Lease};
use crate::whep_media::{ChannelFeed, PlayFrame, WhepHub};
use crate::whip_media::WhipMedia;
use crate::WebrtcMetrics;

/// What the HTTP side tells a running session.
#[derive(Debug)]
pub(crate) enum Control {
    /// A trickled remote candidate.
    Candidate(Candidate),
    /// `DELETE`: end now.
    Close,
}

/// Limits of a session's life.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the answer to ICE and DTLS connected.
    pub connect: Duration,
    /// Longest a connected publisher may send no media, or a connected viewer nothing at all
    /// (browsers send RTCP every second and ICE consent checks every few).
    pub idle: Duration,
    /// Longest a WHIP publisher may go without a keyframe before one is asked for (PLI):
    /// browsers send one only at start and on request, and segments start on keyframes. The
    /// node sets it to the segment target.
    pub keyframe_every: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(15),
            idle: Duration::from_secs(10),
            keyframe_every: Duration::from_secs(1),
        }
    }
}

/// Least time between two keyframe requests a session sends on (a keyframe takes a round trip
/// and an encode to arrive).
const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);
/// How early before `keyframe_every` runs out the publisher is asked, so the keyframe arrives
/// about on time.
const KEYFRAME_LEAD: Duration = Duration::from_millis(100);

/// The str0m instance and its socket, shared by publishers and viewers.
struct Driver {
    rtc: Rtc,
    lease: Lease,
    deadline: Instant,
    connected: bool,
    created: Instant,
    /// When the peer last sent anything.
    heard: Instant,
    timeouts: Timeouts,
    metrics: WebrtcMetrics,
}

/// What woke the session.
enum Wake {
    Datagram(Datagram),
    Control(Control),
    Timeout,
    Stop(&'static str),
}

impl Driver {
    fn new(rtc: Rtc, lease: Lease, timeouts: Timeouts, metrics: WebrtcMetrics) -> Self {
        let now = Instant::now();
        Driver { rtc, lease, deadline: now, connected: false, created: now, heard: now, timeouts, metrics }
    }

    /// Drains str0m's output: transmits go out, events are returned, the next deadline kept.
    fn drain(&mut self) -> Result<Vec<Event>, RtcError> {
        let mut events = Vec::new();
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(at) => {
                    self.deadline = at;
                    return Ok(events);
                }
                Output::Transmit(transmit) => {
                    // A full socket buffer loses this datagram, as the network could.
                    if self.lease.socket.try_send_to(&transmit.contents, transmit.destination).is_err() {
                        self.metrics.send_errors.inc();
                    }
                }
                Output::Event(event) => events.push(event),
            }
        }
    }

    /// Feeds one input; a datagram str0m cannot parse is counted and dropped.
    fn handle(&mut self, input: Input<'_>) -> Result<(), RtcError> {
        match self.rtc.handle_input(input) {
            Err(RtcError::Net(_) | RtcError::Packet(..)) => {
                self.metrics.bad_datagrams.inc();
                Ok(())
            }
            other => other,
        }
    }

    fn receive(&mut self, datagram: &Datagram) -> Result<(), RtcError> {
        self.heard = datagram.at;
        let Ok(contents) = datagram.data.as_slice().try_into() else {
            self.metrics.bad_datagrams.inc();
            return Ok(());
        };
        let input = Input::Receive(
            datagram.at,
            Receive { proto: Protocol::Udp, source: datagram.source, destination: datagram.destination, contents },
        );
        self.handle(input)
    }

    fn control(&mut self, control: Control) -> Option<&'static str> {
        match control {
            Control::Candidate(candidate) => {
                self.rtc.add_remote_candidate(candidate);
                None
            }
            Control::Close => Some("deleted by the client"),
        }
    }

    /// Waits for the next datagram, control message or deadline; `extra` is the role's own
    /// source (a viewer's frames), polled alongside.
    async fn wait(&mut self, control: &mut mpsc::Receiver<Control>, stop: &CancellationToken) -> Wake {
        let (give_up, why) = if self.connected {
            (self.heard + self.timeouts.idle, "the peer went silent")
        } else {
            (self.created + self.timeouts.connect, "ICE did not connect in time")
        };
        let deadline = give_up.min(self.deadline);
        tokio::select! {
            datagram = self.lease.inbox.recv() => match datagram {
                Some(datagram) => Wake::Datagram(datagram),
                None => Wake::Stop("media socket closed"),
            },
            message = control.recv() => match message {
                Some(message) => Wake::Control(message),
                None => Wake::Stop("node stopping"),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                if Instant::now() >= give_up {
                    Wake::Stop(why)
                } else {
                    Wake::Timeout
                }
            }
            _ = stop.cancelled() => Wake::Stop("node stopping"),
        }
    }

    /// Common event handling; `Some(why)` ends the session.
    fn common(&mut self, event: &Event) -> Option<&'static str> {
        match event {
            Event::Connected => {
                self.connected = true;
                self.heard = Instant::now();
                None
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => Some("ICE disconnected"),
            _ => None,
        }
    }

    fn tick(&mut self) -> Result<(), RtcError> {
        self.handle(Input::Timeout(Instant::now()))
    }

    /// [`Driver::drain`]; an error ends the session (logged for the `role` session of `channel`).
    fn events(&mut self, role: &str, channel: &str) -> Result<Vec<Event>, &'static str> {
        self.drain().map_err(|error| failed(role, channel, &error))
    }

    /// Acts on what woke the session; `Some(why)` ends it.
    fn on_wake(&mut self, woke: Wake, role: &str, channel: &str) -> Option<&'static str> {
        let result = match woke {
            Wake::Datagram(datagram) => self.receive(&datagram),
            Wake::Control(message) => match self.control(message) {
                Some(why) => return Some(why),
                None => Ok(()),
            },
            Wake::Timeout => self.tick(),
            Wake::Stop(why) => return Some(why),
        };
        result.err().map(|error| failed(role, channel, &error))
    }
}

/// Logs why the `role` session of `channel` failed; the reason it ends with.
fn failed(role: &str, channel: &str, error: &RtcError) -> &'static str {
    tracing::info!(channel, %error, "{role} session failed");
    "WebRTC error"
}

/// Runs a WHIP publisher until it ends, then ends its publish. Returns why it ended.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_publish<P: PublishSink>(
    rtc: Rtc,
    lease: Lease,
    mut control: mpsc::Receiver<Control>,
    mut sink: P,
    audio: bool,
    hub: WhepHub,
    ingest: IngestMetrics,
    metrics: WebrtcMetrics,
    timeouts: Timeouts,
    stop: CancellationToken,
) -> &'static str {
    let mut driver = Driver::new(rtc, lease, timeouts, metrics);
    let mut media = WhipMedia::new(audio);
    let channel = sink.channel_id().to_owned();
    // The same per-channel series RTMP and SRT feed; bytes are media after depacketizing.
    let counters = FrameCounters::new(&ingest, &channel);
    let bytes = ingest.bytes.with_label_values(&[&channel]);
    let (keyframe_tx, mut keyframes) = mpsc::channel(1);
    let _keyframes = hub.keyframes_from(&channel, keyframe_tx);
    let mut video_mid: Option<Mid> = None;
    let mut last_keyframe_request: Option<Instant> = None;
    let mut last_keyframe = Instant::now();
    let mut last_media = Instant::now();
    ingest.active_publishers.inc();
    let why = 'session: loop {
        let events = match driver.events("WHIP", &channel) {
            Ok(events) => events,
            Err(why) => break 'session why,
        };
        // Why to ask the publisher for a keyframe now, if at all.
        let mut want_keyframe: Option<&'static str> = None;
        for event in events {
            if let Some(why) = driver.common(&event) {
                break 'session why;
            }
            match event {
                Event::Connected => {
                    tracing::info!(channel = %channel, after_ms = driver.created.elapsed().as_millis() as u64,
                        "WHIP publisher connected");
                    last_media = Instant::now();
                }
                Event::MediaAdded(added) if added.kind == MediaKind::Video => video_mid = Some(added.mid),
                Event::MediaData(data) => {
                    last_media = Instant::now();
                    bytes.inc_by(data.data.len() as u64);
                    let fed = match data.params.spec().codec {
                        Codec::H264 => {
                            if data.is_keyframe() {
                                last_keyframe = Instant::now();
                            }
                            if !data.contiguous {
                                want_keyframe = Some("loss");
                            }
                            media.video(data.network_time, data.time.numer(), &data.data)
                        }
                        Codec::Opus => media.audio(data.network_time, data.time.numer(), &data.data),
                        _ => Ok(()),
                    };
                    if let Err(error) = fed {
                        tracing::warn!(channel = %channel, %error, "cannot package this stream; closing");
                        break 'session "stream cannot be packaged";
                    }
                    if drain_feed(&mut media, &mut sink, &counters).is_err() {
                        break 'session "origin refused the stream";
                    }
                }
                _ => {}
            }
        }
        if driver.connected && last_keyframe.elapsed() + KEYFRAME_LEAD >= driver.timeouts.keyframe_every {
            want_keyframe = want_keyframe.or(Some("segment"));
        }
        if let Some(reason) = want_keyframe {
            if request_keyframe(&mut driver.rtc, video_mid, &mut last_keyframe_request) {
                driver.metrics.keyframe_requests.with_label_values(&[reason]).inc();
                continue;
            }
        }
        if driver.connected && last_media.elapsed() > driver.timeouts.idle {
            tracing::warn!(channel = %channel, "WHIP publisher sends no media; closing");
            break "stalled";
        }
        let woke = tokio::select! {
            biased;
            Some(()) = keyframes.recv() => {
                // Counted even when a request is already on its way (then no second PLI goes out).
                driver.metrics.keyframe_requests.with_label_values(&["viewer"]).inc();
                request_keyframe(&mut driver.rtc, video_mid, &mut last_keyframe_request);
                continue;
            }
            woke = driver.wait(&mut control, &stop) => woke,
        };
        if let Some(why) = driver.on_wake(woke, "WHIP", &channel) {
            break why;
        }
    };
    if let Err(error) = media.finish() {
        tracing::debug!(channel = %channel, %error, "stream ended with an unpackageable tail");
    }
    let _ = drain_feed(&mut media, &mut sink, &counters);
    driver.rtc.disconnect();
    let _ = driver.drain();
    ingest.active_publishers.dec();
    tracing::info!(channel = %channel, session = %sink.session_id(), reason = why,
        opus_errors = media.audio_errors(), "WHIP publish ended");
    sink.end(why).await;
    why
}

/// Asks the publisher for a keyframe (PLI), at most once per [`KEYFRAME_INTERVAL`]. `true` if
/// one was asked (the caller drains).
fn request_keyframe(rtc: &mut Rtc, mid: Option<Mid>, last: &mut Option<Instant>) -> bool {
    if last.is_some_and(|at| at.elapsed() < KEYFRAME_INTERVAL) {
        return false;
    }
    let Some(mut writer) = mid.and_then(|mid| rtc.writer(mid)) else { return false };
    *last = Some(Instant::now());
    writer.request_keyframe(None, KeyframeRequestKind::Pli).is_ok()
}

fn drain_feed<P: PublishSink>(media: &mut WhipMedia, sink: &mut P, counters: &FrameCounters) -> Result<(), ()> {
    let drained = std::iter::from_fn(|| media.poll_output()).try_for_each(|output| sink.handle_output(output));
    counters.add(media.take_counts());
    drained.map_err(|_| ())
}

/// Runs a WHEP viewer until it ends. Returns why it ended.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_play(
    rtc: Rtc,
    lease: Lease,
    mut control: mpsc::Receiver<Control>,
    feed: Arc<ChannelFeed>,
    hub: WhepHub,
    metrics: WebrtcMetrics,
    timeouts: Timeouts,
    stop: CancellationToken,
) -> &'static str {
    let mut frames = feed.subscribe();
    let mut driver = Driver::new(rtc, lease, timeouts, metrics.clone());
    let channel = feed.channel_id.clone();
    let (mut video_mid, mut audio_mid) = (None, None);
    let mut awaiting_keyframe = true;
    let mut last_keyframe_request: Option<Instant> = None;
    let mut ask_keyframe = |hub: &WhepHub| {
        if last_keyframe_request.is_none_or(|at| at.elapsed() >= KEYFRAME_INTERVAL) {
            last_keyframe_request = Some(Instant::now());
            hub.request_keyframe(&channel);
        }
    };
    let sent_video = metrics.frames_sent.with_label_values(&["video"]);
    let sent_audio = metrics.frames_sent.with_label_values(&["audio"]);
    let why = 'session: loop {
        let events = match driver.events("WHEP", &channel) {
            Ok(events) => events,
            Err(why) => break 'session why,
        };
        for event in events {
            if let Some(why) = driver.common(&event) {
                break 'session why;
            }
            match event {
                Event::Connected => {
                    tracing::debug!(channel = %channel, after_ms = driver.created.elapsed().as_millis() as u64,
                        "WHEP viewer connected");
                    ask_keyframe(&hub);
                }
                Event::MediaAdded(added) => match added.kind {
                    MediaKind::Video => video_mid = Some(added.mid),
                    MediaKind::Audio => audio_mid = Some(added.mid),
                },
                Event::KeyframeRequest(_) => ask_keyframe(&hub),
                _ => {}
            }
        }
        let woke = tokio::select! {
            frame = frames.recv() => match frame {
                Ok(frame) => {
                    if !driver.connected {
                        continue;
                    }
                    let (mid, codec, rtp, data) = match frame {
                        PlayFrame::Video { keyframe, .. } if awaiting_keyframe && !keyframe => {
                            ask_keyframe(&hub);
                            continue;
                        }
                        PlayFrame::Video { rtp, data, .. } => {
                            awaiting_keyframe = false;
                            sent_video.inc();
                            (video_mid, Codec::H264, MediaTime::new(rtp, Frequency::NINETY_KHZ), data)
                        }
                        PlayFrame::Audio { rtp, data } => {
                            sent_audio.inc();
                            (audio_mid, Codec::Opus, MediaTime::new(rtp, Frequency::FORTY_EIGHT_KHZ), data)
                        }
                    };
                    let Some(writer) = mid.and_then(|mid| driver.rtc.writer(mid)) else { continue };
                    let Some(pt) = writer.payload_params().find(|p| p.spec().codec == codec).map(|p| p.pt()) else {
                        continue;
                    };
                    if let Err(error) = writer.write(pt, Instant::now(), rtp, &data[..]) {
                        tracing::debug!(channel = %channel, %error, "frame not sent");
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(channel = %channel, missed, "WHEP viewer fell behind; waiting for a keyframe");
                    awaiting_keyframe = true;
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => break "stream ended",
            },
            woke = driver.wait(&mut control, &stop) => woke,
        };
        if let Some(why) = driver.on_wake(woke, "WHEP", &channel) {
            break why;
        }
    };
    driver.rtc.disconnect();
    let _ = driver.drain();
    tracing::debug!(channel = %channel, reason = why, "WHEP viewer ended");
    why
}
