//! The server: its listener, the accept loop and the shutdown sequence.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_channel::{Receiver, Sender};
use futures_lite::future::{self, FutureExt};
use smol::{Async, Executor, Timer};

use crate::connection;
use crate::handle::Handle;
use crate::hub::Hub;
use crate::net;
use crate::protocol;
use crate::tls;
use crate::{Config, Refusal};

/// First pause after an accept error such as running out of file descriptors.
const MIN_BACKOFF: Duration = Duration::from_millis(5);
/// Longest pause between accept attempts while errors persist: retries often enough to
/// recover quickly once descriptors free up, rarely enough to cost no CPU meanwhile.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A chat server bound to a TCP address, ready to [`run`](Server::run).
///
/// # Examples
///
/// ```no_run
/// # smol::block_on(async {
/// let server = smolchat::Server::bind("0.0.0.0:8888", smolchat::Config::default())?;
/// let ex = smol::Executor::new();
/// ex.run(server.run(&ex, std::future::pending())).await;
/// # std::io::Result::Ok(()) });
/// ```
pub struct Server {
    listeners: Listeners,
    hub: Arc<Hub>,
}

/// Where clients connect: plain, TLS, or both.
struct Listeners {
    /// `None` when TLS is served alone.
    plain: Option<Async<TcpListener>>,
    /// `Some` when [`Config::tls`] asks for TLS.
    tls: Option<tls::Listener>,
}

impl Server {
    /// Binds to `addr` with [`Config::backlog`] (the first address that works, if it resolves
    /// to several), and to the TLS address if [`Config::tls`] asks for TLS. With TLS alone
    /// ([`Tls::plain`](crate::Tls::plain) `false`), `addr` is not used.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) naming the field when a `config` value is
    /// out of range ([`Config::validate`]). When `addr` does not resolve or no address can be
    /// bound (in use, permission denied…);
    /// the message names the address. [`InvalidInput`](io::ErrorKind::InvalidInput) when the TLS
    /// certificate or key cannot be used (the message names the file and the problem), or when
    /// TLS is asked for in a build without the `tls` feature.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// println!("listening on {}", server.local_addr());
    /// # std::io::Result::Ok(())
    /// ```
    pub fn bind(addr: impl ToSocketAddrs, config: Config) -> io::Result<Server> {
        config.validate()?;
        if config.tls.as_ref().is_some_and(|tls| !tls.plain) {
            return Server::new(None, config);
        }
        let mut last_error = None;
        for addr in addr.to_socket_addrs()? {
            match net::listen(addr, config.backlog) {
                Ok(listener) => return Server::from_listener(listener, config),
                Err(e) => {
                    let message = format!("cannot listen on {addr}: {e}");
                    last_error = Some(io::Error::new(e.kind(), message));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "address resolved to nothing")
        }))
    }

    /// Serves on a listener bound elsewhere (its backlog is whatever it was created with).
    /// With TLS alone ([`Tls::plain`](crate::Tls::plain) `false`), the listener is closed.
    ///
    /// # Errors
    ///
    /// As for [`bind`](Server::bind) when a `config` value is out of range or [`Config::tls`]
    /// asks for TLS; when the listener's address cannot be read or it cannot be made
    /// non-blocking.
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let server = smolchat::Server::from_listener(listener, smolchat::Config::default())?;
    /// # drop(server);
    /// # std::io::Result::Ok(())
    /// ```
    pub fn from_listener(listener: TcpListener, config: Config) -> io::Result<Server> {
        config.validate()?;
        let plain = config.tls.as_ref().is_none_or(|tls| tls.plain);
        Server::new(plain.then_some(listener), config)
    }

    fn new(listener: Option<TcpListener>, config: Config) -> io::Result<Server> {
        let tls = tls::Listener::bind(&config)?;
        let local_addr = match (&listener, &tls) {
            (Some(listener), _) => listener.local_addr()?,
            (None, Some(tls)) => tls.local_addr()?,
            (None, None) => unreachable!("either plain or TLS is served"),
        };
        let listeners = Listeners {
            plain: listener.map(Async::new).transpose()?,
            tls,
        };
        Ok(Server {
            listeners,
            hub: Arc::new(Hub::new(config, local_addr)),
        })
    }

    /// The address the server listens on (useful after binding port 0): the plain address, or
    /// the TLS one when TLS is served alone.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// assert_ne!(server.local_addr().port(), 0);
    /// # std::io::Result::Ok(())
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.hub.local_addr
    }

    /// The address TLS clients connect to, if the server serves TLS.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// assert_eq!(server.tls_addr(), None);
    /// # std::io::Result::Ok(())
    /// ```
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        let tls = self.listeners.tls.as_ref();
        tls.and_then(|tls| tls.local_addr().ok())
    }

    /// A [`Handle`] to control and observe the server while it runs.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
    /// let handle = server.handle();
    /// assert_eq!(handle.local_addr(), server.local_addr());
    /// # std::io::Result::Ok(())
    /// ```
    pub fn handle(&self) -> Handle {
        Handle {
            hub: self.hub.clone(),
        }
    }

    /// Serves clients on `executor` until `shutdown` completes or [`Handle::shutdown`] is
    /// called, then shuts down gracefully and returns.
    ///
    /// Each client's task is spawned on `executor`, and `run` drives that executor itself for
    /// as long as it runs, so both of these serve:
    ///
    /// - `smol::block_on(server.run(&ex, shutdown))`: nothing else runs `ex`; `run` does.
    /// - `ex.run(server.run(&ex, shutdown))`, or `server.run(&ex, shutdown)` awaited in a task
    ///   on `ex`, when the application already runs `ex` (on one thread or many).
    ///
    /// `shutdown` returns `()` so that `std::future::pending()` needs no type annotation; to
    /// stop on a future with an output, wrap it: `async { signals.next().await; }`.
    ///
    /// Shutting down stops accepting, sends every client a notice, lets queued lines flush for
    /// up to [`Config::shutdown_grace`], then closes every connection that is left.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = smolchat::Server::bind("127.0.0.1:8888", smolchat::Config::default())?;
    /// let ex = smol::Executor::new();
    /// let an_hour = async {
    ///     smol::Timer::after(std::time::Duration::from_secs(3600)).await;
    /// };
    /// smol::block_on(server.run(&ex, an_hour));
    /// # std::io::Result::Ok(())
    /// ```
    pub async fn run(self, executor: &Executor<'_>, shutdown: impl Future<Output = ()>) {
        // Not connected by the host first: a Redis unreachable now leaves this node serving
        // its own users alone (see `connect_cluster`).
        #[cfg(feature = "redis")]
        let _ = self.connect_cluster(executor).await;
        // Runs the connection tasks even when nothing else runs `executor`. One task per turn,
        // handing control back after each: when the application runs `executor` around this
        // future on the same thread, a second full runner here would move tasks into its own
        // queue and run them ahead of those the outer runner holds (measured: writers starved
        // behind a flooding reader until their clients were dropped as too slow).
        let drive = async {
            loop {
                executor.tick().await;
                future::yield_now().await;
            }
        };
        self.serve(executor, shutdown).or(drive).await;
    }

    async fn serve(self, executor: &Executor<'_>, shutdown: impl Future<Output = ()>) {
        let Server { listeners, hub } = self;
        // Every connection task holds a clone of `done`: when all are dropped, all have ended.
        let (done, all_done) = async_channel::bounded::<()>(1);
        // Dropping `kill` ends the connections still running after the grace period.
        let (kill, killed) = async_channel::bounded::<()>(1);
        let stop = pin!(shutdown.or(hub.stopped()));
        accept_loop(&listeners, &hub, executor, &done, &killed, stop).await;

        drop(listeners);
        hub.close_all();
        drop(done);
        let flushed = async {
            let _ = all_done.recv().await;
            true
        };
        let grace_over = async {
            Timer::after(hub.config.shutdown_grace).await;
            false
        };
        if !flushed.or(grace_over).await {
            drop(kill);
            let _ = all_done.recv().await;
        }
        hub.close_cluster().await;
    }

    /// Connects this node to the cluster's Redis ([`Config::redis`]) and starts handling what
    /// comes from it on `executor`; does nothing without [`Config::redis`] or if connected
    /// already. [`run`](Server::run) calls it if the host did not, and serves this node's
    /// users alone if it fails then; call it first to stop when Redis is unreachable.
    ///
    /// # Errors
    ///
    /// When Redis cannot be reached or refuses the login (within 5 s); the message names the
    /// server, never the password.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let config = smolchat::Config {
    ///     redis: Some("redis://127.0.0.1:6379".into()),
    ///     ..smolchat::Config::default()
    /// };
    /// let server = smolchat::Server::bind("127.0.0.1:8888", config)?;
    /// let ex = smol::Executor::new();
    /// smol::block_on(server.connect_cluster(&ex))?;
    /// smol::block_on(server.run(&ex, std::future::pending()));
    /// # std::io::Result::Ok(())
    /// ```
    #[cfg(feature = "redis")]
    pub async fn connect_cluster(&self, executor: &Executor<'_>) -> io::Result<()> {
        self.hub.connect_cluster(executor).await
    }
}

async fn accept_loop(
    listeners: &Listeners,
    hub: &Arc<Hub>,
    executor: &Executor<'_>,
    done: &Sender<()>,
    killed: &Receiver<()>,
    mut stop: Pin<&mut impl Future<Output = ()>>,
) {
    let mut backoff = Duration::ZERO;
    loop {
        // The stop signal is polled before every accept: under a flood of connects `accept` is
        // always ready, and yielding instead would let the backlog overflow (measured: a burst
        // of 5,000 connects took 1.1 s instead of 0.25 s).
        let stopped = async {
            stop.as_mut().await;
            None
        };
        let Some(accepted) = stopped.or(async { Some(listeners.accept().await) }).await else {
            return;
        };
        let (stream, addr, tls) = match accepted {
            Ok(accepted) => accepted,
            // Failures of one connection that is already gone: just take the next.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            // Anything else (EMFILE, ENFILE, ENOBUFS…) will likely fail again at once: wait.
            Err(_) => {
                backoff = (backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                let waited = async {
                    Timer::after(backoff).await;
                    true
                };
                if !waited
                    .or(async {
                        stop.as_mut().await;
                        false
                    })
                    .await
                {
                    return;
                }
                continue;
            }
        };
        backoff = Duration::ZERO;
        if let Err(refusal) = hub.admit(addr) {
            // A TLS client is closed without a line: it could not read one before a handshake,
            // and a refused client gets no handshake.
            if refusal == Refusal::NotAllowed || tls.is_some() {
                // Closed without a word: the address lists' refusal tells a scanner nothing.
                continue;
            }
            // Closed gracefully so the client reads why, by a task of its own, up to a bound:
            // past it, a flood of refused connects gets the line only if their socket takes it
            // at once.
            match Refusing::start(hub) {
                Some(refusing) => {
                    let killed = killed.clone();
                    let task = async move {
                        let _refusing = refusing;
                        connection::refuse(&stream, &refusal)
                            .or(async {
                                let _ = killed.recv().await;
                            })
                            .await;
                    };
                    executor.spawn(task).detach();
                }
                None => {
                    let _ = std::io::Write::write(
                        &mut stream.get_ref(),
                        protocol::refused(&refusal).as_bytes(),
                    );
                }
            }
            continue;
        }
        net::configure(stream.get_ref(), &hub.config);
        let admitted = Admitted {
            hub: hub.clone(),
            addr,
            _done: done.clone(),
        };
        let killed = killed.clone();
        let task = async move {
            let serve = async {
                match tls {
                    None => connection::serve(&admitted.hub, stream, addr).await,
                    // Boxed, so a plain client's task stays as small as it was.
                    Some(tls) => Box::pin(tls::serve(&admitted.hub, tls, stream, addr)).await,
                }
            };
            serve
                .or(async {
                    let _ = killed.recv().await;
                })
                .await;
        };
        executor.spawn(task).detach();
    }
}

impl Listeners {
    /// The next client from either listener; a TLS client comes with what terminates its TLS.
    async fn accept(&self) -> io::Result<(Async<TcpStream>, SocketAddr, Option<tls::Acceptor>)> {
        let plain = async {
            match &self.plain {
                Some(listener) => listener.accept().await.map(|(s, addr)| (s, addr, None)),
                None => future::pending().await,
            }
        };
        let tls = async {
            match &self.tls {
                Some(listener) => {
                    let (stream, addr) = listener.accept().await?;
                    Ok((stream, addr, Some(listener.acceptor())))
                }
                None => future::pending().await,
            }
        };
        // In random order, so a flood of connects to one cannot starve the other.
        future::race(plain, tls).await
    }
}

/// Most refused connections being closed gracefully at once; each holds a descriptor for up
/// to a second.
const MAX_REFUSING: usize = 256;

/// Counts a refused connection while it is being closed gracefully.
struct Refusing(Arc<Hub>);

impl Refusing {
    fn start(hub: &Arc<Hub>) -> Option<Refusing> {
        hub.counters
            .refusing
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_REFUSING).then_some(n + 1)
            })
            .ok()
            .map(|_| Refusing(hub.clone()))
    }
}

impl Drop for Refusing {
    fn drop(&mut self) {
        self.0.counters.refusing.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Frees the connection's place in the limits however its task ends, and only then reports
/// the end: owning the task's clone of `done` makes the release happen before the server
/// can see every connection ended (a struct's `drop` runs before its fields are dropped).
struct Admitted {
    hub: Arc<Hub>,
    addr: SocketAddr,
    _done: Sender<()>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.hub.release(self.addr);
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.hub.local_addr)
            .finish_non_exhaustive()
    }
}
