//! The hook through which a publish's source track leaves the node (the relay to other origins),
//! without media depending on any transport.
//!
//! ```text
//! Publish::open_live ── TrackTap::start(tracks, packaging) ──▶ TapRun
//!                         │
//! each sample the `source` rendition accepted ──▶ TapRun::video / audio (with the wall clock it
//!                                                  was pushed with, and for a keyframe that opened
//!                                                  a segment, that segment's msn); must return
//!                                                  at once
//! the publish ends ──▶ the TapRun is dropped
//! ```
//!
//! Why the tap sees what `source` accepted rather than the feed's raw output: a packager fed the
//! same samples from the same segment start cuts the same parts (see [`crate::hls::window`]), so
//! a remote packager that joins at a segment the local one opened names and writes every later
//! part as the local one does.

use std::fmt::Debug;

use crate::clock::UnixMillis;
use crate::cmaf::{AudioConfig, Sample, VideoConfig};
use crate::hls::RenditionConfig;

/// A consumer of published source tracks (the relay's server side).
pub trait TrackTap: Debug + Send + Sync + 'static {
    /// Called once per publish when the tracks are known and the `source` packager is open.
    /// `None`: this publish is not relayed. Runs on the ingest task: set up, don't block.
    fn start(&self, source: &TapSource<'_>) -> Option<Box<dyn TapRun>>;
}

/// What the tap is told about a publish.
#[derive(Debug, Clone, Copy)]
pub struct TapSource<'a> {
    pub channel_id: &'a str,
    pub session_id: &'a str,
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
