//! RESP2, the Redis wire format: commands out, replies in. Pure code, no sockets.
//!
//! A command is an array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`). A reply is one of
//! five kinds, parsed from a byte buffer that may hold only part of it: [`parse`] says "not yet"
//! rather than blocking, so the connection can read more and try again.

use std::fmt;

/// One command, encoded as it goes on the wire.
///
/// # Examples
///
/// ```
/// use smolchat::cluster::Command;
///
/// let cmd = Command::new("SET").arg("k").arg(b"v\r\n").arg(30.to_string());
/// assert_eq!(cmd.encode(), b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$2\r\n30\r\n");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    /// The encoded arguments; the `*N` header is added by [`Command::encode`].
    body: Vec<u8>,
    args: usize,
}

impl Command {
    /// Starts a command with its name.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(smolchat::cluster::Command::new("PING").encode(), b"*1\r\n$4\r\nPING\r\n");
    /// ```
    pub fn new(name: &str) -> Command {
        Command {
            body: Vec::new(),
            args: 0,
        }
        .arg(name)
    }

    /// Appends one argument; any bytes are allowed, including `\r\n`.
    ///
    /// # Examples
    ///
    /// ```
    /// let cmd = smolchat::cluster::Command::new("ECHO").arg("hi");
    /// assert_eq!(cmd.encode(), b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n");
    /// ```
    pub fn arg(mut self, arg: impl AsRef<[u8]>) -> Command {
        let arg = arg.as_ref();
        self.body.push(b'$');
        self.body
            .extend_from_slice(arg.len().to_string().as_bytes());
        self.body.extend_from_slice(b"\r\n");
        self.body.extend_from_slice(arg);
        self.body.extend_from_slice(b"\r\n");
        self.args += 1;
        self
    }

    /// The command's bytes as sent to Redis.
    ///
    /// # Examples
    ///
    /// ```
    /// let cmd = smolchat::cluster::Command::new("GET").arg("k");
    /// assert!(cmd.encode().starts_with(b"*2\r\n"));
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let header = format!("*{}\r\n", self.args);
        let mut out = Vec::with_capacity(header.len() + self.body.len());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

impl fmt::Debug for Command {
    /// Shows the command name only: arguments may hold a password (`AUTH`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self
            .body
            .split(|&b| b == b'\n')
            .nth(1)
            .map(|n| String::from_utf8_lossy(n.strip_suffix(b"\r").unwrap_or(n)).into_owned());
        f.debug_struct("Command")
            .field("name", &name.unwrap_or_default())
            .field("args", &self.args)
            .finish()
    }
}

/// A reply from Redis.
///
/// # Examples
///
/// ```
/// use smolchat::cluster::{parse, Reply};
///
/// let (reply, used) = parse(b":42\r\n", 1024)?.expect("a whole reply");
/// assert_eq!((reply, used), (Reply::Integer(42), 5));
/// # Ok::<(), smolchat::cluster::RespError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`: a status.
    Simple(String),
    /// `-ERR ...`: the command failed; the connection is still fine.
    Error(String),
    /// `:1`: a number.
    Integer(i64),
    /// `$3\r\nabc`: a binary-safe string.
    Bulk(Vec<u8>),
    /// `*2\r\n...`: a list of replies.
    Array(Vec<Reply>),
    /// `$-1` or `*-1`: no value (a missing key, an `NX` that did not set).
    Nil,
}

impl Reply {
    /// The text of a bulk or simple string reply, if it is UTF-8.
    ///
    /// # Examples
    ///
    /// ```
    /// use smolchat::cluster::Reply;
    ///
    /// assert_eq!(Reply::Bulk(b"hi".to_vec()).text(), Some("hi"));
    /// assert_eq!(Reply::Integer(1).text(), None);
    /// ```
    pub fn text(&self) -> Option<&str> {
        match self {
            Reply::Bulk(bytes) => std::str::from_utf8(bytes).ok(),
            Reply::Simple(text) => Some(text),
            _ => None,
        }
    }
}

/// Why bytes from Redis are not a valid reply; the connection cannot continue after one.
///
/// # Examples
///
/// ```
/// use smolchat::cluster::{parse, RespError};
///
/// assert_eq!(parse(b"?\r\n", 1024), Err(RespError::Malformed));
/// assert_eq!(parse(b"$5000\r\n", 1024), Err(RespError::TooLarge));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespError {
    /// Not RESP2.
    Malformed,
    /// The reply would be larger than the limit.
    TooLarge,
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RespError::Malformed => "malformed reply from redis",
            RespError::TooLarge => "reply from redis over the size limit",
        })
    }
}

impl std::error::Error for RespError {}

/// Deepest nesting accepted. smolchat's replies nest at most twice (a pub/sub message is an
/// array of strings); the bound keeps a hostile or broken peer from recursing the stack away.
const MAX_DEPTH: usize = 8;

/// Parses one reply from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only the beginning of a reply, or `Ok(Some((reply,
/// bytes used)))`. A reply that is or claims to be over `max` bytes is an error at once, before
/// it is read, so no buffer ever grows past about `max`.
///
/// # Errors
///
/// [`RespError::Malformed`] for bytes that are not RESP2, [`RespError::TooLarge`] past `max`.
///
/// # Examples
///
/// ```
/// use smolchat::cluster::{parse, Reply};
///
/// assert_eq!(parse(b"$5\r\nhel", 1024)?, None);
/// let (reply, _) = parse(b"*2\r\n$5\r\nhello\r\n$-1\r\n", 1024)?.expect("whole");
/// assert_eq!(reply, Reply::Array(vec![Reply::Bulk(b"hello".to_vec()), Reply::Nil]));
/// # Ok::<(), smolchat::cluster::RespError>(())
/// ```
pub fn parse(buf: &[u8], max: usize) -> Result<Option<(Reply, usize)>, RespError> {
    let mut at = 0;
    match parse_at(buf, &mut at, max, 0)? {
        Some(reply) if at > max => {
            drop(reply);
            Err(RespError::TooLarge)
        }
        Some(reply) => Ok(Some((reply, at))),
        None if buf.len() > max => Err(RespError::TooLarge),
        None => Ok(None),
    }
}

fn parse_at(
    buf: &[u8],
    at: &mut usize,
    max: usize,
    depth: usize,
) -> Result<Option<Reply>, RespError> {
    if depth > MAX_DEPTH {
        return Err(RespError::Malformed);
    }
    let Some(line) = line_at(buf, *at, max)? else {
        return Ok(None);
    };
    let (&kind, rest) = line.split_first().ok_or(RespError::Malformed)?;
    let text = || {
        std::str::from_utf8(rest)
            .map(str::to_owned)
            .map_err(|_| RespError::Malformed)
    };
    let after_line = *at + line.len() + 2;
    let reply = match kind {
        b'+' => Reply::Simple(text()?),
        b'-' => Reply::Error(text()?),
        b':' => Reply::Integer(number(rest)?),
        b'$' => {
            let len = number(rest)?;
            if len == -1 {
                Reply::Nil
            } else {
                let len = usize::try_from(len).map_err(|_| RespError::Malformed)?;
                if len > max {
                    return Err(RespError::TooLarge);
                }
                let end = after_line + len;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(RespError::Malformed);
                }
                *at = end + 2;
                return Ok(Some(Reply::Bulk(buf[after_line..end].to_vec())));
            }
        }
        b'*' => {
            let len = number(rest)?;
            if len == -1 {
                Reply::Nil
            } else {
                let len = usize::try_from(len).map_err(|_| RespError::Malformed)?;
                // Each element takes at least 3 bytes (`:0\r\n` is 4), so a count past this
                // cannot fit in `max`; refusing early avoids allocating for a lie.
                if len > max / 3 {
                    return Err(RespError::TooLarge);
                }
                let mut items = Vec::with_capacity(len.min(1024));
                *at = after_line;
                for _ in 0..len {
                    match parse_at(buf, at, max, depth + 1)? {
                        Some(item) => items.push(item),
                        None => return Ok(None),
                    }
                }
                return Ok(Some(Reply::Array(items)));
            }
        }
        _ => return Err(RespError::Malformed),
    };
    *at = after_line;
    Ok(Some(reply))
}

/// The line starting at `at`, without its `\r\n`, or `None` if it has not all arrived.
fn line_at(buf: &[u8], at: usize, max: usize) -> Result<Option<&[u8]>, RespError> {
    let rest = buf.get(at..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\n') {
        Some(0) => Err(RespError::Malformed),
        Some(end) if rest[end - 1] == b'\r' => Ok(Some(&rest[..end - 1])),
        Some(_) => Err(RespError::Malformed),
        None if rest.len() > max => Err(RespError::TooLarge),
        None => Ok(None),
    }
}

fn number(digits: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or(RespError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Reply {
        let (reply, used) = parse(bytes, 1 << 20).expect("valid").expect("whole");
        assert_eq!(used, bytes.len(), "consumed all of {bytes:?}");
        reply
    }

    #[test]
    fn every_kind_of_reply() {
        assert_eq!(whole(b"+OK\r\n"), Reply::Simple("OK".into()));
        assert_eq!(whole(b"-ERR no\r\n"), Reply::Error("ERR no".into()));
        assert_eq!(whole(b":-7\r\n"), Reply::Integer(-7));
        assert_eq!(whole(b"$0\r\n\r\n"), Reply::Bulk(Vec::new()));
        assert_eq!(whole(b"$4\r\na\r\nb\r\n"), Reply::Bulk(b"a\r\nb".to_vec()));
        assert_eq!(whole(b"$-1\r\n"), Reply::Nil);
        assert_eq!(whole(b"*-1\r\n"), Reply::Nil);
        assert_eq!(whole(b"*0\r\n"), Reply::Array(Vec::new()));
        assert_eq!(
            whole(b"*2\r\n*1\r\n:1\r\n+x\r\n"),
            Reply::Array(vec![
                Reply::Array(vec![Reply::Integer(1)]),
                Reply::Simple("x".into())
            ])
        );
    }

    #[test]
    fn every_prefix_of_a_reply_is_incomplete_not_an_error() {
        let bytes = b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$5\r\nhello\r\n";
        for end in 0..bytes.len() {
            assert_eq!(
                parse(&bytes[..end], 1024),
                Ok(None),
                "prefix of {end} bytes"
            );
        }
        assert!(parse(bytes, 1024).expect("valid").is_some());
    }

    #[test]
    fn two_replies_in_one_buffer_are_taken_one_at_a_time() {
        let bytes = b":1\r\n:2\r\n";
        let (first, used) = parse(bytes, 64).expect("valid").expect("whole");
        assert_eq!((first, used), (Reply::Integer(1), 4));
        let (second, _) = parse(&bytes[used..], 64).expect("valid").expect("whole");
        assert_eq!(second, Reply::Integer(2));
    }

    #[test]
    fn oversized_replies_are_refused_before_they_arrive() {
        assert_eq!(parse(b"$1025\r\n", 1024), Err(RespError::TooLarge));
        assert_eq!(parse(b"*1000\r\n", 1024), Err(RespError::TooLarge));
        // An endless line without its ending: refused once past the limit.
        assert_eq!(parse(&[b'+'; 1100], 1024), Err(RespError::TooLarge));
        // Many small elements adding up past the limit.
        let mut many = b"*300\r\n".to_vec();
        many.extend(std::iter::repeat_n(&b":1\r\n"[..], 300).flatten());
        assert_eq!(parse(&many, 1024), Err(RespError::TooLarge));
    }

    #[test]
    fn garbage_is_malformed() {
        for bytes in [
            &b"hello\r\n"[..],
            b":x\r\n",
            b"$3\r\nabcde\r\n",
            b"+OK\n",
            b"\r\n",
            b"$-2\r\n",
        ] {
            assert_eq!(parse(bytes, 1024), Err(RespError::Malformed), "{bytes:?}");
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2) + ":1\r\n";
        assert_eq!(parse(deep.as_bytes(), 1024), Err(RespError::Malformed));
    }

    #[test]
    fn commands_debug_without_their_arguments() {
        let auth = Command::new("AUTH").arg("alice").arg("s3cret");
        let shown = format!("{auth:?}");
        assert!(
            shown.contains("AUTH") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
