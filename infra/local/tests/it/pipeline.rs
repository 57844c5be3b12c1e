//! The pipeline against moto and the Cloudinary emulator: lister → SQS → worker → DynamoDB,
//! the DLQ, and each failure path. Run with `make test` (it starts moto).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use crate::common::{Harness, asset, fast_retry_settings, n, s};
use aws_lambda_events::event::sqs::SqsEvent;
use cloudinary_emulator::generate;
use local_stack::runner::{DrainEnd, sqs_event};
use shared::lister::StopReason;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_asset_once_with_its_text_across_several_pages() {
    let assets = generate(120);
    let h = Harness::new(assets.clone(), crate::common::stack_settings(), |_| {}).await;
    let lister = h.lister(&[("LISTER_PAGE_SIZE", "25")]);
    assert_eq!(h.list_all(&lister).await, 120);
    assert_eq!(
        h.emulator.stats().list_calls,
        7,
        "116 upload images at 25 a page, then a page each of private and authenticated ones"
    );

    let worker = h.worker(&[]);
    let (end, stats) = h.drain(&worker, 4, Duration::from_secs(120)).await;
    assert_eq!(end, DrainEnd::Empty);
    assert_eq!(stats.failed.load(std::sync::atomic::Ordering::Relaxed), 0);

    let items = h.items().await;
    assert_eq!(items.len(), assets.len());
    for a in &assets {
        let item = items
            .get(&shared::message::item_key(&a.public_id, &a.delivery_type))
            .unwrap_or_else(|| panic!("no item for {:?}", a.public_id));
        assert_eq!(s(item, "deliveryType").as_ref(), Some(&a.delivery_type));
        match &a.text {
            Some(text) => {
                assert_eq!(
                    s(item, "status").as_deref(),
                    Some("done"),
                    "{:?}",
                    a.public_id
                );
                assert_eq!(s(item, "text").as_ref(), Some(text), "{:?}", a.public_id);
                assert_eq!(n(item, "textBytes"), Some(text.len() as u64));
                assert_eq!(s(item, "locale"), a.locale);
            }
            None => assert_eq!(
                s(item, "status").as_deref(),
                Some("no_text"),
                "{:?}",
                a.public_id
            ),
        }
        assert_eq!(s(item, "format").as_ref(), Some(&a.format));
        assert_eq!(n(item, "width"), Some(a.width));
        assert_eq!(s(item, "assetCreatedAt").as_ref(), Some(&a.created_at));
        assert!(
            item.get("claimToken").is_none(),
            "claim left on {:?}",
            a.public_id
        );
        assert_eq!(h.emulator.ocr_billed_of(&a.id()), 1, "{:?}", a.public_id);
    }
    assert!(h.dlq().await.is_empty());
}

async fn receive_exactly(h: &Harness, count: usize) -> Vec<aws_sdk_sqs::types::Message> {
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(h.receive().await);
        if got.len() >= count {
            break;
        }
    }
    assert_eq!(got.len(), count, "messages received from the work queue");
    got
}

/// One invocation of a new worker on `messages` received from the work queue, with `within`
/// left before its deadline.
async fn handle_received(
    h: &Harness,
    messages: &[aws_sdk_sqs::types::Message],
    within: Duration,
) -> aws_lambda_events::event::sqs::SqsBatchResponse {
    let worker = h.worker(&[]);
    worker::handle(
        &worker,
        sqs_event(messages, &h.stack.work_queue_arn),
        SystemTime::now() + within,
    )
    .await
    .expect("no whole-batch failure")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_with_one_failing_asset_reports_exactly_that_message() {
    let assets: Vec<_> = (0..10)
        .map(|i| asset(&format!("batch/{i}"), Some(&format!("text {i}"))))
        .collect();
    let h = Harness::new(assets, crate::common::stack_settings(), |c| {
        c.forced_status.insert("batch/7".into(), 503);
    })
    .await;
    let mut bad_id = String::new();
    for i in 0..10 {
        let id = h.send_asset(&format!("batch/{i}")).await;
        if i == 7 {
            bad_id = id;
        }
    }
    let messages = receive_exactly(&h, 10).await;
    let response = handle_received(&h, &messages, Duration::from_secs(60)).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, vec![bad_id.as_str()]);
    for i in (0..10).filter(|i| *i != 7) {
        let item = h.item(&format!("batch/{i}")).await.expect("stored");
        assert_eq!(s(&item, "text"), Some(format!("text {i}")));
    }
    let bad = h
        .item("batch/7")
        .await
        .expect("the failed asset's attempt is recorded");
    assert_eq!(
        s(&bad, "status"),
        None,
        "a transient failure is not terminal"
    );
    assert!(s(&bad, "error").unwrap().contains("503"), "{bad:?}");
    assert!(
        !bad.contains_key("claimToken"),
        "claim released for the retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_asset_and_malformed_bodies_are_dead_lettered_with_reasons() {
    let h = Harness::new(
        vec![asset("kept", Some("hello"))],
        crate::common::stack_settings(),
        |_| {},
    )
    .await;
    h.send_asset("gone/asset?").await;
    h.send("{not json").await;
    h.send(r#"{"v":1,"resource_type":"image"}"#).await;
    h.send_asset("kept").await;
    let worker = h.worker(&[]);
    let (end, _) = h.drain(&worker, 2, Duration::from_secs(60)).await;
    assert_eq!(end, DrainEnd::Empty);
    assert_eq!(
        h.emulator.ocr_requests("gone/asset?"),
        1,
        "a failure for good calls Cloudinary once; later receives fail fast"
    );

    let dlq = h.dead_letters().await;
    assert_eq!(dlq.len(), 3);
    for row in &dlq {
        assert_eq!(
            row.source_queue.as_deref(),
            Some(h.stack.work_queue_arn.as_str()),
            "moved by the redrive policy: {row:?}"
        );
    }
    let reason = |needle: &str| {
        dlq.iter()
            .find(|m| m.body.contains(needle))
            .unwrap_or_else(|| panic!("no DLQ message with {needle:?}"))
            .reason
            .clone()
    };
    assert!(reason("gone/asset?").contains("404"), "{dlq:?}");
    assert!(reason("{not json").contains("not valid JSON"), "{dlq:?}");
    assert!(
        reason(r#"{"v":1,"resource_type":"image"}"#).contains("public_id"),
        "{dlq:?}"
    );

    let item = h
        .item("gone/asset?")
        .await
        .expect("failure recorded on the item");
    assert_eq!(s(&item, "status").as_deref(), Some("failed"));
    assert!(
        s(&item, "error").unwrap().contains("Resource not found"),
        "{item:?}"
    );
    assert_eq!(s(&item, "failureKind").as_deref(), Some("permanent"));
    assert_eq!(
        s(&h.item("kept").await.unwrap(), "status").as_deref(),
        Some("done")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_that_keeps_failing_reaches_the_dlq_with_its_reason() {
    let h = Harness::new(
        vec![asset("flaky", Some("x")), asset("fine", Some("y"))],
        fast_retry_settings(3),
        |c| {
            c.forced_status.insert("flaky".into(), 500);
        },
    )
    .await;
    h.send_asset("flaky").await;
    h.send_asset("fine").await;
    let worker = h.worker(&[]);
    let (end, _) = h.drain(&worker, 2, Duration::from_secs(60)).await;
    assert_eq!(end, DrainEnd::Empty);
    let dlq = h.dead_letters().await;
    assert_eq!(dlq.len(), 1);
    assert!(dlq[0].body.contains("flaky"));
    let reason = &dlq[0].reason;
    assert!(
        reason.contains("gave up after 3 receives") && reason.contains("500"),
        "{reason}"
    );
    // One call on the work queue; its next receive sends its read-back to the read-back
    // queue, where each of its three receives reads back and asks again.
    assert_eq!(h.emulator.ocr_requests("flaky"), 4, "one call per receive");
    let item = h.item("flaky").await.unwrap();
    assert_eq!(s(&item, "status").as_deref(), Some("failed"));
    assert_eq!(s(&item, "failureKind").as_deref(), Some("exhausted"));
    // Every claim counts: the two on the work queue (the second only sent it on) and the
    // three on the read-back queue.
    assert_eq!(n(&item, "attempts"), Some(5));
}

/// An OCR request answered HTTP 500 may still have run. Its message comes back when its
/// read-back may first pay (the settle time after the claim: the visibility timeout less the
/// worker's timeout; here 10 s, and 5 s for the clocks), not after the whole visibility
/// timeout (30 s); SQS counts the receive, so the redrive policy still bounds the retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_request_comes_back_at_the_settle_time() {
    let settings = local_stack::provision::StackSettings {
        visibility_timeout: Duration::from_secs(30),
        worker_timeout: Duration::from_secs(20),
        ..crate::common::stack_settings()
    };
    let h = Harness::new(vec![asset("flaky", Some("x"))], settings, |c| {
        c.forced_status.insert("flaky".into(), 500);
    })
    .await;
    h.send_asset("flaky").await;
    let messages = receive_exactly(&h, 1).await;
    let received = std::time::Instant::now();
    let response = handle_received(&h, &messages, Duration::from_secs(60)).await;
    assert_eq!(response.batch_item_failures.len(), 1, "left for retry");
    assert_eq!(h.emulator.ocr_requests("flaky"), 1);
    let mut again = Vec::new();
    while again.is_empty() && received.elapsed() < Duration::from_secs(28) {
        again = h.receive().await;
    }
    let back_after = received.elapsed();
    assert_eq!(again.len(), 1, "visible again ({back_after:?})");
    assert!(
        back_after >= Duration::from_secs(14) && back_after < Duration::from_secs(25),
        "at the settle time and its margin (15 s), before the visibility timeout (30 s): {back_after:?}"
    );
    let count = again[0]
        .attributes()
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
        })
        .cloned();
    assert_eq!(count.as_deref(), Some("2"), "the receive counts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_redrive_policy_catches_what_the_worker_does_not_dead_letter() {
    // The worker believes in more receives than the queue allows: SQS's own redrive moves it.
    let h = Harness::new(
        vec![asset("flaky", Some("x"))],
        fast_retry_settings(2),
        |c| {
            c.forced_status.insert("flaky".into(), 500);
        },
    )
    .await;
    let body = shared::message::WorkMessage::new("flaky", "image", "upload").to_body();
    h.send(&body).await;
    let worker = h.worker(&[("MAX_RECEIVE_COUNT", "100")]);
    let (end, _) = h.drain(&worker, 1, Duration::from_secs(60)).await;
    assert_eq!(end, DrainEnd::Empty);
    // It failed once on the work queue, went to the read-back queue marked for a read-back
    // (as a new message), and failed there on both receives: SQS moved it from there as it
    // was, and a redrive to its source takes it back there.
    let dlq = h.dlq().await;
    assert_eq!(dlq.len(), 1);
    let moved = shared::message::WorkMessage::parse(dlq[0].body().unwrap()).unwrap();
    assert!(moved.gathered && moved.public_id == "flaky", "{moved:?}");
    assert_eq!(h.emulator.ocr_requests("flaky"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn done_assets_and_duplicates_cost_no_second_ocr_unless_forced() {
    let h = Harness::new(
        vec![asset("once", Some("paid once"))],
        crate::common::stack_settings(),
        |_| {},
    )
    .await;
    for _ in 0..3 {
        h.send_asset("once").await;
    }
    let worker = h.worker(&[]);
    h.drain(&worker, 1, Duration::from_secs(60)).await;
    h.send_asset("once").await;
    h.drain(&worker, 2, Duration::from_secs(60)).await;
    assert_eq!(
        h.emulator.ocr_billed("once"),
        1,
        "duplicates and re-runs are absorbed"
    );

    let mut forced = shared::message::WorkMessage::new("once", "image", "upload");
    forced.force = true;
    h.send(&forced.to_body()).await;
    h.drain(&worker, 1, Duration::from_secs(60)).await;
    assert_eq!(
        h.emulator.ocr_billed("once"),
        2,
        "a forced re-OCR calls again"
    );
    let item = h.item("once").await.unwrap();
    assert_eq!(s(&item, "status").as_deref(), Some("done"));
    assert_eq!(n(&item, "attempts"), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limited_messages_are_deferred_never_dead_lettered() {
    let assets: Vec<_> = (0..6)
        .map(|i| asset(&format!("quota/{i}"), Some("t")))
        .collect();
    let h = Harness::new(assets, crate::common::stack_settings(), |c| {
        c.admin_limit = 2;
        c.admin_window = Duration::from_secs(2);
    })
    .await;
    for i in 0..6 {
        h.send_asset(&format!("quota/{i}")).await;
    }
    let worker = h.worker(&[("OCR_METHOD", "update"), ("WORKER_CONCURRENCY", "4")]);
    let (end, stats) = h.drain(&worker, 2, Duration::from_secs(90)).await;
    assert_eq!(end, DrainEnd::Empty);
    assert!(h.dlq().await.is_empty());
    assert_eq!(
        stats.failed.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "deferrals are not failures"
    );
    assert!(
        stats.records.load(std::sync::atomic::Ordering::Relaxed) > 6,
        "some messages were deferred and came back"
    );
    for i in 0..6 {
        let id = format!("quota/{i}");
        assert_eq!(
            s(&h.item(&id).await.unwrap(), "status").as_deref(),
            Some("done")
        );
        assert_eq!(h.emulator.ocr_billed(&id), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_ocr_is_read_back_without_paying_twice() {
    let h = Harness::new(
        vec![asset("slow/ocr", Some("eventually"))],
        crate::common::stack_settings(),
        |c| c.pending_rate = 1.0,
    )
    .await;
    h.send_asset("slow/ocr").await;
    let worker = h
        .worker_adjusted(|s| s.pending_poll_delay = Duration::from_secs(1))
        .unwrap();
    h.drain(&worker, 1, Duration::from_secs(30)).await;
    let item = h.item("slow/ocr").await.unwrap();
    assert_eq!(s(&item, "text").as_deref(), Some("eventually"));
    assert_eq!(h.emulator.ocr_billed("slow/ocr"), 1);
    assert_eq!(
        h.emulator.stats().details_calls,
        1,
        "the result was read back"
    );
}

/// Ten OCRs answered `pending` among twenty: their read-backs go to the read-back queue and
/// are made together, with a canary (an asset stored finished) that shows the shared answer
/// carries the OCR; or, where that answer does not carry it, alone. Each way nothing is paid
/// twice and nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_ocrs_are_read_back_together_or_alone_when_the_shared_answer_lacks_the_ocr() {
    for info_by_ids in [true, false] {
        let assets: Vec<_> = (0..20)
            .map(|i| asset(&format!("mixed/{i:02}"), Some(&format!("text {i}"))))
            .collect();
        let pending: HashSet<String> = (0..10).map(|i| format!("mixed/{i:02}")).collect();
        let h = Harness::new(assets.clone(), crate::common::stack_settings(), |c| {
            c.pending = pending.clone();
            c.info_by_ids = info_by_ids;
        })
        .await;
        // The finished ones first: the instance has its canary before the pending ones come.
        for a in assets.iter().rev() {
            h.send_asset(&a.public_id).await;
        }
        let worker = h.worker(&[]);
        let (end, _) = h.drain(&worker, 2, Duration::from_secs(60)).await;
        assert_eq!(end, DrainEnd::Empty, "{info_by_ids}");
        for a in &assets {
            let item = h.item(&a.public_id).await.unwrap();
            assert_eq!(s(&item, "text"), a.text, "{info_by_ids} {}", a.public_id);
            assert_eq!(h.emulator.ocr_billed(&a.public_id), 1, "{}", a.public_id);
        }
        assert!(h.dlq().await.is_empty());
        let stats = h.emulator.stats();
        assert!(stats.by_ids_calls >= 1, "{info_by_ids}: {stats:?}");
        if info_by_ids {
            assert!(
                stats.by_ids_calls + stats.details_calls < pending.len() as u64,
                "fewer Admin calls than read-backs: {stats:?}"
            );
        } else {
            // Not trusted: each is read back alone, by the work queue's instances.
            assert_eq!(stats.details_calls, pending.len() as u64, "{stats:?}");
        }
        let (work, _) = h.depths().await.unwrap();
        assert_eq!(work.total(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversize_key_and_oversize_text() {
    let long_id = format!("long/{}", "k".repeat(2100));
    let big_text = "é".repeat(250_000); // 500,000 bytes
    let h = Harness::new(
        vec![asset(&long_id, Some("x")), asset("big", Some(&big_text))],
        crate::common::stack_settings(),
        |_| {},
    )
    .await;
    h.send_asset(&long_id).await;
    h.send_asset("big").await;
    let worker = h.worker(&[]);
    h.drain(&worker, 1, Duration::from_secs(60)).await;
    let dlq = h.dead_letters().await;
    assert_eq!(dlq.len(), 1);
    assert!(dlq[0].reason.contains("2048-byte key limit"), "{dlq:?}");
    assert_eq!(
        h.emulator.ocr_requests(&long_id),
        0,
        "no OCR for an asset whose result cannot be stored"
    );

    let item = h.item("big").await.unwrap();
    assert_eq!(
        item.get("truncated").and_then(|v| v.as_bool().ok()),
        Some(&true)
    );
    assert_eq!(n(&item, "textBytes"), Some(500_000));
    let kept = s(&item, "text").unwrap();
    assert!(kept.len() <= shared::store::MAX_TEXT_BYTES && big_text.starts_with(&kept));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn near_the_deadline_records_are_returned_unstarted() {
    let h = Harness::new(
        vec![asset("late", Some("x"))],
        crate::common::stack_settings(),
        |_| {},
    )
    .await;
    h.send_asset("late").await;
    let messages = receive_exactly(&h, 1).await;
    let response = handle_received(&h, &messages, Duration::from_secs(2)).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "sent again, not failed: no receive is spent"
    );
    assert_eq!(h.emulator.stats().ocr_requests, 0);
    let again = receive_exactly(&h, 1).await;
    assert_eq!(
        shared::message::WorkMessage::parse(again[0].body().unwrap())
            .unwrap()
            .public_id,
        "late"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_captured_sqs_event_is_handled() {
    let h = Harness::new(
        vec![asset("street signs/stop & go?", Some("WAITING?\n"))],
        crate::common::stack_settings(),
        |_| {},
    )
    .await;
    let event: SqsEvent =
        serde_json::from_str(include_str!("../../../../events/worker-sqs.json")).unwrap();
    let worker = h.worker(&[]);
    let response = worker::handle(&worker, event, SystemTime::now() + Duration::from_secs(60))
        .await
        .unwrap();
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(
        failed,
        ["2e1424d4-f796-459a-8184-9c92662be6da"],
        "the malformed record fails, for the redrive policy to move"
    );
    assert_eq!(
        s(&h.item("street signs/stop & go?").await.unwrap(), "text").as_deref(),
        Some("WAITING?\n")
    );
    assert!(
        h.dlq().await.is_empty(),
        "the worker never sends to the DLQ itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lister_resumes_from_its_checkpoint_then_lists_only_new_assets() {
    let h = Harness::new(generate(50), crate::common::stack_settings(), |c| {
        c.latency = Duration::from_millis(150)
    })
    .await;
    // A new pass whenever the previous one is complete (the default waits a day).
    let config = h
        .env_with(&[
            ("LISTER_PAGE_SIZE", "10"),
            ("LISTER_PASS_INTERVAL_HOURS", "0"),
        ])
        .lister(None)
        .unwrap();
    let with_margin = |margin| {
        let options = shared::lister::ListerOptions {
            deadline_margin: margin,
            ..lister::options(&config)
        };
        lister::build_with(&config, &h.sdk, options).unwrap()
    };

    // A short invocation stops cleanly after a few pages and saves where it was.
    let first = lister::handle(
        &with_margin(Duration::from_millis(100)),
        serde_json::json!({}),
        SystemTime::now() + Duration::from_millis(600),
    )
    .await
    .unwrap();
    assert_eq!(first.stop, shared::lister::StopReason::Deadline);
    let listed_first = first.listed;
    assert!((10..50).contains(&listed_first), "{first:?}");
    // The next runs continue from the cursor: nothing listed twice.
    let lister = with_margin(Duration::from_secs(1));
    let rest = h.list_all(&lister).await;
    assert_eq!(listed_first + rest, 50);
    assert_eq!(
        h.emulator.stats().list_calls,
        7,
        "five pages of the 48 upload images, one each of the other types"
    );

    // After the full pass, a run lists only what was added since.
    let mut new_asset = asset("added/later", Some("new"));
    new_asset.created_at = shared::clock::rfc3339(SystemTime::now());
    h.emulator.add_asset(new_asset);
    let incremental = lister::handle(
        &lister,
        serde_json::json!({}),
        SystemTime::now() + Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(incremental.mode, shared::lister::PassMode::Incremental);
    assert_eq!(incremental.enqueued, 1);
    assert_eq!(h.emulator.stats().search_calls, 1);

    // A full re-scan can be requested.
    let full = lister::handle(
        &lister,
        serde_json::json!({"full_rescan": true}),
        SystemTime::now() + Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(full.mode, shared::lister::PassMode::Full);
    assert_eq!(full.enqueued, 51);

    let mut ids = HashSet::new();
    loop {
        let got = h.receive().await;
        if got.is_empty() {
            break;
        }
        for m in got {
            let msg = shared::message::WorkMessage::parse(m.body().unwrap()).unwrap();
            ids.insert(msg.public_id);
        }
    }
    assert_eq!(ids.len(), 51, "every asset was enqueued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_deliveries_of_one_asset_pay_for_one_ocr() {
    let h = Harness::new(
        vec![asset("twice", Some("once"))],
        crate::common::stack_settings(),
        |c| {
            c.latency = Duration::from_millis(400);
        },
    )
    .await;
    h.send_asset("twice").await;
    h.send_asset("twice").await;
    let messages = receive_exactly(&h, 2).await;
    // Two invocations, one message each, at the same time (as two Lambda instances would).
    let (a, b) = (h.worker(&[]), h.worker(&[]));
    let deadline = SystemTime::now() + Duration::from_secs(60);
    let (ra, rb) = tokio::join!(
        worker::handle_with_outcome(
            &a,
            sqs_event(&messages[..1], &h.stack.work_queue_arn),
            deadline
        ),
        worker::handle_with_outcome(
            &b,
            sqs_event(&messages[1..], &h.stack.work_queue_arn),
            deadline
        ),
    );
    let outcomes: Vec<_> = [ra.unwrap().1, rb.unwrap().1]
        .into_iter()
        .flat_map(|o| o.results)
        .map(|(_, d)| d)
        .collect();
    assert_eq!(
        h.emulator.ocr_requests("twice"),
        1,
        "only the claim holder called Cloudinary: {outcomes:?}"
    );
    assert!(
        outcomes.contains(&shared::worker::Disposition::Stored(
            shared::store::Status::Done
        )),
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|d| matches!(d, shared::worker::Disposition::Deferred(_))),
        "the other delivery waits for the claim: {outcomes:?}"
    );
    assert_eq!(
        s(&h.item("twice").await.unwrap(), "text").as_deref(),
        Some("once")
    );
}

/// A rotated secret reaches a warm worker: Cloudinary refuses the old credentials, the worker
/// reads the secret again, sees the same value (nothing to do but alarm) and, once an operator
/// has put the new value, rebuilds itself with it and finishes the asset.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_secret_is_picked_up_after_cloudinary_refuses_the_old_one() {
    use shared::secret::Secret;
    use worker::{LiveWorker, SecretCheck};
    let h = Harness::new(
        vec![asset("rotated", Some("new key works"))],
        crate::common::stack_settings(),
        |_| {},
    )
    .await;
    let secrets = aws_sdk_secretsmanager::Client::new(&h.sdk);
    let stale = "cloudinary://old-key:old-secret@testcloud";
    let arn = secrets
        .create_secret()
        .name(format!("{}-cloudinary", h.stack.names.results_table))
        .secret_string(stale)
        .send()
        .await
        .expect("create the secret on moto")
        .arn
        .unwrap();
    let config = h
        .env()
        .worker(Some(Secret::new(stale)))
        .expect("worker config");
    let live = LiveWorker::new(config, h.sdk.clone(), Some(arn.clone()))
        .unwrap()
        .reread_every_refusal();

    h.send_asset("rotated").await;
    let deadline = || SystemTime::now() + Duration::from_secs(60);
    let first = receive_exactly(&h, 1).await;
    let event = sqs_event(&first, &h.stack.work_queue_arn);
    let (response, outcome) = worker::handle_with_outcome(&live.current(), event, deadline())
        .await
        .unwrap();
    assert_eq!(outcome.credentials_refused, 1);
    assert!(
        response.batch_item_failures.is_empty(),
        "waits for the secret, never walks toward the DLQ"
    );
    let waiting = match &outcome.results[0].1 {
        shared::worker::Disposition::Deferred(d) => {
            assert_eq!(d.cause, shared::worker::DeferCause::Credentials);
            d.message.to_body()
        }
        other => panic!("not deferred: {other:?}"),
    };
    let metrics = worker::batch_metrics(&outcome);
    let refused = metrics
        .iter()
        .find(|m| m.name == "CloudinaryCredentialsRefused")
        .unwrap();
    assert_eq!(refused.value, 1.0);
    assert_eq!(live.after_batch(&outcome).await, SecretCheck::Unchanged);

    secrets
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(h.emulator.cloudinary_url())
        .send()
        .await
        .unwrap();
    assert_eq!(live.after_batch(&outcome).await, SecretCheck::Replaced);
    // The deferred copy, delivered without waiting out its delay.
    let mut copy = aws_lambda_events::event::sqs::SqsMessage::default();
    copy.message_id = Some("the-deferred-copy".into());
    copy.body = Some(waiting);
    copy.attributes
        .insert("ApproximateReceiveCount".into(), "1".into());
    let mut event = aws_lambda_events::event::sqs::SqsEvent::default();
    event.records.push(copy);
    let (response, outcome) = worker::handle_with_outcome(&live.current(), event, deadline())
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty(), "{outcome:?}");
    assert_eq!(
        s(&h.item("rotated").await.unwrap(), "text").as_deref(),
        Some("new key works")
    );
}

/// A multi-page document (a PDF or TIFF is an `image` asset) is stored with every page's text
/// in order and its page count; an OCR that Cloudinary ran and failed keeps Cloudinary's
/// message as the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_page_is_stored_and_a_failed_ocr_keeps_cloudinarys_message() {
    let h = Harness::new(
        vec![
            asset("docs/contract", Some("Page one\n\u{c}\u{c}Page three\n")),
            asset("docs/unreadable", Some("x")),
        ],
        crate::common::stack_settings(),
        |c| {
            c.ocr_fails.insert("docs/unreadable".into());
        },
    )
    .await;
    h.send_asset("docs/contract").await;
    h.send_asset("docs/unreadable").await;
    let worker = h.worker(&[]);
    h.drain(&worker, 1, Duration::from_secs(60)).await;
    let doc = h.item("docs/contract").await.unwrap();
    assert_eq!(
        s(&doc, "text").as_deref(),
        Some("Page one\n\u{c}\u{c}Page three\n"),
        "pages in order, an empty one kept in its place"
    );
    assert_eq!(n(&doc, "pages"), Some(3));
    let failed = h.item("docs/unreadable").await.unwrap();
    assert_eq!(s(&failed, "status").as_deref(), Some("failed"));
    assert!(
        s(&failed, "error")
            .unwrap()
            .contains("Image could not be read by the OCR engine"),
        "{failed:?}"
    );
    assert_eq!(
        h.emulator.ocr_billed_all().values().sum::<u64>(),
        2,
        "each paid once"
    );
}

/// The Upload API's 429 names when to come back (`Retry-After`): the messages wait for it, in
/// the queue, and every asset is then OCR'd once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_api_429_is_waited_out_as_its_retry_after_says() {
    let assets: Vec<_> = (0..6)
        .map(|i| asset(&format!("busy/{i}"), Some("text")))
        .collect();
    let h = Harness::new(assets, fast_retry_settings(5), |c| {
        c.upload_limit = 2;
        c.admin_window = Duration::from_secs(2);
    })
    .await;
    for i in 0..6 {
        h.send_asset(&format!("busy/{i}")).await;
    }
    let worker = h.worker(&[]);
    let (end, _) = h.drain(&worker, 1, Duration::from_secs(90)).await;
    assert_eq!(end, DrainEnd::Empty);
    let stats = h.emulator.stats();
    assert!(
        stats.rate_limited >= 1,
        "the Upload API refused some: {stats:?}"
    );
    for i in 0..6 {
        let item = h.item(&format!("busy/{i}")).await.unwrap();
        assert_eq!(s(&item, "status").as_deref(), Some("done"), "busy/{i}");
    }
    assert_eq!(stats.ocr_billed, 6, "each paid once");
    assert!(h.dlq().await.is_empty());
}

/// A limit that does not reset within the hour (the add-on's monthly limit): the message waits
/// a bounded number of times, then the asset fails for good with Cloudinary's message, and the
/// rate-limit dead letter is counted for its alarm. Through the Upload API the refusal names
/// its reset a month away; through the Admin API it carries the hourly quota's headers, with
/// calls left, which the hourly quota cannot explain: both end the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_monthly_limit_ends_in_the_dlq_with_cloudinarys_message_through_explicit() {
    monthly_limit_case("explicit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_monthly_limit_ends_in_the_dlq_with_cloudinarys_message_through_the_admin_api() {
    monthly_limit_case("update").await;
}

async fn monthly_limit_case(method: &str) {
    let h = Harness::new(
        vec![asset("capped", Some("x"))],
        crate::common::stack_settings(),
        |c| {
            c.monthly_limit_reached = true;
        },
    )
    .await;
    let worker = h.worker(&[("OCR_METHOD", method)]);
    // Short invocations: a spent limit holds an invocation until near its deadline.
    let deadline = || SystemTime::now() + Duration::from_secs(12);
    h.send_asset("capped").await;
    let event = sqs_event(&receive_exactly(&h, 1).await, &h.stack.work_queue_arn);
    let (_, outcome) = worker::handle_with_outcome(&worker, event, deadline())
        .await
        .unwrap();
    match &outcome.results[0].1 {
        shared::worker::Disposition::Deferred(d) => {
            assert_eq!(d.cause, shared::worker::DeferCause::Limit);
            assert_eq!(d.message.limit_waits, 1);
        }
        other => panic!("{other:?}"),
    }
    // The waits run out (as after the deferrals' round trips): the last one asks once more.
    let tired = shared::message::WorkMessage {
        limit_waits: shared::defaults::MAX_LIMIT_WAITS,
        ..shared::message::WorkMessage::new("capped", "image", "upload")
    };
    h.send(&tired.to_body()).await;
    let event = sqs_event(&receive_exactly(&h, 1).await, &h.stack.work_queue_arn);
    let (response, outcome) = worker::handle_with_outcome(&worker, event, deadline())
        .await
        .unwrap();
    assert_eq!(response.batch_item_failures.len(), 1, "failed for good");
    let metrics = worker::batch_metrics(&outcome);
    let dead = metrics
        .iter()
        .find(|m| m.name == "RateLimitDeadLetters")
        .unwrap();
    assert_eq!(dead.value, 1.0);
    let item = h.item("capped").await.unwrap();
    assert_eq!(s(&item, "status").as_deref(), Some("failed"));
    assert_eq!(s(&item, "failureKind").as_deref(), Some("rate_limited"));
    assert!(
        s(&item, "error")
            .unwrap()
            .contains("Monthly limit of adv_ocr add-on usage reached"),
        "{item:?}"
    );
    assert_eq!(h.emulator.stats().ocr_billed, 0);
}

/// An image uploaded again over its public_id: the next incremental pass finds it by its
/// upload time, and the worker OCRs the new version (once), replacing the old text.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_overwritten_image_is_found_and_ocrd_again() {
    let h = Harness::new(
        vec![
            asset("signs/door", Some("PUSH\n")),
            asset("signs/other", Some("EXIT\n")),
        ],
        crate::common::stack_settings(),
        |_| {},
    )
    .await;
    let lister = h.lister(&[("LISTER_PASS_INTERVAL_HOURS", "0")]);
    let worker = h.worker(&[]);
    assert_eq!(h.list_all(&lister).await, 2);
    h.drain(&worker, 1, Duration::from_secs(30)).await;
    assert_eq!(
        s(&h.item("signs/door").await.unwrap(), "text").as_deref(),
        Some("PUSH\n")
    );

    assert!(h.emulator.overwrite("signs/door", Some("PULL\n")));
    let incremental = lister::handle(
        &lister,
        serde_json::json!({}),
        SystemTime::now() + Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(incremental.mode, shared::lister::PassMode::Incremental);
    assert_eq!(
        incremental.enqueued, 1,
        "only the new version: {incremental:?}"
    );
    h.drain(&worker, 1, Duration::from_secs(30)).await;
    let door = h.item("signs/door").await.unwrap();
    assert_eq!(s(&door, "text").as_deref(), Some("PULL\n"));
    assert_eq!(n(&door, "version"), Some(1_600_000_002));
    assert_eq!(h.emulator.ocr_billed("signs/door"), 2, "once per version");
    assert_eq!(h.emulator.ocr_billed("signs/other"), 1);
}

/// Cloudinary's Search index lags uploads: an asset uploaded just before an incremental pass
/// is not in its results. The next pass reaches back by the overlap and finds it; without an
/// overlap it would be missed until the weekly full pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_overlap_catches_what_a_lagging_search_index_missed() {
    for (overlap_minutes, found) in [("1", true), ("0", false)] {
        let h = Harness::new(
            vec![asset("old", Some("x"))],
            crate::common::stack_settings(),
            |c| c.index_lag = Duration::from_millis(1500),
        )
        .await;
        let lister = h.lister(&[
            ("LISTER_PASS_INTERVAL_HOURS", "0"),
            ("LISTER_OVERLAP_MINUTES", overlap_minutes),
        ]);
        let run = || async {
            lister::handle(
                &lister,
                serde_json::json!({}),
                SystemTime::now() + Duration::from_secs(60),
            )
            .await
            .unwrap()
        };
        assert_eq!(run().await.enqueued, 1, "the full pass");
        // Let the next pass start strictly after the full pass, in another second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut late = asset("uploaded/late", Some("y"));
        // Uploaded a second before the next pass starts (whole seconds, as Search compares).
        late.created_at = shared::clock::rfc3339_secs(SystemTime::now() - Duration::from_secs(1));
        h.emulator.add_asset(late);
        let hidden = run().await;
        assert_eq!(
            (hidden.mode, hidden.enqueued),
            (shared::lister::PassMode::Incremental, 0),
            "not indexed yet"
        );
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let next = run().await;
        assert_eq!(
            next.enqueued,
            u64::from(found),
            "overlap {overlap_minutes} min: {next:?}"
        );
    }
}

/// A message SQS will not take (here: larger than the queue's maximum message size) does not
/// stop the pass: the asset is recorded failed with SQS's reason, every other asset is
/// enqueued and done, and a later pass leaves the record as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_asset_the_queue_refuses_is_recorded_failed_and_the_pass_goes_on() {
    let long_id = format!("refused/{}", "r".repeat(1100));
    let mut assets = generate(30);
    assets.push(asset(&long_id, Some("never read")));
    let h = Harness::new(assets, crate::common::stack_settings(), |_| {}).await;
    // SQS's smallest maximum: the long id's message (about 1.2 KB) is over it.
    h.sqs
        .set_queue_attributes()
        .queue_url(&h.stack.work_queue_url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize,
            "1024",
        )
        .send()
        .await
        .expect("set the maximum message size");
    let lister = h.lister(&[("LISTER_PAGE_SIZE", "10")]);
    let run = lister::handle(
        &lister,
        serde_json::json!({}),
        SystemTime::now() + Duration::from_secs(120),
    )
    .await
    .expect("the run goes on past the refused asset");
    assert_eq!(run.stop, shared::lister::StopReason::PassComplete);
    assert_eq!((run.listed, run.enqueued, run.refused), (31, 30, 1));
    let item = h
        .item(&long_id)
        .await
        .expect("the refused asset is recorded");
    assert_eq!(s(&item, "status").as_deref(), Some("failed"));
    let error = s(&item, "error").unwrap_or_default();
    assert!(
        error.contains("refused") && error.contains("shorter than 1024"),
        "{error}"
    );

    let worker = h.worker(&[]);
    let (end, _) = h.drain(&worker, 2, Duration::from_secs(60)).await;
    assert_eq!(end, DrainEnd::Empty);
    let items = h.items().await;
    assert_eq!(items.len(), 31);
    assert_eq!(
        items
            .values()
            .filter(|i| s(i, "status").as_deref() == Some("failed"))
            .count(),
        1,
        "every other asset is done"
    );
    assert_eq!(h.emulator.ocr_requests(&long_id), 0);
    // A full rescan meets it again: the record stays, nothing else changes.
    let again = lister::handle(
        &lister,
        serde_json::json!({"full_rescan": true}),
        SystemTime::now() + Duration::from_secs(120),
    )
    .await
    .expect("rescan");
    assert_eq!(again.refused, 1);
    assert_eq!(h.item(&long_id).await, Some(item));
}

/// The results table releases a claim with each request mark: kept, put back as the claim
/// found it, or removed, so that only an attempt whose request may have run is read back; a
/// claim sent again after a lost answer finds the mark the first found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_claim_keeps_restores_or_removes_its_request_mark() {
    use shared::store::{ClaimIntent, ClaimOutcome, DynamoResultStore, RequestMark, ResultStore};
    let h = Harness::new(Vec::new(), crate::common::stack_settings(), |_| {}).await;
    let store = DynamoResultStore::new(h.ddb.clone(), &h.stack.names.results_table);
    let claim = |token: &'static str, now_ms: u64| {
        crate::common::image_claim("a", token, now_ms, ClaimIntent::Plain)
    };
    let requested_before = |outcome: ClaimOutcome| match outcome {
        ClaimOutcome::Claimed {
            requested_before, ..
        } => requested_before,
        other => panic!("not claimed: {other:?}"),
    };
    let steps = [
        ("t1", 1_000, RequestMark::Keep, None, Some(1_000)),
        (
            "t2",
            2_000,
            RequestMark::Restore(Some(1_000)),
            Some(1_000),
            Some(1_000),
        ),
        ("t3", 3_000, RequestMark::Restore(None), Some(1_000), None),
        ("t4", 4_000, RequestMark::Keep, None, Some(4_000)),
    ];
    for (token, now, mark, before, after) in steps {
        let outcome = store.claim(&claim(token, now)).await.expect("claim");
        assert_eq!(requested_before(outcome), before, "{token}");
        store
            .release("a", token, "refused", mark)
            .await
            .expect("release");
        let item = h.item("a").await.expect("the item");
        assert_eq!(n(&item, "ocrRequestedAt"), after, "{token} after {mark:?}");
        assert_eq!(s(&item, "claimToken"), None, "{token}: released");
        assert_eq!(s(&item, "error").as_deref(), Some("refused"));
    }
    store.claim(&claim("t5", 100_000)).await.expect("claim");
    // The same claim sent again (its first answer lost, the SDK retrying) is ours, with the
    // request mark the first found, not its own.
    let retried = store.claim(&claim("t5", 100_500)).await.expect("claim");
    assert_eq!(requested_before(retried), Some(4_000), "t5 retried");
    let fresh = |token| crate::common::image_claim("b", token, 7_000, ClaimIntent::Plain);
    store.claim(&fresh("u1")).await.expect("claim");
    let retried = store.claim(&fresh("u1")).await.expect("claim");
    assert_eq!(requested_before(retried), None, "u1 retried on a new item");
    // A release by a token that no longer holds the claim changes nothing.
    store
        .release("a", "t4", "late", RequestMark::Restore(None))
        .await
        .expect("a lost claim's release is no error");
    let item = h.item("a").await.expect("the item");
    assert_eq!(n(&item, "ocrRequestedAt"), Some(100_000));
    assert_eq!(s(&item, "claimToken").as_deref(), Some("t5"));
}

/// On DynamoDB (moto) the results table keeps the worker's money rules: a failure keeps the
/// request mark of an OCR that may have been billed and adds its message's dead-letter mark
/// beside the others; a real try of a message takes its own mark off; a claim for a newer
/// version or a forced re-OCR holds only against the item as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_results_table_keeps_request_marks_dead_letter_marks_and_claim_intents() {
    use shared::store::{
        ClaimIntent, ClaimOutcome, DeadLetterKind, DeadLetterMark, DynamoResultStore,
        FailureRecord, RequestMark, ResultRecord, ResultStore, Status,
    };
    let h = Harness::new(Vec::new(), crate::common::stack_settings(), |_| {}).await;
    let store = DynamoResultStore::new(h.ddb.clone(), &h.stack.names.results_table);
    let claim = |token, now_ms, intent| crate::common::image_claim("a", token, now_ms, intent);
    let failure = |message_id: &str, receive_count, request_mark| FailureRecord {
        key: "a".into(),
        resource_type: "image".into(),
        delivery_type: "upload".into(),
        error: "HTTP 404: Resource not found".into(),
        kind: DeadLetterKind::Permanent,
        mark: DeadLetterMark {
            message_id: message_id.into(),
            receive_count,
            at_ms: 5_000,
        },
        attempts: 1,
        at: "2026-12-04T00:00:05Z".into(),
        request_mark,
    };
    // A failure after a request that may have run keeps its mark; two messages, two marks.
    store
        .claim(&claim("t1", 1_000, ClaimIntent::Plain))
        .await
        .expect("claim");
    assert!(
        store
            .put_failure(&failure("m1", 1, RequestMark::Keep), "t1")
            .await
            .expect("fail")
    );
    store
        .claim(&claim("t2", 2_000, ClaimIntent::Plain))
        .await
        .expect("claim");
    assert!(
        store
            .put_failure(&failure("m2", 1, RequestMark::Restore(Some(1_000))), "t2")
            .await
            .expect("fail")
    );
    assert!(
        !store
            .put_failure(&failure("m3", 1, RequestMark::Keep), "t2")
            .await
            .expect("a lost claim")
    );
    let states = store.states(&["a".to_string()]).await.expect("states");
    let state = &states["a"];
    assert_eq!(state.status, Status::Failed);
    assert_eq!(state.error.as_deref(), Some("HTTP 404: Resource not found"));
    let mut ids: Vec<&str> = state
        .dead_letters
        .iter()
        .map(|m| m.message_id.as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["m1", "m2"]);
    let item = h.item("a").await.expect("the item");
    assert_eq!(
        n(&item, "ocrRequestedAt"),
        Some(1_000),
        "the mark of a request that may have run"
    );
    assert_eq!(s(&item, "failureKind").as_deref(), Some("permanent"));
    // A real try of m1 takes m1's mark off, and finds the request mark (read back, not paid).
    let m1 = state.marks_of("m1");
    let mut c = claim("t3", 3_000, ClaimIntent::Plain);
    c.drop_marks = &m1;
    match store.claim(&c).await.expect("claim") {
        ClaimOutcome::Claimed {
            requested_before, ..
        } => assert_eq!(requested_before, Some(1_000)),
        other => panic!("{other:?}"),
    }
    let states = store.states(&["a".to_string()]).await.expect("states");
    let ids: Vec<&str> = states["a"]
        .dead_letters
        .iter()
        .map(|m| m.message_id.as_str())
        .collect();
    assert_eq!(ids, ["m2"]);
    // A result of version 2 written at 10 s: a version-2 claim or a forced re-OCR asked for
    // before it finds it complete; a version-3 claim and a later re-OCR take it.
    let done = ResultRecord {
        asset: shared::ocr::AssetFields {
            version: Some(2),
            ..Default::default()
        },
        ..ResultRecord::from_outcome(
            "a",
            "image",
            "upload",
            shared::ocr::OcrOutcome::NoText,
            Default::default(),
            2,
            "1970-01-01T00:00:10Z".into(),
        )
    };
    assert!(store.put_result(&done, "t3").await.expect("result"));
    let item = h.item("a").await.expect("the item");
    assert_eq!(
        (n(&item, "ocrRequestedAt"), item.get("failedMessages")),
        (None, None),
        "a result replaces the item"
    );
    for (token, intent, taken) in [
        ("t4", ClaimIntent::Plain, false),
        ("t5", ClaimIntent::NewVersion(2), false),
        ("t6", ClaimIntent::Forced { asked_at_ms: 9_000 }, false),
        ("t7", ClaimIntent::NewVersion(3), true),
    ] {
        let outcome = store
            .claim(&claim(token, 20_000, intent))
            .await
            .expect("claim");
        assert_eq!(
            matches!(outcome, ClaimOutcome::Claimed { .. }),
            taken,
            "{intent:?}: {outcome:?}"
        );
        if taken {
            store
                .release("a", token, "test", RequestMark::Restore(None))
                .await
                .expect("release");
        }
    }
    let outcome = store
        .claim(&claim(
            "t8",
            30_000,
            ClaimIntent::Forced {
                asked_at_ms: 11_000,
            },
        ))
        .await
        .expect("claim");
    assert!(
        matches!(outcome, ClaimOutcome::Claimed { .. }),
        "{outcome:?}"
    );
    // A note of why a message reaches the DLQ, when nothing else could be written.
    store
        .note_error("b", "deferring failed: throttled")
        .await
        .expect("note");
    assert_eq!(
        s(&h.item("b").await.expect("b"), "error").as_deref(),
        Some("deferring failed: throttled")
    );
}

/// Every message on the work queue: `(messages, distinct public_ids)`.
async fn enqueued_ids(h: &Harness) -> (usize, HashSet<String>) {
    let (mut messages, mut ids) = (0, HashSet::new());
    loop {
        let got = h.receive().await;
        if got.is_empty() {
            return (messages, ids);
        }
        for m in got {
            messages += 1;
            let msg = shared::message::WorkMessage::parse(m.body().unwrap()).unwrap();
            ids.insert(msg.public_id);
        }
    }
}

/// Two lister runs at once on one checkpoint table (two instances: reserved concurrency off,
/// or a run started by hand during the schedule's): one lists the pass, the other finds its
/// lease and stops; each page is listed once, each asset enqueued once. The lease is given up
/// at the end: the next run reads the checkpoint (no pass due).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_lister_runs_at_once_list_each_page_once() {
    let h = Harness::new(generate(50), crate::common::stack_settings(), |c| {
        c.latency = Duration::from_millis(100)
    })
    .await;
    let (first, second) = (
        h.lister(&[("LISTER_PAGE_SIZE", "10")]),
        h.lister(&[("LISTER_PAGE_SIZE", "10")]),
    );
    let deadline = SystemTime::now() + Duration::from_secs(120);
    let (a, b) = tokio::join!(
        lister::handle(&first, serde_json::json!({}), deadline),
        lister::handle(&second, serde_json::json!({}), deadline)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let (ran, stopped) = if a.stop == StopReason::AnotherRun {
        (b, a)
    } else {
        (a, b)
    };
    assert_eq!(
        (stopped.stop, stopped.pages, stopped.listed),
        (StopReason::AnotherRun, 0, 0),
        "{stopped:?}"
    );
    assert_eq!((ran.stop, ran.listed), (StopReason::PassComplete, 50));
    assert_eq!(
        h.emulator.stats().list_calls,
        7,
        "one pass: five pages of the 48 upload images, one each of the other types"
    );
    let (messages, ids) = enqueued_ids(&h).await;
    assert_eq!((messages, ids.len()), (50, 50), "every asset once");

    let next = lister::handle(&first, serde_json::json!({}), deadline)
        .await
        .unwrap();
    assert_eq!(next.stop, StopReason::NotDue, "the lease was given up");
    let metrics = lister::run_metrics(&stopped);
    assert!(
        metrics
            .iter()
            .any(|m| m.name == "ListerRunsOverlapped" && m.value == 1.0),
        "{metrics:?}"
    );
}

/// The lease on DynamoDB: taken when free, expired or already the taker's; a save or a release
/// under a lease another run took over writes nothing; a checkpoint item the previous version
/// wrote (no lease attributes) is free and its pass goes on; the budget's counters in the same
/// table are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_checkpoint_lease_on_dynamodb_and_a_checkpoint_of_the_previous_version() {
    use shared::store::{
        Checkpoint, CheckpointStore, DynamoCheckpointStore, Lease, LeaseOutcome, SaveOutcome,
    };
    let h = Harness::new(generate(50), crate::common::stack_settings(), |_| {}).await;
    let table = &h.stack.names.checkpoint_table;
    let store = DynamoCheckpointStore::new(h.ddb.clone(), table);
    let now = SystemTime::now();
    let lease = |owner: &str, secs| Lease {
        owner: owner.into(),
        // Whole milliseconds, as the item keeps them.
        expires_at: shared::clock::from_epoch_ms(shared::clock::epoch_ms(
            now + Duration::from_secs(secs),
        )),
    };
    let (first, second) = (lease("first", 60), lease("second", 600));
    let saved = Checkpoint {
        total_listed: 7,
        scope: "s".into(),
        ..Checkpoint::default()
    };
    let id = "lister#lease-test";
    assert_eq!(
        store.take_lease(id, &first, now).await.unwrap(),
        LeaseOutcome::Taken(Checkpoint::default())
    );
    assert_eq!(
        store.save(id, &saved, &first).await.unwrap(),
        SaveOutcome::Saved
    );
    assert_eq!(
        store.take_lease(id, &first, now).await.unwrap(),
        LeaseOutcome::Taken(saved.clone()),
        "a retried take"
    );
    assert_eq!(
        store.take_lease(id, &second, now).await.unwrap(),
        LeaseOutcome::HeldByAnother(Some(first.clone())),
        "the holder named"
    );
    assert_eq!(
        store
            .save(id, &Checkpoint::default(), &second)
            .await
            .unwrap(),
        SaveOutcome::LeaseLost
    );
    assert!(!store.release_lease(id, &second).await.unwrap());
    let later = now + Duration::from_secs(61);
    assert_eq!(
        store.take_lease(id, &second, later).await.unwrap(),
        LeaseOutcome::Taken(saved.clone()),
        "expired: taken over"
    );
    assert_eq!(
        store
            .save(id, &Checkpoint::default(), &first)
            .await
            .unwrap(),
        SaveOutcome::LeaseLost,
        "the old owner's save is refused"
    );
    assert!(!store.release_lease(id, &first).await.unwrap());
    assert!(store.release_lease(id, &second).await.unwrap());
    let item = stored(&h, table, id).await;
    assert_eq!(n(&item, "totalListed"), Some(7));
    assert!(
        !item.contains_key("leaseOwner") && !item.contains_key("leaseExpiresAt"),
        "{item:?}"
    );

    // The item as the previous version saved it: a full pass past its upload images.
    let old = [
        ("id", s_attr("lister#testcloud")),
        ("mode", s_attr("full")),
        ("listingType", s_attr("private")),
        ("passStartedAt", s_attr(&shared::clock::rfc3339(now))),
        ("passListed", n_attr(48)),
        ("totalListed", n_attr(48)),
        ("lastFullPassListed", n_attr(0)),
        ("updatedAt", s_attr(&shared::clock::rfc3339(now))),
    ];
    let budget = [("id", s_attr("budget#day#2024-01-01")), ("used", n_attr(3))];
    for item in [&old[..], &budget[..]] {
        h.ddb
            .put_item()
            .table_name(table)
            .set_item(Some(
                item.iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ))
            .send()
            .await
            .unwrap();
    }
    let run = lister::handle(
        &h.lister(&[]),
        serde_json::json!({}),
        SystemTime::now() + Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(
        (run.stop, run.listed, run.pass_listed),
        (StopReason::PassComplete, 2, 50),
        "the private and authenticated listings only"
    );
    let item = stored(&h, table, "lister#testcloud").await;
    assert_eq!(n(&item, "lastFullPassListed"), Some(50));
    assert!(!item.contains_key("leaseOwner"), "{item:?}");
    let counter = stored(&h, table, "budget#day#2024-01-01").await;
    assert_eq!(
        (n(&counter, "used"), counter.len()),
        (Some(3), 2),
        "the budget's counter untouched"
    );
}

/// An item of a table keyed by `id`, read consistently.
async fn stored(h: &Harness, table: &str, id: &str) -> crate::common::Item {
    h.ddb
        .get_item()
        .table_name(table)
        .key("id", s_attr(id))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap_or_else(|| panic!("no item {id}"))
}

fn s_attr(v: &str) -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::S(v.into())
}

fn n_attr(v: u64) -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::N(v.to_string())
}
