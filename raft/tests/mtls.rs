//! Cluster QUIC only talks to members: a certificate from another cluster fails the handshake,
//! a peer without a certificate gets no stream read on the cluster protocol, and on the enrolment
//! protocol it may send one enrolment request and nothing else.

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

/// A client without a certificate that pins the member's CA and speaks `alpn`.
async fn anonymous(member: &Catalog, ca: &ClusterCa, alpn: &[u8]) -> Result<quinn::Connection, String> {
    let mut endpoint = client_endpoint();
    let mut config = tls::enrol_client_config(ca.fingerprint()).unwrap();
    config.alpn_protocols = vec![alpn.to_vec()];
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(config).unwrap(),
    )));
    let addr = transport::resolve(member.cluster_addr()).await.unwrap();
    endpoint.connect(addr, tls::SERVER_NAME).unwrap().await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (member, metrics) = start_member(dir.path()).await;

    // Same software, valid-looking node certificate, but signed by a different cluster CA.
    let stranger = ClusterCa::generate().unwrap().issue_node_identity(2, &[]).unwrap();
    let client = ClusterClient::new(client_endpoint(), stranger.client_config().unwrap()).unwrap();
    let result = client.call(member.cluster_addr(), &Request::Status, Duration::from_secs(5)).await;
    assert!(result.is_err(), "a foreign cluster's node got an answer: {result:?}");

    // A member's own certificate works on the same listener.
    let ca = ClusterCa::load(&TlsPaths::new(dir.path())).unwrap();
    let insider = ca.issue_node_identity(9, &["control".to_owned()]).unwrap();
    let client = ClusterClient::new(client_endpoint(), insider.client_config().unwrap()).unwrap();
    let reply = client.call(member.cluster_addr(), &Request::Status, Duration::from_secs(5)).await.unwrap();
    assert!(matches!(reply, Reply::Status(s) if s.leader_id == Some(member.node_id())));
    assert!(metrics.refused_peers.get() >= 1, "the refused handshake should be counted");
    member.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_a_certificate_gets_no_rpc_but_enrolment() {
    let dir = tempfile::tempdir().unwrap();
    let (member, metrics) = start_member(dir.path()).await;
    let ca = ClusterCa::load(&TlsPaths::new(dir.path())).unwrap();

    // The cluster protocol without a certificate: closed before any stream is read.
    let before = metrics.refused_peers.get();
    for request in [Request::Status, Request::Propose(raft::Command::Noop { payload: vec![] }), Request::Dump] {
        let outcome = match anonymous(&member, &ca, tls::ALPN).await {
            Ok(conn) => transport::call_on(&conn, &request).await,
            Err(e) => Err(e),
        };
        // Closed by the member: the client sees the close (or a lost connection), never a reply.
        assert!(outcome.is_err(), "{} answered to a peer without a certificate: {outcome:?}", request.kind());
    }
    assert!(metrics.refused_peers.get() >= before + 3);

    // The enrolment protocol: only an enrolment request is read.
    let before = metrics.refused_peers.get();
    for request in [Request::Status, Request::Dump, Request::Revoke { node_id: 1 }] {
        let conn = anonymous(&member, &ca, tls::ENROL_ALPN).await.unwrap();
        let reply = transport::call_on(&conn, &request).await.unwrap();
        assert!(matches!(&reply, Reply::Error(e) if e.contains("not accepted")), "{reply:?}");
    }
    assert_eq!(metrics.refused_peers.get(), before + 3);

    // Garbage gets an error reply, and the member keeps serving.
    let conn = anonymous(&member, &ca, tls::ENROL_ALPN).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"\x01\xff\xff\xff garbage").await.unwrap();
    send.finish().unwrap();
    let bytes = recv.read_to_end(1 << 20).await.unwrap();
    assert!(matches!(raft::codec::decode::<Reply>(&bytes).unwrap(), Reply::Error(_)));

    // An enrolment request is read and answered (here: refused for its bad token).
    let conn = anonymous(&member, &ca, tls::ENROL_ALPN).await.unwrap();
    let enrol = raft::rpc::EnrolRequest { token: "brj2.x".into(), csr_der: vec![], node_id: None, roles: vec![] };
    let reply = transport::call_on(&conn, &Request::Enrol(enrol)).await.unwrap();
    assert!(matches!(&reply, Reply::Error(e) if e.contains("malformed join token")), "{reply:?}");
    member.propose(raft::Command::Noop { payload: vec![1] }).await.unwrap();
    member.shutdown().await;
}

/// An anonymous enrolment connection gets one stream and 64 KiB in flight: a client pushing
/// megabytes gets no further than that before the member closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_client_cannot_push_more_than_the_pre_auth_window() {
    let dir = tempfile::tempdir().unwrap();
    let (member, _metrics) = start_member(dir.path()).await;
    let ca = ClusterCa::load(&TlsPaths::new(dir.path())).unwrap();
    let conn = anonymous(&member, &ca, tls::ENROL_ALPN).await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    // An enrolment frame head, then far more than the window allows.
    send.write_all(&[raft::codec::FORMAT_VERSION, 8]).await.unwrap();
    let chunk = vec![0u8; 64 << 10];
    let mut sent = 2usize;
    let pushed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match send.write(&chunk).await {
                Ok(n) => sent += n,
                Err(_) => return,
            }
        }
    })
    .await;
    assert!(pushed.is_err() || sent <= 2 * transport::PRE_AUTH_WINDOW as usize, "wrote {sent} bytes");
    assert!(sent <= 2 * transport::PRE_AUTH_WINDOW as usize, "an anonymous client got {sent} bytes in flight");
    // A second stream is not granted while the first is open.
    let second = tokio::time::timeout(Duration::from_secs(1), conn.open_bi()).await;
    assert!(second.is_err() || second.unwrap().is_err(), "a second anonymous stream was granted");
    // The member cuts the connection off (read deadline, then the enrolment lifetime).
    let reason = tokio::time::timeout(Duration::from_secs(60), conn.closed()).await.expect("never cut off");
    assert!(matches!(reason, quinn::ConnectionError::ApplicationClosed(_)), "{reason:?}");
    member.shutdown().await;
}
