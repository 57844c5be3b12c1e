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
    /// The Cloudinary secret is rotated this long into the first drain, and fixed this long
    /// after (zero: never): every call meanwhile is refused (HTTP 401).
    pub outage_after: Duration,
    pub outage: Duration,
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
            outage_after: Duration::from_secs(10),
            // About two hours at this run's scale (a visibility timeout of 8 s for 15 min).
            outage: Duration::from_secs(64),
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
    /// Of the OCRs one asset was paid for, the most beyond one per version of it.
    pub max_billed_per_asset: u64,
    /// The asset paid for most often (per version).
    pub most_billed: Option<cloudinary_emulator::AssetId>,
    /// Versions of images the account held (each paid for once), the restored asset included.
    pub paid_versions: u64,
    /// Images uploaded again over their public_ids after the first pass, and new ones.
    pub overwritten: usize,
    pub added: usize,
    /// Assets the incremental pass listed while the Search index had not caught up, and the
    /// next pass (its overlap) once it had.
    pub listed_before_the_index: u64,
    pub listed_after_the_index: u64,
    /// Images uploaded again while the add-on's monthly limit was reached.
    pub monthly_limited: Vec<String>,
    /// Items of each delivery type.
    pub by_delivery_type: HashMap<String, u64>,
    pub injected_errors: u64,
    pub rate_limited_answers: u64,
    /// Calls Cloudinary refused for their credentials (the outage), and the dead letters
    /// whose reason is such a refusal (must be none: those messages wait for the fix).
    pub unauthorized_answers: u64,
    pub outage_planned: bool,
    pub deferred: u64,
    pub retried: u64,
    pub killed_invocations: u64,
    pub invocations: u64,
    pub dlq_reasons: Vec<(String, String)>,
    /// What each dead letter is about, in the order of `dlq_reasons`: the item it names, or its
    /// body when it names none. Two letters about one item are copies of one message: a worker
    /// sends a deferred message's copy before its batch is deleted, so an invocation killed in
    /// between leaves both, and each ends in the DLQ (at-least-once, as SQS itself is).
    pub dlq_subjects: Vec<String>,
    /// Dead letters SQS did not move there itself (no source queue recorded): the console's
    /// "Redrive to source queue(s)" could not return them.
    pub dlq_without_source: usize,
    pub expected_dlq: usize,
    pub dlq_after_redrive: usize,
    pub fixed_asset_done: bool,
    /// The live segment (notifications under faults).
    pub live: LiveChaos,
    pub elapsed: Duration,
}

impl ChaosReport {
    /// Paid OCRs per version of an image (an image uploaded again is a new one to pay for).
    pub fn billed_per_asset(&self) -> f64 {
        self.ocr_billed as f64 / self.paid_versions.max(1) as f64
    }

    /// Dead letters counted once per item (or body).
    fn distinct_dead_letters(&self, reason_contains: &str) -> usize {
        self.dlq_subjects
            .iter()
            .zip(&self.dlq_reasons)
            .filter(|(_, (_, reason))| reason.contains(reason_contains))
            .map(|(subject, _)| subject)
            .collect::<std::collections::HashSet<_>>()
            .len()
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
                "a version of an asset ({:?}) was paid for {} times (allowed: once)",
                self.most_billed, self.max_billed_per_asset
            ));
        }
        if self.listed_before_the_index != 0 {
            p.push(format!(
                "{} later uploads were listed before the Search index showed them",
                self.listed_before_the_index
            ));
        }
        if self.listed_after_the_index < (self.overwritten + self.added) as u64 {
            p.push(format!(
                "the pass after the index caught up listed {}, fewer than the {} later uploads",
                self.listed_after_the_index,
                self.overwritten + self.added
            ));
        }
        for t in ["private", "authenticated"] {
            if self.by_delivery_type.get(t).copied().unwrap_or(0) == 0 {
                p.push(format!("no {t} image was processed"));
            }
        }
        let monthly = self.distinct_dead_letters("Monthly limit of adv_ocr add-on usage reached");
        if monthly != self.monthly_limited.len() {
            p.push(format!(
                "{monthly} assets were dead-lettered with the monthly limit's message, expected {}",
                self.monthly_limited.len()
            ));
        }
        let distinct = self.distinct_dead_letters("");
        if distinct != self.expected_dlq {
            p.push(format!(
                "{distinct} distinct messages in the DLQ, expected exactly the {} permanent failures: {:?}",
                self.expected_dlq, self.dlq_reasons
            ));
        }
        // A copy needs a killed invocation; each kill leaves at most its batch's deferrals.
        let copies = self.dlq_reasons.len() - distinct;
        if copies as u64 > self.killed_invocations * 10 {
            p.push(format!(
                "{copies} dead letters are copies of others, more than {} killed invocations can leave",
                self.killed_invocations
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
        if self.dlq_reasons.iter().any(|(_, r)| {
            r.contains("Rate Limit") || (r.contains("420") && !r.contains("Monthly limit"))
        }) {
            p.push("a message refused under the hourly quota reached the DLQ".into());
        }
        let by_credentials = self
            .dlq_reasons
            .iter()
            .filter(|(_, r)| r.contains("Invalid credentials") || r.contains("HTTP 401"))
            .count();
        if by_credentials > 0 {
            p.push(format!(
                "{by_credentials} messages were dead-lettered by the credentials outage"
            ));
        }
        if self.outage_planned && self.unauthorized_answers == 0 {
            p.push("the credentials outage refused no call".into());
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
        p.extend(self.live.problems());
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
        let of_type = |t: &str| self.by_delivery_type.get(t).copied().unwrap_or(0);
        println!(
            "  delivery types        upload {} | private {} | authenticated {}",
            of_type("upload"),
            of_type("private"),
            of_type("authenticated")
        );
        println!(
            "  later uploads         {} uploaded again, {} new; listed {} before the Search index caught up ({}s lag), {} after",
            self.overwritten,
            self.added,
            self.listed_before_the_index,
            INDEX_LAG.as_secs(),
            self.listed_after_the_index
        );
        println!(
            "  monthly limit         {} uploaded again while it was reached: dead-lettered with its message, done after the redrive",
            self.monthly_limited.len()
        );
        println!(
            "  credentials outage    {} calls refused (HTTP 401) while the secret was wrong; dead-lettered by it: {}",
            self.unauthorized_answers,
            self.dlq_reasons
                .iter()
                .filter(|(_, r)| r.contains("Invalid credentials") || r.contains("HTTP 401"))
                .count()
        );
        println!(
            "  OCR calls per version {:.4} billed ({} billed for {} versions, {} requests, max {} for one version)",
            self.billed_per_asset(),
            self.ocr_billed,
            self.paid_versions,
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
            "  dead-letter queue     {} messages, {} distinct (expected {}), {} not moved by the redrive policy; reasons from the items:",
            self.dlq_reasons.len(),
            self.distinct_dead_letters(""),
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
        self.live.print();
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
    let mut corpus = corpus(options.assets);
    let emulator = Emulator::start(emulator_config(options), corpus.clone(), 0).await?;
    scenario.use_cloudinary(emulator.cloudinary_url(), emulator.base_url());
    scenario.set("CLOUDINARY_TIMEOUT_MS", "1000");
    scenario.set("OCR_METHOD", "update");
    scenario.set("WORKER_INSTANCES", options.invocations.to_string());
    // Every run may start a pass: the later uploads are listed by incremental passes at once.
    scenario.set("LISTER_PASS_INTERVAL_HOURS", "0");
    let lister = scenario.lister()?;
    let pool = crate::scenario::WorkerPool::new(
        (0..options.invocations.max(1))
            .map(|_| {
                scenario.worker_adjusted(|s| {
                    s.deadline_margin = Duration::from_millis(1500);
                    s.pending_poll_delay = Duration::from_secs(1);
                    // A month-long limit is waited on in seconds here, not in 15-minute steps.
                    s.max_deferral = Duration::from_secs(1);
                    s.credentials_wait = Duration::from_secs(1);
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
    );

    send_bad_input(&scenario, options.malformed).await?;
    // The schedule runs the lister until its pass completes (waiting out the quota).
    list_pass(&scenario, &lister, options).await?;
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
        ..ChaosReport::default()
    };
    // Then images are uploaded again over their public_ids and new ones arrive, which the
    // Search index shows only after a lag: the first incremental pass misses them, the next
    // one's overlap finds them.
    emulator.configure(|c| c.index_lag = INDEX_LAG);
    let later = upload_later(&emulator, &mut corpus, options.assets);
    println!(
        "  ... {} images uploaded again and {} new, behind a {}s Search index lag",
        later.overwritten,
        later.added,
        INDEX_LAG.as_secs()
    );
    report.overwritten = later.overwritten;
    report.added = later.added;
    let missed = list_pass(&scenario, &lister, options).await?;
    report.listed_before_the_index = missed.listed;
    tokio::time::sleep(INDEX_LAG + Duration::from_millis(500)).await;
    let found = list_pass(&scenario, &lister, options).await?;
    report.listed_after_the_index = found.listed;
    let times = DrainTimes::default();
    scenario
        .drain(&pool, &mapping, &stats, &tally, &times)
        .await?;

    // The OCR add-on's monthly limit is reached while a few images are uploaded again: their
    // messages wait a bounded number of times, then end in the DLQ with Cloudinary's message.
    emulator.configure(|c| c.monthly_limit_reached = true);
    let limited = overwrite_under_the_limit(&emulator, &mut corpus);
    println!(
        "  ... {} images uploaded again while the monthly limit is reached",
        limited.len()
    );
    tokio::time::sleep(INDEX_LAG + Duration::from_millis(500)).await;
    list_pass(&scenario, &lister, options).await?;
    scenario
        .drain(&pool, &mapping, &stats, &tally, &times)
        .await?;
    report.monthly_limited = limited.clone();
    report.expected_dlq = options.malformed + 2 + CRAFTED.len() + limited.len();

    let letters = crate::receive_all(&scenario.sqs, &scenario.stack.dead_letter_queue_url).await?;
    let rows = ocr_ctl::dead_letters::describe(
        &scenario.ddb,
        &scenario.stack.names.results_table,
        &letters,
    )
    .await?;
    report.dlq_without_source = rows.iter().filter(|r| r.source_queue.is_none()).count();
    report.dlq_subjects = rows
        .iter()
        .map(|r| r.key.clone().unwrap_or_else(|| r.body.clone()))
        .collect();
    report.dlq_reasons = rows.into_iter().map(|r| (r.body, r.reason)).collect();

    // The fix: the missing asset is restored and the monthly limit raised, then what can be
    // fixed is redriven.
    emulator.add_asset(Asset {
        public_id: MISSING.into(),
        ..corpus[0].clone()
    });
    emulator.configure(|c| c.monthly_limit_reached = false);
    let mut fixable = limited.clone();
    fixable.push(MISSING.to_string());
    println!(
        "  ... {} dead letters; the fixable {} redriven after the fix",
        letters.len(),
        fixable.len()
    );
    redrive_the_fixable(&scenario, &letters, &fixable).await?;
    scenario
        .drain(&pool, &mapping, &stats, &tally, &times)
        .await?;
    report.dlq_after_redrive =
        crate::receive_all(&scenario.sqs, &scenario.stack.dead_letter_queue_url)
            .await?
            .len();
    let items = scenario.items().await?;
    report.fixed_asset_done = items
        .get(MISSING)
        .and_then(|i| i.get("status"))
        .and_then(|v| v.as_s().ok())
        .is_some_and(|s| s == "done");

    report.deferred = tally.get("deferred");
    report.retried = tally.get("retry");
    report.killed_invocations = stats.killed.load(Ordering::Relaxed);
    report.invocations = stats.invocations.load(Ordering::Relaxed);
    check_items(&mut report, &corpus, &items);
    let billed = emulator.stats();
    report.ocr_billed = billed.ocr_billed;
    report.ocr_requests = billed.ocr_requests;
    report.injected_errors = billed.injected_errors;
    report.rate_limited_answers = billed.rate_limited;
    report.unauthorized_answers = billed.unauthorized;
    report.outage_planned = !options.outage.is_zero();
    // Each version of an image is paid for once; the restored asset once.
    let versions: HashMap<cloudinary_emulator::AssetId, u64> =
        corpus.iter().map(|a| (a.id(), a.version)).collect();
    report.paid_versions = versions.values().sum::<u64>() + 1;
    if let Some((id, n)) = emulator
        .ocr_billed_all()
        .iter()
        .map(|(id, n)| {
            (
                id.clone(),
                n.saturating_sub(versions.get(id).map_or(0, |v| v - 1)),
            )
        })
        .max_by_key(|(_, n)| *n)
    {
        report.max_billed_per_asset = n;
        report.most_billed = Some(id);
    }
    // Live, after the backfill's promises were checked.
    report.live =
        live_under_faults(&scenario, &emulator, &pool, &lister, &mapping, options).await?;
    report.elapsed = started.elapsed();
    scenario.teardown().await?;
    Ok(report)
}

/// The schedule runs the lister until its pass completes, waiting out the quota.
async fn list_pass(
    scenario: &Scenario,
    lister: &lister::SqsLister,
    options: &ChaosOptions,
) -> anyhow::Result<crate::scenario::ListedPass> {
    scenario
        .list_until_done(
            lister,
            OnRateLimit::WaitAndContinue(options.quota_window / 2),
            1000,
            |_, _| {},
        )
        .await
}

/// How long the Search index lags an upload in the later phases.
const INDEX_LAG: Duration = Duration::from_secs(3);

/// What the later uploads were.
struct Later {
    overwritten: usize,
    added: usize,
}

/// Uploads one `upload` image in 200 again (a new version, other text) and adds one new image
/// in 500 (every other one `private`), changing `corpus` to match the account.
fn upload_later(emulator: &Emulator, corpus: &mut Vec<Asset>, assets: usize) -> Later {
    let mut overwritten = 0;
    for (i, a) in corpus.iter_mut().enumerate() {
        if i % 200 == 3 && a.delivery_type == "upload" && !a.public_id.starts_with("chaos/") {
            let text = format!("uploaded again {i}\n");
            if emulator.overwrite(&a.public_id, Some(&text)) {
                a.text = Some(text);
                a.version += 1;
                overwritten += 1;
            }
        }
    }
    let added = (assets / 500).max(2);
    for i in 0..added {
        let asset = Asset {
            public_id: format!("chaos/later/{i} & co?"),
            delivery_type: if i % 2 == 0 { "upload" } else { "private" }.into(),
            text: Some(format!("later image {i}\n")),
            created_at: shared::clock::rfc3339_secs(std::time::SystemTime::now()),
            version: 1,
            uploaded_at: None,
            ..corpus[0].clone()
        };
        emulator.add_asset(asset.clone());
        corpus.push(asset);
    }
    Later { overwritten, added }
}

/// Uploads three `upload` images again while the monthly limit is reached; their public_ids.
fn overwrite_under_the_limit(emulator: &Emulator, corpus: &mut [Asset]) -> Vec<String> {
    let mut limited = Vec::new();
    for (i, a) in corpus.iter_mut().enumerate() {
        if limited.len() == 3 {
            break;
        }
        if i % 100 == 11 && a.delivery_type == "upload" && !a.public_id.starts_with("chaos/") {
            let text = format!("uploaded under the monthly limit {i}\n");
            if emulator.overwrite(&a.public_id, Some(&text)) {
                a.text = Some(text);
                a.version += 1;
                limited.push(a.public_id.clone());
            }
        }
    }
    limited
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
        let refused = queue
            .send_batch(chunk)
            .await
            .map_err(|e| anyhow::anyhow!(shared::error::error_chain(&e)))?;
        anyhow::ensure!(refused.is_empty(), "SQS refused bad input: {refused:?}");
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
    let outage = credentials_outage(emulator, options);
    tokio::pin!(outage);
    let end = loop {
        tokio::select! {
            end = &mut drained => break end?,
            () = &mut outage => {}
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

/// The credentials outage: the secret Cloudinary accepts is rotated (every call of the workers
/// refused, HTTP 401) and put back when the operator fixes it; resolves after the fix.
async fn credentials_outage(emulator: &Emulator, options: &ChaosOptions) {
    if options.outage.is_zero() {
        return std::future::pending().await;
    }
    tokio::time::sleep(options.outage_after).await;
    let secret = emulator.config().api_secret;
    emulator.configure(|c| c.api_secret = format!("{secret}-rotated"));
    println!(
        "  ... the Cloudinary secret is rotated: every call refused for {}s (about two hours at this run's scale)",
        options.outage.as_secs()
    );
    tokio::time::sleep(options.outage).await;
    emulator.configure(|c| c.api_secret = secret);
    println!("  ... the secret is fixed");
    std::future::pending().await
}

/// Every asset but the one whose id cannot be a key has a terminal item.
fn check_items(
    report: &mut ChaosReport,
    corpus: &[Asset],
    items: &HashMap<String, crate::scenario::Item>,
) {
    let long_key = long_key_id();
    for a in corpus.iter().filter(|a| a.public_id != long_key) {
        let key = shared::message::item_key(&a.public_id, &a.delivery_type);
        let Some(item) = items.get(&key) else {
            report.missing_items.push(key);
            continue;
        };
        if item.get("deliveryType").and_then(|v| v.as_s().ok()) == Some(&a.delivery_type) {
            *report
                .by_delivery_type
                .entry(a.delivery_type.clone())
                .or_default() += 1;
        }
        let status = item
            .get("status")
            .and_then(|v| v.as_s().ok())
            .and_then(|s| Status::parse(s));
        match status {
            Some(s) => *report.by_status.entry(s.as_str().to_string()).or_default() += 1,
            None => report.not_terminal.push(key.clone()),
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
                report.text_mismatches.push(key.clone());
            } else if expected_pages > 1 {
                report.documents += 1;
            }
        }
    }
}

/// The operator discards what cannot be fixed (malformed bodies, an id too long to be a key,
/// crafted ids) and redrives the `fixable` assets' messages the console's way: a move task
/// back to the source queue.
async fn redrive_the_fixable(
    scenario: &Scenario,
    letters: &[aws_sdk_sqs::types::Message],
    fixable: &[String],
) -> anyhow::Result<()> {
    let (sqs, dlq) = (&scenario.sqs, &scenario.stack.dead_letter_queue_url);
    for m in letters {
        let handle = m.receipt_handle().unwrap_or_default();
        let fixed = shared::worker::parse_body(m.body().unwrap_or_default())
            .is_ok_and(|w| fixable.contains(&w.public_id));
        if fixed {
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

#[cfg(test)]
mod tests {
    use super::ChaosReport;

    /// A report of a run that kept every promise but the DLQ's, with these dead letters.
    fn report(letters: &[(&str, &str)], expected: usize, killed: u64) -> ChaosReport {
        ChaosReport {
            dlq_reasons: letters
                .iter()
                .map(|(key, reason)| (format!("{{\"public_id\":\"{key}\"}}"), reason.to_string()))
                .collect(),
            dlq_subjects: letters.iter().map(|(key, _)| key.to_string()).collect(),
            expected_dlq: expected,
            killed_invocations: killed,
            fixed_asset_done: true,
            ..ChaosReport::default()
        }
    }

    fn dlq_problems(r: &ChaosReport) -> Vec<String> {
        r.problems()
            .into_iter()
            .filter(|p| {
                p.contains("DLQ") || p.contains("dead letters") || p.contains("dead-lettered")
            })
            .collect()
    }

    #[test]
    fn a_copy_left_by_a_killed_invocation_is_one_dead_letter_and_a_missing_one_is_not() {
        let limit = "Monthly limit of adv_ocr add-on usage reached";
        let mut r = report(&[("a", "404"), ("b", limit), ("b", limit)], 2, 1);
        r.monthly_limited = vec!["b".into()];
        assert_eq!(dlq_problems(&r), Vec::<String>::new());

        let mut r = report(&[("a", "404"), ("b", limit)], 3, 1);
        r.monthly_limited = vec!["b".into()];
        let p = dlq_problems(&r);
        assert!(
            p.iter()
                .any(|p| p.starts_with("2 distinct messages in the DLQ, expected exactly the 3")),
            "{p:?}"
        );

        let mut r = report(&[("a", "404"), ("b", limit), ("b", limit)], 2, 0);
        r.monthly_limited = vec!["b".into()];
        let p = dlq_problems(&r);
        assert!(
            p.iter().any(|p| p.starts_with("1 dead letters are copies")),
            "{p:?}"
        );
    }
}

/// What the live segment of a chaos run measured: changes through the Upload API whose
/// notifications are lost, duplicated, delayed (so reordered) and retried after lost answers,
/// and requests that are not Cloudinary's (forged, stale) or are Cloudinary's again (replayed).
#[derive(Debug, Clone, Default)]
pub struct LiveChaos {
    pub changes: usize,
    pub notifications_sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub retried: u64,
    /// Forged and stale requests, and how many were refused (401).
    pub attacks: usize,
    pub attacks_refused: usize,
    /// Captured notifications sent again as they were, and how many were acknowledged.
    pub replays: usize,
    pub replays_acknowledged: usize,
    /// OCRs paid in the segment, and the most it may pay: one per upload, and one per renamed
    /// image whose notification was lost (the pass finds it under its new name).
    pub paid: u64,
    pub paid_at_most: u64,
    /// Keys the table keeps live although the account no longer has them, because their
    /// delete or rename notification was lost for good (a pass lists what is, not what went).
    pub ghosts_of_lost: usize,
    pub mismatches: Vec<String>,
}

impl LiveChaos {
    pub fn problems(&self) -> Vec<String> {
        let mut p: Vec<String> = self
            .mismatches
            .iter()
            .take(5)
            .map(|m| format!("live: {m}"))
            .collect();
        if self.mismatches.len() > 5 {
            p.push(format!("live: {} mismatches in all", self.mismatches.len()));
        }
        if self.attacks_refused != self.attacks {
            p.push(format!(
                "live: {} of {} forged or stale requests refused",
                self.attacks_refused, self.attacks
            ));
        }
        if self.replays_acknowledged != self.replays {
            p.push(format!(
                "live: {} of {} replayed notifications acknowledged",
                self.replays_acknowledged, self.replays
            ));
        }
        if self.paid > self.paid_at_most {
            p.push(format!(
                "live: {} OCRs paid, at most {} due",
                self.paid, self.paid_at_most
            ));
        }
        p
    }

    pub fn print(&self) {
        println!(
            "  live                  {} changes; {} notifications sent, {} lost, {} duplicated, {} retried; {} of {} forged or stale requests refused, {} of {} replays acknowledged; {} OCRs paid (at most {}); {} names kept live after a lost delete or rename",
            self.changes,
            self.notifications_sent,
            self.lost,
            self.duplicated,
            self.retried,
            self.attacks_refused,
            self.attacks,
            self.replays_acknowledged,
            self.replays,
            self.paid,
            self.paid_at_most,
            self.ghosts_of_lost
        );
    }
}

/// The live segment: the notifier served and registered; uploads, uploads again, renames and
/// deletes through the Upload API while notifications are lost, duplicated, delayed and
/// retried; forged, stale and replayed requests; then the worker and a pass. The table must
/// follow the account (but for what lost deletes and renames leave), nothing paid twice.
pub async fn live_under_faults(
    scenario: &Scenario,
    emulator: &Emulator,
    pool: &crate::scenario::WorkerPool,
    lister: &lister::SqsLister,
    mapping: &MappingSettings,
    options: &ChaosOptions,
) -> anyhow::Result<LiveChaos> {
    use cloudinary_emulator::{DeliveryOutcome, NotificationFaults};
    emulator.configure(|c| {
        c.notification_faults = NotificationFaults {
            lost_rate: 0.05,
            duplicate_rate: 0.3,
            delay_max: Duration::from_secs(2),
            answer_lost_rate: 0.1,
            max_retries: 3,
            retry_interval: Duration::from_millis(500),
        };
        // A Cloudinary call takes a while: two changes are not stamped in the same ms.
        c.latency = c.latency.max(Duration::from_millis(2));
    });
    let live = crate::live::serve_and_register(scenario, emulator).await?;
    let before = emulator.stats();
    let client = emulator.upload_client();
    let mut existing: Vec<String> = emulator
        .assets()
        .into_iter()
        .filter(|a| a.delivery_type == "upload" && a.text.is_some())
        .map(|a| a.public_id)
        .filter(|id| !id.starts_with("chaos/") && id.len() < 200)
        .collect();
    existing.sort();
    let per_kind = (options.assets / 500).clamp(5, 40);
    let mut changes = Vec::new();
    for i in 0..per_kind {
        changes.push(crate::live::Change::Upload {
            key: format!("live/chaos-{i:03}"),
            text: format!("LIVE {i}\n"),
            overwrite: false,
        });
    }
    let mut picks = existing.iter().step_by(7);
    for i in 0..per_kind {
        if let Some(id) = picks.next() {
            changes.push(crate::live::Change::Upload {
                key: id.clone(),
                text: format!("AGAIN {i}\n"),
                overwrite: true,
            });
        }
        if let Some(id) = picks.next() {
            changes.push(crate::live::Change::Rename {
                from: id.clone(),
                to: format!("{id}-moved"),
            });
        }
        if let Some(id) = picks.next() {
            changes.push(crate::live::Change::Delete { key: id.clone() });
        }
    }
    let uploads = changes
        .iter()
        .filter(|c| matches!(c, crate::live::Change::Upload { .. }))
        .count() as u64;
    let mut report = LiveChaos {
        changes: changes.len(),
        ..LiveChaos::default()
    };
    let tally = Tally::default();
    let stats = DrainStats::default();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let drainer =
        crate::live::drain_until(scenario, pool, options.invocations, &tally, &stats, &stop);
    // An application retries a call that failed (the emulator injects 5xx here too).
    let driver = async {
        let mut result = Ok(());
        'changes: for change in &changes {
            for attempt in 1..=10 {
                match change.make(&client).await {
                    Ok(()) => break,
                    Err(e) if attempt == 10 => {
                        result = Err(e);
                        break 'changes;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        emulator
            .wait_notifications_idle(Duration::from_secs(60))
            .await;
        stop.store(true, Ordering::SeqCst);
        result
    };
    let (drained, driven) = tokio::join!(drainer, driver);
    drained?;
    driven?;
    println!(
        "  ... live: {} changes through the Upload API, notifications lost, duplicated, delayed and retried",
        changes.len()
    );

    // Requests that are not Cloudinary's, and Cloudinary's again.
    let secret = emulator.config().api_secret;
    let sha256 = emulator.config().signs_notifications_in_sha256();
    let sent = emulator.notifications();
    let captured: Vec<_> = sent.iter().filter(|n| n.delivered()).take(20).collect();
    let http = reqwest::Client::new();
    let post = |body: String, ts: String, sig: String| {
        let http = &http;
        let url = live.url.clone();
        async move {
            http.post(url)
                .header("X-Cld-Timestamp", ts)
                .header("X-Cld-Signature", sig)
                .body(body)
                .send()
                .await
                .map(|a| a.status().as_u16())
                .unwrap_or(0)
        }
    };
    for n in &captured {
        report.replays += 1;
        if (200..300)
            .contains(&post(n.body.clone(), n.timestamp.to_string(), n.signature.clone()).await)
        {
            report.replays_acknowledged += 1;
        }
        // Another public_id (every type names one: `public_id`, `from_public_id`, ...).
        let forged = n
            .body
            .replacen("public_id\":\"", "public_id\":\"forged/", 1);
        anyhow::ensure!(forged != n.body, "no public_id to forge in {}", n.body);
        report.attacks += 1;
        if post(forged, n.timestamp.to_string(), n.signature.clone()).await == 401 {
            report.attacks_refused += 1;
        }
        let stale_ts = n.timestamp.saturating_sub(7_300);
        let stale_sig = cloudinary_emulator::notification_signature(
            n.body.as_bytes(),
            stale_ts,
            &secret,
            sha256,
        );
        report.attacks += 1;
        if post(n.body.clone(), stale_ts.to_string(), stale_sig).await == 401 {
            report.attacks_refused += 1;
        }
    }
    println!(
        "  ... live: {} forged or stale requests and {} replays sent",
        report.attacks, report.replays
    );
    // What the notifications did not bring, the next pass does.
    let times = DrainTimes::default();
    scenario
        .drain(pool, mapping, &stats, &tally, &times)
        .await?;
    tokio::time::sleep(INDEX_LAG + Duration::from_millis(500)).await;
    list_pass(scenario, lister, options).await?;
    scenario
        .drain(pool, mapping, &stats, &tally, &times)
        .await?;

    let after = emulator.stats();
    report.notifications_sent = after.notifications_sent - before.notifications_sent;
    report.lost = after.notifications_lost - before.notifications_lost;
    report.duplicated = after.notifications_duplicated - before.notifications_duplicated;
    report.retried = after.notifications_retried - before.notifications_retried;
    report.paid = after.ocr_billed - before.ocr_billed;
    // Keys whose delete or rename away was never delivered.
    let lost_away: std::collections::HashSet<String> = sent
        .iter()
        .filter(|n| n.outcome == DeliveryOutcome::Lost || (!n.delivered() && n.attempt > 3))
        .filter_map(|n| {
            let v = n.json();
            match n.notification_type.as_str() {
                "rename" => v["from_public_id"].as_str().map(str::to_string),
                "delete" => v["resources"][0]["public_id"].as_str().map(str::to_string),
                _ => None,
            }
        })
        .collect();
    let lost_renames = sent
        .iter()
        .filter(|n| n.notification_type == "rename" && n.outcome == DeliveryOutcome::Lost)
        .count() as u64;
    report.paid_at_most = uploads + lost_renames;

    let items = scenario.items().await?;
    let assets = emulator.assets();
    let live_keys: std::collections::HashSet<String> = assets
        .iter()
        .map(|a| shared::message::item_key(&a.public_id, &a.delivery_type))
        .collect();
    let s =
        |item: &crate::scenario::Item, k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    for change in &changes {
        for key in change_keys(change) {
            let item = items.get(&key);
            let in_account = live_keys.contains(&key);
            match (in_account, item) {
                (true, None) => report.mismatches.push(format!("{key}: no item")),
                (true, Some(item)) => {
                    let want = assets
                        .iter()
                        .find(|a| a.public_id == key && a.delivery_type == "upload")
                        .and_then(|a| a.text.clone());
                    if s(item, "text") != want || s(item, "deletedAt").is_some() {
                        report.mismatches.push(format!(
                            "{key}: {:?} (deleted at {:?}), the account has {want:?}",
                            s(item, "text"),
                            s(item, "deletedAt")
                        ));
                    }
                }
                (false, Some(item))
                    if s(item, "deletedAt").is_none() && s(item, "status").is_some() =>
                {
                    if lost_away.contains(&key) {
                        report.ghosts_of_lost += 1;
                    } else {
                        report
                            .mismatches
                            .push(format!("{key}: live in the table, gone from the account"));
                    }
                }
                (false, _) => {}
            }
        }
    }
    drop(live);
    Ok(report)
}

fn change_keys(change: &crate::live::Change) -> Vec<String> {
    match change {
        crate::live::Change::Upload { key, .. } | crate::live::Change::Delete { key } => {
            vec![key.clone()]
        }
        crate::live::Change::Rename { from, to } => vec![from.clone(), to.clone()],
    }
}
