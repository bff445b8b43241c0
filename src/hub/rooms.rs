//! Rooms: who is in each, what each remembers, and [`Rooms::broadcast`], the one place a line
//! fans out to a room.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::{Doomed, Id, LOBBY};
use crate::outbox::Outbox;
use crate::protocol;

/// Every room that exists: the lobby always, any other while it has members.
#[derive(Debug)]
pub(super) struct Rooms {
    /// Room key (lowercase) → room.
    rooms: HashMap<Arc<str>, Room>,
    /// How many relayed lines each room keeps for newcomers ([`Config::history`](crate::Config::history)).
    history_len: usize,
    /// Biggest room whose joins and leaves are announced ([`Config::announce_limit`](crate::Config::announce_limit)).
    announce_limit: usize,
}

#[derive(Debug, Default)]
struct Room {
    /// Kept beside the ids so a broadcast walks one vector and does no lookups.
    members: Vec<(Id, Outbox)>,
    /// The last relayed lines, replayed to whoever joins.
    history: VecDeque<Arc<str>>,
    /// Shown to whoever joins and in `/rooms`; goes with the room when it empties.
    topic: Option<Arc<str>>,
}

impl Rooms {
    pub(super) fn new(history_len: usize, announce_limit: usize) -> Rooms {
        Rooms {
            rooms: HashMap::from([(LOBBY.into(), Room::default())]),
            history_len,
            announce_limit,
        }
    }

    /// Queues a line for every member of a room except `except`; members over their queue's
    /// bound (or gone) are added to `doomed`.
    pub(super) fn broadcast(
        &self,
        room: &str,
        line: &Arc<str>,
        except: Option<Id>,
        doomed: &mut Doomed,
    ) {
        let Some(room) = self.rooms.get(room) else {
            return;
        };
        for (id, outbox) in &room.members {
            if Some(*id) != except {
                if let Err(e) = outbox.push(line) {
                    doomed.push((*id, e.into()));
                }
            }
        }
    }

    /// Broadcasts a join or leave notice, unless the room is too big for them to be useful.
    pub(super) fn announce(
        &self,
        room: &str,
        line: impl FnOnce() -> Arc<str>,
        except: Option<Id>,
        doomed: &mut Doomed,
    ) {
        if self
            .rooms
            .get(room)
            .is_some_and(|r| r.members.len() <= self.announce_limit)
        {
            self.broadcast(room, &line(), except, doomed);
        }
    }

    /// Keeps a relayed line in the room's history.
    pub(super) fn remember(&mut self, room: &str, line: Arc<str>) {
        let keep = self.history_len;
        if let Some(room) = self.rooms.get_mut(room).filter(|_| keep > 0) {
            if room.history.len() == keep {
                room.history.pop_front();
            }
            room.history.push_back(line);
        }
    }

    /// Adds a client to a room (created if new), sending it `greeting`, where it is, and the
    /// room's history. Returns the room's key.
    pub(super) fn enter(
        &mut self,
        id: Id,
        name: &str,
        key: &str,
        outbox: Outbox,
        mut greeting: String,
        doomed: &mut Doomed,
    ) -> Arc<str> {
        let key: Arc<str> = self
            .rooms
            .get_key_value(key)
            .map_or_else(|| key.into(), |(k, _)| k.clone());
        let room = self.rooms.entry(key.clone()).or_default();
        protocol::push_you_are(&mut greeting, name, &key, room.members.len() + 1);
        if let Some(topic) = &room.topic {
            protocol::push_topic(&mut greeting, &key, topic);
        }
        for line in &room.history {
            protocol::push_history(&mut greeting, line);
        }
        // A greeting (at most history × max_line) may exceed the bound on its own, so an empty
        // queue always takes it; otherwise it counts like any line, so a client that keeps
        // switching rooms without reading cannot pile greetings up.
        let greeting: Arc<str> = greeting.into();
        let queued = if outbox.is_empty() {
            outbox.force(greeting)
        } else {
            outbox.push(&greeting)
        };
        if let Err(e) = queued {
            doomed.push((id, e.into()));
        }
        room.members.push((id, outbox));
        key
    }

    /// Takes a client out of a room, deleting the room if it empties (except the lobby).
    pub(super) fn leave(&mut self, id: Id, key: &str) -> Option<Outbox> {
        let room = self.rooms.get_mut(key)?;
        let at = room.members.iter().position(|(member, _)| *member == id)?;
        let (_, outbox) = room.members.swap_remove(at);
        if room.members.is_empty() && key != LOBBY {
            self.rooms.remove(key);
        }
        Some(outbox)
    }

    /// Empties every room at once and deletes all but the lobby.
    pub(super) fn clear(&mut self) {
        self.rooms.retain(|key, _| **key == *LOBBY);
        self.rooms
            .values_mut()
            .for_each(|lobby| lobby.members.clear());
    }

    pub(super) fn contains(&self, key: &str) -> bool {
        self.rooms.contains_key(key)
    }

    /// The ids of a room's members, in no particular order.
    pub(super) fn members(&self, key: &str) -> impl Iterator<Item = Id> + '_ {
        self.rooms
            .get(key)
            .into_iter()
            .flat_map(|room| room.members.iter().map(|(id, _)| *id))
    }

    /// Every room's key, size and topic, in no particular order.
    pub(super) fn sizes(&self) -> impl Iterator<Item = (&Arc<str>, usize, Option<&Arc<str>>)> {
        self.rooms
            .iter()
            .map(|(key, room)| (key, room.members.len(), room.topic.as_ref()))
    }

    pub(super) fn topic(&self, key: &str) -> Option<&Arc<str>> {
        self.rooms.get(key)?.topic.as_ref()
    }

    /// Sets or clears (`None`) a room's topic.
    pub(super) fn set_topic(&mut self, key: &str, topic: Option<Arc<str>>) {
        if let Some(room) = self.rooms.get_mut(key) {
            room.topic = topic;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{outbox, Inbox};

    fn drain(inbox: &Inbox) -> String {
        smol::block_on(async {
            let mut text = String::new();
            loop {
                let Some(batch) = futures_lite::future::poll_once(inbox.recv_batch(64))
                    .await
                    .flatten()
                else {
                    break;
                };
                inbox.written(&batch);
                batch.iter().for_each(|line| text.push_str(line));
            }
            text
        })
    }

    #[test]
    fn broadcast_skips_the_sender_and_dooms_full_queues() {
        let mut rooms = Rooms::new(0, 1000);
        let mut doomed = Doomed::new();
        let (a, a_in) = outbox(8, 4096);
        let (b, b_in) = outbox(1, 4096);
        rooms.enter(1, "a", LOBBY, a, String::new(), &mut doomed);
        rooms.enter(2, "b", LOBBY, b, String::new(), &mut doomed);
        drain(&a_in);
        rooms.broadcast(LOBBY, &"x\n".into(), Some(1), &mut doomed);
        rooms.broadcast(LOBBY, &"y\n".into(), Some(1), &mut doomed);
        assert_eq!(drain(&a_in), "");
        assert_eq!(drain(&b_in), "*** you are b in #lobby; users here: 2\n");
        assert_eq!(
            doomed.len(),
            2,
            "b's queue held its greeting, then was full"
        );
        assert!(doomed.iter().all(|(id, _)| *id == 2));
    }

    #[test]
    fn newcomers_get_the_last_lines_and_empty_rooms_go() {
        let mut rooms = Rooms::new(2, 1000);
        let mut doomed = Doomed::new();
        let (a, _a_in) = outbox(8, 4096);
        let den = rooms.enter(1, "a", "den", a, String::new(), &mut doomed);
        for line in ["a: 1\n", "a: 2\n", "a: 3\n"] {
            rooms.remember(&den, line.into());
        }
        let (b, b_in) = outbox(8, 4096);
        rooms.set_topic(&den, Some("digging".into()));
        rooms.enter(2, "b", "den", b, "hi\n".into(), &mut doomed);
        assert_eq!(
            drain(&b_in),
            "hi\n*** you are b in #den; users here: 2\n*** topic of #den: digging\n\
             [history] a: 2\n[history] a: 3\n"
        );
        assert!(rooms.leave(1, "den").is_some());
        assert!(rooms.leave(2, "den").is_some());
        assert!(!rooms.contains("den"));
        assert!(rooms.leave(3, LOBBY).is_none());
        assert!(rooms.contains(LOBBY), "the lobby stays, empty");
        assert!(doomed.is_empty());
    }

    #[test]
    fn presence_is_announced_only_in_rooms_up_to_the_limit() {
        let mut rooms = Rooms::new(0, 1);
        let mut doomed = Doomed::new();
        let (a, a_in) = outbox(8, 4096);
        rooms.enter(1, "a", LOBBY, a, String::new(), &mut doomed);
        drain(&a_in);
        rooms.announce(LOBBY, || "*** one\n".into(), None, &mut doomed);
        let (b, _b_in) = outbox(8, 4096);
        rooms.enter(2, "b", LOBBY, b, String::new(), &mut doomed);
        rooms.announce(
            LOBBY,
            || unreachable!("two is over the limit"),
            None,
            &mut doomed,
        );
        assert_eq!(drain(&a_in), "*** one\n");
    }
}
