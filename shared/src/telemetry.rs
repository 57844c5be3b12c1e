//! Logging set-up shared by the functions and the local tools.

use tracing_subscriber::EnvFilter;

/// JSON logs (one object per line, as CloudWatch Logs Insights reads them), level from
/// `RUST_LOG` (default `info`). Safe to call more than once.
pub fn init_json_logs() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ignored_if_already_set = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .without_time()
        .with_target(false)
        .try_init();
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

/// A CloudWatch Embedded Metric Format line: CloudWatch Logs turns it into metrics, no API call.
pub fn emf_line(function: &str, metrics: &[Metric], timestamp_ms: u64) -> String {
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
                "Dimensions": [["Function"]],
                "Metrics": definitions,
            }]
        }),
    );
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
        assert_eq!(cw["Dimensions"], serde_json::json!([["Function"]]));
        assert_eq!(
            cw["Metrics"][1],
            serde_json::json!({"Name": "CloudinaryLatency", "Unit": "Milliseconds"})
        );
        assert_eq!(
            (v["AssetsOcrd"].as_f64(), v["CloudinaryLatency"].as_f64()),
            (Some(7.0), Some(12.5))
        );
        assert_eq!(v["Function"], "worker");
    }
}
