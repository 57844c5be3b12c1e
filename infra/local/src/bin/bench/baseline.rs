use super::*;

#[derive(serde::Deserialize)]
pub(crate) struct BaselineReport {
    pub(crate) images: u64,
    pub(crate) errors: u64,
    pub(crate) wall_s: f64,
    pub(crate) cpu_s: f64,
}

pub(crate) struct BaselineRun {
    pub(crate) report: BaselineReport,
    pub(crate) moto_cpu_s: f64,
    pub(crate) aws: BTreeMap<String, u64>,
    pub(crate) emulator: Stats,
    pub(crate) items: HashMap<String, HashMap<String, AttributeValue>>,
}

pub(crate) async fn run_baseline(
    ctx: &Ctx,
    emu: &EmulatorProcess,
    threads: usize,
) -> anyhow::Result<BaselineRun> {
    let stack = ctx.stack("baseline").await?;
    ctx.aws_requests(true).await?;
    let moto0 = moto_cpu_seconds(ctx);
    let out = tokio::process::Command::new(&ctx.python)
        .arg(ctx.root.join("infra/bench/baseline.py"))
        .arg("--table")
        .arg(&stack.names.results_table)
        .arg("--threads")
        .arg(threads.to_string())
        .env("CLOUDINARY_URL", &emu.cloudinary_url)
        .env("CLOUDINARY_API_BASE", &emu.base_url)
        .env("AWS_ENDPOINT_URL", &ctx.endpoint)
        // moto accepts any credentials; these are placeholders, not keys.
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .await
        .context("running infra/bench/baseline.py")?;
    if !out.status.success() {
        bail!(
            "the baseline failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: BaselineReport = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("the baseline printed no report: {stdout}"))?;
    let moto_cpu_s = moto_cpu_seconds(ctx) - moto0;
    let aws = ctx.aws_requests(false).await?;
    let emulator = emu.stats().await?;
    let items = local_stack::scan_items(&ctx.ddb, &stack.names.results_table).await?;
    Ok(BaselineRun {
        report,
        moto_cpu_s,
        aws,
        emulator,
        items,
    })
}

/// Ids whose stored status or text differ between two tables.
pub(crate) fn differences(
    a: &HashMap<String, HashMap<String, AttributeValue>>,
    b: &HashMap<String, HashMap<String, AttributeValue>>,
) -> usize {
    let field = |item: &HashMap<String, AttributeValue>, k: &str| {
        item.get(k).and_then(|v| v.as_s().ok()).cloned()
    };
    let mut ids: Vec<&String> = a.keys().chain(b.keys()).collect();
    ids.sort();
    ids.dedup();
    ids.iter()
        .filter(|id| match (a.get(**id), b.get(**id)) {
            (Some(x), Some(y)) => {
                field(x, "status") != field(y, "status") || field(x, "text") != field(y, "text")
            }
            _ => true,
        })
        .count()
}
