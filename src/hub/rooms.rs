//! Rooms: who is in each, what each remembers, and [`Rooms::broadcast`], the one place a line
//! fans out to a room.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use super::directory::Client;
use super::{Doomed, Held, Id, LOBBY};
use crate::outbox::Outbox;
use crate::protocol::{self, Time};

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
    /// Kept with what delivery needs so a broadcast walks one vector and does no lookups.
    members: Vec<Member>,
    /// The last relayed lines, replayed to whoever joins.
    history: VecDeque<Said>,
    /// Shown to whoever joins and in `/rooms`; goes with the room when it empties.
    topic: Option<Arc<str>>,
}

#[derive(Debug)]
struct Member {
    id: Id,
    outbox: Outbox,
    /// A copy of [`Client::timestamps`], so a broadcast knows without a lookup.
    timestamps: bool,
}

/// A relayed line as the room's history keeps it.
#[derive(Debug)]
struct Said {
    /// Who said it, so a newcomer who ignores them does not see it replayed.
    from: Id,
    /// When, since a replayed line always says so.
    at: Time,
    line: Arc<str>,
}

impl Rooms {
    pub(super) fn new(history_len: usize, announce_limit: usize) -> Rooms {
        Rooms {
            rooms: HashMap::from([(LOBBY.into(), Room::default())]),
            history_len,
            announce_limit,
        }
    }

    /// Queues a line for every member of a room except `except` and those in `hidden_from`
    /// (who ignore its sender); members over their queue's bound (or gone) are added to
    /// `doomed`. The timestamped copy is made once, and only if a recipient wants it.
    pub(super) fn broadcast(
        &self,
        room: &str,
        line: &Arc<str>,
        except: Option<Id>,
        hidden_from: Option<&HashSet<Id>>,
        doomed: &mut Doomed,
    ) {
        let Some(room) = self.rooms.get(room) else {
            return;
        };
        let hidden_from = hidden_from.filter(|ids| !ids.is_empty());
        let mut stamped = None;
        for member in &room.members {
            if Some(member.id) == except || hidden_from.is_some_and(|ids| ids.contains(&member.id))
            {
                continue;
            }
            let line = if member.timestamps {
                stamped.get_or_insert_with(|| protocol::stamped(Time::now(), line))
            } else {
                line
            };
            if let Err(e) = member.outbox.push(line) {
                doomed.push((member.id, e.into()));
            }
        }
    }

    /// Finds the members of a room that a line would go to (all but `except` and those in
    /// `hidden_from`) that cannot take it now: paced ones into `held`, those too slow to wait
    /// for into `doomed`. Run before a delivery that can wait, in the same lock, so a paced
    /// delivery never takes a queue far past its bound.
    pub(super) fn hold(
        &self,
        room: &str,
        except: Option<Id>,
        hidden_from: Option<&HashSet<Id>>,
        held: &mut Held,
        doomed: &mut Doomed,
    ) {
        let Some(room) = self.rooms.get(room) else {
            return;
        };
        let hidden_from = hidden_from.filter(|ids| !ids.is_empty());
        for member in &room.members {
            if Some(member.id) != except && !hidden_from.is_some_and(|ids| ids.contains(&member.id))
            {
                held.check(member.id, &member.outbox, doomed);
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
            self.broadcast(room, &line(), except, None, doomed);
        }
    }

    /// Keeps a line `from` relayed `at` a time in the room's history.
    pub(super) fn remember(&mut self, room: &str, from: Id, at: Time, line: Arc<str>) {
        let keep = self.history_len;
        if let Some(room) = self.rooms.get_mut(room).filter(|_| keep > 0) {
            if room.history.len() == keep {
                room.history.pop_front();
            }
            room.history.push_back(Said { from, at, line });
        }
    }

    /// Adds a client to a room (created if new), telling it where it is and replaying the
    /// room's history but for those it ignores. Returns the room's key.
    pub(super) fn enter(&mut self, id: Id, client: &Client, key: &str) -> Arc<str> {
        let key: Arc<str> = self
            .rooms
            .get_key_value(key)
            .map_or_else(|| key.into(), |(k, _)| k.clone());
        let room = self.rooms.entry(key.clone()).or_default();
        let mut greeting = String::new();
        protocol::push_you_are(&mut greeting, &client.name, &key, room.members.len() + 1);
        if let Some(topic) = &room.topic {
            protocol::push_topic(&mut greeting, &key, topic);
        }
        for said in &room.history {
            if !client.ignoring.contains(&said.from) {
                protocol::push_history(&mut greeting, said.at, &said.line);
            }
        }
        let greeting: Arc<str> = if client.timestamps {
            protocol::stamped(Time::now(), &greeting)
        } else {
            greeting.into()
        };
        // Forced: the client's own queue was found clear first (or is new), and a greeting is
        // bounded (history × max_line), so it may go past the bound by that much at most.
        let _ = client.outbox.force(greeting);
        room.members.push(Member {
            id,
            outbox: client.outbox.clone(),
            timestamps: client.timestamps,
        });
        key
    }

    /// Updates a member's copy of [`Client::timestamps`].
    pub(super) fn set_timestamps(&mut self, key: &str, id: Id, on: bool) {
        let room = self.rooms.get_mut(key);
        if let Some(member) = room.and_then(|r| r.members.iter_mut().find(|m| m.id == id)) {
            member.timestamps = on;
        }
    }

    /// Takes a client out of a room, deleting the room if it empties (except the lobby).
    /// Returns whether it was there.
    pub(super) fn leave(&mut self, id: Id, key: &str) -> bool {
        let Some(room) = self.rooms.get_mut(key) else {
            return false;
        };
        let Some(at) = room.members.iter().position(|member| member.id == id) else {
            return false;
        };
        room.members.swap_remove(at);
        if room.members.is_empty() && key != LOBBY {
            self.rooms.remove(key);
        }
        true
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
            .flat_map(|room| room.members.iter().map(|member| member.id))
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
    use crate::outbox::testing::{drain, items, outbox};
    use crate::outbox::Outbox;

    fn client(name: &str, outbox: Outbox) -> Client {
        let addr = "192.0.2.1:1000".parse().expect("an address");
        Client::new(name.into(), LOBBY.into(), addr, outbox, false)
    }

    #[test]
    fn broadcast_skips_the_sender_and_dooms_queues_past_the_hard_cap() {
        let mut rooms = Rooms::new(0, 1000);
        let mut doomed = Doomed::new();
        let (a, mut a_in) = outbox(8, 4096);
        let (b, mut b_in) = outbox(1, 4096);
        rooms.enter(1, &client("a", a), LOBBY);
        rooms.enter(2, &client("b", b), LOBBY);
        drain(&mut a_in);
        for line in ["x\n", "y\n", "z\n"] {
            rooms.broadcast(LOBBY, &line.into(), Some(1), None, &mut doomed);
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
    fn hold_finds_congested_recipients_but_not_the_sender_or_ignorers() {
        let mut rooms = Rooms::new(0, 1000);
        let mut doomed = Doomed::new();
        let mut inboxes = Vec::new();
        for (id, name) in [(1, "a"), (2, "b"), (3, "c")] {
            let (out, inbox) = outbox(1, 4096);
            rooms.enter(id, &client(name, out), LOBBY);
            inboxes.push(inbox);
        }
        rooms.broadcast(LOBBY, &"x\n".into(), None, None, &mut doomed);
        let mut held = Held::default();
        let ignorers = HashSet::from([3]);
        rooms.hold(LOBBY, Some(1), Some(&ignorers), &mut held, &mut doomed);
        assert_eq!(
            held.paced.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [2]
        );
        assert!(doomed.is_empty());
    }

    #[test]
    fn newcomers_get_the_last_lines_and_empty_rooms_go() {
        let mut rooms = Rooms::new(2, 1000);
        let doomed = Doomed::new();
        let (a, _a_in) = outbox(8, 4096);
        let den = rooms.enter(1, &client("a", a), "den");
        for (minute, line) in [(1, "a: 1\n"), (2, "a: 2\n"), (3, "a: 3\n")] {
            rooms.remember(&den, 1, Time(14 * 3600 + minute * 60 + 59), line.into());
        }
        let (b, mut b_in) = outbox(8, 4096);
        rooms.set_topic(&den, Some("digging".into()));
        rooms.enter(2, &client("b", b), "den");
        assert_eq!(
            drain(&mut b_in),
            "*** you are b in #den; users here: 2\n*** topic of #den: digging\n\
             [history 14:02] a: 2\n[history 14:03] a: 3\n"
        );
        assert!(rooms.leave(1, "den"));
        assert!(rooms.leave(2, "den"));
        assert!(!rooms.contains("den"));
        assert!(!rooms.leave(3, LOBBY));
        assert!(rooms.contains(LOBBY), "the lobby stays, empty");
        assert!(doomed.is_empty());
    }

    #[test]
    fn presence_is_announced_only_in_rooms_up_to_the_limit() {
        let mut rooms = Rooms::new(0, 1);
        let mut doomed = Doomed::new();
        let (a, mut a_in) = outbox(8, 4096);
        rooms.enter(1, &client("a", a), LOBBY);
        drain(&mut a_in);
        rooms.announce(LOBBY, || "*** one\n".into(), None, &mut doomed);
        let (b, _b_in) = outbox(8, 4096);
        rooms.enter(2, &client("b", b), LOBBY);
        rooms.announce(
            LOBBY,
            || unreachable!("two is over the limit"),
            None,
            &mut doomed,
        );
        assert_eq!(drain(&mut a_in), "*** one\n");
    }

    #[test]
    fn broadcast_hides_lines_from_ignorers_and_stamps_one_copy_for_all_who_want_it() {
        let mut rooms = Rooms::new(5, 1000);
        let mut doomed = Doomed::new();
        let mut inboxes = Vec::new();
        for (id, name) in [(1, "a"), (2, "b"), (3, "c"), (4, "d")] {
            let (out, mut inbox) = outbox(8, 4096);
            let mut member = client(name, out);
            member.timestamps = id != 1;
            rooms.enter(id, &member, LOBBY);
            items(&mut inbox);
            inboxes.push(inbox);
        }
        let ignorers = HashSet::from([4]);
        let before = Time::now();
        rooms.broadcast(
            LOBBY,
            &"a: hi\n".into(),
            Some(1),
            Some(&ignorers),
            &mut doomed,
        );
        let after = Time::now();
        let got: Vec<Vec<_>> = inboxes.iter_mut().map(items).collect();
        assert!(got[0].is_empty(), "not to the sender");
        assert!(got[3].is_empty(), "not to whoever ignores the sender");
        assert!(
            [before, after]
                .iter()
                .any(|t| *got[1][0] == *format!("{t} a: hi\n").as_bytes()),
            "{:?}",
            got[1]
        );
        assert!(Arc::ptr_eq(&got[1][0], &got[2][0]), "stamped once");

        rooms.remember(LOBBY, 1, Time(0), "a: hi\n".into());
        let (out, mut inbox) = outbox(8, 4096);
        let mut ignorer = client("e", out);
        ignorer.ignoring.push(1);
        rooms.enter(5, &ignorer, LOBBY);
        assert_eq!(
            drain(&mut inbox),
            "*** you are e in #lobby; users here: 5\n"
        );
        let (out, mut inbox) = outbox(8, 4096);
        rooms.enter(6, &client("f", out), LOBBY);
        assert_eq!(
            drain(&mut inbox),
            "*** you are f in #lobby; users here: 6\n[history 00:00] a: hi\n"
        );
        assert!(doomed.is_empty());
    }
}
