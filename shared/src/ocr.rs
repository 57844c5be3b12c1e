//! Reading the OCR result out of a Cloudinary resource answer.

use serde::Deserialize;
use serde_json::Value;

/// What `info.ocr.adv_ocr` says about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OcrOutcome {
    /// OCR complete and text found.
    Text {
        text: String,
        locale: Option<String>,
    },
    /// OCR complete, no text in the image: a success.
    NoText,
    /// OCR accepted but not finished; the result must be read back later (no new OCR call).
    Pending,
    /// Cloudinary reports the OCR itself failed.
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
}

/// A resource answer reduced to what the pipeline stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcrResult {
    pub outcome: OcrOutcome,
    pub asset: AssetFields,
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
    let outcome = match status {
        "complete" => {
            let first = adv.pointer("/data/0/textAnnotations/0");
            match first {
                None => OcrOutcome::NoText,
                Some(ann) => {
                    let text = ann
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if text.trim().is_empty() {
                        OcrOutcome::NoText
                    } else {
                        let locale = ann
                            .get("locale")
                            .and_then(Value::as_str)
                            .filter(|l| !l.is_empty())
                            .map(str::to_string);
                        OcrOutcome::Text {
                            text: text.to_string(),
                            locale,
                        }
                    }
                }
            }
        }
        "pending" => OcrOutcome::Pending,
        other => OcrOutcome::Failed {
            status: other.to_string(),
        },
    };
    Ok(OcrResult { outcome, asset })
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
    }
}
