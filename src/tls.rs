//! TLS termination (the `tls` feature): the certificate, the handshake, and a pump that lets the
//! connection code serve a TLS client as if it were a plain one.
//!
//! After the handshake, a TLS client's connection is served on one end of a Unix socket pair;
//! the pump moves bytes between the other end and the TLS session over the client's TCP
//! socket. Backpressure crosses the pair: a client that stops reading stops the pump, the pair
//! fills, and the connection's queue bounds and write timeout apply as for a plain client. A
//! client that sends too fast is read more slowly by the connection, the pair fills, and the
//! pump stops reading its socket, so TCP pushes back on it. The cost is two more descriptors
//! and one more copy of each byte per TLS client.

#[cfg(feature = "tls")]
pub(crate) use enabled::{serve, Acceptor, Listener};

#[cfg(not(feature = "tls"))]
pub(crate) use disabled::{serve, Acceptor, Listener};

#[cfg(feature = "tls")]
mod enabled {
    use std::io::{self, Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
    use std::os::unix::net::UnixStream;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use async_channel::Receiver;
    use futures_lite::future::{self, FutureExt};
    use rustls::crypto::ring;
    use rustls::pki_types::pem::{self, PemObject};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{ServerConfig, ServerConnection};
    use smol::{Async, Timer};

    use crate::config::Tls;
    use crate::connection;
    use crate::hub::Hub;
    use crate::{net, Config};

    /// Bytes moved per system call: a TLS record carries at most 16 KiB of text.
    const CHUNK: usize = 16 * 1024;

    /// Chunks the pump moves in each direction before letting other tasks run, so one busy
    /// client cannot starve the rest.
    const CHUNKS_PER_TURN: usize = 16;

    /// The TLS listener, with what every connection accepted on it needs.
    #[derive(Debug)]
    pub(crate) struct Listener {
        listener: Async<TcpListener>,
        acceptor: Acceptor,
    }

    /// What a TLS connection's task needs to terminate TLS.
    #[derive(Debug, Clone)]
    pub(crate) struct Acceptor {
        config: Arc<ServerConfig>,
        handshake_timeout: Duration,
    }

    impl Listener {
        /// Loads the certificate and key and binds the TLS address, if `config` asks for TLS.
        ///
        /// Certificate and key problems are `InvalidInput` errors that name the file.
        pub(crate) fn bind(config: &Config) -> io::Result<Option<Listener>> {
            let Some(tls) = &config.tls else {
                return Ok(None);
            };
            if tls.handshake_timeout.is_zero() {
                return Err(invalid("the TLS handshake timeout must be positive".into()));
            }
            let server_config = Arc::new(load(tls)?);
            let listener = net::listen(tls.addr, config.backlog).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot listen for TLS on {}: {e}", tls.addr),
                )
            })?;
            Ok(Some(Listener {
                listener: Async::new(listener)?,
                acceptor: Acceptor {
                    config: server_config,
                    handshake_timeout: tls.handshake_timeout,
                },
            }))
        }

        pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
            self.listener.get_ref().local_addr()
        }

        pub(crate) async fn accept(&self) -> io::Result<(Async<TcpStream>, SocketAddr)> {
            self.listener.accept().await
        }

        pub(crate) fn acceptor(&self) -> Acceptor {
            self.acceptor.clone()
        }
    }

    fn invalid(message: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, message)
    }

    /// Reads the certificate chain and key into a rustls server configuration.
    fn load(tls: &Tls) -> io::Result<ServerConfig> {
        let (cert_path, key_path) = (tls.cert_chain.display(), tls.key.display());
        let cert_pem = read(&tls.cert_chain, "TLS certificate chain")?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("TLS certificate chain '{cert_path}': {e}")))?;
        if chain.is_empty() {
            return Err(invalid(format!(
                "TLS certificate chain '{cert_path}': no certificate in it \
                 (expected PEM blocks starting with -----BEGIN CERTIFICATE-----)"
            )));
        }
        let key_pem = read(&tls.key, "TLS private key")?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
            pem::Error::NoItemsFound => invalid(format!(
                "TLS private key '{key_path}': no private key in it \
                 (expected a PEM block such as -----BEGIN PRIVATE KEY-----)"
            )),
            e => invalid(format!("TLS private key '{key_path}': {e}")),
        })?;
        // The provider is named rather than taken from the process default, which an embedder
        // may have set to another one (or which is ambiguous when several are compiled in).
        ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| {
                invalid(format!(
                    "TLS certificate chain '{cert_path}' and private key '{key_path}': {e}"
                ))
            })
    }

    fn read(path: &Path, what: &str) -> io::Result<Vec<u8>> {
        std::fs::read(path)
            .map_err(|e| invalid(format!("cannot read {what} '{}': {e}", path.display())))
    }

    /// Serves one admitted TLS client: the handshake, within its bound, then the connection
    /// through the pump until both have ended.
    pub(crate) async fn serve(
        hub: &Hub,
        acceptor: Acceptor,
        tcp: Async<TcpStream>,
        addr: SocketAddr,
    ) {
        let timed_out = async {
            Timer::after(acceptor.handshake_timeout).await;
            Err(io::ErrorKind::TimedOut.into())
        };
        let session = match handshake(acceptor.config, &tcp).or(timed_out).await {
            Ok(session) => session,
            Err(e) => return hub.tls_failed(addr, &e),
        };
        // Fails only when out of descriptors: the client is dropped, as at a failed accept.
        let Ok((inner, outer)) = socket_pair() else {
            return;
        };
        let pump = Pump {
            session,
            tcp,
            pair: outer,
            pending: Vec::new(),
            client_open: true,
            connection_open: true,
            failed: false,
            stalled_since: None,
        };
        // Closed when the connection has ended, even while the pump is not reading the pair.
        let (ended, connection_ended) = async_channel::bounded::<()>(1);
        let connection = async move {
            let _ended = ended;
            connection::serve(hub, inner, addr).await;
        };
        // Both run to the end: the pump keeps its end of the pair open until the connection has
        // closed its own, so the connection never writes to a closed socket (SIGPIPE).
        future::zip(
            connection,
            pump.run(hub.config.write_timeout, connection_ended),
        )
        .await;
    }

    fn socket_pair() -> io::Result<(Async<UnixStream>, Async<UnixStream>)> {
        let (inner, outer) = UnixStream::pair()?;
        Ok((Async::new(inner)?, Async::new(outer)?))
    }

    /// Runs the server side of the handshake over `tcp`.
    async fn handshake(
        config: Arc<ServerConfig>,
        tcp: &Async<TcpStream>,
    ) -> io::Result<ServerConnection> {
        let mut session = ServerConnection::new(config).map_err(io::Error::other)?;
        while session.is_handshaking() {
            if session.wants_write() {
                match session.write_tls(&mut tcp.get_ref()) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => tcp.writable().await?,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            match session.read_tls(&mut tcp.get_ref()) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {
                    if let Err(e) = session.process_new_packets() {
                        // Tells the client why, if its socket takes the alert at once.
                        let _ = session.write_tls(&mut tcp.get_ref());
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => tcp.readable().await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(session)
    }

    /// Moves bytes between a TLS session and the connection's Unix socket pair.
    struct Pump {
        session: ServerConnection,
        tcp: Async<TcpStream>,
        /// The pump's end of the pair; the connection serves the other.
        pair: Async<UnixStream>,
        /// Decrypted bytes the pair had no room for yet. While any wait, nothing more is read
        /// from the client: that is how a full pair pushes back on the client.
        pending: Vec<u8>,
        /// The client may still send (no end of stream or close_notify yet).
        client_open: bool,
        /// The connection may still send (its end of the pair is open).
        connection_open: bool,
        /// The client's socket or session failed: the connection was told the client is gone,
        /// and what it still writes is discarded.
        failed: bool,
        /// Since when the client's socket has taken none of the bytes waiting for it.
        stalled_since: Option<Instant>,
    }

    /// What one direction of the pump did.
    enum Flow {
        /// Moved some bytes; there may be more.
        Moved,
        /// Blocked until a socket is ready.
        Blocked,
        /// This direction is over.
        Ended,
    }

    /// What the pump does after a step.
    enum Next {
        /// Waits for these sockets to be ready.
        Wait(Readiness),
        /// Lets other tasks run, then steps again.
        Yield,
        /// The connection has ended and everything for the client is sent (or never will be).
        Done,
    }

    /// What woke a waiting pump.
    enum Woke {
        Ready(io::Result<()>),
        ConnectionEnded,
        TimedOut,
    }

    /// The sockets a blocked pump waits on.
    #[derive(Debug, Default, Clone, Copy)]
    struct Readiness {
        tcp_readable: bool,
        tcp_writable: bool,
        pair_readable: bool,
        pair_writable: bool,
    }

    impl Pump {
        /// Pumps until the connection has ended and its last bytes reached the client.
        ///
        /// Once `connection_ended` closes, the client's socket may take nothing for at most
        /// `linger` (counted from when it stalled, if it already had): the rule the connection
        /// applies to a plain client's socket, so a TLS client that stops reading is closed as
        /// soon as a plain one would be.
        async fn run(mut self, linger: Duration, connection_ended: Receiver<()>) {
            // When the connection ended, once known.
            let mut ended = None;
            loop {
                let next = match self.step() {
                    Ok(next) => next,
                    Err(_) => {
                        self.fail();
                        Next::Yield
                    }
                };
                let wait = match next {
                    Next::Done => return,
                    Next::Yield => {
                        future::yield_now().await;
                        continue;
                    }
                    Next::Wait(wait) => wait,
                };
                let ready = async { Woke::Ready(self.ready(wait).await) };
                let woke = match ended {
                    None => {
                        let ending = async {
                            let _ = connection_ended.recv().await;
                            Woke::ConnectionEnded
                        };
                        ready.or(ending).await
                    }
                    Some(ended) => {
                        let deadline = self.stalled_since.map_or(ended, |s| s.min(ended)) + linger;
                        let timed_out = async {
                            Timer::at(deadline).await;
                            Woke::TimedOut
                        };
                        ready.or(timed_out).await
                    }
                };
                match woke {
                    Woke::Ready(Ok(())) => {}
                    Woke::Ready(Err(_)) => self.fail(),
                    Woke::ConnectionEnded => ended = Some(Instant::now()),
                    // The connection has ended, so its end of the pair is closed: returning is
                    // safe.
                    Woke::TimedOut => return,
                }
            }
        }

        /// Moves what can be moved without blocking, in both directions.
        fn step(&mut self) -> io::Result<Next> {
            let mut buf = [0; CHUNK];
            let mut wait = Readiness::default();
            if self.failed {
                return Ok(self.drain(&mut buf));
            }
            let mut busy = false;
            for turn in 0..=CHUNKS_PER_TURN {
                if !self.client_open {
                    break;
                }
                match self.inbound(&mut buf)? {
                    Flow::Moved => busy = turn == CHUNKS_PER_TURN,
                    Flow::Blocked => {
                        wait.tcp_readable = self.pending.is_empty();
                        wait.pair_writable = !self.pending.is_empty();
                        break;
                    }
                    Flow::Ended => break,
                }
            }
            for turn in 0..=CHUNKS_PER_TURN {
                match self.outbound(&mut buf)? {
                    Flow::Moved => busy |= turn == CHUNKS_PER_TURN,
                    Flow::Blocked => {
                        wait.tcp_writable = self.session.wants_write();
                        wait.pair_readable = !self.session.wants_write();
                        break;
                    }
                    Flow::Ended => break,
                }
            }
            Ok(if !self.connection_open && !self.session.wants_write() {
                Next::Done
            } else if busy {
                Next::Yield
            } else {
                Next::Wait(wait)
            })
        }

        /// Moves one chunk from the client to the connection.
        fn inbound(&mut self, buf: &mut [u8]) -> io::Result<Flow> {
            if !self.pending.is_empty() {
                return Ok(match send(&self.pair, &self.pending) {
                    Ok(n) => {
                        self.pending.drain(..n);
                        Flow::Moved
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Flow::Blocked,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => Flow::Moved,
                    // The connection has ended: what the client still sends has nowhere to go.
                    Err(_) => {
                        self.pending = Vec::new();
                        self.client_open = false;
                        Flow::Ended
                    }
                });
            }
            match self.session.reader().read(buf) {
                Ok(0) => return Ok(self.client_closed()),
                Ok(n) => {
                    let sent = match send(&self.pair, &buf[..n]) {
                        Ok(sent) => sent,
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                            ) =>
                        {
                            0
                        }
                        Err(_) => {
                            self.client_open = false;
                            return Ok(Flow::Ended);
                        }
                    };
                    self.pending.extend_from_slice(&buf[sent..n]);
                    return Ok(Flow::Moved);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify: for a line protocol, just the end of the stream
                // (an unfinished line is dropped either way).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(self.client_closed())
                }
                Err(e) => return Err(e),
            }
            match self.session.read_tls(&mut self.tcp.get_ref()) {
                // At end of stream too: the session then reports how the client closed.
                Ok(_) => {
                    self.session
                        .process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    Ok(Flow::Moved)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Flow::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Flow::Moved),
                Err(e) => Err(e),
            }
        }

        /// The client will send nothing more: the connection reads the end of its stream.
        fn client_closed(&mut self) -> Flow {
            self.client_open = false;
            let _ = self.pair.get_ref().shutdown(Shutdown::Write);
            Flow::Ended
        }

        /// Moves one chunk from the connection to the client, or sends what is encrypted.
        fn outbound(&mut self, buf: &mut [u8]) -> io::Result<Flow> {
            // Nothing more is taken from the connection until the client's socket took what
            // was encrypted: then a client that stops reading fills the pair.
            if self.session.wants_write() {
                return match self.session.write_tls(&mut self.tcp.get_ref()) {
                    Ok(_) => {
                        self.stalled_since = None;
                        Ok(Flow::Moved)
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.stalled_since.get_or_insert_with(Instant::now);
                        Ok(Flow::Blocked)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Flow::Moved),
                    Err(e) => Err(e),
                };
            }
            if !self.connection_open {
                return Ok(Flow::Ended);
            }
            match self.pair.get_ref().read(buf) {
                Ok(0) => {}
                Ok(n) => {
                    self.session.writer().write_all(&buf[..n])?;
                    return Ok(Flow::Moved);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flow::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Flow::Moved),
                // A reset comes after every byte the connection wrote: it closed its end
                // with client bytes unread, which is an end like any other.
                Err(_) => {}
            }
            self.connection_open = false;
            self.session.send_close_notify();
            Ok(Flow::Moved)
        }

        /// Gives up on the client: the connection sees the end of its stream and leaves.
        fn fail(&mut self) {
            if !self.failed {
                // The alert saying why, if the session has one and the socket takes it at once.
                let _ = self.session.write_tls(&mut self.tcp.get_ref());
                self.failed = true;
                self.client_open = false;
                self.pending = Vec::new();
                let _ = self.pair.get_ref().shutdown(Shutdown::Write);
            }
        }

        /// Discards what the connection still writes until it has closed its end.
        fn drain(&mut self, buf: &mut [u8]) -> Next {
            if !self.connection_open {
                return Next::Done;
            }
            for _ in 0..CHUNKS_PER_TURN {
                match self.pair.get_ref().read(buf) {
                    Ok(0) => return Next::Done,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Next::Wait(Readiness {
                            pair_readable: true,
                            ..Readiness::default()
                        })
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Next::Done,
                }
            }
            Next::Yield
        }

        /// Completes when one of the sockets in `wait` is ready.
        async fn ready(&self, wait: Readiness) -> io::Result<()> {
            let when = |wanted: bool| async move {
                if !wanted {
                    future::pending::<()>().await;
                }
            };
            let tcp_readable = async {
                when(wait.tcp_readable).await;
                self.tcp.readable().await
            };
            let tcp_writable = async {
                when(wait.tcp_writable).await;
                self.tcp.writable().await
            };
            let pair_readable = async {
                when(wait.pair_readable).await;
                self.pair.readable().await
            };
            let pair_writable = async {
                when(wait.pair_writable).await;
                self.pair.writable().await
            };
            tcp_readable
                .or(tcp_writable)
                .or(pair_readable)
                .or(pair_writable)
                .await
        }
    }

    /// Writes to the pair without raising SIGPIPE if the connection has closed its end.
    fn send(pair: &Async<UnixStream>, bytes: &[u8]) -> io::Result<usize> {
        rustix::net::send(pair.get_ref(), bytes, rustix::net::SendFlags::NOSIGNAL)
            .map_err(io::Error::from)
    }
}

/// Without the `tls` feature: asking for TLS is an error, and no TLS listener can exist.
#[cfg(not(feature = "tls"))]
mod disabled {
    use std::io;
    use std::net::{SocketAddr, TcpStream};

    use smol::Async;

    use crate::hub::Hub;
    use crate::Config;

    #[derive(Debug)]
    pub(crate) enum Listener {}

    #[derive(Debug)]
    pub(crate) enum Acceptor {}

    impl Listener {
        pub(crate) fn bind(config: &Config) -> io::Result<Option<Listener>> {
            match config.tls {
                None => Ok(None),
                Some(_) => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "TLS was asked for, but smolchat was built without its `tls` feature",
                )),
            }
        }

        pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
            match *self {}
        }

        pub(crate) async fn accept(&self) -> io::Result<(Async<TcpStream>, SocketAddr)> {
            match *self {}
        }

        pub(crate) fn acceptor(&self) -> Acceptor {
            match *self {}
        }
    }

    pub(crate) async fn serve(_: &Hub, acceptor: Acceptor, _: Async<TcpStream>, _: SocketAddr) {
        match acceptor {}
    }
}
