//! The cluster port against clients without a certificate, with a real `bitriver` process: they
//! are cut off, and the node's memory stays flat however much they try to send.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{create_user, propose, NodeProc};
use raft::tls::{self, ClusterCa, TlsPaths};

const STARTUP: Duration = Duration::from_secs(30);
/// Connections the attack opens: on the cluster protocol and on enrolment, pushing or trickling.
const ATTACKERS: usize = 32;
/// Streams each attacker tries to open, and what it tries to push on each.
const STREAMS: usize = 8;
const PUSH: usize = 2 << 20;

/// One client without a certificate: opens streams, pushes a burst (if `burst`), then trickles a
/// byte per stream every 200 ms until the node closes the connection (for at most 30 s).
/// Returns whether the node cut it off (refused it or closed it).
async fn attack(addr: std::net::SocketAddr, fingerprint: [u8; 32], alpn: &'static [u8], burst: bool) -> bool {
    let mut endpoint = quinn::Endpoint::client(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let mut config = tls::enrol_client_config(fingerprint).unwrap();
    config.alpn_protocols = vec![alpn.to_vec()];
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(config).unwrap(),
    )));
    let conn = match endpoint.connect(addr, tls::SERVER_NAME).unwrap().await {
        Ok(conn) => conn,
        // Refused before the handshake: over the per-address limit.
        Err(_) => return true,
    };
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let Ok(Ok((mut send, recv))) = tokio::time::timeout(Duration::from_secs(1), conn.open_bi()).await else {
            break;
        };
        // The head of an enrolment request, so the node waits for the rest of it.
        let _ = tokio::time::timeout(Duration::from_secs(1), send.write_all(&[raft::codec::FORMAT_VERSION, 8])).await;
        if burst {
            let _ = tokio::time::timeout(Duration::from_secs(2), send.write_all(&vec![0x55u8; PUSH])).await;
        }
        streams.push((send, recv));
    }
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until && conn.close_reason().is_none() {
        for (send, _) in &mut streams {
            let _ = tokio::time::timeout(Duration::from_millis(50), send.write_all(b"x")).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let closed = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
    matches!(
        closed,
        Ok(quinn::ConnectionError::ApplicationClosed(_)
            | quinn::ConnectionError::ConnectionClosed(_)
            | quinn::ConnectionError::Reset)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_certificate_are_cut_off_and_memory_stays_flat() {
    let root = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(root.path(), "target");
    node.start();
    node.wait_healthy(STARTUP).await;
    propose(&node, create_user("before")).await.unwrap();
    let fingerprint = ClusterCa::load(&TlsPaths::new(&node.data)).unwrap().fingerprint();
    let addr = node.cluster_addr().parse().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = node.rss_bytes().expect("the node's VmRSS");
    let refused_before = node.metric("bitriver_raft_refused_peers_total").await.unwrap_or(0.0);

    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|i| {
            let alpn = if i % 2 == 0 { tls::ALPN } else { tls::ENROL_ALPN };
            tokio::spawn(attack(addr, fingerprint, alpn, i % 4 < 2))
        })
        .collect();
    let mut peak = baseline;
    while !attackers.iter().all(|a| a.is_finished()) {
        peak = peak.max(node.rss_bytes().expect("the node died under the attack"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut cut_off = 0;
    for attacker in attackers {
        cut_off += usize::from(attacker.await.unwrap());
    }

    let attempted = (ATTACKERS / 2 * STREAMS * PUSH) >> 20;
    let grown = peak.saturating_sub(baseline) >> 20;
    println!("attack tried to push {attempted} MiB; node RSS {} MiB -> peak {} MiB", baseline >> 20, peak >> 20);
    assert_eq!(cut_off, ATTACKERS, "every client without a certificate is cut off");
    assert!(grown < 32, "the node's RSS grew by {grown} MiB under an attack of {attempted} MiB");
    assert!(node.metric("bitriver_raft_refused_peers_total").await.unwrap() > refused_before);
    // The node still serves its cluster.
    assert!(node.is_running());
    propose(&node, create_user("after")).await.unwrap();
}
