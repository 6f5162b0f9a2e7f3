//! `GET /api/openapi.json`: the REST API described as an OpenAPI 3.1 document.
//!
//! Generated from the code, not written by hand: every handler carries a `#[utoipa::path]`
//! attribute (method, path, parameters, request body, answers) and every request and response type
//! derives `utoipa::ToSchema`, so the document's schemas are the Rust types the handlers
//! deserialize and serialize. [`ApiDoc`] gathers the operations; the modifiers below add what no
//! single handler owns:
//!
//! - the security schemes (`Authorization: Bearer` and the `bitriver_session` cookie);
//! - the error answers the layers around every route can give (400 malformed request, 413/415/422
//!   for bodies, 429 rate limited), all with the [`crate::error`] body (`ApiError` schema);
//! - the chat WebSocket, whose module is private and which has no JSON body to describe.
//!
//! [`ROUTES`] lists every (method, path) that [`crate::router`] serves. The tests hold it against
//! the document (both ways), against the router (each answers something other than 404/405) and
//! against the `.route(...)` calls in the source, so a route cannot be added without showing up
//! here. The document is built once and served as is.

use std::sync::OnceLock;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::response::{Response as OpenApiResponse, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, Required};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::auth::SESSION_COOKIE;
use crate::error::ApiError;
use crate::ApiState;

/// The chat socket (added by [`ChatSocket`], not by a handler attribute).
pub const CHAT_SOCKET_PATH: &str = "/api/channels/{id}/chat/ws";

/// Every (method, path template) [`crate::router`] serves, in path order. Keep in step with the
/// `.route(...)` calls of the modules: the tests compare this list with them, the document and
/// the router.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/analytics/overview"),
    ("POST", "/api/auth/login"),
    ("DELETE", "/api/auth/session"),
    ("GET", "/api/auth/session"),
    ("POST", "/api/auth/signup"),
    ("GET", "/api/auth/whoami"),
    ("GET", "/api/channels"),
    ("POST", "/api/channels"),
    ("DELETE", "/api/channels/{id}"),
    ("GET", "/api/channels/{id}"),
    ("PATCH", "/api/channels/{id}"),
    ("GET", "/api/channels/{id}/chat"),
    ("POST", "/api/channels/{id}/chat"),
    ("GET", "/api/channels/{id}/chat/bans"),
    ("POST", "/api/channels/{id}/chat/bans"),
    ("DELETE", "/api/channels/{id}/chat/bans/{user_id}"),
    ("GET", "/api/channels/{id}/chat/settings"),
    ("PUT", "/api/channels/{id}/chat/settings"),
    ("GET", "/api/channels/{id}/chat/ws"),
    ("DELETE", "/api/channels/{id}/chat/{message_id}"),
    ("DELETE", "/api/channels/{id}/follow"),
    ("POST", "/api/channels/{id}/follow"),
    ("GET", "/api/channels/{id}/relation"),
    ("GET", "/api/channels/{id}/sessions"),
    ("POST", "/api/channels/{id}/stream-key/rotate"),
    ("POST", "/api/channels/{id}/stream/start"),
    ("POST", "/api/channels/{id}/stream/stop"),
    ("DELETE", "/api/channels/{id}/subscribe"),
    ("POST", "/api/channels/{id}/subscribe"),
    ("GET", "/api/directory"),
    ("GET", "/api/export"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/profiles/{user_id}"),
    ("PUT", "/api/profiles/{user_id}"),
    ("GET", "/api/users"),
    ("POST", "/api/users"),
    ("DELETE", "/api/users/{id}"),
    ("GET", "/api/users/{id}"),
    ("PATCH", "/api/users/{id}"),
];

/// [`ROUTES`], for callers that want a function.
pub fn routes_table() -> &'static [(&'static str, &'static str)] {
    ROUTES
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new().route("/api/openapi.json", get(openapi_json))
}

/// The operations and components; see the module docs.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "BitRiver Live API",
        description = "The control plane of BitRiver Live: accounts and sessions, channels and broadcasts, \
            chat, profiles, the channel directory and analytics. Authenticate with `Authorization: Bearer TOKEN` \
            (the token from signup or login) or the `bitriver_session` cookie. In development mode, requests \
            from loopback without a token act as an admin. Errors are `{\"error\":{\"code\",\"message\",\"field\"}}`.",
        license(name = "AGPL-3.0-or-later", identifier = "AGPL-3.0-or-later"),
    ),
    paths(
        openapi_json,
        crate::users::signup,
        crate::users::login,
        crate::users::current_session,
        crate::users::logout,
        crate::whoami::whoami,
        crate::whoami::relation,
        crate::users::list_users,
        crate::users::create_user,
        crate::users::get_user,
        crate::users::update_user,
        crate::users::delete_user,
        crate::channels::list_channels,
        crate::channels::create_channel,
        crate::channels::get_channel,
        crate::channels::update_channel,
        crate::channels::delete_channel,
        crate::channels::start_stream,
        crate::channels::stop_stream,
        crate::channels::list_sessions,
        crate::channels::rotate_stream_key,
        crate::channels::follow,
        crate::channels::unfollow,
        crate::channels::subscribe,
        crate::channels::unsubscribe,
        crate::chat::list_messages,
        crate::chat::post_message,
        crate::chat::delete_message,
        crate::chat::moderation::list_bans,
        crate::chat::moderation::ban,
        crate::chat::moderation::unban,
        crate::chat::moderation::get_settings,
        crate::chat::moderation::put_settings,
        crate::directory::directory,
        crate::profiles::get_profile,
        crate::profiles::put_profile,
        crate::analytics::overview_handler,
        crate::export::export,
    ),
    components(schemas(crate::error::Body)),
    modifiers(&SecuritySchemes, &ChatSocket, &CommonErrors),
    security(("bearer" = []), ("bitriver_session" = [])),
    tags(
        (name = "auth", description = "Sign up, sign in, the current session"),
        (name = "users", description = "Accounts"),
        (name = "channels", description = "Channels, broadcasts, stream keys, follows and subscriptions"),
        (name = "chat", description = "Chat history, posting, moderation and the live socket"),
        (name = "directory", description = "Browse and search channels"),
        (name = "profiles", description = "Streamer profiles"),
        (name = "analytics", description = "Audience figures (admins)"),
        (name = "export", description = "Catalog snapshot (admins)"),
        (name = "meta", description = "This document"),
    ),
)]
pub struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static Document {
    static DOC: OnceLock<Document> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
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

/// `GET /api/channels/{id}/chat/ws`: described here because its handler lives in a private
/// module and its traffic is WebSocket frames, not a JSON response.
struct ChatSocket;

impl Modify for ChatSocket {
    fn modify(&self, openapi: &mut Document) {
        let string = ObjectBuilder::new().schema_type(Type::String).build();
        let history = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).build();
        let operation = OperationBuilder::new()
            .tag("chat")
            .operation_id(Some("chat_socket"))
            .summary(Some("The live chat socket of a channel"))
            .description(Some(
                "A WebSocket. On connect it sends `{\"type\":\"history\",\"messages\":[...]}`, then one JSON frame \
                 per chat event (`message`, `deleted`, `ban`, `unban`, `settings`). Signed-in clients may send \
                 `{\"type\":\"message\",\"text\":\"...\"}`.",
            ))
            .parameter(
                ParameterBuilder::new()
                    .name("id")
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some("Channel id"))
                    .schema(Some(string)),
            )
            .parameter(
                ParameterBuilder::new()
                    .name("history")
                    .parameter_in(ParameterIn::Query)
                    .required(Required::False)
                    .description(Some("Messages of history sent on connect (default 50, at most 50)"))
                    .schema(Some(history)),
            )
            .response("101", ResponseBuilder::new().description("Switching to the WebSocket protocol").build())
            .response("404", error_response("No such channel"))
            .response("426", error_response("Not a WebSocket upgrade request"))
            .response("503", error_response("Too many chat sockets on this node, or shutting down"))
            .security(SecurityRequirement::default())
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
            .security(SecurityRequirement::new(SESSION_COOKIE, Vec::<String>::new()))
            .build();
        openapi.paths.add_path_operation(CHAT_SOCKET_PATH, vec![HttpMethod::Get], operation);
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
