//! The hub: who is connected, which room they are in, and delivering lines to them.
//!
//! All shared state sits behind one `Mutex`, held only for non-blocking work: lines are formatted
//! before it is taken, delivery is `try_send` into each recipient's [`Outbox`], and nothing
//! `.await`s while holding it. Because every delivery happens under the lock, all members of a
//! room see its lines in the same order.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_channel::{Receiver, Sender};

use crate::event::{Event, LeaveReason, Refusal, Stats};
use crate::outbox::Outbox;
use crate::protocol::{self, check_name, error, notice, relay, NameError};
use crate::sanitize::{sanitize, sanitize_into};
use crate::Config;

/// Identifies one connection for its whole life, whatever its name.
pub(crate) type Id = u64;

/// The room every client starts in; it exists even when empty.
pub(crate) const LOBBY: &str = "lobby";

/// Who a host's notice goes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Audience<'a> {
    Everyone,
    Room(&'a str),
    User(&'a str),
}

/// Longest `/who` or `/rooms` listing, so a reply stays far below any queue bound.
const MAX_LISTED: usize = 100;

/// One `*** motd: ` notice per line of `motd`.
fn format_motd(motd: &str) -> Arc<str> {
    let mut lines = String::new();
    for line in motd.lines() {
        lines.push_str("*** motd: ");
        sanitize_into(&mut lines, line);
        lines.push('\n');
    }
    lines.into()
}

/// Shared by the accept loop, every connection and every [`Handle`](crate::Handle).
#[derive(Debug)]
pub(crate) struct Hub {
    pub(crate) config: Config,
    pub(crate) local_addr: SocketAddr,
    state: Mutex<State>,
    pub(crate) counters: Counters,
    /// Closed to ask the server to stop; never carries a value.
    stop: (Sender<()>, Receiver<()>),
    /// The message of the day as sent (`*** motd: ` lines), formatted once; the host may
    /// replace it while the server runs.
    motd: Mutex<Option<Arc<str>>>,
}

/// Counters updated outside the lock.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) too_long: AtomicU64,
    pub(crate) flood_delayed: AtomicU64,
}

/// What a connection knows about itself; only its own reader changes its name and room.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: Id,
    pub(crate) name: Arc<str>,
    pub(crate) room: Arc<str>,
}

#[derive(Debug)]
struct State {
    clients: HashMap<Id, Client>,
    /// Lowercased name → client, so names are unique case-insensitively.
    names: HashMap<String, Id>,
    /// Room key (lowercase) → room.
    rooms: HashMap<Arc<str>, Room>,
    lobby: Arc<str>,
    /// Open connections, including those not yet joined.
    connections: usize,
    per_ip: HashMap<IpAddr, usize>,
    next_id: Id,
    next_guest: u64,
    subscribers: Vec<Subscriber>,
    closing: bool,
    /// Clients found over their queue bound or closed during a delivery; removed right after it.
    doomed: Vec<(Id, LeaveReason)>,
    history: usize,
    announce_limit: usize,
    accepted: u64,
    refused: u64,
    relayed: u64,
    dropped_slow: u64,
    events_dropped: u64,
}

#[derive(Debug)]
struct Subscriber {
    tx: Sender<Event>,
    /// Whether it wants chat lines ([`Event::Message`], [`Event::Private`]) too.
    chat: bool,
}

#[derive(Debug)]
struct Client {
    name: Arc<str>,
    room: Arc<str>,
    addr: SocketAddr,
    outbox: Outbox,
}

#[derive(Debug, Default)]
struct Room {
    /// Kept beside the ids so a broadcast walks one vector and does no lookups.
    members: Vec<(Id, Outbox)>,
    /// The last relayed lines, replayed to whoever joins.
    history: VecDeque<Arc<str>>,
}

impl Hub {
    pub(crate) fn new(config: Config, local_addr: SocketAddr) -> Hub {
        let lobby: Arc<str> = LOBBY.into();
        let state = State {
            clients: HashMap::new(),
            names: HashMap::new(),
            rooms: HashMap::from([(lobby.clone(), Room::default())]),
            lobby,
            connections: 0,
            per_ip: HashMap::new(),
            next_id: 0,
            next_guest: 0,
            subscribers: Vec::new(),
            closing: false,
            doomed: Vec::new(),
            history: config.history,
            announce_limit: config.announce_limit,
            accepted: 0,
            refused: 0,
            relayed: 0,
            dropped_slow: 0,
            events_dropped: 0,
        };
        Hub {
            local_addr,
            state: Mutex::new(state),
            counters: Counters::default(),
            stop: async_channel::bounded(1),
            motd: Mutex::new(config.motd.as_deref().map(format_motd)),
            config,
        }
    }

    /// Replaces the message of the day shown to clients that connect from now on.
    pub(crate) fn set_motd(&self, motd: Option<&str>) {
        let motd = motd.map(format_motd);
        *self.motd.lock().unwrap_or_else(PoisonError::into_inner) = motd;
    }

    /// Locks the state. A panic elsewhere never leaves it half-changed in a way that matters
    /// more than stopping the whole server would, so a poisoned lock is used as it is.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the server to stop.
    pub(crate) fn stop(&self) {
        self.stop.0.close();
    }

    /// Completes once [`stop`](Self::stop) was called.
    pub(crate) async fn stopped(&self) {
        let _ = self.stop.1.recv().await;
    }

    /// Counts a new connection, or says why it must be refused.
    pub(crate) fn admit(&self, addr: SocketAddr) -> Result<(), Refusal> {
        let config = &self.config;
        let ip = addr.ip().to_canonical();
        let key = address_group(ip);
        let mut st = self.state();
        let per_ip = st.per_ip.get(&key).copied().unwrap_or(0);
        let refusal = if st.closing {
            Some(Refusal::ShuttingDown)
        } else if st.connections >= config.max_clients {
            Some(Refusal::ServerFull)
        } else if per_ip >= config.max_per_ip && (config.limit_loopback || !ip.is_loopback()) {
            Some(Refusal::TooManyFromAddress)
        } else {
            None
        };
        if let Some(reason) = refusal {
            st.refused += 1;
            st.emit(|| Event::Refused { addr, reason });
            return Err(reason);
        }
        st.accepted += 1;
        st.connections += 1;
        st.per_ip.insert(key, per_ip + 1);
        Ok(())
    }

    /// Forgets a connection counted by [`admit`](Self::admit).
    pub(crate) fn release(&self, addr: SocketAddr) {
        let key = address_group(addr.ip().to_canonical());
        let mut st = self.state();
        st.connections -= 1;
        if let Some(count) = st.per_ip.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                st.per_ip.remove(&key);
            }
        }
    }

    /// Registers an admitted connection: gives it a name, welcomes it, puts it in the lobby.
    pub(crate) fn join(&self, addr: SocketAddr, outbox: Outbox) -> Result<Session, Refusal> {
        let mut st = self.state();
        if st.closing {
            return Err(Refusal::ShuttingDown);
        }
        let id = st.next_id;
        st.next_id += 1;
        let name: Arc<str> = loop {
            st.next_guest += 1;
            let name = format!("guest{}", st.next_guest);
            if !st.names.contains_key(&name) {
                break name.into();
            }
        };
        st.names.insert(name.to_ascii_lowercase(), id);
        let room = st.lobby.clone();

        let mut welcome = format!("*** welcome to smolchat, {name}! /help lists the commands\n");
        if let Some(motd) = &*self.motd.lock().unwrap_or_else(PoisonError::into_inner) {
            welcome.push_str(motd);
        }
        st.enter(id, name.clone(), room.clone(), outbox.clone(), welcome);
        st.clients.insert(
            id,
            Client {
                name: name.clone(),
                room: room.clone(),
                addr,
                outbox,
            },
        );
        st.announce_presence(
            &room,
            || notice(format_args!("{name} joined #{room}")),
            Some(id),
        );
        st.emit(|| Event::Joined {
            name: name.clone(),
            addr,
        });
        st.settle();
        Ok(Session { id, name, room })
    }

    /// Relays a formatted chat line to the sender's room and keeps it in the room's history.
    pub(crate) fn say(&self, session: &Session, line: Arc<str>, text: &str, action: bool) {
        let mut st = self.state();
        if !st.clients.contains_key(&session.id) {
            return;
        }
        st.broadcast(&session.room, &line, Some(session.id));
        let keep = st.history;
        if let Some(room) = st.rooms.get_mut(&session.room).filter(|_| keep > 0) {
            if room.history.len() == keep {
                room.history.pop_front();
            }
            room.history.push_back(line);
        }
        st.relayed += 1;
        st.emit_chat(|| Event::Message {
            name: session.name.clone(),
            room: session.room.clone(),
            text: text.into(),
            action,
        });
        st.settle();
    }

    /// Sends a private message. The error is the text of the error line for the sender.
    pub(crate) fn private(&self, session: &Session, to: &str, text: &str) -> Result<(), String> {
        let mut st = self.state();
        let Some(client) = st.find(to) else {
            return Err(format!("no user named {to}"));
        };
        let (target, target_name) = (client.0, client.1.name.clone());
        st.send(target, &relay(&["[pm from ", &session.name, "] "], text));
        st.send(session.id, &relay(&["[pm to ", &target_name, "] "], text));
        st.relayed += 1;
        st.emit_chat(|| Event::Private {
            from: session.name.clone(),
            to: target_name,
            text: text.into(),
        });
        st.settle();
        Ok(())
    }

    /// Renames a client. The error is the text of the error line for it.
    pub(crate) fn rename(&self, session: &mut Session, new: &str) -> Result<(), String> {
        match check_name(new) {
            Err(NameError::Invalid) => {
                return Err(format!(
                    "invalid name \"{new}\": use 1-16 letters, digits, _ or -"
                ))
            }
            Err(NameError::Reserved) => return Err(format!("the name {new} is reserved")),
            Ok(()) => {}
        }
        if *session.name == *new {
            return Err(format!("you are already {new}"));
        }
        let key = new.to_ascii_lowercase();
        let mut st = self.state();
        if st.names.get(&key).is_some_and(|&other| other != session.id) {
            return Err(format!("the name {new} is taken"));
        }
        let Some(client) = st.clients.get_mut(&session.id) else {
            return Ok(());
        };
        let new: Arc<str> = new.into();
        let old = std::mem::replace(&mut client.name, new.clone());
        st.names.remove(&old.to_ascii_lowercase());
        st.names.insert(key, session.id);
        st.send(session.id, &notice(format_args!("you are now {new}")));
        st.broadcast(
            &session.room,
            &notice(format_args!("{old} is now {new}")),
            Some(session.id),
        );
        st.emit(|| Event::Renamed {
            old,
            new: new.clone(),
        });
        st.settle();
        session.name = new;
        Ok(())
    }

    /// Moves a client to another room, creating it if new. The error is for the client.
    pub(crate) fn change_room(&self, session: &mut Session, room: &str) -> Result<(), String> {
        let key = protocol::room_key(room).map_err(|_| {
            format!("invalid room name \"{room}\": use 1-16 letters, digits, _ or -")
        })?;
        if *session.room == *key {
            return Err(format!("you are already in #{key}"));
        }
        let mut st = self.state();
        let Some(outbox) = st.leave_room(session.id, &session.room) else {
            return Ok(());
        };
        let (old, name) = (session.room.clone(), session.name.clone());
        st.announce_presence(
            &old,
            || notice(format_args!("{name} left #{old} for #{key}")),
            None,
        );
        let new: Arc<str> = st
            .rooms
            .get_key_value(key.as_str())
            .map_or_else(|| key.into(), |(k, _)| k.clone());
        st.enter(session.id, name.clone(), new.clone(), outbox, String::new());
        if let Some(client) = st.clients.get_mut(&session.id) {
            client.room = new.clone();
        }
        st.announce_presence(
            &new,
            || notice(format_args!("{name} joined #{new}")),
            Some(session.id),
        );
        st.emit(|| Event::RoomChanged {
            name,
            from: old,
            to: new.clone(),
        });
        st.settle();
        session.room = new;
        Ok(())
    }

    /// Sends the `/who` listing of the client's room.
    pub(crate) fn who(&self, session: &Session) {
        let mut st = self.state();
        let mut names: Vec<&str> = match st.rooms.get(&session.room) {
            Some(room) => room
                .members
                .iter()
                .filter_map(|(id, _)| st.clients.get(id))
                .map(|c| &*c.name)
                .collect(),
            None => Vec::new(),
        };
        names.sort_unstable_by_key(|n| n.to_ascii_lowercase());
        let reply = notice(format_args!(
            "users in #{} ({}): {}",
            session.room,
            names.len(),
            listing(&names)
        ));
        st.send(session.id, &reply);
        st.settle();
    }

    /// Sends the `/rooms` listing.
    pub(crate) fn list_rooms(&self, session: &Session) {
        let mut st = self.state();
        let mut rooms: Vec<(&str, usize)> = st
            .rooms
            .iter()
            .map(|(key, room)| (&**key, room.members.len()))
            .collect();
        rooms.sort_unstable();
        let rooms: Vec<String> = rooms
            .iter()
            .map(|(key, n)| format!("#{key} ({n})"))
            .collect();
        let reply = notice(format_args!("rooms: {}", listing(&rooms)));
        st.send(session.id, &reply);
        st.settle();
    }

    /// Queues a line for one client (replies and errors).
    pub(crate) fn reply(&self, id: Id, line: &Arc<str>) {
        let mut st = self.state();
        st.send(id, line);
        st.settle();
    }

    /// Removes a client whose connection is ending; announces it unless it is already gone.
    pub(crate) fn leave(&self, id: Id, reason: LeaveReason, farewell: Option<Arc<str>>) {
        let mut st = self.state();
        st.remove(id, reason, farewell);
        st.settle();
    }

    /// Starts a graceful shutdown: refuses new clients, gives every client a last notice and
    /// closes its outbox so its writer ends after flushing.
    pub(crate) fn close_all(&self) {
        let mut st = self.state();
        st.closing = true;
        // Everyone goes at once: no room is left to tell, so clear the tables wholesale instead
        // of taking clients out of their rooms one by one (quadratic in a crowded room).
        let farewell = notice("server is shutting down");
        let clients: Vec<Client> = st.clients.drain().map(|(_, client)| client).collect();
        st.names.clear();
        st.rooms.retain(|key, _| **key == *LOBBY);
        st.rooms
            .values_mut()
            .for_each(|lobby| lobby.members.clear());
        for client in clients {
            let _ = client.outbox.force(farewell.clone());
            client.outbox.close();
            st.emit(|| Event::Left {
                name: client.name,
                reason: LeaveReason::Shutdown,
            });
        }
        st.subscribers.clear();
    }

    // What a Handle asks for.

    pub(crate) fn users(&self) -> Vec<crate::User> {
        let st = self.state();
        st.clients
            .values()
            .map(|c| crate::User {
                name: c.name.to_string(),
                room: c.room.to_string(),
                addr: c.addr,
            })
            .collect()
    }

    pub(crate) fn rooms(&self) -> Vec<crate::RoomInfo> {
        let st = self.state();
        st.rooms
            .iter()
            .map(|(key, room)| crate::RoomInfo {
                name: key.to_string(),
                members: room.members.len(),
            })
            .collect()
    }

    /// Sends a host's notice (`*** text`, sanitized) to its audience.
    pub(crate) fn notice(&self, to: Audience<'_>, text: &str) -> Result<(), crate::NotFound> {
        let mut line = String::from("*** ");
        sanitize_into(&mut line, text);
        line.push('\n');
        let line: Arc<str> = line.into();
        let mut st = self.state();
        match to {
            Audience::Everyone => {
                let ids: Vec<Id> = st.clients.keys().copied().collect();
                for id in ids {
                    st.send(id, &line);
                }
            }
            Audience::Room(room) => {
                let key = protocol::room_key(room)
                    .ok()
                    .filter(|key| st.rooms.contains_key(key.as_str()))
                    .ok_or_else(|| crate::NotFound::Room(room.into()))?;
                st.broadcast(&key, &line, None);
            }
            Audience::User(user) => {
                let id = st
                    .find(user)
                    .ok_or_else(|| crate::NotFound::User(user.into()))?
                    .0;
                st.send(id, &line);
            }
        }
        st.settle();
        Ok(())
    }

    pub(crate) fn kick(&self, user: &str, reason: &str) -> Result<(), crate::NotFound> {
        let clean = sanitize(reason).into_owned();
        let mut st = self.state();
        let id = st
            .find(user)
            .ok_or_else(|| crate::NotFound::User(user.into()))?
            .0;
        st.remove(
            id,
            LeaveReason::Kicked(clean.clone()),
            Some(notice(format_args!("you were kicked: {clean}"))),
        );
        st.settle();
        Ok(())
    }

    pub(crate) fn subscribe(&self, capacity: usize, chat: bool) -> Receiver<Event> {
        let (tx, rx) = async_channel::bounded(capacity.max(1));
        let mut st = self.state();
        if !st.closing {
            st.subscribers.push(Subscriber { tx, chat });
        }
        rx
    }

    pub(crate) fn stats(&self) -> Stats {
        let st = self.state();
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            clients: st.connections,
            connections_accepted: st.accepted,
            connections_refused: st.refused,
            lines_relayed: st.relayed,
            dropped_slow: st.dropped_slow,
            lines_too_long: count(&self.counters.too_long),
            flood_delayed: count(&self.counters.flood_delayed),
            events_dropped: st.events_dropped,
        }
    }
}

/// What the per-address limit counts by: the IPv4 address, or the IPv6 /64 prefix, since one
/// IPv6 host is usually given a whole /64 and could otherwise take every slot by itself.
fn address_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
    }
}

/// Joins up to [`MAX_LISTED`] items with commas, saying how many more there are.
fn listing<T: AsRef<str>>(items: &[T]) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().take(MAX_LISTED).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(item.as_ref());
    }
    if items.len() > MAX_LISTED {
        let _ = write!(out, ", and {} more", items.len() - MAX_LISTED);
    }
    out
}

impl State {
    /// Looks a client up by name, case-insensitively.
    fn find(&self, name: &str) -> Option<(Id, &Client)> {
        let id = *self.names.get(&name.to_ascii_lowercase())?;
        self.clients.get(&id).map(|c| (id, c))
    }

    /// Queues a line for one client; a client over its bound is doomed.
    fn send(&mut self, id: Id, line: &Arc<str>) {
        if let Some(client) = self.clients.get(&id) {
            if let Err(e) = client.outbox.push(line) {
                self.doomed.push((id, e.into()));
            }
        }
    }

    /// Queues a line for every member of a room except `except`.
    fn broadcast(&mut self, room: &str, line: &Arc<str>, except: Option<Id>) {
        let Some(room) = self.rooms.get(room) else {
            return;
        };
        for (id, outbox) in &room.members {
            if Some(*id) != except {
                if let Err(e) = outbox.push(line) {
                    self.doomed.push((*id, e.into()));
                }
            }
        }
    }

    /// Broadcasts a join or leave notice, unless the room is too big for them to be useful.
    fn announce_presence(
        &mut self,
        room: &str,
        line: impl FnOnce() -> Arc<str>,
        except: Option<Id>,
    ) {
        if self
            .rooms
            .get(room)
            .is_some_and(|r| r.members.len() <= self.announce_limit)
        {
            self.broadcast(room, &line(), except);
        }
    }

    /// Adds a client to a room, sending it `greeting`, where it is, and the room's history.
    fn enter(
        &mut self,
        id: Id,
        name: Arc<str>,
        key: Arc<str>,
        outbox: Outbox,
        mut greeting: String,
    ) {
        let room = self.rooms.entry(key.clone()).or_default();
        let _ = writeln!(
            greeting,
            "*** you are {name} in #{key}; users here: {}",
            room.members.len() + 1
        );
        for line in &room.history {
            greeting.push_str("[history] ");
            greeting.push_str(line);
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
            self.doomed.push((id, e.into()));
        }
        room.members.push((id, outbox));
    }

    /// Takes a client out of its room, deleting the room if it empties (except the lobby).
    fn leave_room(&mut self, id: Id, key: &str) -> Option<Outbox> {
        let room = self.rooms.get_mut(key)?;
        let at = room.members.iter().position(|(member, _)| *member == id)?;
        let (_, outbox) = room.members.swap_remove(at);
        if room.members.is_empty() && key != LOBBY {
            self.rooms.remove(key);
        }
        Some(outbox)
    }

    /// Removes a client everywhere, queues its last line, closes its outbox and tells its room.
    fn remove(&mut self, id: Id, reason: LeaveReason, farewell: Option<Arc<str>>) {
        let Some(client) = self.clients.remove(&id) else {
            return;
        };
        self.names.remove(&client.name.to_ascii_lowercase());
        self.leave_room(id, &client.room);
        if let Some(line) = farewell {
            let _ = client.outbox.force(line);
        }
        client.outbox.close();
        if reason == LeaveReason::TooSlow {
            self.dropped_slow += 1;
        }
        if !self.closing {
            let name = &client.name;
            self.announce_presence(
                &client.room,
                || notice(format_args!("{name} left ({reason})")),
                None,
            );
        }
        self.emit(|| Event::Left {
            name: client.name,
            reason,
        });
    }

    /// Removes the clients a delivery found over their bound; their leave notices may doom more.
    fn settle(&mut self) {
        while let Some((id, reason)) = self.doomed.pop() {
            let farewell = (reason == LeaveReason::TooSlow)
                .then(|| error("disconnected: you fell too far behind (queue full)"));
            self.remove(id, reason, farewell);
        }
    }

    /// Offers an event about who is where to every subscriber.
    fn emit(&mut self, event: impl FnOnce() -> Event) {
        self.offer(false, event);
    }

    /// Offers a chat line's event to the subscribers that want chat lines.
    fn emit_chat(&mut self, event: impl FnOnce() -> Event) {
        self.offer(true, event);
    }

    /// Offers an event without waiting; a full subscriber misses it. The event is built only if
    /// someone wants it, so chat lines cost nothing when nobody listens to them.
    fn offer(&mut self, chat: bool, event: impl FnOnce() -> Event) {
        if !self.subscribers.iter().any(|s| s.chat || !chat) {
            return;
        }
        let event = event();
        let mut dropped = 0;
        self.subscribers.retain(|s| {
            if chat && !s.chat {
                return true;
            }
            match s.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(async_channel::TrySendError::Full(_)) => {
                    dropped += 1;
                    true
                }
                Err(async_channel::TrySendError::Closed(_)) => false,
            }
        });
        self.events_dropped += dropped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_limit_groups_ipv6_by_prefix() {
        let group =
            |ip: &str| address_group(ip.parse::<IpAddr>().expect("an address").to_canonical());
        assert_eq!(group("2001:db8:1:2:aaaa::1"), group("2001:db8:1:2:ffff::9"));
        assert_ne!(group("2001:db8:1:2::1"), group("2001:db8:1:3::1"));
        assert_eq!(
            group("192.0.2.7"),
            "192.0.2.7".parse::<IpAddr>().expect("an address")
        );
        assert_eq!(group("::ffff:192.0.2.7"), group("192.0.2.7"));
    }
}
