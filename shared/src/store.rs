//! The results table (one item per asset, keyed by `publicId`) and the lister's checkpoint.

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue};

use crate::error::{Classified, ErrorClass};
use crate::ocr::{AssetFields, OcrOutcome};

/// DynamoDB's partition-key limit.
pub const MAX_KEY_BYTES: usize = 2048;
/// Text kept in an item. DynamoDB's item limit is 400 KB (and moto rejects a little under
/// it); the rest of an item is small, so this keeps every item well inside both.
pub const MAX_TEXT_BYTES: usize = 350_000;

/// Terminal state of an asset in the results table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Done,
    NoText,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::NoText => "no_text",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "done" => Some(Self::Done),
            "no_text" => Some(Self::NoText),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }

    /// Already paid for: skipped unless a re-OCR is forced.
    pub fn is_complete(self) -> bool {
        matches!(self, Self::Done | Self::NoText)
    }
}

/// The item written when an asset reaches a terminal state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRecord {
    pub public_id: String,
    pub status: Status,
    pub text: Option<String>,
    pub locale: Option<String>,
    /// Size of the full text in UTF-8 bytes, also when it was truncated.
    pub text_bytes: u64,
    pub truncated: bool,
    pub resource_type: String,
    pub delivery_type: String,
    pub asset: AssetFields,
    pub ocr_at: String,
    pub attempts: u32,
    pub error: Option<String>,
}

/// Cuts `text` to at most `max` bytes at a UTF-8 character boundary.
pub fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl ResultRecord {
    /// The record for a finished OCR (`Text` or `NoText`).
    pub fn from_outcome(
        public_id: &str,
        resource_type: &str,
        delivery_type: &str,
        outcome: OcrOutcome,
        asset: AssetFields,
        attempts: u32,
        ocr_at: String,
    ) -> Self {
        let (status, text, locale) = match outcome {
            OcrOutcome::Text { text, locale } => (Status::Done, Some(text), locale),
            _ => (Status::NoText, None, None),
        };
        let text_bytes = text.as_ref().map_or(0, |t| t.len() as u64);
        let (text, truncated) = match text {
            Some(t) if t.len() > MAX_TEXT_BYTES => {
                (Some(truncate_utf8(&t, MAX_TEXT_BYTES).to_string()), true)
            }
            other => (other, false),
        };
        Self {
            public_id: public_id.to_string(),
            status,
            text,
            locale,
            text_bytes,
            truncated,
            resource_type: resource_type.to_string(),
            delivery_type: delivery_type.to_string(),
            asset,
            ocr_at,
            attempts,
            error: None,
        }
    }

    /// The record for a permanent failure.
    pub fn failed(
        public_id: &str,
        resource_type: &str,
        delivery_type: &str,
        error: &str,
        attempts: u32,
        at: String,
    ) -> Self {
        Self {
            public_id: public_id.to_string(),
            status: Status::Failed,
            text: None,
            locale: None,
            text_bytes: 0,
            truncated: false,
            resource_type: resource_type.to_string(),
            delivery_type: delivery_type.to_string(),
            asset: AssetFields::default(),
            ocr_at: at,
            attempts,
            error: Some(truncate_utf8(error, 2000).to_string()),
        }
    }

    pub fn to_item(&self) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::new();
        let s = |v: &str| AttributeValue::S(v.to_string());
        let n = |v: u64| AttributeValue::N(v.to_string());
        item.insert("publicId".into(), s(&self.public_id));
        item.insert("status".into(), s(self.status.as_str()));
        if let Some(t) = &self.text {
            item.insert("text".into(), s(t));
        }
        if let Some(l) = &self.locale {
            item.insert("locale".into(), s(l));
        }
        item.insert("textBytes".into(), n(self.text_bytes));
        item.insert("truncated".into(), AttributeValue::Bool(self.truncated));
        item.insert("resourceType".into(), s(&self.resource_type));
        item.insert("deliveryType".into(), s(&self.delivery_type));
        if let Some(v) = &self.asset.format {
            item.insert("format".into(), s(v));
        }
        if let Some(v) = self.asset.bytes {
            item.insert("bytes".into(), n(v));
        }
        if let Some(v) = self.asset.width {
            item.insert("width".into(), n(v));
        }
        if let Some(v) = self.asset.height {
            item.insert("height".into(), n(v));
        }
        if let Some(v) = &self.asset.created_at {
            item.insert("assetCreatedAt".into(), s(v));
        }
        item.insert("ocrAt".into(), s(&self.ocr_at));
        item.insert("attempts".into(), n(self.attempts as u64));
        if let Some(e) = &self.error {
            item.insert("error".into(), s(e));
        }
        item
    }
}

/// A request to own an asset for the length of one invocation.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    pub public_id: &'a str,
    pub resource_type: &'a str,
    pub delivery_type: &'a str,
    pub token: &'a str,
    pub now_ms: u64,
    pub expires_at_ms: u64,
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Ours until the expiry; `attempts` counts this one.
    Claimed { attempts: u32 },
    /// Already complete (and no re-OCR forced).
    AlreadyComplete(Status),
    /// Another invocation holds it until this time (ms since the epoch).
    HeldUntil(u64),
}

#[derive(Debug, thiserror::Error)]
#[error("DynamoDB {operation} on table {table} failed ({code})")]
pub struct StoreError {
    pub operation: &'static str,
    pub table: String,
    pub code: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl StoreError {
    fn from_sdk<E, R>(
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

impl Classified for StoreError {
    fn class(&self) -> ErrorClass {
        // A request DynamoDB rejects as invalid fails the same way every time.
        match self.code.as_str() {
            "ValidationException" | "ResourceNotFoundException" => ErrorClass::Permanent,
            _ => ErrorClass::Transient,
        }
    }
}

/// Where results live. The worker is generic over it.
pub trait ResultStore: Send + Sync {
    /// Terminal statuses of the given assets (absent ones are left out); one call per 100 ids.
    fn statuses(
        &self,
        public_ids: &[String],
    ) -> impl Future<Output = Result<HashMap<String, Status>, StoreError>> + Send;
    fn claim(
        &self,
        claim: &Claim<'_>,
    ) -> impl Future<Output = Result<ClaimOutcome, StoreError>> + Send;
    /// Writes the terminal record if the claim is still ours; `false` when it was lost.
    fn put_result(
        &self,
        record: &ResultRecord,
        token: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Gives the claim up (the asset will be retried), noting the error that caused it.
    fn release(
        &self,
        public_id: &str,
        token: &str,
        error: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
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

    fn key(public_id: &str) -> AttributeValue {
        AttributeValue::S(public_id.to_string())
    }

    async fn current(
        &self,
        public_id: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("publicId", Self::key(public_id))
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
    async fn statuses(&self, public_ids: &[String]) -> Result<HashMap<String, Status>, StoreError> {
        let mut found = HashMap::new();
        let mut unique: Vec<&String> = public_ids.iter().collect();
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
                    .projection_expression("publicId, #s")
                    .expression_attribute_names("#s", "status")
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
                        found.insert(id.to_string(), status);
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
            .key("publicId", Self::key(claim.public_id))
            .update_expression(
                "SET claimToken = :token, claimExpiresAt = :exp, resourceType = :rt, deliveryType = :dt ADD attempts :one",
            )
            .condition_expression(condition)
            .expression_attribute_values(":token", AttributeValue::S(claim.token.to_string()))
            .expression_attribute_values(":exp", AttributeValue::N(claim.expires_at_ms.to_string()))
            .expression_attribute_values(":now", AttributeValue::N(claim.now_ms.to_string()))
            .expression_attribute_values(":rt", AttributeValue::S(claim.resource_type.to_string()))
            .expression_attribute_values(":dt", AttributeValue::S(claim.delivery_type.to_string()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::UpdatedNew);
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
                let attempts = out
                    .attributes
                    .as_ref()
                    .and_then(|a| attr_u64(a, "attempts"))
                    .unwrap_or(1);
                Ok(ClaimOutcome::Claimed {
                    attempts: attempts as u32,
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
                let item = self.current(claim.public_id).await?.unwrap_or_default();
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
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(record.to_item()))
            .condition_expression("claimToken = :token")
            .expression_attribute_values(":token", AttributeValue::S(token.to_string()))
            .send()
            .await;
        match result {
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

    async fn release(&self, public_id: &str, token: &str, error: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("publicId", Self::key(public_id))
            .update_expression("REMOVE claimToken, claimExpiresAt SET #e = :e")
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
}

/// Where the lister is in its pass over the account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Cursor of the next page to list; `None` between passes.
    pub cursor: Option<String>,
    /// `full` or `incremental`, for the pass in progress.
    pub mode: Option<String>,
    /// When the pass in progress started (RFC 3339).
    pub pass_started_at: Option<String>,
    /// Lower bound (`created_at`) of the incremental pass in progress.
    pub since: Option<String>,
    /// Assets listed and enqueued so far in the pass in progress.
    pub pass_listed: u64,
    /// When the last complete pass started (RFC 3339): the next incremental pass starts there.
    pub last_pass_started_at: Option<String>,
    /// When the last complete full pass finished (RFC 3339).
    pub last_full_pass_at: Option<String>,
    /// Assets listed over all passes.
    pub total_listed: u64,
    pub updated_at: Option<String>,
}

pub trait CheckpointStore: Send + Sync {
    fn load(&self, id: &str) -> impl Future<Output = Result<Checkpoint, StoreError>> + Send;
    fn save(
        &self,
        id: &str,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
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
            mode: s("mode"),
            pass_started_at: s("passStartedAt"),
            since: s("since"),
            pass_listed: attr_u64(&item, "passListed").unwrap_or(0),
            last_pass_started_at: s("lastPassStartedAt"),
            last_full_pass_at: s("lastFullPassAt"),
            total_listed: attr_u64(&item, "totalListed").unwrap_or(0),
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
        ]);
        for (name, value) in [
            ("cursor", &c.cursor),
            ("mode", &c.mode),
            ("passStartedAt", &c.pass_started_at),
            ("since", &c.since),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_utf8_boundaries() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(truncate_utf8("€€", 4), "€");
    }

    #[test]
    fn oversize_text_is_truncated_and_says_so() {
        let text = "ü".repeat(MAX_TEXT_BYTES); // 2 bytes each
        let r = ResultRecord::from_outcome(
            "a",
            "image",
            "upload",
            OcrOutcome::Text {
                text: text.clone(),
                locale: None,
            },
            AssetFields::default(),
            1,
            "t".into(),
        );
        assert!(r.truncated);
        assert_eq!(r.text_bytes, text.len() as u64);
        let kept = r.text.unwrap();
        assert!(kept.len() <= MAX_TEXT_BYTES && text.starts_with(&kept));
        let small = ResultRecord::from_outcome(
            "a",
            "image",
            "upload",
            OcrOutcome::NoText,
            AssetFields::default(),
            1,
            "t".into(),
        );
        assert_eq!(
            (small.status, small.truncated, small.text_bytes, small.text),
            (Status::NoText, false, 0, None)
        );
    }
}
