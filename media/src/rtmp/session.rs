//! [`ServerSession`]: one RTMP publishing connection, from the first handshake byte to close, as a
//! sans-IO state machine.
//!
//! ```text
//! bytes in ──handle_input──▶ Handshake ──leftover──▶ ChunkDecoder ──messages──▶ commands / media
//!                                 │                                                  │
//!          poll_transmit ◀── S0/S1/S2, replies (ChunkEncoder)        poll_event ◀── Event
//! ```
//!
//! The session answers the connection-level commands itself (`connect`, `releaseStream`,
//! `FCPublish`, `createStream`) and leaves the one decision that needs the catalog — may this
//! stream key publish? — to the application: `publish` becomes [`Event::PublishRequested`] and
//! the application calls [`ServerSession::accept_publish`] or [`ServerSession::reject_publish`].
//! Audio and video arrive only after acceptance, as raw FLV tag bodies (parse them with
//! [`crate::flv`]). Until then the peer is a stranger: its chunk stream is held to
//! [`SessionConfig::pre_publish_limits`] (small messages and chunks), raised to
//! [`SessionConfig::max_message_size`] when the publish is accepted.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use super::amf0::{self, Amf0Error, Amf0Value};
use super::chunk::{
    message_type, user_control, ChunkDecoder, ChunkEncoder, ChunkError, ChunkLimits, RtmpMessage,
    DEFAULT_MAX_MESSAGE_SIZE,
};
use super::handshake::{Handshake, HandshakeError, HandshakeStatus};
use crate::flv::{self, FlvError};

/// The message stream id we hand out in `createStream` (one publish per connection).
pub const PUBLISH_STREAM_ID: u32 = 1;
const CSID_COMMAND: u32 = 3;
const CSID_STREAM: u32 = 5;

/// Settings for a [`ServerSession`].
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The only application name accepted in `connect` (trailing `/` and `?query` ignored).
    pub app: String,
    /// Chunk size we switch to for sending, announced right after `connect`.
    pub chunk_size: u32,
    /// Window Acknowledgement Size we announce, and the window we acknowledge with until the
    /// client announces its own.
    pub window_ack_size: u32,
    /// Set Peer Bandwidth we announce (dynamic).
    pub peer_bandwidth: u32,
    /// Largest RTMP message accepted once a publish is accepted.
    pub max_message_size: u32,
    /// Limits on the chunk stream before a publish is accepted: a peer that has not shown a
    /// valid stream key gets to hold little memory.
    pub pre_publish_limits: ChunkLimits,
    /// Seed for the handshake's filler bytes; vary it per connection.
    pub handshake_seed: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            app: "live".to_owned(),
            chunk_size: 4096,
            window_ack_size: 2_500_000,
            peer_bandwidth: 2_500_000,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            pre_publish_limits: ChunkLimits::PRE_PUBLISH,
            handshake_seed: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

/// Identifies one [`Event::PublishRequested`] for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublishRequestId(pub u64);

/// A codec id from `onMetaData`: a number (7 = AVC, 10 = AAC, or an Enhanced RTMP FourCC packed
/// into a number) or, from some encoders, a string such as `"avc1"`.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaCodecId {
    Number(f64),
    Name(String),
}

impl MetaCodecId {
    /// The FourCC if the id is one (`"hvc1"`, or 0x68766331 as a number).
    pub fn fourcc(&self) -> Option<[u8; 4]> {
        match self {
            MetaCodecId::Number(n) if *n >= 256.0 && *n <= f64::from(u32::MAX) && n.fract() == 0.0 => {
                Some((*n as u32).to_be_bytes())
            }
            MetaCodecId::Name(s) => s.as_bytes().try_into().ok(),
            _ => None,
        }
    }
}

/// `onMetaData` from the encoder. Encoders fill in what they like; every field is optional and
/// `properties` keeps everything as sent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metadata {
    pub width: Option<f64>,
    pub height: Option<f64>,
    pub framerate: Option<f64>,
    pub video_codec_id: Option<MetaCodecId>,
    /// kbit/s
    pub video_data_rate: Option<f64>,
    pub audio_codec_id: Option<MetaCodecId>,
    /// kbit/s
    pub audio_data_rate: Option<f64>,
    pub audio_sample_rate: Option<f64>,
    pub audio_channels: Option<f64>,
    pub stereo: Option<bool>,
    pub encoder: Option<String>,
    pub properties: Vec<(String, Amf0Value)>,
}

impl Metadata {
    fn from_properties(properties: Vec<(String, Amf0Value)>) -> Self {
        let get = |key: &str| properties.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let num = |key: &str| get(key).and_then(Amf0Value::as_number);
        let codec = |key: &str| match get(key)? {
            Amf0Value::Number(n) => Some(MetaCodecId::Number(*n)),
            Amf0Value::String(s) => Some(MetaCodecId::Name(s.clone())),
            _ => None,
        };
        Metadata {
            width: num("width"),
            height: num("height"),
            framerate: num("framerate").or_else(|| num("fps")),
            video_codec_id: codec("videocodecid"),
            video_data_rate: num("videodatarate"),
            audio_codec_id: codec("audiocodecid"),
            audio_data_rate: num("audiodatarate"),
            audio_sample_rate: num("audiosamplerate"),
            audio_channels: num("audiochannels"),
            stereo: match get("stereo") {
                Some(Amf0Value::Boolean(b)) => Some(*b),
                _ => None,
            },
            encoder: get("encoder").and_then(Amf0Value::as_str).map(str::to_owned),
            properties,
        }
    }
}

/// What the application learns from a session. Drain with [`ServerSession::poll_event`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The client wants to publish `stream_key` on `app`. Answer with
    /// [`ServerSession::accept_publish`] or [`ServerSession::reject_publish`]; media is dropped
    /// until then.
    PublishRequested { request_id: PublishRequestId, app: String, stream_key: String },
    /// `onMetaData` (direct or through `@setDataFrame`).
    Metadata(Metadata),
    /// A video message: an FLV video tag body. `timestamp_ms` is the RTMP timestamp with 32-bit
    /// wraparound undone (it keeps growing past 2^32 ms).
    Video { timestamp_ms: u64, payload: Bytes },
    /// An audio message: an FLV audio tag body; timestamps as for video.
    Audio { timestamp_ms: u64, payload: Bytes },
    /// The accepted publish ended (FCUnpublish/deleteStream/closeStream, or the connection closed
    /// while publishing, in which case [`Event::Closed`] follows).
    Unpublished,
    /// The session is over; send what [`ServerSession::poll_transmit`] still returns, then close the
    /// connection. No further events follow.
    Closed(CloseReason),
}

/// Why a session closed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CloseReason {
    /// [`ServerSession::handle_eof`]: the peer closed the connection.
    PeerClosed,
    /// `connect` named an application other than the configured one.
    AppRejected { app: String },
    /// The application rejected the publish (or the stream key was empty).
    PublishRejected,
    /// The peer broke the protocol.
    Protocol(SessionError),
}

/// A protocol violation by the peer.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum SessionError {
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("AMF0 in {context}: {error}")]
    Amf0 { context: &'static str, error: Amf0Error },
    #[error("malformed command {command:?}: {problem}")]
    BadCommand { command: String, problem: &'static str },
    #[error("command {command:?} not allowed now: {problem}")]
    UnexpectedCommand { command: String, problem: &'static str },
    #[error("aggregate message: {0}")]
    Aggregate(FlvError),
}

/// Why [`ServerSession::accept_publish`] / [`ServerSession::reject_publish`] did nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecisionError {
    /// No publish with that id is waiting: already answered, or the session closed meanwhile.
    #[error("no pending publish request {0:?}")]
    UnknownRequest(PublishRequestId),
}

/// How a publish is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// Unknown or disabled stream key, or the channel is already live
    /// (`NetStream.Publish.BadName`).
    BadName,
    /// Anything else (`NetStream.Publish.Error`), with a description for the encoder's log.
    Error(String),
}

#[derive(Debug, PartialEq)]
enum Phase {
    Handshake,
    AwaitConnect,
    Connected,
    Closed,
}

#[derive(Debug)]
enum Publish {
    Idle,
    Pending { id: PublishRequestId, stream_key: String },
    Publishing { stream_key: String },
}

/// Undoes the 32-bit wraparound of RTMP timestamps.
#[derive(Debug, Default)]
struct TimestampExtender {
    last: Option<u32>,
    wraps: u64,
}

impl TimestampExtender {
    fn extend(&mut self, ts: u32) -> u64 {
        const HALF: u32 = 1 << 31;
        match self.last {
            Some(last) if ts < last && last - ts > HALF => {
                self.wraps += 1;
                self.last = Some(ts);
            }
            // A late timestamp from before the last wrap.
            Some(last) if ts > last && ts - last > HALF && self.wraps > 0 => {
                return ((self.wraps - 1) << 32) + u64::from(ts);
            }
            _ => self.last = Some(ts),
        }
        (self.wraps << 32) + u64::from(ts)
    }
}

/// Server side of one RTMP connection.
///
/// Drive it like every state machine here: feed what the socket read with
/// [`handle_input`](Self::handle_input) (and [`handle_eof`](Self::handle_eof) at end of stream),
/// then, **after every input and every accept/reject call**, drain
/// [`poll_transmit`](Self::poll_transmit) into the socket and [`poll_event`](Self::poll_event) into
/// the application. Nothing here blocks, reads a clock or panics on input.
#[derive(Debug)]
pub struct ServerSession {
    config: SessionConfig,
    phase: Phase,
    handshake: Handshake,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    out: Vec<u8>,
    events: VecDeque<Event>,
    app: Option<String>,
    publish: Publish,
    next_request_id: u64,
    video_ts: TimestampExtender,
    audio_ts: TimestampExtender,
    dropped_media: u64,
}

impl ServerSession {
    pub fn new(config: SessionConfig) -> Self {
        ServerSession {
            phase: Phase::Handshake,
            handshake: Handshake::new(config.handshake_seed),
            decoder: ChunkDecoder::with_limits(config.pre_publish_limits, config.window_ack_size),
            encoder: ChunkEncoder::new(),
            out: Vec::new(),
            events: VecDeque::new(),
            app: None,
            publish: Publish::Idle,
            next_request_id: 1,
            video_ts: TimestampExtender::default(),
            audio_ts: TimestampExtender::default(),
            dropped_media: 0,
            config,
        }
    }

    /// Bytes read from the connection.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        match self.phase {
            Phase::Closed => {}
            Phase::Handshake => {
                let status = self.handshake.handle_input(bytes);
                if let Some(s1) = self.handshake.poll_transmit() {
                    self.out.extend_from_slice(&s1);
                }
                match status {
                    Err(e) => self.close(CloseReason::Protocol(e.into())),
                    Ok(HandshakeStatus::InProgress) => {}
                    Ok(HandshakeStatus::Done { leftover }) => {
                        self.phase = Phase::AwaitConnect;
                        self.decoder.handle_input(leftover);
                        self.process();
                    }
                }
            }
            Phase::AwaitConnect | Phase::Connected => {
                self.decoder.handle_input(bytes);
                self.process();
            }
        }
    }

    /// Once the handshake is done, the buffer a read may append up to `len` bytes to directly
    /// (see [`ChunkDecoder::input_buffer`]); then call [`ServerSession::handle_appended`]. `None`:
    /// give input to [`ServerSession::handle_input`].
    pub fn input_buffer(&mut self, len: usize) -> Option<&mut BytesMut> {
        match self.phase {
            Phase::AwaitConnect | Phase::Connected => Some(self.decoder.input_buffer(len)),
            Phase::Handshake | Phase::Closed => None,
        }
    }

    /// `len` bytes were appended to [`ServerSession::input_buffer`].
    pub fn handle_appended(&mut self, len: usize) {
        if matches!(self.phase, Phase::AwaitConnect | Phase::Connected) {
            self.decoder.handle_appended(len);
            self.process();
        }
    }

    /// The connection reached end of stream (or failed).
    pub fn handle_eof(&mut self) {
        self.close(CloseReason::PeerClosed);
    }

    /// Bytes to write to the connection.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.out))
        }
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Lets the publish of `request_id` go ahead: `NetStream.Publish.Start`, then media flows.
    pub fn accept_publish(&mut self, request_id: PublishRequestId) -> Result<(), DecisionError> {
        match &mut self.publish {
            Publish::Pending { id, stream_key } if *id == request_id && self.phase != Phase::Closed => {
                let stream_key = std::mem::take(stream_key);
                self.send(RtmpMessage::user_control(user_control::STREAM_BEGIN, PUBLISH_STREAM_ID));
                let description = format!("{stream_key} is now published.");
                self.send_on_status("status", "NetStream.Publish.Start", &description);
                // The key is good: media may come in large messages and chunks from here on.
                self.decoder.set_limits(ChunkLimits {
                    max_message_size: self.config.max_message_size,
                    ..ChunkLimits::PUBLISHING
                });
                self.publish = Publish::Publishing { stream_key };
                Ok(())
            }
            _ => Err(DecisionError::UnknownRequest(request_id)),
        }
    }

    /// Refuses the publish of `request_id` with an `onStatus` error and closes the session
    /// ([`Event::Closed`] with [`CloseReason::PublishRejected`]).
    pub fn reject_publish(&mut self, request_id: PublishRequestId, reason: RejectReason) -> Result<(), DecisionError> {
        match &self.publish {
            Publish::Pending { id, .. } if *id == request_id && self.phase != Phase::Closed => {
                let (code, description) = match reason {
                    RejectReason::BadName => ("NetStream.Publish.BadName", "Stream key rejected.".to_owned()),
                    RejectReason::Error(d) => ("NetStream.Publish.Error", d),
                };
                self.send_on_status("error", code, &description);
                self.publish = Publish::Idle;
                self.close(CloseReason::PublishRejected);
                Ok(())
            }
            _ => Err(DecisionError::UnknownRequest(request_id)),
        }
    }

    /// True once [`Event::Closed`] has been queued.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The application name from `connect`.
    pub fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }

    /// The stream key being published, once accepted.
    pub fn publishing_stream_key(&self) -> Option<&str> {
        match &self.publish {
            Publish::Publishing { stream_key } => Some(stream_key),
            _ => None,
        }
    }

    /// Audio/video/metadata messages dropped because no publish was accepted yet.
    pub fn dropped_media(&self) -> u64 {
        self.dropped_media
    }

    fn close(&mut self, reason: CloseReason) {
        if self.phase == Phase::Closed {
            return;
        }
        if matches!(self.publish, Publish::Publishing { .. }) {
            self.events.push_back(Event::Unpublished);
        }
        self.publish = Publish::Idle;
        self.phase = Phase::Closed;
        self.events.push_back(Event::Closed(reason));
    }

    fn fail(&mut self, error: SessionError) {
        self.close(CloseReason::Protocol(error));
    }

    fn process(&mut self) {
        while self.phase != Phase::Closed {
            match self.decoder.poll_message() {
                Ok(Some(msg)) => self.handle_message(msg),
                Ok(None) => break,
                Err(e) => self.fail(e.into()),
            }
        }
        if self.phase != Phase::Closed {
            if let Some(sequence) = self.decoder.poll_ack() {
                self.send(RtmpMessage::acknowledgement(sequence));
            }
        }
    }

    fn send(&mut self, msg: RtmpMessage) {
        // Our messages use fixed csids in range and are far below 16 MiB: encoding cannot fail.
        if let Err(e) = self.encoder.encode(&msg, &mut self.out) {
            debug_assert!(false, "encoding our own message failed: {e}");
        }
    }

    fn send_command(&mut self, csid: u32, stream_id: u32, values: &[Amf0Value]) {
        let payload = amf0::encode_all(values).into();
        self.send(RtmpMessage { csid, timestamp: 0, type_id: message_type::COMMAND_AMF0, stream_id, payload });
    }

    fn send_on_status(&mut self, level: &str, code: &str, description: &str) {
        let info = status_object(level, code, description);
        self.send_command(
            CSID_STREAM,
            PUBLISH_STREAM_ID,
            &[Amf0Value::from("onStatus"), Amf0Value::Number(0.0), Amf0Value::Null, info],
        );
    }

    fn handle_message(&mut self, msg: RtmpMessage) {
        match msg.type_id {
            message_type::COMMAND_AMF0 => self.handle_command(&msg.payload),
            // AMF3 command/data messages carry a format byte (0) and then AMF0 values.
            message_type::COMMAND_AMF3 => self.handle_command(msg.payload.get(1..).unwrap_or_default()),
            message_type::DATA_AMF0 => self.handle_data(&msg.payload),
            message_type::DATA_AMF3 => self.handle_data(msg.payload.get(1..).unwrap_or_default()),
            message_type::VIDEO | message_type::AUDIO => {
                let video = msg.type_id == message_type::VIDEO;
                self.handle_media(video, msg.timestamp, msg.payload);
            }
            message_type::AGGREGATE => self.handle_aggregate(&msg),
            message_type::USER_CONTROL => {
                let p = &msg.payload;
                if p.len() >= 6 && u16::from_be_bytes([p[0], p[1]]) == user_control::PING_REQUEST {
                    let ts = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
                    self.send(RtmpMessage::user_control(user_control::PING_RESPONSE, ts));
                }
            }
            // Set Chunk Size, Abort and Window Ack Size are applied by the decoder; the peer's
            // acknowledgements and bandwidth hints need no action from a receiver.
            _ => {}
        }
    }

    fn handle_media(&mut self, video: bool, timestamp: u32, payload: Bytes) {
        if !matches!(self.publish, Publish::Publishing { .. }) {
            self.dropped_media += 1;
            return;
        }
        let event = if video {
            Event::Video { timestamp_ms: self.video_ts.extend(timestamp), payload }
        } else {
            Event::Audio { timestamp_ms: self.audio_ts.extend(timestamp), payload }
        };
        self.events.push_back(event);
    }

    /// Aggregate messages hold FLV tags whose timestamps are renormalised so the first equals the
    /// aggregate's own.
    fn handle_aggregate(&mut self, msg: &RtmpMessage) {
        let mut rest = msg.payload.clone();
        let mut first_ts = None;
        while !rest.is_empty() {
            let (tag, used) = match flv::read_tag(&rest) {
                Ok(t) => t,
                Err(e) => return self.fail(SessionError::Aggregate(e)),
            };
            rest = rest.slice(used..);
            let base = *first_ts.get_or_insert(tag.timestamp);
            let ts = msg.timestamp.wrapping_add(tag.timestamp.wrapping_sub(base));
            match tag.tag_type {
                flv::tag_type::VIDEO => self.handle_media(true, ts, tag.body),
                flv::tag_type::AUDIO => self.handle_media(false, ts, tag.body),
                flv::tag_type::SCRIPT_DATA => self.handle_data(&tag.body),
                _ => {}
            }
            if self.phase == Phase::Closed {
                return;
            }
        }
    }

    fn handle_data(&mut self, payload: &[u8]) {
        let values = match amf0::decode_all(payload) {
            Ok(v) => v,
            Err(error) => return self.fail(SessionError::Amf0 { context: "data message", error }),
        };
        let mut it = values.into_iter();
        let mut name = it.next();
        if name.as_ref().and_then(Amf0Value::as_str) == Some("@setDataFrame") {
            name = it.next();
        }
        if name.as_ref().and_then(Amf0Value::as_str) != Some("onMetaData") {
            return;
        }
        if !matches!(self.publish, Publish::Publishing { .. }) {
            self.dropped_media += 1;
            return;
        }
        let properties = match it.next() {
            Some(Amf0Value::Object(p) | Amf0Value::EcmaArray(p)) => p,
            _ => Vec::new(),
        };
        self.events.push_back(Event::Metadata(Metadata::from_properties(properties)));
    }

    fn handle_command(&mut self, payload: &[u8]) {
        let values = match amf0::decode_all(payload) {
            Ok(v) => v,
            Err(error) => return self.fail(SessionError::Amf0 { context: "command", error }),
        };
        let (name, txn) = match (values.first(), values.get(1)) {
            (Some(Amf0Value::String(name)), Some(Amf0Value::Number(txn))) => (name.clone(), *txn),
            (Some(Amf0Value::String(name)), _) => {
                return self.fail(SessionError::BadCommand { command: name.clone(), problem: "no transaction id" })
            }
            _ => {
                return self
                    .fail(SessionError::BadCommand { command: String::new(), problem: "does not start with a name" })
            }
        };
        if self.phase == Phase::AwaitConnect && name != "connect" {
            return self.fail(SessionError::UnexpectedCommand { command: name, problem: "before connect" });
        }
        // Arguments after the command object.
        let arg = |i: usize| values.get(3 + i);
        match name.as_str() {
            "connect" => self.handle_connect(txn, values.get(2)),
            "releaseStream" | "FCPublish" => {
                self.send_command(
                    CSID_COMMAND,
                    0,
                    &[Amf0Value::from("_result"), Amf0Value::Number(txn), Amf0Value::Null, Amf0Value::Undefined],
                );
            }
            "createStream" => {
                self.send_command(
                    CSID_COMMAND,
                    0,
                    &[
                        Amf0Value::from("_result"),
                        Amf0Value::Number(txn),
                        Amf0Value::Null,
                        Amf0Value::Number(f64::from(PUBLISH_STREAM_ID)),
                    ],
                );
            }
            "publish" => {
                let Some(stream_key) = arg(0).and_then(Amf0Value::as_str).map(str::to_owned) else {
                    return self.fail(SessionError::BadCommand { command: name, problem: "no stream key" });
                };
                self.handle_publish(stream_key);
            }
            "FCUnpublish" | "deleteStream" | "closeStream" => {
                if matches!(self.publish, Publish::Publishing { .. }) {
                    self.events.push_back(Event::Unpublished);
                }
                self.publish = Publish::Idle;
            }
            // getStreamLength, _checkbw, play, ...: nothing an ingest needs to answer.
            _ => {}
        }
    }

    fn handle_connect(&mut self, txn: f64, command_object: Option<&Amf0Value>) {
        if self.phase != Phase::AwaitConnect {
            return self
                .fail(SessionError::UnexpectedCommand { command: "connect".into(), problem: "connected already" });
        }
        let Some(app) = command_object.and_then(|o| o.get("app")).and_then(Amf0Value::as_str) else {
            return self.fail(SessionError::BadCommand { command: "connect".into(), problem: "no app" });
        };
        let app = app.split('?').next().unwrap_or_default().trim_end_matches('/').to_owned();
        if app != self.config.app {
            let info = status_object("error", "NetConnection.Connect.Rejected", "Unknown application.");
            self.send_command(
                CSID_COMMAND,
                0,
                &[Amf0Value::from("_error"), Amf0Value::Number(txn), Amf0Value::Null, info],
            );
            return self.close(CloseReason::AppRejected { app });
        }
        self.send(RtmpMessage::window_ack_size(self.config.window_ack_size));
        self.send(RtmpMessage::set_peer_bandwidth(self.config.peer_bandwidth, 2));
        self.send(RtmpMessage::set_chunk_size(self.config.chunk_size));
        if self.encoder.set_chunk_size(self.config.chunk_size).is_err() {
            // An invalid configured size: keep the default; the peer was told a size we do not
            // use, so correct that.
            self.send(RtmpMessage::set_chunk_size(self.encoder.chunk_size()));
        }
        let properties = Amf0Value::Object(vec![
            ("fmsVer".into(), Amf0Value::from("FMS/3,0,1,123")),
            ("capabilities".into(), Amf0Value::Number(31.0)),
        ]);
        let mut info = status_properties("status", "NetConnection.Connect.Success", "Connection succeeded.");
        info.push(("objectEncoding".into(), Amf0Value::Number(0.0)));
        self.send_command(
            CSID_COMMAND,
            0,
            &[Amf0Value::from("_result"), Amf0Value::Number(txn), properties, Amf0Value::Object(info)],
        );
        self.app = Some(app);
        self.phase = Phase::Connected;
    }

    fn handle_publish(&mut self, stream_key: String) {
        if !matches!(self.publish, Publish::Idle) {
            return self
                .fail(SessionError::UnexpectedCommand { command: "publish".into(), problem: "already publishing" });
        }
        if stream_key.is_empty() {
            self.send_on_status("error", "NetStream.Publish.BadName", "Empty stream key.");
            return self.close(CloseReason::PublishRejected);
        }
        let id = PublishRequestId(self.next_request_id);
        self.next_request_id += 1;
        self.events.push_back(Event::PublishRequested {
            request_id: id,
            app: self.app.clone().unwrap_or_default(),
            stream_key: stream_key.clone(),
        });
        self.publish = Publish::Pending { id, stream_key };
    }
}

fn status_properties(level: &str, code: &str, description: &str) -> Vec<(String, Amf0Value)> {
    vec![
        ("level".into(), Amf0Value::from(level)),
        ("code".into(), Amf0Value::from(code)),
        ("description".into(), Amf0Value::from(description)),
    ]
}

fn status_object(level: &str, code: &str, description: &str) -> Amf0Value {
    Amf0Value::Object(status_properties(level, code, description))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flv::{AudioTag, VideoTag};
    use crate::rtmp::chunk::DEFAULT_MAX_MESSAGE_SIZE;
    use crate::rtmp::handshake::HANDSHAKE_SIZE;

    const KEY: &str = "sk_live_0123456789abcdef";

    fn obj(props: &[(&str, Amf0Value)]) -> Amf0Value {
        Amf0Value::Object(props.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
    }

    /// A tiny sans-IO RTMP publisher: writes what ffmpeg/OBS write and reads the server's replies.
    struct TestClient {
        enc: ChunkEncoder,
        dec: ChunkDecoder,
        /// Server bytes not yet parsed as handshake.
        handshake_in: Vec<u8>,
        handshake_done: bool,
        replies: Vec<RtmpMessage>,
    }

    impl TestClient {
        fn new() -> Self {
            TestClient {
                enc: ChunkEncoder::new(),
                dec: ChunkDecoder::new(DEFAULT_MAX_MESSAGE_SIZE, 0),
                handshake_in: Vec::new(),
                handshake_done: false,
                replies: Vec::new(),
            }
        }

        /// C0 + C1 shaped like ffmpeg's: nonzero version field, pseudo-random rest.
        fn c0c1(&self) -> Vec<u8> {
            let mut v = vec![3, 0, 0, 0, 0, 9, 0, 124, 2];
            v.extend((0..HANDSHAKE_SIZE - 8).map(|i| (i * 7 % 256) as u8));
            v
        }

        /// Reads server output; returns C2 once S0+S1+S2 are complete.
        fn receive(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
            if self.handshake_done {
                self.dec.handle_input(bytes);
                while let Some(m) = self.dec.poll_message().unwrap() {
                    self.replies.push(m);
                }
                return None;
            }
            self.handshake_in.extend_from_slice(bytes);
            if self.handshake_in.len() < 1 + 2 * HANDSHAKE_SIZE {
                return None;
            }
            assert_eq!(self.handshake_in[0], 3);
            let s1 = self.handshake_in[1..1 + HANDSHAKE_SIZE].to_vec();
            assert_eq!(&self.handshake_in[1 + HANDSHAKE_SIZE..1 + 2 * HANDSHAKE_SIZE], &self.c0c1()[1..]);
            let rest = self.handshake_in.split_off(1 + 2 * HANDSHAKE_SIZE);
            self.handshake_done = true;
            self.receive(&rest);
            Some(s1)
        }

        fn message(&self, csid: u32, ts: u32, type_id: u8, stream_id: u32, payload: Vec<u8>) -> Vec<u8> {
            let mut out = Vec::new();
            let msg = RtmpMessage { csid, timestamp: ts, type_id, stream_id, payload: payload.into() };
            self.enc.encode(&msg, &mut out).unwrap();
            out
        }

        fn command(&self, stream_id: u32, values: &[Amf0Value]) -> Vec<u8> {
            self.message(3, 0, message_type::COMMAND_AMF0, stream_id, amf0::encode_all(values))
        }

        fn set_chunk_size(&mut self, size: u32) -> Vec<u8> {
            let mut out = Vec::new();
            self.enc.encode(&RtmpMessage::set_chunk_size(size), &mut out).unwrap();
            self.enc.set_chunk_size(size).unwrap();
            out
        }

        fn connect(&self, app: &str) -> Vec<u8> {
            self.command(
                0,
                &[
                    Amf0Value::from("connect"),
                    Amf0Value::Number(1.0),
                    obj(&[
                        ("app", Amf0Value::from(app)),
                        ("type", Amf0Value::from("nonprivate")),
                        ("flashVer", Amf0Value::from("FMLE/3.0 (compatible; FMSc/1.0)")),
                        ("tcUrl", Amf0Value::from(format!("rtmp://localhost:1935/{app}").as_str())),
                    ]),
                ],
            )
        }

        fn create_and_publish(&self, key: &str) -> Vec<u8> {
            let mut w = Vec::new();
            let key_v = Amf0Value::from(key);
            w.extend(self.command(0, &[Amf0Value::from("releaseStream"), 2.0.into(), Amf0Value::Null, key_v.clone()]));
            w.extend(self.command(0, &[Amf0Value::from("FCPublish"), 3.0.into(), Amf0Value::Null, key_v.clone()]));
            w.extend(self.command(0, &[Amf0Value::from("createStream"), 4.0.into(), Amf0Value::Null]));
            w.extend(self.command(
                1,
                &[Amf0Value::from("publish"), 5.0.into(), Amf0Value::Null, key_v, Amf0Value::from("live")],
            ));
            w
        }

        fn media(&self) -> Vec<u8> {
            let mut w = Vec::new();
            let meta = amf0::encode_all(&[
                Amf0Value::from("@setDataFrame"),
                Amf0Value::from("onMetaData"),
                Amf0Value::EcmaArray(vec![
                    ("width".into(), 1280.0.into()),
                    ("height".into(), 720.0.into()),
                    ("framerate".into(), 30.0.into()),
                    ("videocodecid".into(), 7.0.into()),
                    ("audiocodecid".into(), 10.0.into()),
                    ("audiosamplerate".into(), 44100.0.into()),
                    ("stereo".into(), true.into()),
                    ("encoder".into(), "Lavf61".into()),
                ]),
            ]);
            w.extend(self.message(4, 0, message_type::DATA_AMF0, 1, meta));
            let mut seq = vec![0x17, 0, 0, 0, 0];
            seq.extend(crate::test_support::test_avc_record(1280, 720));
            w.extend(self.message(6, 0, message_type::VIDEO, 1, seq));
            w.extend(self.message(4, 0, message_type::AUDIO, 1, vec![0xaf, 0, 0x12, 0x10]));
            // A keyframe big enough to span many chunks.
            let mut key = vec![0x17, 1, 0, 0, 0x42];
            key.extend_from_slice(&5000u32.to_be_bytes());
            key.push(0x65);
            key.extend((0..4999).map(|i| (i % 200) as u8));
            w.extend(self.message(6, 33, message_type::VIDEO, 1, key));
            w.extend(self.message(4, 23, message_type::AUDIO, 1, vec![0xaf, 1, 0x21, 0x00, 0x49]));
            w
        }

        fn delete_stream(&self) -> Vec<u8> {
            let mut w = self.command(0, &[Amf0Value::from("FCUnpublish"), 6.0.into(), Amf0Value::Null, KEY.into()]);
            w.extend(self.command(0, &[Amf0Value::from("deleteStream"), 7.0.into(), Amf0Value::Null, 1.0.into()]));
            w
        }

        fn commands(&self) -> Vec<Vec<Amf0Value>> {
            self.replies
                .iter()
                .filter(|m| m.type_id == message_type::COMMAND_AMF0)
                .map(|m| amf0::decode_all(&m.payload).unwrap())
                .collect()
        }
    }

    /// Feeds `bytes` in pieces chosen by `seed` (0: byte by byte), relaying replies to the client.
    fn feed(
        server: &mut ServerSession,
        client: &mut TestClient,
        bytes: &[u8],
        seed: u64,
    ) -> (Vec<Event>, Option<Vec<u8>>) {
        let mut events = Vec::new();
        let mut c2 = None;
        let mut x = seed;
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = if seed == 0 {
                1
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                1 + (x % 700) as usize
            };
            let (piece, tail) = rest.split_at(n.min(rest.len()));
            rest = tail;
            // Odd seeds read straight into the session's buffer once it offers one.
            match server.input_buffer(piece.len()).filter(|_| seed & 1 == 1) {
                Some(buffer) => {
                    buffer.extend_from_slice(piece);
                    server.handle_appended(piece.len());
                }
                None => server.handle_input(piece),
            }
            while let Some(out) = server.poll_transmit() {
                if let Some(c) = client.receive(&out) {
                    c2 = Some(c);
                }
            }
            events.extend(std::iter::from_fn(|| server.poll_event()));
        }
        (events, c2)
    }

    /// Handshake + connect + createStream + publish; returns the publish request id.
    fn connect_and_publish(server: &mut ServerSession, client: &mut TestClient, seed: u64) -> PublishRequestId {
        let (events, c2) = feed(server, client, &client.c0c1(), seed);
        assert!(events.is_empty());
        let mut w = c2.expect("S0/S1/S2");
        w.extend(client.set_chunk_size(60));
        w.extend(client.connect("live"));
        w.extend(client.create_and_publish(KEY));
        let (events, _) = feed(server, client, &w, seed);
        match events.as_slice() {
            [Event::PublishRequested { request_id, app, stream_key }] => {
                assert_eq!((app.as_str(), stream_key.as_str()), ("live", KEY));
                *request_id
            }
            other => panic!("unexpected events {other:?}"),
        }
    }

    #[test]
    fn full_publish_flow_with_any_split() {
        for seed in [0, 1, 7, 0xdead_beef, 12345] {
            let mut server = ServerSession::new(SessionConfig::default());
            let mut client = TestClient::new();
            let id = connect_and_publish(&mut server, &mut client, seed);

            // Replies to connect and createStream.
            let types: Vec<_> = client.replies.iter().map(|m| m.type_id).collect();
            assert_eq!(
                &types[..3],
                &[message_type::WINDOW_ACK_SIZE, message_type::SET_PEER_BANDWIDTH, message_type::SET_CHUNK_SIZE]
            );
            assert_eq!(client.dec.chunk_size(), 4096);
            let cmds = client.commands();
            assert_eq!(cmds[0][0], Amf0Value::from("_result"));
            assert_eq!(cmds[0][1], Amf0Value::Number(1.0));
            assert_eq!(cmds[0][3].get("code"), Some(&Amf0Value::from("NetConnection.Connect.Success")));
            let create = cmds.iter().find(|c| c[1] == Amf0Value::Number(4.0)).unwrap();
            assert_eq!(create[3], Amf0Value::Number(1.0));

            // Media before the decision is dropped.
            let (events, _) = {
                let w = client.media();
                feed(&mut server, &mut client, &w, seed)
            };
            assert!(events.is_empty());
            assert_eq!(server.dropped_media(), 5);

            server.accept_publish(id).unwrap();
            assert_eq!(server.accept_publish(id), Err(DecisionError::UnknownRequest(id)));
            let out = server.poll_transmit().unwrap();
            client.receive(&out);
            let status = client.commands().pop().unwrap();
            assert_eq!(status[0], Amf0Value::from("onStatus"));
            assert_eq!(status[3].get("code"), Some(&Amf0Value::from("NetStream.Publish.Start")));
            assert!(client.replies.iter().any(|m| m.type_id == message_type::USER_CONTROL));
            assert_eq!(server.publishing_stream_key(), Some(KEY));

            let (events, _) = {
                let w = client.media();
                feed(&mut server, &mut client, &w, seed)
            };
            assert_eq!(events.len(), 5, "{events:?}");
            let Event::Metadata(meta) = &events[0] else { panic!("{:?}", events[0]) };
            assert_eq!((meta.width, meta.height, meta.framerate), (Some(1280.0), Some(720.0), Some(30.0)));
            assert_eq!(meta.video_codec_id, Some(MetaCodecId::Number(7.0)));
            assert_eq!((meta.stereo, meta.encoder.as_deref()), (Some(true), Some("Lavf61")));
            let Event::Video { timestamp_ms: 0, payload } = &events[1] else { panic!() };
            let Ok(VideoTag::AvcSequenceHeader(avc)) = flv::parse_video_tag(0, payload) else { panic!() };
            assert_eq!((avc.width, avc.height, avc.codec_string().as_str()), (1280, 720, "avc1.64001f"));
            let Event::Audio { timestamp_ms: 0, payload } = &events[2] else { panic!() };
            let Ok(AudioTag::AacSequenceHeader(aac)) = flv::parse_audio_tag(0, payload) else { panic!() };
            assert_eq!((aac.sample_rate, aac.channels, aac.codec_string().as_str()), (44100, 2, "mp4a.40.2"));
            let Event::Video { timestamp_ms: 33, payload } = &events[3] else { panic!() };
            let Ok(VideoTag::Frame(frame)) = flv::parse_video_tag(33, payload) else { panic!() };
            assert_eq!((frame.keyframe, frame.pts_ms, frame.dts_ms, frame.nalus.len()), (true, 33 + 0x42, 33, 5004));
            assert_eq!(crate::codec::h264::avcc_nal_units(&frame.nalus, avc.nal_length_size).count(), 1);
            let Event::Audio { timestamp_ms: 23, payload } = &events[4] else { panic!() };
            assert!(matches!(flv::parse_audio_tag(23, payload), Ok(AudioTag::Frame(f)) if f.data.len() == 3));

            let (events, _) = {
                let w = client.delete_stream();
                feed(&mut server, &mut client, &w, seed)
            };
            assert_eq!(events, vec![Event::Unpublished]);
            server.handle_eof();
            assert_eq!(server.poll_event(), Some(Event::Closed(CloseReason::PeerClosed)));
            assert_eq!(server.poll_event(), None);
            assert!(server.is_closed());
        }
    }

    #[test]
    fn wrong_app_is_rejected() {
        let mut server = ServerSession::new(SessionConfig::default());
        let mut client = TestClient::new();
        let (_, c2) = {
            let w = client.c0c1();
            feed(&mut server, &mut client, &w, 3)
        };
        let mut w = c2.unwrap();
        w.extend(client.connect("admin"));
        let (events, _) = feed(&mut server, &mut client, &w, 3);
        assert_eq!(events, vec![Event::Closed(CloseReason::AppRejected { app: "admin".into() })]);
        let cmds = client.commands();
        assert_eq!(cmds[0][0], Amf0Value::from("_error"));
        assert_eq!(cmds[0][3].get("code"), Some(&Amf0Value::from("NetConnection.Connect.Rejected")));
        // Input after close is ignored.
        server.handle_input(&[0xff; 100]);
        assert_eq!(server.poll_event(), None);
    }

    #[test]
    fn app_with_trailing_slash_and_query_is_accepted() {
        let mut server = ServerSession::new(SessionConfig::default());
        let mut client = TestClient::new();
        let (_, c2) = {
            let w = client.c0c1();
            feed(&mut server, &mut client, &w, 3)
        };
        let mut w = c2.unwrap();
        w.extend(client.connect("live/?token=x"));
        let (events, _) = feed(&mut server, &mut client, &w, 3);
        assert!(events.is_empty());
        assert_eq!(server.app(), Some("live"));
    }

    #[test]
    fn rejected_publish_closes_with_bad_name() {
        let mut server = ServerSession::new(SessionConfig::default());
        let mut client = TestClient::new();
        let id = connect_and_publish(&mut server, &mut client, 99);
        assert!(server.reject_publish(PublishRequestId(id.0 + 1), RejectReason::BadName).is_err());
        server.reject_publish(id, RejectReason::BadName).unwrap();
        client.receive(&server.poll_transmit().unwrap());
        let status = client.commands().pop().unwrap();
        assert_eq!(status[3].get("code"), Some(&Amf0Value::from("NetStream.Publish.BadName")));
        assert_eq!(server.poll_event(), Some(Event::Closed(CloseReason::PublishRejected)));
        assert!(server.accept_publish(id).is_err());
    }

    #[test]
    fn eof_while_publishing_unpublishes_then_closes() {
        let mut server = ServerSession::new(SessionConfig::default());
        let mut client = TestClient::new();
        let id = connect_and_publish(&mut server, &mut client, 5);
        server.accept_publish(id).unwrap();
        server.handle_eof();
        let events: Vec<_> = std::iter::from_fn(|| server.poll_event()).collect();
        assert_eq!(events, vec![Event::Unpublished, Event::Closed(CloseReason::PeerClosed)]);
    }

    fn connected_session() -> (ServerSession, TestClient) {
        let mut server = ServerSession::new(SessionConfig::default());
        let mut client = TestClient::new();
        let (_, c2) = {
            let w = client.c0c1();
            feed(&mut server, &mut client, &w, 11)
        };
        let mut w = c2.unwrap();
        w.extend(client.connect("live"));
        let (events, _) = feed(&mut server, &mut client, &w, 11);
        assert!(events.is_empty());
        (server, client)
    }

    fn closed_reason(server: &mut ServerSession) -> CloseReason {
        let events: Vec<_> = std::iter::from_fn(|| server.poll_event()).collect();
        match events.last() {
            Some(Event::Closed(reason)) => reason.clone(),
            _ => panic!("not closed: {events:?}"),
        }
    }

    #[test]
    fn bad_handshake_version_closes() {
        let mut server = ServerSession::new(SessionConfig::default());
        server.handle_input(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            closed_reason(&mut server),
            CloseReason::Protocol(SessionError::Handshake(HandshakeError::UnsupportedVersion(b'G')))
        );
        assert!(server.poll_transmit().is_none());
    }

    #[test]
    fn garbage_after_handshake_closes_with_typed_error() {
        let (mut server, _) = connected_session();
        server.handle_input(&[0xc7, 1, 2, 3]);
        assert_eq!(
            closed_reason(&mut server),
            CloseReason::Protocol(SessionError::Chunk(ChunkError::MissingPreviousHeader { csid: 7, fmt: 3 }))
        );
    }

    #[test]
    fn command_before_connect_closes() {
        let mut server = ServerSession::new(SessionConfig::default());
        let mut client = TestClient::new();
        let (_, c2) = {
            let w = client.c0c1();
            feed(&mut server, &mut client, &w, 2)
        };
        let mut w = c2.unwrap();
        w.extend(client.command(0, &[Amf0Value::from("createStream"), 2.0.into(), Amf0Value::Null]));
        server.handle_input(&w);
        assert!(matches!(
            closed_reason(&mut server),
            CloseReason::Protocol(SessionError::UnexpectedCommand { command, .. }) if command == "createStream"
        ));
    }

    #[test]
    fn malformed_commands_close() {
        type Check = fn(&SessionError) -> bool;
        let cases: Vec<(Vec<u8>, Check)> = vec![
            (vec![0x02, 0x00, 0x10, b'x'], |e| matches!(e, SessionError::Amf0 { error: Amf0Error::Incomplete, .. })),
            (vec![0x00, 0, 0, 0, 0, 0, 0, 0, 0], |e| matches!(e, SessionError::BadCommand { .. })),
            (amf0::encode_all(&["publish".into()]), |e| matches!(e, SessionError::BadCommand { .. })),
            (amf0::encode_all(&["publish".into(), 5.0.into(), Amf0Value::Null]), |e| {
                matches!(e, SessionError::BadCommand { problem: "no stream key", .. })
            }),
            (amf0::encode_all(&["connect".into(), 1.0.into(), obj(&[("app", "live".into())])]), |e| {
                matches!(e, SessionError::UnexpectedCommand { .. })
            }),
        ];
        for (payload, check) in cases {
            let (mut server, client) = connected_session();
            server.handle_input(&client.message(3, 0, message_type::COMMAND_AMF0, 0, payload));
            match closed_reason(&mut server) {
                CloseReason::Protocol(e) => assert!(check(&e), "{e:?}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn oversized_message_closes() {
        let (mut server, _) = connected_session();
        // fmt 0 header declaring a 16 MiB - 1 message against a 1 MiB limit is fine by default...
        let mut small = ServerSession::new(SessionConfig { max_message_size: 1 << 20, ..SessionConfig::default() });
        let mut client = TestClient::new();
        let (_, c2) = {
            let w = client.c0c1();
            feed(&mut small, &mut client, &w, 4)
        };
        small.handle_input(&c2.unwrap());
        small.handle_input(&[0x03, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0]);
        assert!(matches!(
            closed_reason(&mut small),
            CloseReason::Protocol(SessionError::Chunk(ChunkError::MessageTooLarge { size: 0xff_ffff, .. }))
        ));
        // ...and a zero chunk size is refused.
        server.handle_input(&[0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            closed_reason(&mut server),
            CloseReason::Protocol(SessionError::Chunk(ChunkError::InvalidChunkSize(0)))
        );
    }

    #[test]
    fn small_limits_hold_until_the_stream_key_is_accepted() {
        let limits = ChunkLimits::PRE_PUBLISH;
        let big = vec![0x27; limits.max_message_size as usize + 1];
        // Connected, not publishing: a large message of any type, or a large chunk size, closes.
        for type_id in [message_type::COMMAND_AMF0, message_type::VIDEO, message_type::DATA_AMF0] {
            let (mut server, client) = connected_session();
            server.handle_input(&client.message(6, 0, type_id, 1, big.clone()));
            assert_eq!(
                closed_reason(&mut server),
                CloseReason::Protocol(SessionError::Chunk(ChunkError::MessageTooLarge {
                    csid: 6,
                    size: big.len() as u32,
                    max: limits.max_message_size
                }))
            );
        }
        let (mut server, mut client) = connected_session();
        server.handle_input(&client.set_chunk_size(1 << 20));
        assert!(matches!(
            closed_reason(&mut server),
            CloseReason::Protocol(SessionError::Chunk(ChunkError::ChunkSizeTooLarge { size: 0x10_0000, .. }))
        ));
        // Publish requested but not yet answered: still a stranger.
        let mut server = ServerSession::new(SessionConfig::default());
        let mut client = TestClient::new();
        connect_and_publish(&mut server, &mut client, 3);
        server.handle_input(&client.message(6, 0, message_type::VIDEO, 1, big.clone()));
        assert!(matches!(
            closed_reason(&mut server),
            CloseReason::Protocol(SessionError::Chunk(ChunkError::MessageTooLarge { .. }))
        ));

        // Accepted: a keyframe of several MiB in large chunks arrives whole.
        let mut server = ServerSession::new(SessionConfig::default());
        let mut client = TestClient::new();
        let id = connect_and_publish(&mut server, &mut client, 3);
        server.accept_publish(id).unwrap();
        let mut w = client.set_chunk_size(1 << 20);
        let keyframe = vec![0x17; 3 << 20];
        w.extend(client.message(6, 40, message_type::VIDEO, 1, keyframe.clone()));
        let (events, _) = feed(&mut server, &mut client, &w, 5);
        assert_eq!(events, vec![Event::Video { timestamp_ms: 40, payload: keyframe.into() }]);
        assert!(!server.is_closed());
    }

    #[test]
    fn acknowledges_received_bytes_per_window() {
        let (mut server, mut client) = connected_session();
        let mut w = Vec::new();
        client.enc.encode(&RtmpMessage::window_ack_size(1000), &mut w).unwrap();
        w.extend(client.message(
            8,
            0,
            message_type::DATA_AMF0,
            0,
            amf0::encode_all(&["x".repeat(1200).as_str().into()]),
        ));
        let before = client.replies.len();
        feed(&mut server, &mut client, &w, 8);
        let acks: Vec<_> =
            client.replies[before..].iter().filter(|m| m.type_id == message_type::ACKNOWLEDGEMENT).collect();
        assert_eq!(acks.len(), 1);
        let seq = u32::from_be_bytes(acks[0].payload[..4].try_into().unwrap());
        assert!(seq >= 1000);
    }

    #[test]
    fn answers_ping_requests() {
        let (mut server, mut client) = connected_session();
        let mut w = Vec::new();
        client.enc.encode(&RtmpMessage::user_control(user_control::PING_REQUEST, 777), &mut w).unwrap();
        let before = client.replies.len();
        feed(&mut server, &mut client, &w, 8);
        let pong = &client.replies[before];
        assert_eq!(&pong.payload[..], &[0, 7, 0, 0, 3, 9]);
    }

    #[test]
    fn timestamps_extend_past_32_bits_and_aggregates_unpack() {
        let mut server = ServerSession::new(SessionConfig::default());
        let mut client = TestClient::new();
        let id = connect_and_publish(&mut server, &mut client, 21);
        server.accept_publish(id).unwrap();
        let mut w = Vec::new();
        for ts in [0xffff_fff0u32, 0x10, 0xffff_fffa, 0x20] {
            w.extend(client.message(6, ts, message_type::VIDEO, 1, vec![0x27, 1, 0, 0, 0]));
        }
        // Aggregate: two FLV tags at 100 and 140, renormalised to 5000 and 5040.
        let mut agg = Vec::new();
        for (ts, tag) in [(100u32, 9u8), (140, 8)] {
            let body: &[u8] = if tag == 9 { &[0x27, 1, 0, 0, 0] } else { &[0xaf, 1, 0xaa] };
            agg.extend_from_slice(&[tag, 0, 0, body.len() as u8, 0, (ts >> 8) as u8, ts as u8, 0, 0, 0, 0]);
            agg.extend_from_slice(body);
            agg.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
        }
        w.extend(client.message(7, 5000, message_type::AGGREGATE, 1, agg));
        let (events, _) = feed(&mut server, &mut client, &w, 21);
        let ts: Vec<_> = events
            .iter()
            .map(|e| match e {
                Event::Video { timestamp_ms, .. } => ('v', *timestamp_ms),
                Event::Audio { timestamp_ms, .. } => ('a', *timestamp_ms),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            ts,
            vec![
                ('v', 0xffff_fff0),
                ('v', (1 << 32) + 0x10),
                ('v', 0xffff_fffa),
                ('v', (1 << 32) + 0x20),
                // Video is past its wrap, so 5000 is in the second epoch; audio has not wrapped.
                ('v', (1 << 32) + 5000),
                ('a', 5040)
            ]
        );
    }

    #[test]
    fn truncated_aggregate_closes() {
        let mut server = ServerSession::new(SessionConfig::default());
        let mut client = TestClient::new();
        let id = connect_and_publish(&mut server, &mut client, 21);
        server.accept_publish(id).unwrap();
        server.handle_input(&client.message(
            7,
            0,
            message_type::AGGREGATE,
            1,
            vec![9, 0, 0, 50, 0, 0, 0, 0, 0, 0, 0, 1],
        ));
        let events: Vec<_> = std::iter::from_fn(|| server.poll_event()).collect();
        assert_eq!(
            events,
            vec![
                Event::Unpublished,
                Event::Closed(CloseReason::Protocol(SessionError::Aggregate(FlvError::Incomplete)))
            ]
        );
    }

    #[test]
    fn empty_stream_key_is_rejected_without_asking() {
        let (mut server, client) = connected_session();
        server.handle_input(&client.create_and_publish(""));
        assert_eq!(closed_reason(&mut server), CloseReason::PublishRejected);
    }

    #[test]
    fn meta_codec_fourcc() {
        assert_eq!(MetaCodecId::Number(f64::from(u32::from_be_bytes(*b"hvc1"))).fourcc(), Some(*b"hvc1"));
        assert_eq!(MetaCodecId::Name("av01".into()).fourcc(), Some(*b"av01"));
        assert_eq!(MetaCodecId::Number(7.0).fourcc(), None);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let mut server = ServerSession::new(SessionConfig::default());
            server.handle_input(&bytes);
            let _ = server.poll_transmit();
            while server.poll_event().is_some() {}
        }

        #[test]
        fn random_bytes_after_connect_never_panic(
            pieces in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0..8)
        ) {
            let mut server = ServerSession::new(SessionConfig::default());
            let mut client = TestClient::new();
            let id = connect_and_publish(&mut server, &mut client, 77);
            server.accept_publish(id).unwrap();
            for p in pieces {
                // Valid chunk headers around random payloads reach the command and media paths.
                let mut framed = client.message(3, 0, message_type::COMMAND_AMF0, 0, p.clone());
                framed.extend(client.message(6, 0, message_type::VIDEO, 1, p.clone()));
                framed.extend(client.message(7, 0, message_type::AGGREGATE, 1, p.clone()));
                framed.extend(client.message(4, 0, message_type::DATA_AMF0, 1, p.clone()));
                server.handle_input(&framed);
                server.handle_input(&p);
                let _ = server.poll_transmit();
                while let Some(e) = server.poll_event() {
                    if let Event::Video { timestamp_ms, payload } = e {
                        let _ = flv::parse_video_tag(timestamp_ms, &payload);
                    }
                }
            }
        }
    }
}
