//! The work queue and its dead-letter queue in virtual time, with SQS's semantics as the
//! pipeline meets them: delays, a visibility timeout per receive, receipt handles that a later
//! receive makes stale, `maxReceiveCount` (the receive past it moves the message to the DLQ),
//! the retention period, and a count of every request by operation.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::message::WorkMessage;
use shared::queue::{QueueError, Refused, SEND_BATCH_MAX, WorkQueue};
use shared::worker::InboundRecord;
use tokio::time::Instant;

/// SQS's settings that the simulation follows.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub visibility_timeout: Duration,
    pub max_receive_count: u32,
    pub retention: Duration,
    /// Messages marked `gathered` go to the read-back queue (its own event source), which
    /// shares this one's settings and dead-letter queue.
    pub read_back_queue: bool,
}

/// The work queue's messages, or the read-back queue's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Work = 0,
    ReadBack = 1,
}

#[derive(Debug)]
struct Message {
    body: String,
    receive_count: u32,
    sent_at: Instant,
    /// Bumped by every receive and visibility change: a heap entry or receipt handle of an
    /// older generation is stale.
    generation: u32,
    lane: Lane,
}

/// A dead letter: the body and how often it was received.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub body: String,
    pub receive_count: u32,
}

#[derive(Debug, Default)]
struct State {
    messages: HashMap<u64, Message>,
    /// Per lane, (visible at, message id, generation): the next message to become visible
    /// first.
    visible: [BinaryHeap<Reverse<(Instant, u64, u32)>>; 2],
    next_id: u64,
    dead: Vec<DeadLetter>,
    expired: u64,
    requests: BTreeMap<&'static str, u64>,
    /// Messages sent over the run (the lister's and the worker's deferrals).
    sent: u64,
}

/// The work queue, shared by the lister, the workers and the event source.
#[derive(Debug, Clone)]
pub struct SimQueue {
    state: Arc<Mutex<State>>,
    settings: Arc<QueueSettings>,
    arrived: Arc<tokio::sync::Notify>,
}

impl SimQueue {
    pub fn new(settings: QueueSettings) -> Self {
        Self {
            state: Arc::default(),
            settings: Arc::new(settings),
            arrived: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, state: &mut State, body: String, delay: Duration, lane: Lane) {
        let now = Instant::now();
        let id = state.next_id;
        state.next_id += 1;
        state.sent += 1;
        state.messages.insert(
            id,
            Message {
                body,
                receive_count: 0,
                sent_at: now,
                generation: 0,
                lane,
            },
        );
        state.visible[lane as usize].push(Reverse((now + delay, id, 0)));
    }

    /// Messages in the queue: visible, in flight or delayed.
    pub fn depth(&self) -> usize {
        self.lock().messages.len()
    }

    /// Messages of one lane: visible, in flight or delayed.
    pub fn depth_of(&self, lane: Lane) -> usize {
        self.lock()
            .messages
            .values()
            .filter(|m| m.lane == lane)
            .count()
    }

    /// When the lane's next message becomes visible (`None`: the lane is empty).
    fn next_visible(&self, lane: Lane) -> Option<Instant> {
        let mut s = self.lock();
        while let Some(Reverse((at, id, generation))) = s.visible[lane as usize].peek().copied() {
            if s.messages
                .get(&id)
                .is_some_and(|m| m.generation == generation)
            {
                return Some(at);
            }
            s.visible[lane as usize].pop();
        }
        None
    }

    /// One ReceiveMessage of up to `max` visible messages. Each is invisible for the
    /// visibility timeout; one received more often than `maxReceiveCount` allows is moved to
    /// the DLQ instead, one past the retention period is dropped.
    pub fn receive(&self, max: usize) -> Vec<InboundRecord> {
        self.receive_from(Lane::Work, max)
    }

    /// [`SimQueue::receive`] from one lane.
    pub fn receive_from(&self, lane: Lane, max: usize) -> Vec<InboundRecord> {
        let heap = lane as usize;
        let now = Instant::now();
        let settings = &self.settings;
        let mut s = self.lock();
        *s.requests.entry("sqs:ReceiveMessage").or_default() += 1;
        let mut out = Vec::new();
        while out.len() < max {
            let Some(Reverse((at, id, generation))) = s.visible[heap].peek().copied() else {
                break;
            };
            if at > now {
                break;
            }
            s.visible[heap].pop();
            let Some(m) = s.messages.get_mut(&id) else {
                continue;
            };
            if m.generation != generation {
                continue;
            }
            if now.duration_since(m.sent_at) > settings.retention {
                s.messages.remove(&id);
                s.expired += 1;
                continue;
            }
            if m.receive_count >= settings.max_receive_count {
                let m = s.messages.remove(&id).expect("just found");
                s.dead.push(DeadLetter {
                    body: m.body,
                    receive_count: m.receive_count,
                });
                continue;
            }
            m.receive_count += 1;
            m.generation += 1;
            let record = InboundRecord {
                message_id: id.to_string(),
                body: m.body.clone(),
                receive_count: m.receive_count,
                receipt_handle: format!("{id}:{}", m.generation),
                from_read_back_queue: false,
            };
            let generation = m.generation;
            s.visible[heap].push(Reverse((now + settings.visibility_timeout, id, generation)));
            out.push(record);
        }
        out
    }

    /// Waits until a message may be visible, up to `at_most` (a long poll).
    pub async fn wait_for_messages(&self, at_most: Duration) {
        self.wait_for(Lane::Work, at_most).await;
    }

    /// [`SimQueue::wait_for_messages`] of one lane.
    pub async fn wait_for(&self, lane: Lane, at_most: Duration) {
        let until = Instant::now() + at_most;
        let wake = self.next_visible(lane).map_or(until, |at| at.min(until));
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = self.arrived.notified() => {}
        }
    }

    /// DeleteMessageBatch of the messages these handles name (10 per call).
    pub fn delete(&self, handles: &[&str]) {
        let mut s = self.lock();
        *s.requests.entry("sqs:DeleteMessageBatch").or_default() +=
            handles.len().div_ceil(SEND_BATCH_MAX) as u64;
        for handle in handles {
            if let Some((id, generation)) = parse_handle(handle)
                && s.messages
                    .get(&id)
                    .is_some_and(|m| m.generation == generation)
            {
                s.messages.remove(&id);
            }
        }
    }

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.lock().dead.clone()
    }

    pub fn expired(&self) -> u64 {
        self.lock().expired
    }

    pub fn sent(&self) -> u64 {
        self.lock().sent
    }

    pub fn requests(&self) -> BTreeMap<&'static str, u64> {
        self.lock().requests.clone()
    }
}

impl SimQueue {
    fn lane_of(&self, message: &WorkMessage) -> Lane {
        if self.settings.read_back_queue && message.gathered {
            Lane::ReadBack
        } else {
            Lane::Work
        }
    }
}

fn parse_handle(handle: &str) -> Option<(u64, u32)> {
    let (id, generation) = handle.split_once(':')?;
    Some((id.parse().ok()?, generation.parse().ok()?))
}

impl WorkQueue for SimQueue {
    async fn enqueue(&self, messages: &[WorkMessage]) -> Result<Vec<Refused>, QueueError> {
        {
            let mut s = self.lock();
            *s.requests.entry("sqs:SendMessageBatch").or_default() +=
                messages.len().div_ceil(SEND_BATCH_MAX) as u64;
            for m in messages {
                self.send(&mut s, m.to_body(), Duration::ZERO, self.lane_of(m));
            }
        }
        self.arrived.notify_waiters();
        Ok(Vec::new())
    }

    async fn send_delayed_batch(
        &self,
        entries: &[(WorkMessage, Duration)],
    ) -> Result<Vec<Option<String>>, QueueError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut s = self.lock();
        *s.requests.entry("sqs:SendMessageBatch").or_default() += 1;
        for (m, delay) in entries {
            let lane = self.lane_of(m);
            self.send(
                &mut s,
                m.to_body(),
                (*delay).min(shared::queue::MAX_DELAY),
                lane,
            );
        }
        Ok(vec![None; entries.len()])
    }

    async fn return_after(
        &self,
        entries: &[(&str, Duration)],
    ) -> Result<Vec<Option<String>>, QueueError> {
        let now = Instant::now();
        let mut s = self.lock();
        *s.requests
            .entry("sqs:ChangeMessageVisibilityBatch")
            .or_default() += entries.len().div_ceil(SEND_BATCH_MAX) as u64;
        let mut answers = Vec::with_capacity(entries.len());
        for (handle, delay) in entries {
            let found = parse_handle(handle).and_then(|(id, generation)| {
                let m = s.messages.get_mut(&id)?;
                (m.generation == generation).then(|| {
                    m.generation += 1;
                    (id, m.generation, m.lane)
                })
            });
            match found {
                Some((id, generation, lane)) => {
                    s.visible[lane as usize].push(Reverse((now + *delay, id, generation)));
                    answers.push(None);
                }
                None => answers.push(Some("ReceiptHandleIsInvalid".to_string())),
            }
        }
        Ok(answers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> SimQueue {
        SimQueue::new(QueueSettings {
            visibility_timeout: Duration::from_secs(900),
            max_receive_count: 2,
            retention: Duration::from_secs(3600),
            read_back_queue: false,
        })
    }

    fn message(id: &str) -> WorkMessage {
        shared::worker::parse_body(&format!(r#"{{"v":1,"public_id":"{id}"}}"#)).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_comes_back_after_its_visibility_timeout_and_is_dead_lettered_past_the_receive_count()
     {
        let q = queue();
        q.enqueue(&[message("a")]).await.unwrap();
        let first = q.receive(10);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].receive_count, 1);
        assert!(q.receive(10).is_empty(), "invisible while in flight");
        tokio::time::advance(Duration::from_secs(901)).await;
        let second = q.receive(10);
        assert_eq!(second[0].receive_count, 2);
        q.delete(&[first[0].receipt_handle.as_str()]);
        assert_eq!(q.depth(), 1, "a stale handle deletes nothing");
        tokio::time::advance(Duration::from_secs(901)).await;
        assert!(q.receive(10).is_empty());
        assert_eq!(q.dead_letters().len(), 1, "the third receive moved it");
        assert_eq!(q.depth(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn delays_returns_and_retention() {
        let q = queue();
        q.send_delayed_batch(&[(message("late"), Duration::from_secs(60))])
            .await
            .unwrap();
        assert!(q.receive(10).is_empty());
        tokio::time::advance(Duration::from_secs(60)).await;
        let got = q.receive(10);
        assert_eq!(got.len(), 1);
        let handle = got[0].receipt_handle.as_str();
        assert_eq!(q.return_now(&[handle]).await.unwrap(), vec![None]);
        assert_eq!(q.receive(10).len(), 1, "visible again at once");
        assert_eq!(
            q.return_now(&[handle]).await.unwrap(),
            vec![Some("ReceiptHandleIsInvalid".into())]
        );
        q.enqueue(&[message("old")]).await.unwrap();
        tokio::time::advance(Duration::from_secs(3601)).await;
        assert_eq!(q.receive(10).len(), 0);
        assert_eq!(q.expired(), 2, "past the retention period");
    }
}
