//! Keeps OCR calls that Cloudinary would refuse from being made.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::cloudinary::Quota;

/// Shared by every record of every invocation in one worker instance.
#[derive(Debug, Default)]
pub struct RateGate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    /// Refused until then (a 420 was seen).
    blocked_until: Option<SystemTime>,
    /// The last quota Cloudinary reported, valid until its reset.
    quota: Option<Quota>,
    in_flight: u64,
}

/// Permission to make one call; gives the slot back when dropped.
#[derive(Debug)]
pub struct Permit<'a> {
    gate: &'a RateGate,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut s = self.gate.state.lock().unwrap_or_else(|e| e.into_inner());
        s.in_flight = s.in_flight.saturating_sub(1);
    }
}

/// When no reset time is known after a refusal, wait this long.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(60);

impl RateGate {
    pub fn new() -> Self {
        Self::default()
    }

    /// A permit, or the time until which calls would be refused.
    pub fn admit(&self, now: SystemTime) -> Result<Permit<'_>, SystemTime> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = s.blocked_until {
            if until > now {
                return Err(until);
            }
            s.blocked_until = None;
        }
        if let Some(q) = s.quota {
            match q.reset {
                Some(reset) if reset <= now => s.quota = None,
                _ => {
                    // The calls already in flight will use the remaining quota.
                    if q.remaining <= s.in_flight {
                        return Err(q.reset.unwrap_or(now + DEFAULT_BACKOFF));
                    }
                }
            }
        }
        s.in_flight += 1;
        Ok(Permit { gate: self })
    }

    /// The remaining quota last reported, while it applies.
    pub fn remaining(&self) -> Option<u64> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.quota.map(|q| q.remaining)
    }

    /// Records the quota an answer reported.
    pub fn observe(&self, quota: Option<Quota>) {
        if let Some(q) = quota {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            // Answers arrive out of order; the lowest remaining figure is the safe one.
            s.quota = Some(match s.quota {
                Some(old) if old.reset == q.reset && old.remaining < q.remaining => old,
                _ => q,
            });
        }
    }

    /// Refuses calls until `until` (after an HTTP 420).
    pub fn block_until(&self, until: SystemTime) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.blocked_until = Some(s.blocked_until.map_or(until, |t| t.max(until)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_until_reset_after_a_refusal() {
        let gate = RateGate::new();
        let now = SystemTime::now();
        gate.block_until(now + Duration::from_secs(30));
        assert_eq!(gate.admit(now).unwrap_err(), now + Duration::from_secs(30));
        assert!(gate.admit(now + Duration::from_secs(31)).is_ok());
    }

    #[test]
    fn remaining_quota_bounds_calls_in_flight() {
        let gate = RateGate::new();
        let now = SystemTime::now();
        let reset = now + Duration::from_secs(600);
        gate.observe(Some(Quota {
            limit: 10,
            remaining: 2,
            reset: Some(reset),
        }));
        let a = gate.admit(now).unwrap();
        let b = gate.admit(now).unwrap();
        assert_eq!(gate.admit(now).unwrap_err(), reset);
        drop(a);
        let _c = gate.admit(now).unwrap();
        drop(b);
        // After the reset the old figure no longer applies.
        assert!(gate.admit(reset + Duration::from_secs(1)).is_ok());
    }
}
