//! `ocr-ctl notifications` against the emulator's Admin API triggers: enable, disable and
//! status keep to the notifier's URL, are idempotent, and say clearly what went wrong.

use clap::Parser;

use crate::common::Harness;

const NOTIFIER: &str = "https://abc123.lambda-url.us-east-1.on.aws/";
const OTHER: &str = "https://audit.example.com/hook";

/// `ocr-ctl ARGS` with the emulator's credentials (as CLOUDINARY_URL) and API base.
async fn notifications(h: &Harness, args: &[&str], url: &str) -> anyhow::Result<String> {
    let mut argv = vec!["ocr-ctl".to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let mut cli = ocr_ctl::Cli::try_parse_from(argv)?;
    cli.env_overrides = [
        ("CLOUDINARY_URL".to_string(), url.to_string()),
        ("CLOUDINARY_API_BASE".to_string(), h.emulator.base_url()),
    ]
    .into_iter()
    .collect();
    let mut out = Vec::new();
    ocr_ctl::run(cli, &h.sdk, &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

async fn ctl(h: &Harness, args: &[&str]) -> anyhow::Result<String> {
    notifications(h, args, &h.emulator.cloudinary_url()).await
}

/// The emulator's triggers as (uri, event_type), sorted.
fn registered(h: &Harness) -> Vec<(String, String)> {
    let mut all: Vec<_> = h
        .emulator
        .triggers()
        .into_iter()
        .map(|t| (t.uri, t.event_type))
        .collect();
    all.sort();
    all
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = list
        .iter()
        .map(|(u, e)| (u.to_string(), e.to_string()))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enable_disable_and_status_keep_to_the_notifiers_url_and_are_idempotent() {
    let h = Harness::new(vec![], crate::common::stack_settings(), |_| {}).await;
    let enable = ["notifications", "enable", "--url", NOTIFIER];

    // Another URL's trigger, registered first: never touched.
    ctl(
        &h,
        &[
            "notifications",
            "enable",
            "--url",
            OTHER,
            "--events",
            "delete",
        ],
    )
    .await
    .unwrap();

    // A subset, then the rest: one trigger per event type, none twice.
    let out = ctl(&h, &[&enable[..], &["--events", "delete,upload"]].concat())
        .await
        .unwrap();
    assert!(
        out.contains("upload   enabled") && out.contains("2 triggers created"),
        "{out}"
    );
    let out = ctl(&h, &enable).await.unwrap();
    assert!(
        out.contains("upload   already enabled")
            && out.contains("rename   enabled")
            && out.contains("2 triggers created, 2 already there"),
        "{out}"
    );
    let out = ctl(&h, &enable).await.unwrap();
    assert!(out.contains("notifications already enabled"), "{out}");
    assert_eq!(
        registered(&h),
        pairs(&[
            (NOTIFIER, "upload"),
            (NOTIFIER, "delete"),
            (NOTIFIER, "rename"),
            (NOTIFIER, "move"),
            (OTHER, "delete"),
        ])
    );

    // Status: every event enabled, the other URL noted where Cloudinary also sends.
    let out = ctl(
        &h,
        &["notifications", "status", "--url", NOTIFIER, "--json"],
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["notifier_url"], NOTIFIER);
    assert_eq!(v["cloud_name"], "testcloud");
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 4);
    for e in events {
        assert_eq!(e["enabled"], true, "{e}");
        let others = if e["event_type"] == "delete" {
            serde_json::json!([OTHER])
        } else {
            serde_json::json!([])
        };
        assert_eq!(e["other_urls"], others, "{e}");
    }
    let text = ctl(&h, &["notifications", "status", "--url", NOTIFIER])
        .await
        .unwrap();
    assert!(
        text.contains("delete  enabled")
            && text.contains(&format!("also notified: {OTHER}"))
            && text.contains("enabled for every event type"),
        "{text}"
    );

    // Disable: the notifier's four go, the other URL's stays; again, nothing to do.
    let out = ctl(&h, &["notifications", "disable", "--url", NOTIFIER])
        .await
        .unwrap();
    assert!(out.contains("4 triggers deleted"), "{out}");
    assert_eq!(registered(&h), pairs(&[(OTHER, "delete")]));
    let out = ctl(&h, &["notifications", "disable", "--url", NOTIFIER])
        .await
        .unwrap();
    assert!(out.contains("already disabled"), "{out}");
    let v: serde_json::Value = serde_json::from_str(
        &ctl(
            &h,
            &["notifications", "status", "--url", NOTIFIER, "--json"],
        )
        .await
        .unwrap(),
    )
    .unwrap();
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["enabled"] == false),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_event_no_url_bad_credentials_and_a_spent_quota_fail_clearly() {
    let h = Harness::new(vec![], crate::common::stack_settings(), |_| {}).await;
    let calls = || h.emulator.stats().trigger_calls;

    let err = ctl(
        &h,
        &[
            "notifications",
            "enable",
            "--url",
            NOTIFIER,
            "--events",
            "upload,destroy",
        ],
    )
    .await
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("\"destroy\"") && msg.contains("upload, delete, rename, move"),
        "{msg}"
    );
    assert_eq!(calls(), 0, "nothing asked of Cloudinary");

    for action in ["enable", "disable", "status"] {
        let err = ctl(&h, &["notifications", action]).await.unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("--stack-name") && msg.contains("--url"),
            "{action}: {msg}"
        );
    }
    assert_eq!(calls(), 0);

    let wrong = format!(
        "cloudinary://{}:wrong@testcloud",
        h.emulator.config().api_key
    );
    let err = notifications(&h, &["notifications", "enable", "--url", NOTIFIER], &wrong)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("refused the credentials") && msg.contains("HTTP 401"),
        "{msg}"
    );
    assert!(!msg.contains("wrong"), "the secret is never shown: {msg}");

    h.emulator.configure(|c| c.admin_limit = 0);
    let err = ctl(&h, &["notifications", "status", "--url", NOTIFIER])
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("HTTP 420") && msg.contains("quota") && msg.contains("try again"),
        "{msg}"
    );
    assert!(h.emulator.triggers().is_empty());
}
