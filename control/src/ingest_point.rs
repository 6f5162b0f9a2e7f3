//! Where a broadcaster should stream: `GET /api/channels/{id}/ingest` names the best ingest node
//! of the channel's home region (regional ingest sharding), with the RTMP and SRT addresses it
//! advertises. Any node answers from its replica of the directory (see `raft::placement`): ready
//! ingest nodes of the home region first, by load step, then rendezvous hashing of the channel,
//! so the answer stays the same while the fleet does and moves when that node dies or drains
//! (the broadcaster's reconnect then lands on the next one).
//!
//! A channel with no home region yet (never published, none set) gets the best ready ingest node
//! of any region; its first publish then sets the home (`raft::home`).

use axum::extract::{Path, State};
use axum::Json;
use raft::state::CatalogState;
use raft::{now_millis, NodeInfo, UnixMillis};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::channels::{load_channel, require_owner_or_admin};
use crate::error::{ApiError, ApiResult};
use crate::ApiState;

pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::default().routes(routes!(ingest_point))
}

/// An ingest node and the addresses a broadcaster uses on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestNode {
    #[schema(value_type = u64)]
    pub node_id: raft::NodeId,
    pub region: String,
    /// OBS "Server": `rtmp://HOST:PORT/live` (the stream key goes in "Stream Key").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmp_url: Option<String>,
    /// `srt://HOST:PORT`; the stream id is `#!::r=live/STREAM_KEY,m=publish`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srt_url: Option<String>,
}

/// The answer of `GET /api/channels/{id}/ingest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestPoint {
    pub channel_id: String,
    /// The channel's home region, if it has one yet.
    pub home_region: Option<String>,
    /// The node to stream to.
    #[serde(flatten)]
    pub best: IngestNode,
    /// The next choices, best first (what a reconnect lands on if the first one goes).
    pub alternatives: Vec<IngestNode>,
}

/// How many alternatives an answer lists.
const ALTERNATIVES: usize = 2;

/// The ingest point of `channel_id` at `now`, or `None` when no ingest node is ready.
pub fn choose(state: &CatalogState, channel_id: &str, now: UnixMillis) -> Option<IngestPoint> {
    let home = state.home_region(channel_id).map(str::to_owned);
    let mut ranked = state
        .rank_for_channel("ingest", channel_id, home.as_deref(), now)
        .into_iter()
        .map(ingest_node)
        .filter(|n| n.rtmp_url.is_some() || n.srt_url.is_some());
    let best = ranked.next()?;
    Some(IngestPoint {
        channel_id: channel_id.to_owned(),
        home_region: home,
        best,
        alternatives: ranked.take(ALTERNATIVES).collect(),
    })
}

fn ingest_node(node: &NodeInfo) -> IngestNode {
    IngestNode {
        node_id: node.id,
        region: node.region.clone(),
        rtmp_url: node.address("rtmp").map(|a| format!("rtmp://{a}/live")),
        srt_url: node.address("srt").map(|a| format!("srt://{a}")),
    }
}

#[utoipa::path(
    get,
    path = "/api/channels/{id}/ingest",
    tag = "channels",
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "The ingest node to stream to, and the next choices", body = IngestPoint),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not the channel's owner or an admin"),
        (status = 404, description = "No such channel"),
        (status = 503, description = "No ingest node is ready (none reported its load lately, or all drain)", body = crate::error::Body),
    )
)]
async fn ingest_point(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<IngestPoint>> {
    let channel = load_channel(&state, &id).await?;
    require_owner_or_admin(&caller, &channel, "see where this channel streams to")?;
    state.catalog.read(|s| choose(s, &channel.id, now_millis())).map(Json).ok_or_else(|| {
        ApiError::unavailable("no ingest node is ready: none reported its load lately, or all are draining")
    })
}

#[cfg(test)]
mod tests {
    use raft::{Command, LoadReport, NodeLoad};

    use super::*;

    fn apply(s: &mut CatalogState, commands: Vec<Command>) {
        for (i, c) in commands.into_iter().enumerate() {
            s.apply(i as u64 + 1, &c).0.unwrap();
        }
    }

    fn node(id: raft::NodeId, region: &str, roles: &[&str], rtmp: Option<&str>) -> Command {
        Command::UpsertNode(NodeInfo {
            id,
            region: region.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            addresses: rtmp.map(|a| ("rtmp".to_owned(), a.to_owned())).into_iter().collect(),
            load: NodeLoad::default(),
            updated_at: 0,
        })
    }

    #[test]
    fn the_home_regions_ingest_node_with_its_advertised_address() {
        let now = 50_000;
        let mut s = CatalogState::default();
        let owner = raft::User {
            id: "u".into(),
            display_name: "Owner".into(),
            email: "owner@example.com".into(),
            roles: vec!["creator".into()],
            password_hash: None,
            created_at: 0,
        };
        apply(
            &mut s,
            vec![
                Command::CreateUser(owner),
                node(1, "eu", &["ingest"], Some("10.0.0.1:1935")),
                node(2, "us", &["ingest"], Some("10.0.1.2:1935")),
                node(3, "us", &["edge"], None),
                node(4, "us", &["ingest"], None), // no ingest listener advertised: never named
                // Node 1 reported last (it stays fresh longest).
                Command::ReportLoad(LoadReport { node_id: 1, at: now + 2_000, ..LoadReport::default() }),
                Command::ReportLoad(LoadReport { node_id: 2, at: now, ..LoadReport::default() }),
                Command::ReportLoad(LoadReport { node_id: 4, at: now, ..LoadReport::default() }),
            ],
        );
        let mut us = s.clone();
        let channel = raft::Channel {
            id: "c1".into(),
            owner_id: "u".into(),
            title: "t".into(),
            category: None,
            tags: vec![],
            stream_key_hash: "k".into(),
            live_state: raft::LiveState::Offline,
            current_session_id: None,
            moderators: vec![],
            created_at: 0,
            updated_at: 0,
        };
        apply(
            &mut us,
            vec![
                Command::CreateChannel(channel),
                Command::SetHomeRegion { channel_id: "c1".into(), region: Some("us".into()) },
            ],
        );
        let point = choose(&us, "c1", now).unwrap();
        assert_eq!(point.home_region.as_deref(), Some("us"));
        assert_eq!(point.best.node_id, 2);
        assert_eq!(point.best.rtmp_url.as_deref(), Some("rtmp://10.0.1.2:1935/live"));
        assert_eq!(point.alternatives.iter().map(|n| n.node_id).collect::<Vec<_>>(), vec![1]);

        // Node 2 stops reporting: the answer moves to the other region's node.
        assert_eq!(choose(&us, "c1", now + raft::load::REPORT_STALE_AFTER_MS).unwrap().best.node_id, 1);
        // Nobody ready: no answer.
        assert!(choose(&us, "c1", now + 60_000).is_none());
    }
}
