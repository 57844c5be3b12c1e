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
    /// A page of every asset.
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
    /// The `since` of every search, in order.
    searches: Mutex<Vec<String>>,
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
                })
                .collect(),
        )
    }

    /// Every page takes this long (in tokio time).
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
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

impl AssetSource for MemoryAssetSource {
    async fn page(
        &self,
        listing: &Listing,
        cursor: Option<&str>,
        page_size: u32,
    ) -> Result<AssetPage, RemoteError> {
        tokio::time::sleep(self.latency).await;
        let call = match listing {
            Listing::All => ListCall::All,
            Listing::CreatedSince(_) => ListCall::Search,
        };
        if let Listing::CreatedSince(since) = listing {
            self.searches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(since.clone());
        }
        if let Some(class) = self.faults.call(call) {
            return Err(RemoteError::new(class, format!("injected {class:?} fault")));
        }
        let offset: usize = match cursor {
            None => 0,
            Some(c) => c.parse().map_err(|_| {
                RemoteError::new(ErrorClass::Permanent, format!("invalid cursor {c:?}"))
            })?,
        };
        let mut matching: Vec<ListedAsset> = self
            .assets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|a| match listing {
                Listing::All => true,
                Listing::CreatedSince(since) => {
                    a.created_at.as_deref().is_some_and(|c| c >= since.as_str())
                }
            })
            .cloned()
            .collect();
        if let Listing::CreatedSince(_) = listing {
            matching.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        }
        let end = (offset + page_size as usize).min(matching.len());
        let assets = matching.get(offset..end).unwrap_or_default().to_vec();
        Ok(AssetPage {
            assets,
            next_cursor: (end < matching.len()).then(|| end.to_string()),
            quota: *self.quota.lock().unwrap_or_else(|e| e.into_inner()),
        })
    }
}
