use super::*;
use local_stack::sim::{self, FaultMix, Method, SimConfig, SimReport};

/// One figure measured both ways.
struct Pair {
    what: String,
    moto: f64,
    sim: f64,
    /// A difference this small agrees whatever its share (a couple of requests in the run).
    slack: f64,
}

/// Relative difference allowed between the moto-backed figures and the simulation's.
const TOLERANCE: f64 = 0.05;
/// Requests per image by which a pipeline figure may differ, whatever their share: one in a
/// hundred images.
const SLACK_PER_IMAGE: f64 = 0.01;

impl Pair {
    fn new(what: impl Into<String>, moto: f64, sim: f64) -> Self {
        Self {
            what: what.into(),
            moto,
            sim,
            slack: 0.0,
        }
    }

    /// Differences of up to `slack` are not compared.
    fn with_slack(self, slack: f64) -> Self {
        Self { slack, ..self }
    }

    /// Within the tolerance of the larger figure (or both below 0.005: nothing to compare; or
    /// apart by no more than the slack).
    fn agrees(&self) -> bool {
        let scale = self.moto.abs().max(self.sim.abs());
        let difference = (self.moto - self.sim).abs();
        scale < 0.005 || difference <= TOLERANCE * scale || difference <= self.slack
    }
}

/// Scenario 8: the simulation (`make sim`) against the moto-backed runs of this bench: the lister over
/// the same large account as scenario 5, the whole pipeline on the same images as scenario 1,
/// each in virtual time with the same settings; their requests per image (or per page) must
/// agree within the tolerance. Times are not compared: the moto-backed ones are moto's pace.
pub(crate) fn agreement(
    ctx: &Ctx,
    args: &Args,
    pipeline: &PipelineRun,
    lister: &ListerFigures,
    report: &mut Report,
) -> anyhow::Result<()> {
    println!(
        "8. simulation against moto: {} and {} assets",
        args.lister_assets, args.images
    );
    let latency = Duration::from_millis(args.latency_ms);
    let base = SimConfig {
        method: Method::Explicit,
        quota_per_hour: 1_000_000,
        concurrency: ctx.settings.worker_concurrency as u32,
        // The local event source invokes the worker with what one ReceiveMessage returns.
        batch_size: (ctx.settings.batch_size as usize).min(shared::queue::SEND_BATCH_MAX),
        batching_window: Duration::ZERO,
        ocr_sigma: 0.0,
        faults: FaultMix::NONE,
        horizon: Duration::from_secs(24 * 3600),
        ..SimConfig::default()
    };
    let listing = sim::run(
        &SimConfig {
            assets: args.lister_assets as u64,
            admin_latency: Duration::ZERO,
            ..base.clone()
        },
        &mut |_| {},
    );
    let whole = sim::run(
        &SimConfig {
            assets: args.images as u64,
            ocr_median: latency,
            admin_latency: latency,
            ..base
        },
        &mut |_| {},
    );
    for r in [&listing, &whole] {
        if r.terminal_at.is_none() || r.cloudinary.billed_twice > 0 {
            bail!("the simulation did not finish cleanly: {}", r.headline());
        }
    }
    let per_500 = |r: &SimReport, n: u64| n as f64 * 500.0 / r.config.assets as f64;
    let sim_sends = listing
        .requests
        .get("sqs:SendMessageBatch")
        .copied()
        .unwrap_or(0);
    let mut pairs = vec![
        Pair::new(
            format!(
                "lister, {} assets: SQS requests per 500 assets",
                args.lister_assets
            ),
            lister.sqs_per_500,
            per_500(&listing, sim_sends),
        ),
        Pair::new(
            "lister: DynamoDB requests per 500 assets (the checkpoint)",
            lister.dynamodb_per_500,
            per_500(&listing, listing.checkpoint_requests),
        ),
        Pair::new(
            "lister: Cloudinary listing calls per 500 assets",
            lister.cloudinary_per_500,
            per_500(&listing, listing.cloudinary.listing_calls),
        ),
    ];
    let images = pipeline.stored.max(1) as f64;
    let sim_images = whole.images();
    for op in [
        "dynamodb:BatchGetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:BatchExecuteStatement",
        "sqs:SendMessageBatch",
        "sqs:DeleteMessageBatch",
    ] {
        // The few single writes (groups of one: an instance's first claim and result, which go
        // alone while its first call learns the quota, or a record that came late to its
        // group) depend on timing, which on moto is real and in the simulation virtual.
        pairs.push(
            Pair::new(
                format!("pipeline, {} images: {op} per image", args.images),
                pipeline.aws.get(op).copied().unwrap_or(0) as f64 / images,
                whole.requests.get(op).copied().unwrap_or(0) as f64 / sim_images,
            )
            .with_slack(SLACK_PER_IMAGE),
        );
    }
    pairs.push(Pair::new(
        "pipeline: Cloudinary OCR requests per image",
        pipeline.emulator.explicit_calls as f64 / images,
        whole.cloudinary.ocr_requests as f64 / sim_images,
    ));
    pairs.push(Pair::new(
        "pipeline: paid OCR per image",
        pipeline.emulator.ocr_billed as f64 / images,
        whole.paid_per_image(),
    ));
    pairs.push(Pair::new(
        "pipeline: records per worker invocation",
        pipeline.records as f64 / pipeline.invocations.max(1) as f64,
        whole.records as f64 / whole.invocations.max(1) as f64,
    ));
    report.section(
        "8. The simulation against moto",
        &format!(
            "`make sim` runs the lister's and the worker's code in virtual time on the in-memory \
             twins; here it runs the account of scenario 5 ({} assets, no latency) and the \
             images of scenario 1 ({} images, every call {} ms, {} invocations, no faults), and \
             its figures are set beside the moto-backed ones measured above in this run. They \
             agree when within {:.0} % of each other (or, for the pipeline's requests, within \
             {SLACK_PER_IMAGE} per image: the few single writes, groups of one, depend on \
             timing, real on moto and virtual in the simulation). Times are not compared: the moto-backed \
             runs go at moto's pace (scenario 6), the simulation at Cloudinary's. SQS receives \
             are not compared either: the local event-source loop and Lambda's pollers poll \
             differently.",
            args.lister_assets,
            args.images,
            args.latency_ms,
            ctx.settings.worker_concurrency,
            TOLERANCE * 100.0
        ),
    );
    let mut t = Table::new(&[
        "figure",
        "moto-backed",
        "simulation",
        "difference",
        "agrees",
    ]);
    for p in &pairs {
        let diff = if p.moto == 0.0 {
            "—".to_string()
        } else {
            format!("{:+.1} %", (p.sim - p.moto) / p.moto * 100.0)
        };
        t.row(vec![
            p.what.clone(),
            f3(p.moto),
            f3(p.sim),
            diff,
            if p.agrees() { "yes" } else { "**no**" }.into(),
        ]);
    }
    report.table(&t);
    let disagree: Vec<&str> = pairs
        .iter()
        .filter(|p| !p.agrees())
        .map(|p| p.what.as_str())
        .collect();
    report.para(&if disagree.is_empty() {
        format!(
            "All {} figures agree within {:.0} %.",
            pairs.len(),
            TOLERANCE * 100.0
        )
    } else {
        format!("Outside the tolerance: {}.", disagree.join("; "))
    });
    Ok(())
}
