//! The wire protocol: what a client's line means, and every line the server sends.
//!
//! Every line a client receives starts with a marker that says what it is (see
//! `docs/PROTOCOL.md`, which this file follows line for line). Names are restricted to
//! `[A-Za-z0-9_-]`, so a user's line `name: text` can never begin like a server line
//! (`*** `, `! `, `* `, `[`).

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::event::LeaveReason;
use crate::handle::{Ban, Stats};
use crate::sanitize::sanitize_into;
use crate::Cidr;

/// Longest name or room name, in characters.
pub(crate) const MAX_NAME: usize = 16;

/// Most users one client may ignore: bounds the memory its ignore list takes and keeps the
/// `/ignore` listing within [`MAX_LISTED`].
pub(crate) const MAX_IGNORED: usize = 100;

/// Longest room topic, in characters, so a `/rooms` listing of topics stays small.
pub(crate) const MAX_TOPIC: usize = 200;

/// Longest ban an operator can give in minutes (a year); longer is `/ban` without minutes.
const MAX_BAN_MINUTES: f64 = 525_600.0;

/// `/topic -` clears the topic.
const CLEAR_TOPIC: &str = "-";

/// Names nobody may take, so nobody can pass for the server or its staff.
const RESERVED: &[&str] = &[
    "server", "smolchat", "admin", "operator", "system", "root", "history", "pm",
];

/// One line from a client, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Input<'a> {
    /// Nothing to do (an empty or blank line).
    Empty,
    /// A chat line for the room.
    Say(&'a str),
    Me(&'a str),
    Nick(&'a str),
    Msg(&'a str, &'a str),
    Join(&'a str),
    Who,
    Rooms,
    Help,
    Quit(Option<&'a str>),
    /// `/timestamps on` or `/timestamps off`.
    Timestamps(bool),
    /// `/away` with its message, if any.
    Away(Option<&'a str>),
    Back,
    /// `/ignore NAME`, or `/ignore` alone to list.
    Ignore(Option<&'a str>),
    Unignore(&'a str),
    Whois(&'a str),
    /// `/topic`: show (`None`), set, or clear (`Some("")`) the room's topic.
    Topic(Option<&'a str>),
    Pass(&'a str),
    Oper(&'a str),
    Kick(&'a str, Option<&'a str>),
    Ban {
        target: &'a str,
        /// `None`: until lifted.
        duration: Option<Duration>,
        reason: Option<&'a str>,
    },
    Unban(&'a str),
    Bans,
    Mute(&'a str),
    Unmute(&'a str),
    Stats,
}

/// Parses a sanitized line.
pub(crate) fn parse(line: &str) -> Result<Input<'_>, CommandError> {
    if line.trim().is_empty() {
        return Ok(Input::Empty);
    }
    let Some(command) = line.strip_prefix('/') else {
        return Ok(Input::Say(line));
    };
    if command.starts_with('/') {
        return Ok(Input::Say(command));
    }
    let (word, rest) = command.split_once(' ').unwrap_or((command, ""));
    let rest = rest.trim();
    let arg = |usage: &'static str| {
        if rest.is_empty() {
            Err(CommandError::Usage(usage))
        } else {
            Ok(rest)
        }
    };
    let lower = word.to_ascii_lowercase();
    Ok(match lower.as_str() {
        "help" => Input::Help,
        "who" => Input::Who,
        "rooms" => Input::Rooms,
        "nick" => Input::Nick(arg("/nick NAME")?),
        "me" => Input::Me(arg("/me TEXT")?),
        "join" => Input::Join(arg("/join ROOM")?),
        "quit" => Input::Quit(Some(rest).filter(|r| !r.is_empty())),
        "whois" => Input::Whois(arg("/whois NAME")?),
        "away" => Input::Away(Some(rest).filter(|r| !r.is_empty())),
        "back" => Input::Back,
        "ignore" => Input::Ignore(Some(rest).filter(|r| !r.is_empty())),
        "unignore" => Input::Unignore(arg("/unignore NAME")?),
        "timestamps" => match rest.to_ascii_lowercase().as_str() {
            "on" => Input::Timestamps(true),
            "off" => Input::Timestamps(false),
            _ => return Err(CommandError::Usage("/timestamps on|off")),
        },
        "msg" => {
            let (to, text) = arg("/msg NAME TEXT")?
                .split_once(' ')
                .ok_or(CommandError::Usage("/msg NAME TEXT"))?;
            Input::Msg(to, text.trim())
        }
        "topic" => Input::Topic(match rest {
            "" => None,
            CLEAR_TOPIC => Some(""),
            topic => Some(topic),
        }),
        // The password is the whole rest of the line: it may hold spaces.
        "pass" => Input::Pass(arg("/pass PASSWORD")?),
        "oper" => Input::Oper(arg("/oper PASSWORD")?),
        "kick" => {
            let (name, reason) = first_word(arg("/kick NAME [REASON]")?);
            Input::Kick(name, reason)
        }
        "ban" => {
            let (target, rest) = first_word(arg(BAN_USAGE)?);
            let (duration, reason) = match rest.map(first_word) {
                // Anything that reads as a number is meant as minutes (`NaN`, `-5` and `inf`
                // too), and must be a valid number of them: never a reason that bans for ever.
                Some((word, reason))
                    if word.starts_with(|c: char| c.is_ascii_digit() || ".+-".contains(c))
                        || word.parse::<f64>().is_ok() =>
                {
                    (Some(minutes(word)?), reason)
                }
                _ => (None, rest),
            };
            Input::Ban {
                target,
                duration,
                reason,
            }
        }
        "unban" => Input::Unban(arg("/unban ADDRESS")?),
        "bans" => Input::Bans,
        "mute" => Input::Mute(arg("/mute NAME")?),
        "unmute" => Input::Unmute(arg("/unmute NAME")?),
        "stats" => Input::Stats,
        _ => return Err(CommandError::UnknownCommand(word.into())),
    })
}

const BAN_USAGE: &str = "/ban NAME|ADDRESS [MINUTES] [REASON]";

/// The widest ranges an operator may ban over the wire, so a slip (`/ban 0.0.0.0/0`) cannot
/// lock everyone out; the host's [`Handle::ban_range`](crate::Handle::ban_range) is not limited.
pub(crate) const MIN_BAN_PREFIX_V4: u8 = 8;
pub(crate) const MIN_BAN_PREFIX_V6: u8 = 16;

/// Splits off the first word; the rest, if any, trimmed.
fn first_word(text: &str) -> (&str, Option<&str>) {
    match text.split_once(' ') {
        Some((word, rest)) => (word, Some(rest.trim()).filter(|r| !r.is_empty())),
        None => (text, None),
    }
}

/// A ban's length: a positive number of minutes, decimals allowed, up to a year.
fn minutes(word: &str) -> Result<Duration, CommandError> {
    word.parse::<f64>()
        .ok()
        .filter(|m| *m > 0.0 && *m <= MAX_BAN_MINUTES)
        .map(|m| Duration::from_secs_f64(m * 60.0))
        .ok_or_else(|| CommandError::InvalidMinutes(word.into()))
}

/// Why a name or room name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameError {
    Invalid,
    Reserved,
}

/// The rule names and room names follow, as clients are told it.
struct NameRule;

impl fmt::Display for NameRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1-{MAX_NAME} letters, digits, _ or -")
    }
}

/// Checks the shape of a name ([`NameRule`]) and that it is not reserved.
pub(crate) fn check_name(name: &str) -> Result<(), NameError> {
    let valid = (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return Err(NameError::Invalid);
    }
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(NameError::Reserved);
    }
    Ok(())
}

/// Checks a room name (an optional leading `#`, then the name rules) and returns its key.
pub(crate) fn room_key(room: &str) -> Result<String, NameError> {
    let room = room.strip_prefix('#').unwrap_or(room);
    match check_name(room) {
        Err(NameError::Invalid) => Err(NameError::Invalid),
        // Reserved words are only about passing for someone; a room may be called anything.
        _ => Ok(room.to_ascii_lowercase()),
    }
}

/// Why a command failed; its `Display` is the text of the error line its sender gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CommandError {
    /// A command without its argument; holds the command's usage.
    Usage(&'static str),
    UnknownCommand(Box<str>),
    InvalidName(Box<str>),
    ReservedName(Box<str>),
    NameTaken(Box<str>),
    AlreadyNamed(Box<str>),
    NoSuchUser(Box<str>),
    InvalidRoom(Box<str>),
    AlreadyInRoom(Arc<str>),
    /// `/back` from someone who is not away.
    NotAway,
    IgnoreSelf,
    AlreadyIgnoring(Arc<str>),
    NotIgnoring(Arc<str>),
    /// `/ignore` past [`MAX_IGNORED`].
    IgnoringTooMany,
    /// The host's filter rejected the line, for this (sanitized) reason.
    Rejected(Box<str>),
    NotOperator,
    /// `/oper` on a server without an operator password.
    NoOperators,
    WrongPassword,
    /// `/pass` once no password is needed.
    NoPasswordNeeded,
    Muted,
    TopicTooLong,
    InvalidMinutes(Box<str>),
    InvalidRange(Box<str>),
    NotBanned(Cidr),
    /// `/ban` of a range wider than [`MIN_BAN_PREFIX_V4`] / [`MIN_BAN_PREFIX_V6`].
    BanTooWide(Cidr),
    /// `/ban` of a range that holds the operator's own address.
    BanOwnAddress(Cidr),
    BanListFull(usize),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Usage(usage) => write!(f, "usage: {usage}"),
            CommandError::UnknownCommand(word) => {
                write!(f, "unknown command /{word}; /help lists the commands")
            }
            CommandError::InvalidName(name) => write!(f, "invalid name \"{name}\": use {NameRule}"),
            CommandError::ReservedName(name) => write!(f, "the name {name} is reserved"),
            CommandError::NameTaken(name) => write!(f, "the name {name} is taken"),
            CommandError::AlreadyNamed(name) => write!(f, "you are already {name}"),
            CommandError::NoSuchUser(name) => write!(f, "no user named {name}"),
            CommandError::InvalidRoom(room) => {
                write!(f, "invalid room name \"{room}\": use {NameRule}")
            }
            CommandError::AlreadyInRoom(room) => write!(f, "you are already in #{room}"),
            CommandError::NotAway => f.write_str("you are not away"),
            CommandError::IgnoreSelf => f.write_str("you cannot ignore yourself"),
            CommandError::AlreadyIgnoring(name) => write!(f, "you already ignore {name}"),
            CommandError::NotIgnoring(name) => write!(f, "you do not ignore {name}"),
            CommandError::IgnoringTooMany => write!(
                f,
                "you already ignore {MAX_IGNORED} users; /unignore one first"
            ),
            CommandError::Rejected(reason) => write!(f, "message not sent: {reason}"),
            CommandError::NotOperator => f.write_str("you are not an operator"),
            CommandError::NoOperators => f.write_str("this server has no operators"),
            CommandError::WrongPassword => f.write_str("wrong password"),
            CommandError::NoPasswordNeeded => f.write_str("no password is needed now"),
            CommandError::Muted => f.write_str("you are muted; nothing was sent"),
            CommandError::TopicTooLong => {
                write!(f, "topic too long (over {MAX_TOPIC} characters)")
            }
            CommandError::InvalidMinutes(word) => write!(
                f,
                "invalid number of minutes \"{word}\": use a positive number up to {MAX_BAN_MINUTES}"
            ),
            CommandError::InvalidRange(text) => write!(
                f,
                "invalid address \"{text}\": use an address or ADDRESS/PREFIX"
            ),
            CommandError::NotBanned(range) => write!(f, "{range} is not banned"),
            CommandError::BanTooWide(range) => write!(
                f,
                "{range} is too wide to ban from chat (at most /{MIN_BAN_PREFIX_V4} for IPv4, \
                 /{MIN_BAN_PREFIX_V6} for IPv6)"
            ),
            CommandError::BanOwnAddress(range) => {
                write!(f, "{range} includes your own address; not banned")
            }
            CommandError::BanListFull(max) => {
                write!(f, "the ban list is full ({max} bans); lift one first")
            }
        }
    }
}

impl std::error::Error for CommandError {}

/// The `/help` reply: every command, one line each.
pub(crate) fn help() -> Arc<str> {
    format!(
        "\
*** commands:
***   /nick NAME          change your name ({NameRule})
***   /me TEXT            send an action: * NAME TEXT
***   /msg NAME TEXT      send a private message
***   /join ROOM          leave your room and enter ROOM (created if new)
***   /who                list the users in your room
***   /rooms              list the rooms and their sizes
***   /topic [TEXT]       show or set your room's topic; /topic - clears it
***   /whois NAME         show NAME's room, time connected and idle, away message
***   /away [MESSAGE]     mark yourself away; a private message gets MESSAGE back
***   /back               you are no longer away
***   /ignore [NAME]      hide NAME's messages from you; alone, list whom you ignore
***   /unignore NAME      show NAME's messages again
***   /timestamps on|off  start each line you get with the time (HH:MM UTC)
***   /oper PASSWORD      become an operator
***   /quit [REASON]      leave the chat
***   /help               show this list
***   //TEXT              send a line that starts with /
*** operators only:
***   /kick NAME [REASON]
***   {BAN_USAGE}   (without MINUTES: until /unban)
***   /unban ADDRESS, /bans, /mute NAME, /unmute NAME, /stats
"
    )
    .into()
}

/// A server notice line: `*** text`.
fn notice(text: impl fmt::Display) -> Arc<str> {
    format!("*** {text}\n").into()
}

/// An error line addressed to one client: `! text`.
pub(crate) fn error(text: impl fmt::Display) -> Arc<str> {
    format!("! {text}\n").into()
}

/// Builds a relayed line from a fixed prefix and sanitized user text, in one allocation.
fn relay(parts: &[&str], text: &str) -> Arc<str> {
    let mut line =
        String::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + text.len() + 1);
    parts.iter().for_each(|p| line.push_str(p));
    line.push_str(text);
    line.push('\n');
    line.into()
}

/// A moment as the server tells it: whole seconds since the Unix epoch, shown as `HH:MM` UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Time(pub(crate) u64);

impl Time {
    /// The system clock now; a clock set before 1970 reads as 1970.
    pub(crate) fn now() -> Time {
        Time(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
        )
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let minutes = self.0 / 60;
        write!(f, "{:02}:{:02}", minutes / 60 % 24, minutes % 60)
    }
}

/// Starts every line of `lines` with `HH:MM `, for a client that turned timestamps on.
pub(crate) fn stamped(at: Time, lines: &str) -> Arc<str> {
    let stamp = format!("{at} ");
    let count = lines.split_inclusive('\n').count();
    let mut out = String::with_capacity(lines.len() + count * stamp.len());
    for line in lines.split_inclusive('\n') {
        out.push_str(&stamp);
        out.push_str(line);
    }
    out.into()
}

// Chat lines.

/// `alice: hello`, or for an action (`/me waves`) `* alice waves`.
pub(crate) fn chat(name: &str, text: &str, action: bool) -> Arc<str> {
    if action {
        relay(&["* ", name, " "], text)
    } else {
        relay(&[name, ": "], text)
    }
}

/// `[pm from alice] psst`, as the recipient gets it.
pub(crate) fn pm_from(from: &str, text: &str) -> Arc<str> {
    relay(&["[pm from ", from, "] "], text)
}

/// `[pm to bob] psst`, as the sender gets it back.
pub(crate) fn pm_to(to: &str, text: &str) -> Arc<str> {
    relay(&["[pm to ", to, "] "], text)
}

// What a client gets on connecting and on entering a room.

/// The first line a client gets.
pub(crate) fn welcome(name: &str) -> Arc<str> {
    notice(format_args!(
        "welcome to smolchat, {name}! /help lists the commands"
    ))
}

/// The host's message of the day, sanitized, one `*** motd: ` line per line of it.
pub(crate) fn motd(text: &str) -> Arc<str> {
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.lines() {
        out.push_str("*** motd: ");
        sanitize_into(&mut out, line);
        out.push('\n');
    }
    out.into()
}

/// Appends where a client now is: `*** you are alice in #rust; users here: 2`.
pub(crate) fn push_you_are(out: &mut String, name: &str, room: &str, users: usize) {
    let _ = writeln!(out, "*** you are {name} in #{room}; users here: {users}");
}

/// Appends a room's topic, shown to whoever enters it: `*** topic of #rust: all things rust`.
pub(crate) fn push_topic(out: &mut String, room: &str, topic: &str) {
    let _ = writeln!(out, "*** topic of #{room}: {topic}");
}

/// Appends a line from the room's history, replayed to a newcomer with the time it was said:
/// `[history 14:03] alice: hello`.
pub(crate) fn push_history(out: &mut String, said: Time, line: &str) {
    let _ = write!(out, "[history {said}] {line}");
}

// Notices about others.

/// `*** alice joined #rust`.
pub(crate) fn joined(name: &str, room: &str) -> Arc<str> {
    notice(format_args!("{name} joined #{room}"))
}

/// `*** alice left #lobby for #rust`, as the room she left sees it.
pub(crate) fn moved(name: &str, from: &str, to: &str) -> Arc<str> {
    notice(format_args!("{name} left #{from} for #{to}"))
}

/// `*** alice left (quit: dinner)`.
pub(crate) fn left(name: &str, reason: &LeaveReason) -> Arc<str> {
    notice(format_args!("{name} left ({reason})"))
}

/// `*** alice left (server lost)`: her node left the cluster without a word.
#[cfg(feature = "redis")]
pub(crate) fn server_lost(name: &str) -> Arc<str> {
    notice(format_args!("{name} left (server lost)"))
}

/// `*** cluster link lost; only users on this server see you`.
#[cfg(feature = "redis")]
pub(crate) fn cluster_lost() -> Arc<str> {
    notice("cluster link lost; only users on this server see you")
}

/// `*** cluster link restored`.
#[cfg(feature = "redis")]
pub(crate) fn cluster_restored() -> Arc<str> {
    notice("cluster link restored")
}

/// `*** the name alice was taken while the cluster link was down; you are now guest7`.
#[cfg(feature = "redis")]
pub(crate) fn name_lost(old: &str, new: &str) -> Arc<str> {
    notice(format_args!(
        "the name {old} was taken while the cluster link was down; you are now {new}"
    ))
}

/// `*** guest1 is now alice`, as the room sees it.
pub(crate) fn renamed(old: &str, new: &str) -> Arc<str> {
    notice(format_args!("{old} is now {new}"))
}

// Replies to commands.

/// `*** you are now alice`, the reply to `/nick`.
pub(crate) fn you_are_now(name: &str) -> Arc<str> {
    notice(format_args!("you are now {name}"))
}

/// Longest `/who` or `/rooms` listing, so a reply stays far below any queue bound.
const MAX_LISTED: usize = 100;

/// `*** users in #lobby (2): alice (away), bob`, the reply to `/who`, names in
/// [`natural_order`], each with whether it is away.
pub(crate) fn who(room: &str, mut names: Vec<(&str, bool)>) -> Arc<str> {
    names.sort_unstable_by(|a, b| natural_order(a.0, b.0));
    let shown: Vec<String> = names
        .iter()
        .take(MAX_LISTED)
        .map(|&(name, away)| {
            if away {
                format!("{name} (away)")
            } else {
                name.to_string()
            }
        })
        .collect();
    notice(format_args!(
        "users in #{room} ({}): {}",
        names.len(),
        listing(&shown, names.len())
    ))
}

/// Orders names as people read them: ignoring case, and runs of digits by their value, so
/// `guest23` comes before `guest100`. Ties (names equal but for case or leading zeros) fall
/// back to plain byte order, so the order is total.
fn natural_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> impl Iterator<Item = (bool, &str)> {
        let mut rest = s;
        std::iter::from_fn(move || {
            let first = rest.bytes().next()?;
            let digits = first.is_ascii_digit();
            let end = rest
                .bytes()
                .position(|b| b.is_ascii_digit() != digits)
                .unwrap_or(rest.len());
            let (part, tail) = rest.split_at(end);
            rest = tail;
            Some((digits, part))
        })
    }
    let key = |(digits, part): (bool, &str)| {
        if digits {
            let value = part.trim_start_matches('0');
            (0, value.len(), value.to_string())
        } else {
            (1, 0, part.to_ascii_lowercase())
        }
    };
    parts(a)
        .map(key)
        .cmp(parts(b).map(key))
        .then_with(|| a.cmp(b))
}

/// `*** rooms: #lobby (2), #rust (1) "all things rust"`, the reply to `/rooms`, with each
/// room's topic if it has one; `rooms` already sorted.
pub(crate) fn rooms(rooms: &[(&str, usize, Option<&str>)]) -> Arc<str> {
    let rooms: Vec<String> = rooms
        .iter()
        .map(|(room, n, topic)| match topic {
            Some(topic) => format!("#{room} ({n}) \"{topic}\""),
            None => format!("#{room} ({n})"),
        })
        .collect();
    notice(format_args!("rooms: {}", listing(&rooms, rooms.len())))
}

/// Joins up to [`MAX_LISTED`] of `items` with commas, saying how many more of `total` there
/// are.
fn listing<T: AsRef<str>>(items: &[T], total: usize) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().take(MAX_LISTED).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(item.as_ref());
    }
    if total > MAX_LISTED {
        let _ = write!(out, ", and {} more", total - MAX_LISTED);
    }
    out
}

/// `*** timestamps on` or `*** timestamps off`, the reply to `/timestamps`.
pub(crate) fn timestamps(on: bool) -> Arc<str> {
    notice(if on {
        "timestamps on"
    } else {
        "timestamps off"
    })
}

/// `: MESSAGE` after "away", or nothing for an away without a message.
struct AwayMessage<'a>(&'a str);

impl fmt::Display for AwayMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            "" => Ok(()),
            message => write!(f, ": {message}"),
        }
    }
}

/// `*** you are away: lunch` (or `*** you are away`), the reply to `/away`.
pub(crate) fn you_are_away(message: &str) -> Arc<str> {
    notice(format_args!("you are away{}", AwayMessage(message)))
}

/// `*** you are back`, the reply to `/back`.
pub(crate) fn you_are_back() -> Arc<str> {
    notice("you are back")
}

/// `*** alice is away: lunch` (or `*** alice is away`), after a private message to alice.
pub(crate) fn is_away(name: &str, message: &str) -> Arc<str> {
    notice(format_args!("{name} is away{}", AwayMessage(message)))
}

/// `*** you now ignore bob`, the reply to `/ignore bob`.
pub(crate) fn now_ignoring(name: &str) -> Arc<str> {
    notice(format_args!("you now ignore {name}"))
}

/// `*** you no longer ignore bob`, the reply to `/unignore bob`.
pub(crate) fn no_longer_ignoring(name: &str) -> Arc<str> {
    notice(format_args!("you no longer ignore {name}"))
}

/// `*** you ignore (2): bob, carol` or `*** you ignore nobody`, the reply to `/ignore`.
pub(crate) fn ignoring(mut names: Vec<&str>) -> Arc<str> {
    if names.is_empty() {
        return notice("you ignore nobody");
    }
    names.sort_unstable_by(|a, b| natural_order(a, b));
    notice(format_args!(
        "you ignore ({}): {}",
        names.len(),
        listing(&names, names.len())
    ))
}

/// What `/whois` tells about a user.
#[derive(Debug)]
pub(crate) struct Whois<'a> {
    pub(crate) name: &'a str,
    pub(crate) room: &'a str,
    pub(crate) connected: Duration,
    pub(crate) idle: Duration,
    /// Shown to the user themself and to operators only.
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) away: Option<&'a str>,
}

/// `*** alice is in #lobby; connected for 1h05m; idle for 12s; address 127.0.0.1:4242; away:
/// lunch`, the reply to `/whois`. The away message comes last: it is free text.
pub(crate) fn whois(who: &Whois<'_>) -> Arc<str> {
    let mut line = format!(
        "*** {} is in #{}; connected for {}; idle for {}",
        who.name,
        who.room,
        Elapsed(who.connected),
        Elapsed(who.idle)
    );
    if let Some(addr) = who.addr {
        let _ = write!(line, "; address {addr}");
    }
    if let Some(message) = who.away {
        let _ = write!(line, "; away{}", AwayMessage(message));
    }
    line.push('\n');
    line.into()
}

/// A duration in its two largest units: `42s`, `5m07s`, `2h05m`, `3d04h`.
struct Elapsed(Duration);

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        match s {
            0..60 => write!(f, "{s}s"),
            60..3600 => write!(f, "{}m{:02}s", s / 60, s % 60),
            3600..86400 => write!(f, "{}h{:02}m", s / 3600, s / 60 % 60),
            _ => write!(f, "{}d{:02}h", s / 86400, s / 3600 % 24),
        }
    }
}

/// `*** topic of #rust: all things rust`, or `*** #rust has no topic`: the reply to `/topic`.
pub(crate) fn topic(room: &str, topic: Option<&str>) -> Arc<str> {
    match topic {
        Some(topic) => notice(format_args!("topic of #{room}: {topic}")),
        None => notice(format_args!("#{room} has no topic")),
    }
}

/// `*** alice set the topic of #rust: all things rust`, or `*** alice cleared the topic of
/// #rust`, as the whole room (setter included) sees it.
pub(crate) fn topic_set(name: &str, room: &str, topic: Option<&str>) -> Arc<str> {
    match topic {
        Some(topic) => notice(format_args!("{name} set the topic of #{room}: {topic}")),
        None => notice(format_args!("{name} cleared the topic of #{room}")),
    }
}

// Operators.

/// `*** you are now an operator`, the reply to a right `/oper`.
pub(crate) fn opered() -> Arc<str> {
    notice("you are now an operator")
}

/// `*** kicked bob`, the reply to `/kick`.
pub(crate) fn kick_done(name: &str) -> Arc<str> {
    notice(format_args!("kicked {name}"))
}

/// The reason a kicked client and its room are given: `spam (by alice)`, or `by alice`.
pub(crate) fn kick_reason(operator: &str, reason: Option<&str>) -> String {
    match reason {
        Some(reason) => format!("{reason} (by {operator})"),
        None => format!("by {operator}"),
    }
}

/// `*** banned 192.0.2.7 for 10 minutes` or `*** banned 192.0.2.7 until unbanned`.
pub(crate) fn ban_done(range: &Cidr, duration: Option<Duration>) -> Arc<str> {
    match duration {
        Some(d) => notice(format_args!("banned {range} for {}", Span(d))),
        None => notice(format_args!("banned {range} until unbanned")),
    }
}

/// `*** unbanned 192.0.2.7`.
pub(crate) fn unban_done(range: &Cidr) -> Arc<str> {
    notice(format_args!("unbanned {range}"))
}

/// `*** bans (2): 10.0.0.0/8 (until unbanned: botnet), 192.0.2.7 (9 minutes left)`, the
/// reply to `/bans`; `*** no bans` when there are none.
pub(crate) fn bans(bans: &[Ban]) -> Arc<str> {
    if bans.is_empty() {
        return notice("no bans");
    }
    let listed: Vec<String> = bans
        .iter()
        .map(|ban| {
            let mut item = match ban.remaining {
                Some(left) => format!("{} ({} left", ban.range, Span(left)),
                None => format!("{} (until unbanned", ban.range),
            };
            if !ban.reason.is_empty() {
                let _ = write!(item, ": {}", ban.reason);
            }
            item.push(')');
            item
        })
        .collect();
    notice(format_args!(
        "bans ({}): {}",
        bans.len(),
        listing(&listed, listed.len())
    ))
}

/// A duration as people say it, rounded up: `40 seconds`, `1 minute`, `10 minutes`.
struct Span(Duration);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        let (n, unit) = if secs < 60 {
            (secs, "second")
        } else {
            (secs.div_ceil(60), "minute")
        };
        write!(f, "{n} {unit}{}", if n == 1 { "" } else { "s" })
    }
}

/// `*** muted bob` or `*** unmuted bob`, the reply to `/mute` and `/unmute`.
pub(crate) fn mute_done(name: &str, muted: bool) -> Arc<str> {
    notice(format_args!(
        "{}muted {name}",
        if muted { "" } else { "un" }
    ))
}

/// `*** you were muted` or `*** you were unmuted`, as the client concerned is told.
pub(crate) fn you_were_muted(muted: bool) -> Arc<str> {
    notice(format_args!(
        "you were {}muted",
        if muted { "" } else { "un" }
    ))
}

/// `*** stats: clients 3, accepted 10, …`, the reply to `/stats`.
pub(crate) fn stats(stats: &Stats, bans: usize) -> Arc<str> {
    notice(format_args!(
        "stats: clients {}, accepted {}, refused {}, relayed {}, dropped slow {}, too long {}, \
         flood delayed {}, tls failed {}, events dropped {}, bans {bans}",
        stats.clients,
        stats.connections_accepted,
        stats.connections_refused,
        stats.lines_relayed,
        stats.dropped_slow,
        stats.lines_too_long,
        stats.flood_delayed,
        stats.tls_failed,
        stats.events_dropped,
    ))
}

// A private server's lines before `/pass`.

/// `*** this server is private: send /pass PASSWORD`, the first line a client gets.
pub(crate) fn password_wanted() -> Arc<str> {
    notice("this server is private: send /pass PASSWORD")
}

/// `! send /pass PASSWORD first`, the reply to anything else before `/pass`.
pub(crate) fn password_first() -> Arc<str> {
    error("send /pass PASSWORD first")
}

/// `! disconnected: no password given in time`.
pub(crate) fn password_timeout() -> Arc<str> {
    error("disconnected: no password given in time")
}

/// `! line too long (over 2048 bytes); it was not sent`.
pub(crate) fn line_too_long(max_line: usize) -> Arc<str> {
    error(format_args!(
        "line too long (over {max_line} bytes); it was not sent"
    ))
}

/// A host's notice (`*** text`), sanitized.
pub(crate) fn host_notice(text: &str) -> Arc<str> {
    let mut line = String::from("*** ");
    sanitize_into(&mut line, text);
    line.push('\n');
    line.into()
}

// The last line before the server closes a connection.

/// `! server full, try again later` and the other refusals (but for
/// [`Refusal::NotAllowed`](crate::Refusal::NotAllowed), which is sent nothing).
pub(crate) fn refused(reason: &crate::Refusal) -> String {
    format!("! {reason}\n")
}

/// `! you are banned: REASON`, to a client whose address was banned while it was connected.
pub(crate) fn banned(reason: &str) -> Arc<str> {
    if reason.is_empty() {
        error("you are banned")
    } else {
        error(format_args!("you are banned: {reason}"))
    }
}

/// `*** bye`, the reply to `/quit`.
pub(crate) fn bye() -> Arc<str> {
    notice("bye")
}

/// `*** server is shutting down`, after everything queued.
pub(crate) fn shutting_down() -> Arc<str> {
    notice("server is shutting down")
}

/// `*** you were kicked: REASON`.
pub(crate) fn kicked(reason: &str) -> Arc<str> {
    notice(format_args!("you were kicked: {reason}"))
}

/// `! disconnected: you fell too far behind (queue full)`.
pub(crate) fn too_slow() -> Arc<str> {
    error("disconnected: you fell too far behind (queue full)")
}

/// `! disconnected: your line stayed unfinished too long`.
pub(crate) fn unfinished_line() -> Arc<str> {
    error("disconnected: your line stayed unfinished too long")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(parse("hello"), Ok(Input::Say("hello")));
        assert_eq!(parse("  "), Ok(Input::Empty));
        assert_eq!(parse("//etc/passwd"), Ok(Input::Say("/etc/passwd")));
        assert_eq!(parse("/ME waves"), Ok(Input::Me("waves")));
        assert_eq!(
            parse("/msg bob hi there"),
            Ok(Input::Msg("bob", "hi there"))
        );
        assert_eq!(parse("/quit"), Ok(Input::Quit(None)));
        assert_eq!(
            parse("/quit  gone fishing "),
            Ok(Input::Quit(Some("gone fishing")))
        );
        assert_eq!(parse("/join #rust"), Ok(Input::Join("#rust")));
        assert_eq!(parse("/away"), Ok(Input::Away(None)));
        assert_eq!(
            parse("/AWAY  out to lunch "),
            Ok(Input::Away(Some("out to lunch")))
        );
        assert_eq!(parse("/back"), Ok(Input::Back));
        assert_eq!(parse("/ignore"), Ok(Input::Ignore(None)));
        assert_eq!(parse("/ignore bob"), Ok(Input::Ignore(Some("bob"))));
        assert_eq!(parse("/unignore bob"), Ok(Input::Unignore("bob")));
        assert_eq!(parse("/whois bob"), Ok(Input::Whois("bob")));
        assert_eq!(parse("/timestamps ON"), Ok(Input::Timestamps(true)));
        assert_eq!(parse("/timestamps off"), Ok(Input::Timestamps(false)));
        let error = |line| parse(line).map_err(|e| e.to_string());
        assert_eq!(
            error("/timestamps"),
            Err("usage: /timestamps on|off".into())
        );
        assert_eq!(
            error("/timestamps 1"),
            Err("usage: /timestamps on|off".into())
        );
        assert_eq!(error("/whois"), Err("usage: /whois NAME".into()));
        assert_eq!(error("/unignore"), Err("usage: /unignore NAME".into()));
        assert_eq!(parse("/topic"), Ok(Input::Topic(None)));
        assert_eq!(parse("/topic -"), Ok(Input::Topic(Some(""))));
        assert_eq!(parse("/topic be nice "), Ok(Input::Topic(Some("be nice"))));
        assert_eq!(parse("/oper two words"), Ok(Input::Oper("two words")));
        assert_eq!(parse("/kick bob"), Ok(Input::Kick("bob", None)));
        assert_eq!(
            parse("/kick bob  spamming links"),
            Ok(Input::Kick("bob", Some("spamming links")))
        );
        let ban = |target, duration, reason| Input::Ban {
            target,
            duration,
            reason,
        };
        assert_eq!(parse("/ban bob"), Ok(ban("bob", None, None)));
        assert_eq!(parse("/ban bob spam"), Ok(ban("bob", None, Some("spam"))));
        assert_eq!(
            parse("/ban 192.0.2.7 10 spam, links"),
            Ok(ban(
                "192.0.2.7",
                Some(Duration::from_secs(600)),
                Some("spam, links")
            ))
        );
        assert_eq!(
            parse("/ban bob .5"),
            Ok(ban("bob", Some(Duration::from_secs(30)), None))
        );
        let error = |line| parse(line).map_err(|e| e.to_string());
        assert_eq!(
            error("/ban bob 0 spam"),
            Err("invalid number of minutes \"0\": use a positive number up to 525600".into())
        );
        assert!(error("/ban bob 10x").is_err());
        for word in ["NaN", "inf", "-5", "-0", "+0"] {
            let line = format!("/ban bob {word} spam");
            assert!(parse(&line).is_err(), "{word}");
        }
        assert!(error("/ban bob 600000").is_err());
        assert_eq!(
            error("/ban"),
            Err("usage: /ban NAME|ADDRESS [MINUTES] [REASON]".into())
        );
        assert_eq!(error("/msg bob"), Err("usage: /msg NAME TEXT".into()));
        assert_eq!(error("/nick"), Err("usage: /nick NAME".into()));
        assert_eq!(
            error("/dance now"),
            Err("unknown command /dance; /help lists the commands".into())
        );
    }

    #[test]
    fn spans_round_up_to_the_unit_people_use() {
        let span = |secs: f64| Span(Duration::from_secs_f64(secs)).to_string();
        assert_eq!(span(0.2), "1 second");
        assert_eq!(span(40.0), "40 seconds");
        assert_eq!(span(60.0), "1 minute");
        assert_eq!(span(61.0), "2 minutes");
        assert_eq!(span(600.0), "10 minutes");
    }

    #[test]
    fn who_lists_names_in_natural_order() {
        let names = vec![
            "guest100", "Bob", "guest23", "alice", "guest3", "guest023", "b0b",
        ];
        let away = |name: &str| name == "Bob";
        assert_eq!(
            &*who("lobby", names.into_iter().map(|n| (n, away(n))).collect()),
            "*** users in #lobby (7): alice, b0b, Bob (away), guest3, guest023, guest23, guest100\n"
        );
        let crowd: Vec<String> = (0..=MAX_LISTED).map(|i| format!("g{i}")).collect();
        let reply = who("lobby", crowd.iter().map(|n| (&**n, true)).collect());
        assert!(reply.starts_with("*** users in #lobby (101): g0 (away), g1 (away), "));
        assert!(reply.ends_with(", g99 (away), and 1 more\n"), "{reply}");
    }

    #[test]
    fn times_are_hours_and_minutes_utc_and_stamp_every_line() {
        assert_eq!(Time(0).to_string(), "00:00");
        // 2026-11-28 14:03:59 UTC.
        assert_eq!(Time(1_795_874_639).to_string(), "14:03");
        assert_eq!(
            &*stamped(Time(59 * 60), "*** commands:\n***   /help\n"),
            "00:59 *** commands:\n00:59 ***   /help\n"
        );
        let mut line = String::new();
        push_history(&mut line, Time(23 * 3600 + 59 * 60), "alice: hi\n");
        assert_eq!(line, "[history 23:59] alice: hi\n");
    }

    #[test]
    fn whois_shows_two_units_of_time_and_the_away_message_last() {
        let mut whois_ = Whois {
            name: "alice",
            room: "rust",
            connected: Duration::from_secs(3 * 86400 + 4 * 3600 + 59),
            idle: Duration::from_secs(42),
            addr: None,
            away: None,
        };
        assert_eq!(
            &*whois(&whois_),
            "*** alice is in #rust; connected for 3d04h; idle for 42s\n"
        );
        whois_.connected = Duration::from_secs(2 * 3600 + 5 * 60 + 7);
        whois_.idle = Duration::from_secs(5 * 60 + 7);
        whois_.addr = Some("192.0.2.1:4242".parse().expect("an address"));
        whois_.away = Some("lunch; back at 2");
        assert_eq!(
            &*whois(&whois_),
            "*** alice is in #rust; connected for 2h05m; idle for 5m07s; \
             address 192.0.2.1:4242; away: lunch; back at 2\n"
        );
        whois_.away = Some("");
        assert!(whois(&whois_).ends_with("; address 192.0.2.1:4242; away\n"));
        assert_eq!(&*is_away("alice", ""), "*** alice is away\n");
        assert_eq!(&*is_away("alice", "lunch"), "*** alice is away: lunch\n");
    }

    #[test]
    fn ignore_listing_is_ordered_and_says_nobody_when_empty() {
        assert_eq!(&*ignoring(Vec::new()), "*** you ignore nobody\n");
        assert_eq!(
            &*ignoring(vec!["guest10", "bob", "guest9"]),
            "*** you ignore (3): bob, guest9, guest10\n"
        );
        assert_eq!(
            CommandError::IgnoringTooMany.to_string(),
            "you already ignore 100 users; /unignore one first"
        );
    }

    #[test]
    fn name_rule_is_spelled_from_the_limit() {
        assert_eq!(
            CommandError::InvalidName("a b".into()).to_string(),
            "invalid name \"a b\": use 1-16 letters, digits, _ or -"
        );
        assert!(help()
            .contains("/nick NAME          change your name (1-16 letters, digits, _ or -)\n"));
    }

    #[test]
    fn the_protocol_document_gives_help_exactly() {
        let document = include_str!("../docs/PROTOCOL.md");
        assert!(
            document.contains(&*help()),
            "docs/PROTOCOL.md lacks:\n{}",
            help()
        );
    }

    #[test]
    fn help_names_only_commands_that_exist() {
        for line in help().lines().skip(1) {
            let usage = line.trim_start_matches("*** ").trim_start();
            let word = usage.split(' ').next().unwrap_or_default();
            if word != "//TEXT" {
                let line_with_argument = format!("{word} on");
                let parsed = parse(&line_with_argument);
                assert!(
                    !matches!(parsed, Err(CommandError::UnknownCommand(_))),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn checks_names() {
        assert_eq!(check_name("alice_B-2"), Ok(()));
        assert_eq!(check_name("abcdefghijklmnop"), Ok(()));
        assert_eq!(check_name("abcdefghijklmnopq"), Err(NameError::Invalid));
        assert_eq!(check_name(""), Err(NameError::Invalid));
        assert_eq!(check_name("a b"), Err(NameError::Invalid));
        assert_eq!(check_name("émile"), Err(NameError::Invalid));
        assert_eq!(check_name("Server"), Err(NameError::Reserved));
        assert_eq!(room_key("#Rust"), Ok("rust".into()));
        assert_eq!(room_key("#"), Err(NameError::Invalid));
        assert_eq!(room_key("a room"), Err(NameError::Invalid));
    }
}
