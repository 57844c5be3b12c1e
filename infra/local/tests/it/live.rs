//! Live updates end to end on moto and the emulator: Cloudinary's Upload API methods (as a
//! user's application calls them) change the account, the emulator signs and sends the
//! notifications (with faults when asked), the notifier served locally with the Lambda's own
//! handler answers them, and the worker drains what they enqueued. The table ends as the
//! account is, whatever the order of delivery, and nothing is paid twice; requests that are
//! not Cloudinary's change nothing.

use std::time::{Duration, SystemTime};

use cloudinary_emulator::{Emulator, NotificationFaults, UploadClient, notification_signature};

use crate::common::{Harness, Item, asset, n, s, stack_settings};

/// Registers `url` for the notifications the notifier acts on, through the Admin API.
async fn register(emu: &Emulator, url: &str) {
    local_stack::live::register(emu, url)
        .await
        .expect("the triggers API registers the notifier");
}

/// Waits until every delivery ended (retries included).
async fn settle(emu: &Emulator) {
    assert!(
        emu.wait_notifications_idle(Duration::from_secs(60)).await,
        "deliveries still pending after a minute"
    );
}

fn tombstone(item: &Item) -> (Option<String>, Option<String>) {
    (s(item, "deletedAt"), s(item, "renamedTo"))
}

/// Every asset of the account has its current version's text under its public_id, and every
/// other key of the table is marked gone (deleted or renamed) or was never stored.
async fn assert_table_follows_account(h: &Harness, context: &str) {
    let items = h.items().await;
    let assets = h.emulator.assets();
    for a in &assets {
        let item = items
            .get(&a.public_id)
            .unwrap_or_else(|| panic!("{context}: {} is not in the table", a.public_id));
        assert_eq!(
            (
                s(item, "status").as_deref(),
                s(item, "text"),
                n(item, "version"),
                tombstone(item)
            ),
            (
                Some(if a.text.is_some() { "done" } else { "no_text" }),
                a.text.clone(),
                Some(a.answered_version()),
                (None, None)
            ),
            "{context}: {}",
            a.public_id
        );
    }
    for (key, item) in &items {
        if assets.iter().any(|a| &a.public_id == key) {
            continue;
        }
        let (deleted, renamed) = tombstone(item);
        assert!(
            deleted.is_some() || renamed.is_some(),
            "{context}: {key} is no longer in the account but its item is not marked: {item:?}"
        );
    }
}

/// Each kind of change, once: an upload, an upload over an existing public_id, a rename and a
/// destroy, each reflected in the table after the notifications and one drain; a pass after
/// them pays nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kind_of_change_reaches_the_table_through_its_notification() {
    let h = Harness::new(
        vec![
            asset("keep/a", Some("ALPHA\n")),
            asset("keep/b", Some("BRAVO\n")),
            asset("keep/c", Some("CHARLIE\n")),
        ],
        stack_settings(),
        |_| {},
    )
    .await;
    let lister = h.lister(&[("LISTER_PASS_INTERVAL_HOURS", "0")]);
    let worker = h.worker(&[]);
    assert_eq!(h.list_all(&lister).await, 3);
    h.drain(&worker, 2, Duration::from_secs(60)).await;
    assert_eq!(h.emulator.stats().ocr_billed, 3);

    let live = h.serve_notifier(&[]).await.unwrap();
    register(&h.emulator, &live.url).await;
    let client = h.emulator.upload_client();
    client
        .upload(Some("live/new"), b"NEW\n", "upload", false)
        .await
        .unwrap();
    client
        .upload(Some("keep/a"), b"ALPHA TWO\n", "upload", true)
        .await
        .unwrap();
    client
        .rename("keep/b", "moved/b", "upload", false)
        .await
        .unwrap();
    client.destroy("keep/c", "upload").await.unwrap();
    settle(&h.emulator).await;
    assert_eq!(
        live.statuses().into_iter().collect::<Vec<_>>(),
        vec![(200, 4)],
        "{:?}",
        live.answered()
    );
    assert_eq!(h.emulator.stats().notifications_delivered, 4);
    h.drain(&worker, 2, Duration::from_secs(60)).await;

    let item = |id: &'static str| {
        let h = &h;
        async move { h.item(id).await.expect(id) }
    };
    assert_eq!(s(&item("live/new").await, "text").as_deref(), Some("NEW\n"));
    assert_eq!(
        s(&item("keep/a").await, "text").as_deref(),
        Some("ALPHA TWO\n")
    );
    let moved = item("moved/b").await;
    assert_eq!(s(&moved, "text").as_deref(), Some("BRAVO\n"));
    assert_eq!(s(&moved, "renamedFrom").as_deref(), Some("keep/b"));
    assert_eq!(
        s(&item("keep/b").await, "renamedTo").as_deref(),
        Some("moved/b")
    );
    let deleted = item("keep/c").await;
    assert!(s(&deleted, "deletedAt").is_some(), "{deleted:?}");
    assert_eq!(
        s(&deleted, "text").as_deref(),
        Some("CHARLIE\n"),
        "KeepDeletedText is on by default"
    );
    assert_table_follows_account(&h, "after the notifications").await;
    assert_eq!(
        h.emulator.stats().ocr_billed,
        5,
        "the new image and the new version; the rename moved the text without OCR"
    );

    // The next scheduled pass lists the uploads and the renamed image again: nothing to pay.
    h.list_all(&lister).await;
    h.drain(&worker, 2, Duration::from_secs(60)).await;
    assert_eq!(h.emulator.stats().ocr_billed, 5);
    assert_table_follows_account(&h, "after the next pass").await;
    assert!(h.dlq().await.is_empty());
}

/// Deliveries delayed at random (so reordered), duplicated, retried after answers that were
/// lost: sequences of uploads, overwrites, renames (there and back), destroys and uploads
/// again at a destroyed public_id end in the table the account has, and no version is paid
/// twice. Three seeds, three orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn out_of_order_duplicated_and_retried_notifications_end_in_the_right_table() {
    for seed in [11_u64, 12, 13] {
        let h = Harness::new(
            vec![
                asset("keep/a", Some("ALPHA\n")),
                asset("keep/b", Some("BRAVO\n")),
                asset("keep/c", Some("CHARLIE\n")),
            ],
            stack_settings(),
            |c| {
                c.seed = seed;
                // A call to Cloudinary takes a while: two changes by one client are not
                // stamped with the same millisecond (events on one key at the very same time
                // are ordered only as far as their asset ids tell).
                c.latency = Duration::from_millis(2);
                c.notification_faults = NotificationFaults {
                    lost_rate: 0.0,
                    duplicate_rate: 0.5,
                    delay_max: Duration::from_millis(1500),
                    answer_lost_rate: 0.2,
                    max_retries: 3,
                    retry_interval: Duration::from_millis(300),
                };
            },
        )
        .await;
        let lister = h.lister(&[]);
        let worker = h.worker(&[]);
        assert_eq!(h.list_all(&lister).await, 3);
        h.drain(&worker, 2, Duration::from_secs(60)).await;

        let live = h.serve_notifier(&[]).await.unwrap();
        register(&h.emulator, &live.url).await;
        let client: UploadClient = h.emulator.upload_client();
        client
            .upload(Some("seq/x"), b"X ONE\n", "upload", false)
            .await
            .unwrap();
        client
            .upload(Some("seq/x"), b"X TWO\n", "upload", true)
            .await
            .unwrap();
        client
            .rename("seq/x", "seq/y", "upload", false)
            .await
            .unwrap();
        client
            .upload(Some("seq/x"), b"X THREE\n", "upload", false)
            .await
            .unwrap();
        client
            .rename("keep/a", "keep/a2", "upload", false)
            .await
            .unwrap();
        client.destroy("keep/a2", "upload").await.unwrap();
        client
            .rename("keep/b", "keep/b2", "upload", false)
            .await
            .unwrap();
        client
            .rename("keep/b2", "keep/b", "upload", false)
            .await
            .unwrap();
        client.destroy("keep/c", "upload").await.unwrap();
        client
            .upload(Some("keep/c"), b"CHARLIE AGAIN\n", "upload", false)
            .await
            .unwrap();
        settle(&h.emulator).await;
        let stats = h.emulator.stats();
        assert!(
            stats.notifications_duplicated > 0 && stats.notifications_retried > 0,
            "seed {seed}: the faults happened: {stats:?}"
        );
        assert!(
            live.answered().iter().all(|a| a.status == 200),
            "seed {seed}: {:?}",
            live.answered()
        );
        h.drain(&worker, 2, Duration::from_secs(120)).await;
        let context = format!("seed {seed}");
        assert_table_follows_account(&h, &context).await;
        let billed = h.emulator.stats().ocr_billed;
        // Three backfilled, then at most the four uploads (an overwritten version may be
        // skipped when the newer one's notification is handled first).
        assert!(
            (3 + 3..=3 + 4).contains(&billed),
            "{context}: {billed} paid"
        );
        assert!(h.dlq().await.is_empty(), "{context}");
    }
}

/// A notification lost for good (Cloudinary gave up, or the trigger was missing) is caught by
/// the next scheduled pass: the upload is listed and OCR'd then.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_notification_is_caught_by_the_next_pass() {
    let h = Harness::new(
        vec![asset("keep/a", Some("ALPHA\n"))],
        stack_settings(),
        |c| c.notification_faults.lost_rate = 1.0,
    )
    .await;
    let lister = h.lister(&[("LISTER_PASS_INTERVAL_HOURS", "0")]);
    let worker = h.worker(&[]);
    assert_eq!(h.list_all(&lister).await, 1);
    h.drain(&worker, 1, Duration::from_secs(60)).await;
    let live = h.serve_notifier(&[]).await.unwrap();
    register(&h.emulator, &live.url).await;
    // Search compares whole seconds: the upload lands in a later second than the pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.emulator
        .upload_client()
        .upload(Some("late/new"), b"LATE\n", "upload", false)
        .await
        .unwrap();
    settle(&h.emulator).await;
    assert_eq!(h.emulator.stats().notifications_lost, 1);
    assert!(live.answered().is_empty());
    h.drain(&worker, 1, Duration::from_secs(30)).await;
    assert!(h.item("late/new").await.is_none());

    let pass = lister::handle(
        &lister,
        serde_json::json!({}),
        SystemTime::now() + Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(pass.mode, shared::lister::PassMode::Incremental);
    assert_eq!(pass.enqueued, 1, "{pass:?}");
    h.drain(&worker, 1, Duration::from_secs(30)).await;
    assert_eq!(
        s(&h.item("late/new").await.unwrap(), "text").as_deref(),
        Some("LATE\n")
    );
    assert_eq!(h.emulator.stats().ocr_billed, 2);
}

/// A request of the refusal test: its name, body, timestamp, signature and expected status.
type Case<'a> = (&'a str, Vec<u8>, Option<&'a str>, Option<&'a str>, u16);

/// A signed, valid notification for the tests of refusals: its body, timestamp and signature.
fn signed(emu: &Emulator, body: &[u8], at: SystemTime) -> (Vec<u8>, String, String) {
    let ts = shared::clock::epoch_ms(at) / 1000;
    let c = emu.config();
    let sig = notification_signature(body, ts, &c.api_secret, c.signs_notifications_in_sha256());
    (body.to_vec(), ts.to_string(), sig)
}

async fn post(
    url: &str,
    body: Vec<u8>,
    timestamp: Option<&str>,
    signature: Option<&str>,
) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = timestamp {
        request = request.header("X-Cld-Timestamp", t);
    }
    if let Some(s) = signature {
        request = request.header("X-Cld-Signature", s);
    }
    let answer = request.send().await.expect("the notifier answers");
    let status = answer.status().as_u16();
    (status, answer.text().await.unwrap_or_default())
}

/// Forged, stale, future, oversized and malformed requests, and a few hundred mutations of a
/// valid one (body, timestamp, signature): each refused with its status, nothing enqueued and
/// nothing written. The valid request itself is then accepted (the checks can pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_that_are_not_cloudinarys_are_refused_and_change_nothing() {
    let h = Harness::new(Vec::new(), stack_settings(), |_| {}).await;
    let live = h.serve_notifier(&[]).await.unwrap();
    let url = live.url.clone();
    let now = SystemTime::now();
    let valid = br#"{"notification_type":"upload","public_id":"forged/x","type":"upload","resource_type":"image","version":1700000000,"asset_id":"0123456789abcdef0123456789abcdef"}"#;
    let (body, ts, sig) = signed(&h.emulator, valid, now);

    let forged = {
        let c = h.emulator.config();
        let ts: u64 = ts.parse().unwrap();
        notification_signature(
            valid,
            ts,
            "not-the-secret",
            c.signs_notifications_in_sha256(),
        )
    };
    let (_, stale_ts, stale_sig) = signed(&h.emulator, valid, now - Duration::from_secs(7_300));
    let (_, future_ts, future_sig) = signed(&h.emulator, valid, now + Duration::from_secs(3_600));
    let big: Vec<u8> = [
        &valid[..valid.len() - 1],
        b",\"pad\":\"",
        &vec![b'a'; 600 << 10],
        b"\"}",
    ]
    .concat();
    let (_, big_ts, big_sig) = signed(&h.emulator, &big, now);
    let (_, bad_ts, bad_sig) = signed(&h.emulator, b"{\"notification_type\":", now);
    let cases: Vec<Case> = vec![
        ("forged", body.clone(), Some(&ts), Some(&forged), 401),
        ("unsigned", body.clone(), Some(&ts), None, 401),
        ("no timestamp", body.clone(), None, Some(&sig), 401),
        (
            "stale",
            body.clone(),
            Some(&stale_ts),
            Some(&stale_sig),
            401,
        ),
        (
            "future",
            body.clone(),
            Some(&future_ts),
            Some(&future_sig),
            401,
        ),
        ("oversized", big.clone(), Some(&big_ts), Some(&big_sig), 413),
        (
            "malformed",
            b"{\"notification_type\":".to_vec(),
            Some(&bad_ts),
            Some(&bad_sig),
            400,
        ),
    ];
    for (name, body, ts, sig, want) in cases {
        let (status, answer) = post(&url, body, ts, sig).await;
        assert_eq!(status, want, "{name}: {answer}");
        assert!(
            !answer.contains("forged/x"),
            "{name}: the body is never echoed"
        );
    }

    // Mutations of the valid request: a byte of the body, of the timestamp or of the
    // signature changed (a fixed generator, so that a failure repeats).
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound as u64) as usize
    };
    let mut refused = 0;
    for round in 0..300 {
        let (mut b, mut t, mut g) = (
            body.clone(),
            ts.clone().into_bytes(),
            sig.clone().into_bytes(),
        );
        let target = match round % 3 {
            0 => &mut b,
            1 => &mut t,
            _ => &mut g,
        };
        let i = next(target.len());
        let old = target[i];
        target[i] = loop {
            // Never the same hex digit in another case: that is the same signature.
            const ALPHABET: &[u8] = b" !\"#0123456789:;abcdefghqxyz{}[],\\";
            let c = ALPHABET[next(ALPHABET.len())];
            if c != old {
                break c;
            }
        };
        let (t, g) = (String::from_utf8(t).unwrap(), String::from_utf8(g).unwrap());
        let (status, answer) = post(&url, b, Some(&t), Some(&g)).await;
        assert!(
            (400..500).contains(&status),
            "round {round}: a mutation was answered {status}: {answer}"
        );
        refused += 1;
    }
    assert_eq!(refused, 300);
    let (work, dead) = h.depths().await.unwrap();
    assert_eq!((work.total(), dead.total()), (0, 0), "nothing enqueued");
    assert!(h.items().await.is_empty(), "nothing written");
    assert_eq!(live.answered().len(), 307);

    let (status, answer) = post(&url, body, Some(&ts), Some(&sig)).await;
    assert_eq!((status, answer.as_str()), (200, r#"{"result":"enqueued"}"#));
    let (work, _) = h.depths().await.unwrap();
    assert_eq!(work.total(), 1);
}
