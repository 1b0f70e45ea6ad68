//! `leasehold run`: hold a lock while a command runs.

use std::{
    process::{ExitCode, ExitStatus, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Args;
use leasehold::{LockError, LockGuard, LockOptions, Locker, RwLocker, SemaphoreLocker};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    process::Command,
    signal::unix::{signal, SignalKind},
};

use crate::{backends::Backend, exit, parse_duration, watchdog::Watchdog};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The lease's ttl: how long the lock outlives a crashed `leasehold`. Renewed every ttl / 3.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    ttl: Duration,
    /// How long to wait for the lock.
    #[arg(long, default_value = "10s", value_parser = parse_duration, conflicts_with = "no_wait")]
    wait: Duration,
    /// Do not wait: exit 75 at once if the lock is held.
    #[arg(long)]
    no_wait: bool,
    /// How long the command gets between SIGTERM and SIGKILL when it must stop (a forwarded
    /// signal, leftovers); failing renewals stop it when this much validity is left. Default:
    /// 10s, or a third of the ttl if that is less. At most half the ttl.
    #[arg(long, value_parser = parse_duration)]
    grace: Option<Duration>,
    /// Hold KEY as one of any number of readers of its read/write lock: excludes `--write`
    /// runs (and waits while one waits), not other readers.
    #[arg(long, conflicts_with_all = ["write", "max_holders"])]
    read: bool,
    /// Hold KEY as the writer of its read/write lock: excludes `--read` and `--write` runs;
    /// new readers wait while it waits. Without `--read`, `--write` or `--max-holders`, KEY is
    /// a plain mutex, as before: a separate resource from KEY's read/write lock.
    #[arg(long, conflicts_with = "max_holders")]
    write: bool,
    /// Hold one of N permits of the semaphore KEY: at most N runs at once (every run of KEY
    /// must give the same N while permits are held).
    #[arg(long, value_name = "N")]
    max_holders: Option<u32>,
    /// The lock's key.
    key: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub(crate) async fn run(
    backend: Backend,
    args: RunArgs,
    verbose: bool,
) -> Result<ExitCode, LockError> {
    let say = |message: String| {
        if verbose {
            note!("leasehold: {message}");
        }
    };
    let ttl = leasehold::backend::ttl::check(args.ttl)?;
    let renew_every = ttl / 3;
    let grace = args.grace.unwrap_or_else(|| (ttl / 3).min(DEFAULT_GRACE));
    // A renewal is due when two thirds of the validity are left; half the ttl leaves room for
    // its round trip, so a healthy lease never gets down to the grace.
    let room = ttl / 2;
    if grace > room {
        note!(
            "leasehold: --grace {} does not fit --ttl {}: it must be at most {} (half the ttl), \
             so that a command whose renewals fail is stopped before its lease ends",
            humantime::format_duration(grace),
            humantime::format_duration(ttl),
            humantime::format_duration(room)
        );
        return Ok(ExitCode::from(exit::BAD_INPUT));
    }
    let mode = Mode::of(&args);
    let options = LockOptions::default()
        .with_ttl(args.ttl)
        .with_renew_every(renew_every)
        .with_wait(args.wait)
        // A forced release stops the command at once where the backend announces it.
        .with_release_watch(true);
    if !args.no_wait {
        say(format!(
            "waiting up to {} for \"{}\"",
            humantime::format_duration(args.wait),
            args.key
        ));
    }
    let guard = match mode.take(&backend, &args.key, options, args.no_wait).await {
        Ok(Some(guard)) => guard,
        Ok(None) => {
            note!("leasehold: \"{}\" is held by someone else", args.key);
            return Ok(ExitCode::from(exit::BUSY));
        }
        Err(LockError::Timeout { waited, .. }) => {
            note!(
                "leasehold: \"{}\" is still held after waiting {:.1}s",
                args.key,
                waited.as_secs_f64()
            );
            return Ok(ExitCode::from(exit::BUSY));
        }
        Err(error) => return Err(error),
    };
    say(format!(
        "acquired \"{}\" with fence {}",
        guard.key(),
        guard.fence()
    ));

    let Some((program, rest)) = args.command.split_first() else {
        note!("leasehold: no command given after --");
        let _ = guard.release().await;
        return Ok(ExitCode::from(exit::BAD_INPUT));
    };
    // Orphans of the command (a pipeline's processes whose shell exited) become leasehold's
    // children, so leasehold can reap them and knows when the group is really gone.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = nix::sys::prctl::set_child_subreaper(true);
    // In place before the command starts, so no signal meant for it is lost.
    let Ok(mut signals) = UserSignals::new() else {
        note!("leasehold: cannot watch for signals");
        let _ = guard.release().await;
        return Ok(ExitCode::from(exit::BACKEND));
    };
    // Stops the command's group should leasehold die without finishing (SIGKILL, a crash).
    let mut watchdog = match Watchdog::start(grace) {
        Ok(watchdog) => watchdog,
        Err(error) => {
            note!("leasehold: cannot start the watchdog: {error}");
            let _ = guard.release().await;
            return Ok(ExitCode::from(exit::BACKEND));
        }
    };
    // Its own process group: every signal goes to the whole tree the command starts (a shell's
    // pipeline, make's jobs), not to the first process alone. The variable leasehold may have
    // read credentials from is not passed on.
    // The command starts with the job-control signals leasehold blocks for itself unblocked
    // (a child inherits the spawning thread's mask, and std leaves it): blocked, a command that
    // reads the terminal in the background gets EIO instead of waiting for it, and Ctrl-Z
    // would not stop it. Unblocked on this thread for the synchronous spawn only.
    let job_control = crate::job_control_signals();
    let _ = job_control.thread_unblock();
    let spawned = Command::new(program)
        .args(rest)
        .env("LEASEHOLD_KEY", guard.key().as_str())
        .env("LEASEHOLD_FENCE", guard.fence().to_string())
        .env_remove("LEASEHOLD_URL")
        .process_group(0)
        .stdin(Stdio::inherit())
        .spawn();
    let _ = job_control.thread_block();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            note!("leasehold: cannot start {program:?}: {error}");
            let _ = guard.release().await;
            return Ok(ExitCode::from(exit::CANNOT_START));
        }
    };
    let Some(group) = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .filter(|&id| id > 0)
        .map(|id| Group(Pid::from_raw(id)))
    else {
        // Cannot happen for a child that was just spawned; never signal group 0 (our own).
        note!("leasehold: the command started without a process id");
        let _ = child.kill().await;
        let _ = guard.release().await;
        return Ok(ExitCode::from(exit::BACKEND));
    };
    watchdog.watch(group.0);
    let terminal = Terminal::hand_to(group.0);
    if terminal.0.is_some() {
        tokio::spawn(resume_if_stopped_by_the_hand_over(group.0));
    }

    let view = guard.view();
    let mut valid_until = view.valid_until();
    let mut renewal_check = tokio::time::interval(Duration::from_millis(100));
    // Why the command is being stopped, and when it gets SIGKILL.
    let mut stopping: Option<Stop> = None;
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;
    let mut status: Option<std::io::Result<ExitStatus>> = None;
    loop {
        tokio::select! {
            exited = child.wait(), if status.is_none() => status = Some(exited),
            sig = signals.recv() => {
                // Each user signal once, to the whole group; the command gets `grace` to end.
                group.signal(sig);
                if stopping.is_none() {
                    stopping = Some(Stop::Signal(sig));
                    kill_at = Instant::now().checked_add(grace);
                }
            }
            _ = view.lost(), if !matches!(stopping, Some(Stop::Lost)) => {
                note!("leasehold: lost the lease on \"{}\"; stopping the command", guard.key());
                group.signal(Signal::SIGTERM);
                stopping = Some(Stop::Lost);
                // The key may be someone else's already: a short last chance, then SIGKILL.
                kill_at = Some(Instant::now() + grace.min(LOST_KILL_AFTER));
            }
            () = sleep_until_some(kill_at), if kill_at.is_some() && !killed => {
                group.signal(Signal::SIGKILL);
                killed = true;
            }
            _ = renewal_check.tick() => {
                let left = view.remaining();
                if stopping.is_none() && left <= grace {
                    // Renewals keep failing or hanging (a healthy lease never gets this low):
                    // stop in time, so that the group is gone before the lease ends and anyone
                    // else can be granted the key.
                    note!("leasehold: renewing \"{}\" keeps failing ({:.1}s left); stopping the command",
                        guard.key(), left.as_secs_f64());
                    group.signal(Signal::SIGTERM);
                    stopping = Some(Stop::Renewal);
                    kill_at = Some(Instant::now() + left.saturating_sub(KILL_MARGIN));
                }
                if stopping.is_some() && !killed && left <= KILL_MARGIN {
                    group.signal(Signal::SIGKILL);
                    killed = true;
                }
                if verbose {
                    let now_valid = view.valid_until();
                    if now_valid > valid_until {
                        valid_until = now_valid;
                        say(format!("renewed \"{}\" ({:.1}s left)", guard.key(), left.as_secs_f64()));
                    }
                }
                if status.is_some() {
                    group.reap();
                    if !group.alive() {
                        break;
                    }
                    // The command left processes behind in its group: they go too.
                    if stopping.is_none() {
                        group.signal(Signal::SIGTERM);
                        stopping = Some(Stop::Leftovers);
                        kill_at = Instant::now().checked_add(grace);
                    }
                }
            }
        }
    }
    drop(terminal);
    watchdog.finish();
    let key = guard.key().clone();
    match guard.release().await {
        Ok(true) => say(format!("released \"{key}\"")),
        Ok(false) => say(format!("\"{key}\" was no longer held at release")),
        Err(error) => {
            note!("leasehold: release of \"{key}\" failed ({error}); it ends with its ttl")
        }
    }
    Ok(ExitCode::from(match (stopping, status) {
        (Some(Stop::Lost | Stop::Renewal), _) => exit::LOST,
        (Some(Stop::Signal(sig)), _) => 128 + sig as u8,
        (_, Some(Ok(status))) => exit_code_of(status),
        (_, Some(Err(error))) => {
            note!("leasehold: waiting for the command failed: {error}");
            exit::BACKEND
        }
        (_, None) => exit::BACKEND,
    }))
}

/// The grace when none is given (or a third of the ttl, if less).
const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// How long a command whose lease is gone gets between SIGTERM and SIGKILL (at most `--grace`).
const LOST_KILL_AFTER: Duration = Duration::from_secs(1);
/// SIGKILL goes out this long before the lease's validity ends, so the group is gone by then.
const KILL_MARGIN: Duration = Duration::from_millis(300);

/// Why the command is being stopped.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// A user signal, forwarded.
    Signal(Signal),
    /// The lease is gone.
    Lost,
    /// Renewals kept failing until the validity left was down to the grace.
    Renewal,
    /// The command exited and left processes in its group.
    Leftovers,
}

/// The command's process group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Group(pub(crate) Pid);

impl Group {
    pub(crate) fn signal(self, sig: Signal) {
        let _ = nix::sys::signal::killpg(self.0, sig);
    }

    /// Whether any process is left in the group (one leasehold may not signal, e.g. after a
    /// `sudo`, counts: only "no such process" means gone).
    pub(crate) fn alive(self) -> bool {
        !matches!(
            nix::sys::signal::killpg(self.0, None),
            Err(nix::errno::Errno::ESRCH)
        )
    }

    /// Reaps the group's processes that ended and were left to leasehold (the subreaper). Only
    /// called once the command itself was reaped, so it never takes tokio's child.
    fn reap(self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        let group = Pid::from_raw(-self.0.as_raw());
        while let Ok(status) = waitpid(group, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
    }
}

/// The signals a user (a terminal, systemd, cron's kill) sends to stop a command. A signal
/// leasehold was started ignoring (`nohup` ignores SIGHUP, a shell's `&` SIGINT and SIGQUIT)
/// is left ignored, for leasehold and the command.
struct UserSignals([(Signal, Option<tokio::signal::unix::Signal>); 4]);

impl UserSignals {
    fn new() -> std::io::Result<Self> {
        let ignored = ignored_signals();
        let watch = |sig: Signal, kind: SignalKind| -> std::io::Result<_> {
            let bit = 1_u64 << (sig as i32 - 1);
            Ok((sig, (ignored & bit == 0).then(|| signal(kind)).transpose()?))
        };
        Ok(Self([
            watch(Signal::SIGINT, SignalKind::interrupt())?,
            watch(Signal::SIGTERM, SignalKind::terminate())?,
            watch(Signal::SIGHUP, SignalKind::hangup())?,
            watch(Signal::SIGQUIT, SignalKind::quit())?,
        ]))
    }

    async fn recv(&mut self) -> Signal {
        async fn one(watched: &mut Option<tokio::signal::unix::Signal>) {
            match watched {
                Some(watched) => {
                    watched.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let [(a, sa), (b, sb), (c, sc), (d, sd)] = &mut self.0;
        tokio::select! {
            () = one(sa) => *a,
            () = one(sb) => *b,
            () = one(sc) => *c,
            () = one(sd) => *d,
        }
    }
}

/// The signals this process was started ignoring, as a mask (bit N - 1 for signal N), from
/// `/proc/self/status` (none where it cannot be read).
fn ignored_signals() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("SigIgn:"))?;
            u64::from_str_radix(line.trim_start_matches("SigIgn:").trim(), 16).ok()
        })
        .unwrap_or(0)
}

/// The controlling terminal, handed to the command's group while it runs (so that Ctrl-C
/// reaches the command directly, once, and reading the terminal does not stop it) and given
/// back when dropped. Nothing when stdin is not a terminal.
struct Terminal(Option<(Pid, Pid)>);

impl Terminal {
    fn hand_to(group: Pid) -> Self {
        // A pipeline (`leasehold run k -- make | less`) keeps the terminal where it is: the
        // other side of the pipe would be stopped reading a terminal it lost.
        if !std::io::IsTerminal::is_terminal(&std::io::stdin())
            || !std::io::IsTerminal::is_terminal(&std::io::stdout())
        {
            return Self(None);
        }
        let ours = nix::unistd::getpgrp();
        // Only a leasehold in the foreground hands the terminal on (one started with `&` must
        // not take it from the shell).
        if nix::unistd::tcgetpgrp(std::io::stdin()).ok() != Some(ours) {
            return Self(None);
        }
        if set_foreground(group) {
            // The command may have read the terminal before it was its own and been stopped.
            let _ = nix::sys::signal::killpg(group, Signal::SIGCONT);
            Self(Some((ours, group)))
        } else {
            Self(None)
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // Only taken back while the command's group still has it (a shell that took it back
        // after a Ctrl-Z must keep it).
        if let Some((ours, group)) = self.0 {
            if nix::unistd::tcgetpgrp(std::io::stdin()).ok() == Some(group) {
                set_foreground(ours);
            }
        }
    }
}

/// A command that read the terminal just before it was handed over can be stopped by SIGTTIN
/// *after* the SIGCONT that `Terminal::hand_to` sent (the kernel checks the foreground group,
/// then signals: the hand-over can fall in between). Seen once in a few hundred runs on a loaded
/// machine: the command then waits stopped for good. So the command is looked at a few more
/// times in its first second and continued if it is stopped. A Ctrl-Z typed in that second is
/// undone too: that is the price.
async fn resume_if_stopped_by_the_hand_over(group: Pid) {
    for pause in [10, 40, 150, 800] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let state = std::fs::read_to_string(format!("/proc/{group}/stat")).unwrap_or_default();
        let stopped = state
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('T'));
        if stopped {
            let _ = nix::sys::signal::killpg(group, Signal::SIGCONT);
        }
    }
}

/// `tcsetpgrp` on stdin, with SIGTTOU blocked on this thread (a background process changing
/// the terminal's foreground group is otherwise stopped by it).
fn set_foreground(group: Pid) -> bool {
    let mut ttou = nix::sys::signal::SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let _ = ttou.thread_block();
    nix::unistd::tcsetpgrp(std::io::stdin(), group).is_ok()
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The command's exit code, or 128 + N if it was killed by signal N (as shells report it).
fn exit_code_of(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        (None, None) => 1,
    }
}

/// What `run` holds KEY as.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Mutex,
    Read,
    Write,
    Permit(u32),
}

impl Mode {
    fn of(args: &RunArgs) -> Self {
        match (args.read, args.write, args.max_holders) {
            (true, _, _) => Self::Read,
            (_, true, _) => Self::Write,
            (_, _, Some(n)) => Self::Permit(n),
            _ => Self::Mutex,
        }
    }

    /// Takes KEY: `Ok(None)` when `no_wait` and it is held.
    async fn take(
        self,
        backend: &Backend,
        key: &str,
        options: LockOptions,
        no_wait: bool,
    ) -> Result<Option<LockGuard>, LockError> {
        let unsupported = |what: &'static str| LockError::Unsupported {
            operation: what,
            backend: backend.name,
            reason: "this backend does not have that primitive (the advisory strategy has no \
                     semaphores); use the lease-table strategy or another backend",
        };
        match self {
            Self::Mutex => {
                let locker = Locker::from_arc(Arc::clone(&backend.lock));
                if no_wait {
                    locker.try_lock(key, options).await
                } else {
                    locker.lock(key, options).await.map(Some)
                }
            }
            Self::Read | Self::Write => {
                let rw = backend
                    .rw
                    .clone()
                    .ok_or_else(|| unsupported("--read and --write"))?;
                let locker = RwLocker::from(rw);
                match (self, no_wait) {
                    (Self::Read, true) => locker.try_read(key, options).await,
                    (Self::Read, false) => locker.read(key, options).await.map(Some),
                    (_, true) => locker.try_write(key, options).await,
                    (_, false) => locker.write(key, options).await.map(Some),
                }
            }
            Self::Permit(n) => {
                let semaphore = backend
                    .semaphore
                    .clone()
                    .ok_or_else(|| unsupported("--max-holders"))?;
                let locker = SemaphoreLocker::from(semaphore);
                if no_wait {
                    locker.try_permit(key, n, options).await
                } else {
                    locker.permit(key, n, options).await.map(Some)
                }
            }
        }
    }
}
