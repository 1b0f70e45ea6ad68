//! `lockcheck`: worker processes contend for locks on a backend while a nemesis pauses and kills
//! them, and (for Redis and PostgreSQL) stops, crashes and cuts off a private server behind a
//! TCP proxy; a checker reads their histories and reports violations.
//!
//! ```sh
//! cargo run -p leasehold-tests --bin lockcheck -- --backend sqlite --duration 20s --seed 7
//! cargo run -p leasehold-tests --bin lockcheck -- --backend redis --faults all --duration 60s
//! ```
//!
//! Exits 0 when a real backend shows no violation, or when a deliberately broken one
//! (`--broken`) is caught; 1 otherwise.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Command, ExitCode},
    sync::Arc,
    time::Duration,
};

use clap::Parser;
use leasehold::LockKey;
use leasehold_tests::harness::{
    backend::{connect, connect_rw, Broken, WriteSide},
    checker::{check, Context, StoreLoss},
    history::{monotonic_ns, Event},
    nemesis::{self, Workers, DROPS_SESSIONS, LOSES_LOCKS},
    proxy::Proxy,
    resource,
    servers::{Kind, PrivateServer},
    worker,
};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// sqlite, redis, redis-cluster, postgres or postgres-advisory (servers from
    /// LEASEHOLD_*_URL; a private cluster for the cluster faults).
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// How long the workers run.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Seed of the workers' choices and the nemesis.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value_t = 8)]
    workers: u32,
    #[arg(long, default_value_t = 2)]
    keys: u32,
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Faults to inject, comma-separated: pause, kill (workers); server-pause, server-restart,
    /// conn-kill, proxy-delay, proxy-blackhole, proxy-reset (a private server behind a proxy,
    /// Redis and PostgreSQL); pause-write, store-wipe (restart with no data), store-rollback
    /// (restart from an older snapshot) (Redis); primary-kill (SIGKILL, restarted as a replica
    /// after the failover), primary-pause (SIGSTOP past the node timeout), cluster-conn-kill
    /// (every node) (redis-cluster, on a private cluster); or `all`, or `none`.
    #[arg(long, default_value = "pause,kill")]
    faults: String,
    /// `fenced`: the resource's counter only takes writes with the highest fence; `unfenced`:
    /// a plain read-modify-write, where any overlap shows up as a lost update.
    #[arg(long, default_value = "fenced")]
    resource: String,
    /// A deliberately broken backend, for the negative controls: extend-blind, release-any
    /// (sqlite), get-then-set, fences-restart-at-1 (redis); with --rw: writes-shared (a write
    /// taken as a read), reads-apart (reads taken on another key).
    #[arg(long, default_value = "none")]
    broken: String,
    /// Read/write mode: the keys are read/write locks; three of four turns read (and check that
    /// the resource accepts no write while their lease is valid), the others write (and check
    /// exclusion, fences and lost updates as the mutex workers do).
    #[arg(long)]
    rw: bool,
    /// Where histories and the report go (default: a temp dir).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    backend: String,
    broken: String,
    seed: u64,
    duration_ms: u128,
    workers: u32,
    keys: u32,
    ttl_ms: u128,
    resource: String,
    rw: bool,
    faults: HashMap<&'static str, u64>,
    findings: leasehold_tests::harness::checker::Findings,
    /// Keys still held one ttl after every worker stopped (a lock outliving its ttl).
    keys_stuck: u64,
    violations: u64,
    verdict: &'static str,
}

fn url_for(backend: &str, out: &std::path::Path) -> Option<String> {
    let pg = leasehold_testkit::env::postgres_url();
    Some(match backend {
        "sqlite" => format!("sqlite://{}", out.join("locks.db").display()),
        "redis" => leasehold_testkit::env::redis_url(),
        "redis-cluster" => leasehold_testkit::env::redis_cluster_url(),
        "postgres" => pg,
        "postgres-advisory" => pg.replacen("postgres://", "postgres+advisory://", 1),
        "etcd" => leasehold_testkit::env::etcd_url(),
        _ => return None,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    // `lockcheck worker ...`: one worker process, started by the main process.
    if std::env::args().nth(1).as_deref() == Some("worker") {
        let args = worker::WorkerArgs::parse_from(std::env::args().skip(1));
        return worker::run(args).await;
    }
    let args = Args::parse();
    if Broken::parse(&args.broken).is_none() {
        eprintln!(
            "lockcheck: unknown --broken {:?} (none, extend-blind, release-any, get-then-set, \
             fences-restart-at-1, writes-shared, reads-apart)",
            args.broken
        );
        return ExitCode::from(2);
    }
    let out = args.out.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "lockcheck-{}-{}-{}",
            args.backend,
            args.broken,
            std::process::id()
        ))
    });
    let _ = std::fs::remove_dir_all(&out);
    if let Err(error) = std::fs::create_dir_all(&out) {
        eprintln!("lockcheck: cannot create {}: {error}", out.display());
        return ExitCode::from(2);
    }
    let Some(url) = url_for(&args.backend, &out) else {
        eprintln!(
            "lockcheck: unknown --backend {:?} (sqlite, redis, redis-cluster, postgres, \
             postgres-advisory, etcd)",
            args.backend
        );
        return ExitCode::from(2);
    };
    let fenced = match args.resource.as_str() {
        "fenced" => true,
        "unfenced" => false,
        other => {
            eprintln!("lockcheck: unknown --resource {other:?} (fenced, unfenced)");
            return ExitCode::from(2);
        }
    };
    let server_kind = match args.backend.as_str() {
        "redis" => Some(Kind::Redis),
        "redis-cluster" => Some(Kind::RedisCluster),
        "postgres" | "postgres-advisory" => Some(Kind::Postgres),
        "etcd" => Some(Kind::Etcd),
        _ => None,
    };
    let kinds = match nemesis::parse(&args.faults, server_kind) {
        Ok(kinds) => kinds,
        Err(error) => {
            eprintln!("lockcheck: {error}");
            return ExitCode::from(2);
        }
    };
    // Faults on the server need a server of our own, behind our proxy.
    let needs_server = kinds.iter().any(|k| !matches!(*k, "pause" | "kill"));
    let (mut server, proxy, url) = match server_kind.filter(|_| needs_server) {
        None => (None, None, url),
        Some(kind) => match own_server(kind, &url).await {
            Ok((server, proxy, url)) => (Some(server), proxy, url),
            Err(error) => {
                eprintln!("lockcheck: cannot start a private server: {error}");
                return ExitCode::from(2);
            }
        },
    };
    let socket = out.join("resource.sock");
    let (state, _resource) = match resource::serve(&socket, fenced) {
        Ok(served) => served,
        Err(error) => {
            eprintln!("lockcheck: cannot serve the resource: {error}");
            return ExitCode::from(2);
        }
    };
    // Fails early, with the backend's own message, when it cannot be reached.
    let checker_lock = if args.rw {
        connect_rw(&url, Broken::None)
            .await
            .map(|rw| Arc::new(WriteSide(rw)) as Arc<dyn leasehold::DistributedLock>)
    } else {
        connect(&url, Broken::None).await
    };
    let checker_lock = match checker_lock {
        Ok(lock) => lock,
        Err(error) => {
            eprintln!("lockcheck: cannot reach the backend at {url}: {error}; start the servers with scripts/services.sh");
            return ExitCode::from(2);
        }
    };
    let until_ns = monotonic_ns() + u64::try_from(args.duration.as_nanos()).unwrap_or(u64::MAX);
    let Ok(this) = std::env::current_exe() else {
        eprintln!("lockcheck: cannot find its own executable");
        return ExitCode::from(2);
    };
    let (worker_url, keys, ttl_ms) = (url.clone(), args.keys, args.ttl.as_millis());
    let (seed, broken, dir, rw) = (args.seed, args.broken.clone(), out.clone(), args.rw);
    let mut workers = Workers {
        children: Vec::new(),
        deaths: HashMap::new(),
        keys: args.keys,
        spawn: Box::new(move |worker, life| {
            Command::new(&this)
                .arg("worker")
                .args(["--url", &worker_url, "--worker", &worker.to_string()])
                .args(["--life", &life.to_string(), "--keys", &keys.to_string()])
                .args([
                    "--ttl-ms",
                    &ttl_ms.to_string(),
                    "--until-ns",
                    &until_ns.to_string(),
                ])
                .args(["--seed", &seed.to_string(), "--broken", &broken])
                .arg("--history")
                .arg(dir.join(format!("history-{worker}-{life}.jsonl")))
                .arg("--socket")
                .arg(dir.join("resource.sock"))
                .args(rw.then_some("--rw"))
                .spawn()
        }),
    };
    for worker in 0..args.workers {
        match (workers.spawn)(worker, 0) {
            Ok(child) => workers.children.push((child, 0)),
            Err(error) => {
                eprintln!("lockcheck: cannot start a worker: {error}");
                return ExitCode::from(2);
            }
        }
    }

    // Faults stop for the last quarter of the run (at least one wait + ttl), so the last
    // stretch shows recovery.
    let quiet = (args.duration / 4).max(args.ttl * 3);
    let quiet_from_ns = until_ns.saturating_sub(u64::try_from(quiet.as_nanos()).unwrap_or(0));
    let faults = nemesis::run(
        &kinds,
        args.seed,
        args.ttl,
        quiet_from_ns,
        &mut workers,
        server.as_mut(),
        proxy.as_ref(),
    )
    .await;
    for (child, _) in &mut workers.children {
        let _ = child.wait();
    }
    let keys_stuck = stuck_keys(checker_lock.as_ref(), args.keys, args.ttl).await;

    let events = match read_histories(&out) {
        Ok(events) => events,
        Err(error) => {
            eprintln!(
                "lockcheck: cannot read the histories in {}: {error}",
                out.display()
            );
            return ExitCode::from(2);
        }
    };
    let counters: HashMap<String, (u64, u64)> = state
        .lock()
        .await
        .iter()
        .map(|(key, s)| (key.clone(), (s.counter, s.rejected)))
        .collect();
    let context = Context {
        deaths: workers.deaths.clone(),
        session_losses: faults
            .iter()
            .filter(|f| DROPS_SESSIONS.contains(&f.kind))
            .map(|f| (f.start_ns, f.end_ns))
            .collect(),
        store_losses: faults
            .iter()
            .filter(|f| LOSES_LOCKS.contains(&f.kind))
            .map(|f| StoreLoss {
                keys: f.keys.clone(),
                ..StoreLoss::all(f.start_ns, f.end_ns)
            })
            .collect(),
        lost_with_connection: checker_lock.capabilities().lost_with_connection,
        expiry_slack_ns: u64::try_from(checker_lock.capabilities().expiry_slack.as_nanos())
            .unwrap_or(u64::MAX),
        fenced,
        // The liveness checks start once the last fault is over and the clients had two ttl
        // to reconnect and resubscribe (a restart that ended just before the quiet stretch
        // leaves waiters polling until then).
        quiet_from_ns: faults
            .iter()
            .map(|f| f.end_ns + 2 * u64::try_from(args.ttl.as_nanos()).unwrap_or(0))
            .fold(quiet_from_ns, u64::max),
    };
    let findings = check(&events, &counters, &context);
    let violations = findings.violations() + keys_stuck;
    let real = args.broken == "none";
    // A negative control is caught only by the finding its flaw must cause.
    let caught = match args.broken.as_str() {
        "fences-restart-at-1" => findings.fence_violations > 0,
        "get-then-set" => findings.validity_overlaps > 0,
        // Writers beside writers and readers: both the writers' and the readers' checks see it.
        "writes-shared" => {
            findings.validity_overlaps > 0
                && findings.reads_overlapping_writes > 0
                && findings.writes_seen_by_readers > 0
        }
        // Readers beside writers: the validity check, and (unfenced, where a reader's fence
        // floor cannot hide it) the readers' own look at the resource.
        "reads-apart" => {
            findings.reads_overlapping_writes > 0 && (fenced || findings.writes_seen_by_readers > 0)
        }
        _ => violations > 0,
    };
    let passed = if real { violations == 0 } else { caught };
    let mut by_kind: HashMap<&'static str, u64> = HashMap::new();
    for fault in &faults {
        *by_kind.entry(fault.kind).or_default() += 1;
    }
    let report = Report {
        backend: args.backend.clone(),
        broken: args.broken.clone(),
        seed: args.seed,
        duration_ms: args.duration.as_millis(),
        workers: args.workers,
        keys: args.keys,
        ttl_ms: args.ttl.as_millis(),
        resource: args.resource.clone(),
        rw: args.rw,
        faults: by_kind,
        findings,
        keys_stuck,
        violations,
        verdict: match (real, passed) {
            (true, true) => "no violation found",
            (true, false) => "VIOLATIONS FOUND",
            (false, true) => "negative control caught",
            (false, false) => "NEGATIVE CONTROL NOT CAUGHT: the checker is blind",
        },
    };
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    let _ = std::fs::write(out.join("report.json"), &json);
    let _ = std::fs::write(
        out.join("faults.json"),
        serde_json::to_string_pretty(&faults).unwrap_or_default(),
    );
    print_summary(&report, &args, &out);
    drop(proxy);
    drop(server);
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Starts a private server of `kind` and a proxy in front of it; returns them and the URL of
/// the backend (same scheme as `shared_url`) through the proxy.
async fn own_server(
    kind: Kind,
    shared_url: &str,
) -> std::io::Result<(PrivateServer, Option<Proxy>, String)> {
    let server = tokio::task::spawn_blocking(move || PrivateServer::start(kind))
        .await
        .map_err(std::io::Error::other)??;
    if matches!(kind, Kind::RedisCluster | Kind::Etcd) {
        // Clients follow the addresses the nodes announce (Redis Cluster), or balance over
        // every member (etcd): no proxy in front.
        let url = server.url();
        return Ok((server, None, url));
    }
    let proxy = Proxy::start(([127, 0, 0, 1], server.port()).into()).await?;
    let through = server.url().replace(
        &format!(":{}", server.port()),
        &format!(":{}", proxy.addr.port()),
    );
    // Keep the scheme the backend was asked for (postgres+advisory://).
    let scheme = shared_url.split("://").next().unwrap_or("redis");
    let rest = through.split_once("://").map_or("", |(_, rest)| rest);
    Ok((server, Some(proxy), format!("{scheme}://{rest}")))
}

/// After every worker stopped: how many keys cannot be taken within one ttl (plus a margin)
/// by a fresh caller, i.e. locks that outlive their ttl.
async fn stuck_keys(lock: &dyn leasehold::DistributedLock, keys: u32, ttl: Duration) -> u64 {
    let mut stuck = 0;
    for n in 0..keys {
        let Ok(key) = LockKey::new(worker::key_name(u64::from(n))) else {
            continue;
        };
        match lock.acquire(&key, ttl, ttl + Duration::from_secs(2)).await {
            Ok(lease) => {
                let _ = lock.release(lease).await;
            }
            Err(error) => {
                eprintln!("lockcheck: key {key} still held after every worker stopped: {error}");
                stuck += 1;
            }
        }
    }
    stuck
}

fn read_histories(out: &std::path::Path) -> std::io::Result<Vec<Event>> {
    let mut events = Vec::new();
    for entry in std::fs::read_dir(out)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("history-") {
            let text = std::fs::read_to_string(entry.path())?;
            events.extend(
                text.lines()
                    .filter_map(|line| serde_json::from_str::<Event>(line).ok()),
            );
        }
    }
    Ok(events)
}

fn print_summary(report: &Report, args: &Args, out: &std::path::Path) {
    let f = &report.findings;
    println!(
        "lockcheck {}{} (broken: {}, resource: {}) seed {} {:?} workers {} keys {} ttl {:?}\n  operations {:?}\n  holds {} (expired on arrival {})  faults {:?}",
        report.backend, if report.rw { " --rw" } else { "" }, report.broken, report.resource, report.seed, args.duration, report.workers,
        report.keys, args.ttl, f.operations, f.holds, f.expired_on_arrival, report.faults
    );
    println!(
        "  validity overlaps {}  fence violations {}  lost updates {}{}  keys stuck {}  stale writes rejected {}",
        f.validity_overlaps, f.fence_violations, f.lost_updates,
        if f.fenced { "" } else { " (unfenced: not a violation)" },
        report.keys_stuck, f.stale_writes_rejected
    );
    println!(
        "  leases lost with their session {} (overlaps from that {})  with the store {} (overlaps from that {})  reacquire after kill ms p50 {:.0} max {:.0} (n {})  loss told after ms p50 {:.0} max {:.0} (n {})  workers granted after faults {}/{}",
        f.leases_lost_with_session, f.overlaps_after_session_loss,
        f.leases_lost_with_store, f.overlaps_after_store_loss,
        f.reacquire_after_kill_ms.p50, f.reacquire_after_kill_ms.max, f.reacquire_after_kill_ms.count,
        f.loss_detected_after_ms.p50, f.loss_detected_after_ms.max, f.loss_detected_after_ms.count,
        f.workers_granted_after_faults, report.workers
    );
    println!(
        "  waits that missed a free key after the faults {} (longest free gap while waiting {:.0} ms)",
        f.waits_missed_a_free_key, f.longest_free_gap_while_waiting_ms
    );
    if report.rw {
        println!(
            "  rw: read holds {}  reads overlapping writes {}  writes seen by readers {}{}  read/write fence violations {}",
            f.read_holds, f.reads_overlapping_writes, f.writes_seen_by_readers,
            if f.fenced { "" } else { " (unfenced: not a violation)" },
            f.read_fence_violations
        );
    }
    println!(
        "  => {}  ({})",
        report.verdict,
        out.join("report.json").display()
    );
}
