//! The addresses this node publishes in the node directory: where other machines reach each
//! listener (`http`, `rtmp`, `srt`, `edge`, `cluster`).
//!
//! A listener bound to a wildcard (`:8080`, the default) is reachable on every interface, so the
//! directory needs a host for it: `--advertise-host`, else the host of `--cluster-advertise`,
//! else the address of the interface that holds the default route. Publishing `127.0.0.1` for it
//! would send an edge on another machine to its own loopback, so loopback is only published when
//! every listener is bound to loopback (a single machine, or the tests). A listener bound to a
//! specific address is published at that address; one bound to loopback while others are public
//! is left out (nobody else could reach it) with a warning.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use crate::config::{Mode, ValidatedConfig};

/// What to publish, decided once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    /// The host wildcard listeners are published at, if one was needed and found.
    pub host: Option<IpAddr>,
    /// `(listener, "host:port")` for the directory, cluster excluded.
    pub listeners: Vec<(String, String)>,
    /// What to hand the catalog as its advertised cluster address (`None`: `--cluster-advertise`
    /// as given). Port 0 means "the port the catalog binds".
    pub cluster: Option<SocketAddr>,
    /// Listeners left out, with why, for the start-up log.
    pub skipped: Vec<(String, &'static str)>,
}

/// Decide the published addresses of `bound` (`(name, bound address)`, cluster excluded).
pub fn plan(config: &ValidatedConfig, bound: &[(&str, SocketAddr)]) -> anyhow::Result<Advertised> {
    let plan = decide(
        bound,
        config.cluster_addr,
        config.cluster_advertise_given,
        config.advertise_host,
        primary_interface_address,
    );
    let wildcard = bound.iter().map(|(_, a)| a).chain([&config.cluster_addr]).any(|a| a.ip().is_unspecified());
    if wildcard && plan.host.is_none() {
        if config.mode == Mode::Production && config.join.is_some() {
            anyhow::bail!(
                "no non-loopback interface address found for the wildcard listeners; \
                 set --advertise-host so that the other members can reach this node"
            );
        }
        tracing::warn!(
            "no non-loopback interface address found: other machines cannot reach this node's \
             wildcard listeners (set --advertise-host)"
        );
    }
    for (name, why) in &plan.skipped {
        tracing::warn!(listener = %name, "not published in the node directory: {why}");
    }
    Ok(plan)
}

/// The pure part of [`plan`]: `detect` finds the primary interface address when needed.
pub fn decide(
    bound: &[(&str, SocketAddr)],
    cluster_bind: SocketAddr,
    cluster_given: bool,
    explicit_host: Option<IpAddr>,
    detect: impl FnOnce() -> Option<IpAddr>,
) -> Advertised {
    let all = || bound.iter().map(|(_, a)| *a).chain(std::iter::once(cluster_bind));
    let all_loopback = all().all(|a| a.ip().is_loopback());
    let any_wildcard = all().any(|a| a.ip().is_unspecified());
    let host = explicit_host.or_else(|| if any_wildcard { detect() } else { None });
    let mut skipped = Vec::new();
    let mut publish = |name: &str, addr: SocketAddr| -> Option<SocketAddr> {
        let ip = addr.ip();
        if ip.is_unspecified() {
            // No host found: loopback is all that can be said; `plan` has warned.
            let host = host.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            Some(SocketAddr::new(host, addr.port()))
        } else if ip.is_loopback() && !all_loopback {
            skipped.push((name.to_owned(), "bound to loopback while other listeners are public"));
            None
        } else {
            Some(addr)
        }
    };
    let listeners = bound
        .iter()
        .filter_map(|(name, addr)| publish(name, *addr).map(|a| ((*name).to_owned(), a.to_string())))
        .collect();
    let cluster = if cluster_given { None } else { publish("cluster", cluster_bind) };
    Advertised { host, listeners, cluster, skipped }
}

/// The address of the interface that holds the default route (IPv4 first, then IPv6), or the
/// first non-loopback IPv4 address of any interface when there is no default route.
pub fn primary_interface_address() -> Option<IpAddr> {
    // Connecting a UDP socket sends nothing: the kernel only picks the route and source address.
    // The targets are documentation addresses (RFC 5737, RFC 3849), never really dialled.
    let routed = |bind: SocketAddr, target: SocketAddr| {
        let socket = UdpSocket::bind(bind).ok()?;
        socket.connect(target).ok()?;
        let ip = socket.local_addr().ok()?.ip();
        (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
    };
    routed(SocketAddr::from(([0, 0, 0, 0], 0)), SocketAddr::from(([192, 0, 2, 1], 9)))
        .or_else(|| {
            let v6_target = SocketAddr::new("2001:db8::1".parse().ok()?, 9);
            routed(SocketAddr::from(([0u16; 8], 0)), v6_target)
        })
        .or_else(|| std::fs::read_to_string("/proc/net/fib_trie").ok().and_then(|t| first_local_ipv4(&t)))
}

/// The first non-loopback local host address in `/proc/net/fib_trie`: a line `|-- A.B.C.D`
/// followed by `/32 host LOCAL`.
fn first_local_ipv4(fib_trie: &str) -> Option<IpAddr> {
    let mut last: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = addr.trim().parse().ok();
        } else if line.starts_with("/32 host LOCAL") {
            if let Some(ip) = last.filter(|ip| !ip.is_loopback() && !ip.is_unspecified()) {
                return Some(IpAddr::V4(ip));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn listeners(plan: &Advertised) -> Vec<(&str, &str)> {
        plan.listeners.iter().map(|(n, a)| (n.as_str(), a.as_str())).collect()
    }

    #[test]
    fn wildcard_listeners_are_published_at_the_primary_interface() {
        let bound = [("http", sa("0.0.0.0:8080")), ("rtmp", sa("0.0.0.0:1935")), ("edge", sa("10.9.0.4:8081"))];
        let plan = decide(&bound, sa("0.0.0.0:7946"), false, None, || Some(ip("10.9.0.4")));
        assert_eq!(plan.host, Some(ip("10.9.0.4")));
        assert_eq!(listeners(&plan), [("http", "10.9.0.4:8080"), ("rtmp", "10.9.0.4:1935"), ("edge", "10.9.0.4:8081")]);
        assert_eq!(plan.cluster, Some(sa("10.9.0.4:7946")));
        assert!(plan.skipped.is_empty());
    }

    #[test]
    fn an_explicit_host_wins_and_is_not_detected() {
        let bound = [("http", sa("0.0.0.0:8080")), ("srt", sa("[::]:9000"))];
        let plan = decide(&bound, sa("0.0.0.0:0"), false, Some(ip("203.0.113.5")), || panic!("no detection"));
        assert_eq!(listeners(&plan), [("http", "203.0.113.5:8080"), ("srt", "203.0.113.5:9000")]);
        // Port 0: the catalog fills in the port it binds.
        assert_eq!(plan.cluster, Some(sa("203.0.113.5:0")));
        // --cluster-advertise given: the catalog keeps it.
        let plan = decide(&bound, sa("0.0.0.0:7946"), true, Some(ip("203.0.113.5")), || None);
        assert_eq!(plan.cluster, None);
    }

    #[test]
    fn loopback_only_when_every_listener_is_on_loopback() {
        let bound = [("http", sa("127.0.0.1:8080")), ("edge", sa("127.0.0.1:8081"))];
        let plan = decide(&bound, sa("127.0.0.1:7946"), false, None, || panic!("nothing to detect"));
        assert_eq!(listeners(&plan), [("http", "127.0.0.1:8080"), ("edge", "127.0.0.1:8081")]);
        assert_eq!(plan.cluster, Some(sa("127.0.0.1:7946")));

        // One public listener: the loopback one cannot be reached by anybody else; left out.
        let bound = [("http", sa("127.0.0.1:8080")), ("edge", sa("0.0.0.0:8081"))];
        let plan = decide(&bound, sa("127.0.0.1:7946"), false, None, || Some(ip("10.0.0.7")));
        assert_eq!(listeners(&plan), [("edge", "10.0.0.7:8081")]);
        assert_eq!(plan.cluster, None);
        let skipped: Vec<&str> = plan.skipped.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(skipped, ["http", "cluster"]);
        assert!(plan.listeners.iter().all(|(_, a)| !a.starts_with("127.")));
    }

    #[test]
    fn fib_trie_fallback_skips_loopback() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 127.0.0.1\n        /32 host LOCAL\n     \
                    |-- 10.44.0.0\n        /24 link UNICAST\n     |-- 10.44.0.3\n        /32 host LOCAL\n";
        assert_eq!(first_local_ipv4(trie), Some(ip("10.44.0.3")));
        assert_eq!(first_local_ipv4("Main:\n |-- 127.0.0.1\n /32 host LOCAL\n"), None);
    }

    #[test]
    fn this_machine_has_a_primary_address_or_says_none() {
        // Whatever the machine, the answer is never loopback or a wildcard.
        if let Some(ip) = primary_interface_address() {
            assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
        }
    }
}
