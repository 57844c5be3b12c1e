//! Cloudinary's notifications, kept to: each request is verified before anything in it is read
//! (size, signature over the exact bytes, timestamp window, shape), then turned into a change
//! of the results table or a work message:
//!
//! - `upload` (a new image, or a new version over a public_id): a work message at that version;
//!   the worker's claim pays once per version and refuses an asset that left the key since.
//! - `rename` (and a `move` that names a new public_id): the result moves to the new key (the
//!   text kept, nothing paid again) and the old key becomes a tombstone naming the new one; an
//!   asset with no result yet is sent to the worker under its new key.
//! - `delete`: the item becomes a tombstone (its text kept or not, by the stack's setting).
//! - anything else: acknowledged and ignored.
//!
//! Duplicates, retries and reordering change nothing twice: every change is conditioned on
//! versions (Cloudinary's version of an asset is the Unix time of its upload), never on arrival.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use sha1::Digest;
use subtle::ConstantTimeEq;

use crate::clock::{epoch_ms, from_epoch_ms, parse_rfc3339, rfc3339};
use crate::cloudinary::SignatureAlgorithm;
use crate::error::error_chain;
use crate::message::{WorkMessage, item_key};
use crate::queue::WorkQueue;
use crate::scope::Scope;
use crate::secret::Secret;
use crate::store::{Gone, Moved, NotifyStore};
use crate::telemetry::Metric;

/// How long a signature is accepted: Cloudinary's SDKs' own default (`valid_for=7200`).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7200);
/// How far ahead of this clock a timestamp may be (clocks drift; a larger lead is forged).
pub const DEFAULT_MAX_AHEAD: Duration = Duration::from_secs(300);
/// The largest body read. An upload's notification is a few KB; a bulk delete's lists up to
/// 1,000 resources of about 200 bytes each.
pub const DEFAULT_MAX_BODY: usize = 512 * 1024;
/// How long the message of a renamed asset whose OCR was in flight waits: the attempt in
/// flight stores its result under the new key by then (the worker's timeout is shorter), and
/// the message, a safety net should it have died, then finds the result and pays nothing.
pub const IN_FLIGHT_RENAME_DELAY: Duration = Duration::from_secs(900);

/// How many renames [`Notifier::came_back`] follows.
const MAX_RENAME_CHAIN: usize = 8;

/// The notifier's settings.
#[derive(Debug, Clone)]
pub struct NotifierSettings {
    /// The account's API secret: a notification's signature is a hash over it.
    pub api_secret: Secret,
    /// The account's signature algorithm (SHA-1 unless the account is set to SHA-256).
    pub algorithm: SignatureAlgorithm,
    pub max_age: Duration,
    pub max_ahead: Duration,
    pub max_body: usize,
    /// Whether a deleted asset's text stays in its tombstone.
    pub keep_deleted_text: bool,
    /// What the stack OCRs: uploads outside it are ignored.
    pub scope: Scope,
}

impl NotifierSettings {
    pub fn new(api_secret: Secret, algorithm: SignatureAlgorithm, scope: Scope) -> Self {
        Self {
            api_secret,
            algorithm,
            max_age: DEFAULT_MAX_AGE,
            max_ahead: DEFAULT_MAX_AHEAD,
            max_body: DEFAULT_MAX_BODY,
            keep_deleted_text: true,
            scope,
        }
    }
}

/// One HTTP request as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// Why a request was refused; it changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    Method,
    TooLarge,
    Unsigned,
    BadSignature,
    Stale,
    Ahead,
    Malformed,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Self::Method => 405,
            Self::TooLarge => 413,
            Self::Unsigned | Self::BadSignature | Self::Stale | Self::Ahead => 401,
            Self::Malformed => 400,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method_not_allowed",
            Self::TooLarge => "too_large",
            Self::Unsigned => "unsigned",
            Self::BadSignature => "bad_signature",
            Self::Stale => "stale",
            Self::Ahead => "ahead",
            Self::Malformed => "malformed",
        }
    }
}

/// An asset as a notification names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetRef {
    pub public_id: String,
    pub delivery_type: String,
    pub resource_type: String,
}

impl AssetRef {
    pub fn key(&self) -> String {
        item_key(&self.public_id, &self.delivery_type)
    }

    fn is_image(&self) -> bool {
        self.resource_type == "image"
    }
}

/// What a verified notification says changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Upload {
        asset: AssetRef,
        version: Option<u64>,
        format: Option<String>,
        tags: Option<Vec<String>>,
    },
    /// Each asset with its version and Cloudinary's asset id, when named.
    Delete {
        assets: Vec<(AssetRef, Option<u64>, Option<String>)>,
    },
    Rename {
        from: AssetRef,
        to: AssetRef,
        version: Option<u64>,
        asset_id: Option<String>,
    },
    Other(String),
}

/// A verified notification: the change and when Cloudinary says it happened (ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub change: Change,
    pub at_ms: u64,
}

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Refused(Refusal),
    /// Acknowledged, nothing to do (the reason).
    Ignored(&'static str),
    /// Work messages sent.
    Enqueued(usize),
    /// Tombstones written, of the assets named (the others were gone already, or newer).
    Deleted {
        marked: usize,
        named: usize,
    },
    /// A rename: whether the result moved, whether the old key was marked, whether the new
    /// key was sent to the worker.
    Renamed {
        moved: bool,
        marked: bool,
        enqueued: bool,
    },
    /// The table or the queue failed: answered 500, so that Cloudinary sends it again.
    Failed(String),
}

impl Outcome {
    pub fn status(&self) -> u16 {
        match self {
            Self::Refused(r) => r.status(),
            Self::Failed(_) => 500,
            _ => 200,
        }
    }

    /// The answer's body: what was done, never what was sent.
    pub fn body(&self) -> String {
        let result = match self {
            Self::Refused(r) => r.as_str(),
            Self::Ignored(_) => "ignored",
            Self::Enqueued(_) => "enqueued",
            Self::Deleted { .. } => "deleted",
            Self::Renamed { .. } => "renamed",
            Self::Failed(_) => "failed",
        };
        serde_json::json!({ "result": result }).to_string()
    }

    /// The request's metrics.
    pub fn metrics(&self) -> Vec<Metric> {
        let one = |name| {
            vec![
                Metric::count("NotificationsReceived", 1),
                Metric::count(name, 1),
            ]
        };
        match self {
            Self::Refused(_) => one("NotificationsRefused"),
            Self::Ignored(_) => one("NotificationsIgnored"),
            Self::Failed(_) => one("NotificationsFailed"),
            Self::Enqueued(_) | Self::Deleted { .. } | Self::Renamed { .. } => {
                one("NotificationsApplied")
            }
        }
    }
}

/// Checks a request as Cloudinary signs it, before its body is read: the size, the signature
/// (a plain hash of `body + timestamp + API secret`, compared in constant time), then the
/// timestamp's window. Returns the timestamp (Unix seconds).
pub fn verify(
    request: &Request<'_>,
    settings: &NotifierSettings,
    now: SystemTime,
) -> Result<u64, Refusal> {
    if !request.method.eq_ignore_ascii_case("POST") {
        return Err(Refusal::Method);
    }
    if request.body.len() > settings.max_body {
        return Err(Refusal::TooLarge);
    }
    let (Some(timestamp), Some(signature)) = (request.timestamp, request.signature) else {
        return Err(Refusal::Unsigned);
    };
    let timestamp = timestamp.trim();
    let seconds: u64 = match timestamp.parse() {
        Ok(s) if timestamp.bytes().all(|b| b.is_ascii_digit()) => s,
        _ => return Err(Refusal::Unsigned),
    };
    let expected = digest(
        settings.algorithm,
        &[
            request.body,
            timestamp.as_bytes(),
            settings.api_secret.expose().as_bytes(),
        ],
    );
    let given = signature.trim().to_ascii_lowercase();
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return Err(Refusal::BadSignature);
    }
    let now_s = epoch_ms(now) / 1000;
    if now_s > seconds && now_s - seconds > settings.max_age.as_secs() {
        return Err(Refusal::Stale);
    }
    if seconds > now_s && seconds - now_s > settings.max_ahead.as_secs() {
        return Err(Refusal::Ahead);
    }
    Ok(seconds)
}

/// Lower-case hex of the algorithm's hash over the parts, in order.
pub fn digest(algorithm: SignatureAlgorithm, parts: &[&[u8]]) -> String {
    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
    match algorithm {
        SignatureAlgorithm::Sha1 => {
            let mut h = sha1::Sha1::new();
            parts.iter().for_each(|p| h.update(p));
            hex(&h.finalize())
        }
        SignatureAlgorithm::Sha256 => {
            let mut h = sha2::Sha256::new();
            parts.iter().for_each(|p| h.update(p));
            hex(&h.finalize())
        }
    }
}

/// A version as Cloudinary writes it: a number, or digits in a string.
fn version_of(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().trim_start_matches('v').parse().ok(),
        _ => None,
    }
}

fn text(v: &Value, field: &str) -> Option<String> {
    v.get(field)?.as_str().map(str::to_string)
}

fn asset_of(v: &Value, id_field: &str, type_field: &str) -> Result<AssetRef, Refusal> {
    let public_id = text(v, id_field).filter(|s| !s.is_empty());
    Ok(AssetRef {
        public_id: public_id.ok_or(Refusal::Malformed)?,
        delivery_type: text(v, type_field)
            .or_else(|| text(v, "type"))
            .unwrap_or_else(|| "upload".into()),
        resource_type: text(v, "resource_type").unwrap_or_else(|| "image".into()),
    })
}

/// Reads a verified body: a JSON object with a `notification_type`, and for the types acted
/// on, the fields that name the asset. Unknown fields are ignored (Cloudinary documents
/// examples, not a schema).
pub fn parse(body: &[u8], signed_at_s: u64) -> Result<Notification, Refusal> {
    let v: Value = serde_json::from_slice(body).map_err(|_| Refusal::Malformed)?;
    if !v.is_object() {
        return Err(Refusal::Malformed);
    }
    let kind = text(&v, "notification_type").ok_or(Refusal::Malformed)?;
    let at_ms = text(&v, "timestamp")
        .and_then(|t| parse_rfc3339(&t))
        .map(epoch_ms)
        .unwrap_or(signed_at_s * 1000);
    let renamed = v.get("from_public_id").is_some() || v.get("to_public_id").is_some();
    let change = match kind.as_str() {
        "upload" => Change::Upload {
            asset: asset_of(&v, "public_id", "type")?,
            version: version_of(v.get("version")),
            format: text(&v, "format"),
            tags: v.get("tags").and_then(Value::as_array).map(|tags| {
                tags.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            }),
        },
        "delete" => {
            let listed = match v.get("resources") {
                Some(Value::Array(items)) => items.clone(),
                Some(_) => return Err(Refusal::Malformed),
                // One asset named at the top level.
                None => vec![v.clone()],
            };
            let assets = listed
                .iter()
                .map(|r| {
                    Ok((
                        asset_of(r, "public_id", "type")?,
                        version_of(r.get("version")),
                        text(r, "asset_id"),
                    ))
                })
                .collect::<Result<Vec<_>, Refusal>>()?;
            Change::Delete { assets }
        }
        "rename" | "move" if renamed => Change::Rename {
            from: asset_of(&v, "from_public_id", "type")?,
            to: asset_of(&v, "to_public_id", "to_type")?,
            version: version_of(v.get("version")),
            asset_id: text(&v, "asset_id"),
        },
        other => Change::Other(other.to_string()),
    };
    Ok(Notification { change, at_ms })
}

/// The notifier: the table and the work queue it changes, and its settings.
pub struct Notifier<S, Q> {
    pub store: S,
    pub queue: Q,
    pub settings: NotifierSettings,
}

impl<S: NotifyStore, Q: WorkQueue> Notifier<S, Q> {
    pub fn new(store: S, queue: Q, settings: NotifierSettings) -> Self {
        Self {
            store,
            queue,
            settings,
        }
    }

    /// Answers one request: verified, then applied. A refused request is logged without its
    /// body and changes nothing.
    pub async fn handle(&self, request: &Request<'_>, now: SystemTime) -> Outcome {
        let signed_at = match verify(request, &self.settings, now) {
            Ok(s) => s,
            Err(refusal) => {
                tracing::warn!(
                    refusal = refusal.as_str(),
                    bytes = request.body.len(),
                    "notification refused"
                );
                return Outcome::Refused(refusal);
            }
        };
        let notification = match parse(request.body, signed_at) {
            Ok(n) => n,
            Err(refusal) => {
                tracing::warn!(
                    refusal = refusal.as_str(),
                    bytes = request.body.len(),
                    "notification refused"
                );
                return Outcome::Refused(refusal);
            }
        };
        let outcome = match self.apply(&notification, now).await {
            Ok(outcome) => outcome,
            Err(reason) => Outcome::Failed(reason),
        };
        match &outcome {
            Outcome::Failed(reason) => {
                tracing::error!(%reason, "notification not applied; Cloudinary sends it again");
            }
            other => {
                tracing::info!(change = ?notification.change, at_ms = notification.at_ms, outcome = ?other, "notification")
            }
        }
        outcome
    }

    /// Whether an upload of `asset` is the stack's to OCR. A scope with a Search expression
    /// cannot be decided here: its images wait for the lister's next pass.
    fn in_scope(&self, asset: &AssetRef, format: Option<&str>, tags: Option<&[String]>) -> bool {
        let scope = &self.settings.scope;
        asset.is_image()
            && scope.expression.is_none()
            && scope.admits(&asset.public_id, &asset.delivery_type, format, tags)
    }

    pub async fn apply(&self, n: &Notification, now: SystemTime) -> Result<Outcome, String> {
        match &n.change {
            Change::Upload {
                asset,
                version,
                format,
                tags,
            } => {
                if !asset.is_image() {
                    return Ok(Outcome::Ignored("not_an_image"));
                }
                if !self.in_scope(asset, format.as_deref(), tags.as_deref()) {
                    return Ok(Outcome::Ignored("out_of_scope"));
                }
                // An upload the key has seen a later event than (a delete, a rename away, an
                // image renamed there) is of an image no longer there. A version is the
                // upload's second: the upload ended before the next second began.
                if let Some(v) = version {
                    let latest = self.view(&asset.key()).await?.map(|view| {
                        let gone = view.gone.map_or(0, |g| g.at_ms);
                        gone.max(view.renamed_at_ms.unwrap_or(0))
                    });
                    if latest.is_some_and(|t| v.saturating_add(1).saturating_mul(1000) <= t) {
                        return Ok(Outcome::Ignored("superseded"));
                    }
                }
                let mut message =
                    WorkMessage::new(&asset.public_id, &asset.resource_type, &asset.delivery_type);
                message.version = *version;
                self.send(message, Duration::ZERO).await?;
                Ok(Outcome::Enqueued(1))
            }
            Change::Delete { assets } => {
                let mut marked = 0;
                let mut named = 0;
                for (asset, version, asset_id) in assets.iter().filter(|(a, ..)| a.is_image()) {
                    named += 1;
                    let key = asset.key();
                    // An asset the stack never met and would not OCR leaves no tombstone.
                    if !self.in_scope(asset, None, None) && self.view(&key).await?.is_none() {
                        continue;
                    }
                    let gone = Gone {
                        at: rfc3339(from_epoch_ms(n.at_ms)),
                        at_ms: n.at_ms,
                        version: version.unwrap_or(n.at_ms / 1000),
                        renamed_to: None,
                        asset_id: asset_id.clone(),
                    };
                    if self.mark(&key, &gone).await? {
                        marked += 1;
                    }
                }
                if named == 0 {
                    return Ok(Outcome::Ignored("not_an_image"));
                }
                Ok(Outcome::Deleted { marked, named })
            }
            Change::Rename {
                from,
                to,
                version,
                asset_id,
            } => {
                self.rename(from, to, (*version, asset_id.as_deref()), n, now)
                    .await
            }
            Change::Other(_) => Ok(Outcome::Ignored("not_acted_on")),
        }
    }

    async fn rename(
        &self,
        from: &AssetRef,
        to: &AssetRef,
        (version, asset_id): (Option<u64>, Option<&str>),
        n: &Notification,
        now: SystemTime,
    ) -> Result<Outcome, String> {
        if !from.is_image() {
            return Ok(Outcome::Ignored("not_an_image"));
        }
        let (from_key, to_key) = (from.key(), to.key());
        if from_key == to_key {
            return Ok(Outcome::Ignored("same_key"));
        }
        // Without a version in the notification, the rename counts as of its time: a version
        // Cloudinary gave the renamed asset is the Unix time of the rename, no later.
        let floor = version.unwrap_or(n.at_ms / 1000);
        let view = self.view(&from_key).await?;
        let to_in_scope = self.in_scope(to, None, None);
        let result = self
            .store
            .result_of(&from_key)
            .await
            .map_err(|e| error_chain(&e))?;
        let gone = |version: u64| Gone {
            at: rfc3339(from_epoch_ms(n.at_ms)),
            at_ms: n.at_ms,
            version,
            renamed_to: Some(to_key.clone()),
            asset_id: asset_id.map(str::to_string),
        };
        let arrival = Moved {
            from: &from_key,
            at_ms: n.at_ms,
            asset_id,
        };
        // Renamed back since (there and back keeps the version): the old key is the asset's
        // again, and stays unmarked.
        let came_back = self.came_back(&from_key, &to_key, n.at_ms).await?;
        // The result is the renamed asset's when Cloudinary's asset ids agree (where both are
        // known) and it is no newer than the rename: a newer one is of an image uploaded under
        // the old name since, and stays.
        let renamed_asset = |r: &crate::store::ResultRecord| match (&r.asset.asset_id, asset_id) {
            (Some(stored), Some(named)) => stored == named,
            _ => r.asset.version.is_none_or(|v| v <= floor),
        };
        if let Some(mut record) = result.filter(renamed_asset) {
            let content = record.asset.version;
            record.key = to_key.clone();
            record.delivery_type = to.delivery_type.clone();
            let moved = to_in_scope
                && self
                    .store
                    .put_renamed(&record, Some(arrival), epoch_ms(now))
                    .await
                    .map_err(|e| error_chain(&e))?;
            let marked = !came_back
                && self
                    .mark(&from_key, &gone(floor.max(content.unwrap_or(0))))
                    .await?;
            // The rename names a newer version than the text's: an upload over the image
            // before the rename whose OCR had not been stored (or, should Cloudinary give a
            // renamed asset a new version, the same image): the new key's worker decides.
            let newer = version.filter(|v| content.is_some_and(|c| *v > c));
            let enqueued = match newer {
                Some(v) if to_in_scope => {
                    let mut message =
                        WorkMessage::new(&to.public_id, &to.resource_type, &to.delivery_type);
                    message.version = Some(v);
                    // An attempt in flight at the old key may have paid for that version:
                    // the renamed image keeps its OCR, so the worker reads it back first.
                    message.ocr_requested = true;
                    self.send(message, Duration::ZERO).await?;
                    true
                }
                _ => false,
            };
            return Ok(Outcome::Renamed {
                moved,
                marked,
                enqueued,
            });
        }
        // No result to move: the old key is marked, and the new one sent to the worker, which
        // reads the image back first (a renamed image keeps its OCR). The mark takes away the
        // claim of an attempt in flight under the old key; its OCR may still be on its way, so
        // the message waits a while before it reads back.
        let in_flight = view
            .as_ref()
            .and_then(|v| v.claimed_until)
            .is_some_and(|until| until >= epoch_ms(now));
        let marked = !came_back && self.mark(&from_key, &gone(floor)).await?;
        if !to_in_scope {
            return Ok(Outcome::Renamed {
                moved: false,
                marked,
                enqueued: false,
            });
        }
        // The new key may hold the asset's result already (a rename back before this one
        // was handled): it is kept, stamped with this rename, when Cloudinary's ids (or the
        // versions) say it is the asset's. Otherwise the key becomes the asset's (a
        // tombstone or another image's result there is older than the rename) and the worker
        // fills it, reading the asset back first: a renamed asset keeps its OCR.
        let holding = self
            .store
            .result_of(&to_key)
            .await
            .map_err(|e| error_chain(&e))?
            .filter(|r| match (&r.asset.asset_id, asset_id, version) {
                (Some(stored), Some(named), _) => stored == named,
                (_, _, Some(v)) => r.asset.version == Some(v),
                _ => false,
            })
            .and_then(|r| r.asset.version);
        let now_ms = epoch_ms(now);
        if holding.is_some() {
            let kept = self
                .store
                .arrive(&to_key, arrival, holding, now_ms)
                .await
                .map_err(|e| error_chain(&e))?;
            if kept {
                return Ok(Outcome::Renamed {
                    moved: true,
                    marked,
                    enqueued: false,
                });
            }
        }
        // A concurrent notification may have changed the key since it was read: then the
        // marker (or nothing, when the key's latest event is later) and the worker decide.
        self.store
            .arrive(&to_key, arrival, None, now_ms)
            .await
            .map_err(|e| error_chain(&e))?;
        let mut message = WorkMessage::new(&to.public_id, &to.resource_type, &to.delivery_type);
        message.version = version;
        message.ocr_requested = true;
        let delay = if in_flight {
            IN_FLIGHT_RENAME_DELAY
        } else {
            Duration::ZERO
        };
        self.send(message, delay).await?;
        Ok(Outcome::Renamed {
            moved: false,
            marked,
            enqueued: true,
        })
    }

    /// Whether the asset renamed from `from` to `to` at `at_ms` was renamed away from `to`
    /// later, and (following its renames) back to `from`.
    async fn came_back(&self, from: &str, to: &str, at_ms: u64) -> Result<bool, String> {
        let mut key = to.to_string();
        let mut after = at_ms;
        for _ in 0..MAX_RENAME_CHAIN {
            let Some(gone) = self.view(&key).await?.and_then(|v| v.gone) else {
                return Ok(false);
            };
            match gone.renamed_to {
                Some(next) if gone.at_ms > after => {
                    if next == from {
                        return Ok(true);
                    }
                    after = gone.at_ms;
                    key = next;
                }
                _ => return Ok(false),
            }
        }
        Ok(false)
    }

    async fn view(&self, key: &str) -> Result<Option<crate::store::ItemView>, String> {
        self.store.view(key).await.map_err(|e| error_chain(&e))
    }

    async fn mark(&self, key: &str, gone: &Gone) -> Result<bool, String> {
        self.store
            .mark_gone(key, gone, self.settings.keep_deleted_text)
            .await
            .map_err(|e| error_chain(&e))
    }

    async fn send(&self, message: WorkMessage, delay: Duration) -> Result<(), String> {
        let sent = self
            .queue
            .send_delayed_batch(&[(message, delay)])
            .await
            .map_err(|e| error_chain(&e))?;
        match sent.into_iter().next().flatten() {
            None => Ok(()),
            Some(reason) => Err(format!("the work queue refused the message: {reason}")),
        }
    }
}

#[cfg(test)]
mod tests;
