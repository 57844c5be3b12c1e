//! `make bench`: measures the pipeline on the local servers and writes BENCHMARKS.md.
//!
//! Scenarios: the blog-style Python baseline side by side with the pipeline; use of a scaled
//! Admin quota over several windows; start-up time and memory of the release bootstraps; AWS and
//! Cloudinary requests per image and the modelled AWS cost per million images; lister
//! throughput; worker throughput against concurrency; full-text search against a scan; the time
//! from an upload to its text through the notifier. The emulator runs as its own process, so
//! the CPU time measured for the pipeline is the pipeline's.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use aws_sdk_dynamodb::types::AttributeValue;
use clap::Parser;
use cloudinary_emulator::Stats;
use local_stack::bench::{
    PRICES, PRICES_AS_OF, PerImage, Table, by_service, command_output, cost_per_million, item_size,
    machine, median, percentile, quota_share, write_units,
};
use local_stack::provision::{LocalStack, StackNames, StackSettings, provision};
use local_stack::runner::DrainStats;
use local_stack::runtime_api::invoke_bootstrap;
use local_stack::scenario::{DrainTimes, ListedPass, OnRateLimit, Scenario, Tally, with_progress};
use local_stack::template::{TEMPLATE, Template};
use shared::message::WorkMessage;
use tokio::io::AsyncBufReadExt;

mod agreement;
mod baseline;
mod cold_start;
mod cost;
mod ctx;
mod lister;
mod live;
mod pipeline;
mod quota;
mod report;
mod scaling;
mod search;
mod side_by_side;
mod worker_cpu;

use agreement::*;
use baseline::*;
use cold_start::*;
use cost::*;
use ctx::*;
use lister::*;
use live::*;
use pipeline::*;
use quota::*;
use report::*;
use scaling::*;
use search::*;
use side_by_side::*;
use worker_cpu::*;

/// moto's count of the statements its BatchExecuteStatement requests carried (each a write).
const STATEMENTS: &str = "dynamodb:BatchExecuteStatement/statements";

/// Measures the pipeline against the blog-style baseline and writes BENCHMARKS.md.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Images in the side-by-side comparison.
    #[arg(long, default_value_t = 1000)]
    images: usize,
    /// Rounds of the side-by-side comparison (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Milliseconds the emulator takes to answer each call (comparison and scaling).
    #[arg(long, default_value_t = 200)]
    latency_ms: u64,
    /// Admin API calls allowed per quota window (the hourly quota, scaled down).
    #[arg(long, default_value_t = 120)]
    quota_limit: u64,
    /// Length of a quota window in seconds.
    #[arg(long, default_value_t = 10)]
    quota_window_secs: u64,
    /// Quota windows the quota scenario runs for.
    #[arg(long, default_value_t = 6)]
    quota_windows: u64,
    /// Assets the lister pages through.
    #[arg(long, default_value_t = 100_000)]
    lister_assets: usize,
    /// Runs of each bootstrap for start-up time and memory (the median is reported).
    #[arg(long, default_value_t = 5)]
    cold_runs: usize,
    /// Concurrent worker invocations to measure throughput at.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    scaling: Vec<usize>,
    /// Images per invocation at each scaling step.
    #[arg(long, default_value_t = 100)]
    scaling_images: usize,
    /// Milliseconds the emulator takes per call in the scaling scenario (OCR takes about a
    /// second in production; a long call also keeps moto's load within what it can serve).
    #[arg(long, default_value_t = 1000)]
    scaling_latency_ms: u64,
    /// Texts in the full-text search scenario.
    #[arg(long, default_value_t = 1_000_000)]
    search_texts: usize,
    /// Timed runs of each search query.
    #[arg(long, default_value_t = 20)]
    search_repeats: usize,
    /// Uploads in the live scenario.
    #[arg(long, default_value_t = 1000)]
    live_uploads: usize,
    /// Uploads per second in the live scenario.
    #[arg(long, default_value_t = 20.0)]
    live_rate: f64,
    /// Concurrent worker invocations in the live scenario.
    #[arg(long, default_value_t = 4)]
    live_invocations: usize,
    /// Scenarios to run (1 side by side, 2 quota, 3 cold start, 4 cost (with 1), 5 lister,
    /// 6 scaling, 7 full-text search, 8 the simulation against moto (with 1 and 5), 9 the
    /// worker's own CPU (with 1), 10 live updates; the report is written only when all run.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5,6,7,8,9,10")]
    only: Vec<u8>,
    /// Where to write the report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    local_stack::init_cli_logs();
    let args = Args::parse();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("the bench binary's directory")?
        .to_path_buf();
    let python = std::env::var_os("BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let endpoint = local_stack::aws::local_endpoint().map_err(anyhow::Error::msg)?;
    let sdk = local_stack::aws::sdk_config(&endpoint).await;
    let ctx = Ctx {
        ddb: aws_sdk_dynamodb::Client::new(&sdk),
        sqs: aws_sdk_sqs::Client::new(&sdk),
        http: reqwest::Client::new(),
        settings: local_stack::scenario::template_settings()?,
        template: Template::parse(TEMPLATE).map_err(anyhow::Error::msg)?,
        root,
        bin_dir,
        python,
        endpoint,
        sdk,
    };
    ctx.aws_requests(true).await?;
    let started = Instant::now();
    let mut report = Report {
        text: String::new(),
    };

    let run = |n: u8| args.only.contains(&n);
    let comparison = match run(1) {
        true => Some(side_by_side(&ctx, &args, &mut report).await?),
        false => None,
    };
    if run(2) {
        quota(&ctx, &args, &mut report).await?;
    }
    let logs_per_image = match run(3) {
        true => cold_start(&ctx, &args, &mut report).await?,
        false => 0.0,
    };
    if let (true, Some(comparison)) = (run(4), &comparison) {
        cost(&ctx, &args, &comparison.run, logs_per_image, &mut report)?;
    }
    let listing = match run(5) {
        true => Some(lister_throughput(&ctx, &args, &mut report).await?),
        false => None,
    };
    if run(6) {
        scaling(&ctx, &args, &mut report).await?;
    }
    if run(7) {
        search(&args, &mut report).await?;
    }
    if let (true, Some(comparison), Some(listing)) = (run(8), &comparison, &listing) {
        agreement(&ctx, &args, &comparison.run, listing, &mut report)?;
    }
    if let (true, Some(comparison)) = (run(9), &comparison) {
        worker_cpu(&ctx, &args, comparison, &mut report).await?;
    }
    if run(10) {
        live_latency(&ctx, &args, &mut report).await?;
    }
    if (1..=10).any(|n| !run(n)) {
        println!(
            "
Not all scenarios ran: {} left as it was.",
            args.out.display()
        );
        return Ok(());
    }

    let header = format!(
        "# Benchmarks\n\nFigures from one run of `make bench` (all scenarios in the same run, on the \
         local servers: moto for DynamoDB and SQS, the project's Cloudinary emulator as its own \
         process). Shared machines are noisy: compare ratios, not absolute times.\n\n\
         - date: {}\n- machine: {}\n- commit: {}\n- {}\n- moto {}, Python {}\n- run time: {:.0} s\n\n\
         Reproduce: `make bench` (options: `make bench BENCH_ARGS='--help'`).\n",
        httpdate::fmt_http_date(SystemTime::now()),
        machine(),
        command_output(
            "git",
            &[
                "-C",
                &ctx.root.to_string_lossy(),
                "describe",
                "--always",
                "--dirty"
            ]
        ),
        command_output("rustc", &["--version"]),
        command_output(
            &ctx.python.to_string_lossy(),
            &["-c", "import moto; print(moto.__version__)"]
        ),
        command_output(
            &ctx.python.to_string_lossy(),
            &["-c", "import platform; print(platform.python_version())"]
        ),
        started.elapsed().as_secs_f64(),
    );
    let path = if args.out.is_absolute() {
        args.out.clone()
    } else {
        ctx.root.join(&args.out)
    };
    // `make sim` writes a section of its own at the end; it is kept.
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut text = format!("{header}{}", report.text);
    if let Some(section) = local_stack::sim::report::section_of(&old) {
        text = format!("{}\n\n{section}", text.trim_end());
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    println!("\nWritten to {}", path.display());
    Ok(())
}
