//! The dead-letter queue as an operator reads it: each message with why it failed. Messages
//! reach the queue through the work queue's redrive policy, so they carry their body only; the
//! reason is on the asset's item (or, for a body that is not a work message, in the body).

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use shared::store::{DynamoResultStore, ItemState, ResultStore, Status};

/// One dead letter and its reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetterRow {
    pub message_id: String,
    /// Absent when the body is not a work message.
    pub public_id: Option<String>,
    /// The asset's delivery type; absent when the body is not a work message.
    pub delivery_type: Option<String>,
    /// The asset's item key in the results table (see `shared::message::item_key`).
    pub key: Option<String>,
    /// The queue SQS moved it from (set only when the redrive policy moved it).
    pub source_queue: Option<String>,
    pub receive_count: u32,
    pub reason: String,
    pub body: String,
    /// When the asset was deleted in Cloudinary (its item a tombstone, see
    /// [`crate::deleted`]); absent when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// For an asset renamed away: its new item key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renamed_to: Option<String>,
}

/// Receives up to `max` messages of the queue without deleting them, each hidden for
/// `hide_secs` while it is read; `release` makes them visible again.
pub async fn peek(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    max: usize,
    hide_secs: i32,
) -> anyhow::Result<Vec<Message>> {
    let mut all: Vec<Message> = Vec::new();
    let mut empty = 0;
    while all.len() < max && empty < 2 {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages((max - all.len()).clamp(1, 10) as i32)
            .visibility_timeout(hide_secs)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .with_context(|| format!("receiving from {url}"))?
            .messages
            .unwrap_or_default();
        empty = if got.is_empty() { empty + 1 } else { 0 };
        all.extend(got);
    }
    Ok(all)
}

/// Makes received messages visible again at once.
pub async fn release(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    messages: &[Message],
) -> anyhow::Result<()> {
    use shared::queue::{SqsQueue, WorkQueue};
    let handles: Vec<&str> = messages
        .iter()
        .filter_map(Message::receipt_handle)
        .collect();
    let failures = SqsQueue::new(sqs.clone(), url)
        .return_now(&handles)
        .await
        .map_err(|e| anyhow::anyhow!(shared::error::error_chain(&e)))?;
    if let Some(error) = failures.into_iter().flatten().next() {
        anyhow::bail!("making messages of {url} visible again failed: {error}");
    }
    Ok(())
}

/// Each message with its reason and, for a deleted asset, its deletion, read from the results
/// table (two reads per 100 assets).
pub async fn describe(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    messages: &[Message],
) -> anyhow::Result<Vec<DeadLetterRow>> {
    let parsed: Vec<Result<shared::message::WorkMessage, String>> = messages
        .iter()
        .map(|m| shared::worker::parse_body(m.body().unwrap_or_default()))
        .collect();
    let ids: Vec<String> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().map(|w| w.item_key()))
        .collect();
    let states: HashMap<String, ItemState> = DynamoResultStore::new(ddb.clone(), table)
        .states(&ids)
        .await
        .map_err(|e| anyhow::anyhow!(shared::error::error_chain(&e)))?;
    let tombstones = crate::deleted::tombstones(ddb, table, &ids).await?;
    Ok(messages
        .iter()
        .zip(parsed)
        .map(|(m, parsed)| {
            let attribute = |name: MessageSystemAttributeName| {
                m.attributes().and_then(|a| a.get(&name)).cloned()
            };
            let (message, reason) = match parsed {
                Err(reason) => (None, format!("not a work message: {reason}")),
                Ok(w) => {
                    let reason = reason_on_item(states.get(&w.item_key()));
                    (Some(w), reason)
                }
            };
            let gone = message.as_ref().and_then(|w| tombstones.get(&w.item_key()));
            DeadLetterRow {
                deleted_at: gone.map(|t| t.deleted_at.clone()),
                renamed_to: gone.and_then(|t| t.renamed_to.clone()),
                message_id: m.message_id().unwrap_or_default().to_string(),
                key: message.as_ref().map(|w| w.item_key()),
                delivery_type: message.as_ref().map(|w| w.delivery_type.clone()),
                public_id: message.map(|w| w.public_id),
                source_queue: attribute(MessageSystemAttributeName::DeadLetterQueueSourceArn),
                receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0),
                reason,
                body: m.body().unwrap_or_default().to_string(),
            }
        })
        .collect())
}

fn reason_on_item(state: Option<&ItemState>) -> String {
    match state {
        Some(state) if state.status == Status::Failed => state
            .error
            .clone()
            .unwrap_or_else(|| "failed, with no reason recorded".into()),
        Some(state) => format!(
            "no failure recorded: the asset is {} (a redrive skips it)",
            state.status.as_str()
        ),
        None => "no failure recorded on the asset (its receives ran out without a result)".into(),
    }
}

/// How a message move task ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MoveTaskReport {
    pub status: String,
    pub moved: i64,
    pub to_move: i64,
    pub failure_reason: Option<String>,
}

/// The ARN of the queue at `url`.
pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<String> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .with_context(|| format!("reading the ARN of {url}"))?
        .attributes
        .and_then(|mut a| a.remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .with_context(|| format!("{url} has no QueueArn"))
}

/// Starts a message move task out of the dead-letter queue, as the console's "Start DLQ
/// redrive" does (without a destination each message goes back to the queue the redrive
/// policy moved it from), and waits, polling every `poll`, until it ends.
pub async fn move_task(
    sqs: &aws_sdk_sqs::Client,
    dlq_url: &str,
    destination_url: Option<&str>,
    poll: std::time::Duration,
) -> anyhow::Result<MoveTaskReport> {
    let source = queue_arn(sqs, dlq_url).await?;
    let destination = match destination_url {
        Some(url) => Some(queue_arn(sqs, url).await?),
        None => None,
    };
    let handle = sqs
        .start_message_move_task()
        .source_arn(&source)
        .set_destination_arn(destination)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "StartMessageMoveTask on {source}: {}",
                e.into_service_error()
            )
        })?
        .task_handle
        .unwrap_or_default();
    loop {
        let tasks = sqs
            .list_message_move_tasks()
            .source_arn(&source)
            .max_results(10)
            .send()
            .await
            .with_context(|| format!("ListMessageMoveTasks on {source}"))?;
        let task = tasks
            .results()
            .iter()
            .find(|t| t.task_handle().is_none_or(|h| h == handle))
            .with_context(|| format!("the move task on {source} is not listed"))?;
        let status = task.status().unwrap_or("UNKNOWN").to_string();
        if status != "RUNNING" && status != "CANCELLING" {
            return Ok(MoveTaskReport {
                status,
                moved: task.approximate_number_of_messages_moved(),
                to_move: task.approximate_number_of_messages_to_move().unwrap_or(0),
                failure_reason: task.failure_reason().map(str::to_string),
            });
        }
        tokio::time::sleep(poll).await;
    }
}
