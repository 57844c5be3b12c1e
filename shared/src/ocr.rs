//! Reading the OCR result out of a Cloudinary resource answer.

use serde::Deserialize;
use serde::de::IgnoredAny;
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

/// The asset fields kept beside the text (read from an answer by [`ResourceAnswer::asset`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssetFields {
    pub format: Option<String>,
    pub bytes: Option<u64>,
    pub width: Option<u64>,
    pub height: Option<u64>,
    pub created_at: Option<String>,
    pub version: Option<u64>,
    /// Cloudinary's id of the asset: it stays through renames and overwrites, and a new
    /// upload after a delete has another.
    pub asset_id: Option<String>,
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

/// A resource answer (`update`, `explicit` or details) as the worker reads it: the asset's
/// fields and `info.ocr.adv_ocr`, of whose pages only the first annotation (the page's whole
/// text) is kept. The per-word annotations with their bounding boxes and the full-text tree,
/// most of an answer's bytes, are skipped by the parser and never built. Unknown fields are
/// ignored, and a field of an unexpected type reads as absent.
#[derive(Debug, Default, Deserialize)]
pub struct ResourceAnswer {
    #[serde(default, deserialize_with = "lenient")]
    format: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    bytes: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    width: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    height: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    created_at: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    version: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    asset_id: Option<String>,
    #[serde(default)]
    info: ObjectOrNot<Info>,
}

impl ResourceAnswer {
    /// The asset's fields.
    pub fn asset(&self) -> AssetFields {
        AssetFields {
            format: self.format.clone(),
            bytes: self.bytes,
            width: self.width,
            height: self.height,
            created_at: self.created_at.clone(),
            version: self.version,
            asset_id: self.asset_id.clone(),
        }
    }

    fn adv_ocr(&self) -> Option<&AdvOcr> {
        self.info.0.as_ref()?.ocr.0.as_ref()?.adv_ocr.0.as_ref()
    }

    /// Whether the answer carries `info.ocr.adv_ocr` (the add-on ran on the asset).
    pub fn has_ocr(&self) -> bool {
        self.adv_ocr().is_some()
    }

    /// The OCR result; a missing `info.ocr.adv_ocr` is an error (the add-on did not run).
    pub fn result(self) -> Result<OcrResult, OcrParseError> {
        let asset = self.asset();
        let adv = self
            .adv_ocr()
            .ok_or_else(|| OcrParseError("info.ocr.adv_ocr is absent".into()))?;
        let pages: &[ObjectOrNot<Page>] = match &adv.data {
            AdvOcrData::Pages(pages) => pages,
            _ => &[],
        };
        let outcome = match adv.status.as_deref().unwrap_or("complete") {
            "complete" => {
                // Each page's first annotation is that page's whole text; a page without one
                // keeps its place, empty.
                let texts: Vec<(&str, Option<&str>)> = pages
                    .iter()
                    .map(|page| {
                        let ann = page.0.as_ref().and_then(|p| p.first.as_ref());
                        let field = |f: fn(&Annotation) -> &Option<String>| {
                            ann.and_then(|a| f(a).as_deref()).filter(|v| !v.is_empty())
                        };
                        (
                            field(|a| &a.description).unwrap_or_default(),
                            field(|a| &a.locale),
                        )
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
                status: match &adv.data {
                    AdvOcrData::Message(message) => format!("{other}: {message}"),
                    _ => other.to_string(),
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
}

#[derive(Debug, Default, Deserialize)]
struct Info {
    #[serde(default)]
    ocr: ObjectOrNot<OcrInfo>,
}

#[derive(Debug, Default, Deserialize)]
struct OcrInfo {
    #[serde(default)]
    adv_ocr: ObjectOrNot<AdvOcr>,
}

#[derive(Debug, Default, Deserialize)]
struct AdvOcr {
    #[serde(default, deserialize_with = "lenient")]
    status: Option<String>,
    #[serde(default)]
    data: AdvOcrData,
}

/// `adv_ocr.data`: the pages of a finished OCR, or a failed one's message.
#[derive(Debug, Default)]
enum AdvOcrData {
    #[default]
    Absent,
    Pages(Vec<ObjectOrNot<Page>>),
    Message(String),
}

#[derive(Debug, Default, Deserialize)]
struct Page {
    #[serde(rename = "textAnnotations", default, deserialize_with = "first_only")]
    first: Option<Annotation>,
}

#[derive(Debug, Default, Deserialize)]
struct Annotation {
    #[serde(default, deserialize_with = "lenient")]
    description: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    locale: Option<String>,
}

/// A visitor's answer to null and to a boolean or a number: `$absent`.
macro_rules! scalars_are {
    ($absent:expr) => {
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($absent)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok($absent)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($absent)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($absent)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($absent)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($absent)
        }
    };
}

/// A scalar of the expected type, or absent whatever else the field holds.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    Ok(T::deserialize(Value::deserialize(d)?).ok())
}

/// An object read as `T`; anything else is skipped unbuilt and reads as absent.
#[derive(Debug)]
struct ObjectOrNot<T>(Option<T>);

impl<T> Default for ObjectOrNot<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOrNot<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Object<T> {
            type Value = ObjectOrNot<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|t| ObjectOrNot(Some(t)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ObjectOrNot(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(ObjectOrNot(None))
            }
            scalars_are!(ObjectOrNot(None));
        }
        d.deserialize_any(Object(std::marker::PhantomData))
    }
}

/// The first element of an array, the rest skipped unbuilt; absent for anything but an array.
fn first_only<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct First<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for First<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let first = seq.next_element::<ObjectOrNot<T>>()?.and_then(|o| o.0);
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(first)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        scalars_are!(None);
    }
    d.deserialize_any(First(std::marker::PhantomData))
}

impl<'de> Deserialize<'de> for AdvOcrData {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Data;
        impl<'de> serde::de::Visitor<'de> for Data {
            type Value = AdvOcrData;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the OCR's pages or its message")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<AdvOcrData, A::Error> {
                let mut pages = Vec::new();
                while let Some(page) = seq.next_element::<ObjectOrNot<Page>>()? {
                    pages.push(page);
                }
                Ok(AdvOcrData::Pages(pages))
            }
            fn visit_str<E>(self, v: &str) -> Result<AdvOcrData, E> {
                Ok(AdvOcrData::Message(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<AdvOcrData, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AdvOcrData::Absent)
            }
            scalars_are!(AdvOcrData::Absent);
        }
        d.deserialize_any(Data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_resource(resource: &Value) -> Result<OcrResult, OcrParseError> {
        ResourceAnswer::deserialize(resource)
            .map_err(|e| OcrParseError(e.to_string()))?
            .result()
    }

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

    /// The worker parses the bytes straight into [`ResourceAnswer`]: the same result as reading
    /// the whole tree first, and a field of an unexpected type reads as absent rather than
    /// failing the answer.
    #[test]
    fn the_bytes_read_as_the_whole_tree_does_and_odd_fields_read_as_absent() {
        let from_bytes = |json: &str| {
            serde_json::from_str::<ResourceAnswer>(json)
                .unwrap()
                .result()
        };
        for name in ["update_ocr_complete.json", "update_ocr_no_text.json"] {
            let json = serde_json::to_string(&fixture(name)).unwrap();
            assert_eq!(from_bytes(&json), parse_resource(&fixture(name)), "{name}");
        }
        let words = r#"{"format": "png", "bytes": 10, "version": 7, "info": {"ocr": {"adv_ocr": {
            "status": "complete", "data": [{"textAnnotations": [
                {"description": "TWO WORDS\n", "locale": "en", "boundingPoly": {"vertices": [{"x": 0}]}},
                {"description": "TWO", "boundingPoly": {"vertices": [{"x": 1, "y": 2}]}},
                {"description": "WORDS"}],
              "fullTextAnnotation": {"text": "TWO WORDS\n", "pages": [{"blocks": []}]}}]}}}}"#;
        let r = from_bytes(words).unwrap();
        assert_eq!(
            r.outcome,
            OcrOutcome::Text {
                text: "TWO WORDS\n".into(),
                locale: Some("en".into())
            }
        );
        assert_eq!(
            (r.asset.format.as_deref(), r.asset.bytes, r.asset.version),
            (Some("png"), Some(10), Some(7))
        );
        let odd = r#"{"bytes": "ten", "width": {"px": 3}, "height": 4, "info": {"ocr": {"adv_ocr": {
            "data": ["a string", {"textAnnotations": {"not": "an array"}}, 5,
                     {"textAnnotations": [7, {"description": "late"}]},
                     {"textAnnotations": [{"description": 12, "locale": ["x"]}]},
                     {"textAnnotations": [{"description": "TEXT", "locale": null}]}]}}}}"#;
        let r = from_bytes(odd).unwrap();
        assert_eq!(
            r.outcome,
            OcrOutcome::Text {
                text: ["", "", "", "", "", "TEXT"].join(PAGE_BREAK),
                locale: None
            },
            "a page that is not an object, or whose first annotation is not, is an empty page"
        );
        assert_eq!(
            (r.asset.bytes, r.asset.width, r.asset.height, r.pages),
            (None, None, Some(4), 6)
        );
    }

    /// An answer without an OCR result is one; a failed OCR's `data` may be anything.
    #[test]
    fn an_answer_without_ocr_is_refused_and_a_failed_ocr_read_whatever_its_data() {
        let from_bytes = |json: &str| {
            serde_json::from_str::<ResourceAnswer>(json)
                .unwrap()
                .result()
        };
        for absent in [
            r#"{"info": "none"}"#,
            r#"{"info": {"ocr": []}}"#,
            r#"{"info": {"ocr": {"adv_ocr": 3}}}"#,
            r#"{"info": {"ocr": {"adv_ocr": null}}}"#,
        ] {
            assert!(from_bytes(absent).is_err(), "{absent}");
        }
        assert_eq!(
            from_bytes(
                r#"{"info": {"ocr": {"adv_ocr": {"status": "failed", "data": {"code": 3}}}}}"#
            )
            .unwrap()
            .outcome,
            OcrOutcome::Failed {
                status: "failed".into()
            }
        );
    }
}
