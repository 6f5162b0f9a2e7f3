//! `GET /api/openapi.json`: the REST API described as an OpenAPI 3.1 document.
//!
//! Generated from the code, not written by hand: every handler carries a `#[utoipa::path]`
//! attribute (method, path, parameters, request body, answers) and every request and response type
//! derives `utoipa::ToSchema`, so the document's schemas are the Rust types the handlers
//! deserialize and serialize.
//!
//! Each route is registered once, with utoipa-axum's `routes!(handler, ...)` in its module's
//! `routes()`: that one call both routes the handler and adds its operation, so the router and
//! the document cannot disagree. [`api_routes`] gathers the modules; [`crate::router`] takes the
//! router half, [`document`] the document half. [`ApiDoc`] holds what no handler owns (title,
//! tags, security schemes), and [`finish`] adds what every operation shares:
//!
//! - the error answers the layers around every route can give (400 malformed request, 413/415/422
//!   for bodies, 429 rate limited, 503 for writes), all with the [`crate::error`] body
//!   (`ApiError` schema);
//! - shared definitions of 401, 403 and 404 (`#/components/responses/Unauthorized`, `Forbidden`,
//!   `NotFound`, each with the `ApiError` body): a handler lists the status with a description of
//!   when it happens, and the document refers to the shared answer with that description.
//!
//! The document is built once and served as is.

use std::sync::OnceLock;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::response::{Response as OpenApiResponse, ResponseBuilder};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::SESSION_COOKIE;
use crate::error::ApiError;
use crate::ApiState;

/// The shared 401, 403 and 404 answers: (status, component name, generic description).
pub const SHARED_ERRORS: [(&str, &str, &str); 3] = [
    ("401", "Unauthorized", "Not signed in, or the session is invalid or expired"),
    ("403", "Forbidden", "Signed in, but not allowed to do this"),
    ("404", "NotFound", "No such record"),
];

/// Every API route with its operation: the modules' `routes()`, and this document's own.
pub(crate) fn api_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::users::routes())
        .merge(crate::whoami::routes())
        .merge(crate::chat::routes())
        .merge(crate::channels::routes())
        .merge(crate::ingest_point::routes())
        .merge(crate::directory::routes())
        .merge(crate::profiles::routes())
        .merge(crate::analytics::routes())
        .merge(crate::export::routes())
        .merge(crate::reports::routes())
        .merge(crate::privacy::routes())
        .merge(crate::recordings::routes())
        .merge(crate::takedowns::routes())
        .merge(crate::health::routes())
        .merge(crate::routing::api::routes())
        .routes(routes!(openapi_json))
}

/// The operations and components; see the module docs.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "BitRiver Live API",
        description = "The control plane of BitRiver Live: accounts and sessions, channels and broadcasts, \
            chat, profiles, the channel directory and analytics. Authenticate with `Authorization: Bearer TOKEN` \
            (the token from signup or login) or the `bitriver_session` cookie. In development mode, requests \
            from loopback to a loopback host without a token act as an admin. Browsers' writes and chat sockets \
            from another origin than the node's own (or one of `--allowed-origins`) are refused. Errors are `{\"error\":{\"code\",\"message\",\"field\"}}`.",
        license(name = "AGPL-3.0-or-later", identifier = "AGPL-3.0-or-later"),
    ),
    components(schemas(crate::error::Body)),
    modifiers(&SecuritySchemes),
    security(("bearer" = []), ("bitriver_session" = [])),
    tags(
        (name = "auth", description = "Sign up, sign in, the current session"),
        (name = "users", description = "Accounts"),
        (name = "channels", description = "Channels, broadcasts, stream keys, follows and subscriptions"),
        (name = "chat", description = "Chat history, posting, moderation and the live socket"),
        (name = "directory", description = "Browse and search channels"),
        (name = "profiles", description = "Streamer profiles"),
        (name = "analytics", description = "Audience figures (admins)"),
        (name = "legal", description = "Terms, Privacy and DMCA pages; copyright takedown notices"),
        (name = "reports", description = "Reports of messages, channels and users; appeals of chat bans"),
        (name = "export", description = "Catalog snapshot (admins)"),
        (name = "playback", description = "Viewers at the nearest edge: redirects and HLS Content Steering"),
        (name = "regions", description = "The operator's network map of regions (admins)"),
        (name = "recordings", description = "Recordings of broadcasts and clips cut from them (VOD)"),
        (name = "meta", description = "This document"),
    ),
)]
pub struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static Document {
    static DOC: OnceLock<Document> = OnceLock::new();
    DOC.get_or_init(|| finish(api_routes().into_openapi()))
}

/// Add the shared answers to the operations [`api_routes`] collected (see the module docs).
fn finish(mut doc: Document) -> Document {
    SharedErrors.modify(&mut doc);
    CommonErrors.modify(&mut doc);
    doc
}

#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
async fn openapi_json() -> Response {
    static JSON: OnceLock<Result<String, String>> = OnceLock::new();
    match JSON.get_or_init(|| document().to_json().map_err(|e| e.to_string())) {
        Ok(json) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], json.clone()).into_response(),
        Err(e) => ApiError::internal(format!("serializing the OpenAPI document: {e}")).into_response(),
    }
}

/// A response whose body is the API's error shape.
fn error_response(description: &str) -> OpenApiResponse {
    let schema = Ref::from_schema_name(<crate::error::Body as ToSchema>::name());
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(schema)).build())
        .build()
}

/// The two ways to authenticate.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The `token` of a signup or login answer"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SESSION_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SESSION_COOKIE,
                "Set by signup and login (HttpOnly, SameSite=Lax)",
            ))),
        );
    }
}

/// The 401, 403 and 404 answers of every operation refer to one shared definition each, keeping
/// the operation's own description of when it happens.
struct SharedErrors;

impl Modify for SharedErrors {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (_, name, description) in SHARED_ERRORS {
            components.responses.insert(name.to_owned(), RefOr::T(error_response(description)));
        }
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch] {
                let Some(operation) = operation else { continue };
                for (status, name, _) in SHARED_ERRORS {
                    let Some(answer) = operation.responses.responses.get_mut(status) else { continue };
                    let description = match answer {
                        RefOr::T(response) => std::mem::take(&mut response.description),
                        RefOr::Ref(_) => continue,
                    };
                    let mut shared = Ref::from_response_name(name);
                    shared.description = description;
                    *answer = RefOr::Ref(shared);
                }
            }
        }
    }
}

/// The answers every route may give because of the layers around it: a request that doesn't
/// parse (400), the global rate limit (429), for routes with a body the size cap (413), the
/// content type (415) and the body's shape (422, naming the field), and for writes a catalog
/// without a leader at the moment (503).
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut Document) {
        for item in openapi.paths.paths.values_mut() {
            add_common_errors(&mut item.get, false);
            for write in [&mut item.put, &mut item.post, &mut item.delete, &mut item.patch] {
                add_common_errors(write, true);
            }
        }
    }
}

fn add_common_errors(operation: &mut Option<Operation>, write: bool) {
    let Some(operation) = operation else { return };
    let has_body = operation.request_body.as_ref().is_some_and(|b: &RequestBody| !b.content.is_empty());
    let mut common = vec![
        ("400", "Malformed request: JSON that doesn't parse, a bad query string, or a token in the query string"),
        ("429", "Rate limited; see Retry-After"),
    ];
    if has_body {
        common.extend([
            ("413", "The body is larger than the configured limit"),
            ("415", "The body is not `application/json`"),
            ("422", "The body or a field is invalid; `error.field` names it"),
        ]);
    }
    if write {
        common.push(("503", "The catalog has no leader at the moment; retry after Retry-After"));
    }
    for (status, description) in common {
        operation.responses.responses.entry(status.to_owned()).or_insert_with(|| RefOr::T(error_response(description)));
    }
}
