//! The results table and the checkpoint table on DynamoDB.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeValue, BatchStatementErrorCodeEnum, BatchStatementRequest, KeysAndAttributes,
    ReturnValue,
};

use super::{
    BatchRead, Checkpoint, CheckpointStore, Claim, ClaimOutcome, DeadLetterKind, DeadLetterMark,
    ItemState, PassMode, RequestMark, ResultRecord, ResultStore, Seen, Status, StoreError,
    WRITE_BATCH_MAX, truncate_utf8,
};

/// Every attribute a results item may have besides its key: what a result written as an
/// update (rather than a whole new item) removes when the record has no value for it.
const ITEM_ATTRIBUTES: [&str; 23] = [
    "status",
    "text",
    "locale",
    "textBytes",
    "truncated",
    "resourceType",
    "deliveryType",
    "format",
    "bytes",
    "width",
    "height",
    "assetCreatedAt",
    "version",
    "ocrAt",
    "attempts",
    "pages",
    "error",
    "failedMessageId",
    "failedReceive",
    "failureKind",
    "claimToken",
    "claimExpiresAt",
    "ocrRequestedAt",
];

/// The IAM actions the worker's use of the results table needs (`BatchExecuteStatement` is
/// authorised statement by statement, as PartiQL inserts and updates).
pub const WORKER_ACTIONS: [&str; 6] = [
    "dynamodb:BatchGetItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:PartiQLInsert",
    "dynamodb:PartiQLUpdate",
];

/// Results of one batched write carry at most this much text (DynamoDB limits a request's size;
/// a result with more goes in a request of its own).
const RESULT_BATCH_BYTES: usize = 1 << 20;

/// What a batched statement answered.
enum Member {
    Written,
    /// Its condition did not hold (or its item already existed, for an insert).
    ConditionFailed,
    /// Anything else: the request failed, or DynamoDB refused this statement.
    Other(String),
}

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
    /// Claims and results written by batched statements (the rest were single writes).
    batched: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl DynamoResultStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            batched: Default::default(),
        }
    }

    /// Claims and results this store wrote by batched statements so far.
    pub fn batched_writes(&self) -> u64 {
        self.batched.load(std::sync::atomic::Ordering::Relaxed)
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

    /// The statement that takes a claim in a batch, conditioned on the asset being as the
    /// batch's read saw it (`None` for a claim without a read).
    fn claim_statement(&self, claim: &Claim<'_>) -> Option<BatchStatementRequest> {
        let s = |v: &str| AttributeValue::S(v.to_string());
        let n = |v: u64| AttributeValue::N(v.to_string());
        let (statement, parameters) = match claim.seen? {
            Seen::Absent => (
                format!(
                    "INSERT INTO \"{}\" VALUE {{'publicId': ?, 'claimToken': ?, 'claimExpiresAt': ?, 'ocrRequestedAt': ?, 'resourceType': ?, 'deliveryType': ?, 'attempts': ?}}",
                    self.table
                ),
                vec![
                    s(claim.key),
                    s(claim.token),
                    n(claim.expires_at_ms),
                    n(claim.now_ms),
                    s(claim.resource_type),
                    s(claim.delivery_type),
                    n(1),
                ],
            ),
            Seen::Present {
                attempts,
                requested_at,
            } => {
                let mut parameters = vec![
                    s(claim.token),
                    n(claim.expires_at_ms),
                    n(claim.now_ms),
                    s(claim.resource_type),
                    s(claim.delivery_type),
                    n(attempts.unwrap_or(0) + 1),
                    s(claim.key),
                ];
                let mut unchanged = |name: &str, value: Option<u64>| match value {
                    Some(v) => {
                        parameters.push(n(v));
                        format!("\"{name}\" = ?")
                    }
                    None => format!("\"{name}\" IS MISSING"),
                };
                let attempts = unchanged("attempts", attempts);
                let requested = unchanged("ocrRequestedAt", requested_at);
                parameters.push(n(claim.now_ms));
                let mut statement = format!(
                    "UPDATE \"{}\" SET \"claimToken\" = ? SET \"claimExpiresAt\" = ? SET \"ocrRequestedAt\" = ? SET \"resourceType\" = ? SET \"deliveryType\" = ? SET \"attempts\" = ? WHERE \"publicId\" = ? AND {attempts} AND {requested} AND (\"claimExpiresAt\" IS MISSING OR \"claimExpiresAt\" < ?)",
                    self.table
                );
                if !claim.force {
                    statement.push_str(" AND (\"status\" IS MISSING OR \"status\" = ?)");
                    parameters.push(s(Status::Failed.as_str()));
                }
                (statement, parameters)
            }
        };
        BatchStatementRequest::builder()
            .statement(statement)
            .set_parameters(Some(parameters))
            .build()
            .ok()
    }

    /// The statement that writes a result in a batch under its claim: the item becomes what
    /// `put_result` would have written (every attribute the record has no value for removed).
    fn result_statement(&self, record: &ResultRecord, token: &str) -> BatchStatementRequest {
        let mut item = to_item(record);
        let key = item.remove("publicId");
        let mut statement = format!("UPDATE \"{}\"", self.table);
        let mut parameters = Vec::with_capacity(item.len() + 2);
        for name in ITEM_ATTRIBUTES {
            match item.remove(name) {
                Some(value) => {
                    statement.push_str(&format!(" SET \"{name}\" = ?"));
                    parameters.push(value);
                }
                None => statement.push_str(&format!(" REMOVE \"{name}\"")),
            }
        }
        debug_assert!(item.is_empty(), "an attribute missing from ITEM_ATTRIBUTES");
        statement.push_str(" WHERE \"publicId\" = ? AND \"claimToken\" = ?");
        parameters.extend(key);
        parameters.push(AttributeValue::S(token.to_string()));
        BatchStatementRequest::builder()
            .statement(statement)
            .set_parameters(Some(parameters))
            .build()
            .expect("the statement is set")
    }

    /// Runs write statements in one `BatchExecuteStatement`; what became of each, in order
    /// (`expected` of them: a statement that could not be built counts as refused).
    async fn execute_batch(
        &self,
        statements: Vec<BatchStatementRequest>,
        expected: usize,
    ) -> Vec<Member> {
        let other = |reason: String| {
            (0..expected)
                .map(|_| Member::Other(reason.clone()))
                .collect()
        };
        if statements.len() != expected {
            return other("a statement could not be built".into());
        }
        let out = match self
            .client
            .batch_execute_statement()
            .set_statements(Some(statements))
            .send()
            .await
        {
            Ok(out) => out,
            Err(err) => {
                return other(crate::error::error_chain(&StoreError::from_sdk(
                    "BatchExecuteStatement",
                    &self.table,
                    err,
                )));
            }
        };
        let responses = out.responses.unwrap_or_default();
        if responses.len() != expected {
            return other(format!(
                "{} answers to {expected} statements",
                responses.len()
            ));
        }
        responses
            .into_iter()
            .map(|r| match r.error {
                None => {
                    self.batched
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Member::Written
                }
                Some(e) => match e.code {
                    Some(BatchStatementErrorCodeEnum::ConditionalCheckFailed)
                    | Some(BatchStatementErrorCodeEnum::DuplicateItem) => Member::ConditionFailed,
                    code => Member::Other(format!(
                        "{}: {}",
                        code.as_ref().map_or("no code", |c| c.as_str()),
                        e.message.as_deref().unwrap_or("no message")
                    )),
                },
            })
            .collect()
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
        Ok(self.read_batch(keys).await?.states)
    }

    async fn read_batch(&self, keys: &[String]) -> Result<BatchRead, StoreError> {
        let mut found = HashMap::new();
        let mut seen: HashMap<String, Seen> = HashMap::new();
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
                        "publicId, #s, #e, ocrAt, version, failedMessageId, failedReceive, failureKind, attempts, ocrRequestedAt",
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
                    if let Some(id) = attr_str(&item, "publicId") {
                        seen.insert(
                            id.to_string(),
                            Seen::Present {
                                attempts: attr_u64(&item, "attempts"),
                                requested_at: attr_u64(&item, "ocrRequestedAt"),
                            },
                        );
                    }
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
        for key in keys {
            seen.entry(key.clone()).or_insert(Seen::Absent);
        }
        Ok(BatchRead {
            states: found,
            seen,
        })
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
                // Our own claim, taken by an attempt whose answer was lost (a timed-out request
                // the SDK retried, a batch that fell back): ours, with the old values the
                // batch's read saw when nothing else came between, else with its request mark
                // (read back first: free, never paid twice).
                if attr_str(&item, "claimToken") == Some(claim.token) {
                    let attempts = attr_u64(&item, "attempts").unwrap_or(1) as u32;
                    return Ok(match claim.seen.map(Seen::claimed) {
                        Some(seen @ ClaimOutcome::Claimed { attempts: a, .. }) if a == attempts => {
                            seen
                        }
                        _ => ClaimOutcome::Claimed {
                            attempts,
                            requested_before: attr_u64(&item, "ocrRequestedAt"),
                        },
                    });
                }
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

    async fn claim_batch(&self, claims: &[Claim<'_>]) -> Vec<Result<ClaimOutcome, StoreError>> {
        let mut outcomes: Vec<Option<Result<ClaimOutcome, StoreError>>> =
            claims.iter().map(|_| None).collect();
        let batched: Vec<usize> = (0..claims.len())
            .filter(|&i| claims[i].seen.is_some())
            .collect();
        // One claim alone gains nothing from a batch.
        if batched.len() > 1 {
            for chunk in batched.chunks(WRITE_BATCH_MAX) {
                let statements = chunk
                    .iter()
                    .filter_map(|&i| self.claim_statement(&claims[i]))
                    .collect();
                let members = self.execute_batch(statements, chunk.len()).await;
                for (&i, member) in chunk.iter().zip(members) {
                    match (member, claims[i].seen) {
                        (Member::Written, Some(seen)) => outcomes[i] = Some(Ok(seen.claimed())),
                        (Member::Other(reason), _) => {
                            tracing::warn!(key = claims[i].key, %reason, "batched claim refused; claimed on its own");
                        }
                        _ => {}
                    }
                }
            }
        }
        // The rest, and every claim whose asset changed since the read (or that the batch
        // could not write), claim on their own: that claim says why it was not taken.
        let mut out = Vec::with_capacity(claims.len());
        for (claim, outcome) in claims.iter().zip(outcomes) {
            out.push(match outcome {
                Some(outcome) => outcome,
                None => self.claim(claim).await,
            });
        }
        out
    }

    async fn put_results(
        &self,
        results: &[(&ResultRecord, &str)],
    ) -> Vec<Result<bool, StoreError>> {
        let mut outcomes: Vec<Option<Result<bool, StoreError>>> =
            results.iter().map(|_| None).collect();
        if results.len() > 1 {
            let mut chunks: Vec<Vec<usize>> = Vec::new();
            let mut bytes = 0;
            for (i, (record, _)) in results.iter().enumerate() {
                let size = record.text.as_ref().map_or(0, String::len);
                match chunks.last_mut() {
                    Some(chunk)
                        if chunk.len() < WRITE_BATCH_MAX && bytes + size <= RESULT_BATCH_BYTES =>
                    {
                        chunk.push(i);
                        bytes += size;
                    }
                    _ => {
                        chunks.push(vec![i]);
                        bytes = size;
                    }
                }
            }
            for chunk in chunks.into_iter().filter(|c| c.len() > 1) {
                let statements = chunk
                    .iter()
                    .map(|&i| self.result_statement(results[i].0, results[i].1))
                    .collect();
                let members = self.execute_batch(statements, chunk.len()).await;
                for (&i, member) in chunk.iter().zip(members) {
                    match member {
                        Member::Written => outcomes[i] = Some(Ok(true)),
                        // The claim was lost: another invocation owns the result.
                        Member::ConditionFailed => outcomes[i] = Some(Ok(false)),
                        Member::Other(reason) => {
                            tracing::warn!(key = results[i].0.key, %reason, "batched result write refused; written on its own");
                        }
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(results.len());
        for ((record, token), outcome) in results.iter().zip(outcomes) {
            out.push(match outcome {
                Some(outcome) => outcome,
                None => self.put_result(record, token).await,
            });
        }
        out
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
