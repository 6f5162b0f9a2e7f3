//! Arbitrary bytes into a `ServerSession`, in pieces, optionally after a valid handshake so the
//! fuzzer spends its time in the chunk stream, AMF0 commands and media paths. Every publish
//! request is accepted so media events flow, and their payloads go through the FLV parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::flv;
use media::rtmp::{Event, ServerSession, SessionConfig};

const HANDSHAKE_SIZE: usize = 1536;

fuzz_target!(|data: &[u8]| {
    let Some((&control, data)) = data.split_first() else { return };
    let mut session = ServerSession::new(SessionConfig::default());
    if control & 1 == 1 {
        let mut hs = vec![3u8];
        hs.resize(1 + 2 * HANDSHAKE_SIZE, 0);
        session.handle_input(&hs);
    }
    // Piece size from the control byte: 1 (byte by byte) up to 128, or everything at once.
    let step = match control >> 1 {
        0 => data.len().max(1),
        n => usize::from(n),
    };
    // Every other piece is read straight into the session's buffer, once it offers one.
    for (i, piece) in data.chunks(step).enumerate() {
        match session.input_buffer(piece.len()).filter(|_| i % 2 == 1) {
            Some(buffer) => {
                buffer.extend_from_slice(piece);
                session.handle_appended(piece.len());
            }
            None => session.handle_input(piece),
        }
        drain(&mut session);
    }
    session.handle_eof();
    drain(&mut session);
});

fn drain(session: &mut ServerSession) {
    while session.poll_transmit().is_some() {}
    let mut requests = Vec::new();
    while let Some(event) = session.poll_event() {
        match event {
            Event::PublishRequested { request_id, .. } => requests.push(request_id),
            Event::Video { timestamp_ms, payload } => {
                let _ = flv::parse_video_tag(timestamp_ms, &payload);
            }
            Event::Audio { timestamp_ms, payload } => {
                let _ = flv::parse_audio_tag(timestamp_ms, &payload);
            }
            _ => {}
        }
    }
    for id in requests {
        let _ = session.accept_publish(id);
    }
    while session.poll_transmit().is_some() {}
}
