//! The RTMP chunk stream: messages cut into chunks on numbered chunk streams (csid), with header
//! compression (fmt 0-3) relative to the previous chunk of the same csid.
//!
//! [`ChunkDecoder`] buffers input, parses whole chunks off the front (a chunk whose bytes have not
//! all arrived stays in the buffer untouched: *incomplete* is `Ok(None)`, never an error),
//! reassembles messages per csid and returns them one at a time. It applies the two messages that
//! change how chunks are read — Set Chunk Size and Abort — itself, and remembers the peer's Window
//! Acknowledgement Size so the session can acknowledge received bytes.
//!
//! [`ChunkEncoder`] writes our messages: fmt 0 for the first chunk of a message, fmt 3 for the
//! rest. We send few messages, so header compression would buy nothing.
//!
//! Limits ([`ChunkLimits`]): message size, chunk size, bytes held in partly received messages
//! across all chunk streams, and the number of chunk streams with state ([`MAX_CHUNK_STREAMS`]).
//! Buffered input is at most one chunk. Before a publisher is authenticated the session holds
//! the decoder to [`ChunkLimits::PRE_PUBLISH`] (commands are small), so a connection that has not
//! shown a stream key costs a few hundred KiB at most; once the key is accepted it raises them
//! ([`ChunkDecoder::set_limits`]) for media.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

/// Chunk size both sides start with.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Largest chunk size accepted: a message cannot be longer than 2^24 - 1 bytes anyway.
pub const MAX_CHUNK_SIZE: u32 = 1 << 24;
/// Default for the largest message accepted (the 24-bit length field allows up to 16 MiB - 1).
pub const DEFAULT_MAX_MESSAGE_SIZE: u32 = 16 * 1024 * 1024;
/// Most chunk streams that may carry state at once. Encoders use a handful (2-8).
pub const MAX_CHUNK_STREAMS: usize = 64;
/// Most bytes held across all partly received messages.
pub const MAX_PENDING_BYTES: usize = 32 * 1024 * 1024;
/// Largest chunk stream id that can be written (3-byte basic header).
pub const MAX_CSID: u32 = 65_599;

/// How much a [`ChunkDecoder`] accepts from its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Largest message, by the length its header declares.
    pub max_message_size: u32,
    /// Largest chunk size the peer may set (1..=[`MAX_CHUNK_SIZE`]).
    pub max_chunk_size: u32,
    /// Most bytes held across all partly received messages.
    pub max_pending_bytes: usize,
    /// Messages up to this long are cut out of shared blocks of this size: one allocation per
    /// block, not one per message (a frame of a few KiB is a slow size for malloc). 0: one per
    /// message.
    pub block_size: usize,
}

impl ChunkLimits {
    /// Before the stream key is accepted: `connect`, `createStream` and `publish` are a few
    /// hundred bytes, encoders set chunk sizes of 4 KiB or so, and none sends media before
    /// `NetStream.Publish.Start` (ffmpeg and OBS wait for it).
    pub const PRE_PUBLISH: ChunkLimits = ChunkLimits {
        max_message_size: 64 * 1024,
        max_chunk_size: 64 * 1024,
        max_pending_bytes: 256 * 1024,
        block_size: 0,
    };

    /// A publisher's media: keyframes of several MiB.
    pub const PUBLISHING: ChunkLimits = ChunkLimits {
        max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        max_chunk_size: MAX_CHUNK_SIZE,
        max_pending_bytes: MAX_PENDING_BYTES,
        block_size: 64 * 1024,
    };
}

/// RTMP message type ids.
pub mod message_type {
    pub const SET_CHUNK_SIZE: u8 = 1;
    pub const ABORT: u8 = 2;
    pub const ACKNOWLEDGEMENT: u8 = 3;
    pub const USER_CONTROL: u8 = 4;
    pub const WINDOW_ACK_SIZE: u8 = 5;
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    pub const AUDIO: u8 = 8;
    pub const VIDEO: u8 = 9;
    pub const DATA_AMF3: u8 = 15;
    pub const COMMAND_AMF3: u8 = 17;
    pub const DATA_AMF0: u8 = 18;
    pub const COMMAND_AMF0: u8 = 20;
    pub const AGGREGATE: u8 = 22;
}

/// User control event types (message type 4).
pub mod user_control {
    pub const STREAM_BEGIN: u16 = 0;
    pub const STREAM_EOF: u16 = 1;
    pub const PING_REQUEST: u16 = 6;
    pub const PING_RESPONSE: u16 = 7;
}

/// One reassembled RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpMessage {
    /// Chunk stream it arrived on / is sent on.
    pub csid: u32,
    /// Timestamp in milliseconds (wraps at 2^32).
    pub timestamp: u32,
    /// See [`message_type`].
    pub type_id: u8,
    /// Message stream id (0 for control and connection-level commands).
    pub stream_id: u32,
    pub payload: Bytes,
}

/// Chunk stream id for protocol control messages.
pub const CSID_CONTROL: u32 = 2;

impl RtmpMessage {
    fn control(type_id: u8, payload: Vec<u8>) -> Self {
        RtmpMessage { csid: CSID_CONTROL, timestamp: 0, type_id, stream_id: 0, payload: payload.into() }
    }

    pub fn set_chunk_size(size: u32) -> Self {
        Self::control(message_type::SET_CHUNK_SIZE, size.to_be_bytes().to_vec())
    }

    pub fn abort(csid: u32) -> Self {
        Self::control(message_type::ABORT, csid.to_be_bytes().to_vec())
    }

    pub fn acknowledgement(sequence: u32) -> Self {
        Self::control(message_type::ACKNOWLEDGEMENT, sequence.to_be_bytes().to_vec())
    }

    pub fn window_ack_size(size: u32) -> Self {
        Self::control(message_type::WINDOW_ACK_SIZE, size.to_be_bytes().to_vec())
    }

    /// `limit_type`: 0 hard, 1 soft, 2 dynamic.
    pub fn set_peer_bandwidth(size: u32, limit_type: u8) -> Self {
        let mut p = size.to_be_bytes().to_vec();
        p.push(limit_type);
        Self::control(message_type::SET_PEER_BANDWIDTH, p)
    }

    /// User control message: event type then its data (a stream id or a timestamp).
    pub fn user_control(event: u16, value: u32) -> Self {
        let mut p = event.to_be_bytes().to_vec();
        p.extend_from_slice(&value.to_be_bytes());
        Self::control(message_type::USER_CONTROL, p)
    }
}

/// Why the chunk stream cannot be read (or a message cannot be written).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ChunkError {
    #[error("chunk stream {csid}: fmt {fmt} header without a previous fmt 0 header")]
    MissingPreviousHeader { csid: u32, fmt: u8 },
    #[error("chunk stream {csid}: new message header while a message is still being reassembled")]
    InterruptedMessage { csid: u32 },
    #[error("chunk stream {csid}: message of {size} bytes exceeds the limit of {max}")]
    MessageTooLarge { csid: u32, size: u32, max: u32 },
    #[error("invalid chunk size {0} (must be 1..={MAX_CHUNK_SIZE})")]
    InvalidChunkSize(u32),
    #[error("chunk size {size} exceeds the limit of {max}")]
    ChunkSizeTooLarge { size: u32, max: u32 },
    #[error("more than {MAX_CHUNK_STREAMS} chunk streams in use")]
    TooManyChunkStreams,
    #[error("more than {max} bytes in partly received messages")]
    TooManyPendingBytes { max: usize },
    #[error("protocol control message type {type_id} with a {len}-byte payload")]
    InvalidControlMessage { type_id: u8, len: usize },
    #[error("chunk stream id {0} cannot be written")]
    InvalidCsid(u32),
}

#[derive(Debug, Default)]
struct ChunkStreamState {
    timestamp: u32,
    /// Added to `timestamp` when a fmt 3 chunk starts a new message. After a fmt 0 header this is
    /// the absolute timestamp, as ffmpeg reads and writes it.
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The last fmt 0-2 header used an extended timestamp, so fmt 3 chunks carry one too.
    extended: bool,
    /// Payload received so far of the message being reassembled.
    partial: Option<BytesMut>,
    /// `partial` was given the message's whole length up front, and that length is what it
    /// counts in the decoder's pending bytes.
    reserved: bool,
}

impl ChunkStreamState {
    /// What the partial message counts in the decoder's pending bytes.
    fn pending(&self, partial: &BytesMut) -> usize {
        if self.reserved {
            self.length as usize
        } else {
            partial.len()
        }
    }
}

/// The chunk streams with state, by csid. Encoders use a handful, so a list searched in order
/// beats hashing the csid of every chunk (that was 5% of an ingest node's samples).
#[derive(Debug, Default)]
struct ChunkStreams(Vec<(u32, ChunkStreamState)>);

impl ChunkStreams {
    fn get(&self, csid: u32) -> Option<&ChunkStreamState> {
        self.0.iter().find(|(id, _)| *id == csid).map(|(_, state)| state)
    }

    fn get_mut(&mut self, csid: u32) -> Option<&mut ChunkStreamState> {
        self.0.iter_mut().find(|(id, _)| *id == csid).map(|(_, state)| state)
    }

    fn insert(&mut self, csid: u32, state: ChunkStreamState) {
        match self.0.iter().position(|(id, _)| *id == csid) {
            Some(at) => self.0[at].1 = state,
            None => self.0.push((csid, state)),
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Incremental chunk stream reader. Feed bytes with [`ChunkDecoder::handle_input`], then call
/// [`ChunkDecoder::poll_message`] until it returns `Ok(None)`.
#[derive(Debug)]
pub struct ChunkDecoder {
    buf: BytesMut,
    chunk_size: u32,
    limits: ChunkLimits,
    streams: ChunkStreams,
    /// What is left of the block messages are cut from (see [`ChunkLimits::block_size`]).
    block: BytesMut,
    pending_bytes: usize,
    bytes_received: u64,
    ack_window: u32,
    acked_at: u64,
}

impl ChunkDecoder {
    /// `max_message_size` caps single messages (the other limits are [`ChunkLimits::PUBLISHING`]'s);
    /// `ack_window` is how many received bytes to acknowledge at a time until the peer sends its
    /// own Window Acknowledgement Size.
    pub fn new(max_message_size: u32, ack_window: u32) -> Self {
        Self::with_limits(ChunkLimits { max_message_size, ..ChunkLimits::PUBLISHING }, ack_window)
    }

    /// A decoder held to `limits`; `ack_window` as for [`ChunkDecoder::new`].
    pub fn with_limits(limits: ChunkLimits, ack_window: u32) -> Self {
        ChunkDecoder {
            buf: BytesMut::new(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            limits,
            streams: ChunkStreams::default(),
            block: BytesMut::new(),
            pending_bytes: 0,
            bytes_received: 0,
            ack_window,
            acked_at: 0,
        }
    }

    /// Current incoming chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The limits in force.
    pub fn limits(&self) -> ChunkLimits {
        self.limits
    }

    /// Change the limits for the chunks that follow (raised once the publisher is
    /// authenticated). Messages and a chunk size already accepted stay as they are.
    pub fn set_limits(&mut self, limits: ChunkLimits) {
        self.limits = limits;
    }

    /// Bytes held for the peer: unparsed input plus partly received messages.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len() + self.pending_bytes
    }

    /// Bytes of chunk stream received so far (the handshake is not counted).
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received
    }

    /// Buffers input; parse it with [`ChunkDecoder::poll_message`].
    pub fn handle_input(&mut self, bytes: &[u8]) {
        self.bytes_received += bytes.len() as u64;
        self.buf.extend_from_slice(bytes);
    }

    /// The input buffer with room for at least `len` more bytes, for a read straight into it
    /// (saving the copy [`ChunkDecoder::handle_input`] makes). Only append to it, then say how
    /// much with [`ChunkDecoder::handle_appended`].
    pub fn input_buffer(&mut self, len: usize) -> &mut BytesMut {
        self.buf.reserve(len);
        &mut self.buf
    }

    /// `len` bytes were appended to [`ChunkDecoder::input_buffer`].
    pub fn handle_appended(&mut self, len: usize) {
        self.bytes_received += len as u64;
    }

    /// The sequence number to acknowledge, once a window's worth of bytes has arrived since the
    /// last acknowledgement.
    #[must_use]
    pub fn poll_ack(&mut self) -> Option<u32> {
        if self.ack_window > 0 && self.bytes_received - self.acked_at >= u64::from(self.ack_window) {
            self.acked_at = self.bytes_received;
            // The sequence number is a byte count modulo 2^32.
            Some(self.bytes_received as u32)
        } else {
            None
        }
    }

    /// The next complete message, `Ok(None)` when more input is needed.
    pub fn poll_message(&mut self) -> Result<Option<RtmpMessage>, ChunkError> {
        loop {
            let Some(chunk) = self.parse_chunk()? else { return Ok(None) };
            if let Some(msg) = chunk {
                self.apply_control(&msg)?;
                return Ok(Some(msg));
            }
        }
    }

    fn apply_control(&mut self, msg: &RtmpMessage) -> Result<(), ChunkError> {
        let value = || -> Result<u32, ChunkError> {
            let p = &msg.payload;
            if p.len() < 4 {
                return Err(ChunkError::InvalidControlMessage { type_id: msg.type_id, len: p.len() });
            }
            Ok(u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
        };
        match msg.type_id {
            message_type::SET_CHUNK_SIZE => {
                let size = validate_chunk_size(value()?)?;
                if size > self.limits.max_chunk_size {
                    return Err(ChunkError::ChunkSizeTooLarge { size, max: self.limits.max_chunk_size });
                }
                self.chunk_size = size;
            }
            message_type::ABORT => {
                if let Some(s) = self.streams.get_mut(value()?) {
                    if let Some(p) = s.partial.take() {
                        self.pending_bytes -= s.pending(&p);
                        s.reserved = false;
                    }
                }
            }
            message_type::WINDOW_ACK_SIZE => self.ack_window = value()?,
            _ => {}
        }
        Ok(())
    }

    /// Parses one chunk off the front of the buffer. `Ok(None)`: incomplete, nothing consumed.
    /// `Ok(Some(None))`: a chunk was consumed but its message is not complete yet.
    fn parse_chunk(&mut self) -> Result<Option<Option<RtmpMessage>>, ChunkError> {
        let buf = &self.buf[..];
        let Some(&b0) = buf.first() else { return Ok(None) };
        let fmt = b0 >> 6;
        let (csid, mut pos) = match b0 & 0x3f {
            0 => match buf.get(1) {
                Some(&b1) => (64 + u32::from(b1), 2),
                None => return Ok(None),
            },
            1 => match (buf.get(1), buf.get(2)) {
                (Some(&b1), Some(&b2)) => (64 + u32::from(b1) + 256 * u32::from(b2), 3),
                _ => return Ok(None),
            },
            n => (u32::from(n), 1),
        };
        let prev = self.streams.get(csid);
        if prev.is_none() {
            if fmt != 0 {
                return Err(ChunkError::MissingPreviousHeader { csid, fmt });
            }
            if self.streams.len() >= MAX_CHUNK_STREAMS {
                return Err(ChunkError::TooManyChunkStreams);
            }
        }
        let in_progress = prev.is_some_and(|p| p.partial.is_some());
        if fmt != 3 && in_progress {
            return Err(ChunkError::InterruptedMessage { csid });
        }

        let header_len = [11, 7, 3, 0][usize::from(fmt)];
        let Some(header) = buf.get(pos..pos + header_len) else { return Ok(None) };
        pos += header_len;

        let u24 = |b: &[u8]| u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let ts_field = if fmt < 3 { u24(&header[0..3]) } else { 0 };
        let extended = if fmt < 3 { ts_field == 0xff_ffff } else { prev.is_some_and(|p| p.extended) };
        let ts_value = if extended {
            let Some(ext) = buf.get(pos..pos + 4) else { return Ok(None) };
            pos += 4;
            u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]])
        } else {
            ts_field
        };

        // The header as it will be after this chunk; committed only once the payload is here.
        let mut next = match prev {
            Some(p) => ChunkStreamState {
                timestamp: p.timestamp,
                delta: p.delta,
                length: p.length,
                type_id: p.type_id,
                stream_id: p.stream_id,
                extended,
                partial: None,
                reserved: p.reserved && p.partial.is_some(),
            },
            None => ChunkStreamState { extended, ..Default::default() },
        };
        match fmt {
            0 => {
                next.timestamp = ts_value;
                next.delta = ts_value;
                next.length = u24(&header[3..6]);
                next.type_id = header[6];
                next.stream_id = u32::from_le_bytes([header[7], header[8], header[9], header[10]]);
            }
            1 => {
                next.delta = ts_value;
                next.timestamp = next.timestamp.wrapping_add(ts_value);
                next.length = u24(&header[3..6]);
                next.type_id = header[6];
            }
            2 => {
                next.delta = ts_value;
                next.timestamp = next.timestamp.wrapping_add(ts_value);
            }
            _ => {
                if !in_progress {
                    next.timestamp = next.timestamp.wrapping_add(next.delta);
                }
            }
        }
        if next.length > self.limits.max_message_size {
            return Err(ChunkError::MessageTooLarge { csid, size: next.length, max: self.limits.max_message_size });
        }
        let received = prev.and_then(|p| p.partial.as_ref()).map_or(0, BytesMut::len);
        let length = next.length as usize;
        let take = (length - received).min(self.chunk_size as usize);
        if buf.len() < pos + take {
            return Ok(None);
        }
        // A message of several chunks gets its whole length at its first chunk (one allocation,
        // not one regrowth per chunk), counted in full in the pending bytes, while that fits.
        let reserve = !in_progress && length > take && self.pending_bytes + length <= self.limits.max_pending_bytes;
        // (`next.reserved` carries over only while its message is in progress.)
        let counted = if next.reserved {
            0
        } else if reserve {
            length
        } else {
            take
        };
        if self.pending_bytes + counted > self.limits.max_pending_bytes {
            return Err(ChunkError::TooManyPendingBytes { max: self.limits.max_pending_bytes });
        }

        // Commit.
        let mut partial = match self.streams.get_mut(csid).and_then(|p| p.partial.take()) {
            Some(partial) => partial,
            None if (reserve || length == take) && length <= self.limits.block_size => self.cut(length),
            None if reserve => BytesMut::with_capacity(length),
            None => BytesMut::new(),
        };
        next.reserved |= reserve;
        partial.extend_from_slice(&self.buf[pos..pos + take]);
        self.pending_bytes += counted;
        self.buf.advance(pos + take);
        let done = partial.len() == length;
        let msg = if done {
            self.pending_bytes -= next.pending(&partial);
            next.reserved = false;
            Some(RtmpMessage {
                csid,
                timestamp: next.timestamp,
                type_id: next.type_id,
                stream_id: next.stream_id,
                payload: partial.freeze(),
            })
        } else {
            next.partial = Some(partial);
            None
        };
        self.streams.insert(csid, next);
        Ok(Some(msg))
    }
}

impl ChunkDecoder {
    /// An empty buffer of capacity `length` cut from the current block, or from a new one when
    /// what is left is too short. A block is freed when the last message cut from it is.
    fn cut(&mut self, length: usize) -> BytesMut {
        if self.block.capacity() < length {
            self.block = BytesMut::with_capacity(self.limits.block_size);
        }
        let rest = self.block.split_off(length);
        std::mem::replace(&mut self.block, rest)
    }
}

fn validate_chunk_size(size: u32) -> Result<u32, ChunkError> {
    if size == 0 || size > MAX_CHUNK_SIZE {
        Err(ChunkError::InvalidChunkSize(size))
    } else {
        Ok(size)
    }
}

/// Writes messages as chunks.
#[derive(Debug)]
pub struct ChunkEncoder {
    chunk_size: u32,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        ChunkEncoder { chunk_size: DEFAULT_CHUNK_SIZE }
    }
}

impl ChunkEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Changes the outgoing chunk size. Send [`RtmpMessage::set_chunk_size`] with the old size
    /// first, then call this.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        self.chunk_size = validate_chunk_size(size)?;
        Ok(())
    }

    /// Appends `msg` as chunks to `out`.
    pub fn encode(&self, msg: &RtmpMessage, out: &mut Vec<u8>) -> Result<(), ChunkError> {
        if !(2..=MAX_CSID).contains(&msg.csid) {
            return Err(ChunkError::InvalidCsid(msg.csid));
        }
        let len = u32::try_from(msg.payload.len())
            .ok()
            .filter(|&l| l <= 0xff_ffff)
            .ok_or(ChunkError::MessageTooLarge { csid: msg.csid, size: u32::MAX, max: 0xff_ffff })?;
        let extended = msg.timestamp >= 0xff_ffff;
        write_basic_header(0, msg.csid, out);
        let ts_field = if extended { 0xff_ffff } else { msg.timestamp };
        out.extend_from_slice(&ts_field.to_be_bytes()[1..]);
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(msg.type_id);
        out.extend_from_slice(&msg.stream_id.to_le_bytes());
        if extended {
            out.extend_from_slice(&msg.timestamp.to_be_bytes());
        }
        let mut chunks = msg.payload.chunks(self.chunk_size as usize);
        if let Some(first) = chunks.next() {
            out.extend_from_slice(first);
        }
        for chunk in chunks {
            write_basic_header(3, msg.csid, out);
            if extended {
                out.extend_from_slice(&msg.timestamp.to_be_bytes());
            }
            out.extend_from_slice(chunk);
        }
        Ok(())
    }
}

/// Writes a basic header; `csid` must be in 2..=MAX_CSID.
fn write_basic_header(fmt: u8, csid: u32, out: &mut Vec<u8>) {
    let fmt = fmt << 6;
    match csid {
        2..=63 => out.push(fmt | csid as u8),
        64..=319 => out.extend_from_slice(&[fmt, (csid - 64) as u8]),
        _ => {
            let id = csid - 64;
            out.extend_from_slice(&[fmt | 1, id as u8, (id >> 8) as u8]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(csid: u32, timestamp: u32, type_id: u8, payload: &[u8]) -> RtmpMessage {
        RtmpMessage { csid, timestamp, type_id, stream_id: 1, payload: Bytes::copy_from_slice(payload) }
    }

    fn decode_all(dec: &mut ChunkDecoder) -> Vec<RtmpMessage> {
        let mut out = Vec::new();
        while let Some(m) = dec.poll_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn encoder_output_decodes_for_all_csid_widths_and_split_points() {
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let messages = [
            msg(3, 10, message_type::VIDEO, &payload),
            msg(64, 20, message_type::AUDIO, &payload[..5]),
            msg(319, 0xff_fffe, message_type::VIDEO, &payload[..300]),
            msg(320, 0xff_ffff, message_type::VIDEO, &payload[..300]),
            msg(MAX_CSID, 0xdead_beef, message_type::DATA_AMF0, &[]),
        ];
        let enc = ChunkEncoder::new();
        let mut wire = Vec::new();
        for m in &messages {
            enc.encode(m, &mut wire).unwrap();
        }
        for step in [1, 7, 128, wire.len()] {
            let mut dec = ChunkDecoder::new(DEFAULT_MAX_MESSAGE_SIZE, 0);
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                dec.handle_input(piece);
                got.extend(decode_all(&mut dec));
            }
            assert_eq!(got, messages, "step {step}");
        }
    }

    #[test]
    fn header_compression_fmt_1_2_3() {
        // fmt 0 on csid 4: ts 1000, len 2, type 8, stream 1.
        let mut w = vec![0x04, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x02, 0x08, 1, 0, 0, 0, 0xaa, 0xbb];
        // fmt 1: delta 20, len 1, type 9.
        w.extend_from_slice(&[0x44, 0x00, 0x00, 0x14, 0x00, 0x00, 0x01, 0x09, 0xcc]);
        // fmt 2: delta 33.
        w.extend_from_slice(&[0x84, 0x00, 0x00, 0x21, 0xdd]);
        // fmt 3: new message with the same delta.
        w.extend_from_slice(&[0xc4, 0xee]);
        let mut dec = ChunkDecoder::new(DEFAULT_MAX_MESSAGE_SIZE, 0);
        dec.handle_input(&w);
        let got = decode_all(&mut dec);
        let ts: Vec<_> = got.iter().map(|m| (m.timestamp, m.type_id, m.payload.to_vec())).collect();
        assert_eq!(
            ts,
            vec![(1000, 8, vec![0xaa, 0xbb]), (1020, 9, vec![0xcc]), (1053, 9, vec![0xdd]), (1086, 9, vec![0xee])]
        );
        assert!(got.iter().all(|m| m.stream_id == 1 && m.csid == 4));
    }

    #[test]
    fn set_chunk_size_and_abort_apply_to_following_chunks() {
        let enc = ChunkEncoder::new();
        let mut w = Vec::new();
        enc.encode(&RtmpMessage::set_chunk_size(4), &mut w).unwrap();
        // A 6-byte message on csid 5 in chunks of 4, aborted after the first chunk.
        w.extend_from_slice(&[0x05, 0, 0, 0, 0, 0, 6, 9, 1, 0, 0, 0, 1, 2, 3, 4]);
        enc.encode(&RtmpMessage::abort(5), &mut w).unwrap();
        // Then a fresh 3-byte message on csid 5 using fmt 0.
        w.extend_from_slice(&[0x05, 0, 0, 5, 0, 0, 3, 9, 1, 0, 0, 0, 7, 8, 9]);
        let mut dec = ChunkDecoder::new(DEFAULT_MAX_MESSAGE_SIZE, 0);
        dec.handle_input(&w);
        let got = decode_all(&mut dec);
        assert_eq!(got.len(), 3);
        assert_eq!(dec.chunk_size(), 4);
        assert_eq!(&got[2].payload[..], &[7, 8, 9]);
        assert_eq!(dec.pending_bytes, 0);
    }

    #[test]
    fn acknowledges_each_window() {
        let mut dec = ChunkDecoder::new(DEFAULT_MAX_MESSAGE_SIZE, 100);
        dec.handle_input(&[0; 99]);
        assert_eq!(dec.poll_ack(), None);
        dec.handle_input(&[0; 2]);
        assert_eq!(dec.poll_ack(), Some(101));
        assert_eq!(dec.poll_ack(), None);
        // Bytes read straight into the buffer count the same.
        let buffer = dec.input_buffer(100);
        assert!(buffer.capacity() - buffer.len() >= 100);
        buffer.extend_from_slice(&[0; 100]);
        dec.handle_appended(100);
        assert_eq!(dec.poll_ack(), Some(201));
        assert_eq!(dec.buffered_bytes(), 201);
    }

    fn first_error(wire: &[u8]) -> ChunkError {
        let mut dec = ChunkDecoder::new(1024, 0);
        dec.handle_input(wire);
        loop {
            match dec.poll_message() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("no error"),
                Err(e) => return e,
            }
        }
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(first_error(&[0x43, 0, 0, 0]), ChunkError::MissingPreviousHeader { csid: 3, fmt: 1 });
        assert_eq!(first_error(&[0xc3]), ChunkError::MissingPreviousHeader { csid: 3, fmt: 3 });
        assert_eq!(
            first_error(&[0x03, 0, 0, 0, 0xff, 0xff, 0xff, 9, 0, 0, 0, 0]),
            ChunkError::MessageTooLarge { csid: 3, size: 0xff_ffff, max: 1024 }
        );
        assert_eq!(first_error(&[0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0]), ChunkError::InvalidChunkSize(0));
        assert_eq!(
            first_error(&[0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff]),
            ChunkError::InvalidChunkSize(0x7fff_ffff)
        );
        assert_eq!(
            first_error(&[0x02, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 1]),
            ChunkError::InvalidControlMessage { type_id: 1, len: 2 }
        );
        // A new fmt 0 header while a message on the same csid is half read.
        let mut interrupted = vec![0x03, 0, 0, 0, 0, 1, 0, 9, 0, 0, 0, 0];
        interrupted.extend_from_slice(&[0; 128]);
        interrupted.extend_from_slice(&[0x03, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0]);
        assert_eq!(first_error(&interrupted), ChunkError::InterruptedMessage { csid: 3 });
        let mut many = Vec::new();
        for i in 0..=MAX_CHUNK_STREAMS as u8 {
            many.extend_from_slice(&[0x00, i, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0]);
        }
        assert_eq!(first_error(&many), ChunkError::TooManyChunkStreams);
    }

    #[test]
    fn a_message_of_several_chunks_gets_its_whole_length_at_once_within_the_pending_budget() {
        let msg =
            RtmpMessage { csid: 6, timestamp: 0, type_id: 9, stream_id: 1, payload: Bytes::from(vec![5u8; 1000]) };
        let mut wire = Vec::new();
        ChunkEncoder::new().encode(&msg, &mut wire).unwrap();
        // A fmt 0 header (12 bytes) and the first of eight 128-byte chunks.
        let first = 12 + 128;
        let mut dec = ChunkDecoder::new(DEFAULT_MAX_MESSAGE_SIZE, 0);
        dec.handle_input(&wire[..first]);
        assert_eq!(dec.poll_message(), Ok(None));
        let partial = dec.streams.get(6).unwrap().partial.as_ref().unwrap();
        assert!(partial.len() == 128 && partial.capacity() >= 1000, "capacity {}", partial.capacity());
        assert_eq!(dec.pending_bytes, 1000, "the whole message counts at once");
        dec.handle_input(&wire[first..]);
        assert_eq!(decode_all(&mut dec), vec![msg.clone()]);
        assert_eq!(dec.pending_bytes, 0);

        // Past the budget, the message only counts what came, and is refused when it grows past it.
        let limits = ChunkLimits { max_pending_bytes: 900, ..ChunkLimits::PRE_PUBLISH };
        let mut tight = ChunkDecoder::with_limits(limits, 0);
        tight.handle_input(&wire[..first]);
        assert_eq!(tight.poll_message(), Ok(None));
        assert!(tight.streams.get(6).unwrap().partial.as_ref().unwrap().capacity() < 1000);
        assert_eq!(tight.pending_bytes, 128);
        tight.handle_input(&wire[first..]);
        assert_eq!(tight.poll_message(), Err(ChunkError::TooManyPendingBytes { max: 900 }));

        // An aborted message gives back what it counted.
        let mut aborted = ChunkDecoder::new(DEFAULT_MAX_MESSAGE_SIZE, 0);
        aborted.handle_input(&wire[..first]);
        assert_eq!(aborted.poll_message(), Ok(None));
        let mut abort = Vec::new();
        ChunkEncoder::new().encode(&RtmpMessage::abort(6), &mut abort).unwrap();
        aborted.handle_input(&abort);
        assert!(aborted.poll_message().unwrap().is_some());
        assert_eq!(aborted.pending_bytes, 0);
    }

    #[test]
    fn messages_are_cut_from_shared_blocks_once_publishing() {
        let video = msg(6, 0, message_type::VIDEO, &[7u8; 1000]);
        let audio = msg(4, 0, message_type::AUDIO, &[9u8; 5]);
        let big = msg(6, 40, message_type::VIDEO, &vec![3u8; 64 * 1024 + 1]);
        let enc = ChunkEncoder::new();
        let (mut v, mut a, mut b) = (Vec::new(), Vec::new(), Vec::new());
        enc.encode(&video, &mut v).unwrap();
        enc.encode(&audio, &mut a).unwrap();
        enc.encode(&big, &mut b).unwrap();
        // The audio message arrives between the video message's first chunk and the rest.
        let first = 12 + 128;
        let mut wire = v[..first].to_vec();
        wire.extend_from_slice(&a);
        wire.extend_from_slice(&v[first..]);
        // Enough messages to run through the first block.
        for _ in 0..70 {
            wire.extend_from_slice(&v);
        }
        wire.extend_from_slice(&b);

        let mut dec = ChunkDecoder::with_limits(ChunkLimits::PUBLISHING, 0);
        dec.handle_input(&wire);
        let got = decode_all(&mut dec);
        assert_eq!(got.len(), 73);
        assert_eq!((&got[0], &got[1]), (&audio, &video));
        assert!(got[2..72].iter().all(|m| m.payload == video.payload));
        assert_eq!(got[72], big);
        // The video message was cut at its first chunk, the audio message right after it.
        let at = |i: usize| got[i].payload.as_ptr() as usize;
        assert_eq!(at(0), at(1) + 1000);
        assert_eq!(at(2), at(0) + 5);
        let adjacent = (2..72).filter(|&i| at(i + 1) == at(i) + 1000).count();
        assert_eq!(adjacent, 68, "a new block after the first 64 copies; the oversized one stands alone");
        assert_eq!(dec.pending_bytes, 0);

        // Before publishing, every message has an allocation of its own.
        let mut pre = ChunkDecoder::with_limits(ChunkLimits::PRE_PUBLISH, 0);
        pre.handle_input(&a);
        pre.handle_input(&a);
        let two = decode_all(&mut pre);
        assert_ne!(two[1].payload.as_ptr() as usize, two[0].payload.as_ptr() as usize + 5);
    }

    #[test]
    fn pending_bytes_are_bounded() {
        let mut dec = ChunkDecoder::new(DEFAULT_MAX_MESSAGE_SIZE, 0);
        let mut w = Vec::new();
        w.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0]);
        w.extend_from_slice(&(8u32 << 20).to_be_bytes());
        dec.handle_input(&w);
        assert!(dec.poll_message().unwrap().is_some());
        let mut result = Ok(None);
        // Each message is 16 MiB - 1 long; only its first 8 MiB chunk is sent.
        for csid in 3..10u8 {
            let mut w = vec![csid, 0, 0, 0, 0xff, 0xff, 0xff, 9, 0, 0, 0, 0];
            w.resize(w.len() + (8 << 20), 0);
            dec.handle_input(&w);
            result = dec.poll_message();
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ChunkError::TooManyPendingBytes { max: MAX_PENDING_BYTES }));
    }

    /// A fmt 0 header on `csid` declaring a message of `len` bytes of `type_id`.
    fn header(csid: u8, len: u32, type_id: u8) -> Vec<u8> {
        let l = len.to_be_bytes();
        vec![csid, 0, 0, 0, l[1], l[2], l[3], type_id, 0, 0, 0, 0]
    }

    #[test]
    fn pre_publish_limits_refuse_large_messages_chunk_sizes_and_pending_bytes() {
        let limits = ChunkLimits::PRE_PUBLISH;
        let poll = |wire: &[u8], limits: ChunkLimits| {
            let mut dec = ChunkDecoder::with_limits(limits, 0);
            dec.handle_input(wire);
            loop {
                match dec.poll_message() {
                    Ok(Some(_)) => continue,
                    other => return (other.map(|_| ()), dec),
                }
            }
        };
        // A command just under the message limit is read; one byte more is refused at its header.
        let max = limits.max_message_size;
        let mut w = Vec::new();
        ChunkEncoder::new().encode(&msg(3, 0, message_type::COMMAND_AMF0, &vec![5; max as usize]), &mut w).unwrap();
        assert_eq!(poll(&w, limits).0, Ok(()));
        let (result, dec) = poll(&header(3, max + 1, message_type::COMMAND_AMF0), limits);
        assert_eq!(result, Err(ChunkError::MessageTooLarge { csid: 3, size: max + 1, max }));
        assert_eq!(dec.buffered_bytes(), 12);
        // The same header is fine once publishing.
        assert_eq!(poll(&header(3, max + 1, message_type::VIDEO), ChunkLimits::PUBLISHING).0, Ok(()));

        // Set Chunk Size: up to the limit, not beyond; any valid size once publishing.
        let set = |size: u32| {
            let mut w = Vec::new();
            ChunkEncoder::new().encode(&RtmpMessage::set_chunk_size(size), &mut w).unwrap();
            w
        };
        assert_eq!(poll(&set(limits.max_chunk_size), limits).0, Ok(()));
        assert_eq!(
            poll(&set(MAX_CHUNK_SIZE), limits).0,
            Err(ChunkError::ChunkSizeTooLarge { size: MAX_CHUNK_SIZE, max: limits.max_chunk_size })
        );
        let (result, dec) = poll(&set(MAX_CHUNK_SIZE), ChunkLimits::PUBLISHING);
        assert_eq!((result, dec.chunk_size()), (Ok(()), MAX_CHUNK_SIZE));

        // Half-sent messages across many chunk streams: bounded in total, not per stream.
        let mut w = set(max / 2);
        for csid in 3..40u8 {
            w.extend(header(csid, max, message_type::COMMAND_AMF0));
            w.extend(std::iter::repeat_n(0, max as usize / 2));
        }
        let (result, dec) = poll(&w, limits);
        assert_eq!(result, Err(ChunkError::TooManyPendingBytes { max: limits.max_pending_bytes }));
        assert!(dec.pending_bytes <= limits.max_pending_bytes);

        // Raised limits apply to what follows.
        let mut dec = ChunkDecoder::with_limits(limits, 0);
        dec.set_limits(ChunkLimits::PUBLISHING);
        assert_eq!(dec.limits(), ChunkLimits::PUBLISHING);
        dec.handle_input(&header(3, 1 << 20, message_type::VIDEO));
        assert_eq!(dec.poll_message(), Ok(None));
    }

    #[test]
    fn incomplete_input_consumes_nothing() {
        let enc = ChunkEncoder::new();
        let mut w = Vec::new();
        enc.encode(&msg(300, 0x0100_0000, 9, &[1; 200]), &mut w).unwrap();
        let mut dec = ChunkDecoder::new(DEFAULT_MAX_MESSAGE_SIZE, 0);
        for b in &w[..w.len() - 1] {
            dec.handle_input(std::slice::from_ref(b));
            assert_eq!(dec.poll_message(), Ok(None));
        }
        dec.handle_input(&w[w.len() - 1..]);
        assert_eq!(dec.poll_message().unwrap().unwrap().timestamp, 0x0100_0000);
    }

    #[test]
    fn encoder_rejects_what_it_cannot_write() {
        let enc = ChunkEncoder::new();
        assert_eq!(enc.encode(&msg(1, 0, 9, &[]), &mut Vec::new()), Err(ChunkError::InvalidCsid(1)));
        assert_eq!(enc.encode(&msg(MAX_CSID + 1, 0, 9, &[]), &mut Vec::new()), Err(ChunkError::InvalidCsid(65_600)));
        assert!(ChunkEncoder::new().set_chunk_size(0).is_err());
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let mut dec = ChunkDecoder::new(4096, 64);
            dec.handle_input(&bytes);
            while let Ok(Some(_)) = dec.poll_message() {}
            let _ = dec.poll_ack();
        }
    }
}
