//! Passwords: a private server's `/pass` phase, before a client joins, and the comparison and
//! slowdown that `/oper` uses too.
//!
//! Until it sends the right `/pass`, a client is admitted (it holds a connection slot) but not
//! joined: the hub does not know it, so it receives nobody's lines, nobody sees it arrive and it
//! is listed nowhere. Everything it sends meanwhile is answered here and goes no further.

use std::io;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_lite::future::{self, FutureExt};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, Timer};

use crate::framing::{Frame, Framer};
use crate::hub::Hub;
use crate::protocol::{self, CommandError, Input};
use crate::sanitize::sanitize;

/// Bytes read per system call before `/pass`: a password line is short.
const READ_CHUNK: usize = 1024;

/// The wait after many wrong passwords, as a multiple of the first one.
const MAX_PENALTY_FACTOR: u32 = 32;

/// Runs a private server's `/pass` phase. Returns the framer, holding whatever the client sent
/// after its password, for the normal read loop to go on with; `None` when the connection is
/// to end (it quit, closed, failed or ran out of time). On an open server it returns at once.
pub(crate) async fn authenticate<S>(
    hub: &Hub,
    stream: &Async<S>,
    addr: SocketAddr,
) -> Option<Framer>
where
    for<'s> &'s S: Read + Write,
{
    let mut framer = Framer::new(hub.config.max_line);
    let Some(password) = &hub.config.password else {
        return Some(framer);
    };
    let deadline = Instant::now() + hub.config.auth_timeout;
    let phase = async {
        send(stream, &protocol::password_wanted()).await?;
        loop {
            while let Some(frame) = framer.next_frame() {
                let Frame::Line(line) = frame else {
                    send(stream, &protocol::line_too_long(hub.config.max_line)).await?;
                    continue;
                };
                let raw = String::from_utf8_lossy(line);
                let reply = match protocol::parse(&sanitize(&raw)) {
                    Ok(Input::Pass(given)) => {
                        let right = same_secret(given, password);
                        // Not reading meanwhile: the next guess waits its turn in the socket.
                        Timer::after(hub.password_answer(addr, right)).await;
                        if right {
                            return io::Result::Ok(true);
                        }
                        protocol::error(CommandError::WrongPassword)
                    }
                    Ok(Input::Quit(_)) => {
                        send(stream, &protocol::bye()).await?;
                        return Ok(false);
                    }
                    Ok(Input::Empty) => continue,
                    _ => protocol::password_first(),
                };
                send(stream, &reply).await?;
            }
            let mut buf = [0; READ_CHUNK];
            let n = (&*stream).read(&mut buf).await?;
            if n == 0 {
                return Ok(false);
            }
            framer.push(&buf[..n]);
            // Like the read loop: a client that keeps sending must not starve the others.
            future::yield_now().await;
        }
    };
    let out_of_time = async {
        Timer::at(deadline).await;
        Err(io::ErrorKind::TimedOut.into())
    };
    let shutting_down = async {
        hub.stopped().await;
        Err(io::ErrorKind::Interrupted.into())
    };
    match phase.or(out_of_time).or(shutting_down).await {
        Ok(true) => Some(framer),
        Ok(false) => None,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            let _ = io::Write::write(&mut stream.get_ref(), protocol::shutting_down().as_bytes());
            None
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            // Only if the socket takes it at once: the time is up.
            let _ = io::Write::write(
                &mut stream.get_ref(),
                protocol::password_timeout().as_bytes(),
            );
            None
        }
        Err(_) => None,
    }
}

async fn send<S>(stream: &Async<S>, line: &str) -> io::Result<()>
where
    for<'s> &'s S: Write,
{
    (&*stream).write_all(line.as_bytes()).await
}

/// Compares a password given by a client with the secret in time that does not depend on where
/// they differ, so timing answers cannot reveal the secret a byte at a time. (Only the longer
/// length shows.)
pub(crate) fn same_secret(given: &str, secret: &str) -> bool {
    let (given, secret) = (given.as_bytes(), secret.as_bytes());
    let mut diff = u8::from(given.len() != secret.len());
    for i in 0..given.len().max(secret.len()) {
        let a = given.get(i).copied().unwrap_or(0);
        let b = secret.get(i).copied().unwrap_or(0);
        // Opaque to the optimizer, so it cannot stop at the first difference.
        diff = std::hint::black_box(diff | (a ^ b));
    }
    diff == 0
}

/// How long the `failures`-th wrong password in a row is held up: `base`, doubling with each
/// failure up to [`MAX_PENALTY_FACTOR`] times `base`.
pub(crate) fn penalty(base: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(MAX_PENALTY_FACTOR.ilog2());
    base.saturating_mul(1 << doublings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(same_secret("hunter2", "hunter2"));
        assert!(same_secret("", ""));
        assert!(!same_secret("hunter2", "hunter3"));
        assert!(!same_secret("hunter", "hunter2"));
        assert!(!same_secret("hunter2", "hunter"));
        assert!(!same_secret("", "x"));
        // A shorter guess padded with what the padding would be must still fail.
        assert!(!same_secret("ab", "ab\0"));
    }

    #[test]
    fn penalties_double_up_to_a_cap() {
        let base = Duration::from_secs(2);
        let waits: Vec<u64> = (1..=8).map(|n| penalty(base, n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 64, 64]);
        assert_eq!(penalty(base, u32::MAX), Duration::from_secs(64));
    }
}
