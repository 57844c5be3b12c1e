//! `export`: the results table to CSV or JSON lines, streamed, written atomically.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use aws_sdk_dynamodb::Client;
use serde::Serialize;

use crate::scan::{Item, ScanFilter, boolean, ensure_table, for_each_item, num, s};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    /// The file name extension, as the format is named on the command line.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }
}

/// One exported row: the public id, status, text, locale and the asset fields. An asset is
/// `(delivery_type, public_id)`: one public id may be two images of two delivery types. A
/// deleted item (exported with `--include-deleted`) has `deleted_at` (empty otherwise) and, when
/// renamed away, `renamed_to` (its new key); an export written before these columns reads
/// them empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Row {
    pub public_id: String,
    pub status: String,
    pub text: String,
    pub locale: String,
    pub text_bytes: String,
    pub truncated: String,
    pub resource_type: String,
    pub delivery_type: String,
    pub format: String,
    pub bytes: String,
    pub width: String,
    pub height: String,
    pub asset_created_at: String,
    pub ocr_at: String,
    pub attempts: String,
    pub error: String,
    #[serde(default)]
    pub deleted_at: String,
    #[serde(default)]
    pub renamed_to: String,
}

impl Row {
    pub fn from_item(item: &Item) -> Self {
        let get = |k: &str| s(item, k).unwrap_or_default();
        let n = |k: &str| num(item, k).unwrap_or_default();
        let key = get("publicId");
        let (key_type, public_id) = shared::message::asset_of_key(&key);
        let delivery_type = s(item, "deliveryType").unwrap_or_else(|| key_type.to_string());
        Self {
            public_id: public_id.to_string(),
            status: get("status"),
            text: get("text"),
            locale: get("locale"),
            text_bytes: n("textBytes"),
            truncated: boolean(item, "truncated")
                .map(|b| b.to_string())
                .unwrap_or_default(),
            resource_type: get("resourceType"),
            delivery_type,
            format: get("format"),
            bytes: n("bytes"),
            width: n("width"),
            height: n("height"),
            asset_created_at: get("assetCreatedAt"),
            ocr_at: get("ocrAt"),
            attempts: n("attempts"),
            error: get("error"),
            deleted_at: crate::deleted::tombstone(item)
                .map(|t| t.deleted_at)
                .unwrap_or_default(),
            renamed_to: get("renamedTo"),
        }
    }
}

/// The first characters that make a spreadsheet read a cell as a formula (OWASP's CSV
/// injection list: `=`, `+`, `-`, `@`, tab, carriage return, line feed and NUL), and the
/// full-width `＝ ＋ － ＠` (U+FF1D, U+FF0B, U+FF0D, U+FF20), which spreadsheets in East Asian
/// locales also take as a formula's start.
pub const FORMULA_STARTS: [char; 12] = [
    '=', '+', '-', '@', '\t', '\r', '\n', '\0', '\u{ff1d}', '\u{ff0b}', '\u{ff0d}', '\u{ff20}',
];

/// A cell a spreadsheet would run as a formula (it starts with one of [`FORMULA_STARTS`]) is
/// written with a leading `'`, which spreadsheets read as "text", so an OCR'd
/// `=HYPERLINK(...)` stays text; the CSV writer then quotes it as CSV requires (a line break or
/// a quote in it). Other cells are unchanged.
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(FORMULA_STARTS) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

impl Row {
    /// The row with every cell a spreadsheet would run as a formula neutralised.
    pub fn without_formulas(&self) -> Row {
        let n = |s: &String| neutralise(s).into_owned();
        Row {
            public_id: n(&self.public_id),
            status: n(&self.status),
            text: n(&self.text),
            locale: n(&self.locale),
            text_bytes: n(&self.text_bytes),
            truncated: n(&self.truncated),
            resource_type: n(&self.resource_type),
            delivery_type: n(&self.delivery_type),
            format: n(&self.format),
            bytes: n(&self.bytes),
            width: n(&self.width),
            height: n(&self.height),
            asset_created_at: n(&self.asset_created_at),
            ocr_at: n(&self.ocr_at),
            attempts: n(&self.attempts),
            error: n(&self.error),
            deleted_at: n(&self.deleted_at),
            renamed_to: n(&self.renamed_to),
        }
    }
}

type Out = BufWriter<Box<dyn Write + Send>>;

enum Sink {
    /// CSV, with formulas neutralised unless allowed.
    Csv(Box<csv::Writer<Out>>, bool),
    Jsonl(Out),
}

impl Sink {
    fn write(&mut self, row: &Row) -> anyhow::Result<()> {
        match self {
            Sink::Csv(w, true) => w.serialize(row)?,
            Sink::Csv(w, false) => w.serialize(row.without_formulas())?,
            Sink::Jsonl(w) => {
                serde_json::to_writer(&mut *w, row)?;
                w.write_all(b"\n")?;
            }
        }
        Ok(())
    }
    fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::Csv(mut w, _) => w.flush()?,
            Sink::Jsonl(mut w) => w.flush()?,
        }
        Ok(())
    }
}

/// A spinner on standard error counting `what` (when asked for and standard error is a
/// terminal).
pub(crate) fn spinner(progress: bool, what: &str) -> Option<indicatif::ProgressBar> {
    (progress && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        let template = format!("{{spinner}} {{pos}} {what} ({{per_sec}}) {{elapsed}}");
        bar.set_style(indicatif::ProgressStyle::with_template(&template).expect("template"));
        bar
    })
}

/// What an export did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    pub rows: u64,
    /// `None` when written to standard output.
    pub path: Option<PathBuf>,
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

/// How an export is written.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub format: Format,
    pub filter: ScanFilter,
    /// Parallel scan segments.
    pub segments: i32,
    /// A progress bar on standard error (when it is a terminal).
    pub progress: bool,
    /// CSV cells that a spreadsheet would run as formulas are written as they are, not
    /// neutralised.
    pub allow_formulas: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            format: Format::Csv,
            filter: ScanFilter::default(),
            segments: 4,
            progress: false,
            allow_formulas: false,
        }
    }
}

/// Streams the table into `out` (via `out.partial`, renamed at the end), or to standard output:
/// on failure nothing is left at `out` and the error says so.
pub async fn export(
    ddb: &Client,
    table: &str,
    out: Option<&Path>,
    options: &ExportOptions,
) -> anyhow::Result<ExportReport> {
    let ExportOptions {
        format,
        ref filter,
        segments,
        progress,
        allow_formulas,
    } = *options;
    ensure_table(ddb, table).await?;
    let partial = out.map(partial_path);
    let target: Box<dyn Write + Send> = match &partial {
        Some(p) => {
            Box::new(File::create(p).with_context(|| format!("cannot write {}", p.display()))?)
        }
        None => Box::new(std::io::stdout()),
    };
    let buffered = BufWriter::with_capacity(1 << 16, target);
    let mut sink = match format {
        Format::Csv => Sink::Csv(Box::new(csv::Writer::from_writer(buffered)), allow_formulas),
        Format::Jsonl => Sink::Jsonl(buffered),
    };
    let shown = out.map_or_else(
        || "standard output".to_string(),
        |p| p.display().to_string(),
    );
    let remove_partial = || {
        if let Some(p) = &partial {
            let _cleanup_is_best_effort = std::fs::remove_file(p);
        }
    };
    let bar = spinner(progress, "items exported");
    let mut written = 0u64;
    let result = for_each_item(ddb, table, segments, filter, None, |item| {
        sink.write(&Row::from_item(item))?;
        written += 1;
        if let Some(b) = bar.as_ref().filter(|_| written.is_multiple_of(1000)) {
            b.set_position(written);
        }
        Ok(())
    })
    .await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let rows = match result {
        Ok(_) => written,
        Err(e) => {
            remove_partial();
            let written = if out.is_some() {
                "was not written"
            } else {
                "is incomplete"
            };
            return Err(e.context(format!("export failed; {shown} {written}")));
        }
    };
    let finished = sink.finish().and_then(|_| match (&partial, out) {
        (Some(p), Some(o)) => std::fs::rename(p, o)
            .with_context(|| format!("renaming {} to {}", p.display(), o.display())),
        _ => Ok(()),
    });
    if let Err(e) = finished {
        remove_partial();
        bail!("export failed while finishing {shown}: {e:#}");
    }
    Ok(ExportReport {
        rows,
        path: out.map(Path::to_path_buf),
    })
}

/// Reads an export file (JSON lines as `export --format jsonl` writes them; gzip-compressed
/// when its name ends in `.gz`), calling `each` with every row until it breaks; `bar`, when
/// given, follows the file's bytes.
pub fn read_rows(
    path: &Path,
    bar: Option<&indicatif::ProgressBar>,
    mut each: impl FnMut(Row) -> anyhow::Result<std::ops::ControlFlow<()>>,
) -> anyhow::Result<()> {
    use std::io::BufRead;
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let raw: Box<dyn std::io::Read> = match bar {
        Some(b) => Box::new(b.wrap_read(file)),
        None => Box::new(file),
    };
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(std::io::BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(raw),
        ))
    } else {
        Box::new(std::io::BufReader::with_capacity(1 << 16, raw))
    };
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(&line).with_context(|| {
            format!(
                "{} line {}: not a row of `ocr-ctl export --format jsonl`",
                path.display(),
                n + 1
            )
        })?;
        if each(row)?.is_break() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One CSV record of `cells`, as the exports write it.
    fn csv_line(cells: &[&str]) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(cells.iter().map(|c| neutralise(c).into_owned()))
            .unwrap();
        String::from_utf8(w.into_inner().unwrap()).unwrap()
    }

    /// Each cell of one record, read back as a CSV reader (a spreadsheet) reads it.
    fn read_back(line: &str) -> Vec<String> {
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line.as_bytes());
        let record = r.records().next().unwrap().unwrap();
        record.iter().map(str::to_string).collect()
    }

    #[test]
    fn each_formula_start_gets_a_leading_quote() {
        for (c, cell) in [
            ('=', "=HYPERLINK(\"http://x\",\"click\")"),
            ('+', "+1 555 0100"),
            ('-', "-2+3"),
            ('@', "@SUM(A1:A2)"),
            ('\t', "\t=1+1"),
            ('\r', "\r=1+1"),
            ('\n', "\n=1+1"),
            ('\0', "\0=1+1"),
            ('\u{ff1d}', "＝1+1"),
            ('\u{ff0b}', "＋1"),
            ('\u{ff0d}', "－1"),
            ('\u{ff20}', "＠SUM(A1)"),
        ] {
            assert!(cell.starts_with(c), "{c:?}");
            assert_eq!(neutralise(cell), format!("'{cell}"), "{c:?}");
            let line = csv_line(&[cell, "next"]);
            assert!(
                line.starts_with('\'') || line.starts_with("\"'"),
                "{c:?}: the written cell starts with the quote: {line:?}"
            );
            assert_eq!(
                read_back(&line),
                [format!("'{cell}"), "next".into()],
                "{c:?}"
            );
        }
    }

    #[test]
    fn a_line_break_first_is_guarded_and_quoted() {
        assert_eq!(csv_line(&["\n=1+1", "x"]), "\"'\n=1+1\",x\n");
        assert_eq!(csv_line(&["\r=1+1", "x"]), "\"'\r=1+1\",x\n");
        assert_eq!(csv_line(&["=\"a\",b", "x"]), "\"'=\"\"a\"\",b\",x\n");
    }

    #[test]
    fn other_cells_are_left_as_they_are() {
        for cell in [
            "",
            "plain text",
            "a=b",
            "1+1",
            "'quoted",
            " =1+1",
            "3,50 €",
            "ー長音",
            "−5 (U+2212)",
            "invoices/2021/001",
            "2026-01-01T00:00:00Z",
        ] {
            assert!(
                matches!(neutralise(cell), std::borrow::Cow::Borrowed(c) if c == cell),
                "{cell:?}"
            );
        }
    }

    #[test]
    fn every_cell_of_a_row_is_guarded() {
        let row = Row {
            public_id: "=id".into(),
            status: "done".into(),
            text: "＠cmd".into(),
            locale: "-".into(),
            text_bytes: "3".into(),
            truncated: String::new(),
            resource_type: "+image".into(),
            delivery_type: "upload".into(),
            format: "\tpng".into(),
            bytes: String::new(),
            width: String::new(),
            height: String::new(),
            asset_created_at: String::new(),
            ocr_at: String::new(),
            attempts: String::new(),
            error: "\0x".into(),
            deleted_at: String::new(),
            renamed_to: "=new".into(),
        };
        let safe = row.without_formulas();
        for (cell, guarded) in [
            (&safe.public_id, "'=id"),
            (&safe.text, "'＠cmd"),
            (&safe.locale, "'-"),
            (&safe.resource_type, "'+image"),
            (&safe.format, "'\tpng"),
            (&safe.error, "'\0x"),
            (&safe.renamed_to, "'=new"),
            (&safe.status, "done"),
        ] {
            assert_eq!(cell, guarded);
        }
    }
}
