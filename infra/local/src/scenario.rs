//! The local scenario every tool runs: provision a stack on moto, point the functions at a
//! Cloudinary (the emulator, or a real account), run the lister as the schedule would until its
//! pass is done, drain the work queue through worker instances as the event source mapping
//! would while counting every disposition, then read back and verify what was stored. The demo,
//! the chaos run, the bench and the integration tests all run it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use aws_sdk_dynamodb::types::AttributeValue;
use cloudinary_emulator::Asset;
use lister::SqsLister;
use shared::config::Env;
use shared::lister::{RunSummary, StopReason};
use shared::queue::{QueueDepth, queue_depth};
use shared::worker::{Disposition, WorkerSettings};
use worker::SqsWorker;

use crate::provision::{LocalStack, StackNames, StackSettings, provision};
use crate::runner::{DrainEnd, DrainStats, MappingSettings, drain};

/// An item of the results table.
pub type Item = HashMap<String, AttributeValue>;

/// A provisioned stack and the variables its functions see.
pub struct Scenario {
    pub sdk: aws_config::SdkConfig,
    pub ddb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub stack: LocalStack,
    vars: HashMap<String, String>,
}

/// What the schedule does when the lister stops on the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRateLimit {
    /// Stop listing; the worker processes what was listed.
    Stop,
    /// Wait this long, then invoke the lister again.
    WaitAndContinue(Duration),
}

/// The lister's runs until its pass ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListedPass {
    pub runs: u64,
    pub listed: u64,
    pub enqueued: u64,
    /// The last run's summary.
    pub last: Option<RunSummary>,
}

/// Dispositions counted by [`Disposition::label`], readable while a drain runs.
#[derive(Debug, Default)]
pub struct Tally {
    counts: Mutex<HashMap<&'static str, u64>>,
}

impl Tally {
    pub fn add(&self, d: &Disposition) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(d.label())
            .or_default() += 1;
    }

    pub fn get(&self, label: &str) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(label)
            .copied()
            .unwrap_or(0)
    }

    /// Stored with or without text.
    pub fn stored(&self) -> u64 {
        self.get("done") + self.get("no_text")
    }
}

/// Worker instances, one per invocation in flight, as Lambda runs them: each has its own
/// quota gate. An invocation takes an idle instance and gives it back when it ends.
pub struct WorkerPool {
    idle: Mutex<Vec<SqsWorker>>,
}

impl WorkerPool {
    pub fn new(workers: Vec<SqsWorker>) -> Self {
        Self {
            idle: Mutex::new(workers),
        }
    }

    /// An idle instance, given back when the lease ends (also when the invocation holding it
    /// is killed part-way). The read-back queue's invocations share the pool with the work
    /// queue's, so an invocation may wait for an instance, as Lambda's would for a cold start.
    async fn lease(&self) -> Lease<'_> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            if let Some(worker) = idle {
                return Lease {
                    pool: self,
                    worker: Some(worker),
                };
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

struct Lease<'a> {
    pool: &'a WorkerPool,
    worker: Option<SqsWorker>,
}

impl std::ops::Deref for Lease<'_> {
    type Target = SqsWorker;
    fn deref(&self) -> &SqsWorker {
        self.worker.as_ref().expect("held until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(worker);
        }
    }
}

/// What a drain measured beyond the event source's counters.
#[derive(Debug, Default)]
pub struct DrainTimes {
    /// Sum over invocations of their duration, each rounded up to a millisecond (as billed).
    pub billed_ms: AtomicU64,
    /// When the last invocation ended, in ms after the drain started.
    pub last_end_ms: AtomicU64,
}

impl Scenario {
    /// Provisions a uniquely named stack with `settings` on the moto at `sdk`'s endpoint.
    pub async fn provision(
        sdk: &aws_config::SdkConfig,
        prefix: &str,
        settings: StackSettings,
    ) -> anyhow::Result<Self> {
        let ddb = aws_sdk_dynamodb::Client::new(sdk);
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let stack = provision(&ddb, &sqs, StackNames::unique(prefix), settings).await?;
        let vars = stack
            .function_env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Ok(Self {
            sdk: sdk.clone(),
            ddb,
            sqs,
            stack,
            vars,
        })
    }

    /// Sets a variable the functions see (on top of the stack's own).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.vars.insert(name.to_string(), value.into());
    }

    /// Points the functions at a Cloudinary (`CLOUDINARY_URL` and its API base).
    pub fn use_cloudinary(&mut self, url: impl Into<String>, api_base: impl Into<String>) {
        self.set("CLOUDINARY_URL", url);
        self.set("CLOUDINARY_API_BASE", api_base);
    }

    /// The functions' environment: the scenario's variables, then the process's.
    pub fn env(&self) -> Env<impl Fn(&str) -> Option<String> + '_> {
        self.env_with(&[])
    }

    /// The functions' environment with `extra` on top.
    pub fn env_with<'a>(
        &'a self,
        extra: &'a [(&'a str, &'a str)],
    ) -> Env<impl Fn(&str) -> Option<String> + 'a> {
        Env(move |name: &str| {
            extra
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
                .or_else(|| self.vars.get(name).cloned())
                .or_else(|| std::env::var(name).ok())
        })
    }

    /// The work queue, as the functions send to it.
    pub fn queue(&self) -> shared::queue::SqsQueue {
        shared::queue::SqsQueue::new(self.sqs.clone(), &self.stack.work_queue_url)
    }

    pub fn lister(&self) -> anyhow::Result<SqsLister> {
        Ok(lister::build(&self.env().lister(None)?, &self.sdk)?)
    }

    pub fn worker(&self) -> anyhow::Result<SqsWorker> {
        self.worker_with(&[], |_| {})
    }

    /// The notifier on this stack, with `extra` on top of its environment.
    pub fn notifier(&self, extra: &[(&str, &str)]) -> anyhow::Result<notifier::LiveNotifier> {
        Ok(notifier::live(
            self.env_with(extra).notifier(None)?,
            &self.sdk,
        ))
    }

    /// The notifier served locally (see [`crate::notifier`]).
    pub async fn serve_notifier(
        &self,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<crate::notifier::LocalNotifier> {
        crate::notifier::serve(self.notifier(extra)?).await
    }

    /// A worker whose settings `adjust` changes from the configured ones.
    pub fn worker_adjusted(
        &self,
        adjust: impl FnOnce(&mut WorkerSettings),
    ) -> anyhow::Result<SqsWorker> {
        self.worker_with(&[], adjust)
    }

    /// A worker with `extra` on top of its environment and its settings changed by `adjust`.
    /// Its settle time on an unanswered request is this stack's, as the deployed worker's is
    /// the template's (see `shared::defaults::request_settle`).
    pub fn worker_with(
        &self,
        extra: &[(&str, &str)],
        adjust: impl FnOnce(&mut WorkerSettings),
    ) -> anyhow::Result<SqsWorker> {
        let config = self.env_with(extra).worker(None)?;
        let mut settings = worker::settings(&config);
        let stack = &self.stack.settings;
        settings.request_settle =
            shared::defaults::request_settle(stack.visibility_timeout, stack.worker_timeout);
        adjust(&mut settings);
        Ok(worker::build_with(&config, &self.sdk, settings)?)
    }

    /// `n` worker instances (at least one).
    pub fn workers(&self, n: usize) -> anyhow::Result<WorkerPool> {
        let workers = (0..n.max(1))
            .map(|_| self.worker())
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(WorkerPool::new(workers))
    }

    /// Invokes the lister as the schedule would until its pass is complete (at most
    /// `max_runs` runs); `each` sees every run's summary.
    pub async fn list_until_done(
        &self,
        lister: &SqsLister,
        on_rate_limit: OnRateLimit,
        max_runs: u64,
        mut each: impl FnMut(u64, &RunSummary),
    ) -> anyhow::Result<ListedPass> {
        let mut listing = ListedPass::default();
        loop {
            listing.runs += 1;
            let deadline = SystemTime::now() + Duration::from_secs(900);
            let summary = lister::handle(lister, serde_json::json!({}), deadline)
                .await
                .map_err(|e| anyhow::anyhow!(shared::error::error_chain(&e)))?;
            each(listing.runs, &summary);
            listing.listed += summary.listed;
            listing.enqueued += summary.enqueued;
            let stop = summary.stop;
            listing.last = Some(summary);
            match (stop, on_rate_limit) {
                (StopReason::PassComplete | StopReason::NotDue | StopReason::BudgetSpent, _)
                | (StopReason::RateLimited, OnRateLimit::Stop) => {
                    return Ok(listing);
                }
                (StopReason::RateLimited, OnRateLimit::WaitAndContinue(wait)) => {
                    tokio::time::sleep(wait).await;
                }
                (StopReason::Deadline, _) => {}
                (StopReason::AnotherRun, _) => {
                    bail!("another lister run holds the checkpoint's lease (see the lister's log)")
                }
            }
            if listing.runs >= max_runs {
                bail!("the lister did not complete its pass in {max_runs} runs");
            }
        }
    }

    /// The event source mappings' settings for this stack: the work queue's with `invocations`
    /// at once, and the read-back queue's as the template sets it (its batching window held to
    /// a second here, where a drain lasts seconds).
    pub fn mapping(&self, invocations: usize, max_duration: Duration) -> MappingSettings {
        let stack = &self.stack.settings;
        let work = MappingSettings {
            queue_url: self.stack.work_queue_url.clone(),
            queue_arn: self.stack.work_queue_arn.clone(),
            batch_size: stack.batch_size as i32,
            batching_window: Duration::ZERO,
            max_concurrency: invocations,
            function_timeout: stack.worker_timeout,
            idle_grace: Duration::from_millis(500),
            max_duration,
            kill_rate: 0.0,
            enabled: None,
            read_back: None,
        };
        MappingSettings {
            read_back: Some(Box::new(MappingSettings {
                queue_url: self.stack.read_back_queue_url.clone(),
                queue_arn: self.stack.read_back_queue_arn.clone(),
                batch_size: stack.read_back_batch_size as i32,
                batching_window: stack.read_back_window.min(Duration::from_secs(1)),
                max_concurrency: stack.read_back_concurrency,
                ..work.clone()
            })),
            ..work
        }
    }

    /// Drains the work queue through the pool's workers, counting every disposition in
    /// `tally` and timing every invocation in `times`.
    pub async fn drain(
        &self,
        pool: &WorkerPool,
        mapping: &MappingSettings,
        stats: &DrainStats,
        tally: &Tally,
        times: &DrainTimes,
    ) -> anyhow::Result<DrainEnd> {
        let drain0 = Instant::now();
        let handler = |event, deadline| async move {
            // The drain runs at most as many invocations at once as there are instances.
            let instance = pool.lease().await;
            let started = Instant::now();
            let result = worker::handle_with_outcome(&instance, event, deadline).await;
            drop(instance);
            let ms = started.elapsed().as_micros().div_ceil(1000) as u64;
            times.billed_ms.fetch_add(ms, Ordering::Relaxed);
            times
                .last_end_ms
                .fetch_max(drain0.elapsed().as_millis() as u64, Ordering::Relaxed);
            let (response, outcome) = result?;
            for (_, d) in &outcome.results {
                tally.add(d);
            }
            Ok(response)
        };
        drain(&self.sqs, mapping, stats, handler).await
    }

    /// Every item of the results table, keyed by `publicId`.
    pub async fn items(&self) -> anyhow::Result<HashMap<String, Item>> {
        crate::scan_items(&self.ddb, &self.stack.names.results_table).await
    }

    /// The work queues' (the work queue's and the read-back queue's, summed) and the
    /// dead-letter queue's depths.
    pub async fn depths(&self) -> anyhow::Result<(QueueDepth, QueueDepth)> {
        let mut work = queue_depth(&self.sqs, &self.stack.work_queue_url).await?;
        work += queue_depth(&self.sqs, &self.stack.read_back_queue_url).await?;
        let dlq = queue_depth(&self.sqs, &self.stack.dead_letter_queue_url).await?;
        Ok((work, dlq))
    }

    /// Deletes the stack's tables and queues.
    pub async fn teardown(&self) -> anyhow::Result<()> {
        self.stack.teardown(&self.ddb, &self.sqs).await
    }
}

/// Runs `work`, calling `tick` every `every` until it ends.
pub async fn with_progress<T>(
    work: impl Future<Output = T>,
    every: Duration,
    mut tick: impl FnMut(),
) -> T {
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticker.tick() => tick(),
        }
    }
}

/// Every way the table differs from the corpus: an item per asset with its text (or
/// `no_text`), and one billed OCR per asset.
pub fn verify(
    corpus: &[Asset],
    items: &HashMap<String, Item>,
    billed: &HashMap<cloudinary_emulator::AssetId, u64>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if items.len() != corpus.len() {
        problems.push(format!("{} items for {} assets", items.len(), corpus.len()));
    }
    for a in corpus {
        // Found by the documented key rule: one public_id under two types is two items.
        let key = shared::message::item_key(&a.public_id, &a.delivery_type);
        let Some(item) = items.get(&key) else {
            problems.push(format!("no item for {key:?}"));
            continue;
        };
        let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        if s("deliveryType").as_deref() != Some(a.delivery_type.as_str()) {
            problems.push(format!(
                "{key:?}: delivery type {:?}, expected {:?}",
                s("deliveryType"),
                a.delivery_type
            ));
        }
        match &a.text {
            Some(text)
                if s("status").as_deref() != Some("done") || s("text").as_ref() != Some(text) =>
            {
                problems.push(format!(
                    "{key:?}: expected status done with the corpus text, got {:?}",
                    s("status")
                ))
            }
            None if s("status").as_deref() != Some("no_text") => {
                problems.push(format!("{key:?}: expected no_text, got {:?}", s("status")))
            }
            _ => {}
        }
        let calls = billed.get(&a.id()).copied().unwrap_or(0);
        if calls != 1 {
            problems.push(format!("{key:?}: {calls} OCR calls"));
        }
    }
    problems
}

/// Counts the items by `status` ("in progress" for an item without one).
pub fn by_status(items: &HashMap<String, Item>) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for item in items.values() {
        let status = item
            .get("status")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_else(|| "in progress".into());
        *counts.entry(status).or_default() += 1;
    }
    counts
}

/// The AWS SDK configuration for the running moto, or an error saying how to start it.
pub async fn local_sdk() -> anyhow::Result<aws_config::SdkConfig> {
    let endpoint = crate::aws::local_endpoint().map_err(anyhow::Error::msg)?;
    Ok(crate::aws::sdk_config(&endpoint).await)
}

/// Reads the local settings from the template, with a clear error.
pub fn template_settings() -> anyhow::Result<StackSettings> {
    crate::template::stack_settings()
        .map_err(anyhow::Error::msg)
        .context("reading template.yaml")
}
