//! The two seams between ingest and whatever decides who may publish: a [`PublishGate`] answers a
//! stream key with a [`PublishSink`] (or a [`Refusal`]); the sink takes the packager feed's
//! output and ends the publish. RTMP and SRT drive the same traits, so one gate serves both
//! protocols of a node (one publisher per channel, whatever the protocol).
//!
//! Media has no catalog: the node implements the gate over it (`node/src/ingest_gate.rs`), and
//! its sink wraps the catalog-free [`super::LivePublish`], which opens the stream in the origin.

use std::future::Future;
use std::net::SocketAddr;

use thiserror::Error;

use super::packager_feed::FeedOutput;

/// The ingest protocol of a publish, for logs and answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rtmp,
    Srt,
    /// WebRTC (WHIP): H.264 as published, Opus transcoded to AAC.
    Whip,
    /// A `source` track relayed from the ingest node (what a transcode node re-packages).
    Relay,
}

impl Protocol {
    /// `RTMP`, `SRT` or `WHIP`, as logs name them.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rtmp => "RTMP",
            Protocol::Srt => "SRT",
            Protocol::Whip => "WHIP",
            Protocol::Relay => "relay",
        }
    }
}

/// Why the gate refused a publish. Each protocol maps it to its own answer (an RTMP status, an
/// SRT reject code); the gate has logged it (without the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// No channel has this key.
    UnknownKey,
    /// The channel is live: another publisher, here or on another node.
    AlreadyLive,
    /// The catalog could not be read in time; the encoder may retry.
    CatalogUnavailable,
    /// The catalog did not commit the session start; the encoder may retry.
    SessionNotStarted,
    /// This node cannot take it (no randomness for a session id, or the like).
    Internal,
}

impl Refusal {
    /// The `reason` label of `bitriver_ingest_rejected_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::UnknownKey => "bad_key",
            Refusal::AlreadyLive => "already_live",
            Refusal::CatalogUnavailable | Refusal::SessionNotStarted => "catalog",
            Refusal::Internal => "internal",
        }
    }
}

/// Decides whether a key may publish and hands back where the stream goes.
pub trait PublishGate: Send + Sync + 'static {
    type Publish: PublishSink;
    /// May `stream_key` publish from `peer` over `protocol`? On yes the publish has started
    /// (for the catalog gate: the session is committed). The implementation logs its refusals.
    fn start_publish(
        &self,
        peer: SocketAddr,
        protocol: Protocol,
        stream_key: &str,
    ) -> impl Future<Output = Result<Self::Publish, Refusal>> + Send;
}

/// The sink takes no more of this stream (it has logged why); the publish ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the origin stopped taking this stream")]
pub struct StreamRefused;

/// One accepted publish: takes the feed's output (tracks first, then samples) and ends however
/// the connection stops.
pub trait PublishSink: Send + 'static {
    /// The channel, for logs and metrics.
    fn channel_id(&self) -> &str;
    /// The session, for logs.
    fn session_id(&self) -> &str;
    /// Err ends the publish (the origin refused the stream); the sink has logged why.
    fn handle_output(&mut self, output: FeedOutput) -> Result<(), StreamRefused>;
    /// The publish is over (the last output was handed over): finish the origin stream, end the
    /// session.
    fn end(self, why: &'static str) -> impl Future<Output = ()> + Send;
}
