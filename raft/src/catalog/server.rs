//! The cluster listener: accepts QUIC connections, serves one request per bidirectional stream,
//! and dispatches each request (also those from the admin socket).
//!
//! Nothing a peer sends is buffered before we know who it is beyond small, fixed limits:
//!
//! - every connection starts with one stream and a 64 KiB receive window
//!   ([`transport::server_transport_config`]); at most [`MAX_UNAUTHENTICATED_PER_ADDR`] handshaking
//!   or enrolling connections per address and [`MAX_CONNECTIONS`] in all;
//! - on the cluster ALPN a connection without a CA-signed certificate is closed as soon as the
//!   handshake completes, before any stream is read; a revoked certificate likewise;
//! - on the enrolment ALPN one request is read, of the enrolment kind and size, within a deadline,
//!   and the connection is closed after the answer or after [`ENROL_LIFETIME`];
//! - members get [`transport::MEMBER_STREAMS`] streams and a [`transport::MEMBER_WINDOW`] window,
//!   at most [`MAX_CONNECTIONS_PER_MEMBER`] connections per node id, and each request is read up
//!   to its kind's size within its kind's deadline ([`crate::rpc::frame_limits`]);
//! - each request is then authorised by the caller's roles ([`crate::authz`]) and revocation.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::batcher::{LocalWrite, PENDING};
use super::client::ProposeError;
use super::Catalog;
use crate::authz::{self, Caller};
use crate::command::Command;
use crate::now_millis;
use crate::rpc::{frame_limits, FrameLimits, Reply, Request};
use crate::tls::{self, CertSubject};
use crate::transport;
use crate::types::NodeId;

/// Connections the listener keeps at once (members, handshakes and enrolments together).
pub const MAX_CONNECTIONS: usize = 1024;
/// Handshaking or enrolling (not yet authenticated) connections per remote address.
pub const MAX_UNAUTHENTICATED_PER_ADDR: usize = 8;
/// Connections per member node id (one pooled connection each way, plus re-dials).
pub const MAX_CONNECTIONS_PER_MEMBER: usize = 8;
/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// An enrolment connection is closed after this, answered or not.
pub const ENROL_LIFETIME: Duration = Duration::from_secs(15);
/// How long a peer may take to send the first two bytes of a request (its kind).
const HEAD_DEADLINE: Duration = Duration::from_secs(5);

/// QUIC application close codes of the cluster listener.
mod close {
    pub(super) const DONE: u32 = 0;
    pub(super) const UNAUTHENTICATED: u32 = 1;
    pub(super) const REVOKED: u32 = 2;
    pub(super) const TOO_MANY: u32 = 3;
    pub(super) const BAD_ALPN: u32 = 4;
    pub(super) const ENROL_OVER: u32 = 5;
    pub(super) const REFUSED: u32 = 6;
    pub(super) const NO_RELAY: u32 = 7;
}

/// Concurrent relay subscriptions (one stream each) on one member's connection.
const RELAY_STREAMS: u32 = 1024;

/// QUIC listener configuration: the node's TLS identity and the pre-authentication limits.
pub(super) fn server_config(identity: &tls::NodeIdentity) -> anyhow::Result<quinn::ServerConfig> {
    let server_tls = quinn::crypto::rustls::QuicServerConfig::try_from(identity.server_config()?)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(server_tls));
    config.transport_config(Arc::new(transport::server_transport_config()));
    // Bound what quinn itself buffers for connections we have not accepted yet.
    config.max_incoming(MAX_CONNECTIONS);
    config.incoming_buffer_size(64 << 10);
    config.incoming_buffer_size_total(4 << 20);
    Ok(config)
}

/// Counted slots of a limited resource, released when the [`Slot`] drops.
struct Slots<K: Eq + Hash + Clone> {
    limit: usize,
    held: Mutex<HashMap<K, usize>>,
}

impl<K: Eq + Hash + Clone> Slots<K> {
    fn new(limit: usize) -> Arc<Self> {
        Arc::new(Slots { limit, held: Mutex::new(HashMap::new()) })
    }

    fn take(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(key.clone()).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Slot { slots: self.clone(), key })
    }
}

struct Slot<K: Eq + Hash + Clone> {
    slots: Arc<Slots<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// The listener's connection limits.
struct Limits {
    /// All connections (key `()`).
    total: Arc<Slots<()>>,
    unauthenticated: Arc<Slots<IpAddr>>,
    members: Arc<Slots<NodeId>>,
}

impl Catalog {
    /// Dispatch one request that arrived over QUIC or over the admin socket ([`Caller::Admin`]).
    pub(super) async fn handle(&self, request: Request, caller: &Caller, peer: &str) -> Reply {
        if let Caller::Member(subject) = caller {
            if self.read(|s| s.access().is_revoked(subject.node_id)) {
                return self.refuse(peer, request.kind(), &format!("node {} is revoked", subject.node_id));
            }
        }
        if let Err(refused) = authz::authorize(caller, &request) {
            return self.refuse(peer, request.kind(), &refused.0);
        }
        let raft = &self.inner.raft;
        match request {
            Request::AppendEntries(rpc) => Reply::AppendEntries(raft.append_entries(rpc).await),
            Request::Vote(rpc) => Reply::Vote(raft.vote(rpc).await),
            Request::InstallSnapshot(rpc) => Reply::InstallSnapshot(raft.install_snapshot(rpc).await),
            // The CLI is a client like any other: its writes go wherever the leader is.
            Request::Propose(command) if *caller == Caller::Admin => match self.propose(command).await {
                Ok(response) => Reply::Propose(Ok(response)),
                Err(ProposeError::Rejected(e)) => Reply::Propose(Err(e)),
                Err(e) => Reply::Error(e.to_string()),
            },
            // From a peer: apply here or say who leads; never forward again (no loops).
            Request::Propose(command) => match self.propose_local(command).await {
                Ok(applied) => Reply::Propose(applied),
                Err(LocalWrite::NotLeader(leader)) => Reply::NotLeader { leader },
                Err(LocalWrite::Pending) => Reply::Error(PENDING.into()),
                Err(LocalWrite::Fatal(e)) => Reply::Error(e),
            },
            Request::ReadIndex => self.handle_on_leader(&Request::ReadIndex).await,
            Request::Join { node_id, addr, may_vote } => {
                // A node asking for itself votes iff its certificate says control; a control node
                // (or the admin socket) forwarding the request is trusted with the flag.
                let may_vote = match caller {
                    Caller::Member(subject) if subject.node_id == node_id => subject.is_control(),
                    _ => may_vote,
                };
                let request = Request::Join { node_id, addr, may_vote };
                self.leader_op(request).await.unwrap_or_else(|e| Reply::Error(e.to_string()))
            }
            request @ (Request::Remove { .. } | Request::Status) => {
                self.leader_op(request).await.unwrap_or_else(|e| Reply::Error(e.to_string()))
            }
            Request::Revoke { node_id } => self.revoke(node_id).await,
            Request::Enrol(enrol) => self.enrol(enrol, peer).await,
            Request::Dump => self.dump_records().map(Reply::Dump).unwrap_or_else(|e| Reply::Error(e.to_string())),
            Request::Partition { blocked } => {
                if !self.inner.config.fault_injection {
                    return Reply::Error("fault injection is disabled".into());
                }
                tracing::warn!(?blocked, "fault injection: partitioning");
                // A learner sends no Raft RPCs, so its transport has not learnt the members'
                // addresses yet; without them its forwarded proposals would slip through.
                let membership = self.inner.raft.metrics().borrow().membership_config.membership().clone();
                for (id, node) in membership.nodes() {
                    self.inner.client.learn(*id, &node.addr);
                }
                self.inner.client.set_blocked(blocked);
                Reply::Done
            }
        }
    }

    fn refuse(&self, peer: &str, kind: &str, why: &str) -> Reply {
        self.inner.metrics.refused_peers.inc();
        tracing::warn!(peer, request = kind, reason = why, "refused cluster request");
        Reply::Error(format!("refused: {why}"))
    }

    /// Revoke a node's certificate on every member, then drop it from the membership.
    async fn revoke(&self, node_id: NodeId) -> Reply {
        if node_id == self.inner.id {
            return Reply::Error("a node cannot revoke itself; run this on another control node".into());
        }
        match self.propose(Command::RevokeNode { node_id, at: now_millis() }).await {
            Ok(_) => tracing::warn!(node_id, "revoked the node's certificate"),
            Err(e) => return Reply::Error(format!("revoking node {node_id}: {e}")),
        }
        let is_member = self.inner.raft.metrics().borrow().membership_config.membership().get_node(&node_id).is_some();
        if !is_member {
            return Reply::Done;
        }
        match self.leader_op(Request::Remove { node_id }).await {
            Ok(Reply::Done) => Reply::Done,
            Ok(Reply::Error(e)) => Reply::Error(format!("revoked; removing it from the membership failed: {e}")),
            Ok(other) => Reply::Error(format!("revoked; removal answered {other:?}")),
            Err(e) => Reply::Error(format!("revoked; removing it from the membership failed: {e}")),
        }
    }
}

/// Accept cluster connections within the listener's limits.
pub(super) async fn serve_cluster(catalog: Catalog, endpoint: quinn::Endpoint) {
    let limits = Arc::new(Limits {
        total: Slots::new(MAX_CONNECTIONS),
        unauthenticated: Slots::new(MAX_UNAUTHENTICATED_PER_ADDR),
        members: Slots::new(MAX_CONNECTIONS_PER_MEMBER),
    });
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        let slots = limits.total.take(()).zip(limits.unauthenticated.take(remote.ip()));
        let Some((total, pending)) = slots else {
            catalog.inner.metrics.refused_peers.inc();
            tracing::debug!(peer = %remote, "refused cluster connection: too many");
            incoming.refuse();
            continue;
        };
        let catalog = catalog.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _total = total;
            let peer = remote.to_string();
            let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    catalog.inner.metrics.refused_peers.inc();
                    tracing::warn!(peer, error = %e, "refused cluster connection (TLS handshake failed)");
                    return;
                }
                Err(_) => {
                    catalog.inner.metrics.refused_peers.inc();
                    tracing::warn!(peer, "refused cluster connection (handshake timed out)");
                    return;
                }
            };
            match alpn(&conn).as_deref() {
                Some(tls::ENROL_ALPN) => {
                    serve_enrolment(&catalog, &conn, &peer).await;
                    drop(pending);
                }
                Some(tls::ALPN) => {
                    let Some(subject) = authenticated_peer(&catalog, &conn, &peer, "cluster", pending) else { return };
                    let Some(_member) = limits.members.take(subject.node_id) else {
                        catalog.inner.metrics.refused_peers.inc();
                        tracing::warn!(peer, node_id = subject.node_id, "refused cluster connection: too many");
                        conn.close(close::TOO_MANY.into(), b"too many connections from this node");
                        return;
                    };
                    conn.set_max_concurrent_bi_streams(transport::MEMBER_STREAMS.into());
                    conn.set_receive_window(transport::MEMBER_WINDOW.into());
                    serve_member(catalog, conn, subject, peer).await;
                }
                Some(tls::RELAY_ALPN) => {
                    let Some(subject) = authenticated_peer(&catalog, &conn, &peer, "relay", pending) else { return };
                    if let Err(refused) = authz::may_subscribe(&subject) {
                        catalog.inner.metrics.refused_peers.inc();
                        tracing::warn!(peer, node_id = subject.node_id, reason = %refused, "refused relay connection");
                        conn.close(close::REFUSED.into(), refused.0.as_bytes());
                        return;
                    }
                    let Some(_member) = limits.members.take(subject.node_id) else {
                        catalog.inner.metrics.refused_peers.inc();
                        tracing::warn!(peer, node_id = subject.node_id, "refused relay connection: too many");
                        conn.close(close::TOO_MANY.into(), b"too many connections from this node");
                        return;
                    };
                    let Some(relay) = catalog.inner.relay.get() else {
                        conn.close(close::NO_RELAY.into(), b"this node relays no media");
                        return;
                    };
                    // Subscribers send one small frame per stream: the pre-authentication window
                    // stays; only the stream count is raised.
                    conn.set_max_concurrent_bi_streams(RELAY_STREAMS.into());
                    if relay.try_send((conn.clone(), subject.node_id)).is_err() {
                        conn.close(close::TOO_MANY.into(), b"relay busy");
                        return;
                    }
                    // Hold the connection's slots until it closes.
                    conn.closed().await;
                }
                _ => conn.close(close::BAD_ALPN.into(), b"unknown protocol"),
            }
        });
    }
}

fn alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?.protocol
}

/// The node a connection's client certificate names (rustls already checked it chains to the CA).
/// The certificate subject of a connection on a members' protocol (`what`: `cluster` or `relay`),
/// or `None` once it is refused and closed: no certificate, or a revoked node. A presented
/// certificate frees the connection's unauthenticated slot, `pending`, before the revocation check.
fn authenticated_peer<P>(
    catalog: &Catalog,
    conn: &quinn::Connection,
    peer: &str,
    what: &str,
    pending: P,
) -> Option<CertSubject> {
    let Some(subject) = peer_subject(conn) else {
        catalog.inner.metrics.refused_peers.inc();
        tracing::warn!(peer, "refused {what} connection without a certificate");
        conn.close(close::UNAUTHENTICATED.into(), b"a cluster certificate is required");
        return None;
    };
    drop(pending);
    if catalog.read(|s| s.access().is_revoked(subject.node_id)) {
        catalog.inner.metrics.refused_peers.inc();
        tracing::warn!(peer, node_id = subject.node_id, "refused a revoked node");
        conn.close(close::REVOKED.into(), b"this node's certificate is revoked");
        return None;
    }
    Some(subject)
}

fn peer_subject(conn: &quinn::Connection) -> Option<CertSubject> {
    let chain = conn.peer_identity()?.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>().ok()?;
    tls::cert_subject(chain.first()?).ok()
}

/// Serve a member's streams: one request each, read within its kind's limits.
async fn serve_member(catalog: Catalog, conn: quinn::Connection, subject: CertSubject, peer: String) {
    let caller = Arc::new(Caller::Member(subject));
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let catalog = catalog.clone();
        let caller = caller.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            let reply = match read_request(&mut recv, |_| true).await {
                Ok(request) => catalog.handle(request, &caller, &peer).await,
                Err(ReadError::Malformed(e)) => {
                    tracing::warn!(peer, error = %e, "malformed cluster request");
                    Reply::Error(format!("malformed request: {e}"))
                }
                Err(e) => {
                    tracing::debug!(peer, error = %e, "cluster stream dropped");
                    let _ = recv.stop(0u32.into());
                    send.reset(0u32.into()).ok();
                    return;
                }
            };
            let _ = send.write_all(&crate::codec::encode(&reply)).await;
            let _ = send.finish();
        });
    }
}

/// An anonymous peer's one enrolment request, within [`ENROL_LIFETIME`].
async fn serve_enrolment(catalog: &Catalog, conn: &quinn::Connection, peer: &str) {
    let exchange = async {
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let reply = match read_request(&mut recv, |l| l.kind == "enrol").await {
            Ok(request) => catalog.handle(request, &Caller::Anonymous, peer).await,
            Err(e @ (ReadError::Malformed(_) | ReadError::NotAllowed(_))) => {
                catalog.refuse(peer, "enrol", &format!("bad enrolment request: {e}"))
            }
            Err(e) => return Err(e.to_string()),
        };
        send.write_all(&crate::codec::encode(&reply)).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        // Let the reply reach the joiner; it closes the connection when it has read it.
        let _ = tokio::time::timeout(HEAD_DEADLINE, conn.closed()).await;
        Ok::<_, String>(())
    };
    match tokio::time::timeout(ENROL_LIFETIME, exchange).await {
        Ok(Ok(())) => conn.close(close::DONE.into(), b"enrolment answered"),
        Ok(Err(e)) => {
            tracing::debug!(peer, error = %e, "enrolment connection dropped");
            conn.close(close::ENROL_OVER.into(), b"enrolment failed");
        }
        Err(_) => {
            catalog.inner.metrics.refused_peers.inc();
            tracing::warn!(peer, "enrolment connection timed out; closed");
            conn.close(close::ENROL_OVER.into(), b"enrolment timed out");
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Stream(String),
    #[error("request not sent within {0:?}")]
    Timeout(Duration),
    #[error("{kind} request larger than {max} bytes")]
    TooLarge { kind: &'static str, max: usize },
    #[error("{0} requests are not accepted here")]
    NotAllowed(&'static str),
    #[error("{0}")]
    Malformed(String),
}

/// Read one request: its kind from the first two bytes, then the rest up to that kind's size
/// within that kind's deadline.
async fn read_request(
    recv: &mut quinn::RecvStream,
    allowed: impl Fn(&FrameLimits) -> bool,
) -> Result<Request, ReadError> {
    let mut head = [0u8; 2];
    match tokio::time::timeout(HEAD_DEADLINE, recv.read_exact(&mut head)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ReadError::Stream(e.to_string())),
        Err(_) => return Err(ReadError::Timeout(HEAD_DEADLINE)),
    }
    let limits = frame_limits(&head).ok_or_else(|| ReadError::Malformed("unknown request kind".into()))?;
    if !allowed(&limits) {
        return Err(ReadError::NotAllowed(limits.kind));
    }
    let rest = match tokio::time::timeout(limits.deadline, recv.read_to_end(limits.max_bytes - head.len())).await {
        Ok(Ok(rest)) => rest,
        Ok(Err(quinn::ReadToEndError::TooLong)) => {
            return Err(ReadError::TooLarge { kind: limits.kind, max: limits.max_bytes })
        }
        Ok(Err(e)) => return Err(ReadError::Stream(e.to_string())),
        Err(_) => return Err(ReadError::Timeout(limits.deadline)),
    };
    let mut frame = Vec::with_capacity(head.len() + rest.len());
    frame.extend_from_slice(&head);
    frame.extend_from_slice(&rest);
    crate::codec::decode(&frame).map_err(|e| ReadError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_key_and_released_on_drop() {
        let slots = Slots::new(2);
        let a = slots.take("a").unwrap();
        let _b = slots.take("a").unwrap();
        assert!(slots.take("a").is_none());
        assert!(slots.take("b").is_some());
        drop(a);
        assert!(slots.take("a").is_some());
    }
}
