//! Which images the pipeline pays to OCR: the whole account, or a part of it chosen by folder
//! (public_id prefix), tag, Cloudinary Search expression, delivery type and format.
//!
//! An image is in scope when it passes every category that is set (AND); within a category one
//! match is enough (OR). The scope also decides how the lister lists: the cheapest of
//! Cloudinary's listings that names exactly the scope's images (see [`Scope::listings`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::message::DELIVERY_TYPES;

/// What the pipeline OCRs. The default, empty scope is the whole account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Public_id prefixes ("invoices/" is the folder `invoices` and everything under it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    /// Tags: an image carrying any of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// A Cloudinary Search expression the images must also match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// Delivery types (`upload`, `private`, `authenticated`); empty: all three.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivery_types: Vec<String>,
    /// Formats (`jpg`, `png`, ...); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub formats: Vec<String>,
}

/// One listing call sequence of a pass: the lister lists each of a pass's listings in turn,
/// page by page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// Every image of this delivery type whose public_id starts with `prefix` (all of them
    /// with an empty prefix): the Admin API's `resources/image/{type}`.
    Type {
        delivery_type: String,
        prefix: String,
    },
    /// Every image carrying the tag, of every delivery type: `resources/image/tags/{tag}`.
    Tag(String),
    /// What a Search expression finds, oldest first: `resources/search`.
    Search(String),
    /// Images uploaded (or uploaded again) at or after this RFC 3339 time, every delivery type,
    /// oldest first: the Search API.
    CreatedSince(String),
}

impl Listing {
    /// The whole of one delivery type.
    pub fn of_type(delivery_type: &str) -> Self {
        Listing::Type {
            delivery_type: delivery_type.to_string(),
            prefix: String::new(),
        }
    }

    /// A short, stable name, kept in the checkpoint to say which listing a pass is on.
    pub fn key(&self) -> String {
        match self {
            Listing::Type {
                delivery_type,
                prefix,
            } if prefix.is_empty() => delivery_type.clone(),
            Listing::Type {
                delivery_type,
                prefix,
            } => format!("{delivery_type}:{prefix}"),
            Listing::Tag(tag) => format!("tag:{tag}"),
            Listing::Search(_) => "search".into(),
            Listing::CreatedSince(_) => "since".into(),
        }
    }
}

/// Why a scope cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScopeError(pub String);

/// A comma-separated list, trimmed, without empty entries or repeats, sorted (so that the
/// same scope written two ways is the same scope).
fn list(raw: &str) -> Vec<String> {
    let mut items: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    items.sort();
    items.dedup();
    items
}

impl Scope {
    /// A scope from its settings as the environment holds them: comma-separated lists and an
    /// expression.
    pub fn parse(
        prefixes: &str,
        tags: &str,
        expression: &str,
        delivery_types: &str,
        formats: &str,
    ) -> Result<Self, ScopeError> {
        let scope = Scope {
            prefixes: list(prefixes),
            tags: list(tags),
            expression: Some(expression.trim())
                .filter(|e| !e.is_empty())
                .map(str::to_string),
            delivery_types: list(delivery_types),
            formats: list(&formats.to_ascii_lowercase().replace('.', "")),
        };
        scope.validate()?;
        Ok(scope)
    }

    fn validate(&self) -> Result<(), ScopeError> {
        if let Some(t) = self
            .delivery_types
            .iter()
            .find(|t| !DELIVERY_TYPES.contains(&t.as_str()))
        {
            return Err(ScopeError(format!(
                "delivery type {t:?} is not one the pipeline OCRs ({})",
                DELIVERY_TYPES.join(", ")
            )));
        }
        if let Some(p) = self.prefixes.iter().find(|p| p.starts_with('/')) {
            return Err(ScopeError(format!(
                "prefix {p:?} starts with '/': public_ids never do (write {:?})",
                p.trim_start_matches('/')
            )));
        }
        if let Some(e) = &self.expression {
            let quotes = e.chars().filter(|c| *c == '"').count() - e.matches("\\\"").count();
            let opened = e.matches('(').count() - e.matches("\\(").count();
            let closed = e.matches(')').count() - e.matches("\\)").count();
            if quotes % 2 == 1 || opened != closed {
                return Err(ScopeError(format!(
                    "the search expression {e:?} has an unclosed quote or parenthesis"
                )));
            }
        }
        Ok(())
    }

    /// The whole account: no category set.
    pub fn is_whole_account(&self) -> bool {
        *self == Scope::default()
    }

    /// The delivery types in scope, in the order a full pass lists them.
    pub fn types(&self) -> Vec<&'static str> {
        DELIVERY_TYPES
            .iter()
            .copied()
            .filter(|t| {
                self.delivery_types.is_empty() || self.delivery_types.iter().any(|d| d == t)
            })
            .collect()
    }

    /// A stable text naming the scope, kept in the checkpoint: a pass listed under another
    /// scope is not continued. The whole account is the empty text (what a checkpoint written
    /// before scopes existed holds).
    pub fn fingerprint(&self) -> String {
        if self.is_whole_account() {
            return String::new();
        }
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The listings of a full pass, cheapest first for the Admin quota: the Admin API's
    /// listing of each delivery type (by prefix when the scope is folders), its listing by tag
    /// when the scope is tags, and the Search API for anything else (an expression, formats,
    /// or folders and tags together), which names exactly the scope's images in one sequence
    /// of pages.
    pub fn listings(&self) -> Vec<Listing> {
        let search = self.expression.is_some()
            || !self.formats.is_empty()
            || (!self.tags.is_empty() && !self.prefixes.is_empty());
        if search {
            return vec![Listing::Search(self.search_expression())];
        }
        if !self.tags.is_empty() {
            return self.tags.iter().map(|t| Listing::Tag(t.clone())).collect();
        }
        let prefixes: Vec<&str> = if self.prefixes.is_empty() {
            vec![""]
        } else {
            self.prefixes.iter().map(String::as_str).collect()
        };
        self.types()
            .into_iter()
            .flat_map(|t| {
                prefixes.iter().map(move |p| Listing::Type {
                    delivery_type: t.to_string(),
                    prefix: p.to_string(),
                })
            })
            .collect()
    }

    /// The listing of an incremental pass: what was uploaded since, within the scope.
    pub fn incremental(&self, since: &str) -> Listing {
        if self.is_whole_account() {
            return Listing::CreatedSince(since.to_string());
        }
        Listing::Search(format!(
            "{} AND uploaded_at>=\"{since}\"",
            self.search_expression()
        ))
    }

    /// The scope as one Cloudinary Search expression (images of the pipeline's delivery types
    /// only): what the plan counts with one call, and what a search listing lists.
    pub fn search_expression(&self) -> String {
        let mut terms = vec!["resource_type:image".to_string()];
        // `field:` matches a value; `field=` (tags, formats) only the whole value exactly.
        let any = |field: &str, values: Vec<String>| {
            let op = if field.ends_with('=') { "" } else { ":" };
            let parts: Vec<String> = values
                .into_iter()
                .map(|v| format!("{field}{op}{v}"))
                .collect();
            if parts.len() == 1 {
                parts[0].clone()
            } else {
                format!("({})", parts.join(" OR "))
            }
        };
        terms.push(any(
            "type",
            self.types().into_iter().map(str::to_string).collect(),
        ));
        if !self.prefixes.is_empty() {
            terms.push(any(
                "public_id",
                self.prefixes
                    .iter()
                    .map(|p| format!("{}*", escape(p)))
                    .collect(),
            ));
        }
        if !self.tags.is_empty() {
            terms.push(any("tags=", self.tags.iter().map(|t| escape(t)).collect()));
        }
        if !self.formats.is_empty() {
            terms.push(any(
                "format=",
                self.formats.iter().map(|f| escape(f)).collect(),
            ));
        }
        if let Some(e) = &self.expression {
            terms.push(format!("({e})"));
        }
        terms.join(" AND ")
    }

    /// Whether a listed image is in scope, as far as what the listing answered tells: a tag or
    /// format the answer did not carry is not held against it (the listing asked for the
    /// scope's own), and an expression is Cloudinary's to decide.
    pub fn admits(
        &self,
        public_id: &str,
        delivery_type: &str,
        format: Option<&str>,
        tags: Option<&[String]>,
    ) -> bool {
        let typed = self.types().contains(&delivery_type);
        let prefixed =
            self.prefixes.is_empty() || self.prefixes.iter().any(|p| public_id.starts_with(p));
        let formatted = self.formats.is_empty()
            || format.is_none_or(|f| self.formats.iter().any(|w| w.eq_ignore_ascii_case(f)));
        let tagged = self.tags.is_empty()
            || tags.is_none_or(|carried| self.tags.iter().any(|t| carried.contains(t)));
        typed && prefixed && formatted && tagged
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_whole_account() {
            return f.write_str("the whole account");
        }
        let mut parts = Vec::new();
        if !self.prefixes.is_empty() {
            parts.push(format!("folders {}", self.prefixes.join(", ")));
        }
        if !self.tags.is_empty() {
            parts.push(format!("tags {}", self.tags.join(", ")));
        }
        if let Some(e) = &self.expression {
            parts.push(format!("expression {e}"));
        }
        if !self.delivery_types.is_empty() {
            parts.push(format!("types {}", self.delivery_types.join(", ")));
        }
        if !self.formats.is_empty() {
            parts.push(format!("formats {}", self.formats.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

/// A value written into a Search expression literally: Cloudinary's reserved characters and
/// whitespace escaped with a backslash (its documented alternative to quoting, which keeps a
/// trailing `*` a prefix wildcard).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if "!(){}[]*^~?:\\=&><\"".contains(c) || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(prefixes: &str, tags: &str, expression: &str, types: &str, formats: &str) -> Scope {
        Scope::parse(prefixes, tags, expression, types, formats).unwrap()
    }

    #[test]
    fn an_empty_scope_is_the_whole_account_and_lists_as_before() {
        let s = scope("", " , ", "  ", "", "");
        assert!(s.is_whole_account());
        assert_eq!(s.fingerprint(), "");
        let keys: Vec<String> = s.listings().iter().map(Listing::key).collect();
        assert_eq!(keys, ["upload", "private", "authenticated"]);
        assert_eq!(
            s.incremental("2026-01-01T00:00:00Z"),
            Listing::CreatedSince("2026-01-01T00:00:00Z".into())
        );
    }

    #[test]
    fn folders_list_by_prefix_per_type_and_tags_by_tag() {
        let s = scope("invoices/, receipts/2024/", "", "", "upload", "");
        assert_eq!(
            s.listings(),
            vec![
                Listing::Type {
                    delivery_type: "upload".into(),
                    prefix: "invoices/".into()
                },
                Listing::Type {
                    delivery_type: "upload".into(),
                    prefix: "receipts/2024/".into()
                },
            ]
        );
        let t = scope("", "receipt,invoice,invoice", "", "", "");
        assert_eq!(
            t.listings(),
            vec![
                Listing::Tag("invoice".into()),
                Listing::Tag("receipt".into())
            ]
        );
    }

    #[test]
    fn an_expression_formats_or_folders_with_tags_list_by_search() {
        let s = scope("my folder/", "paid", "", "", "");
        let listings = s.listings();
        let [Listing::Search(e)] = listings.as_slice() else {
            panic!("one search listing: {listings:?}")
        };
        assert_eq!(
            e,
            "resource_type:image AND (type:upload OR type:private OR type:authenticated) \
             AND public_id:my\\ folder/* AND tags=paid"
        );
        let f = scope("", "", "width>1000", "private", ".PNG, jpg");
        assert_eq!(
            f.search_expression(),
            "resource_type:image AND type:private AND (format=jpg OR format=png) AND (width>1000)"
        );
        let Listing::Search(inc) = f.incremental("2026-02-03T04:05:06Z") else {
            panic!("a scoped incremental pass searches")
        };
        assert!(
            inc.ends_with("AND uploaded_at>=\"2026-02-03T04:05:06Z\""),
            "{inc}"
        );
    }

    #[test]
    fn the_same_scope_written_two_ways_has_one_fingerprint() {
        let a = scope("b/,a/", "x", "", "upload", "");
        let b = scope(" a/ , b/ ,a/", "x,", "", "upload", "");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(
            a.fingerprint(),
            scope("a/", "x", "", "upload", "").fingerprint()
        );
        assert_ne!(a.fingerprint(), "");
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        let e = Scope::parse("", "", "", "upload,fetch", "").unwrap_err();
        assert!(e.0.contains("\"fetch\""), "{e}");
        let e = Scope::parse("/invoices", "", "", "", "").unwrap_err();
        assert!(e.0.contains("\"invoices\""), "{e}");
        let e = Scope::parse("", "", "tags:\"a", "", "").unwrap_err();
        assert!(e.0.contains("unclosed"), "{e}");
        let e = Scope::parse("", "", "(tags:a", "", "").unwrap_err();
        assert!(e.0.contains("unclosed"), "{e}");
        assert!(Scope::parse("", "", "tags:\\\"a", "", "").is_ok());
    }

    #[test]
    fn admits_checks_what_the_answer_carries() {
        let s = scope("inv/", "paid", "", "upload", "png");
        assert!(s.admits("inv/1", "upload", Some("PNG"), Some(&["paid".into()])));
        assert!(s.admits("inv/1", "upload", None, None));
        assert!(!s.admits("other/1", "upload", None, None));
        assert!(!s.admits("inv/1", "private", None, None));
        assert!(!s.admits("inv/1", "upload", Some("jpg"), None));
        assert!(!s.admits("inv/1", "upload", None, Some(&["free".into()])));
        assert!(Scope::default().admits("x", "authenticated", Some("gif"), Some(&[])));
        assert!(!Scope::default().admits("x", "fetch", None, None));
    }

    #[test]
    fn reserved_characters_are_escaped() {
        assert_eq!(escape("a b:c*(d)\"e"), "a\\ b\\:c\\*\\(d\\)\\\"e");
        assert_eq!(escape("plain/folder-1"), "plain/folder-1");
    }
}
