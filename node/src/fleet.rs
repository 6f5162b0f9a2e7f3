//! This node's part in the fleet: it reports its load to the catalog, renews the ingest leases of
//! the channels it publishes, and says whether it is draining.
//!
//! The catalog side (tables, expiry) is in `raft::load` and `raft::lease`; this module only
//! measures and proposes.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::ingest_gate::CatalogGate;
use media::origin::LiveRegistry;
use prometheus::IntGauge;
use raft::{Catalog, Command, LoadReport};
use serde_json::{json, Value};

/// How often the load goes to the catalog: often enough that placement sees a node fill up
/// within a second, rare enough that a thousand nodes stay a few thousand small writes a second
/// (grouped into a few log entries by the leader's group commit).
pub const LOAD_REPORT_EVERY: Duration = Duration::from_millis(500);

/// Start the fleet tasks of this node; they stop when the returned handles are aborted. The
/// load report counts what `gauges` holds (see [`LoadGauges`]).
pub fn start(
    catalog: &Catalog,
    gauges: &Arc<LoadGauges>,
    gate: Option<&CatalogGate>,
    live: &LiveRegistry,
) -> Vec<tokio::task::JoinHandle<()>> {
    let _ = gauges.live_channels.set(live.metrics().live_channels.clone());
    if let Some(gate) = gate {
        let _ = gauges.publishers.set(gate.metrics().active_publishers.clone());
    }
    let mut tasks = vec![tokio::spawn(report_load(catalog.clone(), gauges.clone()))];
    if let Some(gate) = gate {
        let active_gate = gate.clone();
        let live = live.clone();
        tasks.push(tokio::spawn(raft::lease::renew_ingest_leases(
            catalog.clone(),
            move || active_gate.publishing(),
            // Ending the stream makes the publish's next push fail, which closes the connection;
            // the publish then leaves the session alone (it is no longer the channel's).
            move |channel: &str| live.end_channel(channel),
        )));
    }
    tasks
}

/// Every [`LOAD_REPORT_EVERY`], propose this node's [`LoadReport`].
async fn report_load(catalog: Catalog, gauges: Arc<LoadGauges>) {
    let mut tick = tokio::time::interval(LOAD_REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut meter = LoadMeter::new();
    loop {
        tick.tick().await;
        let report = meter.measure(catalog.node_id(), &gauges);
        // Not yet in the directory (just joined): the report is refused; the next one will do.
        if let Err(error) = catalog.propose(Command::ReportLoad(report)).await {
            tracing::debug!(%error, "load report not accepted");
        }
    }
}

/// Turns counters into rates between two reports.
struct LoadMeter {
    last: Option<(Instant, u64, u64)>,
}

impl LoadMeter {
    fn new() -> Self {
        LoadMeter { last: None }
    }

    fn measure(&mut self, node_id: u64, gauges: &LoadGauges) -> LoadReport {
        let now = Instant::now();
        let cpu_ticks = process_cpu_ticks().unwrap_or(0);
        let tx = network_tx_bytes().unwrap_or(0);
        let (cpu_permille, egress_bps) = match self.last {
            Some((then, cpu_before, tx_before)) => {
                let secs = now.duration_since(then).as_secs_f64().max(1e-3);
                // /proc reports CPU time in USER_HZ ticks, 100 per second on Linux.
                let cpu = cpu_ticks.saturating_sub(cpu_before) as f64 / 100.0 / secs * 1000.0;
                let egress = tx.saturating_sub(tx_before) as f64 / secs;
                (cpu.round() as u32, egress.round() as u64)
            }
            None => (0, 0),
        };
        self.last = Some((now, cpu_ticks, tx));
        let gauges = gauges.read();
        LoadReport {
            node_id,
            cpu_permille,
            egress_bps,
            streams: gauges.live_channels.max(gauges.publishers) as u32,
            connections: (gauges.edge_connections + gauges.ws_connections + gauges.publishers) as u32,
            at: raft::now_millis(),
        }
    }
}

/// The gauges of this node that count streams and connections, each set by the part of the node
/// that has it (unset: that part does not run here, 0). Held, not looked up: gathering the whole
/// registry for four numbers costs more with every channel.
#[derive(Debug, Default)]
pub struct LoadGauges {
    /// `bitriver_live_channels`
    pub live_channels: OnceLock<IntGauge>,
    /// `bitriver_ingest_active_publishers`
    pub publishers: OnceLock<IntGauge>,
    /// `bitriver_edge_connections`
    pub edge_connections: OnceLock<IntGauge>,
    /// `bitriver_ws_connections`
    pub ws_connections: OnceLock<IntGauge>,
}

/// What [`LoadGauges`] read at one moment.
struct Gauges {
    live_channels: u64,
    publishers: u64,
    edge_connections: u64,
    ws_connections: u64,
}

impl LoadGauges {
    fn read(&self) -> Gauges {
        let value = |gauge: &OnceLock<IntGauge>| gauge.get().map_or(0, |g| g.get().max(0) as u64);
        Gauges {
            live_channels: value(&self.live_channels),
            publishers: value(&self.publishers),
            edge_connections: value(&self.edge_connections),
            ws_connections: value(&self.ws_connections),
        }
    }
}

/// User plus system CPU time of this process, in clock ticks (`/proc/self/stat` fields 14, 15).
fn process_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Bytes sent on the non-loopback interfaces of this node's network namespace. A node is a
/// machine, a container or (in the tests) a namespace of its own; several nodes sharing one
/// namespace report the same egress.
fn network_tx_bytes() -> Option<u64> {
    let dev = std::fs::read_to_string("/proc/self/net/dev").ok()?;
    Some(parse_tx_bytes(&dev))
}

fn parse_tx_bytes(dev: &str) -> u64 {
    dev.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            if name.trim() == "lo" {
                return None;
            }
            // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit bytes.
            counters.split_whitespace().nth(8)?.parse::<u64>().ok()
        })
        .sum()
}

/// The `drain` component of `/healthz`, and the top-level status it implies: a draining node
/// says `draining` while it still publishes or serves live streams, then `drained`.
pub fn drain_health(catalog: &Catalog, gauges: &LoadGauges) -> Option<(&'static str, Value)> {
    let me = catalog.node_id();
    let (draining, leases) =
        catalog.read(|s| (s.is_draining(me), s.ingest_leases().filter(|l| l.holder == me).count()));
    if !draining {
        return None;
    }
    let streams = gauges.read().live_channels;
    let status = if leases == 0 && streams == 0 { "drained" } else { "draining" };
    Some((status, json!({"status": status, "ingestLeases": leases, "liveStreams": streams})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_bytes_skip_loopback() {
        let dev = "Inter-|   Receive                                                |  Transmit\n \
                   face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets\n    \
                   lo: 1000 10 0 0 0 0 0 0 5000 10 0 0 0 0 0 0\n  \
                   eth0: 2000 20 0 0 0 0 0 0 7000 30 0 0 0 0 0 0\n  \
                   veth1: 1 1 0 0 0 0 0 0 300 3 0 0 0 0 0 0\n";
        assert_eq!(parse_tx_bytes(dev), 7300);
    }

    #[test]
    fn busy_cpu_shows_in_the_process_ticks() {
        // Spin until the kernel accounts a tick (10 ms of CPU); a parser that always read 0
        // would spin to the deadline and fail.
        let before = process_cpu_ticks().expect("/proc/self/stat");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        while process_cpu_ticks().unwrap_or(0) <= before {
            for _ in 0..100_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            assert!(Instant::now() < deadline, "no CPU time accounted after 20 s of spinning");
        }
        assert!(x > 0);
    }
}
