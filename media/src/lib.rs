//! The live path: ingest over RTMP ([`rtmp`], [`flv`]) and SRT ([`ts`]) into one packager feed
//! ([`ingest`]), the codec layer they share ([`codec`]), the CMAF muxer ([`cmaf`]), the LL-HLS
//! packager and playlist rules ([`hls`]) and the origin that serves them ([`origin`]).
//!
//! Protocol code here is sans-IO: state machines over bytes and an explicit `now`, tested without
//! sockets. The tokio drivers that move bytes live beside them and only call into them.

pub mod clock;
pub mod cmaf;
pub mod codec;
pub mod flv;
pub mod hls;
pub mod ingest;
pub mod origin;
pub mod rtmp;
pub mod ts;

#[cfg(test)]
mod test_support;
