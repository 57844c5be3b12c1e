//! The worker's unit tier: the use case against the in-memory twins, in paused tokio time.
//! - [`dispositions`]: tables over every disposition, every error class, first and last
//!   receive, and the paths of a failure for good;
//! - [`quota`]: Cloudinary's limits and the gates that keep calls within them;
//! - [`money`]: the paths that need a sequence to show an OCR is paid once (a lost claim, a
//!   paid OCR whose write failed, a timeout after billing, ...);
//! - [`defects`]: each defect an adversarial review found, as it was found;
//! - [`adversarial`]: seeded searches over interleavings, faults and redrives, with the
//!   invariants checked after every run.

mod adversarial;
mod budget;
mod defects;
mod dispositions;
mod gather;
mod money;
mod quota;

use std::time::{Duration, SystemTime};

use super::memory::{OcrCall, Scripted, ScriptedOcr};
use super::*;
use crate::clock::{Clock, from_epoch_ms};
use crate::error::ErrorClass;
use crate::ocr::OcrOutcome;
use crate::queue::memory::{MemoryQueue, QueueOp};
use crate::rate_gate::Quota;
use crate::store::memory::{MemoryResultStore, StoreOp};
use crate::store::{DeadLetterKind, DeadLetterMark, ResultRecord, Status};

type TestWorker = Worker<ScriptedOcr, MemoryResultStore, MemoryQueue>;

const MAX_RECEIVES: u32 = 5;

const FIRST: u32 = 1;

const LAST: u32 = MAX_RECEIVES;

const ORIGIN_MS: u64 = 1_800_000_000_000;

fn settings() -> WorkerSettings {
    WorkerSettings {
        max_receive_count: MAX_RECEIVES,
        deadline_margin: Duration::from_secs(25),
        pending_poll_delay: Duration::from_secs(30),
        max_pending_polls: 3,
        clock: Clock::tokio(from_epoch_ms(ORIGIN_MS)),
        ..WorkerSettings::default()
    }
}

fn worker_with(ocr: ScriptedOcr, settings: WorkerSettings) -> TestWorker {
    Worker::new(ocr, MemoryResultStore::new(), MemoryQueue::new(), settings)
}

fn worker(ocr: ScriptedOcr) -> TestWorker {
    worker_with(ocr, settings())
}

fn body(public_id: &str) -> String {
    WorkMessage::new(public_id, "image", "upload").to_body()
}

fn record(message_id: &str, body: String, receive_count: u32) -> InboundRecord {
    InboundRecord {
        message_id: message_id.into(),
        body,
        receive_count,
        receipt_handle: format!("rh-{message_id}"),
        from_read_back_queue: false,
    }
}

/// A failure for good of `public_id`'s message `m1` on receive `receive`: the item says why
/// and which message, and the message was made visible again at once for the redrive policy.
fn assert_failed_for_good(
    w: &TestWorker,
    case: &str,
    reason: &str,
    kind: DeadLetterKind,
    receive: u32,
) {
    let rec = w
        .store()
        .item("a")
        .and_then(|i| i.record)
        .unwrap_or_else(|| panic!("{case}: the failure is recorded"));
    assert_eq!(rec.status, Status::Failed, "{case}");
    assert_eq!(rec.error.as_deref(), Some(reason), "{case}");
    let item = w.store().item("a").unwrap();
    let marks: Vec<(String, u32)> = item
        .dead_letters
        .into_iter()
        .map(|m: DeadLetterMark| (m.message_id, m.receive_count))
        .collect();
    assert_eq!(marks, [("m1".to_string(), receive)], "{case}");
    assert_eq!(item.failure_kind, Some(kind), "{case}");
    assert_eq!(w.queue().returned(), ["rh-m1"], "{case}: returned at once");
}

fn deadline(w: &TestWorker, left: Duration) -> SystemTime {
    w.settings().clock.now() + left
}

/// One record of `public_id` on receive `receive_count`, with a minute to go.
async fn run_one(w: &TestWorker, public_id: &str, receive_count: u32) -> Disposition {
    let d = deadline(w, Duration::from_secs(60));
    let outcome = w
        .process_batch(vec![record("m1", body(public_id), receive_count)], d)
        .await;
    assert_eq!(outcome.results.len(), 1);
    outcome.results[0].1.clone()
}

/// A disposition's label and, for dead letters, their kind.
type Shape = (&'static str, Option<DeadLetterKind>);

/// The disposition's shape, for tables.
fn shape(d: &Disposition) -> Shape {
    match d {
        Disposition::DeadLettered { kind, .. } => ("dead_lettered", Some(*kind)),
        other => (other.label(), None),
    }
}

fn remote(class: ErrorClass) -> Scripted {
    Scripted::Fail(RemoteError::new(
        class,
        format!("cloudinary said no ({class:?})"),
    ))
}

fn text(t: &str) -> OcrOutcome {
    OcrOutcome::Text {
        text: t.into(),
        locale: Some("en".into()),
    }
}

fn failed_ocr() -> OcrOutcome {
    OcrOutcome::Failed {
        status: "failed".into(),
    }
}

fn timeout() -> RemoteError {
    RemoteError::new(ErrorClass::Transient, "operation timed out")
}

fn refused(w: &TestWorker) -> Scripted {
    Scripted::Fail(RemoteError {
        class: ErrorClass::RateLimited,
        retry_at: Some(w.settings().clock.now() + Duration::from_secs(10)),
        reason: "HTTP 429: Too Many Requests".into(),
        credentials_refused: false,
        not_run: false,
        quota: None,
    })
}
