//! A client's outbox: the queue of lines waiting to be written to its socket, and the flow
//! control that keeps it bounded without dropping anyone who keeps reading.
//!
//! Every delivery first asks [`Outbox::backlog`] whether the recipient is congested (more than
//! its soft bound queued). If it is, the line is not pushed: the *sender* is paced — it waits,
//! not reading its own socket, so TCP holds the sending client back — until the recipient has
//! drained to half its bound. A recipient that drains too slowly to be worth waiting for is
//! disconnected instead (see [`Backlog`]). Since the check and the push happen under the hub's
//! one lock, a paced delivery can take a queue over its soft bound by one item at most; lines
//! that cannot wait (a leave notice, the host's notices, a farewell) may go on to twice the soft
//! bound, the hard cap, past which the recipient is disconnected as too slow.
//!
//! The queue is a `VecDeque` behind a small mutex rather than a channel: the writer takes every
//! queued line in one swap, and an idle client holds no queue block at all.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use futures_lite::FutureExt;
use smol::Timer;

use crate::event::LeaveReason;
use crate::Config;

/// A queued item: a line's bytes, the same allocation for every recipient of the line.
pub(crate) type Item = Arc<[u8]>;

/// Bytes a socket may take in one go: the kernel queues a write as a segment of up to 64 KiB
/// and frees room for the next only as the client reads most of it, so a client reading at a
/// steady modest rate shows its progress in steps this big. The drain-rate judgement allows
/// for one.
const GRAIN: u64 = 64 * 1024;

/// How long a congested client's drain rate is measured before it is trusted.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// How often a paced sender looks at its recipient again between wake-ups.
const RECHECK: Duration = Duration::from_millis(250);

/// How often a congested client's writer tries its socket again without waiting for it to
/// report itself writable: the kernel reports that only once a third of its send buffer is
/// free, which with the megabytes TCP autotunes a buffer to takes seconds at a modest read
/// rate, and would make a reader that keeps up look stalled. Only congested clients retry, so
/// the cost is bounded by how many hold their senders back.
pub(crate) const RETRY: Duration = Duration::from_millis(100);

/// The sending side, registered in the hub. Cloning shares the same queue.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    shared: Arc<Shared>,
}

/// The receiving side, owned by the client's writer.
#[derive(Debug)]
pub(crate) struct Inbox {
    shared: Arc<Shared>,
}

/// The limits one queue is held to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Soft bound, in lines and bytes (see [`cost`]): past it, senders are paced.
    pub(crate) lines: usize,
    pub(crate) bytes: usize,
    /// Longest a congested recipient may hold its senders back before it is disconnected.
    pub(crate) stall_timeout: Duration,
}

impl From<&Config> for Limits {
    fn from(config: &Config) -> Limits {
        Limits {
            lines: config.queue_lines,
            bytes: config.queue_bytes,
            stall_timeout: config.stall_timeout,
        }
    }
}

impl Limits {
    /// How long a client's socket may take nothing, while lines wait for it, before it counts
    /// as not reading: as long as a client reading at the guaranteed rate
    /// (`bytes / stall_timeout`) may take to free one [`GRAIN`] of kernel buffer, at least a
    /// quarter second and at most `stall_timeout` (half a second with the defaults).
    pub(crate) fn no_progress(&self) -> Duration {
        let grain = GRAIN as f64 / self.bytes.max(1) as f64;
        self.stall_timeout
            .mul_f64(grain)
            .clamp(Duration::from_millis(250), self.stall_timeout)
    }

    /// The slowest drain rate worth waiting for, in bytes per second: half the rate that
    /// empties a full queue within `stall_timeout`.
    pub(crate) fn min_rate(&self) -> u64 {
        let secs = self.stall_timeout.as_secs_f64().max(0.001);
        (self.bytes as f64 / (2.0 * secs)) as u64
    }
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    limits: Limits,
    /// Bytes (by [`cost`]) and lines queued and not yet written; read without the lock by
    /// [`Outbox::backlog`], which runs for every recipient of every line.
    bytes: AtomicUsize,
    lines: AtomicUsize,
    /// Whether a congestion episode is open (mirrors `Queue::episode`, for the lock-free check).
    congested: AtomicBool,
    /// Bytes written since the start, for the drain rate during an episode.
    written: AtomicU64,
    /// When the writer last found the socket full with lines waiting (see [`millis`]);
    /// 0 while writes go through.
    blocked_since: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Item>,
    writer: Option<Waker>,
    closed: bool,
    episode: Option<Episode>,
}

/// One stretch of congestion: from a delivery finding the queue over its bound until the
/// writer drains it to half (or the client leaves).
#[derive(Debug)]
struct Episode {
    since: Instant,
    written_at_start: u64,
    /// Dropped to wake every paced sender at once: a closed channel is a broadcast.
    _wake: Sender<()>,
    waiting: Receiver<()>,
}

/// What a delivery may do about one recipient.
#[derive(Debug)]
pub(crate) enum Backlog {
    /// Room in the queue: deliver.
    Clear,
    /// Congested but draining: hold the sender back until [`Pace::wait`] returns.
    Paced(Pace),
    /// Congested and not draining usefully: disconnect it as too slow.
    TooSlow,
}

/// A sender's ticket to wait for one congested recipient.
#[derive(Debug)]
pub(crate) struct Pace {
    outbox: Outbox,
    since: Instant,
    written_at_start: u64,
    waiting: Receiver<()>,
}

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// Over the hard cap: the client is not keeping up.
    Full,
    /// The client is leaving: its writer takes no more.
    Closed,
}

impl From<PushError> for LeaveReason {
    /// Why a client whose queue refused a line must go.
    fn from(e: PushError) -> LeaveReason {
        match e {
            PushError::Full => LeaveReason::TooSlow,
            PushError::Closed => LeaveReason::Closed,
        }
    }
}

/// A queue held to `limits` (see the module documentation).
pub(crate) fn outbox(limits: Limits) -> (Outbox, Inbox) {
    let shared = Arc::new(Shared {
        queue: Mutex::default(),
        limits,
        bytes: AtomicUsize::new(0),
        lines: AtomicUsize::new(0),
        congested: AtomicBool::new(false),
        written: AtomicU64::new(0),
        blocked_since: AtomicU64::new(0),
    });
    (
        Outbox {
            shared: shared.clone(),
        },
        Inbox { shared },
    )
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn over(&self, lines: usize, bytes: usize) -> bool {
        self.lines.load(Ordering::Relaxed) > lines || self.bytes.load(Ordering::Relaxed) > bytes
    }

    /// Ends the congestion episode, waking every paced sender.
    fn end_episode(&self, queue: &mut Queue) {
        queue.episode = None;
        self.congested.store(false, Ordering::Relaxed);
    }
}

impl Outbox {
    /// Whether a line may be delivered now (see [`Backlog`]); opens a congestion episode when
    /// the queue is over its soft bound. Called under the hub's lock, before any push.
    pub(crate) fn backlog(&self) -> Backlog {
        let shared = &self.shared;
        let limits = &shared.limits;
        if !shared.congested.load(Ordering::Relaxed) && !shared.over(limits.lines, limits.bytes) {
            return Backlog::Clear;
        }
        let now = Instant::now();
        let mut queue = shared.queue();
        if queue.closed {
            return Backlog::Clear;
        }
        if queue.episode.is_none() {
            if !shared.over(limits.lines, limits.bytes) {
                return Backlog::Clear;
            }
            // A client whose socket took nothing for a while before its queue filled is not
            // reading: dropped at once rather than allowed to hold its room back.
            if self.stalled(now) {
                return Backlog::TooSlow;
            }
            let (wake, waiting) = async_channel::bounded(1);
            queue.episode = Some(Episode {
                since: now,
                written_at_start: shared.written.load(Ordering::Relaxed),
                _wake: wake,
                waiting,
            });
            shared.congested.store(true, Ordering::Relaxed);
        }
        let episode = queue.episode.as_ref().expect("an episode was just ensured");
        let pace = Pace {
            outbox: self.clone(),
            since: episode.since,
            written_at_start: episode.written_at_start,
            waiting: episode.waiting.clone(),
        };
        drop(queue);
        match pace.verdict(now) {
            Verdict::TooSlow => Backlog::TooSlow,
            _ => Backlog::Paced(pace),
        }
    }

    /// Whether the socket has accepted nothing for [`Limits::no_progress`] while lines waited:
    /// a client found so when its queue fills is not reading, and holds nobody back.
    fn stalled(&self, now: Instant) -> bool {
        let since = self.shared.blocked_since.load(Ordering::Relaxed);
        let limit = self.shared.limits.no_progress().as_millis() as u64;
        since != 0 && millis(now).saturating_sub(since) >= limit
    }

    /// Queues a line for a recipient that [`backlog`](Self::backlog) found clear, or that
    /// cannot be waited for; refused past the hard cap (twice the soft bound).
    pub(crate) fn push(&self, line: &Arc<str>) -> Result<(), PushError> {
        self.push_item(line.clone().into())
    }

    /// [`push`](Self::push) for bytes that are not text (telnet replies).
    pub(crate) fn push_item(&self, item: Item) -> Result<(), PushError> {
        let limits = &self.shared.limits;
        let hard_lines = (2 * limits.lines).saturating_sub(1);
        if self
            .shared
            .over(hard_lines, (2 * limits.bytes).saturating_sub(cost(&item)))
        {
            return Err(if self.is_closed() {
                PushError::Closed
            } else {
                PushError::Full
            });
        }
        self.force_item(item)
    }

    /// Queues a line whatever the bound: for what a client gets on entering a room (after a
    /// [`backlog`](Self::backlog) check) and the last line before it is closed.
    pub(crate) fn force(&self, line: Arc<str>) -> Result<(), PushError> {
        self.force_item(line.into())
    }

    fn force_item(&self, item: Item) -> Result<(), PushError> {
        let shared = &self.shared;
        let mut queue = shared.queue();
        if queue.closed {
            return Err(PushError::Closed);
        }
        shared.lines.fetch_add(1, Ordering::Relaxed);
        shared.bytes.fetch_add(cost(&item), Ordering::Relaxed);
        queue.items.push_back(item);
        let writer = queue.writer.take();
        drop(queue);
        if let Some(writer) = writer {
            writer.wake();
        }
        Ok(())
    }

    /// Whether the client is leaving.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.queue().closed
    }

    /// Lets the writer finish what is queued, then stop; wakes any sender paced on it.
    pub(crate) fn close(&self) {
        let shared = &self.shared;
        let mut queue = shared.queue();
        queue.closed = true;
        shared.end_episode(&mut queue);
        let writer = queue.writer.take();
        drop(queue);
        if let Some(writer) = writer {
            writer.wake();
        }
    }

    /// Whether two outboxes are the same queue.
    pub(crate) fn same(&self, other: &Outbox) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

/// What a paced sender finds when it looks at its recipient again.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Drained,
    Wait(Instant),
    TooSlow,
}

impl Pace {
    /// The recipient this ticket waits for.
    pub(crate) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    fn verdict(&self, now: Instant) -> Verdict {
        let shared = &self.outbox.shared;
        if !shared.congested.load(Ordering::Relaxed) {
            return Verdict::Drained;
        }
        let limits = &shared.limits;
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= limits.stall_timeout || self.outbox.stalled(now) {
            return Verdict::TooSlow;
        }
        if elapsed >= RATE_WINDOW {
            let drained = shared.written.load(Ordering::Relaxed) - self.written_at_start;
            if limits.min_rate() as f64 * elapsed.as_secs_f64() > (drained + GRAIN) as f64 {
                return Verdict::TooSlow;
            }
        }
        Verdict::Wait((now + RECHECK).min(self.since + limits.stall_timeout))
    }

    /// Waits until the recipient has drained to half its bound or left. `Err` means it is not
    /// draining usefully (see [`Limits::min_rate`]) or held its senders back for the whole
    /// `stall_timeout`: the caller disconnects it.
    pub(crate) async fn wait(&self) -> Result<(), TooSlow> {
        loop {
            match self.verdict(Instant::now()) {
                Verdict::Drained => return Ok(()),
                Verdict::TooSlow => return Err(TooSlow),
                Verdict::Wait(until) => {
                    let woken = async {
                        let _ = self.waiting.recv().await;
                    };
                    woken
                        .or(async {
                            Timer::at(until).await;
                        })
                        .await;
                }
            }
        }
    }
}

/// A paced-for recipient is too slow to keep (see [`Pace::wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooSlow;

impl Inbox {
    /// Takes every queued line, waiting for one if there is none; `None` once the outbox is
    /// closed and empty.
    pub(crate) async fn recv(&mut self) -> Option<VecDeque<Item>> {
        let shared = &self.shared;
        poll_fn(|cx| {
            let mut queue = shared.queue();
            if !queue.items.is_empty() {
                return Poll::Ready(Some(std::mem::take(&mut queue.items)));
            }
            if queue.closed {
                return Poll::Ready(None);
            }
            queue.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Records `bytes` of lines written by one system call, for the drain rate.
    pub(crate) fn wrote(&mut self, bytes: usize) {
        let shared = &self.shared;
        shared.written.fetch_add(bytes as u64, Ordering::Relaxed);
        shared.blocked_since.store(0, Ordering::Relaxed);
    }

    /// Records that the socket is full while lines wait.
    pub(crate) fn blocked(&mut self) {
        let shared = &self.shared;
        if shared.blocked_since.load(Ordering::Relaxed) == 0 {
            shared
                .blocked_since
                .store(millis(Instant::now()).max(1), Ordering::Relaxed);
        }
    }

    /// Records that `lines` taken lines of `bytes` total [`cost`] were written (or never will
    /// be), ending a congestion episode once the queue is down to half its bound.
    pub(crate) fn written(&mut self, lines: usize, bytes: usize) {
        let shared = &self.shared;
        shared.lines.fetch_sub(lines, Ordering::Relaxed);
        shared.bytes.fetch_sub(bytes, Ordering::Relaxed);
        let limits = &shared.limits;
        if shared.congested.load(Ordering::Relaxed)
            && !shared.over(limits.lines / 2, limits.bytes / 2)
        {
            shared.end_episode(&mut shared.queue());
        }
        if shared.lines.load(Ordering::Relaxed) == 0 {
            shared.blocked_since.store(0, Ordering::Relaxed);
        }
    }

    /// Whether senders are being held back for this client (see [`RETRY`]).
    pub(crate) fn is_congested(&self) -> bool {
        self.shared.congested.load(Ordering::Relaxed)
    }

    /// Whether the outbox was closed: what is queued is the last the client gets.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.queue().closed
    }
}

/// What a queued line costs in memory: its text, plus the reference counts of its `Arc`, its
/// slot in the queue and the allocator's header. Counting these keeps the bound honest for
/// short lines.
pub(crate) fn cost(item: &Item) -> usize {
    item.len() + LINE_OVERHEAD
}

/// Bytes of bookkeeping per queued line (see [`cost`]).
pub(crate) const LINE_OVERHEAD: usize = 48;

/// Milliseconds since the first call, for instants kept in atomics.
fn millis(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| at.checked_sub(Duration::from_secs(1)).unwrap_or(at));
    at.saturating_duration_since(epoch).as_millis() as u64
}

/// For tests elsewhere in the crate: a queue of `lines` and `bytes`, and a way to read it.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub(crate) fn outbox(lines: usize, bytes: usize) -> (Outbox, Inbox) {
        super::outbox(Limits {
            lines,
            bytes,
            stall_timeout: Duration::from_secs(2),
        })
    }

    /// Every item queued now, marked written.
    pub(crate) fn items(inbox: &mut Inbox) -> Vec<Item> {
        let mut all = Vec::new();
        while let Some(Some(items)) = smol::block_on(futures_lite::future::poll_once(inbox.recv()))
        {
            inbox.written(items.len(), items.iter().map(cost).sum());
            all.extend(items);
        }
        all
    }

    /// Everything queued now, as text, marked written.
    pub(crate) fn drain(inbox: &mut Inbox) -> String {
        items(inbox)
            .iter()
            .map(|item| String::from_utf8_lossy(item).into_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(bytes: usize) -> Limits {
        Limits {
            lines: 1000,
            bytes,
            stall_timeout: Duration::from_secs(2),
        }
    }

    fn item(len: usize) -> Item {
        vec![b'x'; len - LINE_OVERHEAD].into()
    }

    /// Fills a queue of `limits` just past its soft bound of 1000 bytes; returns the sender's
    /// ticket to wait for it.
    fn congested(limits: Limits) -> (Outbox, Inbox, Pace) {
        let (outbox, inbox) = outbox(limits);
        for _ in 0..11 {
            outbox.push_item(item(100)).expect("room");
        }
        let Backlog::Paced(pace) = outbox.backlog() else {
            panic!("expected pacing");
        };
        (outbox, inbox, pace)
    }

    #[test]
    fn clear_until_over_the_soft_bound() {
        let (outbox, _inbox) = outbox(limits(1000));
        for _ in 0..10 {
            assert!(matches!(outbox.backlog(), Backlog::Clear));
            outbox.push_item(item(100)).expect("room");
        }
        outbox
            .push_item(item(100))
            .expect("one past the soft bound");
        // Never wrote, but never had the chance to either: the rate is unknown, so it is paced.
        assert!(matches!(outbox.backlog(), Backlog::Paced(_)));
    }

    #[test]
    fn hard_cap_refuses_what_cannot_wait() {
        let (outbox, _inbox) = outbox(limits(1000));
        for _ in 0..20 {
            outbox.push_item(item(100)).expect("under the hard cap");
        }
        assert_eq!(outbox.push_item(item(100)), Err(PushError::Full));
        outbox
            .force_item(item(100))
            .expect("a farewell always fits");
        outbox.close();
        assert_eq!(outbox.push_item(item(100)), Err(PushError::Closed));
    }

    #[test]
    fn a_client_whose_socket_took_nothing_for_a_while_is_too_slow_at_once() {
        let (outbox, _inbox) = outbox(limits(1000));
        let long_ago = Instant::now() - Duration::from_secs(3);
        outbox
            .shared
            .blocked_since
            .store(millis(long_ago).max(1), Ordering::Relaxed);
        for _ in 0..11 {
            outbox.push_item(item(100)).expect("room");
        }
        assert!(matches!(outbox.backlog(), Backlog::TooSlow));
    }

    #[test]
    fn draining_to_half_wakes_paced_senders() {
        smol::block_on(async {
            let (outbox, mut inbox, pace) = congested(limits(1000));
            let taken = inbox.recv().await.expect("lines");
            inbox.wrote(1100);
            inbox.written(taken.len(), taken.iter().map(cost).sum());
            assert_eq!(pace.wait().await, Ok(()));
            assert!(matches!(outbox.backlog(), Backlog::Clear));
        });
    }

    #[test]
    fn closing_wakes_paced_senders_and_ends_the_writer() {
        smol::block_on(async {
            let (outbox, mut inbox, pace) = congested(limits(1000));
            outbox.close();
            assert_eq!(pace.wait().await, Ok(()));
            let taken = inbox
                .recv()
                .await
                .expect("what was queued is still written");
            assert_eq!(taken.len(), 11);
            inbox.written(taken.len(), taken.iter().map(cost).sum());
            assert!(inbox.recv().await.is_none());
        });
    }

    #[test]
    fn a_recipient_that_never_drains_is_too_slow_after_the_stall_timeout() {
        smol::block_on(async {
            let (_outbox, _inbox, pace) = congested(Limits {
                stall_timeout: Duration::from_millis(300),
                ..limits(1000)
            });
            let started = Instant::now();
            assert_eq!(pace.wait().await, Err(TooSlow));
            assert!(started.elapsed() >= Duration::from_millis(250));
        });
    }

    #[test]
    fn an_idle_outbox_holds_no_queue_block() {
        smol::block_on(async {
            let (outbox, mut inbox) = outbox(limits(1000));
            outbox.push_item(item(100)).expect("room");
            let taken = inbox.recv().await.expect("a line");
            inbox.written(taken.len(), taken.iter().map(cost).sum());
            assert_eq!(outbox.shared.queue().items.capacity(), 0);
        });
    }
}
