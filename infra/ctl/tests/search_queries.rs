//! What people type into `ocr-ctl search`: times, amounts, e-mail addresses, Japanese phrases,
//! typos, prefixes, stray quotes and parentheses. Every query answers or says what is wrong;
//! none panics, and every highlight is whole characters of its snippet.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use ocr_ctl::highlight::SNIPPET_CHARS;
use ocr_ctl::search::{Hit, IndexDoc, SearchIndex, SearchQuery, SearchResults};
use proptest::prelude::*;
use tantivy::tokenizer::TokenStream;

/// A folder of its own for each index, removed when dropped.
struct Folder(PathBuf);

impl Folder {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ocr-ctl-search-{}-{n}", std::process::id()));
        let _fresh = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _gone = std::fs::remove_dir_all(&self.0);
    }
}

fn doc(key: &str, text: &str) -> IndexDoc {
    IndexDoc {
        key: key.into(),
        public_id: key.into(),
        delivery_type: "upload".into(),
        status: "done".into(),
        locale: "en".into(),
        text: text.into(),
        ocr_at: "2026-12-01T00:00:00Z".into(),
        deleted_at: String::new(),
        renamed_to: String::new(),
    }
}

const TEXTS: &[(&str, &str)] = &[
    (
        "shop",
        "Café crème 3,50 €\n営業時間 9:00～18:00\n定休日 水曜日",
    ),
    ("notice", "営業時間のお知らせ"),
    (
        "invoice",
        "Invoice INV-2021-0042\nVAT GB123456789\nTotal: 1.234,56 EUR\ncontact billing@example.com",
    ),
    ("thai", "ร้านกาแฟ เปิด 9:00"),
    ("party", "Open 🎉 now"),
    ("plural", "invoices invoice"),
    ("accents", "e\u{301}te\u{301} Ελληνικά Кириллица नमस्ते"),
];

fn index(dir: &Folder, docs: impl IntoIterator<Item = IndexDoc>) -> SearchIndex {
    let index = SearchIndex::open_or_create(&dir.0, true).unwrap();
    let mut u = index.updater().unwrap();
    for d in docs {
        u.offer(Some(d)).unwrap();
    }
    u.finish().unwrap();
    index
}

fn q(query: &str) -> SearchQuery {
    SearchQuery {
        query: query.into(),
        limit: 20,
        ..SearchQuery::default()
    }
}

fn keys(r: &SearchResults) -> Vec<String> {
    let mut k: Vec<String> = r.hits.iter().map(|h| h.key.clone()).collect();
    k.sort();
    k
}

fn hit<'a>(r: &'a SearchResults, key: &str) -> &'a Hit {
    r.hits.iter().find(|h| h.key == key).unwrap()
}

#[test]
fn times_amounts_addresses_and_japanese_phrases_are_found_as_typed() {
    let dir = Folder::new();
    let index = index(&dir, TEXTS.iter().map(|(k, t)| doc(k, t)));
    let found = |query: &str| keys(&index.search(&q(query)).unwrap());

    let r = index.search(&q("営業時間")).unwrap();
    assert_eq!(keys(&r), ["notice", "shop"]);
    assert_eq!(
        hit(&r, "shop").marked(">>", "<<"),
        "Café crème 3,50 € >>営業時間<< 9:00～18:00 定休日 水曜日"
    );
    assert_eq!(found("\"営業時間 9:00\""), ["shop"]);
    assert_eq!(found("Café crème 営業時間 9:00"), ["shop"]);
    assert_eq!(found("9:00"), ["shop", "thai"]);
    assert_eq!(found("billing@example.com"), ["invoice"]);
    assert_eq!(found("INV-2021-0042 GB123456789"), ["invoice"]);
    assert_eq!(found("total: 1.234,56"), ["invoice"]);
    assert_eq!(found("field:value"), Vec::<String>::new());
    assert_eq!(found("cafe"), ["shop"]);
    assert_eq!(found("NOT invoice").len(), TEXTS.len() - 2);
    assert_eq!(
        found("(invoice OR 営業時間) -お知らせ -invoices"),
        ["invoice", "shop"]
    );

    let r = index.search(&q("🎉 open")).unwrap();
    assert_eq!(
        (keys(&r), r.ignored.clone()),
        (vec!["party".to_string()], vec!["🎉".to_string()])
    );
}

#[test]
fn fuzzy_and_prefix_hits_are_highlighted_and_ranked() {
    let dir = Folder::new();
    let index = index(&dir, TEXTS.iter().map(|(k, t)| doc(k, t)));
    let fuzzy = index
        .search(&SearchQuery {
            fuzzy: 1,
            ..q("invoise")
        })
        .unwrap();
    assert_eq!(keys(&fuzzy), ["invoice", "plural"]);
    assert_eq!(
        hit(&fuzzy, "invoice").marked("[", "]"),
        "[Invoice] INV-2021-0042 VAT GB123456789 Total: 1.234,56 EUR contact billing@example.com"
    );
    assert_eq!(hit(&fuzzy, "plural").marked("[", "]"), "invoices [invoice]");
    // The word as typed ranks above its neighbours.
    let exact = index
        .search(&SearchQuery {
            fuzzy: 1,
            ..q("invoices")
        })
        .unwrap();
    assert_eq!(exact.hits[0].key, "plural");
    assert!(exact.hits[0].score > exact.hits[1].score, "{exact:?}");

    let prefix = index.search(&q("inv*")).unwrap();
    assert_eq!(keys(&prefix), ["invoice", "plural"]);
    // "INV" is the word typed: nearer than "invoices invoice".
    assert_eq!(prefix.hits[0].key, "invoice");
    assert_eq!(
        hit(&prefix, "invoice").marked("[", "]"),
        "[Invoice] [INV]-2021-0042 VAT GB123456789 Total: 1.234,56 EUR contact billing@example.com"
    );
    assert_eq!(
        hit(&prefix, "plural").marked("[", "]"),
        "[invoices] [invoice]"
    );
}

#[test]
fn a_query_that_cannot_be_read_says_what_is_wrong_and_how_to_write_it() {
    let dir = Folder::new();
    let index = index(&dir, TEXTS.iter().map(|(k, t)| doc(k, t)));
    let error = |query: &str| format!("{:#}", index.search(&q(query)).unwrap_err());
    assert!(error("\"営業時間 9:00").contains("close it"));
    assert!(error("invoice)").contains("closes no '('"));
    assert!(error("(invoice").contains("add a ')'"));
    assert!(error("🎉 !!").contains("nothing to search for"));
}

/// The demo's corpus and the texts here, indexed once for the property tests.
fn shared_index() -> &'static SearchIndex {
    static INDEX: OnceLock<(Folder, SearchIndex)> = OnceLock::new();
    let (_, index) = INDEX.get_or_init(|| {
        let dir = Folder::new();
        let corpus = cloudinary_emulator::corpus::generate(400);
        let docs = TEXTS
            .iter()
            .chain(PATTERN_TEXTS)
            .map(|(k, t)| doc(k, t))
            .chain(
                corpus
                    .iter()
                    .filter_map(|a| Some(doc(&a.public_id, a.text.as_deref()?))),
            );
        let index = index(&dir, docs);
        (dir, index)
    });
    index
}

/// Pieces people type, operators and punctuation among them.
const PIECES: &[&str] = &[
    "invoice",
    "INV-2021",
    "9:00",
    "営業時間",
    "営業",
    "時",
    "Café",
    "crème",
    "ร้านกาแฟ",
    "🎉",
    "e\u{301}",
    "\\",
    "\"",
    "(",
    ")",
    "AND",
    "OR",
    "NOT",
    "-",
    "+",
    "*",
    ":",
    "field:value",
    "&&",
    "||",
    "~2",
    "^3",
    "[a TO b]",
    "{",
    "}",
    "/re/",
    "?",
    "1.234,56",
    "€",
    "@",
    "ß",
    "İ",
    "ﬁ",
    "\u{200b}",
    "\t",
];

fn query() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => proptest::sample::select(PIECES).prop_map(str::to_string),
        1 => any::<String>(),
        1 => "[\\PC]{0,6}",
    ];
    let glue = proptest::sample::select(&[" ", "", "  ", "*", "\""][..]);
    proptest::collection::vec((piece, glue), 0..8).prop_map(|parts| {
        parts
            .into_iter()
            .map(|(p, g)| format!("{p}{g}"))
            .collect::<String>()
    })
}

/// Every highlight is a range of whole characters of its snippet, in order and apart.
fn check_hit(h: &Hit) {
    assert!(h.snippet.chars().count() <= SNIPPET_CHARS, "{h:?}");
    let mut end = 0;
    for &(from, to) in &h.highlights {
        assert!(end <= from && from < to && to <= h.snippet.len(), "{h:?}");
        assert!(
            h.snippet.is_char_boundary(from) && h.snippet.is_char_boundary(to),
            "{h:?}"
        );
        end = to;
        // Apart: two touching ranges would have been one.
        assert!(
            h.highlights.iter().filter(|r| r.1 == from).count() == 0,
            "{h:?}"
        );
    }
    // Marks no text can hold (the texts are without control characters).
    let marked = h.marked("\u{1}", "\u{2}");
    assert_eq!(marked.matches('\u{1}').count(), h.highlights.len(), "{h:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn any_query_answers_or_says_why(query in query(), fuzzy in 0u8..=2, count in any::<bool>()) {
        let index = shared_index();
        match index.search(&SearchQuery { fuzzy, count, ..q(&query) }) {
            Ok(r) => r.hits.iter().for_each(check_hit),
            Err(e) => {
                let message = format!("{e:#}");
                prop_assert!(!message.trim().is_empty());
            }
        }
    }

    #[test]
    fn snippets_of_any_text_mark_whole_characters(
        text in "[\\PC\n]{0,600}",
        picks in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
        others in proptest::collection::vec("[\\PC]{1,3}", 0..3),
    ) {
        // Terms the text holds (as the index writes them), and some it may not.
        let mut analyzer = ocr_ctl::search::analyzer();
        let own: Vec<String> = ocr_ctl::search::words(&text)
            .into_iter()
            .flat_map(|t| {
                let mut stream = analyzer.token_stream(&t.text);
                let mut out = Vec::new();
                while stream.advance() {
                    out.push(stream.token().text.clone());
                }
                out
            })
            .collect();
        let mut terms: HashSet<String> = others.into_iter().collect();
        if !own.is_empty() {
            terms.extend(picks.iter().map(|i| own[i.index(own.len())].clone()));
        }
        let (snippet, highlights) = ocr_ctl::highlight::snippet(&text, &terms, &mut analyzer);
        check_hit(&Hit {
            key: String::new(),
            public_id: String::new(),
            delivery_type: String::new(),
            status: String::new(),
            locale: String::new(),
            ocr_at: String::new(),
            score: 0.0,
            snippet,
            highlights,
            deleted_at: None,
            renamed_to: None,
        });
    }
}

/// Texts where words are cut in awkward places, for the patterns below.
const PATTERN_TEXTS: &[(&str, &str)] = &[
    (
        "numbers",
        "x½1234 5678² ab1234\nGB123456789 GB12345678 XGB123456789",
    ),
    ("vat", "VAT: GB123456789\nDE987654321; fr12345678901"),
    ("dates", "Date: 2021-03-04\n04/03/2021 ２０２１年３月４日"),
    ("greek", "ΟΔΟΣ Σοφίας 12\nStraße 7, Café"),
];

/// Every (key, line number, match) a pattern finds in the index's texts: from the index,
/// reading only its candidates; or reading every text, as a scan does.
fn rows(
    index: &SearchIndex,
    pattern: &ocr_ctl::pattern::Pattern,
    scan: bool,
) -> std::collections::BTreeSet<(String, usize, String)> {
    use ocr_ctl::pattern::Need;
    let need = if scan {
        Need::Any
    } else {
        pattern.need.clone()
    };
    let every = ocr_ctl::pattern::Pattern {
        regex: pattern.regex.clone(),
        need,
    };
    let mut found = std::collections::BTreeSet::new();
    let source = ocr_ctl::extract::Source::Index(index);
    let q = SearchQuery::default();
    ocr_ctl::extract::for_each_text(&source, &every, &q, false, |doc| {
        ocr_ctl::extract::for_each_match(&every.regex, &doc.text, |f, _| {
            let m = f.line[f.range.0..f.range.1].to_string();
            found.insert((doc.key.clone(), f.line_number, m));
            Ok(())
        })?;
        Ok(std::ops::ControlFlow::Continue(()))
    })
    .unwrap();
    found
}

#[test]
fn patterns_people_mine_for_are_answered_from_the_index_as_a_scan_would() {
    let index = shared_index();
    for (source, narrowed) in [
        (r"\bGB\d{9}\b", true),
        (r"\b(?:[A-Z]{2})?\d{9}\b", true),
        (r"(?P<country>GB|DE)(?P<number>\d{9})", true),
        (r"INV-\d{4}-\d{4}", true),
        (r"\b\d{4}-\d{2}-\d{2}\b", true),
        (r"\d+[.,]\d{2}\s*(€|EUR)", true),
        (r"[\w.]+@[\w.]+", false),
        (r"\b\d{4}\b", true),
        ("営業時間", true),
        (r"(?i)straße|ΟΔΟΣ", true),
        (r".", false),
    ] {
        let p = ocr_ctl::pattern::compile(source, false).unwrap();
        let from_index = rows(index, &p, false);
        assert_eq!(from_index, rows(index, &p, true), "{source}");
        assert!(!from_index.is_empty(), "{source} finds something");
        let candidates = index.candidates(&p.need, &SearchQuery::default()).unwrap();
        assert_eq!(candidates.narrowed, narrowed, "{source}: {:?}", p.need);
        if narrowed {
            assert!(
                (candidates.addresses.len() as u64) < candidates.total,
                "{source} reads only some texts"
            );
        }
    }
}

#[test]
fn regex_search_marks_the_first_matching_line_and_extract_names_its_groups() {
    let index = shared_index();
    let p = ocr_ctl::pattern::compile(r"(?P<country>[A-Z]{2})(?P<number>\d{9})\b", false).unwrap();
    let source = ocr_ctl::extract::Source::Index(index);
    let q = SearchQuery {
        limit: 10,
        count: true,
        ..SearchQuery::default()
    };
    let found = ocr_ctl::extract::search_lines(&source, &p, &q).unwrap();
    let vat = found
        .hits
        .iter()
        .find(|h| h.key == "vat")
        .expect("the VAT text");
    assert_eq!(
        (vat.line_number, vat.line.as_str()),
        (1, "VAT: GB123456789")
    );
    assert_eq!(vat.highlights, vec![(5, 16)]);
    let numbers = found.hits.iter().find(|h| h.key == "numbers").unwrap();
    assert_eq!(numbers.line_number, 2);
    assert_eq!(
        numbers.highlights,
        vec![(0, 11), (24, 35)],
        "XGB… holds GB… too"
    );
    let scanned: HashSet<String> = rows(index, &p, true).into_iter().map(|r| r.0).collect();
    assert_eq!(found.total.map(|t| t.0), Some(scanned.len() as u64));
    assert_eq!(found.hits.len(), scanned.len().min(10));

    let mut out = Vec::new();
    let mut w = ocr_ctl::extract::RowWriter::new(&mut out, ocr_ctl::export::Format::Csv, &p, false)
        .unwrap();
    let only_vat = SearchQuery {
        prefix: Some("vat".into()),
        ..SearchQuery::default()
    };
    let r = ocr_ctl::extract::extract(&source, &p, &only_vat, &mut w, false).unwrap();
    w.finish().unwrap();
    assert_eq!((r.matched, r.rows), (1, 2));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "key,public_id,match,country,number,line_number,line\n\
         vat,vat,GB123456789,GB,123456789,1,VAT: GB123456789\n\
         vat,vat,DE987654321,DE,987654321,2,DE987654321; fr12345678901\n"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Whatever the pattern, the index's answer is the scan's.
    #[test]
    fn any_pattern_finds_from_the_index_what_a_scan_finds(
        parts in proptest::collection::vec(proptest::sample::select(PATTERN_PIECES), 1..6),
        ignore_case in any::<bool>(),
    ) {
        let source = parts.concat();
        let Ok(p) = ocr_ctl::pattern::compile(&source, ignore_case) else { return Ok(()) };
        let index = shared_index();
        prop_assert_eq!(rows(index, &p, false), rows(index, &p, true), "{}", source);
    }
}

const PATTERN_PIECES: &[&str] = &[
    r"\b",
    r"\d",
    r"\d{2}",
    r"\d+",
    r"\d{9}",
    "GB",
    "INV",
    "-",
    r"\.",
    ",",
    ":",
    " ",
    r"\s",
    r"\w+",
    "[A-Z]",
    "[a-z]+",
    "[A-Z]{2}",
    "(?i)gb",
    "é",
    "ß",
    "Σ",
    "営業",
    "時間",
    "9:00",
    "€",
    "@",
    ".",
    ".*",
    "(?:a|b)",
    "(?:GB|DE)",
    "x?",
    "^",
    "$",
    "(",
    ")",
    "|",
    "[",
    "]",
    "?",
    "*",
    "(?:[A-Z]{2})?",
    r"(?:\d+)?",
    r"(\d{2}-)?",
    "{2}",
];

/// The README's three patterns: each is read, narrows by words and finds its groups.
#[test]
fn the_readmes_patterns_narrow_and_name_their_groups() {
    let readme = include_str!("../../../README.md");
    let patterns: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("ocr-ctl extract '"))
        .filter_map(|l| l.rsplit_once("' --to ").map(|(p, _)| p))
        .collect();
    assert_eq!(patterns.len(), 4, "{patterns:?}");
    let text = "VAT number GB123456789 and FR12345678901\nDate: 2021-03-04, due 4/3/2021\n\
                TOTAL amount due: 1.234,56 EUR";
    let mut found: Vec<String> = Vec::new();
    for source in &patterns[1..] {
        let p = ocr_ctl::pattern::compile(source, false).unwrap();
        assert_ne!(p.need, ocr_ctl::pattern::Need::Any, "{source} narrows");
        let words: std::collections::BTreeSet<String> = {
            let mut analyzer = ocr_ctl::search::analyzer();
            let mut stream = analyzer.token_stream(text);
            let mut w = std::collections::BTreeSet::new();
            while stream.advance() {
                w.insert(stream.token().text.clone());
            }
            w
        };
        assert!(p.need.admits(&words), "{source}");
        ocr_ctl::extract::for_each_match(&p.regex, text, |_, caps| {
            for name in p.regex.capture_names().flatten() {
                if let Some(m) = caps.name(name) {
                    found.push(format!("{name}={}", m.as_str()));
                }
            }
            Ok(())
        })
        .unwrap();
    }
    assert_eq!(
        found,
        [
            "country=GB",
            "number=123456789",
            "country=FR",
            "number=12345678901",
            "iso=2021-03-04",
            "dmy=4/3/2021",
            "amount=1.234,56",
            "currency=EUR",
        ]
    );
}

/// An excluded phrase takes out exactly the texts that hold it, whatever the index's layout.
#[test]
fn an_excluded_phrase_takes_out_exactly_its_texts() {
    let dir = Folder::new();
    let index = index(&dir, TEXTS.iter().map(|(k, t)| doc(k, t)));
    for query in [
        "NOT \"INV-2021\"",
        "-\"営業時間 9:00\"",
        "NOT (\"crème\" OR \"INV-2021 0042\")",
    ] {
        let r = index.search(&q(query)).unwrap();
        let mut got = keys(&r);
        got.sort();
        let mut want: Vec<String> = TEXTS
            .iter()
            .map(|(k, _)| k.to_string())
            .filter(|k| match query {
                "NOT \"INV-2021\"" => k != "invoice",
                "-\"営業時間 9:00\"" => k != "shop",
                _ => k != "invoice" && k != "shop",
            })
            .collect();
        want.sort();
        assert_eq!(got, want, "{query}");
    }
}
