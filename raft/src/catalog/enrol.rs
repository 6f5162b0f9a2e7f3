//! Enrolment: a new node presents a join token and a certificate request to a member and gets a
//! node certificate signed by the cluster CA; then it asks to be added to the membership.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::config::JoinConfig;
use super::Catalog;
use crate::command::{Command, Response};
use crate::now_millis;
use crate::rpc::{EnrolRequest, EnrolResponse, Reply, Request};
use crate::tls::{self, ClusterCa, JoinToken, NodeIdentity, PendingEnrolment};
use crate::transport;
use crate::types::NodeId;

impl Catalog {
    pub(super) async fn enrol(&self, request: EnrolRequest, peer: &str) -> Reply {
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
}

/// Present the join token to a member and get a certificate back.
pub(super) async fn enrol_with(
    join: &JoinConfig,
    node_id: Option<NodeId>,
) -> anyhow::Result<(NodeIdentity, ClusterCa)> {
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
pub(super) async fn ask_to_join(catalog: Catalog, join_addr: String) {
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
