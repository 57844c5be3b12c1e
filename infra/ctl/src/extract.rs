//! `extract` and `search --regex`: a pattern run over the texts, line by line as `grep` runs
//! it, one row per match. The texts come from the index (only those it cannot rule out, see
//! [`crate::pattern`]) or from an export file (every one).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::bucket_owner::OwnerCheckedS3;
use crate::export::{Format, neutralise};
use crate::pattern::Pattern;
use crate::search::{IndexDoc, SearchIndex, SearchQuery};

/// Where the texts come from.
pub enum Source<'a> {
    /// The search index.
    Index(&'a SearchIndex),
    /// An export file: JSON lines as `export --format jsonl` writes them (gzip-compressed when
    /// its name ends in `.gz`).
    File(&'a Path),
}

/// One match of the pattern in a line of a text.
#[derive(Debug, Clone, Copy)]
pub struct Found<'t> {
    /// 1 for the text's first line.
    pub line_number: usize,
    pub line: &'t str,
    /// Byte range of the match in `line`.
    pub range: (usize, usize),
}

/// Runs `regex` over each line of `text`, calling `each` with every match and its captures.
pub fn for_each_match<'t>(
    regex: &regex::Regex,
    text: &'t str,
    mut each: impl FnMut(Found<'t>, &regex::Captures<'t>) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        for caps in regex.captures_iter(line) {
            let whole = caps.get(0).expect("group 0 is the match");
            n += 1;
            let found = Found {
                line_number: i + 1,
                line,
                range: (whole.start(), whole.end()),
            };
            each(found, &caps)?;
        }
    }
    Ok(n)
}

/// Whether the item passes the filters of `q` (status, locale, delivery type, folder, deleted
/// items left out), as the index's filters do.
fn passes(doc: &IndexDoc, q: &SearchQuery) -> bool {
    (q.include_deleted || !doc.is_deleted())
        && (q.statuses.is_empty() || q.statuses.contains(&doc.status))
        && q.locale.as_ref().is_none_or(|l| *l == doc.locale)
        && q.delivery_type
            .as_ref()
            .is_none_or(|t| *t == doc.delivery_type)
        && q.prefix
            .as_ref()
            .is_none_or(|p| doc.public_id.starts_with(p.as_str()))
}

/// A progress bar on standard error, when asked for and it is a terminal.
fn bar(progress: bool, len: u64, what: &str) -> Option<indicatif::ProgressBar> {
    (progress && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(len);
        let template =
            format!("{{bar:40}} {{percent}}% {{pos}}/{{len}} {what} ({{per_sec}}, ETA {{eta}})");
        bar.set_style(indicatif::ProgressStyle::with_template(&template).expect("template"));
        bar
    })
}

/// How far a run over the texts went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Scanned {
    /// Items the source holds (that pass the filters, for an export file).
    pub items: u64,
    /// Items whose text the pattern was run over.
    pub read: u64,
    /// Whether the index narrowed what was read by words of the pattern.
    pub narrowed: bool,
}

/// Calls `each` with every item of `source` that passes `q`'s filters and that the pattern
/// may match, until it breaks.
pub fn for_each_text(
    source: &Source<'_>,
    pattern: &Pattern,
    q: &SearchQuery,
    progress: bool,
    mut each: impl FnMut(&IndexDoc) -> anyhow::Result<ControlFlow<()>>,
) -> anyhow::Result<Scanned> {
    match source {
        Source::Index(index) => {
            let candidates = index.candidates(&pattern.need, q)?;
            let bar = bar(progress, candidates.addresses.len() as u64, "texts");
            let mut read = 0;
            index.read(&candidates, |doc| {
                read += 1;
                if let Some(b) = &bar {
                    b.inc(1);
                }
                each(&doc)
            })?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            Ok(Scanned {
                items: candidates.total,
                read,
                narrowed: candidates.narrowed,
            })
        }
        Source::File(path) => {
            let len = std::fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .len();
            let bar = bar(progress, len, "bytes");
            let mut scanned = Scanned::default();
            crate::export::read_rows(path, bar.as_ref(), |row| {
                let Some(doc) = IndexDoc::from_row(row).filter(|d| passes(d, q)) else {
                    return Ok(ControlFlow::Continue(()));
                };
                scanned.items += 1;
                scanned.read += 1;
                each(&doc)
            })?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            Ok(scanned)
        }
    }
}

/// One result of `search --regex`: an item and its first matching line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineHit {
    pub key: String,
    pub public_id: String,
    pub delivery_type: String,
    pub status: String,
    pub locale: String,
    pub line_number: usize,
    pub line: String,
    /// Byte ranges of `line` that matched.
    pub highlights: Vec<(usize, usize)>,
    /// When the item was deleted (only with `--include-deleted`; absent when it is not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// For an item renamed away: its new key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renamed_to: Option<String>,
}

/// The first `limit` items that match (in the index's order), and with `count` how many
/// items and lines match in all.
#[derive(Debug, Clone, Serialize)]
pub struct LineResults {
    pub hits: Vec<LineHit>,
    /// (items, lines) when counted.
    pub total: Option<(u64, u64)>,
    pub scanned: Scanned,
}

/// `search --regex`: the items with a line the pattern matches.
pub fn search_lines(
    source: &Source<'_>,
    pattern: &Pattern,
    q: &SearchQuery,
) -> anyhow::Result<LineResults> {
    let (mut hits, mut items, mut lines) = (Vec::new(), 0u64, 0u64);
    let limit = q.limit.max(1);
    let scanned = for_each_text(source, pattern, q, false, |doc| {
        // Past the limit (counting), a match is only counted: nothing is copied.
        let shown = hits.len() < limit;
        let mut first: Option<LineHit> = None;
        let (mut matched, mut last_line) = (false, 0);
        for_each_match(&pattern.regex, &doc.text, |found, _| {
            matched = true;
            if found.line_number != last_line {
                lines += 1;
                last_line = found.line_number;
            }
            match &mut first {
                None if shown => {
                    first = Some(LineHit {
                        key: doc.key.clone(),
                        public_id: doc.public_id.clone(),
                        delivery_type: doc.delivery_type.clone(),
                        status: doc.status.clone(),
                        locale: doc.locale.clone(),
                        line_number: found.line_number,
                        line: found.line.to_string(),
                        highlights: vec![found.range],
                        deleted_at: Some(doc.deleted_at.clone()).filter(|d| !d.is_empty()),
                        renamed_to: Some(doc.renamed_to.clone()).filter(|r| !r.is_empty()),
                    })
                }
                Some(hit) if hit.line_number == found.line_number => {
                    hit.highlights.push(found.range)
                }
                _ => {}
            }
            Ok(())
        })?;
        if matched {
            items += 1;
            hits.extend(first);
            if hits.len() >= limit && !q.count {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(LineResults {
        hits,
        total: q.count.then_some((items, lines)),
        scanned,
    })
}

/// How `extract` writes its rows.
pub struct RowWriter<W: Write> {
    sink: Sink<W>,
    groups: Vec<String>,
    /// The rows go to a terminal: see [`RowWriter::for_terminal`].
    terminal: bool,
    pub rows: u64,
}

enum Sink<W: Write> {
    /// CSV, with formulas neutralised unless allowed.
    Csv(Box<csv::Writer<W>>, bool),
    Jsonl(W),
}

#[derive(Serialize)]
struct JsonRow<'a> {
    key: &'a str,
    public_id: &'a str,
    #[serde(rename = "match")]
    matched: &'a str,
    groups: BTreeMap<&'a str, Option<&'a str>>,
    line_number: usize,
    line: &'a str,
}

impl<W: Write> RowWriter<W> {
    /// A writer for `pattern`'s rows: key, public_id, match, one column per named group,
    /// line_number, line (CSV: a header first).
    pub fn new(
        out: W,
        format: Format,
        pattern: &Pattern,
        allow_formulas: bool,
    ) -> anyhow::Result<Self> {
        let groups: Vec<String> = pattern
            .regex
            .capture_names()
            .flatten()
            .map(str::to_string)
            .collect();
        let sink = match format {
            Format::Csv => {
                let mut w = csv::Writer::from_writer(out);
                let mut header = vec!["key", "public_id", "match"];
                header.extend(groups.iter().map(String::as_str));
                header.extend(["line_number", "line"]);
                w.write_record(&header)?;
                Sink::Csv(Box::new(w), allow_formulas)
            }
            Format::Jsonl => Sink::Jsonl(out),
        };
        Ok(Self {
            sink,
            groups,
            terminal: false,
            rows: 0,
        })
    }

    /// Rows for a terminal, as `ls` writes names there: CSV cells with their control
    /// characters written out (`\x1b`, see [`crate::terminal::escaped`]), JSON with DEL and
    /// C1 as `\u` escapes (the same values). To a file or a pipe the rows are exact.
    pub fn for_terminal(mut self, terminal: bool) -> Self {
        self.terminal = terminal;
        self
    }

    /// Writes the row of one match.
    pub fn write(
        &mut self,
        doc: &IndexDoc,
        found: Found<'_>,
        caps: &regex::Captures<'_>,
    ) -> anyhow::Result<()> {
        let matched = &found.line[found.range.0..found.range.1];
        let group = |name: &str| caps.name(name).map(|m| m.as_str());
        self.rows += 1;
        match &mut self.sink {
            Sink::Csv(w, allow) => {
                let mut cells: Vec<&str> = vec![&doc.key, &doc.public_id, matched];
                cells.extend(self.groups.iter().map(|g| group(g).unwrap_or_default()));
                let number = found.line_number.to_string();
                cells.extend([number.as_str(), found.line]);
                if self.terminal {
                    let shown = |c: &str| {
                        let c = match *allow {
                            true => std::borrow::Cow::Borrowed(c),
                            false => neutralise(c),
                        };
                        crate::terminal::escaped(&c).into_owned()
                    };
                    w.write_record(cells.iter().map(|c| shown(c)))?;
                } else if *allow {
                    w.write_record(&cells)?;
                } else {
                    w.write_record(cells.iter().map(|c| neutralise(c).into_owned()))?;
                }
            }
            Sink::Jsonl(w) => {
                let row = JsonRow {
                    key: &doc.key,
                    public_id: &doc.public_id,
                    matched,
                    groups: self.groups.iter().map(|g| (g.as_str(), group(g))).collect(),
                    line_number: found.line_number,
                    line: found.line,
                };
                if self.terminal {
                    writeln!(w, "{}", crate::terminal::json_line(&row)?)?;
                } else {
                    serde_json::to_writer(&mut *w, &row)?;
                    w.write_all(b"\n")?;
                }
            }
        }
        Ok(())
    }

    /// Flushes, and hands the output back.
    pub fn finish(self) -> anyhow::Result<W> {
        Ok(match self.sink {
            Sink::Csv(w, _) => w
                .into_inner()
                .map_err(|e| anyhow::anyhow!("{}", e.error()))?,
            Sink::Jsonl(mut w) => {
                w.flush()?;
                w
            }
        })
    }
}

/// What an extraction did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExtractReport {
    #[serde(flatten)]
    pub scanned: Scanned,
    /// Items with at least one match.
    pub matched: u64,
    /// Rows written: one per match.
    pub rows: u64,
}

/// Writes a row for every match of `pattern` in `source`'s texts.
pub fn extract<W: Write>(
    source: &Source<'_>,
    pattern: &Pattern,
    q: &SearchQuery,
    writer: &mut RowWriter<W>,
    progress: bool,
) -> anyhow::Result<ExtractReport> {
    let mut matched = 0;
    let scanned = for_each_text(source, pattern, q, progress, |doc| {
        let n = for_each_match(&pattern.regex, &doc.text, |found, caps| {
            writer.write(doc, found, caps)
        })?;
        matched += u64::from(n > 0);
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(ExtractReport {
        scanned,
        matched,
        rows: writer.rows,
    })
}

/// Where `extract --to` writes: a local file, or an S3 object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    File(PathBuf),
    S3 { bucket: String, key: String },
}

impl std::str::FromStr for Destination {
    type Err = anyhow::Error;
    fn from_str(to: &str) -> anyhow::Result<Self> {
        let Some(rest) = to.strip_prefix("s3://") else {
            return Ok(Destination::File(PathBuf::from(to)));
        };
        match rest.split_once('/') {
            Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() && !key.ends_with('/') => {
                Ok(Destination::S3 {
                    bucket: bucket.into(),
                    key: key.into(),
                })
            }
            _ => bail!("{to:?}: name the object, as in s3://bucket/folder/matches.csv"),
        }
    }
}

impl Destination {
    /// The object's or file's name.
    fn name(&self) -> &str {
        match self {
            Destination::File(p) => p.to_str().unwrap_or_default(),
            Destination::S3 { key, .. } => key,
        }
    }

    /// Whether the name ends in `.gz`: the rows are gzip-compressed.
    pub fn gzip(&self) -> bool {
        self.name().ends_with(".gz")
    }

    /// The format its name implies (`.jsonl`, `.json`, `.ndjson`, optionally `.gz`), else CSV.
    pub fn format(&self) -> Format {
        let name = self.name().trim_end_matches(".gz");
        if [".jsonl", ".json", ".ndjson"]
            .iter()
            .any(|e| name.ends_with(e))
        {
            Format::Jsonl
        } else {
            Format::Csv
        }
    }
}

/// Uploads a file to S3: one request up to `part_bytes` (at least 5 MiB), a multipart upload
/// beyond (given up on an error, so nothing half-written shows).
pub async fn upload(
    s3: &OwnerCheckedS3,
    bucket: &str,
    key: &str,
    path: &Path,
    part_bytes: usize,
) -> anyhow::Result<u64> {
    use aws_sdk_s3::primitives::ByteStream;
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    use std::io::Read;

    let len = std::fs::metadata(path)?.len();
    let mut file = std::fs::File::open(path)?;
    if len <= part_bytes as u64 {
        let mut body = Vec::with_capacity(len as usize);
        file.read_to_end(&mut body)?;
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .with_context(|| format!("writing s3://{bucket}/{key}"))?;
        return Ok(len);
    }
    let created = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("starting the upload of s3://{bucket}/{key}"))?;
    let id = created
        .upload_id()
        .context("S3 gave no upload id")?
        .to_string();
    let mut parts = Vec::new();
    let sent: anyhow::Result<()> = async {
        loop {
            let mut chunk = Vec::with_capacity(part_bytes);
            (&mut file)
                .take(part_bytes as u64)
                .read_to_end(&mut chunk)?;
            if chunk.is_empty() {
                return Ok(());
            }
            let number = parts.len() as i32 + 1;
            let part = s3
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(&id)
                .part_number(number)
                .body(ByteStream::from(chunk))
                .send()
                .await
                .with_context(|| format!("uploading part {number} of s3://{bucket}/{key}"))?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .part_number(number)
                    .build(),
            );
        }
    }
    .await;
    let completed = match sent {
        Ok(()) => s3
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .with_context(|| format!("completing the upload of s3://{bucket}/{key}"))
            .map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = completed {
        let _best_effort = s3
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .send()
            .await;
        return Err(e);
    }
    Ok(len)
}

/// Bytes per uploaded part (S3: at least 5 MiB but the last).
pub const PART_BYTES: usize = 16 << 20;

/// How `extract` runs.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Standard output when absent.
    pub to: Option<Destination>,
    /// Default: as the destination's name implies, else CSV.
    pub format: Option<Format>,
    pub allow_formulas: bool,
    /// The summary as JSON.
    pub json: bool,
    /// Standard output is a terminal: rows written there are made safe to show (see
    /// [`RowWriter::for_terminal`]).
    pub terminal: bool,
}

/// Writes the rows to a file: `FILE.partial` until complete and on disk, then renamed (gzip
/// when `gzip`); on an error the partial file is removed and nothing is at `path`.
fn extract_to_file(
    source: &Source<'_>,
    pattern: &Pattern,
    q: &SearchQuery,
    path: &Path,
    gzip: bool,
    format: Format,
    allow_formulas: bool,
) -> anyhow::Result<ExtractReport> {
    let mut partial = path.as_os_str().to_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let written = (|| {
        let file = std::fs::File::create(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        let buffered = std::io::BufWriter::with_capacity(1 << 20, file);
        // Each layer is finished by hand: dropping one would swallow its last write's error.
        let (report, buffered) = if gzip {
            let encoder = flate2::write::GzEncoder::new(buffered, flate2::Compression::default());
            let mut writer = RowWriter::new(encoder, format, pattern, allow_formulas)?;
            let report = extract(source, pattern, q, &mut writer, true)?;
            (report, writer.finish()?.finish()?)
        } else {
            let mut writer = RowWriter::new(buffered, format, pattern, allow_formulas)?;
            let report = extract(source, pattern, q, &mut writer, true)?;
            (report, writer.finish()?)
        };
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        anyhow::Ok(report)
    })();
    match written {
        Ok(report) => {
            std::fs::rename(&partial, path)
                .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
            Ok(report)
        }
        Err(e) => {
            let _gone = std::fs::remove_file(&partial);
            Err(e.context(format!("nothing written to {}", path.display())))
        }
    }
}

/// `extract`: the rows to standard output, a file or S3, and a summary (to standard error when
/// the rows go to standard output).
pub async fn run(
    source: &Source<'_>,
    pattern: &Pattern,
    q: &SearchQuery,
    options: &ExtractOptions,
    s3: Option<&OwnerCheckedS3>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<ExtractReport> {
    let format = options
        .format
        .or(options.to.as_ref().map(Destination::format))
        .unwrap_or(Format::Csv);
    let started = std::time::Instant::now();
    let (report, written) = match &options.to {
        None => {
            let mut writer = RowWriter::new(&mut *out, format, pattern, options.allow_formulas)?
                .for_terminal(options.terminal);
            let report = extract(source, pattern, q, &mut writer, true)?;
            writer.finish()?;
            (report, "standard output".to_string())
        }
        Some(to @ Destination::File(path)) => {
            let gzip = to.gzip();
            let report = extract_to_file(
                source,
                pattern,
                q,
                path,
                gzip,
                format,
                options.allow_formulas,
            )?;
            (report, path.display().to_string())
        }
        Some(to @ Destination::S3 { bucket, key }) => {
            let s3 = s3.context("an S3 destination needs an S3 client")?;
            let local = std::env::temp_dir().join(format!(
                "ocr-ctl-extract-{}-{}",
                std::process::id(),
                key.rsplit('/').next().unwrap_or("rows")
            ));
            let made = extract_to_file(
                source,
                pattern,
                q,
                &local,
                to.gzip(),
                format,
                options.allow_formulas,
            );
            let uploaded = match made {
                Ok(report) => upload(s3, bucket, key, &local, PART_BYTES)
                    .await
                    .map(|_| report),
                Err(e) => Err(e),
            };
            let _cleanup = std::fs::remove_file(&local);
            (uploaded?, format!("s3://{bucket}/{key}"))
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let summary = if options.json {
        serde_json::to_string(&serde_json::json!({
            "rows": report.rows,
            "matched": report.matched,
            "read": report.scanned.read,
            "items": report.scanned.items,
            "narrowed": report.scanned.narrowed,
            "to": written,
            "seconds": seconds,
        }))?
    } else {
        format!(
            "{} matches in {} texts, {} read of {} ({}), written to {written} in {seconds:.1} s ({:.0} texts/s)",
            report.rows,
            report.matched,
            report.scanned.read,
            report.scanned.items,
            how_read(source, &report.scanned),
            report.scanned.items as f64 / seconds.max(1e-9),
        )
    };
    if options.to.is_none() {
        eprintln!("{summary}");
    } else {
        writeln!(out, "{summary}")?;
    }
    Ok(report)
}

/// How the texts were chosen, for a summary.
fn how_read(source: &Source<'_>, scanned: &Scanned) -> &'static str {
    match (source, scanned.narrowed) {
        (Source::File(_), _) => "the whole export file",
        (Source::Index(_), true) => "the index kept those holding the words every match needs",
        (Source::Index(_), false) => {
            "every text: no indexed word is certain in a match of this pattern"
        }
    }
}

/// Prints `search --regex`'s results: each item's key, line number and line with the matches
/// marked (or JSON lines), then the count or how many are shown.
pub fn print_lines(
    found: &LineResults,
    limit: usize,
    json: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if !found.scanned.narrowed {
        eprintln!(
            "note: no indexed word is certain in a match of this pattern, so every text is read (a scan of the index's {} texts)",
            found.scanned.items
        );
    }
    for hit in &found.hits {
        if json {
            writeln!(out, "{}", crate::terminal::json_line(hit)?)?;
        } else {
            let line = crate::highlight::marked(&hit.line, &hit.highlights, ">>", "<<");
            let key = crate::terminal::escaped(&hit.key);
            let gone = crate::deleted::shown(
                hit.deleted_at.as_deref().unwrap_or_default(),
                hit.renamed_to.as_deref().unwrap_or_default(),
            )
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
            writeln!(out, "{key}:{}{gone}\t{line}", hit.line_number)?;
        }
    }
    match (found.total, json) {
        (Some((items, lines)), true) => writeln!(
            out,
            "{}",
            serde_json::json!({ "total": items, "lines": lines })
        )?,
        (Some((items, lines)), false) => writeln!(
            out,
            "{} of {items} matching assets shown ({lines} matching lines)",
            found.hits.len()
        )?,
        (None, true) => {}
        (None, false) if found.hits.len() == limit => writeln!(
            out,
            "first {} matching assets shown (--limit for more, --count for the total)",
            found.hits.len()
        )?,
        (None, false) => writeln!(out, "{} matching assets", found.hits.len())?,
    }
    Ok(())
}
