//! In-memory twins of the work queue and the dead-letter queue: what was sent, with its
//! delay, and what was dead-lettered, with its reason; faults for whole calls and for single
//! entries of a batch, as SQS reports them.

use std::sync::Mutex;
use std::time::Duration;

use super::{DeadLetter, DeadLetterKind, DeadLetterQueue, QueueError, WorkQueue};
use crate::fault::FaultPlan;
use crate::message::WorkMessage;

/// The queue operations a fault can be planned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueOp {
    /// A whole `enqueue` call (the lister's).
    Enqueue,
    /// A whole `send_delayed_batch` call.
    SendDelayed,
    /// One entry of a `send_delayed_batch` call (the call itself succeeds).
    DelayedEntry,
    DeadLetter,
}

/// A message the queue holds, visible after its delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub message: WorkMessage,
    pub delay: Duration,
}

/// A dead letter as the dead-letter queue holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    pub body: String,
    pub reason: String,
    pub kind: DeadLetterKind,
    pub source_message_id: String,
    pub receive_count: u32,
}

#[derive(Debug, Default)]
pub struct MemoryQueue {
    sent: Mutex<Vec<Sent>>,
    letters: Mutex<Vec<Letter>>,
    faults: FaultPlan<QueueOp>,
}

fn rejected(what: &str) -> QueueError {
    QueueError::Rejected {
        queue: "memory".into(),
        count: 1,
        attempts: 1,
        detail: format!("injected fault on {what}"),
    }
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn faults(&self) -> &FaultPlan<QueueOp> {
        &self.faults
    }

    /// Everything sent so far, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Takes what was sent (as a consumer receiving it would).
    pub fn take_sent(&self) -> Vec<Sent> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn letters(&self) -> Vec<Letter> {
        self.letters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl WorkQueue for MemoryQueue {
    async fn enqueue(&self, messages: &[WorkMessage]) -> Result<(), QueueError> {
        if self.faults.call(QueueOp::Enqueue).is_some() {
            return Err(rejected("enqueue"));
        }
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(messages.iter().map(|m| Sent {
                message: m.clone(),
                delay: Duration::ZERO,
            }));
        Ok(())
    }

    async fn send_delayed_batch(
        &self,
        entries: &[(WorkMessage, Duration)],
    ) -> Result<Vec<Option<String>>, QueueError> {
        assert!(entries.len() <= super::SEND_BATCH_MAX);
        if self.faults.call(QueueOp::SendDelayed).is_some() {
            return Err(rejected("SendMessageBatch"));
        }
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        Ok(entries
            .iter()
            .map(|(message, delay)| {
                if self.faults.call(QueueOp::DelayedEntry).is_some() {
                    return Some("InternalError: injected entry fault".to_string());
                }
                sent.push(Sent {
                    message: message.clone(),
                    delay: (*delay).min(super::MAX_DELAY),
                });
                None
            })
            .collect())
    }
}

impl DeadLetterQueue for MemoryQueue {
    async fn dead_letter(&self, letter: &DeadLetter<'_>) -> Result<(), QueueError> {
        if self.faults.call(QueueOp::DeadLetter).is_some() {
            return Err(rejected("SendMessage"));
        }
        self.letters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Letter {
                body: letter.body.to_string(),
                reason: letter.reason.to_string(),
                kind: letter.kind,
                source_message_id: letter.source_message_id.to_string(),
                receive_count: letter.receive_count,
            });
        Ok(())
    }
}
