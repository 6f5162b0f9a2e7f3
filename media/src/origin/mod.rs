//! The origin role: holds the live channels' LL-HLS windows in memory and serves them over HTTP.
//!
//! Data passes through it like this:
//!
//! 1. The ingest driver, once a publish is accepted, builds one [`crate::hls::Rendition`] per
//!    rendition and calls [`LiveRegistry::open`] (channel id, session id, renditions), which
//!    returns a [`LiveHandle`]. It pushes every sample through the handle
//!    ([`LiveHandle::push_video`] / [`LiveHandle::push_audio`], by rendition index); when a push
//!    publishes a part, requests waiting on that rendition wake. Finishing or dropping the handle
//!    ends the stream; its window stays servable for [`RegistryConfig::ended_retention`].
//! 2. [`routes`] answers `/hls/{channel}/...`: the multivariant playlist, media playlists with
//!    blocking reload and delta updates, `init.mp4`, segments and parts (see [`routes`] for the
//!    paths, cache headers and waits). An edge in front caches parts and segments as immutable.
//! 3. [`OriginMetrics`] counts requests, bytes, waits and live channels.
//!
//! The LL-HLS rules themselves (cutting, playlists, when a blocking request is ready) live in the
//! sans-IO [`crate::hls`]; this module only stores, locks, waits and speaks HTTP.

mod http;
mod metrics;
mod registry;

pub use http::{routes, OriginConfig};
pub use metrics::OriginMetrics;
pub use registry::{
    ClosedSegment, LiveFeed, LiveHandle, LiveRegistry, LiveRendition, OriginError, RegistryConfig, SegmentSink,
};
