//! `leasehold`: hold a distributed lock while a command runs (like `flock(1)`, `consul lock`,
//! `etcdctl lock`) on any leasehold backend; inspect and release locks.

/// `eprintln!` that never panics: a closed stderr (`leasehold -v run .. 2>&1 | head -1`) is
/// ignored, so leasehold goes on supervising its command.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `println!` that never panics on a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod backends;
mod run;
mod watchdog;

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use leasehold::{LeaseKind, LockError, LockKey, LockStatus, Primitive};

use crate::backends::{connect, default_url};

/// Exit codes of `leasehold` itself (a command run under the lock exits with its own).
pub(crate) mod exit {
    /// The lock is held by someone else (`--no-wait`) or the wait timed out.
    pub(crate) const BUSY: u8 = 75;
    /// The lease was lost while the command ran; the command was stopped.
    pub(crate) const LOST: u8 = 76;
    /// Bad input: key, URL, ttl, or an operation the backend does not support.
    pub(crate) const BAD_INPUT: u8 = 64;
    /// The backend failed or could not be reached.
    pub(crate) const BACKEND: u8 = 69;
    /// The command could not be started.
    pub(crate) const CANNOT_START: u8 = 127;
}

const AFTER_HELP: &str = "\
URLs (--url or LEASEHOLD_URL):
  sqlite://PATH          a database file shared by every process on this machine
                         (default, without --url and LEASEHOLD_URL: for root or without
                         HOME /var/lib/leasehold/leasehold.db, else
                         $XDG_STATE_HOME/leasehold/leasehold.db or
                         ~/.local/state/leasehold/leasehold.db; made if missing)
  redis://HOST[:PORT]    Redis; rediss:// for TLS
  redis+cluster://HOST:PORT,HOST:PORT,...
                         Redis Cluster (seeds); rediss+cluster:// for TLS
  postgres://HOST/DB     PostgreSQL (lease table)
  etcd://[USER:PASS@]HOST:PORT,HOST:PORT,...
                         an etcd cluster; etcds:// for TLS (?ca=PATH for its CA)
  memory://              this process only, for trying things out

Exit codes:
  the command's own       when it ran (128 + N if it was killed by signal N)
  75                      lock busy (--no-wait) or --wait timed out
  76                      the lease was lost while the command ran; it was stopped
  64                      bad input (key, URL, duration, unsupported operation)
  69                      the backend failed or could not be reached
  127                     the command could not be started
  1                       release --force: the key was not held

Examples:
  leasehold run nightly-report -- ./report.sh
  leasehold run --no-wait --ttl 1m backup -- pg_dump -f backup.sql app
  leasehold --url redis://127.0.0.1 run --wait 5m migrate -- ./migrate.sh
  leasehold status nightly-report --json
  leasehold status --rw cache-rebuild
  leasehold list jobs/
  leasehold list --semaphore api-
  leasehold release --force nightly-report";

/// Hold a distributed lock while a command runs, on any leasehold backend.
#[derive(Debug, Parser)]
#[command(name = "leasehold", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Backend URL (default: a SQLite file, see below).
    #[arg(long, env = "LEASEHOLD_URL", hide_env_values = true, global = true)]
    url: Option<String>,
    /// Print progress to stderr (waiting, acquired, renewed, released).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run COMMAND while holding KEY; exits with the command's exit code.
    Run(run::RunArgs),
    /// Show whether KEY is held, by how many, its fence and the time left.
    Status {
        /// The lock's key.
        key: String,
        #[command(flatten)]
        of: Of,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (starting with PREFIX), where the backend can list.
    List {
        /// Only keys starting with this.
        prefix: Option<String>,
        #[command(flatten)]
        of: Of,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Free KEY whoever holds it (an administrator's action).
    Release {
        /// Required: says you mean to free someone else's lock.
        #[arg(long, required = true)]
        force: bool,
        /// The lock's key.
        key: String,
    },
}

/// Which of a key's primitives `status` and `list` show (the mutex without a flag).
#[derive(Debug, Clone, Copy, clap::Args)]
struct Of {
    /// Show the read/write lock KEY (what `run --read`/`--write` take).
    #[arg(long, conflicts_with = "semaphore")]
    rw: bool,
    /// Show the semaphore KEY (what `run --max-holders N` takes).
    #[arg(long)]
    semaphore: bool,
}

impl Of {
    fn primitive(self) -> Primitive {
        if self.rw {
            Primitive::RwLock
        } else if self.semaphore {
            Primitive::Semaphore
        } else {
            Primitive::Mutex
        }
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == watchdog::SUBCOMMAND) {
        let grace = args.next().and_then(|g| g.into_string().ok());
        return watchdog::run(grace.as_deref().unwrap_or_default());
    }
    // leasehold itself is never stopped by job control (Ctrl-Z, a background read or write
    // of the terminal): stopped, it could not renew while its command runs on. Blocked here,
    // before the runtime's threads exist, so every thread inherits it. The command must not
    // inherit it (a child keeps its parent's mask): `run` unblocks them around the spawn.
    let _ = job_control_signals().thread_block();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            note!("leasehold: cannot start: {error}");
            return ExitCode::from(exit::BACKEND);
        }
    };
    runtime.block_on(async move {
        match execute(cli).await {
            Ok(code) => code,
            Err(error) => {
                note!("leasehold: {error}");
                ExitCode::from(exit_code_for(&error))
            }
        }
    })
}

/// The job-control signals leasehold blocks for itself and never for its command.
pub(crate) fn job_control_signals() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    for sig in [
        nix::sys::signal::Signal::SIGTSTP,
        nix::sys::signal::Signal::SIGTTIN,
        nix::sys::signal::Signal::SIGTTOU,
    ] {
        set.add(sig);
    }
    set
}

/// The exit code for an error of leasehold itself.
pub(crate) fn exit_code_for(error: &LockError) -> u8 {
    match error {
        LockError::Timeout { .. } => exit::BUSY,
        LockError::LeaseLost { .. } => exit::LOST,
        LockError::Backend { .. } => exit::BACKEND,
        _ => exit::BAD_INPUT,
    }
}

async fn execute(cli: Cli) -> Result<ExitCode, LockError> {
    let url = match cli.url {
        Some(url) => url,
        None => default_url()?,
    };
    let backend = connect(&url).await?;
    match cli.command {
        Command::Run(args) => run::run(backend, args, cli.verbose).await,
        Command::Status { key, of, json } => {
            let key = LockKey::new(key)?;
            let admin = admin_of(&backend, "status")?;
            let status = admin.status_of(of.primitive(), &key).await?;
            out!(
                "{}",
                if json {
                    status_json(&key, &status).to_string()
                } else {
                    status_line(&key, &status)
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::List { prefix, of, json } => {
            let admin = admin_of(&backend, "list")?;
            let prefix = prefix.as_deref().unwrap_or("");
            let listed = admin.list_of(of.primitive(), prefix).await?;
            if json {
                let all: Vec<_> = listed
                    .iter()
                    .map(|(key, status)| status_json(key, status))
                    .collect();
                out!("{}", serde_json::Value::Array(all));
            } else {
                for (key, status) in &listed {
                    out!("{}", status_line(key, status));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Release { force: _, key } => {
            let key = LockKey::new(key)?;
            let admin = admin_of(&backend, "release --force")?;
            if admin.force_release(&key).await? {
                note!("leasehold: released \"{key}\"");
                Ok(ExitCode::SUCCESS)
            } else {
                note!("leasehold: \"{key}\" was not held");
                Ok(ExitCode::from(1))
            }
        }
    }
}

fn admin_of<'b>(
    backend: &'b backends::Backend,
    what: &'static str,
) -> Result<&'b dyn leasehold::LockAdmin, LockError> {
    backend
        .admin
        .as_deref()
        .ok_or_else(|| LockError::Unsupported {
            operation: what,
            backend: backend.name,
            reason: "only the sqlite, redis and postgres (lease table) backends keep per-key \
                     state to show or clear",
        })
}

fn status_line(key: &LockKey, status: &LockStatus) -> String {
    let Some(left) = status.remaining else {
        return match status.last_fence {
            Some(fence) => format!("{key}: free (last fence {fence})"),
            None => format!("{key}: free (never locked)"),
        };
    };
    let n = status.holders;
    let held = match (status.held_as, status.max_holders) {
        (Some(LeaseKind::Read), _) if n == 1 => "held by 1 reader".to_owned(),
        (Some(LeaseKind::Read), _) => format!("held by {n} readers"),
        (Some(LeaseKind::Write), _) => "held by a writer".to_owned(),
        (Some(LeaseKind::Permit), Some(max)) => format!("{n} of {max} permits held"),
        _ => "held".to_owned(),
    };
    format!(
        "{key}: {held}, fence {}, {:.1}s left",
        status.last_fence.unwrap_or(0),
        left.as_secs_f64()
    )
}

fn status_json(key: &LockKey, status: &LockStatus) -> serde_json::Value {
    serde_json::json!({
        "key": key.as_str(),
        "held": status.is_held(),
        "fence": status.last_fence,
        "remaining_ms": status.remaining.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        "holders": status.holders,
        "held_as": status.held_as.map(LeaseKind::as_str),
        "max_holders": status.max_holders,
    })
}

/// Parses durations like `30s`, `5m`, `1h30m`, `250ms`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{e} (use forms like 30s, 5m, 1h30m, 250ms)"))
}
