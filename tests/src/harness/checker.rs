//! Reads the merged histories and counts violations.

use std::collections::HashMap;

use serde::Serialize;

use super::history::{Event, Op, Outcome};

/// One holder's believed-valid interval on a key.
#[derive(Debug, Clone)]
struct Hold {
    key: String,
    holder: (u32, u32),
    fence: u64,
    start_ns: u64,
    end_ns: u64,
    /// From when the grant may have landed on the server (its request was sent): the key is
    /// occupied from here for the liveness check, while validity (for the safety checks)
    /// starts only when the holder read the reply.
    occupied_from_ns: u64,
    /// When the holder was told the lease was gone (an extend or release that said so).
    told_lost_ns: Option<u64>,
    /// Released while valid: the store freed the key then. Otherwise the store may keep it
    /// up to [`Context::expiry_slack_ns`] past the validity.
    released: bool,
}

/// What the run did besides the workers' operations, as the checker needs it.
#[derive(Debug, Default, Clone)]
pub struct Context {
    /// When each (worker, life) was killed: a dead process believes nothing.
    pub deaths: HashMap<(u32, u32), u64>,
    /// When faults that end the server's sessions happened (a killed connection, a restart):
    /// (start, end) in monotonic ns. The loss itself happens somewhere in that window (killing
    /// connections takes a while), so a lease granted inside it may be lost too.
    pub session_losses: Vec<(u64, u64)>,
    /// When faults that lose the store's locks happened (a restart without persistence, a
    /// rollback to an older snapshot, a failover of one cluster shard): any backend's lease on
    /// the keys it lost may end there.
    pub store_losses: Vec<StoreLoss>,
    /// The backend's locks live in a session and end with it (`Capabilities::lost_with_connection`).
    pub lost_with_connection: bool,
    /// Whether the counter's read-modify-write was fenced: only then is a lost update a
    /// violation.
    pub fenced: bool,
    /// From when the liveness checks apply, monotonic ns: the faults are over and the clients
    /// had time to reconnect.
    pub quiet_from_ns: u64,
    /// How long past its validity the store may keep a lease that was not released
    /// (`Capabilities::expiry_slack`: etcd's whole-second leases and expiry tick); the
    /// liveness check counts the key occupied that much longer.
    pub expiry_slack_ns: u64,
}

/// A fault that may have lost the store's locks.
#[derive(Debug, Default, Clone)]
pub struct StoreLoss {
    /// When it started, monotonic ns.
    pub from_ns: u64,
    /// When it ended.
    pub to_ns: u64,
    /// The keys it could lose (those of one cluster shard); `None`: every key.
    pub keys: Option<Vec<String>>,
}

impl StoreLoss {
    /// A loss of every key.
    pub fn all(from_ns: u64, to_ns: u64) -> Self {
        Self {
            from_ns,
            to_ns,
            keys: None,
        }
    }

    fn covers(&self, key: &str) -> bool {
        self.keys
            .as_ref()
            .is_none_or(|keys| keys.iter().any(|k| k == key))
    }
}

/// A distribution of durations in ms.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Millis {
    /// How many samples.
    pub count: usize,
    /// The median.
    pub p50: f64,
    /// The largest.
    pub max: f64,
}

impl Millis {
    fn of(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        let ms = |ns: u64| ns as f64 / 1e6;
        Self {
            count: samples.len(),
            p50: samples.get(samples.len() / 2).map_or(0.0, |&n| ms(n)),
            max: samples.last().map_or(0.0, |&n| ms(n)),
        }
    }
}

/// What the checker found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Findings {
    /// Operations by kind and outcome, e.g. `acquire/ok`.
    pub operations: HashMap<String, u64>,
    /// Successful acquisitions.
    pub holds: u64,
    /// Acquisitions whose lease had already ended when the worker learned of it (a worker paused
    /// while its request was answered): never valid, so left out of the overlap and fence checks.
    pub expired_on_arrival: u64,
    /// Pairs of holders of one key whose validity intervals overlap: a library bug.
    pub validity_overlaps: u64,
    /// Grants whose fence is not above the previous grant's on that key.
    pub fence_violations: u64,
    /// Increments made under the lock that the counter lost (a violation when fenced; in the
    /// unfenced mode, evidence of what a lease alone cannot prevent).
    pub lost_updates: u64,
    /// Whether lost updates count as violations (the fenced mode).
    pub fenced: bool,
    /// Fenced writes the resource rejected (evidence that faults bit).
    pub stale_writes_rejected: u64,
    /// Overlaps that exist only because a lock living in a session ended with it (a killed
    /// connection, a server restart) before its holder could know: what the backend declares
    /// (`lost_with_connection`), so not a violation; fences are what protects here.
    pub overlaps_after_session_loss: u64,
    /// Leases that a session loss ended early.
    pub leases_lost_with_session: u64,
    /// Overlaps that exist only because the store lost its locks (restarted without
    /// persistence, rolled back): no lease can prevent them, so not a violation; the fence
    /// check (which still covers every grant on both sides) is what must hold.
    pub overlaps_after_store_loss: u64,
    /// Leases that a store loss ended early.
    pub leases_lost_with_store: u64,
    /// From the kill of a worker holding a key to the next grant of that key to someone else.
    pub reacquire_after_kill_ms: Millis,
    /// From the end of a lease (its validity, or the session loss that ended it) to when its
    /// holder was told (an extend or release that returned false); a paused holder learns late.
    pub loss_detected_after_ms: Millis,
    /// Workers (by number) that were granted a lock after the faults stopped.
    pub workers_granted_after_faults: usize,
    /// Acquires that started after the faults stopped and timed out although the key sat free
    /// for longer than [`FREE_GAP_LIMIT_MS`] during their wait: a lost wake-up, a liveness bug.
    pub waits_missed_a_free_key: u64,
    /// The longest time a key sat free while someone waited for it, after the faults stopped.
    pub longest_free_gap_while_waiting_ms: f64,
    /// `--rw`: successful read acquisitions.
    pub read_holds: u64,
    /// `--rw`: pairs of a reader and a writer of one key whose validity intervals overlap.
    pub reads_overlapping_writes: u64,
    /// `--rw`: readers that saw the resource accept a write while their read lease was valid
    /// (a violation when fenced: every reader raises the fence floor first, so only a writer
    /// granted beside it can write).
    pub writes_seen_by_readers: u64,
    /// `--rw`: a reader and a writer of one key, one wholly before the other, whose fences do
    /// not increase in that order.
    pub read_fence_violations: u64,
}

/// How long a key may sit free while someone waits for it (notification, retry and a round
/// trip take a few ms; the slowest path, cross-process polling, 25-50 ms) before the checker
/// calls it a missed wake-up.
pub const FREE_GAP_LIMIT_MS: f64 = 300.0;

impl Findings {
    /// All violations together.
    pub fn violations(&self) -> u64 {
        self.validity_overlaps
            + self.fence_violations
            + self.waits_missed_a_free_key
            + self.reads_overlapping_writes
            + self.read_fence_violations
            + if self.fenced {
                self.lost_updates + self.writes_seen_by_readers
            } else {
                0
            }
    }
}

/// Checks `events` (all workers, any order) against the resource's final counters.
///
/// `context.deaths` gives, per (worker, life), when the nemesis killed that process: a dead
/// process believes nothing, so its hold ends there (backends that free a lock with its
/// connection hand it on at once).
pub fn check(
    events: &[Event],
    counters: &HashMap<String, (u64, u64)>,
    context: &Context,
) -> Findings {
    let deaths = &context.deaths;
    let mut findings = Findings {
        fenced: context.fenced,
        ..Findings::default()
    };
    let mut granted_after_faults = std::collections::HashSet::new();
    let mut by_life: HashMap<(u32, u32), Vec<&Event>> = HashMap::new();
    for event in events {
        let outcome = match event.outcome {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Unknown => "unknown",
        };
        *findings
            .operations
            .entry(format!("{:?}/{outcome}", event.op).to_lowercase())
            .or_default() += 1;
        by_life
            .entry((event.worker, event.life))
            .or_default()
            .push(event);
    }
    let mut holds = Vec::new();
    let mut read_holds = Vec::new();
    let mut increments: HashMap<String, u64> = HashMap::new();
    for (holder, mut life) in by_life {
        life.sort_by_key(|e| e.start_ns);
        let mut current: Option<Hold> = None;
        let mut valid_until = 0;
        let mut reading: Option<Hold> = None;
        for event in life {
            match (event.op, event.outcome) {
                (Op::ReadAcquire, Outcome::Ok) => reading = Some(Hold::granted(event, holder)),
                (Op::ReadExtend, Outcome::Ok) => {
                    if let Some(hold) = reading.as_mut() {
                        hold.end_ns = hold.end_ns.max(event.valid_until_ns);
                    }
                }
                (Op::ReadRelease, _) => {
                    if let Some(mut hold) = reading.take() {
                        hold.end_ns = hold.end_ns.min(event.start_ns);
                        read_holds.push(hold);
                    }
                }
                (Op::Acquire, Outcome::Ok) => {
                    valid_until = event.valid_until_ns;
                    if event.start_ns >= context.quiet_from_ns {
                        granted_after_faults.insert(holder.0);
                    }
                    current = Some(Hold {
                        key: event.key.clone(),
                        holder,
                        fence: event.fence,
                        start_ns: event.end_ns,
                        end_ns: valid_until,
                        occupied_from_ns: if event.sent_ns == 0 {
                            event.end_ns
                        } else {
                            event.sent_ns.min(event.end_ns)
                        },
                        told_lost_ns: None,
                        released: false,
                    });
                }
                (Op::Extend, Outcome::Ok) => valid_until = valid_until.max(event.valid_until_ns),
                (Op::Extend, Outcome::Fail) => {
                    if let Some(hold) = current.as_mut() {
                        hold.told_lost_ns.get_or_insert(event.end_ns);
                    }
                }
                (Op::Increment, Outcome::Ok) => {
                    *increments.entry(event.key.clone()).or_default() += 1
                }
                (Op::Release, outcome) => {
                    if let Some(mut hold) = current.take() {
                        hold.end_ns = valid_until.min(event.start_ns);
                        hold.released = outcome == Outcome::Ok && event.start_ns < valid_until;
                        if outcome == Outcome::Fail {
                            hold.told_lost_ns.get_or_insert(event.end_ns);
                        }
                        holds.push(hold);
                    }
                }
                _ => {}
            }
        }
        // A worker killed while holding: its belief ended with its validity or its death.
        if let Some(mut hold) = current {
            hold.end_ns = valid_until;
            holds.push(hold);
        }
        read_holds.extend(reading);
    }
    findings.holds = holds.len() as u64;
    findings.workers_granted_after_faults = granted_after_faults.len();
    for hold in &mut holds {
        if let Some(death) = deaths.get(&hold.holder) {
            hold.end_ns = hold.end_ns.min(*death);
        }
    }
    let valid = holds.len();
    holds.retain(|hold| hold.end_ns > hold.start_ns);
    findings.expired_on_arrival = (valid - holds.len()) as u64;

    // Where locks live in a session, a session loss ends the lease there and then; a store
    // that lost its locks ends every lease it had granted.
    let during = |windows: &[(u64, u64)], hold: &Hold| {
        windows
            .iter()
            .find(|&&(from, to)| to > hold.start_ns && from < hold.end_ns)
            .map(|&(from, _)| from)
    };
    let mut cut = holds.clone();
    let mut detected = Vec::new();
    for (hold, original) in cut.iter_mut().zip(&holds) {
        if context.lost_with_connection {
            if let Some(from) = during(&context.session_losses, hold) {
                hold.end_ns = from.max(hold.start_ns);
                findings.leases_lost_with_session += 1;
            }
        }
        if let Some(told) = original.told_lost_ns {
            detected.push(told.saturating_sub(hold.end_ns));
        }
    }
    let mut session_cut = cut.clone();
    session_cut.retain(|hold| hold.end_ns > hold.start_ns);
    // Only leases whose request was sent before the store came back can have been granted by
    // the store that lost them (a reply read just after the fault began may still be the old
    // store's); a lease asked for later is held to the full checks.
    for hold in &mut cut {
        let lost = context.store_losses.iter().find(|loss| {
            hold.occupied_from_ns < loss.to_ns
                && loss.from_ns < hold.end_ns
                && loss.covers(&hold.key)
        });
        if let Some(loss) = lost {
            hold.end_ns = loss.from_ns.max(hold.start_ns);
            findings.leases_lost_with_store += 1;
        }
    }
    findings.loss_detected_after_ms = Millis::of(detected);
    // A lease whose session was lost before its holder heard of it was never valid for it, like
    // one that expired on arrival: its fence was drawn before a later grant's, but arrived after.
    cut.retain(|hold| hold.end_ns > hold.start_ns);
    let (overlaps, _) = scan(&cut);
    findings.validity_overlaps = overlaps;
    // Fences get no allowance for a store loss: every lease granted around it stays in.
    findings.fence_violations = scan(&session_cut).1;
    let session_overlaps = scan(&session_cut).0;
    findings.overlaps_after_session_loss = scan(&holds).0.saturating_sub(session_overlaps);
    findings.overlaps_after_store_loss = session_overlaps.saturating_sub(overlaps);
    findings.reacquire_after_kill_ms = Millis::of(reacquire_after_kill(&holds, deaths));
    findings.read_holds = read_holds.len() as u64;
    for hold in &mut read_holds {
        if let Some(death) = deaths.get(&hold.holder) {
            hold.end_ns = hold.end_ns.min(*death);
        }
    }
    read_holds.retain(|hold| hold.end_ns > hold.start_ns);
    let reads_cut = cut_by_losses(&read_holds, context);
    findings.reads_overlapping_writes = cross_overlaps(&reads_cut, &cut);
    findings.read_fence_violations = cross_fences(&read_holds, &session_cut);
    findings.writes_seen_by_readers = writes_seen(events, context);
    // Readers occupy the key too: a writer waiting behind them missed nothing.
    let occupied: Vec<Hold> = cut
        .iter()
        .chain(&reads_cut)
        .cloned()
        .map(|mut hold| {
            if !hold.released {
                hold.end_ns += context.expiry_slack_ns;
            }
            hold
        })
        .collect();
    let quiet_waits = events.iter().filter(|e| {
        e.op == Op::Acquire && e.outcome == Outcome::Fail && e.start_ns >= context.quiet_from_ns
    });
    for wait in quiet_waits {
        let gap = longest_free_gap(&occupied, &wait.key, wait.start_ns, wait.end_ns);
        let gap_ms = gap as f64 / 1e6;
        findings.longest_free_gap_while_waiting_ms =
            findings.longest_free_gap_while_waiting_ms.max(gap_ms);
        if gap_ms > FREE_GAP_LIMIT_MS {
            findings.waits_missed_a_free_key += 1;
        }
    }
    for (key, made) in increments {
        let (counter, rejected) = counters.get(&key).copied().unwrap_or((0, 0));
        findings.lost_updates += made.saturating_sub(counter);
        findings.stale_writes_rejected += rejected;
    }
    findings
}

impl Hold {
    /// The hold a successful acquire `event` of `holder` starts (validity as granted).
    fn granted(event: &Event, holder: (u32, u32)) -> Self {
        Self {
            key: event.key.clone(),
            holder,
            fence: event.fence,
            start_ns: event.end_ns,
            end_ns: event.valid_until_ns,
            occupied_from_ns: if event.sent_ns == 0 {
                event.end_ns
            } else {
                event.sent_ns.min(event.end_ns)
            },
            told_lost_ns: None,
            released: false,
        }
    }
}

/// `holds` ended where a session loss (for backends whose locks live in one) or a store loss
/// may have ended them, as the writers' holds are cut in [`check`]; the ones left valid.
fn cut_by_losses(holds: &[Hold], context: &Context) -> Vec<Hold> {
    let mut cut = holds.to_vec();
    for hold in &mut cut {
        if context.lost_with_connection {
            let lost = context
                .session_losses
                .iter()
                .find(|&&(from, to)| to > hold.start_ns && from < hold.end_ns);
            if let Some(&(from, _)) = lost {
                hold.end_ns = from.max(hold.start_ns);
            }
        }
        let lost = context.store_losses.iter().find(|loss| {
            hold.occupied_from_ns < loss.to_ns
                && loss.from_ns < hold.end_ns
                && loss.covers(&hold.key)
        });
        if let Some(loss) = lost {
            hold.end_ns = loss.from_ns.max(hold.start_ns);
        }
    }
    cut.retain(|hold| hold.end_ns > hold.start_ns);
    cut
}

/// Pairs of a read hold and a write hold of one key whose validity intervals overlap.
fn cross_overlaps(reads: &[Hold], writes: &[Hold]) -> u64 {
    let mut count = 0;
    for read in reads {
        count += writes
            .iter()
            .filter(|w| {
                w.key == read.key
                    && w.holder != read.holder
                    && w.start_ns < read.end_ns
                    && read.start_ns < w.end_ns
            })
            .count() as u64;
    }
    count
}

/// Pairs of a read hold and a write hold of one key, one ending before the other started,
/// whose fences are not in that order: one counter per key orders every grant.
fn cross_fences(reads: &[Hold], writes: &[Hold]) -> u64 {
    let mut count = 0;
    for read in reads {
        count += writes
            .iter()
            .filter(|w| {
                w.key == read.key
                    && ((read.end_ns <= w.start_ns && read.fence >= w.fence)
                        || (w.end_ns <= read.start_ns && w.fence >= read.fence))
            })
            .count() as u64;
    }
    count
}

/// Readers' checks that saw a write accepted while their lease was still valid when they
/// looked the last time, outside any window in which a fault may have ended their lease early.
fn writes_seen(events: &[Event], context: &Context) -> u64 {
    let faulted = |e: &Event| {
        let session = context.lost_with_connection
            && context
                .session_losses
                .iter()
                .any(|&(from, to)| to > e.start_ns && from < e.end_ns);
        let store = context
            .store_losses
            .iter()
            .any(|loss| loss.to_ns > e.start_ns && loss.from_ns < e.end_ns && loss.covers(&e.key));
        session || store
    };
    events
        .iter()
        .filter(|e| {
            e.op == Op::ReadCheck
                && e.outcome == Outcome::Fail
                && e.end_ns < e.valid_until_ns
                && !faulted(e)
        })
        .count() as u64
}

/// Counts validity overlaps and fence-order violations per key.
fn scan(holds: &[Hold]) -> (u64, u64) {
    let (mut overlaps, mut fences) = (0, 0);
    let mut by_key: HashMap<&str, Vec<&Hold>> = HashMap::new();
    for hold in holds {
        by_key.entry(hold.key.as_str()).or_default().push(hold);
    }
    for list in by_key.values_mut() {
        list.sort_by_key(|h| (h.start_ns, h.fence));
        let mut reach: Option<&Hold> = None;
        let mut last_fence = 0;
        for hold in list.iter() {
            if let Some(previous) = reach {
                if hold.start_ns < previous.end_ns
                    && hold.holder != previous.holder
                    && hold.end_ns > hold.start_ns
                {
                    overlaps += 1;
                }
            }
            if reach.is_none_or(|r| hold.end_ns > r.end_ns) {
                reach = Some(hold);
            }
            if hold.fence <= last_fence {
                fences += 1;
            }
            last_fence = last_fence.max(hold.fence);
        }
    }
    (overlaps, fences)
}

/// The longest stretch within `from..to` in which no hold of `key` occupied it (from the send
/// of its winning request to the end of its validity).
fn longest_free_gap(holds: &[Hold], key: &str, from: u64, to: u64) -> u64 {
    let mut spans: Vec<(u64, u64)> = holds
        .iter()
        .filter(|h| h.key == key && h.end_ns > from && h.occupied_from_ns < to)
        .map(|h| (h.occupied_from_ns.max(from), h.end_ns.min(to)))
        .collect();
    spans.sort_unstable();
    let (mut longest, mut covered_to) = (0, from);
    for (start, end) in spans {
        longest = longest.max(start.saturating_sub(covered_to));
        covered_to = covered_to.max(end);
    }
    longest.max(to.saturating_sub(covered_to))
}

/// For each worker killed while it held a key: ns from the kill to the next grant of that key
/// to another holder.
fn reacquire_after_kill(holds: &[Hold], deaths: &HashMap<(u32, u32), u64>) -> Vec<u64> {
    let mut samples = Vec::new();
    for (holder, &death) in deaths {
        // Its hold ends at its death (see above), so it was holding if it ends exactly there.
        let Some(held) = holds
            .iter()
            .find(|h| h.holder == *holder && h.start_ns <= death && h.end_ns == death)
        else {
            continue;
        };
        let next = holds
            .iter()
            .filter(|h| h.key == held.key && h.holder != *holder && h.start_ns >= death)
            .map(|h| h.start_ns)
            .min();
        if let Some(next) = next {
            samples.push(next - death);
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fenced() -> Context {
        Context {
            fenced: true,
            ..Context::default()
        }
    }

    fn event(
        worker: u32,
        op: Op,
        fence: u64,
        start_ns: u64,
        end_ns: u64,
        valid_until_ns: u64,
    ) -> Event {
        Event {
            worker,
            life: 0,
            key: "k".into(),
            op,
            fence,
            start_ns,
            end_ns,
            outcome: Outcome::Ok,
            valid_until_ns,
            sent_ns: 0,
        }
    }

    #[test]
    fn readers_beside_readers_and_after_a_writer_are_clean() {
        let events = vec![
            event(1, Op::Acquire, 1, 0, 10, 100),
            event(1, Op::Release, 1, 50, 60, 100),
            event(2, Op::ReadAcquire, 2, 55, 70, 300),
            event(3, Op::ReadAcquire, 3, 56, 72, 300),
            event(2, Op::ReadCheck, 2, 80, 200, 300),
            event(2, Op::ReadRelease, 2, 210, 220, 300),
            event(3, Op::ReadRelease, 3, 230, 240, 300),
            event(1, Op::Acquire, 4, 235, 250, 400),
        ];
        let found = check(&events, &HashMap::new(), &fenced());
        assert_eq!((found.holds, found.read_holds), (2, 2));
        assert_eq!(found.violations(), 0, "{found:?}");
    }

    #[test]
    fn a_writer_beside_a_reader_and_a_write_it_saw_are_found() {
        let mut seen = event(2, Op::ReadCheck, 2, 80, 200, 300);
        seen.outcome = Outcome::Fail;
        // Seen after its lease ended: not the lock's fault.
        let mut late = event(2, Op::ReadCheck, 2, 80, 400, 300);
        late.outcome = Outcome::Fail;
        let events = vec![
            event(2, Op::ReadAcquire, 2, 55, 70, 300),
            seen,
            late,
            event(2, Op::ReadRelease, 2, 210, 220, 300),
            // A writer granted inside the read hold, and a fence lower than the reader's that
            // came after it.
            event(1, Op::Acquire, 3, 90, 100, 500),
            event(1, Op::Release, 3, 150, 160, 500),
            event(4, Op::Acquire, 1, 230, 240, 500),
        ];
        let found = check(&events, &HashMap::new(), &fenced());
        assert_eq!(found.reads_overlapping_writes, 1, "{found:?}");
        assert_eq!(found.writes_seen_by_readers, 1, "{found:?}");
        assert_eq!(found.read_fence_violations, 1, "{found:?}");
    }

    #[test]
    fn sequential_holders_are_clean() {
        let events = vec![
            event(1, Op::Acquire, 1, 0, 10, 100),
            event(1, Op::Release, 1, 50, 60, 100),
            event(2, Op::Acquire, 2, 55, 70, 200),
            event(2, Op::Release, 2, 150, 160, 200),
        ];
        let found = check(&events, &HashMap::new(), &fenced());
        assert_eq!(found.holds, 2);
        assert_eq!(found.violations(), 0, "{found:?}");
    }

    #[test]
    fn overlapping_validity_repeated_fences_and_lost_updates_are_found() {
        let mut events = vec![
            event(1, Op::Acquire, 5, 0, 10, 100),
            event(1, Op::Increment, 5, 20, 30, 100),
            event(1, Op::Release, 5, 90, 95, 100),
            // Granted while worker 1's validity still runs, with a fence that did not go up.
            event(2, Op::Acquire, 5, 40, 50, 200),
            event(2, Op::Increment, 5, 60, 70, 200),
            event(2, Op::Release, 5, 150, 160, 200),
        ];
        let counters = HashMap::from([("k".to_owned(), (1, 3))]);
        let found = check(&events, &counters, &fenced());
        assert_eq!(found.validity_overlaps, 1);
        assert_eq!(found.fence_violations, 1);
        assert_eq!(found.lost_updates, 1);
        assert_eq!(found.stale_writes_rejected, 3);
        // Ending before the next grant removes the overlap.
        events[2].start_ns = 45;
        assert_eq!(check(&events, &counters, &fenced()).validity_overlaps, 0);
    }

    #[test]
    fn a_killed_holder_believes_until_its_validity_ends_or_its_death() {
        let events = vec![
            event(1, Op::Acquire, 1, 0, 10, 100),
            event(2, Op::Acquire, 2, 20, 80, 300),
        ];
        assert_eq!(
            check(&events, &HashMap::new(), &fenced()).validity_overlaps,
            1
        );
        // Killed at 15, before worker 2 was granted the lock: no overlap.
        let deaths = HashMap::from([((1, 0), 15)]);
        assert_eq!(
            check(&events, &HashMap::new(), &Context { deaths, ..fenced() }).validity_overlaps,
            0
        );
    }

    #[test]
    fn a_lease_that_ended_before_its_holder_heard_of_it_is_left_out_of_the_order() {
        // Worker 1 was paused while its request was granted (fence 1, valid until 100) and
        // heard of it at 500; worker 2 got fence 2 at 200 in between.
        let events = vec![
            event(2, Op::Acquire, 2, 150, 200, 400),
            event(2, Op::Release, 2, 300, 310, 400),
            event(1, Op::Acquire, 1, 0, 500, 100),
            event(1, Op::Release, 1, 510, 520, 100),
        ];
        let found = check(&events, &HashMap::new(), &fenced());
        assert_eq!(found.expired_on_arrival, 1);
        assert_eq!(found.violations(), 0, "{found:?}");
    }

    #[test]
    fn a_session_loss_ends_a_session_lock_early_and_is_reported_apart() {
        // Worker 1 holds until 100 by its clock, but its session was killed at 30 and worker 2
        // was granted the lock at 50.
        let events = vec![
            event(1, Op::Acquire, 1, 0, 10, 100),
            event(1, Op::Release, 1, 90, 95, 100),
            event(2, Op::Acquire, 2, 40, 50, 200),
            event(2, Op::Release, 2, 150, 160, 200),
        ];
        let session = Context {
            session_losses: vec![(30, 35)],
            lost_with_connection: true,
            ..fenced()
        };
        let found = check(&events, &HashMap::new(), &session);
        assert_eq!(found.validity_overlaps, 0, "{found:?}");
        assert_eq!(found.leases_lost_with_session, 1);
        assert_eq!(found.overlaps_after_session_loss, 1);
        // Killing connections takes a while: a lease granted during the kill may go too.
        let mut granted_during = events.clone();
        granted_during[0].end_ns = 32;
        let found = check(&granted_during, &HashMap::new(), &session);
        assert_eq!(found.validity_overlaps, 0, "{found:?}");
        assert_eq!(found.overlaps_after_session_loss, 1);
        // Its fence, drawn before the loss, may arrive after a later grant's: not an order
        // violation, since the lease was gone before its holder heard of it.
        granted_during[0].fence = 3;
        let found = check(&granted_during, &HashMap::new(), &session);
        assert_eq!(found.violations(), 0, "{found:?}");
        // A backend that keeps locks outside sessions gets no such allowance.
        let lease = Context {
            lost_with_connection: false,
            ..session
        };
        assert_eq!(check(&events, &HashMap::new(), &lease).validity_overlaps, 1);
    }

    #[test]
    fn a_store_that_lost_its_locks_excuses_the_overlap_but_not_a_repeated_fence() {
        // Worker 1 holds until 100; the store is wiped at 30-40; worker 2 gets the key at 50.
        let overlap = |second_fence| {
            vec![
                event(1, Op::Acquire, 1_796_000_000_000_000, 0, 10, 100),
                event(1, Op::Release, 1_796_000_000_000_000, 90, 95, 100),
                event(2, Op::Acquire, second_fence, 45, 50, 200),
                event(2, Op::Release, second_fence, 150, 160, 200),
            ]
        };
        let wiped = Context {
            store_losses: vec![StoreLoss::all(30, 40)],
            ..fenced()
        };
        let floored = check(&overlap(1_796_000_000_000_050), &HashMap::new(), &wiped);
        assert_eq!(floored.violations(), 0, "{floored:?}");
        assert_eq!(floored.overlaps_after_store_loss, 1);
        assert_eq!(floored.leases_lost_with_store, 1);
        // Fences that restarted at 1 after the wipe: caught.
        let restarted = check(&overlap(1), &HashMap::new(), &wiped);
        assert_eq!(restarted.fence_violations, 1, "{restarted:?}");
        // Without the wipe on record, the overlap itself is a violation.
        let unexcused = check(&overlap(1_796_000_000_000_050), &HashMap::new(), &fenced());
        assert_eq!(unexcused.validity_overlaps, 1);
        // A loss of other keys (another cluster shard's failover) excuses nothing here.
        let elsewhere = Context {
            store_losses: vec![StoreLoss {
                keys: Some(vec!["other".into()]),
                ..StoreLoss::all(30, 40)
            }],
            ..fenced()
        };
        let found = check(&overlap(1_796_000_000_000_050), &HashMap::new(), &elsewhere);
        assert_eq!(found.validity_overlaps, 1, "{found:?}");
        let here = Context {
            store_losses: vec![StoreLoss {
                keys: Some(vec!["k".into()]),
                ..StoreLoss::all(30, 40)
            }],
            ..fenced()
        };
        let found = check(&overlap(1_796_000_000_000_050), &HashMap::new(), &here);
        assert_eq!(found.violations(), 0, "{found:?}");
        // A lease asked for after the store came back is not excused.
        let mut later = overlap(1_796_000_000_000_050);
        later.extend([
            event(3, Op::Acquire, 1_796_000_000_000_060, 45, 50, 300),
            event(3, Op::Release, 1_796_000_000_000_060, 250, 260, 300),
        ]);
        for e in &mut later {
            e.sent_ns = e.start_ns;
        }
        let found = check(&later, &HashMap::new(), &wiped);
        assert_eq!(found.validity_overlaps, 1, "{found:?}");
        // A lease asked for during the loss and granted after it with a fence that restarted
        // is excused for its overlap, never for its fence.
        let mut during = overlap(1);
        during[2].sent_ns = 35;
        let found = check(&during, &HashMap::new(), &wiped);
        assert_eq!(found.fence_violations, 1, "{found:?}");
    }

    #[test]
    fn reacquire_time_runs_from_the_kill_to_the_next_grant() {
        let events = vec![
            event(1, Op::Acquire, 1, 0, 10, 1_000),
            event(2, Op::Acquire, 2, 100, 3_000_000, 9_000_000),
        ];
        let deaths = HashMap::from([((1, 0), 500)]);
        let found = check(&events, &HashMap::new(), &Context { deaths, ..fenced() });
        assert_eq!(found.reacquire_after_kill_ms.count, 1);
        assert!(
            (found.reacquire_after_kill_ms.max - 2.9995).abs() < 1e-9,
            "{found:?}"
        );
    }

    #[test]
    fn lost_updates_are_violations_only_when_the_counter_is_fenced() {
        let events = vec![
            event(1, Op::Acquire, 1, 0, 10, 100),
            event(1, Op::Increment, 1, 20, 30, 100),
            event(1, Op::Release, 1, 40, 45, 100),
        ];
        let counters = HashMap::from([("k".to_owned(), (0, 0))]);
        assert_eq!(check(&events, &counters, &fenced()).violations(), 1);
        let unfenced = check(&events, &counters, &Context::default());
        assert_eq!(unfenced.lost_updates, 1);
        assert_eq!(unfenced.violations(), 0);
    }

    #[test]
    fn an_expiry_slack_covers_leases_that_were_not_released_and_only_those() {
        let ms = 1_000_000;
        let mut timed_out = event(2, Op::Acquire, 0, 1_100 * ms, 2_000 * ms, 0);
        timed_out.outcome = Outcome::Fail;
        // Worker 1's lease is valid until 1000 ms and never released: on a store that keeps
        // it 1.5 s longer (etcd), the key was not free during the wait.
        let abandoned = vec![
            event(1, Op::Acquire, 1, 0, ms, 1_000 * ms),
            timed_out.clone(),
        ];
        let slack = Context {
            expiry_slack_ns: 1_500 * ms,
            ..fenced()
        };
        assert_eq!(
            check(&abandoned, &HashMap::new(), &fenced()).waits_missed_a_free_key,
            1
        );
        assert_eq!(
            check(&abandoned, &HashMap::new(), &slack).waits_missed_a_free_key,
            0
        );
        // Released while valid: the store freed the key then, slack or not.
        let released = vec![
            event(1, Op::Acquire, 1, 0, ms, 5_000 * ms),
            event(1, Op::Release, 1, 500 * ms, 501 * ms, 5_000 * ms),
            timed_out,
        ];
        assert_eq!(
            check(&released, &HashMap::new(), &slack).waits_missed_a_free_key,
            1
        );
    }

    #[test]
    fn a_wait_that_timed_out_while_the_key_sat_free_is_a_liveness_failure() {
        let ms = 1_000_000;
        let mut timed_out = event(2, Op::Acquire, 0, 100 * ms, 2_100 * ms, 0);
        timed_out.outcome = Outcome::Fail;
        // Worker 1 holds 0-1000 ms and releases; nobody holds the key afterwards.
        let events = vec![
            event(1, Op::Acquire, 1, 0, ms, 5_000 * ms),
            event(1, Op::Release, 1, 1_000 * ms, 1_001 * ms, 5_000 * ms),
            timed_out.clone(),
        ];
        let found = check(&events, &HashMap::new(), &fenced());
        assert_eq!(found.waits_missed_a_free_key, 1, "{found:?}");
        assert!(found.violations() > 0);
        // Held by others all along (worker 3 from 1001 ms): a fair timeout.
        let mut busy = events.clone();
        busy.push(event(3, Op::Acquire, 2, 900 * ms, 1_002 * ms, 9_000 * ms));
        let found = check(&busy, &HashMap::new(), &fenced());
        assert_eq!(found.waits_missed_a_free_key, 0, "{found:?}");
        // Before the faults stopped, timeouts are not judged.
        let faulty = Context {
            quiet_from_ns: 3_000 * ms,
            ..fenced()
        };
        assert_eq!(
            check(&events, &HashMap::new(), &faulty).waits_missed_a_free_key,
            0
        );
    }

    #[test]
    fn a_grant_that_landed_while_its_requester_was_paused_occupies_the_key_from_the_request() {
        let ms = 1_000_000;
        let mut timed_out = event(2, Op::Acquire, 0, 100 * ms, 1_900 * ms, 0);
        timed_out.outcome = Outcome::Fail;
        // Worker 1 holds until 1000 ms. Worker 3 sent its request at 500 ms, was paused in the
        // server's queue, was granted at 1000 ms during the pause and read the reply at 1607 ms.
        let mut paused = event(3, Op::Acquire, 2, 500 * ms, 1_607 * ms, 9_000 * ms);
        paused.sent_ns = 500 * ms;
        let events = vec![
            event(1, Op::Acquire, 1, 0, ms, 5_000 * ms),
            event(1, Op::Release, 1, 1_000 * ms, 1_001 * ms, 5_000 * ms),
            timed_out.clone(),
            paused.clone(),
        ];
        let found = check(&events, &HashMap::new(), &fenced());
        assert_eq!(found.waits_missed_a_free_key, 0, "{found:?}");
        assert_eq!(found.validity_overlaps, 0, "{found:?}");
        // Without the send stamp the 607 ms look free: the artefact this guards against.
        let mut unstamped = events.clone();
        unstamped[3].sent_ns = 0;
        let found = check(&unstamped, &HashMap::new(), &fenced());
        assert_eq!(found.waits_missed_a_free_key, 1, "{found:?}");
        // And a request sent only after the gap does not hide it: still strict.
        let mut late = events;
        late[3].sent_ns = 1_500 * ms;
        let found = check(&late, &HashMap::new(), &fenced());
        assert_eq!(found.waits_missed_a_free_key, 1, "{found:?}");
    }
}
