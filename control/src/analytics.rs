//! `GET /api/analytics/overview`: live audience, watch time and chat activity, platform-wide and
//! per channel, computed from the catalog's replicated viewer samples and daily chat counts.
//!
//! Edges and origins report, per channel, how many viewers they serve (`Command::ReportViewers`,
//! one sample per node every few seconds). [`overview`] turns those samples into figures; it is a
//! pure function of the catalog state and `now`, so tests feed it hand-made samples.
//!
//! Definitions (all times UTC, milliseconds):
//!
//! - **A node's sample counts until that node's next sample, for at most 60 s.** A node that stops
//!   reporting (crashed, lost its viewers) stops counting a minute later.
//! - `liveViewers` (channel) = for a live channel, the sum over nodes of each node's latest sample
//!   taken in the last 60 s; 0 for an offline channel. `summary.liveViewers` is the sum over
//!   channels.
//! - `watchTimeMinutes` = viewer-minutes over the last 24 h: Σ over samples of
//!   `viewers × (time the sample counts, clipped to [now − 24 h, now])` / 60 000.
//! - `chatMessages` = messages posted since midnight UTC (the catalog's daily counter).
//! - `streamsLive` = channels whose state is live.
//! - `avgWatchMinutes` (channel) = the mean, over the channel's ended sessions, of
//!   `W(session) / max(peakConcurrent, 1)`, where `W(session)` is the viewer-minutes integrated as
//!   above over `[startedAt, endedAt]`. Dividing by the peak audience gives roughly how long an
//!   average viewer of that broadcast stayed. Only sessions that ended within the sample
//!   retention window ([`raft::community::VIEWER_SAMPLE_RETENTION_MS`], 48 h) count: older ones
//!   have had their samples pruned and would otherwise count as zero-minute sessions.
//!
//! Minutes are rounded to two decimals.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use raft::community::VIEWER_SAMPLE_RETENTION_MS;
use raft::state::CatalogState;
use raft::{now_millis, LiveState, UnixMillis};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::ApiState;

/// How long one node's sample keeps counting without a newer one.
pub const SAMPLE_VALIDITY_MS: UnixMillis = 60_000;
/// Window of `summary.watchTimeMinutes`.
pub const WATCH_WINDOW_MS: UnixMillis = 24 * 3600 * 1000;

pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::default().routes(routes!(overview_handler))
}

/// The documented response shape.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub summary: Summary,
    pub per_channel: Vec<ChannelFigures>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub live_viewers: u64,
    pub streams_live: u64,
    pub watch_time_minutes: f64,
    pub chat_messages: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelFigures {
    pub channel_id: String,
    pub title: String,
    pub live_viewers: u64,
    pub followers: u64,
    pub avg_watch_minutes: f64,
    pub chat_messages: u64,
}

#[utoipa::path(
    get,
    path = "/api/analytics/overview",
    tag = "analytics",
    responses(
        (status = 200, description = "Live viewers, watch time and chat activity (admins)", body = Overview),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not an admin"),
    )
)]
async fn overview_handler(State(state): State<ApiState>, caller: Caller) -> ApiResult<Json<Overview>> {
    caller.require_admin()?;
    Ok(Json(state.catalog.read(|s| overview(s, now_millis()))))
}

/// Compute the overview at `now` (see the module docs for the definitions).
pub fn overview(state: &CatalogState, now: UnixMillis) -> Overview {
    let followers = state.follower_counts();
    let mut summary = Summary { live_viewers: 0, streams_live: 0, watch_time_minutes: 0.0, chat_messages: 0 };
    let mut watch_ms_total: u128 = 0;
    let mut per_channel = Vec::new();
    // Everything a counted session or the 24 h window can use, plus one validity period before.
    let horizon =
        now.saturating_sub(VIEWER_SAMPLE_RETENTION_MS.max(WATCH_WINDOW_MS)).saturating_sub(SAMPLE_VALIDITY_MS);

    for channel in state.channels() {
        let samples = SamplesByNode::new(state.viewer_samples(&channel.id, horizon));
        let live = channel.live_state == LiveState::Live;
        let live_viewers = if live { samples.current(now) } else { 0 };
        watch_ms_total += samples.viewer_ms(now.saturating_sub(WATCH_WINDOW_MS), now, now);

        let session_minutes: Vec<f64> = state
            .sessions_of_channel(&channel.id)
            .filter_map(|s| s.ended_at.map(|end| (s, end)))
            .filter(|(_, end)| *end >= now.saturating_sub(VIEWER_SAMPLE_RETENTION_MS))
            .map(|(s, end)| to_minutes(samples.viewer_ms(s.started_at, end, now)) / s.peak_concurrent.max(1) as f64)
            .collect();
        let avg_watch_minutes = if session_minutes.is_empty() {
            0.0
        } else {
            session_minutes.iter().sum::<f64>() / session_minutes.len() as f64
        };

        let chat_messages = state.chat_messages_on_day(&channel.id, now);
        summary.live_viewers += live_viewers;
        summary.streams_live += u64::from(live);
        summary.chat_messages += chat_messages;
        per_channel.push(ChannelFigures {
            channel_id: channel.id.clone(),
            title: channel.title.clone(),
            live_viewers,
            followers: followers.get(channel.id.as_str()).copied().unwrap_or(0) as u64,
            avg_watch_minutes: round2(avg_watch_minutes),
            chat_messages,
        });
    }
    summary.watch_time_minutes = round2(to_minutes(watch_ms_total));
    // Busiest first; live channels before offline ones with the same audience.
    let live_of = |id: &str| state.channel(id).is_some_and(|c| c.live_state == LiveState::Live);
    per_channel.sort_by(|a, b| {
        b.live_viewers
            .cmp(&a.live_viewers)
            .then_with(|| live_of(&b.channel_id).cmp(&live_of(&a.channel_id)))
            .then_with(|| b.followers.cmp(&a.followers))
            .then_with(|| a.title.cmp(&b.title))
            .then_with(|| a.channel_id.cmp(&b.channel_id))
    });
    Overview { summary, per_channel }
}

/// One channel's samples, per node, oldest first.
pub(crate) struct SamplesByNode(BTreeMap<u64, Vec<(UnixMillis, u64)>>);

impl SamplesByNode {
    pub(crate) fn new(samples: Vec<(UnixMillis, u64, u64)>) -> Self {
        let mut by_node: BTreeMap<u64, Vec<(UnixMillis, u64)>> = BTreeMap::new();
        for (at, node, viewers) in samples {
            by_node.entry(node).or_default().push((at, viewers));
        }
        for list in by_node.values_mut() {
            list.sort_unstable();
        }
        SamplesByNode(by_node)
    }

    /// Σ over nodes of their latest sample at or before `t`, if taken within 60 s of it.
    pub(crate) fn at(&self, t: UnixMillis) -> u64 {
        self.0
            .values()
            .filter_map(|list| list.iter().rev().find(|(at, _)| *at <= t))
            .filter(|(at, _)| *at >= t.saturating_sub(SAMPLE_VALIDITY_MS))
            .map(|(_, viewers)| viewers)
            .sum()
    }

    /// Every sample time, oldest first.
    pub(crate) fn times(&self) -> std::collections::BTreeSet<UnixMillis> {
        self.0.values().flatten().map(|(at, _)| *at).collect()
    }

    /// Σ over nodes of the latest sample taken within the last 60 s.
    fn current(&self, now: UnixMillis) -> u64 {
        self.0
            .values()
            .filter_map(|list| list.last())
            .filter(|(at, _)| *at >= now.saturating_sub(SAMPLE_VALIDITY_MS))
            .map(|(_, viewers)| viewers)
            .sum()
    }

    /// Viewer-milliseconds within `[from, to)`, no sample counting past `now`.
    fn viewer_ms(&self, from: UnixMillis, to: UnixMillis, now: UnixMillis) -> u128 {
        let to = to.min(now);
        let mut total: u128 = 0;
        for list in self.0.values() {
            for (i, (at, viewers)) in list.iter().enumerate() {
                let next = list.get(i + 1).map_or(UnixMillis::MAX, |(t, _)| *t);
                let end = next.min(at.saturating_add(SAMPLE_VALIDITY_MS)).min(to);
                let start = (*at).max(from);
                if end > start {
                    total += u128::from(*viewers) * (end - start) as u128;
                }
            }
        }
        total
    }
}

fn to_minutes(viewer_ms: u128) -> f64 {
    viewer_ms as f64 / 60_000.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::{Channel, ChatMessage, Command, StreamSession, User, ViewerSample};

    const MIN: i64 = 60_000;
    const HOUR: i64 = 3_600_000;
    /// Noon UTC on some day, so that "today" spans comfortably on both sides.
    const NOON: i64 = 20_000 * 86_400_000 + 12 * 3600 * 1000;

    struct World {
        state: CatalogState,
        index: u64,
    }

    impl World {
        fn new() -> Self {
            let mut w = World { state: CatalogState::default(), index: 0 };
            for (id, name) in [("u1", "River"), ("u2", "Lake")] {
                w.apply(Command::CreateUser(User {
                    id: id.into(),
                    display_name: name.into(),
                    email: format!("{id}@example.com"),
                    roles: vec!["creator".into()],
                    password_hash: None,
                    created_at: 0,
                }));
            }
            for (id, owner, title) in [("ch1", "u1", "Rafting"), ("ch2", "u2", "Fishing")] {
                w.apply(Command::CreateChannel(Channel {
                    id: id.into(),
                    owner_id: owner.into(),
                    title: title.into(),
                    category: None,
                    tags: vec![],
                    stream_key_hash: format!("hash-{id}"),
                    live_state: LiveState::Offline,
                    current_session_id: None,
                    moderators: vec![],
                    created_at: 0,
                    updated_at: 0,
                }));
            }
            w
        }

        fn apply(&mut self, command: Command) {
            self.index += 1;
            let (result, _) = self.state.apply(self.index, &command);
            result.unwrap_or_else(|e| panic!("{command:?}: {e}"));
        }

        fn start(&mut self, channel: &str, session: &str, at: i64) {
            self.apply(Command::StartSession(StreamSession {
                id: session.into(),
                channel_id: channel.into(),
                started_at: at,
                ended_at: None,
                renditions: vec!["source".into()],
                peak_concurrent: 0,
                ingest_node: None,
            }));
        }

        fn stop(&mut self, channel: &str, at: i64) {
            self.apply(Command::EndSession { channel_id: channel.into(), ended_at: at, peak_concurrent: None });
        }

        fn sample(&mut self, channel: &str, node: u64, at: i64, viewers: u64) {
            self.apply(Command::ReportViewers(ViewerSample {
                channel_id: channel.into(),
                node_id: node,
                viewers,
                at,
                watched_seconds: vec![],
            }));
        }

        fn chat(&mut self, channel: &str, at: i64) {
            let id = format!("m{}", self.index);
            self.apply(Command::PostChat(ChatMessage {
                id,
                channel_id: channel.into(),
                user_id: "u2".into(),
                text: "hi".into(),
                sent_at: at,
                seq: 0,
            }));
        }
    }

    fn channel<'a>(o: &'a Overview, id: &str) -> &'a ChannelFigures {
        o.per_channel.iter().find(|c| c.channel_id == id).unwrap()
    }

    #[test]
    fn empty_catalog() {
        let o = overview(&CatalogState::default(), NOON);
        assert_eq!(o.summary, Summary { live_viewers: 0, streams_live: 0, watch_time_minutes: 0.0, chat_messages: 0 });
        assert!(o.per_channel.is_empty());
    }

    #[test]
    fn live_viewers_sum_each_nodes_latest_recent_sample() {
        let mut w = World::new();
        let now = NOON;
        w.start("ch1", "s1", now - 10 * MIN);
        w.sample("ch1", 1, now - 50_000, 7);
        w.sample("ch1", 1, now - 20_000, 12); // node 1's latest: 12
        w.sample("ch1", 2, now - 30_000, 5); // node 2: 5
        w.sample("ch1", 3, now - 61_000, 100); // node 3 went quiet over a minute ago
                                               // Offline channels have no live audience even with a recent sample.
        w.sample("ch2", 1, now - 5_000, 40);
        let o = overview(&w.state, now);
        assert_eq!(channel(&o, "ch1").live_viewers, 17);
        assert_eq!(channel(&o, "ch2").live_viewers, 0);
        assert_eq!(o.summary.live_viewers, 17);
        assert_eq!(o.summary.streams_live, 1);
        assert_eq!(o.per_channel[0].channel_id, "ch1", "busiest first");
    }

    #[test]
    fn watch_time_integrates_samples_capped_at_a_minute_within_24h() {
        let mut w = World::new();
        let now = NOON;
        // 10 viewers, samples 30 s apart, the last counting a full minute: 2.5 min -> 25 viewer-minutes.
        for k in 0..4 {
            w.sample("ch1", 1, now - 3 * HOUR + k * 30_000, 10);
        }
        // A lone sample counts 60 s only: 6 viewers -> 6 viewer-minutes.
        w.sample("ch1", 2, now - 2 * HOUR, 6);
        // Straddling the 24 h boundary: only the 30 s inside counts (4 viewers -> 2 minutes).
        w.sample("ch2", 1, now - WATCH_WINDOW_MS - 30_000, 4);
        // Entirely before the window: ignored.
        w.sample("ch2", 1, now - WATCH_WINDOW_MS - 5 * MIN, 1000);
        // The latest sample counts until now, not past it: 3 viewers x 20 s = 1 minute.
        w.sample("ch2", 2, now - 20_000, 3);
        let o = overview(&w.state, now);
        assert_eq!(o.summary.watch_time_minutes, 25.0 + 6.0 + 2.0 + 1.0);
    }

    #[test]
    fn chat_counts_today_only() {
        let mut w = World::new();
        let now = NOON;
        w.chat("ch1", now - HOUR);
        w.chat("ch1", now);
        w.chat("ch2", now - 11 * HOUR);
        w.chat("ch2", now - 13 * HOUR); // yesterday (before midnight UTC)
        let o = overview(&w.state, now);
        assert_eq!(channel(&o, "ch1").chat_messages, 2);
        assert_eq!(channel(&o, "ch2").chat_messages, 1);
        assert_eq!(o.summary.chat_messages, 3);
    }

    #[test]
    fn avg_watch_minutes_is_session_viewer_minutes_over_peak() {
        let mut w = World::new();
        let now = NOON;
        // Session A: 10 minutes, node 1 reports 10 viewers each minute -> 100 viewer-minutes.
        // Node 2 reports 5 viewers at +0 and +30 s -> 5 x 0.5 + 5 x 1 = 7.5 viewer-minutes.
        // Peak (set by the catalog from the reports) = 10 + 5 = 15 -> 107.5 / 15 = 7.1666...
        let a = now - 5 * HOUR;
        w.start("ch1", "sa", a);
        for k in 0..10 {
            w.sample("ch1", 1, a + k * MIN, 10);
        }
        w.sample("ch1", 2, a + 1, 5);
        w.sample("ch1", 2, a + 30_001, 5);
        w.stop("ch1", a + 10 * MIN);
        // Session B: no viewers at all -> 0 / max(0, 1) = 0.
        w.start("ch1", "sb", now - HOUR);
        w.stop("ch1", now - HOUR + 5 * MIN);
        // A session still live does not count.
        w.start("ch1", "sc", now - MIN);
        w.sample("ch1", 1, now - MIN, 50);
        let o = overview(&w.state, now);
        let peak = w.state.session("sa").unwrap().peak_concurrent;
        assert_eq!(peak, 15);
        let expected = ((100.0 + 7.5) / 15.0 + 0.0) / 2.0;
        assert_eq!(channel(&o, "ch1").avg_watch_minutes, round2(expected));
        assert_eq!(channel(&o, "ch2").avg_watch_minutes, 0.0);
    }

    #[test]
    fn old_sessions_are_left_out_of_the_average() {
        let mut w = World::new();
        let now = NOON;
        let old = now - VIEWER_SAMPLE_RETENTION_MS - HOUR;
        w.start("ch2", "old", old);
        w.stop("ch2", old + MIN);
        let recent = now - HOUR;
        w.start("ch2", "new", recent);
        w.sample("ch2", 1, recent, 4);
        w.stop("ch2", recent + MIN);
        // Only "new": 4 viewer-minutes / peak 4 = 1 minute.
        assert_eq!(channel(&overview(&w.state, now), "ch2").avg_watch_minutes, 1.0);
    }

    #[test]
    fn shape_is_the_documented_one() {
        let w = World::new();
        let json = serde_json::to_value(overview(&w.state, NOON)).unwrap();
        let summary = json["summary"].as_object().unwrap();
        let mut keys: Vec<&str> = summary.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["chatMessages", "liveViewers", "streamsLive", "watchTimeMinutes"]);
        let entry = json["perChannel"][0].as_object().unwrap();
        let mut keys: Vec<&str> = entry.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["avgWatchMinutes", "channelId", "chatMessages", "followers", "liveViewers", "title"]);
    }
}
