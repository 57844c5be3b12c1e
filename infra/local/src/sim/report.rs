//! What a simulated run found, and the tables `make sim` prints.

use std::collections::BTreeMap;
use std::time::Duration;

use super::cloudinary::{CloudinaryStats, FaultMix, SimCloudinary};
use super::queue::SimQueue;
use super::store::SimStore;
use super::{LISTER_MEMORY_MB, ReadBack, SimConfig};
use crate::bench::{PRICES, PerImage, cost_per_million};

/// The state of the run at the end of a simulated hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourProgress {
    pub hour: u64,
    pub listed: u64,
    pub terminal: u64,
    pub queued: u64,
}

/// Everything one run measured. Times are simulated.
#[derive(Debug, Clone)]
pub struct SimReport {
    pub config: SimConfig,
    /// When the first full pass had listed the whole account.
    pub listed_at: Option<Duration>,
    /// When every asset was terminal and the queue empty (`None`: not within the horizon).
    pub terminal_at: Option<Duration>,
    pub ended: Duration,
    pub terminal: u64,
    pub by_status: BTreeMap<&'static str, u64>,
    pub hours: Vec<HourProgress>,
    pub cloudinary: CloudinaryStats,
    /// Admin API calls of the busiest hour, and the mean share of the quota the hours used.
    pub admin_peak: u64,
    pub admin_mean_share: f64,
    pub dead_letters: BTreeMap<String, u64>,
    pub expired: u64,
    pub messages_sent: u64,
    pub requests: BTreeMap<&'static str, u64>,
    pub read_units: u64,
    pub write_units: u64,
    pub invocations: u64,
    pub timed_out: u64,
    pub worker_gb_seconds: f64,
    pub lister_runs: u64,
    pub lister_gb_seconds: f64,
    pub listing_stops: BTreeMap<&'static str, u64>,
    /// The lister's checkpoint reads and writes.
    pub checkpoint_requests: u64,
    pub records: u64,
    pub dispositions: BTreeMap<&'static str, u64>,
    /// Real time the run took.
    pub wall: Duration,
}

impl SimReport {
    /// For a run the horizon cut short: when every asset would be terminal at the pace of its
    /// last simulated day.
    pub fn projected(&self) -> Option<Duration> {
        if self.terminal_at.is_some() {
            return None;
        }
        let last = self.hours.last()?;
        let day_before = self.hours.iter().rev().find(|h| h.hour + 24 <= last.hour)?;
        let per_hour =
            (last.terminal - day_before.terminal) as f64 / (last.hour - day_before.hour) as f64;
        if per_hour <= 0.0 {
            return None;
        }
        let left = self.config.assets.saturating_sub(self.terminal) as f64;
        Some(self.ended + Duration::from_secs_f64(left / per_hour * 3600.0))
    }

    /// When every asset is (or would be) terminal.
    pub fn pace(&self) -> Option<Duration> {
        self.terminal_at.or_else(|| self.projected())
    }

    fn terminal_in(&self) -> String {
        match (self.terminal_at, self.projected()) {
            (Some(t), _) => hours(Some(t)),
            (None, Some(p)) => format!(
                "> {} (horizon); about {} at the last day's pace",
                hours(Some(self.ended)),
                hours(Some(p))
            ),
            (None, None) => format!("> {} (horizon)", hours(Some(self.ended))),
        }
    }
}

pub(super) struct Inputs<'a> {
    pub config: SimConfig,
    pub cloudinary: &'a SimCloudinary,
    pub queue: &'a SimQueue,
    pub store: &'a SimStore,
    pub listed_at: Option<Duration>,
    pub terminal_at: Option<Duration>,
    pub ended: Duration,
    pub hours: Vec<HourProgress>,
    pub lister_runs: u64,
    pub lister_ms: u64,
    pub listing_stops: BTreeMap<&'static str, u64>,
    pub invocations: u64,
    pub timed_out: u64,
    pub billed_ms: u64,
    pub records: u64,
    pub dispositions: BTreeMap<&'static str, u64>,
    pub wall: Duration,
}

pub(super) fn build(i: Inputs<'_>) -> SimReport {
    let cloudinary = i.cloudinary.stats();
    let (by_status, reasons) = i.store.statuses();
    let mut dead_letters = BTreeMap::new();
    for letter in i.queue.dead_letters() {
        let reason = shared::worker::parse_body(&letter.body)
            .ok()
            .and_then(|m| reasons.get(&m.item_key()).cloned())
            .unwrap_or_else(|| "no failure recorded on the item".into());
        *dead_letters.entry(short_reason(&reason)).or_default() += 1;
    }
    let mut requests = i.queue.requests();
    requests.extend(i.store.requests());
    let hours_run = (i.ended.as_secs_f64() / 3600.0).ceil().max(1.0);
    let admin_total: u64 = cloudinary.admin_per_hour.values().map(|(l, w)| l + w).sum();
    SimReport {
        listed_at: i.listed_at,
        terminal_at: i.terminal_at,
        ended: i.ended,
        terminal: i.store.terminal(),
        by_status,
        hours: i.hours,
        admin_peak: cloudinary
            .admin_per_hour
            .values()
            .map(|(l, w)| l + w)
            .max()
            .unwrap_or(0),
        admin_mean_share: admin_total as f64 / (hours_run * i.config.quota_per_hour as f64),
        cloudinary,
        dead_letters,
        expired: i.queue.expired(),
        messages_sent: i.queue.sent(),
        requests,
        read_units: i.store.read_units(),
        write_units: i.store.write_units(),
        invocations: i.invocations,
        timed_out: i.timed_out,
        worker_gb_seconds: i.billed_ms as f64 / 1000.0 * i.config.worker_memory_mb as f64 / 1024.0,
        lister_runs: i.lister_runs,
        lister_gb_seconds: i.lister_ms as f64 / 1000.0 * LISTER_MEMORY_MB as f64 / 1024.0,
        listing_stops: i.listing_stops,
        checkpoint_requests: i.store.checkpoint_requests(),
        records: i.records,
        dispositions: i.dispositions,
        wall: i.wall,
        config: i.config,
    }
}

/// A failure's reason without the asset's own words (its public_id, a reset time), so that
/// the DLQ groups by cause.
fn short_reason(reason: &str) -> String {
    let cut: String = reason.chars().take(70).collect();
    match cut.find("sim/") {
        Some(at) => format!("{}…", &cut[..at]),
        None => cut,
    }
}

impl SimReport {
    /// Requests to one service (`sqs`, `dynamodb`), over all its operations.
    fn service_requests(&self, service: &str) -> u64 {
        self.requests
            .iter()
            .filter(|(k, _)| k.split_once(':').is_some_and(|(s, _)| s == service))
            .map(|(_, v)| v)
            .sum()
    }

    pub fn sqs_requests(&self) -> u64 {
        self.service_requests("sqs")
    }

    pub fn dynamodb_requests(&self) -> u64 {
        self.service_requests("dynamodb")
    }

    /// Images that reached a terminal status (the divisor of every per-image figure).
    pub fn images(&self) -> f64 {
        self.terminal.max(1) as f64
    }

    /// OCRs paid per image paid for (a run the horizon cut short has images paid for and not
    /// yet terminal, pending say).
    pub fn paid_per_image(&self) -> f64 {
        self.cloudinary.billed as f64 / self.cloudinary.billed_assets.max(1) as f64
    }

    pub fn per_image(&self) -> PerImage {
        let n = self.images();
        PerImage {
            lambda_invocations: (self.invocations + self.lister_runs) as f64 / n,
            lambda_gb_seconds: (self.worker_gb_seconds + self.lister_gb_seconds) / n,
            sqs_requests: self.sqs_requests() as f64 / n,
            write_units: self.write_units as f64 / n,
            read_units: self.read_units as f64 / n,
            log_bytes: self.config.log_bytes_per_image,
        }
    }

    /// Modelled AWS cost per million images.
    pub fn dollars_per_million(&self) -> f64 {
        cost_per_million(&self.per_image(), &PRICES)
            .iter()
            .map(|l| l.dollars_per_million)
            .sum()
    }

    /// The worker's GB-seconds per image, and its floor: the memory held for the OCR's median
    /// answer time, shared by the records one invocation has in flight.
    pub fn gb_seconds_per_image(&self) -> (f64, f64) {
        let c = &self.config;
        let in_flight = c.records_in_flight.min(c.batch_size).max(1) as f64;
        let floor = c.worker_memory_mb as f64 / 1024.0 * c.ocr_median.as_secs_f64() / in_flight;
        (self.worker_gb_seconds / self.images(), floor)
    }

    /// What bounds the run's pace: the listing (the Admin quota's calls for pages), the OCR
    /// requests' quota, or the workers.
    pub fn bound_by(&self) -> &'static str {
        let (Some(listed), Some(done)) = (self.listed_at, self.terminal_at) else {
            return if self.config.method == super::Method::Update {
                "the Admin quota (OCR requests)"
            } else if self.listed_at.is_none() {
                "the Admin quota (listing)"
            } else {
                "the workers"
            };
        };
        // Within a quarter of an hour of the listing's end (or 5 %): the workers kept pace.
        let slack = Duration::from_secs(900).max(listed / 20);
        if done <= listed + slack {
            if self.admin_peak >= self.config.quota_per_hour * 95 / 100 {
                "the Admin quota (listing)"
            } else {
                "the listing's pace"
            }
        } else if self.config.method == super::Method::Update {
            "the Admin quota (OCR requests)"
        } else {
            "the workers"
        }
    }

    /// A one-line summary.
    pub fn headline(&self) -> String {
        let c = &self.config;
        format!(
            "{} assets, {}, {}/h, concurrency {}, batch {}, seed {}: listed in {}, terminal in {}, {:.4} paid OCR per image, ${:.2} per million images ({} s of real time)",
            c.assets,
            c.method.as_str(),
            c.quota_per_hour,
            c.concurrency,
            c.batch_size,
            c.seed,
            hours(self.listed_at),
            self.terminal_in(),
            self.paid_per_image(),
            self.dollars_per_million(),
            self.wall.as_secs()
        )
    }

    /// The run's figures in detail (for one run on the command line).
    /// The Admin calls spent reading back (alone and together), and their share of the
    /// listing's calls.
    pub fn read_back_calls(&self) -> String {
        let c = &self.cloudinary;
        let calls = c.read_backs + c.bulk_read_backs;
        format!(
            "{calls} ({:.1} %)",
            100.0 * calls as f64 / c.listing_calls.max(1) as f64
        )
    }

    pub fn details(&self) -> String {
        let mut out = String::new();
        let per = |n: u64| n as f64 / self.images();
        out.push_str(&format!("{}\n", self.headline()));
        out.push_str(&format!(
            "  statuses              {}\n",
            join(self.by_status.iter().map(|(k, v)| format!("{k} {v}")))
        ));
        out.push_str(&format!(
            "  Cloudinary            {} OCR requests, {} billed ({} assets billed twice, at most {} times one), {} read-backs alone, {} calls reading back {} assets together, {} listing calls; 420 {}, 429 {}, 5xx {}, timeouts after billing {}, pending {}\n",
            self.cloudinary.ocr_requests,
            self.cloudinary.billed,
            self.cloudinary.billed_twice,
            self.cloudinary.max_billed,
            self.cloudinary.read_backs,
            self.cloudinary.bulk_read_backs,
            self.cloudinary.bulk_assets,
            self.cloudinary.listing_calls,
            self.cloudinary.refused_420,
            self.cloudinary.refused_429,
            self.cloudinary.server_errors,
            self.cloudinary.timeouts_after_billing,
            self.cloudinary.pending_answers
        ));
        out.push_str(&format!(
            "  Admin quota           busiest hour {} of {} calls, {:.1} % used on average\n",
            self.admin_peak,
            self.config.quota_per_hour,
            self.admin_mean_share * 100.0
        ));
        out.push_str(&format!(
            "  lister                {} runs ({}), {:.2} GB-s\n",
            self.lister_runs,
            join(self.listing_stops.iter().map(|(k, v)| format!("{k} {v}"))),
            self.lister_gb_seconds
        ));
        let (gbs, floor) = self.gb_seconds_per_image();
        out.push_str(&format!(
            "  worker                {} invocations ({} timed out), {:.2} records each, {:.5} GB-s per image (floor {:.5}, {:.2}×); {}\n",
            self.invocations,
            self.timed_out,
            self.records as f64 / self.invocations.max(1) as f64,
            gbs,
            floor,
            gbs / floor,
            join(self.dispositions.iter().map(|(k, v)| format!("{k} {v}")))
        ));
        out.push_str(&format!(
            "  AWS requests          {:.3} per image: {}\n",
            per(self.sqs_requests() + self.dynamodb_requests()),
            join(
                self.requests
                    .iter()
                    .map(|(k, v)| format!("{k} {:.3}", per(*v)))
            )
        ));
        out.push_str(&format!(
            "  SQS                   {} messages sent, {} expired unreceived\n",
            self.messages_sent, self.expired
        ));
        out.push_str(&format!(
            "  DLQ                   {} messages{}\n",
            self.dead_letters.values().sum::<u64>(),
            join(
                self.dead_letters
                    .iter()
                    .map(|(k, v)| format!("\n    {v:>8}  {k}"))
            )
            .replace(", ", "")
        ));
        let cost = cost_per_million(&self.per_image(), &PRICES);
        out.push_str(&format!(
            "  cost per million      {}; total ${:.2}\n",
            join(
                cost.iter()
                    .map(|l| format!("{} ${:.3}", l.item, l.dollars_per_million))
            ),
            self.dollars_per_million()
        ));
        out
    }
}

fn join(parts: impl Iterator<Item = String>) -> String {
    parts.collect::<Vec<_>>().join(", ")
}

/// A simulated duration in hours (or "—").
pub fn hours(d: Option<Duration>) -> String {
    match d {
        None => "—".into(),
        Some(d) if d < Duration::from_secs(2 * 3600) => {
            format!("{:.0} min", d.as_secs_f64() / 60.0)
        }
        Some(d) if d < Duration::from_secs(72 * 3600) => {
            format!("{:.1} h", d.as_secs_f64() / 3600.0)
        }
        Some(d) => format!("{:.1} days", d.as_secs_f64() / 86400.0),
    }
}

/// The table of runs, one row each, in Markdown.
pub fn table(reports: &[SimReport]) -> String {
    let mut t = crate::bench::Table::new(&[
        "method",
        "quota/h",
        "concurrency",
        "faults (5xx / timeout / 429 / pending)",
        "read-backs",
        "read-back calls (of listing's)",
        "listed in",
        "all terminal in",
        "terminal",
        "Admin calls, busiest hour",
        "paid OCR per image",
        "DLQ",
        "AWS requests per image",
        "worker GB-s per image (floor)",
        "USD per million",
        "bound by",
    ]);
    for r in reports {
        let c = &r.config;
        let (gbs, floor) = r.gb_seconds_per_image();
        t.row(vec![
            c.method.as_str().into(),
            c.quota_per_hour.to_string(),
            c.concurrency.to_string(),
            c.faults.describe(),
            c.read_back.as_str().into(),
            r.read_back_calls(),
            hours(r.listed_at),
            r.terminal_in(),
            format!("{} of {}", r.terminal, c.assets),
            r.admin_peak.to_string(),
            format!("{:.4}", r.paid_per_image()),
            r.dead_letters.values().sum::<u64>().to_string(),
            format!(
                "{:.2}",
                (r.sqs_requests() + r.dynamodb_requests()) as f64 / r.images()
            ),
            format!("{gbs:.4} ({floor:.4})"),
            format!("{:.2}", r.dollars_per_million()),
            r.bound_by().into(),
        ]);
    }
    t.markdown()
}

/// Where the simulation's section of BENCHMARKS.md begins; everything after it is the section.
pub const SECTION_MARK: &str = "<!-- The section below is written by `make sim`. -->";

/// `doc` with its simulation section replaced by `section` (or `section` appended).
pub fn with_section(doc: &str, section: &str) -> String {
    let kept = doc.find(SECTION_MARK).map_or(doc, |at| &doc[..at]);
    let kept = kept.trim_end();
    let sep = if kept.is_empty() { "" } else { "\n\n" };
    format!("{kept}{sep}{SECTION_MARK}\n\n{}\n", section.trim_end())
}

/// The simulation's section of `doc`, when it has one (kept when `make bench` rewrites it).
pub fn section_of(doc: &str) -> Option<&str> {
    doc.find(SECTION_MARK).map(|at| &doc[at..])
}

/// The smallest concurrency whose time to terminal is within 5 % of the best.
fn enough_concurrency(runs: &[SimReport]) -> Option<&SimReport> {
    let best = runs.iter().filter_map(SimReport::pace).min()?;
    runs.iter()
        .filter(|r| {
            r.pace()
                .is_some_and(|t| t.as_secs_f64() <= best.as_secs_f64() * 1.05)
        })
        .min_by_key(|r| r.config.concurrency)
}

/// Where each figure of the model comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Cloudinary's or AWS's documentation says so.
    Documented,
    /// Neither: a figure chosen for the model.
    Assumed,
    /// Not documented: modelled, and the tables have runs without it.
    Undocumented,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Documented => "documented",
            Self::Assumed => "assumed",
            Self::Undocumented => "undocumented (runs without it below)",
        }
    }
}

/// Every fault and latency of the model: what it is, its value in `base`, and its source.
pub fn model(base: &SimConfig) -> Vec<(&'static str, String, Source, &'static str)> {
    let f = base.faults;
    let pct = |share: f64| format!("{} % of OCR requests", FaultMix::percent(share));
    vec![
        (
            "Admin API quota",
            format!("{} calls an hour in clock-hour windows, shared by listing, read-backs and `update`; HTTP 420 past it", base.quota_per_hour),
            Source::Documented,
            "Admin API reference, usage limits; the X-FeatureRateLimit headers on every answer",
        ),
        (
            "Upload API (`explicit`)",
            "outside the hourly quota".into(),
            Source::Documented,
            "Admin API reference: the Admin API is the rate-limited one",
        ),
        (
            "listing page",
            format!("{} assets a call", shared::defaults::PAGE_SIZE),
            Source::Documented,
            "Get resources: max_results up to 500",
        ),
        (
            "billing",
            "an OCR request is billed once it reaches Cloudinary, whatever the caller then sees".into(),
            Source::Documented,
            "add-on quotas count operations; Cloudinary's support: an operation that fails late may still be charged",
        ),
        (
            "OCR answer time",
            format!("log-normal, median {} ms, sigma {}", base.ocr_median.as_millis(), base.ocr_sigma),
            Source::Assumed,
            "",
        ),
        (
            "Admin call time (listing, read-back)",
            format!("{} ms", base.admin_latency.as_millis()),
            Source::Assumed,
            "",
        ),
        (
            "HTTP 500",
            format!("{}; the OCR did not run", pct(f.server_error)),
            Source::Assumed,
            "the worker reads it back before paying again either way (a failing operation may be charged)",
        ),
        (
            "timeout after billing",
            format!("{}; the client gives up after {} s", pct(f.timeout_after_billing), shared::defaults::CLOUDINARY_TIMEOUT.as_secs()),
            Source::Assumed,
            "",
        ),
        (
            "HTTP 429 from the Upload API",
            format!("{}; `Retry-After` 10 s", pct(f.too_many_requests)),
            Source::Assumed,
            "",
        ),
        (
            "pending OCR answer",
            format!("{}; done 20 answer-times later", pct(f.pending)),
            Source::Undocumented,
            "the add-on's documentation and the SDKs' tests show the OCR data in the answer itself",
        ),
        (
            "OCR in an answer about several assets",
            match base.read_back {
                ReadBack::Alone => "not used: each read-back is one `GET resources/image/{type}/{id}`".into(),
                ReadBack::Together => "`GET resources/image/{type}?public_ids[]=` (up to 100 in one call) answers each asset with its `info.ocr`".into(),
                ReadBack::TogetherWithoutOcr => "`GET resources/image/{type}?public_ids[]=` (up to 100 in one call) answers without `info.ocr`: the canary shows it, and each asset is read back alone".into(),
            },
            Source::Undocumented,
            "the Admin API documents `public_ids` (up to 100) on Get resources, but not whether its answer carries `info`; the runs without it use the answer that lacks it",
        ),
        (
            "SQS and Lambda's event source",
            "visibility timeout, maxReceiveCount, delays up to 15 min, batches with a batching window, partial batch responses".into(),
            Source::Documented,
            "AWS's documentation",
        ),
        (
            "a failed message's visibility set by the worker",
            "Lambda's event source leaves a message reported in `batchItemFailures` visible when the worker's `ChangeMessageVisibility` set it (at once for a failure for good, at the settle time after a request that failed without an answer)".into(),
            Source::Assumed,
            "AWS documents `ChangeMessageVisibility`, and that a failed message stays in the queue, but not that the event source leaves its visibility alone; were it reset, those messages would come back after the visibility timeout, later and never paid twice",
        ),
    ]
}

/// The model as a Markdown table.
pub fn model_table(base: &SimConfig) -> String {
    let mut t = crate::bench::Table::new(&["in the model", "value", "source", "on what"]);
    for (what, value, source, on) in model(base) {
        t.row(vec![what.into(), value, source.as_str().into(), on.into()]);
    }
    t.markdown()
}

/// The section `make sim` writes: its settings, the tables, and what they show.
pub fn section(
    base: &SimConfig,
    main: &[SimReport],
    concurrency: &[SimReport],
    update_concurrency: &[SimReport],
    batches: &[SimReport],
) -> String {
    let mut s = String::new();
    s.push_str("## Simulation: a whole account in virtual time\n\n");
    s.push_str(&format!(
        "`make sim` (options: `make sim SIM_ARGS='--help'`): {} assets, seed {}. The lister's and the worker's use cases (the code the Lambda functions run) on the in-memory tables, with a simulated Cloudinary and Lambda's SQS event source, in tokio's paused clock on one thread, so a seed replays exactly. One asset in 5 has no text. The stack as `template.yaml` has it: the lister every 15 minutes (900 s timeout, 500 assets a page), worker timeout 150 s at {} MB, batch size {} with a {} s batching window, {} records in flight, visibility timeout 900 s, maxReceiveCount 5, retention 14 days. Not modelled: Lambda's ramp-up of pollers (a minute or two at most), cold starts, DynamoDB and SQS latency and throttling. Per image means per asset that reached a terminal status; the cost uses the bench's prices and its measured 494 log bytes per image.\n\n",
        base.assets,
        base.seed,
        base.worker_memory_mb,
        base.batch_size,
        base.batching_window.as_secs(),
        base.records_in_flight,
    ));
    s.push_str(&format!(
        "### What the model assumes\n\nEvery fault and latency of the model, with its value in the default runs (the tables give each run's faults) and where it comes from. A run without the undocumented behaviours stands beside each run with them.\n\n{}\n",
        model_table(base)
    ));
    s.push_str(&format!(
        "### By method and quota (concurrency {})\n\n{}\n",
        base.concurrency,
        table(main)
    ));
    if !concurrency.is_empty() {
        s.push_str(&format!(
            "### By worker concurrency (`explicit`, {}/h)\n\n{}\n",
            concurrency[0].config.quota_per_hour,
            table(concurrency)
        ));
        if let Some(enough) = enough_concurrency(concurrency) {
            s.push_str(&format!(
                "Adding concurrency stops helping at about **{}**: from there every run is terminal within 5 % of the fastest ({}), because the pace is then {}. {}\n\n",
                enough.config.concurrency,
                hours(enough.terminal_at),
                enough.bound_by(),
                match enough.listed_at {
                    Some(l) => format!(
                        "Listing the account takes {} of the Admin quota's calls ({} assets a page, each call one of the hour's {}); the workers, {} invocations of {} records at about {} ms an OCR, could OCR {:.0} images an hour, more than the listing enqueues.",
                        hours(Some(l)),
                        shared::defaults::PAGE_SIZE,
                        enough.config.quota_per_hour,
                        enough.config.concurrency,
                        enough.config.records_in_flight,
                        base.ocr_median.as_millis(),
                        enough.config.concurrency as f64 * enough.config.records_in_flight as f64 * 3600.0
                            / base.ocr_median.as_secs_f64()
                    ),
                    None => String::new(),
                }
            ));
        }
    }
    if !update_concurrency.is_empty() {
        s.push_str(&format!(
            "### `update` by worker concurrency ({}/h)\n\n{}\n",
            update_concurrency[0].config.quota_per_hour,
            table(update_concurrency)
        ));
        if let Some(enough) = enough_concurrency(update_concurrency) {
            let most = update_concurrency
                .iter()
                .max_by_key(|r| r.config.concurrency)
                .expect("not empty");
            s.push_str(&format!(
                "With `update` every OCR request is one of the Admin quota's calls, so the quota sets the pace whatever the concurrency: {} invocations already keep it (within 5 % of the fastest). More only hold: an invocation that finds the quota spent, as far as its gate knows, waits until shortly before its timeout, so each costs its full duration, and the worker's GB-s per image are higher than with the fewest ({:.3} at {}, {:.3} at {}).\n\n",
                enough.config.concurrency,
                enough.gb_seconds_per_image().0,
                enough.config.concurrency,
                most.gb_seconds_per_image().0,
                most.config.concurrency,
            ));
        }
    }
    if !batches.is_empty() {
        s.push_str(&format!(
            "### Lambda GB-seconds by batch size (`explicit`, {}/h, concurrency {}, records in flight = batch size)\n\nThe floor is the memory held for one OCR answer time, shared by the records in flight: {} MB × {} ms / records.\n\n",
            batches[0].config.quota_per_hour,
            base.concurrency,
            base.worker_memory_mb,
            base.ocr_median.as_millis()
        ));
        let mut t = crate::bench::Table::new(&[
            "batch size",
            "records per invocation",
            "worker GB-s per image",
            "floor",
            "of floor",
            "invocations per image",
            "USD per million",
            "all terminal in",
        ]);
        for r in batches {
            let (gbs, floor) = r.gb_seconds_per_image();
            t.row(vec![
                r.config.batch_size.to_string(),
                format!("{:.2}", r.records as f64 / r.invocations.max(1) as f64),
                format!("{gbs:.5}"),
                format!("{floor:.5}"),
                format!("{:.2}×", gbs / floor),
                format!("{:.3}", r.invocations as f64 / r.images()),
                format!("{:.2}", r.dollars_per_million()),
                r.terminal_at.map_or_else(|| "—".into(), |t| hours(Some(t))),
            ]);
        }
        s.push_str(&t.markdown());
        s.push('\n');
    }
    s
}
