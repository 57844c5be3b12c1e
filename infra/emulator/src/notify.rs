//! Cloudinary's notifications: the Admin API's triggers, and the signed JSON requests that
//! announce each upload, rename and destroy to the triggers' URLs and to the call's
//! `notification_url`. Deliveries run in the background, with Cloudinary's retries and the
//! faults of [`NotificationFaults`] drawn from the configured seed.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::Method;
use rand::Rng;
use serde_json::{Value, json};

use crate::server::{Reply, error, ok, param};
use crate::{EmulatorConfig, State};

/// The event types a trigger may name, as Cloudinary's SDK lists them (`all`: every event).
pub const EVENT_TYPES: &[&str] = &[
    "all",
    "access_control_changed",
    "bulk_refresh_auto_fetch",
    "create_folder",
    "delete",
    "delete_by_token",
    "delete_folder",
    "eager",
    "error",
    "explode",
    "generate_archive",
    "info",
    "invalidate_custom_cdn",
    "moderation",
    "moderation_summary",
    "move",
    "move_or_rename_asset_folder",
    "multi",
    "publish",
    "rename",
    "report",
    "resource_context_changed",
    "resource_display_name_changed",
    "resource_metadata_changed",
    "resource_tags_changed",
    "restore_asset_version",
    "sprite",
    "upload",
];

/// Faults injected into the delivery of notifications; none by default. Rates are shares
/// (0..1), drawn from a generator seeded with [`EmulatorConfig::seed`].
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationFaults {
    /// Share of deliveries never sent (no request, no retry).
    pub lost_rate: f64,
    /// Share of deliveries sent twice: two copies of the same body, each with its own delay,
    /// signature timestamp and retries.
    pub duplicate_rate: f64,
    /// Each delivery first waits a uniform random delay in `[0, delay_max]`, so deliveries may
    /// arrive out of order.
    pub delay_max: Duration,
    /// Share of requests answered 2xx whose answer is lost: the request counts as failed and
    /// is retried, so the receiver gets it again.
    pub answer_lost_rate: f64,
    /// Retries after a failed request (an answer other than 2xx, no answer, a lost answer).
    pub max_retries: u32,
    /// The wait before each retry.
    pub retry_interval: Duration,
}

impl Default for NotificationFaults {
    fn default() -> Self {
        Self {
            lost_rate: 0.0,
            duplicate_rate: 0.0,
            delay_max: Duration::ZERO,
            answer_lost_rate: 0.0,
            max_retries: 3,
            retry_interval: Duration::from_secs(180),
        }
    }
}

/// A notification trigger: notifications of `event_type` (`all`: every event) are posted to
/// `uri`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Trigger {
    pub id: String,
    pub uri: String,
    pub event_type: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub updated_at: String,
}

/// How one notification request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Answered with this status: delivered when 2xx, else failed (and retried).
    Answered(u16),
    /// Answered 2xx, but the answer was lost: failed (and retried) although received.
    AnswerLost(u16),
    /// No answer (connection refused or broken, or the timeout): failed (and retried).
    Failed(String),
    /// Never sent: the delivery was lost.
    Lost,
}

/// One notification request as sent (or, when lost, as it would have been sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentNotification {
    pub url: String,
    /// `upload`, `rename` or `delete`.
    pub notification_type: String,
    /// The exact body sent (JSON).
    pub body: String,
    /// The `X-Cld-Timestamp` header: Unix seconds when the request was sent.
    pub timestamp: u64,
    /// The `X-Cld-Signature` header.
    pub signature: String,
    /// 1 for the first request of a delivery, then one more per retry; 0 when lost.
    pub attempt: u32,
    /// 1, or 2 for the second copy of a duplicated delivery.
    pub copy: u32,
    pub outcome: DeliveryOutcome,
}

impl SentNotification {
    /// Whether the receiver answered 2xx and the answer arrived.
    pub fn delivered(&self) -> bool {
        matches!(self.outcome, DeliveryOutcome::Answered(s) if (200..300).contains(&s))
    }

    /// The body, parsed.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// `X-Cld-Signature`: the lowercase hex SHA-1 (or SHA-256) of the body's bytes, then the
/// timestamp's decimal digits, then the API secret (a plain hash, as
/// `cloudinary.utils.verify_notification_signature` checks it).
pub fn notification_signature(body: &[u8], timestamp: u64, secret: &str, sha256: bool) -> String {
    use sha2::Digest;
    let mut signed = body.to_vec();
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.extend_from_slice(secret.as_bytes());
    let digest = if sha256 {
        sha2::Sha256::digest(&signed).to_vec()
    } else {
        sha1::Sha1::digest(&signed).to_vec()
    };
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Now, RFC 3339 in UTC.
pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// `n` random lowercase hex digits (identifiers: request ids, trigger ids, version ids).
pub(crate) fn random_hex(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

/// The Admin API's `triggers` endpoints (`rest` is the path after the cloud name): create
/// (`POST triggers`: `uri`, `event_type`), list (`GET triggers`, optionally by `event_type`),
/// change the URI (`PUT triggers/{id}`: `new_uri`) and delete (`DELETE triggers/{id}`).
pub(crate) fn triggers_api(
    state: &State,
    method: &Method,
    rest: &str,
    params: &[(String, String)],
) -> Reply {
    let id = rest.strip_prefix("triggers/").filter(|id| !id.is_empty());
    let mut inner = state.lock();
    inner.stats.trigger_calls += 1;
    match (method.clone(), id) {
        (Method::GET, None) => {
            let wanted = param(params, "event_type").filter(|t| !t.is_empty());
            let listed: Vec<&crate::Trigger> = inner
                .triggers
                .iter()
                .filter(|t| wanted.is_none_or(|w| t.event_type == w))
                .collect();
            ok(json!({"triggers": listed, "total": listed.len()}))
        }
        (Method::POST, None) => {
            let uri = param(params, "uri").unwrap_or_default();
            let event_type = param(params, "event_type").unwrap_or_default();
            if uri.is_empty() {
                return error(400, "Missing required parameter - uri");
            }
            if event_type.is_empty() {
                return error(400, "Missing required parameter - event_type");
            }
            if let Err(message) = valid_uri(uri) {
                return error(400, &message);
            }
            if !EVENT_TYPES.contains(&event_type) {
                return error(400, &format!("Invalid event_type {event_type}"));
            }
            match param(params, "uri_type") {
                None | Some("") | Some("webhook") => {}
                Some(other) => {
                    return error(
                        400,
                        &format!("uri_type {other} is not supported (webhook only)"),
                    );
                }
            }
            if inner
                .triggers
                .iter()
                .any(|t| t.uri == uri && t.event_type == event_type)
            {
                return error(
                    409,
                    &format!("Trigger for {event_type} to {uri} already exists"),
                );
            }
            let now = now_rfc3339();
            let trigger = crate::Trigger {
                id: random_hex(32),
                uri: uri.into(),
                event_type: event_type.into(),
                created_at: now.clone(),
                updated_at: now,
            };
            inner.triggers.push(trigger.clone());
            ok(serde_json::to_value(trigger).unwrap_or_default())
        }
        (Method::PUT, Some(id)) => {
            let new_uri = param(params, "new_uri").unwrap_or_default();
            if new_uri.is_empty() {
                return error(400, "Missing required parameter - new_uri");
            }
            if let Err(message) = valid_uri(new_uri) {
                return error(400, &message);
            }
            let Some(i) = inner.triggers.iter().position(|t| t.id == id) else {
                return error(404, &format!("Trigger {id} not found"));
            };
            let event_type = inner.triggers[i].event_type.clone();
            if inner
                .triggers
                .iter()
                .any(|t| t.id != id && t.uri == new_uri && t.event_type == event_type)
            {
                return error(
                    409,
                    &format!("Trigger for {event_type} to {new_uri} already exists"),
                );
            }
            let trigger = &mut inner.triggers[i];
            trigger.uri = new_uri.into();
            trigger.updated_at = now_rfc3339();
            ok(json!({"message": "ok"}))
        }
        (Method::DELETE, Some(id)) => {
            let Some(i) = inner.triggers.iter().position(|t| t.id == id) else {
                return error(404, &format!("Trigger {id} not found"));
            };
            inner.triggers.remove(i);
            ok(json!({"message": "ok"}))
        }
        _ => error(405, &format!("{method} is not allowed on {rest}")),
    }
}

/// A notification URL must be an absolute `http` or `https` URL.
fn valid_uri(uri: &str) -> Result<(), String> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        _ => Err(format!(
            "Invalid uri {uri:?}: an http or https URL is expected"
        )),
    }
}

/// Announces an event: `fields` (a JSON object) with `notification_type`, `timestamp` and
/// `request_id` added, serialized once and posted, signed, to each trigger of
/// `notification_type` or `all` and to `notification_url`, once per URL. Returns at once: the
/// deliveries run in background tasks.
pub(crate) fn notify(
    state: &Arc<State>,
    cfg: &EmulatorConfig,
    notification_type: &str,
    request_id: &str,
    mut fields: Value,
    notification_url: Option<&str>,
) {
    let mut urls: Vec<String> = {
        let inner = state.lock();
        inner
            .triggers
            .iter()
            .filter(|t| t.event_type == notification_type || t.event_type == "all")
            .map(|t| t.uri.clone())
            .collect()
    };
    urls.extend(
        notification_url
            .filter(|u| !u.is_empty())
            .map(str::to_string),
    );
    let mut seen = std::collections::HashSet::new();
    urls.retain(|u| seen.insert(u.clone()));
    if urls.is_empty() {
        return;
    }
    fields["notification_type"] = notification_type.into();
    fields["timestamp"] = now_rfc3339().into();
    fields["request_id"] = request_id.into();
    let body: Arc<str> = fields.to_string().into();
    let faults = &cfg.notification_faults;
    for url in urls {
        let (lost, copies, delays) = {
            let mut rng = state.notify_rng.lock().unwrap_or_else(|e| e.into_inner());
            let lost = rng.random::<f64>() < faults.lost_rate;
            let copies = if rng.random::<f64>() < faults.duplicate_rate {
                2
            } else {
                1
            };
            let delays: Vec<Duration> = (0..copies)
                .map(|_| faults.delay_max.mul_f64(rng.random::<f64>()))
                .collect();
            (lost, copies, delays)
        };
        let delivery = Delivery {
            state: state.clone(),
            url,
            notification_type: notification_type.into(),
            body: body.clone(),
            secret: cfg.api_secret.clone(),
            sha256: cfg.signs_notifications_in_sha256(),
            timeout: cfg.notification_timeout,
            faults: faults.clone(),
            copy: 1,
        };
        let mut inner = state.lock();
        if lost {
            inner.stats.notifications_lost += 1;
            let timestamp = unix_now();
            inner
                .notifications
                .push(delivery.record(timestamp, 0, DeliveryOutcome::Lost));
            continue;
        }
        if copies > 1 {
            inner.stats.notifications_duplicated += 1;
        }
        inner.notifications_pending += copies as u64;
        drop(inner);
        for (copy, delay) in (1..=copies).zip(delays) {
            let delivery = Delivery {
                copy,
                ..delivery.clone()
            };
            tokio::spawn(delivery.run(delay));
        }
    }
}

/// One copy of a notification on its way to one URL.
#[derive(Clone)]
struct Delivery {
    state: Arc<State>,
    url: String,
    notification_type: String,
    body: Arc<str>,
    secret: String,
    sha256: bool,
    timeout: Duration,
    faults: NotificationFaults,
    copy: u32,
}

/// Counts a delivery as ended when dropped, however its task ends.
struct Pending(Arc<State>);

impl Drop for Pending {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.notifications_pending = inner.notifications_pending.saturating_sub(1);
    }
}

impl Delivery {
    fn record(&self, timestamp: u64, attempt: u32, outcome: DeliveryOutcome) -> SentNotification {
        SentNotification {
            url: self.url.clone(),
            notification_type: self.notification_type.clone(),
            body: self.body.to_string(),
            timestamp,
            signature: notification_signature(
                self.body.as_bytes(),
                timestamp,
                &self.secret,
                self.sha256,
            ),
            attempt,
            copy: self.copy,
            outcome,
        }
    }

    /// Waits `delay`, then sends until delivered or the retries are spent; abandoned when the
    /// emulator stops.
    async fn run(self, delay: Duration) {
        let _pending = Pending(self.state.clone());
        let mut stopping = self.state.stopping.subscribe();
        if !pause(&mut stopping, delay).await {
            return;
        }
        for attempt in 1..=self.faults.max_retries.saturating_add(1) {
            if attempt > 1 {
                if !pause(&mut stopping, self.faults.retry_interval).await {
                    return;
                }
                self.state.lock().stats.notifications_retried += 1;
            }
            let timestamp = unix_now();
            let sent = self.record(timestamp, attempt, DeliveryOutcome::Lost);
            let request = self
                .state
                .http
                .post(&self.url)
                .timeout(self.timeout)
                .header("Content-Type", "application/json")
                .header("X-Cld-Timestamp", timestamp.to_string())
                .header("X-Cld-Signature", &sent.signature)
                .body(self.body.to_string())
                .send();
            let answered = tokio::select! {
                answered = request => answered,
                _ = stopping.wait_for(|s| *s) => return,
            };
            let outcome = match answered {
                Ok(answer) => {
                    let status = answer.status().as_u16();
                    let answer_lost = answer.status().is_success() && {
                        let mut rng = self
                            .state
                            .notify_rng
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        rng.random::<f64>() < self.faults.answer_lost_rate
                    };
                    if answer_lost {
                        DeliveryOutcome::AnswerLost(status)
                    } else {
                        DeliveryOutcome::Answered(status)
                    }
                }
                Err(e) => DeliveryOutcome::Failed(e.to_string()),
            };
            let sent = SentNotification { outcome, ..sent };
            let delivered = sent.delivered();
            let mut inner = self.state.lock();
            inner.stats.notifications_sent += 1;
            if delivered {
                inner.stats.notifications_delivered += 1;
            } else {
                inner.stats.notifications_failed += 1;
            }
            if matches!(sent.outcome, DeliveryOutcome::AnswerLost(_)) {
                inner.stats.notifications_answers_lost += 1;
            }
            inner.notifications.push(sent);
            if delivered {
                return;
            }
        }
    }
}

/// Sleeps `duration`; `false` when the emulator stops meanwhile.
async fn pause(stopping: &mut tokio::sync::watch::Receiver<bool>, duration: Duration) -> bool {
    if *stopping.borrow() {
        return false;
    }
    if duration.is_zero() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(duration) => true,
        _ = stopping.wait_for(|s| *s) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::Method;
    use serde_json::json;

    use super::*;
    use crate::testing::{Received, Receiver, admin, emulator, hex};

    /// The signature recomputed here, independently of the emulator's code.
    fn expected_signature(received: &Received, secret: &str, sha256: bool) -> String {
        use sha2::Digest;
        let mut signed = received.body.to_vec();
        signed.extend_from_slice(received.timestamp.as_bytes());
        signed.extend_from_slice(secret.as_bytes());
        if sha256 {
            hex(&sha2::Sha256::digest(&signed))
        } else {
            hex(&sha1::Sha1::digest(&signed))
        }
    }

    async fn create_trigger(emu: &crate::Emulator, uri: &str, event_type: &str) -> Value {
        let body = json!({"uri": uri, "event_type": event_type});
        let (status, _, trigger) = admin(emu, Method::POST, "triggers", Some(body)).await;
        assert_eq!(status, 200, "{trigger}");
        trigger
    }

    /// Faults that retry at once.
    fn quick(faults: &mut NotificationFaults) {
        faults.retry_interval = Duration::from_millis(20);
    }

    #[tokio::test]
    async fn triggers_are_created_listed_updated_and_deleted_as_admin_calls() {
        let emu = emulator(Vec::new(), |_| {}).await;
        let upload = create_trigger(&emu, "https://example.com/a", "upload").await;
        for key in ["id", "uri", "event_type", "created_at", "updated_at"] {
            assert!(upload[key].is_string(), "{key}: {upload}");
        }
        let delete = create_trigger(&emu, "https://example.com/a", "delete").await;
        let refusals = [
            (
                json!({"uri": "https://example.com/a", "event_type": "upload"}),
                409,
            ),
            (json!({"event_type": "upload"}), 400),
            (json!({"uri": "https://example.com/b"}), 400),
            (
                json!({"uri": "https://example.com/b", "event_type": "uploads"}),
                400,
            ),
            (
                json!({"uri": "ftp://example.com/b", "event_type": "upload"}),
                400,
            ),
        ];
        for (body, expected) in refusals {
            let (status, headers, answer) =
                admin(&emu, Method::POST, "triggers", Some(body.clone())).await;
            assert_eq!(status, expected, "{body}: {answer}");
            assert!(answer["error"]["message"].is_string());
            assert!(headers.contains_key("X-FeatureRateLimit-Remaining"));
        }
        let (status, _, listed) = admin(&emu, Method::GET, "triggers", None).await;
        assert_eq!(status, 200);
        assert_eq!(listed["triggers"], json!([upload, delete]));
        assert_eq!(listed["total"], 2);
        let (_, _, deletes) = admin(&emu, Method::GET, "triggers?event_type=delete", None).await;
        assert_eq!(deletes["triggers"], json!([delete]));

        let path = format!("triggers/{}", upload["id"].as_str().unwrap());
        let new_uri = json!({"new_uri": "https://example.com/new"});
        let (status, _, answer) = admin(&emu, Method::PUT, &path, Some(new_uri.clone())).await;
        assert_eq!((status, answer), (200, json!({"message": "ok"})));
        assert_eq!(emu.triggers()[0].uri, "https://example.com/new");
        let (status, _, _) = admin(&emu, Method::PUT, "triggers/nope", Some(new_uri)).await;
        assert_eq!(status, 404);
        let (status, _, answer) = admin(&emu, Method::DELETE, &path, Some(json!({}))).await;
        assert_eq!((status, answer), (200, json!({"message": "ok"})));
        let (status, _, _) = admin(&emu, Method::DELETE, &path, Some(json!({}))).await;
        assert_eq!(status, 404);
        assert_eq!(
            emu.triggers(),
            vec![serde_json::from_value::<Trigger>(delete).unwrap()]
        );
        let stats = emu.stats();
        assert_eq!((stats.admin_calls, stats.trigger_calls), (13, 13));
    }

    #[tokio::test]
    async fn notifications_are_signed_in_sha1_over_body_timestamp_and_secret_with_cloudinarys_payloads()
     {
        let emu = emulator(Vec::new(), |_| {}).await;
        let hooks = Receiver::start(&[]).await;
        let per_call = Receiver::start(&[]).await;
        for event in ["upload", "rename", "delete"] {
            create_trigger(&emu, &hooks.url, event).await;
        }
        create_trigger(&emu, "http://127.0.0.1:9/unused", "resource_tags_changed").await;
        let client = emu.upload_client();
        let first = client
            .upload(Some("n/a"), b"ONE\n", "upload", true)
            .await
            .unwrap();
        let second = client
            .clone()
            .notification_url(Some(per_call.url.clone()))
            .upload(Some("n/a"), b"TWO\n", "upload", true)
            .await
            .unwrap();
        client.rename("n/a", "n/b", "upload", false).await.unwrap();
        client.destroy("n/b", "upload").await.unwrap();
        assert!(emu.wait_notifications_idle(Duration::from_secs(10)).await);

        let secret = emu.config().api_secret;
        let got = hooks.received();
        assert_eq!(got.len(), 4);
        assert_eq!(
            per_call.received().len(),
            1,
            "the call's notification_url, once"
        );
        for r in got.iter().chain(&per_call.received()) {
            assert_eq!(r.signature, expected_signature(r, &secret, false));
            assert_eq!(r.signature.len(), 40);
            assert_eq!(r.content_type, "application/json");
            let sent: u64 = r.timestamp.parse().unwrap();
            assert!(sent.abs_diff(unix_now()) < 60);
        }
        let mut got: Vec<Value> = got.iter().map(Received::json).collect();
        got.sort_by_key(|n| {
            let order = ["upload", "rename", "delete"];
            let kind = n["notification_type"].as_str().unwrap();
            (order.iter().position(|o| *o == kind), n["version"].as_u64())
        });
        let (up1, up2, renamed, deleted) = (&got[0], &got[1], &got[2], &got[3]);
        for key in [
            "asset_id",
            "public_id",
            "version",
            "version_id",
            "etag",
            "url",
            "secure_url",
            "tags",
            "bytes",
            "type",
            "format",
            "width",
            "height",
            "created_at",
            "original_filename",
            "placeholder",
            "resource_type",
        ] {
            assert_eq!(up1[key], first[key], "{key}");
        }
        assert!(up1["timestamp"].is_string() && up1["request_id"].is_string());
        assert!(up1.get("overwritten").is_none());
        assert_eq!(up2["overwritten"], true);
        assert_eq!(up2["version"], second["version"]);
        assert_eq!(
            (
                &renamed["from_public_id"],
                &renamed["to_public_id"],
                &renamed["asset_id"],
                &renamed["type"]
            ),
            (
                &json!("n/a"),
                &json!("n/b"),
                &first["asset_id"],
                &json!("upload")
            )
        );
        assert_eq!(renamed["version"], second["version"], "carried by default");
        assert_eq!(
            deleted["resources"],
            json!([{"resource_type": "image", "type": "upload", "public_id": "n/b", "asset_id": first["asset_id"], "version": second["version"]}])
        );
        let stats = emu.stats();
        assert_eq!(
            (
                stats.notifications_sent,
                stats.notifications_delivered,
                stats.notifications_failed
            ),
            (5, 5, 0)
        );
        let sent = emu.notifications();
        assert_eq!(sent.len(), 5);
        assert!(
            sent.iter()
                .all(|n| n.delivered() && n.attempt == 1 && n.copy == 1)
        );
        let bodies: std::collections::HashSet<&str> =
            sent.iter().map(|n| n.body.as_str()).collect();
        for r in hooks.received() {
            assert!(
                bodies.contains(std::str::from_utf8(&r.body).unwrap()),
                "recorded as sent"
            );
        }
        assert_eq!(
            sent[0].signature,
            notification_signature(sent[0].body.as_bytes(), sent[0].timestamp, &secret, false)
        );
    }

    #[tokio::test]
    async fn a_sha256_account_signs_notifications_in_sha256_and_the_knob_overrides_the_account() {
        for (require_sha256, knob, sha256) in [
            (true, None, true),
            (false, Some(true), true),
            (true, Some(false), false),
        ] {
            let emu = emulator(Vec::new(), |c| {
                c.require_sha256 = require_sha256;
                c.notification_sha256 = knob;
            })
            .await;
            let hooks = Receiver::start(&[]).await;
            let client = emu
                .upload_client()
                .sha256(true)
                .notification_url(Some(hooks.url.clone()));
            client
                .upload(Some("x"), b"X", "upload", true)
                .await
                .unwrap();
            assert!(emu.wait_notifications_idle(Duration::from_secs(10)).await);
            let got = hooks.received();
            assert_eq!(got.len(), 1);
            let secret = emu.config().api_secret;
            assert_eq!(
                got[0].signature,
                expected_signature(&got[0], &secret, sha256),
                "{knob:?}"
            );
            assert_eq!(got[0].signature.len(), if sha256 { 64 } else { 40 });
        }
    }

    #[tokio::test]
    async fn rename_notifications_carry_the_version_only_when_configured() {
        for carries in [true, false] {
            let emu = emulator(Vec::new(), |c| c.rename_carries_version = carries).await;
            let hooks = Receiver::start(&[]).await;
            create_trigger(&emu, &hooks.url, "rename").await;
            create_trigger(&emu, &hooks.url, "all").await;
            let client = emu.upload_client();
            client
                .upload(Some("from"), b"F", "upload", true)
                .await
                .unwrap();
            let renamed = client.rename("from", "to", "upload", false).await.unwrap();
            assert!(emu.wait_notifications_idle(Duration::from_secs(10)).await);
            let got: Vec<Value> = hooks.received().iter().map(Received::json).collect();
            assert_eq!(
                got.len(),
                2,
                "one upload (all) and one rename (once per URL)"
            );
            let rename = got
                .iter()
                .find(|n| n["notification_type"] == "rename")
                .unwrap();
            assert_eq!(rename.get("version").is_some(), carries);
            if carries {
                assert_eq!(rename["version"], renamed["version"]);
            }
        }
    }

    #[tokio::test]
    async fn lost_notifications_are_never_sent() {
        let emu = emulator(Vec::new(), |c| c.notification_faults.lost_rate = 1.0).await;
        let hooks = Receiver::start(&[]).await;
        create_trigger(&emu, &hooks.url, "upload").await;
        let client = emu.upload_client();
        for id in ["a", "b", "c"] {
            client.upload(Some(id), b"T", "upload", true).await.unwrap();
        }
        assert!(emu.wait_notifications_idle(Duration::from_secs(10)).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(hooks.received().is_empty());
        let stats = emu.stats();
        assert_eq!((stats.notifications_lost, stats.notifications_sent), (3, 0));
        let lost = emu.notifications();
        assert_eq!(lost.len(), 3);
        assert!(
            lost.iter()
                .all(|n| n.outcome == DeliveryOutcome::Lost && n.attempt == 0)
        );
        assert_eq!(
            lost[0].json()["public_id"],
            "a",
            "what would have been sent"
        );
    }

    #[tokio::test]
    async fn duplicated_notifications_arrive_twice_with_the_same_body() {
        let emu = emulator(Vec::new(), |c| c.notification_faults.duplicate_rate = 1.0).await;
        let hooks = Receiver::start(&[]).await;
        create_trigger(&emu, &hooks.url, "upload").await;
        emu.upload_client()
            .upload(Some("twice"), b"T", "upload", true)
            .await
            .unwrap();
        assert!(emu.wait_notifications_idle(Duration::from_secs(10)).await);
        let got = hooks.received();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].body, got[1].body);
        let secret = emu.config().api_secret;
        assert!(
            got.iter()
                .all(|r| r.signature == expected_signature(r, &secret, false))
        );
        let stats = emu.stats();
        assert_eq!(
            (
                stats.notifications_duplicated,
                stats.notifications_sent,
                stats.notifications_delivered
            ),
            (1, 2, 2)
        );
        let mut copies: Vec<u32> = emu.notifications().iter().map(|n| n.copy).collect();
        copies.sort();
        assert_eq!(copies, [1, 2]);
    }

    #[tokio::test]
    async fn failed_deliveries_are_retried_until_answered_or_the_retries_are_spent() {
        let emu = emulator(Vec::new(), |c| quick(&mut c.notification_faults)).await;
        let flaky = Receiver::start(&[500, 503]).await;
        let down = Receiver::start(&[500; 10]).await;
        let client = emu.upload_client();
        client
            .clone()
            .notification_url(Some(flaky.url.clone()))
            .upload(Some("flaky"), b"F", "upload", true)
            .await
            .unwrap();
        assert!(emu.wait_notifications_idle(Duration::from_secs(10)).await);
        assert_eq!(flaky.received().len(), 3);
        let attempts: Vec<(u32, DeliveryOutcome)> = emu
            .notifications()
            .into_iter()
            .map(|n| (n.attempt, n.outcome))
            .collect();
        assert_eq!(
            attempts,
            [
                (1, DeliveryOutcome::Answered(500)),
                (2, DeliveryOutcome::Answered(503)),
                (3, DeliveryOutcome::Answered(200)),
            ]
        );
        let gaps: Vec<Duration> = flaky
            .received()
            .windows(2)
            .map(|w| w[1].at - w[0].at)
            .collect();
        assert!(
            gaps.iter().all(|g| *g >= Duration::from_millis(20)),
            "{gaps:?}"
        );

        client
            .clone()
            .notification_url(Some(down.url.clone()))
            .upload(Some("down"), b"D", "upload", true)
            .await
            .unwrap();
        let closed = "http://127.0.0.1:9/closed".to_string();
        client
            .clone()
            .notification_url(Some(closed))
            .upload(Some("closed"), b"C", "upload", true)
            .await
            .unwrap();
        assert!(emu.wait_notifications_idle(Duration::from_secs(10)).await);
        assert_eq!(
            down.received().len(),
            4,
            "the first request and three retries"
        );
        let refused = emu
            .notifications()
            .into_iter()
            .filter(|n| n.url.ends_with("/closed"));
        assert!(
            refused
                .clone()
                .all(|n| matches!(n.outcome, DeliveryOutcome::Failed(_)))
        );
        assert_eq!(refused.count(), 4);
        let stats = emu.stats();
        assert_eq!(
            (
                stats.notifications_sent,
                stats.notifications_delivered,
                stats.notifications_failed,
                stats.notifications_retried
            ),
            (11, 1, 10, 8)
        );
    }

    #[tokio::test]
    async fn lost_answers_fail_and_are_retried_so_the_receiver_gets_the_notification_again() {
        let emu = emulator(Vec::new(), |c| {
            quick(&mut c.notification_faults);
            c.notification_faults.answer_lost_rate = 1.0;
            c.notification_faults.max_retries = 2;
        })
        .await;
        let hooks = Receiver::start(&[]).await;
        let client = emu
            .upload_client()
            .notification_url(Some(hooks.url.clone()));
        client
            .upload(Some("again"), b"A", "upload", true)
            .await
            .unwrap();
        assert!(emu.wait_notifications_idle(Duration::from_secs(10)).await);
        assert_eq!(hooks.received().len(), 3);
        let stats = emu.stats();
        assert_eq!(
            (
                stats.notifications_delivered,
                stats.notifications_failed,
                stats.notifications_answers_lost,
                stats.notifications_retried
            ),
            (0, 3, 3, 2)
        );
        assert!(
            emu.notifications()
                .iter()
                .all(|n| n.outcome == DeliveryOutcome::AnswerLost(200))
        );
    }

    #[tokio::test]
    async fn delays_hold_deliveries_back_and_reorder_them() {
        let emu = emulator(Vec::new(), |c| {
            c.notification_faults.delay_max = Duration::from_millis(400)
        })
        .await;
        let hooks = Receiver::start(&[]).await;
        create_trigger(&emu, &hooks.url, "upload").await;
        let client = emu.upload_client();
        let start = std::time::Instant::now();
        let ids: Vec<String> = (0..12).map(|i| format!("d{i:02}")).collect();
        for id in &ids {
            client.upload(Some(id), b"D", "upload", true).await.unwrap();
        }
        assert!(emu.notifications_pending() > 0);
        assert!(!emu.wait_notifications_idle(Duration::from_millis(1)).await);
        assert!(emu.wait_notifications_idle(Duration::from_secs(10)).await);
        let got = hooks.received();
        assert_eq!(got.len(), 12);
        let arrived: Vec<String> = got
            .iter()
            .map(|r| r.json()["public_id"].as_str().unwrap().to_string())
            .collect();
        assert_ne!(arrived, ids, "delays reorder deliveries");
        let latest = got.iter().map(|r| r.at - start).max().unwrap();
        assert!(latest >= Duration::from_millis(100), "{latest:?}");
        assert_eq!(emu.stats().notifications_delivered, 12);
    }
}
