//! One client's connection: a reader that turns its lines into chat, and a writer that drains
//! its outbox to the socket.
//!
//! The reader ends the connection (end of input, `/quit`, an error, or being removed from the
//! hub); the writer then flushes what is queued. A writer that stops because the client stops
//! reading ends it too. A writer whose socket fails otherwise leaves the reader to finish the
//! lines it had accepted, so nothing a client sent before closing is lost. Every connection
//! ends with a graceful close, so the last lines written arrive.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::{self, FutureExt};
use smol::{Async, Timer};

use crate::auth;
use crate::config::{Draft, Verdict};
use crate::event::{LeaveReason, Refusal};
use crate::framing::{Frame, Framer};
use crate::hub::{Hub, Id, OperError, Refused, LOBBY};
use crate::outbox::{cost, outbox, Inbox, Item, Limits, RETRY};
use crate::protocol::{self, CommandError, Input};
use crate::sanitize::sanitize;
use crate::Config;

/// Bytes read per system call. Read into a stack buffer, so an idle client holds none.
const READ_CHUNK: usize = 4096;

/// Lines a reader relays before letting other tasks run. Keeps a sender from filling its
/// recipients' queues faster than their writers get a turn to drain them.
const LINES_PER_TURN: u32 = 64;

/// Most queued lines handed to one `writev`; well under every system's `IOV_MAX`.
const MAX_BATCH: usize = 256;

/// How long, and how much, a closing connection reads and drops of what the client still
/// sends (see [`close_gracefully`]).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// How the reader ended, and the last line for the client, if any.
type Ending = (LeaveReason, Option<Arc<str>>);

/// Serves one admitted client until it leaves, is removed, or its socket fails.
///
/// The socket is the client's TCP stream, or for a TLS client one end of the Unix socket pair
/// whose other end the TLS pump serves; `addr` is the client's address either way.
pub(crate) async fn serve<S>(hub: &Hub, stream: Async<S>, addr: SocketAddr)
where
    for<'s> &'s S: Read + Write,
    S: AsFd,
{
    let Some(framer) = auth::authenticate(hub, &stream, addr).await else {
        return close_gracefully(&stream).await;
    };
    let (outbox, inbox) = outbox(Limits::from(&hub.config));
    // In a cluster, a guest name unique across it (None otherwise).
    let named = hub.cluster_guest().await;
    let joined = {
        let _lobby = hub.enter_ahead(LOBBY).await;
        hub.join_as(addr, outbox, named)
    };
    let id = match joined {
        Ok(id) => id,
        Err(refusal) => return refuse(&stream, &refusal).await,
    };
    let mut registration = Registration {
        hub,
        id,
        left: false,
    };
    let mut writer = pin!(write_loop(&stream, inbox, &hub.config));
    let reader = async { Ok(read_loop(&stream, hub, id, framer).await) };
    match reader.or(async { Err(writer.as_mut().await) }).await {
        Ok((reason, farewell)) => {
            registration.leave(reason, farewell);
            // The outbox is closed now: the writer flushes what is queued, then ends.
            let _ = writer.await;
        }
        // The hub closed the outbox (kicked, too slow, shutting down) and the writer flushed
        // it: whatever the client sends now is not acted on.
        Err(Ok(())) => registration.leave(LeaveReason::Closed, None),
        Err(Err(reason)) => registration.leave(reason, None),
    }
    close_gracefully(&stream).await;
}

/// Tells a client it cannot be served, and closes so that it gets the line.
pub(crate) async fn refuse<S>(stream: &Async<S>, reason: &Refusal)
where
    for<'s> &'s S: Read + Write,
    S: AsFd,
{
    // A new socket's buffer is empty: the line goes out at once or not at all.
    let _ = (&mut stream.get_ref()).write(protocol::refused(reason).as_bytes());
    close_gracefully(stream).await;
}

/// A client's place in the hub, given up however its connection ends: normally, by a panic
/// while serving it, or by its task being dropped.
struct Registration<'a> {
    hub: &'a Hub,
    id: Id,
    left: bool,
}

impl Registration<'_> {
    fn leave(&mut self, reason: LeaveReason, farewell: Option<Arc<str>>) {
        if !std::mem::replace(&mut self.left, true) {
            self.hub.leave(self.id, reason, farewell);
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.leave(LeaveReason::Internal, None);
    }
}

async fn read_loop<S>(stream: &Async<S>, hub: &Hub, id: Id, mut framer: Framer) -> Ending
where
    for<'s> &'s S: Read + Write,
    S: AsFd,
{
    let config = &hub.config;
    let mut flood = Flood::new(config);
    let mut partial_since = None;
    let mut handled = 0_u32;
    let mut read_more = false;
    // Bytes read since the last line: input that never ends a line (an endless line, telnet
    // commands) must cost flood tokens too, or it is read as fast as a client can send it.
    let mut unframed = 0;
    let mut ended = false;
    loop {
        if let Some(answer) = framer.take_replies() {
            if let Some(ending) = answer_telnet(hub, id, answer.into()).await {
                return ending;
            }
        }
        // At end of input, an unfinished last line is a line like any other.
        while let Some(frame) = if ended {
            framer.finish()
        } else {
            framer.next_frame()
        } {
            // Every frame counts, an overlong one too: each costs the server a reply.
            flood.wait(hub).await;
            partial_since = None;
            unframed = 0;
            let ending = match frame {
                Frame::Line(line) => handle_line(hub, id, line).await,
                Frame::TooLong => {
                    hub.counters.too_long.fetch_add(1, Ordering::Relaxed);
                    send(hub, id, &protocol::line_too_long(config.max_line)).await
                }
            };
            if let Some(ending) = ending {
                return ending;
            }
            handled += 1;
            if handled.is_multiple_of(LINES_PER_TURN) {
                future::yield_now().await;
            }
        }
        if ended {
            // The client shut its side (or closed): it still gets what is queued, and a last line.
            return (LeaveReason::Closed, Some(protocol::bye()));
        }
        if !framer.has_partial_line() {
            partial_since = None;
        }
        while unframed >= config.max_line {
            flood.wait(hub).await;
            unframed -= config.max_line;
        }
        // Let the writers run between chunks, so a fast sender cannot starve them; after the
        // chunk's lines went out, not before, so they leave without waiting for a turn.
        if std::mem::take(&mut read_more) {
            future::yield_now().await;
        }
        match read_some(stream.get_ref(), &mut framer) {
            Ok(0) => ended = true,
            Ok(n) => {
                read_more = true;
                unframed += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if framer.has_partial_line() {
                    let deadline = *partial_since.get_or_insert_with(Instant::now)
                        + config.partial_line_timeout;
                    match Box::pin(stream.readable().or(timeout_at(deadline))).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                            let farewell = protocol::unfinished_line();
                            return (LeaveReason::PartialLineTimeout, Some(farewell));
                        }
                        Err(e) => return (io_reason(e), None),
                    }
                } else if let Err(e) = stream.readable().await {
                    return (io_reason(e), None);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (io_reason(e), None),
        }
    }
}

fn read_some<S>(mut stream: &S, framer: &mut Framer) -> io::Result<usize>
where
    for<'s> &'s S: Read,
{
    let mut buf = [0; READ_CHUNK];
    let n = stream.read(&mut buf)?;
    framer.push(&buf[..n]);
    Ok(n)
}

/// Acts on one line, waiting while a recipient's queue is full; returns how the connection
/// ends if the line ends it.
async fn handle_line(hub: &Hub, id: Id, line: &[u8]) -> Option<Ending> {
    let raw = String::from_utf8_lossy(line);
    let text = sanitize(&raw);
    let input = match protocol::parse(&text) {
        Ok(Input::Empty) => return None,
        Ok(Input::Quit(reason)) => {
            let reason = LeaveReason::Quit(reason.map(Arc::from));
            return Some((reason, Some(protocol::bye())));
        }
        Ok(Input::Oper(password)) => {
            // Answered once, outside the retry loop below: each wrong password counts once.
            let (wait, answer) = match hub.oper(id, password) {
                Ok(wait) => (Some(wait), protocol::opered()),
                Err(OperError::NoOperators) => (None, protocol::error(CommandError::NoOperators)),
                Err(OperError::Wrong(wait)) => {
                    (Some(wait), protocol::error(CommandError::WrongPassword))
                }
            };
            if let Some(wait) = wait {
                // Not reading meanwhile: the next guess waits its turn in the socket.
                Box::pin(Timer::after(wait)).await;
            }
            return send(hub, id, &answer).await;
        }
        Ok(input) => input,
        Err(e) => return send(hub, id, &protocol::error(e)).await,
    };
    // The host's filter sees each line once, however long its delivery then waits.
    let filtered = match input {
        Input::Say(text) | Input::Me(text) => filter(hub, id, None, text),
        Input::Msg(to, text) => filter(hub, id, Some(to), text),
        _ => Ok(Cow::Borrowed("")),
    };
    let text = match filtered {
        Ok(text) => text,
        Err(e) => return send(hub, id, &protocol::error(e)).await,
    };
    // A new name is claimed across the cluster, if any, once: not again after a wait below.
    if let Input::Nick(name) = input {
        if let Err(e) = hub.claim_name(id, name).await {
            return send(hub, id, &protocol::error(e)).await;
        }
    }
    // And a room subscribed to across it, before the client enters.
    let _room = match input {
        Input::Join(room) => hub.enter_ahead(room).await,
        _ => None,
    };
    loop {
        let done = match input {
            Input::Say(_) => hub.say(id, &text, false),
            Input::Me(_) => hub.say(id, &text, true),
            Input::Msg(to, _) => hub.private_everywhere(id, to, &text).await,
            Input::Nick(name) => hub.rename(id, name),
            Input::Join(room) => hub.change_room(id, room),
            Input::Who => hub.who_everywhere(id).await,
            Input::Rooms => hub.rooms_everywhere(id).await,
            Input::Help => hub.reply(id, &protocol::help()),
            Input::Whois(name) => hub.whois(id, name),
            Input::Away(message) => hub.set_away(id, message),
            Input::Back => hub.back(id),
            Input::Ignore(Some(name)) => hub.ignore(id, name),
            Input::Ignore(None) => hub.list_ignored(id),
            Input::Unignore(name) => hub.unignore(id, name),
            Input::Timestamps(on) => hub.set_timestamps(id, on),
            Input::Topic(text) => hub.topic(id, text),
            Input::Pass(_) => Err(CommandError::NoPasswordNeeded.into()),
            Input::Kick(name, reason) => hub.kick_by(id, name, reason),
            Input::Ban {
                target,
                duration,
                reason,
            } => hub.ban_by(id, target, duration, reason),
            Input::Unban(target) => hub.unban_by(id, target),
            Input::Bans => hub.list_bans(id),
            Input::Mute(name) => hub.mute_by(id, name, true),
            Input::Unmute(name) => hub.mute_by(id, name, false),
            Input::Stats => hub.stats_for(id),
            Input::Empty | Input::Quit(_) | Input::Oper(_) => Ok(()),
        };
        match done {
            Ok(()) => return None,
            Err(Refused::Held(held)) => held.wait(hub).await,
            Err(Refused::Command(e)) => return send(hub, id, &protocol::error(e)).await,
            Err(Refused::Gone) => return Some(gone()),
        }
    }
}

/// Queues the answers to a telnet client's negotiation: bytes, not text, for this client only,
/// so like its replies they wait while its own queue is full.
async fn answer_telnet(hub: &Hub, id: Id, answer: Item) -> Option<Ending> {
    deliver(hub, || hub.answer(id, &answer)).await
}

/// Sends the client a line of its own (a reply or an error), waiting while its queue is full.
async fn send(hub: &Hub, id: Id, line: &Arc<str>) -> Option<Ending> {
    deliver(hub, || hub.reply(id, line)).await
}

/// Does `act` (queueing something for the client itself), waiting whenever its queue is full.
async fn deliver(hub: &Hub, act: impl Fn() -> Result<(), Refused>) -> Option<Ending> {
    loop {
        match act() {
            Ok(()) | Err(Refused::Command(_)) => return None,
            Err(Refused::Held(held)) => held.wait(hub).await,
            Err(Refused::Gone) => return Some(gone()),
        }
    }
}

/// The ending of a client the hub removed already: it has its last line queued.
fn gone() -> Ending {
    (LeaveReason::Closed, None)
}

/// Runs the host's filter, if any.
fn filter<'t>(
    hub: &Hub,
    id: Id,
    to: Option<&str>,
    text: &'t str,
) -> Result<Cow<'t, str>, CommandError> {
    let Some(filter) = &hub.config.filter else {
        return Ok(Cow::Borrowed(text));
    };
    // Gone already (kicked meanwhile): the hub refuses whatever it is asked to relay.
    let Some((from, room)) = hub.identity(id) else {
        return Ok(Cow::Borrowed(text));
    };
    let draft = Draft {
        from: &from,
        room: &room,
        to,
        text,
    };
    match filter(&draft) {
        Verdict::Relay => Ok(Cow::Borrowed(text)),
        Verdict::Rewrite(new) => Ok(Cow::Owned(sanitize(&new).into_owned())),
        Verdict::Reject(reason) => Err(CommandError::Rejected(sanitize(&reason).into())),
    }
}

/// Drains the outbox to the socket, many lines per system call, until the outbox is closed
/// and empty. `Err` when the socket stops taking data for `write_timeout`: the client is not
/// reading. A socket that fails otherwise (the client reset the connection) stops the writing
/// but not the draining: what is queued for a client that can no longer receive it is dropped,
/// so it never looks congested while its reader finishes the lines it had already accepted.
async fn write_loop<S>(
    stream: &Async<S>,
    mut inbox: Inbox,
    config: &Config,
) -> Result<(), LeaveReason>
where
    for<'s> &'s S: Write,
{
    // Set once the outbox is closed: everything left must be written by then.
    let mut flush_deadline = None;
    let mut broken = false;
    while let Some(items) = inbox.recv().await {
        if flush_deadline.is_none() && inbox.is_closed() {
            flush_deadline = Some(Instant::now() + config.write_timeout);
        }
        if !broken {
            match write_all(
                stream,
                &mut inbox,
                &items,
                config.write_timeout,
                flush_deadline,
            )
            .await
            {
                Ok(()) => continue,
                Err(reason @ LeaveReason::WriteTimeout) => return Err(reason),
                Err(_) => broken = true,
            }
        }
        inbox.written(items.len(), items.iter().map(cost).sum());
        // No yield here: writers must keep up with the readers that feed them (measured: a
        // yield per batch let queues overflow under a flood with flood control off).
    }
    Ok(())
}

/// Writes every item, waiting for the socket when it is full: at most `timeout` without
/// progress, and never past `deadline`. Items count as written one system call at a time, so
/// paced senders resume as soon as the queue is down to half, not when the whole batch is out.
async fn write_all<S>(
    stream: &Async<S>,
    inbox: &mut Inbox,
    items: &VecDeque<Item>,
    timeout: Duration,
    deadline: Option<Instant>,
) -> Result<(), LeaveReason>
where
    for<'s> &'s S: Write,
{
    let (mut index, mut offset) = (0, 0);
    while index < items.len() {
        match write_some(stream.get_ref(), items.range(index..), offset) {
            Ok(0) => return Err(io_reason(io::ErrorKind::WriteZero.into())),
            Ok(mut written) => {
                inbox.wrote(written);
                let (mut lines, mut bytes) = (0, 0);
                while written > 0 {
                    let left = items[index].len() - offset;
                    if written < left {
                        offset += written;
                        break;
                    }
                    written -= left;
                    lines += 1;
                    bytes += cost(&items[index]);
                    index += 1;
                    offset = 0;
                }
                inbox.written(lines, bytes);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                inbox.blocked();
                let wait_until = Instant::now() + timeout;
                let wait_until = deadline.map_or(wait_until, |d| d.min(wait_until));
                // A congested client's socket is tried again every `RETRY` (see there).
                let retry = inbox.is_congested().then(|| Instant::now() + RETRY);
                let wake = retry.map_or(wait_until, |retry| retry.min(wait_until));
                match Box::pin(stream.writable().or(timeout_at(wake))).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        if Instant::now() >= wait_until {
                            return Err(LeaveReason::WriteTimeout);
                        }
                    }
                    Err(e) => return Err(io_reason(e)),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_reason(e)),
        }
    }
    Ok(())
}

fn write_some<'a, S>(
    mut stream: &S,
    items: impl Iterator<Item = &'a Item>,
    offset: usize,
) -> io::Result<usize>
where
    for<'s> &'s S: Write,
{
    let mut slices = [IoSlice::new(&[]); MAX_BATCH];
    let mut count = 0;
    for (slice, item) in slices.iter_mut().zip(items) {
        *slice = IoSlice::new(&item[if count == 0 { offset } else { 0 }..]);
        count += 1;
    }
    stream.write_vectored(&slices[..count])
}

/// Ends a connection so that what was written arrives: the write side is shut (the client
/// gets its last lines, then end of file), and what the client still sends is read and
/// dropped, briefly and boundedly, because closing a socket with unread input makes the
/// kernel reset the connection, which can destroy the last lines before the client reads them.
pub(crate) async fn close_gracefully<S>(stream: &Async<S>)
where
    for<'s> &'s S: Read + Write,
    S: AsFd,
{
    let _ = rustix::net::shutdown(stream.get_ref(), rustix::net::Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match drain_some(stream.get_ref()) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Box::pin(stream.readable().or(timeout_at(deadline)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn drain_some<S>(mut stream: &S) -> io::Result<usize>
where
    for<'s> &'s S: Read,
{
    let mut buf = [0; READ_CHUNK];
    stream.read(&mut buf)
}

async fn timeout_at(deadline: Instant) -> io::Result<()> {
    Timer::at(deadline).await;
    Err(io::ErrorKind::TimedOut.into())
}

/// A socket error, as the client's room is told. (A failed keepalive probe is `TimedOut` too,
/// so only the writer, which knows it was waiting, calls a timeout a write timeout.)
fn io_reason(e: io::Error) -> LeaveReason {
    LeaveReason::Error(e.kind().to_string().into())
}

/// Flood control: a token bucket of `flood_burst` lines refilled at `flood_rate` per second.
#[derive(Debug)]
struct Flood {
    /// Lines that may be read now; negative while the client owes time.
    tokens: f64,
    burst: f64,
    rate: f64,
    last: Instant,
}

impl Flood {
    fn new(config: &Config) -> Flood {
        let burst = f64::from(config.flood_burst.max(1));
        Flood {
            tokens: burst,
            burst,
            rate: config.flood_rate,
            last: Instant::now(),
        }
    }

    /// Takes a token for one frame, waiting first if the bucket is empty. Not reading meanwhile
    /// is the point: TCP makes the flooder wait, and nothing it sent is lost.
    async fn wait(&mut self, hub: &Hub) {
        if let Some(delay) = self.delay() {
            hub.counters.flood_delayed.fetch_add(1, Ordering::Relaxed);
            // Boxed, like the other timed waits: allocated only when needed instead of making
            // every idle connection's task bigger.
            Box::pin(Timer::after(delay)).await;
        }
    }

    /// Takes a token for one line; returns how long to wait first, if the bucket is empty.
    fn delay(&mut self) -> Option<Duration> {
        if self.rate <= 0.0 {
            return None;
        }
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        self.tokens -= 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}
