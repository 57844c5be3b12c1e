//! In-memory twins of the results table and the checkpoint table, with the DynamoDB
//! adapters' semantics: a claim is taken only when no live claim exists and the asset is not
//! complete (unless forced); a result is written only under the claim's token and replaces
//! the whole item; a release gives the claim up only under its token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use std::collections::BTreeSet;

use super::{
    Checkpoint, CheckpointStore, Claim, ClaimOutcome, DeadLetterKind, DeadLetterMark,
    FailureRecord, Gone, ItemState, ItemView, Lease, LeaseOutcome, NotifyStore, RequestMark,
    ResultRecord, ResultStore, SaveOutcome, Status, StoreError, truncate_utf8,
};
use crate::error::ErrorClass;
use crate::fault::FaultPlan;

/// The store operations a fault can be planned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreOp {
    States,
    Claim,
    PutResult,
    Release,
    PutFailure,
    NoteError,
    TakeLease,
    SaveCheckpoint,
    ReleaseLease,
    View,
    MarkGone,
    PutRenamed,
}

/// One item of the results table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryItem {
    /// The terminal record, once written.
    pub record: Option<ResultRecord>,
    /// The live claim's token and expiry (ms since the epoch).
    pub claim: Option<(String, u64)>,
    pub attempts: u32,
    /// The error noted by the last release.
    pub error: Option<String>,
    /// When the latest claim was taken, until a result replaces the item (ms since the epoch).
    pub ocr_requested_at: Option<u64>,
    /// The messages that failed the asset for good, on their way to the dead-letter queue.
    pub dead_letters: BTreeSet<DeadLetterMark>,
    /// How the latest failure for good came about.
    pub failure_kind: Option<DeadLetterKind>,
    /// The asset left the key (a notification's tombstone).
    pub gone: Option<Gone>,
    /// The key the result was moved from by a rename, and when the rename happened.
    pub renamed_from: Option<String>,
    pub renamed_at_ms: Option<u64>,
}

impl MemoryItem {
    /// The item as a written record leaves it: no claim, no request pending.
    fn settled(record: &ResultRecord) -> Self {
        Self {
            record: Some(record.clone()),
            claim: None,
            attempts: record.attempts,
            error: record.error.clone(),
            ocr_requested_at: None,
            dead_letters: BTreeSet::new(),
            failure_kind: None,
            gone: None,
            renamed_from: None,
            renamed_at_ms: record.renamed_at_ms,
        }
    }

    /// Whether a rename bringing the asset `asset_id` at `at_ms` is older than the item's
    /// latest event (see [`super::Moved`]): its delete or rename away (at the same time: of
    /// the same asset, or of one unknown), or the rename that brought its asset.
    fn later_than(&self, at_ms: u64, asset_id: Option<&str>) -> bool {
        let gone_later = self.gone.as_ref().is_some_and(|g| {
            let another = g
                .asset_id
                .as_deref()
                .zip(asset_id)
                .is_some_and(|(gone, coming)| gone != coming);
            g.at_ms > at_ms || (g.at_ms == at_ms && !another)
        });
        gone_later || self.renamed_at_ms.is_some_and(|t| t >= at_ms)
    }

    fn claimed_at(&self, now_ms: u64) -> bool {
        self.claim
            .as_ref()
            .is_some_and(|(_, until)| *until >= now_ms)
    }

    pub fn status(&self) -> Option<Status> {
        self.record.as_ref().map(|r| r.status)
    }
}

const TABLE: &str = "memory-results";

fn injected(operation: &'static str, table: &str, class: ErrorClass) -> StoreError {
    let code = match class {
        ErrorClass::Permanent => "ValidationException",
        ErrorClass::Transient | ErrorClass::RateLimited => "ProvisionedThroughputExceededException",
    };
    StoreError::new(operation, table, code, "injected fault")
}

/// The results table in memory.
#[derive(Debug, Default)]
pub struct MemoryResultStore {
    items: Mutex<HashMap<String, MemoryItem>>,
    faults: FaultPlan<StoreOp>,
}

impl MemoryResultStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, MemoryItem>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn faults(&self) -> &FaultPlan<StoreOp> {
        &self.faults
    }

    /// Seeds a terminal record, as an earlier run would have left it.
    pub fn insert(&self, record: ResultRecord) {
        self.lock()
            .insert(record.key.clone(), MemoryItem::settled(&record));
    }

    pub fn item(&self, key: &str) -> Option<MemoryItem> {
        self.lock().get(key).cloned()
    }

    pub fn status(&self, key: &str) -> Option<Status> {
        self.lock().get(key).and_then(MemoryItem::status)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every item, by its key (`publicId`).
    pub fn items(&self) -> HashMap<String, MemoryItem> {
        self.lock().clone()
    }

    /// Takes an item out of the table (a simulation of millions keeps settled items elsewhere).
    pub fn remove(&self, key: &str) -> Option<MemoryItem> {
        self.lock().remove(key)
    }

    /// Visits every item in place (for tables too large to copy).
    pub fn for_each(&self, mut visit: impl FnMut(&str, &MemoryItem)) {
        for (key, item) in self.lock().iter() {
            visit(key, item);
        }
    }

    /// Another invocation takes the asset's claim over (as after an expiry): the holder's
    /// token no longer matches.
    pub fn take_over(&self, key: &str, until_ms: u64) {
        let mut items = self.lock();
        let item = items.entry(key.to_string()).or_default();
        item.claim = Some(("another invocation".into(), until_ms));
        item.attempts += 1;
    }

    fn fault(&self, op: StoreOp, operation: &'static str) -> Result<(), StoreError> {
        match self.faults.call(op) {
            Some(class) => Err(injected(operation, TABLE, class)),
            None => Ok(()),
        }
    }
}

impl NotifyStore for MemoryResultStore {
    async fn view(&self, key: &str) -> Result<Option<ItemView>, StoreError> {
        self.fault(StoreOp::View, "GetItem")?;
        Ok(self.lock().get(key).map(|item| ItemView {
            status: item.status(),
            version: item.record.as_ref().and_then(|r| r.asset.version),
            claimed_until: item.claim.as_ref().map(|(_, until)| *until),
            gone: item.gone.clone(),
            renamed_at_ms: item.renamed_at_ms,
        }))
    }

    async fn mark_gone(&self, key: &str, gone: &Gone, keep_text: bool) -> Result<bool, StoreError> {
        self.fault(StoreOp::MarkGone, "UpdateItem")?;
        let mut items = self.lock();
        let item = items.entry(key.to_string()).or_default();
        // A rename that brought this very asset at the same time came first.
        let same_asset = item
            .record
            .as_ref()
            .and_then(|r| r.asset.asset_id.as_deref())
            .zip(gone.asset_id.as_deref())
            .is_some_and(|(stored, named)| stored == named);
        let later = item.gone.as_ref().is_some_and(|g| g.at_ms >= gone.at_ms)
            || item
                .renamed_at_ms
                .is_some_and(|t| t > gone.at_ms || (t == gone.at_ms && !same_asset));
        let newer = item
            .record
            .as_ref()
            .and_then(|r| r.asset.version)
            .is_some_and(|v| v > gone.version);
        let another = item
            .record
            .as_ref()
            .and_then(|r| r.asset.asset_id.as_deref())
            .zip(gone.asset_id.as_deref())
            .is_some_and(|(stored, named)| stored != named);
        // The result was paid for a message naming this version or a later one and found an
        // older image: the version that left had been replaced already.
        let replaced = item.record.as_ref().is_some_and(|r| {
            r.asked_version.is_some_and(|a| a >= gone.version)
                && r.asset.version.is_none_or(|v| v < gone.version)
        });
        if later || newer || another || replaced {
            return Ok(false);
        }
        item.gone = Some(gone.clone());
        item.claim = None;
        if !keep_text && let Some(record) = item.record.as_mut() {
            record.text = None;
        }
        Ok(true)
    }

    async fn result_of(&self, from: &str) -> Result<Option<ResultRecord>, StoreError> {
        self.fault(StoreOp::View, "GetItem")?;
        Ok(self.lock().get(from).and_then(|item| {
            let record = item.record.as_ref()?;
            (item.gone.is_none() && record.status.is_complete()).then(|| record.clone())
        }))
    }
    async fn arrive(
        &self,
        key: &str,
        moved: super::Moved<'_>,
        holding: Option<u64>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.fault(StoreOp::PutRenamed, "UpdateItem")?;
        let mut items = self.lock();
        let item = items.entry(key.to_string()).or_default();
        if item.later_than(moved.at_ms, moved.asset_id) {
            return Ok(false);
        }
        match holding {
            Some(version) => {
                // Kept, with its text (a tombstone older than the rename comes off).
                let holds = item.record.as_ref().is_some_and(|r| {
                    r.asset.version == Some(version)
                        && match r.status {
                            Status::Done => r.text.is_some(),
                            Status::NoText => true,
                            _ => false,
                        }
                });
                if !holds {
                    return Ok(false);
                }
                item.gone = None;
            }
            None => {
                let uploaded_since = item.gone.is_none()
                    && item
                        .record
                        .as_ref()
                        .filter(|r| r.status.is_complete())
                        .and_then(|r| r.asset.version)
                        .is_some_and(|v| v > moved.at_ms / 1000);
                if item.claimed_at(now_ms) || uploaded_since {
                    return Ok(false);
                }
                *item = MemoryItem::default();
            }
        }
        item.renamed_from = Some(moved.from.to_string());
        item.renamed_at_ms = Some(moved.at_ms);
        Ok(true)
    }
}

impl ResultStore for MemoryResultStore {
    async fn gone(&self, key: &str) -> Result<Option<Gone>, StoreError> {
        self.fault(StoreOp::View, "GetItem")?;
        Ok(self.lock().get(key).and_then(|item| item.gone.clone()))
    }

    async fn put_renamed(
        &self,
        record: &ResultRecord,
        moved: Option<super::Moved<'_>>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.fault(StoreOp::PutRenamed, "PutItem")?;
        let mut items = self.lock();
        let version = record.asset.version.unwrap_or(0);
        if let Some(item) = items.get(&record.key) {
            let complete = item.record.as_ref().filter(|r| r.status.is_complete());
            let refused = match moved {
                Some(m) => {
                    // A newer result of the same asset, or one of another asset uploaded after
                    // the rename, stays.
                    let stays = item.gone.is_none()
                        && complete.is_some_and(|r| {
                            let same = r
                                .asset
                                .asset_id
                                .as_deref()
                                .zip(record.asset.asset_id.as_deref())
                                .is_some_and(|(a, b)| a == b);
                            r.asset
                                .version
                                .is_some_and(|v| v > version && (same || v > m.at_ms / 1000))
                        });
                    item.later_than(m.at_ms, m.asset_id) || stays
                }
                None => {
                    complete.is_some_and(|r| r.asset.version.is_none_or(|v| v >= version))
                        || item.gone.as_ref().is_some_and(|g| g.version >= version)
                }
            };
            if item.claimed_at(now_ms) || refused {
                return Ok(false);
            }
        }
        let mut settled = MemoryItem::settled(record);
        if let Some(m) = moved {
            settled.renamed_from = Some(m.from.to_string());
            settled.renamed_at_ms = Some(m.at_ms);
        }
        items.insert(record.key.clone(), settled);
        Ok(true)
    }

    async fn states(&self, keys: &[String]) -> Result<HashMap<String, ItemState>, StoreError> {
        self.fault(StoreOp::States, "BatchGetItem")?;
        let items = self.lock();
        Ok(keys
            .iter()
            .filter_map(|id| {
                let item = items.get(id)?;
                let record = item.record.as_ref()?;
                let state = ItemState {
                    status: record.status,
                    version: record.asset.version,
                    ocr_at_ms: crate::clock::parse_rfc3339(&record.ocr_at)
                        .map(crate::clock::epoch_ms),
                    dead_letters: item.dead_letters.iter().cloned().collect(),
                    error: item.error.clone().or_else(|| record.error.clone()),
                };
                Some((id.clone(), state))
            })
            .collect())
    }

    async fn claim(&self, claim: &Claim<'_>) -> Result<ClaimOutcome, StoreError> {
        self.fault(StoreOp::Claim, "UpdateItem")?;
        let mut items = self.lock();
        let item = items.entry(claim.key.to_string()).or_default();
        if claim.meets_gone(item.gone.as_ref().map(|g| g.version)) {
            return Ok(ClaimOutcome::Gone);
        }
        let free = item
            .claim
            .as_ref()
            .is_none_or(|(_, expires)| *expires < claim.now_ms);
        let record = item.record.as_ref();
        let open = claim.opens(
            item.status(),
            record.and_then(|r| r.asset.version),
            record
                .and_then(|r| crate::clock::parse_rfc3339(&r.ocr_at))
                .map(crate::clock::epoch_ms),
            record.and_then(|r| r.asked_version),
        );
        if free && open {
            item.claim = Some((claim.token.to_string(), claim.expires_at_ms));
            item.attempts += 1;
            for mark in claim.drop_marks {
                item.dead_letters.remove(mark);
            }
            let requested_before = item.ocr_requested_at.replace(claim.now_ms);
            return Ok(ClaimOutcome::Claimed {
                attempts: item.attempts,
                requested_before,
                arrived_at_ms: item.renamed_at_ms,
            });
        }
        if !open && let Some(status) = item.status() {
            return Ok(ClaimOutcome::AlreadyComplete(status));
        }
        let until = item
            .claim
            .as_ref()
            .map_or(claim.now_ms + 1_000, |(_, expires)| *expires);
        Ok(ClaimOutcome::HeldUntil(until.max(claim.now_ms + 1_000)))
    }

    async fn put_result(&self, record: &ResultRecord, token: &str) -> Result<bool, StoreError> {
        self.fault(StoreOp::PutResult, "PutItem")?;
        let mut items = self.lock();
        let Some(item) = items.get_mut(&record.key) else {
            return Ok(false);
        };
        if item.claim.as_ref().is_none_or(|(t, _)| t != token) {
            return Ok(false);
        }
        *item = MemoryItem::settled(record);
        Ok(true)
    }

    async fn put_failure(&self, failure: &FailureRecord, token: &str) -> Result<bool, StoreError> {
        self.fault(StoreOp::PutFailure, "UpdateItem")?;
        let mut items = self.lock();
        let Some(item) = items.get_mut(&failure.key) else {
            return Ok(false);
        };
        if item.claim.as_ref().is_none_or(|(t, _)| t != token) {
            return Ok(false);
        }
        let record = ResultRecord::failed(
            &failure.key,
            &failure.resource_type,
            &failure.delivery_type,
            &failure.error,
            failure.attempts,
            failure.at.clone(),
        );
        item.error = record.error.clone();
        item.record = Some(record);
        item.claim = None;
        item.failure_kind = Some(failure.kind);
        item.dead_letters.insert(failure.mark.clone());
        if let RequestMark::Restore(before) = failure.request_mark {
            item.ocr_requested_at = before;
        }
        Ok(true)
    }

    async fn release(
        &self,
        key: &str,
        token: &str,
        error: &str,
        mark: RequestMark,
    ) -> Result<(), StoreError> {
        self.fault(StoreOp::Release, "UpdateItem")?;
        let mut items = self.lock();
        if let Some(item) = items.get_mut(key)
            && item.claim.as_ref().is_some_and(|(t, _)| t == token)
        {
            item.claim = None;
            if let RequestMark::Restore(before) = mark {
                item.ocr_requested_at = before;
            }
            item.error = Some(truncate_utf8(error, 2000).to_string());
        }
        Ok(())
    }

    async fn note_error(&self, key: &str, error: &str) -> Result<(), StoreError> {
        self.fault(StoreOp::NoteError, "UpdateItem")?;
        self.lock().entry(key.to_string()).or_default().error =
            Some(truncate_utf8(error, 2000).to_string());
        Ok(())
    }

    async fn record_unqueued(&self, record: &ResultRecord) -> Result<bool, StoreError> {
        self.fault(StoreOp::PutResult, "PutItem")?;
        let mut items = self.lock();
        if items.contains_key(&record.key) {
            return Ok(false);
        }
        items.insert(record.key.clone(), MemoryItem::settled(record));
        Ok(true)
    }
}

/// The checkpoint table in memory: each checkpoint with the lease on it, taken, kept and given
/// up under the DynamoDB adapter's conditions.
#[derive(Debug, Default)]
pub struct MemoryCheckpointStore {
    checkpoints: Mutex<HashMap<String, LeasedCheckpoint>>,
    faults: FaultPlan<StoreOp>,
}

#[derive(Debug, Clone, Default)]
struct LeasedCheckpoint {
    checkpoint: Checkpoint,
    lease: Option<Lease>,
}

impl MemoryCheckpointStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn faults(&self) -> &FaultPlan<StoreOp> {
        &self.faults
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LeasedCheckpoint>> {
        self.checkpoints.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<Checkpoint> {
        self.lock().get(id).map(|e| e.checkpoint.clone())
    }

    /// The lease on the checkpoint, if one is held (expired or not).
    pub fn lease(&self, id: &str) -> Option<Lease> {
        self.lock().get(id).and_then(|e| e.lease.clone())
    }

    /// Writes a checkpoint with no lease, as an older version of the lister saved it.
    pub fn insert(&self, id: &str, checkpoint: Checkpoint) {
        self.lock().insert(
            id.to_string(),
            LeasedCheckpoint {
                checkpoint,
                lease: None,
            },
        );
    }
}

/// Whether `lease` is `owner`'s.
fn held_by(lease: Option<&Lease>, owner: &str) -> bool {
    lease.is_some_and(|l| l.owner == owner)
}

impl CheckpointStore for MemoryCheckpointStore {
    async fn take_lease(
        &self,
        id: &str,
        lease: &Lease,
        now: SystemTime,
    ) -> Result<LeaseOutcome, StoreError> {
        if let Some(class) = self.faults.call(StoreOp::TakeLease) {
            return Err(injected("UpdateItem", "memory-checkpoints", class));
        }
        let mut checkpoints = self.lock();
        let entry = checkpoints.entry(id.to_string()).or_default();
        match &entry.lease {
            Some(held) if held.owner != lease.owner && held.expires_at >= now => {
                Ok(LeaseOutcome::HeldByAnother(Some(held.clone())))
            }
            _ => {
                entry.lease = Some(lease.clone());
                Ok(LeaseOutcome::Taken(entry.checkpoint.clone()))
            }
        }
    }

    async fn save(
        &self,
        id: &str,
        checkpoint: &Checkpoint,
        lease: &Lease,
    ) -> Result<SaveOutcome, StoreError> {
        if let Some(class) = self.faults.call(StoreOp::SaveCheckpoint) {
            return Err(injected("PutItem", "memory-checkpoints", class));
        }
        let mut checkpoints = self.lock();
        match checkpoints.get_mut(id) {
            Some(entry) if held_by(entry.lease.as_ref(), &lease.owner) => {
                entry.checkpoint = checkpoint.clone();
                entry.lease = Some(lease.clone());
                Ok(SaveOutcome::Saved)
            }
            _ => Ok(SaveOutcome::LeaseLost),
        }
    }

    async fn release_lease(&self, id: &str, lease: &Lease) -> Result<bool, StoreError> {
        if let Some(class) = self.faults.call(StoreOp::ReleaseLease) {
            return Err(injected("UpdateItem", "memory-checkpoints", class));
        }
        let mut checkpoints = self.lock();
        match checkpoints.get_mut(id) {
            Some(entry) if held_by(entry.lease.as_ref(), &lease.owner) => {
                entry.lease = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
