//! Channels: create and manage them, go live and off air, stream keys, follows and subscriptions.
//!
//! A channel's stream key is generated here (160 random bits), shown to the caller once in the
//! create or rotate answer, and replicated only as its SHA-256 hash; ingest looks a publishing key
//! up by that hash (`CatalogState::channel_by_stream_key_hash`). Channel JSON never carries the
//! hash.
//!
//! Writes go through the catalog: `CreateChannel`, `UpdateChannel`, `DeleteChannel`,
//! `SetStreamKey`, `StartSession`, `EndSession`, `Follow`/`Unfollow`, `Subscribe`/`Unsubscribe`.
//! The state machine re-checks what only it can decide race-free (already live, not live).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use raft::{now_millis, Channel, ChannelPatch, Command, LiveState, Response, StreamSession, UnixMillis};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::ApiJson;
use crate::ApiState;

/// Longest channel title, in characters.
pub const MAX_TITLE_CHARS: usize = 140;
/// Most tags on a channel.
pub const MAX_TAGS: usize = 10;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 32;
/// Longest category, in characters.
pub const MAX_CATEGORY_CHARS: usize = 64;
/// Most moderators on a channel.
pub const MAX_MODERATORS: usize = 50;
/// Most renditions one broadcast may ask for.
pub const MAX_RENDITIONS: usize = 8;

pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::default()
        .routes(routes!(list_channels, create_channel))
        .routes(routes!(get_channel, update_channel, delete_channel))
        .routes(routes!(start_stream))
        .routes(routes!(stop_stream))
        .routes(routes!(list_sessions))
        .routes(routes!(rotate_stream_key))
        .routes(routes!(follow, unfollow))
        .routes(routes!(subscribe, unsubscribe))
}

/// Where a channel's adaptive playlist is served (relative: origin and edges serve the same path).
pub fn playback_url(channel_id: &str) -> String {
    format!("/hls/{channel_id}/master.m3u8")
}

/// Where a channel is played over WebRTC (WHEP), relative to the node.
pub fn whep_url(channel_id: &str) -> String {
    format!("/whep/{channel_id}")
}

/// Where this node's edge listens, to hand viewers a playback URL that goes through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgePlayback {
    pub port: u16,
    pub https: bool,
}

impl EdgePlayback {
    /// `{scheme}://{host the caller used}:{edge port}/hls/{id}/master.m3u8`: the caller reached
    /// this node under that host name, so it reaches the node's edge under it too. `None` if the
    /// request carries no usable `Host`.
    pub fn url(&self, headers: &HeaderMap, channel_id: &str) -> Option<String> {
        self.url_for(headers, &playback_url(channel_id))
    }

    /// `{scheme}://{host the caller used}:{edge port}{path}`, for any path the edge serves.
    pub fn url_for(&self, headers: &HeaderMap, path: &str) -> Option<String> {
        let host = headers.get(header::HOST)?.to_str().ok()?;
        // Strip the port: `name:8080`, `[::1]:8080`, or a bare name.
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty() => name,
            _ => host,
        };
        let plausible = !name.is_empty()
            && name.len() <= 253
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
        if !plausible || (name.contains(':') && !name.starts_with('[')) {
            return None;
        }
        let scheme = if self.https { "https" } else { "http" };
        Some(format!("{scheme}://{name}:{}{path}", self.port))
    }
}

/// A channel as the API shows it: the record without its key hash, plus playback and audience.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelView {
    pub id: String,
    pub owner_id: String,
    pub title: String,
    pub category: Option<String>,
    pub tags: Vec<String>,
    pub live_state: LiveState,
    pub current_session_id: Option<String>,
    pub moderators: Vec<String>,
    pub playback_url: String,
    /// The same playlist through the caller's nearest edge (absolute; see `crate::routing`),
    /// or this node's own edge when it is the choice or no edge is up: what players should load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge_playback_url: Option<String>,
    /// Where the channel's broadcasts are ingested and served from (see `raft::home`); none until
    /// the owner sets one or the channel is first published.
    pub home_region: Option<String>,
    /// The control node's steered multivariant playlist (`/play/{id}/master.m3u8`: every
    /// variant once per edge, with HLS Content Steering), in single-channel answers when edges
    /// other than this node's are up: what hls.js players should load to survive an edge's loss.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steered_playback_url: Option<String>,
    /// WebRTC playback (WHEP, sub-second): `POST` an SDP offer here. Present while the channel
    /// is live and the node serves WHEP; a node that does not package the channel redirects
    /// (307) to one that does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whep_url: Option<String>,
    pub followers: u64,
    pub subscribers: u64,
    #[schema(value_type = i64)]
    pub created_at: UnixMillis,
    #[schema(value_type = i64)]
    pub updated_at: UnixMillis,
    /// Only in the answers that create or rotate the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_key: Option<String>,
}

impl ChannelView {
    pub fn new(channel: &Channel, followers: usize, subscribers: usize) -> Self {
        ChannelView {
            id: channel.id.clone(),
            owner_id: channel.owner_id.clone(),
            title: channel.title.clone(),
            category: channel.category.clone(),
            tags: channel.tags.clone(),
            live_state: channel.live_state,
            current_session_id: channel.current_session_id.clone(),
            moderators: channel.moderators.clone(),
            playback_url: playback_url(&channel.id),
            edge_playback_url: None,
            home_region: None,
            steered_playback_url: None,
            whep_url: None,
            followers: followers as u64,
            subscribers: subscribers as u64,
            created_at: channel.created_at,
            updated_at: channel.updated_at,
            stream_key: None,
        }
    }

    /// The view of one channel with its counts read from `state`.
    pub fn read(state: &raft::state::CatalogState, channel: &Channel) -> Self {
        let mut view = Self::new(channel, state.followers(&channel.id), state.subscribers(&channel.id));
        view.home_region = state.home_region(&channel.id).map(str::to_owned);
        view
    }
}

/// A fresh stream key: 160 random bits in hex (safe in RTMP URLs and OBS settings).
pub fn new_stream_key() -> String {
    format!("live_{}", hex::encode(rand::random::<[u8; 20]>()))
}

/// Fetch a channel from the local replica, or linearizably when this replica hasn't seen it yet
/// (it may have been created a moment ago through another node).
pub(crate) async fn load_channel(state: &ApiState, id: &str) -> ApiResult<Channel> {
    let find = |s: &raft::state::CatalogState| s.channel(id).cloned();
    if let Some(channel) = state.catalog.read(find) {
        return Ok(channel);
    }
    state.catalog.read_linearizable(find).await?.ok_or_else(|| ApiError::not_found("channel", id))
}

pub(crate) fn require_owner_or_admin(caller: &Caller, channel: &Channel, action: &str) -> ApiResult<()> {
    caller.require_authenticated()?;
    if caller.is_admin() || caller.user_id() == Some(channel.owner_id.as_str()) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("only the channel's owner or an admin can {action}")))
    }
}

fn has_control_chars(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Trimmed title of 1..=140 characters.
pub(crate) fn validate_title(title: &str) -> ApiResult<String> {
    let title = title.trim();
    let chars = title.chars().count();
    if chars == 0 || chars > MAX_TITLE_CHARS {
        return Err(ApiError::invalid("title", format!("must be 1 to {MAX_TITLE_CHARS} characters")));
    }
    if has_control_chars(title) {
        return Err(ApiError::invalid("title", "must not contain control characters"));
    }
    Ok(title.to_owned())
}

/// Tags trimmed, lower-cased and deduplicated (first occurrence kept); each 1..=32 characters,
/// at most ten distinct tags.
pub(crate) fn validate_tags(tags: &[String]) -> ApiResult<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for (i, tag) in tags.iter().enumerate() {
        let tag = tag.trim().to_lowercase();
        let chars = tag.chars().count();
        if chars == 0 || chars > MAX_TAG_CHARS || has_control_chars(&tag) {
            return Err(ApiError::invalid(
                &format!("tags[{i}]"),
                format!("each tag must be 1 to {MAX_TAG_CHARS} printable characters"),
            ));
        }
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.len() > MAX_TAGS {
        return Err(ApiError::invalid("tags", format!("at most {MAX_TAGS} tags")));
    }
    Ok(out)
}

/// A trimmed category (blank means none), at most 64 characters.
pub(crate) fn validate_category(category: Option<&str>) -> ApiResult<Option<String>> {
    let Some(category) = category.map(str::trim).filter(|c| !c.is_empty()) else { return Ok(None) };
    if category.chars().count() > MAX_CATEGORY_CHARS || has_control_chars(category) {
        return Err(ApiError::invalid(
            "category",
            format!("must be at most {MAX_CATEGORY_CHARS} printable characters"),
        ));
    }
    Ok(Some(category.to_owned()))
}

/// Rendition names: `source` (passthrough) or a height ladder step like `720p` / `1080p60`.
pub(crate) fn validate_renditions(renditions: &[String]) -> ApiResult<Vec<String>> {
    if renditions.is_empty() {
        return Err(ApiError::invalid("renditions", "list at least one rendition, e.g. [\"source\"]"));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, name) in renditions.iter().enumerate() {
        let name = name.trim().to_lowercase();
        if !is_rendition_name(&name) {
            return Err(ApiError::invalid(
                &format!("renditions[{i}]"),
                "expected \"source\" or a height like \"720p\" or \"1080p60\" (144p to 4320p)",
            ));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    if out.len() > MAX_RENDITIONS {
        return Err(ApiError::invalid("renditions", format!("at most {MAX_RENDITIONS} renditions")));
    }
    Ok(out)
}

fn is_rendition_name(name: &str) -> bool {
    if name == "source" {
        return true;
    }
    let Some((height, rate)) = name.split_once('p') else { return false };
    let height_ok = !height.is_empty()
        && height.len() <= 4
        && height.bytes().all(|b| b.is_ascii_digit())
        && height.parse::<u32>().is_ok_and(|h| (144..=4320).contains(&h));
    let rate_ok = rate.is_empty() || matches!(rate, "24" | "25" | "30" | "48" | "50" | "60");
    height_ok && rate_ok
}

/// An optional JSON body (empty means `None`), with the same error answers as [`ApiJson`].
pub(crate) fn optional_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> ApiResult<Option<T>> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            crate::json::body_too_large()
        } else {
            ApiError::bad_request("unreadable_body", format!("could not read the request body: {rejection}"))
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    crate::json::parse(&body).map(Some)
}

/// `Some(None)` for an explicit `null`, `None` for a missing field.
fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only the channels of this user.
    owner_id: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/channels",
    tag = "channels",
    security((), ("bearer" = []), ("bitriver_session" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Every channel (optionally of one owner)", body = Vec<ChannelView>),
    )
)]
async fn list_channels(
    State(state): State<ApiState>,
    crate::audit::Peer(peer): crate::audit::Peer,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Json<Vec<ChannelView>> {
    let mut channels: Vec<ChannelView> = state.catalog.read(|s| {
        let followers = s.follower_counts();
        let subscribers = s.subscriber_counts();
        s.channels()
            .filter(|c| query.owner_id.as_ref().is_none_or(|owner| &c.owner_id == owner))
            .map(|c| {
                let count = |m: &std::collections::BTreeMap<&str, usize>| m.get(c.id.as_str()).copied().unwrap_or(0);
                let mut view = ChannelView::new(c, count(&followers), count(&subscribers));
                view.home_region = s.home_region(&c.id).map(str::to_owned);
                view
            })
            .collect()
    });
    for view in &mut channels {
        view.edge_playback_url = state.edge_playback_url(&headers, peer, &view.id);
    }
    Json(channels)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateChannelBody {
    /// Defaults to the caller; only admins may name someone else.
    #[schema(required = false)]
    owner_id: Option<String>,
    #[schema(min_length = 1, max_length = 140)]
    title: String,
    #[serde(default)]
    #[schema(max_items = 10)]
    tags: Vec<String>,
    #[schema(required = false, max_length = 64)]
    category: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/channels",
    tag = "channels",
    request_body = CreateChannelBody,
    responses(
        (status = 201, description = "The new channel, with its stream key (shown only here and on rotation)", body = ChannelView),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not a creator or admin, or another user's channel"),
    )
)]
async fn create_channel(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateChannelBody>,
) -> ApiResult<(StatusCode, Json<ChannelView>)> {
    caller.require_authenticated()?;
    if !caller.has_role("creator") {
        return Err(ApiError::forbidden("only creators and admins can create channels"));
    }
    let owner_id = match (body.owner_id.map(|o| o.trim().to_owned()).filter(|o| !o.is_empty()), caller.user_id()) {
        (Some(owner), _) => owner,
        (None, Some(me)) => me.to_owned(),
        (None, None) => return Err(ApiError::invalid("ownerId", "required (the development admin has no account)")),
    };
    if !caller.is_admin() && caller.user_id() != Some(owner_id.as_str()) {
        return Err(ApiError::forbidden("creators can only create channels they own"));
    }
    let title = validate_title(&body.title)?;
    let tags = validate_tags(&body.tags)?;
    let category = validate_category(body.category.as_deref())?;
    let owner_exists = state.catalog.read(|s| s.user(&owner_id).is_some())
        || state.catalog.read_linearizable(|s| s.user(&owner_id).is_some()).await?;
    if !owner_exists {
        return Err(ApiError::invalid("ownerId", format!("no user {owner_id}")));
    }

    let stream_key = new_stream_key();
    let now = now_millis();
    let channel = Channel {
        id: hex::encode(rand::random::<[u8; 12]>()),
        owner_id,
        title,
        category,
        tags,
        stream_key_hash: raft::stream_key_hash(&stream_key),
        live_state: LiveState::Offline,
        current_session_id: None,
        moderators: Vec::new(),
        created_at: now,
        updated_at: now,
    };
    let created = match state.catalog.propose(Command::CreateChannel(channel)).await? {
        Response::Channel(c) => c,
        other => return Err(unexpected(other)),
    };
    let mut view = ChannelView::new(&created, 0, 0);
    view.stream_key = Some(stream_key);
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(
    get,
    path = "/api/channels/{id}",
    tag = "channels",
    security((), ("bearer" = []), ("bitriver_session" = [])),
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "The channel", body = ChannelView),
        (status = 404, description = "No such channel"),
        (status = 451, description = "Hidden by a copyright notice (its owner and admins still see it)", body = crate::error::Body),
    )
)]
async fn get_channel(
    State(state): State<ApiState>,
    crate::audit::Peer(peer): crate::audit::Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    caller: Caller,
) -> ApiResult<Json<ChannelView>> {
    let channel = load_channel(&state, &id).await?;
    let owner = caller.is_admin() || caller.user_id() == Some(channel.owner_id.as_str());
    if !owner && state.catalog.read(|s| s.is_taken_down(&channel.id)) {
        return Err(ApiError::new(
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            "unavailable_for_legal_reasons",
            "this channel is hidden following a copyright notice",
        ));
    }
    let mut view = state.catalog.read(|s| ChannelView::read(s, &channel));
    (view.edge_playback_url, view.steered_playback_url) = state.playback_urls(&headers, peer, &view.id);
    if state.whep && view.live_state == LiveState::Live {
        view.whep_url = Some(whep_url(&view.id));
    }
    Ok(Json(view))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateChannelBody {
    #[schema(required = false)]
    title: Option<String>,
    #[schema(required = false)]
    tags: Option<Vec<String>>,
    /// `null` clears the category.
    #[serde(default, deserialize_with = "double_option")]
    category: Option<Option<String>>,
    /// User ids; replaces the list.
    #[schema(required = false)]
    moderators: Option<Vec<String>>,
    /// A region some node of the cluster is in (`--region`); `null` clears it, and the next
    /// publish sets it to the region of the ingest node that takes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(required = false)]
    home_region: Option<Option<String>>,
}

#[utoipa::path(
    patch,
    path = "/api/channels/{id}",
    tag = "channels",
    params(("id" = String, Path, description = "Channel id")),
    request_body = UpdateChannelBody,
    responses(
        (status = 200, description = "The updated channel", body = ChannelView),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not the channel's owner or an admin"),
        (status = 404, description = "No such channel"),
    )
)]
async fn update_channel(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateChannelBody>,
) -> ApiResult<Json<ChannelView>> {
    let channel = load_channel(&state, &id).await?;
    require_owner_or_admin(&caller, &channel, "change this channel")?;
    let mut patch = ChannelPatch { id: channel.id.clone(), at: now_millis(), ..ChannelPatch::default() };
    if let Some(title) = &body.title {
        patch.title = Some(validate_title(title)?);
    }
    if let Some(tags) = &body.tags {
        patch.tags = Some(validate_tags(tags)?);
    }
    if let Some(category) = &body.category {
        patch.category = Some(validate_category(category.as_deref())?);
    }
    if let Some(moderators) = &body.moderators {
        let mut out: Vec<String> = Vec::new();
        for (i, m) in moderators.iter().enumerate() {
            let m = m.trim();
            // The user may have been created a moment ago through another node.
            let field = format!("moderators[{i}]");
            crate::read_or_catch_up(&state, |s| {
                s.user(m).map(|_| ()).ok_or_else(|| ApiError::invalid(&field, format!("no user {m}")))
            })
            .await?;
            if !out.iter().any(|o| o == m) {
                out.push(m.to_owned());
            }
        }
        if out.len() > MAX_MODERATORS {
            return Err(ApiError::invalid("moderators", format!("at most {MAX_MODERATORS} moderators")));
        }
        patch.moderators = Some(out);
    }
    let home = match &body.home_region {
        Some(Some(region)) => {
            let region = region.trim();
            let known = state.catalog.read(|s| s.nodes().any(|n| n.region == region));
            if !raft::home::valid_region(region) || !known {
                return Err(ApiError::invalid("homeRegion", format!("no node of the cluster is in region {region:?}")));
            }
            Some(Command::SetHomeRegion { channel_id: channel.id.clone(), region: Some(region.to_owned()) })
        }
        Some(None) => Some(Command::SetHomeRegion { channel_id: channel.id.clone(), region: None }),
        None => None,
    };
    let updated = match state.catalog.propose(Command::UpdateChannel(patch)).await? {
        Response::Channel(c) => c,
        other => return Err(unexpected(other)),
    };
    if let Some(home) = home {
        state.catalog.propose(home).await?;
    }
    Ok(Json(state.catalog.read(|s| ChannelView::read(s, &updated))))
}

#[utoipa::path(
    delete,
    path = "/api/channels/{id}",
    tag = "channels",
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not the channel's owner or an admin"),
        (status = 404, description = "No such channel"),
        (status = 409, description = "The channel is live", body = crate::error::Body),
    )
)]
async fn delete_channel(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let channel = load_channel(&state, &id).await?;
    require_owner_or_admin(&caller, &channel, "delete this channel")?;
    if channel.live_state == LiveState::Live {
        return Err(ApiError::conflict("already_live", "stop the broadcast before deleting the channel"));
    }
    // The state machine refuses a live channel too, in case it went live since the read above.
    state.catalog.propose(Command::DeleteChannel { id: channel.id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StartBody {
    /// `source` and/or heights like `720p`, `1080p60`; default `["source"]`.
    #[schema(required = false)]
    renditions: Option<Vec<String>>,
}

#[utoipa::path(
    post,
    path = "/api/channels/{id}/stream/start",
    tag = "channels",
    params(("id" = String, Path, description = "Channel id")),
    request_body(content = Option<StartBody>, description = "Optional; an empty body means `source` only"),
    responses(
        (status = 201, description = "The new broadcast session", body = StreamSession),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not the channel's owner or an admin"),
        (status = 404, description = "No such channel"),
        (status = 409, description = "Already live", body = crate::error::Body),
    )
)]
async fn start_stream(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<StreamSession>)> {
    let channel = load_channel(&state, &id).await?;
    require_owner_or_admin(&caller, &channel, "start a broadcast")?;
    let body: Option<StartBody> = optional_json(body)?;
    let renditions = match body.and_then(|b| b.renditions) {
        Some(r) => validate_renditions(&r)?,
        None => vec!["source".to_owned()],
    };
    let session = StreamSession {
        id: hex::encode(rand::random::<[u8; 12]>()),
        channel_id: channel.id,
        started_at: now_millis(),
        ended_at: None,
        renditions,
        peak_concurrent: 0,
        ingest_node: None,
    };
    match state.catalog.propose(Command::StartSession(session)).await? {
        Response::Session(s) => Ok((StatusCode::CREATED, Json(s))),
        other => Err(unexpected(other)),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StopBody {
    #[schema(required = false)]
    peak_concurrent: Option<u64>,
}

#[utoipa::path(
    post,
    path = "/api/channels/{id}/stream/stop",
    tag = "channels",
    params(("id" = String, Path, description = "Channel id")),
    request_body(content = Option<StopBody>, description = "Optional"),
    responses(
        (status = 200, description = "The ended session", body = StreamSession),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not the channel's owner or an admin"),
        (status = 404, description = "No such channel"),
        (status = 409, description = "Not live", body = crate::error::Body),
    )
)]
async fn stop_stream(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<StreamSession>> {
    let channel = load_channel(&state, &id).await?;
    require_owner_or_admin(&caller, &channel, "stop a broadcast")?;
    let body: Option<StopBody> = optional_json(body)?;
    let command = Command::EndSession {
        channel_id: channel.id,
        ended_at: now_millis(),
        peak_concurrent: body.and_then(|b| b.peak_concurrent),
    };
    match state.catalog.propose(command).await? {
        Response::Session(s) => Ok(Json(s)),
        other => Err(unexpected(other)),
    }
}

#[utoipa::path(
    get,
    path = "/api/channels/{id}/sessions",
    tag = "channels",
    security((), ("bearer" = []), ("bitriver_session" = [])),
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "Broadcast sessions, newest first", body = Vec<StreamSession>),
        (status = 404, description = "No such channel"),
    )
)]
async fn list_sessions(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Vec<StreamSession>>> {
    let channel = load_channel(&state, &id).await?;
    let mut sessions: Vec<StreamSession> =
        state.catalog.read(|s| s.sessions_of_channel(&channel.id).cloned().collect());
    sessions.sort_by(|a, b| b.started_at.cmp(&a.started_at).then_with(|| b.id.cmp(&a.id)));
    Ok(Json(sessions))
}

#[utoipa::path(
    post,
    path = "/api/channels/{id}/stream-key/rotate",
    tag = "channels",
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "The channel with its new stream key", body = ChannelView),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not the channel's owner or an admin"),
        (status = 404, description = "No such channel"),
    )
)]
async fn rotate_stream_key(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ChannelView>> {
    let channel = load_channel(&state, &id).await?;
    require_owner_or_admin(&caller, &channel, "rotate the stream key")?;
    let stream_key = new_stream_key();
    let command = Command::SetStreamKey {
        channel_id: channel.id,
        stream_key_hash: raft::stream_key_hash(&stream_key),
        at: now_millis(),
    };
    let updated = match state.catalog.propose(command).await? {
        Response::Channel(c) => c,
        other => return Err(unexpected(other)),
    };
    let mut view = state.catalog.read(|s| ChannelView::read(s, &updated));
    view.stream_key = Some(stream_key);
    Ok(Json(view))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct FollowState {
    following: bool,
    followers: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct SubscriptionState {
    subscribed: bool,
    subscribers: u64,
}

/// Propose a follow/subscription change for the calling user and return the fresh state.
async fn set_relation(
    state: &ApiState,
    caller: &Caller,
    channel_id: &str,
    subscribe: bool,
    on: bool,
) -> ApiResult<(bool, u64)> {
    let user_id = caller.require_user()?.id.clone();
    let channel = load_channel(state, channel_id).await?;
    let (channel_id, at) = (channel.id, now_millis());
    let command = match (subscribe, on) {
        (false, true) => Command::Follow { channel_id: channel_id.clone(), user_id: user_id.clone(), at },
        (false, false) => Command::Unfollow { channel_id: channel_id.clone(), user_id: user_id.clone() },
        (true, true) => Command::Subscribe { channel_id: channel_id.clone(), user_id: user_id.clone(), at },
        (true, false) => Command::Unsubscribe { channel_id: channel_id.clone(), user_id: user_id.clone() },
    };
    state.catalog.propose(command).await?;
    // Linearizable so the count includes this change even when the leader is another node.
    let answer = state
        .catalog
        .read_linearizable(|s| {
            if subscribe {
                (s.is_subscribed(&channel_id, &user_id), s.subscribers(&channel_id) as u64)
            } else {
                (s.is_following(&channel_id, &user_id), s.followers(&channel_id) as u64)
            }
        })
        .await?;
    Ok(answer)
}

#[utoipa::path(
    post,
    path = "/api/channels/{id}/follow",
    tag = "channels",
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "Following now", body = FollowState),
        (status = 401, description = "Not signed in as a user"),
        (status = 404, description = "No such channel"),
    )
)]
async fn follow(State(state): State<ApiState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<FollowState>> {
    let (following, followers) = set_relation(&state, &caller, &id, false, true).await?;
    Ok(Json(FollowState { following, followers }))
}

#[utoipa::path(
    delete,
    path = "/api/channels/{id}/follow",
    tag = "channels",
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "Not following any more", body = FollowState),
        (status = 401, description = "Not signed in as a user"),
        (status = 404, description = "No such channel"),
    )
)]
async fn unfollow(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<FollowState>> {
    let (following, followers) = set_relation(&state, &caller, &id, false, false).await?;
    Ok(Json(FollowState { following, followers }))
}

#[utoipa::path(
    post,
    path = "/api/channels/{id}/subscribe",
    tag = "channels",
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "Subscribed now", body = SubscriptionState),
        (status = 401, description = "Not signed in as a user"),
        (status = 404, description = "No such channel"),
    )
)]
async fn subscribe(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<SubscriptionState>> {
    let (subscribed, subscribers) = set_relation(&state, &caller, &id, true, true).await?;
    Ok(Json(SubscriptionState { subscribed, subscribers }))
}

#[utoipa::path(
    delete,
    path = "/api/channels/{id}/subscribe",
    tag = "channels",
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "Not subscribed any more", body = SubscriptionState),
        (status = 401, description = "Not signed in as a user"),
        (status = 404, description = "No such channel"),
    )
)]
async fn unsubscribe(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<SubscriptionState>> {
    let (subscribed, subscribers) = set_relation(&state, &caller, &id, true, false).await?;
    Ok(Json(SubscriptionState { subscribed, subscribers }))
}

fn unexpected(response: Response) -> ApiError {
    ApiError::internal(format!("unexpected catalog answer: {response:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_normalized() {
        let tags = validate_tags(&[" Outdoors".into(), "outdoors".into(), "TRAVEL".into()]).unwrap();
        assert_eq!(tags, ["outdoors", "travel"]);
        let err = validate_tags(&["ok".into(), " ".into()]).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("tags[1]"));
        let err = validate_tags(&["x".repeat(33)]).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("tags[0]"));
        let eleven: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
        assert_eq!(validate_tags(&eleven).unwrap_err().field.as_deref(), Some("tags"));
        assert_eq!(validate_tags(&eleven[..10]).unwrap().len(), 10);
    }

    #[test]
    fn titles_are_bounded() {
        assert_eq!(validate_title("  River  ").unwrap(), "River");
        assert!(validate_title("   ").is_err());
        assert!(validate_title(&"é".repeat(140)).is_ok());
        assert!(validate_title(&"é".repeat(141)).is_err());
        assert!(validate_title("a\u{0}b").is_err());
    }

    #[test]
    fn rendition_names() {
        for ok in ["source", "1080p", "720p", "1080p60", "144p", "4320p"] {
            assert!(is_rendition_name(ok), "{ok}");
        }
        for bad in ["", "p", "720", "720p61", "99999p", "abcp", "100p", "+720p", "720pp"] {
            assert!(!is_rendition_name(bad), "{bad}");
        }
        assert_eq!(validate_renditions(&["720P".into(), "720p".into()]).unwrap(), ["720p"]);
        assert_eq!(validate_renditions(&[]).unwrap_err().field.as_deref(), Some("renditions"));
    }

    #[test]
    fn stream_keys_are_long_and_distinct() {
        let key = new_stream_key();
        assert!(key.len() >= 5 + 32, "at least 128 bits");
        assert_ne!(key, new_stream_key());
    }

    #[test]
    fn optional_bodies() {
        let body = |b: &'static [u8]| Ok(Bytes::from_static(b));
        assert!(optional_json::<StopBody>(body(b"")).unwrap().is_none());
        assert!(optional_json::<StopBody>(body(b" \n")).unwrap().is_none());
        let stop: StopBody = optional_json(body(b"{\"peakConcurrent\":7}")).unwrap().unwrap();
        assert_eq!(stop.peak_concurrent, Some(7));
        let e = optional_json::<StopBody>(body(b"{\"peakConcurrent\":-1}")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("peakConcurrent"));
        assert_eq!(optional_json::<StopBody>(body(b"{")).unwrap_err().status, StatusCode::BAD_REQUEST);
    }
}

#[cfg(test)]
mod edge_playback_tests {
    use super::*;

    fn url(host: &str) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, host.parse().unwrap());
        EdgePlayback { port: 8081, https: false }.url(&headers, "ch1")
    }

    #[test]
    fn edge_url_uses_the_callers_host_and_the_edge_port() {
        assert_eq!(url("example.com:8080").as_deref(), Some("http://example.com:8081/hls/ch1/master.m3u8"));
        assert_eq!(url("example.com").as_deref(), Some("http://example.com:8081/hls/ch1/master.m3u8"));
        assert_eq!(url("[::1]:8080").as_deref(), Some("http://[::1]:8081/hls/ch1/master.m3u8"));
        assert_eq!(url("evil.com/x?"), None);
        assert_eq!(url("a:b:c"), None);
        assert_eq!(EdgePlayback { port: 1, https: true }.url(&HeaderMap::new(), "ch1"), None);
    }
}
