//! What the guard layer logs: keys escaped, tokens never. In its own test binary because
//! tracing caches callsite interest globally, and other tests running without a subscriber
//! would disable these callsites.

mod support;

use std::{
    io::Write,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use leasehold::{LockKey, LockOptions, Locker};
use support::Flaky;

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn logs_escape_keys_and_never_contain_tokens() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let token = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let backend = Arc::new(Flaky::default());
            let key = LockKey::new("evil\"key\\ INFO forged=1").unwrap();
            let locker = Locker::from_arc(backend.clone());
            let options = LockOptions::default()
                .with_ttl(Duration::from_millis(2_000))
                .with_renew_every(Duration::from_millis(50));
            let guard = locker.lock(&key, options).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            backend.failing.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(400)).await;
            guard.release().await.unwrap();
            let token = backend.last_token.lock().unwrap().clone();
            token.expect("the guard's token was recorded")
        })
    });
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("lock acquired"), "{logs}");
    assert!(logs.contains("lease renewed"), "{logs}");
    assert!(logs.contains("lease renewal failed"), "{logs}");
    assert!(logs.contains("lock released"), "{logs}");
    assert!(
        logs.contains(r#"evil\"key\\ INFO forged=1"#),
        "key not escaped: {logs}"
    );
    assert!(!logs.contains(&token), "token logged: {logs}");
    assert!(!logs.contains(&token[..12]), "token logged: {logs}");
}
