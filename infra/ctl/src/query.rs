//! The search query language, read by hand so that whatever people type either means what it
//! says or is refused with the reason and how to write it:
//! - words: all must match (`invoice 2021`); a word is anything between spaces, so `9:00`,
//!   `GB-123`, `a@b.com` and `営業時間` are searched as the text the OCR read (each is the phrase
//!   of its indexed pieces), and a colon is never a field;
//! - `"a phrase"`, `word*` (words starting with it), `AND`, `OR`, `NOT`, `+word`, `-word`,
//!   parentheses. `AND` binds closer than `OR`: `vat number OR tax` is `(vat number) OR tax`.
//!
//! An operator where none can be (`OR` first, `NOT` last) is the word itself. Unbalanced
//! quotes and parentheses are errors, each saying where and how to fix it.

use std::fmt;

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A word as typed (analyzed into indexed terms when the query is built); `prefix`: typed
    /// with a trailing `*`.
    Word { text: String, prefix: bool },
    /// A quoted phrase.
    Phrase(String),
    /// Clauses that must all hold (`exclude`: must not).
    All(Vec<Clause>),
    /// At least one must hold.
    Any(Vec<Node>),
}

/// One member of [`Node::All`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    pub exclude: bool,
    pub node: Node,
}

/// Why a query cannot be read, with how to write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub message: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for QueryError {}

fn error(message: String) -> QueryError {
    QueryError { message }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Lexeme {
    Open(usize),
    Close(usize),
    Phrase(String),
    Word(String),
    And,
    Or,
    Not,
    /// `-` or `+` stuck to what follows.
    Minus,
    Plus,
}

/// Splits a query into lexemes; `at` in errors is a character position, counted from 1.
fn lex(query: &str) -> Result<Vec<Lexeme>, QueryError> {
    let chars: Vec<char> = query.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' {
            out.push(Lexeme::Open(i + 1));
            i += 1;
        } else if c == ')' {
            out.push(Lexeme::Close(i + 1));
            i += 1;
        } else if c == '"' {
            let (phrase, next) = phrase(&chars, i)?;
            out.push(Lexeme::Phrase(phrase));
            i = next;
        } else if (c == '-' || c == '+')
            && chars
                .get(i + 1)
                .is_some_and(|n| !n.is_whitespace() && *n != ')')
            && (i == 0 || chars[i - 1].is_whitespace() || chars[i - 1] == '(')
        {
            out.push(if c == '-' {
                Lexeme::Minus
            } else {
                Lexeme::Plus
            });
            i += 1;
        } else {
            let start = i;
            while i < chars.len()
                && !chars[i].is_whitespace()
                && !matches!(chars[i], '(' | ')' | '"')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push(match word.as_str() {
                "AND" | "&&" => Lexeme::And,
                "OR" | "||" => Lexeme::Or,
                "NOT" => Lexeme::Not,
                _ => Lexeme::Word(word),
            });
        }
    }
    Ok(out)
}

/// The phrase opened by the quote at `open`, and the position after its closing quote. A
/// backslash keeps the quote after it in the phrase.
fn phrase(chars: &[char], open: usize) -> Result<(String, usize), QueryError> {
    let mut text = String::new();
    let mut i = open + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if chars.get(i + 1) == Some(&'"') => {
                text.push('"');
                i += 2;
            }
            '"' => return Ok((text, i + 1)),
            c => {
                text.push(c);
                i += 1;
            }
        }
    }
    Err(error(format!(
        "the quote at character {} opens a phrase that is not closed: close it (\"like this\"), or leave the quote out (quotes are not searchable text)",
        open + 1
    )))
}

/// Reads `query`.
pub fn parse(query: &str) -> Result<Node, QueryError> {
    let lexemes = lex(query)?;
    let mut p = Parser {
        lexemes: &lexemes,
        at: 0,
        depth: 0,
    };
    let node = p.any()?;
    match p.lexemes.get(p.at) {
        None => Ok(node),
        Some(Lexeme::Close(at)) => Err(error(format!(
            "the ')' at character {at} closes no '(': remove it (parentheses group words; they are not searchable text)"
        ))),
        Some(other) => Err(error(format!("unexpected {other:?} in the query"))),
    }
}

struct Parser<'a> {
    lexemes: &'a [Lexeme],
    at: usize,
    /// Parentheses and negations open around the current lexeme.
    depth: usize,
}

/// Parentheses and negations nest at most this deep.
const DEEPEST: usize = 32;

impl Parser<'_> {
    fn deeper(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > DEEPEST {
            return Err(error(format!(
                "the query nests parentheses or negations more than {DEEPEST} deep: write it flatter"
            )));
        }
        Ok(())
    }

    fn peek(&self) -> Option<&Lexeme> {
        self.lexemes.get(self.at)
    }

    /// Whether an operand can start at `at` (so that an operator before it is one).
    fn operand_at(&self, at: usize) -> bool {
        matches!(
            self.lexemes.get(at),
            Some(
                Lexeme::Open(_)
                    | Lexeme::Phrase(_)
                    | Lexeme::Word(_)
                    | Lexeme::Not
                    | Lexeme::Minus
                    | Lexeme::Plus
            )
        )
    }

    /// `all (OR all)*`
    fn any(&mut self) -> Result<Node, QueryError> {
        let mut members = vec![self.all()?];
        while self.peek() == Some(&Lexeme::Or) && self.operand_at(self.at + 1) {
            self.at += 1;
            members.push(self.all()?);
        }
        Ok(if members.len() == 1 {
            members.remove(0)
        } else {
            Node::Any(members)
        })
    }

    /// `clause ([AND] clause)*`, up to an `OR`, a `)` or the end.
    fn all(&mut self) -> Result<Node, QueryError> {
        let mut clauses = Vec::new();
        loop {
            match self.peek() {
                None | Some(Lexeme::Close(_)) => break,
                Some(Lexeme::Or) if !clauses.is_empty() && self.operand_at(self.at + 1) => break,
                Some(Lexeme::And) if !clauses.is_empty() && self.operand_at(self.at + 1) => {
                    self.at += 1;
                }
                _ => {}
            }
            clauses.push(self.clause()?);
        }
        Ok(match clauses.len() {
            1 if !clauses[0].exclude => clauses.remove(0).node,
            _ => Node::All(clauses),
        })
    }

    /// `NOT clause | -atom | +atom | atom`; an operator with nothing after it is a word.
    fn clause(&mut self) -> Result<Clause, QueryError> {
        let lexeme = self.peek().cloned();
        let operand_follows = self.operand_at(self.at + 1);
        match lexeme {
            Some(Lexeme::Not | Lexeme::Minus) if operand_follows => {
                self.at += 1;
                self.deeper()?;
                let inner = self.clause()?;
                self.depth -= 1;
                Ok(Clause {
                    exclude: !inner.exclude,
                    node: inner.node,
                })
            }
            Some(Lexeme::Plus) if operand_follows => {
                self.at += 1;
                self.deeper()?;
                let inner = self.clause();
                self.depth -= 1;
                inner
            }
            _ => Ok(Clause {
                exclude: false,
                node: self.atom()?,
            }),
        }
    }

    fn atom(&mut self) -> Result<Node, QueryError> {
        let Some(lexeme) = self.peek().cloned() else {
            return Err(error("the query ends where a word was expected".into()));
        };
        self.at += 1;
        Ok(match lexeme {
            Lexeme::Open(at) => {
                self.deeper()?;
                let inner = self.any()?;
                self.depth -= 1;
                if !matches!(self.peek(), Some(Lexeme::Close(_))) {
                    return Err(error(format!(
                        "the '(' at character {at} is not closed: add a ')' (parentheses group words; they are not searchable text)"
                    )));
                }
                self.at += 1;
                if inner == Node::All(Vec::new()) {
                    return Err(error(format!(
                        "the parentheses at character {at} hold nothing: put words in them or remove them"
                    )));
                }
                inner
            }
            Lexeme::Close(at) => {
                return Err(error(format!(
                    "the ')' at character {at} closes no '(': remove it (parentheses group words; they are not searchable text)"
                )));
            }
            Lexeme::Phrase(p) => Node::Phrase(p),
            Lexeme::Word(w) => word(w),
            Lexeme::And => word("AND".into()),
            Lexeme::Or => word("OR".into()),
            Lexeme::Not => word("NOT".into()),
            Lexeme::Minus => word("-".into()),
            Lexeme::Plus => word("+".into()),
        })
    }
}

fn word(text: String) -> Node {
    match text.strip_suffix('*') {
        Some(stem) if !stem.is_empty() && !stem.ends_with('*') => Node::Word {
            text: stem.to_string(),
            prefix: true,
        },
        _ => Node::Word {
            text,
            prefix: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(t: &str) -> Node {
        Node::Word {
            text: t.into(),
            prefix: false,
        }
    }

    fn has(exclude: bool, node: Node) -> Clause {
        Clause { exclude, node }
    }

    #[test]
    fn words_phrases_and_operators() {
        assert_eq!(parse("invoice").unwrap(), w("invoice"));
        assert_eq!(
            parse("Café crème 営業時間 9:00").unwrap(),
            Node::All(vec![
                has(false, w("Café")),
                has(false, w("crème")),
                has(false, w("営業時間")),
                has(false, w("9:00")),
            ])
        );
        assert_eq!(
            parse("a b OR c").unwrap(),
            Node::Any(vec![
                Node::All(vec![has(false, w("a")), has(false, w("b"))]),
                w("c")
            ])
        );
        for q in ["a NOT b", "a AND NOT b", "a -b", "+a -b"] {
            assert_eq!(
                parse(q).unwrap(),
                Node::All(vec![has(false, w("a")), has(true, w("b"))]),
                "{q}"
            );
        }
        assert_eq!(
            parse("\"vat number\" inv*").unwrap(),
            Node::All(vec![
                has(false, Node::Phrase("vat number".into())),
                has(
                    false,
                    Node::Word {
                        text: "inv".into(),
                        prefix: true
                    }
                ),
            ])
        );
        assert_eq!(
            parse("(a OR b) c").unwrap(),
            Node::All(vec![
                has(false, Node::Any(vec![w("a"), w("b")])),
                has(false, w("c"))
            ])
        );
    }

    #[test]
    fn operators_where_none_can_be_are_words() {
        assert_eq!(
            parse("OR a").unwrap(),
            Node::All(vec![has(false, w("OR")), has(false, w("a"))])
        );
        assert_eq!(
            parse("a NOT").unwrap(),
            Node::All(vec![has(false, w("a")), has(false, w("NOT"))])
        );
        assert_eq!(
            parse("a - b").unwrap(),
            Node::All(vec![
                has(false, w("a")),
                has(false, w("-")),
                has(false, w("b"))
            ])
        );
        assert_eq!(parse("e-mail").unwrap(), w("e-mail"));
        assert_eq!(parse("field:value").unwrap(), w("field:value"));
        assert_eq!(parse("NOT a").unwrap(), Node::All(vec![has(true, w("a"))]));
    }

    #[test]
    fn unbalanced_quotes_and_parentheses_say_where_and_how() {
        let e = parse("\"営業時間 9:00").unwrap_err().message;
        assert!(e.contains("character 1") && e.contains("close it"), "{e}");
        let e = parse("a (b c").unwrap_err().message;
        assert!(
            e.contains("'(' at character 3") && e.contains("add a ')'"),
            "{e}"
        );
        let e = parse("a b)").unwrap_err().message;
        assert!(e.contains("')' at character 4"), "{e}");
        let e = parse("a ()").unwrap_err().message;
        assert!(e.contains("hold nothing"), "{e}");
        let deep = format!("{}a{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&deep).unwrap_err().message.contains("deep"));
        let negations = format!("{}a", "NOT ".repeat(10_000));
        assert!(parse(&negations).unwrap_err().message.contains("deep"));
        assert_eq!(
            parse(r#""say \"hi\"""#).unwrap(),
            Node::Phrase("say \"hi\"".into())
        );
    }
}
