//! TLS beside plain TCP: real handshakes over real sockets, with certificates made at test time.
#![cfg(feature = "tls")]

mod common;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{lines_of, recv_until, run, wait_timeout, Binary};
use common::tls::{Certs, TlsClient};
use common::{config, eventually, Client, TestServer, TIMEOUT};
use smolchat::{Config, Event, Server, Tls};

/// TLS on 127.0.0.1:0 with the test's certificate.
fn tls(certs: &Certs) -> Tls {
    Tls::new(&certs.chain, &certs.key, ([127, 0, 0, 1], 0).into())
}

fn start(certs: &Certs, config: Config) -> (TestServer, SocketAddr) {
    let server = TestServer::start(Config {
        tls: Some(tls(certs)),
        ..config
    });
    let tls_addr = server.tls_addr.expect("the server serves TLS");
    (server, tls_addr)
}

#[test]
fn tls_and_plain_clients_chat_both_ways() -> io::Result<()> {
    let Some(certs) = Certs::make()? else {
        return Ok(());
    };
    let (server, tls_addr) = start(&certs, config());
    smol::block_on(async {
        let mut plain = server.connect().await?;
        let mut secure = TlsClient::connect(tls_addr, &certs.ca)?;
        let name = secure.name.clone();
        plain.expect(&format!("*** {name} joined #lobby")).await?;

        secure.send("hello from TLS")?;
        plain.expect(&format!("{name}: hello from TLS")).await?;
        plain.send("hello from plain").await?;
        secure.expect(&format!("{}: hello from plain", plain.name))?;
        secure.send(&format!("/msg {} psst", plain.name))?;
        secure.expect(&format!("[pm to {}] psst", plain.name))?;
        plain.expect(&format!("[pm from {name}] psst")).await?;

        secure.send("/quit done")?;
        secure.expect("*** bye")?;
        secure.expect_eof()?;
        plain
            .expect(&format!("*** {name} left (quit: done)"))
            .await?;
        eventually("the TLS client's slot is freed", || {
            server.handle.stats().clients == 1
        })
        .await
    })
}

/// A command-line TLS client whose stdin is typed into and whose stdout lines arrive on a
/// channel; killed on drop.
struct Tool {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Tool {
    /// Runs `program` with `args`, or `None` (with a message) when it is not installed outside
    /// CI; in CI it must be there.
    fn spawn(program: &str, args: &[&str]) -> io::Result<Option<Tool>> {
        let installed = Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(
                std::env::var_os("CI").is_none(),
                "{program} is missing: .ci/run must install it"
            );
            eprintln!("{program} not installed; skipping this test");
            return Ok(None);
        }
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let lines = lines_of(child.stdout.take().expect("piped stdout"));
        Ok(Some(Tool { child, lines }))
    }

    fn until(&self, pred: impl Fn(&str) -> bool) -> io::Result<String> {
        recv_until(&self.lines, "TLS client", pred)
    }

    fn type_line(&mut self, line: &str) -> io::Result<()> {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{line}")?;
        stdin.flush()
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `program args… 127.0.0.1:PORT-or-whatever` against a TLS server and chats with a plain
/// client through it both ways; `args` gets the TLS address and the authority's file.
fn tool_chats_with_a_plain_client(
    program: &str,
    args: impl Fn(SocketAddr, &str) -> Vec<String>,
) -> io::Result<()> {
    let Some(certs) = Certs::make()? else {
        return Ok(());
    };
    let (server, tls_addr) = start(&certs, config());
    let args = args(tls_addr, &certs.ca.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    smol::block_on(async {
        let mut plain = server.connect().await?;
        let Some(mut tool) = Tool::spawn(program, &args)? else {
            return Ok(());
        };
        let you_are = tool.until(|l| l.starts_with("*** you are "))?;
        let name = you_are.split(' ').nth(3).unwrap_or_default().to_string();
        plain.expect(&format!("*** {name} joined #lobby")).await?;

        tool.type_line(&format!("hello from {program}"))?;
        plain
            .expect(&format!("{name}: hello from {program}"))
            .await?;
        plain.send("hi there").await?;
        tool.until(|l| l == format!("{}: hi there", plain.name))?;

        tool.type_line("/quit")?;
        tool.until(|l| l == "*** bye")?;
        // Ended as a user would end it (ncat waits for its input to end, even over plain TCP).
        drop(tool.child.stdin.take());
        let status = wait_timeout(&mut tool.child, TIMEOUT)?;
        assert!(status.success(), "{program}: {status}");
        plain.expect(&format!("*** {name} left (quit)")).await
    })
}

#[test]
fn openssl_s_client_chats_with_a_plain_client() -> io::Result<()> {
    tool_chats_with_a_plain_client("openssl", |addr, ca| {
        let args = [
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-CAfile",
            ca,
            "-connect",
        ];
        let mut args: Vec<String> = args.map(String::from).into();
        args.push(addr.to_string());
        args
    })
}

#[test]
fn socat_chats_with_a_plain_client() -> io::Result<()> {
    // socat checks the certificate against the authority and the address by default.
    tool_chats_with_a_plain_client("socat", |addr, ca| {
        vec!["-".into(), format!("OPENSSL:{addr},cafile={ca}")]
    })
}

#[test]
fn ncat_chats_with_a_plain_client() -> io::Result<()> {
    // ncat checks certificates only against a host name (`--ssl-verify`), and tests resolve
    // none: this one checks that ncat's TLS works with the server, not the certificate.
    tool_chats_with_a_plain_client("ncat", |addr, _| {
        vec![
            "--ssl".into(),
            addr.ip().to_string(),
            addr.port().to_string(),
        ]
    })
}

#[test]
fn unfinished_handshake_is_dropped_after_the_bound_and_frees_its_slot() -> io::Result<()> {
    const BOUND: Duration = Duration::from_secs(1);
    let Some(certs) = Certs::make()? else {
        return Ok(());
    };
    let mut tls = tls(&certs);
    tls.handshake_timeout = BOUND;
    let server = TestServer::start(Config {
        max_clients: 1,
        tls: Some(tls),
        ..config()
    });
    let tls_addr = server.tls_addr.expect("the server serves TLS");
    smol::block_on(async {
        let started = Instant::now();
        let mut silent = Client::connect_raw(tls_addr).await?;
        silent.send_raw(b"\x16\x03\x01").await?; // the start of a ClientHello, never finished
        eventually("the silent client is admitted", || {
            server.handle.stats().connections_accepted == 1
        })
        .await?;
        // It holds the only slot while it handshakes.
        let mut refused = Client::connect_raw(server.addr).await?;
        refused.expect("! server full, try again later").await?;

        silent.expect_eof().await?;
        let held = started.elapsed();
        assert!(held >= BOUND, "dropped after {held:?}, before the bound");
        eventually("the slot is freed", || server.handle.stats().clients == 0).await?;
        assert_eq!(
            server.handle.stats().tls_failed,
            1,
            "a timeout is a failure"
        );
        // Anyone gets in now, over TLS too.
        let secure = TlsClient::connect(tls_addr, &certs.ca)?;
        assert_eq!(secure.name, "guest1");
        Ok(())
    })
}

#[test]
fn tls_clients_count_toward_the_per_address_limit() -> io::Result<()> {
    let Some(certs) = Certs::make()? else {
        return Ok(());
    };
    let (server, tls_addr) = start(
        &certs,
        Config {
            max_per_ip: 2,
            limit_loopback: true,
            ..config()
        },
    );
    smol::block_on(async {
        let first = TlsClient::connect(tls_addr, &certs.ca)?;
        let _second = TlsClient::connect(tls_addr, &certs.ca)?;
        let mut plain = Client::connect_raw(server.addr).await?;
        plain
            .expect("! too many connections from your address")
            .await?;
        plain.expect_eof().await?;
        // A refused TLS client is closed before any handshake: there is no line it could read.
        let mut third = TlsClient::connect_raw(tls_addr, &certs.ca)?;
        let error = third
            .handshake()
            .expect_err("the handshake of a refused client");
        assert_ne!(
            error.kind(),
            io::ErrorKind::WouldBlock,
            "timed out: {error}"
        );
        assert_eq!(server.handle.stats().connections_refused, 2);

        drop(first);
        eventually("a slot frees up", || server.handle.stats().clients == 1).await?;
        server.connect().await.map(drop)
    })
}

#[test]
fn tls_client_that_stops_reading_is_dropped_while_others_get_every_line() -> io::Result<()> {
    // 20 MB: far more than the kernel buffers on both sides of the pump, plus the socket pair.
    const LINES: usize = 20_000;
    let Some(certs) = Certs::make()? else {
        return Ok(());
    };
    let (server, tls_addr) = start(
        &certs,
        Config {
            queue_bytes: 64 * 1024,
            ..config()
        },
    );
    smol::block_on(async {
        let mut sender = server.connect().await?;
        let mut stalled = TlsClient::connect(tls_addr, &certs.ca)?;
        let mut reader = server.connect().await?;
        sender
            .expect(&format!("*** {} joined #lobby", stalled.name))
            .await?;
        sender
            .expect(&format!("*** {} joined #lobby", reader.name))
            .await?;
        let (from, gone) = (sender.name.clone(), stalled.name.clone());
        let reading = smol::spawn(async move {
            let mut next = 0;
            let mut saw_drop = false;
            while next < LINES {
                let line = reader.line().await?;
                if line == format!("*** {gone} left (too slow)") {
                    saw_drop = true;
                    continue;
                }
                let expected = format!("{from}: {next:05} {}", "x".repeat(1000));
                assert_eq!(line, expected, "line {next} lost, changed or out of order");
                next += 1;
            }
            io::Result::Ok((saw_drop, reader))
        });
        let payload = "x".repeat(1000);
        for chunk in 0..LINES / 100 {
            let batch: String = (chunk * 100..(chunk + 1) * 100)
                .map(|i| format!("{i:05} {payload}\n"))
                .collect();
            sender.send_raw(batch.as_bytes()).await?;
        }
        let (saw_drop, _reader) = reading.await?;
        assert!(saw_drop, "the reader was told the TLS client left");
        assert_eq!(server.handle.stats().dropped_slow, 1);
        // What was queued, then the reason, then a clean end of the session.
        let rest = stalled.rest()?;
        assert!(
            rest.ends_with("! disconnected: you fell too far behind (queue full)\n"),
            "last line was {:?}",
            rest.lines().last()
        );
        eventually("the stalled client is gone", || {
            server.handle.stats().clients == 2
        })
        .await
    })
}

#[test]
fn tls_client_whose_socket_accepts_nothing_is_dropped_after_the_write_timeout() -> io::Result<()> {
    let Some(certs) = Certs::make()? else {
        return Ok(());
    };
    let (server, tls_addr) = start(
        &certs,
        Config {
            write_timeout: Duration::from_millis(300),
            // Room enough that the queue never overflows first: only the timeout can drop it.
            queue_bytes: 1 << 30,
            queue_lines: 1 << 20,
            ..config()
        },
    );
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        // It never reads and never closes.
        let stalled = TlsClient::connect(tls_addr, &certs.ca)?;
        let name = stalled.name.clone();
        c[0].expect(&format!("*** {name} joined #lobby")).await?;
        c[1].expect(&format!("*** {name} joined #lobby")).await?;
        let payload = "y".repeat(1500);
        let mut sent = 0;
        let found = loop {
            c[0].send(&payload).await?;
            sent += 1;
            let got = c[1].line().await?;
            if got == format!("*** {name} left (write timeout)") {
                break true;
            }
            assert!(got.ends_with(&payload), "unexpected {got:?}");
            // 60 MB: far more than every buffer between the server and the client holds.
            if sent > 40_000 {
                break false;
            }
        };
        assert!(found, "the stalled client was never dropped");
        // Its socket is closed and its slot freed too, though it still has not read a byte.
        eventually("the stalled client's slot is freed", || {
            server.handle.stats().clients == 2
        })
        .await?;
        drop(stalled);
        Ok(())
    })
}

#[test]
fn tls_client_whose_line_stays_unfinished_is_dropped() -> io::Result<()> {
    let Some(certs) = Certs::make()? else {
        return Ok(());
    };
    let (server, tls_addr) = start(
        &certs,
        Config {
            partial_line_timeout: Duration::from_millis(300),
            ..config()
        },
    );
    let mut trickler = TlsClient::connect(tls_addr, &certs.ca)?;
    trickler.send_raw(b"half a li")?;
    trickler.expect("! disconnected: your line stayed unfinished too long")?;
    trickler.expect_eof()?;
    smol::block_on(eventually("its slot is freed", || {
        server.handle.stats().clients == 0
    }))
}

#[test]
fn shutdown_tells_tls_clients_and_ends_their_sessions_cleanly() -> io::Result<()> {
    let Some(certs) = Certs::make()? else {
        return Ok(());
    };
    let (server, tls_addr) = start(&certs, config());
    let mut secure = TlsClient::connect(tls_addr, &certs.ca)?;
    server.handle.shutdown();
    secure.expect("*** server is shutting down")?;
    secure.expect_eof()?;
    server.stop();
    Ok(())
}

#[test]
fn tls_flooder_is_slowed_down_and_loses_nothing() -> io::Result<()> {
    const LINES: usize = 300;
    let Some(certs) = Certs::make()? else {
        return Ok(());
    };
    let (server, tls_addr) = start(
        &certs,
        Config {
            flood_burst: 5,
            flood_rate: 300.0,
            ..config()
        },
    );
    smol::block_on(async {
        let mut reader = server.connect().await?;
        let mut flooder = TlsClient::connect(tls_addr, &certs.ca)?;
        reader
            .expect(&format!("*** {} joined #lobby", flooder.name))
            .await?;
        let all: String = (0..LINES).map(|i| format!("line {i}\n")).collect();
        flooder.send_raw(all.as_bytes())?;
        for i in 0..LINES {
            reader
                .expect(&format!("{}: line {i}", flooder.name))
                .await?;
        }
        assert!(server.handle.stats().flood_delayed > 0);
        Ok(())
    })
}

#[test]
fn tls_alone_binds_no_plain_address() -> io::Result<()> {
    let Some(certs) = Certs::make()? else {
        return Ok(());
    };
    // Taken: binding it would fail, so the server must not try.
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let mut tls = tls(&certs);
    tls.plain = false;
    let server = Server::bind(
        taken.local_addr()?,
        Config {
            tls: Some(tls),
            ..config()
        },
    )?;
    assert_eq!(server.tls_addr(), Some(server.local_addr()));
    Ok(())
}

#[test]
fn unusable_certificate_or_key_is_an_invalid_input_error_naming_the_file() -> io::Result<()> {
    let Some(certs) = Certs::make()? else {
        return Ok(());
    };
    let missing = certs.path("missing.pem");
    let cases = [
        // (certificate chain, key, what the message must name)
        (&missing, &certs.key, missing.display().to_string()),
        (&certs.chain, &missing, missing.display().to_string()),
        // Swapped: a key where the chain belongs, a chain where the key belongs.
        (
            &certs.key,
            &certs.key,
            format!("'{}': no certificate", certs.key.display()),
        ),
        (
            &certs.chain,
            &certs.chain,
            format!("'{}': no private key", certs.chain.display()),
        ),
        (
            &certs.chain,
            &certs.other_key,
            certs.other_key.display().to_string(),
        ),
    ];
    for (chain, key, named) in cases {
        let config = Config {
            tls: Some(Tls::new(chain, key, ([127, 0, 0, 1], 0).into())),
            ..config()
        };
        let error = match Server::bind("127.0.0.1:0", config) {
            Ok(_) => panic!("{chain:?} and {key:?} were accepted"),
            Err(error) => error,
        };
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
        assert!(
            error.to_string().contains(&named),
            "{error} does not name {named}"
        );
    }
    Ok(())
}

#[test]
fn binary_with_an_unusable_certificate_says_so_in_one_line_and_exits_2() -> io::Result<()> {
    let Some(certs) = Certs::make()? else {
        return Ok(());
    };
    let missing = certs.path("missing.pem");
    let (code, _, stderr) = run(&[
        "--port",
        "0",
        "--tls-cert",
        &missing.display().to_string(),
        "--tls-key",
        &certs.key.display().to_string(),
        "--tls-port",
        "0",
    ])?;
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("smolchat: cannot read TLS certificate chain '")
            && stderr.contains(&missing.display().to_string()),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn binary_serves_tls_alone_with_tls_only() -> io::Result<()> {
    let Some(certs) = Certs::make()? else {
        return Ok(());
    };
    let server = Binary::start(&[
        "--bind",
        "127.0.0.1",
        "--tls-cert",
        &certs.chain.display().to_string(),
        "--tls-key",
        &certs.key.display().to_string(),
        "--tls-port",
        "0",
        "--tls-only",
    ])?;
    // The one address it announces is the TLS one.
    let mut secure = TlsClient::connect(server.addr, &certs.ca)?;
    secure.send("/quit")?;
    secure.expect("*** bye")
}

#[test]
fn tls_flags_that_do_not_fit_together_are_usage_errors() -> io::Result<()> {
    for (args, named) in [
        (&["--tls-cert", "c.pem"][..], "--tls-key"),
        (&["--tls-key", "k.pem"], "--tls-cert"),
        (&["--tls-port", "6697"], "--tls-port"),
        (
            &[
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
                "--tls-only",
                "--port",
                "1",
            ],
            "--tls-only",
        ),
        (&["--tls-handshake-timeout", "0"], "--tls-handshake-timeout"),
    ] {
        let (code, _, stderr) = run(args)?;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.contains(named), "{args:?}: {first}");
    }
    Ok(())
}

/// A plain client on the TLS port gets no chat, and the server is none the worse.
#[test]
fn plain_text_on_the_tls_port_is_refused_by_the_handshake() -> io::Result<()> {
    let Some(certs) = Certs::make()? else {
        return Ok(());
    };
    let (server, tls_addr) = start(&certs, config());
    let events = server.handle.subscribe(16);
    let mut confused = TcpStream::connect(tls_addr)?;
    confused.set_read_timeout(Some(TIMEOUT))?;
    confused.write_all(b"hello?\n")?;
    let mut reply = Vec::new();
    // An alert at most, then the end: never a chat line.
    match io::Read::read_to_end(&mut confused, &mut reply) {
        Err(e) if e.kind() != io::ErrorKind::ConnectionReset => return Err(e),
        _ => {}
    }
    assert!(
        !String::from_utf8_lossy(&reply).contains("***"),
        "{reply:?}"
    );
    smol::block_on(async {
        eventually("its slot is freed", || server.handle.stats().clients == 0).await?;
        // Counted and told to the host, with the client's address.
        assert_eq!(server.handle.stats().tls_failed, 1);
        let failed = loop {
            match common::timeout(async { Ok(events.recv().await) }).await? {
                Ok(Event::TlsFailed { addr, error }) => break (addr, error),
                Ok(_) => {}
                Err(_) => return Err(io::Error::other("events ended")),
            }
        };
        assert_eq!(failed.0, confused.local_addr()?);
        assert!(!failed.1.is_empty());
        let secure = TlsClient::connect(tls_addr, &certs.ca)?;
        assert_eq!(secure.name, "guest1");
        assert_eq!(server.handle.stats().tls_failed, 1);
        Ok(())
    })
}
