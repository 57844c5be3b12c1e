//! Runs the pipeline without AWS: SDK clients for the local AWS endpoint (moto), provisioning
//! of the stack's tables and queues, and the loop that does what the SQS event source
//! mapping does around the worker.

pub mod aws;
pub mod bench;
pub mod chaos;
pub mod lambda_api;
pub mod live;
pub mod notifier;
pub mod provision;
pub mod runner;
pub mod runtime_api;
pub mod scenario;
pub mod settings;
pub mod sim;
pub mod template;

/// Every item of a table, keyed by `publicId` (for checks on small tables).
pub async fn scan_items(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> anyhow::Result<
    std::collections::HashMap<
        String,
        std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    >,
> {
    use anyhow::Context;
    let mut items = std::collections::HashMap::new();
    let mut pages = ddb.scan().table_name(table).into_paginator().send();
    while let Some(page) = pages.next().await {
        for item in page
            .context("scanning the results table")?
            .items
            .unwrap_or_default()
        {
            if let Some(id) = item.get("publicId").and_then(|v| v.as_s().ok()).cloned() {
                items.insert(id, item);
            }
        }
    }
    Ok(items)
}

/// Logs of the local command-line tools: to standard error, `RUST_LOG` (default: errors only,
/// so that progress lines stay readable).
pub fn init_cli_logs() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Receives every message of a queue (until two empty receives), with message and system
/// attributes; they stay invisible for a minute.
pub async fn receive_all(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> anyhow::Result<Vec<aws_sdk_sqs::types::Message>> {
    use anyhow::Context;
    let mut all = Vec::new();
    let mut empty = 0;
    while empty < 2 {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .with_context(|| format!("receiving from {url}"))?
            .messages
            .unwrap_or_default();
        if got.is_empty() {
            empty += 1;
        } else {
            all.extend(got);
        }
    }
    Ok(all)
}
