//! What every mode measures over time: counters the workers bump, latency samples they push, and
//! a sampler that turns them into one [`Point`] a second (the live progress line and the charts).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Latency samples kept per interval; beyond this a sample replaces a random older one
/// (reservoir), so a huge run stays bounded and unbiased.
const MAX_SAMPLES_PER_INTERVAL: usize = 100_000;

/// Counters shared by a mode's workers.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Requests (or messages, or media tags) completed.
    pub(crate) requests: AtomicU64,
    /// Payload bytes moved (received by viewers, sent by publishers).
    pub(crate) bytes: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// Workers running now (viewers, sockets, publishers).
    pub(crate) active: AtomicU64,
    /// Viewers stalled now.
    pub(crate) stalled: AtomicU64,
    /// Stalls started so far.
    pub(crate) stalls: AtomicU64,
    samples: Mutex<Reservoir>,
}

#[derive(Debug, Default)]
struct Reservoir {
    values: Vec<f64>,
    seen: u64,
    /// xorshift state for the replacement index.
    rng: u64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn dec(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    /// Records one latency sample, ms.
    pub(crate) fn latency(&self, ms: f64) {
        let Ok(mut r) = self.samples.lock() else { return };
        r.seen += 1;
        if r.values.len() < MAX_SAMPLES_PER_INTERVAL {
            r.values.push(ms);
        } else {
            r.rng = (r.rng ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ r.seen;
            let i = (r.rng % r.seen) as usize;
            if i < r.values.len() {
                r.values[i] = ms;
            }
        }
    }

    fn take_samples(&self) -> Vec<f64> {
        self.samples.lock().map(|mut r| std::mem::take(&mut r.values)).unwrap_or_default()
    }
}

/// Percentiles of a set of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) count: u64,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles; `None` without samples.
    pub(crate) fn of(samples: &mut [f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let rank = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
        Some(Percentiles {
            count: samples.len() as u64,
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: samples[samples.len() - 1],
        })
    }
}

/// One second of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Point {
    /// Seconds since the start, at the end of the interval.
    pub(crate) t: f64,
    pub(crate) active: u64,
    pub(crate) requests_per_s: f64,
    pub(crate) mbit_per_s: f64,
    pub(crate) errors: u64,
    /// Latency percentiles of the samples taken in this interval, ms.
    pub(crate) latency: Option<Percentiles>,
    pub(crate) stalled: u64,
    pub(crate) stalls: u64,
    /// Cores the target used in this interval (from its `process_cpu_seconds_total`).
    pub(crate) target_cpu: Option<f64>,
    /// Cores this load generator used.
    pub(crate) own_cpu: Option<f64>,
}

/// Turns the counters into points, one per `every`.
pub(crate) struct Sampler {
    started: Instant,
    last: Instant,
    last_requests: u64,
    last_bytes: u64,
    last_target_cpu: Option<f64>,
    last_own_cpu: Option<f64>,
    /// Every latency sample of the run, for the summary (bounded like an interval's).
    pub(crate) all_latency: Vec<f64>,
    pub(crate) points: Vec<Point>,
}

impl Sampler {
    pub(crate) fn new(started: Instant, target_cpu: Option<f64>) -> Self {
        Sampler {
            started,
            last: started,
            last_requests: 0,
            last_bytes: 0,
            last_target_cpu: target_cpu,
            last_own_cpu: own_cpu_seconds(),
            all_latency: Vec::new(),
            points: Vec::new(),
        }
    }

    /// Closes an interval at `now`; `target_cpu` is the target's CPU seconds now, if known.
    pub(crate) fn sample(&mut self, c: &Counters, now: Instant, target_cpu: Option<f64>) -> &Point {
        let secs = now.duration_since(self.last).as_secs_f64().max(1e-3);
        let requests = Counters::get(&c.requests);
        let bytes = Counters::get(&c.bytes);
        let mut samples = c.take_samples();
        if self.all_latency.len() + samples.len() <= MAX_SAMPLES_PER_INTERVAL * 10 {
            self.all_latency.extend_from_slice(&samples);
        } else {
            // Keep every tenth beyond the cap: the summary stays representative and bounded.
            self.all_latency.extend(samples.iter().step_by(10));
            self.all_latency.truncate(MAX_SAMPLES_PER_INTERVAL * 20);
        }
        let own = own_cpu_seconds();
        let point = Point {
            t: now.duration_since(self.started).as_secs_f64(),
            active: Counters::get(&c.active),
            requests_per_s: (requests - self.last_requests) as f64 / secs,
            mbit_per_s: (bytes - self.last_bytes) as f64 * 8.0 / secs / 1e6,
            errors: Counters::get(&c.errors),
            latency: Percentiles::of(&mut samples),
            stalled: Counters::get(&c.stalled),
            stalls: Counters::get(&c.stalls),
            target_cpu: target_cpu.zip(self.last_target_cpu).map(|(now, before)| (now - before).max(0.0) / secs),
            own_cpu: own.zip(self.last_own_cpu).map(|(now, before)| (now - before) / secs),
        };
        self.last = now;
        self.last_requests = requests;
        self.last_bytes = bytes;
        self.last_target_cpu = target_cpu.or(self.last_target_cpu);
        self.last_own_cpu = own;
        self.points.push(point);
        self.points.last().expect("just pushed")
    }

    /// The progress line of the last point.
    pub(crate) fn progress_line(&self, what: &str) -> String {
        let Some(p) = self.points.last() else { return String::new() };
        let mut line = format!(
            "{:6.1}s {what} {:>6} | {:>8.0} req/s {:>9.2} Mbit/s | errors {:>5}",
            p.t, p.active, p.requests_per_s, p.mbit_per_s, p.errors
        );
        if let Some(l) = p.latency {
            line += &format!(" | latency p50 {:.0} p99 {:.0} ms", l.p50, l.p99);
        }
        if p.stalls > 0 || p.stalled > 0 {
            line += &format!(" | stalled {} (stalls {})", p.stalled, p.stalls);
        }
        if let Some(cpu) = p.target_cpu {
            line += &format!(" | target {:.2} cores", cpu);
        }
        line
    }
}

/// CPU seconds (user + system) this process has used.
pub(crate) fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI we run on.
    Some((utime + stime) / 100.0)
}

/// The value of an unlabelled metric `name` in a Prometheus text exposition.
pub(crate) fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let value = rest.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Scrapes a target's `/metrics` for its CPU seconds, with a short timeout: a load test must not
/// wait on a target too busy to answer.
pub(crate) struct TargetCpu {
    client: reqwest::Client,
    url: String,
}

impl TargetCpu {
    pub(crate) fn new(url: String) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_millis(800)).build().unwrap_or_default();
        TargetCpu { client, url }
    }

    pub(crate) async fn seconds(&self) -> Option<f64> {
        let text = self.client.get(&self.url).send().await.ok()?.text().await.ok()?;
        metric_value(&text, "process_cpu_seconds_total")
    }
}

/// Formats a table: a header row and rows, right-aligned except the first column.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.len());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i == 0 {
                out += &format!("{cell:<w$}");
            } else {
                out += &format!("  {cell:>w$}");
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    out += &"-".repeat(widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1));
    out.push('\n');
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&mut v).unwrap();
        assert_eq!((p.count, p.p50, p.p90, p.p99, p.max), (100, 50.0, 90.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(&mut []), None);
        let p = Percentiles::of(&mut [7.0]).unwrap();
        assert_eq!((p.p50, p.p99), (7.0, 7.0));
    }

    #[test]
    fn reads_prometheus_text() {
        let text = "# HELP process_cpu_seconds_total x\nprocess_cpu_seconds_total 12.5\n\
                    process_cpu_seconds_total_other 5\n";
        assert_eq!(metric_value(text, "process_cpu_seconds_total"), Some(12.5));
        assert_eq!(metric_value(text, "absent"), None);
    }

    #[test]
    fn the_sampler_turns_counters_into_rates() {
        let start = Instant::now();
        let c = Counters::default();
        let mut s = Sampler::new(start, Some(10.0));
        Counters::add(&c.requests, 50);
        Counters::add(&c.bytes, 1_000_000);
        c.latency(100.0);
        c.latency(300.0);
        let p = s.sample(&c, start + Duration::from_secs(2), Some(11.0)).clone();
        assert_eq!(p.requests_per_s, 25.0);
        assert_eq!(p.mbit_per_s, 4.0);
        assert_eq!(p.target_cpu, Some(0.5));
        assert_eq!(p.latency.unwrap().max, 300.0);
        // The next interval has no samples of its own.
        let p = s.sample(&c, start + Duration::from_secs(3), None).clone();
        assert_eq!((p.requests_per_s, p.latency), (0.0, None));
        assert_eq!(s.all_latency.len(), 2);
    }

    #[test]
    fn tables_align() {
        let t = table(&["a", "bb"], &[vec!["x".into(), "1".into()], vec!["yyy".into(), "22".into()]]);
        assert_eq!(t, "a    bb\n-------\nx     1\nyyy  22\n");
    }
}
