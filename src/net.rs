//! Socket setup that `std` does not offer: the listen backlog, TCP keepalive timing and the
//! TCP user timeout.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};

use crate::Config;

/// Kernel send buffer of a client socket (the kernel doubles it for its bookkeeping): room for
/// a burst of chat lines, small enough that how fast a client reads shows within a second. At a
/// 100 ms round trip it still carries over a megabyte a second to one client.
const SEND_BUFFER: usize = 128 * 1024;

/// Keepalive probes sent before a silent peer is declared gone.
const KEEPALIVE_PROBES: u32 = 4;

/// Binds a listener with `backlog` (std always uses 128, which a burst of connects overflows).
pub(crate) fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let socket = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    // Lets a restarted server bind at once while old connections linger in TIME_WAIT.
    sockopt::set_socket_reuseaddr(&socket, true)?;
    rustix::net::bind(&socket, &addr)?;
    rustix::net::listen(&socket, i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(TcpListener::from(socket))
}

/// How long a peer may leave what was sent to it unacknowledged before the kernel drops the
/// connection (`TCP_USER_TIMEOUT`): twice the keepalive time or twice `write_timeout`,
/// whichever is longer.
///
/// Keepalive alone finds a vanished peer only while nothing is being sent to it: in a room with
/// any traffic, the unacknowledged data stops the probes, and the send buffer takes minutes to
/// fill, so neither keepalive nor `write_timeout` fired until the kernel gave up retransmitting
/// (measured: 930–960 s). With this bound a vanished peer goes within it whether or not lines
/// are sent to it. Twice `write_timeout` leaves a stalled but present reader to the server's own
/// write timeout, which fires first and says why.
pub(crate) fn user_timeout(config: &Config) -> Duration {
    let keepalive = config.keepalive.unwrap_or(Duration::ZERO);
    keepalive.max(config.write_timeout).saturating_mul(2)
}

/// Sets the options every client socket gets. Best effort: a socket that refuses an option
/// still works, so errors are ignored.
pub(crate) fn configure(stream: &TcpStream, config: &Config) {
    if config.nodelay {
        let _ = stream.set_nodelay(true);
    }
    // Flow control judges a client by how fast its socket takes data; a kernel buffer of
    // megabytes (TCP autotunes up to `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default) would
    // hide for seconds that a client reads slowly or not at all. Measured: it costs no fanout
    // throughput (README, "What the numbers justified").
    let _ = sockopt::set_socket_send_buffer_size(stream, SEND_BUFFER);
    let user_timeout = u32::try_from(user_timeout(config).as_millis()).unwrap_or(u32::MAX);
    let _ = sockopt::set_tcp_user_timeout(stream, user_timeout);
    if let Some(idle) = config.keepalive {
        let idle = idle.max(Duration::from_secs(1));
        let _ = sockopt::set_socket_keepalive(stream, true);
        let _ = sockopt::set_tcp_keepidle(stream, idle);
        let _ = sockopt::set_tcp_keepintvl(
            stream,
            (idle / KEEPALIVE_PROBES).max(Duration::from_secs(1)),
        );
        let _ = sockopt::set_tcp_keepcnt(stream, KEEPALIVE_PROBES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_sockets_get_nodelay_and_keepalive_timing() -> io::Result<()> {
        let listener = listen("127.0.0.1:0".parse().expect("an address"), 16)?;
        let _client = TcpStream::connect(listener.local_addr()?)?;
        let (accepted, _) = listener.accept()?;
        let config = Config {
            keepalive: Some(Duration::from_secs(20)),
            ..Config::default()
        };
        configure(&accepted, &config);
        assert!(accepted.nodelay()?);
        assert!(sockopt::socket_keepalive(&accepted)?);
        assert_eq!(sockopt::tcp_keepidle(&accepted)?, Duration::from_secs(20));
        assert_eq!(sockopt::tcp_keepintvl(&accepted)?, Duration::from_secs(5));
        assert_eq!(sockopt::tcp_keepcnt(&accepted)?, KEEPALIVE_PROBES);
        // Twice the longer of keepalive (20 s) and write_timeout (30 s).
        assert_eq!(sockopt::tcp_user_timeout(&accepted)?, 60_000);
        Ok(())
    }

    #[test]
    fn user_timeout_follows_keepalive_and_write_timeout() {
        let secs = Duration::from_secs;
        let with = |keepalive, write_timeout| Config {
            keepalive,
            write_timeout,
            ..Config::default()
        };
        assert_eq!(user_timeout(&Config::default()), secs(120));
        assert_eq!(user_timeout(&with(Some(secs(2)), secs(2))), secs(4));
        assert_eq!(user_timeout(&with(Some(secs(2)), secs(30))), secs(60));
        assert_eq!(user_timeout(&with(None, secs(30))), secs(60));
    }

    #[test]
    fn listener_gets_the_requested_backlog() -> io::Result<()> {
        const BACKLOG: u32 = 1024;
        // The kernel does not report the backlog. Nothing accepts here, so with std's 128 the
        // 130th connect's SYN is dropped, and so is every retry: it never completes. With the
        // backlog applied each completes at once; 10 s is slack for a loaded machine.
        let listener = listen("127.0.0.1:0".parse().expect("an address"), BACKLOG)?;
        let addr = listener.local_addr()?;
        let clients: Vec<TcpStream> = (0..600)
            .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(10)))
            .collect::<io::Result<_>>()?;
        assert_eq!(clients.len(), 600);
        Ok(())
    }
}
