//! The notifier function: Cloudinary's signed notifications, behind a Lambda Function URL,
//! kept to by [`shared::notify`]. [`answer`] is the whole handler: Lambda's adapter (in
//! `main.rs`) and the local stack's HTTP server both call it.

use std::time::SystemTime;

use http::HeaderMap;
use shared::notify::{Notifier, Outcome, Request};
use shared::queue::sqs::SqsQueue;
use shared::store::DynamoResultStore;
use shared::store::NotifyStore;

/// The notifier on DynamoDB and SQS.
pub type LiveNotifier = Notifier<DynamoResultStore, SqsQueue>;

/// Builds the notifier from its configuration and the SDK's.
pub fn live(config: shared::config::NotifierConfig, sdk: &aws_config::SdkConfig) -> LiveNotifier {
    let store = DynamoResultStore::new(aws_sdk_dynamodb::Client::new(sdk), config.results_table);
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(sdk), config.work_queue_url);
    Notifier::new(store, queue, config.settings)
}

/// One request's answer: the status, a small JSON body that says what was done (never what
/// was sent), and the outcome for the metrics.
pub async fn answer<S, Q>(
    notifier: &Notifier<S, Q>,
    method: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> (u16, String, Outcome)
where
    S: NotifyStore,
    Q: shared::queue::WorkQueue,
{
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let request = Request {
        method,
        timestamp: header("x-cld-timestamp"),
        signature: header("x-cld-signature"),
        body,
    };
    let outcome = notifier.handle(&request, now).await;
    (outcome.status(), outcome.body(), outcome)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shared::cloudinary::SignatureAlgorithm;
    use shared::notify::{NotifierSettings, digest};
    use shared::queue::memory::MemoryQueue;
    use shared::scope::Scope;
    use shared::secret::Secret;
    use shared::store::memory::MemoryResultStore;

    use super::*;

    #[tokio::test]
    async fn headers_are_read_whatever_their_case_and_the_answer_never_echoes_the_body() {
        let secret = "local-test-secret";
        let notifier = Notifier::new(
            Arc::new(MemoryResultStore::new()),
            Arc::new(MemoryQueue::new()),
            NotifierSettings::new(
                Secret::new(secret),
                SignatureAlgorithm::Sha256,
                Scope::default(),
            ),
        );
        let now = SystemTime::now();
        let ts = shared::clock::epoch_ms(now) / 1000;
        let body = br#"{"notification_type":"upload","public_id":"secret-name","version":3}"#;
        let signature = digest(
            SignatureAlgorithm::Sha256,
            &[body, ts.to_string().as_bytes(), secret.as_bytes()],
        );
        let mut headers = HeaderMap::new();
        headers.insert("X-Cld-Timestamp", ts.to_string().parse().unwrap());
        headers.insert("X-CLD-SIGNATURE", signature.parse().unwrap());
        let (status, answered, outcome) = answer(&notifier, "POST", &headers, body, now).await;
        assert_eq!((status, outcome), (200, Outcome::Enqueued(1)));
        assert_eq!(answered, r#"{"result":"enqueued"}"#);
        headers.insert("x-cld-signature", "0".repeat(64).parse().unwrap());
        let (status, answered, _) = answer(&notifier, "POST", &headers, body, now).await;
        assert_eq!(status, 401);
        assert!(!answered.contains("secret-name"), "{answered}");
        assert_eq!(notifier.queue.sent().len(), 1);
    }
}
