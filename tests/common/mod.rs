//! Helpers shared by the integration tests: a server on 127.0.0.1:0 in its own thread, and a
//! line-oriented client whose every read times out.
#![allow(dead_code)] // reason: each test file uses a different subset of these helpers

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use smol::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use smol::net::TcpStream;
use smol::{Executor, Timer};
use smolchat::{Config, Handle, Server};

pub mod process;
pub mod procfs;
pub mod redis_server;
pub mod relay;
#[cfg(feature = "tls")]
pub mod tls;
pub mod traffic;
pub mod workers;

/// How long any single read may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Test defaults: flood control off, so tests can send as fast as they like.
pub fn config() -> Config {
    Config {
        flood_rate: 0.0,
        ..Config::default()
    }
}

/// Races `fut` against [`TIMEOUT`].
pub async fn timeout<T>(fut: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    futures_lite::future::or(fut, async {
        Timer::after(TIMEOUT).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
    })
    .await
}

/// Polls `condition` every 5 ms until it holds, failing after [`TIMEOUT`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) -> io::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("never happened: {what}"),
            ));
        }
        Timer::after(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Checks `condition` every 10 ms until it holds, failing after `limit`; for threads.
pub fn eventually_within(
    limit: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> io::Result<()> {
    let deadline = Instant::now() + limit;
    while !condition() {
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("never happened: {what}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// A server running on its own thread and executor; shut down and joined on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Where TLS clients connect, if the config asked for TLS.
    pub tls_addr: Option<SocketAddr>,
    pub handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(config: Config) -> TestServer {
        let server = Server::bind("127.0.0.1:0", config).expect("bind 127.0.0.1:0");
        let (addr, handle) = (server.local_addr(), server.handle());
        let tls_addr = server.tls_addr();
        let thread = std::thread::spawn(move || {
            let ex = Executor::new();
            smol::block_on(ex.run(server.run(&ex, std::future::pending())));
        });
        TestServer {
            addr,
            tls_addr,
            handle,
            thread: Some(thread),
        }
    }

    /// Connects a client and reads its welcome.
    pub async fn connect(&self) -> io::Result<Client> {
        Client::connect(self.addr).await
    }

    /// Connects `n` clients one after another; earlier ones have read every later join notice.
    pub async fn clients(&self, n: usize) -> io::Result<Vec<Client>> {
        let mut clients: Vec<Client> = Vec::new();
        for _ in 0..n {
            let client = self.connect().await?;
            for other in &mut clients {
                other
                    .expect(&format!("*** {} joined #lobby", client.name))
                    .await?;
            }
            clients.push(client);
        }
        Ok(clients)
    }

    /// Connects one client per name and renames each; everyone has read every notice.
    pub async fn named(&self, names: &[&str]) -> io::Result<Vec<Client>> {
        let mut c = self.clients(names.len()).await?;
        for (i, name) in names.iter().enumerate() {
            let old = c[i].name.clone();
            c[i].nick(name).await?;
            for (j, other) in c.iter_mut().enumerate() {
                if j != i {
                    other.expect(&format!("*** {old} is now {name}")).await?;
                }
            }
        }
        Ok(c)
    }

    /// Shuts down and waits up to `limit` for `run` to return; says how long it took.
    pub fn stop_within(mut self, limit: Duration) -> io::Result<Duration> {
        self.handle.shutdown();
        let start = Instant::now();
        let thread = self.thread.take().expect("not joined yet");
        while !thread.is_finished() {
            if start.elapsed() > limit {
                // Dropping the handle detaches the thread; the test fails instead of hanging.
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("run did not return within {limit:?} of shutdown"),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = start.elapsed();
        thread.join().expect("server thread panicked");
        Ok(took)
    }

    /// Shuts down and waits for `run` to return.
    pub fn stop(mut self) {
        self.join();
    }

    fn join(&mut self) {
        self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("server thread panicked");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.join();
        }
    }
}

/// A chat client talking raw lines over TCP.
pub struct Client {
    pub name: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects and reads the welcome up to the line that names the client.
    pub async fn connect(addr: SocketAddr) -> io::Result<Client> {
        let mut client = Client::connect_raw(addr).await?;
        client.read_welcome().await?;
        Ok(client)
    }

    /// Takes over a connected socket (e.g. from [`traffic::connect_from`]) and reads the welcome.
    pub async fn from_std(stream: std::net::TcpStream) -> io::Result<Client> {
        let stream = TcpStream::try_from(stream)?;
        let mut client = Client {
            name: String::new(),
            reader: BufReader::new(stream.clone()),
            writer: stream,
        };
        client.read_welcome().await?;
        Ok(client)
    }

    /// Connects without reading anything.
    pub async fn connect_raw(addr: SocketAddr) -> io::Result<Client> {
        let stream = timeout(TcpStream::connect(addr)).await?;
        Ok(Client::from_stream(stream))
    }

    /// Connects from `local`, another loopback address such as 127.0.0.2 (Linux routes all of
    /// 127.0.0.0/8 to the loopback), and reads the welcome: lets a test tell clients apart by
    /// address.
    pub async fn connect_from(addr: SocketAddr, local: IpAddr) -> io::Result<Client> {
        let mut client = Client::connect_raw_from(addr, local).await?;
        client.read_welcome().await?;
        Ok(client)
    }

    /// Connects from `local` without reading anything.
    pub async fn connect_raw_from(addr: SocketAddr, local: IpAddr) -> io::Result<Client> {
        use rustix::net::{AddressFamily, SocketType};
        let family = if local.is_ipv4() {
            AddressFamily::INET
        } else {
            AddressFamily::INET6
        };
        let socket = rustix::net::socket(family, SocketType::STREAM, None)?;
        rustix::net::bind(&socket, &SocketAddr::new(local, 0))?;
        // Blocking, but a loopback connect completes (or fails) at once.
        rustix::net::connect(&socket, &addr)?;
        let stream = TcpStream::try_from(std::net::TcpStream::from(socket))?;
        Ok(Client::from_stream(stream))
    }

    fn from_stream(stream: TcpStream) -> Client {
        Client {
            name: String::new(),
            reader: BufReader::new(stream.clone()),
            writer: stream,
        }
    }

    /// Reads the welcome up to the line that names the client.
    pub async fn read_welcome(&mut self) -> io::Result<()> {
        loop {
            let line = self.line().await?;
            if let Some(rest) = line.strip_prefix("*** you are ") {
                self.name = rest.split(' ').next().unwrap_or_default().to_string();
                return Ok(());
            }
        }
    }

    /// Sends one line (a `\n` is added).
    pub async fn send(&mut self, line: &str) -> io::Result<()> {
        self.send_raw(format!("{line}\n").as_bytes()).await
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        timeout(self.writer.write_all(bytes)).await
    }

    /// Reads the next line, without its `\n`. End of stream is an `UnexpectedEof` error.
    pub async fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        let read = timeout(self.reader.read_line(&mut line))
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.name)))?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        assert!(
            line.ends_with('\n'),
            "server line without newline: {line:?}"
        );
        line.pop();
        Ok(line)
    }

    /// Reads the next line and checks it is exactly `expected`.
    pub async fn expect(&mut self, expected: &str) -> io::Result<()> {
        let line = self.line().await?;
        if line != expected {
            return Err(io::Error::other(format!(
                "{}: expected {expected:?}, got {line:?}",
                self.name
            )));
        }
        Ok(())
    }

    /// Reads lines until one satisfies `pred`, returning it.
    /// A failure names the client and the last lines it skipped.
    pub async fn until(&mut self, pred: impl Fn(&str) -> bool) -> io::Result<String> {
        let mut skipped = std::collections::VecDeque::new();
        loop {
            let line = match self.line().await {
                Ok(line) => line,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("{}: {e}; last lines skipped: {skipped:?}", self.name),
                    ))
                }
            };
            if pred(&line) {
                return Ok(line);
            }
            if skipped.len() == 8 {
                skipped.pop_front();
            }
            skipped.push_back(line);
        }
    }

    /// Checks that the server closes the connection next (after any lines in `before`).
    pub async fn expect_eof(&mut self) -> io::Result<()> {
        let mut rest = Vec::new();
        timeout(self.reader.read_to_end(&mut rest)).await?;
        if !rest.is_empty() {
            return Err(io::Error::other(format!(
                "expected end of stream, got {:?}",
                String::from_utf8_lossy(&rest)
            )));
        }
        Ok(())
    }

    /// Reads exactly `n` bytes, whatever they are (telnet answers are not lines).
    pub async fn bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut bytes = vec![0; n];
        timeout(self.reader.read_exact(&mut bytes)).await?;
        Ok(bytes)
    }

    /// Reads everything until the server closes the connection.
    pub async fn rest(&mut self) -> io::Result<String> {
        let mut rest = Vec::new();
        timeout(self.reader.read_to_end(&mut rest)).await?;
        Ok(String::from_utf8_lossy(&rest).into_owned())
    }

    /// Renames the client and checks the confirmation.
    pub async fn nick(&mut self, name: &str) -> io::Result<()> {
        self.send(&format!("/nick {name}")).await?;
        self.expect(&format!("*** you are now {name}")).await?;
        self.name = name.to_string();
        Ok(())
    }

    /// Moves to `room` and reads up to the greeting that says where it is (history follows).
    pub async fn join(&mut self, room: &str) -> io::Result<()> {
        self.send(&format!("/join {room}")).await?;
        self.until(|l| l.starts_with("*** you are")).await.map(drop)
    }

    /// Proves every earlier line was handled: asks for `/rooms` and reads up to the reply.
    pub async fn sync(&mut self) -> io::Result<()> {
        self.send("/rooms").await?;
        self.until(|l| l.starts_with("*** rooms: ")).await.map(drop)
    }

    /// Proves nothing else reached the client since its last read: asks for `/rooms`, whose
    /// reply must be the very next line.
    pub async fn expect_nothing_more(&mut self) -> io::Result<()> {
        self.send("/rooms").await?;
        let line = self.line().await?;
        if !line.starts_with("*** rooms: ") {
            return Err(io::Error::other(format!(
                "{}: expected nothing more, got {line:?}",
                self.name
            )));
        }
        Ok(())
    }

    /// The client's own end of the connection, as the server sees it.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.writer.local_addr()
    }

    pub fn into_parts(self) -> (BufReader<TcpStream>, TcpStream) {
        (self.reader, self.writer)
    }
}
