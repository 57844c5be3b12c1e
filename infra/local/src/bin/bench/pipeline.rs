use super::*;

#[derive(Debug, Clone, Copy)]
pub(crate) struct PipelineOptions {
    pub(crate) invocations: usize,
    pub(crate) ocr_method: &'static str,
    pub(crate) max_drain: Duration,
    /// Records in flight per invocation (`WORKER_CONCURRENCY`); `None` for its default.
    pub(crate) records: Option<usize>,
}

pub(crate) struct PipelineRun {
    pub(crate) listed: u64,
    pub(crate) lister_runs: u64,
    pub(crate) lister_ms: u64,
    pub(crate) wall_s: f64,
    pub(crate) drain_s: f64,
    pub(crate) cpu_s: f64,
    /// CPU time moto spent meanwhile (the local AWS's work for this run).
    pub(crate) moto_cpu_s: f64,
    pub(crate) stored: u64,
    pub(crate) deferred: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) retried: u64,
    pub(crate) skipped: u64,
    pub(crate) invocations: u64,
    pub(crate) records: u64,
    /// Sum over worker invocations of their duration, each rounded up to a millisecond.
    pub(crate) billed_ms: u64,
    pub(crate) dlq: u64,
    pub(crate) left: u64,
    pub(crate) aws: BTreeMap<String, u64>,
    pub(crate) emulator: Stats,
    pub(crate) items: HashMap<String, HashMap<String, AttributeValue>>,
}

/// The functions' variables for a local stack and emulator.
pub(crate) fn function_env(
    stack: &LocalStack,
    emu: &EmulatorProcess,
) -> HashMap<&'static str, String> {
    let mut env = stack.function_env();
    env.insert("CLOUDINARY_URL", emu.cloudinary_url.clone());
    env.insert("CLOUDINARY_API_BASE", emu.base_url.clone());
    env
}

pub(crate) async fn run_pipeline(
    ctx: &Ctx,
    emu: &EmulatorProcess,
    o: PipelineOptions,
) -> anyhow::Result<PipelineRun> {
    let mut scenario = ctx.scenario("bench", emu).await?;
    scenario.set("OCR_METHOD", o.ocr_method);
    scenario.set("WORKER_INSTANCES", o.invocations.to_string());
    if let Some(records) = o.records {
        scenario.set("WORKER_CONCURRENCY", records.to_string());
    }
    let lister = scenario.lister()?;
    // One worker per concurrent invocation, as Lambda runs one instance per invocation in
    // flight: each has its own quota gate, as in production.
    let pool = scenario.workers(o.invocations)?;
    ctx.aws_requests(true).await?;

    let (wall0, cpu0, moto0) = (Instant::now(), cpu_seconds(), moto_cpu_seconds(ctx));
    let pass = scenario
        .list_until_done(&lister, OnRateLimit::Stop, 100, |_, _| {})
        .await?;
    let (listed, lister_runs) = (pass.listed, pass.runs);
    let lister_ms = wall0.elapsed().as_millis() as u64;

    let tally = Tally::default();
    let times = DrainTimes::default();
    let stats = DrainStats::default();
    let mapping = scenario.mapping(o.invocations, o.max_drain);
    let drain0 = Instant::now();
    with_progress(
        scenario.drain(&pool, &mapping, &stats, &tally, &times),
        Duration::from_secs(5),
        || {
            println!(
                "    … {:>5.0}s: {} stored, {} deferred, {} invocations",
                drain0.elapsed().as_secs_f64(),
                tally.stored(),
                tally.get("deferred"),
                stats.invocations.load(Ordering::Relaxed),
            )
        },
    )
    .await?;
    let last_end_ms = &times.last_end_ms;
    let billed_ms = &times.billed_ms;
    let drain_s = last_end_ms.load(Ordering::Relaxed) as f64 / 1000.0;
    let cpu_s = cpu_seconds() - cpu0;
    let moto_cpu_s = moto_cpu_seconds(ctx) - moto0;
    let wall_s = lister_ms as f64 / 1000.0 + drain_s;
    let aws = ctx.aws_requests(false).await?;
    let emulator = emu.stats().await?;
    let (left, dlq) = scenario.depths().await?;
    let items = scenario.items().await?;
    Ok(PipelineRun {
        listed,
        lister_runs,
        lister_ms,
        wall_s,
        drain_s,
        cpu_s,
        moto_cpu_s,
        stored: tally.stored(),
        deferred: tally.get("deferred"),
        dead_lettered: tally.get("dead_lettered"),
        retried: tally.get("retry"),
        skipped: tally.get("skipped"),
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
