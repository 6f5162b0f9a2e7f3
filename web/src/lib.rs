//! The web UI of BitRiver Live, served by the control role from the binary itself.
//!
//! Pages are plain HTML, CSS and ES modules (no framework, no build step) embedded at compile
//! time; hls.js comes from npm (`web/package.json`) and is embedded by `build.rs`. Every page
//! route answers the same shell (`index.html`); `assets/js/app.js` picks the view from the path:
//!
//! - `/`: the Control Center (users, channels and stream keys, live sessions, analytics, chat
//!   moderation, profiles, export, cluster and health);
//! - `/channels`: the directory, with search and live badges;
//! - `/c/{channelId}`: a channel page with the LL-HLS player, chat, follow/subscribe and the
//!   streamer's profile;
//! - `/signup`: register or sign in (the server sets the HttpOnly session cookie).
//!
//! Everything the pages do goes through the REST API and the chat WebSocket; this crate only
//! serves files. Assets are revalidated with ETags (`Cache-Control: no-cache`), since their names
//! carry no version.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page shell every UI route answers.
const INDEX_HTML: &[u8] = include_bytes!("../assets/index.html");

/// hls.js as `build.rs` found it; empty when `web/node_modules` was not installed.
const HLS_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hls.min.js"));

/// Path under `/assets/` of the embedded hls.js.
pub const HLS_ASSET: &str = "vendor/hls.min.js";

/// Every file under `/assets/`, by path.
const ASSETS: &[(&str, &[u8])] = &[
    ("css/app.css", include_bytes!("../assets/css/app.css")),
    ("icon.svg", include_bytes!("../assets/icon.svg")),
    ("js/api.js", include_bytes!("../assets/js/api.js")),
    ("js/app.js", include_bytes!("../assets/js/app.js")),
    ("js/channel.js", include_bytes!("../assets/js/channel.js")),
    ("js/chat.js", include_bytes!("../assets/js/chat.js")),
    ("js/control.js", include_bytes!("../assets/js/control.js")),
    ("js/directory.js", include_bytes!("../assets/js/directory.js")),
    ("js/legal.js", include_bytes!("../assets/js/legal.js")),
    ("js/live-sync.js", include_bytes!("../assets/js/live-sync.js")),
    ("js/dom.js", include_bytes!("../assets/js/dom.js")),
    ("js/player.js", include_bytes!("../assets/js/player.js")),
    ("js/profile-form.js", include_bytes!("../assets/js/profile-form.js")),
    ("js/signup.js", include_bytes!("../assets/js/signup.js")),
    ("js/theme.js", include_bytes!("../assets/js/theme.js")),
    ("js/whep.js", include_bytes!("../assets/js/whep.js")),
    (HLS_ASSET, HLS_JS),
];

/// Paths of the pages (each answers the shell).
pub const PAGES: &[&str] = &["/", "/channels", "/signup", "/c/{channel_id}", "/terms", "/privacy", "/dmca"];

/// Content Security Policy of the pages: scripts and styles only from this origin. Media and API
/// calls may go elsewhere (`playbackUrl` can point at an edge), and avatars are remote images;
/// hls.js runs its transmuxer in a blob worker.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https: http:; \
    media-src 'self' blob: https: http:; connect-src 'self' ws: wss: https: http:; worker-src 'self' blob:; \
    object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Whether hls.js was embedded (false when `web/node_modules` was missing at build time).
pub fn player_available() -> bool {
    !HLS_JS.is_empty()
}

/// The UI routes: the pages and `/assets/*`. Merge at the root next to `/api`, `/hls`, `/healthz`
/// and `/metrics`, which it leaves alone.
pub fn router() -> Router {
    let mut router = Router::new();
    for page in PAGES {
        router = router.route(page, get(page_shell));
    }
    router.route("/assets/{*path}", get(asset))
}

async fn page_shell(headers: HeaderMap) -> Response {
    let mut response = respond(&headers, "text/html; charset=utf-8", INDEX_HTML, etag_of("index.html", INDEX_HTML));
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let found = ASSETS.iter().find(|(name, bytes)| *name == path && !bytes.is_empty());
    let Some((name, bytes)) = found else {
        let message = if path == HLS_ASSET {
            "hls.js was not installed when this binary was built: run ./scripts/setup.sh and rebuild\n"
        } else {
            "no such asset\n"
        };
        return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response();
    };
    respond(&headers, content_type(name), bytes, etag_of(name, bytes))
}

/// The body with its validators, or 304 when the client's copy is current.
fn respond(request: &HeaderMap, content_type: &'static str, body: &'static [u8], etag: HeaderValue) -> Response {
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == "*" || tag.trim().trim_start_matches("W/") == etag);
    let headers = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response()
}

/// Content type by file extension (only the kinds embedded above).
fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("html") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// A strong ETag per file: FNV-1a of the bytes, computed once per process.
fn etag_of(name: &str, bytes: &[u8]) -> HeaderValue {
    static TAGS: OnceLock<Vec<(&'static str, HeaderValue)>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut all: Vec<(&'static str, HeaderValue)> =
            ASSETS.iter().map(|(name, bytes)| (*name, etag_header(bytes))).collect();
        all.push(("index.html", etag_header(INDEX_HTML)));
        all
    });
    tags.iter().find(|(n, _)| *n == name).map(|(_, tag)| tag.clone()).unwrap_or_else(|| etag_header(bytes))
}

fn etag_header(bytes: &[u8]) -> HeaderValue {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    // Hex digits and quotes are always a valid header value.
    HeaderValue::from_str(&format!("\"{hash:016x}-{}\"", bytes.len())).unwrap_or(HeaderValue::from_static("\"0\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_import_is_embedded() {
        // A module imported by another but missing from ASSETS would 404 in the browser.
        for (name, bytes) in ASSETS.iter().filter(|(n, _)| n.ends_with(".js") && n.starts_with("js/")) {
            let text = std::str::from_utf8(bytes).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let Some(spec) = line.split(['\'', '"']).nth(1) else { continue };
                let target = spec.trim_start_matches("./");
                assert!(
                    ASSETS.iter().any(|(n, _)| *n == format!("js/{target}")),
                    "{name} imports {spec}, which is not embedded"
                );
            }
        }
    }

    #[test]
    fn etags_differ_by_content() {
        assert_ne!(etag_header(b"a"), etag_header(b"b"));
        assert_eq!(etag_of("js/app.js", b""), etag_header(ASSETS.iter().find(|(n, _)| *n == "js/app.js").unwrap().1));
    }
}
