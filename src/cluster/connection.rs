//! One TCP connection to Redis: log in, send commands, read replies with a bounded buffer.

use std::fmt;
use std::io;
use std::time::Duration;

use futures_lite::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smol::Timer;

use super::resp::{self, Command, Reply};
use super::url::RedisUrl;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// A logged-in connection to Redis that speaks RESP2.
///
/// Each reply is limited to `max_reply` bytes: a larger one is a protocol error and the
/// connection must be dropped, so a broken or hostile server cannot make us buffer without end.
///
/// # Examples
///
/// ```no_run
/// use smolchat::cluster::{Command, Connection, Reply};
///
/// # smol::block_on(async {
/// let url = "redis://127.0.0.1:6379/0".parse().expect("a valid URL");
/// let mut redis = Connection::open(&url, 1 << 20).await?;
/// assert_eq!(redis.call(&Command::new("PING")).await?, Reply::Simple("PONG".into()));
/// # std::io::Result::Ok(()) });
/// ```
pub struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet parsed; never much longer than `max_reply + READ_CHUNK`.
    buf: Vec<u8>,
    /// Where each read lands before it is appended to `buf`.
    chunk: Box<[u8]>,
    max_reply: usize,
}

/// How long connecting and logging in may take before Redis counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Connection {
    /// Connects, then sends `AUTH` and `SELECT` as the URL says.
    ///
    /// # Errors
    ///
    /// Connection failures, a refused login or database (`PermissionDenied`, with Redis's
    /// message, which never holds the password), or no answer within 5 s (`TimedOut`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # smol::block_on(async {
    /// let url = "redis://chat:s3cret@127.0.0.1:6379/2".parse().expect("a valid URL");
    /// let _redis = smolchat::cluster::Connection::open(&url, 1 << 20).await?;
    /// # std::io::Result::Ok(()) });
    /// ```
    pub async fn open(url: &RedisUrl, max_reply: usize) -> io::Result<Connection> {
        async {
            let stream = TcpStream::connect((url.host.as_str(), url.port)).await?;
            stream.set_nodelay(true)?;
            let mut conn = Connection {
                stream,
                buf: Vec::new(),
                chunk: vec![0; READ_CHUNK].into_boxed_slice(),
                max_reply,
            };
            if url.user.is_some() || url.password.is_some() {
                let mut auth = Command::new("AUTH");
                if let Some(user) = &url.user {
                    auth = auth.arg(user);
                }
                // A user without a password is an ACL `nopass` user: any password will do.
                let password = url.password.as_ref().map_or("", |p| p.expose());
                conn.login(auth.arg(password), "AUTH").await?;
            }
            if url.db != 0 {
                let select = Command::new("SELECT").arg(url.db.to_string());
                conn.login(select, "SELECT").await?;
            }
            Ok(conn)
        }
        .or(async {
            Timer::after(CONNECT_TIMEOUT).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "redis did not answer within 5 s",
            ))
        })
        .await
    }

    async fn login(&mut self, cmd: Command, what: &str) -> io::Result<()> {
        match self.call(&cmd).await? {
            Reply::Simple(_) => Ok(()),
            Reply::Error(e) => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("redis refused {what}: {e}"),
            )),
            _ => Err(protocol_error("unexpected reply to a login command")),
        }
    }

    /// Sends one command and reads its reply. A Redis error is `Ok(Reply::Error(..))`.
    ///
    /// # Errors
    ///
    /// I/O errors, and `InvalidData` for a malformed or oversized reply.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use smolchat::cluster::{Command, Connection, Reply};
    ///
    /// # smol::block_on(async {
    /// let mut redis = Connection::open(&"redis://127.0.0.1:6379".parse().expect("URL"), 4096).await?;
    /// let reply = redis.call(&Command::new("INCR").arg("counter")).await?;
    /// assert!(matches!(reply, Reply::Integer(_)));
    /// # std::io::Result::Ok(()) });
    /// ```
    pub async fn call(&mut self, cmd: &Command) -> io::Result<Reply> {
        self.send(&cmd.encode()).await?;
        self.reply().await
    }

    /// Writes encoded commands without waiting for their replies (pipelining).
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Reads the next reply.
    ///
    /// Cancel-safe: bytes already read stay in the buffer, so dropping this future and calling
    /// it again loses nothing. The subscriber relies on that to race replies against requests.
    pub(crate) async fn reply(&mut self) -> io::Result<Reply> {
        loop {
            match resp::parse(&self.buf, self.max_reply) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            // Into a separate chunk: a read cancelled at its `.await` has taken nothing, and
            // `buf` only ever grows by bytes that really arrived.
            let read = self.stream.read(&mut self.chunk).await?;
            if read == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&self.chunk[..read]);
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.stream.peer_addr().ok())
            .field("buffered", &self.buf.len())
            .field("max_reply", &self.max_reply)
            .finish()
    }
}

pub(crate) fn protocol_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}
