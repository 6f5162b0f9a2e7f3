//! `bitriver cluster ...` and `bitriver user ...`: administer a node through its data dir.
//! `bitriver install`: set this binary up as a systemd service on a home server.
//!
//! These commands never take RocksDB's lock. With the node running they talk to it through the
//! admin socket in the data dir; with it stopped they read the data dir read-only (status), sign
//! with the CA key file (token, control nodes only), or reach the other members with the node's
//! own certificate (remove, revoke). `user create` is a catalog write, so it needs the node running (it proposes through
//! the admin socket like any other client of the cluster).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use raft::catalog::{admin_call, stored_node_id};
use raft::rpc::{Reply, Request};
use raft::state::CatalogState;
use raft::store::Database;
use raft::tls::{ClusterCa, NodeIdentity, TlsPaths};
use raft::transport::ClusterClient;
use raft::{ClusterStatus, MemberStatus};

use crate::config::{ClusterCommand, Command, InstallArgs, UserCommand, UserCreateArgs};

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Cluster(command) => cluster(command).await,
        Command::User(UserCommand::Create(args)) => {
            let password = read_password(std::io::stdin().lock())?;
            create_user(&args, &password).await
        }
        Command::Install(args) => install(&args),
    }
}

async fn cluster(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Token(args) => {
            let ca = ClusterCa::load(&TlsPaths::new(&args.data.data))
                .with_context(|| format!("reading the cluster CA in {}", args.data.data.display()))?;
            let expires = raft::now_millis() / 1000 + args.ttl.as_secs() as i64;
            println!("{}", ca.join_token(expires, args.uses));
            Ok(())
        }
        ClusterCommand::Status(args) => {
            let status = status(&args.data.data).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", render_status(&status));
            }
            Ok(())
        }
        ClusterCommand::Remove(args) => {
            administer(&args.data.data, Request::Remove { node_id: args.node_id }).await?;
            println!("node {} removed", args.node_id);
            Ok(())
        }
        ClusterCommand::Revoke(args) => {
            administer(&args.data.data, Request::Revoke { node_id: args.node_id }).await?;
            println!("node {} revoked", args.node_id);
            Ok(())
        }
        ClusterCommand::Drain(args) => set_draining(&args.data.data, args.node_id, true).await,
        ClusterCommand::Undrain(args) => set_draining(&args.data.data, args.node_id, false).await,
    }
}

/// A catalog write, so it goes through the running node's admin socket like `user create`.
async fn set_draining(data: &Path, node_id: Option<u64>, draining: bool) -> anyhow::Result<()> {
    let node_id = match node_id {
        Some(id) => id,
        None => stored_node_id(data)
            .with_context(|| format!("no node id in {}: give NODE_ID or the node's --data", data.display()))?,
    };
    let request = Request::Propose(raft::Command::SetDraining { node_id, draining });
    let reply = admin_call(data, &request)
        .await
        .with_context(|| format!("no node running on {} (drain needs the node's admin socket)", data.display()))?;
    match reply {
        Reply::Propose(Ok(_)) => {
            println!("node {node_id} {}", if draining { "draining" } else { "no longer draining" });
            Ok(())
        }
        Reply::Propose(Err(e)) => bail!("{e}"),
        Reply::Error(e) => bail!("{e}"),
        other => bail!("unexpected reply {other:?}"),
    }
}

async fn status(data: &Path) -> anyhow::Result<ClusterStatus> {
    match admin_call(data, &Request::Status).await {
        Ok(Reply::Status(status)) => return Ok(status),
        Ok(other) => bail!("node answered {other:?}"),
        Err(e) => tracing::debug!(error = %e, "admin socket unavailable; reading the data dir"),
    }
    offline_status(data)
}

/// Status from a stopped node's data dir: its last known membership and applied index.
fn offline_status(data: &Path) -> anyhow::Result<ClusterStatus> {
    let db = Database::open_read_only(&data.join("db"))
        .with_context(|| format!("no node running and no catalog in {}", data.display()))?;
    let (applied, membership) = db.applied_state()?;
    let vote = db.vote()?;
    let records = db.state_records()?;
    let state = CatalogState::load(records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))?;
    let me = stored_node_id(data);
    let voters: Vec<u64> = membership.membership().voter_ids().collect();
    let members = membership
        .membership()
        .nodes()
        .map(|(id, node)| {
            let info = state.node(*id);
            MemberStatus {
                node_id: *id,
                region: info.map(|n| n.region.clone()).unwrap_or_default(),
                roles: info.map(|n| n.roles.clone()).unwrap_or_default(),
                voter: voters.contains(id),
                last_applied: if Some(*id) == me { applied.map(|l| l.index) } else { None },
                addr: node.addr.clone(),
            }
        })
        .collect();
    Ok(ClusterStatus { leader_id: None, term: vote.map(|v| v.leader_id.term).unwrap_or(0), members })
}

fn render_status(status: &ClusterStatus) -> String {
    let mut out = format!(
        "leader: {}\nterm:   {}\n\n{:<6} {:<8} {:<10} {:<10} {:<22} roles\n",
        status.leader_id.map_or("unknown".to_owned(), |l| l.to_string()),
        status.term,
        "node",
        "voter",
        "region",
        "applied",
        "address"
    );
    for m in &status.members {
        out.push_str(&format!(
            "{:<6} {:<8} {:<10} {:<10} {:<22} {}\n",
            m.node_id,
            if m.voter { "voter" } else { "learner" },
            if m.region.is_empty() { "-" } else { &m.region },
            m.last_applied.map_or("-".to_owned(), |i| i.to_string()),
            m.addr,
            m.roles.join(",")
        ));
    }
    out
}

/// Send an administrative request (remove, revoke) through the running node, or, if it is stopped,
/// to the other members with its certificate (which must carry the control role).
async fn administer(data: &Path, request: Request) -> anyhow::Result<()> {
    let reply = match admin_call(data, &request).await {
        Ok(reply) => reply,
        Err(_) => ask_peers(data, &request).await?,
    };
    match reply {
        Reply::Done => Ok(()),
        Reply::Error(e) => bail!("{e}"),
        other => bail!("unexpected reply {other:?}"),
    }
}

/// The node is stopped: use its certificate to ask the other members directly.
async fn ask_peers(data: &Path, request: &Request) -> anyhow::Result<Reply> {
    let me = stored_node_id(data).context("no node identity in the data dir")?;
    let identity = NodeIdentity::load(&TlsPaths::new(data), me)?;
    let status = offline_status(data)?;
    let endpoint = quinn::Endpoint::client(std::net::SocketAddr::from(([0, 0, 0, 0], 0)))?;
    let client = Arc::new(ClusterClient::new(endpoint, identity.client_config()?)?);
    let mut last = String::from("no other members known");
    for member in status.members.iter().filter(|m| m.node_id != me) {
        match client.call(&member.addr, request, Duration::from_secs(30)).await {
            Ok(reply) => return Ok(reply),
            Err(e) => last = e.to_string(),
        }
    }
    bail!("the node is not running and no other member answered: {last}")
}

/// The first line of `input` (without its line ending), at least 8 characters.
fn read_password(mut input: impl std::io::BufRead) -> anyhow::Result<String> {
    use std::io::IsTerminal as _;
    if std::io::stdin().is_terminal() {
        eprint!("password (input is shown; pipe it in to avoid that): ");
    }
    let mut line = String::new();
    input.read_line(&mut line).context("reading the password from stdin")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password).to_owned();
    control::users::validate_password(&password).map_err(|e| anyhow::anyhow!("password {}", e.message))?;
    Ok(password)
}

/// The user record `bitriver user create` proposes, validated like the API validates it.
fn new_user(args: &UserCreateArgs, password: &str) -> anyhow::Result<raft::User> {
    use control::users::{validate_display_name, validate_email, validate_roles, DEFAULT_ROLE};
    let flag = |name: &str, e: control::ApiError| anyhow::anyhow!("{name}: {}", e.message);
    let email = validate_email(&args.email).map_err(|e| flag("--email", e))?;
    let name = match &args.display_name {
        Some(name) => name.clone(),
        None => email.split('@').next().unwrap_or_default().to_owned(),
    };
    let display_name = validate_display_name(&name).map_err(|e| flag("--display-name", e))?;
    let mut roles = args.roles.clone();
    if args.admin {
        roles.insert(0, "admin".to_owned());
    }
    if roles.is_empty() {
        roles.push(DEFAULT_ROLE.to_owned());
    }
    let roles = validate_roles(&roles).map_err(|e| flag("--role", e))?;
    let password_hash = control::auth::hash_password(password).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    Ok(raft::User {
        id: hex::encode(rand_id()),
        display_name,
        email,
        roles,
        password_hash: Some(password_hash),
        created_at: raft::now_millis(),
    })
}

fn rand_id() -> [u8; 12] {
    let mut id = [0u8; 12];
    // Same source as the API's ids: the OS RNG through ring.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id).is_err() {
        // Only a broken OS RNG gets here; a clock-derived id is still unique enough for one user.
        id[..8].copy_from_slice(&raft::now_millis().to_be_bytes());
    }
    id
}

async fn create_user(args: &UserCreateArgs, password: &str) -> anyhow::Result<()> {
    let data = &args.data.data;
    let user = new_user(args, password)?;
    let request = Request::Propose(raft::Command::CreateUser(user));
    let reply = admin_call(data, &request).await.map_err(|e| {
        anyhow::anyhow!(
            "no node is running on {} ({e}); start it first: creating a user is a cluster write",
            data.display()
        )
    })?;
    match reply {
        Reply::Propose(Ok(raft::Response::User(user))) => {
            eprintln!("created user {} <{}> with roles {}", user.display_name, user.email, user.roles.join(","));
            println!("{}", user.id);
            Ok(())
        }
        Reply::Propose(Err(e)) => bail!("the catalog refused the user: {e}"),
        Reply::Error(e) => bail!("{e}"),
        other => bail!("unexpected reply {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// bitriver install
// ---------------------------------------------------------------------------------------------

/// The unit and settings the Debian package ships; the installer writes the same files, so a home
/// server and a fleet node run under the same sandbox.
const UNIT: &str = include_str!("../debian/bitriver.service");
const ENV_FILE: &str = include_str!("../debian/bitriver.env");
/// Where the package puts the binary (the unit's `ExecStart`), and where the installer does.
const PACKAGE_BIN: &str = "/usr/bin/bitriver";
const INSTALL_BIN: &str = "/usr/local/bin/bitriver";
const DATA_DIR: &str = "/var/lib/bitriver";
const CONFIG_DIR: &str = "/etc/bitriver";
const UNIT_PATH: &str = "/etc/systemd/system/bitriver.service";
const PACKAGE_UNITS: [&str; 2] = ["/lib/systemd/system/bitriver.service", "/usr/lib/systemd/system/bitriver.service"];

/// One thing `bitriver install` does. The plan is data so `--dry-run` prints exactly what a real
/// run executes, and tests check it without root.
#[derive(Debug, Clone, PartialEq, Eq)]
enum InstallStep {
    /// Run a program (useradd, chown, systemctl); a non-zero exit stops the install.
    Run(Vec<String>),
    /// Copy the running binary to its installed path (through a temporary file and a rename, so
    /// a running node keeps its old binary until it restarts).
    CopyBinary {
        from: PathBuf,
        to: PathBuf,
    },
    CreateDir {
        path: PathBuf,
        mode: u32,
    },
    /// Write a file; with `keep`, an existing file (the operator's settings) is left alone.
    Write {
        path: PathBuf,
        contents: String,
        mode: u32,
        keep: bool,
    },
}

impl std::fmt::Display for InstallStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InstallStep::Run(argv) => write!(f, "run {}", argv.join(" ")),
            InstallStep::CopyBinary { from, to } => write!(f, "copy {} to {}", from.display(), to.display()),
            InstallStep::CreateDir { path, mode } => write!(f, "create directory {} (mode {mode:04o})", path.display()),
            InstallStep::Write { path, mode, keep, .. } => {
                write!(f, "write {} (mode {mode:04o}){}", path.display(), if *keep { ", unless it exists" } else { "" })
            }
        }
    }
}

/// What the machine already has; gathered once, before planning.
#[derive(Debug, Clone, Default)]
struct InstallFacts {
    group_exists: bool,
    user_exists: bool,
    /// The running binary, copied to [`INSTALL_BIN`].
    current_exe: PathBuf,
}

fn run_args(argv: &[&str]) -> InstallStep {
    InstallStep::Run(argv.iter().map(|a| (*a).to_owned()).collect())
}

/// The steps that leave the service installed, enabled and (re)started.
fn install_plan(args: &InstallArgs, facts: &InstallFacts) -> anyhow::Result<Vec<InstallStep>> {
    crate::config::parse_listen_addr("--addr", &args.addr)?;
    if let Some(dir) = &args.log_dir {
        anyhow::ensure!(dir.is_absolute(), "--log-dir must be an absolute path, not {}", dir.display());
    }
    let mut steps = Vec::new();
    if !facts.group_exists {
        steps.push(run_args(&["groupadd", "--system", "bitriver"]));
    }
    if !facts.user_exists {
        steps.push(run_args(&[
            "useradd",
            "--system",
            "--gid",
            "bitriver",
            "--home-dir",
            DATA_DIR,
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "bitriver",
        ]));
    }
    if facts.current_exe != Path::new(INSTALL_BIN) {
        steps.push(InstallStep::CopyBinary { from: facts.current_exe.clone(), to: INSTALL_BIN.into() });
    }
    steps.push(InstallStep::CreateDir { path: DATA_DIR.into(), mode: 0o750 });
    steps.push(run_args(&["chown", "bitriver:bitriver", DATA_DIR]));
    let mut unit = UNIT.replace(&format!("ExecStart={PACKAGE_BIN}"), &format!("ExecStart={INSTALL_BIN}"));
    if let Some(dir) = &args.log_dir {
        let dir = dir.display().to_string();
        steps.push(InstallStep::CreateDir { path: dir.clone().into(), mode: 0o750 });
        steps.push(run_args(&["chown", "bitriver:bitriver", &dir]));
        // systemd opens the file before dropping privileges, so the sandbox needs no write access.
        unit = unit.replace(
            "[Install]",
            &format!("StandardOutput=append:{dir}/bitriver.log\nStandardError=append:{dir}/bitriver.log\n\n[Install]"),
        );
    }
    steps.push(InstallStep::CreateDir { path: CONFIG_DIR.into(), mode: 0o750 });
    steps.push(run_args(&["chown", "root:bitriver", CONFIG_DIR]));
    let env_path = format!("{CONFIG_DIR}/bitriver.env");
    let env = ENV_FILE.replace("BITRIVER_LIVE_ADDR=:80\n", &format!("BITRIVER_LIVE_ADDR={}\n", args.addr));
    steps.push(InstallStep::Write { path: env_path.clone().into(), contents: env, mode: 0o640, keep: true });
    steps.push(run_args(&["chown", "root:bitriver", &env_path]));
    steps.push(InstallStep::Write { path: UNIT_PATH.into(), contents: unit, mode: 0o644, keep: false });
    steps.push(run_args(&["systemctl", "daemon-reload"]));
    steps.push(run_args(&["systemctl", "enable", "bitriver.service"]));
    // Starts a new install; restarts an existing one on the new binary and unit.
    steps.push(run_args(&["systemctl", "restart", "bitriver.service"]));
    Ok(steps)
}

fn execute(step: &InstallStep) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    match step {
        InstallStep::Run(argv) => {
            let status = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .status()
                .with_context(|| format!("running {}", argv[0]))?;
            anyhow::ensure!(status.success(), "{} failed ({status})", argv.join(" "));
        }
        InstallStep::CopyBinary { from, to } => {
            let tmp = to.with_extension("new");
            std::fs::copy(from, &tmp).with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
            std::fs::rename(&tmp, to).with_context(|| format!("moving {} to {}", tmp.display(), to.display()))?;
        }
        InstallStep::CreateDir { path, mode } => {
            std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))?;
        }
        InstallStep::Write { path, contents, mode, keep } => {
            if *keep && path.exists() {
                println!("  kept the existing {}", path.display());
                return Ok(());
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))?;
        }
    }
    Ok(())
}

fn install(args: &InstallArgs) -> anyhow::Result<()> {
    if let Some(unit) = PACKAGE_UNITS.iter().find(|u| Path::new(u).exists()) {
        bail!("the Debian package is installed ({unit}); upgrade it with apt instead of `bitriver install`");
    }
    let exists = |db: &str, name: &str| {
        std::process::Command::new("getent")
            .args([db, name])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let facts = InstallFacts {
        group_exists: exists("group", "bitriver"),
        user_exists: exists("passwd", "bitriver"),
        current_exe: std::env::current_exe().context("finding this binary")?,
    };
    let steps = install_plan(args, &facts)?;
    if args.dry_run {
        println!("bitriver install would:");
        for step in &steps {
            println!("  {step}");
        }
        return Ok(());
    }
    if !rustix::process::geteuid().is_root() {
        bail!("installing a system service needs root: run it with sudo (or see --dry-run)");
    }
    if !Path::new("/run/systemd/system").exists() {
        bail!("systemd is not running on this machine; bitriver install sets up a systemd service");
    }
    for step in &steps {
        println!("bitriver install: {step}");
        execute(step).with_context(|| format!("bitriver install stopped at: {step}"))?;
    }
    println!(
        "bitriver is installed and running (settings: {CONFIG_DIR}/bitriver.env, data: {DATA_DIR}).\n\
         Create the first admin with:\n  \
         echo 'a-long-password' | runuser -u bitriver -- {INSTALL_BIN} user create --admin --email you@example.com --data {DATA_DIR}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(email: &str, admin: bool, roles: &[&str]) -> UserCreateArgs {
        UserCreateArgs {
            email: email.to_owned(),
            display_name: None,
            admin,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            data: crate::config::DataDirArg { data: PathBuf::from("d") },
        }
    }

    fn install_args(addr: &str, log_dir: Option<&str>) -> InstallArgs {
        InstallArgs { dry_run: true, addr: addr.to_owned(), log_dir: log_dir.map(PathBuf::from) }
    }

    fn written<'a>(steps: &'a [InstallStep], path: &str) -> Option<(&'a str, u32, bool)> {
        steps.iter().find_map(|s| match s {
            InstallStep::Write { path: p, contents, mode, keep } if p == Path::new(path) => {
                Some((contents.as_str(), *mode, *keep))
            }
            _ => None,
        })
    }

    #[test]
    fn install_plan_on_a_bare_machine() {
        let facts = InstallFacts { current_exe: "/root/bitriver".into(), ..InstallFacts::default() };
        let steps = install_plan(&install_args(":8080", None), &facts).unwrap();
        let text: Vec<String> = steps.iter().map(ToString::to_string).collect();
        assert!(text[0].starts_with("run groupadd --system bitriver"), "{text:?}");
        assert!(text[1].starts_with("run useradd --system --gid bitriver"), "{text:?}");
        assert!(text.contains(&"copy /root/bitriver to /usr/local/bin/bitriver".to_owned()), "{text:?}");
        assert_eq!(text.last().unwrap(), "run systemctl restart bitriver.service");

        let (env, mode, keep) = written(&steps, "/etc/bitriver/bitriver.env").unwrap();
        assert!(env.contains("\nBITRIVER_LIVE_ADDR=:8080\n") && !env.contains("ADDR=:80\n"), "{env}");
        assert!(env.contains("BITRIVER_LIVE_MODE=production") && env.contains("BITRIVER_LIVE_DATA=/var/lib/bitriver"));
        assert_eq!((mode, keep), (0o640, true), "the operator's settings survive a re-install");

        let (unit, _, keep) = written(&steps, UNIT_PATH).unwrap();
        assert!(
            unit.contains("\nExecStart=/usr/local/bin/bitriver\n") && !unit.contains("/usr/bin/bitriver"),
            "{unit}"
        );
        assert!(unit.contains("ProtectSystem=strict") && unit.contains("CapabilityBoundingSet=CAP_NET_BIND_SERVICE"));
        assert!(!unit.contains("StandardOutput"), "no log dir asked for");
        assert!(!keep);
    }

    #[test]
    fn install_plan_again_and_with_a_log_dir() {
        let facts = InstallFacts { group_exists: true, user_exists: true, current_exe: INSTALL_BIN.into() };
        let steps = install_plan(&install_args(":80", Some("/var/log/bitriver")), &facts).unwrap();
        let text: Vec<String> = steps.iter().map(ToString::to_string).collect();
        assert!(
            !text.iter().any(|s| s.contains("useradd") || s.contains("groupadd") || s.starts_with("copy")),
            "{text:?}"
        );
        assert!(text.contains(&"create directory /var/log/bitriver (mode 0750)".to_owned()), "{text:?}");
        let (unit, _, _) = written(&steps, UNIT_PATH).unwrap();
        assert!(unit.contains("StandardError=append:/var/log/bitriver/bitriver.log\n\n[Install]"), "{unit}");

        let err = install_plan(&install_args("nonsense", None), &facts).unwrap_err().to_string();
        assert!(err.contains("--addr"), "{err}");
        let err = install_plan(&install_args(":80", Some("logs")), &facts).unwrap_err().to_string();
        assert!(err.contains("--log-dir"), "{err}");
    }

    #[test]
    fn password_is_the_first_line() {
        assert_eq!(read_password(&b"long enough\r\nsecond"[..]).unwrap(), "long enough");
        assert_eq!(read_password(&b"no newline at all"[..]).unwrap(), "no newline at all");
        let err = read_password(&b"short\n"[..]).unwrap_err().to_string();
        assert!(err.contains("at least 8"), "{err}");
        assert!(read_password(&b""[..]).is_err());
    }

    #[test]
    fn user_records_are_validated() {
        let user = new_user(&args(" Root@Example.com", true, &[]), "long enough").unwrap();
        assert_eq!((user.email.as_str(), user.display_name.as_str()), ("root@example.com", "root"));
        assert_eq!(user.roles, ["admin"]);
        assert!(user.password_hash.as_deref().is_some_and(|h| control::auth::verify_password(h, "long enough")));
        assert_eq!(user.id.len(), 24);
        assert_eq!(new_user(&args("v@example.com", false, &[]), "long enough").unwrap().roles, ["viewer"]);
        let err = new_user(&args("nope", true, &[]), "long enough").unwrap_err().to_string();
        assert!(err.starts_with("--email"), "{err}");
        let err = new_user(&args("a@example.com", false, &["root"]), "long enough").unwrap_err().to_string();
        assert!(err.starts_with("--role"), "{err}");
    }
}
