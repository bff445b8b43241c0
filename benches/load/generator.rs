//! The load generator's clients: connecting them, sending, reading and counting what arrives.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, Timer};

use crate::counting::{message, parse, Lines, Tally};
use crate::{Bench, Target, RUN_DEADLINE};

impl Bench {
    /// Connects `n` clients concurrently and waits until each has read its welcome. Client `i`
    /// reads until it has `expected(i)` messages, or has seen `ends(i)` senders end (see
    /// [`sender_end`]).
    pub async fn connect_and_join(
        &self,
        addr: SocketAddr,
        n: usize,
        buffer: usize,
        expected: impl Fn(usize) -> u64,
        ends: impl Fn(usize) -> usize,
    ) -> Vec<Receiver> {
        let (joined_tx, joined) = async_channel::unbounded();
        let mut receivers = Vec::with_capacity(n);
        let connecting: Vec<_> = (0..n)
            .map(|_| {
                self.ex
                    .spawn(async move { Async::<TcpStream>::connect(addr).await })
            })
            .collect();
        for (i, connect) in connecting.into_iter().enumerate() {
            let stream = Arc::new(connect.await.expect("connect to the server"));
            let _ = stream.get_ref().set_nodelay(true);
            let (ready_tx, ready) = async_channel::bounded(1);
            let reader = Reader {
                stream: stream.clone(),
                expected: expected(i),
                ends: ends(i),
                buffer,
                joined: joined_tx.clone(),
                ready: ready_tx,
            };
            let task = self.ex.spawn(reader.run());
            receivers.push(Receiver {
                stream,
                task,
                ready,
            });
        }
        drop(joined_tx);
        for _ in 0..n {
            let _ = joined.recv().await;
        }
        receivers
    }

    /// Makes sure every receiver has read everything sent before the measurement starts: a marker
    /// line broadcast after all joins arrives after all their notices.
    pub async fn everyone_ready(&self, target: Target, addr: SocketAddr, receivers: &[Receiver]) {
        // The control client sends the marker, then reads (and discards) until all have seen it.
        let mut ctl = None;
        if target != Target::Ceiling {
            let mut stream = Async::<TcpStream>::connect(addr)
                .await
                .expect("control client");
            stream.write_all(b"READY\n").await.expect("marker");
            ctl = Some(self.ex.spawn(async move {
                let mut sink = [0; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            }));
        }
        for receiver in receivers {
            let _ = receiver.ready.recv().await;
        }
        drop(ctl);
    }

    /// Clients that stop reading, each sent distinct private lines until it is dropped: the
    pub async fn stalled_client(&self, addr: SocketAddr) -> (Async<TcpStream>, String) {
        // A small receive buffer, set before connecting so the window starts small: the kernel
        // then absorbs little of what the server sends, and its queue must take the rest.
        let family = if addr.is_ipv4() {
            rustix::net::AddressFamily::INET
        } else {
            rustix::net::AddressFamily::INET6
        };
        let socket =
            rustix::net::socket(family, rustix::net::SocketType::STREAM, None).expect("socket");
        rustix::net::sockopt::set_socket_recv_buffer_size(&socket, 4096).expect("SO_RCVBUF");
        rustix::net::connect(&socket, &addr).expect("stalled client");
        let mut stream = Async::new(TcpStream::from(socket)).expect("non-blocking");
        let mut welcome = Vec::new();
        let mut byte = [0];
        while !welcome.ends_with(b"users here: ") {
            stream.read_exact(&mut byte).await.expect("welcome");
            welcome.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&welcome);
        let name = text
            .rsplit("*** you are ")
            .next()
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_default();
        (stream, name.to_string())
    }
}

/// Reads what the server sent a stalled client, to see whether it was disconnected as too slow.
pub async fn was_dropped_as_slow(mut stream: Async<TcpStream>) -> bool {
    let mut rest = Vec::new();
    let read = future::or(stream.read_to_end(&mut rest), async {
        Timer::after(Duration::from_secs(2)).await;
        Ok(0)
    });
    let _ = read.await;
    rest.windows(19).any(|w| w == b"fell too far behind")
}

pub async fn send_messages(stream: &Async<TcpStream>, sender: usize, m: usize, base: Instant) {
    let mut seq = 0;
    while seq < m {
        let batch: Vec<u8> = (seq..(seq + 256).min(m))
            .flat_map(|i| message(sender, i, base))
            .collect();
        if (&*stream).write_all(&batch).await.is_err() {
            return;
        }
        seq = (seq + 256).min(m);
    }
}

/// Sends `m` lines of `pad` bytes of padding and a message each, as fast as the socket takes
/// them, noting in `held` when each write went through; then `END`.
pub async fn send_padded(
    stream: &Async<TcpStream>,
    sender: usize,
    m: usize,
    pad: usize,
    base: Instant,
    held: &HeldBack,
) {
    let mut seq = 0;
    while seq < m {
        let batch: Vec<u8> = (seq..(seq + 256).min(m))
            .flat_map(|i| [vec![b'p'; pad], message(sender, i, base)].concat())
            .collect();
        let mut written = 0;
        while written < batch.len() {
            match (&*stream).write(&batch[written..]).await {
                Ok(n) if n > 0 => written += n,
                _ => return held.finish(),
            }
            held.wrote();
        }
        seq = (seq + 256).min(m);
    }
    held.finish();
    // Tells the readers that nothing more comes from this sender.
    let _ = (&*stream).write_all(b"END\n").await;
}

/// How long a sender was held back: the longest time between two of its writes going through
/// (or between its last write and now, while it still has lines to send).
#[derive(Debug)]
pub struct HeldBack {
    /// The last successful write, the longest gap so far, and whether the sender is done.
    state: std::sync::Mutex<(Instant, Duration, bool)>,
}

impl HeldBack {
    pub fn starting_now() -> HeldBack {
        HeldBack {
            state: std::sync::Mutex::new((Instant::now(), Duration::ZERO, false)),
        }
    }

    fn wrote(&self) {
        if let Ok(mut state) = self.state.lock() {
            let now = Instant::now();
            state.1 = state.1.max(now - state.0);
            state.0 = now;
        }
    }

    fn finish(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.2 = true;
        }
    }

    /// The longest gap, counting a sender still blocked as blocked until now.
    pub fn longest(&self) -> Duration {
        self.state.lock().map_or(Duration::ZERO, |state| {
            let (last, longest, done) = *state;
            if done {
                longest
            } else {
                longest.max(last.elapsed())
            }
        })
    }
}

/// A sender's name when it ends the scenario: it renames itself with [`SENDER_NAME`] first.
pub const SENDER_NAME: &str = "sender-";

/// Which sender a line says has ended: it sent its last line (`sender-N: END`), or left.
/// Nothing more of its lines can follow, as each sender's lines arrive in order.
fn sender_end(line: &[u8]) -> Option<usize> {
    let line = std::str::from_utf8(line).ok()?;
    let name = match line.strip_prefix("*** ") {
        Some(notice) => notice.split_once(" left (")?.0,
        None => line.strip_suffix(": END")?,
    };
    name.strip_prefix(SENDER_NAME)?.parse().ok()
}

pub struct Receiver {
    pub stream: Arc<Async<TcpStream>>,
    task: smol::Task<Tally>,
    ready: async_channel::Receiver<()>,
}

pub struct Reader {
    stream: Arc<Async<TcpStream>>,
    expected: u64,
    /// Senders whose end it waits for, if not zero.
    ends: usize,
    buffer: usize,
    joined: async_channel::Sender<()>,
    ready: async_channel::Sender<()>,
}

impl Reader {
    pub async fn run(self) -> Tally {
        let mut tally = Tally::new(self.expected);
        let (mut joined, mut ready) = (false, false);
        let mut buf = vec![0; self.buffer];
        let mut lines = Lines::default();
        // One timer for the whole run: registering a fresh one per read would cost more than the read.
        let mut deadline = Timer::at(Instant::now() + RUN_DEADLINE);
        let mut drained = true;
        let mut ended: Vec<usize> = Vec::new();
        let finished = |tally: &Tally, ended: &Vec<usize>| {
            tally.payloads >= tally.expected || (self.ends > 0 && ended.len() >= self.ends)
        };
        while !(ready && finished(&tally, &ended)) {
            // After a short read the socket is most likely empty: wait for readiness instead of
            // paying for a read that fails with WouldBlock.
            if drained {
                let ready = future::or(self.stream.readable(), async {
                    (&mut deadline).await;
                    Err(std::io::ErrorKind::TimedOut.into())
                });
                if ready.await.is_err() {
                    break;
                }
            }
            let n = match self.stream.get_ref().read(&mut buf) {
                Ok(0) => {
                    tally.disconnected = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    drained = true;
                    continue;
                }
                Err(_) => {
                    tally.disconnected = true;
                    break;
                }
            };
            drained = n < buf.len();
            lines.feed(&buf[..n], |line| {
                if let Some((sender, seq, _)) = parse(line) {
                    tally.count(sender, seq);
                } else if !joined && line.starts_with(b"*** you are ") {
                    joined = true;
                    let _ = self.joined.try_send(());
                } else if !ready && line.ends_with(b": READY") {
                    ready = true;
                    let _ = self.ready.try_send(());
                } else if let Some(sender) = sender_end(line).filter(|s| !ended.contains(s)) {
                    ended.push(sender);
                }
            });
            if finished(&tally, &ended) && tally.done_at.is_none() && ready {
                tally.done_at = Some(Instant::now());
            }
        }
        if finished(&tally, &ended) && tally.done_at.is_none() {
            tally.done_at = Some(Instant::now());
        }
        tally
    }
}

pub async fn collect(receivers: Vec<Receiver>) -> (Vec<Tally>, Vec<Arc<Async<TcpStream>>>) {
    let mut tallies = Vec::with_capacity(receivers.len());
    let mut streams = Vec::with_capacity(receivers.len());
    for receiver in receivers {
        tallies.push(receiver.task.await);
        // Keep every connection open until all have finished, so no one leaves mid-run.
        streams.push(receiver.stream);
    }
    (tallies, streams)
}
