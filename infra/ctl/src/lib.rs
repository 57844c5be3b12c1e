//! `ocr-ctl`: the operator's tool for the results table and the queues.

pub mod bucket_owner;
pub mod dead_letters;
pub mod deleted;
pub mod export;
pub mod export_s3;
pub mod extract;
pub mod highlight;
pub mod notifications;
pub mod pattern;
pub mod pause;
pub mod query;
pub mod scan;
pub mod search;
pub mod secret;
pub mod settled;
pub mod spend;
pub mod terminal;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand};

use bucket_owner::{BucketOwner, OwnerCheckedS3};
use scan::{ScanFilter, ensure_table, s};
use shared::message::WorkMessage;
use shared::queue::{QueueDepth, SqsQueue, WorkQueue, move_messages, queue_depth};

/// Export, search and operate the Cloudinary OCR pipeline.
///
/// Names come from `--stack-name` (the deployed stack's outputs), or from flags or the same
/// environment variables the functions use (RESULTS_TABLE, CHECKPOINT_TABLE, WORK_QUEUE_URL,
/// DEAD_LETTER_QUEUE_URL), which win over the stack's. AWS credentials and region come from
/// `--profile`/`--region` or the usual AWS environment/profile; AWS_ENDPOINT_URL points it at a
/// local endpoint (moto).
///
/// Exit status: 0 done, 1 nothing matched (`grep`, `search` and `extract`, as grep does), 2 an
/// error.
#[derive(Debug, Parser)]
#[command(name = "ocr-ctl", version, about, long_about)]
pub struct Cli {
    /// The deployed stack: the names below are read from its outputs.
    #[arg(long, env = "OCR_STACK_NAME", global = true)]
    pub stack_name: Option<String>,
    /// The AWS profile (else AWS_PROFILE, else the default credential chain).
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// The AWS region (else AWS_REGION, else the profile's).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// The results table.
    #[arg(long, env = "RESULTS_TABLE", global = true)]
    pub results_table: Option<String>,
    /// The lister's checkpoint table.
    #[arg(long, env = "CHECKPOINT_TABLE", global = true)]
    pub checkpoint_table: Option<String>,
    /// The work queue's URL.
    #[arg(long, env = "WORK_QUEUE_URL", global = true)]
    pub queue_url: Option<String>,
    /// The dead-letter queue's URL.
    #[arg(long, env = "DEAD_LETTER_QUEUE_URL", global = true)]
    pub dlq_url: Option<String>,
    /// The read-back queue's URL (`status` counts its messages with the work queue's).
    #[arg(long, env = "READ_BACK_QUEUE_URL", global = true)]
    pub read_back_queue_url: Option<String>,
    /// The worker function (pause, resume, status).
    #[arg(long, env = "WORKER_FUNCTION_NAME", global = true)]
    pub worker_function: Option<String>,
    /// The lister's EventBridge Scheduler schedule (pause, resume, status).
    #[arg(long, env = "LISTER_SCHEDULE_NAME", global = true)]
    pub schedule_name: Option<String>,
    /// The search index's folder (default: ~/.local/share/ocr-ctl/index/RESULTS_TABLE).
    #[arg(long, env = "OCR_INDEX_DIR", global = true)]
    pub index_dir: Option<PathBuf>,
    /// The stack's export location and Glue table (outputs ExportLocation, ExportGlueTable),
    /// when it defines them.
    #[arg(skip)]
    pub stack_export: Option<(String, String)>,
    /// The stack's parameters (with --stack-name): its scope, budget and worker settings.
    #[arg(skip)]
    pub stack_params: BTreeMap<String, String>,
    /// The stack's Cloudinary secret (output CloudinarySecretArn).
    #[arg(skip)]
    pub stack_secret_arn: Option<String>,
    /// The stack's notifier function URL (output NotifierUrl; absent from a stack deployed
    /// before the notifier).
    #[arg(skip)]
    pub stack_notifier_url: Option<String>,
    /// The stack's id, its ARN (with --stack-name): its account owns the buckets by default.
    #[arg(skip)]
    pub stack_id: Option<String>,
    /// Standard output is a terminal (the binary sets it): `extract`'s rows written there have
    /// their control characters escaped.
    #[arg(skip)]
    pub terminal: bool,
    /// Variables the functions' settings are read from before the stack's parameters and the
    /// environment (for callers that run `ocr-ctl` in-process: the demo, the tests).
    #[arg(skip)]
    pub env_overrides: BTreeMap<String, String>,
    /// Lambda's endpoint, when not the SDK's own (`AWS_ENDPOINT_URL_LAMBDA` also sets it).
    #[arg(skip)]
    pub lambda_endpoint: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the results table to CSV or JSON lines (streamed; constant memory): to a file,
    /// standard output, or S3 (`--to s3://bucket/prefix/`: gzip-compressed, one file per scan
    /// segment, `runs/RUN/_SUCCESS` written last; see the README).
    Export {
        /// The format (default: csv to a file or standard output, jsonl to S3).
        #[arg(long, value_enum)]
        format: Option<export::Format>,
        /// Write to S3 (s3://bucket/prefix/) instead of a file; `--to stack` for the stack's
        /// export location (output ExportLocation), in JSON lines only: its Glue table reads
        /// them.
        #[arg(long, conflicts_with = "out")]
        to: Option<String>,
        /// Go on with an export to S3 that did not finish (its run id, as printed): only its
        /// missing files are written.
        #[arg(long, requires = "to")]
        resume: Option<String>,
        /// Point this Glue table (DATABASE.TABLE) at the export once it is whole (default with
        /// `--to stack`: the stack's ExportGlueTable).
        #[arg(long, requires = "to")]
        glue_table: Option<String>,
        /// Compressed MiB per uploaded part (S3: at least 5).
        #[arg(long, default_value_t = 16, requires = "to")]
        part_mib: usize,
        /// The AWS account that must own the bucket (S3 refuses every request otherwise;
        /// default: the stack's account with --stack-name, else the credentials').
        #[arg(long, value_name = "ACCOUNT", requires = "to")]
        bucket_owner: Option<BucketOwner>,
        /// Write CSV cells that a spreadsheet would run as formulas (starting with = + - @, a
        /// tab, carriage return, line feed or NUL, or the full-width ＝ ＋ － ＠) as they are;
        /// by default they get a leading ' and stay text.
        #[arg(long)]
        allow_formulas: bool,
        /// Output file (written as FILE.partial, renamed when complete); standard output if absent.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only these statuses, comma-separated: done, no_text, failed.
        #[arg(long)]
        status: Option<String>,
        /// Also the items of deleted (or renamed) assets, with their deleted_at and renamed_to
        /// filled in; by default they are left out.
        #[arg(long)]
        include_deleted: bool,
        /// Parallel scan segments.
        #[arg(long, default_value_t = 4)]
        segments: i32,
    },
    /// Print the assets whose text matches PATTERN (by item key: the public id itself for an
    /// `upload` image, `~TYPE~PUBLIC_ID` for another type), with the matching line.
    Grep {
        pattern: String,
        /// PATTERN is a regular expression (default: a plain substring).
        #[arg(long)]
        regex: bool,
        #[arg(long, short = 'i')]
        ignore_case: bool,
        /// Print only the number of matching assets and lines.
        #[arg(long)]
        count: bool,
        /// Machine-readable output (JSON lines: key, public_id, delivery_type, line, and for a
        /// deleted asset deleted_at and renamed_to; or the counts).
        #[arg(long)]
        json: bool,
        /// Also the texts of deleted (or renamed) assets, each shown with its deletion; by
        /// default they are left out.
        #[arg(long)]
        include_deleted: bool,
        #[arg(long, default_value_t = 4)]
        segments: i32,
    },
    /// Build or update the full-text search index (on this machine) from the results table:
    /// only what changed since the last update is written (new items, re-OCRs, removals).
    Index {
        /// Read an export file instead of scanning the table (JSON lines as `export --format
        /// jsonl` writes them, gzip-compressed if its name ends in .gz). It must be a whole
        /// export: indexed items it lacks are removed.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Start from an empty index.
        #[arg(long)]
        rebuild: bool,
        /// Also index deleted (or renamed) assets (`search` and `extract` then find them with
        /// their own --include-deleted); by default they are left out, and an indexed item
        /// deleted since is removed.
        #[arg(long)]
        include_deleted: bool,
        #[arg(long, default_value_t = 4)]
        segments: i32,
        /// Machine-readable output (the update's counts).
        #[arg(long)]
        json: bool,
    },
    /// Search the index (`ocr-ctl index` builds it): ranked results with snippets. QUERY:
    /// words (all must match), "a phrase", word* (words starting with it), AND, OR, NOT,
    /// +word, -word, parentheses; AND binds closer than OR. Anything else is text: 9:00,
    /// GB-123, a@b.com and 営業時間 are found as the OCR read them (a colon is never a field).
    Search {
        query: String,
        /// QUERY is a regular expression (the regex crate's syntax), run over each line of the
        /// texts the index cannot rule out (those holding the words every match needs);
        /// results in the index's order, each with its first matching line.
        #[arg(long, conflicts_with = "fuzzy")]
        regex: bool,
        /// With --regex: ignore case.
        #[arg(long, short = 'i', requires = "regex")]
        ignore_case: bool,
        /// At most this many results.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Tolerate typos: this many edits per word (1 or 2).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
        fuzzy: u8,
        #[command(flatten)]
        filters: Filters,
        /// Also count every matching asset (slower on common words).
        #[arg(long)]
        count: bool,
        /// Machine-readable output (JSON lines: key, public_id, delivery_type, status, locale,
        /// score, snippet, highlights as byte ranges of the snippet; with --count, a last line
        /// {"total": N}).
        #[arg(long)]
        json: bool,
    },
    /// Write one row per match of PATTERN, a regular expression run over each line of each
    /// text as grep runs it: key, public_id, match, one column per named group
    /// (`(?P<vat>GB\d{9})`), line_number, line. The texts come from the index (only those
    /// holding the words every match needs; `ocr-ctl index` builds it) or from an export file.
    Extract {
        pattern: String,
        /// Read this export file instead of the index (JSON lines as `export --format jsonl`
        /// writes them; gzip-compressed if its name ends in .gz).
        #[arg(long)]
        from: Option<PathBuf>,
        /// Write to this file (FILE.partial until complete) or S3 object
        /// (s3://bucket/folder/matches.csv); standard output if absent. A name ending in .gz
        /// is gzip-compressed.
        #[arg(long)]
        to: Option<String>,
        /// The format (default: from the name given to --to, .jsonl or .csv; else csv).
        #[arg(long, value_enum)]
        format: Option<export::Format>,
        #[arg(long, short = 'i')]
        ignore_case: bool,
        #[command(flatten)]
        filters: Filters,
        /// Write CSV cells that a spreadsheet would run as formulas as they are.
        #[arg(long)]
        allow_formulas: bool,
        /// With --to s3://...: the AWS account that must own the bucket (default: the stack's
        /// account with --stack-name, else the credentials').
        #[arg(long, value_name = "ACCOUNT", requires = "to")]
        bucket_owner: Option<BucketOwner>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Progress (bar, % done, the last hour's pace, ETA), counts by status, the lister's
    /// checkpoint, queue and DLQ depth with the DLQ's top reasons, and, with --stack-name, the
    /// Admin API quota used in the last hour (from the worker's metrics).
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Before anything is paid: how many images the scope holds (one Cloudinary Search call),
    /// how many already have a result, so how many OCRs a run pays for; the OCR add-on's usage
    /// and limit this month; the budget; how long the run takes and what it costs on AWS. The
    /// scope is the stack's (--stack-name, or the SCOPE_* variables), or the one the flags
    /// name. Needs CLOUDINARY_URL, or the stack's secret.
    Plan(spend::PlanArgs),
    /// Stop spending: disable the lister's schedule and the worker's event source mapping,
    /// then wait for the batches in flight to end. Nothing is lost: the messages wait in the
    /// work queue (`resume` goes on with them).
    Pause {
        /// Return once the mapping is disabled, without waiting for the batches in flight (up
        /// to the worker's timeout) to end.
        #[arg(long)]
        no_wait: bool,
    },
    /// Undo `pause`: enable the worker's event source mapping and the lister's schedule.
    Resume,
    /// Enqueue these assets (item keys or public_ids; `~private~ID`, `~authenticated~ID` for
    /// those delivery types), whatever the scope: an asset already done is skipped without a
    /// call; the others are paid for.
    Enqueue {
        public_ids: Vec<String>,
        /// Read them from this file, one per line (`-`: standard input).
        #[arg(long)]
        from: Option<String>,
        /// Only count them; enqueue nothing.
        #[arg(long)]
        dry_run: bool,
        /// Enqueue without asking (needed when standard input is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        /// Machine-readable output (the counts, as JSON).
        #[arg(long)]
        json: bool,
    },
    /// Enqueue assets again with the force flag (OCR is paid again).
    Reocr {
        /// Assets to re-OCR, by item key (as `grep` and `export` name them: the public id of an
        /// `upload` image, `~private~ID` or `~authenticated~ID` for the other types).
        public_ids: Vec<String>,
        /// Every asset in the table whose key starts with this (for an `upload` image, its
        /// public id).
        #[arg(long, conflicts_with = "public_ids")]
        prefix: Option<String>,
        /// Every asset in the table with these statuses (e.g. failed).
        #[arg(long, conflicts_with = "public_ids")]
        status: Option<String>,
        /// Only count the OCRs it would pay for; enqueue nothing.
        #[arg(long)]
        dry_run: bool,
        /// Pay without asking (needed when standard input is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        /// Machine-readable output (the counts, as JSON).
        #[arg(long)]
        json: bool,
        /// Also assets outside the stack's scope (by default, with --prefix or --status, only
        /// those whose folder, delivery type and format are in scope).
        #[arg(long)]
        any_scope: bool,
    },
    /// List the dead-letter queue's messages, each with why it failed (read from its asset's
    /// item). The messages stay in the queue: each is hidden while it is read, then made
    /// visible again.
    DeadLetters {
        /// List at most this many.
        #[arg(long, default_value_t = 100)]
        max: usize,
        /// Also the messages of deleted (or renamed) assets, each with its deletion; by default
        /// they are left out (and counted).
        #[arg(long)]
        include_deleted: bool,
        /// Machine-readable output (JSON lines).
        #[arg(long)]
        json: bool,
    },
    /// Move the DLQ's messages back to the work queue. By default they are received and sent
    /// again as new messages, unchanged; `--task` has SQS move them instead, as the console's
    /// "Start DLQ redrive" does.
    Redrive {
        /// Move at most this many (not with --task).
        #[arg(long, conflicts_with = "task")]
        max: Option<usize>,
        /// Start a message move task and wait for it to end: each message goes back to the
        /// queue SQS moved it from (the console's "Redrive to source queue(s)").
        #[arg(long)]
        task: bool,
    },
    /// The Cloudinary credentials the functions use (`secret set`).
    Secret {
        #[command(subcommand)]
        action: SecretAction,
    },
    /// Register the stack's notifier (output NotifierUrl, or --url) with Cloudinary's
    /// notification triggers, so that uploads, deletions, renames and moves reach it; or
    /// remove it, or show what is registered. Needs CLOUDINARY_URL, or the stack's secret.
    Notifications {
        #[command(subcommand)]
        action: notifications::Action,
    },
    /// Print a shell completion script (e.g. `ocr-ctl completions bash >
    /// ~/.local/share/bash-completion/completions/ocr-ctl`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretAction {
    /// Store CLOUDINARY_URL (cloudinary://API_KEY:API_SECRET@CLOUD_NAME) in the secret the
    /// functions read: the stack's (output CloudinarySecretArn) or --secret-arn. It is read
    /// from standard input (one trailing line break is taken off), or --from-file, never
    /// from the command line; checked before it is stored, and never printed: only the cloud
    /// name and API key are.
    Set {
        /// The secret (else the stack's output CloudinarySecretArn).
        #[arg(long, env = "CLOUDINARY_SECRET_ARN")]
        secret_arn: Option<String>,
        /// Read CLOUDINARY_URL from this file instead of standard input.
        #[arg(long, value_name = "PATH")]
        from_file: Option<PathBuf>,
    },
}

/// Which indexed items `search` and `extract` read.
#[derive(Debug, Clone, clap::Args)]
pub struct Filters {
    /// Only these statuses, comma-separated: done, no_text, failed.
    #[arg(long)]
    pub status: Option<String>,
    /// Only texts of this locale (as Cloudinary detected it, e.g. en).
    #[arg(long)]
    pub locale: Option<String>,
    /// Only public ids starting with this (a folder: invoices/2021/).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only this delivery type (upload, private, authenticated).
    #[arg(long = "type")]
    pub delivery_type: Option<String>,
    /// Also deleted (or renamed) assets, when the index holds them (`index
    /// --include-deleted`) or the export file does (`export --include-deleted`).
    #[arg(long)]
    pub include_deleted: bool,
}

impl Filters {
    /// A query with these filters and nothing else.
    fn query(&self) -> anyhow::Result<search::SearchQuery> {
        Ok(search::SearchQuery {
            statuses: ScanFilter::from_args(self.status.as_deref(), None)?.statuses,
            locale: self.locale.clone(),
            delivery_type: self.delivery_type.clone(),
            prefix: self.prefix.clone(),
            include_deleted: self.include_deleted,
            ..Default::default()
        })
    }
}

/// How a command ended, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit status 0.
    Done,
    /// Nothing matched (`grep`, `search`, `extract`): exit status 1, as grep's.
    NothingMatched,
}

/// The stack's outputs that name what `ocr-ctl` works on: the results table, the checkpoint
/// table, the work queue, the dead-letter queue, the worker function, the lister's schedule and
/// the read-back queue.
pub const STACK_OUTPUTS: [&str; 7] = [
    "ResultsTableName",
    "CheckpointTableName",
    "WorkQueueUrl",
    "DeadLetterQueueUrl",
    "WorkerFunctionName",
    "ListerScheduleName",
    "ReadBackQueueUrl",
];

/// The stack's outputs when it is deployed with an export bucket: the export location
/// (`s3://bucket/prefix/`) and the Glue table over it (`DATABASE.TABLE`).
pub const EXPORT_OUTPUTS: [&str; 2] = ["ExportLocation", "ExportGlueTable"];

/// The S3 client of a command that reads or writes buckets: each of its requests names the
/// account that must own the bucket (see [`bucket_owner`]): `given`, else the stack's account,
/// else the credentials'.
pub async fn s3_client(
    cli: &Cli,
    given: Option<&BucketOwner>,
    sdk: &aws_config::SdkConfig,
) -> anyhow::Result<OwnerCheckedS3> {
    let owner = bucket_owner::resolve(given, cli.stack_id.as_deref(), sdk).await?;
    Ok(OwnerCheckedS3::new(sdk, owner))
}

/// Fills the names not given from the stack's outputs.
async fn names_from_stack(cli: &mut Cli, sdk: &aws_config::SdkConfig) -> anyhow::Result<()> {
    let Some(stack) = cli.stack_name.clone().filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    let cfn = aws_sdk_cloudformation::Client::new(sdk);
    let described = cfn
        .describe_stacks()
        .stack_name(&stack)
        .send()
        .await
        .with_context(|| format!("reading the outputs of stack {stack:?} (check --stack-name, the region and the credentials)"))?;
    let outputs: std::collections::HashMap<String, String> = described
        .stacks()
        .first()
        .map(|s| s.outputs())
        .unwrap_or_default()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
        .collect();
    cli.stack_params = described
        .stacks()
        .first()
        .map(|s| s.parameters())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            Some((
                p.parameter_key()?.to_string(),
                p.resolved_value()
                    .or(p.parameter_value())
                    .unwrap_or_default()
                    .to_string(),
            ))
        })
        .collect();
    cli.stack_secret_arn = outputs.get("CloudinarySecretArn").cloned();
    cli.stack_notifier_url = outputs.get(notifications::NOTIFIER_OUTPUT).cloned();
    cli.stack_id = described
        .stacks()
        .first()
        .and_then(|s| s.stack_id())
        .map(str::to_string);
    let slots = [
        &mut cli.results_table,
        &mut cli.checkpoint_table,
        &mut cli.queue_url,
        &mut cli.dlq_url,
        &mut cli.worker_function,
        &mut cli.schedule_name,
        &mut cli.read_back_queue_url,
    ];
    for (key, slot) in STACK_OUTPUTS.iter().zip(slots) {
        if slot.as_deref().is_none_or(str::is_empty) {
            *slot = outputs.get(*key).cloned();
        }
    }
    if let (Some(location), Some(glue)) = (
        outputs.get(EXPORT_OUTPUTS[0]),
        outputs.get(EXPORT_OUTPUTS[1]),
    ) {
        cli.stack_export = Some((location.clone(), glue.clone()));
    }
    Ok(())
}

/// The index's folder: `--index-dir`, else the default for the results table.
fn index_dir(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &cli.index_dir {
        return Ok(dir.clone());
    }
    let table = need(&cli.results_table, "--results-table", "RESULTS_TABLE")
        .context("the index is named after the results table; or give --index-dir")?;
    search::default_dir(table)
}

fn need<'a>(value: &'a Option<String>, flag: &str, var: &str) -> anyhow::Result<&'a str> {
    value.as_deref().filter(|v| !v.is_empty()).with_context(|| {
        format!("missing {flag} (or set {var}, or name the stack with --stack-name)")
    })
}

/// Runs one command; output goes to `out`.
pub async fn run(
    mut cli: Cli,
    sdk: &aws_config::SdkConfig,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<Outcome> {
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(*shell, &mut Cli::command(), "ocr-ctl", out);
        return Ok(Outcome::Done);
    }
    names_from_stack(&mut cli, sdk).await?;
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    match &cli.command {
        Command::Completions { .. } => {}
        Command::Export {
            format,
            to: Some(to),
            resume,
            glue_table,
            part_mib,
            bucket_owner,
            allow_formulas,
            status,
            include_deleted,
            segments,
            ..
        } => {
            if to == "stack" && *format == Some(export::Format::Csv) {
                bail!(
                    "--to stack --format csv: the stack's Glue table (and Athena through it) reads gzip JSON lines, so CSV files there would break its queries; nothing was written. Leave out --format (JSON lines) for the stack's export, or write CSV elsewhere: --to s3://BUCKET/PREFIX/ --format csv, or --out FILE"
                );
            }
            let table = need(&cli.results_table, "--results-table", "RESULTS_TABLE")?;
            let (to, glue_table) = match (to.as_str(), &cli.stack_export) {
                ("stack", Some((location, glue))) => {
                    (location.clone(), glue_table.clone().or(Some(glue.clone())))
                }
                ("stack", None) => bail!(
                    "--to stack: the stack (--stack-name) defines no export location (a stack of an earlier version: deploy it again)"
                ),
                (to, _) => (to.to_string(), glue_table.clone()),
            };
            let location: export_s3::S3Location = to.parse()?;
            if *part_mib < 5 {
                bail!("--part-mib {part_mib}: S3 parts are at least 5 MiB");
            }
            let options = export_s3::S3ExportOptions {
                format: format.unwrap_or(export::Format::Jsonl),
                filter: ScanFilter {
                    include_deleted: *include_deleted,
                    ..ScanFilter::from_args(status.as_deref(), None)?
                },
                segments: *segments,
                allow_formulas: *allow_formulas,
                part_bytes: part_mib * 1024 * 1024,
                resume: resume.clone(),
                glue_table,
                stop_after_parts: None,
                progress: true,
            };
            let s3 = s3_client(&cli, bucket_owner.as_ref(), sdk).await?;
            let glue = aws_sdk_glue::Client::new(sdk);
            let report = export_s3::export_s3(&ddb, &s3, &glue, table, &location, &options).await?;
            let m = &report.manifest;
            writeln!(
                out,
                "exported {} rows to {} ({} files, {} written now); whole: {}",
                m.rows,
                m.data,
                m.parts.len(),
                report.written,
                report.success_url
            )?;
            if let Some(t) = &report.glue_table {
                writeln!(out, "Glue table {t} now reads run {}", m.spec.run)?;
            }
        }
        Command::Export {
            format,
            allow_formulas,
            out: path,
            status,
            include_deleted,
            segments,
            ..
        } => {
            let table = need(&cli.results_table, "--results-table", "RESULTS_TABLE")?;
            let options = export::ExportOptions {
                format: format.unwrap_or(export::Format::Csv),
                filter: ScanFilter {
                    include_deleted: *include_deleted,
                    ..ScanFilter::from_args(status.as_deref(), None)?
                },
                segments: *segments,
                progress: true,
                allow_formulas: *allow_formulas,
            };
            let report = export::export(&ddb, table, path.as_deref(), &options).await?;
            if let Some(p) = report.path {
                writeln!(out, "exported {} rows to {}", report.rows, p.display())?;
            }
        }
        Command::Grep {
            pattern,
            regex,
            ignore_case,
            count,
            json,
            include_deleted,
            segments,
        } => {
            let table = need(&cli.results_table, "--results-table", "RESULTS_TABLE")?;
            let source = if *regex {
                pattern.clone()
            } else {
                regex::escape(pattern)
            };
            let re = regex::RegexBuilder::new(&source)
                .case_insensitive(*ignore_case)
                .build()
                .with_context(|| format!("invalid pattern {pattern:?}"))?;
            ensure_table(&ddb, table).await?;
            let (mut assets, mut lines) = (0u64, 0u64);
            let filter = ScanFilter {
                include_deleted: *include_deleted,
                ..ScanFilter::default()
            };
            let projection = format!("publicId, #text, {}", deleted::PROJECTION);
            scan::for_each_item(&ddb, table, *segments, &filter, Some(&projection), |item| {
                let (Some(id), Some(text)) = (s(item, "publicId"), s(item, "text")) else {
                    return Ok(());
                };
                let gone = deleted::tombstone(item);
                let mut hit = false;
                for line in text.lines().filter(|l| re.is_match(l)) {
                    hit = true;
                    lines += 1;
                    if *count {
                        continue;
                    }
                    if *json {
                        let (delivery_type, public_id) = shared::message::asset_of_key(&id);
                        let mut row = serde_json::json!({
                            "key": id,
                            "public_id": public_id,
                            "delivery_type": delivery_type,
                            "line": line,
                        });
                        if let Some(t) = &gone {
                            row["deleted_at"] = t.deleted_at.clone().into();
                            row["renamed_to"] = t.renamed_to.clone().into();
                        }
                        writeln!(out, "{}", terminal::json_line(&row)?)?;
                    } else {
                        let (id, line) = (terminal::escaped(&id), terminal::escaped(line));
                        match &gone {
                            Some(t) => writeln!(out, "{id} ({})\t{line}", t.describe())?,
                            None => writeln!(out, "{id}\t{line}")?,
                        }
                    }
                }
                assets += u64::from(hit);
                Ok(())
            })
            .await?;
            match (*count, *json) {
                (true, true) => writeln!(
                    out,
                    "{}",
                    serde_json::json!({"assets": assets, "lines": lines})
                )?,
                (true, false) => writeln!(out, "{assets} assets, {lines} lines")?,
                _ => {}
            }
            if assets == 0 {
                return Ok(Outcome::NothingMatched);
            }
        }
        Command::Index {
            from,
            rebuild,
            include_deleted,
            segments,
            json,
        } => {
            let dir = index_dir(&cli)?;
            let started = std::time::Instant::now();
            let index = search::SearchIndex::open_or_create(&dir, *rebuild)?;
            let mut updater = index.updater()?;
            match from {
                Some(path) => search::update_from_export(&mut updater, path, *include_deleted)?,
                None => {
                    let table = need(&cli.results_table, "--results-table", "RESULTS_TABLE")?;
                    ensure_table(&ddb, table).await?;
                    let filter = ScanFilter {
                        include_deleted: *include_deleted,
                        ..ScanFilter::default()
                    };
                    let projection = format!(
                        "publicId, #status, #text, locale, deliveryType, ocrAt, {}",
                        deleted::PROJECTION
                    );
                    scan::for_each_item(
                        &ddb,
                        table,
                        *segments,
                        &filter,
                        Some(&projection),
                        |item| updater.offer(search::IndexDoc::from_item(item)),
                    )
                    .await?;
                }
            }
            let r = updater.finish()?;
            if *json {
                writeln!(out, "{}", serde_json::to_string(&r)?)?;
            } else {
                writeln!(
                    out,
                    "index {}: {} items read, {} added, {} replaced, {} removed, {} unchanged; {} indexed ({:.1} s)",
                    dir.display(),
                    r.read,
                    r.added,
                    r.replaced,
                    r.removed,
                    r.unchanged,
                    r.indexed,
                    started.elapsed().as_secs_f64()
                )?;
            }
        }
        Command::Search {
            query,
            regex: true,
            ignore_case,
            limit,
            filters,
            count,
            json,
            ..
        } => {
            let index = search::SearchIndex::open(&index_dir(&cli)?)?;
            let pattern = pattern::compile(query, *ignore_case)?;
            let q = search::SearchQuery {
                query: query.clone(),
                limit: *limit,
                count: *count,
                ..filters.query()?
            };
            let found = extract::search_lines(&extract::Source::Index(&index), &pattern, &q)?;
            extract::print_lines(&found, *limit, *json, out)?;
            if found.hits.is_empty() {
                return Ok(Outcome::NothingMatched);
            }
        }
        Command::Extract {
            pattern,
            from,
            to,
            format,
            ignore_case,
            filters,
            allow_formulas,
            bucket_owner,
            json,
        } => {
            let pattern = pattern::compile(pattern, *ignore_case)?;
            let q = filters.query()?;
            let index = match from {
                Some(_) => None,
                None => Some(search::SearchIndex::open(&index_dir(&cli)?)?),
            };
            let source = match (from, &index) {
                (Some(path), _) => extract::Source::File(path),
                (None, Some(index)) => extract::Source::Index(index),
                (None, None) => unreachable!("the index is opened when no file is given"),
            };
            let options = extract::ExtractOptions {
                to: to.as_deref().map(str::parse).transpose()?,
                format: *format,
                allow_formulas: *allow_formulas,
                json: *json,
                terminal: cli.terminal,
            };
            let s3 = match &options.to {
                Some(extract::Destination::S3 { .. }) => {
                    Some(s3_client(&cli, bucket_owner.as_ref(), sdk).await?)
                }
                _ => None,
            };
            let report = extract::run(&source, &pattern, &q, &options, s3.as_ref(), out).await?;
            if report.rows == 0 {
                return Ok(Outcome::NothingMatched);
            }
        }
        Command::Search {
            query,
            limit,
            fuzzy,
            filters,
            count,
            json,
            ..
        } => {
            let index = search::SearchIndex::open(&index_dir(&cli)?)?;
            let found = index.search(&search::SearchQuery {
                query: query.clone(),
                limit: *limit,
                fuzzy: *fuzzy,
                count: *count,
                ..filters.query()?
            })?;
            if !found.ignored.is_empty() {
                eprintln!(
                    "note: left out {:?}: no letter or digit in it (only those are indexed)",
                    found.ignored
                );
            }
            for hit in &found.hits {
                if *json {
                    writeln!(out, "{}", terminal::json_line(hit)?)?;
                } else {
                    let gone = deleted::shown(
                        hit.deleted_at.as_deref().unwrap_or_default(),
                        hit.renamed_to.as_deref().unwrap_or_default(),
                    )
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                    writeln!(
                        out,
                        "{:>7.2}  {}{gone}\t{}",
                        hit.score,
                        terminal::escaped(&hit.key),
                        hit.marked(">>", "<<")
                    )?;
                }
            }
            match (found.total, *json) {
                (Some(total), true) => writeln!(out, "{}", serde_json::json!({ "total": total }))?,
                (Some(total), false) => {
                    writeln!(out, "{} of {total} matching assets shown", found.hits.len())?
                }
                (None, true) => {}
                (None, false) if found.hits.len() == *limit => writeln!(
                    out,
                    "{} best matching assets shown (--limit for more, --count for the total)",
                    found.hits.len()
                )?,
                (None, false) => writeln!(out, "{} matching assets", found.hits.len())?,
            }
            if found.hits.is_empty() {
                return Ok(Outcome::NothingMatched);
            }
        }
        Command::Status { json } => {
            let mut report = status(&cli, &ddb, &sqs).await?;
            if let Some(stack) = cli.stack_name.as_deref().filter(|s| !s.is_empty()) {
                let cw = aws_sdk_cloudwatch::Client::new(sdk);
                report.quota = quota_use(&cw, stack, std::time::SystemTime::now()).await?;
            }
            report.budget = spend::budget_left(&cli, &ddb).await?;
            if cli
                .worker_function
                .as_deref()
                .is_some_and(|f| !f.is_empty())
            {
                let (lambda, scheduler) = pause_clients(&cli, sdk);
                report.pipeline = Some(
                    pause::state(&lambda, &scheduler, &pause_targets(&cli)?)
                        .await?
                        .describe(),
                );
            }
            if *json {
                let json = serde_json::to_string_pretty(&report)?;
                writeln!(out, "{}", terminal::json_safe(json))?;
            } else {
                print_status(&report, out)?;
            }
        }
        Command::Pause { no_wait } => {
            let targets = pause_targets(&cli)?;
            let waits = pause::Waits {
                in_flight: !*no_wait,
                ..pause::Waits::default()
            };
            let (lambda, scheduler) = pause_clients(&cli, sdk);
            let state = pause::pause(&lambda, &scheduler, &targets, waits, &mut |line| {
                eprintln!("{line}")
            })
            .await?;
            writeln!(out, "{}", state.describe())?;
        }
        Command::Resume => {
            let targets = pause_targets(&cli)?;
            let (lambda, scheduler) = pause_clients(&cli, sdk);
            let state = pause::resume(&lambda, &scheduler, &targets, &mut |line| {
                eprintln!("{line}")
            })
            .await?;
            writeln!(out, "{}", state.describe())?;
        }
        Command::Plan(args) => {
            let plan = spend::plan(&cli, sdk, &ddb, args).await?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&plan)?)?;
            } else {
                spend::print_plan(&plan, out)?;
            }
        }
        Command::Enqueue {
            public_ids,
            from,
            dry_run,
            yes,
            json,
        } => {
            let queue_url = need(&cli.queue_url, "--queue-url", "WORK_QUEUE_URL")?;
            let ids = spend::read_ids(public_ids, from.as_deref())?;
            if ids.is_empty() {
                bail!("name the assets: PUBLIC_ID... or --from FILE (- for standard input)");
            }
            let n = ids.len();
            let report = |enqueued: usize, refused: usize| serde_json::json!({"assets": n, "paid_ocrs_at_most": n, "enqueued": enqueued, "refused": refused, "dry_run": *dry_run});
            if *dry_run {
                if *json {
                    writeln!(out, "{}", report(0, 0))?;
                } else {
                    writeln!(
                        out,
                        "would enqueue {n} assets: at most {n} OCRs that Cloudinary bills (those already done are skipped free; nothing enqueued)"
                    )?;
                }
                return Ok(Outcome::Done);
            }
            if !*yes {
                confirm(
                    &format!(
                        "Enqueue {n} assets? Cloudinary bills an OCR for each not done yet (at most {n})."
                    ),
                    &format!(
                        "enqueueing {n} assets pays for up to {n} OCRs: confirm with --yes (or count them with --dry-run); nothing enqueued"
                    ),
                )?;
            }
            let messages = spend::messages(&ids);
            let shown = json.then_some(&report as &CountsReport<'_>);
            enqueue_all(&sqs, queue_url, &ids, &messages, ("assets", shown), out).await?;
        }
        Command::Reocr {
            public_ids,
            prefix,
            status,
            dry_run,
            yes,
            json,
            any_scope,
        } => {
            let queue_url = need(&cli.queue_url, "--queue-url", "WORK_QUEUE_URL")?;
            // A deleted asset is never re-OCR'd: each is looked up, left out and counted.
            let table = need(&cli.results_table, "--results-table", "RESULTS_TABLE")
                .context("reocr first reads which of the assets are deleted (those are never re-OCR'd) from the results table")?;
            let mut gone = 0usize;
            let ids: Vec<String> = if !public_ids.is_empty() {
                let tombstones = deleted::tombstones(&ddb, table, public_ids).await?;
                gone = public_ids
                    .iter()
                    .filter(|k| tombstones.contains_key(*k))
                    .count();
                public_ids
                    .iter()
                    .filter(|k| !tombstones.contains_key(*k))
                    .cloned()
                    .collect()
            } else if prefix.is_some() || status.is_some() {
                ensure_table(&ddb, table).await?;
                let filter = ScanFilter {
                    // Read, to be counted.
                    include_deleted: true,
                    ..ScanFilter::from_args(status.as_deref(), prefix.as_deref())?
                };
                let scope = if *any_scope {
                    shared::scope::Scope::default()
                } else {
                    spend::stack_scope(&cli)?
                };
                let mut ids = Vec::new();
                let mut outside = 0u64;
                let projection = format!("publicId, #f, {}", deleted::DELETED_AT);
                scan::for_each_item(&ddb, table, 4, &filter, Some(&projection), |item| {
                    if deleted::is_deleted(item) {
                        gone += 1;
                        return Ok(());
                    }
                    let key = s(item, "publicId").unwrap_or_default();
                    let (delivery_type, public_id) = shared::message::asset_of_key(&key);
                    if scope.admits(public_id, delivery_type, s(item, "format").as_deref(), None) {
                        ids.push(key);
                    } else {
                        outside += 1;
                    }
                    Ok(())
                })
                .await?;
                if outside > 0 {
                    eprintln!(
                        "{outside} assets left out: outside the stack's scope ({scope}); --any-scope takes them too"
                    );
                }
                ids
            } else {
                bail!("name the assets: PUBLIC_ID..., --prefix P or --status S");
            };
            if gone > 0 {
                eprintln!(
                    "{gone} assets left out: deleted (or renamed) in Cloudinary; a deleted asset is never re-OCR'd"
                );
            }
            let n = ids.len();
            let report = |enqueued: usize, refused: usize| serde_json::json!({"assets": n, "paid_ocrs": n, "enqueued": enqueued, "refused": refused, "deleted_left_out": gone, "dry_run": *dry_run});
            if *dry_run || n == 0 {
                if *json {
                    writeln!(out, "{}", report(0, 0))?;
                } else {
                    writeln!(
                        out,
                        "would enqueue {n} assets for re-OCR: {n} OCRs that Cloudinary bills (nothing enqueued)"
                    )?;
                }
                return Ok(Outcome::Done);
            }
            if !*yes {
                confirm(
                    &format!("Re-OCR {n} assets? Cloudinary bills {n} OCRs."),
                    &format!(
                        "re-OCR of {n} assets pays for {n} OCRs: confirm with --yes (or count them with --dry-run); nothing enqueued"
                    ),
                )?;
            }
            let asked = shared::clock::epoch_ms(std::time::SystemTime::now());
            let messages: Vec<WorkMessage> = ids
                .iter()
                .map(|key| {
                    let (delivery_type, public_id) = shared::message::asset_of_key(key);
                    let mut m = WorkMessage::new(public_id, "image", delivery_type);
                    m.force = true;
                    // A second delivery finds the re-OCR's result newer than this, and skips.
                    m.forced_at = Some(asked);
                    m
                })
                .collect();
            let shown = json.then_some(&report as &CountsReport<'_>);
            enqueue_all(
                &sqs,
                queue_url,
                &ids,
                &messages,
                ("assets for re-OCR", shown),
                out,
            )
            .await?;
        }
        Command::DeadLetters {
            max,
            include_deleted,
            json,
        } => {
            let table = need(&cli.results_table, "--results-table", "RESULTS_TABLE")?;
            let dlq_url = need(&cli.dlq_url, "--dlq-url", "DEAD_LETTER_QUEUE_URL")?;
            let messages = dead_letters::peek(&sqs, dlq_url, *max, 30).await?;
            let rows = dead_letters::describe(&ddb, table, &messages).await;
            dead_letters::release(&sqs, dlq_url, &messages).await?;
            let (rows, gone): (Vec<_>, Vec<_>) = rows?
                .into_iter()
                .partition(|r| *include_deleted || r.deleted_at.is_none());
            for row in &rows {
                if *json {
                    writeln!(out, "{}", terminal::json_line(row)?)?;
                } else {
                    let deletion = deleted::shown(
                        row.deleted_at.as_deref().unwrap_or_default(),
                        row.renamed_to.as_deref().unwrap_or_default(),
                    )
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                    writeln!(
                        out,
                        "{}\t{}{deletion}\t{} receives\t{}",
                        terminal::escaped(&row.message_id),
                        terminal::escaped(row.key.as_deref().unwrap_or("-")),
                        row.receive_count,
                        terminal::escaped(&row.reason)
                    )?;
                }
            }
            let left_out = match gone.len() {
                0 => String::new(),
                n => format!(
                    "; {n} of deleted (or renamed) assets left out (--include-deleted lists them)"
                ),
            };
            if !*json {
                writeln!(out, "{} dead letters listed{left_out}", rows.len())?;
            } else if !left_out.is_empty() {
                eprintln!("note: {}", left_out.trim_start_matches("; "));
            }
        }
        Command::Secret {
            action:
                SecretAction::Set {
                    secret_arn,
                    from_file,
                },
        } => {
            let arn = secret_arn
                .as_deref()
                .or(cli.stack_secret_arn.as_deref())
                .filter(|a| !a.is_empty())
                .context("which secret? --secret-arn ARN (or CLOUDINARY_SECRET_ARN), or name the stack with --stack-name (its output CloudinarySecretArn)")?;
            let url = secret::read_input(from_file.as_deref())?;
            let sm = aws_sdk_secretsmanager::Client::new(sdk);
            let stored = secret::set(&sm, arn, &url).await?;
            writeln!(
                out,
                "CLOUDINARY_URL stored in {} (version {}): cloud {}, API key {}",
                stored.secret_arn,
                stored.version_id.as_deref().unwrap_or("-"),
                stored.cloud_name,
                stored.api_key
            )?;
        }
        Command::Notifications { action } => {
            notifications::run(&cli, sdk, action, out).await?;
        }
        Command::Redrive { task: true, .. } => {
            let dlq_url = need(&cli.dlq_url, "--dlq-url", "DEAD_LETTER_QUEUE_URL")?;
            let report =
                dead_letters::move_task(&sqs, dlq_url, None, std::time::Duration::from_secs(2))
                    .await?;
            writeln!(
                out,
                "move task {}: {} of {} messages moved back to their source queue",
                report.status.to_lowercase(),
                report.moved,
                report.to_move
            )?;
            if let Some(reason) = &report.failure_reason {
                bail!("the move task failed: {reason}");
            }
        }
        Command::Redrive { max, task: false } => {
            let queue_url = need(&cli.queue_url, "--queue-url", "WORK_QUEUE_URL")?;
            let dlq_url = need(&cli.dlq_url, "--dlq-url", "DEAD_LETTER_QUEUE_URL")?;
            let report = move_messages(&sqs, dlq_url, queue_url, *max)
                .await
                .map_err(|e| anyhow::anyhow!(shared::error::error_chain(&e)))?;
            writeln!(
                out,
                "moved {} messages from the DLQ to the work queue",
                report.moved
            )?;
            if report.not_sent > 0 || report.not_deleted > 0 {
                writeln!(
                    out,
                    "{} refused by the work queue (left in the DLQ), {} sent but not deleted from the DLQ (will be moved again)",
                    report.not_sent, report.not_deleted
                )?;
            }
        }
    }
    Ok(Outcome::Done)
}

/// The JSON a command prints of what it enqueued: (sent, refused) → the counts.
type CountsReport<'a> = dyn Fn(usize, usize) -> serde_json::Value + 'a;

/// Sends `messages` (one per id of `ids`) to the work queue and says how many went: the
/// counts as JSON when `report` is given, else a line naming them `what`; then each one the
/// queue refused, and an error if any was.
async fn enqueue_all(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    ids: &[String],
    messages: &[WorkMessage],
    (what, report): (&str, Option<&CountsReport<'_>>),
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let refused = SqsQueue::new(sqs.clone(), queue_url)
        .enqueue(messages)
        .await
        .map_err(|e| anyhow::anyhow!(shared::error::error_chain(&e)))?;
    let sent = ids.len() - refused.len();
    match report {
        Some(report) => writeln!(out, "{}", report(sent, refused.len()))?,
        None => writeln!(out, "enqueued {sent} {what}")?,
    }
    for (i, reason) in &refused {
        let (id, reason) = (terminal::escaped(&ids[*i]), terminal::escaped(reason));
        writeln!(out, "not enqueued: {id}: {reason}")?;
    }
    if !refused.is_empty() {
        bail!("the work queue refused {} of the messages", refused.len());
    }
    Ok(())
}

fn pause_targets(cli: &Cli) -> anyhow::Result<pause::Targets> {
    Ok(pause::Targets {
        worker_function: need(
            &cli.worker_function,
            "--worker-function",
            "WORKER_FUNCTION_NAME",
        )?
        .to_string(),
        schedule: cli.schedule_name.clone().filter(|s| !s.is_empty()),
    })
}

fn pause_clients(
    cli: &Cli,
    sdk: &aws_config::SdkConfig,
) -> (aws_sdk_lambda::Client, aws_sdk_scheduler::Client) {
    let mut lambda = aws_sdk_lambda::config::Builder::from(sdk);
    if let Some(endpoint) = &cli.lambda_endpoint {
        lambda = lambda.endpoint_url(endpoint);
    }
    (
        aws_sdk_lambda::Client::from_conf(lambda.build()),
        aws_sdk_scheduler::Client::new(sdk),
    )
}

/// Asks `question` on the terminal before paying; `refusal` when standard input is not a
/// terminal (`--yes` is then the way to confirm), an error too when the answer is not yes.
fn confirm(question: &str, refusal: &str) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("{refusal}");
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .context("reading the answer")?;
    if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        bail!("not confirmed; nothing enqueued");
    }
    Ok(())
}

/// What `status` reports.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StatusReport {
    /// Items by status; `in_progress` are claimed or awaiting a retry. Deleted items are not
    /// among them (nor in the progress): see `deleted`.
    pub items: BTreeMap<String, u64>,
    /// Items of assets deleted (or renamed away) in Cloudinary, counted apart.
    pub deleted: DeletedCounts,
    pub checkpoints: Vec<BTreeMap<String, String>>,
    pub queue: Option<QueueDepth>,
    pub dlq: Option<QueueDepth>,
    pub progress: Progress,
    /// The DLQ's most common reasons (ids and times left out), with their counts, most common
    /// first; read from up to 100 of its messages.
    pub dlq_top_reasons: Vec<(String, u64)>,
    /// The Admin API quota in the last hour, from the worker's metrics (with --stack-name;
    /// `None` when the worker reported none: no calls, or the Upload API).
    pub quota: Option<QuotaUse>,
    /// The OCR budget's limits and what is left of them (when the stack sets one).
    pub budget: Option<shared::budget::Left>,
    /// Running or paused (with the worker function known).
    pub pipeline: Option<String>,
}

/// The results table's deleted items (see [`deleted`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeletedCounts {
    /// Every deleted item, renamed ones included.
    pub total: u64,
    /// Of them, those renamed away (`goneBy` rename).
    pub renamed: u64,
}

/// How much of Cloudinary's hourly Admin API quota the account used.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QuotaUse {
    /// The hourly limit Cloudinary reported.
    pub limit: Option<u64>,
    /// The fewest calls left that the worker saw in the last hour.
    pub lowest_remaining: u64,
    /// `100 × (limit − lowest_remaining) / limit`.
    pub used_percent: Option<f64>,
}

/// The quota figures the worker wrote (metrics `CloudinaryQuotaRemaining`, minimum, and
/// `CloudinaryQuotaLimit`, maximum) over the hour before `now`, for stack `stack`.
pub async fn quota_use(
    cw: &aws_sdk_cloudwatch::Client,
    stack: &str,
    now: std::time::SystemTime,
) -> anyhow::Result<Option<QuotaUse>> {
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
    let query = |id: &str, name: &str, stat: &str| {
        let dims = [stack, "worker"]
            .iter()
            .zip(shared::telemetry::DIMENSIONS)
            .map(|(value, name)| Dimension::builder().name(name).value(*value).build())
            .collect();
        MetricDataQuery::builder()
            .id(id)
            .metric_stat(
                MetricStat::builder()
                    .metric(
                        Metric::builder()
                            .namespace(shared::telemetry::METRICS_NAMESPACE)
                            .metric_name(name)
                            .set_dimensions(Some(dims))
                            .build(),
                    )
                    .period(3600)
                    .stat(stat)
                    .build(),
            )
            .build()
    };
    let answer = cw
        .get_metric_data()
        .metric_data_queries(query("remaining", "CloudinaryQuotaRemaining", "Minimum"))
        .metric_data_queries(query("limit", "CloudinaryQuotaLimit", "Maximum"))
        .start_time(DateTime::from(now - std::time::Duration::from_secs(3600)))
        .end_time(DateTime::from(now))
        .send()
        .await
        .context("reading the worker's quota metrics from CloudWatch")?;
    let extreme = |id: &str, lowest: bool| {
        let values = answer
            .metric_data_results()
            .iter()
            .filter(|r| r.id() == Some(id))
            .flat_map(|r| r.values().iter().copied());
        if lowest {
            values.reduce(f64::min)
        } else {
            values.reduce(f64::max)
        }
    };
    let Some(remaining) = extreme("remaining", true) else {
        return Ok(None);
    };
    let limit = extreme("limit", false).map(|l| l as u64);
    let lowest_remaining = remaining as u64;
    Ok(Some(QuotaUse {
        limit,
        lowest_remaining,
        used_percent: limit
            .filter(|l| *l > 0)
            .map(|l| 100.0 * l.saturating_sub(lowest_remaining) as f64 / l as f64),
    }))
}

/// How far the backfill is.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Progress {
    /// Assets known to the pipeline: the larger of the last full pass's count (the account's
    /// size), the full pass in progress so far, and the items in the table.
    pub assets_seen: u64,
    /// Items that reached a terminal status (done, no_text, failed).
    pub terminal: u64,
    pub percent_done: f64,
    /// Items that reached a terminal status in the last hour.
    pub last_hour: u64,
    /// At the last hour's pace, hours until every asset seen is terminal; `None` when nothing
    /// finished in the last hour.
    pub eta_hours: Option<f64>,
}

impl Progress {
    fn new(assets_seen: u64, terminal: u64, last_hour: u64) -> Self {
        let assets_seen = assets_seen.max(terminal);
        let percent_done = if assets_seen == 0 {
            100.0
        } else {
            100.0 * terminal as f64 / assets_seen as f64
        };
        let left = assets_seen - terminal;
        Self {
            assets_seen,
            terminal,
            percent_done,
            last_hour,
            eta_hours: match (left, last_hour) {
                (0, _) => Some(0.0),
                (_, 0) => None,
                (left, per_hour) => Some(left as f64 / per_hour as f64),
            },
        }
    }

    /// `[#########-----------]`, `width` cells.
    fn bar(&self, width: usize) -> String {
        let filled = ((self.percent_done / 100.0) * width as f64).round() as usize;
        let filled = filled.min(width);
        format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
    }
}

/// A reason with what differs from asset to asset (quoted ids, times) left out, so that the
/// same failure counts once.
fn reason_class(reason: &str) -> String {
    static VARYING: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let varying = VARYING.get_or_init(|| {
        regex::Regex::new(r#""(?:[^"\\]|\\.)*"|\d{4}-\d{2}-\d{2}T[0-9:.]+Z?"#)
            .expect("a valid pattern")
    });
    let class = varying.replace_all(reason, "…");
    shared::store::truncate_utf8(&class, 160).to_string()
}

async fn status(
    cli: &Cli,
    ddb: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
) -> anyhow::Result<StatusReport> {
    let table = need(&cli.results_table, "--results-table", "RESULTS_TABLE")?;
    ensure_table(ddb, table).await?;
    let mut report = StatusReport::default();
    let mut items = BTreeMap::new();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let mut last_hour = 0;
    let mut gone = DeletedCounts::default();
    let all = ScanFilter {
        include_deleted: true,
        ..ScanFilter::default()
    };
    let projection = format!("#status, ocrAt, {}", deleted::PROJECTION);
    scan::for_each_item(ddb, table, 4, &all, Some(&projection), |item| {
        if let Some(t) = deleted::tombstone(item) {
            gone.total += 1;
            gone.renamed += u64::from(t.is_rename());
            return Ok(());
        }
        let status = s(item, "status");
        let recent = s(item, "ocrAt")
            .and_then(|t| shared::clock::parse_rfc3339(&t))
            .is_some_and(|t| t >= hour_ago);
        last_hour += u64::from(status.is_some() && recent);
        *items
            .entry(status.unwrap_or_else(|| "in_progress".into()))
            .or_insert(0) += 1;
        Ok(())
    })
    .await?;
    let in_table: u64 = items.values().sum();
    let terminal: u64 = ["done", "no_text", "failed"]
        .iter()
        .filter_map(|k| items.get(*k))
        .sum();
    report.items = items;
    report.deleted = gone;
    let mut assets_seen = in_table;
    if let Some(cp) = cli.checkpoint_table.as_deref().filter(|t| !t.is_empty()) {
        let page = ddb
            .scan()
            .table_name(cp)
            .send()
            .await
            .with_context(|| format!("reading checkpoint table {cp:?}"))?;
        // The table also keeps the OCR budget's counters: `status` shows them apart.
        for item in page
            .items
            .unwrap_or_default()
            .into_iter()
            .filter(|i| !s(i, "id").is_some_and(|id| id.starts_with("budget#")))
        {
            let mut row = BTreeMap::new();
            for (k, v) in &item {
                let text = v
                    .as_s()
                    .cloned()
                    .or_else(|_| v.as_n().cloned())
                    .unwrap_or_default();
                row.insert(k.clone(), text);
            }
            let number = |k: &str| row.get(k).and_then(|v| v.parse::<u64>().ok());
            assets_seen = assets_seen.max(number("lastFullPassListed").unwrap_or(0));
            if row.get("mode").map(String::as_str) == Some("full") {
                assets_seen = assets_seen.max(number("passListed").unwrap_or(0));
            }
            report.checkpoints.push(row);
        }
    }
    report.progress = Progress::new(assets_seen, terminal, last_hour);
    if let Some(url) = cli.queue_url.as_deref().filter(|u| !u.is_empty()) {
        let mut depth = queue_depth(sqs, url)
            .await
            .map_err(|e| anyhow::anyhow!(shared::error::error_chain(&e)))?;
        // The read-backs waiting are work not done yet: counted with the work queue's.
        if let Some(url) = cli.read_back_queue_url.as_deref().filter(|u| !u.is_empty()) {
            depth += queue_depth(sqs, url)
                .await
                .map_err(|e| anyhow::anyhow!(shared::error::error_chain(&e)))?;
        }
        report.queue = Some(depth);
    }
    if let Some(url) = cli.dlq_url.as_deref().filter(|u| !u.is_empty()) {
        let depth = queue_depth(sqs, url)
            .await
            .map_err(|e| anyhow::anyhow!(shared::error::error_chain(&e)))?;
        if depth.visible > 0 {
            report.dlq_top_reasons = top_reasons(ddb, sqs, table, url).await?;
        }
        report.dlq = Some(depth);
    }
    Ok(report)
}

/// The DLQ's most common reasons, read as `dead-letters` reads them (the messages stay).
async fn top_reasons(
    ddb: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
    table: &str,
    dlq_url: &str,
) -> anyhow::Result<Vec<(String, u64)>> {
    let messages = dead_letters::peek(sqs, dlq_url, 100, 30).await?;
    let rows = dead_letters::describe(ddb, table, &messages).await;
    dead_letters::release(sqs, dlq_url, &messages).await?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for row in rows?.into_iter().filter(|r| r.deleted_at.is_none()) {
        *counts.entry(reason_class(&row.reason)).or_default() += 1;
    }
    let mut top: Vec<(String, u64)> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(5);
    Ok(top)
}

fn print_status(r: &StatusReport, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let p = &r.progress;
    writeln!(
        out,
        "progress     {} {:.1} %  {} of {} assets terminal",
        p.bar(30),
        p.percent_done,
        p.terminal,
        p.assets_seen
    )?;
    let eta = match p.eta_hours {
        _ if p.terminal == p.assets_seen => "done".to_string(),
        Some(h) if h < 1.0 => format!("about {:.0} min", h * 60.0),
        Some(h) => format!("about {h:.1} h"),
        None => "unknown (nothing finished in the last hour)".to_string(),
    };
    writeln!(
        out,
        "pace         {} in the last hour; ETA {eta}",
        p.last_hour
    )?;
    let total: u64 = r.items.values().sum();
    writeln!(out, "items        {total}")?;
    for (status, n) in &r.items {
        writeln!(out, "  {status:<11}{n}")?;
    }
    if r.deleted.total > 0 {
        writeln!(
            out,
            "deleted      {} ({} renamed away): assets gone from Cloudinary, not counted above",
            r.deleted.total, r.deleted.renamed
        )?;
    }
    for cp in &r.checkpoints {
        let get = |k: &str| terminal::escaped(cp.get(k).map(String::as_str).unwrap_or("-"));
        writeln!(
            out,
            "lister       {}: pass {} listed {} (cursor {}), last full pass {}, {} listed in all",
            get("id"),
            get("mode"),
            get("passListed"),
            if cp.contains_key("cursor") {
                "saved"
            } else {
                "none"
            },
            get("lastFullPassAt"),
            get("totalListed")
        )?;
    }
    for (name, d) in [("queue", &r.queue), ("dlq", &r.dlq)] {
        if let Some(d) = d {
            writeln!(
                out,
                "{name:<13}{} visible, {} in flight, {} delayed",
                d.visible, d.in_flight, d.delayed
            )?;
        }
    }
    for (reason, n) in &r.dlq_top_reasons {
        writeln!(out, "  {n:>6}  {}", terminal::escaped(reason))?;
    }
    if let Some(b) = &r.budget {
        writeln!(out, "budget       {}", spend::budget_line(b))?;
    }
    if let Some(p) = &r.pipeline {
        writeln!(out, "pipeline     {p}")?;
    }
    if let Some(q) = &r.quota {
        match (q.limit, q.used_percent) {
            (Some(limit), Some(used)) => writeln!(
                out,
                "quota        {used:.0} % of the Admin API's {limit} calls an hour used (fewest left in the last hour: {})",
                q.lowest_remaining
            )?,
            _ => writeln!(
                out,
                "quota        fewest Admin API calls left in the last hour: {}",
                q.lowest_remaining
            )?,
        }
    }
    Ok(())
}

/// The AWS configuration from the flags and the environment. With `AWS_ENDPOINT_URL` on the
/// loopback interface (moto) and no credentials configured, placeholder credentials and
/// `us-east-1` are used, so the tool works against the local stack without an AWS profile.
pub async fn sdk_config(cli: &Cli) -> aws_config::SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    let local = ["http://127.0.0.1", "http://localhost"]
        .iter()
        .any(|p| endpoint.starts_with(p));
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if local {
        if std::env::var("AWS_ACCESS_KEY_ID").is_err() && std::env::var("AWS_PROFILE").is_err() {
            loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "local",
                "local",
                None,
                None,
                "local-endpoint",
            ));
        }
        if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            loader = loader.region(aws_config::Region::new("us-east-1"));
        }
    }
    if let Some(profile) = &cli.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &cli.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    loader.load().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_failure_is_one_reason_whatever_its_asset_or_time() {
        let a = r#"cloudinary answered HTTP 404 for OCR of "a/b \"c\"": Resource not found"#;
        let b = r#"cloudinary answered HTTP 404 for OCR of "x": Resource not found"#;
        assert_eq!(reason_class(a), reason_class(b));
        assert_eq!(
            reason_class("next reset 2026-11-27T04:08:08.265294984Z; still refused"),
            "next reset …; still refused"
        );
        assert_eq!(
            reason_class("gave up after 5 receives"),
            "gave up after 5 receives"
        );
    }

    #[test]
    fn progress_and_eta_follow_the_last_hour() {
        let p = Progress::new(100, 40, 20);
        assert_eq!((p.percent_done, p.eta_hours), (40.0, Some(3.0)));
        assert_eq!(p.bar(10), "[####------]");
        let idle = Progress::new(100, 40, 0);
        assert_eq!(idle.eta_hours, None);
        let done = Progress::new(0, 5, 0);
        assert_eq!(
            (done.assets_seen, done.percent_done, done.eta_hours),
            (5, 100.0, Some(0.0))
        );
        assert_eq!(Progress::new(0, 0, 0).percent_done, 100.0);
    }
}
