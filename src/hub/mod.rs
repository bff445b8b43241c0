//! The hub: who is connected, which room they are in, and delivering lines to them.
//!
//! All shared state sits behind one `Mutex`, held only for non-blocking work: delivery is
//! `try_send` into each recipient's [`Outbox`], and nothing `.await`s while holding it. Because
//! every delivery happens under the lock, all members of a room see its lines in the same order.
//! The state is taken through [`Hub::lock`] only, whose guard removes the clients a delivery
//! found over their bound when it is released, so no verb can forget to.
//!
//! # Layout
//!
//! - `directory`: joined clients by id and by name, guest numbering; a client's name and room.
//! - `rooms`: each room's members and history; [`Rooms::broadcast`](rooms::Rooms::broadcast) is
//!   where a line fans out.
//! - `admission`: open connections in all and per address, where those limits are enforced.
//! - `subscribers`: the host's event queues.
//! - `counters`: what [`Stats`] reports.

mod admission;
mod counters;
mod directory;
mod rooms;
mod subscribers;

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};

use crate::auth;
use crate::event::{Event, LeaveReason, Refusal};
use crate::handle::{Ban, NotFound, RoomInfo, Stats, User};
use crate::outbox::Outbox;
use crate::protocol::{self, check_name, CommandError, NameError};
use crate::sanitize::sanitize;
use crate::{Cidr, Config};

use admission::Admission;
pub(crate) use counters::Counters;
use counters::Tally;
use directory::{Client, Directory};
use rooms::Rooms;
use subscribers::Subscribers;

/// Identifies one connection for its whole life, whatever its name.
pub(crate) type Id = u64;

/// The room every client starts in; it exists even when empty.
pub(crate) const LOBBY: &str = "lobby";

/// Clients found over their queue bound or closed during a delivery, removed once it is over.
type Doomed = Vec<(Id, LeaveReason)>;

/// Who a host's notice goes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Audience<'a> {
    Everyone,
    Room(&'a str),
    User(&'a str),
}

/// Why `/oper` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OperError {
    /// No operator password is configured.
    NoOperators,
    /// Wrong password: the client's answer waits this long.
    Wrong(Duration),
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
}

/// Everything behind the lock, one part per concern.
#[derive(Debug)]
struct State {
    directory: Directory,
    rooms: Rooms,
    admission: Admission,
    subscribers: Subscribers,
    tally: Tally,
    /// Set by [`Hub::close_all`]: nobody joins any more.
    closing: bool,
    doomed: Doomed,
}

/// The locked state. Releasing it first removes the clients a delivery doomed, whose leave
/// notices may doom more.
struct Locked<'a>(MutexGuard<'a, State>);

impl Deref for Locked<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        &self.0
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.0
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Not while unwinding: a second panic would abort; the next lock settles instead.
        if !std::thread::panicking() {
            self.0.settle();
        }
    }
}

impl Hub {
    pub(crate) fn new(config: Config, local_addr: SocketAddr) -> Hub {
        let state = State {
            directory: Directory::default(),
            rooms: Rooms::new(config.history, config.announce_limit),
            admission: Admission::default(),
            subscribers: Subscribers::default(),
            tally: Tally::default(),
            closing: false,
            doomed: Doomed::new(),
        };
        Hub {
            config,
            local_addr,
            state: Mutex::new(state),
            counters: Counters::default(),
            stop: async_channel::bounded(1),
        }
    }

    /// Locks the state: the one way in. A panic elsewhere never leaves it half-changed in a way
    /// that matters more than stopping the whole server would, so a poisoned lock is used as
    /// it is.
    fn lock(&self) -> Locked<'_> {
        Locked(self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Asks the server to stop.
    pub(crate) fn stop(&self) {
        self.stop.0.close();
    }

    /// Completes once [`stop`](Self::stop) was called.
    pub(crate) async fn stopped(&self) {
        let _ = self.stop.1.recv().await;
    }

    // The accept loop's verbs.

    /// Counts a new connection, or says why it must be refused.
    pub(crate) fn admit(&self, addr: SocketAddr) -> Result<(), Refusal> {
        let mut st = self.lock();
        let admitted = if st.closing {
            Err(Refusal::ShuttingDown)
        } else {
            st.admission.admit(addr, &self.config)
        };
        match &admitted {
            Ok(()) => st.tally.accepted += 1,
            Err(reason) => {
                st.tally.refused += 1;
                let reason = reason.clone();
                st.emit(|| Event::Refused { addr, reason });
            }
        }
        admitted
    }

    /// Forgets a connection counted by [`admit`](Self::admit).
    pub(crate) fn release(&self, addr: SocketAddr) {
        self.lock().admission.release(addr);
    }

    // A connection's verbs: the protocol.

    /// Registers an admitted connection: gives it a name, welcomes it, puts it in the lobby.
    pub(crate) fn join(&self, addr: SocketAddr, outbox: Outbox) -> Result<Id, Refusal> {
        let mut st = self.lock();
        if st.closing {
            return Err(Refusal::ShuttingDown);
        }
        // Banned since it was admitted (while it was giving a private server's password).
        if let Some(reason) = st.admission.banned(addr.ip(), Instant::now()) {
            return Err(Refusal::Banned(reason));
        }
        let st = &mut *st;
        let (id, name) = st.directory.register(addr, LOBBY.into(), outbox.clone());
        let welcome = protocol::welcome(&name, self.config.motd.as_deref());
        let room = st
            .rooms
            .enter(id, &name, LOBBY, outbox, welcome, &mut st.doomed);
        if let Some(client) = st.directory.get_mut(id) {
            client.room = room.clone();
        }
        st.rooms.announce(
            &room,
            || protocol::joined(&name, &room),
            Some(id),
            &mut st.doomed,
        );
        st.emit(|| Event::Joined { name, addr });
        Ok(id)
    }

    /// A client's name and room, for the host's filter; `None` once it left.
    pub(crate) fn identity(&self, id: Id) -> Option<(Arc<str>, Arc<str>)> {
        let st = self.lock();
        let client = st.directory.get(id)?;
        Some((client.name.clone(), client.room.clone()))
    }

    /// Relays a chat line (`action` for `/me`) to the sender's room and keeps it in the room's
    /// history.
    pub(crate) fn say(&self, id: Id, text: &str, action: bool) {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(client) = st.directory.get(id) else {
            return;
        };
        if client.muted {
            st.send(id, &protocol::error(CommandError::Muted));
            return;
        }
        let (name, room) = (client.name.clone(), client.room.clone());
        let line = protocol::chat(&name, text, action);
        st.rooms.broadcast(&room, &line, Some(id), &mut st.doomed);
        st.rooms.remember(&room, line);
        st.tally.relayed += 1;
        st.emit_chat(|| Event::Message {
            name,
            room,
            text: text.into(),
            action,
        });
    }

    /// Sends a private message, to anyone in any room.
    pub(crate) fn private(&self, id: Id, to: &str, text: &str) -> Result<(), CommandError> {
        let mut st = self.lock();
        let Some(from) = st.directory.get(id).map(|c| c.name.clone()) else {
            return Ok(());
        };
        if st.is_muted(id) {
            return Err(CommandError::Muted);
        }
        let Some((target, client)) = st.directory.find(to) else {
            return Err(CommandError::NoSuchUser(to.into()));
        };
        let target_name = client.name.clone();
        st.send(target, &protocol::pm_from(&from, text));
        st.send(id, &protocol::pm_to(&target_name, text));
        st.tally.relayed += 1;
        st.emit_chat(|| Event::Private {
            from,
            to: target_name,
            text: text.into(),
        });
        Ok(())
    }

    /// Renames a client.
    pub(crate) fn rename(&self, id: Id, new: &str) -> Result<(), CommandError> {
        match check_name(new) {
            Err(NameError::Invalid) => return Err(CommandError::InvalidName(new.into())),
            Err(NameError::Reserved) => return Err(CommandError::ReservedName(new.into())),
            Ok(()) => {}
        }
        let mut st = self.lock();
        // Renames are announced: a muted client could talk through them.
        if st.is_muted(id) {
            return Err(CommandError::Muted);
        }
        let old = st.directory.rename(id, new)?;
        let Some(client) = st.directory.get(id) else {
            return Ok(());
        };
        let (new, room) = (client.name.clone(), client.room.clone());
        st.send(id, &protocol::you_are_now(&new));
        st.broadcast(&room, &protocol::renamed(&old, &new), Some(id));
        st.emit(|| Event::Renamed { old, new });
        Ok(())
    }

    /// Moves a client to another room, creating it if new.
    pub(crate) fn change_room(&self, id: Id, room: &str) -> Result<(), CommandError> {
        let key = protocol::room_key(room).map_err(|_| CommandError::InvalidRoom(room.into()))?;
        let mut st = self.lock();
        let st = &mut *st;
        let Some(client) = st.directory.get(id) else {
            return Ok(());
        };
        let (name, old) = (client.name.clone(), client.room.clone());
        if *old == *key {
            return Err(CommandError::AlreadyInRoom(old));
        }
        let Some(outbox) = st.rooms.leave(id, &old) else {
            return Ok(());
        };
        st.rooms.announce(
            &old,
            || protocol::moved(&name, &old, &key),
            None,
            &mut st.doomed,
        );
        let new = st
            .rooms
            .enter(id, &name, &key, outbox, String::new(), &mut st.doomed);
        if let Some(client) = st.directory.get_mut(id) {
            client.room = new.clone();
        }
        st.rooms.announce(
            &new,
            || protocol::joined(&name, &new),
            Some(id),
            &mut st.doomed,
        );
        st.emit(|| Event::RoomChanged {
            name,
            from: old,
            to: new,
        });
        Ok(())
    }

    /// Sends the `/who` listing of the client's room.
    pub(crate) fn who(&self, id: Id) {
        let mut st = self.lock();
        let Some(room) = st.directory.get(id).map(|c| c.room.clone()) else {
            return;
        };
        let names: Vec<&str> = st
            .rooms
            .members(&room)
            .filter_map(|member| st.directory.get(member))
            .map(|c| &*c.name)
            .collect();
        let reply = protocol::who(&room, names);
        st.send(id, &reply);
    }

    /// Sends the `/rooms` listing.
    pub(crate) fn list_rooms(&self, id: Id) {
        let mut st = self.lock();
        let mut rooms: Vec<(&str, usize, Option<&str>)> = st
            .rooms
            .sizes()
            .map(|(key, n, topic)| (&**key, n, topic.map(|t| &**t)))
            .collect();
        rooms.sort_unstable();
        let reply = protocol::rooms(&rooms);
        st.send(id, &reply);
    }

    /// Queues a line for one client (replies and errors).
    pub(crate) fn reply(&self, id: Id, line: &Arc<str>) {
        self.lock().send(id, line);
    }

    /// Removes a client whose connection is ending; announces it unless it is already gone.
    pub(crate) fn leave(&self, id: Id, reason: LeaveReason, farewell: Option<Arc<str>>) {
        self.lock().remove(id, reason, farewell);
    }

    /// Starts a graceful shutdown: refuses new clients, gives every client a last notice and
    /// closes its outbox so its writer ends after flushing.
    pub(crate) fn close_all(&self) {
        let mut st = self.lock();
        st.closing = true;
        // Everyone goes at once: no room is left to tell, so clear the tables wholesale instead
        // of taking clients out of their rooms one by one (quadratic in a crowded room).
        let farewell = protocol::shutting_down();
        let clients: Vec<Client> = st.directory.drain();
        st.rooms.clear();
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

    /// Shows the client's room's topic (`None`), or sets it (clears it if empty).
    pub(crate) fn topic(&self, id: Id, text: Option<&str>) -> Result<(), CommandError> {
        let mut st = self.lock();
        let Some(client) = st.directory.get(id) else {
            return Ok(());
        };
        let (name, room, operator, muted) = (
            client.name.clone(),
            client.room.clone(),
            client.operator,
            client.muted,
        );
        let Some(text) = text else {
            let reply = protocol::topic(&room, st.rooms.topic(&room).map(|t| &**t));
            st.send(id, &reply);
            return Ok(());
        };
        if muted {
            return Err(CommandError::Muted);
        }
        if self.config.topic_ops_only && !operator {
            return Err(CommandError::NotOperator);
        }
        if text.chars().count() > protocol::MAX_TOPIC {
            return Err(CommandError::TopicTooLong);
        }
        let topic: Option<Arc<str>> = Some(text).filter(|t| !t.is_empty()).map(Arc::from);
        st.rooms.set_topic(&room, topic.clone());
        st.broadcast(
            &room,
            &protocol::topic_set(&name, &room, topic.as_deref()),
            None,
        );
        st.emit(|| Event::TopicChanged {
            room,
            topic,
            by: name,
        });
        Ok(())
    }

    // Operators.

    /// Makes a client an operator if `password` is the operator password.
    pub(crate) fn oper(&self, id: Id, password: &str) -> Result<(), OperError> {
        let Some(secret) = &self.config.oper_password else {
            return Err(OperError::NoOperators);
        };
        let right = auth::same_secret(password, secret);
        let mut st = self.lock();
        let Some(client) = st.directory.get_mut(id) else {
            return Ok(());
        };
        let (name, addr) = (client.name.clone(), client.addr);
        if right {
            client.operator = true;
            st.send(id, &protocol::opered());
            st.emit(|| Event::Opered { name, addr });
            Ok(())
        } else {
            client.oper_failures = client.oper_failures.saturating_add(1);
            let wait = auth::penalty(self.config.password_delay, client.oper_failures);
            st.emit(|| Event::OperFailed { name, addr });
            Err(OperError::Wrong(wait))
        }
    }

    /// `/kick`: disconnects a user; the reason names the operator.
    pub(crate) fn kick_by(
        &self,
        id: Id,
        user: &str,
        reason: Option<&str>,
    ) -> Result<(), CommandError> {
        let mut st = self.lock();
        let operator = st.operator(id)?;
        let (target, client) = st
            .directory
            .find(user)
            .ok_or_else(|| CommandError::NoSuchUser(user.into()))?;
        let name = client.name.clone();
        let reason: Arc<str> = protocol::kick_reason(&operator, reason).into();
        let farewell = protocol::kicked(&reason);
        st.remove(target, LeaveReason::Kicked(reason), Some(farewell));
        st.send(id, &protocol::kick_done(&name));
        Ok(())
    }

    /// `/ban`: bans a user's address (found by name) or an address or range given.
    pub(crate) fn ban_by(
        &self,
        id: Id,
        target: &str,
        duration: Option<Duration>,
        reason: Option<&str>,
    ) -> Result<(), CommandError> {
        let mut st = self.lock();
        let operator = st.operator(id)?;
        let range = match target.parse::<Cidr>() {
            Ok(range) => range,
            Err(_) => st
                .directory
                .find(target)
                .map(|(_, client)| Cidr::host_group(client.addr.ip()))
                .ok_or_else(|| CommandError::NoSuchUser(target.into()))?,
        };
        let range = st.ban(
            &self.config,
            range,
            duration,
            reason.unwrap_or_default(),
            Some(operator),
        )?;
        st.send(id, &protocol::ban_done(&range, duration));
        Ok(())
    }

    /// Bans a range, for the host.
    pub(crate) fn ban(
        &self,
        range: Cidr,
        duration: Option<Duration>,
        reason: &str,
    ) -> Result<(), CommandError> {
        let mut st = self.lock();
        st.ban(&self.config, range, duration, reason, None)
            .map(drop)
    }

    /// `/unban`.
    pub(crate) fn unban_by(&self, id: Id, target: &str) -> Result<(), CommandError> {
        let range = target
            .parse::<Cidr>()
            .map_err(|_| CommandError::InvalidRange(target.into()))?;
        let mut st = self.lock();
        let operator = st.operator(id)?;
        let range = st.unban(range, Some(operator))?;
        st.send(id, &protocol::unban_done(&range));
        Ok(())
    }

    /// Lifts a ban for the host.
    pub(crate) fn unban(&self, range: Cidr) -> Result<(), CommandError> {
        self.lock().unban(range, None).map(drop)
    }

    /// `/bans`.
    pub(crate) fn list_bans(&self, id: Id) -> Result<(), CommandError> {
        let mut st = self.lock();
        st.operator(id)?;
        let reply = protocol::bans(&st.admission.bans(Instant::now()));
        st.send(id, &reply);
        Ok(())
    }

    /// `/mute` and `/unmute`.
    pub(crate) fn mute_by(&self, id: Id, user: &str, muted: bool) -> Result<(), CommandError> {
        let mut st = self.lock();
        let operator = st.operator(id)?;
        let name = st.set_muted(user, muted, Some(operator))?;
        st.send(id, &protocol::mute_done(&name, muted));
        Ok(())
    }

    /// `/stats`.
    pub(crate) fn stats_for(&self, id: Id) -> Result<(), CommandError> {
        let mut st = self.lock();
        st.operator(id)?;
        let stats = st.stats(&self.counters);
        let reply = protocol::stats(&stats, st.admission.bans(Instant::now()).len());
        st.send(id, &reply);
        Ok(())
    }

    /// Reports a wrong `/pass` from a connection that has not joined.
    pub(crate) fn pass_failed(&self, addr: SocketAddr) {
        self.lock().emit(|| Event::PassFailed { addr });
    }

    // What a Handle asks for.

    pub(crate) fn bans(&self) -> Vec<Ban> {
        self.lock().admission.bans(Instant::now())
    }

    pub(crate) fn set_muted(&self, user: &str, muted: bool) -> Result<(), NotFound> {
        self.lock()
            .set_muted(user, muted, None)
            .map(drop)
            .map_err(|_| NotFound::User(user.into()))
    }

    pub(crate) fn users(&self) -> Vec<User> {
        let st = self.lock();
        st.directory
            .clients()
            .map(|c| User {
                name: c.name.clone(),
                room: c.room.clone(),
                addr: c.addr,
            })
            .collect()
    }

    pub(crate) fn rooms(&self) -> Vec<RoomInfo> {
        let st = self.lock();
        st.rooms
            .sizes()
            .map(|(key, members, topic)| RoomInfo {
                name: key.clone(),
                members,
                topic: topic.cloned(),
            })
            .collect()
    }

    /// Sends a host's notice (`*** text`, sanitized) to its audience.
    pub(crate) fn notice(&self, to: Audience<'_>, text: &str) -> Result<(), NotFound> {
        let line = protocol::host_notice(text);
        let mut st = self.lock();
        match to {
            Audience::Everyone => {
                let ids: Vec<Id> = st.directory.ids().collect();
                for id in ids {
                    st.send(id, &line);
                }
            }
            Audience::Room(room) => {
                let key = protocol::room_key(room)
                    .ok()
                    .filter(|key| st.rooms.contains(key))
                    .ok_or_else(|| NotFound::Room(room.into()))?;
                st.broadcast(&key, &line, None);
            }
            Audience::User(user) => {
                let (id, _) = st
                    .directory
                    .find(user)
                    .ok_or_else(|| NotFound::User(user.into()))?;
                st.send(id, &line);
            }
        }
        Ok(())
    }

    pub(crate) fn kick(&self, user: &str, reason: &str) -> Result<(), NotFound> {
        let clean: Arc<str> = sanitize(reason).into();
        let mut st = self.lock();
        let (id, _) = st
            .directory
            .find(user)
            .ok_or_else(|| NotFound::User(user.into()))?;
        let farewell = protocol::kicked(&clean);
        st.remove(id, LeaveReason::Kicked(clean), Some(farewell));
        Ok(())
    }

    pub(crate) fn subscribe(&self, capacity: usize, chat: bool) -> Receiver<Event> {
        let mut st = self.lock();
        let events = st.subscribers.add(capacity, chat);
        if st.closing {
            // Shut down already: the channel closes at once.
            st.subscribers.clear();
        }
        events
    }

    pub(crate) fn stats(&self) -> Stats {
        self.lock().stats(&self.counters)
    }
}

impl State {
    fn stats(&self, counters: &Counters) -> Stats {
        self.tally
            .stats(counters, self.admission.open(), self.subscribers.dropped())
    }

    fn is_muted(&self, id: Id) -> bool {
        self.directory.get(id).is_some_and(|c| c.muted)
    }

    /// The name of an operator, or why a client may not use an operator command.
    fn operator(&self, id: Id) -> Result<Arc<str>, CommandError> {
        match self.directory.get(id) {
            Some(client) if client.operator => Ok(client.name.clone()),
            _ => Err(CommandError::NotOperator),
        }
    }

    /// Bans a range (a single address widened to its [`Cidr::host_group`]) and disconnects
    /// the clients in it. Returns the range banned.
    fn ban(
        &mut self,
        config: &Config,
        range: Cidr,
        duration: Option<Duration>,
        reason: &str,
        by: Option<Arc<str>>,
    ) -> Result<Cidr, CommandError> {
        let range = ban_group(range);
        let reason: Arc<str> = sanitize(reason).into();
        let until = admission::ban_end(Instant::now(), duration);
        self.admission
            .ban(range, until, reason.clone(), config)
            .map_err(|full| CommandError::BanListFull(full.0))?;
        let inside: Vec<Id> = self
            .directory
            .ids()
            .filter(|id| {
                self.directory
                    .get(*id)
                    .is_some_and(|c| range.contains(c.addr.ip()))
            })
            .collect();
        for id in inside {
            let farewell = protocol::banned(&reason);
            self.remove(id, LeaveReason::Banned(reason.clone()), Some(farewell));
        }
        self.emit(|| Event::Banned {
            range,
            duration,
            reason,
            by,
        });
        Ok(range)
    }

    /// Lifts the ban on `range` (a single address meaning its [`Cidr::host_group`]).
    fn unban(&mut self, range: Cidr, by: Option<Arc<str>>) -> Result<Cidr, CommandError> {
        let range = ban_group(range);
        if !self.admission.unban(range) {
            return Err(CommandError::NotBanned(range));
        }
        self.emit(|| Event::Unbanned { range, by });
        Ok(range)
    }

    /// Mutes or unmutes a user, who is told; returns its name.
    fn set_muted(
        &mut self,
        user: &str,
        muted: bool,
        by: Option<Arc<str>>,
    ) -> Result<Arc<str>, CommandError> {
        let (id, _) = self
            .directory
            .find(user)
            .ok_or_else(|| CommandError::NoSuchUser(user.into()))?;
        let Some(client) = self.directory.get_mut(id) else {
            return Err(CommandError::NoSuchUser(user.into()));
        };
        client.muted = muted;
        let name = client.name.clone();
        self.send(id, &protocol::you_were_muted(muted));
        self.emit(|| Event::Muted {
            name: name.clone(),
            muted,
            by,
        });
        Ok(name)
    }

    /// Queues a line for one client; a client over its bound is doomed.
    fn send(&mut self, id: Id, line: &Arc<str>) {
        if let Some(client) = self.directory.get(id) {
            if let Err(e) = client.outbox.push(line) {
                self.doomed.push((id, e.into()));
            }
        }
    }

    /// Queues a line for every member of a room except `except`.
    fn broadcast(&mut self, room: &str, line: &Arc<str>, except: Option<Id>) {
        self.rooms.broadcast(room, line, except, &mut self.doomed);
    }

    /// Removes a client everywhere, queues its last line, closes its outbox and tells its room.
    fn remove(&mut self, id: Id, reason: LeaveReason, farewell: Option<Arc<str>>) {
        let Some(client) = self.directory.remove(id) else {
            return;
        };
        self.rooms.leave(id, &client.room);
        if let Some(line) = farewell {
            let _ = client.outbox.force(line);
        }
        client.outbox.close();
        if reason == LeaveReason::TooSlow {
            self.tally.dropped_slow += 1;
        }
        if !self.closing {
            let name = &client.name;
            self.rooms.announce(
                &client.room,
                || protocol::left(name, &reason),
                None,
                &mut self.doomed,
            );
        }
        self.emit(|| Event::Left {
            name: client.name,
            reason,
        });
    }

    /// Removes the clients a delivery found over their bound; their leave notices may doom more.
    /// Called by [`Locked`]'s `drop` only.
    fn settle(&mut self) {
        while let Some((id, reason)) = self.doomed.pop() {
            let farewell = (reason == LeaveReason::TooSlow).then(protocol::too_slow);
            self.remove(id, reason, farewell);
        }
    }

    /// Offers an event about who is where to every subscriber.
    fn emit(&mut self, event: impl FnOnce() -> Event) {
        self.subscribers.offer(false, event);
    }

    /// Offers a chat line's event to the subscribers that want chat lines.
    fn emit_chat(&mut self, event: impl FnOnce() -> Event) {
        self.subscribers.offer(true, event);
    }
}

/// What a ban on `range` covers: a single IPv6 address (or a range narrower than /64) is
/// widened to its /64, as one IPv6 host usually holds a whole /64.
fn ban_group(range: Cidr) -> Cidr {
    let group = Cidr::host_group(range.addr());
    if group.prefix() < range.prefix() {
        group
    } else {
        range
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::outbox;

    fn addr() -> SocketAddr {
        "192.0.2.1:1000".parse().expect("an address")
    }

    #[test]
    fn a_client_a_delivery_finds_full_is_gone_when_the_verb_returns() {
        let hub = Hub::new(Config::default(), addr());
        let (roomy, _roomy_inbox) = outbox(100, 1 << 20);
        let sender = hub.join(addr(), roomy).expect("joined");
        // Room for its greeting only (an empty queue always takes that).
        let (cramped, _cramped_inbox) = outbox(1, 1 << 20);
        hub.join(addr(), cramped).expect("joined");
        assert_eq!(hub.users().len(), 2);
        hub.say(sender, "hello", false);
        let users = hub.users();
        assert_eq!(users.len(), 1, "no verb has to remember to settle");
        assert_eq!(&*users[0].name, "guest1");
        assert_eq!(hub.stats().dropped_slow, 1);
    }

    #[test]
    fn renames_and_moves_change_the_one_record_of_a_client() {
        let hub = Hub::new(Config::default(), addr());
        let (out, _inbox) = outbox(100, 1 << 20);
        let id = hub.join(addr(), out).expect("joined");
        hub.rename(id, "alice").expect("free name");
        hub.change_room(id, "#Den").expect("valid room");
        assert_eq!(
            hub.identity(id)
                .map(|(name, room)| (name.to_string(), room.to_string())),
            Some(("alice".into(), "den".into()))
        );
        assert_eq!(
            hub.change_room(id, "den"),
            Err(CommandError::AlreadyInRoom("den".into()))
        );
    }
}
