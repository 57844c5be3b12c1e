//! What a failure becomes. The plan depends only on where the failure came from, its class
//! and whether this was the last receive the work queue allows; carrying it out may itself
//! fail, and each such failure leaves the message where it comes back.
//!
//! A failure for good never sends the message to the dead-letter queue itself: the item is
//! marked `failed` with the reason and the failing message's mark, and the message goes back
//! to the work queue at once. Its later receives fail fast (the batch's one read finds the
//! mark) until SQS's redrive policy moves it, which is what records its source queue for the
//! console's "Redrive to source queue(s)".
//!
//! Two kinds of failure never walk a message toward the dead-letter queue: Cloudinary refusing
//! the credentials (a configuration fault: the message waits for the secret to be fixed), and
//! DynamoDB or SQS failing on the last receive (the message is sent again, so that it never
//! reaches the dead-letter queue without a reason on its item).

use std::time::{Duration, SystemTime};

use super::outcome::{DeferCause, Deferral, Disposition};
use super::{InboundRecord, OcrService, Worker};
use crate::clock::rfc3339;
use crate::defaults;
use crate::error::{Classified, ErrorClass, RemoteError, error_chain};
use crate::message::WorkMessage;
use crate::queue::{MAX_DELAY, WorkQueue};
use crate::rate_gate::DEFAULT_BACKOFF;
use crate::store::{
    DeadLetterKind, DeadLetterMark, FailureRecord, RequestMark, ResultStore, StoreError,
};

/// A message returned at the settle time comes back this much later: the next instance's
/// clock may be a little behind this one's, and a read-back it sends before the settle time by
/// its clock waits again (a deferral, its receive count starting over) instead of paying.
pub const SETTLE_MARGIN: Duration = Duration::from_secs(5);

/// Where a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Cloudinary answered it (or did not answer).
    Cloudinary,
    /// Cloudinary refused the credentials.
    Credentials,
    /// DynamoDB or SQS failed: nothing about the asset.
    Aws,
}

/// A failure met on a record's path.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub reason: String,
    pub class: ErrorClass,
    pub retry_at: Option<SystemTime>,
    pub origin: Origin,
}

impl Failure {
    pub fn remote(err: &RemoteError) -> Self {
        Self {
            reason: error_chain(err),
            class: err.class,
            retry_at: err.retry_at,
            origin: if err.credentials_refused {
                Origin::Credentials
            } else {
                Origin::Cloudinary
            },
        }
    }

    pub fn store(err: &StoreError) -> Self {
        Self {
            reason: error_chain(err),
            class: err.class(),
            retry_at: None,
            origin: Origin::Aws,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            class: ErrorClass::Permanent,
            retry_at: None,
            origin: Origin::Cloudinary,
        }
    }
}

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePlan {
    /// Send the message again once the quota resets; it does not walk toward the DLQ.
    Defer,
    /// Send the message again after a growing delay, for the secret to be fixed.
    WaitForCredentials,
    /// Send the message again shortly: DynamoDB or SQS failed on the last receive.
    SendAgain,
    /// Report a batch item failure; SQS brings the message back after the visibility timeout,
    /// or sooner when this attempt's own request failed without an answer (see
    /// [`Disposition::RetryAt`]).
    Retry,
    /// Fail for good: record the failure on the item, and return the message at once so that
    /// the redrive policy moves it to the dead-letter queue.
    DeadLetter(DeadLetterKind),
}

/// The plan for a failure from `origin` of `class`, met on receive `receive_count` of
/// `max_receive_count`.
pub fn plan_failure(
    origin: Origin,
    class: ErrorClass,
    receive_count: u32,
    max_receive_count: u32,
) -> FailurePlan {
    let last = receive_count >= max_receive_count;
    match (origin, class) {
        (Origin::Credentials, _) => FailurePlan::WaitForCredentials,
        (_, ErrorClass::RateLimited) => FailurePlan::Defer,
        (_, ErrorClass::Transient) if !last => FailurePlan::Retry,
        (Origin::Aws, ErrorClass::Transient) => FailurePlan::SendAgain,
        // The last receive: SQS moves the message next; the item keeps the reason.
        (_, ErrorClass::Transient) => FailurePlan::DeadLetter(DeadLetterKind::Exhausted),
        (_, ErrorClass::Permanent) => FailurePlan::DeadLetter(DeadLetterKind::Permanent),
    }
}

/// The claim an attempt holds, as a failure needs it: its token, its attempt number and what
/// it leaves of the request mark.
#[derive(Debug, Clone)]
pub(super) struct ClaimRef {
    pub token: String,
    pub attempts: u32,
    pub claimed_at: SystemTime,
    pub request_mark: RequestMark,
}

fn dead_letter_reason(kind: DeadLetterKind, record: &InboundRecord, failure: &Failure) -> String {
    match kind {
        DeadLetterKind::Exhausted => format!(
            "gave up after {} receives: {}",
            record.receive_count, failure.reason
        ),
        DeadLetterKind::Permanent | DeadLetterKind::RateLimited => failure.reason.clone(),
    }
}

impl<O: OcrService, S: ResultStore, Q: WorkQueue> Worker<O, S, Q> {
    /// Carries out the plan for `failure`; `held` is the claim, when the record got that far.
    pub(super) async fn fail(
        &self,
        record: &InboundRecord,
        held: Option<&ClaimRef>,
        message: &WorkMessage,
        failure: Failure,
    ) -> Disposition {
        let plan = plan_failure(
            failure.origin,
            failure.class,
            record.receive_count,
            self.settings.max_receive_count,
        );
        let kind_and_reason = match plan {
            FailurePlan::DeadLetter(kind) => {
                Some((kind, dead_letter_reason(kind, record, &failure)))
            }
            FailurePlan::Defer => self.limit_given_up(message, &failure),
            _ => None,
        };
        if let Some((kind, reason)) = kind_and_reason {
            return self
                .fail_for_good(record, held, message, kind, reason)
                .await;
        }
        if let Some(held) = held {
            self.release(message, held, &failure.reason).await;
        }
        match plan {
            FailurePlan::Defer => self.wait_for_gate(message, self.retry_at(&failure)),
            FailurePlan::WaitForCredentials => self.wait_for_credentials(message),
            FailurePlan::SendAgain => self.send_again(message, &failure.reason),
            FailurePlan::Retry | FailurePlan::DeadLetter(_) => match self.settled_at(held) {
                Some(at) if failure.origin == Origin::Cloudinary => Disposition::RetryAt {
                    reason: failure.reason,
                    at,
                },
                _ => Disposition::Retry {
                    reason: failure.reason,
                },
            },
        }
    }

    /// When the next attempt may pay again after this attempt's OCR request failed without an
    /// answer (it may still run and be billed): the settle time after this attempt's claim,
    /// which the request mark it leaves carries, and [`SETTLE_MARGIN`] more. The next attempt
    /// reads back first, and waits for that time in any case; returned then, rather than after
    /// the whole visibility timeout, the message starts its read-back as soon as that
    /// read-back may pay. `None` when the attempt sent no request that may have run, or when
    /// that time has passed.
    fn settled_at(&self, held: Option<&ClaimRef>) -> Option<SystemTime> {
        let held = held.filter(|h| h.request_mark == RequestMark::Keep)?;
        let at = held.claimed_at + self.settings.request_settle + SETTLE_MARGIN;
        (at > self.now()).then_some(at)
    }

    fn retry_at(&self, failure: &Failure) -> SystemTime {
        failure
            .retry_at
            .unwrap_or_else(|| self.now() + DEFAULT_BACKOFF)
    }

    /// A limit that does not reset within the hour is waited on a bounded number of times,
    /// then fails the asset for good with Cloudinary's message.
    fn limit_given_up(
        &self,
        message: &WorkMessage,
        failure: &Failure,
    ) -> Option<(DeadLetterKind, String)> {
        let until = self.retry_at(failure);
        if !self.beyond_the_hour(until) || message.limit_waits < defaults::MAX_LIMIT_WAITS {
            return None;
        }
        let reason = format!(
            "Cloudinary's limit does not reset within the hour (next reset {}); still refused after {} waits: {}",
            rfc3339(until),
            message.limit_waits,
            failure.reason
        );
        Some((DeadLetterKind::RateLimited, reason))
    }

    /// The message again after a delay that doubles with each refusal of the credentials.
    fn wait_for_credentials(&self, message: &WorkMessage) -> Disposition {
        let delay = self
            .settings
            .credentials_wait
            .saturating_mul(1 << message.credential_waits.min(10))
            .min(MAX_DELAY);
        let next = WorkMessage {
            credential_waits: message.credential_waits.saturating_add(1),
            ..message.clone()
        };
        self.defer(next, self.now() + delay, DeferCause::Credentials)
    }

    /// The message again shortly, its receives starting over: DynamoDB or SQS failed on the
    /// last receive, and a failure of ours is no reason to dead-letter the asset.
    pub(super) fn send_again(&self, message: &WorkMessage, reason: &str) -> Disposition {
        tracing::warn!(%reason, "AWS failed on the last receive; sending the message again");
        self.defer(
            message.clone(),
            self.now() + defaults::AWS_RETRY_DELAY,
            DeferCause::Aws,
        )
    }

    /// Marks the item `failed` with its reason and this message's mark, then fails the message
    /// at once. The failure keeps what the attempt left of the request mark, so that an OCR it
    /// may have been billed for is read back by the next attempt, never paid again.
    pub(super) async fn fail_for_good(
        &self,
        record: &InboundRecord,
        held: Option<&ClaimRef>,
        message: &WorkMessage,
        kind: DeadLetterKind,
        reason: String,
    ) -> Disposition {
        let Some(held) = held else {
            // No claim (the store refused it for good): the reason goes on the item as a note.
            self.note_error(&message.item_key(), &reason).await;
            return Disposition::DeadLettered { kind, reason };
        };
        let failure = FailureRecord {
            key: message.item_key(),
            resource_type: message.resource_type.clone(),
            delivery_type: message.delivery_type.clone(),
            error: reason.clone(),
            kind,
            mark: DeadLetterMark {
                message_id: record.message_id.clone(),
                receive_count: record.receive_count,
                at_ms: crate::clock::epoch_ms(self.now()),
            },
            attempts: held.attempts,
            at: rfc3339(self.now()),
            request_mark: held.request_mark,
        };
        match self.store.put_failure(&failure, &held.token).await {
            Ok(true) => Disposition::DeadLettered { kind, reason },
            // Our claim expired and another invocation took the asset over: it decides.
            Ok(false) => self.defer(
                message.clone(),
                self.now() + defaults::AWS_RETRY_DELAY,
                DeferCause::Claimed,
            ),
            Err(e) => {
                self.release(message, held, &reason).await;
                let reason = format!(
                    "{reason}; and recording the failure failed: {}",
                    error_chain(&e)
                );
                if record.receive_count >= self.settings.max_receive_count {
                    self.send_again(message, &reason)
                } else {
                    Disposition::Retry { reason }
                }
            }
        }
    }

    /// Notes why a message is on its way to the dead-letter queue on its item, when nothing
    /// else could be written there; the log line says it in any case.
    pub(super) async fn note_error(&self, key: &str, reason: &str) {
        if let Err(e) = self.store.note_error(key, reason).await {
            tracing::error!(%reason, error = %error_chain(&e), "could not note the reason on the item");
        }
    }

    pub(super) async fn release(&self, message: &WorkMessage, held: &ClaimRef, reason: &str) {
        if let Err(e) = self
            .store
            .release(&message.item_key(), &held.token, reason, held.request_mark)
            .await
        {
            // The claim then simply expires at the deadline.
            tracing::warn!(error = %error_chain(&e), "could not release the claim");
        }
    }

    /// The deferral until Cloudinary takes calls again at `until`: the hourly quota's reset,
    /// or a longer limit's, which counts toward the bound on such waits.
    pub(super) fn wait_for_gate(&self, message: &WorkMessage, until: SystemTime) -> Disposition {
        if self.beyond_the_hour(until) {
            let next = WorkMessage {
                limit_waits: message.limit_waits + 1,
                ..message.clone()
            };
            return self.defer(next, until, DeferCause::Limit);
        }
        self.defer(message.clone(), until, DeferCause::Quota)
    }

    /// Whether a limit lasting until `until` is not the hourly quota (an add-on's monthly
    /// limit, say): such waits are bounded.
    pub(super) fn beyond_the_hour(&self, until: SystemTime) -> bool {
        until > self.now() + defaults::LONG_LIMIT
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
