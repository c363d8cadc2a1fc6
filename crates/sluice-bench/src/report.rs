//! The report: the table and the throughput-by-writers chart.

use super::*;

/// The table printed at the end of a run.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    out += &format!(
        "sluice-bench on {} (medians of {} runs)\n\n",
        report.machine, report.runs
    );
    out += &format!(
        "{:<34} {:>10} {:<22} {:>10} {:>7}  {:<9} {:>24} {:>24} {:>10} {:>11}\n",
        "scenario",
        "sluice",
        "baseline",
        "baseline",
        "ratio",
        "goal",
        "persist p50/p99/max ms",
        "commit p50/p99/max ms",
        "RSS +MiB",
        "CPU s/GiB"
    );
    for s in &report.scenarios {
        let best = s
            .sluice
            .iter()
            .max_by(|a, b| a.mib_per_s.total_cmp(&b.mib_per_s));
        let lat = |l: &Option<Latency>| {
            l.as_ref().map_or("-".to_string(), |l| {
                format!("{:.1}/{:.1}/{:.1}", l.p50_ms, l.p99_ms, l.max_ms)
            })
        };
        let mut rss: Vec<f64> = s
            .sluice
            .iter()
            .filter_map(|r| r.server_peak_rss_above_start_mib)
            .collect();
        // The server's CPU, and that of the baseline's writing process.
        let cpu = |runs: &[Run]| {
            let mut cpu: Vec<f64> = runs.iter().filter_map(|r| r.server_cpu_s_per_gib).collect();
            if cpu.is_empty() {
                "-".to_string()
            } else {
                format!("{:.2}", median(&mut cpu))
            }
        };
        out += &format!(
            "{:<34} {:>7.1} MB/s {:<22} {:>7.1} MB/s {:>6.3}  {:<9} {:>24} {:>24} {:>10.1} {:>11}\n",
            s.name,
            s.sluice_median_mib_per_s,
            s.baseline_name,
            s.baseline_median_mib_per_s,
            s.ratio,
            s.goal,
            lat(&best.and_then(|r| r.persist.clone())),
            lat(&best.and_then(|r| r.commit.clone())),
            median(&mut rss),
            format!("{}/{}", cpu(&s.sluice), cpu(&s.baseline)),
        );
    }
    if !report.concurrency.is_empty() {
        out += "\nmemory://, aggregate MiB/s by writers: ";
        out += &report
            .concurrency
            .iter()
            .map(|(n, v)| format!("{n}: {v:.1}"))
            .collect::<Vec<_>>()
            .join(", ");
        out += "\n";
    }
    for f in &report.figures {
        out += &format!(
            "{:<60} {:>10.2} {:<6} goal {}\n",
            f.name, f.value, f.unit, f.goal
        );
    }
    out
}

/// An SVG line chart of aggregate throughput against writers.
pub fn svg_chart(points: &[(usize, f64)], ceiling: Option<f64>) -> String {
    let (w, h, left, bottom, top, right) = (640.0, 400.0, 70.0, 50.0, 40.0, 20.0);
    let max_y = points
        .iter()
        .map(|p| p.1)
        .chain(ceiling)
        .fold(1.0f64, f64::max)
        * 1.15;
    let xs: Vec<f64> = points.iter().map(|p| (p.0 as f64).log2()).collect();
    let max_x = xs.iter().cloned().fold(1.0f64, f64::max);
    let px = |x: f64| left + x / max_x * (w - left - right);
    let py = |y: f64| h - bottom - y / max_y * (h - bottom - top);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">sluice memory://: aggregate throughput by concurrent writers</text>\n",
        w / 2.0
    );
    svg += &format!(
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for i in 0..=5 {
        let y = max_y * i as f64 / 5.0;
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{y:.0}</text><line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#ddd\"/>\n",
            left - 6.0,
            py(y) + 4.0,
            py(y),
            w - right,
            py(y)
        );
    }
    for (p, x) in points.iter().zip(&xs) {
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            px(*x),
            h - bottom + 18.0,
            p.0
        );
    }
    svg += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">writers</text>\n<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">MiB/s</text>\n",
        (left + w - right) / 2.0,
        h - 12.0,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0
    );
    if let Some(c) = ceiling {
        svg += &format!(
            "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\" stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#666\">transport ceiling, 1 writer ({c:.0})</text>\n",
            py(c),
            w - right,
            py(c),
            w - right,
            py(c) - 6.0
        );
    }
    let line: Vec<String> = points
        .iter()
        .zip(&xs)
        .map(|(p, x)| format!("{:.1},{:.1}", px(*x), py(p.1)))
        .collect();
    svg += &format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n",
        line.join(" ")
    );
    for (p, x) in points.iter().zip(&xs) {
        svg += &format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#1f77b4\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.0}</text>\n",
            px(*x),
            py(p.1),
            px(*x),
            py(p.1) - 9.0,
            p.1
        );
    }
    svg + "</svg>\n"
}
