//! The `bitriver` binary's library half: configuration, role wiring, HTTP endpoints and the
//! administrative CLI. `main.rs` only parses, sets up logging and calls [`run::run`].

pub mod advertise;
pub mod cli;
pub mod config;
pub mod edge;
pub mod fleet;
pub mod geoip;
pub mod http;
pub mod ingest_gate;
pub mod placement;
pub mod recording;
pub mod relay;
pub mod run;
pub mod service;
mod tls;
pub mod transcode;
pub mod transcode_worker;
pub mod vod;
pub mod webrtc;
