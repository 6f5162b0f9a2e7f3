//! The relay's wiring: an ingest node publishes its channels' source tracks; an origin node
//! subscribes to the channels placed on it ([`crate::placement`]) and packages them locally.
//!
//! ```text
//! ingest node: LivePublish ─ TapRun ─▶ relay::RelayHub ◀─ QUIC (relay ALPN, checked by the catalog's listener)
//! origin node: manage_subscriptions (every 250 ms, from the catalog replica)
//!                └─ one task per placed channel: connect_relay(ingest's cluster address)
//!                   ─ relay::subscribe ─▶ LiveRegistry (served by this node's origin routes)
//! ```

use std::collections::HashMap;
use std::time::Duration;

use media::origin::{LiveHandle, LiveRegistry};
use raft::Catalog;
use relay::quic::{RelayHub, RelayMetrics};
use tokio::task::JoinHandle;

use crate::placement;

/// How often an origin compares its subscriptions with the placement.
const RECONCILE_EVERY: Duration = Duration::from_millis(250);
/// Pause before re-subscribing after a failed subscription.
const RETRY_AFTER: Duration = Duration::from_millis(300);

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

/// Keeps one subscription per live channel placed on this node and ingested elsewhere, for as
/// long as it stays placed here (the origin role). Never returns; abort it to stop.
pub async fn manage_subscriptions(catalog: Catalog, live: LiveRegistry, metrics: RelayMetrics) {
    let me = catalog.node_id();
    // (channel, session) → its task; aborted with this one.
    let mut running = Running::default();
    let running = &mut running.0;
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let wanted: HashMap<(String, String), String> = catalog.read(|s| {
            placement::subscriptions_of(s, me)
                .into_iter()
                .filter_map(|(channel, p)| {
                    let addr = s.node(p.ingest)?.addresses.iter().find(|(n, _)| n == "cluster")?.1.clone();
                    Some(((channel, p.session), addr))
                })
                .collect()
        });
        running.retain(|key, task| {
            let keep = wanted.contains_key(key) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, addr) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let (channel, session) = key.clone();
            tracing::info!(%channel, %session, ingest = %addr, "subscribing to a relayed channel");
            let task = tokio::spawn(follow(catalog.clone(), addr, channel, live.clone(), metrics.clone()));
            running.insert(key, task);
        }
    }
}

/// The subscription tasks, stopped when the manager stops.
#[derive(Default)]
struct Running(HashMap<(String, String), JoinHandle<()>>);

impl Drop for Running {
    fn drop(&mut self) {
        for task in self.0.values() {
            task.abort();
        }
    }
}

/// Subscribes to `channel` at the ingest node at `addr` until the broadcast ends, re-subscribing
/// after failures. The packaged stream outlives a failed subscription (no end is written while
/// the channel is still placed here); it ends when the broadcast does or this task is aborted.
async fn follow(catalog: Catalog, addr: String, channel: String, live: LiveRegistry, metrics: RelayMetrics) {
    let mut handle: Option<LiveHandle> = None;
    loop {
        let outcome = match catalog.connect_relay(&addr).await {
            Ok(conn) => {
                relay::quic::subscribe(&conn, &channel, &live, &metrics, &mut handle).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => {
                metrics.subscriptions.with_label_values(&["ended"]).inc();
                return;
            }
            Err(error) => {
                metrics.subscriptions.with_label_values(&["failed"]).inc();
                tracing::warn!(%channel, ingest = %addr, %error, "relay subscription failed; retrying");
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}
