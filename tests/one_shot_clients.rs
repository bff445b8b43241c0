//! One-shot clients (`printf … | nc -N host port`) and clients that half-close: a last line
//! without a newline is a line, and whatever the server says before it closes arrives.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;

use common::process::{lines_of, recv_until};
use common::{config, TestServer, TIMEOUT};
use smolchat::Config;

/// `nc -N` fed `input` on its standard input, as `printf input | nc -N host port` is.
struct OneShot {
    child: Child,
    lines: Receiver<String>,
}

impl OneShot {
    /// `None` (with a line saying so) where `nc` is not installed; CI installs it.
    fn run(addr: SocketAddr, input: &[u8]) -> io::Result<Option<OneShot>> {
        let installed = Command::new("sh")
            .args(["-c", "command -v nc"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(std::env::var_os("CI").is_none(), "CI must install nc");
            eprintln!("nc is not installed; skipping");
            return Ok(None);
        }
        let mut child = Command::new("nc")
            .args(["-N", &addr.ip().to_string(), &addr.port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input)?;
        // End of input: `nc -N` shuts down its sending side, as a pipe's end does.
        drop(stdin);
        let lines = lines_of(child.stdout.take().expect("piped stdout"));
        Ok(Some(OneShot { child, lines }))
    }

    fn until(&self, pred: impl Fn(&str) -> bool) -> io::Result<String> {
        recv_until(&self.lines, "nc", pred)
    }
}

impl Drop for OneShot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_last_line_without_a_newline_is_delivered() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut listener = server.connect().await?;
        let Some(nc) = OneShot::run(server.addr, b"first\nlast")? else {
            return Ok(());
        };
        let name = nc.until(|l| l.starts_with("*** you are "))?;
        let name = name["*** you are ".len()..]
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        listener.until(|l| l == format!("{name}: first")).await?;
        listener.expect(&format!("{name}: last")).await?;
        listener
            .expect(&format!("*** {name} left (connection closed)"))
            .await?;
        nc.until(|l| l == "*** bye").map(drop)
    })
}

#[test]
fn a_refused_one_shot_client_reads_why() -> io::Result<()> {
    let server = TestServer::start(Config {
        max_clients: 1,
        ..config()
    });
    smol::block_on(async {
        let _only = server.connect().await?;
        let Some(nc) = OneShot::run(server.addr, b"hi\n")? else {
            return Ok(());
        };
        nc.until(|l| l == "! server full, try again later")
            .map(drop)
    })
}

#[test]
fn a_client_that_half_closes_gets_what_was_queued_and_a_last_line() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut others = server.clients(2).await?;
        let mut client = TcpStream::connect(server.addr)?;
        client.set_read_timeout(Some(TIMEOUT))?;
        let mut welcome = Vec::new();
        let mut byte = [0];
        // Up to the end of the line that says where it is.
        while !String::from_utf8_lossy(&welcome).contains("users here: 3\n") {
            client.read_exact(&mut byte)?;
            welcome.push(byte[0]);
        }
        let joined = others[0].until(|l| l.ends_with(" joined #lobby")).await?;
        others[1].expect(&joined).await?;
        let name = joined["*** ".len()..joined.len() - " joined #lobby".len()].to_string();
        client.write_all(b"hello before I go\n")?;
        others[0]
            .expect(&format!("{name}: hello before I go"))
            .await?;
        others[1]
            .expect(&format!("{name}: hello before I go"))
            .await?;
        others[0].send("one more for you").await?;
        // Delivered to one member is queued for all of them, the half-closing client included.
        let sender = others[0].name.clone();
        others[1]
            .expect(&format!("{sender}: one more for you"))
            .await?;
        client.shutdown(Shutdown::Write)?;
        let mut rest = String::new();
        client.read_to_string(&mut rest)?;
        assert_eq!(rest, format!("{sender}: one more for you\n*** bye\n"));
        Ok(())
    })
}
