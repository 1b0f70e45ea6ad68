//! The clock SQLite leases expire by: one for every process on the machine, which a step of
//! the wall clock does not move.
//!
//! Linux: `CLOCK_BOOTTIME` in milliseconds (it counts suspend, and no one can set it) with the
//! kernel's boot id (`/proc/sys/kernel/random/boot_id`), so a lease written before a reboot is
//! void after it. Processes must share one time namespace (containers made with
//! `unshare --time` can offset `CLOCK_BOOTTIME`). Other platforms: the wall clock, as every
//! version before format 2 did, with the boot id `wall-clock`.

use leasehold::LockError;

/// The clock and this boot's id.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    boot: String,
}

impl Clock {
    /// Reads the boot id.
    ///
    /// # Errors
    ///
    /// Permanent, when the boot id cannot be read (Linux without `/proc`).
    pub(crate) fn open() -> Result<Self, LockError> {
        Ok(Self { boot: boot_id()? })
    }

    /// This boot's id, stored with every lease.
    pub(crate) fn boot(&self) -> &str {
        &self.boot
    }

    /// Now, in milliseconds.
    ///
    /// # Errors
    ///
    /// Permanent, when the clock cannot be read (never seen: Linux has had `CLOCK_BOOTTIME`
    /// since 2.6.39). A made-up value would make leases look live or expired to this process
    /// alone.
    pub(crate) fn now_ms(&self) -> Result<i64, LockError> {
        now_ms()
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn boot_id() -> Result<String, LockError> {
    const PATH: &str = "/proc/sys/kernel/random/boot_id";
    std::fs::read_to_string(PATH)
        .map(|id| id.trim().to_owned())
        .map_err(|e| LockError::permanent(crate::error::BACKEND, format!("reading {PATH}: {e}")))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn now_ms() -> Result<i64, LockError> {
    use nix::time::{clock_gettime, ClockId};
    let now = clock_gettime(ClockId::CLOCK_BOOTTIME).map_err(|e| {
        LockError::permanent(
            crate::error::BACKEND,
            format!("reading CLOCK_BOOTTIME: {e}"),
        )
    })?;
    Ok(i64::try_from(std::time::Duration::from(now).as_millis()).unwrap_or(i64::MAX))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn boot_id() -> Result<String, LockError> {
    Ok("wall-clock".to_owned())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn now_ms() -> Result<i64, LockError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| LockError::permanent(crate::error::BACKEND, format!("the wall clock: {e}")))?;
    Ok(i64::try_from(now.as_millis()).unwrap_or(i64::MAX))
}
