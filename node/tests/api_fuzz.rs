//! Schema-driven fuzzing of the real binary: schemathesis (installed by `scripts/api-fuzz.sh`)
//! reads the node's `/api/openapi.json` and sends generated requests, valid and invalid, to every
//! operation. Any 5xx answer (or a dropped connection) fails the test.
//!
//! One node per mode. In production mode the fuzzer acts as an admin made with
//! `bitriver user create --admin` and signed in over HTTP; in development mode it sends no token,
//! so loopback requests act as the development admin. Each run has passes: the whole API with
//! random ids, then the channel, user and profile operations pinned to records that exist (so the
//! generated bodies reach validation and the catalog rather than stopping at 404), then the
//! deletes and the sign-out, last because they remove what the others use.
//!
//! schemathesis must be installable: without python3-venv or PyPI this test fails, it does not
//! skip. `BITRIVER_FUZZ_SEED` replays a run (each pass prints its seed); `BITRIVER_FUZZ_EXAMPLES`
//! (default 25) sets the cases per operation.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{cli_with_stdin, NodeProc};
use serde_json::{json, Value};

/// Generated cases per operation and pass (`BITRIVER_FUZZ_EXAMPLES` overrides it for a deeper run).
fn examples() -> String {
    std::env::var("BITRIVER_FUZZ_EXAMPLES").unwrap_or_else(|_| "25".to_owned())
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/api-fuzz.sh")
}

/// Make sure schemathesis is installed (once per test process; the script locks across processes).
fn install_fuzzer() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return;
    }
    let out = Command::new("bash").arg(script()).arg("--install-only").output().expect("run scripts/api-fuzz.sh");
    assert!(
        out.status.success(),
        "could not install schemathesis for the API fuzz test: `scripts/api-fuzz.sh --install-only` exited with \
         {:?}; it needs python3 with venv (apt-get install python3-venv) and network access to PyPI.\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    *done = true;
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

struct Fuzzer<'a> {
    node: &'a NodeProc,
    mode: &'static str,
    token: Option<String>,
    http: reqwest::Client,
}

impl Fuzzer<'_> {
    /// A JSON call to the node as the fuzzer's identity; panics unless it answers `expect`.
    async fn call(&self, method: &str, path: &str, body: Option<Value>, expect: u16) -> Value {
        let (status, answer) = self.send(method, path, body).await;
        assert_eq!(status, expect, "{} node: {method} {path}: {answer}", self.mode);
        answer
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method.parse().unwrap(), self.node.url(path));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// One schemathesis pass; returns its report. Fails the test on any server error.
    fn pass(&self, name: &str, extra: &[&str]) -> String {
        self.pass_with_examples(name, extra, &examples())
    }

    /// [`Self::pass`] with its own number of cases per operation.
    fn pass_with_examples(&self, name: &str, extra: &[&str], examples: &str) -> String {
        let started = Instant::now();
        let mut cmd = Command::new("bash");
        cmd.arg(script()).arg(self.node.url("")).args(["--examples", examples]);
        if let Some(token) = &self.token {
            cmd.args(["--token", token]);
        }
        let out = cmd.arg("--").args(extra).output().expect("run scripts/api-fuzz.sh");
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let log = self.node.log.with_file_name(format!("{}-fuzz-{name}.txt", self.node.name));
        std::fs::write(&log, &report).unwrap();
        eprintln!("{} node, pass {name}: {:?}, exit {:?}", self.mode, started.elapsed(), out.status.code());
        assert!(
            out.status.success(),
            "schemathesis found server errors in the {} node (pass {name}, exit {:?}; replay with \
             BITRIVER_FUZZ_SEED=<the seed above>):\n{}\n--- node log ---\n{}",
            self.mode,
            out.status.code(),
            tail(&report, 150),
            tail(&self.node.log_text(), 60)
        );
        assert!(report.contains("not_a_server_error"), "{} node, pass {name}: no checks ran:\n{report}", self.mode);
        report
    }

    /// The pass must have had a success answer from `operation` (the fuzzer was let in).
    fn assert_reached(&self, report: &str, operation: &str) {
        let warning = format!("`{operation}` returned only 4xx responses");
        assert!(!report.contains(&warning), "{} node: {warning}: the fuzzer's identity was refused", self.mode);
    }
}

/// Fixtures, then the passes described in the module docs.
async fn fuzz(fuzzer: &Fuzzer<'_>) {
    let viewer = json!({"displayName": "Fuzz Viewer", "email": "viewer@example.com"});
    let viewer = fuzzer.call("POST", "/api/users", Some(viewer), 201).await["id"].as_str().unwrap().to_owned();
    let signed_in = fuzzer.token.is_some();
    let channel = if signed_in {
        json!({"title": "Fuzz target"}) // owned by the signed-in admin
    } else {
        json!({"title": "Fuzz target", "ownerId": viewer}) // the development admin has no account
    };
    let channel = fuzzer.call("POST", "/api/channels", Some(channel), 201).await["id"].as_str().unwrap().to_owned();

    // 1. Operations without ids (not signing out yet: the admin's session is needed until the end).
    let mut collections = vec!["--exclude-path-regex", "\\{"];
    if signed_in {
        // Signing out and deleting the admin's own account end the fuzzer's identity: last.
        collections.extend(["--exclude-operation-id", "logout", "--exclude-operation-id", "delete_me"]);
    }
    let report = fuzzer.pass("collections", &collections);
    for operation in ["GET /api/users", "GET /api/export", "GET /api/analytics/overview"] {
        fuzzer.assert_reached(&report, operation);
    }
    // The development admin has no account, so a channel needs an existing `ownerId`, which random
    // bodies almost never carry: only the signed-in admin can create one. Random bodies (valid and
    // invalid mixed, a few dozen) may all be refused by validation (a blank title, an `ownerId` of
    // nobody), so the reach check gets a pass of its own with valid bodies only and more of them.
    if signed_in {
        let create = ["--include-operation-id", "create_channel", "--data-generation-method", "positive"];
        let report = fuzzer.pass_with_examples("create-channel", &create, "100");
        fuzzer.assert_reached(&report, "POST /api/channels");
    }
    // 2. Operations on records, with generated ids.
    fuzzer.pass("generated-ids", &["--include-path-regex", "\\{"]);

    // 3. A channel that exists (deleted in step 5).
    let set_channel = format!("id={channel}");
    let set_user = format!("user_id={viewer}");
    let channel_pass = [
        "--include-path-regex",
        "^/api/channels/\\{id\\}",
        "--exclude-operation-id",
        "delete_channel",
        "--set-path",
        &set_channel,
        "--set-path",
        &set_user,
    ];
    let report = fuzzer.pass("channel", &channel_pass);
    for operation in
        ["GET /api/channels/{id}", "PUT /api/channels/{id}/chat/settings", "GET /api/channels/{id}/chat/bans"]
    {
        fuzzer.assert_reached(&report, operation);
    }

    // 4. A user and profile that exist (deleted in step 5).
    let set_id = format!("id={viewer}");
    let user_pass = [
        "--include-path-regex",
        "^/api/(users|profiles)/",
        "--exclude-operation-id",
        "delete_user",
        "--set-path",
        &set_id,
        "--set-path",
        &set_user,
    ];
    let report = fuzzer.pass("user", &user_pass);
    fuzzer.assert_reached(&report, "GET /api/users/{id}");
    fuzzer.assert_reached(&report, "GET /api/profiles/{user_id}");

    // 5. The deletes, on the records above, then signing out. A live channel can't be deleted.
    let (status, answer) = fuzzer.send("POST", &format!("/api/channels/{channel}/stream/stop"), None).await;
    assert!(status == 200 || status == 409, "{} node: stopping the broadcast: {status} {answer}", fuzzer.mode);
    fuzzer.pass("delete-channel", &["--include-operation-id", "delete_channel", "--set-path", &set_channel]);
    fuzzer.call("GET", &format!("/api/channels/{channel}"), None, 404).await;
    fuzzer.pass("delete-user", &["--include-operation-id", "delete_user", "--set-path", &set_id]);
    fuzzer.call("GET", &format!("/api/users/{viewer}"), None, 404).await;
    if signed_in {
        fuzzer.pass("delete-me", &["--include-operation-id", "delete_me"]);
        fuzzer.pass("sign-out", &["--include-operation-id", "logout"]);
        fuzzer.call("GET", "/api/auth/session", None, 401).await;
    }
}

async fn fuzz_node(mode: &'static str) {
    install_fuzzer();
    let root = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(root.path(), mode);
    node.args = vec!["--mode".into(), mode.into(), "--log-format".into(), "text".into()];
    node.start();
    node.wait_healthy(Duration::from_secs(30)).await;
    let http = reqwest::Client::new();

    let token = if mode == "production" {
        let data = node.data.to_str().unwrap().to_owned();
        let create =
            ["user", "create", "--admin", "--email", "fuzz@example.com", "--display-name", "Fuzz", "--data", &data];
        let (code, _, stderr) = cli_with_stdin(&create, "fuzz-admin-password\n");
        assert_eq!(code, 0, "bitriver user create: {stderr}");
        let resp = http
            .post(node.url("/api/auth/login"))
            .json(&json!({"email": "fuzz@example.com", "password": "fuzz-admin-password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        Some(body["token"].as_str().unwrap().to_owned())
    } else {
        None
    };

    let fuzzer = Fuzzer { node: &node, mode, token, http };
    fuzz(&fuzzer).await;

    assert!(node.is_running(), "{mode} node died during fuzzing:\n{}", tail(&node.log_text(), 80));
    let log = node.log_text();
    assert!(!log.contains("panicked"), "{mode} node panicked during fuzzing:\n{}", tail(&log, 80));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_api_answers_no_server_errors() {
    fuzz_node("production").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_api_answers_no_server_errors() {
    fuzz_node("development").await;
}
