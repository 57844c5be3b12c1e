//! Logging set-up shared by the functions and the local tools.

use tracing_subscriber::EnvFilter;

/// JSON logs (one object per line, as CloudWatch Logs Insights reads them and as Lambda's
/// JSON log format expects: a `level` field on each). Each line carries its spans: the
/// runtime's invocation (`requestId`) and, in the worker, the record (`message_id`,
/// `public_id`). The level is `RUST_LOG`'s when set, else Lambda's application log level
/// (`AWS_LAMBDA_LOG_LEVEL`, from the function's logging settings), else `info`. Safe to call
/// more than once.
pub fn init_json_logs() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let lambda = std::env::var("AWS_LAMBDA_LOG_LEVEL").ok();
        EnvFilter::new(level_directive(lambda.as_deref()))
    });
    let _ignored_if_already_set = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(true)
        .without_time()
        .with_target(false)
        .try_init();
}

/// The filter directive for Lambda's application log level (TRACE, DEBUG, INFO, WARN, ERROR,
/// FATAL); `info` when unset or unknown.
pub fn level_directive(lambda_level: Option<&str>) -> &'static str {
    match lambda_level.map(str::to_ascii_uppercase).as_deref() {
        Some("TRACE") => "trace",
        Some("DEBUG") => "debug",
        Some("WARN") => "warn",
        Some("ERROR") | Some("FATAL") => "error",
        _ => "info",
    }
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
pub fn emf_line(stack: &str, function: &str, metrics: &[Metric], timestamp_ms: u64) -> String {
    let mut root = serde_json::Map::new();
    let definitions: Vec<serde_json::Value> = metrics
        .iter()
        .map(|m| serde_json::json!({"Name": m.name, "Unit": m.unit}))
        .collect();
    root.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": timestamp_ms,
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

/// Prints an EMF line to standard output, where Lambda ships it to CloudWatch Logs.
pub fn emit_metrics(function: &str, metrics: &[Metric]) {
    println!(
        "{}",
        emf_line(
            &stack_name(),
            function,
            metrics,
            crate::clock::epoch_ms(std::time::SystemTime::now())
        )
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_lines_declare_every_metric_they_carry() {
        let line = emf_line(
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
            1_700_000_000_000,
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000u64);
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
    fn lambda_log_levels_become_filters() {
        let table = [
            (None, "info"),
            (Some("TRACE"), "trace"),
            (Some("debug"), "debug"),
            (Some("INFO"), "info"),
            (Some("WARN"), "warn"),
            (Some("ERROR"), "error"),
            (Some("FATAL"), "error"),
            (Some("loud"), "info"),
        ];
        for (level, directive) in table {
            assert_eq!(level_directive(level), directive, "{level:?}");
        }
    }
}
