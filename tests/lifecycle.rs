//! Starting and stopping embedded servers, and churning clients, leaks no descriptors or
//! threads. One test in this file, so nothing else in the process opens descriptors meanwhile.

mod common;

use std::io;

use common::procfs::{open_descriptors, threads};
use common::{config, Client, TestServer};

#[test]
fn hundred_start_stop_cycles_and_client_churn_leak_nothing() -> io::Result<()> {
    // Warm up once: the reactor's own descriptors and thread are created on first use.
    let warm = TestServer::start(config());
    smol::block_on(warm.connect())?;
    warm.stop();
    let me = std::process::id();
    let (fds, threads_before) = (open_descriptors(me)?, threads(me)?);

    for _ in 0..100 {
        let server = TestServer::start(config());
        smol::block_on(async {
            let mut c = server.clients(2).await?;
            c[0].send("hi").await?;
            let line = format!("{}: hi", c[0].name);
            c[1].expect(&line).await?;
            // Leave one client connected: shutdown must close it.
            drop(c.pop());
            io::Result::Ok(())
        })?;
        server.stop();
    }

    let server = TestServer::start(config());
    smol::block_on(async {
        for _ in 0..1000 {
            let client = Client::connect(server.addr).await?;
            drop(client);
        }
        common::eventually("churned clients are gone", || {
            server.handle.stats().clients == 0
        })
        .await
    })?;
    server.stop();

    assert_eq!(open_descriptors(me)?, fds, "descriptors leaked");
    assert_eq!(threads(me)?, threads_before, "threads leaked");
    Ok(())
}
