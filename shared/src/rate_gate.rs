//! Keeps OCR calls that Cloudinary would refuse from being made.
//!
//! Cloudinary reports the Admin quota on every answer (limit, remaining, reset). Each worker
//! instance keeps its own gate, and up to `instances` of them (the reserved concurrency) call on
//! the same quota without talking to each other. So each instance
//! - makes a single probe call until it has seen the quota once,
//! - makes at most its share (`limit / instances`) of calls per window, and
//! - keeps its calls in flight within its share of what Cloudinary says remains (which also
//!   leaves room for other users of the quota, such as the lister).
//!
//! Together the instances then stay within the limit, and with a backlog they use all but
//! `limit % instances` calls of each window.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The Admin API's hourly quota as an answer reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    pub reset: Option<SystemTime>,
}

/// Shared by every record of every invocation in one worker instance.
#[derive(Debug)]
pub struct RateGate {
    state: Mutex<GateState>,
    /// Instances sharing the quota.
    sharers: u64,
}

impl Default for RateGate {
    fn default() -> Self {
        Self::shared_by(1)
    }
}

#[derive(Debug, Default)]
struct GateState {
    /// Refused until then (a 420 was seen).
    blocked_until: Option<SystemTime>,
    /// The latest quota Cloudinary reported.
    quota: Option<Quota>,
    /// End of the window this instance's `used` counts for; `None` while a new window's reset
    /// is not yet known.
    window_end: Option<SystemTime>,
    /// Calls this instance made in the current window (in flight included).
    used: u64,
    in_flight: u64,
    /// An answer has arrived (with or without quota headers: the Upload API sends none).
    answered: bool,
    /// When the window turned without an answer telling the new one's end.
    unknown_since: Option<SystemTime>,
}

/// Permission to make one call; gives the slot back when dropped.
#[derive(Debug)]
pub struct Permit<'a> {
    gate: &'a RateGate,
}

impl Permit<'_> {
    /// Whether this permit is `gate`'s.
    pub fn is_from(&self, gate: &RateGate) -> bool {
        std::ptr::eq(self.gate, gate)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
    }
}

/// When no reset time is known after a refusal, wait this long.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(60);

/// When a window's reset is not known yet, the answers in flight will tell it soon.
const SETTLE: Duration = Duration::from_secs(1);

/// A share spent in a window whose end is not known is probed again after this long.
const PROBE_UNKNOWN_WINDOW: Duration = Duration::from_secs(60);

impl RateGate {
    /// A gate for one of `instances` processes that call on the same quota.
    pub fn shared_by(instances: u32) -> Self {
        Self {
            state: Mutex::default(),
            sharers: u64::from(instances.max(1)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permit past a closed gate: one call to learn what Cloudinary says now, made before an
    /// asset is failed for good on a limit that does not reset within the hour.
    pub fn probe(&self) -> Permit<'_> {
        self.grant(&mut self.lock())
    }

    /// A permit, or the time until which calls would be refused.
    pub fn admit(&self, now: SystemTime) -> Result<Permit<'_>, SystemTime> {
        let mut s = self.lock();
        self.check(&mut s, now)?;
        Ok(self.grant(&mut s))
    }

    /// Counts one call in the window and in flight.
    fn grant(&self, s: &mut GateState) -> Permit<'_> {
        s.used += 1;
        s.in_flight += 1;
        Permit { gate: self }
    }

    /// When this instance may call again, if it may not now.
    pub fn closed_until(&self, now: SystemTime) -> Option<SystemTime> {
        let mut s = self.lock();
        self.check(&mut s, now).err()
    }

    fn check(&self, s: &mut GateState, now: SystemTime) -> Result<(), SystemTime> {
        if let Some(until) = s.blocked_until {
            if until > now {
                return Err(until);
            }
            s.blocked_until = None;
        }
        if s.window_end.is_some_and(|end| end <= now) {
            // A new window: the whole limit, until an answer reports the new figures.
            s.window_end = None;
            s.unknown_since = Some(now);
            s.used = 0;
            if let Some(q) = s.quota.as_mut() {
                *q = Quota {
                    limit: q.limit,
                    remaining: q.limit,
                    reset: None,
                };
            }
        }
        let retry = s.window_end.unwrap_or(now + SETTLE);
        match s.quota {
            // Nothing heard yet: one probe call at a time, to learn the quota (if any).
            None if !s.answered && s.in_flight > 0 => Err(now + SETTLE),
            None => Ok(()),
            Some(q) => {
                let share = (q.limit / self.sharers).max(1);
                let spent = s.used >= share || q.remaining / self.sharers <= s.in_flight;
                match (spent, s.window_end) {
                    (false, _) => Ok(()),
                    (true, Some(end)) => Err(end),
                    // Spent in a window whose end no answer has told yet (every call since
                    // the turn failed): without an answer `used` would never be reset, and
                    // the gate would stay closed for good. After a while, one probe at a time
                    // learns the window again.
                    (true, None)
                        if s.in_flight == 0
                            && s.unknown_since
                                .is_some_and(|t| now >= t + PROBE_UNKNOWN_WINDOW) =>
                    {
                        Ok(())
                    }
                    (true, None) => Err(retry),
                }
            }
        }
    }

    /// The remaining quota last reported, while it applies.
    pub fn remaining(&self) -> Option<u64> {
        self.lock().quota.map(|q| q.remaining)
    }

    /// The hourly limit last reported, while it applies.
    pub fn limit(&self) -> Option<u64> {
        self.lock().quota.map(|q| q.limit)
    }

    /// Records the quota an answer reported (call before giving the call's permit back).
    pub fn observe(&self, quota: Option<Quota>) {
        let mut s = self.lock();
        s.answered = true;
        let Some(q) = quota else { return };
        match s.quota {
            // A late answer from an earlier window says nothing about this one.
            Some(Quota {
                reset: Some(current),
                ..
            }) if q.reset.is_some_and(|r| r < current) => {}
            // Answers arrive out of order; the lowest remaining figure is the safe one.
            Some(old) if old.reset == q.reset && old.remaining < q.remaining => {}
            _ => s.quota = Some(q),
        }
        match (s.window_end, q.reset) {
            (None, Some(reset)) => {
                s.window_end = Some(reset);
                s.unknown_since = None;
            }
            // Cloudinary's window turned before this clock noticed: the calls counted so far
            // are kept against the new one, which is the safe side.
            (Some(end), Some(reset)) if reset > end => s.window_end = Some(reset),
            _ => {}
        }
    }

    /// Refuses calls until `until` (after an HTTP 420, whose reset ends the current window).
    pub fn block_until(&self, until: SystemTime) {
        let mut s = self.lock();
        s.blocked_until = Some(s.blocked_until.map_or(until, |t| t.max(until)));
        if s.window_end.is_none() {
            s.window_end = Some(until);
            s.unknown_since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(limit: u64, remaining: u64, reset: SystemTime) -> Option<Quota> {
        Some(Quota {
            limit,
            remaining,
            reset: Some(reset),
        })
    }

    #[test]
    fn blocks_until_reset_after_a_refusal() {
        let gate = RateGate::default();
        let now = SystemTime::now();
        gate.block_until(now + Duration::from_secs(30));
        assert_eq!(gate.admit(now).unwrap_err(), now + Duration::from_secs(30));
        assert!(gate.admit(now + Duration::from_secs(31)).is_ok());
    }

    #[test]
    fn one_probe_call_until_the_quota_is_known() {
        let gate = RateGate::default();
        let now = SystemTime::now();
        let probe = gate.admit(now).unwrap();
        assert!(gate.admit(now).is_err(), "a second call before any answer");
        gate.observe(quota(100, 99, now + Duration::from_secs(600)));
        drop(probe);
        let _a = gate.admit(now).unwrap();
        let _b = gate.admit(now).unwrap();
    }

    #[test]
    fn answers_without_quota_headers_leave_calls_unbounded() {
        let gate = RateGate::default();
        let now = SystemTime::now();
        let probe = gate.admit(now).unwrap();
        gate.observe(None);
        drop(probe);
        let permits: Vec<_> = (0..50).map(|_| gate.admit(now).unwrap()).collect();
        assert_eq!(permits.len(), 50);
    }

    #[test]
    fn remaining_quota_bounds_calls_in_flight() {
        let gate = RateGate::default();
        let now = SystemTime::now();
        let reset = now + Duration::from_secs(600);
        gate.observe(quota(10, 2, reset));
        let a = gate.admit(now).unwrap();
        let b = gate.admit(now).unwrap();
        assert_eq!(gate.admit(now).unwrap_err(), reset);
        drop(a);
        let c = gate.admit(now).unwrap();
        drop((b, c));
        // After the reset a new window opens with the whole limit, not an unbounded one.
        let later = reset + Duration::from_secs(1);
        let permits: Vec<_> = (0..10).map(|_| gate.admit(later).unwrap()).collect();
        assert!(
            gate.admit(later).is_err(),
            "11 calls in flight for a limit of 10"
        );
        drop(permits);
        // The first answer of the new window brings its own figures.
        gate.observe(quota(10, 0, reset + Duration::from_secs(600)));
        assert_eq!(gate.remaining(), Some(0));
        assert_eq!(
            gate.admit(later).unwrap_err(),
            reset + Duration::from_secs(600)
        );
    }

    #[test]
    fn each_instance_makes_at_most_its_share_of_a_window() {
        let gate = RateGate::shared_by(4);
        let now = SystemTime::now();
        let reset = now + Duration::from_secs(600);
        gate.observe(quota(10, 10, reset));
        // 10 / 4 = 2 calls this window, however much Cloudinary says remains.
        drop(gate.admit(now).unwrap());
        drop(gate.admit(now).unwrap());
        gate.observe(quota(10, 8, reset));
        assert_eq!(gate.admit(now).unwrap_err(), reset);
        // The next window gives a new share.
        let next = reset + Duration::from_millis(1);
        drop(gate.admit(next).unwrap());
        drop(gate.admit(next).unwrap());
        assert!(gate.admit(next).is_err());
    }

    #[test]
    fn instances_keep_in_flight_calls_within_their_share_of_what_remains() {
        let gate = RateGate::shared_by(4);
        let now = SystemTime::now();
        let reset = now + Duration::from_secs(600);
        gate.observe(quota(2000, 9, reset));
        // 9 / 4 = 2 calls in flight for this instance; four instances make at most 8.
        let a = gate.admit(now).unwrap();
        let _b = gate.admit(now).unwrap();
        assert_eq!(gate.admit(now).unwrap_err(), reset);
        drop(a);
        assert!(gate.admit(now).is_ok());
    }

    #[test]
    fn closed_until_tells_when_calls_may_resume_without_taking_a_permit() {
        let gate = RateGate::shared_by(2);
        let now = SystemTime::now();
        let reset = now + Duration::from_secs(600);
        gate.observe(quota(4, 4, reset));
        assert_eq!(gate.closed_until(now), None);
        drop(gate.admit(now).unwrap());
        assert_eq!(gate.closed_until(now), None, "asking takes nothing");
        drop(gate.admit(now).unwrap());
        assert_eq!(
            gate.closed_until(now),
            Some(reset),
            "the share of 2 is used"
        );
        assert_eq!(gate.closed_until(reset), None, "a new window");
    }

    /// Every call after a window turned failed (no answer told the new window's end): the
    /// gate must not stay closed on calls counted in a window it can no longer place.
    #[test]
    fn a_window_whose_calls_all_failed_does_not_close_the_gate_for_good() {
        let gate = RateGate::shared_by(6);
        let now = SystemTime::now();
        let reset = now + Duration::from_secs(3);
        gate.observe(quota(45, 45, reset));
        let later = reset + Duration::from_secs(1);
        // 45 / 6 = 7 calls, every one answered with an error (nothing observed).
        for _ in 0..7 {
            drop(gate.admit(later).unwrap());
        }
        assert!(
            gate.admit(later).is_err(),
            "the share is spent, as far as it knows"
        );
        let a_minute = later + PROBE_UNKNOWN_WINDOW;
        let probe = gate.admit(a_minute).expect("a probe");
        assert!(gate.admit(a_minute).is_err(), "one probe at a time");
        let next_reset = a_minute + Duration::from_secs(2);
        gate.observe(quota(45, 44, next_reset));
        drop(probe);
        // The window is known again: its share counts from the turn (the safe side).
        assert_eq!(gate.admit(a_minute).unwrap_err(), next_reset);
        assert!(gate.admit(next_reset).is_ok());
    }

    #[test]
    fn a_refusal_ends_the_window_it_happened_in() {
        let gate = RateGate::shared_by(2);
        let now = SystemTime::now();
        gate.observe(quota(4, 4, now + Duration::from_secs(3)));
        let turned = now + Duration::from_secs(4);
        drop(gate.admit(turned).unwrap());
        drop(gate.admit(turned).unwrap());
        // The second call was refused with the new window's reset.
        let reset = now + Duration::from_secs(6);
        gate.block_until(reset);
        assert_eq!(gate.closed_until(turned), Some(reset));
        assert_eq!(gate.closed_until(reset), None, "the next window opens");
        assert!(gate.admit(reset).is_ok());
    }

    #[test]
    fn late_answers_do_not_undo_what_newer_ones_said() {
        let gate = RateGate::default();
        let now = SystemTime::now();
        let reset = now + Duration::from_secs(600);
        gate.observe(quota(10, 3, reset));
        gate.observe(quota(10, 5, reset));
        assert_eq!(gate.remaining(), Some(3), "the lowest figure of a window");
        gate.observe(quota(10, 9, reset + Duration::from_secs(600)));
        gate.observe(quota(10, 0, reset));
        assert_eq!(
            gate.remaining(),
            Some(9),
            "an earlier window's answer is ignored"
        );
    }
}
