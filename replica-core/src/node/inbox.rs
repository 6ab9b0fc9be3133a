//! The core task's inbox: many senders, one receiver that takes a turn's inputs at once.
//!
//! Why not `tokio::sync::mpsc`: the core takes its inputs in turns and, under load, looks
//! for more many times between turns (`Config::idle_polls`) — several polls per write in
//! `replica-bench`. Each time tokio's receiver found its channel empty it registered the
//! task's waker again, and its `AtomicWaker` clones the new waker and drops the old one
//! even when both wake the same task: two atomic updates of the task's reference count,
//! which its other worker thread also touches, on every poll (15% of the samples at
//! `-c 256`, with the registration itself). A send cost four atomic updates (a permit, the
//! slot, its ready bit, the wake-up) and each input taken two more.
//!
//! Here the queue is a `Vec` behind a mutex: a send is a lock, a push and an unlock, and
//! wakes the receiver only when it made the queue non-empty (the receiver looks at the queue
//! before it sleeps, so a later send finds it non-empty only while a wake-up is owed or the
//! receiver is already going to look); the receiver takes everything in one lock, swapping
//! buffers, finds an empty queue by reading its length without the lock, and registers its
//! waker only then, with an `AtomicWaker` that keeps the registered waker when the new one
//! wakes the same task.
//!
//! Invariants: a receiver that returns `Pending` registered its waker before it last saw the
//! queue empty and senders alive, so the send that makes the queue non-empty, or the drop of
//! the last sender, wakes it; items come out in the order their sends took the lock; once the
//! receiver is dropped every send fails and gives its item back, and what was queued is dropped
//! (so callers waiting on a reply see the node stop).

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

struct Queue<T> {
    items: Vec<T>,
    /// The receiver is alive.
    open: bool,
}

struct Shared<T> {
    queue: Mutex<Queue<T>>,
    waker: AtomicWaker,
    /// `queue.items.len()`, written under the lock and read without it: a core that polls
    /// an empty inbox (many times per write, under load) reads this instead of taking the
    /// lock, whose cache line the senders on other threads keep writing.
    len: AtomicUsize,
    /// Live (strong) senders; at zero, and once the queue is empty, the receiver sees the end.
    senders: AtomicUsize,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        // Nothing panics while the lock is held but an allocation failure; the queue stays
        // consistent either way.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A new inbox.
pub(crate) fn inbox<T>() -> (InboxSender<T>, Inbox<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: Vec::new(),
            open: true,
        }),
        waker: AtomicWaker::new(),
        len: AtomicUsize::new(0),
        senders: AtomicUsize::new(1),
    });
    (InboxSender(shared.clone()), Inbox(shared))
}

/// Queues inputs for the core. Cheap to clone.
pub(crate) struct InboxSender<T>(Arc<Shared<T>>);

impl<T> InboxSender<T> {
    /// Queue `item`; gives it back if the receiver is gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        let mut queue = self.0.lock();
        if !queue.open {
            return Err(item);
        }
        let was_empty = queue.items.is_empty();
        queue.items.push(item);
        self.0.len.store(queue.items.len(), Ordering::Release);
        drop(queue);
        if was_empty {
            self.0.waker.wake();
        }
        Ok(())
    }

    /// Whether the receiver is gone.
    pub(crate) fn is_closed(&self) -> bool {
        !self.0.lock().open
    }

    /// A sender that does not keep the inbox open.
    pub(crate) fn downgrade(&self) -> WeakInboxSender<T> {
        WeakInboxSender(self.0.clone())
    }
}

impl<T> Clone for InboxSender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        InboxSender(self.0.clone())
    }
}

impl<T> Drop for InboxSender<T> {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.waker.wake();
        }
    }
}

/// A sender that does not keep the inbox open: [`WeakInboxSender::upgrade`] fails once every
/// [`InboxSender`] is gone.
pub(crate) struct WeakInboxSender<T>(Arc<Shared<T>>);

impl<T> WeakInboxSender<T> {
    pub(crate) fn upgrade(&self) -> Option<InboxSender<T>> {
        let mut senders = self.0.senders.load(Ordering::Relaxed);
        loop {
            if senders == 0 {
                return None;
            }
            match self.0.senders.compare_exchange_weak(
                senders,
                senders + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(InboxSender(self.0.clone())),
                Err(now) => senders = now,
            }
        }
    }
}

/// The core's end.
pub(crate) struct Inbox<T>(Arc<Shared<T>>);

impl<T> Inbox<T> {
    /// Move queued items to the end of `into` until it holds `max`; returns how many moved.
    ///
    /// Buffers hold at most `max` items' worth for long: after a burst, the queue's grown
    /// buffer comes to the receiver in a swap, and the next swap leaves a fresh one in its
    /// place instead of handing it back, so a moment of backlog does not pin its memory.
    pub(crate) fn try_take(&mut self, into: &mut Vec<T>, max: usize) -> usize {
        let room = max.saturating_sub(into.len());
        // A stale zero only delays an item to the next look: `poll_take` registers before it
        // looks again, and the send that made the queue non-empty wakes it after the store.
        if room == 0 || self.0.len.load(Ordering::Acquire) == 0 {
            return 0;
        }
        if into.is_empty() && into.capacity() > max {
            *into = Vec::new();
        }
        let mut queue = self.0.lock();
        let n = queue.items.len().min(room);
        if into.is_empty() && n == queue.items.len() {
            // The usual case: take the whole queue, leave our (empty) buffer in its place.
            std::mem::swap(&mut queue.items, into);
        } else {
            into.extend(queue.items.drain(..n));
        }
        self.0.len.store(queue.items.len(), Ordering::Release);
        n
    }

    /// Like [`Inbox::try_take`], but waits until at least one item moved. `Ready(0)`: every
    /// sender is gone and the queue is empty. `into` must hold fewer than `max` items.
    pub(crate) fn poll_take(
        &mut self,
        cx: &mut Context<'_>,
        into: &mut Vec<T>,
        max: usize,
    ) -> Poll<usize> {
        debug_assert!(into.len() < max, "no room to take into");
        let n = self.try_take(into, max);
        if n > 0 {
            return Poll::Ready(n);
        }
        // Register, then look again: a send after the look finds the queue empty and wakes us.
        self.0.waker.register(cx.waker());
        let n = self.try_take(into, max);
        if n > 0 {
            return Poll::Ready(n);
        }
        if self.0.senders.load(Ordering::Acquire) == 0 {
            // The last sender's items, if any, were queued before its drop.
            return Poll::Ready(self.try_take(into, max));
        }
        Poll::Pending
    }

    /// Wait until at least one item moved into `into` (see [`Inbox::poll_take`]).
    pub(crate) async fn take(&mut self, into: &mut Vec<T>, max: usize) -> usize {
        poll_fn(|cx| self.poll_take(cx, into, max)).await
    }
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        let items = {
            let mut queue = self.0.lock();
            queue.open = false;
            std::mem::take(&mut queue.items)
        };
        // Outside the lock: dropping an item may wake a task waiting on its reply.
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn items_come_out_in_order_and_at_most_max_at_a_time() {
        let (tx, mut rx) = inbox();
        for i in 0..10 {
            tx.send(i).unwrap();
        }
        let mut got = Vec::new();
        assert_eq!(rx.try_take(&mut got, 4), 4);
        assert_eq!(got, [0, 1, 2, 3]);
        assert_eq!(rx.try_take(&mut got, 4), 0, "full: nothing moves");
        assert_eq!(rx.try_take(&mut got, 7), 3);
        assert_eq!(got, [0, 1, 2, 3, 4, 5, 6]);
        got.clear();
        assert_eq!(rx.try_take(&mut got, 100), 3);
        assert_eq!(got, [7, 8, 9]);
        assert_eq!(rx.try_take(&mut got, 100), 0);
    }

    #[test]
    fn a_burst_does_not_pin_its_memory() {
        const MAX: usize = 64;
        let (tx, mut rx) = inbox();
        for i in 0..10 * MAX {
            tx.send(i).unwrap();
        }
        let mut got = Vec::new();
        let mut taken = 0;
        while rx.try_take(&mut got, MAX) > 0 {
            taken += got.len();
            got.clear();
        }
        assert_eq!(taken, 10 * MAX);
        // Ordinary turns afterwards: both buffers come back down to a turn's size.
        for _ in 0..2 {
            tx.send(0).unwrap();
            assert_eq!(rx.try_take(&mut got, MAX), 1);
            got.clear();
        }
        assert!(
            got.capacity() <= MAX,
            "receiver's buffer: {}",
            got.capacity()
        );
        let queued = rx.0.lock().items.capacity();
        assert!(queued <= MAX, "queue's buffer: {queued}");
    }

    #[test]
    fn the_inbox_ends_when_the_last_sender_goes_after_its_items() {
        let (tx, mut rx) = inbox();
        let tx2 = tx.clone();
        tx.send(1).unwrap();
        drop(tx);
        let mut got = Vec::new();
        assert_eq!(rx.take(&mut got, 10).now_or_never(), Some(1));
        assert!(
            rx.take(&mut got, 10).now_or_never().is_none(),
            "a sender is left: wait"
        );
        tx2.send(2).unwrap();
        drop(tx2);
        assert_eq!(rx.take(&mut got, 10).now_or_never(), Some(1));
        assert_eq!(got, [1, 2]);
        assert_eq!(rx.take(&mut got, 10).now_or_never(), Some(0), "the end");
    }

    #[test]
    fn a_weak_sender_does_not_keep_the_inbox_open() {
        let (tx, mut rx) = inbox::<u32>();
        let weak = tx.downgrade();
        let strong = weak.upgrade().unwrap();
        strong.send(7).unwrap();
        drop(strong);
        drop(tx);
        assert!(weak.upgrade().is_none());
        let mut got = Vec::new();
        assert_eq!(rx.take(&mut got, 10).now_or_never(), Some(1));
        assert_eq!(rx.take(&mut got, 10).now_or_never(), Some(0));
    }

    #[test]
    fn sends_fail_and_queued_items_drop_once_the_receiver_is_gone() {
        let (tx, rx) = inbox();
        let (reply, waiting) = tokio::sync::oneshot::channel::<()>();
        tx.send(reply).unwrap();
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        let (reply2, _waiting2) = tokio::sync::oneshot::channel::<()>();
        assert!(tx.send(reply2).is_err());
        assert!(
            waiting.now_or_never().unwrap().is_err(),
            "the queued reply was dropped"
        );
    }

    /// Senders on other threads, each waiting for the answer to one item before it sends the
    /// next, so the receiver keeps finding the queue empty and sleeping: every item arrives, in
    /// each sender's order, and no wake-up is lost (the senders stay alive throughout, so only
    /// their sends can wake the receiver; a lost one stalls the test into its timeout).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sleeping_receiver_is_woken_by_senders_on_other_threads() {
        const SENDERS: u64 = 4;
        const EACH: u64 = 5_000;
        type Item = (u64, u64, tokio::sync::oneshot::Sender<()>);
        let (tx, mut rx) = inbox::<Item>();
        let mut senders = Vec::new();
        for s in 0..SENDERS {
            let tx = tx.clone();
            senders.push(tokio::spawn(async move {
                for i in 0..EACH {
                    let (answer, answered) = tokio::sync::oneshot::channel();
                    if tx.send((s, i, answer)).is_err() {
                        return false;
                    }
                    if answered.await.is_err() {
                        return false;
                    }
                }
                true
            }));
        }
        let mut next = vec![0; SENDERS as usize];
        let mut got = Vec::new();
        let outcome = tokio::time::timeout(Duration::from_secs(60), async {
            while next.iter().any(|&n| n < EACH) {
                assert!(rx.take(&mut got, 100).await > 0, "senders are alive");
                for (s, i, answer) in got.drain(..) {
                    assert_eq!(next[s as usize], i, "sender {s} out of order");
                    next[s as usize] += 1;
                    let _ = answer.send(());
                }
            }
        })
        .await;
        assert!(outcome.is_ok(), "a wake-up was lost");
        for sender in senders {
            assert!(sender.await.unwrap());
        }
        drop(tx);
        assert_eq!(rx.take(&mut got, 100).await, 0, "the last sender is gone");
    }
}
