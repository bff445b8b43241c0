//! Whatever bytes a client sends, others see safe text and the server stays up.

mod common;

use std::io::{self, Write};
use std::time::{Duration, Instant};

use common::{config, eventually, TestServer};
use smolchat::Config;

#[test]
fn overlong_line_is_refused_and_the_connection_stays() -> io::Result<()> {
    let server = TestServer::start(Config {
        max_line: 64,
        ..config()
    });
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        let long = "x".repeat(65);
        c[0].send(&long).await?;
        c[0].expect("! line too long (over 64 bytes); it was not sent")
            .await?;
        c[0].send(&"y".repeat(64)).await?;
        c[1].expect(&format!("guest1: {}", "y".repeat(64))).await?;
        assert_eq!(server.handle.stats().lines_too_long, 1);
        Ok(())
    })
}

#[test]
fn multibyte_characters_are_never_split_by_the_limit() -> io::Result<()> {
    let server = TestServer::start(Config {
        max_line: 10,
        ..config()
    });
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        c[0].send("ééééé").await?; // 10 bytes: fits
        c[1].expect("guest1: ééééé").await?;
        c[0].send("éééé€").await?; // 11 bytes: refused whole
        c[0].expect("! line too long (over 10 bytes); it was not sent")
            .await?;
        c[0].send("ok").await?;
        c[1].expect("guest1: ok").await
    })
}

#[test]
fn invalid_utf8_and_nul_bytes_become_replacement_characters() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        c[0].send_raw(b"bad \xc3\x28 \x80 bytes\n\0\nnul\0inside\n")
            .await?;
        c[1].expect("guest1: bad \u{fffd}( \u{fffd} bytes").await?;
        c[1].expect("guest1: \u{fffd}").await?;
        c[1].expect("guest1: nul\u{fffd}inside").await
    })
}

#[test]
fn terminal_control_sequences_never_reach_other_users() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        let attacks: [&[u8]; 7] = [
            b"\x1b[2J\x1b[H cleared your screen",
            b"\x1b]0;owned\x07 set your title",
            b"\x1b]52;c;cm0gLXJmIH4=\x07 wrote your clipboard",
            b"harmless\r*** admin: forged line start",
            "\u{202e}reversed\u{202c} text".as_bytes(),
            b"\xc2\x9b31m 8-bit CSI",
            b"tab\there",
        ];
        for attack in attacks {
            c[0].send_raw(&[attack, b"\n"].concat()).await?;
            let line = c[1].line().await?;
            assert!(line.starts_with("guest1: "), "{line:?}");
            let text = &line["guest1: ".len()..];
            assert!(
                !text
                    .chars()
                    .any(|ch| ch.is_control() || ('\u{202a}'..='\u{202e}').contains(&ch)),
                "{line:?}"
            );
        }
        c[0].send_raw(b"/quit \x1b[31mred\r\n").await?;
        c[1].expect("*** guest1 left (quit: \u{fffd}[31mred)").await
    })
}

#[test]
fn telnet_negotiation_is_not_relayed() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        // What a telnet client sends: DO ECHO, WILL SGA, a NAWS subnegotiation, then a line.
        c[0].send_raw(
            b"\xff\xfd\x01\xff\xfb\x03\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0hello from telnet\r\n",
        )
        .await?;
        c[1].expect("guest1: hello from telnet").await
    })
}

#[test]
fn unfinished_line_times_out_but_silence_between_lines_does_not() -> io::Result<()> {
    let server = TestServer::start(Config {
        partial_line_timeout: Duration::from_millis(300),
        ..config()
    });
    smol::block_on(async {
        // The quiet client connects first, so it has been silent longer than the slowloris.
        let mut c = server.clients(3).await?;
        let started = Instant::now();
        c[2].send_raw(b"never finished").await?;
        c[2].expect("! disconnected: your line stayed unfinished too long")
            .await?;
        c[2].expect_eof().await?;
        assert!(started.elapsed() >= Duration::from_millis(300));
        c[0].expect("*** guest3 left (unfinished line timed out)")
            .await?;
        c[1].expect("*** guest3 left (unfinished line timed out)")
            .await?;
        c[1].send("still here").await?;
        c[0].expect("guest2: still here").await
    })
}

#[test]
fn flood_control_delays_a_flooder_without_losing_lines() -> io::Result<()> {
    let server = TestServer::start(Config {
        flood_burst: 3,
        flood_rate: 20.0,
        ..Config::default()
    });
    smol::block_on(async {
        let mut c = server.clients(3).await?;
        let started = Instant::now();
        let flood: String = (0..13).map(|i| format!("flood {i}\n")).collect();
        c[0].send_raw(flood.as_bytes()).await?;
        for i in 0..13 {
            c[1].expect(&format!("guest1: flood {i}")).await?;
        }
        // Three lines pass at once, the other ten wait for tokens refilled at 20 per second.
        assert!(
            started.elapsed() >= Duration::from_millis(450),
            "{:?}",
            started.elapsed()
        );
        // Counted: how many depends on how fast the server read (tokens refill meanwhile).
        assert!(server.handle.stats().flood_delayed >= 1);
        // The others were never held up: another client's line goes straight through.
        c[2].send("unaffected").await?;
        c[1].expect("guest3: unaffected").await
    })
}

#[test]
fn flood_rate_zero_turns_flood_control_off() -> io::Result<()> {
    let server = TestServer::start(Config {
        flood_burst: 1,
        flood_rate: 0.0,
        ..Config::default()
    });
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        let flood: String = (0..200).map(|i| format!("{i}\n")).collect();
        c[0].send_raw(flood.as_bytes()).await?;
        for i in 0..200 {
            c[1].expect(&format!("guest1: {i}")).await?;
        }
        assert_eq!(server.handle.stats().flood_delayed, 0);
        Ok(())
    })
}

#[test]
fn reset_connection_is_removed_promptly() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        let (reader, writer) = c.pop().expect("two clients").into_parts();
        // SO_LINGER 0 makes close send a RST instead of a FIN.
        rustix::net::sockopt::set_socket_linger(&writer, Some(Duration::ZERO))?;
        drop((reader, writer));
        let line = c[0].line().await?;
        assert!(line.starts_with("*** guest2 left (connection"), "{line:?}");
        eventually("the reset client is gone", || {
            server.handle.stats().clients == 1
        })
        .await
    })
}

#[test]
fn away_whois_and_ignore_are_sanitized_limited_and_flood_controlled() -> io::Result<()> {
    let server = TestServer::start(Config {
        max_line: 64,
        flood_burst: 3,
        flood_rate: 20.0,
        ..Config::default()
    });
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        c[0].send("/away \u{1b}[2Jgone\u{7}").await?;
        c[0].expect("*** you are away: \u{fffd}[2Jgone\u{fffd}")
            .await?;
        let long = format!("/away {}", "x".repeat(60));
        c[0].send(&long).await?;
        c[0].expect("! line too long (over 64 bytes); it was not sent")
            .await?;
        // Twelve commands at once: three pass, the others wait for tokens.
        let started = Instant::now();
        let burst: String = (0..4)
            .map(|_| "/whois guest1\n/ignore guest1\n/unignore guest1\n")
            .collect();
        c[1].send_raw(burst.as_bytes()).await?;
        for _ in 0..4 {
            let whois = c[1].line().await?;
            assert!(
                whois.ends_with("; away: \u{fffd}[2Jgone\u{fffd}"),
                "the long line changed nothing: {whois}"
            );
            c[1].expect("*** you now ignore guest1").await?;
            c[1].expect("*** you no longer ignore guest1").await?;
        }
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        assert!(server.handle.stats().flood_delayed >= 1);
        Ok(())
    })
}

#[test]
fn input_that_never_ends_a_line_is_flood_controlled_too() -> io::Result<()> {
    // Default flood control: 5 lines at once, then 2 a second, each line up to 2048 bytes.
    let server = TestServer::start(Config::default());
    let client = std::net::TcpStream::connect(server.addr)?;
    client.set_nonblocking(true)?;
    // Telnet no-ops (IAC NOP) and one line that never ends: neither is ever a line.
    let noise: Vec<u8> = [0xff_u8, 0xf1].repeat(16 * 1024);
    let endless = vec![b'x'; 32 * 1024];
    let mut sent = 0_usize;
    let started = Instant::now();
    let mut turn = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let chunk = if turn % 2 == 0 { &noise } else { &endless };
        turn += 1;
        match (&client).write(chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => return Err(e),
        }
    }
    // Read at flood speed (4 KiB a second after the burst), the server leaves the rest to the
    // kernel's buffers, a few megabytes at most; read at full speed it would take gigabytes.
    assert!(sent < 32 << 20, "the server read {sent} bytes in 3 s");
    Ok(())
}
