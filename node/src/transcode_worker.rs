//! The transcode role for channels ingested elsewhere: a stateless worker that subscribes to a
//! channel's `source` track, runs the ladder on it and publishes the rungs as tracks of their own.
//!
//! ```text
//! ingest node ── relay "source" ─▶ receive ─▶ LivePublish (Protocol::Relay, numbered from the
//!                                               segment it joined at) ─▶ ladder threads
//!                                               │ every rendition's pushes are tapped
//!                                               ▼
//!                 origins ◀── relay "720p", "360p", … ── RelayHub (this node's cluster listener)
//! ```
//!
//! The worker keeps nothing but what is in flight: [`crate::placement`] names the transcode node
//! of each live channel from the replicated catalog, so when this node stops reporting another
//! one takes the channel and starts from the newest segment of `source`. The rungs are packaged
//! here only to be cut into the same parts an origin will cut (the local registry serves nobody).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use media::ingest::{FeedOutput, IngestConfig, IngestMetrics, Ladder, LivePublish, Protocol, TrackTap};
use media::origin::{LiveRegistry, OriginMetrics, RegistryConfig};
use raft::{Catalog, Command};
use relay::quic::{RelayHub, RelayMetrics};
use relay::track::TrackEvent;
use tokio_util::task::AbortOnDropHandle;

use crate::placement;
use crate::relay::{RECONCILE_EVERY, RETRY_AFTER};

/// What every transcode of this node shares.
#[derive(Clone)]
struct Worker {
    catalog: Catalog,
    ladder: Arc<dyn Ladder>,
    hub: RelayHub,
    relay_metrics: RelayMetrics,
    /// The rungs' packagers (nobody reads them over HTTP).
    registry: LiveRegistry,
    ingest: IngestConfig,
    ingest_metrics: IngestMetrics,
}

/// Runs the ladder of every live channel placed on this node and ingested elsewhere, for as long
/// as it stays placed here. Never returns; abort it to stop.
pub async fn manage_transcodes(
    catalog: Catalog,
    ladder: Arc<dyn Ladder>,
    hub: RelayHub,
    relay_metrics: RelayMetrics,
    ingest: IngestConfig,
) {
    let worker = Worker {
        catalog: catalog.clone(),
        ladder,
        hub,
        relay_metrics,
        registry: LiveRegistry::new(RegistryConfig::default(), OriginMetrics::unregistered()),
        ingest,
        ingest_metrics: IngestMetrics::unregistered(),
    };
    let me = catalog.node_id();
    // (channel, session) → its transcode, stopped when dropped.
    let mut running: HashMap<(String, String), AbortOnDropHandle<()>> = HashMap::new();
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let wanted: HashMap<(String, String), String> = catalog.read(|s| {
            placement::transcodes_of(s, me)
                .into_iter()
                .filter_map(|(channel, p)| {
                    let addr = s.node(p.ingest)?.address("cluster")?.to_owned();
                    Some(((channel, p.session), addr))
                })
                .collect()
        });
        running.retain(|key, task| wanted.contains_key(key) && !task.is_finished());
        for (key, addr) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let (channel, session) = key.clone();
            tracing::info!(%channel, %session, ingest = %addr, "transcoding a relayed channel");
            running.insert(key, AbortOnDropHandle::new(tokio::spawn(worker.clone().transcode(addr, channel))));
        }
    }
}

impl Worker {
    /// Transcodes `channel`'s `source` from the ingest node at `addr` until the broadcast ends,
    /// subscribing again after failures (each time from the newest segment start).
    async fn transcode(self, addr: String, channel: String) {
        let peer: SocketAddr = addr.parse().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        loop {
            let mut publish: Option<LivePublish> = None;
            let outcome = match self.catalog.connect_relay(&addr).await {
                Ok(conn) => {
                    let source = media::ingest::SOURCE_RENDITION;
                    relay::quic::receive(&conn, &channel, source, &self.relay_metrics, |event| {
                        self.handle(&channel, peer, &mut publish, event);
                        Ok(())
                    })
                    .await
                    .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            if let Some(mut publish) = publish.take() {
                // The rungs' tracks end here; origins unlist them until a transcode resumes.
                publish.finish();
            }
            match outcome {
                Ok(()) => {
                    tracing::info!(%channel, "relayed broadcast ended; transcode done");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%channel, ingest = %addr, %error, "transcode subscription failed; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }

    /// One event of the relayed `source`: the ladder starts on its tracks, then gets every sample
    /// with the ingest node's wall clock (so the rungs' program date-times match `source`'s).
    fn handle(&self, channel: &str, peer: SocketAddr, publish: &mut Option<LivePublish>, event: TrackEvent) {
        match event {
            TrackEvent::Open { session, config, video, audio } => {
                let first_msn = config.first_msn;
                let ingest = IngestConfig {
                    rendition: config,
                    ladder: Some(self.ladder.clone()),
                    tap: Some(Arc::new(self.hub.clone()) as Arc<dyn TrackTap>),
                    ..self.ingest.clone()
                };
                let mut fresh = LivePublish::new(
                    self.registry.clone(),
                    &ingest,
                    &self.ingest_metrics,
                    channel.to_owned(),
                    session.clone(),
                    peer,
                    Protocol::Relay,
                )
                .starting_at(first_msn);
                if fresh.handle_output(FeedOutput::Tracks { video, audio }).is_err() {
                    return;
                }
                if let Some(renditions) = fresh.take_renditions() {
                    tracing::info!(channel, session, ?renditions, first_msn, "ladder running");
                    self.record_renditions(channel, session, renditions);
                }
                if let Some(mut old) = publish.replace(fresh) {
                    old.finish();
                }
            }
            TrackEvent::Video { sample, now } => {
                if let Some(p) = publish.as_mut() {
                    let _ = p.handle_output_at(FeedOutput::Video(sample), now);
                }
            }
            TrackEvent::Audio { sample, now } => {
                if let Some(p) = publish.as_mut() {
                    let _ = p.handle_output_at(FeedOutput::Audio(sample), now);
                }
            }
            TrackEvent::End => {
                if let Some(mut p) = publish.take() {
                    p.finish();
                }
            }
            // The local packager numbers segments as the ingest node does; nothing to check.
            _ => {}
        }
    }

    /// Names the rungs on the session, which is how the origins know which tracks to subscribe
    /// to. In the background: the rungs are published already.
    fn record_renditions(&self, channel: &str, session_id: String, renditions: Vec<String>) {
        let catalog = self.catalog.clone();
        let channel = channel.to_owned();
        tokio::spawn(async move {
            let command = Command::SetSessionRenditions { session_id, renditions };
            match tokio::time::timeout(Duration::from_secs(5), catalog.propose(command)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(%channel, %error, "could not record the session's renditions"),
                Err(_) => tracing::warn!(%channel, "could not record the session's renditions: timed out"),
            }
        });
    }
}
