//! WebRTC on the node: WHIP ingest (RFC 9725) into the same publish gate, catalog sessions and
//! packager as RTMP and SRT, and WHEP playback (the IETF WHEP draft) of any channel live here.
//!
//! ```text
//! POST /whip (Bearer stream key) ── offer ──▶ PublishGate ──▶ session task (str0m Rtc)
//!                                                               │ H.264 as published, Opus → AAC
//!                                                               ▼
//!                                               WhipMedia ──▶ PackagerFeed ──▶ PublishSink (LL-HLS)
//! LiveRegistry (any publish) ── source samples ──▶ WhepHub ── Annex B + Opus (once per channel)
//!                                                               │ broadcast
//! POST /whep/{channelId} ── offer ──▶ session task per viewer ◀─┘
//! UDP media port(s) ──▶ port::MediaPorts: datagrams routed to sessions by ICE ufrag / address
//! ```
//!
//! The protocol pieces we own are sans-IO and tested without sockets: [`offer`] (SDP and trickle
//! fragments from anyone), [`stun`] (routing a stranger's first datagram), [`whip_media`]
//! (frames to packager input) and [`whep_media`] (samples to RTP-ready frames). str0m is itself
//! sans-IO; [`session`] drives it on a task per peer. Why str0m: `webrtc/README.md`.

pub mod http;
pub mod offer;
pub mod port;
pub mod session;
pub mod stun;
pub mod whep_media;
pub mod whip_media;

use std::net::IpAddr;

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

pub use http::Webrtc;
pub use port::{MediaPorts, PortMode};
pub use session::Timeouts;
pub use whep_media::WhepHub;

/// Settings of the WebRTC endpoints.
#[derive(Debug, Clone)]
pub struct WebrtcConfig {
    pub ports: PortMode,
    /// Addresses offered as host candidates when the media socket is bound to a wildcard (the
    /// node's advertised host).
    pub hosts: Vec<IpAddr>,
    /// STUN and TURN servers handed to clients (`Link: <...>; rel="ice-server"`).
    pub ice_servers: Vec<IceServer>,
    pub timeouts: Timeouts,
    /// Publishers and viewers at once; more are answered 503.
    pub max_sessions: usize,
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        WebrtcConfig {
            ports: PortMode::Single("0.0.0.0:8189".parse().expect("valid address")),
            hosts: Vec::new(),
            ice_servers: Vec::new(),
            timeouts: Timeouts::default(),
            max_sessions: 2000,
        }
    }
}

/// A STUN or TURN server for clients behind NAT: `stun:host[:port]`, or
/// `turn[s]:user:password@host[:port][?transport=udp|tcp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// The URL without credentials.
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<String>,
}

impl std::str::FromStr for IceServer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (scheme, rest) =
            s.split_once(':').ok_or_else(|| format!("ICE server {s:?}: expected stun:, turn: or turns:"))?;
        if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") {
            return Err(format!("ICE server {s:?}: scheme {scheme:?} is not stun, stuns, turn or turns"));
        }
        let (credentials, host) = match rest.rsplit_once('@') {
            Some((credentials, host)) => (Some(credentials), host),
            None => (None, rest),
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '<' || c == '>' || c == '"') {
            return Err(format!("ICE server {s:?}: bad host"));
        }
        let (username, credential) = match credentials {
            Some(credentials) => {
                let (user, password) = credentials
                    .split_once(':')
                    .ok_or_else(|| format!("ICE server {scheme}:…@{host}: credentials must be user:password"))?;
                if user.contains('"') || password.contains('"') {
                    return Err(format!("ICE server {scheme}:…@{host}: credentials may not contain quotes"));
                }
                (Some(user.to_owned()), Some(password.to_owned()))
            }
            None if scheme.starts_with("turn") => {
                return Err(format!("ICE server {s:?}: TURN needs user:password@"));
            }
            None => (None, None),
        };
        Ok(IceServer { url: format!("{scheme}:{host}"), username, credential })
    }
}

impl IceServer {
    /// The `Link` header value (WHIP §4.6).
    pub fn link(&self) -> String {
        match (&self.username, &self.credential) {
            (Some(user), Some(password)) => format!(
                "<{}>; rel=\"ice-server\"; username=\"{user}\"; credential=\"{password}\"; credential-type=\"password\"",
                self.url
            ),
            _ => format!("<{}>; rel=\"ice-server\"", self.url),
        }
    }
}

/// Prometheus metrics of the WebRTC endpoints (publishes also count in `bitriver_ingest_*`).
#[derive(Debug, Clone)]
pub struct WebrtcMetrics {
    /// Sessions running, by kind (`publish`, `play`).
    pub sessions: IntGaugeVec,
    /// Offers refused, by kind and reason.
    pub refused: IntCounterVec,
    /// Datagrams on the media port that belong to no session (strangers, garbage).
    pub unrouted: IntCounter,
    /// Datagrams dropped because a session's inbox was full.
    pub dropped: IntCounter,
    /// Datagrams of a session str0m could not parse.
    pub bad_datagrams: IntCounter,
    /// Sends that failed (socket buffer full).
    pub send_errors: IntCounter,
    /// Frames written to viewers, by kind (`video`, `audio`).
    pub frames_sent: IntCounterVec,
    /// Keyframes asked of WHIP publishers, by reason: `segment` (a segment target passed without
    /// one), `loss` (packets lost), `viewer` (a WHEP viewer waits for one). At most one PLI per
    /// 500 ms goes out; a viewer's ask counts even when one is already on its way.
    pub keyframe_requests: IntCounterVec,
}

impl WebrtcMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self::unregistered();
        registry.register(Box::new(metrics.sessions.clone()))?;
        registry.register(Box::new(metrics.refused.clone()))?;
        registry.register(Box::new(metrics.unrouted.clone()))?;
        registry.register(Box::new(metrics.dropped.clone()))?;
        registry.register(Box::new(metrics.bad_datagrams.clone()))?;
        registry.register(Box::new(metrics.send_errors.clone()))?;
        registry.register(Box::new(metrics.frames_sent.clone()))?;
        registry.register(Box::new(metrics.keyframe_requests.clone()))?;
        Ok(metrics)
    }

    /// Metrics registered nowhere (tests, tools).
    pub fn unregistered() -> Self {
        // Constant names and labels: construction cannot fail.
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric definition");
        let counters = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
        };
        WebrtcMetrics {
            sessions: IntGaugeVec::new(Opts::new("bitriver_webrtc_sessions", "WebRTC sessions running."), &["kind"])
                .expect("valid metric definition"),
            refused: counters("bitriver_webrtc_refused_total", "WHIP and WHEP offers refused.", &["kind", "reason"]),
            unrouted: counter(
                "bitriver_webrtc_unrouted_datagrams_total",
                "Datagrams on the media port for no session.",
            ),
            dropped: counter(
                "bitriver_webrtc_dropped_datagrams_total",
                "Datagrams dropped: a session's inbox was full.",
            ),
            bad_datagrams: counter("bitriver_webrtc_bad_datagrams_total", "Datagrams of a session that did not parse."),
            send_errors: counter("bitriver_webrtc_send_errors_total", "Datagrams not sent (socket buffer full)."),
            frames_sent: counters("bitriver_webrtc_frames_sent_total", "Frames written to WHEP viewers.", &["kind"]),
            keyframe_requests: counters(
                "bitriver_webrtc_keyframe_requests_total",
                "Keyframes asked of WHIP publishers.",
                &["reason"],
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_parse_into_link_headers() {
        let stun: IceServer = "stun:stun.example.org:3478".parse().unwrap();
        assert_eq!(stun.link(), "<stun:stun.example.org:3478>; rel=\"ice-server\"");
        let turn: IceServer = "turn:alice:s3cret@turn.example.org:3478?transport=udp".parse().unwrap();
        assert_eq!(turn.url, "turn:turn.example.org:3478?transport=udp");
        assert_eq!(
            turn.link(),
            "<turn:turn.example.org:3478?transport=udp>; rel=\"ice-server\"; username=\"alice\"; \
             credential=\"s3cret\"; credential-type=\"password\""
        );
        assert!("http://x".parse::<IceServer>().is_err());
        assert!("turn:turn.example.org".parse::<IceServer>().is_err());
        assert!("stun:".parse::<IceServer>().is_err());
        assert!("turn:a\"b:c@host".parse::<IceServer>().is_err());
    }
}
