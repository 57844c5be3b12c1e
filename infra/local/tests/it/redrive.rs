//! The local moto's dead-letter redrive, as SQS documents it: the redrive policy records where a
//! message came from, and message move tasks (the console's "Start DLQ redrive") send each message
//! back there, or to a destination given; a message without a source fails the task. Driven
//! through the AWS SDK for Rust, as the product and `ocr-ctl` would drive SQS.

use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use local_stack::scenario::Scenario;

const SOURCE: &str = "DeadLetterQueueSourceArn";

async fn scenario() -> Scenario {
    let sdk = local_stack::scenario::local_sdk()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Scenario::provision(&sdk, "redrive", crate::common::fast_retry_settings(2))
        .await
        .expect("provisioning on moto")
}

/// Receives the work queue's messages without deleting them until the redrive policy has moved
/// them all to the DLQ.
async fn exhaust(s: &Scenario) {
    for _ in 0..20 {
        s.sqs
            .receive_message()
            .queue_url(&s.stack.work_queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .expect("receive");
        let (work, _) = s.depths().await.unwrap();
        if work.total() == 0 {
            return;
        }
    }
    panic!("the redrive policy did not move the messages");
}

/// The DLQ's messages as (body, recorded source), made visible again at once.
async fn dead_letters(s: &Scenario) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    for _ in 0..3 {
        let got = s
            .sqs
            .receive_message()
            .queue_url(&s.stack.dead_letter_queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive dlq")
            .messages
            .unwrap_or_default();
        for m in got {
            let source = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::DeadLetterQueueSourceArn))
                .cloned();
            let body = m.body().unwrap_or_default().to_string();
            if !found.iter().any(|(b, _)| *b == body) {
                found.push((body, source));
            }
        }
    }
    found.sort();
    found
}

/// Has the local moto keep (or renew) the id and receive count of messages moved into `queue`.
async fn keep_identity(queue: &str, keep: bool) {
    let endpoint = local_stack::aws::local_endpoint().unwrap();
    reqwest::Client::new()
        .post(format!(
            "{endpoint}/_redrive?queue={queue}&keep_id={k}&keep_count={k}",
            k = u8::from(keep)
        ))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
}

async fn wait_for_task(s: &Scenario) -> aws_sdk_sqs::types::ListMessageMoveTasksResultEntry {
    for _ in 0..50 {
        let tasks = s
            .sqs
            .list_message_move_tasks()
            .source_arn(&s.stack.dead_letter_queue_arn)
            .max_results(10)
            .send()
            .await
            .expect("list tasks");
        let latest = tasks.results()[0].clone();
        if latest.status() != Some("RUNNING") {
            return latest;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the move task did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_tasks_return_messages_to_their_source_or_a_destination() {
    let s = scenario().await;
    s.sqs
        .send_message()
        .queue_url(&s.stack.work_queue_url)
        .message_body("moved by the redrive policy")
        .send()
        .await
        .unwrap();
    exhaust(&s).await;
    s.sqs
        .send_message()
        .queue_url(&s.stack.dead_letter_queue_url)
        .message_body("sent by hand")
        .send()
        .await
        .unwrap();
    assert_eq!(
        dead_letters(&s).await,
        vec![
            (
                "moved by the redrive policy".to_string(),
                Some(s.stack.work_queue_arn.clone())
            ),
            ("sent by hand".to_string(), None),
        ],
        "only a move by the redrive policy records its source ({SOURCE})"
    );

    // Only a dead-letter queue can be a task's source.
    let err = s
        .sqs
        .start_message_move_task()
        .source_arn(&s.stack.work_queue_arn)
        .send()
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("Dead Letter Queue"), "{err:?}");

    // The console's default: back to each message's source. The hand-sent one has none: it
    // stays, and the task fails.
    s.sqs
        .start_message_move_task()
        .source_arn(&s.stack.dead_letter_queue_arn)
        .send()
        .await
        .expect("start");
    let task = wait_for_task(&s).await;
    assert_eq!(task.status(), Some("FAILED"));
    assert_eq!(
        task.failure_reason(),
        Some("CouldNotDetermineMessageSource")
    );
    let (work, dlq) = s.depths().await.unwrap();
    assert_eq!((work.visible, dlq.visible), (1, 1));

    // A custom destination takes every message.
    s.sqs
        .start_message_move_task()
        .source_arn(&s.stack.dead_letter_queue_arn)
        .destination_arn(&s.stack.work_queue_arn)
        .send()
        .await
        .expect("start");
    let task = wait_for_task(&s).await;
    assert_eq!(
        (task.status(), task.approximate_number_of_messages_moved()),
        (Some("COMPLETED"), 1)
    );
    let (work, dlq) = s.depths().await.unwrap();
    assert_eq!((work.visible, dlq.total()), (2, 0));
    s.teardown().await.unwrap();
}

/// Whether SQS keeps a redriven message's id and receive count is not documented: the launcher
/// can do either, per destination queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redriven_message_is_new_by_default_or_keeps_its_identity_when_asked() {
    for keep in [false, true] {
        let s = scenario().await;
        keep_identity(&s.stack.work_queue_arn, keep).await;
        let sent = s
            .sqs
            .send_message()
            .queue_url(&s.stack.work_queue_url)
            .message_body("x")
            .send()
            .await
            .unwrap()
            .message_id
            .unwrap();
        exhaust(&s).await;
        s.sqs
            .start_message_move_task()
            .source_arn(&s.stack.dead_letter_queue_arn)
            .send()
            .await
            .unwrap();
        assert_eq!(wait_for_task(&s).await.status(), Some("COMPLETED"));
        let back = s
            .sqs
            .receive_message()
            .queue_url(&s.stack.work_queue_url)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        assert_eq!(back.len(), 1, "keep={keep}: one message in, one back");
        let count: u32 = back[0]
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|c| c.parse().ok())
            .unwrap();
        assert_eq!(back[0].message_id() == Some(sent.as_str()), keep, "the id");
        assert_eq!(count > 1, keep, "the receive count ({count})");
        s.teardown().await.unwrap();
    }
}

/// The product's redrive, as an operator runs it: assets that failed for good (gone, and one
/// that Cloudinary kept failing) reach the DLQ through the redrive policy, each with its reason
/// on the item and no more Cloudinary calls than the first failure; once the cause is fixed, a
/// redrive to the source queue (the console's default, here `ocr-ctl redrive --task`) or to the
/// work queue as a custom destination brings every one back, and the worker finishes them,
/// whether SQS renews or keeps each message's id and receive count.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dead_letter_is_redriven_and_done_both_ways_with_either_identity() {
    use crate::common::{Harness, asset, fast_retry_settings, s};
    let late = |i: usize| format!("late/{i} & co?");
    for (to_source, keep) in [(true, false), (true, true), (false, false), (false, true)] {
        let case = format!("to source: {to_source}, identity kept: {keep}");
        let h = Harness::new(
            vec![asset("flaky", Some("at last"))],
            fast_retry_settings(3),
            |c| {
                c.forced_status.insert("flaky".into(), 500);
            },
        )
        .await;
        keep_identity(&h.stack.work_queue_arn, keep).await;
        keep_identity(&h.stack.read_back_queue_arn, keep).await;
        for i in 0..3 {
            h.send_asset(&late(i)).await;
        }
        h.send_asset("flaky").await;
        let worker = h.worker(&[]);
        h.drain(&worker, 2, Duration::from_secs(60)).await;

        let dlq = h.dead_letters().await;
        assert_eq!(dlq.len(), 4, "{case}: {dlq:?}");
        for row in &dlq {
            // The failing one was read back on the read-back queue, and left from there.
            let source = if row.body.contains("flaky") {
                &h.stack.read_back_queue_arn
            } else {
                &h.stack.work_queue_arn
            };
            assert_eq!(
                row.source_queue.as_deref(),
                Some(source.as_str()),
                "{case}: {row:?}"
            );
            assert!(
                !row.reason.starts_with("no failure recorded"),
                "{case}: {row:?}"
            );
        }
        for i in 0..3 {
            assert_eq!(
                h.emulator.ocr_requests(&late(i)),
                1,
                "{case}: fails fast after"
            );
        }
        // One on the work queue, then one on each receive of the read-back queue.
        assert_eq!(
            h.emulator.ocr_requests("flaky"),
            4,
            "{case}: one call a receive"
        );

        // The cause is fixed; the operator redrives.
        for i in 0..3 {
            h.emulator.add_asset(asset(&late(i), Some("found")));
        }
        h.emulator.configure(|c| {
            c.forced_status.remove("flaky");
        });
        if to_source {
            let out = crate::ctl::ctl(&h, &["redrive", "--task"]).await.unwrap();
            assert!(out.contains("4 of 4 messages moved"), "{case}: {out}");
        } else {
            let task = ocr_ctl::dead_letters::move_task(
                &h.sqs,
                &h.stack.dead_letter_queue_url,
                Some(&h.stack.work_queue_url),
                Duration::from_millis(100),
            )
            .await
            .unwrap();
            assert_eq!(
                (task.status.as_str(), task.moved),
                ("COMPLETED", 4),
                "{case}"
            );
        }
        h.drain(&worker, 2, Duration::from_secs(60)).await;
        let (work, dlq) = h.depths().await.unwrap();
        assert_eq!((work.total(), dlq.total()), (0, 0), "{case}");
        for id in [late(0), late(1), late(2), "flaky".into()] {
            let item = h.item(&id).await.unwrap();
            assert_eq!(s(&item, "status").as_deref(), Some("done"), "{case}: {id}");
            assert_eq!(item.get("failedMessages"), None, "{case}: {id}");
        }
        assert_eq!(
            h.emulator.ocr_requests("flaky"),
            5,
            "{case}: tried once more"
        );
        h.scenario.teardown().await.unwrap();
    }
}
