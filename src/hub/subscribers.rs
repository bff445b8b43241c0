//! The host's event queues: every [`Event`] is offered to them, none is ever waited for.

use async_channel::{Receiver, Sender, TrySendError};

use crate::event::Event;

/// Everyone subscribed through a [`Handle`](crate::Handle).
#[derive(Debug, Default)]
pub(super) struct Subscribers {
    list: Vec<Subscriber>,
    /// Events a subscriber missed because its queue was full.
    dropped: u64,
}

#[derive(Debug)]
struct Subscriber {
    tx: Sender<Event>,
    /// Whether it wants chat lines ([`Event::Message`], [`Event::Private`]) too.
    chat: bool,
}

impl Subscribers {
    /// A new subscription queueing up to `capacity` events (at least 1).
    pub(super) fn add(&mut self, capacity: usize, chat: bool) -> Receiver<Event> {
        let (tx, rx) = async_channel::bounded(capacity.max(1));
        self.list.push(Subscriber { tx, chat });
        rx
    }

    /// Offers an event without waiting; a full subscriber misses it. The event is built only if
    /// someone wants it, so chat lines cost nothing when nobody listens to them.
    pub(super) fn offer(&mut self, chat: bool, event: impl FnOnce() -> Event) {
        if !self.list.iter().any(|s| s.chat || !chat) {
            return;
        }
        let event = event();
        let mut dropped = 0;
        self.list.retain(|s| {
            if chat && !s.chat {
                return true;
            }
            match s.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    dropped += 1;
                    true
                }
                Err(TrySendError::Closed(_)) => false,
            }
        });
        self.dropped += dropped;
    }

    /// Ends every subscription: their channels close once drained.
    pub(super) fn clear(&mut self) {
        self.list.clear();
    }

    /// Events missed so far, over all subscribers.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renamed(n: u32) -> Event {
        Event::Renamed {
            old: format!("a{n}").into(),
            new: "b".into(),
        }
    }

    #[test]
    fn a_full_queue_misses_events_and_counts_them() {
        let mut subscribers = Subscribers::default();
        let rx = subscribers.add(2, true);
        for n in 0..5 {
            subscribers.offer(false, || renamed(n));
        }
        assert_eq!(subscribers.dropped(), 3);
        assert_eq!(rx.try_recv(), Ok(renamed(0)));
        assert_eq!(rx.try_recv(), Ok(renamed(1)));
    }

    #[test]
    fn chat_events_are_not_built_for_presence_subscribers_and_gone_ones_are_forgotten() {
        let mut subscribers = Subscribers::default();
        let presence = subscribers.add(4, false);
        subscribers.offer(true, || unreachable!("nobody wants chat events"));
        subscribers.offer(false, || renamed(1));
        assert_eq!(presence.try_recv(), Ok(renamed(1)));
        drop(presence);
        subscribers.offer(false, || renamed(2));
        assert!(subscribers.list.is_empty());
        assert_eq!(subscribers.dropped(), 0);
    }
}
