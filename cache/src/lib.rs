//! The edge: a pingora caching proxy for LL-HLS in front of origins.
//!
//! Viewers ask an edge for `/hls/{channel}/...`. The edge keys its cache on the path plus the
//! LL-HLS query parameters ([`policy`]), holds objects in byte-bounded moka storage that readers
//! can follow while an object is still arriving ([`storage`]), turns concurrent misses for one key
//! into one origin fetch with pingora-cache's lock, and finds a channel's origins through an
//! [`OriginResolver`] that the node implements from its catalog replica ([`proxy`]). [`Edge`] runs
//! it all on the caller's tokio runtime ([`server`]); [`ViewerCounter`] counts unique viewers per
//! channel for the node to report.
//! Fresh immutable hits on plain TCP skip pingora's hit path and go out with `sendfile` from the
//! sealed memfds large bodies are kept in (`direct`); every other hit reads the same pages as
//! `Bytes` without a copy (`pages`). On those connections the edge reads a plain `GET` itself
//! ([`early`]), so such hits skip pingora altogether.

mod direct;
pub mod early;
pub mod metrics;
#[allow(unsafe_code)] // one audited mapping of a body file; see the module docs
mod pages;
pub mod policy;
pub mod proxy;
pub mod server;
pub mod storage;
pub mod viewers;

pub use metrics::EdgeMetrics;
pub use policy::{Freshness, ObjectKind};
pub use proxy::{Origin, OriginResolver, UpstreamTimeouts};
pub use server::{Edge, EdgeConfig, EdgeError};
pub use storage::MokaStorage;
pub use viewers::ViewerCounter;
