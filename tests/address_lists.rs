//! `Config::allow` and `Config::deny`: refused before a single byte is sent, deny over allow.
//! Clients connect from other loopback addresses (all of 127.0.0.0/8 is local on Linux).

mod common;

use std::io;
use std::net::IpAddr;

use common::{config, eventually, Client, TestServer};
use smolchat::{Cidr, Config, Event, Refusal};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

fn net(s: &str) -> Cidr {
    s.parse().expect("a range")
}

#[test]
fn denied_addresses_are_closed_without_a_word_and_deny_wins_over_allow() -> io::Result<()> {
    let server = TestServer::start(Config {
        allow: vec![net("127.0.0.0/24")],
        deny: vec![net("127.0.0.2"), net("127.0.0.64/26")],
        ..config()
    });
    let events = server.handle.subscribe_presence(64);
    smol::block_on(async {
        for refused in ["127.0.0.2", "127.0.0.64", "127.0.0.127", "127.0.1.1"] {
            let mut client = Client::connect_raw_from(server.addr, ip(refused)).await?;
            assert_eq!(client.rest().await?, "", "{refused} was told something");
        }
        for admitted in ["127.0.0.1", "127.0.0.3", "127.0.0.128"] {
            Client::connect_from(server.addr, ip(admitted)).await?;
        }
        eventually("every refusal counted", || {
            server.handle.stats().connections_refused == 4
        })
        .await
    })?;
    let refused: Vec<String> = std::iter::from_fn(|| events.try_recv().ok())
        .filter_map(|event| match event {
            Event::Refused {
                addr,
                reason: Refusal::NotAllowed,
            } => Some(addr.ip().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        refused,
        ["127.0.0.2", "127.0.0.64", "127.0.0.127", "127.0.1.1"]
    );
    Ok(())
}

#[test]
fn an_allow_list_alone_shuts_out_everyone_else() -> io::Result<()> {
    let server = TestServer::start(Config {
        allow: vec![net("127.0.0.9"), net("2001:db8::/32")],
        ..config()
    });
    smol::block_on(async {
        let mut outsider = Client::connect_raw(server.addr).await?;
        assert_eq!(outsider.rest().await?, "");
        Client::connect_from(server.addr, ip("127.0.0.9"))
            .await
            .map(drop)
    })
}

#[test]
fn a_deny_list_alone_lets_everyone_else_in() -> io::Result<()> {
    let server = TestServer::start(Config {
        deny: vec![net("127.0.0.7")],
        ..config()
    });
    smol::block_on(async {
        let mut denied = Client::connect_raw_from(server.addr, ip("127.0.0.7")).await?;
        assert_eq!(denied.rest().await?, "");
        Client::connect_from(server.addr, ip("127.0.0.8")).await?;
        server.connect().await.map(drop)
    })
}
