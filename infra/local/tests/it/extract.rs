//! `ocr-ctl search --regex` and `ocr-ctl extract` against moto: from the index and from an
//! export file, to standard output, a file and S3, with the same rows each way.

use crate::ctl::{
    ctl, ctl_outcome, owned_s3, plain_s3, put, s3_bytes, s3_gunzip, seeded, temp_path,
};

const INVOICES: &[(&str, &str)] = &[
    (
        "invoices/2021/001",
        "INVOICE 1042\nVAT number GB123456789\nTotal 1.234,56 EUR",
    ),
    (
        "invoices/2021/002",
        "Rechnung\nUSt-IdNr. DE987654321\nGesamt 99,00 €\nVAT GB000000042",
    ),
    ("signs/exit", "EXIT\n非常口"),
];

/// The seeded table with the invoices above.
async fn with_invoices() -> crate::common::Harness {
    let h = seeded().await;
    for (id, text) in INVOICES {
        put(&h, id, Some(text), false).await;
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extract_writes_one_row_per_match_the_same_from_the_index_a_file_and_s3() {
    let h = with_invoices().await;
    let table = h.stack.names.results_table.clone();
    let dir = temp_path("index");
    let dir_arg = dir.to_str().unwrap();
    let vat = r"\b(?P<country>GB|DE)(?P<number>\d{9})\b";

    // No index yet: it says how to build one.
    let err = ctl(&h, &["--index-dir", dir_arg, "extract", vat])
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("ocr-ctl index"), "{err:#}");
    ctl(&h, &["--index-dir", dir_arg, "index"]).await.unwrap();

    // From the index, JSON lines to standard output: one row per match, groups named.
    let (out, outcome) = ctl_outcome(
        &h,
        &table,
        &["--index-dir", dir_arg, "extract", vat, "--format", "jsonl"],
    )
    .await
    .unwrap();
    assert_eq!(outcome, ocr_ctl::Outcome::Done);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut got: Vec<(String, String, String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["match"].as_str().unwrap().to_string(),
                r["groups"]["country"].as_str().unwrap().to_string(),
                r["line_number"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let want = vec![
        (
            "invoices/2021/001".into(),
            "GB123456789".into(),
            "GB".into(),
            2,
        ),
        (
            "invoices/2021/002".into(),
            "DE987654321".into(),
            "DE".into(),
            2,
        ),
        (
            "invoices/2021/002".into(),
            "GB000000042".into(),
            "GB".into(),
            4,
        ),
    ];
    assert_eq!(got, want);

    // The same from an export file, to a gzip-compressed CSV file.
    let export = temp_path("all.jsonl");
    ctl(
        &h,
        &[
            "export",
            "--format",
            "jsonl",
            "--out",
            export.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let csv_gz = temp_path("vat.csv.gz");
    let summary = ctl(
        &h,
        &[
            "extract",
            vat,
            "--from",
            export.to_str().unwrap(),
            "--to",
            csv_gz.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    assert!(summary.starts_with("3 matches in 2 texts"), "{summary}");
    let mut csv_text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(&csv_gz).unwrap()),
        &mut csv_text,
    )
    .unwrap();
    let mut lines: Vec<&str> = csv_text.lines().collect();
    assert_eq!(
        lines.remove(0),
        "key,public_id,match,country,number,line_number,line"
    );
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "invoices/2021/001,invoices/2021/001,GB123456789,GB,123456789,2,VAT number GB123456789",
            "invoices/2021/002,invoices/2021/002,DE987654321,DE,987654321,2,USt-IdNr. DE987654321",
            "invoices/2021/002,invoices/2021/002,GB000000042,GB,000000042,4,VAT GB000000042",
        ]
    );
    assert!(!std::path::Path::new(&format!("{}.partial", csv_gz.display())).exists());

    // To S3, as JSON lines (the key's name says so), with a filter.
    let s3 = plain_s3(&h.sdk);
    let bucket = format!("mined-{}", uuid::Uuid::new_v4().simple());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let to = format!("s3://{bucket}/vat/2021.jsonl.gz");
    let summary = ctl(
        &h,
        &[
            "--index-dir",
            dir_arg,
            "extract",
            vat,
            "--to",
            &to,
            "--prefix",
            "invoices/2021/00",
            "--json",
        ],
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!(
        (v["rows"].as_u64(), v["narrowed"].as_bool()),
        (Some(3), Some(true))
    );
    let uploaded = s3_gunzip(&s3, &bucket, "vat/2021.jsonl.gz").await;
    assert_eq!(uploaded.lines().count(), 3);

    // Nothing matched: exit status 1, as grep's; a key that names no object is refused.
    let (_, outcome) = ctl_outcome(
        &h,
        &table,
        &["--index-dir", dir_arg, "extract", r"\bFR\d{11}\b"],
    )
    .await
    .unwrap();
    assert_eq!(outcome, ocr_ctl::Outcome::NothingMatched);
    let err = ctl(
        &h,
        &[
            "--index-dir",
            dir_arg,
            "extract",
            vat,
            "--to",
            &format!("s3://{bucket}/vat/"),
        ],
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("name the object"), "{err:#}");
    for p in [&export, &csv_gz] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn regex_search_answers_from_the_index_counts_and_refuses_a_bad_pattern() {
    let h = with_invoices().await;
    let table = h.stack.names.results_table.clone();
    let dir = temp_path("index");
    let dir_arg = dir.to_str().unwrap();
    ctl(&h, &["--index-dir", dir_arg, "index"]).await.unwrap();

    let out = ctl(
        &h,
        &["--index-dir", dir_arg, "search", "--regex", r"GB\d{9}"],
    )
    .await
    .unwrap();
    assert!(
        out.contains("invoices/2021/001:2\tVAT number >>GB123456789<<"),
        "{out}"
    );
    assert!(
        out.contains("invoices/2021/002:4\tVAT >>GB000000042<<"),
        "{out}"
    );
    let out = ctl(
        &h,
        &[
            "--index-dir",
            dir_arg,
            "search",
            "--regex",
            "-i",
            "--count",
            "--json",
            r"exit|非常口",
        ],
    )
    .await
    .unwrap();
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last, serde_json::json!({"total": 1, "lines": 2}));
    let (_, outcome) = ctl_outcome(
        &h,
        &table,
        &["--index-dir", dir_arg, "search", "--regex", "nowhere"],
    )
    .await
    .unwrap();
    assert_eq!(outcome, ocr_ctl::Outcome::NothingMatched);
    let err = ctl(
        &h,
        &["--index-dir", dir_arg, "search", "--regex", "(unclosed"],
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("invalid pattern"), "{err:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_extract_is_uploaded_in_parts_and_reads_back_whole() {
    let h = seeded().await;
    let s3 = plain_s3(&h.sdk);
    let bucket = format!("parts-{}", uuid::Uuid::new_v4().simple());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let file = temp_path("big.csv");
    // 11 MiB of distinct lines: three parts of 5 MiB.
    let body: String = (0..11 * 1024 * 64).map(|i| format!("{i:015}\n")).collect();
    std::fs::write(&file, &body).unwrap();
    let sent = ocr_ctl::extract::upload(&owned_s3(&h.sdk), &bucket, "big.csv", &file, 5 << 20)
        .await
        .unwrap();
    assert_eq!(sent, body.len() as u64);
    let back = s3_bytes(&s3, &bucket, "big.csv").await;
    assert!(back == body.as_bytes(), "the object is the file");
    let _ = std::fs::remove_file(&file);
}
