//! The lister function's handler: a scheduled event in, a run summary out.

use std::time::SystemTime;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde_json::{Value, json};
use shared::cloudinary::{ClientBuildError, CloudinaryClient};
use shared::config::ListerConfig;
use shared::lister::{AssetSource, ListerError, ListerOptions, StopReason, run_lister};
use shared::queue::{SqsQueue, WorkQueue};
use shared::store::{CheckpointStore, DynamoCheckpointStore};

/// The lister wired to the real services.
pub struct Lister<A, Q, C> {
    pub source: A,
    pub queue: Q,
    pub checkpoints: C,
    /// Key of this account's checkpoint item.
    pub checkpoint_id: String,
    pub options: ListerOptions,
}

pub type SqsLister = Lister<CloudinaryClient, SqsQueue, DynamoCheckpointStore>;

pub fn build(
    config: &ListerConfig,
    sdk: &aws_config::SdkConfig,
) -> Result<SqsLister, ClientBuildError> {
    let source = CloudinaryClient::new(&config.cloudinary)?;
    Ok(Lister {
        checkpoint_id: format!("lister#{}", source.cloud_name()),
        source,
        queue: SqsQueue::new(aws_sdk_sqs::Client::new(sdk), &config.work_queue_url),
        checkpoints: DynamoCheckpointStore::new(
            aws_sdk_dynamodb::Client::new(sdk),
            &config.checkpoint_table,
        ),
        options: ListerOptions {
            page_size: config.page_size,
            ..ListerOptions::default()
        },
    })
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
pub async fn handle<A: AssetSource, Q: WorkQueue, C: CheckpointStore>(
    lister: &Lister<A, Q, C>,
    event: Value,
    deadline: SystemTime,
) -> Result<Value, ListerError> {
    let options = ListerOptions {
        full_rescan: full_rescan_requested(&event),
        ..lister.options.clone()
    };
    let report = run_lister(
        &lister.source,
        &lister.queue,
        &lister.checkpoints,
        &lister.checkpoint_id,
        &options,
        deadline,
    )
    .await?;
    let (stop, until) = match &report.stop {
        StopReason::PassComplete => ("pass_complete", None),
        StopReason::Deadline => ("deadline", None),
        StopReason::RateLimited { until } => ("rate_limited", until.map(shared::clock::rfc3339)),
    };
    Ok(json!({
        "mode": report.mode,
        "pages": report.pages,
        "listed": report.listed,
        "enqueued": report.enqueued,
        "pass_listed": report.pass_listed,
        "stop": stop,
        "quota_resets_at": until,
    }))
}

/// CloudWatch metrics of one run, from its summary (the Lambda binary writes them).
pub fn run_metrics(summary: &Value) -> Vec<shared::telemetry::Metric> {
    use shared::telemetry::Metric;
    let n = |k: &str| summary[k].as_u64().unwrap_or(0);
    vec![
        Metric::count("AssetsListed", n("listed")),
        Metric::count("AssetsEnqueued", n("enqueued")),
        Metric::count("ListingPages", n("pages")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescan_flag_from_manual_and_scheduled_events() {
        assert!(full_rescan_requested(&json!({"full_rescan": true})));
        let scheduled: Value =
            serde_json::from_str(include_str!("../tests/fixtures/scheduled_event.json")).unwrap();
        assert!(!full_rescan_requested(&scheduled));
        let mut with_detail = scheduled.clone();
        with_detail["detail"] = json!({"full_rescan": true});
        assert!(full_rescan_requested(&with_detail));
        assert!(!full_rescan_requested(&json!({})));
    }
}
