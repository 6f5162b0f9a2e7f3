//! The recordings' wiring: which broadcasts this node records, the recorder on the live
//! registry, the background worker (recovery, clips, retention).

use std::sync::Arc;

use anyhow::Context as _;
use raft::state::CatalogState;
use raft::{Catalog, NodeId};
use recordings::recorder::{self, Decide, RecorderConfig};
use recordings::thumbnails::LivePosters;
use recordings::{worker, LocalStore, Mirror, RecordingMetrics};
use tokio::task::JoinHandle;

use crate::config::ValidatedConfig;

/// Whether `me` records `channel`'s broadcast: its primary origin does (it packages every
/// rendition), or the ingest node when no origin is placed.
pub fn records_here(s: &CatalogState, channel: &str, me: NodeId) -> bool {
    crate::placement::place(s, channel)
        .is_some_and(|p| p.origins.first() == Some(&me) || (p.origins.is_empty() && p.ingest == me))
}

/// What [`start`] set going.
pub struct Started {
    pub tasks: Vec<JoinHandle<()>>,
    /// The copy in object storage, for `/healthz`.
    pub mirror: Option<Mirror>,
    /// The live pictures of the broadcasts recorded here.
    pub posters: Option<LivePosters>,
}

/// Starts recording what `live` packages here (unless `--record-renditions off`), the worker,
/// and with `--object-endpoint` the uploads to object storage (returned for `/healthz`); the
/// live pictures of what it records (`/hls/{channel}/poster.jpg`).
pub fn start(
    config: &ValidatedConfig,
    catalog: &Catalog,
    store: &LocalStore,
    live: &media::origin::LiveRegistry,
    registry: &prometheus::Registry,
) -> anyhow::Result<Started> {
    let metrics = RecordingMetrics::new(registry)?;
    let mut tasks = Vec::new();
    let mirror = match &config.objects {
        Some(objects) => Some(mirror(config, objects, &mut tasks)?),
        None => None,
    };
    let me = catalog.node_id();
    let decide: Decide = Arc::new(move |s: &CatalogState, channel: &str| records_here(s, channel, me));
    let jpeg = pictures();
    let posters = jpeg.clone().map(|make| LivePosters::new(make, metrics.live_posters.clone()));
    let recorder_config = RecorderConfig {
        renditions: config.record_renditions.clone(),
        posters: posters.clone(),
        mirror: mirror.clone(),
        ..RecorderConfig::default()
    };
    let (recorder, task) = recorder::start(catalog.clone(), store.clone(), recorder_config, decide, metrics);
    if config.record_renditions.as_ref().is_none_or(|only| !only.is_empty()) {
        live.set_sink(recorder.clone());
    }
    let retention = config.recording_retention;
    let worker = tokio::spawn(worker::run(catalog.clone(), store.clone(), recorder, retention, jpeg, mirror.clone()));
    tasks.extend([task, worker]);
    Ok(Started { tasks, mirror, posters })
}

/// The uploader to the bucket (its spool in `DATA/object-spool`), and the bucket's lifecycle
/// rule when `--object-lifecycle-days` is set.
fn mirror(
    config: &ValidatedConfig,
    objects: &objects::ObjectConfig,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Mirror> {
    let storage = objects::ObjectStorage::connect(objects).context("object storage")?;
    let spool = config.data_dir.join("object-spool");
    let (uploader, uploads) =
        objects::Uploader::start(storage.clone(), &spool, objects.spool_max_bytes).context("object upload spool")?;
    tasks.push(tokio::spawn(uploads));
    if let Some(days) = objects.lifecycle_days {
        let storage = storage.clone();
        tasks.push(tokio::spawn(async move {
            match storage.apply_lifecycle(days).await {
                Ok(()) => tracing::info!(days, "object storage: lifecycle rule set (objects expire after {days} days)"),
                Err(objects::Error::LifecycleUnsupported { .. }) => tracing::warn!(
                    days,
                    "object storage: this store does not support lifecycle rules; recordings are removed by retention only"
                ),
                Err(error) => tracing::error!(days, %error, "object storage: setting the lifecycle rule failed"),
            }
        }));
    }
    tracing::info!(endpoint = %objects.endpoint, bucket = %objects.bucket, prefix = %objects.prefix,
        "recordings are mirrored to object storage");
    Ok(Mirror::new(uploader, storage))
}

/// Pictures are 320 pixels wide: a directory tile or a timeline strip.
const PICTURE_WIDTH: u32 = 320;

/// Decodes a keyframe with FFmpeg in-process into a JPEG.
fn pictures() -> Option<recordings::thumbnails::MakeJpeg> {
    Some(Arc::new(|init: &[u8], media: &[u8]| {
        transcode::thumbnail::jpeg_from_cmaf(init, media, PICTURE_WIDTH).map(|t| t.jpeg).map_err(|e| e.to_string())
    }))
}
