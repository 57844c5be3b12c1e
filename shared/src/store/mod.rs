//! The results table (one item per asset, keyed by `publicId`: the asset's public_id, or for
//! an asset not of the `upload` type the key [`crate::message::item_key`] makes) and the
//! lister's checkpoint:
//! the records, the ports, and their adapters (DynamoDB, and in-memory twins for tests).

pub mod dynamodb;
#[cfg(any(test, feature = "memory"))]
pub mod memory;

use std::collections::HashMap;
use std::future::Future;
use std::time::SystemTime;

use crate::error::{Classified, ErrorClass};
use crate::ocr::{AssetFields, OcrOutcome};

pub use dynamodb::{DynamoCheckpointStore, DynamoResultStore};

/// DynamoDB's partition-key limit.
pub const MAX_KEY_BYTES: usize = 2048;
/// Text kept in an item. DynamoDB's item limit is 400 KB (and moto rejects a little under
/// it); the rest of an item is small, so this keeps every item well inside both.
pub const MAX_TEXT_BYTES: usize = 350_000;

/// Terminal state of an asset in the results table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Done,
    NoText,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::NoText => "no_text",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "done" => Some(Self::Done),
            "no_text" => Some(Self::NoText),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }

    /// Already paid for: skipped unless a re-OCR is forced.
    pub fn is_complete(self) -> bool {
        matches!(self, Self::Done | Self::NoText)
    }
}

/// How a message came to fail for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterKind {
    /// It can never succeed as it is (malformed, asset gone, refused): failed at once.
    Permanent,
    /// A transient failure on the last receive the work queue allows: retries used up.
    Exhausted,
    /// Cloudinary kept refusing under a limit that does not reset within the hour.
    RateLimited,
}

impl DeadLetterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::Exhausted => "exhausted",
            Self::RateLimited => "rate_limited",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "permanent" => Some(Self::Permanent),
            "exhausted" => Some(Self::Exhausted),
            "rate_limited" => Some(Self::RateLimited),
            _ => None,
        }
    }
}

/// A message that failed an asset for good, on the item: until SQS moves that message to the
/// dead-letter queue, its later receives fail at once without calling Cloudinary. An item
/// keeps one mark per failing message (two live messages of one asset each have their own),
/// and a real try of a message takes its own mark off (see [`Claim::drop_marks`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeadLetterMark {
    pub message_id: String,
    /// The receive on which it failed.
    pub receive_count: u32,
    /// When (ms since the epoch).
    pub at_ms: u64,
}

impl DeadLetterMark {
    /// Whether a receive of `message_id` at `now_ms` is the marked message on its way to the
    /// dead-letter queue (fail it fast) rather than a copy redriven from there (try it for
    /// real). A redriven copy has another id (as SQS documents), or the same id with its
    /// receive count reset (not above the mark's) or kept (above `max_receive_count`, past
    /// which SQS would have moved the message). A mark made past `max_receive_count` (the
    /// failure of such a kept-count copy) holds for that copy's later receives within `window`
    /// of the failure (a failing message's remaining receives all come within it).
    pub fn holds(
        &self,
        message_id: &str,
        receive_count: u32,
        max_receive_count: u32,
        (now_ms, window): (u64, std::time::Duration),
    ) -> bool {
        let soon = now_ms < self.at_ms.saturating_add(window.as_millis() as u64);
        self.message_id == message_id
            && receive_count > self.receive_count
            && (receive_count <= max_receive_count
                || self.receive_count > max_receive_count && soon)
    }

    /// The mark as one element of the item's string set: `{receive}:{ms}:{message id}`.
    pub fn element(&self) -> String {
        format!("{}:{}:{}", self.receive_count, self.at_ms, self.message_id)
    }

    /// Reads an element written by [`DeadLetterMark::element`].
    pub fn parse(element: &str) -> Option<Self> {
        let mut parts = element.splitn(3, ':');
        let receive = parts.next()?.parse().ok()?;
        let at_ms = parts.next()?.parse().ok()?;
        Some(Self {
            message_id: parts.next()?.to_string(),
            receive_count: receive,
            at_ms,
        })
    }
}

/// What the batch's one read tells about an asset with a terminal status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemState {
    pub status: Status,
    /// When the result was written (ms since the epoch).
    pub ocr_at_ms: Option<u64>,
    /// The asset's version the result is of.
    pub version: Option<u64>,
    /// The messages that failed it for good, while they are on their way to the dead-letter
    /// queue.
    pub dead_letters: Vec<DeadLetterMark>,
    pub error: Option<String>,
}

impl ItemState {
    /// The marks a message left on the item (its own, of earlier receives).
    pub fn marks_of(&self, message_id: &str) -> Vec<DeadLetterMark> {
        self.dead_letters
            .iter()
            .filter(|m| m.message_id == message_id)
            .cloned()
            .collect()
    }
}

/// The item written when an asset reaches a terminal state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRecord {
    /// The item's key (`publicId`): see [`crate::message::item_key`].
    pub key: String,
    pub status: Status,
    pub text: Option<String>,
    pub locale: Option<String>,
    /// Size of the full text in UTF-8 bytes, also when it was truncated.
    pub text_bytes: u64,
    pub truncated: bool,
    pub resource_type: String,
    pub delivery_type: String,
    pub asset: AssetFields,
    pub ocr_at: String,
    pub attempts: u32,
    pub error: Option<String>,
    /// Pages the OCR read (a multi-page PDF or TIFF has several; 0 on a failure).
    pub pages: u32,
    /// The version the message that paid for this OCR named (`None`: it named none). The
    /// OCR reads whatever is current, which may be an older image renamed onto the key
    /// since that version was uploaded and deleted: another message naming the same version
    /// is answered by this result, and pays nothing.
    pub asked_version: Option<u64>,
    /// When a rename brought the asset to the key (see [`Moved`]): an event on the key older
    /// than this (a late delete of the image that was there before, its upload) changes
    /// nothing.
    pub renamed_at_ms: Option<u64>,
}

/// Cuts `text` to at most `max` bytes at a UTF-8 character boundary.
pub fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl ResultRecord {
    /// The record for a finished OCR (`Text` or `NoText`).
    pub fn from_outcome(
        key: &str,
        resource_type: &str,
        delivery_type: &str,
        outcome: OcrOutcome,
        asset: AssetFields,
        attempts: u32,
        ocr_at: String,
    ) -> Self {
        let (status, text, locale) = match outcome {
            OcrOutcome::Text { text, locale } => (Status::Done, Some(text), locale),
            _ => (Status::NoText, None, None),
        };
        let text_bytes = text.as_ref().map_or(0, |t| t.len() as u64);
        let (text, truncated) = match text {
            Some(t) if t.len() > MAX_TEXT_BYTES => {
                (Some(truncate_utf8(&t, MAX_TEXT_BYTES).to_string()), true)
            }
            other => (other, false),
        };
        Self {
            key: key.to_string(),
            status,
            text,
            locale,
            text_bytes,
            truncated,
            resource_type: resource_type.to_string(),
            delivery_type: delivery_type.to_string(),
            asset,
            ocr_at,
            attempts,
            error: None,
            pages: 1,
            asked_version: None,
            renamed_at_ms: None,
        }
    }

    /// The record of a failure found before any worker met the asset.
    pub fn failed(
        key: &str,
        resource_type: &str,
        delivery_type: &str,
        error: &str,
        attempts: u32,
        at: String,
    ) -> Self {
        Self {
            key: key.to_string(),
            status: Status::Failed,
            text: None,
            locale: None,
            text_bytes: 0,
            truncated: false,
            resource_type: resource_type.to_string(),
            delivery_type: delivery_type.to_string(),
            asset: AssetFields::default(),
            ocr_at: at,
            attempts,
            error: Some(truncate_utf8(error, 2000).to_string()),
            pages: 0,
            asked_version: None,
            renamed_at_ms: None,
        }
    }
}

/// A failure for good, written under the claim of the attempt that met it. Unlike a result it
/// keeps what the attempt left of the request mark (an OCR it may have been billed for is
/// read back by the next attempt, never paid again) and adds its message's mark to the
/// others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRecord {
    pub key: String,
    pub resource_type: String,
    pub delivery_type: String,
    pub error: String,
    pub kind: DeadLetterKind,
    pub mark: DeadLetterMark,
    pub attempts: u32,
    pub at: String,
    pub request_mark: RequestMark,
}

/// What a claim asks for, checked by the store against the item as it is when the claim is
/// written (never against an earlier read, which another invocation may have outdated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimIntent {
    /// The asset unless it has a result.
    Plain,
    /// The asset at this version (the image may have been uploaded again over its public_id):
    /// claimed unless it has a result of this version or a newer one, or a result of no known
    /// version (written before versions were kept: not paid for again).
    NewVersion(u64),
    /// A forced re-OCR asked for at this time (ms since the epoch): claimed unless a result
    /// was written since, which is that re-OCR's.
    Forced { asked_at_ms: u64 },
}

/// A request to own an asset for the length of one invocation.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    /// The item's key.
    pub key: &'a str,
    pub resource_type: &'a str,
    pub delivery_type: &'a str,
    pub token: &'a str,
    pub now_ms: u64,
    pub expires_at_ms: u64,
    pub intent: ClaimIntent,
    /// The marks this message left on the item: a real try of the message takes them off, so
    /// that a copy redriven with its id kept is not failed fast on its later receives.
    pub drop_marks: &'a [DeadLetterMark],
}

impl Claim<'_> {
    /// Whether the claim may take an asset whose terminal state is `status` (`None`: none),
    /// with a result of `version` written at `ocr_at_ms` for a message that named
    /// `asked_version`.
    pub fn opens(
        &self,
        status: Option<Status>,
        version: Option<u64>,
        ocr_at_ms: Option<u64>,
        asked_version: Option<u64>,
    ) -> bool {
        if status.is_none_or(|s| s == Status::Failed) {
            return true;
        }
        match self.intent {
            ClaimIntent::Plain => false,
            ClaimIntent::NewVersion(v) => {
                version.is_some_and(|stored| stored < v) && asked_version.is_none_or(|a| a < v)
            }
            ClaimIntent::Forced { asked_at_ms } => ocr_at_ms.is_none_or(|at| at < asked_at_ms),
        }
    }

    /// Whether an item marked gone at `gone_version` refuses the claim: an asset that left the
    /// key is OCR'd there again only as a newer version (uploaded again over the public_id).
    pub fn meets_gone(&self, gone_version: Option<u64>) -> bool {
        let Some(gone) = gone_version else {
            return false;
        };
        match self.intent {
            ClaimIntent::NewVersion(v) => gone >= v,
            ClaimIntent::Plain | ClaimIntent::Forced { .. } => true,
        }
    }
}

/// What a released claim leaves of the mark that says an OCR may have been requested (taken
/// with the claim): the next attempt reads the asset back first (an Admin API call, under the
/// hourly quota) while the mark is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestMark {
    /// The attempt sent an OCR request that may have run (it timed out, say): the mark stays.
    Keep,
    /// The attempt requested nothing that ran (Cloudinary refused the request, or it only read
    /// back): the mark is put back as the claim found it (`None`: removed).
    Restore(Option<u64>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Ours until the expiry; `attempts` counts this one. `requested_before` is when an
    /// earlier claim was taken (ms since the epoch) whose attempt never wrote a result: it may
    /// have asked Cloudinary for OCR, and been billed, before it timed out or died.
    Claimed {
        attempts: u32,
        requested_before: Option<u64>,
        /// When a rename brought the asset to the key (see [`Moved`]), kept with the result.
        arrived_at_ms: Option<u64>,
    },
    /// Already complete, as far as the claim asks (a plain claim of a complete asset, a new
    /// version's of an asset with a result of that version, a forced re-OCR's of one whose
    /// result was written since it was asked for).
    AlreadyComplete(Status),
    /// Another invocation holds it until this time (ms since the epoch).
    HeldUntil(u64),
    /// The asset left this key (deleted, or renamed away) at or after the version the claim
    /// asks for: there is nothing to OCR under it.
    Gone,
}

#[derive(Debug, thiserror::Error)]
#[error("DynamoDB {operation} on table {table} failed ({code})")]
pub struct StoreError {
    pub operation: &'static str,
    pub table: String,
    pub code: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl StoreError {
    /// An error not raised by the AWS SDK (a twin's injected fault, a limit found locally).
    pub fn new(
        operation: &'static str,
        table: &str,
        code: &str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            operation,
            table: table.to_string(),
            code: code.to_string(),
            source: detail.into().into(),
        }
    }
}

impl Classified for StoreError {
    fn class(&self) -> ErrorClass {
        // A request DynamoDB rejects as invalid fails the same way every time.
        match self.code.as_str() {
            "ValidationException" | "ResourceNotFoundException" => ErrorClass::Permanent,
            _ => ErrorClass::Transient,
        }
    }
}

/// Where results live. The worker is generic over it.
pub trait ResultStore: Send + Sync {
    /// States of the given assets (by item key) that have a terminal status (others are left
    /// out); one call per 100 keys.
    fn states(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<HashMap<String, ItemState>, StoreError>> + Send;
    /// Takes the asset for one attempt, if the claim's intent still holds on the item as it is.
    fn claim(
        &self,
        claim: &Claim<'_>,
    ) -> impl Future<Output = Result<ClaimOutcome, StoreError>> + Send;
    /// Writes the terminal record if the claim is still ours; `false` when it was lost.
    fn put_result(
        &self,
        record: &ResultRecord,
        token: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Records a failure for good if the claim is still ours; `false` when it was lost.
    fn put_failure(
        &self,
        failure: &FailureRecord,
        token: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Gives the claim up (the asset will be retried), noting the error that caused it, and
    /// what the attempt left of a request for OCR.
    fn release(
        &self,
        key: &str,
        token: &str,
        error: &str,
        mark: RequestMark,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Notes on the item why its message is about to reach the dead-letter queue when nothing
    /// else could be written (no claim, or the queue refused the message's deferral); the
    /// item's status and result are left as they are.
    fn note_error(
        &self,
        key: &str,
        error: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Records a failure found before any worker met the asset (the lister could not enqueue
    /// it), unless the asset already has an item: `false` when it had one, which is kept.
    fn record_unqueued(
        &self,
        record: &ResultRecord,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// How the asset under `key` left it, when a notification marked it gone (a table no
    /// notifier changes has no such mark).
    fn gone(&self, key: &str) -> impl Future<Output = Result<Option<Gone>, StoreError>> + Send {
        let _ = key;
        async { Ok(None) }
    }
    /// Writes `record` without a claim: the result of an asset `moved` by a rename (already
    /// keyed by its new key; nothing is paid again for it), or (`None`) a result whose claim a
    /// notification took away while it was paid for. Refused when the key is claimed; a moved
    /// result is refused when the key's latest event is as late as the rename (a later
    /// rename there or away, a later delete, an upload after it: see [`Moved`]), any other
    /// when the key holds a result of its version or a newer one, or is gone at that version
    /// or a later one. Returns whether it was written.
    fn put_renamed(
        &self,
        record: &ResultRecord,
        moved: Option<Moved<'_>>,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let _ = (record, moved, now_ms);
        async { Ok(false) }
    }
}

/// One table shared by several workers (instances of a simulation, say).
impl<T: ResultStore> ResultStore for std::sync::Arc<T> {
    fn states(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<HashMap<String, ItemState>, StoreError>> + Send {
        (**self).states(keys)
    }
    fn claim(
        &self,
        claim: &Claim<'_>,
    ) -> impl Future<Output = Result<ClaimOutcome, StoreError>> + Send {
        (**self).claim(claim)
    }
    fn put_result(
        &self,
        record: &ResultRecord,
        token: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).put_result(record, token)
    }
    fn put_failure(
        &self,
        failure: &FailureRecord,
        token: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).put_failure(failure, token)
    }
    fn release(
        &self,
        key: &str,
        token: &str,
        error: &str,
        mark: RequestMark,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).release(key, token, error, mark)
    }
    fn note_error(
        &self,
        key: &str,
        error: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).note_error(key, error)
    }
    fn record_unqueued(
        &self,
        record: &ResultRecord,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).record_unqueued(record)
    }
    fn gone(&self, key: &str) -> impl Future<Output = Result<Option<Gone>, StoreError>> + Send {
        (**self).gone(key)
    }
    fn put_renamed(
        &self,
        record: &ResultRecord,
        moved: Option<Moved<'_>>,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).put_renamed(record, moved, now_ms)
    }
}

/// A rename that brought an asset to a key: the key it came from and when (ms since the
/// epoch, the notification's time).
///
/// Events on one key are ordered by their time (at equal times, by what must have come first
/// where Cloudinary's asset ids tell): a rename's or a delete's is the
/// notification's, an upload's is its version (Cloudinary's versions are the upload's Unix
/// time, in seconds). A rename there and back keeps the asset's version, so only the time
/// tells which of the two came last; and an asset renamed onto a key whose (newer) image was
/// deleted before is the key's asset although its version is older.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved<'a> {
    pub from: &'a str,
    pub at_ms: u64,
    /// Cloudinary's id of the renamed asset, when known: a tombstone of another asset with
    /// the rename's very time is older than the rename (the key was freed, then the asset
    /// came), one of this asset is not (it came, then left).
    pub asset_id: Option<&'a str>,
}

/// An asset that left its item's key, as Cloudinary's notifications told: deleted, or renamed
/// to another public_id. The item stays as a tombstone, so that a late or repeated notification
/// of the asset as it was changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gone {
    /// When it left (RFC 3339, and ms since the epoch).
    pub at: String,
    pub at_ms: u64,
    /// The asset's version it left at: a result, an upload or a claim of this version or an
    /// older one is of the asset that left.
    pub version: u64,
    /// The key it was renamed to (`None`: deleted).
    pub renamed_to: Option<String>,
    /// Cloudinary's id of the asset that left, when the notification named it: a result of
    /// another asset under the key (one renamed there since) is not marked.
    pub asset_id: Option<String>,
}

impl Gone {
    pub fn by(&self) -> &'static str {
        if self.renamed_to.is_some() {
            "rename"
        } else {
            "delete"
        }
    }
}

/// An item as a notification needs to see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemView {
    pub status: Option<Status>,
    /// The version its result is of.
    pub version: Option<u64>,
    /// A live or expired claim's expiry (ms since the epoch).
    pub claimed_until: Option<u64>,
    pub gone: Option<Gone>,
    /// When a rename brought the asset to the key.
    pub renamed_at_ms: Option<u64>,
}

/// The results table as the notifier changes it.
pub trait NotifyStore: ResultStore {
    /// The item under `key`, if any.
    fn view(&self, key: &str) -> impl Future<Output = Result<Option<ItemView>, StoreError>> + Send;
    /// Marks the item gone (writing a tombstone where there is no item), unless its latest
    /// event is as late as this one (a delete, a rename away or a rename there: see
    /// [`Moved`]), or it holds a result of a newer version. A claim
    /// on it is taken away, so that an attempt in flight writes nothing over the tombstone
    /// (a renamed asset's attempt follows the rename: see [`ResultStore::put_renamed`]);
    /// without `keep_text` the text goes. Returns whether the mark was written.
    fn mark_gone(
        &self,
        key: &str,
        gone: &Gone,
        keep_text: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// The complete result stored under `from`, if there is one and it is not gone.
    fn result_of(
        &self,
        from: &str,
    ) -> impl Future<Output = Result<Option<ResultRecord>, StoreError>> + Send;
    /// Notes that a rename brought an asset to `key` when no result could move with it:
    /// `holding` (the version of the asset's result already under `key`) keeps that result,
    /// with its text, and stamps it with the rename (a tombstone older than the rename comes
    /// off); otherwise the item becomes a marker of the arrival alone, for the worker to
    /// fill. Either way a late delete or rename away that happened before this rename no
    /// longer marks the key. Refused (`false`) when the key's latest event is as late as the
    /// rename, when `holding` no longer holds (another version, the text gone), or when the
    /// key is claimed (without `holding`).
    fn arrive(
        &self,
        key: &str,
        moved: Moved<'_>,
        holding: Option<u64>,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// One table shared by the notifier and workers (in tests and the local stack).
impl<T: NotifyStore> NotifyStore for std::sync::Arc<T> {
    fn view(&self, key: &str) -> impl Future<Output = Result<Option<ItemView>, StoreError>> + Send {
        (**self).view(key)
    }
    fn mark_gone(
        &self,
        key: &str,
        gone: &Gone,
        keep_text: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).mark_gone(key, gone, keep_text)
    }
    fn result_of(
        &self,
        from: &str,
    ) -> impl Future<Output = Result<Option<ResultRecord>, StoreError>> + Send {
        (**self).result_of(from)
    }
    fn arrive(
        &self,
        key: &str,
        moved: Moved<'_>,
        holding: Option<u64>,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).arrive(key, moved, holding, now_ms)
    }
}

/// What a lister pass covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PassMode {
    /// Every asset of the account (Admin API listing).
    Full,
    /// Assets created since the previous pass started, less an overlap (Search API).
    Incremental,
}

impl PassMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Incremental => "incremental",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(Self::Full),
            "incremental" => Some(Self::Incremental),
            _ => None,
        }
    }
}

/// Where the lister is in its pass over the account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Cursor of the next page to list; `None` between passes.
    pub cursor: Option<String>,
    /// The pass in progress; `None` between passes.
    pub mode: Option<PassMode>,
    /// When the pass in progress started (RFC 3339).
    pub pass_started_at: Option<String>,
    /// Lower bound (`created_at`) of the incremental pass in progress.
    pub since: Option<String>,
    /// The delivery type a full pass in progress is listing (`None`: the first, `upload`).
    pub listing_type: Option<String>,
    /// Assets listed and enqueued so far in the pass in progress.
    pub pass_listed: u64,
    /// When the last complete pass started (RFC 3339): the next incremental pass starts there.
    pub last_pass_started_at: Option<String>,
    /// When the last complete full pass finished (RFC 3339).
    pub last_full_pass_at: Option<String>,
    /// Assets the last complete full pass listed: the account's size, as far as it knows.
    pub last_full_pass_listed: u64,
    /// Assets listed over all passes.
    pub total_listed: u64,
    pub updated_at: Option<String>,
    /// The scope the passes were listed under ([`crate::scope::Scope::fingerprint`]; empty:
    /// the whole account).
    pub scope: String,
}

/// A lister run's hold on the checkpoint: while it lasts, no other run lists, and only its
/// owner saves the checkpoint. A checkpoint without one (as older versions wrote it) is free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The run holding it: an id of its own, never reused by another run.
    pub owner: String,
    /// When another run may take it over: the holder's deadline and a margin, so that a run
    /// killed at its deadline blocks the next ones no longer than that.
    pub expires_at: SystemTime,
}

/// What a run asking for the checkpoint's lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The lease is the run's now: the checkpoint to continue from.
    Taken(Checkpoint),
    /// Another run holds it (`None`: the store did not say which).
    HeldByAnother(Option<Lease>),
}

/// What saving the checkpoint under a lease did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum SaveOutcome {
    Saved,
    /// The lease is no longer the run's (it expired and another run took it): nothing written.
    LeaseLost,
}

/// The lister's checkpoint, one item per account, kept by one run at a time under a [`Lease`].
pub trait CheckpointStore: Send + Sync {
    /// Takes the checkpoint's lease if it is free, expired at `now`, or already `lease.owner`'s
    /// (a retried request), and answers with the checkpoint.
    fn take_lease(
        &self,
        id: &str,
        lease: &Lease,
        now: SystemTime,
    ) -> impl Future<Output = Result<LeaseOutcome, StoreError>> + Send;
    /// Saves the checkpoint, keeping the lease, if `lease.owner` still holds it.
    fn save(
        &self,
        id: &str,
        checkpoint: &Checkpoint,
        lease: &Lease,
    ) -> impl Future<Output = Result<SaveOutcome, StoreError>> + Send;
    /// Gives the lease up if `lease.owner` still holds it; `false` if it did not.
    fn release_lease(
        &self,
        id: &str,
        lease: &Lease,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_utf8_boundaries() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(truncate_utf8("€€", 4), "€");
    }

    #[test]
    fn oversize_text_is_truncated_and_says_so() {
        let text = "ü".repeat(MAX_TEXT_BYTES); // 2 bytes each
        let r = ResultRecord::from_outcome(
            "a",
            "image",
            "upload",
            OcrOutcome::Text {
                text: text.clone(),
                locale: None,
            },
            AssetFields::default(),
            1,
            "t".into(),
        );
        assert!(r.truncated);
        assert_eq!(r.text_bytes, text.len() as u64);
        let kept = r.text.unwrap();
        assert!(kept.len() <= MAX_TEXT_BYTES && text.starts_with(&kept));
        let small = ResultRecord::from_outcome(
            "a",
            "image",
            "upload",
            OcrOutcome::NoText,
            AssetFields::default(),
            1,
            "t".into(),
        );
        assert_eq!(
            (small.status, small.truncated, small.text_bytes, small.text),
            (Status::NoText, false, 0, None)
        );
    }
}
