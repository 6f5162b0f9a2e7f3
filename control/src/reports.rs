//! Reports and appeals over the API. The records and what a decision does are the catalog's
//! (`raft::state::reports`); who may see and decide what is decided here:
//!
//! - `POST /api/reports` `{"targetType":"message|channel|user","targetId","reason","note"?}`: any
//!   signed-in user (201).
//! - `GET /api/reports?status=open|resolved`: admins see every report; others the ones they filed
//!   and those about channels they moderate (never another user's reports elsewhere).
//! - `POST /api/reports/{id}/resolve` `{"action":"dismiss|delete|timeout|ban","durationSeconds"?,"note"?}`:
//!   moderators of the report's channel and admins; the action applies with the decision.
//! - `POST /api/appeals` `{"channelId","text"}`: the banned user, once per ban (201).
//! - `GET /api/appeals`: admins all; moderators those of their channels; users their own.
//! - `POST /api/appeals/{id}/decide` `{"lift":bool,"note"?}`: a moderator of the channel or an
//!   admin who is not the one who banned (and not the appellant).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use raft::state::reports::{Appeal, AppealDecision, Report, ReportAction, ReportTarget, Resolution};
use raft::state::CatalogState;
use raft::{now_millis, Command, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::ApiJson;
use crate::{read_or_catch_up, ApiState};

pub const MAX_REASON_CHARS: usize = 200;
pub const MAX_NOTE_CHARS: usize = 2000;
pub const MAX_APPEAL_CHARS: usize = 2000;
/// Longest timeout a report's decision may give: two weeks (longer means a ban).
pub const MAX_TIMEOUT_SECS: i64 = 14 * 24 * 3600;

pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::default()
        .routes(routes!(file_report, list_reports))
        .routes(routes!(resolve_report))
        .routes(routes!(file_appeal, list_appeals))
        .routes(routes!(decide_appeal))
}

fn new_id() -> String {
    hex::encode(rand::random::<[u8; 12]>())
}

/// `text` trimmed, required, at most `max` characters.
fn required_text(field: &str, text: &str, max: usize) -> ApiResult<String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ApiError::invalid(field, format!("{field} is required")));
    }
    if text.chars().count() > max {
        return Err(ApiError::invalid(field, format!("{field} must be at most {max} characters")));
    }
    Ok(text.to_owned())
}

fn optional_text(field: &str, text: Option<String>, max: usize) -> ApiResult<Option<String>> {
    match text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
        Some(t) if t.chars().count() > max => {
            Err(ApiError::invalid(field, format!("{field} must be at most {max} characters")))
        }
        other => Ok(other),
    }
}

/// Whether `caller` may act on a report or appeal about `channel` (`None`: admins only).
fn moderates(s: &CatalogState, caller: &Caller, channel: Option<&str>) -> bool {
    caller.is_admin() || channel.zip(caller.user_id()).is_some_and(|(c, u)| s.can_moderate(c, u))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReportBody {
    /// `message`, `channel` or `user`.
    target_type: String,
    target_id: String,
    /// 1 to 200 characters.
    reason: String,
    #[schema(required = false)]
    note: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/reports",
    tag = "reports",
    request_body = ReportBody,
    responses(
        (status = 201, description = "The report, open", body = Report),
        (status = 401, description = "Not signed in as a user"),
        (status = 404, description = "No such message, channel or user"),
        (status = 422, description = "Invalid field", body = crate::error::Body),
    )
)]
pub(crate) async fn file_report(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<ReportBody>,
) -> ApiResult<(StatusCode, Json<Report>)> {
    let reporter = caller.require_user()?.id.clone();
    let target_type = match body.target_type.as_str() {
        "message" => ReportTarget::Message,
        "channel" => ReportTarget::Channel,
        "user" => ReportTarget::User,
        _ => return Err(ApiError::invalid("targetType", "targetType must be message, channel or user")),
    };
    let target_id = required_text("targetId", &body.target_id, 128)?;
    let reason = required_text("reason", &body.reason, MAX_REASON_CHARS)?;
    let note = optional_text("note", body.note, MAX_NOTE_CHARS)?;
    // Who and where the target is, read now (a message may be deleted before anyone looks).
    let (channel_id, subject_user_id, excerpt) = read_or_catch_up(&state, |s| match target_type {
        ReportTarget::Message => s
            .channels()
            .find_map(|c| s.chat(&c.id).find(|m| m.id == target_id).cloned())
            .map(|m| (Some(m.channel_id), m.user_id, Some(m.text)))
            .ok_or_else(|| ApiError::not_found("message", &target_id)),
        ReportTarget::Channel => s
            .channel(&target_id)
            .map(|c| (Some(c.id.clone()), c.owner_id.clone(), None))
            .ok_or_else(|| ApiError::not_found("channel", &target_id)),
        ReportTarget::User => s
            .user(&target_id)
            .map(|u| (None, u.id.clone(), None))
            .ok_or_else(|| ApiError::not_found("user", &target_id)),
    })
    .await?;
    if subject_user_id == reporter {
        return Err(ApiError::invalid("targetId", "you cannot report yourself"));
    }
    let report = Report {
        id: new_id(),
        reporter_id: reporter,
        target_type,
        target_id,
        channel_id,
        subject_user_id,
        excerpt,
        reason,
        note,
        created_at: now_millis(),
        resolution: None,
    };
    match state.catalog.propose(Command::FileReport(Box::new(report))).await? {
        Response::Report(report) => Ok((StatusCode::CREATED, Json(report))),
        other => Err(ApiError::internal(format!("unexpected catalog answer to a report: {other:?}"))),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// `open` or `resolved` (default: both).
    status: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ReportList {
    reports: Vec<Report>,
}

#[utoipa::path(
    get,
    path = "/api/reports",
    tag = "reports",
    params(ListQuery),
    responses(
        (status = 200, description = "Reports the caller may see, oldest first", body = ReportList),
        (status = 401, description = "Not signed in"),
        (status = 422, description = "Invalid status", body = crate::error::Body),
    )
)]
pub(crate) async fn list_reports(
    State(state): State<ApiState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<ReportList>> {
    caller.require_authenticated()?;
    let want_open = match query.status.as_deref() {
        None => None,
        Some("open") => Some(true),
        Some("resolved") => Some(false),
        Some(_) => return Err(ApiError::invalid("status", "status must be open or resolved")),
    };
    let reports = state.catalog.read(|s| {
        s.reports()
            .into_iter()
            .filter(|r| {
                caller.user_id() == Some(r.reporter_id.as_str()) || moderates(s, &caller, r.channel_id.as_deref())
            })
            .filter(|r| want_open.is_none_or(|open| open == r.resolution.is_none()))
            .cloned()
            .collect()
    });
    Ok(Json(ReportList { reports }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResolveBody {
    /// `dismiss`, `delete` (a reported message), `timeout` or `ban` (the reported user, in the
    /// report's channel).
    action: String,
    /// For `timeout`: 1 s to 14 days.
    #[schema(required = false)]
    duration_seconds: Option<i64>,
    #[schema(required = false)]
    note: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/reports/{id}/resolve",
    tag = "reports",
    params(("id" = String, Path, description = "Report id")),
    request_body = ResolveBody,
    responses(
        (status = 200, description = "The report with its resolution", body = Report),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not a moderator of the report's channel"),
        (status = 404, description = "No such report"),
        (status = 422, description = "Invalid action, or already resolved", body = crate::error::Body),
    )
)]
pub(crate) async fn resolve_report(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    caller: Caller,
    ApiJson(body): ApiJson<ResolveBody>,
) -> ApiResult<Json<Report>> {
    caller.require_authenticated()?;
    let action = match (body.action.as_str(), body.duration_seconds) {
        ("dismiss", None) => ReportAction::Dismiss,
        ("delete", None) => ReportAction::Delete,
        ("ban", None) => ReportAction::Ban,
        ("timeout", Some(secs)) if (1..=MAX_TIMEOUT_SECS).contains(&secs) => {
            ReportAction::Timeout { duration_seconds: secs }
        }
        ("timeout", _) => {
            return Err(ApiError::invalid(
                "durationSeconds",
                format!("a timeout needs durationSeconds from 1 to {MAX_TIMEOUT_SECS}"),
            ))
        }
        ("dismiss" | "delete" | "ban", Some(_)) => {
            return Err(ApiError::invalid("durationSeconds", "durationSeconds goes with a timeout only"))
        }
        _ => return Err(ApiError::invalid("action", "action must be dismiss, delete, timeout or ban")),
    };
    let note = optional_text("note", body.note, MAX_NOTE_CHARS)?;
    read_or_catch_up(&state, |s| {
        let report = s.report(&id).ok_or_else(|| ApiError::not_found("report", &id))?;
        if !moderates(s, &caller, report.channel_id.as_deref()) {
            // Someone who filed it sees it, but may not decide it.
            return Err(ApiError::forbidden("only moderators of the report's channel and admins decide reports"));
        }
        Ok(())
    })
    .await?;
    let resolution = Resolution { by: caller.audit_name(), at: now_millis(), action, note };
    match state.catalog.propose(Command::ResolveReport { id, resolution }).await? {
        Response::Report(report) => Ok(Json(report)),
        other => Err(ApiError::internal(format!("unexpected catalog answer to a resolution: {other:?}"))),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AppealBody {
    /// The channel whose chat banned you.
    channel_id: String,
    /// Why the ban should be lifted, 1 to 2000 characters.
    text: String,
}

#[utoipa::path(
    post,
    path = "/api/appeals",
    tag = "reports",
    request_body = AppealBody,
    responses(
        (status = 201, description = "The appeal, undecided", body = Appeal),
        (status = 401, description = "Not signed in as a user"),
        (status = 404, description = "No such channel"),
        (status = 422, description = "Invalid field, no ban of yours there, or this ban was already appealed", body = crate::error::Body),
    )
)]
pub(crate) async fn file_appeal(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<AppealBody>,
) -> ApiResult<(StatusCode, Json<Appeal>)> {
    let user = caller.require_user()?.id.clone();
    let text = required_text("text", &body.text, MAX_APPEAL_CHARS)?;
    let channel_id = required_text("channelId", &body.channel_id, 128)?;
    let now = now_millis();
    let ban = read_or_catch_up(&state, |s| {
        if s.channel(&channel_id).is_none() {
            return Err(ApiError::not_found("channel", &channel_id));
        }
        s.chat_ban(&channel_id, &user, now)
            .cloned()
            .ok_or_else(|| ApiError::invalid("channelId", "you are not banned from this channel's chat"))
    })
    .await?;
    let appeal = Appeal {
        id: new_id(),
        user_id: user,
        channel_id,
        ban_by: ban.by,
        ban_at: ban.at,
        text,
        created_at: now,
        decision: None,
    };
    match state.catalog.propose(Command::FileAppeal(Box::new(appeal))).await? {
        Response::Appeal(appeal) => Ok((StatusCode::CREATED, Json(appeal))),
        other => Err(ApiError::internal(format!("unexpected catalog answer to an appeal: {other:?}"))),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AppealList {
    appeals: Vec<Appeal>,
}

#[utoipa::path(
    get,
    path = "/api/appeals",
    tag = "reports",
    responses(
        (status = 200, description = "Appeals the caller may see, oldest first", body = AppealList),
        (status = 401, description = "Not signed in"),
    )
)]
pub(crate) async fn list_appeals(State(state): State<ApiState>, caller: Caller) -> ApiResult<Json<AppealList>> {
    caller.require_authenticated()?;
    let appeals = state.catalog.read(|s| {
        s.appeals()
            .into_iter()
            .filter(|a| caller.user_id() == Some(a.user_id.as_str()) || moderates(s, &caller, Some(&a.channel_id)))
            .cloned()
            .collect()
    });
    Ok(Json(AppealList { appeals }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DecideBody {
    /// Lift the ban (else it is upheld).
    lift: bool,
    #[schema(required = false)]
    note: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/appeals/{id}/decide",
    tag = "reports",
    params(("id" = String, Path, description = "Appeal id")),
    request_body = DecideBody,
    responses(
        (status = 200, description = "The appeal with its decision", body = Appeal),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not a moderator of the channel, or the one who banned"),
        (status = 404, description = "No such appeal"),
        (status = 422, description = "Already decided", body = crate::error::Body),
    )
)]
pub(crate) async fn decide_appeal(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    caller: Caller,
    ApiJson(body): ApiJson<DecideBody>,
) -> ApiResult<Json<Appeal>> {
    caller.require_authenticated()?;
    let note = optional_text("note", body.note, MAX_NOTE_CHARS)?;
    let by = caller.audit_name();
    read_or_catch_up(&state, |s| {
        let appeal = s.appeal(&id).ok_or_else(|| ApiError::not_found("appeal", &id))?;
        if caller.user_id() == Some(appeal.user_id.as_str()) {
            return Err(ApiError::forbidden("you cannot decide your own appeal"));
        }
        if !moderates(s, &caller, Some(&appeal.channel_id)) {
            return Err(ApiError::forbidden("only moderators of the channel and admins decide appeals"));
        }
        if appeal.ban_by == by {
            return Err(ApiError::forbidden("the moderator who banned cannot decide the appeal: someone else must"));
        }
        Ok(())
    })
    .await?;
    let decision = AppealDecision { by, at: now_millis(), lift: body.lift, note };
    match state.catalog.propose(Command::DecideAppeal { id, decision }).await? {
        Response::Appeal(appeal) => Ok(Json(appeal)),
        other => Err(ApiError::internal(format!("unexpected catalog answer to a decision: {other:?}"))),
    }
}
