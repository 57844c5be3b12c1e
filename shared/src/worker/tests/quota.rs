//! Cloudinary's limits: the gates keep calls within them, and a message waits rather than walks toward the dead-letter queue.

use super::*;

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
            not_run: false,
            quota: None,
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
            not_run: false,
            quota: None,
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
                // One call a quarter hour at most: each batch, an hour apart, let one probe
                // through the closed gate (a raised limit would have been found).
                assert_eq!(
                    w.ocr().calls(OcrCall::Request, "a"),
                    crate::defaults::MAX_LIMIT_WAITS + 1,
                    "{case}"
                );
            }
            (Disposition::Deferred(_), false) => {}
            (other, _) => panic!("{case}: {other:?}"),
        }
    }
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
