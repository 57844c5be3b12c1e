//! `export --to s3://bucket/prefix/`: the results table to S3, gzip-compressed JSON lines or
//! CSV, one file per scan segment, written so that a half-written export is never taken for a
//! whole one.
//!
//! Layout of one export (a *run*), under the prefix:
//!
//! ```text
//! runs/RUN/_run.json                          what the run exports (format, segments, filter)
//! runs/RUN/data/part-00000-of-00004.jsonl.gz  one file per scan segment
//! runs/RUN/_parts/part-00000.json             a segment's file is complete (rows, bytes)
//! runs/RUN/_SUCCESS                           the run is whole: every part, with its counts
//! latest.json                                 the last whole run (written after _SUCCESS)
//! ```
//!
//! Each data file is written by a multipart upload (or one PUT when small): S3 shows it only
//! once complete, so a killed export leaves no partial file, only an incomplete upload, which
//! `--resume RUN` aborts before it writes what is missing (and a bucket lifecycle rule should
//! abort after a day). A reader takes a run only when `_SUCCESS` is there; the Glue table, when
//! named, is pointed at the run's `data/` folder only after that, in one update.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use anyhow::{Context, bail};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

use crate::bucket_owner::OwnerCheckedS3;
use crate::export::{Format, Row};
use crate::scan::{Item, ScanFilter, ensure_table, scan_page};

/// S3's smallest part but the last.
pub const MIN_PART_BYTES: usize = 5 * 1024 * 1024;

/// `s3://bucket/prefix/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Empty, or ending with `/`.
    pub prefix: String,
}

impl std::str::FromStr for S3Location {
    type Err = anyhow::Error;
    fn from_str(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("s3://")
            .with_context(|| format!("{url:?} is not an S3 URL (s3://bucket/prefix/)"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("{url:?} names no bucket (s3://bucket/prefix/)");
        }
        let prefix = match prefix {
            "" => String::new(),
            p if p.ends_with('/') => p.to_string(),
            p => format!("{p}/"),
        };
        Ok(Self {
            bucket: bucket.to_string(),
            prefix,
        })
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// What a run exports: written first, read back by `--resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    pub run: String,
    pub format: Format,
    pub segments: i32,
    pub statuses: Vec<String>,
    pub prefix: Option<String>,
    /// Deleted items too (false in a run written before deleted items were left out).
    #[serde(default)]
    pub include_deleted: bool,
    pub allow_formulas: bool,
    pub table: String,
    pub started_at: String,
}

/// One complete data file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartReport {
    pub key: String,
    pub rows: u64,
    /// Compressed size.
    pub bytes: u64,
}

/// `_SUCCESS`: the whole run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunManifest {
    #[serde(flatten)]
    pub spec: RunSpec,
    pub rows: u64,
    pub parts: Vec<PartReport>,
    /// The run's data folder, as a table location (`s3://bucket/prefix/runs/RUN/data/`).
    pub data: String,
    pub finished_at: String,
}

/// How an export to S3 is written.
#[derive(Debug, Clone)]
pub struct S3ExportOptions {
    pub format: Format,
    pub filter: ScanFilter,
    pub segments: i32,
    pub allow_formulas: bool,
    /// Bytes of compressed data per uploaded part (at least [`MIN_PART_BYTES`]).
    pub part_bytes: usize,
    /// Go on with this run (only its missing files are written) instead of starting one.
    pub resume: Option<String>,
    /// `DATABASE.TABLE` in Glue, pointed at the run's data once it is whole.
    pub glue_table: Option<String>,
    /// Stop as a killed process would, once this many parts of one file are uploaded: nothing
    /// completed, nothing aborted (what a kill leaves, for tests and drills).
    pub stop_after_parts: Option<usize>,
    /// A spinner counting the rows on standard error (when it is a terminal).
    pub progress: bool,
}

impl Default for S3ExportOptions {
    fn default() -> Self {
        Self {
            format: Format::Jsonl,
            filter: ScanFilter::default(),
            segments: 4,
            allow_formulas: false,
            part_bytes: 16 * 1024 * 1024,
            resume: None,
            glue_table: None,
            stop_after_parts: None,
            progress: false,
        }
    }
}

/// The run id of an export started at `now`: its UTC time to the second, sortable
/// (`20261126T080000Z`).
pub fn run_id(now: std::time::SystemTime) -> String {
    shared::clock::rfc3339_secs(now).replace(['-', ':'], "")
}

fn now_rfc3339() -> String {
    shared::clock::rfc3339(std::time::SystemTime::now())
}

async fn get_json<T: serde::de::DeserializeOwned>(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> anyhow::Result<Option<T>> {
    match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(o) => {
            let bytes = o.body.collect().await?.into_bytes();
            Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("s3://{bucket}/{key} is not what ocr-ctl wrote")
            })?))
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading s3://{bucket}/{key}")),
    }
}

async fn put_json(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    value: &impl Serialize,
) -> anyhow::Result<()> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/json")
        .body(ByteStream::from(serde_json::to_vec_pretty(value)?))
        .send()
        .await
        .with_context(|| format!("writing s3://{bucket}/{key}"))?;
    Ok(())
}

async fn list_keys(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .with_context(|| format!("listing s3://{bucket}/{prefix}"))?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => return Ok(keys),
        }
    }
}

/// Aborts the incomplete multipart uploads under `prefix` (what a killed export left).
async fn abort_stale_uploads(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> anyhow::Result<u64> {
    let listed = s3
        .list_multipart_uploads()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .with_context(|| format!("listing the incomplete uploads under s3://{bucket}/{prefix}"))?;
    let mut aborted = 0;
    for u in listed.uploads() {
        let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
            continue;
        };
        s3.abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .send()
            .await
            .with_context(|| format!("aborting the incomplete upload of s3://{bucket}/{key}"))?;
        aborted += 1;
    }
    Ok(aborted)
}

/// What an export to S3 did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct S3ExportReport {
    pub manifest: RunManifest,
    /// `s3://.../_SUCCESS`.
    pub success_url: String,
    /// Data files written by this invocation (the others were complete already).
    pub written: usize,
    /// Incomplete uploads of an earlier attempt, aborted.
    pub aborted_uploads: u64,
    /// The Glue table pointed at the run's data.
    pub glue_table: Option<String>,
}

/// Exports `table` to `to` (see the module's description), in a bucket `s3`'s owner owns.
pub async fn export_s3(
    ddb: &aws_sdk_dynamodb::Client,
    s3: &OwnerCheckedS3,
    glue: &aws_sdk_glue::Client,
    table: &str,
    to: &S3Location,
    options: &S3ExportOptions,
) -> anyhow::Result<S3ExportReport> {
    ensure_table(ddb, table).await?;
    s3.head_bucket()
        .bucket(&to.bucket)
        .send()
        .await
        .with_context(|| {
            format!(
                "bucket {:?} cannot be reached (does it exist, is it account {}'s (--bucket-owner), may these credentials write to it?)",
                to.bucket,
                s3.owner()
            )
        })?;
    let glue_table = options
        .glue_table
        .as_deref()
        .map(|t| {
            t.split_once('.')
                .filter(|(d, n)| !d.is_empty() && !n.is_empty())
                .map(|(d, n)| (d.to_string(), n.to_string()))
                .with_context(|| format!("--glue-table {t:?}: expected DATABASE.TABLE"))
        })
        .transpose()?;
    let part_bytes = options.part_bytes.max(MIN_PART_BYTES);
    let (spec, aborted) = match &options.resume {
        Some(run) => {
            let key = format!("{}runs/{run}/_run.json", to.prefix);
            let Some(spec) = get_json::<RunSpec>(s3, &to.bucket, &key).await? else {
                bail!("no export run {run:?} under {to} (nothing to resume)");
            };
            if spec.table != table {
                bail!("run {run:?} exports table {:?}, not {table:?}", spec.table);
            }
            let aborted =
                abort_stale_uploads(s3, &to.bucket, &format!("{}runs/{run}/", to.prefix)).await?;
            (spec, aborted)
        }
        None => {
            let spec = RunSpec {
                run: run_id(std::time::SystemTime::now()),
                format: options.format,
                segments: options.segments.max(1),
                statuses: options.filter.statuses.clone(),
                prefix: options.filter.prefix.clone(),
                include_deleted: options.filter.include_deleted,
                allow_formulas: options.allow_formulas,
                table: table.to_string(),
                started_at: now_rfc3339(),
            };
            let key = format!("{}runs/{}/_run.json", to.prefix, spec.run);
            if get_json::<RunSpec>(s3, &to.bucket, &key).await?.is_some() {
                bail!(
                    "an export run {:?} already exists under {to}; try again in a second",
                    spec.run
                );
            }
            put_json(s3, &to.bucket, &key, &spec).await?;
            (spec, 0)
        }
    };
    let run = spec.run.clone();
    let (manifest, written) = write_run(ddb, s3, table, to, spec, part_bytes, options)
        .await
        .with_context(|| {
            format!(
                "export run {run} under {to} is not whole; `ocr-ctl export --to {to} --resume {run}` goes on with it"
            )
        })?;
    if let Some((database, name)) = &glue_table {
        point_table_at(glue, database, name, &manifest.data)
            .await
            .with_context(|| {
                format!(
                    "export run {run} is whole, but the Glue table still reads the one before; `ocr-ctl export --to {to} --resume {run}` points it at this one"
                )
            })?;
    }
    Ok(S3ExportReport {
        success_url: format!("s3://{}/{}runs/{run}/_SUCCESS", to.bucket, to.prefix),
        manifest,
        written,
        aborted_uploads: aborted,
        glue_table: options.glue_table.clone(),
    })
}

/// Writes the files of `spec`'s run that are not complete yet, then `_SUCCESS` and
/// `latest.json`: the run's manifest, and how many files this call wrote.
async fn write_run(
    ddb: &aws_sdk_dynamodb::Client,
    s3: &aws_sdk_s3::Client,
    table: &str,
    to: &S3Location,
    spec: RunSpec,
    part_bytes: usize,
    options: &S3ExportOptions,
) -> anyhow::Result<(RunManifest, usize)> {
    let run_prefix = format!("{}runs/{}/", to.prefix, spec.run);
    let filter = ScanFilter {
        statuses: spec.statuses.clone(),
        prefix: spec.prefix.clone(),
        include_deleted: spec.include_deleted,
    };
    let done: BTreeSet<String> = list_keys(s3, &to.bucket, &format!("{run_prefix}_parts/"))
        .await?
        .into_iter()
        .collect();
    let data_key = |segment: i32| {
        format!(
            "{run_prefix}data/part-{segment:05}-of-{:05}.{}.gz",
            spec.segments,
            spec.format.extension()
        )
    };
    let marker_key = |segment: i32| format!("{run_prefix}_parts/part-{segment:05}.json");
    let todo: Vec<i32> = (0..spec.segments)
        .filter(|s| !done.contains(&marker_key(*s)))
        .collect();
    let written = todo.len();
    let bar = crate::export::spinner(options.progress, "rows exported to S3");
    let tasks = todo.into_iter().map(|segment| {
        let file = PartFile {
            s3,
            bucket: &to.bucket,
            key: data_key(segment),
            encoder: GzEncoder::new(Vec::new(), Compression::default()),
            upload: None,
            parts: Vec::new(),
            rows: 0,
            bytes: 0,
            part_bytes,
            stop_after_parts: options.stop_after_parts,
        };
        let filter = &filter;
        let marker = marker_key(segment);
        let bucket = &to.bucket;
        let encoding = (spec.format, spec.allow_formulas);
        let segments = spec.segments;
        let bar = bar.clone();
        async move {
            let report = write_segment(
                ddb,
                table,
                (segment, segments),
                filter,
                encoding,
                file,
                bar.as_ref(),
            )
            .await?;
            put_json(s3, bucket, &marker, &report).await?;
            Ok::<(i32, PartReport), anyhow::Error>((segment, report))
        }
    });
    let all = futures::future::try_join_all(tasks).await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let mut now_written: BTreeMap<i32, PartReport> = all?.into_iter().collect();
    // Every segment is complete: the counts of those an earlier call wrote are read back,
    // then _SUCCESS is written, then the pointer.
    let mut parts = Vec::new();
    for segment in 0..spec.segments {
        let part = match now_written.remove(&segment) {
            Some(part) => part,
            None => get_json(s3, &to.bucket, &marker_key(segment))
                .await?
                .with_context(|| format!("segment {segment}'s file is not complete"))?,
        };
        parts.push(part);
    }
    let manifest = RunManifest {
        rows: parts.iter().map(|p| p.rows).sum(),
        parts,
        data: format!("s3://{}/{run_prefix}data/", to.bucket),
        spec,
        finished_at: now_rfc3339(),
    };
    put_json(s3, &to.bucket, &format!("{run_prefix}_SUCCESS"), &manifest).await?;
    put_json(
        s3,
        &to.bucket,
        &format!("{}latest.json", to.prefix),
        &manifest,
    )
    .await?;
    Ok((manifest, written))
}

/// Moves a Glue table's location (one UpdateTable: a query sees the old run or the new one).
async fn point_table_at(
    glue: &aws_sdk_glue::Client,
    database: &str,
    name: &str,
    location: &str,
) -> anyhow::Result<()> {
    let current = glue
        .get_table()
        .database_name(database)
        .name(name)
        .send()
        .await
        .with_context(|| format!("reading Glue table {database}.{name}"))?;
    let table = current
        .table()
        .with_context(|| format!("Glue table {database}.{name} not found"))?;
    let Some(mut sd) = table.storage_descriptor().cloned() else {
        bail!("Glue table {database}.{name} has no storage descriptor to point");
    };
    sd.location = Some(location.to_string());
    let input = aws_sdk_glue::types::TableInput::builder()
        .name(name)
        .set_description(table.description().map(str::to_string))
        .set_table_type(table.table_type().map(str::to_string))
        .set_parameters(table.parameters().cloned())
        .set_partition_keys(Some(table.partition_keys().to_vec()))
        .storage_descriptor(sd)
        .build()
        .context("building the Glue table's update")?;
    glue.update_table()
        .database_name(database)
        .table_input(input)
        .send()
        .await
        .with_context(|| format!("pointing Glue table {database}.{name} at {location}"))?;
    Ok(())
}

/// One data file being written: gzip-compressed rows, uploaded part by part.
struct PartFile<'a> {
    s3: &'a aws_sdk_s3::Client,
    bucket: &'a str,
    key: String,
    encoder: GzEncoder<Vec<u8>>,
    /// The multipart upload's id, once a part is uploaded.
    upload: Option<String>,
    parts: Vec<CompletedPart>,
    rows: u64,
    bytes: u64,
    part_bytes: usize,
    stop_after_parts: Option<usize>,
}

/// Returned by a run told to stop as if killed.
#[derive(Debug, thiserror::Error)]
#[error("stopped after uploading {0} parts of {1} (as a killed export would)")]
pub struct StoppedAsKilled(pub usize, pub String);

impl PartFile<'_> {
    async fn write_row(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.encoder.write_all(bytes)?;
        self.rows += 1;
        if self.encoder.get_ref().len() >= self.part_bytes {
            let chunk = std::mem::take(self.encoder.get_mut());
            self.upload_part(chunk).await?;
        }
        Ok(())
    }

    async fn upload_part(&mut self, chunk: Vec<u8>) -> anyhow::Result<()> {
        let upload = match &self.upload {
            Some(id) => id.clone(),
            None => {
                let created = self
                    .s3
                    .create_multipart_upload()
                    .bucket(self.bucket)
                    .key(&self.key)
                    .content_type("application/gzip")
                    .send()
                    .await
                    .with_context(|| format!("starting the upload of {}", self.key))?;
                let id = created
                    .upload_id()
                    .context("S3 gave no upload id")?
                    .to_string();
                self.upload = Some(id.clone());
                id
            }
        };
        let number = self.parts.len() as i32 + 1;
        self.bytes += chunk.len() as u64;
        let uploaded = self
            .s3
            .upload_part()
            .bucket(self.bucket)
            .key(&self.key)
            .upload_id(&upload)
            .part_number(number)
            .body(ByteStream::from(chunk))
            .send()
            .await
            .with_context(|| format!("uploading part {number} of {}", self.key))?;
        self.parts.push(
            CompletedPart::builder()
                .set_e_tag(uploaded.e_tag().map(str::to_string))
                .part_number(number)
                .build(),
        );
        if self.stop_after_parts == Some(self.parts.len()) {
            return Err(StoppedAsKilled(self.parts.len(), self.key.clone()).into());
        }
        Ok(())
    }

    /// Completes the file: S3 shows it from now on.
    async fn finish(mut self) -> anyhow::Result<PartReport> {
        self.encoder.try_finish()?;
        let rest = std::mem::take(self.encoder.get_mut());
        match self.upload.clone() {
            None => {
                self.bytes = rest.len() as u64;
                self.s3
                    .put_object()
                    .bucket(self.bucket)
                    .key(&self.key)
                    .content_type("application/gzip")
                    .body(ByteStream::from(rest))
                    .send()
                    .await
                    .with_context(|| format!("writing {}", self.key))?;
            }
            Some(upload) => {
                if !rest.is_empty() {
                    self.upload_part(rest).await?;
                }
                self.s3
                    .complete_multipart_upload()
                    .bucket(self.bucket)
                    .key(&self.key)
                    .upload_id(&upload)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(std::mem::take(&mut self.parts)))
                            .build(),
                    )
                    .send()
                    .await
                    .with_context(|| format!("completing the upload of {}", self.key))?;
            }
        }
        Ok(PartReport {
            key: self.key,
            rows: self.rows,
            bytes: self.bytes,
        })
    }

    /// Gives the upload up (after an error): S3 drops its parts.
    async fn abort(self) {
        if let Some(upload) = &self.upload {
            let _best_effort = self
                .s3
                .abort_multipart_upload()
                .bucket(self.bucket)
                .key(&self.key)
                .upload_id(upload)
                .send()
                .await;
        }
    }
}

/// Encodes one row as its line of the file (CSV: the header first).
fn encode(
    row: &Row,
    format: Format,
    header: bool,
    allow_formulas: bool,
) -> anyhow::Result<Vec<u8>> {
    match format {
        Format::Jsonl => {
            let mut line = serde_json::to_vec(row)?;
            line.push(b'\n');
            Ok(line)
        }
        Format::Csv => {
            let mut w = csv::WriterBuilder::new()
                .has_headers(header)
                .from_writer(Vec::new());
            if allow_formulas {
                w.serialize(row)?;
            } else {
                w.serialize(row.without_formulas())?;
            }
            Ok(w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)
        }
    }
}

/// Scans one segment into its file.
async fn write_segment(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    segment: (i32, i32),
    filter: &ScanFilter,
    (format, allow_formulas): (Format, bool),
    mut file: PartFile<'_>,
    bar: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<PartReport> {
    let mut start: Option<Item> = None;
    let result = async {
        loop {
            let (items, next) = scan_page(ddb, table, segment, filter, None, start.take()).await?;
            for item in &items {
                let header = file.rows == 0;
                let line = encode(&Row::from_item(item), format, header, allow_formulas)?;
                file.write_row(&line).await?;
            }
            if let Some(b) = bar {
                b.inc(items.len() as u64);
            }
            match next {
                Some(k) => start = Some(k),
                None => return Ok::<(), anyhow::Error>(()),
            }
        }
    }
    .await;
    match result {
        Ok(()) => file.finish().await,
        Err(e) if e.is::<StoppedAsKilled>() => Err(e),
        Err(e) => {
            file.abort().await;
            Err(e)
        }
    }
}

/// The runs under `to`, each with whether it is whole (`_SUCCESS`), oldest first.
pub async fn runs(s3: &OwnerCheckedS3, to: &S3Location) -> anyhow::Result<BTreeMap<String, bool>> {
    let mut runs = BTreeMap::new();
    for key in list_keys(s3, &to.bucket, &format!("{}runs/", to.prefix)).await? {
        let rest = &key[to.prefix.len() + "runs/".len()..];
        if let Some((run, file)) = rest.split_once('/') {
            let whole = runs.entry(run.to_string()).or_insert(false);
            *whole |= file == "_SUCCESS";
        }
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_name_a_bucket_and_a_folder() {
        let l: S3Location = "s3://b/some/prefix".parse().unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("b", "some/prefix/")
        );
        assert_eq!(l.to_string(), "s3://b/some/prefix/");
        let root: S3Location = "s3://b".parse().unwrap();
        assert_eq!(root.prefix, "");
        assert!("s3:///x".parse::<S3Location>().is_err());
        assert!("/tmp/x".parse::<S3Location>().is_err());
    }

    #[test]
    fn run_ids_sort_by_time() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_000_000);
        assert_eq!(run_id(t), "20251124T160000Z");
        assert!(run_id(t) < run_id(t + std::time::Duration::from_secs(1)));
    }
}
