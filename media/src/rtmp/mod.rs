//! RTMP ingest, sans-IO: the server handshake, the chunk stream, AMF0 and the publishing session.
//!
//! Data path: socket bytes → [`ServerSession::handle_input`] → [`handshake`] (C0/C1/C2) →
//! [`chunk::ChunkDecoder`] (messages) → the session's command handling and media routing →
//! [`Event`]s (publish requests, metadata, FLV audio/video tag bodies, close). Replies go the other
//! way through [`chunk::ChunkEncoder`] and come out of [`ServerSession::poll_transmit`]. A tokio
//! task owns the socket and only moves bytes and answers publish requests.
//!
//! Own implementation rather than rml_rtmp/scuffle-rtmp: we want one state machine with the
//! handle/poll shape used across BitRiver, publish decisions by id, typed errors and hard limits.

pub mod amf0;
pub mod chunk;
pub mod handshake;
pub mod session;

pub use session::{
    CloseReason, DecisionError, Event, MetaCodecId, Metadata, PublishRequestId, RejectReason, ServerSession,
    SessionConfig, SessionError,
};
