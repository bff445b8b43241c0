//! Runs the real `smolchat` binary and reads its stderr with timeouts.

use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use super::TIMEOUT;

/// A running `smolchat` process; killed on drop if still running.
pub struct Binary {
    pub child: Child,
    stderr: Receiver<String>,
    pub addr: SocketAddr,
}

impl Binary {
    /// Starts the binary and waits for the line saying where it listens.
    pub fn start(args: &[&str]) -> io::Result<Binary> {
        Binary::start_with(Command::new(env!("CARGO_BIN_EXE_smolchat")).args(args))
    }

    pub fn start_with(command: &mut Command) -> io::Result<Binary> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = lines_of(child.stderr.take().expect("piped stderr"));
        let mut binary = Binary {
            child,
            stderr,
            addr: "0.0.0.0:0".parse().expect("an address"),
        };
        let line = binary.stderr_until(|l| l.contains(" listening on "))?;
        let addr = line
            .split(" listening on ")
            .nth(1)
            .and_then(|rest| rest.split(';').next());
        binary.addr = addr
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| io::Error::other(format!("no address in {line:?}")))?;
        Ok(binary)
    }

    /// Reads stderr lines until one satisfies `pred`.
    pub fn stderr_until(&mut self, pred: impl Fn(&str) -> bool) -> io::Result<String> {
        recv_until(&self.stderr, "stderr", pred)
    }

    /// The next stderr line, if one arrives within `within`.
    pub fn stderr_next(&mut self, within: Duration) -> Option<String> {
        self.stderr.recv_timeout(within).ok()
    }

    /// Sends a signal (by name, e.g. "TERM") to the process.
    pub fn signal(&self, name: &str) -> io::Result<()> {
        signal(self.child.id(), name)
    }

    /// Waits for the process to exit, failing after [`TIMEOUT`].
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        wait_timeout(&mut self.child, TIMEOUT)
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal (by name, e.g. "STOP") to a process by PID.
pub fn signal(pid: u32, name: &str) -> io::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!("kill -{name} {pid} failed")));
    }
    Ok(())
}

/// Reads `reader` line by line on a thread; the lines arrive on the returned channel.
pub fn lines_of(reader: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Receives lines until one satisfies `pred`, failing after [`TIMEOUT`].
pub fn recv_until(
    lines: &Receiver<String>,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> io::Result<String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .map_err(|e| io::Error::new(io::ErrorKind::TimedOut, format!("{what}: {e}")))?;
        if pred(&line) {
            return Ok(line);
        }
    }
}

/// Waits for a child to exit, failing after `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "process did not exit",
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the binary to completion with `args`, returning its exit code and stderr.
pub fn run(args: &[&str]) -> io::Result<(Option<i32>, String, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smolchat"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Err(e) = wait_timeout(&mut child, TIMEOUT) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    let output = child.wait_with_output()?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into(),
        String::from_utf8_lossy(&output.stderr).into(),
    ))
}

/// Splits a log line `2026-01-02T03:04:05.678Z LEVEL message` into level and message, checking
/// the timestamp's shape.
pub fn log_parts(line: &str) -> Option<(&str, &str)> {
    let (time, rest) = line.split_once(' ')?;
    let shape = time.len() == 24
        && time.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            19 => b == b'.',
            23 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    let (level, message) = rest.split_once(' ')?;
    (shape && ["ERROR", "WARN", "NOTICE", "INFO", "DEBUG"].contains(&level))
        .then_some((level, message))
}

/// The message of a log line at `level`, if it is one.
pub fn log_message<'a>(line: &'a str, level: &str) -> Option<&'a str> {
    log_parts(line).filter(|(l, _)| *l == level).map(|(_, m)| m)
}
