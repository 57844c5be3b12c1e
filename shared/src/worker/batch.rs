//! The batch loop: every record of a batch gets exactly one disposition.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tracing::Instrument;

use super::outcome::{BatchOutcome, Disposition, Handled};
use super::{InboundRecord, OcrService, Worker};
use crate::error::error_chain;
use crate::message::WorkMessage;
use crate::queue::{SEND_BATCH_MAX, WorkQueue};
use crate::store::{BatchRead, DeadLetterKind, ItemState, MAX_KEY_BYTES, ResultStore, Status};

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
        let mut seen = HashSet::new();
        let jobs = records.iter().zip(parsed).map(|(record, parsed)| {
            // Only the first message of an asset in a batch works on it.
            let first = match &parsed {
                Parsed::Ok(m) => seen.insert((m.item_key(), m.resource_type.clone())),
                Parsed::Bad(_) => true,
            };
            let span = tracing::info_span!("record", message_id = %record.message_id, public_id = tracing::field::Empty, delivery_type = tracing::field::Empty);
            let states = &states;
            async move {
                let handled = self
                    .handle(record, parsed, first, states.as_ref(), deadline)
                    .await;
                handled.disposition.log();
                (record.message_id.clone(), handled)
            }
            .instrument(span)
        });
        let handled: Vec<(String, Handled)> = futures::stream::iter(jobs)
            .buffered(self.settings.concurrency.max(1))
            .collect()
            .await;
        let credentials_refused = handled
            .iter()
            .filter(|(_, h)| h.credentials_refused)
            .count();
        let cloudinary_latency_ms = handled
            .iter()
            .filter_map(|(_, h)| h.latency)
            .map(|l| l.as_millis() as u64)
            .collect();
        let mut results: Vec<(String, Disposition)> = handled
            .into_iter()
            .map(|(id, h)| (id, h.disposition))
            .collect();
        self.send_deferrals(&mut results).await;
        self.return_failed_for_good(&records, &results).await;
        self.hold_while_quota_is_spent(deadline).await;
        BatchOutcome {
            results,
            cloudinary_latency_ms,
            quota_remaining: self.admin_gate.remaining(),
            quota_limit: self.admin_gate.limit(),
            credentials_refused,
        }
    }

    /// One read for the whole batch tells which assets are already paid for, and which
    /// messages already failed for good; `None` when it failed (every record of the batch is
    /// then retried).
    async fn read_states(&self, parsed: &[Parsed]) -> Option<BatchRead> {
        let ids: Vec<String> = parsed
            .iter()
            .filter_map(|p| match p {
                Parsed::Ok(m) => Some(m.item_key()),
                Parsed::Bad(_) => None,
            })
            .collect();
        match self.store.read_batch(&ids).await {
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
        first: bool,
        read: Option<&BatchRead>,
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
            Parsed::Ok(_) if !first => return Disposition::Skipped.into(),
            Parsed::Ok(message) => message,
        };
        tracing::Span::current().record("public_id", message.public_id.as_str());
        if message.delivery_type != "upload" {
            tracing::Span::current().record("delivery_type", message.delivery_type.as_str());
        }
        let Some(read) = read else {
            return Disposition::Retry {
                reason: "could not read the asset's status".into(),
            }
            .into();
        };
        let key = message.item_key();
        let state = read.states.get(&key);
        let seen = read.seen.get(&key).copied();
        // An image uploaded again over its public_id (a newer version) is OCR'd again.
        let message = match state {
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
        };
        match state {
            Some(state) if state.status.is_complete() && !needs_ocr(&message, state) => {
                Disposition::Skipped.into()
            }
            Some(ItemState {
                status: Status::Failed,
                dead_letter: Some(mark),
                error,
                ..
            }) if mark.holds(
                &record.message_id,
                record.receive_count,
                self.settings.max_receive_count,
            ) =>
            {
                Disposition::FailingFast {
                    reason: format!(
                        "failed for good on receive {}: {}",
                        mark.receive_count,
                        error.as_deref().unwrap_or("no reason recorded")
                    ),
                }
                .into()
            }
            _ => self.process_record(record, message, seen, deadline).await,
        }
    }

    /// Makes the messages failed for good visible again at once, so that their receives run
    /// out in moments and the redrive policy moves them. When that fails they come back after
    /// the visibility timeout instead, which only takes longer.
    async fn return_failed_for_good(
        &self,
        records: &[InboundRecord],
        results: &[(String, Disposition)],
    ) {
        let handles: Vec<&str> = records
            .iter()
            .zip(results)
            .filter(|(record, (_, d))| d.returns_now() && !record.receipt_handle.is_empty())
            .map(|(record, _)| record.receipt_handle.as_str())
            .collect();
        if handles.is_empty() {
            return;
        }
        let failures = match self.queue.return_now(&handles).await {
            Ok(failures) => failures,
            Err(e) => vec![Some(error_chain(&e)); handles.len()],
        };
        let failed = failures.iter().flatten().count();
        if let Some(error) = failures.into_iter().flatten().next() {
            tracing::warn!(
                failed,
                %error,
                "could not return failed messages at once; they come back after the visibility timeout"
            );
        }
    }

    /// Sends the batch's deferred messages, ten per call. A deferral that could not be sent
    /// becomes a retry: the original message is then not deleted and comes back by itself.
    async fn send_deferrals(&self, results: &mut [(String, Disposition)]) {
        let (indexes, entries): (Vec<usize>, Vec<(WorkMessage, Duration)>) = results
            .iter()
            .enumerate()
            .filter_map(|(index, (_, d))| match d {
                Disposition::Deferred(deferral) => {
                    Some((index, (deferral.message.clone(), deferral.delay)))
                }
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
            for (index, failure) in indexes.iter().zip(failures) {
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

    /// When this instance may not call Cloudinary for a while (its share of the quota is
    /// spent until the reset), the invocation waits, up to the reset or near its deadline,
    /// before it returns. Returning at once would make the event source hand it the next batch
    /// straight away, only for every message of it to be deferred again: with a backlog that
    /// churns the whole queue through SQS while the quota is closed. A waiting invocation costs
    /// Lambda time, far less than that churn, and holds no messages (they are deferred).
    async fn hold_while_quota_is_spent(&self, deadline: SystemTime) {
        let now = self.now();
        let Some(until) = self.gate(self.ocr.request_api()).closed_until(now) else {
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
}
