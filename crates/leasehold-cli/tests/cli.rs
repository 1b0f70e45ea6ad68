//! The real `leasehold` binary, on a SQLite file in a temp directory (and, for the admin
//! commands, on the shared Redis and PostgreSQL servers).

use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

struct Env {
    dir: PathBuf,
    /// `LEASEHOLD_URL` for the runs; none: `leasehold.db` in `dir`.
    url: Option<String>,
}

impl Env {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("leasehold-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir, url: None }
    }

    fn with_url(name: &str, url: String) -> Self {
        Self {
            url: Some(url),
            ..Self::new(name)
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        // Through `env --default-signal`: a test run started in the background of a script
        // inherits SIGINT and SIGQUIT ignored, and leasehold keeps signals it was started
        // ignoring ignored (for nohup), which would make the signal tests meaningless.
        let mut command = Command::new("env");
        command
            .arg("--default-signal=INT,QUIT,HUP,TERM")
            .arg(env!("CARGO_BIN_EXE_leasehold"));
        // Without a URL of its own, a SQLite file in the test's directory.
        let url = self
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.dir.join("leasehold.db").display()));
        command.current_dir(&self.dir).env("LEASEHOLD_URL", url);
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run leasehold")
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).spawn().expect("spawn leasehold")
    }

    /// Waits until `key` shows as held by `holder` (the spawned run has its lock).
    fn wait_until_held(&self, key: &str, holder: &mut Child) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if self.json_status(key)["held"] == true {
                return;
            }
            if let Ok(Some(status)) = holder.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = holder.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                panic!("the holder exited ({status}) before holding {key}: {stderr}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{key} was never held");
    }

    fn json_status(&self, key: &str) -> serde_json::Value {
        let out = self.run(&["status", "--json", key]);
        assert!(out.status.success(), "status failed: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_command_gets_key_and_fence_and_its_exit_code_is_passed_on() {
    let env = Env::new("exit");
    let out = env.run(&[
        "run",
        "job",
        "--",
        "sh",
        "-c",
        "echo $LEASEHOLD_KEY:$LEASEHOLD_FENCE; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out.stdout).trim(), "job:1");
    assert!(
        env.dir.join("leasehold.db").exists(),
        "the default sqlite://leasehold.db was not used"
    );
    let out = env.run(&["run", "job", "--", "true"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(env.json_status("job")["fence"], 2);
    assert_eq!(
        env.json_status("job")["held"],
        false,
        "the lock was not released after the command"
    );
}

#[test]
fn a_second_run_exits_busy_without_waiting_and_succeeds_when_it_waits() {
    let env = Env::new("busy");
    let mut first = env.spawn(&["run", "job", "--", "sleep", "2"]);
    env.wait_until_held("job", &mut first);
    let started = Instant::now();
    let busy = env.run(&["run", "--no-wait", "job", "--", "echo", "never"]);
    assert_eq!(busy.status.code(), Some(75), "{}", text(&busy.stderr));
    assert!(
        text(&busy.stderr).contains("held by someone else"),
        "{}",
        text(&busy.stderr)
    );
    assert!(
        text(&busy.stdout).is_empty(),
        "the command ran without the lock"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let timed_out = env.run(&["run", "--wait", "300ms", "job", "--", "echo", "never"]);
    assert_eq!(
        timed_out.status.code(),
        Some(75),
        "{}",
        text(&timed_out.stderr)
    );
    let waited = env.run(&["run", "--wait", "20s", "job", "--", "echo", "after"]);
    assert_eq!(waited.status.code(), Some(0), "{}", text(&waited.stderr));
    assert_eq!(text(&waited.stdout).trim(), "after");
    assert!(first.wait().unwrap().success());
}

#[test]
fn sigterm_is_forwarded_to_the_command_and_the_lock_released() {
    let env = Env::new("signal");
    let mut run = env.spawn(&["run", "job", "--", "sleep", "30"]);
    env.wait_until_held("job", &mut run);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(run.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let started = Instant::now();
    let status = run.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(128 + 15),
        "the command's death by SIGTERM is reported as 143"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(env.json_status("job")["held"], false);
}

/// A command whose tree has a grandchild: `sh` starts `sleep` in the background, writes its
/// pid to `grandchild.pid` and waits for it.
const TREE: &[&str] = &["sh", "-c", "sleep 30 & echo $! > grandchild.pid; wait"];

impl Env {
    /// The grandchild's pid, once the command has written it.
    fn grandchild(&self) -> nix::unistd::Pid {
        let file = self.dir.join("grandchild.pid");
        let started = Instant::now();
        loop {
            if let Some(pid) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                return nix::unistd::Pid::from_raw(pid);
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no grandchild pid"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Env {
    /// Another process (python3's sqlite3) holding the database's write lock for `seconds`,
    /// returned once it has it.
    fn hold_write_lock(&self, seconds: u32) -> Child {
        let script = format!(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep({seconds})\n"
        );
        let mut holder = Command::new("python3")
            .args(["-c", &script])
            .arg(self.dir.join("leasehold.db"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (with its sqlite3 module) holds the write lock");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "locked", "the write lock was not taken");
        holder
    }
}

/// Whether `pid` still runs (a zombie waiting for init to reap it does not).
fn running(pid: nix::unistd::Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

fn args_with_tree<'a>(before: &[&'a str]) -> Vec<&'a str> {
    let mut args = before.to_vec();
    args.push("--");
    args.extend_from_slice(TREE);
    args
}

#[test]
fn a_lost_lease_stops_the_whole_group_with_its_own_exit_code() {
    let env = Env::new("lost");
    let mut run = env.spawn(&args_with_tree(&[
        "run", "--ttl", "3s", "--grace", "1s", "job",
    ]));
    env.wait_until_held("job", &mut run);
    let grandchild = env.grandchild();
    let forced = env.run(&["release", "--force", "job"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    let started = Instant::now();
    let out = run.wait_with_output().unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(76), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("lost the lease"),
        "{}",
        text(&out.stderr)
    );
    assert!(!running(grandchild), "the grandchild outlived a lost lease");
    eprintln!("forced release to leasehold's exit, group gone: {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn sighup_sigterm_and_sigquit_stop_the_whole_group_and_release() {
    use nix::sys::signal::Signal;
    for sig in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGQUIT] {
        let env = Env::new(&format!("signal-{}", sig as i32));
        let mut run = env.spawn(&args_with_tree(&["run", "--grace", "1s", "job"]));
        env.wait_until_held("job", &mut run);
        let grandchild = env.grandchild();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(run.id()).unwrap());
        nix::sys::signal::kill(pid, sig).unwrap();
        let started = Instant::now();
        let status = run.wait().unwrap();
        let took = started.elapsed();
        assert_eq!(status.code(), Some(128 + sig as i32), "{sig}");
        assert!(
            !running(grandchild),
            "{sig}: the grandchild outlived leasehold"
        );
        assert_eq!(
            env.json_status("job")["held"],
            false,
            "{sig}: the lock was kept"
        );
        eprintln!("{sig} to leasehold's exit, group gone, lock released: {took:?}");
        assert!(took < Duration::from_secs(5), "{sig}: took {took:?}");
    }
}

/// A Ctrl-C in a terminal is SIGINT to the foreground process group: here leasehold runs in a
/// group of its own and gets it from `killpg`; the command (in its own group) must see it once.
#[test]
fn one_sigint_to_the_foreground_group_reaches_the_command_once() {
    let env = Env::new("sigint");
    let script = "trap 'echo int >> interrupts' INT; echo $$ > grandchild.pid; \
                  for i in $(seq 200); do sleep 0.1; done";
    let mut command = env.command(&["run", "--grace", "2s", "job", "--", "sh", "-c", script]);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut run = command.spawn().unwrap();
    env.wait_until_held("job", &mut run);
    env.grandchild(); // the trap is set
    let group = nix::unistd::Pid::from_raw(i32::try_from(run.id()).unwrap());
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = run.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "a forwarded SIGINT ends leasehold with 128 + 2"
    );
    let seen = std::fs::read_to_string(env.dir.join("interrupts")).unwrap_or_default();
    assert_eq!(seen.lines().count(), 1, "the command saw {seen:?}");
}

/// leasehold blocks the job-control signals for itself (it must never be stopped); its
/// command must not inherit that: blocked, a background read of the terminal fails with EIO
/// instead of waiting for the terminal, and Ctrl-Z would not stop it.
#[test]
fn the_command_starts_with_no_signal_blocked() {
    let env = Env::new("sigmask");
    let out = env.run(&["run", "job", "--", "grep", "SigBlk", "/proc/self/status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "SigBlk:\t0000000000000000");
}

#[test]
fn the_command_does_not_see_leasehold_url() {
    let env = Env::with_url("env", String::new());
    let url = format!("sqlite://{}", env.dir.join("locks.db").display());
    let out = env
        .command(&["run", "job", "--", "env"])
        .env("LEASEHOLD_URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen = text(&out.stdout);
    assert!(
        seen.contains("LEASEHOLD_KEY=job") && seen.contains("LEASEHOLD_FENCE="),
        "{seen}"
    );
    assert!(!seen.contains("LEASEHOLD_URL"), "{seen}");
}

#[test]
fn a_grace_that_cannot_fit_the_ttl_is_refused() {
    let env = Env::new("grace");
    let out = env.run(&["run", "--ttl", "3s", "--grace", "2s", "job", "--", "true"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(
        said.contains("--grace 2s does not fit --ttl 3s") && said.contains("at most 1s 500ms"),
        "{said}"
    );
}

#[test]
fn status_list_and_forced_release_report_in_text_and_json() {
    let env = Env::new("admin");
    assert!(env.run(&["run", "jobs/a", "--", "true"]).status.success());
    let mut holder = env.spawn(&["run", "jobs/b", "--", "sleep", "30"]);
    env.wait_until_held("jobs/b", &mut holder);
    let status = env.run(&["status", "jobs/b"]);
    assert!(
        text(&status.stdout).starts_with("jobs/b: held, fence 1"),
        "{}",
        text(&status.stdout)
    );
    let never = env.run(&["status", "nope"]);
    assert!(text(&never.stdout).contains("never locked"));
    let list = env.run(&["list", "--json", "jobs/"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["key"], "jobs/a");
    assert_eq!(list[0]["held"], false);
    assert_eq!(list[1]["held"], true);
    let plain = env.run(&["list"]);
    assert_eq!(text(&plain.stdout).lines().count(), 2);
    assert!(env.run(&["release", "--force", "jobs/b"]).status.success());
    assert_eq!(
        env.run(&["release", "--force", "jobs/b"]).status.code(),
        Some(1)
    );
    let needs_force = env.run(&["release", "jobs/b"]);
    assert_eq!(needs_force.status.code(), Some(2));
    assert_eq!(holder.wait().unwrap().code(), Some(76));
}

/// The admin commands against a server backend: a key locked once, a key held by another
/// run, a listing of both, and a forced release that stops the holder's whole group at once
/// (announced by the backend), not at its next renewal 10 s later.
fn admin_commands_on(env: &Env, prefix: &str) {
    let (done, held) = (format!("{prefix}done"), format!("{prefix}held"));
    assert!(env.run(&["run", &done, "--", "true"]).status.success());
    let spawned = Instant::now();
    let mut holder = env.spawn(&args_with_tree(&["run", "--ttl", "30s", &held]));
    env.wait_until_held(&held, &mut holder);
    let grandchild = env.grandchild();
    let status = env.json_status(&done);
    assert_eq!(status["held"], false, "{status}");
    assert!(status["fence"].as_u64().unwrap() >= 1, "{status}");
    let list = env.run(&["list", "--json", prefix]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let keys: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["key"].as_str().unwrap().to_owned(), k["held"] == true))
        .collect();
    assert_eq!(keys, [(done.clone(), false), (held.clone(), true)]);
    let forced = Instant::now();
    // The first renewal comes 10 s after the lock was taken: with time to spare, stopping
    // in under 4 s is the announcement's doing.
    assert!(
        forced - spawned < Duration::from_secs(5),
        "the setup took {:?}: too slow to tell an announcement from a renewal",
        forced - spawned
    );
    assert!(env.run(&["release", "--force", &held]).status.success());
    assert_eq!(holder.wait().unwrap().code(), Some(76));
    let took = forced.elapsed();
    assert!(
        !running(grandchild),
        "the grandchild outlived a forced release"
    );
    eprintln!("forced release to leasehold's exit, group gone: {took:?}");
    assert!(
        took < Duration::from_secs(4),
        "a forced release took {took:?} to stop the command: not announced?"
    );
    assert_eq!(
        env.run(&["release", "--force", &held]).status.code(),
        Some(1)
    );
}

#[test]
fn admin_commands_work_on_redis() {
    let url = leasehold_testkit::env::redis_url();
    let mut conn = leasehold_redis::redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| {
            panic!("cannot reach Redis at {url}: {e}\nstart it with `scripts/services.sh` (or run the tests through `scripts/test.sh`)")
        });
    let prefix = format!("cli-admin/{}/", std::process::id());
    let env = Env::with_url("admin-redis", url.clone());
    admin_commands_on(&env, &prefix);
    // The fence counters outlive their locks by design; this test's go.
    for key in ["done", "held"] {
        let () = leasehold_redis::redis::cmd("DEL")
            .arg(format!("{{leasehold:{prefix}{key}}}:fence"))
            .query(&mut conn)
            .unwrap();
    }
}

#[test]
fn admin_commands_work_on_a_redis_cluster() {
    let url = leasehold_testkit::env::redis_cluster_url();
    let seeds = leasehold_redis::cluster_seeds(&url).unwrap();
    let mut conn = leasehold_redis::redis::cluster::ClusterClient::new(seeds)
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| {
            panic!("cannot reach the Redis Cluster at {url}: {e}\nstart it with `scripts/services.sh` (or run the tests through `scripts/test.sh`)")
        });
    let prefix = format!("cli-admin-cluster/{}/", std::process::id());
    let env = Env::with_url("admin-redis-cluster", url.clone());
    admin_commands_on(&env, &prefix);
    for key in ["done", "held"] {
        let () = leasehold_redis::redis::cmd("DEL")
            .arg(format!("{{leasehold:{prefix}{key}}}:fence"))
            .query(&mut conn)
            .unwrap();
    }
}

#[test]
fn admin_commands_work_on_postgres() {
    let url = leasehold_testkit::env::postgres_url();
    use leasehold_postgres::sqlx::{self, Connection};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut conn = runtime
        .block_on(sqlx::PgConnection::connect(&url))
        .unwrap_or_else(|e| {
            panic!("cannot reach PostgreSQL at {url}: {e}\nstart it with `scripts/services.sh` (or run the tests through `scripts/test.sh`)")
        });
    let prefix = format!("cli-admin/{}/", std::process::id());
    let env = Env::with_url("admin-postgres", url.clone());
    admin_commands_on(&env, &prefix);
    // The rows outlive their locks by design; this test's go.
    runtime.block_on(async {
        sqlx::query("DELETE FROM leasehold_locks WHERE starts_with(key, $1)")
            .bind(&prefix)
            .execute(&mut conn)
            .await
            .unwrap();
    });
}

/// Waits until the command of a spawned run has created `file` (it holds its lock).
fn wait_for_file(file: &std::path::Path, holder: &mut Child) {
    let started = Instant::now();
    while !file.exists() {
        if let Ok(Some(status)) = holder.try_wait() {
            let mut stderr = String::new();
            if let Some(mut pipe) = holder.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            panic!(
                "the run exited ({status}) before creating {}: {stderr}",
                file.display()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{} was never created",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn read_write_and_semaphore_runs_share_and_exclude_as_asked() {
    let env = Env::new("primitives");
    let mut reader = env.spawn(&[
        "run",
        "--read",
        "cache",
        "--",
        "sh",
        "-c",
        "touch r1; sleep 3",
    ]);
    wait_for_file(&env.dir.join("r1"), &mut reader);
    let read = env.run(&["status", "--rw", "cache"]);
    assert!(
        text(&read.stdout).starts_with("cache: held by 1 reader, fence "),
        "{}{}",
        text(&read.stdout),
        text(&read.stderr)
    );
    // The key's mutex and semaphore are other resources, never locked.
    for other in [
        &["status", "cache"][..],
        &["status", "--semaphore", "cache"],
    ] {
        let out = env.run(other);
        assert!(
            text(&out.stdout).contains("never locked"),
            "{other:?}: {}",
            text(&out.stdout)
        );
    }
    let both = env.run(&["status", "--rw", "--semaphore", "cache"]);
    assert_eq!(
        both.status.code(),
        Some(2),
        "--rw with --semaphore was accepted"
    );
    let second = env.run(&[
        "run",
        "--read",
        "--no-wait",
        "cache",
        "--",
        "echo",
        "reader 2",
    ]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert_eq!(text(&second.stdout).trim(), "reader 2");
    let writer = env.run(&[
        "run",
        "--write",
        "--no-wait",
        "cache",
        "--",
        "echo",
        "never",
    ]);
    assert_eq!(writer.status.code(), Some(75), "{}", text(&writer.stderr));
    assert!(
        text(&writer.stdout).is_empty(),
        "a writer ran beside a reader"
    );
    // Without a flag the key is the mutex, as before: another resource.
    let mutex = env.run(&["run", "--no-wait", "cache", "--", "echo", "mutex"]);
    assert_eq!(mutex.status.code(), Some(0), "{}", text(&mutex.stderr));
    let writer = env.run(&[
        "run", "--write", "--wait", "20s", "cache", "--", "echo", "writer",
    ]);
    assert_eq!(writer.status.code(), Some(0), "{}", text(&writer.stderr));
    assert_eq!(text(&writer.stdout).trim(), "writer");
    assert!(reader.wait().unwrap().success());

    let script = |file: &str| format!("touch {file}; sleep 3");
    let (one, two) = (script("p1"), script("p2"));
    let mut first = env.spawn(&[
        "run",
        "--max-holders",
        "2",
        "licence",
        "--",
        "sh",
        "-c",
        &one,
    ]);
    let mut second = env.spawn(&[
        "run",
        "--max-holders",
        "2",
        "licence",
        "--",
        "sh",
        "-c",
        &two,
    ]);
    wait_for_file(&env.dir.join("p1"), &mut first);
    wait_for_file(&env.dir.join("p2"), &mut second);
    let permits = env.run(&["status", "--semaphore", "--json", "licence"]);
    let permits: serde_json::Value = serde_json::from_slice(&permits.stdout).unwrap();
    assert_eq!(
        (
            &permits["holders"],
            &permits["max_holders"],
            &permits["held_as"]
        ),
        (&2.into(), &2.into(), &"permit".into()),
        "{permits}"
    );
    let listed = env.run(&["list", "--semaphore", "lic"]);
    assert!(
        text(&listed.stdout).starts_with("licence: 2 of 2 permits held, fence "),
        "{}",
        text(&listed.stdout)
    );
    let third = env.run(&[
        "run",
        "--max-holders",
        "2",
        "--no-wait",
        "licence",
        "--",
        "echo",
        "never",
    ]);
    assert_eq!(third.status.code(), Some(75), "{}", text(&third.stderr));
    let other_limit = env.run(&[
        "run",
        "--max-holders",
        "3",
        "--no-wait",
        "licence",
        "--",
        "true",
    ]);
    assert_eq!(
        other_limit.status.code(),
        Some(64),
        "{}",
        text(&other_limit.stderr)
    );
    let message = text(&other_limit.stderr);
    assert!(
        message.contains("max_holders (3)") && message.contains("limit of 2"),
        "{message}"
    );
    assert!(first.wait().unwrap().success());
    assert!(second.wait().unwrap().success());

    let zero = env.run(&["run", "--max-holders", "0", "licence", "--", "true"]);
    assert_eq!(zero.status.code(), Some(64), "{}", text(&zero.stderr));
    assert!(
        text(&zero.stderr).contains("max_holders (0)"),
        "{}",
        text(&zero.stderr)
    );
    let both = env.run(&["run", "--read", "--write", "cache", "--", "true"]);
    assert_ne!(
        both.status.code(),
        Some(0),
        "--read with --write was accepted"
    );
}

#[test]
fn postgres_strategy_advisory_runs_without_admin_and_unknown_parameters_are_refused() {
    let url = leasehold_testkit::env::postgres_url();
    let join = if url.contains('?') { '&' } else { '?' };
    let env = Env::with_url("advisory", format!("{url}{join}strategy=advisory"));
    let run = env.run(&[
        "run",
        "cli-advisory/job",
        "--",
        "sh",
        "-c",
        "echo $LEASEHOLD_FENCE",
    ]);
    assert!(
        run.status.success(),
        "cannot run on PostgreSQL at {url} ({}); start it with `scripts/services.sh`",
        text(&run.stderr)
    );
    assert!(
        text(&run.stdout).trim().parse::<u64>().is_ok(),
        "{}",
        text(&run.stdout)
    );
    let status = env.run(&["status", "cli-advisory/job"]);
    assert_eq!(status.status.code(), Some(64), "{}", text(&status.stderr));
    assert!(
        text(&status.stderr).contains("status is not supported by postgres (advisory)"),
        "{}",
        text(&status.stderr)
    );
    let read = env.run(&["run", "--read", "cli-advisory/job", "--", "true"]);
    assert!(read.status.success(), "{}", text(&read.stderr));
    let permit = env.run(&[
        "run",
        "--max-holders",
        "2",
        "cli-advisory/job",
        "--",
        "true",
    ]);
    assert_eq!(permit.status.code(), Some(64), "{}", text(&permit.stderr));
    assert!(
        text(&permit.stderr).contains("--max-holders is not supported by postgres (advisory)"),
        "{}",
        text(&permit.stderr)
    );
    let env = Env::with_url("advisory-bad", format!("{url}{join}sslmod=require"));
    let bad = env.run(&["run", "k", "--", "true"]);
    assert_eq!(bad.status.code(), Some(64), "{}", text(&bad.stderr));
    assert!(
        text(&bad.stderr).contains("unknown query parameter \"sslmod\""),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_a_nonzero_code() {
    let env = Env::new("bad");
    let cases: &[(&[&str], i32, &str)] = &[
        (&["--url", "bogus://x", "status", "k"], 64, "invalid URL"),
        (
            &["--url", "sqlite://", "status", "k"],
            64,
            "needs a file path",
        ),
        (
            &["run", "--ttl", "5x", "k", "--", "true"],
            2,
            "invalid value '5x'",
        ),
        (&["run", "k"], 2, "COMMAND"),
        (&["run", "", "--", "true"], 64, "invalid lock key"),
        (
            &["run", "--ttl", "0s", "k", "--", "true"],
            64,
            "invalid ttl",
        ),
        (
            &["run", "k", "--", "/nonexistent/command"],
            127,
            "cannot start",
        ),
        (
            &["--url", "memory://", "list"],
            64,
            "list is not supported by memory",
        ),
    ];
    for (args, code, message) in cases {
        let out = env.run(args);
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(message),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let unreachable = env.run(&["--url", "redis://127.0.0.1:1", "run", "k", "--", "true"]);
    assert_eq!(
        unreachable.status.code(),
        Some(69),
        "{}",
        text(&unreachable.stderr)
    );
}

/// Another process holding SQLite's write lock past the busy timeout (5 s) is a backend
/// failure, exit 69, not "held by someone else" (75): nobody may hold the key at all.
#[test]
fn a_database_locked_past_the_busy_timeout_is_a_backend_failure() {
    let env = Env::new("sqlite-busy");
    assert!(env.run(&["run", "job", "--", "true"]).status.success());
    let mut holder = env.hold_write_lock(12);
    let out = env.run(&["run", "--no-wait", "job", "--", "true"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("locked"),
        "{}",
        text(&out.stderr)
    );
}

/// Renewals that hang (another process holds SQLite's write lock, so each extend waits out the
/// busy timeout) must stop the command's whole group before the lease's validity ends.
#[test]
fn hanging_renewals_stop_the_group_before_the_validity_ends() {
    let env = Env::new("hanging");
    let mut run = env.spawn(&args_with_tree(&[
        "run", "--ttl", "3s", "--grace", "1s", "job",
    ]));
    env.wait_until_held("job", &mut run);
    let grandchild = env.grandchild();
    let mut holder = env.hold_write_lock(8);
    // No renewal can land from here on: the lease's validity ends within 3 s.
    let locked_at = Instant::now();
    while running(grandchild) && locked_at.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let gone_after = locked_at.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    let out = run.wait_with_output().unwrap();
    eprintln!("write lock taken to the group gone: {gone_after:?}");
    assert!(
        gone_after < Duration::from_millis(2_950),
        "the group outlived the lease's validity: gone {gone_after:?} after the last renewal could land"
    );
    assert_eq!(out.status.code(), Some(76), "{}", text(&out.stderr));
}

/// Without `--url` and `LEASEHOLD_URL`, the database is the same file whatever the working
/// directory (for root: /var/lib/leasehold), made if missing; a `./leasehold.db` of the old
/// default gets a warning.
#[test]
fn without_a_url_the_database_does_not_depend_on_the_working_directory() {
    let env = Env::new("default-db");
    std::fs::write(env.dir.join("leasehold.db"), b"").unwrap();
    let home = env.dir.join("home");
    let out = Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .current_dir(&env.dir)
        .env_remove("LEASEHOLD_URL")
        .env_remove("XDG_STATE_HOME")
        .env("HOME", &home)
        .args(["status", "default-db-check"])
        .output()
        .unwrap();
    let said = text(&out.stderr);
    assert!(out.status.success(), "{said}");
    let expected = if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/lib/leasehold/leasehold.db")
    } else {
        home.join(".local/state/leasehold/leasehold.db")
    };
    assert!(expected.exists(), "{} was not made", expected.display());
    assert!(
        said.contains("./leasehold.db (the default before) is not used")
            && said.contains(&expected.display().to_string()),
        "{said}"
    );
}

#[test]
fn a_password_in_the_url_never_appears_in_messages() {
    let env = Env::new("redaction");
    for url in [
        "redis://u:se/cret@127.0.0.1:1",
        "rediss://u:se?cr#et@127.0.0.1:1",
        "redis+cluster://u:se/cret@127.0.0.1:1,127.0.0.1:2",
        "redis+cluster://u:secret@127.0.0.1:1,,127.0.0.1:2",
        "postgres://u:se/cret@127.0.0.1:1/db",
        "postgres://u:se@cret@127.0.0.1:1/db",
        "bogus://u:secret@host",
    ] {
        let out = env
            .command(&["-v", "status", "k"])
            .env("LEASEHOLD_URL", url)
            .output()
            .unwrap();
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(!out.status.success(), "{url}: {said}");
        for secret in ["se/cret", "se?cr#et", "se@cret", "secret"] {
            assert!(!said.contains(secret), "{url}: {said}");
        }
    }
}

/// Under a pseudo-terminal (`script`): the command's group is the terminal's foreground group,
/// so it reads the terminal (without it, SIGTTIN stops it and this test times out), and one
/// Ctrl-C typed at the terminal reaches it once.
#[test]
fn an_interactive_command_reads_the_terminal_and_gets_one_ctrl_c() {
    use std::io::Write as _;
    let env = Env::new("tty");
    let interrupts = env.dir.join("interrupts");
    let inner = format!(
        "env --default-signal=INT,QUIT '{bin}' --url 'sqlite://{db}' run job -- sh -c 'read line; echo \"got:$line\"; \
         trap \"echo int >> {interrupts}; exit 3\" INT; echo ready; for i in $(seq 200); do sleep 0.1; done'",
        bin = env!("CARGO_BIN_EXE_leasehold"),
        db = env.dir.join("leasehold.db").display(),
        interrupts = interrupts.display(),
    );
    let mut script = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1), from util-linux");
    let mut stdin = script.stdin.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    let stdout = script.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let printed = |what: &str, within: Duration| {
        let started = Instant::now();
        while started.elapsed() < within {
            if let Ok(line) = seen.recv_timeout(Duration::from_millis(100)) {
                if line.contains(what) {
                    return true;
                }
            }
        }
        false
    };
    // Typed again until read: input that reaches the pseudo-terminal before script(1) has set
    // it up is flushed away, which a loaded machine makes likely.
    let mut read = false;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(500));
        stdin.write_all(b"hello\n").unwrap();
        stdin.flush().unwrap();
        if printed("got:hello", Duration::from_secs(3)) {
            read = true;
            break;
        }
    }
    assert!(
        read,
        "the command never printed \"got:hello\" (stopped reading the terminal?)"
    );
    assert!(
        printed("ready", Duration::from_secs(15)),
        "the command never printed \"ready\""
    );
    stdin.write_all(b"\x03").unwrap(); // Ctrl-C
    stdin.flush().unwrap();
    let status = script.wait().unwrap();
    let seen_interrupts = std::fs::read_to_string(&interrupts).unwrap_or_default();
    assert_eq!(
        seen_interrupts.lines().count(),
        1,
        "the command saw {seen_interrupts:?}"
    );
    assert_eq!(
        status.code(),
        Some(3),
        "the command's exit code through leasehold and script"
    );
}

/// leasehold killed with SIGKILL cannot stop anything itself: its watchdog stops the command's
/// whole group within the grace.
#[test]
fn sigkill_or_a_crash_of_leasehold_still_stops_the_whole_group() {
    use nix::sys::signal::Signal;
    // SIGABRT stands for a crash (an abort, a panic while panicking): no handler of leasehold
    // runs. (A SIGSEGV sent by kill is no crash: Rust's stack-overflow handler returns from it.)
    for signal in [Signal::SIGKILL, Signal::SIGABRT] {
        let env = Env::new(&format!("crash-{signal}"));
        let mut run = env.spawn(&args_with_tree(&["run", "--grace", "1s", "job"]));
        env.wait_until_held("job", &mut run);
        let grandchild = env.grandchild();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(run.id()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
        let status = run.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(signal as i32),
            "leasehold died of {signal}"
        );
        let killed_at = Instant::now();
        while running(grandchild) && killed_at.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let gone_after = killed_at.elapsed();
        eprintln!("{signal} of leasehold to the group gone: {gone_after:?}");
        assert!(
            gone_after < Duration::from_secs(3),
            "the group outlived leasehold's death by {signal}: {gone_after:?}"
        );
    }
}

/// `leasehold -v run .. 2>&1 | head -1`: stderr closed while leasehold still has progress to
/// print; it must go on (and exit with the command's code), never panic.
#[test]
fn a_closed_stderr_does_not_stop_leasehold() {
    let env = Env::new("epipe");
    let mut run = env
        .command(&["-v", "run", "--ttl", "3s", "job", "--", "sleep", "1.5"])
        .spawn()
        .unwrap();
    drop(run.stderr.take()); // the reader is gone: every write gets EPIPE
    let status = run.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "leasehold did not survive a closed stderr"
    );
    assert_eq!(env.json_status("job")["held"], false);
}

/// `nohup leasehold run ..`: a hangup leasehold was started ignoring stays ignored, for it and
/// the command.
#[test]
fn a_hangup_ignored_by_nohup_stays_ignored() {
    let env = Env::new("nohup");
    let mut command = Command::new("nohup");
    command
        .arg(env!("CARGO_BIN_EXE_leasehold"))
        .args(["run", "job", "--", "sleep", "1.5"])
        .current_dir(&env.dir)
        .env(
            "LEASEHOLD_URL",
            format!("sqlite://{}", env.dir.join("leasehold.db").display()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut run = command.spawn().expect("nohup");
    env.wait_until_held("job", &mut run);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(run.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let status = run.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "a hangup under nohup stopped the command"
    );
}

/// On etcd (`etcd://`, the shared 3-member cluster): the command's exit code is passed on
/// (`etcdctl lock` 3.4.23 answers 1 for a child's 3), the admin commands work, and a lost
/// lease stops the whole group (`etcdctl lock` leaves its child running).
#[cfg(feature = "etcd")]
#[test]
fn etcd_runs_pass_the_exit_code_and_a_lost_lease_stops_the_group() {
    let url = leasehold_testkit::env::etcd_url();
    let env = Env::with_url("etcd", url);
    let prefix = format!("cli-etcd/{}/", std::process::id());
    let key = format!("cli-etcd-exit/{}", std::process::id());
    let out = env.run(&[
        "run",
        &key,
        "--",
        "sh",
        "-c",
        "echo $LEASEHOLD_FENCE; exit 3",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}\n(is etcd running? `scripts/services.sh` starts it)",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).trim().parse::<u64>().unwrap() >= 1);
    admin_commands_on(&env, &prefix);
    let _ = std::fs::remove_file(env.dir.join("grandchild.pid"));
    let lost = format!("cli-etcd-lost/{}", std::process::id());
    let mut run = env.spawn(&args_with_tree(&[
        "run", "--ttl", "3s", "--grace", "1s", &lost,
    ]));
    env.wait_until_held(&lost, &mut run);
    let grandchild = env.grandchild();
    let forced = env.run(&["release", "--force", &lost]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    let started = Instant::now();
    let out = run.wait_with_output().unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(76), "{}", text(&out.stderr));
    assert!(!running(grandchild), "the grandchild outlived a lost lease");
    eprintln!("etcd: forced release to leasehold's exit, group gone: {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
