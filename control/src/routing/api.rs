//! The routing endpoints, each registered once with its OpenAPI operation:
//!
//! - `GET /play/{id}`: `302` to `master.m3u8` on the viewer's edge;
//! - `GET /play/{id}/master.m3u8`: the steered multivariant playlist (every variant once
//!   per edge, see [`super::steering`]), served by control nodes from the live session's
//!   renditions in the catalog;
//! - `GET /steering/{channelId}.json`: the steering manifest for this viewer;
//! - `GET /api/regions`, `PUT /api/regions/{region}`: the operator's network map (admins).
//!
//! All of them answer from one choice ([`Routing::rank`]), so `/play`, `edgePlaybackUrl` and the
//! first pathway of the steering answer agree for a viewer. Answers depend on who asks: they are
//! never cached (`Cache-Control: no-store`), and say which headers they vary on.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use raft::state::regions::RegionRecord;
use raft::state::CatalogState;
use raft::{CatalogError, Command, LiveState};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::steering::{self, Pathway, SteeringManifest};
use super::{Routing, Viewer};
use crate::audit::Peer;
use crate::auth::Caller;
use crate::channels::{load_channel, playback_url};
use crate::error::{ApiError, ApiResult};
use crate::json::ApiJson;
use crate::ApiState;

/// The header that tells which region a routing answer was made for, and how it was found
/// (`eu-west; source=network`): for operators' debugging and the tests.
pub const REGION_HEADER: &str = "x-bitriver-region";

pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::default()
        .routes(routes!(play))
        .routes(routes!(steered_master))
        .routes(routes!(steering_manifest))
        .routes(routes!(list_regions))
        .routes(routes!(put_region))
}

/// One edge chosen for a viewer: its pathway id and absolute playlist base.
struct Chosen {
    viewer: Viewer,
    /// Best first; empty when no edge is up.
    pathways: Vec<Pathway>,
    /// The best edge is this node's own (use the caller's host name for it).
    first_is_me: bool,
}

impl ApiState {
    fn choose(&self, s: &CatalogState, channel_id: &str, peer: Option<SocketAddr>, headers: &HeaderMap) -> Chosen {
        let me = self.catalog.node_id();
        let viewer = self.routing.viewer(s, peer, headers, me);
        let ranked = self.routing.rank(s, channel_id, &viewer, Instant::now());
        let first_is_me = ranked.first().is_some_and(|c| c.node_id == me);
        let pathways =
            ranked.into_iter().map(|c| Pathway { id: steering::pathway_id(c.node_id), base_url: c.base_url }).collect();
        Chosen { viewer, pathways, first_is_me }
    }

    /// The playlist URL through the viewer's edge ([`Routing::rank`]). When that edge is this
    /// node's own, or no edge is up, it is the local edge under the host name the caller used
    /// (an all-in-one node reached as `myhost:8080` is played from `myhost:8081`).
    pub fn edge_playback_url(&self, headers: &HeaderMap, peer: Option<SocketAddr>, channel_id: &str) -> Option<String> {
        let chosen = self.catalog.read(|s| self.choose(s, channel_id, peer, headers));
        self.playback_from(&chosen, headers, channel_id)
    }

    /// `(edgePlaybackUrl, steeredPlaybackUrl)` for a channel page: the steered playlist is
    /// offered when some edge other than this node's own is up (an all-in-one node keeps the
    /// plain playlist, which carries exact codecs).
    pub fn playback_urls(
        &self,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
        channel_id: &str,
    ) -> (Option<String>, Option<String>) {
        let chosen = self.catalog.read(|s| self.choose(s, channel_id, peer, headers));
        let me = steering::pathway_id(self.catalog.node_id());
        let steered = chosen.pathways.iter().any(|p| p.id != me).then(|| format!("/play/{channel_id}/master.m3u8"));
        (self.playback_from(&chosen, headers, channel_id), steered)
    }

    fn playback_from(&self, chosen: &Chosen, headers: &HeaderMap, channel_id: &str) -> Option<String> {
        let local = self.edge_playback.as_ref().and_then(|edge| edge.url(headers, channel_id));
        match chosen.pathways.first() {
            Some(_) if chosen.first_is_me && local.is_some() => local,
            Some(first) => Some(format!("{}{}", first.base_url, playback_url(channel_id))),
            None => local,
        }
    }
}

/// `Cache-Control: no-store`, `Vary` when proxies are trusted, and the region header.
fn personal(mut response: Response, routing: &Routing, viewer: &Viewer) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Embeds on third-party sites load the playlist and the steering manifest from their pages.
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    if let Some(vary) = routing.vary().and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::VARY, vary);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("{}; source={}", viewer.region, viewer.source.as_str())) {
        headers.insert(REGION_HEADER, value);
    }
    response
}

fn no_edge() -> ApiError {
    ApiError::unavailable("no edge is available to serve this channel; retry shortly")
}

#[utoipa::path(
    get,
    path = "/play/{id}",
    tag = "playback",
    security(()),
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 302, description = "To `master.m3u8` on the viewer's edge (`Location`), or to this node's \
            `/hls/{id}/master.m3u8` when no edge is up; never cached"),
        (status = 404, description = "No such channel"),
    )
)]
async fn play(
    State(state): State<ApiState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Path(channel_id): Path<String>,
) -> ApiResult<Response> {
    let channel = load_channel(&state, &channel_id).await?;
    let chosen = state.catalog.read(|s| state.choose(s, &channel.id, peer, &headers));
    // No edge up: the origin path, as `playbackUrl` gives it (served by origin nodes).
    let url = state.playback_from(&chosen, &headers, &channel.id).unwrap_or_else(|| playback_url(&channel.id));
    let location = HeaderValue::from_str(&url).map_err(|_| no_edge())?;
    let response = (StatusCode::FOUND, [(header::LOCATION, location)]).into_response();
    Ok(personal(response, &state.routing, &chosen.viewer))
}

#[utoipa::path(
    get,
    path = "/play/{id}/master.m3u8",
    tag = "playback",
    security(()),
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "The steered multivariant playlist: every rendition once per edge \
            (`PATHWAY-ID` = `edge-{nodeId}`, absolute URIs), `EXT-X-CONTENT-STEERING` naming \
            `/steering/{channelId}.json`; never cached", content_type = "application/vnd.apple.mpegurl", body = String),
        (status = 404, description = "No such channel"),
        (status = 409, description = "The channel is not live (its renditions are not known yet)", body = crate::error::Body),
        (status = 503, description = "No edge is up", body = crate::error::Body),
    )
)]
async fn steered_master(
    State(state): State<ApiState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Path(channel_id): Path<String>,
) -> ApiResult<Response> {
    let channel = load_channel(&state, &channel_id).await?;
    let (chosen, renditions) = state.catalog.read(|s| {
        let renditions = (channel.live_state == LiveState::Live)
            .then(|| channel.current_session_id.as_deref().and_then(|id| s.session(id)))
            .flatten()
            .map(|session| session.renditions.clone());
        (state.choose(s, &channel.id, peer, &headers), renditions)
    });
    let renditions = renditions
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::conflict("not_live", format!("channel {} is not live", channel.id)))?;
    let mut pathways = chosen.pathways.clone();
    if pathways.is_empty() {
        // No edge in the directory is up: this node's own edge, if it runs one.
        let local = state.edge_playback.as_ref().and_then(|edge| edge.url(&headers, &channel.id));
        let base = local.as_deref().and_then(|url| url.strip_suffix(&playback_url(&channel.id)));
        pathways.extend(
            base.map(|base| Pathway { id: steering::pathway_id(state.catalog.node_id()), base_url: base.to_owned() }),
        );
    }
    let text = steering::steered_playlist(&channel.id, &renditions, &pathways).ok_or_else(no_edge)?;
    let response = ([(header::CONTENT_TYPE, "application/vnd.apple.mpegurl")], text).into_response();
    Ok(personal(response, &state.routing, &chosen.viewer))
}

#[utoipa::path(
    get,
    path = "/steering/{file}",
    tag = "playback",
    security(()),
    params(("file" = String, Path, description = "`{channelId}.json`")),
    responses(
        (status = 200, description = "The HLS Content Steering manifest for this viewer: \
            `{\"VERSION\":1,\"TTL\":5,\"PATHWAY-PRIORITY\":[\"edge-3\",...]}`; never cached", body = SteeringManifest),
        (status = 404, description = "No such channel (or the name does not end in `.json`)"),
    )
)]
async fn steering_manifest(
    State(state): State<ApiState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Path(file): Path<String>,
) -> ApiResult<Response> {
    let channel_id = file.strip_suffix(".json").ok_or_else(|| ApiError::not_found("steering manifest", &file))?;
    let channel = load_channel(&state, channel_id).await?;
    let chosen = state.catalog.read(|s| state.choose(s, &channel.id, peer, &headers));
    let mut priority: Vec<String> = chosen.pathways.iter().map(|p| p.id.clone()).collect();
    if priority.is_empty() && state.edge_playback.is_some() {
        priority.push(steering::pathway_id(state.catalog.node_id()));
    }
    let response = Json(SteeringManifest::new(priority)).into_response();
    Ok(personal(response, &state.routing, &chosen.viewer))
}

/// A region as `GET /api/regions` shows it: its map entry (empty lists when it has none) and
/// the edges in it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionView {
    pub name: String,
    pub networks: Vec<String>,
    pub neighbours: Vec<String>,
    pub geo: Vec<String>,
    /// Node ids of the edges in this region.
    pub edges: Vec<u64>,
}

fn region_view(s: &CatalogState, record: RegionRecord) -> RegionView {
    let edges = s
        .nodes()
        .filter(|n| n.region == record.name && n.roles.iter().any(|r| r == super::EDGE_ROLE))
        .map(|n| n.id)
        .collect();
    RegionView { name: record.name, networks: record.networks, neighbours: record.neighbours, geo: record.geo, edges }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RegionList {
    pub regions: Vec<RegionView>,
}

#[utoipa::path(
    get,
    path = "/api/regions",
    tag = "regions",
    responses(
        (status = 200, description = "Every region: those of the nodes and those of the map", body = RegionList),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not an admin"),
    )
)]
async fn list_regions(State(state): State<ApiState>, caller: Caller) -> ApiResult<Json<RegionList>> {
    caller.require_admin()?;
    let regions = state.catalog.read(|s| {
        let mut names: Vec<String> = s.region_map().regions().map(|r| r.name.clone()).collect();
        names.extend(s.nodes().map(|n| n.region.clone()));
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let record =
                    s.region_map().region(&name).cloned().unwrap_or(RegionRecord { name, ..Default::default() });
                region_view(s, record)
            })
            .collect()
    });
    Ok(Json(RegionList { regions }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegionBody {
    /// Client networks of the region (`10.1.0.0/16`); must not overlap another region's.
    #[serde(default)]
    networks: Vec<String>,
    /// Regions to fall back to, nearest first.
    #[serde(default)]
    neighbours: Vec<String>,
    /// GeoIP codes mapped here: countries (`FR`) or `continent:EU`.
    #[serde(default)]
    geo: Vec<String>,
}

/// A refusal of the map's rules as a 400 naming the field (the "clear 400s": the body
/// parsed, its content is wrong).
fn region_refusal(e: CatalogError) -> ApiError {
    match e {
        CatalogError::Invalid { field, reason } => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_region", reason).with_field(field)
        }
        other => other.into(),
    }
}

#[utoipa::path(
    put,
    path = "/api/regions/{region}",
    tag = "regions",
    params(("region" = String, Path, description = "Region name, as nodes give it with --region")),
    request_body = RegionBody,
    responses(
        (status = 200, description = "The region as stored (canonical networks)", body = RegionView),
        (status = 400, description = "Unknown region or neighbour, malformed or overlapping network, bad GeoIP code; \
            `error.field` names it; nothing is stored", body = crate::error::Body),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not an admin"),
    )
)]
async fn put_region(
    State(state): State<ApiState>,
    caller: Caller,
    Path(region): Path<String>,
    ApiJson(body): ApiJson<RegionBody>,
) -> ApiResult<Json<RegionView>> {
    caller.require_admin()?;
    let record = RegionRecord { name: region, networks: body.networks, neighbours: body.neighbours, geo: body.geo };
    // Checked here first for a prompt answer; the state machine checks again race-free.
    let record = state.catalog.read(|s| s.check_region(&record)).map_err(region_refusal)?;
    let stored = match state.catalog.propose(Command::SetRegion(record)).await {
        Ok(raft::Response::Region(stored)) => stored,
        Ok(other) => return Err(ApiError::internal(format!("unexpected catalog answer {other:?}"))),
        Err(raft::ProposeError::Rejected(e)) => return Err(region_refusal(e)),
        Err(e) => return Err(e.into()),
    };
    Ok(Json(state.catalog.read(|s| region_view(s, stored))))
}
