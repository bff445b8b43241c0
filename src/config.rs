//! Server configuration: every limit, with the reason for its default.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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
    /// (default 60 s; `None` leaves the system default, typically two hours). A vanished peer is
    /// dropped after about twice this time.
    pub keepalive: Option<Duration>,
    /// Messages each room keeps and replays to clients that join it (default 20; `0` disables).
    pub history: usize,
    /// Largest room whose joins and leaves are announced (default 1000). In a room of N
    /// members every join costs N lines, so a crowd of N joining would cost N² lines; beyond
    /// this size rooms stay quiet about arrivals and departures, as large IRC channels do.
    pub announce_limit: usize,
    /// Message of the day shown to every client on connect (default none). Each of its lines
    /// becomes one notice.
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
            motd: None,
            backlog: 4096,
            nodelay: true,
            filter: None,
        }
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
            .field("motd", &self.motd)
            .field("backlog", &self.backlog)
            .field("nodelay", &self.nodelay)
            .field("filter", &self.filter.as_ref().map(|_| "Fn"))
            .finish()
    }
}
