//! The work queue and the dead-letter queue: the ports, what a dead letter carries, and the
//! adapters (SQS, and in-memory twins for tests).

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

/// How a message came to be dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterKind {
    /// It can never succeed as it is (malformed, asset gone, refused): failed at once.
    Permanent,
    /// A transient failure on the last receive the work queue allows: retries used up.
    Exhausted,
}

impl DeadLetterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::Exhausted => "exhausted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "permanent" => Some(Self::Permanent),
            "exhausted" => Some(Self::Exhausted),
            _ => None,
        }
    }
}

/// Why a message was dead-lettered; travels as message attributes beside the unchanged body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter<'a> {
    pub body: &'a str,
    pub reason: &'a str,
    pub kind: DeadLetterKind,
    pub source_message_id: &'a str,
    pub receive_count: u32,
    pub failed_at: &'a str,
}

/// Attribute names on dead-lettered messages.
pub const ATTR_REASON: &str = "failure_reason";
pub const ATTR_KIND: &str = "failure_kind";
pub const ATTR_SOURCE_ID: &str = "source_message_id";
pub const ATTR_RECEIVE_COUNT: &str = "receive_count";
pub const ATTR_FAILED_AT: &str = "failed_at";

pub trait WorkQueue: Send + Sync {
    /// Sends every message, 10 per call, retrying the entries a batch result reports as failed.
    fn enqueue(
        &self,
        messages: &[WorkMessage],
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
    /// Sends up to 10 messages in one call, each visible after its delay (at most 15 minutes).
    /// Returns, per entry, why it was not sent (`None`: sent).
    fn send_delayed_batch(
        &self,
        entries: &[(WorkMessage, Duration)],
    ) -> impl Future<Output = Result<Vec<Option<String>>, QueueError>> + Send;
}

pub trait DeadLetterQueue: Send + Sync {
    fn dead_letter(
        &self,
        letter: &DeadLetter<'_>,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Approximate message counts of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueDepth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

impl QueueDepth {
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}
