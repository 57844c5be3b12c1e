use super::*;
use local_stack::runtime_api::invoke_bootstrap_events;

/// The public ids of the emulator's first `n` upload images, as its Admin API lists them.
pub(crate) async fn emulator_ids(
    ctx: &Ctx,
    emu: &EmulatorProcess,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    while ids.len() < n {
        let mut request = ctx
            .http
            .get(format!(
                "{}/v1_1/bench/resources/image/upload",
                emu.base_url
            ))
            .query(&[("max_results", "500")])
            .basic_auth(
                credential(&emu.cloudinary_url, true),
                Some(credential(&emu.cloudinary_url, false)),
            );
        if let Some(c) = &cursor {
            request = request.query(&[("next_cursor", c.as_str())]);
        }
        let page: serde_json::Value = request.send().await?.error_for_status()?.json().await?;
        ids.extend(
            page["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["public_id"].as_str().map(str::to_string)),
        );
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    ids.truncate(n);
    Ok(ids)
}

/// One warm worker bootstrap over `batches` SQS events of 10 new images each: its CPU time.
async fn bootstrap_cpu(
    ctx: &Ctx,
    emu: &EmulatorProcess,
    ids: &[String],
) -> anyhow::Result<(Duration, usize)> {
    let stack = ctx.stack("cpu").await?;
    let mut events = Vec::new();
    for chunk in ids.chunks(10) {
        events.push(worker_event(ctx, &stack, chunk).await?);
    }
    let mut env = function_env(&stack, emu);
    env.insert("AWS_ENDPOINT_URL", ctx.endpoint.clone());
    let env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let run = invoke_bootstrap_events(
        tokio::process::Command::new(ctx.bin_dir.join("worker")),
        "worker",
        &env,
        events,
        Duration::from_secs(600),
    )
    .await?;
    for answer in &run.answers {
        match answer {
            Some(Ok(body)) if body.contains("\"batchItemFailures\":[]") => {}
            other => bail!(
                "the worker bootstrap did not process its batch: {other:?}\n{}",
                run.output
            ),
        }
    }
    let cpu = run.cpu.context("the bootstrap's CPU time")?;
    // Every image has its result: a batch that answered without storing would not count.
    let stored = local_stack::scan_items(&ctx.ddb, &stack.names.results_table)
        .await?
        .values()
        .filter(|item| {
            item.get("status")
                .and_then(|v| v.as_s().ok())
                .and_then(|s| shared::store::Status::parse(s))
                .is_some_and(shared::store::Status::is_complete)
        })
        .count();
    anyhow::ensure!(
        stored == ids.len(),
        "the worker bootstrap stored {stored} results for {} images",
        ids.len()
    );
    Ok((cpu, run.output.len()))
}

/// Scenario 9, the worker's own CPU per image: the shipped bootstrap (host release build) served
/// SQS events through the Runtime API, as Lambda runs it, without the local event-source loop;
/// beside it, in alternate rounds against the same emulator and moto, the Python baseline doing
/// the same images with as many in flight.
pub(crate) async fn worker_cpu(
    ctx: &Ctx,
    args: &Args,
    side: &SideBySide,
    report: &mut Report,
) -> anyhow::Result<()> {
    let images = args.images.max(20) / 10 * 10;
    let rounds = args.rounds.max(3);
    println!("9. the worker's own CPU: {images} images in one warm bootstrap, {rounds} rounds");
    let emu = EmulatorProcess::start(
        ctx,
        EmulatorOptions {
            assets: images + 10,
            ..Default::default()
        },
    )
    .await?;
    let ids = emulator_ids(ctx, &emu, images + 10).await?;
    anyhow::ensure!(
        ids.len() == images + 10,
        "the emulator listed {} ids",
        ids.len()
    );
    let (mut base, mut overall, mut marginal, mut log_bytes) = (vec![], vec![], vec![], 0);
    for round in 1..=rounds {
        // The baseline lists the account and OCRs every image in it, as many at once as the
        // worker has records in flight in an event of 10.
        let b = run_baseline(ctx, &emu, ctx.records_in_flight()).await?;
        anyhow::ensure!(
            b.report.errors == 0 && b.report.images as usize == images + 10,
            "the baseline did {} images with {} errors",
            b.report.images,
            b.report.errors
        );
        base.push(b.report.cpu_s / b.report.images as f64);
        // One batch alone (start-up and the first batch), then every batch: the difference is
        // what the batches after the first cost.
        let (one, _) = bootstrap_cpu(ctx, &emu, &ids[..10]).await?;
        let (all, bytes) = bootstrap_cpu(ctx, &emu, &ids[10..]).await?;
        log_bytes = bytes;
        overall.push(all.as_secs_f64() / images as f64);
        marginal.push(all.saturating_sub(one).as_secs_f64() / (images - 10) as f64);
        println!(
            "  round {round}: baseline {:.3} ms, worker {:.3} ms of CPU per image",
            base[round - 1] * 1000.0,
            overall[round - 1] * 1000.0
        );
    }
    emu.stop().await;
    let per_round = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{:.3}", x * 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rounds_line = format!(
        "Per round, ms of CPU per image: baseline {}; worker {}.",
        per_round(&base),
        per_round(&overall)
    );
    let (base, overall, marginal) = (median(base), median(overall), median(marginal));
    let pipeline = side.pipeline_cpu_s / args.images as f64;
    let side_base = side.baseline_cpu_s / args.images as f64;
    report.section(
        "9. The worker's own CPU",
        &format!(
            "The host release build of the worker bootstrap, served {} SQS events of 10 new \
             images each in one process through the local Runtime API (as a warm Lambda \
             instance), against the emulator without added latency and moto; CPU is the \
             process's user + system time from `/proc`. The baseline (`infra/bench/baseline.py`) \
             does the same images against the same servers with {} in flight, in alternate \
             rounds ({rounds}, medians). The worker's first row is every batch over the images; \
             the second leaves out start-up and the first batch (a run of one batch, \
             subtracted). For reference, scenario 1's figures at {} ms per call: there the \
             pipeline's CPU includes the local event-source loop (SQS receives and deletes), \
             which Lambda runs for you.",
            images / 10,
            ctx.records_in_flight(),
            args.latency_ms,
        ),
    );
    let mut t = Table::new(&[
        "process",
        "CPU ms per image",
        "of the baseline's",
        "log bytes per image",
    ]);
    let ms = |s: f64| format!("{:.3}", s * 1000.0);
    t.row(vec![
        "baseline (Python)".into(),
        ms(base),
        "1.00".into(),
        String::new(),
    ]);
    t.row(vec![
        format!("worker bootstrap, {images} images"),
        ms(overall),
        f2(overall / base),
        format!("{:.0}", log_bytes as f64 / images as f64),
    ]);
    t.row(vec![
        "worker bootstrap, each batch after the first".into(),
        ms(marginal),
        f2(marginal / base),
        String::new(),
    ]);
    t.row(vec![
        "scenario 1: baseline (Python)".into(),
        ms(side_base),
        String::new(),
        String::new(),
    ]);
    t.row(vec![
        "scenario 1: pipeline with the event-source loop".into(),
        ms(pipeline),
        f2(pipeline / side_base),
        String::new(),
    ]);
    report.table(&t);
    report.para(&rounds_line);
    report.para(&format!(
        "The worker alone uses {:.2}× the baseline's CPU per image. Lambda bills an \
         invocation's duration, which is its wait on Cloudinary (scenario 6), not this CPU.",
        overall / base
    ));
    Ok(())
}
