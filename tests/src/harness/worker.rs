//! One `lockcheck` worker process (`lockcheck worker ...`): acquire, fenced write, fenced
//! increment, hold (sometimes past the ttl, sometimes extending), release; every operation
//! appended to its history.

use std::{
    fs::OpenOptions,
    io::Write,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::Parser;
use std::sync::Arc;

use leasehold::{DistributedLock, DistributedRwLock, Lease, LockError, LockKey};

use super::{
    backend::{connect, connect_rw, Broken, WriteSide},
    history::{instant_ns, monotonic_ns, Event, Op, Outcome},
    resource::Client,
    rng::Rng,
};

/// The worker's arguments (given by `lockcheck`).
#[derive(Debug, Parser)]
pub struct WorkerArgs {
    /// Backend URL (see `backend::connect`).
    #[arg(long)]
    url: String,
    /// This worker's number.
    #[arg(long)]
    worker: u32,
    /// Its incarnation.
    #[arg(long)]
    life: u32,
    /// How many keys to choose from.
    #[arg(long)]
    keys: u32,
    /// The lease ttl in ms.
    #[arg(long)]
    ttl_ms: u64,
    /// Stop when the monotonic clock passes this (ns).
    #[arg(long)]
    until_ns: u64,
    /// Seed of its choices.
    #[arg(long)]
    seed: u64,
    /// Its history file.
    #[arg(long)]
    history: PathBuf,
    /// The resource's socket.
    #[arg(long)]
    socket: PathBuf,
    /// A deliberate flaw (none, extend-blind, release-any; with --rw: writes-shared,
    /// reads-apart).
    #[arg(long, default_value = "none")]
    broken: String,
    /// Read/write mode: three of four turns take a read lease (and check that no write lands
    /// while it is valid), the others the write side, as the mutex workers do.
    #[arg(long)]
    rw: bool,
}

struct Recorder {
    file: std::fs::File,
    worker: u32,
    life: u32,
}

impl Recorder {
    fn record(
        &mut self,
        key: &LockKey,
        op: Op,
        lease: Option<&Lease>,
        start_ns: u64,
        outcome: Outcome,
    ) {
        let event = Event {
            worker: self.worker,
            life: self.life,
            key: key.as_str().to_owned(),
            op,
            fence: lease.map_or(0, Lease::fence),
            start_ns,
            end_ns: monotonic_ns(),
            outcome,
            valid_until_ns: lease.map_or(0, |l| instant_ns(l.valid_until())),
            sent_ns: 0,
        };
        self.write(&event);
    }
}

impl Recorder {
    /// A successful acquire, with when its winning request was sent: for a backend that waits
    /// in the server's lock queue, at the start of the wait (its one request); otherwise at the
    /// lease's own send stamp (`valid_until` minus the validity the ttl gives).
    fn record_grant(
        &mut self,
        op: Op,
        key: &LockKey,
        lease: &Lease,
        start_ns: u64,
        queues_in_server: bool,
    ) {
        let validity = lease
            .ttl()
            .saturating_sub(leasehold::backend::ttl::drift(lease.ttl()));
        let sent_ns = if queues_in_server {
            start_ns
        } else {
            instant_ns(lease.valid_until())
                .saturating_sub(u64::try_from(validity.as_nanos()).unwrap_or(0))
        };
        let event = Event {
            worker: self.worker,
            life: self.life,
            key: key.as_str().to_owned(),
            op,
            fence: lease.fence(),
            start_ns,
            end_ns: monotonic_ns(),
            outcome: Outcome::Ok,
            valid_until_ns: instant_ns(lease.valid_until()),
            sent_ns: sent_ns.max(start_ns),
        };
        self.write(&event);
    }

    fn write(&mut self, event: &Event) {
        if let Ok(line) = serde_json::to_string(event) {
            // One write per line, flushed: a killed worker leaves whole lines behind.
            let _ = self.file.write_all(format!("{line}\n").as_bytes());
        }
    }
}

fn outcome_of(result: &Result<bool, LockError>) -> Outcome {
    match result {
        Ok(true) => Outcome::Ok,
        Ok(false) => Outcome::Fail,
        Err(_) => Outcome::Unknown,
    }
}

/// Runs the worker loop until `until_ns`.
pub async fn run(args: WorkerArgs) -> ExitCode {
    let Some(broken) = Broken::parse(&args.broken) else {
        eprintln!("lockcheck_worker: unknown --broken {}", args.broken);
        return ExitCode::from(2);
    };
    let connected = if args.rw {
        connect_rw(&args.url, broken).await.map(|rw| {
            let writer: Arc<dyn DistributedLock> = Arc::new(WriteSide(Arc::clone(&rw)));
            (writer, Some(rw))
        })
    } else {
        connect(&args.url, broken).await.map(|lock| (lock, None))
    };
    let (lock, rw) = match connected {
        Ok(connected) => connected,
        Err(error) => {
            eprintln!("lockcheck_worker: {error}");
            return ExitCode::from(1);
        }
    };
    let (Ok(mut resource), Ok(file)) = (
        Client::connect(&args.socket).await,
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.history),
    ) else {
        eprintln!("lockcheck_worker: cannot reach the resource or the history file");
        return ExitCode::from(1);
    };
    let mut recorder = Recorder {
        file,
        worker: args.worker,
        life: args.life,
    };
    let mut rng = Rng(args.seed ^ (u64::from(args.worker) << 32) ^ u64::from(args.life) | 1);
    let ttl = Duration::from_millis(args.ttl_ms);
    // The advisory strategy sends one request per wait, which then waits in the server's queue.
    let queues_in_server = args.url.starts_with("postgres+advisory://");
    while monotonic_ns() < args.until_ns {
        let key = LockKey::new(key_name(rng.below(u64::from(args.keys)))).expect("key");
        if let Some(rw) = rw.as_deref().filter(|_| rng.below(4) != 0) {
            let mut reader = Reader {
                lock: rw,
                resource: &mut resource,
                recorder: &mut recorder,
                rng: &mut rng,
                ttl,
                queues_in_server,
            };
            reader.read_once(&key).await;
            continue;
        }
        let start = monotonic_ns();
        let mut lease = match lock.acquire(&key, ttl, ttl * 2).await {
            Ok(lease) => lease,
            Err(LockError::Timeout { .. }) => {
                recorder.record(&key, Op::Acquire, None, start, Outcome::Fail);
                continue;
            }
            Err(_) => {
                recorder.record(&key, Op::Acquire, None, start, Outcome::Unknown);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        recorder.record_grant(Op::Acquire, &key, &lease, start, queues_in_server);

        let start = monotonic_ns();
        let reply = resource
            .call(&format!("W {} {}", key.as_str(), lease.fence()))
            .await;
        let written = if matches!(reply.as_deref(), Ok("OK")) {
            Outcome::Ok
        } else {
            Outcome::Fail
        };
        recorder.record(&key, Op::Write, Some(&lease), start, written);

        // Hold: 0 to 1.5 ttl, sometimes extending halfway; a hold past the ttl without a
        // (working) extend is what makes other holders appear.
        let start = monotonic_ns();
        let read = resource.call(&format!("R {}", key.as_str())).await;
        let value: u64 = read
            .ok()
            .and_then(|r| r.strip_prefix("V ").and_then(|v| v.parse().ok()))
            .unwrap_or(0);
        let hold = Duration::from_millis(rng.below(args.ttl_ms * 3 / 2));
        let held_since = Instant::now();
        if rng.below(3) == 0 {
            tokio::time::sleep(hold / 2).await;
            let extend_start = monotonic_ns();
            let extended = lock.extend(&mut lease, ttl).await;
            recorder.record(
                &key,
                Op::Extend,
                Some(&lease),
                extend_start,
                outcome_of(&extended),
            );
        }
        tokio::time::sleep(hold.saturating_sub(held_since.elapsed())).await;
        let set = resource
            .call(&format!(
                "S {} {} {}",
                key.as_str(),
                value + 1,
                lease.fence()
            ))
            .await;
        let incremented = match set.as_deref() {
            Ok("OK") => Outcome::Ok,
            Ok(_) => Outcome::Fail,
            Err(_) => Outcome::Unknown,
        };
        recorder.record(&key, Op::Increment, Some(&lease), start, incremented);

        let start = monotonic_ns();
        let snapshot = lease.clone();
        let released = lock.release(lease).await;
        recorder.record(
            &key,
            Op::Release,
            Some(&snapshot),
            start,
            outcome_of(&released),
        );
    }
    ExitCode::SUCCESS
}

/// A `--rw` worker's reading turn.
struct Reader<'a> {
    lock: &'a dyn DistributedRwLock,
    resource: &'a mut Client,
    recorder: &'a mut Recorder,
    rng: &'a mut Rng,
    ttl: Duration,
    queues_in_server: bool,
}

impl Reader<'_> {
    /// How many writes the resource has accepted for `key`, if it answers.
    async fn sets(&mut self, key: &LockKey) -> Option<u64> {
        let reply = self
            .resource
            .call(&format!("C {}", key.as_str()))
            .await
            .ok()?;
        reply.strip_prefix("V ")?.parse().ok()
    }

    /// Read acquire; a fenced write (which raises the resource's fence floor, so a writer whose
    /// lease ended before this grant can no longer write); a first look at the writes; a hold
    /// of 0 to 1.5 ttl, sometimes extending halfway; a second look; release.
    async fn read_once(&mut self, key: &LockKey) {
        let ttl = self.ttl;
        let start = monotonic_ns();
        let mut lease = match self.lock.acquire_read(key, ttl, ttl * 2).await {
            Ok(lease) => lease,
            Err(error) => {
                let outcome = if matches!(error, LockError::Timeout { .. }) {
                    Outcome::Fail
                } else {
                    Outcome::Unknown
                };
                self.recorder
                    .record(key, Op::ReadAcquire, None, start, outcome);
                if outcome == Outcome::Unknown {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                return;
            }
        };
        self.recorder
            .record_grant(Op::ReadAcquire, key, &lease, start, self.queues_in_server);
        let start = monotonic_ns();
        let floor = self
            .resource
            .call(&format!("W {} {}", key.as_str(), lease.fence()))
            .await;
        let written = if matches!(floor.as_deref(), Ok("OK")) {
            Outcome::Ok
        } else {
            Outcome::Fail
        };
        self.recorder
            .record(key, Op::Write, Some(&lease), start, written);
        let looked = monotonic_ns();
        let first = self.sets(key).await;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let hold = Duration::from_millis(self.rng.below(ttl_ms * 3 / 2));
        let held_since = Instant::now();
        if self.rng.below(3) == 0 {
            tokio::time::sleep(hold / 2).await;
            let start = monotonic_ns();
            let extended = self.lock.extend(&mut lease, ttl).await;
            self.recorder.record(
                key,
                Op::ReadExtend,
                Some(&lease),
                start,
                outcome_of(&extended),
            );
        }
        tokio::time::sleep(hold.saturating_sub(held_since.elapsed())).await;
        let second = self.sets(key).await;
        let check = match (first, second) {
            (Some(a), Some(b)) if a == b => Outcome::Ok,
            (Some(_), Some(_)) => Outcome::Fail,
            _ => Outcome::Unknown,
        };
        self.recorder
            .record(key, Op::ReadCheck, Some(&lease), looked, check);
        let start = monotonic_ns();
        let snapshot = lease.clone();
        let released = self.lock.release(lease).await;
        self.recorder.record(
            key,
            Op::ReadRelease,
            Some(&snapshot),
            start,
            outcome_of(&released),
        );
    }
}

/// The name of the workers' key number `n` (`lockcheck/0` up).
pub fn key_name(n: u64) -> String {
    format!("lockcheck/{n}")
}
