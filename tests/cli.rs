//! The binary's flags, errors, exit codes and signals.

mod common;

use std::io;

use common::process::{log_message, run, Binary};
use common::Client;

#[test]
fn unknown_flag_names_it_and_exits_2() -> io::Result<()> {
    let (code, _, stderr) = run(&["--frobnicate"])?;
    assert_eq!(code, Some(2));
    assert!(
        stderr.starts_with("smolchat: invalid option '--frobnicate'"),
        "{stderr}"
    );
    assert!(stderr.contains("smolchat --help"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    Ok(())
}

#[test]
fn bad_values_name_the_flag_and_exit_2() -> io::Result<()> {
    for (args, flag) in [
        (&["--port", "70000"][..], "--port"),
        (&["--max-line", "lots"], "--max-line"),
        (&["--flood-rate", "-1"], "--flood-rate"),
        (&["--write-timeout", "soon"], "--write-timeout"),
        (&["--bind", "[::1"], "--bind"),
        (&["--threads", "0"], "--threads"),
        (&["--queue-bytes", "0"], "--queue-bytes"),
        (&["--max-clients", "-3"], "--max-clients"),
        (&["--port"], "--port"),
        (&["--motd-file", "/nonexistent/motd.txt"], "--motd-file"),
        (&["--write-timeout", "0"], "--write-timeout"),
        (&["--stall-timeout", "0"], "--stall-timeout"),
        (&["--threads", "100000"], "--threads"),
        (&["--shutdown-grace", "0"], "--shutdown-grace"),
        (&["--partial-line-timeout", "0"], "--partial-line-timeout"),
        (
            &["--partial-line-timeout", "1e19"],
            "--partial-line-timeout",
        ),
        (&["--write-timeout", "1e19"], "--write-timeout"),
        (&["--flood-rate", "1e-300"], "--flood-rate"),
        (&["--max-line", "18446744073709551615"], "--max-line"),
        (&["--queue-lines", "0"], "--queue-lines"),
        (&["--keepalive", "0.5"], "--keepalive"),
        (&["--backlog", "0"], "--backlog"),
        (&["--log-level", "loud"], "--log-level"),
        (&["--bind", "256.1.1.1:80"], "--bind"),
        (&["--bind", "256.1.1.1"], "--bind"),
        (&["--bind", "1.2.3"], "--bind"),
        (&["--port", "1", "--port", "2"], "--port"),
    ] {
        let (code, stdout, stderr) = run(args)?;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stdout.is_empty());
        assert!(
            stderr.starts_with("smolchat: ") && stderr.contains(flag),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("smolchat --help"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "exactly one line: {stderr}");
    }
    Ok(())
}

#[test]
fn conflicting_flags_are_one_line_naming_both_and_exit_2() -> io::Result<()> {
    let motd = std::env::temp_dir().join(format!("smolchat-conflict-{}.txt", std::process::id()));
    std::fs::write(&motd, "hi\n")?;
    let motd = motd.to_str().expect("utf-8 path");
    for (args, a, b) in [
        (
            &["--bind", "127.0.0.1:5000", "--port", "6000"][..],
            "--bind",
            "--port",
        ),
        (
            &["--port", "6000", "--bind", "[::1]:5000"],
            "--bind",
            "--port",
        ),
        (
            &["--motd", "hello", "--motd-file", motd],
            "--motd'",
            "--motd-file",
        ),
        (
            &["--motd-file", motd, "--motd", "hello"],
            "--motd'",
            "--motd-file",
        ),
        (&["-q", "-v"], "--quiet", "--verbose"),
        (&["--log-level", "debug", "-q"], "--quiet", "--log-level"),
        (&["-v", "--log-level", "info"], "--verbose", "--log-level"),
    ] {
        let (code, _, stderr) = run(args)?;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(a) && stderr.contains(b) && stderr.contains("conflicts"),
            "{args:?}: {stderr}"
        );
    }
    let _ = std::fs::remove_file(motd);
    Ok(())
}

#[test]
fn bind_without_a_port_takes_the_port_flag() -> io::Result<()> {
    let server = Binary::start(&["--bind", "127.0.0.1", "--port", "0"])?;
    assert!(server.addr.ip().is_loopback());
    smol::block_on(Client::connect(server.addr)).map(drop)
}

#[test]
fn help_lists_every_flag_with_its_default() -> io::Result<()> {
    let (code, stdout, _) = run(&["--help"])?;
    assert_eq!(code, Some(0));
    for flag in [
        "--bind",
        "--port",
        "--threads",
        "--max-line",
        "--queue-lines",
        "--queue-bytes",
        "--max-clients",
        "--max-per-ip",
        "--limit-loopback",
        "--flood-burst",
        "--flood-rate",
        "--write-timeout",
        "--stall-timeout",
        "--partial-line-timeout",
        "--shutdown-grace",
        "--keepalive",
        "--history",
        "--timestamps",
        "--motd",
        "--motd-file",
        "--backlog",
        "--tls-cert",
        "--tls-key",
        "--tls-port",
        "--tls-only",
        "--tls-handshake-timeout",
        "--log-level",
        "-v, --verbose",
        "-q, --quiet",
        "-h, --help",
        "-V, --version",
    ] {
        assert!(stdout.contains(flag), "--help does not list {flag}");
    }
    let d = smolchat::Config::default();
    let secs = |t: std::time::Duration| t.as_secs_f64().to_string();
    for (flag, default) in [
        ("--bind ", "0.0.0.0".to_string()),
        ("--port ", "8888".to_string()),
        ("--threads ", "available cores".to_string()),
        ("--max-line ", d.max_line.to_string()),
        ("--queue-lines ", d.queue_lines.to_string()),
        ("--queue-bytes ", d.queue_bytes.to_string()),
        ("--max-clients ", d.max_clients.to_string()),
        ("--max-per-ip ", d.max_per_ip.to_string()),
        ("--flood-burst ", d.flood_burst.to_string()),
        ("--flood-rate ", d.flood_rate.to_string()),
        ("--write-timeout ", secs(d.write_timeout)),
        ("--stall-timeout ", secs(d.stall_timeout)),
        ("--partial-line-timeout ", secs(d.partial_line_timeout)),
        ("--shutdown-grace ", secs(d.shutdown_grace)),
        ("--keepalive ", d.keepalive.map_or("0".into(), secs)),
        ("--history ", d.history.to_string()),
        ("--announce-limit ", d.announce_limit.to_string()),
        ("--backlog ", d.backlog.to_string()),
        ("--log-level ", "info".to_string()),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("no line for {flag}"));
        assert!(
            line.ends_with(&format!("[default: {default}]")),
            "{flag}: {line}"
        );
    }
    let (code, short, _) = run(&["-h"])?;
    assert_eq!((code, short), (Some(0), stdout));
    Ok(())
}

#[cfg(not(feature = "tls"))]
#[test]
fn tls_flags_say_the_binary_was_built_without_tls() -> io::Result<()> {
    let (code, _, stderr) = run(&["--tls-cert", "cert.pem", "--tls-key", "key.pem"])?;
    assert_eq!(code, Some(2), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("smolchat: '--tls-cert': this smolchat was built without TLS support"),
        "{first}"
    );
    Ok(())
}

#[test]
fn version_prints_the_version() -> io::Result<()> {
    let (code, stdout, _) = run(&["-V"])?;
    assert_eq!(code, Some(0));
    assert_eq!(stdout, format!("smolchat {}\n", env!("CARGO_PKG_VERSION")));
    Ok(())
}

#[test]
fn address_in_use_is_one_clear_line_and_exit_1() -> io::Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let (code, _, stderr) = run(&["--bind", &addr])?;
    assert_eq!(code, Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let message = log_message(stderr.trim_end(), "ERROR").unwrap_or_default();
    assert!(
        message.starts_with(&format!("cannot listen on {addr}: ")),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("in use"), "{stderr}");
    Ok(())
}

#[test]
fn binds_ipv6_loopback_with_a_port_flag() -> io::Result<()> {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipping");
        return Ok(());
    };
    drop(probe);
    let server = Binary::start(&["--bind", "::1", "--port", "0"])?;
    assert!(
        server.addr.is_ipv6() && server.addr.ip().is_loopback(),
        "{}",
        server.addr
    );
    smol::block_on(Client::connect(server.addr)).map(drop)
}

#[test]
fn sigterm_shuts_down_gracefully_and_exits_0() -> io::Result<()> {
    let mut server = Binary::start(&["--bind", "127.0.0.1:0"])?;
    smol::block_on(async {
        let mut client = Client::connect(server.addr).await?;
        server.stderr_until(|l| l.contains(&format!("{} joined from", client.name)))?;
        server.signal("TERM")?;
        client.expect("*** server is shutting down").await?;
        client.expect_eof().await
    })?;
    assert_eq!(server.wait()?.code(), Some(0));
    Ok(())
}

#[test]
fn logs_joins_and_leaves_with_reasons_unless_quiet() -> io::Result<()> {
    let mut server = Binary::start(&["--bind", "127.0.0.1:0"])?;
    smol::block_on(async {
        let mut client = Client::connect(server.addr).await?;
        let joined = format!("{} joined from 127.0.0.1:", client.name);
        server.stderr_until(|l| log_message(l, "INFO").is_some_and(|m| m.starts_with(&joined)))?;
        client.send("/quit see you").await?;
        let left = format!("{} left (quit: see you)", client.name);
        server.stderr_until(|l| log_message(l, "INFO") == Some(&left))?;
        io::Result::Ok(())
    })?;
    let mut quiet = Binary::start(&["--bind", "127.0.0.1:0", "-q"])?;
    smol::block_on(async {
        let client = Client::connect(quiet.addr).await?;
        drop(client);
        quiet.signal("INT")?;
        let line = quiet.stderr_until(|l| {
            l.contains("stopped") || l.contains("joined") || l.contains("left")
        })?;
        assert_eq!(log_message(&line, "NOTICE"), Some("stopped"), "{line}");
        io::Result::Ok(())
    })
}

#[test]
fn motd_file_is_shown_on_connect() -> io::Result<()> {
    let path = std::env::temp_dir().join(format!("smolchat-motd-{}.txt", std::process::id()));
    std::fs::write(&path, "welcome aboard\nno spam\n")?;
    let server = Binary::start(&[
        "--bind",
        "127.0.0.1:0",
        "--motd-file",
        path.to_str().expect("utf-8 path"),
    ]);
    let _ = std::fs::remove_file(&path);
    let server = server?;
    smol::block_on(async {
        let mut client = Client::connect_raw(server.addr).await?;
        client.until(|l| l.starts_with("*** welcome")).await?;
        client.expect("*** motd: welcome aboard").await?;
        client.expect("*** motd: no spam").await
    })
}

#[test]
fn sigterm_shuts_down_even_when_stderr_is_a_closed_pipe() -> io::Result<()> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    // As `smolchat 2>&1 | head -1`: the log's reader goes away after the first line.
    /// Kills the server if the test fails before it exits: the bug was that it never did.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_smolchat"))
            .args(["--bind", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let stderr = child.0.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = std::io::BufReader::new(stderr).read_line(&mut first);
        let _ = tx.send(first);
        // The pipe's read end closes here.
    });
    let first = rx.recv_timeout(common::TIMEOUT).map_err(io::Error::other)?;
    let addr: std::net::SocketAddr = first
        .split(" listening on ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no address in {first:?}")))?;
    smol::block_on(async {
        // Its join is logged into the closed pipe.
        let mut client = Client::connect(addr).await?;
        let status = Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status()?;
        assert!(status.success());
        client.expect("*** server is shutting down").await?;
        client.expect_eof().await
    })?;
    let status = common::process::wait_timeout(&mut child.0, common::TIMEOUT)?;
    assert_eq!(status.code(), Some(0));
    Ok(())
}

#[test]
fn repeated_sigterms_are_one_graceful_shutdown() -> io::Result<()> {
    use std::io::Write;
    let mut server = Binary::start(&[
        "--bind",
        "127.0.0.1:0",
        "--flood-rate",
        "0",
        "--queue-bytes",
        "268435456",
        "--queue-lines",
        "1000000",
        "--shutdown-grace",
        "60",
    ])?;
    // A member that never reads keeps the shutdown waiting for its queue to flush, so the
    // second signal surely arrives while the first is still being acted on.
    let stalled = std::net::TcpStream::connect(server.addr)?;
    server.stderr_until(|l| log_message(l, "INFO").is_some_and(|m| m.contains(" joined ")))?;
    let mut sender = std::net::TcpStream::connect(server.addr)?;
    sender.set_write_timeout(Some(common::TIMEOUT))?;
    let line = format!("{}\n", "x".repeat(2000));
    // 32 MB: far more than the stalled socket's kernel buffers take without reading.
    for _ in 0..16_000 {
        sender.write_all(line.as_bytes())?;
    }
    server.signal("TERM")?;
    server.stderr_until(|l| log_message(l, "NOTICE") == Some("SIGTERM: shutting down"))?;
    server.signal("TERM")?;
    server.stderr_until(|l| log_message(l, "NOTICE") == Some("SIGTERM: already shutting down"))?;
    // Now let the shutdown finish: the stalled member goes away.
    drop(stalled);
    assert_eq!(server.wait()?.code(), Some(0));
    Ok(())
}

#[test]
fn sighup_rereads_the_motd_file_and_keeps_serving() -> io::Result<()> {
    let path = std::env::temp_dir().join(format!("smolchat-hup-{}.txt", std::process::id()));
    std::fs::write(&path, "old news\n")?;
    let path_str = path.to_str().expect("utf-8 path");
    let result = (|| {
        let mut server = Binary::start(&["--bind", "127.0.0.1:0", "--motd-file", path_str])?;
        std::fs::write(&path, "fresh news\nsecond line\n")?;
        server.signal("HUP")?;
        let reread = format!("SIGHUP: message of the day re-read from {path_str} (2 lines)");
        server.stderr_until(|l| log_message(l, "NOTICE") == Some(&reread))?;
        smol::block_on(async {
            let mut client = Client::connect_raw(server.addr).await?;
            client.until(|l| l.starts_with("*** welcome")).await?;
            client.expect("*** motd: fresh news").await?;
            client.expect("*** motd: second line").await
        })?;
        // A file that became unreadable keeps the old message, and the server keeps going.
        std::fs::remove_file(&path)?;
        server.signal("HUP")?;
        server.stderr_until(|l| {
            log_message(l, "ERROR").is_some_and(|m| m.ends_with("the old message of the day stays"))
        })?;
        smol::block_on(async {
            let mut client = Client::connect_raw(server.addr).await?;
            client.until(|l| l.starts_with("*** welcome")).await?;
            client.expect("*** motd: fresh news").await
        })?;
        assert!(
            server.child.try_wait()?.is_none(),
            "SIGHUP stopped the server"
        );
        io::Result::Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    result
}

#[test]
fn verbose_logs_chat_lines_by_size_only() -> io::Result<()> {
    let mut server = Binary::start(&["--bind", "127.0.0.1:0", "-v"])?;
    smol::block_on(async {
        let mut a = Client::connect(server.addr).await?;
        let _b = Client::connect(server.addr).await?;
        a.send("a secret").await?;
        let said = format!("{} sent 8 bytes to #lobby", a.name);
        let line = server.stderr_until(|l| l.contains(&said))?;
        assert_eq!(log_message(&line, "DEBUG"), Some(said.as_str()), "{line}");
        assert!(!line.contains("secret"));
        io::Result::Ok(())
    })
}

#[test]
fn timestamps_flag_starts_every_client_with_timestamps_on() -> io::Result<()> {
    let server = Binary::start(&["--bind", "127.0.0.1:0", "--timestamps"])?;
    smol::block_on(async {
        let mut client = Client::connect_raw(server.addr).await?;
        let welcome = client.line().await?;
        let (time, rest) = welcome.split_at_checked(6).unwrap_or_default();
        let digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
        assert!(
            time.strip_suffix(' ')
                .and_then(|t| t.split_once(':'))
                .is_some_and(|(h, m)| digits(h) && digits(m)),
            "{welcome}"
        );
        assert!(rest.starts_with("*** welcome to smolchat, "), "{welcome}");
        client.send("/timestamps off").await?;
        client.until(|l| l == "*** timestamps off").await.map(drop)
    })
}
