//! `leasehold-bench`: leasehold backends side by side with raw baselines and peer crates, in
//! one run against one server. Prints a table of ratios, writes JSON and an SVG chart.
//!
//! ```sh
//! . scripts/services.sh && cargo run --release -p leasehold-bench -- --help
//! ```

mod cluster;
mod contenders;
mod etcd;
mod fenced;
mod pairs;
mod primitives;
mod processes;
mod pubsub;
mod report;
mod scenarios;

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::Parser;
use contenders::{Contender, Leasehold, Ping, Raw, RawSqlx, RoundTrip, Rslock, SelectOne};
use fenced::FencedRaw;
use leasehold_postgres::{PostgresAdvisoryLock, PostgresLock};
use redis::aio::ConnectionManager;
use report::{Report, Row};
use scenarios::{After, Measured};
use sqlx::postgres::PgPoolOptions;

/// Benchmarks leasehold backends against raw baselines and peers, side by side.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Which backends to measure.
    #[arg(long, value_enum, default_value_t = Backend::All)]
    backend: Backend,
    /// Redis to measure against.
    #[arg(
        long,
        env = "LEASEHOLD_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// The Redis Cluster to measure against (`--backend redis-cluster`).
    #[arg(
        long,
        env = "LEASEHOLD_REDIS_CLUSTER_URL",
        default_value = "redis+cluster://127.0.0.1:30001,127.0.0.1:30002,127.0.0.1:30003"
    )]
    redis_cluster_url: String,
    /// PostgreSQL to measure against.
    #[arg(
        long,
        env = "LEASEHOLD_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// The etcd cluster to measure against (`--backend etcd`).
    #[arg(
        long,
        env = "LEASEHOLD_ETCD_URL",
        default_value = "etcd://127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793"
    )]
    etcd_url: String,
    /// How long each scenario runs, per repetition (e.g. 3s, 500ms).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Repetitions; the report shows the median.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Where to write `<backend>.json` and `<backend>.svg`.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
    /// Measure only the contenders whose name contains this (the raw baselines always run),
    /// e.g. to profile one of them.
    #[arg(long)]
    only: Option<String>,
    /// Instead of the benchmark: this many acquire + release pairs through `--pairs-of`, one
    /// after another on one thread (what `scripts/callgrind-pairs.sh` counts instructions of).
    #[arg(long, requires = "pairs_of")]
    pairs: Option<u64>,
    /// The implementation the pairs go through.
    #[arg(long, value_enum)]
    pairs_of: Option<pairs::PairsOf>,
    /// Internal: run as one process of a multi-process scenario, for the Redis contender of
    /// this name.
    #[arg(long, hide = true, requires_all = ["worker_key", "worker_plan"])]
    worker: Option<String>,
    /// Internal: the worker's key.
    #[arg(long, hide = true)]
    worker_key: Option<String>,
    /// Internal: the worker's plan, `hold_us,away_us,run_ms,start_unix_ms`.
    #[arg(long, hide = true)]
    worker_plan: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    Redis,
    /// A Redis Cluster; not part of `all`.
    RedisCluster,
    Postgres,
    /// A 3-member etcd cluster; not part of `all`.
    Etcd,
    /// Redis and PostgreSQL.
    All,
}

/// Pool size for every PostgreSQL contender, so that none has more connections than another.
const PG_POOL: u32 = 16;

const WRITER_HAND_OFF: &str = "writer hand-off, 8 readers churning, 1 ms holds";
const SEMAPHORE_CONTENDED: &str = "semaphore of 4, 16 tasks, 1 ms hold";
/// The mutex scenario the writer hand-off is compared with.
const MUTEX_HAND_OFF: &str = "8 tasks, one key, 1 ms hold";

/// A backend's read/write locks and semaphores for their own contended scenarios, and the
/// name of its mutex contender (whose one-key hand-off they are compared with).
struct Primitives {
    rws: Vec<(&'static str, Arc<dyn leasehold::DistributedRwLock>)>,
    semaphores: Vec<(&'static str, Arc<dyn leasehold::DistributedSemaphore>)>,
    mutex: &'static str,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let (Some(n), Some(of)) = (args.pairs, args.pairs_of) {
        return pairs::run(&args.redis_url, of, n);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let (Some(name), Some(key), Some(plan)) = (&args.worker, &args.worker_key, &args.worker_plan)
    {
        let plan = processes::WorkerPlan::parse(key, plan)?;
        return runtime.block_on(async {
            let contenders = redis_contenders(&args.redis_url).await?;
            let contender = processes::pick(contenders, name)
                .ok_or_else(|| format!("--worker {name:?}: no such Redis contender"))?;
            processes::work(contender.as_ref(), &plan).await;
            Ok(())
        });
    }
    runtime.block_on(bench(args))
}

/// Every Redis contender, the raw baseline first.
async fn redis_contenders(
    url: &str,
) -> Result<Vec<Arc<dyn Contender>>, Box<dyn std::error::Error>> {
    let client = redis::Client::open(url)?;
    let conn = ConnectionManager::new(client).await?;
    let leasehold = leasehold_redis::RedisLock::connect(url).await?;
    let mut rslock_tuned = rslock::LockManager::new(vec![url.to_owned()]);
    rslock_tuned.set_retry(3, Duration::from_millis(1));
    Ok(vec![
        Arc::new(Raw::new(conn.clone())),
        Arc::new(FencedRaw::new(conn.clone())),
        Arc::new(pubsub::RawPubSub::new(url, conn).await?),
        Arc::new(Leasehold::new(leasehold.clone(), "leasehold-redis")),
        Arc::new(primitives::ReadSide {
            lock: Arc::new(leasehold.clone()),
            label: "leasehold-redis read lock",
        }),
        Arc::new(primitives::Permit {
            semaphore: Arc::new(leasehold),
            label: "leasehold-redis semaphore of 4",
        }),
        Arc::new(Rslock {
            manager: rslock::LockManager::new(vec![url.to_owned()]),
            label: "default retry: 3 x 200 ms",
        }),
        Arc::new(Rslock {
            manager: rslock_tuned,
            label: "tuned retry: 3 x 1 ms",
        }),
    ])
}

async fn bench(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&args.out_dir)?;
    if matches!(args.backend, Backend::Redis | Backend::All) {
        let client = redis::Client::open(args.redis_url.as_str())?;
        let conn = ConnectionManager::new(client).await?;
        let contenders = redis_contenders(&args.redis_url).await?;
        let contenders = only(contenders, args.only.as_deref());
        let procs = Some(args.redis_url.as_str());
        let lock = leasehold_redis::RedisLock::connect(&args.redis_url).await?;
        let primitives = Primitives {
            rws: vec![("leasehold-redis read/write lock", Arc::new(lock.clone()))],
            semaphores: vec![("leasehold-redis semaphore", Arc::new(lock))],
            mutex: "leasehold-redis",
        };
        let trip = Ping(conn.clone());
        let report = measure("redis", &trip, &contenders, procs, Some(&primitives), &args).await;
        write(&report, &args)?;
        remove_fence_counters(conn).await?;
    }
    if args.backend == Backend::RedisCluster {
        let (contenders, conn) =
            cluster::contenders(&args.redis_cluster_url, &args.redis_url).await?;
        let contenders = only(contenders, args.only.as_deref());
        let trip = cluster::ClusterPing(conn);
        let report = measure("redis-cluster", &trip, &contenders, None, None, &args).await;
        write(&report, &args)?;
    }
    if args.backend == Backend::Etcd {
        let lock = leasehold_etcd::EtcdLockBuilder::from_url(&args.etcd_url)?
            .connect()
            .await?;
        let client = lock.client().clone();
        let session = client.clone().lease_grant(3_600, None).await?.id();
        let contenders: Vec<Arc<dyn Contender>> = vec![
            Arc::new(etcd::RawEtcd {
                client: client.clone(),
            }),
            Arc::new(Leasehold::new(lock, "leasehold-etcd")),
            Arc::new(etcd::LockRpc {
                client: client.clone(),
                session,
            }),
        ];
        let contenders = only(contenders, args.only.as_deref());
        let trip = etcd::EtcdGet(client.clone());
        let report = measure("etcd", &trip, &contenders, None, None, &args).await;
        write(&report, &args)?;
        client.clone().lease_revoke(session).await?;
    }
    if matches!(args.backend, Backend::Postgres | Backend::All) {
        let pool = || {
            PgPoolOptions::new()
                .max_connections(PG_POOL)
                .connect(&args.postgres_url)
        };
        let lease = PostgresLock::builder().pool(pool().await?).build().await?;
        let advisory = PostgresAdvisoryLock::builder()
            .pool(pool().await?)
            .build()
            .await?;
        let primitives = Primitives {
            rws: vec![
                (
                    "leasehold-postgres read/write lock (lease table)",
                    Arc::new(lease.clone()),
                ),
                (
                    "leasehold-postgres read/write lock (advisory)",
                    Arc::new(advisory.clone()),
                ),
            ],
            semaphores: vec![(
                "leasehold-postgres semaphore (lease table)",
                Arc::new(lease.clone()),
            )],
            mutex: "leasehold-postgres (lease table)",
        };
        let contenders: Vec<Arc<dyn Contender>> = vec![
            Arc::new(RawSqlx::same_as(&lease, pool().await?)),
            Arc::new(Leasehold::new(
                lease.clone(),
                "leasehold-postgres (lease table)",
            )),
            Arc::new(primitives::ReadSide {
                lock: Arc::new(lease.clone()),
                label: "leasehold-postgres read lock",
            }),
            Arc::new(primitives::Permit {
                semaphore: Arc::new(lease),
                label: "leasehold-postgres semaphore of 4",
            }),
            Arc::new(Leasehold::new(advisory, "leasehold-postgres (advisory)")),
            Arc::new(RawSqlx::minimal(pool().await?).await),
        ];
        let contenders = only(contenders, args.only.as_deref());
        let round_trip = SelectOne(pool().await?);
        let report = measure(
            "postgres",
            &round_trip,
            &contenders,
            None,
            Some(&primitives),
            &args,
        )
        .await;
        write(&report, &args)?;
    }
    Ok(())
}

/// Deletes the fence counters this run left in Redis (they have no ttl, by design).
async fn remove_fence_counters(mut conn: ConnectionManager) -> redis::RedisResult<()> {
    for owner in ["leasehold", "fraw"] {
        let pattern = format!("{{{owner}:bench/{}/*}}:fence", std::process::id());
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await?;
        }
    }
    Ok(())
}

/// The raw baselines (the first, and every "raw ..." floor) and the contenders whose name
/// contains `filter`.
fn only(contenders: Vec<Arc<dyn Contender>>, filter: Option<&str>) -> Vec<Arc<dyn Contender>> {
    contenders
        .into_iter()
        .enumerate()
        .filter(|(i, c)| {
            *i == 0 || c.name().starts_with("raw") || filter.is_none_or(|f| c.name().contains(f))
        })
        .map(|(_, c)| c)
        .collect()
}

/// Runs every scenario for every contender, `args.reps` times in rotating order; with
/// `processes_on` (a Redis URL), the multi-process scenarios too; with `primitives`, the
/// read/write and semaphore scenarios after the contenders in each repetition.
async fn measure(
    backend: &'static str,
    round_trip: &dyn RoundTrip,
    contenders: &[Arc<dyn Contender>],
    processes_on: Option<&str>,
    primitives: Option<&Primitives>,
    args: &Args,
) -> Report {
    let mut extra: Vec<(&'static str, &'static str, Vec<Measured>)> = Vec::new();
    let mut record_extra = |scenario: &'static str, name: &'static str, m: Measured| match extra
        .iter_mut()
        .find(|(s, n, _)| *s == scenario && *n == name)
    {
        Some((_, _, reps)) => reps.push(m),
        None => extra.push((scenario, name, vec![m])),
    };
    let tag = format!("{}", std::process::id());
    let mut trips = Vec::new();
    let mut runs: Vec<(&'static str, usize, Vec<Measured>)> = Vec::new();
    let mut record = |scenario: &'static str, index: usize, m: Measured| match runs
        .iter_mut()
        .find(|(s, i, _)| *s == scenario && *i == index)
    {
        Some((_, _, reps)) => reps.push(m),
        None => runs.push((scenario, index, vec![m])),
    };
    for rep in 0..args.reps {
        eprintln!("{backend}: rep {}/{}", rep + 1, args.reps);
        trips.push(scenarios::round_trip(round_trip, args.duration).await);
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
                for (scenario, after) in [
                    ("8 tasks, one key, 1 ms hold", After::Away(Duration::ZERO)),
                    ("8 tasks, one key, 1 ms hold, 1 ms away", After::Away(hold)),
                    ("8 tasks, one key, 1 ms hold, take turns", After::TakeTurns),
                ] {
                    let contender = Arc::clone(contender);
                    let m = scenarios::contended(contender, &tag, 8, hold, after, args.duration);
                    record(scenario, index, m.await);
                }
                if let Some(url) = processes_on {
                    for (scenario, away) in [
                        ("8 processes, one key, 1 ms hold", Duration::ZERO),
                        ("8 processes, one key, 1 ms hold, 1 ms away", hold),
                    ] {
                        let plan = processes::WorkerPlan {
                            key: format!("bench/{tag}/processes/{away:?}"),
                            hold,
                            away,
                            run_for: args.duration,
                            // Time for every worker to start and connect first.
                            start_unix_ms: unix_ms() + 1500,
                        };
                        let name = contender.name();
                        let m = processes::contended(&name, url, plan, 8).await;
                        record(scenario, index, m);
                    }
                }
            }
        }
        if let Some(p) = primitives {
            let only = args.only.as_deref();
            for (name, rw) in p
                .rws
                .iter()
                .filter(|(n, _)| only.is_none_or(|f| n.contains(f)))
            {
                eprintln!("  {name}");
                let key = format!("bench/{tag}/writer-hand-off/{name}");
                let m = primitives::writer_hand_off(Arc::clone(rw), &key, 8, args.duration);
                record_extra(WRITER_HAND_OFF, name, m.await);
            }
            let semaphores = p.semaphores.iter();
            for (name, sem) in semaphores.filter(|(n, _)| only.is_none_or(|f| n.contains(f))) {
                eprintln!("  {name}");
                let key = format!("bench/{tag}/semaphore/{name}");
                let m =
                    primitives::semaphore_contended(Arc::clone(sem), &key, 16, 4, args.duration);
                record_extra(SEMAPHORE_CONTENDED, name, m.await);
            }
        }
    }
    let trip = median(&trips);
    let mutex_hand_offs = primitives.and_then(|p| {
        runs.iter()
            .find(|(s, i, _)| *s == MUTEX_HAND_OFF && contenders[*i].name() == p.mutex)
            .map(|(_, _, reps)| reps.clone())
    });
    let mut rows = Vec::new();
    for (scenario, index, reps) in &runs {
        let median = median(reps);
        let baseline = runs
            .iter()
            .find(|(s, i, _)| s == scenario && *i == 0)
            .map(|(_, _, reps)| reps);
        // Ratios are taken within each repetition (same moment, same machine state); the
        // report shows the median of those.
        let ratio = baseline.map(|base| median_ratio(reps, base, |m| m.per_sec));
        // Throughput against the fenced floor (Redis), where it ran.
        let fenced = runs
            .iter()
            .find(|(s, i, _)| s == scenario && contenders[*i].name().starts_with("fenced raw"))
            .map(|(_, _, fenced)| median_ratio(reps, fenced, |m| m.per_sec));
        let contended = median.fairness.is_some();
        // Hand-offs against the first contender that waits in this scenario (the raw pub/sub
        // floor for Redis), per repetition.
        let floor = runs
            .iter()
            .filter(|(s, _, _)| s == scenario)
            .min_by_key(|(_, i, _)| *i)
            .map(|(_, _, reps)| reps);
        let hand_off_to_floor = floor
            .filter(|_| contended)
            .map(|floor| median_ratio(reps, floor, |m| m.p50_us));
        rows.push(Row {
            scenario,
            contender: contenders[*index].name(),
            median,
            ratio,
            hand_off_in_rtts: contended.then(|| median.p50_us / trip.p50_us),
            hand_off_to_floor,
            to_fenced: fenced,
            reps: reps.clone(),
        });
    }
    for (scenario, name, reps) in extra {
        let median = median(&reps);
        rows.push(Row {
            scenario,
            contender: name.to_owned(),
            median,
            ratio: None,
            hand_off_in_rtts: Some(median.p50_us / trip.p50_us),
            // The writer's hand-off against the same backend's mutex hand-off, per repetition.
            hand_off_to_floor: mutex_hand_offs
                .as_ref()
                .filter(|_| scenario == WRITER_HAND_OFF)
                .map(|mutex| median_ratio(&reps, mutex, |m| m.p50_us)),
            to_fenced: None,
            reps,
        });
    }
    Report {
        backend,
        machine: machine(),
        run_for_ms: args.duration.as_millis(),
        reps: args.reps,
        round_trip_name: round_trip.name(),
        round_trip: trip,
        rows,
    }
}

fn write(report: &Report, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    println!("## {}\n\n{}", report.backend, report::table(report));
    let json = args.out_dir.join(format!("{}.json", report.backend));
    let svg = args.out_dir.join(format!("{}.svg", report.backend));
    std::fs::write(&json, serde_json::to_string_pretty(report)?)?;
    report::chart(report, &svg)?;
    eprintln!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}

/// The median over repetitions of `of(rep) / of(the baseline's same rep)`: ratios taken
/// within one repetition (same moment, same machine state).
fn median_ratio(reps: &[Measured], base: &[Measured], of: impl Fn(&Measured) -> f64) -> f64 {
    let mut ratios: Vec<f64> = reps.iter().zip(base).map(|(m, b)| of(m) / of(b)).collect();
    ratios.sort_by(f64::total_cmp);
    ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The repetition with the median throughput.
fn median(reps: &[Measured]) -> Measured {
    let mut sorted = reps.to_vec();
    sorted.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
    sorted[sorted.len() / 2]
}

fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
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
