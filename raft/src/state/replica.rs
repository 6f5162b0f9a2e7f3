//! Test support: a state machine that keeps the records its mutations describe, the way the
//! store does, and checks its tables against a reload of those records after every command.

use std::collections::BTreeMap;

use super::{CatalogState, Mutation};
use crate::command::{ApplyResult, Command};

/// Applies commands at increasing log indexes, in Raft term `term`.
#[derive(Default)]
pub(crate) struct Replica {
    pub(crate) state: CatalogState,
    pub(crate) records: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(crate) index: u64,
    pub(crate) term: u64,
}

impl Replica {
    pub(crate) fn apply(&mut self, command: Command) -> (ApplyResult, Vec<Mutation>) {
        self.index += 1;
        let (result, mutations) = self.state.apply_in_term(self.term, self.index, &command);
        for m in &mutations {
            match &m.value {
                Some(v) => self.records.insert(m.key.clone(), v.clone()),
                None => self.records.remove(&m.key),
            };
        }
        let reloaded = CatalogState::load(self.records.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))).unwrap();
        assert_eq!(reloaded, self.state, "tables differ from their records after {command:?}");
        (result, mutations)
    }
}
