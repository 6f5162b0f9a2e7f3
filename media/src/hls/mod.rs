//! The LL-HLS packager: per-rendition windows of CMAF parts and segments, and the playlist rules.
//!
//! Sans-IO. Data passes through it like this:
//!
//! 1. The driver creates one [`Rendition`] per rendition (`source`, `720p`, ...) from a
//!    [`RenditionConfig`] and the track configs, and feeds it samples in decode order with the
//!    ingest wall clock: [`Rendition::push_video`] / [`Rendition::push_audio`]. Each returns a
//!    [`Pushed`]; on [`Pushed::Published`] the driver wakes the requests waiting on that rendition.
//! 2. HTTP handlers parse `_HLS_*` parameters with [`PlaylistParams::parse`] and ask
//!    [`BlockingReload::decide`] whether to answer now, wait (bounded by [`blocking_timeout`]) or
//!    reject; then render [`media_playlist`] (with [`RenditionReport`]s of the siblings) or
//!    [`multivariant_playlist`].
//! 3. `init-{id}.mp4`, `seg{msn}.m4s` and `part{msn}.{i}.m4s` (the names are [`hls_names`]'s, shared
//!    with the edge) are served from [`Rendition::init`],
//!    [`Rendition::segment`] and [`Rendition::part`]. Parts and segments never change once
//!    published, so they can be cached as immutable.

mod playlist;
mod window;

/// The `_HLS_*` parameters of a playlist request, as the shared grammar parses them.
pub use hls_names::PlaylistParams;
pub use playlist::{
    blocking_timeout, media_playlist, multivariant_playlist, BadReload, BlockingReload, RenditionReport, Variant,
};
pub use window::{
    DropReason, Latest, Part, PartialSegment, Pushed, Rendition, RenditionConfig, RenditionError, Segment, TrackKind,
    FORCED_CUT_TARGETS, MAX_SEGMENT_BYTES,
};
