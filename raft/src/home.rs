//! Channels' home regions: where a channel's broadcasts are ingested, packaged and served from
//! (regional ingest sharding). The owner may set it ([`Command::SetHomeRegion`]); otherwise the
//! first publish sets it to the region of the ingest node that took it, so a channel stays in the
//! region its broadcaster streams to. `GET /api/channels/{id}/ingest` names the best ingest node
//! of the home region.
//!
//! A table of its own (records `home/<channel>`) rather than a field of [`crate::types::Channel`],
//! so channel records keep their encoding. Same contract as [`crate::state`]: deterministic, every
//! change returned as [`Mutation`]s, `load_record` rebuilding exactly what applying built.

use std::collections::BTreeMap;

use crate::codec::{self, CodecError};
use crate::command::{ApplyResult, CatalogError, Command, Response};
use crate::state::{delete, put, CatalogState, Mutation};
use crate::types::StreamSession;

mod key {
    pub(super) const HOME: &str = "home/";
}

/// Longest region name (`--region` values are short slugs such as `eu-west`).
pub const MAX_REGION_CHARS: usize = 64;

fn home_key(channel_id: &str) -> String {
    format!("{}{channel_id}", key::HOME)
}

/// Whether `region` is a region name: 1 to [`MAX_REGION_CHARS`] of `a-z`, `0-9`, `-`, `_`, `.`.
pub fn valid_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= MAX_REGION_CHARS
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// Channel id -> home region.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HomeTable {
    homes: BTreeMap<String, String>,
}

impl HomeTable {
    /// Load one record if its key belongs here; `Ok(false)` for keys of other tables.
    pub(crate) fn load_record(&mut self, key: &str, value: &[u8]) -> Result<bool, CodecError> {
        let Some(channel_id) = key.strip_prefix(key::HOME) else { return Ok(false) };
        self.homes.insert(channel_id.to_owned(), codec::decode(value)?);
        Ok(true)
    }
}

impl CatalogState {
    /// The channel's home region, if the owner set one or it was ever published.
    pub fn home_region(&self, channel_id: &str) -> Option<&str> {
        self.homes.homes.get(channel_id).map(String::as_str)
    }

    pub(crate) fn apply_home(&mut self, command: &Command, out: &mut Vec<Mutation>) -> ApplyResult {
        let Command::SetHomeRegion { channel_id, region } = command else {
            return Err(CatalogError::invalid("command", &format!("not a home region command: {command:?}")));
        };
        if self.channel(channel_id).is_none() {
            return Err(CatalogError::not_found("channel", channel_id));
        }
        match region {
            Some(region) if !valid_region(region) => {
                return Err(CatalogError::invalid(
                    "homeRegion",
                    &format!("must be 1 to {MAX_REGION_CHARS} of a-z, 0-9, '-', '_', '.'"),
                ))
            }
            Some(region) => self.put_home(channel_id, region, out),
            None => self.forget_home(channel_id, out),
        }
        Ok(Response::Done)
    }

    /// A broadcast started: a channel without a home gets the region of the ingest node that took
    /// it (a session without an ingest node, or of a node not in the directory, sets nothing).
    pub(crate) fn settle_home(&mut self, session: &StreamSession, out: &mut Vec<Mutation>) {
        if self.homes.homes.contains_key(&session.channel_id) {
            return;
        }
        let region = session.ingest_node.and_then(|id| self.node(id)).map(|n| n.region.clone());
        if let Some(region) = region.filter(|r| valid_region(r)) {
            self.put_home(&session.channel_id, &region, out);
        }
    }

    /// The channel is gone: so is its home.
    pub(crate) fn forget_home(&mut self, channel_id: &str, out: &mut Vec<Mutation>) {
        if self.homes.homes.remove(channel_id).is_some() {
            out.push(delete(home_key(channel_id)));
        }
    }

    fn put_home(&mut self, channel_id: &str, region: &str, out: &mut Vec<Mutation>) {
        out.push(put(home_key(channel_id), codec::encode(&region.to_owned())));
        self.homes.homes.insert(channel_id.to_owned(), region.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_are_short_slugs() {
        for ok in ["eu", "us-east-1", "ap_south.2"] {
            assert!(valid_region(ok), "{ok}");
        }
        for bad in ["", "EU", "eu west", "eu/1", "é", &"r".repeat(MAX_REGION_CHARS + 1)] {
            assert!(!valid_region(bad), "{bad}");
        }
    }
}
