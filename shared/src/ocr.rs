//! Reading the OCR result out of a Cloudinary resource answer.

use serde::Deserialize;
use serde_json::Value;

/// Between the texts of two pages (a form feed, as text tools expect between pages).
pub const PAGE_BREAK: &str = "\u{c}";

/// What `info.ocr.adv_ocr` says about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OcrOutcome {
    /// OCR complete and text found: every page's text in order, pages apart by
    /// [`PAGE_BREAK`] (a multi-page PDF or TIFF is an `image` asset).
    Text {
        text: String,
        locale: Option<String>,
    },
    /// OCR complete, no text in the image: a success.
    NoText,
    /// OCR accepted but not finished; the result must be read back later (no new OCR call).
    Pending,
    /// Cloudinary reports the OCR itself failed; `status` carries its message when it sent one.
    Failed { status: String },
    /// A read-back found no OCR on the asset: it was never asked for (an earlier attempt died
    /// before its request reached Cloudinary).
    NotRequested,
}

/// The asset fields kept beside the text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AssetFields {
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub bytes: Option<u64>,
    #[serde(default)]
    pub width: Option<u64>,
    #[serde(default)]
    pub height: Option<u64>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub version: Option<u64>,
}

/// A resource answer reduced to what the pipeline stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcrResult {
    pub outcome: OcrOutcome,
    pub asset: AssetFields,
    /// Pages the OCR read (0 when it has not finished).
    pub pages: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the resource answer has no OCR result: {0}")]
pub struct OcrParseError(pub String);

/// Parses a resource answer (`update`, `explicit` or details) leniently: unknown fields are
/// ignored, but a missing `info.ocr.adv_ocr` is an error (the add-on did not run).
pub fn parse_resource(resource: &Value) -> Result<OcrResult, OcrParseError> {
    let asset = AssetFields::deserialize(resource).unwrap_or_default();
    let adv = resource
        .pointer("/info/ocr/adv_ocr")
        .ok_or_else(|| OcrParseError("info.ocr.adv_ocr is absent".into()))?;
    let status = adv
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("complete");
    let pages: Vec<&Value> = adv
        .get("data")
        .and_then(Value::as_array)
        .map(|d| d.iter().collect())
        .unwrap_or_default();
    let outcome = match status {
        "complete" => {
            // Each page's first annotation is that page's whole text; a page without one
            // keeps its place, empty.
            let texts: Vec<(&str, Option<&str>)> = pages
                .iter()
                .map(|page| {
                    let ann = page.pointer("/textAnnotations/0");
                    let field = |name: &str| {
                        ann.and_then(|a| a.get(name))
                            .and_then(Value::as_str)
                            .filter(|v| !v.is_empty())
                    };
                    (field("description").unwrap_or_default(), field("locale"))
                })
                .collect();
            if texts.iter().all(|(t, _)| t.trim().is_empty()) {
                OcrOutcome::NoText
            } else {
                OcrOutcome::Text {
                    text: texts
                        .iter()
                        .map(|(t, _)| *t)
                        .collect::<Vec<_>>()
                        .join(PAGE_BREAK),
                    locale: texts.iter().find_map(|(_, l)| *l).map(str::to_string),
                }
            }
        }
        "pending" => OcrOutcome::Pending,
        other => OcrOutcome::Failed {
            // A failed OCR's `data` is Cloudinary's message.
            status: match adv.get("data").and_then(Value::as_str) {
                Some(message) => format!("{other}: {message}"),
                None => other.to_string(),
            },
        },
    };
    let pages = match outcome {
        OcrOutcome::Text { .. } | OcrOutcome::NoText => pages.len().max(1) as u32,
        _ => 0,
    };
    Ok(OcrResult {
        outcome,
        asset,
        pages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/cloudinary/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(
            &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
        )
        .unwrap()
    }

    #[test]
    fn complete_with_text() {
        let r = parse_resource(&fixture("update_ocr_complete.json")).unwrap();
        assert_eq!(
            r.outcome,
            OcrOutcome::Text {
                text: "WAITING?\nPLEASE\nTURN OFF\nYOUR\nENGINE\n".into(),
                locale: Some("en".into())
            }
        );
        assert_eq!(r.asset.format.as_deref(), Some("jpg"));
        assert_eq!(
            (r.asset.bytes, r.asset.width, r.asset.height),
            (Some(230114), Some(2400), Some(1600))
        );
        assert_eq!(r.asset.created_at.as_deref(), Some("2021-09-01T00:01:00Z"));
    }

    #[test]
    fn complete_without_text_is_no_text() {
        let r = parse_resource(&fixture("update_ocr_no_text.json")).unwrap();
        assert_eq!(r.outcome, OcrOutcome::NoText);
        let no_data = serde_json::json!({"info": {"ocr": {"adv_ocr": {"status": "complete"}}}});
        assert_eq!(
            parse_resource(&no_data).unwrap().outcome,
            OcrOutcome::NoText
        );
    }

    #[test]
    fn pending_failed_and_absent_are_explicit() {
        let pending = serde_json::json!({"info": {"ocr": {"adv_ocr": {"status": "pending"}}}});
        assert_eq!(
            parse_resource(&pending).unwrap().outcome,
            OcrOutcome::Pending
        );
        let failed = serde_json::json!({"info": {"ocr": {"adv_ocr": {"status": "failed"}}}});
        assert_eq!(
            parse_resource(&failed).unwrap().outcome,
            OcrOutcome::Failed {
                status: "failed".into()
            }
        );
        assert!(parse_resource(&serde_json::json!({"public_id": "x"})).is_err());
        let with_message = serde_json::json!({"info": {"ocr": {"adv_ocr": {
            "status": "failed", "data": "Image is too small to OCR"}}}});
        assert_eq!(
            parse_resource(&with_message).unwrap().outcome,
            OcrOutcome::Failed {
                status: "failed: Image is too small to OCR".into()
            }
        );
    }

    #[test]
    fn every_page_is_read_in_order() {
        let page = |text: &str, locale: &str| serde_json::json!({"textAnnotations": [{"description": text, "locale": locale}]});
        let doc = serde_json::json!({"info": {"ocr": {"adv_ocr": {"status": "complete", "data": [
            page("Page one\n", "en"), {}, page("Seite drei\n", "de")]}}}});
        let r = parse_resource(&doc).unwrap();
        assert_eq!(
            r.outcome,
            OcrOutcome::Text {
                text: format!("Page one\n{PAGE_BREAK}{PAGE_BREAK}Seite drei\n"),
                locale: Some("en".into())
            }
        );
        assert_eq!(r.pages, 3);
        let single = parse_resource(&fixture("update_ocr_complete.json")).unwrap();
        assert_eq!(single.pages, 1);
    }
}
