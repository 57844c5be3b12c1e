//! The arithmetic of `make bench`: DynamoDB item sizes, quota use over windows, the modelled
//! AWS cost per million images, and the tables it prints. The runs themselves are in the
//! `bench` binary.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use cloudinary_emulator::WindowUse;

/// Size of a DynamoDB item as DynamoDB bills it: each attribute's name plus its value (strings
/// and binaries by length, numbers about one byte per two digits plus one, booleans and nulls
/// one byte, lists and maps three bytes plus their elements, one byte per element).
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|e| 1 + value_size(e)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, e)| 1 + k.len() + value_size(e))
                .sum::<usize>()
        }
        _ => 0,
    }
}

fn number_size(n: &str) -> usize {
    let digits = n
        .trim_start_matches('-')
        .chars()
        .filter(char::is_ascii_digit)
        .count();
    digits.div_ceil(2) + 1
}

/// Write request units for writing an item of `bytes` (1 KB each, rounded up).
pub fn write_units(bytes: usize) -> u64 {
    bytes.div_ceil(1024).max(1) as u64
}

/// Share of the Admin quota used over the windows that ended: calls accepted divided by the
/// limit times the time they span in window lengths. Time between windows (when nobody called)
/// counts as unused, so waiting too long after a reset shows up as a lower share.
pub fn quota_share(windows: &[WindowUse], limit: u64, window_ms: u64) -> Option<f64> {
    let (first, last) = (windows.first()?, windows.last()?);
    let span_ms = last.opened_ms + window_ms - first.opened_ms;
    let capacity = limit as f64 * span_ms as f64 / window_ms as f64;
    let used: u64 = windows.iter().map(|w| w.used).sum();
    Some(used as f64 / capacity)
}

pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The `p`th percentile (nearest rank) of `values`; NaN when there are none.
pub fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// Public on-demand prices used by the cost model (us-east-1).
#[derive(Debug, Clone, Copy)]
pub struct Prices {
    pub lambda_gb_second_arm64: f64,
    pub lambda_per_million_requests: f64,
    pub sqs_per_million_requests: f64,
    pub dynamodb_per_million_write_units: f64,
    pub dynamodb_per_million_read_units: f64,
    pub logs_per_gb_ingested: f64,
}

/// As published on the AWS pricing pages for US East (N. Virginia); see `PRICES_AS_OF`.
pub const PRICES: Prices = Prices {
    lambda_gb_second_arm64: 0.000_013_333_4,
    lambda_per_million_requests: 0.20,
    sqs_per_million_requests: 0.40,
    dynamodb_per_million_write_units: 0.625,
    dynamodb_per_million_read_units: 0.125,
    logs_per_gb_ingested: 0.50,
};
pub const PRICES_AS_OF: &str = "2026-11 (on-demand, us-east-1, beyond the free tiers; DynamoDB at the November 2024 on-demand prices)";

/// What one image costs in billable units, as measured by a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PerImage {
    pub lambda_invocations: f64,
    pub lambda_gb_seconds: f64,
    pub sqs_requests: f64,
    pub write_units: f64,
    pub read_units: f64,
    pub log_bytes: f64,
}

/// One line of the cost table: what, units per million images, dollars per million images.
#[derive(Debug, Clone, PartialEq)]
pub struct CostLine {
    pub item: &'static str,
    pub units_per_million: f64,
    pub unit: &'static str,
    pub dollars_per_million: f64,
}

pub fn cost_per_million(per: &PerImage, prices: &Prices) -> Vec<CostLine> {
    let m = 1_000_000.0;
    vec![
        CostLine {
            item: "Lambda requests",
            units_per_million: per.lambda_invocations * m,
            unit: "invocations",
            dollars_per_million: per.lambda_invocations * prices.lambda_per_million_requests,
        },
        CostLine {
            item: "Lambda duration (arm64)",
            units_per_million: per.lambda_gb_seconds * m,
            unit: "GB-s",
            dollars_per_million: per.lambda_gb_seconds * m * prices.lambda_gb_second_arm64,
        },
        CostLine {
            item: "SQS requests",
            units_per_million: per.sqs_requests * m,
            unit: "requests",
            dollars_per_million: per.sqs_requests * prices.sqs_per_million_requests,
        },
        CostLine {
            item: "DynamoDB writes",
            units_per_million: per.write_units * m,
            unit: "write units",
            dollars_per_million: per.write_units * prices.dynamodb_per_million_write_units,
        },
        CostLine {
            item: "DynamoDB reads",
            units_per_million: per.read_units * m,
            unit: "read units",
            dollars_per_million: per.read_units * prices.dynamodb_per_million_read_units,
        },
        CostLine {
            item: "CloudWatch Logs ingestion",
            units_per_million: per.log_bytes * m / 1e9,
            unit: "GB",
            dollars_per_million: per.log_bytes * m / 1e9 * prices.logs_per_gb_ingested,
        },
    ]
}

/// Requests by service (`dynamodb`, `sqs`, ...) from moto's per-operation counts.
pub fn by_service(counts: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (op, n) in counts {
        let service = op.split_once(':').map_or(op.as_str(), |(s, _)| s);
        *out.entry(service.to_string()).or_default() += n;
    }
    out
}

/// A Markdown table, which also reads well as plain text.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn markdown(&self) -> String {
        let columns = self.headers.len();
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                std::iter::once(&self.headers[c])
                    .chain(self.rows.iter().filter_map(|r| r.get(c)))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
                    .max(3)
            })
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = (0..columns)
                .map(|c| {
                    let cell = cells.get(c).map(String::as_str).unwrap_or("");
                    format!("{cell:<width$}", width = widths[c])
                })
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut out = line(&self.headers);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

/// What a command prints, trimmed (`unknown` when it fails).
pub fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The machine in a line: CPU model, cores, memory, OS.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{model}, {cores} cores, {mem_gib:.0} GiB, {}",
        std::env::consts::OS
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    #[test]
    fn item_size_counts_names_and_values_as_dynamodb_does() {
        let item = HashMap::from([
            ("publicId".to_string(), s("a/b")),                       // 8 + 3
            ("text".to_string(), s("héllo")),                         // 4 + 6 (UTF-8 bytes)
            ("bytes".to_string(), AttributeValue::N("12345".into())), // 5 + 4
            ("truncated".to_string(), AttributeValue::Bool(false)),   // 9 + 1
        ]);
        assert_eq!(item_size(&item), 11 + 10 + 9 + 10);
        let nested = HashMap::from([(
            "m".to_string(),
            AttributeValue::M(HashMap::from([("k".to_string(), s("vv"))])),
        )]);
        assert_eq!(item_size(&nested), 1 + 3 + 1 + 1 + 2);
    }

    #[test]
    fn write_units_round_up_per_kilobyte() {
        assert_eq!(write_units(0), 1);
        assert_eq!(write_units(1024), 1);
        assert_eq!(write_units(1025), 2);
        assert_eq!(write_units(350_000), 342);
    }

    #[test]
    fn quota_share_counts_gaps_between_windows_as_unused() {
        let back_to_back = [
            WindowUse {
                opened_ms: 0,
                used: 100,
            },
            WindowUse {
                opened_ms: 10_000,
                used: 100,
            },
        ];
        assert_eq!(quota_share(&back_to_back, 100, 10_000), Some(1.0));
        let with_gap = [
            WindowUse {
                opened_ms: 0,
                used: 100,
            },
            WindowUse {
                opened_ms: 15_000,
                used: 100,
            },
        ];
        assert_eq!(quota_share(&with_gap, 100, 10_000), Some(0.8));
        assert_eq!(quota_share(&[], 100, 10_000), None);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).rev().collect();
        assert_eq!(percentile(values.clone(), 95.0), 19.0);
        assert_eq!(percentile(values.clone(), 50.0), 10.0);
        assert_eq!(percentile(values, 100.0), 20.0);
        assert_eq!(percentile(vec![7.0], 95.0), 7.0);
        assert!(percentile(vec![], 95.0).is_nan());
    }

    #[test]
    fn cost_per_million_applies_each_price_to_its_units() {
        let per = PerImage {
            lambda_invocations: 0.1,
            lambda_gb_seconds: 0.005,
            sqs_requests: 0.4,
            write_units: 3.0,
            read_units: 1.0,
            log_bytes: 500.0,
        };
        let lines = cost_per_million(&per, &PRICES);
        let dollars: Vec<f64> = lines.iter().map(|l| l.dollars_per_million).collect();
        let expected = [0.02, 5_000.0 * 0.000_013_333_4, 0.16, 1.875, 0.125, 0.25];
        for (got, want) in dollars.iter().zip(expected) {
            assert!((got - want).abs() < 1e-9, "{got} != {want}");
        }
    }

    #[test]
    fn tables_pad_columns_to_the_widest_cell() {
        let mut t = Table::new(&["a", "bbbb"]);
        t.row(vec!["long cell".into(), "1".into()]);
        assert_eq!(
            t.markdown(),
            "| a         | bbbb |\n|-----------|------|\n| long cell | 1    |\n"
        );
    }

    #[test]
    fn requests_group_by_service() {
        let counts = BTreeMap::from([
            ("dynamodb:PutItem".to_string(), 3),
            ("dynamodb:UpdateItem".to_string(), 2),
            ("sqs:ReceiveMessage".to_string(), 4),
        ]);
        let grouped = by_service(&counts);
        assert_eq!(grouped["dynamodb"], 5);
        assert_eq!(grouped["sqs"], 4);
    }
}
