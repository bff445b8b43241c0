//! Refused clients get a one-line reason; limits free up when clients leave.

mod common;

use std::io;

use common::{config, eventually, Client, TestServer};
use smolchat::Config;

#[test]
fn clients_beyond_max_clients_are_told_the_server_is_full() -> io::Result<()> {
    let server = TestServer::start(Config {
        max_clients: 3,
        ..config()
    });
    smol::block_on(async {
        let mut c = server.clients(3).await?;
        let mut refused = Client::connect_raw(server.addr).await?;
        refused.expect("! server full, try again later").await?;
        refused.expect_eof().await?;
        assert_eq!(server.handle.stats().connections_refused, 1);
        drop(c.pop());
        eventually("a slot frees up", || server.handle.stats().clients == 2).await?;
        server.connect().await.map(drop)
    })
}

#[test]
fn per_address_limit_applies_to_loopback_only_when_asked() -> io::Result<()> {
    let limited = TestServer::start(Config {
        max_per_ip: 2,
        limit_loopback: true,
        ..config()
    });
    let exempt = TestServer::start(Config {
        max_per_ip: 2,
        ..config()
    });
    smol::block_on(async {
        let _two = limited.clients(2).await?;
        let mut third = Client::connect_raw(limited.addr).await?;
        third
            .expect("! too many connections from your address")
            .await?;
        third.expect_eof().await?;
        // By default loopback clients (bridges, load tests) are exempt.
        let _five = exempt.clients(5).await?;
        assert_eq!(exempt.handle.stats().clients, 5);
        Ok(())
    })
}

#[test]
fn thousands_of_connects_and_disconnects_leave_nothing_behind() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut watcher = server.connect().await?;
        for round in 0..50 {
            // 40 at a time, some leaving politely, some just closing, some mid-line.
            let mut batch = Vec::new();
            for _ in 0..40 {
                batch.push(Client::connect_raw(server.addr).await?);
            }
            for (i, mut client) in batch.into_iter().enumerate() {
                match i % 3 {
                    0 => client.send("/quit").await?,
                    1 => client.send_raw(b"half a li").await?,
                    _ => {}
                }
            }
            if round % 10 == 0 {
                watcher.sync().await?;
            }
        }
        eventually("every churned client is gone", || {
            let stats = server.handle.stats();
            stats.clients == 1
                && server.handle.users().len() == 1
                && server.handle.rooms().len() == 1
        })
        .await?;
        assert_eq!(server.handle.stats().connections_accepted, 2001);
        watcher.send("/who").await?;
        watcher
            .until(|l| l.starts_with("*** users in"))
            .await
            .map(|l| assert_eq!(l, "*** users in #lobby (1): guest1"))
    })
}
