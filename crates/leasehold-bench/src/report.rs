//! The report: a table with ratios, JSON, and an SVG chart.

use std::{fmt::Write as _, path::Path};

use plotters::prelude::*;
use serde::Serialize;

use crate::scenarios::Measured;

/// One row: a contender in a scenario, the median of the repetitions.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) scenario: &'static str,
    pub(crate) contender: String,
    pub(crate) median: Measured,
    /// Throughput relative to the raw baseline: the median of the per-repetition ratios.
    pub(crate) ratio: Option<f64>,
    /// For contended rows: hand-off p50 divided by the PING p50.
    pub(crate) hand_off_in_rtts: Option<f64>,
    /// For contended rows: hand-off p50 divided by the floor's (the first contender that
    /// waits), the median of the per-repetition ratios.
    pub(crate) hand_off_to_floor: Option<f64>,
    /// Throughput relative to the fenced floor (Redis), as `ratio`.
    pub(crate) to_fenced: Option<f64>,
    pub(crate) reps: Vec<Measured>,
}

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) backend: &'static str,
    pub(crate) machine: String,
    pub(crate) run_for_ms: u128,
    pub(crate) reps: usize,
    /// What the round trip is (`redis PING`, `postgres SELECT 1`).
    pub(crate) round_trip_name: &'static str,
    pub(crate) round_trip: Measured,
    pub(crate) rows: Vec<Row>,
}

pub(crate) fn table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} round trip: p50 {:.0} us, {:.0} req/s (one task)\n",
        report.round_trip_name, report.round_trip.p50_us, report.round_trip.per_sec
    );
    let _ = writeln!(
        out,
        "| scenario | contender | ops/s | p50 us | p99 us | ratio to raw | ratio to fenced raw | hand-off / round trip p50 | hand-off / floor p50 |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut fairness = String::new();
    for row in &report.rows {
        let ratio = row.ratio.map_or("-".to_owned(), |r| format!("{r:.2}x"));
        let rtts = row
            .hand_off_in_rtts
            .map_or("-".to_owned(), |r| format!("{r:.1}"));
        let to_fenced = row.to_fenced.map_or("-".to_owned(), |r| format!("{r:.2}x"));
        let to_floor = row
            .hand_off_to_floor
            .map_or("-".to_owned(), |r| format!("{r:.2}x"));
        let latency = |v: f64| {
            if v.is_nan() {
                "-".to_owned()
            } else {
                format!("{v:.0}")
            }
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            row.contender,
            row.median.per_sec,
            latency(row.median.p50_us),
            latency(row.median.p99_us),
            ratio,
            to_fenced,
            rtts,
            to_floor
        );
        if let Some(f) = row.median.fairness {
            let _ = writeln!(
                fairness,
                "| {} | {} | {} | {:.0} % | {} / {} | {:.2} | {:.1} | {:.1} | {:.1} |",
                row.scenario,
                row.contender,
                f.hand_offs,
                f.retaken_by_releaser_pct,
                f.min_sections_per_task,
                f.max_sections_per_task,
                worst_balance(&row.reps),
                f.wait_p50_ms,
                f.wait_p99_ms,
                f.worst_wait_ms
            );
        }
    }
    if !fairness.is_empty() {
        let _ = writeln!(out, "\nContended fairness (one key):\n");
        let _ = writeln!(
            out,
            "| scenario | contender | hand-offs | retaken by releaser | min / max sections per task | min / max, worst rep | wait p50 ms | wait p99 ms | worst wait ms |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
        out.push_str(&fairness);
    }
    out
}

/// The lowest min / max sections per task (or process) of any repetition.
fn worst_balance(reps: &[Measured]) -> f64 {
    reps.iter()
        .filter_map(|m| m.fairness)
        .map(|f| f.min_sections_per_task as f64 / f.max_sections_per_task.max(1) as f64)
        .fold(f64::INFINITY, f64::min)
}

/// Bars of throughput ratio per row, one group per scenario.
pub(crate) fn chart(report: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let rows: Vec<&Row> = report.rows.iter().filter(|r| r.ratio.is_some()).collect();
    let height = 60 + 28 * rows.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = rows.iter().filter_map(|r| r.ratio).fold(1.2_f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "throughput relative to the raw baseline (median of per-rep ratios)",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(420)
        .build_cartesian_2d(0.0..max, (0..rows.len()).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => rows.get(*i).map_or(String::new(), |r| {
                format!("{}: {}", r.scenario, r.contender)
            }),
            _ => String::new(),
        })
        .y_labels(rows.len())
        .x_desc("ratio")
        .draw()?;
    chart.draw_series(rows.iter().enumerate().map(|(i, row)| {
        let color = if row.contender.starts_with("leasehold") {
            BLUE
        } else if row.contender.starts_with("raw") {
            BLACK
        } else {
            RED
        };
        let ratio = row.ratio.unwrap_or(0.0);
        {
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (ratio, SegmentValue::Exact(i + 1)),
                ],
                color.mix(0.6).filled(),
            );
            bar.set_margin(3, 3, 0, 0);
            bar
        }
    }))?;
    root.present()?;
    Ok(())
}
