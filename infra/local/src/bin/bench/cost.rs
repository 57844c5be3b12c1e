use super::*;

/// 4. Requests per image and the modelled AWS cost per million images.
pub(crate) fn cost(
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
            // Each statement of a batch is billed as the single write it is.
            STATEMENTS,
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
