//! Cluster transport over QUIC (quinn): the client side of every RPC, pooled connections, and
//! openraft's network traits on top.
//!
//! One QUIC endpoint per node both accepts (see [`crate::catalog`]'s server loop) and dials.
//! The listener starts every connection at small limits and raises them for members only. A
//! connection per peer address is kept and reused; each RPC opens its own bidirectional stream, so
//! a slow snapshot never blocks heartbeats.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;

use crate::codec;
use crate::rpc::{Reply, Request, MAX_MESSAGE};
use crate::tls::SERVER_NAME;
use crate::{NodeId, TypeConfig};

/// Why an RPC did not get a reply.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("cannot resolve {addr}: {reason}")]
    Resolve { addr: String, reason: String },
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("rpc {kind} to {addr} failed: {reason}")]
    Stream { kind: &'static str, addr: String, reason: String },
    #[error("rpc {kind} to {addr} timed out after {after:?}")]
    Timeout { kind: &'static str, addr: String, after: Duration },
    #[error("peer {0} is partitioned away (fault injection)")]
    Partitioned(NodeId),
}

/// Bidirectional streams (concurrent RPCs) a member may have open on one connection.
pub const MEMBER_STREAMS: u32 = 256;
/// Bytes a member may have in flight to us on one connection, all streams together.
pub const MEMBER_WINDOW: u32 = 64 << 20;
/// Bytes in flight on one stream (one RPC): bounds a slow reader's buffer, fast enough on a LAN.
const STREAM_WINDOW: u32 = 1 << 20;
/// What any connection gets until it is authenticated: one stream, 64 KiB in flight. Enrolment
/// stays at this; members are raised to [`MEMBER_STREAMS`] and [`MEMBER_WINDOW`] once their
/// certificate is checked.
pub const PRE_AUTH_STREAMS: u32 = 1;
pub const PRE_AUTH_WINDOW: u32 = 64 << 10;

fn base_transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    // An idle timeout a few election timeouts long: a dead peer's connection is dropped and re-dialed.
    t.max_idle_timeout(Some(Duration::from_secs(5).try_into().expect("5s fits a QUIC varint")));
    t.max_concurrent_uni_streams(0u32.into());
    t.datagram_receive_buffer_size(None);
    t.stream_receive_window(STREAM_WINDOW.into());
    t
}

/// QUIC settings of the cluster listener: the pre-authentication limits (see [`PRE_AUTH_WINDOW`]).
pub fn server_transport_config() -> quinn::TransportConfig {
    let mut t = base_transport_config();
    t.max_concurrent_bidi_streams(PRE_AUTH_STREAMS.into());
    t.receive_window(PRE_AUTH_WINDOW.into());
    t
}

/// QUIC settings of the dialing side: the server never opens streams towards us, and replies
/// come from a server whose certificate we checked.
pub fn client_transport_config() -> quinn::TransportConfig {
    let mut t = base_transport_config();
    t.max_concurrent_bidi_streams(0u32.into());
    t.receive_window(MEMBER_WINDOW.into());
    t
}

/// Send one request on a fresh stream of `conn` and read the reply.
pub async fn call_on(conn: &quinn::Connection, request: &Request) -> Result<Reply, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(&codec::encode(request)).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let bytes = recv.read_to_end(MAX_MESSAGE).await.map_err(|e| e.to_string())?;
    codec::decode(&bytes).map_err(|e| e.to_string())
}

/// The dialing side of the cluster transport.
pub struct ClusterClient {
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    connections: Mutex<HashMap<String, quinn::Connection>>,
    /// Fault injection: peers we pretend cannot be reached.
    blocked: Mutex<HashSet<NodeId>>,
    /// Which node id answers at which address (learned from membership), for fault injection.
    addr_of: Mutex<HashMap<String, NodeId>>,
}

impl ClusterClient {
    pub fn new(endpoint: quinn::Endpoint, tls: rustls::ClientConfig) -> Result<Self, anyhow::Error> {
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
        client_config.transport_config(Arc::new(client_transport_config()));
        Ok(ClusterClient {
            endpoint,
            client_config,
            connections: Mutex::new(HashMap::new()),
            blocked: Mutex::new(HashSet::new()),
            addr_of: Mutex::new(HashMap::new()),
        })
    }

    /// Replace the set of peers whose RPCs are dropped (fault injection for partition tests).
    pub fn set_blocked(&self, blocked: impl IntoIterator<Item = NodeId>) {
        *self.blocked.lock().unwrap_or_else(|p| p.into_inner()) = blocked.into_iter().collect();
        // Drop pooled connections so nothing in flight sneaks through.
        self.connections.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn is_blocked(&self, addr: &str) -> Option<NodeId> {
        let id = *self.addr_of.lock().unwrap_or_else(|p| p.into_inner()).get(addr)?;
        self.blocked.lock().unwrap_or_else(|p| p.into_inner()).contains(&id).then_some(id)
    }

    pub(crate) fn learn(&self, node_id: NodeId, addr: &str) {
        self.addr_of.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.to_owned(), node_id);
    }

    async fn connection(&self, addr: &str) -> Result<quinn::Connection, TransportError> {
        if let Some(conn) = self.connections.lock().unwrap_or_else(|p| p.into_inner()).get(addr) {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
        }
        let socket = resolve(addr).await?;
        let connect_err = |reason: String| TransportError::Connect { addr: addr.to_owned(), reason };
        let connecting = self
            .endpoint
            .connect_with(self.client_config.clone(), socket, SERVER_NAME)
            .map_err(|e| connect_err(e.to_string()))?;
        let conn = connecting.await.map_err(|e| connect_err(e.to_string()))?;
        self.connections.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.to_owned(), conn.clone());
        Ok(conn)
    }

    /// Send `request` to the node at `addr` and wait at most `timeout` for the reply.
    pub async fn call(&self, addr: &str, request: &Request, timeout: Duration) -> Result<Reply, TransportError> {
        if let Some(id) = self.is_blocked(addr) {
            return Err(TransportError::Partitioned(id));
        }
        let kind = request.kind();
        let attempt = async {
            let conn = self.connection(addr).await?;
            match call_on(&conn, request).await {
                Ok(reply) => Ok(reply),
                Err(first) => {
                    // A pooled connection may have died since last use: re-dial once.
                    self.connections.lock().unwrap_or_else(|p| p.into_inner()).remove(addr);
                    if conn.close_reason().is_none() {
                        return Err(TransportError::Stream { kind, addr: addr.to_owned(), reason: first });
                    }
                    let conn = self.connection(addr).await?;
                    call_on(&conn, request).await.map_err(|reason| TransportError::Stream {
                        kind,
                        addr: addr.to_owned(),
                        reason,
                    })
                }
            }
        };
        tokio::time::timeout(timeout, attempt).await.unwrap_or(Err(TransportError::Timeout {
            kind,
            addr: addr.to_owned(),
            after: timeout,
        }))
    }
}

/// Resolve `host:port` (first address wins).
pub async fn resolve(addr: &str) -> Result<SocketAddr, TransportError> {
    let err = |reason: String| TransportError::Resolve { addr: addr.to_owned(), reason };
    let mut addrs = tokio::net::lookup_host(addr).await.map_err(|e| err(e.to_string()))?;
    addrs.next().ok_or_else(|| err("no addresses".into()))
}

/// openraft's network factory: one [`PeerNetwork`] per replication target.
#[derive(Clone)]
pub struct NetworkFactory {
    pub client: Arc<ClusterClient>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        self.client.learn(target, &node.addr);
        PeerNetwork { client: self.client.clone(), target, addr: node.addr.clone() }
    }
}

/// Raft RPCs to one peer.
pub struct PeerNetwork {
    client: Arc<ClusterClient>,
    target: NodeId,
    addr: String,
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl PeerNetwork {
    async fn send<E: std::error::Error>(&self, request: Request, option: &RPCOption) -> RpcResult<Reply, E> {
        match self.client.call(&self.addr, &request, option.hard_ttl()).await {
            Ok(reply) => Ok(reply),
            Err(
                e @ (TransportError::Connect { .. } | TransportError::Partitioned(_) | TransportError::Resolve { .. }),
            ) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    fn unexpected<E: std::error::Error>(&self, reply: Reply) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        let e = std::io::Error::other(format!("unexpected reply from node {}: {reply:?}", self.target));
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self.send(Request::AppendEntries(rpc), &option).await? {
            Reply::AppendEntries(Ok(r)) => Ok(r),
            Reply::AppendEntries(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.send(Request::InstallSnapshot(rpc), &option).await? {
            Reply::InstallSnapshot(Ok(r)) => Ok(r),
            Reply::InstallSnapshot(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected(other)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        match self.send(Request::Vote(rpc), &option).await? {
            Reply::Vote(Ok(r)) => Ok(r),
            Reply::Vote(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected(other)),
        }
    }
}
