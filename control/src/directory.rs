//! The channel directory: browse and search channels, live ones first.
//!
//! `GET /api/directory?q=&tag=&category=&limit=&cursor=` filters the local replica, orders by
//! (live first, most followers, title, id) and pages with a keyset cursor: the cursor is the sort
//! key of the last item returned, so a page never repeats or skips a channel that kept its place,
//! however many channels appear or disappear elsewhere in the listing.

use std::cmp::Reverse;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use raft::state::CatalogState;
use raft::LiveState;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::channels::playback_url;
use crate::error::{ApiError, ApiResult};
use crate::ApiState;

/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 24;
/// Largest page.
pub const MAX_LIMIT: usize = 100;
/// Longest accepted search text, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::default().routes(routes!(directory))
}

/// Query parameters, as strings so that bad values get the API's error shape.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DirectoryQuery {
    /// Words that must all appear in the title, a tag or the category (at most 200 characters).
    pub q: Option<String>,
    /// Only channels with this tag.
    pub tag: Option<String>,
    /// Only channels in this category.
    pub category: Option<String>,
    /// Page size, 1 to 100 (default 24).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// One directory entry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryItem {
    pub id: String,
    pub title: String,
    pub tags: Vec<String>,
    pub category: Option<String>,
    pub live_state: LiveState,
    pub followers: u64,
    pub owner_id: String,
    pub owner_display_name: Option<String>,
    pub playback_url: String,
    /// The same playlist through this node's edge (absolute), when the node runs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge_playback_url: Option<String>,
    /// A live channel's picture, refreshed every few seconds (`/hls/{id}/poster.jpg`, through
    /// this node's edge when it runs one); absent while offline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poster_url: Option<String>,
}

/// A page of the directory; `next_cursor` is absent on the last page.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryPage {
    pub items: Vec<DirectoryItem>,
    pub next_cursor: Option<String>,
}

/// Position in the listing order; the cursor is this, JSON in base64url.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct SortKey {
    /// `Reverse` so that live (true) sorts first, and most followers first.
    live: Reverse<bool>,
    followers: Reverse<u64>,
    title: String,
    id: String,
}

impl SortKey {
    fn encode(&self) -> String {
        // Serializing plain data to JSON cannot fail.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(cursor: &str) -> ApiResult<SortKey> {
        let bad = || ApiError::invalid("cursor", "not a cursor returned by this endpoint");
        let bytes = URL_SAFE_NO_PAD.decode(cursor.trim()).map_err(|_| bad())?;
        serde_json::from_slice(&bytes).map_err(|_| bad())
    }
}

/// A validated query.
struct Filter {
    terms: Vec<String>,
    tag: Option<String>,
    category: Option<String>,
    limit: usize,
    after: Option<SortKey>,
}

impl Filter {
    fn parse(query: &DirectoryQuery) -> ApiResult<Filter> {
        let q = query.q.as_deref().unwrap_or_default();
        if q.chars().count() > MAX_QUERY_CHARS {
            return Err(ApiError::invalid("q", format!("at most {MAX_QUERY_CHARS} characters")));
        }
        let terms = q.split_whitespace().map(str::to_lowercase).collect();
        let nonblank =
            |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_lowercase);
        let limit = match query.limit.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
            None => DEFAULT_LIMIT,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => return Err(ApiError::invalid("limit", format!("must be a whole number from 1 to {MAX_LIMIT}"))),
            },
        };
        let after = match query.cursor.as_deref().filter(|c| !c.trim().is_empty()) {
            Some(c) => Some(SortKey::decode(c)?),
            None => None,
        };
        Ok(Filter { terms, tag: nonblank(&query.tag), category: nonblank(&query.category), limit, after })
    }
}

/// The directory page for `query` over `state` (pure: tests call it with hand-built state).
pub fn search(state: &CatalogState, query: &DirectoryQuery) -> ApiResult<DirectoryPage> {
    let filter = Filter::parse(query)?;
    let followers = state.follower_counts();
    let mut hits: Vec<(SortKey, &raft::Channel)> = state
        .channels()
        // Hidden by a takedown notice: not listed.
        .filter(|c| !state.is_taken_down(&c.id))
        .filter(|c| {
            let title = c.title.to_lowercase();
            let category = c.category.as_deref().map(str::to_lowercase);
            let text_match = filter.terms.iter().all(|term| {
                title.contains(term.as_str())
                    || c.tags.iter().any(|t| t.to_lowercase().contains(term.as_str()))
                    || category.as_deref().is_some_and(|cat| cat.contains(term.as_str()))
            });
            let tag_match = filter.tag.as_ref().is_none_or(|tag| c.tags.iter().any(|t| t.to_lowercase() == *tag));
            let category_match = filter.category.as_ref().is_none_or(|want| category.as_ref() == Some(want));
            text_match && tag_match && category_match
        })
        .map(|c| {
            let key = SortKey {
                live: Reverse(c.live_state == LiveState::Live),
                followers: Reverse(followers.get(c.id.as_str()).copied().unwrap_or(0) as u64),
                title: c.title.to_lowercase(),
                id: c.id.clone(),
            };
            (key, c)
        })
        .filter(|(key, _)| filter.after.as_ref().is_none_or(|after| key > after))
        .collect();
    hits.sort_by(|a, b| a.0.cmp(&b.0));
    let more = hits.len() > filter.limit;
    hits.truncate(filter.limit);
    let next_cursor = if more { hits.last().map(|(key, _)| key.encode()) } else { None };
    let items = hits
        .into_iter()
        .map(|(key, c)| DirectoryItem {
            id: c.id.clone(),
            title: c.title.clone(),
            tags: c.tags.clone(),
            category: c.category.clone(),
            live_state: c.live_state,
            followers: key.followers.0,
            owner_id: c.owner_id.clone(),
            owner_display_name: state.user(&c.owner_id).map(|u| u.display_name.clone()),
            playback_url: playback_url(&c.id),
            edge_playback_url: None,
            poster_url: (c.live_state == LiveState::Live).then(|| format!("/hls/{}/{}", c.id, hls_names::LIVE_POSTER)),
        })
        .collect();
    Ok(DirectoryPage { items, next_cursor })
}

#[utoipa::path(
    get,
    path = "/api/directory",
    tag = "directory",
    security((), ("bearer" = []), ("bitriver_session" = [])),
    params(DirectoryQuery),
    responses(
        (status = 200, description = "One page of channels: live first, then most followed", body = DirectoryPage),
        (status = 422, description = "A bad `q`, `limit` or `cursor`", body = crate::error::Body),
    )
)]
async fn directory(
    State(state): State<ApiState>,
    crate::audit::Peer(peer): crate::audit::Peer,
    headers: HeaderMap,
    Query(query): Query<DirectoryQuery>,
) -> ApiResult<Json<DirectoryPage>> {
    let mut page = state.catalog.read(|s| search(s, &query))?;
    for item in &mut page.items {
        item.edge_playback_url = state.edge_playback_url(&headers, peer, &item.id);
        if let (Some(poster), Some(edge)) = (&mut item.poster_url, &item.edge_playback_url) {
            *poster = edge.replace("/master.m3u8", &format!("/{}", hls_names::LIVE_POSTER));
        }
    }
    Ok(Json(page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let key = SortKey { live: Reverse(true), followers: Reverse(3), title: "river".into(), id: "abc".into() };
        assert_eq!(SortKey::decode(&key.encode()).unwrap(), key);
        for bad in ["%%%", "bm90IGpzb24", ""] {
            let e = SortKey::decode(bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("cursor"));
        }
    }

    #[test]
    fn order_is_live_then_followers_then_title() {
        let key = |live, followers, title: &str| SortKey {
            live: Reverse(live),
            followers: Reverse(followers),
            title: title.into(),
            id: String::new(),
        };
        let mut keys = vec![key(false, 9, "a"), key(true, 0, "z"), key(true, 5, "b"), key(true, 5, "a")];
        keys.sort();
        assert_eq!(keys, vec![key(true, 5, "a"), key(true, 5, "b"), key(true, 0, "z"), key(false, 9, "a")]);
    }

    #[test]
    fn limits_are_checked() {
        let state = CatalogState::default();
        for bad in ["0", "101", "-1", "ten"] {
            let q = DirectoryQuery { limit: Some(bad.into()), ..DirectoryQuery::default() };
            assert_eq!(search(&state, &q).unwrap_err().field.as_deref(), Some("limit"), "{bad}");
        }
        let q = DirectoryQuery { q: Some("x".repeat(201)), ..DirectoryQuery::default() };
        assert_eq!(search(&state, &q).unwrap_err().field.as_deref(), Some("q"));
        let page = search(&state, &DirectoryQuery::default()).unwrap();
        assert!(page.items.is_empty() && page.next_cursor.is_none());
    }
}
