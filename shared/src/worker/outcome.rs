//! What became of each record. Every outcome carries what its caller needs: a deferral the
//! message to send again and its delay, a failure for good its kind and reason.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::message::WorkMessage;
use crate::store::{DeadLetterKind, Status};

/// A message to send again, visible after `delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferral {
    pub message: WorkMessage,
    pub delay: Duration,
    pub cause: DeferCause,
    pub reason: String,
}

/// Why a message waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeferCause {
    /// Cloudinary's hourly quota is spent (refused, or this instance's share used up).
    Quota,
    /// A Cloudinary limit that does not reset within the hour.
    Limit,
    /// The OCR is still running: read back later.
    Pending,
    /// Another invocation holds the asset.
    Claimed,
    /// The paid result could not be written: read back and written later.
    WriteRetry,
    /// Not started: too little of the invocation was left to finish it.
    Unstarted,
    /// Cloudinary refused the credentials: the message waits for the secret to be fixed.
    Credentials,
    /// The asset's state could not be read or written on the last receive the work queue
    /// allows: sent again rather than dead-lettered without a reason.
    Aws,
    /// The stack's OCR budget for the day or month is spent: nothing is paid before the next.
    Budget,
    /// Read back with others, from the read-back queue.
    ReadBack,
}

impl DeferCause {
    pub const ALL: [Self; 10] = [
        Self::Quota,
        Self::Limit,
        Self::Pending,
        Self::Claimed,
        Self::WriteRetry,
        Self::Unstarted,
        Self::Credentials,
        Self::Aws,
        Self::Budget,
        Self::ReadBack,
    ];

    /// What the log line says.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Quota => "Cloudinary's quota is spent until its reset",
            Self::Limit => "Cloudinary's limit does not reset within the hour",
            Self::Pending => "OCR pending",
            Self::Claimed => "another invocation is processing this asset",
            Self::WriteRetry => "result write failed",
            Self::Unstarted => "not started: the invocation's deadline is near",
            Self::Credentials => "Cloudinary refused the credentials (or redirected the call)",
            Self::Aws => "the asset's state could not be read or written on the last receive",
            Self::Budget => "the OCR budget is spent until the next period",
            Self::ReadBack => "read back with others from the read-back queue",
        }
    }

    /// The metric that counts it.
    pub fn metric(self) -> &'static str {
        match self {
            Self::Quota => "DeferredQuota",
            Self::Limit => "DeferredLimit",
            Self::Pending => "DeferredPending",
            Self::Claimed => "DeferredClaimed",
            Self::WriteRetry => "DeferredWriteRetry",
            Self::Unstarted => "DeferredUnstarted",
            Self::Credentials => "DeferredCredentials",
            Self::Aws => "DeferredAwsRetry",
            Self::Budget => "DeferredBudget",
            Self::ReadBack => "DeferredReadBack",
        }
    }
}

/// What became of one message. `Stored`, `Skipped` and `Deferred` delete it from the work
/// queue; the others leave it there as a batch item failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// OCR done and stored with this status.
    Stored(Status),
    /// Already complete, or another message in the batch carries the same asset.
    Skipped,
    /// Sent again with a delay (rate limit, OCR pending, claim held elsewhere): not a failure.
    Deferred(Deferral),
    /// Failed for good: marked `failed` with its reason where it has a key, and made visible
    /// again at once, so that its receives run out and the work queue's redrive policy moves it
    /// to the dead-letter queue (where SQS records its source, for the console's redrive).
    DeadLettered {
        kind: DeadLetterKind,
        reason: String,
    },
    /// A later receive of a message already failed for good: failed again at once, without a
    /// call, until the redrive policy moves it.
    FailingFast { reason: String },
    /// Reported as a batch item failure: SQS redelivers it after the visibility timeout.
    Retry { reason: String },
    /// Reported as a batch item failure, visible again at `at`, sooner than the visibility
    /// timeout: the OCR request this attempt sent failed without an answer, and what comes
    /// next (a read-back that pays again only if it finds no OCR) may start at the settle
    /// time after this attempt's claim.
    RetryAt { reason: String, at: SystemTime },
}

impl Disposition {
    /// Reported as a batch item failure (left in the work queue).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Self::Retry { .. }
                | Self::RetryAt { .. }
                | Self::DeadLettered { .. }
                | Self::FailingFast { .. }
        )
    }

    /// Made visible again at once rather than after the visibility timeout.
    pub fn returns_now(&self) -> bool {
        matches!(self, Self::DeadLettered { .. } | Self::FailingFast { .. })
    }

    /// When a failure is made visible again rather than after the visibility timeout: at
    /// once, or at its time.
    pub fn returns_at(&self, now: SystemTime) -> Option<SystemTime> {
        match self {
            Self::RetryAt { at, .. } => Some(*at),
            _ if self.returns_now() => Some(now),
            _ => None,
        }
    }

    /// A short name, for counts and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Stored(Status::Done) => "done",
            Self::Stored(Status::NoText) => "no_text",
            Self::Stored(Status::Failed) => "failed",
            Self::Skipped => "skipped",
            Self::Deferred(_) => "deferred",
            Self::DeadLettered { .. } => "dead_lettered",
            Self::FailingFast { .. } => "failing_fast",
            Self::Retry { .. } | Self::RetryAt { .. } => "retry",
        }
    }

    pub(super) fn log(&self) {
        match self {
            Self::Stored(status) => tracing::info!(status = status.as_str(), "stored"),
            Self::Skipped => tracing::info!("skipped: already complete or duplicate"),
            Self::Deferred(d) => tracing::info!(reason = %d.reason, "deferred"),
            Self::DeadLettered { kind, reason } => {
                tracing::warn!(kind = kind.as_str(), %reason, "failed for good; on its way to the dead-letter queue")
            }
            Self::FailingFast { reason } => {
                tracing::info!(%reason, "failed again at once; on its way to the dead-letter queue")
            }
            Self::Retry { reason } => tracing::warn!(%reason, "left for retry"),
            Self::RetryAt { reason, at } => tracing::warn!(
                %reason,
                visible_at = %crate::clock::rfc3339(*at),
                "left for retry; back at the settle time"
            ),
        }
    }
}

/// One record's disposition, the latency of the Cloudinary call it made, if any, and whether
/// Cloudinary refused the credentials.
#[derive(Debug)]
pub(super) struct Handled {
    pub disposition: Disposition,
    pub latency: Option<Duration>,
    pub credentials_refused: bool,
}

impl From<Disposition> for Handled {
    fn from(disposition: Disposition) -> Self {
        Self {
            disposition,
            latency: None,
            credentials_refused: false,
        }
    }
}

/// The outcome of one batch: a disposition per message id, in the order received.
#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    pub results: Vec<(String, Disposition)>,
    /// Latency of each Cloudinary call the batch made, in milliseconds.
    pub cloudinary_latency_ms: Vec<u64>,
    /// The Admin API quota left, as last reported (absent with the Upload API).
    pub quota_remaining: Option<u64>,
    /// The Admin API's hourly limit, as last reported.
    pub quota_limit: Option<u64>,
    /// Calls on which Cloudinary refused the credentials.
    pub credentials_refused: usize,
}

impl BatchOutcome {
    pub fn failed_message_ids(&self) -> impl Iterator<Item = &str> {
        self.results
            .iter()
            .filter(|(_, d)| d.is_failure())
            .map(|(id, _)| id.as_str())
    }
}

/// Counts of a batch by [`Disposition::label`], for logs and summaries.
pub fn tally(outcome: &BatchOutcome) -> HashMap<&'static str, usize> {
    let mut t = HashMap::new();
    for (_, d) in &outcome.results {
        *t.entry(d.label()).or_default() += 1;
    }
    t
}
