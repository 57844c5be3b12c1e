//! Cloudinary's own Python SDK proves both sides of the emulator's notifications: it manages
//! the triggers through the Admin API, uploads, overwrites, renames and destroys through the
//! Upload API, and verifies every signed webhook it receives (and refuses tampered ones), in
//! SHA-1 and in SHA-256 accounts; the emulator's own record agrees.

use std::collections::BTreeSet;
use std::time::Duration;

use cloudinary_emulator::{Emulator, EmulatorConfig, generate, notification_signature};

/// Runs `infra/scripts/cloudinary_sdk_check.py notifications` against `emu`, its calls and
/// notifications signed in `algorithm`; its output, or a failure with it.
async fn sdk_notifications(emu: &Emulator, algorithm: &'static str) -> String {
    let (root, python) = crate::common::venv_python();
    let (url, base) = (emu.cloudinary_url(), emu.base_url());
    // The check waits for the emulator's deliveries: it runs off the runtime's workers.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(root.join("infra/scripts/cloudinary_sdk_check.py"))
            .arg("notifications")
            .env("CLOUDINARY_URL", url)
            .env("CLOUDINARY_API_BASE", base)
            .env("SDK_CHECK_ALGORITHM", algorithm)
            .output()
            .expect("running Python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "Cloudinary's SDK against the emulator's notifications ({algorithm}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// What the emulator recorded of the SDK check's run agrees with what the SDK received and
/// verified: six notifications (two uploads to two triggers, a rename, a delete), each
/// delivered at the first attempt and signed over its exact body in `algorithm`, and the three
/// triggers left.
async fn assert_the_emulator_agrees(emu: &Emulator, printed: &str, sha256: bool) {
    assert!(printed.contains("every check passed"), "{printed}");
    assert!(printed.contains(r#"{"received": 6}"#), "{printed}");
    assert!(emu.wait_notifications_idle(Duration::from_secs(10)).await);
    let stats = emu.stats();
    assert_eq!(
        (
            stats.notifications_sent,
            stats.notifications_delivered,
            stats.notifications_failed,
            stats.notifications_lost,
            stats.notifications_retried
        ),
        (6, 6, 0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(
        (stats.upload_calls, stats.rename_calls, stats.destroy_calls),
        (3, 2, 2),
        "a file, a data URI over it, one without overwrite; a rename and one of a missing asset; two destroys"
    );
    assert_eq!(stats.ocr_billed, 1, "the overwritten image's OCR");
    let secret = emu.config().api_secret;
    let sent = emu.notifications();
    assert_eq!(sent.len(), 6);
    for n in &sent {
        assert!(n.delivered() && n.attempt == 1, "{n:?}");
        assert_eq!(
            n.signature,
            notification_signature(n.body.as_bytes(), n.timestamp, &secret, sha256)
        );
        assert_eq!(n.signature.len(), if sha256 { 64 } else { 40 });
        assert_eq!(n.json()["notification_type"], n.notification_type.as_str());
    }
    let kinds: Vec<&str> = sent.iter().map(|n| n.notification_type.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "upload").count(), 4);
    assert!(kinds.contains(&"rename") && kinds.contains(&"delete"));
    let events: BTreeSet<String> = emu.triggers().into_iter().map(|t| t.event_type).collect();
    assert_eq!(
        events,
        BTreeSet::from(["delete".into(), "rename".into(), "upload".into()]),
        "the second upload trigger was deleted"
    );
    assert!(
        emu.assets()
            .iter()
            .all(|a| !a.public_id.starts_with("sdk/")),
        "the renamed asset was destroyed"
    );
}

/// A SHA-1 account: the SDK's triggers, uploads, rename and destroy, and its verification of
/// every notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudinarys_own_sdk_verifies_the_emulators_notifications_in_sha1() {
    let emu = Emulator::start(EmulatorConfig::new("notifycloud"), generate(3), 0)
        .await
        .unwrap();
    let printed = sdk_notifications(&emu, "sha1").await;
    assert_the_emulator_agrees(&emu, &printed, false).await;
}

/// An account that requires SHA-256 signs its notifications in SHA-256, and the SDK verifies
/// them with that algorithm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudinarys_own_sdk_verifies_the_emulators_notifications_in_sha256() {
    let mut config = EmulatorConfig::new("notifycloud256");
    config.require_sha256 = true;
    let emu = Emulator::start(config, generate(3), 0).await.unwrap();
    let printed = sdk_notifications(&emu, "sha256").await;
    assert_the_emulator_agrees(&emu, &printed, true).await;
}
