//! Snapshots carry the whole catalog: a store that installs one holds the same records, tables and
//! applied state as the store that built it, keeps them across a restart, and then applies the
//! rest of the log exactly like the leader.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftSnapshotBuilder};
use raft::metrics::CatalogMetrics;
use raft::state::CatalogState;
use raft::store::{self, Record, StateMachineStore};
use raft::{Channel, ChatMessage, Command, LiveState, StreamSession, TypeConfig, User};
use tempfile::TempDir;

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
    Entry { log_id: LogId::new(CommittedLeaderId::new(2, 1), index), payload }
}

fn user(id: &str) -> Command {
    Command::CreateUser(User {
        id: id.into(),
        display_name: id.to_uppercase(),
        email: format!("{id}@example.com"),
        roles: vec!["creator".into()],
        password_hash: Some("$argon2id$stub".into()),
        created_at: 1,
    })
}

fn channel(id: &str, owner: &str) -> Command {
    Command::CreateChannel(Channel {
        id: id.into(),
        owner_id: owner.into(),
        title: format!("{id} live"),
        category: Some("music".into()),
        tags: vec!["chill".into()],
        stream_key_hash: format!("key-{id}"),
        live_state: LiveState::Offline,
        current_session_id: None,
        moderators: vec![],
        created_at: 2,
        updated_at: 2,
    })
}

fn chat(id: &str, channel_id: &str, user_id: &str) -> Command {
    Command::PostChat(ChatMessage {
        id: id.into(),
        channel_id: channel_id.into(),
        user_id: user_id.into(),
        text: "hello".into(),
        sent_at: 3,
        seq: 0,
    })
}

/// Log entries 1..: users, channels, a membership change, a live session, chat.
fn history() -> Vec<Entry<TypeConfig>> {
    let payloads = vec![
        EntryPayload::Blank,
        EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2, 3])], ())),
        EntryPayload::Normal(user("ada")),
        EntryPayload::Normal(user("bob")),
        EntryPayload::Normal(channel("c1", "ada")),
        EntryPayload::Normal(channel("c2", "bob")),
        EntryPayload::Normal(Command::StartSession(StreamSession {
            id: "s1".into(),
            channel_id: "c1".into(),
            started_at: 10,
            ended_at: None,
            renditions: vec!["source".into(), "720p".into()],
            peak_concurrent: 0,
            ingest_node: Some(2),
        })),
        EntryPayload::Normal(chat("m1", "c1", "bob")),
        EntryPayload::Normal(chat("m2", "c1", "ada")),
        EntryPayload::Normal(Command::DeleteChat { channel_id: "c1".into(), message_id: "m1".into() }),
        EntryPayload::Normal(Command::ReserveNodeId { at_least: 4 }),
        EntryPayload::Normal(Command::DeleteUser { id: "nobody".into() }), // refused; still applied
    ];
    payloads.into_iter().zip(1u64..).map(|(payload, index)| entry(index, payload)).collect()
}

/// What comes after the snapshot.
fn later(from_index: u64) -> Vec<Entry<TypeConfig>> {
    let payloads = vec![
        EntryPayload::Normal(chat("m3", "c1", "ada")),
        EntryPayload::Normal(Command::EndSession { channel_id: "c1".into(), ended_at: 99, peak_concurrent: Some(12) }),
        EntryPayload::Normal(Command::DeleteUser { id: "bob".into() }),
        EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2])], ())),
    ];
    payloads.into_iter().zip(from_index..).map(|(payload, index)| entry(index, payload)).collect()
}

fn open(path: &Path) -> StateMachineStore {
    let (_log, sm) = store::open(path, Arc::new(CatalogMetrics::unregistered())).expect("open store");
    sm
}

fn tables(sm: &StateMachineStore) -> CatalogState {
    sm.shared_state().read().expect("no reader panicked").clone()
}

fn records(sm: &StateMachineStore) -> Vec<Record> {
    sm.database().state_records().expect("read records")
}

/// Everything a replica's state machine is: records, tables, applied id and membership.
async fn assert_same(a: &mut StateMachineStore, b: &mut StateMachineStore) {
    assert_eq!(records(a), records(b), "records differ");
    assert_eq!(tables(a), tables(b), "tables differ");
    assert_eq!(a.applied_state().await.unwrap(), b.applied_state().await.unwrap(), "applied state differs");
}

#[tokio::test]
async fn installed_snapshot_matches_the_source_and_survives_restart() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let mut a = open(dir_a.path());
    let entries = history();
    let last = entries.last().unwrap().log_id;
    a.apply(entries).await.unwrap();

    let snapshot = a.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(last));
    assert_eq!(snapshot.meta.last_membership.membership(), &Membership::new(vec![BTreeSet::from([1, 2, 3])], ()));

    // B already holds a different history: installing must replace it, not merge with it.
    let mut b = open(dir_b.path());
    b.apply(vec![entry(1, EntryPayload::Normal(user("zed"))), entry(2, EntryPayload::Normal(channel("cz", "zed")))])
        .await
        .unwrap();

    let mut receiving = b.begin_receiving_snapshot().await.unwrap();
    receiving.get_mut().extend_from_slice(snapshot.snapshot.get_ref());
    b.install_snapshot(&snapshot.meta, receiving).await.unwrap();

    assert_same(&mut a, &mut b).await;
    assert!(tables(&b).user("zed").is_none() && tables(&b).channel("cz").is_none());
    assert_eq!(tables(&b).channel("c1").unwrap().live_state, LiveState::Live);
    let current_a = a.get_current_snapshot().await.unwrap().expect("A has a snapshot");
    let current_b = b.get_current_snapshot().await.unwrap().expect("B has a snapshot");
    assert_eq!(current_a.meta, snapshot.meta);
    assert_eq!(current_b.meta, snapshot.meta);
    assert_eq!(current_a.snapshot.into_inner(), current_b.snapshot.into_inner(), "B serves the same bytes");

    // Restart B: the installed state is on disk, not only in memory.
    let (before_tables, before_records) = (tables(&b), records(&b));
    drop(b);
    let mut b = open(dir_b.path());
    assert_eq!(tables(&b), before_tables);
    assert_eq!(records(&b), before_records);
    assert_eq!(b.applied_state().await.unwrap(), a.applied_state().await.unwrap());
    assert_eq!(b.get_current_snapshot().await.unwrap().expect("snapshot kept").meta, snapshot.meta);

    // And B goes on from the snapshot exactly like A.
    let rest = later(last.index + 1);
    let answers_a = a.apply(rest.clone()).await.unwrap();
    let answers_b = b.apply(rest).await.unwrap();
    assert_eq!(answers_a, answers_b);
    assert!(answers_a.iter().all(Result::is_ok), "{answers_a:?}");
    assert_same(&mut a, &mut b).await;
}

#[tokio::test]
async fn snapshot_of_an_empty_store_installs_as_empty() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (mut a, mut b) = (open(dir_a.path()), open(dir_b.path()));
    assert!(a.get_current_snapshot().await.unwrap().is_none());

    let snapshot = a.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.last_log_id, None);
    let mut receiving = b.begin_receiving_snapshot().await.unwrap();
    *receiving = Cursor::new(snapshot.snapshot.into_inner());
    b.install_snapshot(&snapshot.meta, receiving).await.unwrap();
    assert_same(&mut a, &mut b).await;
    assert_eq!(tables(&b), CatalogState::default());
}

#[tokio::test]
async fn snapshot_whose_data_disagrees_with_its_meta_is_refused() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (mut a, mut b) = (open(dir_a.path()), open(dir_b.path()));
    a.apply(history()).await.unwrap();
    let snapshot = a.get_snapshot_builder().await.build_snapshot().await.unwrap();

    let mut meta = snapshot.meta.clone();
    meta.last_log_id = Some(LogId::new(CommittedLeaderId::new(9, 1), 1_000));
    let mut receiving = b.begin_receiving_snapshot().await.unwrap();
    *receiving = Cursor::new(snapshot.snapshot.into_inner());
    assert!(b.install_snapshot(&meta, receiving).await.is_err());

    // Nothing was installed.
    assert_eq!(b.applied_state().await.unwrap().0, None);
    assert!(b.get_current_snapshot().await.unwrap().is_none());
    assert!(records(&b).is_empty());

    // Garbage is refused too.
    let mut receiving = b.begin_receiving_snapshot().await.unwrap();
    *receiving = Cursor::new(vec![1, 2, 3]);
    assert!(b.install_snapshot(&snapshot.meta, receiving).await.is_err());
    assert!(records(&b).is_empty());
}
