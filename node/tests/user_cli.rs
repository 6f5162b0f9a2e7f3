//! `bitriver user create` against a real node in production mode: the first admin is made with
//! the CLI, logs in over HTTP, and writes need that login.

mod common;

use std::time::Duration;

use common::{cli_with_stdin, NodeProc};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_made_with_the_cli_logs_in_and_writes() {
    let root = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(root.path(), "n1");
    node.args = vec!["--mode".into(), "production".into(), "--log-format".into(), "text".into()];
    let data = node.data.to_str().unwrap().to_owned();
    let create =
        ["user", "create", "--admin", "--email", "Root@Example.com", "--display-name", "Root", "--data", &data];

    // Writes need the cluster: without a running node the command says so.
    let (code, _, stderr) = cli_with_stdin(&create, "root-password\n");
    assert_ne!(code, 0);
    assert!(stderr.contains("no node is running"), "{stderr}");

    node.start();
    node.wait_healthy(Duration::from_secs(30)).await;

    let (code, _, stderr) = cli_with_stdin(&create, "short\n");
    assert_ne!(code, 0);
    assert!(stderr.contains("at least 8"), "{stderr}");

    let (code, stdout, stderr) = cli_with_stdin(&create, "root-password\n");
    assert_eq!(code, 0, "{stderr}");
    let admin_id = stdout.trim().to_owned();
    assert_eq!(admin_id.len(), 24, "{stdout}");
    // The same email twice is refused by the catalog.
    let (code, _, stderr) = cli_with_stdin(&create, "root-password\n");
    assert_ne!(code, 0);
    assert!(stderr.contains("already registered"), "{stderr}");

    let client = reqwest::Client::new();
    let resp = client
        .post(node.url("/api/auth/login"))
        .json(&json!({"email": "root@example.com", "password": "root-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let cookie = resp.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("Secure"), "{cookie}");
    let session: Value = resp.json().await.unwrap();
    assert_eq!(session["user"]["id"], admin_id.as_str());
    assert_eq!(session["user"]["roles"], json!(["admin"]));
    let token = session["token"].as_str().unwrap();

    let new_user = json!({"displayName": "River", "email": "river@example.com", "roles": ["creator"]});
    let resp = client.post(node.url("/api/users")).json(&new_user).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401, "production: no anonymous writes, even from loopback");
    let resp = client.post(node.url("/api/users")).bearer_auth(token).json(&new_user).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["roles"], json!(["creator"]));
    assert!(created.get("passwordHash").is_none());

    // The API's metrics are on the node's /metrics.
    let (_, metrics) = node.get("/metrics").await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("bitriver_http_requests_total")
            && l.contains("route=\"/api/users\"")
            && l.contains("status=\"201\"")),
        "{metrics}"
    );
    assert!(metrics.contains("bitriver_ws_connections"), "{metrics}");
    // And writes are audited in the node's log.
    assert!(node.log_text().contains("bitriver::audit"), "{}", node.log_text());
}
