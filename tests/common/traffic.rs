//! Blocking clients for traffic tests, one thread each: connections from a chosen loopback
//! address with a small receive buffer, members that read at a set byte rate and check every
//! relayed line, senders of stamped lines, and a server process's memory and CPU time.
//!
//! Relayed lines carry `SEQ STAMP` (a per-sender sequence number and microseconds since a shared
//! epoch), so a reader can tell a lost, repeated or reordered line and measure its latency.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use rustix::net::sockopt::{self, Timeout};
use rustix::net::{AddressFamily, SocketType};

use super::TIMEOUT;

/// The usual source address.
pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Connects to `server` from `source` (any 127.0.0.N is loopback on Linux), with reads and writes
/// that time out after [`TIMEOUT`]. A `receive_buffer` set before connecting also caps the
/// window the client advertises, so a client that reads slowly is felt by the server within
/// kilobytes instead of the megabytes loopback autotuning would buffer.
pub fn connect_from(
    source: Ipv4Addr,
    server: SocketAddr,
    receive_buffer: Option<usize>,
) -> io::Result<TcpStream> {
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)?;
    if let Some(bytes) = receive_buffer {
        sockopt::set_socket_recv_buffer_size(&fd, bytes)?;
    }
    // Linux bounds a blocking connect by the send timeout.
    sockopt::set_socket_timeout(&fd, Timeout::Send, Some(TIMEOUT))?;
    rustix::net::bind(&fd, &SocketAddrV4::new(source, 0))?;
    rustix::net::connect(&fd, &server)?;
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

/// A socket read at no more than `rate` bytes per second (unlimited when `None`).
pub struct Throttled {
    stream: TcpStream,
    rate: Option<f64>,
    /// When the rate stops applying, if ever.
    until: Option<Instant>,
    since: Instant,
    taken: f64,
}

impl Read for Throttled {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let over = self.until.is_some_and(|until| Instant::now() >= until);
        let Some(rate) = self.rate.filter(|_| !over) else {
            return self.stream.read(buf);
        };
        // Sleeps at most one byte's worth of time per call: bounded for any rate.
        let allowed = loop {
            let allowed = self.since.elapsed().as_secs_f64() * rate - self.taken;
            if allowed >= 1.0 {
                break allowed;
            }
            std::thread::sleep(Duration::from_secs_f64((1.0 - allowed) / rate));
        };
        let len = buf.len().min(allowed as usize);
        let n = self.stream.read(&mut buf[..len])?;
        self.taken += n as f64;
        Ok(n)
    }
}

/// What a member saw while it read.
#[derive(Debug, Default)]
pub struct Seen {
    /// Relayed lines received, from every sender.
    pub lines: u64,
    /// Longest time between two relayed lines.
    pub longest_gap: Duration,
    /// Longest time from a line's stamp to its arrival.
    pub worst_latency: Duration,
    /// Who the room was told left as too slow, and when.
    pub left_too_slow: Vec<(String, Instant)>,
}

/// A chat client on a blocking socket.
pub struct Member {
    pub name: String,
    reader: BufReader<Throttled>,
    /// The start of a line whose read timed out, kept for the next read.
    partial: Vec<u8>,
    writer: TcpStream,
}

impl Member {
    /// Connects from 127.0.0.1 and reads the welcome.
    pub fn connect(server: SocketAddr) -> io::Result<Member> {
        Member::connect_with(LOCALHOST, server, None)
    }

    /// Connects from `source` with an optional receive buffer (see [`connect_from`]) and reads
    /// the welcome up to the line that names the client.
    pub fn connect_with(
        source: Ipv4Addr,
        server: SocketAddr,
        receive_buffer: Option<usize>,
    ) -> io::Result<Member> {
        let stream = connect_from(source, server, receive_buffer)?;
        let mut member = Member {
            name: String::new(),
            writer: stream.try_clone()?,
            partial: Vec::new(),
            reader: BufReader::with_capacity(
                64 * 1024,
                Throttled {
                    stream,
                    rate: None,
                    until: None,
                    since: Instant::now(),
                    taken: 0.0,
                },
            ),
        };
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            let line = member.line()?;
            if let Some(rest) = line.strip_prefix("*** you are ") {
                member.name = rest.split(' ').next().unwrap_or_default().to_string();
                return Ok(member);
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "no welcome"))
    }

    /// From now on reads at most `bytes_per_sec`, through a buffer of `buffer` bytes.
    pub fn throttle(self, bytes_per_sec: f64, buffer: usize) -> Member {
        let mut member = Member {
            name: self.name,
            reader: BufReader::with_capacity(buffer, self.reader.into_inner()),
            writer: self.writer,
            partial: self.partial,
        };
        member.set_rate(Some(bytes_per_sec));
        member
    }

    /// Reads at `bytes_per_sec` until `until`, then as fast as the socket gives.
    pub fn throttle_until(mut self, bytes_per_sec: f64, buffer: usize, until: Instant) -> Member {
        self.reader.get_mut().until = Some(until);
        self.throttle(bytes_per_sec, buffer)
    }

    /// Changes the read rate (`None`: as fast as the socket gives).
    pub fn set_rate(&mut self, bytes_per_sec: Option<f64>) {
        let inner = self.reader.get_mut();
        inner.rate = bytes_per_sec;
        inner.since = Instant::now();
        inner.taken = 0.0;
    }

    /// Sets how long one read may wait.
    pub fn read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.writer.set_read_timeout(Some(timeout))
    }

    /// A second handle on the socket, for sending from another thread.
    pub fn sender(&self) -> io::Result<TcpStream> {
        self.writer.try_clone()
    }

    pub fn send(&mut self, line: &str) -> io::Result<()> {
        self.send_raw(format!("{line}\n").as_bytes())
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// Reads the next line, without its `\n`; end of stream is `UnexpectedEof`. After a read
    /// timed out, the next call continues the same line.
    pub fn line(&mut self) -> io::Result<String> {
        if self.reader.read_until(b'\n', &mut self.partial)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut line = std::mem::take(&mut self.partial);
        if line.pop() != Some(b'\n') {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        String::from_utf8(line).map_err(io::Error::other)
    }

    /// Reads whatever is there, up to `buf.len()` bytes.
    pub fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }

    /// Reads everything until the server closes the connection, within `deadline`.
    pub fn rest(&mut self, deadline: Instant) -> io::Result<String> {
        let mut rest = Vec::new();
        let mut chunk = [0; 16 * 1024];
        loop {
            if Instant::now() > deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no end of stream"));
            }
            match self.reader.read(&mut chunk) {
                Ok(0) => return Ok(String::from_utf8_lossy(&rest).into_owned()),
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(String::from_utf8_lossy(&rest).into_owned())
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads until `per_sender` stamped lines from each of `senders` arrived, checking each
    /// sender's lines come complete and in order, then until the room was told `wait_for_left`
    /// left as too slow (if given). Join notices are skipped; any other line, a disconnection
    /// or passing `deadline` is an error that says how far it got.
    pub fn receive_all(
        &mut self,
        senders: &[String],
        per_sender: u64,
        epoch: Instant,
        wait_for_left: Option<&str>,
        deadline: Instant,
    ) -> io::Result<Seen> {
        let mut next: HashMap<&str, u64> = senders
            .iter()
            .filter(|s| **s != self.name)
            .map(|s| (s.as_str(), 0))
            .collect();
        let expected = per_sender * next.len() as u64;
        let mut seen = Seen::default();
        let mut last_line = None;
        let mut line = Vec::new();
        let me = self.name.clone();
        let fail = |seen: &Seen, what: String| {
            io::Error::other(format!(
                "{me}: {what} after {} of {expected} lines",
                seen.lines
            ))
        };
        loop {
            let waiting_for_left = wait_for_left
                .is_some_and(|name| !seen.left_too_slow.iter().any(|(left, _)| left == name));
            if seen.lines == expected && !waiting_for_left {
                return Ok(seen);
            }
            if Instant::now() > deadline {
                return Err(fail(&seen, "deadline passed".into()));
            }
            line.clear();
            let read = self.reader.read_until(b'\n', &mut line);
            let now = Instant::now();
            match read {
                Ok(0) => return Err(fail(&seen, "disconnected".into())),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(fail(&seen, "nothing arrived for the read timeout".into()))
                }
                Err(e) => return Err(fail(&seen, format!("read failed ({e})"))),
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches('\n');
            if let Some((from, body)) = text.split_once(": ") {
                if let Some(next) = next.get_mut(from) {
                    let mut fields = body.split(' ');
                    let seq = fields.next().and_then(|s| s.parse::<u64>().ok());
                    let stamp = fields.next().and_then(|s| s.parse::<u64>().ok());
                    if seq != Some(*next) {
                        return Err(fail(
                            &seen,
                            format!("line {next} from {from} lost or out of order: got {seq:?}"),
                        ));
                    }
                    *next += 1;
                    seen.lines += 1;
                    if let Some(stamp) = stamp {
                        let sent = epoch + Duration::from_micros(stamp);
                        seen.worst_latency =
                            seen.worst_latency.max(now.saturating_duration_since(sent));
                    }
                    if let Some(last) = last_line.replace(now) {
                        seen.longest_gap = seen.longest_gap.max(now - last);
                    }
                    continue;
                }
            }
            if let Some(name) = text
                .strip_prefix("*** ")
                .and_then(|t| t.strip_suffix(" left (too slow)"))
            {
                seen.left_too_slow.push((name.to_string(), now));
            } else if !(text.starts_with("*** ") && text.ends_with(" joined #lobby")) {
                return Err(fail(&seen, format!("unexpected line {:?}", truncate(text))));
            }
        }
    }
}

fn truncate(text: &str) -> &str {
    &text[..text.len().min(120)]
}

/// A line of exactly `len` bytes (with its `\n`): `SEQ STAMP xxx…`, stamped `at` after `epoch`.
pub fn stamped_line(seq: u64, at: Duration, len: usize) -> String {
    let head = format!("{seq:08} {:012} ", at.as_micros());
    let pad = len.saturating_sub(head.len() + 1).max(1);
    format!("{head}{}\n", "x".repeat(pad))
}

/// Sends `count` stamped lines of `len` bytes as fast as the socket takes them, stamped when
/// written, in writes of about 64 KiB.
pub fn send_flat_out(
    stream: &mut TcpStream,
    count: u64,
    len: usize,
    epoch: Instant,
) -> io::Result<()> {
    let per_write = (64 * 1024 / len).max(1) as u64;
    let mut seq = 0;
    while seq < count {
        let at = epoch.elapsed();
        let end = (seq + per_write).min(count);
        let chunk: String = (seq..end).map(|s| stamped_line(s, at, len)).collect();
        stream.write_all(chunk.as_bytes())?;
        seq = end;
    }
    Ok(())
}

/// Sends `count` stamped lines of `len` bytes at `per_sec` lines a second, each stamped with
/// the time it was due, so time spent held back shows up as latency at the reader.
pub fn send_steadily(
    stream: &mut TcpStream,
    count: u64,
    len: usize,
    per_sec: f64,
    epoch: Instant,
) -> io::Result<()> {
    let start = epoch.elapsed();
    let mut seq = 0;
    while seq < count {
        let due = |s: u64| start + Duration::from_secs_f64(s as f64 / per_sec);
        let now = epoch.elapsed();
        let mut chunk = String::new();
        while seq < count && due(seq) <= now {
            chunk.push_str(&stamped_line(seq, due(seq), len));
            seq += 1;
        }
        if !chunk.is_empty() {
            stream.write_all(chunk.as_bytes())?;
        }
        if seq < count {
            std::thread::sleep(due(seq).saturating_sub(epoch.elapsed()));
        }
    }
    Ok(())
}

/// Most bytes the kernel holds unsent for one TCP socket (the maximum of `tcp_wmem`; 4 MiB by
/// default). Loopback's 64 KiB segments make it grow a server's send buffer to that at once, so
/// the server feels a client that stops reading only after this much went its way (unless the
/// server sets a smaller send buffer itself): traffic in tests about slow readers is sized by it.
pub fn kernel_send_buffer() -> io::Result<usize> {
    let wmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")?;
    wmem.split_whitespace()
        .nth(2)
        .and_then(|max| max.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad tcp_wmem {wmem:?}")))
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`…).
pub fn status_kib(pid: u32, field: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no {field} in /proc/{pid}/status")))
}

/// CPU time (user + system, all threads) a process used so far.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        return Err(io::Error::other(format!("bad /proc/{pid}/stat")));
    };
    // USER_HZ, which /proc reports in, is 100 on every Linux this runs on.
    Ok(Duration::from_millis((user + system) * 10))
}
