//! Creates the stack's results table, checkpoint table, work queue, read-back queue and DLQ
//! locally, with the production stack's settings.

use anyhow::Context;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_sqs::types::QueueAttributeName;

pub use crate::settings::StackSettings;

/// Names of one stack's resources; a random suffix keeps parallel tests apart.
#[derive(Debug, Clone)]
pub struct StackNames {
    pub results_table: String,
    pub checkpoint_table: String,
    pub work_queue: String,
    pub read_back_queue: String,
    pub dead_letter_queue: String,
}

impl StackNames {
    pub fn unique(prefix: &str) -> Self {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..10];
        Self {
            results_table: format!("{prefix}-results-{suffix}"),
            checkpoint_table: format!("{prefix}-checkpoints-{suffix}"),
            work_queue: format!("{prefix}-work-{suffix}"),
            read_back_queue: format!("{prefix}-read-back-{suffix}"),
            dead_letter_queue: format!("{prefix}-dlq-{suffix}"),
        }
    }
}

/// A provisioned local stack.
#[derive(Debug, Clone)]
pub struct LocalStack {
    pub names: StackNames,
    pub settings: StackSettings,
    pub work_queue_url: String,
    pub work_queue_arn: String,
    pub read_back_queue_url: String,
    pub read_back_queue_arn: String,
    pub dead_letter_queue_url: String,
    pub dead_letter_queue_arn: String,
}

async fn create_table(ddb: &aws_sdk_dynamodb::Client, name: &str, key: &str) -> anyhow::Result<()> {
    ddb.create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()?,
        )
        .send()
        .await
        .with_context(|| format!("creating table {name}"))?;
    Ok(())
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<String> {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .with_context(|| format!("reading the ARN of {url}"))?;
    attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .with_context(|| format!("{url} has no QueueArn"))
}

/// Creates the tables and queues (DLQ first, then the work queue with its redrive policy).
pub async fn provision(
    ddb: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
    names: StackNames,
    settings: StackSettings,
) -> anyhow::Result<LocalStack> {
    create_table(ddb, &names.results_table, "publicId").await?;
    create_table(ddb, &names.checkpoint_table, "id").await?;

    let dlq = sqs
        .create_queue()
        .queue_name(&names.dead_letter_queue)
        .attributes(
            QueueAttributeName::MessageRetentionPeriod,
            settings.dlq_retention.as_secs().to_string(),
        )
        .send()
        .await
        .context("creating the dead-letter queue")?;
    let dlq_url = dlq.queue_url().context("no DLQ url")?.to_string();
    let dlq_arn = queue_arn(sqs, &dlq_url).await?;

    let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": settings.max_receive_count}).to_string();
    let source = |name: &str| {
        sqs.create_queue()
            .queue_name(name)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                settings.visibility_timeout.as_secs().to_string(),
            )
            .attributes(QueueAttributeName::RedrivePolicy, redrive.clone())
            .send()
    };
    let work = source(&names.work_queue)
        .await
        .context("creating the work queue")?;
    let work_url = work.queue_url().context("no work queue url")?.to_string();
    let work_arn = queue_arn(sqs, &work_url).await?;
    let read_back = source(&names.read_back_queue)
        .await
        .context("creating the read-back queue")?;
    let read_back_url = read_back
        .queue_url()
        .context("no read-back queue url")?
        .to_string();
    let read_back_arn = queue_arn(sqs, &read_back_url).await?;

    let allow = serde_json::json!({"redrivePermission": "byQueue", "sourceQueueArns": [work_arn, read_back_arn]})
        .to_string();
    sqs.set_queue_attributes()
        .queue_url(&dlq_url)
        .attributes(QueueAttributeName::RedriveAllowPolicy, allow)
        .send()
        .await
        .context("setting the DLQ's redrive allow policy")?;

    Ok(LocalStack {
        names,
        settings,
        work_queue_url: work_url,
        work_queue_arn: work_arn,
        read_back_queue_url: read_back_url,
        read_back_queue_arn: read_back_arn,
        dead_letter_queue_url: dlq_url,
        dead_letter_queue_arn: dlq_arn,
    })
}

impl LocalStack {
    /// The variables through which the functions find this stack's tables and queues (the
    /// stack's outputs, in AWS), keyed by name.
    pub fn function_env(&self) -> std::collections::HashMap<&'static str, String> {
        std::collections::HashMap::from([
            ("RESULTS_TABLE", self.names.results_table.clone()),
            ("CHECKPOINT_TABLE", self.names.checkpoint_table.clone()),
            ("WORK_QUEUE_URL", self.work_queue_url.clone()),
            ("READ_BACK_QUEUE_URL", self.read_back_queue_url.clone()),
            ("DEAD_LETTER_QUEUE_URL", self.dead_letter_queue_url.clone()),
            (
                "MAX_RECEIVE_COUNT",
                self.settings.max_receive_count.to_string(),
            ),
        ])
    }

    /// Deletes everything `provision` created.
    pub async fn teardown(
        &self,
        ddb: &aws_sdk_dynamodb::Client,
        sqs: &aws_sdk_sqs::Client,
    ) -> anyhow::Result<()> {
        for table in [&self.names.results_table, &self.names.checkpoint_table] {
            ddb.delete_table()
                .table_name(table)
                .send()
                .await
                .with_context(|| format!("deleting {table}"))?;
        }
        for url in [
            &self.work_queue_url,
            &self.read_back_queue_url,
            &self.dead_letter_queue_url,
        ] {
            sqs.delete_queue()
                .queue_url(url)
                .send()
                .await
                .with_context(|| format!("deleting {url}"))?;
        }
        Ok(())
    }
}
