//! The batch loop: every record of a batch gets exactly one disposition.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tracing::Instrument;

use super::outcome::{BatchOutcome, Disposition, Handled};
use super::{InboundRecord, OcrService, Worker};
use crate::error::error_chain;
use crate::message::WorkMessage;
use crate::queue::{SEND_BATCH_MAX, WorkQueue};
use crate::store::{DeadLetterKind, ItemState, MAX_KEY_BYTES, ResultStore, Status};

/// The batch's one read: the terminal states of its assets, or `None` when it failed.
type States = Option<HashMap<String, ItemState>>;

/// A record's body, read: a message to work on, or why it can never be one.
enum Parsed {
    Ok(WorkMessage),
    Bad(String),
}

fn parse(record: &InboundRecord) -> Parsed {
    match parse_body(&record.body) {
        Ok(m) => Parsed::Ok(m),
        Err(reason) => Parsed::Bad(reason),
    }
}

/// Whether the message names a newer version of the asset than its stored result's.
fn is_newer(message: &WorkMessage, state: &ItemState) -> bool {
    matches!((message.version, state.version), (Some(listed), Some(stored)) if listed > stored)
}

/// Whether a message asks for an OCR of an asset that already has a result: a newer version
/// of it, or a forced re-OCR whose result has not been written since it was asked for (a
/// second delivery of it finds the re-OCR's result, and pays nothing).
fn needs_ocr(message: &WorkMessage, state: &ItemState) -> bool {
    if message.new_version {
        return true;
    }
    match (message.force, message.forced_at, state.ocr_at_ms) {
        (false, _, _) => false,
        (true, Some(asked), Some(written)) => written < asked,
        (true, _, _) => true,
    }
}

/// The message, noting when it names a newer version of a complete asset than its result's
/// (an image uploaded again over its public_id is OCR'd again).
fn with_new_version(message: WorkMessage, state: Option<&ItemState>) -> WorkMessage {
    match state {
        Some(state) if state.status.is_complete() && is_newer(&message, state) => {
            tracing::info!(
                stored = state.version,
                listed = message.version,
                "a new version of the asset: OCR again"
            );
            WorkMessage {
                new_version: true,
                ..message
            }
        }
        _ => message,
    }
}

/// The resource types the worker OCRs.
pub const RESOURCE_TYPES: [&str; 1] = ["image"];
pub use crate::message::DELIVERY_TYPES;

/// A message body as the worker reads it: a message to work on, or why it can never be one.
pub fn parse_body(body: &str) -> Result<WorkMessage, String> {
    let m = WorkMessage::parse(body).map_err(|e| e.to_string())?;
    let key_bytes = m.item_key().len();
    if key_bytes > MAX_KEY_BYTES {
        return Err(format!(
            "the asset's key is {key_bytes} bytes, over DynamoDB's {MAX_KEY_BYTES}-byte key limit"
        ));
    }
    // A `.` or `..` segment would be collapsed by URL resolution (escaped or not), taking an
    // Admin API call, signed with the account's credentials, to another path.
    if crate::message::has_dot_segment(&m.public_id) {
        return Err(format!(
            "public_id {:?} has a \".\" or \"..\" path segment, which would change the API path it is sent to",
            m.public_id
        ));
    }
    if !RESOURCE_TYPES.contains(&m.resource_type.as_str()) {
        return Err(format!(
            "resource_type {:?} is not one the OCR add-on reads ({})",
            m.resource_type,
            RESOURCE_TYPES.join(", ")
        ));
    }
    if !DELIVERY_TYPES.contains(&m.delivery_type.as_str()) {
        return Err(format!(
            "delivery type {:?} is not one of the account's stored types ({})",
            m.delivery_type,
            DELIVERY_TYPES.join(", ")
        ));
    }
    Ok(m)
}

impl<O: OcrService, S: ResultStore, Q: WorkQueue> Worker<O, S, Q> {
    /// Processes a batch. Never fails as a whole: every record gets a disposition.
    pub async fn process_batch(
        &self,
        records: Vec<InboundRecord>,
        deadline: SystemTime,
    ) -> BatchOutcome {
        let parsed: Vec<Parsed> = records.iter().map(parse).collect();
        let states = self.read_states(&parsed).await;
        let handled = self
            .handle_all(&records, parsed, states.as_ref(), deadline)
            .await;
        let credentials_refused = handled.iter().filter(|h| h.credentials_refused).count();
        let cloudinary_latency_ms = handled
            .iter()
            .filter_map(|h| h.latency)
            .map(|l| l.as_millis() as u64)
            .collect();
        let mut results: Vec<(String, Disposition)> = records
            .iter()
            .zip(handled)
            .map(|(r, h)| (r.message_id.clone(), h.disposition))
            .collect();
        // Held before anything is sent: an invocation that dies while it holds leaves its
        // messages to come back by themselves, never sent twice.
        let held = self.hold_while_quota_is_spent(deadline).await;
        self.send_deferrals(&records, &mut results, held).await;
        self.return_failures_early(&records, &results).await;
        BatchOutcome {
            results,
            cloudinary_latency_ms,
            quota_remaining: self.admin_gate.remaining(),
            quota_limit: self.admin_gate.limit(),
            credentials_refused,
        }
    }

    /// Every record to its disposition, in the batch's order. The messages of one asset go one
    /// after another (a later one finds what an earlier one did, and its claim says whether it
    /// still asks for anything: a newer version, a forced re-OCR); assets go side by side.
    async fn handle_all(
        &self,
        records: &[InboundRecord],
        parsed: Vec<Parsed>,
        states: Option<&HashMap<String, ItemState>>,
        deadline: SystemTime,
    ) -> Vec<Handled> {
        let mut lanes: Vec<Vec<(usize, Parsed)>> = Vec::new();
        let mut lane_of: HashMap<String, usize> = HashMap::new();
        for (index, p) in parsed.into_iter().enumerate() {
            let lane = match &p {
                Parsed::Ok(m) => *lane_of.entry(m.item_key()).or_insert(lanes.len()),
                Parsed::Bad(_) => lanes.len(),
            };
            if lane == lanes.len() {
                lanes.push(Vec::new());
            }
            lanes[lane].push((index, p));
        }
        // Read-backs made together wait for every lane running to wait too, or to end (so a
        // lane that ends makes room for the next at once: unordered). A batch
        // of the read-back queue runs whole, so that its read-backs make one call.
        let gathered = lanes
            .iter()
            .flatten()
            .all(|(_, p)| matches!(p, Parsed::Ok(m) if m.gathered));
        let in_flight = if gathered {
            lanes.len().min(super::GATHER_MAX)
        } else {
            self.settings.concurrency.max(1)
        };
        let slots = self.gatherer.slots(lanes.len(), in_flight);
        let slots = &slots;
        let jobs = lanes.into_iter().map(|lane| async move {
            let mut done = Vec::with_capacity(lane.len());
            for (index, p) in lane {
                let record = &records[index];
                let span = tracing::info_span!("record", message_id = %record.message_id, public_id = tracing::field::Empty, delivery_type = tracing::field::Empty);
                let handled = self
                    .handle(record, p, states, deadline)
                    .instrument(span)
                    .await;
                handled.disposition.log();
                done.push((index, handled));
            }
            slots.lane_done();
            done
        });
        let mut handled: Vec<Option<Handled>> = records.iter().map(|_| None).collect();
        let lanes: Vec<Vec<(usize, Handled)>> = futures::stream::iter(jobs)
            .buffer_unordered(in_flight.max(1))
            .collect()
            .await;
        for (index, h) in lanes.into_iter().flatten() {
            handled[index] = Some(h);
        }
        handled
            .into_iter()
            .map(|h| h.expect("every record is in one lane"))
            .collect()
    }

    /// One read for the whole batch tells which assets are already paid for, and which
    /// messages already failed for good; `None` when it failed.
    async fn read_states(&self, parsed: &[Parsed]) -> States {
        let ids: Vec<String> = parsed
            .iter()
            .filter_map(|p| match p {
                Parsed::Ok(m) => Some(m.item_key()),
                Parsed::Bad(_) => None,
            })
            .collect();
        match self.store.states(&ids).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "batch status read failed; every record of the batch is retried");
                None
            }
        }
    }

    async fn handle(
        &self,
        record: &InboundRecord,
        parsed: Parsed,
        states: Option<&HashMap<String, ItemState>>,
        deadline: SystemTime,
    ) -> Handled {
        let message = match parsed {
            // Nothing to mark (no key): a body fails the same way on every receive.
            Parsed::Bad(reason) if record.receive_count > 1 => {
                return Disposition::FailingFast { reason }.into();
            }
            Parsed::Bad(reason) => {
                return Disposition::DeadLettered {
                    kind: DeadLetterKind::Permanent,
                    reason,
                }
                .into();
            }
            Parsed::Ok(message) => message,
        };
        tracing::Span::current().record("public_id", message.public_id.as_str());
        if message.delivery_type != "upload" {
            tracing::Span::current().record("delivery_type", message.delivery_type.as_str());
        }
        let Some(states) = states else {
            return self.unread(record, &message);
        };
        let state = states.get(&message.item_key());
        let message = with_new_version(message, state);
        match state {
            Some(state) if state.status.is_complete() && !needs_ocr(&message, state) => {
                Disposition::Skipped.into()
            }
            Some(state) if state.status == Status::Failed => {
                if let Some(disposition) = self.failing_fast(record, state) {
                    return disposition.into();
                }
                let mine = state.marks_of(&record.message_id);
                // A try after a failure for good (a redriven copy, a listing again) starts its
                // bounded counts over: a redriven read-back of a pending OCR checks again.
                let message = WorkMessage {
                    pending_polls: 0,
                    limit_waits: 0,
                    ..message
                };
                self.process_record(record, message, &mine, deadline).await
            }
            _ => self.process_record(record, message, &[], deadline).await,
        }
    }

    /// The asset's state could not be read: the message comes back (on the last receive it is
    /// sent again, rather than reach the dead-letter queue without a reason).
    fn unread(&self, record: &InboundRecord, message: &WorkMessage) -> Handled {
        let reason = "could not read the asset's status";
        if record.receive_count >= self.settings.max_receive_count {
            return self.send_again(message, reason).into();
        }
        Disposition::Retry {
            reason: reason.into(),
        }
        .into()
    }

    /// A later receive of a message that failed the asset for good fails at once, without a
    /// call, until the redrive policy moves it.
    fn failing_fast(&self, record: &InboundRecord, state: &ItemState) -> Option<Disposition> {
        let mark = state.dead_letters.iter().find(|m| {
            m.holds(
                &record.message_id,
                record.receive_count,
                self.settings.max_receive_count,
                (
                    crate::clock::epoch_ms(self.now()),
                    self.settings.fail_fast_window,
                ),
            )
        })?;
        Some(Disposition::FailingFast {
            reason: format!(
                "failed for good on receive {}: {}",
                mark.receive_count,
                state.error.as_deref().unwrap_or("no reason recorded")
            ),
        })
    }

    /// Makes the messages failed for good visible again at once, so that their receives run
    /// out in moments and the redrive policy moves them; and a failed OCR request's at the
    /// settle time, when its read-back may first pay. When that fails they come back after
    /// the visibility timeout instead, which only takes longer.
    async fn return_failures_early(
        &self,
        records: &[InboundRecord],
        results: &[(String, Disposition)],
    ) {
        let now = self.now();
        // A message received from the read-back queue is returned there (a redrive may put one
        // marked `gathered` on the work queue: that one is returned on the work queue).
        let (gathered, entries): (Vec<_>, Vec<_>) = records
            .iter()
            .zip(results)
            .filter(|(record, _)| !record.receipt_handle.is_empty())
            .filter_map(|(record, (_, d))| {
                let delay = d.returns_at(now)?.duration_since(now).unwrap_or_default();
                Some((record, delay))
            })
            .partition(|(record, _)| record.from_read_back_queue);
        let (entries, gathered) = (handles_of(entries), handles_of(gathered));
        let mut failures = Vec::new();
        for (from_read_back_queue, entries) in [(false, entries), (true, gathered)] {
            if entries.is_empty() {
                continue;
            }
            let answer = if from_read_back_queue {
                self.queue.return_after_from_read_back_queue(&entries).await
            } else {
                self.queue.return_after(&entries).await
            };
            failures.extend(match answer {
                Ok(failures) => failures,
                Err(e) => vec![Some(error_chain(&e)); entries.len()],
            });
        }
        if failures.is_empty() {
            return;
        }
        let failed = failures.iter().flatten().count();
        if let Some(error) = failures.into_iter().flatten().next() {
            tracing::warn!(
                failed,
                %error,
                "could not return failed messages early; they come back after the visibility timeout"
            );
        }
    }

    /// Sends the batch's deferred messages, ten per call. A deferral that could not be sent
    /// becomes a retry: the original message is then not deleted and comes back by itself (on
    /// the last receive it reaches the dead-letter queue: its item notes why).
    async fn send_deferrals(
        &self,
        records: &[InboundRecord],
        results: &mut [(String, Disposition)],
        held: Duration,
    ) {
        let (indexes, entries): (Vec<usize>, Vec<(WorkMessage, Duration)>) = results
            .iter()
            .enumerate()
            .filter_map(|(index, (_, d))| match d {
                // Its delay counted from the disposition: the hold since is part of it.
                Disposition::Deferred(deferral) => Some((
                    index,
                    (
                        deferral.message.clone(),
                        deferral.delay.saturating_sub(held),
                    ),
                )),
                _ => None,
            })
            .unzip();
        for (indexes, entries) in indexes
            .chunks(SEND_BATCH_MAX)
            .zip(entries.chunks(SEND_BATCH_MAX))
        {
            let failures = match self.queue.send_delayed_batch(entries).await {
                Ok(failures) => failures,
                Err(e) => vec![Some(error_chain(&e)); entries.len()],
            };
            for ((index, failure), (message, _)) in indexes.iter().zip(failures).zip(entries) {
                let Some(error) = failure else { continue };
                let reason = format!("deferring failed: {error}");
                tracing::warn!(message_id = %results[*index].0, %error, "deferring failed; the message is retried");
                if records[*index].receive_count >= self.settings.max_receive_count {
                    self.note_error(&message.item_key(), &reason).await;
                }
                results[*index].1 = Disposition::Retry { reason };
            }
        }
    }

    /// When this instance may not call Cloudinary for a while (the quota, as far as its gate
    /// knows, is spent until the reset), the invocation waits, up to the reset or near its deadline,
    /// before it returns. Returning at once would make the event source hand it the next batch
    /// straight away, only for every message of it to be deferred again: with a backlog that
    /// churns the whole queue through SQS while the quota is closed. A waiting invocation costs
    /// Lambda time, far less than that churn, and holds no messages (they are deferred).
    async fn hold_while_quota_is_spent(&self, deadline: SystemTime) -> Duration {
        let now = self.now();
        let Some(until) = self.gate(self.ocr.request_api()).closed_until(now) else {
            return Duration::ZERO;
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
        wait
    }
}

/// The receipt handles of records, each with its delay.
fn handles_of(list: Vec<(&InboundRecord, Duration)>) -> Vec<(&str, Duration)> {
    list.into_iter()
        .map(|(r, delay)| (r.receipt_handle.as_str(), delay))
        .collect()
}
