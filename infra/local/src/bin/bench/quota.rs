use super::*;

/// 2. The Admin quota, scaled down, over several windows.
pub(crate) async fn quota(ctx: &Ctx, args: &Args, report: &mut Report) -> anyhow::Result<()> {
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
