use super::*;

/// 3. Start-up time and memory of the release bootstraps; returns worker log bytes per image.
pub(crate) async fn cold_start(ctx: &Ctx, args: &Args, report: &mut Report) -> anyhow::Result<f64> {
    println!("3. cold start: {} runs of each bootstrap", args.cold_runs);
    let runs = args.cold_runs.max(1);
    let emu = EmulatorProcess::start(
        ctx,
        EmulatorOptions {
            assets: 500,
            ..Default::default()
        },
    )
    .await?;
    let assets = emulator_ids(ctx, &emu, 500).await?;
    let sam = ctx.root.join(".aws-sam");
    let qemu_sysroot = Path::new("/usr/aarch64-linux-gnu");
    let shipped_runs = qemu_sysroot.join("lib/ld-linux-aarch64.so.1").exists()
        && command_output("qemu-aarch64-static", &["--version"]) != "unknown";
    let mut t = Table::new(&[
        "bootstrap",
        "build",
        "exec to first poll (median ms)",
        "range ms",
        "peak RSS after one invocation (median MiB)",
        "binary bytes",
        "zip bytes",
    ]);
    let mut log_bytes_per_image = Vec::new();
    for function in ["worker", "lister"] {
        let resource = if function == "worker" {
            "WorkerFunction"
        } else {
            "ListerFunction"
        };
        let shipped = sam.join("build").join(resource).join("bootstrap");
        let builds: Vec<(&str, PathBuf)> = [
            ("host release", ctx.bin_dir.join(function)),
            ("arm64 (shipped), under qemu", shipped.clone()),
        ]
        .into_iter()
        .filter(|(name, p)| p.exists() && (name.starts_with("host") || shipped_runs))
        .collect();
        for (build, path) in builds {
            let mut inits = Vec::new();
            let mut rss = Vec::new();
            for i in 0..runs {
                let stack = ctx.stack("cold").await?;
                let event = if function == "worker" {
                    let ids: Vec<String> = assets.iter().skip(i * 10).take(10).cloned().collect();
                    worker_event(ctx, &stack, &ids).await?
                } else {
                    include_str!("../../../../../events/lister-schedule.json").to_string()
                };
                let mut env = function_env(&stack, &emu);
                env.insert("AWS_ENDPOINT_URL", ctx.endpoint.clone());
                let env: Vec<(String, String)> =
                    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                let command = if build.starts_with("host") {
                    tokio::process::Command::new(&path)
                } else {
                    let mut c = tokio::process::Command::new("qemu-aarch64-static");
                    c.arg("-L").arg(qemu_sysroot).arg(&path);
                    c
                };
                let run = invoke_bootstrap(command, function, &env, event, Duration::from_secs(60))
                    .await?;
                match &run.answer {
                    Some(Ok(_)) => {}
                    other => bail!(
                        "the {function} bootstrap ({build}) did not answer: {other:?}\n{}",
                        run.output
                    ),
                }
                inits.push(run.init.as_secs_f64() * 1000.0);
                if let Some(kib) = run.peak_rss_kib {
                    rss.push(kib as f64 / 1024.0);
                }
                if function == "worker" && build.starts_with("host") {
                    log_bytes_per_image.push(run.output.len() as f64 / 10.0);
                }
            }
            let (lo, hi) = inits
                .iter()
                .fold((f64::MAX, 0f64), |(l, h), v| (l.min(*v), h.max(*v)));
            let is_host = build.starts_with("host");
            let size =
                |p: &Path| std::fs::metadata(p).map_or("not built".into(), |m| m.len().to_string());
            t.row(vec![
                function.into(),
                build.into(),
                f1(median(inits)),
                format!("{lo:.1}–{hi:.1}"),
                if is_host && !rss.is_empty() {
                    f1(median(rss))
                } else {
                    "n/a (qemu's own)".into()
                },
                if is_host { size(&path) } else { size(&shipped) },
                if is_host {
                    String::new()
                } else {
                    size(&sam.join(format!("{resource}.zip")))
                },
            ]);
        }
    }
    emu.stop().await;
    report.section(
        "3. Cold start and footprint",
        &format!(
            "Each bootstrap started {runs} times by a minimal Lambda Runtime API served locally \
             (`infra/local/src/runtime_api.rs`), answering one real event (worker: 10 SQS records \
             of new images; lister: a scheduled event over 500 images). Start-up is exec to the \
             first poll of the Runtime API (Lambda's init phase), peak RSS is `VmHWM` after the \
             answer. The arm64 rows run the artefact `sam build` makes under qemu's user-mode \
             emulation: their times are an emulator's, not a Graviton's, and their memory is \
             qemu's, so it is not shown. Sizes are the shipped arm64 artefacts."
        ),
    );
    report.table(&t);
    let logs = median(log_bytes_per_image);
    report.para(&format!(
        "The worker wrote {logs:.0} bytes of logs per image (JSON lines and the EMF metrics \
         line, at the default `info` level), which the cost model counts as CloudWatch Logs \
         ingestion."
    ));
    Ok(logs)
}

/// The key (`true`) or secret of a `cloudinary://KEY:SECRET@CLOUD` URL.
pub(crate) fn credential(url: &str, key: bool) -> String {
    let rest = url.trim_start_matches("cloudinary://");
    let (creds, _) = rest.split_once('@').unwrap_or((rest, ""));
    let (k, s) = creds.split_once(':').unwrap_or((creds, ""));
    if key { k } else { s }.to_string()
}

/// A real SQS event for these images: sent to the stack's queue and received back.
pub(crate) async fn worker_event(
    ctx: &Ctx,
    stack: &LocalStack,
    ids: &[String],
) -> anyhow::Result<String> {
    let queue = shared::queue::SqsQueue::new(ctx.sqs.clone(), stack.work_queue_url.clone());
    let bodies: Vec<String> = ids
        .iter()
        .map(|id| WorkMessage::new(id.clone(), "image", "upload").to_body())
        .collect();
    let refused = queue.send_batch(&bodies).await?;
    anyhow::ensure!(refused.is_empty(), "SQS refused messages: {refused:?}");
    let mut messages = Vec::new();
    while messages.len() < ids.len() {
        let got = ctx
            .sqs
            .receive_message()
            .queue_url(&stack.work_queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await?
            .messages
            .unwrap_or_default();
        messages.extend(got);
    }
    let event = local_stack::runner::sqs_event(&messages, &stack.work_queue_arn);
    Ok(serde_json::to_string(&event)?)
}
