//! The lister's use case: page through the account from the checkpoint, enqueue one message
//! per asset, save the cursor after every page, stop cleanly before the deadline.

#[cfg(any(test, feature = "memory"))]
pub mod memory;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tracing::Instrument;

use crate::clock::{Clock, parse_rfc3339, rfc3339, rfc3339_secs};
use crate::defaults;
use crate::error::{Classified, ErrorClass, RemoteError, error_chain};
use crate::message::WorkMessage;
use crate::queue::{QueueError, WorkQueue};
use crate::rate_gate::Quota;
use crate::store::{
    Checkpoint, CheckpointStore, Lease, LeaseOutcome, MAX_KEY_BYTES, ResultRecord, ResultStore,
    SaveOutcome, StoreError,
};

pub use crate::scope::Listing;
use crate::scope::Scope;
pub use crate::store::PassMode;

/// One asset as a listing names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedAsset {
    pub public_id: String,
    pub resource_type: String,
    pub delivery_type: String,
    pub created_at: Option<String>,
    /// The asset's version: a new one when it is uploaded again over the same public_id.
    pub version: Option<u64>,
    /// The format, when the listing says.
    pub format: Option<String>,
    /// The tags, when the listing says.
    pub tags: Option<Vec<String>>,
}

/// A page of a listing, and the quota its answer reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetPage {
    pub assets: Vec<ListedAsset>,
    /// The next page's cursor; `None` on the last page.
    pub next_cursor: Option<String>,
    pub quota: Option<Quota>,
}

/// Where assets are listed from. The lister is generic over it.
pub trait AssetSource: Send + Sync {
    fn page(
        &self,
        listing: &Listing,
        cursor: Option<&str>,
        page_size: u32,
    ) -> impl Future<Output = Result<AssetPage, RemoteError>> + Send;

    /// The OCR add-on's usage and limit this month (Cloudinary's `usage`), if the source knows.
    fn addon_usage(&self) -> impl Future<Output = Result<Option<AddonUsage>, RemoteError>> + Send {
        async { Ok(None) }
    }
}

/// The OCR add-on's use this month, as Cloudinary's `usage` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AddonUsage {
    pub usage: u64,
    pub limit: u64,
}

#[derive(Debug, Clone)]
pub struct ListerOptions {
    pub page_size: u32,
    /// Start a new full pass now, even if one is in progress or done.
    pub full_rescan: bool,
    /// No page is started with less time than this left.
    pub deadline_margin: Duration,
    /// An incremental pass starts this long before the previous pass started, so that assets
    /// indexed late are not missed (the duplicates cost a status read, not an OCR).
    pub incremental_overlap: Duration,
    /// A new pass starts this long after the previous one started; a run in between only
    /// continues a pass in progress.
    pub pass_interval: Duration,
    /// A full pass at least this often, whatever the incremental passes found.
    pub full_pass_interval: Duration,
    /// Attempts per listing call on transient errors.
    pub attempts: u32,
    /// What is listed: a pass under another scope is not continued.
    pub scope: Scope,
    /// The OCR budget: nothing is listed while it is spent (the messages would only wait),
    /// and each run tells it the add-on's usage when it watches the add-on's limit.
    pub budget: Option<std::sync::Arc<crate::budget::Budget>>,
    pub clock: Clock,
}

impl Default for ListerOptions {
    fn default() -> Self {
        Self {
            page_size: defaults::PAGE_SIZE,
            full_rescan: false,
            deadline_margin: defaults::LISTER_DEADLINE_MARGIN,
            incremental_overlap: defaults::INCREMENTAL_OVERLAP,
            pass_interval: defaults::PASS_INTERVAL,
            full_pass_interval: defaults::FULL_PASS_INTERVAL,
            attempts: defaults::LISTING_ATTEMPTS,
            scope: Scope::default(),
            budget: None,
            clock: Clock::System,
        }
    }
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The pass reached its last page.
    PassComplete,
    /// Too little time left; the next run continues from the checkpoint.
    Deadline,
    /// Cloudinary's quota is spent; the next run continues from the checkpoint.
    RateLimited,
    /// No pass in progress and the next one is not due yet: nothing listed.
    NotDue,
    /// The OCR budget is spent: nothing listed until the next period.
    BudgetSpent,
    /// Another run holds the checkpoint's lease (or took it over from this run, whose lease
    /// had expired): this run listed, enqueued and saved nothing more.
    AnotherRun,
}

/// What one lister run did; the Lambda function answers with it as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    pub mode: PassMode,
    pub pages: u64,
    pub listed: u64,
    pub enqueued: u64,
    /// Assets whose message the work queue refused (recorded failed, with the reason).
    pub refused: u64,
    /// Assets listed so far in this pass (over all its runs).
    pub pass_listed: u64,
    pub stop: StopReason,
    /// When the quota resets, for a run stopped by it (RFC 3339).
    pub quota_resets_at: Option<String>,
    /// When the next pass starts, for a run that found none due (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_pass_at: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ListerError {
    #[error("listing assets failed")]
    Listing(#[source] RemoteError),
    #[error("enqueueing a page failed; the page is listed again on the next run")]
    Queue(#[from] QueueError),
    #[error(
        "reading or saving the checkpoint or the budget, or recording an asset the queue refused, failed"
    )]
    Store(#[from] StoreError),
}

/// Continues the pass in progress; or starts one when it is due (or a full rescan is asked
/// for): incremental after a recent full pass, full at least every `full_pass_interval`.
/// `Err` is when the next pass is due, when none is in progress and none is due yet.
fn begin_pass(
    cp: &mut Checkpoint,
    options: &ListerOptions,
    now: SystemTime,
) -> Result<(), SystemTime> {
    let scope = options.scope.fingerprint();
    if cp.scope != scope {
        // What was listed under another scope says nothing of this one's images: a full pass
        // of the new scope starts now (what is already done costs a status read, not an OCR).
        tracing::info!(scope = %options.scope, "the scope changed: starting a full pass of it");
        *cp = Checkpoint {
            scope,
            total_listed: cp.total_listed,
            ..Checkpoint::default()
        };
        start_pass(cp, options, now, false);
        return Ok(());
    }
    if !options.full_rescan && cp.mode.is_some() {
        tracing::info!(
            mode = cp.mode.map(PassMode::as_str),
            pass_listed = cp.pass_listed,
            "continuing the pass from the checkpoint"
        );
        return Ok(());
    }
    let last_start = cp.last_pass_started_at.as_deref().and_then(parse_rfc3339);
    if !options.full_rescan
        && let Some(last) = last_start
        && now < last + options.pass_interval
    {
        return Err(last + options.pass_interval);
    }
    let last_full = cp.last_full_pass_at.as_deref().and_then(parse_rfc3339);
    let incremental =
        !options.full_rescan && last_full.is_some_and(|t| now < t + options.full_pass_interval);
    start_pass(cp, options, now, incremental);
    Ok(())
}

/// Starts a pass now: incremental from shortly before the previous pass started, or full.
fn start_pass(cp: &mut Checkpoint, options: &ListerOptions, now: SystemTime, incremental: bool) {
    let last_start = cp.last_pass_started_at.as_deref().and_then(parse_rfc3339);
    cp.mode = Some(if incremental {
        PassMode::Incremental
    } else {
        PassMode::Full
    });
    cp.cursor = None;
    cp.listing_type = None;
    cp.pass_listed = 0;
    cp.pass_started_at = Some(rfc3339(now));
    // Whole seconds: the Search API's date terms take no fractions.
    cp.since =
        incremental.then(|| rfc3339_secs(last_start.unwrap_or(now) - options.incremental_overlap));
    tracing::info!(
        mode = cp.mode.map(PassMode::as_str),
        since = cp.since.as_deref(),
        "starting a new pass"
    );
}

/// What the lister works with: where it lists from, where it enqueues, where it keeps its
/// place, and where it records an asset it could not enqueue.
pub struct ListerPorts<'a, A, Q, C, R> {
    pub source: &'a A,
    pub queue: &'a Q,
    pub checkpoints: &'a C,
    pub results: &'a R,
}

/// Lists from the checkpoint until the pass completes, the quota is spent, or the deadline
/// nears; the checkpoint is saved after every page. The run holds the checkpoint's lease from
/// its start to its end (until its deadline at most), so that two runs never list the same
/// pages: a run that finds another's lease stops at once, having listed and written nothing.
pub async fn run_lister<A: AssetSource, Q: WorkQueue, C: CheckpointStore, R: ResultStore>(
    ports: ListerPorts<'_, A, Q, C, R>,
    checkpoint_id: &str,
    options: &ListerOptions,
    deadline: SystemTime,
) -> Result<RunSummary, ListerError> {
    let held = HeldCheckpoint {
        store: ports.checkpoints,
        id: checkpoint_id,
        lease: Lease {
            owner: uuid::Uuid::new_v4().to_string(),
            expires_at: deadline + defaults::LISTER_LEASE_MARGIN,
        },
    };
    let span = tracing::info_span!("lister_run", run_id = %held.lease.owner);
    async {
        let cp = match held
            .store
            .take_lease(held.id, &held.lease, options.clock.now())
            .await?
        {
            LeaseOutcome::Taken(cp) => cp,
            LeaseOutcome::HeldByAnother(holder) => return Ok(another_run_holds(holder.as_ref())),
        };
        let result = run_held(ports, &held, options, deadline, cp).await;
        if !matches!(&result, Ok(s) if s.stop == StopReason::AnotherRun) {
            // Given up on a failure too: the next run need not wait for the lease to expire.
            held.release().await;
        }
        if let Ok(summary) = &result {
            tracing::info!(
                mode = summary.mode.as_str(),
                pages = summary.pages,
                listed = summary.listed,
                enqueued = summary.enqueued,
                refused = summary.refused,
                pass_listed = summary.pass_listed,
                stop = ?summary.stop,
                "lister run finished"
            );
        }
        result
    }
    .instrument(span)
    .await
}

/// The summary of a run that found another holding the checkpoint: nothing listed.
fn another_run_holds(holder: Option<&Lease>) -> RunSummary {
    tracing::warn!(
        holder = holder.map(|l| l.owner.as_str()),
        held_until = holder.map(|l| rfc3339(l.expires_at)),
        stop = ?StopReason::AnotherRun,
        "another lister run holds the checkpoint: this one stops without listing"
    );
    RunSummary {
        mode: PassMode::Full,
        pages: 0,
        listed: 0,
        enqueued: 0,
        refused: 0,
        pass_listed: 0,
        stop: StopReason::AnotherRun,
        quota_resets_at: None,
        next_pass_at: None,
    }
}

/// The checkpoint as one run holds it: saved only while the run's lease is on it.
struct HeldCheckpoint<'a, C> {
    store: &'a C,
    id: &'a str,
    lease: Lease,
}

impl<C: CheckpointStore> HeldCheckpoint<'_, C> {
    /// Saves the checkpoint, unless another run took the lease over (nothing is written then).
    async fn save(&self, cp: &Checkpoint) -> Result<SaveOutcome, StoreError> {
        let saved = self.store.save(self.id, cp, &self.lease).await?;
        if saved == SaveOutcome::LeaseLost {
            tracing::warn!(
                stop = ?StopReason::AnotherRun,
                "the run's lease on the checkpoint expired and another run took it: this one stops without saving"
            );
        }
        Ok(saved)
    }

    /// Gives the lease up. A failure only delays the next run until the lease expires.
    async fn release(&self) {
        match self.store.release_lease(self.id, &self.lease).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("the checkpoint's lease was no longer this run's"),
            Err(e) => tracing::warn!(
                error = %error_chain(&e),
                expires_at = %rfc3339(self.lease.expires_at),
                "the checkpoint's lease could not be given up: the next run waits for it to expire"
            ),
        }
    }
}

/// The run, once it holds the checkpoint: begins or continues a pass, then lists.
async fn run_held<A: AssetSource, Q: WorkQueue, C: CheckpointStore, R: ResultStore>(
    ports: ListerPorts<'_, A, Q, C, R>,
    held: &HeldCheckpoint<'_, C>,
    options: &ListerOptions,
    deadline: SystemTime,
    mut cp: Checkpoint,
) -> Result<RunSummary, ListerError> {
    let due = begin_pass(&mut cp, options, options.clock.now());
    let mut summary = RunSummary {
        mode: cp.mode.unwrap_or(PassMode::Full),
        pages: 0,
        listed: 0,
        enqueued: 0,
        refused: 0,
        stop: StopReason::Deadline,
        pass_listed: cp.pass_listed,
        quota_resets_at: None,
        next_pass_at: None,
    };
    // Every run, due or not: the add-on's usage keeps the month's cap current.
    let room = budget_room(ports.source, ports.queue, options).await?;
    if let Err(next) = due {
        summary.stop = StopReason::NotDue;
        summary.next_pass_at = Some(rfc3339(next));
        tracing::info!(next_pass_at = %rfc3339(next), "no pass in progress and none due");
        return Ok(summary);
    }
    if room == Some(0) {
        if held.save(&cp).await? == SaveOutcome::LeaseLost {
            summary.stop = StopReason::AnotherRun;
            return Ok(summary);
        }
        summary.stop = StopReason::BudgetSpent;
        tracing::warn!(
            "the OCR budget is spent, or the queue already holds what it allows: nothing listed until then"
        );
        return Ok(summary);
    }
    summary.stop = list_pages(
        ports,
        held,
        (options, room),
        deadline,
        (&mut cp, &mut summary),
    )
    .await?;
    // Saved even if no page was listed: the pass's start, for the next run to continue it.
    let saves = !matches!(
        summary.stop,
        StopReason::PassComplete | StopReason::AnotherRun
    );
    if saves && held.save(&cp).await? == SaveOutcome::LeaseLost {
        summary.stop = StopReason::AnotherRun;
    }
    Ok(summary)
}

/// How many more messages the OCR budget has room for: what is left of it less what the work
/// queue already holds (`None`: no limit). The lister enqueues no more than that, so that a
/// budget smaller than the scope does not fill the queue with messages that can only wait.
/// With the add-on's limit watched, the budget first learns its usage (one Admin API call a
/// run); a usage Cloudinary does not give is logged, and the budget goes on with what it knew.
async fn budget_room<A: AssetSource, Q: WorkQueue>(
    source: &A,
    queue: &Q,
    options: &ListerOptions,
) -> Result<Option<u64>, ListerError> {
    let Some(budget) = &options.budget else {
        return Ok(None);
    };
    let now = options.clock.now();
    if budget.limits().addon_margin.is_some() {
        match source.addon_usage().await {
            Ok(Some(u)) => {
                let cap = budget.observe_usage(now, u.usage, u.limit).await?;
                tracing::info!(
                    usage = u.usage,
                    limit = u.limit,
                    cap,
                    "the OCR add-on's usage this month"
                );
            }
            Ok(None) => tracing::warn!("Cloudinary reported no OCR add-on usage"),
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "the OCR add-on's usage could not be read")
            }
        }
    }
    let Some(left) = budget.left(now).await?.remaining() else {
        return Ok(None);
    };
    let queued = match queue.depth().await {
        Ok(depth) => depth.unwrap_or(0),
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "the work queue's depth could not be read");
            0
        }
    };
    Ok(Some(left.saturating_sub(queued)))
}

/// What a refused listing call leads to.
enum Refusal {
    /// Stop the run for this reason.
    Stop(StopReason),
    /// The checkpoint was changed: list again.
    Again,
}

/// A listing call's error, seen from the pass: the quota (stop), a cursor or a search
/// Cloudinary no longer takes (start over, or list the whole account), or a failure.
fn on_listing_error(
    e: RemoteError,
    cp: &mut Checkpoint,
    summary: &mut RunSummary,
    restarted: &mut bool,
) -> Result<Refusal, ListerError> {
    match e.class() {
        ErrorClass::RateLimited => {
            summary.quota_resets_at = e.retry_at().map(rfc3339);
            Ok(Refusal::Stop(StopReason::RateLimited))
        }
        // A cursor Cloudinary no longer takes (expired, say): the pass starts over, once.
        // Duplicates cost a status read, never an OCR.
        ErrorClass::Permanent if cp.cursor.is_some() && !*restarted => {
            tracing::warn!(error = %error_chain(&e), "the listing cursor was refused: the pass starts over");
            *restarted = true;
            cp.cursor = None;
            cp.pass_listed = 0;
            Ok(Refusal::Again)
        }
        // A search Cloudinary refuses (the Search API not enabled, say): the Admin listing
        // lists everything instead.
        ErrorClass::Permanent if cp.since.is_some() => {
            tracing::warn!(error = %error_chain(&e), "the search was refused: listing the whole account instead");
            cp.since = None;
            cp.cursor = None;
            cp.listing_type = None;
            cp.mode = Some(PassMode::Full);
            summary.mode = PassMode::Full;
            Ok(Refusal::Again)
        }
        ErrorClass::Transient | ErrorClass::Permanent => Err(ListerError::Listing(e)),
    }
}

/// Lists, enqueues and checkpoints page after page until the pass completes, the quota is
/// spent or the deadline is near.
async fn list_pages<A: AssetSource, Q: WorkQueue, C: CheckpointStore, R: ResultStore>(
    ports: ListerPorts<'_, A, Q, C, R>,
    held: &HeldCheckpoint<'_, C>,
    (options, room): (&ListerOptions, Option<u64>),
    deadline: SystemTime,
    (cp, summary): (&mut Checkpoint, &mut RunSummary),
) -> Result<StopReason, ListerError> {
    let clock = options.clock;
    let mut restarted = false;
    loop {
        if clock.until(deadline) < options.deadline_margin {
            return Ok(StopReason::Deadline);
        }
        let page = match fetch_page(ports.source, cp, options).await {
            Ok(page) => page,
            Err(e) => match on_listing_error(e, cp, summary, &mut restarted)? {
                Refusal::Stop(reason) => return Ok(reason),
                Refusal::Again => continue,
            },
        };
        let quota = page.quota;
        let complete = enqueue_page(
            (ports.queue, ports.results),
            &options.scope,
            page,
            cp,
            summary,
            clock.now(),
        )
        .await?;
        // Saved after the page is enqueued: a crash in between re-lists one page at most.
        if held.save(cp).await? == SaveOutcome::LeaseLost {
            return Ok(StopReason::AnotherRun);
        }
        if complete {
            return Ok(StopReason::PassComplete);
        }
        if room.is_some_and(|room| summary.enqueued >= room) {
            return Ok(StopReason::BudgetSpent);
        }
        if let Some(q) = quota.filter(|q| q.remaining == 0) {
            summary.quota_resets_at = q.reset.map(rfc3339);
            return Ok(StopReason::RateLimited);
        }
    }
}

/// Enqueues one message per image of the page and moves the checkpoint past it; `true` when
/// that was the pass's last page. An asset whose message the queue refuses is recorded failed
/// with the reason, and the pass goes on.
async fn enqueue_page<Q: WorkQueue, R: ResultStore>(
    (queue, results): (&Q, &R),
    scope: &Scope,
    page: AssetPage,
    cp: &mut Checkpoint,
    summary: &mut RunSummary,
    now: SystemTime,
) -> Result<bool, ListerError> {
    let messages: Vec<WorkMessage> = page
        .assets
        .iter()
        .filter(|a| {
            a.resource_type == "image"
                && scope.admits(
                    &a.public_id,
                    &a.delivery_type,
                    a.format.as_deref(),
                    a.tags.as_deref(),
                )
        })
        .map(|a| WorkMessage {
            version: a.version,
            ..WorkMessage::new(&a.public_id, &a.resource_type, &a.delivery_type)
        })
        .collect();
    let refused = queue.enqueue(&messages).await?;
    for (index, reason) in &refused {
        record_refused(results, &messages[*index], reason, now).await?;
    }
    let n = page.assets.len() as u64;
    summary.pages += 1;
    summary.listed += n;
    summary.enqueued += (messages.len() - refused.len()) as u64;
    summary.refused += refused.len() as u64;
    cp.pass_listed += n;
    cp.total_listed += n;
    summary.pass_listed = cp.pass_listed;
    cp.cursor = page.next_cursor.filter(|c| !c.is_empty());
    cp.updated_at = Some(rfc3339(now));
    if cp.cursor.is_none()
        && cp.since.is_none()
        && let Some(next) = next_listing(scope, cp.listing_type.as_deref())
    {
        // A full pass lists its next listing (delivery type, folder, tag) from its first page.
        cp.listing_type = Some(next.key());
        return Ok(false);
    }
    let complete = cp.cursor.is_none();
    if complete {
        cp.last_pass_started_at = cp.pass_started_at.take();
        if summary.mode == PassMode::Full {
            cp.last_full_pass_at = cp.updated_at.clone();
            cp.last_full_pass_listed = cp.pass_listed;
        }
        cp.mode = None;
        cp.since = None;
        cp.listing_type = None;
    }
    Ok(complete)
}

/// The listing a full pass lists after the one named `current` (`None`: the first), if any.
fn next_listing(scope: &Scope, current: Option<&str>) -> Option<Listing> {
    let listings = scope.listings();
    let at = listings
        .iter()
        .position(|l| Some(l.key().as_str()) == current)
        .unwrap_or(0);
    listings.into_iter().nth(at + 1)
}

/// The listing a full pass is on: the one its checkpoint names, or the first.
fn current_listing(scope: &Scope, current: Option<&str>) -> Listing {
    let mut listings = scope.listings();
    let at = listings
        .iter()
        .position(|l| Some(l.key().as_str()) == current)
        .unwrap_or(0);
    listings.swap_remove(at)
}

/// Records an asset the work queue would not take as failed, with the reason, so that it is
/// not lost from sight; an asset that already has an item keeps it.
async fn record_refused<R: ResultStore>(
    results: &R,
    message: &WorkMessage,
    reason: &str,
    now: SystemTime,
) -> Result<(), ListerError> {
    let key = message.item_key();
    let reason = format!("the work queue refused the asset's message: {reason}");
    tracing::warn!(public_id = %message.public_id, delivery_type = %message.delivery_type, %reason, "asset not enqueued");
    if key.len() > MAX_KEY_BYTES {
        // No item can hold it: the log line and the run's `refused` count are all there is.
        return Ok(());
    }
    let record = ResultRecord::failed(
        &key,
        &message.resource_type,
        &message.delivery_type,
        &reason,
        0,
        rfc3339(now),
    );
    results.record_unqueued(&record).await?;
    Ok(())
}

/// One page, with retries on transient errors.
async fn fetch_page<A: AssetSource>(
    source: &A,
    cp: &Checkpoint,
    options: &ListerOptions,
) -> Result<AssetPage, RemoteError> {
    let listing = match &cp.since {
        Some(since) => options.scope.incremental(since),
        None => current_listing(&options.scope, cp.listing_type.as_deref()),
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let err = match source
            .page(&listing, cp.cursor.as_deref(), options.page_size)
            .await
        {
            Ok(page) => return Ok(page),
            Err(e) => e,
        };
        let retry = match err.class() {
            ErrorClass::Transient => attempt < options.attempts,
            // A refusal ends the run (the next one continues); a permanent error fails it.
            ErrorClass::RateLimited | ErrorClass::Permanent => false,
        };
        if !retry {
            return Err(err);
        }
        tracing::warn!(error = %error_chain(&err), attempt, "listing call failed; retrying");
        tokio::time::sleep(Duration::from_millis(200 * (1 << attempt))).await;
    }
}
