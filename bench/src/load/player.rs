//! One simulated low-latency HLS viewer, as a sans-IO state machine: answers in, requests out.
//!
//! It does what hls.js does in `lowLatencyMode` on a live LL-HLS stream:
//!
//! - loads the multivariant playlist and picks the highest variant whose `BANDWIDTH` fits the
//!   viewer's link (`bandwidth`), else the lowest, and stays on it (a load test wants a known
//!   bitrate mix, not one that moves with the generator's own throughput);
//! - loads the media playlist, starts `PART-HOLD-BACK` behind the live edge at an independent
//!   part, loads the `EXT-X-MAP` and then every part in order on its media lane;
//! - reloads the playlist on its playlist lane with blocking requests
//!   (`_HLS_msn`/`_HLS_part` of the part after the last listed, `_HLS_skip=YES` when the server
//!   offers delta updates), one after the other, and merges delta updates into what it holds;
//! - requests the part an `EXT-X-PRELOAD-HINT` names before it is listed, so a new part arrives
//!   as soon as the origin has it;
//! - falls back to whole segments when the parts it needs are no longer listed, and to the live
//!   start again when even the segment left the window;
//! - jumps forward to `PART-HOLD-BACK` behind the edge, within what it has buffered, when a
//!   playlist shows it more than the hold-back plus two part targets behind, as our players do
//!   (hls.js with `liveMaxLatencyDuration` set from the playlist: `web/assets/js/player.js`).
//!
//! Playback is modelled on a media clock: the playhead advances in real time from the first part
//! on, while there is buffer; reaching the buffer's end is a stall (buffer empty) that lasts until
//! two part targets are buffered again. Latency to live is the wall clock minus the playhead's
//! `EXT-X-PROGRAM-DATE-TIME`, as a player synchronised to the same clock as the packager sees it.
//!
//! The driver (`viewers.rs`) owns the sockets: it asks [`Player::poll`] for requests whenever a
//! lane is free, hands every answer to [`Player::on_response`], and samples [`Player::sample`].
//! Nothing here reads a clock; every call gets a [`Clock`].

use url::Url;

use super::playlist::{parse_media, parse_multivariant, MediaPlaylist, PlaylistError};

/// Consecutive failures of one lane after which its retry delay stops growing.
const MAX_BACKOFF_MS: f64 = 4_000.0;
/// First retry delay after a failure.
const FIRST_BACKOFF_MS: f64 = 250.0;
/// Part targets buffered before playback resumes after a stall.
const REBUFFER_PARTS: f64 = 2.0;
/// Start this many target durations behind the end of a playlist without parts (classic HLS).
const HOLD_BACK_TARGETS: f64 = 3.0;

/// The time of an event: a monotonic clock for playback and the wall clock for latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Clock {
    /// Milliseconds since any fixed origin, never going back.
    pub(crate) mono_ms: f64,
    /// Milliseconds since the Unix epoch.
    pub(crate) wall_ms: f64,
}

/// The player's two request queues, each with one request in flight at most (hls.js's playlist
/// loader and fragment loader). The driver gives each its own keep-alive connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Lane {
    Playlist,
    Media,
}

/// What a request fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fetch {
    Multivariant,
    /// A media playlist; `blocking` when it carries `_HLS_msn`.
    Playlist {
        blocking: bool,
        delta: bool,
    },
    Init,
    /// Part `index` of segment `msn`; `hinted` when requested from a preload hint, before it was
    /// listed.
    Part {
        msn: u64,
        index: u32,
        hinted: bool,
    },
    Segment {
        msn: u64,
    },
}

/// A request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) lane: Lane,
    pub(crate) url: Url,
    pub(crate) fetch: Fetch,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer<'a> {
    /// 2xx; `body` is the whole body on the playlist lane (empty on the media lane, whose bodies
    /// are only counted), `bytes` its length.
    Ok { body: &'a [u8], bytes: u64 },
    /// Any other status.
    Status(u16),
    /// No answer: connect error, reset, timeout. The text says which.
    Failed(&'a str),
}

/// Counters of one viewer.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct PlayerStats {
    pub(crate) requests: u64,
    /// Body bytes received.
    pub(crate) bytes: u64,
    /// Of which playlists (multivariant and media): the request overhead beside the media.
    pub(crate) playlist_bytes: u64,
    pub(crate) playlists: u64,
    pub(crate) blocking_playlists: u64,
    pub(crate) delta_playlists: u64,
    pub(crate) parts: u64,
    /// Parts requested from a preload hint (included in `parts`).
    pub(crate) hinted_parts: u64,
    pub(crate) segments: u64,
    pub(crate) inits: u64,
    pub(crate) errors: u64,
    pub(crate) last_error: Option<String>,
    /// Times the buffer ran empty while playing.
    pub(crate) stalls: u64,
    /// Time spent stalled, ms (a stall still going on counts up to the last sample).
    pub(crate) stall_ms: f64,
    /// Jumps back to the live start because the next part or segment had left the window.
    pub(crate) resyncs: u64,
    /// Jumps forward to the live point (more than the hold-back plus two part targets behind).
    pub(crate) live_syncs: u64,
    /// Times the player sped up to get back to its target latency ([`catch_up_rate`]).
    pub(crate) catch_ups: u64,
    /// From the first request to the first part appended, ms.
    pub(crate) startup_ms: Option<f64>,
    /// The variant played last (its URI).
    pub(crate) variant: Option<String>,
}

/// What the driver samples once a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// Wall clock minus the playhead's program date-time, ms; `None` before playback or without
    /// `EXT-X-PROGRAM-DATE-TIME`.
    pub(crate) latency_ms: Option<f64>,
    pub(crate) stalled: bool,
    /// Media buffered ahead of the playhead, ms.
    pub(crate) buffer_ms: f64,
}

#[derive(Debug, Clone)]
struct VariantChoice {
    url: Url,
    bandwidth: u64,
}

/// Where the next media request points.
#[derive(Debug, Clone, PartialEq)]
enum Next {
    Part {
        msn: u64,
        index: u32,
        uri: String,
        hinted: bool,
    },
    Segment {
        msn: u64,
        uri: String,
    },
    /// Not listed yet: wait for the playlist.
    Wait,
    /// Left the window: start again at the live start.
    Resync,
}

#[derive(Debug, Default)]
struct LaneState {
    in_flight: Option<Fetch>,
    retry_at: f64,
    failures: u32,
}

impl LaneState {
    fn fail(&mut self, now: f64) {
        self.failures += 1;
        let delay = FIRST_BACKOFF_MS * 2f64.powi(self.failures.min(8) as i32 - 1);
        self.retry_at = now + delay.min(MAX_BACKOFF_MS);
    }
}

/// One viewer.
#[derive(Debug)]
pub(crate) struct Player {
    master: Url,
    bandwidth: u64,
    variants: Vec<VariantChoice>,
    variant: Option<usize>,
    playlist: Option<MediaPlaylist>,
    playlist_lane: LaneState,
    media_lane: LaneState,
    /// The init segment of the current variant is still to load.
    need_init: bool,
    /// Next (msn, part index) to load; `None` until a start is chosen.
    next: Option<(u64, u32)>,
    /// A hinted part appended with `PART-TARGET` as its duration, until the playlist lists it.
    unconfirmed: Option<(u64, u32, f64)>,
    /// A hint URI that was answered 404: not asked again until the playlist moves on.
    refused_hint: Option<String>,
    /// Media time, ms: the playhead and the end of the buffer on one continuous timeline.
    playhead: f64,
    buffer_end: f64,
    /// Program date-time (ms) minus media time at the last appended media.
    pdt_offset: Option<f64>,
    playing: bool,
    /// Time from the first media loaded to the first frame shown (ms); see [`Player::with_startup_ms`].
    startup_ms: f64,
    /// When playback begins: the first append plus `startup_ms` (mono ms).
    plays_from: Option<f64>,
    stalled_since: Option<f64>,
    last_advance: Option<f64>,
    /// Playback rate: above 1 while catching up to the target latency.
    rate: f64,
    started_at: Option<f64>,
    ended: bool,
    stats: PlayerStats,
}

impl Player {
    /// A viewer of `master` (a multivariant playlist, or a media playlist directly) on a link of
    /// `bandwidth` bits/s.
    pub(crate) fn new(master: Url, bandwidth: u64) -> Self {
        Player {
            master,
            bandwidth,
            variants: Vec::new(),
            variant: None,
            playlist: None,
            playlist_lane: LaneState::default(),
            media_lane: LaneState::default(),
            need_init: true,
            next: None,
            unconfirmed: None,
            refused_hint: None,
            playhead: 0.0,
            buffer_end: 0.0,
            pdt_offset: None,
            playing: false,
            startup_ms: 0.0,
            plays_from: None,
            stalled_since: None,
            last_advance: None,
            rate: 1.0,
            started_at: None,
            ended: false,
            stats: PlayerStats::default(),
        }
    }

    /// A browser does not show the first frame the moment the first part is loaded: the media
    /// pipeline (MSE append, decoder start, the element reaching `HAVE_ENOUGH_DATA`) takes a
    /// while, and hls.js keeps the start position meanwhile, so that time adds to the latency to
    /// live for as long as the viewer watches. `ms` of it (0 by default).
    pub(crate) fn with_startup_ms(mut self, ms: f64) -> Self {
        self.startup_ms = ms.max(0.0);
        self
    }

    pub(crate) fn stats(&self) -> &PlayerStats {
        &self.stats
    }

    /// The stream ended (`EXT-X-ENDLIST`) and everything listed was loaded.
    pub(crate) fn is_finished(&self) -> bool {
        self.ended && self.playlist_lane.in_flight.is_none() && self.media_lane.in_flight.is_none()
    }

    /// When to call [`Player::poll`] again if no answer comes first (a retry after a failure).
    pub(crate) fn wake_at(&self) -> Option<f64> {
        [&self.playlist_lane, &self.media_lane]
            .into_iter()
            .filter(|l| l.in_flight.is_none() && l.failures > 0)
            .map(|l| l.retry_at)
            .reduce(f64::min)
    }

    /// The requests to send now, at most one per free lane.
    pub(crate) fn poll(&mut self, now: Clock) -> Vec<Request> {
        self.started_at.get_or_insert(now.mono_ms);
        self.advance(now);
        let mut out = Vec::with_capacity(2);
        if self.playlist_lane.in_flight.is_none() && now.mono_ms >= self.playlist_lane.retry_at && !self.ended {
            if let Some(request) = self.playlist_request() {
                self.playlist_lane.in_flight = Some(request.fetch.clone());
                out.push(request);
            }
        }
        if self.media_lane.in_flight.is_none() && now.mono_ms >= self.media_lane.retry_at {
            if let Some(request) = self.media_request(now) {
                self.media_lane.in_flight = Some(request.fetch.clone());
                out.push(request);
            }
        }
        out
    }

    fn media_url(&self) -> Option<&Url> {
        self.variant.map(|v| &self.variants[v].url)
    }

    fn playlist_request(&self) -> Option<Request> {
        let Some(media) = self.media_url() else {
            return Some(Request { lane: Lane::Playlist, url: self.master.clone(), fetch: Fetch::Multivariant });
        };
        let mut url = media.clone();
        let mut blocking = false;
        let mut delta = false;
        if let Some(p) = &self.playlist {
            if p.can_block_reload {
                if let Some((msn, part)) = p.next_part() {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("_HLS_msn", &msn.to_string());
                    if p.part_target.is_some() {
                        q.append_pair("_HLS_part", &part.to_string());
                    }
                    if p.can_skip_until.is_some() {
                        q.append_pair("_HLS_skip", "YES");
                        delta = true;
                    }
                    blocking = true;
                }
            }
        }
        Some(Request { lane: Lane::Playlist, url, fetch: Fetch::Playlist { blocking, delta } })
    }

    fn media_request(&mut self, now: Clock) -> Option<Request> {
        let playlist = self.playlist.as_ref()?;
        let base = self.media_url()?.clone();
        if self.need_init {
            if let Some(map) = &playlist.map_uri {
                let Some(url) = resolve(&base, map) else {
                    self.bad_uri(map.clone(), now);
                    return None;
                };
                return Some(Request { lane: Lane::Media, url, fetch: Fetch::Init });
            }
            self.need_init = false;
        }
        if self.next.is_none() {
            self.next = start_position(playlist);
        }
        loop {
            match self.locate() {
                Next::Part { msn, index, uri, hinted } => {
                    let Some(url) = resolve(&base, &uri) else {
                        self.bad_uri(uri, now);
                        return None;
                    };
                    return Some(Request { lane: Lane::Media, url, fetch: Fetch::Part { msn, index, hinted } });
                }
                Next::Segment { msn, uri } => {
                    let Some(url) = resolve(&base, &uri) else {
                        self.bad_uri(uri, now);
                        return None;
                    };
                    return Some(Request { lane: Lane::Media, url, fetch: Fetch::Segment { msn } });
                }
                Next::Wait => return None,
                Next::Resync => {
                    self.stats.resyncs += 1;
                    self.next = self.playlist.as_ref().and_then(start_position);
                    self.pdt_offset = None;
                    // A resync starts again: a continuous timeline from the new start.
                    if self.next.is_none() || matches!(self.locate(), Next::Resync) {
                        return None;
                    }
                }
            }
        }
    }

    /// Where `self.next` is in the current playlist.
    fn locate(&mut self) -> Next {
        let Some(p) = &self.playlist else { return Next::Wait };
        let Some((mut msn, mut index)) = self.next else { return Next::Wait };
        for _ in 0..4 {
            let Some(first) = p.segments.first() else { return Next::Wait };
            if msn < first.msn {
                return Next::Resync;
            }
            if let Some(seg) = p.segment(msn) {
                if let Some(part) = seg.parts.get(index as usize) {
                    return Next::Part { msn, index, uri: part.uri.clone(), hinted: false };
                }
                match &seg.uri {
                    // A complete segment whose parts are all loaded: on to the next.
                    Some(_) if index as usize >= seg.parts.len() && !seg.parts.is_empty() => {
                        (msn, index) = (msn + 1, 0);
                        self.next = Some((msn, index));
                        continue;
                    }
                    // Parts no longer listed: the whole segment, if from its start.
                    Some(uri) if index == 0 => return Next::Segment { msn, uri: uri.clone() },
                    Some(_) => return Next::Resync,
                    None => {}
                }
            }
            // Not listed (or the partial segment's next part): the preload hint, if it names it.
            if p.next_part() == Some((msn, index)) {
                if let Some(hint) = &p.preload_hint {
                    if self.refused_hint.as_ref() != Some(hint) {
                        return Next::Part { msn, index, uri: hint.clone(), hinted: true };
                    }
                }
            }
            if p.endlist && p.next_part().is_some_and(|n| (msn, index) >= n) {
                self.ended = true;
            }
            return Next::Wait;
        }
        Next::Wait
    }

    /// Takes the answer to the request in flight on `lane`.
    pub(crate) fn on_response(&mut self, lane: Lane, answer: Answer<'_>, now: Clock) {
        self.advance(now);
        let state = match lane {
            Lane::Playlist => &mut self.playlist_lane,
            Lane::Media => &mut self.media_lane,
        };
        let Some(fetch) = state.in_flight.take() else { return };
        self.stats.requests += 1;
        let (body, bytes) = match answer {
            Answer::Ok { body, bytes } => (body, bytes),
            Answer::Status(404) if matches!(fetch, Fetch::Part { hinted: true, .. }) => {
                // The hinted part will not be published (its segment closed first): not an error.
                self.refused_hint = self.playlist.as_ref().and_then(|p| p.preload_hint.clone());
                return;
            }
            Answer::Status(404) if matches!(fetch, Fetch::Part { .. } | Fetch::Segment { .. }) => {
                self.error(lane, format!("{fetch:?}: 404"), now);
                self.next = None;
                self.stats.resyncs += 1;
                return;
            }
            Answer::Status(status) => return self.error(lane, format!("{fetch:?}: HTTP {status}"), now),
            Answer::Failed(why) => return self.error(lane, format!("{fetch:?}: {why}"), now),
        };
        self.stats.bytes += bytes;
        if matches!(fetch, Fetch::Multivariant | Fetch::Playlist { .. }) {
            self.stats.playlist_bytes += bytes;
        }
        let result = match fetch {
            Fetch::Multivariant => self.take_multivariant(body),
            Fetch::Playlist { blocking, .. } => {
                self.stats.blocking_playlists += u64::from(blocking);
                self.take_playlist(body, now)
            }
            Fetch::Init => {
                self.stats.inits += 1;
                self.need_init = false;
                Ok(())
            }
            Fetch::Part { msn, index, hinted } => {
                self.stats.parts += 1;
                self.stats.hinted_parts += u64::from(hinted);
                self.take_part(msn, index, hinted, now);
                Ok(())
            }
            Fetch::Segment { msn } => {
                self.stats.segments += 1;
                self.take_segment(msn, now);
                Ok(())
            }
        };
        match result {
            Ok(()) => {
                let state = match lane {
                    Lane::Playlist => &mut self.playlist_lane,
                    Lane::Media => &mut self.media_lane,
                };
                state.failures = 0;
                state.retry_at = 0.0;
            }
            Err(e) => self.error(lane, e.to_string(), now),
        }
    }

    /// A URI that does not make an http(s) URL: an error, retried after a backoff (a later
    /// playlist may list something better).
    fn bad_uri(&mut self, uri: String, now: Clock) {
        self.error(Lane::Media, format!("unusable URI {uri:?}"), now);
    }

    fn error(&mut self, lane: Lane, why: String, now: Clock) {
        self.stats.errors += 1;
        self.stats.last_error = Some(why);
        match lane {
            Lane::Playlist => self.playlist_lane.fail(now.mono_ms),
            Lane::Media => self.media_lane.fail(now.mono_ms),
        }
    }

    fn take_multivariant(&mut self, body: &[u8]) -> Result<(), PlaylistError> {
        let text = String::from_utf8_lossy(body);
        let variants = match parse_multivariant(&text) {
            // A media playlist given as the URL: play it as the only variant.
            Err(PlaylistError::NoVariants) if text.contains("#EXTINF") || text.contains("#EXT-X-PART") => {
                vec![VariantChoice { url: self.master.clone(), bandwidth: 0 }]
            }
            Err(e) => return Err(e),
            Ok(list) => {
                let mut v: Vec<_> = list
                    .into_iter()
                    .filter_map(|v| Some(VariantChoice { url: resolve(&self.master, &v.uri)?, bandwidth: v.bandwidth }))
                    .collect();
                v.sort_by_key(|v| v.bandwidth);
                v
            }
        };
        if variants.is_empty() {
            return Err(PlaylistError::NoVariants);
        }
        let pick = variants.iter().rposition(|v| v.bandwidth <= self.bandwidth).unwrap_or(0);
        self.stats.variant = Some(variants[pick].url.to_string());
        self.variants = variants;
        self.variant = Some(pick);
        Ok(())
    }

    fn take_playlist(&mut self, body: &[u8], now: Clock) -> Result<(), PlaylistError> {
        let mut fresh = parse_media(&String::from_utf8_lossy(body))?;
        self.stats.playlists += 1;
        if fresh.skipped > 0 {
            self.stats.delta_playlists += 1;
            // Keep what we held of the skipped segments, so a viewer behind the edge still finds them.
            if let (Some(old), Some(first)) = (&self.playlist, fresh.segments.first().map(|s| s.msn)) {
                let mut merged: Vec<_> = old.segments.iter().filter(|s| s.msn < first).cloned().collect();
                merged.append(&mut fresh.segments);
                fresh.segments = merged;
            }
        }
        if self.playlist.as_ref().and_then(|p| p.preload_hint.as_ref()) != fresh.preload_hint.as_ref() {
            self.refused_hint = None;
        }
        if !fresh.can_block_reload && !fresh.endlist {
            // Without blocking reloads, poll every part target (or half a target duration).
            let every = fresh.part_target.unwrap_or(fresh.target_duration / 2.0).max(0.1) * 1000.0;
            self.playlist_lane.retry_at = now.mono_ms + every;
        }
        if fresh.endlist {
            self.ended = self.next.is_some_and(|n| fresh.next_part().is_some_and(|end| n >= end));
        }
        // A hinted part appended with an assumed duration: correct it now that it is listed.
        if let Some((msn, index, assumed)) = self.unconfirmed {
            if let Some(part) = fresh.segment(msn).and_then(|s| s.parts.get(index as usize)) {
                self.buffer_end += part.duration * 1000.0 - assumed;
                self.unconfirmed = None;
            }
        }
        self.playlist = Some(fresh);
        self.keep_up(now);
        Ok(())
    }

    /// Back to the live point: a playhead more than the hold-back plus two part targets behind
    /// the playlist's edge jumps to the hold-back, or as far as the buffer reaches; closer than
    /// that, the playback rate closes the gap ([`catch_up_rate`]).
    fn keep_up(&mut self, now: Clock) {
        self.advance(now);
        if !self.playing || self.stalled_since.is_some() {
            return;
        }
        let (Some(p), Some(offset)) = (&self.playlist, self.pdt_offset) else { return };
        let (Some(hold), Some(target)) = (p.part_hold_back, p.part_target) else { return };
        let Some(edge) = p.segments.last().and_then(|s| Some(s.program_date_time? as f64 + s.duration * 1000.0)) else {
            return;
        };
        if edge - (offset + self.playhead) > (hold + 2.0 * target) * 1000.0 {
            let sync = (edge - hold * 1000.0 - offset).min(self.buffer_end);
            if sync > self.playhead {
                self.playhead = sync;
                self.stats.live_syncs += 1;
            }
        }
        let behind = (edge - (offset + self.playhead)) / 1000.0 - hold;
        let rate = catch_up_rate(behind, (self.buffer_end - self.playhead) / 1000.0, target, self.rate);
        if rate > 1.0 && self.rate <= 1.0 {
            self.stats.catch_ups += 1;
        }
        self.rate = rate;
    }

    fn take_part(&mut self, msn: u64, index: u32, hinted: bool, now: Clock) {
        let p = self.playlist.as_ref();
        let seg = p.and_then(|p| p.segment(msn));
        let listed = seg.and_then(|s| s.parts.get(index as usize)).map(|part| part.duration * 1000.0);
        let start = seg.and_then(|s| s.part_start(index as usize)).map(|t| t as f64);
        let duration = match listed {
            Some(d) => d,
            None => {
                let assumed = p.and_then(|p| p.part_target).unwrap_or(0.2) * 1000.0;
                self.unconfirmed = Some((msn, index, assumed));
                assumed
            }
        };
        // A hinted part's start is the end of what came before it.
        let start = start.or_else(|| if hinted { self.pdt_offset.map(|o| o + self.buffer_end) } else { None });
        self.append(duration, start, now);
        self.next = Some((msn, index + 1));
    }

    fn take_segment(&mut self, msn: u64, now: Clock) {
        let seg = self.playlist.as_ref().and_then(|p| p.segment(msn));
        let duration = seg.map_or(0.0, |s| s.duration * 1000.0);
        let start = seg.and_then(|s| s.program_date_time).map(|t| t as f64);
        self.append(duration, start, now);
        self.next = Some((msn + 1, 0));
    }

    /// Appends `duration` ms of media starting at program date-time `start` (ms).
    fn append(&mut self, duration: f64, start: Option<f64>, now: Clock) {
        if let Some(start) = start {
            self.pdt_offset = Some(start - self.buffer_end);
        }
        self.buffer_end += duration;
        if !self.playing && self.plays_from.is_none() {
            self.plays_from = Some(now.mono_ms + self.startup_ms);
            self.advance(now);
        }
        // After a stall, playback resumes once two part targets are buffered (a rebuffering
        // goal, as players keep): resuming on every part that arrives just in time would count
        // each part of a viewer at the very edge as a stall of its own.
        let rebuffer = self.playlist.as_ref().and_then(|p| p.part_target).map_or(0.0, |t| REBUFFER_PARTS * t * 1000.0);
        if let Some(since) = self.stalled_since {
            if self.buffer_end - self.playhead >= rebuffer - 1e-6 {
                self.stalled_since = None;
                self.stats.stall_ms += now.mono_ms - since;
            }
        }
    }

    /// Moves the playhead to `now`; running out of buffer starts a stall.
    fn advance(&mut self, now: Clock) {
        if !self.playing {
            match self.plays_from {
                Some(at) if now.mono_ms >= at => {
                    self.playing = true;
                    self.stats.startup_ms = self.started_at.map(|t| at - t);
                    self.last_advance = Some(at);
                }
                _ => {
                    self.last_advance = Some(now.mono_ms);
                    return;
                }
            }
        }
        let last = self.last_advance.replace(now.mono_ms).unwrap_or(now.mono_ms);
        let dt = (now.mono_ms - last).max(0.0);
        if !self.playing || self.stalled_since.is_some() {
            return;
        }
        let (room, step) = (self.buffer_end - self.playhead, dt * self.rate);
        if step >= room {
            self.playhead = self.buffer_end;
            if !self.ended {
                self.stalled_since = Some(now.mono_ms - (step - room) / self.rate);
                self.stats.stalls += 1;
            }
            self.rate = 1.0;
        } else {
            self.playhead += step;
        }
    }

    /// Latency, stall state and buffer at `now`.
    pub(crate) fn sample(&mut self, now: Clock) -> Sample {
        self.advance(now);
        let latency_ms = self.pdt_offset.filter(|_| self.playing).map(|o| now.wall_ms - (o + self.playhead));
        Sample { latency_ms, stalled: self.stalled_since.is_some(), buffer_ms: self.buffer_end - self.playhead }
    }

    /// Stats with a stall still going on counted up to `now`.
    pub(crate) fn final_stats(&mut self, now: Clock) -> PlayerStats {
        self.advance(now);
        let mut stats = self.stats.clone();
        if let Some(since) = self.stalled_since {
            stats.stall_ms += now.mono_ms - since;
        }
        stats
    }
}

/// The playback rate of a viewer `behind` s past its target latency with `buffered` s of media
/// ahead, now playing at `rate`, as the web UI's player picks it (`catchUpRate` in
/// web/assets/js/live-sync.js): 1.1x from half a part target behind (50 ms at least) until
/// within 30 ms, 1.25x beyond a second, never with less than a part target buffered.
fn catch_up_rate(behind: f64, buffered: f64, part_target: f64, rate: f64) -> f64 {
    if buffered < part_target || behind <= 0.03 || (rate <= 1.0 && behind < (part_target / 2.0).max(0.05)) {
        1.0
    } else if behind > 1.0 {
        1.25
    } else {
        1.1
    }
}

/// `uri` against `base`, if that is an http(s) URL with a host (a playlist may hold anything).
fn resolve(base: &Url, uri: &str) -> Option<Url> {
    base.join(uri).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

/// Where a player joining `p` starts: the last independent part at or before the live edge minus
/// `PART-HOLD-BACK` (hls.js's target latency in low-latency mode), or without parts the segment
/// three target durations from the end.
fn start_position(p: &MediaPlaylist) -> Option<(u64, u32)> {
    let mut parts = Vec::new();
    let mut t = 0.0;
    for s in &p.segments {
        for (i, part) in s.parts.iter().enumerate() {
            parts.push((s.msn, i as u32, t, part.independent));
            t += part.duration;
        }
        if s.parts.is_empty() {
            t += s.duration;
        }
    }
    let end = t;
    if let Some(hold) = p.part_hold_back.filter(|_| !parts.is_empty()) {
        let target = end - hold;
        let any_independent = parts.iter().any(|p| p.3);
        let fits = |p: &&(u64, u32, f64, bool)| (p.3 || !any_independent) && p.2 <= target + 1e-6;
        let pick = parts.iter().rev().find(fits).or_else(|| parts.iter().find(|p| p.3 || !any_independent))?;
        return Some((pick.0, pick.1));
    }
    // Classic HLS: whole segments.
    let complete: Vec<_> = p.segments.iter().filter(|s| s.uri.is_some()).collect();
    let mut behind = 0.0;
    for s in complete.iter().rev() {
        behind += s.duration;
        if behind >= HOLD_BACK_TARGETS * p.target_duration {
            return Some((s.msn, 0));
        }
    }
    complete.first().map(|s| (s.msn, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=2500000\nsource/index.m3u8\n\
                          #EXT-X-STREAM-INF:BANDWIDTH=800000\n360p/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=1500000\n480p/index.m3u8\n";

    /// A live playlist in our origin's shape: 1 s segments of five 200 ms parts, starting at
    /// msn `first`, `complete` whole segments then `partial` parts of the next one, PDT from
    /// `t0` (ms), parts listed for the last 3 segments only.
    fn live(first: u64, complete: u64, partial: u32, t0: i64) -> String {
        let mut out = String::from(
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600,CAN-SKIP-UNTIL=6.0\n\
             #EXT-X-PART-INF:PART-TARGET=0.200\n",
        );
        out += &format!("#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-MAP:URI=\"init.mp4\"\n");
        let iso = |ms: i64| {
            let secs = ms / 1000;
            format!("1970-01-01T{:02}:{:02}:{:02}.{:03}Z", secs / 3600, secs / 60 % 60, secs % 60, ms % 1000)
        };
        for k in 0..complete {
            let msn = first + k;
            out += &format!("#EXT-X-PROGRAM-DATE-TIME:{}\n", iso(t0 + 1000 * k as i64));
            if k + 3 >= complete {
                for i in 0..5 {
                    let ind = if i == 0 { ",INDEPENDENT=YES" } else { "" };
                    out += &format!("#EXT-X-PART:DURATION=0.200,URI=\"part{msn}.{i}.m4s\"{ind}\n");
                }
            }
            out += &format!("#EXTINF:1.000,\nseg{msn}.m4s\n");
        }
        let msn = first + complete;
        if partial > 0 {
            out += &format!("#EXT-X-PROGRAM-DATE-TIME:{}\n", iso(t0 + 1000 * complete as i64));
            for i in 0..partial {
                let ind = if i == 0 { ",INDEPENDENT=YES" } else { "" };
                out += &format!("#EXT-X-PART:DURATION=0.200,URI=\"part{msn}.{i}.m4s\"{ind}\n");
            }
        }
        out += &format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part{msn}.{partial}.m4s\"\n");
        out
    }

    fn at(ms: f64) -> Clock {
        Clock { mono_ms: ms, wall_ms: ms }
    }

    fn ok(body: &str) -> Answer<'_> {
        Answer::Ok { body: body.as_bytes(), bytes: body.len() as u64 }
    }

    const MEDIA_OK: Answer<'static> = Answer::Ok { body: b"", bytes: 1000 };

    fn one(requests: Vec<Request>, lane: Lane) -> Request {
        let mut r: Vec<_> = requests.into_iter().filter(|r| r.lane == lane).collect();
        assert_eq!(r.len(), 1, "one {lane:?} request: {r:?}");
        r.remove(0)
    }

    fn master() -> Url {
        Url::parse("http://edge.example/hls/ch/master.m3u8").unwrap()
    }

    /// Multivariant and first playlist loaded; returns the player at t = 0.
    fn joined(bandwidth: u64) -> Player {
        let mut p = Player::new(master(), bandwidth);
        let r = one(p.poll(at(0.0)), Lane::Playlist);
        assert_eq!((r.url.as_str(), &r.fetch), ("http://edge.example/hls/ch/master.m3u8", &Fetch::Multivariant));
        p.on_response(Lane::Playlist, ok(MASTER), at(0.0));
        let r = one(p.poll(at(0.0)), Lane::Playlist);
        assert_eq!(r.fetch, Fetch::Playlist { blocking: false, delta: false });
        // Segments 10..=14 complete, 2 parts of 15; PDT of msn 10 = 100 s.
        p.on_response(Lane::Playlist, ok(&live(10, 5, 2, 100_000)), at(0.0));
        p
    }

    #[test]
    fn picks_the_highest_variant_the_link_carries() {
        let p = joined(2_000_000);
        assert_eq!(p.media_url().unwrap().as_str(), "http://edge.example/hls/ch/480p/index.m3u8");
        let p = joined(10_000_000);
        assert_eq!(p.media_url().unwrap().as_str(), "http://edge.example/hls/ch/source/index.m3u8");
        let p = joined(100_000);
        assert_eq!(p.media_url().unwrap().as_str(), "http://edge.example/hls/ch/360p/index.m3u8");
    }

    #[test]
    fn loads_init_then_parts_from_part_hold_back_at_an_independent_part() {
        let mut p = joined(100_000_000);
        let reqs = p.poll(at(0.0));
        let playlist = one(reqs.clone(), Lane::Playlist);
        // The blocking reload asks for the part after the last listed (15.2), with a delta.
        assert_eq!(
            playlist.url.as_str(),
            "http://edge.example/hls/ch/source/index.m3u8?_HLS_msn=15&_HLS_part=2&_HLS_skip=YES"
        );
        assert_eq!(playlist.fetch, Fetch::Playlist { blocking: true, delta: true });
        let init = one(reqs, Lane::Media);
        assert_eq!((init.url.as_str(), &init.fetch), ("http://edge.example/hls/ch/source/init.mp4", &Fetch::Init));
        p.on_response(Lane::Media, MEDIA_OK, at(5.0));
        // Live edge = end of 15.1; 0.6 s back is 14.2, and the independent part at or before it is 14.0.
        let part = one(p.poll(at(5.0)), Lane::Media);
        assert_eq!(part.url.as_str(), "http://edge.example/hls/ch/source/part14.0.m4s");
        assert_eq!(part.fetch, Fetch::Part { msn: 14, index: 0, hinted: false });
        p.on_response(Lane::Media, MEDIA_OK, at(10.0));
        // Then 14.1..14.4, 15.0, 15.1 in order, then the hinted 15.2.
        let mut got = Vec::new();
        for k in 0..7 {
            let r = one(p.poll(at(10.0 + k as f64)), Lane::Media);
            got.push(r.url.path().rsplit('/').next().unwrap().to_owned());
            p.on_response(Lane::Media, MEDIA_OK, at(11.0 + k as f64));
        }
        assert_eq!(
            got,
            [
                "part14.1.m4s",
                "part14.2.m4s",
                "part14.3.m4s",
                "part14.4.m4s",
                "part15.0.m4s",
                "part15.1.m4s",
                "part15.2.m4s"
            ]
        );
        // Nothing more until the playlist moves on.
        assert!(p.poll(at(20.0)).is_empty());
        let s = p.stats();
        assert_eq!((s.parts, s.hinted_parts, s.inits, s.errors), (8, 1, 1, 0));
        // Playing from 10 ms on: 1.6 s buffered (8 parts) minus 10 ms played.
        let sample = p.sample(at(20.0));
        assert!(!sample.stalled);
        assert!((sample.buffer_ms - (1600.0 - 10.0)).abs() < 1e-6, "{sample:?}");
    }

    #[test]
    fn latency_is_wall_clock_minus_the_playheads_program_date_time() {
        let mut p = joined(100_000_000);
        p.poll(at(0.0));
        p.on_response(Lane::Media, MEDIA_OK, at(0.0)); // init
        p.poll(at(0.0));
        // Part 14.0 starts at PDT 104 s; it arrives at wall 105.5 s.
        let wall = 105_500.0;
        p.on_response(Lane::Media, MEDIA_OK, Clock { mono_ms: 1000.0, wall_ms: wall });
        let s = p.sample(Clock { mono_ms: 1100.0, wall_ms: wall + 100.0 });
        // The playhead moved 100 ms into the part: 104.1 s, wall 105.6 s.
        assert!((s.latency_ms.unwrap() - 1500.0).abs() < 1e-6, "{s:?}");
    }

    /// Joined, with parts 14.0 ..= 15.1 (PDT 104.0 .. 105.4 s) arrived at wall 105.5 s (mono 1 s):
    /// 1.4 s buffered, playing from 104.0 s.
    fn playing_from_14() -> Player {
        let mut p = joined(100_000_000);
        p.poll(at(0.0));
        p.on_response(Lane::Media, MEDIA_OK, at(0.0)); // init
        let arrived = Clock { mono_ms: 1000.0, wall_ms: 105_500.0 };
        for _ in 0..7 {
            p.poll(arrived);
            p.on_response(Lane::Media, MEDIA_OK, arrived);
        }
        p
    }

    #[test]
    fn a_viewer_behind_the_live_point_jumps_to_the_hold_back_within_its_buffer() {
        let mut p = playing_from_14();
        let s = p.sample(Clock { mono_ms: 1100.0, wall_ms: 105_600.0 });
        assert!((s.latency_ms.unwrap() - 1500.0).abs() < 1e-6, "{s:?}");
        // A playlist (edge at PDT 105.4 s) shows the playhead 1.3 s behind: more than 0.6 + 2 x 0.2.
        p.on_response(Lane::Playlist, ok(&live(10, 5, 2, 100_000)), Clock { mono_ms: 1100.0, wall_ms: 105_600.0 });
        let s = p.sample(Clock { mono_ms: 1100.0, wall_ms: 105_600.0 });
        // Now at 104.8 s, the hold-back behind the edge: 0.8 s behind the wall clock.
        assert!((s.latency_ms.unwrap() - 800.0).abs() < 1e-6, "{s:?}");
        assert_eq!(p.stats().live_syncs, 1);
        // Within the bound, no jump.
        p.on_response(Lane::Playlist, ok(&live(10, 5, 2, 100_000)), Clock { mono_ms: 1200.0, wall_ms: 105_700.0 });
        assert_eq!(p.stats().live_syncs, 1);
    }

    #[test]
    fn a_viewer_a_little_behind_catches_up_by_playback_rate_then_plays_at_normal_speed() {
        let mut p = playing_from_14();
        // At 104.45 s a playlist (edge 105.4 s) shows the playhead 0.95 s behind: not past the
        // jump bound (1.0 s) but 0.35 s past the hold-back, with 0.95 s buffered.
        let later = Clock { mono_ms: 1450.0, wall_ms: 105_950.0 };
        p.on_response(Lane::Playlist, ok(&live(10, 5, 2, 100_000)), later);
        assert_eq!((p.stats().live_syncs, p.stats().catch_ups), (0, 1));
        // 500 ms at 1.1x: the playhead moved 550 ms, the latency fell by 50 ms.
        let s = p.sample(Clock { mono_ms: 1950.0, wall_ms: 106_450.0 });
        assert!((s.latency_ms.unwrap() - 1450.0).abs() < 1e-6, "{s:?}");
        // Now at 105.0 s, 0.4 s from the edge: inside the hold-back, back to normal speed.
        let now = Clock { mono_ms: 1950.0, wall_ms: 106_450.0 };
        one(p.poll(now), Lane::Playlist);
        p.on_response(Lane::Playlist, ok(&live(10, 5, 2, 100_000)), now);
        let s = p.sample(Clock { mono_ms: 2050.0, wall_ms: 106_550.0 });
        assert!((s.latency_ms.unwrap() - 1450.0).abs() < 1e-6, "{s:?}");
        assert_eq!(p.stats().catch_ups, 1);
    }

    #[test]
    fn catching_up_needs_a_part_buffered_and_stops_within_30_ms_of_the_target() {
        assert_eq!(catch_up_rate(0.35, 0.6, 0.2, 1.0), 1.1);
        assert_eq!(catch_up_rate(1.2, 1.5, 0.2, 1.0), 1.25);
        assert_eq!(catch_up_rate(0.35, 0.19, 0.2, 1.1), 1.0, "thin buffer");
        assert_eq!(catch_up_rate(0.08, 0.6, 0.2, 1.0), 1.0, "not started under half a part target");
        assert_eq!(catch_up_rate(0.08, 0.6, 0.2, 1.1), 1.1, "nor stopped above 30 ms");
        assert_eq!(catch_up_rate(0.025, 0.6, 0.2, 1.1), 1.0);
        assert_eq!(catch_up_rate(0.06, 0.6, 0.05, 1.0), 1.1, "small parts: from 50 ms");
    }

    #[test]
    fn start_up_time_holds_the_playhead_and_adds_to_the_latency() {
        let mut p = joined(100_000_000).with_startup_ms(250.0);
        p.poll(at(0.0));
        p.on_response(Lane::Media, MEDIA_OK, at(0.0)); // init
        p.poll(at(0.0));
        // Part 14.0 (PDT 104 s) arrives at wall 105.5 s; the first frame shows 250 ms later.
        let wall = 105_500.0;
        p.on_response(Lane::Media, MEDIA_OK, Clock { mono_ms: 1000.0, wall_ms: wall });
        let s = p.sample(Clock { mono_ms: 1100.0, wall_ms: wall + 100.0 });
        assert_eq!(s.latency_ms, None, "not playing yet: {s:?}");
        let s = p.sample(Clock { mono_ms: 1350.0, wall_ms: wall + 350.0 });
        // Playing since mono 1250 ms: the playhead is 100 ms into the part, 250 ms later than
        // without start-up time.
        assert!((s.latency_ms.unwrap() - 1750.0).abs() < 1e-6, "{s:?}");
        assert_eq!(p.stats().startup_ms, Some(1250.0));
    }

    #[test]
    fn a_viewer_whose_server_stops_answering_stalls_and_counts_errors() {
        let mut p = joined(100_000_000);
        p.poll(at(0.0));
        p.on_response(Lane::Media, MEDIA_OK, at(0.0)); // init
        p.poll(at(0.0));
        p.on_response(Lane::Media, MEDIA_OK, at(0.0)); // 14.0: 200 ms of media
        p.poll(at(0.0)); // 14.1 in flight
                         // The server goes silent: the driver times the requests out after 3 s.
        p.on_response(Lane::Media, Answer::Failed("timed out"), at(3000.0));
        p.on_response(Lane::Playlist, Answer::Failed("timed out"), at(3000.0));
        let s = p.sample(at(3000.0));
        assert!(s.stalled);
        let stats = p.final_stats(at(4000.0));
        assert_eq!((stats.stalls, stats.errors), (1, 2));
        assert!((stats.stall_ms - 3800.0).abs() < 1e-6, "{stats:?}");
        // Retried after a backoff, not at once.
        assert!(p.poll(at(3001.0)).is_empty());
        assert_eq!(p.wake_at(), Some(3000.0 + FIRST_BACKOFF_MS));
        let again = p.poll(at(3000.0 + FIRST_BACKOFF_MS));
        assert_eq!(again.len(), 2, "{again:?}");
        // One part is not enough to resume (the rebuffering goal is two part targets); two are.
        p.on_response(Lane::Media, MEDIA_OK, at(3400.0));
        assert!(p.sample(at(3400.0)).stalled);
        p.poll(at(3400.0));
        p.on_response(Lane::Media, MEDIA_OK, at(3500.0));
        assert!(!p.sample(at(3500.0)).stalled);
        assert!((p.final_stats(at(3500.0)).stall_ms - 3300.0).abs() < 1e-6);
        assert_eq!(p.stats().stalls, 1);
    }

    #[test]
    fn a_hinted_part_is_corrected_to_its_listed_duration_and_a_refused_hint_is_not_an_error() {
        // Not playing yet (a long start-up), so no jump to the live point moves the playhead.
        let mut p = joined(100_000_000).with_startup_ms(60_000.0);
        p.poll(at(0.0));
        p.on_response(Lane::Media, MEDIA_OK, at(0.0));
        for _ in 0..8 {
            p.poll(at(0.0));
            p.on_response(Lane::Media, MEDIA_OK, at(0.0));
        }
        assert_eq!(p.stats().hinted_parts, 1);
        // 15.2 arrived from the hint with an assumed 200 ms; the playlist lists it at 150 ms.
        let text = live(10, 5, 2, 100_000).replace(
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part15.2.m4s\"",
            "#EXT-X-PART:DURATION=0.150,URI=\"part15.2.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part15.3.m4s\"",
        );
        p.on_response(Lane::Playlist, ok(&text), at(0.0));
        assert!((p.sample(at(0.0)).buffer_ms - 1550.0).abs() < 1e-6);
        // The hint for 15.3 is refused (the segment closed): no error, no busy loop.
        let r = one(p.poll(at(0.0)), Lane::Media);
        assert_eq!(r.fetch, Fetch::Part { msn: 15, index: 3, hinted: true });
        p.on_response(Lane::Media, Answer::Status(404), at(1.0));
        assert!(p.poll(at(2.0)).iter().all(|r| r.lane != Lane::Media));
        assert_eq!(p.stats().errors, 0);
        // The segment closed with 3 parts: the next is 16.0, from the next hint.
        let closed = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600\n\
                      #EXT-X-PART-INF:PART-TARGET=0.200\n#EXT-X-MEDIA-SEQUENCE:15\n#EXT-X-MAP:URI=\"init.mp4\"\n\
                      #EXT-X-PART:DURATION=0.200,URI=\"part15.0.m4s\"\n#EXT-X-PART:DURATION=0.200,URI=\"part15.1.m4s\"\n\
                      #EXT-X-PART:DURATION=0.150,URI=\"part15.2.m4s\"\n#EXTINF:0.550,\nseg15.m4s\n\
                      #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part16.0.m4s\"\n";
        p.on_response(Lane::Playlist, ok(closed), at(3.0));
        let r = one(p.poll(at(3.0)), Lane::Media);
        assert_eq!(
            (r.url.path(), &r.fetch),
            ("/hls/ch/source/part16.0.m4s", &Fetch::Part { msn: 16, index: 0, hinted: true })
        );
    }

    #[test]
    fn a_delta_update_keeps_the_skipped_segments() {
        let mut p = joined(100_000_000);
        p.poll(at(0.0));
        let delta = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600,CAN-SKIP-UNTIL=6.0\n\
                     #EXT-X-PART-INF:PART-TARGET=0.200\n#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n\
                     #EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:01:44.000Z\n#EXTINF:1.000,\nseg14.m4s\n\
                     #EXT-X-PART:DURATION=0.200,URI=\"part15.0.m4s\",INDEPENDENT=YES\n";
        p.on_response(Lane::Playlist, ok(delta), at(0.0));
        assert_eq!(p.stats().delta_playlists, 1);
        let segs: Vec<u64> = p.playlist.as_ref().unwrap().segments.iter().map(|s| s.msn).collect();
        assert_eq!(segs, [10, 11, 12, 13, 14, 15]);
    }

    #[test]
    fn falls_back_to_segments_and_resyncs_when_the_window_moved_on() {
        let mut p = joined(100_000_000);
        p.poll(at(0.0));
        p.on_response(Lane::Media, MEDIA_OK, at(0.0));
        p.poll(at(0.0));
        p.on_response(Lane::Media, MEDIA_OK, at(0.0)); // 14.0
                                                       // Much later, the window starts at 20 and lists parts only for 22..: 14 is gone.
        p.on_response(Lane::Playlist, ok(&live(20, 5, 1, 110_000)), at(9000.0));
        let r = one(p.poll(at(9000.0)), Lane::Media);
        assert_eq!(r.fetch, Fetch::Part { msn: 24, index: 0, hinted: false });
        assert_eq!(p.stats().resyncs, 1);
        // A viewer told to start where only whole segments are listed loads the segment.
        p.next = Some((20, 0));
        p.media_lane.in_flight = None;
        let r = one(p.poll(at(9000.0)), Lane::Media);
        assert_eq!((r.url.path(), &r.fetch), ("/hls/ch/source/seg20.m4s", &Fetch::Segment { msn: 20 }));
        p.on_response(Lane::Media, MEDIA_OK, at(9001.0));
        assert_eq!(p.next, Some((21, 0)));
    }

    #[test]
    fn a_uri_that_is_no_http_url_is_an_error_not_a_request() {
        let mut p = joined(100_000_000);
        let text = live(10, 5, 2, 100_000).replace("init.mp4", "data:text/plain,x");
        p.poll(at(0.0));
        p.on_response(Lane::Playlist, ok(&text), at(0.0));
        p.media_lane.in_flight = None;
        assert!(p.poll(at(0.0)).iter().all(|r| r.lane != Lane::Media));
        assert_eq!(p.stats().errors, 1);
        assert!(p.stats().last_error.as_deref().unwrap().contains("data:text/plain"));
        // A multivariant playlist of such URIs has no usable variant.
        let mut p = Player::new(master(), 1);
        p.poll(at(0.0));
        p.on_response(Lane::Playlist, ok("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nmailto:x\n"), at(0.0));
        assert_eq!(p.stats().errors, 1);
    }

    #[test]
    fn a_media_playlist_url_plays_as_the_only_variant_and_errors_are_counted() {
        let url = Url::parse("http://o.example/hls/ch/source/index.m3u8?token=abc").unwrap();
        let mut p = Player::new(url, 1);
        p.poll(at(0.0));
        p.on_response(Lane::Playlist, Answer::Status(503), at(0.0));
        assert_eq!(p.stats().errors, 1);
        p.poll(at(FIRST_BACKOFF_MS));
        p.on_response(Lane::Playlist, ok("garbage"), at(FIRST_BACKOFF_MS));
        assert_eq!(p.stats().errors, 2);
        p.poll(at(10_000.0));
        p.on_response(Lane::Playlist, ok(&live(10, 5, 2, 100_000)), at(10_000.0));
        let r = one(p.poll(at(10_000.0)), Lane::Playlist);
        assert_eq!(r.url.as_str(), "http://o.example/hls/ch/source/index.m3u8?token=abc");
        assert_eq!(r.fetch, Fetch::Playlist { blocking: false, delta: false });
        p.on_response(Lane::Playlist, ok(&live(10, 5, 2, 100_000)), at(10_000.0));
        let r = one(p.poll(at(10_000.0)), Lane::Playlist);
        assert_eq!(
            r.url.as_str(),
            "http://o.example/hls/ch/source/index.m3u8?token=abc&_HLS_msn=15&_HLS_part=2&_HLS_skip=YES"
        );
    }
}
