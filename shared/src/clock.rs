//! Time: the clock the use cases read, milliseconds since the epoch and RFC 3339 timestamps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where "now" comes from. Production reads the system clock; tests and simulations read
/// tokio's clock, which a paused runtime advances only when every task waits, so hours of
/// deferrals and deadlines pass in microseconds and the same run gives the same answer.
#[derive(Debug, Clone, Copy, Default)]
pub enum Clock {
    #[default]
    System,
    /// `origin` plus the tokio time elapsed since `start`.
    Tokio {
        origin: SystemTime,
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that reads tokio's time, starting at `origin` now.
    pub fn tokio(origin: SystemTime) -> Self {
        Self::Tokio {
            origin,
            start: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> SystemTime {
        match self {
            Self::System => SystemTime::now(),
            Self::Tokio { origin, start } => *origin + start.elapsed(),
        }
    }

    /// Time left until `deadline` (zero once it has passed).
    pub fn until(&self, deadline: SystemTime) -> Duration {
        deadline.duration_since(self.now()).unwrap_or_default()
    }
}

pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

pub fn from_epoch_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

pub fn rfc3339(t: SystemTime) -> String {
    let t: time::OffsetDateTime = t.into();
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("a SystemTime always formats as RFC 3339")
}

/// RFC 3339 in whole seconds (as the Search API's date terms take them).
pub fn rfc3339_secs(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
}

pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_follows_paused_time() {
        let origin = from_epoch_ms(1_700_000_000_000);
        let clock = Clock::tokio(origin);
        assert_eq!(clock.now(), origin);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(clock.now(), origin + Duration::from_secs(3600));
        assert_eq!(clock.until(origin), Duration::ZERO);
    }
}
