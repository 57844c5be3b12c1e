//! Regular expressions over the index: which indexed words every match must bring with it.
//!
//! The index holds words, not text, so a pattern is answered in two steps: the index narrows
//! the texts to those holding the words a match cannot do without (a [`Need`]), then the
//! pattern itself is run over each of those texts, line by line, as `grep` runs it. The first
//! step may only ever keep too many texts, never too few: the rows are those of a scan.
//!
//! A word of the index is a run of letters and digits cut where the tokenizer cuts
//! ([`crate::search::words`]): at any character that is not a letter or a decimal digit, and
//! around the CJK scripts. So in `INV-\d{6}` the `-` always ends a word, and `INV` and the six
//! digits are each the end or the start of one; `\bGB\d{9}\b` is a whole word. A word is stored
//! lowercased and folded to ASCII, one character at a time, and the pattern's characters are
//! mapped the same way; classes too large to map (`\p{L}`, `.`) stand for any characters.
//! Words of 64 bytes or more are not indexed, so a match inside one (or touching one) is not
//! found this way; nor in a script written without spaces other than the CJK ones (Thai, Lao,
//! Khmer, Myanmar), whose sentences are long words.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use regex_syntax::hir::{
    Class, ClassUnicode, ClassUnicodeRange, Dot, Hir, HirKind, Look, Repetition,
};

use tantivy::tokenizer::TextAnalyzer;

use crate::search::{analyzer, is_cjk, is_word_char};

/// What the indexed words of a text must hold for the pattern to match one of its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nothing certain: every text must be read.
    Any,
    /// Some indexed word matches this regular expression, whole (as the index's term
    /// dictionary is searched).
    Term(String),
    And(Vec<Need>),
    Or(Vec<Need>),
}

impl Need {
    fn and(needs: Vec<Need>) -> Need {
        let mut all: Vec<Need> = Vec::new();
        for n in needs {
            match n {
                Need::Any => {}
                Need::And(inner) => all.extend(inner),
                n => all.push(n),
            }
        }
        all.dedup();
        match all.len() {
            0 => Need::Any,
            1 => all.pop().expect("one"),
            _ => Need::And(all),
        }
    }

    fn or(needs: Vec<Need>) -> Need {
        let mut any: Vec<Need> = Vec::new();
        for n in needs {
            match n {
                Need::Any => return Need::Any,
                Need::Or(inner) => any.extend(inner),
                n => any.push(n),
            }
        }
        any.dedup();
        match any.len() {
            0 => Need::Any,
            1 => any.pop().expect("one"),
            _ => Need::Or(any),
        }
    }

    /// Whether words like these could hold a match (the check the index makes; for tests and
    /// for reading a text that is not indexed).
    pub fn admits(&self, words: &BTreeSet<String>) -> bool {
        match self {
            Need::Any => true,
            Need::Term(re) => {
                let whole = regex::Regex::new(&format!("^(?:{re})$")).expect("a term pattern");
                words.iter().any(|w| whole.is_match(w))
            }
            Need::And(all) => all.iter().all(|n| n.admits(words)),
            Need::Or(any) => any.iter().any(|n| n.admits(words)),
        }
    }
}

/// A pattern as `search --regex` and `extract` run it.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub regex: regex::Regex,
    pub need: Need,
}

/// Compiles `source` (the `regex` crate's syntax; `ignore_case` as `(?i)`) and works out what
/// it needs of the index.
pub fn compile(source: &str, ignore_case: bool) -> anyhow::Result<Pattern> {
    let regex = regex::RegexBuilder::new(source)
        .case_insensitive(ignore_case)
        .build()
        .map_err(|e| anyhow::anyhow!("invalid pattern {source:?}: {e}"))?;
    let hir = regex_syntax::ParserBuilder::new()
        .case_insensitive(ignore_case)
        .build()
        .parse(source)
        .map_err(|e| anyhow::anyhow!("invalid pattern {source:?}: {e}"))?;
    Ok(Pattern {
        regex,
        need: need(&hir),
    })
}

/// A looser form of a term pattern, for when its automaton is too large for the term
/// dictionary's (which stops at a thousand states: `\d`, a class of 680 digits in many
/// scripts, repeated after `.*` can pass it): every class that holds characters beyond ASCII
/// holds them all. It matches every word the pattern matches, and some more.
pub fn loosened(term: &str) -> Option<String> {
    fn loosen(hir: &Hir) -> Hir {
        match hir.kind() {
            HirKind::Class(Class::Unicode(c)) if c.ranges().iter().any(|r| r.end() > '\x7f') => {
                let mut wide = c.clone();
                wide.union(&ClassUnicode::new([ClassUnicodeRange::new(
                    '\u{80}',
                    char::MAX,
                )]));
                Hir::class(Class::Unicode(wide))
            }
            HirKind::Repetition(r) => Hir::repetition(repeat(loosen(&r.sub), r.min, r.max)),
            HirKind::Capture(c) => loosen(&c.sub),
            HirKind::Concat(parts) => Hir::concat(parts.iter().map(loosen).collect()),
            HirKind::Alternation(parts) => Hir::alternation(parts.iter().map(loosen).collect()),
            _ => hir.clone(),
        }
    }
    let hir = regex_syntax::Parser::new().parse(term).ok()?;
    Some(loosen(&hir).to_string())
}

/// One step of a concatenation, as the tokenizer sees what it matches.
#[derive(Debug, Clone)]
enum Piece {
    /// Only word characters (not CJK): part of one indexed word, as the word would be
    /// stored. `nullable`: it may match nothing.
    Word(Hir, bool),
    /// Only characters that are not in words: it ends any word before it, unless it may
    /// match nothing.
    Gap { nullable: bool },
    /// A place where a word must end or start (the start or end of the line, `\b`).
    Edge,
    /// One CJK character of a literal: it ends any word of letters next to it.
    Cjk(char),
    /// Anything else: what is around it may or may not be one word with it. It brings the
    /// need of what is inside.
    Open(Need),
    /// An alternation of branches that are not all words or all gaps: the concatenation is
    /// read once per branch, so each branch keeps its neighbours (`\b(?:foo\b|bar\b)`).
    Branches(Vec<Vec<Piece>>),
}

/// What `hir` needs of the words of any text it matches a part of.
fn need(hir: &Hir) -> Need {
    let mut pieces = Vec::new();
    push_pieces(hir, &mut pieces);
    needs_of(&pieces)
}

/// A concatenation is read once per choice of its alternations' branches up to this many
/// times; past it, an alternation needs what one of its branches needs, alone.
const MOST_READINGS: usize = 64;

/// The words and CJK pairs certain in a match of `pieces` (unanchored on both sides).
fn needs_of(pieces: &[Piece]) -> Need {
    let readings = pieces.iter().try_fold(1usize, |n, p| match p {
        Piece::Branches(b) => n.checked_mul(b.len()),
        _ => Some(n),
    });
    let first = pieces.iter().position(|p| matches!(p, Piece::Branches(_)));
    match (first, readings) {
        (None, _) => needs_of_plain(pieces),
        (Some(at), Some(n)) if n <= MOST_READINGS => {
            let Piece::Branches(branches) = &pieces[at] else {
                unreachable!("found above")
            };
            Need::or(
                branches
                    .iter()
                    .map(|branch| {
                        let mut reading = pieces[..at].to_vec();
                        reading.extend(branch.iter().cloned());
                        reading.extend(pieces[at + 1..].iter().cloned());
                        needs_of(&reading)
                    })
                    .collect(),
            )
        }
        (Some(_), _) => {
            let alone: Vec<Piece> = pieces
                .iter()
                .map(|p| match p {
                    Piece::Branches(b) => {
                        Piece::Open(Need::or(b.iter().map(|b| needs_of(b)).collect()))
                    }
                    p => p.clone(),
                })
                .collect();
            needs_of_plain(&alone)
        }
    }
}

/// [`needs_of`] for pieces without alternations.
fn needs_of_plain(pieces: &[Piece]) -> Need {
    let mut needs = Vec::new();
    let mut word: Vec<(Hir, bool)> = Vec::new();
    let mut closed_before = false;
    let mut cjk = String::new();
    for piece in pieces {
        if let Piece::Cjk(c) = piece {
            cjk.push(*c);
        } else {
            needs.push(cjk_pairs(&std::mem::take(&mut cjk)));
        }
        let closes = match piece {
            Piece::Word(h, nullable) => {
                word.push((h.clone(), *nullable));
                continue;
            }
            Piece::Gap { nullable } => !nullable,
            Piece::Edge | Piece::Cjk(_) => true,
            Piece::Open(inner) => {
                needs.push(inner.clone());
                false
            }
            Piece::Branches(_) => unreachable!("read apart by needs_of"),
        };
        needs.push(word_need(&std::mem::take(&mut word), closed_before, closes));
        closed_before = closes;
    }
    needs.push(cjk_pairs(&cjk));
    needs.push(word_need(&word, closed_before, false));
    Need::and(needs)
}

/// The need of one run of word pieces: a word that is exactly it where both ends are closed,
/// that starts or ends with it where one is, that holds it where neither is.
fn word_need(word: &[(Hir, bool)], closed_before: bool, closed_after: bool) -> Need {
    if word.iter().all(|(_, nullable)| *nullable) {
        return Need::Any;
    }
    let any = || Hir::repetition(repeat(Hir::dot(Dot::AnyChar), 0, None));
    let mut parts = Vec::new();
    if !closed_before {
        parts.push(any());
    }
    parts.extend(word.iter().map(|(h, _)| h.clone()));
    if !closed_after {
        parts.push(any());
    }
    Need::Term(Hir::concat(parts).to_string())
}

/// Every pair of neighbours in a run of CJK characters is an indexed word (as stored).
fn cjk_pairs(run: &str) -> Need {
    let chars: Vec<char> = run.chars().collect();
    let mut needs = Vec::new();
    let mut analyzer = analyzer();
    for pair in chars.windows(2) {
        let pair: String = pair.iter().collect();
        if let [only] = stored(&mut analyzer, &pair).as_slice() {
            needs.push(Need::Term(regex_syntax::escape(only)));
        }
    }
    Need::and(needs)
}

/// The words the index stores for `text`, in order.
fn stored(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut stream = analyzer.token_stream(text);
    let mut words = Vec::new();
    stream.process(&mut |t| words.push(t.text.clone()));
    words
}

/// A greedy repetition of `sub`. A repetition of a repetition is grouped: printed bare,
/// `(?:a{2})?` would read back as `a{2}?`, a lazy `a{2}`.
fn repeat(sub: Hir, min: u32, max: Option<u32>) -> Repetition {
    let sub = match sub.kind() {
        HirKind::Repetition(_) => Hir::capture(regex_syntax::hir::Capture {
            index: 1,
            name: None,
            sub: Box::new(sub),
        }),
        _ => sub,
    };
    Repetition {
        min,
        max,
        greedy: true,
        sub: Box::new(sub),
    }
}

/// Appends the pieces of `hir` (a capture is what it holds; a concatenation its parts).
fn push_pieces(hir: &Hir, out: &mut Vec<Piece>) {
    match hir.kind() {
        HirKind::Empty => {}
        HirKind::Capture(c) => push_pieces(&c.sub, out),
        HirKind::Concat(parts) => parts.iter().for_each(|p| push_pieces(p, out)),
        HirKind::Literal(lit) => match std::str::from_utf8(&lit.0) {
            Ok(text) => out.extend(text.chars().map(char_piece)),
            Err(_) => out.push(Piece::Open(Need::Any)),
        },
        HirKind::Class(Class::Unicode(class)) => out.push(class_piece(class)),
        HirKind::Class(Class::Bytes(_)) => out.push(Piece::Open(Need::Any)),
        HirKind::Look(look) => {
            if edge(*look) {
                out.push(Piece::Edge);
            }
        }
        HirKind::Repetition(rep) => out.push(repetition_piece(rep)),
        HirKind::Alternation(branches) => out.push(alternation_piece(branches)),
    }
}

/// Zero-width assertions after or before which no word can go on: the start or end of the
/// text or a line, and Unicode word boundaries (the tokenizer's word characters are all
/// `\w`, and every character that is not `\w` ends a word). ASCII boundaries are not: `é` is
/// not an ASCII word character but is in a word.
fn edge(look: Look) -> bool {
    matches!(
        look,
        Look::Start
            | Look::End
            | Look::StartLF
            | Look::EndLF
            | Look::StartCRLF
            | Look::EndCRLF
            | Look::WordUnicode
            | Look::WordStartUnicode
            | Look::WordEndUnicode
            | Look::WordStartHalfUnicode
            | Look::WordEndHalfUnicode
    )
}

fn char_piece(c: char) -> Piece {
    if is_cjk(c) {
        Piece::Cjk(c)
    } else if is_word_char(c) {
        Piece::Word(forms(std::iter::once(c)), false)
    } else {
        Piece::Gap { nullable: false }
    }
}

/// Classes of more characters than this stand for any characters (`\p{L}`, `.`).
const LARGEST_MAPPED_CLASS: usize = 4096;

fn class_piece(class: &ClassUnicode) -> Piece {
    let mut words = class.clone();
    words.intersect(plain_word_class());
    let mut others = class.clone();
    others.difference(plain_word_class());
    // CJK characters end a word of letters as a gap does.
    match (words.ranges().is_empty(), others.ranges().is_empty()) {
        (true, _) => Piece::Gap { nullable: false },
        (false, true) => {
            let size: usize = class
                .iter()
                .map(|r| r.end() as usize - r.start() as usize + 1)
                .sum();
            if size > LARGEST_MAPPED_CLASS {
                Piece::Word(
                    Hir::repetition(repeat(Hir::dot(Dot::AnyChar), 0, None)),
                    true,
                )
            } else {
                let chars = class.iter().flat_map(|r| r.start()..=r.end());
                Piece::Word(forms(chars), false)
            }
        }
        (false, false) => Piece::Open(Need::Any),
    }
}

/// The tokenizer's word characters outside the CJK scripts, as a class.
fn plain_word_class() -> &'static ClassUnicode {
    static CLASS: OnceLock<ClassUnicode> = OnceLock::new();
    CLASS.get_or_init(|| chars_where(|c| is_word_char(c) && !is_cjk(c)))
}

fn chars_where(keep: impl Fn(char) -> bool) -> ClassUnicode {
    let mut ranges: Vec<ClassUnicodeRange> = Vec::new();
    let mut run: Option<(char, char)> = None;
    for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
        if keep(c) {
            run = Some(match run {
                Some((from, to)) if to as u32 + 1 == c as u32 => (from, c),
                Some((from, to)) => {
                    ranges.push(ClassUnicodeRange::new(from, to));
                    (c, c)
                }
                None => (c, c),
            });
        }
    }
    if let Some((from, to)) = run {
        ranges.push(ClassUnicodeRange::new(from, to));
    }
    ClassUnicode::new(ranges)
}

/// What the index stores for each of these word characters (lowercased, folded to ASCII,
/// one character at a time, as the analyzer does), as one step of a term pattern.
fn forms(chars: impl Iterator<Item = char>) -> Hir {
    let mut analyzer = analyzer();
    let mut singles: Vec<ClassUnicodeRange> = Vec::new();
    let mut strings: BTreeSet<String> = BTreeSet::new();
    for c in chars {
        for form in stored(&mut analyzer, c.encode_utf8(&mut [0; 4])) {
            let mut it = form.chars();
            match (it.next(), it.next()) {
                (Some(one), None) => singles.push(ClassUnicodeRange::new(one, one)),
                _ => {
                    strings.insert(form);
                }
            }
        }
    }
    let mut alternatives = Vec::new();
    if !singles.is_empty() {
        alternatives.push(Hir::class(Class::Unicode(ClassUnicode::new(singles))));
    }
    alternatives.extend(strings.into_iter().map(|s| Hir::literal(s.into_bytes())));
    Hir::alternation(alternatives)
}

/// A repeated step: one piece when it repeats a word step or a gap, else an open piece
/// holding what one round of it needs when it must run at least once.
fn repetition_piece(rep: &Repetition) -> Piece {
    let mut inner = Vec::new();
    push_pieces(&rep.sub, &mut inner);
    let may_skip = rep.min == 0;
    if let Some((word, nullable)) = all_word(&inner) {
        return Piece::Word(
            Hir::repetition(repeat(word, rep.min, rep.max)),
            nullable || may_skip,
        );
    }
    if let Some(nullable) = all_gap(&inner) {
        return Piece::Gap {
            nullable: nullable || may_skip,
        };
    }
    Piece::Open(if may_skip {
        Need::Any
    } else {
        needs_of(&inner)
    })
}

/// An alternation inside a concatenation: one word step when every branch is one, else an
/// open piece needing what one of the branches needs.
fn alternation_piece(branches: &[Hir]) -> Piece {
    let pieces: Vec<Vec<Piece>> = branches
        .iter()
        .map(|b| {
            let mut p = Vec::new();
            push_pieces(b, &mut p);
            p
        })
        .collect();
    let words: Option<Vec<(Hir, bool)>> = pieces.iter().map(|p| all_word(p)).collect();
    if let Some(words) = words {
        let nullable = words.iter().any(|(_, n)| *n);
        return Piece::Word(
            Hir::alternation(words.into_iter().map(|(h, _)| h).collect()),
            nullable,
        );
    }
    let gaps: Option<Vec<bool>> = pieces.iter().map(|p| all_gap(p)).collect();
    if let Some(gaps) = gaps {
        return Piece::Gap {
            nullable: gaps.into_iter().any(|n| n),
        };
    }
    Piece::Branches(pieces)
}

/// The pieces as one word step, when they are all word steps (none: the empty word).
fn all_word(pieces: &[Piece]) -> Option<(Hir, bool)> {
    let mut parts = Vec::new();
    let mut nullable = true;
    for p in pieces {
        let Piece::Word(h, n) = p else { return None };
        parts.push(h.clone());
        nullable &= *n;
    }
    Some((Hir::concat(parts), nullable))
}

/// Whether the pieces are all gaps (and if so, whether they may all match nothing).
fn all_gap(pieces: &[Piece]) -> Option<bool> {
    if pieces.is_empty() {
        return None;
    }
    let mut nullable = true;
    for p in pieces {
        let Piece::Gap { nullable: n } = p else {
            return None;
        };
        nullable &= *n;
    }
    Some(nullable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prop_oneof;
    use proptest::strategy::Strategy;

    fn need_of(p: &str) -> Need {
        compile(p, false).expect("valid").need
    }

    fn term(re: &str) -> Need {
        Need::Term(re.into())
    }

    fn words(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|w| w.to_string()).collect()
    }

    /// `pattern` needs what each of `yes` holds and what none of `no` holds.
    fn check(pattern: &str, yes: &[&[&str]], no: &[&[&str]]) {
        let need = need_of(pattern);
        for w in yes {
            assert!(need.admits(&words(w)), "{pattern} admits {w:?}: {need:?}");
        }
        for w in no {
            assert!(
                !need.admits(&words(w)),
                "{pattern} rules out {w:?}: {need:?}"
            );
        }
    }

    #[test]
    fn words_closed_by_gaps_and_boundaries_are_whole_terms() {
        check(
            r"\bGB\d{9}\b",
            &[&["gb123456789"], &["gb٣٣٣٣٣٣٣٣٣"]],
            &[
                &["xgb123456789"],
                &["gb1234567890"],
                &["gb12345678"],
                &["gb", "123456789"],
            ],
        );
        // One whole word: looked up from its first letters, not by reading every word.
        let Need::Term(t) = need_of(r"\bGB\d{9}\b") else {
            panic!("one term")
        };
        assert!(t.starts_with("(?:(?:gb)"), "{t}");
        // An optional count or run of word characters stays optional.
        check(r"(?:a+)?b", &[&["b"], &["aab"]], &[&["c"]]);
        check(
            r"\b(?:[A-Z]{2})?\d{9}\b",
            &[&["123456789"], &["gb123456789"]],
            &[&["12345678"], &["x123456789"]],
        );
        check(
            r"INV-\d{6}",
            &[&["xinv", "123456abc"], &["inv", "123456"]],
            &[&["inv"], &["invx", "123456"], &["inv", "x123456"]],
        );
        check(
            r"^Date: (\d{4})-(\d{2})",
            &[&["date", "2021", "03x"]],
            &[
                &["xdate", "2021", "03"],
                &["date", "12021", "03"],
                &["date", "x2021", "03"],
            ],
        );
    }

    #[test]
    fn what_cannot_be_narrowed_needs_every_text() {
        for p in [
            r".*",
            r"\d*",
            r"[^a]+",
            r"\W+",
            r"a?",
            r"(?-u:\w)+",
            "x|.*",
            r"[\w.]+@[\w.]+",
        ] {
            assert_eq!(need_of(p), Need::Any, "{p}");
        }
    }

    #[test]
    fn accents_fold_and_case_lowers_as_the_index_stores_them() {
        check(r"\bCafé\b", &[&["cafe"]], &[&["cafes"], &["café"]]);
        check(r"\bStraße\b", &[&["strasse"]], &[&["straße"], &["strase"]]);
        check(r"(?i)\bSTRASSE\b", &[&["strasse"]], &[&["strass"]]);
    }

    #[test]
    fn cjk_runs_need_their_pairs() {
        assert_eq!(
            need_of("営業時間"),
            Need::And(vec![term("営業"), term("業時"), term("時間")])
        );
        assert_eq!(need_of("時"), Need::Any);
    }

    #[test]
    fn alternations_need_one_branch() {
        check(
            r"\b(?:GB|DE)\d{9}\b",
            &[&["de123456789"], &["gb123456789"]],
            &[&["fr123456789"]],
        );
        check(
            r"\bfoo\b|\bbar\b",
            &[&["bar"], &["foo"]],
            &[&["baz"], &["foobar"]],
        );
        assert!(matches!(need_of(r"\bfoo\b|\bbar\b"), Need::Or(_)));
    }

    /// The words the index stores for `text`.
    fn stored(text: &str) -> BTreeSet<String> {
        super::stored(&mut analyzer(), text).into_iter().collect()
    }

    #[test]
    fn numbers_that_are_not_digits_end_words_so_a_boundary_is_an_edge() {
        // ½ and ² are numbers but not word characters: `\b` sits between them and a digit,
        // and the index cuts its words there too.
        let p = compile(r"\b\d{4}\b", false).unwrap();
        for text in ["x½1234", "1234²", "ab1234"] {
            let matched = p.regex.is_match(text);
            assert!(!matched || p.need.admits(&stored(text)), "{text}");
        }
        assert!(p.need.admits(&stored("x½1234")));
    }

    const TEXT_CHARS: &[char] = &[
        'a', 'b', 'G', 'B', 'é', 'É', 'ß', 'Σ', 'σ', 'ς', 'İ', 'ﬁ', '1', '2', '9', '０', '٣', '-',
        '/', ' ', '.', '_', '½', '²', '営', '業', '時', '間', 'ｱ', '\n', '\u{301}', '🎉',
    ];

    const ATOMS: &[&str] = &[
        "a",
        "b",
        "G",
        "B",
        "GB",
        "é",
        "É",
        "ß",
        "Σ",
        "ς",
        "1",
        "9",
        "12",
        "-",
        "/",
        " ",
        r"\.",
        "_",
        "½",
        "²",
        "営業",
        "時間",
        "営",
        "ｱ",
        r"\d",
        r"[A-Z]",
        r"[a-z]",
        r"\w",
        r"\W",
        r"\s",
        r"\S",
        ".",
        "[0-9]",
        r"\p{L}",
        r"\p{Greek}",
        "[^-]",
        "[é-ü]",
        r"[\d-]",
        "[a_]",
        r"\b",
        "^",
        "$",
        r"\B",
        r"(?-u:\b)",
        r"(?i)b",
        "(?i:ß)",
    ];

    fn pattern() -> impl Strategy<Value = String> {
        let atom = proptest::sample::select(ATOMS).prop_map(str::to_string);
        let leaf = (
            atom,
            proptest::sample::select(&["", "?", "*", "+", "{2}", "{1,3}"][..]),
        )
            .prop_map(|(a, r)| {
                if r.is_empty() || a.len() <= 2 {
                    format!("{a}{r}")
                } else {
                    format!("(?:{a}){r}")
                }
            });
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 1..4).prop_map(|v| v.concat()),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("(?:{a}|{b})")),
                (
                    inner.clone(),
                    proptest::sample::select(&["?", "*", "+", "{2}"][..])
                )
                    .prop_map(|(a, r)| format!("({a}){r}")),
                inner.prop_map(|a| format!("(?P<g>{a})")),
            ]
        })
    }

    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(TEXT_CHARS), 0..24)
            .prop_map(|cs| cs.into_iter().collect())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 400, ..Default::default() })]

        /// The index never rules out a text the pattern matches: every matching text holds
        /// what the pattern needs.
        #[test]
        fn a_matching_text_always_holds_what_the_pattern_needs(
            source in pattern(),
            texts in proptest::collection::vec(text(), 1..24),
            ignore_case in proptest::prelude::any::<bool>(),
        ) {
            let Ok(p) = compile(&source, ignore_case) else { return Ok(()) };
            for text in &texts {
                let matched = text.lines().any(|l| p.regex.is_match(l));
                proptest::prop_assert!(
                    !matched || p.need.admits(&stored(text)),
                    "{source:?} matches {text:?} (words {:?}) but needs {:?}",
                    stored(text),
                    p.need
                );
            }
        }
    }
}
