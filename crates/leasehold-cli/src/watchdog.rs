//! The watchdog: a small process (leasehold itself, re-executed as `leasehold __watchdog`) that
//! stops the command's process group if leasehold dies without finishing (SIGKILL, a crash),
//! so the command never runs on without the lock.
//!
//! leasehold writes the group's id to the watchdog's stdin once the command started, and
//! `done` once the group is gone. The pipe's other end is leasehold's alone (Rust opens it
//! close-on-exec), so end of input without `done` means leasehold is gone: the watchdog sends
//! the group SIGTERM, and SIGKILL if it is still there after the grace. It runs in a process
//! group of its own, so a terminal's Ctrl-C or hangup does not reach it.

use std::{
    io::{BufRead, Write},
    os::unix::process::CommandExt,
    process::{Child, ChildStdin, Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};

use crate::run::Group;

/// The hidden subcommand.
pub(crate) const SUBCOMMAND: &str = "__watchdog";

/// leasehold's side of a watchdog.
pub(crate) struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    /// Starts one that gives a group `grace` between SIGTERM and SIGKILL.
    pub(crate) fn start(grace: Duration) -> std::io::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg(SUBCOMMAND)
            .arg(grace.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin })
    }

    /// Tells it which group to watch over.
    pub(crate) fn watch(&mut self, group: Pid) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{group}");
            let _ = stdin.flush();
        }
    }

    /// The group is gone: the watchdog ends without touching it (waited for at most a second:
    /// a stopped watchdog must not keep leasehold, and its lock, waiting).
    pub(crate) fn finish(mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "done");
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(1) {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `leasehold __watchdog GRACE_MS`: see the module docs.
pub(crate) fn run(grace_ms: &str) -> ExitCode {
    // Signals meant for leasehold (`pkill leasehold`, systemd stopping the unit) must not end
    // the watchdog first: leasehold handles them, and its pipe says when the group is gone.
    let mut blocked = nix::sys::signal::SigSet::empty();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGTSTP,
    ] {
        blocked.add(sig);
    }
    let _ = blocked.thread_block();
    let grace = Duration::from_millis(grace_ms.parse().unwrap_or(10_000));
    let mut lines = std::io::stdin().lock().lines();
    let Some(Ok(group)) = lines.next() else {
        return ExitCode::SUCCESS;
    };
    let Ok(group) = group.trim().parse::<i32>() else {
        return ExitCode::SUCCESS;
    };
    let group = Pid::from_raw(group);
    for line in lines {
        match line {
            Ok(line) if line.trim() == "done" => return ExitCode::SUCCESS,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    // leasehold is gone and its command's group may not be.
    let group = Group(group);
    group.signal(Signal::SIGTERM);
    let started = Instant::now();
    while started.elapsed() < grace && group.alive() {
        std::thread::sleep(Duration::from_millis(20));
    }
    group.signal(Signal::SIGKILL);
    ExitCode::SUCCESS
}
