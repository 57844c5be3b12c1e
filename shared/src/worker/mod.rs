//! The worker's use case: one SQS batch of work messages in, one disposition per message out.
//!
//! - [`batch`]: the batch loop (parse, one status read, the messages of one asset one after
//!   another, records in flight, the deferrals sent together, holding while the quota is
//!   spent);
//! - [`record`]: one record's path, in named steps: admit, claim, call, interpret, store;
//! - [`failure`]: what a failure becomes, by its cause, its class and the receive it happened
//!   on;
//! - [`outcome`]: what became of each record, each outcome carrying its own data.
//!
//! The modules depend downwards only: `batch` → `record` → `failure` → `outcome`.

mod batch;
mod failure;
mod gather;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
mod outcome;
mod record;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::{Duration, SystemTime};

use crate::clock::Clock;
use crate::defaults;
use crate::error::RemoteError;
use crate::message::WorkMessage;
use crate::ocr::OcrResult;
use crate::queue::WorkQueue;
use crate::rate_gate::{Quota, RateGate};
use crate::store::ResultStore;

pub use batch::parse_body;
pub use failure::{FailurePlan, Origin, SETTLE_MARGIN, plan_failure};
pub use gather::{GATHER_MAX, READ_BACK_BATCH};
pub use outcome::{BatchOutcome, DeferCause, Deferral, Disposition, tally};

/// What an OCR service answered about one asset, in the domain's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcrAnswer {
    pub result: OcrResult,
    /// The Admin API quota the answer reported (absent with the Upload API).
    pub quota: Option<Quota>,
    pub latency: Duration,
}

/// Several assets read back in one call: each one's result, in the order asked, or `None`
/// where the answer does not name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkAnswer {
    pub results: Vec<Option<OcrResult>>,
    /// The Admin API quota the answer reported.
    pub quota: Option<Quota>,
    pub latency: Duration,
}

/// Which of Cloudinary's APIs a call goes to: each has its own limits, so each has its own gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// The Admin API: an hourly quota, reported on every answer (update, details, listing).
    Admin,
    /// The Upload API (`explicit`): no hourly quota; a 429 with `Retry-After` when overloaded.
    Upload,
}

/// Enables OCR on an asset and reads results back. The worker is generic over it.
pub trait OcrService: Send + Sync {
    /// The API an OCR request goes to (read-backs always go to the Admin API).
    fn request_api(&self) -> Api;
    /// Switches OCR on (a paid call).
    fn request_ocr(
        &self,
        message: &WorkMessage,
    ) -> impl Future<Output = Result<OcrAnswer, RemoteError>> + Send;
    /// Reads an earlier OCR's result without starting (or paying for) a new one.
    fn fetch_result(
        &self,
        message: &WorkMessage,
    ) -> impl Future<Output = Result<OcrAnswer, RemoteError>> + Send;
    /// Reads up to [`GATHER_MAX`] assets of one resource and delivery type back in one Admin
    /// API call; `None` when the service cannot (each is then read back alone). Whether the
    /// answer carries OCR at all is the worker's to check (a canary among the assets).
    fn fetch_results(
        &self,
        messages: &[&WorkMessage],
    ) -> impl Future<Output = Option<Result<BulkAnswer, RemoteError>>> + Send {
        let _ = messages;
        std::future::ready(None)
    }
}

/// One service shared by several workers (instances of a simulation, say).
impl<T: OcrService> OcrService for std::sync::Arc<T> {
    fn request_api(&self) -> Api {
        (**self).request_api()
    }
    fn request_ocr(
        &self,
        message: &WorkMessage,
    ) -> impl Future<Output = Result<OcrAnswer, RemoteError>> + Send {
        (**self).request_ocr(message)
    }
    fn fetch_result(
        &self,
        message: &WorkMessage,
    ) -> impl Future<Output = Result<OcrAnswer, RemoteError>> + Send {
        (**self).fetch_result(message)
    }
    fn fetch_results(
        &self,
        messages: &[&WorkMessage],
    ) -> impl Future<Output = Option<Result<BulkAnswer, RemoteError>>> + Send {
        (**self).fetch_results(messages)
    }
}

/// One SQS record, as the worker needs it.
#[derive(Debug, Clone)]
pub struct InboundRecord {
    pub message_id: String,
    pub body: String,
    /// `ApproximateReceiveCount` (1 on the first delivery).
    pub receive_count: u32,
    /// The handle that changes the message's visibility.
    pub receipt_handle: String,
    /// Received from the read-back queue (its handle changes visibility there), whatever the
    /// message says of itself: a redrive may put a message marked `gathered` on the work queue.
    pub from_read_back_queue: bool,
}

/// Tuning of the worker, fixed when it is built.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Records of a batch processed at once.
    pub concurrency: usize,
    /// The work queue's `maxReceiveCount`: a transient failure on this receive fails the asset
    /// for good, with its reason; a receive above it is a copy redriven from the dead-letter
    /// queue.
    pub max_receive_count: u32,
    /// A message failed for good fails fast on its receives within this long of its failure
    /// (the receives it has left come within it); a receive later is a redriven copy's.
    pub fail_fast_window: Duration,
    /// A record is not started with less time than this left before the deadline.
    pub deadline_margin: Duration,
    /// Delay before reading back a pending OCR result.
    pub pending_poll_delay: Duration,
    /// Deferrals for a pending OCR before it is given up as failed.
    pub max_pending_polls: u32,
    /// Worker instances that may run at once (the reserved concurrency): each takes its share
    /// of the Cloudinary quota, and more only as far as its own answers show calls the others
    /// left (see [`crate::rate_gate`]).
    pub instances: u32,
    /// While the quota is spent, an invocation waits before returning, up to this long before
    /// its deadline.
    pub hold_margin: Duration,
    /// The longest a message is deferred at once (SQS's longest delay, 15 minutes; a wait
    /// longer than that is made of several deferrals).
    pub max_deferral: Duration,
    /// After Cloudinary refuses the credentials, no call is made for this long (the
    /// invocation backs off; its other records wait in the queue), and a refused message
    /// waits this long at first, doubling with each refusal.
    pub credentials_wait: Duration,
    /// A read-back that finds no OCR pays again only this long after the claim of an attempt
    /// whose request got no answer (see [`defaults::REQUEST_SETTLE`]): the work queue's
    /// visibility timeout less the worker's timeout.
    pub request_settle: Duration,
    /// Read-backs go to the read-back queue, whose batches read many assets back in one call
    /// (see [`gather`]); off: each is read back where it is met.
    pub read_back_queue: bool,
    /// Where "now" comes from.
    pub clock: Clock,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: defaults::RECORDS_IN_FLIGHT,
            max_receive_count: defaults::MAX_RECEIVE_COUNT,
            fail_fast_window: defaults::FAIL_FAST_WINDOW,
            request_settle: defaults::REQUEST_SETTLE,
            deadline_margin: defaults::CLOUDINARY_TIMEOUT + defaults::WORKER_DEADLINE_SLACK,
            pending_poll_delay: defaults::PENDING_POLL_DELAY,
            max_pending_polls: defaults::MAX_PENDING_POLLS,
            instances: 1,
            hold_margin: defaults::HOLD_MARGIN,
            max_deferral: crate::queue::MAX_DELAY,
            credentials_wait: defaults::CREDENTIALS_WAIT,
            read_back_queue: false,
            clock: Clock::System,
        }
    }
}

/// The worker: OCR service, result store and work queue (for deferrals, and to return a
/// failed message at once so that the redrive policy dead-letters it).
pub struct Worker<O, S, Q> {
    ocr: O,
    store: S,
    queue: Q,
    /// The Admin API's quota (update requests and every read-back).
    admin_gate: RateGate,
    /// The Upload API's limits (explicit requests).
    upload_gate: RateGate,
    settings: WorkerSettings,
    /// What may be spent on OCR requests; `None`: no limit, nothing counted.
    budget: Option<std::sync::Arc<crate::budget::Budget>>,
    /// The records running and the read-backs waiting to be made together.
    gatherer: gather::Gatherer,
    /// By resource and delivery type, the public_id of an asset whose finished OCR this
    /// instance stored.
    canaries: std::sync::Mutex<std::collections::HashMap<(String, String), String>>,
    /// Until when read-backs are made alone here: the read-back queue's shared answers could
    /// not be trusted (they do not show a canary's OCR).
    doubted_until: std::sync::Mutex<Option<SystemTime>>,
}

impl<O: OcrService, S: ResultStore, Q: WorkQueue> Worker<O, S, Q> {
    pub fn new(ocr: O, store: S, queue: Q, settings: WorkerSettings) -> Self {
        Self {
            ocr,
            store,
            queue,
            admin_gate: RateGate::shared_by(settings.instances),
            upload_gate: RateGate::shared_by(settings.instances),
            settings,
            budget: None,
            gatherer: gather::Gatherer::default(),
            canaries: std::sync::Mutex::default(),
            doubted_until: std::sync::Mutex::default(),
        }
    }

    /// Every OCR request takes a unit of `budget` first (a budget without limits counts
    /// nothing and is not kept).
    pub fn with_budget(mut self, budget: std::sync::Arc<crate::budget::Budget>) -> Self {
        self.budget = budget.limits().any().then_some(budget);
        self
    }

    pub fn settings(&self) -> &WorkerSettings {
        &self.settings
    }

    pub fn ocr(&self) -> &O {
        &self.ocr
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn queue(&self) -> &Q {
        &self.queue
    }

    fn now(&self) -> SystemTime {
        self.settings.clock.now()
    }

    /// Until when this instance makes no call (either API's gate closed), if it is closed now.
    pub fn closed_until(&self, now: SystemTime) -> Option<SystemTime> {
        let admin = self.admin_gate.closed_until(now);
        let upload = self.upload_gate.closed_until(now);
        admin.max(upload)
    }

    /// The gates' state, for a failing check's message.
    pub fn describe_gates(&self) -> String {
        format!("admin {:?}; upload {:?}", self.admin_gate, self.upload_gate)
    }

    /// Calls this instance let through without its share's check (probes), over both APIs.
    pub fn blind_grants(&self) -> u64 {
        self.admin_gate.blind_grants() + self.upload_gate.blind_grants()
    }

    fn gate(&self, api: Api) -> &RateGate {
        match api {
            Api::Admin => &self.admin_gate,
            Api::Upload => &self.upload_gate,
        }
    }
}
