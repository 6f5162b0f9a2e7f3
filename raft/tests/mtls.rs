//! Cluster QUIC only talks to members: a certificate from another cluster fails the handshake,
//! and a peer without a certificate may enrol but do nothing else.

use std::sync::Arc;
use std::time::Duration;

use raft::metrics::CatalogMetrics;
use raft::rpc::{Reply, Request};
use raft::tls::{self, ClusterCa, TlsPaths};
use raft::transport::{self, ClusterClient};
use raft::{Catalog, CatalogConfig};

async fn start_member(dir: &std::path::Path) -> (Catalog, Arc<CatalogMetrics>) {
    let metrics = Arc::new(CatalogMetrics::unregistered());
    let catalog = Catalog::start_with_metrics(CatalogConfig::local(dir), metrics.clone()).await.unwrap();
    catalog.wait_ready(Duration::from_secs(10)).await.unwrap();
    (catalog, metrics)
}

fn client_endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (member, metrics) = start_member(dir.path()).await;

    // Same software, valid-looking node certificate, but signed by a different cluster CA.
    let stranger = ClusterCa::generate().unwrap().issue_node_identity(2).unwrap();
    let client = ClusterClient::new(client_endpoint(), stranger.client_config().unwrap()).unwrap();
    let result = client.call(member.cluster_addr(), &Request::Status, Duration::from_secs(5)).await;
    assert!(result.is_err(), "a foreign cluster's node got an answer: {result:?}");

    // A member's own certificate works on the same listener.
    let ca = ClusterCa::load(&TlsPaths::new(dir.path())).unwrap();
    let insider = ca.issue_node_identity(9).unwrap();
    let client = ClusterClient::new(client_endpoint(), insider.client_config().unwrap()).unwrap();
    let reply = client.call(member.cluster_addr(), &Request::Status, Duration::from_secs(5)).await.unwrap();
    assert!(matches!(reply, Reply::Status(s) if s.leader_id == Some(member.node_id())));
    assert!(metrics.refused_peers.get() >= 1, "the refused handshake should be counted");
    member.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_a_certificate_may_only_enrol() {
    let dir = tempfile::tempdir().unwrap();
    let (member, metrics) = start_member(dir.path()).await;
    let ca = ClusterCa::load(&TlsPaths::new(dir.path())).unwrap();

    let mut endpoint = client_endpoint();
    let config = tls::enrol_client_config(ca.fingerprint()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(config).unwrap(),
    )));
    let addr = transport::resolve(member.cluster_addr()).await.unwrap();
    let conn = endpoint.connect(addr, tls::SERVER_NAME).unwrap().await.unwrap();

    let before = metrics.refused_peers.get();
    for request in [Request::Status, Request::Propose(raft::Command::Noop { payload: vec![] }), Request::Dump] {
        let reply = transport::call_on(&conn, &request).await.unwrap();
        assert!(matches!(&reply, Reply::Error(e) if e.contains("only enrol")), "{reply:?}");
    }
    assert_eq!(metrics.refused_peers.get(), before + 3);

    // Garbage on a stream gets an error reply, and the member keeps serving.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"\x01\xff\xff\xff garbage").await.unwrap();
    send.finish().unwrap();
    let bytes = recv.read_to_end(1 << 20).await.unwrap();
    assert!(matches!(raft::codec::decode::<Reply>(&bytes).unwrap(), Reply::Error(_)));
    member.propose(raft::Command::Noop { payload: vec![1] }).await.unwrap();
    member.shutdown().await;
}
