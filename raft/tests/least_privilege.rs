//! Least privilege between nodes, with real catalogs over QUIC on loopback: an edge-only node
//! gets no CA key and cannot write users or dump; join tokens are counted cluster-wide; a revoked
//! node is refused by the members.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use raft::catalog::admin_call;
use raft::metrics::CatalogMetrics;
use raft::rpc::{Reply, Request};
use raft::tls::{ClusterCa, NodeIdentity, TlsPaths};
use raft::transport::ClusterClient;
use raft::{Catalog, CatalogConfig, Command, JoinConfig, ProposeError, User};

const READY: Duration = Duration::from_secs(30);

async fn start(dir: &Path, roles: &[&str], join: Option<(&Catalog, &str)>) -> anyhow::Result<Catalog> {
    let mut config = CatalogConfig::local(dir);
    config.roles = roles.iter().map(|r| r.to_string()).collect();
    config.join =
        join.map(|(member, token)| JoinConfig { addr: member.cluster_addr().to_owned(), token: token.to_owned() });
    let catalog = Catalog::start_with_metrics(config, Arc::new(CatalogMetrics::unregistered())).await?;
    catalog.wait_ready(READY).await?;
    Ok(catalog)
}

fn token(data: &Path, uses: u32) -> String {
    ClusterCa::load(&TlsPaths::new(data)).unwrap().join_token(raft::now_millis() / 1000 + 600, uses)
}

/// A client holding the certificate stored in `data`.
fn client_of(data: &Path, node_id: u64) -> ClusterClient {
    let identity = NodeIdentity::load(&TlsPaths::new(data), node_id).unwrap();
    let endpoint = quinn::Endpoint::client(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    ClusterClient::new(endpoint, identity.client_config().unwrap()).unwrap()
}

fn user(id: &str) -> Command {
    Command::CreateUser(User {
        id: id.into(),
        display_name: id.into(),
        email: format!("{id}@example.com"),
        roles: vec!["admin".into()],
        password_hash: Some("$argon2id$not-a-real-hash".into()),
        created_at: 1,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_get_no_ca_key_nor_write_rights_tokens_are_single_use_and_revocation_holds() {
    let root = tempfile::tempdir().unwrap();
    let (d1, d2, d3, d4) =
        (root.path().join("c1"), root.path().join("c2"), root.path().join("edge"), root.path().join("late"));
    let control = start(&d1, &["control"], None).await.unwrap();

    // A second control node joins and gets the CA key; the token is then used up.
    let t1 = token(&d1, 1);
    let control2 = start(&d2, &["control", "origin"], Some((&control, &t1))).await.unwrap();
    assert!(d2.join("tls/ca.key").exists(), "a control node keeps the CA key");

    // An edge joins through the first member with a fresh single-use token.
    let t2 = token(&d1, 1);
    let edge = start(&d3, &["edge"], Some((&control, &t2))).await.unwrap();
    assert!(d3.join("tls/node.key").exists() && d3.join("tls/ca.pem").exists());
    assert!(!d3.join("tls/ca.key").exists(), "an edge-only node must not hold the CA key");
    let status = control.status().await;
    let edge_member = status.members.iter().find(|m| m.node_id == edge.node_id()).expect("the edge is a member");
    assert!(!edge_member.voter, "an edge is never promoted to voter");

    // The same token replayed, on the other control member: refused (uses are replicated).
    let replay = start(&d4, &["edge"], Some((&control2, &t2))).await;
    let err = replay.expect_err("a used token enrolled a second node").to_string();
    assert!(err.contains("already used"), "{err}");

    // The edge's certificate: viewers and reads yes; user changes and dumps no.
    let as_edge = client_of(&d3, edge.node_id());
    let call = |request: Request| {
        let as_edge = &as_edge;
        let addr = control.cluster_addr().to_owned();
        async move { as_edge.call(&addr, &request, Duration::from_secs(10)).await.unwrap() }
    };
    assert!(matches!(call(Request::Status).await, Reply::Status(_)));
    assert!(matches!(
        call(Request::Propose(Command::Noop { payload: vec![] })).await,
        Reply::Propose(Ok(_)) | Reply::NotLeader { .. }
    ));
    for request in [Request::Propose(user("mallory")), Request::Dump, Request::Remove { node_id: 1 }] {
        let kind = request.kind();
        let reply = call(request).await;
        assert!(matches!(&reply, Reply::Error(e) if e.contains("refused")), "{kind} from an edge: {reply:?}");
    }
    // Through the edge's own catalog API the refusal reaches the caller too.
    match edge.propose(user("mallory2")).await {
        Err(ProposeError::Unavailable(e)) => assert!(e.contains("refused"), "{e}"),
        other => panic!("an edge proposed a user change: {other:?}"),
    }
    assert!(control.read(|s| s.user("mallory").is_none() && s.user("mallory2").is_none()));
    // A control member may still do all of it.
    control2.propose(user("alice")).await.unwrap();

    // Revoke the edge (through the admin socket, as `bitriver cluster revoke` does).
    let edge_id = edge.node_id();
    let reply = admin_call(&d1, &Request::Revoke { node_id: edge_id }).await.unwrap();
    assert!(matches!(reply, Reply::Done), "{reply:?}");
    for member in [&control, &control2] {
        let deadline = std::time::Instant::now() + READY;
        while !member.read(|s| s.access().is_revoked(edge_id)) {
            assert!(std::time::Instant::now() < deadline, "revocation never reached node {}", member.node_id());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let fresh = client_of(&d3, edge_id);
        let outcome = fresh.call(member.cluster_addr(), &Request::Status, Duration::from_secs(10)).await;
        assert!(
            !matches!(outcome, Ok(Reply::Status(_))),
            "node {} still answers a revoked node: {outcome:?}",
            member.node_id()
        );
    }
    // The pooled connection opened before the revocation is refused per request as well.
    assert!(matches!(call(Request::Status).await, Reply::Error(e) if e.contains("revoked")));
    assert!(control.status().await.members.iter().all(|m| m.node_id != edge_id), "revoke removes the node");

    edge.shutdown().await;
    control2.shutdown().await;
    control.shutdown().await;
}
