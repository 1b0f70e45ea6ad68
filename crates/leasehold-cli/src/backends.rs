//! URLs to backends.

use std::sync::Arc;

use leasehold::{memory::MemoryLock, DistributedLock, LockAdmin, LockError};

/// The database file used when neither `--url` nor `LEASEHOLD_URL` is set.
pub(crate) const DEFAULT_URL: &str = "sqlite://leasehold.db";

/// A connected backend, with its admin side where it has one.
pub(crate) struct Backend {
    pub(crate) lock: Arc<dyn DistributedLock>,
    pub(crate) admin: Option<Arc<dyn LockAdmin>>,
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
                lock,
                name: "sqlite",
            })
        }
        Some("redis" | "rediss") => {
            let lock = Arc::new(leasehold_redis::RedisLock::connect(url).await?);
            Ok(Backend {
                admin: Some(lock.clone()),
                lock,
                name: "redis",
            })
        }
        Some("postgres" | "postgresql") => {
            let lock = Arc::new(leasehold_postgres::PostgresLock::connect(url).await?);
            Ok(Backend {
                admin: Some(lock.clone()),
                lock,
                name: "postgres",
            })
        }
        Some("memory") => Ok(Backend {
            lock: Arc::new(MemoryLock::new()),
            admin: None,
            name: "memory",
        }),
        _ => Err(LockError::invalid_config(
            format!("URL {:?}", leasehold::redact::url(url)),
            "use sqlite://PATH, redis://HOST, rediss://HOST, postgres://HOST/DB or memory://",
        )),
    }
}
