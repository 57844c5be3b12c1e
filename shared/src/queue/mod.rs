//! The work queue: the port and its adapters (SQS, and an in-memory twin for tests). Messages
//! reach the dead-letter queue only through the work queue's redrive policy.

#[cfg(any(test, feature = "memory"))]
pub mod memory;
pub mod sqs;

use std::future::Future;
use std::time::Duration;

use crate::error::{Classified, ErrorClass};
use crate::message::WorkMessage;

pub use sqs::{MoveReport, SqsQueue, move_messages, queue_depth};

/// SQS's per-call batch limit.
pub const SEND_BATCH_MAX: usize = 10;
/// SQS's longest message delay.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("SQS {operation} on {queue} failed ({code})")]
    Sdk {
        operation: &'static str,
        queue: String,
        code: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("SQS rejected {count} message(s) on {queue} after {attempts} attempts: {detail}")]
    Rejected {
        queue: String,
        count: usize,
        attempts: u32,
        detail: String,
    },
}

impl Classified for QueueError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

/// A message the queue refused as it is (too large, say): resending it cannot help. By its
/// index among the messages sent, with SQS's reason.
pub type Refused = (usize, String);

pub trait WorkQueue: Send + Sync {
    /// Sends every message, 10 per call, retrying the entries a batch result reports as failed.
    /// Returns the messages refused as they are; `Err` when others could not be sent.
    fn enqueue(
        &self,
        messages: &[WorkMessage],
    ) -> impl Future<Output = Result<Vec<Refused>, QueueError>> + Send;
    /// Sends up to 10 messages in one call, each visible after its delay (at most 15 minutes).
    /// Returns, per entry, why it was not sent (`None`: sent).
    fn send_delayed_batch(
        &self,
        entries: &[(WorkMessage, Duration)],
    ) -> impl Future<Output = Result<Vec<Option<String>>, QueueError>> + Send;
    /// Makes received messages visible again after their delays (a new visibility timeout,
    /// counted from now), 10 per call. Returns, per entry, why it was not.
    fn return_after(
        &self,
        entries: &[(&str, Duration)],
    ) -> impl Future<Output = Result<Vec<Option<String>>, QueueError>> + Send;
    /// Makes received messages visible again at once (a visibility timeout of zero), so that
    /// the next receive finds them. Returns, per handle, why it was not.
    fn return_now(
        &self,
        receipt_handles: &[&str],
    ) -> impl Future<Output = Result<Vec<Option<String>>, QueueError>> + Send {
        let entries: Vec<(&str, Duration)> = receipt_handles
            .iter()
            .map(|handle| (*handle, Duration::ZERO))
            .collect();
        async move { self.return_after(&entries).await }
    }
    /// [`WorkQueue::return_after`] for messages received from the read-back queue: the same
    /// queue where there is no other.
    fn return_after_from_read_back_queue(
        &self,
        entries: &[(&str, Duration)],
    ) -> impl Future<Output = Result<Vec<Option<String>>, QueueError>> + Send {
        self.return_after(entries)
    }
    /// Whether the queue of this ARN (an SQS record's `eventSourceARN`) is the read-back
    /// queue; never where there is no other.
    fn is_read_back_queue(&self, _arn: &str) -> bool {
        false
    }
    /// About how many messages the queue holds (visible, in flight and delayed); `None` when
    /// the queue cannot say.
    fn depth(&self) -> impl Future<Output = Result<Option<u64>, QueueError>> + Send {
        async { Ok(None) }
    }
}

/// One queue shared by several workers (instances of a simulation, say).
impl<T: WorkQueue> WorkQueue for std::sync::Arc<T> {
    fn enqueue(
        &self,
        messages: &[WorkMessage],
    ) -> impl Future<Output = Result<Vec<Refused>, QueueError>> + Send {
        (**self).enqueue(messages)
    }
    fn send_delayed_batch(
        &self,
        entries: &[(WorkMessage, Duration)],
    ) -> impl Future<Output = Result<Vec<Option<String>>, QueueError>> + Send {
        (**self).send_delayed_batch(entries)
    }
    fn return_after(
        &self,
        entries: &[(&str, Duration)],
    ) -> impl Future<Output = Result<Vec<Option<String>>, QueueError>> + Send {
        (**self).return_after(entries)
    }
    fn return_after_from_read_back_queue(
        &self,
        entries: &[(&str, Duration)],
    ) -> impl Future<Output = Result<Vec<Option<String>>, QueueError>> + Send {
        (**self).return_after_from_read_back_queue(entries)
    }
    fn is_read_back_queue(&self, arn: &str) -> bool {
        (**self).is_read_back_queue(arn)
    }
    fn depth(&self) -> impl Future<Output = Result<Option<u64>, QueueError>> + Send {
        (**self).depth()
    }
}

/// Approximate message counts of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueDepth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

/// Two queues' counts together (the work queue's and the read-back queue's, say).
impl std::ops::AddAssign for QueueDepth {
    fn add_assign(&mut self, other: Self) {
        self.visible += other.visible;
        self.in_flight += other.in_flight;
        self.delayed += other.delayed;
    }
}

impl QueueDepth {
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}
