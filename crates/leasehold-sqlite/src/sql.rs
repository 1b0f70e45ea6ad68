//! The SQL of the SQLite lease table (format 2), built once from a validated table name.
//!
//! Time is the machine's `CLOCK_BOOTTIME` in milliseconds with the boot's id (see
//! [`crate::clock`]), read by the caller and bound as a parameter: a lease is live while its
//! row's `boot` is this boot's and `expires_ms` is ahead of now. Every value is a bind
//! parameter; every statement numbers them the same way: `?1` key (or prefix), `?2` now in ms,
//! `?3` boot id, `?4` token, `?5` ttl in ms (each statement uses a prefix of that list).

use leasehold::LockError;

/// The lease format this crate writes, also kept in `PRAGMA user_version`.
pub(crate) const FORMAT: i64 = 2;

/// The name of the constraint that refuses writes of the old format (leasehold-sqlite before
/// format 2 sets `expires_at` by the wall clock): an old binary's error names it.
pub(crate) const OLD_BINARY_REFUSED: &str =
    "leasehold_sqlite_format_2_needs_a_newer_leasehold_sqlite";

/// Checks a table name: `^[A-Za-z_][A-Za-z0-9_]{0,62}$` (the same rule as the PostgreSQL
/// backend), so quoting it cannot be escaped.
pub(crate) fn check_table(name: &str) -> Result<(), LockError> {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if name.len() <= 63 && starts_well && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Ok(());
    }
    let shown: String = name.chars().take(80).flat_map(char::escape_debug).collect();
    Err(LockError::invalid_config(
        format!("sqlite table name \"{shown}\""),
        "must match ^[A-Za-z_][A-Za-z0-9_]{0,62}$",
    ))
}

#[derive(Debug, Clone)]
pub(crate) struct Statements {
    pub(crate) create_table: String,
    pub(crate) columns: String,
    pub(crate) migrate: [String; 4],
    pub(crate) acquire: String,
    pub(crate) holder_left: String,
    pub(crate) extend: String,
    pub(crate) release: String,
    pub(crate) status: String,
    pub(crate) list: String,
    pub(crate) force_release: String,
    /// Read/write locks and semaphores.
    pub(crate) holders: crate::holders::HolderStatements,
}

/// The columns of a format-2 table. `expires_at` (the old format's wall-clock expiry) stays,
/// always NULL: a CHECK refuses any write of it, so an old binary fails with an error naming
/// [`OLD_BINARY_REFUSED`] instead of misreading the new rows.
fn columns() -> String {
    format!(
        "key        TEXT PRIMARY KEY NOT NULL,
         token      BLOB,
         fence      INTEGER NOT NULL,
         expires_at INTEGER CONSTRAINT {OLD_BINARY_REFUSED} CHECK (expires_at IS NULL),
         boot       TEXT,
         expires_ms INTEGER"
    )
}

impl Statements {
    pub(crate) fn new(table: &str) -> Self {
        let t = format!("\"{table}\"");
        let next = format!("\"{table}__format_2\"");
        // Live: held by a token, in this boot, not yet expired.
        let live = "token IS NOT NULL AND boot = ?3 AND expires_ms > ?2";
        Self {
            holders: crate::holders::HolderStatements::new(table),
            // One row per key ever locked; a release keeps the row so its fence never goes back.
            create_table: format!("CREATE TABLE IF NOT EXISTS {t} ({})", columns()),
            // ?1 table name: its columns (none if it does not exist).
            columns: "SELECT name FROM pragma_table_info(?1)".to_owned(),
            // From the old format, in one IMMEDIATE transaction: a new table, every row copied
            // with its fence; a lease still running by the wall clock keeps its remaining time
            // on this boot's clock (so a holder of an old binary keeps its exclusion until its
            // lease ends, though its renewals now fail), every other lease is voided.
            // ?1 now in ms (boot clock), ?2 boot id.
            migrate: [
                format!("CREATE TABLE {next} ({})", columns()),
                format!(
                    "INSERT INTO {next} (key, token, fence, boot, expires_ms)
                     SELECT key,
                            CASE WHEN live THEN token END,
                            fence,
                            CASE WHEN live THEN ?2 END,
                            CASE WHEN live THEN ?1 + (expires_at - wall_ms) END
                     FROM (SELECT *, token IS NOT NULL AND expires_at > wall_ms AS live
                           FROM (SELECT *, CAST((julianday('now') - 2440587.5) * 86400000.0
                                                AS INTEGER) AS wall_ms FROM {t}))"
                ),
                format!("DROP TABLE {t}"),
                format!("ALTER TABLE {next} RENAME TO \"{table}\""),
            ],
            // ONE statement: a new key, or a free, expired or previous-boot row taken over with
            // fence + 1. Returns no row when someone holds the key.
            acquire: format!(
                "INSERT INTO {t} (key, token, fence, boot, expires_ms) VALUES (?1, ?4, 1, ?3, ?2 + ?5)
                 ON CONFLICT (key) DO UPDATE
                     SET token = excluded.token, fence = fence + 1, boot = excluded.boot,
                         expires_ms = excluded.expires_ms
                     WHERE NOT ({live})
                 RETURNING fence"
            ),
            // The holder's remaining ms, for a waiter.
            holder_left: format!("SELECT expires_ms - ?2 FROM {t} WHERE key = ?1 AND {live}"),
            // Only while our token holds a live lease.
            extend: format!(
                "UPDATE {t} SET expires_ms = ?2 + ?5 WHERE key = ?1 AND {live} AND token = ?4"
            ),
            // Only while our token holds a live lease; keeps the row.
            release: format!(
                "UPDATE {t} SET token = NULL, boot = NULL, expires_ms = NULL
                 WHERE key = ?1 AND {live} AND token = ?4"
            ),
            // Fence, and the remaining ms if held.
            status: format!(
                "SELECT fence, CASE WHEN {live} THEN expires_ms - ?2 END FROM {t} WHERE key = ?1"
            ),
            // ?1 prefix: every key starting with it, with fence and remaining ms if held.
            list: format!(
                "SELECT key, fence, CASE WHEN {live} THEN expires_ms - ?2 END
                 FROM {t} WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key"
            ),
            // An administrator's release, whoever holds the key.
            force_release: format!(
                "UPDATE {t} SET token = NULL, boot = NULL, expires_ms = NULL
                 WHERE key = ?1 AND {live}"
            ),
        }
    }
}
