//! Read-backs gathered: the records of an instance that read assets back at the same time
//! share one Admin API call for up to [`GATHER_MAX`] of them, when the service can answer
//! several at once and a canary (an asset this instance stored a finished OCR of) shows that
//! the shared answer carries the OCR. Otherwise each reads its asset back alone, as before.
//!
//! The records of a batch run side by side; a read-back waits until every record running then
//! waits for one too, or has ended, and the last to arrive makes the call for all of them. A
//! record never waits for one that is not running yet, so nothing waits for ever.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use tokio::sync::{Notify, oneshot};

use super::{Api, OcrAnswer, OcrService, Worker};
use crate::error::ErrorClass;
use crate::message::WorkMessage;
use crate::ocr::OcrOutcome;
use crate::queue::WorkQueue;
use crate::store::ResultStore;

/// Assets named in one shared read-back (Cloudinary's `public_ids` takes up to 100).
pub const GATHER_MAX: usize = 100;

/// Records of a read-back queue's batch (its event source's `BatchSize`): with the canary
/// they fill one shared read-back. A batch of [`GATHER_MAX`] would make two calls, the last
/// for one asset.
pub const READ_BACK_BATCH: usize = GATHER_MAX - 1;

/// Tries of a shared read-back that fails on the way (a 5xx, a timeout).
const SHARED_ATTEMPTS: u32 = 2;

/// What a gathered read-back gives one record.
#[derive(Debug)]
pub(super) enum Gathered {
    /// The asset as the shared, verified answer has it (no OCR: `NotRequested`).
    Found(Box<OcrAnswer>),
    /// No shared answer for this asset: it is read back alone, here.
    Alone,
    /// The shared answer did not show a canary's OCR: read back alone by the work queue's
    /// instances (which then read back alone for a while).
    Doubted,
    /// The Admin API's gate is closed until then.
    Closed(SystemTime),
}

/// The records of this instance running now, and those waiting for a shared read-back.
#[derive(Debug, Default)]
pub(super) struct Gatherer {
    inner: Mutex<Inner>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    running: usize,
    waiting: Vec<Waiting>,
    leading: bool,
    next_id: u64,
}

/// A read-back waiting to be made with others: its id, its message, where its answer goes.
type Waiting = (u64, WorkMessage, oneshot::Sender<Gathered>);

/// Read-backs of one resource and delivery type, each with where its answer goes.
type Chunk = Vec<(WorkMessage, oneshot::Sender<Gathered>)>;

/// Takes a waiting read-back out when its record stops waiting (an invocation cut short).
struct WaitGuard<'a>(&'a Gatherer, u64);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.waiting.retain(|(id, _, _)| *id != self.1);
        drop(inner);
        self.0.wake.notify_waiters();
    }
}

/// The read-back of others being made: another may lead once it ends, however it ends.
struct Leading<'a>(&'a Gatherer);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.0.lock().leading = false;
        self.0.wake.notify_waiters();
    }
}

/// A batch's records running: one per record in flight, counted from the start (a record
/// polled first must not find itself alone) until no record is left to take its place.
pub(super) struct Slots<'a> {
    gatherer: &'a Gatherer,
    /// Lanes (an asset's records) not started yet: each takes the place of one that ends.
    unstarted: AtomicUsize,
    held: AtomicUsize,
}

impl Slots<'_> {
    /// A lane ended: its place goes to the next one, or is given up.
    pub fn lane_done(&self) {
        if self
            .unstarted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| u.checked_sub(1))
            .is_err()
        {
            self.held.fetch_sub(1, Ordering::SeqCst);
            self.gatherer.give_up(1);
        }
    }
}

impl Drop for Slots<'_> {
    fn drop(&mut self) {
        self.gatherer.give_up(self.held.swap(0, Ordering::SeqCst));
    }
}

impl Gatherer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a batch's lanes as running, as many at once as are in flight.
    pub fn slots(&self, lanes: usize, in_flight: usize) -> Slots<'_> {
        let held = lanes.min(in_flight.max(1));
        self.lock().running += held;
        Slots {
            gatherer: self,
            unstarted: AtomicUsize::new(lanes - held),
            held: AtomicUsize::new(held),
        }
    }

    fn give_up(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut inner = self.lock();
        inner.running = inner.running.saturating_sub(n);
        drop(inner);
        self.wake.notify_waiters();
    }

    /// The waiting read-backs, once every running record waits: taken by the caller, who
    /// makes the call for all of them.
    fn take_when_all_wait(&self) -> Option<(Leading<'_>, Vec<Waiting>)> {
        let mut inner = self.lock();
        if inner.leading || inner.waiting.is_empty() || inner.waiting.len() < inner.running {
            return None;
        }
        inner.leading = true;
        Some((Leading(self), std::mem::take(&mut inner.waiting)))
    }
}

impl<O: OcrService, S: ResultStore, Q: WorkQueue> Worker<O, S, Q> {
    /// The asset read back with the others read back at the same time.
    pub(super) async fn gathered_read_back(&self, message: &WorkMessage) -> Gathered {
        let (tx, mut rx) = oneshot::channel();
        let id = {
            let mut inner = self.gatherer.lock();
            inner.next_id += 1;
            let id = inner.next_id;
            inner.waiting.push((id, message.clone(), tx));
            id
        };
        let _waiting = WaitGuard(&self.gatherer, id);
        loop {
            let woken = self.gatherer.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some((leading, waiting)) = self.gatherer.take_when_all_wait() {
                self.read_back_together(waiting).await;
                drop(leading);
            }
            tokio::select! {
                answer = &mut rx => return answer.unwrap_or(Gathered::Alone),
                () = &mut woken => {}
            }
        }
    }

    /// One call per resource and delivery type for the waiting read-backs; each gets its
    /// asset, or reads it back alone.
    async fn read_back_together(&self, waiting: Vec<Waiting>) {
        let mut groups: HashMap<(String, String), Chunk> = HashMap::new();
        for (_, message, tx) in waiting {
            groups
                .entry((message.resource_type.clone(), message.delivery_type.clone()))
                .or_default()
                .push((message, tx));
        }
        for (kind, mut group) in groups {
            while !group.is_empty() {
                let rest = group.split_off(group.len().min(READ_BACK_BATCH));
                let chunk = std::mem::replace(&mut group, rest);
                self.read_back_chunk(&kind, chunk).await;
            }
        }
    }

    async fn read_back_chunk(&self, kind: &(String, String), chunk: Chunk) {
        let answer_all = |chunk: Chunk, f: &dyn Fn() -> Gathered| {
            for (_, tx) in chunk {
                let _ = tx.send(f());
            }
        };
        // Alone is as cheap for one; without a canary nothing says the answer carries OCR.
        // The canary is an asset none of them is (one read back again, a forced re-OCR say,
        // would not show the old OCR for sure): this instance's, or one a message brought.
        let named = |id: &str| chunk.iter().any(|(m, _)| m.public_id == id);
        let canary = self
            .canary(kind)
            .into_iter()
            .chain(chunk.iter().filter_map(|(m, _)| m.canary.clone()))
            .find(|id| !named(id));
        let Some(canary) = canary.filter(|_| chunk.len() > 1) else {
            return answer_all(chunk, &|| Gathered::Alone);
        };
        let canary = WorkMessage {
            canary: None,
            gathered: false,
            ..WorkMessage::new(canary, kind.0.clone(), kind.1.clone())
        };
        let mut asked: Vec<&WorkMessage> = chunk.iter().map(|(m, _)| m).collect();
        let canary_at = asked.len();
        asked.push(&canary);
        // A shared call that failed on the way (a 5xx, a timeout) is made once more before
        // each asset is read back alone: alone, one failure would cost up to a hundred calls.
        let mut attempt = 0;
        let bulk = loop {
            attempt += 1;
            let permit = match self.gate(Api::Admin).admit(self.now()) {
                Ok(permit) => permit,
                Err(until) => return answer_all(chunk, &|| Gathered::Closed(until)),
            };
            let Some(answer) = self.ocr.fetch_results(&asked).await else {
                drop(permit);
                return answer_all(chunk, &|| Gathered::Alone);
            };
            match answer {
                Ok(bulk) => {
                    permit.answered(bulk.quota);
                    break bulk;
                }
                Err(e) => {
                    self.learn_from_error(permit, Api::Admin, &e);
                    let again = attempt < SHARED_ATTEMPTS
                        && e.class == ErrorClass::Transient
                        && !e.credentials_refused
                        && e.retry_at.is_none();
                    if again {
                        tracing::info!(error = %e.reason, "a gathered read-back failed: made once more");
                        continue;
                    }
                    tracing::info!(error = %e.reason, "a gathered read-back failed: each asset is read back alone");
                    return answer_all(chunk, &|| Gathered::Alone);
                }
            }
        };
        let verified = bulk.results.get(canary_at).is_some_and(|r| {
            r.as_ref()
                .is_some_and(|r| matches!(r.outcome, OcrOutcome::Text { .. } | OcrOutcome::NoText))
        });
        if !verified {
            tracing::warn!(
                canary = %canary.public_id,
                "the gathered read-back does not show the OCR of an asset known to have one: each asset is read back alone"
            );
            self.forget_canary(kind, &canary.public_id);
            return answer_all(chunk, &|| Gathered::Doubted);
        }
        tracing::info!(assets = chunk.len(), "read back together");
        for (index, (_, tx)) in chunk.into_iter().enumerate() {
            let gathered = match bulk.results.get(index).cloned().flatten() {
                Some(result) => Gathered::Found(Box::new(OcrAnswer {
                    result,
                    quota: bulk.quota,
                    latency: bulk.latency,
                })),
                // Not in the answer (deleted, say): alone, its own answer says why.
                None => Gathered::Alone,
            };
            let _ = tx.send(gathered);
        }
    }

    /// An asset of this kind this instance stored a finished OCR of.
    pub(super) fn canary(&self, kind: &(String, String)) -> Option<String> {
        self.canaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(kind)
            .cloned()
    }

    fn forget_canary(&self, kind: &(String, String), canary: &str) {
        let mut canaries = self.canaries.lock().unwrap_or_else(|e| e.into_inner());
        if canaries.get(kind).is_some_and(|c| c == canary) {
            canaries.remove(kind);
        }
    }

    /// As an instance that stored nothing yet.
    #[cfg(test)]
    pub(super) fn forget_canaries(&self) {
        self.canaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Notes an asset whose finished OCR was just stored: a canary for shared read-backs.
    pub(super) fn note_canary(&self, message: &WorkMessage) {
        self.canaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                (message.resource_type.clone(), message.delivery_type.clone()),
                message.public_id.clone(),
            );
    }
}

/// How long an instance that met a read-back the read-back queue could not trust reads back
/// alone instead of sending read-backs there.
pub(super) const DOUBT: std::time::Duration = std::time::Duration::from_secs(3600);
