//! The chaos run: many assets through the local pipeline while the emulator fails, stalls and
//! rate-limits, invocations are killed mid-batch, and bad messages arrive; then the checks that
//! nothing was lost, nothing paid twice beyond the allowance, and the DLQ holds exactly the
//! permanent failures, each with its reason.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use cloudinary_emulator::{Asset, Emulator, EmulatorConfig, generate};
use shared::store::Status;

use crate::provision::StackSettings;
use crate::runner::{DrainEnd, DrainStats, MappingSettings};
use crate::scenario::{DrainTimes, OnRateLimit, Scenario, Tally};

#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub assets: usize,
    pub invocations: usize,
    pub error_rate: f64,
    /// OCR calls that run (billed), then answer after the client has timed out.
    pub timeout_rate: f64,
    /// OCR calls that run (billed), then drop the connection.
    pub drop_rate: f64,
    pub latency: Duration,
    /// Admin API calls per quota window (OCR goes through the Admin API update here, so the
    /// quota binds). Every few seconds another user of the account takes most of a window's
    /// quota, which the worker cannot foresee: it is then answered 420.
    pub quota_limit: u64,
    pub quota_window: Duration,
    pub kill_rate: f64,
    pub malformed: usize,
}

impl Default for ChaosOptions {
    fn default() -> Self {
        Self {
            assets: 10_000,
            invocations: 6,
            error_rate: 0.05,
            timeout_rate: 0.01,
            drop_rate: 0.01,
            latency: Duration::from_millis(20),
            quota_limit: 180,
            quota_window: Duration::from_secs(3),
            kill_rate: 0.02,
            malformed: 5,
        }
    }
}

/// What a chaos run measured.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    pub assets: usize,
    pub by_status: HashMap<String, u64>,
    pub missing_items: Vec<String>,
    /// Assets stored with other text (or another page count) than the account holds.
    pub text_mismatches: Vec<String>,
    /// Multi-page documents stored with every page.
    pub documents: usize,
    pub not_terminal: Vec<String>,
    pub ocr_billed: u64,
    pub ocr_requests: u64,
    pub max_billed_per_asset: u64,
    pub injected_errors: u64,
    pub rate_limited_answers: u64,
    pub deferred: u64,
    pub retried: u64,
    pub killed_invocations: u64,
    pub invocations: u64,
    pub dlq_reasons: Vec<(String, String)>,
    /// Dead letters SQS did not move there itself (no source queue recorded): the console's
    /// "Redrive to source queue(s)" could not return them.
    pub dlq_without_source: usize,
    pub expected_dlq: usize,
    pub dlq_after_redrive: usize,
    pub fixed_asset_done: bool,
    pub elapsed: Duration,
}

impl ChaosReport {
    pub fn billed_per_asset(&self) -> f64 {
        self.ocr_billed as f64 / self.assets.max(1) as f64
    }

    /// Every way the run fell short of its promises; empty when it kept them all.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.missing_items.is_empty() {
            p.push(format!(
                "{} assets have no item, e.g. {:?}",
                self.missing_items.len(),
                &self.missing_items[..self.missing_items.len().min(3)]
            ));
        }
        if !self.text_mismatches.is_empty() {
            p.push(format!(
                "{} assets stored with the wrong text or pages, e.g. {:?}",
                self.text_mismatches.len(),
                &self.text_mismatches[..self.text_mismatches.len().min(3)]
            ));
        }
        if !self.not_terminal.is_empty() {
            p.push(format!(
                "{} assets are not in a terminal state, e.g. {:?}",
                self.not_terminal.len(),
                &self.not_terminal[..self.not_terminal.len().min(3)]
            ));
        }
        if self.billed_per_asset() > 1.001 {
            p.push(format!(
                "{:.4} paid OCRs per asset (allowed: 1.001)",
                self.billed_per_asset()
            ));
        }
        if self.max_billed_per_asset > 1 {
            p.push(format!(
                "an asset was paid for {} times (allowed: once)",
                self.max_billed_per_asset
            ));
        }
        if self.dlq_reasons.len() != self.expected_dlq {
            p.push(format!(
                "{} messages in the DLQ, expected exactly the {} permanent failures: {:?}",
                self.dlq_reasons.len(),
                self.expected_dlq,
                self.dlq_reasons
            ));
        }
        if let Some((body, _)) = self
            .dlq_reasons
            .iter()
            .find(|(_, reason)| reason.starts_with("no failure recorded"))
        {
            p.push(format!("a DLQ message has no reason: {body:?}"));
        }
        if self.dlq_without_source > 0 {
            p.push(format!(
                "{} DLQ messages did not come through the redrive policy",
                self.dlq_without_source
            ));
        }
        if self
            .dlq_reasons
            .iter()
            .any(|(_, r)| r.contains("420") || r.contains("Rate Limit"))
        {
            p.push("a rate-limited message reached the DLQ".into());
        }
        if self.rate_limited_answers > 0 && self.deferred == 0 {
            p.push("Cloudinary answered 420 but no message was deferred".into());
        }
        if self.dlq_after_redrive != 0 {
            p.push(format!(
                "{} messages left in the DLQ after the fix and redrive",
                self.dlq_after_redrive
            ));
        }
        if !self.fixed_asset_done {
            p.push("the fixed asset was not processed after the redrive".into());
        }
        p
    }

    pub fn print(&self) {
        let count = |s: &str| self.by_status.get(s).copied().unwrap_or(0);
        println!(
            "Chaos run: {} assets in {:.1}s",
            self.assets,
            self.elapsed.as_secs_f64()
        );
        println!(
            "  items                 done {} | no_text {} | failed {} | not terminal {} | missing {}",
            count("done"),
            count("no_text"),
            count("failed"),
            self.not_terminal.len(),
            self.missing_items.len()
        );
        println!(
            "  text                  {} multi-page documents stored page by page; {} with the wrong text",
            self.documents,
            self.text_mismatches.len()
        );
        println!(
            "  OCR calls per asset   {:.4} billed ({} billed, {} requests, max {} for one asset)",
            self.billed_per_asset(),
            self.ocr_billed,
            self.ocr_requests,
            self.max_billed_per_asset
        );
        println!(
            "  injected              {} faults (HTTP 500s; timeouts and dropped connections after the OCR was billed), {} HTTP 420 answers, {} of {} invocations killed",
            self.injected_errors,
            self.rate_limited_answers,
            self.killed_invocations,
            self.invocations
        );
        println!(
            "  deferred              {} (rate limit / pending / claimed), none in the DLQ",
            self.deferred
        );
        println!("  retried               {}", self.retried);
        println!(
            "  dead-letter queue     {} messages (expected {}), {} not moved by the redrive policy; reasons from the items:",
            self.dlq_reasons.len(),
            self.expected_dlq,
            self.dlq_without_source
        );
        for (body, reason) in &self.dlq_reasons {
            let body: String = body.chars().take(60).collect();
            println!("    {body:<62} {reason}");
        }
        println!(
            "  after fix + redrive   {} in the DLQ; fixed asset done: {}",
            self.dlq_after_redrive, self.fixed_asset_done
        );
    }
}

const MISSING: &str = "chaos/deleted before OCR & gone?";

/// Messages no worker may act on: a public_id whose dot segments would change the API path,
/// and a delivery type that is not one of the account's stored ones.
const CRAFTED: [(&str, &str); 2] = [
    ("chaos/../../../../resources/image/upload/x", "upload"),
    ("chaos/fetched", "fetch"),
];

/// Runs the chaos scenario against the moto at `sdk`'s endpoint.
pub async fn run(
    sdk: &aws_config::SdkConfig,
    options: &ChaosOptions,
) -> anyhow::Result<ChaosReport> {
    let started = Instant::now();
    let settings = StackSettings {
        worker_timeout: Duration::from_secs(6),
        visibility_timeout: Duration::from_secs(8),
        ..crate::scenario::template_settings()?
    };
    let mut scenario = Scenario::provision(sdk, "chaos", settings).await?;
    let corpus = corpus(options.assets);
    let emulator = Emulator::start(emulator_config(options), corpus.clone(), 0).await?;
    scenario.use_cloudinary(emulator.cloudinary_url(), emulator.base_url());
    scenario.set("CLOUDINARY_TIMEOUT_MS", "1000");
    scenario.set("OCR_METHOD", "update");
    scenario.set("WORKER_INSTANCES", options.invocations.to_string());
    let lister = scenario.lister()?;
    let pool = crate::scenario::WorkerPool::new(
        (0..options.invocations.max(1))
            .map(|_| {
                scenario.worker_adjusted(|s| {
                    s.deadline_margin = Duration::from_millis(1500);
                    s.pending_poll_delay = Duration::from_secs(1);
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
    );

    send_bad_input(&scenario, options.malformed).await?;
    // The schedule runs the lister until its pass completes (waiting out the quota).
    scenario
        .list_until_done(
            &lister,
            OnRateLimit::WaitAndContinue(options.quota_window / 2),
            1000,
            |_, _| {},
        )
        .await?;
    let mapping = MappingSettings {
        batch_size: shared::defaults::BATCH_SIZE as i32,
        idle_grace: Duration::from_secs(2),
        max_duration: Duration::from_secs(3600),
        kill_rate: options.kill_rate,
        ..scenario.mapping(options.invocations, Duration::from_secs(3600))
    };
    let tally = Tally::default();
    let stats = DrainStats::default();
    drain_under_squeeze(
        &scenario, &pool, &mapping, &stats, &tally, &emulator, options,
    )
    .await?;

    let mut report = ChaosReport {
        assets: corpus.len(),
        expected_dlq: options.malformed + 2 + CRAFTED.len(),
        deferred: tally.get("deferred"),
        retried: tally.get("retry"),
        killed_invocations: stats.killed.load(Ordering::Relaxed),
        invocations: stats.invocations.load(Ordering::Relaxed),
        ..ChaosReport::default()
    };
    check_items(&mut report, &corpus, &scenario.items().await?);
    let billed = emulator.stats();
    report.ocr_billed = billed.ocr_billed;
    report.ocr_requests = billed.ocr_requests;
    report.injected_errors = billed.injected_errors;
    report.rate_limited_answers = billed.rate_limited;
    report.max_billed_per_asset = emulator
        .ocr_billed_all()
        .values()
        .copied()
        .max()
        .unwrap_or(0);

    let letters = crate::receive_all(&scenario.sqs, &scenario.stack.dead_letter_queue_url).await?;
    let rows = ocr_ctl::dead_letters::describe(
        &scenario.ddb,
        &scenario.stack.names.results_table,
        &letters,
    )
    .await?;
    report.dlq_without_source = rows.iter().filter(|r| r.source_queue.is_none()).count();
    report.dlq_reasons = rows.into_iter().map(|r| (r.body, r.reason)).collect();

    // The fix: the missing asset is restored, then what can be fixed is redriven.
    emulator.add_asset(Asset {
        public_id: MISSING.into(),
        ..corpus[0].clone()
    });
    redrive_the_fixable(&scenario, &letters).await?;
    scenario
        .drain(
            &pool,
            &mapping,
            &DrainStats::default(),
            &tally,
            &DrainTimes::default(),
        )
        .await?;
    report.dlq_after_redrive =
        crate::receive_all(&scenario.sqs, &scenario.stack.dead_letter_queue_url)
            .await?
            .len();
    report.fixed_asset_done = scenario
        .items()
        .await?
        .get(MISSING)
        .and_then(|i| i.get("status"))
        .and_then(|v| v.as_s().ok())
        .is_some_and(|s| s == "done");
    report.elapsed = started.elapsed();
    scenario.teardown().await?;
    Ok(report)
}

/// The generated corpus, with multi-page documents (one in 50), an oversize text and an id
/// too long to be a key.
fn corpus(assets: usize) -> Vec<Asset> {
    let mut corpus = generate(assets.saturating_sub(2));
    for (i, a) in corpus.iter_mut().enumerate().filter(|(i, _)| i % 50 == 7) {
        if let Some(text) = &a.text {
            a.text = Some(format!(
                "{text}\u{c}page two of document {i}\n\u{c}page three\n"
            ));
        }
    }
    let mut big = corpus[0].clone();
    big.public_id = "chaos/oversize text".into();
    big.text = Some("Ü".repeat(225_000)); // 450,000 bytes: over the item limit
    corpus.push(big);
    let mut long_key = corpus[1].clone();
    long_key.public_id = long_key_id();
    corpus.push(long_key);
    corpus
}

fn long_key_id() -> String {
    format!("chaos/{}", "k".repeat(2100))
}

fn emulator_config(options: &ChaosOptions) -> EmulatorConfig {
    let mut config = EmulatorConfig::new("chaos");
    config.latency = options.latency;
    config.error_rate = options.error_rate;
    config.timeout_rate = options.timeout_rate;
    config.drop_rate = options.drop_rate;
    config.hang = Duration::from_millis(2500);
    config.admin_limit = options.quota_limit;
    config.admin_window = options.quota_window;
    config
}

/// Bad input beside the listing: malformed bodies and an asset that no longer exists.
async fn send_bad_input(scenario: &Scenario, malformed: usize) -> anyhow::Result<()> {
    let queue = shared::queue::SqsQueue::new(scenario.sqs.clone(), &scenario.stack.work_queue_url);
    let mut bad: Vec<String> = (0..malformed)
        .map(|i| match i % 3 {
            0 => format!("{{not json {i}"),
            1 => format!(r#"{{"v":1,"note":"no public id {i}"}}"#),
            _ => format!(r#"{{"v":1,"public_id":"","n":{i}}}"#),
        })
        .collect();
    bad.push(shared::message::WorkMessage::new(MISSING, "image", "upload").to_body());
    // Crafted: a path that would reach another API call, a type the account does not store.
    for (id, delivery) in CRAFTED {
        bad.push(shared::message::WorkMessage::new(id, "image", delivery).to_body());
    }
    for chunk in bad.chunks(10) {
        queue
            .send_batch(chunk)
            .await
            .map_err(|e| anyhow::anyhow!(shared::error::error_chain(&e)))?;
    }
    Ok(())
}

/// Drains the work queue while another user of the account takes most of the quota every
/// other few seconds, with a progress line every five.
async fn drain_under_squeeze(
    scenario: &Scenario,
    pool: &crate::scenario::WorkerPool,
    mapping: &MappingSettings,
    stats: &DrainStats,
    tally: &Tally,
    emulator: &Emulator,
    options: &ChaosOptions,
) -> anyhow::Result<()> {
    let times = DrainTimes::default();
    let drained = scenario.drain(pool, mapping, stats, tally, &times);
    tokio::pin!(drained);
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    let mut squeeze = tokio::time::interval(Duration::from_secs(4));
    let mut squeezed = false;
    let end = loop {
        tokio::select! {
            end = &mut drained => break end?,
            _ = squeeze.tick() => {
                squeezed = !squeezed;
                let limit = if squeezed { options.quota_limit / 4 } else { options.quota_limit };
                emulator.configure(|c| c.admin_limit = limit);
            }
            _ = ticker.tick() => {
                let (inv, records, deleted, failed) = stats.snapshot();
                println!("  ... {records} records in {inv} invocations, {deleted} deleted, {failed} failed, {} deferred, {} killed", tally.get("deferred"), stats.killed.load(Ordering::Relaxed));
            }
        }
    };
    anyhow::ensure!(end == DrainEnd::Empty, "the work queue did not drain");
    Ok(())
}

/// Every asset but the one whose id cannot be a key has a terminal item.
fn check_items(
    report: &mut ChaosReport,
    corpus: &[Asset],
    items: &HashMap<String, crate::scenario::Item>,
) {
    let long_key = long_key_id();
    for a in corpus.iter().filter(|a| a.public_id != long_key) {
        let Some(item) = items.get(&a.public_id) else {
            report.missing_items.push(a.public_id.clone());
            continue;
        };
        let status = item
            .get("status")
            .and_then(|v| v.as_s().ok())
            .and_then(|s| Status::parse(s));
        match status {
            Some(s) => *report.by_status.entry(s.as_str().to_string()).or_default() += 1,
            None => report.not_terminal.push(a.public_id.clone()),
        }
        if status == Some(Status::Done) {
            let text = item.get("text").and_then(|v| v.as_s().ok());
            let truncated = item
                .get("truncated")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false);
            let pages = item
                .get("pages")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<usize>().ok());
            let expected_pages = a.text.as_deref().map_or(1, |t| t.split('\u{c}').count());
            let text_ok = truncated || text.map(String::as_str) == a.text.as_deref();
            if !text_ok || pages != Some(expected_pages) {
                report.text_mismatches.push(a.public_id.clone());
            } else if expected_pages > 1 {
                report.documents += 1;
            }
        }
    }
}

/// The operator discards what cannot be fixed (malformed bodies, an id too long to be a key)
/// and redrives the rest the console's way: a move task back to the source queue.
async fn redrive_the_fixable(
    scenario: &Scenario,
    letters: &[aws_sdk_sqs::types::Message],
) -> anyhow::Result<()> {
    let (sqs, dlq) = (&scenario.sqs, &scenario.stack.dead_letter_queue_url);
    for m in letters {
        let handle = m.receipt_handle().unwrap_or_default();
        if m.body().unwrap_or_default().contains(MISSING) {
            // Received messages are invisible for a while; the fixable one is made visible.
            sqs.change_message_visibility()
                .queue_url(dlq)
                .receipt_handle(handle)
                .visibility_timeout(0)
                .send()
                .await
                .context("releasing the fixable DLQ message")?;
        } else {
            sqs.delete_message()
                .queue_url(dlq)
                .receipt_handle(handle)
                .send()
                .await
                .context("discarding an unfixable DLQ message")?;
        }
    }
    let task = ocr_ctl::dead_letters::move_task(sqs, dlq, None, Duration::from_millis(100)).await?;
    anyhow::ensure!(
        task.status == "COMPLETED",
        "the redrive to the source queue ended {task:?}"
    );
    Ok(())
}
