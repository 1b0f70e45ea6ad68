//! `leasehold run`: hold a lock while a command runs.

use std::{
    process::{ExitCode, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use clap::Args;
use leasehold::{LockError, LockOptions, Locker};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    process::Command,
    signal::unix::{signal, SignalKind},
};

use crate::{backends::Backend, exit, parse_duration};

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
    /// After a lost lease: how long the command gets between SIGTERM and SIGKILL.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    grace: Duration,
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
            eprintln!("leasehold: {message}");
        }
    };
    let locker = Locker::from_arc(backend.lock);
    let options = LockOptions::default()
        .with_ttl(args.ttl)
        .with_wait(args.wait);
    let guard = if args.no_wait {
        match locker.try_lock(args.key.as_str(), options).await? {
            Some(guard) => guard,
            None => {
                eprintln!("leasehold: \"{}\" is held by someone else", args.key);
                return Ok(ExitCode::from(exit::BUSY));
            }
        }
    } else {
        say(format!(
            "waiting up to {} for \"{}\"",
            humantime::format_duration(args.wait),
            args.key
        ));
        match locker.lock(args.key.as_str(), options).await {
            Ok(guard) => guard,
            Err(LockError::Timeout { waited, .. }) => {
                eprintln!(
                    "leasehold: \"{}\" is still held after waiting {:.1}s",
                    args.key,
                    waited.as_secs_f64()
                );
                return Ok(ExitCode::from(exit::BUSY));
            }
            Err(error) => return Err(error),
        }
    };
    say(format!(
        "acquired \"{}\" with fence {}",
        guard.key(),
        guard.fence()
    ));

    let Some((program, rest)) = args.command.split_first() else {
        eprintln!("leasehold: no command given after --");
        let _ = guard.release().await;
        return Ok(ExitCode::from(exit::BAD_INPUT));
    };
    let mut child = match Command::new(program)
        .args(rest)
        .env("LEASEHOLD_KEY", guard.key().as_str())
        .env("LEASEHOLD_FENCE", guard.fence().to_string())
        .stdin(Stdio::inherit())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            eprintln!("leasehold: cannot start {program:?}: {error}");
            let _ = guard.release().await;
            return Ok(ExitCode::from(exit::CANNOT_START));
        }
    };
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let send = |sig: Signal| {
        if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(pid, sig);
        }
    };
    let (Ok(mut interrupts), Ok(mut terminates)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("leasehold: cannot watch for signals");
        send(Signal::SIGKILL);
        let _ = guard.release().await;
        return Ok(ExitCode::from(exit::BACKEND));
    };

    let view = guard.view();
    let mut valid_until = view.valid_until();
    let mut lost_at: Option<Instant> = None;
    let mut killed = false;
    let mut renewal_check = tokio::time::interval(Duration::from_millis(200));
    let status: std::io::Result<ExitStatus> = loop {
        // A grace too large to add to now means the command is never killed.
        let kill_at = lost_at
            .filter(|_| !killed)
            .and_then(|at| at.checked_add(args.grace));
        tokio::select! {
            status = child.wait() => break status,
            _ = interrupts.recv() => send(Signal::SIGINT),
            _ = terminates.recv() => send(Signal::SIGTERM),
            _ = view.lost(), if lost_at.is_none() => {
                eprintln!("leasehold: lost the lease on \"{}\"; stopping the command (SIGTERM, SIGKILL after {})",
                    guard.key(), humantime::format_duration(args.grace));
                send(Signal::SIGTERM);
                lost_at = Some(Instant::now());
            }
            () = async { tokio::time::sleep_until(kill_at.unwrap_or_else(Instant::now).into()).await }, if kill_at.is_some() => {
                send(Signal::SIGKILL);
                killed = true;
            }
            _ = renewal_check.tick(), if verbose => {
                let now_valid = view.valid_until();
                if now_valid > valid_until {
                    valid_until = now_valid;
                    say(format!("renewed \"{}\" ({:.1}s left)", guard.key(), view.remaining().as_secs_f64()));
                }
            }
        }
    };
    let key = guard.key().clone();
    match guard.release().await {
        Ok(true) => say(format!("released \"{key}\"")),
        Ok(false) => say(format!("\"{key}\" was no longer held at release")),
        Err(error) => {
            eprintln!("leasehold: release of \"{key}\" failed ({error}); it ends with its ttl")
        }
    }
    if lost_at.is_some() {
        return Ok(ExitCode::from(exit::LOST));
    }
    Ok(match status {
        Ok(status) => ExitCode::from(exit_code_of(status)),
        Err(error) => {
            eprintln!("leasehold: waiting for the command failed: {error}");
            ExitCode::from(exit::BACKEND)
        }
    })
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
