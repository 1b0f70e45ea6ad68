//! [`PrivatePgBouncer`]: a PgBouncer of a test's own, in transaction pooling.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;

use crate::{
    failed,
    os::{chown_postgres, is_root, signal},
    ports::free_port,
};

/// A private PgBouncer (transaction pooling, trust auth, as user `postgres` when run as root:
/// PgBouncer refuses root) on a free loopback port in front of a PostgreSQL on `server_port`,
/// stopped and removed when dropped.
#[derive(Debug)]
pub struct PrivatePgBouncer {
    /// Its loopback port.
    pub port: u16,
    dir: PathBuf,
}

impl PrivatePgBouncer {
    /// Starts one in front of the PostgreSQL on 127.0.0.1:`server_port`.
    ///
    /// # Panics
    ///
    /// When pgbouncer is missing or does not come up (the message says how to install it).
    pub fn start(server_port: u16) -> Self {
        Self::try_start(server_port).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`start`](Self::start), returning what went wrong.
    ///
    /// # Errors
    ///
    /// When pgbouncer is missing or does not come up.
    pub fn try_start(server_port: u16) -> std::io::Result<Self> {
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("leasehold-pgbouncer-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n")?;
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host=127.0.0.1 port={server_port}\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                 unix_socket_dir =\nauth_type = trust\nauth_file = {dir}/userlist.txt\n\
                 pool_mode = transaction\nmax_client_conn = 200\ndefault_pool_size = 20\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
                dir = dir.display()
            ),
        )?;
        if is_root() {
            chown_postgres(&dir, true)?;
        }
        let bouncer = Self { port, dir };
        bouncer.try_spawn()?;
        Ok(bouncer)
    }

    fn try_spawn(&self) -> std::io::Result<()> {
        let bin = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|bin| std::path::Path::new(bin).exists())
            .unwrap_or("pgbouncer");
        let ini = self.dir.join("pgbouncer.ini");
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", bin]);
            command
        } else {
            Command::new(bin)
        };
        let status = command.arg("-d").arg(&ini).status().map_err(|e| {
            failed(format!(
                "cannot start pgbouncer ({e}): install it with `apt-get install pgbouncer` or \
                 run `scripts/services.sh`"
            ))
        })?;
        if !status.success() {
            return Err(failed(format!(
                "pgbouncer did not start ({status}): see {}",
                self.dir.join("pgbouncer.log").display()
            )));
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(failed(format!(
            "private pgbouncer on port {} did not start within 10 s",
            self.port
        )))
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("pgbouncer.pid"))
            .ok()
            .and_then(|pid| pid.trim().parse().ok())
    }

    /// kill -9: every client and server connection through it ends at once.
    pub fn kill(&self) {
        if let Some(pid) = self.pid() {
            signal(Signal::SIGKILL, &[pid]);
            let gone_by = Instant::now() + Duration::from_secs(5);
            while Instant::now() < gone_by
                && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = std::fs::remove_file(self.dir.join("pgbouncer.pid"));
        }
    }

    /// kill -9, then start again on the same port.
    ///
    /// # Panics
    ///
    /// When it does not come back.
    pub fn restart(&self) {
        self.kill();
        self.try_spawn().unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for PrivatePgBouncer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
