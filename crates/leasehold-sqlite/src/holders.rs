//! The SQL of read/write locks and semaphores: one holder row per lease (and per waiting
//! writer's mark), and one fence counter per key and primitive, in two tables beside the lease
//! table.
//!
//! `space` keeps the primitives apart (`rw`, `sem`); `role` is `read`, `write`, `mark` or
//! `permit`. A row is live while its `boot` is this boot's and `expires_ms` is ahead of now
//! (the clock of [`crate::clock`]). Parameters: `?1` space, `?2` key, `?3` now in ms, `?4`
//! boot id, then each statement's own.

/// The statements, built once from the validated lease table name.
#[derive(Debug, Clone)]
pub(crate) struct HolderStatements {
    pub(crate) create: [String; 2],
    /// Drops the rows of `?1`/`?2` that are not live.
    pub(crate) prune: String,
    /// Live rows per role: `?5` a role, returns count, the soonest end and the latest end.
    pub(crate) count: String,
    /// `?5` role, `?6` token, `?7` ends at (ms), `?8` the semaphore limit (or NULL).
    pub(crate) insert: String,
    /// The stored limit of the live permits.
    pub(crate) limit: String,
    /// The next fence of `?1`/`?2`.
    pub(crate) fence: String,
    /// `?5` role, `?6` token, `?7` ttl ms: the live row's new end; rows changed.
    pub(crate) extend: String,
    /// `?5` role, `?6` token: deletes the row; returns whether it was live.
    pub(crate) release: String,
    /// Admin, one key: its last fence, live holders, whether one writes, ms left on the last
    /// to end, the stored limit; no row if it was never granted.
    pub(crate) status: String,
    /// Admin: the same with the key first, for every key starting with `?2` granted in space
    /// `?1`, in byte order.
    pub(crate) list: String,
}

impl HolderStatements {
    pub(crate) fn new(table: &str) -> Self {
        let holders = format!("\"{table}__holders\"");
        let fences = format!("\"{table}__fences\"");
        let live = "boot = ?4 AND expires_ms > ?3";
        Self {
            create: [
                format!(
                    "CREATE TABLE IF NOT EXISTS {holders} (
                         space       TEXT NOT NULL,
                         key         TEXT NOT NULL,
                         token       BLOB NOT NULL,
                         role        TEXT NOT NULL,
                         boot        TEXT NOT NULL,
                         expires_ms  INTEGER NOT NULL,
                         max_holders INTEGER,
                         PRIMARY KEY (space, key, token)
                     )"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {fences} (
                         space TEXT NOT NULL,
                         key   TEXT NOT NULL,
                         fence INTEGER NOT NULL,
                         PRIMARY KEY (space, key)
                     )"
                ),
            ],
            prune: format!("DELETE FROM {holders} WHERE space = ?1 AND key = ?2 AND NOT ({live})"),
            count: format!(
                "SELECT count(*), min(expires_ms) - ?3, max(expires_ms) - ?3 FROM {holders}
                 WHERE space = ?1 AND key = ?2 AND role = ?5 AND {live}"
            ),
            insert: format!(
                "INSERT INTO {holders} (space, key, token, role, boot, expires_ms, max_holders)
                 VALUES (?1, ?2, ?6, ?5, ?4, ?7, ?8)
                 ON CONFLICT (space, key, token) DO UPDATE
                     SET boot = excluded.boot, expires_ms = excluded.expires_ms"
            ),
            limit: format!(
                "SELECT max(max_holders) FROM {holders}
                 WHERE space = ?1 AND key = ?2 AND role = 'permit' AND {live}"
            ),
            fence: format!(
                "INSERT INTO {fences} (space, key, fence) VALUES (?1, ?2, 1)
                 ON CONFLICT (space, key) DO UPDATE SET fence = fence + 1
                 RETURNING fence"
            ),
            extend: format!(
                "UPDATE {holders} SET expires_ms = ?3 + ?7
                 WHERE space = ?1 AND key = ?2 AND role = ?5 AND token = ?6 AND {live}"
            ),
            release: format!(
                "DELETE FROM {holders}
                 WHERE space = ?1 AND key = ?2 AND role = ?5 AND token = ?6
                 RETURNING {live}"
            ),
            status: admin_query(&holders, &fences, "f.key = ?2"),
            list: admin_query(
                &holders,
                &fences,
                "substr(f.key, 1, length(?2)) = ?2 ORDER BY f.key",
            ),
        }
    }
}

/// See [`HolderStatements::status`]: one row per fence counter, its holders counted at `?3`.
fn admin_query(holders: &str, fences: &str, which: &str) -> String {
    let of = |what: &str, roles: &str| {
        format!(
            "(SELECT {what} FROM {holders} h WHERE h.space = f.space AND h.key = f.key
               AND h.role IN ({roles}) AND h.boot = ?4 AND h.expires_ms > ?3)"
        )
    };
    let held = "'read', 'write', 'permit'";
    format!(
        "SELECT f.key, f.fence, {}, {} > 0, {}, {} FROM {fences} f WHERE f.space = ?1 AND {which}",
        of("count(*)", held),
        of("count(*)", "'write'"),
        of("max(h.expires_ms) - ?3", held),
        of("max(h.max_holders)", "'permit'"),
    )
}
