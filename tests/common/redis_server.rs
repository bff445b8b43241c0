//! A real `redis-server` per test, on a free loopback port, stopped by PID when dropped.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting redis-server may take to answer PING (it takes milliseconds).
const STARTUP: Duration = Duration::from_secs(10);

/// A running redis-server; killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts one with no persistence on a free port of 127.0.0.1; `extra` are more
    /// `redis-server` arguments (e.g. `--user ...`).
    pub fn start(extra: &[&str]) -> io::Result<RedisServer> {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut last = None;
        // Another process may take the port between our probe and redis binding it: retry.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut server = RedisServer {
                child: None,
                port,
                extra: extra.clone(),
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    /// Its process id, while it runs.
    #[allow(dead_code)] // reason: the benchmark reads its CPU time, the cluster tests stop it
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL, by PID) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.launch()
    }

    fn launch(&mut self) -> io::Result<()> {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run redis-server ({e}); install the Debian package redis-server"
                    ),
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP;
        loop {
            if self.answers_ping() {
                return Ok(());
            }
            let exited = self.child.as_mut().map(|c| c.try_wait());
            if let Some(Ok(Some(status))) = exited {
                self.child = None;
                return Err(io::Error::other(format!("redis-server exited: {status}")));
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(io::Error::other("redis-server never answered PING"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it answers at all: `+PONG`, or `-NOAUTH` when a password is required.
    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 1];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && matches!(reply[0], b'+' | b'-')
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
