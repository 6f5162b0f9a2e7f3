//! [`ApiJson`]: the JSON body extractor (and responder) every handler uses.
//!
//! axum's own `Json` rejects bad bodies with plain-text answers. This one answers in the API's
//! error shape instead: malformed JSON is 400 `malformed_json`, a body of the wrong shape is 422
//! `invalid_field` naming the offending field (`roles[0]`, `email`, ...), a body over the size
//! limit ([`axum::extract::DefaultBodyLimit`], set by the router from [`crate::limits::Limits`]) is
//! 413 `body_too_large`, and a missing `Content-Type: application/json` is 415.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ApiError;

/// A JSON request body (extractor) or response body (responder).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a JSON body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                body_too_large()
            } else {
                ApiError::bad_request("unreadable_body", format!("could not read the request body: {rejection}"))
            }
        })?;
        parse(&bytes).map(ApiJson)
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The 413 answer, shared with the body-size middleware in [`crate::limits`].
pub fn body_too_large() -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the request body is too large")
}

/// Deserialize a JSON body, mapping serde's errors to the API's error shape.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| rejection(&e))?;
    // Trailing garbage after the value is malformed JSON too.
    de.end().map_err(|e| ApiError::bad_request("malformed_json", format!("malformed JSON: {e}")))?;
    Ok(value)
}

fn rejection(e: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = e.inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            let path = e.path().to_string();
            let message = inner.to_string();
            // A missing field is reported at its parent object; name the field itself.
            let named = backticked(&message).filter(|_| message.starts_with("missing field"));
            let field = match (named, path.as_str()) {
                (Some(name), "." | "") => name.to_owned(),
                (Some(name), parent) => format!("{parent}.{name}"),
                (None, p) => p.to_owned(),
            };
            if field.is_empty() || field == "." {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", format!("invalid body: {message}"))
            } else {
                ApiError::invalid(&field, format!("{field}: {message}"))
            }
        }
        _ => ApiError::bad_request("malformed_json", format!("malformed JSON: {inner}")),
    }
}

/// The first `name` between backticks in serde's message.
fn backticked(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Longest plain-text error body worth quoting in the JSON message.
const MAX_QUOTED_BODY: usize = 4096;

/// Middleware: error answers that axum produces itself (unknown method, a path or query that
/// doesn't parse, ...) come as plain text; give them the API's JSON shape too.
pub(crate) async fn errors_as_json(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_QUOTED_BODY).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let message = if text.is_empty() { reason } else { text };
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        s if s.is_server_error() => "internal",
        _ => "error",
    };
    let mut json = ApiError::new(status, code, message).into_response();
    // Keep what the original answer said besides its body (Allow on 405, Retry-After, ...).
    let own: Vec<header::HeaderName> = json.headers().keys().cloned().collect();
    for (name, value) in parts.headers.iter() {
        if !own.contains(name) && name != header::CONTENT_LENGTH {
            json.headers_mut().append(name.clone(), value.clone());
        }
    }
    json
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        display_name: String,
        roles: Vec<String>,
    }

    #[test]
    fn malformed_is_400() {
        let e = parse::<Body>(b"{\"displayName\":").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.code, "malformed_json");
        let e = parse::<Body>(b"{\"displayName\":\"a\",\"roles\":[]} x").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = parse::<Body>(br#"{"displayName":5,"roles":[]}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.field.as_deref(), Some("displayName"));
        let e = parse::<Body>(br#"{"displayName":"a","roles":[1]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("roles[0]"));
        let e = parse::<Body>(br#"{"roles":[]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("displayName"));
        let e = parse::<Body>(br#"{"displayName":"a","roles":[],"x":1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("x"));
        let e = parse::<Body>(b"[]").unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}
