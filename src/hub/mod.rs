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
//! - `directory`: joined clients by id and by name, guest numbering; a client's name, room and
//!   preferences (away, ignore list, timestamps).
//! - `rooms`: each room's members and history; [`Rooms::broadcast`](rooms::Rooms::broadcast) is
//!   where a line fans out.
//! - `admission`: open connections in all and per address, where those limits are enforced.
//! - `subscribers`: the host's event queues.
//! - `counters`: what [`Stats`] reports.
//! - `cluster` (feature `redis`): room lines, names, listings and history across nodes.

mod admission;
#[cfg(feature = "redis")]
mod cluster;
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
use crate::outbox::{Backlog, Item, Outbox, Pace};
use crate::protocol::{self, check_name, CommandError, NameError, Time, Whois};
use crate::sanitize::sanitize;
use crate::{Cidr, Config};

use admission::{Admission, Secret};
pub(crate) use counters::Counters;
use counters::Tally;
use directory::{Away, Client, Directory};
use rooms::Rooms;
use subscribers::Subscribers;

/// Identifies one connection for its whole life, whatever its name.
pub(crate) type Id = u64;

/// The room every client starts in; it exists even when empty.
pub(crate) const LOBBY: &str = "lobby";

/// Clients found over their queue bound or closed during a delivery, removed once it is over.
type Doomed = Vec<(Id, LeaveReason)>;

/// Why a client's verb did nothing.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The command failed; the error line goes back to the client.
    Command(CommandError),
    /// Someone it would deliver to has a full queue: wait for them with [`Held::wait`], then
    /// do it again.
    Held(Held),
    /// The client is no longer in the chat (kicked, too slow, shut down): it may do nothing
    /// more.
    Gone,
}

impl From<CommandError> for Refused {
    fn from(e: CommandError) -> Refused {
        Refused::Command(e)
    }
}

/// The congested recipients a sender must wait for before its delivery can go ahead, and in a
/// cluster the link to Redis when its queue is congested.
#[derive(Debug, Default)]
pub(crate) struct Held {
    paced: Vec<(Id, Pace)>,
    #[cfg(feature = "redis")]
    link: Option<crate::cluster::Link>,
}

impl Held {
    /// Looks at one recipient: one that is paced joins the list, one too slow to wait for is
    /// doomed.
    fn check(&mut self, id: Id, outbox: &Outbox, doomed: &mut Doomed) {
        match outbox.backlog() {
            Backlog::Clear => {}
            Backlog::Paced(pace) => self.paced.push((id, pace)),
            Backlog::TooSlow => doomed.push((id, LeaveReason::TooSlow)),
        }
    }

    /// `Err` if there is anyone to wait for.
    fn verdict(self) -> Result<(), Refused> {
        #[cfg(feature = "redis")]
        let clear = self.paced.is_empty() && self.link.is_none();
        #[cfg(not(feature = "redis"))]
        let clear = self.paced.is_empty();
        if clear {
            Ok(())
        } else {
            Err(Refused::Held(self))
        }
    }

    /// Waits until every recipient has drained or left, disconnecting those that turn out too
    /// slow to wait for (see [`Pace::wait`]).
    pub(crate) async fn wait(self, hub: &Hub) {
        for (id, pace) in self.paced {
            if pace.wait().await.is_err() {
                hub.drop_slow(id, pace.outbox());
            }
        }
        #[cfg(feature = "redis")]
        if let Some(link) = self.link {
            link.drained().await;
        }
    }
}

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
    /// The message of the day as sent, formatted once and shared by every client's queue.
    motd: Option<Arc<str>>,
    /// Set by [`Hub::close_all`]: nobody joins any more.
    closing: bool,
    doomed: Doomed,
    #[cfg(feature = "redis")]
    cluster: cluster::Cluster,
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
            // In a cluster the history is kept in Redis, for every node.
            rooms: Rooms::new(
                if config.redis.is_some() {
                    0
                } else {
                    config.history
                },
                config.announce_limit,
            ),
            admission: Admission::default(),
            subscribers: Subscribers::default(),
            tally: Tally::default(),
            motd: config.motd.as_deref().map(protocol::motd),
            closing: false,
            doomed: Doomed::new(),
            #[cfg(feature = "redis")]
            cluster: cluster::Cluster::default(),
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

    /// Replaces the message of the day for clients that connect from now on.
    pub(crate) fn set_motd(&self, motd: Option<&str>) {
        self.lock().motd = motd.map(protocol::motd);
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
    #[cfg(test)]
    pub(crate) fn join(&self, addr: SocketAddr, outbox: Outbox) -> Result<Id, Refusal> {
        self.join_as(addr, outbox, None)
    }

    /// [`join`](Self::join), under an id and name given out before (by
    /// [`cluster_guest`](Self::cluster_guest)).
    pub(crate) fn join_as(
        &self,
        addr: SocketAddr,
        outbox: Outbox,
        named: Option<(Id, Arc<str>)>,
    ) -> Result<Id, Refusal> {
        let mut st = self.lock();
        let refused = if st.closing {
            Some(Refusal::ShuttingDown)
        } else {
            // Banned since it was admitted (while it was giving a private server's password).
            st.admission
                .banned(addr.ip(), Instant::now())
                .map(Refusal::Banned)
        };
        if let Some(refusal) = refused {
            if let Some((id, name)) = &named {
                st.cluster_release(name, *id);
            }
            return Err(refusal);
        }
        let st = &mut *st;
        let (id, client) =
            st.directory
                .register(addr, LOBBY.into(), outbox, self.config.timestamps, named);
        let name = client.name.clone();
        // A new queue is empty: what a newcomer gets first needs no pacing. The MOTD is one
        // copy for every client, however long (up to `MAX_MOTD`), unless it must be stamped.
        let stamp = |lines: &Arc<str>| match client.timestamps {
            true => protocol::stamped(Time::now(), lines),
            false => lines.clone(),
        };
        let _ = client.outbox.force(stamp(&protocol::welcome(&name)));
        if let Some(motd) = &st.motd {
            let _ = client.outbox.force(stamp(motd));
        }
        let room = st.rooms.enter(id, client, LOBBY);
        if let Some(client) = st.directory.get_mut(id) {
            client.room = room.clone();
        }
        st.cluster_enter(&room, id, &name, self.config.history > 0);
        st.announce(&room, || protocol::joined(&name, &room), Some(id));
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
    pub(crate) fn say(&self, id: Id, text: &str, action: bool) -> Result<(), Refused> {
        let mut st = self.lock();
        let st = &mut *st;
        let client = st.directory.get_mut(id).ok_or(Refused::Gone)?;
        if client.muted {
            return Err(CommandError::Muted.into());
        }
        let (name, room) = (client.name.clone(), client.room.clone());
        let hidden_from = Some(&client.ignored_by);
        let mut held = Held::default();
        st.rooms
            .hold(&room, Some(id), hidden_from, &mut held, &mut st.doomed);
        st.hold_link(&mut held);
        held.verdict()?;
        let Some(client) = st.directory.get_mut(id) else {
            return Err(Refused::Gone);
        };
        client.last_active = Instant::now();
        let line = protocol::chat(&name, text, action);
        if !st.publish(&room, Some(id), &line, true) {
            let Some(client) = st.directory.get(id) else {
                return Err(Refused::Gone);
            };
            let hidden_from = Some(&client.ignored_by);
            st.rooms
                .broadcast(&room, &line, Some(id), hidden_from, &mut st.doomed);
            st.rooms.remember(&room, id, Time::now(), line);
        }
        st.tally.relayed += 1;
        st.emit_chat(|| Event::Message {
            name,
            room,
            text: text.into(),
            action,
        });
        Ok(())
    }

    /// Sends a private message, to anyone in any room. If the recipient ignores the sender it
    /// is not delivered, and nothing tells the sender. If the recipient is away, the sender gets
    /// the away message, once per sender for each `/away`.
    pub(crate) fn private(&self, id: Id, to: &str, text: &str) -> Result<(), Refused> {
        let mut st = self.lock();
        let st = &mut *st;
        if st.directory.get(id).is_none() {
            return Err(Refused::Gone);
        }
        if st.is_muted(id) {
            return Err(CommandError::Muted.into());
        }
        let Some((target, client)) = st.directory.find(to) else {
            return Err(CommandError::NoSuchUser(to.into()).into());
        };
        let ignored = client.ignoring.contains(&id);
        let mut held = Held::default();
        if !ignored {
            held.check(target, &client.outbox, &mut st.doomed);
        }
        st.hold(id, &mut held);
        held.verdict()?;
        let Some(sender) = st.directory.get_mut(id) else {
            return Err(Refused::Gone);
        };
        sender.last_active = Instant::now();
        let from = sender.name.clone();
        let Some(client) = st.directory.get_mut(target) else {
            return Err(CommandError::NoSuchUser(to.into()).into());
        };
        let target_name = client.name.clone();
        let away_reply = client.away.as_mut().and_then(|away| {
            away.tell(id)
                .then(|| protocol::is_away(&target_name, &away.message))
        });
        if !ignored {
            st.send(target, &protocol::pm_from(&from, text));
        }
        st.send(id, &protocol::pm_to(&target_name, text));
        if let Some(reply) = away_reply {
            st.send(id, &reply);
        }
        st.tally.relayed += 1;
        st.emit_chat(|| Event::Private {
            from,
            to: target_name,
            text: text.into(),
        });
        Ok(())
    }

    /// Renames a client.
    pub(crate) fn rename(&self, id: Id, new: &str) -> Result<(), Refused> {
        match check_name(new) {
            Err(NameError::Invalid) => return Err(CommandError::InvalidName(new.into()).into()),
            Err(NameError::Reserved) => return Err(CommandError::ReservedName(new.into()).into()),
            Ok(()) => {}
        }
        let mut st = self.lock();
        // Renames are announced: a muted client could talk through them.
        if st.is_muted(id) {
            return Err(CommandError::Muted.into());
        }
        let st = &mut *st;
        let room = st.directory.get(id).ok_or(Refused::Gone)?.room.clone();
        let mut held = Held::default();
        st.hold(id, &mut held);
        if st.rooms.announces(&room) {
            st.rooms
                .hold(&room, Some(id), None, &mut held, &mut st.doomed);
        }
        held.verdict()?;
        let old = st.directory.rename(id, new)?;
        let Some(client) = st.directory.get(id) else {
            return Err(Refused::Gone);
        };
        let new = client.name.clone();
        st.cluster_renamed(&room, id, &old, &new);
        st.send(id, &protocol::you_are_now(&new));
        st.announce(&room, || protocol::renamed(&old, &new), Some(id));
        st.emit(|| Event::Renamed { old, new });
        Ok(())
    }

    /// Moves a client to another room, creating it if new.
    pub(crate) fn change_room(&self, id: Id, room: &str) -> Result<(), Refused> {
        let key = protocol::room_key(room).map_err(|_| CommandError::InvalidRoom(room.into()))?;
        let mut st = self.lock();
        let st = &mut *st;
        let client = st.directory.get(id).ok_or(Refused::Gone)?;
        let (name, old) = (client.name.clone(), client.room.clone());
        if *old == *key {
            return Err(CommandError::AlreadyInRoom(old).into());
        }
        let mut held = Held::default();
        st.hold(id, &mut held);
        for room in [&*old, &key] {
            if st.rooms.announces(room) {
                st.rooms
                    .hold(room, Some(id), None, &mut held, &mut st.doomed);
            }
        }
        held.verdict()?;
        if !st.rooms.leave(id, &old) {
            return Err(Refused::Gone);
        }
        st.cluster_exit(&old, id);
        let client = st.directory.get(id).ok_or(Refused::Gone)?;
        let new = st.rooms.enter(id, client, &key);
        if let Some(client) = st.directory.get_mut(id) {
            client.room = new.clone();
        }
        // Entered before either notice is published: whoever reads them and answers in the
        // new room reaches the client.
        st.cluster_enter(&new, id, &name, self.config.history > 0);
        st.announce(&old, || protocol::moved(&name, &old, &key), None);
        st.announce(&new, || protocol::joined(&name, &new), Some(id));
        st.emit(|| Event::RoomChanged {
            name,
            from: old,
            to: new,
        });
        Ok(())
    }

    /// Sends the `/who` listing of the client's room.
    pub(crate) fn who(&self, id: Id) -> Result<(), Refused> {
        let mut st = self.lock();
        let room = st.directory.get(id).ok_or(Refused::Gone)?.room.clone();
        let names: Vec<(&str, bool)> = st
            .rooms
            .members(&room)
            .filter_map(|member| st.directory.get(member))
            .map(|c| (&*c.name, c.away.is_some()))
            .collect();
        let reply = protocol::who(&room, names);
        st.reply(id, &reply)
    }

    /// Sends the `/whois` reply about `name`: the address only to the user themself and to
    /// operators.
    pub(crate) fn whois(&self, id: Id, name: &str) -> Result<(), Refused> {
        let mut st = self.lock();
        let operator = st.directory.get(id).ok_or(Refused::Gone)?.operator;
        let (target, client) = st
            .directory
            .find(name)
            .ok_or_else(|| CommandError::NoSuchUser(name.into()))?;
        let now = Instant::now();
        let reply = protocol::whois(&Whois {
            name: &client.name,
            room: &client.room,
            connected: now.saturating_duration_since(client.connected),
            idle: now.saturating_duration_since(client.last_active),
            addr: (target == id || operator).then_some(client.addr),
            away: client.away.as_ref().map(|away| &*away.message),
        });
        st.reply(id, &reply)
    }

    /// Marks a client away, with a message (sanitized) that private messages get back; a new
    /// `/away` starts telling every sender again.
    pub(crate) fn set_away(&self, id: Id, message: Option<&str>) -> Result<(), Refused> {
        let mut st = self.lock();
        let message: Arc<str> = message.unwrap_or_default().into();
        st.reply(id, &protocol::you_are_away(&message))?;
        if let Some(client) = st.directory.get_mut(id) {
            client.away = Some(Away::new(message));
        }
        Ok(())
    }

    /// Ends a client's away.
    pub(crate) fn back(&self, id: Id) -> Result<(), Refused> {
        let mut st = self.lock();
        let client = st.directory.get(id).ok_or(Refused::Gone)?;
        if client.away.is_none() {
            return Err(CommandError::NotAway.into());
        }
        st.reply(id, &protocol::you_are_back())?;
        if let Some(client) = st.directory.get_mut(id) {
            client.away = None;
        }
        Ok(())
    }

    /// Hides `name`'s lines, actions and private messages from a client, for as long as both
    /// are connected, whatever either is called.
    pub(crate) fn ignore(&self, id: Id, name: &str) -> Result<(), Refused> {
        let mut st = self.lock();
        st.clear(id)?;
        let name = st.directory.ignore(id, name)?;
        st.reply(id, &protocol::now_ignoring(&name))
    }

    /// Undoes [`ignore`](Self::ignore).
    pub(crate) fn unignore(&self, id: Id, name: &str) -> Result<(), Refused> {
        let mut st = self.lock();
        st.clear(id)?;
        let name = st.directory.unignore(id, name)?;
        st.reply(id, &protocol::no_longer_ignoring(&name))
    }

    /// Sends the list of those a client ignores.
    pub(crate) fn list_ignored(&self, id: Id) -> Result<(), Refused> {
        let mut st = self.lock();
        let reply = protocol::ignoring(st.directory.ignored(id));
        st.reply(id, &reply)
    }

    /// Turns a client's timestamps on or off.
    pub(crate) fn set_timestamps(&self, id: Id, on: bool) -> Result<(), Refused> {
        let mut st = self.lock();
        let st = &mut *st;
        st.clear(id)?;
        let client = st.directory.get_mut(id).ok_or(Refused::Gone)?;
        client.timestamps = on;
        st.rooms.set_timestamps(&client.room, id, on);
        st.reply(id, &protocol::timestamps(on))
    }

    /// Sends the `/rooms` listing.
    pub(crate) fn list_rooms(&self, id: Id) -> Result<(), Refused> {
        let mut st = self.lock();
        let mut rooms: Vec<(&str, usize, Option<&str>)> = st
            .rooms
            .sizes()
            .map(|(key, n, topic)| (&**key, n, topic.map(|t| &**t)))
            .collect();
        rooms.sort_unstable();
        let reply = protocol::rooms(&rooms);
        st.reply(id, &reply)
    }

    /// Queues a line for one client (replies and errors).
    pub(crate) fn reply(&self, id: Id, line: &Arc<str>) -> Result<(), Refused> {
        self.lock().reply(id, line)
    }

    /// Queues bytes that are not text for one client (answers to its telnet negotiation),
    /// like a reply: once its own queue has room.
    pub(crate) fn answer(&self, id: Id, bytes: &Item) -> Result<(), Refused> {
        let mut st = self.lock();
        st.clear(id)?;
        st.send_item(id, bytes.clone());
        Ok(())
    }

    /// Disconnects a recipient that a paced sender found too slow, unless it already left (or
    /// the id is someone else's by now, which it cannot be: ids are never reused).
    pub(crate) fn drop_slow(&self, id: Id, outbox: &Outbox) {
        let mut st = self.lock();
        if st.directory.get(id).is_some_and(|c| c.outbox.same(outbox)) {
            st.remove(id, LeaveReason::TooSlow, Some(protocol::too_slow()));
        }
    }

    /// Removes a client whose connection is ending; announces it unless it is already gone.
    pub(crate) fn leave(&self, id: Id, reason: LeaveReason, farewell: Option<Arc<str>>) {
        self.lock().remove(id, reason, farewell);
    }

    /// Starts a graceful shutdown: refuses new clients, gives every client a last notice and
    /// closes its outbox so its writer ends after flushing.
    pub(crate) fn close_all(&self) {
        // Also wakes whoever waits on `stopped`: clients still before `/pass` are not in the
        // tables below.
        self.stop();
        let mut st = self.lock();
        st.closing = true;
        // Everyone goes at once: no room is left to tell, so clear the tables wholesale instead
        // of taking clients out of their rooms one by one (quadratic in a crowded room).
        let farewell = protocol::shutting_down();
        let mut stamped = None;
        let clients: Vec<Client> = st.directory.drain();
        st.rooms.clear();
        for client in clients {
            let farewell = if client.timestamps {
                stamped.get_or_insert_with(|| protocol::stamped(Time::now(), &farewell))
            } else {
                &farewell
            };
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
    pub(crate) fn topic(&self, id: Id, text: Option<&str>) -> Result<(), Refused> {
        let mut st = self.lock();
        let st = &mut *st;
        let client = st.directory.get(id).ok_or(Refused::Gone)?;
        let (name, room, operator, muted) = (
            client.name.clone(),
            client.room.clone(),
            client.operator,
            client.muted,
        );
        let Some(text) = text else {
            let reply = protocol::topic(&room, st.rooms.topic(&room).map(|t| &**t));
            return st.reply(id, &reply);
        };
        if muted {
            return Err(CommandError::Muted.into());
        }
        if self.config.topic_ops_only && !operator {
            return Err(CommandError::NotOperator.into());
        }
        if text.chars().count() > protocol::MAX_TOPIC {
            return Err(CommandError::TopicTooLong.into());
        }
        // The whole room, the setter included, is told: wait for room in every queue first.
        let mut held = Held::default();
        st.rooms.hold(&room, None, None, &mut held, &mut st.doomed);
        held.verdict()?;
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

    /// Makes a client an operator if `password` is the operator password. `Ok` holds how long
    /// the caller waits before it answers (see [`password_answer`](Self::password_answer)).
    pub(crate) fn oper(&self, id: Id, password: &str) -> Result<Duration, OperError> {
        let Some(secret) = &self.config.oper_password else {
            return Err(OperError::NoOperators);
        };
        let right = auth::same_secret(password, secret);
        let mut st = self.lock();
        let Some(client) = st.directory.get_mut(id) else {
            return Ok(Duration::ZERO);
        };
        let (name, addr) = (client.name.clone(), client.addr);
        if right {
            client.operator = true;
        }
        let wait = st.password_answer(&self.config, Secret::Oper, addr, right);
        if right {
            st.emit(|| Event::Opered { name, addr });
            Ok(wait)
        } else {
            st.emit(|| Event::OperFailed { name, addr });
            Err(OperError::Wrong(wait))
        }
    }

    /// Records a `/pass` password from a connection that has not joined, reporting a wrong one
    /// as [`Event::PassFailed`]; returns how long to hold up the answer (see
    /// [`State::password_answer`]).
    pub(crate) fn password_answer(&self, addr: SocketAddr, right: bool) -> Duration {
        let mut st = self.lock();
        if !right {
            st.emit(|| Event::PassFailed { addr });
        }
        st.password_answer(&self.config, Secret::Pass, addr, right)
    }

    /// `/kick`: disconnects a user; the reason names the operator.
    pub(crate) fn kick_by(&self, id: Id, user: &str, reason: Option<&str>) -> Result<(), Refused> {
        let mut st = self.lock();
        let operator = st.operator(id)?;
        let (target, client) = st
            .directory
            .find(user)
            .ok_or_else(|| CommandError::NoSuchUser(user.into()))?;
        let name = client.name.clone();
        // Room for the answer first: the verb is done again after a wait, so it must not have
        // acted yet.
        st.clear(id)?;
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
    ) -> Result<(), Refused> {
        let mut st = self.lock();
        let operator = st.operator(id)?;
        let range = match target.parse::<Cidr>() {
            Ok(range) => range,
            // Names hold no `.`, `:` or `/`: this was meant as an address.
            Err(_) if target.contains(['.', ':', '/']) => {
                return Err(CommandError::InvalidRange(target.into()).into())
            }
            Err(_) => st
                .directory
                .find(target)
                .map(|(_, client)| Cidr::host_group(client.addr.ip()))
                .ok_or_else(|| CommandError::NoSuchUser(target.into()))?,
        };
        // Checked as it will be banned: an IPv6 address widens to its /64.
        let range = ban_group(range);
        let widest = match range.addr() {
            std::net::IpAddr::V4(_) => protocol::MIN_BAN_PREFIX_V4,
            std::net::IpAddr::V6(_) => protocol::MIN_BAN_PREFIX_V6,
        };
        if range.prefix() < widest {
            return Err(CommandError::BanTooWide(range).into());
        }
        let own = st.directory.get(id).map(|c| c.addr.ip().to_canonical());
        if own.is_some_and(|ip| range.contains(ip)) {
            return Err(CommandError::BanOwnAddress(range).into());
        }
        st.clear(id)?;
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
    pub(crate) fn unban_by(&self, id: Id, target: &str) -> Result<(), Refused> {
        let mut st = self.lock();
        let operator = st.operator(id)?;
        let range = target
            .parse::<Cidr>()
            .map_err(|_| CommandError::InvalidRange(target.into()))?;
        st.clear(id)?;
        let range = st.unban(range, Some(operator))?;
        st.send(id, &protocol::unban_done(&range));
        Ok(())
    }

    /// Lifts a ban for the host.
    pub(crate) fn unban(&self, range: Cidr) -> Result<(), CommandError> {
        self.lock().unban(range, None).map(drop)
    }

    /// `/bans`.
    pub(crate) fn list_bans(&self, id: Id) -> Result<(), Refused> {
        let mut st = self.lock();
        st.operator(id)?;
        let reply = protocol::bans(&st.admission.bans(Instant::now()));
        st.reply(id, &reply)
    }

    /// `/mute` and `/unmute`.
    pub(crate) fn mute_by(&self, id: Id, user: &str, muted: bool) -> Result<(), Refused> {
        let mut st = self.lock();
        let operator = st.operator(id)?;
        st.clear(id)?;
        let name = st.set_muted(user, muted, Some(operator))?;
        st.send(id, &protocol::mute_done(&name, muted));
        Ok(())
    }

    /// `/stats`.
    pub(crate) fn stats_for(&self, id: Id) -> Result<(), Refused> {
        let mut st = self.lock();
        st.operator(id)?;
        let stats = st.stats(&self.counters);
        let reply = protocol::stats(&stats, st.admission.bans(Instant::now()).len());
        st.reply(id, &reply)
    }

    /// Reports a TLS handshake that failed or did not finish in time.
    #[cfg(feature = "tls")]
    pub(crate) fn tls_failed(&self, addr: SocketAddr, error: &std::io::Error) {
        self.counters
            .tls_failed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().emit(|| Event::TlsFailed {
            addr,
            error: error.to_string().into(),
        });
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
        let now = Instant::now();
        st.directory
            .clients()
            .map(|c| User {
                name: c.name.clone(),
                room: c.room.clone(),
                addr: c.addr,
                away: c.away.as_ref().map(|away| away.message.clone()),
                connected_for: now.saturating_duration_since(c.connected),
                idle_for: now.saturating_duration_since(c.last_active),
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
    /// Records a password from `addr` (`/pass` or `/oper`) and says how long its answer waits:
    /// a wrong one always, doubling with each from the same address (whatever connection it
    /// came on), and once an address has guessed wrong, a right one too, so that a quick answer
    /// tells a guesser nothing.
    fn password_answer(
        &mut self,
        config: &Config,
        secret: Secret,
        addr: SocketAddr,
        right: bool,
    ) -> Duration {
        let now = Instant::now();
        let before = self.admission.guesses(secret, addr.ip(), now);
        if !right {
            self.admission.guessed_wrong(secret, addr.ip(), now);
        }
        let wait = match (right, before) {
            (true, 0) => Duration::ZERO,
            (true, _) => auth::penalty(config.password_delay, before),
            (false, _) => auth::penalty(config.password_delay, before + 1),
        };
        // A `/pass` answer must come before the client's time to give one is up, or a right
        // password from an address someone else guesses from would be answered with a timeout.
        match secret {
            Secret::Pass => wait.min(config.auth_timeout / 2),
            Secret::Oper => wait,
        }
    }

    /// Adds a client to `held` if its own queue is full (for what it is sent back).
    fn hold(&mut self, id: Id, held: &mut Held) {
        if let Some(client) = self.directory.get(id) {
            held.check(id, &client.outbox, &mut self.doomed);
        }
    }

    /// `Ok` if a client is here and its own queue has room for a reply.
    fn clear(&mut self, id: Id) -> Result<(), Refused> {
        if self.directory.get(id).is_none() {
            return Err(Refused::Gone);
        }
        let mut held = Held::default();
        self.hold(id, &mut held);
        held.verdict()
    }

    /// Sends a client a reply, once its own queue has room.
    fn reply(&mut self, id: Id, line: &Arc<str>) -> Result<(), Refused> {
        self.clear(id)?;
        self.send(id, line);
        Ok(())
    }

    fn stats(&self, counters: &Counters) -> Stats {
        #[allow(unused_mut)] // reason: only the cluster adds to it
        let mut stats =
            self.tally
                .stats(counters, self.admission.open(), self.subscribers.dropped());
        #[cfg(feature = "redis")]
        {
            stats.cluster = self.cluster.stats();
        }
        stats
    }

    /// Tells a room about a join, leave or rename, through the cluster if there is one;
    /// here, unless the room is too big for such notices to be useful.
    fn announce(&mut self, room: &str, line: impl FnOnce() -> Arc<str>, except: Option<Id>) {
        if self.clustered() {
            let line = line();
            if !self.publish(room, except, &line, false) {
                self.rooms.announce(room, || line, except, &mut self.doomed);
            }
        } else {
            self.rooms.announce(room, line, except, &mut self.doomed);
        }
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

    /// Queues a line for one client, timestamped if it asked; a client over its bound is doomed.
    fn send(&mut self, id: Id, line: &Arc<str>) {
        let Some(client) = self.directory.get(id) else {
            return;
        };
        let line = if client.timestamps {
            protocol::stamped(Time::now(), line)
        } else {
            line.clone()
        };
        self.send_item(id, line.into());
    }

    /// Queues an item for one client as it is; one past the hard cap dooms the client.
    fn send_item(&mut self, id: Id, item: Item) {
        if let Some(client) = self.directory.get(id) {
            if let Err(e) = client.outbox.push_item(item) {
                self.doomed.push((id, e.into()));
            }
        }
    }

    /// Queues a line for every member of a room except `except`.
    fn broadcast(&mut self, room: &str, line: &Arc<str>, except: Option<Id>) {
        self.rooms
            .broadcast(room, line, except, None, &mut self.doomed);
    }

    /// Removes a client everywhere, queues its last line, closes its outbox and tells its room.
    fn remove(&mut self, id: Id, reason: LeaveReason, farewell: Option<Arc<str>>) {
        let Some(client) = self.directory.remove(id) else {
            return;
        };
        self.rooms.leave(id, &client.room);
        self.cluster_exit(&client.room, id);
        self.cluster_release(&client.name, id);
        if let Some(line) = farewell {
            let line = if client.timestamps {
                protocol::stamped(Time::now(), &line)
            } else {
                line
            };
            let _ = client.outbox.force(line);
        }
        client.outbox.close();
        if reason == LeaveReason::TooSlow {
            self.tally.dropped_slow += 1;
        }
        if !self.closing {
            let name = &client.name;
            self.announce(&client.room, || protocol::left(name, &reason), None);
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

/// Without the `redis` feature there is no cluster: everything happens here.
#[cfg(not(feature = "redis"))]
impl State {
    fn publish(&mut self, _room: &str, _sender: Option<Id>, _line: &str, _chat: bool) -> bool {
        false
    }

    fn clustered(&self) -> bool {
        false
    }

    fn cluster_enter(&mut self, _room: &Arc<str>, _id: Id, _name: &str, _history: bool) {}

    fn cluster_exit(&mut self, _room: &str, _id: Id) {}

    fn cluster_renamed(&mut self, _room: &str, _id: Id, _old: &str, _new: &str) {}

    fn cluster_release(&mut self, _name: &str, _id: Id) {}

    fn hold_link(&self, _held: &mut Held) {}
}

/// Without the `redis` feature the connection's verbs that may ask the cluster ask no one.
#[cfg(not(feature = "redis"))]
impl Hub {
    pub(crate) async fn cluster_guest(&self) -> Option<(Id, Arc<str>)> {
        None
    }

    pub(crate) async fn enter_ahead(&self, _room: &str) -> Option<()> {
        None
    }

    pub(crate) async fn claim_name(&self, _id: Id, _name: &str) -> Result<(), CommandError> {
        Ok(())
    }

    pub(crate) async fn who_everywhere(&self, id: Id) -> Result<(), Refused> {
        self.who(id)
    }

    pub(crate) async fn rooms_everywhere(&self, id: Id) -> Result<(), Refused> {
        self.list_rooms(id)
    }

    pub(crate) async fn private_everywhere(
        &self,
        id: Id,
        to: &str,
        text: &str,
    ) -> Result<(), Refused> {
        self.private(id, to, text)
    }

    pub(crate) async fn close_cluster(&self) {}
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
    use crate::outbox::testing::outbox;

    fn addr() -> SocketAddr {
        "192.0.2.1:1000".parse().expect("an address")
    }

    #[test]
    fn a_client_a_delivery_finds_full_is_gone_when_the_verb_returns() {
        let hub = Hub::new(Config::default(), addr());
        let (roomy, _roomy_inbox) = outbox(100, 1 << 20);
        hub.join(addr(), roomy).expect("joined");
        // Room for its welcome and greeting, which are forced, and nothing more.
        let (cramped, _cramped_inbox) = outbox(1, 1 << 20);
        hub.join(addr(), cramped).expect("joined");
        assert_eq!(hub.users().len(), 2);
        // A host's notice cannot wait: past the hard cap, the recipient goes.
        hub.notice(Audience::Everyone, "hello").expect("everyone");
        let users = hub.users();
        assert_eq!(users.len(), 1, "no verb has to remember to settle");
        assert_eq!(&*users[0].name, "guest1");
        assert_eq!(hub.stats().dropped_slow, 1);
    }

    #[test]
    fn a_congested_recipient_holds_its_senders_back_and_gets_nothing_more() {
        let hub = Hub::new(Config::default(), addr());
        let (roomy, _roomy_inbox) = outbox(100, 1 << 20);
        let sender = hub.join(addr(), roomy).expect("joined");
        let (cramped, mut cramped_inbox) = outbox(1, 1 << 20);
        hub.join(addr(), cramped).expect("joined");
        assert!(matches!(
            hub.say(sender, "hello", false),
            Err(Refused::Held(_))
        ));
        let queued = crate::outbox::testing::drain(&mut cramped_inbox);
        assert!(!queued.contains("hello"), "held lines are not delivered");
        assert!(
            hub.say(sender, "hello", false).is_ok(),
            "drained: delivered"
        );
        assert_eq!(hub.users().len(), 2);
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
        assert!(matches!(
            hub.change_room(id, "den"),
            Err(Refused::Command(CommandError::AlreadyInRoom(room))) if &*room == "den"
        ));
    }

    #[test]
    fn whois_shows_the_address_to_the_user_themself_and_to_operators() {
        let hub = Hub::new(Config::default(), addr());
        let (out, _alice_inbox) = outbox(100, 1 << 20);
        let alice = hub.join(addr(), out).expect("joined");
        let (out, mut bob_inbox) = outbox(100, 1 << 20);
        let bob = hub.join(addr(), out).expect("joined");
        let mut last_line = || {
            let text = crate::outbox::testing::drain(&mut bob_inbox);
            text.lines()
                .last()
                .map(|l| format!("{l}\n"))
                .unwrap_or_default()
        };
        let address = "; address 192.0.2.1:1000\n";
        hub.whois(bob, "guest2").expect("bob exists");
        assert!(last_line().ends_with(address));
        hub.whois(bob, "guest1").expect("alice exists");
        assert!(!last_line().contains(address));
        if let Some(client) = hub.lock().directory.get_mut(bob) {
            client.operator = true;
        }
        hub.whois(bob, "guest1").expect("alice exists");
        let line = last_line();
        assert!(line.starts_with("*** guest1 is in #lobby;"), "{line}");
        assert!(line.ends_with(address), "{line}");
        assert!(hub.identity(alice).is_some());
    }

    #[test]
    fn an_operator_cannot_ban_a_neighbour_in_its_own_ipv6_slash_64() {
        let hub = Hub::new(Config::default(), addr());
        let (out, _inbox) = outbox(100, 1 << 20);
        let op = hub
            .join("[2001:db8::1]:1000".parse().expect("an address"), out)
            .expect("joined");
        if let Some(client) = hub.lock().directory.get_mut(op) {
            client.operator = true;
        }
        assert!(matches!(
            hub.ban_by(op, "2001:db8::2", None, None),
            Err(Refused::Command(CommandError::BanOwnAddress(range)))
                if range.to_string() == "2001:db8::/64"
        ));
        assert!(hub.identity(op).is_some(), "still here");
        assert!(hub.bans().is_empty());
    }
}
