//! The OCR budget: every paid request takes a unit first; a spent budget defers the message to
//! the next period (never toward the dead-letter queue); a refused request gives its unit back.

use std::sync::Arc;

use super::*;
use crate::budget::{Budget, Limits, MemoryCounters};

fn budget(per_day: u64) -> Arc<Budget> {
    Arc::new(Budget::new(
        Limits {
            per_day,
            ..Limits::default()
        },
        Arc::new(MemoryCounters::default()),
    ))
}

fn batch(ids: &[&str]) -> Vec<InboundRecord> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| record(&format!("m{i}"), body(id), 1))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_defers_to_the_next_day_and_the_rest_is_paid_then() {
    let b = budget(3);
    let w = worker(ScriptedOcr::new()).with_budget(b.clone());
    let ids = ["a", "b", "c", "d", "e"];
    let outcome = w
        .process_batch(batch(&ids), deadline(&w, Duration::from_secs(60)))
        .await;
    let labels: Vec<&str> = outcome.results.iter().map(|(_, d)| d.label()).collect();
    assert_eq!(
        labels.iter().filter(|l| **l == "done").count(),
        3,
        "{labels:?}"
    );
    let deferred: Vec<&Deferral> = outcome
        .results
        .iter()
        .filter_map(|(_, d)| match d {
            Disposition::Deferred(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(deferred.len(), 2);
    for d in &deferred {
        assert_eq!(d.cause, DeferCause::Budget);
        // Sent again within SQS's longest delay: it comes back, never walks toward the DLQ.
        assert!(d.delay <= Duration::from_secs(900), "{:?}", d.delay);
    }
    assert_eq!(w.ocr().total_calls(OcrCall::Request), 3);
    // Still the same day: waiting messages are deferred again without a call.
    let waiting: Vec<InboundRecord> = deferred
        .iter()
        .enumerate()
        .map(|(i, d)| record(&format!("n{i}"), d.message.to_body(), 1))
        .collect();
    let again = w
        .process_batch(waiting.clone(), deadline(&w, Duration::from_secs(60)))
        .await;
    assert!(
        again
            .results
            .iter()
            .all(|(_, d)| matches!(d, Disposition::Deferred(d) if d.cause == DeferCause::Budget))
    );
    assert_eq!(w.ocr().total_calls(OcrCall::Request), 3);
    // The next UTC day: paid, once each.
    tokio::time::advance(Duration::from_secs(86_400)).await;
    let next = w
        .process_batch(waiting, deadline(&w, Duration::from_secs(60)))
        .await;
    let labels: Vec<&str> = next.results.iter().map(|(_, d)| d.label()).collect();
    assert_eq!(labels, ["done", "done"]);
    assert_eq!(w.ocr().total_calls(OcrCall::Request), 5);
    for id in ids {
        assert_eq!(w.ocr().billed(id), 1, "{id}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_budget_seen_spent_defers_without_a_claim() {
    let b = budget(1);
    let w = worker(ScriptedOcr::new()).with_budget(b.clone());
    assert_eq!(run_one(&w, "a", 1).await, Disposition::Stored(Status::Done));
    // The first refusal reads the counter and releases its claim...
    let d = deadline(&w, Duration::from_secs(60));
    w.process_batch(vec![record("m2", body("b"), 1)], d).await;
    let writes = || {
        let f = w.store().faults();
        (f.calls(StoreOp::Claim), f.calls(StoreOp::Release))
    };
    let before = writes();
    assert_eq!(before.1, 1, "the first refusal released its claim");
    // ...the next ones within minutes defer at once: no claim, no release.
    let out = w.process_batch(vec![record("m3", body("c"), 1)], d).await;
    assert!(matches!(&out.results[0].1, Disposition::Deferred(d) if d.cause == DeferCause::Budget));
    assert_eq!(writes(), before, "no claim for a budget known spent");
}

#[tokio::test(start_paused = true)]
async fn concurrent_invocations_pay_exactly_the_budget_between_them() {
    let b = budget(7);
    let workers: Vec<TestWorker> = (0..4)
        .map(|_| {
            worker(ScriptedOcr::new().with_latency(Duration::from_millis(100)))
                .with_budget(b.clone())
        })
        .collect();
    let batches: Vec<Vec<InboundRecord>> = (0..4)
        .map(|w| {
            let ids: Vec<String> = (0..5).map(|i| format!("w{w}-{i}")).collect();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            batch(&ids)
        })
        .collect();
    let runs = workers.iter().zip(batches).map(|(w, records)| {
        let d = deadline(w, Duration::from_secs(60));
        w.process_batch(records, d)
    });
    let outcomes = futures::future::join_all(runs).await;
    let paid: u32 = workers
        .iter()
        .map(|w| w.ocr().total_calls(OcrCall::Request))
        .sum();
    assert_eq!(paid, 7);
    let done = outcomes
        .iter()
        .flat_map(|o| &o.results)
        .filter(|(_, d)| d.label() == "done")
        .count();
    let waiting = outcomes
        .iter()
        .flat_map(|o| &o.results)
        .filter(|(_, d)| matches!(d, Disposition::Deferred(d) if d.cause == DeferCause::Budget))
        .count();
    assert_eq!((done, waiting), (7, 13));
}

#[tokio::test(start_paused = true)]
async fn a_refused_request_gives_its_unit_back_and_a_timeout_keeps_it() {
    let b = budget(2);
    let w = worker(ScriptedOcr::new()).with_budget(b.clone());
    w.ocr().script(OcrCall::Request, "a", [refused(&w)]);
    w.ocr()
        .script(OcrCall::Request, "b", [Scripted::Fail(timeout())]);
    run_one(&w, "a", 1).await;
    let now = w.settings().clock.now();
    assert_eq!(b.left(now).await.unwrap().day_used, 0, "a 429 ran nothing");
    let d = deadline(&w, Duration::from_secs(60));
    w.process_batch(vec![record("m2", body("b"), 1)], d).await;
    assert_eq!(
        b.left(now).await.unwrap().day_used,
        1,
        "a timeout may have been billed"
    );
    let gone = RemoteError::new(ErrorClass::Permanent, "HTTP 404: Resource not found");
    w.ocr().script(
        OcrCall::Request,
        "c",
        [Scripted::Fail(gone.clone().not_run())],
    );
    w.process_batch(vec![record("m3", body("c"), 1)], d).await;
    assert_eq!(b.left(now).await.unwrap().day_used, 1, "a 404 ran nothing");
    // An answer not understood (a 2xx without the OCR, say) may have been billed: kept.
    let unread = RemoteError::new(ErrorClass::Permanent, "no info.ocr.adv_ocr in the answer");
    w.ocr()
        .script(OcrCall::Request, "e", [Scripted::Fail(unread)]);
    w.process_batch(vec![record("m4", body("e"), 1)], d).await;
    assert_eq!(b.left(now).await.unwrap().day_used, 2, "maybe billed");
}

#[tokio::test(start_paused = true)]
async fn a_read_back_takes_no_unit() {
    // The budget is spent, yet a message whose OCR was requested earlier is read back and
    // stored: reading a result is free.
    let b = budget(1);
    let w = worker(ScriptedOcr::new()).with_budget(b.clone());
    assert_eq!(run_one(&w, "a", 1).await, Disposition::Stored(Status::Done));
    let earlier = WorkMessage {
        ocr_requested: true,
        ..WorkMessage::new("b", "image", "upload")
    };
    w.ocr()
        .script(OcrCall::Fetch, "b", [Scripted::Answer(text("paid before"))]);
    let d = deadline(&w, Duration::from_secs(60));
    let out = w
        .process_batch(vec![record("m2", earlier.to_body(), 1)], d)
        .await;
    assert_eq!(out.results[0].1, Disposition::Stored(Status::Done));
    assert_eq!(w.ocr().calls(OcrCall::Request, "b"), 0);
}
