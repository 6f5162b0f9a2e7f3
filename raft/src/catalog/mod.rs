//! The catalog node: starts Raft on RocksDB and QUIC, serves cluster RPCs and the local admin
//! socket, and gives the rest of the code its typed client API.
//!
//! - [`Catalog::propose`] works on any node: a follower forwards to the leader over QUIC.
//! - [`Catalog::read`] reads the local replica (fast, possibly a little stale).
//! - [`Catalog::read_linearizable`] first learns the leader's commit point (read index) and waits
//!   until the local replica has applied it.
//!
//! One module per job:
//!
//! | module         | job                                                                     |
//! |----------------|-------------------------------------------------------------------------|
//! | [`config`]     | what the catalog needs to start                                         |
//! | `bootstrap`    | identity in the data dir, advertised address, directory entry, metrics  |
//! | `enrol`        | joining with a token (client side) and enrolling others (member side)   |
//! | `client`       | `propose`, linearizable reads, leader-only operations                   |
//! | `batcher`      | group commit of concurrent proposals                                    |
//! | `membership`   | adding and removing members, cluster status                             |
//! | `server`       | the QUIC listener and the dispatch of each request                      |
//! | [`admin`]      | the local admin socket the CLI uses                                     |

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use openraft::{BasicNode, SnapshotPolicy};
use prometheus::Registry;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::metrics::CatalogMetrics;
use crate::state::CatalogState;
use crate::store::{AppliedEvent, Database, LogStore, SharedState, StateMachineStore};
use crate::tls::{ClusterCa, TlsPaths};
use crate::transport::{ClusterClient, NetworkFactory};
use crate::types::NodeId;
use crate::Raft;

pub mod admin;
mod batcher;
mod bootstrap;
mod client;
pub mod config;
mod enrol;
mod membership;
mod server;

pub use crate::status::{ClusterStatus, MemberStatus};
pub use admin::{admin_call, admin_socket_path};
pub use bootstrap::stored_node_id;
pub use client::ProposeError;
pub use config::{CatalogConfig, JoinConfig, RaftTuning};
pub use server::{ENROL_LIFETIME, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_MEMBER, MAX_UNAUTHENTICATED_PER_ADDR};

use admin::serve_admin_socket;
use batcher::{run_batcher, Proposal, BATCHER_QUEUE};
use bootstrap::{advertise_addr, load_or_create_identity, register_in_directory, track_metrics};
use enrol::ask_to_join;
use server::serve_cluster;

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
    /// Where authorised relay connections go (set by [`Catalog::serve_relay`]).
    relay: std::sync::OnceLock<mpsc::Sender<(quinn::Connection, NodeId)>>,
    /// Dialing side of the relay: TLS on the relay ALPN, and one connection per publisher.
    relay_client: quinn::ClientConfig,
    relay_connections: Mutex<std::collections::HashMap<String, quinn::Connection>>,
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

        let endpoint = quinn::Endpoint::server(server::server_config(&identity)?, config.cluster_bind)
            .with_context(|| format!("binding cluster QUIC listener on udp {}", config.cluster_bind))?;
        let bound = endpoint.local_addr()?;
        let advertise = advertise_addr(config.cluster_advertise.as_deref(), bound);
        let client = Arc::new(ClusterClient::new(endpoint.clone(), identity.client_config()?)?);
        let relay_client = {
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(identity.relay_client_config()?)?;
            let mut config = quinn::ClientConfig::new(Arc::new(crypto));
            config.transport_config(Arc::new(crate::transport::client_transport_config()));
            config
        };

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
                relay: std::sync::OnceLock::new(),
                relay_client,
                relay_connections: Mutex::default(),
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

    /// Makes this node a relay publisher: connections from members allowed to subscribe (see
    /// [`crate::authz::may_subscribe`]) arrive on the returned queue with the subscriber's node
    /// id, authenticated, checked against revocations and within the per-member connection
    /// limit. Once per catalog.
    pub fn serve_relay(&self) -> Option<mpsc::Receiver<(quinn::Connection, NodeId)>> {
        let (tx, rx) = mpsc::channel(64);
        self.inner.relay.set(tx).ok()?;
        Some(rx)
    }

    /// A relay connection to the member whose cluster listener is at `addr` (reused while it is
    /// open). A publisher that refuses us closes it with the reason.
    pub async fn connect_relay(&self, addr: &str) -> Result<quinn::Connection, crate::transport::TransportError> {
        let pooled = self.inner.relay_connections.lock().unwrap_or_else(|p| p.into_inner()).get(addr).cloned();
        if let Some(conn) = pooled.filter(|c| c.close_reason().is_none()) {
            return Ok(conn);
        }
        let socket = crate::transport::resolve(addr).await?;
        let connect_err = |reason: String| crate::transport::TransportError::Connect { addr: addr.to_owned(), reason };
        let conn = self
            .inner
            .endpoint
            .connect_with(self.inner.relay_client.clone(), socket, crate::tls::SERVER_NAME)
            .map_err(|e| connect_err(e.to_string()))?
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        self.inner.relay_connections.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.to_owned(), conn.clone());
        Ok(conn)
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
