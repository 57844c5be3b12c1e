//! The pipeline's defaults, in one place: the configuration falls back to them, the local
//! runner uses them, and the template test checks that `template.yaml` says the same.

use std::time::Duration;

/// Records of one batch processed at once: a whole batch (the event source's `BatchSize`),
/// so that it takes one round of Cloudinary calls.
pub const RECORDS_IN_FLIGHT: usize = 50;
/// Records per worker invocation (the event source's `BatchSize`). An invocation lasts as long
/// as its slowest answer, so a larger batch shares that wait among more images: `make sim`
/// puts the worker's Lambda time at 0.070 GB-s per image with 10, 0.040 with 25 and 0.027 with
/// 50, where 50 invocations also keep pace with the listing (README, "How long a whole
/// account takes").
pub const BATCH_SIZE: u32 = 50;
/// Receives of one message before SQS moves it to the dead-letter queue (`maxReceiveCount`).
pub const MAX_RECEIVE_COUNT: u32 = 5;
/// Assets per listing call (Cloudinary's maximum).
pub const PAGE_SIZE: u32 = 500;
/// Cloudinary's largest page.
pub const MAX_PAGE_SIZE: u32 = 500;
/// How long one Cloudinary call may take: as long as Cloudinary's own SDKs wait, so that an OCR
/// that takes a while is answered rather than given up on (it is billed either way).
pub const CLOUDINARY_TIMEOUT: Duration = Duration::from_secs(60);
/// One attempt of a DynamoDB, SQS or Secrets Manager call from a function: their answers
/// take milliseconds, so an attempt this long is a hung connection, retried.
pub const AWS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole AWS call with its retries (the SDK's standard mode, three attempts with backoff).
pub const AWS_OPERATION_TIMEOUT: Duration = Duration::from_secs(20);
/// The worker function's timeout (`WorkerTimeout` in the template): a record started with the
/// Cloudinary timeout and the slack left still ends, with a read-back after a timeout.
pub const WORKER_TIMEOUT: Duration = Duration::from_secs(150);
/// The work queue's visibility timeout: six times the worker's timeout, as AWS advises for
/// SQS event sources.
pub const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(6 * 150);
/// A message failed for good fails fast on the receives it has left, which come within this
/// long of its failure (each returned at once, or after a visibility timeout at worst); a
/// receive of its id later is a copy an operator redrove.
pub const FAIL_FAST_WINDOW: Duration = Duration::from_secs(MAX_RECEIVE_COUNT as u64 * 6 * 150);
/// A worker record is not started with less than the Cloudinary timeout plus this left.
pub const WORKER_DEADLINE_SLACK: Duration = Duration::from_secs(5);
/// No listing page is started with less time than this left.
pub const LISTER_DEADLINE_MARGIN: Duration = Duration::from_secs(20);
/// A lister run's lease on the checkpoint outlasts its deadline by this much: Lambda ends the
/// run at its deadline, and this covers the clocks of two hosts disagreeing. A run killed
/// with its lease held blocks the next ones no longer than this past its deadline.
pub const LISTER_LEASE_MARGIN: Duration = Duration::from_secs(10);
/// Delay before a pending OCR result is read back.
pub const PENDING_POLL_DELAY: Duration = Duration::from_secs(30);
/// Read-backs of a pending OCR before it is given up as failed.
pub const MAX_PENDING_POLLS: u32 = 20;
/// A Cloudinary limit whose reset is further away than this is not the hourly quota.
pub const LONG_LIMIT: Duration = Duration::from_secs(3600);
/// How long a refusal is taken to last when the hourly quota cannot explain it (its headers
/// still report calls left) and it names no longer reset of its own: beyond the hour, so that
/// its waits are bounded.
pub const OTHER_LIMIT_WAIT: Duration = Duration::from_secs(24 * 3600);
/// Waits on a limit that does not reset within the hour before the asset is failed for good.
pub const MAX_LIMIT_WAITS: u32 = 4;
/// While the quota is spent, an invocation waits before returning, up to this long before
/// its deadline.
pub const HOLD_MARGIN: Duration = Duration::from_secs(5);
/// An incremental pass starts this long before the previous pass started.
pub const INCREMENTAL_OVERLAP: Duration = Duration::from_secs(3600);
/// A new pass starts this long after the previous one started (the schedule only wakes the
/// lister, which continues a pass in progress at every run).
pub const PASS_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// A full pass at least this often, to catch what a lagging Search index missed.
pub const FULL_PASS_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Attempts per listing call on transient errors.
pub const LISTING_ATTEMPTS: u32 = 4;
/// An OCR request whose answer never came (a timeout, a 5xx, a killed invocation) may still
/// arrive, run and be billed after its caller gave up; a read-back sees it only then. So a
/// read-back that finds no OCR pays again only this long after the claim of the attempt that
/// sent it (which sent it before its invocation's end, at most the worker's timeout later).
/// It is [`request_settle`] of the template's queue and worker.
pub const REQUEST_SETTLE: Duration = request_settle(VISIBILITY_TIMEOUT, WORKER_TIMEOUT);

/// The settle time of a stack whose work queue has this visibility timeout and whose worker
/// this timeout: the one less the other, so that a message SQS returns after an attempt does
/// not wait for it (while the batching window is under a minute); a duplicate delivery or a
/// listing again soon after does.
pub const fn request_settle(visibility_timeout: Duration, worker_timeout: Duration) -> Duration {
    visibility_timeout.saturating_sub(worker_timeout)
}
/// A result write that failed after a paid OCR is tried again this much later.
pub const RESULT_WRITE_RETRY: Duration = Duration::from_secs(5);
/// A message whose Cloudinary credentials were refused waits this long at first, doubling on
/// each refusal up to SQS's longest delay: an operator fixing the secret is not waited on long,
/// and a secret left wrong costs a few receives an hour.
pub const CREDENTIALS_WAIT: Duration = Duration::from_secs(60);
/// A message whose asset's state could not be read or written (DynamoDB or SQS failing) on the
/// last receive the work queue allows is sent again after this long, rather than left to reach
/// the dead-letter queue without a reason.
pub const AWS_RETRY_DELAY: Duration = Duration::from_secs(30);
