//! `ocr-ctl` against moto: export, grep, status, reocr and redrive on awkward data.

use std::time::Duration;

use crate::common::{Harness, asset, s};
use clap::Parser;
use ocr_ctl::export::Row;
use shared::ocr::{AssetFields, OcrOutcome};
use shared::store::ResultRecord;

/// Items whose text is hard to carry through CSV.
fn awkward() -> Vec<(String, Option<String>)> {
    vec![
        ("plain".into(), Some("simple text".into())),
        ("commas, here".into(), Some("a,b,,c\n1,2,3".into())),
        (
            "quotes \"q\"".into(),
            Some("He said \"hi\"\r\nand \"\"left\"\"".into()),
        ),
        (
            "unicode/東京 🎉".into(),
            Some("Café crème — 3,50 €\n営業時間\tTAB".into()),
        ),
        (
            "multi\nline id".into(),
            Some("\n\nleading newlines\n".into()),
        ),
        ("empty".into(), None),
    ]
}

pub(crate) async fn put(h: &Harness, id: &str, text: Option<&str>, failed: bool) {
    let record = if failed {
        ResultRecord::failed(
            id,
            "image",
            "upload",
            "HTTP 404: Resource not found",
            1,
            "2026-01-01T00:00:00Z".into(),
        )
    } else {
        let outcome = match text {
            Some(t) => OcrOutcome::Text {
                text: t.to_string(),
                locale: Some("en".into()),
            },
            None => OcrOutcome::NoText,
        };
        let asset = AssetFields {
            format: Some("png".into()),
            bytes: Some(10),
            width: Some(1),
            height: Some(2),
            created_at: Some("2024-01-01T00:00:00Z".into()),
            version: None,
            asset_id: None,
        };
        ResultRecord::from_outcome(
            id,
            "image",
            "upload",
            outcome,
            asset,
            1,
            "2026-01-01T00:00:00Z".into(),
        )
    };
    write(h, &record).await;
}

/// A stored text, as the worker records it.
fn text_record(key: &str, delivery_type: &str, text: String, locale: Option<&str>) -> ResultRecord {
    let outcome = OcrOutcome::Text {
        text,
        locale: locale.map(str::to_string),
    };
    let at = "2026-01-01T00:00:00Z".to_string();
    ResultRecord::from_outcome(
        key,
        "image",
        delivery_type,
        outcome,
        AssetFields::default(),
        1,
        at,
    )
}

/// Writes a record's item as the worker does.
pub(crate) async fn write(h: &Harness, record: &ResultRecord) {
    h.ddb
        .put_item()
        .table_name(&h.stack.names.results_table)
        .set_item(Some(shared::store::dynamodb::to_item(record)))
        .send()
        .await
        .unwrap();
}

pub(crate) async fn seeded() -> Harness {
    let h = Harness::new(vec![], crate::common::stack_settings(), |_| {}).await;
    for (id, text) in awkward() {
        put(&h, &id, text.as_deref(), false).await;
    }
    put(&h, "broken/one", None, true).await;
    h
}

pub(crate) async fn ctl(h: &Harness, args: &[&str]) -> anyhow::Result<String> {
    ctl_on(h, &h.stack.names.results_table, args).await
}

async fn ctl_on(h: &Harness, table: &str, args: &[&str]) -> anyhow::Result<String> {
    Ok(ctl_outcome(h, table, args).await?.0)
}

/// What the command wrote and how it ended.
pub(crate) async fn ctl_outcome(
    h: &Harness,
    table: &str,
    args: &[&str],
) -> anyhow::Result<(String, ocr_ctl::Outcome)> {
    let mut argv = vec![
        "ocr-ctl".to_string(),
        "--results-table".into(),
        table.to_string(),
        "--checkpoint-table".into(),
        h.stack.names.checkpoint_table.clone(),
        "--queue-url".into(),
        h.stack.work_queue_url.clone(),
        "--dlq-url".into(),
        h.stack.dead_letter_queue_url.clone(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let cli = ocr_ctl::Cli::try_parse_from(argv)?;
    let mut out = Vec::new();
    let outcome = ocr_ctl::run(cli, &h.sdk, &mut out).await?;
    Ok((String::from_utf8(out).unwrap(), outcome))
}

/// `status --json` of the seeded table with one message queued.
fn assert_seeded_status(out: &str) {
    let v: serde_json::Value = serde_json::from_str(out).unwrap();
    assert_eq!(
        v["items"],
        serde_json::json!({"done": 5, "no_text": 1, "failed": 1})
    );
    assert_eq!(v["queue"]["visible"], 1);
    assert_eq!(v["dlq"]["visible"], 0);
}

/// An S3 client for the tests' own setup and checks (ocr-ctl's own names the bucket owner).
pub(crate) fn plain_s3(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    )
}

/// What moto answers to GetCallerIdentity: its default account.
pub(crate) const MOTO_ACCOUNT: &str = "123456789012";

/// ocr-ctl's S3 client, for the account moto puts every bucket in.
pub(crate) fn owned_s3(sdk: &aws_config::SdkConfig) -> ocr_ctl::bucket_owner::OwnerCheckedS3 {
    ocr_ctl::bucket_owner::OwnerCheckedS3::new(sdk, MOTO_ACCOUNT.parse().unwrap())
}

pub(crate) fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ocr-ctl-{}-{name}", uuid::Uuid::new_v4().simple()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn csv_and_jsonl_round_trip_the_exact_stored_values() {
    let h = seeded().await;
    let csv_path = temp_path("all.csv");
    let out = ctl(
        &h,
        &[
            "export",
            "--format",
            "csv",
            "--allow-formulas",
            "--out",
            csv_path.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    assert!(out.contains("exported 7 rows"), "{out}");
    let mut reader = csv::Reader::from_path(&csv_path).unwrap();
    let rows: Vec<Row> = reader.deserialize().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 7);
    for (id, text) in awkward() {
        let row = rows
            .iter()
            .find(|r| r.public_id == id)
            .unwrap_or_else(|| panic!("{id:?} missing"));
        assert_eq!(row.text, text.clone().unwrap_or_default(), "{id:?}");
        assert_eq!(row.status, if text.is_some() { "done" } else { "no_text" });
        assert_eq!(
            (
                row.format.as_str(),
                row.width.as_str(),
                row.asset_created_at.as_str()
            ),
            ("png", "1", "2024-01-01T00:00:00Z")
        );
    }
    let failed = rows.iter().find(|r| r.public_id == "broken/one").unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.error.as_str()),
        ("failed", "HTTP 404: Resource not found")
    );

    let jsonl_path = temp_path("done.jsonl");
    ctl(
        &h,
        &[
            "export",
            "--format",
            "jsonl",
            "--status",
            "done,failed",
            "--out",
            jsonl_path.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let rows: Vec<Row> = std::fs::read_to_string(&jsonl_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 6, "no_text left out");
    assert!(
        rows.iter()
            .all(|r| r.status == "done" || r.status == "failed")
    );
    for p in [csv_path, jsonl_path] {
        std::fs::remove_file(p).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_fails_clearly_and_writes_nothing() {
    let h = seeded().await;
    let err = ctl(&h, &["export", "--status", "done,finished"])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown status \"finished\""),
        "{err:#}"
    );

    let dir = temp_path("missing-dir");
    let path = dir.join("out.csv");
    let err = ctl(&h, &["export", "--out", path.to_str().unwrap()])
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("cannot write"), "{err:#}");
    assert!(!dir.exists());

    let missing_out = temp_path("x.csv");
    let err = ctl_on(
        &h,
        "no-such-table",
        &["export", "--out", missing_out.to_str().unwrap()],
    )
    .await
    .unwrap_err();
    assert!(!missing_out.exists());
    assert!(err.to_string().contains("does not exist"), "{err:#}");

    let err = ctl(&h, &["grep", "(unclosed", "--regex"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid pattern"), "{err:#}");
    let err = ctl(&h, &["reocr"]).await.unwrap_err();
    assert!(err.to_string().contains("name the assets"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grep_finds_exactly_the_matching_assets() {
    let h = seeded().await;
    let out = ctl(&h, &["grep", "crème"]).await.unwrap();
    assert_eq!(out, "unicode/東京 🎉\tCafé crème — 3,50 €\n");
    let out = ctl(&h, &["grep", "-i", "HE SAID"]).await.unwrap();
    assert_eq!(
        out,
        "quotes \"q\"\tHe said \"hi\"\r\n".replace("\r\n", "\n")
    );
    let mut lines: Vec<String> = ctl(&h, &["grep", "--regex", r"^\d,\d"])
        .await
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    assert_eq!(lines, vec!["commas, here\t1,2,3".to_string()]);
    assert_eq!(
        ctl(&h, &["grep", "--count", ","]).await.unwrap(),
        "2 assets, 3 lines\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_counts_items_and_queues() {
    let h = seeded().await;
    h.send_asset("x").await;
    let out = ctl(&h, &["status", "--json"]).await.unwrap();
    assert_seeded_status(&out);
    let text = ctl(&h, &["status"]).await.unwrap();
    assert!(
        text.contains("items        7") && text.contains("failed     1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reocr_enqueues_forced_messages() {
    let h = seeded().await;
    assert!(
        ctl(&h, &["reocr", "--yes", "plain", "empty"])
            .await
            .unwrap()
            .contains("enqueued 2")
    );
    assert!(
        ctl(&h, &["reocr", "-y", "--status", "failed"])
            .await
            .unwrap()
            .contains("enqueued 1")
    );
    assert!(
        ctl(&h, &["reocr", "--yes", "--prefix", "uni"])
            .await
            .unwrap()
            .contains("enqueued 1")
    );
    let mut ids = Vec::new();
    for _ in 0..5 {
        for m in h.receive().await {
            let msg = shared::message::WorkMessage::parse(m.body().unwrap()).unwrap();
            assert!(msg.force);
            ids.push(msg.public_id);
        }
    }
    ids.sort();
    assert_eq!(ids, vec!["broken/one", "empty", "plain", "unicode/東京 🎉"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redrive_moves_every_message_back_unchanged_and_the_worker_finishes_them() {
    // Three assets that do not exist yet: dead-lettered as 404s.
    let h = Harness::new(vec![], crate::common::stack_settings(), |_| {}).await;
    let mut bodies = Vec::new();
    for i in 0..3 {
        let body = shared::message::WorkMessage::new(format!("late/{i} & co?"), "image", "upload")
            .to_body();
        h.send(&body).await;
        bodies.push(body);
    }
    h.send("{broken").await;
    let worker = h.worker(&[]);
    h.drain(&worker, 1, Duration::from_secs(30)).await;
    assert_eq!(
        ctl(&h, &["status", "--json"])
            .await
            .map(
                |o| serde_json::from_str::<serde_json::Value>(&o).unwrap()["dlq"]["visible"]
                    .clone()
            )
            .unwrap(),
        4
    );

    // The operator reads why; listing leaves the messages in the queue.
    let listed = ctl(&h, &["dead-letters"]).await.unwrap();
    assert!(listed.contains("4 dead letters listed"), "{listed}");
    assert_eq!(listed.matches("Resource not found").count(), 3, "{listed}");
    assert!(listed.contains("not a work message"), "{listed}");
    let json = ctl(&h, &["dead-letters", "--json"]).await.unwrap();
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "{json}");
    assert!(
        rows.iter()
            .all(|r| r["source_queue"] == h.stack.work_queue_arn.as_str())
    );

    // The cause is fixed (the assets now exist); the operator redrives.
    for i in 0..3 {
        h.emulator
            .add_asset(asset(&format!("late/{i} & co?"), Some("found")));
    }
    let out = ctl(&h, &["redrive"]).await.unwrap();
    assert!(out.contains("moved 4 messages"), "{out}");
    let mut moved: Vec<String> = Vec::new();
    let messages = {
        let mut all = Vec::new();
        for _ in 0..5 {
            all.extend(h.receive().await);
        }
        all
    };
    for m in &messages {
        moved.push(m.body().unwrap().to_string());
    }
    let mut expected = bodies.clone();
    expected.push("{broken".into());
    moved.sort();
    expected.sort();
    assert_eq!(moved, expected, "bodies moved byte for byte");
    assert!(
        h.dlq().await.is_empty(),
        "the DLQ is empty after the redrive"
    );

    // Put them back (visible) and let the worker finish them.
    for m in &messages {
        h.sqs
            .change_message_visibility()
            .queue_url(&h.stack.work_queue_url)
            .receipt_handle(m.receipt_handle().unwrap())
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
    }
    h.drain(&worker, 1, Duration::from_secs(30)).await;
    for i in 0..3 {
        let item = h.item(&format!("late/{i} & co?")).await.unwrap();
        assert_eq!(s(&item, "status").as_deref(), Some("done"));
        assert_eq!(s(&item, "text").as_deref(), Some("found"));
    }
    let dlq = h.dlq().await;
    assert_eq!(
        dlq.len(),
        1,
        "only the malformed body is dead-lettered again"
    );
    assert_eq!(dlq[0].body(), Some("{broken"));
}

/// `grep` speaks JSON when asked and, as grep does, exits 1 when nothing matches; a private
/// image is named by its key and read back to its own public_id and type.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grep_answers_in_json_and_says_when_nothing_matched() {
    let h = seeded().await;
    put(&h, "~private~unicode/東京 🎉", Some("PRIVATE crème"), false).await;
    let table = h.stack.names.results_table.clone();
    let (out, outcome) = ctl_outcome(&h, &table, &["grep", "--json", "crème"])
        .await
        .unwrap();
    assert_eq!(outcome, ocr_ctl::Outcome::Done);
    let mut rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rows.sort_by_key(|r| r["key"].as_str().unwrap().to_string());
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"key": "unicode/東京 🎉", "public_id": "unicode/東京 🎉",
                "delivery_type": "upload", "line": "Café crème — 3,50 €"}),
            serde_json::json!({"key": "~private~unicode/東京 🎉", "public_id": "unicode/東京 🎉",
                "delivery_type": "private", "line": "PRIVATE crème"}),
        ]
    );
    for args in [
        &["grep", "no such words anywhere"][..],
        &["grep", "--count", "no such words anywhere"],
        &["grep", "--json", "--count", "no such words anywhere"],
    ] {
        let (out, outcome) = ctl_outcome(&h, &table, args).await.unwrap();
        assert_eq!(outcome, ocr_ctl::Outcome::NothingMatched, "{args:?}");
        assert!(
            out.is_empty() || out == "0 assets, 0 lines\n" || out.contains("\"assets\":0"),
            "{args:?}: {out}"
        );
    }
}

/// `reocr` pays Cloudinary for every asset it names: it counts them first, and only enqueues
/// when told to (`--yes`), never on a non-interactive run by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reocr_counts_what_it_would_pay_for_and_asks_first() {
    let h = seeded().await;
    let out = ctl(&h, &["reocr", "--status", "done", "--dry-run"])
        .await
        .unwrap();
    assert!(
        out.contains("would enqueue 5 assets") && out.contains("5 OCRs"),
        "{out}"
    );
    let out = ctl(&h, &["reocr", "--status", "done", "--dry-run", "--json"])
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["paid_ocrs"].as_u64(), v["enqueued"].as_u64()),
        (Some(5), Some(0))
    );
    // Standard input is not a terminal here: without --yes nothing is paid for.
    let err = ctl(&h, &["reocr", "--status", "done"]).await.unwrap_err();
    assert!(
        err.to_string().contains("confirm with --yes") && err.to_string().contains("5 OCRs"),
        "{err:#}"
    );
    assert!(h.receive().await.is_empty(), "nothing enqueued");
    let out = ctl(&h, &["reocr", "--yes", "--json", "plain"])
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["enqueued"].as_u64(), Some(1));
    assert_eq!(h.receive().await.len(), 1);
}

/// OCR'd text that a spreadsheet would run as a formula is exported as text by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_csv_export_neutralises_formulas_unless_allowed() {
    let h = seeded().await;
    let formulas = [
        ("signs/formula", "=HYPERLINK(\"http://x\",\"click\")"),
        ("signs/plus", "+1 555 0100"),
        ("signs/minus", "-5 °C"),
        ("signs/at", "@SUM(A1)"),
    ];
    for (id, text) in formulas {
        put(&h, id, Some(text), false).await;
    }
    let read = |path: &std::path::Path| -> Vec<Row> {
        csv::Reader::from_path(path)
            .unwrap()
            .deserialize()
            .map(|r| r.unwrap())
            .collect()
    };
    let guarded = temp_path("guarded.csv");
    ctl(&h, &["export", "--out", guarded.to_str().unwrap()])
        .await
        .unwrap();
    let rows = read(&guarded);
    for (id, text) in formulas {
        let row = rows.iter().find(|r| r.public_id == id).unwrap();
        assert_eq!(row.text, format!("'{text}"), "{id}");
    }
    let plain = rows.iter().find(|r| r.public_id == "plain").unwrap();
    assert_eq!(plain.text, "simple text", "other cells unchanged");
    let raw = temp_path("raw.csv");
    ctl(
        &h,
        &["export", "--allow-formulas", "--out", raw.to_str().unwrap()],
    )
    .await
    .unwrap();
    let rows = read(&raw);
    for (id, text) in formulas {
        assert_eq!(rows.iter().find(|r| r.public_id == id).unwrap().text, text);
    }
    for p in [guarded, raw] {
        std::fs::remove_file(p).unwrap();
    }
}

/// With `--stack-name`, the names come from the stack's outputs (a stack created in moto's
/// CloudFormation with the outputs the template declares); a name given explicitly wins, and
/// a stack that does not exist is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_stack_name_finds_the_tables_and_queues() {
    let h = seeded().await;
    h.send_asset("x").await;
    let cfn = aws_sdk_cloudformation::Client::new(&h.sdk);
    let stack = format!("ctl-{}", uuid::Uuid::new_v4().simple());
    let values = [
        h.stack.names.results_table.clone(),
        h.stack.names.checkpoint_table.clone(),
        h.stack.work_queue_url.clone(),
        h.stack.dead_letter_queue_url.clone(),
    ];
    let outputs: serde_json::Map<String, serde_json::Value> = ocr_ctl::STACK_OUTPUTS
        .iter()
        .zip(&values)
        .map(|(k, v)| (k.to_string(), serde_json::json!({"Value": v})))
        .collect();
    let template = serde_json::json!({
        "Resources": {"Marker": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": stack.clone()}}},
        "Outputs": outputs,
    });
    cfn.create_stack()
        .stack_name(&stack)
        .template_body(template.to_string())
        .send()
        .await
        .expect("create the stack");
    let run = |args: Vec<String>| {
        let sdk = h.sdk.clone();
        async move {
            let cli = ocr_ctl::Cli::try_parse_from(args)?;
            let mut out = Vec::new();
            ocr_ctl::run(cli, &sdk, &mut out).await?;
            anyhow::Ok(String::from_utf8(out).unwrap())
        }
    };
    let argv = |extra: &[&str]| -> Vec<String> {
        ["ocr-ctl", "--stack-name", stack.as_str()]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let out = run(argv(&["status", "--json"])).await.unwrap();
    assert_seeded_status(&out);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["checkpoints"], serde_json::json!([]));
    assert_eq!(v["quota"], serde_json::Value::Null, "no quota metrics yet");

    // The worker's quota metrics, as CloudWatch ingests its EMF lines: the stack's status
    // shows the hour's use (the fewest calls left, against the limit).
    let cw = aws_sdk_cloudwatch::Client::new(&h.sdk);
    let dims = |function: &str| {
        [stack.as_str(), function]
            .iter()
            .zip(shared::telemetry::DIMENSIONS)
            .map(|(v, n)| {
                aws_sdk_cloudwatch::types::Dimension::builder()
                    .name(n)
                    .value(*v)
                    .build()
            })
            .collect::<Vec<_>>()
    };
    let now = std::time::SystemTime::now();
    for (name, value, function, ago) in [
        ("CloudinaryQuotaRemaining", 1200.0, "worker", 600),
        ("CloudinaryQuotaRemaining", 500.0, "worker", 60),
        ("CloudinaryQuotaRemaining", 0.0, "worker", 7200),
        ("CloudinaryQuotaRemaining", 3.0, "lister", 60),
        ("CloudinaryQuotaLimit", 2000.0, "worker", 60),
    ] {
        cw.put_metric_data()
            .namespace(shared::telemetry::METRICS_NAMESPACE)
            .metric_data(
                aws_sdk_cloudwatch::types::MetricDatum::builder()
                    .metric_name(name)
                    .set_dimensions(Some(dims(function)))
                    .value(value)
                    .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from(
                        now - Duration::from_secs(ago),
                    ))
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    let out = run(argv(&["status", "--json"])).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["quota"],
        serde_json::json!({"limit": 2000, "lowest_remaining": 500, "used_percent": 75.0}),
        "the last hour's fewest left, the worker's only"
    );
    let out = run(argv(&["status"])).await.unwrap();
    assert!(
        out.contains("75 % of the Admin API's 2000 calls an hour used"),
        "{out}"
    );
    // An explicit name wins over the stack's.
    let err = run(argv(&["--results-table", "no-such-table", "status"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-table"), "{err:#}");
    let err = run(vec![
        "ocr-ctl".into(),
        "--stack-name".into(),
        "no-such-stack".into(),
        "status".into(),
    ])
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("no-such-stack"), "{err:#}");
    cfn.delete_stack().stack_name(&stack).send().await.unwrap();
}

/// Shell completions for the usual shells name every command.
#[tokio::test]
async fn completions_are_printed_for_each_shell() {
    let sdk = aws_config::SdkConfig::builder().build();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let cli = ocr_ctl::Cli::try_parse_from(["ocr-ctl", "completions", shell]).unwrap();
        let mut out = Vec::new();
        let outcome = ocr_ctl::run(cli, &sdk, &mut out).await.unwrap();
        assert_eq!(outcome, ocr_ctl::Outcome::Done);
        let script = String::from_utf8(out).unwrap();
        for command in [
            "export",
            "grep",
            "status",
            "reocr",
            "dead-letters",
            "redrive",
        ] {
            assert!(script.contains(command), "{shell}: no {command}");
        }
    }
}

/// `status` shows how far the backfill is against the assets the lister has seen, the last
/// hour's pace and the ETA, and the DLQ's most common reasons (the same failure counted once
/// whatever its asset).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_shows_progress_pace_and_the_dlqs_top_reasons() {
    let h = seeded().await;
    let now = shared::clock::rfc3339(std::time::SystemTime::now());
    for id in ["recent/1", "recent/2"] {
        let record = ResultRecord::from_outcome(
            id,
            "image",
            "upload",
            OcrOutcome::NoText,
            AssetFields::default(),
            1,
            now.clone(),
        );
        write(&h, &record).await;
    }
    // The lister's last full pass saw 18 assets.
    let checkpoint = shared::store::Checkpoint {
        last_full_pass_listed: 18,
        total_listed: 18,
        ..Default::default()
    };
    // Saved as a lister run saves it: under its lease, given up at the end.
    let store =
        shared::store::DynamoCheckpointStore::new(h.ddb.clone(), &h.stack.names.checkpoint_table);
    let now = std::time::SystemTime::now();
    let lease = shared::store::Lease {
        owner: "status-test".into(),
        expires_at: now + Duration::from_secs(60),
    };
    use shared::store::CheckpointStore as _;
    store.take_lease("lister#test", &lease, now).await.unwrap();
    let saved = store
        .save("lister#test", &checkpoint, &lease)
        .await
        .unwrap();
    assert_eq!(saved, shared::store::SaveOutcome::Saved);
    assert!(store.release_lease("lister#test", &lease).await.unwrap());
    let dlq = &h.stack.dead_letter_queue_url;
    for body in [
        r#"{"v":1,"public_id":"broken/one"}"#,
        r#"{"v":1,"public_id":"broken/one","deferrals":2}"#,
        "{not json",
    ] {
        h.sqs
            .send_message()
            .queue_url(dlq)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let out = ctl(&h, &["status", "--json"]).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let p = &v["progress"];
    assert_eq!(
        (
            p["assets_seen"].as_u64(),
            p["terminal"].as_u64(),
            p["last_hour"].as_u64()
        ),
        (Some(18), Some(9), Some(2)),
        "{v}"
    );
    assert_eq!(p["percent_done"].as_f64(), Some(50.0));
    assert_eq!(p["eta_hours"].as_f64(), Some(4.5), "9 left at 2 an hour");
    assert_eq!(
        v["dlq_top_reasons"],
        serde_json::json!([
            ["HTTP 404: Resource not found", 2],
            [
                "not a work message: message body is not valid JSON: key must be a string at line 1 column 2",
                1
            ]
        ])
    );
    assert_eq!(v["dlq"]["visible"], 3, "the messages stay in the DLQ");
    let text = ctl(&h, &["status"]).await.unwrap();
    assert!(
        text.contains("50.0 %  9 of 18 assets terminal")
            && text.contains("2 in the last hour; ETA about 4.5 h")
            && text.contains("HTTP 404: Resource not found"),
        "{text}"
    );
}

/// `index` builds the search index from the table and then follows it: a re-OCR replaces an
/// item's text, a deleted item leaves the index, a new one joins; `search` ranks, finds
/// phrases, CJK and typos, filters, and exits 1 when nothing matches. An export file builds
/// the same index.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_follows_the_table_through_reocr_and_removal() {
    let h = seeded().await;
    let private = text_record(
        "~private~jp/sign",
        "private",
        "東京駅 八重洲口 STOP".into(),
        Some("ja"),
    );
    write(&h, &private).await;
    put(&h, "signs/stop", Some("STOP\nSTOP STOP"), false).await;
    let dir = temp_path("index");
    let dir_arg = dir.to_str().unwrap();
    let table = h.stack.names.results_table.clone();
    // `search --json ARGS`: the hits and how it ended.
    let search = async |args: &[&str]| {
        let mut a = vec!["--index-dir", dir_arg, "search", "--json"];
        a.extend(args);
        let (out, outcome) = ctl_outcome(&h, &table, &a).await.unwrap();
        let hits: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (hits, outcome)
    };

    // No index yet: a clear error.
    let err = ctl(&h, &["--index-dir", dir_arg, "search", "stop"])
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("ocr-ctl index"), "{err:#}");

    // `index --json ARGS` into `dir`: the update's counts.
    let index = async |dir: &std::path::Path, args: &[&str]| {
        let mut a = vec!["--index-dir", dir.to_str().unwrap(), "index", "--json"];
        a.extend(args);
        let out = ctl(&h, &a).await.unwrap();
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let r = index(&dir, &[]).await;
    assert_eq!(
        (r["read"].as_u64(), r["added"].as_u64()),
        (Some(9), Some(9))
    );

    let (found, outcome) = search(&["stop"]).await;
    assert_eq!(outcome, ocr_ctl::Outcome::Done);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0]["key"], "signs/stop", "more STOPs rank first");
    assert_eq!(found[1]["public_id"], "jp/sign");
    assert_eq!(found[1]["delivery_type"], "private");
    let (from, to) = (
        found[0]["highlights"][0][0].as_u64().unwrap() as usize,
        found[0]["highlights"][0][1].as_u64().unwrap() as usize,
    );
    assert_eq!(&found[0]["snippet"].as_str().unwrap()[from..to], "STOP");

    for (query, key) in [
        ("東京駅", "~private~jp/sign"),
        ("\"he said hi\"", "quotes \"q\""),
        ("café", "unicode/東京 🎉"),
        ("営業時間", "unicode/東京 🎉"),
    ] {
        let keys: Vec<_> = search(&[query])
            .await
            .0
            .iter()
            .map(|h| h["key"].clone())
            .collect();
        assert_eq!(keys, [key], "{query}");
    }
    assert_eq!(
        search(&["--fuzzy", "1", "simpel"]).await.0[0]["key"],
        "plain"
    );
    for filter in [
        &["--type", "upload"][..],
        &["--locale", "en"],
        &["--prefix", "signs/"],
    ] {
        let mut a = filter.to_vec();
        a.push("stop");
        let (found, _) = search(&a).await;
        assert_eq!(found.len(), 1, "{filter:?}");
        assert_eq!(found[0]["key"], "signs/stop", "{filter:?}");
    }

    // A re-OCR, a removal, a new item: one update follows them.
    let mut reocr = text_record("plain", "upload", "replacement words".into(), Some("en"));
    reocr.ocr_at = "2026-02-01T00:00:00Z".into();
    write(&h, &reocr).await;
    h.ddb
        .delete_item()
        .table_name(&table)
        .key(
            "publicId",
            aws_sdk_dynamodb::types::AttributeValue::S("signs/stop".into()),
        )
        .send()
        .await
        .unwrap();
    put(&h, "new/one", Some("a new stop"), false).await;
    let r = index(&dir, &[]).await;
    assert_eq!(
        [
            &r["added"],
            &r["replaced"],
            &r["removed"],
            &r["unchanged"],
            &r["indexed"]
        ],
        [1, 1, 1, 7, 9],
        "{r}"
    );
    for (query, expected) in [
        ("simple", vec![]),
        ("replacement", vec!["plain"]),
        ("stop", vec!["new/one", "~private~jp/sign"]),
    ] {
        let (found, outcome) = search(&[query]).await;
        let mut keys: Vec<String> = found
            .iter()
            .map(|h| h["key"].as_str().unwrap().to_string())
            .collect();
        keys.sort();
        assert_eq!(keys, expected, "{query}");
        let nothing = expected.is_empty();
        assert_eq!(
            outcome == ocr_ctl::Outcome::NothingMatched,
            nothing,
            "{query}"
        );
    }

    // The same index from an export file (gzip-compressed, as the S3 export writes it).
    let export = temp_path("for-index.jsonl");
    ctl(
        &h,
        &[
            "export",
            "--format",
            "jsonl",
            "--out",
            export.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let gz = export.with_extension("jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    std::io::copy(&mut std::fs::File::open(&export).unwrap(), &mut enc).unwrap();
    enc.finish().unwrap();
    let other = temp_path("index-from-file");
    let r = index(&other, &["--from", gz.to_str().unwrap()]).await;
    assert_eq!((&r["added"], &r["indexed"]), (&9.into(), &9.into()), "{r}");
    let in_other = async |args: &[&str]| {
        let mut a = vec!["--index-dir", other.to_str().unwrap(), "search"];
        a.extend(args);
        ctl(&h, &a).await.unwrap()
    };
    let out = in_other(&["replacement"]).await;
    assert!(
        out.contains("plain") && out.contains("1 matching assets"),
        "{out}"
    );
    let out = in_other(&["--count", "--limit", "1", "stop"]).await;
    assert!(out.contains("1 of 2 matching assets shown"), "{out}");
    for p in [&dir, &other] {
        let _cleanup = std::fs::remove_dir_all(p);
    }
    for p in [&export, &gz] {
        let _cleanup = std::fs::remove_file(p);
    }
}

async fn s3_keys(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let listed = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    let mut keys: Vec<String> = listed
        .contents()
        .iter()
        .map(|o| o.key().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

pub(crate) async fn s3_gunzip(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> String {
    let body = s3_bytes(s3, bucket, key).await;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(&body[..]), &mut text)
        .unwrap();
    text
}

/// An object's bytes.
pub(crate) async fn s3_bytes(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
        .to_vec()
}

async fn glue_location(glue: &aws_sdk_glue::Client) -> String {
    glue.get_table()
        .database_name("ocr")
        .name("results")
        .send()
        .await
        .unwrap()
        .table()
        .unwrap()
        .storage_descriptor()
        .unwrap()
        .location()
        .unwrap()
        .to_string()
}

/// An export to S3 is whole or invisible: killed after one uploaded part it leaves no data
/// file, no `_SUCCESS`, no pointer and the Glue table where it was; `--resume` aborts the
/// dead upload, writes the file in several parts and moves the Glue table. A CSV export in
/// three files keeps its header and formula guard per file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_export_to_s3_is_whole_or_invisible_and_resumes() {
    let h = seeded().await;
    let table = h.stack.names.results_table.clone();
    let s3 = plain_s3(&h.sdk);
    let owned = owned_s3(&h.sdk);
    let glue = aws_sdk_glue::Client::new(&h.sdk);
    let bucket = format!("exports-{}", uuid::Uuid::new_v4().simple());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    glue.create_database()
        .database_input(
            aws_sdk_glue::types::DatabaseInput::builder()
                .name("ocr")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .ok();
    let before = format!("s3://{bucket}/ocr/runs/none/data/");
    glue.delete_table()
        .database_name("ocr")
        .name("results")
        .send()
        .await
        .ok();
    glue.create_table()
        .database_name("ocr")
        .table_input(
            aws_sdk_glue::types::TableInput::builder()
                .name("results")
                .storage_descriptor(
                    aws_sdk_glue::types::StorageDescriptor::builder()
                        .location(&before)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    // ~15 MB of hex that gzip shrinks to ~8 MB: two parts of at least 5 MiB each but the last.
    let noise = || {
        (0..500)
            .map(|_| format!("{} ", uuid::Uuid::new_v4().simple()))
            .collect::<String>()
    };
    let mut requests = Vec::new();
    for i in 0..900 {
        let record = text_record(&format!("big/{i:04}"), "upload", noise(), None);
        requests.push(
            aws_sdk_dynamodb::types::WriteRequest::builder()
                .put_request(
                    aws_sdk_dynamodb::types::PutRequest::builder()
                        .set_item(Some(shared::store::dynamodb::to_item(&record)))
                        .build()
                        .unwrap(),
                )
                .build(),
        );
    }
    for chunk in requests.chunks(25) {
        h.ddb
            .batch_write_item()
            .request_items(&table, chunk.to_vec())
            .send()
            .await
            .unwrap();
    }
    let total = 907u64;
    let to: ocr_ctl::export_s3::S3Location = format!("s3://{bucket}/ocr").parse().unwrap();
    let options = ocr_ctl::export_s3::S3ExportOptions {
        segments: 1,
        part_bytes: ocr_ctl::export_s3::MIN_PART_BYTES,
        glue_table: Some("ocr.results".into()),
        stop_after_parts: Some(1),
        ..Default::default()
    };
    let killed = ocr_ctl::export_s3::export_s3(&h.ddb, &owned, &glue, &table, &to, &options).await;
    let err = killed.unwrap_err();
    assert!(err.is::<ocr_ctl::export_s3::StoppedAsKilled>(), "{err:#}");
    let runs = ocr_ctl::export_s3::runs(&owned, &to).await.unwrap();
    assert_eq!(runs.len(), 1);
    let (run, whole) = runs.into_iter().next().unwrap();
    assert!(!whole);
    assert!(
        format!("{err:#}").contains(&format!("--resume {run}` goes on with it")),
        "the error names the run to resume: {err:#}"
    );
    assert_eq!(
        s3_keys(&s3, &bucket, "ocr/").await,
        [format!("ocr/runs/{run}/_run.json")],
        "a killed export shows no data file, no _SUCCESS, no latest.json"
    );
    let uploads = s3
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(uploads.uploads().len(), 1);
    assert_eq!(glue_location(&glue).await, before);

    let resumed = ocr_ctl::export_s3::export_s3(
        &h.ddb,
        &owned,
        &glue,
        &table,
        &to,
        &ocr_ctl::export_s3::S3ExportOptions {
            resume: Some(run.clone()),
            stop_after_parts: None,
            ..options.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!((resumed.aborted_uploads, resumed.written), (1, 1));
    let m = &resumed.manifest;
    assert_eq!((m.rows, m.parts.len()), (total, 1));
    assert!(m.parts[0].bytes > ocr_ctl::export_s3::MIN_PART_BYTES as u64);
    let data = s3_gunzip(&s3, &bucket, &m.parts[0].key).await;
    let rows: Vec<Row> = data
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len() as u64, total);
    assert!(rows.iter().any(|r| r.public_id == "unicode/東京 🎉"));
    let keys = s3_keys(&s3, &bucket, "ocr/").await;
    assert!(
        keys.contains(&format!("ocr/runs/{run}/_SUCCESS")),
        "{keys:?}"
    );
    assert!(keys.contains(&"ocr/latest.json".to_string()), "{keys:?}");
    assert_eq!(glue_location(&glue).await, m.data);
    assert_eq!(m.data, format!("s3://{bucket}/ocr/runs/{run}/data/"));
    let uploads = s3
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty());
    assert!(ocr_ctl::export_s3::runs(&owned, &to).await.unwrap()[&run]);

    // CSV in three files, through the command line.
    put(&h, "formula", Some("=HYPERLINK(\"http://x\")"), false).await;
    let url = format!("s3://{bucket}/csv/");
    let out = ctl(
        &h,
        &["export", "--to", &url, "--format", "csv", "--segments", "3"],
    )
    .await
    .unwrap();
    assert!(
        out.contains(&format!("exported {} rows", total + 1)),
        "{out}"
    );
    let csv_to: ocr_ctl::export_s3::S3Location = url.parse().unwrap();
    let runs = ocr_ctl::export_s3::runs(&owned, &csv_to).await.unwrap();
    let (run, whole) = runs.into_iter().next().unwrap();
    assert!(whole);
    let files: Vec<String> = s3_keys(&s3, &bucket, &format!("csv/runs/{run}/data/")).await;
    assert_eq!(files.len(), 3, "{files:?}");
    let mut rows = 0;
    let mut guarded = false;
    for f in &files {
        assert!(f.ends_with("-of-00003.csv.gz"), "{f}");
        let text = s3_gunzip(&s3, &bucket, f).await;
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(&reader.headers().unwrap()[0], "public_id");
        for row in reader.deserialize::<Row>() {
            let row = row.unwrap();
            guarded |= row.public_id == "formula" && row.text.starts_with("'=HYPERLINK");
            rows += 1;
        }
    }
    assert_eq!(rows, total + 1);
    assert!(guarded);
    let err = ctl(
        &h,
        &["export", "--to", &url, "--resume", "19700101T000000Z"],
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("nothing to resume"), "{err:#}");
}
