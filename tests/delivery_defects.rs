//! Delivery defects an adversarial test found: lines lost when their sender closes, removed
//! clients that keep talking, over-long lines that bypass flood control, rename notices past
//! `announce_limit`, an unbounded MOTD, and an unfinished-line timer that never restarts.

mod common;

use std::io::{self, Write};
use std::thread;
use std::time::{Duration, Instant};

use common::process::{run, Binary};
use common::traffic::{self, Member, LOCALHOST};
use common::{config, Client, TestServer};
use futures_lite::future;
use smol::io::AsyncWriteExt;
use smol::Timer;
use smolchat::{Config, Server};

#[test]
fn lines_read_before_their_sender_closed_all_reach_the_room() -> io::Result<()> {
    // Default flood control: 5 lines at once, then 2 a second, so the last of 15 goes out
    // about 5 s after they were sent, long after the sender closed.
    let server = TestServer::start(Config::default());
    smol::block_on(async {
        let mut c = server.clients(3).await?;
        let mut chatter = c.pop().expect("three clients");
        let mut listener = c.pop().expect("three clients");
        let closer = c.pop().expect("three clients");
        let name = closer.name.clone();
        let burst: String = (0..15).map(|i| format!("line {i}\n")).collect();
        let (_, mut writer) = closer.into_parts();
        writer.write_all(burst.as_bytes()).await?;
        // Closes normally: nothing unread, so a FIN; the server's next writes to it fail.
        drop(writer);

        // The room keeps chatting (within flood control), so the server keeps writing to the
        // closed socket while the closer's lines wait.
        let chatting = async {
            for i in 0..30 {
                Timer::after(Duration::from_millis(500)).await;
                chatter.send(&format!("chat {i}")).await?;
            }
            io::Result::Ok(())
        };
        let listening = async {
            let mut next = 0;
            let deadline = Instant::now() + Duration::from_secs(12);
            while next < 15 {
                let line = listener.line().await?;
                if Instant::now() > deadline {
                    break;
                }
                if let Some(text) = line.strip_prefix(&format!("{name}: ")) {
                    assert_eq!(text, format!("line {next}"), "out of order");
                    next += 1;
                } else if line.starts_with(&format!("*** {name} left")) {
                    // Leaving is fine, after the lines; not instead of them.
                    assert_eq!(next, 15, "{name} left after only {next} of its 15 lines");
                }
            }
            assert_eq!(next, 15, "only {next} of 15 lines arrived within 12 s");
            io::Result::Ok(())
        };
        future::or(listening, async {
            chatting.await?;
            Err(io::Error::other("the chat ended before the lines arrived"))
        })
        .await
    })
}

#[test]
fn a_kicked_client_that_keeps_sending_reaches_nobody_and_is_closed() -> io::Result<()> {
    let server = TestServer::start(Config {
        // Room for everything queued below: only the kick may remove the client.
        queue_bytes: 1 << 30,
        queue_lines: 1 << 20,
        ..config()
    });
    let kernel = traffic::kernel_send_buffer()?;
    smol::block_on(async {
        let mut target = server.connect().await?;
        let stream = traffic::connect_from(LOCALHOST, server.addr, Some(4096))?;
        let kicked = Client::from_std(stream).await?;
        let name = kicked.name.clone();
        target.expect(&format!("*** {name} joined #lobby")).await?;
        // More than the kernel buffers for it, so its writer is stuck when it is kicked: the
        // connection cannot end by flushing, only by removal stopping its reader.
        let notice = "n".repeat(1000);
        for _ in 0..(2 * kernel / 1000 + 1000) {
            server
                .handle
                .tell(&name, &notice)
                .expect("the client exists");
        }
        server
            .handle
            .kick(&name, "spam")
            .expect("the client exists");
        let kicked_at = Instant::now();

        let (mut reader, mut writer) = kicked.into_parts();
        let target_name = target.name.clone();
        // It keeps sending: for 200 ms before it reads anything, then for up to 4 s more while
        // it reads, or until the server closes the connection.
        let sending = smol::spawn(async move {
            for i in 0..200 {
                let line = format!("/msg {target_name} after the kick {i}\n");
                if writer.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
                Timer::after(Duration::from_millis(20)).await;
            }
        });
        Timer::after(Duration::from_millis(200)).await;
        // Closing a socket whose client is still sending makes the kernel reset it, so a reset
        // counts as closed too (and may cut what was queued, the kick notice with it).
        let reading = async {
            let mut rest = Vec::new();
            let mut chunk = vec![0; 64 * 1024];
            loop {
                match smol::io::AsyncReadExt::read(&mut reader, &mut chunk).await {
                    Ok(0) => return Ok((rest, false)),
                    Ok(n) => rest.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                        return Ok((rest, true))
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let closed = common::timeout(reading).await;
        sending.cancel().await;
        let closed_after = kicked_at.elapsed();
        let (rest, reset) = closed.map_err(|e| io::Error::other(format!("never closed: {e}")))?;
        eprintln!("closed {closed_after:.2?} after the kick (reset: {reset})");
        assert!(
            closed_after < Duration::from_secs(5),
            "closed after {closed_after:?}"
        );
        assert!(
            reset || rest.ends_with(b"*** you were kicked: spam\n"),
            "last line {:?}",
            String::from_utf8_lossy(&rest[rest.len().saturating_sub(80)..])
        );

        // The connection is over, so anything its reader relayed was queued before this.
        target.send("/rooms").await?;
        let mut leaked = 0;
        loop {
            let line = target.line().await?;
            if line.starts_with("*** rooms: ") {
                break;
            }
            if line.starts_with(&format!("[pm from {name}] ")) {
                leaked += 1;
            } else {
                assert_eq!(line, format!("*** {name} left (kicked: spam)"));
            }
        }
        assert_eq!(
            leaked, 0,
            "{leaked} private messages arrived after the kick"
        );
        Ok(())
    })
}

#[test]
fn over_long_lines_count_toward_flood_control() -> io::Result<()> {
    // Default flood control: 5 lines at once, then 2 a second.
    let server = Binary::start(&["--bind", "127.0.0.1:0", "-q"])?;
    let pid = server.child.id();
    let mut client = Member::connect(server.addr)?;
    client.read_timeout(Duration::from_millis(100))?;
    let mut stream = client.sender()?;
    stream.set_write_timeout(Some(Duration::from_millis(100)))?;
    let cpu_before = traffic::cpu_time(pid)?;
    let start = Instant::now();
    let sending = Duration::from_secs(3);

    let writer = thread::spawn(move || {
        let line = format!("{}\n", "x".repeat(2049));
        let batch = line.repeat(16);
        while start.elapsed() < sending {
            // A write cut short by its timeout leaves part of a line: that joins the next one
            // into a longer line, still over the limit.
            let _ = stream.write_all(batch.as_bytes());
        }
    });
    let (mut replies, mut other) = (0, 0);
    // The replies to the lines sent in 3 s, and 1 s more for any already accepted.
    while start.elapsed() < sending + Duration::from_secs(1) {
        match client.line() {
            Ok(line) if line == "! line too long (over 2048 bytes); it was not sent" => {
                replies += 1;
            }
            Ok(_) => other += 1,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                return Err(io::Error::other(format!(
                    "disconnected after {replies} replies: {e}"
                )))
            }
        }
    }
    let cpu = traffic::cpu_time(pid)? - cpu_before;
    writer.join().expect("writer panicked");
    eprintln!("{replies} error replies in 4 s; server CPU {cpu:?}");
    assert_eq!(other, 0, "unexpected lines");
    // 5 at once + 2 a second for 4 s is 13; twice that leaves room for timing.
    assert!(replies <= 30, "{replies} error replies in 4 s");
    assert!(
        cpu < Duration::from_millis(500),
        "server used {cpu:?} of CPU"
    );
    Ok(())
}

#[test]
fn rename_notices_respect_the_announce_limit() -> io::Result<()> {
    // A room of three is over the limit of one: no joins, leaves or renames are announced.
    let server = TestServer::start(Config {
        announce_limit: 1,
        ..config()
    });
    smol::block_on(async {
        let mut first = server.connect().await?;
        let mut second = server.connect().await?;
        let mut renamer = server.connect().await?;
        renamer.nick("bob").await?;
        renamer.send("hello").await?;
        // Each sees the rename's effect, and nothing announced it.
        first.expect("bob: hello").await?;
        second.expect("bob: hello").await
    })
}

#[test]
fn a_motd_over_64_kib_is_refused_at_start() -> io::Result<()> {
    let motd = "welcome to the server, and please read the rules\n".repeat(2000);
    assert!(motd.len() > 64 * 1024);
    let config = Config {
        motd: Some(motd.clone()),
        ..Config::default()
    };
    match Server::bind("127.0.0.1:0", config) {
        Ok(_) => panic!("a {} byte MOTD was accepted", motd.len()),
        Err(e) => {
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains("motd"), "{e}");
        }
    }

    let path = std::env::temp_dir().join(format!("smolchat-big-motd-{}.txt", std::process::id()));
    std::fs::write(&path, &motd)?;
    let result = run(&[
        "--bind",
        "127.0.0.1:0",
        "--motd-file",
        path.to_str().expect("utf-8 path"),
    ]);
    let _ = std::fs::remove_file(&path);
    let (code, _, stderr) = result?;
    assert_eq!(code, Some(2), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("Try 'smolchat --help'"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(
        errors[0].starts_with("smolchat: ") && errors[0].contains("motd"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn the_unfinished_line_timer_restarts_with_each_new_line() -> io::Result<()> {
    let server = TestServer::start(Config {
        partial_line_timeout: Duration::from_secs(3),
        ..config()
    });
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        let (sender, listener) = c.split_at_mut(1);
        let (sender, listener) = (&mut sender[0], &mut listener[0]);
        // Every piece ends one line and starts the next: no line stays unfinished over 1 s,
        // but some line is unfinished all the time, for 8 s.
        sender.send_raw(b"line 0 starts").await?;
        for i in 1..=8 {
            Timer::after(Duration::from_secs(1)).await;
            sender
                .send_raw(format!(" and ends\nline {i} starts").as_bytes())
                .await?;
            listener
                .expect(&format!("{}: line {} starts and ends", sender.name, i - 1))
                .await?;
        }
        sender.send_raw(b" and ends\n").await?;
        listener
            .expect(&format!("{}: line 8 starts and ends", sender.name))
            .await?;
        sender.sync().await
    })
}
