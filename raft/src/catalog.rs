//! The catalog node: starts Raft on RocksDB and QUIC, serves cluster RPCs and the local admin
//! socket, and gives the rest of the code its typed client API.
//!
//! - [`Catalog::propose`] works on any node: a follower forwards to the leader over QUIC.
//! - [`Catalog::read`] reads the local replica (fast, possibly a little stale).
//! - [`Catalog::read_linearizable`] first learns the leader's commit point (read index) and waits
//!   until the local replica has applied it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState, SnapshotPolicy};
use prometheus::Registry;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::command::{ApplyResult, CatalogError, Command, Response};
use crate::metrics::CatalogMetrics;
use crate::rpc::{EnrolRequest, EnrolResponse, Reply, Request, MAX_MESSAGE};
use crate::state::CatalogState;
use crate::store::{AppliedEvent, Database, LogStore, SharedState, StateMachineStore};
use crate::tls::{self, ClusterCa, JoinToken, NodeIdentity, PendingEnrolment, TlsPaths};
use crate::transport::{self, ClusterClient, NetworkFactory};
use crate::types::{NodeId, NodeInfo, NodeLoad};
use crate::{now_millis, Raft};

/// Raft timing and log retention.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_every: u64,
    /// Log entries kept behind the snapshot (so slightly lagging followers avoid a snapshot).
    pub keep_logs: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 150,
            election_min_ms: 600,
            election_max_ms: 1200,
            snapshot_every: 10_000,
            keep_logs: 1_000,
        }
    }
}

/// Where to join an existing cluster.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    pub addr: String,
    pub token: String,
}

/// Everything the catalog needs to start.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    pub data_dir: PathBuf,
    pub node_id: Option<NodeId>,
    /// UDP address the QUIC endpoint binds.
    pub cluster_bind: SocketAddr,
    /// `host:port` other nodes dial; derived from the bound address when `None`.
    pub cluster_advertise: Option<String>,
    pub join: Option<JoinConfig>,
    /// How many voters the cluster wants; later nodes stay learners.
    pub voters: usize,
    pub region: String,
    pub roles: Vec<String>,
    /// Extra addresses published in the node directory, e.g. `("http", "127.0.0.1:8080")`.
    pub addresses: Vec<(String, String)>,
    pub tuning: RaftTuning,
    /// Accept `Partition` requests on the admin socket (tests only).
    pub fault_injection: bool,
}

impl CatalogConfig {
    /// A single-node config on loopback with an ephemeral port (tests, benches).
    pub fn local(data_dir: &Path) -> Self {
        CatalogConfig {
            data_dir: data_dir.to_owned(),
            node_id: None,
            cluster_bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            cluster_advertise: None,
            join: None,
            voters: 3,
            region: "local".into(),
            roles: vec![],
            addresses: vec![],
            tuning: RaftTuning::default(),
            fault_injection: false,
        }
    }
}

/// Why a proposal or read did not go through.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ProposeError {
    /// Applied, and the state machine refused it.
    #[error(transparent)]
    Rejected(#[from] CatalogError),
    /// No leader could be reached before the deadline; safe to retry later.
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
    /// Raft stopped on this node.
    #[error("catalog stopped: {0}")]
    Fatal(String),
}

/// One member as `GET /api/cluster` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub node_id: NodeId,
    pub region: String,
    pub roles: Vec<String>,
    pub voter: bool,
    pub last_applied: Option<u64>,
    pub addr: String,
}

/// The cluster as one node (preferably the leader) sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub members: Vec<MemberStatus>,
}

/// What the data dir remembers about this node besides RocksDB and the PKI.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeFile {
    node_id: NodeId,
}

fn node_file(data_dir: &Path) -> PathBuf {
    data_dir.join("node.json")
}

/// The admin socket path of a data dir (the CLI talks to a running node through it).
pub fn admin_socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.sock")
}

/// Node id recorded in a data dir, if any.
pub fn stored_node_id(data_dir: &Path) -> Option<NodeId> {
    let text = std::fs::read_to_string(node_file(data_dir)).ok()?;
    serde_json::from_str::<NodeFile>(&text).ok().map(|f| f.node_id)
}

/// Handle to the running catalog of this node. Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    advertise: String,
    raft: Raft,
    db: Database,
    state: SharedState,
    events: broadcast::Sender<Arc<AppliedEvent>>,
    client: Arc<ClusterClient>,
    endpoint: quinn::Endpoint,
    metrics: Arc<CatalogMetrics>,
    config: CatalogConfig,
    ca: Option<ClusterCa>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Proposals on their way into the log: see [`run_batcher`].
    batcher: mpsc::Sender<Proposal>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("id", &self.inner.id).field("advertise", &self.inner.advertise).finish()
    }
}

impl Catalog {
    /// Start the catalog: bootstrap a new cluster, enrol into one (`config.join`), or resume from
    /// the data dir. Returns once Raft runs and the cluster listener is bound; leadership and
    /// joining complete in the background (see [`Catalog::wait_ready`]).
    pub async fn start(config: CatalogConfig, registry: &Registry) -> anyhow::Result<Catalog> {
        let metrics = Arc::new(CatalogMetrics::new(registry).context("registering catalog metrics")?);
        Self::start_with_metrics(config, metrics).await
    }

    pub async fn start_with_metrics(config: CatalogConfig, metrics: Arc<CatalogMetrics>) -> anyhow::Result<Catalog> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let paths = TlsPaths::new(&config.data_dir);
        let (identity, ca) = load_or_create_identity(&config, &paths).await?;
        let id = identity.node_id;

        let db_path = config.data_dir.join("db");
        let db = Database::open(&db_path).with_context(|| format!("opening RocksDB in {}", db_path.display()))?;
        let log_store = LogStore::new(db.clone(), metrics.clone());
        let sm = StateMachineStore::open(db.clone(), metrics.clone())
            .with_context(|| format!("loading the catalog from {}", db_path.display()))?;
        let state = sm.shared_state();
        let events = sm.events();

        let server_tls = quinn::crypto::rustls::QuicServerConfig::try_from(identity.server_config()?)?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(server_tls));
        server_config.transport_config(Arc::new(transport::transport_config()));
        let endpoint = quinn::Endpoint::server(server_config, config.cluster_bind)
            .with_context(|| format!("binding cluster QUIC listener on udp {}", config.cluster_bind))?;
        let bound = endpoint.local_addr()?;
        let advertise = advertise_addr(config.cluster_advertise.as_deref(), bound);
        let client = Arc::new(ClusterClient::new(endpoint.clone(), identity.client_config()?)?);

        let raft_config = openraft::Config {
            cluster_name: "bitriver".into(),
            heartbeat_interval: config.tuning.heartbeat_ms,
            election_timeout_min: config.tuning.election_min_ms,
            election_timeout_max: config.tuning.election_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.tuning.snapshot_every),
            max_in_snapshot_log_to_keep: config.tuning.keep_logs,
            // Purge in batches, but never hold back more than a fraction of a snapshot interval.
            purge_batch_size: (config.tuning.snapshot_every / 4).clamp(1, 256),
            max_payload_entries: 512,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()?;
        let raft =
            Raft::new(id, Arc::new(raft_config), NetworkFactory { client: client.clone() }, log_store, sm).await?;

        let (batcher, proposals) = mpsc::channel(BATCHER_QUEUE);
        let catalog = Catalog {
            inner: Arc::new(Inner {
                id,
                advertise: advertise.clone(),
                raft,
                db,
                state,
                events,
                client,
                endpoint: endpoint.clone(),
                metrics,
                config,
                ca,
                tasks: Mutex::new(Vec::new()),
                batcher,
            }),
        };
        catalog.spawn(run_batcher(catalog.inner.raft.clone(), proposals));
        catalog.spawn(serve_cluster(catalog.clone(), endpoint));
        catalog.spawn(serve_admin_socket(catalog.clone()));
        catalog.spawn(track_metrics(catalog.clone()));
        catalog.spawn(crate::lease::expire_on_leader(catalog.clone()));

        if !catalog.inner.raft.is_initialized().await? {
            match catalog.inner.config.join.clone() {
                None => {
                    let members = BTreeMap::from([(id, BasicNode { addr: advertise.clone() })]);
                    catalog.inner.raft.initialize(members).await.context("bootstrapping a one-node cluster")?;
                    tracing::info!(node_id = id, cluster_addr = %advertise, "bootstrapped a new cluster");
                }
                Some(join) => catalog.spawn(ask_to_join(catalog.clone(), join.addr)),
            }
        }
        catalog.spawn(register_in_directory(catalog.clone()));
        tracing::info!(node_id = id, cluster_addr = %advertise, "catalog started");
        Ok(catalog)
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(fut);
        self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(handle);
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.id
    }

    /// `host:port` other nodes use to reach this node's cluster listener.
    pub fn cluster_addr(&self) -> &str {
        &self.inner.advertise
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn metrics(&self) -> &CatalogMetrics {
        &self.inner.metrics
    }

    /// Wait until this node knows a leader and has applied at least the leader's membership.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), ProposeError> {
        self.inner
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| m.current_leader.is_some() && m.membership_config.membership().get_node(&self.inner.id).is_some(),
                "ready",
            )
            .await
            .map(|_| ())
            .map_err(|e| ProposeError::Unavailable(e.to_string()))
    }

    /// Subscribe to every command applied on this node, in log order.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AppliedEvent>> {
        self.inner.events.subscribe()
    }

    /// Read the local replica.
    pub fn read<R>(&self, f: impl FnOnce(&CatalogState) -> R) -> R {
        f(&self.inner.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The local replica's records as stored (Raft bookkeeping keys excluded), in key order.
    /// Replicas that applied the same log have byte-identical dumps.
    pub fn dump_records(&self) -> Result<Vec<crate::store::Record>, ProposeError> {
        let records = self.inner.db.state_records().map_err(|e| ProposeError::Fatal(e.to_string()))?;
        Ok(records.into_iter().filter(|(k, _)| !k.starts_with(b"~raft/")).collect())
    }

    /// Read after everything committed before this call has been applied locally.
    pub async fn read_linearizable<R>(&self, f: impl FnOnce(&CatalogState) -> R) -> Result<R, ProposeError> {
        let index = match self.leader_op(Request::ReadIndex).await? {
            Reply::ReadIndex(index) => index,
            other => return Err(ProposeError::Unavailable(format!("unexpected reply {other:?}"))),
        };
        self.inner
            .raft
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|e| ProposeError::Unavailable(e.to_string()))?;
        Ok(self.read(f))
    }

    /// Replicate `command` and return what applying it produced. Works on any node.
    pub async fn propose(&self, command: Command) -> Result<Response, ProposeError> {
        let result = self.propose_inner(command).await;
        let outcome = match &result {
            Ok(_) => "committed",
            Err(ProposeError::Rejected(_)) => "rejected",
            Err(_) => "failed",
        };
        self.inner.metrics.proposals.with_label_values(&[outcome]).inc();
        result
    }

    async fn propose_inner(&self, command: Command) -> Result<Response, ProposeError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last_error;
        loop {
            match self.propose_local(command.clone()).await {
                Ok(applied) => return applied.map_err(ProposeError::Rejected),
                Err(LocalWrite::Fatal(e)) => return Err(ProposeError::Fatal(e)),
                // Appended but not committed in time: retrying could apply it twice.
                Err(LocalWrite::Pending) => return Err(ProposeError::Unavailable(PENDING.into())),
                Err(LocalWrite::NotLeader(Some((leader, addr)))) => {
                    self.inner.metrics.forwarded_proposals.inc();
                    let forwarded = Request::Propose(command.clone());
                    match self.inner.client.call(&addr, &forwarded, FORWARD_TIMEOUT).await {
                        Ok(Reply::Propose(applied)) => return applied.map_err(ProposeError::Rejected),
                        Ok(Reply::NotLeader { .. }) => last_error = format!("node {leader} is no longer the leader"),
                        Ok(Reply::Error(e)) => return Err(ProposeError::Unavailable(format!("leader {leader}: {e}"))),
                        Ok(other) => return Err(ProposeError::Unavailable(format!("leader {leader}: {other:?}"))),
                        // The leader may have died mid-call (the common case in a fail-over): try
                        // the next leader. Commands carry their ids, so a repeat is refused as a
                        // duplicate rather than applied twice (chat lines are deduplicated by id).
                        Err(e) => last_error = e.to_string(),
                    }
                }
                Err(LocalWrite::NotLeader(None)) => last_error = "no leader elected yet".into(),
            }
            if Instant::now() >= deadline {
                return Err(ProposeError::Unavailable(last_error));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Write through the local Raft if it is the leader; never forwards. Concurrent proposals are
    /// grouped into one log entry by [`run_batcher`].
    async fn propose_local(&self, command: Command) -> Result<ApplyResult, LocalWrite> {
        let (reply, answer) = oneshot::channel();
        if self.inner.batcher.send((command, reply)).await.is_err() {
            return Err(LocalWrite::Fatal("the catalog is shutting down".into()));
        }
        answer.await.unwrap_or_else(|_| Err(LocalWrite::Fatal("the catalog is shutting down".into())))
    }

    fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        let addr = metrics.membership_config.membership().get_node(&leader)?.addr.clone();
        Some((leader, addr))
    }

    fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Run a leader-only request here if we lead, else on the leader; retry across elections.
    async fn leader_op(&self, request: Request) -> Result<Reply, ProposeError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last_error;
        loop {
            let reply = if self.is_leader() {
                Ok(self.handle_on_leader(&request).await)
            } else if let Some((_, addr)) = self.leader() {
                self.inner.client.call(&addr, &request, Duration::from_secs(20)).await
            } else {
                Ok(Reply::NotLeader { leader: None })
            };
            match reply {
                Ok(Reply::NotLeader { .. }) => last_error = "leader changed".into(),
                Ok(reply) => return Ok(reply),
                Err(e) => last_error = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(ProposeError::Unavailable(last_error));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Requests that only the leader answers. Replies `NotLeader` elsewhere.
    async fn handle_on_leader(&self, request: &Request) -> Reply {
        let raft = &self.inner.raft;
        let not_leader = |c: &Catalog| Reply::NotLeader { leader: c.leader() };
        match request {
            Request::ReadIndex => match raft.get_read_log_id().await {
                Ok((read, _applied)) => Reply::ReadIndex(read.map(|l| l.index).unwrap_or(0)),
                Err(RaftError::APIError(_)) => not_leader(self),
                Err(e) => Reply::Error(e.to_string()),
            },
            Request::Status => {
                if self.is_leader() {
                    Reply::Status(self.local_status())
                } else {
                    not_leader(self)
                }
            }
            Request::Join { node_id, addr } => self.add_member(*node_id, addr).await,
            Request::Remove { node_id } => self.remove_member(*node_id).await,
            other => Reply::Error(format!("{} is not a leader request", other.kind())),
        }
    }

    async fn add_member(&self, node_id: NodeId, addr: &str) -> Reply {
        let raft = &self.inner.raft;
        let node = BasicNode { addr: addr.to_owned() };
        let membership = raft.metrics().borrow().membership_config.membership().clone();
        if membership.get_node(&node_id).is_none() {
            match raft.add_learner(node_id, node, true).await {
                Ok(_) => tracing::info!(node_id, addr, "added learner"),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    return Reply::NotLeader { leader: self.leader() }
                }
                Err(e) => return Reply::Error(format!("adding learner {node_id}: {e}")),
            }
        }
        let membership = raft.metrics().borrow().membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if !voters.contains(&node_id) && voters.len() < self.inner.config.voters {
            match raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), true).await {
                Ok(_) => tracing::info!(node_id, voters = voters.len() + 1, "promoted to voter"),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    return Reply::NotLeader { leader: self.leader() }
                }
                Err(e) => return Reply::Error(format!("promoting {node_id}: {e}")),
            }
        }
        Reply::Done
    }

    async fn remove_member(&self, node_id: NodeId) -> Reply {
        let raft = &self.inner.raft;
        let membership = raft.metrics().borrow().membership_config.membership().clone();
        let change = if membership.voter_ids().any(|v| v == node_id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))
        } else if membership.get_node(&node_id).is_some() {
            ChangeMembers::RemoveNodes(BTreeSet::from([node_id]))
        } else {
            return Reply::Error(format!("node {node_id} is not a member"));
        };
        match raft.change_membership(change, false).await {
            Ok(_) => {}
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                return Reply::NotLeader { leader: self.leader() }
            }
            Err(e) => return Reply::Error(format!("removing {node_id}: {e}")),
        }
        tracing::info!(node_id, "removed from the cluster");
        // The directory entry goes too; a missing entry is fine.
        match self.propose(Command::RemoveNode { id: node_id }).await {
            Ok(_) | Err(ProposeError::Rejected(_)) => Reply::Done,
            Err(e) => Reply::Error(format!("removed from membership, directory update failed: {e}")),
        }
    }

    /// Remove a (dead) node from the cluster. Works on any node.
    pub async fn remove_node(&self, node_id: NodeId) -> Result<(), ProposeError> {
        match self.leader_op(Request::Remove { node_id }).await? {
            Reply::Done => Ok(()),
            Reply::Error(e) => Err(ProposeError::Unavailable(e)),
            other => Err(ProposeError::Unavailable(format!("unexpected reply {other:?}"))),
        }
    }

    /// Cluster status from the leader's point of view (or ours, if the leader is unreachable).
    pub async fn status(&self) -> ClusterStatus {
        if !self.is_leader() {
            if let Some((_, addr)) = self.leader() {
                if let Ok(Reply::Status(status)) =
                    self.inner.client.call(&addr, &Request::Status, Duration::from_secs(2)).await
                {
                    return status;
                }
            }
        }
        self.local_status()
    }

    /// Cluster status as this node sees it right now.
    pub fn local_status(&self) -> ClusterStatus {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let last_applied = if *id == self.inner.id {
                    metrics.last_applied.map(|l| l.index)
                } else {
                    metrics.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map(|l| l.index)
                };
                let (region, roles) =
                    self.read(|s| s.node(*id).map(|n| (n.region.clone(), n.roles.clone()))).unwrap_or_default();
                MemberStatus {
                    node_id: *id,
                    region,
                    roles,
                    voter: voters.contains(id),
                    last_applied,
                    addr: node.addr.clone(),
                }
            })
            .collect();
        ClusterStatus { leader_id: metrics.current_leader, term: metrics.current_term, members }
    }

    /// Dispatch one request that arrived over QUIC (`authenticated` = peer presented a CA-signed
    /// certificate) or over the admin socket (always authenticated: filesystem permissions).
    async fn handle(&self, request: Request, authenticated: bool, peer: &str) -> Reply {
        if !authenticated && !matches!(request, Request::Enrol(_)) {
            self.inner.metrics.refused_peers.inc();
            tracing::warn!(peer, request = request.kind(), "refused request from a peer without a cluster certificate");
            return Reply::Error("unauthenticated peers may only enrol".into());
        }
        let raft = &self.inner.raft;
        match request {
            Request::AppendEntries(rpc) => Reply::AppendEntries(raft.append_entries(rpc).await),
            Request::Vote(rpc) => Reply::Vote(raft.vote(rpc).await),
            Request::InstallSnapshot(rpc) => Reply::InstallSnapshot(raft.install_snapshot(rpc).await),
            // The CLI is a client like any other: its writes go wherever the leader is.
            Request::Propose(command) if peer == ADMIN_PEER => match self.propose(command).await {
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
            request @ (Request::Join { .. } | Request::Remove { .. } | Request::Status) => {
                self.leader_op(request).await.unwrap_or_else(|e| Reply::Error(e.to_string()))
            }
            Request::Enrol(enrol) => self.enrol(enrol, peer).await,
            Request::Dump => self.dump_records().map(Reply::Dump).unwrap_or_else(|e| Reply::Error(e.to_string())),
            Request::Partition { blocked } => {
                if !self.inner.config.fault_injection {
                    return Reply::Error("fault injection is disabled".into());
                }
                tracing::warn!(?blocked, "fault injection: partitioning");
                self.inner.client.set_blocked(blocked);
                Reply::Done
            }
        }
    }

    async fn enrol(&self, request: EnrolRequest, peer: &str) -> Reply {
        let Some(ca) = &self.inner.ca else {
            return Reply::Error("this node does not hold the cluster CA; join through another member".into());
        };
        if let Err(e) = ca.verify_join_token(&request.token, now_millis() / 1000) {
            self.inner.metrics.refused_peers.inc();
            tracing::warn!(peer, error = %e, "refused enrolment");
            return Reply::Error(format!("enrolment refused: {e}"));
        }
        let members: BTreeSet<NodeId> =
            self.inner.raft.metrics().borrow().membership_config.membership().nodes().map(|(id, _)| *id).collect();
        let node_id = match request.node_id {
            Some(id) if members.contains(&id) => {
                return Reply::Error(format!(
                    "node id {id} is already a member; remove it first or pick another --node-id"
                ))
            }
            Some(id) => id,
            None => {
                let at_least = members.iter().next_back().copied().unwrap_or(0) + 1;
                match self.propose(Command::ReserveNodeId { at_least }).await {
                    Ok(Response::NodeId(id)) => id,
                    Ok(other) => return Reply::Error(format!("unexpected reply {other:?}")),
                    Err(e) => return Reply::Error(format!("allocating a node id: {e}")),
                }
            }
        };
        match ca.sign_node_csr(node_id, &request.csr_der) {
            Ok(cert) => {
                tracing::info!(peer, node_id, "enrolled a new node");
                Reply::Enrol(EnrolResponse {
                    node_id,
                    cert_der: cert.to_vec(),
                    ca_cert_der: ca.cert_der().to_vec(),
                    ca_key_pem: ca.key_pem(),
                })
            }
            Err(e) => Reply::Error(format!("signing the certificate request: {e}")),
        }
    }

    /// Stop Raft and the listeners. In-flight RPCs are cut.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        self.inner.endpoint.close(0u32.into(), b"shutdown");
        for task in self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
        let _ = std::fs::remove_file(admin_socket_path(&self.inner.config.data_dir));
    }
}

/// Peer name of requests from the local admin socket.
const ADMIN_PEER: &str = "admin-socket";

/// A proposal waiting for the batcher, with where to send its outcome.
type Proposal = (Command, oneshot::Sender<Result<ApplyResult, LocalWrite>>);

/// Proposals queued for the batcher before proposers wait for room.
const BATCHER_QUEUE: usize = 8192;
/// Most proposals grouped into one log entry.
const MAX_GROUP: usize = 1024;

/// Group commit. openraft appends (and fsyncs) client writes one at a time, so under load each
/// proposal would cost a log append of its own. This task takes whatever proposals are queued,
/// writes them as one [`Command::Batch`] entry and hands each proposer its own answer. A lone
/// proposal is written as itself, so an idle catalog pays no extra latency.
async fn run_batcher(raft: Raft, mut proposals: mpsc::Receiver<Proposal>) {
    while let Some(first) = proposals.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match proposals.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        if group.len() == 1 {
            let (command, reply) = group.remove(0);
            let _ = reply.send(write_entry(&raft, command).await);
            continue;
        }
        let (commands, replies): (Vec<Command>, Vec<_>) = group.into_iter().unzip();
        let count = commands.len();
        match write_entry(&raft, Command::Batch(commands)).await {
            Ok(Ok(Response::Batch(results))) if results.len() == count => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Ok(other) => {
                let e = LocalWrite::Fatal(format!("batch of {count} answered {other:?}"));
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One log entry through the local Raft.
async fn write_entry(raft: &Raft, command: Command) -> Result<ApplyResult, LocalWrite> {
    // A leader cut off from its quorum cannot commit; don't wait for it forever.
    let Ok(written) = tokio::time::timeout(COMMIT_TIMEOUT, raft.client_write(command)).await else {
        return Err(LocalWrite::Pending);
    };
    match written {
        Ok(response) => Ok(response.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(LocalWrite::NotLeader(f.leader_id.zip(f.leader_node.map(|n| n.addr))))
        }
        Err(RaftError::APIError(e)) => Err(LocalWrite::Fatal(e.to_string())),
        Err(RaftError::Fatal(e)) => Err(LocalWrite::Fatal(e.to_string())),
    }
}

#[derive(Debug, Clone)]
enum LocalWrite {
    NotLeader(Option<(NodeId, String)>),
    /// Appended to the leader's log but not committed within [`COMMIT_TIMEOUT`].
    Pending,
    Fatal(String),
}

/// How long a leader waits for a quorum to commit a proposal before answering "pending".
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// A forwarded proposal waits a little longer than the leader's own commit timeout.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(7);
const PENDING: &str = "not committed in time (no quorum?); the write may still apply later";

fn advertise_addr(configured: Option<&str>, bound: SocketAddr) -> String {
    match configured {
        Some(addr) if !addr.ends_with(":0") => addr.to_owned(),
        // A host with port 0: advertise that host at the port just bound (ephemeral ports).
        Some(addr) if addr.parse::<SocketAddr>().is_ok_and(|a| !a.ip().is_unspecified()) => {
            addr.parse::<SocketAddr>().map(|a| SocketAddr::new(a.ip(), bound.port()).to_string()).unwrap_or_default()
        }
        _ => {
            let ip = if bound.ip().is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { bound.ip() };
            SocketAddr::new(ip, bound.port()).to_string()
        }
    }
}

/// Use the identity in the data dir, or create one: bootstrap (new CA) or enrol (join token).
async fn load_or_create_identity(
    config: &CatalogConfig,
    paths: &TlsPaths,
) -> anyhow::Result<(NodeIdentity, Option<ClusterCa>)> {
    if let (Some(id), true) = (stored_node_id(&config.data_dir), paths.has_identity()) {
        if let Some(flag) = config.node_id {
            anyhow::ensure!(
                flag == id,
                "--node-id {flag} does not match node id {id} stored in {}",
                config.data_dir.display()
            );
        }
        let identity = NodeIdentity::load(paths, id)?;
        let ca = ClusterCa::load(paths).ok();
        return Ok((identity, ca));
    }
    let (identity, ca) = match &config.join {
        None => {
            let ca = ClusterCa::generate()?;
            let identity = ca.issue_node_identity(config.node_id.unwrap_or(1))?;
            (identity, ca)
        }
        Some(join) => enrol_with(join, config.node_id).await?,
    };
    ca.save(paths)?;
    identity.save(paths)?;
    let file = serde_json::to_string(&NodeFile { node_id: identity.node_id })?;
    std::fs::write(node_file(&config.data_dir), file)?;
    Ok((identity, Some(ca)))
}

/// Present the join token to a member and get a certificate back.
async fn enrol_with(join: &JoinConfig, node_id: Option<NodeId>) -> anyhow::Result<(NodeIdentity, ClusterCa)> {
    let token = JoinToken::parse(&join.token).context("--join-token")?;
    let pending = PendingEnrolment::new()?;
    let tls = tls::enrol_client_config(token.ca_fingerprint)?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls)?));
    client_config.transport_config(Arc::new(transport::transport_config()));
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))?;
    endpoint.set_default_client_config(client_config);
    let request = Request::Enrol(EnrolRequest { token: join.token.clone(), csr_der: pending.csr_der.clone(), node_id });
    let deadline = Instant::now() + Duration::from_secs(60);
    let reply = loop {
        let attempt = async {
            let addr = transport::resolve(&join.addr).await.map_err(|e| (true, e.to_string()))?;
            let connecting = endpoint.connect(addr, tls::SERVER_NAME).map_err(|e| (false, e.to_string()))?;
            let conn = connecting.await.map_err(|e| {
                // A TLS failure (wrong cluster, bad certificate) will not fix itself; a silent peer might.
                let retry = matches!(e, quinn::ConnectionError::TimedOut | quinn::ConnectionError::Reset);
                (retry, e.to_string())
            })?;
            transport::call_on(&conn, &request).await.map_err(|e| (true, e))
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(reply)) => break reply,
            Ok(Err((true, e))) if Instant::now() < deadline => {
                tracing::warn!(join = %join.addr, error = %e, "enrolment attempt failed; retrying")
            }
            Ok(Err((_, e))) => anyhow::bail!("enrolling at {}: {e}", join.addr),
            Err(_) if Instant::now() < deadline => {
                tracing::warn!(join = %join.addr, "enrolment attempt timed out; retrying")
            }
            Err(_) => anyhow::bail!("enrolling at {}: timed out", join.addr),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    endpoint.close(0u32.into(), b"enrolled");
    match reply {
        Reply::Enrol(r) => {
            let ca = ClusterCa::from_parts(r.ca_cert_der.clone(), &r.ca_key_pem)?;
            anyhow::ensure!(ca.fingerprint() == token.ca_fingerprint, "enrolment returned a CA other than the token's");
            tracing::info!(node_id = r.node_id, join = %join.addr, "enrolled into the cluster");
            Ok((pending.complete(r.node_id, r.cert_der, r.ca_cert_der), ca))
        }
        Reply::Error(e) => anyhow::bail!("{e}"),
        other => anyhow::bail!("unexpected enrolment reply {other:?}"),
    }
}

/// After enrolment, ask the cluster to add us (retries until the leader answers).
async fn ask_to_join(catalog: Catalog, join_addr: String) {
    let request = Request::Join { node_id: catalog.inner.id, addr: catalog.inner.advertise.clone() };
    loop {
        match catalog.inner.client.call(&join_addr, &request, Duration::from_secs(60)).await {
            Ok(Reply::Done) => {
                tracing::info!(join = %join_addr, "joined the cluster");
                return;
            }
            Ok(other) => tracing::warn!(join = %join_addr, reply = ?other, "join not accepted yet; retrying"),
            Err(e) => tracing::warn!(join = %join_addr, error = %e, "join request failed; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Publish this node in the node directory once a leader is known.
async fn register_in_directory(catalog: Catalog) {
    let config = &catalog.inner.config;
    let mut addresses = vec![("cluster".to_owned(), catalog.inner.advertise.clone())];
    addresses.extend(config.addresses.iter().cloned());
    loop {
        let info = NodeInfo {
            id: catalog.inner.id,
            region: config.region.clone(),
            roles: config.roles.clone(),
            addresses: addresses.clone(),
            load: NodeLoad::default(),
            updated_at: now_millis(),
        };
        let already = catalog.read(|s| {
            s.node(info.id).map(|n| n.region == info.region && n.roles == info.roles && n.addresses == info.addresses)
        });
        if already == Some(true) {
            return;
        }
        match catalog.propose(Command::UpsertNode(info)).await {
            Ok(_) => return,
            Err(e) => tracing::debug!(error = %e, "node directory registration pending"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Mirror openraft's metrics into Prometheus gauges.
async fn track_metrics(catalog: Catalog) {
    let mut rx = catalog.inner.raft.metrics();
    loop {
        {
            let m = rx.borrow_and_update();
            let g = &catalog.inner.metrics;
            g.term.set(m.current_term as i64);
            g.leader_id.set(m.current_leader.unwrap_or(0) as i64);
            g.is_leader.set(i64::from(m.state == ServerState::Leader));
            g.last_log_index.set(m.last_log_index.unwrap_or(0) as i64);
            g.applied_index.set(m.last_applied.map(|l| l.index).unwrap_or(0) as i64);
            g.snapshot_index.set(m.snapshot.map(|l| l.index).unwrap_or(0) as i64);
            g.purged_index.set(m.purged.map(|l| l.index).unwrap_or(0) as i64);
            g.members.set(m.membership_config.membership().nodes().count() as i64);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Accept cluster connections and serve one request per bidirectional stream.
async fn serve_cluster(catalog: Catalog, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let catalog = catalog.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(e) => {
                    catalog.inner.metrics.refused_peers.inc();
                    tracing::warn!(peer = %remote, error = %e, "refused cluster connection (TLS handshake failed)");
                    return;
                }
            };
            let authenticated = conn
                .peer_identity()
                .and_then(|any| any.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>().ok())
                .is_some_and(|chain| !chain.is_empty());
            let peer = remote.to_string();
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let catalog = catalog.clone();
                let peer = peer.clone();
                tokio::spawn(async move {
                    let reply = match recv.read_to_end(MAX_MESSAGE).await {
                        Ok(bytes) => match crate::codec::decode::<Request>(&bytes) {
                            Ok(request) => catalog.handle(request, authenticated, &peer).await,
                            Err(e) => {
                                tracing::warn!(peer, error = %e, "malformed cluster request");
                                Reply::Error(format!("malformed request: {e}"))
                            }
                        },
                        Err(e) => {
                            tracing::debug!(peer, error = %e, "cluster stream ended early");
                            return;
                        }
                    };
                    let _ = send.write_all(&crate::codec::encode(&reply)).await;
                    let _ = send.finish();
                });
            }
        });
    }
}

/// Serve the local admin socket (`<data>/admin.sock`, mode 0600): the CLI's way into a running node.
async fn serve_admin_socket(catalog: Catalog) {
    let path = admin_socket_path(&catalog.inner.config.data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "admin socket unavailable; CLI commands will work offline only");
            return;
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    while let Ok((mut stream, _)) = listener.accept().await {
        let catalog = catalog.clone();
        tokio::spawn(async move {
            let request = match read_frame(&mut stream).await {
                Ok(bytes) => crate::codec::decode::<Request>(&bytes),
                Err(_) => return,
            };
            let reply = match request {
                Ok(request) => catalog.handle(request, true, ADMIN_PEER).await,
                Err(e) => Reply::Error(format!("malformed request: {e}")),
            };
            let _ = write_frame(&mut stream, &crate::codec::encode(&reply)).await;
        });
    }
}

async fn read_frame(stream: &mut tokio::net::UnixStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u32().await? as usize;
    if len > MAX_MESSAGE {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame(stream: &mut tokio::net::UnixStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_u32(bytes.len() as u32).await?;
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Send a request to the node running on `data_dir` through its admin socket.
pub async fn admin_call(data_dir: &Path, request: &Request) -> std::io::Result<Reply> {
    let mut stream = tokio::net::UnixStream::connect(admin_socket_path(data_dir)).await?;
    write_frame(&mut stream, &crate::codec::encode(request)).await?;
    let bytes = read_frame(&mut stream).await?;
    crate::codec::decode(&bytes).map_err(std::io::Error::other)
}
