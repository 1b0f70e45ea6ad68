//! `lockcheck`: worker processes contend for locks on a backend while a nemesis pauses and kills
//! them; a checker reads their histories and reports violations.
//!
//! ```sh
//! cargo run -p leasehold-tests --bin lockcheck -- --backend sqlite --duration 20s --seed 7
//! ```
//!
//! Exits 0 when a real backend shows no violation, or when a deliberately broken one
//! (`--broken`) is caught; 1 otherwise.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Child, Command, ExitCode},
    time::Duration,
};

use clap::Parser;
use leasehold_tests::harness::{
    backend::Broken,
    checker::check,
    history::{monotonic_ns, Event},
    resource, worker,
};
use nix::{sys::signal::Signal, unistd::Pid};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// sqlite, redis, postgres or postgres-advisory (servers from LEASEHOLD_*_URL).
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
    /// Faults to inject: any of pause, kill (comma-separated), or none.
    #[arg(long, default_value = "pause,kill")]
    faults: String,
    /// A deliberately broken backend, for the negative controls: extend-blind, release-any.
    #[arg(long, default_value = "none")]
    broken: String,
    /// Where histories and the report go (default: a temp dir).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Fault {
    kind: &'static str,
    worker: u32,
    start_ns: u64,
    end_ns: u64,
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
    faults: HashMap<&'static str, u64>,
    findings: leasehold_tests::harness::checker::Findings,
    violations: u64,
    verdict: &'static str,
}

fn url_for(backend: &str, out: &std::path::Path) -> Option<String> {
    let env =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let pg = env(
        "LEASEHOLD_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    Some(match backend {
        "sqlite" => format!("sqlite://{}", out.join("locks.db").display()),
        "redis" => env("LEASEHOLD_REDIS_URL", "redis://127.0.0.1:6379"),
        "postgres" => pg,
        "postgres-advisory" => pg.replacen("postgres://", "postgres+advisory://", 1),
        _ => return None,
    })
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
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
            "lockcheck: unknown --broken {:?} (none, extend-blind, release-any)",
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
            "lockcheck: unknown --backend {:?} (sqlite, redis, postgres, postgres-advisory)",
            args.backend
        );
        return ExitCode::from(2);
    };
    let socket = out.join("resource.sock");
    let (state, _server) = match resource::serve(&socket) {
        Ok(served) => served,
        Err(error) => {
            eprintln!("lockcheck: cannot serve the resource: {error}");
            return ExitCode::from(2);
        }
    };
    let until_ns = monotonic_ns() + u64::try_from(args.duration.as_nanos()).unwrap_or(u64::MAX);
    let Ok(this) = std::env::current_exe() else {
        eprintln!("lockcheck: cannot find its own executable");
        return ExitCode::from(2);
    };
    let spawn = |worker: u32, life: u32| -> std::io::Result<Child> {
        Command::new(&this)
            .arg("worker")
            .args([
                "--url",
                &url,
                "--worker",
                &worker.to_string(),
                "--life",
                &life.to_string(),
            ])
            .args([
                "--keys",
                &args.keys.to_string(),
                "--ttl-ms",
                &args.ttl.as_millis().to_string(),
            ])
            .args([
                "--until-ns",
                &until_ns.to_string(),
                "--seed",
                &args.seed.to_string(),
            ])
            .arg("--history")
            .arg(out.join(format!("history-{worker}-{life}.jsonl")))
            .arg("--socket")
            .arg(&socket)
            .args(["--broken", &args.broken])
            .spawn()
    };
    let mut children: Vec<(Child, u32)> = Vec::new();
    for worker in 0..args.workers {
        match spawn(worker, 0) {
            Ok(child) => children.push((child, 0)),
            Err(error) => {
                eprintln!("lockcheck: cannot start a worker: {error}");
                return ExitCode::from(2);
            }
        }
    }

    // The nemesis: a seeded schedule of faults, stopped one wait + ttl before the end so the
    // last stretch shows recovery.
    let kinds: Vec<&'static str> = ["pause", "kill"]
        .into_iter()
        .filter(|k| args.faults.contains(k))
        .collect();
    let mut rng = Rng(args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut faults = Vec::new();
    let mut deaths: HashMap<(u32, u32), u64> = HashMap::new();
    let quiet_from = until_ns.saturating_sub(u64::try_from((args.ttl * 3).as_nanos()).unwrap_or(0));
    while !kinds.is_empty() && monotonic_ns() < quiet_from {
        tokio::time::sleep(Duration::from_millis(1_000 + rng.below(1_500))).await;
        if monotonic_ns() >= quiet_from {
            break;
        }
        let kind = kinds[rng.below(kinds.len() as u64) as usize];
        let worker = rng.below(u64::from(args.workers)) as usize;
        let start_ns = monotonic_ns();
        let (child, life) = &mut children[worker];
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
        if kind == "pause" {
            // Past its ttl: the worker wakes up believing it still holds its lock.
            let _ = nix::sys::signal::kill(pid, Signal::SIGSTOP);
            tokio::time::sleep(args.ttl * 3 / 2).await;
            let _ = nix::sys::signal::kill(pid, Signal::SIGCONT);
        } else {
            // Its beliefs end when the signal is sent: a lock freed by its death (advisory locks
            // go with the connection) can only be granted after that.
            deaths.insert((worker as u32, *life), start_ns);
            let _ = child.kill();
            let _ = child.wait();
            *life += 1;
            match spawn(worker as u32, *life) {
                Ok(restarted) => *child = restarted,
                Err(error) => eprintln!("lockcheck: cannot restart worker {worker}: {error}"),
            }
        }
        faults.push(Fault {
            kind,
            worker: worker as u32,
            start_ns,
            end_ns: monotonic_ns(),
        });
    }
    for (child, _) in &mut children {
        let _ = child.wait();
    }

    let mut events: Vec<Event> = Vec::new();
    let Ok(entries) = std::fs::read_dir(&out) else {
        eprintln!("lockcheck: cannot read {}", out.display());
        return ExitCode::from(2);
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("history-") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            events.extend(
                text.lines()
                    .filter_map(|line| serde_json::from_str(line).ok()),
            );
        }
    }
    let counters: HashMap<String, (u64, u64)> = state
        .lock()
        .await
        .iter()
        .map(|(key, s)| (key.clone(), (s.counter, s.rejected)))
        .collect();
    let findings = check(&events, &counters, &deaths);
    let violations = findings.violations();
    let real = args.broken == "none";
    let passed = if real {
        violations == 0
    } else {
        violations > 0
    };
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
        faults: by_kind,
        findings,
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
    let f = &report.findings;
    println!(
        "lockcheck {} (broken: {}) seed {} {:?} workers {} keys {} ttl {:?}\n  operations {:?}\n  holds {} (expired on arrival {})  faults {:?}\n  validity overlaps {}  fence violations {}  lost updates {}  stale writes rejected {}\n  => {}  ({})",
        report.backend, report.broken, report.seed, args.duration, report.workers, report.keys, args.ttl,
        f.operations, f.holds, f.expired_on_arrival, report.faults, f.validity_overlaps, f.fence_violations, f.lost_updates,
        f.stale_writes_rejected, report.verdict, out.join("report.json").display()
    );
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
