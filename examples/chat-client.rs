//! A tiny chat client for systems without `nc`: stdin goes to the server, the server to stdout.
//!
//! ```sh
//! cargo run --example chat-client -- 127.0.0.1 8888
//! cargo run --example chat-client -- 127.0.0.1:8888
//! ```
//!
//! Like `nc`, it takes `HOST PORT` (or `HOST:PORT`, `[IPv6]:PORT`). It ends when the server
//! closes the connection, after showing everything the server sent (such as the shutdown
//! notice), or when stdin ends.

use std::process::ExitCode;

use futures_lite::{future, io, AsyncReadExt, AsyncWriteExt};
use smol::{net::TcpStream, Unblock};

const USAGE: &str = "usage: chat-client HOST PORT  (or HOST:PORT, [IPv6]:PORT)";

/// `HOST PORT`, `HOST:PORT` or `[IPv6]:PORT`, as `host:port` for `TcpStream::connect`.
fn address(args: &[String]) -> Option<String> {
    let (host, port) = match args {
        [host, port] => (
            host.trim_start_matches('[').trim_end_matches(']'),
            port.as_str(),
        ),
        [addr] => {
            let (host, port) = addr.rsplit_once(':')?;
            match host.strip_prefix('[') {
                Some(v6) => (v6.strip_suffix(']')?, port),
                None if host.contains(':') => return None, // IPv6 needs brackets here
                None => (host, port),
            }
        }
        _ => return None,
    };
    let port: u16 = port.parse().ok()?;
    if host.is_empty() || host.starts_with('-') {
        return None;
    }
    Some(match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(args.first().map(String::as_str), Some("-h" | "--help")) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let Some(addr) = address(&args) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match smol::block_on(chat(&addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-client: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn chat(addr: &str) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    let (mut reader, mut writer) = (stream.clone(), stream);
    let mut stdin = Unblock::new(std::io::stdin());
    let mut stdout = Unblock::new(std::io::stdout());
    let from_server = async {
        let mut buf = vec![0; 4096];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            stdout.write_all(&buf[..n]).await?;
            // Show each line as it arrives, not when a buffer fills.
            stdout.flush().await?;
        }
    };
    let to_server = async {
        // However sending ends (stdin ended, or the server is gone), the client goes on showing
        // what the server sends until it closes; only then does the client end.
        let _ = io::copy(&mut stdin, &mut writer).await;
        let _ = writer.close().await;
        future::pending().await
    };
    // The server closing ends the client, only after its last line was written out.
    future::or(from_server, to_server).await
}
