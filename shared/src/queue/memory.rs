//! In-memory twin of the work queue: what was sent, with its delay, and which received
//! messages were made visible again, at once or after a delay; faults for whole calls and for single entries of
//! a batch, as SQS reports them.

use std::sync::Mutex;
use std::time::Duration;

use super::{QueueError, WorkQueue};
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
    /// A whole `return_after` call.
    ReturnAfter,
}

/// A message the queue holds, visible after its delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub message: WorkMessage,
    pub delay: Duration,
}

#[derive(Debug, Default)]
pub struct MemoryQueue {
    sent: Mutex<Vec<Sent>>,
    returned: Mutex<Vec<(String, Duration)>>,
    faults: FaultPlan<QueueOp>,
    /// Public ids whose messages are refused as they are (as SQS refuses a body too large).
    refused: Mutex<std::collections::HashSet<String>>,
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

    /// Every message for `public_id` is refused from now on, as SQS refuses a body it cannot
    /// take.
    pub fn refuse(&self, public_id: &str) {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(public_id.to_string());
    }

    /// Everything sent so far, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Takes what was sent (as a consumer receiving it would).
    pub fn take_sent(&self) -> Vec<Sent> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Receipt handles of the messages made visible again at once, in order.
    pub fn returned(&self) -> Vec<String> {
        self.returned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, delay)| delay.is_zero())
            .map(|(handle, _)| handle.clone())
            .collect()
    }

    /// Receipt handles of the messages made visible again after a delay, with it, in order.
    pub fn returned_later(&self) -> Vec<(String, Duration)> {
        self.returned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, delay)| !delay.is_zero())
            .cloned()
            .collect()
    }
}

impl WorkQueue for MemoryQueue {
    /// What was sent and not taken yet.
    async fn depth(&self) -> Result<Option<u64>, QueueError> {
        Ok(Some(
            self.sent.lock().unwrap_or_else(|e| e.into_inner()).len() as u64,
        ))
    }

    async fn enqueue(&self, messages: &[WorkMessage]) -> Result<Vec<super::Refused>, QueueError> {
        if self.faults.call(QueueOp::Enqueue).is_some() {
            return Err(rejected("enqueue"));
        }
        let refusing = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let mut refused = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if refusing.contains(&m.public_id) {
                refused.push((
                    i,
                    "InvalidParameterValue: Message must be shorter than 262144 bytes.".to_string(),
                ));
                continue;
            }
            sent.push(Sent {
                message: m.clone(),
                delay: Duration::ZERO,
            });
        }
        Ok(refused)
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

    async fn return_after(
        &self,
        entries: &[(&str, Duration)],
    ) -> Result<Vec<Option<String>>, QueueError> {
        if self.faults.call(QueueOp::ReturnAfter).is_some() {
            return Err(rejected("ChangeMessageVisibilityBatch"));
        }
        self.returned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(entries.iter().map(|(h, delay)| (h.to_string(), *delay)));
        Ok(vec![None; entries.len()])
    }
}
