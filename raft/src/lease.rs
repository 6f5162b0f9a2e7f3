//! Ingest leases: which node holds the publish of each live channel, for how long.
//!
//! A session started by an ingest node ([`Command::StartSession`] with `ingest_node`) grants that
//! node the channel's lease in the same apply: one lease per live channel, so one publisher per
//! channel fleet-wide (a second `StartSession` is refused as already live). The lease's fencing
//! token is the log position (term and index) of the entry that granted it; the holder renews
//! by naming it ([`Command::RenewIngestLeases`], one command for all its channels), so a holder
//! whose lease was taken away is told so at its next renewal and stops publishing.
//!
//! Expiry needs no clock in `apply`. The leader watches each lease's `version` (the position of
//! its last grant or renewal) on its own monotonic clock; when a version has not changed for the
//! lease's TTL, it proposes [`Command::ExpireIngestLease`] naming that version, which applies
//! only if no renewal got into the log first. A new leader knows nothing of when renewals
//! arrived under the previous term, so it starts every lease's clock when it takes office: a
//! leader change can delay an expiry by one TTL, never hasten one. An expiry ends the session
//! at the holder's last renewal (the last moment it was known to be alive) and takes the
//! channel offline: a holder that died (kill -9, power loss) does not leave its channel live.
//!
//! Same contract as [`crate::state`] for the tables: deterministic, every change returned as
//! [`Mutation`]s, and `load_record` rebuilding exactly what applying built.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::catalog::{Catalog, ProposeError};
use crate::codec::{self, CodecError};
use crate::command::{ApplyResult, CatalogError, Command, Response};
use crate::now_millis;
use crate::state::{delete, put, CatalogState, Mutation};
use crate::types::{LiveState, NodeId, StreamSession, UnixMillis};

/// How long a lease lives without a renewal (leader's clock).
pub const INGEST_LEASE_TTL: Duration = Duration::from_secs(5);
/// How often a holder renews: several renewals fit in one TTL, so one lost renewal (or a leader
/// election) does not cost the lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often the leader looks for expired leases.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

mod key {
    pub(super) const LEASE: &str = "lease/";
}

/// The lease on a live channel's publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct IngestLease {
    pub channel_id: String,
    pub session_id: String,
    #[cfg_attr(feature = "utoipa", schema(value_type = u64))]
    pub holder: NodeId,
    /// Fencing token: the position (`index × MAX_BATCH + batch position`) of the entry that
    /// granted the lease. Renewals must name it.
    pub token: u64,
    /// Raft term of the entry that granted the lease.
    pub term: u64,
    #[cfg_attr(feature = "utoipa", schema(value_type = i64))]
    pub granted_at: UnixMillis,
    /// The holder's clock at its last renewal (the session start before the first one): where
    /// the session ends if the lease expires.
    #[cfg_attr(feature = "utoipa", schema(value_type = i64))]
    pub renewed_at: UnixMillis,
    /// Position of the last grant or renewal; an expiry names the version it judged.
    pub version: u64,
    pub ttl_ms: u64,
}

/// A holder's claim on one lease, in a renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseClaim {
    pub channel_id: String,
    pub token: u64,
}

/// Lease table. `term` is the Raft term of the entry being applied (set by the store before
/// each apply); it is not state, so it takes no part in equality.
#[derive(Debug, Default, Clone)]
pub struct LeaseTable {
    leases: BTreeMap<String, IngestLease>,
    term: u64,
}

impl PartialEq for LeaseTable {
    fn eq(&self, other: &Self) -> bool {
        self.leases == other.leases
    }
}

fn lease_key(channel_id: &str) -> String {
    format!("{}{channel_id}", key::LEASE)
}

impl LeaseTable {
    /// Load one record if its key belongs here; `Ok(false)` for keys of other tables.
    pub(crate) fn load_record(&mut self, key: &str, value: &[u8]) -> Result<bool, CodecError> {
        if !key.starts_with(key::LEASE) {
            return Ok(false);
        }
        let lease: IngestLease = codec::decode(value)?;
        self.leases.insert(lease.channel_id.clone(), lease);
        Ok(true)
    }

    pub(crate) fn set_term(&mut self, term: u64) {
        self.term = term;
    }
}

impl CatalogState {
    /// The lease on a channel's publish, if the channel is live from an ingest node.
    pub fn ingest_lease(&self, channel_id: &str) -> Option<&IngestLease> {
        self.leases.leases.get(channel_id)
    }

    pub fn ingest_leases(&self) -> impl Iterator<Item = &IngestLease> {
        self.leases.leases.values()
    }

    /// Apply one command at `index`, which the Raft entry of term `term` carries.
    pub fn apply_in_term(&mut self, term: u64, index: u64, command: &Command) -> (ApplyResult, Vec<Mutation>) {
        self.leases.set_term(term);
        self.apply(index, command)
    }

    /// `StartSession` applied: its ingest node gets the channel's lease.
    pub(crate) fn grant_ingest_lease(&mut self, seq: u64, session: &StreamSession, out: &mut Vec<Mutation>) {
        let Some(holder) = session.ingest_node else { return };
        let lease = IngestLease {
            channel_id: session.channel_id.clone(),
            session_id: session.id.clone(),
            holder,
            token: seq,
            term: self.leases.term,
            granted_at: session.started_at,
            renewed_at: session.started_at,
            version: seq,
            ttl_ms: INGEST_LEASE_TTL.as_millis() as u64,
        };
        out.push(put(lease_key(&lease.channel_id), codec::encode(&lease)));
        self.leases.leases.insert(lease.channel_id.clone(), lease);
    }

    /// The channel's session ended (however): its lease goes.
    pub(crate) fn release_ingest_lease(&mut self, channel_id: &str, out: &mut Vec<Mutation>) {
        if self.leases.leases.remove(channel_id).is_some() {
            out.push(delete(lease_key(channel_id)));
        }
    }

    pub(crate) fn apply_lease(&mut self, seq: u64, command: &Command, out: &mut Vec<Mutation>) -> ApplyResult {
        match command {
            Command::RenewIngestLeases { holder, leases, at } => {
                let mut lost = Vec::new();
                for claim in leases {
                    match self.leases.leases.get_mut(&claim.channel_id) {
                        Some(lease) if lease.holder == *holder && lease.token == claim.token => {
                            // Never backwards: a delayed renewal must not move the end of a session earlier.
                            lease.renewed_at = lease.renewed_at.max(*at);
                            lease.version = seq;
                            out.push(put(lease_key(&lease.channel_id), codec::encode(&*lease)));
                        }
                        _ => lost.push(claim.channel_id.clone()),
                    }
                }
                Ok(Response::LostLeases(lost))
            }
            Command::ExpireIngestLease { channel_id, version } => {
                let lease = match self.leases.leases.get(channel_id) {
                    Some(lease) if lease.version == *version => lease.clone(),
                    Some(_) => return Err(CatalogError::invalid("version", "the lease was renewed meanwhile")),
                    None => return Err(CatalogError::not_found("lease", channel_id)),
                };
                self.release_ingest_lease(channel_id, out);
                let ended = self.end_session_of_lease(&lease, out);
                Ok(ended.map(Response::Session).unwrap_or(Response::Done))
            }
            other => Err(CatalogError::invalid("command", &format!("not a lease command: {other:?}"))),
        }
    }

    /// Ends the lease's session at the holder's last renewal, if it is still the channel's
    /// current one.
    fn end_session_of_lease(&mut self, lease: &IngestLease, out: &mut Vec<Mutation>) -> Option<StreamSession> {
        let mut channel = self.channel(&lease.channel_id)?.clone();
        if channel.live_state != LiveState::Live || channel.current_session_id.as_deref() != Some(&lease.session_id) {
            return None;
        }
        let mut session = self.session(&lease.session_id)?.clone();
        session.ended_at = Some(lease.renewed_at.max(session.started_at));
        channel.live_state = LiveState::Offline;
        channel.current_session_id = None;
        channel.updated_at = lease.renewed_at;
        self.put_channel_record(channel, out);
        self.put_session_record(session.clone(), out);
        Some(session)
    }
}

/// The leader's side: expire the leases whose holders stopped renewing. Runs on every node and
/// acts only while this node leads (see the module doc for why a new leader waits a full TTL).
pub(crate) async fn expire_on_leader(catalog: Catalog) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Lease -> (version last seen, when it was first seen at that version), this term only.
    let mut seen: HashMap<String, (u64, Instant)> = HashMap::new();
    let mut term = None;
    loop {
        tick.tick().await;
        let metrics = catalog.raft().metrics().borrow().clone();
        if metrics.state != ServerState::Leader || term != Some(metrics.current_term) {
            seen.clear();
            term = (metrics.state == ServerState::Leader).then_some(metrics.current_term);
            if term.is_none() {
                continue;
            }
        }
        let now = Instant::now();
        let leases: Vec<(String, u64, u64)> =
            catalog.read(|s| s.ingest_leases().map(|l| (l.channel_id.clone(), l.version, l.ttl_ms)).collect());
        let present: HashSet<&str> = leases.iter().map(|(c, _, _)| c.as_str()).collect();
        seen.retain(|c, _| present.contains(c.as_str()));
        for (channel_id, version, ttl_ms) in &leases {
            let entry = seen.entry(channel_id.clone()).or_insert((*version, now));
            if entry.0 != *version {
                *entry = (*version, now);
            }
            if now.duration_since(entry.1) < Duration::from_millis(*ttl_ms) {
                continue;
            }
            let command = Command::ExpireIngestLease { channel_id: channel_id.clone(), version: *version };
            match catalog.propose(command).await {
                Ok(Response::Session(session)) => tracing::warn!(
                    channel = %channel_id, session = %session.id, ended_at = ?session.ended_at,
                    "ingest lease expired: the holder stopped renewing; session ended at its last renewal"
                ),
                Ok(_) => tracing::info!(channel = %channel_id, "ingest lease expired"),
                // Renewed meanwhile, or already gone: the next sweep sees the new state.
                Err(ProposeError::Rejected(_)) => {}
                Err(error) => tracing::debug!(channel = %channel_id, %error, "lease expiry not committed"),
            }
        }
    }
}

/// The holder's side: every [`RENEW_EVERY`], renew the leases of the channels `active` says this
/// node is still publishing, in one command. `lost` is called for each channel whose lease this
/// node no longer holds (refused renewal), and for every claimed channel when no renewal has
/// gone through for a whole TTL (the leader may have expired them): the caller must stop those
/// publishes, so that two nodes never publish one channel for long.
pub async fn renew_ingest_leases<A, L>(catalog: Catalog, active: A, lost: L)
where
    A: Fn() -> HashSet<String> + Send,
    L: Fn(&str) + Send,
{
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let me = catalog.node_id();
    let mut last_renewed = Instant::now();
    loop {
        tick.tick().await;
        let active = active();
        let claims: Vec<LeaseClaim> = catalog.read(|s| {
            s.ingest_leases()
                .filter(|l| l.holder == me && active.contains(&l.channel_id))
                .map(|l| LeaseClaim { channel_id: l.channel_id.clone(), token: l.token })
                .collect()
        });
        if claims.is_empty() {
            last_renewed = Instant::now();
            continue;
        }
        let sent = Instant::now();
        let command = Command::RenewIngestLeases { holder: me, leases: claims.clone(), at: now_millis() };
        let outcome = tokio::time::timeout(INGEST_LEASE_TTL / 2, catalog.propose(command)).await;
        match outcome {
            Ok(Ok(Response::LostLeases(gone))) => {
                last_renewed = sent;
                for channel in gone {
                    tracing::warn!(%channel, "ingest lease lost (expired or taken over); stopping the publish");
                    lost(&channel);
                }
            }
            Ok(Ok(other)) => tracing::warn!(reply = ?other, "unexpected answer to a lease renewal"),
            Ok(Err(error)) => tracing::warn!(%error, "ingest lease renewal failed"),
            Err(_) => tracing::warn!("ingest lease renewal timed out"),
        }
        if sent.duration_since(last_renewed) >= INGEST_LEASE_TTL {
            for claim in &claims {
                tracing::warn!(channel = %claim.channel_id,
                    "no lease renewal went through for a whole TTL; stopping the publish");
                lost(&claim.channel_id);
            }
            last_renewed = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::replica::Replica;
    use crate::types::{Channel, User};

    impl Replica {
        /// The answer alone.
        fn run(&mut self, command: Command) -> ApplyResult {
            self.apply(command).0
        }

        /// Position (token or version) of the last applied command.
        fn seq(&self) -> u64 {
            self.index * crate::command::MAX_BATCH as u64
        }
    }

    fn replica() -> Replica {
        let mut r = Replica { term: 3, ..Replica::default() };
        r.run(Command::CreateUser(User {
            id: "u1".into(),
            display_name: "U".into(),
            email: "u@example.com".into(),
            roles: vec![],
            password_hash: None,
            created_at: 1,
        }))
        .unwrap();
        r.run(Command::CreateChannel(Channel {
            id: "c1".into(),
            owner_id: "u1".into(),
            title: "C".into(),
            category: None,
            tags: vec![],
            stream_key_hash: "k1".into(),
            live_state: LiveState::Offline,
            current_session_id: None,
            moderators: vec![],
            created_at: 1,
            updated_at: 1,
        }))
        .unwrap();
        r
    }

    fn session(id: &str, node: Option<NodeId>, started_at: UnixMillis) -> StreamSession {
        StreamSession {
            id: id.into(),
            channel_id: "c1".into(),
            started_at,
            ended_at: None,
            renditions: vec![],
            peak_concurrent: 0,
            ingest_node: node,
        }
    }

    fn renew(holder: NodeId, token: u64, at: UnixMillis) -> Command {
        Command::RenewIngestLeases { holder, leases: vec![LeaseClaim { channel_id: "c1".into(), token }], at }
    }

    #[test]
    fn a_publish_holds_the_lease_and_renewals_name_its_token() {
        let mut r = replica();
        r.run(Command::StartSession(session("s1", Some(2), 1_000))).unwrap();
        let lease = r.state.ingest_lease("c1").cloned().expect("StartSession grants the lease");
        assert_eq!((lease.holder, lease.session_id.as_str(), lease.term), (2, "s1", 3));
        assert_eq!((lease.token, lease.version, lease.renewed_at), (r.seq(), r.seq(), 1_000));

        assert_eq!(r.run(renew(2, lease.token, 2_000)), Ok(Response::LostLeases(vec![])));
        let renewed = r.state.ingest_lease("c1").unwrap().clone();
        assert_eq!((renewed.renewed_at, renewed.version), (2_000, r.seq()));
        // A delayed renewal does not move the last-seen time backwards.
        r.run(renew(2, lease.token, 1_500)).unwrap();
        assert_eq!(r.state.ingest_lease("c1").unwrap().renewed_at, 2_000);

        // Another node, or a stale token: not the holder.
        assert_eq!(r.run(renew(3, lease.token, 2_100)), Ok(Response::LostLeases(vec!["c1".into()])));
        assert_eq!(r.run(renew(2, lease.token + 1, 2_100)), Ok(Response::LostLeases(vec!["c1".into()])));

        // A second publisher anywhere is refused while the lease is held.
        assert!(matches!(
            r.run(Command::StartSession(session("s2", Some(3), 2_200))),
            Err(CatalogError::AlreadyLive { .. })
        ));

        // The publish ends normally: the lease goes; the old holder's next renewal learns it.
        r.run(Command::EndSession { channel_id: "c1".into(), ended_at: 3_000, peak_concurrent: None }).unwrap();
        assert!(r.state.ingest_lease("c1").is_none());
        assert_eq!(r.run(renew(2, lease.token, 3_100)), Ok(Response::LostLeases(vec!["c1".into()])));
    }

    #[test]
    fn an_expired_lease_ends_the_session_at_the_last_renewal() {
        let mut r = replica();
        r.run(Command::StartSession(session("s1", Some(2), 1_000))).unwrap();
        let token = r.state.ingest_lease("c1").unwrap().token;
        r.run(renew(2, token, 4_000)).unwrap();
        let judged = r.state.ingest_lease("c1").unwrap().version;

        // A renewal that got into the log before the expiry wins: the expiry is refused.
        r.run(renew(2, token, 5_000)).unwrap();
        let stale = Command::ExpireIngestLease { channel_id: "c1".into(), version: judged };
        assert!(matches!(r.run(stale), Err(CatalogError::Invalid { .. })));
        assert_eq!(r.state.channel("c1").unwrap().live_state, LiveState::Live);

        // No renewal since: the expiry ends the session at 5 000, the holder's last sign of life.
        let version = r.state.ingest_lease("c1").unwrap().version;
        let Ok(Response::Session(ended)) = r.run(Command::ExpireIngestLease { channel_id: "c1".into(), version })
        else {
            panic!("the expiry answers with the ended session")
        };
        assert_eq!(ended.ended_at, Some(5_000));
        let channel = r.state.channel("c1").unwrap();
        assert_eq!((channel.live_state, channel.current_session_id.as_deref()), (LiveState::Offline, None));
        assert!(r.state.ingest_lease("c1").is_none());
        assert_eq!(r.state.session("s1").unwrap().ended_at, Some(5_000));

        // The dead holder's late renewal is refused; the channel can go live from elsewhere.
        assert_eq!(r.run(renew(2, token, 9_000)), Ok(Response::LostLeases(vec!["c1".into()])));
        r.term = 4;
        r.run(Command::StartSession(session("s2", Some(3), 9_500))).unwrap();
        let lease = r.state.ingest_lease("c1").unwrap();
        assert_eq!((lease.holder, lease.term), (3, 4));
        assert!(lease.token > token, "a later grant has a larger fencing token");
        let again = Command::ExpireIngestLease { channel_id: "c1".into(), version };
        assert!(r.run(again).is_err(), "an expiry of the old lease does not touch the new one");
    }

    #[test]
    fn a_late_end_from_a_cut_off_node_does_not_end_the_newer_session() {
        let mut r = replica();
        let end = |session: &str, at| Command::EndIngestSession {
            channel_id: "c1".into(),
            session_id: session.into(),
            ended_at: at,
        };
        r.run(Command::StartSession(session("s1", Some(2), 1_000))).unwrap();
        // Node 2 is cut off; its lease expires and the channel goes live on node 3.
        let version = r.state.ingest_lease("c1").unwrap().version;
        r.run(Command::ExpireIngestLease { channel_id: "c1".into(), version }).unwrap();
        r.run(Command::StartSession(session("s2", Some(3), 8_000))).unwrap();
        // Node 2's publish ends and its end finally gets through: refused, s2 stays live.
        assert_eq!(r.run(end("s1", 9_000)), Err(CatalogError::NotLive { channel_id: "c1".into() }));
        let channel = r.state.channel("c1").unwrap();
        assert_eq!((channel.live_state, channel.current_session_id.as_deref()), (LiveState::Live, Some("s2")));
        assert_eq!(r.state.ingest_lease("c1").unwrap().holder, 3);
        // Node 3's own end does end it, and releases the lease.
        let Ok(Response::Session(ended)) = r.run(end("s2", 9_500)) else { panic!("s2 ends") };
        assert_eq!(ended.ended_at, Some(9_500));
        assert!(r.state.ingest_lease("c1").is_none());
        assert_eq!(r.state.channel("c1").unwrap().live_state, LiveState::Offline);
    }

    #[test]
    fn sessions_without_an_ingest_node_hold_no_lease() {
        let mut r = replica();
        r.run(Command::StartSession(session("s1", None, 1_000))).unwrap();
        assert!(r.state.ingest_lease("c1").is_none());
        let missing = Command::ExpireIngestLease { channel_id: "c1".into(), version: 1 };
        assert!(matches!(r.run(missing), Err(CatalogError::NotFound { .. })));
    }
}
