//! Spending only what the user chose, on moto and the emulator: a scope lists exactly its
//! images through the listing Cloudinary offers for it, an id list enqueues exactly those, the
//! plan's figures are what the run then pays, a budget of N pays N across concurrent
//! invocations (the rest the next day), pause stops paying within a batch and resume finishes,
//! and the demo spends nothing on a real account unless asked.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use cloudinary_emulator::Asset;
use local_stack::runner::{DrainEnd, DrainStats};
use local_stack::scenario::{DrainTimes, Tally};

use crate::common::{Harness, asset};

/// Images in three folders, some tagged, in two formats and two delivery types.
fn account() -> Vec<Asset> {
    let mut assets = Vec::new();
    for i in 0..12 {
        let folder = ["inv", "rec", "misc"][i % 3];
        let mut a = asset(&format!("{folder}/{i:02} doc"), Some(&format!("text {i}")));
        a.format = if i % 2 == 0 { "png" } else { "jpg" }.into();
        if i % 4 == 0 {
            a.tags = vec!["invoice".into()];
        }
        if i % 5 == 0 {
            a.delivery_type = "private".into();
        }
        assets.push(a);
    }
    assets
}

fn key(a: &Asset) -> String {
    shared::message::item_key(&a.public_id, &a.delivery_type)
}

/// The item keys of the messages in the work queue (received and left to come back).
async fn queued(h: &Harness) -> BTreeSet<String> {
    local_stack::receive_all(&h.sqs, &h.stack.work_queue_url)
        .await
        .expect("receive the work queue")
        .iter()
        .map(|m| {
            shared::worker::parse_body(m.body().unwrap_or_default())
                .expect("a work message")
                .item_key()
        })
        .collect()
}

/// A scope's variables, which images it holds, and the listing it takes ("list", "tag" or
/// "search").
type ScopeCase = (
    &'static [(&'static str, &'static str)],
    fn(&Asset) -> bool,
    &'static str,
);

#[tokio::test]
async fn a_scope_by_folder_by_tag_and_by_expression_lists_exactly_its_images() {
    let assets = account();
    let cases: [ScopeCase; 4] = [
        (
            &[("SCOPE_PREFIXES", "inv/")],
            |a| a.public_id.starts_with("inv/"),
            "list",
        ),
        (
            &[
                ("SCOPE_TAGS", "invoice"),
                ("SCOPE_DELIVERY_TYPES", "upload"),
            ],
            |a| a.tags.contains(&"invoice".to_string()) && a.delivery_type == "upload",
            "tag",
        ),
        (
            &[("SCOPE_EXPRESSION", "format:jpg")],
            |a| a.format == "jpg",
            "search",
        ),
        (
            &[("SCOPE_PREFIXES", "rec/"), ("SCOPE_FORMATS", "png")],
            |a| a.public_id.starts_with("rec/") && a.format == "png",
            "search",
        ),
    ];
    for (vars, wanted, listing) in cases {
        let h = Harness::new(assets.clone(), crate::common::stack_settings(), |_| {}).await;
        let lister = h.lister(vars);
        h.list_all(&lister).await;
        let expected: BTreeSet<String> = assets.iter().filter(|a| wanted(a)).map(key).collect();
        assert!(!expected.is_empty(), "{vars:?}");
        assert_eq!(queued(&h).await, expected, "{vars:?}");
        let stats = h.emulator.stats();
        match listing {
            "list" => assert_eq!(
                (stats.list_calls, stats.search_calls),
                (3, 0),
                "{vars:?}: one prefix listing per delivery type"
            ),
            "tag" => assert_eq!(
                (stats.tag_list_calls, stats.search_calls),
                (1, 0),
                "{vars:?}"
            ),
            _ => assert_eq!((stats.list_calls, stats.search_calls), (0, 1), "{vars:?}"),
        }
    }
}

fn cli(h: &Harness, args: &[&str], vars: &[(&str, &str)]) -> ocr_ctl::Cli {
    let mut all = vec![
        "ocr-ctl".to_string(),
        "--results-table".into(),
        h.stack.names.results_table.clone(),
        "--checkpoint-table".into(),
        h.stack.names.checkpoint_table.clone(),
        "--queue-url".into(),
        h.stack.work_queue_url.clone(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let mut cli = ocr_ctl::Cli::try_parse_from(all).expect("arguments");
    cli.env_overrides = [
        ("CLOUDINARY_URL", h.emulator.cloudinary_url()),
        ("CLOUDINARY_API_BASE", h.emulator.base_url()),
    ]
    .into_iter()
    .chain(vars.iter().map(|(k, v)| (*k, v.to_string())))
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    cli
}

async fn ctl(h: &Harness, cli: ocr_ctl::Cli) -> String {
    let mut out = Vec::new();
    ocr_ctl::run(cli, &h.sdk, &mut out)
        .await
        .unwrap_or_else(|e| panic!("ocr-ctl: {e:#}"));
    String::from_utf8(out).expect("utf-8")
}

#[tokio::test]
async fn an_id_list_enqueues_exactly_those() {
    let assets = account();
    let h = Harness::new(assets.clone(), crate::common::stack_settings(), |_| {}).await;
    let chosen: Vec<&Asset> = assets.iter().step_by(3).collect();
    let file = std::env::temp_dir().join(format!("ids-{}.txt", uuid::Uuid::new_v4()));
    let lines: Vec<String> = chosen.iter().map(|a| key(a)).collect();
    // A repeat and a blank line change nothing.
    std::fs::write(&file, format!("{}\n\n{}\n", lines.join("\n"), lines[0])).unwrap();
    let dry = ctl(
        &h,
        cli(
            &h,
            &["enqueue", "--from", file.to_str().unwrap(), "--dry-run"],
            &[],
        ),
    )
    .await;
    assert!(
        dry.contains(&format!("would enqueue {} assets", chosen.len())),
        "{dry}"
    );
    assert!(queued(&h).await.is_empty());
    let out = ctl(
        &h,
        cli(
            &h,
            &["enqueue", "--from", file.to_str().unwrap(), "--yes"],
            &[],
        ),
    )
    .await;
    assert!(
        out.contains(&format!("enqueued {} assets", chosen.len())),
        "{out}"
    );
    assert_eq!(queued(&h).await, lines.iter().cloned().collect());
    std::fs::remove_file(file).unwrap();
}

#[tokio::test]
async fn the_plan_counts_what_the_run_then_pays() {
    let assets = account();
    let h = Harness::new(assets.clone(), crate::common::stack_settings(), |c| {
        c.ocr_limit = 1_000;
    })
    .await;
    // A pilot: one folder first.
    let pilot = [("SCOPE_PREFIXES", "inv/")];
    let plan_of = |vars: &[(&str, &str)]| cli(&h, &["plan", "--json"], vars);
    let plan: serde_json::Value =
        serde_json::from_str(&ctl(&h, plan_of(&pilot)).await).expect("plan JSON");
    assert_eq!(plan["images"], 4);
    assert_eq!(plan["will_pay"], 4);
    assert_eq!(plan["addon_usage"], 0);
    assert_eq!(plan["addon_limit"], 1_000);
    let billed_before = h.emulator.stats().ocr_billed;
    h.list_all(&h.lister(&pilot)).await;
    let worker = h.worker(&[]);
    assert_eq!(
        h.drain(&worker, 2, Duration::from_secs(60)).await.0,
        DrainEnd::Empty
    );
    assert_eq!(h.emulator.stats().ocr_billed - billed_before, 4);
    // Then the whole account: the plan counts what is done, and the run pays for the rest.
    let plan: serde_json::Value =
        serde_json::from_str(&ctl(&h, plan_of(&[])).await).expect("plan JSON");
    assert_eq!(plan["images"], 12);
    assert_eq!(plan["already_done"], 4);
    assert_eq!(plan["will_pay"], 8);
    assert_eq!(plan["addon_usage"], 4);
    assert_eq!(plan["exact"], true);
    let paid_before = h.emulator.stats().ocr_billed;
    h.list_all(&h.lister(&[])).await;
    assert_eq!(
        h.drain(&worker, 2, Duration::from_secs(60)).await.0,
        DrainEnd::Empty
    );
    assert_eq!(h.emulator.stats().ocr_billed - paid_before, 8);
    // The text form says the same.
    let text = ctl(&h, cli(&h, &["plan"], &[])).await;
    assert!(text.contains("OCRs the run pays for 0"), "{text}");
    assert!(text.contains("12 of 1000 used"), "{text}");
}

#[tokio::test]
async fn a_budget_of_n_pays_exactly_n_across_concurrent_invocations_and_the_rest_the_next_day() {
    let assets: Vec<Asset> = (0..20)
        .map(|i| asset(&format!("b/{i:02}"), Some("text")))
        .collect();
    let mut h = Harness::new(assets.clone(), crate::common::stack_settings(), |_| {}).await;
    h.scenario.set("MAX_OCR_PER_DAY", "12");
    h.list_all(&h.lister(&[])).await;
    // Four instances, each with its own view of the budget: only DynamoDB's conditional
    // counter stands between them and overspending. Deferrals come back in a second.
    let today = |s: &mut shared::worker::WorkerSettings| s.max_deferral = Duration::from_secs(1);
    let pool = local_stack::scenario::WorkerPool::new(
        (0..4)
            .map(|_| h.scenario.worker_adjusted(today).expect("worker"))
            .collect(),
    );
    let mapping = h.mapping(4, Duration::from_secs(12));
    let tally = Tally::default();
    let stats = DrainStats::default();
    let end = h
        .scenario
        .drain(&pool, &mapping, &stats, &tally, &DrainTimes::default())
        .await
        .expect("drain");
    assert_eq!(end, DrainEnd::TimedOut, "the rest waits for the next day");
    assert_eq!(h.emulator.stats().ocr_billed, 12);
    assert!(tally.get("deferred") >= 8, "{}", tally.get("deferred"));
    assert_eq!(tally.get("dead_lettered"), 0);
    let out = ctl(&h, cli(&h, &["status"], &[("MAX_OCR_PER_DAY", "12")])).await;
    assert!(out.contains("12 of 12 used today"), "{out}");
    assert!(out.contains("spent"), "{out}");
    // The next UTC day starts a counter of its own at zero (the unit tier runs the clock
    // past midnight; here the day's counter is taken away, which is the same to the workers).
    let (day, _) = shared::budget::periods(std::time::SystemTime::now()).0;
    h.ddb
        .delete_item()
        .table_name(&h.stack.names.checkpoint_table)
        .key(
            "id",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("budget#day#{day}")),
        )
        .send()
        .await
        .expect("a new day");
    let pool = local_stack::scenario::WorkerPool::new(
        (0..4)
            .map(|_| h.scenario.worker_adjusted(today).expect("worker"))
            .collect(),
    );
    let mapping = h.mapping(4, Duration::from_secs(60));
    let end = h
        .scenario
        .drain(&pool, &mapping, &stats, &tally, &DrainTimes::default())
        .await
        .expect("drain");
    assert_eq!(end, DrainEnd::Empty);
    for a in &assets {
        assert_eq!(h.emulator.ocr_billed_of(&a.id()), 1, "{}", a.public_id);
    }
    assert!(h.dlq().await.is_empty());
}

#[tokio::test]
async fn pause_stops_paying_within_a_batch_and_resume_finishes_the_rest() {
    use aws_sdk_scheduler::types::{FlexibleTimeWindow, FlexibleTimeWindowMode, Target};
    let assets: Vec<Asset> = (0..60)
        .map(|i| asset(&format!("p/{i:02}"), Some("text")))
        .collect();
    let h = Harness::new(assets.clone(), crate::common::stack_settings(), |c| {
        c.latency = Duration::from_millis(150);
    })
    .await;
    h.list_all(&h.lister(&[])).await;
    // The stack's schedule (on moto) and the worker's mapping (the local runner's).
    let scheduler = aws_sdk_scheduler::Client::new(&h.sdk);
    let schedule = format!("{}-lister", h.stack.names.work_queue);
    scheduler
        .create_schedule()
        .name(&schedule)
        .schedule_expression("rate(15 minutes)")
        .flexible_time_window(
            FlexibleTimeWindow::builder()
                .mode(FlexibleTimeWindowMode::Off)
                .build()
                .unwrap(),
        )
        .target(
            Target::builder()
                .arn("arn:aws:lambda:us-east-1:123456789012:function:lister")
                .role_arn("arn:aws:iam::123456789012:role/scheduler")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create the schedule on moto");
    let mapping_state =
        local_stack::lambda_api::LocalMapping::new("worker", &h.stack.work_queue_arn, 1);
    let enabled = mapping_state.enabled.clone();
    let endpoint = local_stack::lambda_api::serve(mapping_state)
        .await
        .expect("serve");
    let control = |args: &[&str]| {
        let mut c = cli(&h, args, &[]);
        c.worker_function = Some("worker".into());
        c.schedule_name = Some(schedule.clone());
        c.lambda_endpoint = Some(format!("http://{endpoint}"));
        c
    };
    let worker = h.worker(&[]);
    let mapping = local_stack::runner::MappingSettings {
        batch_size: 5,
        enabled: Some(enabled.clone()),
        ..h.mapping(1, Duration::from_secs(120))
    };
    let stats = DrainStats::default();
    let drain = local_stack::runner::drain(&h.sqs, &mapping, &stats, |event, deadline| {
        worker::handle(&worker, event, deadline)
    });
    let operate = async {
        // Some batches in, pause: it returns once the batch in flight has ended.
        while h.emulator.stats().ocr_billed < 10 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let out = ctl(&h, control(&["pause"])).await;
        assert!(out.starts_with("paused"), "{out}");
        let at_pause = h.emulator.stats().ocr_billed;
        let status = ctl(&h, control(&["status"])).await;
        assert!(status.contains("pipeline     paused"), "{status}");
        let got = scheduler
            .get_schedule()
            .name(&schedule)
            .send()
            .await
            .unwrap();
        assert_eq!(got.state().map(|s| s.as_str()), Some("DISABLED"));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            h.emulator.stats().ocr_billed,
            at_pause,
            "nothing paid while paused"
        );
        assert!(at_pause < 60, "paused before the end");
        let out = ctl(&h, control(&["resume"])).await;
        assert!(out.starts_with("running"), "{out}");
        let got = scheduler
            .get_schedule()
            .name(&schedule)
            .send()
            .await
            .unwrap();
        assert_eq!(got.state().map(|s| s.as_str()), Some("ENABLED"));
        assert_eq!(got.schedule_expression(), Some("rate(15 minutes)"));
        at_pause
    };
    let (end, at_pause) = futures::join!(drain, operate);
    assert_eq!(end.expect("drain"), DrainEnd::Empty);
    assert!(at_pause >= 10);
    for a in &assets {
        assert_eq!(h.emulator.ocr_billed_of(&a.id()), 1, "{}", a.public_id);
    }
    assert!(enabled.load(Ordering::SeqCst));
}

#[tokio::test]
async fn the_demo_spends_nothing_on_a_real_account_unless_asked() {
    // The "real account": an emulator the demo must not call without --real-account.
    let real = cloudinary_emulator::Emulator::start(
        cloudinary_emulator::EmulatorConfig::new("realcloud"),
        cloudinary_emulator::generate(30),
        0,
    )
    .await
    .expect("emulator");
    let demo = env!("CARGO_BIN_EXE_local-stack");
    // Awaited, so that the emulator (on this test's runtime) answers while the demo runs.
    let run = |args: &[&str]| {
        let mut command = tokio::process::Command::new(demo);
        command
            .args(args)
            .env("CLOUDINARY_URL", real.cloudinary_url())
            .env("CLOUDINARY_API_BASE", real.base_url())
            .env("DEMO_ASSETS", "40")
            .stdin(std::process::Stdio::null());
        async move { command.output().await.expect("the demo runs") }
    };
    let out = run(&["--samples", "1"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("does not spend on a real account unless asked"),
        "{stdout}"
    );
    assert!(stdout.contains("emulator at"), "{stdout}");
    assert_eq!(real.stats().admin_calls + real.stats().explicit_calls, 0);
    // Asked, but not confirmed (no terminal, no --yes): refused, nothing paid.
    let out = run(&["--real-account"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("confirm with --yes"), "{stderr}");
    assert_eq!(real.stats().ocr_billed, 0);
    // Asked and confirmed: at most --max-assets OCRs.
    let out = run(&[
        "--real-account",
        "--yes",
        "--max-assets",
        "5",
        "--samples",
        "1",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(real.stats().ocr_billed, 5);
}

#[tokio::test]
async fn the_stacks_scope_is_read_from_its_parameters_and_reocr_keeps_to_it() {
    let assets = account();
    let h = Harness::new(assets.clone(), crate::common::stack_settings(), |_| {}).await;
    // Everything OCR'd once.
    h.list_all(&h.lister(&[])).await;
    let worker = h.worker(&[]);
    assert_eq!(
        h.drain(&worker, 2, Duration::from_secs(60)).await.0,
        DrainEnd::Empty
    );
    // A stack (on moto's CloudFormation) whose scope is one folder of upload images.
    let cfn = aws_sdk_cloudformation::Client::new(&h.sdk);
    let stack = format!("scope-{}", uuid::Uuid::new_v4().simple());
    let template = serde_json::json!({
        "Parameters": {
            "ScopeFolders": {"Type": "String"},
            "ScopeDeliveryTypes": {"Type": "String"},
        },
        "Resources": {"Marker": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": stack.clone()}}},
        "Outputs": {
            "ResultsTableName": {"Value": h.stack.names.results_table.clone()},
            "CheckpointTableName": {"Value": h.stack.names.checkpoint_table.clone()},
            "WorkQueueUrl": {"Value": h.stack.work_queue_url.clone()},
        },
    });
    cfn.create_stack()
        .stack_name(&stack)
        .template_body(template.to_string())
        .parameters(
            aws_sdk_cloudformation::types::Parameter::builder()
                .parameter_key("ScopeFolders")
                .parameter_value("inv/")
                .build(),
        )
        .parameters(
            aws_sdk_cloudformation::types::Parameter::builder()
                .parameter_key("ScopeDeliveryTypes")
                .parameter_value("upload")
                .build(),
        )
        .send()
        .await
        .expect("create the stack");
    let in_scope: BTreeSet<String> = assets
        .iter()
        .filter(|a| a.public_id.starts_with("inv/") && a.delivery_type == "upload")
        .map(key)
        .collect();
    let by_stack = |args: &[&str]| {
        let mut argv = vec!["ocr-ctl".to_string(), "--stack-name".into(), stack.clone()];
        argv.extend(args.iter().map(|a| a.to_string()));
        let mut cli = ocr_ctl::Cli::try_parse_from(argv).expect("arguments");
        cli.env_overrides = [
            ("CLOUDINARY_URL".to_string(), h.emulator.cloudinary_url()),
            ("CLOUDINARY_API_BASE".to_string(), h.emulator.base_url()),
        ]
        .into_iter()
        .collect();
        cli
    };
    let plan: serde_json::Value =
        serde_json::from_str(&ctl(&h, by_stack(&["plan", "--json"])).await).expect("plan JSON");
    assert_eq!(plan["images"], in_scope.len());
    assert_eq!(plan["already_done"], in_scope.len());
    assert_eq!(plan["will_pay"], 0);
    // A re-OCR of everything done keeps to the stack's scope...
    let out = ctl(&h, by_stack(&["reocr", "--status", "done", "--yes"])).await;
    assert!(
        out.contains(&format!("enqueued {} assets", in_scope.len())),
        "{out}"
    );
    assert_eq!(queued(&h).await, in_scope);
    // ...unless told otherwise.
    h.sqs
        .purge_queue()
        .queue_url(&h.stack.work_queue_url)
        .send()
        .await
        .expect("purge");
    let done = assets.iter().filter(|a| a.text.is_some()).count();
    let out = ctl(
        &h,
        by_stack(&["reocr", "--status", "done", "--any-scope", "--yes"]),
    )
    .await;
    assert!(out.contains(&format!("enqueued {done} assets")), "{out}");
}
