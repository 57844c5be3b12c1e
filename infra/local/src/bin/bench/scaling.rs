use super::*;

/// 6. Worker throughput against concurrent invocations.
pub(crate) async fn scaling(ctx: &Ctx, args: &Args, report: &mut Report) -> anyhow::Result<()> {
    println!("6. scaling: {:?} invocations", args.scaling);
    let records = ctx.records_in_flight();
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
        let batch = ctx.local_batch();
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
             quota). Ideal is invocations × a batch of {} records (one receive of the local \
             event-source loop; Lambda's pollers gather up to the batch size, {}) / (Cloudinary \
             rounds per batch × {} ms); the drain time runs to the end of the last invocation. \
             Throughput grows with invocations until something else binds: here moto, a single \
             Python process (its busy share of one core is shown), on AWS the quota or \
             Cloudinary. With `OCR_METHOD=update` the quota binds: scenario 2 shows the rate it \
             allows.{}",
            args.scaling_images,
            args.scaling_latency_ms,
            ctx.local_batch(),
            ctx.settings.batch_size,
            args.scaling_latency_ms,
            if records == 10 {
                " The last row runs with 8 records in flight, so that a batch of 10 takes two \
                 rounds of Cloudinary calls."
            } else {
                ""
            },
        ),
    );
    report.table(&t);
    Ok(())
}
