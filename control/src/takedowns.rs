//! Legal pages and copyright takedowns over the API (the records and their rules:
//! `raft::state::takedowns`).
//!
//! - `GET /api/pages/{name}` (public) and `PUT /api/pages/{name}` `{"text"}` (admins): the Terms,
//!   Privacy and DMCA pages (`terms`, `privacy`, `dmca`), shown at `/terms`, `/privacy`, `/dmca`.
//! - `POST /api/takedowns` (admins) `{channelId, claimantName, claimantEmail, work, infringingUrl,
//!   statement}`: the channel is hidden at once (not listed, 451 to others, no broadcast).
//! - `GET /api/takedowns`: admins every notice; owners those against their channels (how they are
//!   notified; the Control Center shows them).
//! - `POST /api/takedowns/{id}/counter` `{"text"}`: the channel's owner, once.
//! - `POST /api/takedowns/{id}/decide` `{"restore": bool, "note"?}` (admins): restore or remove.
//! - `GET /api/takedowns/export` (admins): every notice with its history, as a download.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::Json;
use raft::state::takedowns::{LegalPage, Takedown, TakedownEvent, TakedownStatus, LEGAL_PAGES};
use raft::{now_millis, Command, Response, UnixMillis};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::ApiJson;
use crate::{read_or_catch_up, ApiState};

pub const MAX_PAGE_CHARS: usize = 50_000;
pub const MAX_FIELD_CHARS: usize = 2_000;

pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::default()
        .routes(routes!(get_page, put_page))
        .routes(routes!(file_takedown, list_takedowns))
        .routes(routes!(counter_takedown))
        .routes(routes!(decide_takedown))
        .routes(routes!(export_takedowns))
}

fn known_page(name: &str) -> ApiResult<()> {
    if LEGAL_PAGES.contains(&name) {
        Ok(())
    } else {
        Err(ApiError::not_found("page", name))
    }
}

fn text(field: &str, value: &str, max: usize) -> ApiResult<String> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max {
        return Err(ApiError::invalid(field, format!("{field} must be 1 to {max} characters")));
    }
    Ok(value.to_owned())
}

#[utoipa::path(
    get,
    path = "/api/pages/{name}",
    tag = "legal",
    security((), ("bearer" = []), ("bitriver_session" = [])),
    params(("name" = String, Path, description = "`terms`, `privacy` or `dmca`")),
    responses(
        (status = 200, description = "The page as the operator wrote it (empty text until they do)", body = LegalPage),
        (status = 404, description = "No such page"),
    )
)]
pub(crate) async fn get_page(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Json<LegalPage>> {
    known_page(&name)?;
    let page = state.catalog.read(|s| s.legal_page(&name).cloned());
    Ok(Json(page.unwrap_or(LegalPage { name, text: String::new(), updated_at: 0, updated_by: String::new() })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct PageBody {
    /// Plain text (paragraphs separated by blank lines), 1 to 50,000 characters.
    text: String,
}

#[utoipa::path(
    put,
    path = "/api/pages/{name}",
    tag = "legal",
    params(("name" = String, Path, description = "`terms`, `privacy` or `dmca`")),
    request_body = PageBody,
    responses(
        (status = 200, description = "The page now shown", body = LegalPage),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Admins only"),
        (status = 404, description = "No such page"),
        (status = 422, description = "Invalid text", body = crate::error::Body),
    )
)]
pub(crate) async fn put_page(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    caller: Caller,
    ApiJson(body): ApiJson<PageBody>,
) -> ApiResult<Json<LegalPage>> {
    caller.require_admin()?;
    known_page(&name)?;
    let page = LegalPage {
        name,
        text: text("text", &body.text, MAX_PAGE_CHARS)?,
        updated_at: now_millis(),
        updated_by: caller.audit_name(),
    };
    state.catalog.propose(Command::SetLegalPage(page.clone())).await?;
    Ok(Json(page))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NoticeBody {
    channel_id: String,
    claimant_name: String,
    claimant_email: String,
    /// The copyrighted work.
    work: String,
    infringing_url: String,
    /// The claimant's good-faith and accuracy statement.
    statement: String,
}

fn takedown_answer(response: Response) -> ApiResult<Takedown> {
    match response {
        Response::Takedown(notice) => Ok(*notice),
        other => Err(ApiError::internal(format!("unexpected catalog answer to a takedown: {other:?}"))),
    }
}

#[utoipa::path(
    post,
    path = "/api/takedowns",
    tag = "legal",
    request_body = NoticeBody,
    responses(
        (status = 201, description = "The notice; the channel is hidden", body = Takedown),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Admins only"),
        (status = 404, description = "No such channel"),
        (status = 422, description = "Invalid field", body = crate::error::Body),
    )
)]
pub(crate) async fn file_takedown(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<NoticeBody>,
) -> ApiResult<(StatusCode, Json<Takedown>)> {
    caller.require_admin()?;
    let claimant_email = text("claimantEmail", &body.claimant_email, 254)?;
    if !claimant_email.contains('@') {
        return Err(ApiError::invalid("claimantEmail", "claimantEmail must be an email address"));
    }
    let notice = Takedown {
        id: hex::encode(rand::random::<[u8; 12]>()),
        channel_id: text("channelId", &body.channel_id, 128)?,
        owner_id: String::new(),
        claimant_name: text("claimantName", &body.claimant_name, 200)?,
        claimant_email,
        work: text("work", &body.work, MAX_FIELD_CHARS)?,
        infringing_url: text("infringingUrl", &body.infringing_url, MAX_FIELD_CHARS)?,
        statement: text("statement", &body.statement, MAX_FIELD_CHARS)?,
        status: TakedownStatus::Hidden,
        history: vec![TakedownEvent { at: now_millis(), by: caller.audit_name(), what: "notice".into(), text: None }],
    };
    let owner = read_or_catch_up(&state, |s| {
        s.channel(&notice.channel_id)
            .map(|c| c.owner_id.clone())
            .ok_or_else(|| ApiError::not_found("channel", &notice.channel_id))
    })
    .await?;
    let notice = Takedown { owner_id: owner, ..notice };
    let notice = takedown_answer(state.catalog.propose(Command::FileTakedown(Box::new(notice))).await?)?;
    Ok((StatusCode::CREATED, Json(notice)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TakedownList {
    takedowns: Vec<Takedown>,
}

#[utoipa::path(
    get,
    path = "/api/takedowns",
    tag = "legal",
    responses(
        (status = 200, description = "Admins: every notice; owners: those against their channels", body = TakedownList),
        (status = 401, description = "Not signed in"),
    )
)]
pub(crate) async fn list_takedowns(State(state): State<ApiState>, caller: Caller) -> ApiResult<Json<TakedownList>> {
    caller.require_authenticated()?;
    let me = caller.user_id().unwrap_or_default().to_owned();
    let takedowns = state.catalog.read(|s| {
        s.takedowns()
            .into_iter()
            .filter(|t| {
                caller.is_admin() || t.owner_id == me || s.channel(&t.channel_id).is_some_and(|c| c.owner_id == me)
            })
            .cloned()
            .collect()
    });
    Ok(Json(TakedownList { takedowns }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct CounterBody {
    /// The counter-notice, 1 to 2000 characters.
    text: String,
}

#[utoipa::path(
    post,
    path = "/api/takedowns/{id}/counter",
    tag = "legal",
    params(("id" = String, Path, description = "Notice id")),
    request_body = CounterBody,
    responses(
        (status = 200, description = "The notice with the counter-notice", body = Takedown),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not the channel's owner"),
        (status = 404, description = "No such notice"),
        (status = 422, description = "Invalid text, or not open to a counter-notice", body = crate::error::Body),
    )
)]
pub(crate) async fn counter_takedown(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    caller: Caller,
    ApiJson(body): ApiJson<CounterBody>,
) -> ApiResult<Json<Takedown>> {
    let me = caller.require_user()?.id.clone();
    let counter = text("text", &body.text, MAX_FIELD_CHARS)?;
    read_or_catch_up(&state, |s| {
        let notice = s.takedown(&id).ok_or_else(|| ApiError::not_found("takedown", &id))?;
        let owns = notice.owner_id == me || s.channel(&notice.channel_id).is_some_and(|c| c.owner_id == me);
        if owns {
            Ok(())
        } else {
            Err(ApiError::forbidden("only the channel's owner sends a counter-notice"))
        }
    })
    .await?;
    let event = TakedownEvent { at: now_millis(), by: me, what: "counter".into(), text: Some(counter) };
    Ok(Json(takedown_answer(state.catalog.propose(Command::StepTakedown { id, event }).await?)?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct DecideBody {
    /// Restore the channel (else it stays hidden for good).
    restore: bool,
    #[schema(required = false)]
    note: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/takedowns/{id}/decide",
    tag = "legal",
    params(("id" = String, Path, description = "Notice id")),
    request_body = DecideBody,
    responses(
        (status = 200, description = "The notice, restored or removed", body = Takedown),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Admins only"),
        (status = 404, description = "No such notice"),
        (status = 422, description = "Already decided", body = crate::error::Body),
    )
)]
pub(crate) async fn decide_takedown(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    caller: Caller,
    ApiJson(body): ApiJson<DecideBody>,
) -> ApiResult<Json<Takedown>> {
    caller.require_admin()?;
    let note = match body.note.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) => Some(text("note", n, MAX_FIELD_CHARS)?),
        None => None,
    };
    let what = if body.restore { "restored" } else { "removed" };
    let event = TakedownEvent { at: now_millis(), by: caller.audit_name(), what: what.into(), text: note };
    Ok(Json(takedown_answer(state.catalog.propose(Command::StepTakedown { id, event }).await?)?))
}

/// The audit trail: every notice with its history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TakedownExport {
    #[schema(value_type = i64)]
    exported_at: UnixMillis,
    takedowns: Vec<Takedown>,
}

#[utoipa::path(
    get,
    path = "/api/takedowns/export",
    tag = "legal",
    responses(
        (status = 200, description = "Every notice with its history (a download)", body = TakedownExport),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Admins only"),
    )
)]
pub(crate) async fn export_takedowns(State(state): State<ApiState>, caller: Caller) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let takedowns = state.catalog.read_linearizable(|s| s.takedowns().into_iter().cloned().collect()).await?;
    let export = TakedownExport { exported_at: now_millis(), takedowns };
    let disposition = format!("attachment; filename=\"bitriver-takedowns-{}.json\"", export.exported_at);
    Ok(([(header::CONTENT_DISPOSITION, disposition)], Json(export)).into_response())
}
