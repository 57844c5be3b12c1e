//! What a failure becomes. The plan depends only on the error's class and on whether this
//! was the last receive the work queue allows; carrying it out may itself fail, and each such
//! failure leaves the message where SQS brings it back.
//!
//! A failure for good never sends the message to the dead-letter queue itself: the item is
//! marked `failed` with the reason and the failing message's id, and the message goes back to
//! the work queue at once. Its later receives fail fast (the batch's one read finds the mark)
//! until SQS's redrive policy moves it, which is what records its source queue for the
//! console's "Redrive to source queue(s)".

use std::time::{Duration, SystemTime};

use super::outcome::{DeferCause, Deferral, Disposition};
use super::record::Held;
use super::{InboundRecord, OcrService, Worker};
use crate::clock::rfc3339;
use crate::defaults;
use crate::error::{Classified, ErrorClass, error_chain};
use crate::message::WorkMessage;
use crate::queue::{MAX_DELAY, WorkQueue};
use crate::rate_gate::DEFAULT_BACKOFF;
use crate::store::{DeadLetterKind, DeadLetterMark, ResultRecord, ResultStore};

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
    /// Fail for good: record the failure on the item, and return the message at once so that
    /// the redrive policy moves it to the dead-letter queue.
    DeadLetter(DeadLetterKind),
}

/// The plan for a failure of `class` met on receive `receive_count` of `max_receive_count`.
pub fn plan_failure(class: ErrorClass, receive_count: u32, max_receive_count: u32) -> FailurePlan {
    match class {
        ErrorClass::RateLimited => FailurePlan::Defer,
        ErrorClass::Transient if receive_count < max_receive_count => FailurePlan::Retry,
        // The last receive: SQS moves the message next; the item keeps the reason.
        ErrorClass::Transient => FailurePlan::DeadLetter(DeadLetterKind::Exhausted),
        ErrorClass::Permanent => FailurePlan::DeadLetter(DeadLetterKind::Permanent),
    }
}

impl<O: OcrService, S: ResultStore, Q: WorkQueue> Worker<O, S, Q> {
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
                let until = failure
                    .retry_at
                    .unwrap_or_else(|| self.now() + DEFAULT_BACKOFF);
                if self.beyond_the_hour(until) && message.limit_waits >= defaults::MAX_LIMIT_WAITS {
                    let reason = format!(
                        "Cloudinary's limit does not reset within the hour (next reset {}); still refused after {} waits: {}",
                        rfc3339(until),
                        message.limit_waits,
                        failure.reason
                    );
                    return self
                        .fail_for_good(record, held, message, DeadLetterKind::RateLimited, reason)
                        .await;
                }
                if let Some(held) = held {
                    self.release(message, held, &failure.reason).await;
                }
                self.wait_for_gate(message, until)
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
                    DeadLetterKind::Permanent | DeadLetterKind::RateLimited => failure.reason,
                };
                self.fail_for_good(record, held, message, kind, reason)
                    .await
            }
        }
    }

    /// Marks the item `failed` with its reason and this message, then fails the message at
    /// once. Without a claim (the store refused it) nothing can be written: the reason is in the
    /// log line. When the mark cannot be written the message is left for SQS to bring back, so
    /// that the failure is never lost.
    pub(super) async fn fail_for_good(
        &self,
        record: &InboundRecord,
        held: Option<&Held>,
        message: &WorkMessage,
        kind: DeadLetterKind,
        reason: String,
    ) -> Disposition {
        if let Some(held) = held {
            let mark = DeadLetterMark {
                message_id: record.message_id.clone(),
                receive_count: record.receive_count,
                kind,
            };
            let failed = ResultRecord::failed(
                &message.item_key(),
                &message.resource_type,
                &message.delivery_type,
                &reason,
                held.attempts,
                rfc3339(self.now()),
                Some(mark),
            );
            if let Err(e) = self.store.put_result(&failed, &held.token).await {
                self.release(message, held, &reason).await;
                return Disposition::Retry {
                    reason: format!(
                        "{reason}; and recording the failure failed: {}",
                        error_chain(&e)
                    ),
                };
            }
        }
        Disposition::DeadLettered { kind, reason }
    }

    pub(super) async fn release(&self, message: &WorkMessage, held: &Held, reason: &str) {
        if let Err(e) = self
            .store
            .release(
                &message.item_key(),
                &held.token,
                reason,
                held.request_mark(),
            )
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
        cause: DeferCause,
    ) -> Disposition {
        let delay = until.duration_since(self.now()).unwrap_or_default().clamp(
            Duration::from_secs(1),
            self.settings
                .max_deferral
                .clamp(Duration::from_secs(1), MAX_DELAY),
        );
        let message = WorkMessage {
            deferrals: message.deferrals.saturating_add(1),
            ..message
        };
        Disposition::Deferred(Deferral {
            message,
            delay,
            cause,
            reason: format!("{}; back in {}s", cause.describe(), delay.as_secs()),
        })
    }
}
