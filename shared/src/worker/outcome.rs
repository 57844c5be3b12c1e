//! What became of each record. Every outcome carries what its caller needs: a deferral the
//! message to send again and its delay, a dead letter its kind and reason.

use std::collections::HashMap;
use std::time::Duration;

use crate::message::WorkMessage;
use crate::queue::DeadLetterKind;
use crate::store::Status;

/// A message to send again, visible after `delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferral {
    pub message: WorkMessage,
    pub delay: Duration,
    pub reason: String,
}

/// What became of one message. Every variant but `Retry` means "delete it from the work queue".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// OCR done and stored with this status.
    Stored(Status),
    /// Already complete, or another message in the batch carries the same asset.
    Skipped,
    /// Sent again with a delay (rate limit, OCR pending, claim held elsewhere): not a failure.
    Deferred(Deferral),
    /// Sent to the dead-letter queue with its reason (and marked `failed` where it has a key).
    DeadLettered {
        kind: DeadLetterKind,
        reason: String,
    },
    /// Reported as a batch item failure: SQS redelivers it after the visibility timeout.
    Retry { reason: String },
}

impl Disposition {
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Retry { .. })
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
            Self::Retry { .. } => "retry",
        }
    }

    pub(super) fn log(&self) {
        match self {
            Self::Stored(status) => tracing::info!(status = status.as_str(), "stored"),
            Self::Skipped => tracing::info!("skipped: already complete or duplicate"),
            Self::Deferred(d) => tracing::info!(reason = %d.reason, "deferred"),
            Self::DeadLettered { kind, reason } => {
                tracing::warn!(kind = kind.as_str(), %reason, "dead-lettered")
            }
            Self::Retry { reason } => tracing::warn!(%reason, "left for retry"),
        }
    }
}

/// One record's disposition and the latency of the Cloudinary call it made, if any.
#[derive(Debug)]
pub(super) struct Handled {
    pub disposition: Disposition,
    pub latency: Option<Duration>,
}

impl From<Disposition> for Handled {
    fn from(disposition: Disposition) -> Self {
        Self {
            disposition,
            latency: None,
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
