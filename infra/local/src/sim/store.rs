//! The results table and the lister's checkpoint: the pipeline's in-memory twins, with a count
//! of the DynamoDB requests and capacity units each call would cost, and of the assets that
//! reached a terminal status.
//!
//! At ten million assets the twin's items would take gigabytes, so an item that settles as
//! complete (done or no text) moves out of the twin into a compact table
//! by asset, from which the batch read and the claim answer as the twin would for it (a
//! complete item is skipped unless a re-OCR is forced; the simulation forces none). Everything
//! in play (claims, releases, failures and their marks) stays in the twin.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use shared::store::memory::{MemoryCheckpointStore, MemoryResultStore};
use shared::store::{
    Checkpoint, CheckpointStore, Claim, ClaimOutcome, FailureRecord, ItemState, Lease,
    LeaseOutcome, RequestMark, ResultRecord, ResultStore, SaveOutcome, Status, StoreError,
};

use super::cloudinary::index_of;

#[derive(Debug, Default)]
struct Counts {
    requests: Mutex<BTreeMap<&'static str, u64>>,
    read_units: AtomicU64,
    write_units: AtomicU64,
    terminal: AtomicU64,
    /// The lister's checkpoint reads and writes (counted in `requests` too).
    checkpoint_requests: AtomicU64,
}

/// A complete item, as the batch read needs it.
#[derive(Debug, Clone, Copy)]
struct Settled {
    status: Status,
    version: Option<u64>,
    ocr_at_ms: Option<u64>,
}

/// Both tables, shared by the lister and every worker instance.
#[derive(Debug, Clone)]
pub struct SimStore {
    results: Arc<MemoryResultStore>,
    /// Complete items by asset index.
    settled: Arc<Mutex<Vec<Option<Settled>>>>,
    checkpoints: Arc<MemoryCheckpointStore>,
    counts: Arc<Counts>,
}

/// DynamoDB's write units for an item of this many bytes (1 KB each, rounded up).
fn write_units(bytes: usize) -> u64 {
    bytes.div_ceil(1024).max(1) as u64
}

/// The size DynamoDB counts for a result item: its text and the attributes around it.
fn record_bytes(record: &ResultRecord) -> usize {
    const ATTRIBUTES: usize = 300;
    ATTRIBUTES + record.key.len() + record.text.as_ref().map_or(0, String::len)
}

impl SimStore {
    /// The tables of an account of `assets` assets.
    pub fn new(assets: u64) -> Self {
        Self {
            results: Arc::default(),
            settled: Arc::new(Mutex::new(vec![None; assets as usize])),
            checkpoints: Arc::default(),
            counts: Arc::default(),
        }
    }

    fn count(&self, operation: &'static str, requests: u64) {
        *self
            .counts
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(operation)
            .or_default() += requests;
    }

    fn settled(&self) -> std::sync::MutexGuard<'_, Vec<Option<Settled>>> {
        self.settled.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settled_of(&self, key: &str) -> Option<Settled> {
        *self.settled().get(index_of(key)? as usize)?
    }

    pub fn requests(&self) -> BTreeMap<&'static str, u64> {
        self.counts
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn read_units(&self) -> u64 {
        self.counts.read_units.load(Ordering::Relaxed)
    }

    pub fn write_units(&self) -> u64 {
        self.counts.write_units.load(Ordering::Relaxed)
    }

    /// Requests to the lister's checkpoint.
    pub fn checkpoint_requests(&self) -> u64 {
        self.counts.checkpoint_requests.load(Ordering::Relaxed)
    }

    /// Assets with a terminal status.
    pub fn terminal(&self) -> u64 {
        self.counts.terminal.load(Ordering::Relaxed)
    }

    /// Items by status, and the reason of each failed one by its key.
    pub fn statuses(&self) -> (BTreeMap<&'static str, u64>, HashMap<String, String>) {
        let mut by_status: BTreeMap<&'static str, u64> = BTreeMap::new();
        for s in self.settled().iter().flatten() {
            *by_status.entry(s.status.as_str()).or_default() += 1;
        }
        let mut reasons = HashMap::new();
        self.results.for_each(|key, item| {
            if let Some(status) = item.status() {
                *by_status.entry(status.as_str()).or_default() += 1;
                if status == Status::Failed {
                    let reason = item.record.as_ref().and_then(|r| r.error.clone());
                    reasons.insert(key.to_string(), reason.unwrap_or_default());
                }
            }
        });
        (by_status, reasons)
    }
}

impl SimStore {
    async fn claim_one(&self, claim: &Claim<'_>) -> Result<ClaimOutcome, StoreError> {
        self.counts.write_units.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = self.settled_of(claim.key) {
            assert!(
                !claim.opens(Some(s.status), s.version, s.ocr_at_ms, None),
                "the simulation forces no re-OCR and uploads no new version"
            );
            return Ok(ClaimOutcome::AlreadyComplete(s.status));
        }
        self.results.claim(claim).await
    }

    async fn put_one(&self, record: &ResultRecord, token: &str) -> Result<bool, StoreError> {
        self.counts
            .write_units
            .fetch_add(write_units(record_bytes(record)), Ordering::Relaxed);
        if self.settled_of(&record.key).is_some() {
            // Settled items hold no claim: the twin would refuse the write as a lost claim.
            return Ok(false);
        }
        // Every status is terminal: done, no text, or failed for good.
        let was_terminal = self.results.status(&record.key).is_some();
        let written = self.results.put_result(record, token).await?;
        if written && !was_terminal {
            self.counts.terminal.fetch_add(1, Ordering::Relaxed);
        }
        if written
            && record.status.is_complete()
            && let Some(slot) = index_of(&record.key)
                .and_then(|i| self.settled().get(i as usize).map(|_| i as usize))
        {
            self.results.remove(&record.key);
            self.settled()[slot] = Some(Settled {
                status: record.status,
                version: record.asset.version,
                ocr_at_ms: shared::clock::parse_rfc3339(&record.ocr_at)
                    .map(shared::clock::epoch_ms),
            });
        }
        Ok(written)
    }
}

impl ResultStore for SimStore {
    async fn states(&self, keys: &[String]) -> Result<HashMap<String, ItemState>, StoreError> {
        self.count("dynamodb:BatchGetItem", keys.len().div_ceil(100) as u64);
        self.counts
            .read_units
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        let mut states = self.results.states(keys).await?;
        for key in keys {
            if let Some(s) = self.settled_of(key) {
                let state = ItemState {
                    status: s.status,
                    ocr_at_ms: s.ocr_at_ms,
                    version: s.version,
                    dead_letters: Vec::new(),
                    error: None,
                };
                states.insert(key.clone(), state);
            }
        }
        Ok(states)
    }

    async fn claim(&self, claim: &Claim<'_>) -> Result<ClaimOutcome, StoreError> {
        self.count("dynamodb:UpdateItem", 1);
        self.claim_one(claim).await
    }

    async fn put_result(&self, record: &ResultRecord, token: &str) -> Result<bool, StoreError> {
        self.count("dynamodb:PutItem", 1);
        self.put_one(record, token).await
    }

    async fn put_failure(&self, failure: &FailureRecord, token: &str) -> Result<bool, StoreError> {
        self.count("dynamodb:UpdateItem", 1);
        self.counts.write_units.fetch_add(1, Ordering::Relaxed);
        let was_terminal = self.results.status(&failure.key).is_some();
        let written = self.results.put_failure(failure, token).await?;
        if written && !was_terminal {
            self.counts.terminal.fetch_add(1, Ordering::Relaxed);
        }
        Ok(written)
    }

    async fn note_error(&self, key: &str, error: &str) -> Result<(), StoreError> {
        self.count("dynamodb:UpdateItem", 1);
        self.counts.write_units.fetch_add(1, Ordering::Relaxed);
        self.results.note_error(key, error).await
    }

    async fn release(
        &self,
        key: &str,
        token: &str,
        error: &str,
        mark: RequestMark,
    ) -> Result<(), StoreError> {
        self.count("dynamodb:UpdateItem", 1);
        self.counts.write_units.fetch_add(1, Ordering::Relaxed);
        self.results.release(key, token, error, mark).await
    }

    async fn record_unqueued(&self, record: &ResultRecord) -> Result<bool, StoreError> {
        self.count("dynamodb:PutItem", 1);
        self.counts.write_units.fetch_add(1, Ordering::Relaxed);
        if self.settled_of(&record.key).is_some() {
            return Ok(false);
        }
        self.results.record_unqueued(record).await
    }
}

impl SimStore {
    /// Counts one request of the lister's on the checkpoint item.
    fn count_checkpoint(&self, operation: &'static str) {
        self.count(operation, 1);
        self.counts
            .checkpoint_requests
            .fetch_add(1, Ordering::Relaxed);
        self.counts.write_units.fetch_add(1, Ordering::Relaxed);
    }
}

impl CheckpointStore for SimStore {
    async fn take_lease(
        &self,
        id: &str,
        lease: &Lease,
        now: SystemTime,
    ) -> Result<LeaseOutcome, StoreError> {
        self.count_checkpoint("dynamodb:UpdateItem");
        self.checkpoints.take_lease(id, lease, now).await
    }

    async fn save(
        &self,
        id: &str,
        checkpoint: &Checkpoint,
        lease: &Lease,
    ) -> Result<SaveOutcome, StoreError> {
        self.count_checkpoint("dynamodb:PutItem");
        self.checkpoints.save(id, checkpoint, lease).await
    }

    async fn release_lease(&self, id: &str, lease: &Lease) -> Result<bool, StoreError> {
        self.count_checkpoint("dynamodb:UpdateItem");
        self.checkpoints.release_lease(id, lease).await
    }
}
