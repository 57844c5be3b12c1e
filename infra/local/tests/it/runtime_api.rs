//! The release `bootstrap` binaries against a minimal Lambda Runtime API served here, with a
//! real SQS event and a real scheduled event: the binary that ships, not only its handler.
//! Also measures each binary's start-up (exec to first poll) and proves the Cloudinary secret
//! never reaches its output.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::{Harness, asset, s};
use local_stack::runtime_api::{Invocation, invoke_bootstrap};

/// Which build of a function runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Build {
    /// The release build for this machine.
    Host,
    /// The artefact `sam build` made for Lambda (arm64), run under qemu's user-mode emulator.
    Shipped,
}

pub(crate) const BUILDS: [Build; 2] = [Build::Host, Build::Shipped];

fn command(name: &str, build: Build) -> tokio::process::Command {
    match build {
        Build::Host => {
            let target = std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
            let path = target.join("release").join(name);
            assert!(
                path.exists(),
                "{} is not built: `make test` builds the release binaries first",
                path.display()
            );
            tokio::process::Command::new(path)
        }
        Build::Shipped => {
            let function = if name == "worker" {
                "WorkerFunction"
            } else {
                "ListerFunction"
            };
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../.aws-sam/build")
                .join(function)
                .join("bootstrap");
            assert!(
                path.exists(),
                "{} is not built: `make test` runs `make build` first",
                path.display()
            );
            let sysroot = "/usr/aarch64-linux-gnu";
            assert!(
                std::path::Path::new(sysroot)
                    .join("lib/ld-linux-aarch64.so.1")
                    .exists(),
                "the arm64 C library is missing: infra/scripts/arm64-runner.sh installs it"
            );
            let mut c = tokio::process::Command::new("qemu-aarch64-static");
            c.arg("-L").arg(sysroot).arg(path);
            c
        }
    }
}

/// Serves one event to the binary and returns its answer, start-up time and output.
async fn invoke(binary: &str, build: Build, env: &[(String, String)], event: String) -> Invocation {
    invoke_at_level(binary, build, env, event, "DEBUG").await
}

/// [`invoke`] with the function's application log level `level` (TRACE ... FATAL).
pub(crate) async fn invoke_at_level(
    binary: &str,
    build: Build,
    env: &[(String, String)],
    event: String,
    level: &str,
) -> Invocation {
    // What Lambda hands a function whose LoggingConfig sets LogFormat JSON and an
    // ApplicationLogLevel.
    let mut env = env.to_vec();
    env.push(("AWS_LAMBDA_LOG_LEVEL".into(), level.into()));
    env.push(("AWS_LAMBDA_LOG_FORMAT".into(), "JSON".into()));
    invoke_bootstrap(
        command(binary, build),
        binary,
        &env,
        event,
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| panic!("running the {binary} bootstrap: {e:#}"))
}

/// The invocation's successful answer; anything else fails the test with the output.
pub(crate) fn answered(run: &Invocation) -> String {
    match &run.answer {
        Some(Ok(body)) => body.clone(),
        other => panic!("the binary did not answer: {other:?}\n{}", run.output),
    }
}

pub(crate) fn function_env(h: &Harness) -> Vec<(String, String)> {
    let endpoint = local_stack::aws::local_endpoint().unwrap_or_else(|e| panic!("{e}"));
    let mut env = h.stack.function_env();
    env.extend([
        ("AWS_ENDPOINT_URL", endpoint),
        ("CLOUDINARY_URL", h.emulator.cloudinary_url()),
        ("CLOUDINARY_API_BASE", h.emulator.base_url()),
    ]);
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn assert_secret_absent(h: &Harness, output: &str) {
    let secret = h.emulator.config().api_secret;
    assert!(!output.is_empty(), "the binary logged nothing");
    assert!(
        !output.contains(&secret),
        "the Cloudinary secret appears in the binary's output"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_worker_binary_answers_a_real_sqs_event() {
    for build in BUILDS {
        worker_answers(build).await;
    }
}

async fn worker_answers(build: Build) {
    let h = Harness::new(
        vec![asset("street signs/stop & go?", Some("WAITING?\n"))],
        crate::common::stack_settings(),
        |_| {},
    )
    .await;
    let event = include_str!("../../../../events/worker-sqs.json").to_string();
    let run = invoke("worker", build, &function_env(&h), event).await;
    let body = answered(&run);
    let response: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        response["batchItemFailures"],
        serde_json::json!([{"itemIdentifier": "2e1424d4-f796-459a-8184-9c92662be6da"}]),
        "the malformed record fails, for the redrive policy to move: {body}"
    );
    let item = h
        .item("street signs/stop & go?")
        .await
        .expect("stored by the binary");
    assert_eq!(s(&item, "text").as_deref(), Some("WAITING?\n"));
    assert!(
        h.dlq().await.is_empty(),
        "the worker never sends to the DLQ"
    );
    let record_lines: Vec<serde_json::Value> = run
        .output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l.to_string().contains("\"message_id\""))
        .collect();
    assert!(
        record_lines.len() >= 2,
        "JSON logs carry the message id: {}",
        run.output
    );
    for line in &record_lines {
        let spans = line["spans"].to_string();
        assert!(
            spans.contains("\"requestId\":\"req-1\""),
            "every record's line names the invocation: {line}"
        );
        assert!(
            line["level"].is_string(),
            "a level for Lambda's filter: {line}"
        );
    }
    assert!(
        run.output.contains("\"level\":\"DEBUG\""),
        "Lambda's log level (DEBUG) is honoured: {}",
        run.output
    );
    assert_secret_absent(&h, &run.output);
    assert!(
        run.output.contains("\"CloudWatchMetrics\""),
        "an EMF metrics line: {}",
        run.output
    );
    println!(
        "worker bootstrap ({build:?}): exec to first Runtime API poll {:?}",
        run.init
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lister_binary_answers_a_real_scheduled_event() {
    for build in BUILDS {
        lister_answers(build).await;
    }
}

async fn lister_answers(build: Build) {
    let h = Harness::new(
        cloudinary_emulator::generate(30),
        crate::common::stack_settings(),
        |_| {},
    )
    .await;
    let event = include_str!("../../../../events/lister-schedule.json").to_string();
    let run = invoke("lister", build, &function_env(&h), event).await;
    let body = answered(&run);
    let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(summary["stop"], "pass_complete", "{body}");
    assert_eq!(summary["enqueued"], 30);
    assert_secret_absent(&h, &run.output);
    assert!(
        run.output.contains("\"CloudWatchMetrics\""),
        "an EMF metrics line: {}",
        run.output
    );
    println!(
        "lister bootstrap ({build:?}): exec to first Runtime API poll {:?}",
        run.init
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_configuration_is_an_init_error_that_names_the_variable() {
    let h = Harness::new(vec![], crate::common::stack_settings(), |_| {}).await;
    let env: Vec<(String, String)> = function_env(&h)
        .into_iter()
        .filter(|(k, _)| k != "RESULTS_TABLE")
        .collect();
    let run = invoke("worker", Build::Shipped, &env, "{}".into()).await;
    // The runtime loop is never reached: the process exits with the error, which Lambda logs.
    assert!(run.answer.is_none(), "no invocation was answered");
    assert!(
        run.output.contains("RESULTS_TABLE is not set"),
        "{}",
        run.output
    );
}
