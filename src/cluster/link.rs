//! The link: this node's two connections to Redis, kept alive by one task.
//!
//! One connection carries commands (publish, names, presence, history), the other is in
//! subscribe mode (RESP2 allows nothing else on it). The task races the two sides; when either
//! fails both are dropped, the hub is told [`Incoming::Down`], and the task reconnects with
//! backoff, claims names again, rewrites presence, resubscribes and tells [`Incoming::Up`].
//!
//! The hub's side never waits: [`Link::publish`] and friends `try_send` into a bounded queue,
//! and a full queue means Redis is not keeping up, which is handled as a lost link rather than
//! by queueing more.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender, TrySendError};
use futures_lite::future::FutureExt;
use smol::{Executor, Timer};

use super::connection::{protocol_error, Connection};
use super::keys::{self, NodeId};
use super::resp::{Command, Reply};
use super::scripts::{self, Script};
use super::url::RedisUrl;

/// Timings and limits of a [`Link`], each with the reason for its default.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let config = smolchat::cluster::LinkConfig {
///     history: 50,
///     ..smolchat::cluster::LinkConfig::default()
/// };
/// assert_eq!(config.name_ttl, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Lines each room keeps in Redis for newcomers (default 20, like `Config::history`;
    /// `0` keeps none).
    pub history: usize,
    /// How long a room's history outlives its last line (default 1 day), so rooms nobody uses
    /// any more do not fill Redis.
    pub history_ttl: Duration,
    /// Expiry of a claimed name (default 30 s). The owner renews every third of it, so a name
    /// of a killed node is free again at most this long after the node died.
    pub name_ttl: Duration,
    /// How often a node announces itself (default 2 s).
    pub heartbeat: Duration,
    /// Silence after which a node counts as lost and its users as gone (default 10 s: five
    /// missed heartbeats, so a busy Redis or a short pause does not end anyone's session).
    pub node_timeout: Duration,
    /// Commands waiting to be sent (default 4096). Past it Redis is not keeping up: the link
    /// is dropped and rebuilt instead of holding more.
    pub queue: usize,
    /// Messages received and not yet taken by the hub (default 1024). While it is full the
    /// link stops reading, Redis buffers for it, and past `client-output-buffer-limit pubsub`
    /// Redis drops the link: memory stays bounded at both ends.
    pub incoming: usize,
    /// Largest reply accepted (default 4 MiB: a `/who` of 100,000 names); a larger one is a
    /// protocol error and drops the link.
    pub max_reply: usize,
    /// How long Redis may take to answer a command before the link counts as lost (default 10 s).
    pub reply_timeout: Duration,
    /// Longest wait between reconnection attempts (default 5 s); the first is after 100 ms,
    /// then twice as long each time, with jitter so nodes do not reconnect in step.
    pub max_backoff: Duration,
}

impl Default for LinkConfig {
    fn default() -> LinkConfig {
        LinkConfig {
            history: 20,
            history_ttl: Duration::from_secs(24 * 60 * 60),
            name_ttl: Duration::from_secs(30),
            heartbeat: Duration::from_secs(2),
            node_timeout: Duration::from_secs(10),
            queue: 4096,
            incoming: 1024,
            max_reply: 4 << 20,
            reply_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl LinkConfig {
    /// Checks the timings fit together.
    fn check(&self) -> io::Result<()> {
        let problem = if self.heartbeat.is_zero() || self.node_timeout < 2 * self.heartbeat {
            Some("node_timeout must be at least two heartbeats")
        } else if self.name_ttl < Duration::from_secs(3) {
            Some("name_ttl must be at least 3 s")
        } else if self.node_timeout >= 2 * self.name_ttl {
            // A lost node's presence (kept for two name_ttl) must outlive its detection, so
            // the others can still read whom they lost.
            Some("node_timeout must be shorter than two name_ttl")
        } else if self.history_ttl < Duration::from_secs(1)
            || self.reply_timeout.is_zero()
            || self.max_backoff < FIRST_BACKOFF
        {
            Some("history_ttl must be at least 1 s, reply_timeout above 0, max_backoff at least 100 ms")
        } else if self.queue == 0 || self.incoming == 0 {
            Some("queue and incoming must be at least 1")
        } else if self.max_reply < 1024 {
            Some("max_reply must be at least 1024")
        } else {
            None
        };
        problem.map_or(Ok(()), |p| {
            Err(io::Error::new(io::ErrorKind::InvalidInput, p))
        })
    }

    /// How often names and presence are renewed.
    fn renew_every(&self) -> Duration {
        self.name_ttl / 3
    }

    /// Presence lives two name expiries: long enough for the others to read whom a lost node
    /// had, short enough that a dead node's rows go away by themselves.
    fn presence_ttl(&self) -> Duration {
        self.name_ttl * 2
    }
}

/// What the link tells the hub, in the order it happened.
///
/// # Examples
///
/// ```
/// use smolchat::cluster::Incoming;
///
/// fn describe(message: &Incoming) -> String {
///     match message {
///         Incoming::Room { room, line, .. } => format!("#{room}: {line}"),
///         Incoming::Down => "cluster link lost".into(),
///         other => format!("{other:?}"),
///     }
/// }
/// assert_eq!(describe(&Incoming::Down), "cluster link lost");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming {
    /// A line for a room this node has members in, from any node, this one included.
    Room {
        /// The room's key.
        room: String,
        /// The node that published it.
        origin: NodeId,
        /// The sending connection on `origin`, as given to [`Link::publish`].
        sender: Option<u64>,
        /// The line's number in its room, as in [`Link::history`]: one more for each line.
        seq: u64,
        /// The line, as given to [`Link::publish`].
        line: String,
    },
    /// A payload sent to this node with [`Link::direct`].
    Direct {
        /// The node that sent it.
        origin: NodeId,
        /// The payload.
        payload: String,
    },
    /// A node went silent for `node_timeout`: it is gone, and so are its users.
    NodeLost {
        /// The lost node.
        node: NodeId,
        /// Its members of the rooms this node has members in: `(room, name)`.
        members: Vec<(String, String)>,
    },
    /// A name this node held belongs to someone else now: it expired while Redis was away.
    NameLost {
        /// The connection that held it.
        id: u64,
        /// The name as it was claimed.
        name: String,
    },
    /// The link to Redis is lost; nothing is sent or received until [`Incoming::Up`].
    Down,
    /// The link is back: names claimed again (see [`Incoming::NameLost`]), presence rewritten,
    /// rooms subscribed again.
    Up,
}

/// Why a link operation did not happen.
///
/// # Examples
///
/// ```
/// assert_eq!(smolchat::cluster::LinkError::Down.to_string(), "the cluster link is down");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// Redis is unreachable now; the link is reconnecting.
    Down,
    /// The outgoing queue was full: Redis is not keeping up, and the link was dropped.
    Busy,
    /// Redis answered with an error.
    Redis(String),
    /// Redis answered with a reply of an unexpected kind.
    Unexpected,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Down => f.write_str("the cluster link is down"),
            LinkError::Busy => f.write_str("redis is not keeping up; the cluster link was reset"),
            LinkError::Redis(e) => write!(f, "redis: {e}"),
            LinkError::Unexpected => f.write_str("unexpected reply from redis"),
        }
    }
}

impl std::error::Error for LinkError {}

/// The outcome of [`Link::claim`].
///
/// # Examples
///
/// ```
/// use smolchat::cluster::Claim;
///
/// assert_ne!(Claim::Claimed, Claim::Taken);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The name is ours across the cluster until released.
    Claimed,
    /// Another connection, on this node or another, holds it.
    Taken,
    /// The link is down: the name is kept locally and claimed when the link is back, which may
    /// end in [`Incoming::NameLost`].
    Offline,
}

/// Who holds a name, from [`Link::lookup`].
///
/// # Examples
///
/// ```
/// let owner = smolchat::cluster::Owner {
///     node: smolchat::cluster::NodeId::random(),
///     id: 7,
///     name: "Alice".into(),
/// };
/// assert_eq!(owner.name, "Alice");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The node the holder is connected to.
    pub node: NodeId,
    /// The holder's connection id on that node.
    pub id: u64,
    /// The name as the holder spelled it.
    pub name: String,
}

/// A line of a room's history, as [`Link::history`] reads it: what was published, and by whom.
///
/// # Examples
///
/// ```
/// use smolchat::cluster::{HistoryLine, NodeId};
///
/// let said = HistoryLine {
///     origin: NodeId::random(),
///     sender: Some(7),
///     seq: 1,
///     line: "alice: hi\n".into(),
/// };
/// assert_eq!(said.line, "alice: hi\n");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryLine {
    /// The node that published it.
    pub origin: NodeId,
    /// The sending connection on `origin`, as given to [`Link::publish`].
    pub sender: Option<u64>,
    /// The line's number in its room, as in [`Incoming::Room`].
    pub seq: u64,
    /// The line, as given to [`Link::publish`].
    pub line: String,
}

/// Keeps this node subscribed to a room until dropped; see [`Link::reserve`].
///
/// # Examples
///
/// ```no_run
/// # fn hold(link: &smolchat::cluster::Link) {
/// let reserved: smolchat::cluster::Reservation = link.reserve("attic");
/// # drop(reserved);
/// # }
/// ```
#[derive(Debug)]
#[must_use = "the subscription is given up when it is dropped"]
pub struct Reservation {
    link: Link,
    room: String,
    fresh: bool,
}

impl Reservation {
    /// Whether the room had no member on this node yet, so that the node's subscription to it
    /// may not be in effect (this reservation or another still waiting made it) and
    /// [`Link::synced`] is worth waiting for.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn join(link: &smolchat::cluster::Link) {
    /// let reserved = link.reserve("attic");
    /// if reserved.is_fresh() {
    ///     let _ = link.synced().await;
    /// }
    /// # }
    /// ```
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut registry = self.link.inner.shared.registry();
        match registry.reserved.get_mut(&self.room) {
            Some(count) if *count > 1 => *count -= 1,
            Some(_) => {
                registry.reserved.remove(&self.room);
                self.link.unsubscribe_if_unused(&mut registry, &self.room);
            }
            None => {}
        }
    }
}

/// This node's link to Redis: a cheap handle, cloned by everyone who talks to the cluster.
///
/// The link's task runs on the executor given to [`Link::connect`]; it ends when the last
/// handle is dropped (as if the node had died: names and presence expire) or at [`Link::close`].
///
/// # Examples
///
/// ```no_run
/// use smolchat::cluster::{Incoming, Link, LinkConfig};
///
/// let ex = smol::Executor::new();
/// smol::block_on(ex.run(async {
///     let url = "redis://127.0.0.1:6379".parse().expect("a valid URL");
///     let (link, incoming) = Link::connect(&ex, url, LinkConfig::default()).await?;
///     link.enter("lobby", 1, "alice");
///     link.publish("lobby", Some(1), "alice: hello\n").expect("link up");
///     if let Ok(Incoming::Room { line, .. }) = incoming.recv().await {
///         assert_eq!(line, "alice: hello\n");
///     }
///     link.close().await;
///     std::io::Result::Ok(())
/// }))?;
/// # std::io::Result::Ok(())
/// ```
#[derive(Clone)]
pub struct Link {
    inner: Arc<Inner>,
}

/// Dropped with the last [`Link`]: closing the channels tells the task to stop.
struct Inner {
    shared: Arc<Shared>,
    requests: Sender<Request>,
    subs: Sender<Subscription>,
    /// Wakes the task to drop the link at once (the queue overflowed).
    kick: Sender<()>,
}

/// What the task and the handles both see.
struct Shared {
    node: NodeId,
    config: LinkConfig,
    up: AtomicBool,
    shas: Shas,
    registry: Mutex<Registry>,
    /// What [`Link::drained`] waiters hold a receiver of: dropping the sender wakes them all.
    drained: Mutex<Option<(Sender<()>, Receiver<()>)>>,
}

/// This node's part of the cluster state, kept so it can be written again after Redis was away.
#[derive(Default)]
struct Registry {
    /// Room key → connection id → name: this node's members. A room is here exactly while
    /// this node is subscribed to it: while it has members or reservations.
    rooms: HashMap<String, HashMap<u64, String>>,
    /// Room key → how many [`Reservation`]s keep it subscribed.
    reserved: HashMap<String, usize>,
    /// Name key → our value, for every name this node holds.
    names: HashMap<String, String>,
    /// Other nodes → when each was last heard.
    nodes: HashMap<NodeId, Instant>,
    /// Nodes this one reported lost, and when: not taken for new again from the rooms' node
    /// sets, which still list them until their presence is gone.
    lost: HashMap<NodeId, Instant>,
}

/// Script hashes from `SCRIPT LOAD`, the same on every Redis for the same text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shas(Vec<String>);

impl Shas {
    fn of(&self, script: Script) -> &str {
        let index = scripts::ALL
            .iter()
            .position(|s| s.name == script.name)
            .unwrap_or(0);
        &self.0[index]
    }
}

enum Request {
    /// An encoded command, and where its reply goes (nowhere for fire-and-forget commands).
    Call(Vec<u8>, Option<Sender<Reply>>),
    /// Release this node's names and presence, say goodbye, stop. Dropped when done.
    Close(Sender<()>),
}

enum Subscription {
    Subscribe(String),
    Unsubscribe(String),
    /// Answered once the changes before it are in effect (a PING's reply follows them).
    Sync(Sender<()>),
}

/// How serving a pair of connections ended.
enum Ended {
    Lost,
    Closed,
}

impl Link {
    /// Connects to Redis, then keeps the link up from a task on `executor`.
    ///
    /// Returns once both connections are logged in and subscribed, so a Redis that is
    /// unreachable at start is an error here (the binary exits with it) rather than a silent
    /// retry. Later losses are retried forever, reported as [`Incoming::Down`] and
    /// [`Incoming::Up`] on the returned receiver, which the hub must keep draining.
    ///
    /// # Errors
    ///
    /// Connection or login failures, and `InvalidInput` for inconsistent `config` timings.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # let ex = smol::Executor::new();
    /// # smol::block_on(ex.run(async {
    /// let url = "redis://127.0.0.1:6379/0".parse().expect("a valid URL");
    /// let config = smolchat::cluster::LinkConfig::default();
    /// let (link, incoming) = smolchat::cluster::Link::connect(&ex, url, config).await?;
    /// # drop((link, incoming));
    /// # std::io::Result::Ok(()) }))?;
    /// # std::io::Result::Ok(())
    /// ```
    pub async fn connect(
        executor: &Executor<'_>,
        url: RedisUrl,
        config: LinkConfig,
    ) -> io::Result<(Link, Receiver<Incoming>)> {
        config.check()?;
        let (mut cmd, mut sub, shas) = open(&url, &config).await?;
        let shared = Arc::new(Shared {
            node: NodeId::random(),
            config,
            up: AtomicBool::new(false),
            shas,
            registry: Mutex::new(Registry::default()),
            drained: Mutex::new(None),
        });
        let (requests_tx, requests) = async_channel::bounded(shared.config.queue);
        let (subs_tx, subs) = async_channel::bounded(shared.config.queue);
        let (kick_tx, kick) = async_channel::bounded(1);
        let (incoming_tx, incoming) = async_channel::bounded(shared.config.incoming);
        let task = Task {
            shared: shared.clone(),
            url,
            requests,
            subs,
            kick,
            incoming: incoming_tx,
        };
        task.resync(&mut cmd, &mut sub).await?;
        shared.up.store(true, Ordering::Release);
        executor.spawn(task.run(cmd, sub)).detach();
        let inner = Inner {
            shared,
            requests: requests_tx,
            subs: subs_tx,
            kick: kick_tx,
        };
        Ok((
            Link {
                inner: Arc::new(inner),
            },
            incoming,
        ))
    }

    /// This node's id.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn show(link: &smolchat::cluster::Link) {
    /// println!("node {}", link.node());
    /// # }
    /// ```
    pub fn node(&self) -> &NodeId {
        &self.inner.shared.node
    }

    /// Whether the link is up now.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn show(link: &smolchat::cluster::Link) {
    /// if !link.is_up() {
    ///     println!("local chat only");
    /// }
    /// # }
    /// ```
    pub fn is_up(&self) -> bool {
        self.inner.shared.up.load(Ordering::Acquire)
    }

    /// How many other nodes were heard from within `node_timeout`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn show(link: &smolchat::cluster::Link) {
    /// println!("{} other nodes", link.nodes_seen());
    /// # }
    /// ```
    pub fn nodes_seen(&self) -> usize {
        self.inner.shared.registry().nodes.len()
    }

    /// Publishes a room line to every node with members in the room (this one included) and
    /// appends it to the room's history, in one step. Never waits.
    ///
    /// `sender` travels with the line (e.g. so the sender's node can skip echoing it).
    ///
    /// # Errors
    ///
    /// [`LinkError::Down`] while Redis is away (the caller delivers locally);
    /// [`LinkError::Busy`] if the queue is full, which also drops the link.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn say(link: &smolchat::cluster::Link) {
    /// if link.publish("lobby", Some(1), "alice: hi\n").is_err() {
    ///     // deliver to this node's members only
    /// }
    /// # }
    /// ```
    pub fn publish(&self, room: &str, sender: Option<u64>, line: &str) -> Result<(), LinkError> {
        self.publish_keeping(room, sender, line, self.inner.shared.config.history)
    }

    /// Publishes a room line as [`Link::publish`] does, numbered in the same sequence, but
    /// keeps it out of the room's history: for notices, which a newcomer's replay leaves out
    /// and which would crowd out what was said. Never waits.
    ///
    /// # Errors
    ///
    /// As [`Link::publish`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn joined(link: &smolchat::cluster::Link) {
    /// let _ = link.notify("lobby", Some(1), "*** alice joined #lobby\n");
    /// # }
    /// ```
    pub fn notify(&self, room: &str, sender: Option<u64>, line: &str) -> Result<(), LinkError> {
        self.publish_keeping(room, sender, line, 0)
    }

    fn publish_keeping(
        &self,
        room: &str,
        sender: Option<u64>,
        line: &str,
        keep: usize,
    ) -> Result<(), LinkError> {
        let config = &self.inner.shared.config;
        let cmd = self
            .eval(
                scripts::PUBLISH,
                &[keys::history_key(room), keys::seq_key(room)],
            )
            .arg(keys::room_channel(room))
            .arg(self.node().as_str())
            .arg(sender.map_or_else(|| "-".to_owned(), |id| id.to_string()))
            .arg(line)
            .arg(keep.to_string())
            .arg(millis(config.history_ttl));
        self.queue(cmd)
    }

    /// Sends a payload to one node (for private messages to its users). Never waits.
    ///
    /// # Errors
    ///
    /// As [`Link::publish`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn pm(link: &smolchat::cluster::Link, owner: smolchat::cluster::Owner) {
    /// let _ = link.direct(&owner.node, &format!("pm {} alice hi", owner.id));
    /// # }
    /// ```
    pub fn direct(&self, node: &NodeId, payload: &str) -> Result<(), LinkError> {
        let cmd = Command::new("PUBLISH")
            .arg(keys::node_channel(node))
            .arg(format!("{} {payload}", self.node()));
        self.queue(cmd)
    }

    /// Records that connection `id`, called `name`, is in `room` on this node; call it again
    /// with the new name after a rename. The first member of a room subscribes this node to
    /// the room's lines (see [`Link::reserve`] to have the subscription in effect first).
    /// Never waits; while the link is down the record waits for it locally.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn join(link: &smolchat::cluster::Link) {
    /// link.enter("lobby", 1, "alice");
    /// # }
    /// ```
    pub fn enter(&self, room: &str, id: u64, name: &str) {
        let shared = &self.inner.shared;
        {
            let mut registry = shared.registry();
            self.subscribed(&mut registry, room)
                .insert(id, name.to_owned());
        }
        let cmd = self.eval(scripts::ENTER, &presence_keys(room, &shared.node));
        self.record(enter_args(cmd, shared, room, id, name));
    }

    /// Records that connection `id` left `room` on this node; the last one out unsubscribes
    /// this node from the room. Never waits.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn leave(link: &smolchat::cluster::Link) {
    /// link.exit("lobby", 1);
    /// # }
    /// ```
    pub fn exit(&self, room: &str, id: u64) {
        let shared = &self.inner.shared;
        {
            let mut registry = shared.registry();
            let Some(members) = registry.rooms.get_mut(room) else {
                return;
            };
            members.remove(&id);
            self.unsubscribe_if_unused(&mut registry, room);
        }
        let cmd = self
            .eval(scripts::EXIT, &presence_keys(room, &shared.node))
            .arg(id.to_string())
            .arg(shared.node.as_str())
            .arg(room);
        self.record(cmd);
    }

    /// Subscribes this node to `room`'s lines, if it is not yet, for as long as the
    /// [`Reservation`] lives: await [`Link::synced`] next, then [`Link::enter`] the member,
    /// which then receives every line published after it entered (without it, the first
    /// member of a room on this node misses what is published before Redis has the
    /// subscription).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn join(link: &smolchat::cluster::Link) -> Result<(), smolchat::cluster::LinkError> {
    /// let reserved = link.reserve("attic");
    /// link.synced().await?;
    /// link.enter("attic", 1, "alice");
    /// drop(reserved); // the member keeps the subscription now
    /// # Ok(()) }
    /// ```
    pub fn reserve(&self, room: &str) -> Reservation {
        let fresh = {
            let mut registry = self.inner.shared.registry();
            let fresh = registry.rooms.get(room).is_none_or(HashMap::is_empty);
            self.subscribed(&mut registry, room);
            *registry.reserved.entry(room.to_owned()).or_default() += 1;
            fresh
        };
        Reservation {
            link: self.clone(),
            room: room.to_owned(),
            fresh,
        }
    }

    /// The room's members on this node, subscribing to the room first if it has none.
    fn subscribed<'r>(
        &self,
        registry: &'r mut Registry,
        room: &str,
    ) -> &'r mut HashMap<u64, String> {
        registry.rooms.entry(room.to_owned()).or_insert_with(|| {
            self.subscription(Subscription::Subscribe(room.to_owned()));
            HashMap::new()
        })
    }

    /// Unsubscribes from a room that has no member and no reservation left on this node.
    fn unsubscribe_if_unused(&self, registry: &mut Registry, room: &str) {
        let unused = registry.rooms.get(room).is_some_and(HashMap::is_empty)
            && !registry.reserved.contains_key(room);
        if unused {
            registry.rooms.remove(room);
            self.subscription(Subscription::Unsubscribe(room.to_owned()));
        }
    }

    /// Claims `name` for connection `id` across the cluster, case-insensitively; the link
    /// renews it until [`Link::release`].
    ///
    /// # Errors
    ///
    /// [`LinkError::Busy`], or [`LinkError::Down`] if the link failed while waiting.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use smolchat::cluster::Claim;
    ///
    /// # async fn nick(link: &smolchat::cluster::Link) -> Result<(), smolchat::cluster::LinkError> {
    /// match link.claim("alice", 1).await? {
    ///     Claim::Claimed | Claim::Offline => println!("you are now alice"),
    ///     Claim::Taken => println!("the name alice is taken"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn claim(&self, name: &str, id: u64) -> Result<Claim, LinkError> {
        let shared = &self.inner.shared;
        let key = keys::name_key(name);
        let value = keys::name_value(&shared.node, id, name);
        if !self.is_up() {
            shared.registry().names.insert(key, value);
            return Ok(Claim::Offline);
        }
        let cmd = Command::new("SET")
            .arg(&key)
            .arg(&value)
            .arg("NX")
            .arg("PX")
            .arg(millis(shared.config.name_ttl));
        match self.request(cmd).await? {
            Reply::Simple(_) => {
                // Renewal, and the claim after a lost link, take it from here.
                shared.registry().names.insert(key, value);
                Ok(Claim::Claimed)
            }
            Reply::Nil => Ok(Claim::Taken),
            _ => Err(LinkError::Unexpected),
        }
    }

    /// Gives up a name held by connection `id`: deleted only if still ours. Never waits.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn quit(link: &smolchat::cluster::Link) {
    /// link.release("alice", 1);
    /// # }
    /// ```
    pub fn release(&self, name: &str, id: u64) {
        let shared = &self.inner.shared;
        let key = keys::name_key(name);
        let value = keys::name_value(&shared.node, id, name);
        {
            let mut registry = shared.registry();
            if registry.names.get(&key) == Some(&value) {
                registry.names.remove(&key);
            }
        }
        let _ = self.queue(self.eval(scripts::RELEASE, &[&key]).arg(value));
    }

    /// Who holds `name`, on which node.
    ///
    /// # Errors
    ///
    /// As [`Link::claim`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn pm(link: &smolchat::cluster::Link) -> Result<(), smolchat::cluster::LinkError> {
    /// if let Some(owner) = link.lookup("bob").await? {
    ///     link.direct(&owner.node, &format!("pm {} alice hello", owner.id))?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn lookup(&self, name: &str) -> Result<Option<Owner>, LinkError> {
        match self
            .request(Command::new("GET").arg(keys::name_key(name)))
            .await?
        {
            Reply::Nil => Ok(None),
            reply => {
                let value = reply.text().ok_or(LinkError::Unexpected)?;
                let (node, id, name) =
                    keys::parse_name_value(value).ok_or(LinkError::Unexpected)?;
                Ok(Some(Owner {
                    node,
                    id,
                    name: name.to_owned(),
                }))
            }
        }
    }

    /// A guest number no other node hands out (a counter in Redis).
    ///
    /// # Errors
    ///
    /// As [`Link::claim`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn guest(link: &smolchat::cluster::Link) -> Result<(), smolchat::cluster::LinkError> {
    /// let name = format!("guest{}", link.next_guest().await?);
    /// # Ok(()) }
    /// ```
    pub async fn next_guest(&self) -> Result<u64, LinkError> {
        match self
            .request(Command::new("INCR").arg(keys::GUEST_KEY))
            .await?
        {
            Reply::Integer(n) => u64::try_from(n).map_err(|_| LinkError::Unexpected),
            _ => Err(LinkError::Unexpected),
        }
    }

    /// A room's history in Redis, oldest first, each line with its number: what every node
    /// said there lately.
    ///
    /// Read it after [`Link::synced`] following the first [`Link::enter`] of a room: every
    /// later line then arrives as [`Incoming::Room`], and one whose `seq` is at most the last
    /// number read here is already in the history.
    ///
    /// # Errors
    ///
    /// As [`Link::claim`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn replay(link: &smolchat::cluster::Link) -> Result<(), smolchat::cluster::LinkError> {
    /// for said in link.history("lobby").await? {
    ///     print!("[history] {}", said.line);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn history(&self, room: &str) -> Result<Vec<HistoryLine>, LinkError> {
        let cmd = Command::new("LRANGE")
            .arg(keys::history_key(room))
            .arg("0")
            .arg("-1");
        strings(self.request(cmd).await?)?
            .iter()
            .map(|entry| {
                let (origin, sender, seq, line) =
                    keys::parse_room_payload(entry).ok_or(LinkError::Unexpected)?;
                Ok(HistoryLine {
                    origin,
                    sender,
                    seq,
                    line: line.to_owned(),
                })
            })
            .collect()
    }

    /// Completes once every [`Link::enter`] and [`Link::exit`] made before it is in effect at
    /// Redis: from then on this node receives every line of the rooms it entered.
    ///
    /// # Errors
    ///
    /// [`LinkError::Down`] if the link is or goes down first; [`LinkError::Busy`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn join(link: &smolchat::cluster::Link) -> Result<(), smolchat::cluster::LinkError> {
    /// link.enter("attic", 1, "alice");
    /// link.synced().await?;
    /// let history = link.history("attic").await?;
    /// # Ok(()) }
    /// ```
    pub async fn synced(&self) -> Result<(), LinkError> {
        if !self.is_up() {
            return Err(LinkError::Down);
        }
        let (tx, rx) = async_channel::bounded(1);
        match self.inner.subs.try_send(Subscription::Sync(tx)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.lose();
                return Err(LinkError::Busy);
            }
            Err(TrySendError::Closed(_)) => return Err(LinkError::Down),
        }
        match rx.recv().await {
            Ok(()) => Ok(()),
            Err(_) => Err(LinkError::Down),
        }
    }

    /// The names in a room on every live node, this one included, unsorted.
    ///
    /// # Errors
    ///
    /// As [`Link::claim`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn who(link: &smolchat::cluster::Link) -> Result<(), smolchat::cluster::LinkError> {
    /// let names = link.who("lobby").await?;
    /// println!("{} users", names.len());
    /// # Ok(()) }
    /// ```
    pub async fn who(&self, room: &str) -> Result<Vec<String>, LinkError> {
        let cmd = self
            .eval(scripts::WHO, &[&keys::room_nodes_key(room)])
            .arg(room);
        strings(self.request(cmd).await?)
    }

    /// Every room with members on a live node, with its size, unsorted.
    ///
    /// # Errors
    ///
    /// As [`Link::claim`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn rooms(link: &smolchat::cluster::Link) -> Result<(), smolchat::cluster::LinkError> {
    /// for (room, size) in link.rooms().await? {
    ///     println!("#{room} ({size})");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn rooms(&self) -> Result<Vec<(String, u64)>, LinkError> {
        let Reply::Array(items) = self
            .request(self.eval(scripts::ROOMS, &[keys::ROOMS_KEY]))
            .await?
        else {
            return Err(LinkError::Unexpected);
        };
        items
            .chunks(2)
            .map(|pair| match pair {
                [room, Reply::Integer(n)] => Ok((
                    room.text().ok_or(LinkError::Unexpected)?.to_owned(),
                    u64::try_from(*n).map_err(|_| LinkError::Unexpected)?,
                )),
                _ => Err(LinkError::Unexpected),
            })
            .collect()
    }

    /// Whether the outgoing queue is over half full: Redis is behind, and whoever can wait
    /// (a chat line's sender) should, with [`Link::drained`], before publishing more.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn say(link: &smolchat::cluster::Link) {
    /// if link.congested() {
    ///     link.drained().await;
    /// }
    /// let _ = link.publish("lobby", Some(1), "alice: hi\n");
    /// # }
    /// ```
    pub fn congested(&self) -> bool {
        self.inner.requests.len() > self.inner.shared.config.queue / 2
    }

    /// Completes once the outgoing queue is down to a quarter full, or the link is down: the
    /// link's task wakes every waiter then. Bounded by `reply_timeout`, after which an
    /// unanswered link is dropped.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn wait(link: &smolchat::cluster::Link) {
    /// link.drained().await;
    /// # }
    /// ```
    pub async fn drained(&self) {
        let shared = &self.inner.shared;
        let low = shared.config.queue / 4;
        loop {
            let woken = shared
                .drained()
                .get_or_insert_with(|| async_channel::bounded(1))
                .1
                .clone();
            // Checked after taking the receiver: a wake-up between the two is not missed.
            if !self.is_up() || self.inner.requests.len() <= low {
                return;
            }
            let _ = woken.recv().await;
        }
    }

    /// Leaves the cluster cleanly: releases this node's names and presence, tells the other
    /// nodes, and stops the link's task (for every clone of this handle).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn stop(link: smolchat::cluster::Link) {
    /// link.close().await;
    /// # }
    /// ```
    pub async fn close(self) {
        let (done, finished) = async_channel::bounded(1);
        if self.inner.requests.send(Request::Close(done)).await.is_ok() {
            let _ = finished.recv().await;
        }
    }

    fn eval<K: AsRef<str>>(&self, script: Script, keys: &[K]) -> Command {
        let mut cmd = Command::new("EVALSHA")
            .arg(self.inner.shared.shas.of(script))
            .arg(keys.len().to_string());
        for key in keys {
            cmd = cmd.arg(key.as_ref());
        }
        cmd
    }

    /// Queues a command whose reply nobody waits for.
    fn queue(&self, cmd: Command) -> Result<(), LinkError> {
        if !self.is_up() {
            return Err(LinkError::Down);
        }
        self.push(Request::Call(cmd.encode(), None))
    }

    /// Queues a change of presence even while the link is down. The link drops it then (the
    /// registry is written again when it is back), but one made while it comes back, after
    /// it read the registry, must still reach Redis.
    fn record(&self, cmd: Command) {
        let _ = self.push(Request::Call(cmd.encode(), None));
    }

    async fn request(&self, cmd: Command) -> Result<Reply, LinkError> {
        if !self.is_up() {
            return Err(LinkError::Down);
        }
        let (tx, rx) = async_channel::bounded(1);
        self.push(Request::Call(cmd.encode(), Some(tx)))?;
        match rx.recv().await {
            Ok(Reply::Error(e)) => Err(LinkError::Redis(e)),
            Ok(reply) => Ok(reply),
            Err(_) => Err(LinkError::Down),
        }
    }

    fn push(&self, request: Request) -> Result<(), LinkError> {
        match self.inner.requests.try_send(request) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.lose();
                Err(LinkError::Busy)
            }
            Err(TrySendError::Closed(_)) => Err(LinkError::Down),
        }
    }

    /// Called with the registry locked, so changes reach the task in the registry's order.
    fn subscription(&self, change: Subscription) {
        if let Err(TrySendError::Full(_)) = self.inner.subs.try_send(change) {
            self.lose();
        }
    }

    /// Drops the link now; the task reconnects and rebuilds it from the registry.
    fn lose(&self) {
        self.inner.shared.down();
        let _ = self.inner.kick.try_send(());
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("node", self.node())
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Locks the registry; a panic elsewhere leaves nothing in it half-changed that matters.
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn drained(&self) -> MutexGuard<'_, Option<(Sender<()>, Receiver<()>)>> {
        self.drained.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every [`Link::drained`] waiter, to look again.
    fn wake_drained(&self) {
        self.drained().take();
    }

    /// Marks the link down; nobody waits for it to drain any more.
    fn down(&self) {
        self.up.store(false, Ordering::Release);
        self.wake_drained();
    }
}

/// The link's task and what it owns.
struct Task {
    shared: Arc<Shared>,
    url: RedisUrl,
    requests: Receiver<Request>,
    subs: Receiver<Subscription>,
    kick: Receiver<()>,
    incoming: Sender<Incoming>,
}

/// Most queued commands written before their replies are read.
const BATCH: usize = 256;
/// First wait before reconnecting.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

impl Task {
    async fn run(self, mut cmd: Connection, mut sub: Connection) {
        loop {
            let ended = self.serve(&mut cmd, &mut sub).await;
            drop((cmd, sub));
            self.shared.down();
            if let Ended::Closed = ended {
                return;
            }
            if self.incoming.send(Incoming::Down).await.is_err() {
                return;
            }
            let mut backoff = FIRST_BACKOFF;
            (cmd, sub) = loop {
                if !self.idle(jitter(backoff)).await {
                    return;
                }
                backoff = (backoff * 2).min(self.shared.config.max_backoff);
                let Ok((mut cmd, mut sub, shas)) = open(&self.url, &self.shared.config).await
                else {
                    continue;
                };
                if shas == self.shared.shas && self.resync(&mut cmd, &mut sub).await.is_ok() {
                    break (cmd, sub);
                }
            };
            self.shared.up.store(true, Ordering::Release);
            if self.incoming.send(Incoming::Up).await.is_err() {
                return;
            }
        }
    }

    /// Waits `delay` while the link is down, failing whatever is asked meanwhile. Returns
    /// `false` if the link should stop.
    async fn idle(&self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            let request = async { Some(self.requests.recv().await) }
                .or(async {
                    Timer::at(deadline).await;
                    None
                })
                .await;
            match request {
                None => return true,
                Some(Ok(Request::Call(..))) => {} // dropping its reply sender says Down
                Some(Ok(Request::Close(_)) | Err(_)) => return false,
            }
        }
    }

    /// Makes a fresh pair of connections carry this node's state: names, presence,
    /// subscriptions, heartbeat.
    async fn resync(&self, cmd: &mut Connection, sub: &mut Connection) -> io::Result<()> {
        let shared = &self.shared;
        while self.subs.try_recv().is_ok() {}
        while self.kick.try_recv().is_ok() {}
        let (rooms, names) = {
            let mut registry = shared.registry();
            // Everyone was out of earshot while the link was down: start their clocks again.
            let now = Instant::now();
            registry.nodes.values_mut().for_each(|seen| *seen = now);
            let rooms: Vec<(String, Vec<(u64, String)>)> = registry
                .rooms
                .iter()
                .map(|(room, members)| {
                    (
                        room.clone(),
                        members.iter().map(|(id, n)| (*id, n.clone())).collect(),
                    )
                })
                .collect();
            let names: Vec<(String, String)> = registry
                .names
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (rooms, names)
        };

        // One SUBSCRIBE: Redis confirms every channel before any message can follow.
        let mut subscribe = Command::new("SUBSCRIBE")
            .arg(keys::CONTROL_CHANNEL)
            .arg(keys::node_channel(&shared.node));
        for (room, _) in &rooms {
            subscribe = subscribe.arg(keys::room_channel(room));
        }
        sub.send(&subscribe.encode()).await?;
        for _ in 0..rooms.len() + 2 {
            self.timed(sub.reply()).await?;
        }

        let lost = self.renew_names(cmd, &names).await?;
        for (key, value) in lost {
            shared.registry().names.remove(&key);
            if let Some((_, id, name)) = keys::parse_name_value(&value) {
                let lost = Incoming::NameLost {
                    id,
                    name: name.to_owned(),
                };
                self.incoming.send(lost).await.map_err(|_| closed())?;
            }
        }
        let mut writes = Vec::new();
        for (room, members) in &rooms {
            // Whoever left while the link was down was never taken out of Redis: the room's
            // presence is written afresh from the registry.
            let presence = keys::presence_key(room, &shared.node);
            writes.push(Command::new("DEL").arg(presence).encode());
            for (id, name) in members {
                let enter = self.eval(scripts::ENTER, &presence_keys(room, &shared.node));
                writes.push(enter_args(enter, shared, room, *id, name).encode());
            }
        }
        self.pipeline(cmd, &writes).await?;
        self.heartbeat(cmd).await
    }

    /// Serves until the link fails or is closed.
    async fn serve(&self, cmd: &mut Connection, sub: &mut Connection) -> Ended {
        let commands = async {
            let config = &self.shared.config;
            let mut next_beat = Instant::now() + config.heartbeat;
            let mut next_renew = Instant::now() + config.renew_every();
            // News found by the heartbeat, waiting for room in `incoming`: never awaited here,
            // so a hub that is slow to drain cannot stop this node's heartbeat. At most one
            // entry per name and per node, so bounded.
            let mut news: VecDeque<Incoming> = VecDeque::new();
            loop {
                // `or` prefers its first future: checked first, a steady stream of requests can
                // neither delay the heartbeat nor hide a full queue.
                let wake = if self.kick.try_recv().is_ok() {
                    Wake::Kick
                } else if Instant::now() >= next_beat {
                    Wake::Beat
                } else {
                    async { Wake::Request(self.requests.recv().await.ok()) }
                        .or(async {
                            let _ = self.kick.recv().await;
                            Wake::Kick
                        })
                        .or(async {
                            Timer::at(next_beat).await;
                            Wake::Beat
                        })
                        .await
                };
                let done = match wake {
                    Wake::Request(Some(Request::Call(first, reply))) => {
                        match self.batch(cmd, first, reply).await {
                            Ok(Some(done)) => {
                                self.leave(cmd).await;
                                drop(done);
                                return Ended::Closed;
                            }
                            Ok(None) => {
                                if self.requests.len() <= self.shared.config.queue / 4 {
                                    self.shared.wake_drained();
                                }
                                Ok(())
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Wake::Request(Some(Request::Close(done))) => {
                        self.leave(cmd).await;
                        drop(done);
                        return Ended::Closed;
                    }

                    // Every handle was dropped without `close`: stop as a crashed node would.
                    Wake::Request(None) => return Ended::Closed,
                    Wake::Kick => Err(io::Error::other("outgoing queue full")),
                    // Late by a whole node_timeout (this process or Redis stalled): the other
                    // nodes have taken this one for lost, so it is lost; the reconnection
                    // brings it back with Incoming::Up, which the hub answers as after any loss.
                    Wake::Beat if next_beat.elapsed() > config.node_timeout - config.heartbeat => {
                        Err(io::Error::other("heartbeat stalled"))
                    }
                    Wake::Beat => {
                        next_beat = Instant::now() + config.heartbeat;
                        let renew = Instant::now() >= next_renew;
                        if renew {
                            next_renew = Instant::now() + config.renew_every();
                        }
                        self.beat(cmd, renew, &mut news).await
                    }
                };
                if done.is_err() {
                    return Ended::Lost;
                }
                while let Some(message) = news.pop_front() {
                    match self.incoming.try_send(message) {
                        Ok(()) => {}
                        Err(TrySendError::Full(message)) => {
                            news.push_front(message);
                            break;
                        }
                        Err(TrySendError::Closed(_)) => return Ended::Lost,
                    }
                }
            }
        };
        let subscriber = async {
            // Sync requests whose PING was sent, oldest first; each `pong` answers the oldest.
            let mut syncs: VecDeque<Sender<()>> = VecDeque::new();
            loop {
                // Changes first: with a steady stream of messages, `or` would always pick the
                // reply and a room's subscription could wait indefinitely.
                let wake = match self.subs.try_recv() {
                    Ok(change) => SubWake::Change(Some(change)),
                    Err(_) => {
                        async { SubWake::Reply(sub.reply().await) }
                            .or(async { SubWake::Change(self.subs.recv().await.ok()) })
                            .await
                    }
                };
                let done = match wake {
                    SubWake::Reply(Ok(Reply::Array(parts)))
                        if parts.first().and_then(Reply::text) == Some("pong") =>
                    {
                        if let Some(waiter) = syncs.pop_front() {
                            let _ = waiter.try_send(());
                        }
                        Ok(())
                    }
                    SubWake::Reply(Ok(reply)) => self.dispatch(reply).await,
                    SubWake::Reply(Err(e)) => Err(e),
                    SubWake::Change(Some(Subscription::Subscribe(room))) => {
                        let cmd = Command::new("SUBSCRIBE").arg(keys::room_channel(&room));
                        sub.send(&cmd.encode()).await
                    }
                    SubWake::Change(Some(Subscription::Unsubscribe(room))) => {
                        let cmd = Command::new("UNSUBSCRIBE").arg(keys::room_channel(&room));
                        sub.send(&cmd.encode()).await
                    }
                    SubWake::Change(Some(Subscription::Sync(waiter))) => {
                        syncs.push_back(waiter);
                        sub.send(&Command::new("PING").encode()).await
                    }
                    // Every handle is gone; the command side stops the link.
                    SubWake::Change(None) => std::future::pending().await,
                };
                if done.is_err() {
                    return Ended::Lost;
                }
            }
        };
        commands.or(subscriber).await
    }

    /// Sends `first` and whatever else is queued, then reads the replies in order. Returns a
    /// close request found in the queue, to be handled after the commands before it.
    async fn batch(
        &self,
        cmd: &mut Connection,
        first: Vec<u8>,
        reply: Option<Sender<Reply>>,
    ) -> io::Result<Option<Sender<()>>> {
        let mut bytes = first;
        let mut waiting = vec![reply];
        let mut close = None;
        while waiting.len() < BATCH {
            match self.requests.try_recv() {
                Ok(Request::Call(more, reply)) => {
                    bytes.extend_from_slice(&more);
                    waiting.push(reply);
                }
                Ok(Request::Close(done)) => {
                    close = Some(done);
                    break;
                }
                Err(_) => break,
            }
        }
        self.timed(cmd.send(&bytes)).await?;
        for reply_to in waiting {
            let reply = self.timed(cmd.reply()).await?;
            if let Reply::Error(e) = &reply {
                // The scripts vanished (SCRIPT FLUSH): a new connection loads them again.
                if e.starts_with("NOSCRIPT") {
                    return Err(protocol_error("redis forgot the scripts"));
                }
            }
            if let Some(tx) = reply_to {
                let _ = tx.try_send(reply);
            }
        }
        Ok(close)
    }

    /// The periodic work: announce this node, renew names and presence, notice lost nodes.
    async fn beat(
        &self,
        cmd: &mut Connection,
        renew: bool,
        news: &mut VecDeque<Incoming>,
    ) -> io::Result<()> {
        self.heartbeat(cmd).await?;
        if renew {
            let (names, rooms) = {
                let registry = self.shared.registry();
                let names: Vec<(String, String)> = registry
                    .names
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let rooms: Vec<String> = registry.rooms.keys().cloned().collect();
                (names, rooms)
            };
            for (key, value) in self.renew_names(cmd, &names).await? {
                let removed = {
                    let mut registry = self.shared.registry();
                    let ours = registry.names.get(&key) == Some(&value);
                    if ours {
                        registry.names.remove(&key);
                    }
                    ours
                };
                if let Some((_, id, name)) = keys::parse_name_value(&value).filter(|_| removed) {
                    let lost = Incoming::NameLost {
                        id,
                        name: name.to_owned(),
                    };
                    news.push_back(lost);
                }
            }
            let ttl = millis(self.shared.config.presence_ttl());
            let expires: Vec<Vec<u8>> = rooms
                .iter()
                .map(|room| {
                    let key = keys::presence_key(room, &self.shared.node);
                    Command::new("PEXPIRE").arg(key).arg(&ttl).encode()
                })
                .collect();
            self.pipeline(cmd, &expires).await?;
        }
        // Nodes with members in this node's rooms that it never heard from (one that started and
        // died between two heartbeats of this one): known from now on, so that their silence
        // makes them lost like any other.
        let rooms: Vec<String> = self.shared.registry().rooms.keys().cloned().collect();
        let reads: Vec<Vec<u8>> = rooms
            .iter()
            .map(|room| {
                Command::new("SMEMBERS")
                    .arg(keys::room_nodes_key(room))
                    .encode()
            })
            .collect();
        let mut listed = Vec::new();
        for reply in self.pipeline(cmd, &reads).await? {
            listed.extend(strings(reply).map_err(|_| protocol_error("bad room nodes"))?);
        }
        {
            let mut registry = self.shared.registry();
            let forget = self.shared.config.presence_ttl() * 10;
            registry.lost.retain(|_, at| at.elapsed() < forget);
            for node in listed.iter().filter_map(|n| n.parse::<NodeId>().ok()) {
                if node != self.shared.node && !registry.lost.contains_key(&node) {
                    registry.nodes.entry(node).or_insert_with(Instant::now);
                }
            }
        }
        let lost: Vec<NodeId> = {
            let mut registry = self.shared.registry();
            let timeout = self.shared.config.node_timeout;
            let lost: Vec<NodeId> = registry
                .nodes
                .iter()
                .filter(|(_, seen)| seen.elapsed() > timeout)
                .map(|(node, _)| node.clone())
                .collect();
            lost.iter().for_each(|node| {
                registry.nodes.remove(node);
                registry.lost.insert(node.clone(), Instant::now());
            });
            lost
        };
        for node in lost {
            let rooms: Vec<String> = self.shared.registry().rooms.keys().cloned().collect();
            let reads: Vec<Vec<u8>> = rooms
                .iter()
                .map(|room| {
                    Command::new("HVALS")
                        .arg(keys::presence_key(room, &node))
                        .encode()
                })
                .collect();
            let mut members = Vec::new();
            for (room, reply) in rooms.iter().zip(self.pipeline(cmd, &reads).await?) {
                let names = strings(reply).map_err(|_| protocol_error("bad presence"))?;
                members.extend(names.into_iter().map(|name| (room.clone(), name)));
            }
            let lost = Incoming::NodeLost { node, members };
            news.push_back(lost);
        }
        Ok(())
    }

    /// Announces this node and keeps its liveness key.
    async fn heartbeat(&self, cmd: &mut Connection) -> io::Result<()> {
        let node = &self.shared.node;
        let writes = [
            Command::new("SET")
                .arg(keys::alive_key(node))
                .arg("1")
                .arg("PX")
                .arg(millis(self.shared.config.node_timeout))
                .encode(),
            Command::new("PUBLISH")
                .arg(keys::CONTROL_CHANNEL)
                .arg(format!("hello {node}"))
                .encode(),
        ];
        self.pipeline(cmd, &writes).await.map(drop)
    }

    /// Renews (or claims again) names; returns those someone else holds now.
    async fn renew_names(
        &self,
        cmd: &mut Connection,
        names: &[(String, String)],
    ) -> io::Result<Vec<(String, String)>> {
        let mut lost = Vec::new();
        // Chunks keep each script short: Redis runs nothing else while one runs.
        for chunk in names.chunks(500) {
            let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
            let mut renew = self
                .eval(scripts::RENEW, &keys)
                .arg(millis(self.shared.config.name_ttl));
            for (_, value) in chunk {
                renew = renew.arg(value);
            }
            let Reply::Array(indexes) = self.timed(cmd.call(&renew)).await? else {
                return Err(protocol_error("bad reply to the renew script"));
            };
            for index in indexes {
                let pair = match index {
                    Reply::Integer(i) => usize::try_from(i - 1).ok().and_then(|i| chunk.get(i)),
                    _ => None,
                };
                lost.push(pair.ok_or_else(|| protocol_error("bad index"))?.clone());
            }
        }
        Ok(lost)
    }

    /// Leaves cleanly: this node's names and presence go, the others hear `bye`.
    async fn leave(&self, cmd: &mut Connection) {
        // Before `close` returns: no handle may count on the link after that.
        self.shared.down();
        let node = &self.shared.node;
        let (names, rooms) = {
            let mut registry = self.shared.registry();
            let names: Vec<(String, String)> = registry.names.drain().collect();
            let rooms: Vec<String> = registry.rooms.drain().map(|(room, _)| room).collect();
            (names, rooms)
        };
        let mut writes: Vec<Vec<u8>> = names
            .iter()
            .map(|(key, value)| self.eval(scripts::RELEASE, &[key]).arg(value).encode())
            .collect();
        for room in &rooms {
            writes.push(
                Command::new("DEL")
                    .arg(keys::presence_key(room, node))
                    .encode(),
            );
            writes.push(
                Command::new("SREM")
                    .arg(keys::room_nodes_key(room))
                    .arg(node.as_str())
                    .encode(),
            );
        }
        writes.push(Command::new("DEL").arg(keys::alive_key(node)).encode());
        writes.push(
            Command::new("PUBLISH")
                .arg(keys::CONTROL_CHANNEL)
                .arg(format!("bye {node}"))
                .encode(),
        );
        let _ = self.pipeline(cmd, &writes).await;
    }

    /// Hands one pub/sub reply to the hub.
    async fn dispatch(&self, reply: Reply) -> io::Result<()> {
        let Reply::Array(parts) = reply else {
            return Err(protocol_error("pub/sub reply is not an array"));
        };
        let [kind, channel, payload] = &parts[..] else {
            return Ok(()); // pmessage or other shapes smolchat never asks for
        };
        if kind.text() != Some("message") {
            return Ok(()); // subscribe and unsubscribe confirmations
        }
        let (Some(channel), Some(payload)) = (channel.text(), payload.text()) else {
            return Ok(()); // not UTF-8: not from a smolchat node
        };
        let shared = &self.shared;
        let message = if channel == keys::CONTROL_CHANNEL {
            let mut registry = shared.registry();
            match payload.split_once(' ') {
                Some(("hello", node)) => {
                    if let Ok(node) = node.parse::<NodeId>() {
                        if node != shared.node {
                            registry.lost.remove(&node);
                            registry.nodes.insert(node, Instant::now());
                        }
                    }
                }
                Some(("bye", node)) => {
                    if let Ok(node) = node.parse::<NodeId>() {
                        registry.nodes.remove(&node);
                    }
                }
                _ => {}
            }
            return Ok(());
        } else if let Some(room) = channel.strip_prefix("smolchat:room:") {
            let Some((origin, sender, seq, line)) = keys::parse_room_payload(payload) else {
                return Ok(());
            };
            Incoming::Room {
                room: room.to_owned(),
                origin,
                sender,
                seq,
                line: line.to_owned(),
            }
        } else {
            let Some((origin, payload)) = payload.split_once(' ') else {
                return Ok(());
            };
            let Ok(origin) = origin.parse() else {
                return Ok(());
            };
            Incoming::Direct {
                origin,
                payload: payload.to_owned(),
            }
        };
        // Waits while the hub is behind: Redis buffers meanwhile, up to its own limit.
        self.incoming.send(message).await.map_err(|_| closed())
    }

    /// Writes commands in chunks and reads their replies; Redis errors are the callers' to see.
    async fn pipeline(&self, cmd: &mut Connection, writes: &[Vec<u8>]) -> io::Result<Vec<Reply>> {
        let mut replies = Vec::with_capacity(writes.len());
        for chunk in writes.chunks(BATCH) {
            self.timed(cmd.send(&chunk.concat())).await?;
            for _ in chunk {
                replies.push(self.timed(cmd.reply()).await?);
            }
        }
        Ok(replies)
    }

    fn eval<K: AsRef<str>>(&self, script: Script, keys: &[K]) -> Command {
        let mut cmd = Command::new("EVALSHA")
            .arg(self.shared.shas.of(script))
            .arg(keys.len().to_string());
        for key in keys {
            cmd = cmd.arg(key.as_ref());
        }
        cmd
    }

    /// Bounds a wait on Redis by `reply_timeout`.
    async fn timed<T>(
        &self,
        fut: impl std::future::Future<Output = io::Result<T>>,
    ) -> io::Result<T> {
        let limit = self.shared.config.reply_timeout;
        fut.or(async {
            Timer::after(limit).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "redis did not answer",
            ))
        })
        .await
    }
}

enum Wake {
    Request(Option<Request>),
    Kick,
    Beat,
}

enum SubWake {
    Reply(io::Result<Reply>),
    Change(Option<Subscription>),
}

/// Opens the command and subscriber connections and loads the scripts.
async fn open(url: &RedisUrl, config: &LinkConfig) -> io::Result<(Connection, Connection, Shas)> {
    let mut cmd = Connection::open(url, config.max_reply).await?;
    let sub = Connection::open(url, config.max_reply).await?;
    let mut shas = Vec::new();
    for script in scripts::ALL {
        let load = Command::new("SCRIPT").arg("LOAD").arg(script.source);
        match cmd.call(&load).await? {
            Reply::Bulk(sha) => shas.push(String::from_utf8_lossy(&sha).into_owned()),
            Reply::Error(e) => {
                return Err(io::Error::other(format!(
                    "redis refused the {} script: {e}",
                    script.name
                )))
            }
            _ => return Err(protocol_error("bad reply to SCRIPT LOAD")),
        }
    }
    Ok((cmd, sub, Shas(shas)))
}

/// The ENTER script's arguments: member `id`, called `name`, of `room` on this node.
fn enter_args(cmd: Command, shared: &Shared, room: &str, id: u64, name: &str) -> Command {
    cmd.arg(id.to_string())
        .arg(name)
        .arg(millis(shared.config.presence_ttl()))
        .arg(shared.node.as_str())
        .arg(room)
}

fn presence_keys(room: &str, node: &NodeId) -> [String; 3] {
    [
        keys::presence_key(room, node),
        keys::room_nodes_key(room),
        keys::ROOMS_KEY.to_owned(),
    ]
}

fn strings(reply: Reply) -> Result<Vec<String>, LinkError> {
    let Reply::Array(items) = reply else {
        return Err(LinkError::Unexpected);
    };
    items
        .iter()
        .map(|item| item.text().map(str::to_owned).ok_or(LinkError::Unexpected))
        .collect()
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

fn closed() -> io::Error {
    io::Error::other("the hub stopped listening")
}

/// Between half and all of `delay`, so nodes that lost Redis together do not return together.
fn jitter(delay: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    let fraction = (hasher.finish() % 1000) as f64 / 2000.0 + 0.5;
    delay.mul_f64(fraction)
}
