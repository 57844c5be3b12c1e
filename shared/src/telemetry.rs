//! Logging set-up shared by the functions and the local tools.
//!
//! Lambda filters a function's application logs by level (the function's LoggingConfig
//! `ApplicationLogLevel`, handed to the process as `AWS_LAMBDA_LOG_LEVEL`). For a runtime it
//! does not format itself, it reads each JSON line's `level` and `timestamp`: a line whose
//! level is missing or invalid counts as INFO, and so does one without a valid RFC 3339
//! timestamp. At WARN and above such a line is dropped before it reaches CloudWatch Logs, so
//! every line written here carries both.

use std::time::SystemTime;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::clock;

/// Lambda's application log levels, least severe first. Lambda keeps a line whose level is the
/// function's level or more severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LambdaLogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl LambdaLogLevel {
    pub const ALL: [Self; 6] = [
        Self::Trace,
        Self::Debug,
        Self::Info,
        Self::Warn,
        Self::Error,
        Self::Fatal,
    ];

    /// One of Lambda's level names, in any case.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(name))
    }

    /// The name Lambda reads in a line's `level`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "TRACE",
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERROR",
            Self::Fatal => "FATAL",
        }
    }

    /// The function's level (`AWS_LAMBDA_LOG_LEVEL`); `None` when Lambda does not filter or
    /// the value is not one of its levels.
    pub fn of_function() -> Option<Self> {
        std::env::var("AWS_LAMBDA_LOG_LEVEL")
            .ok()
            .as_deref()
            .and_then(Self::parse)
    }

    /// The level a metric line carries when the function runs at `function_level`.
    ///
    /// A metric line must pass Lambda's filter at every level: one dropped blinds the alarms
    /// built on its metric, and an alarm that treats missing data as breaching then fires for
    /// ever. The function's own level always passes, but at TRACE or DEBUG it would file the
    /// metrics among the debugging output, so below INFO they say INFO, what they are: the
    /// normal operation of the function. Above INFO they take the function's level, the
    /// lowest one kept, so that at WARN they are not ERROR lines, and only at FATAL (where
    /// nothing less passes) do they read as FATAL. A fixed FATAL would keep them too, but
    /// would make every batch a fatal error to anyone reading or alerting on levels.
    pub fn for_metrics(function_level: Option<Self>) -> Self {
        function_level.unwrap_or(Self::Info).max(Self::Info)
    }
}

/// JSON logs (one object per line, as CloudWatch Logs Insights reads them and as Lambda's
/// filter reads them: a `level` and an RFC 3339 `timestamp` on each). Each line carries its
/// spans: the runtime's invocation (`requestId`) and, in the worker, the record
/// (`message_id`, `public_id`). The level is `RUST_LOG`'s when set, else Lambda's application
/// log level (`AWS_LAMBDA_LOG_LEVEL`, from the function's logging settings), else `info`.
/// A panic becomes an ERROR line too, instead of the standard library's plain text. Safe to
/// call more than once.
pub fn init_json_logs() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(level_directive(LambdaLogLevel::of_function())));
    if json_subscriber(filter, std::io::stdout).try_init().is_ok() {
        std::panic::set_hook(Box::new(|panic| {
            let location = panic
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            tracing::error!(
                panic = panic.payload_as_str().unwrap_or("(no message)"),
                %location,
                "panicked"
            );
        }));
    }
}

/// The subscriber [`init_json_logs`] installs, writing to `writer`.
fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(true)
        // UTC, RFC 3339 with microseconds ("2024-11-02T16:51:31.587199Z"), under `timestamp`.
        .with_timer(tracing_subscriber::fmt::time::SystemTime)
        .with_target(false)
        .with_writer(writer)
        .finish()
}

/// The filter directive for Lambda's application log level; `info` when Lambda sets none.
/// tracing's most severe level is ERROR, which Lambda drops at FATAL: there nothing tracing
/// could write would be kept, so it writes nothing (`off`) rather than format lines for
/// Lambda to throw away. What a function has to say at FATAL it says with [`log_fatal`].
pub fn level_directive(lambda_level: Option<LambdaLogLevel>) -> &'static str {
    match lambda_level {
        Some(LambdaLogLevel::Trace) => "trace",
        Some(LambdaLogLevel::Debug) => "debug",
        Some(LambdaLogLevel::Info) | None => "info",
        Some(LambdaLogLevel::Warn) => "warn",
        Some(LambdaLogLevel::Error) => "error",
        Some(LambdaLogLevel::Fatal) => "off",
    }
}

/// A FATAL line in the shape of tracing's (`timestamp`, `level`, `fields`), for a process
/// about to exit: kept by Lambda at every level.
pub fn fatal_line(message: &str, error: &str, at: SystemTime) -> String {
    serde_json::json!({
        "timestamp": clock::rfc3339(at),
        "level": LambdaLogLevel::Fatal.as_str(),
        "fields": {"message": message, "error": error},
    })
    .to_string()
}

/// Writes a [`fatal_line`] to standard output. For the failures that end the process (a
/// start-up that cannot complete, the runtime loop ending), which a binary reports here
/// rather than by returning the error from `main`: Rust prints that as plain text on standard
/// error, a line with neither level nor timestamp. Answers the failure exit code `main`
/// returns.
pub fn log_fatal(
    message: &str,
    error: &(dyn std::error::Error + 'static),
) -> std::process::ExitCode {
    let chain = crate::error::error_chain(error);
    println!("{}", fatal_line(message, &chain, SystemTime::now()));
    std::process::ExitCode::FAILURE
}

/// The stack a function runs in (`STACK_NAME`, set by the template), one of each metric's
/// dimensions, so that two stacks in one account never write one series.
pub fn stack_name() -> String {
    std::env::var("STACK_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local".into())
}

/// One CloudWatch metric value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub value: f64,
    pub unit: &'static str,
}

impl Metric {
    pub fn count(name: &'static str, value: u64) -> Self {
        Self {
            name,
            value: value as f64,
            unit: "Count",
        }
    }
}

/// Namespace of the pipeline's metrics.
pub const METRICS_NAMESPACE: &str = "CloudinaryOcr";

/// The dimensions of every metric: the stack, then the function.
pub const DIMENSIONS: [&str; 2] = ["Stack", "Function"];

/// A CloudWatch Embedded Metric Format line: CloudWatch Logs turns it into metrics, no API call.
/// Besides the metrics it carries `level` and `timestamp` (the instant of `_aws.Timestamp`,
/// RFC 3339) for Lambda's filter: see [`LambdaLogLevel::for_metrics`].
pub fn emf_line(
    stack: &str,
    function: &str,
    metrics: &[Metric],
    level: LambdaLogLevel,
    at: SystemTime,
) -> String {
    let mut root = serde_json::Map::new();
    let definitions: Vec<serde_json::Value> = metrics
        .iter()
        .map(|m| serde_json::json!({"Name": m.name, "Unit": m.unit}))
        .collect();
    root.insert("timestamp".into(), clock::rfc3339(at).into());
    root.insert("level".into(), level.as_str().into());
    root.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": clock::epoch_ms(at),
            "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": [DIMENSIONS],
                "Metrics": definitions,
            }]
        }),
    );
    root.insert("Stack".into(), stack.into());
    root.insert("Function".into(), function.into());
    for m in metrics {
        root.insert(m.name.into(), serde_json::json!(m.value));
    }
    serde_json::Value::Object(root).to_string()
}

/// Prints an EMF line to standard output, where Lambda ships it to CloudWatch Logs, at the
/// level that passes the function's log level.
pub fn emit_metrics(function: &str, metrics: &[Metric]) {
    println!(
        "{}",
        emf_line(
            &stack_name(),
            function,
            metrics,
            LambdaLogLevel::for_metrics(LambdaLogLevel::of_function()),
            SystemTime::now(),
        )
    );
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::filter::LevelFilter;

    use super::*;

    const AT_MS: u64 = 1_700_000_000_000;

    fn line(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
    }

    /// The instant a line's `timestamp` names, when it is valid RFC 3339.
    fn timestamp(v: &serde_json::Value) -> Option<SystemTime> {
        v["timestamp"].as_str().and_then(clock::parse_rfc3339)
    }

    #[test]
    fn emf_lines_declare_every_metric_they_carry() {
        let line = line(&emf_line(
            "ocr-prod",
            "worker",
            &[
                Metric::count("AssetsOcrd", 7),
                Metric {
                    name: "CloudinaryLatency",
                    value: 12.5,
                    unit: "Milliseconds",
                },
            ],
            LambdaLogLevel::Info,
            clock::from_epoch_ms(AT_MS),
        ));
        let v = &line;
        assert_eq!(v["_aws"]["Timestamp"], AT_MS);
        let cw = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], METRICS_NAMESPACE);
        assert_eq!(cw["Dimensions"], serde_json::json!([["Stack", "Function"]]));
        assert_eq!(
            cw["Metrics"][1],
            serde_json::json!({"Name": "CloudinaryLatency", "Unit": "Milliseconds"})
        );
        assert_eq!(
            (v["AssetsOcrd"].as_f64(), v["CloudinaryLatency"].as_f64()),
            (Some(7.0), Some(12.5))
        );
        assert_eq!(
            (&v["Stack"], &v["Function"]),
            (&"ocr-prod".into(), &"worker".into())
        );
    }

    #[test]
    fn emf_lines_carry_the_level_and_their_metrics_instant_for_lambdas_filter() {
        let at = clock::from_epoch_ms(AT_MS + 587);
        for level in LambdaLogLevel::ALL {
            let v = line(&emf_line("s", "lister", &[], level, at));
            assert_eq!(v["level"], level.as_str());
            assert_eq!(
                timestamp(&v),
                Some(at),
                "an RFC 3339 timestamp at the metrics' own instant: {v}"
            );
            assert_eq!(v["_aws"]["Timestamp"], AT_MS + 587);
        }
    }

    #[test]
    fn metric_lines_pass_lambdas_filter_at_every_level_and_say_info_up_to_info() {
        use LambdaLogLevel::*;
        assert_eq!(LambdaLogLevel::for_metrics(None), Info);
        let expected = [
            (Trace, Info),
            (Debug, Info),
            (Info, Info),
            (Warn, Warn),
            (Error, Error),
            (Fatal, Fatal),
        ];
        for (function_level, metric_level) in expected {
            let got = LambdaLogLevel::for_metrics(Some(function_level));
            assert_eq!(got, metric_level, "at {function_level:?}");
            assert!(
                got >= function_level,
                "Lambda drops it at {function_level:?}"
            );
        }
    }

    #[test]
    fn lambda_level_names_parse_in_any_case() {
        assert_eq!(LambdaLogLevel::parse("warn"), Some(LambdaLogLevel::Warn));
        assert_eq!(LambdaLogLevel::parse("Fatal"), Some(LambdaLogLevel::Fatal));
        assert_eq!(LambdaLogLevel::parse("WARNING"), None);
        assert_eq!(LambdaLogLevel::parse("loud"), None);
        for level in LambdaLogLevel::ALL {
            assert_eq!(LambdaLogLevel::parse(level.as_str()), Some(level));
        }
        let mut sorted = LambdaLogLevel::ALL;
        sorted.sort();
        assert_eq!(sorted, LambdaLogLevel::ALL, "least severe first");
    }

    #[test]
    fn lambda_log_levels_become_filters() {
        use LambdaLogLevel::*;
        let table = [
            (None, "info"),
            (Some(Trace), "trace"),
            (Some(Debug), "debug"),
            (Some(Info), "info"),
            (Some(Warn), "warn"),
            (Some(Error), "error"),
            (Some(Fatal), "off"),
        ];
        for (level, directive) in table {
            assert_eq!(level_directive(level), directive, "{level:?}");
        }
    }

    /// tracing writes exactly the lines Lambda would keep: none that it keeps is filtered out
    /// here, none that it drops is formatted for nothing (at FATAL, none at all).
    #[test]
    fn tracing_writes_the_levels_lambda_keeps_and_no_others() {
        let tracing_levels = [
            tracing::Level::TRACE,
            tracing::Level::DEBUG,
            tracing::Level::INFO,
            tracing::Level::WARN,
            tracing::Level::ERROR,
        ];
        for function_level in LambdaLogLevel::ALL {
            let filter = LevelFilter::from_str(level_directive(Some(function_level))).unwrap();
            for event_level in tracing_levels {
                let lambda_reads = LambdaLogLevel::parse(event_level.as_str())
                    .unwrap_or_else(|| panic!("{event_level} is not one of Lambda's names"));
                assert_eq!(
                    event_level <= filter,
                    lambda_reads >= function_level,
                    "a {event_level} event at {function_level:?}"
                );
            }
        }
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn tracing_lines_carry_a_level_and_an_rfc3339_timestamp() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = json_subscriber(EnvFilter::new("trace"), move || writer.clone());
        let before = SystemTime::now();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("invocation", requestId = "req-1");
            let _entered = span.enter();
            tracing::debug!(n = 1, "a debug line");
            tracing::warn!("a warning");
        });
        let after = SystemTime::now();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(line).collect();
        let levels: Vec<&str> = lines.iter().filter_map(|l| l["level"].as_str()).collect();
        assert_eq!(levels, ["DEBUG", "WARN"], "{text}");
        for l in &lines {
            let at = timestamp(l).unwrap_or_else(|| panic!("no RFC 3339 timestamp: {l}"));
            // Microseconds: the line's instant, truncated, lies within the writing.
            let micros = std::time::Duration::from_micros(1);
            assert!(at + micros >= before && at <= after, "{l}");
            assert!(l["spans"].to_string().contains("req-1"), "{l}");
        }
    }

    #[test]
    fn fatal_lines_are_shaped_like_tracings() {
        let at = clock::from_epoch_ms(AT_MS);
        let v = line(&fatal_line(
            "worker start-up failed",
            "RESULTS_TABLE is not set",
            at,
        ));
        assert_eq!(v["level"], "FATAL");
        assert_eq!(timestamp(&v), Some(at));
        assert_eq!(v["fields"]["message"], "worker start-up failed");
        assert_eq!(v["fields"]["error"], "RESULTS_TABLE is not set");
    }
}
