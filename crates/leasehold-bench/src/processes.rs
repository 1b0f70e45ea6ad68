//! The contended scenario across processes: `procs` copies of this binary (`--worker`), each
//! with its own client, contend for one key; the parent merges what they measured.
//!
//! Hand-offs across processes are timed with the wall clock (the only clock two processes can
//! compare without another dependency), in nanoseconds since the Unix epoch: a clock step
//! during a run skews that repetition.

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::{
    contenders::Contender,
    scenarios::{self, Fairness, Measured},
};

/// What one worker tells the parent.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WorkerReport {
    /// (holding since, releasing from) per critical section, wall-clock ns.
    sections: Vec<(u64, u64)>,
    /// From asking to holding, per section, ns.
    waits: Vec<u64>,
}

/// What a worker is told to do.
#[derive(Debug, Clone)]
pub(crate) struct WorkerPlan {
    pub(crate) key: String,
    pub(crate) hold: Duration,
    pub(crate) away: Duration,
    pub(crate) run_for: Duration,
    /// Wall-clock ms when every worker starts, so that none gets a head start.
    pub(crate) start_unix_ms: u64,
}

impl WorkerPlan {
    fn to_args(&self) -> Vec<String> {
        vec![
            "--worker-key".into(),
            self.key.clone(),
            "--worker-plan".into(),
            format!(
                "{},{},{},{}",
                self.hold.as_micros(),
                self.away.as_micros(),
                self.run_for.as_millis(),
                self.start_unix_ms
            ),
        ]
    }

    /// The plan from `--worker-key` and `--worker-plan` (`hold_us,away_us,run_ms,start_unix_ms`).
    pub(crate) fn parse(key: &str, plan: &str) -> Result<Self, String> {
        let numbers: Vec<u64> = plan
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--worker-plan {plan:?}: {e}"))?;
        let [hold, away, run, start] = numbers[..] else {
            return Err(format!(
                "--worker-plan {plan:?}: expected hold_us,away_us,run_ms,start_unix_ms"
            ));
        };
        Ok(Self {
            key: key.to_owned(),
            hold: Duration::from_micros(hold),
            away: Duration::from_micros(away),
            run_for: Duration::from_millis(run),
            start_unix_ms: start,
        })
    }
}

fn unix_ns() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

/// The worker's side: contend as planned, print a [`WorkerReport`] as one JSON line.
pub(crate) async fn work(contender: &dyn Contender, plan: &WorkerPlan) {
    let start = UNIX_EPOCH + Duration::from_millis(plan.start_unix_ms);
    if let Ok(until) = start.duration_since(SystemTime::now()) {
        tokio::time::sleep(until).await;
    }
    let started = Instant::now();
    let mut report = WorkerReport {
        sections: Vec::new(),
        waits: Vec::new(),
    };
    while started.elapsed() < plan.run_for {
        let asked = Instant::now();
        let held = contender
            .acquire(&plan.key)
            .await
            .expect("a waiting contender");
        let holding = unix_ns();
        let waited = u64::try_from(asked.elapsed().as_nanos()).unwrap_or(u64::MAX);
        scenarios::spin(plan.hold).await;
        let releasing = unix_ns();
        contender.release(held).await;
        report.sections.push((holding, releasing));
        report.waits.push(waited);
        scenarios::spin(plan.away).await;
    }
    println!("{}", serde_json::to_string(&report).expect("worker report"));
}

/// The parent's side: `procs` workers of the contender named `contender` on one key; fairness and hand-offs
/// from all of them.
pub(crate) async fn contended(
    contender: &str,
    redis_url: &str,
    plan: WorkerPlan,
    procs: usize,
) -> Measured {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let mut children = Vec::new();
    for _ in 0..procs {
        let child = tokio::process::Command::new(&exe)
            .arg("--redis-url")
            .arg(redis_url)
            .arg("--worker")
            .arg(contender)
            .args(plan.to_args())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start a bench worker");
        children.push(child);
    }
    let mut reports = Vec::new();
    for mut child in children {
        let mut out = String::new();
        let mut stdout = child.stdout.take().expect("piped");
        let read = stdout.read_to_string(&mut out);
        tokio::time::timeout(plan.run_for + Duration::from_secs(30), read)
            .await
            .expect("a bench worker finished")
            .expect("worker output");
        let status = child.wait().await.expect("worker exit");
        assert!(status.success(), "bench worker failed: {status}");
        let report: WorkerReport = serde_json::from_str(out.trim()).expect("worker report");
        reports.push(report);
    }
    merge(&reports)
}

fn merge(reports: &[WorkerReport]) -> Measured {
    // Every section, by process, in the order they held the lock.
    let mut sections: Vec<(u64, u64, usize)> = reports
        .iter()
        .enumerate()
        .flat_map(|(p, r)| r.sections.iter().map(move |&(h, l)| (h, l, p)))
        .collect();
    sections.sort_unstable();
    let mut hand_offs = Vec::new();
    let mut retaken = 0u64;
    for pair in sections.windows(2) {
        let ((_, releasing, from), (holding, _, to)) = ((pair[0]), (pair[1]));
        if from == to {
            retaken += 1;
        } else {
            hand_offs.push(Duration::from_nanos(holding.saturating_sub(releasing)));
        }
    }
    let first = sections.first().map_or(0, |s| s.0);
    let last = sections.last().map_or(0, |s| s.1);
    let elapsed = Duration::from_nanos(last.saturating_sub(first)).max(Duration::from_millis(1));
    let per_task: Vec<u64> = reports.iter().map(|r| r.sections.len() as u64).collect();
    let mut waits: Vec<Duration> = reports
        .iter()
        .flat_map(|r| r.waits.iter().map(|&w| Duration::from_nanos(w)))
        .collect();
    waits.sort_unstable();
    let total = sections.len() as u64;
    let count = hand_offs.len() as u64;
    let mut result = scenarios::measured(total, elapsed, hand_offs);
    result.fairness = Some(Fairness {
        retaken_by_releaser_pct: 100.0 * retaken as f64 / total.max(1) as f64,
        min_sections_per_task: per_task.iter().copied().min().unwrap_or(0),
        max_sections_per_task: per_task.iter().copied().max().unwrap_or(0),
        wait_p50_ms: scenarios::percentile(&waits, 0.50) / 1e3,
        wait_p99_ms: scenarios::percentile(&waits, 0.99) / 1e3,
        worst_wait_ms: waits.last().map_or(0.0, |w| w.as_secs_f64() * 1e3),
        hand_offs: count,
    });
    result
}

/// A worker's contender: the one of the bench's Redis contenders with this name.
pub(crate) fn pick(contenders: Vec<Arc<dyn Contender>>, name: &str) -> Option<Arc<dyn Contender>> {
    contenders.into_iter().find(|c| c.name() == name)
}
