//! The worker's use case: one SQS batch of work messages in, one disposition per message out.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use serde_json::Value;
use tracing::Instrument;

use crate::clock::{epoch_ms, rfc3339};
use crate::cloudinary::{Answer, CloudinaryClient, CloudinaryError};
use crate::error::{Classified, ErrorClass, error_chain};
use crate::message::WorkMessage;
use crate::ocr::{OcrOutcome, parse_resource};
use crate::queue::{DeadLetter, DeadLetterQueue, WorkQueue};
use crate::rate_gate::RateGate;
use crate::store::{Claim, ClaimOutcome, MAX_KEY_BYTES, ResultRecord, ResultStore, Status};

/// Enables OCR on an asset and reads results back. The worker is generic over it.
pub trait OcrService: Send + Sync {
    fn request_ocr(
        &self,
        message: &WorkMessage,
    ) -> impl Future<Output = Result<Answer<Value>, CloudinaryError>> + Send;
    /// Reads an earlier OCR's result without starting (or paying for) a new one.
    fn fetch_result(
        &self,
        message: &WorkMessage,
    ) -> impl Future<Output = Result<Answer<Value>, CloudinaryError>> + Send;
}

impl OcrService for CloudinaryClient {
    async fn request_ocr(&self, m: &WorkMessage) -> Result<Answer<Value>, CloudinaryError> {
        CloudinaryClient::request_ocr(self, &m.public_id, &m.resource_type, &m.delivery_type).await
    }
    async fn fetch_result(&self, m: &WorkMessage) -> Result<Answer<Value>, CloudinaryError> {
        self.get_resource(&m.public_id, &m.resource_type, &m.delivery_type)
            .await
    }
}

/// One SQS record, as the worker needs it.
#[derive(Debug, Clone)]
pub struct InboundRecord {
    pub message_id: String,
    pub body: String,
    /// `ApproximateReceiveCount` (1 on the first delivery).
    pub receive_count: u32,
}

/// What became of one message. Every variant but `Retry` means "delete it from the work queue".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// OCR done and stored with this status.
    Stored(Status),
    /// Already complete, or another message in the batch carries the same asset.
    Skipped,
    /// Re-sent with a delay (rate limit, OCR pending, claim held elsewhere): not a failure.
    Deferred { reason: String },
    /// Sent to the dead-letter queue with its reason (and marked `failed` where it has a key).
    DeadLettered { reason: String },
    /// Reported as a batch item failure: SQS redelivers it after the visibility timeout.
    Retry { reason: String },
}

impl Disposition {
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Retry { .. })
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

    pub fn count(&self, pred: impl Fn(&Disposition) -> bool) -> usize {
        self.results.iter().filter(|(_, d)| pred(d)).count()
    }
}

/// A record's deferred message, waiting to be sent with the rest of its batch's.
type DeferralSlot = std::sync::Mutex<Option<(WorkMessage, Duration)>>;

/// One record being processed, and where its deferral (if any) waits.
struct Job<'a> {
    record: &'a InboundRecord,
    slot: DeferralSlot,
}

/// A quota wait this short is waited out in the invocation rather than through the queue.
const SHORT_WAIT: Duration = Duration::from_secs(1);

/// Tuning of the worker.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Records of a batch processed at once.
    pub concurrency: usize,
    /// The work queue's `maxReceiveCount`; a transient failure on this receive is dead-lettered
    /// with its reason.
    pub max_receive_count: u32,
    /// A record is not started with less time than this left before the deadline.
    pub deadline_margin: Duration,
    /// Delay before reading back a pending OCR result.
    pub pending_poll_delay: Duration,
    /// Deferrals for a pending OCR before it is given up as failed.
    pub max_pending_polls: u32,
    /// Worker instances that may run at once (the reserved concurrency): each takes only its
    /// share of the Cloudinary quota that remains, so together they are not refused.
    pub instances: u32,
    /// While the quota is spent, an invocation waits before returning, up to this long before
    /// its deadline.
    pub hold_margin: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 10,
            max_receive_count: 5,
            deadline_margin: Duration::from_secs(25),
            pending_poll_delay: Duration::from_secs(30),
            max_pending_polls: 20,
            instances: 1,
            hold_margin: Duration::from_secs(5),
        }
    }
}

/// The worker: OCR service, result store, work queue (for deferrals) and dead-letter queue.
pub struct Worker<O, S, Q, D> {
    pub ocr: O,
    pub store: S,
    pub queue: Q,
    pub dlq: D,
    pub gate: RateGate,
    pub settings: WorkerSettings,
    /// Cloudinary call latencies since the last batch ended (for metrics).
    latencies: std::sync::Mutex<Vec<u64>>,
}

enum Parsed {
    Ok(WorkMessage),
    Bad(String),
}

impl<O: OcrService, S: ResultStore, Q: WorkQueue, D: DeadLetterQueue> Worker<O, S, Q, D> {
    pub fn new(ocr: O, store: S, queue: Q, dlq: D, settings: WorkerSettings) -> Self {
        Self {
            ocr,
            store,
            queue,
            dlq,
            gate: RateGate::shared_by(settings.instances),
            settings,
            latencies: std::sync::Mutex::default(),
        }
    }

    /// Processes a batch. Never fails as a whole: every record gets a disposition.
    pub async fn process_batch(
        &self,
        records: Vec<InboundRecord>,
        deadline: SystemTime,
    ) -> BatchOutcome {
        let parsed: Vec<Parsed> = records
            .iter()
            .map(|r| match WorkMessage::parse(&r.body) {
                Ok(m) if m.public_id.len() > MAX_KEY_BYTES => Parsed::Bad(format!(
                    "public_id is {} bytes, over DynamoDB's {MAX_KEY_BYTES}-byte key limit",
                    m.public_id.len()
                )),
                Ok(m) => Parsed::Ok(m),
                Err(e) => Parsed::Bad(e.to_string()),
            })
            .collect();

        // One read for the whole batch tells which assets are already paid for.
        let ids: Vec<String> = parsed
            .iter()
            .filter_map(|p| match p {
                Parsed::Ok(m) => Some(m.public_id.clone()),
                Parsed::Bad(_) => None,
            })
            .collect();
        let statuses = match self.store.statuses(&ids).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "batch status read failed; every record of the batch is retried");
                None
            }
        };

        let mut seen = HashSet::new();
        let jobs = records.iter().zip(parsed).map(|(record, parsed)| {
            let first = match &parsed {
                Parsed::Ok(m) => seen.insert((m.public_id.clone(), m.resource_type.clone(), m.delivery_type.clone())),
                Parsed::Bad(_) => true,
            };
            let statuses = &statuses;
            let span = tracing::info_span!("record", message_id = %record.message_id, public_id = tracing::field::Empty);
            async move {
                let job = &Job {
                    record,
                    slot: DeferralSlot::default(),
                };
                let disposition = match parsed {
                    Parsed::Bad(reason) => self.dead_letter(record, &reason, "permanent").await,
                    Parsed::Ok(_) if !first => Disposition::Skipped,
                    Parsed::Ok(message) => {
                        tracing::Span::current().record("public_id", message.public_id.as_str());
                        match statuses {
                            None => Disposition::Retry {
                                reason: "could not read the asset's status".into(),
                            },
                            Some(s) => match s.get(&message.public_id) {
                                Some(st) if st.is_complete() && !message.force => Disposition::Skipped,
                                _ => self.process_one(job, message, deadline).await,
                            },
                        }
                    }
                };
                log_disposition(&disposition);
                let deferral = job.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                (record.message_id.clone(), disposition, deferral)
            }
            .instrument(span)
        });
        let done = futures::stream::iter(jobs)
            .buffered(self.settings.concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        let mut deferred = Vec::new();
        let mut results = Vec::with_capacity(done.len());
        for (index, (message_id, disposition, deferral)) in done.into_iter().enumerate() {
            if let (Some((message, delay)), Disposition::Deferred { .. }) = (deferral, &disposition)
            {
                deferred.push((index, message, delay));
            }
            results.push((message_id, disposition));
        }
        self.send_deferrals(&mut results, deferred).await;
        self.hold_while_quota_is_spent(deadline).await;
        let cloudinary_latency_ms =
            std::mem::take(&mut *self.latencies.lock().unwrap_or_else(|e| e.into_inner()));
        BatchOutcome {
            results,
            cloudinary_latency_ms,
            quota_remaining: self.gate.remaining(),
        }
    }

    async fn process_one(
        &self,
        job: &Job<'_>,
        message: WorkMessage,
        deadline: SystemTime,
    ) -> Disposition {
        let slot = &job.slot;
        let now = SystemTime::now();
        if deadline.duration_since(now).unwrap_or_default() < self.settings.deadline_margin {
            return Disposition::Retry {
                reason: "not started: the invocation's deadline is near".into(),
            };
        }
        // Calls Cloudinary would refuse are not made: the message waits for the reset instead,
        // in the queue; a wait of a moment (a probe call's answer, a reset about to come) is
        // waited out here, which is cheaper than sending the message round again.
        let permit = loop {
            let now = SystemTime::now();
            match self.gate.admit(now) {
                Ok(p) => break p,
                Err(until) => {
                    let wait = until.duration_since(now).unwrap_or_default();
                    let time_left = deadline.duration_since(now).unwrap_or_default();
                    if wait <= SHORT_WAIT && wait + self.settings.deadline_margin < time_left {
                        tokio::time::sleep(
                            wait.clamp(Duration::from_millis(5), Duration::from_millis(50)),
                        )
                        .await;
                        continue;
                    }
                    return self
                        .defer(
                            slot,
                            message,
                            until,
                            "Cloudinary quota exhausted until its reset",
                        )
                        .await;
                }
            }
        };
        let now = SystemTime::now();
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
        let attempts = match self.store.claim(&claim).await {
            Ok(ClaimOutcome::Claimed { attempts }) => attempts,
            Ok(ClaimOutcome::AlreadyComplete(_)) => return Disposition::Skipped,
            Ok(ClaimOutcome::HeldUntil(ms)) => {
                drop(permit);
                let until = crate::clock::from_epoch_ms(ms);
                return self
                    .defer(
                        slot,
                        message,
                        until,
                        "another invocation is processing this asset",
                    )
                    .await;
            }
            Err(e) => {
                return self
                    .store_failure(
                        job,
                        None,
                        &message,
                        &error_chain(&e),
                        e.class(),
                        e.retry_at(),
                    )
                    .await;
            }
        };

        let answer = if message.ocr_requested {
            self.ocr.fetch_result(&message).await
        } else {
            self.ocr.request_ocr(&message).await
        };
        // The permit is given back only once the gate knows what the answer said: in between,
        // another record would be admitted against the old remaining figure.
        let answer = match answer {
            Ok(a) => {
                self.gate.observe(a.quota);
                drop(permit);
                a
            }
            Err(e) => {
                if e.class() == ErrorClass::RateLimited {
                    self.gate.block_until(
                        e.retry_at()
                            .unwrap_or(SystemTime::now() + crate::rate_gate::DEFAULT_BACKOFF),
                    );
                }
                drop(permit);
                tracing::info!(error = %error_chain(&e), class = ?e.class(), "cloudinary call failed");
                return self
                    .store_failure(
                        job,
                        Some((&token, attempts)),
                        &message,
                        &error_chain(&e),
                        e.class(),
                        e.retry_at(),
                    )
                    .await;
            }
        };
        self.latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(answer.latency.as_millis() as u64);
        tracing::debug!(
            latency_ms = answer.latency.as_millis() as u64,
            "cloudinary answered"
        );

        let result = match parse_resource(&answer.value) {
            Ok(r) => r,
            Err(e) => {
                return self
                    .store_failure(
                        job,
                        Some((&token, attempts)),
                        &message,
                        &error_chain(&e),
                        ErrorClass::Permanent,
                        None,
                    )
                    .await;
            }
        };
        match result.outcome {
            OcrOutcome::Pending => {
                if message.deferrals >= self.settings.max_pending_polls {
                    let reason = format!("OCR still pending after {} checks", message.deferrals);
                    return self
                        .store_failure(
                            job,
                            Some((&token, attempts)),
                            &message,
                            &reason,
                            ErrorClass::Permanent,
                            None,
                        )
                        .await;
                }
                self.release(&message, &token, "OCR pending").await;
                let next = WorkMessage {
                    ocr_requested: true,
                    ..message
                };
                self.defer(
                    slot,
                    next,
                    SystemTime::now() + self.settings.pending_poll_delay,
                    "OCR pending",
                )
                .await
            }
            OcrOutcome::Failed { status } => {
                let reason = format!("Cloudinary reports OCR status {status:?}");
                self.store_failure(
                    job,
                    Some((&token, attempts)),
                    &message,
                    &reason,
                    ErrorClass::Permanent,
                    None,
                )
                .await
            }
            outcome @ (OcrOutcome::Text { .. } | OcrOutcome::NoText) => {
                let rec = ResultRecord::from_outcome(
                    &message.public_id,
                    &message.resource_type,
                    &message.delivery_type,
                    outcome,
                    result.asset,
                    attempts,
                    rfc3339(SystemTime::now()),
                );
                if rec.truncated {
                    tracing::warn!(
                        text_bytes = rec.text_bytes,
                        "OCR text over the item limit; stored truncated"
                    );
                }
                match self.store.put_result(&rec, &token).await {
                    Ok(true) => Disposition::Stored(rec.status),
                    // Our claim expired and another invocation took the asset over: it owns the result.
                    Ok(false) => Disposition::Skipped,
                    Err(e) => {
                        // The OCR is paid for; retrying reads it back without paying again.
                        let next = WorkMessage {
                            ocr_requested: true,
                            ..message.clone()
                        };
                        self.release(&message, &token, &error_chain(&e)).await;
                        match e.class() {
                            ErrorClass::Permanent => {
                                self.dead_letter(job.record, &error_chain(&e), "permanent")
                                    .await
                            }
                            _ => {
                                self.defer(
                                    slot,
                                    next,
                                    SystemTime::now() + Duration::from_secs(5),
                                    "result write failed",
                                )
                                .await
                            }
                        }
                    }
                }
            }
        }
    }

    /// Handles a failure by class: permanent (or retries exhausted) → `failed` item + DLQ;
    /// rate limited → deferred; transient → retried by SQS.
    async fn store_failure(
        &self,
        job: &Job<'_>,
        claim: Option<(&str, u32)>,
        message: &WorkMessage,
        reason: &str,
        class: ErrorClass,
        retry_at: Option<SystemTime>,
    ) -> Disposition {
        let (record, slot) = (job.record, &job.slot);
        let exhausted = record.receive_count >= self.settings.max_receive_count;
        match class {
            ErrorClass::RateLimited => {
                if let Some((token, _)) = claim {
                    self.release(message, token, reason).await;
                }
                let until =
                    retry_at.unwrap_or(SystemTime::now() + crate::rate_gate::DEFAULT_BACKOFF);
                self.defer(slot, message.clone(), until, "rate limited by Cloudinary")
                    .await
            }
            ErrorClass::Transient if !exhausted => {
                if let Some((token, _)) = claim {
                    self.release(message, token, reason).await;
                }
                Disposition::Retry {
                    reason: reason.to_string(),
                }
            }
            _ => {
                let kind = if class == ErrorClass::Permanent {
                    "permanent"
                } else {
                    "exhausted"
                };
                let reason = if kind == "exhausted" {
                    format!("gave up after {} receives: {reason}", record.receive_count)
                } else {
                    reason.to_string()
                };
                if let Some((token, attempts)) = claim {
                    let rec = ResultRecord::failed(
                        &message.public_id,
                        &message.resource_type,
                        &message.delivery_type,
                        &reason,
                        attempts,
                        rfc3339(SystemTime::now()),
                    );
                    if let Err(e) = self.store.put_result(&rec, token).await {
                        self.release(message, token, &reason).await;
                        return Disposition::Retry {
                            reason: format!(
                                "{reason}; and recording the failure failed: {}",
                                error_chain(&e)
                            ),
                        };
                    }
                }
                self.dead_letter(record, &reason, kind).await
            }
        }
    }

    async fn dead_letter(&self, record: &InboundRecord, reason: &str, kind: &str) -> Disposition {
        let failed_at = rfc3339(SystemTime::now());
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
                reason: reason.to_string(),
            },
            Err(e) => Disposition::Retry {
                reason: format!("{reason}; and dead-lettering failed: {}", error_chain(&e)),
            },
        }
    }

    async fn release(&self, message: &WorkMessage, token: &str, reason: &str) {
        if let Err(e) = self.store.release(&message.public_id, token, reason).await {
            // The claim then simply expires at the deadline.
            tracing::warn!(error = %error_chain(&e), "could not release the claim");
        }
    }

    /// Sets the message aside to be sent again with a delay: the batch sends every deferral
    /// in `SendMessageBatch` calls once its records are done (see `send_deferrals`).
    async fn defer(
        &self,
        slot: &DeferralSlot,
        message: WorkMessage,
        until: SystemTime,
        reason: &str,
    ) -> Disposition {
        let delay = until
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .clamp(Duration::from_secs(1), crate::queue::MAX_DELAY);
        let next = WorkMessage {
            deferrals: message.deferrals.saturating_add(1),
            ..message
        };
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some((next, delay));
        Disposition::Deferred {
            reason: format!("{reason}; back in {}s", delay.as_secs()),
        }
    }

    /// When this instance may not call Cloudinary for a while (its share of the quota is
    /// spent until the reset), the invocation waits, up to the reset or near its deadline,
    /// before it returns. Returning at once would make the event source hand it the next batch
    /// straight away, only for every message of it to be deferred again: with a backlog that
    /// churns the whole queue through SQS while the quota is closed. A waiting invocation costs
    /// Lambda time, far less than that churn, and holds no messages (they are deferred).
    async fn hold_while_quota_is_spent(&self, deadline: SystemTime) {
        let now = SystemTime::now();
        let Some(until) = self.gate.closed_until(now) else {
            return;
        };
        let latest = deadline
            .checked_sub(self.settings.hold_margin)
            .unwrap_or(now);
        let wait = until.min(latest).duration_since(now).unwrap_or_default();
        if wait > Duration::ZERO {
            tracing::info!(
                wait_ms = wait.as_millis() as u64,
                "quota spent: holding before the next batch"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends the batch's deferred messages, ten per call. A deferral that could not be sent
    /// becomes a retry: the original message is then not deleted and comes back by itself.
    async fn send_deferrals(
        &self,
        results: &mut [(String, Disposition)],
        deferred: Vec<(usize, WorkMessage, Duration)>,
    ) {
        for chunk in deferred.chunks(crate::queue::SEND_BATCH_MAX) {
            let entries: Vec<(WorkMessage, Duration)> =
                chunk.iter().map(|(_, m, d)| (m.clone(), *d)).collect();
            let failures = match self.queue.send_delayed_batch(&entries).await {
                Ok(failures) => failures,
                Err(e) => vec![Some(error_chain(&e)); entries.len()],
            };
            for ((index, _, _), failure) in chunk.iter().zip(failures) {
                if let Some(error) = failure
                    && let Some((message_id, disposition)) = results.get_mut(*index)
                {
                    tracing::warn!(%message_id, %error, "deferring failed; the message is retried");
                    *disposition = Disposition::Retry {
                        reason: format!("deferring failed: {error}"),
                    };
                }
            }
        }
    }
}

fn log_disposition(d: &Disposition) {
    match d {
        Disposition::Stored(status) => tracing::info!(status = status.as_str(), "stored"),
        Disposition::Skipped => tracing::info!("skipped: already complete or duplicate"),
        Disposition::Deferred { reason } => tracing::info!(%reason, "deferred"),
        Disposition::DeadLettered { reason } => tracing::warn!(%reason, "dead-lettered"),
        Disposition::Retry { reason } => tracing::warn!(%reason, "left for retry"),
    }
}

/// Counts of a batch, for logs and summaries.
pub fn tally(outcome: &BatchOutcome) -> HashMap<&'static str, usize> {
    let mut t = HashMap::new();
    for (_, d) in &outcome.results {
        let key = match d {
            Disposition::Stored(Status::Done) => "done",
            Disposition::Stored(Status::NoText) => "no_text",
            Disposition::Stored(Status::Failed) => "failed",
            Disposition::Skipped => "skipped",
            Disposition::Deferred { .. } => "deferred",
            Disposition::DeadLettered { .. } => "dead_lettered",
            Disposition::Retry { .. } => "retry",
        };
        *t.entry(key).or_default() += 1;
    }
    t
}
