//! The relay's wiring: an ingest node publishes its channels' source tracks (and the rungs of
//! its ladder, if it runs one); a transcode node publishes the rungs of the ladders placed on it
//! ([`crate::transcode_worker`]); an origin node subscribes to the tracks of the channels placed
//! on it ([`crate::placement`]) and packages them into one stream.
//!
//! ```text
//! ingest node:    LivePublish ─ taps ─▶ relay::RelayHub ◀─ QUIC (relay ALPN, checked by the catalog's listener)
//! transcode node: transcode_worker ─ taps ─▶ relay::RelayHub ◀─ QUIC
//! origin node:    manage_subscriptions (every 250 ms, from the catalog replica)
//!                   └─ one task per placed channel and plan: relay::receive of `source` (ingest)
//!                      and of each rung (transcoder) ─▶ one stream in LiveRegistry (served by
//!                      this node's origin routes)
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use media::cmaf::{AudioConfig, VideoConfig};
use media::hls::{Rendition, RenditionConfig};
use media::ingest::SOURCE_RENDITION;
use media::origin::{LiveHandle, LiveRegistry};
use raft::Catalog;
use relay::quic::{RelayHub, RelayMetrics};
use relay::track::TrackEvent;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::task::AbortOnDropHandle;

use crate::placement;

/// How often an origin compares its subscriptions with the placement.
pub(crate) const RECONCILE_EVERY: Duration = Duration::from_millis(250);
/// Pause before re-subscribing after a failed subscription.
pub(crate) const RETRY_AFTER: Duration = Duration::from_millis(300);

/// How often a subscriber's connection is checked against the catalog's revocations.
const REVOCATION_CHECK: Duration = Duration::from_secs(1);

/// Starts serving relay connections into `hub` (the ingest role). Returns the accept task.
pub fn serve(catalog: &Catalog, hub: RelayHub) -> Option<JoinHandle<()>> {
    let mut connections = catalog.serve_relay()?;
    let catalog = catalog.clone();
    Some(tokio::spawn(async move {
        while let Some((conn, node_id)) = connections.recv().await {
            // The listener checked revocation when the connection came; a subscription lives
            // long, so a revocation later must cut it too.
            let (catalog, hub) = (catalog.clone(), hub.clone());
            let watched = conn.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = hub.serve_connection(conn) => {}
                    () = async {
                        loop {
                            tokio::time::sleep(REVOCATION_CHECK).await;
                            if catalog.read(|s| s.access().is_revoked(node_id)) {
                                tracing::warn!(node_id, "relay subscriber revoked; closing its connection");
                                watched.close(2u32.into(), b"this node's certificate is revoked");
                                return;
                            }
                        }
                    } => {}
                }
            });
        }
    }))
}

/// How often the hub's replay is matched with the fleet (a node joining waits at most this,
/// plus two keyframe segments, for its first join point).
const PEERS_CHECK: Duration = Duration::from_secs(1);

/// Keeps the hub's replay on while another node may subscribe to it ([`placement::subscribes`]):
/// a node alone, packaging its own streams, then holds no sample for joiners.
pub fn follow_peers(catalog: &Catalog, hub: RelayHub) -> JoinHandle<()> {
    let catalog = catalog.clone();
    tokio::spawn(async move {
        let me = catalog.node_id();
        loop {
            let wanted = catalog.read(|s| s.nodes().any(|n| n.id != me && placement::subscribes(n)));
            hub.set_replay_wanted(wanted);
            tokio::time::sleep(PEERS_CHECK).await;
        }
    })
}

/// What an origin follows for one channel: where `source` comes from and, while a ladder runs,
/// which node publishes which rungs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    source: String,
    ladder: Option<(String, Vec<String>)>,
}

/// A channel followed by this origin: the task of its current plan (stopped when dropped), and
/// the stream, which outlives a change of plan (a new transcode node) so viewers see no end.
struct Following {
    plan: Plan,
    task: AbortOnDropHandle<()>,
    stream: Stream,
}

/// The channel's packaged stream, shared by the successive tasks that feed it.
type Stream = Arc<Mutex<StreamState>>;

/// What an origin packages for one channel, across plans and publishes.
#[derive(Debug, Default)]
struct StreamState {
    handle: Option<LiveHandle>,
    /// The session whose tracks feed it now (a new one after a reconnect continues it).
    session: Option<String>,
    /// Added to the publisher's media sequence numbers: where this window's numbering and the
    /// publish's part ways after a reconnect (0 when the new ingest node continued the numbers
    /// itself, see `ingest_gate`).
    offset: i64,
}

/// How long an origin keeps a broadcast's stream open after its session ended without an end
/// of stream (its ingest node died): a publisher that reconnects within it continues the same
/// stream after one discontinuity, and players never see an end.
pub const RECONNECT_GRACE: Duration = Duration::from_secs(20);

/// Keeps one subscription per live channel placed on this node and ingested elsewhere (its
/// `source`, and the rungs of its ladder wherever that runs), for as long as it stays placed
/// here (the origin role). Never returns; abort it to stop.
pub async fn manage_subscriptions(catalog: Catalog, live: LiveRegistry, metrics: RelayMetrics) {
    let me = catalog.node_id();
    // (channel, session) → what follows it; its task stops when it is dropped.
    let mut running: HashMap<(String, String), Following> = HashMap::new();
    // Channels whose session ended without an end of stream: channel → (stream, until when).
    let mut lingering: HashMap<String, (Stream, tokio::time::Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        lingering.retain(|channel, (_, until)| {
            let keep = *until > now;
            if !keep {
                tracing::info!(%channel, "no reconnect within the grace; ending the stream");
            }
            keep
        });
        let wanted: HashMap<(String, String), Plan> = catalog.read(|s| {
            let cluster_addr = |node| s.node(node)?.address("cluster").map(str::to_owned);
            placement::subscriptions_of(s, me)
                .into_iter()
                .filter_map(|(channel, p)| {
                    let rungs: Vec<String> = s
                        .session(&p.session)
                        .map(|session| session.renditions.iter().filter(|r| *r != SOURCE_RENDITION).cloned().collect())
                        .unwrap_or_default();
                    let ladder = p.transcoder.and_then(cluster_addr).filter(|_| !rungs.is_empty()).map(|a| (a, rungs));
                    Some(((channel, p.session), Plan { source: cluster_addr(p.ingest)?, ladder }))
                })
                .collect()
        });
        let mut gone = Vec::new();
        running.retain(|key, following| {
            let keep = wanted.contains_key(key) && !following.task.is_finished();
            if !keep && !wanted.contains_key(key) {
                gone.push((key.0.clone(), key.1.clone(), following.stream.clone()));
            }
            keep
        });
        for (channel, session, stream) in gone {
            // Still open and its session over: the broadcast stopped without an end (its ingest
            // node died); wait a while for the publisher to come back through another one. (A
            // channel whose session goes on elsewhere, e.g. off a drained node, just ends here.)
            let session_over = catalog.read(|s| placement::place(s, &channel).is_none_or(|p| p.session != session));
            if session_over && lock(&stream).handle.as_ref().is_some_and(LiveHandle::is_live) {
                tracing::info!(%channel, grace = ?RECONNECT_GRACE, "session over without an end; holding the stream for a reconnect");
                lingering.insert(channel, (stream, now + RECONNECT_GRACE));
            }
        }
        for (key, plan) in wanted {
            let (channel, session) = key.clone();
            let stream = match running.get(&key) {
                Some(following) if following.plan == plan => continue,
                Some(following) => {
                    tracing::info!(%channel, %session, from = ?following.plan, to = ?plan, "following a new plan");
                    // Stopped before the next task starts feeding the same stream.
                    following.task.abort();
                    following.stream.clone()
                }
                None => {
                    tracing::info!(%channel, %session, ?plan, "subscribing to a relayed channel");
                    lingering.remove(&channel).map(|(stream, _)| stream).unwrap_or_default()
                }
            };
            let task = AbortOnDropHandle::new(tokio::spawn(follow(
                catalog.clone(),
                plan.clone(),
                channel,
                live.clone(),
                metrics.clone(),
                stream.clone(),
            )));
            running.insert(key, Following { plan, task, stream });
        }
    }
}

/// Follows `channel` by `plan` until the broadcast ends, subscribing again after failures. The
/// packaged stream outlives a failed subscription (no end is written while the channel is still
/// placed here); it ends when the broadcast does or the manager drops `stream`.
async fn follow(
    catalog: Catalog,
    plan: Plan,
    channel: String,
    live: LiveRegistry,
    metrics: RelayMetrics,
    stream: Stream,
) {
    loop {
        match follow_once(&catalog, &plan, &channel, &live, &metrics, &stream).await {
            Ok(()) => {
                metrics.subscriptions.with_label_values(&["ended"]).inc();
                return;
            }
            Err(error) => {
                metrics.subscriptions.with_label_values(&["failed"]).inc();
                tracing::warn!(%channel, ingest = %plan.source, %error, "relay subscription failed; retrying");
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

/// How long after `source` joined the stream waits for the rungs to join before it opens
/// without the missing ones.
const RUNGS_GRACE: Duration = Duration::from_secs(3);
/// Events held while the stream waits for its rungs; past this it opens with what has joined.
const MAX_HELD: usize = 20_000;

/// One track's event, or why its subscription stopped.
type TrackMessage = (usize, Result<TrackEvent, String>);

/// One subscription to every track of the plan, packaged into one stream: `source` first, then
/// the rungs that joined within [`RUNGS_GRACE`]. A rung that fails is unlisted and subscribed to
/// again (it rejoins at its next segment start); `Err` when `source` fails or a rung joins that
/// the stream was opened without (the next attempt opens with it).
async fn follow_once(
    catalog: &Catalog,
    plan: &Plan,
    channel: &str,
    live: &LiveRegistry,
    metrics: &RelayMetrics,
    stream: &Stream,
) -> Result<(), String> {
    let mut tracks = vec![(SOURCE_RENDITION.to_owned(), plan.source.clone())];
    if let Some((addr, rungs)) = &plan.ladder {
        tracks.extend(rungs.iter().map(|r| (r.clone(), addr.clone())));
    }
    let (tx, mut rx) = mpsc::channel::<TrackMessage>(4096);
    let mut subscriptions = tokio::task::JoinSet::new();
    for (index, (rendition, addr)) in tracks.iter().enumerate() {
        let (catalog, tx, metrics) = (catalog.clone(), tx.clone(), metrics.clone());
        let (channel, rendition, addr) = (channel.to_owned(), rendition.clone(), addr.clone());
        subscriptions.spawn(async move {
            loop {
                let outcome = match catalog.connect_relay(&addr).await {
                    Ok(conn) => relay::quic::receive(&conn, &channel, &rendition, &metrics, |event| {
                        tx.try_send((index, Ok(event))).map_err(|_| relay::quic::RelayError::Stream {
                            channel: channel.clone(),
                            reason: "this origin fell behind the track".into(),
                        })
                    })
                    .await
                    .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    // `source` ended: the broadcast did (End was handed over).
                    Ok(()) if index == 0 => return,
                    Ok(()) => {}
                    Err(error) => {
                        if tx.send((index, Err(error))).await.is_err() || index == 0 {
                            return;
                        }
                    }
                }
                // A rung's track ended or failed: its transcode moved or restarts; try again.
                tokio::time::sleep(RETRY_AFTER * 3).await;
            }
        });
    }
    drop(tx);
    let mut opening = Opening::new(tracks.iter().map(|(r, _)| r.clone()).collect());
    loop {
        let message = match opening.deadline.filter(|_| !opening.is_open()) {
            Some(deadline) => tokio::select! {
                message = rx.recv() => message,
                () = tokio::time::sleep_until(deadline) => {
                    opening.open(channel, live, metrics, stream)?;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some((index, event)) = message else { return Err("every track stopped".into()) };
        let event = match event {
            Ok(event) => event,
            Err(error) if index == 0 => return Err(error),
            Err(error) => {
                tracing::warn!(channel, rendition = %tracks[index].0, transcoder = %tracks[index].1, %error,
                    "rung subscription failed; unlisted until it rejoins");
                opening.unlist(index, stream);
                continue;
            }
        };
        if !opening.is_open() {
            opening.hold(index, event);
            if opening.ready() {
                opening.open(channel, live, metrics, stream)?;
            }
            continue;
        }
        if opening.apply(index, event, metrics, stream)? {
            tracing::info!(channel, "relayed broadcast ended");
            return Ok(());
        }
    }
}

/// A track's join: its session, packaging and tracks (a [`TrackEvent::Open`]).
type Joined = (String, RenditionConfig, Option<VideoConfig>, Option<AudioConfig>);

/// The tracks' joins, the events held until the stream opens, then where each track goes.
struct Opening {
    names: Vec<String>,
    opens: Vec<Option<Joined>>,
    held: Vec<(usize, TrackEvent)>,
    /// Track → rendition index in the stream, once open.
    slots: Option<Vec<Option<usize>>>,
    expected: Vec<Option<u64>>,
    /// Per track, added to the publisher's msns (see [`StreamState::offset`]).
    offsets: Vec<i64>,
    deadline: Option<tokio::time::Instant>,
}

impl Opening {
    fn new(names: Vec<String>) -> Self {
        let n = names.len();
        Opening {
            names,
            opens: vec![None; n],
            held: Vec::new(),
            slots: None,
            expected: vec![None; n],
            offsets: vec![0; n],
            deadline: None,
        }
    }

    fn is_open(&self) -> bool {
        self.slots.is_some()
    }

    /// Every track joined, or too much is held to wait longer.
    fn ready(&self) -> bool {
        self.opens[0].is_some() && (self.opens.iter().all(Option::is_some) || self.held.len() >= MAX_HELD)
    }

    fn hold(&mut self, index: usize, event: TrackEvent) {
        match event {
            TrackEvent::Open { session, config, video, audio } => {
                if index == 0 {
                    self.deadline = Some(tokio::time::Instant::now() + RUNGS_GRACE);
                }
                // A track joins once per attempt; a second join restarts its held events.
                self.held.retain(|(i, _)| *i != index);
                self.opens[index] = Some((session, config, video, audio));
            }
            event => self.held.push((index, event)),
        }
    }

    /// Opens the stream with `source` and the rungs that joined, then plays the held events in.
    /// A stream still open from an earlier session of the channel (the publisher reconnected
    /// after its ingest node died) is continued instead: same window, one discontinuity.
    fn open(
        &mut self,
        channel: &str,
        live: &LiveRegistry,
        metrics: &RelayMetrics,
        stream: &Stream,
    ) -> Result<(), String> {
        let Some((session, ..)) = self.opens[0].clone() else { return Err("source never joined".into()) };
        let mut state = lock(stream);
        let continuing = state.handle.as_ref().is_some_and(LiveHandle::is_live)
            && state.session.as_ref().is_some_and(|s| *s != session);
        let mut slots = vec![None; self.names.len()];
        if continuing {
            let handle = state.handle.as_ref().expect("checked above");
            let feed = handle.feed();
            let mut listed = vec![false; self.names.len()];
            for (index, open) in self.opens.iter().enumerate() {
                let Some((_, config, video, audio)) = open.clone() else { continue };
                let Some(slot) = handle.rendition_index(&self.names[index]) else { continue };
                match feed.resume(slot, video, audio) {
                    Ok(next) => {
                        self.offsets[index] = next as i64 - config.first_msn as i64;
                        slots[index] = Some(slot);
                        listed[index] = true;
                    }
                    Err(error) if index == 0 => return Err(error.to_string()),
                    Err(error) => tracing::warn!(channel, rendition = %self.names[index], %error, "rung not resumed"),
                }
            }
            // Renditions of the earlier publish that this one does not bring are unlisted.
            for name in self.names.iter().zip(&listed).filter(|(_, l)| !**l).map(|(n, _)| n) {
                if let Some(slot) = handle.rendition_index(name) {
                    feed.set_listed(slot, false);
                }
            }
            state.offset = self.offsets[0];
            tracing::info!(channel, session, previous = ?state.session, offset = state.offset,
                "the publisher reconnected: continuing the stream after a discontinuity");
            state.session = Some(session);
        } else {
            // The same session again (a new subscription): its numbers, as this window had them.
            let offset = if state.session.as_ref() == Some(&session) { state.offset } else { 0 };
            let mut renditions = Vec::new();
            for (index, open) in self.opens.iter().enumerate() {
                let Some((_, mut config, video, audio)) = open.clone() else { continue };
                config.first_msn = shift(config.first_msn, offset);
                match Rendition::new(config, video, audio) {
                    Ok(r) => {
                        slots[index] = Some(renditions.len());
                        self.offsets[index] = offset;
                        renditions.push(r);
                    }
                    Err(error) if index == 0 => return Err(error.to_string()),
                    Err(error) => tracing::warn!(channel, rendition = %self.names[index], %error, "rung not packaged"),
                }
            }
            let joined: Vec<&str> =
                slots.iter().zip(&self.names).filter(|(s, _)| s.is_some()).map(|(_, n)| n.as_str()).collect();
            let handle = live.open(channel, &session, renditions).map_err(|e| e.to_string())?;
            tracing::info!(channel, session, renditions = ?joined, offset,
                first_msn = ?self.opens[0].as_ref().map(|o| shift(o.1.first_msn, offset)), "packaging relayed tracks");
            *state = StreamState { handle: Some(handle), session: Some(session), offset };
        }
        drop(state);
        self.slots = Some(slots);
        for (index, event) in std::mem::take(&mut self.held) {
            self.apply(index, event, metrics, stream)?;
        }
        Ok(())
    }

    /// Feeds one event of an open stream. `Ok(true)`: the broadcast ended.
    fn apply(
        &mut self,
        index: usize,
        event: TrackEvent,
        metrics: &RelayMetrics,
        stream: &Stream,
    ) -> Result<bool, String> {
        let slot = self.slots.as_ref().and_then(|s| s[index]);
        let guard = lock(stream);
        let Some(handle) = guard.handle.as_ref() else { return Ok(false) };
        match (event, slot) {
            (TrackEvent::Open { config, .. }, Some(slot)) if index > 0 => {
                // A rung back from a new transcode: it starts afresh at the segment it joined at,
                // numbered as the stream numbers this session.
                let offset = guard.offset;
                let feed = handle.feed();
                self.offsets[index] = offset;
                feed.restart(slot, shift(config.first_msn, offset)).map_err(|e| e.to_string())?;
                feed.set_listed(slot, true);
                self.expected[index] = None;
                tracing::info!(channel = handle.channel_id(), rendition = %self.names[index], first_msn = config.first_msn,
                    "rung rejoined");
            }
            (TrackEvent::Open { .. }, _) => {
                return Err(format!("{} joined after the stream opened without it", self.names[index]));
            }
            (TrackEvent::Video { sample, now }, Some(slot)) => {
                relay::quic::push_checked(handle, slot, sample, now, &mut self.expected[index], metrics);
            }
            (TrackEvent::Audio { sample, now }, Some(slot)) => {
                if let Err(error) = handle.push_audio(slot, sample, now) {
                    tracing::debug!(channel = handle.channel_id(), %error, "relayed sample refused");
                }
            }
            (TrackEvent::ExpectSegment { msn }, Some(_)) => {
                self.expected[index] = Some(shift(msn, self.offsets[index]));
            }
            (TrackEvent::End, _) if index == 0 => {
                drop(guard);
                if let Some(handle) = lock(stream).handle.take() {
                    handle.finish();
                }
                return Ok(true);
            }
            (TrackEvent::End, Some(slot)) => handle.feed().set_listed(slot, false),
            _ => {}
        }
        Ok(false)
    }

    /// A rung's subscription failed: viewers are pointed at the others until it rejoins.
    fn unlist(&mut self, index: usize, stream: &Stream) {
        if let (Some(slot), Some(handle)) = (self.slots.as_ref().and_then(|s| s[index]), lock(stream).handle.as_ref()) {
            handle.feed().set_listed(slot, false);
        }
    }
}

/// `msn` moved by `offset` (see [`StreamState::offset`]).
fn shift(msn: u64, offset: i64) -> u64 {
    msn.saturating_add_signed(offset)
}

fn lock(stream: &Stream) -> std::sync::MutexGuard<'_, StreamState> {
    stream.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
