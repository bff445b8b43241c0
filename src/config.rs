//! Server configuration: every limit, with the reason for its default, and the check that the
//! limits make sense together.

use std::error::Error;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::Cidr;

/// Settings and limits for a [`Server`](crate::Server).
///
/// Every limit has a default that is safe on the open internet; the binary has one flag per
/// field. Worst-case memory is bounded by these fields (see the README's "Limits and guarantees").
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let config = smolchat::Config {
///     history: 50,
///     write_timeout: Duration::from_secs(10),
///     motd: Some("be nice".into()),
///     ..smolchat::Config::default()
/// };
/// assert_eq!(config.max_line, 2048);
/// ```
#[derive(Clone)]
pub struct Config {
    /// Longest accepted line in bytes, without its ending (default 2048). Longer lines are
    /// dropped with an error to their sender. Two KiB holds any line a person types or pastes
    /// in one go while capping what one client can make the server buffer for an unfinished line.
    pub max_line: usize,
    /// Most lines queued for one client (default 4096). A second bound beside `queue_bytes`,
    /// for hosts that think in lines.
    pub queue_lines: usize,
    /// Most bytes queued for one client (default 256 KiB), counting each line's text plus 48
    /// bytes of bookkeeping. A client that falls further behind is disconnected, so one stalled
    /// reader cannot make the server hold an endless backlog.
    pub queue_bytes: usize,
    /// Most clients connected at once (default 10,000). Beyond it a client is told the server
    /// is full and closed; this bounds total memory to about `max_clients × queue_bytes`.
    pub max_clients: usize,
    /// Most clients connected at once from one IP address (default 16), counting IPv6 clients
    /// by their /64 prefix. Stops one host from taking every slot.
    pub max_per_ip: usize,
    /// Whether `max_per_ip` also applies to loopback clients (default `false`): local bridges
    /// and load tests legitimately open many connections from 127.0.0.1 or ::1.
    pub limit_loopback: bool,
    /// Lines a client may send at once before flood control slows it down (default 5).
    pub flood_burst: u32,
    /// Sustained lines per second allowed to one client after its burst (default 2.0; `0`
    /// turns flood control off). A flooder is not dropped: the server reads from it more slowly,
    /// so TCP pushes back on the sender and nothing it sent is lost.
    pub flood_rate: f64,
    /// How long a client's socket may accept nothing before the client is dropped (default 30 s).
    /// Frees the queue and socket of peers that vanished or stopped reading.
    pub write_timeout: Duration,
    /// Longest a recipient may hold its senders back before it is dropped as too slow
    /// (default 2 s). While a recipient's queue is over its bound the server stops reading the
    /// clients that send to it, so this bounds the longest pause one member can cause a room.
    pub stall_timeout: Duration,
    /// How long a line may stay unfinished (default 60 s). Drops clients that trickle bytes
    /// without ever ending a line (slowloris); silence between lines never times out.
    pub partial_line_timeout: Duration,
    /// How long a graceful shutdown waits for queued lines to be written (default 5 s).
    pub shutdown_grace: Duration,
    /// Idle time before TCP keepalive probes check that a silent peer still exists
    /// (default 60 s, whole seconds from 1 to [`Config::MAX_KEEPALIVE`]; `None` leaves the system
    /// default, typically two hours). A vanished peer is dropped after about twice this time,
    /// or twice `write_timeout` if that is longer, even while lines are being sent to it (the
    /// kernel's `TCP_USER_TIMEOUT`).
    pub keepalive: Option<Duration>,
    /// Messages each room keeps and replays to clients that join it (default 20; `0` disables).
    pub history: usize,
    /// Largest room whose joins and leaves are announced (default 1000). In a room of N
    /// members every join costs N lines, so a crowd of N joining would cost N² lines; beyond
    /// this size rooms stay quiet about arrivals and departures, as large IRC channels do.
    pub announce_limit: usize,
    /// Whether clients start with timestamps on (default `false`, so plain `nc` output carries
    /// none): every line they get then starts with the server's UTC time, `HH:MM `. Each client
    /// can change it with `/timestamps on|off`.
    pub timestamps: bool,
    /// Message of the day shown to every client on connect (default none), at most
    /// [`Config::MAX_MOTD`] bytes. Each of its lines becomes one notice.
    /// [`Handle::set_motd`](crate::Handle::set_motd) replaces it while the server runs.
    pub motd: Option<String>,
    /// Listen backlog for [`Server::bind`](crate::Server::bind) (default 4096; the kernel caps
    /// it at `net.core.somaxconn`). A short backlog overflows under a burst of connects, and each
    /// overflow costs the client a one-second SYN retry.
    pub backlog: u32,
    /// Set `TCP_NODELAY` on client sockets (default `true`), so a chat line goes out at once
    /// instead of waiting on Nagle's algorithm and the peer's delayed ACK.
    pub nodelay: bool,
    /// Called on every chat line before it is relayed (default none): lets the host reject or
    /// rewrite it, e.g. as a word filter.
    pub filter: Option<Filter>,
    /// The password `/oper` takes to make a client an operator (default none: nobody can
    /// become one). Operators can kick, ban, mute and read the counters; see the README's
    /// trust model.
    pub oper_password: Option<String>,
    /// The password a client must send with `/pass` before anything else (default none: the
    /// server is open). Until then it sees nothing, is seen by nobody and is not listed.
    /// Clients' lines are trimmed and sanitized before they are compared, so it must be
    /// non-empty text without control characters or surrounding spaces (as must
    /// `oper_password`); the binary checks its password files for that.
    pub password: Option<String>,
    /// How long a client has to send the right `/pass` (default 30 s) before it is dropped,
    /// so connections that never authenticate cannot hold their slots.
    pub auth_timeout: Duration,
    /// How long the first wrong `/pass` or `/oper` password holds up the client that sent it
    /// (default 2 s); each further wrong password on the same connection doubles it, up to
    /// 32 times this. Makes guessing slow.
    pub password_delay: Duration,
    /// Whether only operators may set room topics (default `false`: anyone in the room may).
    pub topic_ops_only: bool,
    /// Address ranges allowed to connect (default empty: every address not denied). When not
    /// empty, connections from anywhere else are closed at once, without a word.
    pub allow: Vec<Cidr>,
    /// Address ranges refused at once, without a word (default empty). Wins over `allow`.
    pub deny: Vec<Cidr>,
    /// Most bans in force at once (default 1000), so the ban list, which every new connection
    /// is checked against, stays small.
    pub max_bans: usize,
    /// Serve TLS too, or instead of plain TCP (default none). Needs the `tls` cargo feature:
    /// without it, [`Server::bind`](crate::Server::bind) refuses a config that asks for TLS.
    pub tls: Option<Tls>,
    /// Join a cluster of nodes through this Redis server (default none):
    /// `redis://[user:password@]HOST:PORT[/DB]`. Needs the `redis` cargo feature: without it,
    /// [`Server::bind`](crate::Server::bind) refuses a config that asks for Redis. In a
    /// cluster the rooms' history is kept in Redis (`history` lines each), not in the node.
    /// See docs/CLUSTER.md.
    pub redis: Option<String>,
}

/// Where and with which certificate to serve TLS; see [`Config::tls`].
///
/// TLS clients are served exactly like plain ones: they count toward `max_clients` and
/// `max_per_ip` from the moment they connect, and every limit applies to them unchanged.
/// Certificate and key are read once, when the server is bound.
///
/// # Examples
///
/// ```
/// use std::net::SocketAddr;
///
/// // TLS alone, on port 6697; nothing listens for plain clients.
/// let mut tls = smolchat::Tls::new("fullchain.pem", "key.pem", SocketAddr::from(([0, 0, 0, 0], 6697)));
/// tls.plain = false;
/// let config = smolchat::Config {
///     tls: Some(tls),
///     ..smolchat::Config::default()
/// };
/// # drop(config);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Tls {
    /// PEM file with the certificate chain, the server's own certificate first (a
    /// `fullchain.pem`).
    pub cert_chain: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Where TLS clients connect.
    pub addr: SocketAddr,
    /// Whether plain clients are still served at the address given to
    /// [`Server::bind`](crate::Server::bind) (default `true`). With `false` the server serves
    /// TLS alone, and binds nothing at that address.
    pub plain: bool,
    /// How long a client may take to finish its TLS handshake (default 10 s). A connection holds
    /// its slot from the moment it is accepted, so one that never finishes the handshake is
    /// dropped after this to free it.
    pub handshake_timeout: Duration,
}

impl Tls {
    /// TLS at `addr` with this certificate chain and key, beside plain TCP.
    ///
    /// # Examples
    ///
    /// ```
    /// let tls = smolchat::Tls::new("cert.pem", "key.pem", ([127, 0, 0, 1], 8889).into());
    /// assert!(tls.plain);
    /// ```
    pub fn new(cert_chain: impl Into<PathBuf>, key: impl Into<PathBuf>, addr: SocketAddr) -> Tls {
        Tls {
            cert_chain: cert_chain.into(),
            key: key.into(),
            addr,
            plain: true,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// A hook that decides what happens to a chat line; see [`Config::filter`].
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use smolchat::{Config, Verdict};
///
/// let config = Config {
///     filter: Some(Arc::new(|line: &smolchat::Draft<'_>| {
///         if line.text.contains("darn") {
///             Verdict::Rewrite(line.text.replace("darn", "d**n"))
///         } else {
///             Verdict::Relay
///         }
///     })),
///     ..Config::default()
/// };
/// # drop(config);
/// ```
pub type Filter = Arc<dyn Fn(&Draft<'_>) -> Verdict + Send + Sync>;

/// A chat line about to be relayed, as seen by a [`Filter`].
///
/// # Examples
///
/// ```
/// use smolchat::{Draft, Verdict};
///
/// // Private messages pass; room lines may not shout.
/// fn no_shouting(line: &Draft<'_>) -> Verdict {
///     let shouting = line.text.len() > 8 && !line.text.chars().any(|c| c.is_lowercase());
///     if line.to.is_none() && shouting {
///         Verdict::Rewrite(line.text.to_lowercase())
///     } else {
///         Verdict::Relay
///     }
/// }
/// # let _ = no_shouting;
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Draft<'a> {
    /// The sender's name.
    pub from: &'a str,
    /// The sender's room.
    pub room: &'a str,
    /// The recipient's name, for a private message; `None` for the room.
    pub to: Option<&'a str>,
    /// The text, already sanitized.
    pub text: &'a str,
}

/// What a [`Filter`] decided about a line.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use smolchat::{Config, Verdict};
///
/// let config = Config {
///     filter: Some(Arc::new(|line: &smolchat::Draft<'_>| match line.text.contains("http") {
///         true => Verdict::Reject("no links, please".into()),
///         false => Verdict::Relay,
///     })),
///     ..Config::default()
/// };
/// # drop(config);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Relay the line unchanged.
    Relay,
    /// Relay this text instead (it is sanitized again).
    Rewrite(String),
    /// Do not relay; the sender gets an error line with this reason.
    Reject(String),
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_line: 2048,
            queue_lines: 4096,
            queue_bytes: 256 * 1024,
            max_clients: 10_000,
            max_per_ip: 16,
            limit_loopback: false,
            flood_burst: 5,
            flood_rate: 2.0,
            write_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(2),
            partial_line_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
            keepalive: Some(Duration::from_secs(60)),
            history: 20,
            announce_limit: 1000,
            timestamps: false,
            motd: None,
            backlog: 4096,
            nodelay: true,
            filter: None,
            oper_password: None,
            password: None,
            auth_timeout: Duration::from_secs(30),
            password_delay: Duration::from_secs(2),
            topic_ops_only: false,
            allow: Vec::new(),
            deny: Vec::new(),
            max_bans: 1000,
            tls: None,
            redis: None,
        }
    }
}

impl Config {
    /// Largest message of the day, in bytes. Every client is sent it on connect, so it must stay a
    /// few screens of text, not a file that multiplies by the number of clients.
    pub const MAX_MOTD: usize = 64 * 1024;

    /// Longest accepted timeout or grace period. Longer than any useful setting, and far from where
    /// time arithmetic overflows (a `Duration` of 10^19 s panics when added to an `Instant`).
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

    /// Shortest accepted timeout or grace period: zero would disconnect at the first wait.
    pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);

    /// Slowest flood rate other than `0` (off): one line every 1000 seconds. Slower rates only make
    /// delays that overflow time arithmetic.
    pub const MIN_FLOOD_RATE: f64 = 0.001;

    /// Longest keepalive idle time the kernel accepts (Linux's `MAX_TCP_KEEPIDLE`, seconds).
    pub const MAX_KEEPALIVE: Duration = Duration::from_secs(32_767);

    /// Checks every value, so a typo is refused at start instead of making a server that
    /// drops everyone. [`Server::bind`](crate::Server::bind) and
    /// [`Server::from_listener`](crate::Server::from_listener) call it.
    ///
    /// # Errors
    ///
    /// The first field whose value is out of range, with the range it must be in.
    ///
    /// # Examples
    ///
    /// ```
    /// use smolchat::{Config, ConfigError};
    ///
    /// assert!(Config::default().validate().is_ok());
    /// let config = Config { queue_lines: 0, ..Config::default() };
    /// let error = config.validate().unwrap_err();
    /// assert_eq!(error, ConfigError::Zero("queue_lines"));
    /// assert_eq!(error.field(), "queue_lines");
    /// assert_eq!(error.to_string(), "queue_lines must be at least 1");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_line", self.max_line),
            ("queue_lines", self.queue_lines),
            ("queue_bytes", self.queue_bytes),
            ("max_clients", self.max_clients),
            ("max_per_ip", self.max_per_ip),
            ("flood_burst", self.flood_burst as usize),
            ("backlog", self.backlog as usize),
            ("max_bans", self.max_bans),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Zero(field));
        }
        let needed = longest_queued_line(self.max_line);
        if self.queue_bytes < needed {
            return Err(ConfigError::QueueTooSmall { needed });
        }
        let rate = self.flood_rate;
        if !(rate == 0.0 || (rate.is_finite() && rate >= Config::MIN_FLOOD_RATE)) {
            return Err(ConfigError::FloodRate);
        }
        for (field, value) in [
            ("write_timeout", self.write_timeout),
            ("stall_timeout", self.stall_timeout),
            ("partial_line_timeout", self.partial_line_timeout),
            ("shutdown_grace", self.shutdown_grace),
            ("auth_timeout", self.auth_timeout),
            ("password_delay", self.password_delay),
        ] {
            if !(Config::MIN_TIMEOUT..=Config::MAX_TIMEOUT).contains(&value) {
                return Err(ConfigError::Timeout(field));
            }
        }
        if let Some(idle) = self.keepalive {
            if idle.subsec_nanos() != 0
                || !(Duration::from_secs(1)..=Config::MAX_KEEPALIVE).contains(&idle)
            {
                return Err(ConfigError::Keepalive);
            }
        }
        if let Some(motd) = &self.motd {
            if motd.len() > Config::MAX_MOTD {
                return Err(ConfigError::MotdTooLong(motd.len()));
            }
        }
        if let Some(url) = &self.redis {
            check_redis(url)?;
        }
        Ok(())
    }
}

#[cfg(feature = "redis")]
fn check_redis(url: &str) -> Result<(), ConfigError> {
    url.parse::<crate::cluster::RedisUrl>()
        .map(drop)
        .map_err(|e| ConfigError::Redis(e.to_string()))
}

#[cfg(not(feature = "redis"))]
fn check_redis(_url: &str) -> Result<(), ConfigError> {
    Err(ConfigError::Redis(
        "this build has no Redis support (rebuild with --features redis)".into(),
    ))
}

/// A Redis URL as a log may show it: everything after the last `@` (host, port, database).
fn redis_shown(url: &str) -> &str {
    url.rsplit_once('@').map_or(url, |(_, host)| host)
}

/// The most a queue must hold to take one line of `max_line` bytes: every byte may become a
/// three-byte U+FFFD, behind a prefix such as `[pm from NAME] ` and the line's bookkeeping.
fn longest_queued_line(max_line: usize) -> usize {
    max_line.saturating_mul(3).saturating_add(256)
}

/// A [`Config`] value out of range, from [`Config::validate`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use smolchat::Config;
///
/// let config = Config { write_timeout: Duration::ZERO, ..Config::default() };
/// let error = config.validate().unwrap_err();
/// assert_eq!(error.field(), "write_timeout");
/// assert_eq!(error.to_string(), "write_timeout must be between 0.001 and 86400 seconds");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// This field must be at least 1.
    Zero(&'static str),
    /// `queue_bytes` cannot hold one longest line (`max_line`): it must be at least `needed`.
    QueueTooSmall {
        /// The smallest `queue_bytes` that holds a line of `max_line` bytes.
        needed: usize,
    },
    /// `flood_rate` is neither `0` nor a finite rate of at least [`Config::MIN_FLOOD_RATE`].
    FloodRate,
    /// This timeout is outside [`Config::MIN_TIMEOUT`]..=[`Config::MAX_TIMEOUT`].
    Timeout(&'static str),
    /// `keepalive` is not a whole number of seconds from 1 to [`Config::MAX_KEEPALIVE`].
    Keepalive,
    /// `motd` is longer than [`Config::MAX_MOTD`]; holds its length.
    MotdTooLong(usize),
    /// `redis` is not a valid URL, or this build has no Redis support; holds why.
    Redis(String),
}

impl ConfigError {
    /// The name of the [`Config`] field that is out of range.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = smolchat::Config { flood_rate: f64::NAN, ..smolchat::Config::default() };
    /// assert_eq!(config.validate().unwrap_err().field(), "flood_rate");
    /// ```
    pub fn field(&self) -> &'static str {
        match self {
            ConfigError::Zero(field) | ConfigError::Timeout(field) => field,
            ConfigError::QueueTooSmall { .. } => "queue_bytes",
            ConfigError::FloodRate => "flood_rate",
            ConfigError::Keepalive => "keepalive",
            ConfigError::MotdTooLong(_) => "motd",
            ConfigError::Redis(_) => "redis",
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Zero(field) => write!(f, "{field} must be at least 1"),
            ConfigError::QueueTooSmall { needed } => write!(
                f,
                "queue_bytes must be at least {needed} to hold one line of max_line bytes"
            ),
            ConfigError::FloodRate => write!(
                f,
                "flood_rate must be 0 (off) or a number of lines per second from {}",
                Config::MIN_FLOOD_RATE
            ),
            ConfigError::Timeout(field) => write!(
                f,
                "{field} must be between {} and {} seconds",
                Config::MIN_TIMEOUT.as_secs_f64(),
                Config::MAX_TIMEOUT.as_secs()
            ),
            ConfigError::Keepalive => write!(
                f,
                "keepalive must be a whole number of seconds from 1 to {}",
                Config::MAX_KEEPALIVE.as_secs()
            ),
            ConfigError::MotdTooLong(len) => {
                write!(
                    f,
                    "motd is {len} bytes, more than the limit of {}",
                    Config::MAX_MOTD
                )
            }
            ConfigError::Redis(why) => write!(f, "redis: {why}"),
        }
    }
}

impl Error for ConfigError {}

impl From<ConfigError> for std::io::Error {
    fn from(e: ConfigError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("max_line", &self.max_line)
            .field("queue_lines", &self.queue_lines)
            .field("queue_bytes", &self.queue_bytes)
            .field("max_clients", &self.max_clients)
            .field("max_per_ip", &self.max_per_ip)
            .field("limit_loopback", &self.limit_loopback)
            .field("flood_burst", &self.flood_burst)
            .field("flood_rate", &self.flood_rate)
            .field("write_timeout", &self.write_timeout)
            .field("stall_timeout", &self.stall_timeout)
            .field("partial_line_timeout", &self.partial_line_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("keepalive", &self.keepalive)
            .field("history", &self.history)
            .field("announce_limit", &self.announce_limit)
            .field("timestamps", &self.timestamps)
            .field("motd", &self.motd)
            .field("backlog", &self.backlog)
            .field("nodelay", &self.nodelay)
            .field("filter", &self.filter.as_ref().map(|_| "Fn"))
            // Never the passwords themselves: a Debug line may end up in a log.
            .field("oper_password", &self.oper_password.as_ref().map(|_| "…"))
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("auth_timeout", &self.auth_timeout)
            .field("password_delay", &self.password_delay)
            .field("topic_ops_only", &self.topic_ops_only)
            .field("allow", &self.allow)
            .field("deny", &self.deny)
            .field("max_bans", &self.max_bans)
            .field("tls", &self.tls)
            // The host and port only: the URL may hold a password.
            .field("redis", &self.redis.as_deref().map(redis_shown))
            .finish()
    }
}
