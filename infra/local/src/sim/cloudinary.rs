//! Cloudinary in virtual time: the Admin API's hourly quota (windows aligned to the hour,
//! shared by the lister's listing, `update` OCR requests and every read-back), the Upload API
//! without that quota, an OCR latency distribution, and faults drawn from a seeded generator:
//! HTTP 5xx (not billed), timeouts after the OCR was billed, the Upload API's 429 with
//! `Retry-After`, and pending answers read back later. As Cloudinary does, it bills an OCR
//! request that reached it, whatever the caller then saw.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shared::clock::{Clock, epoch_ms, from_epoch_ms};
use shared::error::{ErrorClass, RemoteError};
use shared::lister::{AssetPage, AssetSource, ListedAsset, Listing};
use shared::message::WorkMessage;
use shared::ocr::{AssetFields, OcrOutcome, OcrResult};
use shared::rate_gate::Quota;
use shared::worker::{Api, BulkAnswer, OcrAnswer, OcrService};

/// How Cloudinary behaves in a run.
#[derive(Debug, Clone)]
pub struct CloudinarySettings {
    pub assets: u64,
    /// OCR requests go to the Upload API (`explicit`) or the Admin API (`update`).
    pub upload_api: bool,
    /// The Admin API's calls per hour.
    pub quota_per_hour: u64,
    /// Median OCR answer time; answers are log-normal around it.
    pub ocr_median: Duration,
    /// The log-normal's sigma (0.5: one answer in a hundred takes over 3.2 times the median).
    pub ocr_sigma: f64,
    /// Listing calls and read-backs take this long.
    pub admin_latency: Duration,
    /// How long the client waits before it gives up (a timeout after billing takes this).
    pub client_timeout: Duration,
    pub faults: FaultMix,
    /// Assets without text in them, one in this many.
    pub no_text_every: u64,
    pub seed: u64,
    /// Several assets read back in one Admin call (`resources` by `public_ids`): `None` not
    /// at all; `Some(true)` with their OCR in the answer; `Some(false)` without it.
    pub bulk: Option<bool>,
}

/// Shares of OCR requests that meet each fault.
#[derive(Debug, Clone, Copy)]
pub struct FaultMix {
    /// HTTP 500: the OCR did not run (not billed).
    pub server_error: f64,
    /// The OCR ran and was billed, then the connection timed out.
    pub timeout_after_billing: f64,
    /// The Upload API's HTTP 429 with `Retry-After` (not billed).
    pub too_many_requests: f64,
    /// Answered `pending`: the text is read back later.
    pub pending: f64,
}

impl FaultMix {
    pub const NONE: Self = Self {
        server_error: 0.0,
        timeout_after_billing: 0.0,
        too_many_requests: 0.0,
        pending: 0.0,
    };
    /// A service in good health: one 5xx in a thousand requests, one timeout after billing in
    /// five thousand, one 429 in two hundred, one pending answer in a thousand.
    pub const TYPICAL: Self = Self {
        server_error: 0.001,
        timeout_after_billing: 0.0002,
        too_many_requests: 0.005,
        pending: 0.001,
    };
    /// A bad day, as `make chaos` injects it: ten times the 5xx, timeouts and pending answers.
    pub const HEAVY: Self = Self {
        server_error: 0.01,
        timeout_after_billing: 0.002,
        too_many_requests: 0.005,
        pending: 0.02,
    };

    /// The same mix without the behaviours Cloudinary does not document (pending OCR answers:
    /// the add-on's documentation and the SDKs' tests show the OCR data in the answer itself).
    pub fn documented_only(self) -> Self {
        Self {
            pending: 0.0,
            ..self
        }
    }

    /// Whether the mix has behaviours Cloudinary does not document.
    pub fn has_undocumented(&self) -> bool {
        self.pending > 0.0
    }

    /// A share as a percentage, rounded to a thousandth of a percent (0.0002 reads 0.02).
    pub fn percent(share: f64) -> f64 {
        (share * 100_000.0).round() / 1000.0
    }

    /// The shares as percentages: 5xx / timeouts after billing / 429 / pending.
    pub fn describe(&self) -> String {
        let pct = Self::percent;
        format!(
            "{} / {} / {} / {} %",
            pct(self.server_error),
            pct(self.timeout_after_billing),
            pct(self.too_many_requests),
            pct(self.pending)
        )
    }
}

/// What Cloudinary counted over a run.
#[derive(Debug, Clone, Default)]
pub struct CloudinaryStats {
    pub ocr_requests: u64,
    pub billed: u64,
    /// Assets billed at least once, more than once, and the most any one was billed.
    pub billed_assets: u64,
    pub billed_twice: u64,
    pub max_billed: u8,
    pub read_backs: u64,
    /// Admin calls that read several assets back at once, and the assets they named.
    pub bulk_read_backs: u64,
    pub bulk_assets: u64,
    pub listing_calls: u64,
    pub refused_420: u64,
    pub refused_429: u64,
    pub server_errors: u64,
    pub timeouts_after_billing: u64,
    pub pending_answers: u64,
    /// Admin API calls accepted per hour since the start: (listing, worker).
    pub admin_per_hour: BTreeMap<u64, (u64, u64)>,
}

#[derive(Debug)]
struct State {
    rng: StdRng,
    /// OCRs billed per asset (by index).
    billed: Vec<u8>,
    /// Assets whose OCR was answered pending: when it completes.
    pending_until: HashMap<u64, SystemTime>,
    window: (u64, u64),
    stats: CloudinaryStats,
}

/// The simulated account, shared by the lister and every worker instance.
#[derive(Debug, Clone)]
pub struct SimCloudinary {
    state: Arc<Mutex<State>>,
    settings: Arc<CloudinarySettings>,
    clock: Clock,
    start_hour: u64,
}

/// The public_id of the `i`-th asset.
pub fn public_id(i: u64) -> String {
    format!("sim/{i:09}")
}

pub(super) fn index_of(public_id: &str) -> Option<u64> {
    public_id.strip_prefix("sim/")?.parse().ok()
}

/// Which caller spends an Admin API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Lister,
    Worker,
}

impl SimCloudinary {
    pub fn new(settings: CloudinarySettings, clock: Clock) -> Self {
        let start_hour = epoch_ms(clock.now()) / 3_600_000;
        Self {
            state: Arc::new(Mutex::new(State {
                rng: StdRng::seed_from_u64(settings.seed),
                billed: vec![0; settings.assets as usize],
                pending_until: HashMap::new(),
                window: (start_hour, 0),
                stats: CloudinaryStats::default(),
            })),
            settings: Arc::new(settings),
            clock,
            start_hour,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> CloudinaryStats {
        let s = self.lock();
        let mut stats = s.stats.clone();
        stats.billed_assets = s.billed.iter().filter(|b| **b > 0).count() as u64;
        stats.billed_twice = s.billed.iter().filter(|b| **b > 1).count() as u64;
        stats.max_billed = s.billed.iter().copied().max().unwrap_or(0);
        stats
    }

    /// Spends one Admin API call: the quota to report, or HTTP 420 until the next hour.
    fn spend_admin(&self, s: &mut State, caller: Caller) -> Result<Quota, RemoteError> {
        let hour = epoch_ms(self.clock.now()) / 3_600_000;
        let reset = from_epoch_ms((hour + 1) * 3_600_000);
        if s.window.0 != hour {
            s.window = (hour, 0);
        }
        let limit = self.settings.quota_per_hour;
        if s.window.1 >= limit {
            s.stats.refused_420 += 1;
            let mut e = RemoteError::new(
                ErrorClass::RateLimited,
                "cloudinary answered HTTP 420: Rate Limit Exceeded",
            );
            e.retry_at = Some(reset);
            return Err(e);
        }
        s.window.1 += 1;
        let used = s
            .stats
            .admin_per_hour
            .entry(hour - self.start_hour)
            .or_default();
        match caller {
            Caller::Lister => used.0 += 1,
            Caller::Worker => used.1 += 1,
        }
        Ok(Quota {
            limit,
            remaining: limit - s.window.1,
            reset: Some(reset),
        })
    }

    fn ocr_latency(&self, s: &mut State) -> Duration {
        // Log-normal: the median times e^(sigma * a standard normal), by Box-Muller.
        let (u1, u2): (f64, f64) = (s.rng.random::<f64>().max(f64::MIN_POSITIVE), s.rng.random());
        let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let latency =
            self.settings.ocr_median.as_secs_f64() * (self.settings.ocr_sigma * normal).exp();
        Duration::from_secs_f64(latency.min(self.settings.client_timeout.as_secs_f64()))
    }

    fn outcome(&self, index: u64) -> OcrOutcome {
        if self.settings.no_text_every > 0 && index.is_multiple_of(self.settings.no_text_every) {
            OcrOutcome::NoText
        } else {
            OcrOutcome::Text {
                text: format!("text of {}", public_id(index)),
                locale: Some("en".into()),
            }
        }
    }

    fn answer(
        &self,
        outcome: OcrOutcome,
        message: &WorkMessage,
        quota: Option<Quota>,
        latency: Duration,
    ) -> OcrAnswer {
        let pages = u32::from(matches!(
            outcome,
            OcrOutcome::Text { .. } | OcrOutcome::NoText
        ));
        OcrAnswer {
            result: OcrResult {
                outcome,
                asset: AssetFields {
                    format: Some("png".into()),
                    version: message.version,
                    ..AssetFields::default()
                },
                pages,
            },
            quota,
            latency,
        }
    }
}

fn unknown(message: &WorkMessage) -> RemoteError {
    RemoteError::new(
        ErrorClass::Permanent,
        format!(
            "cloudinary answered HTTP 404 for {:?}: Resource not found",
            message.public_id
        ),
    )
}

impl OcrService for SimCloudinary {
    fn request_api(&self) -> Api {
        if self.settings.upload_api {
            Api::Upload
        } else {
            Api::Admin
        }
    }

    async fn request_ocr(&self, message: &WorkMessage) -> Result<OcrAnswer, RemoteError> {
        let Some(index) = index_of(&message.public_id).filter(|i| *i < self.settings.assets) else {
            return Err(unknown(message));
        };
        let f = self.settings.faults;
        let admin = {
            let mut s = self.lock();
            s.stats.ocr_requests += 1;
            (!self.settings.upload_api).then(|| self.spend_admin(&mut s, Caller::Worker))
        };
        let quota = match admin {
            None => None,
            Some(Ok(quota)) => Some(quota),
            Some(Err(refused)) => {
                tokio::time::sleep(self.settings.admin_latency).await;
                return Err(refused);
            }
        };
        let (latency, roll) = {
            let mut s = self.lock();
            let latency = self.ocr_latency(&mut s);
            (latency, s.rng.random::<f64>())
        };
        // The roll falls in one band: 500, 429 (the Upload API's only), timeout, pending, or
        // a plain answer.
        let too_many = if self.settings.upload_api {
            f.too_many_requests
        } else {
            0.0
        };
        if roll < f.server_error {
            tokio::time::sleep(latency).await;
            self.lock().stats.server_errors += 1;
            return Err(RemoteError::new(
                ErrorClass::Transient,
                "cloudinary answered HTTP 500: Internal Server Error",
            ));
        }
        let mut edge = f.server_error + too_many;
        if roll < edge {
            tokio::time::sleep(self.settings.admin_latency).await;
            self.lock().stats.refused_429 += 1;
            let mut e = RemoteError::new(
                ErrorClass::RateLimited,
                "cloudinary answered HTTP 429: Too Many Requests",
            );
            e.retry_at = Some(self.clock.now() + Duration::from_secs(10));
            return Err(e);
        }
        // From here the OCR runs, and is billed.
        {
            let mut s = self.lock();
            s.billed[index as usize] = s.billed[index as usize].saturating_add(1);
            s.stats.billed += 1;
        }
        edge += f.timeout_after_billing;
        if roll < edge {
            tokio::time::sleep(self.settings.client_timeout).await;
            self.lock().stats.timeouts_after_billing += 1;
            return Err(RemoteError::new(
                ErrorClass::Transient,
                "cloudinary call timed out after 60s",
            ));
        }
        tokio::time::sleep(latency).await;
        edge += f.pending;
        if roll < edge {
            let mut s = self.lock();
            s.stats.pending_answers += 1;
            let done_at = self.clock.now() + latency * 20;
            s.pending_until.insert(index, done_at);
            return Ok(self.answer(OcrOutcome::Pending, message, quota, latency));
        }
        self.lock().pending_until.remove(&index);
        Ok(self.answer(self.outcome(index), message, quota, latency))
    }

    async fn fetch_result(&self, message: &WorkMessage) -> Result<OcrAnswer, RemoteError> {
        let Some(index) = index_of(&message.public_id).filter(|i| *i < self.settings.assets) else {
            return Err(unknown(message));
        };
        tokio::time::sleep(self.settings.admin_latency).await;
        let mut s = self.lock();
        let quota = self.spend_admin(&mut s, Caller::Worker)?;
        s.stats.read_backs += 1;
        let outcome = if s.billed[index as usize] == 0 {
            OcrOutcome::NotRequested
        } else if s
            .pending_until
            .get(&index)
            .is_some_and(|until| *until > self.clock.now())
        {
            OcrOutcome::Pending
        } else {
            self.outcome(index)
        };
        Ok(self.answer(outcome, message, Some(quota), self.settings.admin_latency))
    }

    async fn fetch_results(
        &self,
        messages: &[&WorkMessage],
    ) -> Option<Result<BulkAnswer, RemoteError>> {
        let carries_ocr = self.settings.bulk?;
        tokio::time::sleep(self.settings.admin_latency).await;
        let mut s = self.lock();
        let quota = match self.spend_admin(&mut s, Caller::Worker) {
            Ok(quota) => quota,
            Err(refused) => return Some(Err(refused)),
        };
        s.stats.bulk_read_backs += 1;
        s.stats.bulk_assets += messages.len() as u64;
        let now = self.clock.now();
        let results = messages
            .iter()
            .map(|message| {
                let index = index_of(&message.public_id).filter(|i| *i < self.settings.assets)?;
                let outcome = if !carries_ocr || s.billed[index as usize] == 0 {
                    OcrOutcome::NotRequested
                } else if s
                    .pending_until
                    .get(&index)
                    .is_some_and(|until| *until > now)
                {
                    OcrOutcome::Pending
                } else {
                    self.outcome(index)
                };
                Some(
                    self.answer(outcome, message, Some(quota), self.settings.admin_latency)
                        .result,
                )
            })
            .collect();
        Some(Ok(BulkAnswer {
            results,
            quota: Some(quota),
            latency: self.settings.admin_latency,
        }))
    }
}

impl AssetSource for SimCloudinary {
    async fn page(
        &self,
        listing: &Listing,
        cursor: Option<&str>,
        page_size: u32,
    ) -> Result<AssetPage, RemoteError> {
        tokio::time::sleep(self.settings.admin_latency).await;
        let quota = {
            let mut s = self.lock();
            let quota = self.spend_admin(&mut s, Caller::Lister)?;
            s.stats.listing_calls += 1;
            quota
        };
        // Every asset is an `upload` image created before the run: an incremental pass (by
        // creation time) finds none.
        let n = match listing {
            Listing::Type {
                delivery_type,
                prefix,
            } if delivery_type == "upload" && prefix.is_empty() => self.settings.assets,
            _ => 0,
        };
        let offset: u64 = match cursor {
            None => 0,
            Some(c) => c.parse().map_err(|_| {
                RemoteError::new(ErrorClass::Permanent, format!("invalid cursor {c:?}"))
            })?,
        };
        let end = (offset + u64::from(page_size)).min(n);
        let assets = (offset..end)
            .map(|i| ListedAsset {
                public_id: public_id(i),
                resource_type: "image".into(),
                delivery_type: "upload".into(),
                created_at: Some("2025-01-01T00:00:00Z".into()),
                version: Some(1),
                format: Some("png".into()),
                tags: None,
            })
            .collect();
        Ok(AssetPage {
            assets,
            next_cursor: (end < n).then(|| end.to_string()),
            quota: Some(quota),
        })
    }
}
