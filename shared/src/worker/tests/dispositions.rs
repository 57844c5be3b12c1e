//! Every record ends with one disposition: tables over outcomes, error classes and receives, and the paths of a failure for good.

use super::*;

#[tokio::test(start_paused = true)]
async fn every_ocr_outcome_on_first_and_last_receive() {
    use Disposition as D;
    let outcomes: [(OcrOutcome, Shape, Option<Status>); 4] = [
        (text("hello"), ("done", None), Some(Status::Done)),
        (OcrOutcome::NoText, ("no_text", None), Some(Status::NoText)),
        (OcrOutcome::Pending, ("deferred", None), None),
        (
            failed_ocr(),
            ("dead_lettered", Some(DeadLetterKind::Permanent)),
            Some(Status::Failed),
        ),
    ];
    let table = outcomes
        .into_iter()
        .flat_map(|(o, shape, status)| [FIRST, LAST].map(|r| (o.clone(), r, shape, status)));
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
            D::Stored(_)
            | D::Skipped
            | D::Retry { .. }
            | D::RetryAt { .. }
            | D::FailingFast { .. } => {}
        }
        if !matches!(d, D::Deferred(_)) {
            assert!(w.queue().sent().is_empty(), "{case}: nothing sent again");
        }
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
        // DynamoDB failing is no reason to dead-letter the asset: sent again.
        (ErrorClass::Transient, LAST, ("deferred", None)),
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
        // Without a claim nothing is marked: the reason is noted on the item and in the log
        // line, and the same failure meets every receive until SQS moves the message.
        assert_eq!(w.store().status("a"), None, "{case}");
        if expected.1.is_some() {
            let noted = w.store().item("a").and_then(|i| i.error);
            assert!(
                noted.is_some_and(|e| e.contains("ValidationException")),
                "{case}"
            );
        }
        assert_eq!(
            w.queue().returned().len(),
            usize::from(expected.1.is_some()),
            "{case}"
        );
    }
}

/// The plan is a function of the origin, the class and the receive alone; every pair has one.
/// Refused credentials never walk toward the dead-letter queue, nor does AWS failing.
#[test]
fn the_failure_plan_covers_every_origin_and_class() {
    for origin in [Origin::Cloudinary, Origin::Credentials, Origin::Aws] {
        for class in ErrorClass::ALL {
            for receive in [FIRST, LAST - 1, LAST, LAST + 1] {
                let plan = plan_failure(origin, class, receive, MAX_RECEIVES);
                let expected = match (origin, class) {
                    (Origin::Credentials, _) => FailurePlan::WaitForCredentials,
                    (_, ErrorClass::RateLimited) => FailurePlan::Defer,
                    (_, ErrorClass::Transient) if receive < LAST => FailurePlan::Retry,
                    (Origin::Aws, ErrorClass::Transient) => FailurePlan::SendAgain,
                    (_, ErrorClass::Transient) => {
                        FailurePlan::DeadLetter(DeadLetterKind::Exhausted)
                    }
                    (_, ErrorClass::Permanent) => {
                        FailurePlan::DeadLetter(DeadLetterKind::Permanent)
                    }
                };
                assert_eq!(plan, expected, "{origin:?} {class:?} on receive {receive}");
            }
        }
    }
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

#[tokio::test(start_paused = true)]
async fn failing_to_return_a_failed_message_leaves_it_to_its_visibility_timeout() {
    let w = worker(ScriptedOcr::new());
    w.queue()
        .faults()
        .fail_next(QueueOp::ReturnAfter, ErrorClass::Transient, 1);
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
        tokio::time::advance(defaults::REQUEST_SETTLE).await;
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
        let item = w.store().item("a").unwrap();
        assert!(
            item.dead_letters.is_empty(),
            "{case}: the mark goes with the failure"
        );
    }
}

#[test]
fn a_mark_holds_only_the_marked_message_between_its_failure_and_its_move() {
    let window = Duration::from_secs(3600);
    let mark = DeadLetterMark {
        message_id: "m1".into(),
        receive_count: 2,
        at_ms: 1_000,
    };
    let soon = (1_000 + 60_000, window);
    let later = (1_000 + 3_600_000, window);
    let table = [
        ("m1", 1, soon, false),
        ("m1", 2, soon, false),
        ("m1", 3, soon, true),
        ("m1", MAX_RECEIVES, later, true),
        // A receive count SQS kept over a redrive: a copy, tried for real.
        ("m1", MAX_RECEIVES + 1, soon, false),
        ("m2", 3, soon, false),
    ];
    for (id, receive, at, holds) in table {
        assert_eq!(
            mark.holds(id, receive, MAX_RECEIVES, at),
            holds,
            "{id} on receive {receive} at {at:?}"
        );
    }
    // That copy failing again leaves a mark past the count: it holds for its next receives
    // soon after, and not for another copy redriven later.
    let kept = DeadLetterMark {
        receive_count: MAX_RECEIVES + 1,
        ..mark.clone()
    };
    assert!(kept.holds("m1", MAX_RECEIVES + 2, MAX_RECEIVES, soon));
    assert!(!kept.holds("m1", MAX_RECEIVES + 2, MAX_RECEIVES, later));
    assert_eq!(DeadLetterMark::parse(&mark.element()), Some(mark));
    let odd = DeadLetterMark {
        message_id: "a:b:c".into(),
        receive_count: 1,
        at_ms: 5,
    };
    assert_eq!(DeadLetterMark::parse(&odd.element()), Some(odd));
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
        .fail_next(StoreOp::PutFailure, ErrorClass::Transient, 1);
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
