//! The results table and the checkpoint table on DynamoDB.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue};

use super::{
    Checkpoint, CheckpointStore, Claim, ClaimOutcome, DeadLetterKind, DeadLetterMark, ItemState,
    PassMode, RequestMark, ResultRecord, ResultStore, Status, StoreError, truncate_utf8,
};

impl StoreError {
    pub(crate) fn from_sdk<E, R>(
        operation: &'static str,
        table: &str,
        err: aws_sdk_dynamodb::error::SdkError<E, R>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let code = err.code().unwrap_or("no code").to_string();
        Self {
            operation,
            table: table.to_string(),
            code,
            source: Box::new(err),
        }
    }
}

/// The item DynamoDB stores for a record.
pub fn to_item(record: &ResultRecord) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::new();
    let s = |v: &str| AttributeValue::S(v.to_string());
    let n = |v: u64| AttributeValue::N(v.to_string());
    item.insert("publicId".into(), s(&record.key));
    item.insert("status".into(), s(record.status.as_str()));
    if let Some(t) = &record.text {
        item.insert("text".into(), s(t));
    }
    if let Some(l) = &record.locale {
        item.insert("locale".into(), s(l));
    }
    item.insert("textBytes".into(), n(record.text_bytes));
    item.insert("truncated".into(), AttributeValue::Bool(record.truncated));
    item.insert("resourceType".into(), s(&record.resource_type));
    item.insert("deliveryType".into(), s(&record.delivery_type));
    if let Some(v) = &record.asset.format {
        item.insert("format".into(), s(v));
    }
    if let Some(v) = record.asset.bytes {
        item.insert("bytes".into(), n(v));
    }
    if let Some(v) = record.asset.width {
        item.insert("width".into(), n(v));
    }
    if let Some(v) = record.asset.height {
        item.insert("height".into(), n(v));
    }
    if let Some(v) = &record.asset.created_at {
        item.insert("assetCreatedAt".into(), s(v));
    }
    if let Some(v) = record.asset.version {
        item.insert("version".into(), n(v));
    }
    item.insert("ocrAt".into(), s(&record.ocr_at));
    item.insert("attempts".into(), n(record.attempts as u64));
    if record.pages > 0 {
        item.insert("pages".into(), n(record.pages as u64));
    }
    if let Some(e) = &record.error {
        item.insert("error".into(), s(e));
    }
    if let Some(mark) = &record.dead_letter {
        item.insert("failedMessageId".into(), s(&mark.message_id));
        item.insert("failedReceive".into(), n(mark.receive_count as u64));
        item.insert("failureKind".into(), s(mark.kind.as_str()));
    }
    item
}

/// The dead-letter mark an item carries, if any.
pub fn dead_letter_mark(item: &HashMap<String, AttributeValue>) -> Option<DeadLetterMark> {
    Some(DeadLetterMark {
        message_id: attr_str(item, "failedMessageId")?.to_string(),
        receive_count: u32::try_from(attr_u64(item, "failedReceive")?).ok()?,
        kind: DeadLetterKind::parse(attr_str(item, "failureKind")?)?,
    })
}

/// The results table on DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoResultStore {
    client: Client,
    table: String,
}

impl DynamoResultStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn key(key: &str) -> AttributeValue {
        AttributeValue::S(key.to_string())
    }

    /// Writes the record's item if `condition` holds; `false` when it did not.
    async fn put_if(
        &self,
        record: &ResultRecord,
        condition: &str,
        value: Option<(&str, AttributeValue)>,
    ) -> Result<bool, StoreError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(record)))
            .condition_expression(condition);
        if let Some((name, v)) = value {
            req = req.expression_attribute_values(name, v);
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(StoreError::from_sdk("PutItem", &self.table, err)),
        }
    }

    async fn current(
        &self,
        key: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("publicId", Self::key(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("GetItem", &self.table, e))?;
        Ok(out.item)
    }
}

fn attr_str<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn attr_u64(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
}

impl ResultStore for DynamoResultStore {
    async fn states(&self, keys: &[String]) -> Result<HashMap<String, ItemState>, StoreError> {
        let mut found = HashMap::new();
        let mut unique: Vec<&String> = keys.iter().collect();
        unique.sort();
        unique.dedup();
        for chunk in unique.chunks(100) {
            let mut keys: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|id| HashMap::from([("publicId".to_string(), Self::key(id))]))
                .collect();
            let mut rounds = 0;
            while !keys.is_empty() {
                rounds += 1;
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .projection_expression(
                        "publicId, #s, #e, ocrAt, version, failedMessageId, failedReceive, failureKind",
                    )
                    .expression_attribute_names("#s", "status")
                    .expression_attribute_names("#e", "error")
                    .consistent_read(true)
                    .build()
                    .expect("keys are set");
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| StoreError::from_sdk("BatchGetItem", &self.table, e))?;
                for item in out
                    .responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default()
                {
                    if let (Some(id), Some(status)) = (
                        attr_str(&item, "publicId"),
                        attr_str(&item, "status").and_then(Status::parse),
                    ) {
                        let state = ItemState {
                            status,
                            version: attr_u64(&item, "version"),
                            ocr_at_ms: attr_str(&item, "ocrAt")
                                .and_then(crate::clock::parse_rfc3339)
                                .map(crate::clock::epoch_ms),
                            dead_letter: dead_letter_mark(&item),
                            error: attr_str(&item, "error").map(str::to_string),
                        };
                        found.insert(id.to_string(), state);
                    }
                }
                if let Some(rest) = out.unprocessed_keys.and_then(|mut u| u.remove(&self.table)) {
                    keys = rest.keys;
                    if !keys.is_empty() {
                        if rounds >= 8 {
                            return Err(StoreError {
                                operation: "BatchGetItem",
                                table: self.table.clone(),
                                code: "UnprocessedKeys".into(),
                                source: format!(
                                    "{} keys still unprocessed after {rounds} rounds",
                                    keys.len()
                                )
                                .into(),
                            });
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(25 << rounds)).await;
                    }
                }
            }
        }
        Ok(found)
    }

    async fn claim(&self, claim: &Claim<'_>) -> Result<ClaimOutcome, StoreError> {
        let free = "(attribute_not_exists(claimExpiresAt) OR claimExpiresAt < :now)";
        let condition = if claim.force {
            free.to_string()
        } else {
            format!("{free} AND (attribute_not_exists(#s) OR #s = :failed)")
        };
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("publicId", Self::key(claim.key))
            .update_expression(
                "SET claimToken = :token, claimExpiresAt = :exp, ocrRequestedAt = :now, resourceType = :rt, deliveryType = :dt ADD attempts :one",
            )
            .condition_expression(condition)
            .expression_attribute_values(":token", AttributeValue::S(claim.token.to_string()))
            .expression_attribute_values(":exp", AttributeValue::N(claim.expires_at_ms.to_string()))
            .expression_attribute_values(":now", AttributeValue::N(claim.now_ms.to_string()))
            .expression_attribute_values(":rt", AttributeValue::S(claim.resource_type.to_string()))
            .expression_attribute_values(":dt", AttributeValue::S(claim.delivery_type.to_string()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            // The old values of the attributes set here only (`attempts`, `ocrRequestedAt`):
            // never a forced re-OCR's whole stored text.
            .return_values(ReturnValue::UpdatedOld);
        if !claim.force {
            req = req
                .expression_attribute_names("#s", "status")
                .expression_attribute_values(
                    ":failed",
                    AttributeValue::S(Status::Failed.as_str().into()),
                );
        }
        match req.send().await {
            Ok(out) => {
                let old = out.attributes.unwrap_or_default();
                let attempts = attr_u64(&old, "attempts").unwrap_or(0) + 1;
                Ok(ClaimOutcome::Claimed {
                    attempts: attempts as u32,
                    requested_before: attr_u64(&old, "ocrRequestedAt"),
                })
            }
            Err(err) => {
                let conditional = err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception());
                if !conditional {
                    return Err(StoreError::from_sdk("UpdateItem", &self.table, err));
                }
                // Find out why, to tell "done already" from "someone else is on it".
                let item = self.current(claim.key).await?.unwrap_or_default();
                if !claim.force
                    && let Some(status) = attr_str(&item, "status")
                        .and_then(Status::parse)
                        .filter(|s| s.is_complete())
                {
                    return Ok(ClaimOutcome::AlreadyComplete(status));
                }
                let until = attr_u64(&item, "claimExpiresAt").unwrap_or(claim.now_ms + 1_000);
                Ok(ClaimOutcome::HeldUntil(until.max(claim.now_ms + 1_000)))
            }
        }
    }

    async fn put_result(&self, record: &ResultRecord, token: &str) -> Result<bool, StoreError> {
        self.put_if(
            record,
            "claimToken = :token",
            Some((":token", AttributeValue::S(token.to_string()))),
        )
        .await
    }

    async fn release(
        &self,
        key: &str,
        token: &str,
        error: &str,
        mark: RequestMark,
    ) -> Result<(), StoreError> {
        let (expression, requested) = match mark {
            RequestMark::Keep => ("REMOVE claimToken, claimExpiresAt SET #e = :e", None),
            RequestMark::Restore(None) => (
                "REMOVE claimToken, claimExpiresAt, ocrRequestedAt SET #e = :e",
                None,
            ),
            RequestMark::Restore(Some(ms)) => (
                "REMOVE claimToken, claimExpiresAt SET #e = :e, ocrRequestedAt = :req",
                Some(AttributeValue::N(ms.to_string())),
            ),
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("publicId", Self::key(key))
            .update_expression(expression)
            .set_expression_attribute_values(
                requested.map(|r| HashMap::from([(":req".to_string(), r)])),
            )
            .condition_expression("claimToken = :token")
            .expression_attribute_names("#e", "error")
            .expression_attribute_values(
                ":e",
                AttributeValue::S(truncate_utf8(error, 2000).to_string()),
            )
            .expression_attribute_values(":token", AttributeValue::S(token.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(err) => Err(StoreError::from_sdk("UpdateItem", &self.table, err)),
        }
    }

    async fn record_unqueued(&self, record: &ResultRecord) -> Result<bool, StoreError> {
        self.put_if(record, "attribute_not_exists(publicId)", None)
            .await
    }
}

/// The lister's checkpoint table on DynamoDB (partition key `id`).
#[derive(Debug, Clone)]
pub struct DynamoCheckpointStore {
    client: Client,
    table: String,
}

impl DynamoCheckpointStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

impl CheckpointStore for DynamoCheckpointStore {
    async fn load(&self, id: &str) -> Result<Checkpoint, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("GetItem", &self.table, e))?;
        let Some(item) = out.item else {
            return Ok(Checkpoint::default());
        };
        let s = |name: &str| attr_str(&item, name).map(str::to_string);
        Ok(Checkpoint {
            cursor: s("cursor"),
            mode: s("mode").as_deref().and_then(PassMode::parse),
            pass_started_at: s("passStartedAt"),
            since: s("since"),
            listing_type: s("listingType"),
            pass_listed: attr_u64(&item, "passListed").unwrap_or(0),
            last_pass_started_at: s("lastPassStartedAt"),
            last_full_pass_at: s("lastFullPassAt"),
            total_listed: attr_u64(&item, "totalListed").unwrap_or(0),
            last_full_pass_listed: attr_u64(&item, "lastFullPassListed").unwrap_or(0),
            updated_at: s("updatedAt"),
        })
    }

    async fn save(&self, id: &str, c: &Checkpoint) -> Result<(), StoreError> {
        let mut item = HashMap::from([
            ("id".to_string(), AttributeValue::S(id.to_string())),
            (
                "passListed".to_string(),
                AttributeValue::N(c.pass_listed.to_string()),
            ),
            (
                "totalListed".to_string(),
                AttributeValue::N(c.total_listed.to_string()),
            ),
            (
                "lastFullPassListed".to_string(),
                AttributeValue::N(c.last_full_pass_listed.to_string()),
            ),
        ]);
        let mode = c.mode.map(|m| m.as_str().to_string());
        for (name, value) in [
            ("cursor", &c.cursor),
            ("mode", &mode),
            ("passStartedAt", &c.pass_started_at),
            ("since", &c.since),
            ("listingType", &c.listing_type),
            ("lastPassStartedAt", &c.last_pass_started_at),
            ("lastFullPassAt", &c.last_full_pass_at),
            ("updatedAt", &c.updated_at),
        ] {
            if let Some(v) = value {
                item.insert(name.to_string(), AttributeValue::S(v.clone()));
            }
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("PutItem", &self.table, e))?;
        Ok(())
    }
}
