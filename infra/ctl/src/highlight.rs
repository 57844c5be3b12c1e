//! Snippets with their matches marked: the words of a text that the query's terms found (the
//! terms fuzzy and prefix words were expanded to included), merged where they overlap (CJK
//! pieces do) and cut on character boundaries, for every script.

use std::collections::HashSet;

use tantivy::tokenizer::{TextAnalyzer, TokenStream};

/// At most this many characters of text around the best matches.
pub const SNIPPET_CHARS: usize = 160;

/// Characters of text kept before the first match of a snippet.
const LEAD_CHARS: usize = 24;

/// The snippet of `text` with the most matches of `terms` (indexed forms, as `analyzer` makes
/// them), and the byte ranges of the snippet that matched: sorted, apart, on character
/// boundaries. Without a match, the text's beginning.
pub fn snippet(
    text: &str,
    terms: &HashSet<String>,
    analyzer: &mut TextAnalyzer,
) -> (String, Vec<(usize, usize)>) {
    let found = merged(matches(text, terms, analyzer));
    // Every character boundary of the text, the end included.
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let char_at = |byte: usize| bounds.partition_point(|&b| b < byte);
    let Some(start) = best_start(text, &found, &bounds, char_at) else {
        let end = bounds[SNIPPET_CHARS.min(bounds.len() - 1)];
        return (text[..end].to_string(), Vec::new());
    };
    let end = bounds[(char_at(start) + SNIPPET_CHARS).min(bounds.len() - 1)];
    let ranges = found
        .iter()
        .filter(|&&(from, to)| from < end && to > start)
        .map(|&(from, to)| (from.max(start) - start, to.min(end) - start))
        .collect();
    (text[start..end].to_string(), ranges)
}

/// Byte ranges of the words of `text` that are among `terms`, in order.
fn matches(
    text: &str,
    terms: &HashSet<String>,
    analyzer: &mut TextAnalyzer,
) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    if terms.is_empty() {
        return found;
    }
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        let t = stream.token();
        if terms.contains(&t.text) && text.is_char_boundary(t.offset_from) {
            found.push((t.offset_from, t.offset_to));
        }
    }
    found.sort_unstable();
    found
}

/// Overlapping and touching ranges as one.
fn merged(ranges: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    for (from, to) in ranges {
        match out.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => out.push((from, to)),
        }
    }
    out
}

/// Where the snippet holding the most matches starts (a byte offset): a little before its
/// first match (just after a space when that lead has one), or the text's beginning.
fn best_start(
    text: &str,
    found: &[(usize, usize)],
    bounds: &[usize],
    char_at: impl Fn(usize) -> usize,
) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, &(from, _)) in found.iter().enumerate() {
        let lead = char_at(from).saturating_sub(LEAD_CHARS);
        let last = lead + SNIPPET_CHARS;
        let inside = found[i..]
            .iter()
            .take_while(|&&(_, to)| char_at(to) <= last)
            .count();
        if best.is_none_or(|(n, _)| inside > n) {
            best = Some((inside, i));
        }
    }
    let (_, i) = best?;
    let first = found[i].0;
    if char_at(first) <= LEAD_CHARS {
        return Some(0);
    }
    let lead = bounds[char_at(first) - LEAD_CHARS];
    let start = text[lead..first]
        .char_indices()
        .find(|(_, c)| c.is_whitespace())
        .map_or(lead, |(at, c)| lead + at + c.len_utf8());
    Some(start)
}

/// `text` with each of `ranges` (byte ranges, in order) between `open` and `close`, on one
/// line, for a terminal: runs of whitespace (line breaks and tabs included) become one space,
/// and the text's other control characters are written out (`\x1b`, see
/// [`crate::terminal::escaped`]), while `open` and `close` are written as given, so marks that
/// are terminal escapes themselves still work. Ranges out of order or off a character boundary
/// are not marked.
pub fn marked(text: &str, ranges: &[(usize, usize)], open: &str, close: &str) -> String {
    fn shown(part: &str) -> std::borrow::Cow<'_, str> {
        crate::terminal::escaped_except(part, char::is_whitespace)
    }
    let mut out = String::new();
    let mut at = 0;
    for &(from, to) in ranges {
        let (Some(before), Some(inside)) = (text.get(at..from), text.get(from..to)) else {
            continue;
        };
        out.push_str(&shown(before));
        out.push_str(open);
        out.push_str(&shown(inside));
        out.push_str(close);
        at = to;
    }
    out.push_str(&shown(text.get(at..).unwrap_or_default()));
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::marked;

    #[test]
    fn the_text_s_escapes_are_written_out_and_the_marks_are_kept() {
        let text = "pay\x1b[2J now \u{9b}31mtotal\x07\nline two";
        let from = text.find("total").unwrap();
        let shown = marked(text, &[(from, from + 5)], "\x1b[1m", "\x1b[0m");
        assert_eq!(
            shown,
            "pay\\x1b[2J now \\u{9b}31m\x1b[1mtotal\x1b[0m\\x07 line two"
        );
    }

    #[test]
    fn whitespace_still_folds_to_one_space() {
        assert_eq!(marked("a\t\r\n b\u{85}c", &[], "[", "]"), "a b c");
    }
}
