//! Network namespaces for fleet tests: every node on a "machine" of its own, all on this host.
//!
//! [`Net::new`] makes a Linux bridge in the test's namespace with the address `10.213.N.1/24`
//! (the test process reaches the nodes through it); [`Net::add`] makes a namespace joined to the
//! bridge by a veth pair, with `eth0` at `10.213.N.K/24`, loopback up and a default route via the
//! bridge, so a node's primary interface address is its own non-loopback address, as on a
//! machine. Nodes run inside with `ip netns exec` ([`NodeProc::netns`]); a listener on a
//! wildcard address is reachable at the namespace's address and nowhere else, so a node that
//! advertised loopback would be unreachable from the others, as it is between real machines.
//!
//! Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and `ip` from iproute2. Without `ip` the test
//! fails, naming it, unless `BITRIVER_ALLOW_SKIP=1` (then it prints `SKIPPED: ...`). Everything
//! is removed when the [`Net`] is dropped; stop the nodes first (drop them before the `Net`).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use super::NodeProc;

pub const IP: &str = "/usr/sbin/ip";

/// Serialises subnet choice between the tests of one process.
static SETUP: Mutex<()> = Mutex::new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A bridge and the namespaces attached to it.
pub struct Net {
    /// Short unique tag in every name this net creates.
    tag: String,
    bridge: String,
    subnet: u8,
    namespaces: Vec<Netns>,
}

/// One namespace: a machine with one interface.
#[derive(Debug, Clone)]
pub struct Netns {
    pub name: String,
    pub ip: Ipv4Addr,
}

/// Run `ip ARGS`; panics with its output when it fails.
fn ip(args: &[&str]) -> String {
    let out = Command::new(IP).args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{IP}: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}(the fleet tests need root, or CAP_NET_ADMIN and CAP_SYS_ADMIN, for network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Net {
    /// A new bridge, or `None` (after printing `SKIPPED: ...`) when `ip` is missing and
    /// `BITRIVER_ALLOW_SKIP=1`. Panics when `ip` is missing otherwise, or cannot make the bridge.
    pub fn new() -> Option<Net> {
        if !Path::new(IP).exists() {
            let why = format!("{IP} (iproute2) is not installed; the fleet tests need it for network namespaces");
            if std::env::var("BITRIVER_ALLOW_SKIP").is_ok_and(|v| v == "1") {
                eprintln!("SKIPPED: {why}");
                return None;
            }
            panic!("{why} (install iproute2, or set BITRIVER_ALLOW_SKIP=1 to skip)");
        }
        let _guard = SETUP.lock().unwrap_or_else(|p| p.into_inner());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:05x}{n:x}", std::process::id() & 0xf_ffff);
        let bridge = format!("brb{tag}");
        // A /24 no interface of this host uses yet (other test processes may hold some).
        let used = ip(&["-4", "-o", "addr", "show"]);
        let start = (std::process::id() % 200) as u8;
        let subnet = (0..=250u8)
            .map(|i| (start.wrapping_add(i).wrapping_add(n as u8)) % 250 + 2)
            .find(|k| !used.contains(&format!(" 10.213.{k}.")))
            .expect("a free 10.213.N.0/24 subnet");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        let net = Net { tag, bridge, subnet, namespaces: Vec::new() };
        ip(&["addr", "add", &format!("{}/24", net.bridge_ip()), "dev", &net.bridge]);
        ip(&["link", "set", &net.bridge, "up"]);
        Some(net)
    }

    /// The test process's address on the bridge (the namespaces' default gateway).
    pub fn bridge_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 1)
    }

    /// A new namespace on the bridge; `label` only makes its name readable.
    pub fn add(&mut self, label: &str) -> Netns {
        let i = self.namespaces.len() + 2;
        assert!(i < 250, "too many namespaces on one net");
        let name = format!("br{}-{label}", self.tag);
        let host_end = format!("brv{}{i}", self.tag);
        let ns_end = format!("brp{}{i}", self.tag);
        let addr = Ipv4Addr::new(10, 213, self.subnet, i as u8);
        ip(&["netns", "add", &name]);
        // Recorded before the rest, so that drop cleans up even if a later step fails.
        let netns = Netns { name: name.clone(), ip: addr };
        self.namespaces.push(netns.clone());
        ip(&["link", "add", &host_end, "type", "veth", "peer", "name", &ns_end]);
        ip(&["link", "set", &host_end, "master", &self.bridge]);
        ip(&["link", "set", &host_end, "up"]);
        ip(&["link", "set", &ns_end, "netns", &name]);
        let in_ns = |args: &[&str]| {
            let mut all = vec!["-n", name.as_str()];
            all.extend_from_slice(args);
            ip(&all)
        };
        in_ns(&["link", "set", &ns_end, "name", "eth0"]);
        in_ns(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        in_ns(&["link", "set", "eth0", "up"]);
        in_ns(&["link", "set", "lo", "up"]);
        in_ns(&["route", "add", "default", "via", &self.bridge_ip().to_string()]);
        netns
    }

    /// A node that will run in `ns` with every listener on a wildcard address (the defaults of a
    /// real deployment: HTTP :8080, cluster :7946, RTMP :1935, SRT :9000, edge :8081).
    pub fn node(&self, ns: &Netns, root: &Path, name: &str) -> NodeProc {
        let mut node = NodeProc::new(root, name);
        node.netns = Some(ns.name.clone());
        node.host = ns.ip.to_string();
        node.http_port = 8080;
        node.cluster_port = 7946;
        node.args = [
            "--addr",
            ":8080",
            "--cluster-addr",
            ":7946",
            "--rtmp-addr",
            ":1935",
            "--srt-addr",
            ":9000",
            "--edge-addr",
            ":8081",
        ]
        .map(String::from)
        .to_vec();
        node
    }
}

/// One HTTP answer seen by a client in a namespace.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Fetched {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

impl Netns {
    /// `GET url` with curl from inside this namespace (a viewer on this "machine"), with extra
    /// `headers` ("Name: value"); redirects are not followed. `None` when curl cannot connect.
    pub fn curl(&self, url: &str, headers: &[&str]) -> Option<Fetched> {
        let mut cmd = Command::new(IP);
        cmd.args(["netns", "exec", &self.name, "curl", "-s", "-i", "--max-time", "10"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        let out = cmd.arg(url).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("curl: {e}"));
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
        let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Some(Fetched { status, headers, body: body.to_owned() })
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Best effort: deleting a namespace removes its end of the veth pair, and with it the
        // bridge's end.
        for ns in &self.namespaces {
            let _ = Command::new(IP).args(["netns", "del", &ns.name]).status();
        }
        let _ = Command::new(IP).args(["link", "del", &self.bridge]).status();
    }
}
