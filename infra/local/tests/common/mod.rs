//! Test harness: a fresh stack (uniquely named table/queues) on moto and an in-process
//! Cloudinary emulator per test. Fails, never skips, when moto is not running.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use cloudinary_emulator::{Asset, Emulator, EmulatorConfig};
use local_stack::provision::{LocalStack, StackNames, StackSettings, provision};
use local_stack::runner::{DrainEnd, DrainStats, MappingSettings, drain};
use shared::config::Env;

pub type Item = HashMap<String, AttributeValue>;

pub struct Harness {
    pub sdk: aws_config::SdkConfig,
    pub ddb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub stack: LocalStack,
    pub emulator: Emulator,
}

pub fn asset(public_id: &str, text: Option<&str>) -> Asset {
    Asset {
        public_id: public_id.to_string(),
        format: "png".into(),
        bytes: 1234,
        width: 640,
        height: 480,
        created_at: "2024-01-01T00:00:00Z".into(),
        text: text.map(str::to_string),
        locale: text.map(|_| "en".to_string()),
    }
}

impl Harness {
    pub async fn new(
        assets: Vec<Asset>,
        settings: StackSettings,
        configure: impl FnOnce(&mut EmulatorConfig),
    ) -> Self {
        let endpoint = local_stack::aws::local_endpoint().unwrap_or_else(|e| panic!("{e}"));
        let sdk = local_stack::aws::sdk_config(&endpoint).await;
        let ddb = aws_sdk_dynamodb::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let stack = provision(&ddb, &sqs, StackNames::unique("test"), settings)
            .await
            .unwrap_or_else(|e| panic!("provisioning on moto at {endpoint} failed: {e:#}"));
        let mut config = EmulatorConfig::new("testcloud");
        configure(&mut config);
        let emulator = Emulator::start(config, assets, 0)
            .await
            .expect("emulator starts");
        Self {
            sdk,
            ddb,
            sqs,
            stack,
            emulator,
        }
    }

    /// The environment the functions would see, with `extra` on top.
    pub fn env(&self, extra: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String> + use<>> {
        let mut vars = self.stack.function_env();
        vars.extend([
            ("CLOUDINARY_URL", self.emulator.cloudinary_url()),
            ("CLOUDINARY_API_BASE", self.emulator.base_url()),
            ("CLOUDINARY_TIMEOUT_MS", "3000".into()),
        ]);
        let mut vars: HashMap<String, String> =
            vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        Env(move |name: &str| vars.get(name).cloned())
    }

    pub fn worker(&self, extra: &[(&str, &str)]) -> worker::SqsWorker {
        let config = self.env(extra).worker(None).expect("worker config");
        worker::build(&config, &self.sdk).expect("worker builds")
    }

    pub fn lister(&self, extra: &[(&str, &str)]) -> lister::SqsLister {
        let config = self.env(extra).lister(None).expect("lister config");
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
            .key("publicId", AttributeValue::S(public_id.into()))
            .consistent_read(true)
            .send()
            .await
            .expect("get item")
            .item
    }

    pub async fn items(&self) -> HashMap<String, Item> {
        local_stack::scan_items(&self.ddb, &self.stack.names.results_table)
            .await
            .expect("scan")
    }

    /// Every message in the DLQ (received and left there), with its attributes.
    pub async fn dlq(&self) -> Vec<Message> {
        local_stack::receive_all(&self.sqs, &self.stack.dead_letter_queue_url)
            .await
            .expect("receive dlq")
    }

    /// Runs the event-source loop until the work queue is empty.
    pub async fn drain(
        &self,
        worker: &worker::SqsWorker,
        concurrency: usize,
        max: Duration,
    ) -> (DrainEnd, DrainStats) {
        let stats = DrainStats::default();
        let settings = MappingSettings {
            queue_url: self.stack.work_queue_url.clone(),
            queue_arn: self.stack.work_queue_arn.clone(),
            batch_size: self.stack.settings.batch_size as i32,
            max_concurrency: concurrency,
            function_timeout: self.stack.settings.worker_timeout,
            idle_grace: Duration::from_millis(500),
            max_duration: max,
            kill_rate: 0.0,
        };
        let end = drain(&self.sqs, &settings, &stats, |event, deadline| {
            worker::handle(worker, event, deadline)
        })
        .await
        .expect("drain");
        (end, stats)
    }

    /// Runs the lister (as the schedule would) until its pass completes.
    pub async fn list_all(&self, lister: &lister::SqsLister) -> u64 {
        let mut enqueued = 0;
        for _ in 0..50 {
            let summary = lister::handle(
                lister,
                serde_json::json!({}),
                SystemTime::now() + Duration::from_secs(60),
            )
            .await
            .expect("lister run");
            enqueued += summary["enqueued"].as_u64().unwrap();
            if summary["stop"] == "pass_complete" {
                return enqueued;
            }
        }
        panic!("lister did not complete in 50 runs");
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

pub fn attr(message: &Message, name: &str) -> Option<String> {
    message
        .message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
        .map(str::to_string)
}

/// A settings profile with a short visibility timeout, so retries happen within a test.
pub fn fast_retry_settings(max_receive_count: u32) -> StackSettings {
    StackSettings {
        visibility_timeout: Duration::from_secs(1),
        max_receive_count,
        ..StackSettings::default()
    }
}
