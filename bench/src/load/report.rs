//! Results on disk: `--json FILE` (summary and timeline) and `--report DIR` (an HTML page with
//! SVG charts over time). The SVG is written here: a few polylines need no charting library, and
//! the files open in any browser without scripts or network.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use super::stats::Point;

/// Everything one run reports.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) mode: &'static str,
    pub(crate) target: String,
    /// When the run started, ms since the Unix epoch.
    pub(crate) started_unix_ms: u64,
    pub(crate) duration_s: f64,
    /// The mode's summary figures.
    pub(crate) summary: serde_json::Value,
    /// The summary table as printed.
    pub(crate) table: String,
    pub(crate) timeline: Vec<Point>,
}

impl Report {
    pub(crate) fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Writes `index.html` and one SVG per chart into `dir` (created if missing).
    pub(crate) fn write_html(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let t = |p: &Point| p.t;
        let mut charts: Vec<(&str, String)> = vec![
            (
                "requests.svg",
                chart("Requests per second", "req/s", &[("req/s", BLUE, self.series(t, |p| Some(p.requests_per_s)))]),
            ),
            ("egress.svg", chart("Throughput", "Mbit/s", &[("Mbit/s", GREEN, self.series(t, |p| Some(p.mbit_per_s)))])),
        ];
        if self.timeline.iter().any(|p| p.latency.is_some()) {
            let unit = if self.mode == "viewers" { "latency to live, ms" } else { "latency, ms" };
            charts.push((
                "latency.svg",
                chart(
                    "Latency percentiles",
                    unit,
                    &[
                        ("p50", GREEN, self.series(t, |p| p.latency.map(|l| l.p50))),
                        ("p90", ORANGE, self.series(t, |p| p.latency.map(|l| l.p90))),
                        ("p99", RED, self.series(t, |p| p.latency.map(|l| l.p99))),
                    ],
                ),
            ));
        }
        if self.mode == "viewers" {
            charts.push((
                "stalls.svg",
                chart(
                    "Stalls",
                    "viewers",
                    &[
                        ("stalled now", RED, self.series(t, |p| Some(p.stalled as f64))),
                        ("stalls so far", ORANGE, self.series(t, |p| Some(p.stalls as f64))),
                    ],
                ),
            ));
        }
        charts.push((
            "active.svg",
            chart(
                "Active workers and errors",
                "count",
                &[
                    ("active", BLUE, self.series(t, |p| Some(p.active as f64))),
                    ("errors so far", RED, self.series(t, |p| Some(p.errors as f64))),
                ],
            ),
        ));
        charts.push((
            "cpu.svg",
            chart(
                "CPU",
                "cores",
                &[
                    ("target (from /metrics)", RED, self.series(t, |p| p.target_cpu)),
                    ("load generator", BLUE, self.series(t, |p| p.own_cpu)),
                ],
            ),
        ));
        let mut html = String::new();
        let _ = write!(
            html,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>bitriver-load {mode}</title>\n\
             <style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1000px}}pre{{background:#f4f4f4;padding:1em;overflow-x:auto}}img{{display:block;margin:1em 0}}</style>\n\
             </head><body>\n<h1>bitriver-load {mode}</h1>\n<p>Target <code>{target}</code>, {duration:.1} s.</p>\n<h2>Summary</h2>\n<pre>{table}</pre>\n<h2>Over time</h2>\n",
            mode = self.mode,
            target = escape(&self.target),
            duration = self.duration_s,
            table = escape(&self.table),
        );
        for (file, svg) in &charts {
            std::fs::write(dir.join(file), svg).with_context(|| format!("writing {file}"))?;
            let _ = writeln!(html, "<img src=\"{file}\" alt=\"{file}\" width=\"{W}\" height=\"{H}\">");
        }
        html += "<p>Raw figures: <a href=\"report.json\">report.json</a>.</p>\n</body></html>\n";
        std::fs::write(dir.join("index.html"), html).context("writing index.html")?;
        self.write_json(&dir.join("report.json"))
    }

    fn series(&self, x: impl Fn(&Point) -> f64, y: impl Fn(&Point) -> Option<f64>) -> Vec<(f64, Option<f64>)> {
        self.timeline.iter().map(|p| (x(p), y(p))).collect()
    }
}

const W: u32 = 800;
const H: u32 = 260;
const BLUE: &str = "#1f77b4";
const GREEN: &str = "#2ca02c";
const ORANGE: &str = "#ff7f0e";
const RED: &str = "#d62728";

/// One line of a chart: name, colour, (x, y) points (`None`: a gap).
pub(crate) type Series<'a> = (&'a str, &'a str, Vec<(f64, Option<f64>)>);

/// A line chart: x in seconds, one polyline per series (gaps where a value is `None`).
pub(crate) fn chart(title: &str, unit: &str, series: &[Series<'_>]) -> String {
    let (left, right, top, bottom) = (64.0, 16.0, 28.0, 40.0);
    let (w, h) = (f64::from(W), f64::from(H));
    let points = series.iter().flat_map(|s| s.2.iter());
    let x_max = points.clone().map(|p| p.0).fold(0.0, f64::max).max(1.0);
    let y_max = nice_ceiling(points.filter_map(|p| p.1).fold(0.0, f64::max));
    let px = |x: f64| left + x / x_max * (w - left - right);
    let py = |y: f64| h - bottom - y / y_max * (h - top - bottom);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"18\" font-size=\"14\">{}</text>\n",
        escape(title)
    );
    for i in 0..=4 {
        let y = y_max * f64::from(i) / 4.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            w - right,
            left - 6.0,
            py(y) + 4.0,
            short(y),
            py = py(y)
        );
    }
    for i in 0..=5 {
        let x = x_max * f64::from(i) / 5.0;
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{:.0} s</text>",
            px(x),
            h - bottom + 16.0,
            x
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">{}</text>",
        h / 2.0,
        h / 2.0,
        escape(unit)
    );
    let mut legend_x = left;
    for (name, color, data) in series {
        let mut run = Vec::new();
        let flush = |run: &mut Vec<String>, svg: &mut String| {
            if run.len() == 1 {
                run.push(run[0].clone());
            }
            if !run.is_empty() {
                let _ = writeln!(
                    svg,
                    "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
                    run.join(" ")
                );
            }
            run.clear();
        };
        for (x, y) in data {
            match y {
                Some(y) if y.is_finite() => run.push(format!("{:.1},{:.1}", px(*x), py(*y))),
                _ => flush(&mut run, &mut svg),
            }
        }
        flush(&mut run, &mut svg);
        let _ = writeln!(
            svg,
            "<rect x=\"{legend_x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            h - 14.0,
            legend_x + 14.0,
            h - 5.0,
            escape(name)
        );
        legend_x += 24.0 + 7.0 * name.len() as f64;
    }
    svg += "</svg>\n";
    svg
}

/// The next "round" number at or above `v` (1, 2, 2.5, 5 × 10^n), so axes read well.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= v {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Percentiles;

    #[test]
    fn writes_a_page_with_charts_and_the_json() {
        let dir = tempfile::tempdir().unwrap();
        let timeline = (1..=3)
            .map(|i| Point {
                t: f64::from(i),
                active: 2,
                requests_per_s: 10.0 * f64::from(i),
                mbit_per_s: 2.0,
                latency: (i != 2).then_some(Percentiles { count: 1, p50: 500.0, p90: 600.0, p99: 700.0, max: 700.0 }),
                ..Point::default()
            })
            .collect();
        let report = Report {
            mode: "viewers",
            target: "http://x/<master>.m3u8".into(),
            started_unix_ms: 0,
            duration_s: 3.0,
            summary: serde_json::json!({"viewers": 2}),
            table: "a  b\n".into(),
            timeline,
        };
        report.write_html(dir.path()).unwrap();
        let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
        assert!(html.contains("http://x/&lt;master&gt;.m3u8"));
        for file in ["requests.svg", "egress.svg", "latency.svg", "stalls.svg", "cpu.svg"] {
            assert!(html.contains(file), "{file} linked");
            let svg = std::fs::read_to_string(dir.path().join(file)).unwrap();
            assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        }
        // The latency gap at t = 2 splits each percentile into two polylines.
        let latency = std::fs::read_to_string(dir.path().join("latency.svg")).unwrap();
        assert_eq!(latency.matches("<polyline").count(), 6);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
        assert_eq!(json["timeline"][2]["requests_per_s"], 30.0);
        assert_eq!(json["summary"]["viewers"], 2);
    }

    #[test]
    fn round_axis_maxima() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(180.0), 200.0);
        assert_eq!(nice_ceiling(2100.0), 2500.0);
    }
}
