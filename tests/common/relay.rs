//! A TCP relay in front of a loopback server that can hold back what some of its clients send:
//! makes one connection of a process slow while its others are not (e.g. a node's Redis
//! subscriber connection, and not its command connection).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Longest a relay serves: its threads end by then even if the test forgot it.
const LIFETIME: Duration = Duration::from_secs(300);
/// How often the threads look at the flags.
const TICK: Duration = Duration::from_millis(5);

/// Relays 127.0.0.1:`port` (its own) to an upstream port; stops when dropped.
pub struct Relay {
    pub port: u16,
    hold: Arc<AtomicBool>,
    /// How many connections have something held back now.
    holding: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Relays to 127.0.0.1:`upstream`; while held, a connection whose client has sent
    /// `marker` has the rest of what its client sends kept back.
    pub fn start(upstream: u16, marker: &'static [u8]) -> io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let relay = Relay {
            port: listener.local_addr()?.port(),
            hold: Arc::new(AtomicBool::new(false)),
            holding: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (hold, holding) = (relay.hold.clone(), relay.holding.clone());
        let stop = relay.stop.clone();
        thread::spawn(move || {
            let end = Instant::now() + LIFETIME;
            while !stop.load(Ordering::Acquire) && Instant::now() < end {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(TICK);
                    continue;
                };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                // Blocking, with a read timeout (see `Pump::run`), whatever the listener is.
                let _ = client.set_nonblocking(false);
                let marked = Arc::new(AtomicBool::new(false));
                let up = Pump {
                    marker: Some((marker, marked.clone(), hold.clone(), holding.clone())),
                    stop: stop.clone(),
                    end,
                };
                let down = Pump {
                    marker: None,
                    stop: stop.clone(),
                    end,
                };
                if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                    thread::spawn(move || up.run(c, s));
                    thread::spawn(move || down.run(server, client));
                }
            }
        });
        Ok(relay)
    }

    /// Starts or stops holding back what marked connections send.
    pub fn hold(&self, on: bool) {
        self.hold.store(on, Ordering::Release);
    }

    /// Whether a marked connection has sent something that is held back now.
    pub fn holding(&self) -> bool {
        self.holding.load(Ordering::Acquire) > 0
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

type Marker = (
    &'static [u8],
    Arc<AtomicBool>,
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
);

/// Copies one direction of one connection.
struct Pump {
    /// The marker, whether this connection sent it, the relay's hold flag and its count of
    /// connections holding something back.
    marker: Option<Marker>,
    stop: Arc<AtomicBool>,
    end: Instant,
}

impl Pump {
    fn run(self, mut from: TcpStream, mut to: TcpStream) {
        let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
        let mut buf = vec![0; 64 * 1024];
        while !self.stopped() {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => break,
            };
            if let Some((marker, marked, hold, holding)) = &self.marker {
                if buf[..n].windows(marker.len()).any(|w| w == *marker) {
                    marked.store(true, Ordering::Release);
                }
                let held = || marked.load(Ordering::Acquire) && hold.load(Ordering::Acquire);
                if held() {
                    holding.fetch_add(1, Ordering::AcqRel);
                    while held() && !self.stopped() {
                        thread::sleep(TICK);
                    }
                    holding.fetch_sub(1, Ordering::AcqRel);
                }
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire) || Instant::now() >= self.end
    }
}
