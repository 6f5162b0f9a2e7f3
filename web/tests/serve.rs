//! The UI router answers pages, assets with their content types and validators, and 404s.

use axum::body::{to_bytes, Body};
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use tower::ServiceExt;

async fn get(path: &str, if_none_match: Option<&str>) -> Response {
    let mut request = Request::get(path);
    if let Some(tag) = if_none_match {
        request = request.header(header::IF_NONE_MATCH, tag);
    }
    web::router().oneshot(request.body(Body::empty()).unwrap()).await.unwrap()
}

fn header_of(response: &Response, name: header::HeaderName) -> String {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

async fn body_text(response: Response) -> String {
    String::from_utf8(to_bytes(response.into_body(), 4 << 20).await.unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn every_page_route_answers_the_shell() {
    for path in ["/", "/channels", "/signup", "/c/0123456789abcdef01234567"] {
        let response = get(path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(header_of(&response, header::CONTENT_TYPE), "text/html; charset=utf-8", "{path}");
        assert!(header_of(&response, header::CONTENT_SECURITY_POLICY).contains("script-src 'self'"), "{path}");
        let html = body_text(response).await;
        assert!(html.contains(r#"<script type="module" src="/assets/js/app.js">"#), "{path}: {html}");
        assert!(html.contains(r#"<html lang="en""#), "{path}");
    }
}

#[tokio::test]
async fn assets_have_their_content_types_and_revalidate() {
    for (path, content_type) in [
        ("/assets/js/app.js", "text/javascript; charset=utf-8"),
        ("/assets/js/chat.js", "text/javascript; charset=utf-8"),
        ("/assets/css/app.css", "text/css; charset=utf-8"),
        ("/assets/icon.svg", "image/svg+xml"),
    ] {
        let response = get(path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(header_of(&response, header::CONTENT_TYPE), content_type, "{path}");
        assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-cache", "{path}");
        assert_eq!(header_of(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{path}");
        let etag = header_of(&response, header::ETAG);
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{path}: {etag:?}");
        assert!(!body_text(response).await.is_empty(), "{path}");

        let again = get(path, Some(&etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(header_of(&again, header::ETAG), etag);
        assert!(body_text(again).await.is_empty());
        assert_eq!(get(path, Some("\"stale\"")).await.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn hls_js_is_served_when_it_was_embedded() {
    let response = get("/assets/vendor/hls.min.js", None).await;
    if web::player_available() {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header_of(&response, header::CONTENT_TYPE), "text/javascript; charset=utf-8");
        assert!(body_text(response).await.contains("lowLatencyMode"));
    } else {
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(body_text(response).await.contains("scripts/setup.sh"));
    }
}

#[tokio::test]
async fn unknown_assets_and_paths_are_404() {
    for path in ["/assets/js/nope.js", "/assets/", "/assets/../Cargo.toml", "/c/", "/nope", "/c/a/b"] {
        let response = get(path, None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn leaves_api_hls_and_operations_paths_alone() {
    // Merged beside the API, the UI router must not answer any of these.
    for path in ["/api/channels", "/hls/abc/master.m3u8", "/healthz", "/metrics", "/api/openapi.json"] {
        assert_eq!(get(path, None).await.status(), StatusCode::NOT_FOUND, "{path}");
    }
}
