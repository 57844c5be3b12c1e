//! One record's path, in named steps: admit (the deadline and the quota), claim, call,
//! interpret, store. Each step either hands the next one what it needs or ends the record
//! with its disposition.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use super::failure::Failure;
use super::outcome::{DeferCause, Disposition, Handled};
use super::{Api, InboundRecord, OcrAnswer, OcrService, Worker};
use crate::clock::{epoch_ms, from_epoch_ms, rfc3339};
use crate::defaults;
use crate::error::{ErrorClass, error_chain};
use crate::message::WorkMessage;
use crate::ocr::{OcrOutcome, OcrResult};
use crate::queue::WorkQueue;
use crate::rate_gate::{DEFAULT_BACKOFF, Permit};
use crate::store::{
    Claim, ClaimOutcome, DeadLetterKind, RequestMark, ResultRecord, ResultStore, Seen, StoreError,
};

/// A quota wait this short is waited out in the invocation rather than through the queue.
const SHORT_WAIT: Duration = Duration::from_secs(1);

/// The claim this invocation holds on an asset.
#[derive(Debug)]
pub(super) struct Held {
    pub token: String,
    pub attempts: u32,
    /// An earlier attempt claimed the asset and wrote no result: it may have been billed for
    /// an OCR before it timed out or died.
    pub requested_before: Option<u64>,
    /// This attempt sent an OCR request that may have run (not refused by Cloudinary).
    pub asked: AtomicBool,
    /// This attempt's read-back found no OCR on the asset.
    pub none_found: AtomicBool,
}

impl Held {
    /// What a release leaves of the claim's request mark: a request that may have run keeps
    /// it; otherwise it is put back as the claim found it, or removed when a read-back found
    /// no OCR.
    pub fn request_mark(&self) -> RequestMark {
        if self.asked.load(Ordering::Relaxed) {
            RequestMark::Keep
        } else if self.none_found.load(Ordering::Relaxed) {
            RequestMark::Restore(None)
        } else {
            RequestMark::Restore(self.requested_before)
        }
    }
}

/// A claim waiting for its group to be written.
#[derive(Debug, Clone)]
pub(super) struct PendingClaim {
    key: String,
    resource_type: String,
    delivery_type: String,
    token: String,
    now_ms: u64,
    expires_at_ms: u64,
    force: bool,
    seen: Option<Seen>,
}

impl PendingClaim {
    fn as_claim(&self) -> Claim<'_> {
        Claim {
            key: &self.key,
            resource_type: &self.resource_type,
            delivery_type: &self.delivery_type,
            token: &self.token,
            now_ms: self.now_ms,
            expires_at_ms: self.expires_at_ms,
            force: self.force,
            seen: self.seen,
        }
    }
}

/// A step's result: what the next step needs, or the record's end.
type Step<T> = Result<T, Handled>;

impl<O: OcrService, S: ResultStore, Q: WorkQueue> Worker<O, S, Q> {
    /// Takes one parsed record to its disposition.
    pub(super) async fn process_record(
        &self,
        record: &InboundRecord,
        message: WorkMessage,
        seen: Option<Seen>,
        deadline: SystemTime,
    ) -> Handled {
        match self.steps(record, message, seen, deadline).await {
            Ok(handled) | Err(handled) => handled,
        }
    }

    async fn steps(
        &self,
        record: &InboundRecord,
        message: WorkMessage,
        seen: Option<Seen>,
        deadline: SystemTime,
    ) -> Step<Handled> {
        let permit = self.admit(&message, deadline).await?;
        let held = self.claim(record, &message, seen, deadline).await?;
        // From here the record may write a result: a group of results waits for it.
        let _expected = self.results.expect();
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
            // Sent again rather than failed: a receive spent here would walk a healthy message
            // toward the dead-letter queue.
            return Err(self
                .defer(message.clone(), clock.now(), DeferCause::Unstarted)
                .into());
        }
        // The first call's API: a read-back's unless OCR is to be requested (a claim may yet
        // find an earlier attempt to read back: `call` then takes the Admin API's permit).
        let api = if message.ocr_requested {
            Api::Admin
        } else {
            self.ocr.request_api()
        };
        loop {
            let now = clock.now();
            let until = match self.permit(api, message, now) {
                Ok(permit) => return Ok(permit),
                Err(until) => until,
            };
            let wait = until.duration_since(now).unwrap_or_default();
            if wait <= SHORT_WAIT && wait + self.settings.deadline_margin < clock.until(deadline) {
                tokio::time::sleep(wait.clamp(Duration::from_millis(5), Duration::from_millis(50)))
                    .await;
                continue;
            }
            return Err(self.wait_for_gate(message, until).into());
        }
    }

    /// A permit for one call, or when the gate opens. Behind a limit that does not reset
    /// within the hour the message is waited on a bounded number of times, then let through
    /// once more, so that its failure carries Cloudinary's own words.
    fn permit(
        &self,
        api: Api,
        message: &WorkMessage,
        now: SystemTime,
    ) -> Result<Permit<'_>, SystemTime> {
        let gate = self.gate(api);
        match gate.admit(now) {
            Ok(permit) => Ok(permit),
            Err(until)
                if self.beyond_the_hour(until)
                    && message.limit_waits >= defaults::MAX_LIMIT_WAITS =>
            {
                Ok(gate.probe())
            }
            Err(until) => Err(until),
        }
    }

    /// Whether a limit lasting until `until` is not the hourly quota (an add-on's monthly
    /// limit, say): such waits are bounded.
    pub(super) fn beyond_the_hour(&self, until: SystemTime) -> bool {
        until > self.now() + defaults::LONG_LIMIT
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

    /// Owns the asset for this invocation, so that a concurrent delivery of it pays nothing.
    async fn claim(
        &self,
        record: &InboundRecord,
        message: &WorkMessage,
        seen: Option<Seen>,
        deadline: SystemTime,
    ) -> Step<Held> {
        let now = self.now();
        let pending = PendingClaim {
            key: message.item_key(),
            resource_type: message.resource_type.clone(),
            delivery_type: message.delivery_type.clone(),
            token: uuid::Uuid::new_v4().to_string(),
            now_ms: epoch_ms(now),
            expires_at_ms: epoch_ms(deadline.max(now + self.settings.deadline_margin)),
            // A complete asset is claimed for a forced re-OCR or a new version of it.
            force: message.force || message.new_version,
            seen,
        };
        let token = pending.token.clone();
        let outcome = match self
            .claims
            .submit(pending.clone(), |group| async move {
                let claims: Vec<Claim<'_>> = group.iter().map(PendingClaim::as_claim).collect();
                self.store.claim_batch(&claims).await
            })
            .await
        {
            Some(outcome) => outcome,
            // Its group was given up before it answered: claimed on its own.
            None => self.store.claim(&pending.as_claim()).await,
        };
        match outcome {
            Ok(ClaimOutcome::Claimed {
                attempts,
                requested_before,
            }) => Ok(Held {
                token,
                attempts,
                requested_before,
                asked: AtomicBool::new(false),
                none_found: AtomicBool::new(false),
            }),
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

    /// Asks Cloudinary, paying at most once: an OCR is requested only when no earlier attempt
    /// may have requested it. A pending OCR, and an asset an earlier attempt left without a
    /// result (a timeout, a dropped connection, a killed invocation: Cloudinary bills the OCR
    /// when the request arrives), is read back first, free; only a read-back that finds no OCR
    /// at all leads to the request. A forced re-OCR always requests (an unfinished attempt may
    /// not have reached Cloudinary, and the asset's old OCR would read back as new); a new
    /// version of an asset is read back as any other asset is.
    async fn call(
        &self,
        record: &InboundRecord,
        message: &WorkMessage,
        held: &Held,
        permit: Permit<'_>,
    ) -> Step<OcrAnswer> {
        let read_back =
            message.ocr_requested || (!message.force && held.requested_before.is_some());
        let permit = if read_back && !permit.is_from(self.gate(Api::Admin)) {
            drop(permit);
            self.next_permit(Api::Admin, message, held).await?
        } else {
            permit
        };
        let answer = self.ask(record, message, held, permit, read_back).await?;
        if !read_back || answer.result.outcome != OcrOutcome::NotRequested {
            return Ok(answer);
        }
        held.none_found.store(true, Ordering::Relaxed);
        tracing::info!("no OCR on the asset after an unfinished attempt: requesting it");
        let permit = self
            .next_permit(self.ocr.request_api(), message, held)
            .await?;
        self.ask(record, message, held, permit, false).await
    }

    /// A permit for a call after the first; when the gate is closed the claim is given up and
    /// the message waits for it.
    async fn next_permit(&self, api: Api, message: &WorkMessage, held: &Held) -> Step<Permit<'_>> {
        match self.permit(api, message, self.now()) {
            Ok(permit) => Ok(permit),
            Err(until) => {
                self.release(
                    message,
                    held,
                    "Cloudinary's limit reached between two calls",
                )
                .await;
                Err(self.wait_for_gate(message, until).into())
            }
        }
    }

    /// One call: the OCR request (paid) or the read-back (free). The permit is given back only
    /// once the gate knows what the answer said: in between, another record would be admitted
    /// against the old remaining figure.
    async fn ask(
        &self,
        record: &InboundRecord,
        message: &WorkMessage,
        held: &Held,
        permit: Permit<'_>,
        read_back: bool,
    ) -> Step<OcrAnswer> {
        let (answer, gate) = if read_back {
            (self.ocr.fetch_result(message).await, self.gate(Api::Admin))
        } else {
            let api = self.ocr.request_api();
            let answer = self.ocr.request_ocr(message).await;
            // Refused (HTTP 420 or 429): no OCR ran, nothing was billed.
            let refused = answer
                .as_ref()
                .is_err_and(|e| e.class == ErrorClass::RateLimited);
            held.asked.store(!refused, Ordering::Relaxed);
            (answer, self.gate(api))
        };
        match answer {
            Ok(answer) => {
                gate.observe(answer.quota);
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
                    ErrorClass::RateLimited => {
                        gate.block_until(e.retry_at.unwrap_or_else(|| self.now() + DEFAULT_BACKOFF))
                    }
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
            // Only a read-back says so, and `call` requests the OCR then.
            OcrOutcome::NotRequested => {
                let reason = "Cloudinary's answer has no OCR result".to_string();
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
        let rec = ResultRecord {
            pages: result.pages,
            ..ResultRecord::from_outcome(
                &message.item_key(),
                &message.resource_type,
                &message.delivery_type,
                result.outcome,
                result.asset,
                held.attempts,
                rfc3339(self.now()),
            )
        };
        if rec.truncated {
            tracing::warn!(
                text_bytes = rec.text_bytes,
                "OCR text over the item limit; stored truncated"
            );
        }
        let status = rec.status;
        match self.write_result(rec, &held.token).await {
            Ok(true) => Disposition::Stored(status),
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

    /// Writes a result with the others ready at about the same time.
    async fn write_result(&self, rec: ResultRecord, token: &str) -> Result<bool, StoreError> {
        let key = rec.key.clone();
        self.results
            .submit((rec, token.to_string()), |group| async move {
                let results: Vec<(&ResultRecord, &str)> =
                    group.iter().map(|(r, t)| (r, t.as_str())).collect();
                self.store.put_results(&results).await
            })
            .await
            .unwrap_or_else(|| {
                // Only when the invocation is being given up: the message comes back, and
                // reads the result back.
                Err(StoreError::new(
                    "PutItem",
                    "results",
                    "Abandoned",
                    format!("the write of {key}'s result was given up"),
                ))
            })
    }
}
