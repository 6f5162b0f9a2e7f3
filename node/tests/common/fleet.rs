//! Helpers of the multi-node tests (nodes in network namespaces, reached from the bridge, not from
//! loopback, so the development-mode loopback admin does not apply): an admin token, JSON calls
//! with it, and the flags that join a node to a cluster.

use serde_json::{json, Value};

use super::{cli, cli_with_stdin, NodeProc};

const PASSWORD: &str = "fleet-admin-password";

/// Creates an admin on `node` with the CLI and logs in over HTTP; returns the bearer token.
pub async fn admin_token(node: &NodeProc) -> String {
    let data = node.data.to_str().unwrap();
    let (code, _, err) = cli_with_stdin(
        &["user", "create", "--admin", "--email", "admin@example.com", "--data", data],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(code, 0, "{err}");
    let resp = reqwest::Client::new()
        .post(node.url("/api/auth/login"))
        .json(&json!({"email": "admin@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let session: Value = resp.json().await.unwrap();
    session["token"].as_str().expect("a token").to_owned()
}

/// `method url` with the bearer `token` and an optional JSON body; (status, JSON or Null).
pub async fn call(method: &str, url: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method.parse().unwrap(), url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The flags that join a new node with `roles` to `seed`'s cluster (a fresh one-use token).
pub fn join_args(seed: &NodeProc, roles: &str) -> Vec<String> {
    let (code, token, err) = cli(&["cluster", "token", "--data", seed.data.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    ["--roles", roles, "--join", &seed.cluster_addr(), "--join-token", token.trim()].map(String::from).to_vec()
}

/// A creator and a channel of theirs made by the admin: (channel id, stream key).
pub async fn channel_as_admin(node: &NodeProc, token: &str) -> (String, String) {
    let user = json!({"displayName": "Streamer", "email": "streamer@example.com", "roles": ["creator"]});
    let (status, user) = call("POST", &node.url("/api/users"), token, Some(user)).await;
    assert_eq!(status, 201, "{user}");
    let channel = json!({"ownerId": user["id"], "title": "Fleet", "tags": []});
    let (status, channel) = call("POST", &node.url("/api/channels"), token, Some(channel)).await;
    assert_eq!(status, 201, "{channel}");
    (channel["id"].as_str().unwrap().to_owned(), channel["streamKey"].as_str().unwrap().to_owned())
}

/// Polls `/api/cluster` on `node` until `check` accepts it; returns it.
pub async fn wait_cluster(node: &NodeProc, token: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = call("GET", &node.url("/api/cluster"), token, None).await;
        if status == 200 && check(&body) {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "/api/cluster never showed {what}: {body}\n{}", node.log_text());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `/api/cluster` once all `members` members have reported their load (placement only picks
/// nodes that do).
pub async fn all_reported(node: &NodeProc, token: &str, members: usize) -> Value {
    wait_cluster(node, token, &format!("{members} members all reporting"), |body| {
        let list = body["members"].as_array().map_or(&[][..], |m| m.as_slice());
        list.len() == members && list.iter().all(|m| m["load"]["at"].as_i64().unwrap_or(0) > 0)
    })
    .await
}

/// The node id of the member whose cluster address is at `ip`.
pub fn member_at(cluster: &Value, ip: impl std::fmt::Display) -> u64 {
    let prefix = format!("{ip}:");
    let members = cluster["members"].as_array().unwrap();
    let m = members.iter().find(|m| m["addr"].as_str().unwrap().starts_with(&prefix));
    m.unwrap_or_else(|| panic!("no member at {ip}: {cluster}"))["nodeId"].as_u64().unwrap()
}

/// A fleet on `net`: a control node in region `a`, then one node per `(label, roles, region)`,
/// each in a namespace of its own, all healthy. `spaces[0]` is the control node's namespace,
/// `spaces[i]` that of `nodes[i - 1]`.
pub struct Fleet {
    pub spaces: Vec<super::netns::Netns>,
    pub control: NodeProc,
    pub token: String,
    pub nodes: Vec<NodeProc>,
}

pub async fn start_fleet(net: &mut super::netns::Net, root: &std::path::Path, members: &[(&str, &str, &str)]) -> Fleet {
    start_fleet_with(net, root, members, &[]).await
}

/// [`start_fleet`] with extra flags for some members, by label.
pub async fn start_fleet_with(
    net: &mut super::netns::Net,
    root: &std::path::Path,
    members: &[(&str, &str, &str)],
    extra: &[(&str, &[&str])],
) -> Fleet {
    let wait = std::time::Duration::from_secs(30);
    let spaces: Vec<_> = std::iter::once("control").chain(members.iter().map(|m| m.0)).map(|l| net.add(l)).collect();
    let mut control = net.node(&spaces[0], root, "control");
    control.args.extend(["--roles", "control", "--region", "a"].map(String::from));
    control.start();
    control.wait_healthy(wait).await;
    let token = admin_token(&control).await;
    let mut nodes = Vec::new();
    for (i, (label, roles, region)) in members.iter().enumerate() {
        let mut node = net.node(&spaces[i + 1], root, label);
        node.args.extend(join_args(&control, roles));
        node.args.extend(["--region", region].map(String::from));
        for (_, args) in extra.iter().filter(|(l, _)| l == label) {
            node.args.extend(args.iter().map(|a| a.to_string()));
        }
        node.start();
        nodes.push(node);
    }
    for node in &mut nodes {
        node.wait_healthy(wait).await;
    }
    Fleet { spaces, control, token, nodes }
}
