//! `bitriver-load plan`: from an audience (viewers per PoP, bitrate mix) and what one edge was
//! measured to carry, how many edges each PoP needs and what flows between origin, PoPs and
//! regions.
//!
//! - egress of a PoP = viewers × average bitrate × (1 + playlist overhead); the overhead and the
//!   requests per viewer come from a measured report (ours or a k6 summary), never assumed:
//!   without a report they are 0 and unknown;
//! - edges = egress ÷ (edge capacity × (1 − headroom)), rounded up; the capacity is
//!   `--edge-capacity`, else the egress the report's run carried;
//! - origin → PoP: every edge pulls each rendition of each live channel once, so without tiering
//!   a PoP pulls `edges × channels × ladder`; with `--tiered` one shield per PoP pulls
//!   `channels × ladder` and the PoP's edges fill from it;
//! - inter-region: what the PoPs other than the origin's pull across regions.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::Serialize;

use super::report::escape;
use super::stats::table;

/// Flags of `plan`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PlanArgs {
    /// Viewers, one row (PoP) per value: `--viewers 1000,5000,10000`.
    #[arg(long, env = "BITRIVER_LOAD_PLAN_VIEWERS", value_delimiter = ',')]
    pub(crate) viewers: Vec<u64>,
    /// Named PoPs: `--pop fra=4000 --pop nyc=6000` (the first one holds the origin).
    #[arg(long, env = "BITRIVER_LOAD_PLAN_POP", value_delimiter = ',')]
    pub(crate) pop: Vec<String>,
    /// Average bitrate a viewer watches, Mbit/s (ignored with --mix).
    #[arg(long, env = "BITRIVER_LOAD_PLAN_BITRATE", default_value_t = 2.0)]
    pub(crate) bitrate: f64,
    /// Rendition mix as RATE:SHARE pairs (Mbit/s : share of viewers), e.g. `4.5:0.2,2.5:0.5,1.2:0.3`.
    #[arg(long, env = "BITRIVER_LOAD_PLAN_MIX", value_delimiter = ',')]
    pub(crate) mix: Vec<String>,
    /// What one edge carries, Gbit/s (else taken from --report).
    #[arg(long, env = "BITRIVER_LOAD_PLAN_EDGE_CAPACITY")]
    pub(crate) edge_capacity: Option<f64>,
    /// A measured run: `bitriver-load viewers --json` output, or a k6 `--summary-export` file.
    #[arg(long, env = "BITRIVER_LOAD_PLAN_REPORT")]
    pub(crate) report: Option<PathBuf>,
    /// Share of each edge's capacity kept free.
    #[arg(long, env = "BITRIVER_LOAD_PLAN_HEADROOM", default_value_t = 0.25)]
    pub(crate) headroom: f64,
    /// Live channels (each pulled once per edge, or once per PoP when tiered).
    #[arg(long, env = "BITRIVER_LOAD_PLAN_CHANNELS", default_value_t = 1)]
    pub(crate) channels: u64,
    /// Sum of a channel's rendition bitrates, Mbit/s (default: the mix's rates added up, or the
    /// bitrate).
    #[arg(long, env = "BITRIVER_LOAD_PLAN_LADDER")]
    pub(crate) ladder: Option<f64>,
    /// Edges fill from one shield per PoP instead of each from the origin.
    #[arg(long, env = "BITRIVER_LOAD_PLAN_TIERED")]
    pub(crate) tiered: bool,
    /// Write the plan as JSON here.
    #[arg(long, env = "BITRIVER_LOAD_JSON")]
    pub(crate) json: Option<PathBuf>,
    /// Write an SVG bar chart of egress and edges per PoP here.
    #[arg(long, env = "BITRIVER_LOAD_PLAN_CHART")]
    pub(crate) chart: Option<PathBuf>,
}

/// What a measured run says about one viewer and one edge.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Measured {
    /// Playlist bytes per media byte.
    pub(crate) overhead: f64,
    pub(crate) requests_per_viewer_s: f64,
    /// Egress the run carried, Gbit/s.
    pub(crate) egress_gbit: f64,
    pub(crate) viewers: u64,
    /// p99 latency to live, ms, and stalls, to judge whether the run was healthy.
    pub(crate) p99_latency_ms: Option<f64>,
    pub(crate) stalls: u64,
}

impl Measured {
    /// Reads our `viewers` JSON or a k6 summary export.
    pub(crate) fn from_json(v: &serde_json::Value) -> anyhow::Result<Self> {
        if let Some(m) = v.get("metrics") {
            // k6 --summary-export: data_received.count (bytes), http_reqs.count/rate, vus_max.
            let count = |name: &str, field: &str| m.get(name).and_then(|x| x.get(field)).and_then(|x| x.as_f64());
            let bytes = count("data_received", "count").context("k6 summary without data_received")?;
            let byte_rate = count("data_received", "rate").context("k6 summary without data_received.rate")?;
            let req_rate = count("http_reqs", "rate").unwrap_or(0.0);
            let viewers =
                count("vus_max", "value").or_else(|| count("vus_max", "max")).context("k6 summary without vus_max")?;
            let playlist = count("llhls_playlist_bytes", "count").unwrap_or(0.0);
            let media = (bytes - playlist).max(1.0);
            return Ok(Measured {
                overhead: playlist / media,
                requests_per_viewer_s: req_rate / viewers.max(1.0),
                egress_gbit: byte_rate * 8.0 / 1e9,
                viewers: viewers as u64,
                p99_latency_ms: count("llhls_latency_ms", "p(99)"),
                stalls: count("llhls_stalls", "count").unwrap_or(0.0) as u64,
            });
        }
        let s = v.get("summary").unwrap_or(v);
        let get = |k: &str| s.get(k).and_then(serde_json::Value::as_f64);
        let viewers = get("viewers").context("report without summary.viewers (is it a viewers report?)")?;
        let bytes = get("bytes").context("report without summary.bytes")?;
        let playlist = get("playlist_bytes").unwrap_or(0.0);
        let seconds = get("seconds").context("report without summary.seconds")?.max(1e-3);
        let media = (bytes - playlist).max(1.0);
        Ok(Measured {
            overhead: playlist / media,
            requests_per_viewer_s: get("requests").unwrap_or(0.0) / seconds / viewers.max(1.0),
            egress_gbit: bytes * 8.0 / seconds / 1e9,
            viewers: viewers as u64,
            p99_latency_ms: s.get("latency_ms").and_then(|l| l.get("p99")).and_then(serde_json::Value::as_f64),
            stalls: get("stalls").unwrap_or(0.0) as u64,
        })
    }
}

/// Everything the plan is computed from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct PlanInput {
    pub(crate) pops: Vec<(String, u64)>,
    /// Average Mbit/s per viewer.
    pub(crate) bitrate: f64,
    /// Sum of a channel's renditions, Mbit/s.
    pub(crate) ladder: f64,
    pub(crate) channels: u64,
    pub(crate) edge_capacity_gbit: Option<f64>,
    pub(crate) headroom: f64,
    pub(crate) tiered: bool,
    pub(crate) measured: Option<Measured>,
}

/// One PoP of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct PlanRow {
    pub(crate) pop: String,
    pub(crate) viewers: u64,
    pub(crate) egress_gbit: f64,
    pub(crate) edges: Option<u64>,
    pub(crate) origin_to_pop_gbit: Option<f64>,
    pub(crate) inter_region_gbit: Option<f64>,
    pub(crate) requests_per_s: Option<f64>,
}

pub(crate) fn compute(input: &PlanInput) -> Vec<PlanRow> {
    let overhead = input.measured.map_or(0.0, |m| m.overhead);
    let usable = input.edge_capacity_gbit.map(|c| c * (1.0 - input.headroom));
    input
        .pops
        .iter()
        .enumerate()
        .map(|(i, (pop, viewers))| {
            let egress_gbit = *viewers as f64 * input.bitrate * (1.0 + overhead) / 1000.0;
            let edges = usable.map(|u| if *viewers == 0 { 0 } else { (egress_gbit / u - 1e-9).ceil().max(1.0) as u64 });
            let pull = input.channels as f64 * input.ladder / 1000.0;
            let origin_to_pop = edges.map(|e| if input.tiered { pull.min(e as f64 * pull) } else { e as f64 * pull });
            PlanRow {
                pop: pop.clone(),
                viewers: *viewers,
                egress_gbit,
                edges,
                origin_to_pop_gbit: origin_to_pop,
                // The first PoP holds the origin; the others pull across regions.
                inter_region_gbit: origin_to_pop.map(|g| if i == 0 { 0.0 } else { g }),
                requests_per_s: input.measured.map(|m| *viewers as f64 * m.requests_per_viewer_s),
            }
        })
        .collect()
}

pub(crate) fn render(input: &PlanInput, rows: &[PlanRow]) -> String {
    let opt = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.pop.clone(),
                r.viewers.to_string(),
                format!("{:.1}", r.egress_gbit),
                r.edges.map_or("-".to_owned(), |e| e.to_string()),
                opt(r.origin_to_pop_gbit, 2),
                opt(r.inter_region_gbit, 2),
                opt(r.requests_per_s, 0),
            ]
        })
        .collect();
    let mut out = table(
        &["pop", "viewers", "egress Gbit/s", "edges", "origin->pop Gbit/s", "inter-region Gbit/s", "req/s"],
        &body,
    );
    let total: f64 = rows.iter().map(|r| r.egress_gbit).sum();
    let _ = writeln!(out, "total egress {total:.1} Gbit/s at {:.2} Mbit/s per viewer", input.bitrate);
    match (input.edge_capacity_gbit, &input.measured) {
        (Some(c), _) => {
            let _ = writeln!(out, "edge capacity {c:.2} Gbit/s, {:.0}% headroom", input.headroom * 100.0);
        }
        (None, _) => out.push_str("edges: give --edge-capacity or --report to size them\n"),
    }
    if let Some(m) = &input.measured {
        let _ = writeln!(
            out,
            "measured: playlist overhead {:.1}% of media bytes, {:.2} requests/s per viewer ({} viewers, {:.2} Gbit/s)",
            m.overhead * 100.0,
            m.requests_per_viewer_s,
            m.viewers,
            m.egress_gbit
        );
        if m.stalls > 0 || m.p99_latency_ms.is_some_and(|p| p >= 2000.0) {
            let _ = writeln!(
                out,
                "warning: the measured run was not healthy ({} stalls, p99 latency {} ms): its egress overstates the capacity",
                m.stalls,
                m.p99_latency_ms.map_or("-".into(), |p| format!("{p:.0}"))
            );
        }
    }
    out
}

/// Bars of egress (left) and edges (right) per PoP.
pub(crate) fn chart(rows: &[PlanRow]) -> String {
    let (w, h, left, bottom, top) = (800.0, 300.0, 60.0, 50.0, 30.0);
    let max_egress = rows.iter().map(|r| r.egress_gbit).fold(0.0, f64::max).max(1e-9);
    let max_edges = rows.iter().filter_map(|r| r.edges).max().unwrap_or(0).max(1) as f64;
    let slot = (w - left - 20.0) / rows.len().max(1) as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"18\" font-size=\"14\">Egress (Gbit/s, blue) and edges (orange) per PoP</text>\n"
    );
    for (i, r) in rows.iter().enumerate() {
        let x = left + slot * i as f64;
        let bar = (slot / 3.0).min(60.0);
        let eh = r.egress_gbit / max_egress * (h - top - bottom);
        let _ = writeln!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{eh:.1}\" fill=\"#1f77b4\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.1}</text>",
            h - bottom - eh,
            x + bar / 2.0,
            h - bottom - eh - 3.0,
            r.egress_gbit
        );
        if let Some(e) = r.edges {
            let ed = e as f64 / max_edges * (h - top - bottom);
            let _ = writeln!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{ed:.1}\" fill=\"#ff7f0e\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{e}</text>",
                x + bar + 4.0,
                h - bottom - ed,
                x + bar * 1.5 + 4.0,
                h - bottom - ed - 3.0
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{} ({} viewers)</text>",
            x + bar,
            h - bottom + 16.0,
            escape(&r.pop),
            r.viewers
        );
    }
    svg += "</svg>\n";
    svg
}

/// Average Mbit/s and ladder sum of a `RATE:SHARE` list.
fn parse_mix(mix: &[String]) -> anyhow::Result<(f64, f64)> {
    let mut pairs = Vec::new();
    for item in mix {
        let (rate, share) = item.split_once(':').with_context(|| format!("--mix {item}: expected RATE:SHARE"))?;
        let rate: f64 = rate.trim().parse().with_context(|| format!("--mix {item}: bad rate"))?;
        let share: f64 = share.trim().parse().with_context(|| format!("--mix {item}: bad share"))?;
        anyhow::ensure!(
            rate > 0.0 && share >= 0.0 && rate.is_finite() && share.is_finite(),
            "--mix {item}: out of range"
        );
        pairs.push((rate, share));
    }
    let shares: f64 = pairs.iter().map(|p| p.1).sum();
    anyhow::ensure!(shares > 0.0, "--mix shares add up to 0");
    Ok((pairs.iter().map(|(r, s)| r * s).sum::<f64>() / shares, pairs.iter().map(|p| p.0).sum()))
}

pub(crate) fn input_of(args: &PlanArgs) -> anyhow::Result<PlanInput> {
    let mut pops: Vec<(String, u64)> = Vec::new();
    for p in &args.pop {
        let (name, n) = p.split_once('=').with_context(|| format!("--pop {p}: expected NAME=VIEWERS"))?;
        pops.push((name.trim().to_owned(), n.trim().parse().with_context(|| format!("--pop {p}: bad viewer count"))?));
    }
    pops.extend(args.viewers.iter().map(|v| (format!("{v} viewers"), *v)));
    anyhow::ensure!(!pops.is_empty(), "give --viewers or --pop");
    let (bitrate, ladder) = if args.mix.is_empty() { (args.bitrate, args.bitrate) } else { parse_mix(&args.mix)? };
    anyhow::ensure!(bitrate > 0.0 && bitrate.is_finite(), "--bitrate must be positive");
    anyhow::ensure!((0.0..1.0).contains(&args.headroom), "--headroom must be in [0, 1)");
    let measured = match &args.report {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
            Some(Measured::from_json(&v).with_context(|| format!("{}", path.display()))?)
        }
        None => None,
    };
    if let Some(c) = args.edge_capacity {
        anyhow::ensure!(c > 0.0 && c.is_finite(), "--edge-capacity must be positive");
    }
    Ok(PlanInput {
        pops,
        bitrate,
        ladder: args.ladder.unwrap_or(ladder),
        channels: args.channels,
        edge_capacity_gbit: args.edge_capacity.or(measured.map(|m| m.egress_gbit)),
        headroom: args.headroom,
        tiered: args.tiered,
        measured,
    })
}

pub(crate) fn run(args: PlanArgs) -> anyhow::Result<()> {
    let input = input_of(&args)?;
    let rows = compute(&input);
    print!("{}", render(&input, &rows));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&serde_json::json!({"input": input, "rows": rows}))?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.chart {
        std::fs::write(path, chart(&rows)).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> PlanArgs {
        PlanArgs {
            viewers: vec![],
            pop: vec![],
            bitrate: 2.0,
            mix: vec![],
            edge_capacity: None,
            report: None,
            headroom: 0.25,
            channels: 1,
            ladder: None,
            tiered: false,
            json: None,
            chart: None,
        }
    }

    #[test]
    fn reproduces_the_plans_rule_of_thumb_exactly() {
        let a = PlanArgs { viewers: vec![1000, 5000, 10_000], ..args() };
        let input = input_of(&a).unwrap();
        let rows = compute(&input);
        let egress: Vec<f64> = rows.iter().map(|r| r.egress_gbit).collect();
        assert_eq!(egress, [2.0, 10.0, 20.0]);
        assert!(rows.iter().all(|r| r.edges.is_none() && r.requests_per_s.is_none()));
        let text = render(&input, &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[2].starts_with("1000 viewers") && lines[2].contains(" 2.0 "), "{text}");
        assert!(lines[3].starts_with("5000 viewers") && lines[3].contains(" 10.0 "), "{text}");
        assert!(lines[4].starts_with("10000 viewers") && lines[4].contains(" 20.0 "), "{text}");
        assert!(text.contains("total egress 32.0 Gbit/s at 2.00 Mbit/s per viewer"));
    }

    #[test]
    fn edges_with_headroom_and_tiered_pulls() {
        let a = PlanArgs {
            pop: vec!["fra=4000".into(), "nyc=6000".into()],
            edge_capacity: Some(10.0),
            channels: 20,
            mix: vec!["4.5:0.2".into(), "2.5:0.5".into(), "1.2:0.3".into()],
            ..args()
        };
        let input = input_of(&a).unwrap();
        // 0.9 + 1.25 + 0.36 = 2.51 Mbit/s on average; a ladder of 8.2 Mbit/s.
        assert!((input.bitrate - 2.51).abs() < 1e-9 && (input.ladder - 8.2).abs() < 1e-9);
        let rows = compute(&input);
        // fra: 10.04 Gbit/s over 7.5 usable per edge = 2 edges; nyc: 15.06 -> 3.
        assert_eq!(rows.iter().map(|r| r.edges).collect::<Vec<_>>(), [Some(2), Some(3)]);
        // Untiered: each edge pulls 20 x 8.2 Mbit/s.
        assert!((rows[1].origin_to_pop_gbit.unwrap() - 3.0 * 0.164).abs() < 1e-9);
        assert_eq!(rows[0].inter_region_gbit, Some(0.0));
        let tiered = compute(&PlanInput { tiered: true, ..input });
        assert!((tiered[1].origin_to_pop_gbit.unwrap() - 0.164).abs() < 1e-9);
        assert!((tiered[1].inter_region_gbit.unwrap() - 0.164).abs() < 1e-9);
        let svg = chart(&tiered);
        assert!(svg.contains("fra (4000 viewers)") && svg.ends_with("</svg>\n"));
    }

    #[test]
    fn a_plan_from_a_measured_report() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/viewers-report.json")).unwrap();
        let m = Measured::from_json(&fixture).unwrap();
        // 200 viewers, 60 s, 3.15 GB of which 0.15 GB playlists; 120,000 requests.
        assert!((m.overhead - 0.05).abs() < 1e-9, "{m:?}");
        assert!((m.requests_per_viewer_s - 10.0).abs() < 1e-9);
        assert!((m.egress_gbit - 0.42).abs() < 1e-9);
        let input = PlanInput {
            pops: vec![("pop".into(), 1000)],
            bitrate: 2.0,
            ladder: 2.0,
            channels: 1,
            edge_capacity_gbit: Some(m.egress_gbit),
            headroom: 0.0,
            tiered: false,
            measured: Some(m),
        };
        let rows = compute(&input);
        // 1000 x 2 Mbit/s x 1.05 = 2.1 Gbit/s over 0.42 per edge = 5 edges; 10,000 requests/s.
        assert!((rows[0].egress_gbit - 2.1).abs() < 1e-9);
        assert_eq!(rows[0].edges, Some(5));
        assert!((rows[0].requests_per_s.unwrap() - 10_000.0).abs() < 1e-6);
        assert!(!render(&input, &rows).contains("warning"));
    }

    #[test]
    fn reads_a_k6_summary() {
        let k6 = serde_json::json!({"metrics": {
            "data_received": {"count": 1.0e9, "rate": 1.25e8},
            "http_reqs": {"count": 80000, "rate": 1000.0},
            "vus_max": {"value": 100, "min": 100, "max": 100},
            "llhls_playlist_bytes": {"count": 5.0e7, "rate": 1.0},
            "llhls_latency_ms": {"p(99)": 2500.0, "avg": 1000.0},
            "llhls_stalls": {"count": 3, "rate": 0.1}
        }});
        let m = Measured::from_json(&k6).unwrap();
        assert!((m.egress_gbit - 1.0).abs() < 1e-9);
        assert!((m.requests_per_viewer_s - 10.0).abs() < 1e-9);
        assert!((m.overhead - 0.05 / 0.95).abs() < 1e-9);
        assert_eq!((m.viewers, m.stalls, m.p99_latency_ms), (100, 3, Some(2500.0)));
        let input = PlanInput {
            pops: vec![("p".into(), 10)],
            bitrate: 1.0,
            ladder: 1.0,
            channels: 1,
            edge_capacity_gbit: Some(1.0),
            headroom: 0.0,
            tiered: false,
            measured: Some(m),
        };
        assert!(render(&input, &compute(&input)).contains("warning: the measured run was not healthy"));
    }

    #[test]
    fn bad_input_is_named() {
        assert!(input_of(&args()).unwrap_err().to_string().contains("--viewers or --pop"));
        let a = PlanArgs { pop: vec!["fra".into()], ..args() };
        assert!(input_of(&a).unwrap_err().to_string().contains("NAME=VIEWERS"));
        let a = PlanArgs { viewers: vec![1], mix: vec!["x".into()], ..args() };
        assert!(input_of(&a).unwrap_err().to_string().contains("RATE:SHARE"));
    }
}
