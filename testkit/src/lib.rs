//! The one test kit of the workspace (dev-only, never in the `bitriver` binary).
//!
//! Integration tests (`node/tests`, `cache/tests`, `transcode/tests`, `control/tests`,
//! `media/tests`) and the benches (`bench/`) run real processes and real tools; what they share
//! lives here once:
//!
//! - [`tools`]: finding ffmpeg, ffprobe, curl, node and Chromium, and [`require_tool`], which fails
//!   a test that needs a missing tool (naming it) unless `BITRIVER_ALLOW_SKIP=1` is set.
//! - [`ffmpeg`]: the synthetic test pattern (`testsrc2` + a sine tone) as a command line, and
//!   ffprobe's JSON.
//! - [`process`]: free loopback ports, signals, waiting for a child with a bound, log tails, the
//!   `bitriver` binary a bench runs, and a spawned `bitriver` node for benches.
//! - [`procfs`]: CPU time, resident memory, load and limits from `/proc`.
//! - [`http`]: polling a URL until it answers what a test waits for.

pub mod ffmpeg;
pub mod http;
pub mod process;
pub mod procfs;
pub mod s3;
pub mod tools;

pub use tools::{require_tool, require_tools};
