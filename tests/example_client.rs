//! `examples/chat-client.rs` takes its address like `nc`, and shows the server's last line.

mod common;

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::process::wait_timeout;
use common::TestServer;

/// The example, which `cargo test` builds beside the test executables (`cargo test --test
/// example_client` alone does not: build it with `cargo build --examples` first).
fn chat_client() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let debug = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = debug.join("examples").join("chat-client");
    assert!(
        path.exists(),
        "{} is not built: run `cargo test`",
        path.display()
    );
    path
}

fn run(args: &[&str]) -> io::Result<(Option<i32>, String, String)> {
    let mut child = Command::new(chat_client())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let status = wait_timeout(&mut child, common::TIMEOUT)?;
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut out)?;
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)?;
    Ok((status.code(), out, err))
}

#[test]
fn bad_arguments_print_the_usage_and_help_prints_it_too() -> io::Result<()> {
    for args in [
        &[][..],
        &["127.0.0.1"],
        &["127.0.0.1", "port"],
        &["::1:80"],
        &["a", "b", "c"],
    ] {
        let (code, out, err) = run(args)?;
        assert_eq!(code, Some(2), "{args:?}");
        assert!(
            out.is_empty() && err.starts_with("usage: chat-client HOST PORT"),
            "{err}"
        );
    }
    let (code, out, _) = run(&["--help"])?;
    assert_eq!(code, Some(0));
    assert!(out.starts_with("usage: chat-client HOST PORT"), "{out}");
    Ok(())
}

#[test]
fn takes_host_port_like_nc_and_shows_the_shutdown_notice() -> io::Result<()> {
    let server = TestServer::start(common::config());
    let port = server.addr.port().to_string();
    let host_port = server.addr.to_string();
    let mut watcher = smol::block_on(server.connect())?;
    let mut clients = Vec::new();
    for args in [vec!["127.0.0.1", port.as_str()], vec![host_port.as_str()]] {
        let mut child = Command::new(chat_client())
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.as_mut().expect("piped");
        stdin.write_all(b"hello\n")?;
        stdin.flush()?;
        clients.push(child);
    }
    smol::block_on(async {
        for _ in 0..2 {
            watcher.until(|l| l.ends_with(": hello")).await?;
        }
        io::Result::Ok(())
    })?;
    server.stop();
    for mut child in clients {
        let status = wait_timeout(&mut child, common::TIMEOUT)?;
        let mut out = String::new();
        child
            .stdout
            .take()
            .expect("piped")
            .read_to_string(&mut out)?;
        assert_eq!(status.code(), Some(0), "{out}");
        assert!(out.starts_with("*** welcome to smolchat"), "{out}");
        assert!(out.ends_with("*** server is shutting down\n"), "{out}");
    }
    Ok(())
}
