//! The cluster listener: accepts QUIC connections, serves one request per bidirectional stream,
//! and dispatches each request (also those from the admin socket).

use super::admin::ADMIN_PEER;
use super::batcher::{LocalWrite, PENDING};
use super::client::ProposeError;
use super::Catalog;
use crate::rpc::{Reply, Request, MAX_MESSAGE};

impl Catalog {
    /// Dispatch one request that arrived over QUIC (`authenticated` = peer presented a CA-signed
    /// certificate) or over the admin socket (always authenticated: filesystem permissions).
    pub(super) async fn handle(&self, request: Request, authenticated: bool, peer: &str) -> Reply {
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
}

/// Accept cluster connections and serve one request per bidirectional stream.
pub(super) async fn serve_cluster(catalog: Catalog, endpoint: quinn::Endpoint) {
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
