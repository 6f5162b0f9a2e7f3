//! Where a viewer is: the client's address behind trusted proxies, and its region.
//!
//! Sans-IO: the handlers pass the socket peer and the headers' values in; nothing here reads a
//! socket or a file (the GeoIP database sits behind [`GeoLookup`], which `node` implements).

use std::net::IpAddr;

use raft::state::regions::{canonical, Cidr, RegionMap};

/// Most `X-Forwarded-For` hops looked at: a longer chain is a client writing its own header
/// (every hop we trust appends one), and walking it would cost time for nothing.
pub const MAX_FORWARDED_HOPS: usize = 32;

/// A GeoIP database: an address's ISO country code and continent code, if it knows them.
pub trait GeoLookup: Send + Sync {
    fn lookup(&self, ip: IpAddr) -> Option<GeoAnswer>;
}

/// What a GeoIP database says of one address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoAnswer {
    pub country: Option<String>,
    pub continent: Option<String>,
}

/// How the region was found, for logs, tests and the `X-BitRiver-Region-Source` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionSource {
    /// The operator's load balancer said so (`--client-region-header` from a trusted proxy).
    Header,
    /// The client's address is in one of the region's networks.
    Network,
    /// The GeoIP database's country or continent maps to the region.
    GeoIp,
    /// Nothing else knew: the region of the node answering.
    Node,
}

impl RegionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RegionSource::Header => "header",
            RegionSource::Network => "network",
            RegionSource::GeoIp => "geoip",
            RegionSource::Node => "node",
        }
    }
}

fn trusted(ip: IpAddr, proxies: &[Cidr]) -> bool {
    proxies.iter().any(|c| c.contains(ip))
}

/// The client's address: the socket peer, or, when the peer is a trusted proxy, the last
/// `X-Forwarded-For` hop that is not itself a trusted proxy (hops are appended left to right, so
/// everything left of the last untrusted one was written by someone we do not trust).
/// `forwarded` holds the values of every `X-Forwarded-For` header, in order. A hop that does not
/// parse ends the walk at the previous (trusted) hop: a garbled chain is not evidence.
pub fn client_addr<'a>(peer: IpAddr, forwarded: impl IntoIterator<Item = &'a str>, proxies: &[Cidr]) -> IpAddr {
    let peer = canonical(peer);
    if !trusted(peer, proxies) {
        return peer;
    }
    let mut hops: Vec<&str> = Vec::new();
    for value in forwarded {
        hops.extend(value.split(',').map(str::trim));
        if hops.len() > MAX_FORWARDED_HOPS {
            break;
        }
    }
    let mut client = peer;
    for hop in hops.iter().rev().take(MAX_FORWARDED_HOPS) {
        let Some(ip) = parse_hop(hop) else { break };
        client = canonical(ip);
        if !trusted(client, proxies) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    hop.rsplit_once(':').and_then(|(ip, _)| ip.parse::<std::net::Ipv4Addr>().ok()).map(IpAddr::V4)
}

/// What is known about one request, for [`client_region`].
pub struct ClientFacts<'a> {
    pub peer: IpAddr,
    /// The client address ([`client_addr`]).
    pub client: IpAddr,
    /// The value of `--client-region-header`, if configured and present.
    pub region_header: Option<&'a str>,
}

/// The viewer's region, in the documented order: the trusted header (only from a trusted peer,
/// and only naming a region the cluster knows), the network map, GeoIP through the map, the
/// node's own region.
pub fn client_region(
    facts: &ClientFacts<'_>,
    proxies: &[Cidr],
    map: &RegionMap,
    known: impl Fn(&str) -> bool,
    geoip: Option<&dyn GeoLookup>,
    node_region: &str,
) -> (String, RegionSource) {
    if let Some(header) = facts.region_header.map(str::trim) {
        if trusted(canonical(facts.peer), proxies) && raft::state::regions::valid_region_name(header) && known(header) {
            return (header.to_owned(), RegionSource::Header);
        }
    }
    if let Some(region) = map.region_of_ip(facts.client) {
        return (region.to_owned(), RegionSource::Network);
    }
    if let Some(answer) = geoip.and_then(|g| g.lookup(facts.client)) {
        if let Some(region) = map.region_of_geo(answer.country.as_deref(), answer.continent.as_deref()) {
            return (region.to_owned(), RegionSource::GeoIp);
        }
    }
    (node_region.to_owned(), RegionSource::Node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies() -> Vec<Cidr> {
        vec!["10.0.0.0/24".parse().unwrap(), "2001:db8::/64".parse().unwrap()]
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        assert_eq!(client_addr(ip("198.51.100.7"), ["1.2.3.4"], &proxies()), ip("198.51.100.7"));
        assert_eq!(client_addr(ip("::ffff:198.51.100.7"), ["1.2.3.4"], &proxies()), ip("198.51.100.7"));
    }

    #[test]
    fn behind_trusted_proxies_the_last_untrusted_hop_is_the_client() {
        let p = proxies();
        // The client wrote "6.6.6.6" itself; the proxy appended the real peer.
        assert_eq!(client_addr(ip("10.0.0.1"), ["6.6.6.6, 203.0.113.9"], &p), ip("203.0.113.9"));
        // Two proxies of ours in a row.
        assert_eq!(client_addr(ip("10.0.0.1"), ["6.6.6.6, 203.0.113.9, 10.0.0.2"], &p), ip("203.0.113.9"));
        // Several header lines count as one list.
        assert_eq!(client_addr(ip("10.0.0.1"), ["6.6.6.6", "203.0.113.9:4444"], &p), ip("203.0.113.9"));
        assert_eq!(client_addr(ip("2001:db8::5"), ["[2001:db8:1::9]:443"], &p), ip("2001:db8:1::9"));
        // No header: the proxy itself.
        assert_eq!(client_addr(ip("10.0.0.1"), [], &p), ip("10.0.0.1"));
        // Garbage stops the walk at the last hop we could trust.
        assert_eq!(client_addr(ip("10.0.0.1"), ["203.0.113.9, garbage"], &p), ip("10.0.0.1"));
        assert_eq!(client_addr(ip("10.0.0.1"), ["203.0.113.9, 10.0.0.3, nope"], &p), ip("10.0.0.1"));
        // An absurd chain is cut, never walked in full.
        let long = vec!["10.0.0.2"; 10_000].join(",");
        assert_eq!(client_addr(ip("10.0.0.1"), [long.as_str()], &p), ip("10.0.0.2"));
    }

    struct Geo;
    impl GeoLookup for Geo {
        fn lookup(&self, ip: IpAddr) -> Option<GeoAnswer> {
            (ip == IpAddr::from([192, 0, 2, 1]))
                .then(|| GeoAnswer { country: Some("JP".into()), continent: Some("AS".into()) })
        }
    }

    #[test]
    fn the_region_comes_from_header_then_network_then_geoip_then_the_node() {
        use raft::state::regions::{RegionMap, RegionRecord};
        let map = &RegionMap::with_records([
            RegionRecord { name: "eu".into(), networks: vec!["203.0.113.0/24".into()], ..Default::default() },
            RegionRecord { name: "asia".into(), geo: vec!["JP".into()], ..Default::default() },
        ]);
        let p = proxies();
        let known = |r: &str| r == "asia" || r == "eu";
        let facts = |peer: &str, client: &str, header: Option<&'static str>| ClientFacts {
            peer: ip(peer),
            client: ip(client),
            region_header: header,
        };
        let region = |f: &ClientFacts<'_>| client_region(f, &p, map, known, Some(&Geo), "home");
        assert_eq!(region(&facts("10.0.0.1", "10.0.0.1", Some("asia"))), ("asia".into(), RegionSource::Header));
        // From an untrusted peer, or naming an unknown region, the header is ignored.
        assert_eq!(region(&facts("203.0.113.1", "203.0.113.1", Some("asia"))), ("eu".into(), RegionSource::Network));
        assert_eq!(region(&facts("10.0.0.1", "10.0.0.1", Some("mars"))).1, RegionSource::Node);
        assert_eq!(region(&facts("10.0.0.1", "10.0.0.1", Some("a b"))).1, RegionSource::Node);
        // The client behind the proxy is in eu's networks.
        assert_eq!(region(&facts("10.0.0.1", "203.0.113.4", None)), ("eu".into(), RegionSource::Network));
        assert_eq!(region(&facts("192.0.2.1", "192.0.2.1", None)), ("asia".into(), RegionSource::GeoIp));
        assert_eq!(region(&facts("192.0.2.2", "192.0.2.2", None)), ("home".into(), RegionSource::Node));
    }
}
