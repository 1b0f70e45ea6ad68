//! URLs to backends.

use std::sync::Arc;

use leasehold::{
    memory::MemoryLock, DistributedLock, DistributedRwLock, DistributedSemaphore, LockAdmin,
    LockError,
};

use std::path::{Path, PathBuf};

/// Where the default database lives when neither `--url` nor `LEASEHOLD_URL` is set: for root,
/// or a process without `HOME` (systemd units, some cron setups), `/var/lib/leasehold`; else
/// `$XDG_STATE_HOME/leasehold` (when absolute) or `~/.local/state/leasehold`. Never the
/// working directory, so cron, systemd and a shell running the same job share one file.
pub(crate) fn default_database(
    is_root: bool,
    home: Option<&str>,
    state_home: Option<&str>,
) -> PathBuf {
    let dir = match (is_root, home.filter(|h| !h.is_empty())) {
        (true, _) | (_, None) => PathBuf::from("/var/lib/leasehold"),
        (false, Some(home)) => match state_home.filter(|s| Path::new(s).is_absolute()) {
            Some(state) => Path::new(state).join("leasehold"),
            None => Path::new(home).join(".local/state/leasehold"),
        },
    };
    dir.join("leasehold.db")
}

/// The default database's URL, its directory made if missing.
///
/// # Errors
///
/// `InvalidConfig` naming the directory when it cannot be made.
pub(crate) fn default_url() -> Result<String, LockError> {
    let home = std::env::var("HOME").ok();
    let state = std::env::var("XDG_STATE_HOME").ok();
    let path = default_database(
        nix::unistd::geteuid().is_root(),
        home.as_deref(),
        state.as_deref(),
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            LockError::invalid_config(
                format!("the default database's directory {}", dir.display()),
                format!("{e}; make it, or pass --url sqlite://PATH"),
            )
        })?;
    }
    let old = Path::new("leasehold.db");
    if old.exists() && std::fs::canonicalize(old).ok() != std::fs::canonicalize(&path).ok() {
        note!(
            "leasehold: ./leasehold.db (the default before) is not used; the default database is \
             {} (pass --url sqlite://leasehold.db to keep using the old file)",
            path.display()
        );
    }
    Ok(format!("sqlite://{}", path.display()))
}

/// A connected backend, with its admin side where it has one.
pub(crate) struct Backend {
    pub(crate) lock: Arc<dyn DistributedLock>,
    pub(crate) admin: Option<Arc<dyn LockAdmin>>,
    /// The same store as a read/write lock and as a semaphore, where the backend has them.
    pub(crate) rw: Option<Arc<dyn DistributedRwLock>>,
    pub(crate) semaphore: Option<Arc<dyn DistributedSemaphore>>,
    pub(crate) name: &'static str,
}

/// Connects to the backend a URL names.
pub(crate) async fn connect(url: &str) -> Result<Backend, LockError> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("sqlite") => {
            let path = &url["sqlite://".len()..];
            if path.is_empty() {
                return Err(LockError::invalid_config(
                    format!("URL {url:?}"),
                    "sqlite:// needs a file path, e.g. sqlite://locks.db",
                ));
            }
            let lock = Arc::new(leasehold_sqlite::SqliteLock::open(path).await?);
            Ok(Backend {
                admin: Some(lock.clone()),
                rw: Some(lock.clone()),
                semaphore: Some(lock.clone()),
                lock,
                name: "sqlite",
            })
        }
        Some("redis" | "rediss" | "redis+cluster" | "rediss+cluster" | "redis+unix") => {
            let lock = Arc::new(leasehold_redis::RedisLock::connect(url).await?);
            Ok(Backend {
                admin: Some(lock.clone()),
                rw: Some(lock.clone()),
                semaphore: Some(lock.clone()),
                lock,
                name: "redis",
            })
        }
        Some("postgres" | "postgresql") => {
            let (url, advisory) = postgres_url(url)?;
            if advisory {
                // No admin side: the advisory strategy keeps no per-key state; no semaphore:
                // PostgreSQL has no counted advisory lock.
                let lock = Arc::new(leasehold_postgres::PostgresAdvisoryLock::connect(&url).await?);
                return Ok(Backend {
                    lock: lock.clone(),
                    admin: None,
                    rw: Some(lock),
                    semaphore: None,
                    name: "postgres (advisory)",
                });
            }
            let lock = Arc::new(leasehold_postgres::PostgresLock::connect(&url).await?);
            Ok(Backend {
                admin: Some(lock.clone()),
                rw: Some(lock.clone()),
                semaphore: Some(lock.clone()),
                lock,
                name: "postgres",
            })
        }
        #[cfg(feature = "etcd")]
        Some("etcd" | "etcds") => {
            let lock = Arc::new(
                leasehold_etcd::EtcdLockBuilder::from_url(url)?
                    .connect()
                    .await?,
            );
            // Read/write locks and semaphores are not built on etcd yet.
            Ok(Backend {
                admin: Some(lock.clone()),
                rw: None,
                semaphore: None,
                lock,
                name: "etcd",
            })
        }
        #[cfg(not(feature = "etcd"))]
        Some("etcd" | "etcds") => Err(LockError::invalid_config(
            format!("URL {:?}", leasehold::redact::url(url)),
            "this leasehold was built without the `etcd` feature",
        )),
        Some("memory") => Ok(Backend {
            lock: Arc::new(MemoryLock::new()),
            admin: None,
            rw: Some(Arc::new(MemoryLock::new())),
            semaphore: Some(Arc::new(MemoryLock::new())),
            name: "memory",
        }),
        _ => Err(LockError::invalid_config(
            format!("URL {:?}", leasehold::redact::url(url)),
            "use sqlite://PATH, redis://HOST, rediss://HOST, redis+cluster://HOST:PORT,..., \
             postgres://HOST/DB, etcd://HOST:PORT,... or memory://",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::default_database;

    #[test]
    fn the_default_database_never_depends_on_the_working_directory() {
        let cases = [
            (true, Some("/root"), None, "/var/lib/leasehold/leasehold.db"),
            (false, None, None, "/var/lib/leasehold/leasehold.db"),
            (false, Some(""), None, "/var/lib/leasehold/leasehold.db"),
            (
                false,
                Some("/home/ann"),
                None,
                "/home/ann/.local/state/leasehold/leasehold.db",
            ),
            (
                false,
                Some("/home/ann"),
                Some("/srv/state"),
                "/srv/state/leasehold/leasehold.db",
            ),
            (
                false,
                Some("/home/ann"),
                Some("relative"),
                "/home/ann/.local/state/leasehold/leasehold.db",
            ),
        ];
        for (root, home, state, expected) in cases {
            assert_eq!(
                default_database(root, home, state).to_str(),
                Some(expected),
                "{root} {home:?} {state:?}"
            );
        }
    }
}

/// The connection parameters sqlx reads from a `postgres://` URL's query; sqlx ignores any
/// other, so a misspelt `sslmode` would silently connect without TLS.
const POSTGRES_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// Splits leasehold's own `strategy=lease-table|advisory` off a `postgres://` URL and checks
/// the other query parameters: `(the URL for sqlx, whether the strategy is advisory)`.
fn postgres_url(url: &str) -> Result<(String, bool), LockError> {
    let shown = || format!("URL {:?}", leasehold::redact::url(url));
    // The user info ends at the last `@`, as in `leasehold::redact`: a `?` or `#` before it
    // may belong to a password, so the query cannot be told apart (and nothing is echoed).
    let host_at = url.rfind('@').map_or(0, |at| at + 1);
    if url[..host_at].contains(['?', '#']) {
        return Err(LockError::invalid_config(
            shown(),
            "a `?` or `#` before the last `@`: percent-encode `?` and `#` in the password \
             (%3F, %23), or `@` in query values (%40)",
        ));
    }
    if url[host_at..].contains('#') {
        return Err(LockError::invalid_config(
            shown(),
            "a #fragment means nothing in a postgres URL: remove it",
        ));
    }
    let Some((base, query)) = url[host_at..]
        .split_once('?')
        .map(|(host, query)| (&url[..host_at + host.len()], query))
    else {
        return Ok((url.to_owned(), false));
    };
    let mut advisory = false;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "strategy" => {
                advisory = match value {
                    "advisory" => true,
                    "lease-table" | "lease_table" => false,
                    _ => {
                        return Err(LockError::invalid_config(
                            shown(),
                            format!("strategy {value:?}: use strategy=lease-table (the default) or strategy=advisory"),
                        ))
                    }
                }
            }
            known if POSTGRES_PARAMETERS.contains(&known) || known.starts_with("options[") => {
                kept.push(pair);
            }
            unknown => {
                return Err(LockError::invalid_config(
                    shown(),
                    format!(
                        "unknown query parameter {unknown:?}: leasehold takes strategy=advisory, \
                         and PostgreSQL's {}",
                        POSTGRES_PARAMETERS.join(", ")
                    ),
                ))
            }
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, advisory))
}

#[cfg(test)]
mod postgres_url_tests {
    use super::postgres_url;

    #[test]
    fn postgres_urls_take_the_strategy_and_refuse_unknown_parameters() {
        let ok = |url: &str| postgres_url(url).unwrap();
        assert_eq!(ok("postgres://h/db"), ("postgres://h/db".to_owned(), false));
        assert_eq!(
            ok("postgres://h/db?strategy=advisory"),
            ("postgres://h/db".to_owned(), true)
        );
        assert_eq!(
            ok("postgres://u:p@h/db?sslmode=verify-full&strategy=advisory&application_name=x"),
            (
                "postgres://u:p@h/db?sslmode=verify-full&application_name=x".to_owned(),
                true
            )
        );
        assert_eq!(
            ok("postgres://h/db?strategy=lease-table"),
            ("postgres://h/db".to_owned(), false)
        );
        for (bad, says) in [
            (
                "postgres://u:secret@h/db?sslmod=require",
                "unknown query parameter \"sslmod\"",
            ),
            (
                "postgres://u:secret@h/db?strategy=fast",
                "strategy \"fast\"",
            ),
            ("postgres://u:sec?ret@h/db", "percent-encode"),
            (
                "postgres://u:sec#ret@h/db?strategy=advisory",
                "percent-encode",
            ),
            ("postgres://u:secret@h/db?strategy=advisory#x", "fragment"),
            ("postgres://h/db?password=se@cret", "`@` in query values"),
        ] {
            let error = postgres_url(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{error}");
            for secret in ["secret", "sec?ret", "ret@", "sec#ret", "se@cret", "cret"] {
                assert!(!error.contains(secret), "{error}");
            }
        }
        assert_eq!(
            ok("postgres://u:p%3Fss@h/db?strategy=advisory"),
            ("postgres://u:p%3Fss@h/db".to_owned(), true)
        );
    }
}
