//! Enrolment: a new node presents a join token, a certificate request and its roles to a member
//! and gets a node certificate signed by the cluster CA, naming those roles; then it asks to be
//! added to the membership. Each use of a token is counted in the catalog first, so a token
//! cannot be used more often than it says, on any member. Only control nodes receive the CA key.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::client::ProposeError;
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
            return Reply::Error("this node does not hold the cluster CA; join through a control node".into());
        };
        let refuse = |why: String| {
            self.inner.metrics.refused_peers.inc();
            tracing::warn!(peer, error = %why, "refused enrolment");
            Reply::Error(format!("enrolment refused: {why}"))
        };
        let now = now_millis() / 1000;
        let token = match ca.verify_join_token(&request.token, now) {
            Ok(token) => token,
            Err(e) => return refuse(e.to_string()),
        };
        if let Err(e) = tls::validate_roles(&request.roles) {
            return refuse(e.to_string());
        }
        let members: BTreeSet<NodeId> =
            self.inner.raft.metrics().borrow().membership_config.membership().nodes().map(|(id, _)| *id).collect();
        if let Some(id) = request.node_id {
            if members.contains(&id) {
                return Reply::Error(format!(
                    "node id {id} is already a member; remove it first or pick another --node-id"
                ));
            }
            if self.read(|s| s.access().is_revoked(id)) {
                return refuse(format!("node id {id} was revoked; pick another --node-id"));
            }
        }
        // Count the use in the catalog before signing: a used-up token is refused everywhere.
        let use_token =
            Command::UseJoinToken { token_id: token.id(), max_uses: token.uses, expires_at: token.expires_at, now };
        match self.propose(use_token).await {
            Ok(_) => {}
            Err(ProposeError::Rejected(e)) => return refuse(e.to_string()),
            Err(e) => return Reply::Error(format!("counting the join token's use: {e}")),
        }
        let node_id = match request.node_id {
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
        match ca.sign_node_csr(node_id, &request.roles, &request.csr_der) {
            Ok(cert) => {
                let control = request.roles.is_empty() || request.roles.iter().any(|r| r == tls::CONTROL_ROLE);
                tracing::info!(peer, node_id, roles = ?request.roles, ca_key = control, "enrolled a new node");
                Reply::Enrol(EnrolResponse {
                    node_id,
                    cert_der: cert.to_vec(),
                    ca_cert_der: ca.cert_der().to_vec(),
                    ca_key_pem: control.then(|| ca.key_pem()),
                })
            }
            Err(e) => Reply::Error(format!("signing the certificate request: {e}")),
        }
    }
}

/// Present the join token to a member and get a certificate back (and the CA, for control nodes).
pub(super) async fn enrol_with(
    join: &JoinConfig,
    node_id: Option<NodeId>,
    roles: &[String],
) -> anyhow::Result<(NodeIdentity, Option<ClusterCa>)> {
    let token = JoinToken::parse(&join.token).context("--join-token")?;
    let pending = PendingEnrolment::new()?;
    let tls = tls::enrol_client_config(token.ca_fingerprint)?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls)?));
    client_config.transport_config(Arc::new(transport::client_transport_config()));
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))?;
    endpoint.set_default_client_config(client_config);
    let request = Request::Enrol(EnrolRequest {
        token: join.token.clone(),
        csr_der: pending.csr_der.clone(),
        node_id,
        roles: roles.to_vec(),
    });
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
            anyhow::ensure!(
                tls::fingerprint(&r.ca_cert_der) == token.ca_fingerprint,
                "enrolment returned a CA other than the token's"
            );
            let ca = match &r.ca_key_pem {
                Some(key) => Some(ClusterCa::from_parts(r.ca_cert_der.clone(), key)?),
                None => None,
            };
            tracing::info!(node_id = r.node_id, join = %join.addr, ca_key = ca.is_some(), "enrolled into the cluster");
            Ok((pending.complete(r.node_id, r.cert_der, r.ca_cert_der), ca))
        }
        Reply::Error(e) => anyhow::bail!("{e}"),
        other => anyhow::bail!("unexpected enrolment reply {other:?}"),
    }
}

/// After enrolment, ask the cluster to add us (retries until the leader answers).
pub(super) async fn ask_to_join(catalog: Catalog, join_addr: String) {
    // The member we ask decides `may_vote` from our certificate.
    let request = Request::Join { node_id: catalog.inner.id, addr: catalog.inner.advertise.clone(), may_vote: true };
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
