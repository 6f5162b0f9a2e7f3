//! The hook through which a transcoder adds renditions beside `source`, without media depending
//! on any codec library.
//!
//! ```text
//! Publish::open_live ── Ladder::start(tracks) ──▶ LadderRun: the extra renditions to open
//!                         │ LiveRegistry::open(source + extras), then LadderRun::attach(LiveFeed)
//!                         ▼
//! each sample the `source` rendition accepted ──▶ LadderRun::video / audio (with the same wall
//!                                                  clock), which must return at once
//!                         │ the transcoder, on its own threads
//!                         ▼
//!                       LiveFeed::push_video / push_audio into renditions 1..
//! ```
//!
//! Alignment across renditions rests on three things the hook hands over: every rendition of a
//! broadcast shares `first_msn` and the packaging settings; the transcoder sees exactly the
//! samples `source` accepted, each with the `now` `source` was given (so program date-times are
//! equal); and it puts a keyframe, at the same decode time, wherever the source has one (so the
//! packager cuts segments at the same places).

use std::fmt::Debug;

use crate::clock::UnixMillis;

use crate::cmaf::{AudioConfig, Sample, VideoConfig};
use crate::origin::LiveFeed;

/// A transcoder: given a publish's source tracks, decides which renditions to add.
pub trait Ladder: Debug + Send + Sync + 'static {
    /// Called once per publish when the tracks are known. `None`: passthrough only (no video,
    /// nothing to add, or the transcoder is overloaded). Runs on the ingest task: set up, don't
    /// encode.
    fn start(&self, source: &LadderSource<'_>) -> Option<Box<dyn LadderRun>>;
}

/// What the ladder is told about a publish.
#[derive(Debug, Clone, Copy)]
pub struct LadderSource<'a> {
    pub channel_id: &'a str,
    pub session_id: &'a str,
    pub video: &'a VideoConfig,
    pub audio: Option<&'a AudioConfig>,
}

/// One rendition the ladder adds: its name (the path segment, `360p`), its video track (the audio
/// track is the source's) and its configured peak bit rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LadderRendition {
    pub name: String,
    pub video: VideoConfig,
    /// Peak bit rate in bits per second, video and audio, for `BANDWIDTH` until measured.
    pub bitrate: u64,
}

/// One publish's transcode. Dropping it stops the transcode (it must not block: the threads
/// finish on their own).
pub trait LadderRun: Send {
    /// The renditions to open after `source`, in order: rendition `i` here is index `i + 1` of
    /// the stream.
    fn renditions(&self) -> Vec<LadderRendition>;
    /// The stream is open; push the renditions' samples through `feed`.
    fn attach(&mut self, feed: LiveFeed);
    /// A video sample `source` accepted, in decode order, and the wall clock it was pushed with.
    /// `segment_start`: the media sequence number of the segment this keyframe opened in
    /// `source`, if it opened one (where a rendition may join or rejoin the ladder aligned). Must
    /// return at once (queue it, or drop work when behind).
    fn video(&mut self, sample: &Sample, now: UnixMillis, segment_start: Option<u64>);
    /// An audio sample `source` accepted; see [`LadderRun::video`].
    fn audio(&mut self, sample: &Sample, now: UnixMillis);
}
