//! `GET /api/channels/{id}/health?sessionId=`: a broadcast's health as its ingest node measured
//! it (samples every 5 s: bitrates, frame rate, keyframe interval, A/V drift), with warnings a
//! streamer can act on, and its audience: concurrent viewers over time, average watch time and
//! the retention curve (see `raft::state::audience`). The channel's owner, its moderators and admins; the current broadcast, or
//! the latest one, unless `sessionId` names another of the channel's.

use axum::extract::{Path, Query, State};
use axum::Json;
use raft::state::health::HealthSample;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::chat::require_moderator;
use crate::error::{ApiError, ApiResult};
use crate::ApiState;

/// Keyframes rarer than this make LL-HLS segments (cut at keyframes) longer than they should be.
pub const KEYFRAME_WARN_MS: u32 = 2_000;
/// A video bitrate below this share of the broadcast's median so far is a collapse.
pub const COLLAPSE_RATIO: f64 = 0.25;

pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::default().routes(routes!(health))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HealthQuery {
    /// A past broadcast of the channel (default: the current or latest one).
    session_id: Option<String>,
}

/// Something the streamer should fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Warning {
    /// `keyframe_interval` or `bitrate_collapse`.
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub channel_id: String,
    /// `null` when the channel never broadcast.
    pub session_id: Option<String>,
    pub live: bool,
    /// Oldest first.
    pub samples: Vec<HealthSample>,
    pub warnings: Vec<Warning>,
    /// Concurrent viewers the edges reported during the broadcast, oldest first.
    pub viewers: Vec<ViewerPoint>,
    /// How long the broadcast's viewers watched (those who left so far).
    pub audience: Audience,
}

/// Watch times of a broadcast's viewers, as the edges saw them leave.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Audience {
    /// Viewers who left (an edge counts a viewer gone one viewer window after its last request).
    pub viewers_left: u64,
    /// Mean seconds from a viewer's first request to its last.
    pub average_watch_seconds: f64,
    /// Share of those viewers who watched at least `atSeconds`, every 30 s from 0.
    pub retention: Vec<RetentionPoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPoint {
    pub at_seconds: u32,
    /// 0 to 1.
    pub share: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ViewerPoint {
    #[schema(value_type = i64)]
    pub at: raft::UnixMillis,
    pub viewers: u64,
}

/// What the samples call for: the keyframe interval over the last 20 s, the newest video bitrate
/// against the broadcast's median so far.
pub fn warnings(samples: &[HealthSample]) -> Vec<Warning> {
    let Some(last) = samples.last() else { return Vec::new() };
    let mut out = Vec::new();
    // Over the last 20 s: a 10 s GOP shows as a 10 s interval in one 5 s window and only as time
    // since the keyframe in the next.
    let recent = &samples[samples.len().saturating_sub(4)..];
    let gop = recent.iter().map(|s| s.keyframe_interval_ms).max().unwrap_or(0).max(last.since_keyframe_ms);
    if gop > KEYFRAME_WARN_MS {
        out.push(Warning {
            code: "keyframe_interval".into(),
            message: format!(
                "a keyframe only every {:.1} s: LL-HLS cuts segments at keyframes, so segments and latency grow with it; \
                 set the encoder's keyframe interval to 1-2 s",
                f64::from(gop) / 1000.0
            ),
        });
    }
    let mut earlier: Vec<u32> = samples[..samples.len() - 1].iter().map(|s| s.video_kbps).collect();
    if earlier.len() >= 3 {
        earlier.sort_unstable();
        let median = f64::from(earlier[earlier.len() / 2]);
        if f64::from(last.video_kbps) < median * COLLAPSE_RATIO {
            out.push(Warning {
                code: "bitrate_collapse".into(),
                message: format!(
                    "video bitrate fell to {} kbit/s from a usual {median:.0}: check the encoder's upload and CPU",
                    last.video_kbps
                ),
            });
        }
    }
    out
}

#[utoipa::path(
    get,
    path = "/api/channels/{id}/health",
    tag = "channels",
    params(("id" = String, Path, description = "Channel id"), HealthQuery),
    responses(
        (status = 200, description = "Health samples of the broadcast, and warnings", body = Health),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not the channel's owner, a moderator or an admin"),
        (status = 404, description = "No such channel, or no such broadcast of it"),
    )
)]
pub(crate) async fn health(
    State(state): State<ApiState>,
    Path(channel_id): Path<String>,
    caller: Caller,
    Query(query): Query<HealthQuery>,
) -> ApiResult<Json<Health>> {
    require_moderator(&state, &channel_id, &caller).await?;
    state.catalog.read(|s| {
        let channel = s.channel(&channel_id).ok_or_else(|| ApiError::not_found("channel", &channel_id))?;
        let session = match &query.session_id {
            Some(id) => Some(
                s.session(id)
                    .filter(|x| x.channel_id == channel_id)
                    .ok_or_else(|| ApiError::not_found("session", id))?,
            ),
            None => channel
                .current_session_id
                .as_deref()
                .and_then(|id| s.session(id))
                .or_else(|| s.sessions_of_channel(&channel_id).max_by_key(|x| x.started_at)),
        };
        let samples = session.map(|x| s.health_samples(&x.id)).unwrap_or_default();
        let viewers = session
            .map(|x| {
                let end = x.ended_at.unwrap_or(raft::UnixMillis::MAX);
                let by_node = crate::analytics::SamplesByNode::new(s.viewer_samples(&channel_id, x.started_at));
                let times = by_node.times();
                times.into_iter().filter(|t| *t <= end).map(|at| ViewerPoint { at, viewers: by_node.at(at) }).collect()
            })
            .unwrap_or_default();
        let watched = session.map(|x| s.watch_stats(&x.id)).unwrap_or_default();
        let audience = Audience {
            viewers_left: watched.viewers,
            average_watch_seconds: (watched.average_seconds() * 10.0).round() / 10.0,
            retention: watched
                .retention()
                .into_iter()
                .map(|(at_seconds, share)| RetentionPoint { at_seconds, share })
                .collect(),
        };
        Ok(Json(Health {
            audience,
            channel_id: channel_id.clone(),
            session_id: session.map(|x| x.id.clone()),
            live: session.is_some_and(|x| x.ended_at.is_none()),
            warnings: warnings(&samples),
            samples,
            viewers,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(video_kbps: u32, keyframe_interval_ms: u32) -> HealthSample {
        HealthSample {
            at: 0,
            video_kbps,
            audio_kbps: 128,
            fps: 30.0,
            keyframe_interval_ms,
            since_keyframe_ms: 500,
            av_drift_ms: 0,
        }
    }

    #[test]
    fn rare_keyframes_and_a_collapsed_bitrate_are_warned() {
        assert!(warnings(&[]).is_empty());
        assert!(warnings(&[sample(2500, 1000), sample(2400, 2000)]).is_empty());
        let codes = |s: &[HealthSample]| warnings(s).into_iter().map(|w| w.code).collect::<Vec<_>>();
        assert_eq!(codes(&[sample(2500, 10_000)]), ["keyframe_interval"]);
        let falling = [sample(2500, 1000), sample(2600, 1000), sample(2400, 1000), sample(300, 1000)];
        assert_eq!(codes(&falling), ["bitrate_collapse"]);
        let recovered = [sample(2500, 1000), sample(2600, 1000), sample(2400, 1000), sample(900, 1000)];
        assert!(codes(&recovered).is_empty(), "900 is above a quarter of 2500");
    }
}
