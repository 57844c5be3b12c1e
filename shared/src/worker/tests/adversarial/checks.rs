//! The invariants every run must keep, checked as dispositions arrive and at the end.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::world::Cloud;
use super::{Run, key};
use crate::clock::epoch_ms;
use crate::store::Status;
use crate::worker::Disposition;

/// What a message did in one life (between two redrives that kept its id).
#[derive(Debug, Default, Clone, Copy)]
pub struct Life {
    /// It failed the asset for good, at this time.
    failed_for_good: Option<SystemTime>,
    /// An attempt of it reached Cloudinary and came back for a retry.
    tried_cloudinary: bool,
    /// Recording its failure failed, before or after it applied: whether it failed for good
    /// is not known from outside.
    uncertain: bool,
    /// It failed fast after an attempt of it had reached Cloudinary in this life.
    fast_after_try: bool,
}

/// What the run saw as it went.
#[derive(Debug, Default)]
pub struct Seen {
    pub lives: BTreeMap<(String, u32), Life>,
    pub violations: Vec<String>,
    /// Forced re-OCRs asked for: the asset and when.
    pub forced: Vec<(String, u64)>,
}

impl Seen {
    /// Checks one disposition against the message's life so far.
    /// A receive whose invocation was killed: what it did is not known.
    pub fn unknown(&mut self, message_id: &str, life: u32) {
        let entry = self
            .lives
            .entry((message_id.to_string(), life))
            .or_default();
        entry.uncertain = true;
    }

    /// Checks one disposition, of a receive at `received_at`, against the message's life so
    /// far (a receive made before the failure was recorded, a duplicate delivery, may call).
    pub fn disposition(
        &mut self,
        message_id: &str,
        life: u32,
        (received_at, now): (SystemTime, SystemTime),
        d: &Disposition,
    ) {
        let entry = self
            .lives
            .entry((message_id.to_string(), life))
            .or_default();
        let before = *entry;
        let failed_before = before.failed_for_good.is_some_and(|t| t <= received_at);
        let mut violation = |what: String| {
            self.violations
                .push(format!("{message_id} (life {life}): {what}"))
        };
        match d {
            Disposition::DeadLettered { reason, .. } if reason.contains("HTTP 401") => {
                violation(format!("dead-lettered by a credentials refusal: {reason}"))
            }
            Disposition::DeadLettered { .. } | Disposition::Stored(_) if failed_before => {
                violation("failed for good, then called Cloudinary again before its redrive".into())
            }
            _ => {}
        }
        if matches!(d, Disposition::FailingFast { .. }) && before.tried_cloudinary {
            entry.fast_after_try = true;
        }
        match d {
            Disposition::DeadLettered { .. } => {
                entry.failed_for_good.get_or_insert(now);
            }
            // The failure may have been recorded, its answer lost.
            Disposition::Retry { reason } if reason.contains("recording the failure failed") => {
                entry.uncertain = true
            }
            Disposition::Retry { reason } | Disposition::RetryAt { reason, .. }
                if reason.contains("HTTP") || reason.contains("timed out") =>
            {
                entry.tried_cloudinary = true
            }
            _ => {}
        }
    }
}

/// Every invariant broken by the run, in words.
pub fn violations(run: &Run) -> Vec<String> {
    let mut out = run.seen.violations.clone();
    // A message fails fast only in a life in which it failed (a duplicate delivery may fail
    // fast before the failure's own receive returns).
    for ((id, life), l) in &run.seen.lives {
        if l.fast_after_try && l.failed_for_good.is_none() && !l.uncertain {
            out.push(format!(
                "{id} (life {life}): failing fast without having failed since its redrive"
            ));
        }
    }
    out.extend(payments(run));
    out.extend(outcomes(run));
    out.extend(gates(run));
    out
}

/// Paid OCR at most once per version, plus once per forced re-OCR.
fn payments(run: &Run) -> Vec<String> {
    let versions: Vec<u64> = (0..run.scenario.assets)
        .map(|a| run.cloud_version(&key(a)))
        .collect();
    let cloud = run.cloud.lock();
    let mut out = Vec::new();
    for a in 0..run.scenario.assets {
        let k = key(a);
        let forced = run.seen.forced.iter().filter(|(f, _)| *f == k).count() as u32;
        let versions = u32::try_from(versions[a]).unwrap_or(u32::MAX);
        let billed: BTreeMap<u64, u32> = cloud
            .billed
            .iter()
            .filter(|((x, _), _)| *x == k)
            .map(|((_, v), n)| (*v, *n))
            .collect();
        let total: u32 = billed.values().sum();
        if total > versions + forced || billed.values().any(|n| *n > 1 + forced) {
            out.push(format!(
                "{k}: paid {billed:?} for {versions} versions and {forced} forced re-OCRs"
            ));
        }
    }
    if let Some(per_day) = run.scenario.budget {
        // A request takes its unit before it is sent: one billed just past midnight may have
        // taken the day before's, so a day may show the requests then in flight on top.
        let in_flight = (run.scenario.instances * run.scenario.settings_concurrency) as u32;
        let per_day = u32::try_from(per_day).unwrap_or(u32::MAX);
        for (day, n) in &cloud.billed_days {
            if *n > per_day + in_flight {
                out.push(format!(
                    "{day}: {n} OCRs billed on a budget of {per_day} a day"
                ));
            }
        }
        let total: u32 = cloud.billed_days.values().sum();
        let days = cloud.billed_days.len() as u32;
        if total > per_day * days {
            out.push(format!(
                "{total} OCRs billed over {days} days on a budget of {per_day} a day"
            ));
        }
    }
    if run.scenario.sends_reset {
        // Calls over the quota are probes or, with several instances, the calls one had in
        // flight when the window turned out spent (another went past its share meanwhile): a
        // refusal closes its gate, so at most its records in flight (and its share) in each
        // window that saw any. A lone instance is never refused but for its probes.
        let blind: u64 = run.workers.iter().map(|w| w.blind_grants()).sum();
        let instances = run.scenario.instances as u64;
        let bound = if instances == 1 {
            blind
        } else {
            let share = (run.scenario.limit / instances).max(1);
            let in_flight = share.min(run.scenario.settings_concurrency as u64);
            blind + cloud.over_quota_windows.len() as u64 * instances * in_flight
        };
        if cloud.over_quota > bound {
            out.push(format!(
                "{} Admin calls over the hourly quota (by hour: {:?}), {blind} of them probes",
                cloud.over_quota, cloud.over_quota_windows
            ));
        }
    }
    out
}

/// Every healthy asset done with its newest version's text, every forced re-OCR answered;
/// every gone asset failed with its reason and its message in the dead-letter queue; nothing
/// left in the work queue, nothing else in the dead-letter queue.
fn outcomes(run: &Run) -> Vec<String> {
    let mut out = Vec::new();
    let queue = run.sqs.lock();
    // With the day's budget spent at the end, what is left waits in the work queue for the
    // next day: it must be there, not lost.
    let waiting: Vec<String> = queue
        .work
        .values()
        .filter_map(|m| crate::message::WorkMessage::parse(&m.body).ok())
        .map(|m| m.item_key())
        .collect();
    if budget_spent_at_end(run) {
        for a in run.scenario.broken..run.scenario.assets {
            let k = key(a);
            if !waiting.contains(&k) {
                out.extend(asset_outcome(run, a, &[]));
            }
        }
        return out;
    }
    if !queue.work.is_empty() {
        out.push(format!(
            "{} messages still in the work queue at the end",
            queue.work.len()
        ));
    }
    let dead: Vec<String> = queue
        .dlq
        .iter()
        .filter_map(|m| crate::message::WorkMessage::parse(&m.body).ok())
        .map(|m| m.item_key())
        .collect();
    for a in 0..run.scenario.assets {
        out.extend(asset_outcome(run, a, &dead));
    }
    out
}

/// Whether the run ended with its day's budget spent.
fn budget_spent_at_end(run: &Run) -> bool {
    run.scenario.budget.is_some_and(|per_day| {
        let ((day, _), _) = crate::budget::periods(run.ended_at);
        run.counters.used(&crate::budget::day_key(&day)) >= per_day
    })
}

fn healthy_within(run: &Run) -> Duration {
    let done_at = run
        .scenario
        .events
        .iter()
        .find(|(_, e)| matches!(e, super::Event::HealthyDone));
    done_at.map_or(Duration::ZERO, |(at, _)| *at - super::CHAOS)
}

/// The healthy assets not yet done with their newest version's text.
pub fn healthy_not_done(run: &Run) -> Vec<String> {
    (run.scenario.broken..run.scenario.assets)
        .map(key)
        .filter(|k| {
            let version = run.cloud_version(k);
            let record = run.store.inner.item(k).and_then(|i| i.record);
            !record.is_some_and(|r| r.status == Status::Done && r.asset.version == Some(version))
        })
        .map(|k| {
            format!(
                "{k}: not done {} h after the faults stopped",
                healthy_within(run).as_secs() / 3600
            )
        })
        .collect()
}

/// What is wrong with asset `a` at the end: a gone one must be failed with its reason and in
/// the dead-letter queue; a healthy one done with its newest version's text, every forced
/// re-OCR answered, and none of its messages dead-lettered.
fn asset_outcome(run: &Run, a: usize, dead: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let k = key(a);
    let item = run.store.inner.item(&k);
    let record = item.as_ref().and_then(|i| i.record.clone());
    if a < run.scenario.broken {
        let reason = record
            .as_ref()
            .filter(|r| r.status == Status::Failed)
            .and_then(|r| r.error.clone());
        if reason.is_none_or(|r| r.is_empty()) || !dead.contains(&k) {
            out.push(format!(
                "{k}: gone, but not failed with a reason and dead-lettered ({record:?})"
            ));
        }
        return out;
    }
    let version = run.cloud_version(&k);
    let done = record.as_ref().is_some_and(|r| {
        r.status == Status::Done
            && r.asset.version == Some(version)
            && r.text.as_deref() == Some(Cloud::text(&k, version).as_str())
    });
    if !done {
        out.push(format!(
            "{k}: not done with version {version}'s text: {record:?}"
        ));
    }
    let written = record
        .as_ref()
        .and_then(|r| crate::clock::parse_rfc3339(&r.ocr_at))
        .map(epoch_ms)
        .unwrap_or(0);
    if let Some((_, asked)) = run
        .seen
        .forced
        .iter()
        .filter(|(f, _)| *f == k)
        .find(|(_, asked)| written < *asked)
    {
        out.push(format!(
            "{k}: forced re-OCR asked at {asked} not answered (result of {written})"
        ));
    }
    if dead.contains(&k) {
        out.push(format!(
            "{k}: healthy, yet a message of it is in the dead-letter queue"
        ));
    }
    out
}

/// No gate closed past what Cloudinary said: the latest refusal's end, or the hour.
fn gates(run: &Run) -> Vec<String> {
    let now = run.ended_at;
    let latest = run.cloud.lock().latest_retry_at;
    let bound = latest.map_or(now, |t| t.max(now)) + Duration::from_secs(3600);
    run.workers
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            w.closed_until(now)
                .filter(|until| *until > bound)
                .map(|until| (i, until))
        })
        .map(|(i, until)| {
            format!(
                "instance {i}'s gate closed until {} s from the end: {}",
                until.duration_since(now).unwrap_or_default().as_secs(),
                run.workers[i].describe_gates()
            )
        })
        .collect()
}

impl Run {
    fn cloud_version(&self, key: &str) -> u64 {
        self.cloud.version(key)
    }
}
