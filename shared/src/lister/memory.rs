//! An in-memory twin of the asset source: the account's assets listed in pages, with faults
//! and a reported quota.

use std::sync::Mutex;
use std::time::Duration;

use super::{AssetPage, AssetSource, ListedAsset, Listing};
use crate::error::{ErrorClass, RemoteError};
use crate::fault::FaultPlan;
use crate::rate_gate::Quota;

/// The listing calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListCall {
    /// A page of every asset of a delivery type.
    All,
    /// A page of a search by creation time.
    Search,
}

/// The account's assets in memory, listed in pages; cursors are offsets.
#[derive(Debug, Default)]
pub struct MemoryAssetSource {
    assets: Mutex<Vec<ListedAsset>>,
    faults: FaultPlan<ListCall>,
    quota: Mutex<Option<Quota>>,
    latency: Duration,
    /// The `since` (or the expression) of every search, in order.
    searches: Mutex<Vec<String>>,
    /// `n` assets made up page by page instead of held (for accounts of millions).
    synthetic: Option<usize>,
    /// The Admin API's hourly quota, counted in windows aligned to the clock's hours.
    hourly: Option<HourlyQuota>,
    /// What `usage` reports of the OCR add-on.
    usage: Mutex<Option<super::AddonUsage>>,
}

#[derive(Debug)]
struct HourlyQuota {
    limit: u64,
    clock: crate::clock::Clock,
    window: Mutex<(u64, u64)>,
}

impl MemoryAssetSource {
    pub fn new(assets: Vec<ListedAsset>) -> Self {
        Self {
            assets: Mutex::new(assets),
            ..Self::default()
        }
    }

    /// `n` image assets `asset-00000`, ..., created a second apart from `2024-01-01T00:00:00Z`.
    pub fn generated(n: usize) -> Self {
        let start = crate::clock::parse_rfc3339("2024-01-01T00:00:00Z").expect("a valid time");
        Self::new(
            (0..n)
                .map(|i| ListedAsset {
                    public_id: format!("asset-{i:05}"),
                    resource_type: "image".into(),
                    delivery_type: "upload".into(),
                    created_at: Some(crate::clock::rfc3339(start + Duration::from_secs(i as u64))),
                    version: Some(1),
                    format: Some("png".into()),
                    tags: None,
                })
                .collect(),
        )
    }

    /// An account of `n` assets, each made up when a page names it (nothing is held).
    pub fn synthetic(n: usize) -> Self {
        Self {
            synthetic: Some(n),
            ..Self::default()
        }
    }

    /// Listing calls are limited to `limit` an hour (windows aligned to `clock`'s hours), as
    /// the Admin API's quota: answers report it, and a call past it is refused until the reset.
    pub fn with_hourly_limit(mut self, limit: u64, clock: crate::clock::Clock) -> Self {
        self.hourly = Some(HourlyQuota {
            limit,
            clock,
            window: Mutex::new((0, 0)),
        });
        self
    }

    /// Counts a call against the hourly quota: the quota to report, or the refusal.
    fn spend(&self) -> Result<Option<Quota>, RemoteError> {
        let Some(h) = &self.hourly else {
            return Ok(*self.quota.lock().unwrap_or_else(|e| e.into_inner()));
        };
        let now = crate::clock::epoch_ms(h.clock.now()) / 1000;
        let hour = now / 3600;
        let reset = crate::clock::from_epoch_ms((hour + 1) * 3_600_000);
        let mut window = h.window.lock().unwrap_or_else(|e| e.into_inner());
        if window.0 != hour {
            *window = (hour, 0);
        }
        if window.1 >= h.limit {
            let mut e = RemoteError::new(ErrorClass::RateLimited, "HTTP 420: Rate Limit Exceeded");
            e.retry_at = Some(reset);
            return Err(e);
        }
        window.1 += 1;
        Ok(Some(Quota {
            limit: h.limit,
            remaining: h.limit - window.1,
            reset: Some(reset),
        }))
    }

    /// Every page takes this long (in tokio time).
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// What `usage` reports of the OCR add-on from now on.
    pub fn set_usage(&self, usage: Option<super::AddonUsage>) {
        *self.usage.lock().unwrap_or_else(|e| e.into_inner()) = usage;
    }

    pub fn add(&self, asset: ListedAsset) {
        self.assets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(asset);
    }

    /// The `since` of every search made, in order.
    pub fn searches(&self) -> Vec<String> {
        self.searches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn faults(&self) -> &FaultPlan<ListCall> {
        &self.faults
    }

    /// The quota every page reports from now on.
    pub fn report_quota(&self, quota: Option<Quota>) {
        *self.quota.lock().unwrap_or_else(|e| e.into_inner()) = quota;
    }
}

/// A page of a synthetic account of `n` assets (every one an `upload` one), from `offset`.
fn synthetic_page(
    listing: &Listing,
    n: usize,
    offset: usize,
    page_size: u32,
    quota: Option<crate::rate_gate::Quota>,
) -> AssetPage {
    let n = if *listing == Listing::of_type("upload") {
        n
    } else {
        0
    };
    let end = (offset + page_size as usize).min(n);
    let assets = (offset..end)
        .map(|i| ListedAsset {
            public_id: format!("asset-{i:07}"),
            resource_type: "image".into(),
            delivery_type: "upload".into(),
            created_at: None,
            version: Some(1),
            format: Some("png".into()),
            tags: None,
        })
        .collect();
    AssetPage {
        assets,
        next_cursor: (end < n).then(|| end.to_string()),
        quota,
    }
}

impl MemoryAssetSource {
    /// The assets a listing names, in the order it lists them.
    fn matching(&self, listing: &Listing) -> Vec<ListedAsset> {
        let mut matching: Vec<ListedAsset> = self
            .assets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|a| match listing {
                Listing::Type {
                    delivery_type,
                    prefix,
                } => a.delivery_type == *delivery_type && a.public_id.starts_with(prefix),
                Listing::Tag(tag) => a.tags.as_ref().is_some_and(|t| t.contains(tag)),
                Listing::CreatedSince(since) => {
                    a.created_at.as_deref().is_some_and(|c| c >= since.as_str())
                }
                // No expression is evaluated here: every asset is answered, and the lister
                // keeps what its scope admits (as it would of a search answering more).
                Listing::Search(_) => true,
            })
            .cloned()
            .collect();
        if let Listing::CreatedSince(_) | Listing::Search(_) = listing {
            matching.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        }
        matching
    }
}

impl AssetSource for MemoryAssetSource {
    async fn addon_usage(&self) -> Result<Option<super::AddonUsage>, RemoteError> {
        Ok(*self.usage.lock().unwrap_or_else(|e| e.into_inner()))
    }

    async fn page(
        &self,
        listing: &Listing,
        cursor: Option<&str>,
        page_size: u32,
    ) -> Result<AssetPage, RemoteError> {
        tokio::time::sleep(self.latency).await;
        let call = match listing {
            Listing::Type { .. } | Listing::Tag(_) => ListCall::All,
            Listing::CreatedSince(_) | Listing::Search(_) => ListCall::Search,
        };
        if let Listing::CreatedSince(searched) | Listing::Search(searched) = listing {
            self.searches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(searched.clone());
        }
        if let Some(class) = self.faults.call(call) {
            return Err(RemoteError::new(class, format!("injected {class:?} fault")));
        }
        let quota = self.spend()?;
        let offset: usize = match cursor {
            None => 0,
            Some(c) => c.parse().map_err(|_| {
                RemoteError::new(ErrorClass::Permanent, format!("invalid cursor {c:?}"))
            })?,
        };
        if let Some(n) = self.synthetic {
            return Ok(synthetic_page(listing, n, offset, page_size, quota));
        }
        let matching = self.matching(listing);
        let end = (offset + page_size as usize).min(matching.len());
        let assets = matching.get(offset..end).unwrap_or_default().to_vec();
        Ok(AssetPage {
            assets,
            next_cursor: (end < matching.len()).then(|| end.to_string()),
            quota,
        })
    }
}
