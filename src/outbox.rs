//! A client's outbox: the bounded queue of lines waiting to be written to its socket.
//!
//! The bound counts both lines and bytes, and is enforced here rather than by
//! `async_channel::bounded`, whose queue allocates every slot up front: with a capacity of 1024
//! that would be 24 KiB per idle client. The unbounded channel allocates as lines arrive, and
//! every push goes through [`Outbox::push`], which refuses past the bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_channel::{Receiver, Sender};

use crate::event::LeaveReason;

/// The sending side, registered in the hub. Cloning shares the same queue.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: Sender<Arc<str>>,
    budget: Arc<Budget>,
}

/// The receiving side, owned by the client's writer.
#[derive(Debug)]
pub(crate) struct Inbox {
    rx: Receiver<Arc<str>>,
    budget: Arc<Budget>,
}

/// What one queue may hold, and what it holds now.
#[derive(Debug)]
struct Budget {
    /// Bytes pushed and not yet written; the writer subtracts after each write.
    queued: AtomicUsize,
    max_lines: usize,
    max_bytes: usize,
}

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// Over the bound: the client is not keeping up.
    Full,
    /// The writer is gone.
    Closed,
}

/// A queue holding at most `max_lines` lines and `max_bytes` bytes (see [`cost`]).
pub(crate) fn outbox(max_lines: usize, max_bytes: usize) -> (Outbox, Inbox) {
    let (tx, rx) = async_channel::unbounded();
    let budget = Arc::new(Budget {
        queued: AtomicUsize::new(0),
        max_lines,
        max_bytes,
    });
    (
        Outbox {
            tx,
            budget: budget.clone(),
        },
        Inbox { rx, budget },
    )
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

impl Outbox {
    /// Queues a line unless that would exceed the queue's bound.
    pub(crate) fn push(&self, line: &Arc<str>) -> Result<(), PushError> {
        if self.tx.is_closed() {
            return Err(PushError::Closed);
        }
        let budget = &self.budget;
        if self.tx.len() >= budget.max_lines
            || budget.queued.load(Ordering::Relaxed) + cost(line) > budget.max_bytes
        {
            return Err(PushError::Full);
        }
        self.force(line.clone())
    }

    /// Queues a line whatever the bound: for the last line a client gets before it is closed.
    pub(crate) fn force(&self, line: Arc<str>) -> Result<(), PushError> {
        let len = cost(&line);
        // Count first: the writer may take the line and subtract before this returns.
        self.budget.queued.fetch_add(len, Ordering::Relaxed);
        self.tx.try_send(line).map_err(|_| {
            self.budget.queued.fetch_sub(len, Ordering::Relaxed);
            PushError::Closed
        })
    }

    /// Whether nothing is waiting to be written (the writer may still be writing its batch).
    pub(crate) fn is_empty(&self) -> bool {
        self.budget.queued.load(Ordering::Relaxed) == 0
    }

    /// Lets the writer finish what is queued, then stop.
    pub(crate) fn close(&self) {
        self.tx.close();
    }
}

impl Inbox {
    /// Waits for a line, then takes it and up to `max - 1` more that are already queued.
    /// `None` once the outbox is closed and empty.
    pub(crate) async fn recv_batch(&self, max: usize) -> Option<Vec<Arc<str>>> {
        let first = self.rx.recv().await.ok()?;
        // Allocated per wake-up, so an idle client holds no batch buffer.
        let mut batch = Vec::with_capacity((self.rx.len() + 1).min(max));
        batch.push(first);
        while batch.len() < max {
            match self.rx.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// Whether the outbox was closed: what is queued is all there will be.
    pub(crate) fn is_closed(&self) -> bool {
        self.rx.is_closed()
    }

    /// Records that these queued lines were written.
    pub(crate) fn written(&self, lines: &[Arc<str>]) {
        self.budget
            .queued
            .fetch_sub(lines.iter().map(cost).sum(), Ordering::Relaxed);
    }
}

/// What a queued line costs in memory: its text, plus the reference counts of its `Arc`, its
/// slot in the channel and the allocator's header. Counting these keeps `queue_bytes` honest
/// for short lines.
fn cost(line: &Arc<str>) -> usize {
    line.len() + LINE_OVERHEAD
}

/// Bytes of bookkeeping per queued line (see [`cost`]).
const LINE_OVERHEAD: usize = 48;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_bounded_and_end_after_close() {
        let (outbox, inbox) = outbox(10, 10_000);
        for line in ["a\n", "b\n", "c\n"] {
            outbox.push(&line.into()).expect("room for it");
        }
        outbox.close();
        smol::block_on(async {
            let batch = inbox.recv_batch(2).await.expect("two lines");
            assert_eq!(batch.len(), 2);
            inbox.written(&batch);
            assert!(inbox.is_closed());
            assert_eq!(inbox.recv_batch(2).await.map(|b| b.len()), Some(1));
            assert_eq!(inbox.recv_batch(2).await, None);
        });
    }

    #[test]
    fn a_full_queue_refuses_and_a_closed_one_says_so() {
        let (outbox, inbox) = outbox(1, 10_000);
        outbox.push(&"a\n".into()).expect("room for it");
        assert_eq!(outbox.push(&"b\n".into()), Err(PushError::Full));
        drop(inbox);
        assert_eq!(outbox.push(&"c\n".into()), Err(PushError::Closed));
    }
}
