//! Full-text search over the results table: an on-disk index on the operator's machine
//! (tantivy: BM25 ranking, phrases, boolean operators, fuzzy terms, snippets), built and then
//! updated from a scan of the table or from an export file.
//!
//! An update reads every item once (as `export` does) and writes only what changed: each
//! indexed item carries a stamp of what it indexes (status, text, locale, OCR time), an item
//! whose stamp differs is replaced (a re-OCR), a new one added, and an indexed item the source
//! no longer has (or no longer terminal) removed. Deleted items (see [`crate::deleted`]) are
//! left out of an update unless asked for (`index --include-deleted`), so an item deleted
//! since the last update is removed; an index that holds them hides them from searches unless
//! asked for too. The commit is atomic: an update that is
//! killed leaves the index as the last one left it.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;
use tantivy::collector::{Count, DocSetCollector, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, EmptyQuery, FuzzyTermQuery, Occur, PhrasePrefixQuery,
    PhraseQuery, Query, RegexQuery, TermQuery,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, TextAnalyzer, Token, TokenStream, Tokenizer,
};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::export::Row;
use crate::pattern::Need;
use crate::query::Node;
use crate::scan::{Item, s};

/// The analyzer of the text field, by name.
const ANALYZER: &str = "ocr";
/// Written beside the index; another value means another schema: rebuild.
const FORMAT: &str = "ocr-ctl-index 3";
/// The file in the index's folder that holds [`FORMAT`].
const MARKER: &str = "ocr-ctl-format";

/// Words of this many bytes or more are not indexed (OCR noise, base64, ...).
const LONGEST_WORD: usize = 64;

/// The fields of the index.
#[derive(Debug, Clone, Copy)]
struct Fields {
    key: Field,
    public_id: Field,
    delivery_type: Field,
    status: Field,
    locale: Field,
    text: Field,
    ocr_at: Field,
    stamp: Field,
    /// `1` for a deleted item (the filter's term), absent otherwise.
    deleted: Field,
    deleted_at: Field,
    renamed_to: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_stored().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        key: b.add_text_field("key", STRING | STORED | FAST),
        public_id: b.add_text_field("public_id", STRING | STORED),
        delivery_type: b.add_text_field("delivery_type", STRING | STORED),
        status: b.add_text_field("status", STRING | STORED),
        locale: b.add_text_field("locale", STRING | STORED),
        text: b.add_text_field("text", text),
        ocr_at: b.add_text_field("ocr_at", STORED),
        stamp: b.add_u64_field("stamp", INDEXED | FAST),
        deleted: b.add_text_field("deleted", STRING),
        deleted_at: b.add_text_field("deleted_at", STORED),
        renamed_to: b.add_text_field("renamed_to", STORED),
    };
    (b.build(), fields)
}

/// Splits text into words: runs of letters and digits, except in the CJK scripts (Han, kana,
/// Hangul), written without spaces, where every two adjacent characters are a term (a lone
/// character is one): a query for any part of a CJK sentence becomes the phrase of its
/// bigrams, and finds it.
#[derive(Debug, Clone, Default)]
pub struct OcrTokenizer;

pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF | 0x3040..=0x30FF | 0x3130..=0x318F | 0x31F0..=0x31FF
        | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF
        | 0xFF66..=0xFF9F | 0x20000..=0x2FA1F)
}

/// A character of a word: a letter or a decimal digit (`\w` of a regular expression without
/// the marks and connectors), so that a Unicode word boundary `\b` always ends an indexed
/// word. Numbers that are not digits (`½`, `²`) are not in words.
pub fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric();
    }
    c.is_alphanumeric() && regex_syntax::is_word_character(c)
}

/// The words of `text`, as [`OcrTokenizer`] splits it.
pub fn words(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let push = |tokens: &mut Vec<Token>, from: usize, to: usize| {
        let position = tokens.len();
        tokens.push(Token {
            offset_from: from,
            offset_to: to,
            position,
            text: text[from..to].to_string(),
            position_length: 1,
        });
    };
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if is_cjk(c) {
            let mut run = vec![(at, c)];
            while let Some(&(next_at, next)) = chars.peek() {
                if !is_cjk(next) {
                    break;
                }
                run.push((next_at, next));
                chars.next();
            }
            let end = |(at, c): (usize, char)| at + c.len_utf8();
            if run.len() == 1 {
                push(&mut tokens, at, end(run[0]));
            } else {
                for pair in run.windows(2) {
                    push(&mut tokens, pair[0].0, end(pair[1]));
                }
            }
        } else if is_word_char(c) {
            let mut to = at + c.len_utf8();
            while let Some(&(next_at, next)) = chars.peek() {
                if !is_word_char(next) || is_cjk(next) {
                    break;
                }
                to = next_at + next.len_utf8();
                chars.next();
            }
            push(&mut tokens, at, to);
        }
    }
    tokens
}

/// The tokens of one text, handed out one by one.
pub struct Words {
    tokens: Vec<Token>,
    next: usize,
}

impl TokenStream for Words {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }
    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }
    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

impl Tokenizer for OcrTokenizer {
    type TokenStream<'a> = Words;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> Words {
        Words {
            tokens: words(text),
            next: 0,
        }
    }
}

/// The text field's analyzer: [`OcrTokenizer`]'s words, long ones dropped, lowercased and
/// folded to ASCII where they have an ASCII form.
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(OcrTokenizer)
        .filter(RemoveLongFilter::limit(LONGEST_WORD))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// One item as the index holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDoc {
    pub key: String,
    pub public_id: String,
    pub delivery_type: String,
    pub status: String,
    pub locale: String,
    pub text: String,
    pub ocr_at: String,
    /// When the item was deleted; empty when it is not.
    pub deleted_at: String,
    /// For an item renamed away: its new key.
    pub renamed_to: String,
}

impl IndexDoc {
    /// From a results-table item (read as `export` reads it, the key kept as stored); `None`
    /// for an item that is not terminal (no status yet).
    pub fn from_item(item: &Item) -> Option<Self> {
        let key = s(item, "publicId")?;
        Some(Self {
            key,
            ..Self::from_row(Row::from_item(item))?
        })
    }

    /// From an exported row; `None` for a row that is not terminal.
    pub fn from_row(row: Row) -> Option<Self> {
        if row.status.is_empty() {
            return None;
        }
        Some(Self {
            key: shared::message::item_key(&row.public_id, &row.delivery_type),
            public_id: row.public_id,
            delivery_type: row.delivery_type,
            status: row.status,
            locale: row.locale,
            text: row.text,
            ocr_at: row.ocr_at,
            deleted_at: row.deleted_at,
            renamed_to: row.renamed_to,
        })
    }

    /// Whether the item is deleted (see [`crate::deleted`]).
    pub fn is_deleted(&self) -> bool {
        !self.deleted_at.is_empty()
    }

    /// A fingerprint of what the index holds of the item (FNV-1a, stable across builds).
    fn stamp(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for part in [
            &self.public_id,
            &self.delivery_type,
            &self.status,
            &self.locale,
            &self.ocr_at,
            &self.text,
            &self.deleted_at,
            &self.renamed_to,
        ] {
            for b in part.bytes().chain([0xff]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }
}

/// What an update did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UpdateReport {
    /// Items read from the source.
    pub read: u64,
    pub added: u64,
    /// Indexed items whose text or status changed (re-OCRs), replaced.
    pub replaced: u64,
    /// Indexed items the source no longer has as terminal, removed.
    pub removed: u64,
    pub unchanged: u64,
    /// Items in the index after the update.
    pub indexed: u64,
}

/// The on-disk index.
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
}

/// Where the index of `table` lives by default: `$XDG_DATA_HOME/ocr-ctl/index/TABLE`
/// (`~/.local/share/...`).
pub fn default_dir(table: &str) -> anyhow::Result<PathBuf> {
    let data = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(
            std::env::var_os("HOME").context("no HOME: name the index with --index-dir")?,
        )
        .join(".local/share"),
    };
    Ok(data.join("ocr-ctl/index").join(table))
}

impl SearchIndex {
    /// Opens the index in `dir`, creating it when absent; `rebuild` starts from an empty one.
    pub fn open_or_create(dir: &Path, rebuild: bool) -> anyhow::Result<Self> {
        let marker = dir.join(MARKER);
        if rebuild && dir.exists() {
            if !marker.exists() && std::fs::read_dir(dir)?.next().is_some() {
                bail!(
                    "{} is not an ocr-ctl index; not removing it (choose another --index-dir)",
                    dir.display()
                );
            }
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("removing the old index {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        match std::fs::read_to_string(&marker) {
            Ok(f) if f.trim() == FORMAT => {}
            Ok(_) => bail!(
                "the index in {} was built by another version of ocr-ctl: rebuild it with `ocr-ctl index --rebuild`",
                dir.display()
            ),
            Err(_) if std::fs::read_dir(dir)?.next().is_some() => bail!(
                "{} is not an ocr-ctl index (choose another --index-dir)",
                dir.display()
            ),
            Err(_) => std::fs::write(&marker, FORMAT)
                .with_context(|| format!("writing {}", marker.display()))?,
        }
        let (schema, fields) = schema();
        let directory = tantivy::directory::MmapDirectory::open(dir)
            .with_context(|| format!("opening the index in {}", dir.display()))?;
        let mut index = Index::open_or_create(directory, schema)
            .with_context(|| format!("opening the index in {}", dir.display()))?;
        index.tokenizers().register(ANALYZER, analyzer());
        // Segments are searched in parallel, one thread per core.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        index.set_multithread_executor(threads)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .with_context(|| format!("reading the index in {}", dir.display()))?;
        Ok(Self {
            index,
            reader,
            fields,
        })
    }

    /// Opens an existing index for searching.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        if !dir.join(MARKER).exists() {
            bail!(
                "no index in {}: build it with `ocr-ctl index`",
                dir.display()
            );
        }
        Self::open_or_create(dir, false)
    }

    /// The stamp of every indexed item, by key.
    fn stamps(&self) -> anyhow::Result<HashMap<String, u64>> {
        let searcher = self.reader.searcher();
        let mut stamps = HashMap::new();
        for segment in searcher.segment_readers() {
            let fast = segment.fast_fields();
            let Some(keys) = fast.str("key")? else {
                continue;
            };
            let values = fast.u64("stamp")?;
            // The segment's keys in order, read once (a lookup per document would decode a
            // dictionary block each time).
            let (dictionary, ords) = keys.into_parts();
            let mut terms = Vec::with_capacity(dictionary.num_terms());
            let mut stream = dictionary.stream()?;
            while stream.advance() {
                terms.push(String::from_utf8_lossy(stream.key()).into_owned());
            }
            stamps.reserve(segment.num_docs() as usize);
            for doc in segment.doc_ids_alive() {
                let Some(key) = ords.first(doc).and_then(|o| terms.get(o as usize)) else {
                    continue;
                };
                stamps.insert(key.clone(), values.first(doc).unwrap_or(0));
            }
        }
        Ok(stamps)
    }

    /// Starts an update: what the source offers is compared with what the index holds.
    pub fn updater(&self) -> anyhow::Result<Updater<'_>> {
        Ok(Updater {
            writer: self.index.writer(200_000_000)?,
            before: self.stamps()?,
            report: UpdateReport::default(),
            index: self,
        })
    }

    /// The number of items in the index.
    pub fn len(&self) -> anyhow::Result<u64> {
        Ok(self.reader.searcher().num_docs())
    }

    pub fn is_empty(&self) -> anyhow::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Answers `q`, best first.
    pub fn search(&self, q: &SearchQuery) -> anyhow::Result<SearchResults> {
        let f = self.fields;
        let searcher = self.reader.searcher();
        let node = crate::query::parse(&q.query)?;
        let mut built = Builder {
            searcher: &searcher,
            field: f.text,
            analyzer: analyzer(),
            fuzzy: q.fuzzy,
            highlight: HashSet::new(),
            ignored: Vec::new(),
        };
        let Some(text_query) = built.node(&node, true)? else {
            bail!(
                "nothing to search for in {:?}: only letters and digits are indexed (punctuation, symbols and emoji are not)",
                q.query
            );
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, text_query)];
        clauses.extend(self.filters(q)?);
        let query = BooleanQuery::new(clauses);
        let top_docs = TopDocs::with_limit(q.limit.max(1)).order_by_score();
        // Counting every match visits them all; the best ones alone need not.
        let (top, total) = if q.count {
            let (top, total) = searcher.search(&query, &(top_docs, Count))?;
            (top, Some(total as u64))
        } else {
            (searcher.search(&query, &top_docs)?, None)
        };
        let mut analyzer = analyzer();
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc = self.index_doc(&searcher.doc::<TantivyDocument>(address)?);
            let (snippet, highlights) =
                crate::highlight::snippet(&doc.text, &built.highlight, &mut analyzer);
            hits.push(Hit {
                deleted_at: Some(doc.deleted_at).filter(|d| !d.is_empty()),
                renamed_to: Some(doc.renamed_to).filter(|r| !r.is_empty()),
                key: doc.key,
                public_id: doc.public_id,
                delivery_type: doc.delivery_type,
                status: doc.status,
                locale: doc.locale,
                ocr_at: doc.ocr_at,
                score,
                snippet,
                highlights,
            });
        }
        Ok(SearchResults {
            total,
            hits,
            ignored: built.ignored,
        })
    }

    /// The filters of `q` (status, locale, delivery type, folder, deleted items left out) as
    /// clauses.
    fn filters(&self, q: &SearchQuery) -> anyhow::Result<Vec<(Occur, Box<dyn Query>)>> {
        let f = self.fields;
        let term = |field: Field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if !q.statuses.is_empty() {
            let any: Vec<(Occur, Box<dyn Query>)> = q
                .statuses
                .iter()
                .map(|s| (Occur::Should, term(f.status, s)))
                .collect();
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(any))));
        }
        if let Some(locale) = &q.locale {
            clauses.push((Occur::Must, term(f.locale, locale)));
        }
        if let Some(t) = &q.delivery_type {
            clauses.push((Occur::Must, term(f.delivery_type, t)));
        }
        if let Some(prefix) = &q.prefix {
            let pattern = format!("{}.*", regex::escape(prefix));
            clauses.push((
                Occur::Must,
                Box::new(RegexQuery::from_pattern(&pattern, f.public_id)?),
            ));
        }
        if !q.include_deleted {
            clauses.push((Occur::MustNot, term(f.deleted, "1")));
        }
        Ok(clauses)
    }

    /// The indexed items that may match `need` and pass the filters of `q`, in the index's
    /// order; `narrowed` is false when the pattern holds no indexed word and every item that
    /// passes the filters is a candidate.
    pub fn candidates(&self, need: &Need, q: &SearchQuery) -> anyhow::Result<Candidates> {
        let searcher = self.reader.searcher();
        let narrowing = self.need_query(need);
        let narrowed = narrowing.is_some();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> =
            narrowing.map(|n| (Occur::Must, n)).into_iter().collect();
        clauses.extend(self.filters(q)?);
        // Exclusions alone match nothing: everything but what they name.
        if !clauses.is_empty() && clauses.iter().all(|(o, _)| *o == Occur::MustNot) {
            clauses.push((Occur::Must, Box::new(AllQuery)));
        }
        let query: Box<dyn Query> = if clauses.is_empty() {
            Box::new(AllQuery)
        } else {
            Box::new(BooleanQuery::new(clauses))
        };
        let mut addresses: Vec<DocAddress> = searcher
            .search(query.as_ref(), &DocSetCollector)?
            .into_iter()
            .collect();
        addresses.sort_unstable_by_key(|a| (a.segment_ord, a.doc_id));
        Ok(Candidates {
            addresses,
            narrowed,
            total: searcher.num_docs(),
        })
    }

    /// `need` as a query of the text field; `None` when it cannot narrow (nothing certain, or
    /// a term pattern too large for the term dictionary's automaton: left out, which only
    /// keeps more candidates).
    fn need_query(&self, need: &Need) -> Option<Box<dyn Query>> {
        let both = |occur: Occur, qs: Vec<Box<dyn Query>>| -> Box<dyn Query> {
            Box::new(BooleanQuery::new(
                qs.into_iter().map(|q| (occur, q)).collect(),
            ))
        };
        match need {
            Need::Any => None,
            Need::Term(re) => RegexQuery::from_pattern(re, self.fields.text)
                .or_else(|_| {
                    let looser = crate::pattern::loosened(re).context("a term pattern")?;
                    Ok::<_, anyhow::Error>(RegexQuery::from_pattern(&looser, self.fields.text)?)
                })
                .ok()
                .map(|q| Box::new(q) as Box<dyn Query>),
            Need::And(all) => {
                let qs: Vec<_> = all.iter().filter_map(|n| self.need_query(n)).collect();
                (!qs.is_empty()).then(|| both(Occur::Must, qs))
            }
            Need::Or(any) => {
                let qs: Option<Vec<_>> = any.iter().map(|n| self.need_query(n)).collect();
                qs.map(|qs| both(Occur::Should, qs))
            }
        }
    }

    /// Reads the candidates' items in order, until `each` breaks.
    pub fn read(
        &self,
        candidates: &Candidates,
        mut each: impl FnMut(IndexDoc) -> anyhow::Result<ControlFlow<()>>,
    ) -> anyhow::Result<()> {
        let searcher = self.reader.searcher();
        for &address in &candidates.addresses {
            let doc: TantivyDocument = searcher.doc(address)?;
            if each(self.index_doc(&doc))?.is_break() {
                break;
            }
        }
        Ok(())
    }

    fn index_doc(&self, doc: &TantivyDocument) -> IndexDoc {
        let f = self.fields;
        let get = |field: Field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        IndexDoc {
            key: get(f.key),
            public_id: get(f.public_id),
            delivery_type: get(f.delivery_type),
            status: get(f.status),
            locale: get(f.locale),
            text: get(f.text),
            ocr_at: get(f.ocr_at),
            deleted_at: get(f.deleted_at),
            renamed_to: get(f.renamed_to),
        }
    }
}

/// The items a pattern is run over: those the index cannot rule out.
#[derive(Debug, Clone)]
pub struct Candidates {
    pub addresses: Vec<DocAddress>,
    /// Whether the index narrowed them by words of the pattern.
    pub narrowed: bool,
    /// Items in the index.
    pub total: u64,
}

/// A fuzzy or prefix word stands for at most this many indexed terms (the most frequent).
const MOST_EXPANSIONS: usize = 64;

/// Builds the index's query from a parsed one, and collects the terms to highlight.
struct Builder<'a> {
    searcher: &'a tantivy::Searcher,
    field: Field,
    analyzer: TextAnalyzer,
    fuzzy: u8,
    /// The indexed terms a hit is highlighted with: those of every word not excluded.
    highlight: HashSet<String>,
    /// Words with nothing indexable (no letter or digit), left out.
    ignored: Vec<String>,
}

impl Builder<'_> {
    /// `positive`: not under a negation (its terms are highlighted).
    fn node(&mut self, node: &Node, positive: bool) -> anyhow::Result<Option<Box<dyn Query>>> {
        match node {
            Node::Word { text, prefix } => self.words(text, *prefix, self.fuzzy, positive),
            Node::Phrase(p) => self.words(p, false, 0, positive),
            Node::All(clauses) => {
                let mut parts: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for c in clauses {
                    if let Some(q) = self.node(&c.node, positive && !c.exclude)? {
                        parts.push(if c.exclude {
                            (Occur::MustNot, Box::new(crate::settled::Settled(q)))
                        } else {
                            (Occur::Must, q)
                        });
                    }
                }
                if parts.is_empty() {
                    return Ok(None);
                }
                // Only exclusions: everything but what they name.
                if parts.iter().all(|(o, _)| *o == Occur::MustNot) {
                    parts.push((Occur::Must, Box::new(AllQuery)));
                }
                Ok(Some(Box::new(BooleanQuery::new(parts))))
            }
            Node::Any(nodes) => {
                let mut parts: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for n in nodes {
                    parts.extend(self.node(n, positive)?.map(|q| (Occur::Should, q)));
                }
                Ok((!parts.is_empty()).then(|| Box::new(BooleanQuery::new(parts)) as _))
            }
        }
    }

    /// A word or a phrase: the phrase of its indexed terms (a single term alone, expanded
    /// when it is a prefix or fuzzy).
    fn words(
        &mut self,
        text: &str,
        prefix: bool,
        fuzzy: u8,
        positive: bool,
    ) -> anyhow::Result<Option<Box<dyn Query>>> {
        let mut terms: Vec<(usize, String)> = Vec::new();
        let mut stream = self.analyzer.token_stream(text);
        while stream.advance() {
            let t = stream.token();
            terms.push((t.position, t.text.clone()));
        }
        drop(stream);
        let field = self.field;
        let term = |t: &str| Term::from_field_text(field, t);
        let query: Box<dyn Query> = match terms.as_slice() {
            [] => {
                self.ignored.push(text.to_string());
                return Ok(None);
            }
            [(_, one)] if prefix => {
                let one = one.clone();
                return self.expanded(&one, Expansion::Prefix, positive).map(Some);
            }
            [(_, one)] if fuzzy > 0 && one.chars().count() > 2 * usize::from(fuzzy) => {
                let one = one.clone();
                return self
                    .expanded(&one, Expansion::Fuzzy(fuzzy), positive)
                    .map(Some);
            }
            [(_, one)] => Box::new(TermQuery::new(term(one), IndexRecordOption::WithFreqs)),
            many => {
                let first = many[0].0;
                let at: Vec<(usize, Term)> =
                    many.iter().map(|(p, t)| (p - first, term(t))).collect();
                if prefix {
                    Box::new(PhrasePrefixQuery::new_with_offset(at))
                } else {
                    Box::new(PhraseQuery::new_with_offset(at))
                }
            }
        };
        if positive {
            self.highlight.extend(terms.into_iter().map(|(_, t)| t));
        }
        Ok(Some(query))
    }

    /// The most frequent indexed terms `word` stands for, any of which matches; each ranked
    /// by how close it is to what was typed (the word itself first).
    fn expanded(
        &mut self,
        word: &str,
        how: Expansion,
        positive: bool,
    ) -> anyhow::Result<Box<dyn Query>> {
        let mut terms: Vec<(String, u64)> = self.dictionary(word, how)?.into_iter().collect();
        terms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        terms.truncate(MOST_EXPANSIONS);
        let typed: Vec<char> = word.chars().collect();
        let parts: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|(t, _)| {
                let q = TermQuery::new(
                    Term::from_field_text(self.field, t),
                    IndexRecordOption::WithFreqs,
                );
                let apart = match how {
                    Expansion::Prefix => t.chars().count().saturating_sub(typed.len()),
                    Expansion::Fuzzy(_) => edits(&typed, t),
                };
                let boost = 1.0 / (1.0 + apart as f32);
                let q: Box<dyn Query> = Box::new(BoostQuery::new(Box::new(q), boost));
                (Occur::Should, q)
            })
            .collect();
        if positive {
            self.highlight.extend(terms.into_iter().map(|(t, _)| t));
        }
        if parts.is_empty() {
            return Ok(Box::new(EmptyQuery));
        }
        Ok(Box::new(BooleanQuery::new(parts)))
    }

    /// The indexed terms `word` stands for, with the documents holding each.
    fn dictionary(&self, word: &str, how: Expansion) -> anyhow::Result<HashMap<String, u64>> {
        let mut found: HashMap<String, u64> = HashMap::new();
        let mut collect = |key: &[u8], freq: u32| {
            if let Ok(t) = std::str::from_utf8(key) {
                *found.entry(t.to_string()).or_default() += u64::from(freq);
            }
        };
        for segment in self.searcher.segment_readers() {
            let inverted = segment.inverted_index(self.field)?;
            let dict = inverted.terms();
            match how {
                Expansion::Prefix => {
                    let mut stream = dict.range().ge(word.as_bytes()).into_stream()?;
                    while stream.advance() && stream.key().starts_with(word.as_bytes()) {
                        collect(stream.key(), stream.value().doc_freq);
                    }
                }
                Expansion::Fuzzy(d) => {
                    let term = Term::from_field_text(self.field, word);
                    let automaton = FuzzyTermQuery::new(term, d, true).automaton()?;
                    let mut stream = dict.search(automaton).into_stream()?;
                    while stream.advance() {
                        collect(stream.key(), stream.value().doc_freq);
                    }
                }
            }
        }
        Ok(found)
    }
}

#[derive(Debug, Clone, Copy)]
enum Expansion {
    Prefix,
    /// Up to this many edits.
    Fuzzy(u8),
}

/// Edits (insertions, deletions, substitutions, swaps of neighbours) from `a` to `b`.
fn edits(a: &[char], b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// Applies what a source offers to the index; [`Updater::finish`] removes what it did not
/// offer and commits.
pub struct Updater<'a> {
    writer: IndexWriter,
    before: HashMap<String, u64>,
    report: UpdateReport,
    index: &'a SearchIndex,
}

impl Updater<'_> {
    /// One item of the source (`None`: an item that is not terminal).
    pub fn offer(&mut self, doc: Option<IndexDoc>) -> anyhow::Result<()> {
        self.report.read += 1;
        let Some(doc) = doc else {
            return Ok(());
        };
        let stamp = doc.stamp();
        match self.before.remove(&doc.key) {
            Some(old) if old == stamp => {
                self.report.unchanged += 1;
                return Ok(());
            }
            Some(_) => {
                self.writer
                    .delete_term(Term::from_field_text(self.index.fields.key, &doc.key));
                self.report.replaced += 1;
            }
            None => self.report.added += 1,
        }
        let f = self.index.fields;
        let mut d = TantivyDocument::new();
        d.add_text(f.key, &doc.key);
        d.add_text(f.public_id, &doc.public_id);
        d.add_text(f.delivery_type, &doc.delivery_type);
        d.add_text(f.status, &doc.status);
        d.add_text(f.locale, &doc.locale);
        d.add_text(f.text, &doc.text);
        d.add_text(f.ocr_at, &doc.ocr_at);
        d.add_u64(f.stamp, stamp);
        if doc.is_deleted() {
            d.add_text(f.deleted, "1");
            d.add_text(f.deleted_at, &doc.deleted_at);
            d.add_text(f.renamed_to, &doc.renamed_to);
        }
        self.writer.add_document(d)?;
        Ok(())
    }

    /// Removes the indexed items the source did not offer, commits, and waits for merges.
    pub fn finish(mut self) -> anyhow::Result<UpdateReport> {
        for key in self.before.keys() {
            self.writer
                .delete_term(Term::from_field_text(self.index.fields.key, key));
        }
        self.report.removed = self.before.len() as u64;
        self.writer.commit().context("committing the index")?;
        self.writer
            .wait_merging_threads()
            .context("merging the index")?;
        self.index
            .reader
            .reload()
            .context("reading the updated index")?;
        self.report.indexed = self.index.len()?;
        Ok(self.report)
    }
}

/// Reads an export file (JSON lines as `export --format jsonl` writes them; gzip-compressed
/// when its name ends in `.gz`) into `updater`; its deleted rows (an export with
/// `--include-deleted`) are left out, so removed from the index.
pub fn update_from_file(updater: &mut Updater<'_>, path: &Path) -> anyhow::Result<()> {
    update_from_export(updater, path, false)
}

/// [`update_from_file`], with the deleted rows kept when `include_deleted`.
pub fn update_from_export(
    updater: &mut Updater<'_>,
    path: &Path,
    include_deleted: bool,
) -> anyhow::Result<()> {
    crate::export::read_rows(path, None, |row| {
        let doc = IndexDoc::from_row(row).filter(|d| include_deleted || !d.is_deleted());
        updater.offer(doc)?;
        Ok(ControlFlow::Continue(()))
    })
}

/// A search: the query (tantivy's syntax: words, "phrases", AND/OR/NOT, +/-, parentheses)
/// and its filters.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub query: String,
    pub limit: usize,
    /// Edit distance allowed per term (0 exact, 1 or 2).
    pub fuzzy: u8,
    pub statuses: Vec<String>,
    pub locale: Option<String>,
    pub delivery_type: Option<String>,
    /// Only public ids starting with this (a folder: `invoices/2021/`).
    pub prefix: Option<String>,
    /// Count every match too (slower: the best ones alone can skip most).
    pub count: bool,
    /// Deleted items too (when the index holds them: `index --include-deleted`).
    pub include_deleted: bool,
}

/// One result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub key: String,
    pub public_id: String,
    pub delivery_type: String,
    pub status: String,
    pub locale: String,
    pub ocr_at: String,
    pub score: f32,
    /// Up to 160 characters of the text around the best match.
    pub snippet: String,
    /// Byte ranges of `snippet` that matched.
    pub highlights: Vec<(usize, usize)>,
    /// When the item was deleted (only with `--include-deleted`; absent when it is not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// For an item renamed away: its new key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renamed_to: Option<String>,
}

impl Hit {
    /// The snippet with each match between `open` and `close`, on one line.
    pub fn marked(&self, open: &str, close: &str) -> String {
        crate::highlight::marked(&self.snippet, &self.highlights, open, close)
    }
}

/// The best results and, when asked, how many matched in all.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResults {
    pub total: Option<u64>,
    pub hits: Vec<Hit>,
    /// Words of the query with nothing indexable (no letter or digit), left out.
    pub ignored: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(t: &str) -> Vec<String> {
        words(t).into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn words_are_runs_of_letters_and_cjk_is_cut_into_bigrams() {
        assert_eq!(
            texts("STOP! Invoice #2021-04, café"),
            ["STOP", "Invoice", "2021", "04", "café"]
        );
        assert_eq!(texts("東京都庁"), ["東京", "京都", "都庁"]);
        assert_eq!(texts("Tokyo東京 駅"), ["Tokyo", "東京", "駅"]);
        assert_eq!(texts("서울특별시"), ["서울", "울특", "특별", "별시"]);
        assert_eq!(texts("カタカナ"), ["カタ", "タカ", "カナ"]);
        let t = words("a 東京");
        assert_eq!((t[1].offset_from, t[1].offset_to, t[1].position), (2, 8, 1));
    }

    fn doc(key: &str, text: &str, status: &str) -> IndexDoc {
        let (delivery_type, public_id) = shared::message::asset_of_key(key);
        IndexDoc {
            key: key.into(),
            public_id: public_id.into(),
            delivery_type: delivery_type.into(),
            status: status.into(),
            locale: "en".into(),
            text: text.into(),
            ocr_at: "2026-11-26T00:00:00Z".into(),
            deleted_at: String::new(),
            renamed_to: String::new(),
        }
    }

    fn keys(r: &SearchResults) -> Vec<&str> {
        let mut k: Vec<&str> = r.hits.iter().map(|h| h.key.as_str()).collect();
        k.sort();
        k
    }

    fn q(query: &str) -> SearchQuery {
        SearchQuery {
            query: query.into(),
            limit: 10,
            ..SearchQuery::default()
        }
    }

    #[test]
    fn an_update_adds_replaces_and_removes_only_what_changed() {
        let dir = std::env::temp_dir().join(format!("ocr-index-{}", std::process::id()));
        let _fresh = std::fs::remove_dir_all(&dir);
        let index = SearchIndex::open_or_create(&dir, false).unwrap();
        let mut u = index.updater().unwrap();
        u.offer(Some(doc("signs/stop", "STOP\nall way", "done")))
            .unwrap();
        u.offer(Some(doc(
            "inv/2021-1",
            "Invoice VAT GB123 total 40",
            "done",
        )))
        .unwrap();
        u.offer(Some(doc("~private~memo", "stop the presses", "done")))
            .unwrap();
        u.offer(None).unwrap();
        let r = u.finish().unwrap();
        assert_eq!((r.read, r.added, r.indexed), (4, 3, 3));

        let found = index.search(&q("stop")).unwrap();
        assert_eq!(keys(&found), ["signs/stop", "~private~memo"]);
        assert_eq!(found.total, None);
        let counted = index
            .search(&SearchQuery {
                count: true,
                limit: 1,
                ..q("stop")
            })
            .unwrap();
        assert_eq!((counted.total, counted.hits.len()), (Some(2), 1));
        let private = index
            .search(&SearchQuery {
                delivery_type: Some("private".into()),
                ..q("stop")
            })
            .unwrap();
        assert_eq!(keys(&private), ["~private~memo"]);
        assert_eq!(private.hits[0].public_id, "memo");
        assert_eq!(private.hits[0].marked("[", "]"), "[stop] the presses");

        // A re-OCR, a removal, one unchanged, one new.
        let index = SearchIndex::open_or_create(&dir, false).unwrap();
        let mut u = index.updater().unwrap();
        u.offer(Some(doc("signs/stop", "GO", "done"))).unwrap();
        u.offer(Some(doc(
            "inv/2021-1",
            "Invoice VAT GB123 total 40",
            "done",
        )))
        .unwrap();
        u.offer(Some(doc("new", "stop sign", "done"))).unwrap();
        let r = u.finish().unwrap();
        assert_eq!(
            (r.added, r.replaced, r.removed, r.unchanged, r.indexed),
            (1, 1, 1, 1, 3)
        );
        assert_eq!(keys(&index.search(&q("stop")).unwrap()), ["new"]);
        assert_eq!(keys(&index.search(&q("go")).unwrap()), ["signs/stop"]);
        let _cleanup = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn queries_rank_match_phrases_booleans_fuzzy_terms_filters_and_cjk() {
        let dir = std::env::temp_dir().join(format!("ocr-index-q-{}", std::process::id()));
        let index = SearchIndex::open_or_create(&dir, true).unwrap();
        let mut u = index.updater().unwrap();
        for d in [
            doc("a", "Invoice 2021 VAT number GB123456", "done"),
            doc("b", "invoice invoice invoice 2022", "done"),
            doc("c", "number VAT on the back", "done"),
            doc("jp", "東京都庁 第一本庁舎", "done"),
            doc("cafe", "Café de Flore", "done"),
            doc("f/x", "nothing here", "no_text"),
        ] {
            u.offer(Some(d)).unwrap();
        }
        u.finish().unwrap();
        let k = |query: &str| {
            keys(&index.search(&q(query)).unwrap())
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(k("\"vat number\""), ["a"]);
        assert_eq!(k("vat number"), ["a", "c"]);
        assert_eq!(k("invoice AND NOT 2021"), ["b"]);
        assert_eq!(k("invoice NOT 2021"), ["b"]);
        assert_eq!(k("invoice -2021"), ["b"]);
        assert_eq!(k("\"invoice AND NOT 2021\""), Vec::<String>::new());
        assert_eq!(k("2021 OR 2022"), ["a", "b"]);
        assert_eq!(index.search(&q("invoice")).unwrap().hits[0].key, "b");
        assert_eq!(k("京都"), ["jp"]);
        assert_eq!(k("本庁舎"), ["jp"]);
        assert_eq!(k("cafe"), ["cafe"]);
        assert!(k("invoise").is_empty());
        let fuzzy = index
            .search(&SearchQuery {
                fuzzy: 1,
                ..q("invoise")
            })
            .unwrap();
        assert_eq!(keys(&fuzzy), ["a", "b"]);
        let only = |f: SearchQuery| keys(&index.search(&f).unwrap()).len();
        assert_eq!(
            only(SearchQuery {
                statuses: vec!["no_text".into()],
                ..q("nothing")
            }),
            1
        );
        assert_eq!(
            only(SearchQuery {
                statuses: vec!["done".into()],
                ..q("nothing")
            }),
            0
        );
        assert_eq!(
            only(SearchQuery {
                prefix: Some("f/".into()),
                ..q("nothing")
            }),
            1
        );
        assert_eq!(
            only(SearchQuery {
                locale: Some("fr".into()),
                ..q("invoice")
            }),
            0
        );
        let _cleanup = std::fs::remove_dir_all(&dir);
    }
}
