//! An OCR is paid once: the sequences that show it (a lost claim, a paid OCR whose write failed, a timeout after billing, a forced re-OCR, a new version, ...).

use super::*;

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

/// Cloudinary bills an OCR when the request arrives: a call that timed out may well have run
/// it. The next attempt reads the asset back (free) and stores what it finds.
#[tokio::test(start_paused = true)]
async fn a_timeout_after_billing_is_read_back_never_paid_again() {
    let ocr = ScriptedOcr::new();
    ocr.script(OcrCall::Request, "a", [Scripted::BilledThenFail(timeout())]);
    let w = worker(ocr);
    assert!(matches!(
        run_one(&w, "a", 1).await,
        Disposition::RetryAt { .. }
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

/// An OCR request that failed without an answer (a timeout, a 5xx) may still run and be
/// billed: the next attempt reads back first, and may pay again only from the settle time
/// after this attempt's claim. The message is made visible again then (and a few seconds for
/// the clocks), not after the whole visibility timeout. The read-back then pays once if the
/// request never ran, at once, and finds its OCR if it ran late; a read-back that fails sent
/// no request, and its message waits out the visibility timeout.
#[tokio::test(start_paused = true)]
async fn a_failed_request_comes_back_at_the_settle_time_and_never_pays_twice() {
    #[derive(Debug, PartialEq)]
    enum Then {
        NeverRan,
        RanLate,
        ReadBackFails,
    }
    for then in [Then::NeverRan, Then::RanLate, Then::ReadBackFails] {
        let ocr = ScriptedOcr::new();
        ocr.script(OcrCall::Request, "a", [Scripted::Fail(timeout())]);
        if then == Then::ReadBackFails {
            ocr.script(OcrCall::Fetch, "a", [Scripted::Fail(timeout())]);
        }
        let w = worker(ocr);
        let claimed = w.now();
        let d = run_one(&w, "a", 1).await;
        let Disposition::RetryAt { at, .. } = d else {
            panic!("{then:?}: {d:?}")
        };
        let settled = claimed + defaults::REQUEST_SETTLE;
        assert_eq!(at, settled + SETTLE_MARGIN, "{then:?}");
        let returned = w.queue().returned_later();
        assert_eq!(returned.len(), 1, "{then:?}: {returned:?}");
        let (handle, delay) = &returned[0];
        assert_eq!(handle, "rh-m1", "{then:?}");
        assert_eq!(w.now() + *delay, at, "{then:?}: visible again then");
        assert!(*delay < defaults::VISIBILITY_TIMEOUT, "{then:?}: {delay:?}");
        if then == Then::RanLate {
            w.ocr().arrives_late("a");
        }
        tokio::time::advance(*delay).await;
        let mut receive = 2;
        if then == Then::ReadBackFails {
            assert!(
                matches!(run_one(&w, "a", receive).await, Disposition::Retry { .. }),
                "a failed read-back waits out the visibility timeout"
            );
            assert_eq!(w.queue().returned_later().len(), 1, "not returned early");
            tokio::time::advance(defaults::VISIBILITY_TIMEOUT).await;
            receive += 1;
        }
        assert_eq!(
            run_one(&w, "a", receive).await,
            Disposition::Stored(Status::Done),
            "{then:?}: no wait at the time it came back"
        );
        assert_eq!(w.ocr().billed("a"), 1, "{then:?}: paid once");
        let expected = match then {
            Then::NeverRan => (2, 1),
            Then::RanLate => (1, 1),
            Then::ReadBackFails => (2, 2),
        };
        assert_eq!(calls(&w, "a"), expected, "{then:?}: (requests, read-backs)");
    }
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
        Disposition::RetryAt { .. }
    ));
    // SQS returns it (at the latest after the visibility timeout).
    tokio::time::advance(defaults::VISIBILITY_TIMEOUT).await;
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

/// A worker whose request for `id` timed out, and whose second delivery of it a minute later
/// (a duplicate, the asset listed again) read it back, found no OCR yet and waits out the
/// settle time instead of paying.
async fn timed_out_and_delivered_again(id: &str) -> TestWorker {
    let ocr = ScriptedOcr::new();
    ocr.script(OcrCall::Request, id, [Scripted::Fail(timeout())]);
    let w = worker(ocr);
    assert!(matches!(
        run_one(&w, id, 1).await,
        Disposition::RetryAt { .. }
    ));
    tokio::time::advance(Duration::from_secs(60)).await;
    let d = run_one(&w, id, 1).await;
    assert!(
        matches!(&d, Disposition::Deferred(x) if x.cause == DeferCause::Claimed
            && x.delay <= defaults::REQUEST_SETTLE
            && x.delay + Duration::from_secs(120) >= defaults::REQUEST_SETTLE),
        "waits out the settle time: {d:?}"
    );
    assert_eq!(calls(&w, id), (1, 1), "read back, not paid");
    w
}

/// A request given up on may still arrive, run and be billed after its caller gave up (a
/// server goes on once the connection is gone). A read-back soon after finds nothing yet: the
/// attempt waits instead of paying again, and the late OCR is what it reads back.
#[tokio::test(start_paused = true)]
async fn a_request_that_may_still_arrive_is_waited_for_not_paid_again() {
    let w = timed_out_and_delivered_again("a").await;
    w.ocr().arrives_late("a");
    tokio::time::advance(defaults::REQUEST_SETTLE).await;
    assert_eq!(run_one(&w, "a", 1).await, Disposition::Stored(Status::Done));
    assert_eq!(w.ocr().billed("a"), 1, "the late request only");
    assert_eq!(calls(&w, "a"), (1, 2), "read back again: the late OCR");
    // Had it never arrived, the attempt after the settle time pays once.
    let w = timed_out_and_delivered_again("b").await;
    tokio::time::advance(defaults::REQUEST_SETTLE).await;
    assert_eq!(run_one(&w, "b", 1).await, Disposition::Stored(Status::Done));
    assert_eq!(w.ocr().billed("b"), 1);
    assert_eq!(calls(&w, "b"), (2, 2));
}

/// What a read-back finds is as of when it was sent: one sent before the settle time ended and
/// answered after it says nothing of a request that ran in between, so it does not pay.
#[tokio::test(start_paused = true)]
async fn a_read_back_answered_after_the_settle_time_but_sent_before_it_does_not_pay() {
    let latency = Duration::from_secs(10);
    let ocr = ScriptedOcr::new().with_latency(latency);
    ocr.script(OcrCall::Request, "a", [Scripted::Fail(timeout())]);
    let w = worker(ocr);
    let claimed = w.settings().clock.now();
    assert!(matches!(
        run_one(&w, "a", 1).await,
        Disposition::RetryAt { .. }
    ));
    let sent_at = claimed + defaults::REQUEST_SETTLE - latency / 2;
    let wait = sent_at.duration_since(w.settings().clock.now()).unwrap();
    tokio::time::advance(wait).await;
    let d = run_one(&w, "a", 1).await;
    assert!(
        matches!(&d, Disposition::Deferred(x) if x.cause == DeferCause::Claimed),
        "{d:?}"
    );
    assert_eq!(calls(&w, "a"), (1, 1), "read back, not paid");
    assert_eq!(w.ocr().billed("a"), 0);
}

/// A request that ran nothing on Cloudinary's side (no connection made, a 4xx) leaves nothing
/// to read back: the next attempt asks again at once, without an Admin call.
#[tokio::test(start_paused = true)]
async fn a_request_that_ran_nothing_is_not_read_back() {
    let ocr = ScriptedOcr::new();
    let unconnected = RemoteError::new(
        ErrorClass::Transient,
        "cloudinary request failed: connection refused",
    )
    .not_run();
    ocr.script(OcrCall::Request, "a", [Scripted::Fail(unconnected)]);
    let w = worker(ocr);
    assert!(matches!(
        run_one(&w, "a", 1).await,
        Disposition::Retry { .. }
    ));
    assert_eq!(run_one(&w, "a", 2).await, Disposition::Stored(Status::Done));
    assert_eq!(w.ocr().billed("a"), 1);
    assert_eq!(calls(&w, "a"), (2, 0), "asked again, never read back");
}

/// A refused request (HTTP 420 or 429) ran no OCR: it leaves nothing to read back, so the next
/// attempt spends no Admin API call on a read-back; a request that may have run keeps its mark
/// through a refused read-back; and a read-back that found no OCR is not repeated.
#[tokio::test(start_paused = true)]
async fn a_refused_request_is_not_read_back() {
    let w = worker(ScriptedOcr::new());
    let calls = |id: &str| calls(&w, id);
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
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_request_keeps_its_mark_through_a_refused_read_back() {
    let w = worker(ScriptedOcr::new());
    let calls = |id: &str| calls(&w, id);
    let wait = Duration::from_secs(11);
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
        Disposition::RetryAt { .. }
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
}

#[tokio::test(start_paused = true)]
async fn a_read_back_that_found_nothing_is_not_repeated() {
    let w = worker(ScriptedOcr::new());
    let calls = |id: &str| calls(&w, id);
    let wait = Duration::from_secs(11);
    // Never reached Cloudinary; the read-back found no OCR, then the request was refused: the
    // next attempt requests without reading back again.
    w.ocr().script(
        OcrCall::Request,
        "none",
        [Scripted::Fail(timeout()), refused(&w)],
    );
    assert!(matches!(
        run_one(&w, "none", 1).await,
        Disposition::RetryAt { .. }
    ));
    tokio::time::advance(defaults::VISIBILITY_TIMEOUT).await;
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

/// Requests and read-backs made for `id`.
fn calls(w: &TestWorker, id: &str) -> (u32, u32) {
    (
        w.ocr().calls(OcrCall::Request, id),
        w.ocr().calls(OcrCall::Fetch, id),
    )
}
