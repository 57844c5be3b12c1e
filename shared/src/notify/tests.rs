//! The notifier's unit tier: verification as Cloudinary signs, the payloads it reads, and an
//! exhaustive search over the orders in which an account's changes, their notifications
//! (late, reordered, repeated) and the worker's runs can interleave, with the real worker and
//! the in-memory table: each order must end in the table the account calls for, paying at most
//! once per image version.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::*;
use crate::clock::{Clock, from_epoch_ms};
use crate::error::{ErrorClass, RemoteError};
use crate::ocr::{AssetFields, OcrOutcome, OcrResult};
use crate::queue::memory::MemoryQueue;
use crate::store::Status;
use crate::store::memory::MemoryResultStore;
use crate::worker::{Api, InboundRecord, OcrAnswer, OcrService, Worker, WorkerSettings};

const NOW_S: u64 = 1_800_000_000;
const SECRET: &str = "test-secret-not-real";

fn now() -> SystemTime {
    from_epoch_ms(NOW_S * 1000)
}

fn settings(algorithm: SignatureAlgorithm) -> NotifierSettings {
    NotifierSettings::new(Secret::new(SECRET), algorithm, Scope::default())
}

fn sign(body: &[u8], ts: u64, algorithm: SignatureAlgorithm) -> String {
    digest(
        algorithm,
        &[body, ts.to_string().as_bytes(), SECRET.as_bytes()],
    )
}

fn request<'a>(body: &'a [u8], ts: &'a str, signature: &'a str) -> Request<'a> {
    Request {
        method: "POST",
        timestamp: Some(ts),
        signature: Some(signature),
        body,
    }
}

#[test]
fn a_signature_is_the_hash_of_body_timestamp_and_secret_in_the_account_s_algorithm() {
    let body = br#"{"notification_type":"upload","public_id":"a"}"#;
    let ts = NOW_S.to_string();
    for algorithm in [SignatureAlgorithm::Sha1, SignatureAlgorithm::Sha256] {
        let good = sign(body, NOW_S, algorithm);
        assert_eq!(
            good.len(),
            if algorithm == SignatureAlgorithm::Sha1 {
                40
            } else {
                64
            }
        );
        let s = settings(algorithm);
        assert_eq!(verify(&request(body, &ts, &good), &s, now()), Ok(NOW_S));
        // Upper-case hex is the same digest.
        let upper = good.to_ascii_uppercase();
        assert_eq!(verify(&request(body, &ts, &upper), &s, now()), Ok(NOW_S));
        // The other algorithm's digest, a re-serialised body, another timestamp: refused.
        let other = match algorithm {
            SignatureAlgorithm::Sha1 => SignatureAlgorithm::Sha256,
            SignatureAlgorithm::Sha256 => SignatureAlgorithm::Sha1,
        };
        let wrong = sign(body, NOW_S, other);
        assert_eq!(
            verify(&request(body, &ts, &wrong), &s, now()),
            Err(Refusal::BadSignature)
        );
        let spaced = br#"{"notification_type": "upload", "public_id": "a"}"#;
        assert_eq!(
            verify(&request(spaced, &ts, &good), &s, now()),
            Err(Refusal::BadSignature)
        );
        let later = (NOW_S + 1).to_string();
        assert_eq!(
            verify(&request(body, &later, &good), &s, now()),
            Err(Refusal::BadSignature)
        );
    }
}

#[test]
fn stale_future_unsigned_oversized_and_non_post_requests_are_refused_before_the_body_is_read() {
    let s = settings(SignatureAlgorithm::Sha1);
    let body = br#"{"notification_type":"upload","public_id":"a"}"#;
    let at = |ts: u64| (ts.to_string(), sign(body, ts, SignatureAlgorithm::Sha1));
    // Exactly at the window's edges: accepted.
    for ts in [NOW_S - 7200, NOW_S + 300] {
        let (t, sig) = at(ts);
        assert_eq!(verify(&request(body, &t, &sig), &s, now()), Ok(ts));
    }
    let (t, sig) = at(NOW_S - 7201);
    assert_eq!(
        verify(&request(body, &t, &sig), &s, now()),
        Err(Refusal::Stale)
    );
    let (t, sig) = at(NOW_S + 301);
    assert_eq!(
        verify(&request(body, &t, &sig), &s, now()),
        Err(Refusal::Ahead)
    );
    let (t, sig) = at(NOW_S);
    let mut unsigned = request(body, &t, &sig);
    unsigned.signature = None;
    assert_eq!(verify(&unsigned, &s, now()), Err(Refusal::Unsigned));
    let mut untimed = request(body, &t, &sig);
    untimed.timestamp = None;
    assert_eq!(verify(&untimed, &s, now()), Err(Refusal::Unsigned));
    for bad_ts in ["", "-5", "+5", "1.5", "abc", " "] {
        assert_eq!(
            verify(&request(body, bad_ts, &sig), &s, now()),
            Err(Refusal::Unsigned),
            "{bad_ts:?}"
        );
    }
    let mut get = request(body, &t, &sig);
    get.method = "GET";
    assert_eq!(verify(&get, &s, now()), Err(Refusal::Method));
    let big = vec![b' '; s.max_body + 1];
    let big_sig = sign(&big, NOW_S, SignatureAlgorithm::Sha1);
    assert_eq!(
        verify(&request(&big, &t, &big_sig), &s, now()),
        Err(Refusal::TooLarge)
    );
    assert_eq!(Refusal::TooLarge.status(), 413);
    assert_eq!(Refusal::Stale.status(), 401);
    assert_eq!(Refusal::Malformed.status(), 400);
}

#[test]
fn payloads_are_read_as_cloudinary_writes_them_and_the_rest_is_ignored() {
    let n = parse(
        br#"{"notification_type":"upload","public_id":"f/a","type":"private","resource_type":"image","version":1799999999,"format":"png","tags":["x"],"timestamp":"2027-01-15T08:00:00Z","extra":{"k":1}}"#,
        NOW_S,
    )
    .unwrap();
    assert_eq!(
        n.change,
        Change::Upload {
            asset: AssetRef {
                public_id: "f/a".into(),
                delivery_type: "private".into(),
                resource_type: "image".into()
            },
            version: Some(1_799_999_999),
            format: Some("png".into()),
            tags: Some(vec!["x".into()]),
        }
    );
    assert_eq!(
        n.at_ms,
        epoch_ms(parse_rfc3339("2027-01-15T08:00:00Z").unwrap())
    );
    let n = parse(
        br#"{"notification_type":"delete","resources":[{"public_id":"a","type":"upload","resource_type":"image","version":"12","asset_id":"e1"},{"public_id":"v","resource_type":"video"}]}"#,
        NOW_S,
    )
    .unwrap();
    let Change::Delete { assets } = n.change else {
        panic!("a delete")
    };
    assert_eq!(assets.len(), 2);
    assert_eq!(assets[0].1, Some(12));
    assert_eq!(assets[0].2.as_deref(), Some("e1"));
    assert_eq!(assets[1].2, None);
    assert_eq!(n.at_ms, NOW_S * 1000, "no timestamp field: the signed one");
    let n = parse(
        br#"{"notification_type":"rename","from_public_id":"a","to_public_id":"b","type":"upload","resource_type":"image"}"#,
        NOW_S,
    )
    .unwrap();
    assert!(matches!(n.change, Change::Rename { version: None, .. }));
    let n = parse(
        br#"{"notification_type":"move","resources":{"a":{"from_asset_folder":"x","to_asset_folder":"y"}}}"#,
        NOW_S,
    )
    .unwrap();
    assert_eq!(
        n.change,
        Change::Other("move".into()),
        "a move that keeps the public_id"
    );
    for bad in [
        &b"not json"[..],
        b"[1,2]",
        b"{}",
        br#"{"notification_type":5}"#,
        br#"{"notification_type":"upload"}"#,
        br#"{"notification_type":"upload","public_id":""}"#,
        br#"{"notification_type":"delete","resources":"a"}"#,
        br#"{"notification_type":"delete","resources":[{"type":"upload"}]}"#,
        br#"{"notification_type":"rename","from_public_id":"a"}"#,
    ] {
        assert_eq!(
            parse(bad, NOW_S),
            Err(Refusal::Malformed),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

/// A small deterministic generator (xorshift), so the fuzz run replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn notifier() -> Notifier<Arc<MemoryResultStore>, Arc<MemoryQueue>> {
    Notifier::new(
        Arc::new(MemoryResultStore::new()),
        Arc::new(MemoryQueue::new()),
        settings(SignatureAlgorithm::Sha1),
    )
}

/// Mutated bodies and headers of valid notifications: anything whose signature no longer
/// matches is refused and changes nothing; a mutation that keeps the signature (the header's
/// case, say) is the same notification.
#[tokio::test]
async fn a_fuzz_run_over_bodies_and_headers_changes_nothing_unless_the_signature_holds() {
    let n = notifier();
    let bodies: [&[u8]; 3] = [
        br#"{"notification_type":"upload","public_id":"fz/a","type":"upload","resource_type":"image","version":100}"#,
        br#"{"notification_type":"delete","resources":[{"public_id":"fz/b","type":"upload","resource_type":"image","version":100}]}"#,
        br#"{"notification_type":"rename","from_public_id":"fz/c","to_public_id":"fz/d","type":"upload","resource_type":"image"}"#,
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut refused = 0;
    for round in 0..3000 {
        let body = bodies[round % bodies.len()];
        let ts = NOW_S - rng.below(100) as u64;
        let mut b = body.to_vec();
        let mut t = ts.to_string();
        let mut sig = sign(&b, ts, SignatureAlgorithm::Sha1);
        match rng.below(6) {
            0 => {
                let i = rng.below(b.len());
                b[i] ^= (rng.next() as u8) | 1;
            }
            1 => {
                b.truncate(rng.below(b.len()));
            }
            2 => b.extend_from_slice(b" "),
            3 => {
                let i = rng.below(sig.len());
                let c = if &sig[i..=i] == "0" { "1" } else { "0" };
                sig.replace_range(i..=i, c);
            }
            4 => t.push('0'),
            _ => {
                let i = rng.below(b.len());
                b.insert(i, b'"');
            }
        }
        let outcome = n.handle(&request(&b, &t, &sig), now()).await;
        assert!(
            matches!(outcome, Outcome::Refused(_)),
            "round {round}: {outcome:?} for {}",
            String::from_utf8_lossy(&b)
        );
        refused += 1;
    }
    assert_eq!(refused, 3000);
    assert!(n.store.is_empty(), "a refused request wrote nothing");
    assert!(n.queue.sent().is_empty(), "a refused request sent nothing");
    // The same bodies, signed: applied.
    for body in bodies {
        let sig = sign(body, NOW_S, SignatureAlgorithm::Sha1);
        let outcome = n
            .handle(&request(body, &NOW_S.to_string(), &sig), now())
            .await;
        assert_eq!(outcome.status(), 200, "{outcome:?}");
    }
    assert_eq!(n.queue.sent().len(), 2, "the upload and the renamed asset");
}

#[tokio::test]
async fn uploads_outside_the_scope_and_other_types_are_acknowledged_and_ignored() {
    let mut n = notifier();
    n.settings.scope = Scope {
        prefixes: vec!["invoices/".into()],
        ..Scope::default()
    };
    let upload = |id: &str| Notification {
        change: Change::Upload {
            asset: AssetRef {
                public_id: id.into(),
                delivery_type: "upload".into(),
                resource_type: "image".into(),
            },
            version: Some(5),
            format: None,
            tags: None,
        },
        at_ms: NOW_S * 1000,
    };
    assert_eq!(
        n.apply(&upload("photos/a"), now()).await,
        Ok(Outcome::Ignored("out_of_scope"))
    );
    assert_eq!(
        n.apply(&upload("invoices/a"), now()).await,
        Ok(Outcome::Enqueued(1))
    );
    let other = Notification {
        change: Change::Other("resource_tags_changed".into()),
        at_ms: 0,
    };
    assert_eq!(
        n.apply(&other, now()).await,
        Ok(Outcome::Ignored("not_acted_on"))
    );
    // A delete of an image outside the scope the stack never met leaves no tombstone.
    let delete = Notification {
        change: Change::Delete {
            assets: vec![(
                AssetRef {
                    public_id: "photos/a".into(),
                    delivery_type: "upload".into(),
                    resource_type: "image".into(),
                },
                Some(5),
                None,
            )],
        },
        at_ms: NOW_S * 1000,
    };
    assert_eq!(
        n.apply(&delete, now()).await,
        Ok(Outcome::Deleted {
            marked: 0,
            named: 1
        })
    );
    assert!(n.store.item("photos/a").is_none());
    let sent = n.queue.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message.public_id, "invoices/a");
    assert_eq!(sent[0].message.version, Some(5));
}

// ---- The exhaustive search over interleavings ----

/// One change to the account, at a time (Unix seconds).
#[derive(Debug, Clone)]
enum Edit {
    Upload {
        id: &'static str,
        text: &'static str,
    },
    Rename {
        from: &'static str,
        to: &'static str,
    },
    Delete {
        id: &'static str,
    },
}

/// How Cloudinary may behave where it does not document: whether a rename gives the asset a
/// new version, and whether its notification carries one.
#[derive(Debug, Clone, Copy)]
struct Behaviour {
    rename_bumps_version: bool,
    rename_carries_version: bool,
    /// Whether answers and notifications carry `asset_id`.
    asset_ids: bool,
}

/// The account: each public_id's version, text and asset id.
#[derive(Debug, Clone, Default)]
struct Account {
    assets: BTreeMap<String, (u64, String, String)>,
    billed: HashMap<(String, u64), u32>,
    uploads: u32,
    asset_ids: bool,
}

/// Applies an edit at time `at`, returning its notification.
fn edit(account: &mut Account, e: &Edit, at: u64, how: Behaviour) -> Notification {
    let asset = |id: &str| AssetRef {
        public_id: id.into(),
        delivery_type: "upload".into(),
        resource_type: "image".into(),
    };
    let change = match e {
        Edit::Upload { id, text } => {
            account.uploads += 1;
            // An upload over an existing image keeps its asset id; a new image has its own.
            let asset_id = match account.assets.get(*id) {
                Some((_, _, kept)) => kept.clone(),
                None => format!("asset-{}", account.uploads),
            };
            account
                .assets
                .insert(id.to_string(), (at, text.to_string(), asset_id));
            Change::Upload {
                asset: asset(id),
                version: Some(at),
                format: None,
                tags: None,
            }
        }
        Edit::Rename { from, to } => {
            let (mut version, text, asset_id) =
                account.assets.remove(*from).expect("renamed asset");
            if how.rename_bumps_version {
                version = at;
            }
            account
                .assets
                .insert(to.to_string(), (version, text, asset_id.clone()));
            Change::Rename {
                from: asset(from),
                to: asset(to),
                version: how.rename_carries_version.then_some(version),
                asset_id: how.asset_ids.then_some(asset_id),
            }
        }
        Edit::Delete { id } => {
            let (version, _, asset_id) = account.assets.remove(*id).expect("deleted asset");
            Change::Delete {
                assets: vec![(asset(id), Some(version), how.asset_ids.then_some(asset_id))],
            }
        }
    };
    Notification {
        change,
        at_ms: at * 1000,
    }
}

/// Cloudinary's OCR of the account as it is when asked: billed per call that finds the asset.
#[derive(Default)]
struct AccountOcr(Mutex<Account>);

impl OcrService for AccountOcr {
    fn request_api(&self) -> Api {
        Api::Upload
    }
    async fn request_ocr(&self, message: &WorkMessage) -> Result<OcrAnswer, RemoteError> {
        let mut account = self.0.lock().unwrap();
        let Some((version, text, asset_id)) = account.assets.get(&message.public_id).cloned()
        else {
            return Err(RemoteError::new(ErrorClass::Permanent, "Resource not found").not_run());
        };
        *account
            .billed
            .entry((message.public_id.clone(), version))
            .or_default() += 1;
        Ok(answer(version, text, account.asset_ids.then_some(asset_id)))
    }
    async fn fetch_result(&self, message: &WorkMessage) -> Result<OcrAnswer, RemoteError> {
        let account = self.0.lock().unwrap();
        let Some((version, text, asset_id)) = account.assets.get(&message.public_id).cloned()
        else {
            return Err(RemoteError::new(
                ErrorClass::Permanent,
                "Resource not found",
            ));
        };
        let asset_id = account.asset_ids.then_some(asset_id);
        if account
            .billed
            .contains_key(&(message.public_id.clone(), version))
        {
            Ok(answer(version, text, asset_id))
        } else {
            let mut a = answer(version, text, asset_id);
            a.result.outcome = OcrOutcome::NotRequested;
            Ok(a)
        }
    }
}

fn answer(version: u64, text: String, asset_id: Option<String>) -> OcrAnswer {
    OcrAnswer {
        result: OcrResult {
            outcome: OcrOutcome::Text { text, locale: None },
            asset: AssetFields {
                version: Some(version),
                asset_id,
                ..AssetFields::default()
            },
            pages: 1,
        },
        quota: None,
        latency: Duration::ZERO,
    }
}

type World = (
    Notifier<Arc<MemoryResultStore>, Arc<MemoryQueue>>,
    Worker<Arc<AccountOcr>, Arc<MemoryResultStore>, Arc<MemoryQueue>>,
    Arc<AccountOcr>,
);

fn world() -> World {
    let store = Arc::new(MemoryResultStore::new());
    let queue = Arc::new(MemoryQueue::new());
    let ocr = Arc::new(AccountOcr::default());
    let worker_settings = WorkerSettings {
        max_receive_count: 5,
        clock: Clock::tokio(now()),
        ..WorkerSettings::default()
    };
    let worker = Worker::new(ocr.clone(), store.clone(), queue.clone(), worker_settings);
    let notifier = Notifier::new(store, queue, settings(SignatureAlgorithm::Sha1));
    (notifier, worker, ocr)
}

/// The worker takes every message the queue holds until it holds none (delays pass).
async fn drain(w: &World) {
    let (notifier, worker, _) = w;
    for round in 0..20 {
        let sent = notifier.queue.take_sent();
        if sent.is_empty() {
            return;
        }
        let records = sent
            .iter()
            .enumerate()
            .map(|(i, s)| InboundRecord {
                message_id: format!("m{round}-{i}"),
                body: s.message.to_body(),
                receive_count: 1,
                receipt_handle: format!("rh{round}-{i}"),
                from_read_back_queue: false,
            })
            .collect();
        let deadline = worker.settings().clock.now() + Duration::from_secs(120);
        worker.process_batch(records, deadline).await;
    }
    panic!("the queue never emptied");
}

/// Every order of the script's notifications after their edits, with the worker run after
/// each step or only at the end, every notification delivered once or twice: the table ends
/// as the account is (each live asset's text under its key, nothing live under a key without
/// an asset), and no image version is billed twice.
async fn search(script: &[Edit], how: Behaviour) -> usize {
    let n = script.len();
    // Steps: 0..n are edits (in order), n..2n their deliveries (each after its edit).
    let mut orders = Vec::new();
    let mut order = Vec::new();
    fn walk(n: usize, done: &mut Vec<usize>, orders: &mut Vec<Vec<usize>>) {
        if done.len() == 2 * n {
            orders.push(done.clone());
            return;
        }
        for step in 0..2 * n {
            if done.contains(&step) {
                continue;
            }
            let ready = if step < n {
                step == 0 || done.contains(&(step - 1))
            } else {
                done.contains(&(step - n))
            };
            if ready {
                done.push(step);
                walk(n, done, orders);
                done.pop();
            }
        }
    }
    walk(n, &mut order, &mut orders);
    let mut runs = 0;
    for order in &orders {
        for (drain_each, twice) in [(true, false), (false, false), (true, true)] {
            let w = world();
            let mut account = Account {
                asset_ids: how.asset_ids,
                ..Account::default()
            };
            let mut notes = vec![None; n];
            for &step in order {
                if step < n {
                    let at = NOW_S - 1000 + 100 * step as u64;
                    notes[step] = Some(edit(&mut account, &script[step], at, how));
                    let mut seen = w.2.0.lock().unwrap();
                    seen.assets = account.assets.clone();
                    seen.asset_ids = how.asset_ids;
                } else {
                    let note = notes[step - n].clone().unwrap();
                    let outcome = w.0.apply(&note, now()).await;
                    assert!(outcome.is_ok(), "{outcome:?}");
                    if twice {
                        w.0.apply(&note, now()).await.unwrap();
                    }
                }
                if drain_each {
                    drain(&w).await;
                }
            }
            drain(&w).await;
            let ctx = format!(
                "order {order:?}, {how:?}, worker after each step: {drain_each}, twice: {twice}"
            );
            // Where Cloudinary behaves as its payloads suggest, the notifications alone make
            // the table; elsewhere nothing is live under a name without an image.
            check(
                &w,
                &ctx,
                how.rename_carries_version && !how.rename_bumps_version && how.asset_ids,
            );
            // The lister's next pass lists every image at its version: then every table is
            // the account's.
            pass(&w).await;
            check(&w, &format!("{ctx}, after a pass"), true);
            runs += 1;
        }
    }
    runs
}

/// The lister's pass: a message for every image at its listed version.
async fn pass(w: &World) {
    let assets = w.2.0.lock().unwrap().assets.clone();
    for (id, (version, _, _)) in assets {
        let mut message = WorkMessage::new(id, "image", "upload");
        message.version = Some(version);
        w.0.send(message, Duration::ZERO).await.unwrap();
    }
    drain(w).await;
}

fn check(w: &World, ctx: &str, whole: bool) {
    let account = w.2.0.lock().unwrap().clone();
    let items = w.0.store.items();
    if whole {
        for (id, (_, text, _)) in &account.assets {
            let item = items
                .get(id)
                .unwrap_or_else(|| panic!("{id} missing: {ctx}"));
            assert!(
                item.gone.is_none(),
                "{id} marked gone but live: {ctx}\n{item:?}"
            );
            let record = item
                .record
                .as_ref()
                .unwrap_or_else(|| panic!("{id} has no result: {ctx}\n{item:?}"));
            assert_eq!(record.status, Status::Done, "{id}: {ctx}\n{item:?}");
            assert_eq!(record.text.as_deref(), Some(text.as_str()), "{id}: {ctx}");
        }
    }
    for (key, item) in &items {
        if account.assets.contains_key(key) {
            continue;
        }
        let live_text =
            item.gone.is_none() && item.record.as_ref().is_some_and(|r| r.status.is_complete());
        assert!(
            !live_text,
            "{key} has no image but a live result: {ctx}\n{item:?}"
        );
    }
    for (asset, billed) in &account.billed {
        assert_eq!(*billed, 1, "{asset:?} billed {billed} times: {ctx}");
    }
}

const BEHAVIOURS: [Behaviour; 4] = [
    Behaviour {
        rename_bumps_version: false,
        rename_carries_version: true,
        asset_ids: true,
    },
    Behaviour {
        rename_bumps_version: false,
        rename_carries_version: false,
        asset_ids: false,
    },
    Behaviour {
        rename_bumps_version: true,
        rename_carries_version: true,
        asset_ids: true,
    },
    Behaviour {
        rename_bumps_version: true,
        rename_carries_version: false,
        asset_ids: true,
    },
];

#[tokio::test(start_paused = true)]
async fn every_order_of_an_overwrite_a_rename_and_a_delete_ends_in_the_account_s_table() {
    let script = [
        Edit::Upload {
            id: "a",
            text: "first",
        },
        Edit::Upload {
            id: "a",
            text: "second",
        },
        Edit::Rename { from: "a", to: "b" },
        Edit::Delete { id: "b" },
    ];
    let mut runs = 0;
    for how in BEHAVIOURS {
        runs += search(&script, how).await;
    }
    // 105 orders of four edits and their deliveries, three ways each, per behaviour.
    assert_eq!(runs, 4 * 3 * 105, "every order was run: {runs}");
}

#[tokio::test(start_paused = true)]
async fn every_order_of_a_rename_then_a_new_image_under_the_old_name_keeps_both() {
    let script = [
        Edit::Upload {
            id: "a",
            text: "first",
        },
        Edit::Rename { from: "a", to: "b" },
        Edit::Upload {
            id: "a",
            text: "newcomer",
        },
    ];
    for how in BEHAVIOURS {
        assert_eq!(search(&script, how).await, 3 * 15);
    }
}

#[tokio::test(start_paused = true)]
async fn every_order_of_a_delete_and_an_upload_again_under_the_same_name_keeps_the_new_one() {
    let script = [
        Edit::Upload {
            id: "a",
            text: "first",
        },
        Edit::Delete { id: "a" },
        Edit::Upload {
            id: "a",
            text: "again",
        },
        Edit::Rename { from: "a", to: "c" },
    ];
    for how in BEHAVIOURS {
        assert_eq!(search(&script, how).await, 3 * 105);
    }
}

#[tokio::test(start_paused = true)]
async fn every_order_of_a_rename_there_and_back_then_a_delete_ends_where_the_asset_is() {
    // There and back keeps the version: only the notifications' times order the renames.
    let script = [
        Edit::Upload {
            id: "a",
            text: "first",
        },
        Edit::Rename { from: "a", to: "b" },
        Edit::Rename { from: "b", to: "a" },
        Edit::Rename { from: "a", to: "c" },
    ];
    for how in BEHAVIOURS {
        assert_eq!(search(&script, how).await, 3 * 105);
    }
}

#[tokio::test(start_paused = true)]
async fn every_order_of_an_older_image_renamed_onto_a_deleted_newer_one_keeps_it() {
    // The image renamed onto `b` is older than the one deleted there: its version is lower
    // than the tombstone's, and yet it is `b`'s image now.
    let script = [
        Edit::Upload {
            id: "x",
            text: "older",
        },
        Edit::Upload {
            id: "b",
            text: "newer",
        },
        Edit::Delete { id: "b" },
        Edit::Rename { from: "x", to: "b" },
    ];
    for how in BEHAVIOURS {
        assert_eq!(search(&script, how).await, 3 * 105);
    }
}
