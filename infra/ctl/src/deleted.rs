//! Deleted items. The notifier does not remove the item of an asset deleted (or renamed away)
//! in Cloudinary: it marks it, a tombstone, so that a late OCR result cannot bring it back.
//! The item then carries `deletedAt` (RFC 3339), `deletedAtMs`, `goneVersion`, `goneBy`
//! (`delete` or `rename`) and, for a rename, `renamedTo` (the new item key); its `text` may be
//! gone and its `status` stays what it was. An item is deleted when `deletedAt` exists.
//!
//! Every reader of `ocr-ctl` leaves deleted items out unless asked (`--include-deleted`):
//! scans by [`NOT_DELETED`] in their filter expression, items read otherwise by
//! [`tombstone`].

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use serde::Serialize;

use crate::scan::{Item, num, s};

/// The attribute whose presence makes an item deleted.
pub const DELETED_AT: &str = "deletedAt";

/// A scan's filter condition that leaves deleted items out.
pub const NOT_DELETED: &str = "attribute_not_exists(deletedAt)";

/// The attributes that describe a deletion, for a scan's projection.
pub const PROJECTION: &str = "deletedAt, goneBy, renamedTo";

/// How an item went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tombstone {
    /// When (RFC 3339; a number as written, `?` for another type: never empty).
    pub deleted_at: String,
    /// `delete` or `rename`, when recorded.
    pub gone_by: Option<String>,
    /// For a rename: the new item key.
    pub renamed_to: Option<String>,
}

impl Tombstone {
    /// `deleted 2026-…` or `renamed to KEY 2026-…`, with the new key's control characters
    /// written out (see [`crate::terminal::escaped`]).
    pub fn describe(&self) -> String {
        match &self.renamed_to {
            Some(to) => format!(
                "renamed to {} {}",
                crate::terminal::escaped(to),
                crate::terminal::escaped(&self.deleted_at)
            ),
            None => format!("deleted {}", crate::terminal::escaped(&self.deleted_at)),
        }
    }

    /// Whether it went by a rename (`goneBy` = `rename`, or a new key recorded).
    pub fn is_rename(&self) -> bool {
        self.gone_by.as_deref() == Some("rename") || self.renamed_to.is_some()
    }
}

/// A deletion as the human formats show it beside an item's key (see
/// [`Tombstone::describe`]), from an exported row's or an index's `deleted_at` and
/// `renamed_to`; `None` when `deleted_at` is empty (not deleted).
pub fn shown(deleted_at: &str, renamed_to: &str) -> Option<String> {
    (!deleted_at.is_empty()).then(|| {
        Tombstone {
            deleted_at: deleted_at.to_string(),
            gone_by: None,
            renamed_to: Some(renamed_to.to_string()).filter(|r| !r.is_empty()),
        }
        .describe()
    })
}

/// The item's tombstone: `Some` when the item is deleted (`deletedAt` exists).
pub fn tombstone(item: &Item) -> Option<Tombstone> {
    item.get(DELETED_AT)?;
    Some(Tombstone {
        deleted_at: s(item, DELETED_AT)
            .or_else(|| num(item, DELETED_AT))
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "?".into()),
        gone_by: s(item, "goneBy"),
        renamed_to: s(item, "renamedTo"),
    })
}

/// Whether the item is deleted.
pub fn is_deleted(item: &Item) -> bool {
    item.contains_key(DELETED_AT)
}

/// The tombstones of those of `keys` whose items are deleted (one read per 100 keys; a key
/// without an item is not deleted).
pub async fn tombstones(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    keys: &[String],
) -> anyhow::Result<HashMap<String, Tombstone>> {
    let mut unique: Vec<&String> = keys.iter().collect();
    unique.sort();
    unique.dedup();
    let mut found = HashMap::new();
    for chunk in unique.chunks(100) {
        let mut pending: Vec<Item> = chunk
            .iter()
            .map(|k| HashMap::from([("publicId".to_string(), AttributeValue::S((*k).clone()))]))
            .collect();
        while !pending.is_empty() {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .projection_expression(format!("publicId, {PROJECTION}"))
                .consistent_read(true)
                .build()?;
            let answer = ddb
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .with_context(|| format!("reading which assets are deleted in {table:?}"))?;
            for item in answer
                .responses()
                .and_then(|r| r.get(table))
                .into_iter()
                .flatten()
            {
                if let (Some(key), Some(t)) = (s(item, "publicId"), tombstone(item)) {
                    found.insert(key, t);
                }
            }
            if let Some(left) = answer
                .unprocessed_keys()
                .and_then(|u| u.get(table))
                .map(|k| k.keys().to_vec())
            {
                pending = left;
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, &str)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), AttributeValue::S(v.to_string())))
            .collect()
    }

    #[test]
    fn an_item_is_deleted_exactly_when_deleted_at_exists() {
        assert!(tombstone(&item(&[("publicId", "a"), ("status", "done")])).is_none());
        let gone = item(&[("deletedAt", "2026-05-01T00:00:00Z"), ("goneBy", "delete")]);
        assert!(is_deleted(&gone));
        let t = tombstone(&gone).unwrap();
        assert_eq!(t.describe(), "deleted 2026-05-01T00:00:00Z");
        assert!(!t.is_rename());
        let mut odd = Item::new();
        odd.insert("deletedAt".into(), AttributeValue::N("1".into()));
        assert_eq!(tombstone(&odd).unwrap().deleted_at, "1");
    }

    #[test]
    fn a_rename_names_the_new_key_with_its_control_characters_written_out() {
        let t = tombstone(&item(&[
            ("deletedAt", "2026-05-01T00:00:00Z"),
            ("goneBy", "rename"),
            ("renamedTo", "new\u{1b}[2J/id"),
        ]))
        .unwrap();
        assert!(t.is_rename());
        assert_eq!(
            t.describe(),
            "renamed to new\\x1b[2J/id 2026-05-01T00:00:00Z"
        );
    }
}
