//! Deleted items (the notifier's tombstones) in `ocr-ctl`: left out of every reader unless
//! `--include-deleted`, shown with their deletion when kept, counted apart by `status`, and
//! never re-OCR'd.

use aws_sdk_dynamodb::types::AttributeValue;

use crate::common::Harness;
use crate::ctl::{ctl, ctl_outcome, put, seeded, temp_path};
use ocr_ctl::export::Row;

const AT: &str = "2026-05-01T00:00:00Z";

/// Marks `key`'s item deleted as the notifier does (`text` removed when `drop_text`); a rename
/// names the new key.
async fn tombstone(h: &Harness, key: &str, renamed_to: Option<&str>, drop_text: bool) {
    let mut update =
        "SET deletedAt = :at, deletedAtMs = :ms, goneVersion = :v, goneBy = :by".to_string();
    let mut req = h
        .ddb
        .update_item()
        .table_name(&h.stack.names.results_table)
        .key("publicId", AttributeValue::S(key.into()))
        .expression_attribute_values(":at", AttributeValue::S(AT.into()))
        .expression_attribute_values(":ms", AttributeValue::N("1777593600000".into()))
        .expression_attribute_values(":v", AttributeValue::N("2".into()))
        .expression_attribute_values(
            ":by",
            AttributeValue::S(
                if renamed_to.is_some() {
                    "rename"
                } else {
                    "delete"
                }
                .into(),
            ),
        );
    if let Some(to) = renamed_to {
        update.push_str(", renamedTo = :to");
        req = req.expression_attribute_values(":to", AttributeValue::S(to.into()));
    }
    if drop_text {
        update.push_str(" REMOVE #text");
        req = req.expression_attribute_names("#text", "text");
    }
    req.update_expression(update).send().await.unwrap();
}

/// The seeded table (5 done, 1 no_text, 1 failed; no "stop" in any text) with one live item,
/// one deleted, one renamed away (to the live one) and one deleted with its text removed.
async fn with_deleted() -> Harness {
    let h = seeded().await;
    put(&h, "new/renamed", Some("stop renamed text"), false).await;
    put(&h, "gone/deleted", Some("stop deleted text"), false).await;
    put(&h, "gone/renamed", Some("stop renamed text"), false).await;
    put(&h, "gone/notext", Some("stop hidden text"), false).await;
    tombstone(&h, "gone/deleted", None, false).await;
    tombstone(&h, "gone/renamed", Some("new/renamed"), false).await;
    tombstone(&h, "gone/notext", None, true).await;
    h
}

fn jsonl_rows(path: &std::path::Path) -> Vec<Row> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ids(rows: &[Row]) -> Vec<&str> {
    let mut v: Vec<&str> = rows.iter().map(|r| r.public_id.as_str()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_leaves_deleted_items_out_unless_asked_and_then_says_how_they_went() {
    let h = with_deleted().await;
    let path = temp_path("live.jsonl");
    let out = ctl(
        &h,
        &[
            "export",
            "--format",
            "jsonl",
            "--out",
            path.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    assert!(out.contains("exported 8 rows"), "{out}");
    let rows = jsonl_rows(&path);
    assert_eq!(rows.len(), 8);
    assert!(!ids(&rows).iter().any(|id| id.starts_with("gone/")));
    assert!(
        rows.iter()
            .all(|r| r.deleted_at.is_empty() && r.renamed_to.is_empty())
    );

    let all = temp_path("all.jsonl");
    let out = ctl(
        &h,
        &[
            "export",
            "--format",
            "jsonl",
            "--include-deleted",
            "--out",
            all.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    assert!(out.contains("exported 11 rows"), "{out}");
    let rows = jsonl_rows(&all);
    let row = |id: &str| rows.iter().find(|r| r.public_id == id).unwrap();
    assert_eq!(
        (
            row("gone/deleted").deleted_at.as_str(),
            row("gone/deleted").renamed_to.as_str()
        ),
        (AT, "")
    );
    assert_eq!(
        (
            row("gone/renamed").deleted_at.as_str(),
            row("gone/renamed").renamed_to.as_str()
        ),
        (AT, "new/renamed")
    );
    assert_eq!(row("gone/notext").text, "");
    assert_eq!(row("gone/notext").status, "done", "the status stays");
    assert_eq!(row("new/renamed").deleted_at, "");

    // CSV: the two columns last, after the existing ones in their order.
    let csv_path = temp_path("all.csv");
    ctl(
        &h,
        &[
            "export",
            "--include-deleted",
            "--out",
            csv_path.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let mut reader = csv::Reader::from_path(&csv_path).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header[0], "public_id");
    assert_eq!(
        &header[header.len() - 3..],
        ["error", "deleted_at", "renamed_to"]
    );
    let csv_rows: Vec<Row> = reader.deserialize().map(|r| r.unwrap()).collect();
    assert_eq!(csv_rows.len(), 11);
    assert_eq!(
        csv_rows.iter().filter(|r| !r.deleted_at.is_empty()).count(),
        3
    );
    for p in [&path, &all, &csv_path] {
        let _cleanup = std::fs::remove_file(p);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grep_and_status_keep_deleted_items_apart() {
    let h = with_deleted().await;
    assert_eq!(
        ctl(&h, &["grep", "--count", "stop"]).await.unwrap(),
        "1 assets, 1 lines\n"
    );
    // The deleted item whose text was removed has nothing to match.
    assert_eq!(
        ctl(&h, &["grep", "--count", "--include-deleted", "stop"])
            .await
            .unwrap(),
        "3 assets, 3 lines\n"
    );
    let out = ctl(&h, &["grep", "stop"]).await.unwrap();
    assert_eq!(out, "new/renamed\tstop renamed text\n");
    let out = ctl(&h, &["grep", "--include-deleted", "stop"])
        .await
        .unwrap();
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("gone/deleted (deleted {AT})\tstop deleted text"),
            format!("gone/renamed (renamed to new/renamed {AT})\tstop renamed text"),
            "new/renamed\tstop renamed text".to_string(),
        ]
    );
    let out = ctl(&h, &["grep", "--json", "--include-deleted", "deleted"])
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["key"].as_str(), v["deleted_at"].as_str()),
        (Some("gone/deleted"), Some(AT))
    );

    let v: serde_json::Value =
        serde_json::from_str(&ctl(&h, &["status", "--json"]).await.unwrap()).unwrap();
    assert_eq!(
        v["items"],
        serde_json::json!({"done": 6, "no_text": 1, "failed": 1})
    );
    assert_eq!(v["deleted"], serde_json::json!({"total": 3, "renamed": 1}));
    assert_eq!(v["progress"]["terminal"], 8);
    let text = ctl(&h, &["status"]).await.unwrap();
    assert!(
        text.contains("items        8") && text.contains("deleted      3 (1 renamed away)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_index_drops_deleted_items_and_search_shows_them_only_when_asked() {
    let h = with_deleted().await;
    let table = h.stack.names.results_table.clone();
    let dir = temp_path("index");
    let kept = temp_path("index-with-deleted");
    let index = async |dir: &std::path::Path, args: &[&str]| {
        let mut a = vec!["--index-dir", dir.to_str().unwrap(), "index", "--json"];
        a.extend(args);
        serde_json::from_str::<serde_json::Value>(&ctl(&h, &a).await.unwrap()).unwrap()
    };
    let search = async |dir: &std::path::Path, args: &[&str]| {
        let mut a = vec!["--index-dir", dir.to_str().unwrap(), "search", "--json"];
        a.extend(args);
        let (out, outcome) = ctl_outcome(&h, &table, &a).await.unwrap();
        let hits: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut keys: Vec<String> = hits
            .iter()
            .map(|h| h["key"].as_str().unwrap().to_string())
            .collect();
        keys.sort();
        (keys, hits, outcome)
    };

    let r = index(&dir, &[]).await;
    assert_eq!([&r["read"], &r["added"], &r["indexed"]], [8, 8, 8], "{r}");
    assert_eq!(search(&dir, &["stop"]).await.0, ["new/renamed"]);
    // This index holds no deleted item to show.
    assert_eq!(
        search(&dir, &["--include-deleted", "stop"]).await.0,
        ["new/renamed"]
    );

    let r = index(&kept, &["--include-deleted"]).await;
    assert_eq!(
        [&r["read"], &r["added"], &r["indexed"]],
        [11, 11, 11],
        "{r}"
    );
    assert_eq!(
        search(&kept, &["stop"]).await.0,
        ["new/renamed"],
        "hidden by default"
    );
    let (keys, hits, _) = search(&kept, &["--include-deleted", "stop"]).await;
    assert_eq!(keys, ["gone/deleted", "gone/renamed", "new/renamed"]);
    let hit = |k: &str| hits.iter().find(|h| h["key"] == k).unwrap();
    assert_eq!(hit("gone/renamed")["deleted_at"], AT);
    assert_eq!(hit("gone/renamed")["renamed_to"], "new/renamed");
    assert!(hit("new/renamed").get("deleted_at").is_none());
    let text = ctl(
        &h,
        &[
            "--index-dir",
            kept.to_str().unwrap(),
            "search",
            "--include-deleted",
            "deleted",
        ],
    )
    .await
    .unwrap();
    assert!(
        text.contains(&format!("gone/deleted (deleted {AT})\t")),
        "{text}"
    );
    // The regex search and extract read the same way.
    let (keys, _, _) = search(&kept, &["--regex", "st.p"]).await;
    assert_eq!(keys, ["new/renamed"]);
    let (keys, _, _) = search(&kept, &["--regex", "--include-deleted", "st.p"]).await;
    assert_eq!(keys, ["gone/deleted", "gone/renamed", "new/renamed"]);
    let (_, outcome) = ctl_outcome(
        &h,
        &table,
        &["--index-dir", kept.to_str().unwrap(), "extract", "deleted"],
    )
    .await
    .unwrap();
    assert_eq!(outcome, ocr_ctl::Outcome::NothingMatched);
    let (out, _) = ctl_outcome(
        &h,
        &table,
        &[
            "--index-dir",
            kept.to_str().unwrap(),
            "extract",
            "--include-deleted",
            "deleted",
        ],
    )
    .await
    .unwrap();
    assert_eq!(out.lines().count(), 2, "a header and one row: {out}");

    // Deleted since the last update: removed by the next one (and kept by the other index).
    tombstone(&h, "plain", None, false).await;
    let r = index(&dir, &[]).await;
    assert_eq!(
        [&r["read"], &r["removed"], &r["unchanged"], &r["indexed"]],
        [7, 1, 7, 7],
        "{r}"
    );
    assert!(search(&dir, &["simple"]).await.0.is_empty());
    let r = index(&kept, &["--include-deleted"]).await;
    assert_eq!([&r["replaced"], &r["indexed"]], [1, 11], "{r}");
    assert!(search(&kept, &["simple"]).await.0.is_empty());
    assert_eq!(
        search(&kept, &["--include-deleted", "simple"]).await.0,
        ["plain"]
    );

    // From an export file: its deleted rows are left out unless asked for too.
    let export = temp_path("with-deleted.jsonl");
    ctl(
        &h,
        &[
            "export",
            "--format",
            "jsonl",
            "--include-deleted",
            "--out",
            export.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let from_file = temp_path("index-from-file");
    let r = index(&from_file, &["--from", export.to_str().unwrap()]).await;
    assert_eq!([&r["read"], &r["indexed"]], [11, 7], "{r}");
    let r = index(
        &from_file,
        &["--from", export.to_str().unwrap(), "--include-deleted"],
    )
    .await;
    assert_eq!([&r["added"], &r["indexed"]], [4, 11], "{r}");
    let (out, _) = ctl_outcome(
        &h,
        &table,
        &["extract", "--from", export.to_str().unwrap(), "st.p"],
    )
    .await
    .unwrap();
    assert_eq!(out.lines().count(), 2, "{out}");
    for p in [&dir, &kept, &from_file] {
        let _cleanup = std::fs::remove_dir_all(p);
    }
    let _cleanup = std::fs::remove_file(&export);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_asset_is_never_reocrd_and_its_dead_letters_are_left_out() {
    let h = with_deleted().await;
    let v: serde_json::Value = serde_json::from_str(
        &ctl(&h, &["reocr", "--status", "done", "--dry-run", "--json"])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (v["assets"].as_u64(), v["deleted_left_out"].as_u64()),
        (Some(6), Some(3))
    );
    let v: serde_json::Value = serde_json::from_str(
        &ctl(
            &h,
            &[
                "reocr",
                "--yes",
                "--json",
                "gone/deleted",
                "plain",
                "gone/renamed",
            ],
        )
        .await
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (v["enqueued"].as_u64(), v["deleted_left_out"].as_u64()),
        (Some(1), Some(2))
    );
    let queued: Vec<String> = h
        .receive()
        .await
        .iter()
        .map(|m| {
            shared::message::WorkMessage::parse(m.body().unwrap())
                .unwrap()
                .public_id
        })
        .collect();
    assert_eq!(queued, ["plain"]);

    for id in ["gone/deleted", "broken/one"] {
        h.sqs
            .send_message()
            .queue_url(&h.stack.dead_letter_queue_url)
            .message_body(shared::message::WorkMessage::new(id, "image", "upload").to_body())
            .send()
            .await
            .unwrap();
    }
    let out = ctl(&h, &["dead-letters"]).await.unwrap();
    assert!(
        out.contains("broken/one")
            && !out.contains("gone/deleted")
            && out.contains("1 dead letters listed; 1 of deleted (or renamed) assets left out"),
        "{out}"
    );
    let out = ctl(&h, &["dead-letters", "--include-deleted", "--json"])
        .await
        .unwrap();
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    let gone = rows.iter().find(|r| r["key"] == "gone/deleted").unwrap();
    assert_eq!(gone["deleted_at"], AT);
}
