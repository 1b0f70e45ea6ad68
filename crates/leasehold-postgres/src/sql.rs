//! The SQL of the lease-table strategy, built once per table from validated identifiers.
//!
//! Time is always the server's `clock_timestamp()` (not `now()`, which is frozen at the start
//! of the transaction; never the client's clock). Every value is a bind parameter.

use crate::ident::Ident;

/// The statements for one lease table.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    pub(crate) create_schema: Option<String>,
    pub(crate) create_table: String,
    pub(crate) acquire: String,
    pub(crate) extend: String,
    pub(crate) release: String,
}

impl Statements {
    pub(crate) fn new(schema: &Ident, table: &Ident) -> Self {
        let t = format!("{}.{}", schema.quoted(), table.quoted());
        Self {
            create_schema: (schema.as_str() != "public")
                .then(|| format!("CREATE SCHEMA IF NOT EXISTS {}", schema.quoted())),
            // One row per key ever locked. A released lock keeps its row (token and expiry
            // cleared), so its fence never goes back.
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                    key        text PRIMARY KEY,
                    token      bytea,
                    fence      bigint NOT NULL,
                    expires_at timestamptz
                )"
            ),
            // ONE statement: insert a new key, or take over a free or expired row with
            // fence + 1. A held row is left alone; the row is then read back (from the
            // statement's snapshot) for the holder's remaining time in ms.
            // $1 key, $2 token, $3 ttl in ms.
            acquire: format!(
                "WITH taken AS (
                    INSERT INTO {t} AS l (key, token, fence, expires_at)
                    VALUES ($1, $2, 1, clock_timestamp() + $3::float8 * interval '1 millisecond')
                    ON CONFLICT (key) DO UPDATE
                        SET token = EXCLUDED.token, fence = l.fence + 1, expires_at = EXCLUDED.expires_at
                        WHERE l.token IS NULL OR l.expires_at <= clock_timestamp()
                    RETURNING fence
                )
                SELECT fence, NULL::bigint AS holder_ms FROM taken
                UNION ALL
                SELECT NULL, (extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint
                    FROM {t} WHERE key = $1 AND NOT EXISTS (SELECT 1 FROM taken)"
            ),
            // Only while our token holds an unexpired lease; never resurrects.
            // $1 key, $2 token, $3 ttl in ms.
            extend: format!(
                "UPDATE {t} SET expires_at = clock_timestamp() + $3::float8 * interval '1 millisecond'
                 WHERE key = $1 AND token = $2 AND expires_at > clock_timestamp()"
            ),
            // Only while our token holds an unexpired lease; keeps the row (and its fence) and
            // notifies waiters (NOTIFY is sent at commit). $1 key, $2 token, $3 channel.
            release: format!(
                "WITH released AS (
                    UPDATE {t} SET token = NULL, expires_at = NULL
                    WHERE key = $1 AND token = $2 AND expires_at > clock_timestamp()
                    RETURNING key
                )
                SELECT released.key FROM released, LATERAL (SELECT pg_notify($3, released.key)) AS notified"
            ),
        }
    }
}
