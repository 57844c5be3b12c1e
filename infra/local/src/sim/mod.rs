//! A deterministic, virtual-time simulation of the whole pipeline at account scale.
//!
//! The real use cases run, the same code the Lambda functions run: [`shared::lister::run_lister`]
//! on the schedule, [`shared::worker::Worker::process_batch`] on each batch. Around them, in
//! tokio's paused clock on one thread: Cloudinary ([`cloudinary`]), the work queue with its
//! redrive policy and DLQ ([`queue`]), the tables ([`store`]), and Lambda's SQS event source
//! (pollers up to MaximumConcurrency, batches and the batching window, the function timeout,
//! partial batch responses). Hours pass in milliseconds, and every draw comes from one seeded
//! generator in an order the single thread fixes: a seed replays exactly.

pub mod cloudinary;
pub mod queue;
pub mod report;
pub mod store;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use shared::clock::Clock;
use shared::lister::{ListerOptions, ListerPorts, PassMode, StopReason, run_lister};
use shared::worker::{Worker, WorkerSettings};
use tokio::time::Instant;

pub use cloudinary::{CloudinarySettings, FaultMix, SimCloudinary};
pub use queue::{Lane, QueueSettings, SimQueue};
pub use report::{HourProgress, SimReport};
pub use store::SimStore;

/// How Cloudinary is asked for OCR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Method {
    /// The Upload API's `explicit`: not counted against the hourly Admin quota.
    Explicit,
    /// The Admin API's `update`: every OCR request is one of the hourly quota's calls.
    Update,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Explicit => "explicit",
            Self::Update => "update",
        }
    }
}

/// How read-backs are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ReadBack {
    /// Each asset alone, where it is met (one Admin call each).
    Alone,
    /// Through the read-back queue, up to 100 assets in one call, and Cloudinary's answer of
    /// several assets carries their OCR.
    Together,
    /// Through the read-back queue, but Cloudinary's answer of several assets leaves the OCR
    /// out (the canary finds out; each asset is then read back alone).
    TogetherWithoutOcr,
}

impl ReadBack {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alone => "alone",
            Self::Together => "together",
            Self::TogetherWithoutOcr => "together, answer without OCR",
        }
    }
}

/// One simulated run: the account, Cloudinary, and the stack's settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub assets: u64,
    pub seed: u64,
    pub method: Method,
    /// The Admin API's calls an hour.
    pub quota_per_hour: u64,
    /// `WorkerConcurrency`: the event source's MaximumConcurrency.
    pub concurrency: u32,
    /// `BatchSize`.
    pub batch_size: usize,
    /// `MaximumBatchingWindowInSeconds`.
    pub batching_window: Duration,
    /// `WorkerRecordConcurrency`.
    pub records_in_flight: usize,
    /// `WorkerMemorySize`, MB.
    pub worker_memory_mb: u64,
    pub ocr_median: Duration,
    /// The spread of OCR answer times (a log-normal's sigma; 0: every answer takes the median).
    pub ocr_sigma: f64,
    /// How long listing calls and read-backs take.
    pub admin_latency: Duration,
    pub faults: FaultMix,
    /// The run ends here even if assets are left.
    pub horizon: Duration,
    /// Log bytes the worker writes per image (measured by `make bench`, scenario 3).
    pub log_bytes_per_image: f64,
    pub read_back: ReadBack,
}

impl SimConfig {
    /// Whether the run has behaviours Cloudinary does not document: a pending OCR answer, or
    /// the OCR in an answer about several assets.
    pub fn has_undocumented(&self) -> bool {
        self.faults.has_undocumented() || self.read_back == ReadBack::Together
    }

    /// The same run without them: no pending answers, and answers about several assets that
    /// leave the OCR out (read-backs still go through the read-back queue).
    pub fn documented_only(&self) -> Self {
        Self {
            faults: self.faults.documented_only(),
            read_back: match self.read_back {
                ReadBack::Together => ReadBack::TogetherWithoutOcr,
                other => other,
            },
            ..self.clone()
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            assets: 10_000_000,
            seed: 1,
            method: Method::Explicit,
            quota_per_hour: 2000,
            concurrency: 50,
            batch_size: shared::defaults::BATCH_SIZE as usize,
            batching_window: Duration::from_secs(5),
            records_in_flight: shared::defaults::RECORDS_IN_FLIGHT,
            worker_memory_mb: 256,
            ocr_median: Duration::from_secs(1),
            ocr_sigma: 0.5,
            admin_latency: Duration::from_millis(500),
            faults: FaultMix::TYPICAL,
            horizon: Duration::from_secs(30 * 24 * 3600),
            log_bytes_per_image: 494.0,
            read_back: ReadBack::Together,
        }
    }
}

/// The stack's fixed settings, as `template.yaml` has them.
const WORKER_TIMEOUT: Duration = shared::defaults::WORKER_TIMEOUT;
const LISTER_TIMEOUT: Duration = Duration::from_secs(900);
const SCHEDULE: Duration = Duration::from_secs(15 * 60);
const LISTER_MEMORY_MB: u64 = 256;
/// The read-back queue's event source: batches of up to this many, gathered this long, by this
/// many pollers at most.
pub const READ_BACK_BATCH: usize = shared::worker::READ_BACK_BATCH;
pub const READ_BACK_WINDOW: Duration = Duration::from_secs(120);
pub const READ_BACK_CONCURRENCY: u32 = 4;
/// SQS's longest retention, as the template sets it.
const RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);
/// A poller's long poll.
const LONG_POLL: Duration = Duration::from_secs(20);
/// The simulated clock starts at the top of an hour (the quota's windows are clock hours).
const ORIGIN_MS: u64 = 1_799_020_800_000;

/// What the lister and the event source did, gathered as they go.
#[derive(Debug, Default)]
struct Tally {
    lister_runs: u64,
    lister_ms: u64,
    listing_stops: BTreeMap<&'static str, u64>,
    listed_at: Option<Duration>,
    listed: u64,
    invocations: u64,
    timed_out: u64,
    billed_ms: u64,
    records: u64,
    dispositions: BTreeMap<&'static str, u64>,
}

/// Runs one simulation on a thread of its own (a paused, single-threaded tokio runtime),
/// calling `progress` once a simulated hour.
pub fn run(config: &SimConfig, progress: &mut (dyn FnMut(&HourProgress) + Send)) -> SimReport {
    // A thread of its own, so that a caller inside a tokio runtime may run one too.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .start_paused(true)
                    .build()
                    .expect("a tokio runtime");
                // Tasks stay on this thread (the worker's futures need not be `Send` then).
                let tasks = tokio::task::LocalSet::new();
                runtime.block_on(tasks.run_until(simulate(config, progress)))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

async fn simulate(
    config: &SimConfig,
    progress: &mut (dyn FnMut(&HourProgress) + Send),
) -> SimReport {
    let wall = std::time::Instant::now();
    let start = Instant::now();
    let origin = shared::clock::from_epoch_ms(ORIGIN_MS);
    let clock = Clock::tokio(origin);
    let cloudinary = SimCloudinary::new(
        CloudinarySettings {
            assets: config.assets,
            upload_api: config.method == Method::Explicit,
            quota_per_hour: config.quota_per_hour,
            ocr_median: config.ocr_median,
            ocr_sigma: config.ocr_sigma,
            admin_latency: config.admin_latency,
            client_timeout: shared::defaults::CLOUDINARY_TIMEOUT,
            faults: config.faults,
            no_text_every: 5,
            seed: config.seed,
            bulk: match config.read_back {
                ReadBack::Alone => None,
                ReadBack::Together => Some(true),
                ReadBack::TogetherWithoutOcr => Some(false),
            },
        },
        clock,
    );
    let gathered = config.read_back != ReadBack::Alone;
    let queue = SimQueue::new(QueueSettings {
        visibility_timeout: shared::defaults::VISIBILITY_TIMEOUT,
        max_receive_count: shared::defaults::MAX_RECEIVE_COUNT,
        retention: RETENTION,
        read_back_queue: gathered,
    });
    let store = SimStore::new(config.assets);
    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));

    let mut tasks = Vec::new();
    tasks.push(tokio::task::spawn_local(lister_loop(
        cloudinary.clone(),
        queue.clone(),
        store.clone(),
        clock,
        start,
        tally.clone(),
    )));
    let lane_pollers = if gathered { READ_BACK_CONCURRENCY } else { 0 };
    let instances = config.concurrency + lane_pollers;
    let lanes = std::iter::repeat_n(Lane::Work, config.concurrency as usize)
        .chain(std::iter::repeat_n(Lane::ReadBack, lane_pollers as usize));
    for lane in lanes {
        let settings = WorkerSettings {
            concurrency: config.records_in_flight,
            instances,
            read_back_queue: gathered,
            clock,
            ..WorkerSettings::default()
        };
        let worker = Worker::new(cloudinary.clone(), store.clone(), queue.clone(), settings);
        tasks.push(tokio::task::spawn_local(poller(
            worker,
            (queue.clone(), lane),
            config.clone(),
            clock,
            tally.clone(),
            stop.clone(),
        )));
    }

    let mut hours = Vec::new();
    let mut terminal_at = None;
    let tick = Duration::from_secs(60);
    loop {
        tokio::time::sleep(tick).await;
        let elapsed = start.elapsed();
        let (listed, pass_done) = {
            let t = lock(&tally);
            (t.listed, t.listed_at.is_some())
        };
        if elapsed.as_secs().is_multiple_of(3600) {
            let hour = HourProgress {
                hour: elapsed.as_secs() / 3600,
                listed,
                terminal: store.terminal(),
                queued: queue.depth() as u64,
            };
            progress(&hour);
            hours.push(hour);
        }
        if pass_done && queue.depth() == 0 {
            terminal_at = Some(elapsed);
            break;
        }
        if elapsed >= config.horizon {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in &tasks {
        t.abort();
    }
    let ended = start.elapsed();
    let tally = std::mem::take(&mut *lock(&tally));
    report::build(report::Inputs {
        config: config.clone(),
        cloudinary: &cloudinary,
        queue: &queue,
        store: &store,
        listed_at: tally.listed_at,
        terminal_at,
        ended,
        hours,
        lister_runs: tally.lister_runs,
        lister_ms: tally.lister_ms,
        listing_stops: tally.listing_stops,
        invocations: tally.invocations,
        timed_out: tally.timed_out,
        billed_ms: tally.billed_ms,
        records: tally.records,
        dispositions: tally.dispositions,
        wall: wall.elapsed(),
    })
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The schedule: the lister wakes every 15 minutes and continues its pass from the checkpoint.
async fn lister_loop(
    cloudinary: SimCloudinary,
    queue: SimQueue,
    store: SimStore,
    clock: Clock,
    start: Instant,
    tally: Arc<std::sync::Mutex<Tally>>,
) {
    let options = ListerOptions {
        clock,
        ..ListerOptions::default()
    };
    let mut woke = Instant::now();
    loop {
        let deadline = clock.now() + LISTER_TIMEOUT;
        let ports = ListerPorts {
            source: &cloudinary,
            queue: &queue,
            checkpoints: &store,
            results: &store,
        };
        let summary = run_lister(ports, "sim", &options, deadline).await;
        {
            let mut t = lock(&tally);
            t.lister_runs += 1;
            t.lister_ms += woke.elapsed().as_millis() as u64 + 1;
            match summary {
                Ok(s) => {
                    t.listed += s.listed;
                    let stop = match s.stop {
                        StopReason::PassComplete => "pass complete",
                        StopReason::Deadline => "deadline",
                        StopReason::RateLimited => "quota spent",
                        StopReason::NotDue => "nothing due",
                        StopReason::BudgetSpent => "budget spent",
                        StopReason::AnotherRun => "another run",
                    };
                    *t.listing_stops.entry(stop).or_default() += 1;
                    if s.stop == StopReason::PassComplete
                        && s.mode == PassMode::Full
                        && t.listed_at.is_none()
                    {
                        t.listed_at = Some(start.elapsed());
                    }
                }
                Err(_) => *t.listing_stops.entry("error").or_default() += 1,
            }
        }
        woke += SCHEDULE;
        tokio::time::sleep_until(woke).await;
    }
}

/// One of the event source's pollers: receives a batch, invokes the worker with it, deletes
/// what the partial batch response does not name, and polls again.
async fn poller(
    worker: Worker<SimCloudinary, SimStore, SimQueue>,
    (queue, lane): (SimQueue, Lane),
    config: SimConfig,
    clock: Clock,
    tally: Arc<std::sync::Mutex<Tally>>,
    stop: Arc<AtomicBool>,
) {
    let (batch_size, window) = match lane {
        Lane::Work => (config.batch_size, config.batching_window),
        Lane::ReadBack => (READ_BACK_BATCH, READ_BACK_WINDOW),
    };
    while !stop.load(Ordering::Relaxed) {
        let mut batch = queue.receive_from(lane, batch_size);
        if batch.is_empty() {
            queue.wait_for(lane, LONG_POLL).await;
            continue;
        }
        if batch.len() < batch_size && !window.is_zero() {
            tokio::time::sleep(window).await;
            batch.extend(queue.receive_from(lane, batch_size - batch.len()));
        }
        let handles: Vec<(String, String)> = batch
            .iter()
            .map(|r| (r.message_id.clone(), r.receipt_handle.clone()))
            .collect();
        let records = batch.len();
        let started = Instant::now();
        let deadline: SystemTime = clock.now() + WORKER_TIMEOUT;
        let outcome =
            tokio::time::timeout(WORKER_TIMEOUT, worker.process_batch(batch, deadline)).await;
        let took = started.elapsed();
        let mut t = lock(&tally);
        t.invocations += 1;
        t.records += records as u64;
        t.billed_ms += took.as_millis() as u64 + 1;
        match outcome {
            Ok(outcome) => {
                for (_, d) in &outcome.results {
                    let label = match d {
                        shared::worker::Disposition::Deferred(d) => d.cause.metric(),
                        other => other.label(),
                    };
                    *t.dispositions.entry(label).or_default() += 1;
                }
                drop(t);
                let failed: HashSet<&str> = outcome.failed_message_ids().collect();
                let done: Vec<&str> = handles
                    .iter()
                    .filter(|(id, _)| !failed.contains(id.as_str()))
                    .map(|(_, h)| h.as_str())
                    .collect();
                queue.delete(&done);
            }
            // Killed at the timeout: the whole batch comes back after the visibility timeout.
            Err(_) => t.timed_out += 1,
        }
    }
}

#[cfg(test)]
mod tests;
