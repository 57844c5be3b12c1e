//! What AWS does around the worker: its SQS event source mappings (the work queue's and the
//! read-back queue's). Receives batches, runs a bounded number of invocations at once, deletes
//! the successes, and leaves the failures to come back after the visibility timeout (so
//! `maxReceiveCount` moves poison to the DLQ).

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};

#[derive(Debug, Clone)]
pub struct MappingSettings {
    pub queue_url: String,
    pub queue_arn: String,
    /// Records per invocation: one receive's (SQS receives at most 10 at a time), or, with a
    /// batching window, up to this many gathered across receives.
    pub batch_size: i32,
    /// How long receives are gathered into one batch (`MaximumBatchingWindowInSeconds`); zero
    /// invokes with each receive's messages.
    pub batching_window: Duration,
    /// Invocations at once (`ScalingConfig.MaximumConcurrency`).
    pub max_concurrency: usize,
    /// Each invocation's time budget; its deadline is handed to the handler.
    pub function_timeout: Duration,
    /// Stop once the queue has stayed empty (visible, in flight and delayed) for this long.
    pub idle_grace: Duration,
    /// Stop regardless after this long.
    pub max_duration: Duration,
    /// Share of invocations killed part-way (chaos testing; every n-th one, a few ms in): their
    /// batch is neither answered nor deleted, as when a Lambda instance dies.
    pub kill_rate: f64,
    /// The mapping's switch (`ocr-ctl pause` turns it off): while off no batch is received,
    /// the invocations in flight finish, and the drain waits.
    pub enabled: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// The same function's second mapping (the read-back queue's), drained alongside: its
    /// queue, batch, window and concurrency are its own; the rest is taken from this one. The
    /// drain ends when both queues are empty.
    pub read_back: Option<Box<MappingSettings>>,
}

/// Counters of a drain, readable while it runs (for progress lines).
#[derive(Debug, Default)]
pub struct DrainStats {
    pub invocations: AtomicU64,
    pub records: AtomicU64,
    pub deleted: AtomicU64,
    pub failed: AtomicU64,
    pub handler_errors: AtomicU64,
    pub killed: AtomicU64,
    in_flight: AtomicUsize,
}

impl DrainStats {
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.invocations.load(Ordering::Relaxed),
            self.records.load(Ordering::Relaxed),
            self.deleted.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Why a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    Empty,
    TimedOut,
}

/// Builds the Lambda SQS event for received messages, as the event source mapping does.
pub fn sqs_event(messages: &[aws_sdk_sqs::types::Message], queue_arn: &str) -> SqsEvent {
    let records = messages
        .iter()
        .map(|m| {
            let mut r = SqsMessage::default();
            r.message_id = m.message_id().map(str::to_string);
            r.receipt_handle = m.receipt_handle().map(str::to_string);
            r.body = m.body().map(str::to_string);
            r.md5_of_body = m.md5_of_body().map(str::to_string);
            r.attributes = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            r.event_source = Some("aws:sqs".into());
            r.event_source_arn = Some(queue_arn.to_string());
            r.aws_region = Some("us-east-1".into());
            r
        })
        .collect();
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

/// Messages one receive returns at most (SQS's limit): the local loop invokes the handler with
/// one receive's messages, where Lambda's pollers gather up to the batch size across receives.
pub const RECEIVE_MAX: usize = 10;

/// Polls the queue and invokes `handler` until the queue is drained (or `max_duration`).
pub async fn drain<H, Fut>(
    sqs: &aws_sdk_sqs::Client,
    settings: &MappingSettings,
    stats: &DrainStats,
    handler: H,
) -> anyhow::Result<DrainEnd>
where
    H: Fn(SqsEvent, SystemTime) -> Fut + Sync,
    Fut: Future<Output = Result<SqsBatchResponse, String>>,
{
    let started = Instant::now();
    let idle_since = std::sync::Mutex::new(None::<Instant>);
    let lanes: Vec<MappingSettings> = std::iter::once(settings.clone())
        .chain(settings.read_back.as_deref().map(|r| MappingSettings {
            function_timeout: settings.function_timeout,
            idle_grace: settings.idle_grace,
            max_duration: settings.max_duration,
            kill_rate: settings.kill_rate,
            enabled: settings.enabled.clone(),
            read_back: None,
            ..r.clone()
        }))
        .collect();
    let queues: Vec<&str> = lanes.iter().map(|l| l.queue_url.as_str()).collect();
    let idle_since = &idle_since;
    let queues = &queues;
    let handler = &handler;
    let pollers = lanes.iter().flat_map(|lane| {
        (0..lane.max_concurrency.max(1)).map(move |_| async move {
            loop {
                if started.elapsed() > settings.max_duration {
                    return Ok::<DrainEnd, anyhow::Error>(DrainEnd::TimedOut);
                }
                if lane
                    .enabled
                    .as_ref()
                    .is_some_and(|on| !on.load(Ordering::SeqCst))
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                let messages = receive_batch(sqs, lane).await?;
                if messages.is_empty() {
                    if stats.in_flight.load(Ordering::SeqCst) == 0 {
                        let mut total = 0;
                        for url in queues {
                            total += shared::queue::queue_depth(sqs, url)
                                .await
                                .with_context(|| format!("reading the depth of {url}"))?
                                .total();
                        }
                        if total == 0 {
                            let mut idle = idle_since.lock().unwrap_or_else(|e| e.into_inner());
                            let since = *idle.get_or_insert_with(Instant::now);
                            if since.elapsed() >= settings.idle_grace {
                                return Ok(DrainEnd::Empty);
                            }
                            continue;
                        }
                    }
                    *idle_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    continue;
                }
                *idle_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
                stats.in_flight.fetch_add(1, Ordering::SeqCst);
                let result = invoke(sqs, lane, stats, handler, &messages).await;
                stats.in_flight.fetch_sub(1, Ordering::SeqCst);
                result?;
            }
        })
    });
    let ends = futures::future::try_join_all(pollers).await?;
    Ok(if ends.contains(&DrainEnd::TimedOut) {
        DrainEnd::TimedOut
    } else {
        DrainEnd::Empty
    })
}

/// One batch from the lane's queue: a receive's messages, or with a batching window, receives
/// gathered until the batch is full or the window has passed since the first message.
async fn receive_batch(
    sqs: &aws_sdk_sqs::Client,
    lane: &MappingSettings,
) -> anyhow::Result<Vec<aws_sdk_sqs::types::Message>> {
    let wanted = lane.batch_size.max(1) as usize;
    let mut batch: Vec<aws_sdk_sqs::types::Message> = Vec::new();
    let mut first = None::<Instant>;
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&lane.queue_url)
            .max_number_of_messages((wanted - batch.len()).clamp(1, RECEIVE_MAX) as i32)
            .wait_time_seconds(if batch.is_empty() { 1 } else { 0 })
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .with_context(|| format!("ReceiveMessage on {}", lane.queue_url))?;
        let got = received.messages.unwrap_or_default();
        let ended = got.is_empty();
        batch.extend(got);
        if batch.is_empty() {
            return Ok(batch);
        }
        let since = *first.get_or_insert_with(Instant::now);
        if batch.len() >= wanted || since.elapsed() >= lane.batching_window {
            return Ok(batch);
        }
        if ended {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn invoke<H, Fut>(
    sqs: &aws_sdk_sqs::Client,
    settings: &MappingSettings,
    stats: &DrainStats,
    handler: &H,
    messages: &[aws_sdk_sqs::types::Message],
) -> anyhow::Result<()>
where
    H: Fn(SqsEvent, SystemTime) -> Fut + Sync,
    Fut: Future<Output = Result<SqsBatchResponse, String>>,
{
    let index = stats.invocations.fetch_add(1, Ordering::Relaxed);
    stats
        .records
        .fetch_add(messages.len() as u64, Ordering::Relaxed);
    let deadline = SystemTime::now() + settings.function_timeout;
    let event = sqs_event(messages, &settings.queue_arn);
    // Every (1/kill_rate)-th invocation dies 5-55 ms in: before, during or after its calls.
    let period = if settings.kill_rate > 0.0 {
        (1.0 / settings.kill_rate).round().max(1.0) as u64
    } else {
        0
    };
    let kill_after = (period > 0 && index % period == period - 1)
        .then(|| Duration::from_millis(5 + (index * 7919) % 50));
    let budget = kill_after.unwrap_or(settings.function_timeout);
    let response = match tokio::time::timeout(budget, handler(event, deadline)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            // A handler error returns the whole batch to the queue, as Lambda does.
            tracing::warn!(error = %e, "worker invocation failed; the whole batch returns");
            stats.handler_errors.fetch_add(1, Ordering::Relaxed);
            stats
                .failed
                .fetch_add(messages.len() as u64, Ordering::Relaxed);
            return Ok(());
        }
        Err(_) if kill_after.is_some() => {
            tracing::warn!(
                "worker invocation killed; its batch returns after the visibility timeout"
            );
            stats.killed.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        Err(_) => {
            tracing::warn!("worker invocation timed out; the whole batch returns");
            stats.handler_errors.fetch_add(1, Ordering::Relaxed);
            stats
                .failed
                .fetch_add(messages.len() as u64, Ordering::Relaxed);
            return Ok(());
        }
    };
    let failed: HashSet<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    let to_delete: Vec<DeleteMessageBatchRequestEntry> = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| !failed.contains(m.message_id().unwrap_or_default()))
        .filter_map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle()?)
                .build()
                .ok()
        })
        .collect();
    stats
        .failed
        .fetch_add(failed.len() as u64, Ordering::Relaxed);
    // DeleteMessageBatch takes at most ten entries.
    for chunk in to_delete.chunks(RECEIVE_MAX) {
        let out = sqs
            .delete_message_batch()
            .queue_url(&settings.queue_url)
            .set_entries(Some(chunk.to_vec()))
            .send()
            .await
            .with_context(|| format!("DeleteMessageBatch on {}", settings.queue_url))?;
        anyhow::ensure!(
            out.failed().is_empty(),
            "DeleteMessageBatch failed for {:?}",
            out.failed()
        );
        stats
            .deleted
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}
