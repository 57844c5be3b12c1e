//! One record's path, in named steps: admit (the deadline and the quota), claim, call,
//! interpret, store. Each step either hands the next one what it needs or ends the record
//! with its disposition.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use super::failure::{ClaimRef, Failure};
use super::gather::Gathered;
use super::outcome::{DeferCause, Disposition, Handled};
use super::{Api, InboundRecord, OcrAnswer, OcrService, Worker};
use crate::budget::{Take, Ticket};
use crate::clock::{epoch_ms, from_epoch_ms, rfc3339};
use crate::defaults;
use crate::error::{ErrorClass, RemoteError, error_chain};
use crate::message::WorkMessage;
use crate::ocr::{OcrOutcome, OcrResult};
use crate::queue::WorkQueue;
use crate::rate_gate::{DEFAULT_BACKOFF, Permit};
use crate::store::{
    Claim, ClaimIntent, ClaimOutcome, DeadLetterKind, DeadLetterMark, Moved, RequestMark,
    ResultRecord, ResultStore,
};

/// A quota wait this short is waited out in the invocation rather than through the queue.
const SHORT_WAIT: Duration = Duration::from_secs(1);
/// Short waits add up to at most this in one record's admission.
const MAX_ADMIT_WAIT: Duration = Duration::from_secs(30);

/// The claim this invocation holds on an asset.
#[derive(Debug)]
pub(super) struct Held {
    pub token: String,
    pub attempts: u32,
    /// When this attempt took the claim: the time its request mark carries.
    pub claimed_at: SystemTime,
    /// An earlier attempt claimed the asset and wrote no result: it may have been billed for
    /// an OCR before it timed out or died.
    pub requested_before: Option<u64>,
    /// When a rename brought the asset to the key: the result keeps it.
    pub arrived_at_ms: Option<u64>,
    /// This attempt sent an OCR request that may have run (not refused by Cloudinary).
    pub asked: AtomicBool,
    /// This attempt's read-back found no OCR on the asset.
    pub none_found: AtomicBool,
}

impl Held {
    /// What giving the claim up leaves of its request mark: a request that may have run keeps
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

    /// The claim as a failure needs it, as it stands now.
    pub fn claim_ref(&self) -> ClaimRef {
        ClaimRef {
            token: self.token.clone(),
            attempts: self.attempts,
            claimed_at: self.claimed_at,
            request_mark: self.request_mark(),
        }
    }
}

/// What a message asks of an asset that may have a result already: a forced re-OCR, else the
/// version it was listed at (an older result's asset was uploaded again since), else any
/// result.
pub(super) fn intent(message: &WorkMessage) -> ClaimIntent {
    match (message.force, message.version) {
        // A forced re-OCR without the time it was asked for: any result is older.
        (true, _) => ClaimIntent::Forced {
            asked_at_ms: message.forced_at.unwrap_or(u64::MAX),
        },
        (false, Some(v)) => ClaimIntent::NewVersion(v),
        (false, None) => ClaimIntent::Plain,
    }
}

/// Whether the attempt reads the asset back before paying: a pending OCR, and an asset an
/// earlier attempt may have been billed for (it claimed the asset and wrote no result: a
/// timeout, a dropped connection, a killed invocation; Cloudinary bills the OCR when the
/// request arrives). For a forced re-OCR only an attempt of this request counts (claimed since
/// it was asked for): an older OCR would read back as the re-OCR.
fn reads_back_first(message: &WorkMessage, requested_before: Option<u64>) -> bool {
    if message.ocr_requested {
        return true;
    }
    match (requested_before, message.force) {
        (None, _) => false,
        (Some(_), false) => true,
        (Some(at), true) => message.forced_at.is_some_and(|asked| at >= asked),
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
        drop_marks: &[DeadLetterMark],
        deadline: SystemTime,
    ) -> Handled {
        match self.steps(record, message, drop_marks, deadline).await {
            Ok(handled) | Err(handled) => handled,
        }
    }

    async fn steps(
        &self,
        record: &InboundRecord,
        message: WorkMessage,
        drop_marks: &[DeadLetterMark],
        deadline: SystemTime,
    ) -> Step<Handled> {
        let permit = self.admit(&message, deadline).await?;
        // A budget this instance saw spent: the message waits without a claim (no write).
        // One that asks only for a read-back goes on: reading is free.
        if !message.ocr_requested
            && let Some(Take::Spent { until, .. }) =
                self.budget.as_ref().and_then(|b| b.known_spent(self.now()))
        {
            drop(permit);
            return Err(self.defer(message, until, DeferCause::Budget).into());
        }
        let held = self.claim(record, &message, drop_marks, deadline).await?;
        let answer = self.call(record, &message, &held, permit, deadline).await?;
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
    async fn admit(&self, message: &WorkMessage, deadline: SystemTime) -> Step<Option<Permit<'_>>> {
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
        let api = if message.ocr_requested || message.gathered {
            Api::Admin
        } else {
            self.ocr.request_api()
        };
        let started = clock.now();
        loop {
            let now = clock.now();
            let until = if message.gathered {
                // A read-back made with others takes its permit when the shared call is
                // made: one call, one permit. A permit taken here would be spent on this
                // asset alone; so it waits for the gate as any other, and takes a permit
                // only as the probe past a limit that does not reset within the hour.
                match self.gate(api).would_admit(now) {
                    Ok(()) => return Ok(None),
                    Err(until) if self.probes_past(until, message) => {
                        return Ok(Some(self.gate(api).probe()));
                    }
                    Err(until) => until,
                }
            } else {
                match self.permit(api, message, now) {
                    Ok(permit) => return Ok(Some(permit)),
                    Err(until) => until,
                }
            };
            let wait = until.duration_since(now).unwrap_or_default();
            // Moments only: a gate that keeps saying "in a moment" (a window whose end no
            // answer tells) is waited on in the queue, not by polling here.
            let waited = now.duration_since(started).unwrap_or_default();
            if wait <= SHORT_WAIT
                && waited < MAX_ADMIT_WAIT
                && wait + self.settings.deadline_margin < clock.until(deadline)
            {
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
            Err(until) if self.probes_past(until, message) => Ok(gate.probe()),
            Err(until) => Err(until),
        }
    }

    /// Whether the message, waited on behind a limit lasting until `until` as often as such
    /// waits go, is let through once more.
    fn probes_past(&self, until: SystemTime, message: &WorkMessage) -> bool {
        self.beyond_the_hour(until) && message.limit_waits >= defaults::MAX_LIMIT_WAITS
    }

    /// Owns the asset for this invocation, so that a concurrent delivery of it pays nothing.
    /// The store checks the message's intent against the item as it is then.
    async fn claim(
        &self,
        record: &InboundRecord,
        message: &WorkMessage,
        drop_marks: &[DeadLetterMark],
        deadline: SystemTime,
    ) -> Step<Held> {
        let now = self.now();
        let key = message.item_key();
        let token = uuid::Uuid::new_v4().to_string();
        let claim = Claim {
            key: &key,
            resource_type: &message.resource_type,
            delivery_type: &message.delivery_type,
            token: &token,
            now_ms: epoch_ms(now),
            expires_at_ms: epoch_ms(deadline.max(now + self.settings.deadline_margin)),
            intent: intent(message),
            drop_marks,
        };
        match self.store.claim(&claim).await {
            Ok(ClaimOutcome::Claimed {
                attempts,
                requested_before,
                arrived_at_ms,
            }) => Ok(Held {
                token,
                attempts,
                claimed_at: now,
                requested_before,
                arrived_at_ms,
                asked: AtomicBool::new(false),
                none_found: AtomicBool::new(false),
            }),
            Ok(ClaimOutcome::AlreadyComplete(_) | ClaimOutcome::Gone) => {
                Err(Disposition::Skipped.into())
            }
            Ok(ClaimOutcome::HeldUntil(ms)) => Err(self
                .defer(message.clone(), from_epoch_ms(ms), DeferCause::Claimed)
                .into()),
            Err(e) => Err(self
                .fail(record, None, message, Failure::store(&e))
                .await
                .into()),
        }
    }

    /// Asks Cloudinary, paying at most once: an OCR is requested only when no earlier attempt
    /// may have requested it (see [`reads_back_first`]); a read-back is free, and only one that
    /// finds no OCR at all leads to the request.
    async fn call(
        &self,
        record: &InboundRecord,
        message: &WorkMessage,
        held: &Held,
        permit: Option<Permit<'_>>,
        deadline: SystemTime,
    ) -> Step<OcrAnswer> {
        let read_back = reads_back_first(message, held.requested_before);
        if read_back && message.read_alone {
            self.doubt_shared_answers();
        }
        if read_back && self.gathers_elsewhere(message) {
            drop(permit);
            return Err(self.to_read_back_queue(message, held).await.into());
        }
        // What the read-back finds is as of when it was sent, not when its answer came.
        let sent = self.now();
        let api = self.call_api(read_back);
        let answer = match permit {
            Some(permit) if permit.is_from(self.gate(api)) => {
                self.ask(record, message, held, permit, read_back).await?
            }
            permit => {
                drop(permit);
                self.ask_without_permit(record, message, held, read_back, deadline)
                    .await?
            }
        };
        if !read_back || answer.result.outcome != OcrOutcome::NotRequested {
            return Ok(answer);
        }
        // The earlier attempt's request may still arrive, or still run: Cloudinary bills it
        // then, and only then does a read-back see it. Paying now could pay twice.
        if let Some(settled) = held
            .requested_before
            .map(|at| from_epoch_ms(at) + self.settings.request_settle)
            .filter(|settled| *settled > sent)
        {
            tracing::info!("no OCR yet after an unfinished attempt: read back again later");
            self.release(
                message,
                &held.claim_ref(),
                "an earlier request may still run",
            )
            .await;
            return Err(self
                .defer(message.clone(), settled, DeferCause::Claimed)
                .into());
        }
        held.none_found.store(true, Ordering::Relaxed);
        tracing::info!("no OCR on the asset after an unfinished attempt: requesting it");
        // Nothing to read back any more: should the request have to wait, the message that
        // waits asks for the request, not for another read-back.
        let message = &WorkMessage {
            ocr_requested: false,
            pending_polls: 0,
            gathered: false,
            canary: None,
            read_alone: false,
            ..message.clone()
        };
        let permit = self
            .next_permit(self.ocr.request_api(), message, held)
            .await?;
        self.ask(record, message, held, permit, false).await
    }

    /// The call without a permit in hand: a read-back from the read-back queue is made with
    /// the others of its batch (when they can be trusted); anything else takes the next permit
    /// of its API and asks alone.
    async fn ask_without_permit(
        &self,
        record: &InboundRecord,
        message: &WorkMessage,
        held: &Held,
        read_back: bool,
        deadline: SystemTime,
    ) -> Step<OcrAnswer> {
        let together = if read_back && message.gathered {
            self.gathered_read_back(message).await
        } else {
            Gathered::Alone
        };
        match together {
            Gathered::Found(answer) => Ok(*answer),
            Gathered::Doubted => {
                self.release(message, &held.claim_ref(), "read back alone instead")
                    .await;
                let alone = WorkMessage {
                    gathered: false,
                    canary: None,
                    read_alone: true,
                    ..message.clone()
                };
                Err(self.defer(alone, self.now(), DeferCause::ReadBack).into())
            }
            Gathered::Closed(until) => Err(self
                .release_to_wait(
                    message,
                    held,
                    "Cloudinary's limit reached before the read-back",
                    until,
                )
                .await
                .into()),
            Gathered::Alone => {
                // Waiting for the others may have taken the time this record's own calls need.
                let clock = self.settings.clock;
                if clock.until(deadline) < self.settings.deadline_margin {
                    self.release(message, &held.claim_ref(), "too near the deadline")
                        .await;
                    return Err(self
                        .defer(message.clone(), clock.now(), DeferCause::Unstarted)
                        .into());
                }
                let api = self.call_api(read_back);
                let permit = self.next_permit(api, message, held).await?;
                self.ask(record, message, held, permit, read_back).await
            }
        }
    }

    /// The asset is read back with others: the claim is given up as it was found, and the
    /// message goes to the read-back queue, visible once a read-back that finds no OCR may
    /// pay (the settle time after the earlier attempt), at once for a pending OCR's.
    async fn to_read_back_queue(&self, message: &WorkMessage, held: &Held) -> Disposition {
        self.release(message, &held.claim_ref(), "read back with others")
            .await;
        let now = self.now();
        let until = held
            .requested_before
            .filter(|_| !message.ocr_requested)
            .map(|at| from_epoch_ms(at) + self.settings.request_settle)
            .unwrap_or(now)
            .max(now);
        self.defer(self.to_gather(message), until, DeferCause::ReadBack)
    }

    /// The message as the read-back queue takes it: marked, with this instance's canary.
    fn to_gather(&self, message: &WorkMessage) -> WorkMessage {
        let canary = self
            .canary(&(message.resource_type.clone(), message.delivery_type.clone()))
            .filter(|id| *id != message.public_id)
            .or_else(|| message.canary.clone());
        WorkMessage {
            gathered: true,
            canary,
            ..message.clone()
        }
    }

    /// Whether this read-back goes to the read-back queue: not one made there already, nor
    /// one that queue could not trust; and not for a while after this instance met such a
    /// one (the shared answers then say nothing).
    fn gathers_elsewhere(&self, message: &WorkMessage) -> bool {
        if !self.settings.read_back_queue || message.gathered || message.read_alone {
            return false;
        }
        let doubted = self.doubted_until.lock().unwrap_or_else(|e| e.into_inner());
        doubted.is_none_or(|until| until <= self.now())
    }

    /// A read-back the read-back queue could not trust came here: this instance reads back
    /// alone for a while ([`super::gather::DOUBT`]).
    fn doubt_shared_answers(&self) {
        *self.doubted_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(self.now() + super::gather::DOUBT);
    }

    /// A permit for a call after the first; when the gate is closed the claim is given up and
    /// the message waits for it.
    async fn next_permit(&self, api: Api, message: &WorkMessage, held: &Held) -> Step<Permit<'_>> {
        match self.permit(api, message, self.now()) {
            Ok(permit) => Ok(permit),
            Err(until) => Err(self
                .release_to_wait(
                    message,
                    held,
                    "Cloudinary's limit reached between two calls",
                    until,
                )
                .await
                .into()),
        }
    }

    /// The claim given up (`why`) and the message waiting for the gate to open at `until`.
    async fn release_to_wait(
        &self,
        message: &WorkMessage,
        held: &Held,
        why: &str,
        until: SystemTime,
    ) -> Disposition {
        self.release(message, &held.claim_ref(), why).await;
        self.wait_for_gate(message, until)
    }

    /// The API of a call: the Admin API's for a read-back, the OCR method's for a request.
    fn call_api(&self, read_back: bool) -> Api {
        if read_back {
            Api::Admin
        } else {
            self.ocr.request_api()
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
        let answer = if read_back {
            self.ocr.fetch_result(message).await
        } else {
            let ticket = match self.take_budget(record, message, held).await {
                Ok(ticket) => ticket,
                Err(handled) => {
                    drop(permit);
                    return Err(handled);
                }
            };
            let answer = self.ocr.request_ocr(message).await;
            // Refused (HTTP 420 or 429, or the credentials): no OCR ran, nothing was billed.
            let refused = answer
                .as_ref()
                .is_err_and(|e| e.class == ErrorClass::RateLimited || e.credentials_refused);
            // Turned down (refused, a 4xx such as the asset gone, no connection made): no OCR
            // ran, so the unit goes back and nothing is left to read back. One that may have
            // run (a timeout, a 5xx, an answer not understood) keeps both: it may have been
            // billed.
            let turned_down = refused || answer.as_ref().is_err_and(|e| e.not_run);
            held.asked.store(!turned_down, Ordering::Relaxed);
            if let (Some(ticket), true, Some(budget)) = (ticket, turned_down, &self.budget)
                && let Err(e) = budget.give_back(&ticket).await
            {
                tracing::warn!(error = %error_chain(&e), "could not give an OCR budget unit back");
            }
            answer
        };
        match answer {
            Ok(answer) => {
                permit.answered(answer.quota);
                tracing::debug!(
                    latency_ms = answer.latency.as_millis() as u64,
                    "cloudinary answered"
                );
                Ok(answer)
            }
            Err(e) => {
                let gate_api = self.call_api(read_back);
                self.learn_from_error(permit, gate_api, &e);
                Err(Handled {
                    disposition: self
                        .fail(
                            record,
                            Some(&held.claim_ref()),
                            message,
                            Failure::remote(&e),
                        )
                        .await,
                    latency: None,
                    credentials_refused: e.credentials_refused,
                })
            }
        }
    }

    /// A unit of the OCR budget for one request; when the budget is spent the claim is given
    /// up and the message waits for the next period (deferred, never toward the DLQ).
    async fn take_budget(
        &self,
        record: &InboundRecord,
        message: &WorkMessage,
        held: &Held,
    ) -> Step<Option<Ticket>> {
        let Some(budget) = &self.budget else {
            return Ok(None);
        };
        match budget.take(self.now()).await {
            Ok(Take::Taken(ticket)) => Ok(Some(ticket)),
            Ok(Take::Spent { period, until }) => {
                tracing::debug!(?period, until = %rfc3339(until), "the OCR budget is spent: the message waits for the next period");
                self.release(message, &held.claim_ref(), "the OCR budget is spent")
                    .await;
                Err(self
                    .defer(message.clone(), until, DeferCause::Budget)
                    .into())
            }
            Err(e) => Err(Handled {
                disposition: self
                    .fail(record, Some(&held.claim_ref()), message, Failure::store(&e))
                    .await,
                latency: None,
                credentials_refused: false,
            }),
        }
    }

    /// An error answer may still report the quota: the gate learns it. One without (a 5xx, a
    /// timeout) tells nothing, not even that there are no headers. A refusal closes the gates.
    pub(super) fn learn_from_error(&self, permit: Permit<'_>, api: Api, e: &RemoteError) {
        if e.quota.is_some() {
            permit.observed(e.quota);
        } else {
            drop(permit);
        }
        self.close_gates(api, e);
    }

    /// After a refusal, no call is made that would be refused too: a rate limit closes its
    /// API's gate until the reset; refused credentials close both for a while (the invocation
    /// backs off, and its other records wait in the queue without a call).
    pub(super) fn close_gates(&self, api: Api, e: &RemoteError) {
        let now = self.now();
        if e.credentials_refused {
            tracing::error!(error = %e.reason, "cloudinary refused the credentials (or redirected the call)");
            for gate in [Api::Admin, Api::Upload] {
                self.gate(gate)
                    .pause_until(now, now + self.settings.credentials_wait);
            }
            return;
        }
        if e.class == ErrorClass::RateLimited {
            self.gate(api)
                .block_until(now, e.retry_at.unwrap_or(now + DEFAULT_BACKOFF));
        }
        tracing::info!(error = %e.reason, class = ?e.class, "cloudinary call failed");
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
        let reason = match &result.outcome {
            OcrOutcome::Text { .. } | OcrOutcome::NoText => return Ok(result),
            OcrOutcome::Pending if message.pending_polls < self.settings.max_pending_polls => {
                return Err(self.read_back_later(message, held).await);
            }
            OcrOutcome::Pending => {
                format!("OCR still pending after {} checks", message.pending_polls)
            }
            OcrOutcome::Failed { status } => format!("Cloudinary reports OCR status {status:?}"),
            // Only a read-back says so, and `call` requests the OCR then.
            OcrOutcome::NotRequested => "Cloudinary's answer has no OCR result".to_string(),
        };
        Err(self
            .fail(
                record,
                Some(&held.claim_ref()),
                message,
                Failure::permanent(reason),
            )
            .await)
    }

    /// A pending OCR: the claim is given up (its request mark kept) and the message comes back
    /// to read the result, never to pay again.
    async fn read_back_later(&self, message: &WorkMessage, held: &Held) -> Disposition {
        self.release(message, &held.claim_ref(), "OCR pending")
            .await;
        let next = WorkMessage {
            ocr_requested: true,
            pending_polls: message.pending_polls.saturating_add(1),
            ..message.clone()
        };
        let next = if message.gathered || self.gathers_elsewhere(message) {
            self.to_gather(&next)
        } else {
            next
        };
        self.defer(
            next,
            self.now() + self.settings.pending_poll_delay,
            DeferCause::Pending,
        )
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
            asked_version: message.version.filter(|_| !message.force),
            renamed_at_ms: held.arrived_at_ms,
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
        match self.store.put_result(&rec, &held.token).await {
            Ok(true) => {
                if status.is_complete() {
                    self.note_canary(&message);
                }
                Disposition::Stored(status)
            }
            // Our claim expired and another invocation took the asset over (it owns the
            // result), or a notification took the claim away: the asset left the key.
            Ok(false) => self.follow_rename(rec).await,
            Err(e) => self.result_not_written(record, message, held, &e).await,
        }
    }

    /// A paid result whose claim a notification took away. Of an image newer than the one
    /// that left the key (uploaded over the old name since), it is written where it was
    /// asked; of the image that was renamed, under its new key (counted as of its own
    /// version: nothing is paid again there); of a deleted one, nowhere.
    async fn follow_rename(&self, mut rec: ResultRecord) -> Disposition {
        let gone = match self.store.gone(&rec.key).await {
            Ok(Some(gone)) => gone,
            Ok(None) => return Disposition::Skipped,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "could not read why the claim was taken away");
                return Disposition::Skipped;
            }
        };
        let newer = rec.asset.version.is_some_and(|v| v > gone.version);
        let from = if newer {
            None
        } else if let Some(to) = gone.renamed_to {
            Some(std::mem::replace(&mut rec.key, to))
        } else {
            tracing::info!("the asset was deleted while it was read: nothing stored");
            return Disposition::Skipped;
        };
        let status = rec.status;
        match self
            .store
            .put_renamed(
                &rec,
                from.as_deref().map(|from| Moved {
                    from,
                    at_ms: gone.at_ms,
                    asset_id: rec.asset.asset_id.as_deref(),
                }),
                epoch_ms(self.now()),
            )
            .await
        {
            Ok(true) => {
                tracing::info!(
                    renamed = from.is_some(),
                    "stored after a notification took the claim"
                );
                Disposition::Stored(status)
            }
            Ok(false) => Disposition::Skipped,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "the result was not written after a notification took the claim");
                Disposition::Skipped
            }
        }
    }

    /// The paid result could not be written. Refused for good, the far smaller failure record
    /// keeps the reason and the request mark, so that later receives read the result back
    /// rather than pay again; otherwise the message comes back to read it back and write it.
    async fn result_not_written(
        &self,
        record: &InboundRecord,
        message: WorkMessage,
        held: &Held,
        e: &crate::store::StoreError,
    ) -> Disposition {
        let reason = error_chain(e);
        match crate::error::Classified::class(e) {
            ErrorClass::Permanent => {
                let held = held.claim_ref();
                self.fail_for_good(
                    record,
                    Some(&held),
                    &message,
                    DeadLetterKind::Permanent,
                    reason,
                )
                .await
            }
            ErrorClass::Transient | ErrorClass::RateLimited => {
                self.release(&message, &held.claim_ref(), &reason).await;
                let next = WorkMessage {
                    ocr_requested: true,
                    ..message
                };
                let until = self.now() + defaults::RESULT_WRITE_RETRY;
                self.defer(next, until, DeferCause::WriteRetry)
            }
        }
    }
}
