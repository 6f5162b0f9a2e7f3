//! The hook through which a publish's tracks leave the node (the relay to origins elsewhere),
//! without media depending on any transport.
//!
//! ```text
//! Publish::open_live ── TrackTap::start(rendition, tracks, packaging) ──▶ TapRun, one per rendition
//!                         │ LiveFeed::set_tap: the registry calls it on every push
//! each sample the rendition accepted ──▶ TapRun::video / audio (with the wall clock it was
//!                                        pushed with, and for a keyframe that opened a segment,
//!                                        that segment's msn); must return at once
//! the stream ends ──▶ the TapRun is dropped
//! ```
//!
//! `source` is tapped on the ingest node; a ladder's rungs wherever the ladder runs (the ingest
//! node itself, or a transcode node that subscribed to `source`).
//!
//! Why the tap sees what the rendition accepted rather than the feed's raw output: a packager fed
//! the same samples from the same segment start cuts the same parts (see [`crate::hls::window`]),
//! so a remote packager that joins at a segment the local one opened names and writes every later
//! part as the local one does.

use std::fmt::Debug;

use crate::clock::UnixMillis;
use crate::cmaf::{AudioConfig, Sample, VideoConfig};
use crate::hls::RenditionConfig;

/// A consumer of published tracks (the relay's server side).
pub trait TrackTap: Debug + Send + Sync + 'static {
    /// Called once per publish and rendition when the tracks are known and the packager is open
    /// (see [`crate::origin::LiveFeed::set_tap`]).
    /// `None`: this publish is not relayed. Runs on the ingest task: set up, don't block.
    fn start(&self, source: &TapSource<'_>) -> Option<Box<dyn TapRun>>;
}

/// What the tap is told about a publish.
#[derive(Debug, Clone, Copy)]
pub struct TapSource<'a> {
    pub channel_id: &'a str,
    pub session_id: &'a str,
    /// The rendition this track carries (`source`, or a rung of the ladder).
    pub rendition: &'a str,
    pub video: Option<&'a VideoConfig>,
    pub audio: Option<&'a AudioConfig>,
    /// The `source` packager's settings; `first_msn` is the broadcast's epoch.
    pub packaging: &'a RenditionConfig,
}

/// One publish's relay. Dropping it ends the published track.
pub trait TapRun: Send {
    /// A video sample `source` accepted, in decode order, with the wall clock it was pushed with.
    /// `segment_start`: the msn of the segment this keyframe opened, if it opened one.
    fn video(&mut self, sample: &Sample, now: UnixMillis, segment_start: Option<u64>);
    /// An audio sample `source` accepted; see [`TapRun::video`].
    fn audio(&mut self, sample: &Sample, now: UnixMillis);
}
