//! The bootstraps at each application log level the template allows, their output put through
//! Lambda's log-level filter as its documentation states it: every line must carry what the
//! filter reads, and every metric line must come through it, or the alarms on those metrics go
//! blind (and one that treats missing data as breaching fires for ever).

use serde_json::Value;

use crate::common::{Harness, asset};
use crate::runtime_api::{BUILDS, Build, answered, function_env, invoke_at_level};

/// Lambda's application log levels, least severe ("most detail") first: the template's
/// `LogLevel` allows each of them.
const LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];

fn rank(level: &str) -> Option<usize> {
    LEVELS.iter().position(|l| l.eq_ignore_ascii_case(level))
}

const INFO: usize = 2;

/// The level Lambda gives a JSON line, as "Log-level filtering"
/// (<https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-log-level.html>)
/// states it for runtimes it does not format itself: "If the "level" value field is invalid or
/// missing, Lambda will assign the log output the level INFO. For Lambda to use the timestamp
/// field, you must specify the time in valid RFC 3339 timestamp format. If you don't supply a
/// valid timestamp, Lambda will assign the log the level INFO and add a timestamp for you."
/// Its own example line spells the level in lower case ("debug"), so case does not matter.
fn level_lambda_gives(line: &Value) -> usize {
    if line["timestamp"]
        .as_str()
        .and_then(shared::clock::parse_rfc3339)
        .is_none()
    {
        return INFO;
    }
    line["level"].as_str().and_then(rank).unwrap_or(INFO)
}

/// Whether Lambda sends the line on to CloudWatch Logs at the function's level: "Lambda can
/// filter your function's logs so that only logs of a certain detail level or lower are sent
/// to CloudWatch Logs" (same page); "Lambda sends logs of the selected detail level and lower
/// to CloudWatch. For example, if you configure a log level of WARN, Lambda will send logs
/// corresponding to the WARN, ERROR, and FATAL levels."
/// (<https://docs.aws.amazon.com/lambda/latest/dg/csharp-logging.html>).
fn lambda_keeps(line: &Value, function_level: &str) -> bool {
    level_lambda_gives(line) >= rank(function_level).expect("one of Lambda's levels")
}

/// Checks every line one run wrote at `level`; the number of metric lines among them.
fn check_lines(what: &str, level: &str, output: &str) -> usize {
    let mut metric_lines = 0;
    for text in output.lines().filter(|l| !l.trim().is_empty()) {
        let line: Value = serde_json::from_str(text)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| {
                panic!("{what} at {level}: a line that is not a JSON object, with no level: {text}")
            });
        assert!(
            line["level"].as_str().and_then(rank).is_some(),
            "{what} at {level}: no `level` Lambda knows: {text}"
        );
        assert!(
            line["timestamp"]
                .as_str()
                .and_then(shared::clock::parse_rfc3339)
                .is_some(),
            "{what} at {level}: no RFC 3339 `timestamp`: {text}"
        );
        // Nothing is written only for Lambda to throw away (at FATAL, no tracing line at all).
        assert!(
            lambda_keeps(&line, level),
            "{what} at {level}: a line Lambda drops: {text}"
        );
        if line["_aws"]["CloudWatchMetrics"].is_array() {
            metric_lines += 1;
            // Kept (above), and no more severe than it has to be: INFO up to INFO.
            let most = rank(level).unwrap().max(INFO);
            assert!(
                level_lambda_gives(&line) <= most,
                "{what} at {level}: a metric line posing as {}: {text}",
                line["level"]
            );
        }
    }
    metric_lines
}

async fn run_at(function: &str, build: Build, level: &str) {
    let (h, event) = if function == "worker" {
        let h = Harness::new(
            vec![asset("street signs/stop & go?", Some("WAITING?\n"))],
            crate::common::stack_settings(),
            |_| {},
        )
        .await;
        let event = include_str!("../../../../events/worker-sqs.json");
        (h, event)
    } else {
        let h = Harness::new(
            cloudinary_emulator::generate(30),
            crate::common::stack_settings(),
            |_| {},
        )
        .await;
        (h, include_str!("../../../../events/lister-schedule.json"))
    };
    let run = invoke_at_level(function, build, &function_env(&h), event.into(), level).await;
    answered(&run);
    let what = format!("the {function} bootstrap ({build:?})");
    let metric_lines = check_lines(&what, level, &run.output);
    assert!(
        metric_lines >= 1,
        "{what} at {level} printed no metric line, so none was checked:\n{}",
        run.output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_worker_s_lines_and_metrics_pass_lambdas_filter_at_every_log_level() {
    for build in BUILDS {
        for level in LEVELS {
            run_at("worker", build, level).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lister_s_lines_and_metrics_pass_lambdas_filter_at_every_log_level() {
    for build in BUILDS {
        for level in LEVELS {
            run_at("lister", build, level).await;
        }
    }
}

/// A function that cannot start says why at every level: the reason is a FATAL line, not the
/// ERROR that Lambda drops at FATAL, nor plain text that it counts as INFO.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_up_failure_is_kept_at_every_log_level() {
    let h = Harness::new(vec![], crate::common::stack_settings(), |_| {}).await;
    let env: Vec<(String, String)> = function_env(&h)
        .into_iter()
        .filter(|(k, _)| k != "RESULTS_TABLE")
        .collect();
    for build in BUILDS {
        for level in LEVELS {
            let run = invoke_at_level("worker", build, &env, "{}".into(), level).await;
            assert!(run.answer.is_none(), "no invocation was answered");
            let what = format!("the worker bootstrap ({build:?}), misconfigured,");
            check_lines(&what, level, &run.output);
            let reason = run
                .output
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l.to_string().contains("RESULTS_TABLE is not set"))
                .unwrap_or_else(|| panic!("{what} at {level} says nothing: {}", run.output));
            assert!(
                lambda_keeps(&reason, level),
                "{what} at {level}: Lambda drops the reason: {reason}"
            );
        }
    }
}

/// The filter above, on the documentation's own example and its edge cases.
#[test]
fn the_filter_reads_lines_as_lambdas_documentation_says() {
    let line = |s: &str| serde_json::from_str::<Value>(s).unwrap();
    let example = line(
        r#"{"level": "debug", "msg": "my debug log", "timestamp": "2024-11-02T16:51:31.587199Z"}"#,
    );
    assert_eq!(level_lambda_gives(&example), rank("DEBUG").unwrap());
    assert!(lambda_keeps(&example, "TRACE") && lambda_keeps(&example, "DEBUG"));
    assert!(!lambda_keeps(&example, "INFO"));
    let no_level = line(r#"{"timestamp": "2024-11-02T16:51:31Z"}"#);
    let bad_level = line(r#"{"level": "loud", "timestamp": "2024-11-02T16:51:31Z"}"#);
    let no_time = line(r#"{"level": "ERROR"}"#);
    let bad_time = line(r#"{"level": "ERROR", "timestamp": "2024-11-02 16:51"}"#);
    for info in [&no_level, &bad_level, &no_time, &bad_time] {
        assert_eq!(level_lambda_gives(info), INFO, "{info}");
        assert!(lambda_keeps(info, "INFO") && !lambda_keeps(info, "WARN"));
    }
    let fatal = line(r#"{"level": "FATAL", "timestamp": "2024-11-02T16:51:31.5+01:00"}"#);
    assert!(LEVELS.iter().all(|l| lambda_keeps(&fatal, l)));
}
