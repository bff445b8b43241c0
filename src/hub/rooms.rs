//! Rooms: who is in each, what each remembers, and [`Rooms::broadcast`], the one place a line
//! fans out to a room.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::{Doomed, Held, Id, LOBBY};
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

    /// Finds the members of a room (except `except`) that cannot take a line now: paced ones
    /// into `held`, those too slow to wait for into `doomed`. Run before a delivery that can
    /// wait, in the same lock, so a paced delivery never takes a queue far past its bound.
    pub(super) fn hold(
        &self,
        room: &str,
        except: Option<Id>,
        held: &mut Held,
        doomed: &mut Doomed,
    ) {
        let Some(room) = self.rooms.get(room) else {
            return;
        };
        for (id, outbox) in &room.members {
            if Some(*id) != except {
                held.check(*id, outbox, doomed);
            }
        }
    }

    /// Whether the room announces joins, leaves and renames (it is no bigger than the limit).
    pub(super) fn announces(&self, room: &str) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.members.len() <= self.announce_limit)
    }

    /// Broadcasts a join or leave notice, unless the room is too big for them to be useful.
    pub(super) fn announce(
        &self,
        room: &str,
        line: impl FnOnce() -> Arc<str>,
        except: Option<Id>,
        doomed: &mut Doomed,
    ) {
        if self.announces(room) {
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

    /// Adds a client to a room (created if new), telling it where it is and replaying the
    /// room's history. Returns the room's key.
    pub(super) fn enter(&mut self, id: Id, name: &str, key: &str, outbox: Outbox) -> Arc<str> {
        let key: Arc<str> = self
            .rooms
            .get_key_value(key)
            .map_or_else(|| key.into(), |(k, _)| k.clone());
        let room = self.rooms.entry(key.clone()).or_default();
        let mut greeting = String::new();
        protocol::push_you_are(&mut greeting, name, &key, room.members.len() + 1);
        if let Some(topic) = &room.topic {
            protocol::push_topic(&mut greeting, &key, topic);
        }
        for line in &room.history {
            protocol::push_history(&mut greeting, line);
        }
        // Forced: the client's own queue was found clear first (or is new), and a greeting is
        // bounded (history × max_line), so it may go past the bound by that much at most.
        let _ = outbox.force(greeting.into());
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
    use crate::outbox::testing::{drain, outbox};

    #[test]
    fn broadcast_skips_the_sender_and_dooms_queues_past_the_hard_cap() {
        let mut rooms = Rooms::new(0, 1000);
        let mut doomed = Doomed::new();
        let (a, mut a_in) = outbox(8, 4096);
        let (b, mut b_in) = outbox(1, 4096);
        rooms.enter(1, "a", LOBBY, a);
        rooms.enter(2, "b", LOBBY, b);
        drain(&mut a_in);
        for line in ["x\n", "y\n", "z\n"] {
            rooms.broadcast(LOBBY, &line.into(), Some(1), &mut doomed);
        }
        assert_eq!(drain(&mut a_in), "");
        // A soft bound of one line: its greeting and one more reach the hard cap of two.
        assert_eq!(
            drain(&mut b_in),
            "*** you are b in #lobby; users here: 2\nx\n"
        );
        assert_eq!(doomed.len(), 2, "b was refused y and z");
        assert!(doomed.iter().all(|(id, _)| *id == 2));
    }

    #[test]
    fn hold_finds_congested_members_but_not_the_sender() {
        let mut rooms = Rooms::new(0, 1000);
        let mut doomed = Doomed::new();
        let (a, _a_in) = outbox(1, 4096);
        let (b, _b_in) = outbox(1, 4096);
        rooms.enter(1, "a", LOBBY, a);
        rooms.enter(2, "b", LOBBY, b);
        rooms.broadcast(LOBBY, &"x\n".into(), None, &mut doomed);
        let mut held = Held::default();
        rooms.hold(LOBBY, Some(1), &mut held, &mut doomed);
        assert_eq!(held.0.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [2]);
        assert!(doomed.is_empty());
    }

    #[test]
    fn newcomers_get_the_last_lines_and_empty_rooms_go() {
        let mut rooms = Rooms::new(2, 1000);
        let doomed = Doomed::new();
        let (a, _a_in) = outbox(8, 4096);
        let den = rooms.enter(1, "a", "den", a);
        for line in ["a: 1\n", "a: 2\n", "a: 3\n"] {
            rooms.remember(&den, line.into());
        }
        let (b, mut b_in) = outbox(8, 4096);
        rooms.set_topic(&den, Some("digging".into()));
        rooms.enter(2, "b", "den", b);
        assert_eq!(
            drain(&mut b_in),
            "*** you are b in #den; users here: 2
*** topic of #den: digging
\
             [history] a: 2
[history] a: 3
"
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
        let (a, mut a_in) = outbox(8, 4096);
        rooms.enter(1, "a", LOBBY, a);
        drain(&mut a_in);
        rooms.announce(LOBBY, || "*** one\n".into(), None, &mut doomed);
        let (b, _b_in) = outbox(8, 4096);
        rooms.enter(2, "b", LOBBY, b);
        rooms.announce(
            LOBBY,
            || unreachable!("two is over the limit"),
            None,
            &mut doomed,
        );
        assert_eq!(drain(&mut a_in), "*** one\n");
    }
}
