//! `make sim`: the whole pipeline on a simulated account, in virtual time. Prints a line per
//! simulated hour of each run and the table; writes the table into BENCHMARKS.md.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use local_stack::sim::{self, FaultMix, Method, ReadBack, SimConfig, SimReport};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Simulates the pipeline over an account of millions of images, in virtual time"
)]
struct Args {
    /// Assets in the account.
    #[arg(long, default_value_t = 10_000_000)]
    assets: u64,
    /// Seed of every random draw (a run replays exactly from its seed).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// OCR methods of the main table.
    #[arg(long, value_delimiter = ',', default_value = "explicit,update")]
    method: Vec<Method>,
    /// Admin API quotas (calls an hour) of the main table.
    #[arg(long, value_delimiter = ',', default_value = "2000,500")]
    quota: Vec<u64>,
    /// Worker concurrency of the main table.
    #[arg(long, default_value_t = 50)]
    concurrency: u32,
    /// Worker concurrencies to sweep (`explicit`, the first quota); `--sweep` alone for none.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "2,10,25,35,100")]
    sweep: Vec<u32>,
    /// Worker concurrencies to sweep with `update` (the first quota); `--update-sweep` alone
    /// for none.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "2,10")]
    update_sweep: Vec<u32>,
    /// Batch sizes to sweep (`explicit`, the first quota, records in flight = batch size), for
    /// Lambda's GB-seconds per image; `--sweep` alone for none.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "10,25,100")]
    batch_sweep: Vec<usize>,
    /// The event source's batch size and the records a worker invocation has in flight.
    #[arg(long, default_value_t = shared::defaults::BATCH_SIZE as usize)]
    batch_size: usize,
    /// The event source's batching window, seconds.
    #[arg(long, default_value_t = 5)]
    batching_window: u64,
    /// How read-backs are made: each alone, or together through the read-back queue (with
    /// Cloudinary's answer of several assets carrying their OCR, or leaving it out).
    #[arg(long, value_enum, default_value_t = ReadBack::Together)]
    read_back: ReadBack,
    /// Median OCR answer time, milliseconds.
    #[arg(long, default_value_t = 1000)]
    ocr_ms: u64,
    /// Shares of OCR requests answered HTTP 500, timed out after billing, 429, pending.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.001,0.0002,0.005,0.001"
    )]
    faults: Vec<f64>,
    /// The same four shares for one more run (`explicit`, the first quota), a bad day's;
    /// `--heavy-faults` alone for none.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "0.01,0.002,0.005,0.02")]
    heavy_faults: Vec<f64>,
    /// A run stops after this many simulated days even if assets are left.
    #[arg(long, default_value_t = 30.0)]
    horizon_days: f64,
    /// The same for `update` runs, which the quota keeps going for months: their end is
    /// projected from the pace of their last simulated day.
    #[arg(long, default_value_t = 7.0)]
    update_horizon_days: f64,
    /// Runs at once (each on a thread of its own).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Where to write the table (a section of this file, kept by `make bench`); `-` for none.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = std::time::Instant::now();
    anyhow::ensure!(args.faults.len() == 4, "--faults takes four shares");
    anyhow::ensure!(
        args.heavy_faults.is_empty() || args.heavy_faults.len() == 4,
        "--heavy-faults takes four shares, or none"
    );
    anyhow::ensure!(args.assets > 0, "--assets must be above zero");
    let base = SimConfig {
        assets: args.assets,
        seed: args.seed,
        concurrency: args.concurrency,
        batch_size: args.batch_size,
        records_in_flight: args.batch_size,
        batching_window: Duration::from_secs(args.batching_window),
        ocr_median: Duration::from_millis(args.ocr_ms),
        faults: FaultMix {
            server_error: args.faults[0],
            timeout_after_billing: args.faults[1],
            too_many_requests: args.faults[2],
            pending: args.faults[3],
        },
        horizon: Duration::from_secs_f64(args.horizon_days * 86400.0),
        read_back: args.read_back,
        ..SimConfig::default()
    };
    let update_horizon = Duration::from_secs_f64(args.update_horizon_days * 86400.0);
    // `update` runs go on for months: they end at their own horizon.
    let run_of = |method: Method, quota: u64| SimConfig {
        method,
        quota_per_hour: quota,
        horizon: match method {
            Method::Explicit => base.horizon,
            Method::Update => update_horizon,
        },
        ..base.clone()
    };
    let mut main_runs = Vec::new();
    for method in &args.method {
        for quota in &args.quota {
            main_runs.push(run_of(*method, *quota));
        }
    }
    // The sweeps and the bad day vary one setting of a run at the first quota.
    let first_quota = args.quota.first().copied().unwrap_or(2000);
    let at_first_quota = |method: Method| run_of(method, first_quota);
    if let [
        server_error,
        timeout_after_billing,
        too_many_requests,
        pending,
    ] = args.heavy_faults[..]
    {
        main_runs.push(SimConfig {
            faults: FaultMix {
                server_error,
                timeout_after_billing,
                too_many_requests,
                pending,
            },
            ..at_first_quota(Method::Explicit)
        });
    }
    // Beside each `explicit` run with undocumented behaviours, the same run without them.
    let mut main_runs: Vec<SimConfig> = main_runs
        .into_iter()
        .flat_map(|c| {
            let twin =
                (c.method == Method::Explicit && c.has_undocumented()).then(|| c.documented_only());
            std::iter::once(c).chain(twin)
        })
        .collect();
    // And the baseline: each read-back made alone where it is met, as without a read-back queue.
    if base.read_back != ReadBack::Alone && args.method.contains(&Method::Explicit) {
        main_runs.push(SimConfig {
            read_back: ReadBack::Alone,
            ..at_first_quota(Method::Explicit)
        });
    }
    let concurrencies = |method: Method, values: &[u32]| -> Vec<SimConfig> {
        values
            .iter()
            .map(|c| SimConfig {
                concurrency: *c,
                ..at_first_quota(method)
            })
            .collect()
    };
    let sweep = concurrencies(Method::Explicit, &args.sweep);
    let update_sweep = concurrencies(Method::Update, &args.update_sweep);
    let batches: Vec<SimConfig> = args
        .batch_sweep
        .iter()
        .map(|b| SimConfig {
            batch_size: *b,
            records_in_flight: *b,
            ..at_first_quota(Method::Explicit)
        })
        .collect();
    let all: Vec<SimConfig> = main_runs
        .iter()
        .chain(&sweep)
        .chain(&update_sweep)
        .chain(&batches)
        .cloned()
        .collect();
    eprintln!(
        "simulating {} runs of {} assets (seed {}), {} at once",
        all.len(),
        args.assets,
        args.seed,
        args.jobs
    );
    let reports = run_all(&all, args.jobs.max(1));
    for r in &reports {
        println!("{}", r.details());
    }
    let (main_reports, rest) = reports.split_at(main_runs.len());
    let (sweep_reports, rest) = rest.split_at(sweep.len());
    let (update_reports, batch_reports) = rest.split_at(update_sweep.len());
    let with_main = |runs: &[SimReport], method: Method| {
        let mut all: Vec<SimReport> = runs.to_vec();
        all.extend(
            main_reports
                .iter()
                .filter(|r| {
                    r.config.method == method
                        && r.config.quota_per_hour == first_quota
                        && r.config.faults.describe() == base.faults.describe()
                        && r.config.read_back == base.read_back
                })
                .cloned(),
        );
        all.sort_by_key(|r| r.config.concurrency);
        all
    };
    let concurrency = with_main(sweep_reports, Method::Explicit);
    let update_concurrency = with_main(update_reports, Method::Update);
    let mut batch_rows = with_main(batch_reports, Method::Explicit);
    batch_rows.sort_by_key(|r| r.config.batch_size);
    let section = sim::report::section(
        &base,
        main_reports,
        &concurrency,
        &update_concurrency,
        &batch_rows,
    );
    let section = format!(
        "{}\n\nThis section: {}; {}; commit {}; {:.0} s.\n",
        section.trim_end(),
        httpdate::fmt_http_date(std::time::SystemTime::now()),
        local_stack::bench::machine(),
        local_stack::bench::command_output("git", &["describe", "--always", "--dirty"]),
        started.elapsed().as_secs_f64()
    );
    println!("{section}");
    if args.out != "-" {
        let path = PathBuf::from(&args.out);
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, sim::report::with_section(&old, &section))?;
        eprintln!("wrote the simulation's section of {}", path.display());
    }
    Ok(())
}

/// Runs every configuration, `jobs` at once, each on a thread of its own; reports in order.
fn run_all(configs: &[SimConfig], jobs: usize) -> Vec<SimReport> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![None; configs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(configs.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(config) = configs.get(i) else { break };
                    let label = format!(
                        "{} {}/h c{} b{}",
                        config.method.as_str(),
                        config.quota_per_hour,
                        config.concurrency,
                        config.batch_size
                    );
                    let report = sim::run(config, &mut |h| {
                        if h.hour.is_multiple_of(6) {
                            eprintln!(
                                "  [{label}] hour {:>4}: listed {:>10}, terminal {:>10}, queued {:>10}",
                                h.hour, h.listed, h.terminal, h.queued
                            );
                        }
                    });
                    eprintln!("{}", report.headline());
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(report);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every run reports"))
        .collect()
}
