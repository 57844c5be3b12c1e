//! Test harness: a fresh scenario (uniquely named tables and queues) on moto and an in-process
//! Cloudinary emulator per test. Fails, never skips, when moto is not running.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use cloudinary_emulator::{Asset, Emulator, EmulatorConfig};
use local_stack::provision::StackSettings;
use local_stack::runner::{DrainEnd, DrainStats, drain};
use local_stack::scenario::{OnRateLimit, Scenario};

pub use local_stack::scenario::Item;

pub struct Harness {
    pub scenario: Scenario,
    pub emulator: Emulator,
}

impl std::ops::Deref for Harness {
    type Target = Scenario;
    fn deref(&self) -> &Scenario {
        &self.scenario
    }
}

/// The production stack's settings, from `template.yaml`.
pub fn stack_settings() -> StackSettings {
    local_stack::template::stack_settings().unwrap_or_else(|e| panic!("template.yaml: {e}"))
}

/// The worker's logs (`RUST_LOG`, else its warnings and each record's disposition) into the
/// test's captured output: printed with a failing test, so that a drain that timed out says
/// which messages were deferred and why.
pub fn test_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,shared::worker=info".into());
    let _ignored_if_already_set = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

pub fn asset(public_id: &str, text: Option<&str>) -> Asset {
    Asset {
        public_id: public_id.to_string(),
        delivery_type: "upload".into(),
        format: "png".into(),
        bytes: 1234,
        width: 640,
        height: 480,
        created_at: "2024-01-01T00:00:00Z".into(),
        text: text.map(str::to_string),
        locale: text.map(|_| "en".to_string()),
        version: 1,
        uploaded_at: None,
        tags: Vec::new(),
    }
}

impl Harness {
    pub async fn new(
        assets: Vec<Asset>,
        settings: StackSettings,
        configure: impl FnOnce(&mut EmulatorConfig),
    ) -> Self {
        test_logs();
        let sdk = local_stack::scenario::local_sdk()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut scenario = Scenario::provision(&sdk, "test", settings)
            .await
            .unwrap_or_else(|e| panic!("provisioning on moto failed: {e:#}"));
        let mut config = EmulatorConfig::new("testcloud");
        configure(&mut config);
        let emulator = Emulator::start(config, assets, 0)
            .await
            .expect("emulator starts");
        scenario.use_cloudinary(emulator.cloudinary_url(), emulator.base_url());
        scenario.set("CLOUDINARY_TIMEOUT_MS", "3000");
        Self { scenario, emulator }
    }

    pub fn worker(&self, extra: &[(&str, &str)]) -> worker::SqsWorker {
        self.scenario
            .worker_with(extra, |_| {})
            .expect("worker builds")
    }

    pub fn lister(&self, extra: &[(&str, &str)]) -> lister::SqsLister {
        let config = self.env_with(extra).lister(None).expect("lister config");
        lister::build(&config, &self.sdk).expect("lister builds")
    }

    pub async fn send(&self, body: &str) -> String {
        self.sqs
            .send_message()
            .queue_url(&self.stack.work_queue_url)
            .message_body(body)
            .send()
            .await
            .expect("send")
            .message_id
            .expect("message id")
    }

    pub async fn send_asset(&self, public_id: &str) -> String {
        self.send(&shared::message::WorkMessage::new(public_id, "image", "upload").to_body())
            .await
    }

    /// Receives up to 10 messages from the work queue, with their attributes.
    pub async fn receive(&self) -> Vec<Message> {
        self.sqs
            .receive_message()
            .queue_url(&self.stack.work_queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default()
    }

    pub async fn item(&self, public_id: &str) -> Option<Item> {
        self.ddb
            .get_item()
            .table_name(&self.stack.names.results_table)
            .key(
                "publicId",
                aws_sdk_dynamodb::types::AttributeValue::S(public_id.into()),
            )
            .consistent_read(true)
            .send()
            .await
            .expect("get item")
            .item
    }

    pub async fn items(&self) -> HashMap<String, Item> {
        self.scenario.items().await.expect("scan")
    }

    /// Every message in the DLQ (received and left there), with its attributes.
    pub async fn dlq(&self) -> Vec<Message> {
        local_stack::receive_all(&self.sqs, &self.stack.dead_letter_queue_url)
            .await
            .expect("receive dlq")
    }

    /// Every message in the DLQ with its reason, as `ocr-ctl dead-letters` lists them: left
    /// there, visible again.
    pub async fn dead_letters(&self) -> Vec<ocr_ctl::dead_letters::DeadLetterRow> {
        use ocr_ctl::dead_letters::{describe, peek, release};
        let url = &self.stack.dead_letter_queue_url;
        let messages = peek(&self.sqs, url, 10_000, 30)
            .await
            .expect("peek the DLQ");
        let rows = describe(&self.ddb, &self.stack.names.results_table, &messages)
            .await
            .expect("describe the dead letters");
        release(&self.sqs, url, &messages)
            .await
            .expect("release the DLQ");
        rows
    }

    /// Runs the event-source loop until the work queue is empty, every invocation on `worker`.
    pub async fn drain(
        &self,
        worker: &worker::SqsWorker,
        concurrency: usize,
        max: Duration,
    ) -> (DrainEnd, DrainStats) {
        let stats = DrainStats::default();
        let mapping = self.mapping(concurrency, max);
        let end = drain(&self.sqs, &mapping, &stats, |event, deadline| {
            worker::handle(worker, event, deadline)
        })
        .await
        .expect("drain");
        (end, stats)
    }

    /// Runs the lister (as the schedule would) until its pass completes; the assets enqueued.
    pub async fn list_all(&self, lister: &lister::SqsLister) -> u64 {
        self.list_until_done(
            lister,
            OnRateLimit::WaitAndContinue(Duration::ZERO),
            50,
            |_, _| {},
        )
        .await
        .expect("the lister completes its pass")
        .enqueued
    }
}

/// The repository's root and the project virtualenv's Python (the checks run with clients
/// nobody here wrote: Cloudinary's SDK, boto3).
pub fn venv_python() -> (std::path::PathBuf, std::path::PathBuf) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: `make setup` creates it (`make test` does so first)",
        python.display()
    );
    (root, python)
}

/// A claim of an upload image for a minute from `now_ms`, asking for `intent`.
pub fn image_claim(
    key: &'static str,
    token: &'static str,
    now_ms: u64,
    intent: shared::store::ClaimIntent,
) -> shared::store::Claim<'static> {
    shared::store::Claim {
        key,
        resource_type: "image",
        delivery_type: "upload",
        token,
        now_ms,
        expires_at_ms: now_ms + 60_000,
        intent,
        drop_marks: &[],
    }
}

pub fn s(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

pub fn n(item: &Item, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// A settings profile with a short visibility timeout, so retries happen within a test.
pub fn fast_retry_settings(max_receive_count: u32) -> StackSettings {
    StackSettings {
        visibility_timeout: Duration::from_secs(1),
        max_receive_count,
        ..stack_settings()
    }
}
