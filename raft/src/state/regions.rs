//! The operator's network map: which client networks (and GeoIP countries or continents) belong
//! to which region, and which regions neighbour which. Control nodes read it to send a viewer to
//! an edge near them (`control::routing`); it is written with [`Command::SetRegion`]
//! (`PUT /api/regions/{region}`).
//!
//! Same contract as the rest of [`crate::state`]: applying is deterministic, every change comes
//! back as [`Mutation`]s, and `load_record` rebuilds exactly what applying built. The state
//! machine validates the whole entry (CIDRs, overlaps with other regions, known neighbours)
//! because only it sees every region at once, race-free: two control nodes accepting overlapping
//! networks at the same moment would otherwise both succeed.
//!
//! [`Cidr`] is the one parser of network prefixes, shared with the control plane's
//! `--trusted-proxies`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::command::{ApplyResult, CatalogError, Command, Response};
use crate::state::{put, CatalogState, Mutation};

mod key {
    pub(super) const REGION: &str = "regn/";
}

/// Most networks one region may list.
pub const MAX_NETWORKS: usize = 1024;
/// Most neighbours one region may list.
pub const MAX_NEIGHBOURS: usize = 32;
/// Most GeoIP codes one region may list (there are fewer than 260 countries).
pub const MAX_GEO: usize = 300;
/// Longest region name.
pub const MAX_REGION_CHARS: usize = 64;
/// The prefix of a continent code in [`RegionRecord::geo`] (`continent:EU`); bare codes are
/// ISO 3166 countries. Continent and country codes collide (`NA` is Namibia and North America).
pub const CONTINENT_PREFIX: &str = "continent:";

/// A network prefix, `10.0.0.0/8` or `2001:db8::/32`, with its host bits zero. A bare address is
/// a /32 (or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a network prefix does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a network (expected ADDRESS/PREFIX, e.g. 10.1.0.0/16): {reason}")]
pub struct CidrError {
    pub input: String,
    pub reason: &'static str,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then(|| Cidr { addr: mask(addr, prefix), prefix })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a dual-stack
    /// socket reports for an IPv4 peer) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }

    /// Whether the two share any address (one contains the other's first address).
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

/// An IPv4-mapped IPv6 address as IPv4; others unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            IpAddr::V4(Ipv4Addr::from(bits & keep))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
            IpAddr::V6(Ipv6Addr::from(bits & keep))
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Self, CidrError> {
        let err = |reason| CidrError { input: input.chars().take(64).collect(), reason };
        let text = input.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| err("prefix length out of range"))?
            }
            Some(_) => return Err(err("prefix length is not a number")),
        };
        if prefix > max {
            return Err(err("prefix length out of range"));
        }
        if mask(addr, prefix) != addr {
            return Err(err("host bits set after the prefix (write the network address)"));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One region of the map, as stored and as `GET /api/regions` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RegionRecord {
    pub name: String,
    /// Client networks in this region, canonical (`10.1.0.0/16`).
    pub networks: Vec<String>,
    /// Regions to fall back to when this one has no usable edge, nearest first.
    pub neighbours: Vec<String>,
    /// GeoIP codes that map here: ISO 3166 countries (`FR`) or `continent:EU`.
    #[serde(default)]
    pub geo: Vec<String>,
}

/// The map: records plus the parsed networks (derived, not persisted).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RegionMap {
    regions: BTreeMap<String, RegionRecord>,
    networks: Vec<(Cidr, String)>,
}

fn region_key(name: &str) -> String {
    format!("{}{name}", key::REGION)
}

impl RegionMap {
    pub(crate) fn load_record(&mut self, key: &str, value: &[u8]) -> Result<bool, CodecError> {
        if !key.starts_with(key::REGION) {
            return Ok(false);
        }
        let record: RegionRecord = codec::decode(value)?;
        self.insert(record);
        Ok(true)
    }

    fn insert(&mut self, record: RegionRecord) {
        self.networks.retain(|(_, region)| region != &record.name);
        // Records were validated before they were stored; a network that no longer parses
        // (impossible today) is left out rather than failing the load.
        self.networks.extend(record.networks.iter().filter_map(|n| n.parse().ok()).map(|c| (c, record.name.clone())));
        self.networks.sort();
        self.regions.insert(record.name.clone(), record);
    }

    /// A map of `records` as given (not validated: for tests and tools; the catalog builds its
    /// own through [`Command::SetRegion`]).
    pub fn with_records(records: impl IntoIterator<Item = RegionRecord>) -> Self {
        let mut map = RegionMap::default();
        for record in records {
            map.insert(record);
        }
        map
    }

    /// Every region with a map entry, by name.
    pub fn regions(&self) -> impl Iterator<Item = &RegionRecord> {
        self.regions.values()
    }

    pub fn region(&self, name: &str) -> Option<&RegionRecord> {
        self.regions.get(name)
    }

    /// The region whose networks hold `ip` (the longest prefix, though validation keeps
    /// networks of different regions apart).
    pub fn region_of_ip(&self, ip: IpAddr) -> Option<&str> {
        self.networks.iter().filter(|(c, _)| c.contains(ip)).max_by_key(|(c, _)| c.prefix()).map(|(_, r)| r.as_str())
    }

    /// The region a GeoIP answer maps to: the country first, then the continent.
    pub fn region_of_geo(&self, country: Option<&str>, continent: Option<&str>) -> Option<&str> {
        let find =
            |code: &str| self.regions.values().find(|r| r.geo.iter().any(|g| g == code)).map(|r| r.name.as_str());
        country
            .and_then(|c| find(&c.to_ascii_uppercase()))
            .or_else(|| continent.and_then(|c| find(&format!("{CONTINENT_PREFIX}{}", c.to_ascii_uppercase()))))
    }
}

/// Whether `name` is a plausible region name: 1..=64 of `a-z A-Z 0-9 - _ .`.
pub fn valid_region_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_REGION_CHARS
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A GeoIP code as stored: `FR`, or `continent:EU`, upper-cased; `None` if it is neither.
pub fn normalize_geo(code: &str) -> Option<String> {
    let code = code.trim();
    let two_letters = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic());
    match code.strip_prefix(CONTINENT_PREFIX) {
        Some(c) if two_letters(c) => Some(format!("{CONTINENT_PREFIX}{}", c.to_ascii_uppercase())),
        None if two_letters(code) => Some(code.to_ascii_uppercase()),
        _ => None,
    }
}

impl CatalogState {
    /// The operator's network map.
    pub fn region_map(&self) -> &RegionMap {
        &self.regions
    }

    /// Whether a region exists: some node of the directory is in it, or it has a map entry.
    pub fn region_known(&self, name: &str) -> bool {
        self.regions.regions.contains_key(name) || self.nodes().any(|n| n.region == name)
    }

    /// Check `record` against the map as it is (what [`Command::SetRegion`] refuses), and
    /// return it in canonical form. The API calls this first to answer with the field at fault;
    /// the state machine calls it again because only it decides race-free.
    pub fn check_region(&self, record: &RegionRecord) -> Result<RegionRecord, CatalogError> {
        if !valid_region_name(&record.name) {
            return Err(CatalogError::invalid("region", "1 to 64 of a-z, A-Z, 0-9, '-', '_' and '.'"));
        }
        if !self.region_known(&record.name) {
            return Err(CatalogError::invalid(
                "region",
                &format!("unknown region {:?}: no node of the cluster is in it", record.name),
            ));
        }
        if record.networks.len() > MAX_NETWORKS {
            return Err(CatalogError::invalid("networks", &format!("at most {MAX_NETWORKS} networks")));
        }
        let mut parsed: Vec<Cidr> = Vec::with_capacity(record.networks.len());
        for (i, text) in record.networks.iter().enumerate() {
            let cidr: Cidr = text
                .parse()
                .map_err(|e: CidrError| CatalogError::invalid(&format!("networks[{i}]"), &e.to_string()))?;
            if let Some(other) = parsed.iter().find(|p| p.overlaps(&cidr)) {
                return Err(CatalogError::invalid(
                    &format!("networks[{i}]"),
                    &format!("{cidr} overlaps {other} of the same list"),
                ));
            }
            if let Some((other, region)) =
                self.regions.networks.iter().find(|(c, region)| *region != record.name && c.overlaps(&cidr))
            {
                return Err(CatalogError::invalid(
                    &format!("networks[{i}]"),
                    &format!("{cidr} overlaps {other} of region {region}"),
                ));
            }
            parsed.push(cidr);
        }
        if record.neighbours.len() > MAX_NEIGHBOURS {
            return Err(CatalogError::invalid("neighbours", &format!("at most {MAX_NEIGHBOURS} neighbours")));
        }
        let mut neighbours: Vec<String> = Vec::new();
        for (i, name) in record.neighbours.iter().enumerate() {
            let field = format!("neighbours[{i}]");
            if name == &record.name {
                return Err(CatalogError::invalid(&field, "a region is not its own neighbour"));
            }
            if !valid_region_name(name) || !self.region_known(name) {
                return Err(CatalogError::invalid(
                    &field,
                    &format!("unknown region {:?}", name.chars().take(64).collect::<String>()),
                ));
            }
            if !neighbours.contains(name) {
                neighbours.push(name.clone());
            }
        }
        if record.geo.len() > MAX_GEO {
            return Err(CatalogError::invalid("geo", &format!("at most {MAX_GEO} codes")));
        }
        let mut geo: Vec<String> = Vec::new();
        for (i, code) in record.geo.iter().enumerate() {
            let field = format!("geo[{i}]");
            let code = normalize_geo(code).ok_or_else(|| {
                CatalogError::invalid(&field, "a two-letter country code (FR) or continent:XX (continent:EU)")
            })?;
            if let Some(other) = self.regions.regions.values().find(|r| r.name != record.name && r.geo.contains(&code))
            {
                return Err(CatalogError::invalid(&field, &format!("{code} already maps to region {}", other.name)));
            }
            if !geo.contains(&code) {
                geo.push(code);
            }
        }
        Ok(RegionRecord {
            name: record.name.clone(),
            networks: parsed.iter().map(Cidr::to_string).collect(),
            neighbours,
            geo,
        })
    }

    pub(crate) fn apply_region(&mut self, command: &Command, out: &mut Vec<Mutation>) -> ApplyResult {
        let Command::SetRegion(record) = command else {
            return Err(CatalogError::invalid("command", "not a region command"));
        };
        let record = self.check_region(record)?;
        out.push(put(region_key(&record.name), codec::encode(&record)));
        self.regions.insert(record.clone());
        Ok(Response::Region(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::replica::Replica;
    use crate::types::{NodeInfo, NodeLoad};

    impl Replica {
        fn accept(&mut self, command: Command) -> Response {
            let (result, _) = self.apply(command.clone());
            result.unwrap_or_else(|e| panic!("{command:?} refused: {e}"))
        }

        fn refuse(&mut self, command: Command) -> CatalogError {
            let before = self.state.clone();
            let (result, mutations) = self.apply(command.clone());
            assert!(mutations.is_empty(), "refused {command:?} wrote {mutations:?}");
            assert_eq!(self.state, before, "refused {command:?} changed the tables");
            result.expect_err("expected a refusal")
        }
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_canonically_and_refuse_garbage() {
        assert_eq!(cidr("10.1.0.0/16").to_string(), "10.1.0.0/16");
        assert_eq!(cidr(" 10.1.2.3 ").to_string(), "10.1.2.3/32");
        assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        for bad in [
            "",
            "10.1.0.0/",
            "10.1.0.0/33",
            "10.1.0.0/-1",
            "10.1.0.0/+8",
            "10.1.2.3/16",
            "host/8",
            "::/129",
            "10.0.0.0/1000",
            "1.2.3.4/8/9",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn containment_and_overlap() {
        let net = cidr("10.1.0.0/16");
        assert!(net.contains("10.1.255.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.1".parse().unwrap()), "IPv4-mapped peers count as IPv4");
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("2001:db8::1".parse().unwrap()));
        assert!(net.overlaps(&cidr("10.1.3.0/24")) && cidr("10.1.3.0/24").overlaps(&net));
        assert!(net.overlaps(&cidr("10.0.0.0/8")));
        assert!(!net.overlaps(&cidr("10.2.0.0/16")));
        assert!(cidr("0.0.0.0/0").contains("192.0.2.1".parse().unwrap()));
    }

    fn node(id: u64, region: &str) -> Command {
        Command::UpsertNode(NodeInfo {
            id,
            region: region.into(),
            roles: vec!["edge".into()],
            addresses: vec![],
            load: NodeLoad::default(),
            updated_at: 1,
        })
    }

    fn set(name: &str, networks: &[&str], neighbours: &[&str], geo: &[&str]) -> Command {
        Command::SetRegion(RegionRecord {
            name: name.into(),
            networks: networks.iter().map(|s| s.to_string()).collect(),
            neighbours: neighbours.iter().map(|s| s.to_string()).collect(),
            geo: geo.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn the_map_answers_lookups_and_survives_a_reload() {
        // `Replica` checks after every command that a reload of the records equals the tables.
        let mut r = Replica::default();
        r.accept(node(1, "eu"));
        r.accept(node(2, "us"));
        r.accept(set("eu", &["10.1.0.0/16", "2001:db8:1::/48"], &["us"], &["fr", "continent:eu"]));
        r.accept(set("us", &["10.2.0.0/16"], &["eu"], &["US"]));
        let map = r.state.region_map();
        assert_eq!(map.region_of_ip("10.1.9.9".parse().unwrap()), Some("eu"));
        assert_eq!(map.region_of_ip("2001:db8:1::5".parse().unwrap()), Some("eu"));
        assert_eq!(map.region_of_ip("10.2.0.1".parse().unwrap()), Some("us"));
        assert_eq!(map.region_of_ip("10.3.0.1".parse().unwrap()), None);
        assert_eq!(map.region_of_geo(Some("FR"), Some("EU")), Some("eu"));
        assert_eq!(map.region_of_geo(Some("DE"), Some("EU")), Some("eu"), "by continent");
        assert_eq!(map.region_of_geo(Some("US"), Some("NA")), Some("us"));
        assert_eq!(map.region_of_geo(Some("JP"), Some("AS")), None);
        assert_eq!(map.region("eu").unwrap().geo, ["FR", "continent:EU"]);

        // Replacing a region's networks frees the old ones.
        r.accept(set("eu", &["10.5.0.0/16"], &[], &[]));
        assert_eq!(r.state.region_map().region_of_ip("10.1.9.9".parse().unwrap()), None);
        r.accept(set("us", &["10.1.0.0/16", "10.2.0.0/16"], &[], &[]));
        assert_eq!(r.state.region_map().region_of_ip("10.1.9.9".parse().unwrap()), Some("us"));
    }

    #[test]
    fn bad_entries_are_refused_and_write_nothing() {
        let mut r = Replica::default();
        r.accept(node(1, "eu"));
        r.accept(node(2, "us"));
        r.accept(set("eu", &["10.1.0.0/16"], &[], &["FR"]));
        for (command, field) in [
            (set("mars", &["10.9.0.0/16"], &[], &[]), "region"),
            (set("bad name", &[], &[], &[]), "region"),
            (set("us", &["10.2.0.0/33"], &[], &[]), "networks[0]"),
            (set("us", &["not-a-network"], &[], &[]), "networks[0]"),
            (set("us", &["10.2.0.0/16", "10.2.1.0/24"], &[], &[]), "networks[1]"),
            (set("us", &["10.0.0.0/8"], &[], &[]), "networks[0]"),
            (set("us", &["10.1.2.0/24"], &[], &[]), "networks[0]"),
            (set("us", &[], &["mars"], &[]), "neighbours[0]"),
            (set("us", &[], &["us"], &[]), "neighbours[0]"),
            (set("us", &[], &[], &["FRA"]), "geo[0]"),
            (set("us", &[], &[], &["fr"]), "geo[0]"),
        ] {
            match r.refuse(command.clone()) {
                CatalogError::Invalid { field: f, .. } => assert_eq!(f, field, "{command:?}"),
                other => panic!("{command:?}: {other:?}"),
            }
        }
        assert!(r.state.region_map().region("us").is_none());
    }
}
