//! Group commit: the claims (and the results) that a batch's records reach at about the same
//! time go to the store together, in one request where the store can batch them. The first
//! record of a group waits a moment for the others, writes for all of them, and hands each its
//! answer; a record whose group was dropped before it answered (the invocation given up) gets
//! none, and writes on its own.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

/// One group in the making.
pub(super) struct Group<T, R> {
    pending: Mutex<Vec<(T, oneshot::Sender<R>)>>,
    /// How long the first of a group waits for more, once the records that were ready have
    /// joined.
    window: Duration,
    /// The most one flush takes (the store's batch limit).
    max: usize,
    /// Records that may still join (see [`Group::expect`]): once all of them have, the first
    /// waits no longer.
    expected: AtomicUsize,
    /// Told when an item joins or an expected record leaves.
    changed: Notify,
}

/// A record that may join the group until it is dropped.
pub(super) struct Expected<'a, T, R>(&'a Group<T, R>);

impl<T, R> Drop for Expected<'_, T, R> {
    fn drop(&mut self) {
        self.0.expected.fetch_sub(1, Ordering::Relaxed);
        self.0.changed.notify_one();
    }
}

/// Empties the group when its first record stops waiting without flushing: the others then
/// get no answer, and write on their own.
struct Abandon<'a, T, R>(&'a Group<T, R>, bool);

impl<T, R> Drop for Abandon<'_, T, R> {
    fn drop(&mut self) {
        if !self.1 {
            drop(self.0.take());
        }
    }
}

impl<T, R> Group<T, R> {
    pub fn new(window: Duration, max: usize) -> Self {
        Self {
            pending: Mutex::new(Vec::new()),
            window,
            max: max.max(1),
            expected: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    /// Counts a record that may join the group until the guard is dropped (a record that has
    /// joined still counts until then).
    pub fn expect(&self) -> Expected<'_, T, R> {
        self.expected.fetch_add(1, Ordering::Relaxed);
        Expected(self)
    }

    /// Whether the group need not wait for more: full, or everyone expected has joined.
    fn complete(&self) -> bool {
        let joined = self.len();
        joined >= self.max || joined >= self.expected.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(T, oneshot::Sender<R>)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> Vec<(T, oneshot::Sender<R>)> {
        let mut pending = self.lock();
        let n = pending.len().min(self.max);
        pending.drain(..n).collect()
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Adds `item` to the group; `flush` writes a group (at most the batch limit) and answers
    /// for each of its items, in order. `None`: the group was abandoned, or its flush did not
    /// answer for this item.
    pub async fn submit<F, Fut>(&self, item: T, flush: F) -> Option<R>
    where
        F: Fn(Vec<T>) -> Fut,
        Fut: Future<Output = Vec<R>>,
    {
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut pending = self.lock();
            pending.push((item, tx));
            pending.len() == 1
        };
        if !first {
            self.changed.notify_one();
            return rx.await.ok();
        }
        let mut guard = Abandon(self, false);
        // The records that are ready join while the others run on: each yield lets the rest
        // of the batch reach this point.
        let mut joined = 0;
        while self.len() != joined && self.len() < self.max {
            joined = self.len();
            tokio::task::yield_now().await;
        }
        if !self.window.is_zero() {
            let until = tokio::time::Instant::now() + self.window;
            while !self.complete() {
                tokio::select! {
                    _ = self.changed.notified() => {}
                    _ = tokio::time::sleep_until(until) => break,
                }
            }
        }
        // This call's own item is in the first flush; whatever is left over the batch limit, or
        // joined during a flush, goes in the next.
        loop {
            let group = self.take();
            if group.is_empty() {
                break;
            }
            let (items, senders): (Vec<T>, Vec<oneshot::Sender<R>>) = group.into_iter().unzip();
            let answers = flush(items).await;
            if answers.len() == senders.len() {
                for (answer, tx) in answers.into_iter().zip(senders) {
                    let _ = tx.send(answer);
                }
            }
        }
        guard.1 = true;
        // Its own item may have been taken by an earlier first still flushing (what joins
        // during a flush goes in that first's next one): its answer comes from there.
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A group that records each flush and answers each item with itself doubled.
    fn flusher(
        log: &Arc<Mutex<Vec<Vec<u32>>>>,
    ) -> impl Fn(Vec<u32>) -> std::future::Ready<Vec<u32>> {
        let log = log.clone();
        move |items: Vec<u32>| {
            log.lock().unwrap().push(items.clone());
            std::future::ready(items.iter().map(|i| i * 2).collect())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn items_ready_within_the_window_flush_together_and_later_ones_apart() {
        let group: Group<u32, u32> = Group::new(Duration::from_millis(20), 25);
        let log = Arc::new(Mutex::new(Vec::new()));
        let expected: Vec<_> = (0..3).map(|_| group.expect()).collect();
        let at = |ms: u64, item: u32| {
            let (group, flush) = (&group, flusher(&log));
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                group.submit(item, flush).await
            }
        };
        let started = tokio::time::Instant::now();
        let answers = tokio::join!(at(0, 1), at(10, 2), at(50, 3));
        assert_eq!(answers, (Some(2), Some(4), Some(6)));
        assert_eq!(*log.lock().unwrap(), vec![vec![1, 2], vec![3]]);
        // The last one waited its window: one of the three had not come yet.
        assert_eq!(started.elapsed(), Duration::from_millis(70));
        drop(expected);
    }

    /// A first whose item an earlier first took into its next flush (having flushed its own
    /// group while the second waited its window) waits for that flush's answer.
    #[tokio::test(start_paused = true)]
    async fn an_item_taken_by_an_earlier_flush_gets_that_flush_s_answer() {
        let group: Group<u32, u32> = Group::new(Duration::from_millis(20), 25);
        let _expected: Vec<_> = (0..3).map(|_| group.expect()).collect();
        let flushes = Arc::new(Mutex::new(Vec::new()));
        let flush = |items: Vec<u32>| {
            let flushes = flushes.clone();
            async move {
                let n = {
                    let mut log = flushes.lock().unwrap();
                    log.push(items.clone());
                    log.len()
                };
                // The first flush is quick, the second outlasts the later first's window.
                let ms = if n == 1 { 10 } else { 30 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                items.iter().map(|i| i * 2).collect::<Vec<_>>()
            }
        };
        let at = |ms: u64, item: u32| {
            let group = &group;
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                group.submit(item, flush).await
            }
        };
        // 1 flushes alone at 20 ms until 30; 2 joins at 25 (a first: the group was empty)
        // and waits until 45; the first flush's next one takes 2 at 30 and answers at 60.
        let answers = tokio::join!(at(0, 1), at(25, 2));
        assert_eq!(answers, (Some(2), Some(4)));
        assert_eq!(*flushes.lock().unwrap(), vec![vec![1], vec![2]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_stops_waiting_once_everyone_expected_has_joined() {
        let group: Group<u32, u32> = Group::new(Duration::from_secs(10), 25);
        let log = Arc::new(Mutex::new(Vec::new()));
        let _a = group.expect();
        let b = group.expect();
        let started = tokio::time::Instant::now();
        let first = group.submit(1, flusher(&log));
        let leave = async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            // The other record ends without a result.
            drop(b);
        };
        let (answer, ()) = tokio::join!(first, leave);
        assert_eq!(answer, Some(2));
        assert_eq!(started.elapsed(), Duration::from_millis(5));
        assert_eq!(*log.lock().unwrap(), vec![vec![1]]);
    }

    #[tokio::test(start_paused = true)]
    async fn more_than_the_limit_flushes_in_several_groups() {
        let group: Group<u32, u32> = Group::new(Duration::ZERO, 2);
        let log = Arc::new(Mutex::new(Vec::new()));
        let submits = (1..=5).map(|i| group.submit(i, flusher(&log)));
        let answers = futures::future::join_all(submits).await;
        assert_eq!(answers, vec![Some(2), Some(4), Some(6), Some(8), Some(10)]);
        assert_eq!(*log.lock().unwrap(), vec![vec![1, 2], vec![3, 4], vec![5]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_whose_first_is_dropped_leaves_the_others_to_write_alone() {
        let group: Group<u32, u32> = Group::new(Duration::from_secs(1), 25);
        let log = Arc::new(Mutex::new(Vec::new()));
        let _expected: Vec<_> = (0..3).map(|_| group.expect()).collect();
        let first = group.submit(1, flusher(&log));
        let second = group.submit(2, flusher(&log));
        let dropped = tokio::time::timeout(Duration::from_millis(10), first);
        let (first, second) = tokio::join!(dropped, second);
        assert!(first.is_err(), "the first was given up while it waited");
        assert_eq!(second, None, "no answer: its group was abandoned");
        assert!(log.lock().unwrap().is_empty(), "nothing was flushed");
    }
}
