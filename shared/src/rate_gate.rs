//! Keeps the Admin API calls Cloudinary would refuse from being made, but for the few a bet on
//! idle instances may cost (below).
//!
//! Cloudinary reports the Admin quota on every answer (limit, remaining, reset). Each worker
//! instance keeps its own gate, and up to `instances` of them (the reserved concurrency) call on
//! the same quota without talking to each other. So each instance
//! - makes a single probe call until it has seen the quota once,
//! - makes its share (`limit / instances`) of calls per window, and more only as far as the
//!   answers to its own calls show the others left calls unused: after each answer, its share
//!   of what the figure held says remains, less its own calls that figure may not count (made
//!   after the figure's call, or before it and still in flight or lost after it was made:
//!   Cloudinary may count those later), and
//! - keeps its calls in flight within its share of what Cloudinary says remains (which also
//!   leaves room for other users of the quota, such as the lister).
//!
//! An instance's figure is as old as its latest answer, and the others call meanwhile: the
//! calls past its share are a bet that the others leave theirs unused. It pays at the end of
//! a backlog (the last read-backs sit in a few instances, which use what the idle ones leave
//! instead of waiting for the next window with calls unused) and with `update` (instances
//! that would wait out their spent share while the quota has calls left). When the bet loses
//! (an idle instance wakes, or a busy one's figure was older than the others'), the calls past
//! the limit are refused (HTTP 420, never billed) and wait for the reset like any refusal:
//! at most an instance's calls in flight, its share of what remains. Going past its share
//! never gets a lone instance refused: its figures count every call but its own. Counting its
//! own calls the figure may not count is the safe side, and it costs: an instance whose last
//! answers were lost (a 5xx, a timeout), or whose calls reached Cloudinary out of order, may
//! stop short of what the others left until the window turns, never below its share.

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
    /// Calls this instance may make in the current window by the figure it holds (beyond its
    /// share when the others left calls unused); 0 until an answer says more.
    allowed: u64,
    /// Windows turned so far: a call's place counts only in the window it was made in.
    turns: u64,
    /// The place of the call whose answer gave the figure held, when it was one of this
    /// window's calls (what it may not count is known from there).
    figure_seq: Option<u64>,
    /// The calls in flight, each by its window's turn and its place in it.
    flying: Vec<(u64, u64)>,
    /// This window's calls that ended without an answer (a timeout, a 5xx), each by its place
    /// and by `used` when it ended: Cloudinary may count one later than a figure of a call made
    /// before it ended.
    lost: Vec<(u64, u64)>,
    /// An answer has arrived (with or without quota headers: the Upload API sends none).
    answered: bool,
    /// Since when the current window's end has not been known.
    unknown_since: Option<SystemTime>,
    /// Calls let through without the share's check: probes past a block or into a window
    /// whose end is unknown (the only calls that may find the quota spent).
    blind: u64,
}

impl GateState {
    /// Calls in flight.
    fn in_flight(&self) -> u64 {
        self.flying.len() as u64
    }
}

/// Permission to make one call; gives the slot back when dropped.
#[derive(Debug)]
pub struct Permit<'a> {
    gate: &'a RateGate,
    /// The gate's block epoch when the permit was granted.
    epoch: u64,
    /// The call's place among its window's calls, and that window.
    seq: (u64, u64),
    /// Whether an answer came (with or without the quota).
    heard: bool,
}

impl Permit<'_> {
    /// Whether this permit is `gate`'s.
    pub fn is_from(&self, gate: &RateGate) -> bool {
        std::ptr::eq(self.gate, gate)
    }

    /// The call was answered (not refused), with the quota it reported: the gate learns it,
    /// and a block set before this permit was granted is lifted (Cloudinary takes calls
    /// again: the operator raised a limit, the credentials were fixed).
    pub fn answered(mut self, quota: Option<Quota>) {
        self.heard = true;
        self.gate.observe_call(quota, Some(self.seq));
        let mut s = self.gate.lock();
        if s.block_epoch == self.epoch && s.blocked_until.is_some() {
            s.blocked_until = None;
            s.last_probe = None;
        }
    }
}

impl Permit<'_> {
    /// The call failed, and its answer still reported the quota: the gate learns it (a
    /// refusal's block, if any, stays).
    pub fn observed(mut self, quota: Option<Quota>) {
        self.heard = true;
        self.gate.observe_call(quota, Some(self.seq));
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        if let Some(i) = s.flying.iter().position(|f| *f == self.seq) {
            s.flying.swap_remove(i);
        }
        if !self.heard && self.seq.0 == s.turns {
            let used = s.used;
            s.lost.push((self.seq.1, used));
        }
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
            && s.in_flight() == 0
            && s.last_probe.is_none_or(|t| now >= t + LONG_BLOCK_PROBE)
    }

    /// Counts one call in the window and in flight.
    fn grant(&self, s: &mut GateState) -> Permit<'_> {
        s.used += 1;
        let seq = (s.turns, s.used);
        s.flying.push(seq);
        Permit {
            gate: self,
            epoch: s.block_epoch,
            seq,
            heard: false,
        }
    }

    /// Whether [`Self::admit`] would let a call through now (the probe past a long block
    /// included), without taking a permit; or the time until which it would not.
    pub fn would_admit(&self, now: SystemTime) -> Result<(), SystemTime> {
        let mut s = self.lock();
        match self.check(&mut s, now) {
            Ok(_) => Ok(()),
            Err(until) if Self::may_probe(&s, now, until) => Ok(()),
            Err(until) => Err(until),
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
            None if !s.answered && s.in_flight() > 0 => Err(now + SETTLE),
            None => Ok(!s.answered),
            Some(q) => {
                let share = (q.limit / self.sharers).max(1);
                let spent =
                    s.used >= share.max(s.allowed) || q.remaining / self.sharers <= s.in_flight();
                match (spent, s.window_end) {
                    (false, _) => Ok(false),
                    (true, Some(end)) => Err(end),
                    // Spent in a window whose end no answer has told (every call since the
                    // turn failed, or the answers carried no reset): after a while, one probe
                    // at a time learns the window again.
                    (true, None) => {
                        let since = *s.unknown_since.get_or_insert(now);
                        if s.in_flight() == 0 && now >= since + PROBE_UNKNOWN_WINDOW {
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
        s.allowed = 0;
        s.turns += 1;
        s.figure_seq = None;
        s.lost.clear();
        if let Some(q) = s.quota.as_mut() {
            *q = Quota {
                limit: q.limit,
                remaining: q.limit,
                reset: None,
            };
        }
    }

    /// What the figure held allows this instance in the window: its share of what remains,
    /// less its own calls the figure may not count: those made after the figure's call, and
    /// those made before it that are still in flight (but `answered`, whose answer came) or
    /// ended without an answer after it was made (Cloudinary may count them later). A call
    /// made after the figure's and answered before it is counted twice: the safe side.
    fn widen(&self, s: &mut GateState, answered: Option<(u64, u64)>, replace: bool) {
        let (Some(figure_seq), Some(held)) = (s.figure_seq, s.quota) else {
            return;
        };
        let turns = s.turns;
        let flying = s
            .flying
            .iter()
            .filter(|&&f| Some(f) != answered && (f.0 != turns || f.1 < figure_seq))
            .count();
        let lost = s
            .lost
            .iter()
            .filter(|&&(seq, ended)| seq < figure_seq && ended >= figure_seq)
            .count();
        let before = (flying + lost) as u64;
        let unseen = (s.used - figure_seq) + before;
        let allowed = s
            .used
            .saturating_add((held.remaining / self.sharers).saturating_sub(unseen));
        s.allowed = if replace {
            allowed
        } else {
            s.allowed.max(allowed)
        };
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
        self.observe_call(quota, None);
    }

    /// Records the quota the answer to this instance's call `seq` of the window reported, and
    /// from it how many calls the instance may make in the window (see [`Self::widen`]).
    fn observe_call(&self, quota: Option<Quota>, seq: Option<(u64, u64)>) {
        let mut s = self.lock();
        s.answered = true;
        let Some(mut q) = quota else { return };
        q.remaining = q.remaining.min(q.limit);
        // A late answer from a window that is over says nothing about this one.
        if q.reset.is_some_and(|r| s.turned.is_some_and(|t| r <= t)) {
            return;
        }
        // The call's place, when it was made in this window.
        let turns = s.turns;
        let place = seq.filter(|&(w, _)| w == turns).map(|(_, n)| n);
        let adopted = match s.quota {
            // A late answer from an earlier window says nothing about this one.
            Some(Quota {
                reset: Some(current),
                ..
            }) if q.reset.is_some_and(|r| r < current) => false,
            // Answers arrive out of order; the lowest remaining figure is the safe one.
            Some(old) if old.reset == q.reset && old.remaining < q.remaining => false,
            _ => true,
        };
        if adopted {
            s.quota = Some(q);
            s.figure_seq = place.filter(|_| q.reset.is_some());
            // A figure whose call's place is not known cannot widen the window.
            s.allowed = s.allowed.min(s.used);
        }
        // A figure adopted now replaces what an older one allowed; one not kept (its call
        // was counted before the figure's) still tells that its call is counted.
        if place.is_some() {
            self.widen(&mut s, seq, adopted);
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

    /// A seeded xorshift: each call draws a number below `n`.
    fn draws(mut state: u64) -> impl FnMut(u64) -> u64 {
        move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n.max(1)
        }
    }

    /// Answers the calls due by `t` (each with the remaining figure its arrival found), in an
    /// order `next` draws, losing one in `lost_one_in` (dropped without an answer).
    fn answer_due(
        in_flight: &mut Vec<(u64, u64, Permit<'_>)>,
        t: u64,
        next: &mut impl FnMut(u64) -> u64,
        lost_one_in: u64,
        figure: impl Fn(u64) -> Quota,
    ) {
        loop {
            let due: Vec<usize> = (0..in_flight.len())
                .filter(|&i| in_flight[i].0 <= t)
                .collect();
            if due.is_empty() {
                return;
            }
            let (_, remaining, permit) =
                in_flight.swap_remove(due[next(due.len() as u64) as usize]);
            if next(lost_one_in) == 0 {
                drop(permit);
            } else {
                permit.answered(Some(figure(remaining)));
            }
        }
    }

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
        let reset = now + Duration::from_secs(3600);
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
        // The new window's calls end without an answer that tells its reset (5xx, say).
        let mut made = 0;
        while let Ok(permit) = gate.admit(turned) {
            made += 1;
            drop(permit);
            assert!(made <= 10);
        }
        assert_eq!(made, 5, "a share of 5");
        gate.observe(quota(10, 4, reset));
        let mut more = 0;
        while gate.admit(turned).map(std::mem::forget).is_ok() && more < 10 {
            more += 1;
        }
        assert_eq!(more, 0, "calls admitted past the share after a late answer");
    }

    #[test]
    fn past_its_share_while_the_answers_show_calls_the_others_left() {
        let gate = RateGate::shared_by(4);
        let now = SystemTime::now();
        let reset = now + Duration::from_secs(600);
        gate.observe(quota(40, 40, reset));
        // Alone on the quota, one call at a time: each answer counts every call before it.
        let mut made = 0;
        while let Ok(permit) = gate.admit(now) {
            made += 1;
            permit.answered(quota(40, 40 - made, reset));
            assert!(made <= 40, "past the limit");
        }
        // Its share is 10; it goes on while a quarter of what remains is at least one call.
        assert_eq!(
            made, 37,
            "all but what the in-flight bound keeps for the others"
        );
        assert_eq!(gate.admit(now).unwrap_err(), reset);
        // A new window: the share again, nothing carried over.
        let next = reset + Duration::from_millis(1);
        let first = gate.admit(next).unwrap();
        first.answered(quota(40, 39, reset + Duration::from_secs(3600)));
        let calls: Vec<_> = std::iter::from_fn(|| gate.admit(next).ok())
            .take(20)
            .collect();
        assert_eq!(
            calls.len(),
            9,
            "the share of the new window, its first call included"
        );
    }

    /// Answers come back in any order: the lowest figure is kept, and an answer whose own
    /// figure is higher (its call was counted before) still lets the calls that ended since
    /// count. The gate must not stay shut with most of the window unused.
    #[test]
    fn answers_in_any_order_do_not_shut_the_gate_with_calls_left() {
        let gate = RateGate::shared_by(4);
        let now = SystemTime::now();
        let reset = now + Duration::from_secs(600);
        gate.observe(quota(40, 40, reset));
        let mut permits: Vec<_> = (0..10).map(|_| gate.admit(now).unwrap()).collect();
        assert!(gate.admit(now).is_err(), "the share, all in flight");
        // The last call is answered first and counts all ten; the others, answered after it,
        // report higher figures (they were counted earlier).
        permits.pop().unwrap().answered(quota(40, 30, reset));
        for (i, permit) in permits.into_iter().enumerate().rev() {
            permit.answered(quota(40, 31 + i as u64, reset));
        }
        assert_eq!(gate.remaining(), Some(30));
        // 30 / 4 = 7 more, all of them the others left.
        let more: Vec<_> = std::iter::from_fn(|| gate.admit(now).ok())
            .take(20)
            .collect();
        assert_eq!(more.len(), 7);
    }

    /// Calls that end without a figure (5xx, timeouts) never let an instance past what the
    /// last figure allowed, however many there are.
    #[test]
    fn calls_without_answers_stop_at_what_the_last_figure_allowed() {
        let gate = RateGate::shared_by(4);
        let now = SystemTime::now();
        let reset = now + Duration::from_secs(600);
        gate.observe(quota(40, 40, reset));
        let first = gate.admit(now).unwrap();
        first.answered(quota(40, 39, reset));
        let mut made = 1;
        while let Ok(permit) = gate.admit(now) {
            made += 1;
            drop(permit);
            assert!(made <= 40);
        }
        assert_eq!(made, 10, "the share: the figure allowed no more");
        // A figure reported by an error answer counts like any other.
        let gate = RateGate::shared_by(2);
        gate.observe(quota(10, 10, reset));
        let a = gate.admit(now).unwrap();
        a.observed(quota(10, 2, reset));
        assert_eq!(gate.remaining(), Some(2));
        let b = gate.admit(now).unwrap();
        assert!(gate.admit(now).is_err(), "2 / 2 = 1 in flight");
        drop(b);
    }

    /// Several instances on one quota, as Cloudinary counts it: some busy from the start,
    /// others waking later, answers out of order or lost. However they interleave, a refusal
    /// closes an instance's gate for the window: Cloudinary refuses each instance once at
    /// most (but for the probes a long block lets through).
    #[test]
    fn instances_on_one_quota_are_refused_at_most_once_each() {
        for seed in 1..=300u64 {
            let mut next = draws(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let limit = [20, 60, 200][next(3) as usize];
            let sharers = 2 + next(4);
            let gates: Vec<RateGate> = (0..sharers)
                .map(|_| RateGate::shared_by(sharers as u32))
                .collect();
            let origin = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            let window = Duration::from_secs(3600);
            // Each instance works in spells: busy from a start to an end within the window.
            let spells: Vec<(u64, u64)> = (0..sharers)
                .map(|i| {
                    let start = if i == 0 { 0 } else { next(3000) };
                    (start, start + 60 + next(3600 - start))
                })
                .collect();
            let mut accepted = 0u64;
            let mut refused = 0u64;
            let mut in_flight: Vec<(u64, u64, Permit<'_>)> = Vec::new();
            let mut t = 0u64;
            loop {
                t += 1 + next(20);
                if t >= 3600 {
                    break;
                }
                let now = origin + Duration::from_secs(t);
                // Answers due, in any order; a quarter of them lost.
                answer_due(&mut in_flight, t, &mut next, 4, |remaining| Quota {
                    limit,
                    remaining,
                    reset: Some(origin + window),
                });
                for (i, gate) in gates.iter().enumerate() {
                    if t < spells[i].0 || t > spells[i].1 {
                        continue;
                    }
                    for _ in 0..1 + next(8) {
                        let blind = gate.blind_grants();
                        let Ok(permit) = gate.admit(now) else { break };
                        // Cloudinary counts the call when it arrives.
                        if accepted < limit {
                            accepted += 1;
                            in_flight.push((t + 1 + next(30), limit - accepted, permit));
                        } else {
                            // A probe past a long block is meant to meet the refusal.
                            refused += u64::from(gate.blind_grants() == blind);
                            gate.block_until(now, origin + window);
                            drop(permit);
                        }
                    }
                }
            }
            assert!(
                refused <= sharers,
                "seed {seed}: {refused} calls refused for {sharers} instances (limit {limit})"
            );
        }
    }

    /// A lone busy instance, its answers out of order, uses the window: all but what the
    /// in-flight bound leaves for the others. With some answers lost it may stop short (calls
    /// after its last figure whose answers were lost count as not yet counted, until the
    /// window turns), never below its share.
    #[test]
    fn a_lone_instance_uses_what_the_idle_ones_leave() {
        for seed in 1..=200u64 {
            let mut next = draws(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
            let limit = [40, 200, 2000][next(3) as usize];
            let sharers = 1 + next(50);
            let lossy = seed % 2 == 0;
            let gate = RateGate::shared_by(sharers as u32);
            let origin = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            let reset = origin + Duration::from_secs(3600);
            let mut accepted = 0u64;
            let mut in_flight: Vec<(u64, u64, Permit<'_>)> = Vec::new();
            let mut t = 0u64;
            while t < 3500 {
                t += 1;
                let now = origin + Duration::from_secs(t);
                // Answers due, in any order; with losses, one in ten lost.
                let lost_one_in = if lossy { 10 } else { u64::MAX };
                answer_due(&mut in_flight, t, &mut next, lost_one_in, |remaining| {
                    Quota {
                        limit,
                        remaining,
                        reset: Some(reset),
                    }
                });
                while let Ok(permit) = gate.admit(now) {
                    assert!(accepted < limit, "seed {seed}: a call past the limit");
                    accepted += 1;
                    // The figure as the call's arrival finds it.
                    in_flight.push((t + 1 + next(5), limit - accepted, permit));
                }
            }
            let floor = if lossy {
                (limit / sharers).max(1)
            } else {
                limit.saturating_sub(sharers)
            };
            assert!(
                accepted >= floor,
                "seed {seed}: {accepted} of {limit} used by a lone instance of {sharers}"
            );
        }
    }

    /// A call made before the figure's that ends without an answer after it may still be
    /// counted later (it reached Cloudinary after the figure's call): a lone instance is never
    /// refused for taking it as counted.
    #[test]
    fn a_call_lost_after_the_figure_still_counts_against_it() {
        let gate = RateGate::shared_by(1);
        let now = SystemTime::now();
        let reset = now + Duration::from_secs(600);
        gate.observe(quota(3, 3, reset));
        let early = gate.admit(now).unwrap();
        let figure = gate.admit(now).unwrap();
        // The later call reached Cloudinary first; the earlier one arrives after it, is
        // counted, and times out.
        figure.answered(quota(3, 2, reset));
        drop(early);
        let last = gate.admit(now).expect("the third call");
        assert!(gate.admit(now).is_err(), "a fourth call would be refused");
        drop(last);
        // Past the share, the lost call is what keeps the allowance from one call too many:
        // the figure counts its own call only, the earlier one arrives after it.
        let gate = RateGate::shared_by(2);
        gate.observe(quota(20, 20, reset));
        let early = gate.admit(now).unwrap();
        let figure = gate.admit(now).unwrap();
        drop(early);
        figure.answered(quota(20, 19, reset));
        let mut more = 0;
        while let Ok(permit) = gate.admit(now) {
            more += 1;
            permit.answered(None);
            assert!(more <= 20);
        }
        assert_eq!(more, 8, "2 + 19 / 2 less the lost call: 10 in all");
        // Calls that end without an answer before a figure's call was made are counted in it.
        let gate = RateGate::shared_by(2);
        gate.observe(quota(20, 20, reset));
        for _ in 0..4 {
            drop(gate.admit(now).unwrap());
        }
        let figure = gate.admit(now).unwrap();
        figure.answered(quota(20, 15, reset));
        let mut more = 0;
        while let Ok(permit) = gate.admit(now) {
            more += 1;
            drop(permit);
            assert!(more <= 20);
        }
        assert_eq!(
            more, 7,
            "15 / 2 past the figure: the lost calls were counted in it"
        );
    }

    #[test]
    fn a_figure_past_the_limit_counts_as_the_limit() {
        let gate = RateGate::shared_by(1);
        let reset = SystemTime::now() + Duration::from_secs(600);
        gate.observe(quota(10, u64::MAX, reset));
        assert_eq!(gate.remaining(), Some(10));
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
            let mut next = draws(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
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
