//! The binary's flags, errors, exit codes and signals.

mod common;

use std::io;

use common::process::{run, Binary};
use common::Client;

#[test]
fn unknown_flag_names_it_and_exits_2() -> io::Result<()> {
    let (code, _, stderr) = run(&["--frobnicate"])?;
    assert_eq!(code, Some(2));
    assert!(
        stderr.starts_with("smolchat: invalid option '--frobnicate'\n"),
        "{stderr}"
    );
    assert!(stderr.contains("smolchat --help"), "{stderr}");
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
    ] {
        let (code, stdout, stderr) = run(args)?;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stdout.is_empty());
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("smolchat: ") && first.contains(flag),
            "{args:?}: {first}"
        );
        assert_eq!(
            stderr.lines().count(),
            2,
            "one error line and a hint: {stderr}"
        );
    }
    Ok(())
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
        "--partial-line-timeout",
        "--shutdown-grace",
        "--keepalive",
        "--history",
        "--motd",
        "--motd-file",
        "--backlog",
        "--tls-cert",
        "--tls-key",
        "--tls-port",
        "--tls-only",
        "--tls-handshake-timeout",
        "--quiet",
        "--help",
        "--version",
    ] {
        assert!(stdout.contains(flag), "--help does not list {flag}");
    }
    assert!(
        stdout.contains("[default: 8888]") && stdout.contains("[default: 2048]"),
        "{stdout}"
    );
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
    assert!(
        stderr.starts_with(&format!("smolchat: cannot listen on {addr}: ")),
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
        server
            .stderr_until(|l| l.starts_with(&format!("{} joined from 127.0.0.1:", client.name)))?;
        client.send("/quit see you").await?;
        server.stderr_until(|l| l == format!("{} left (quit: see you)", client.name))?;
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
        assert_eq!(line, "smolchat: stopped");
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
