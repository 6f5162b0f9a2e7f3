//! Recordings and clips over the API (the entries and their rules: `raft::state::recordings`;
//! the files: the `recordings` crate on the node that holds them).
//!
//! - `GET /api/recordings?channelId=`: published recordings for everyone; drafts too for the
//!   channel's owner and admins. Newest first.
//! - `GET /api/recordings/{id}`, `DELETE /api/recordings/{id}` (owner, admins).
//! - `POST /api/recordings/{id}/publish` (owner, admins): public from now on.
//! - `GET /api/recordings/{id}/clips`, `POST /api/recordings/{id}/clips`
//!   `{"startSeconds","endSeconds","title"}` (owner, admins): queues a clip, cut at keyframes
//!   without re-encoding by the node holding the recording; its `status` goes queued,
//!   processing, then ready or failed (`failure` says why).
//!
//! Playback: `/vod/{id}/master.m3u8` (`playbackPath`), through this node's edge for published
//! recordings (`edgePlaybackUrl`).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use raft::state::recordings::{Recording, RecordingKind, RecordingStatus};
use raft::state::CatalogState;
use raft::{now_millis, Command, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::ApiJson;
use crate::{read_or_catch_up, ApiState};

/// Longest clip title.
pub const MAX_TITLE_CHARS: usize = 140;
/// Longest clip (a highlight, not a copy of the broadcast).
pub const MAX_CLIP_SECONDS: f64 = 3600.0;

pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::default()
        .routes(routes!(list_recordings))
        .routes(routes!(get_recording, delete_recording))
        .routes(routes!(publish_recording))
        .routes(routes!(list_clips, create_clip))
}

/// A recording as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RecordingView {
    id: String,
    channel_id: String,
    owner_id: String,
    title: String,
    kind: RecordingKind,
    status: RecordingStatus,
    /// Why a clip failed.
    failure: Option<String>,
    /// For a clip: the recording it was cut from and the requested range.
    source_id: Option<String>,
    clip_start_ms: Option<u64>,
    clip_end_ms: Option<u64>,
    session_ids: Vec<String>,
    renditions: Vec<String>,
    duration_ms: u64,
    size_bytes: u64,
    thumbnails: u32,
    created_at: i64,
    ended_at: Option<i64>,
    published_at: Option<i64>,
    /// Public (listed for everyone, served by edges); a draft otherwise.
    published: bool,
    /// `/vod/{id}/master.m3u8` on the node holding it (drafts: signed-in owner or admin only).
    playback_path: String,
    /// The same through this node's edge, for published recordings.
    edge_playback_url: Option<String>,
    /// `/vod/{id}/thumb0.jpg` when the recording has a poster.
    poster_path: Option<String>,
}

impl RecordingView {
    fn new(state: &ApiState, headers: &HeaderMap, r: Recording) -> Self {
        let playback_path = format!("/vod/{}/master.m3u8", r.id);
        let edge_playback_url = r
            .is_published()
            .then(|| state.edge_playback.as_ref().and_then(|edge| edge.url_for(headers, &playback_path)))
            .flatten();
        let poster_path = (r.thumbnails > 0).then(|| format!("/vod/{}/thumb0.jpg", r.id));
        RecordingView {
            published: r.is_published(),
            id: r.id,
            channel_id: r.channel_id,
            owner_id: r.owner_id,
            title: r.title,
            kind: r.kind,
            status: r.status,
            failure: r.failure,
            source_id: r.source_id,
            clip_start_ms: r.clip_start_ms,
            clip_end_ms: r.clip_end_ms,
            session_ids: r.session_ids,
            renditions: r.renditions,
            duration_ms: r.duration_ms,
            size_bytes: r.size_bytes,
            thumbnails: r.thumbnails,
            created_at: r.created_at,
            ended_at: r.ended_at,
            published_at: r.published_at,
            playback_path,
            edge_playback_url,
            poster_path,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RecordingList {
    recordings: Vec<RecordingView>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListQuery {
    /// Only this channel's recordings.
    channel_id: Option<String>,
}

/// Whether `caller` manages `recording`: its owner (the channel's owner today) or an admin.
fn manages(s: &CatalogState, caller: &Caller, recording: &Recording) -> bool {
    let Some(me) = caller.user_id() else { return caller.is_admin() };
    caller.is_admin() || recording.owner_id == me || s.channel(&recording.channel_id).is_some_and(|c| c.owner_id == me)
}

/// Whether `caller` sees `recording` at all: published, or managed by them.
fn visible(s: &CatalogState, caller: &Caller, recording: &Recording) -> bool {
    recording.is_visible() && (recording.is_published() || manages(s, caller, recording))
}

/// The recording if `caller` sees it, else 404 (a draft is not there for others).
async fn find(state: &ApiState, caller: &Caller, id: &str) -> ApiResult<Recording> {
    read_or_catch_up(state, |s| {
        s.recording(id).filter(|r| visible(s, caller, r)).cloned().ok_or_else(|| ApiError::not_found("recording", id))
    })
    .await
}

/// The recording if `caller` manages it: 404 if they don't see it, 403 if they only see it.
async fn find_managed(state: &ApiState, caller: &Caller, id: &str) -> ApiResult<Recording> {
    let recording = find(state, caller, id).await?;
    if !state.catalog.read(|s| manages(s, caller, &recording)) {
        return Err(ApiError::forbidden("only the channel's owner or an admin manages its recordings"));
    }
    Ok(recording)
}

#[utoipa::path(
    get,
    path = "/api/recordings",
    tag = "recordings",
    security((), ("bearer" = []), ("bitriver_session" = [])),
    params(ListQuery),
    responses((status = 200, description = "Published recordings, and drafts the caller manages, newest first", body = RecordingList))
)]
pub(crate) async fn list_recordings(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<RecordingList>> {
    let mut recordings: Vec<Recording> = state.catalog.read(|s| {
        s.recordings()
            .filter(|r| r.kind == RecordingKind::Broadcast)
            .filter(|r| query.channel_id.as_ref().is_none_or(|c| &r.channel_id == c))
            .filter(|r| visible(s, &caller, r))
            .cloned()
            .collect()
    });
    recordings.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    let recordings = recordings.into_iter().map(|r| RecordingView::new(&state, &headers, r)).collect();
    Ok(Json(RecordingList { recordings }))
}

#[utoipa::path(
    get,
    path = "/api/recordings/{id}",
    tag = "recordings",
    security((), ("bearer" = []), ("bitriver_session" = [])),
    params(("id" = String, Path, description = "Recording id")),
    responses(
        (status = 200, description = "The recording", body = RecordingView),
        (status = 404, description = "No such recording, or a draft the caller does not manage"),
    )
)]
pub(crate) async fn get_recording(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<RecordingView>> {
    let recording = find(&state, &caller, &id).await?;
    Ok(Json(RecordingView::new(&state, &headers, recording)))
}

#[utoipa::path(
    delete,
    path = "/api/recordings/{id}",
    tag = "recordings",
    params(("id" = String, Path, description = "Recording id")),
    responses(
        (status = 204, description = "Deleted: hidden now, its files are removed by the node holding them"),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not the channel's owner or an admin"),
        (status = 404, description = "No such recording"),
        (status = 409, description = "Still recording", body = crate::error::Body),
    )
)]
pub(crate) async fn delete_recording(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_authenticated()?;
    let recording = find_managed(&state, &caller, &id).await?;
    if recording.status == RecordingStatus::Recording {
        return Err(ApiError::conflict("recording", "the broadcast is still being recorded; delete it once it ended"));
    }
    state.catalog.propose(Command::DeleteRecording { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/recordings/{id}/publish",
    tag = "recordings",
    params(("id" = String, Path, description = "Recording id")),
    responses(
        (status = 200, description = "Published", body = RecordingView),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not the channel's owner or an admin"),
        (status = 404, description = "No such recording"),
        (status = 409, description = "Not ready yet", body = crate::error::Body),
    )
)]
pub(crate) async fn publish_recording(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<RecordingView>> {
    caller.require_authenticated()?;
    let recording = find_managed(&state, &caller, &id).await?;
    if recording.status != RecordingStatus::Ready {
        return Err(ApiError::conflict("not_ready", format!("the recording is {:?}, not ready", recording.status)));
    }
    let published = match state.catalog.propose(Command::PublishRecording { id, at: now_millis() }).await? {
        Response::Recording(r) => *r,
        other => return Err(ApiError::internal(format!("unexpected catalog answer: {other:?}"))),
    };
    Ok(Json(RecordingView::new(&state, &headers, published)))
}

#[utoipa::path(
    get,
    path = "/api/recordings/{id}/clips",
    tag = "recordings",
    security((), ("bearer" = []), ("bitriver_session" = [])),
    params(("id" = String, Path, description = "Recording id")),
    responses(
        (status = 200, description = "Its clips the caller sees, newest first", body = RecordingList),
        (status = 404, description = "No such recording"),
    )
)]
pub(crate) async fn list_clips(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<RecordingList>> {
    find(&state, &caller, &id).await?;
    let mut clips: Vec<Recording> = state.catalog.read(|s| {
        s.recordings()
            .filter(|r| r.kind == RecordingKind::Clip && r.source_id.as_deref() == Some(id.as_str()))
            .filter(|r| visible(s, &caller, r))
            .cloned()
            .collect()
    });
    clips.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    let recordings = clips.into_iter().map(|r| RecordingView::new(&state, &headers, r)).collect();
    Ok(Json(RecordingList { recordings }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ClipBody {
    /// From the recording's start.
    start_seconds: f64,
    end_seconds: f64,
    /// 1 to 140 characters; default: the recording's title.
    title: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/recordings/{id}/clips",
    tag = "recordings",
    params(("id" = String, Path, description = "Recording id")),
    request_body = ClipBody,
    responses(
        (status = 202, description = "The clip, queued", body = RecordingView),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not the channel's owner or an admin"),
        (status = 404, description = "No such recording"),
        (status = 409, description = "The recording is not ready", body = crate::error::Body),
        (status = 422, description = "A range outside the recording, or end before start", body = crate::error::Body),
    )
)]
pub(crate) async fn create_clip(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ClipBody>,
) -> ApiResult<(StatusCode, Json<RecordingView>)> {
    caller.require_authenticated()?;
    let source = find_managed(&state, &caller, &id).await?;
    if source.status != RecordingStatus::Ready {
        return Err(ApiError::conflict("not_ready", "clips are cut from a ready recording"));
    }
    let duration = source.duration_ms as f64 / 1000.0;
    let (start, end) = (body.start_seconds, body.end_seconds);
    if !start.is_finite() || !end.is_finite() || start < 0.0 {
        return Err(ApiError::invalid("startSeconds", "startSeconds and endSeconds must be numbers from 0"));
    }
    if end <= start {
        return Err(ApiError::invalid("endSeconds", "endSeconds must be after startSeconds"));
    }
    if end > duration + 0.5 {
        return Err(ApiError::invalid(
            "endSeconds",
            format!("the recording is {duration:.1} s long; endSeconds {end} is past its end"),
        ));
    }
    if end - start > MAX_CLIP_SECONDS {
        return Err(ApiError::invalid("endSeconds", format!("a clip is at most {MAX_CLIP_SECONDS} s")));
    }
    let title = match body.title.as_deref().map(str::trim) {
        None | Some("") => source.title.clone(),
        Some(t) if t.chars().count() > MAX_TITLE_CHARS => {
            return Err(ApiError::invalid("title", format!("title must be at most {MAX_TITLE_CHARS} characters")))
        }
        Some(t) => t.to_owned(),
    };
    let clip = Recording {
        id: hex::encode(rand::random::<[u8; 12]>()),
        title,
        kind: RecordingKind::Clip,
        status: RecordingStatus::Queued,
        failure: None,
        source_id: Some(source.id.clone()),
        clip_start_ms: Some((start * 1000.0).round() as u64),
        clip_end_ms: Some((end.min(duration) * 1000.0).round() as u64),
        renditions: Vec::new(),
        duration_ms: 0,
        size_bytes: 0,
        thumbnails: 0,
        created_at: now_millis(),
        ended_at: None,
        published_at: None,
        ..source
    };
    let clip = match state.catalog.propose(Command::PutRecording(Box::new(clip))).await? {
        Response::Recording(r) => *r,
        other => return Err(ApiError::internal(format!("unexpected catalog answer: {other:?}"))),
    };
    Ok((StatusCode::ACCEPTED, Json(RecordingView::new(&state, &headers, clip))))
}
