//! The world the adversarial tier runs the worker in: Cloudinary (assets with versions, OCR
//! billed and Admin calls counted on arrival, some way into a call's latency, so that calls
//! are counted out of the order they were sent in; the Admin API's hourly quota in clock-hour
//! windows, faults at every call), the results table with faults before and after each write,
//! and SQS (visibility, receive counts, the redrive policy, duplicate deliveries, redrives under
//! each id and count behaviour). Every draw comes from the seed, so a run replays exactly.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::clock::{Clock, epoch_ms, from_epoch_ms};
use crate::error::{ErrorClass, RemoteError};
use crate::message::WorkMessage;
use crate::ocr::{AssetFields, OcrOutcome, OcrResult};
use crate::queue::{QueueError, Refused, WorkQueue};
use crate::rate_gate::Quota;
use crate::store::memory::MemoryResultStore;
use crate::store::{
    Claim, ClaimOutcome, FailureRecord, ItemState, RequestMark, ResultRecord, ResultStore,
    StoreError,
};
use crate::worker::{Api, InboundRecord, OcrAnswer, OcrService};

/// SplitMix64: small, fast, and the same on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// What Cloudinary does to one call, drawn per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFault {
    /// HTTP 500 before the OCR ran.
    ServerError,
    /// The OCR ran and was billed; the answer never came (a timeout, a dropped connection).
    BilledThenLost,
    /// HTTP 420 for the hourly quota, with its reset.
    Quota,
    /// HTTP 420 with no reset the client could read.
    QuotaNoReset,
    /// HTTP 420 while the quota's headers still report calls left (an add-on's limit).
    OtherLimit,
    /// HTTP 401: the credentials refused.
    Credentials,
    /// The OCR runs (billed) and is answered pending.
    Pending,
}

/// The shares of calls each fault meets, for one seed.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub call: Vec<(CallFault, f64)>,
    /// A store call fails before it is applied, or after (applied, its answer lost).
    pub store_before: f64,
    pub store_after: f64,
    /// A deferral is refused, or sent and reported failed.
    pub send_refused: f64,
    pub send_lost_answer: f64,
    /// A receive also delivers a message in flight (at least once).
    pub duplicate_delivery: f64,
    /// An OCR request by the Upload API that the client gives up on before it arrives: it
    /// arrives up to five minutes later, and is billed then.
    pub late_arrival: f64,
}

/// An outage Cloudinary has for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Every call refuses the credentials (a rotated or mistyped secret).
    Credentials,
    /// Every OCR request meets an add-on's limit (HTTP 420 with calls left), until the
    /// operator raises it.
    AddOnLimit,
}

#[derive(Debug, Default)]
struct Asset {
    version: u64,
    /// The OCR on the current version: reads back pending this many more times.
    ocr: Option<u32>,
    /// Every request fails (the asset is gone).
    broken: bool,
}

#[derive(Debug, Default)]
pub struct CloudState {
    assets: BTreeMap<String, Asset>,
    /// OCRs billed, by asset and version.
    pub billed: BTreeMap<(String, u64), u32>,
    /// OCRs billed, by UTC day (what the stack's daily budget bounds).
    pub billed_days: BTreeMap<String, u32>,
    window: u64,
    used: u64,
    /// Admin API calls over the hourly limit, summed over windows.
    pub over_quota: u64,
    /// The windows (hours since the epoch) they were made in.
    pub over_quota_windows: BTreeMap<u64, u64>,
    pub outage: Option<Outage>,
    /// The latest refusal's end any answer named.
    pub latest_retry_at: Option<SystemTime>,
    pub faults: Faults,
    /// Requests given up on that have yet to arrive: when, and at which asset.
    late: Vec<(u64, String)>,
}

/// Cloudinary, as the worker's OCR service.
#[derive(Debug)]
pub struct Cloud {
    pub state: Mutex<CloudState>,
    rng: Mutex<Rng>,
    pub upload_api: bool,
    pub limit: u64,
    /// Whether the Admin API's answers carry a reset the client can read.
    pub sends_reset: bool,
    /// Several assets read back in one call: `None` not at all; `Some(true)` with their OCR
    /// in the answer; `Some(false)` without it.
    pub bulk: Option<bool>,
    pub clock: Clock,
}

const HOUR_MS: u64 = 3_600_000;

impl Cloud {
    pub fn new(seed: u64, upload_api: bool, limit: u64, sends_reset: bool, clock: Clock) -> Self {
        Self {
            state: Mutex::default(),
            rng: Mutex::new(Rng::new(seed)),
            upload_api,
            limit,
            sends_reset,
            bulk: None,
            clock,
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, CloudState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add_asset(&self, key: &str, broken: bool) {
        self.lock().assets.insert(
            key.to_string(),
            Asset {
                version: 1,
                ocr: None,
                broken,
            },
        );
    }

    /// Uploads the asset again over its public_id: a new version, with no OCR on it.
    pub fn upload_again(&self, key: &str) -> u64 {
        let mut s = self.lock();
        let asset = s.assets.get_mut(key).expect("a known asset");
        asset.version += 1;
        asset.ocr = None;
        asset.version
    }

    pub fn version(&self, key: &str) -> u64 {
        self.lock().assets[key].version
    }

    pub fn text(key: &str, version: u64) -> String {
        format!("text of {key} v{version}")
    }

    fn draw_fault(&self, faults: &Faults) -> Option<CallFault> {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        faults
            .call
            .iter()
            .find(|(_, p)| rng.chance(*p))
            .map(|(f, _)| *f)
    }

    fn latency(&self) -> Duration {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        // Mostly short, now and then long enough to straddle a window's turn.
        match rng.below(5) {
            0 => Duration::from_millis(5_000 + rng.below(50_000)),
            _ => Duration::from_millis(50 + rng.below(1_500)),
        }
    }

    /// Counts an Admin API call in its clock-hour window; the quota the answer reports, or the
    /// refusal when the window's calls are spent.
    fn admin_call(&self, s: &mut CloudState, now_ms: u64) -> Result<Option<Quota>, RemoteError> {
        let window = now_ms / HOUR_MS;
        if window != s.window {
            s.window = window;
            s.used = 0;
        }
        s.used += 1;
        let reset = from_epoch_ms((window + 1) * HOUR_MS);
        if s.used > self.limit {
            s.over_quota += 1;
            *s.over_quota_windows.entry(window).or_default() += 1;
            return Err(self.refusal(s, Some(reset), "HTTP 420: Rate Limit Exceeded"));
        }
        Ok(Some(Quota {
            limit: self.limit,
            remaining: self.limit - s.used,
            reset: self.sends_reset.then_some(reset),
        }))
    }

    fn refusal(
        &self,
        s: &mut CloudState,
        retry_at: Option<SystemTime>,
        reason: &str,
    ) -> RemoteError {
        if let Some(t) = retry_at {
            s.latest_retry_at = Some(s.latest_retry_at.map_or(t, |l| l.max(t)));
        }
        RemoteError {
            class: ErrorClass::RateLimited,
            retry_at,
            reason: reason.into(),
            credentials_refused: false,
            not_run: false,
            quota: None,
        }
    }

    /// What a call meets before it reaches the asset, if anything.
    fn refused(
        &self,
        s: &mut CloudState,
        fault: Option<CallFault>,
        now: SystemTime,
        request: bool,
    ) -> Option<RemoteError> {
        let fault = match s.outage {
            Some(Outage::Credentials) => Some(CallFault::Credentials),
            Some(Outage::AddOnLimit) if request => Some(CallFault::OtherLimit),
            _ => fault,
        };
        let hour_end = from_epoch_ms((epoch_ms(now) / HOUR_MS + 1) * HOUR_MS);
        match fault? {
            CallFault::ServerError => Some(RemoteError::new(ErrorClass::Transient, "HTTP 500")),
            CallFault::Quota => Some(self.refusal(s, Some(hour_end), "HTTP 420: quota")),
            CallFault::QuotaNoReset => Some(self.refusal(s, None, "HTTP 420: no reset")),
            CallFault::OtherLimit => Some(self.refusal(
                s,
                Some(now + crate::defaults::OTHER_LIMIT_WAIT),
                "HTTP 420: add-on limit reached",
            )),
            CallFault::Credentials => Some(RemoteError {
                class: ErrorClass::Transient,
                retry_at: None,
                reason: "HTTP 401: Invalid api_key".into(),
                credentials_refused: true,
                not_run: false,
                quota: None,
            }),
            CallFault::BilledThenLost | CallFault::Pending => None,
        }
    }

    /// The requests given up on that arrive by `now`, each billed as it arrives (unless an
    /// outage refuses it).
    pub fn arrive_late(&self, now: SystemTime) {
        let mut s = self.lock();
        self.arrive(&mut s, now);
    }

    fn arrive(&self, s: &mut CloudState, now: SystemTime) {
        let (due, later) = std::mem::take(&mut s.late)
            .into_iter()
            .partition(|(at, _)| *at <= epoch_ms(now));
        s.late = later;
        for (_, key) in due {
            if s.outage.is_none() {
                let _ = self.at_asset(s, &key, true, None);
            }
        }
    }

    /// When the next request given up on arrives.
    pub fn next_late(&self) -> Option<SystemTime> {
        self.lock()
            .late
            .iter()
            .map(|(at, _)| from_epoch_ms(*at))
            .min()
    }

    fn answer(
        &self,
        key: &str,
        request: bool,
    ) -> (Result<(OcrOutcome, u64), RemoteError>, Option<Quota>) {
        let now = self.clock.now();
        let mut s = self.lock();
        self.arrive(&mut s, now);
        let faults = s.faults.clone();
        let fault = self.draw_fault(&faults);
        if let Some(e) = self.refused(&mut s, fault, now, request) {
            return (Err(e), None);
        }
        let admin = !request || !self.upload_api;
        let quota = if admin {
            match self.admin_call(&mut s, epoch_ms(now)) {
                Ok(q) => q,
                Err(e) => return (Err(e), None),
            }
        } else {
            None
        };
        let at_asset = self.at_asset(&mut s, key, request, fault);
        // The Admin API reports its quota on an error answer too (a lost answer tells nothing).
        let at_asset = at_asset.map_err(|e| match e.class {
            ErrorClass::Permanent => RemoteError { quota, ..e },
            _ => e,
        });
        (at_asset, quota)
    }

    /// The call reaches the asset: a request is billed on arrival, whatever the caller sees.
    fn at_asset(
        &self,
        s: &mut CloudState,
        key: &str,
        request: bool,
        fault: Option<CallFault>,
    ) -> Result<(OcrOutcome, u64), RemoteError> {
        let asset = s.assets.get_mut(key).expect("a known asset");
        let version = asset.version;
        if asset.broken {
            return Err(
                RemoteError::new(ErrorClass::Permanent, "HTTP 404: Resource not found").not_run(),
            );
        }
        if request {
            let pending = if fault == Some(CallFault::Pending) {
                1 + (version % 4) as u32
            } else {
                0
            };
            asset.ocr = Some(pending);
            *s.billed.entry((key.to_string(), version)).or_default() += 1;
            let ((day, _), _) = crate::budget::periods(self.clock.now());
            *s.billed_days.entry(day).or_default() += 1;
            if fault == Some(CallFault::BilledThenLost) {
                return Err(RemoteError::new(
                    ErrorClass::Transient,
                    "operation timed out",
                ));
            }
        }
        let outcome = match asset.ocr.as_mut() {
            None => OcrOutcome::NotRequested,
            Some(0) => OcrOutcome::Text {
                text: Self::text(key, version),
                locale: Some("en".into()),
            },
            Some(left) if request => {
                let _ = left;
                OcrOutcome::Pending
            }
            Some(left) => {
                *left -= 1;
                OcrOutcome::Pending
            }
        };
        Ok((outcome, version))
    }

    async fn call(&self, message: &WorkMessage, request: bool) -> Result<OcrAnswer, RemoteError> {
        let latency = self.latency();
        // Cloudinary counts (and bills) a call when it arrives, some way into its latency: a
        // call sent earlier may be counted after a later one, and its answer come last.
        let arrival = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            latency.mul_f64(rng.below(101) as f64 / 100.0)
        };
        let late = request && self.upload_api && {
            let p = self.lock().faults.late_arrival;
            self.rng.lock().unwrap_or_else(|e| e.into_inner()).chance(p)
        };
        if late {
            tokio::time::sleep(latency).await;
            let delay = {
                let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                1 + rng.below(300_000)
            };
            let at = epoch_ms(self.clock.now()) + delay;
            self.lock().late.push((at, message.item_key()));
            return Err(RemoteError::new(
                ErrorClass::Transient,
                "operation timed out",
            ));
        }
        tokio::time::sleep(arrival).await;
        let (result, quota) = self.answer(&message.item_key(), request);
        tokio::time::sleep(latency - arrival).await;
        let (outcome, version) = result?;
        Ok(OcrAnswer {
            result: found(outcome, version),
            quota,
            latency,
        })
    }
}

/// What a call finds at an asset of this version.
fn found(outcome: OcrOutcome, version: u64) -> OcrResult {
    OcrResult {
        pages: u32::from(matches!(outcome, OcrOutcome::Text { .. })),
        outcome,
        asset: AssetFields {
            format: Some("png".into()),
            version: Some(version),
            ..AssetFields::default()
        },
    }
}

impl OcrService for Cloud {
    fn request_api(&self) -> Api {
        if self.upload_api {
            Api::Upload
        } else {
            Api::Admin
        }
    }

    async fn request_ocr(&self, message: &WorkMessage) -> Result<OcrAnswer, RemoteError> {
        self.call(message, true).await
    }

    async fn fetch_result(&self, message: &WorkMessage) -> Result<OcrAnswer, RemoteError> {
        self.call(message, false).await
    }

    /// One Admin call for all of them, counted on arrival; each asset as a read-back of it
    /// finds it then (or, from a service whose answer leaves the OCR out, without it).
    async fn fetch_results(
        &self,
        messages: &[&WorkMessage],
    ) -> Option<Result<crate::worker::BulkAnswer, RemoteError>> {
        let carries_ocr = self.bulk?;
        let latency = self.latency();
        let arrival = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            latency.mul_f64(rng.below(101) as f64 / 100.0)
        };
        tokio::time::sleep(arrival).await;
        let answer = {
            let now = self.clock.now();
            let mut s = self.lock();
            self.arrive(&mut s, now);
            let faults = s.faults.clone();
            let fault = self.draw_fault(&faults);
            match self.refused(&mut s, fault, now, false) {
                Some(e) => Err(e),
                None => self.admin_call(&mut s, epoch_ms(now)).map(|quota| {
                    let results = messages
                        .iter()
                        .map(|m| {
                            let key = m.item_key();
                            if !carries_ocr {
                                let version = s.assets.get(&key)?.version;
                                return Some((OcrOutcome::NotRequested, version));
                            }
                            self.at_asset(&mut s, &key, false, None).ok()
                        })
                        .map(|at| at.map(|(outcome, version)| found(outcome, version)))
                        .collect();
                    crate::worker::BulkAnswer {
                        results,
                        quota,
                        latency,
                    }
                }),
            }
        };
        tokio::time::sleep(latency - arrival).await;
        Some(answer)
    }
}

/// The results table, failing before or after a write as the seed says.
#[derive(Debug)]
pub struct ChaosStore {
    pub inner: MemoryResultStore,
    rng: Mutex<Rng>,
    pub faults: Mutex<(f64, f64)>,
}

/// Whether a store call fails, and when.
enum StoreFault {
    Before,
    After,
}

impl ChaosStore {
    pub fn new(seed: u64) -> Self {
        Self {
            inner: MemoryResultStore::new(),
            rng: Mutex::new(Rng::new(seed)),
            faults: Mutex::new((0.0, 0.0)),
        }
    }

    fn draw(&self) -> Option<StoreFault> {
        let (before, after) = *self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        if rng.chance(before) {
            Some(StoreFault::Before)
        } else if rng.chance(after) {
            Some(StoreFault::After)
        } else {
            None
        }
    }

    async fn run<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let fault = self.draw();
        if matches!(fault, Some(StoreFault::Before)) {
            return Err(StoreError::new(
                op,
                "chaos",
                "InternalServerError",
                "failed before",
            ));
        }
        let result = call.await?;
        match fault {
            Some(StoreFault::After) => Err(StoreError::new(
                op,
                "chaos",
                "RequestTimeout",
                "answer lost",
            )),
            _ => Ok(result),
        }
    }
}

impl ResultStore for ChaosStore {
    async fn states(&self, keys: &[String]) -> Result<HashMap<String, ItemState>, StoreError> {
        self.run("BatchGetItem", self.inner.states(keys)).await
    }
    async fn claim(&self, claim: &Claim<'_>) -> Result<ClaimOutcome, StoreError> {
        self.run("UpdateItem", self.inner.claim(claim)).await
    }
    async fn put_result(&self, record: &ResultRecord, token: &str) -> Result<bool, StoreError> {
        self.run("PutItem", self.inner.put_result(record, token))
            .await
    }
    async fn put_failure(&self, failure: &FailureRecord, token: &str) -> Result<bool, StoreError> {
        self.run("UpdateItem", self.inner.put_failure(failure, token))
            .await
    }
    async fn release(
        &self,
        key: &str,
        token: &str,
        error: &str,
        mark: RequestMark,
    ) -> Result<(), StoreError> {
        self.run("UpdateItem", self.inner.release(key, token, error, mark))
            .await
    }
    async fn note_error(&self, key: &str, error: &str) -> Result<(), StoreError> {
        self.run("UpdateItem", self.inner.note_error(key, error))
            .await
    }
    async fn record_unqueued(&self, record: &ResultRecord) -> Result<bool, StoreError> {
        self.inner.record_unqueued(record).await
    }
}

/// One message in SQS.
#[derive(Debug, Clone)]
pub struct Msg {
    pub id: String,
    pub body: String,
    /// `ApproximateReceiveCount` as SQS reports it.
    pub reported: u32,
    /// Receives counted for the redrive policy since the message came to the queue.
    pub counted: u32,
    pub visible_at: u64,
    pub receipt: Option<String>,
    /// How often this id was redriven (its life, for the invariants).
    pub life: u32,
}

/// How a redrive treats a message's id and receive count (not documented: each is tried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redrive {
    NewIdCountReset,
    SameIdCountKept,
    SameIdCountReset,
}

#[derive(Debug, Default)]
pub struct QueueState {
    next: u64,
    receipts: u64,
    pub work: BTreeMap<String, Msg>,
    pub dlq: Vec<Msg>,
    pub faults: Faults,
}

/// The work queue with its dead-letter queue and redrive policy.
#[derive(Debug)]
pub struct Sqs {
    pub state: Mutex<QueueState>,
    rng: Mutex<Rng>,
    pub max_receive_count: u32,
    pub visibility: Duration,
    clock: Clock,
}

impl Sqs {
    pub fn new(seed: u64, max_receive_count: u32, clock: Clock) -> Self {
        Self {
            state: Mutex::default(),
            rng: Mutex::new(Rng::new(seed)),
            max_receive_count,
            visibility: Duration::from_secs(900),
            clock,
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn chance(&self, p: f64) -> bool {
        self.rng.lock().unwrap_or_else(|e| e.into_inner()).chance(p)
    }

    /// Sends a message visible after `delay`; its id.
    pub fn send(&self, body: String, delay: Duration) -> String {
        let now = epoch_ms(self.clock.now());
        let mut s = self.lock();
        s.next += 1;
        let id = format!("msg-{}", s.next);
        let msg = Msg {
            id: id.clone(),
            body,
            reported: 0,
            counted: 0,
            visible_at: now + delay.as_millis() as u64,
            receipt: None,
            life: 0,
        };
        s.work.insert(id.clone(), msg);
        id
    }

    /// Up to `max` visible messages (the redrive policy moves one received too often), now
    /// and then with one in flight delivered again.
    pub fn receive(&self, max: usize) -> Vec<(InboundRecord, u32)> {
        let now = epoch_ms(self.clock.now());
        let duplicate = {
            let p = self.lock().faults.duplicate_delivery;
            self.chance(p)
        };
        let mut s = self.lock();
        let visible: Vec<String> = s
            .work
            .values()
            .filter(|m| m.visible_at <= now)
            .map(|m| m.id.clone())
            .collect();
        let in_flight: Vec<String> = s
            .work
            .values()
            .filter(|m| m.visible_at > now && m.receipt.is_some())
            .map(|m| m.id.clone())
            .collect();
        let mut chosen: Vec<String> = visible.into_iter().take(max).collect();
        if duplicate
            && chosen.len() < max
            && let Some(id) = in_flight.first()
        {
            chosen.push(id.clone());
        }
        let mut out = Vec::new();
        for id in chosen {
            if let Some(r) = self.deliver(&mut s, &id, now) {
                out.push(r);
            }
        }
        out
    }

    fn deliver(&self, s: &mut QueueState, id: &str, now: u64) -> Option<(InboundRecord, u32)> {
        let over = s.work[id].counted >= self.max_receive_count;
        if over {
            let msg = s.work.remove(id).expect("listed");
            s.dlq.push(Msg {
                receipt: None,
                ..msg
            });
            return None;
        }
        s.receipts += 1;
        let receipt = format!("{id}#{}", s.receipts);
        let msg = s.work.get_mut(id).expect("listed");
        msg.reported += 1;
        msg.counted += 1;
        msg.visible_at = now + self.visibility.as_millis() as u64;
        msg.receipt = Some(receipt.clone());
        let record = InboundRecord {
            message_id: msg.id.clone(),
            body: msg.body.clone(),
            receive_count: msg.reported,
            receipt_handle: receipt,
            from_read_back_queue: false,
        };
        Some((record, msg.life))
    }

    /// Deletes a received message (a stale receipt deletes nothing).
    pub fn delete(&self, receipt: &str) {
        let mut s = self.lock();
        let id = receipt.split('#').next().unwrap_or_default().to_string();
        if s.work
            .get(&id)
            .is_some_and(|m| m.receipt.as_deref() == Some(receipt))
        {
            s.work.remove(&id);
        }
    }

    /// Moves every dead letter back (the console's "Redrive to source queue(s)").
    pub fn redrive(&self, how: Redrive) -> usize {
        let now = epoch_ms(self.clock.now());
        let moved: Vec<Msg> = std::mem::take(&mut self.lock().dlq);
        let count = moved.len();
        for msg in moved {
            let mut s = self.lock();
            let msg = match how {
                Redrive::NewIdCountReset => {
                    s.next += 1;
                    Msg {
                        id: format!("msg-{}", s.next),
                        reported: 0,
                        life: 0,
                        ..msg
                    }
                }
                Redrive::SameIdCountKept => Msg {
                    life: msg.life + 1,
                    ..msg
                },
                Redrive::SameIdCountReset => Msg {
                    reported: 0,
                    life: msg.life + 1,
                    ..msg
                },
            };
            let msg = Msg {
                counted: 0,
                visible_at: now,
                receipt: None,
                ..msg
            };
            s.work.insert(msg.id.clone(), msg);
        }
        count
    }

    pub fn is_empty(&self) -> bool {
        self.lock().work.is_empty()
    }

    /// When the next message becomes visible, if one is waiting.
    pub fn next_visible(&self) -> Option<u64> {
        self.lock().work.values().map(|m| m.visible_at).min()
    }
}

impl WorkQueue for Sqs {
    async fn enqueue(&self, messages: &[WorkMessage]) -> Result<Vec<Refused>, QueueError> {
        for m in messages {
            self.send(m.to_body(), Duration::ZERO);
        }
        Ok(Vec::new())
    }

    async fn send_delayed_batch(
        &self,
        entries: &[(WorkMessage, Duration)],
    ) -> Result<Vec<Option<String>>, QueueError> {
        let (refused, lost) = {
            let s = self.lock();
            (s.faults.send_refused, s.faults.send_lost_answer)
        };
        let mut out = Vec::new();
        for (message, delay) in entries {
            if self.chance(refused) {
                out.push(Some("InternalError: refused".to_string()));
                continue;
            }
            self.send(message.to_body(), *delay);
            out.push(
                self.chance(lost)
                    .then(|| "RequestTimeout: answer lost".to_string()),
            );
        }
        Ok(out)
    }

    async fn return_after(
        &self,
        entries: &[(&str, Duration)],
    ) -> Result<Vec<Option<String>>, QueueError> {
        let now = epoch_ms(self.clock.now());
        let mut s = self.lock();
        for (receipt, delay) in entries {
            let id = receipt.split('#').next().unwrap_or_default();
            if let Some(m) = s
                .work
                .get_mut(id)
                .filter(|m| m.receipt.as_deref() == Some(*receipt))
            {
                m.visible_at = now + delay.as_millis() as u64;
            }
        }
        Ok(vec![None; entries.len()])
    }
}
