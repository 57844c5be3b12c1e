use super::*;

/// What scenario 5 measured per 500 assets listed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListerFigures {
    pub(crate) sqs_per_500: f64,
    pub(crate) dynamodb_per_500: f64,
    pub(crate) cloudinary_per_500: f64,
}

/// 5. Lister throughput over a large account.
pub(crate) async fn lister_throughput(
    ctx: &Ctx,
    args: &Args,
    report: &mut Report,
) -> anyhow::Result<ListerFigures> {
    println!("5. lister: {} assets", args.lister_assets);
    let emu = EmulatorProcess::start(
        ctx,
        EmulatorOptions {
            assets: args.lister_assets,
            ..Default::default()
        },
    )
    .await?;
    let scenario = ctx.scenario("lister", &emu).await?;
    let lister = scenario.lister()?;
    ctx.aws_requests(true).await?;
    let (wall0, cpu0) = (Instant::now(), cpu_seconds());
    let ListedPass {
        listed,
        enqueued,
        runs,
        ..
    } = scenario
        .list_until_done(&lister, OnRateLimit::Stop, 100, |_, _| {})
        .await?;
    let (wall, cpu) = (wall0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    let aws = ctx.aws_requests(false).await?;
    let e = emu.stats().await?;
    emu.stop().await;
    let depth = shared::queue::queue_depth(&ctx.sqs, &scenario.stack.work_queue_url).await?;
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
    let figures = ListerFigures {
        sqs_per_500: per_500(services.get("sqs").copied().unwrap_or(0)),
        dynamodb_per_500: per_500(services.get("dynamodb").copied().unwrap_or(0)),
        cloudinary_per_500: per_500(e.list_calls + e.search_calls),
    };
    t.row(vec![
        listed.to_string(),
        f1(wall),
        format!("{:.0}", listed as f64 / wall),
        f3(per_1000(cpu, listed)),
        f1(figures.sqs_per_500),
        f1(figures.dynamodb_per_500),
        f1(figures.cloudinary_per_500),
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
    Ok(figures)
}
