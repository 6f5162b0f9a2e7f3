//! The recordings' wiring: which broadcasts this node records, the recorder on the live
//! registry, the background worker (recovery, clips, retention).

use std::sync::Arc;

use raft::state::CatalogState;
use raft::{Catalog, NodeId};
use recordings::recorder::{self, Decide, RecorderConfig};
use recordings::{worker, LocalStore, RecordingMetrics};
use tokio::task::JoinHandle;

use crate::config::ValidatedConfig;

/// Whether `me` records `channel`'s broadcast: its primary origin does (it packages every
/// rendition), or the ingest node when no origin is placed.
pub fn records_here(s: &CatalogState, channel: &str, me: NodeId) -> bool {
    crate::placement::place(s, channel)
        .is_some_and(|p| p.origins.first() == Some(&me) || (p.origins.is_empty() && p.ingest == me))
}

/// Starts recording what `live` packages here (unless `--record-renditions off`) and the worker.
pub fn start(
    config: &ValidatedConfig,
    catalog: &Catalog,
    store: &LocalStore,
    live: &media::origin::LiveRegistry,
    registry: &prometheus::Registry,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let metrics = RecordingMetrics::new(registry)?;
    let me = catalog.node_id();
    let decide: Decide = Arc::new(move |s: &CatalogState, channel: &str| records_here(s, channel, me));
    let recorder_config = RecorderConfig { renditions: config.record_renditions.clone(), ..RecorderConfig::default() };
    let (recorder, task) = recorder::start(catalog.clone(), store.clone(), recorder_config, decide, metrics);
    if config.record_renditions.as_ref().is_none_or(|only| !only.is_empty()) {
        live.set_sink(recorder.clone());
    }
    let worker = tokio::spawn(worker::run(catalog.clone(), store.clone(), recorder, config.recording_retention));
    Ok(vec![task, worker])
}
