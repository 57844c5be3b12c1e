//! The work queue on SQS, and the moves between queues that the operator's tool makes.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry,
};

use super::{MAX_DELAY, QueueDepth, QueueError, Refused, SEND_BATCH_MAX, WorkQueue};
use crate::message::WorkMessage;

const SEND_ATTEMPTS: u32 = 6;

/// A queue on SQS, by URL.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
    /// Where messages marked `gathered` go (the worker's read-back queue), if anywhere else.
    read_back: Option<Box<SqsQueue>>,
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
            read_back: None,
        }
    }

    /// Messages marked `gathered` are sent to (and returned on) the queue at `url`.
    pub fn with_read_back_queue(mut self, url: impl Into<String>) -> Self {
        self.read_back = Some(Box::new(Self::new(self.client.clone(), url)));
        self
    }

    /// Up to 10 messages with their delays, all to this queue.
    async fn send_delayed_here(
        &self,
        entries: &[(WorkMessage, Duration)],
    ) -> Result<Vec<Option<String>>, QueueError> {
        let request: Vec<SendMessageBatchRequestEntry> = entries
            .iter()
            .enumerate()
            .map(|(i, (message, delay))| {
                entry(i, &message.to_body())
                    .delay_seconds((*delay).min(MAX_DELAY).as_secs() as i32)
                    .build()
                    .expect("id and body are set")
            })
            .collect();
        let out = self.send_message_batch(request).await?;
        let mut failures = vec![None; entries.len()];
        note_refusals(out.failed(), &mut failures);
        Ok(failures)
    }

    fn sdk_error<E, R>(
        &self,
        operation: &'static str,
        err: aws_sdk_sqs::error::SdkError<E, R>,
    ) -> QueueError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        QueueError::Sdk {
            operation,
            queue: self.url.clone(),
            code: err.code().unwrap_or("no code").to_string(),
            source: Box::new(err),
        }
    }

    /// Sends up to 10 bodies; resends only the entries reported failed, with backoff. Returns
    /// the bodies SQS refused as they are (an entry failed as the sender's fault, or a body
    /// that makes the whole request invalid, found by sending the batch's bodies one by one).
    pub async fn send_batch(&self, bodies: &[String]) -> Result<Vec<Refused>, QueueError> {
        assert!(
            bodies.len() <= SEND_BATCH_MAX,
            "a batch holds at most {SEND_BATCH_MAX} messages"
        );
        match self.send_indexes(bodies, (0..bodies.len()).collect()).await {
            Err(e) if refuses_contents(&e) && bodies.len() > 1 => {
                tracing::warn!(queue = %self.url, error = %e, "SQS refused a batch's contents; sending its messages one by one");
                let mut refused = Vec::new();
                for i in 0..bodies.len() {
                    match self.send_indexes(bodies, vec![i]).await {
                        Ok(r) => refused.extend(r),
                        Err(e) if refuses_contents(&e) => {
                            refused.push((i, crate::error::error_chain(&e)))
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(refused)
            }
            Err(e) if refuses_contents(&e) => Ok(vec![(0, crate::error::error_chain(&e))]),
            other => other,
        }
    }

    /// Sends the bodies at `pending`, resending the entries reported failed by no fault of
    /// theirs; the entries failed as the sender's fault are returned.
    async fn send_indexes(
        &self,
        bodies: &[String],
        mut pending: Vec<usize>,
    ) -> Result<Vec<Refused>, QueueError> {
        let mut refused = Vec::new();
        let mut last_detail = String::new();
        for attempt in 1..=SEND_ATTEMPTS {
            if pending.is_empty() {
                return Ok(refused);
            }
            if attempt > 1 {
                tokio::time::sleep(Duration::from_millis(50 * (1 << (attempt - 2)))).await;
            }
            match self.send_entries(bodies, &pending).await {
                Ok(failed) => {
                    pending = Vec::new();
                    for f in failed {
                        last_detail = f.detail;
                        match f.index {
                            // The entry itself is wrong: resending cannot help.
                            Some(i) if f.sender_fault => refused.push((i, last_detail.clone())),
                            Some(i) => pending.push(i),
                            None => {}
                        }
                    }
                    if !pending.is_empty() {
                        tracing::warn!(queue = %self.url, failed = pending.len(), attempt, "SendMessageBatch entries failed; retrying them");
                    }
                }
                Err(err) if attempt == SEND_ATTEMPTS || refuses_contents(&err) => return Err(err),
                Err(err) => {
                    tracing::warn!(queue = %self.url, attempt, error = %err, "SendMessageBatch failed; retrying");
                    last_detail = err.to_string();
                }
            }
        }
        match pending.len() {
            0 => Ok(refused),
            n => Err(self.rejected(n, SEND_ATTEMPTS, last_detail)),
        }
    }

    /// [`Self::send_batch`] of the `chunk`th ten bodies, the refused ones indexed among all.
    async fn send_chunk(
        &self,
        chunk: usize,
        bodies: &[String],
    ) -> Result<Vec<Refused>, QueueError> {
        let refused = self.send_batch(bodies).await?;
        Ok(refused
            .into_iter()
            .map(|(i, reason)| (chunk * SEND_BATCH_MAX + i, reason))
            .collect())
    }

    /// One `SendMessageBatch` of the bodies at `indexes`; the entries it reports failed.
    async fn send_entries(
        &self,
        bodies: &[String],
        indexes: &[usize],
    ) -> Result<Vec<FailedEntry>, QueueError> {
        let entries: Vec<SendMessageBatchRequestEntry> = indexes
            .iter()
            .map(|&i| entry(i, &bodies[i]).build().expect("id and body are set"))
            .collect();
        let out = self.send_message_batch(entries).await?;
        Ok(out
            .failed()
            .iter()
            .map(|f| FailedEntry {
                index: f.id().parse().ok().filter(|i| *i < bodies.len()),
                sender_fault: f.sender_fault(),
                detail: refusal(f),
            })
            .collect())
    }

    async fn send_message_batch(
        &self,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput, QueueError>
    {
        self.client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.sdk_error("SendMessageBatch", e))
    }

    fn rejected(&self, count: usize, attempts: u32, detail: String) -> QueueError {
        QueueError::Rejected {
            queue: self.url.clone(),
            count,
            attempts,
            detail,
        }
    }
}

/// A batch entry: its id is its index in the batch.
fn entry(
    index: usize,
    body: &str,
) -> aws_sdk_sqs::types::builders::SendMessageBatchRequestEntryBuilder {
    SendMessageBatchRequestEntry::builder()
        .id(index.to_string())
        .message_body(body)
}

/// Why SQS did not take an entry of a batch: `code: message`.
fn refusal(entry: &BatchResultErrorEntry) -> String {
    format!("{}: {}", entry.code(), entry.message().unwrap_or_default())
}

/// Whether SQS refused a request for what its messages hold (a body too large or with
/// characters it does not take), rather than for the queue or the moment.
fn refuses_contents(err: &QueueError) -> bool {
    match err {
        QueueError::Sdk { code, .. } => [
            "InvalidMessageContents",
            "InvalidParameterValue",
            "BatchRequestTooLong",
        ]
        .iter()
        .any(|c| code.contains(c)),
        QueueError::Rejected { .. } => false,
    }
}

/// An entry of a batch that SQS did not take.
struct FailedEntry {
    index: Option<usize>,
    sender_fault: bool,
    detail: String,
}

impl WorkQueue for SqsQueue {
    async fn depth(&self) -> Result<Option<u64>, QueueError> {
        Ok(Some(queue_depth(&self.client, &self.url).await?.total()))
    }

    async fn enqueue(&self, messages: &[WorkMessage]) -> Result<Vec<Refused>, QueueError> {
        use futures::{StreamExt, TryStreamExt};
        let bodies: Vec<String> = messages.iter().map(WorkMessage::to_body).collect();
        let sends: Vec<_> = bodies
            .chunks(SEND_BATCH_MAX)
            .enumerate()
            .map(|(chunk, bodies)| self.send_chunk(chunk, bodies))
            .collect();
        let refused: Vec<Vec<Refused>> = futures::stream::iter(sends)
            .buffer_unordered(8)
            .try_collect()
            .await?;
        Ok(refused.into_iter().flatten().collect())
    }

    async fn send_delayed_batch(
        &self,
        entries: &[(WorkMessage, Duration)],
    ) -> Result<Vec<Option<String>>, QueueError> {
        assert!(
            entries.len() <= SEND_BATCH_MAX,
            "a batch holds at most {SEND_BATCH_MAX} messages"
        );
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(read_back) = &self.read_back
            && entries.iter().any(|(m, _)| m.gathered)
        {
            let (gathered, rest): (Vec<usize>, Vec<usize>) =
                (0..entries.len()).partition(|i| entries[*i].0.gathered);
            let mut failures = vec![None; entries.len()];
            for (queue, indexes) in [(read_back.as_ref(), gathered), (self, rest)] {
                if indexes.is_empty() {
                    continue;
                }
                let part: Vec<(WorkMessage, Duration)> =
                    indexes.iter().map(|i| entries[*i].clone()).collect();
                let sent = queue.send_delayed_here(&part).await?;
                for (i, failure) in indexes.into_iter().zip(sent) {
                    failures[i] = failure;
                }
            }
            return Ok(failures);
        }
        self.send_delayed_here(entries).await
    }

    async fn return_after_from_read_back_queue(
        &self,
        entries: &[(&str, Duration)],
    ) -> Result<Vec<Option<String>>, QueueError> {
        match &self.read_back {
            Some(read_back) => read_back.return_after(entries).await,
            None => self.return_after(entries).await,
        }
    }

    /// Its name is the last part of both the ARN and the URL.
    fn is_read_back_queue(&self, arn: &str) -> bool {
        let name = |s: &str, sep: char| s.rsplit(sep).next().unwrap_or_default().to_string();
        self.read_back
            .as_ref()
            .is_some_and(|q| !arn.is_empty() && name(arn, ':') == name(&q.url, '/'))
    }

    async fn return_after(
        &self,
        entries: &[(&str, Duration)],
    ) -> Result<Vec<Option<String>>, QueueError> {
        let mut failures = vec![None; entries.len()];
        for (chunk_index, chunk) in entries.chunks(SEND_BATCH_MAX).enumerate() {
            let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .map(|(i, (handle, delay))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(*handle)
                        .visibility_timeout(visibility_seconds(*delay))
                        .build()
                        .expect("id and receipt handle are set")
                })
                .collect();
            let out = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| self.sdk_error("ChangeMessageVisibilityBatch", e))?;
            note_refusals(out.failed(), &mut failures[chunk_index * SEND_BATCH_MAX..]);
        }
        Ok(failures)
    }
}

/// A delay as SQS's visibility timeout: whole seconds, rounded up, at most 12 hours.
fn visibility_seconds(delay: Duration) -> i32 {
    let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    seconds.min(MAX_VISIBILITY.as_secs()) as i32
}

/// The longest visibility timeout SQS takes.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

/// Writes why SQS refused each entry of a batch (`code: message`) at the entry's place in
/// `failures`: an entry's id is its index in the batch.
fn note_refusals(refused: &[BatchResultErrorEntry], failures: &mut [Option<String>]) {
    for entry in refused {
        if let Some(slot) = entry
            .id()
            .parse::<usize>()
            .ok()
            .and_then(|i| failures.get_mut(i))
        {
            *slot = Some(refusal(entry));
        }
    }
}

/// Reads a queue's approximate depth (visible, in flight, delayed).
pub async fn queue_depth(client: &Client, url: &str) -> Result<QueueDepth, QueueError> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(A::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| SqsQueue::new(client.clone(), url).sdk_error("GetQueueAttributes", e))?;
    let get = |a: A| {
        out.attributes()
            .and_then(|m| m.get(&a))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(QueueDepth {
        visible: get(A::ApproximateNumberOfMessages),
        in_flight: get(A::ApproximateNumberOfMessagesNotVisible),
        delayed: get(A::ApproximateNumberOfMessagesDelayed),
    })
}

/// Moves up to `max` messages from one queue to another with bodies and message attributes
/// unchanged, as the console's "Start DLQ redrive" does. A message is deleted from the source
/// only after the destination accepted it; one that was not sent stays (and reappears).
pub async fn move_messages(
    client: &Client,
    from: &str,
    to: &str,
    max: Option<usize>,
) -> Result<MoveReport, QueueError> {
    let source = SqsQueue::new(client.clone(), from);
    let dest = SqsQueue::new(client.clone(), to);
    let mut report = MoveReport::default();
    let mut empty_receives = 0;
    while max.is_none_or(|m| report.moved < m) && empty_receives < 2 {
        let want = max.map_or(10, |m| (m - report.moved).min(10)) as i32;
        let messages = source.receive_with_attributes(want).await?;
        if messages.is_empty() {
            empty_receives += 1;
            continue;
        }
        empty_receives = 0;
        let (sent, not_sent) = dest.send_copies(&messages).await?;
        report.not_sent += not_sent;
        let (deleted, not_deleted) = source.delete(&sent).await?;
        // A message sent but not deleted is moved twice; idempotency absorbs the copy.
        report.moved += deleted;
        report.not_deleted += not_deleted;
    }
    Ok(report)
}

impl SqsQueue {
    /// Up to `max` messages with their message attributes, invisible for two minutes.
    async fn receive_with_attributes(
        &self,
        max: i32,
    ) -> Result<Vec<aws_sdk_sqs::types::Message>, QueueError> {
        let received = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max)
            .wait_time_seconds(1)
            .visibility_timeout(120)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| self.sdk_error("ReceiveMessage", e))?;
        Ok(received.messages.unwrap_or_default())
    }

    /// Sends copies of `messages` (bodies and message attributes unchanged); the receipt
    /// handles of those accepted, and how many were refused.
    async fn send_copies(
        &self,
        messages: &[aws_sdk_sqs::types::Message],
    ) -> Result<(Vec<String>, usize), QueueError> {
        let entries: Vec<SendMessageBatchRequestEntry> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                entry(i, m.body().unwrap_or_default())
                    .set_message_attributes(m.message_attributes().cloned())
                    .build()
                    .expect("id and body are set")
            })
            .collect();
        let sent = self.send_message_batch(entries).await?;
        let handles = sent
            .successful()
            .iter()
            .filter_map(|ok| {
                let m = messages.get(ok.id().parse::<usize>().ok()?)?;
                m.receipt_handle().map(str::to_string)
            })
            .collect();
        Ok((handles, sent.failed().len()))
    }

    /// Deletes messages by receipt handle (at most 10); how many were and were not deleted.
    async fn delete(&self, handles: &[String]) -> Result<(usize, usize), QueueError> {
        if handles.is_empty() {
            return Ok((0, 0));
        }
        let entries: Vec<DeleteMessageBatchRequestEntry> = handles
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(h)
                    .build()
                    .ok()
            })
            .collect();
        let out = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.sdk_error("DeleteMessageBatch", e))?;
        let failed = out.failed().len();
        Ok((handles.len() - failed, failed))
    }
}

/// What a [`move_messages`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MoveReport {
    pub moved: usize,
    /// Refused by the destination; left in the source.
    pub not_sent: usize,
    /// Sent, but could not be deleted from the source (they will be moved again).
    pub not_deleted: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
    use aws_sdk_sqs::types::{BatchResultErrorEntry, SendMessageBatchResultEntry};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    /// SQS takes whole seconds: a delay is rounded up (never visible before it), and capped
    /// at SQS's longest visibility timeout.
    #[test]
    fn a_delay_becomes_whole_seconds_never_sooner() {
        let cases = [
            (Duration::ZERO, 0),
            (Duration::from_millis(1), 1),
            (Duration::from_secs(755), 755),
            (Duration::from_millis(755_001), 756),
            (Duration::from_secs(13 * 3600), 43_200),
        ];
        for (delay, seconds) in cases {
            assert_eq!(visibility_seconds(delay), seconds, "{delay:?}");
        }
    }

    fn ok_entry(id: &str) -> SendMessageBatchResultEntry {
        SendMessageBatchResultEntry::builder()
            .id(id)
            .message_id(format!("m-{id}"))
            .md5_of_message_body("x")
            .build()
            .unwrap()
    }

    fn failed_entry(id: &str, sender_fault: bool) -> BatchResultErrorEntry {
        BatchResultErrorEntry::builder()
            .id(id)
            .sender_fault(sender_fault)
            .code(if sender_fault {
                "InvalidParameterValue"
            } else {
                "InternalError"
            })
            .message("injected")
            .build()
            .unwrap()
    }

    #[test]
    fn a_record_of_the_read_back_queue_is_known_by_its_source_arn() {
        let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, []);
        let url = "https://sqs.eu-west-1.amazonaws.com/123456789012";
        let alone = SqsQueue::new(client, format!("{url}/ocr-work"));
        let queue = alone
            .clone()
            .with_read_back_queue(format!("{url}/ocr-read-back"));
        let arn = |name: &str| format!("arn:aws:sqs:eu-west-1:123456789012:{name}");
        assert!(queue.is_read_back_queue(&arn("ocr-read-back")));
        assert!(!queue.is_read_back_queue(&arn("ocr-work")));
        assert!(!queue.is_read_back_queue(""));
        assert!(!alone.is_read_back_queue(&arn("ocr-read-back")));
    }

    #[tokio::test]
    async fn failed_batch_entries_are_resent_alone() {
        // First call: entry 3 fails (a server fault); the resend must carry exactly that entry.
        let first = mock!(aws_sdk_sqs::Client::send_message_batch)
            .match_requests(|r| r.entries().len() == 10)
            .then_output(|| {
                SendMessageBatchOutput::builder()
                    .set_successful(Some(
                        (0..10)
                            .filter(|i| *i != 3)
                            .map(|i| ok_entry(&i.to_string()))
                            .collect(),
                    ))
                    .failed(failed_entry("3", false))
                    .build()
                    .unwrap()
            });
        let resend = mock!(aws_sdk_sqs::Client::send_message_batch)
            .match_requests(|r| {
                r.entries().len() == 1
                    && r.entries()[0].id() == "3"
                    && r.entries()[0].message_body() == "body-3"
            })
            .then_output(|| {
                SendMessageBatchOutput::builder()
                    .successful(ok_entry("3"))
                    .set_failed(Some(vec![]))
                    .build()
                    .unwrap()
            });
        let client = mock_client!(aws_sdk_sqs, RuleMode::Sequential, [&first, &resend]);
        let queue = SqsQueue::new(client, "https://sqs.local/q");
        let bodies: Vec<String> = (0..10).map(|i| format!("body-{i}")).collect();
        assert_eq!(queue.send_batch(&bodies).await.unwrap(), vec![]);
        assert_eq!(first.num_calls(), 1);
        assert_eq!(resend.num_calls(), 1);
    }

    #[tokio::test]
    async fn sender_faults_are_not_resent() {
        let rejected = mock!(aws_sdk_sqs::Client::send_message_batch).then_output(|| {
            SendMessageBatchOutput::builder()
                .successful(ok_entry("0"))
                .failed(failed_entry("1", true))
                .build()
                .unwrap()
        });
        let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&rejected]);
        let queue = SqsQueue::new(client, "https://sqs.local/q");
        let refused = queue
            .send_batch(&["a".to_string(), "b".to_string()])
            .await
            .unwrap();
        assert_eq!(
            refused,
            vec![(1, "InvalidParameterValue: injected".to_string())]
        );
        assert_eq!(rejected.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_body_that_spoils_the_whole_batch_is_found_and_the_others_sent() {
        use aws_sdk_sqs::error::ErrorMetadata;
        use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchError;
        let invalid = || {
            SendMessageBatchError::generic(
                ErrorMetadata::builder()
                    .code("InvalidParameterValue")
                    .message("Message must be shorter than 1024 bytes.")
                    .build(),
            )
        };
        let whole = mock!(aws_sdk_sqs::Client::send_message_batch)
            .match_requests(|r| r.entries().len() == 3)
            .then_error(invalid);
        let alone_bad = mock!(aws_sdk_sqs::Client::send_message_batch)
            .match_requests(|r| r.entries().len() == 1 && r.entries()[0].message_body() == "huge")
            .then_error(invalid);
        let alone_ok = mock!(aws_sdk_sqs::Client::send_message_batch)
            .match_requests(|r| r.entries().len() == 1 && r.entries()[0].message_body() != "huge")
            .then_output(|| {
                SendMessageBatchOutput::builder()
                    .set_successful(Some(vec![]))
                    .set_failed(Some(vec![]))
                    .build()
                    .unwrap()
            });
        let client = mock_client!(
            aws_sdk_sqs,
            RuleMode::MatchAny,
            [&whole, &alone_bad, &alone_ok]
        );
        let queue = SqsQueue::new(client, "https://sqs.local/q");
        let bodies = ["a", "huge", "c"].map(String::from);
        let refused = queue.send_batch(&bodies).await.unwrap();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, 1);
        assert!(
            refused[0].1.contains("InvalidParameterValue"),
            "{refused:?}"
        );
        assert_eq!(
            (
                whole.num_calls(),
                alone_bad.num_calls(),
                alone_ok.num_calls()
            ),
            (1, 1, 2),
            "the batch once, then each body alone, none retried"
        );
    }
}
