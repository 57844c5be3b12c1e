//! Stored text shown on a terminal. Public ids and OCR'd text come from whoever uploaded the
//! images: a control character in them would reach the operator's terminal as a command (ESC
//! and the C1 CSI start escape sequences that clear the screen, move the cursor, retitle the
//! window or rewrite what was printed before). What the human formats print of them has every
//! control character written out instead (`\x1b`, `\u{9b}`, `\t`); the tool's own separators
//! and highlight marks are written around the escaped text, so they keep working. JSON output
//! keeps the exact values: JSON escapes C0 itself, and DEL and C1, which serde_json writes
//! raw, are written as `\u` escapes, which decode to the same strings.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every control character (C0, DEL and C1: Unicode's `Cc`) written out: `\t`, `\n`, `\r` by name, the other C0
/// characters and DEL as `\xHH`, C1 as `\u{HH}`. Tabs and line breaks of the data are escaped
/// too: the human formats use them as their own separators (`key<TAB>line`, one record a
/// line), so a record stays one line of the same fields whatever its text holds.
pub fn escaped(text: &str) -> Cow<'_, str> {
    escaped_except(text, |_| false)
}

/// `text` with the control characters other than those `keep` keeps written out (see
/// [`escaped`]).
pub fn escaped_except(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && !keep(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !c.is_control() || keep(c) => out.push(c),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 => {
                let _infallible = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _infallible = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// JSON as serde_json writes it, with DEL and C1 characters as `\u007f`…`\u009f` escapes
/// (serde_json escapes only C0): the same value to a JSON reader, nothing a terminal acts on.
/// Outside strings JSON holds only ASCII punctuation, digits and letters, so every such
/// character is inside a string, where a `\u` escape is valid.
pub fn json_safe(json: String) -> String {
    if !json.chars().any(is_control_above_ascii) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if is_control_above_ascii(c) {
            let _infallible = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// DEL and the C1 controls: what serde_json leaves raw.
fn is_control_above_ascii(c: char) -> bool {
    matches!(c, '\u{7f}'..='\u{9f}')
}

/// One value as a line of JSON for standard output (see [`json_safe`]).
pub fn json_line(value: &impl serde::Serialize) -> serde_json::Result<String> {
    serde_json::to_string(value).map(json_safe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_c0_del_and_c1_character_is_written_out() {
        for code in (0u32..0x20).chain([0x7f]).chain(0x80..0xa0) {
            let c = char::from_u32(code).unwrap();
            let shown = escaped(&format!("a{c}b")).into_owned();
            assert!(!shown.chars().any(char::is_control), "{code:#x}: {shown:?}");
            assert!(
                shown.starts_with("a\\") && shown.ends_with('b'),
                "{shown:?}"
            );
        }
        assert_eq!(escaped("\x1b[2J"), "\\x1b[2J");
        assert_eq!(escaped("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escaped("\x00\x07\x7f"), "\\x00\\x07\\x7f");
        assert_eq!(escaped("a\tb\nc\rd"), "a\\tb\\nc\\rd");
        assert_eq!(escaped("\u{85}"), "\\u{85}");
    }

    #[test]
    fn printable_text_is_unchanged_and_not_copied() {
        for text in [
            "",
            "plain",
            "Café crème — 3,50 €",
            "営業時間 🎉",
            "a\\x1b",
            "\u{a0}\u{2028}",
        ] {
            assert!(
                matches!(escaped(text), Cow::Borrowed(t) if t == text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn kept_characters_pass_through() {
        assert_eq!(escaped_except("a\tb\x1bc", |c| c == '\t'), "a\tb\\x1bc");
    }

    #[test]
    fn json_keeps_the_values_and_escapes_what_serde_json_leaves_raw() {
        let value = serde_json::json!({"key": "a\x1b[2J\u{7f}\u{9b}é", "n": 1});
        let line = json_line(&value).unwrap();
        assert!(!line.chars().any(char::is_control), "{line}");
        assert!(line.contains("\\u001b[2J\\u007f\\u009bé"), "{line}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, value);
        let plain = serde_json::to_string(&serde_json::json!({"a": "é"})).unwrap();
        assert_eq!(json_safe(plain.clone()), plain);
    }
}
