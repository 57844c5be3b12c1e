//! The emulator's assets: loaded from a JSON-lines corpus file or generated.

use serde::{Deserialize, Serialize};

/// One image in the emulated account, with the text its OCR yields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub public_id: String,
    /// The delivery type: `upload`, `private` or `authenticated` (one public_id may exist
    /// under several, each its own image).
    #[serde(rename = "type", default = "default_delivery_type")]
    pub delivery_type: String,
    #[serde(default = "default_format")]
    pub format: String,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub width: u64,
    #[serde(default)]
    pub height: u64,
    /// RFC 3339, UTC (`2021-09-01T00:00:00Z`).
    pub created_at: String,
    /// `None`: the image has no text.
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub locale: Option<String>,
    /// The version, as an offset: Cloudinary's `version` is 1_600_000_000 plus this. A corpus
    /// counts uploads over the public_id (1 for the first); the Upload API's `upload` sets it so
    /// that the version is the upload's Unix time (and above every earlier one).
    #[serde(default = "first_version")]
    pub version: u64,
    /// When the latest version was uploaded (RFC 3339); `created_at` when never overwritten.
    #[serde(default)]
    pub uploaded_at: Option<String>,
    /// The tags the image carries (none in a corpus written before tags existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

fn default_delivery_type() -> String {
    "upload".into()
}

impl Asset {
    /// The `version` Cloudinary's answers show for it.
    pub fn answered_version(&self) -> u64 {
        crate::upload::VERSION_BASE + self.version
    }

    /// The asset's identity in the account: its delivery type and public_id.
    pub fn id(&self) -> crate::AssetId {
        (self.delivery_type.clone(), self.public_id.clone())
    }

    /// The folder the public_id names: its part before the last `/` (`""` at the root).
    pub fn folder(&self) -> &str {
        self.public_id
            .rsplit_once('/')
            .map_or("", |(folder, _)| folder)
    }
}

fn first_version() -> u64 {
    1
}

fn default_format() -> String {
    "jpg".into()
}

/// Reads a corpus: one JSON object per line (blank lines and `#` comments skipped).
pub fn load_corpus(text: &str) -> Result<Vec<Asset>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("corpus line {}: {e}", i + 1)))
        .collect()
}

/// Public-id shapes that break naive URL handling: folders, spaces, unicode, `%`, `?`, `#`, `+`, `&`.
const ID_SHAPES: &[&str] = &[
    "invoices/2021/inv-{n}",
    "street signs/stop & go {n}?",
    "menüs/café-crème {n}",
    "100% real/discount+{n}",
    "q?a=1&b={n}",
    "看板/東京-{n}",
    "hash#tag/{n} #1",
    "plus+sign/a+b={n}",
    "emoji 🎉/party {n}",
    "deep/a/b/c/d/e/f/{n}",
    "tilde~and'quote\"/{n}",
    "plain-{n}",
];

const LINES: &[&str] = &[
    "WAITING?",
    "PLEASE TURN OFF YOUR ENGINE",
    "Total: 1,234.56 EUR",
    "He said \"hello\", then left",
    "Café crème — 3,50 €",
    "営業時間 9:00-18:00",
    "INVOICE #{n}",
    "Line with, commas, and \"quotes\"",
    "Tabs\tand trailing spaces   ",
    "¿Dónde está la estación?",
];

/// The tags [`generate`] gives the `i`th asset: every 3rd carries `invoice`, every 5th
/// `receipt` (every 15th both) and every 7th `needs review` (a space, to be percent-encoded).
pub fn generated_tags(i: usize) -> Vec<String> {
    [(3, "invoice"), (5, "receipt"), (7, "needs review")]
        .into_iter()
        .filter(|(every, _)| i.is_multiple_of(*every))
        .map(|(_, tag)| tag.to_string())
        .collect()
}

/// `n` assets with awkward ids, in folders (the part of the id before its last `/`) and with
/// [`generated_tags`]; every 5th has no text, every 97th a long text (~20 KB); one in 50 is
/// `private` and one in 50 `authenticated`, and one in 500 is a `private` image under the
/// public_id of the `upload` one before it.
pub fn generate(n: usize) -> Vec<Asset> {
    generate_with(n, true)
}

/// [`generate`]'s `n` assets, every one an `upload` image with its own public_id (for a client
/// that lists only those, as the blog-style baseline of the benchmarks does).
pub fn generate_uploads(n: usize) -> Vec<Asset> {
    generate_with(n, false)
}

fn generate_with(n: usize, delivery_types: bool) -> Vec<Asset> {
    let base = time::macros::datetime!(2021-01-01 00:00:00 UTC);
    (0..n)
        .map(|i| {
            let twin = delivery_types && i % 500 == 250;
            let n = if twin { i - 1 } else { i };
            let public_id = ID_SHAPES[n % ID_SHAPES.len()].replace("{n}", &format!("{n:06}"));
            let delivery_type = match i % 50 {
                _ if !delivery_types => "upload",
                _ if twin => "private",
                21 => "private",
                42 => "authenticated",
                _ => "upload",
            };
            let text = if i % 5 == 4 {
                None
            } else if i % 97 == 96 {
                let mut t = String::new();
                let mut k = 0;
                while t.len() < 20_000 {
                    t.push_str(&LINES[k % LINES.len()].replace("{n}", &i.to_string()));
                    t.push('\n');
                    k += 1;
                }
                Some(t)
            } else {
                let count = 1 + i % 4;
                let mut t: String = (0..count)
                    .map(|k| LINES[(i + k) % LINES.len()].replace("{n}", &i.to_string()))
                    .collect::<Vec<_>>()
                    .join("\n");
                t.push('\n');
                Some(t)
            };
            let locale = text
                .as_ref()
                .map(|_| if i % 3 == 0 { "de" } else { "en" }.to_string());
            let created = base + time::Duration::minutes(i as i64);
            Asset {
                public_id,
                delivery_type: delivery_type.into(),
                format: ["jpg", "png", "webp"][i % 3].into(),
                bytes: 10_000 + (i as u64 * 7919) % 900_000,
                width: 800 + (i as u64 % 7) * 160,
                height: 600 + (i as u64 % 5) * 120,
                created_at: created
                    .format(&time::format_description::well_known::Rfc3339)
                    .expect("formats"),
                text,
                locale,
                version: 1,
                uploaded_at: None,
                tags: generated_tags(i),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_awkward() {
        let assets = generate(2000);
        let ids: std::collections::HashSet<_> = assets.iter().map(Asset::id).collect();
        assert_eq!(ids.len(), 2000, "no asset twice");
        let public_ids: std::collections::HashSet<_> =
            assets.iter().map(|a| a.public_id.as_str()).collect();
        assert_eq!(
            public_ids.len(),
            2000 - 4,
            "four public_ids under two types"
        );
        for t in ["upload", "private", "authenticated"] {
            assert!(assets.iter().any(|a| a.delivery_type == t), "{t}");
        }
        for c in ['/', ' ', '%', '?', '#', '+', '&', 'ü', '東'] {
            assert!(
                assets.iter().any(|a| a.public_id.contains(c)),
                "no id contains {c:?}"
            );
        }
        assert!(assets.iter().any(|a| a.text.is_none()));
        assert!(
            assets
                .iter()
                .any(|a| a.text.as_ref().is_some_and(|t| t.len() >= 20_000))
        );
    }

    #[test]
    fn upload_only_corpora_have_one_image_per_public_id() {
        let assets = generate_uploads(1000);
        assert!(assets.iter().all(|a| a.delivery_type == "upload"));
        let ids: std::collections::HashSet<_> =
            assets.iter().map(|a| a.public_id.as_str()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn generated_assets_carry_tags_by_their_position_and_keep_their_folders() {
        let assets = generate(30);
        let tagged = |tag: &str| -> Vec<usize> {
            (0..30)
                .filter(|&i| assets[i].tags.iter().any(|t| t == tag))
                .collect()
        };
        assert_eq!(tagged("invoice"), [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]);
        assert_eq!(tagged("receipt"), [0, 5, 10, 15, 20, 25]);
        assert_eq!(tagged("needs review"), [0, 7, 14, 21, 28]);
        assert_eq!(assets[15].tags, ["invoice", "receipt"]);
        assert!(assets[1].tags.is_empty());
        assert_eq!(generate(30), generate(30), "deterministic");
        assert_eq!(assets[0].folder(), "invoices/2021");
        assert_eq!(assets[9].folder(), "deep/a/b/c/d/e/f");
        assert_eq!(assets[11].folder(), "", "plain ids are at the root");
        // Tags are added without changing which ids and texts are generated.
        assert_eq!(assets[1].public_id, "street signs/stop & go 000001?");
        assert_eq!(assets[4].text, None);
    }

    #[test]
    fn a_corpus_without_tags_loads_with_none() {
        let line = r#"{"public_id":"a/b","created_at":"2021-09-01T00:00:00Z","text":"HI\n"}"#;
        let assets = load_corpus(line).unwrap();
        assert!(assets[0].tags.is_empty());
        let tagged = r#"{"public_id":"a/b","created_at":"2021-09-01T00:00:00Z","tags":["x y"]}"#;
        assert_eq!(load_corpus(tagged).unwrap()[0].tags, ["x y"]);
        assert!(!serde_json::to_string(&assets[0]).unwrap().contains("tags"));
    }

    #[test]
    fn corpus_round_trips() {
        let assets = generate(30);
        let text: String = assets
            .iter()
            .map(|a| serde_json::to_string(a).unwrap() + "\n")
            .collect();
        assert_eq!(
            load_corpus(&format!("# comment\n\n{text}")).unwrap(),
            assets
        );
        assert!(load_corpus("{not json").unwrap_err().contains("line 1"));
    }
}
