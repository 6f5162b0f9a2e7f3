//! Where a live channel is packaged: the origins of its home region, ranked for it.
//!
//! Every node computes the same answer from its catalog replica, with no coordination: the
//! candidates are the origin-role nodes of the channel's home region (a publish that arrived at
//! an ingest node of another region is relayed home), or of the ingest node's region when the
//! home region has none, not draining and healthy (their last load report is no more than
//! [`HEALTHY_WITHIN_MILLIS`] older than the newest report anyone made, so the test uses
//! replicated figures only, never the local clock), ranked by rendezvous hashing of
//! (channel, node). The first [`ORIGINS_PER_CHANNEL`] package it: the primary, then the standby;
//! both subscribe to the track, so either can serve at any moment. Rendezvous hashing keeps a
//! channel where it is when other nodes come and go: only channels placed on a node that left
//! move.

use raft::state::CatalogState;
use raft::{LiveState, NodeId, NodeInfo};

/// Primary and standby.
pub const ORIGINS_PER_CHANNEL: usize = 2;
/// A node whose last load report is this much older than the newest one is not placed on (it
/// reports every 500 ms).
pub const HEALTHY_WITHIN_MILLIS: i64 = 3_000;
const ORIGIN_ROLE: &str = "origin";
const EDGE_ROLE: &str = "edge";
const TRANSCODE_ROLE: &str = "transcode";

/// Whether placement may give `node` channels it then subscribes to over the relay (as an origin
/// of the channel, or the transcoder of its ladder).
pub fn subscribes(node: &NodeInfo) -> bool {
    node.roles.iter().any(|r| r == ORIGIN_ROLE || r == TRANSCODE_ROLE)
}

/// Who ingests and who packages one live channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The node holding the channel's ingest session (it publishes the source track).
    pub ingest: NodeId,
    pub session: String,
    /// The origins of the channel, primary first; may include `ingest` itself when it has the
    /// origin role (it then packages in-process).
    pub origins: Vec<NodeId>,
    /// The node running the channel's ladder (publishing its rungs): `ingest` itself when it
    /// transcodes, else a transcode node of its region; `None`: `source` only.
    pub transcoder: Option<NodeId>,
}

/// The placement of live channel `channel_id`; `None` when it is not live or has no ingest node.
pub fn place(s: &CatalogState, channel_id: &str) -> Option<Placement> {
    let channel = s.channel(channel_id).filter(|c| c.live_state == LiveState::Live)?;
    let session = s.session(channel.current_session_id.as_deref()?)?;
    let ingest = session.ingest_node?;
    let ingest_region = s.node(ingest).map(|n| n.region.clone()).unwrap_or_default();
    let newest = s.nodes().filter_map(|n| s.load_of(n.id)).map(|l| l.at).max().unwrap_or(0);
    let ready_in = |region: &str, role: &str| -> Vec<NodeId> {
        s.nodes()
            .filter(|n| n.region == region && n.roles.iter().any(|r| r == role))
            .filter(|n| !s.is_draining(n.id))
            .filter(|n| s.load_of(n.id).is_some_and(|l| newest - l.at <= HEALTHY_WITHIN_MILLIS))
            .map(|n| n.id)
            .collect()
    };
    let origins_in = |region: &str| ready_in(region, ORIGIN_ROLE);
    let candidates = s
        .home_region(channel_id)
        .filter(|home| *home != ingest_region)
        .map(origins_in)
        .filter(|home_origins| !home_origins.is_empty())
        .unwrap_or_else(|| origins_in(&ingest_region));
    let mut origins = rank(channel_id, &candidates);
    origins.truncate(ORIGINS_PER_CHANNEL);
    let transcodes_itself = s.node(ingest).is_some_and(|n| n.roles.iter().any(|r| r == TRANSCODE_ROLE));
    let transcoder = if transcodes_itself {
        Some(ingest)
    } else {
        rank(channel_id, &ready_in(&ingest_region, TRANSCODE_ROLE)).first().copied()
    };
    Some(Placement { ingest, session: session.id.clone(), origins, transcoder })
}

/// `nodes` in rendezvous order for `channel_id`, best first: how [`place`] ranks the eligible
/// origins (public so tests and tools can tell which origin is a channel's primary).
pub fn rank(channel_id: &str, nodes: &[NodeId]) -> Vec<NodeId> {
    let mut scored: Vec<(u64, NodeId)> = nodes.iter().map(|&n| (rendezvous(channel_id, n), n)).collect();
    scored.sort_by(|a, b| b.cmp(a));
    scored.into_iter().map(|(_, n)| n).collect()
}

/// The regional shield of `channel_id` in `region`: the edge of that region that fetches the
/// channel from its origins for the region's other edges, so each object crosses regions once per
/// region. Ready edges only (reporting, not draining), ranked by the same rendezvous hash as
/// origins, so every node of the region names the same one and a channel keeps it.
pub fn shield(s: &CatalogState, channel_id: &str, region: &str) -> Option<NodeId> {
    let newest = s.nodes().filter_map(|n| s.load_of(n.id)).map(|l| l.at).max().unwrap_or(0);
    let edges: Vec<NodeId> = s
        .nodes()
        .filter(|n| n.region == region && n.roles.iter().any(|r| r == EDGE_ROLE))
        .filter(|n| n.addresses.iter().any(|(name, _)| name == "edge"))
        .filter(|n| !s.is_draining(n.id))
        .filter(|n| s.load_of(n.id).is_some_and(|l| newest - l.at <= HEALTHY_WITHIN_MILLIS))
        .map(|n| n.id)
        .collect();
    rank(channel_id, &edges).first().copied()
}

/// The live channels this node should subscribe to: placed on it, ingested elsewhere.
/// `(channel id, placement)`.
pub fn subscriptions_of(s: &CatalogState, me: NodeId) -> Vec<(String, Placement)> {
    s.channels()
        .filter(|c| c.live_state == LiveState::Live)
        .filter_map(|c| Some((c.id.clone(), place(s, &c.id)?)))
        .filter(|(_, p)| p.ingest != me && p.origins.contains(&me))
        .collect()
}

/// The live channels whose ladder this node should run for another ingest node.
pub fn transcodes_of(s: &CatalogState, me: NodeId) -> Vec<(String, Placement)> {
    s.channels()
        .filter(|c| c.live_state == LiveState::Live)
        .filter_map(|c| Some((c.id.clone(), place(s, &c.id)?)))
        .filter(|(_, p)| p.ingest != me && p.transcoder == Some(me))
        .collect()
}

/// Rendezvous (highest random weight) score of `node` for `channel`: the catalog's one hash
/// ([`raft::placement::rendezvous_score`]), so every node of a fleet ranks alike.
fn rendezvous(channel: &str, node: NodeId) -> u64 {
    raft::placement::rendezvous_score(channel, node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::{Channel, Command, LoadReport, NodeInfo, NodeLoad, StreamSession, User};

    fn node(id: u64, region: &str, roles: &[&str]) -> Command {
        Command::UpsertNode(NodeInfo {
            id,
            region: region.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            addresses: vec![("http".into(), format!("10.0.0.{id}:8080"))],
            load: NodeLoad::default(),
            updated_at: 1,
        })
    }

    fn report(id: u64, at: i64) -> Command {
        Command::ReportLoad(LoadReport { node_id: id, at, ..LoadReport::default() })
    }

    /// Node 1 ingests `c1`..`c40` in eu; nodes 2..=5 are eu origins, 6 a us origin, 7 an eu edge.
    fn replica() -> CatalogState {
        let mut s = CatalogState::default();
        let mut commands = vec![
            node(1, "eu", &["ingest"]),
            node(2, "eu", &["origin"]),
            node(3, "eu", &["origin", "edge"]),
            node(4, "eu", &["origin"]),
            node(5, "eu", &["origin"]),
            node(6, "us", &["origin"]),
            node(7, "eu", &["edge"]),
            Command::CreateUser(User {
                id: "u1".into(),
                display_name: "U".into(),
                email: "u@example.com".into(),
                roles: vec![],
                password_hash: None,
                created_at: 1,
            }),
        ];
        for id in 1..=7 {
            commands.push(report(id, 10_000));
        }
        for i in 1..=40 {
            commands.push(Command::CreateChannel(Channel {
                id: format!("c{i}"),
                owner_id: "u1".into(),
                title: "C".into(),
                category: None,
                tags: vec![],
                stream_key_hash: format!("k{i}"),
                live_state: LiveState::Offline,
                current_session_id: None,
                moderators: vec![],
                created_at: 1,
                updated_at: 1,
            }));
            commands.push(Command::StartSession(StreamSession {
                id: format!("s{i}"),
                channel_id: format!("c{i}"),
                started_at: 10,
                ended_at: None,
                renditions: vec![],
                peak_concurrent: 0,
                ingest_node: Some(1),
            }));
        }
        for (i, command) in commands.into_iter().enumerate() {
            s.apply(i as u64 + 1, &command).0.unwrap();
        }
        s
    }

    #[test]
    fn two_healthy_origins_of_the_ingest_region_spread_by_channel() {
        let s = replica();
        let mut primaries = std::collections::BTreeMap::new();
        for i in 1..=40 {
            let p = place(&s, &format!("c{i}")).unwrap();
            assert_eq!(p.ingest, 1);
            assert_eq!(p.origins.len(), 2, "{p:?}");
            assert!(p.origins.iter().all(|o| (2..=5).contains(o)), "eu origins only: {p:?}");
            assert_ne!(p.origins[0], p.origins[1]);
            *primaries.entry(p.origins[0]).or_insert(0) += 1;
        }
        assert_eq!(primaries.len(), 4, "every origin is primary for some channel: {primaries:?}");
        assert!(place(&s, "nope").is_none());
    }

    #[test]
    fn a_publish_outside_the_home_region_is_packaged_at_home() {
        let mut s = replica();
        // c1's owner moves it to us (node 6 is the one us origin); it is still ingested in eu.
        s.apply(900, &Command::SetHomeRegion { channel_id: "c1".into(), region: Some("us".into()) }).0.unwrap();
        assert_eq!(place(&s, "c1").unwrap().origins, [6]);
        // A home region without a ready origin: packaged where it is ingested.
        s.apply(901, &node(8, "ap", &["ingest"])).0.unwrap();
        s.apply(902, &Command::SetHomeRegion { channel_id: "c2".into(), region: Some("ap".into()) }).0.unwrap();
        assert!(place(&s, "c2").unwrap().origins.iter().all(|o| (2..=5).contains(o)));
    }

    #[test]
    fn a_silent_or_draining_origin_loses_only_its_own_channels() {
        let mut s = replica();
        let before: Vec<_> = (1..=40).map(|i| place(&s, &format!("c{i}")).unwrap().origins).collect();
        // Node 2 stops reporting while the others go on: after 3 s it is no longer placed on.
        let mut index = 1000;
        for id in [1, 3, 4, 5, 6, 7] {
            index += 1;
            s.apply(index, &report(id, 13_500)).0.unwrap();
        }
        let after: Vec<_> = (1..=40).map(|i| place(&s, &format!("c{i}")).unwrap().origins).collect();
        for (b, a) in before.iter().zip(&after) {
            assert!(!a.contains(&2), "{a:?}");
            if !b.contains(&2) {
                assert_eq!(a, b, "channels not on node 2 stay where they were");
            } else {
                let kept: Vec<_> = b.iter().filter(|&&o| o != 2).collect();
                assert_eq!(a[0], *kept[0], "the standby takes over as primary");
            }
        }
        s.apply(index + 1, &Command::SetDraining { node_id: 3, draining: true }).0.unwrap();
        for i in 1..=40 {
            assert!(!place(&s, &format!("c{i}")).unwrap().origins.contains(&3));
        }
        let subs = subscriptions_of(&s, 4);
        assert!(place(&s, "c1").unwrap().transcoder.is_none(), "no transcode node, no ladder");
        assert!(!subs.is_empty() && subs.iter().all(|(_, p)| p.origins.contains(&4)));
        assert!(subscriptions_of(&s, 1).is_empty(), "the ingest node does not subscribe to itself");
    }

    #[test]
    fn the_ladder_runs_on_the_ingest_node_or_on_a_transcode_node_of_its_region() {
        let mut s = replica();
        let mut index = 2000;
        let mut apply = |s: &mut CatalogState, command: Command| {
            index += 1;
            s.apply(index, &command).0.unwrap();
        };
        apply(&mut s, node(8, "eu", &["transcode"]));
        apply(&mut s, node(9, "eu", &["transcode"]));
        apply(&mut s, node(10, "us", &["transcode"]));
        for id in [8, 9, 10] {
            apply(&mut s, report(id, 10_000));
        }
        let before: Vec<_> = (1..=40).map(|i| place(&s, &format!("c{i}")).unwrap().transcoder).collect();
        assert!(before.iter().all(|t| matches!(t, Some(8 | 9))), "eu transcoders only: {before:?}");
        assert!(before.contains(&Some(8)) && before.contains(&Some(9)), "spread by channel: {before:?}");
        let on_8 = transcodes_of(&s, 8).len();
        assert_eq!(on_8, before.iter().filter(|t| **t == Some(8)).count());
        // Node 8 goes silent: its channels move to 9, the others stay.
        for id in [1, 2, 3, 4, 5, 6, 7, 9, 10] {
            apply(&mut s, report(id, 14_000));
        }
        assert!((1..=40).all(|i| place(&s, &format!("c{i}")).unwrap().transcoder == Some(9)));
        assert!(transcodes_of(&s, 8).is_empty());
        // An ingest node that transcodes keeps its ladder in-process.
        apply(&mut s, node(1, "eu", &["ingest", "transcode"]));
        assert!((1..=40).all(|i| place(&s, &format!("c{i}")).unwrap().transcoder == Some(1)));
        assert!(transcodes_of(&s, 9).is_empty() && transcodes_of(&s, 1).is_empty());
    }
}
