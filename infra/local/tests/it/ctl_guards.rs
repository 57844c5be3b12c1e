//! `ocr-ctl`'s guards against moto: stored control characters never reach the terminal, the
//! Cloudinary secret is stored only when well formed and never printed, every S3 request names
//! the account that must own its bucket (read off the wire: moto ignores the header), and the
//! stack's export refuses CSV before it writes anything.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use clap::Parser;
use shared::store::ResultRecord;

use crate::common::Harness;
use crate::ctl::{MOTO_ACCOUNT, ctl, plain_s3, put, seeded, temp_path, write};

/// `ocr-ctl ARGS` on the harness's tables and queues, through `sdk`, with standard output a
/// terminal or not: what it printed and how it ended.
async fn ctl_with(
    h: &Harness,
    sdk: &aws_config::SdkConfig,
    terminal: bool,
    args: &[&str],
) -> anyhow::Result<(String, ocr_ctl::Outcome)> {
    let mut argv = vec![
        "ocr-ctl".to_string(),
        "--results-table".into(),
        h.stack.names.results_table.clone(),
        "--queue-url".into(),
        h.stack.work_queue_url.clone(),
        "--dlq-url".into(),
        h.stack.dead_letter_queue_url.clone(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let mut cli = ocr_ctl::Cli::try_parse_from(argv)?;
    cli.terminal = terminal;
    let mut out = Vec::new();
    let outcome = ocr_ctl::run(cli, sdk, &mut out).await?;
    Ok((String::from_utf8(out).unwrap(), outcome))
}

/// A stack in moto's CloudFormation with these outputs: its name and id (an ARN).
async fn stack_with(h: &Harness, outputs: &[(&str, &str)]) -> (String, String) {
    let cfn = aws_sdk_cloudformation::Client::new(&h.sdk);
    let name = format!("guards-{}", uuid::Uuid::new_v4().simple());
    let outputs: serde_json::Map<String, serde_json::Value> = outputs
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::json!({ "Value": v })))
        .collect();
    let template = serde_json::json!({
        "Resources": {"Marker": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": name.clone()}}},
        "Outputs": outputs,
    });
    let id = cfn
        .create_stack()
        .stack_name(&name)
        .template_body(template.to_string())
        .send()
        .await
        .expect("create the stack")
        .stack_id
        .expect("a stack id");
    (name, id)
}

/// Every control character of `out` is one the format writes itself: the tab between fields
/// and the line break after a record.
fn assert_only_the_format_s_controls(out: &str) {
    let controls: Vec<char> = out
        .chars()
        .filter(|c| c.is_control() && !matches!(c, '\t' | '\n'))
        .collect();
    assert!(
        controls.is_empty(),
        "{controls:?} reach the terminal: {out:?}"
    );
}

const EVIL_KEY: &str = "evil/\x1b]0;owned\x07name";
const EVIL_KEY_SHOWN: &str = "evil/\\x1b]0;owned\\x07name";
const EVIL_TEXT: &str = "total\x1b[2J due\nsecond \u{9b}31m line\twith tab";

/// A text and a public id holding a screen clear, a window-title sequence, a C1 CSI and a tab:
/// `grep`, `search`, `search --regex`, `dead-letters` and `extract` to a terminal show them
/// written out, with their own tabs, line breaks and `>>`/`<<` marks intact; `--json` and
/// `extract` to a pipe keep the exact values.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stored_control_characters_reach_the_terminal_written_out() {
    let h = seeded().await;
    put(&h, EVIL_KEY, Some(EVIL_TEXT), false).await;

    let out = ctl(&h, &["grep", "due"]).await.unwrap();
    assert_eq!(out, format!("{EVIL_KEY_SHOWN}\ttotal\\x1b[2J due\n"));
    let out = ctl(&h, &["grep", "31m"]).await.unwrap();
    assert_eq!(
        out,
        format!("{EVIL_KEY_SHOWN}\tsecond \\u{{9b}}31m line\\twith tab\n")
    );
    // A line break in a key stays inside its record.
    let out = ctl(&h, &["grep", "leading"]).await.unwrap();
    assert_eq!(out, "multi\\nline id\tleading newlines\n");

    // JSON: the exact values, and still no raw escape on the terminal.
    let out = ctl(&h, &["grep", "--json", "due"]).await.unwrap();
    assert_only_the_format_s_controls(&out);
    let row: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(
        (row["key"].as_str(), row["line"].as_str()),
        (Some(EVIL_KEY), Some("total\x1b[2J due"))
    );
    let out = ctl(&h, &["grep", "--json", "31m"]).await.unwrap();
    assert!(out.contains("\\u009b31m"), "{out}");
    let row: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(row["line"], "second \u{9b}31m line\twith tab");

    // The index's snippets and lines: the text escaped, the marks as ever.
    let dir = temp_path("guard-index");
    let dir_arg = dir.to_str().unwrap();
    ctl(&h, &["--index-dir", dir_arg, "index"]).await.unwrap();
    let out = ctl(&h, &["--index-dir", dir_arg, "search", "due"])
        .await
        .unwrap();
    assert_only_the_format_s_controls(&out);
    assert!(
        out.contains(&format!(
            "{EVIL_KEY_SHOWN}\ttotal\\x1b[2J >>due<< second \\u{{9b}}31m line with tab"
        )),
        "{out}"
    );
    let out = ctl(&h, &["--index-dir", dir_arg, "search", "--regex", "due"])
        .await
        .unwrap();
    assert_only_the_format_s_controls(&out);
    assert!(
        out.contains(&format!("{EVIL_KEY_SHOWN}:1\ttotal\\x1b[2J >>due<<")),
        "{out}"
    );
    let out = ctl(&h, &["--index-dir", dir_arg, "search", "--json", "due"])
        .await
        .unwrap();
    let hit: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(hit["key"], EVIL_KEY);
    let _cleanup = std::fs::remove_dir_all(&dir);

    // A dead letter whose asset failed with such a reason.
    let dead = "dl/\x1b[31mred";
    let failed = ResultRecord::failed(
        dead,
        "image",
        "upload",
        "HTTP 500: \x1b[2Jgone",
        1,
        "2026-01-01T00:00:00Z".into(),
    );
    write(&h, &failed).await;
    h.sqs
        .send_message()
        .queue_url(&h.stack.dead_letter_queue_url)
        .message_body(shared::message::WorkMessage::new(dead, "image", "upload").to_body())
        .send()
        .await
        .unwrap();
    let out = ctl(&h, &["dead-letters"]).await.unwrap();
    assert_only_the_format_s_controls(&out);
    assert!(
        out.contains("\tdl/\\x1b[31mred\t") && out.contains("\tHTTP 500: \\x1b[2Jgone\n"),
        "{out}"
    );

    // extract's CSV to a terminal is escaped; to a pipe, exact.
    let export = temp_path("guard.jsonl");
    let export_arg = export.to_str().unwrap();
    ctl(&h, &["export", "--format", "jsonl", "--out", export_arg])
        .await
        .unwrap();
    let (shown, _) = ctl_with(&h, &h.sdk, true, &["extract", "due", "--from", export_arg])
        .await
        .unwrap();
    assert_only_the_format_s_controls(&shown);
    assert!(
        shown.contains(&format!(
            "{EVIL_KEY_SHOWN},{EVIL_KEY_SHOWN},due,1,total\\x1b[2J due"
        )),
        "{shown}"
    );
    let (piped, _) = ctl_with(&h, &h.sdk, false, &["extract", "due", "--from", export_arg])
        .await
        .unwrap();
    let mut reader = csv::Reader::from_reader(piped.as_bytes());
    let row = reader.records().next().unwrap().unwrap();
    assert_eq!((&row[0], &row[4]), (EVIL_KEY, "total\x1b[2J due"));
    let _cleanup = std::fs::remove_file(&export);
}

/// `secret set` stores a well-formed CLOUDINARY_URL in the stack's secret (the one its output
/// CloudinarySecretArn names) as the functions then read it, one trailing line break taken
/// off, and prints the cloud name and API key only; a malformed value is refused without
/// being shown and leaves the secret as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secret_set_stores_a_checked_url_and_never_prints_it() {
    let h = seeded().await;
    let sm = aws_sdk_secretsmanager::Client::new(&h.sdk);
    let arn = sm
        .create_secret()
        .name(format!("cloudinary-{}", uuid::Uuid::new_v4().simple()))
        .secret_string("not set: put CLOUDINARY_URL here")
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    let (stack, _) = stack_with(&h, &[("CloudinarySecretArn", &arn)]).await;
    let current = async || {
        let v = sm.get_secret_value().secret_id(&arn).send().await.unwrap();
        (
            v.secret_string.unwrap_or_default(),
            v.version_id.unwrap_or_default(),
        )
    };
    let secret = "Sup3r-s3cret_Value";
    let url = format!("cloudinary://123456789012345:{secret}@my-cloud");
    let file = temp_path("cloudinary-url.txt");
    let file_arg = file.to_str().unwrap().to_string();

    std::fs::write(&file, format!("{url}\n")).unwrap();
    let (out, _) = ctl_with(
        &h,
        &h.sdk,
        false,
        &[
            "--stack-name",
            &stack,
            "secret",
            "set",
            "--from-file",
            &file_arg,
        ],
    )
    .await
    .unwrap();
    assert!(
        out.contains("cloud my-cloud") && out.contains("API key 123456789012345"),
        "{out}"
    );
    assert!(out.contains(&arn), "{out}");
    assert!(!out.contains(secret), "the secret is printed: {out}");
    let (stored, version) = current().await;
    assert_eq!(stored, url, "stored without its line break");
    let read = shared::secrets::read_cloudinary_url(&h.sdk, &arn)
        .await
        .unwrap();
    let credentials = shared::cloudinary::CloudinaryCredentials::parse(&read).unwrap();
    assert_eq!(
        (
            credentials.cloud_name.as_str(),
            credentials.api_secret.expose()
        ),
        ("my-cloud", secret),
        "the functions read what was stored"
    );

    for bad in [
        format!("cloudinary://123456789012345:{secret}"),
        format!("https://123456789012345:{secret}@my-cloud"),
        format!("cloudinary://123456789012345:{secret}@my-cloud \n"),
        format!("{url}\n{url}\n"),
        String::new(),
    ] {
        std::fs::write(&file, &bad).unwrap();
        let err = ctl_with(
            &h,
            &h.sdk,
            false,
            &[
                "secret",
                "set",
                "--secret-arn",
                &arn,
                "--from-file",
                &file_arg,
            ],
        )
        .await
        .unwrap_err();
        let shown = format!("{err:#} {err:?}");
        assert!(!shown.contains(secret), "{bad:?}: {shown}");
        assert!(shown.contains("nothing was stored"), "{bad:?}: {shown}");
        assert_eq!(
            current().await,
            (url.clone(), version.clone()),
            "{bad:?}: the secret changed"
        );
    }

    // No secret named: it says how to name one; a secret that does not exist is a clear error.
    std::fs::write(&file, &url).unwrap();
    let err = ctl_with(
        &h,
        &h.sdk,
        false,
        &["secret", "set", "--from-file", &file_arg],
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("--secret-arn"), "{err:#}");
    let err = ctl_with(
        &h,
        &h.sdk,
        false,
        &[
            "secret",
            "set",
            "--secret-arn",
            "no-such-secret",
            "--from-file",
            &file_arg,
        ],
    )
    .await
    .unwrap_err();
    let shown = format!("{err:#}");
    assert!(
        shown.contains("no such secret") && !shown.contains(secret),
        "{shown}"
    );
    let _cleanup = std::fs::remove_file(&file);
}

/// One request as it left the SDK.
#[derive(Debug, Clone)]
struct Sent {
    /// The signing scope's service: `s3`, `sts`, `dynamodb`, ...
    service: String,
    /// For S3, the operation read from the method and the URL; else empty.
    operation: String,
    /// `x-amz-expected-bucket-owner`.
    owner: Option<String>,
}

type Log = Arc<Mutex<Vec<Sent>>>;

/// The SDK's own HTTP client, noting each request before it sends it.
#[derive(Debug, Clone)]
struct Recording {
    inner: SharedHttpClient,
    log: Log,
}

#[derive(Debug)]
struct RecordingConnector {
    inner: SharedHttpConnector,
    log: Log,
}

impl HttpClient for Recording {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(RecordingConnector {
            inner: self.inner.http_connector(settings, components),
            log: self.log.clone(),
        })
    }
}

impl HttpConnector for RecordingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let header = |name: &str| request.headers().get(name).map(str::to_string);
        let service = header("authorization")
            .and_then(|a| {
                let scope = a
                    .split("Credential=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .to_string();
                scope.split('/').nth(3).map(str::to_string)
            })
            .unwrap_or_default();
        let operation = if service == "s3" {
            s3_operation(request.method(), request.uri())
        } else {
            String::new()
        };
        self.log.lock().unwrap().push(Sent {
            service,
            operation,
            owner: header(ocr_ctl::bucket_owner::HEADER),
        });
        self.inner.call(request)
    }
}

/// The S3 operation a path-style request is.
fn s3_operation(method: &str, uri: &str) -> String {
    let path_and_query = match uri.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => uri,
    };
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let has = |name: &str| {
        query
            .split('&')
            .any(|p| p == name || p.starts_with(&format!("{name}=")))
    };
    let object = path
        .trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(_, key)| !key.is_empty());
    let named = match (method, object) {
        ("HEAD", false) => "HeadBucket",
        ("GET", false) if has("list-type") => "ListObjectsV2",
        ("GET", false) if has("uploads") => "ListMultipartUploads",
        ("GET", true) => "GetObject",
        ("HEAD", true) => "HeadObject",
        ("PUT", true) if has("partNumber") => "UploadPart",
        ("PUT", true) => "PutObject",
        ("POST", true) if has("uploads") => "CreateMultipartUpload",
        ("POST", true) if has("uploadId") => "CompleteMultipartUpload",
        ("DELETE", true) if has("uploadId") => "AbortMultipartUpload",
        ("DELETE", true) => "DeleteObject",
        _ => return format!("{method} {path_and_query}"),
    };
    named.to_string()
}

/// `sdk` with its requests noted in the returned log, sent by the HTTP client the SDK uses by
/// default.
fn recording(sdk: &aws_config::SdkConfig) -> (aws_config::SdkConfig, Log) {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let log = Log::default();
    let inner = sdk.http_client().unwrap_or_else(|| {
        aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
            .build_https()
    });
    let client = Recording {
        inner,
        log: log.clone(),
    };
    let sdk = sdk.to_builder().http_client(client).build();
    (sdk, log)
}

/// The S3 operations noted, each with the owner it named.
fn s3_requests(log: &Log) -> Vec<(String, Option<String>)> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.service == "s3")
        .map(|s| (s.operation.clone(), s.owner.clone()))
        .collect()
}

/// Every S3 request noted named `owner`; the operations, added to `seen`.
fn assert_all_name(log: &Log, owner: &str, seen: &mut BTreeSet<String>) {
    let requests = s3_requests(log);
    assert!(!requests.is_empty(), "no S3 request noted");
    for (operation, named) in &requests {
        assert_eq!(named.as_deref(), Some(owner), "{operation} of {requests:?}");
        seen.insert(operation.clone());
    }
}

fn sts_calls(log: &Log) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.service == "sts")
        .count()
}

/// Each S3 operation `ocr-ctl` makes, read off the wire, names the account that must own the
/// bucket: `--bucket-owner` when given, else the stack's account, else the credentials' (STS,
/// asked only then). The recorder sees a request without the header, so one S3 call without
/// it fails this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_s3_request_names_the_account_that_must_own_the_bucket() {
    let h = seeded().await;
    let s3 = plain_s3(&h.sdk);
    let bucket = format!("owned-{}", uuid::Uuid::new_v4().simple());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let url = format!("s3://{bucket}/x/");
    let mut seen = BTreeSet::new();

    // The recorder notes a request that lacks the header.
    let (sdk, log) = recording(&h.sdk);
    plain_s3(&sdk)
        .head_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let noted = s3_requests(&log);
    assert_eq!(noted.len(), 1);
    assert_eq!(noted[0], ("HeadBucket".to_string(), None));

    // --bucket-owner: that account, and no question to STS.
    let (sdk, log) = recording(&h.sdk);
    let args = [
        "export",
        "--to",
        &url,
        "--segments",
        "2",
        "--bucket-owner",
        "111122223333",
    ];
    let (out, _) = ctl_with(&h, &sdk, false, &args).await.unwrap();
    assert!(out.contains("exported 7 rows"), "{out}");
    assert_all_name(&log, "111122223333", &mut seen);
    assert_eq!(sts_calls(&log), 0);

    // A run to resume: one file's marker gone, and an upload a killed export left.
    let listed = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("x/runs/")
        .send()
        .await
        .unwrap();
    let marker = listed
        .contents()
        .iter()
        .filter_map(|o| o.key())
        .find(|k| k.ends_with("_parts/part-00001.json"))
        .expect("the second file's marker")
        .to_string();
    let run = marker.split('/').nth(2).unwrap().to_string();
    for key in [marker.clone(), format!("x/runs/{run}/_SUCCESS")] {
        s3.delete_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap();
    }
    s3.create_multipart_upload()
        .bucket(&bucket)
        .key(format!("x/runs/{run}/data/part-00001-of-00002.jsonl.gz"))
        .send()
        .await
        .unwrap();

    // No flag, no stack: the credentials' account, from STS.
    let (sdk, log) = recording(&h.sdk);
    let (out, _) = ctl_with(&h, &sdk, false, &["export", "--to", &url, "--resume", &run])
        .await
        .unwrap();
    assert!(out.contains("(2 files, 1 written now)"), "{out}");
    assert_all_name(&log, MOTO_ACCOUNT, &mut seen);
    assert_eq!(sts_calls(&log), 1);

    // A large upload, in parts.
    let (sdk, log) = recording(&h.sdk);
    let file = temp_path("owned-big.csv");
    let body: String = (0..11 * 1024 * 64).map(|i| format!("{i:015}\n")).collect();
    std::fs::write(&file, &body).unwrap();
    let owned = ocr_ctl::bucket_owner::OwnerCheckedS3::new(&sdk, "444455556666".parse().unwrap());
    ocr_ctl::extract::upload(&owned, &bucket, "big.csv", &file, 5 << 20)
        .await
        .unwrap();
    assert_all_name(&log, "444455556666", &mut seen);
    let _cleanup = std::fs::remove_file(&file);

    // A stack named: its account, read from its ARN, and no question to STS.
    let (stack, stack_id) = stack_with(&h, &[]).await;
    let account = ocr_ctl::bucket_owner::account_of_arn(&stack_id)
        .unwrap()
        .to_string();
    let export = temp_path("owned.jsonl");
    let export_arg = export.to_str().unwrap();
    ctl(&h, &["export", "--format", "jsonl", "--out", export_arg])
        .await
        .unwrap();
    let (sdk, log) = recording(&h.sdk);
    let to = format!("s3://{bucket}/mined/simple.csv");
    let args = [
        "--stack-name",
        &stack,
        "extract",
        "simple",
        "--from",
        export_arg,
        "--to",
        &to,
    ];
    ctl_with(&h, &sdk, false, &args).await.unwrap();
    assert_all_name(&log, &account, &mut seen);
    assert_eq!(sts_calls(&log), 0);
    let _cleanup = std::fs::remove_file(&export);

    let every: BTreeSet<String> = [
        "HeadBucket",
        "GetObject",
        "PutObject",
        "ListObjectsV2",
        "ListMultipartUploads",
        "AbortMultipartUpload",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(seen, every, "the operations ocr-ctl makes, each seen named");
}

/// `export --to stack --format csv` is refused before a request reaches S3, Glue or DynamoDB:
/// the stack's Glue table reads gzip JSON lines; the error says so and what to use instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_stack_s_export_refuses_csv_before_writing_anything() {
    let h = seeded().await;
    let s3 = plain_s3(&h.sdk);
    let bucket = format!("stack-export-{}", uuid::Uuid::new_v4().simple());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let location = format!("s3://{bucket}/ocr-export/");
    let (stack, _) = stack_with(
        &h,
        &[
            ("ExportLocation", &location),
            ("ExportGlueTable", "ocr.results"),
        ],
    )
    .await;
    let (sdk, log) = recording(&h.sdk);
    let err = ctl_with(
        &h,
        &sdk,
        false,
        &[
            "--stack-name",
            &stack,
            "export",
            "--to",
            "stack",
            "--format",
            "csv",
        ],
    )
    .await
    .unwrap_err();
    let shown = format!("{err:#}");
    assert!(
        shown.contains("Glue table")
            && shown.contains("gzip JSON lines")
            && shown.contains("nothing was written")
            && shown.contains("--to s3://BUCKET/PREFIX/ --format csv"),
        "{shown}"
    );
    let services: BTreeSet<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.service.clone())
        .collect();
    assert_eq!(
        services,
        BTreeSet::from(["cloudformation".to_string()]),
        "only the stack's outputs were read"
    );
    let listed = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    assert!(
        listed.contents().is_empty(),
        "nothing in the stack's bucket"
    );
}
