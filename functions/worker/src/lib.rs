//! The worker function's handler: an SQS batch in, a partial batch response out.

use std::time::SystemTime;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use shared::cloudinary::{ClientBuildError, CloudinaryClient};
use shared::config::WorkerConfig;
use shared::queue::{SqsQueue, WorkQueue};
use shared::store::{DynamoResultStore, ResultStore};
use shared::worker::{BatchOutcome, InboundRecord, OcrService, Worker, WorkerSettings};

/// The worker wired to the real services.
pub type SqsWorker = Worker<CloudinaryClient, DynamoResultStore, SqsQueue>;

/// The worker's settings for a configuration.
pub fn settings(config: &WorkerConfig) -> WorkerSettings {
    WorkerSettings {
        concurrency: config.concurrency,
        max_receive_count: config.max_receive_count,
        instances: config.instances,
        // Never start a record that could not finish its Cloudinary call before the deadline.
        deadline_margin: config.cloudinary.timeout + shared::defaults::WORKER_DEADLINE_SLACK,
        ..WorkerSettings::default()
    }
}

/// Builds the worker once per cold start.
pub fn build(
    config: &WorkerConfig,
    sdk: &aws_config::SdkConfig,
) -> Result<SqsWorker, ClientBuildError> {
    build_with(config, sdk, settings(config))
}

/// Builds the worker with settings of the caller's (the local chaos run shortens its margins).
pub fn build_with(
    config: &WorkerConfig,
    sdk: &aws_config::SdkConfig,
    settings: WorkerSettings,
) -> Result<SqsWorker, ClientBuildError> {
    let ocr = CloudinaryClient::new(&config.cloudinary)?;
    let dynamo = aws_sdk_dynamodb::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    Ok(Worker::new(
        ocr,
        DynamoResultStore::new(dynamo, &config.results_table),
        SqsQueue::new(sqs, &config.work_queue_url),
        settings,
    ))
}

/// Maps the SQS event to the use case and back. Records without a message id cannot be
/// reported one by one, so such a batch fails as a whole (and comes back).
pub async fn handle_with_outcome<O, S, Q>(
    worker: &Worker<O, S, Q>,
    event: SqsEvent,
    deadline: SystemTime,
) -> Result<(SqsBatchResponse, BatchOutcome), String>
where
    O: OcrService,
    S: ResultStore,
    Q: WorkQueue,
{
    let mut records = Vec::with_capacity(event.records.len());
    for r in event.records {
        let Some(message_id) = r.message_id else {
            return Err(
                "an SQS record has no messageId; the whole batch is returned to the queue".into(),
            );
        };
        let receive_count = r
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        records.push(InboundRecord {
            message_id,
            body: r.body.unwrap_or_default(),
            receive_count,
            receipt_handle: r.receipt_handle.unwrap_or_default(),
        });
    }
    let outcome = worker.process_batch(records, deadline).await;
    let mut response = SqsBatchResponse::default();
    for id in outcome.failed_message_ids() {
        response.add_failure(id);
    }
    let tally = shared::worker::tally(&outcome);
    tracing::info!(records = outcome.results.len(), ?tally, "batch processed");
    Ok((response, outcome))
}

pub async fn handle<O, S, Q>(
    worker: &Worker<O, S, Q>,
    event: SqsEvent,
    deadline: SystemTime,
) -> Result<SqsBatchResponse, String>
where
    O: OcrService,
    S: ResultStore,
    Q: WorkQueue,
{
    handle_with_outcome(worker, event, deadline)
        .await
        .map(|(r, _)| r)
}

/// CloudWatch metrics of one batch (the Lambda binary writes them as Embedded Metric Format).
pub fn batch_metrics(outcome: &BatchOutcome) -> Vec<shared::telemetry::Metric> {
    use shared::telemetry::Metric;
    let tally = shared::worker::tally(outcome);
    let n = |k: &str| tally.get(k).copied().unwrap_or(0) as u64;
    let mut metrics = vec![
        Metric::count("AssetsOcrd", n("done")),
        Metric::count("AssetsNoText", n("no_text")),
        Metric::count("AssetsFailed", n("dead_lettered")),
        Metric::count("FailingFast", n("failing_fast")),
        Metric::count("AssetsDeferred", n("deferred")),
        Metric::count("AssetsRetried", n("retry")),
        Metric::count("AssetsSkipped", n("skipped")),
    ];
    let calls = &outcome.cloudinary_latency_ms;
    if !calls.is_empty() {
        metrics.push(Metric {
            name: "CloudinaryLatency",
            value: calls.iter().sum::<u64>() as f64 / calls.len() as f64,
            unit: "Milliseconds",
        });
    }
    if let Some(remaining) = outcome.quota_remaining {
        metrics.push(Metric::count("CloudinaryQuotaRemaining", remaining));
    }
    metrics
}
