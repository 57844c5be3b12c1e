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
    /// Refused until then (a 420 was seen, or the credentials were refused).
    blocked_until: Option<SystemTime>,
    /// Counts the blocks: a permit granted under the latest block (a probe) whose call is
    /// answered lifts it; an answer to a call made before it says nothing about it.
    block_epoch: u64,
    /// When the latest probe past a long block was let through.
    last_probe: Option<SystemTime>,
    /// The latest quota Cloudinary reported.
    quota: Option<Quota>,
    /// End of the window this instance's `used` counts for; `None` while a new window's reset
    /// is not yet known.
    window_end: Option<SystemTime>,
    /// The end of the latest window that has turned: an answer reporting that reset (or an
    /// earlier one) is late, from a window that is over.
    turned: Option<SystemTime>,
    /// Calls this instance made in the current window (in flight included).
    used: u64,
    in_flight: u64,
    /// An answer has arrived (with or without quota headers: the Upload API sends none).
    answered: bool,
    /// Since when the current window's end has not been known.
    unknown_since: Option<SystemTime>,
    /// Calls let through without the share's check: probes past a block or into a window
    /// whose end is unknown (the only calls that may find the quota spent).
    blind: u64,
}

/// Permission to make one call; gives the slot back when dropped.
#[derive(Debug)]
pub struct Permit<'a> {
    gate: &'a RateGate,
    /// The gate's block epoch when the permit was granted.
    epoch: u64,
}

impl Permit<'_> {
    /// Whether this permit is `gate`'s.
    pub fn is_from(&self, gate: &RateGate) -> bool {
        std::ptr::eq(self.gate, gate)
    }

    /// The call was answered (not refused), with the quota it reported: the gate learns it,
    /// and a block set before this permit was granted is lifted (Cloudinary takes calls
    /// again: the operator raised a limit, the credentials were fixed).
    pub fn answered(self, quota: Option<Quota>) {
        self.gate.observe(quota);
        let mut s = self.gate.lock();
        if s.block_epoch == self.epoch && s.blocked_until.is_some() {
            s.blocked_until = None;
            s.last_probe = None;
        }
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

/// A window whose end no answer tells is over after this long (Cloudinary's quota is hourly).
const UNKNOWN_WINDOW: Duration = Duration::from_secs(3600);

/// A block longer than this (a limit that does not reset within the hour, or one Cloudinary
/// did not date) lets one probe call through this often, so that a raised limit is found.
pub const LONG_BLOCK_PROBE: Duration = Duration::from_secs(900);

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
        let mut s = self.lock();
        s.blind += 1;
        self.grant(&mut s)
    }

    /// Calls let through without the share's check so far.
    pub fn blind_grants(&self) -> u64 {
        self.lock().blind
    }

    /// A permit, or the time until which calls would be refused.
    pub fn admit(&self, now: SystemTime) -> Result<Permit<'_>, SystemTime> {
        let mut s = self.lock();
        match self.check(&mut s, now) {
            Ok(blind) => {
                s.blind += u64::from(blind);
                Ok(self.grant(&mut s))
            }
            Err(until) if Self::may_probe(&s, now, until) => {
                s.last_probe = Some(now);
                s.blind += 1;
                Ok(self.grant(&mut s))
            }
            Err(until) => Err(until),
        }
    }

    /// Whether a call may go past a long block to find out whether it still holds: one at a
    /// time, every [`LONG_BLOCK_PROBE`].
    fn may_probe(s: &GateState, now: SystemTime, until: SystemTime) -> bool {
        s.blocked_until == Some(until)
            && until > now + LONG_BLOCK_PROBE
            && s.in_flight == 0
            && s.last_probe.is_none_or(|t| now >= t + LONG_BLOCK_PROBE)
    }

    /// Counts one call in the window and in flight.
    fn grant(&self, s: &mut GateState) -> Permit<'_> {
        s.used += 1;
        s.in_flight += 1;
        Permit {
            gate: self,
            epoch: s.block_epoch,
        }
    }

    /// When this instance may call again, if it may not now.
    pub fn closed_until(&self, now: SystemTime) -> Option<SystemTime> {
        let mut s = self.lock();
        self.check(&mut s, now).err()
    }

    /// `Ok(true)`: open only for a probe: into a window whose end is unknown, or the first
    /// call, before any answer told the quota.
    fn check(&self, s: &mut GateState, now: SystemTime) -> Result<bool, SystemTime> {
        if let Some(until) = s.blocked_until {
            if until > now {
                return Err(until);
            }
            s.blocked_until = None;
        }
        Self::turn_window(s, now);
        let retry = s.window_end.unwrap_or(now + SETTLE);
        match s.quota {
            // Nothing heard yet: one probe call at a time, to learn the quota (if any).
            None if !s.answered && s.in_flight > 0 => Err(now + SETTLE),
            None => Ok(!s.answered),
            Some(q) => {
                let share = (q.limit / self.sharers).max(1);
                let spent = s.used >= share || q.remaining / self.sharers <= s.in_flight;
                match (spent, s.window_end) {
                    (false, _) => Ok(false),
                    (true, Some(end)) => Err(end),
                    // Spent in a window whose end no answer has told (every call since the
                    // turn failed, or the answers carried no reset): after a while, one probe
                    // at a time learns the window again.
                    (true, None) => {
                        let since = *s.unknown_since.get_or_insert(now);
                        if s.in_flight == 0 && now >= since + PROBE_UNKNOWN_WINDOW {
                            Ok(true)
                        } else {
                            Err(retry)
                        }
                    }
                }
            }
        }
    }

    /// Starts a new window when the current one has ended: its end has passed, or no answer
    /// told it for an hour.
    fn turn_window(s: &mut GateState, now: SystemTime) {
        let ended = s.window_end.is_some_and(|end| end <= now)
            || (s.window_end.is_none()
                && s.unknown_since.is_some_and(|t| now >= t + UNKNOWN_WINDOW));
        if !ended {
            return;
        }
        // A new window: the whole limit, until an answer reports the new figures.
        if let Some(end) = s.window_end.take() {
            s.turned = Some(s.turned.map_or(end, |t| t.max(end)));
        }
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
        // A late answer from a window that is over says nothing about this one.
        if q.reset.is_some_and(|r| s.turned.is_some_and(|t| r <= t)) {
            return;
        }
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
    /// A later answer to a call let through it lifts it.
    pub fn block_until(&self, now: SystemTime, until: SystemTime) {
        let mut s = self.hold(now, until);
        // A refusal within the hour ends the window it happened in; a longer one is another
        // limit than the hourly quota, and says nothing about its window.
        if s.window_end.is_none() && until <= now + UNKNOWN_WINDOW {
            s.window_end = Some(until);
            s.unknown_since = None;
        }
    }

    /// Refuses calls until `until` for a cause that says nothing of the quota's window (the
    /// credentials refused). A later answer to a call let through it lifts it.
    pub fn pause_until(&self, now: SystemTime, until: SystemTime) {
        drop(self.hold(now, until));
    }

    fn hold(&self, now: SystemTime, until: SystemTime) -> std::sync::MutexGuard<'_, GateState> {
        let mut s = self.lock();
        s.block_epoch += 1;
        s.blocked_until = Some(s.blocked_until.map_or(until, |t| t.max(until)));
        s.last_probe = Some(now);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

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
        gate.block_until(now, now + Duration::from_secs(30));
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
        gate.block_until(turned, reset);
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

    /// Defect: a 420 while the quota still reported calls left blocked for a day (a monthly
    /// limit for a month), and no later answer lifted it: after the operator raised the limit,
    /// warm instances kept refusing. A long block lets a probe through every quarter hour, and
    /// its answer opens the gate again.
    #[test]
    fn a_long_block_is_probed_and_lifted_by_an_answer() {
        let gate = RateGate::default();
        let now = SystemTime::now();
        let reset = now + Duration::from_secs(600);
        gate.observe(quota(2000, 1500, reset));
        gate.block_until(now, now + Duration::from_secs(24 * 3600));
        assert!(gate.admit(now + Duration::from_secs(60)).is_err());
        let later = now + LONG_BLOCK_PROBE;
        let probe = gate.admit(later).expect("a probe after a quarter hour");
        assert!(gate.admit(later).is_err(), "one probe at a time");
        probe.answered(quota(2000, 1499, reset));
        let permits: Vec<_> = (0..5).map(|_| gate.admit(later).expect("open")).collect();
        assert_eq!(permits.len(), 5);
        // An answer to a call made before a block says nothing about it.
        let early = gate.admit(later).unwrap();
        gate.block_until(later, later + Duration::from_secs(30 * 24 * 3600));
        early.answered(quota(2000, 1400, reset));
        assert!(gate.closed_until(later).is_some(), "still blocked");
    }

    /// Defect: once a window turned, a late answer from it set a window end already past, and
    /// the next check started yet another window with nothing counted: 9 calls on a share of 5.
    #[test]
    fn a_late_answer_from_a_turned_window_does_not_reset_the_count() {
        let gate = RateGate::shared_by(2);
        let now = SystemTime::now();
        let reset = now + Duration::from_secs(10);
        gate.observe(quota(10, 10, reset));
        let turned = reset + Duration::from_millis(1);
        let permits: Vec<_> = (0..5).map(|_| gate.admit(turned).unwrap()).collect();
        assert!(gate.admit(turned).is_err(), "a share of 5");
        gate.observe(quota(10, 4, reset));
        // The new window's calls end without an answer that tells its reset (5xx, say).
        drop(permits);
        let mut more = 0;
        while gate.admit(turned).map(std::mem::forget).is_ok() && more < 10 {
            more += 1;
        }
        assert_eq!(more, 0, "calls admitted past the share after a late answer");
    }

    /// Defect: quota headers without a readable reset closed the gate for good.
    #[test]
    fn a_quota_without_a_reset_does_not_close_the_gate_for_good() {
        let gate = RateGate::default();
        let now = SystemTime::now();
        gate.observe(Some(Quota {
            limit: 10,
            remaining: 0,
            reset: None,
        }));
        assert!(gate.admit(now).is_err());
        let probe = gate
            .admit(now + PROBE_UNKNOWN_WINDOW)
            .expect("a probe a minute later");
        drop(probe);
        let hour = now + UNKNOWN_WINDOW + Duration::from_secs(1);
        gate.observe(Some(Quota {
            limit: 10,
            remaining: 10,
            reset: None,
        }));
        assert!(
            gate.admit(hour).is_ok(),
            "an hour later the window has turned"
        );
    }

    /// A seeded search over one instance's calls: admits at random moments, at a pace drawn
    /// anew for each window (a slow window still has calls in flight when it turns, a busy one
    /// spends its share); answers after random latencies (up to Cloudinary's minute) and in any
    /// order, each reporting the quota of the clock-hour window it arrived in, or lost (a 5xx
    /// tells the gate nothing). However the answers interleave with the turn of
    /// a window, the instance makes at most its share of calls in each window, but for the
    /// probes it makes blind.
    #[test]
    fn no_interleaving_of_answers_and_turns_admits_past_the_share() {
        for seed in 1..=1000u64 {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n.max(1)
            };
            let (limit, sharers) = ([4, 10, 30, 60, 100, 200][next(6) as usize], 1 + next(3));
            let share = (limit / sharers).max(1);
            let failing = next(3);
            let gate = RateGate::shared_by(sharers as u32);
            let origin = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            let hour = |t: Duration| t.as_secs() / 3600;
            let mut in_flight: Vec<(Duration, Permit<'_>, Option<Quota>)> = Vec::new();
            let mut admitted: std::collections::BTreeMap<u64, u64> = Default::default();
            let mut t = Duration::ZERO;
            // Each window its own pace: a slow one still has calls in flight when it turns,
            // a busy one spends its share.
            let (mut pace, mut paced) = (0, None);
            while t < Duration::from_secs(6 * 3600) {
                t += Duration::from_millis(next(90_000));
                if paced != Some(hour(t)) {
                    paced = Some(hour(t));
                    pace = [1, 2, 4, 8, 2 * share][next(5) as usize];
                }
                let now = origin + t;
                // Answers due by now, in any order.
                let mut due: Vec<usize> = (0..in_flight.len())
                    .filter(|&i| in_flight[i].0 <= t)
                    .collect();
                while !due.is_empty() {
                    let i = due.remove(next(due.len() as u64) as usize);
                    let (_, permit, quota) = in_flight.remove(i);
                    // A 5xx or a dropped answer tells the gate nothing.
                    if next(4) < failing {
                        drop(permit);
                    } else {
                        permit.answered(quota);
                    }
                    due = (0..in_flight.len())
                        .filter(|&i| in_flight[i].0 <= t)
                        .collect();
                }
                for _ in 0..next(pace + 1) {
                    let blind = gate.blind_grants();
                    let Ok(permit) = gate.admit(now) else { break };
                    let w = hour(t);
                    if gate.blind_grants() == blind {
                        *admitted.entry(w).or_default() += 1;
                    }
                    // The quota as the call's arrival finds it: the others as busy as this one.
                    let used = admitted.get(&w).copied().unwrap_or(0) * sharers;
                    let quota = Some(Quota {
                        limit,
                        remaining: limit.saturating_sub(used),
                        reset: Some(origin + Duration::from_secs((w + 1) * 3600)),
                    });
                    let latency = Duration::from_millis(100 + next(60_000));
                    in_flight.push((t + latency, permit, quota));
                }
            }
            for (w, n) in admitted {
                assert!(
                    n <= share,
                    "seed {seed}: {n} calls in window {w} on a share of {share}"
                );
            }
        }
    }
}
