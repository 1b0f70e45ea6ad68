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
    /// Increments made under the lock that the unfenced counter lost.
    pub lost_updates: u64,
    /// Fenced writes the resource rejected (evidence that faults bit).
    pub stale_writes_rejected: u64,
}

impl Findings {
    /// All violations together.
    pub fn violations(&self) -> u64 {
        self.validity_overlaps + self.fence_violations + self.lost_updates
    }
}

/// Checks `events` (all workers, any order) against the resource's final counters.
///
/// `deaths` gives, per (worker, life), when the nemesis killed that process: a dead process
/// believes nothing, so its hold ends there (backends that free a lock with its connection hand
/// it on at once).
pub fn check(
    events: &[Event],
    counters: &HashMap<String, (u64, u64)>,
    deaths: &HashMap<(u32, u32), u64>,
) -> Findings {
    let mut findings = Findings::default();
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
    let mut increments: HashMap<String, u64> = HashMap::new();
    for (holder, mut life) in by_life {
        life.sort_by_key(|e| e.start_ns);
        let mut current: Option<Hold> = None;
        let mut valid_until = 0;
        for event in life {
            match (event.op, event.outcome) {
                (Op::Acquire, Outcome::Ok) => {
                    valid_until = event.valid_until_ns;
                    current = Some(Hold {
                        key: event.key.clone(),
                        holder,
                        fence: event.fence,
                        start_ns: event.end_ns,
                        end_ns: valid_until,
                    });
                }
                (Op::Extend, Outcome::Ok) => valid_until = valid_until.max(event.valid_until_ns),
                (Op::Increment, Outcome::Ok) => {
                    *increments.entry(event.key.clone()).or_default() += 1
                }
                (Op::Release, _) => {
                    if let Some(mut hold) = current.take() {
                        hold.end_ns = valid_until.min(event.start_ns);
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
    }
    findings.holds = holds.len() as u64;
    for hold in &mut holds {
        if let Some(death) = deaths.get(&hold.holder) {
            hold.end_ns = hold.end_ns.min(*death);
        }
    }
    let valid = holds.len();
    holds.retain(|hold| hold.end_ns > hold.start_ns);
    findings.expired_on_arrival = (valid - holds.len()) as u64;
    let mut by_key: HashMap<&str, Vec<&Hold>> = HashMap::new();
    for hold in &holds {
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
                    findings.validity_overlaps += 1;
                }
            }
            if reach.is_none_or(|r| hold.end_ns > r.end_ns) {
                reach = Some(hold);
            }
            if hold.fence <= last_fence {
                findings.fence_violations += 1;
            }
            last_fence = last_fence.max(hold.fence);
        }
    }
    for (key, made) in increments {
        let (counter, rejected) = counters.get(&key).copied().unwrap_or((0, 0));
        findings.lost_updates += made.saturating_sub(counter);
        findings.stale_writes_rejected += rejected;
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    #[test]
    fn sequential_holders_are_clean() {
        let events = vec![
            event(1, Op::Acquire, 1, 0, 10, 100),
            event(1, Op::Release, 1, 50, 60, 100),
            event(2, Op::Acquire, 2, 55, 70, 200),
            event(2, Op::Release, 2, 150, 160, 200),
        ];
        let found = check(&events, &HashMap::new(), &HashMap::new());
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
        let found = check(&events, &counters, &HashMap::new());
        assert_eq!(found.validity_overlaps, 1);
        assert_eq!(found.fence_violations, 1);
        assert_eq!(found.lost_updates, 1);
        assert_eq!(found.stale_writes_rejected, 3);
        // Ending before the next grant removes the overlap.
        events[2].start_ns = 45;
        assert_eq!(
            check(&events, &counters, &HashMap::new()).validity_overlaps,
            0
        );
    }

    #[test]
    fn a_killed_holder_believes_until_its_validity_ends_or_its_death() {
        let events = vec![
            event(1, Op::Acquire, 1, 0, 10, 100),
            event(2, Op::Acquire, 2, 20, 80, 300),
        ];
        assert_eq!(
            check(&events, &HashMap::new(), &HashMap::new()).validity_overlaps,
            1
        );
        // Killed at 15, before worker 2 was granted the lock: no overlap.
        let deaths = HashMap::from([((1, 0), 15)]);
        assert_eq!(
            check(&events, &HashMap::new(), &deaths).validity_overlaps,
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
        let found = check(&events, &HashMap::new(), &HashMap::new());
        assert_eq!(found.expired_on_arrival, 1);
        assert_eq!(found.violations(), 0, "{found:?}");
    }
}
