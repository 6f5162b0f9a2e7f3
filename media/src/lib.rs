//! The live path: RTMP ingest ([`rtmp`], [`flv`]), the CMAF muxer ([`cmaf`]) and the LL-HLS
//! packager and playlist rules ([`hls`]).
//!
//! Protocol code here is sans-IO: state machines over bytes and an explicit `now`, tested without
//! sockets. The tokio drivers that move bytes live beside them and only call into them.

pub mod cmaf;
pub mod flv;
pub mod hls;
pub mod ingest;
pub mod origin;
pub mod rtmp;
pub mod ts;
