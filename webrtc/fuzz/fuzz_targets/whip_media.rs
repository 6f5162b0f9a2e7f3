//! A WHIP publisher's depacketized frames are whatever it sends: arbitrary "H.264 access units"
//! and "Opus packets" with arbitrary RTP times into the conversion to packager input. Nothing
//! may panic, and whatever comes out is in order (tracks before samples).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use webrtc::whip_media::WhipMedia;

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut media = WhipMedia::new(data.first().is_some_and(|b| b & 1 == 1));
    let mut rest = data.get(1..).unwrap_or_default();
    let mut outputs = 0usize;
    let mut tracks = false;
    while rest.len() >= 6 {
        let (header, tail) = rest.split_at(6);
        let len = usize::from(u16::from_le_bytes([header[4], header[5]])) % 1500;
        let (frame, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        let rtp = u64::from(u32::from_le_bytes([header[0], header[1], header[2], header[3]]));
        let at = start + Duration::from_millis(u64::from(header[0]));
        let result = if header[5] & 0x80 == 0 { media.video(at, rtp, frame) } else { media.audio(at, rtp, frame) };
        if result.is_err() {
            return;
        }
        while let Some(output) = media.poll_output() {
            let is_tracks = matches!(output, media::ingest::FeedOutput::Tracks { .. });
            assert!(is_tracks != tracks, "tracks exactly once, before any sample");
            tracks = true;
            outputs += 1;
        }
    }
    let _ = media.finish();
    let _ = outputs;
});
