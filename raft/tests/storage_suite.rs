//! openraft's storage conformance suite against our RocksDB log store and state machine.
//!
//! Every case gets a fresh database in its own temporary directory; the directory is the suite's
//! guard value, so it is removed only after the stores built on it are dropped.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use openraft::{StorageError, StorageIOError};
use raft::metrics::CatalogMetrics;
use raft::store::{self, LogStore, StateMachineStore};
use raft::{NodeId, TypeConfig};
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = TempDir::new().map_err(|e| StorageIOError::write(&e))?;
        let (log, sm) = store::open(dir.path(), Arc::new(CatalogMetrics::unregistered()))
            .map_err(|e| StorageIOError::write(&std::io::Error::other(format!("{e:#}"))))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn rocksdb_store_passes_openraft_suite() {
    // `test_all` runs each case on its own runtime, so this is a plain test.
    if let Err(e) = Suite::test_all(RocksBuilder) {
        panic!("storage suite: {e}");
    }
}
