//! [`PrivatePgBouncer`]: a PgBouncer of a test's own, in transaction pooling.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{
    failed,
    os::{chown_postgres, is_root, temp_dir},
    ports::free_port,
};

/// A private PgBouncer (transaction pooling, trust auth; `-u postgres` when run as root, since
/// PgBouncer refuses root) on a free loopback port in front of a PostgreSQL on `server_port`,
/// run in the foreground as a child of the test, killed and removed when dropped.
#[derive(Debug)]
pub struct PrivatePgBouncer {
    /// Its loopback port.
    pub port: u16,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
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
        // Made first, so its `Drop` removes the directory whatever fails after.
        let bouncer = Self {
            port,
            dir: temp_dir("pgbouncer", port)?,
            child: Mutex::new(None),
        };
        let dir = &bouncer.dir;
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
            chown_postgres(dir, true)?;
        }
        bouncer.try_spawn()?;
        Ok(bouncer)
    }

    fn try_spawn(&self) -> std::io::Result<()> {
        let bin = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|bin| std::path::Path::new(bin).exists())
            .unwrap_or("pgbouncer");
        let ini = self.dir.join("pgbouncer.ini");
        let mut command = Command::new(bin);
        if is_root() {
            command.args(["-u", "postgres"]);
        }
        let mut child = command
            .arg(&ini)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                failed(format!(
                    "cannot start pgbouncer ({e}): install it with `apt-get install pgbouncer` \
                     or run `scripts/services.sh`"
                ))
            })?;
        let started = Instant::now();
        let up = loop {
            if let Some(status) = child.try_wait()? {
                break Err(failed(format!(
                    "pgbouncer exited at start ({status}): see {}",
                    self.dir.join("pgbouncer.log").display()
                )));
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break Ok(());
            }
            if started.elapsed() > Duration::from_secs(10) {
                break Err(failed(format!(
                    "private pgbouncer on port {} did not start within 10 s",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        *self.child() = Some(child);
        up
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// kill -9: every client and server connection through it ends at once.
    pub fn kill(&self) {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
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
