//! What the pipeline may spend on the paid add-on: at most `per_day` OCR requests a UTC day and
//! `per_month` a UTC month, and never past the add-on's own monthly limit less a margin.
//!
//! Every paid request takes a unit before it is sent, from counters kept by a store with
//! atomic conditional increments (DynamoDB's `UpdateItem` with a condition in AWS), so that
//! concurrent invocations never take more than the budget between them. A request Cloudinary
//! refused gives its unit back; one that may have run keeps it (it may have been billed).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

mod dynamodb;

use crate::clock::{epoch_ms, from_epoch_ms};
use crate::store::StoreError;

/// A boxed future, so that the counters can be shared as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The counter of one period.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Counter {
    /// Units taken in the period.
    pub used: u64,
    /// The most units the add-on's own limit allows in the period (set from Cloudinary's
    /// `usage`), if known.
    pub addon_cap: Option<u64>,
}

/// Counters kept by a store. Keys name a period (`budget#day#2026-12-05`).
pub trait Counters: Send + Sync {
    /// Adds one to the counter when it is below `max` (and below its add-on cap, if
    /// `with_cap`: a counter without a cap then refuses); `false` when it is not (nothing
    /// changed).
    fn take(
        &self,
        key: &str,
        max: Option<u64>,
        with_cap: bool,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// Takes one off the counter.
    fn give_back(&self, key: &str) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The counter as it is (zero when it was never taken from).
    fn read(&self, key: &str) -> BoxFuture<'_, Result<Counter, StoreError>>;
    /// Sets the counter's add-on cap.
    fn set_cap(&self, key: &str, cap: u64) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// The limits; 0 is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub per_day: u64,
    pub per_month: u64,
    /// OCRs kept in hand below the add-on's monthly limit (see [`Budget::observe_usage`]);
    /// `None`: the add-on's limit is not watched.
    pub addon_margin: Option<u64>,
}

impl Limits {
    /// Whether anything is counted at all (nothing is, and nothing is paid for counting, when
    /// no limit is set).
    pub fn any(&self) -> bool {
        self.per_day > 0 || self.per_month > 0 || self.addon_margin.is_some()
    }
}

/// Which period's budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Month,
}

/// A unit taken: what to give back if the request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    keys: Vec<String>,
}

/// The answer to a request for a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    Taken(Ticket),
    /// The period's budget is spent: nothing is paid before `until` (the next period).
    Spent {
        period: Period,
        until: SystemTime,
    },
}

/// What is left of each period's budget, for `ocr-ctl status` and the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Left {
    pub day: String,
    pub day_used: u64,
    pub per_day: u64,
    pub month: String,
    pub month_used: u64,
    pub per_month: u64,
    pub addon_cap: Option<u64>,
}

/// How long an instance takes a spent budget for spent without asking the counters again.
const REMEMBER_SPENT: std::time::Duration = std::time::Duration::from_secs(300);

/// The budget over a store's counters.
pub struct Budget {
    limits: Limits,
    counters: Arc<dyn Counters>,
    /// A spent budget, remembered until then: no counter is asked before. At most a few
    /// minutes on, so that a unit given back, or a cap the lister raises, is seen soon.
    spent: std::sync::Mutex<Option<(SystemTime, Take)>>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("limits", &self.limits)
            .finish()
    }
}

/// The UTC day and month of a time: `2026-12-05` and `2026-12`, and when each ends.
pub fn periods(now: SystemTime) -> ((String, SystemTime), (String, SystemTime)) {
    let t = time::OffsetDateTime::from_unix_timestamp((epoch_ms(now) / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let date = t.date();
    let day_end = date
        .next_day()
        .map(|d| d.midnight().assume_utc())
        .unwrap_or(t);
    let (y, m) = (date.year(), date.month());
    let (ny, nm) = if m == time::Month::December {
        (y + 1, time::Month::January)
    } else {
        (y, m.next())
    };
    let month_end = time::Date::from_calendar_date(ny, nm, 1)
        .map(|d| d.midnight().assume_utc())
        .unwrap_or(t);
    let at = |o: time::OffsetDateTime| from_epoch_ms(o.unix_timestamp().max(0) as u64 * 1000);
    (
        (format!("{date}"), at(day_end)),
        (format!("{y:04}-{:02}", m as u8), at(month_end)),
    )
}

/// The counter key of a UTC day (`2026-12-05`).
pub fn day_key(day: &str) -> String {
    format!("budget#day#{day}")
}

fn month_key(month: &str) -> String {
    format!("budget#month#{month}")
}

impl Budget {
    pub fn new(limits: Limits, counters: Arc<dyn Counters>) -> Self {
        Self {
            limits,
            counters,
            spent: std::sync::Mutex::new(None),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes one unit from the day's and the month's budget, or says which is spent and until
    /// when. The day's unit is given back when the month's is spent.
    pub async fn take(&self, now: SystemTime) -> Result<Take, StoreError> {
        if let Some(spent) = self.known_spent(now) {
            return Ok(spent);
        }
        let ((day, day_end), (month, month_end)) = periods(now);
        let mut keys = Vec::new();
        if self.limits.per_day > 0 {
            let key = day_key(&day);
            if !self
                .counters
                .take(&key, Some(self.limits.per_day), false)
                .await?
            {
                return Ok(self.spent(now, Period::Day, day_end));
            }
            keys.push(key);
        }
        let month_counted = self.limits.per_month > 0 || self.limits.addon_margin.is_some();
        if month_counted {
            let key = month_key(&month);
            let max = Some(self.limits.per_month).filter(|m| *m > 0);
            let with_cap = self.limits.addon_margin.is_some();
            let taken = self.counters.take(&key, max, with_cap).await;
            if !matches!(taken, Ok(true)) {
                // The day's unit goes back whatever became of the month's.
                self.give_back(&Ticket { keys }).await?;
                taken?;
                return Ok(self.spent(now, Period::Month, month_end));
            }
            keys.push(key);
        }
        Ok(Take::Taken(Ticket { keys }))
    }

    /// The answer for a budget this instance saw spent a moment ago, without asking the
    /// counters (the worker asks before it claims an asset, so a spent budget costs no write).
    pub fn known_spent(&self, now: SystemTime) -> Option<Take> {
        let known = self.spent.lock().unwrap_or_else(|e| e.into_inner()).clone();
        known
            .filter(|(remember_until, _)| now < *remember_until)
            .map(|(_, spent)| spent)
    }

    fn spent(&self, now: SystemTime, period: Period, until: SystemTime) -> Take {
        let spent = Take::Spent { period, until };
        *self.spent.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((until.min(now + REMEMBER_SPENT), spent.clone()));
        spent
    }

    /// Gives a refused request's unit back.
    pub async fn give_back(&self, ticket: &Ticket) -> Result<(), StoreError> {
        for key in &ticket.keys {
            self.counters.give_back(key).await?;
        }
        Ok(())
    }

    /// Learns the add-on's usage and limit this month (Cloudinary's `usage`): the month's
    /// counter may go on only while the add-on has more than the margin left, counted from
    /// what this budget has taken so far.
    pub async fn observe_usage(
        &self,
        now: SystemTime,
        usage: u64,
        limit: u64,
    ) -> Result<Option<u64>, StoreError> {
        let Some(margin) = self.limits.addon_margin else {
            return Ok(None);
        };
        let (_, (month, _)) = periods(now);
        let key = month_key(&month);
        let used = self.counters.read(&key).await?.used;
        let headroom = limit.saturating_sub(margin).saturating_sub(usage);
        let cap = used + headroom;
        self.counters.set_cap(&key, cap).await?;
        Ok(Some(cap))
    }

    /// What is left this day and month.
    pub async fn left(&self, now: SystemTime) -> Result<Left, StoreError> {
        let ((day, _), (month, _)) = periods(now);
        let d = self.counters.read(&day_key(&day)).await?;
        let m = self.counters.read(&month_key(&month)).await?;
        Ok(Left {
            day,
            day_used: d.used,
            per_day: self.limits.per_day,
            month,
            month_used: m.used,
            per_month: self.limits.per_month,
            // A cap left from when the add-on's limit was watched holds nothing any more.
            addon_cap: m.addon_cap.filter(|_| self.limits.addon_margin.is_some()),
        })
    }
}

impl Left {
    /// Units that may still be taken now (`None`: no limit).
    pub fn remaining(&self) -> Option<u64> {
        let mut left: Option<u64> = None;
        let mut bound = |n: u64| left = Some(left.map_or(n, |l| l.min(n)));
        if self.per_day > 0 {
            bound(self.per_day.saturating_sub(self.day_used));
        }
        if self.per_month > 0 {
            bound(self.per_month.saturating_sub(self.month_used));
        }
        if let Some(cap) = self.addon_cap {
            bound(cap.saturating_sub(self.month_used));
        }
        left
    }
}

/// Counters in memory, for the unit tier and the local runner's tests.
#[derive(Debug, Default)]
pub struct MemoryCounters {
    counters: std::sync::Mutex<std::collections::HashMap<String, Counter>>,
}

impl MemoryCounters {
    /// Units taken from `key` (for checks).
    pub fn used(&self, key: &str) -> u64 {
        self.with(|m| m.get(key).map_or(0, |c| c.used))
    }

    fn with<T>(&self, f: impl FnOnce(&mut std::collections::HashMap<String, Counter>) -> T) -> T {
        f(&mut self.counters.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Counters for MemoryCounters {
    fn take(
        &self,
        key: &str,
        max: Option<u64>,
        with_cap: bool,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let taken = self.with(|m| {
            let c = m.entry(key.to_string()).or_default();
            // No cap known yet: nothing is paid until the lister reads the add-on's usage.
            let capped = with_cap && c.addon_cap.is_none_or(|cap| c.used >= cap);
            if max.is_some_and(|max| c.used >= max) || capped {
                return false;
            }
            c.used += 1;
            true
        });
        Box::pin(async move { Ok(taken) })
    }

    fn give_back(&self, key: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        self.with(|m| {
            let c = m.entry(key.to_string()).or_default();
            c.used = c.used.saturating_sub(1);
        });
        Box::pin(async { Ok(()) })
    }

    fn read(&self, key: &str) -> BoxFuture<'_, Result<Counter, StoreError>> {
        let c = self.with(|m| m.get(key).cloned().unwrap_or_default());
        Box::pin(async move { Ok(c) })
    }

    fn set_cap(&self, key: &str, cap: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        self.with(|m| m.entry(key.to_string()).or_default().addon_cap = Some(cap));
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_rfc3339;

    fn at(t: &str) -> SystemTime {
        parse_rfc3339(t).unwrap()
    }

    fn budget(per_day: u64, per_month: u64, addon_margin: Option<u64>) -> Budget {
        Budget::new(
            Limits {
                per_day,
                per_month,
                addon_margin,
            },
            Arc::new(MemoryCounters::default()),
        )
    }

    #[test]
    fn periods_are_utc_days_and_months() {
        let ((day, day_end), (month, month_end)) = periods(at("2026-12-31T23:59:59Z"));
        assert_eq!((day.as_str(), month.as_str()), ("2026-12-31", "2026-12"));
        assert_eq!(day_end, at("2027-01-01T00:00:00Z"));
        assert_eq!(month_end, at("2027-01-01T00:00:00Z"));
        let ((_, day_end), (month, month_end)) = periods(at("2026-02-10T08:00:00Z"));
        assert_eq!(day_end, at("2026-02-11T00:00:00Z"));
        assert_eq!(
            (month.as_str(), month_end),
            ("2026-02", at("2026-03-01T00:00:00Z"))
        );
    }

    #[tokio::test]
    async fn a_day_budget_gives_exactly_its_units_then_waits_for_the_next_day() {
        let b = budget(3, 0, None);
        let now = at("2026-12-05T10:00:00Z");
        for _ in 0..3 {
            assert!(matches!(b.take(now).await.unwrap(), Take::Taken(_)));
        }
        assert_eq!(
            b.take(now).await.unwrap(),
            Take::Spent {
                period: Period::Day,
                until: at("2026-12-06T00:00:00Z")
            }
        );
        let next = at("2026-12-06T00:00:01Z");
        assert!(matches!(b.take(next).await.unwrap(), Take::Taken(_)));
    }

    #[tokio::test]
    async fn a_refused_request_gives_its_unit_back() {
        let b = budget(1, 0, None);
        let now = at("2026-12-05T10:00:00Z");
        let Take::Taken(ticket) = b.take(now).await.unwrap() else {
            panic!("a unit")
        };
        b.give_back(&ticket).await.unwrap();
        assert!(matches!(b.take(now).await.unwrap(), Take::Taken(_)));
    }

    #[tokio::test]
    async fn a_spent_month_gives_the_days_unit_back() {
        let b = budget(10, 2, None);
        let now = at("2026-12-05T10:00:00Z");
        b.take(now).await.unwrap();
        b.take(now).await.unwrap();
        assert_eq!(
            b.take(now).await.unwrap(),
            Take::Spent {
                period: Period::Month,
                until: at("2027-01-01T00:00:00Z")
            }
        );
        let left = b.left(now).await.unwrap();
        assert_eq!((left.day_used, left.month_used), (2, 2));
        assert_eq!(left.remaining(), Some(0));
    }

    #[tokio::test]
    async fn the_addon_limit_less_the_margin_caps_the_month() {
        let b = budget(0, 0, Some(10));
        let now = at("2026-12-05T10:00:00Z");
        // Cloudinary says 985 of 1,000 used: 5 more before the margin of 10.
        assert_eq!(b.observe_usage(now, 985, 1000).await.unwrap(), Some(5));
        let mut taken = 0;
        while let Take::Taken(_) = b.take(now).await.unwrap() {
            taken += 1;
        }
        assert_eq!(taken, 5);
        // Later, usage counts those 5 too: the cap stays where it was.
        assert_eq!(b.observe_usage(now, 990, 1000).await.unwrap(), Some(5));
        assert_eq!(b.left(now).await.unwrap().remaining(), Some(0));
    }

    #[tokio::test]
    async fn no_limit_counts_nothing() {
        let b = budget(0, 0, None);
        let now = at("2026-12-05T10:00:00Z");
        let Take::Taken(ticket) = b.take(now).await.unwrap() else {
            panic!("a unit")
        };
        assert!(ticket.keys.is_empty());
        assert_eq!(b.left(now).await.unwrap().remaining(), None);
    }

    #[tokio::test]
    async fn concurrent_takers_never_take_more_than_the_budget() {
        let b = Arc::new(budget(0, 37, None));
        let now = at("2026-12-05T10:00:00Z");
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { matches!(b.take(now).await.unwrap(), Take::Taken(_)) })
            })
            .collect();
        let mut taken = 0;
        for t in tasks {
            taken += u32::from(t.await.unwrap());
        }
        assert_eq!(taken, 37);
    }
}
