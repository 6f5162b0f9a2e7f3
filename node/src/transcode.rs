//! Wiring of the transcode role: the ladder the ingest calls for each publish, the hardware
//! encoder probe, and what `/healthz` says about both.

use std::sync::Arc;

use prometheus::Registry;
use serde_json::{json, Value};
use transcode::{HardwareProbe, TranscodeLadder, TranscodeMetrics};

use crate::config::{Role, ValidatedConfig};

/// The transcoder of this node (if it transcodes) and its `/healthz` component.
pub struct TranscodeSetup {
    pub ladder: Option<Arc<dyn media::ingest::Ladder>>,
    pub health: Value,
}

/// Builds the ladder when transcoding is on (see `--transcode-ladder`): probes the hardware
/// encoders (found and openable), logs what was found and which encoder the rungs use.
pub fn setup(config: &ValidatedConfig, registry: &Registry) -> anyhow::Result<TranscodeSetup> {
    let Some(spec) = config.transcode.clone() else {
        let detail = "passthrough only: no --transcode-ladder, and --roles does not list transcode";
        return Ok(TranscodeSetup {
            ladder: None,
            health: json!({"status": "ok", "enabled": false, "detail": detail}),
        });
    };
    let probe = HardwareProbe::detect();
    let ladder = TranscodeLadder::new(spec.clone(), &probe, TranscodeMetrics::new(registry)?);
    let hardware: Vec<Value> = probe
        .encoders
        .iter()
        .map(|e| json!({"name": e.name, "compiled": e.compiled, "openable": e.openable, "used": e.usable && e.name == ladder.encoder().codec_name()}))
        .collect();
    let found: Vec<&str> = probe.encoders.iter().filter(|e| e.openable).map(|e| e.name).collect();
    tracing::info!(ladder = %spec, encoder = ladder.encoder().codec_name(),
        hardware = %if found.is_empty() { "none".to_owned() } else { found.join(",") },
        ingest = config.roles.contains(Role::Ingest), "transcoding on");
    let health = json!({
        "status": "ok",
        "enabled": true,
        "ladder": spec.to_string(),
        "encoder": ladder.encoder().codec_name(),
        "hardware": hardware,
    });
    Ok(TranscodeSetup { ladder: Some(Arc::new(ladder)), health })
}
