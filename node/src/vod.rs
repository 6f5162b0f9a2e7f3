//! `/vod/{recording}/...`: recordings played back from the node that holds them (edges ask it
//! for published ones and cache what it answers), with their pictures (`thumb{n}.jpg`); and
//! `/hls/{channel}/poster.jpg`, the live picture of the broadcasts this node records, decoded
//! when asked for (at most once per channel per ten seconds).
//!
//! A published recording is public, like a live channel. A draft's playlists answer only its
//! owner and admins (the Control Center's preview player, signed in); its headers and segments
//! are named by the recording's unguessable id, like any object, and never cached publicly.

use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use control::auth::Caller;
use control::ApiState;
use hls_names::{is_name, HlsPath, Image, RenditionFile};
use raft::state::recordings::{Recording, RecordingStatus};
use recordings::thumbnails::LivePosters;
use recordings::LocalStore;

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const PUBLIC_OBJECT: &str = "public, max-age=31536000, immutable";
/// Playlists of a published recording: stable, but a deletion should be seen within a minute.
const PUBLIC_PLAYLIST: &str = "public, max-age=60";
const PRIVATE: &str = "private, no-store";
/// The live picture changes every few seconds.
const LIVE_POSTER_CACHE: &str = "public, max-age=5";

#[derive(Clone)]
struct Vod {
    store: LocalStore,
    posters: Option<LivePosters>,
    api: ApiState,
}

/// The VOD routes of a node holding recordings in `store`, and the live pictures of `posters`.
pub fn routes(store: LocalStore, posters: Option<LivePosters>, api: ApiState) -> Router {
    Router::new()
        .route("/vod/{recording}/master.m3u8", get(master))
        .route("/vod/{recording}/{rendition}/{file}", get(rendition_file))
        .route("/vod/{recording}/{image}", get(recording_image))
        .route(&format!("/hls/{{channel}}/{}", hls_names::LIVE_POSTER), get(live_poster))
        .layer(axum::middleware::map_response(cors))
        .with_state(Vod { store, posters, api })
}

async fn cors(mut response: Response) -> Response {
    response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

fn not_found(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", format!("recording {id} not found"))
}

/// The recording if it is playable here and `request`'s caller may see it; the answer's
/// `Cache-Control` follows. Playlists check the caller; objects only that the recording exists.
async fn playable(
    vod: &Vod,
    id: &str,
    request: Request,
    check_caller: bool,
) -> Result<(Recording, &'static str), Response> {
    let recording = vod
        .api
        .catalog
        .read(|s| s.recording(id).cloned())
        .filter(|r| r.status == RecordingStatus::Ready && r.node_id == vod.api.catalog.node_id())
        .ok_or_else(|| not_found(id))?;
    if recording.is_published() {
        return Ok((recording, PUBLIC_PLAYLIST));
    }
    if check_caller {
        let (mut parts, _) = request.into_parts();
        let caller = Caller::from_request_parts(&mut parts, &vod.api).await.map_err(IntoResponse::into_response)?;
        let owner = caller.user_id() == Some(recording.owner_id.as_str()) || caller.is_admin();
        if !owner {
            // Drafts are not there for anyone else.
            return Err(not_found(id));
        }
    }
    Ok((recording, PRIVATE))
}

async fn master(State(vod): State<Vod>, Path(id): Path<String>, request: Request) -> Response {
    if !is_name(&id) {
        return not_found(&id);
    }
    let (_, cache) = match playable(&vod, &id, request, true).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let store = vod.store.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        store.renditions(&id).map(|r| recordings::playlist::multivariant_playlist(&r))
    })
    .await;
    playlist_answer(rendered, cache)
}

async fn rendition_file(
    State(vod): State<Vod>,
    Path((id, rendition, file)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    let Some(file) = RenditionFile::parse(&file).filter(|_| is_name(&id) && is_name(&rendition)) else {
        return not_found(&id);
    };
    let is_playlist = file == RenditionFile::Playlist;
    let (_, cache) = match playable(&vod, &id, request, is_playlist).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let store = vod.store.clone();
    if is_playlist {
        let rendered = tokio::task::spawn_blocking(move || {
            store.journal(&id, &rendition).map(|entries| recordings::playlist::media_playlist(&entries))
        })
        .await;
        return playlist_answer(rendered, cache);
    }
    let Some(path) = store.object(&id, &rendition, file) else { return not_found(&id) };
    let body = match tokio::fs::read(&path).await {
        Ok(body) => body,
        Err(e) => return error(StatusCode::NOT_FOUND, "not_found", format!("{}: {e}", path.display())),
    };
    let content_type = if matches!(file, RenditionFile::Init(_)) { "video/mp4" } else { "video/iso.segment" };
    let cache = if cache == PRIVATE { PRIVATE } else { PUBLIC_OBJECT };
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, cache)], body).into_response()
}

/// `thumb{n}.jpg` of a recording (0 is its poster).
async fn recording_image(
    State(vod): State<Vod>,
    Path((id, image)): Path<(String, String)>,
    request: Request,
) -> Response {
    let path = format!("/vod/{id}/{image}");
    let Some(HlsPath::Image { image: Image::Thumbnail(n), .. }) = HlsPath::parse_vod(&path) else {
        return not_found(&id);
    };
    let (_, cache) = match playable(&vod, &id, request, false).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let Ok(file) = vod.store.thumbnail_path(&id, n) else { return not_found(&id) };
    match tokio::fs::read(&file).await {
        Ok(jpeg) => {
            let cache = if cache == PRIVATE { PRIVATE } else { PUBLIC_OBJECT };
            ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, cache)], jpeg).into_response()
        }
        Err(_) => error(StatusCode::NOT_FOUND, "not_found", format!("recording {id} has no picture {n}")),
    }
}

/// A live channel's picture, from the newest segment of its broadcast recorded here.
async fn live_poster(State(vod): State<Vod>, Path(channel): Path<String>) -> Response {
    let live = vod.api.catalog.read(|s| s.channel(&channel).is_some_and(|c| c.live_state == raft::LiveState::Live));
    let jpeg = match (&vod.posters, live) {
        (Some(posters), true) => posters.poster(&channel).await,
        _ => None,
    };
    match jpeg {
        Some(jpeg) => {
            ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, LIVE_POSTER_CACHE)], jpeg).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "not_found", format!("no picture of channel {channel} (not live here)")),
    }
}

fn playlist_answer(
    rendered: Result<std::io::Result<Option<String>>, tokio::task::JoinError>,
    cache: &'static str,
) -> Response {
    match rendered {
        Ok(Ok(Some(text))) => {
            ([(header::CONTENT_TYPE, PLAYLIST_TYPE), (header::CACHE_CONTROL, cache)], text).into_response()
        }
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "not_found", "the recording has no segments".into()),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "storage", format!("reading the recording: {e}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}
