//! Read-backs made together: the read-back queue's batches read many assets back in one call,
//! trusted only when a canary (an asset whose finished OCR this instance stored) shows that the
//! shared answer carries the OCR; otherwise each asset is read back alone, as before.

use super::*;

const IDS: [&str; 5] = ["a1", "a2", "a3", "a4", "a5"];

fn gathering(bulk_carries_ocr: Option<bool>) -> TestWorker {
    gathering_with(bulk_carries_ocr, |ocr| ocr)
}

fn gathering_with(
    bulk_carries_ocr: Option<bool>,
    adjust: impl FnOnce(ScriptedOcr) -> ScriptedOcr,
) -> TestWorker {
    let mut ocr = adjust(ScriptedOcr::new().requesting_on_the_upload_api());
    if let Some(carries) = bulk_carries_ocr {
        ocr = ocr.reading_back_in_bulk(carries);
    }
    // Two requests ran and were billed, three did not; the caller saw a timeout each time.
    for id in &IDS[..2] {
        ocr.script(OcrCall::Request, id, [Scripted::BilledThenFail(timeout())]);
    }
    for id in &IDS[2..] {
        ocr.script(OcrCall::Request, id, [Scripted::Fail(timeout())]);
    }
    worker_with(
        ocr,
        WorkerSettings {
            read_back_queue: true,
            ..settings()
        },
    )
}

async fn batch(w: &TestWorker, bodies: Vec<String>, receive: u32) -> Vec<Disposition> {
    let records = bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| record(&format!("m{i}"), b, receive))
        .collect();
    let d = deadline(w, Duration::from_secs(120));
    w.process_batch(records, d)
        .await
        .results
        .into_iter()
        .map(|(_, d)| d)
        .collect()
}

/// The canary stored, the five requests timed out, and their messages, delivered again after
/// the visibility timeout, sent to the read-back queue: the bodies that queue holds.
async fn timed_out_then_sent_to_the_read_back_queue(w: &TestWorker, canary: bool) -> Vec<String> {
    if canary {
        assert_eq!(
            run_one(w, "c", FIRST).await,
            Disposition::Stored(Status::Done)
        );
    }
    let bodies: Vec<String> = IDS.iter().map(|id| body(id)).collect();
    for d in batch(w, bodies.clone(), FIRST).await {
        assert!(matches!(d, Disposition::RetryAt { .. }), "{d:?}");
    }
    tokio::time::advance(defaults::VISIBILITY_TIMEOUT).await;
    batch(w, bodies, 2)
        .await
        .into_iter()
        .map(|d| match d {
            Disposition::Deferred(x) if x.cause == DeferCause::ReadBack && x.message.gathered => {
                assert!(
                    x.delay <= Duration::from_secs(1),
                    "settled: at once ({x:?})"
                );
                x.message.to_body()
            }
            other => panic!("not sent to the read-back queue: {other:?}"),
        })
        .collect()
}

fn fetches(w: &TestWorker) -> u32 {
    IDS.iter().map(|id| w.ocr().calls(OcrCall::Fetch, id)).sum()
}

fn assert_paid_once(w: &TestWorker) {
    for id in IDS {
        assert_eq!(w.ocr().billed(id), 1, "{id}");
        assert_eq!(
            w.store().item(id).and_then(|i| i.record).map(|r| r.status),
            Some(Status::Done),
            "{id}"
        );
    }
}

/// Five read-backs and a canary in one call: the two billed OCRs are stored without paying
/// again, the three that never ran are paid once; no asset is read back alone.
#[tokio::test(start_paused = true)]
async fn a_read_back_queue_batch_reads_its_assets_back_in_one_call() {
    let w = gathering(Some(true));
    let bodies = timed_out_then_sent_to_the_read_back_queue(&w, true).await;
    let done = batch(&w, bodies, FIRST).await;
    assert!(
        done.iter().all(|d| *d == Disposition::Stored(Status::Done)),
        "{done:?}"
    );
    assert_eq!(
        w.ocr().bulk_calls(),
        [IDS.len() + 1],
        "one call: the five and the canary"
    );
    assert_eq!(fetches(&w), 0, "none read back alone");
    assert_paid_once(&w);
    for id in &IDS[2..] {
        assert_eq!(
            w.ocr().calls(OcrCall::Request, id),
            2,
            "{id}: paid after the shared read-back"
        );
    }
}

/// A shared read-back that fails on the way is made once more, not a hundred times alone; one
/// that fails twice leaves each asset to be read back alone. Nothing is paid twice either way.
#[tokio::test(start_paused = true)]
async fn a_shared_read_back_that_fails_on_the_way_is_made_once_more() {
    for failures in [1, 2] {
        let w = gathering_with(Some(true), |ocr| {
            ocr.failing_bulk_calls(
                std::iter::repeat_with(|| RemoteError::new(ErrorClass::Transient, "HTTP 502"))
                    .take(failures),
            )
        });
        let bodies = timed_out_then_sent_to_the_read_back_queue(&w, true).await;
        let done = batch(&w, bodies, FIRST).await;
        assert!(
            done.iter().all(|d| *d == Disposition::Stored(Status::Done)),
            "{failures}: {done:?}"
        );
        let calls = w.ocr().bulk_calls();
        if failures == 1 {
            assert_eq!(calls, [IDS.len() + 1, IDS.len() + 1], "made again");
            assert_eq!(fetches(&w), 0, "none read back alone");
        } else {
            assert_eq!(calls.len(), 2, "{calls:?}");
            assert_eq!(fetches(&w), IDS.len() as u32, "each read back alone");
        }
        assert_paid_once(&w);
    }
}

/// A shared answer that does not show the canary's OCR says nothing of the others: each goes
/// back to the work queue to be read back alone, and the instance that meets one reads back
/// alone for a while; nothing is paid twice.
#[tokio::test(start_paused = true)]
async fn a_shared_answer_without_the_canarys_ocr_is_not_trusted() {
    let w = gathering(Some(false));
    let bodies = timed_out_then_sent_to_the_read_back_queue(&w, true).await;
    let alone: Vec<String> = batch(&w, bodies, FIRST)
        .await
        .into_iter()
        .map(|d| match d {
            Disposition::Deferred(x) if x.message.read_alone && !x.message.gathered => {
                x.message.to_body()
            }
            other => panic!("not sent back to be read alone: {other:?}"),
        })
        .collect();
    assert_eq!(w.ocr().bulk_calls(), [IDS.len() + 1]);
    assert_eq!(fetches(&w), 0);
    let done = batch(&w, alone, FIRST).await;
    assert!(
        done.iter().all(|d| *d == Disposition::Stored(Status::Done)),
        "{done:?}"
    );
    assert_eq!(fetches(&w), IDS.len() as u32, "each read back alone");
    assert_paid_once(&w);
    // For a while, this instance reads back alone rather than send to the read-back queue.
    w.ocr()
        .script(OcrCall::Request, "b", [Scripted::Fail(timeout())]);
    assert!(matches!(
        run_one(&w, "b", FIRST).await,
        Disposition::RetryAt { .. }
    ));
    tokio::time::advance(defaults::VISIBILITY_TIMEOUT).await;
    assert_eq!(run_one(&w, "b", 2).await, Disposition::Stored(Status::Done));
    assert_eq!(w.ocr().calls(OcrCall::Fetch, "b"), 1, "read back alone");
}

/// The read-back queue's messages bring their sender's canary, so that an instance that
/// stored nothing itself can check a shared answer.
#[tokio::test(start_paused = true)]
async fn a_canary_travels_with_the_message() {
    let w = gathering(Some(true));
    let bodies = timed_out_then_sent_to_the_read_back_queue(&w, true).await;
    for b in &bodies {
        assert_eq!(WorkMessage::parse(b).unwrap().canary.as_deref(), Some("c"));
    }
    // An instance with no canary of its own (as another would be) reads them back together.
    w.forget_canaries();
    let done = batch(&w, bodies, FIRST).await;
    assert!(
        done.iter().all(|d| *d == Disposition::Stored(Status::Done)),
        "{done:?}"
    );
    assert_eq!(w.ocr().bulk_calls(), [IDS.len() + 1]);
    assert_eq!(fetches(&w), 0);
    assert_paid_once(&w);
}

/// Without a canary (an instance that stored nothing yet), or from a service that reads back
/// one asset at a time, each asset is read back alone.
#[tokio::test(start_paused = true)]
async fn without_a_canary_or_a_shared_read_back_each_asset_is_read_back_alone() {
    for bulk in [Some(true), None] {
        let w = gathering(bulk);
        let bodies = timed_out_then_sent_to_the_read_back_queue(&w, false).await;
        let done = batch(&w, bodies, FIRST).await;
        assert!(
            done.iter().all(|d| *d == Disposition::Stored(Status::Done)),
            "{bulk:?}: {done:?}"
        );
        assert!(w.ocr().bulk_calls().is_empty(), "{bulk:?}");
        assert_eq!(fetches(&w), IDS.len() as u32, "{bulk:?}");
        assert_paid_once(&w);
    }
}

/// A message sent to the read-back queue before the settle time is visible only after it, so
/// that a shared read-back that finds no OCR may pay.
#[tokio::test(start_paused = true)]
async fn a_read_back_is_queued_until_the_settle_time() {
    let w = gathering(Some(true));
    assert!(matches!(
        run_one(&w, "a3", FIRST).await,
        Disposition::RetryAt { .. }
    ));
    tokio::time::advance(Duration::from_secs(60)).await;
    match run_one(&w, "a3", 1).await {
        Disposition::Deferred(x) => {
            assert_eq!(x.cause, DeferCause::ReadBack);
            assert!(x.message.gathered);
            assert!(
                x.delay + Duration::from_secs(61) >= defaults::REQUEST_SETTLE
                    && x.delay <= defaults::REQUEST_SETTLE,
                "{x:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.ocr().calls(OcrCall::Fetch, "a3"), 0, "not read back yet");
}

/// A full batch of the read-back queue (pending OCRs polled, say) is one call with its canary,
/// also when the Admin API's gate is closed for a moment as it arrives: each read-back waits
/// for the gate with the others instead of spending a call of the quota on its asset alone.
#[tokio::test(start_paused = true)]
async fn a_full_read_back_batch_is_one_call_even_behind_a_gate_closed_for_a_moment() {
    for closed in [false, true] {
        let w = gathering(Some(true));
        assert_eq!(
            run_one(&w, "c", FIRST).await,
            Disposition::Stored(Status::Done)
        );
        let ids: Vec<String> = (0..READ_BACK_BATCH).map(|i| format!("p{i}")).collect();
        for id in &ids {
            w.ocr().script(
                OcrCall::Request,
                id,
                [Scripted::Answer(OcrOutcome::Pending)],
            );
            assert!(matches!(
                run_one(&w, id, FIRST).await,
                Disposition::Deferred(x) if x.cause == DeferCause::Pending
            ));
        }
        let bodies: Vec<String> = ids
            .iter()
            .map(|id| {
                WorkMessage {
                    ocr_requested: true,
                    gathered: true,
                    canary: Some("c".into()),
                    ..WorkMessage::new(id.as_str(), "image", "upload")
                }
                .to_body()
            })
            .collect();
        if closed {
            let now = w.settings().clock.now();
            w.gate(Api::Admin).observe(Some(Quota {
                limit: 2000,
                remaining: 0,
                reset: Some(now + Duration::from_millis(800)),
            }));
        }
        let done = batch(&w, bodies, FIRST).await;
        assert!(
            done.iter().all(|d| *d == Disposition::Stored(Status::Done)),
            "closed {closed}: {done:?}"
        );
        assert_eq!(
            w.ocr().bulk_calls(),
            [READ_BACK_BATCH + 1],
            "closed {closed}: one call, the batch and the canary"
        );
        let alone: u32 = ids.iter().map(|id| w.ocr().calls(OcrCall::Fetch, id)).sum();
        assert_eq!(alone, 0, "closed {closed}: none read back alone");
        for id in &ids {
            assert_eq!(w.ocr().billed(id), 1, "{id}");
        }
    }
}
