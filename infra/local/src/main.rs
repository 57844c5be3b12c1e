//! `make demo`: the whole pipeline, end to end, against moto and the Cloudinary emulator (or a
//! real Cloudinary account when `CLOUDINARY_URL` is set), with progress and a summary.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use cloudinary_emulator::{Emulator, EmulatorConfig, generate};
use local_stack::runner::{DrainEnd, DrainStats};
use local_stack::scenario::{
    DrainTimes, OnRateLimit, Scenario, Tally, by_status, local_sdk, template_settings, verify,
    with_progress,
};
use shared::lister::StopReason;

/// Runs the pipeline end to end on the local servers.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Assets the emulator holds (ignored with a real CLOUDINARY_URL).
    #[arg(long, env = "DEMO_ASSETS", default_value_t = 3000)]
    assets: usize,
    /// Concurrent worker invocations (the stack's reserved concurrency).
    #[arg(long, default_value_t = 4)]
    invocations: usize,
    /// Milliseconds the emulator adds to every answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Sample rows printed at the end.
    #[arg(long, default_value_t = 5)]
    samples: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    local_stack::init_cli_logs();
    let args = Args::parse();
    let started = Instant::now();
    let sdk = local_sdk().await?;
    let mut scenario = Scenario::provision(&sdk, "demo", template_settings()?).await?;
    println!(
        "AWS (moto) at {}: table {}, queue {}",
        local_stack::aws::local_endpoint().map_err(anyhow::Error::msg)?,
        scenario.stack.names.results_table,
        scenario.stack.names.work_queue
    );

    let emulator = start_cloudinary(&mut scenario, &args).await?;
    // One worker instance per concurrent invocation, each keeping to its share of the quota.
    scenario.set("WORKER_INSTANCES", args.invocations.to_string());
    let lister = scenario.lister()?;
    let pool = scenario.workers(args.invocations)?;
    println!(
        "OCR method: {}",
        scenario.env().worker(None)?.cloudinary.ocr_method
    );

    // 1. The schedule invokes the lister until its pass is complete.
    let listing = scenario
        .list_until_done(&lister, OnRateLimit::Stop, 100, |run, summary| {
            println!(
                "lister run {run}: {} pages, {} listed, {} enqueued, stop: {:?}",
                summary.pages,
                summary.listed,
                summary.enqueued,
                serde_json::to_value(summary.stop).unwrap_or_default()
            );
            if summary.stop == StopReason::RateLimited {
                println!(
                    "listing is rate limited until {}; processing what was listed",
                    summary.quota_resets_at.as_deref().unwrap_or("its reset")
                );
            }
        })
        .await?;
    let (listed, enqueued) = (listing.listed, listing.enqueued);

    // 2. The event source mapping drains the queue through the worker.
    let tally = Tally::default();
    let stats = DrainStats::default();
    let mapping = local_stack::runner::MappingSettings {
        idle_grace: Duration::from_secs(2),
        ..scenario.mapping(args.invocations, Duration::from_secs(3600))
    };
    let drain_started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let progress = |final_line: bool| {
        let line = format!(
            "worker: {} records in {} invocations | done {} | no_text {} | dead-lettered {} | deferred {} | retried {} | skipped {} | {:.0}/s",
            stats.records.load(Ordering::Relaxed),
            stats.invocations.load(Ordering::Relaxed),
            tally.get("done"),
            tally.get("no_text"),
            tally.get("dead_lettered"),
            tally.get("deferred"),
            tally.get("retry"),
            tally.get("skipped"),
            stats.records.load(Ordering::Relaxed) as f64
                / drain_started.elapsed().as_secs_f64().max(0.001),
        );
        if tty && !final_line {
            print!("\r{line}");
        } else {
            println!("{}{line}", if tty { "\r" } else { "" });
        }
        let _flush_is_best_effort = std::io::stdout().flush();
    };
    let end = with_progress(
        scenario.drain(&pool, &mapping, &stats, &tally, &DrainTimes::default()),
        Duration::from_secs(if tty { 1 } else { 3 }),
        || progress(false),
    )
    .await?;
    progress(true);
    if end == DrainEnd::TimedOut {
        println!(
            "the queue was not drained within {:?}",
            mapping.max_duration
        );
    }

    // 3. Summary, read back from the table and the queues.
    let items = scenario.items().await?;
    let by_status = by_status(&items);
    let (work, dlq) = scenario.depths().await?;
    let count = |s: &str| by_status.get(s).copied().unwrap_or(0);
    println!();
    println!("Summary");
    println!("  assets listed            {listed}");
    println!("  messages enqueued        {enqueued}");
    println!("  OCR'd with text          {}", count("done"));
    println!("  OCR'd without text       {}", count("no_text"));
    println!("  failed                   {}", count("failed"));
    println!("  in the dead-letter queue {}", dlq.visible + dlq.in_flight);
    println!("  left in the work queue   {}", work.total());
    println!("  items in the table       {}", items.len());
    let mut by_type: std::collections::BTreeMap<String, u64> = Default::default();
    for item in items.values() {
        if let Some(t) = item.get("deliveryType").and_then(|v| v.as_s().ok()) {
            *by_type.entry(t.clone()).or_default() += 1;
        }
    }
    println!(
        "  by delivery type         {}",
        by_type
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  time taken               {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let mut problems = Vec::new();
    if let Some(emu) = &emulator {
        let s = emu.stats();
        println!(
            "  cloudinary calls         {} OCR ({} billed), {} listing, {} admin in all",
            s.ocr_requests,
            s.ocr_billed,
            s.list_calls + s.search_calls,
            s.admin_calls
        );
        problems = verify(&emu.assets(), &items, &emu.ocr_billed_all());
        if problems.is_empty() {
            println!(
                "  verified                 every image (delivery type and public_id) has exactly one item with the corpus's text, and exactly one OCR call"
            );
        }
    }

    print_samples(&scenario, &items, args.samples);
    export_csv(&scenario).await?;

    if !problems.is_empty() {
        for p in problems.iter().take(20) {
            eprintln!("MISMATCH: {p}");
        }
        bail!(
            "{} mismatches between the table and the emulator's corpus",
            problems.len()
        );
    }
    Ok(())
}

/// A real account when `CLOUDINARY_URL` is set; otherwise the emulator with a generated corpus.
async fn start_cloudinary(
    scenario: &mut Scenario,
    args: &Args,
) -> anyhow::Result<Option<Emulator>> {
    let real = std::env::var("CLOUDINARY_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .is_some();
    if real {
        println!("Cloudinary: the real account in CLOUDINARY_URL");
        return Ok(None);
    }
    let mut config = EmulatorConfig::new("demo");
    config.latency = Duration::from_millis(args.latency_ms);
    let emu = Emulator::start(config, generate(args.assets), 0).await?;
    println!(
        "Cloudinary: emulator at {} with {} assets",
        emu.base_url(),
        args.assets
    );
    scenario.use_cloudinary(emu.cloudinary_url(), emu.base_url());
    Ok(Some(emu))
}

/// A few rows of the table, spread over its ids.
fn print_samples(
    scenario: &Scenario,
    items: &std::collections::HashMap<String, local_stack::scenario::Item>,
    samples: usize,
) {
    println!();
    println!("Sample rows (table {})", scenario.stack.names.results_table);
    let mut ids: Vec<&String> = items.keys().collect();
    ids.sort();
    let step = (ids.len() / samples.max(1)).max(1);
    for id in ids.iter().step_by(step).take(samples) {
        let item = &items[*id];
        let s = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default()
        };
        let text: String = s("text").chars().take(48).collect();
        println!(
            "  {:<34} {:<8} {:<4} {:?}",
            format!("{id:?}"),
            s("status"),
            s("locale"),
            text
        );
    }
}

/// The table, exported for long-term storage, as `ocr-ctl export` does it.
async fn export_csv(scenario: &Scenario) -> anyhow::Result<()> {
    std::fs::create_dir_all(".local").context("creating .local")?;
    let table = &scenario.stack.names.results_table;
    let csv_path = std::path::PathBuf::from(format!(".local/{table}.csv"));
    let exported = ocr_ctl::export::export(
        &scenario.ddb,
        table,
        Some(&csv_path),
        &ocr_ctl::export::ExportOptions::default(),
    )
    .await?;
    let shown = std::fs::canonicalize(&csv_path).unwrap_or(csv_path);
    println!();
    println!("Exported {} rows to {}", exported.rows, shown.display());
    Ok(())
}
