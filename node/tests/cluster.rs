//! The catalog across real `bitriver` processes: durability, replication, fail-over, snapshots,
//! partitions and enrolment. Each node is a separate process with its own RocksDB and QUIC port.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cli, create_user, propose, user_ids, wait_voters, NodeProc};
use raft::catalog::stored_node_id;
use raft::rpc::{Reply, Request};

const STARTUP: Duration = Duration::from_secs(30);

/// Poll until every node's records are byte-identical; returns the common dump.
async fn converged(nodes: &[&NodeProc], timeout: Duration) -> Vec<(Vec<u8>, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut dumps = Vec::new();
        for n in nodes {
            dumps.push(n.dump().await);
        }
        if dumps.windows(2).all(|w| w[0] == w[1]) {
            return dumps.remove(0);
        }
        assert!(Instant::now() < deadline, "replicas did not converge in {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn leader_of(node: &NodeProc) -> Option<u64> {
    node.cluster().await?.get("leaderId")?.as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_keeps_every_acknowledged_write_across_kill9_and_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(root.path(), "solo");
    node.start();
    node.wait_healthy(STARTUP).await;

    // A stream of writes; kill -9 in the middle of it.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let acked = acked.clone();
        let data = node.data.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let id = format!("w{i}");
                match raft::catalog::admin_call(&data, &Request::Propose(create_user(&id))).await {
                    Ok(Reply::Propose(Ok(_))) => acked.lock().unwrap().push(id),
                    _ => return,
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.kill9();
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "too few writes before the kill: {}", acked.len());

    node.start();
    node.wait_healthy(STARTUP).await;
    let users = user_ids(&node.dump().await);
    let missing: Vec<_> = acked.iter().filter(|id| !users.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged writes lost after kill -9: {missing:?}");

    // Graceful stop and restart keep everything too, and the node still takes writes.
    let before = node.dump().await;
    assert_eq!(node.terminate(), Some(0), "SIGTERM should exit cleanly:\n{}", node.log_text());
    node.start();
    node.wait_healthy(STARTUP).await;
    assert_eq!(node.dump().await, before);
    propose(&node, create_user("after-restart")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_fail_over_catch_up_and_survive_a_partition() {
    let root = tempfile::tempdir().unwrap();
    let tuning = [
        ("BITRIVER_LIVE_RAFT_SNAPSHOT_EVERY".to_owned(), "40".to_owned()),
        ("BITRIVER_LIVE_RAFT_KEEP_LOGS".to_owned(), "0".to_owned()),
    ];
    let mut nodes: Vec<NodeProc> = (1..=3).map(|i| NodeProc::new(root.path(), &format!("n{i}"))).collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        n.env.extend(tuning.iter().cloned());
        // Fixed ids so that process i is node i + 1 whatever order enrolment happens in.
        n.args.extend(["--node-id".into(), (i + 1).to_string()]);
    }
    nodes[0].start();
    nodes[0].wait_healthy(STARTUP).await;

    // The CLI mints a token for both joiners while the node runs (no RocksDB lock needed).
    let (code, token, err) = cli(&["cluster", "token", "--uses", "2", "--data", nodes[0].data.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_owned();
    let join = nodes[0].cluster_addr();
    for n in &mut nodes[1..] {
        n.args.extend(["--join".into(), join.clone(), "--join-token".into(), token.clone()]);
        n.start();
    }
    for n in &mut nodes[1..] {
        n.wait_healthy(STARTUP).await;
    }
    wait_voters(&nodes[0], 3, STARTUP).await;

    // Writes through every node (followers forward to the leader).
    for (i, n) in nodes.iter().enumerate() {
        for j in 0..5 {
            propose(n, create_user(&format!("via{i}-{j}"))).await.unwrap();
        }
    }
    let dump = converged(&[&nodes[0], &nodes[1], &nodes[2]], Duration::from_secs(20)).await;
    assert_eq!(user_ids(&dump).len(), 15);

    // `cluster status` on a running node shows the three voters.
    let (code, status, err) = cli(&["cluster", "status", "--data", nodes[1].data.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["members"].as_array().unwrap().len(), 3);

    // kill -9 the leader: a new one is elected and writes resume.
    let leader = leader_of(&nodes[0]).await.expect("a leader");
    let li = (leader - 1) as usize;
    nodes[li].kill9();
    let survivor = (li + 1) % 3;
    let killed_at = Instant::now();
    propose(&nodes[survivor], create_user("after-failover")).await.expect("writes resume after fail-over");
    let resumed = killed_at.elapsed();
    assert!(resumed < Duration::from_secs(10), "writes resumed only after {resumed:?}");
    let new_leader = leader_of(&nodes[survivor]).await.expect("new leader");
    assert_ne!(new_leader, leader);

    // Enough writes while it is down that the leader snapshots and purges past its position.
    let position = nodes[survivor].metric("bitriver_raft_last_log_index").await.unwrap();
    for j in 0..120 {
        propose(&nodes[survivor], create_user(&format!("lag-{j}"))).await.unwrap();
    }
    let current = leader_of(&nodes[survivor]).await.expect("leader");
    let new_leader_node = &nodes[(current - 1) as usize];
    let deadline = Instant::now() + Duration::from_secs(30);
    while new_leader_node.metric("bitriver_raft_purged_index").await.unwrap_or(0.0) <= position {
        if Instant::now() > deadline {
            let (_, metrics) = new_leader_node.get("/metrics").await.unwrap();
            let raft: Vec<&str> =
                metrics.lines().filter(|l| l.starts_with("bitriver_raft_") && !l.contains("bucket")).collect();
            panic!("the leader never purged past {position}:\n{}\n{}", raft.join("\n"), new_leader_node.log_text());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    nodes[li].start();
    nodes[li].wait_healthy(STARTUP).await;
    let dump = converged(&[&nodes[0], &nodes[1], &nodes[2]], Duration::from_secs(30)).await;
    assert_eq!(user_ids(&dump).len(), 15 + 1 + 120);
    let installed = nodes[li].metric("bitriver_raft_snapshots_installed_total").await.unwrap_or(0.0);
    assert!(installed >= 1.0, "the lagging node should have caught up by snapshot");

    // Partition the current leader away from the other two, once all three agree who leads.
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        let mut views = Vec::new();
        for n in &nodes {
            views.push(n.metric("bitriver_raft_leader_id").await.unwrap_or(0.0) as u64);
        }
        if views[0] != 0 && views.iter().all(|v| *v == views[0]) {
            break views[0];
        }
        assert!(Instant::now() < deadline, "nodes disagree on the leader: {views:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let li = (leader - 1) as usize;
    let others: Vec<usize> = (0..3).filter(|&i| i != li).collect();
    let ids: Vec<u64> = others.iter().map(|&i| i as u64 + 1).collect();
    assert!(matches!(nodes[li].admin(Request::Partition { blocked: ids }).await, Ok(Reply::Done)));
    for &i in &others {
        let reply = nodes[i].admin(Request::Partition { blocked: vec![leader] }).await;
        assert!(matches!(reply, Ok(Reply::Done)));
    }
    let minority = {
        let data = nodes[li].data.clone();
        tokio::spawn(
            async move { raft::catalog::admin_call(&data, &Request::Propose(create_user("minority-write"))).await },
        )
    };
    if let Err(e) = propose(&nodes[others[0]], create_user("majority-write")).await {
        if let Ok(dir) = std::env::var("BITRIVER_TEST_LOG_DIR") {
            for n in &nodes {
                std::fs::write(format!("{dir}/{}.log", n.name), n.log_text()).unwrap();
            }
        }
        panic!("the majority side must commit: {e}");
    }
    let minority = minority.await.unwrap();
    assert!(!matches!(minority, Ok(Reply::Propose(Ok(_)))), "the minority side committed: {minority:?}");

    // Heal: everyone converges on the majority's history; the minority's write never happened.
    for n in &nodes {
        n.admin(Request::Partition { blocked: vec![] }).await.unwrap();
    }
    let dump = converged(&[&nodes[0], &nodes[1], &nodes[2]], Duration::from_secs(30)).await;
    let users = user_ids(&dump);
    assert!(users.contains(&"majority-write".to_owned()));
    assert!(!users.contains(&"minority-write".to_owned()), "a write refused to its client appeared after healing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_refuses_bad_tokens_and_removal_works_offline_and_online() {
    let root = tempfile::tempdir().unwrap();
    let mut first = NodeProc::new(root.path(), "first");
    first.args.extend(["--voters".into(), "1".into()]);
    first.start();
    first.wait_healthy(STARTUP).await;

    // A token from another cluster: the joiner refuses to talk to a server of the wrong CA.
    let other = root.path().join("other");
    let ca = raft::tls::ClusterCa::generate().unwrap();
    ca.save(&raft::tls::TlsPaths::new(&other)).unwrap();
    let foreign = ca.join_token(raft::now_millis() / 1000 + 3600, 1);
    let mut joiner = NodeProc::new(root.path(), "foreign");
    joiner.args.extend(["--join".into(), first.cluster_addr(), "--join-token".into(), foreign]);
    let out = joiner.command().output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a member of the token's cluster") || stderr.contains("certificate"), "{stderr}");

    // A forged token for the right cluster: the member refuses it and logs why.
    let (_, good, _) = cli(&["cluster", "token", "--data", first.data.to_str().unwrap()]);
    let mut parts: Vec<String> = good.trim().split('.').map(str::to_owned).collect();
    parts[2] = (parts[2].parse::<i64>().unwrap() + 1).to_string();
    let mut forged = NodeProc::new(root.path(), "forged");
    forged.args.extend(["--join".into(), first.cluster_addr(), "--join-token".into(), parts.join(".")]);
    let out = forged.command().output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("signature is invalid"));
    assert!(first.log_text().contains("refused enrolment"));
    assert!(first.metric("bitriver_raft_refused_peers_total").await.unwrap() >= 1.0);

    // A good token works; with --voters 1 the newcomer stays a learner.
    let mut learner = NodeProc::new(root.path(), "learner");
    learner.args.extend(["--join".into(), first.cluster_addr(), "--join-token".into(), good.trim().to_owned()]);
    learner.start();
    learner.wait_healthy(STARTUP).await;
    let deadline = Instant::now() + STARTUP;
    let learner_id = loop {
        let c = first.cluster().await.unwrap();
        let members = c["members"].as_array().unwrap().clone();
        if members.len() == 2 {
            let m = members.iter().find(|m| m["nodeId"] != 1).unwrap().clone();
            assert_eq!(m["voter"], false, "beyond --voters, nodes stay learners");
            break m["nodeId"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    propose(&learner, create_user("from-learner")).await.unwrap();

    // The token was for one node: a second node presenting it is refused.
    let mut again = NodeProc::new(root.path(), "again");
    again.args.extend(["--join".into(), first.cluster_addr(), "--join-token".into(), good.trim().to_owned()]);
    let out = again.command().output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already used"), "{}", String::from_utf8_lossy(&out.stderr));

    // The learner dies; remove it through the API of the first node. A browser page of another
    // site cannot (403), and the removal is in the audit log.
    learner.kill9();
    let remove = first.url(&format!("/api/cluster/nodes/{learner_id}"));
    let resp = reqwest::Client::new().delete(&remove).header("origin", "http://evil.example").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(first.cluster().await.unwrap()["members"].as_array().unwrap().len(), 2);
    let resp = reqwest::Client::new().delete(&remove).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let c = first.cluster().await.unwrap();
    assert_eq!(c["members"].as_array().unwrap().len(), 1);
    let audited = |log: String| {
        let plain = strip_ansi(&log);
        let path = format!("path=/api/cluster/nodes/{learner_id}");
        plain.lines().any(|l| l.contains("bitriver::audit") && l.contains(&path) && l.contains("status=204"))
    };
    assert!(audited(first.log_text()), "no audit event for the removal:\n{}", first.log_text());

    // Offline status of the stopped learner reads its data dir without the node running.
    let (code, text, err) = cli(&["cluster", "status", "--data", learner.data.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("learner") || text.contains("voter"), "{text}");

    // An edge-only node joins: no CA key in its data dir, so it cannot mint tokens.
    let (_, token, _) = cli(&["cluster", "token", "--data", first.data.to_str().unwrap()]);
    let mut edge = NodeProc::new(root.path(), "edge");
    edge.args
        .extend(["--roles", "edge", "--join", &first.cluster_addr(), "--join-token", token.trim()].map(String::from));
    edge.start();
    edge.wait_healthy(STARTUP).await;
    assert!(edge.data.join("tls/node.key").exists());
    assert!(!edge.data.join("tls/ca.key").exists(), "an edge-only node received the CA key");
    let (code, _, err) = cli(&["cluster", "token", "--data", edge.data.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("CA key"), "{err}");
    propose(&edge, raft::Command::Noop { payload: vec![] }).await.unwrap();
    let err = propose(&edge, create_user("from-edge")).await.expect_err("an edge created a user");
    assert!(err.contains("refused"), "{err}");

    // Revoke it: the members refuse it from then on.
    let edge_id = stored_node_id(&edge.data).unwrap();
    let (code, out, err) = cli(&["cluster", "revoke", &edge_id.to_string(), "--data", first.data.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked"), "{out}");
    let err =
        propose(&edge, raft::Command::Noop { payload: vec![] }).await.expect_err("a revoked node's write went through");
    assert!(err.contains("revoked") || err.contains("refused"), "{err}");
    assert!(first.log_text().contains("refused"));
}

/// `text` without the terminal colour codes the text log format adds.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
