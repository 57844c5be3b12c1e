//! Parallel scans of the results table, streamed: constant memory at any table size.

use std::collections::HashMap;

use anyhow::{Context, bail};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use tokio::sync::mpsc;

pub type Item = HashMap<String, AttributeValue>;

/// Which items a scan returns.
#[derive(Debug, Clone, Default)]
pub struct ScanFilter {
    /// Only these statuses (`done`, `no_text`, `failed`).
    pub statuses: Vec<String>,
    /// Only public_ids starting with this.
    pub prefix: Option<String>,
    /// Deleted items too (those with `deletedAt`, see [`crate::deleted`]); by default the
    /// scan's filter leaves them out.
    pub include_deleted: bool,
}

pub const STATUSES: &[&str] = &["done", "no_text", "failed"];

/// Parses `done,no_text,failed`; an unknown status is an error naming the valid ones.
pub fn parse_statuses(list: &str) -> anyhow::Result<Vec<String>> {
    let statuses: Vec<String> = list
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for s in &statuses {
        if !STATUSES.contains(&s.as_str()) {
            bail!(
                "unknown status {s:?}: expected one or more of {}",
                STATUSES.join(", ")
            );
        }
    }
    if statuses.is_empty() {
        bail!("--status needs at least one of {}", STATUSES.join(", "));
    }
    Ok(statuses)
}

/// Fails with a clear message when the table does not exist.
pub async fn ensure_table(ddb: &Client, table: &str) -> anyhow::Result<()> {
    match ddb.describe_table().table_name(table).send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            bail!(
                "table {table:?} does not exist (check --results-table / RESULTS_TABLE and the region/endpoint)"
            )
        }
        Err(e) => Err(e).with_context(|| format!("describing table {table:?}")),
    }
}

/// Scans `table` in `segments` parallel segments, sending each page's items to `tx`.
/// Returns the number of items sent. The channel's bound keeps memory constant.
pub async fn scan(
    ddb: &Client,
    table: &str,
    segments: i32,
    filter: &ScanFilter,
    projection: Option<&str>,
    tx: mpsc::Sender<Vec<Item>>,
) -> anyhow::Result<u64> {
    let segments = segments.max(1);
    let senders: Vec<_> = (0..segments).map(|_| tx.clone()).collect();
    // Only the segments hold senders: the channel closes when the last one finishes.
    drop(tx);
    let tasks = senders.into_iter().enumerate().map(|(segment, tx)| {
        let segment = segment as i32;
        async move {
            let mut sent = 0u64;
            let mut start: Option<Item> = None;
            loop {
                let (items, next) =
                    scan_page(ddb, table, (segment, segments), filter, projection, start).await?;
                sent += items.len() as u64;
                if !items.is_empty() && tx.send(items).await.is_err() {
                    bail!("the consumer of the scan stopped");
                }
                match next {
                    Some(k) => start = Some(k),
                    None => return Ok::<u64, anyhow::Error>(sent),
                }
            }
        }
    });
    let counts = futures::future::try_join_all(tasks).await?;
    Ok(counts.into_iter().sum())
}

/// One page of segment `segment.0` of `segment.1`, from `start`: its items and where the
/// next page starts (`None` at the segment's end).
pub async fn scan_page(
    ddb: &Client,
    table: &str,
    (segment, segments): (i32, i32),
    filter: &ScanFilter,
    projection: Option<&str>,
    start: Option<Item>,
) -> anyhow::Result<(Vec<Item>, Option<Item>)> {
    let mut req = ddb
        .scan()
        .table_name(table)
        .segment(segment)
        .total_segments(segments)
        .set_exclusive_start_key(start);
    let mut conditions = Vec::new();
    if !filter.statuses.is_empty() {
        let names: Vec<String> = (0..filter.statuses.len())
            .map(|i| format!(":s{i}"))
            .collect();
        conditions.push(format!("#status IN ({})", names.join(", ")));
        req = req.expression_attribute_names("#status", "status");
        for (name, value) in names.iter().zip(&filter.statuses) {
            req = req.expression_attribute_values(name, AttributeValue::S(value.clone()));
        }
    }
    if let Some(p) = &filter.prefix {
        conditions.push("begins_with(publicId, :prefix)".into());
        req = req.expression_attribute_values(":prefix", AttributeValue::S(p.clone()));
    }
    if !filter.include_deleted {
        conditions.push(crate::deleted::NOT_DELETED.into());
    }
    if !conditions.is_empty() {
        req = req.filter_expression(conditions.join(" AND "));
    }
    if let Some(p) = projection {
        req = req.projection_expression(p);
        if p.contains("#text") {
            req = req.expression_attribute_names("#text", "text");
        }
        if p.contains("#status") {
            req = req.expression_attribute_names("#status", "status");
        }
        // `format` is one of DynamoDB's reserved words.
        if p.contains("#f") {
            req = req.expression_attribute_names("#f", "format");
        }
    }
    let page = req
        .send()
        .await
        .with_context(|| format!("scanning {table:?} (segment {segment})"))?;
    let next = page.last_evaluated_key.filter(|k| !k.is_empty());
    Ok((page.items.unwrap_or_default(), next))
}

pub fn s(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

pub fn num(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_n().ok()).cloned()
}

pub fn boolean(item: &Item, name: &str) -> Option<bool> {
    item.get(name).and_then(|v| v.as_bool().ok()).copied()
}

/// Scans `table` and calls `visit` on every item, in the caller's task (so `visit` may write
/// to the caller's output); pages arrive through a bounded channel, memory stays constant.
pub async fn for_each_item(
    ddb: &Client,
    table: &str,
    segments: i32,
    filter: &ScanFilter,
    projection: Option<&str>,
    mut visit: impl FnMut(&Item) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let (tx, mut rx) = mpsc::channel::<Vec<Item>>(segments.max(1) as usize * 2);
    let consume = async {
        while let Some(items) = rx.recv().await {
            items.iter().try_for_each(&mut visit)?;
        }
        Ok::<(), anyhow::Error>(())
    };
    let (count, ()) =
        tokio::try_join!(scan(ddb, table, segments, filter, projection, tx), consume)?;
    Ok(count)
}

impl ScanFilter {
    /// From the command line's `--status a,b` and `--prefix p` (deleted items left out).
    pub fn from_args(statuses: Option<&str>, prefix: Option<&str>) -> anyhow::Result<Self> {
        Ok(Self {
            statuses: statuses
                .map(parse_statuses)
                .transpose()?
                .unwrap_or_default(),
            prefix: prefix.map(str::to_string),
            include_deleted: false,
        })
    }
}
