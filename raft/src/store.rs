//! RocksDB storage for the Raft log and the catalog state machine.
//!
//! One RocksDB database in `<data>/db` with three column families:
//! - `log`: entries keyed by big-endian index (so key order is log order),
//! - `meta`: vote, committed and purged log ids, and the latest snapshot,
//! - `sm`: the catalog records plus the applied log id and membership, always written in one
//!   batch with the records they describe, so the state machine is never half-applied.
//!
//! Log appends are synced before openraft is told they are durable: an acknowledged write
//! survives `kill -9` (and power loss). State-machine writes are not synced: after a crash, the
//! records and their applied id are consistent with each other and Raft replays the rest.

// openraft's storage traits return `StorageError` by value, and it is large. Our helpers return it
// too so that `?` works at the trait boundary; boxing it in between would only move the copy.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::codec;
use crate::command::{ApplyResult, Command};
use crate::metrics::CatalogMetrics;
use crate::state::CatalogState;
use crate::{NodeId, TypeConfig};

const CF_LOG: &str = "log";
const CF_META: &str = "meta";
const CF_SM: &str = "sm";

const META_VOTE: &[u8] = b"vote";
const META_COMMITTED: &[u8] = b"committed";
const META_PURGED: &[u8] = b"purged";
const META_SNAPSHOT: &[u8] = b"snapshot";
/// Raft bookkeeping stored beside the records in `sm` (outside the record key space).
const SM_APPLIED: &[u8] = b"~raft/applied";
const SM_MEMBERSHIP: &[u8] = b"~raft/membership";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// One state-machine record as stored: key and encoded value.
pub type Record = (Vec<u8>, Vec<u8>);
type Membership = StoredMembership<NodeId, openraft::BasicNode>;

/// The RocksDB database shared by the log store and the state machine.
#[derive(Clone)]
pub struct Database {
    db: Arc<DB>,
}

impl Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("path", &self.db.path()).finish()
    }
}

fn db_options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_keep_log_file_num(4);
    opts
}

fn descriptors() -> Vec<ColumnFamilyDescriptor> {
    [CF_LOG, CF_META, CF_SM].into_iter().map(|name| ColumnFamilyDescriptor::new(name, Options::default())).collect()
}

impl Database {
    /// Open (or create) the database at `path`. Takes RocksDB's lock: one process at a time.
    pub fn open(path: &Path) -> Result<Self, rocksdb::Error> {
        let db = DB::open_cf_descriptors(&db_options(), path, descriptors())?;
        Ok(Database { db: Arc::new(db) })
    }

    /// Open read-only, without the lock, for inspecting a stopped (or running) node's data dir.
    pub fn open_read_only(path: &Path) -> Result<Self, rocksdb::Error> {
        let db = DB::open_cf_for_read_only(&db_options(), path, [CF_LOG, CF_META, CF_SM], false)?;
        Ok(Database { db: Arc::new(db) })
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        // The three column families are created at open; a missing one means a corrupt install.
        self.db.cf_handle(name).expect("column family created at open")
    }

    fn get_meta<T: for<'de> Deserialize<'de>>(&self, cf: &str, key: &[u8]) -> StorageResult<Option<T>> {
        match self.db.get_cf(self.cf(cf), key).map_err(|e| read_err(ErrorSubject::Store, e))? {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes).map(Some).map_err(|e| read_err(ErrorSubject::Store, e)),
        }
    }

    fn put_meta_sync<T: Serialize>(&self, key: &[u8], value: &T, subject: ErrorSubject<NodeId>) -> StorageResult<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), key, codec::encode(value));
        self.write(batch, true).map_err(|e| write_err(subject, e))
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), rocksdb::Error> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db.write_opt(batch, &opts)
    }

    /// Every record of the state machine, in key order (includes Raft's applied id and membership).
    pub fn state_records(&self) -> Result<Vec<Record>, rocksdb::Error> {
        let cf = self.cf(CF_SM);
        self.db
            .iterator_cf(cf, IteratorMode::Start)
            .map(|item| item.map(|(k, v)| (k.into_vec(), v.into_vec())))
            .collect()
    }

    /// Applied log id and membership as persisted in the state machine.
    pub fn applied_state(&self) -> StorageResult<(Option<LogId<NodeId>>, Membership)> {
        let applied = self.get_meta(CF_SM, SM_APPLIED)?.flatten();
        let membership = self.get_meta(CF_SM, SM_MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    /// The persisted vote (term and who it was for).
    pub fn vote(&self) -> StorageResult<Option<Vote<NodeId>>> {
        self.get_meta(CF_META, META_VOTE)
    }
}

fn read_err(subject: ErrorSubject<NodeId>, e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::new(subject, ErrorVerb::Read, AnyError::new(&e)).into()
}

fn write_err(subject: ErrorSubject<NodeId>, e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::new(subject, ErrorVerb::Write, AnyError::new(&e)).into()
}

fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

// ---------------------------------------------------------------------------------------------
// Log store

/// The Raft log in RocksDB. Cheap to clone: clones share the database.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Database,
    metrics: Arc<CatalogMetrics>,
}

impl LogStore {
    pub fn new(db: Database, metrics: Arc<CatalogMetrics>) -> Self {
        LogStore { db, metrics }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            // Saturating: `(MAX, ..)` is empty, and `range.contains` below stops at once.
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let cf = self.db.cf(CF_LOG);
        let mut entries = Vec::new();
        for item in self.db.db.iterator_cf(cf, IteratorMode::From(&log_key(start), Direction::Forward)) {
            let (key, value) = item.map_err(|e| read_err(ErrorSubject::Logs, e))?;
            let index = u64::from_be_bytes(
                key.as_ref()
                    .try_into()
                    .map_err(|_| read_err(ErrorSubject::Logs, std::io::Error::other("log key is not 8 bytes")))?,
            );
            if !range.contains(&index) {
                break;
            }
            let entry: Entry<TypeConfig> = codec::decode(&value).map_err(|e| read_err(ErrorSubject::Logs, e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = self.db.get_meta(CF_META, META_PURGED)?;
        let cf = self.db.cf(CF_LOG);
        let last = match self.db.db.iterator_cf(cf, IteratorMode::End).next() {
            None => None,
            Some(item) => {
                let (_, value) = item.map_err(|e| read_err(ErrorSubject::Logs, e))?;
                let entry: Entry<TypeConfig> = codec::decode(&value).map_err(|e| read_err(ErrorSubject::Logs, e))?;
                Some(entry.log_id)
            }
        };
        // The last log id is never behind the purge point, even if a store written by an older
        // version crashed between recording a purge and deleting the entries.
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last.max(last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.db.put_meta_sync(META_VOTE, vote, ErrorSubject::Vote)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.db.vote()
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        if let Some(c) = committed {
            self.metrics.committed_index.set(c.index as i64);
        }
        // Not synced: losing it only means re-discovering the commit point from the leader.
        let mut batch = WriteBatch::default();
        batch.put_cf(self.db.cf(CF_META), META_COMMITTED, codec::encode(&committed));
        self.db.write(batch, false).map_err(|e| write_err(ErrorSubject::Store, e))
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.db.get_meta::<Option<LogId<NodeId>>>(CF_META, META_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.db.cf(CF_LOG);
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(cf, log_key(entry.log_id.index), codec::encode(&entry));
        }
        let db = self.db.clone();
        // fsync off the runtime's worker threads; report durability only once it is on disk.
        let result = tokio::task::spawn_blocking(move || db.write(batch, true))
            .await
            .map_err(|e| write_err(ErrorSubject::Logs, std::io::Error::other(e.to_string())))?;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_err(ErrorSubject::Logs, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.db.cf(CF_LOG), log_key(log_id.index), log_key(u64::MAX));
        batch.delete_cf(self.db.cf(CF_LOG), log_key(u64::MAX));
        self.db.write(batch, true).map_err(|e| write_err(ErrorSubject::Logs, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // The purge point and the deletion go in one batch (atomic across column families): a
        // crash can never leave entries at or below the recorded purge point.
        let mut batch = WriteBatch::default();
        batch.put_cf(self.db.cf(CF_META), META_PURGED, codec::encode(&log_id));
        batch.delete_range_cf(self.db.cf(CF_LOG), log_key(0), log_key(log_id.index.saturating_add(1)));
        if log_id.index == u64::MAX {
            batch.delete_cf(self.db.cf(CF_LOG), log_key(u64::MAX));
        }
        self.db.write(batch, true).map_err(|e| write_err(ErrorSubject::Logs, e))
    }
}

// ---------------------------------------------------------------------------------------------
// State machine

/// A command as applied on this node, published to local subscribers (chat sockets, caches).
#[derive(Debug, Clone)]
pub struct AppliedEvent {
    pub index: u64,
    pub command: Command,
    pub result: ApplyResult,
}

/// The catalog's in-memory tables, shared between the state machine (writer) and readers.
pub type SharedState = Arc<RwLock<CatalogState>>;

/// What a snapshot file holds: every `sm` record at the snapshot's log id.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    records: Vec<Record>,
}

/// The Raft state machine: applies commands to [`CatalogState`] and persists the records.
pub struct StateMachineStore {
    db: Database,
    state: SharedState,
    applied: Option<LogId<NodeId>>,
    membership: Membership,
    events: broadcast::Sender<Arc<AppliedEvent>>,
    metrics: Arc<CatalogMetrics>,
}

impl StateMachineStore {
    /// Load the state machine from the database.
    pub fn open(db: Database, metrics: Arc<CatalogMetrics>) -> Result<Self, anyhow::Error> {
        let records = db.state_records()?;
        let state = CatalogState::load(records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))?;
        let (applied, membership) = db.applied_state()?;
        let (events, _) = broadcast::channel(4096);
        Ok(StateMachineStore { db, state: Arc::new(RwLock::new(state)), applied, membership, events, metrics })
    }

    pub fn shared_state(&self) -> SharedState {
        self.state.clone()
    }

    pub fn events(&self) -> broadcast::Sender<Arc<AppliedEvent>> {
        self.events.clone()
    }

    /// The database the state machine writes to (to dump or inspect its records).
    pub fn database(&self) -> &Database {
        &self.db
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<NodeId>>, Membership)> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<ApplyResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = Instant::now();
        let cf = self.db.cf(CF_SM);
        let mut batch = WriteBatch::default();
        let mut results = Vec::new();
        let mut events = Vec::new();
        {
            // A poisoned lock means a reader panicked; the tables themselves are still consistent.
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            for entry in entries {
                self.applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => results.push(Ok(crate::Response::Done)),
                    EntryPayload::Normal(command) => {
                        let (result, mutations) =
                            state.apply_in_term(entry.log_id.leader_id.term, entry.log_id.index, &command);
                        for m in mutations {
                            match m.value {
                                Some(v) => batch.put_cf(cf, m.key, v),
                                None => batch.delete_cf(cf, m.key),
                            }
                        }
                        // Subscribers see the commands of a batch one by one, as if unbatched.
                        match (command, &result) {
                            (Command::Batch(commands), Ok(crate::Response::Batch(results))) => {
                                for (command, result) in commands.into_iter().zip(results.iter().cloned()) {
                                    events.push(Arc::new(AppliedEvent { index: entry.log_id.index, command, result }));
                                }
                            }
                            (command, result) => {
                                let result = result.clone();
                                events.push(Arc::new(AppliedEvent { index: entry.log_id.index, command, result }));
                            }
                        }
                        results.push(result);
                    }
                    EntryPayload::Membership(m) => {
                        self.membership = StoredMembership::new(Some(entry.log_id), m);
                        batch.put_cf(cf, SM_MEMBERSHIP, codec::encode(&self.membership));
                        results.push(Ok(crate::Response::Done));
                    }
                }
            }
        }
        batch.put_cf(cf, SM_APPLIED, codec::encode(&self.applied));
        self.db.write(batch, false).map_err(|e| write_err(ErrorSubject::StateMachine, e))?;
        for event in events {
            // No subscribers is fine: events are a courtesy to local listeners.
            let _ = self.events.send(event);
        }
        self.metrics.apply_seconds.observe(started.elapsed().as_secs_f64());
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { db: self.db.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let bytes = snapshot.into_inner();
        let file: SnapshotFile =
            codec::decode(&bytes).map_err(|e| read_err(ErrorSubject::Snapshot(Some(meta.signature())), e))?;
        // The records carry their own applied id and membership; if they disagreed with `meta`, the
        // tables would say one thing now (from `meta`) and another after a restart (from the records).
        if file.meta != *meta {
            let mismatch = std::io::Error::other(format!("snapshot data is for {:?}, not {:?}", file.meta, meta));
            return Err(read_err(ErrorSubject::Snapshot(Some(meta.signature())), mismatch));
        }
        let state = CatalogState::load(file.records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
            .map_err(|e| read_err(ErrorSubject::Snapshot(Some(meta.signature())), e))?;
        let cf = self.db.cf(CF_SM);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, [0u8].as_slice(), [0xffu8; 16].as_slice());
        for (k, v) in &file.records {
            batch.put_cf(cf, k, v);
        }
        batch.put_cf(self.db.cf(CF_META), META_SNAPSHOT, &bytes);
        self.db.write(batch, true).map_err(|e| write_err(ErrorSubject::Snapshot(Some(meta.signature())), e))?;
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = state;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.metrics.snapshots_installed.inc();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let raw = self
            .db
            .db
            .get_cf(self.db.cf(CF_META), META_SNAPSHOT)
            .map_err(|e| read_err(ErrorSubject::Snapshot(None), e))?;
        let Some(bytes) = raw else { return Ok(None) };
        let file: SnapshotFile = codec::decode(&bytes).map_err(|e| read_err(ErrorSubject::Snapshot(None), e))?;
        Ok(Some(Snapshot { meta: file.meta, snapshot: Box::new(Cursor::new(bytes)) }))
    }
}

/// Builds snapshots from a consistent RocksDB view while applying goes on.
pub struct SnapshotBuilder {
    db: Database,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || build_snapshot(&db))
            .await
            .map_err(|e| write_err(ErrorSubject::Snapshot(None), std::io::Error::other(e.to_string())))?
    }
}

fn build_snapshot(db: &Database) -> StorageResult<Snapshot<TypeConfig>> {
    let view = db.db.snapshot();
    let cf = db.cf(CF_SM);
    let mut records = Vec::new();
    let mut applied = None;
    let mut membership = Membership::default();
    for item in view.iterator_cf(cf, IteratorMode::Start) {
        let (k, v) = item.map_err(|e| read_err(ErrorSubject::Snapshot(None), e))?;
        if k.as_ref() == SM_APPLIED {
            applied = codec::decode(&v).map_err(|e| read_err(ErrorSubject::Snapshot(None), e))?;
        } else if k.as_ref() == SM_MEMBERSHIP {
            membership = codec::decode(&v).map_err(|e| read_err(ErrorSubject::Snapshot(None), e))?;
        }
        records.push((k.into_vec(), v.into_vec()));
    }
    drop(view);
    let applied: Option<LogId<NodeId>> = applied;
    let snapshot_id = match applied {
        Some(id) => format!("{}-{}-{}", id.leader_id, id.index, records.len()),
        None => "empty".to_owned(),
    };
    let meta = SnapshotMeta { last_log_id: applied, last_membership: membership, snapshot_id };
    let file = SnapshotFile { meta: meta.clone(), records };
    let bytes = codec::encode(&file);
    let mut batch = WriteBatch::default();
    batch.put_cf(db.cf(CF_META), META_SNAPSHOT, &bytes);
    db.write(batch, true).map_err(|e| write_err(ErrorSubject::Snapshot(Some(meta.signature())), e))?;
    Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
}

/// Open the log store and state machine of the database at `path`.
pub fn open(path: &Path, metrics: Arc<CatalogMetrics>) -> Result<(LogStore, StateMachineStore), anyhow::Error> {
    let db = Database::open(path)?;
    let sm = StateMachineStore::open(db.clone(), metrics.clone())?;
    Ok((LogStore::new(db, metrics), sm))
}
