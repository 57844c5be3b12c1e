//! What a failure becomes. The plan depends only on the error's class and on whether this
//! was the last receive the work queue allows; carrying it out may itself fail, and each such
//! failure leaves the message where SQS brings it back.

use std::time::{Duration, SystemTime};

use super::outcome::{Deferral, Disposition};
use super::record::Held;
use super::{InboundRecord, OcrService, Worker};
use crate::clock::rfc3339;
use crate::error::{Classified, ErrorClass, error_chain};
use crate::message::WorkMessage;
use crate::queue::{DeadLetter, DeadLetterKind, DeadLetterQueue, MAX_DELAY, WorkQueue};
use crate::rate_gate::DEFAULT_BACKOFF;
use crate::store::{ResultRecord, ResultStore};

/// A failure met on a record's path.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub reason: String,
    pub class: ErrorClass,
    pub retry_at: Option<SystemTime>,
}

impl Failure {
    pub fn of<E: Classified + std::error::Error + 'static>(err: &E) -> Self {
        Self {
            reason: error_chain(err),
            class: err.class(),
            retry_at: err.retry_at(),
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            class: ErrorClass::Permanent,
            retry_at: None,
        }
    }
}

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePlan {
    /// Send the message again once the quota resets; it does not walk toward the DLQ.
    Defer,
    /// Report a batch item failure; SQS brings the message back after the visibility timeout.
    Retry,
    /// Record the failure on the item and dead-letter the message with its reason.
    DeadLetter(DeadLetterKind),
}

/// The plan for a failure of `class` met on receive `receive_count` of `max_receive_count`.
pub fn plan_failure(class: ErrorClass, receive_count: u32, max_receive_count: u32) -> FailurePlan {
    match class {
        ErrorClass::RateLimited => FailurePlan::Defer,
        ErrorClass::Transient if receive_count < max_receive_count => FailurePlan::Retry,
        // On the last receive SQS would move the message without a reason: the worker does it
        // with one.
        ErrorClass::Transient => FailurePlan::DeadLetter(DeadLetterKind::Exhausted),
        ErrorClass::Permanent => FailurePlan::DeadLetter(DeadLetterKind::Permanent),
    }
}

impl<O: OcrService, S: ResultStore, Q: WorkQueue, D: DeadLetterQueue> Worker<O, S, Q, D> {
    /// Carries out the plan for `failure`; `held` is the claim, when the record got that far.
    pub(super) async fn fail(
        &self,
        record: &InboundRecord,
        held: Option<&Held>,
        message: &WorkMessage,
        failure: Failure,
    ) -> Disposition {
        let plan = plan_failure(
            failure.class,
            record.receive_count,
            self.settings.max_receive_count,
        );
        match plan {
            FailurePlan::Defer => {
                if let Some(held) = held {
                    self.release(message, held, &failure.reason).await;
                }
                let until = failure
                    .retry_at
                    .unwrap_or_else(|| self.now() + DEFAULT_BACKOFF);
                self.defer(message.clone(), until, "rate limited by Cloudinary")
            }
            FailurePlan::Retry => {
                if let Some(held) = held {
                    self.release(message, held, &failure.reason).await;
                }
                Disposition::Retry {
                    reason: failure.reason,
                }
            }
            FailurePlan::DeadLetter(kind) => {
                let reason = match kind {
                    DeadLetterKind::Exhausted => format!(
                        "gave up after {} receives: {}",
                        record.receive_count, failure.reason
                    ),
                    DeadLetterKind::Permanent => failure.reason,
                };
                if let Some(held) = held
                    && let Err(retry) = self.record_failure(message, held, &reason).await
                {
                    return retry;
                }
                self.dead_letter(record, &reason, kind).await
            }
        }
    }

    /// Marks the item `failed` with its reason; when that cannot be written the message is
    /// left for SQS to bring back, so that the failure is never lost.
    async fn record_failure(
        &self,
        message: &WorkMessage,
        held: &Held,
        reason: &str,
    ) -> Result<(), Disposition> {
        let record = ResultRecord::failed(
            &message.public_id,
            &message.resource_type,
            &message.delivery_type,
            reason,
            held.attempts,
            rfc3339(self.now()),
        );
        match self.store.put_result(&record, &held.token).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.release(message, held, reason).await;
                Err(Disposition::Retry {
                    reason: format!(
                        "{reason}; and recording the failure failed: {}",
                        error_chain(&e)
                    ),
                })
            }
        }
    }

    pub(super) async fn dead_letter(
        &self,
        record: &InboundRecord,
        reason: &str,
        kind: DeadLetterKind,
    ) -> Disposition {
        let failed_at = rfc3339(self.now());
        let letter = DeadLetter {
            body: &record.body,
            reason,
            kind,
            source_message_id: &record.message_id,
            receive_count: record.receive_count,
            failed_at: &failed_at,
        };
        match self.dlq.dead_letter(&letter).await {
            Ok(()) => Disposition::DeadLettered {
                kind,
                reason: reason.to_string(),
            },
            Err(e) => Disposition::Retry {
                reason: format!("{reason}; and dead-lettering failed: {}", error_chain(&e)),
            },
        }
    }

    pub(super) async fn release(&self, message: &WorkMessage, held: &Held, reason: &str) {
        if let Err(e) = self
            .store
            .release(&message.public_id, &held.token, reason)
            .await
        {
            // The claim then simply expires at the deadline.
            tracing::warn!(error = %error_chain(&e), "could not release the claim");
        }
    }

    /// The message, to be sent again once `until` has come (within SQS's longest delay); the
    /// batch sends every deferral together once its records are done.
    pub(super) fn defer(
        &self,
        message: WorkMessage,
        until: SystemTime,
        reason: &str,
    ) -> Disposition {
        let delay = until
            .duration_since(self.now())
            .unwrap_or_default()
            .clamp(Duration::from_secs(1), MAX_DELAY);
        let message = WorkMessage {
            deferrals: message.deferrals.saturating_add(1),
            ..message
        };
        Disposition::Deferred(Deferral {
            message,
            delay,
            reason: format!("{reason}; back in {}s", delay.as_secs()),
        })
    }
}
