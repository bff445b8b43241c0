//! The real binary, chatted with through two real `nc` processes, as a user would.

mod common;

use std::io::{self, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::process::{lines_of, recv_until, Binary};

/// An `nc` process whose stdout lines arrive on a channel.
struct Nc {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Nc {
    fn connect(addr: std::net::SocketAddr) -> io::Result<Nc> {
        let mut child = Command::new("nc")
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let lines = lines_of(child.stdout.take().expect("piped stdout"));
        Ok(Nc { child, lines })
    }

    fn until(&self, pred: impl Fn(&str) -> bool) -> io::Result<String> {
        recv_until(&self.lines, "nc", pred)
    }

    fn type_line(&mut self, line: &str) -> io::Result<()> {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{line}")?;
        stdin.flush()
    }
}

impl Drop for Nc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nc_available() -> bool {
    Command::new("sh")
        .args(["-c", "command -v nc"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn two_nc_users_chat_through_the_binary() -> io::Result<()> {
    if !nc_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "nc is missing: .ci/run must install netcat-openbsd"
        );
        eprintln!("nc not installed; skipping the end-to-end test");
        return Ok(());
    }
    let _server = Binary::start(&["--bind", "127.0.0.1", "--port", "0", "--flood-rate", "0"])
        .and_then(|server| {
            let mut alice = Nc::connect(server.addr)?;
            let alice_name = alice.until(|l| l.starts_with("*** you are "))?;
            let alice_name = alice_name.split(' ').nth(3).unwrap_or_default().to_string();
            let bob = Nc::connect(server.addr)?;
            let bob_name = bob.until(|l| l.starts_with("*** you are "))?;
            let bob_name = bob_name.split(' ').nth(3).unwrap_or_default().to_string();
            alice.until(|l| l == format!("*** {bob_name} joined #lobby"))?;

            alice.type_line("hello from nc")?;
            bob.until(|l| l == format!("{alice_name}: hello from nc"))?;
            alice.type_line("/nick alice")?;
            bob.until(|l| l == format!("*** {alice_name} is now alice"))?;
            alice.type_line("/me waves")?;
            bob.until(|l| l == "* alice waves")?;
            Ok(server)
        })?;
    Ok(())
}
