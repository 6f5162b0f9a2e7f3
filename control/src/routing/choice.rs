//! Which edge serves a viewer: the usable edges of the viewer's region, else of its nearest
//! neighbour, ranked by rendezvous hashing of the channel weighted by spare capacity.
//!
//! Rendezvous (highest random weight) hashing gives every (channel, edge) pair a pseudo-random
//! score; the channel goes to the best-scoring edge. All control nodes compute the same scores
//! from the same catalog, so one channel's viewers in a region land on the same edge (its cache
//! holds the channel once) whichever control node they ask, and removing an edge only moves the
//! channels that were on it. Weighting the score by spare capacity (`-w / ln(h)`, which picks each
//! edge with probability proportional to `w`) spills channels off an edge as it fills. Weights are
//! rounded to tenths so that CPU jitter between two reports does not move channels around.
//!
//! Sans-IO: the caller hands in the edges (from the catalog and the health tracker) and the map.

use raft::state::regions::RegionMap;
use raft::{LoadReport, NodeId};

/// What a CPU, a connection count and an egress rate are measured against to get a load
/// fraction. Nodes do not report their capacity yet; these are a mid-size edge machine.
pub const CPU_FULL_PERMILLE: f64 = 4000.0;
pub const CONNECTIONS_FULL: f64 = 5000.0;
pub const EGRESS_FULL_BPS: f64 = 1.25e9;

/// One edge that may serve viewers now.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub node_id: NodeId,
    pub region: String,
    /// `scheme://host:port` of its edge listener.
    pub base_url: String,
    /// Spare capacity in (0, 1], in tenths (see [`spare_capacity`]).
    pub weight: f64,
}

/// Spare capacity from a load report: one minus the busiest of CPU, connections and egress,
/// rounded up to tenths, never below 0.1 (a full edge still ranks, last, rather than vanish).
pub fn spare_capacity(load: Option<&LoadReport>) -> f64 {
    let Some(load) = load else { return 1.0 };
    let busiest = (f64::from(load.cpu_permille) / CPU_FULL_PERMILLE)
        .max(f64::from(load.connections) / CONNECTIONS_FULL)
        .max(load.egress_bps as f64 / EGRESS_FULL_BPS);
    let spare = (1.0 - busiest).clamp(0.0, 1.0);
    ((spare * 10.0).ceil() / 10.0).max(0.1)
}

/// The channel's affinity to a node: the catalog's one stable rendezvous hash
/// ([`raft::placement::rendezvous_score`]), so every control node agrees.
pub fn affinity_hash(channel: &str, node_id: NodeId) -> u64 {
    raft::placement::rendezvous_score(channel, node_id)
}

/// The weighted rendezvous score of `edge` for `channel`: higher wins.
pub fn score(channel: &str, edge: &Candidate) -> f64 {
    // A uniform number in (0, 1): the top 53 bits, shifted off zero.
    let unit = ((affinity_hash(channel, edge.node_id) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -edge.weight / unit.ln()
}

/// The regions to try for a viewer in `region`, nearest first: its own, its neighbours as the
/// map lists them, then their neighbours (breadth first), then every other region by name, so
/// that a viewer is never left without an edge while any edge is up.
pub fn region_order(region: &str, map: &RegionMap, all: &[&str]) -> Vec<String> {
    let mut order = vec![region.to_owned()];
    let mut next = 0;
    while next < order.len() {
        if let Some(record) = map.region(&order[next]) {
            for n in &record.neighbours {
                if !order.contains(n) {
                    order.push(n.clone());
                }
            }
        }
        next += 1;
    }
    let mut rest: Vec<&str> = all.iter().copied().filter(|r| !order.iter().any(|o| o == r)).collect();
    rest.sort_unstable();
    rest.dedup();
    order.extend(rest.into_iter().map(str::to_owned));
    order
}

/// Every candidate ranked for a viewer of `channel` in `region`: by region order, then by score
/// within a region. The first is where `/play` sends the viewer; the whole list is the steering
/// answer's `PATHWAY-PRIORITY`.
pub fn rank(channel: &str, region: &str, map: &RegionMap, candidates: &[Candidate]) -> Vec<Candidate> {
    let regions: Vec<&str> = candidates.iter().map(|c| c.region.as_str()).collect();
    let order = region_order(region, map, &regions);
    let mut ranked: Vec<(usize, f64, &Candidate)> = candidates
        .iter()
        .map(|c| (order.iter().position(|r| r == &c.region).unwrap_or(usize::MAX), score(channel, c), c))
        .collect();
    // Ties (equal scores are all but impossible) fall back to the node id, so the order is total.
    ranked.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)).then(a.2.node_id.cmp(&b.2.node_id)));
    ranked.into_iter().map(|(_, _, c)| c.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::state::regions::RegionRecord;

    fn edge(node_id: NodeId, region: &str, weight: f64) -> Candidate {
        Candidate { node_id, region: region.into(), base_url: format!("http://e{node_id}"), weight }
    }

    fn map() -> RegionMap {
        RegionMap::with_records([
            RegionRecord { name: "a".into(), neighbours: vec!["b".into()], ..Default::default() },
            RegionRecord { name: "b".into(), neighbours: vec!["c".into()], ..Default::default() },
        ])
    }

    #[test]
    fn the_viewers_region_comes_first_then_neighbours_then_the_rest() {
        assert_eq!(region_order("a", &map(), &["z", "c", "b", "a", "y"]), ["a", "b", "c", "y", "z"]);
        assert_eq!(region_order("c", &map(), &["a", "b"]), ["c", "a", "b"]);
        let edges = [edge(1, "b", 1.0), edge(2, "c", 1.0), edge(3, "a", 1.0), edge(4, "a", 1.0)];
        let ids = |region| rank("ch", region, &map(), &edges).iter().map(|c| c.node_id).collect::<Vec<_>>();
        let from_a = ids("a");
        assert!(from_a[..2].contains(&3) && from_a[..2].contains(&4), "{from_a:?}");
        assert_eq!(from_a[2..], [1, 2]);
        assert_eq!(ids("b")[..2], [1, 2]);
        assert_eq!(ids("c")[0], 2);
    }

    #[test]
    fn one_channel_sticks_to_one_edge_and_channels_spread() {
        let edges: Vec<Candidate> = (1..=4).map(|id| edge(id, "a", 1.0)).collect();
        let mut per_edge = [0usize; 5];
        for i in 0..4000 {
            let channel = format!("channel-{i}");
            let first = rank(&channel, "a", &map(), &edges)[0].node_id;
            assert_eq!(rank(&channel, "a", &map(), &edges)[0].node_id, first, "same answer every time");
            per_edge[first as usize] += 1;
        }
        for count in &per_edge[1..] {
            assert!((800..1200).contains(count), "uneven spread: {per_edge:?}");
        }
    }

    #[test]
    fn removing_an_edge_moves_only_its_channels() {
        let edges: Vec<Candidate> = (1..=4).map(|id| edge(id, "a", 1.0)).collect();
        let without: Vec<Candidate> = edges.iter().filter(|e| e.node_id != 2).cloned().collect();
        for i in 0..1000 {
            let channel = format!("c{i}");
            let before = rank(&channel, "a", &map(), &edges)[0].node_id;
            let after = rank(&channel, "a", &map(), &without)[0].node_id;
            if before != 2 {
                assert_eq!(before, after, "{channel} moved although its edge stayed");
            }
        }
    }

    #[test]
    fn a_loaded_edge_sheds_channels_in_proportion() {
        let edges = [edge(1, "a", 1.0), edge(2, "a", 0.2)];
        let on_busy = (0..5000).filter(|i| rank(&format!("c{i}"), "a", &map(), &edges)[0].node_id == 2).count();
        // Weights 1 : 0.2 give the busy edge about a sixth of the channels.
        assert!((600..1100).contains(&on_busy), "{on_busy}");
    }

    #[test]
    fn spare_capacity_is_coarse_and_bounded() {
        let report = |cpu, connections, egress| LoadReport {
            cpu_permille: cpu,
            connections,
            egress_bps: egress,
            ..Default::default()
        };
        assert_eq!(spare_capacity(None), 1.0);
        assert_eq!(spare_capacity(Some(&report(40, 3, 1000))), 1.0);
        assert_eq!(spare_capacity(Some(&report(43, 3, 1000))), spare_capacity(Some(&report(61, 9, 9000))));
        assert_eq!(spare_capacity(Some(&report(0, 2500, 0))), 0.5);
        assert_eq!(spare_capacity(Some(&report(u32::MAX, u32::MAX, u64::MAX))), 0.1);
    }
}
