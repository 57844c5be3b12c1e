//! Each defect an adversarial review found, stated as it was found: a path that paid twice,
//! stalled the quota gate or lost a reason. The gate's own (a long block never lifted, a late
//! answer resetting the count, a quota without a reset) are in `rate_gate`'s tests.

use std::sync::Arc;

use super::*;
use crate::store::ClaimIntent;

/// One record of `message_id` with `body` on receive `receive`, with a minute to go.
async fn run(w: &TestWorker, message_id: &str, body: String, receive: u32) -> Disposition {
    let d = deadline(w, Duration::from_secs(60));
    let outcome = w
        .process_batch(vec![record(message_id, body, receive)], d)
        .await;
    outcome.results[0].1.clone()
}

fn is_dead_lettered(d: &Disposition) -> bool {
    matches!(d, Disposition::DeadLettered { .. })
}

/// 1. A failure record erased the "may have been billed" mark, so the next attempt (a redrive,
///    or the next full pass listing the failed asset again) paid again. Each trigger: an OCR
///    billed and then timed out on the last receive; billed on receive 4 with its read-back
///    failing on receive 5; still pending after N checks; a result the table refuses for good.
#[tokio::test(start_paused = true)]
async fn a_failure_keeps_the_mark_of_an_ocr_that_may_have_been_billed() {
    for trigger in [
        "timeout on the last receive",
        "read-back fails on the last receive",
        "pending after N checks",
        "result refused for good",
    ] {
        let w = worker(ScriptedOcr::new());
        let failed = fail_by(&w, trigger).await;
        assert!(is_dead_lettered(&failed), "{trigger}: {failed:?}");
        assert_eq!(w.ocr().billed("a"), 1, "{trigger}");
        // The operator redrives it (a new id), or the next full pass lists it again.
        let again = run(&w, "m9", body("a"), 1).await;
        assert_eq!(again, Disposition::Stored(Status::Done), "{trigger}");
        assert_eq!(w.ocr().billed("a"), 1, "{trigger}: paid twice");
        assert_eq!(w.ocr().calls(OcrCall::Request, "a"), 1, "{trigger}");
    }
}

/// The asset's OCR billed, then the asset failed for good by `trigger`.
async fn fail_by(w: &TestWorker, trigger: &str) -> Disposition {
    match trigger {
        "timeout on the last receive" => {
            w.ocr()
                .script(OcrCall::Request, "a", [Scripted::BilledThenFail(timeout())]);
            run(w, "m1", body("a"), LAST).await
        }
        "read-back fails on the last receive" => {
            w.ocr()
                .script(OcrCall::Request, "a", [Scripted::BilledThenFail(timeout())]);
            w.ocr()
                .script(OcrCall::Fetch, "a", [Scripted::Fail(timeout())]);
            assert!(matches!(
                run(w, "m1", body("a"), LAST - 1).await,
                Disposition::RetryAt { .. }
            ));
            run(w, "m1", body("a"), LAST).await
        }
        "pending after N checks" => {
            w.ocr().script(
                OcrCall::Request,
                "a",
                [Scripted::Answer(OcrOutcome::Pending)],
            );
            w.ocr().script(
                OcrCall::Fetch,
                "a",
                (0..3).map(|_| Scripted::Answer(OcrOutcome::Pending)),
            );
            let mut next = body("a");
            loop {
                match run(w, "m1", next.clone(), 1).await {
                    Disposition::Deferred(d) => next = d.message.to_body(),
                    other => break other,
                }
            }
        }
        _ => {
            w.store()
                .faults()
                .fail_next(StoreOp::PutResult, ErrorClass::Permanent, 1);
            run(w, "m1", body("a"), 1).await
        }
    }
}

/// Two instances sharing the table and Cloudinary.
fn two_instances(
    ocr: ScriptedOcr,
) -> (
    TestWorker2,
    TestWorker2,
    Arc<ScriptedOcr>,
    Arc<MemoryResultStore>,
) {
    let ocr = Arc::new(ocr);
    let store = Arc::new(MemoryResultStore::new());
    let queue = Arc::new(MemoryQueue::new());
    let make = || Worker::new(ocr.clone(), store.clone(), queue.clone(), settings());
    (make(), make(), ocr, store)
}

type TestWorker2 = Worker<Arc<ScriptedOcr>, Arc<MemoryResultStore>, Arc<MemoryQueue>>;

/// 2. A new version (or a forced re-OCR) was claimed on a stale read: B read `done v1`; A
///    claimed, paid and wrote v2; B's claim, forced on what it had read, succeeded with no
///    request mark and paid for v2 again. The gap is common: at a cold start a batch's other
///    records wait while the instance's first call probes the quota. The same race broke the
///    promise that a second delivery of a forced re-OCR pays nothing.
#[tokio::test(start_paused = true)]
async fn a_newer_version_or_a_forced_reocr_is_claimed_on_the_item_as_it_is() {
    let v1 = ResultRecord {
        asset: crate::ocr::AssetFields {
            version: Some(1),
            ..Default::default()
        },
        ..ResultRecord::from_outcome(
            "a",
            "image",
            "upload",
            text("old"),
            Default::default(),
            1,
            crate::clock::rfc3339(from_epoch_ms(ORIGIN_MS - 60_000)),
        )
    };
    let v2 = WorkMessage {
        version: Some(2),
        ..WorkMessage::new("a", "image", "upload")
    };
    let forced = WorkMessage {
        force: true,
        forced_at: Some(ORIGIN_MS - 1_000),
        ..WorkMessage::new("a", "image", "upload")
    };
    for (case, message) in [("new version", v2), ("forced re-OCR", forced)] {
        let (a, b, ocr, store) =
            two_instances(ScriptedOcr::new().with_latency(Duration::from_secs(1)));
        store.insert(v1.clone());
        let d = a.settings().clock.now() + Duration::from_secs(120);
        // B's first record probes the quota; its record of `a` waits for that answer.
        let b_batch = vec![
            record("b1", body("x"), 1),
            record("b2", message.to_body(), 1),
        ];
        let (outcome_a, outcome_b) = tokio::join!(
            a.process_batch(vec![record("a1", message.to_body(), 1)], d),
            async {
                // B reads the item while A's OCR runs, then waits on its first call.
                tokio::time::sleep(Duration::from_millis(10)).await;
                b.process_batch(b_batch, d).await
            },
        );
        assert_eq!(
            outcome_a.results[0].1,
            Disposition::Stored(Status::Done),
            "{case}"
        );
        assert_eq!(outcome_b.results[1].1, Disposition::Skipped, "{case}");
        assert_eq!(ocr.billed("a"), 1, "{case}: paid twice");
    }
}

/// 3. The dead-letter mark named one message, so two live messages for one failing asset (two
///    copies redriven together; a page listed again after a crash) overwrote each other's mark
///    and neither failed fast: 10 Cloudinary requests instead of 2.
#[tokio::test(start_paused = true)]
async fn two_live_messages_of_one_failing_asset_each_fail_fast() {
    let ocr = ScriptedOcr::new();
    ocr.script(
        OcrCall::Request,
        "a",
        (0..10).map(|_| remote(ErrorClass::Permanent)),
    );
    let w = worker(ocr);
    assert!(is_dead_lettered(&run(&w, "m1", body("a"), 1).await));
    // The failed request may have run: the second copy reads back once it has had time to.
    tokio::time::advance(defaults::REQUEST_SETTLE).await;
    assert!(is_dead_lettered(&run(&w, "m2", body("a"), 1).await));
    for receive in 2..=MAX_RECEIVES {
        for id in ["m1", "m2"] {
            let d = run(&w, id, body("a"), receive).await;
            assert!(
                matches!(d, Disposition::FailingFast { .. }),
                "{id} on receive {receive}: {d:?}"
            );
        }
    }
    assert_eq!(w.ocr().calls(OcrCall::Request, "a"), 2);
}

/// 4. A long gate block was never lifted by a later success: a 420 while the quota still
///    reported calls left blocked for a day; after the operator raised the limit, warm
///    instances kept refusing every message for the rest of it.
#[tokio::test(start_paused = true)]
async fn a_raised_limit_is_found_by_a_probe_within_a_quarter_hour() {
    let ocr = ScriptedOcr::new();
    let day = settings().clock.now() + crate::defaults::OTHER_LIMIT_WAIT;
    ocr.script(
        OcrCall::Request,
        "a",
        [Scripted::Fail(RemoteError {
            class: ErrorClass::RateLimited,
            retry_at: Some(day),
            reason: "HTTP 420: add-on limit reached".into(),
            credentials_refused: false,
            not_run: false,
            quota: None,
        })],
    );
    let w = worker(ocr);
    assert!(matches!(
        run(&w, "m1", body("a"), 1).await,
        Disposition::Deferred(_)
    ));
    // The operator raises the limit; new messages come in.
    assert!(
        matches!(run(&w, "m2", body("b"), 1).await, Disposition::Deferred(_)),
        "blocked"
    );
    tokio::time::advance(crate::rate_gate::LONG_BLOCK_PROBE).await;
    assert_eq!(
        run(&w, "m3", body("c"), 1).await,
        Disposition::Stored(Status::Done),
        "the probe"
    );
    assert_eq!(
        run(&w, "m4", body("d"), 1).await,
        Disposition::Stored(Status::Done),
        "open again"
    );
}

/// 7. A redriven copy that keeps its id with its receive count reset got one real try: its
///    mark stayed, so after one transient error its later receives failed fast.
#[tokio::test(start_paused = true)]
async fn a_redriven_copy_with_its_id_kept_and_count_reset_is_tried_for_real_each_time() {
    let ocr = ScriptedOcr::new();
    ocr.script(
        OcrCall::Request,
        "a",
        [remote(ErrorClass::Permanent), Scripted::Fail(timeout())],
    );
    let w = worker(ocr);
    assert!(is_dead_lettered(&run(&w, "m1", body("a"), 1).await));
    // Moved to the DLQ; the cause fixed; redriven with its id, its count starting over.
    tokio::time::advance(defaults::REQUEST_SETTLE).await;
    assert!(matches!(
        run(&w, "m1", body("a"), 1).await,
        Disposition::RetryAt { .. }
    ));
    tokio::time::advance(defaults::VISIBILITY_TIMEOUT).await;
    assert_eq!(
        run(&w, "m1", body("a"), 2).await,
        Disposition::Stored(Status::Done)
    );
}

/// 8. De-duplication within a batch ignored what each message asks for: of `[v1, v2]` of one
///    asset the v2 message was dropped as a duplicate and the v1 one found the asset complete,
///    so v2 waited up to a week for the next full pass. A forced re-OCR behind a plain
///    duplicate was lost alike.
#[tokio::test(start_paused = true)]
async fn every_message_of_one_asset_in_a_batch_gets_what_it_asks_for() {
    let versioned = |v| WorkMessage {
        version: Some(v),
        ..WorkMessage::new("a", "image", "upload")
    };
    let w = worker(ScriptedOcr::new());
    let d = deadline(&w, Duration::from_secs(60));
    let batch = vec![
        record("m1", versioned(1).to_body(), 1),
        record("m2", versioned(2).to_body(), 1),
    ];
    let outcome = w.process_batch(batch, d).await;
    assert_eq!(
        outcome
            .results
            .iter()
            .map(|(_, d)| d.clone())
            .collect::<Vec<_>>(),
        [
            Disposition::Stored(Status::Done),
            Disposition::Stored(Status::Done)
        ]
    );
    let stored = w.store().item("a").and_then(|i| i.record).unwrap();
    assert_eq!(
        stored.asset.version,
        Some(2),
        "the newest version's text is kept"
    );
    // The other way round the older message asks for nothing more.
    let batch = vec![
        record("m3", versioned(3).to_body(), 1),
        record("m4", versioned(2).to_body(), 1),
    ];
    let outcome = w.process_batch(batch, d).await;
    assert_eq!(outcome.results[1].1, Disposition::Skipped);
    // A forced re-OCR behind a plain duplicate.
    tokio::time::advance(Duration::from_secs(1)).await;
    let forced = WorkMessage {
        force: true,
        forced_at: Some(ORIGIN_MS + 500),
        ..WorkMessage::new("a", "image", "upload")
    };
    let billed = w.ocr().billed("a");
    let batch = vec![
        record("m5", body("a"), 1),
        record("m6", forced.to_body(), 1),
    ];
    let outcome = w.process_batch(batch, d + Duration::from_secs(1)).await;
    assert_eq!(outcome.results[1].1, Disposition::Stored(Status::Done));
    assert_eq!(w.ocr().billed("a"), billed + 1);
}

/// A claim lost while a failure was being recorded was reported dead-lettered, with no mark.
#[tokio::test(start_paused = true)]
async fn a_claim_lost_while_recording_a_failure_leaves_the_asset_to_its_new_owner() {
    let ocr = ScriptedOcr::new().with_latency(Duration::from_secs(10));
    ocr.script(OcrCall::Request, "a", [remote(ErrorClass::Permanent)]);
    let w = worker(ocr);
    let far = ORIGIN_MS + 3_600_000;
    let (d, ()) = tokio::join!(run(&w, "m1", body("a"), 1), async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        w.store().take_over("a", far);
    });
    assert!(
        matches!(&d, Disposition::Deferred(x) if x.cause == DeferCause::Claimed),
        "{d:?}"
    );
    assert_eq!(w.store().status("a"), None);
}

/// On the last receive, a failed status read, a failed mark write or a failed deferral send
/// sent the message to the dead-letter queue with no reason on its item. The first two now
/// send it again; the third (SQS refusing the very deferral) notes why on the item.
#[tokio::test(start_paused = true)]
async fn aws_failing_on_the_last_receive_never_dead_letters_without_a_reason() {
    let w = worker(ScriptedOcr::new());
    w.store()
        .faults()
        .fail_next(StoreOp::States, ErrorClass::Transient, 1);
    let d = run(&w, "m1", body("a"), LAST).await;
    assert!(
        matches!(&d, Disposition::Deferred(x) if x.cause == DeferCause::Aws),
        "{d:?}"
    );

    let ocr = ScriptedOcr::new();
    ocr.script(OcrCall::Request, "a", [remote(ErrorClass::Permanent)]);
    let w = worker(ocr);
    w.store()
        .faults()
        .fail_next(StoreOp::PutFailure, ErrorClass::Transient, 1);
    let d = run(&w, "m1", body("a"), LAST).await;
    assert!(
        matches!(&d, Disposition::Deferred(x) if x.cause == DeferCause::Aws),
        "{d:?}"
    );

    let w = worker(ScriptedOcr::new());
    w.store().take_over("a", ORIGIN_MS + 3_600_000);
    w.queue()
        .faults()
        .fail_next(QueueOp::SendDelayed, ErrorClass::Transient, 1);
    let d = run(&w, "m1", body("a"), LAST).await;
    assert!(matches!(d, Disposition::Retry { .. }), "{d:?}");
    let noted = w
        .store()
        .item("a")
        .and_then(|i| i.error)
        .unwrap_or_default();
    assert!(noted.contains("deferring failed"), "{noted}");
}

fn credentials_refused() -> Scripted {
    Scripted::Fail(RemoteError {
        class: ErrorClass::Transient,
        retry_at: None,
        reason: "HTTP 401: Invalid api_key".into(),
        credentials_refused: true,
        not_run: false,
        quota: None,
    })
}

/// A credentials outage emptied the queue into the DLQ: a 401 was transient, so on the last
/// receive it failed the asset for good. Refused credentials now defer the message with a
/// growing delay, never walking toward the DLQ, and back the invocation off: its other records
/// wait without a call.
#[tokio::test(start_paused = true)]
async fn refused_credentials_wait_for_the_secret_and_never_walk_toward_the_dlq() {
    let ocr = ScriptedOcr::new();
    ocr.script(OcrCall::Request, "a", (0..6).map(|_| credentials_refused()));
    let w = worker(ocr);
    let mut next = body("a");
    let mut delays = Vec::new();
    for _ in 0..6 {
        tokio::time::advance(Duration::from_secs(901)).await;
        match run(&w, "m1", next.clone(), LAST).await {
            Disposition::Deferred(d) if d.cause == DeferCause::Credentials => {
                delays.push(d.delay.as_secs());
                next = d.message.to_body();
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delays, [60, 120, 240, 480, 900, 900]);
    assert_eq!(w.store().status("a"), None, "nothing failed");
    // The secret is fixed: the next receive is done.
    tokio::time::advance(Duration::from_secs(901)).await;
    assert_eq!(
        run(&w, "m1", next, LAST).await,
        Disposition::Stored(Status::Done)
    );
    assert_eq!(w.ocr().billed("a"), 1);

    // The invocation backs off: after a refusal its other records wait without a call.
    let ocr = ScriptedOcr::new();
    ocr.script(OcrCall::Request, "a", [credentials_refused()]);
    let w = worker_with(
        ocr,
        WorkerSettings {
            concurrency: 1,
            ..settings()
        },
    );
    let batch = vec![record("m1", body("a"), 1), record("m2", body("b"), 1)];
    let outcome = w
        .process_batch(batch, deadline(&w, Duration::from_secs(60)))
        .await;
    assert_eq!(outcome.credentials_refused, 1);
    assert!(matches!(&outcome.results[1].1, Disposition::Deferred(_)));
    assert_eq!(w.ocr().calls(OcrCall::Request, "b"), 0);
}

/// What a claim asks for follows the message: its version when it has one (an older result's
/// asset was uploaded again), a forced re-OCR's time, else any result.
#[test]
fn a_claim_asks_for_what_the_message_asks_for() {
    let m = WorkMessage::new("a", "image", "upload");
    assert_eq!(super::super::record::intent(&m), ClaimIntent::Plain);
    let v = WorkMessage {
        version: Some(3),
        ..m.clone()
    };
    assert_eq!(super::super::record::intent(&v), ClaimIntent::NewVersion(3));
    let f = WorkMessage {
        force: true,
        forced_at: Some(7),
        ..v
    };
    assert_eq!(
        super::super::record::intent(&f),
        ClaimIntent::Forced { asked_at_ms: 7 }
    );
}
