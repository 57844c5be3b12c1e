//! `make demo`: the whole pipeline, end to end, against moto and the Cloudinary emulator (or a
//! real Cloudinary account when `CLOUDINARY_URL` is set), with progress and a summary.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use aws_sdk_dynamodb::types::AttributeValue;
use clap::Parser;
use cloudinary_emulator::{Emulator, EmulatorConfig, generate};
use local_stack::provision::{StackNames, StackSettings, provision};
use local_stack::runner::{DrainEnd, DrainStats, MappingSettings, drain};
use shared::config::Env;
use shared::queue::queue_depth;
use shared::store::Status;
use shared::worker::Disposition;

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

#[derive(Default)]
struct Tally {
    done: AtomicU64,
    no_text: AtomicU64,
    skipped: AtomicU64,
    deferred: AtomicU64,
    dead_lettered: AtomicU64,
    retried: AtomicU64,
}

impl Tally {
    fn add(&self, d: &Disposition) {
        let counter = match d {
            Disposition::Stored(Status::Done) => &self.done,
            Disposition::Stored(_) => &self.no_text,
            Disposition::Skipped => &self.skipped,
            Disposition::Deferred { .. } => &self.deferred,
            Disposition::DeadLettered { .. } => &self.dead_lettered,
            Disposition::Retry { .. } => &self.retried,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    local_stack::init_cli_logs();
    let args = Args::parse();
    let started = Instant::now();
    let endpoint = local_stack::aws::local_endpoint().map_err(anyhow::Error::msg)?;
    let sdk = local_stack::aws::sdk_config(&endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);

    let settings = StackSettings::default();
    let stack = provision(&ddb, &sqs, StackNames::unique("demo"), settings.clone()).await?;
    println!(
        "AWS (moto) at {endpoint}: table {}, queue {}",
        stack.names.results_table, stack.names.work_queue
    );

    // A real account when CLOUDINARY_URL is set; otherwise the emulator with a generated corpus.
    let real = std::env::var("CLOUDINARY_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .is_some();
    let emulator = if real {
        println!("Cloudinary: the real account in CLOUDINARY_URL");
        None
    } else {
        let mut config = EmulatorConfig::new("demo");
        config.latency = Duration::from_millis(args.latency_ms);
        let emu = Emulator::start(config, generate(args.assets), 0).await?;
        println!(
            "Cloudinary: emulator at {} with {} assets",
            emu.base_url(),
            args.assets
        );
        Some(emu)
    };
    let mut overrides = stack.function_env();
    if let Some(emu) = &emulator {
        overrides.insert("CLOUDINARY_URL", emu.cloudinary_url());
        overrides.insert("CLOUDINARY_API_BASE", emu.base_url());
    }
    let env = Env(|name: &str| {
        overrides
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    });
    let lister_config = env.lister(None)?;
    let worker_config = env.worker(None)?;
    println!("OCR method: {}", worker_config.cloudinary.ocr_method);
    let lister = lister::build(&lister_config, &sdk)?;
    let worker = worker::build(&worker_config, &sdk)?;

    // 1. The schedule invokes the lister until its pass is complete.
    let mut listed = 0u64;
    let mut enqueued = 0u64;
    let mut runs = 0;
    loop {
        runs += 1;
        let deadline = SystemTime::now() + Duration::from_secs(900);
        let summary = lister::handle(&lister, serde_json::json!({}), deadline)
            .await
            .map_err(|e| anyhow::anyhow!(shared::error::error_chain(&e)))?;
        listed += summary["listed"].as_u64().unwrap_or(0);
        enqueued += summary["enqueued"].as_u64().unwrap_or(0);
        println!(
            "lister run {runs}: {} pages, {} listed, {} enqueued, stop: {}",
            summary["pages"], summary["listed"], summary["enqueued"], summary["stop"]
        );
        match summary["stop"].as_str() {
            Some("pass_complete") => break,
            Some("rate_limited") => {
                println!(
                    "listing is rate limited until {}; processing what was listed",
                    summary["quota_resets_at"]
                );
                break;
            }
            _ if runs >= 100 => bail!("the lister did not complete its pass in 100 runs"),
            _ => {}
        }
    }

    // 2. The event source mapping drains the queue through the worker.
    let tally = Arc::new(Tally::default());
    let stats = DrainStats::default();
    let mapping = MappingSettings {
        queue_url: stack.work_queue_url.clone(),
        queue_arn: stack.work_queue_arn.clone(),
        batch_size: settings.batch_size as i32,
        max_concurrency: args.invocations,
        function_timeout: settings.worker_timeout,
        idle_grace: Duration::from_secs(2),
        max_duration: Duration::from_secs(3600),
        kill_rate: 0.0,
    };
    let drain_started = Instant::now();
    let handler = |event, deadline| {
        let worker = &worker;
        let tally = tally.clone();
        async move {
            let (response, outcome) = worker::handle_with_outcome(worker, event, deadline).await?;
            for (_, d) in &outcome.results {
                tally.add(d);
            }
            Ok(response)
        }
    };
    let tty = std::io::stdout().is_terminal();
    let progress = |final_line: bool| {
        let line = format!(
            "worker: {} records in {} invocations | done {} | no_text {} | dead-lettered {} | deferred {} | retried {} | skipped {} | {:.0}/s",
            stats.records.load(Ordering::Relaxed),
            stats.invocations.load(Ordering::Relaxed),
            Tally::get(&tally.done),
            Tally::get(&tally.no_text),
            Tally::get(&tally.dead_lettered),
            Tally::get(&tally.deferred),
            Tally::get(&tally.retried),
            Tally::get(&tally.skipped),
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
    let drained = drain(&sqs, &mapping, &stats, handler);
    tokio::pin!(drained);
    let mut ticker = tokio::time::interval(Duration::from_secs(if tty { 1 } else { 3 }));
    let end = loop {
        tokio::select! {
            end = &mut drained => break end?,
            _ = ticker.tick() => progress(false),
        }
    };
    progress(true);
    if end == DrainEnd::TimedOut {
        println!(
            "the queue was not drained within {:?}",
            mapping.max_duration
        );
    }

    // 3. Summary, read back from the table and the queues.
    let items = local_stack::scan_items(&ddb, &stack.names.results_table).await?;
    let mut by_status: HashMap<String, u64> = HashMap::new();
    for item in items.values() {
        let status = item
            .get("status")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_else(|| "in progress".into());
        *by_status.entry(status).or_default() += 1;
    }
    let dlq = queue_depth(&sqs, &stack.dead_letter_queue_url).await?;
    let work = queue_depth(&sqs, &stack.work_queue_url).await?;
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
        problems = verify(emu, &items);
        if problems.is_empty() {
            println!(
                "  verified                 every asset has exactly one item with the corpus's text, and exactly one OCR call"
            );
        }
    }

    println!();
    println!("Sample rows (table {})", stack.names.results_table);
    let mut ids: Vec<&String> = items.keys().collect();
    ids.sort();
    let step = (ids.len() / args.samples.max(1)).max(1);
    for id in ids.iter().step_by(step).take(args.samples) {
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

    // 4. The table, exported for long-term storage, as `ocr-ctl export` does it.
    std::fs::create_dir_all(".local").context("creating .local")?;
    let csv_path = std::path::PathBuf::from(format!(".local/{}.csv", stack.names.results_table));
    let exported = ocr_ctl::export::export(
        &ddb,
        &stack.names.results_table,
        ocr_ctl::export::Format::Csv,
        Some(&csv_path),
        &Default::default(),
        4,
        false,
    )
    .await?;
    let shown = std::fs::canonicalize(&csv_path).unwrap_or(csv_path);
    println!();
    println!("Exported {} rows to {}", exported.rows, shown.display());

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

/// Every asset has one item with the corpus's text, and Cloudinary billed one OCR per asset.
fn verify(emu: &Emulator, items: &HashMap<String, HashMap<String, AttributeValue>>) -> Vec<String> {
    let mut problems = Vec::new();
    let assets = emu.assets();
    if items.len() != assets.len() {
        problems.push(format!("{} items for {} assets", items.len(), assets.len()));
    }
    let billed = emu.ocr_billed_all();
    for a in &assets {
        let Some(item) = items.get(&a.public_id) else {
            problems.push(format!("no item for {:?}", a.public_id));
            continue;
        };
        let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        match &a.text {
            Some(text)
                if s("status").as_deref() != Some("done") || s("text").as_ref() != Some(text) =>
            {
                problems.push(format!(
                    "{:?}: expected status done with the corpus text, got {:?}",
                    a.public_id,
                    s("status")
                ))
            }
            None if s("status").as_deref() != Some("no_text") => problems.push(format!(
                "{:?}: expected no_text, got {:?}",
                a.public_id,
                s("status")
            )),
            _ => {}
        }
        let calls = billed.get(&a.public_id).copied().unwrap_or(0);
        if calls != 1 {
            problems.push(format!("{:?}: {calls} OCR calls", a.public_id));
        }
    }
    problems
}
