//! What happens on the server, reported to the host application.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::Cidr;

/// Something that happened on the server, delivered to [`Handle::subscribe`](crate::Handle::subscribe).
///
/// Events come in the order the server made the changes they describe. Text is `Arc<str>`
/// here and in every public type: the server already holds names and rooms that way, so an
/// event offered to many subscribers copies no text.
///
/// # Examples
///
/// ```
/// use smolchat::Event;
///
/// fn describe(event: &Event) -> String {
///     match event {
///         Event::Joined { name, addr } => format!("{name} joined from {addr}"),
///         Event::Left { name, reason } => format!("{name} left ({reason})"),
///         Event::Message { name, room, text, .. } => format!("#{room} <{name}> {text}"),
///         other => format!("{other:?}"),
///     }
/// }
/// let event = Event::Renamed { old: "guest1".into(), new: "alice".into() };
/// assert!(describe(&event).starts_with("Renamed"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A client connected and got its default name; it starts in the `lobby` room.
    Joined {
        /// The client's name.
        name: Arc<str>,
        /// The client's address.
        addr: SocketAddr,
    },
    /// A client left.
    Left {
        /// The client's name.
        name: Arc<str>,
        /// Why it left.
        reason: LeaveReason,
    },
    /// A client was turned away before joining.
    Refused {
        /// The client's address.
        addr: SocketAddr,
        /// Why it was refused.
        reason: Refusal,
    },
    /// A client changed its name.
    Renamed {
        /// The old name.
        old: Arc<str>,
        /// The new name.
        new: Arc<str>,
    },
    /// A client moved to another room.
    RoomChanged {
        /// The client's name.
        name: Arc<str>,
        /// The room it left.
        from: Arc<str>,
        /// The room it entered.
        to: Arc<str>,
    },
    /// A line was relayed to a room (`action` for `/me`).
    Message {
        /// The sender's name.
        name: Arc<str>,
        /// The room.
        room: Arc<str>,
        /// The text, sanitized.
        text: Arc<str>,
        /// Whether it was an action (`/me`).
        action: bool,
    },
    /// A private message was sent. (If its recipient ignores the sender, it was not shown to
    /// them; the sender cannot tell.)
    Private {
        /// The sender's name.
        from: Arc<str>,
        /// The recipient's name.
        to: Arc<str>,
        /// The text, sanitized.
        text: Arc<str>,
    },
    /// A client became an operator with `/oper`.
    Opered {
        /// The client's name.
        name: Arc<str>,
        /// The client's address.
        addr: SocketAddr,
    },
    /// A client sent `/oper` with a wrong password; it is held up before it is told.
    OperFailed {
        /// The client's name.
        name: Arc<str>,
        /// The client's address.
        addr: SocketAddr,
    },
    /// A connection sent `/pass` with a wrong password (see [`Config::password`](crate::Config::password)).
    PassFailed {
        /// The connection's address.
        addr: SocketAddr,
    },
    /// A TLS client's handshake failed or did not finish in time: it was closed without
    /// joining (see [`Config::tls`](crate::Config::tls)).
    TlsFailed {
        /// The connection's address.
        addr: SocketAddr,
        /// What went wrong, as the TLS library or the timeout says it.
        error: Arc<str>,
    },
    /// An address range was banned.
    Banned {
        /// The range banned.
        range: Cidr,
        /// For how long; `None` until unbanned or the server restarts.
        duration: Option<Duration>,
        /// The reason given, sanitized; may be empty.
        reason: Arc<str>,
        /// The operator who banned it; `None` for the host.
        by: Option<Arc<str>>,
    },
    /// A ban was lifted before it expired.
    Unbanned {
        /// The range no longer banned.
        range: Cidr,
        /// The operator who lifted it; `None` for the host.
        by: Option<Arc<str>>,
    },
    /// A client was muted or unmuted.
    Muted {
        /// The client's name.
        name: Arc<str>,
        /// `true` when muted, `false` when unmuted.
        muted: bool,
        /// The operator who did it; `None` for the host.
        by: Option<Arc<str>>,
    },
    /// A room's topic was set or cleared.
    TopicChanged {
        /// The room.
        room: Arc<str>,
        /// The new topic, sanitized; `None` when cleared.
        topic: Option<Arc<str>>,
        /// Who set it.
        by: Arc<str>,
    },
    /// The link to the cluster's Redis was lost: this node's users now see only each other
    /// ([`Config::redis`](crate::Config::redis), feature `redis`).
    #[cfg(feature = "redis")]
    ClusterDown,
    /// The link to the cluster's Redis is back.
    #[cfg(feature = "redis")]
    ClusterUp,
}

/// Why a client left. Its `Display` is what the client's room is told.
///
/// # Examples
///
/// ```
/// use smolchat::LeaveReason;
///
/// assert_eq!(LeaveReason::Quit(Some("dinner".into())).to_string(), "quit: dinner");
/// assert_eq!(LeaveReason::TooSlow.to_string(), "too slow");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaveReason {
    /// The client sent `/quit`, maybe with a reason.
    Quit(Option<Arc<str>>),
    /// The client closed its connection.
    Closed,
    /// Reading or writing failed (reset, broken pipe…).
    Error(Arc<str>),
    /// Its queue overflowed: it did not read fast enough.
    TooSlow,
    /// Its socket accepted nothing for [`Config::write_timeout`](crate::Config::write_timeout).
    WriteTimeout,
    /// It left a line unfinished for [`Config::partial_line_timeout`](crate::Config::partial_line_timeout).
    PartialLineTimeout,
    /// The host or an operator kicked it.
    Kicked(Arc<str>),
    /// An operator or the host banned its address, for this reason (may be empty).
    Banned(Arc<str>),
    /// The server shut down.
    Shutdown,
    /// Serving it failed inside the server (a bug); only this client was affected.
    Internal,
}

impl fmt::Display for LeaveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaveReason::Quit(None) => f.write_str("quit"),
            LeaveReason::Quit(Some(reason)) => write!(f, "quit: {reason}"),
            LeaveReason::Closed => f.write_str("connection closed"),
            LeaveReason::Error(error) => write!(f, "connection error: {error}"),
            LeaveReason::TooSlow => f.write_str("too slow"),
            LeaveReason::WriteTimeout => f.write_str("write timeout"),
            LeaveReason::PartialLineTimeout => f.write_str("unfinished line timed out"),
            LeaveReason::Kicked(reason) => write!(f, "kicked: {reason}"),
            LeaveReason::Banned(reason) if reason.is_empty() => f.write_str("banned"),
            LeaveReason::Banned(reason) => write!(f, "banned: {reason}"),
            LeaveReason::Shutdown => f.write_str("server shutdown"),
            LeaveReason::Internal => f.write_str("internal error"),
        }
    }
}

/// Why a connection was turned away. Its `Display` is the line the client is sent (none is sent
/// for [`Refusal::NotAllowed`]).
///
/// # Examples
///
/// ```
/// use smolchat::Refusal;
///
/// assert_eq!(Refusal::ServerFull.to_string(), "server full, try again later");
/// assert_eq!(Refusal::Banned("spam".into()).to_string(), "you are banned: spam");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// [`Config::max_clients`](crate::Config::max_clients) are connected.
    ServerFull,
    /// [`Config::max_per_ip`](crate::Config::max_per_ip) are connected from this address.
    TooManyFromAddress,
    /// The server is shutting down.
    ShuttingDown,
    /// The address is banned, for this reason (may be empty).
    Banned(Arc<str>),
    /// The address is in [`Config::deny`](crate::Config::deny), or [`Config::allow`](crate::Config::allow)
    /// is not empty and does not hold it. The connection is closed without a word.
    NotAllowed,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::ServerFull => "server full, try again later",
            Refusal::TooManyFromAddress => "too many connections from your address",
            Refusal::ShuttingDown => "server is shutting down",
            Refusal::Banned(reason) if reason.is_empty() => "you are banned",
            Refusal::Banned(reason) => return write!(f, "you are banned: {reason}"),
            Refusal::NotAllowed => "address not allowed",
        })
    }
}
