//! Replicas never diverge: the same log gives byte-identical records and the same answers, however
//! the entries are batched into `apply` calls, and a replica reopened from disk has the same tables
//! as the one that wrote them.
//!
//! Commands are drawn from small pools of ids so that they collide: emails that differ only in
//! case, channels whose owner was never created or was deleted, sessions started twice, chat lines
//! past the per-channel history, node ids at the top of the range.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;
use raft::metrics::CatalogMetrics;
use raft::state::{CatalogState, CHAT_HISTORY_PER_CHANNEL};
use raft::store::{self, Record, StateMachineStore};
use raft::{
    ApplyResult, AuthSession, Channel, ChannelPatch, ChatMessage, Command, LiveState, NodeInfo, NodeLoad,
    StreamSession, TypeConfig, User, UserPatch,
};
use tempfile::TempDir;

/// One step of a scenario; most are one command, a chat burst is many.
#[derive(Debug, Clone)]
enum Step {
    Command(Command),
    /// Enough chat lines to push a channel past its history bound.
    ChatBurst {
        channel_id: String,
        user_id: String,
        lines: usize,
    },
    Membership(BTreeSet<u64>),
    Blank,
}

fn id(prefix: &'static str, n: u8) -> impl Strategy<Value = String> {
    (0..n).prop_map(move |i| format!("{prefix}{i}"))
}
fn user_id() -> impl Strategy<Value = String> {
    id("u", 5)
}
fn channel_id() -> impl Strategy<Value = String> {
    id("c", 4)
}
fn key_hash() -> impl Strategy<Value = String> {
    id("k", 5)
}
fn session_id() -> impl Strategy<Value = String> {
    id("s", 6)
}
fn message_id() -> impl Strategy<Value = String> {
    // Few ids, so that deletes hit and histories empty out again.
    id("m", 3)
}
fn token() -> impl Strategy<Value = String> {
    id("t", 4)
}
fn at() -> impl Strategy<Value = i64> {
    0i64..1_000
}
fn email() -> impl Strategy<Value = String> {
    select(vec!["a@x.io", "A@X.io", " a@x.IO ", "b@x.io", "B@x.io", "c@x.io", "no-at-sign", "d@nodot"])
        .prop_map(str::to_owned)
}
fn name() -> impl Strategy<Value = String> {
    select(vec!["River", "Brook", " ", ""]).prop_map(str::to_owned)
}
fn node_id() -> impl Strategy<Value = u64> {
    prop_oneof![5 => 0u64..5, 1 => Just(u64::MAX)]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => (user_id(), name(), email(), at()).prop_map(|(id, display_name, email, created_at)| {
            Command::CreateUser(User { id, display_name, email, roles: vec![], password_hash: None, created_at })
        }),
        2 => (user_id(), of(name()), of(email()), of(Just(vec!["admin".to_owned()])))
            .prop_map(|(id, display_name, email, roles)| {
                Command::UpdateUser(UserPatch { id, display_name, email, roles, password_hash: None })
            }),
        1 => user_id().prop_map(|id| Command::DeleteUser { id }),
        2 => (token(), user_id(), 0i64..100).prop_map(|(token_hash, user_id, expires_at)| {
            Command::CreateAuthSession(AuthSession { token_hash, user_id, created_at: 0, expires_at })
        }),
        1 => token().prop_map(|token_hash| Command::DeleteAuthSession { token_hash }),
        1 => (0i64..100).prop_map(|now| Command::PurgeExpiredAuthSessions { now }),
        1 => (user_id(), of(token())).prop_map(|(user_id, keep)| Command::RevokeUserAuthSessions { user_id, keep }),
        4 => (channel_id(), user_id(), name(), key_hash(), any::<bool>(), at()).prop_map(
            |(id, owner_id, title, stream_key_hash, claims_live, created_at)| {
                // A proposer claiming the channel is live must not make it so.
                let (live_state, current_session_id) =
                    if claims_live { (LiveState::Live, Some("s0".to_owned())) } else { (LiveState::Offline, None) };
                Command::CreateChannel(Channel {
                    id,
                    owner_id,
                    title,
                    category: None,
                    tags: vec![],
                    stream_key_hash,
                    live_state,
                    current_session_id,
                    moderators: vec![],
                    created_at,
                    updated_at: created_at,
                })
            }
        ),
        2 => (channel_id(), of(name()), of(vec(user_id(), 0..3)), at())
            .prop_map(|(id, title, moderators, at)| {
                Command::UpdateChannel(ChannelPatch {
                    id,
                    title,
                    category: Some(Some("music".into())),
                    tags: None,
                    moderators,
                    at,
                })
            }),
        1 => channel_id().prop_map(|id| Command::DeleteChannel { id }),
        1 => (channel_id(), of(select(vec!["eu", "us-east", "Bad Region"]).prop_map(str::to_owned)))
            .prop_map(|(channel_id, region)| Command::SetHomeRegion { channel_id, region }),
        2 => (channel_id(), key_hash(), at())
            .prop_map(|(channel_id, stream_key_hash, at)| Command::SetStreamKey { channel_id, stream_key_hash, at }),
        4 => (session_id(), channel_id(), at(), of(at())).prop_map(
            |(id, channel_id, started_at, ended_at)| {
                Command::StartSession(StreamSession {
                    id,
                    channel_id,
                    started_at,
                    ended_at,
                    renditions: vec!["source".into()],
                    peak_concurrent: 0,
                    ingest_node: Some(1),
                })
            }
        ),
        3 => (channel_id(), at(), of(0u64..50)).prop_map(|(channel_id, ended_at, peak_concurrent)| {
            Command::EndSession { channel_id, ended_at, peak_concurrent }
        }),
        6 => (message_id(), channel_id(), user_id(), select(vec!["hi", "gg", "  "]), any::<u64>()).prop_map(
            |(id, channel_id, user_id, text, seq)| {
                // `seq` is chosen by apply; whatever the proposer put there is overwritten.
                Command::PostChat(ChatMessage { id, channel_id, user_id, text: text.into(), sent_at: 5, seq })
            }
        ),
        5 => (channel_id(), message_id())
            .prop_map(|(channel_id, message_id)| Command::DeleteChat { channel_id, message_id }),
        2 => (node_id(), at()).prop_map(|(id, updated_at)| {
            Command::UpsertNode(NodeInfo {
                id,
                region: "eu".into(),
                roles: vec!["edge".into()],
                addresses: vec![("http".into(), format!("10.0.0.{}:80", id % 250))],
                load: NodeLoad::default(),
                updated_at,
            })
        }),
        1 => node_id().prop_map(|id| Command::RemoveNode { id }),
        2 => select(vec![0u64, 1, 3, 10, u64::MAX]).prop_map(|at_least| Command::ReserveNodeId { at_least }),
        1 => vec(any::<u8>(), 0..4).prop_map(|payload| Command::Noop { payload }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        40 => command().prop_map(Step::Command),
        1 => (channel_id(), user_id(), (CHAT_HISTORY_PER_CHANNEL - 10)..(CHAT_HISTORY_PER_CHANNEL + 10))
            .prop_map(|(channel_id, user_id, lines)| Step::ChatBurst { channel_id, user_id, lines }),
        1 => proptest::collection::btree_set(1u64..5, 1..4).prop_map(Step::Membership),
        1 => Just(Step::Blank),
    ]
}

/// Steps that set up users and channels first, so that later commands mostly hit existing rows.
fn scenario() -> impl Strategy<Value = Vec<Step>> {
    vec(step(), 20..120).prop_map(|steps| {
        let mut all: Vec<Step> = (0..3)
            .flat_map(|i| {
                let owner = format!("u{i}");
                [
                    Step::Command(Command::CreateUser(User {
                        id: owner.clone(),
                        display_name: "Seed".into(),
                        email: format!("seed{i}@x.io"),
                        roles: vec![],
                        password_hash: None,
                        created_at: 0,
                    })),
                    Step::Command(Command::CreateChannel(Channel {
                        id: format!("c{i}"),
                        owner_id: owner,
                        title: "Seed".into(),
                        category: None,
                        tags: vec![],
                        stream_key_hash: format!("k{i}"),
                        live_state: LiveState::Offline,
                        current_session_id: None,
                        moderators: vec![],
                        created_at: 0,
                        updated_at: 0,
                    })),
                ]
            })
            .collect();
        all.extend(steps);
        all
    })
}

/// The log: steps expanded to entries at indexes 1, 2, ..., with the term going up now and then.
fn log(steps: &[Step]) -> Vec<Entry<TypeConfig>> {
    let mut payloads = Vec::new();
    for step in steps {
        match step {
            Step::Command(c) => payloads.push(EntryPayload::Normal(c.clone())),
            Step::ChatBurst { channel_id, user_id, lines } => payloads.extend((0..*lines).map(|i| {
                EntryPayload::Normal(Command::PostChat(ChatMessage {
                    id: format!("burst{i}"),
                    channel_id: channel_id.clone(),
                    user_id: user_id.clone(),
                    text: "spam".into(),
                    sent_at: 7,
                    seq: 0,
                }))
            })),
            Step::Membership(voters) => {
                payloads.push(EntryPayload::Membership(Membership::new(vec![voters.clone()], ())))
            }
            Step::Blank => payloads.push(EntryPayload::Blank),
        }
    }
    payloads
        .into_iter()
        .zip(1u64..)
        .map(|(payload, index)| Entry { log_id: LogId::new(CommittedLeaderId::new(1 + index / 64, 1), index), payload })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    // A fresh runtime per case; building a current-thread one cannot fail in practice.
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

fn open(path: &Path) -> StateMachineStore {
    let (_log, sm) = store::open(path, Arc::new(CatalogMetrics::unregistered())).expect("open store");
    sm
}

/// Apply `entries` in consecutive batches whose sizes cycle through `batches`.
async fn apply_in_batches(
    sm: &mut StateMachineStore,
    entries: &[Entry<TypeConfig>],
    batches: &[usize],
) -> Vec<ApplyResult> {
    let mut results = Vec::with_capacity(entries.len());
    let mut rest = entries;
    for &size in batches.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (batch, tail) = rest.split_at(size.clamp(1, rest.len()));
        let answers = sm.apply(batch.to_vec()).await.expect("apply");
        assert_eq!(answers.len(), batch.len(), "one answer per entry");
        results.extend(answers);
        rest = tail;
    }
    results
}

fn tables(sm: &StateMachineStore) -> CatalogState {
    sm.shared_state().read().expect("no reader panicked").clone()
}

fn records(sm: &StateMachineStore) -> Vec<Record> {
    sm.database().state_records().expect("read records")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn batching_does_not_change_records_or_answers(
        steps in scenario(),
        batches in vec(1usize..24, 1..16),
    ) {
        let entries = log(&steps);
        let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let (mut a, mut b) = (open(dir_a.path()), open(dir_b.path()));
        let rt = runtime();
        let (results_a, results_b) = rt.block_on(async {
            let results_a = apply_in_batches(&mut a, &entries, &[entries.len()]).await;
            let results_b = apply_in_batches(&mut b, &entries, &batches).await;
            (results_a, results_b)
        });

        prop_assert_eq!(results_a.len(), entries.len());
        for (i, (ra, rb)) in results_a.iter().zip(&results_b).enumerate() {
            prop_assert_eq!(ra, rb, "answers differ at entry {} ({:?})", i + 1, entries[i].payload);
        }
        prop_assert!(records(&a) == records(&b), "records differ");
        prop_assert!(tables(&a) == tables(&b), "in-memory tables differ");
        let applied_a = rt.block_on(a.applied_state()).unwrap();
        let applied_b = rt.block_on(b.applied_state()).unwrap();
        prop_assert_eq!(&applied_a, &applied_b);
        prop_assert_eq!(applied_a.0, entries.last().map(|e| e.log_id));
    }

    #[test]
    fn reopening_rebuilds_the_same_tables(
        steps in scenario(),
        batches in vec(1usize..24, 1..16),
    ) {
        let entries = log(&steps);
        let dir = TempDir::new().unwrap();
        let rt = runtime();
        let mut sm = open(dir.path());
        let applied = rt.block_on(async {
            apply_in_batches(&mut sm, &entries, &batches).await;
            sm.applied_state().await.unwrap()
        });
        let (before_tables, before_records) = (tables(&sm), records(&sm));
        drop(sm); // closes RocksDB (the log store from `open` was dropped already)

        let mut reopened = open(dir.path());
        prop_assert!(tables(&reopened) == before_tables, "tables rebuilt from disk differ from the applied ones");
        prop_assert!(records(&reopened) == before_records, "records changed across reopen");
        let reopened_applied = rt.block_on(reopened.applied_state()).unwrap();
        prop_assert_eq!(reopened_applied, applied);
    }
}
