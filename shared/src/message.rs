//! The work-queue message: one asset to OCR.

use serde::{Deserialize, Serialize};

/// Schema version written by this code.
pub const MESSAGE_VERSION: u32 = 1;

/// `{"v":1,"public_id":"...","resource_type":"image","type":"upload"}` plus optional fields.
/// Unknown fields are ignored so that older workers read newer messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkMessage {
    pub v: u32,
    pub public_id: String,
    #[serde(default = "image")]
    pub resource_type: String,
    #[serde(rename = "type", default = "upload")]
    pub delivery_type: String,
    /// OCR again even if the asset is already done.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// The asset's version when it was listed: a newer one than the stored result's is OCR'd
    /// again (the image was uploaded again over the same public_id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// When a forced re-OCR was asked for (ms since the epoch): a result written since then
    /// is that re-OCR, so a second delivery of the message pays nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced_at: Option<u64>,
    /// OCR was already requested and reported pending, or the asset may carry one (it was
    /// renamed, and keeps its OCR): read the result back first, and pay only if there is none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ocr_requested: bool,
    /// Times this asset was deferred (rate limit, pending OCR, a concurrent claim).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deferrals: u32,
    /// Of those, the read-backs of a pending OCR (bounded apart from quota waits).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pending_polls: u32,
    /// Of those, the waits on a Cloudinary limit that does not reset within the hour (an
    /// add-on's monthly limit, say); bounded, so that such a limit ends in the DLQ.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit_waits: u32,
    /// Of those, the waits after Cloudinary refused the credentials: each doubles the next
    /// one's delay. Never bounded: a message waits for the secret to be fixed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub credential_waits: u32,
    /// Sent to the read-back queue: its asset is read back there with others, in one call.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gathered: bool,
    /// With `gathered`: an image of the same delivery type whose finished OCR the sender
    /// stored, to show that a shared answer carries OCR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// The read-back queue's shared answer could not be trusted: read back alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_alone: bool,
    /// Found by the worker, never sent: the message names a newer version of the asset than
    /// its stored result's. It is OCR'd again, paying once for the new version: an unfinished
    /// earlier attempt is read back first, as for an asset never OCR'd (an upload over a
    /// public_id leaves no OCR on the new version until one is requested).
    #[serde(skip)]
    pub new_version: bool,
}

/// The delivery types the pipeline OCRs: the ones that store an asset of the account's own
/// (fetched, remote and social types hold none), listed in this order by a full pass.
pub const DELIVERY_TYPES: [&str; 3] = ["upload", "private", "authenticated"];

/// The results table's key (`publicId`) of the asset `public_id` under `delivery_type`.
///
/// The same public_id may exist under several delivery types, each its own image with its own
/// text, so the key names the type, except in the common case: an `upload` asset is keyed by
/// its public_id itself, unless that starts with `~`, which is then doubled (`~~…`). Any other
/// type's asset is keyed `~{type}~{public_id}`. No two assets share a key, and
/// [`asset_of_key`] reads every key back.
pub fn item_key(public_id: &str, delivery_type: &str) -> String {
    match delivery_type {
        "upload" if public_id.starts_with('~') => format!("~{public_id}"),
        "upload" => public_id.to_string(),
        other => format!("~{other}~{public_id}"),
    }
}

/// The asset an item key names: `(delivery type, public_id)`.
pub fn asset_of_key(key: &str) -> (&str, &str) {
    match key.strip_prefix('~') {
        Some(rest) if rest.starts_with('~') => ("upload", rest),
        Some(rest) => match rest.split_once('~') {
            Some((delivery_type, public_id)) if !delivery_type.is_empty() => {
                (delivery_type, public_id)
            }
            _ => ("upload", key),
        },
        None => ("upload", key),
    }
}

/// Whether a public_id has a `.` or `..` path segment, also percent-encoded: URL resolution
/// collapses such a segment (WHATWG URL parsers decode `%2e` in it), changing the path a
/// request goes to.
pub fn has_dot_segment(public_id: &str) -> bool {
    public_id.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

fn image() -> String {
    "image".into()
}
fn upload() -> String {
    "upload".into()
}
fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("message body is empty")]
    Empty,
    #[error("message body is not valid JSON: {0}")]
    NotJson(String),
    #[error("message body has no string field \"public_id\"")]
    NoPublicId,
    #[error("message field \"public_id\" is empty")]
    EmptyPublicId,
    #[error("message schema version {0} is newer than this worker understands ({MESSAGE_VERSION})")]
    UnsupportedVersion(u32),
    #[error("message body is not a valid work message: {0}")]
    Invalid(String),
}

impl WorkMessage {
    pub fn new(
        public_id: impl Into<String>,
        resource_type: impl Into<String>,
        delivery_type: impl Into<String>,
    ) -> Self {
        Self {
            v: MESSAGE_VERSION,
            public_id: public_id.into(),
            resource_type: resource_type.into(),
            delivery_type: delivery_type.into(),
            force: false,
            version: None,
            forced_at: None,
            ocr_requested: false,
            deferrals: 0,
            pending_polls: 0,
            limit_waits: 0,
            credential_waits: 0,
            gathered: false,
            canary: None,
            read_alone: false,
            new_version: false,
        }
    }

    pub fn parse(body: &str) -> Result<Self, MessageError> {
        if body.trim().is_empty() {
            return Err(MessageError::Empty);
        }
        let value: serde_json::Value =
            serde_json::from_str(body).map_err(|e| MessageError::NotJson(e.to_string()))?;
        match value.get("public_id") {
            Some(serde_json::Value::String(s)) if s.is_empty() => {
                return Err(MessageError::EmptyPublicId);
            }
            Some(serde_json::Value::String(_)) => {}
            _ => return Err(MessageError::NoPublicId),
        }
        // A missing version is read as 1: the first schema.
        let v = value
            .get("v")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(1) as u32;
        if v > MESSAGE_VERSION {
            return Err(MessageError::UnsupportedVersion(v));
        }
        let mut msg: WorkMessage =
            serde_json::from_value(value).map_err(|e| MessageError::Invalid(e.to_string()))?;
        msg.v = v;
        Ok(msg)
    }

    /// The key of this message's asset in the results table.
    pub fn item_key(&self) -> String {
        item_key(&self.public_id, &self.delivery_type)
    }

    /// The message's body: JSON, with the characters SQS does not take in a message (U+FFFE,
    /// U+FFFF) escaped, so that any public_id can travel.
    pub fn to_body(&self) -> String {
        let body = serde_json::to_string(self).expect("a WorkMessage always serializes");
        if body.contains(['\u{fffe}', '\u{ffff}']) {
            body.replace('\u{fffe}', "\\ufffe")
                .replace('\u{ffff}', "\\uffff")
        } else {
            body
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_unknown_fields() {
        let m = WorkMessage::new("a/b c?#%+&ü", "image", "upload");
        assert_eq!(WorkMessage::parse(&m.to_body()).unwrap(), m);
        assert_eq!(
            m.to_body(),
            r#"{"v":1,"public_id":"a/b c?#%+&ü","resource_type":"image","type":"upload"}"#
        );
        let m = WorkMessage::parse(r#"{"v":1,"public_id":"x","future":"field"}"#).unwrap();
        assert_eq!(
            (m.resource_type.as_str(), m.delivery_type.as_str(), m.force),
            ("image", "upload", false)
        );
    }

    #[test]
    fn every_asset_has_its_own_key_and_every_key_reads_back() {
        let assets = [
            ("upload", "plain/id"),
            ("upload", "~private~plain/id"),
            ("upload", "~x"),
            ("upload", "~~x"),
            ("upload", "~"),
            ("private", "plain/id"),
            ("private", "~x"),
            ("authenticated", "plain/id"),
            ("authenticated", "a~b"),
        ];
        let keys: Vec<String> = assets.iter().map(|(t, id)| item_key(id, t)).collect();
        assert_eq!(
            keys[0], "plain/id",
            "the common case is the public_id itself"
        );
        assert_eq!(keys[5], "~private~plain/id");
        assert_eq!(keys[2], "~~x");
        let distinct: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), assets.len(), "{keys:?}");
        for ((t, id), key) in assets.iter().zip(&keys) {
            assert_eq!(asset_of_key(key), (*t, *id), "{key}");
        }
    }

    #[test]
    fn characters_sqs_refuses_travel_escaped() {
        let m = WorkMessage::new("odd\u{ffff}\u{fffe}\u{1}id", "image", "upload");
        let body = m.to_body();
        assert!(
            body.chars()
                .all(|c| matches!(c, '\t' | '\n' | '\r' | ' '..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)),
            "{body:?}"
        );
        assert_eq!(WorkMessage::parse(&body).unwrap(), m);
    }

    #[test]
    fn malformed_bodies_are_named() {
        assert_eq!(WorkMessage::parse(""), Err(MessageError::Empty));
        assert!(matches!(
            WorkMessage::parse("{nope"),
            Err(MessageError::NotJson(_))
        ));
        assert_eq!(
            WorkMessage::parse(r#"{"v":1}"#),
            Err(MessageError::NoPublicId)
        );
        assert_eq!(
            WorkMessage::parse(r#"{"public_id":7}"#),
            Err(MessageError::NoPublicId)
        );
        assert_eq!(
            WorkMessage::parse(r#"{"public_id":""}"#),
            Err(MessageError::EmptyPublicId)
        );
        assert_eq!(
            WorkMessage::parse(r#"{"v":9,"public_id":"x"}"#),
            Err(MessageError::UnsupportedVersion(9))
        );
        assert!(matches!(
            WorkMessage::parse(r#"{"public_id":"x","force":"yes"}"#),
            Err(MessageError::Invalid(_))
        ));
    }
}
