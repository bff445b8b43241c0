//! What [`Stats`] reports: counts kept under the hub's lock, and counts kept outside it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::handle::Stats;

/// Counted by a connection's reader without taking the lock.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) too_long: AtomicU64,
    pub(crate) flood_delayed: AtomicU64,
    pub(crate) tls_failed: AtomicU64,
    /// Refused connections being closed gracefully now (bounded by the accept loop).
    pub(crate) refusing: AtomicUsize,
}

/// Counted under the lock, by the changes they count.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) accepted: u64,
    pub(super) refused: u64,
    pub(super) relayed: u64,
    pub(super) dropped_slow: u64,
}

impl Tally {
    /// Every counter, as the host sees it.
    pub(super) fn stats(&self, counters: &Counters, clients: usize, events_dropped: u64) -> Stats {
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            clients,
            connections_accepted: self.accepted,
            connections_refused: self.refused,
            lines_relayed: self.relayed,
            dropped_slow: self.dropped_slow,
            lines_too_long: count(&counters.too_long),
            flood_delayed: count(&counters.flood_delayed),
            tls_failed: count(&counters.tls_failed),
            events_dropped,
            #[cfg(feature = "redis")]
            cluster: None,
        }
    }
}
