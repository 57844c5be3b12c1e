//! The lister's unit tier: the use case against the in-memory twins, in paused tokio time.

use std::collections::HashSet;

use super::memory::{ListCall, MemoryAssetSource};
use super::*;
use crate::clock::from_epoch_ms;
use crate::queue::memory::{MemoryQueue, QueueOp};
use crate::store::memory::{MemoryCheckpointStore, MemoryResultStore, StoreOp};
use crate::store::{Lease, LeaseOutcome, ResultRecord, SaveOutcome, Status};

const ID: &str = "lister#test";

struct Rig {
    source: MemoryAssetSource,
    queue: MemoryQueue,
    checkpoints: MemoryCheckpointStore,
    results: MemoryResultStore,
    options: ListerOptions,
}

impl Rig {
    fn new(source: MemoryAssetSource) -> Self {
        Self {
            source,
            queue: MemoryQueue::new(),
            checkpoints: MemoryCheckpointStore::new(),
            results: MemoryResultStore::new(),
            options: ListerOptions {
                page_size: 100,
                clock: Clock::tokio(from_epoch_ms(1_800_000_000_000)),
                // Each run may start a new pass (the pacing has tests of its own).
                pass_interval: Duration::ZERO,
                ..ListerOptions::default()
            },
        }
    }

    async fn run_for(&self, time: Duration) -> Result<RunSummary, ListerError> {
        let deadline = self.options.clock.now() + time;
        run_lister(
            ListerPorts {
                source: &self.source,
                queue: &self.queue,
                checkpoints: &self.checkpoints,
                results: &self.results,
            },
            ID,
            &self.options,
            deadline,
        )
        .await
    }

    async fn run(&self) -> RunSummary {
        self.run_for(Duration::from_secs(900)).await.expect("run")
    }

    fn enqueued_ids(&self) -> Vec<String> {
        self.queue
            .sent()
            .into_iter()
            .map(|s| s.message.public_id)
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_pass_pages_through_every_asset_once() {
    let rig = Rig::new(MemoryAssetSource::generated(250));
    let summary = rig.run().await;
    assert_eq!(
        summary,
        RunSummary {
            mode: PassMode::Full,
            // Three of upload images, one each of private and authenticated ones (none).
            pages: 5,
            listed: 250,
            enqueued: 250,
            refused: 0,
            pass_listed: 250,
            stop: StopReason::PassComplete,
            quota_resets_at: None,
            next_pass_at: None,
        }
    );
    let ids = rig.enqueued_ids();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 250);
    let cp = rig.checkpoints.get(ID).unwrap();
    assert_eq!((cp.mode, cp.cursor.as_deref()), (None, None));
    assert!(cp.last_full_pass_at.is_some() && cp.last_pass_started_at.is_some());
    assert_eq!(
        cp.last_full_pass_listed, 250,
        "the account's size, for progress"
    );
    assert_eq!(rig.source.faults().calls(ListCall::All), 5);
}

#[tokio::test(start_paused = true)]
async fn the_summary_serialises_as_the_function_answers() {
    let rig = Rig::new(MemoryAssetSource::generated(3));
    let json = serde_json::to_value(rig.run().await).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"mode": "full", "pages": 3, "listed": 3, "enqueued": 3,
            "refused": 0, "pass_listed": 3, "stop": "pass_complete", "quota_resets_at": null})
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_stops_before_the_deadline_and_the_next_resumes_from_the_checkpoint() {
    let rig = Rig::new(MemoryAssetSource::generated(1000).with_latency(Duration::from_secs(1)));
    let margin = rig.options.deadline_margin;
    // Time for three pages of a second each, then the margin.
    let first = rig
        .run_for(margin + Duration::from_millis(2500))
        .await
        .unwrap();
    assert_eq!(
        (first.stop, first.pages, first.pass_listed),
        (StopReason::Deadline, 3, 300)
    );
    let cp = rig.checkpoints.get(ID).unwrap();
    assert_eq!(
        (cp.mode, cp.cursor.as_deref()),
        (Some(PassMode::Full), Some("300"))
    );
    // No time at all: nothing listed, the pass kept.
    let idle = rig.run_for(margin / 2).await.unwrap();
    assert_eq!((idle.stop, idle.pages), (StopReason::Deadline, 0));
    assert_eq!(
        rig.checkpoints.get(ID).unwrap().cursor.as_deref(),
        Some("300")
    );
    let rest = rig.run().await;
    assert_eq!(
        (rest.stop, rest.pages, rest.pass_listed),
        (StopReason::PassComplete, 7 + 2, 1000),
        "seven pages of upload images, one each of the other types"
    );
    let ids = rig.enqueued_ids();
    assert_eq!(ids.len(), 1000);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1000, "none twice");
}

#[tokio::test(start_paused = true)]
async fn a_spent_quota_stops_the_run_and_the_next_resumes() {
    let rig = Rig::new(MemoryAssetSource::generated(250));
    let reset = from_epoch_ms(1_800_000_360_000);
    rig.source.report_quota(Some(Quota {
        limit: 500,
        remaining: 0,
        reset: Some(reset),
    }));
    let first = rig.run().await;
    assert_eq!((first.stop, first.pages), (StopReason::RateLimited, 1));
    assert_eq!(first.quota_resets_at, Some(rfc3339(reset)));
    // Refused outright (HTTP 420) on the next page: stops without listing.
    rig.source.report_quota(None);
    rig.source
        .faults()
        .fail_next(ListCall::All, ErrorClass::RateLimited, 1);
    let refused = rig.run().await;
    assert_eq!((refused.stop, refused.pages), (StopReason::RateLimited, 0));
    let rest = rig.run().await;
    assert_eq!(
        (rest.stop, rest.pass_listed),
        (StopReason::PassComplete, 250)
    );
    assert_eq!(rig.enqueued_ids().len(), 250);
}

#[tokio::test(start_paused = true)]
async fn transient_listing_errors_are_retried_then_reported() {
    let rig = Rig::new(MemoryAssetSource::generated(10));
    rig.source
        .faults()
        .fail_next(ListCall::All, ErrorClass::Transient, 3);
    assert_eq!(rig.run().await.stop, StopReason::PassComplete);

    let rig = Rig::new(MemoryAssetSource::generated(10));
    rig.source
        .faults()
        .fail_next(ListCall::All, ErrorClass::Transient, 4);
    let err = rig.run_for(Duration::from_secs(900)).await.unwrap_err();
    assert!(matches!(err, ListerError::Listing(_)), "{err}");
    assert_eq!(rig.source.faults().calls(ListCall::All), 4);
    assert!(rig.queue.sent().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_page_that_could_not_be_enqueued_is_listed_again() {
    let rig = Rig::new(MemoryAssetSource::generated(250));
    rig.queue
        .faults()
        .fail_next(QueueOp::Enqueue, ErrorClass::Transient, 1);
    let err = rig.run_for(Duration::from_secs(900)).await.unwrap_err();
    assert!(matches!(err, ListerError::Queue(_)), "{err}");
    let rest = rig.run().await;
    assert_eq!(
        (rest.stop, rest.pass_listed),
        (StopReason::PassComplete, 250)
    );
    assert_eq!(rig.enqueued_ids().len(), 250);
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_that_cannot_be_saved_fails_the_run() {
    let rig = Rig::new(MemoryAssetSource::generated(250));
    rig.checkpoints
        .faults()
        .fail_next(StoreOp::SaveCheckpoint, ErrorClass::Transient, 1);
    let err = rig.run_for(Duration::from_secs(900)).await.unwrap_err();
    assert!(matches!(err, ListerError::Store(_)), "{err}");
    // The page was enqueued but not recorded: listed again (a duplicate, never a gap).
    let rest = rig.run().await;
    assert_eq!(rest.stop, StopReason::PassComplete);
    assert_eq!(rig.enqueued_ids().len(), 350);
    assert_eq!(rig.enqueued_ids().iter().collect::<HashSet<_>>().len(), 250);
}

#[tokio::test(start_paused = true)]
async fn after_a_full_pass_the_next_lists_what_was_created_since_less_the_overlap() {
    let rig = Rig::new(MemoryAssetSource::generated(50));
    rig.run().await;
    let cp = rig.checkpoints.get(ID).unwrap();
    let last_start = parse_rfc3339(cp.last_pass_started_at.as_deref().unwrap()).unwrap();
    let asset = |id: &str, at: SystemTime| ListedAsset {
        public_id: id.into(),
        resource_type: "image".into(),
        delivery_type: "upload".into(),
        created_at: Some(rfc3339(at)),
        version: Some(1),
        format: None,
        tags: None,
    };
    // One created just inside the overlap, one after the pass, one video (not enqueued).
    rig.source
        .add(asset("late-indexed", last_start - Duration::from_secs(60)));
    rig.source
        .add(asset("new", last_start + Duration::from_secs(60)));
    rig.source.add(ListedAsset {
        resource_type: "video".into(),
        ..asset("clip", last_start + Duration::from_secs(1))
    });
    rig.queue.take_sent();
    let summary = rig.run().await;
    assert_eq!(summary.mode, PassMode::Incremental);
    assert_eq!((summary.listed, summary.enqueued), (3, 2));
    assert_eq!(rig.enqueued_ids(), ["late-indexed", "new"]);
    assert_eq!(rig.source.faults().calls(ListCall::Search), 1);

    // A full rescan asked for by the event starts over.
    let rescan = Rig {
        options: ListerOptions {
            full_rescan: true,
            ..rig.options.clone()
        },
        ..rig
    };
    let summary = rescan.run().await;
    assert_eq!((summary.mode, summary.listed), (PassMode::Full, 53));
}

/// The schedule only wakes the lister: a run continues a pass in progress, starts the next
/// when it is due (a day after the previous one started), else lists nothing; a full pass at
/// least weekly, incremental ones in between.
#[tokio::test(start_paused = true)]
async fn passes_start_when_due_and_a_full_pass_comes_weekly() {
    let rig = Rig {
        options: ListerOptions {
            pass_interval: Duration::from_secs(24 * 3600),
            ..Rig::new(MemoryAssetSource::generated(0)).options
        },
        ..Rig::new(MemoryAssetSource::generated(120))
    };
    assert_eq!(rig.run().await.mode, PassMode::Full);
    let idle = rig.run().await;
    assert_eq!((idle.stop, idle.pages), (StopReason::NotDue, 0));
    assert!(idle.next_pass_at.is_some());
    tokio::time::advance(Duration::from_secs(24 * 3600)).await;
    let next = rig.run().await;
    assert_eq!(
        (next.mode, next.stop),
        (PassMode::Incremental, StopReason::PassComplete)
    );
    let cp = rig.checkpoints.get(ID).unwrap();
    let since = rig.source.searches().last().cloned().unwrap();
    assert!(!since.contains('.'), "whole seconds: {since}");
    assert!(cp.last_full_pass_at.is_some());
    // Six more days of daily passes: still incremental; then the weekly full pass.
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(24 * 3600)).await;
        assert_eq!(rig.run().await.mode, PassMode::Incremental);
    }
    tokio::time::advance(Duration::from_secs(24 * 3600)).await;
    let weekly = rig.run().await;
    assert_eq!(weekly.mode, PassMode::Full);
    assert_eq!(weekly.listed, 120);
}

/// A cursor Cloudinary refuses restarts the pass (once); a search it refuses falls back to the
/// Admin listing. Either way the pass completes and nothing is missed.
#[tokio::test(start_paused = true)]
async fn a_refused_cursor_restarts_the_pass_and_a_refused_search_lists_everything() {
    let rig = Rig::new(MemoryAssetSource::generated(300).with_latency(Duration::from_secs(1)));
    let margin = rig.options.deadline_margin;
    let first = rig
        .run_for(margin + Duration::from_millis(1500))
        .await
        .unwrap();
    assert_eq!((first.stop, first.pages), (StopReason::Deadline, 2));
    rig.source
        .faults()
        .fail_next(ListCall::All, ErrorClass::Permanent, 1);
    let rest = rig.run().await;
    assert_eq!(
        (rest.stop, rest.pass_listed),
        (StopReason::PassComplete, 300),
        "started over"
    );
    assert_eq!(rig.enqueued_ids().iter().collect::<HashSet<_>>().len(), 300);

    rig.source
        .faults()
        .fail_next(ListCall::Search, ErrorClass::Permanent, 1);
    let fallback = rig.run().await;
    assert_eq!(
        (fallback.mode, fallback.stop, fallback.listed),
        (PassMode::Full, StopReason::PassComplete, 300)
    );
}

/// A work queue that only counts (an account of millions would not fit a list in memory).
#[derive(Default)]
struct CountingQueue(std::sync::atomic::AtomicU64);

impl crate::queue::WorkQueue for CountingQueue {
    async fn enqueue(
        &self,
        messages: &[WorkMessage],
    ) -> Result<Vec<crate::queue::Refused>, crate::queue::QueueError> {
        self.0
            .fetch_add(messages.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(Vec::new())
    }
    async fn send_delayed_batch(
        &self,
        entries: &[(WorkMessage, Duration)],
    ) -> Result<Vec<Option<String>>, crate::queue::QueueError> {
        Ok(vec![None; entries.len()])
    }
    async fn return_after(
        &self,
        entries: &[(&str, Duration)],
    ) -> Result<Vec<Option<String>>, crate::queue::QueueError> {
        Ok(vec![None; entries.len()])
    }
}

/// Lists a `assets`-asset account whose Admin API allows `per_hour` calls, each taking
/// `latency`, the lister woken every 15 minutes, each run up to Lambda's 15 minutes, in virtual
/// time starting 20 minutes into an hour; returns how long the pass took, the runs, and the
/// runs the quota stopped.
async fn simulate_pass(assets: usize, per_hour: u64, latency: Duration) -> (Duration, u32, u32) {
    let start = from_epoch_ms(1_800_001_200_000);
    let clock = Clock::tokio(start);
    let source = MemoryAssetSource::synthetic(assets)
        .with_latency(latency)
        .with_hourly_limit(per_hour, clock);
    let queue = CountingQueue::default();
    let checkpoints = MemoryCheckpointStore::new();
    let results = MemoryResultStore::new();
    let options = ListerOptions {
        page_size: 500,
        clock,
        ..ListerOptions::default()
    };
    let tick = Duration::from_secs(15 * 60);
    let (mut runs, mut rate_limited) = (0, 0);
    let finished = loop {
        runs += 1;
        let woken = clock.now();
        let deadline = woken + Duration::from_secs(900);
        let ports = ListerPorts {
            source: &source,
            queue: &queue,
            checkpoints: &checkpoints,
            results: &results,
        };
        let summary = run_lister(ports, ID, &options, deadline).await.unwrap();
        match summary.stop {
            StopReason::PassComplete => break clock.now(),
            StopReason::RateLimited => rate_limited += 1,
            StopReason::Deadline
            | StopReason::NotDue
            | StopReason::BudgetSpent
            | StopReason::AnotherRun => {}
        }
        assert!(runs < 200, "the pass does not end");
        // The schedule's next wake-up.
        let elapsed = clock.now().duration_since(woken).unwrap();
        tokio::time::advance(tick.saturating_sub(elapsed)).await;
    };
    assert_eq!(
        queue.0.load(std::sync::atomic::Ordering::Relaxed),
        assets as u64,
        "every asset once"
    );
    (finished.duration_since(start).unwrap(), runs, rate_limited)
}

/// A 1,000,000-asset account (2,000 listing calls of 500 upload images, then one each for the
/// other delivery types): at the paid quota (2,000 calls an hour) the pass goes on by itself
/// and ends in about an hour; at the free one (500 an hour), in about four. Prints the figures.
#[tokio::test(start_paused = true)]
async fn a_million_asset_pass_keeps_pace_with_the_quota() {
    for (per_hour, bound) in [(2000, 75), (500, 255)] {
        let (took, runs, limited) =
            simulate_pass(1_000_000, per_hour, Duration::from_millis(1000)).await;
        println!(
            "1,000,000 assets at {per_hour} calls/hour, 1 s a call: listed in {:.0} min of virtual time ({runs} runs, {limited} stopped by the quota)",
            took.as_secs_f64() / 60.0
        );
        assert!(
            took <= Duration::from_secs(bound * 60),
            "{per_hour}/h: {took:?}, over {bound} min"
        );
    }
}

fn asset(public_id: &str, delivery_type: &str, created_at: &str) -> ListedAsset {
    ListedAsset {
        public_id: public_id.into(),
        resource_type: "image".into(),
        delivery_type: delivery_type.into(),
        created_at: Some(created_at.into()),
        version: Some(1),
        format: None,
        tags: None,
    }
}

fn enqueued_keys(rig: &Rig) -> Vec<String> {
    let mut keys: Vec<String> = rig
        .queue
        .sent()
        .into_iter()
        .map(|s| s.message.item_key())
        .collect();
    keys.sort();
    keys
}

#[tokio::test(start_paused = true)]
async fn a_full_pass_lists_every_stored_delivery_type_and_one_id_under_two_is_two_assets() {
    let at = "2024-01-01T00:00:00Z";
    let mut assets: Vec<ListedAsset> = (0..150)
        .map(|i| asset(&format!("u/{i}"), "upload", at))
        .collect();
    assets.extend([
        asset("shared/id", "upload", at),
        asset("shared/id", "private", at),
        asset("shared/id", "authenticated", at),
        asset("~tilde", "upload", at),
        asset("p/only", "private", at),
        asset("fetched.jpg", "fetch", at),
    ]);
    let rig = Rig::new(MemoryAssetSource::new(assets));
    let summary = rig.run().await;
    assert_eq!(summary.stop, StopReason::PassComplete);
    assert_eq!(
        (summary.listed, summary.enqueued),
        (155, 155),
        "every stored type; a fetched image is not the account's own"
    );
    let keys = enqueued_keys(&rig);
    for key in [
        "shared/id",
        "~private~shared/id",
        "~authenticated~shared/id",
        "~~tilde",
        "~private~p/only",
    ] {
        assert!(keys.contains(&key.to_string()), "{key} in {keys:?}");
    }
    assert_eq!(keys.iter().collect::<HashSet<_>>().len(), 155);
    assert!(!keys.iter().any(|k| k.contains("fetched")));
}

#[tokio::test(start_paused = true)]
async fn a_pass_stopped_between_delivery_types_goes_on_with_the_next() {
    let at = "2024-01-01T00:00:00Z";
    let rig = Rig::new(MemoryAssetSource::new(vec![
        asset("a", "upload", at),
        asset("b", "private", at),
        asset("c", "authenticated", at),
    ]));
    // The upload listing's only page, then the quota is spent.
    rig.source.report_quota(Some(crate::rate_gate::Quota {
        limit: 10,
        remaining: 0,
        reset: None,
    }));
    let first = rig.run().await;
    assert_eq!((first.stop, first.listed), (StopReason::RateLimited, 1));
    let cp = rig.checkpoints.get(ID).unwrap();
    assert_eq!(
        (cp.mode, cp.cursor.as_deref(), cp.listing_type.as_deref()),
        (Some(PassMode::Full), None, Some("private"))
    );
    rig.source.report_quota(None);
    let rest = rig.run().await;
    assert_eq!(
        (rest.stop, rest.listed, rest.pass_listed),
        (StopReason::PassComplete, 2, 3)
    );
    assert_eq!(enqueued_keys(&rig), ["a", "~authenticated~c", "~private~b"]);
}

#[tokio::test(start_paused = true)]
async fn a_search_keeps_the_stored_delivery_types() {
    let rig = Rig::new(MemoryAssetSource::new(vec![asset(
        "old",
        "upload",
        "2024-01-01T00:00:00Z",
    )]));
    rig.run().await;
    let later = crate::clock::rfc3339(rig.options.clock.now() + Duration::from_secs(60));
    for (id, t) in [("new", "private"), ("new", "upload"), ("remote", "fetch")] {
        rig.source.add(asset(id, t, &later));
    }
    rig.queue.take_sent();
    let summary = rig.run().await;
    assert_eq!(
        (summary.mode, summary.listed, summary.enqueued),
        (PassMode::Incremental, 3, 2)
    );
    assert_eq!(enqueued_keys(&rig), ["new", "~private~new"]);
}

#[tokio::test(start_paused = true)]
async fn an_asset_the_queue_refuses_is_recorded_failed_and_the_pass_goes_on() {
    let rig = Rig::new(MemoryAssetSource::generated(250));
    rig.queue.refuse("asset-00007");
    rig.queue.refuse("asset-00200");
    // One of them already has a result: it is kept.
    rig.results.insert(ResultRecord::from_outcome(
        "asset-00200",
        "image",
        "upload",
        crate::ocr::OcrOutcome::NoText,
        crate::ocr::AssetFields::default(),
        1,
        "2024-01-01T00:00:00Z".into(),
    ));
    let summary = rig.run().await;
    assert_eq!(
        (
            summary.stop,
            summary.listed,
            summary.enqueued,
            summary.refused
        ),
        (StopReason::PassComplete, 250, 248, 2)
    );
    let item = rig.results.item("asset-00007").expect("recorded");
    let record = item.record.unwrap();
    assert_eq!(record.status, Status::Failed);
    assert!(
        record
            .error
            .as_deref()
            .is_some_and(|e| e.contains("refused") && e.contains("shorter than")),
        "{record:?}"
    );
    assert_eq!(rig.results.status("asset-00200"), Some(Status::NoText));
    assert_eq!(rig.results.len(), 2, "nothing else is written");
    let cp = rig.checkpoints.get(ID).unwrap();
    assert_eq!(cp.mode, None, "the pass completed");
}

#[tokio::test(start_paused = true)]
async fn a_refused_asset_not_recorded_fails_the_run_and_its_page_is_listed_again() {
    let rig = Rig::new(MemoryAssetSource::generated(50));
    rig.queue.refuse("asset-00010");
    rig.results
        .faults()
        .fail_next(StoreOp::PutResult, ErrorClass::Transient, 1);
    let err = rig.run_for(Duration::from_secs(900)).await.unwrap_err();
    assert!(matches!(err, ListerError::Store(_)), "{err}");
    assert_eq!(
        rig.checkpoints.get(ID).map_or(0, |c| c.pass_listed),
        0,
        "the page is not past"
    );
    let summary = rig.run().await;
    assert_eq!(
        (summary.stop, summary.refused),
        (StopReason::PassComplete, 1)
    );
    assert_eq!(rig.results.status("asset-00010"), Some(Status::Failed));
}

fn tagged(public_id: &str, delivery_type: &str, tags: &[&str], format: &str) -> ListedAsset {
    ListedAsset {
        tags: Some(tags.iter().map(|t| t.to_string()).collect()),
        format: Some(format.into()),
        ..asset(public_id, delivery_type, "2024-01-01T00:00:00Z")
    }
}

fn scoped_account() -> MemoryAssetSource {
    MemoryAssetSource::new(vec![
        tagged("invoices/1", "upload", &["invoice"], "png"),
        tagged("invoices/2", "private", &[], "jpg"),
        tagged("invoices-old/3", "upload", &["invoice"], "png"),
        tagged("receipts/4", "upload", &["receipt", "invoice"], "gif"),
        tagged("receipts/5", "authenticated", &["receipt"], "png"),
        tagged("other/6", "upload", &[], "png"),
    ])
}

fn scope(prefixes: &str, tags: &str, types: &str, formats: &str) -> Scope {
    Scope::parse(prefixes, tags, "", types, formats).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_folder_scope_lists_each_type_by_prefix_and_enqueues_only_its_images() {
    let mut rig = Rig::new(scoped_account());
    rig.options.scope = scope("invoices/", "", "", "");
    let summary = rig.run().await;
    assert_eq!(summary.stop, StopReason::PassComplete);
    assert_eq!(enqueued_keys(&rig), ["invoices/1", "~private~invoices/2"]);
    // One listing per delivery type, by prefix; no search.
    assert_eq!(rig.source.faults().calls(ListCall::All), 3);
    assert_eq!(rig.source.faults().calls(ListCall::Search), 0);
}

#[tokio::test(start_paused = true)]
async fn a_tag_scope_lists_by_tag_and_keeps_to_its_types() {
    let mut rig = Rig::new(scoped_account());
    rig.options.scope = scope("", "receipt,invoice", "upload", "");
    rig.run().await;
    // receipts/4 carries both tags: listed twice, enqueued twice (the worker pays once).
    assert_eq!(
        enqueued_keys(&rig),
        ["invoices-old/3", "invoices/1", "receipts/4", "receipts/4"]
    );
    assert_eq!(rig.source.faults().calls(ListCall::All), 2);
}

#[tokio::test(start_paused = true)]
async fn a_format_scope_searches_with_the_scope_as_its_expression() {
    let mut rig = Rig::new(scoped_account());
    rig.options.scope = scope("receipts/", "", "", "png");
    rig.run().await;
    assert_eq!(enqueued_keys(&rig), ["~authenticated~receipts/5"]);
    assert_eq!(
        rig.source.searches(),
        [
            "resource_type:image AND (type:upload OR type:private OR type:authenticated) \
          AND public_id:receipts/* AND format=png"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn changing_the_scope_starts_a_full_pass_of_the_new_one_at_once() {
    let mut rig = Rig::new(scoped_account());
    rig.options.pass_interval = Duration::from_secs(86_400);
    rig.options.scope = scope("invoices/", "", "", "");
    rig.run().await;
    // The pass is done; the next is not due under the same scope.
    assert_eq!(rig.run().await.stop, StopReason::NotDue);
    rig.queue.take_sent();
    // Widened: a full pass of the new scope now, though none is due.
    rig.options.scope = scope("invoices/,receipts/", "", "", "");
    let summary = rig.run().await;
    assert_eq!(
        (summary.mode, summary.stop),
        (PassMode::Full, StopReason::PassComplete)
    );
    assert_eq!(
        enqueued_keys(&rig),
        [
            "invoices/1",
            "receipts/4",
            "~authenticated~receipts/5",
            "~private~invoices/2"
        ]
    );
    let cp = rig.checkpoints.get(ID).unwrap();
    assert_eq!(cp.scope, rig.options.scope.fingerprint());
    // Back to the whole account: a full pass again, of everything.
    rig.queue.take_sent();
    rig.options.scope = Scope::default();
    rig.run().await;
    assert_eq!(enqueued_keys(&rig).len(), 6);
    assert_eq!(rig.checkpoints.get(ID).unwrap().scope, "");
}

#[tokio::test(start_paused = true)]
async fn a_scoped_incremental_pass_searches_within_the_scope() {
    let mut rig = Rig::new(scoped_account());
    rig.options.scope = scope("", "invoice", "", "");
    rig.run().await;
    rig.queue.take_sent();
    rig.run().await;
    let searches = rig.source.searches();
    let [search] = searches.as_slice() else {
        panic!("one search: {searches:?}")
    };
    assert!(
        search.starts_with("resource_type:image AND (type:upload OR type:private OR type:authenticated) AND tags=invoice AND uploaded_at>=\""),
        "{search}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pass_in_progress_under_the_old_scope_is_not_continued() {
    let mut rig = Rig::new(MemoryAssetSource::generated(250));
    // A pass of the whole account, stopped on its second page...
    rig.checkpoints.insert(
        ID,
        Checkpoint {
            mode: Some(PassMode::Full),
            cursor: Some("100".into()),
            listing_type: Some("upload".into()),
            pass_listed: 100,
            pass_started_at: Some("2027-01-01T00:00:00Z".into()),
            ..Checkpoint::default()
        },
    );
    // ...then scoped to ten images: their pass starts from the first page of its own listing.
    rig.options.scope = scope("asset-0024", "", "upload", "");
    let summary = rig.run().await;
    assert_eq!(summary.stop, StopReason::PassComplete);
    assert_eq!(summary.pass_listed, 10);
    assert_eq!(rig.enqueued_ids().len(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_lists_nothing_until_the_next_period() {
    use crate::budget::{Budget, Limits, MemoryCounters, Take};
    let budget = std::sync::Arc::new(Budget::new(
        Limits {
            per_day: 120,
            ..Limits::default()
        },
        std::sync::Arc::new(MemoryCounters::default()),
    ));
    let mut rig = Rig::new(MemoryAssetSource::generated(250));
    rig.options.page_size = 50;
    rig.options.budget = Some(budget.clone());
    let now = rig.options.clock.now();
    while let Take::Taken(_) = budget.take(now).await.unwrap() {}
    let summary = rig.run().await;
    assert_eq!((summary.stop, summary.listed), (StopReason::BudgetSpent, 0));
    assert!(rig.enqueued_ids().is_empty());
    // The next day: a day's budget of messages at most (by whole pages), then the lister
    // stops: the queue holds what the budget allows.
    tokio::time::advance(Duration::from_secs(86_400)).await;
    let summary = rig.run().await;
    assert_eq!(
        (summary.stop, summary.enqueued),
        (StopReason::BudgetSpent, 150)
    );
    let summary = rig.run().await;
    assert_eq!((summary.stop, summary.listed), (StopReason::BudgetSpent, 0));
    // The workers take them (and pay for 120 of them): the pass goes on from its checkpoint.
    rig.queue.take_sent();
    let summary = rig.run().await;
    assert_eq!(summary.enqueued, 100);
    assert_eq!(summary.pass_listed, 250);
}

#[tokio::test(start_paused = true)]
async fn the_addon_usage_near_its_limit_stops_the_listing() {
    use crate::budget::{Budget, Limits, MemoryCounters};
    let budget = std::sync::Arc::new(Budget::new(
        Limits {
            addon_margin: Some(100),
            ..Limits::default()
        },
        std::sync::Arc::new(MemoryCounters::default()),
    ));
    let mut rig = Rig::new(MemoryAssetSource::generated(50));
    rig.options.budget = Some(budget.clone());
    rig.source.set_usage(Some(AddonUsage {
        usage: 400,
        limit: 1000,
    }));
    assert_eq!(rig.run().await.stop, StopReason::PassComplete);
    let left = budget.left(rig.options.clock.now()).await.unwrap();
    assert_eq!(left.remaining(), Some(500));
    rig.source.set_usage(Some(AddonUsage {
        usage: 950,
        limit: 1000,
    }));
    let summary = rig.run_for(Duration::from_secs(900)).await.unwrap();
    assert_eq!(summary.stop, StopReason::BudgetSpent);
    assert_eq!(
        budget
            .left(rig.options.clock.now())
            .await
            .unwrap()
            .remaining(),
        Some(0)
    );
}

/// The runs' leases on the checkpoint item.
fn lease(owner: &str, expires_at: SystemTime) -> Lease {
    Lease {
        owner: owner.into(),
        expires_at,
    }
}

/// Two runs at once (the schedule's and one started by hand): the second finds the first's
/// lease and stops at once, listing, enqueueing and saving nothing; the first's release at its
/// end lets the next run in, which continues its pass.
#[tokio::test(start_paused = true)]
async fn a_run_that_finds_another_in_progress_stops_without_listing() {
    let rig = Rig::new(MemoryAssetSource::generated(1000).with_latency(Duration::from_secs(1)));
    let margin = rig.options.deadline_margin;
    let first_deadline = rig.options.clock.now() + margin + Duration::from_millis(5500);
    let (first, (held, second)) =
        tokio::join!(rig.run_for(margin + Duration::from_millis(5500)), async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            (rig.checkpoints.lease(ID), rig.run().await)
        });
    let first = first.unwrap();
    assert_eq!((first.stop, first.pages), (StopReason::Deadline, 6));
    assert_eq!(
        held.map(|l| l.expires_at),
        Some(first_deadline + defaults::LISTER_LEASE_MARGIN),
        "the first run's lease lasts until its deadline and the margin"
    );
    assert_eq!(
        (second.stop, second.pages, second.listed, second.enqueued),
        (StopReason::AnotherRun, 0, 0, 0)
    );
    assert_eq!(
        rig.source.faults().calls(ListCall::All),
        6,
        "only the first run listed"
    );
    assert_eq!(
        rig.checkpoints.faults().calls(StoreOp::SaveCheckpoint),
        7,
        "the first run's six pages and its last save; none of the second's"
    );
    assert_eq!(rig.enqueued_ids().len(), 600);
    assert_eq!(rig.checkpoints.lease(ID), None, "given up at the end");

    let next = rig.run().await;
    assert_eq!(
        (next.stop, next.pass_listed),
        (StopReason::PassComplete, 1000)
    );
    let ids = rig.enqueued_ids();
    assert_eq!(ids.len(), 1000);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1000, "none twice");
}

/// A run killed mid-pass (Lambda's timeout, say) leaves its lease: the runs until its deadline
/// and the margin stop; the first after takes it over and continues from the last page saved.
#[tokio::test(start_paused = true)]
async fn a_killed_runs_lease_blocks_the_next_runs_only_until_it_expires() {
    let rig = Rig::new(MemoryAssetSource::generated(1000).with_latency(Duration::from_secs(1)));
    let start = rig.options.clock.now();
    let killed = tokio::time::timeout(Duration::from_millis(2500), rig.run()).await;
    assert!(killed.is_err(), "killed on its third page");
    let left = rig.checkpoints.lease(ID).expect("its lease is left behind");
    assert_eq!(
        left.expires_at,
        start + Duration::from_secs(900) + defaults::LISTER_LEASE_MARGIN
    );
    assert_eq!(
        rig.checkpoints.get(ID).unwrap().cursor.as_deref(),
        Some("200")
    );

    let blocked = rig.run().await;
    assert_eq!((blocked.stop, blocked.listed), (StopReason::AnotherRun, 0));
    tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_secs(900)).await;
    let still = rig.run().await;
    assert_eq!(still.stop, StopReason::AnotherRun, "the margin too");
    tokio::time::advance(defaults::LISTER_LEASE_MARGIN).await;
    let taken_over = rig.run().await;
    assert_eq!(
        (taken_over.stop, taken_over.listed, taken_over.pass_listed),
        (StopReason::PassComplete, 800, 1000)
    );
    let ids = rig.enqueued_ids();
    assert_eq!(
        ids.len(),
        1000,
        "the killed run's page in flight was never enqueued"
    );
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1000);
}

/// A run that outlives its lease (a call hanging past its deadline, where Lambda did not end
/// it) while another took the lease over: its next save is refused, and it stops without
/// writing the checkpoint or giving up the other's lease; the other's pass is whole.
#[tokio::test(start_paused = true)]
async fn a_run_whose_lease_was_taken_over_stops_at_its_next_save() {
    let rig = Rig::new(MemoryAssetSource::generated(150).with_latency(Duration::from_secs(300)));
    let start = rig.options.clock.now();
    let ((stale, after_stale), taker) = tokio::join!(
        async {
            // Its lease expires 110 s in; its first page answers 300 s in.
            let run = rig.run_for(Duration::from_secs(100)).await.unwrap();
            (run, (rig.checkpoints.get(ID), rig.checkpoints.lease(ID)))
        },
        async {
            tokio::time::sleep(Duration::from_secs(200)).await;
            rig.run_for(Duration::from_secs(3600)).await.unwrap()
        }
    );
    assert_eq!(
        (stale.stop, stale.pages, stale.enqueued),
        (StopReason::AnotherRun, 1, 100),
        "its page in flight was enqueued, then its save refused"
    );
    let (cp, held) = after_stale;
    assert_eq!(
        cp.map(|c| (c.cursor, c.pass_listed)),
        Some((None, 0)),
        "nothing saved by the run that lost its lease"
    );
    assert_eq!(
        held.map(|l| l.expires_at),
        Some(start + Duration::from_secs(200 + 3600) + defaults::LISTER_LEASE_MARGIN),
        "the taker's lease is kept"
    );
    assert_eq!(
        (taker.stop, taker.listed, taker.pass_listed),
        (StopReason::PassComplete, 150, 150)
    );
    let cp = rig.checkpoints.get(ID).unwrap();
    assert_eq!((cp.mode, cp.last_full_pass_listed), (None, 150));
    assert_eq!(rig.checkpoints.lease(ID), None);
    let ids = rig.enqueued_ids();
    assert_eq!(ids.len(), 250, "one page twice, at most");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 150);
}

/// A checkpoint saved by the previous version has no lease: it is free, and its pass goes on.
#[tokio::test(start_paused = true)]
async fn a_checkpoint_without_a_lease_is_continued() {
    let rig = Rig::new(MemoryAssetSource::generated(1000));
    rig.checkpoints.insert(
        ID,
        Checkpoint {
            mode: Some(PassMode::Full),
            cursor: Some("300".into()),
            pass_listed: 300,
            total_listed: 300,
            pass_started_at: Some(rfc3339(rig.options.clock.now())),
            ..Checkpoint::default()
        },
    );
    let summary = rig.run().await;
    assert_eq!(
        (summary.stop, summary.listed, summary.pass_listed),
        (StopReason::PassComplete, 700, 1000)
    );
    assert_eq!(
        rig.enqueued_ids().first().map(String::as_str),
        Some("asset-00300")
    );
    assert_eq!(rig.checkpoints.get(ID).unwrap().total_listed, 1000);
    assert_eq!(rig.checkpoints.lease(ID), None);
}

/// A run that fails gives its lease up (the next one continues at once); a lease that could
/// not be given up fails nothing and only holds the next runs until it expires.
#[tokio::test(start_paused = true)]
async fn a_failed_run_gives_its_lease_up_and_a_lease_not_given_up_expires() {
    let rig = Rig::new(MemoryAssetSource::generated(250));
    rig.source
        .faults()
        .fail_next(ListCall::All, ErrorClass::Permanent, 1);
    assert!(rig.run_for(Duration::from_secs(900)).await.is_err());
    assert_eq!(rig.checkpoints.lease(ID), None);

    rig.checkpoints
        .faults()
        .fail_next(StoreOp::ReleaseLease, ErrorClass::Transient, 1);
    let done = rig.run_for(Duration::from_secs(60)).await.unwrap();
    assert_eq!(done.stop, StopReason::PassComplete);
    assert!(rig.checkpoints.lease(ID).is_some());
    assert_eq!(rig.run().await.stop, StopReason::AnotherRun);
    tokio::time::advance(Duration::from_secs(61) + defaults::LISTER_LEASE_MARGIN).await;
    assert_eq!(rig.run().await.stop, StopReason::PassComplete);
}

/// The store's conditions: a lease is taken when free, expired or already the taker's (a
/// retried request); a save or a release under a lease no longer held changes nothing.
#[tokio::test]
async fn the_lease_is_taken_kept_and_given_up_only_by_its_owner() {
    let store = MemoryCheckpointStore::new();
    let now = from_epoch_ms(1_800_000_000_000);
    let first = lease("first", now + Duration::from_secs(60));
    let second = lease("second", now + Duration::from_secs(600));
    let saved = Checkpoint {
        total_listed: 7,
        ..Checkpoint::default()
    };
    assert_eq!(
        store.take_lease(ID, &first, now).await.unwrap(),
        LeaseOutcome::Taken(Checkpoint::default())
    );
    assert_eq!(
        store.save(ID, &saved, &first).await.unwrap(),
        SaveOutcome::Saved
    );
    assert_eq!(
        store.take_lease(ID, &first, now).await.unwrap(),
        LeaseOutcome::Taken(saved.clone()),
        "a retried take"
    );
    assert_eq!(
        store.take_lease(ID, &second, now).await.unwrap(),
        LeaseOutcome::HeldByAnother(Some(first.clone()))
    );
    assert_eq!(
        store
            .save(ID, &Checkpoint::default(), &second)
            .await
            .unwrap(),
        SaveOutcome::LeaseLost
    );
    assert!(!store.release_lease(ID, &second).await.unwrap());
    let later = now + Duration::from_secs(61);
    assert_eq!(
        store.take_lease(ID, &second, later).await.unwrap(),
        LeaseOutcome::Taken(saved.clone()),
        "expired"
    );
    assert_eq!(
        store
            .save(ID, &Checkpoint::default(), &first)
            .await
            .unwrap(),
        SaveOutcome::LeaseLost
    );
    assert!(!store.release_lease(ID, &first).await.unwrap());
    assert_eq!(store.get(ID), Some(saved));
    assert!(store.release_lease(ID, &second).await.unwrap());
    assert_eq!(store.lease(ID), None);
}
