//! One client's connection: a reader that turns its lines into chat, and a writer that drains
//! its outbox to the socket. Whichever ends first ends the connection.

use std::borrow::Cow;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::{self, FutureExt};
use smol::{Async, Timer};

use crate::config::{Draft, Verdict};
use crate::event::LeaveReason;
use crate::framing::{Frame, Framer};
use crate::hub::{Hub, Id, Session};
use crate::outbox::{outbox, Inbox};
use crate::protocol::{self, error, notice, relay, Input};
use crate::sanitize::sanitize;
use crate::Config;

/// Bytes read per system call. Read into a stack buffer, so an idle client holds none.
const READ_CHUNK: usize = 4096;

/// Lines a reader relays before letting other tasks run. Keeps a sender from filling its
/// recipients' queues faster than their writers get a turn to drain them.
const LINES_PER_TURN: u32 = 64;

/// Most queued lines handed to one `writev`; well under every system's `IOV_MAX`.
const MAX_BATCH: usize = 256;

/// How the reader ended, and the last line for the client, if any.
type Ending = (LeaveReason, Option<Arc<str>>);

/// Serves one admitted client until it leaves, is removed, or its socket fails.
///
/// The socket is the client's TCP stream, or for a TLS client one end of the Unix socket pair
/// whose other end the TLS pump serves; `addr` is the client's address either way.
pub(crate) async fn serve<S>(hub: &Hub, stream: Async<S>, addr: SocketAddr)
where
    for<'s> &'s S: Read + Write,
{
    let (outbox, inbox) = outbox(hub.config.queue_lines, hub.config.queue_bytes);
    let mut session = match hub.join(addr, outbox) {
        Ok(session) => session,
        Err(refusal) => return refuse(stream.get_ref(), &refusal.to_string()),
    };
    let mut member = Member {
        hub,
        id: session.id,
        left: false,
    };
    let mut writer = pin!(write_loop(&stream, inbox, &hub.config));
    let reader = async { Ok(read_loop(&stream, hub, &mut session).await) };
    match reader.or(async { Err(writer.as_mut().await) }).await {
        Ok((reason, farewell)) => {
            member.leave(reason, farewell);
            // The outbox is closed now: the writer flushes what is queued, then ends.
            writer.await;
        }
        Err(reason) => member.leave(reason, None),
    }
}

/// Tells a client it cannot be served, if its socket takes the line at once, and closes.
pub(crate) fn refuse<S>(mut stream: &S, reason: &str)
where
    for<'s> &'s S: Write,
{
    let _ = stream.write(format!("! {reason}\n").as_bytes());
}

/// Makes sure a client leaves the hub however its connection ends: normally, by a panic while
/// serving it, or by its task being dropped.
struct Member<'a> {
    hub: &'a Hub,
    id: Id,
    left: bool,
}

impl Member<'_> {
    fn leave(&mut self, reason: LeaveReason, farewell: Option<Arc<str>>) {
        if !std::mem::replace(&mut self.left, true) {
            self.hub.leave(self.id, reason, farewell);
        }
    }
}

impl Drop for Member<'_> {
    fn drop(&mut self) {
        self.leave(LeaveReason::Internal, None);
    }
}

async fn read_loop<S>(stream: &Async<S>, hub: &Hub, session: &mut Session) -> Ending
where
    for<'s> &'s S: Read,
{
    let config = &hub.config;
    let mut framer = Framer::new(config.max_line);
    let mut flood = Flood::new(config);
    let mut partial_since = None;
    let mut handled = 0_u32;
    let mut read_more = false;
    loop {
        while let Some(frame) = framer.next_frame() {
            let Frame::Line(line) = frame else {
                hub.counters.too_long.fetch_add(1, Ordering::Relaxed);
                let reply = error(format_args!(
                    "line too long (over {} bytes); it was not sent",
                    config.max_line
                ));
                hub.reply(session.id, &reply);
                continue;
            };
            if let Some(delay) = flood.delay() {
                hub.counters.flood_delayed.fetch_add(1, Ordering::Relaxed);
                // Not reading meanwhile is the point: TCP makes the flooder wait, nothing is lost.
                // Boxed, like the other timed waits: allocated only when needed instead of
                // making every idle connection's task bigger.
                Box::pin(Timer::after(delay)).await;
            }
            if let Some(ending) = handle_line(hub, session, line) {
                return ending;
            }
            handled += 1;
            if handled.is_multiple_of(LINES_PER_TURN) {
                future::yield_now().await;
            }
        }
        if !framer.has_partial_line() {
            partial_since = None;
        }
        // Let the writers run between chunks, so a fast sender cannot starve them; after the
        // chunk's lines went out, not before, so they leave without waiting for a turn.
        if std::mem::take(&mut read_more) {
            future::yield_now().await;
        }
        match read_some(stream.get_ref(), &mut framer) {
            Ok(0) => return (LeaveReason::Closed, None),
            Ok(_) => read_more = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if framer.has_partial_line() {
                    let deadline = *partial_since.get_or_insert_with(Instant::now)
                        + config.partial_line_timeout;
                    match Box::pin(stream.readable().or(timeout_at(deadline))).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                            let farewell =
                                error("disconnected: your line stayed unfinished too long");
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

/// Acts on one line; returns how the connection ends if the line ends it.
fn handle_line(hub: &Hub, session: &mut Session, line: &[u8]) -> Option<Ending> {
    let raw = String::from_utf8_lossy(line);
    let text = sanitize(&raw);
    let result = match protocol::parse(&text) {
        Ok(Input::Empty) => Ok(()),
        Ok(Input::Say(text)) => say(hub, session, text, false),
        Ok(Input::Me(text)) => say(hub, session, text, true),
        Ok(Input::Msg(to, text)) => {
            filter(hub, session, Some(to), text).and_then(|text| hub.private(session, to, &text))
        }
        Ok(Input::Nick(name)) => hub.rename(session, name),
        Ok(Input::Join(room)) => hub.change_room(session, room),
        Ok(Input::Who) => {
            hub.who(session);
            Ok(())
        }
        Ok(Input::Rooms) => {
            hub.list_rooms(session);
            Ok(())
        }
        Ok(Input::Help) => {
            hub.reply(session.id, &protocol::HELP.into());
            Ok(())
        }
        Ok(Input::Quit(reason)) => {
            return Some((
                LeaveReason::Quit(reason.map(String::from)),
                Some(notice("bye")),
            ))
        }
        Err(message) => Err(message),
    };
    if let Err(message) = result {
        hub.reply(session.id, &error(message));
    }
    None
}

fn say(hub: &Hub, session: &Session, text: &str, action: bool) -> Result<(), String> {
    let text = filter(hub, session, None, text)?;
    let line = if action {
        relay(&["* ", &session.name, " "], &text)
    } else {
        relay(&[&session.name, ": "], &text)
    };
    hub.say(session, line, &text, action);
    Ok(())
}

/// Runs the host's filter, if any. The error is the text of the error line for the sender.
fn filter<'t>(
    hub: &Hub,
    session: &Session,
    to: Option<&str>,
    text: &'t str,
) -> Result<Cow<'t, str>, String> {
    let Some(filter) = &hub.config.filter else {
        return Ok(Cow::Borrowed(text));
    };
    let draft = Draft {
        from: &session.name,
        room: &session.room,
        to,
        text,
    };
    match filter(&draft) {
        Verdict::Relay => Ok(Cow::Borrowed(text)),
        Verdict::Rewrite(new) => Ok(Cow::Owned(sanitize(&new).into_owned())),
        Verdict::Reject(reason) => Err(format!("message not sent: {}", sanitize(&reason))),
    }
}

/// Drains the outbox to the socket, many lines per system call, until the outbox is closed
/// and empty or the socket fails.
async fn write_loop<S>(stream: &Async<S>, inbox: Inbox, config: &Config) -> LeaveReason
where
    for<'s> &'s S: Write,
{
    // Set once the outbox is closed: everything left must be written by then.
    let mut flush_deadline = None;
    loop {
        let Ok(first) = inbox.rx.recv().await else {
            return LeaveReason::Closed;
        };
        // Allocated per wake-up, so an idle client holds no batch buffer.
        let mut batch = Vec::with_capacity((inbox.rx.len() + 1).min(MAX_BATCH));
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match inbox.rx.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        if flush_deadline.is_none() && inbox.rx.is_closed() {
            flush_deadline = Some(Instant::now() + config.write_timeout);
        }
        if let Err(reason) = write_all(stream, &batch, config.write_timeout, flush_deadline).await {
            return reason;
        }
        inbox.written(&batch);
        // No yield here: writers must keep up with the readers that feed them (measured: a
        // yield per batch let queues overflow under a flood with flood control off).
    }
}

/// Writes every line, waiting for the socket when it is full: at most `timeout` without
/// progress, and never past `deadline`.
async fn write_all<S>(
    stream: &Async<S>,
    lines: &[Arc<str>],
    timeout: Duration,
    deadline: Option<Instant>,
) -> Result<(), LeaveReason>
where
    for<'s> &'s S: Write,
{
    let (mut index, mut offset) = (0, 0);
    while index < lines.len() {
        match write_some(stream.get_ref(), &lines[index..], offset) {
            Ok(0) => return Err(io_reason(io::ErrorKind::WriteZero.into())),
            Ok(mut written) => {
                while written > 0 {
                    let left = lines[index].len() - offset;
                    if written < left {
                        offset += written;
                        break;
                    }
                    written -= left;
                    index += 1;
                    offset = 0;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let wait_until = Instant::now() + timeout;
                let wait_until = deadline.map_or(wait_until, |d| d.min(wait_until));
                let writable = Box::pin(stream.writable().or(timeout_at(wait_until)));
                writable.await.map_err(|e| match e.kind() {
                    io::ErrorKind::TimedOut => LeaveReason::WriteTimeout,
                    _ => io_reason(e),
                })?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_reason(e)),
        }
    }
    Ok(())
}

fn write_some<S>(mut stream: &S, lines: &[Arc<str>], offset: usize) -> io::Result<usize>
where
    for<'s> &'s S: Write,
{
    let mut slices = [IoSlice::new(&[]); MAX_BATCH];
    let count = lines.len().min(MAX_BATCH);
    for (slice, line) in slices.iter_mut().zip(lines).take(count) {
        *slice = IoSlice::new(line.as_bytes());
    }
    slices[0] = IoSlice::new(&lines[0].as_bytes()[offset..]);
    stream.write_vectored(&slices[..count])
}

async fn timeout_at(deadline: Instant) -> io::Result<()> {
    Timer::at(deadline).await;
    Err(io::ErrorKind::TimedOut.into())
}

/// A socket error, as the client's room is told. (A failed keepalive probe is `TimedOut` too,
/// so only the writer, which knows it was waiting, calls a timeout a write timeout.)
fn io_reason(e: io::Error) -> LeaveReason {
    LeaveReason::Error(e.kind().to_string())
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
