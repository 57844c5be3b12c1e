//! The worker function's handler: an SQS batch in, a partial batch response out.

use std::sync::Arc;
use std::time::SystemTime;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use shared::budget::Budget;
use shared::cloudinary::{ClientBuildError, CloudinaryClient};
use shared::config::WorkerConfig;
use shared::queue::{SqsQueue, WorkQueue};
use shared::store::DeadLetterKind;
use shared::store::{DynamoCheckpointStore, DynamoResultStore, ResultStore};
use shared::worker::{
    BatchOutcome, DeferCause, Disposition, InboundRecord, OcrService, Worker, WorkerSettings,
};

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
        read_back_queue: config.read_back_queue_url.is_some(),
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
    let queue = SqsQueue::new(sqs, &config.work_queue_url);
    let queue = match &config.read_back_queue_url {
        Some(url) => queue.with_read_back_queue(url),
        None => queue,
    };
    let worker = Worker::new(
        ocr,
        DynamoResultStore::new(dynamo.clone(), &config.results_table),
        queue,
        settings,
    );
    Ok(match &config.checkpoint_table {
        Some(table) if config.budget.any() => {
            let counters = Arc::new(DynamoCheckpointStore::new(dynamo, table));
            worker.with_budget(Arc::new(Budget::new(config.budget, counters)))
        }
        _ => worker,
    })
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
        let from_read_back_queue = r
            .event_source_arn
            .as_deref()
            .is_some_and(|arn| worker.queue().is_read_back_queue(arn));
        records.push(InboundRecord {
            message_id,
            body: r.body.unwrap_or_default(),
            receive_count,
            receipt_handle: r.receipt_handle.unwrap_or_default(),
            from_read_back_queue,
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

/// CloudWatch metrics of one batch (the Lambda binary writes them as Embedded Metric Format):
/// assets by what became of them, failures for good by kind, deferrals by cause, credential
/// refusals, Cloudinary's latency and the quota left.
pub fn batch_metrics(outcome: &BatchOutcome) -> Vec<shared::telemetry::Metric> {
    use shared::telemetry::Metric;
    let tally = shared::worker::tally(outcome);
    let n = |k: &str| tally.get(k).copied().unwrap_or(0) as u64;
    let count = |keep: &dyn Fn(&Disposition) -> bool| {
        outcome.results.iter().filter(|(_, d)| keep(d)).count() as u64
    };
    let failed = |kind: DeadLetterKind| {
        count(&|d| matches!(d, Disposition::DeadLettered { kind: k, .. } if *k == kind))
    };
    let mut metrics = vec![
        Metric::count("AssetsOcrd", n("done")),
        Metric::count("AssetsNoText", n("no_text")),
        Metric::count("AssetsFailed", n("dead_lettered")),
        Metric::count("FailedPermanent", failed(DeadLetterKind::Permanent)),
        Metric::count("FailedExhausted", failed(DeadLetterKind::Exhausted)),
        Metric::count("RateLimitDeadLetters", failed(DeadLetterKind::RateLimited)),
        Metric::count("FailingFast", n("failing_fast")),
        Metric::count("AssetsDeferred", n("deferred")),
        Metric::count("AssetsRetried", n("retry")),
        Metric::count("AssetsSkipped", n("skipped")),
        Metric::count(
            "CloudinaryCredentialsRefused",
            outcome.credentials_refused as u64,
        ),
    ];
    for cause in DeferCause::ALL {
        let deferred = count(&|d| matches!(d, Disposition::Deferred(x) if x.cause == cause));
        metrics.push(Metric::count(cause.metric(), deferred));
    }
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
    if let Some(limit) = outcome.quota_limit {
        metrics.push(Metric::count("CloudinaryQuotaLimit", limit));
    }
    metrics
}

/// The worker a warm instance runs, rebuilt when the Cloudinary secret has changed: after a
/// batch on which Cloudinary refused the credentials, the secret is read again (at most once
/// every `reread_after`), and a new value replaces the worker and its client. A rotated
/// secret is so picked up without waiting for a cold start.
pub struct LiveWorker {
    config: WorkerConfig,
    sdk: aws_config::SdkConfig,
    secret_arn: Option<String>,
    reread_after: std::time::Duration,
    current: std::sync::RwLock<std::sync::Arc<SqsWorker>>,
    last_read: std::sync::Mutex<Option<std::time::Instant>>,
}

/// What a refusal of the credentials led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretCheck {
    /// No refusal in the batch, or the secret was read too recently.
    NotNeeded,
    /// The secret holds the value in use: an operator must fix it.
    Unchanged,
    /// A new value: the worker was rebuilt with it.
    Replaced,
    /// The secret could not be read or parsed; the worker keeps its value.
    Failed(String),
}

impl LiveWorker {
    pub fn new(
        config: WorkerConfig,
        sdk: aws_config::SdkConfig,
        secret_arn: Option<String>,
    ) -> Result<Self, ClientBuildError> {
        let worker = build(&config, &sdk)?;
        Ok(Self {
            config,
            sdk,
            secret_arn,
            reread_after: std::time::Duration::from_secs(60),
            current: std::sync::RwLock::new(std::sync::Arc::new(worker)),
            last_read: std::sync::Mutex::new(None),
        })
    }

    /// Reads the secret again after every refusal, however recent the last read (tests).
    pub fn reread_every_refusal(mut self) -> Self {
        self.reread_after = std::time::Duration::ZERO;
        self
    }

    pub fn current(&self) -> std::sync::Arc<SqsWorker> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Called after each batch.
    pub async fn after_batch(&self, outcome: &BatchOutcome) -> SecretCheck {
        let Some(arn) = self.secret_arn.as_deref() else {
            return SecretCheck::NotNeeded;
        };
        if outcome.credentials_refused == 0 {
            return SecretCheck::NotNeeded;
        }
        {
            let mut last = self.last_read.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < self.reread_after) {
                return SecretCheck::NotNeeded;
            }
            *last = Some(std::time::Instant::now());
        }
        let check = self.reread(arn).await;
        match &check {
            SecretCheck::Replaced => {
                tracing::warn!(
                    "Cloudinary refused the credentials; the secret changed and is now in use"
                )
            }
            SecretCheck::Unchanged => tracing::error!(
                "Cloudinary refused the credentials and the secret holds the same value: fix the secret"
            ),
            SecretCheck::Failed(error) => {
                tracing::error!(%error, "Cloudinary refused the credentials; reading the secret again failed")
            }
            SecretCheck::NotNeeded => {}
        }
        check
    }

    async fn reread(&self, arn: &str) -> SecretCheck {
        let url = match shared::secrets::read_cloudinary_url(&self.sdk, arn).await {
            Ok(url) => url,
            Err(e) => return SecretCheck::Failed(shared::error::error_chain(&e)),
        };
        let credentials = match shared::cloudinary::CloudinaryCredentials::parse(&url) {
            Ok(c) => c,
            Err(e) => {
                return SecretCheck::Failed(format!("the secret is not a CLOUDINARY_URL: {e}"));
            }
        };
        let current = self.current();
        if credentials == *current.ocr().credentials()
            && current.ocr().credentials_fault().is_none()
        {
            return SecretCheck::Unchanged;
        }
        let mut config = self.config.clone();
        config.cloudinary.credentials = credentials;
        config.cloudinary.credentials_fault = None;
        match build(&config, &self.sdk) {
            Ok(worker) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) =
                    std::sync::Arc::new(worker);
                SecretCheck::Replaced
            }
            Err(e) => SecretCheck::Failed(shared::error::error_chain(&e)),
        }
    }
}
