//! Runs the pipeline without AWS: SDK clients for the local AWS endpoint (moto), provisioning
//! of the stack's tables and queues, and the loop that does what the SQS event source
//! mapping does around the worker.

pub mod aws;
pub mod chaos;
pub mod provision;
pub mod runner;
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
