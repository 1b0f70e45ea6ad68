//! `leasehold-bench`: leasehold backends side by side with raw baselines and peer crates, in
//! one run against one server. Prints a table of ratios, writes JSON and an SVG chart.
//!
//! ```sh
//! . scripts/services.sh && cargo run --release -p leasehold-bench -- --help
//! ```

mod contenders;
mod report;
mod scenarios;

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::Parser;
use contenders::{Contender, Leasehold, Raw, Rslock};
use redis::aio::ConnectionManager;
use report::{Report, Row};
use scenarios::Measured;

/// Benchmarks leasehold-redis against a raw `redis` baseline and rslock.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Redis to measure against.
    #[arg(
        long,
        env = "LEASEHOLD_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// How long each scenario runs, per repetition (e.g. 3s, 500ms).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Repetitions; the report shows the median.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/redis.json")]
    json: PathBuf,
    /// Where to write the SVG chart.
    #[arg(long, default_value = "target/bench/redis.svg")]
    svg: PathBuf,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let client = redis::Client::open(args.redis_url.as_str())?;
    let conn = ConnectionManager::new(client.clone()).await?;
    let leasehold = leasehold_redis::RedisLock::connect(&args.redis_url).await?;
    let mut rslock_tuned = rslock::LockManager::new(vec![args.redis_url.clone()]);
    rslock_tuned.set_retry(3, Duration::from_millis(1));
    let contenders: Vec<Arc<dyn Contender>> = vec![
        Arc::new(Raw::new(conn.clone())),
        Arc::new(Leasehold::new(leasehold)),
        Arc::new(Rslock {
            manager: rslock::LockManager::new(vec![args.redis_url.clone()]),
            label: "default retry: 3 x 200 ms",
        }),
        Arc::new(Rslock {
            manager: rslock_tuned,
            label: "tuned retry: 3 x 1 ms",
        }),
    ];
    let tag = format!("{}", std::process::id());
    let mut pings = Vec::new();
    let mut runs: Vec<(&'static str, usize, Vec<Measured>)> = Vec::new();
    let mut record = |scenario: &'static str, index: usize, m: Measured| match runs
        .iter_mut()
        .find(|(s, i, _)| *s == scenario && *i == index)
    {
        Some((_, _, reps)) => reps.push(m),
        None => runs.push((scenario, index, vec![m])),
    };
    for rep in 0..args.reps {
        eprintln!("rep {}/{}", rep + 1, args.reps);
        pings.push(scenarios::ping(&conn, args.duration).await);
        // Rotate the order each repetition, so no contender always runs first or last.
        for step in 0..contenders.len() {
            let index = (step + rep) % contenders.len();
            let contender = &contenders[index];
            eprintln!("  {}", contender.name());
            record(
                "1 task, uncontended",
                index,
                scenarios::uncontended(contender.as_ref(), &tag, args.duration).await,
            );
            record(
                "64 tasks, distinct keys",
                index,
                scenarios::distinct_keys(Arc::clone(contender), &tag, 64, args.duration).await,
            );
            if contender.can_wait() {
                let hold = Duration::from_millis(1);
                let m =
                    scenarios::contended(Arc::clone(contender), &tag, 8, hold, args.duration).await;
                record("8 tasks, one key, 1 ms hold", index, m);
            }
        }
    }
    let ping = median(&pings);
    let mut rows = Vec::new();
    for (scenario, index, reps) in &runs {
        let median = median(reps);
        let baseline = runs
            .iter()
            .find(|(s, i, _)| s == scenario && *i == 0)
            .map(|(_, _, reps)| reps);
        // Ratios are taken within each repetition (same moment, same machine state); the
        // report shows the median of those.
        let ratio = baseline.map(|base| {
            let mut ratios: Vec<f64> = reps
                .iter()
                .zip(base)
                .map(|(m, b)| m.per_sec / b.per_sec)
                .collect();
            ratios.sort_by(f64::total_cmp);
            ratios[ratios.len() / 2]
        });
        let contended = median.fairness.is_some();
        rows.push(Row {
            scenario,
            contender: contenders[*index].name(),
            median,
            ratio,
            hand_off_in_rtts: contended.then(|| median.p50_us / ping.p50_us),
            reps: reps.clone(),
        });
    }
    let report = Report {
        machine: machine(),
        redis_url: args
            .redis_url
            .split('@')
            .next_back()
            .unwrap_or_default()
            .to_owned(),
        run_for_ms: args.duration.as_millis(),
        reps: args.reps,
        ping,
        rows,
    };
    println!("{}", report::table(&report));
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    if let Some(dir) = args.svg.parent() {
        std::fs::create_dir_all(dir)?;
    }
    report::chart(&report, &args.svg)?;
    eprintln!("wrote {} and {}", args.json.display(), args.svg.display());
    Ok(())
}

/// The repetition with the median throughput.
fn median(reps: &[Measured]) -> Measured {
    let mut sorted = reps.to_vec();
    sorted.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
    sorted[sorted.len() / 2]
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}
