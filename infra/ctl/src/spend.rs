//! What the pipeline pays for, before it pays: the stack's scope and budget as the functions
//! see them, `plan` (how many OCRs a run pays for, how long it takes, what it costs), `enqueue`
//! (a list of public_ids the user already has) and the budget's lines of `status`.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, bail};
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use serde::Serialize;

use shared::budget::{Budget, Left};
use shared::cloudinary::CloudinaryClient;
use shared::config::Env;
use shared::lister::ListedAsset;
use shared::message::{WorkMessage, asset_of_key, item_key};
use shared::scope::Scope;
use shared::store::{DynamoCheckpointStore, MAX_KEY_BYTES};

use crate::Cli;
use crate::scan::{ScanFilter, s};

/// The stack's parameters that are the functions' settings, with the variable each becomes:
/// `ocr-ctl` reads the parameters of the stack it is given, else the same variables.
pub const PARAMETER_VARS: [(&str, &str); 12] = [
    ("ScopeFolders", "SCOPE_PREFIXES"),
    ("ScopeTags", "SCOPE_TAGS"),
    ("ScopeExpression", "SCOPE_EXPRESSION"),
    ("ScopeDeliveryTypes", "SCOPE_DELIVERY_TYPES"),
    ("ScopeFormats", "SCOPE_FORMATS"),
    ("MaxOcrPerDay", "MAX_OCR_PER_DAY"),
    ("MaxOcrPerMonth", "MAX_OCR_PER_MONTH"),
    ("AddonLimitMargin", "ADDON_LIMIT_MARGIN"),
    ("OcrMethod", "OCR_METHOD"),
    ("WorkerConcurrency", "WORKER_INSTANCES"),
    ("WorkerRecordConcurrency", "WORKER_CONCURRENCY"),
    ("ListerPageSize", "LISTER_PAGE_SIZE"),
];

/// The functions' settings as `ocr-ctl` sees them: the stack's parameters (with
/// `--stack-name`), else the process's environment.
pub fn function_env(cli: &Cli) -> Env<impl Fn(&str) -> Option<String> + '_> {
    Env(move |name: &str| {
        cli.env_overrides.get(name).cloned().or_else(|| {
            PARAMETER_VARS
                .iter()
                .find(|(_, var)| *var == name)
                .and_then(|(param, _)| cli.stack_params.get(*param).cloned())
                .or_else(|| std::env::var(name).ok())
        })
    })
}

/// The stack's scope (see [`function_env`]).
pub fn stack_scope(cli: &Cli) -> anyhow::Result<Scope> {
    function_env(cli).scope().map_err(anyhow::Error::new)
}

/// A scope given on the command line, for `plan` (a scope not deployed yet, for a pilot).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ScopeArgs {
    /// Plan these public_id prefixes instead of the stack's scope (comma-separated).
    #[arg(long)]
    pub folders: Option<String>,
    /// Plan these tags instead of the stack's scope (comma-separated).
    #[arg(long)]
    pub tags: Option<String>,
    /// Plan this Cloudinary Search expression instead of the stack's scope.
    #[arg(long)]
    pub expression: Option<String>,
    /// Plan these delivery types instead of the stack's scope (comma-separated).
    #[arg(long)]
    pub types: Option<String>,
    /// Plan these formats instead of the stack's scope (comma-separated).
    #[arg(long)]
    pub formats: Option<String>,
}

impl ScopeArgs {
    /// The scope the flags name, or the stack's when none is given.
    pub fn scope(&self, cli: &Cli) -> anyhow::Result<Scope> {
        let given = [
            &self.folders,
            &self.tags,
            &self.expression,
            &self.types,
            &self.formats,
        ];
        if given.iter().all(|g| g.is_none()) {
            return stack_scope(cli);
        }
        let get = |v: &Option<String>| v.clone().unwrap_or_default();
        Scope::parse(
            &get(&self.folders),
            &get(&self.tags),
            &get(&self.expression),
            &get(&self.types),
            &get(&self.formats),
        )
        .map_err(|e| anyhow::anyhow!("the scope: {e}"))
    }
}

/// The budget over the checkpoint table's counters, when a limit is set.
pub fn budget(cli: &Cli, ddb: &aws_sdk_dynamodb::Client) -> anyhow::Result<Option<Budget>> {
    let limits = function_env(cli).budget()?;
    let Some(table) = cli.checkpoint_table.as_deref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    Ok(limits.any().then(|| {
        Budget::new(
            limits,
            Arc::new(DynamoCheckpointStore::new(ddb.clone(), table)),
        )
    }))
}

/// The budget's state for `status`: limits and what is left now.
pub async fn budget_left(
    cli: &Cli,
    ddb: &aws_sdk_dynamodb::Client,
) -> anyhow::Result<Option<Left>> {
    let Some(budget) = budget(cli, ddb)? else {
        return Ok(None);
    };
    Ok(Some(budget.left(SystemTime::now()).await.map_err(|e| {
        anyhow::anyhow!(shared::error::error_chain(&e))
    })?))
}

/// One line of `status` for the budget.
pub fn budget_line(left: &Left) -> String {
    let limit = |n: u64| {
        if n == 0 {
            "no limit".to_string()
        } else {
            n.to_string()
        }
    };
    let mut line = format!(
        "OCR budget: {} of {} used today ({}), {} of {} this month ({})",
        left.day_used,
        limit(left.per_day),
        left.day,
        left.month_used,
        limit(left.per_month),
        left.month
    );
    if let Some(cap) = left.addon_cap {
        line.push_str(&format!("; the add-on's limit allows {cap} this month"));
    }
    match left.remaining() {
        Some(0) => line.push_str(" — spent: messages wait for the next period"),
        Some(n) => line.push_str(&format!(" — {n} left")),
        None => {}
    }
    line
}

/// The Cloudinary client `plan` (and `notifications`) asks: `CLOUDINARY_URL` from the
/// environment, else the stack's secret (output `CloudinarySecretArn`).
pub(crate) async fn cloudinary(
    cli: &Cli,
    sdk: &aws_config::SdkConfig,
) -> anyhow::Result<CloudinaryClient> {
    let url = (function_env(cli).0)("CLOUDINARY_URL");
    let secret = match (&cli.stack_secret_arn, url) {
        (_, Some(url)) if !url.is_empty() => shared::secret::Secret::new(url),
        (Some(arn), _) => shared::secrets::read_cloudinary_url(sdk, arn)
            .await
            .map_err(|e| anyhow::anyhow!(shared::error::error_chain(&e)))?,
        _ => bail!(
            "this command asks Cloudinary: set CLOUDINARY_URL, or name the stack with --stack-name (its secret)"
        ),
    };
    let config = function_env(cli).cloudinary(Some(secret))?;
    Ok(CloudinaryClient::new(&config)?)
}

/// What a run of the scope pays for, how long it takes and what it costs; every figure says
/// where it comes from.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub scope: String,
    pub search_expression: String,
    /// Images in scope (the Search API's `total_count`).
    pub images: u64,
    /// Of them, with a result in the table already (done or no text, at their version).
    pub already_done: u64,
    /// OCR requests the run pays for: `images − already_done`.
    pub will_pay: u64,
    /// Whether `already_done` is exact (each image looked up) or counted from the table by
    /// prefix, type and format only (a scope of tags or an expression over more images than
    /// `--list-limit`).
    pub exact: bool,
    /// Admin API calls the plan itself spent.
    pub admin_calls: u64,
    /// The OCR add-on's use this month (Cloudinary's `usage`), if it reported it.
    pub addon_usage: Option<u64>,
    pub addon_limit: Option<u64>,
    /// The stack's budget, if it has one.
    pub budget: Option<Left>,
    /// Admin API calls the run's listing takes.
    pub listing_calls: u64,
    /// The hourly Admin API quota (as Cloudinary reported it, else 2,000).
    pub admin_per_hour: u64,
    /// Hours the run takes: the listing and the read-backs at the quota's pace, the OCR at the
    /// workers'.
    pub hours: f64,
    /// Days the budget stretches the run to (one a day or month of budget), if it does.
    pub budget_days: Option<f64>,
    /// The AWS side's cost, modelled (see [`AWS_USD_PER_PAID_IMAGE`]).
    pub aws_usd: f64,
}

/// AWS cost per image OCR'd: `make sim`'s healthy day with `explicit` (README, "At scale"),
/// $2.18 a million at the default batch of 50: SQS, DynamoDB, Lambda and CloudWatch together.
pub const AWS_USD_PER_PAID_IMAGE: f64 = 2.18e-6;
/// AWS cost per image listed and found done: a message (sent, received, deleted, in batches of
/// ten) and a status read, about $0.20 a million.
pub const AWS_USD_PER_SKIPPED_IMAGE: f64 = 0.20e-6;
/// Admin API calls the workers spend reading results back, per image OCR'd, when each is made
/// alone: `make sim`'s healthy day read back alone (about 22,000 read-backs for ten million
/// images: 5xx, timeouts and pending answers). They share the hourly quota with the listing, so
/// they add to its hours. Read back together (the read-back queue, when Cloudinary's answer
/// about several assets carries their OCR) they take about a hundredth of that: the plan
/// counts the case that is not yet known to hold, and so may say a little more time.
pub const READ_BACKS_PER_PAID_IMAGE: f64 = 0.0022;

/// The read-backs a run of `will_pay` OCRs is expected to make.
pub fn read_backs(will_pay: u64) -> u64 {
    (will_pay as f64 * READ_BACKS_PER_PAID_IMAGE).ceil() as u64
}

/// An OCR request's time, assumed when no figure is given (`--ocr-seconds`).
pub const OCR_SECONDS: f64 = 2.0;

#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Look each image up when the scope holds at most this many (one Admin API call per 500),
    /// so that the count of those already done is exact for any scope.
    #[arg(long, default_value_t = 10_000)]
    pub list_limit: u64,
    /// Seconds an OCR request takes, for the time estimate.
    #[arg(long, default_value_t = OCR_SECONDS)]
    pub ocr_seconds: f64,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub async fn plan(
    cli: &Cli,
    sdk: &aws_config::SdkConfig,
    ddb: &aws_sdk_dynamodb::Client,
    args: &PlanArgs,
) -> anyhow::Result<Plan> {
    let scope = args.scope.scope(cli)?;
    let client = cloudinary(cli, sdk).await?;
    let table = crate::need(&cli.results_table, "--results-table", "RESULTS_TABLE")?;
    let expression = scope.search_expression();
    let counted = count(&client, &expression).await?;
    let mut admin_calls = 1;
    let (already_done, exact) = if counted.images <= args.list_limit {
        let listed = list(&client, &expression).await?;
        admin_calls += listed.1;
        (done_of(ddb, table, &scope, &listed.0).await?, true)
    } else {
        // By folder, type and format only: neither versions nor tags are compared.
        (done_in_table(ddb, table, &scope).await?, false)
    };
    let usage = addon(&client).await;
    admin_calls += 1;
    let budget = budget_left(cli, ddb).await?;
    let will_pay = counted.images.saturating_sub(already_done);
    let timing = timing(cli, args, &scope, counted, will_pay);
    Ok(Plan {
        scope: scope.to_string(),
        search_expression: expression,
        images: counted.images,
        already_done,
        will_pay,
        exact,
        admin_calls,
        addon_usage: usage.map(|u| u.usage),
        addon_limit: usage.map(|u| u.limit),
        budget_days: budget.as_ref().and_then(|b| budget_days(b, will_pay)),
        budget,
        listing_calls: timing.0,
        admin_per_hour: counted.admin_per_hour,
        hours: timing.1,
        aws_usd: will_pay as f64 * AWS_USD_PER_PAID_IMAGE
            + already_done as f64 * AWS_USD_PER_SKIPPED_IMAGE,
    })
}

/// What one Search call says of the scope: its size, and the hourly Admin quota.
#[derive(Debug, Clone, Copy)]
struct Counted {
    images: u64,
    admin_per_hour: u64,
}

fn remote(e: shared::cloudinary::CloudinaryError) -> anyhow::Error {
    anyhow::anyhow!(shared::error::error_chain(&e))
}

async fn count(client: &CloudinaryClient, expression: &str) -> anyhow::Result<Counted> {
    let first = client
        .search_page(expression, None, 1)
        .await
        .map_err(remote)
        .context("counting the scope's images with the Search API")?;
    Ok(Counted {
        images: first
            .value
            .total_count
            .context("Cloudinary's search answer has no total_count")?,
        admin_per_hour: first.quota.map_or(2_000, |q| q.limit),
    })
}

/// Every image the expression finds (500 a call), and the calls it took.
async fn list(
    client: &CloudinaryClient,
    expression: &str,
) -> anyhow::Result<(Vec<ListedAsset>, u64)> {
    let (mut listed, mut calls, mut cursor) = (Vec::new(), 0, None);
    loop {
        let page = client
            .search_page(expression, cursor.as_deref(), 500)
            .await
            .map_err(remote)?;
        calls += 1;
        let page = page.value.into_page(None);
        listed.extend(page.assets);
        cursor = page.next_cursor;
        if cursor.is_none() {
            return Ok((listed, calls));
        }
    }
}

/// The OCR add-on's usage this month, if Cloudinary reports it.
async fn addon(client: &CloudinaryClient) -> Option<shared::lister::AddonUsage> {
    match client.usage().await {
        Ok(answer) => shared::cloudinary::addon_usage(&answer.value),
        Err(e) => {
            eprintln!(
                "note: Cloudinary's usage could not be read ({}); the add-on's limit is not shown",
                shared::error::error_chain(&e)
            );
            None
        }
    }
}

/// The listing's calls and the run's hours: the listing at the Admin quota's pace, the OCR at
/// the stack's concurrency (or, with `update`, on the same quota).
fn timing(
    cli: &Cli,
    args: &PlanArgs,
    scope: &Scope,
    counted: Counted,
    will_pay: u64,
) -> (u64, f64) {
    let env = function_env(cli);
    let listings = scope.listings();
    let per_call = match listings[0] {
        shared::scope::Listing::Search(_) => 500,
        _ => env_number(
            &env,
            "LISTER_PAGE_SIZE",
            f64::from(shared::defaults::PAGE_SIZE),
        ) as u64,
    };
    let listing_calls = counted.images.div_ceil(per_call.max(1)).max(1) + listings.len() as u64 - 1;
    let per_hour = counted.admin_per_hour.max(1) as f64;
    let admin_calls = listing_calls + read_backs(will_pay);
    let ocr_hours = if env_text(&env, "OCR_METHOD").as_deref() == Some("update") {
        (admin_calls + will_pay) as f64 / per_hour
    } else {
        let at_once = env_number(&env, "WORKER_INSTANCES", 4.0)
            * env_number(
                &env,
                "WORKER_CONCURRENCY",
                shared::defaults::RECORDS_IN_FLIGHT as f64,
            );
        will_pay as f64 * args.ocr_seconds / at_once / 3600.0
    };
    (
        listing_calls,
        (admin_calls as f64 / per_hour).max(ocr_hours),
    )
}

/// The days a daily (or monthly) budget spreads the run over, when it does.
fn budget_days(b: &Left, will_pay: u64) -> Option<f64> {
    let per_day = if b.per_day > 0 {
        b.per_day as f64
    } else if b.per_month > 0 {
        b.per_month as f64 / 30.0
    } else {
        return None;
    };
    (will_pay as f64 > per_day).then(|| will_pay as f64 / per_day)
}

fn env_text<F: Fn(&str) -> Option<String>>(env: &Env<F>, name: &str) -> Option<String> {
    (env.0)(name).filter(|v| !v.trim().is_empty())
}

fn env_number<F: Fn(&str) -> Option<String>>(env: &Env<F>, name: &str, default: f64) -> f64 {
    env_text(env, name)
        .and_then(|v| v.trim().parse().ok())
        .filter(|n: &f64| *n > 0.0)
        .unwrap_or(default)
}

/// Whether an item has a result the worker would keep for an image at `version`.
fn has_result(item: &HashMap<String, AttributeValue>, version: Option<u64>) -> bool {
    let done = matches!(s(item, "status").as_deref(), Some("done" | "no_text"));
    let stored: Option<u64> = item
        .get("version")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok());
    done && match (version, stored) {
        (Some(listed), Some(stored)) => stored >= listed,
        _ => true,
    }
}

/// Of the listed images, those with a result at their version: each looked up (100 a call).
async fn done_of(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    scope: &Scope,
    listed: &[ListedAsset],
) -> anyhow::Result<u64> {
    let mut versions: BTreeMap<String, Option<u64>> = BTreeMap::new();
    for a in listed.iter().filter(|a| {
        a.resource_type == "image"
            && scope.admits(&a.public_id, &a.delivery_type, a.format.as_deref(), None)
    }) {
        let key = item_key(&a.public_id, &a.delivery_type);
        if key.len() <= MAX_KEY_BYTES {
            versions.insert(key, a.version);
        }
    }
    let keys: Vec<&String> = versions.keys().collect();
    let mut done = 0;
    for chunk in keys.chunks(100) {
        let mut pending: Vec<HashMap<String, AttributeValue>> = chunk
            .iter()
            .map(|k| HashMap::from([("publicId".to_string(), AttributeValue::S((*k).clone()))]))
            .collect();
        while !pending.is_empty() {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .projection_expression("publicId, #s, version")
                .expression_attribute_names("#s", "status")
                .consistent_read(true)
                .build()?;
            let out = ddb
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .with_context(|| format!("looking the scope's images up in {table}"))?;
            for item in out
                .responses()
                .and_then(|r| r.get(table))
                .into_iter()
                .flatten()
            {
                let version = s(item, "publicId").and_then(|k| versions.get(&k).copied().flatten());
                done += u64::from(has_result(item, version));
            }
            if let Some(left) = out
                .unprocessed_keys()
                .and_then(|u| u.get(table))
                .map(|k| k.keys().to_vec())
            {
                pending = left;
            }
        }
    }
    Ok(done)
}

/// Items of the table in scope (by prefix, delivery type and format: what an item records)
/// with a result.
async fn done_in_table(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    scope: &Scope,
) -> anyhow::Result<u64> {
    let mut done = 0;
    let filter = ScanFilter {
        statuses: vec!["done".into(), "no_text".into()],
        ..ScanFilter::default()
    };
    crate::scan::for_each_item(
        ddb,
        table,
        4,
        &filter,
        Some("publicId, #status, #f"),
        |item| {
            let key = s(item, "publicId").unwrap_or_default();
            let (delivery_type, public_id) = asset_of_key(&key);
            let format = s(item, "format");
            done += u64::from(scope.admits(public_id, delivery_type, format.as_deref(), None));
            Ok(())
        },
    )
    .await?;
    Ok(done)
}

pub fn print_plan(plan: &Plan, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    writeln!(out, "Scope                 {}", plan.scope)?;
    writeln!(
        out,
        "Images in scope       {}  (Cloudinary Search: {})",
        plan.images, plan.search_expression
    )?;
    writeln!(
        out,
        "Already in the table  {}{}",
        plan.already_done,
        if plan.exact {
            ""
        } else {
            "  (counted by prefix, type and format only: the tags or expression are not in the table; raise --list-limit for an exact count)"
        }
    )?;
    writeln!(out, "OCRs the run pays for {}", plan.will_pay)?;
    match (plan.addon_usage, plan.addon_limit) {
        (Some(usage), Some(limit)) => {
            let after = usage + plan.will_pay;
            writeln!(
                out,
                "OCR add-on this month {usage} of {limit} used; {after} after the run{}",
                if after > limit {
                    " — OVER the limit: narrow the scope or set a budget"
                } else {
                    ""
                }
            )?;
        }
        _ => writeln!(out, "OCR add-on this month not reported by Cloudinary")?,
    }
    if let Some(b) = &plan.budget {
        writeln!(out, "{}", budget_line(b))?;
    }
    writeln!(
        out,
        "Time                  about {:.1} h ({} listing calls and at most about {} read-backs at {}/h Admin API quota){}",
        plan.hours,
        plan.listing_calls,
        read_backs(plan.will_pay),
        plan.admin_per_hour,
        plan.budget_days
            .map(|d| format!("; the budget spreads it over about {d:.1} days"))
            .unwrap_or_default()
    )?;
    writeln!(
        out,
        "AWS cost              about ${:.2} (modelled: $2.18 a million OCR'd, $0.20 a million skipped)",
        plan.aws_usd
    )?;
    writeln!(out, "This plan spent {} Admin API calls.", plan.admin_calls)?;
    Ok(())
}

/// `enqueue`'s input: item keys or public_ids (one per line), from the command line, a file,
/// or standard input (`-`).
pub fn read_ids(ids: &[String], from: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut all: Vec<String> = ids.to_vec();
    if let Some(from) = from {
        let reader: Box<dyn BufRead> = if from == "-" {
            Box::new(std::io::BufReader::new(std::io::stdin()))
        } else {
            Box::new(std::io::BufReader::new(
                std::fs::File::open(from).with_context(|| format!("opening {from}"))?,
            ))
        };
        for (n, line) in reader.lines().enumerate() {
            let line = line.with_context(|| format!("reading line {} of {from}", n + 1))?;
            // Only the line ending goes: a public_id may begin or end with spaces.
            let line = line.trim_end_matches('\r');
            if !line.trim().is_empty() {
                all.push(line.to_string());
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    all.retain(|id| seen.insert(id.clone()));
    if let Some(long) = all.iter().find(|k| k.len() > MAX_KEY_BYTES) {
        bail!(
            "{:?}… is longer than DynamoDB's {MAX_KEY_BYTES}-byte key: no result could be stored for it; nothing enqueued",
            long.chars().take(40).collect::<String>()
        );
    }
    Ok(all)
}

/// Work messages for item keys (`~private~ID` and `~authenticated~ID` name the other delivery
/// types): not forced, so an image already done is skipped without a call.
pub fn messages(keys: &[String]) -> Vec<WorkMessage> {
    keys.iter()
        .map(|key| {
            let (delivery_type, public_id) = asset_of_key(key);
            WorkMessage::new(public_id, "image", delivery_type)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_a_file_deduplicated_and_checked() {
        let dir = std::env::temp_dir().join(format!("ocr-ctl-ids-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ids.txt");
        std::fs::write(&file, "a/1\r\n\n  \nb 2 \n~private~c\na/1\n").unwrap();
        let ids = read_ids(&["z".into()], Some(file.to_str().unwrap())).unwrap();
        assert_eq!(ids, ["z", "a/1", "b 2 ", "~private~c"]);
        let m = messages(&ids);
        assert_eq!(
            (
                m[3].public_id.as_str(),
                m[3].delivery_type.as_str(),
                m[3].force
            ),
            ("c", "private", false)
        );
        std::fs::write(&file, "x".repeat(MAX_KEY_BYTES + 1)).unwrap();
        let err = read_ids(&[], Some(file.to_str().unwrap())).unwrap_err();
        assert!(err.to_string().contains("nothing enqueued"), "{err}");
        assert!(read_ids(&[], Some("/nonexistent/ids")).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_result_counts_only_at_the_listed_version() {
        let item = |status: &str, version: Option<u64>| {
            let mut i = HashMap::from([("status".to_string(), AttributeValue::S(status.into()))]);
            if let Some(v) = version {
                i.insert("version".into(), AttributeValue::N(v.to_string()));
            }
            i
        };
        assert!(has_result(&item("done", Some(3)), Some(3)));
        assert!(has_result(&item("no_text", None), Some(3)));
        assert!(!has_result(&item("done", Some(2)), Some(3)));
        assert!(!has_result(&item("failed", Some(3)), Some(3)));
    }

    /// A run's read-backs are `make sim`'s healthy share of what it pays for, and one paid image
    /// may already cost one.
    #[test]
    fn read_backs_follow_the_simulations_healthy_day() {
        assert_eq!(read_backs(0), 0);
        assert_eq!(read_backs(1), 1);
        assert_eq!(read_backs(10_000_000), 22_000);
    }

    #[test]
    fn the_budget_line_says_what_is_left() {
        let left = Left {
            day: "2026-12-05".into(),
            day_used: 40,
            per_day: 100,
            month: "2026-12".into(),
            month_used: 900,
            per_month: 0,
            addon_cap: Some(950),
        };
        let line = budget_line(&left);
        assert!(line.contains("40 of 100 used today"), "{line}");
        assert!(line.contains("900 of no limit"), "{line}");
        assert!(line.ends_with("— 50 left"), "{line}");
        let spent = Left {
            day_used: 100,
            ..left
        };
        assert!(budget_line(&spent).contains("spent"));
    }
}
