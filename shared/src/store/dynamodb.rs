//! The results table and the checkpoint table on DynamoDB.

use std::collections::HashMap;
use std::time::SystemTime;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure,
};

use super::{
    Checkpoint, CheckpointStore, Claim, ClaimIntent, ClaimOutcome, DeadLetterMark, FailureRecord,
    Gone, ItemState, ItemView, Lease, LeaseOutcome, NotifyStore, PassMode, RequestMark,
    ResultRecord, ResultStore, SaveOutcome, Status, StoreError, truncate_utf8,
};

/// The attributes of a result that a failure record removes (it keeps the claim bookkeeping:
/// `attempts`, `ocrRequestedAt`, the dead-letter marks).
const RESULT_ATTRIBUTES: [&str; 14] = [
    "#t",
    "locale",
    "textBytes",
    "truncated",
    "#f",
    "#b",
    "width",
    "height",
    "assetCreatedAt",
    "version",
    "pages",
    "ocrAtMs",
    "assetId",
    "askedVersion",
];

/// The IAM actions the notifier's use of the results table needs.
pub const NOTIFIER_ACTIONS: [&str; 3] = [
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
];

/// The IAM actions the worker's use of the results table needs.
pub const WORKER_ACTIONS: [&str; 4] = [
    "dynamodb:BatchGetItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
];

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

pub(crate) fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The item DynamoDB stores for a record.
pub fn to_item(record: &ResultRecord) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::new();
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
    insert_asset_fields(&mut item, record);
    item.insert("ocrAt".into(), s(&record.ocr_at));
    // The same time as a number, for the condition of a forced re-OCR's claim.
    if let Some(at) = crate::clock::parse_rfc3339(&record.ocr_at) {
        item.insert("ocrAtMs".into(), n(crate::clock::epoch_ms(at)));
    }
    item.insert("attempts".into(), n(record.attempts as u64));
    if record.pages > 0 {
        item.insert("pages".into(), n(record.pages as u64));
    }
    if let Some(e) = &record.error {
        item.insert("error".into(), s(e));
    }
    if let Some(v) = record.asked_version {
        item.insert("askedVersion".into(), n(v));
    }
    if let Some(t) = record.renamed_at_ms {
        item.insert("renamedAtMs".into(), n(t));
    }
    item
}

fn insert_asset_fields(item: &mut HashMap<String, AttributeValue>, record: &ResultRecord) {
    let asset = &record.asset;
    if let Some(v) = &asset.format {
        item.insert("format".into(), s(v));
    }
    for (name, value) in [
        ("bytes", asset.bytes),
        ("width", asset.width),
        ("height", asset.height),
        ("version", asset.version),
    ] {
        if let Some(v) = value {
            item.insert(name.into(), n(v));
        }
    }
    if let Some(v) = &asset.created_at {
        item.insert("assetCreatedAt".into(), s(v));
    }
    if let Some(v) = &asset.asset_id {
        item.insert("assetId".into(), s(v));
    }
}

/// The dead-letter marks an item carries (the string set `failedMessages`).
pub fn dead_letter_marks(item: &HashMap<String, AttributeValue>) -> Vec<DeadLetterMark> {
    item.get("failedMessages")
        .and_then(|v| v.as_ss().ok())
        .map(|set| {
            set.iter()
                .filter_map(|e| DeadLetterMark::parse(e))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn conditional_failed<E, R>(err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    err.code() == Some("ConditionalCheckFailedException")
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
        s(key)
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
            Err(err) if conditional_failed(&err) => Ok(false),
            Err(err) => Err(StoreError::from_sdk("PutItem", &self.table, err)),
        }
    }

    async fn current(
        &self,
        key: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        self.projected(
            key,
            "#s, claimToken, claimExpiresAt, attempts, ocrRequestedAt, priorRequestAt, version, ocrAtMs, goneVersion, askedVersion, renamedAtMs",
        )
        .await
    }

    /// The item under `key`, read consistently, with the attributes `projection` names
    /// (`#s` for `status`).
    async fn projected(
        &self,
        key: &str,
        projection: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("publicId", Self::key(key))
            .consistent_read(true)
            .projection_expression(projection)
            .expression_attribute_names("#s", "status")
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("GetItem", &self.table, e))?;
        Ok(out.item)
    }

    /// One `BatchGetItem` of up to 100 keys, with its unprocessed keys asked again.
    async fn read_chunk(
        &self,
        chunk: &[&String],
        found: &mut HashMap<String, ItemState>,
    ) -> Result<(), StoreError> {
        let mut keys: Vec<HashMap<String, AttributeValue>> = chunk
            .iter()
            .map(|id| HashMap::from([("publicId".to_string(), Self::key(id))]))
            .collect();
        let mut rounds = 0;
        while !keys.is_empty() {
            rounds += 1;
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut keys)))
                .projection_expression("publicId, #s, #e, ocrAt, ocrAtMs, version, failedMessages")
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
            let items = out.responses.unwrap_or_default().remove(&self.table);
            for item in items.unwrap_or_default() {
                if let Some((id, state)) = item_state(&item) {
                    found.insert(id, state);
                }
            }
            keys = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.table))
                .map(|rest| rest.keys)
                .unwrap_or_default();
            if !keys.is_empty() {
                if rounds >= 8 {
                    return Err(StoreError::new(
                        "BatchGetItem",
                        &self.table,
                        "UnprocessedKeys",
                        format!(
                            "{} keys still unprocessed after {rounds} rounds",
                            keys.len()
                        ),
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(25 << rounds)).await;
            }
        }
        Ok(())
    }

    /// Why a claim's condition failed: the item as it is now tells.
    async fn why_not_claimed(&self, claim: &Claim<'_>) -> Result<ClaimOutcome, StoreError> {
        let item = self.current(claim.key).await?.unwrap_or_default();
        // Our own claim, taken by an attempt whose answer was lost (a timed-out request the
        // SDK retried): ours, with the request mark it found (`priorRequestAt`, which every
        // claim writes; were it missing, the claim's own time is the safe side: read back
        // first and wait, never paid twice).
        if attr_str(&item, "claimToken") == Some(claim.token) {
            let requested_before = match attr_u64(&item, "priorRequestAt") {
                Some(0) => None,
                Some(at) => Some(at),
                None => attr_u64(&item, "ocrRequestedAt"),
            };
            return Ok(ClaimOutcome::Claimed {
                attempts: attr_u64(&item, "attempts").unwrap_or(1) as u32,
                requested_before,
                arrived_at_ms: attr_u64(&item, "renamedAtMs"),
            });
        }
        if claim.meets_gone(attr_u64(&item, "goneVersion")) {
            return Ok(ClaimOutcome::Gone);
        }
        let status = attr_str(&item, "status").and_then(Status::parse);
        let open = claim.opens(
            status,
            attr_u64(&item, "version"),
            attr_u64(&item, "ocrAtMs"),
            attr_u64(&item, "askedVersion"),
        );
        if !open && let Some(status) = status {
            return Ok(ClaimOutcome::AlreadyComplete(status));
        }
        let until = attr_u64(&item, "claimExpiresAt").unwrap_or(claim.now_ms + 1_000);
        Ok(ClaimOutcome::HeldUntil(until.max(claim.now_ms + 1_000)))
    }
}

/// An item's terminal state, by its key (none without a status).
fn item_state(item: &HashMap<String, AttributeValue>) -> Option<(String, ItemState)> {
    let id = attr_str(item, "publicId")?;
    let status = attr_str(item, "status").and_then(Status::parse)?;
    let ocr_at_ms = attr_u64(item, "ocrAtMs").or_else(|| {
        attr_str(item, "ocrAt")
            .and_then(crate::clock::parse_rfc3339)
            .map(crate::clock::epoch_ms)
    });
    let state = ItemState {
        status,
        version: attr_u64(item, "version"),
        ocr_at_ms,
        dead_letters: dead_letter_marks(item),
        error: attr_str(item, "error").map(str::to_string),
    };
    Some((id.to_string(), state))
}

/// The condition under which a claim's intent still holds, with the values it names.
fn claim_condition(claim: &Claim<'_>) -> (String, Vec<(&'static str, AttributeValue)>) {
    // An asset that left the key (a tombstone) is claimed there only as a newer version.
    let here = match claim.intent {
        ClaimIntent::NewVersion(_) => "(attribute_not_exists(goneVersion) OR goneVersion < :v)",
        _ => "attribute_not_exists(goneVersion)",
    };
    let free =
        format!("{here} AND (attribute_not_exists(claimExpiresAt) OR claimExpiresAt < :now)");
    let open = "attribute_not_exists(#s) OR #s = :failed";
    let failed = (":failed", s(Status::Failed.as_str()));
    match claim.intent {
        ClaimIntent::Plain => (format!("{free} AND ({open})"), vec![failed]),
        ClaimIntent::NewVersion(v) => (
            format!(
                "{free} AND ({open} OR (version < :v AND (attribute_not_exists(askedVersion) OR askedVersion < :v)))"
            ),
            vec![failed, (":v", n(v))],
        ),
        ClaimIntent::Forced { asked_at_ms } => (
            format!("{free} AND ({open} OR attribute_not_exists(ocrAtMs) OR ocrAtMs < :asked)"),
            vec![failed, (":asked", n(asked_at_ms))],
        ),
    }
}

fn attr_str<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub(crate) fn attr_u64(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
}

/// A stored result read back as the record that wrote it.
pub fn record_of(item: &HashMap<String, AttributeValue>) -> Option<ResultRecord> {
    let text_of = |name: &str| attr_str(item, name).map(str::to_string);
    Some(ResultRecord {
        key: text_of("publicId")?,
        status: attr_str(item, "status").and_then(Status::parse)?,
        text: text_of("text"),
        locale: text_of("locale"),
        text_bytes: attr_u64(item, "textBytes").unwrap_or(0),
        truncated: item
            .get("truncated")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
        resource_type: text_of("resourceType").unwrap_or_else(|| "image".into()),
        delivery_type: text_of("deliveryType").unwrap_or_else(|| "upload".into()),
        asset: crate::ocr::AssetFields {
            format: text_of("format"),
            bytes: attr_u64(item, "bytes"),
            width: attr_u64(item, "width"),
            height: attr_u64(item, "height"),
            created_at: text_of("assetCreatedAt"),
            version: attr_u64(item, "version"),
            asset_id: text_of("assetId"),
        },
        ocr_at: text_of("ocrAt").unwrap_or_default(),
        attempts: attr_u64(item, "attempts").unwrap_or(0) as u32,
        error: text_of("error"),
        pages: attr_u64(item, "pages").unwrap_or(0) as u32,
        asked_version: attr_u64(item, "askedVersion"),
        renamed_at_ms: attr_u64(item, "renamedAtMs"),
    })
}

fn gone_of(item: &HashMap<String, AttributeValue>) -> Option<Gone> {
    Some(Gone {
        at: attr_str(item, "deletedAt").unwrap_or_default().to_string(),
        at_ms: attr_u64(item, "deletedAtMs").unwrap_or(0),
        version: attr_u64(item, "goneVersion")?,
        renamed_to: attr_str(item, "renamedTo").map(str::to_string),
        asset_id: attr_str(item, "goneAssetId").map(str::to_string),
    })
}

impl DynamoResultStore {
    async fn whole(
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

impl NotifyStore for DynamoResultStore {
    async fn view(&self, key: &str) -> Result<Option<ItemView>, StoreError> {
        let item = self
            .projected(
                key,
                "#s, version, claimExpiresAt, deletedAt, deletedAtMs, goneVersion, goneAssetId, renamedTo, renamedAtMs",
            )
            .await?;
        Ok(item.map(|item| ItemView {
            status: attr_str(&item, "status").and_then(Status::parse),
            version: attr_u64(&item, "version"),
            claimed_until: attr_u64(&item, "claimExpiresAt"),
            gone: gone_of(&item),
            renamed_at_ms: attr_u64(&item, "renamedAtMs"),
        }))
    }

    async fn mark_gone(&self, key: &str, gone: &Gone, keep_text: bool) -> Result<bool, StoreError> {
        let mut set = vec![
            "deletedAt = :at",
            "deletedAtMs = :atms",
            "goneVersion = :gv",
            "goneBy = :by",
        ];
        let mut remove = vec!["claimToken", "claimExpiresAt"];
        if gone.asset_id.is_some() {
            set.push("goneAssetId = :aid");
        } else {
            remove.push("goneAssetId");
        }
        if gone.renamed_to.is_some() {
            set.push("renamedTo = :to");
        } else {
            remove.push("renamedTo");
        }
        if !keep_text {
            remove.push("#t");
        }
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("publicId", Self::key(key))
            .update_expression(format!(
                "SET {} REMOVE {}",
                set.join(", "),
                remove.join(", ")
            ))
            .condition_expression(format!(
                "(attribute_not_exists(deletedAtMs) OR deletedAtMs < :atms) AND (attribute_not_exists(renamedAtMs) OR renamedAtMs < :atms{}) AND (attribute_not_exists(version) OR version <= :gv) AND (attribute_not_exists(askedVersion) OR askedVersion < :gv OR version >= :gv){}",
                // A rename that brought this very asset at the same time came first.
                if gone.asset_id.is_some() {
                    " OR (renamedAtMs = :atms AND assetId = :aid)"
                } else {
                    ""
                },
                if gone.asset_id.is_some() {
                    " AND (attribute_not_exists(assetId) OR assetId = :aid)"
                } else {
                    ""
                }
            ))
            .expression_attribute_values(":at", s(&gone.at))
            .expression_attribute_values(":atms", n(gone.at_ms))
            .expression_attribute_values(":gv", n(gone.version))
            .expression_attribute_values(":by", s(gone.by()));
        if let Some(to) = &gone.renamed_to {
            req = req.expression_attribute_values(":to", s(to));
        }
        if let Some(id) = &gone.asset_id {
            req = req.expression_attribute_values(":aid", s(id));
        }
        if !keep_text {
            req = req.expression_attribute_names("#t", "text");
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(err) if conditional_failed(&err) => Ok(false),
            Err(err) => Err(StoreError::from_sdk("UpdateItem", &self.table, err)),
        }
    }

    async fn result_of(&self, from: &str) -> Result<Option<ResultRecord>, StoreError> {
        let Some(item) = self.whole(from).await? else {
            return Ok(None);
        };
        if item.contains_key("goneVersion") {
            return Ok(None);
        }
        Ok(record_of(&item).filter(|r| r.status.is_complete()))
    }
    async fn arrive(
        &self,
        key: &str,
        moved: super::Moved<'_>,
        holding: Option<u64>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        match holding {
            Some(version) => {
                let mut req = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .key("publicId", Self::key(key))
                    .update_expression(
                        "SET renamedFrom = :from, renamedAtMs = :t REMOVE deletedAt, deletedAtMs, goneVersion, goneBy, goneAssetId, renamedTo",
                    )
                    .condition_expression(format!(
                        "{} AND version = :v AND ((#s = :done AND attribute_exists(#t)) OR #s = :no_text)",
                        before(moved.asset_id.is_some())
                    ))
                    .expression_attribute_names("#s", "status")
                    .expression_attribute_names("#t", "text")
                    .expression_attribute_values(":from", s(moved.from))
                    .expression_attribute_values(":t", n(moved.at_ms))
                    .expression_attribute_values(":v", n(version))
                    .expression_attribute_values(":done", s(Status::Done.as_str()))
                    .expression_attribute_values(":no_text", s(Status::NoText.as_str()));
                if let Some(id) = moved.asset_id {
                    req = req.expression_attribute_values(":mid", s(id));
                }
                let result = req.send().await;
                match result {
                    Ok(_) => Ok(true),
                    Err(err) if conditional_failed(&err) => Ok(false),
                    Err(err) => Err(StoreError::from_sdk("UpdateItem", &self.table, err)),
                }
            }
            None => {
                let mut item = HashMap::new();
                item.insert("publicId".to_string(), Self::key(key));
                item.insert("renamedFrom".to_string(), s(moved.from));
                item.insert("renamedAtMs".to_string(), n(moved.at_ms));
                let mut req = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression(format!(
                        "{UNCLAIMED} AND {} AND (attribute_not_exists(#s) OR #s = :failed OR attribute_exists(deletedAtMs) OR attribute_not_exists(version) OR version <= :tsec)",
                        before(moved.asset_id.is_some())
                    ))
                    .expression_attribute_names("#s", "status")
                    .expression_attribute_values(":now", n(now_ms))
                    .expression_attribute_values(":failed", s(Status::Failed.as_str()))
                    .expression_attribute_values(":t", n(moved.at_ms))
                    .expression_attribute_values(":tsec", n(moved.at_ms / 1000));
                if let Some(id) = moved.asset_id {
                    req = req.expression_attribute_values(":mid", s(id));
                }
                let result = req.send().await;
                match result {
                    Ok(_) => Ok(true),
                    Err(err) if conditional_failed(&err) => Ok(false),
                    Err(err) => Err(StoreError::from_sdk("PutItem", &self.table, err)),
                }
            }
        }
    }
}

/// No live claim on the item (`:now`, ms since the epoch).
const UNCLAIMED: &str = "(attribute_not_exists(claimExpiresAt) OR claimExpiresAt < :now)";
/// No event on the item as late as `:t` (ms since the epoch): a delete or rename away (at
/// the same time, one of another asset than `:mid`, when `known`, is older), or a rename
/// there (see [`super::Moved`]).
fn before(known: bool) -> String {
    let tie = if known {
        " OR (deletedAtMs = :t AND goneAssetId <> :mid)"
    } else {
        ""
    };
    format!(
        "(attribute_not_exists(deletedAtMs) OR deletedAtMs < :t{tie}) AND (attribute_not_exists(renamedAtMs) OR renamedAtMs < :t)"
    )
}

impl ResultStore for DynamoResultStore {
    async fn gone(&self, key: &str) -> Result<Option<Gone>, StoreError> {
        Ok(NotifyStore::view(self, key)
            .await?
            .and_then(|view| view.gone))
    }

    async fn put_renamed(
        &self,
        record: &ResultRecord,
        moved: Option<super::Moved<'_>>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut item = to_item(record);
        let version = record.asset.version.unwrap_or(0);
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":failed", s(Status::Failed.as_str()))
            .expression_attribute_values(":v", n(version));
        req = match moved {
            Some(m) => {
                item.insert("renamedFrom".into(), s(m.from));
                item.insert("renamedAtMs".into(), n(m.at_ms));
                // A newer result of the same asset, or one of another asset uploaded after
                // the rename, stays.
                let (another, aid) = match &record.asset.asset_id {
                    Some(id) => (" AND NOT assetId = :aid", Some(id)),
                    None => ("", None),
                };
                req = req.condition_expression(format!(
                    "{UNCLAIMED} AND {} AND (attribute_not_exists(#s) OR #s = :failed OR attribute_exists(deletedAtMs) OR attribute_not_exists(version) OR version <= :v OR (version <= :tsec{another}))",
                    before(m.asset_id.is_some())
                ))
                .expression_attribute_values(":t", n(m.at_ms))
                .expression_attribute_values(":tsec", n(m.at_ms / 1000));
                if let Some(id) = m.asset_id {
                    req = req.expression_attribute_values(":mid", s(id));
                }
                match aid {
                    Some(id) => req.expression_attribute_values(":aid", s(id)),
                    None => req,
                }
            }
            None => req.condition_expression(format!(
                "{UNCLAIMED} AND (attribute_not_exists(#s) OR #s = :failed OR version < :v) AND (attribute_not_exists(goneVersion) OR goneVersion < :v)"
            )),
        };
        let result = req.set_item(Some(item)).send().await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if conditional_failed(&err) => Ok(false),
            Err(err) => Err(StoreError::from_sdk("PutItem", &self.table, err)),
        }
    }

    async fn states(&self, keys: &[String]) -> Result<HashMap<String, ItemState>, StoreError> {
        let mut found = HashMap::new();
        let mut unique: Vec<&String> = keys.iter().collect();
        unique.sort();
        unique.dedup();
        for chunk in unique.chunks(100) {
            self.read_chunk(chunk, &mut found).await?;
        }
        Ok(found)
    }

    async fn claim(&self, claim: &Claim<'_>) -> Result<ClaimOutcome, StoreError> {
        let (condition, values) = claim_condition(claim);
        // `priorRequestAt` keeps the request mark the claim found (0: none), for a retry of
        // this claim whose first answer was lost (`why_not_claimed`). Every operand reads the
        // item as it was; it comes first all the same.
        let mut update = "SET priorRequestAt = if_not_exists(ocrRequestedAt, :zero), claimToken = :token, claimExpiresAt = :exp, ocrRequestedAt = :now, resourceType = :rt, deliveryType = :dt ADD attempts :one".to_string();
        if !claim.drop_marks.is_empty() {
            update.push_str(" DELETE failedMessages :mine");
        }
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("publicId", Self::key(claim.key))
            .update_expression(update)
            .condition_expression(condition)
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":token", s(claim.token))
            .expression_attribute_values(":exp", n(claim.expires_at_ms))
            .expression_attribute_values(":now", n(claim.now_ms))
            .expression_attribute_values(":rt", s(claim.resource_type))
            .expression_attribute_values(":dt", s(claim.delivery_type))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":zero", n(0))
            // The item as it was (`attempts`, `ocrRequestedAt`, and `renamedAtMs`, which the
            // result keeps). Return values cost no capacity; a forced re-OCR's claim receives
            // the old text too (at most 400 KB).
            .return_values(ReturnValue::AllOld);
        for (name, value) in values {
            req = req.expression_attribute_values(name, value);
        }
        if !claim.drop_marks.is_empty() {
            let mine = claim
                .drop_marks
                .iter()
                .map(DeadLetterMark::element)
                .collect();
            req = req.expression_attribute_values(":mine", AttributeValue::Ss(mine));
        }
        match req.send().await {
            Ok(out) => {
                let old = out.attributes.unwrap_or_default();
                Ok(ClaimOutcome::Claimed {
                    attempts: (attr_u64(&old, "attempts").unwrap_or(0) + 1) as u32,
                    requested_before: attr_u64(&old, "ocrRequestedAt"),
                    arrived_at_ms: attr_u64(&old, "renamedAtMs"),
                })
            }
            Err(err) if conditional_failed(&err) => self.why_not_claimed(claim).await,
            Err(err) => Err(StoreError::from_sdk("UpdateItem", &self.table, err)),
        }
    }

    async fn put_result(&self, record: &ResultRecord, token: &str) -> Result<bool, StoreError> {
        self.put_if(record, "claimToken = :token", Some((":token", s(token))))
            .await
    }

    async fn put_failure(&self, failure: &FailureRecord, token: &str) -> Result<bool, StoreError> {
        let mut remove: Vec<&str> = vec!["claimToken", "claimExpiresAt"];
        remove.extend(RESULT_ATTRIBUTES);
        let mut set = "#s = :failed, #e = :e, failureKind = :kind, ocrAt = :at, resourceType = :rt, deliveryType = :dt".to_string();
        match failure.request_mark {
            RequestMark::Keep => {}
            RequestMark::Restore(None) => remove.push("ocrRequestedAt"),
            RequestMark::Restore(Some(_)) => set.push_str(", ocrRequestedAt = :req"),
        }
        let update = format!(
            "SET {set} REMOVE {} ADD failedMessages :mark",
            remove.join(", ")
        );
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("publicId", Self::key(&failure.key))
            .update_expression(update)
            .condition_expression("claimToken = :token")
            .expression_attribute_names("#s", "status")
            .expression_attribute_names("#e", "error")
            .expression_attribute_names("#t", "text")
            .expression_attribute_names("#f", "format")
            .expression_attribute_names("#b", "bytes")
            .expression_attribute_values(":failed", s(Status::Failed.as_str()))
            .expression_attribute_values(":e", s(truncate_utf8(&failure.error, 2000)))
            .expression_attribute_values(":kind", s(failure.kind.as_str()))
            .expression_attribute_values(":at", s(&failure.at))
            .expression_attribute_values(":rt", s(&failure.resource_type))
            .expression_attribute_values(":dt", s(&failure.delivery_type))
            .expression_attribute_values(":mark", AttributeValue::Ss(vec![failure.mark.element()]))
            .expression_attribute_values(":token", s(token));
        if let RequestMark::Restore(Some(ms)) = failure.request_mark {
            req = req.expression_attribute_values(":req", n(ms));
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(err) if conditional_failed(&err) => Ok(false),
            Err(err) => Err(StoreError::from_sdk("UpdateItem", &self.table, err)),
        }
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
                Some(n(ms)),
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
            .expression_attribute_values(":e", s(truncate_utf8(error, 2000)))
            .expression_attribute_values(":token", s(token))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if conditional_failed(&err) => Ok(()),
            Err(err) => Err(StoreError::from_sdk("UpdateItem", &self.table, err)),
        }
    }

    async fn note_error(&self, key: &str, error: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("publicId", Self::key(key))
            .update_expression("SET #e = :e")
            .expression_attribute_names("#e", "error")
            .expression_attribute_values(":e", s(truncate_utf8(error, 2000)))
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("UpdateItem", &self.table, e))?;
        Ok(())
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

    /// The client and the table, for other items the table keeps (the OCR budget's counters).
    pub(crate) fn parts(&self) -> (&Client, &str) {
        (&self.client, &self.table)
    }
}

/// The attributes of the lease on a checkpoint item: the holder's id, and when it expires
/// (epoch milliseconds). An item without them (as older versions wrote it) is free.
const LEASE_OWNER: &str = "leaseOwner";
const LEASE_EXPIRES_AT: &str = "leaseExpiresAt";

/// A checkpoint item's checkpoint (an item with no checkpoint yet, the default one).
fn checkpoint_of(item: &HashMap<String, AttributeValue>) -> Checkpoint {
    let s = |name: &str| attr_str(item, name).map(str::to_string);
    Checkpoint {
        cursor: s("cursor"),
        mode: s("mode").as_deref().and_then(PassMode::parse),
        pass_started_at: s("passStartedAt"),
        since: s("since"),
        listing_type: s("listingType"),
        pass_listed: attr_u64(item, "passListed").unwrap_or(0),
        last_pass_started_at: s("lastPassStartedAt"),
        last_full_pass_at: s("lastFullPassAt"),
        total_listed: attr_u64(item, "totalListed").unwrap_or(0),
        last_full_pass_listed: attr_u64(item, "lastFullPassListed").unwrap_or(0),
        updated_at: s("updatedAt"),
        scope: s("scope").unwrap_or_default(),
    }
}

/// The lease a checkpoint item names, if any.
fn lease_of(item: &HashMap<String, AttributeValue>) -> Option<Lease> {
    Some(Lease {
        owner: attr_str(item, LEASE_OWNER)?.to_string(),
        expires_at: crate::clock::from_epoch_ms(attr_u64(item, LEASE_EXPIRES_AT)?),
    })
}

/// The item the checkpoint is saved as, with its lease.
fn checkpoint_item(id: &str, c: &Checkpoint, lease: &Lease) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        ("id".to_string(), s(id)),
        ("passListed".to_string(), n(c.pass_listed)),
        ("totalListed".to_string(), n(c.total_listed)),
        ("lastFullPassListed".to_string(), n(c.last_full_pass_listed)),
        (LEASE_OWNER.to_string(), s(&lease.owner)),
        (
            LEASE_EXPIRES_AT.to_string(),
            n(crate::clock::epoch_ms(lease.expires_at)),
        ),
    ]);
    let mode = c.mode.map(|m| m.as_str().to_string());
    let scope = Some(c.scope.clone()).filter(|s| !s.is_empty());
    for (name, value) in [
        ("scope", &scope),
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
            item.insert(name.to_string(), s(v));
        }
    }
    item
}

impl CheckpointStore for DynamoCheckpointStore {
    /// One `UpdateItem`: the lease set under the condition, the checkpoint in its answer; when
    /// the condition fails, the item as it was names the holder.
    async fn take_lease(
        &self,
        id: &str,
        lease: &Lease,
        now: SystemTime,
    ) -> Result<LeaseOutcome, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET #owner = :owner, #expires = :expires")
            .condition_expression(
                "attribute_not_exists(#owner) OR #owner = :owner OR #expires < :now",
            )
            .expression_attribute_names("#owner", LEASE_OWNER)
            .expression_attribute_names("#expires", LEASE_EXPIRES_AT)
            .expression_attribute_values(":owner", s(&lease.owner))
            .expression_attribute_values(":expires", n(crate::clock::epoch_ms(lease.expires_at)))
            .expression_attribute_values(":now", n(crate::clock::epoch_ms(now)))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match out {
            Ok(out) => Ok(LeaseOutcome::Taken(checkpoint_of(
                &out.attributes.unwrap_or_default(),
            ))),
            Err(err) if conditional_failed(&err) => {
                let holder = match err.into_service_error() {
                    UpdateItemError::ConditionalCheckFailedException(e) => {
                        e.item.as_ref().and_then(lease_of)
                    }
                    _ => None,
                };
                Ok(LeaseOutcome::HeldByAnother(holder))
            }
            Err(err) => Err(StoreError::from_sdk("UpdateItem", &self.table, err)),
        }
    }

    async fn save(
        &self,
        id: &str,
        c: &Checkpoint,
        lease: &Lease,
    ) -> Result<SaveOutcome, StoreError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(checkpoint_item(id, c, lease)))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", LEASE_OWNER)
            .expression_attribute_values(":owner", s(&lease.owner))
            .send()
            .await;
        match out {
            Ok(_) => Ok(SaveOutcome::Saved),
            Err(err) if conditional_failed(&err) => Ok(SaveOutcome::LeaseLost),
            Err(err) => Err(StoreError::from_sdk("PutItem", &self.table, err)),
        }
    }

    async fn release_lease(&self, id: &str, lease: &Lease) -> Result<bool, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("REMOVE #owner, #expires")
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", LEASE_OWNER)
            .expression_attribute_names("#expires", LEASE_EXPIRES_AT)
            .expression_attribute_values(":owner", s(&lease.owner))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(err) if conditional_failed(&err) => Ok(false),
            Err(err) => Err(StoreError::from_sdk("UpdateItem", &self.table, err)),
        }
    }
}
