//! The publishing side of RTMP, sans-IO: handshake, `connect`, `createStream`, `publish`, then
//! media messages. Bytes in through [`PublishClient::handle_input`], bytes out through
//! [`PublishClient::poll_transmit`]; the chunk stream and AMF0 codecs are `media`'s.
//!
//! It speaks the plain handshake and the command sequence ffmpeg uses, which is all an RTMP
//! ingest needs to accept a publish.

use bytes::Bytes;
use media::rtmp::amf0::{self, Amf0Value};
use media::rtmp::chunk::{message_type, ChunkDecoder, ChunkEncoder, RtmpMessage};

/// Size of C1/S1/S2.
const HANDSHAKE_SIZE: usize = 1536;
/// Chunk size we send with (announced first).
const CHUNK_SIZE: u32 = 4096;
/// Largest message we accept from the server (commands only).
const MAX_MESSAGE: u32 = 1024 * 1024;
const CSID_COMMAND: u32 = 3;
const CSID_AUDIO: u32 = 4;
const CSID_VIDEO: u32 = 6;
const CSID_DATA: u32 = 5;

/// Where the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    /// Handshake or commands in progress.
    Connecting,
    /// `NetStream.Publish.Start` received: media may flow.
    Live,
    /// The server refused or broke the protocol; the text says how.
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for S0+S1+S2.
    Handshake,
    Connect,
    CreateStream,
    Publish,
    Live,
    Failed,
}

/// One publishing connection.
#[derive(Debug)]
pub(crate) struct PublishClient {
    phase: Phase,
    status: Status,
    handshake: Vec<u8>,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    out: Vec<u8>,
    app: String,
    tc_url: String,
    key: String,
    stream_id: u32,
}

impl PublishClient {
    /// A client publishing `key` on application `app` of `tc_url` (`rtmp://host:port/app`);
    /// `seed` fills C1.
    pub(crate) fn new(tc_url: &str, app: &str, key: &str, seed: u64) -> Self {
        let mut out = Vec::with_capacity(1 + HANDSHAKE_SIZE);
        out.push(3);
        out.extend_from_slice(&[0; 8]);
        let mut x = seed | 1;
        while out.len() < 1 + HANDSHAKE_SIZE {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push(x as u8);
        }
        PublishClient {
            phase: Phase::Handshake,
            status: Status::Connecting,
            handshake: Vec::with_capacity(1 + 2 * HANDSHAKE_SIZE),
            decoder: ChunkDecoder::new(MAX_MESSAGE, 2_500_000),
            encoder: ChunkEncoder::new(),
            out,
            app: app.to_owned(),
            tc_url: tc_url.to_owned(),
            key: key.to_owned(),
            stream_id: 0,
        }
    }

    pub(crate) fn status(&self) -> &Status {
        &self.status
    }

    /// Bytes to write to the connection.
    pub(crate) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.out.is_empty()).then(|| std::mem::take(&mut self.out))
    }

    /// Bytes read from the connection.
    pub(crate) fn handle_input(&mut self, mut bytes: &[u8]) {
        if self.phase == Phase::Failed {
            return;
        }
        if self.phase == Phase::Handshake {
            let want = 1 + 2 * HANDSHAKE_SIZE - self.handshake.len();
            let take = want.min(bytes.len());
            self.handshake.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.handshake.len() < 1 + 2 * HANDSHAKE_SIZE {
                return;
            }
            if self.handshake[0] != 3 {
                return self.fail(format!("server speaks RTMP version {}", self.handshake[0]));
            }
            // C2 echoes S1.
            let s1 = self.handshake[1..1 + HANDSHAKE_SIZE].to_vec();
            self.out.extend_from_slice(&s1);
            self.handshake = Vec::new();
            self.send(RtmpMessage::set_chunk_size(CHUNK_SIZE));
            if self.encoder.set_chunk_size(CHUNK_SIZE).is_err() {
                return self.fail("chunk size refused".into());
            }
            let info = Amf0Value::Object(vec![
                ("app".into(), Amf0Value::String(self.app.clone())),
                ("type".into(), Amf0Value::String("nonprivate".into())),
                ("flashVer".into(), Amf0Value::String("FMLE/3.0 (compatible; bitriver-load)".into())),
                ("tcUrl".into(), Amf0Value::String(self.tc_url.clone())),
            ]);
            self.command(0, &[Amf0Value::String("connect".into()), Amf0Value::Number(1.0), info]);
            self.phase = Phase::Connect;
        }
        self.decoder.handle_input(bytes);
        loop {
            if let Some(sequence) = self.decoder.poll_ack() {
                self.send(RtmpMessage::acknowledgement(sequence));
            }
            match self.decoder.poll_message() {
                Ok(Some(msg)) => self.on_message(msg),
                Ok(None) => break,
                Err(e) => return self.fail(format!("chunk stream: {e}")),
            }
            if self.phase == Phase::Failed {
                return;
            }
        }
    }

    fn on_message(&mut self, msg: RtmpMessage) {
        if msg.type_id != message_type::COMMAND_AMF0 {
            return;
        }
        let values = match amf0::decode_all(&msg.payload) {
            Ok(v) => v,
            Err(e) => return self.fail(format!("AMF0 command: {e}")),
        };
        let name = values.first().and_then(Amf0Value::as_str).unwrap_or_default();
        let transaction = values.get(1).and_then(Amf0Value::as_number).unwrap_or(0.0);
        match (name, self.phase) {
            ("_result", Phase::Connect) if transaction == 1.0 => {
                self.command(0, &[Amf0Value::String("createStream".into()), Amf0Value::Number(2.0), Amf0Value::Null]);
                self.phase = Phase::CreateStream;
            }
            ("_result", Phase::CreateStream) if transaction == 2.0 => {
                let Some(id) = values.get(3).and_then(Amf0Value::as_number) else {
                    return self.fail("createStream answered without a stream id".into());
                };
                self.stream_id = id as u32;
                let publish = [
                    Amf0Value::String("publish".into()),
                    Amf0Value::Number(3.0),
                    Amf0Value::Null,
                    Amf0Value::String(self.key.clone()),
                    Amf0Value::String("live".into()),
                ];
                self.command(self.stream_id, &publish);
                self.phase = Phase::Publish;
            }
            ("_error", _) => {
                let why = values.get(3).and_then(|v| v.get("description")).and_then(Amf0Value::as_str).unwrap_or("");
                self.fail(format!("server answered _error: {why}"));
            }
            ("onStatus", _) => {
                let info = values.get(3);
                let code = info.and_then(|v| v.get("code")).and_then(Amf0Value::as_str).unwrap_or_default();
                let level = info.and_then(|v| v.get("level")).and_then(Amf0Value::as_str).unwrap_or_default();
                if code == "NetStream.Publish.Start" && self.phase == Phase::Publish {
                    self.phase = Phase::Live;
                    self.status = Status::Live;
                } else if level == "error" || code.contains("BadName") || code.contains("Failed") {
                    self.fail(format!("publish refused: {code}"));
                }
            }
            _ => {}
        }
    }

    fn fail(&mut self, why: String) {
        self.phase = Phase::Failed;
        self.status = Status::Failed(why);
    }

    fn command(&mut self, stream_id: u32, values: &[Amf0Value]) {
        let payload = amf0::encode_all(values);
        self.send(RtmpMessage {
            csid: CSID_COMMAND,
            timestamp: 0,
            type_id: message_type::COMMAND_AMF0,
            stream_id,
            payload: payload.into(),
        });
    }

    fn send(&mut self, msg: RtmpMessage) {
        if let Err(e) = self.encoder.encode(&msg, &mut self.out) {
            self.fail(format!("encoding a message: {e}"));
        }
    }

    /// Queues an FLV tag body (audio 8, video 9, script data 18) at `timestamp` ms; ignored
    /// unless live. A script tag (`onMetaData`) goes out as `@setDataFrame`.
    pub(crate) fn send_tag(&mut self, tag_type: u8, timestamp: u32, body: &Bytes) {
        if self.phase != Phase::Live {
            return;
        }
        let (csid, type_id, payload) = match tag_type {
            message_type::AUDIO => (CSID_AUDIO, message_type::AUDIO, body.clone()),
            message_type::VIDEO => (CSID_VIDEO, message_type::VIDEO, body.clone()),
            message_type::DATA_AMF0 => {
                let mut payload = amf0::encode_all(&[Amf0Value::String("@setDataFrame".into())]);
                payload.extend_from_slice(body);
                (CSID_DATA, message_type::DATA_AMF0, Bytes::from(payload))
            }
            _ => return,
        };
        self.send(RtmpMessage { csid, timestamp, type_id, stream_id: self.stream_id, payload });
    }

    /// Queues `deleteStream`, the polite end of a publish.
    pub(crate) fn unpublish(&mut self) {
        if self.phase == Phase::Live {
            let values = [
                Amf0Value::String("deleteStream".into()),
                Amf0Value::Number(4.0),
                Amf0Value::Null,
                Amf0Value::Number(f64::from(self.stream_id)),
            ];
            self.command(0, &values);
            self.phase = Phase::Failed;
            self.status = Status::Failed("unpublished".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use media::rtmp::session::{Event, ServerSession, SessionConfig};

    use super::*;

    /// Moves bytes both ways until neither side has anything to say.
    fn pump(client: &mut PublishClient, server: &mut ServerSession) {
        for _ in 0..100 {
            let mut moved = false;
            if let Some(bytes) = client.poll_transmit() {
                server.handle_input(&bytes);
                moved = true;
            }
            if let Some(bytes) = server.poll_transmit() {
                // In odd-sized pieces, as TCP may deliver them.
                for piece in bytes.chunks(700) {
                    client.handle_input(piece);
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("no quiescence");
    }

    fn publish_request(server: &mut ServerSession) -> Option<(media::rtmp::session::PublishRequestId, String)> {
        while let Some(event) = server.poll_event() {
            if let Event::PublishRequested { request_id, stream_key, .. } = event {
                return Some((request_id, stream_key));
            }
        }
        None
    }

    #[test]
    fn publishes_to_our_own_ingest_session() {
        let mut server = ServerSession::new(SessionConfig::default());
        let mut client = PublishClient::new("rtmp://127.0.0.1:1935/live", "live", "key-1", 7);
        pump(&mut client, &mut server);
        let (id, key) = publish_request(&mut server).expect("the server sees the publish");
        assert_eq!(key, "key-1");
        assert_eq!(client.status(), &Status::Connecting);
        server.accept_publish(id).unwrap();
        pump(&mut client, &mut server);
        assert_eq!(client.status(), &Status::Live);

        // Metadata and media reach the server with our timestamps.
        let meta = amf0::encode_all(&[
            Amf0Value::String("onMetaData".into()),
            Amf0Value::EcmaArray(vec![("width".into(), Amf0Value::Number(640.0))]),
        ]);
        client.send_tag(18, 0, &Bytes::from(meta));
        client.send_tag(9, 40, &Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]));
        client.send_tag(8, 5_000_000, &Bytes::from(vec![0xaf; 6000]));
        pump(&mut client, &mut server);
        let events: Vec<Event> = std::iter::from_fn(|| server.poll_event()).collect();
        assert!(events.iter().any(|e| matches!(e, Event::Metadata(m) if m.width == Some(640.0))), "{events:?}");
        assert!(events.iter().any(|e| matches!(e, Event::Video { timestamp_ms: 40, .. })), "{events:?}");
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::Audio { timestamp_ms: 5_000_000, payload } if payload.len() == 6000)));

        client.unpublish();
        pump(&mut client, &mut server);
        let events: Vec<Event> = std::iter::from_fn(|| server.poll_event()).collect();
        assert!(events.contains(&Event::Unpublished), "{events:?}");
    }

    #[test]
    fn a_refused_key_fails_with_the_servers_code() {
        let mut server = ServerSession::new(SessionConfig::default());
        let mut client = PublishClient::new("rtmp://h/live", "live", "wrong", 1);
        pump(&mut client, &mut server);
        let (id, _) = publish_request(&mut server).unwrap();
        server.reject_publish(id, media::rtmp::session::RejectReason::BadName).unwrap();
        pump(&mut client, &mut server);
        assert!(matches!(client.status(), Status::Failed(why) if why.contains("BadName")), "{:?}", client.status());
        // Media after a failure goes nowhere.
        client.send_tag(9, 0, &Bytes::from_static(&[0x17]));
        assert_eq!(client.poll_transmit(), None);
    }

    #[test]
    fn a_server_of_another_protocol_version_fails() {
        let mut client = PublishClient::new("rtmp://h/live", "live", "k", 1);
        let _ = client.poll_transmit();
        client.handle_input(&[6; 1 + 2 * HANDSHAKE_SIZE]);
        assert!(matches!(client.status(), Status::Failed(_)));
    }
}
