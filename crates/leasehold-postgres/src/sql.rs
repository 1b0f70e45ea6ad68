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
    pub(crate) add_wanted: String,
    pub(crate) acquire: String,
    pub(crate) extend: String,
    pub(crate) release: String,
    pub(crate) status: String,
    pub(crate) list: String,
    pub(crate) force_release: String,
    pub(crate) create_sequence: String,
    pub(crate) advisory_try: String,
    pub(crate) advisory_wait: String,
    pub(crate) advisory_extend: String,
    pub(crate) advisory_fence: String,
    /// Whether statements are prepared under a name and cached per connection (faster), or
    /// sent unnamed (needed behind PgBouncer before 1.21 in transaction pooling).
    pub(crate) persistent: bool,
}

impl Statements {
    pub(crate) fn new(schema: &Ident, table: &Ident, sequence: &Ident, persistent: bool) -> Self {
        let t = format!("{}.{}", schema.quoted(), table.quoted());
        let seq = format!("{}.{}", schema.quoted(), sequence.quoted());
        // nextval takes the sequence as text: quote it as SQL text, the identifiers are safe.
        let nextval = format!("nextval('{seq}')");
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
                    expires_at timestamptz,
                    wanted_until timestamptz
                )"
            ),
            // Tables made by earlier versions lack the column.
            add_wanted: format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS wanted_until timestamptz"),
            // ONE statement: insert a new key, or take over a free or expired row with
            // fence + 1. A held row is left alone; the row is then read back (from the
            // statement's snapshot) for the holder's remaining time in ms, and a waiting caller
            // ($4 > 0) marks it wanted for $4 ms so that the release notifies. A taking
            // statement commits with synchronous_commit on, whatever the role's default, so a
            // fence (and lease) handed out is on disk and never handed out again after a crash.
            // The upsert is only tried when the statement's snapshot shows the key free:
            // ON CONFLICT locks the row even when its WHERE then refuses, and a row lock is a
            // write (a flushed commit, and a queue behind the holder's release), which every
            // busy attempt of every waiter would pay. A row freed after the snapshot was taken
            // is seen by the next attempt (the release's notification or the holder's expiry
            // triggers one).
            // $1 key, $2 token, $3 ttl in ms, $4 wait in ms (0: not waiting).
            acquire: format!(
                "WITH taken AS (
                    INSERT INTO {t} AS l (key, token, fence, expires_at)
                    SELECT $1::text, $2::bytea, 1, clock_timestamp() + $3::float8 * interval '1 millisecond'
                    WHERE NOT EXISTS (
                        SELECT 1 FROM {t} WHERE key = $1 AND expires_at > clock_timestamp())
                    ON CONFLICT (key) DO UPDATE
                        SET token = EXCLUDED.token, fence = l.fence + 1, expires_at = EXCLUDED.expires_at
                        WHERE l.token IS NULL OR l.expires_at <= clock_timestamp()
                    RETURNING fence
                ),
                wanted AS (
                    UPDATE {t} SET wanted_until = greatest(
                        coalesce(wanted_until, '-infinity'),
                        clock_timestamp() + $4::float8 * interval '1 millisecond')
                    WHERE key = $1 AND $4::float8 > 0 AND NOT EXISTS (SELECT 1 FROM taken)
                      -- Rewrite the row (a commit to flush) only when half the mark is used up.
                      AND coalesce(wanted_until, '-infinity')
                          < clock_timestamp() + $4::float8 / 2 * interval '1 millisecond'
                )
                SELECT fence, NULL::bigint AS holder_ms,
                       set_config('synchronous_commit', 'on', true) AS flushed FROM taken
                UNION ALL
                SELECT NULL, (extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint,
                       NULL FROM {t} WHERE key = $1 AND NOT EXISTS (SELECT 1 FROM taken)"
            ),
            // Only while our token holds an unexpired lease; never resurrects. Flushed like
            // the acquire: an extend lost in a crash would end the lease before the holder's
            // view of it. $1 key, $2 token, $3 ttl in ms.
            extend: format!(
                "WITH extended AS (
                    UPDATE {t} SET expires_at = clock_timestamp() + $3::float8 * interval '1 millisecond'
                    WHERE key = $1 AND token = $2 AND expires_at > clock_timestamp()
                    RETURNING key
                )
                SELECT set_config('synchronous_commit', 'on', true) FROM extended"
            ),
            // Only while our token holds an unexpired lease; keeps the row (and its fence) and
            // notifies waiters, if any said they wait. NOTIFY is sent at commit, and notifying
            // commits are serialised by PostgreSQL (one lock, held through the commit flush),
            // so releases nobody waits for do not notify. $1 key, $2 token, $3 channel.
            // The release commits without waiting for its WAL flush (synchronous_commit off
            // for this transaction only): a release lost in a server crash leaves the lease
            // to expire at its ttl, which is safe, and the next acquire's flushed commit also
            // flushes the release before it, so a lock is never handed on by a release that
            // could be lost.
            release: format!(
                "WITH released AS (
                    UPDATE {t} SET token = NULL, expires_at = NULL
                    WHERE key = $1 AND token = $2 AND expires_at > clock_timestamp()
                    RETURNING key, wanted_until > clock_timestamp() AS wanted
                )
                SELECT released.key, set_config('synchronous_commit', 'off', true) FROM released
                LEFT JOIN LATERAL (SELECT pg_notify($3, released.key) WHERE released.wanted) AS notified ON true"
            ),
            // Admin: the last fence and, while held, the holder's remaining ms. $1 key.
            status: format!(
                "SELECT fence, CASE WHEN token IS NOT NULL AND expires_at > clock_timestamp()
                    THEN (extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint END
                 FROM {t} WHERE key = $1"
            ),
            // Admin: the same for every key starting with $1, in byte order.
            list: format!(
                "SELECT key, fence, CASE WHEN token IS NOT NULL AND expires_at > clock_timestamp()
                    THEN (extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint END
                 FROM {t} WHERE starts_with(key, $1) ORDER BY key COLLATE \"C\""
            ),
            // Admin: clears whoever holds $1 (the row and fence stay) and notifies, whether
            // or not waiters marked the key: the forced-out holder may be watching.
            // $1 key, $2 channel.
            force_release: format!(
                "WITH released AS (
                    UPDATE {t} SET token = NULL, expires_at = NULL
                    WHERE key = $1 AND token IS NOT NULL AND expires_at > clock_timestamp()
                    RETURNING key
                )
                SELECT released.key, pg_notify($2, released.key) FROM released"
            ),
            // Fences of the advisory strategy. nextval is never rolled back, so a killed
            // holder's fence is never handed out again.
            create_sequence: format!("CREATE SEQUENCE IF NOT EXISTS {seq}"),
            // Advisory, one attempt: whether the lock was taken; the server ends the session
            // (freeing the lock) when it idles for the ttl. $1 advisory key, $2 ttl ("<n>ms").
            advisory_try: "SELECT pg_try_advisory_xact_lock($1),
                    set_config('idle_in_transaction_session_timeout', $2, true)"
                .to_owned(),
            // Advisory, waiting in the server's queue (first come, first served) for at most
            // lock_timeout; the innermost subquery runs first. $1 advisory key, $2 ttl,
            // $3 lock_timeout ("<n>ms", "0" = no limit).
            advisory_wait: "SELECT set_config('idle_in_transaction_session_timeout', $2, true)
                 FROM (SELECT pg_advisory_xact_lock($1)
                       FROM (SELECT set_config('lock_timeout', $3, true)) AS limited) AS locked"
                .to_owned(),
            // Advisory fence, drawn once the lock is held, in a transaction of its own that
            // commits and flushes its WAL before the lease is handed out, whatever the role's
            // synchronous_commit: the holder's transaction never commits, so a nextval inside
            // it may be lost in a crash and handed out again. The fence is the key's row in the
            // lease table (one per key ever locked), counted up under the row's lock, so draws
            // for one key are ordered and draws for different keys do not wait for each other;
            // a row write always writes WAL (a bare nextval writes it once per 32 values, and a
            // commit that wrote none does not flush). A new row starts from the sequence, and
            // every draw stays above it, so fences handed out by the sequence before (earlier
            // versions) never come again. $1 key.
            advisory_fence: format!(
                "INSERT INTO {t} AS l (key, fence) VALUES ($1, {nextval})
                 ON CONFLICT (key) DO UPDATE SET fence = greatest(l.fence + 1, EXCLUDED.fence)
                 RETURNING fence, set_config('synchronous_commit', 'on', true)"
            ),
            // Advisory extend: any statement resets the idle timer; this one also sets the new
            // ttl. $1 ttl ("<n>ms").
            advisory_extend: "SELECT set_config('idle_in_transaction_session_timeout', $1, true)".to_owned(),
            persistent,
        }
    }

    /// The migration, in order: schema, table, columns added since, fence sequence.
    pub(crate) fn migration(&self) -> impl Iterator<Item = &String> {
        self.create_schema.iter().chain([
            &self.create_table,
            &self.add_wanted,
            &self.create_sequence,
        ])
    }
}
