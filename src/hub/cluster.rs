//! The hub's side of the cluster (feature `redis`): room lines and notices through Redis,
//! names claimed cluster-wide, listings and private messages across nodes, history from
//! Redis, and what the link reports ([`Incoming`]), handled by one task.
//!
//! Room lines go to Redis and are delivered when they come back, to this node's members of the
//! room, in the order Redis delivers them, so every node shows one order. Deliveries from
//! Redis cannot make a sender on another node wait, so they are pushed like lines that cannot
//! wait: a member past its queue's hard cap is dropped as too slow. While the link is down
//! every line is delivered here at once, as without a cluster.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_channel::{Receiver, Sender};
use futures_lite::future::FutureExt;
use smol::{Executor, Timer};

use super::{Held, Hub, Id, Refused, State};
use crate::cluster::{Claim, HistoryLine, Incoming, Link, LinkConfig, RedisUrl, Reservation};
use crate::event::Event;
use crate::handle::ClusterStats;
use crate::protocol::{self, check_name, CommandError, Time};

/// How many guest numbers a newcomer tries before taking a local one: a number is taken only
/// if someone chose that `guestN` with `/nick`.
const GUEST_TRIES: usize = 5;

/// The hub's cluster state, behind the hub's lock.
#[derive(Debug, Default)]
pub(super) struct Cluster {
    /// `None` until [`Hub::connect_cluster`], and without [`Config::redis`](crate::Config::redis).
    link: Option<Link>,
    /// Clients that entered a room whose history from Redis they have not been shown yet
    /// (`None`), or were shown up to a line number: live lines they saw in the history are
    /// skipped. An entry goes with the first live line past it.
    catching_up: HashMap<Id, CatchUp>,
    /// Clients waiting for the drain task to replay their room's history, in order.
    to_replay: Vec<Id>,
    /// Wakes the drain task when `to_replay` gets an entry.
    wake: Option<Sender<()>>,
}

#[derive(Debug)]
struct CatchUp {
    room: Arc<str>,
    /// The last line number already shown; `None` until the history is read.
    through: Option<u64>,
    /// Lines for the client that came live before its history was read, notices included:
    /// shown after the history, which stops short of the first of them. At most [`MAX_LIVE`].
    live: Vec<(u64, Arc<str>)>,
    /// Chat lines the client said in the room before its history was read: the last this
    /// many of its own lines in the history, which it is not shown again.
    said: usize,
}

/// Longest a client entering a room waits for its node's subscription to the room (Redis
/// slow or away: it enters anyway, and may miss what is said meanwhile).
const ENTER_WAIT: Duration = Duration::from_secs(2);

/// Lines kept for one newcomer while its history is read; past it the history is given up
/// and the lines shown at once.
const MAX_LIVE: usize = 1024;

/// A room line's kind, first in its payload: chat lines are replayed from the history,
/// notices (joins, leaves, renames) are not, and follow [`Config::announce_limit`](crate::Config::announce_limit).
const CHAT: char = 'c';
const NOTICE: char = 'n';

/// `<kind><unix seconds> <line>`: the time travels so that a replayed line shows when it was
/// said.
fn payload(chat: bool, line: &str) -> String {
    let kind = if chat { CHAT } else { NOTICE };
    format!("{kind}{} {line}", Time::now().0)
}

fn parse_payload(payload: &str) -> Option<(bool, Time, &str)> {
    let mut chars = payload.chars();
    let chat = match chars.next()? {
        CHAT => true,
        NOTICE => false,
        _ => return None,
    };
    let (secs, line) = chars.as_str().split_once(' ')?;
    Some((chat, Time(secs.parse().ok()?), line))
}

impl Cluster {
    /// The link, if it is up.
    fn up(&self) -> Option<&Link> {
        self.link.as_ref().filter(|link| link.is_up())
    }

    pub(super) fn stats(&self) -> Option<ClusterStats> {
        let link = self.link.as_ref()?;
        Some(ClusterStats {
            up: link.is_up(),
            node: u64::from_str_radix(link.node().as_str(), 16).unwrap_or(0),
            nodes_seen: link.nodes_seen(),
        })
    }
}

impl State {
    /// Hands a room line to the cluster; `false` when it must be delivered here, now.
    pub(super) fn publish(
        &mut self,
        room: &str,
        sender: Option<Id>,
        line: &str,
        chat: bool,
    ) -> bool {
        let Some(link) = self.cluster.up() else {
            return false;
        };
        let payload = payload(chat, line);
        if chat {
            let published = link.publish(room, sender, &payload).is_ok();
            let catch_up = sender.and_then(|id| self.cluster.catching_up.get_mut(&id));
            if let Some(catch_up) = catch_up.filter(|c| published && c.through.is_none()) {
                catch_up.said += 1;
            }
            published
        } else {
            link.notify(room, sender, &payload).is_ok()
        }
    }

    /// Makes a chat line's sender wait while the link's queue is congested: Redis paces
    /// senders as a slow reader does, instead of the queue overflowing (which drops the link).
    pub(super) fn hold_link(&self, held: &mut Held) {
        if let Some(link) = self.cluster.up().filter(|link| link.congested()) {
            held.link = Some(link.clone());
        }
    }

    /// Whether room lines go through Redis now.
    pub(super) fn clustered(&self) -> bool {
        self.cluster.up().is_some()
    }

    /// Records a client in a room on this node, and queues the replay of the room's history.
    pub(super) fn cluster_enter(&mut self, room: &Arc<str>, id: Id, name: &str, history: bool) {
        let Some(link) = &self.cluster.link else {
            return;
        };
        link.enter(room, id, name);
        if history && link.is_up() {
            let catch_up = CatchUp {
                room: room.clone(),
                through: None,
                live: Vec::new(),
                said: 0,
            };
            if self.cluster.catching_up.insert(id, catch_up).is_none() {
                self.cluster.to_replay.push(id);
            }
            if let Some(wake) = &self.cluster.wake {
                let _ = wake.try_send(());
            }
        }
    }

    /// Takes a client out of a room on this node.
    pub(super) fn cluster_exit(&mut self, room: &str, id: Id) {
        if let Some(link) = &self.cluster.link {
            link.exit(room, id);
            self.cluster.catching_up.remove(&id);
        }
    }

    /// A client's name changed: the old one is given up, the room sees the new one.
    pub(super) fn cluster_renamed(&mut self, room: &str, id: Id, old: &str, new: &str) {
        if let Some(link) = &self.cluster.link {
            link.release(old, id);
            link.enter(room, id, new);
        }
    }

    /// A client left: its name is free across the cluster.
    pub(super) fn cluster_release(&mut self, name: &str, id: Id) {
        if let Some(link) = &self.cluster.link {
            link.release(name, id);
        }
    }

    /// Delivers a room line from Redis to this node's members of the room.
    fn room_line(&mut self, room: &str, own: bool, sender: Option<u64>, seq: u64, payload: &str) {
        let Some((chat, _, line)) = parse_payload(payload) else {
            return;
        };
        if !self.rooms.contains(room) || (!chat && !self.rooms.announces(room)) {
            return;
        }
        let except = if own { sender } else { None };
        // Ignoring works by connection id, which only means something on the sender's node.
        let mut hidden: HashSet<Id> = match (own && chat, except) {
            (true, Some(id)) => self
                .directory
                .get(id)
                .map(|c| c.ignored_by.clone())
                .unwrap_or_default(),
            _ => HashSet::new(),
        };
        let line: Arc<str> = line.into();
        // A newcomer whose history is not read yet gets a line after it, notices included, so
        // it sees the room's lines in the room's order; one whose history showed a chat line
        // does not get it again. Notices are never in the history.
        let mut given_up = Vec::new();
        self.cluster.catching_up.retain(|id, catch_up| {
            if *catch_up.room != *room {
                return true;
            }
            match catch_up.through {
                Some(through) if seq > through => return false,
                Some(_) if !chat => return true,
                Some(_) => {}
                None if Some(*id) == except || hidden.contains(id) => {}
                None if catch_up.live.len() < MAX_LIVE => {
                    catch_up.live.push((seq, line.clone()));
                }
                None => {
                    given_up.push((*id, std::mem::take(&mut catch_up.live)));
                    return false;
                }
            }
            hidden.insert(*id);
            true
        });
        for (id, live) in given_up {
            self.show_live(id, live);
        }
        self.rooms
            .broadcast(room, &line, except, Some(&hidden), &mut self.doomed);
    }

    /// Queues the lines kept for a newcomer while its history was read.
    fn show_live(&mut self, id: Id, live: Vec<(u64, Arc<str>)>) {
        for (_, line) in live {
            self.send(id, &line);
        }
    }

    /// Shows a client the history read for its room, unless it moved on meanwhile. `next` is
    /// the number of the first line of the room that came after the client entered and waits
    /// to be handled: the history stops short of it, and it follows as a live line.
    fn replayed(
        &mut self,
        id: Id,
        room: &str,
        history: Option<Vec<HistoryLine>>,
        next: Option<u64>,
    ) {
        let Some(catch_up) = self.cluster.catching_up.get_mut(&id) else {
            return;
        };
        if *catch_up.room != *room || catch_up.through.is_some() {
            return;
        }
        let live = std::mem::take(&mut catch_up.live);
        let cut = live
            .first()
            .map(|(seq, _)| *seq)
            .or(next)
            .unwrap_or(u64::MAX);
        catch_up.through = live
            .last()
            .map(|(seq, _)| *seq)
            .or_else(|| next.map(|seq| seq.saturating_sub(1)))
            .or_else(|| history.as_ref()?.last().map(|said| said.seq));
        let said_since = catch_up.said;
        if catch_up.through.is_none() {
            self.cluster.catching_up.remove(&id);
        }
        let history = history.unwrap_or_default();
        let node = self.cluster.link.as_ref().map(|link| link.node().clone());
        // Who said it, if it was said on this node (ids mean nothing elsewhere).
        let local =
            |said: &HistoryLine| said.sender.filter(|_| Some(&said.origin) == node.as_ref());
        // The newcomer's own lines said since it entered (while its history was being read)
        // are the last of its lines in the history; those said before it left and came back
        // are shown, as on a single server.
        let own_from = match said_since {
            0 => u64::MAX,
            n => history
                .iter()
                .rev()
                .filter(|said| local(said) == Some(id))
                .nth(n - 1)
                .map_or(0, |said| said.seq),
        };
        // Nor those of anyone it ignores, as live.
        let hidden = |said: &HistoryLine| match local(said) {
            Some(sender) if sender == id => said.seq >= own_from,
            Some(sender) => self
                .directory
                .get(sender)
                .is_some_and(|c| c.ignored_by.contains(&id)),
            None => false,
        };
        let mut text = String::new();
        let shown = history
            .iter()
            .filter(|said| said.seq < cut && !hidden(said));
        for said in shown {
            if let Some((true, at, line)) = parse_payload(&said.line) {
                protocol::push_history(&mut text, at, line);
            }
        }
        if let Some(client) = self.directory.get(id).filter(|_| !text.is_empty()) {
            let text: Arc<str> = if client.timestamps {
                protocol::stamped(Time::now(), &text)
            } else {
                text.into()
            };
            // Forced like the local history in a greeting: bounded by history × max_line.
            let _ = client.outbox.force(text);
        }
        self.show_live(id, live);
    }

    /// Tells every client on this node.
    fn tell_everyone(&mut self, line: &Arc<str>) {
        let ids: Vec<Id> = self.directory.ids().collect();
        for id in ids {
            self.send(id, line);
        }
    }
}

impl Hub {
    /// Connects this node to the cluster's Redis ([`Config::redis`](crate::Config::redis)) and
    /// starts the task that handles what arrives from it, on `executor`.
    pub(crate) async fn connect_cluster(
        self: &Arc<Self>,
        executor: &Executor<'_>,
    ) -> std::io::Result<()> {
        let Some(url) = &self.config.redis else {
            return Ok(());
        };
        if self.lock().cluster.link.is_some() {
            return Ok(());
        }
        let url: RedisUrl = url
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let shown = url.to_string();
        let config = LinkConfig {
            history: self.config.history,
            ..LinkConfig::default()
        };
        let (link, incoming) = Link::connect(executor, url, config)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot reach {shown}: {e}")))?;
        let (wake, woken) = async_channel::bounded(1);
        {
            let mut st = self.lock();
            st.cluster.link = Some(link.clone());
            st.cluster.wake = Some(wake);
        }
        executor
            .spawn(drain(self.clone(), link, incoming, woken))
            .detach();
        Ok(())
    }

    /// Leaves the cluster cleanly, if this node is in one: names and presence released.
    pub(crate) async fn close_cluster(&self) {
        let link = self.lock().cluster.link.take();
        if let Some(link) = link {
            link.close().await;
        }
    }

    fn link(&self) -> Option<Link> {
        self.lock().cluster.up().cloned()
    }

    /// Subscribes this node to a room a client is about to enter, and if the room has no
    /// member here yet (its subscription is new, or another newcomer's that may not be in
    /// effect either), waits (at most [`ENTER_WAIT`]) until it is in effect: entered after
    /// that, the client gets every line and notice published after it entered, and so does
    /// anyone who answers its join notice. The room stays subscribed while the result lives.
    /// `None` without a link or a valid room.
    pub(crate) async fn enter_ahead(&self, room: &str) -> Option<Reservation> {
        let link = self.link()?;
        let key = protocol::room_key(room).ok()?;
        let reserved = link.reserve(&key);
        async {
            if reserved.is_fresh() {
                let _ = link.synced().await;
            }
            // Checked last, just before entering (nothing awaits between this and the
            // entry's commands), and again after each wait, since a crowd wakes at once: a
            // crowd entering rooms at once waits for Redis as a fast talker does, instead of
            // overflowing the link's queue (which drops the link).
            while link.congested() {
                link.drained().await;
            }
        }
        .or(async {
            Timer::after(ENTER_WAIT).await;
        })
        .await;
        Some(reserved)
    }

    /// A newcomer's id and a guest name unique across the cluster; `None` without a cluster.
    /// While the link is down the name is a local guess, claimed when the link is back.
    pub(crate) async fn cluster_guest(&self) -> Option<(Id, Arc<str>)> {
        let link = self.lock().cluster.link.clone()?;
        let id = self.lock().directory.reserve_id();
        Some((id, self.claim_guest(&link, id).await))
    }

    /// A guest name for `id`, claimed across the cluster if the link is up.
    async fn claim_guest(&self, link: &Link, id: Id) -> Arc<str> {
        for _ in 0..GUEST_TRIES {
            let Ok(n) = link.next_guest().await else {
                break;
            };
            let name = format!("guest{n}");
            match link.claim(&name, id).await {
                Ok(Claim::Claimed | Claim::Offline) => return name.into(),
                Ok(Claim::Taken) => continue,
                Err(_) => break,
            }
        }
        let name = self.lock().directory.free_guest_name();
        let _ = link.claim(&name, id).await;
        name
    }

    /// Claims `name` across the cluster before [`rename`](Hub::rename) takes it.
    pub(crate) async fn claim_name(&self, id: Id, name: &str) -> Result<(), CommandError> {
        // Down or not: while down the link keeps the claim, to make when it is back.
        let Some(link) = self.lock().cluster.link.clone() else {
            return Ok(());
        };
        if check_name(name).is_err() {
            // `rename` says what is wrong with it.
            return Ok(());
        }
        {
            let st = self.lock();
            // Muted: `rename` refuses, and nothing should be claimed for it.
            if st.directory.get(id).is_none_or(|c| c.muted) {
                return Ok(());
            }
        }
        match self.lock().directory.find(name) {
            Some((holder, _)) if holder == id => return Ok(()),
            Some(_) => return Err(CommandError::NameTaken(name.into())),
            None => {}
        }
        match link.claim(name, id).await {
            Ok(Claim::Taken) => Err(CommandError::NameTaken(name.into())),
            // Down meanwhile, or busy: the name is kept here and claimed when the link is back.
            Ok(Claim::Claimed | Claim::Offline) | Err(_) => Ok(()),
        }
    }

    /// `/who`, listing the room's members on every node.
    pub(crate) async fn who_everywhere(&self, id: Id) -> Result<(), Refused> {
        let (Some(link), Some((_, room))) = (self.link(), self.identity(id)) else {
            return self.who(id);
        };
        let Ok(names) = link.who(&room).await else {
            return self.who(id);
        };
        let mut st = self.lock();
        let listed: Vec<(&str, bool)> = names
            .iter()
            .map(|name| {
                let away = st
                    .directory
                    .find(name)
                    .is_some_and(|(_, c)| c.away.is_some());
                (name.as_str(), away)
            })
            .collect();
        let reply = protocol::who(&room, listed);
        st.reply(id, &reply)
    }

    /// `/rooms`, listing the rooms with members on every node.
    pub(crate) async fn rooms_everywhere(&self, id: Id) -> Result<(), Refused> {
        let Some(link) = self.link() else {
            return self.list_rooms(id);
        };
        let Ok(everywhere) = link.rooms().await else {
            return self.list_rooms(id);
        };
        let mut st = self.lock();
        let mut sizes: HashMap<&str, usize> = everywhere
            .iter()
            .map(|(room, n)| (room.as_str(), usize::try_from(*n).unwrap_or(usize::MAX)))
            .collect();
        // The lobby is listed even when empty, as on a single server.
        for (key, n, _) in st.rooms.sizes() {
            sizes.entry(key).or_insert(n);
        }
        let mut rooms: Vec<(&str, usize, Option<&str>)> = sizes
            .into_iter()
            .map(|(room, n)| (room, n, st.rooms.topic(room).map(|t| &**t)))
            .collect();
        rooms.sort_unstable();
        let reply = protocol::rooms(&rooms);
        st.reply(id, &reply)
    }

    /// `/msg`: to a client here as always, otherwise to one on another node.
    pub(crate) async fn private_everywhere(
        &self,
        id: Id,
        to: &str,
        text: &str,
    ) -> Result<(), Refused> {
        let local = self.private(id, to, text);
        let (Err(Refused::Command(CommandError::NoSuchUser(_))), Some(link)) =
            (&local, self.link())
        else {
            return local;
        };
        let Ok(Some(owner)) = link.lookup(to).await else {
            return local;
        };
        if owner.node == *link.node() {
            return local;
        }
        let mut st = self.lock();
        let from = st.directory.get(id).ok_or(Refused::Gone)?.name.clone();
        link.direct(&owner.node, &format!("pm {} {from} {text}", owner.id))
            .map_err(|_| CommandError::NoSuchUser(to.into()))?;
        st.tally.relayed += 1;
        // Pushed, not paced: the line went out already and must not go twice.
        st.send(id, &protocol::pm_to(&owner.name, text));
        st.emit_chat(|| Event::Private {
            from,
            to: owner.name.as_str().into(),
            text: text.into(),
        });
        Ok(())
    }

    fn handle(&self, message: Incoming) -> Option<(Id, String)> {
        let mut st = self.lock();
        let own_node = st.cluster.link.as_ref().map(|l| l.node().clone());
        match message {
            Incoming::Room {
                room,
                origin,
                sender,
                seq,
                line,
            } => {
                let own = own_node.as_ref() == Some(&origin);
                st.room_line(&room, own, sender, seq, &line);
            }
            Incoming::Direct { payload, .. } => {
                let mut parts = payload.splitn(4, ' ');
                if let (Some("pm"), Some(to), Some(from), Some(text)) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                {
                    if let Ok(to) = to.parse::<Id>() {
                        st.send(to, &protocol::pm_from(from, text));
                    }
                }
            }
            Incoming::NodeLost { members, .. } => {
                for (room, name) in members {
                    let st = &mut *st;
                    st.rooms
                        .announce(&room, || protocol::server_lost(&name), None, &mut st.doomed);
                }
            }
            Incoming::NameLost { id, name } => {
                let holds = st
                    .directory
                    .get(id)
                    .is_some_and(|c| c.name.eq_ignore_ascii_case(&name));
                return holds.then_some((id, name));
            }
            Incoming::Down => {
                st.cluster.catching_up.clear();
                st.cluster.to_replay.clear();
                st.tell_everyone(&protocol::cluster_lost());
                st.emit(|| Event::ClusterDown);
            }
            Incoming::Up => {
                st.tell_everyone(&protocol::cluster_restored());
                st.emit(|| Event::ClusterUp);
            }
        }
        None
    }

    /// Renames a client whose name someone else took while the link was down.
    fn rename_lost(&self, id: Id, old: &str, new: &str) {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(client) = st.directory.get(id) else {
            return;
        };
        if !client.name.eq_ignore_ascii_case(old) {
            return;
        }
        let room = client.room.clone();
        let Ok(old) = st.directory.rename(id, new) else {
            return;
        };
        if let Some(link) = &st.cluster.link {
            link.enter(&room, id, new);
        }
        st.send(id, &protocol::name_lost(&old, new));
        let notice = protocol::renamed(&old, new);
        if !st.publish(&room, Some(id), &notice, false) {
            st.rooms
                .announce(&room, || notice, Some(id), &mut st.doomed);
        }
        st.emit(|| Event::Renamed {
            old,
            new: new.into(),
        });
    }
}

enum Wakeup {
    Incoming(Incoming),
    Replay,
    Closed,
}

/// Most messages the task takes from the link while it reads a newcomer's history. The link
/// needs its channel read to answer `synced` (its subscriber connection is read in order), so
/// the task keeps taking messages meanwhile; past this many it gives that newcomer no history
/// instead of holding more.
const MAX_HELD: usize = 4096;

/// Handles what the link reports, and replays history to newcomers, one thing at a time: the
/// messages that arrive while a newcomer's history is read are handled after it is shown, as
/// if they had waited, so none is missed or shown twice.
async fn drain(hub: Arc<Hub>, link: Link, incoming: Receiver<Incoming>, woken: Receiver<()>) {
    // Names lost while the link comes back: renamed once it is up, so the new name reaches
    // Redis (the link drops what is sent before) and the notice comes before "restored".
    let mut lost_names: Vec<(Id, String)> = Vec::new();
    let mut held: VecDeque<Incoming> = VecDeque::new();
    loop {
        // Newcomers first: a busy room must not keep one waiting for its history (`or` polls
        // its first future first).
        let next = async {
            match woken.recv().await {
                Ok(()) => Wakeup::Replay,
                Err(_) => Wakeup::Closed,
            }
        }
        .or(async {
            match incoming.recv().await {
                Ok(message) => Wakeup::Incoming(message),
                Err(_) => Wakeup::Closed,
            }
        });
        match next.await {
            Wakeup::Closed => return,
            Wakeup::Incoming(message) => {
                handle(&hub, &link, &mut lost_names, message).await;
            }
            Wakeup::Replay => {
                let closed = replay(&hub, &link, &incoming, &mut held).await;
                while let Some(message) = held.pop_front() {
                    handle(&hub, &link, &mut lost_names, message).await;
                }
                if closed {
                    return;
                }
            }
        }
    }
}

/// Handles one message from the link.
async fn handle(hub: &Hub, link: &Link, lost_names: &mut Vec<(Id, String)>, message: Incoming) {
    if matches!(message, Incoming::Up) {
        rename_lost(hub, link, lost_names).await;
    }
    if let Some(lost) = hub.handle(message) {
        lost_names.push(lost);
    }
    if link.is_up() {
        rename_lost(hub, link, lost_names).await;
    }
}

enum Step {
    Read(Option<Vec<HistoryLine>>),
    Message(Incoming),
    Closed,
}

/// Shows each waiting newcomer its room's history, keeping in `held` what arrives meanwhile.
/// Returns whether the link's channel closed.
async fn replay(
    hub: &Hub,
    link: &Link,
    incoming: &Receiver<Incoming>,
    held: &mut VecDeque<Incoming>,
) -> bool {
    let waiting = std::mem::take(&mut hub.lock().cluster.to_replay);
    let mut closed = false;
    for id in waiting {
        let room = {
            let st = hub.lock();
            st.cluster.catching_up.get(&id).map(|c| c.room.clone())
        };
        let Some(room) = room else { continue };
        // Synced again after the read: every line of the room published before it that this
        // node will ever receive has come by then (a PING's reply follows them), so the first
        // one that came after the client entered is known, and the history stops short of it.
        let read = async {
            link.synced().await.ok()?;
            let history = link.history(&room).await.ok()?;
            link.synced().await.ok()?;
            Some(history)
        };
        let mut read = std::pin::pin!(read);
        let history = loop {
            if closed || held.len() >= MAX_HELD {
                break None;
            }
            let step = async { Step::Read(read.as_mut().await) }
                .or(async {
                    match incoming.recv().await {
                        Ok(message) => Step::Message(message),
                        Err(_) => Step::Closed,
                    }
                })
                .await;
            match step {
                Step::Read(history) => break history,
                Step::Message(message) => held.push_back(message),
                Step::Closed => closed = true,
            }
        };
        // The first line of the room that came while its history was read: said after the
        // client entered, so live for it, not history.
        let next = held.iter().find_map(|message| match message {
            Incoming::Room { room: r, seq, .. } if **r == *room => Some(*seq),
            _ => None,
        });
        hub.lock().replayed(id, &room, history, next);
    }
    closed
}

/// Gives each client whose name was taken a new guest name.
async fn rename_lost(hub: &Hub, link: &Link, lost_names: &mut Vec<(Id, String)>) {
    for (id, old) in std::mem::take(lost_names) {
        let new = hub.claim_guest(link, id).await;
        hub.rename_lost(id, &old, &new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_kind_time_and_line() {
        let sent = payload(true, "alice: a b\n");
        let (chat, _, line) = parse_payload(&sent).expect("parses");
        assert!(chat);
        assert_eq!(line, "alice: a b\n");
        assert_eq!(
            parse_payload("n5 *** x\n").map(|(c, t, l)| (c, t.0, l)),
            Some((false, 5, "*** x\n"))
        );
        assert_eq!(parse_payload("x5 y").map(|_| ()), None);
    }
}
