//! Who may still talk to the cluster: revoked node certificates and join-token uses.
//!
//! Both live in the replicated catalog so every member refuses the same things: a revoked node
//! is refused by all members, and a join token used up on one member cannot be replayed on
//! another. Same contract as the rest of [`super`]: deterministic, changes returned as
//! [`Mutation`]s, `load_record` rebuilding what applying built.

use std::collections::BTreeMap;

use super::{delete, put, Mutation};
use crate::codec::{self, CodecError};
use crate::command::{ApplyResult, CatalogError, Command, Response};
use crate::types::{NodeId, UnixMillis};

mod key {
    pub(super) const REVOKED: &str = "revk/";
    pub(super) const TOKEN: &str = "jtok/";
}

/// Most distinct unexpired join tokens remembered at once; a use beyond this is refused rather
/// than letting token records grow without bound.
pub const MAX_TRACKED_TOKENS: usize = 10_000;

/// Uses of one join token so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenUse {
    pub uses: u32,
    /// Unix seconds after which the token is refused anyway (the record can then go).
    pub expires_at: i64,
}

/// Revocations and join-token uses.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Access {
    /// Node id -> when it was revoked.
    revoked: BTreeMap<NodeId, UnixMillis>,
    /// Token id (hex of its nonce) -> uses so far.
    tokens: BTreeMap<String, TokenUse>,
}

impl Access {
    /// Load one record if its key belongs here; `Ok(false)` for keys of other tables.
    pub(crate) fn load_record(&mut self, key: &str, value: &[u8]) -> Result<bool, CodecError> {
        if let Some(id) = key.strip_prefix(key::REVOKED) {
            let id = id.parse().map_err(|_| CodecError::Malformed(format!("bad key {key}")))?;
            self.revoked.insert(id, codec::decode(value)?);
        } else if let Some(token) = key.strip_prefix(key::TOKEN) {
            self.tokens.insert(token.to_owned(), codec::decode(value)?);
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// Whether `node_id`'s certificate was revoked.
    pub fn is_revoked(&self, node_id: NodeId) -> bool {
        self.revoked.contains_key(&node_id)
    }

    /// Revoked node ids, ascending.
    pub fn revoked(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.revoked.keys().copied()
    }

    /// Uses recorded for a token id.
    pub fn token_use(&self, token_id: &str) -> Option<TokenUse> {
        self.tokens.get(token_id).copied()
    }

    /// Apply [`Command::RevokeNode`] or [`Command::UseJoinToken`]; `None` for other commands.
    pub(crate) fn apply(&mut self, command: &Command, out: &mut Vec<Mutation>) -> Option<ApplyResult> {
        Some(match command {
            Command::RevokeNode { node_id, at } => {
                if *node_id == 0 {
                    return Some(Err(CatalogError::invalid("node_id", "node ids start at 1")));
                }
                // Revoking twice keeps the first time; the answer is the same.
                let at = *self.revoked.entry(*node_id).or_insert(*at);
                out.push(put(format!("{}{node_id}", key::REVOKED), codec::encode(&at)));
                Ok(Response::Done)
            }
            Command::UseJoinToken { token_id, max_uses, expires_at, now } => {
                self.use_token(token_id, *max_uses, *expires_at, *now, out)
            }
            _ => return None,
        })
    }

    fn use_token(
        &mut self,
        token_id: &str,
        max_uses: u32,
        expires_at: i64,
        now: i64,
        out: &mut Vec<Mutation>,
    ) -> ApplyResult {
        if token_id.is_empty() || token_id.len() > 64 || !token_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CatalogError::invalid("token_id", "expected up to 64 hex digits"));
        }
        // Expired tokens are refused by their MAC check anyway: forget their uses.
        for (id, _) in self.tokens.extract_if(.., |_, t| t.expires_at < now) {
            out.push(delete(format!("{}{id}", key::TOKEN)));
        }
        if expires_at < now {
            return Err(CatalogError::invalid("token", "join token expired"));
        }
        let used = self.tokens.get(token_id).map_or(0, |t| t.uses);
        if used >= max_uses {
            return Err(CatalogError::invalid("token", "join token already used up"));
        }
        if used == 0 && self.tokens.len() >= MAX_TRACKED_TOKENS {
            return Err(CatalogError::invalid("token", "too many join tokens in use; try again later"));
        }
        let record = TokenUse { uses: used + 1, expires_at };
        self.tokens.insert(token_id.to_owned(), record);
        out.push(put(format!("{}{token_id}", key::TOKEN), codec::encode(&record)));
        Ok(Response::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn use_token(a: &mut Access, id: &str, max: u32, now: i64) -> ApplyResult {
        let command = Command::UseJoinToken { token_id: id.into(), max_uses: max, expires_at: 100, now };
        a.apply(&command, &mut Vec::new()).unwrap()
    }

    #[test]
    fn a_token_is_used_at_most_max_uses_times() {
        let mut a = Access::default();
        use_token(&mut a, "ab", 1, 10).unwrap();
        assert!(use_token(&mut a, "ab", 1, 11).is_err(), "a single-use token was accepted twice");
        use_token(&mut a, "cd", 2, 10).unwrap();
        use_token(&mut a, "cd", 2, 10).unwrap();
        assert!(use_token(&mut a, "cd", 2, 10).is_err());
        assert!(use_token(&mut a, "not hex", 2, 10).is_err());
        // Past its expiry the use record goes (and the token is refused).
        assert!(use_token(&mut a, "ef", 1, 200).is_err());
        assert_eq!(a.token_use("ab"), None);
    }

    #[test]
    fn revocations_persist_and_reload() {
        let mut a = Access::default();
        let mut out = Vec::new();
        a.apply(&Command::RevokeNode { node_id: 3, at: 5 }, &mut out).unwrap().unwrap();
        a.apply(&Command::RevokeNode { node_id: 3, at: 9 }, &mut out).unwrap().unwrap();
        assert!(a.is_revoked(3) && !a.is_revoked(4));
        let mut reloaded = Access::default();
        for m in &out {
            let key = String::from_utf8(m.key.clone()).unwrap();
            assert!(reloaded.load_record(&key, m.value.as_deref().unwrap()).unwrap());
        }
        assert_eq!(reloaded, a);
        assert!(a.apply(&Command::Noop { payload: vec![] }, &mut out).is_none());
    }
}
