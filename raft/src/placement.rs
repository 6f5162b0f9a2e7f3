//! Choosing nodes for a channel from the replicated directory: any node answers the same way from
//! its own replica, with no coordinator.
//!
//! A node is *ready* for new work when it reported its load recently (it is alive and reaches the
//! catalog) and is not draining. Among ready nodes of a role, the channel's home region comes
//! first, then coarse load (CPU in steps of [`LOAD_STEP_PERMILLE`], so that noise does not move a
//! channel), then rendezvous hashing of the channel over the nodes: a channel keeps landing on the
//! same node while the fleet is unchanged, and when a node goes only its channels move.

use crate::state::CatalogState;
use crate::types::{NodeId, NodeInfo, UnixMillis};

/// CPU per mille of one core that counts as one step of load when ranking nodes.
pub const LOAD_STEP_PERMILLE: u32 = 250;

/// The rendezvous (highest random weight) score of `node` for `key`: a stable 64-bit hash of the
/// pair (FNV-1a, then a SplitMix64 finaliser to spread nearby node ids), the same on every
/// machine and every build, unlike std's `DefaultHasher`.
pub fn rendezvous_score(key: &str, node: NodeId) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes().chain([0xff]).chain(node.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

impl CatalogState {
    /// Whether `node` reported its load within [`crate::load::REPORT_STALE_AFTER_MS`] of `now` and is not
    /// draining.
    pub fn is_ready(&self, node: NodeId, now: UnixMillis) -> bool {
        self.reports_fresh(node, now) && !self.is_draining(node)
    }

    /// Ready nodes with `role` for `channel_id`, best first: the `region` ones (when given) before
    /// the others, then by load step, then by rendezvous score.
    pub fn rank_for_channel(
        &self,
        role: &str,
        channel_id: &str,
        region: Option<&str>,
        now: UnixMillis,
    ) -> Vec<&NodeInfo> {
        let mut ready: Vec<(bool, u32, std::cmp::Reverse<u64>, &NodeInfo)> = self
            .nodes()
            .filter(|n| n.roles.iter().any(|r| r == role) && self.is_ready(n.id, now))
            .map(|n| {
                let away = region.is_some_and(|r| r != n.region);
                let step = self.load_of(n.id).map_or(0, |l| l.cpu_permille / LOAD_STEP_PERMILLE);
                (away, step, std::cmp::Reverse(rendezvous_score(channel_id, n.id)), n)
            })
            .collect();
        ready.sort_by_key(|(away, step, score, n)| (*away, *step, *score, n.id));
        ready.into_iter().map(|(.., n)| n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::load::{LoadReport, REPORT_STALE_AFTER_MS};
    use crate::types::NodeLoad;

    fn node(id: NodeId, region: &str, roles: &[&str]) -> Command {
        Command::UpsertNode(NodeInfo {
            id,
            region: region.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            addresses: vec![],
            load: NodeLoad::default(),
            updated_at: 0,
        })
    }

    fn report(node_id: NodeId, cpu_permille: u32, at: UnixMillis) -> Command {
        Command::ReportLoad(LoadReport { node_id, cpu_permille, at, ..LoadReport::default() })
    }

    fn state(commands: &[Command]) -> CatalogState {
        let mut s = CatalogState::default();
        for (i, c) in commands.iter().enumerate() {
            let (result, _) = s.apply(i as u64 + 1, c);
            result.unwrap();
        }
        s
    }

    fn ids(nodes: Vec<&NodeInfo>) -> Vec<NodeId> {
        nodes.into_iter().map(|n| n.id).collect()
    }

    #[test]
    fn scores_are_stable_and_spread() {
        // Fixed values: a change of the hash would move every channel of a running fleet.
        assert_eq!(rendezvous_score("c1", 1), rendezvous_score("c1", 1));
        assert_ne!(rendezvous_score("c1", 1), rendezvous_score("c1", 2));
        assert_ne!(rendezvous_score("c1", 1), rendezvous_score("c2", 1));
        // Over many channels each of four nodes wins about a quarter.
        let mut wins = [0u32; 4];
        for c in 0..4000 {
            let key = format!("channel-{c}");
            let best = (0..4u64).max_by_key(|n| rendezvous_score(&key, *n)).unwrap();
            wins[best as usize] += 1;
        }
        assert!(wins.iter().all(|w| (800..1200).contains(w)), "{wins:?}");
    }

    #[test]
    fn home_region_first_then_load_then_hash_and_only_ready_nodes() {
        let now = 10_000;
        let s = state(&[
            node(1, "eu", &["ingest"]),
            node(2, "eu", &["ingest"]),
            node(3, "us", &["ingest"]),
            node(4, "eu", &["edge"]),
            node(5, "eu", &["ingest"]),
            report(1, 300, now - 100),
            report(2, 300, now - 100),
            report(3, 0, now - 100),
            report(4, 0, now - 100),
            report(5, 0, now - REPORT_STALE_AFTER_MS - 1), // stale: not ready
        ]);
        let eu = ids(s.rank_for_channel("ingest", "c1", Some("eu"), now));
        assert_eq!(eu.len(), 3, "{eu:?}");
        assert_eq!(eu[2], 3, "the other region comes last: {eu:?}");
        let by_hash = if rendezvous_score("c1", 1) > rendezvous_score("c1", 2) { [1, 2] } else { [2, 1] };
        assert_eq!(eu[..2], by_hash);
        // Without a region, the idle node leads (a lower load step).
        assert_eq!(ids(s.rank_for_channel("ingest", "c1", None, now))[0], 3);

        // A busier node drops behind; a draining one disappears.
        let mut busy = s.clone();
        busy.apply(100, &report(by_hash[0], 900, now)).0.unwrap();
        assert_eq!(ids(busy.rank_for_channel("ingest", "c1", Some("eu"), now))[0], by_hash[1]);
        busy.apply(101, &Command::SetDraining { node_id: by_hash[1], draining: true }).0.unwrap();
        assert_eq!(ids(busy.rank_for_channel("ingest", "c1", Some("eu"), now)), vec![by_hash[0], 3]);
    }
}
