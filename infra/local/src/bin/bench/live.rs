use super::*;

/// 10. Live: the time from an upload to its text in the table, through the notifier.
pub(crate) async fn live_latency(
    ctx: &Ctx,
    args: &Args,
    report: &mut Report,
) -> anyhow::Result<()> {
    use local_stack::live::{Change, run, serve_and_register};
    let n = args.live_uploads;
    println!(
        "10. live: {n} uploads at {}/s, {} invocations",
        args.live_rate, args.live_invocations
    );
    let mut config = cloudinary_emulator::EmulatorConfig::new("bench-live");
    config.latency = Duration::from_millis(args.latency_ms);
    let emu = cloudinary_emulator::Emulator::start(config, Vec::new(), 0).await?;
    let mut scenario = Scenario::provision(&ctx.sdk, "bench-live", ctx.settings.clone()).await?;
    scenario.use_cloudinary(emu.cloudinary_url(), emu.base_url());
    scenario.set("WORKER_INSTANCES", args.live_invocations.to_string());
    let pool = scenario.workers(args.live_invocations)?;
    let live = serve_and_register(&scenario, &emu).await?;
    let changes = (0..n)
        .map(|i| Change::Upload {
            key: format!("live/bench-{i:05}"),
            text: format!("LIVE {i}\n"),
            overwrite: false,
        })
        .collect();
    let pace = Duration::from_secs_f64(1.0 / args.live_rate.max(0.001));
    let outcome = run(
        &scenario,
        &emu,
        &pool,
        args.live_invocations,
        changes,
        pace,
        Duration::from_secs(120),
    )
    .await?;
    // From the upload's answer to the text's write (the worker's `ocrAtMs`), as the table
    // records it; and as seen by a reader polling the table.
    let items = scenario.items().await?;
    let mut written = Vec::new();
    for (r, made) in outcome.reflected.iter().zip(&outcome.made_ms) {
        let Change::Upload { key, .. } = &r.change else {
            continue;
        };
        let at = items
            .get(key)
            .and_then(|i| i.get("ocrAtMs"))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let (Some(at), Some(made)) = (at, made) {
            written.push(at.saturating_sub(*made) as f64 / 1000.0);
        }
    }
    let seen: Vec<f64> = outcome
        .reflected
        .iter()
        .filter_map(|r| r.after.map(|d| d.as_secs_f64()))
        .collect();
    let missing = n - seen.len();
    let stats = emu.stats();
    let window = ctx
        .template
        .parameter_default("MaximumBatchingWindowInSeconds")
        .unwrap_or(0.0);
    drop(live);
    scenario.teardown().await?;
    if missing > 0 || stats.ocr_billed != n as u64 {
        bail!(
            "live: {missing} of {n} uploads not in the table within two minutes, {} OCRs paid",
            stats.ocr_billed
        );
    }
    let p99 = percentile(written.clone(), 99.0);
    let mut t = Table::new(&[
        "measured",
        "uploads",
        "p50 s",
        "p90 s",
        "p99 s",
        "max s",
        "p99 + batching window s",
    ]);
    for (what, values) in [
        ("upload answered → text written", &written),
        ("upload answered → seen by a reader", &seen),
    ] {
        t.row(vec![
            what.to_string(),
            values.len().to_string(),
            f2(percentile(values.clone(), 50.0)),
            f2(percentile(values.clone(), 90.0)),
            f2(percentile(values.clone(), 99.0)),
            f2(percentile(values.clone(), 100.0)),
            f2(percentile(values.clone(), 99.0) + window),
        ]);
    }
    println!("  p99 {p99:.2} s (+ a {window:.0} s batching window in Lambda)");
    report.section(
        "10. Live updates: from an upload to its text",
        &format!(
            "{n} new images uploaded through the Upload API at a steady {}/s; the emulator \
             notifies the notifier (served locally with the Lambda's handler), which enqueues \
             each; {} worker invocations drain the queue; every Cloudinary call answered in {} \
             ms. Times run from the upload's answer to the worker's write of the text \
             (`ocrAtMs`), and to a reader polling the table every 50 ms. The local event \
             source receives as soon as a message is visible; Lambda's waits up to \
             `MaximumBatchingWindowInSeconds` ({window:.0} s by default) to fill a batch, so \
             the last column adds it as the bound on AWS. Goal: p99 ≤ 60 s. {} OCRs paid for \
             {n} uploads; {} notifications sent, {} answered 2xx.",
            args.live_rate,
            args.live_invocations,
            args.latency_ms,
            stats.ocr_billed,
            stats.notifications_sent,
            stats.notifications_delivered,
        ),
    );
    report.table(&t);
    Ok(())
}
