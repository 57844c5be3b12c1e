//! Search expressions (`POST resources/search`): the slice of Cloudinary's Lucene-like language
//! the pipeline and its operators write, parsed into a predicate on assets.
//!
//! ```text
//! expression := or
//! or         := and (("OR" | "||") and)*
//! and        := unary (("AND" | "&&")? unary)*     adjacent terms are ANDed
//! unary      := ("NOT" | "-" | "!") unary | "+" unary | "(" or ")" | term
//! term       := field op value
//! op         := ":" | "=" | ">" | ">=" | "<" | "<="  (":>" and the like as ">")
//! value      := "quoted text" | bare text            a backslash escapes the next character
//! ```
//!
//! Fields: `resource_type`, `type`, `public_id`, `folder`, `tags`, `format` (`:` and `=` both
//! exact; a value ending in an unescaped `*` is a prefix, and `folder:f/*` is the folder `f`
//! and its subfolders), `created_at` and `uploaded_at` (compared with an RFC 3339 time or a
//! date), `bytes`, `width` and `height` (compared with a number). Operators are ALL CAPS, as
//! Cloudinary requires. Anything else (free text, ranges, relative dates, other fields) is
//! refused with a reason rather than answered differently from Cloudinary.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Asset;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    /// The empty expression: every asset.
    All,
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Term(Term),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextField {
    ResourceType,
    Type,
    PublicId,
    Folder,
    Tags,
    Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumberField {
    Bytes,
    Width,
    Height,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn holds<T: Ord>(self, left: T, right: T) -> bool {
        match self {
            Op::Eq => left == right,
            Op::Gt => left > right,
            Op::Ge => left >= right,
            Op::Lt => left < right,
            Op::Le => left <= right,
        }
    }
}

/// One field's condition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Term {
    /// Equal to `value`, or starting with it when `prefix`.
    Text {
        field: TextField,
        value: String,
        prefix: bool,
    },
    Date {
        uploaded: bool,
        op: Op,
        at: OffsetDateTime,
    },
    Number {
        field: NumberField,
        op: Op,
        value: u64,
    },
}

impl Expr {
    pub(crate) fn matches(&self, asset: &Asset) -> bool {
        match self {
            Expr::All => true,
            Expr::And(a, b) => a.matches(asset) && b.matches(asset),
            Expr::Or(a, b) => a.matches(asset) || b.matches(asset),
            Expr::Not(e) => !e.matches(asset),
            Expr::Term(t) => t.matches(asset),
        }
    }
}

impl Term {
    fn matches(&self, asset: &Asset) -> bool {
        match self {
            Term::Text {
                field,
                value,
                prefix,
            } => {
                let like = |actual: &str| {
                    if *prefix {
                        actual.starts_with(value.as_str())
                    } else {
                        actual == value
                    }
                };
                match field {
                    // Every asset the emulator holds is an image.
                    TextField::ResourceType => like("image"),
                    TextField::Type => like(&asset.delivery_type),
                    TextField::PublicId => like(&asset.public_id),
                    TextField::Tags => asset.tags.iter().any(|t| like(t)),
                    TextField::Format => like(&asset.format.to_ascii_lowercase()),
                    // `folder:f/*` is `f` itself as well as what lies under it.
                    TextField::Folder => {
                        let folder = asset.folder();
                        like(folder)
                            || (*prefix
                                && value
                                    .strip_suffix('/')
                                    .is_some_and(|base| !base.is_empty() && folder == base))
                    }
                }
            }
            Term::Date { uploaded, op, at } => {
                let field = match (&asset.uploaded_at, uploaded) {
                    (Some(u), true) => u,
                    _ => &asset.created_at,
                };
                OffsetDateTime::parse(field, &Rfc3339).is_ok_and(|when| op.holds(when, *at))
            }
            Term::Number { field, op, value } => {
                let actual = match field {
                    NumberField::Bytes => asset.bytes,
                    NumberField::Width => asset.width,
                    NumberField::Height => asset.height,
                };
                op.holds(actual, *value)
            }
        }
    }
}

/// Parses `expression`; `Err` says what is wrong and where (1-based character position).
pub(crate) fn parse(expression: &str) -> Result<Expr, String> {
    let mut p = Parser {
        chars: expression.chars().collect(),
        pos: 0,
    };
    p.skip_space();
    if p.at_end() {
        return Ok(Expr::All);
    }
    let e = p.or()?;
    p.skip_space();
    if !p.at_end() {
        return Err(p.error("unexpected ')'"));
    }
    Ok(e)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

/// A value as written: its text (escapes resolved, a trailing wildcard removed) and whether
/// it ended in an unescaped `*`.
struct Value {
    text: String,
    prefix: bool,
    quoted: bool,
}

impl Parser {
    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn error(&self, what: &str) -> String {
        format!("{what} at character {}", self.pos + 1)
    }

    /// Consumes `word` when it stands alone here (followed by the end, a space or a
    /// parenthesis), as an operator does.
    fn word(&mut self, word: &str) -> bool {
        let n = word.chars().count();
        let here: String = self.chars.iter().skip(self.pos).take(n).collect();
        let ends = self
            .peek_at(n)
            .is_none_or(|c| c.is_whitespace() || c == '(' || c == ')');
        if here == word && ends {
            self.pos += n;
            return true;
        }
        false
    }

    fn symbol(&mut self, symbol: &str) -> bool {
        let n = symbol.chars().count();
        let here: String = self.chars.iter().skip(self.pos).take(n).collect();
        if here == symbol {
            self.pos += n;
            return true;
        }
        false
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        loop {
            self.skip_space();
            if self.word("OR") || self.symbol("||") {
                let right = self.and()?;
                left = Expr::Or(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        loop {
            self.skip_space();
            let start = self.pos;
            if self.at_end() || self.peek() == Some(')') || self.word("OR") || self.symbol("||") {
                self.pos = start;
                return Ok(left);
            }
            // An explicit AND, or none: adjacent terms are both required.
            let _explicit = self.word("AND") || self.symbol("&&");
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        self.skip_space();
        if self.at_end() {
            return Err(self.error("the expression ends where a term was expected"));
        }
        if self.word("NOT") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        let negation = matches!(self.peek(), Some('-' | '!'));
        let required = self.peek() == Some('+');
        if (negation || required) && self.peek_at(1).is_some_and(|c| !c.is_whitespace()) {
            self.pos += 1;
            let e = self.unary()?;
            return Ok(if negation { Expr::Not(Box::new(e)) } else { e });
        }
        if self.symbol("(") {
            let e = self.or()?;
            self.skip_space();
            if !self.symbol(")") {
                return Err(self.error("missing ')'"));
            }
            return Ok(e);
        }
        let start = self.pos;
        if self.word("AND") || self.word("OR") {
            self.pos = start;
            return Err(self.error("an operator where a term was expected"));
        }
        self.term().map(Expr::Term)
    }

    fn term(&mut self) -> Result<Term, String> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            self.pos += 1;
        }
        let field: String = self.chars[start..self.pos].iter().collect();
        // `:` and `=` are equality, and may come before a comparison (`bytes:>100`).
        let eq = self.symbol(":") || self.symbol("=");
        let op = if self.symbol(">=") {
            Op::Ge
        } else if self.symbol(">") {
            Op::Gt
        } else if self.symbol("<=") {
            Op::Le
        } else if self.symbol("<") {
            Op::Lt
        } else if eq {
            Op::Eq
        } else {
            self.pos = start;
            return Err(self.error(
                "a term without a field (free text is not supported here: write field:value)",
            ));
        };
        if field.is_empty() {
            self.pos = start;
            return Err(self.error("a term without a field name"));
        }
        let value_at = self.pos;
        let value = self.value()?;
        let at_value = |what: &str| format!("{what} at character {}", value_at + 1);
        let text_field = match field.as_str() {
            "resource_type" => Some(TextField::ResourceType),
            "type" => Some(TextField::Type),
            "public_id" => Some(TextField::PublicId),
            "folder" => Some(TextField::Folder),
            "tags" => Some(TextField::Tags),
            "format" => Some(TextField::Format),
            _ => None,
        };
        if let Some(text_field) = text_field {
            if op != Op::Eq {
                return Err(at_value(&format!("{field} is compared with : or = only")));
            }
            if value.text.is_empty() && !value.prefix && !value.quoted {
                return Err(at_value(&format!("{field} has no value")));
            }
            let text = if text_field == TextField::Format {
                value.text.to_ascii_lowercase()
            } else {
                value.text
            };
            return Ok(Term::Text {
                field: text_field,
                value: text,
                prefix: value.prefix,
            });
        }
        if value.prefix {
            return Err(at_value(&format!("{field} takes no wildcard")));
        }
        match field.as_str() {
            "created_at" | "uploaded_at" => Ok(Term::Date {
                uploaded: field == "uploaded_at",
                op,
                at: parse_time(&value.text).ok_or_else(|| {
                    at_value(&format!(
                        "{field} is compared with an RFC 3339 time or a date (relative dates are \
                         not supported here), not {:?}",
                        value.text
                    ))
                })?,
            }),
            "bytes" | "width" | "height" => Ok(Term::Number {
                field: match field.as_str() {
                    "bytes" => NumberField::Bytes,
                    "width" => NumberField::Width,
                    _ => NumberField::Height,
                },
                op,
                value: value.text.parse().map_err(|_| {
                    at_value(&format!(
                        "{field} is compared with a whole number, not {:?}",
                        value.text
                    ))
                })?,
            }),
            _ => {
                self.pos = start;
                Err(self.error(&format!(
                    "unknown or unsupported field {field:?} (supported: resource_type, type, \
                     public_id, folder, tags, format, created_at, uploaded_at, bytes, width, height)"
                )))
            }
        }
    }

    /// A quoted or bare value. In both, a backslash makes the next character literal, and an
    /// unescaped `*` is a wildcard, supported at the end only (a prefix).
    fn value(&mut self) -> Result<Value, String> {
        let opened = self.pos;
        let quoted = self.symbol("\"");
        if !quoted && matches!(self.peek(), Some('[' | '{')) {
            return Err(self.error("ranges ([a TO b]) are not supported here"));
        }
        let mut text = String::new();
        let mut wildcards = Vec::new();
        let mut ends_in_wildcard = false;
        loop {
            let Some(c) = self.peek() else {
                if quoted {
                    return Err(format!("unclosed quote at character {}", opened + 1));
                }
                break;
            };
            if quoted && c == '"' {
                self.pos += 1;
                break;
            }
            if !quoted && (c.is_whitespace() || c == '(' || c == ')') {
                break;
            }
            if !quoted && c == '"' {
                return Err(self.error("a quote inside a bare value (escape it with \\)"));
            }
            self.pos += 1;
            ends_in_wildcard = c == '*';
            match c {
                '\\' => {
                    let Some(escaped) = self.peek() else {
                        return Err(self.error("a backslash at the end"));
                    };
                    self.pos += 1;
                    text.push(escaped);
                }
                '*' => wildcards.push(self.pos),
                c => text.push(c),
            }
        }
        let prefix = match wildcards.as_slice() {
            [] => false,
            [_] if ends_in_wildcard => true,
            [at, ..] => {
                return Err(format!(
                    "a wildcard * is supported at the end of a value only, at character {at}"
                ));
            }
        };
        if !quoted && text.is_empty() && !prefix {
            return Err(self.error("a missing value"));
        }
        Ok(Value {
            text,
            prefix,
            quoted,
        })
    }
}

/// An RFC 3339 time, or a date (its midnight, UTC).
fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok().or_else(|| {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(text, &format)
            .ok()
            .map(|d| d.midnight().assume_utc())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(public_id: &str, delivery_type: &str, format: &str, tags: &[&str]) -> Asset {
        Asset {
            public_id: public_id.into(),
            delivery_type: delivery_type.into(),
            format: format.into(),
            bytes: 5_000,
            width: 800,
            height: 600,
            created_at: "2021-01-01T00:10:00Z".into(),
            text: None,
            locale: None,
            version: 1,
            uploaded_at: None,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn assets() -> Vec<Asset> {
        let mut later = asset("inv/2021/b c", "private", "png", &["receipt"]);
        later.created_at = "2021-01-01T00:20:00Z".into();
        later.uploaded_at = Some("2021-06-01T00:00:00Z".into());
        vec![
            asset("inv/a", "upload", "jpg", &["invoice"]),
            later,
            asset("inventory", "upload", "JPG", &["invoice", "needs review"]),
            asset("root", "authenticated", "webp", &[]),
            asset("a*b/x\"y", "upload", "png", &[]),
        ]
    }

    /// The public_ids an expression matches, in corpus order.
    fn ids(expression: &str) -> Vec<String> {
        let e = parse(expression).unwrap_or_else(|err| panic!("{expression:?}: {err}"));
        assets()
            .into_iter()
            .filter(|a| e.matches(a))
            .map(|a| a.public_id)
            .collect()
    }

    #[test]
    fn fields_match_exactly_with_colon_or_equals() {
        assert_eq!(ids(""), ids("resource_type:image"));
        assert_eq!(ids("   ").len(), 5);
        assert!(ids("resource_type:video").is_empty());
        assert_eq!(ids("type:private"), ["inv/2021/b c"]);
        assert_eq!(ids("type=private"), ids("type:private"));
        assert_eq!(ids("public_id:inv/a"), ["inv/a"]);
        assert_eq!(ids("public_id:inv"), Vec::<String>::new());
        assert_eq!(ids("tags:invoice"), ["inv/a", "inventory"]);
        assert_eq!(ids("tags=invoice"), ids("tags:invoice"));
        assert_eq!(
            ids("tags:invo"),
            Vec::<String>::new(),
            "a tag is matched whole"
        );
        assert_eq!(
            ids("format:jpg"),
            ["inv/a", "inventory"],
            "formats ignore case"
        );
        assert_eq!(ids("folder:inv"), ["inv/a"]);
        assert_eq!(ids("folder:\"\""), ["inventory", "root"], "the root folder");
    }

    #[test]
    fn a_trailing_wildcard_is_a_prefix_and_folder_slash_star_takes_subfolders() {
        assert_eq!(
            ids("public_id:inv*"),
            ["inv/a", "inv/2021/b c", "inventory"]
        );
        assert_eq!(ids("public_id:inv/*"), ["inv/a", "inv/2021/b c"]);
        assert_eq!(ids("folder:inv/*"), ["inv/a", "inv/2021/b c"]);
        assert_eq!(ids("folder:inv/2021/*"), ["inv/2021/b c"]);
        assert_eq!(ids("folder:in*"), ["inv/a", "inv/2021/b c"]);
        assert_eq!(ids("tags:needs*"), ["inventory"]);
        let err = parse("public_id:a*b").unwrap_err();
        assert!(
            err.contains("end of a value only") && err.contains("character 12"),
            "{err}"
        );
    }

    #[test]
    fn quotes_and_backslashes_make_values_literal() {
        assert_eq!(ids("public_id:\"inv/2021/b c\""), ["inv/2021/b c"]);
        assert_eq!(ids("public_id:inv/2021/b\\ c"), ["inv/2021/b c"]);
        assert_eq!(ids("tags:\"needs review\""), ["inventory"]);
        assert_eq!(ids("tags:needs\\ review"), ["inventory"]);
        // An escaped star is a star, an unescaped one after it the prefix.
        assert_eq!(ids("public_id:a\\*b/*"), ["a*b/x\"y"]);
        assert_eq!(ids("public_id:\"a\\*b/x\\\"y\""), ["a*b/x\"y"]);
        assert_eq!(
            ids("folder:\"inv/2021/*\""),
            ["inv/2021/b c"],
            "quoted, * stays a wildcard"
        );
        // What the scoped lister writes: escaped values, OR groups, a parenthesised expression.
        assert_eq!(
            ids(
                "resource_type:image AND (type:upload OR type:private OR type:authenticated) \
                 AND public_id:inv/* AND tags:receipt"
            ),
            ["inv/2021/b c"]
        );
        assert_eq!(
            ids(
                "resource_type:image AND type:upload AND (format:jpg OR format:png) AND (width>700)"
            ),
            ["inv/a", "inventory", "a*b/x\"y"]
        );
    }

    #[test]
    fn and_binds_tighter_than_or_and_not_tightest() {
        assert_eq!(
            ids("type:private OR tags:invoice AND format:png"),
            ["inv/2021/b c"]
        );
        assert_eq!(
            ids("(type:private OR tags:invoice) AND format:jpg"),
            ["inv/a", "inventory"]
        );
        assert_eq!(
            ids("tags:invoice format:jpg"),
            ids("tags:invoice AND format:jpg")
        );
        assert_eq!(ids("tags:invoice && -public_id:inv/a"), ["inventory"]);
        assert_eq!(ids("NOT folder:inv/* AND NOT type:upload"), ["root"]);
        assert_eq!(ids("!(type:upload || type:private)"), ["root"]);
        assert_eq!(ids("+tags:receipt"), ["inv/2021/b c"]);
        assert_eq!(ids("((((type:authenticated))))"), ["root"]);
    }

    #[test]
    fn dates_and_numbers_compare() {
        assert_eq!(ids("created_at>\"2021-01-01T00:15:00Z\""), ["inv/2021/b c"]);
        assert_eq!(ids("created_at>=2021-01-01T00:10:00Z").len(), 5);
        assert_eq!(ids("created_at<2021-01-01T00:10:00Z").len(), 0);
        assert_eq!(ids("created_at:>2021-01-01T00:15:00Z"), ["inv/2021/b c"]);
        // uploaded_at is the latest upload's time, created_at the first's.
        assert_eq!(ids("uploaded_at>=\"2021-05-01\""), ["inv/2021/b c"]);
        assert_eq!(ids("created_at>=\"2021-05-01\""), Vec::<String>::new());
        assert_eq!(ids("uploaded_at<=2021-01-01T00:10:00Z").len(), 4);
        assert_eq!(ids("bytes=5000").len(), 5);
        assert_eq!(ids("width>800 OR height<600").len(), 0);
    }

    #[test]
    fn errors_say_what_and_where() {
        for (expression, what, at) in [
            ("tags:\"open", "unclosed quote", 6),
            ("(tags:a", "missing ')'", 8),
            ("tags:a)", "unexpected ')'", 7),
            ("cats", "without a field", 1),
            ("tags:a AND", "ends where a term", 11),
            ("tags:a AND OR tags:b", "operator where a term", 12),
            ("colour:red", "unknown or unsupported field \"colour\"", 1),
            (
                "tags:a OR context.key=v",
                "unsupported field \"context.key\"",
                11,
            ),
            ("public_id>b", "compared with : or = only", 11),
            ("created_at>1d", "relative dates", 12),
            ("bytes>1mb", "whole number", 7),
            ("width:[100 TO 200]", "ranges", 7),
            ("tags:", "missing value", 6),
            ("tags:a\"b", "quote inside a bare value", 7),
            (":x", "without a field name", 1),
        ] {
            let err = parse(expression).expect_err(expression);
            assert!(err.contains(what), "{expression:?}: {err}");
            assert!(
                err.ends_with(&format!("character {at}")),
                "{expression:?}: {err}"
            );
        }
        assert!(
            parse("tags:a and tags:b").is_err(),
            "operators are ALL CAPS"
        );
    }
}
