//! `make demo`: the whole pipeline, end to end, against moto and the Cloudinary emulator, with
//! progress and a summary. A real Cloudinary account (`CLOUDINARY_URL`) only with
//! `--real-account`, after its plan is shown and confirmed, and at most `--max-assets` OCRs.

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
    /// Assets the emulator holds (not with --real-account).
    #[arg(long, env = "DEMO_ASSETS", default_value_t = 3000)]
    assets: usize,
    /// OCR images of the real account in CLOUDINARY_URL (paid): the first --max-assets of the
    /// scope (SCOPE_* variables), after the plan is shown and confirmed. Without it a set
    /// CLOUDINARY_URL is left alone and the emulator is used.
    #[arg(long)]
    real_account: bool,
    /// With --real-account: OCR at most this many images (the demo's budget).
    #[arg(long, default_value_t = 20)]
    max_assets: u64,
    /// With --real-account: pay without asking (needed when standard input is not a terminal).
    #[arg(long, short = 'y')]
    yes: bool,
    /// Concurrent worker invocations (the stack's reserved concurrency).
    #[arg(long, default_value_t = 4)]
    invocations: usize,
    /// Milliseconds the emulator adds to every answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Sample rows printed at the end.
    #[arg(long, default_value_t = 5)]
    samples: usize,
    /// Skip the live phase (uploads, an upload again, a rename and a delete after the
    /// backfill, reflected through the notifier).
    #[arg(long)]
    no_live: bool,
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

    let (emulator, real) = start_cloudinary(&mut scenario, &args).await?;
    // One worker instance per concurrent invocation, each keeping to its share of the quota.
    scenario.set("WORKER_INSTANCES", args.invocations.to_string());
    let lister = scenario.lister()?;
    let pool = scenario.workers(args.invocations)?;
    println!(
        "OCR method: {}",
        scenario.env().worker(None)?.cloudinary.ocr_method
    );

    // 1. The schedule invokes the lister until its pass is complete (for a real account the
    // demo enqueued its first images itself instead).
    let listing = if let Some(enqueued) = real {
        local_stack::scenario::ListedPass {
            listed: enqueued,
            enqueued,
            ..Default::default()
        }
    } else {
        scenario
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
            .await?
    };
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

    // 4. Live: the account changes, Cloudinary notifies, the table follows.
    if let Some(emu) = &emulator
        && problems.is_empty()
        && !args.no_live
    {
        problems = live_phase(&scenario, emu, &pool, args.invocations).await?;
    }

    let items = scenario.items().await?;
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

/// After the backfill: images uploaded, uploaded again, renamed and deleted through the
/// Upload API; the emulator notifies the notifier (served locally with the Lambda's handler),
/// and the worker drains what it enqueued. Each change is timed from its API call to the
/// table. Returns the problems found (none: every change shown, each upload paid once, the
/// rename and the delete paid nothing).
async fn live_phase(
    scenario: &Scenario,
    emu: &Emulator,
    pool: &local_stack::scenario::WorkerPool,
    invocations: usize,
) -> anyhow::Result<Vec<String>> {
    use local_stack::live::{Change, run, serve_and_register};
    let live = serve_and_register(scenario, emu).await?;
    println!();
    println!(
        "Live: the notifier at {}, registered for {} notifications",
        live.url,
        local_stack::live::EVENT_TYPES.join(", ")
    );
    // Three images of the backfill, with text, to upload again, rename and delete.
    let mut picked: Vec<String> = emu
        .assets()
        .into_iter()
        .filter(|a| a.delivery_type == "upload" && a.text.is_some())
        .map(|a| a.public_id)
        .collect();
    picked.sort();
    let [again, renamed, deleted] = match picked.as_slice() {
        [a, b, c, ..] => [a.clone(), b.clone(), c.clone()],
        _ => bail!("the corpus has fewer than three images with text for the live phase"),
    };
    let changes = vec![
        Change::Upload {
            key: "live/new-poster".into(),
            text: "GRAND OPENING\nSaturday 10am\n".into(),
            overwrite: false,
        },
        Change::Upload {
            key: "live/new-receipt".into(),
            text: "TOTAL 42.00\nTHANK YOU\n".into(),
            overwrite: false,
        },
        Change::Upload {
            key: again,
            text: "UPDATED SIGN\nNew hours 9-5\n".into(),
            overwrite: true,
        },
        Change::Rename {
            to: format!("{renamed}-renamed"),
            from: renamed,
        },
        Change::Delete { key: deleted },
    ];
    let billed_before = emu.stats().ocr_billed;
    let uploads = changes
        .iter()
        .filter(|c| matches!(c, Change::Upload { .. }))
        .count() as u64;
    let outcome = run(
        scenario,
        emu,
        pool,
        invocations,
        changes,
        Duration::from_millis(500),
        Duration::from_secs(60),
    )
    .await?;
    let mut problems = Vec::new();
    for r in &outcome.reflected {
        match r.after {
            Some(after) => println!(
                "  {:<13} {:<44} in the table {:.2}s after the change",
                r.change.label(),
                r.change.describe(),
                after.as_secs_f64()
            ),
            None => {
                println!(
                    "  {:<13} {:<44} NOT in the table a minute after the change",
                    r.change.label(),
                    r.change.describe()
                );
                problems.push(format!(
                    "live: {} {} not reflected",
                    r.change.label(),
                    r.change.describe()
                ));
            }
        }
    }
    let stats = emu.stats();
    let paid = stats.ocr_billed - billed_before;
    println!(
        "  notifications            {} sent, {} answered 2xx by the notifier ({:?} by status)",
        stats.notifications_sent,
        stats.notifications_delivered,
        live.statuses()
    );
    println!(
        "  paid OCR                 {paid} for {uploads} uploads; the rename and the delete paid nothing"
    );
    if paid != uploads {
        problems.push(format!("live: {paid} OCRs paid for {uploads} uploads"));
    }
    Ok(problems)
}

/// The emulator with a generated corpus; the real account in `CLOUDINARY_URL` only with
/// `--real-account` (then also the number of its images the demo enqueued itself).
async fn start_cloudinary(
    scenario: &mut Scenario,
    args: &Args,
) -> anyhow::Result<(Option<Emulator>, Option<u64>)> {
    let url_set = std::env::var("CLOUDINARY_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .is_some();
    if args.real_account {
        if !url_set {
            bail!(
                "--real-account: set CLOUDINARY_URL to the account (cloudinary://KEY:SECRET@CLOUD)"
            );
        }
        let enqueued = real_account_pilot(scenario, args).await?;
        return Ok((None, Some(enqueued)));
    }
    if url_set {
        println!(
            "CLOUDINARY_URL is set, but the demo does not spend on a real account unless asked: it runs on the emulator (--real-account OCRs the first --max-assets images of the real account, after showing the plan)"
        );
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
    Ok((Some(emu), None))
}

/// The plan for the real account's first `--max-assets` images in scope, confirmed, then
/// those images enqueued, with a budget of that many OCRs for the workers.
async fn real_account_pilot(scenario: &mut Scenario, args: &Args) -> anyhow::Result<u64> {
    use shared::cloudinary::{CloudinaryClient, addon_usage};
    use shared::queue::WorkQueue;
    let (client, scope) = {
        let env = scenario.env();
        (CloudinaryClient::new(&env.cloudinary(None)?)?, env.scope()?)
    };
    let expression = scope.search_expression();
    let first = client
        .search_page(&expression, None, args.max_assets.clamp(1, 500) as u32)
        .await
        .map_err(|e| anyhow::anyhow!(shared::error::error_chain(&e)))
        .context("listing the real account's images in scope (Search API)")?;
    let total = first.value.total_count.unwrap_or(0);
    let page = first.value.into_page(None);
    let messages: Vec<shared::message::WorkMessage> = page
        .assets
        .iter()
        .filter(|a| {
            a.resource_type == "image"
                && scope.admits(&a.public_id, &a.delivery_type, a.format.as_deref(), None)
        })
        .take(args.max_assets as usize)
        .map(|a| shared::message::WorkMessage {
            version: a.version,
            ..shared::message::WorkMessage::new(&a.public_id, "image", &a.delivery_type)
        })
        .collect();
    let n = messages.len() as u64;
    println!(
        "Cloudinary: the real account {} (scope: {scope})",
        client.cloud_name()
    );
    println!("  images in scope           {total}");
    println!(
        "  this demo OCRs            {n} (--max-assets {}): up to {n} paid OCRs",
        args.max_assets
    );
    match client
        .usage()
        .await
        .ok()
        .and_then(|u| addon_usage(&u.value))
    {
        Some(u) => println!(
            "  OCR add-on this month     {} of {} used",
            u.usage, u.limit
        ),
        None => println!("  OCR add-on this month     not reported"),
    }
    if n == 0 {
        bail!("no image in scope to OCR; nothing paid");
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "the demo would pay for up to {n} OCRs on the real account: confirm with --yes; nothing paid"
            );
        }
        print!("Pay for up to {n} OCRs on the real account? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES") {
            bail!("not confirmed; nothing paid");
        }
    }
    // The budget holds the workers to what was confirmed, whatever else reaches the queue.
    scenario.set("MAX_OCR_PER_MONTH", n.to_string());
    let queue = scenario.queue();
    let refused = queue
        .enqueue(&messages)
        .await
        .map_err(|e| anyhow::anyhow!(shared::error::error_chain(&e)))?;
    if !refused.is_empty() {
        bail!("the work queue refused {} messages", refused.len());
    }
    Ok(n)
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
