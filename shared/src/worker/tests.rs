//! The worker's unit tier: the use case against the in-memory twins, in paused tokio time.
//! Tables cover every disposition, every error class, first and last receive; the named tests
//! cover the paths that need a sequence (a lost claim, a paid OCR whose write failed, ...).

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
    let mark = DeadLetterMark {
        message_id: "m1".into(),
        receive_count: receive,
        kind,
    };
    assert_eq!(rec.dead_letter, Some(mark), "{case}");
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

#[tokio::test(start_paused = true)]
async fn every_ocr_outcome_on_first_and_last_receive() {
    use Disposition as D;
    let table: Vec<(OcrOutcome, u32, Shape, Option<Status>)> = vec![
        (text("hello"), FIRST, ("done", None), Some(Status::Done)),
        (text("hello"), LAST, ("done", None), Some(Status::Done)),
        (
            OcrOutcome::NoText,
            FIRST,
            ("no_text", None),
            Some(Status::NoText),
        ),
        (
            OcrOutcome::NoText,
            LAST,
            ("no_text", None),
            Some(Status::NoText),
        ),
        (OcrOutcome::Pending, FIRST, ("deferred", None), None),
        (OcrOutcome::Pending, LAST, ("deferred", None), None),
        (
            failed_ocr(),
            FIRST,
            ("dead_lettered", Some(DeadLetterKind::Permanent)),
            Some(Status::Failed),
        ),
        (
            failed_ocr(),
            LAST,
            ("dead_lettered", Some(DeadLetterKind::Permanent)),
            Some(Status::Failed),
        ),
    ];
    for (outcome, receive, expected, status) in table {
        let ocr = ScriptedOcr::new();
        ocr.script(OcrCall::Request, "a", [Scripted::Answer(outcome.clone())]);
        let w = worker(ocr);
        let d = run_one(&w, "a", receive).await;
        let case = format!("{outcome:?} on receive {receive}");
        assert_eq!(shape(&d), expected, "{case}: {d:?}");
        assert_eq!(w.store().status("a"), status, "{case}");
        assert_eq!(w.ocr().calls(OcrCall::Request, "a"), 1, "{case}: paid once");
        let item = w.store().item("a").expect("an item");
        assert_eq!(item.claim, None, "{case}: no claim is left behind");
        match &d {
            D::Deferred(deferral) => {
                assert!(
                    deferral.message.ocr_requested,
                    "{case}: read back, never paid again"
                );
                assert_eq!(deferral.delay, Duration::from_secs(30), "{case}");
                assert_eq!(w.queue().sent().len(), 1, "{case}: sent again");
            }
            D::DeadLettered { reason, kind } => {
                assert_failed_for_good(&w, &case, reason, *kind, receive);
                assert!(reason.contains("\"failed\""), "{case}: {reason}");
            }
            D::Stored(Status::Done) => {
                let rec = item.record.expect("a record");
                assert_eq!(rec.text.as_deref(), Some("hello"), "{case}");
            }
            D::Stored(_) | D::Skipped | D::Retry { .. } | D::FailingFast { .. } => {}
        }
        if !matches!(d, D::Deferred(_)) {
            assert!(w.queue().sent().is_empty(), "{case}: nothing sent again");
        }
    }
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

/// A Cloudinary error of every class, on the first and on the last receive.
#[tokio::test(start_paused = true)]
async fn every_cloudinary_error_class_on_first_and_last_receive() {
    let dl = |k| ("dead_lettered", Some(k));
    let table = [
        (ErrorClass::Transient, FIRST, ("retry", None), None),
        (
            ErrorClass::Transient,
            LAST,
            dl(DeadLetterKind::Exhausted),
            Some(Status::Failed),
        ),
        (ErrorClass::RateLimited, FIRST, ("deferred", None), None),
        (ErrorClass::RateLimited, LAST, ("deferred", None), None),
        (
            ErrorClass::Permanent,
            FIRST,
            dl(DeadLetterKind::Permanent),
            Some(Status::Failed),
        ),
        (
            ErrorClass::Permanent,
            LAST,
            dl(DeadLetterKind::Permanent),
            Some(Status::Failed),
        ),
    ];
    for (class, receive, expected, status) in table {
        let ocr = ScriptedOcr::new();
        ocr.script(OcrCall::Request, "a", [remote(class)]);
        let w = worker(ocr);
        let d = run_one(&w, "a", receive).await;
        let case = format!("{class:?} on receive {receive}");
        assert_eq!(shape(&d), expected, "{case}: {d:?}");
        let item = w.store().item("a").expect("the claim made an item");
        assert_eq!(item.status(), status, "{case}");
        assert_eq!(item.claim, None, "{case}: the claim is given up");
        match (&d, expected.1) {
            (Disposition::DeadLettered { reason, .. }, Some(kind)) => {
                assert!(reason.contains("cloudinary said no"), "{case}");
                if kind == DeadLetterKind::Exhausted {
                    assert!(reason.starts_with("gave up after 5 receives"), "{case}");
                }
                assert_failed_for_good(&w, &case, reason, kind, receive);
            }
            _ => assert!(
                w.queue().returned().is_empty(),
                "{case}: left to its timeout"
            ),
        }
        if let Disposition::Deferred(deferral) = &d {
            // Without a reset time, the default backoff; the deferral is not a receive.
            assert_eq!(deferral.delay, crate::rate_gate::DEFAULT_BACKOFF, "{case}");
            assert_eq!(deferral.message.deferrals, 1, "{case}");
            assert_eq!(w.queue().sent()[0].message, deferral.message, "{case}");
        }
    }
}

/// A results-table error of every class the store has, met while claiming.
#[tokio::test(start_paused = true)]
async fn every_store_error_class_while_claiming_on_first_and_last_receive() {
    let table = [
        (ErrorClass::Transient, FIRST, ("retry", None)),
        (
            ErrorClass::Transient,
            LAST,
            ("dead_lettered", Some(DeadLetterKind::Exhausted)),
        ),
        (
            ErrorClass::Permanent,
            FIRST,
            ("dead_lettered", Some(DeadLetterKind::Permanent)),
        ),
        (
            ErrorClass::Permanent,
            LAST,
            ("dead_lettered", Some(DeadLetterKind::Permanent)),
        ),
    ];
    for (class, receive, expected) in table {
        let w = worker(ScriptedOcr::new());
        w.store().faults().fail_next(StoreOp::Claim, class, 1);
        let d = run_one(&w, "a", receive).await;
        let case = format!("{class:?} on receive {receive}");
        assert_eq!(shape(&d), expected, "{case}: {d:?}");
        assert_eq!(
            w.ocr().total_calls(OcrCall::Request),
            0,
            "{case}: nothing paid"
        );
        // Without a claim nothing is marked: the reason is in the log line, and the same
        // failure meets every receive until SQS moves the message.
        assert_eq!(w.store().status("a"), None, "{case}");
        assert_eq!(
            w.queue().returned().len(),
            usize::from(expected.1.is_some()),
            "{case}"
        );
    }
}

/// The plan is a function of the class and the receive alone; every class has one.
#[test]
fn the_failure_plan_covers_every_class() {
    for class in ErrorClass::ALL {
        for receive in [FIRST, LAST - 1, LAST, LAST + 1] {
            let plan = plan_failure(class, receive, MAX_RECEIVES);
            let expected = match class {
                ErrorClass::RateLimited => FailurePlan::Defer,
                ErrorClass::Transient if receive < LAST => FailurePlan::Retry,
                ErrorClass::Transient => FailurePlan::DeadLetter(DeadLetterKind::Exhausted),
                ErrorClass::Permanent => FailurePlan::DeadLetter(DeadLetterKind::Permanent),
            };
            assert_eq!(plan, expected, "{class:?} on receive {receive}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_with_a_reset_time_waits_for_it_and_closes_the_gate() {
    let ocr = ScriptedOcr::new();
    let w0 = settings().clock.now();
    ocr.script(
        OcrCall::Request,
        "a",
        [Scripted::Fail(RemoteError {
            class: ErrorClass::RateLimited,
            retry_at: Some(w0 + Duration::from_secs(120)),
            reason: "HTTP 420".into(),
            credentials_refused: false,
        })],
    );
    let w = worker(ocr);
    let d = w
        .process_batch(
            vec![record("m1", body("a"), 1), record("m2", body("b"), 1)],
            deadline(&w, Duration::from_secs(60)),
        )
        .await;
    let delays: Vec<Duration> = d
        .results
        .iter()
        .map(|(_, d)| match d {
            Disposition::Deferred(x) => x.delay,
            other => panic!("expected deferrals, got {other:?}"),
        })
        .collect();
    // "b" was either admitted before the 420 (then answered) or refused by the closed gate.
    assert_eq!(delays[0], Duration::from_secs(120));
    assert!(w.ocr().calls(OcrCall::Request, "b") <= 1);
    assert_eq!(
        w.queue().sent().len(),
        2,
        "both deferrals sent, in one batch call"
    );
    assert_eq!(w.queue().faults().calls(QueueOp::SendDelayed), 1);
}

#[tokio::test(start_paused = true)]
async fn records_are_not_started_inside_the_deadline_margin() {
    let w = worker(ScriptedOcr::new());
    for left in [Duration::ZERO, Duration::from_secs(24)] {
        let outcome = w
            .process_batch(vec![record("m1", body("a"), 1)], deadline(&w, left))
            .await;
        match &outcome.results[0].1 {
            Disposition::Deferred(d) => {
                assert_eq!(d.cause, DeferCause::Unstarted);
                assert_eq!(d.delay, Duration::from_secs(1), "sent again at once");
                assert!(d.reason.contains("deadline"), "{}", d.reason);
            }
            other => panic!("{left:?} left: {other:?}"),
        }
        assert_eq!(outcome.failed_message_ids().count(), 0, "no receive spent");
    }
    assert_eq!(w.ocr().total_calls(OcrCall::Request), 0);
    assert!(w.store().is_empty(), "not even claimed");
    // With the margin and a moment more, the record runs.
    let d = w
        .process_batch(
            vec![record("m1", body("a"), 1)],
            deadline(&w, Duration::from_secs(26)),
        )
        .await;
    assert_eq!(d.results[0].1, Disposition::Stored(Status::Done));
}

#[tokio::test(start_paused = true)]
async fn duplicates_within_a_batch_pay_once() {
    let w = worker(ScriptedOcr::new().with_latency(Duration::from_millis(200)));
    let outcome = w
        .process_batch(
            vec![
                record("m1", body("a"), 1),
                record("m2", body("a"), 1),
                record("m3", body("b"), 1),
            ],
            deadline(&w, Duration::from_secs(60)),
        )
        .await;
    let labels: Vec<&str> = outcome.results.iter().map(|(_, d)| d.label()).collect();
    assert_eq!(labels, ["done", "skipped", "done"]);
    assert_eq!(w.ocr().calls(OcrCall::Request, "a"), 1);
    assert_eq!(outcome.cloudinary_latency_ms, vec![200, 200]);
}

#[tokio::test(start_paused = true)]
async fn complete_assets_are_skipped_unless_a_re_ocr_is_forced() {
    let w = worker(ScriptedOcr::new());
    w.store().insert(ResultRecord::from_outcome(
        "a",
        "image",
        "upload",
        text("old"),
        Default::default(),
        1,
        "t".into(),
    ));
    assert_eq!(run_one(&w, "a", 1).await, Disposition::Skipped);
    assert_eq!(w.ocr().total_calls(OcrCall::Request), 0);
    let forced = WorkMessage {
        force: true,
        ..WorkMessage::new("a", "image", "upload")
    };
    let outcome = w
        .process_batch(
            vec![record("m2", forced.to_body(), 1)],
            deadline(&w, Duration::from_secs(60)),
        )
        .await;
    assert_eq!(outcome.results[0].1, Disposition::Stored(Status::Done));
    assert_eq!(w.ocr().calls(OcrCall::Request, "a"), 1);
    let rec = w.store().item("a").unwrap().record.unwrap();
    assert_eq!((rec.text.as_deref(), rec.attempts), (Some("text of a"), 2));
}

#[tokio::test(start_paused = true)]
async fn a_claim_held_elsewhere_is_deferred_until_it_expires() {
    let w = worker(ScriptedOcr::new());
    w.store().take_over("a", ORIGIN_MS + 90_000);
    match run_one(&w, "a", 1).await {
        Disposition::Deferred(d) => {
            assert_eq!(d.delay, Duration::from_secs(90));
            assert!(d.reason.contains("another invocation"), "{}", d.reason);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.ocr().total_calls(OcrCall::Request), 0);
}

#[tokio::test(start_paused = true)]
async fn a_lost_claim_leaves_the_result_to_its_new_owner() {
    let w = worker(ScriptedOcr::new().with_latency(Duration::from_secs(2)));
    let (outcome, ()) = tokio::join!(
        w.process_batch(
            vec![record("m1", body("a"), 1)],
            deadline(&w, Duration::from_secs(60))
        ),
        async {
            // While the OCR call is out, the claim expires and another invocation takes it.
            tokio::time::sleep(Duration::from_secs(1)).await;
            w.store().take_over("a", ORIGIN_MS + 600_000);
        }
    );
    assert_eq!(outcome.results[0].1, Disposition::Skipped);
    let item = w.store().item("a").unwrap();
    assert_eq!(
        item.record, None,
        "nothing written over the new owner's claim"
    );
    assert_eq!(item.claim.unwrap().0, "another invocation");
}

#[tokio::test(start_paused = true)]
async fn a_paid_ocr_whose_write_failed_is_read_back_never_paid_again() {
    let w = worker(ScriptedOcr::new());
    w.store()
        .faults()
        .fail_next(StoreOp::PutResult, ErrorClass::Transient, 1);
    let d = run_one(&w, "a", 1).await;
    let Disposition::Deferred(deferral) = d else {
        panic!("{d:?}")
    };
    assert!(deferral.message.ocr_requested);
    assert_eq!(deferral.delay, crate::defaults::RESULT_WRITE_RETRY);
    assert_eq!(w.store().item("a").unwrap().claim, None, "released");

    // The deferred message comes back: the result is read, not requested.
    let sent = w.queue().take_sent();
    let outcome = w
        .process_batch(
            vec![record("m2", sent[0].message.to_body(), 1)],
            deadline(&w, Duration::from_secs(60)),
        )
        .await;
    assert_eq!(outcome.results[0].1, Disposition::Stored(Status::Done));
    assert_eq!(w.ocr().calls(OcrCall::Request, "a"), 1);
    assert_eq!(w.ocr().calls(OcrCall::Fetch, "a"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_result_the_table_refuses_for_good_is_dead_lettered() {
    let w = worker(ScriptedOcr::new());
    w.store()
        .faults()
        .fail_next(StoreOp::PutResult, ErrorClass::Permanent, 1);
    let d = run_one(&w, "a", 1).await;
    assert_eq!(
        shape(&d),
        ("dead_lettered", Some(DeadLetterKind::Permanent))
    );
    let Disposition::DeadLettered { reason, .. } = &d else {
        panic!("{d:?}")
    };
    assert!(reason.contains("ValidationException"), "{reason}");
    assert_failed_for_good(&w, "refused result", reason, DeadLetterKind::Permanent, 1);
    assert_eq!(w.ocr().calls(OcrCall::Request, "a"), 1);
    // Its next receive pays nothing: the mark fails it at once.
    assert!(matches!(
        run_one(&w, "a", 2).await,
        Disposition::FailingFast { .. }
    ));
    assert_eq!(w.ocr().calls(OcrCall::Request, "a"), 1, "paid once");
}

#[tokio::test(start_paused = true)]
async fn failing_to_record_a_failure_leaves_the_message_for_sqs() {
    let ocr = ScriptedOcr::new();
    ocr.script(OcrCall::Request, "a", [remote(ErrorClass::Permanent)]);
    let w = worker(ocr);
    w.store()
        .faults()
        .fail_next(StoreOp::PutResult, ErrorClass::Transient, 1);
    match run_one(&w, "a", 1).await {
        Disposition::Retry { reason } => {
            assert!(reason.contains("recording the failure failed"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        w.queue().returned().is_empty(),
        "not hurried to the dead-letter queue unrecorded"
    );
    assert_eq!(
        w.store().item("a").unwrap().claim,
        None,
        "released for the retry"
    );
}

#[tokio::test(start_paused = true)]
async fn failing_to_return_a_failed_message_leaves_it_to_its_visibility_timeout() {
    let w = worker(ScriptedOcr::new());
    w.queue()
        .faults()
        .fail_next(QueueOp::ReturnNow, ErrorClass::Transient, 1);
    let outcome = w
        .process_batch(
            vec![record("m1", "{not json".into(), 1)],
            deadline(&w, Duration::from_secs(60)),
        )
        .await;
    assert_eq!(
        shape(&outcome.results[0].1),
        ("dead_lettered", Some(DeadLetterKind::Permanent))
    );
    // Still a batch item failure: SQS brings it back later, and moves it in the end.
    assert_eq!(outcome.failed_message_ids().collect::<Vec<_>>(), ["m1"]);
    assert!(w.queue().returned().is_empty());
}

#[tokio::test(start_paused = true)]
async fn bad_messages_are_dead_lettered_with_their_reason_without_a_call() {
    let w = worker(ScriptedOcr::new());
    let long = body(&"k".repeat(crate::store::MAX_KEY_BYTES + 1));
    let bodies = [
        "",
        "{nope",
        r#"{"v":1}"#,
        r#"{"public_id":""}"#,
        r#"{"v":9,"public_id":"x"}"#,
    ];
    let mut records: Vec<InboundRecord> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| record(&format!("m{i}"), b.to_string(), 1))
        .collect();
    records.push(record("long", long, 1));
    let outcome = w
        .process_batch(records, deadline(&w, Duration::from_secs(60)))
        .await;
    let reasons: Vec<&str> = outcome
        .results
        .iter()
        .map(|(id, d)| match d {
            Disposition::DeadLettered {
                kind: DeadLetterKind::Permanent,
                reason,
            } => reason.as_str(),
            other => panic!("{id}: {other:?}"),
        })
        .collect();
    assert!(reasons.iter().all(|r| !r.is_empty()));
    assert!(reasons[5].contains("key limit"), "{}", reasons[5]);
    assert_eq!(outcome.failed_message_ids().count(), 6);
    assert_eq!(w.queue().returned().len(), 6, "all returned at once");
    assert_eq!(w.ocr().total_calls(OcrCall::Request), 0);
    // A later receive fails the same way, at once.
    let again = w
        .process_batch(
            vec![record("m1", "{nope".into(), 2)],
            deadline(&w, Duration::from_secs(60)),
        )
        .await;
    assert!(matches!(
        again.results[0].1,
        Disposition::FailingFast { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_failed_status_read_retries_the_whole_batch_without_a_call() {
    let w = worker(ScriptedOcr::new());
    w.store()
        .faults()
        .fail_next(StoreOp::States, ErrorClass::Transient, 1);
    let outcome = w
        .process_batch(
            vec![record("m1", body("a"), 1), record("m2", body("b"), 1)],
            deadline(&w, Duration::from_secs(60)),
        )
        .await;
    assert_eq!(outcome.failed_message_ids().count(), 2);
    assert_eq!(w.ocr().total_calls(OcrCall::Request), 0);
}

#[tokio::test(start_paused = true)]
async fn deferrals_that_cannot_be_sent_become_retries() {
    let ocr = ScriptedOcr::new();
    for id in ["a", "b", "c"] {
        let pending = Scripted::Answer(OcrOutcome::Pending);
        ocr.script(OcrCall::Request, id, [pending.clone()]);
        // The second batch reads the pending OCR back: never paid for twice.
        ocr.script(OcrCall::Fetch, id, [pending]);
    }
    let w = worker(ocr);
    // One entry of the batch call fails: only that message is retried.
    w.queue()
        .faults()
        .fail_next(QueueOp::DelayedEntry, ErrorClass::Transient, 1);
    let records = || {
        vec![
            record("m1", body("a"), 1),
            record("m2", body("b"), 1),
            record("m3", body("c"), 1),
        ]
    };
    let outcome = w
        .process_batch(records(), deadline(&w, Duration::from_secs(60)))
        .await;
    let labels: Vec<&str> = outcome.results.iter().map(|(_, d)| d.label()).collect();
    assert_eq!(labels, ["retry", "deferred", "deferred"]);
    assert_eq!(w.queue().sent().len(), 2);

    // The whole call fails: every deferral is retried.
    w.queue()
        .faults()
        .fail_next(QueueOp::SendDelayed, ErrorClass::Transient, 1);
    let outcome = w
        .process_batch(records(), deadline(&w, Duration::from_secs(60)))
        .await;
    assert_eq!(outcome.failed_message_ids().count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_pending_ocr_is_read_back_until_done_then_given_up() {
    let ocr = ScriptedOcr::new();
    ocr.script(
        OcrCall::Request,
        "a",
        [Scripted::Answer(OcrOutcome::Pending)],
    );
    ocr.script(OcrCall::Fetch, "a", [Scripted::Answer(OcrOutcome::Pending)]);
    let w = worker(ocr);
    let mut message = body("a");
    let mut last = Disposition::Skipped;
    for _ in 0..3 {
        let outcome = w
            .process_batch(
                vec![record("m", message.clone(), 1)],
                deadline(&w, Duration::from_secs(60)),
            )
            .await;
        last = outcome.results[0].1.clone();
        match &last {
            Disposition::Deferred(d) => message = d.message.to_body(),
            _ => break,
        }
    }
    assert_eq!(last, Disposition::Stored(Status::Done));
    assert_eq!(w.ocr().calls(OcrCall::Request, "a"), 1);
    assert_eq!(w.ocr().calls(OcrCall::Fetch, "a"), 2);

    // Still pending after the allowed checks: failed for good.
    let ocr = ScriptedOcr::new();
    ocr.script(OcrCall::Fetch, "b", [Scripted::Answer(OcrOutcome::Pending)]);
    let w = worker(ocr);
    let tired = WorkMessage {
        ocr_requested: true,
        deferrals: 3,
        pending_polls: 3,
        ..WorkMessage::new("b", "image", "upload")
    };
    let outcome = w
        .process_batch(
            vec![record("m", tired.to_body(), 1)],
            deadline(&w, Duration::from_secs(60)),
        )
        .await;
    match &outcome.results[0].1 {
        Disposition::DeadLettered { reason, .. } => {
            assert!(reason.contains("still pending after 3"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.ocr().total_calls(OcrCall::Request), 0);
}

#[tokio::test(start_paused = true)]
async fn a_spent_quota_defers_what_is_left_and_holds_the_invocation() {
    let ocr = ScriptedOcr::new();
    let reset = from_epoch_ms(ORIGIN_MS) + Duration::from_secs(40);
    ocr.report_quota(Some(Quota {
        limit: 100,
        remaining: 0,
        reset: Some(reset),
    }));
    let w = worker_with(
        ocr,
        WorkerSettings {
            concurrency: 1,
            ..settings()
        },
    );
    let started = tokio::time::Instant::now();
    let outcome = w
        .process_batch(
            vec![record("m1", body("a"), 1), record("m2", body("b"), 1)],
            deadline(&w, Duration::from_secs(60)),
        )
        .await;
    assert_eq!(outcome.results[0].1, Disposition::Stored(Status::Done));
    match &outcome.results[1].1 {
        Disposition::Deferred(d) => assert_eq!(d.delay, Duration::from_secs(40)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        w.ocr().total_calls(OcrCall::Request),
        1,
        "no call Cloudinary would refuse"
    );
    assert_eq!(outcome.quota_remaining, Some(0));
    // The invocation waits until the reset (within its deadline, less the hold margin).
    assert_eq!(started.elapsed(), Duration::from_secs(40));
}

#[tokio::test(start_paused = true)]
async fn a_whole_batch_of_varied_records_ends_with_one_disposition_each() {
    let ocr = ScriptedOcr::new();
    ocr.script(
        OcrCall::Request,
        "none",
        [Scripted::Answer(OcrOutcome::NoText)],
    );
    ocr.script(OcrCall::Request, "busy", [remote(ErrorClass::Transient)]);
    ocr.script(OcrCall::Request, "gone", [remote(ErrorClass::Permanent)]);
    ocr.script(OcrCall::Request, "wait", [remote(ErrorClass::RateLimited)]);
    let w = worker(ocr);
    let ids = ["text", "none", "busy", "gone", "wait", "text"];
    let records: Vec<InboundRecord> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| record(&format!("m{i}"), body(id), 1))
        .collect();
    let outcome = w
        .process_batch(records, deadline(&w, Duration::from_secs(60)))
        .await;
    let labels: Vec<&str> = outcome.results.iter().map(|(_, d)| d.label()).collect();
    assert_eq!(
        labels,
        [
            "done",
            "no_text",
            "retry",
            "dead_lettered",
            "deferred",
            "skipped"
        ]
    );
    assert_eq!(
        outcome.failed_message_ids().collect::<Vec<_>>(),
        ["m2", "m3"]
    );
    assert_eq!(w.queue().returned(), ["rh-m3"], "only the failure for good");
    let t = tally(&outcome);
    assert_eq!((t["done"], t["skipped"]), (1, 1));
}

/// A message failed for good fails fast on its later receives, without a call, until SQS
/// moves it; a copy redriven from the dead-letter queue is tried for real, whether SQS keeps
/// or renews its id and whether it keeps or resets its receive count.
#[tokio::test(start_paused = true)]
async fn a_failed_message_fails_fast_until_moved_and_a_redriven_copy_is_tried_again() {
    let redriven = [
        ("same id, count reset", "m1", 1),
        ("same id, count kept", "m1", MAX_RECEIVES + 1),
        ("new id, count reset", "m9", 1),
        ("new id, count kept", "m9", MAX_RECEIVES + 2),
    ];
    for (case, message_id, receive) in redriven {
        let ocr = ScriptedOcr::new();
        ocr.script(OcrCall::Request, "a", [remote(ErrorClass::Permanent)]);
        let w = worker(ocr);
        assert!(matches!(
            run_one(&w, "a", FIRST).await,
            Disposition::DeadLettered { .. }
        ));
        for later in FIRST + 1..=MAX_RECEIVES {
            match run_one(&w, "a", later).await {
                Disposition::FailingFast { reason } => {
                    assert!(reason.contains("cloudinary said no"), "{case}: {reason}")
                }
                other => panic!("{case}: receive {later}: {other:?}"),
            }
        }
        assert_eq!(w.ocr().calls(OcrCall::Request, "a"), 1, "{case}");
        assert_eq!(w.queue().returned().len(), MAX_RECEIVES as usize, "{case}");
        // The redrive policy moves it; an operator redrives it once the cause is fixed.
        let outcome = w
            .process_batch(
                vec![record(message_id, body("a"), receive)],
                deadline(&w, Duration::from_secs(60)),
            )
            .await;
        assert_eq!(
            outcome.results[0].1,
            Disposition::Stored(Status::Done),
            "{case}"
        );
        assert_eq!(w.ocr().calls(OcrCall::Request, "a"), 2, "{case}");
        let rec = w.store().item("a").and_then(|i| i.record).unwrap();
        assert_eq!(
            rec.dead_letter, None,
            "{case}: the mark goes with the failure"
        );
    }
}

#[test]
fn a_mark_holds_only_the_marked_message_between_its_failure_and_its_move() {
    let mark = DeadLetterMark {
        message_id: "m1".into(),
        receive_count: 2,
        kind: DeadLetterKind::Permanent,
    };
    let table = [
        ("m1", 1, false),
        ("m1", 2, false),
        ("m1", 3, true),
        ("m1", MAX_RECEIVES, true),
        ("m1", MAX_RECEIVES + 1, false),
        ("m2", 3, false),
    ];
    for (id, receive, holds) in table {
        assert_eq!(
            mark.holds(id, receive, MAX_RECEIVES),
            holds,
            "{id} on receive {receive}"
        );
    }
}

/// Waiting on the hourly quota never counts toward the pending-OCR limit: a message deferred
/// for the quota many times is still read back when its OCR is pending.
#[tokio::test(start_paused = true)]
async fn quota_waits_do_not_count_as_pending_polls() {
    let ocr = ScriptedOcr::new();
    ocr.script(OcrCall::Fetch, "a", [Scripted::Answer(OcrOutcome::Pending)]);
    let w = worker(ocr);
    let waited = WorkMessage {
        ocr_requested: true,
        deferrals: 50,
        ..WorkMessage::new("a", "image", "upload")
    };
    let outcome = w
        .process_batch(
            vec![record("m1", waited.to_body(), 1)],
            deadline(&w, Duration::from_secs(60)),
        )
        .await;
    match &outcome.results[0].1 {
        Disposition::Deferred(d) => {
            assert_eq!((d.message.deferrals, d.message.pending_polls), (51, 1))
        }
        other => panic!("{other:?}"),
    }
}

/// A limit that resets within the hour is waited out however often it comes; one that does
/// not (an add-on's monthly limit) is waited on a bounded number of times, then the asset
/// fails for good with Cloudinary's message.
#[tokio::test(start_paused = true)]
async fn a_limit_that_does_not_reset_within_the_hour_ends_in_the_dlq_after_bounded_waits() {
    let refusal = |after: Duration| {
        Scripted::Fail(RemoteError {
            class: ErrorClass::RateLimited,
            retry_at: Some(settings().clock.now() + after),
            reason: "HTTP 420: Monthly limit reached".into(),
            credentials_refused: false,
        })
    };
    for (reset_in, dead_lettered) in [
        (Duration::from_secs(1800), false),
        (Duration::from_secs(30 * 24 * 3600), true),
    ] {
        let ocr = ScriptedOcr::new();
        ocr.script(OcrCall::Request, "a", (0..10).map(|_| refusal(reset_in)));
        let w = worker(ocr);
        let mut body = body("a");
        let mut last = Disposition::Skipped;
        for _ in 0..=crate::defaults::MAX_LIMIT_WAITS {
            tokio::time::advance(Duration::from_secs(3600)).await;
            let outcome = w
                .process_batch(
                    vec![record("m1", body.clone(), 1)],
                    deadline(&w, Duration::from_secs(60)),
                )
                .await;
            last = outcome.results[0].1.clone();
            match &last {
                Disposition::Deferred(d) => {
                    assert!(d.delay <= crate::queue::MAX_DELAY);
                    body = d.message.to_body();
                }
                _ => break,
            }
        }
        let case = format!("reset in {reset_in:?}");
        match (&last, dead_lettered) {
            (Disposition::DeadLettered { kind, reason }, true) => {
                assert_eq!(*kind, DeadLetterKind::RateLimited, "{case}");
                assert!(reason.contains("Monthly limit reached"), "{case}: {reason}");
                assert!(reason.contains("does not reset within the hour"), "{case}");
                let rec = w.store().item("a").and_then(|i| i.record).unwrap();
                assert_eq!(rec.error.as_deref(), Some(reason.as_str()), "{case}");
                // The first refusal and one probe before giving up; the waits between were
                // spent at the instance's closed gate, without a call.
                assert_eq!(w.ocr().calls(OcrCall::Request, "a"), 2, "{case}");
            }
            (Disposition::Deferred(_), false) => {}
            (other, _) => panic!("{case}: {other:?}"),
        }
    }
}

fn timeout() -> RemoteError {
    RemoteError::new(ErrorClass::Transient, "operation timed out")
}

/// Cloudinary bills an OCR when the request arrives: a call that timed out may well have run
/// it. The next attempt reads the asset back (free) and stores what it finds.
#[tokio::test(start_paused = true)]
async fn a_timeout_after_billing_is_read_back_never_paid_again() {
    let ocr = ScriptedOcr::new();
    ocr.script(OcrCall::Request, "a", [Scripted::BilledThenFail(timeout())]);
    let w = worker(ocr);
    assert!(matches!(
        run_one(&w, "a", 1).await,
        Disposition::Retry { .. }
    ));
    assert_eq!(run_one(&w, "a", 2).await, Disposition::Stored(Status::Done));
    assert_eq!(w.ocr().billed("a"), 1, "paid once");
    assert_eq!(
        (
            w.ocr().calls(OcrCall::Request, "a"),
            w.ocr().calls(OcrCall::Fetch, "a")
        ),
        (1, 1)
    );
}

/// An attempt that died before its request reached Cloudinary (refused at the door, killed
/// between its claim and its call) left no OCR: the read-back finds none, and the OCR is
/// requested then, once.
#[tokio::test(start_paused = true)]
async fn an_attempt_that_never_reached_cloudinary_is_followed_by_one_request() {
    let ocr = ScriptedOcr::new();
    ocr.script(OcrCall::Request, "a", [Scripted::Fail(timeout())]);
    let w = worker(ocr);
    assert!(matches!(
        run_one(&w, "a", 1).await,
        Disposition::Retry { .. }
    ));
    assert_eq!(run_one(&w, "a", 2).await, Disposition::Stored(Status::Done));
    assert_eq!(w.ocr().billed("a"), 1);
    assert_eq!(
        (
            w.ocr().calls(OcrCall::Request, "a"),
            w.ocr().calls(OcrCall::Fetch, "a")
        ),
        (2, 1),
        "the read-back found no OCR, then one request"
    );
}

fn refused(w: &TestWorker) -> Scripted {
    Scripted::Fail(RemoteError {
        class: ErrorClass::RateLimited,
        retry_at: Some(w.settings().clock.now() + Duration::from_secs(10)),
        reason: "HTTP 429: Too Many Requests".into(),
        credentials_refused: false,
    })
}

/// A refused request (HTTP 420 or 429) ran no OCR: it leaves nothing to read back, so the next
/// attempt spends no Admin API call on a read-back; a request that may have run keeps its mark
/// through a refused read-back; and a read-back that found no OCR is not repeated.
#[tokio::test(start_paused = true)]
async fn only_a_request_that_may_have_run_is_read_back_by_the_next_attempt() {
    let w = worker(ScriptedOcr::new());
    let calls = |id: &str| {
        (
            w.ocr().calls(OcrCall::Request, id),
            w.ocr().calls(OcrCall::Fetch, id),
        )
    };
    let wait = Duration::from_secs(11);

    // Refused at the first request: the next attempt requests at once.
    w.ocr().script(OcrCall::Request, "refused", [refused(&w)]);
    assert!(matches!(
        run_one(&w, "refused", 1).await,
        Disposition::Deferred(_)
    ));
    tokio::time::advance(wait).await;
    assert_eq!(
        run_one(&w, "refused", 1).await,
        Disposition::Stored(Status::Done)
    );
    assert_eq!(calls("refused"), (2, 0), "no read-back");
    assert_eq!(w.ocr().billed("refused"), 1);

    // Timed out after billing, then the read-back refused: the mark of the first attempt
    // stands, so the third reads back and pays nothing more.
    w.ocr().script(
        OcrCall::Request,
        "timed-out",
        [Scripted::BilledThenFail(timeout())],
    );
    w.ocr().script(OcrCall::Fetch, "timed-out", [refused(&w)]);
    assert!(matches!(
        run_one(&w, "timed-out", 1).await,
        Disposition::Retry { .. }
    ));
    assert!(matches!(
        run_one(&w, "timed-out", 2).await,
        Disposition::Deferred(_)
    ));
    tokio::time::advance(wait).await;
    assert_eq!(
        run_one(&w, "timed-out", 1).await,
        Disposition::Stored(Status::Done)
    );
    assert_eq!(
        calls("timed-out"),
        (1, 2),
        "read back twice, requested once"
    );
    assert_eq!(w.ocr().billed("timed-out"), 1);

    // Never reached Cloudinary; the read-back found no OCR, then the request was refused: the
    // next attempt requests without reading back again.
    w.ocr().script(
        OcrCall::Request,
        "none",
        [Scripted::Fail(timeout()), refused(&w)],
    );
    assert!(matches!(
        run_one(&w, "none", 1).await,
        Disposition::Retry { .. }
    ));
    assert!(matches!(
        run_one(&w, "none", 2).await,
        Disposition::Deferred(_)
    ));
    tokio::time::advance(wait).await;
    assert_eq!(
        run_one(&w, "none", 1).await,
        Disposition::Stored(Status::Done)
    );
    assert_eq!(
        calls("none"),
        (3, 1),
        "one read-back, found nothing; then requests only"
    );
    assert_eq!(w.ocr().billed("none"), 1);
}

/// A second message for an asset whose OCR is pending (the lister listed it again) reads the
/// result back instead of paying for another OCR.
#[tokio::test(start_paused = true)]
async fn a_duplicate_arriving_while_the_ocr_is_pending_pays_nothing() {
    let ocr = ScriptedOcr::new();
    ocr.script(
        OcrCall::Request,
        "a",
        [Scripted::Answer(OcrOutcome::Pending)],
    );
    ocr.script(OcrCall::Fetch, "a", [Scripted::Answer(text("late"))]);
    let w = worker(ocr);
    assert!(matches!(
        run_one(&w, "a", 1).await,
        Disposition::Deferred(_)
    ));
    // Not the deferred copy: a fresh message, as a new listing pass would send.
    assert_eq!(run_one(&w, "a", 1).await, Disposition::Stored(Status::Done));
    assert_eq!(w.ocr().billed("a"), 1);
}

/// A forced re-OCR is paid for once however often its message is delivered: a result written
/// after it was asked for is its result.
#[tokio::test(start_paused = true)]
async fn a_forced_reocr_delivered_twice_pays_once() {
    let w = worker(ScriptedOcr::new());
    let old = ResultRecord::from_outcome(
        "a",
        "image",
        "upload",
        text("old"),
        Default::default(),
        1,
        crate::clock::rfc3339(from_epoch_ms(ORIGIN_MS - 86_400_000)),
    );
    w.store().insert(old);
    let forced = WorkMessage {
        force: true,
        forced_at: Some(ORIGIN_MS - 1000),
        ..WorkMessage::new("a", "image", "upload")
    };
    for (delivery, expected) in [
        ("m1", Disposition::Stored(Status::Done)),
        ("m2", Disposition::Skipped),
    ] {
        let outcome = w
            .process_batch(
                vec![record(delivery, forced.to_body(), 1)],
                deadline(&w, Duration::from_secs(60)),
            )
            .await;
        assert_eq!(outcome.results[0].1, expected, "{delivery}");
    }
    assert_eq!(w.ocr().billed("a"), 1, "paid once for the re-OCR");
    let rec = w.store().item("a").and_then(|i| i.record).unwrap();
    assert_eq!(rec.text.as_deref(), Some("text of a"));
}

/// No public_id can change the API path a call goes to, and only the types Cloudinary OCRs are
/// worked on: each refused at once, without a call, with a reason.
#[tokio::test(start_paused = true)]
async fn crafted_ids_and_unknown_types_are_refused_without_a_call() {
    let w = worker(ScriptedOcr::new());
    let crafted = |id: &str, rt: &str, dt: &str| WorkMessage::new(id, rt, dt).to_body();
    let cases = [
        (
            crafted("a/../../../../resources/image/upload/x", "image", "upload"),
            "path segment",
        ),
        (crafted("./x", "image", "upload"), "path segment"),
        (crafted("a/%2E%2E/b", "image", "upload"), "path segment"),
        (crafted("x", "video", "upload"), "resource_type"),
        (crafted("x", "image", "fetch"), "delivery type"),
        (crafted("x", "image", "../upload"), "delivery type"),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let outcome = w
            .process_batch(
                vec![record(&format!("m{i}"), body.clone(), 1)],
                deadline(&w, Duration::from_secs(60)),
            )
            .await;
        match &outcome.results[0].1 {
            Disposition::DeadLettered {
                kind: DeadLetterKind::Permanent,
                reason,
            } => assert!(reason.contains(expected), "{body}: {reason}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    assert_eq!(w.ocr().total_calls(OcrCall::Request), 0);
    assert_eq!(w.ocr().total_calls(OcrCall::Fetch), 0);
    // Dots inside a segment are ordinary characters.
    let fine = crafted("a/..b/c.d/...", "image", "private");
    let outcome = w
        .process_batch(
            vec![record("ok", fine, 1)],
            deadline(&w, Duration::from_secs(60)),
        )
        .await;
    assert_eq!(outcome.results[0].1, Disposition::Stored(Status::Done));
}

/// The Admin API's hourly quota, seen on a read-back, never holds back `explicit` requests,
/// which go to the Upload API: each API has its own gate.
#[tokio::test(start_paused = true)]
async fn the_admin_quota_does_not_cap_upload_api_requests() {
    let ocr = ScriptedOcr::new().requesting_on_the_upload_api();
    ocr.report_quota(Some(Quota {
        limit: 100,
        remaining: 0,
        reset: Some(from_epoch_ms(ORIGIN_MS) + Duration::from_secs(3000)),
    }));
    ocr.script(
        OcrCall::Fetch,
        "pending",
        [Scripted::Answer(text("read back"))],
    );
    let w = worker_with(
        ocr,
        WorkerSettings {
            concurrency: 1,
            ..settings()
        },
    );
    let read_back = WorkMessage {
        ocr_requested: true,
        ..WorkMessage::new("pending", "image", "upload")
    };
    let outcome = w
        .process_batch(
            vec![
                record("m0", read_back.to_body(), 1),
                record("m1", body("a"), 1),
                record("m2", body("b"), 1),
            ],
            deadline(&w, Duration::from_secs(60)),
        )
        .await;
    let labels: Vec<&str> = outcome.results.iter().map(|(_, d)| d.label()).collect();
    assert_eq!(labels, ["done", "done", "done"], "{:?}", outcome.results);
    assert_eq!(outcome.quota_remaining, Some(0), "the Admin API's figure");
    assert_eq!(outcome.quota_limit, Some(100), "and its limit");
    assert_eq!(w.ocr().total_calls(OcrCall::Request), 2);
}

/// An image uploaded again over its public_id (a newer version, as the lister lists it) is
/// OCR'd again, once: its text is not the old version's; the same version again pays nothing.
#[tokio::test(start_paused = true)]
async fn a_new_version_of_an_image_is_ocrd_again_once() {
    let w = worker(ScriptedOcr::new());
    let listed = |version| WorkMessage {
        version: Some(version),
        ..WorkMessage::new("a", "image", "upload")
    };
    let mut outcomes = Vec::new();
    for (delivery, version) in [("m1", 1), ("m2", 1), ("m3", 2), ("m4", 2), ("m5", 1)] {
        let outcome = w
            .process_batch(
                vec![record(delivery, listed(version).to_body(), 1)],
                deadline(&w, Duration::from_secs(60)),
            )
            .await;
        outcomes.push(outcome.results[0].1.label());
    }
    assert_eq!(outcomes, ["done", "skipped", "done", "skipped", "skipped"]);
    assert_eq!(w.ocr().billed("a"), 2, "once per version");
    let rec = w.store().item("a").and_then(|i| i.record).unwrap();
    assert_eq!(rec.asset.version, Some(2));
}

/// A new version whose first attempt timed out after Cloudinary billed it is read back on the
/// next receive, not paid again: once per version, also under faults.
#[tokio::test(start_paused = true)]
async fn a_new_version_is_paid_once_even_when_its_first_attempt_timed_out() {
    let w = worker(ScriptedOcr::new());
    let listed = |version| WorkMessage {
        version: Some(version),
        ..WorkMessage::new("a", "image", "upload")
    };
    let run = |delivery: &'static str, version, receive| {
        let w = &w;
        async move {
            w.process_batch(
                vec![record(delivery, listed(version).to_body(), receive)],
                deadline(w, Duration::from_secs(60)),
            )
            .await
            .results[0]
                .1
                .label()
        }
    };
    assert_eq!(run("m1", 1, 1).await, "done");
    w.ocr().script(
        OcrCall::Request,
        "a",
        [Scripted::BilledThenFail(RemoteError::new(
            ErrorClass::Transient,
            "timed out",
        ))],
    );
    assert_eq!(run("m2", 2, 1).await, "retry");
    assert_eq!(run("m2", 2, 2).await, "done", "read back");
    assert_eq!(w.ocr().billed("a"), 2, "once per version");
    assert_eq!(w.ocr().calls(OcrCall::Fetch, "a"), 1);
    let rec = w.store().item("a").and_then(|i| i.record).unwrap();
    assert_eq!(rec.asset.version, Some(2));
}

/// One public_id under three delivery types is three images: in one batch each is OCR'd and
/// paid once, and each result has its own item, none overwriting another.
#[tokio::test(start_paused = true)]
async fn one_public_id_under_several_delivery_types_is_several_assets() {
    let w = worker(ScriptedOcr::new());
    let types = ["upload", "private", "authenticated"];
    let records: Vec<InboundRecord> = types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            record(
                &format!("m{i}"),
                WorkMessage::new("signs/door", "image", *t).to_body(),
                1,
            )
        })
        .collect();
    let outcome = w
        .process_batch(records, deadline(&w, Duration::from_secs(60)))
        .await;
    for (_, d) in &outcome.results {
        assert_eq!(*d, Disposition::Stored(Status::Done));
    }
    for (t, key) in types.iter().zip([
        "signs/door",
        "~private~signs/door",
        "~authenticated~signs/door",
    ]) {
        assert_eq!(w.ocr().billed(key), 1, "{key}");
        let rec = w.store().item(key).and_then(|i| i.record).unwrap();
        assert_eq!((rec.delivery_type.as_str(), rec.status), (*t, Status::Done));
    }
    assert_eq!(w.store().len(), 3);
    // Delivered again: each is found done by its own key.
    let again = WorkMessage::new("signs/door", "image", "private").to_body();
    let outcome = w
        .process_batch(
            vec![record("m9", again, 1)],
            deadline(&w, Duration::from_secs(60)),
        )
        .await;
    assert_eq!(outcome.results[0].1, Disposition::Skipped);
    assert_eq!(w.ocr().billed("~private~signs/door"), 1);
}

/// A batch's claims, reached together, are written as one group; its results, ready within
/// the window of each other, as another; a record alone in flight waits for nobody.
#[tokio::test(start_paused = true)]
async fn a_batch_claims_together_and_writes_its_results_together() {
    let ocr = ScriptedOcr::new().with_latency(Duration::from_millis(800));
    let w = worker(ocr);
    // The first call of an instance learns Cloudinary's quota alone: the others wait for it.
    w.process_batch(
        vec![record("m", body("first"), FIRST)],
        deadline(&w, Duration::from_secs(120)),
    )
    .await;
    let ids: Vec<String> = (0..10).map(|i| format!("img{i}")).collect();
    let records = ids
        .iter()
        .enumerate()
        .map(|(i, id)| record(&format!("m{i}"), body(id), FIRST))
        .collect();
    let started = tokio::time::Instant::now();
    let outcome = w
        .process_batch(records, deadline(&w, Duration::from_secs(120)))
        .await;
    assert!(
        outcome
            .results
            .iter()
            .all(|(_, d)| *d == Disposition::Stored(Status::Done)),
        "{:?}",
        outcome.results
    );
    assert_eq!(
        w.store().groups()[2..],
        [(StoreOp::Claim, 10), (StoreOp::PutResult, 10)]
    );
    // Everyone expected joined: nobody waited out the window.
    assert_eq!(started.elapsed(), Duration::from_millis(800));

    // One record in flight at a time: each writes alone, at once.
    let w = worker_with(
        ScriptedOcr::new().with_latency(Duration::from_millis(800)),
        WorkerSettings {
            concurrency: 1,
            ..settings()
        },
    );
    let started = tokio::time::Instant::now();
    w.process_batch(
        vec![
            record("m1", body("a"), FIRST),
            record("m2", body("b"), FIRST),
        ],
        deadline(&w, Duration::from_secs(120)),
    )
    .await;
    assert_eq!(started.elapsed(), Duration::from_millis(1600));
    assert_eq!(
        w.store().groups(),
        [
            (StoreOp::Claim, 1),
            (StoreOp::PutResult, 1),
            (StoreOp::Claim, 1),
            (StoreOp::PutResult, 1)
        ]
    );
}
