//! The SQL of the SQLite lease table, built once from a validated table name.
//!
//! Time is the machine's wall clock in milliseconds, read by SQLite itself (`julianday('now')`),
//! so every process on the machine uses the same clock. Every value is a bind parameter.

use leasehold::LockError;

/// Milliseconds since the Unix epoch, as SQLite computes it.
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

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
    pub(crate) acquire: String,
    pub(crate) holder_left: String,
    pub(crate) extend: String,
    pub(crate) release: String,
    pub(crate) status: String,
    pub(crate) list: String,
    pub(crate) force_release: String,
}

impl Statements {
    pub(crate) fn new(table: &str) -> Self {
        let t = format!("\"{table}\"");
        Self {
            // One row per key ever locked; a release keeps the row so its fence never goes back.
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                    key        TEXT PRIMARY KEY NOT NULL,
                    token      BLOB,
                    fence      INTEGER NOT NULL,
                    expires_at INTEGER
                )"
            ),
            // ONE statement: a new key, or a free or expired row taken over with fence + 1.
            // Returns no row when someone holds the key. ?1 key, ?2 token, ?3 ttl in ms.
            acquire: format!(
                "INSERT INTO {t} (key, token, fence, expires_at) VALUES (?1, ?2, 1, {NOW_MS} + ?3)
                 ON CONFLICT (key) DO UPDATE
                     SET token = excluded.token, fence = fence + 1, expires_at = excluded.expires_at
                     WHERE token IS NULL OR expires_at <= {NOW_MS}
                 RETURNING fence"
            ),
            // The holder's remaining ms, for a waiter. ?1 key.
            holder_left: format!(
                "SELECT expires_at - {NOW_MS} FROM {t} WHERE key = ?1 AND token IS NOT NULL"
            ),
            // Only while our token holds an unexpired lease. ?1 key, ?2 token, ?3 ttl in ms.
            extend: format!(
                "UPDATE {t} SET expires_at = {NOW_MS} + ?3
                 WHERE key = ?1 AND token = ?2 AND expires_at > {NOW_MS}"
            ),
            // Only while our token holds an unexpired lease; keeps the row. ?1 key, ?2 token.
            release: format!(
                "UPDATE {t} SET token = NULL, expires_at = NULL
                 WHERE key = ?1 AND token = ?2 AND expires_at > {NOW_MS}"
            ),
            // ?1 key: fence, and the remaining ms if held.
            status: format!(
                "SELECT fence, CASE WHEN token IS NOT NULL AND expires_at > {NOW_MS}
                                    THEN expires_at - {NOW_MS} END
                 FROM {t} WHERE key = ?1"
            ),
            // ?1 prefix: every key starting with it, with fence and remaining ms if held.
            list: format!(
                "SELECT key, fence, CASE WHEN token IS NOT NULL AND expires_at > {NOW_MS}
                                         THEN expires_at - {NOW_MS} END
                 FROM {t} WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key"
            ),
            // An administrator's release, whoever holds the key. ?1 key.
            force_release: format!(
                "UPDATE {t} SET token = NULL, expires_at = NULL
                 WHERE key = ?1 AND token IS NOT NULL AND expires_at > {NOW_MS}"
            ),
        }
    }
}
