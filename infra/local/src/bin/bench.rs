//! `make bench`: measures the pipeline on the local servers and writes BENCHMARKS.md.
//!
//! Scenarios: the blog-style Python baseline side by side with the pipeline; use of a scaled
//! Admin quota over several windows; start-up time and memory of the release bootstraps; AWS and
//! Cloudinary requests per image and the modelled AWS cost per million images; lister
//! throughput; worker throughput against concurrency. The emulator runs as its own process, so
//! the CPU time measured for the pipeline is the pipeline's.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use aws_sdk_dynamodb::types::AttributeValue;
use clap::Parser;
use cloudinary_emulator::Stats;
use local_stack::bench::{
    PRICES, PRICES_AS_OF, PerImage, Table, by_service, cost_per_million, item_size, median,
    quota_share, write_units,
};
use local_stack::provision::{LocalStack, StackNames, StackSettings, provision};
use local_stack::runner::{DrainStats, MappingSettings, drain};
use local_stack::runtime_api::invoke_bootstrap;
use local_stack::template::{TEMPLATE, Template};
use shared::config::Env;
use shared::message::WorkMessage;
use shared::worker::Disposition;
use tokio::io::AsyncBufReadExt;

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
    /// Scenarios to run (1 side by side, 2 quota, 3 cold start, 4 cost (with 1), 5 lister,
    /// 6 scaling); the report is written only when all run.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5,6")]
    only: Vec<u8>,
    /// Where to write the report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
}

struct Ctx {
    root: PathBuf,
    bin_dir: PathBuf,
    python: PathBuf,
    endpoint: String,
    sdk: aws_config::SdkConfig,
    ddb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    http: reqwest::Client,
    settings: StackSettings,
    template: Template,
}

impl Ctx {
    async fn stack(&self, prefix: &str) -> anyhow::Result<LocalStack> {
        provision(
            &self.ddb,
            &self.sqs,
            StackNames::unique(prefix),
            self.settings.clone(),
        )
        .await
    }

    /// moto's request counts by operation; `reset` clears them after reading.
    async fn aws_requests(&self, reset: bool) -> anyhow::Result<BTreeMap<String, u64>> {
        let url = format!("{}/_requests", self.endpoint);
        let req = if reset {
            self.http.delete(&url)
        } else {
            self.http.get(&url)
        };
        let counts: BTreeMap<String, u64> = req
            .send()
            .await
            .context("asking moto for its request counts")?
            .error_for_status()?
            .json()
            .await
            .context("moto's request counts (is infra/scripts/moto_server.py serving?)")?;
        Ok(counts.into_iter().filter(|(k, _)| k != "other").collect())
    }
}

/// The Cloudinary emulator as a process of its own (its CPU is not the pipeline's).
struct EmulatorProcess {
    child: tokio::process::Child,
    base_url: String,
    cloudinary_url: String,
    http: reqwest::Client,
}

#[derive(Default)]
struct EmulatorOptions {
    assets: usize,
    latency_ms: u64,
    admin_limit: Option<u64>,
    admin_window_secs: Option<u64>,
}

impl EmulatorProcess {
    async fn start(ctx: &Ctx, o: EmulatorOptions) -> anyhow::Result<Self> {
        let path = ctx.bin_dir.join("cloudinary-emulator");
        let mut cmd = tokio::process::Command::new(&path);
        cmd.arg("--generate")
            .arg(o.assets.to_string())
            .arg("--latency-ms")
            .arg(o.latency_ms.to_string())
            .arg("--cloud-name")
            .arg("bench");
        if let Some(l) = o.admin_limit {
            cmd.arg("--admin-limit").arg(l.to_string());
        }
        if let Some(w) = o.admin_window_secs {
            cmd.arg("--admin-window-secs").arg(w.to_string());
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        let stdout = child.stdout.take().context("the emulator's stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let (mut base_url, mut cloudinary_url) = (None, None);
        while base_url.is_none() || cloudinary_url.is_none() {
            let Some(line) = lines.next_line().await? else {
                bail!("the emulator exited before it was ready");
            };
            if let Some(v) = line.strip_prefix("CLOUDINARY_API_BASE=") {
                base_url = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("CLOUDINARY_URL=") {
                cloudinary_url = Some(v.to_string());
            }
        }
        // Keep reading so that the emulator never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            base_url: base_url.unwrap_or_default(),
            cloudinary_url: cloudinary_url.unwrap_or_default(),
            http: ctx.http.clone(),
        })
    }

    async fn stats(&self) -> anyhow::Result<Stats> {
        self.http
            .get(format!("{}/_emulator/stats", self.base_url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
            .context("the emulator's stats")
    }

    async fn stop(mut self) {
        let _already_gone = self.child.kill().await;
    }
}

/// CPU seconds moto (the local AWS) has used so far, read from /proc; `NAN` if unknown.
fn moto_cpu_seconds(ctx: &Ctx) -> f64 {
    let pid = std::fs::read_to_string(ctx.root.join(".local/moto.pid")).unwrap_or_default();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and
    // 13th of them, in clock ticks.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // SAFETY: sysconf reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    match (fields.get(11), fields.get(12)) {
        (Some(u), Some(s)) if ticks > 0.0 => {
            (u.parse::<f64>().unwrap_or(f64::NAN) + s.parse::<f64>().unwrap_or(f64::NAN)) / ticks
        }
        _ => f64::NAN,
    }
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[derive(Default)]
struct Tally {
    stored: AtomicU64,
    skipped: AtomicU64,
    deferred: AtomicU64,
    dead_lettered: AtomicU64,
    retried: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct PipelineOptions {
    invocations: usize,
    ocr_method: &'static str,
    max_drain: Duration,
    /// Records in flight per invocation (`WORKER_CONCURRENCY`); `None` for its default.
    records: Option<usize>,
}

struct PipelineRun {
    listed: u64,
    lister_runs: u64,
    lister_ms: u64,
    wall_s: f64,
    drain_s: f64,
    cpu_s: f64,
    /// CPU time moto spent meanwhile (the local AWS's work for this run).
    moto_cpu_s: f64,
    stored: u64,
    deferred: u64,
    dead_lettered: u64,
    retried: u64,
    skipped: u64,
    invocations: u64,
    records: u64,
    /// Sum over worker invocations of their duration, each rounded up to a millisecond.
    billed_ms: u64,
    dlq: u64,
    left: u64,
    aws: BTreeMap<String, u64>,
    emulator: Stats,
    items: HashMap<String, HashMap<String, AttributeValue>>,
}

/// The functions' variables for a local stack and emulator.
fn function_env(stack: &LocalStack, emu: &EmulatorProcess) -> HashMap<&'static str, String> {
    let mut env = stack.function_env();
    env.insert("CLOUDINARY_URL", emu.cloudinary_url.clone());
    env.insert("CLOUDINARY_API_BASE", emu.base_url.clone());
    env
}

struct ListerPass {
    listed: u64,
    enqueued: u64,
    runs: u64,
}

/// Invokes the lister as the schedule would until its pass is complete (or the quota stops it).
async fn list_everything(lister: &lister::SqsLister) -> anyhow::Result<ListerPass> {
    let mut pass = ListerPass {
        listed: 0,
        enqueued: 0,
        runs: 0,
    };
    loop {
        pass.runs += 1;
        let deadline = SystemTime::now() + Duration::from_secs(900);
        let summary = lister::handle(lister, serde_json::json!({}), deadline)
            .await
            .map_err(|e| anyhow::anyhow!(shared::error::error_chain(&e)))?;
        pass.listed += summary["listed"].as_u64().unwrap_or(0);
        pass.enqueued += summary["enqueued"].as_u64().unwrap_or(0);
        match summary["stop"].as_str() {
            Some("pass_complete") | Some("rate_limited") => return Ok(pass),
            _ if pass.runs >= 100 => bail!("the lister did not finish in 100 runs"),
            _ => {}
        }
    }
}

async fn run_pipeline(
    ctx: &Ctx,
    emu: &EmulatorProcess,
    o: PipelineOptions,
) -> anyhow::Result<PipelineRun> {
    let stack = ctx.stack("bench").await?;
    let mut overrides = function_env(&stack, emu);
    overrides.insert("OCR_METHOD", o.ocr_method.to_string());
    overrides.insert("WORKER_INSTANCES", o.invocations.to_string());
    if let Some(records) = o.records {
        overrides.insert("WORKER_CONCURRENCY", records.to_string());
    }
    let env = Env(|name: &str| overrides.get(name).cloned());
    let lister = lister::build(&env.lister(None)?, &ctx.sdk)?;
    // One worker per concurrent invocation, as Lambda runs one instance per invocation in
    // flight: each has its own quota gate, as in production.
    let instances = (0..o.invocations.max(1))
        .map(|_| worker::build(&env.worker(None)?, &ctx.sdk).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let instances = std::sync::Mutex::new(instances);
    ctx.aws_requests(true).await?;

    let (wall0, cpu0, moto0) = (Instant::now(), cpu_seconds(), moto_cpu_seconds(ctx));
    let pass = list_everything(&lister).await?;
    let (listed, lister_runs) = (pass.listed, pass.runs);
    let lister_ms = wall0.elapsed().as_millis() as u64;

    let tally = Tally::default();
    let billed_ms = AtomicU64::new(0);
    // When the last invocation ended, in ms after the drain started: the drain itself also
    // waits to see the queue stay empty, which is not work.
    let last_end_ms = AtomicU64::new(0);
    let stats = DrainStats::default();
    let mapping = MappingSettings {
        queue_url: stack.work_queue_url.clone(),
        queue_arn: stack.work_queue_arn.clone(),
        batch_size: ctx.settings.batch_size as i32,
        max_concurrency: o.invocations,
        function_timeout: ctx.settings.worker_timeout,
        idle_grace: Duration::from_millis(500),
        max_duration: o.max_drain,
        kill_rate: 0.0,
    };
    let drain0 = Instant::now();
    let handler = |event, deadline| {
        let (instances, tally, billed_ms, last_end_ms) =
            (&instances, &tally, &billed_ms, &last_end_ms);
        async move {
            let lock = || instances.lock().unwrap_or_else(|e| e.into_inner());
            // The drain runs at most as many invocations at once as there are instances.
            let instance = lock().pop().ok_or("no idle worker instance")?;
            let started = Instant::now();
            let result = worker::handle_with_outcome(&instance, event, deadline).await;
            lock().push(instance);
            let ms = started.elapsed().as_micros().div_ceil(1000) as u64;
            billed_ms.fetch_add(ms, Ordering::Relaxed);
            last_end_ms.fetch_max(drain0.elapsed().as_millis() as u64, Ordering::Relaxed);
            let (response, outcome) = result?;
            for (_, d) in &outcome.results {
                let counter = match d {
                    Disposition::Stored(_) => &tally.stored,
                    Disposition::Skipped => &tally.skipped,
                    Disposition::Deferred { .. } => &tally.deferred,
                    Disposition::DeadLettered { .. } => &tally.dead_lettered,
                    Disposition::Retry { .. } => &tally.retried,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Ok(response)
        }
    };
    let drained = drain(&ctx.sqs, &mapping, &stats, handler);
    tokio::pin!(drained);
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    ticker.tick().await;
    loop {
        tokio::select! {
            end = &mut drained => { end?; break; }
            _ = ticker.tick() => {
                println!(
                    "    … {:>5.0}s: {} stored, {} deferred, {} invocations",
                    drain0.elapsed().as_secs_f64(),
                    tally.stored.load(Ordering::Relaxed),
                    tally.deferred.load(Ordering::Relaxed),
                    stats.invocations.load(Ordering::Relaxed),
                );
            }
        }
    }
    let drain_s = last_end_ms.load(Ordering::Relaxed) as f64 / 1000.0;
    let cpu_s = cpu_seconds() - cpu0;
    let moto_cpu_s = moto_cpu_seconds(ctx) - moto0;
    let wall_s = lister_ms as f64 / 1000.0 + drain_s;
    let aws = ctx.aws_requests(false).await?;
    let emulator = emu.stats().await?;
    let dlq = shared::queue::queue_depth(&ctx.sqs, &stack.dead_letter_queue_url).await?;
    let left = shared::queue::queue_depth(&ctx.sqs, &stack.work_queue_url).await?;
    let items = local_stack::scan_items(&ctx.ddb, &stack.names.results_table).await?;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    Ok(PipelineRun {
        listed,
        lister_runs,
        lister_ms,
        wall_s,
        drain_s,
        cpu_s,
        moto_cpu_s,
        stored: get(&tally.stored),
        deferred: get(&tally.deferred),
        dead_lettered: get(&tally.dead_lettered),
        retried: get(&tally.retried),
        skipped: get(&tally.skipped),
        invocations: stats.invocations.load(Ordering::Relaxed),
        records: stats.records.load(Ordering::Relaxed),
        billed_ms: billed_ms.load(Ordering::Relaxed),
        dlq: dlq.total(),
        left: left.total(),
        aws,
        emulator,
        items,
    })
}

#[derive(serde::Deserialize)]
struct BaselineReport {
    images: u64,
    errors: u64,
    wall_s: f64,
    cpu_s: f64,
}

struct BaselineRun {
    report: BaselineReport,
    moto_cpu_s: f64,
    aws: BTreeMap<String, u64>,
    emulator: Stats,
    items: HashMap<String, HashMap<String, AttributeValue>>,
}

async fn run_baseline(
    ctx: &Ctx,
    emu: &EmulatorProcess,
    threads: usize,
) -> anyhow::Result<BaselineRun> {
    let stack = ctx.stack("baseline").await?;
    ctx.aws_requests(true).await?;
    let moto0 = moto_cpu_seconds(ctx);
    let out = tokio::process::Command::new(&ctx.python)
        .arg(ctx.root.join("infra/bench/baseline.py"))
        .arg("--table")
        .arg(&stack.names.results_table)
        .arg("--threads")
        .arg(threads.to_string())
        .env("CLOUDINARY_URL", &emu.cloudinary_url)
        .env("CLOUDINARY_API_BASE", &emu.base_url)
        .env("AWS_ENDPOINT_URL", &ctx.endpoint)
        // moto accepts any credentials; these are placeholders, not keys.
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .await
        .context("running infra/bench/baseline.py")?;
    if !out.status.success() {
        bail!(
            "the baseline failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: BaselineReport = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("the baseline printed no report: {stdout}"))?;
    let moto_cpu_s = moto_cpu_seconds(ctx) - moto0;
    let aws = ctx.aws_requests(false).await?;
    let emulator = emu.stats().await?;
    let items = local_stack::scan_items(&ctx.ddb, &stack.names.results_table).await?;
    Ok(BaselineRun {
        report,
        moto_cpu_s,
        aws,
        emulator,
        items,
    })
}

/// Ids whose stored status or text differ between two tables.
fn differences(
    a: &HashMap<String, HashMap<String, AttributeValue>>,
    b: &HashMap<String, HashMap<String, AttributeValue>>,
) -> usize {
    let field = |item: &HashMap<String, AttributeValue>, k: &str| {
        item.get(k).and_then(|v| v.as_s().ok()).cloned()
    };
    let mut ids: Vec<&String> = a.keys().chain(b.keys()).collect();
    ids.sort();
    ids.dedup();
    ids.iter()
        .filter(|id| match (a.get(**id), b.get(**id)) {
            (Some(x), Some(y)) => {
                field(x, "status") != field(y, "status") || field(x, "text") != field(y, "text")
            }
            _ => true,
        })
        .count()
}

fn per_1000(value: f64, images: u64) -> f64 {
    value * 1000.0 / images.max(1) as f64
}

fn f1(v: f64) -> String {
    format!("{v:.1}")
}

fn f2(v: f64) -> String {
    format!("{v:.2}")
}

fn f3(v: f64) -> String {
    format!("{v:.3}")
}

fn sum_matching(counts: &BTreeMap<String, u64>, ops: &[&str]) -> u64 {
    ops.iter()
        .map(|o| counts.get(*o).copied().unwrap_or(0))
        .sum()
}

/// The report, printed as it grows and written at the end.
struct Report {
    text: String,
}

impl Report {
    fn section(&mut self, title: &str, intro: &str) {
        let s = format!("\n## {title}\n\n{intro}\n\n");
        print!("{s}");
        self.text.push_str(&s);
    }
    fn table(&mut self, t: &Table) {
        let s = format!("{}\n", t.markdown());
        print!("{s}");
        self.text.push_str(&s);
    }
    fn para(&mut self, p: &str) {
        let s = format!("{p}\n\n");
        print!("{s}");
        self.text.push_str(&s);
    }
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{model}, {cores} cores, {mem_gib:.0} GiB, {}",
        std::env::consts::OS
    )
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
        settings: StackSettings::default(),
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
        cost(&ctx, &args, comparison, logs_per_image, &mut report)?;
    }
    if run(5) {
        lister_throughput(&ctx, &args, &mut report).await?;
    }
    if run(6) {
        scaling(&ctx, &args, &mut report).await?;
    }
    if (1..=6).any(|n| !run(n)) {
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
    std::fs::write(&path, format!("{header}{}", report.text))
        .with_context(|| format!("writing {}", path.display()))?;
    println!("\nWritten to {}", path.display());
    Ok(())
}

/// 1. The Python baseline and the pipeline on the same corpus, emulator and moto.
async fn side_by_side(ctx: &Ctx, args: &Args, report: &mut Report) -> anyhow::Result<PipelineRun> {
    let invocations = ctx.settings.worker_concurrency;
    let records = shared::config::DEFAULT_WORKER_CONCURRENCY;
    let threads = invocations * records;
    println!(
        "1. side by side: {} images, {} ms per Cloudinary call, {} rounds",
        args.images, args.latency_ms, args.rounds
    );
    let mut base_runs = Vec::new();
    let mut rust_runs = Vec::new();
    for round in 1..=args.rounds {
        let options = || EmulatorOptions {
            assets: args.images,
            latency_ms: args.latency_ms,
            ..Default::default()
        };
        let emu = EmulatorProcess::start(ctx, options()).await?;
        let base = run_baseline(ctx, &emu, threads).await?;
        emu.stop().await;
        if base.report.errors > 0 || base.report.images != args.images as u64 {
            bail!(
                "the baseline OCR'd {} images with {} errors, for {}",
                base.report.images,
                base.report.errors,
                args.images
            );
        }
        println!(
            "  round {round}: baseline {:.1} s wall, {:.2} s CPU",
            base.report.wall_s, base.report.cpu_s
        );
        let emu = EmulatorProcess::start(ctx, options()).await?;
        let run = run_pipeline(
            ctx,
            &emu,
            PipelineOptions {
                invocations,
                ocr_method: "explicit",
                max_drain: Duration::from_secs(1800),
                records: None,
            },
        )
        .await?;
        emu.stop().await;
        println!(
            "  round {round}: pipeline {:.1} s wall, {:.2} s CPU",
            run.wall_s, run.cpu_s
        );
        if run.listed != args.images as u64 || run.dlq != 0 || run.left != 0 {
            bail!(
                "the pipeline listed {} of {} images and left {} in the DLQ, {} queued",
                run.listed,
                args.images,
                run.dlq,
                run.left
            );
        }
        let differ = differences(&base.items, &run.items);
        if differ > 0 || run.items.len() != args.images || base.items.len() != args.images {
            bail!(
                "the two runs disagree: {differ} ids differ; {} and {} items for {} images",
                base.items.len(),
                run.items.len(),
                args.images
            );
        }
        base_runs.push(base);
        rust_runs.push(run);
    }
    let images = args.images as u64;
    let bw = median(base_runs.iter().map(|r| r.report.wall_s).collect());
    let bc = median(base_runs.iter().map(|r| r.report.cpu_s).collect());
    let rw = median(rust_runs.iter().map(|r| r.wall_s).collect());
    let rc = median(rust_runs.iter().map(|r| r.cpu_s).collect());
    let bm = median(base_runs.iter().map(|r| r.moto_cpu_s).collect());
    let rm = median(rust_runs.iter().map(|r| r.moto_cpu_s).collect());
    report.section(
        "1. Side by side with the blog-style baseline",
        &format!(
            "The same {images} generated images, emulator answering every call in {} ms, same moto, \
             {} rounds each (medians). Baseline: `infra/bench/baseline.py`, a Python thread pool of \
             {threads} ({}) calling the Admin API update with `ocr=adv_ocr` and one `put_item` per \
             image. Pipeline: the lister, then {invocations} worker invocations at once with {records} \
             records each in flight, through SQS, with the local event-source loop. CPU is user + \
             system time of the process doing the work (the pipeline's includes the event-source \
             loop's SQS receives and deletes, which Lambda does for you). moto's CPU is the local \
             AWS's work for the run: on a two-core machine it competes with the rest, so the \
             pipeline's extra requests (a claim per image, the queue) show in its wall time here \
             more than they would on AWS. Both tables hold the same statuses and texts \
             (checked).",
            args.latency_ms,
            args.rounds,
            "the pipeline's records in flight",
        ),
    );
    let mut t = Table::new(&[
        "",
        "wall s",
        "images/s",
        "CPU s per 1,000 images",
        "moto CPU s per 1,000 images",
        "Cloudinary calls per image",
        "AWS requests per image",
        "paid OCR per image",
    ]);
    let per_image = |n: u64| n as f64 / images as f64;
    let mut row =
        |name: &str, wall: f64, cpu: f64, moto: f64, aws: &BTreeMap<String, u64>, e: &Stats| {
            t.row(vec![
                name.into(),
                f1(wall),
                f1(images as f64 / wall),
                f2(per_1000(cpu, images)),
                f2(per_1000(moto, images)),
                f3(per_image(e.admin_calls + e.explicit_calls)),
                f2(per_image(aws.values().sum())),
                f3(per_image(e.ocr_billed)),
            ])
        };
    let (b, r) = (
        &base_runs[base_runs.len() - 1],
        &rust_runs[rust_runs.len() - 1],
    );
    row("baseline (Python)", bw, bc, bm, &b.aws, &b.emulator);
    row("pipeline (Rust)", rw, rc, rm, &r.aws, &r.emulator);
    t.row(vec![
        "ratio pipeline / baseline".into(),
        f2(rw / bw),
        f2(bw / rw),
        f2(rc / bc),
        f2(rm / bm),
        String::new(),
        String::new(),
        String::new(),
    ]);
    report.table(&t);
    report.para(&format!(
        "Per round (baseline / pipeline): wall {}; CPU {}.",
        base_runs
            .iter()
            .zip(&rust_runs)
            .map(|(b, r)| format!("{:.1} / {:.1} s", b.report.wall_s, r.wall_s))
            .collect::<Vec<_>>()
            .join(", "),
        base_runs
            .iter()
            .zip(&rust_runs)
            .map(|(b, r)| format!("{:.2} / {:.2} s", b.report.cpu_s, r.cpu_s))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    let last = rust_runs.pop().context("at least one round")?;
    Ok(last)
}

/// 2. The Admin quota, scaled down, over several windows.
async fn quota(ctx: &Ctx, args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let window = Duration::from_secs(args.quota_window_secs);
    let capacity = args.quota_limit * args.quota_windows;
    let invocations = 8;
    println!(
        "2. quota: {} Admin calls per {} s, {} windows, {invocations} invocations",
        args.quota_limit, args.quota_window_secs, args.quota_windows
    );
    let emu = EmulatorProcess::start(
        ctx,
        EmulatorOptions {
            assets: (capacity * 2) as usize,
            latency_ms: 20,
            admin_limit: Some(args.quota_limit),
            admin_window_secs: Some(args.quota_window_secs),
        },
    )
    .await?;
    let run = run_pipeline(
        ctx,
        &emu,
        PipelineOptions {
            invocations,
            ocr_method: "update",
            max_drain: window * args.quota_windows as u32 + window / 2,
            records: None,
        },
    )
    .await?;
    emu.stop().await;
    let s = &run.emulator;
    let window_ms = window.as_millis() as u64;
    let share = quota_share(&s.windows, args.quota_limit, window_ms).unwrap_or(0.0);
    let steady = quota_share(
        s.windows.get(1..).unwrap_or(&[]),
        args.quota_limit,
        window_ms,
    );
    report.section(
        "2. Quota use",
        &format!(
            "`OCR_METHOD=update` (the OCR calls count against the Admin quota, as the blog post's \
             did), the emulator allowing {} Admin API calls per {} s window (the hourly quota, \
             scaled down), {} twice as many images as the run can OCR, {invocations} worker \
             invocations, 20 ms per call, run for {} windows. The share is calls accepted over the \
             limit times the time the ended windows span (a pause after a reset counts as unused); \
             the first window includes start-up and listing.",
            args.quota_limit, args.quota_window_secs, "with", args.quota_windows
        ),
    );
    let mut t = Table::new(&[
        "windows ended",
        "share of the limit used",
        "after the first window",
        "HTTP 420 answers",
        "messages deferred",
        "in the DLQ",
        "images stored",
        "paid OCR per stored image",
    ]);
    t.row(vec![
        s.windows.len().to_string(),
        format!("{:.1} %", share * 100.0),
        steady.map_or("n/a".into(), |v| format!("{:.1} %", v * 100.0)),
        s.rate_limited.to_string(),
        run.deferred.to_string(),
        run.dlq.to_string(),
        run.stored.to_string(),
        f3(s.ocr_billed as f64 / run.stored.max(1) as f64),
    ]);
    report.table(&t);
    let sqs = by_service(&run.aws).get("sqs").copied().unwrap_or(0);
    report.para(&format!(
        "Calls accepted per window: {}. Deferring costs SQS requests: {} SQS requests in all for \
         {} stored images ({:.1} per image), {} messages still queued for later windows; \
         deliveries skipped as duplicates {}, retried {}, dead-lettered {}.",
        s.windows
            .iter()
            .map(|w| w.used.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        sqs,
        run.stored,
        sqs as f64 / run.stored.max(1) as f64,
        run.left,
        run.skipped,
        run.retried,
        run.dead_lettered,
    ));
    Ok(())
}

/// 3. Start-up time and memory of the release bootstraps; returns worker log bytes per image.
async fn cold_start(ctx: &Ctx, args: &Args, report: &mut Report) -> anyhow::Result<f64> {
    println!("3. cold start: {} runs of each bootstrap", args.cold_runs);
    let runs = args.cold_runs.max(1);
    let emu = EmulatorProcess::start(
        ctx,
        EmulatorOptions {
            assets: 500,
            ..Default::default()
        },
    )
    .await?;
    let assets: Vec<String> = {
        let listed: serde_json::Value = ctx
            .http
            .get(format!(
                "{}/v1_1/bench/resources/image/upload?max_results=500",
                emu.base_url
            ))
            .basic_auth(
                credential(&emu.cloudinary_url, true),
                Some(credential(&emu.cloudinary_url, false)),
            )
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        listed["resources"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["public_id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let sam = ctx.root.join(".aws-sam");
    let qemu_sysroot = Path::new("/usr/aarch64-linux-gnu");
    let shipped_runs = qemu_sysroot.join("lib/ld-linux-aarch64.so.1").exists()
        && command_output("qemu-aarch64-static", &["--version"]) != "unknown";
    let mut t = Table::new(&[
        "bootstrap",
        "build",
        "exec to first poll (median ms)",
        "range ms",
        "peak RSS after one invocation (median MiB)",
        "binary bytes",
        "zip bytes",
    ]);
    let mut log_bytes_per_image = Vec::new();
    for function in ["worker", "lister"] {
        let resource = if function == "worker" {
            "WorkerFunction"
        } else {
            "ListerFunction"
        };
        let shipped = sam.join("build").join(resource).join("bootstrap");
        let builds: Vec<(&str, PathBuf)> = [
            ("host release", ctx.bin_dir.join(function)),
            ("arm64 (shipped), under qemu", shipped.clone()),
        ]
        .into_iter()
        .filter(|(name, p)| p.exists() && (name.starts_with("host") || shipped_runs))
        .collect();
        for (build, path) in builds {
            let mut inits = Vec::new();
            let mut rss = Vec::new();
            for i in 0..runs {
                let stack = ctx.stack("cold").await?;
                let event = if function == "worker" {
                    let ids: Vec<String> = assets.iter().skip(i * 10).take(10).cloned().collect();
                    worker_event(ctx, &stack, &ids).await?
                } else {
                    include_str!("../../../../functions/lister/tests/fixtures/scheduled_event.json")
                        .to_string()
                };
                let mut env = function_env(&stack, &emu);
                env.insert("AWS_ENDPOINT_URL", ctx.endpoint.clone());
                let env: Vec<(String, String)> =
                    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                let command = if build.starts_with("host") {
                    tokio::process::Command::new(&path)
                } else {
                    let mut c = tokio::process::Command::new("qemu-aarch64-static");
                    c.arg("-L").arg(qemu_sysroot).arg(&path);
                    c
                };
                let run = invoke_bootstrap(command, function, &env, event, Duration::from_secs(60))
                    .await?;
                match &run.answer {
                    Some(Ok(_)) => {}
                    other => bail!(
                        "the {function} bootstrap ({build}) did not answer: {other:?}\n{}",
                        run.output
                    ),
                }
                inits.push(run.init.as_secs_f64() * 1000.0);
                if let Some(kib) = run.peak_rss_kib {
                    rss.push(kib as f64 / 1024.0);
                }
                if function == "worker" && build.starts_with("host") {
                    log_bytes_per_image.push(run.output.len() as f64 / 10.0);
                }
            }
            let (lo, hi) = inits
                .iter()
                .fold((f64::MAX, 0f64), |(l, h), v| (l.min(*v), h.max(*v)));
            let is_host = build.starts_with("host");
            let size =
                |p: &Path| std::fs::metadata(p).map_or("not built".into(), |m| m.len().to_string());
            t.row(vec![
                function.into(),
                build.into(),
                f1(median(inits)),
                format!("{lo:.1}–{hi:.1}"),
                if is_host && !rss.is_empty() {
                    f1(median(rss))
                } else {
                    "n/a (qemu's own)".into()
                },
                if is_host { size(&path) } else { size(&shipped) },
                if is_host {
                    String::new()
                } else {
                    size(&sam.join(format!("{resource}.zip")))
                },
            ]);
        }
    }
    emu.stop().await;
    report.section(
        "3. Cold start and footprint",
        &format!(
            "Each bootstrap started {runs} times by a minimal Lambda Runtime API served locally \
             (`infra/local/src/runtime_api.rs`), answering one real event (worker: 10 SQS records \
             of new images; lister: a scheduled event over 500 images). Start-up is exec to the \
             first poll of the Runtime API (Lambda's init phase), peak RSS is `VmHWM` after the \
             answer. The arm64 rows run the artefact `sam build` makes under qemu's user-mode \
             emulation: their times are an emulator's, not a Graviton's, and their memory is \
             qemu's, so it is not shown. Sizes are the shipped arm64 artefacts."
        ),
    );
    report.table(&t);
    let logs = median(log_bytes_per_image);
    report.para(&format!(
        "The worker wrote {logs:.0} bytes of logs per image (JSON lines and the EMF metrics \
         line, at the default `info` level), which the cost model counts as CloudWatch Logs \
         ingestion."
    ));
    Ok(logs)
}

/// The key (`true`) or secret of a `cloudinary://KEY:SECRET@CLOUD` URL.
fn credential(url: &str, key: bool) -> String {
    let rest = url.trim_start_matches("cloudinary://");
    let (creds, _) = rest.split_once('@').unwrap_or((rest, ""));
    let (k, s) = creds.split_once(':').unwrap_or((creds, ""));
    if key { k } else { s }.to_string()
}

/// A real SQS event for these images: sent to the stack's queue and received back.
async fn worker_event(ctx: &Ctx, stack: &LocalStack, ids: &[String]) -> anyhow::Result<String> {
    let queue = shared::queue::SqsQueue::new(ctx.sqs.clone(), stack.work_queue_url.clone());
    let bodies: Vec<String> = ids
        .iter()
        .map(|id| WorkMessage::new(id.clone(), "image", "upload").to_body())
        .collect();
    queue.send_batch(&bodies).await?;
    let mut messages = Vec::new();
    while messages.len() < ids.len() {
        let got = ctx
            .sqs
            .receive_message()
            .queue_url(&stack.work_queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await?
            .messages
            .unwrap_or_default();
        messages.extend(got);
    }
    let event = local_stack::runner::sqs_event(&messages, &stack.work_queue_arn);
    Ok(serde_json::to_string(&event)?)
}

/// 4. Requests per image and the modelled AWS cost per million images.
fn cost(
    ctx: &Ctx,
    args: &Args,
    run: &PipelineRun,
    log_bytes_per_image: f64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let images = run.stored.max(1) as f64;
    let worker_mb = ctx
        .template
        .memory_mb("WorkerFunction")
        .map_err(anyhow::Error::msg)?;
    let lister_mb = ctx
        .template
        .memory_mb("ListerFunction")
        .map_err(anyhow::Error::msg)?;
    let aws = &run.aws;
    let services = by_service(aws);
    let writes = sum_matching(
        aws,
        &[
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
        ],
    );
    let sizes: Vec<usize> = run.items.values().map(item_size).collect();
    let result_units: u64 = sizes.iter().map(|s| write_units(*s)).sum();
    // Every write but the final result write of each item is a small one (claims, releases,
    // the lister's checkpoint): 1 unit each.
    let write_units_total = writes.saturating_sub(run.items.len() as u64) + result_units;
    // Strongly consistent reads of items under 4 KB: 1 unit per key (a missing key too).
    let read_units_total = run.records + sum_matching(aws, &["dynamodb:GetItem"]);
    let per = PerImage {
        lambda_invocations: (run.invocations + run.lister_runs) as f64 / images,
        lambda_gb_seconds: (run.billed_ms as f64 / 1000.0 * worker_mb as f64 / 1024.0
            + run.lister_ms as f64 / 1000.0 * lister_mb as f64 / 1024.0)
            / images,
        sqs_requests: services.get("sqs").copied().unwrap_or(0) as f64 / images,
        write_units: write_units_total as f64 / images,
        read_units: read_units_total as f64 / images,
        log_bytes: log_bytes_per_image,
    };
    let lines = cost_per_million(&per, &PRICES);
    let total: f64 = lines.iter().map(|l| l.dollars_per_million).sum();
    report.section(
        "4. Requests per image and modelled AWS cost",
        &format!(
            "From the pipeline's last round of scenario 1 ({} images, `OCR_METHOD=explicit`, \
             emulator answering in {} ms). AWS requests are counted by moto per operation \
             (`infra/scripts/moto_server.py`), Cloudinary calls by the emulator.",
            run.stored, args.latency_ms
        ),
    );
    let mut t = Table::new(&["request", "count", "per image"]);
    for (op, n) in aws {
        t.row(vec![op.clone(), n.to_string(), f3(*n as f64 / images)]);
    }
    let e = &run.emulator;
    for (name, n) in [
        ("cloudinary: explicit (OCR, Upload API)", e.explicit_calls),
        (
            "cloudinary: Admin API (listing, OCR updates)",
            e.admin_calls,
        ),
        ("cloudinary: OCR runs billed", e.ocr_billed),
    ] {
        t.row(vec![name.into(), n.to_string(), f3(n as f64 / images)]);
    }
    report.table(&t);
    let mean_size = sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64;
    report.para(&format!(
        "Stored items average {mean_size:.0} bytes (DynamoDB's item size), largest {} bytes. \
         Lambda duration is the sum of the worker's invocations, each rounded up to 1 ms, at \
         {worker_mb} MB, plus the lister's {:.1} s at {lister_mb} MB; it scales with Cloudinary's \
         answer time ({} ms here), so with OCR taking about 1 s per image the duration line is \
         about {:.0} times larger.",
        sizes.iter().max().copied().unwrap_or(0),
        run.lister_ms as f64 / 1000.0,
        args.latency_ms,
        1000.0 / args.latency_ms.max(1) as f64,
    ));
    let mut c = Table::new(&[
        "cost item",
        "units per million images",
        "unit",
        "USD per million images",
    ]);
    for l in &lines {
        c.row(vec![
            l.item.into(),
            if l.units_per_million < 10.0 {
                f2(l.units_per_million)
            } else {
                format!("{:.0}", l.units_per_million)
            },
            l.unit.into(),
            format!("{:.3}", l.dollars_per_million),
        ]);
    }
    c.row(vec![
        "**total**".into(),
        String::new(),
        String::new(),
        format!("**{total:.2}**"),
    ]);
    report.table(&c);
    let biggest = lines
        .iter()
        .max_by(|a, b| a.dollars_per_million.total_cmp(&b.dollars_per_million))
        .map(|l| l.item)
        .unwrap_or("none");
    report.para(&format!(
        "Modelled AWS cost: **${total:.2} per million images**; the biggest item is {biggest}. \
         Prices: Lambda arm64 ${}/GB-s and ${}/million requests, SQS ${}/million requests, \
         DynamoDB on-demand ${}/million write units and ${}/million read units, CloudWatch Logs \
         ${}/GB ingested; {PRICES_AS_OF}. Not included: the Cloudinary OCR add-on (billed by \
         Cloudinary per image: the pipeline paid {:.3} OCR runs per image), Secrets Manager \
         (one call per cold start), DynamoDB storage ($0.25/GB-month: about {:.2} GB per million \
         images) and the event source's idle polling.",
        PRICES.lambda_gb_second_arm64,
        PRICES.lambda_per_million_requests,
        PRICES.sqs_per_million_requests,
        PRICES.dynamodb_per_million_write_units,
        PRICES.dynamodb_per_million_read_units,
        PRICES.logs_per_gb_ingested,
        e.ocr_billed as f64 / images,
        mean_size * 1e6 / 1e9,
    ));
    Ok(())
}

/// 5. Lister throughput over a large account.
async fn lister_throughput(ctx: &Ctx, args: &Args, report: &mut Report) -> anyhow::Result<()> {
    println!("5. lister: {} assets", args.lister_assets);
    let emu = EmulatorProcess::start(
        ctx,
        EmulatorOptions {
            assets: args.lister_assets,
            ..Default::default()
        },
    )
    .await?;
    let stack = ctx.stack("lister").await?;
    let overrides = function_env(&stack, &emu);
    let env = Env(|name: &str| overrides.get(name).cloned());
    let lister = lister::build(&env.lister(None)?, &ctx.sdk)?;
    ctx.aws_requests(true).await?;
    let (wall0, cpu0) = (Instant::now(), cpu_seconds());
    let ListerPass {
        listed,
        enqueued,
        runs,
    } = list_everything(&lister).await?;
    let (wall, cpu) = (wall0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    let aws = ctx.aws_requests(false).await?;
    let e = emu.stats().await?;
    emu.stop().await;
    let depth = shared::queue::queue_depth(&ctx.sqs, &stack.work_queue_url).await?;
    if enqueued != args.lister_assets as u64 || depth.total() != enqueued {
        bail!(
            "the lister enqueued {enqueued} of {} assets; the queue holds {}",
            args.lister_assets,
            depth.total()
        );
    }
    let per_500 = |n: u64| n as f64 * 500.0 / listed.max(1) as f64;
    report.section(
        "5. Lister throughput",
        &format!(
            "One pass over {} assets (emulator without added latency, 500 per page), enqueued to \
             moto's SQS and checked there; {runs} lister invocation(s).",
            args.lister_assets
        ),
    );
    let mut t = Table::new(&[
        "assets listed",
        "wall s",
        "assets/s",
        "CPU s per 1,000 assets",
        "SQS requests per 500 assets",
        "DynamoDB requests per 500 assets",
        "Cloudinary calls per 500 assets",
    ]);
    let services = by_service(&aws);
    t.row(vec![
        listed.to_string(),
        f1(wall),
        format!("{:.0}", listed as f64 / wall),
        f3(per_1000(cpu, listed)),
        f1(per_500(services.get("sqs").copied().unwrap_or(0))),
        f1(per_500(services.get("dynamodb").copied().unwrap_or(0))),
        f1(per_500(e.list_calls + e.search_calls)),
    ]);
    report.table(&t);
    report.para(&format!(
        "SQS requests by operation: {}. Each page is listed, sent in 50 `SendMessageBatch` \
         calls (8 at a time), then checkpointed; the pace here is moto's answering those calls.",
        aws.iter()
            .filter(|(k, _)| k.starts_with("sqs:"))
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}

/// 6. Worker throughput against concurrent invocations.
async fn scaling(ctx: &Ctx, args: &Args, report: &mut Report) -> anyhow::Result<()> {
    println!("6. scaling: {:?} invocations", args.scaling);
    let records = shared::config::DEFAULT_WORKER_CONCURRENCY;
    let mut t = Table::new(&[
        "invocations",
        "images",
        "drain s",
        "images/s",
        "speed-up over 1",
        "ideal images/s",
        "of ideal",
        "worker GB-s per image",
        "moto busy (of one core)",
    ]);
    let memory_gb = ctx
        .template
        .memory_mb("WorkerFunction")
        .map_err(anyhow::Error::msg)? as f64
        / 1024.0;
    let mut first = None;
    // The configured steps, then the narrowest one again with fewer records in flight than a
    // batch holds (8 of 10), to show what that costs.
    let narrowest = args.scaling.iter().copied().min().unwrap_or(1);
    let steps = args
        .scaling
        .iter()
        .map(|&c| (c, None))
        .chain((records == 10).then_some((narrowest, Some(8))));
    for (c, records_override) in steps {
        let images = c * args.scaling_images;
        let emu = EmulatorProcess::start(
            ctx,
            EmulatorOptions {
                assets: images,
                latency_ms: args.scaling_latency_ms,
                ..Default::default()
            },
        )
        .await?;
        let run = run_pipeline(
            ctx,
            &emu,
            PipelineOptions {
                invocations: c,
                ocr_method: "explicit",
                max_drain: Duration::from_secs(1800),
                records: records_override,
            },
        )
        .await?;
        emu.stop().await;
        if run.stored != images as u64 || run.dlq != 0 {
            bail!(
                "scaling at {c}: {} of {images} stored, {} in the DLQ",
                run.stored,
                run.dlq
            );
        }
        let rate = images as f64 / run.drain_s;
        let base = *first.get_or_insert(rate);
        let in_flight = records_override.unwrap_or(records);
        // A batch of `batch` records takes ceil(batch / in_flight) rounds of Cloudinary calls.
        let batch = ctx.settings.batch_size as usize;
        let rounds = batch.div_ceil(in_flight.max(1));
        let ideal =
            (c * batch) as f64 / rounds as f64 * 1000.0 / args.scaling_latency_ms.max(1) as f64;
        let gb_s = run.billed_ms as f64 / 1000.0 * memory_gb / images as f64;
        println!("  {c} invocations, {in_flight} records each: {rate:.1} images/s");
        t.row(vec![
            match records_override {
                Some(r) => format!("{c} ({r} records in flight)"),
                None => c.to_string(),
            },
            images.to_string(),
            f1(run.drain_s),
            f1(rate),
            f2(rate / base),
            format!("{ideal:.0}"),
            format!("{:.0} %", rate / ideal * 100.0),
            format!("{:.4}", gb_s),
            format!("{:.0} %", run.moto_cpu_s / run.wall_s.max(0.001) * 100.0),
        ]);
    }
    report.section(
        "6. Scaling with concurrency",
        &format!(
            "Worker throughput (listing excluded) at each number of concurrent invocations, \
             {} images per invocation, every Cloudinary call answered in {} ms, {records} records \
             in flight per invocation, `OCR_METHOD=explicit` (not counted against the Admin \
             quota). Ideal is invocations × a batch of {} records / (Cloudinary rounds per batch × \
             {} ms); the drain time runs to the end of the last invocation. Throughput grows \
             with invocations until something else binds: here moto, a single Python process \
             (its busy share of one core is shown), on AWS the quota or Cloudinary. With \
             `OCR_METHOD=update` the quota binds: scenario 2 shows the rate it allows. The last \
             row runs with 8 records in flight (the earlier default), so that a batch of 10 \
             takes two rounds of Cloudinary calls.",
            args.scaling_images,
            args.scaling_latency_ms,
            ctx.settings.batch_size,
            args.scaling_latency_ms
        ),
    );
    report.table(&t);
    Ok(())
}
