//! Lines reach every other client, exactly once, in one order; joins and leaves are announced.

mod common;

use std::collections::HashMap;
use std::io;

use common::{config, eventually, TestServer};

#[test]
fn line_reaches_every_other_client_but_not_the_sender() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.clients(3).await?;
        let (a, b) = (c[0].name.clone(), c[1].name.clone());
        c[0].send("hello there").await?;
        c[1].expect(&format!("{a}: hello there")).await?;
        c[2].expect(&format!("{a}: hello there")).await?;
        c[1].send("hi").await?;
        c[2].expect(&format!("{b}: hi")).await?;
        // The first line a sender sees after its own is someone else's: no echo.
        c[0].expect(&format!("{b}: hi")).await?;
        Ok(())
    })
}

#[test]
fn joins_and_leaves_are_announced_and_cleaned_up() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        assert_eq!(server.handle.stats().clients, 2);
        let gone = c.pop().expect("two clients");
        let name = gone.name.clone();
        drop(gone);
        c[0].expect(&format!("*** {name} left (connection closed)"))
            .await?;
        eventually("the client map is empty", || {
            server.handle.stats().clients == 1 && server.handle.users().len() == 1
        })
        .await?;
        drop(c);
        eventually("no clients are left", || {
            server.handle.stats().clients == 0 && server.handle.users().is_empty()
        })
        .await
    })
}

#[test]
fn crlf_and_lf_lines_both_work_and_empty_lines_are_ignored() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        let a = c[0].name.clone();
        c[0].send_raw(b"one\r\n\r\n\n   \ntwo\n").await?;
        c[1].expect(&format!("{a}: one")).await?;
        c[1].expect(&format!("{a}: two")).await?;
        Ok(())
    })
}

#[test]
fn concurrent_senders_are_delivered_exactly_once_in_one_global_order() -> io::Result<()> {
    const SENDERS: usize = 4;
    const RECEIVERS: usize = 3;
    const MESSAGES: usize = 300;
    let server = TestServer::start(config());
    smol::block_on(async {
        let clients = server.clients(SENDERS + RECEIVERS).await?;
        let mut clients = clients.into_iter();
        let senders: Vec<_> = clients.by_ref().take(SENDERS).collect();
        let receivers: Vec<_> = clients.collect();
        let names: Vec<String> = senders.iter().map(|s| s.name.clone()).collect();

        // Every sender blasts all its lines in one write, while the others do the same. The
        // tasks hand the sockets back so the senders stay connected until the check is done.
        let sending: Vec<_> = senders
            .into_iter()
            .map(|sender| {
                smol::spawn(async move {
                    let (reader, mut writer) = sender.into_parts();
                    let batch: String = (0..MESSAGES).map(|i| format!("msg {i}\n")).collect();
                    smol::io::AsyncWriteExt::write_all(&mut writer, batch.as_bytes()).await?;
                    io::Result::Ok((reader, writer))
                })
            })
            .collect();

        let mut orders = Vec::new();
        for mut receiver in receivers {
            let mut seen: HashMap<String, usize> = HashMap::new();
            let mut order = Vec::new();
            while order.len() < SENDERS * MESSAGES {
                let line = receiver.line().await?;
                let Some((from, text)) = line.split_once(": msg ") else {
                    continue;
                };
                assert!(names.iter().any(|n| n == from), "unexpected line {line:?}");
                let n: usize = text.parse().expect("a message number");
                let next = seen.entry(from.to_string()).or_default();
                assert_eq!(
                    n, *next,
                    "{from}'s lines out of order or duplicated at {line:?}"
                );
                *next += 1;
                order.push(line);
            }
            assert!(seen.values().all(|&n| n == MESSAGES));
            orders.push(order);
        }
        for window in orders.windows(2) {
            assert!(window[0] == window[1], "two receivers saw different orders");
        }
        for task in sending {
            drop(task.await?);
        }
        Ok(())
    })
}

#[test]
fn rooms_over_the_announce_limit_stay_quiet_about_joins() -> io::Result<()> {
    let server = TestServer::start(smolchat::Config {
        announce_limit: 2,
        ..config()
    });
    smol::block_on(async {
        // The second join leaves the room at the limit: announced.
        let mut c = server.clients(2).await?;
        let third = server.connect().await?;
        // The third would make it three: nobody hears of it, so the next line is /rooms's reply.
        c[0].send("/rooms").await?;
        c[0].expect("*** rooms: #lobby (3)").await?;
        drop(third);
        // Back at the limit after the leave: announced again.
        c[0].expect("*** guest3 left (connection closed)").await
    })
}
