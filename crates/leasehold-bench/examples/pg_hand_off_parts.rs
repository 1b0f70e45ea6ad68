//! Times the pieces of a lease-table hand-off one at a time: a `SELECT 1`, a release that
//! notifies a marked waiter, the notification's arrival after the release returns, and the
//! next acquire. One task, so nothing queues; docs/postgres.md explains what the sum means.
//!
//! ```sh
//! cargo run --release -p leasehold-bench --example pg_hand_off_parts
//! ```

use std::time::{Duration, Instant};

use leasehold::{DistributedLock, LeaseToken, LockKey};
use leasehold_postgres::PostgresLock;
use sqlx::postgres::PgListener;

const ROUNDS: usize = 2000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("LEASEHOLD_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let lock = PostgresLock::connect(&url).await?;
    let sql = lock.lease_statements();
    let mut listener = PgListener::connect(&url).await?;
    listener.listen(sql.channel).await?;
    let key = LockKey::new(format!("bench/hand-off-parts/{}", std::process::id()))?;
    let ttl = Duration::from_secs(30);
    let pool = lock.pool().clone();
    let mut parts: [(&str, Vec<Duration>); 4] = [
        ("SELECT 1", Vec::new()),
        ("release (notifying)", Vec::new()),
        ("notification after the release returned", Vec::new()),
        ("acquire (flushed commit)", Vec::new()),
    ];
    for _ in 0..ROUNDS {
        let started = Instant::now();
        sqlx::query("SELECT 1").execute(&pool).await?;
        parts[0].1.push(started.elapsed());
        let lease = lock
            .try_acquire(&key, ttl)
            .await?
            .ok_or("the key was busy")?;
        // A busy attempt by a waiter marks the key, so that the release notifies.
        sqlx::query(sql.acquire)
            .bind(key.as_str())
            .bind(LeaseToken::random()?.to_bytes().as_slice())
            .bind(ttl.as_millis() as f64)
            .bind(60_000.0_f64)
            .fetch_all(&pool)
            .await?;
        let releasing = Instant::now();
        lock.release(lease).await?;
        let released = Instant::now();
        listener.recv().await?;
        let notified = Instant::now();
        let lease = lock
            .try_acquire(&key, ttl)
            .await?
            .ok_or("the key was busy")?;
        parts[1].1.push(released - releasing);
        parts[2].1.push(notified - released);
        parts[3].1.push(notified.elapsed());
        lock.release(lease).await?;
        // That release notified too (the mark lasts a minute): drain it.
        while tokio::time::timeout(Duration::from_millis(5), listener.recv())
            .await
            .is_ok()
        {}
    }
    println!(
        "{ROUNDS} rounds, one task, against {}:",
        lock.pool().connect_options().get_host()
    );
    for (name, samples) in &mut parts {
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
        println!("  {name}: p50 {:.0} us, p90 {:.0} us", at(0.5), at(0.9));
    }
    Ok(())
}
