//! The catalog-backed publish gate of RTMP and SRT ingest: who may publish, and the catalog
//! session of each publish. Media's ingest knows only the [`PublishGate`] / [`PublishSink`]
//! traits; this is where they meet the catalog (as `edge.rs` does for the edge).
//!
//! ```text
//! stream key ──▶ CatalogGate::start_publish: key hash → channel (local read, linearizable
//!                 fallback), one publisher per channel on this node, StartSession
//!                   │ CatalogPublish (wraps media's LivePublish)
//!                   ▼
//! FeedOutput ──▶ CatalogPublish::handle_output ──▶ LivePublish (origin); once the ladder joins,
//!                 SetSessionRenditions in the background
//!                   │ however the publish stops
//!                   ▼
//!                 CatalogPublish::end: LivePublish::finish, EndIngestSession (only if still ours)
//! ```
//!
//! One [`CatalogGate`] serves every protocol of a node: the set of channels it is publishing is
//! what tells this node's live sessions from stale ones left by a crash, so RTMP and SRT must
//! share it (otherwise a second publisher on the other protocol would "end a stale session" that
//! is live).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use media::ingest::health::HealthMeter;
use media::ingest::{
    key_prefix, FeedOutput, IngestConfig, IngestMetrics, LivePublish, Protocol, PublishGate, PublishSink, Refusal,
    StreamRefused, SOURCE_RENDITION,
};
use media::origin::LiveRegistry;
use raft::{now_millis, stream_key_hash, Catalog, CatalogError, Command, ProposeError, StreamSession};

/// Bound on each catalog round trip made while a publisher waits for an answer.
const CATALOG_TIMEOUT: Duration = Duration::from_secs(10);

/// Decides publishes from the catalog and opens accepted streams in the origin. Cheap to clone;
/// clones share the set of channels being published.
#[derive(Clone)]
pub struct CatalogGate {
    shared: Arc<Shared>,
}

struct Shared {
    catalog: Catalog,
    registry: LiveRegistry,
    config: IngestConfig,
    metrics: IngestMetrics,
    /// Channels this process is publishing (or about to): refuses a second publisher without a
    /// catalog round trip, and tells our own stale sessions (left by a crash) from live ones.
    publishing: Mutex<HashSet<String>>,
}

impl CatalogGate {
    /// `config` and `metrics` are the ingest's: the gate opens each accepted stream with them.
    pub fn new(catalog: Catalog, registry: LiveRegistry, config: IngestConfig, metrics: IngestMetrics) -> Self {
        let publishing = Mutex::new(HashSet::new());
        CatalogGate { shared: Arc::new(Shared { catalog, registry, config, metrics, publishing }) }
    }

    pub fn config(&self) -> &IngestConfig {
        &self.shared.config
    }

    pub fn metrics(&self) -> &IngestMetrics {
        &self.shared.metrics
    }

    /// Channels this node is publishing (or about to): the ingest leases it should renew.
    pub fn publishing(&self) -> HashSet<String> {
        self.shared.publishing.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl PublishGate for CatalogGate {
    type Publish = CatalogPublish;

    async fn start_publish(
        &self,
        peer: SocketAddr,
        protocol: Protocol,
        stream_key: &str,
    ) -> Result<CatalogPublish, Refusal> {
        let shared = &self.shared;
        let catalog = &shared.catalog;
        let protocol_name = protocol.as_str();
        let hash = stream_key_hash(stream_key);
        // The lookup is keyed by the SHA-256 of the key, so no comparison of secret bytes happens
        // here that could leak timing about a stored key (the hash of a wrong key says nothing
        // about the right one).
        let lookup = |s: &raft::state::CatalogState| {
            s.channel_by_stream_key_hash(&hash).map(|c| {
                let current = c.current_session_id.as_ref().and_then(|id| s.session(id)).cloned();
                (c.id.clone(), current)
            })
        };
        let found = match catalog.read(lookup) {
            Some(found) => Some(found),
            // Not in this replica yet: the channel may have been created a moment ago elsewhere.
            None => match tokio::time::timeout(CATALOG_TIMEOUT, catalog.read_linearizable(lookup)).await {
                Ok(Ok(found)) => found,
                Ok(Err(error)) => {
                    tracing::warn!(%peer, %error, "{protocol_name} publish refused: catalog unavailable");
                    return Err(Refusal::CatalogUnavailable);
                }
                Err(_) => {
                    tracing::warn!(%peer, "{protocol_name} publish refused: catalog read timed out");
                    return Err(Refusal::CatalogUnavailable);
                }
            },
        };
        let Some((channel_id, current)) = found else {
            tracing::warn!(%peer, key_prefix = %key_prefix(stream_key),
                "{protocol_name} publish refused: unknown stream key");
            return Err(Refusal::UnknownKey);
        };
        let already_live = || {
            tracing::warn!(%peer, channel = %channel_id,
                "{protocol_name} publish refused: channel already live (second publisher)");
            Err(Refusal::AlreadyLive)
        };
        let Some(reservation) = Reservation::take(shared, &channel_id) else { return already_live() };
        if let Some(current) = current {
            if current.ingest_node != Some(catalog.node_id()) {
                return already_live();
            }
            // Our node's session, but no publish of ours holds the channel: left over from a
            // crash or a lost EndSession. End it and let this publish take over.
            tracing::info!(%peer, channel = %channel_id, stale_session = %current.id, "ending a stale session of this node");
            let end = Command::EndIngestSession {
                channel_id: channel_id.clone(),
                session_id: current.id.clone(),
                ended_at: now_millis(),
            };
            if let Err(error) = propose(catalog, end).await {
                tracing::warn!(%peer, channel = %channel_id, %error, "could not end the stale session");
            }
        }
        let Ok(session_id) = new_session_id() else { return Err(Refusal::Internal) };
        let session = StreamSession {
            id: session_id.clone(),
            channel_id: channel_id.clone(),
            started_at: now_millis(),
            ended_at: None,
            renditions: vec![SOURCE_RENDITION.to_owned()],
            peak_concurrent: 0,
            ingest_node: Some(catalog.node_id()),
        };
        match propose(catalog, Command::StartSession(session)).await {
            Ok(()) => {
                let (home, here) = catalog.read(|s| {
                    (s.home_region(&channel_id).map(str::to_owned), s.node(catalog.node_id()).map(|n| n.region.clone()))
                });
                if let (Some(home), Some(here)) = (home, here) {
                    if home != here {
                        tracing::info!(%peer, channel = %channel_id, %home, region = %here,
                            "{protocol_name} publish arrives in region {here}; the channel's home is {home}: relaying it to {home}'s origins");
                    }
                }
            }
            Err(ProposeError::Rejected(CatalogError::AlreadyLive { .. })) => return already_live(),
            Err(error) => {
                tracing::warn!(%peer, channel = %channel_id, %error,
                    "{protocol_name} publish refused: could not start the session");
                return Err(Refusal::SessionNotStarted);
            }
        }
        let mut live = LivePublish::new(
            shared.registry.clone(),
            &shared.config,
            &shared.metrics,
            channel_id.clone(),
            session_id,
            peer,
            protocol,
        );
        // A reconnect after the channel's ingest node died: number on from where the origins'
        // window stopped, so every packager of the channel agrees (see `continuing_msn`).
        if let Some(msn) = continuing_msn(catalog, &channel_id).await {
            tracing::info!(%peer, channel = %channel_id, first_msn = msn,
                "{protocol_name} publish continues the broadcast its origins still hold");
            live = live.starting_at(msn);
        }
        Ok(CatalogPublish { live, reservation, health: HealthMeter::new(0) })
    }
}

/// The media sequence number a new publish of `channel_id` should start at when the channel's
/// previous session ended moments ago without an end of stream (its ingest node died) and its
/// origins still hold the stream open for a reconnect (`relay::RECONNECT_GRACE`): one past the
/// newest segment or part their playlists list. `None` (the clock decides) otherwise, or when no
/// origin answers within a second.
async fn continuing_msn(catalog: &Catalog, channel_id: &str) -> Option<u64> {
    let grace = crate::relay::RECONNECT_GRACE.as_millis() as i64;
    let me = catalog.node_id();
    // Linearizable: this replica must already hold the session just started (placement needs it).
    let read = catalog.read_linearizable(|s| {
        let current = s.channel(channel_id)?.current_session_id.clone();
        let previous = s
            .sessions_of_channel(channel_id)
            .filter(|x| Some(&x.id) != current.as_ref())
            .max_by_key(|x| x.started_at)?;
        previous.ended_at.filter(|end| now_millis() - end <= grace)?;
        let placement = crate::placement::place(s, channel_id)?;
        let http = |node| s.node(node)?.address("http").map(str::to_owned);
        Some(placement.origins.into_iter().filter(|&o| o != me).filter_map(http).collect::<Vec<String>>())
    });
    let origins = tokio::time::timeout(Duration::from_secs(2), read).await.ok()?.ok()??;
    let path = format!("/hls/{channel_id}/source/index.m3u8");
    let mut next = None;
    for addr in origins {
        let Ok(Ok(Some(playlist))) = tokio::time::timeout(Duration::from_secs(1), fetch_playlist(&addr, &path)).await
        else {
            continue;
        };
        if playlist.contains("#EXT-X-ENDLIST") {
            continue;
        }
        let newest = playlist
            .split(['\n', '"'])
            .filter_map(|word| match hls_names::RenditionFile::parse(word.trim())? {
                hls_names::RenditionFile::Segment(msn) | hls_names::RenditionFile::Part(msn, _) => Some(msn),
                _ => None,
            })
            .max();
        next = next.max(newest.map(|msn| msn + 1));
    }
    next
}

/// A plain HTTP/1.1 GET of `path` at `addr` (an origin of this cluster): the body of a 200, read
/// up to 1 MiB.
async fn fetch_playlist(addr: &str, path: &str) -> std::io::Result<Option<String>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.take(1 << 20).read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return Ok(None) };
    Ok(head.starts_with("HTTP/1.1 200").then(|| body.to_owned()))
}

fn new_session_id() -> Result<String, ring::error::Unspecified> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 12];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// A channel reserved for a publish on this node; released on drop, whatever way the connection
/// ends.
struct Reservation {
    shared: Arc<Shared>,
    channel_id: String,
}

impl Reservation {
    fn take(shared: &Arc<Shared>, channel_id: &str) -> Option<Self> {
        let mut publishing = shared.publishing.lock().unwrap_or_else(PoisonError::into_inner);
        publishing
            .insert(channel_id.to_owned())
            .then(|| Reservation { shared: shared.clone(), channel_id: channel_id.to_owned() })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shared.publishing.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.channel_id);
    }
}

/// An accepted publish: the catalog session, and media's origin side of the stream.
pub struct CatalogPublish {
    live: LivePublish,
    reservation: Reservation,
    /// What the encoder sends, measured for the streamer's health view.
    health: HealthMeter,
}

impl CatalogPublish {
    /// Records the renditions this publish is served in on its catalog session (the session was
    /// started with `source` alone, before the ladder knew the source). In the background: the
    /// stream is already being served, and a failure only leaves the session's list short.
    fn record_renditions(&self, renditions: Vec<String>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let catalog = self.reservation.shared.catalog.clone();
        let (channel, session_id) = (self.live.channel_id().to_owned(), self.live.session_id().to_owned());
        runtime.spawn(async move {
            let command = Command::SetSessionRenditions { session_id, renditions };
            if let Err(error) = propose(&catalog, command).await {
                tracing::warn!(%channel, %error, "could not record the session's renditions");
            }
        });
    }
}

impl CatalogPublish {
    /// Sends a health sample to the catalog in the background (a lost one is a gap in a chart).
    fn record_health(&self, sample: media::ingest::health::HealthSample) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let catalog = self.reservation.shared.catalog.clone();
        let session_id = self.live.session_id().to_owned();
        let sample = raft::state::health::HealthSample {
            at: sample.at,
            video_kbps: sample.video_kbps,
            audio_kbps: sample.audio_kbps,
            fps: sample.fps,
            keyframe_interval_ms: sample.keyframe_interval_ms,
            since_keyframe_ms: sample.since_keyframe_ms,
            av_drift_ms: sample.av_drift_ms,
        };
        runtime.spawn(async move {
            if let Err(error) = propose(&catalog, Command::ReportHealth { session_id, sample }).await {
                tracing::debug!(%error, "could not record a health sample");
            }
        });
    }
}

impl PublishSink for CatalogPublish {
    fn channel_id(&self) -> &str {
        self.live.channel_id()
    }

    fn session_id(&self) -> &str {
        self.live.session_id()
    }

    fn handle_output(&mut self, output: FeedOutput) -> Result<(), StreamRefused> {
        let now = now_millis();
        match &output {
            FeedOutput::Tracks { audio, .. } => {
                self.health = HealthMeter::new(audio.as_ref().map_or(0, |a| a.sample_rate))
            }
            FeedOutput::Video(sample) => self.health.video(sample, now),
            FeedOutput::Audio(sample) => self.health.audio(sample, now),
        }
        if let Some(sample) = self.health.poll(now) {
            self.record_health(sample);
        }
        let handled = self.live.handle_output(output);
        if let Some(renditions) = self.live.take_renditions() {
            self.record_renditions(renditions);
        }
        handled
    }

    /// Finishes the origin stream, then ends the catalog session if it is still ours (an admin
    /// may have ended it and a new one started meanwhile).
    async fn end(mut self, why: &'static str) {
        self.live.finish();
        let catalog = &self.reservation.shared.catalog;
        let (channel_id, session_id) = (self.live.channel_id(), self.live.session_id());
        let ours = catalog
            .read(|s| s.channel(channel_id).and_then(|c| c.current_session_id.clone()).as_deref() == Some(session_id));
        if ours {
            // Fenced by the session id: if this node was cut off and the channel went live
            // elsewhere meanwhile, this end must not touch the newer session.
            let end = Command::EndIngestSession {
                channel_id: channel_id.to_owned(),
                session_id: session_id.to_owned(),
                ended_at: now_millis(),
            };
            if let Err(error) = propose(catalog, end).await {
                tracing::warn!(channel = %channel_id, session = %session_id, %error, "could not end the session");
            }
        }
        tracing::info!(peer = %self.live.peer(), channel = %channel_id, session = %session_id,
            seconds = self.live.elapsed().as_secs(), reason = why, "{} publish ended", self.live.protocol().as_str());
    }
}

/// Proposes with a bound on the wait (the publisher is waiting, or the connection is ending).
async fn propose(catalog: &Catalog, command: Command) -> Result<(), ProposeError> {
    match tokio::time::timeout(CATALOG_TIMEOUT, catalog.propose(command)).await {
        Ok(result) => result.map(drop),
        Err(_) => Err(ProposeError::Unavailable("timed out".into())),
    }
}
