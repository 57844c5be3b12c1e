//! The settings the local stack shares with `template.yaml` (read from it by
//! `template::stack_settings`).

use std::time::Duration;

/// Settings shared with `template.yaml`.
#[derive(Debug, Clone)]
pub struct StackSettings {
    /// The worker's timeout; the work queue's visibility timeout is 6 times it.
    pub worker_timeout: Duration,
    pub visibility_timeout: Duration,
    pub max_receive_count: u32,
    pub batch_size: u32,
    /// Concurrent worker invocations on the work queue (its event source's
    /// `MaximumConcurrency`).
    pub worker_concurrency: usize,
    pub dlq_retention: Duration,
    /// The read-back queue's event source: records per batch, the batching window, and
    /// batches at once.
    pub read_back_batch_size: u32,
    pub read_back_window: Duration,
    pub read_back_concurrency: usize,
}
