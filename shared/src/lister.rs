//! The lister's use case: page through the account from the checkpoint, enqueue one message
//! per asset, save the cursor after every page, stop cleanly before the deadline.

use std::future::Future;
use std::time::{Duration, SystemTime};

use crate::clock::{parse_rfc3339, rfc3339};
use crate::cloudinary::{Answer, AssetPage, CloudinaryClient, CloudinaryError};
use crate::error::{Classified, ErrorClass};
use crate::message::WorkMessage;
use crate::queue::{QueueError, WorkQueue};
use crate::store::{Checkpoint, CheckpointStore, StoreError};

/// Where assets are listed from. The lister is generic over it.
pub trait AssetSource: Send + Sync {
    /// One page of every image asset (Admin API listing).
    fn list_page(
        &self,
        cursor: Option<&str>,
        page_size: u32,
    ) -> impl Future<Output = Result<Answer<AssetPage>, CloudinaryError>> + Send;
    /// One page of the assets matching a search expression, oldest first.
    fn search_page(
        &self,
        expression: &str,
        cursor: Option<&str>,
        page_size: u32,
    ) -> impl Future<Output = Result<Answer<AssetPage>, CloudinaryError>> + Send;
}

impl AssetSource for CloudinaryClient {
    async fn list_page(
        &self,
        cursor: Option<&str>,
        page_size: u32,
    ) -> Result<Answer<AssetPage>, CloudinaryError> {
        CloudinaryClient::list_page(self, cursor, page_size).await
    }
    async fn search_page(
        &self,
        expression: &str,
        cursor: Option<&str>,
        page_size: u32,
    ) -> Result<Answer<AssetPage>, CloudinaryError> {
        CloudinaryClient::search_page(self, expression, cursor, page_size).await
    }
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
    /// Attempts per listing call on transient errors.
    pub attempts: u32,
}

impl Default for ListerOptions {
    fn default() -> Self {
        Self {
            page_size: 500,
            full_rescan: false,
            deadline_margin: Duration::from_secs(20),
            incremental_overlap: Duration::from_secs(600),
            attempts: 4,
        }
    }
}

/// Why a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The pass reached its last page.
    PassComplete,
    /// Too little time left; the next run continues from the checkpoint.
    Deadline,
    /// Cloudinary's quota is spent until then; the next run continues from the checkpoint.
    RateLimited { until: Option<SystemTime> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListerReport {
    /// `full` or `incremental`.
    pub mode: String,
    pub pages: u64,
    pub listed: u64,
    pub enqueued: u64,
    pub stop: StopReason,
    /// Assets listed so far in this pass (over all its runs).
    pub pass_listed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ListerError {
    #[error("listing assets failed")]
    Cloudinary(#[from] CloudinaryError),
    #[error("enqueueing a page failed; the page is listed again on the next run")]
    Queue(#[from] QueueError),
    #[error("reading or saving the checkpoint failed")]
    Store(#[from] StoreError),
}

const FULL: &str = "full";
const INCREMENTAL: &str = "incremental";

/// The search expression of an incremental pass.
pub fn incremental_expression(since: &str) -> String {
    format!("resource_type:image AND type:upload AND created_at>=\"{since}\"")
}

pub async fn run_lister<A: AssetSource, Q: WorkQueue, C: CheckpointStore>(
    source: &A,
    queue: &Q,
    checkpoints: &C,
    checkpoint_id: &str,
    options: &ListerOptions,
    deadline: SystemTime,
) -> Result<ListerReport, ListerError> {
    let mut cp = checkpoints.load(checkpoint_id).await?;
    let now = SystemTime::now();
    if options.full_rescan || cp.mode.is_none() {
        let incremental = !options.full_rescan && cp.last_full_pass_at.is_some();
        cp.mode = Some(if incremental { INCREMENTAL } else { FULL }.to_string());
        cp.cursor = None;
        cp.pass_listed = 0;
        cp.pass_started_at = Some(rfc3339(now));
        cp.since = if incremental {
            let last = cp
                .last_pass_started_at
                .as_deref()
                .and_then(parse_rfc3339)
                .unwrap_or(now);
            Some(rfc3339(last - options.incremental_overlap))
        } else {
            None
        };
        tracing::info!(
            mode = cp.mode.as_deref(),
            since = cp.since.as_deref(),
            "starting a new pass"
        );
    } else {
        tracing::info!(
            mode = cp.mode.as_deref(),
            pass_listed = cp.pass_listed,
            "continuing the pass from the checkpoint"
        );
    }
    let mode = cp.mode.clone().unwrap_or_else(|| FULL.into());
    let mut report = ListerReport {
        mode: mode.clone(),
        pages: 0,
        listed: 0,
        enqueued: 0,
        stop: StopReason::Deadline,
        pass_listed: cp.pass_listed,
    };

    loop {
        if deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            < options.deadline_margin
        {
            report.stop = StopReason::Deadline;
            break;
        }
        let page = match fetch_page(source, &cp, options).await {
            Ok(p) => p,
            Err(e) if e.class() == ErrorClass::RateLimited => {
                report.stop = StopReason::RateLimited {
                    until: e.retry_at(),
                };
                break;
            }
            Err(e) => return Err(e.into()),
        };
        let messages: Vec<WorkMessage> = page
            .value
            .resources
            .iter()
            .filter(|a| a.resource_type == "image")
            .map(|a| WorkMessage::new(&a.public_id, &a.resource_type, &a.delivery_type))
            .collect();
        queue.enqueue(&messages).await?;
        let n = page.value.resources.len() as u64;
        report.pages += 1;
        report.listed += n;
        report.enqueued += messages.len() as u64;
        cp.pass_listed += n;
        cp.total_listed += n;
        cp.cursor = page.value.next_cursor.filter(|c| !c.is_empty());
        cp.updated_at = Some(rfc3339(SystemTime::now()));
        let complete = cp.cursor.is_none();
        if complete {
            cp.last_pass_started_at = cp.pass_started_at.take();
            if mode == FULL {
                cp.last_full_pass_at = cp.updated_at.clone();
            }
            cp.mode = None;
            cp.since = None;
        }
        // Saved after the page is enqueued: a crash in between re-lists one page at most.
        checkpoints.save(checkpoint_id, &cp).await?;
        report.pass_listed = cp.pass_listed;
        if complete {
            report.stop = StopReason::PassComplete;
            break;
        }
        if let Some(q) = page.quota
            && q.remaining == 0
        {
            report.stop = StopReason::RateLimited { until: q.reset };
            break;
        }
    }
    if report.stop != StopReason::PassComplete {
        // Save the pass's start even if no page was listed, so the next run continues it.
        checkpoints.save(checkpoint_id, &cp).await?;
    }
    tracing::info!(
        mode = report.mode,
        pages = report.pages,
        listed = report.listed,
        enqueued = report.enqueued,
        pass_listed = report.pass_listed,
        stop = ?report.stop,
        "lister run finished"
    );
    Ok(report)
}

async fn fetch_page<A: AssetSource>(
    source: &A,
    cp: &Checkpoint,
    options: &ListerOptions,
) -> Result<Answer<AssetPage>, CloudinaryError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = match cp.since.as_deref() {
            Some(since) => {
                source
                    .search_page(
                        &incremental_expression(since),
                        cp.cursor.as_deref(),
                        options.page_size,
                    )
                    .await
            }
            None => {
                source
                    .list_page(cp.cursor.as_deref(), options.page_size)
                    .await
            }
        };
        match result {
            Err(e) if e.class() == ErrorClass::Transient && attempt < options.attempts => {
                tracing::warn!(error = %crate::error::error_chain(&e), attempt, "listing call failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * (1 << attempt))).await;
            }
            other => return other,
        }
    }
}
