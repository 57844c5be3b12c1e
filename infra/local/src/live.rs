//! The live phase the demo, the chaos run and the bench share: the notifier served locally
//! and registered through the triggers API, changes made through Cloudinary's Upload API (as a
//! user's application makes them), the worker draining what the notifications enqueued, and
//! the table watched until each change shows, timed from the change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use cloudinary_emulator::{Emulator, UploadClient};

use crate::notifier::LocalNotifier;
use crate::runner::DrainStats;
use crate::scenario::{DrainTimes, Item, Scenario, Tally, WorkerPool};

/// The event types the notifier acts on (`upload` covers uploads over a public_id).
pub const EVENT_TYPES: [&str; 3] = ["upload", "rename", "delete"];

/// Registers `url` for [`EVENT_TYPES`] through the Admin API's triggers, as
/// `ocr-ctl notifications enable` does.
pub async fn register(emu: &Emulator, url: &str) -> anyhow::Result<()> {
    let c = emu.config();
    for event_type in EVENT_TYPES {
        let answer = reqwest::Client::new()
            .post(format!("{}/v1_1/{}/triggers", emu.base_url(), c.cloud_name))
            .basic_auth(&c.api_key, Some(&c.api_secret))
            .json(&serde_json::json!({"uri": url, "event_type": event_type}))
            .send()
            .await
            .context("the triggers API")?;
        anyhow::ensure!(
            answer.status().is_success(),
            "creating the {event_type} trigger: {}",
            answer.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// One change to the account, and what the table shows once it is reflected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new image (`overwrite: false`) or a new version over an existing one.
    Upload {
        key: String,
        text: String,
        overwrite: bool,
    },
    Rename {
        from: String,
        to: String,
    },
    Delete {
        key: String,
    },
}

impl Change {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Upload {
                overwrite: false, ..
            } => "upload",
            Self::Upload {
                overwrite: true, ..
            } => "upload again",
            Self::Rename { .. } => "rename",
            Self::Delete { .. } => "delete",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Upload { key, .. } | Self::Delete { key } => key.clone(),
            Self::Rename { from, to } => format!("{from} -> {to}"),
        }
    }

    /// Makes the change through the Upload API.
    pub async fn make(&self, client: &UploadClient) -> anyhow::Result<()> {
        let answer = match self {
            Self::Upload {
                key,
                text,
                overwrite,
            } => {
                client
                    .upload(Some(key), text.as_bytes(), "upload", *overwrite)
                    .await
            }
            Self::Rename { from, to } => client.rename(from, to, "upload", false).await,
            Self::Delete { key } => client.destroy(key, "upload").await,
        };
        answer
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("{} {}: {e}", self.label(), self.describe()))
    }
}

/// What the table shows once a change is reflected.
#[derive(Debug, Clone)]
pub struct Expected {
    change: Change,
    /// For a rename: the text that moves with the image.
    moved_text: Option<String>,
}

impl Expected {
    /// `text_of` gives the text the table holds for a key before the change.
    pub fn new(change: Change, text_of: impl Fn(&str) -> Option<String>) -> Self {
        let moved_text = match &change {
            Change::Rename { from, .. } => text_of(from),
            _ => None,
        };
        Self { change, moved_text }
    }

    pub fn change(&self) -> &Change {
        &self.change
    }

    /// The keys whose items show the change.
    pub fn keys(&self) -> Vec<&str> {
        match &self.change {
            Change::Upload { key, .. } | Change::Delete { key } => vec![key],
            Change::Rename { from, to } => vec![from, to],
        }
    }

    /// Whether `items` show the change.
    pub fn shown(&self, items: &HashMap<String, Item>) -> bool {
        let s = |key: &str, name: &str| {
            items
                .get(key)
                .and_then(|i| i.get(name))
                .and_then(|v| v.as_s().ok())
                .cloned()
        };
        match &self.change {
            Change::Upload { key, text, .. } => {
                s(key, "text").as_deref() == Some(text.as_str()) && s(key, "deletedAt").is_none()
            }
            Change::Rename { from, to } => {
                s(from, "renamedTo").as_deref() == Some(to.as_str())
                    && s(to, "deletedAt").is_none()
                    && s(to, "text") == self.moved_text
            }
            Change::Delete { key } => s(key, "deletedAt").is_some(),
        }
    }
}

/// One change's time from the Upload API's answer to the table (`None`: not shown in time).
#[derive(Debug, Clone)]
pub struct Reflected {
    pub change: Change,
    pub after: Option<Duration>,
}

/// The worker, draining as the event source mapping does, until `stop`.
pub async fn drain_until(
    scenario: &Scenario,
    pool: &WorkerPool,
    invocations: usize,
    tally: &Tally,
    stats: &DrainStats,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mapping = crate::runner::MappingSettings {
        idle_grace: Duration::from_millis(300),
        ..scenario.mapping(invocations, Duration::from_secs(3600))
    };
    while !stop.load(Ordering::SeqCst) {
        scenario
            .drain(pool, &mapping, stats, tally, &DrainTimes::default())
            .await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// When each change was made (its Upload API call answered), as it happens.
#[derive(Debug)]
pub struct Made {
    at: std::sync::Mutex<Vec<Option<(Instant, u64)>>>,
    done: AtomicBool,
}

impl Made {
    fn new(n: usize) -> Self {
        Self {
            at: std::sync::Mutex::new(vec![None; n]),
            done: AtomicBool::new(false),
        }
    }

    fn set(&self, i: usize) {
        let epoch_ms = shared::clock::epoch_ms(std::time::SystemTime::now());
        self.at.lock().unwrap_or_else(|e| e.into_inner())[i] = Some((Instant::now(), epoch_ms));
    }

    fn get(&self) -> Vec<Option<(Instant, u64)>> {
        self.at.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Watches the table while the changes are made, until every one shows (or `timeout` after
/// the last was made), recording how long after its change each did.
async fn watch(
    scenario: &Scenario,
    expected: &[Expected],
    made: &Made,
    timeout: Duration,
    every: Duration,
) -> anyhow::Result<Vec<Option<Duration>>> {
    let mut seen: Vec<Option<Duration>> = vec![None; expected.len()];
    let mut last_made = Instant::now();
    loop {
        let at = made.get();
        for (i, e) in expected.iter().enumerate() {
            let Some((when, _)) = at[i].filter(|_| seen[i].is_none()) else {
                continue;
            };
            let mut items = HashMap::new();
            for key in e.keys() {
                if let Some(item) = get_item(scenario, key).await? {
                    items.insert(key.to_string(), item);
                }
            }
            if e.shown(&items) {
                seen[i] = Some(when.elapsed());
            }
        }
        let all_made = made.done.load(Ordering::SeqCst);
        if !all_made {
            last_made = Instant::now();
        }
        if all_made && (seen.iter().all(Option::is_some) || last_made.elapsed() > timeout) {
            return Ok(seen);
        }
        tokio::time::sleep(every).await;
    }
}

/// What a live phase measured.
#[derive(Debug)]
pub struct LiveRun {
    pub reflected: Vec<Reflected>,
    /// When each change was made (ms since the epoch).
    pub made_ms: Vec<Option<u64>>,
    pub tally: Tally,
    pub stats: DrainStats,
}

/// Makes `changes`, one every `pace`, on the emulator while the worker drains and the table
/// is watched; returns when every change shows, or `timeout` after the last was made. The
/// notifier must be serving and registered (see [`serve_and_register`]).
pub async fn run(
    scenario: &Scenario,
    emu: &Emulator,
    pool: &WorkerPool,
    invocations: usize,
    changes: Vec<Change>,
    pace: Duration,
    timeout: Duration,
) -> anyhow::Result<LiveRun> {
    let mut expected = Vec::with_capacity(changes.len());
    for change in changes {
        let moved_text = match &change {
            Change::Rename { from, .. } => get_item(scenario, from)
                .await?
                .and_then(|i| i.get("text").and_then(|v| v.as_s().ok()).cloned()),
            _ => None,
        };
        expected.push(Expected { change, moved_text });
    }
    let client = emu.upload_client();
    let stop = AtomicBool::new(false);
    let tally = Tally::default();
    let stats = DrainStats::default();
    let made = Made::new(expected.len());
    let drainer = drain_until(scenario, pool, invocations, &tally, &stats, &stop);
    // Each change at its own time, whatever the calls before it take (a steady rate); in
    // order when they are paced apart.
    let driver = async {
        let started = tokio::time::Instant::now();
        let calls = expected.iter().enumerate().map(|(i, e)| {
            let (client, made) = (&client, &made);
            async move {
                tokio::time::sleep_until(started + pace * i as u32).await;
                e.change.make(client).await?;
                made.set(i);
                anyhow::Ok(())
            }
        });
        let result = futures::future::try_join_all(calls).await;
        made.done.store(true, Ordering::SeqCst);
        result.map(|_| ())
    };
    let watcher = async {
        let seen = watch(
            scenario,
            &expected,
            &made,
            timeout,
            Duration::from_millis(50),
        )
        .await;
        stop.store(true, Ordering::SeqCst);
        seen
    };
    let (drained, driven, seen) = tokio::join!(drainer, driver, watcher);
    drained?;
    driven?;
    let seen = seen?;
    Ok(LiveRun {
        reflected: expected
            .iter()
            .zip(seen)
            .map(|(e, after)| Reflected {
                change: e.change.clone(),
                after,
            })
            .collect(),
        made_ms: made
            .get()
            .into_iter()
            .map(|m| m.map(|(_, ms)| ms))
            .collect(),
        tally,
        stats,
    })
}

/// The item under `key`, read consistently.
async fn get_item(scenario: &Scenario, key: &str) -> anyhow::Result<Option<Item>> {
    let out = scenario
        .ddb
        .get_item()
        .table_name(&scenario.stack.names.results_table)
        .key(
            "publicId",
            aws_sdk_dynamodb::types::AttributeValue::S(key.to_string()),
        )
        .consistent_read(true)
        .send()
        .await
        .with_context(|| format!("reading {key:?}"))?;
    Ok(out.item)
}

/// The notifier served and registered on the emulator.
pub async fn serve_and_register(
    scenario: &Scenario,
    emu: &Emulator,
) -> anyhow::Result<LocalNotifier> {
    let live = scenario.serve_notifier(&[]).await?;
    register(emu, &live.url).await?;
    Ok(live)
}

/// The `q`-quantile of `values` (nearest rank), sorted in place.
pub fn quantile(values: &mut [Duration], q: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    values.sort();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}
