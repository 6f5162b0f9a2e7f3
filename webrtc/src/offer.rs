//! What we accept from a WHIP or WHEP client before any session exists: an SDP offer (bounded,
//! parsed by str0m, with H.264 video in it) and trickled candidates (RFC 8840 fragments).
//! Sans-IO; the bytes come from anyone who can reach the HTTP port.

use str0m::change::SdpOffer;
use str0m::Candidate;
use thiserror::Error;

/// Largest offer or trickle fragment read. A browser's offer with every codec is about 6 KB.
pub const MAX_SDP_BYTES: usize = 32 * 1024;
/// Candidates taken from one trickle fragment.
const MAX_CANDIDATES: usize = 32;

/// Why an offer (or a fragment) was refused; the text is the HTTP answer's body.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OfferError {
    #[error("SDP of {0} bytes is over the {MAX_SDP_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("SDP is not UTF-8 text")]
    NotText,
    #[error("malformed SDP offer: {0}")]
    Malformed(String),
    #[error("the offer has no video section; publish and play need H.264 video")]
    NoVideo,
    #[error("the offer's video has no H.264 (packetization-mode=1); this server only carries H.264")]
    NoH264,
}

/// A parsed offer and what it carries.
#[derive(Debug)]
pub struct Offer {
    pub sdp: SdpOffer,
    /// It has an audio section with Opus.
    pub opus: bool,
}

/// Parses `body` (`application/sdp`) and checks it offers H.264 video.
pub fn parse_offer(body: &[u8]) -> Result<Offer, OfferError> {
    let text = text(body)?;
    let sdp = SdpOffer::from_sdp_string(text).map_err(|e| OfferError::Malformed(truncate(&e.to_string())))?;
    let mut video = false;
    let mut h264 = false;
    let mut opus = false;
    let mut section = "";
    for line in text.lines().map(str::trim) {
        if let Some(media) = line.strip_prefix("m=") {
            section = media.split(' ').next().unwrap_or("");
            video |= section == "video";
            continue;
        }
        let Some(rtpmap) = line.strip_prefix("a=rtpmap:") else { continue };
        let encoding = rtpmap.split_once(' ').map_or("", |(_, e)| e).to_ascii_lowercase();
        match section {
            "video" => h264 |= encoding.starts_with("h264/90000"),
            "audio" => opus |= encoding.starts_with("opus/48000"),
            _ => {}
        }
    }
    if !video {
        return Err(OfferError::NoVideo);
    }
    if !h264 {
        return Err(OfferError::NoH264);
    }
    Ok(Offer { sdp, opus })
}

/// The candidates of a trickle ICE fragment (`application/trickle-ice-sdpfrag`): every
/// `a=candidate:` line that parses. An end-of-candidates line or none at all is fine (empty).
pub fn parse_trickle(body: &[u8]) -> Result<Vec<Candidate>, OfferError> {
    let text = text(body)?;
    let mut candidates = Vec::new();
    for line in text.lines().map(str::trim) {
        let Some(candidate) = line.strip_prefix("a=") else { continue };
        if !candidate.starts_with("candidate:") {
            continue;
        }
        let parsed = Candidate::from_sdp_string(candidate)
            .map_err(|e| OfferError::Malformed(truncate(&format!("bad candidate: {e}"))))?;
        if candidates.len() == MAX_CANDIDATES {
            return Err(OfferError::Malformed(format!("more than {MAX_CANDIDATES} candidates in one fragment")));
        }
        candidates.push(parsed);
    }
    Ok(candidates)
}

fn text(body: &[u8]) -> Result<&str, OfferError> {
    if body.len() > MAX_SDP_BYTES {
        return Err(OfferError::TooLarge(body.len()));
    }
    std::str::from_utf8(body).map_err(|_| OfferError::NotText)
}

/// Parser messages may quote the input; keep answers short.
fn truncate(message: &str) -> String {
    message.chars().take(200).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An offer as Chromium sends for WHIP (trimmed): H.264 and VP8 video, Opus audio; made-up
    /// ICE credentials and fingerprint. The node's tests use it too.
    pub(crate) const CHROMIUM_OFFER: &str = include_str!("../tests/data/chromium-offer.sdp");

    #[test]
    fn a_browser_offer_with_h264_and_opus() {
        let offer = parse_offer(CHROMIUM_OFFER.as_bytes()).unwrap();
        assert!(offer.opus);
    }

    #[test]
    fn refusals_say_why() {
        let vp8_only = CHROMIUM_OFFER.replace("a=rtpmap:102 H264/90000", "a=rtpmap:102 VP9/90000");
        assert_eq!(parse_offer(vp8_only.as_bytes()).unwrap_err(), OfferError::NoH264);
        let audio_only = CHROMIUM_OFFER.replace("m=video 9", "m=application 9");
        assert!(matches!(parse_offer(audio_only.as_bytes()), Err(OfferError::NoVideo | OfferError::Malformed(_))));
        assert!(matches!(parse_offer(b"hello"), Err(OfferError::Malformed(_))));
        assert_eq!(parse_offer(&[0xff, 0xfe]).unwrap_err(), OfferError::NotText);
        let big = vec![b'a'; MAX_SDP_BYTES + 1];
        assert_eq!(parse_offer(&big).unwrap_err(), OfferError::TooLarge(MAX_SDP_BYTES + 1));
    }

    #[test]
    fn trickle_fragments() {
        let fragment = "a=ice-ufrag:abcd\r\na=ice-pwd:x\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
a=candidate:1 1 udp 2113937151 192.0.2.7 50000 typ host\r\na=end-of-candidates\r\n";
        let candidates = parse_trickle(fragment.as_bytes()).unwrap();
        assert_eq!(candidates.len(), 1);
        assert_eq!(candidates[0].addr(), "192.0.2.7:50000".parse().unwrap());
        assert!(parse_trickle(b"a=end-of-candidates\r\n").unwrap().is_empty());
        assert!(matches!(parse_trickle(b"a=candidate:nonsense\r\n"), Err(OfferError::Malformed(_))));
    }
}
