//! One record's path, in named steps: admit (the deadline and the quota), claim, call,
//! interpret, store. Each step either hands the next one what it needs or ends the record
//! with its disposition.

use std::time::{Duration, SystemTime};

use super::failure::Failure;
use super::outcome::{DeferCause, Disposition, Handled};
use super::{InboundRecord, OcrAnswer, OcrService, Worker};
use crate::clock::{epoch_ms, from_epoch_ms, rfc3339};
use crate::defaults;
use crate::error::{ErrorClass, error_chain};
use crate::message::WorkMessage;
use crate::ocr::{OcrOutcome, OcrResult};
use crate::queue::WorkQueue;
use crate::rate_gate::{DEFAULT_BACKOFF, Permit};
use crate::store::{Claim, ClaimOutcome, DeadLetterKind, ResultRecord, ResultStore};

/// A quota wait this short is waited out in the invocation rather than through the queue.
const SHORT_WAIT: Duration = Duration::from_secs(1);

/// The claim this invocation holds on an asset.
#[derive(Debug)]
pub(super) struct Held {
    pub token: String,
    pub attempts: u32,
}

/// A step's result: what the next step needs, or the record's end.
type Step<T> = Result<T, Handled>;

impl<O: OcrService, S: ResultStore, Q: WorkQueue> Worker<O, S, Q> {
    /// Takes one parsed record to its disposition.
    pub(super) async fn process_record(
        &self,
        record: &InboundRecord,
        message: WorkMessage,
        deadline: SystemTime,
    ) -> Handled {
        match self.steps(record, message, deadline).await {
            Ok(handled) | Err(handled) => handled,
        }
    }

    async fn steps(
        &self,
        record: &InboundRecord,
        message: WorkMessage,
        deadline: SystemTime,
    ) -> Step<Handled> {
        let permit = self.admit(&message, deadline).await?;
        let held = self.claim(record, &message, deadline).await?;
        let answer = self.call(record, &message, &held, permit).await?;
        let latency = Some(answer.latency);
        let with_latency = |disposition| Handled {
            disposition,
            latency,
            credentials_refused: false,
        };
        let result = self
            .interpret(record, &message, &held, answer.result)
            .await
            .map_err(with_latency)?;
        Ok(with_latency(
            self.store_result(record, message, &held, result).await,
        ))
    }

    /// Starts the record only with time left to finish it, and only when Cloudinary would
    /// not refuse the call: otherwise the message waits for the reset in the queue. A wait of a
    /// moment (a probe call's answer, a reset about to come) is waited out here, which is
    /// cheaper than sending the message round again.
    async fn admit(&self, message: &WorkMessage, deadline: SystemTime) -> Step<Permit<'_>> {
        let clock = self.settings.clock;
        if clock.until(deadline) < self.settings.deadline_margin {
            return Err(Disposition::Retry {
                reason: "not started: the invocation's deadline is near".into(),
            }
            .into());
        }
        loop {
            let now = clock.now();
            let until = match self.gate.admit(now) {
                Ok(permit) => return Ok(permit),
                Err(until) => until,
            };
            let wait = until.duration_since(now).unwrap_or_default();
            if wait > defaults::LONG_LIMIT {
                // Not the hourly quota: waited on a bounded number of times, then asked once
                // more, so that the failure carries Cloudinary's own words.
                if message.limit_waits >= defaults::MAX_LIMIT_WAITS {
                    return Ok(self.gate.probe());
                }
                let next = WorkMessage {
                    limit_waits: message.limit_waits + 1,
                    ..message.clone()
                };
                return Err(self.defer(next, until, DeferCause::Limit).into());
            }
            if wait <= SHORT_WAIT && wait + self.settings.deadline_margin < clock.until(deadline) {
                tokio::time::sleep(wait.clamp(Duration::from_millis(5), Duration::from_millis(50)))
                    .await;
                continue;
            }
            return Err(self.defer(message.clone(), until, DeferCause::Quota).into());
        }
    }

    /// Owns the asset for this invocation, so that a concurrent delivery of it pays nothing.
    async fn claim(
        &self,
        record: &InboundRecord,
        message: &WorkMessage,
        deadline: SystemTime,
    ) -> Step<Held> {
        let now = self.now();
        let token = uuid::Uuid::new_v4().to_string();
        let claim = Claim {
            public_id: &message.public_id,
            resource_type: &message.resource_type,
            delivery_type: &message.delivery_type,
            token: &token,
            now_ms: epoch_ms(now),
            expires_at_ms: epoch_ms(deadline.max(now + self.settings.deadline_margin)),
            force: message.force,
        };
        match self.store.claim(&claim).await {
            Ok(ClaimOutcome::Claimed { attempts }) => Ok(Held { token, attempts }),
            Ok(ClaimOutcome::AlreadyComplete(_)) => Err(Disposition::Skipped.into()),
            Ok(ClaimOutcome::HeldUntil(ms)) => Err(self
                .defer(message.clone(), from_epoch_ms(ms), DeferCause::Claimed)
                .into()),
            Err(e) => Err(self
                .fail(record, None, message, Failure::of(&e))
                .await
                .into()),
        }
    }

    /// Asks Cloudinary: a paid OCR request, or a free read-back when OCR was already requested.
    /// The permit is given back only once the gate knows what the answer said: in between,
    /// another record would be admitted against the old remaining figure.
    async fn call(
        &self,
        record: &InboundRecord,
        message: &WorkMessage,
        held: &Held,
        permit: Permit<'_>,
    ) -> Step<OcrAnswer> {
        let answer = if message.ocr_requested {
            self.ocr.fetch_result(message).await
        } else {
            self.ocr.request_ocr(message).await
        };
        match answer {
            Ok(answer) => {
                self.gate.observe(answer.quota);
                drop(permit);
                tracing::debug!(
                    latency_ms = answer.latency.as_millis() as u64,
                    "cloudinary answered"
                );
                Ok(answer)
            }
            Err(e) => {
                match e.class {
                    // Every call would be refused until the reset: close the gate until then.
                    ErrorClass::RateLimited => self
                        .gate
                        .block_until(e.retry_at.unwrap_or_else(|| self.now() + DEFAULT_BACKOFF)),
                    ErrorClass::Transient | ErrorClass::Permanent => {}
                }
                drop(permit);
                if e.credentials_refused {
                    tracing::error!(error = %e.reason, "cloudinary refused the credentials");
                } else {
                    tracing::info!(error = %e.reason, class = ?e.class, "cloudinary call failed");
                }
                Err(Handled {
                    disposition: self
                        .fail(record, Some(held), message, Failure::of(&e))
                        .await,
                    latency: None,
                    credentials_refused: e.credentials_refused,
                })
            }
        }
    }

    /// A finished OCR goes on to be stored; a pending one is read back later (never paid for
    /// again); a failed one is a permanent failure.
    async fn interpret(
        &self,
        record: &InboundRecord,
        message: &WorkMessage,
        held: &Held,
        result: OcrResult,
    ) -> Result<OcrResult, Disposition> {
        match &result.outcome {
            OcrOutcome::Text { .. } | OcrOutcome::NoText => Ok(result),
            OcrOutcome::Pending if message.pending_polls >= self.settings.max_pending_polls => {
                let reason = format!("OCR still pending after {} checks", message.pending_polls);
                Err(self
                    .fail(record, Some(held), message, Failure::permanent(reason))
                    .await)
            }
            OcrOutcome::Pending => {
                self.release(message, held, "OCR pending").await;
                let next = WorkMessage {
                    ocr_requested: true,
                    pending_polls: message.pending_polls.saturating_add(1),
                    ..message.clone()
                };
                Err(self.defer(
                    next,
                    self.now() + self.settings.pending_poll_delay,
                    DeferCause::Pending,
                ))
            }
            OcrOutcome::Failed { status } => {
                let reason = format!("Cloudinary reports OCR status {status:?}");
                Err(self
                    .fail(record, Some(held), message, Failure::permanent(reason))
                    .await)
            }
        }
    }

    /// Writes the result under the claim. The OCR is paid for by now: if the write fails, the
    /// message comes back marked so that it reads the result back instead of paying again.
    async fn store_result(
        &self,
        record: &InboundRecord,
        message: WorkMessage,
        held: &Held,
        result: OcrResult,
    ) -> Disposition {
        let rec = ResultRecord::from_outcome(
            &message.public_id,
            &message.resource_type,
            &message.delivery_type,
            result.outcome,
            result.asset,
            held.attempts,
            rfc3339(self.now()),
        );
        if rec.truncated {
            tracing::warn!(
                text_bytes = rec.text_bytes,
                "OCR text over the item limit; stored truncated"
            );
        }
        match self.store.put_result(&rec, &held.token).await {
            Ok(true) => Disposition::Stored(rec.status),
            // Our claim expired and another invocation took the asset over: it owns the result.
            Ok(false) => Disposition::Skipped,
            Err(e) => {
                let reason = error_chain(&e);
                match crate::error::Classified::class(&e) {
                    // The table refuses this result for good; the far smaller failure record
                    // keeps the reason, so that later receives do not pay again.
                    ErrorClass::Permanent => {
                        self.fail_for_good(
                            record,
                            Some(held),
                            &message,
                            DeadLetterKind::Permanent,
                            reason,
                        )
                        .await
                    }
                    ErrorClass::Transient | ErrorClass::RateLimited => {
                        self.release(&message, held, &reason).await;
                        self.defer(
                            WorkMessage {
                                ocr_requested: true,
                                ..message
                            },
                            self.now() + defaults::RESULT_WRITE_RETRY,
                            DeferCause::WriteRetry,
                        )
                    }
                }
            }
        }
    }
}
