//! A local Cloudinary: the slice of the Admin and Upload APIs the pipeline calls, with Basic
//! auth, signed `explicit`, the `X-FeatureRateLimit-*` headers and HTTP 420 past a configurable
//! limit, the delivery types `upload`, `private` and `authenticated` (an asset is its type and
//! public_id), tags and folders, listings by type, public_id prefix and tag, Search expressions
//! (see `search.rs`), `usage` with the OCR add-on's monthly limit, knobs for latency and
//! injected faults, and per-asset call counters for tests.
//!
//! The Upload API's `upload`, `rename` and `destroy` change the account, and each change is
//! announced by a signed notification to the Admin API's triggers and the call's
//! `notification_url` (see `notify.rs`), with injectable delivery faults. [`UploadClient`] signs
//! those calls as Cloudinary's SDKs do.
//!
//! Start it in-process with [`Emulator::start`] or as the `cloudinary-emulator` binary.

mod client;
pub mod corpus;
mod notify;
mod search;
mod server;
#[cfg(test)]
mod testing;
mod upload;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use client::{UploadClient, UploadError};
pub use corpus::{Asset, generate, generate_uploads, generated_tags, load_corpus};
pub use notify::{
    DeliveryOutcome, EVENT_TYPES, NotificationFaults, SentNotification, Trigger,
    notification_signature,
};

/// An asset's identity in the account: `(delivery type, public_id)`.
pub type AssetId = (String, String);

/// The identity of the `upload` asset `public_id`.
pub fn upload(public_id: &str) -> AssetId {
    ("upload".into(), public_id.into())
}

/// Behaviour of the emulator; can be changed while it runs through [`Emulator::configure`].
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub cloud_name: String,
    pub api_key: String,
    pub api_secret: String,
    /// Added to every API answer.
    pub latency: Duration,
    /// Share of OCR calls answered HTTP 500.
    pub error_rate: f64,
    /// Share of OCR calls that run (and bill) the OCR, then take `hang` to answer: longer
    /// than the client waits, so the client times out on an OCR it has paid for.
    pub timeout_rate: f64,
    pub hang: Duration,
    /// Share of OCR calls that run (and bill) the OCR, then drop the connection before the
    /// answer's body.
    pub drop_rate: f64,
    /// Share of OCR calls answered `pending`; the result is complete on the next read.
    pub pending_rate: f64,
    /// The OCR calls on these public_ids (of any delivery type) are answered `pending`.
    pub pending: HashSet<String>,
    /// Admin API calls allowed per window (the hourly quota, scaled as wanted).
    pub admin_limit: u64,
    pub admin_window: Duration,
    /// OCR calls on these public_ids (of any delivery type) always answer this HTTP status.
    pub forced_status: HashMap<String, u16>,
    /// The OCR of these public_ids (of any delivery type) runs (and is billed) but fails, with
    /// Cloudinary's message.
    pub ocr_fails: HashSet<String>,
    /// Whether a lookup of several resources by `public_ids[]` answers their `info` (their
    /// OCR) as a lookup of one does: Cloudinary does not document it either way.
    pub info_by_ids: bool,
    /// The account setting that refuses SHA-1 signatures (SHA-256 only).
    pub require_sha256: bool,
    /// Upload API calls (`explicit`) allowed per window; past it, HTTP 429 with `Retry-After`.
    pub upload_limit: u64,
    /// How long after an upload an asset appears in Search results (Cloudinary updates its
    /// Search index asynchronously).
    pub index_lag: Duration,
    /// The OCR add-on's monthly limit is reached: every OCR request answers HTTP 420 with
    /// Cloudinary's message (nothing billed). Through `explicit` the refusal names its reset a
    /// month away; through the Admin API it carries the hourly quota's headers, as every Admin
    /// API answer does, with calls left.
    pub monthly_limit_reached: bool,
    /// The OCR add-on's monthly limit: once this many OCRs are billed, every further OCR
    /// request is refused as with `monthly_limit_reached`. `GET usage` reports it as the
    /// add-on's `limit`.
    pub ocr_limit: u64,
    pub seed: u64,
    /// Notifications are signed in SHA-256 when `Some(true)`, in SHA-1 when `Some(false)`;
    /// `None` follows `require_sha256` (the account's signature algorithm).
    pub notification_sha256: Option<bool>,
    /// Faults injected into the delivery of notifications (none by default).
    pub notification_faults: NotificationFaults,
    /// How long a notification's receiver has to answer before the attempt fails.
    pub notification_timeout: Duration,
    /// Whether `rename` gives the renamed asset a new version (Cloudinary does not document
    /// it; by default the version is kept).
    pub rename_bumps_version: bool,
    /// Whether a `rename` notification carries the asset's `version` (Cloudinary does not
    /// document it; by default it does).
    pub rename_carries_version: bool,
}

impl EmulatorConfig {
    /// A configuration with fresh random credentials (no credentials are fixed anywhere).
    pub fn new(cloud_name: impl Into<String>) -> Self {
        use rand::Rng;
        let mut rng = rand::rng();
        let hex = |rng: &mut rand::rngs::ThreadRng, n: usize| -> String {
            (0..n)
                .map(|_| format!("{:x}", rng.random_range(0..16u8)))
                .collect()
        };
        Self {
            cloud_name: cloud_name.into(),
            api_key: (0..15)
                .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                .collect(),
            api_secret: hex(&mut rng, 27),
            latency: Duration::ZERO,
            error_rate: 0.0,
            timeout_rate: 0.0,
            hang: Duration::from_secs(30),
            drop_rate: 0.0,
            pending_rate: 0.0,
            pending: HashSet::new(),
            admin_limit: 100_000,
            admin_window: Duration::from_secs(3600),
            forced_status: HashMap::new(),
            ocr_fails: HashSet::new(),
            info_by_ids: true,
            require_sha256: false,
            upload_limit: u64::MAX,
            monthly_limit_reached: false,
            ocr_limit: 1_000_000,
            index_lag: Duration::ZERO,
            seed: 7,
            notification_sha256: None,
            notification_faults: NotificationFaults::default(),
            notification_timeout: Duration::from_secs(10),
            rename_bumps_version: false,
            rename_carries_version: true,
        }
    }

    /// Whether notifications are signed in SHA-256 (else SHA-1).
    pub fn signs_notifications_in_sha256(&self) -> bool {
        self.notification_sha256.unwrap_or(self.require_sha256)
    }
}

/// What the emulator has been asked, for assertions and summaries.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub admin_calls: u64,
    pub explicit_calls: u64,
    /// Admin API listings: of a delivery type (by prefix or whole) and by tag.
    pub list_calls: u64,
    /// The listings by tag among `list_calls`.
    #[serde(default)]
    pub tag_list_calls: u64,
    pub search_calls: u64,
    pub details_calls: u64,
    /// Lookups of several resources by `public_ids[]`.
    #[serde(default)]
    pub by_ids_calls: u64,
    /// `GET usage` calls.
    #[serde(default)]
    pub usage_calls: u64,
    pub rate_limited: u64,
    pub unauthorized: u64,
    pub injected_errors: u64,
    /// OCR requests received (any answer).
    pub ocr_requests: u64,
    /// OCR runs performed (the ones Cloudinary would bill).
    pub ocr_billed: u64,
    pub peak_admin_in_window: u64,
    /// The Admin quota windows that have ended, oldest first.
    pub windows: Vec<WindowUse>,
    /// Upload API `upload` calls (any answer).
    #[serde(default)]
    pub upload_calls: u64,
    /// Upload API `rename` calls (any answer).
    #[serde(default)]
    pub rename_calls: u64,
    /// Upload API `destroy` calls (any answer).
    #[serde(default)]
    pub destroy_calls: u64,
    /// Admin API trigger calls (create, list, update, delete; any answer).
    #[serde(default)]
    pub trigger_calls: u64,
    /// Notification requests sent (first attempts, retries and duplicates alike): each is then
    /// delivered or failed.
    #[serde(default)]
    pub notifications_sent: u64,
    /// Requests answered 2xx and taken as delivered.
    #[serde(default)]
    pub notifications_delivered: u64,
    /// Requests answered non-2xx, not answered (connection error, timeout), or whose 2xx
    /// answer was lost.
    #[serde(default)]
    pub notifications_failed: u64,
    /// Requests whose 2xx answer was lost (among `notifications_failed`).
    #[serde(default)]
    pub notifications_answers_lost: u64,
    /// Deliveries never sent (one per notification and URL).
    #[serde(default)]
    pub notifications_lost: u64,
    /// Deliveries sent twice (each copy with its own delay and retries).
    #[serde(default)]
    pub notifications_duplicated: u64,
    /// Retries sent after a failed request (among `notifications_sent`).
    #[serde(default)]
    pub notifications_retried: u64,
}

/// One ended quota window: when it opened (milliseconds since the UNIX epoch) and how many
/// Admin API calls it accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowUse {
    pub opened_ms: u64,
    pub used: u64,
}

/// The current quota window. Windows are aligned to the clock, as Cloudinary's hourly ones are
/// to the hour, so every reset falls on a whole second and its HTTP date is exact.
#[derive(Debug, Default)]
pub(crate) struct Window {
    /// Milliseconds since the UNIX epoch at which it opened.
    pub opened_ms: u64,
    pub used: u64,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub assets: Vec<Asset>,
    pub index: HashMap<AssetId, usize>,
    /// When assets uploaded during the run were uploaded (the Search index lags them).
    pub uploaded: HashMap<AssetId, std::time::Instant>,
    pub ocr_done: HashSet<AssetId>,
    pub ocr_requests: HashMap<AssetId, u64>,
    pub ocr_billed: HashMap<AssetId, u64>,
    pub stats: Stats,
    pub window: Window,
    /// The Upload API's window (its own limit).
    pub upload_window: Window,
    /// `asset_id`s that are not derived from the asset's identity: uploaded during the run
    /// (random) or renamed (kept from the old identity).
    pub asset_ids: HashMap<AssetId, String>,
    /// The highest version offset (see [`Asset::version`]) handed out per identity, so that a
    /// public_id's versions increase even across destroy and upload.
    pub versions: HashMap<AssetId, u64>,
    pub triggers: Vec<Trigger>,
    /// Every notification request (and every lost delivery), in the order they ended.
    pub notifications: Vec<SentNotification>,
    /// Deliveries still to end (waiting, sending or retrying).
    pub notifications_pending: u64,
}

/// Shared state of a running emulator.
#[derive(Debug)]
pub struct State {
    pub(crate) config: RwLock<EmulatorConfig>,
    pub(crate) inner: Mutex<Inner>,
    pub(crate) rng: Mutex<rand::rngs::StdRng>,
    /// The notification faults' draws (their own sequence, so the OCR faults' stay as seeded).
    pub(crate) notify_rng: Mutex<rand::rngs::StdRng>,
    /// Set when the emulator stops: pending deliveries are abandoned.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    pub(crate) http: reqwest::Client,
}

impl State {
    pub(crate) fn new(config: EmulatorConfig, assets: Vec<Asset>) -> Self {
        use rand::SeedableRng;
        let index = assets
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id(), i))
            .collect();
        State {
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(config.seed)),
            notify_rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(
                config.seed ^ 0x6e6f_7469_6679,
            )),
            stopping: tokio::sync::watch::channel(false).0,
            http: reqwest::Client::new(),
            config: RwLock::new(config),
            inner: Mutex::new(Inner {
                assets,
                index,
                ocr_done: HashSet::new(),
                ocr_requests: HashMap::new(),
                ocr_billed: HashMap::new(),
                stats: Stats::default(),
                window: Window::default(),
                upload_window: Window::default(),
                uploaded: HashMap::new(),
                asset_ids: HashMap::new(),
                versions: HashMap::new(),
                triggers: Vec::new(),
                notifications: Vec::new(),
                notifications_pending: 0,
            }),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn config(&self) -> EmulatorConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Inner {
    /// Points `index` at the assets' positions again (after one was removed).
    pub(crate) fn reindex(&mut self) {
        self.index = self
            .assets
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id(), i))
            .collect();
    }
}

/// A running emulator; stops when dropped.
pub struct Emulator {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Emulator {
    /// Serves on `127.0.0.1:port` (0 for a free port) with these assets.
    pub async fn start(
        config: EmulatorConfig,
        assets: Vec<Asset>,
        port: u16,
    ) -> std::io::Result<Self> {
        let state = Arc::new(State::new(config, assets));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let app = server::router(state.clone());
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _closed_or_sent = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "emulator server stopped");
            }
        });
        Ok(Self {
            addr,
            state,
            shutdown: Some(tx),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API base URL to configure clients with (`CLOUDINARY_API_BASE`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `cloudinary://KEY:SECRET@CLOUD` for this emulator's credentials.
    pub fn cloudinary_url(&self) -> String {
        let c = self.state.config();
        format!(
            "cloudinary://{}:{}@{}",
            c.api_key, c.api_secret, c.cloud_name
        )
    }

    pub fn config(&self) -> EmulatorConfig {
        self.state.config()
    }

    /// Changes the behaviour while running (faults, limits, latency).
    pub fn configure(&self, change: impl FnOnce(&mut EmulatorConfig)) {
        change(&mut self.state.config.write().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn stats(&self) -> Stats {
        self.state.lock().stats.clone()
    }

    /// OCR requests received for the `upload` asset `public_id` (whatever the answer).
    pub fn ocr_requests(&self, public_id: &str) -> u64 {
        self.ocr_requests_of(&upload(public_id))
    }

    /// OCR requests received for one asset (whatever the answer).
    pub fn ocr_requests_of(&self, asset: &AssetId) -> u64 {
        self.state
            .lock()
            .ocr_requests
            .get(asset)
            .copied()
            .unwrap_or(0)
    }

    /// OCR runs performed for the `upload` asset `public_id`.
    pub fn ocr_billed(&self, public_id: &str) -> u64 {
        self.ocr_billed_of(&upload(public_id))
    }

    /// OCR runs performed for one asset.
    pub fn ocr_billed_of(&self, asset: &AssetId) -> u64 {
        self.state
            .lock()
            .ocr_billed
            .get(asset)
            .copied()
            .unwrap_or(0)
    }

    /// OCR runs per asset, for every asset that had any.
    pub fn ocr_billed_all(&self) -> HashMap<AssetId, u64> {
        self.state.lock().ocr_billed.clone()
    }

    pub fn assets(&self) -> Vec<Asset> {
        self.state.lock().assets.clone()
    }

    /// Uploads `text`'s image again over the `upload` asset `public_id`, as Cloudinary's
    /// overwrite does: a new version, uploaded now, without the old version's OCR. `false` when
    /// there is no such asset.
    pub fn overwrite(&self, public_id: &str, text: Option<&str>) -> bool {
        let id = upload(public_id);
        let mut inner = self.state.lock();
        let Some(&i) = inner.index.get(&id) else {
            return false;
        };
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .expect("formats");
        let asset = &mut inner.assets[i];
        asset.version += 1;
        asset.text = text.map(str::to_string);
        asset.uploaded_at = Some(now);
        inner.ocr_done.remove(&id);
        inner.uploaded.insert(id, std::time::Instant::now());
        true
    }

    /// Adds an asset (created now) as if uploaded.
    pub fn add_asset(&self, asset: Asset) {
        let mut inner = self.state.lock();
        let i = inner.assets.len();
        inner.index.insert(asset.id(), i);
        inner.uploaded.insert(asset.id(), std::time::Instant::now());
        inner.assets.push(asset);
    }

    /// The notification triggers registered through the Admin API, oldest first.
    pub fn triggers(&self) -> Vec<Trigger> {
        self.state.lock().triggers.clone()
    }

    /// Every notification request sent (retries and duplicates each their own) and every
    /// delivery lost, in the order they ended: what a receiver was sent, to replay or forge.
    pub fn notifications(&self) -> Vec<SentNotification> {
        self.state.lock().notifications.clone()
    }

    /// Deliveries still to end (waiting for their delay, sending or retrying).
    pub fn notifications_pending(&self) -> u64 {
        self.state.lock().notifications_pending
    }

    /// Waits until no delivery is pending; `false` if some still are after `timeout`.
    pub async fn wait_notifications_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.notifications_pending() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A client of this emulator's Upload API with its credentials, signing as the account
    /// requires.
    pub fn upload_client(&self) -> UploadClient {
        let c = self.state.config();
        UploadClient::new(self.base_url(), &c.cloud_name, &c.api_key, &c.api_secret)
            .sha256(c.require_sha256)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.state.stopping.send_replace(true);
        if let Some(tx) = self.shutdown.take() {
            let _receiver_may_be_gone = tx.send(());
        }
    }
}
