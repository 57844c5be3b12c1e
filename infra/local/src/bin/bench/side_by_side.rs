use super::*;

/// What scenario 1 measured: the pipeline's last round, and both sides' median CPU.
pub(crate) struct SideBySide {
    pub(crate) run: PipelineRun,
    /// CPU seconds of the baseline's process and of the pipeline's (medians over the rounds).
    pub(crate) baseline_cpu_s: f64,
    pub(crate) pipeline_cpu_s: f64,
}

/// 1. The Python baseline and the pipeline on the same corpus, emulator and moto.
pub(crate) async fn side_by_side(
    ctx: &Ctx,
    args: &Args,
    report: &mut Report,
) -> anyhow::Result<SideBySide> {
    let invocations = ctx.settings.worker_concurrency;
    let records = ctx.records_in_flight();
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
             records each in flight (one receive of the local event-source loop each), through \
             SQS. CPU is user + system time of the process doing the work (the pipeline's includes the event-source \
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
                f2(per_image(
                    aws.iter()
                        .filter(|(op, _)| op.as_str() != STATEMENTS)
                        .map(|(_, n)| n)
                        .sum(),
                )),
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
    Ok(SideBySide {
        run: last,
        baseline_cpu_s: bc,
        pipeline_cpu_s: rc,
    })
}
