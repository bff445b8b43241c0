//! The host's remote control for a running server.

use std::error::Error;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_channel::Receiver;

use crate::config::{Config, ConfigError};
use crate::event::Event;
use crate::hub::{Audience, Hub};
use crate::Cidr;

/// Controls and observes a [`Server`](crate::Server) from any task or thread.
///
/// Cheap to clone; every clone controls the same server. It stays usable after the server
/// stopped: lists are then empty and notices go nowhere.
///
/// # Examples
///
/// ```no_run
/// # smol::block_on(async {
/// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
/// let handle = server.handle();
/// let ex = smol::Executor::new();
/// ex.spawn(async move {
///     smol::Timer::after(std::time::Duration::from_secs(60)).await;
///     handle.announce("one minute is up, goodbye");
///     handle.shutdown();
/// })
/// .detach();
/// ex.run(server.run(&ex, std::future::pending())).await;
/// # std::io::Result::Ok(()) });
/// ```
#[derive(Clone)]
pub struct Handle {
    pub(crate) hub: Arc<Hub>,
}

/// A connected user, from [`Handle::users`].
///
/// # Examples
///
/// ```
/// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
/// for user in server.handle().users() {
///     println!("{} in #{} from {}", user.name, user.room, user.addr);
///     if let Some(message) = &user.away {
///         println!("  away: {message}; idle for {:?}", user.idle_for);
///     }
/// }
/// # std::io::Result::Ok(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct User {
    /// The user's name.
    pub name: Arc<str>,
    /// The room the user is in (without `#`).
    pub room: Arc<str>,
    /// The user's address.
    pub addr: SocketAddr,
    /// `Some` while the user is away (`/away`), with the away message, empty if none was given.
    pub away: Option<Arc<str>>,
    /// How long ago the user connected.
    pub connected_for: Duration,
    /// How long since the user last sent a message, action or private message (or connected).
    pub idle_for: Duration,
}

/// A room, from [`Handle::rooms`].
///
/// # Examples
///
/// ```
/// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
/// let lobby = &server.handle().rooms()[0];
/// assert_eq!((&*lobby.name, lobby.members), ("lobby", 0));
/// # std::io::Result::Ok(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoomInfo {
    /// The room's name (lowercase, without `#`).
    pub name: Arc<str>,
    /// How many users are in it.
    pub members: usize,
    /// Its topic (`/topic`), if one is set.
    pub topic: Option<Arc<str>>,
}

/// A ban in force, from [`Handle::bans`].
///
/// # Examples
///
/// ```
/// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
/// let handle = server.handle();
/// handle.ban("192.0.2.7".parse()?, None, "spam")?;
/// let ban = &handle.bans()[0];
/// assert_eq!((ban.range.to_string(), ban.remaining, &*ban.reason), ("192.0.2.7".into(), None, "spam"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ban {
    /// The addresses it covers: one IPv4 address, an IPv6 /64, or a range an operator gave.
    pub range: Cidr,
    /// How long it still lasts; `None` until lifted or the server restarts.
    pub remaining: Option<Duration>,
    /// The reason given (sanitized; may be empty), which banned clients are told.
    pub reason: Arc<str>,
}

/// A ban was refused: [`Config::max_bans`](crate::Config::max_bans) (the number held) are in force.
///
/// # Examples
///
/// ```
/// let config = smolchat::Config { max_bans: 1, ..smolchat::Config::default() };
/// let server = smolchat::Server::bind("127.0.0.1:0", config)?;
/// server.handle().ban("192.0.2.1".parse()?, None, "")?;
/// let error = server.handle().ban("192.0.2.2".parse()?, None, "").unwrap_err();
/// assert_eq!(error.to_string(), "the ban list is full (1 bans); lift one first");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanListFull(pub usize);

impl fmt::Display for BanListFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the ban list is full ({} bans); lift one first", self.0)
    }
}

impl Error for BanListFull {}

/// A snapshot of the server's counters, from [`Handle::stats`](crate::Handle::stats).
///
/// # Examples
///
/// ```
/// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
/// let stats = server.handle().stats();
/// assert_eq!((stats.clients, stats.lines_relayed, stats.dropped_slow), (0, 0, 0));
/// # std::io::Result::Ok(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Clients connected now.
    pub clients: usize,
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Connections refused (full, per-address limit, shutting down, banned, address lists).
    pub connections_refused: u64,
    /// Chat lines relayed (room messages, actions and private messages).
    pub lines_relayed: u64,
    /// Clients disconnected because their queue overflowed.
    pub dropped_slow: u64,
    /// Lines discarded for exceeding [`Config::max_line`](crate::Config::max_line).
    pub lines_too_long: u64,
    /// Lines whose reading flood control delayed.
    pub flood_delayed: u64,
    /// TLS handshakes that failed or did not finish within
    /// [`Tls::handshake_timeout`](crate::Tls::handshake_timeout); always 0 without TLS.
    pub tls_failed: u64,
    /// Events a subscriber missed because its queue was full.
    pub events_dropped: u64,
    /// The cluster link, when [`Config::redis`](crate::Config::redis) is set and connected.
    #[cfg(feature = "redis")]
    pub cluster: Option<ClusterStats>,
}

/// The state of a node's link to the cluster, in [`Stats::cluster`].
///
/// # Examples
///
/// ```
/// let stats = smolchat::ClusterStats::default();
/// assert!(!stats.up);
/// ```
#[cfg(feature = "redis")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Whether the link to Redis is up now.
    pub up: bool,
    /// This node's id (the 16 hex digits of [`NodeId`](crate::cluster::NodeId) as a number).
    pub node: u64,
    /// Other nodes heard from lately.
    pub nodes_seen: usize,
}

/// A [`Handle`] call named a user or room that does not exist.
///
/// # Examples
///
/// ```
/// use smolchat::NotFound;
///
/// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
/// let error = server.handle().kick("zed", "spam").unwrap_err();
/// assert_eq!(error, NotFound::User("zed".into()));
/// assert_eq!(error.to_string(), "no user named zed");
/// # std::io::Result::Ok(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFound {
    /// No user has this name.
    User(Arc<str>),
    /// No room has this name.
    Room(Arc<str>),
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotFound::User(name) => write!(f, "no user named {name}"),
            NotFound::Room(name) => write!(f, "no room named {name}"),
        }
    }
}

impl Error for NotFound {}

impl Handle {
    /// The address the server listens on.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// assert_ne!(server.handle().local_addr().port(), 0);
    /// # std::io::Result::Ok(())
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.hub.local_addr
    }

    /// The users connected now, in no particular order.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// assert!(server.handle().users().is_empty());
    /// # std::io::Result::Ok(())
    /// ```
    pub fn users(&self) -> Vec<User> {
        self.hub.users()
    }

    /// The rooms that exist now; `lobby` always does.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// let rooms = server.handle().rooms();
    /// assert_eq!(rooms.len(), 1);
    /// assert_eq!(&*rooms[0].name, "lobby");
    /// # std::io::Result::Ok(())
    /// ```
    pub fn rooms(&self) -> Vec<RoomInfo> {
        self.hub.rooms()
    }

    /// Sends every user a server notice (`*** text`).
    ///
    /// The call never waits, so it cannot be paced like a client's line: a notice is queued
    /// even for a client whose queue is over `queue_bytes`, up to twice that (the hard cap);
    /// a client already past the hard cap is disconnected as too slow. The same holds for
    /// [`announce_room`](Self::announce_room) and [`tell`](Self::tell).
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// server.handle().announce("maintenance at noon");
    /// # std::io::Result::Ok(())
    /// ```
    pub fn announce(&self, text: &str) {
        let _ = self.hub.notice(Audience::Everyone, text);
    }

    /// Sends the users of one room a server notice.
    ///
    /// # Errors
    ///
    /// [`NotFound::Room`] if no such room exists.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// assert!(server.handle().announce_room("lobby", "hello, lobby").is_ok());
    /// assert!(server.handle().announce_room("#nowhere", "hello?").is_err());
    /// # std::io::Result::Ok(())
    /// ```
    pub fn announce_room(&self, room: &str, text: &str) -> Result<(), NotFound> {
        self.hub.notice(Audience::Room(room), text)
    }

    /// Sends one user a server notice.
    ///
    /// # Errors
    ///
    /// [`NotFound::User`] if nobody has this name.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// assert!(server.handle().tell("nobody", "hi").is_err());
    /// # std::io::Result::Ok(())
    /// ```
    pub fn tell(&self, user: &str, text: &str) -> Result<(), NotFound> {
        self.hub.notice(Audience::User(user), text)
    }

    /// Disconnects a user, who is told the reason; its room sees it leave.
    ///
    /// # Errors
    ///
    /// [`NotFound::User`] if nobody has this name.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// assert!(server.handle().kick("nobody", "spam").is_err());
    /// # std::io::Result::Ok(())
    /// ```
    pub fn kick(&self, user: &str, reason: &str) -> Result<(), NotFound> {
        self.hub.kick(user, reason)
    }

    /// Bans an address for `duration` (`None`: until [`unban`](Self::unban) or a restart):
    /// refuses new connections from it and disconnects its clients, who are told the reason.
    ///
    /// An IPv4 address is banned alone, an IPv6 address with its whole /64 (see
    /// [`Cidr::host_group`]); use [`ban_range`](Self::ban_range) for other ranges. Banning a
    /// banned range again replaces its ban.
    ///
    /// # Errors
    ///
    /// [`BanListFull`] if [`Config::max_bans`](crate::Config::max_bans) bans are in force.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// server.handle().ban("2001:db8::7".parse()?, Some(Duration::from_secs(600)), "spam")?;
    /// assert_eq!(server.handle().bans()[0].range.to_string(), "2001:db8::/64");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ban(
        &self,
        addr: IpAddr,
        duration: Option<Duration>,
        reason: &str,
    ) -> Result<(), BanListFull> {
        self.ban_range(Cidr::host_group(addr), duration, reason)
    }

    /// Bans every address in `range`, as [`ban`](Self::ban) does one.
    ///
    /// # Errors
    ///
    /// [`BanListFull`] if [`Config::max_bans`](crate::Config::max_bans) bans are in force.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// server.handle().ban_range("198.51.100.0/24".parse()?, None, "botnet")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ban_range(
        &self,
        range: Cidr,
        duration: Option<Duration>,
        reason: &str,
    ) -> Result<(), BanListFull> {
        self.hub
            .ban(range, duration, reason)
            .map_err(|_| BanListFull(self.hub.config.max_bans))
    }

    /// Lifts the ban on `range` (as [`bans`](Self::bans) lists it; a single IPv6 address
    /// means its /64); `false` if there was none.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// let handle = server.handle();
    /// handle.ban("192.0.2.7".parse()?, None, "")?;
    /// assert!(handle.unban("192.0.2.7".parse()?));
    /// assert!(!handle.unban("192.0.2.7".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unban(&self, range: Cidr) -> bool {
        self.hub.unban(range).is_ok()
    }

    /// The bans in force, ordered by range.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// assert!(server.handle().bans().is_empty());
    /// # std::io::Result::Ok(())
    /// ```
    pub fn bans(&self) -> Vec<Ban> {
        self.hub.bans()
    }

    /// Mutes a user: its messages, actions, private messages, renames and topics go nowhere
    /// and it gets an error instead, until [`unmute`](Self::unmute) or it reconnects.
    ///
    /// # Errors
    ///
    /// [`NotFound::User`] if nobody has this name.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// assert!(server.handle().mute("nobody").is_err());
    /// # std::io::Result::Ok(())
    /// ```
    pub fn mute(&self, user: &str) -> Result<(), NotFound> {
        self.hub.set_muted(user, true)
    }

    /// Lets a muted user talk again.
    ///
    /// # Errors
    ///
    /// [`NotFound::User`] if nobody has this name.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// assert!(server.handle().unmute("nobody").is_err());
    /// # std::io::Result::Ok(())
    /// ```
    pub fn unmute(&self, user: &str) -> Result<(), NotFound> {
        self.hub.set_muted(user, false)
    }

    /// A snapshot of the server's counters.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// assert_eq!(server.handle().stats().clients, 0);
    /// # std::io::Result::Ok(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.hub.stats()
    }

    /// Subscribes to [`Event`]s, queued up to `capacity` (at least 1).
    ///
    /// The server never waits for a subscriber: when its queue is full, further events are
    /// dropped for it and counted in [`Stats::events_dropped`]. Dropping the receiver ends the
    /// subscription; the channel closes when the server shuts down.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # smol::block_on(async {
    /// let server = smolchat::Server::bind("127.0.0.1:8888", smolchat::Config::default())?;
    /// let events = server.handle().subscribe(1024);
    /// let ex = smol::Executor::new();
    /// ex.spawn(async move {
    ///     while let Ok(event) = events.recv().await {
    ///         println!("{event:?}");
    ///     }
    /// })
    /// .detach();
    /// ex.run(server.run(&ex, std::future::pending())).await;
    /// # std::io::Result::Ok(()) });
    /// ```
    pub fn subscribe(&self, capacity: usize) -> Receiver<Event> {
        self.hub.subscribe(capacity, true)
    }

    /// Subscribes to every [`Event`] but chat lines ([`Event::Message`], [`Event::Private`]):
    /// joins, leaves, refusals, renames and room changes, queued up to `capacity`.
    ///
    /// For hosts that log or moderate who comes and goes: however busy the chat, its lines
    /// never fill this queue, and no work is done for them when nobody subscribed to them.
    /// Otherwise as [`subscribe`](Self::subscribe).
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// let arrivals = server.handle().subscribe_presence(256);
    /// assert!(arrivals.is_empty());
    /// # std::io::Result::Ok(())
    /// ```
    pub fn subscribe_presence(&self, capacity: usize) -> Receiver<Event> {
        self.hub.subscribe(capacity, false)
    }

    /// Replaces the message of the day ([`Config::motd`]) for clients that connect from now on;
    /// `None` removes it. Clients already connected are not sent it again.
    ///
    /// # Errors
    ///
    /// [`ConfigError::MotdTooLong`] if it is longer than [`Config::MAX_MOTD`]; the old one stays.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// let handle = server.handle();
    /// assert!(handle.set_motd(Some("maintenance tonight")).is_ok());
    /// assert!(handle.set_motd(Some(&"x".repeat(1 << 20))).is_err());
    /// handle.set_motd(None)?;
    /// # std::io::Result::Ok(())
    /// ```
    pub fn set_motd(&self, motd: Option<&str>) -> Result<(), ConfigError> {
        if let Some(len) = motd.map(str::len).filter(|&len| len > Config::MAX_MOTD) {
            return Err(ConfigError::MotdTooLong(len));
        }
        self.hub.set_motd(motd);
        Ok(())
    }

    /// Starts a graceful shutdown, as if the shutdown future given to
    /// [`Server::run`](crate::Server::run) had completed.
    ///
    /// # Examples
    ///
    /// ```
    /// # smol::block_on(async {
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// server.handle().shutdown();
    /// let ex = smol::Executor::new();
    /// ex.run(server.run(&ex, std::future::pending())).await; // returns at once
    /// # std::io::Result::Ok(()) });
    /// ```
    pub fn shutdown(&self) {
        self.hub.stop();
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("local_addr", &self.hub.local_addr)
            .finish_non_exhaustive()
    }
}
