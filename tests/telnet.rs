//! Telnet clients: negotiation is answered, Ctrl-C does not make the client deaf, 0xFF is data
//! unless a command follows, and character mode's CR NUL ends a line.

mod common;

use std::io::{self, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;

use common::process::{lines_of, recv_until};
use common::{Client, TestServer};

#[test]
fn ff_without_a_command_is_data_and_swallows_no_line_end() -> io::Result<()> {
    let server = TestServer::start(common::config());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        c[0].send_raw(b"latin1 \xffsome\nbefore\xff\nafter\n")
            .await?;
        let from = c[0].name.clone();
        c[1].expect(&format!("{from}: latin1 \u{fffd}some")).await?;
        c[1].expect(&format!("{from}: before\u{fffd}")).await?;
        c[1].expect(&format!("{from}: after")).await
    })
}

#[test]
fn cr_nul_ends_a_line_as_character_mode_telnet_sends_it() -> io::Result<()> {
    let server = TestServer::start(common::config());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        c[0].send_raw(b"one\r\0two\r\0").await?;
        let from = c[0].name.clone();
        c[1].expect(&format!("{from}: one")).await?;
        c[1].expect(&format!("{from}: two")).await
    })
}

#[test]
fn negotiation_and_interrupts_are_not_chat() -> io::Result<()> {
    let server = TestServer::start(common::config());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        // Ctrl-C (IAC IP, IAC DO TIMING-MARK), abort output, "mode character" (IAC DO SGA,
        // IAC DO ECHO) and a window-size subnegotiation, around one line.
        c[0].send_raw(b"\xff\xf4\xff\xfd\x06\xff\xf5\xff\xfd\x03\xff\xfd\x01hel")
            .await?;
        c[0].send_raw(b"\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0lo\n")
            .await?;
        let from = c[0].name.clone();
        c[1].expect(&format!("{from}: hello")).await
    })
}

/// Reads exactly `expected.len()` bytes and compares them.
async fn expect_bytes(client: &mut Client, expected: &[u8]) -> io::Result<()> {
    assert_eq!(client.bytes(expected.len()).await?, expected);
    Ok(())
}

#[test]
fn ctrl_c_is_answered_with_will_timing_mark() -> io::Result<()> {
    let server = TestServer::start(common::config());
    smol::block_on(async {
        let mut c = server.connect().await?;
        c.send_raw(&[255, 244, 255, 253, 6]).await?;
        expect_bytes(&mut c, &[255, 251, 6]).await
    })
}

#[test]
fn options_are_refused_and_are_you_there_answered() -> io::Result<()> {
    let server = TestServer::start(common::config());
    smol::block_on(async {
        let mut c = server.connect().await?;
        // DO SGA, WILL NAWS, DONT ECHO (no answer: already so), AYT.
        c.send_raw(&[255, 253, 3, 255, 251, 31, 255, 254, 1, 255, 246])
            .await?;
        expect_bytes(&mut c, &[255, 252, 3, 255, 254, 31]).await?;
        c.expect("*** smolchat is here").await
    })
}

/// The real `telnet` on a pseudo-terminal (through `script`), so Ctrl-C is a keystroke.
struct Telnet {
    child: Child,
    stdin: ChildStdin,
    out: Receiver<String>,
}

impl Telnet {
    /// Starts `telnet`, or returns `None` (with a line saying so) where it is not installed.
    fn start(addr: std::net::SocketAddr) -> io::Result<Option<Telnet>> {
        let installed = |tool: &str| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !installed("telnet") || !installed("script") {
            eprintln!("telnet or script is not installed; skipping (.ci/run installs them)");
            return Ok(None);
        }
        let telnet = format!("telnet {} {}", addr.ip(), addr.port());
        let mut child = Command::new("script")
            .args(["-q", "-f", "-e", "-c", &telnet, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let out = lines_of(child.stdout.take().expect("piped stdout"));
        Ok(Some(Telnet { child, stdin, out }))
    }

    fn type_keys(&mut self, keys: &[u8]) -> io::Result<()> {
        self.stdin.write_all(keys)?;
        self.stdin.flush()
    }

    /// Reads the terminal's lines until one (without its `\r`) satisfies `pred`.
    fn until(&self, pred: impl Fn(&str) -> bool) -> io::Result<String> {
        recv_until(&self.out, "telnet", |l| pred(l.trim_end_matches('\r')))
    }
}

impl Drop for Telnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn real_telnet_chats_in_line_mode() -> io::Result<()> {
    let server = TestServer::start(common::config());
    let Some(mut telnet) = Telnet::start(server.addr)? else {
        return Ok(());
    };
    let you_are = telnet.until(|l| l.starts_with("*** you are "))?;
    let name = you_are["*** you are ".len()..]
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    smol::block_on(async {
        let mut other = server.connect().await?;
        telnet.until(|l| l == format!("*** {} joined #lobby", other.name))?;
        telnet.type_keys(b"hello from telnet\n")?;
        other.expect(&format!("{name}: hello from telnet")).await?;
        other.send("hello back").await?;
        telnet.until(|l| l == format!("{}: hello back", other.name))?;
        Ok(())
    })
}

#[test]
fn real_telnet_hears_the_room_after_ctrl_c() -> io::Result<()> {
    let server = TestServer::start(common::config());
    let Some(mut telnet) = Telnet::start(server.addr)? else {
        return Ok(());
    };
    telnet.until(|l| l.starts_with("*** you are "))?;
    smol::block_on(async {
        let mut other = server.connect().await?;
        telnet.until(|l| l == format!("*** {} joined #lobby", other.name))?;
        // Ctrl-C: telnet sends IAC IP IAC DO TIMING-MARK and shows nothing until answered.
        telnet.type_keys(b"\x03")?;
        // A line typed after Ctrl-C reaches the server after the negotiation: once the room has
        // it, the answer is queued, so what the room says next is after it too (telnet drops
        // whatever arrives before the answer, which is how it should be).
        telnet.type_keys(b"after ctrl-c\r\n")?;
        other.until(|l| l.ends_with(": after ctrl-c")).await?;
        other.send("can you hear me").await?;
        telnet.until(|l| l.ends_with(&format!("{}: can you hear me", other.name)))?;
        Ok(())
    })
}
