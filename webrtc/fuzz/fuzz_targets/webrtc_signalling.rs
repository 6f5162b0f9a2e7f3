//! What strangers send before any session exists: SDP offers and trickle fragments over HTTP,
//! datagrams on the media port. None may panic; an accepted offer has H.264 video.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webrtc::{offer, stun};

fuzz_target!(|data: &[u8]| {
    if let Some(ufrag) = stun::binding_request_ufrag(data) {
        assert!(!ufrag.is_empty() && stun::is_stun(data));
    }
    if let Ok(parsed) = offer::parse_offer(data) {
        let text = std::str::from_utf8(data).expect("accepted offers are text");
        assert!(text.contains("m=video"));
        let _ = parsed.opus;
    }
    if let Ok(candidates) = offer::parse_trickle(data) {
        assert!(candidates.len() <= 32);
    }
});
