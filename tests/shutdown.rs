//! Shutdown: every client gets what was queued and a notice, then `run` returns.

mod common;

use std::io;
use std::sync::mpsc;
use std::time::Duration;

use common::{config, TestServer, TIMEOUT};
use smolchat::{Config, Server};

#[test]
fn shutdown_flushes_queued_lines_sends_a_notice_and_returns() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        for i in 0..500 {
            server.handle.announce(&format!("notice {i}"));
        }
        server.handle.shutdown();
        for client in &mut c {
            for i in 0..500 {
                client.expect(&format!("*** notice {i}")).await?;
            }
            client.expect("*** server is shutting down").await?;
            client.expect_eof().await?;
        }
        io::Result::Ok(())
    })?;
    server.stop();
    Ok(())
}

#[test]
fn shutdown_gives_up_on_a_stalled_client_after_the_grace_period() -> io::Result<()> {
    let server = Server::bind(
        "127.0.0.1:0",
        Config {
            shutdown_grace: Duration::from_millis(200),
            write_timeout: Duration::from_secs(3600),
            queue_bytes: 1 << 30,
            queue_lines: 1 << 20,
            ..config()
        },
    )?;
    let (addr, handle) = (server.local_addr(), server.handle());
    let (returned, has_returned) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let ex = smol::Executor::new();
        smol::block_on(ex.run(server.run(&ex, std::future::pending())));
        let _ = returned.send(());
    });
    smol::block_on(async {
        let stalled = common::Client::connect(addr).await?;
        // Far more than the socket buffers hold, so the writer is stuck when shutdown starts.
        let big = "z".repeat(1000);
        for _ in 0..20_000 {
            handle
                .tell(&stalled.name, &big)
                .expect("the stalled client exists");
        }
        handle.shutdown();
        has_returned
            .recv_timeout(TIMEOUT)
            .map_err(|_| io::Error::other("run did not return"))?;
        drop(stalled);
        io::Result::Ok(())
    })?;
    thread.join().expect("server thread");
    Ok(())
}

#[test]
fn shutdown_future_given_to_run_stops_the_server() -> io::Result<()> {
    let server = Server::bind("127.0.0.1:0", config())?;
    let addr = server.local_addr();
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let thread = std::thread::spawn(move || {
        let ex = smol::Executor::new();
        smol::block_on(ex.run(server.run(&ex, async move {
            let _ = stopped.recv().await;
        })));
    });
    smol::block_on(async {
        let mut client = common::Client::connect(addr).await?;
        drop(stop);
        client.expect("*** server is shutting down").await?;
        client.expect_eof().await?;
        // The listener is closed: nobody else gets in.
        assert!(smol::net::TcpStream::connect(addr).await.is_err());
        io::Result::Ok(())
    })?;
    thread.join().expect("server thread");
    Ok(())
}
