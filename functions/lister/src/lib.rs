//! The lister function's handler: a scheduled event in, a run summary out.

use std::time::SystemTime;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde_json::Value;
use shared::budget::Budget;
use shared::cloudinary::{ClientBuildError, CloudinaryClient};
use shared::config::ListerConfig;
use shared::lister::{
    AssetSource, ListerError, ListerOptions, ListerPorts, RunSummary, run_lister,
};
use shared::queue::{SqsQueue, WorkQueue};
use shared::store::{CheckpointStore, DynamoCheckpointStore, DynamoResultStore, ResultStore};

/// The lister: asset source, work queue, checkpoint store and results table (for the assets
/// the queue refuses), with its settings.
pub struct Lister<A, Q, C, R> {
    source: A,
    queue: Q,
    checkpoints: C,
    results: R,
    /// Key of this account's checkpoint item.
    checkpoint_id: String,
    options: ListerOptions,
}

impl<A: AssetSource, Q: WorkQueue, C: CheckpointStore, R: ResultStore> Lister<A, Q, C, R> {
    pub fn new(
        source: A,
        queue: Q,
        checkpoints: C,
        results: R,
        checkpoint_id: impl Into<String>,
        options: ListerOptions,
    ) -> Self {
        Self {
            source,
            queue,
            checkpoints,
            results,
            checkpoint_id: checkpoint_id.into(),
            options,
        }
    }
}

/// The lister wired to the real services.
pub type SqsLister = Lister<CloudinaryClient, SqsQueue, DynamoCheckpointStore, DynamoResultStore>;

/// The lister's options for a configuration.
pub fn options(config: &ListerConfig) -> ListerOptions {
    ListerOptions {
        page_size: config.page_size,
        pass_interval: config.pass_interval,
        full_pass_interval: config.full_pass_interval,
        incremental_overlap: config.incremental_overlap,
        scope: config.scope.clone(),
        ..ListerOptions::default()
    }
}

pub fn build(
    config: &ListerConfig,
    sdk: &aws_config::SdkConfig,
) -> Result<SqsLister, ClientBuildError> {
    build_with(config, sdk, options(config))
}

/// Builds the lister with options of the caller's.
pub fn build_with(
    config: &ListerConfig,
    sdk: &aws_config::SdkConfig,
    mut options: ListerOptions,
) -> Result<SqsLister, ClientBuildError> {
    let source = CloudinaryClient::new(&config.cloudinary)?;
    let checkpoint_id = format!("lister#{}", source.cloud_name());
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let checkpoints = DynamoCheckpointStore::new(dynamodb.clone(), &config.checkpoint_table);
    if options.budget.is_none() && config.budget.any() {
        let counters = std::sync::Arc::new(checkpoints.clone());
        options.budget = Some(std::sync::Arc::new(Budget::new(config.budget, counters)));
    }
    Ok(Lister::new(
        source,
        SqsQueue::new(aws_sdk_sqs::Client::new(sdk), &config.work_queue_url),
        checkpoints,
        DynamoResultStore::new(dynamodb, &config.results_table),
        checkpoint_id,
        options,
    ))
}

/// Reads `full_rescan` from the event: top level (manual invoke with `{"full_rescan": true}`)
/// or in an EventBridge event's `detail`.
pub fn full_rescan_requested(event: &Value) -> bool {
    let flag = |v: &Value| {
        v.get("full_rescan")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    if flag(event) {
        return true;
    }
    serde_json::from_value::<EventBridgeEvent<Value>>(event.clone())
        .map(|e| flag(&e.detail))
        .unwrap_or(false)
}

/// Runs the lister until the pass completes, the quota is spent, or the deadline nears.
pub async fn handle<A: AssetSource, Q: WorkQueue, C: CheckpointStore, R: ResultStore>(
    lister: &Lister<A, Q, C, R>,
    event: Value,
    deadline: SystemTime,
) -> Result<RunSummary, ListerError> {
    let options = ListerOptions {
        full_rescan: full_rescan_requested(&event),
        ..lister.options.clone()
    };
    run_lister(
        ListerPorts {
            source: &lister.source,
            queue: &lister.queue,
            checkpoints: &lister.checkpoints,
            results: &lister.results,
        },
        &lister.checkpoint_id,
        &options,
        deadline,
    )
    .await
}

/// CloudWatch metrics of one run (the Lambda binary writes them).
pub fn run_metrics(summary: &RunSummary) -> Vec<shared::telemetry::Metric> {
    use shared::telemetry::Metric;
    vec![
        Metric::count("AssetsListed", summary.listed),
        Metric::count("AssetsEnqueued", summary.enqueued),
        Metric::count("AssetsRefusedByQueue", summary.refused),
        Metric::count("ListingPages", summary.pages),
        // One for every run that ended well, whatever it stopped for: the alarm on a silent
        // lister watches it.
        Metric::count("ListerRunsCompleted", 1),
        Metric::count(
            "ListerPassesCompleted",
            u64::from(summary.stop == shared::lister::StopReason::PassComplete),
        ),
        // Runs that found another holding the checkpoint: one after a run killed at its
        // deadline (its lease outlives it by a margin); more say two triggers overlap.
        Metric::count(
            "ListerRunsOverlapped",
            u64::from(summary.stop == shared::lister::StopReason::AnotherRun),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rescan_flag_from_manual_and_scheduled_events() {
        assert!(full_rescan_requested(&json!({"full_rescan": true})));
        let scheduled: Value =
            serde_json::from_str(include_str!("../../../events/lister-schedule.json")).unwrap();
        assert!(!full_rescan_requested(&scheduled));
        let mut with_detail = scheduled.clone();
        with_detail["detail"] = json!({"full_rescan": true});
        assert!(full_rescan_requested(&with_detail));
        assert!(!full_rescan_requested(&json!({})));
        let sample: Value =
            serde_json::from_str(include_str!("../../../events/lister-full-rescan.json")).unwrap();
        assert!(
            full_rescan_requested(&sample),
            "events/lister-full-rescan.json"
        );
    }
}
