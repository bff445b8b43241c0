//! A private server (`Config::password`): nothing is seen, sent or listed before `/pass`.

mod common;

use std::io;
use std::time::{Duration, Instant};

use common::{config, eventually, Client, TestServer};
use smolchat::{Config, Event};

const PASSWORD: &str = "open sesame";

fn private() -> Config {
    Config {
        password: Some(PASSWORD.into()),
        password_delay: Duration::from_millis(100),
        history: 0,
        ..config()
    }
}

/// Connects and gives the password; reads the welcome.
async fn member(server: &TestServer) -> io::Result<Client> {
    let mut client = Client::connect_raw(server.addr).await?;
    client
        .expect("*** this server is private: send /pass PASSWORD")
        .await?;
    client.send(&format!("/pass {PASSWORD}")).await?;
    client.read_welcome().await?;
    Ok(client)
}

#[test]
fn nothing_leaks_to_or_from_a_client_before_pass() -> io::Result<()> {
    let server = TestServer::start(private());
    let events = server.handle.subscribe(64);
    smol::block_on(async {
        let mut alice = member(&server).await?;
        let mut eve = Client::connect_raw(server.addr).await?;
        eve.expect("*** this server is private: send /pass PASSWORD")
            .await?;
        for line in ["hi everyone", "/who", "/nick eve", "/msg guest1 psst"] {
            eve.send(line).await?;
            eve.expect("! send /pass PASSWORD first").await?;
        }
        alice.send("can anyone hear me?").await?;
        // eve is listed nowhere.
        alice.send("/who").await?;
        alice.expect("*** users in #lobby (1): guest1").await?;
        assert_eq!(server.handle.users().len(), 1);
        assert_eq!(server.handle.rooms()[0].members, 1);
        eve.send("/pass open says me").await?;
        eve.expect("! wrong password").await?;
        // The password is checked in full, with the rest of the line after it, and whatever
        // came after it in the same packet is not lost.
        eve.send_raw(format!("/pass {PASSWORD}\nhello all\n").as_bytes())
            .await?;
        eve.expect("*** welcome to smolchat, guest2! /help lists the commands")
            .await?;
        eve.expect("*** you are guest2 in #lobby; users here: 2")
            .await?;
        // The first thing alice learns of eve is her arrival, then her first line after /pass.
        alice.expect("*** guest2 joined #lobby").await?;
        alice.expect("guest2: hello all").await?;
        alice.send("welcome").await?;
        eve.expect("guest1: welcome").await
    })?;
    // Leaves are left out: the clients' ends may or may not be seen by now.
    let seen: Vec<String> = std::iter::from_fn(|| events.try_recv().ok())
        .filter(|event| !matches!(event, Event::Left { .. }))
        .map(|event| match event {
            Event::Joined { name, .. } => format!("joined {name}"),
            Event::Message { name, text, .. } => format!("{name}: {text}"),
            Event::PassFailed { addr } => format!("wrong password from {}", addr.ip()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        [
            "joined guest1",
            "guest1: can anyone hear me?",
            "wrong password from 127.0.0.1",
            "joined guest2",
            "guest2: hello all",
            "guest1: welcome",
        ]
    );
    Ok(())
}

#[test]
fn wrong_passwords_are_answered_ever_more_slowly() -> io::Result<()> {
    const DELAY: Duration = Duration::from_millis(300);
    let server = TestServer::start(Config {
        password_delay: DELAY,
        ..private()
    });
    smol::block_on(async {
        let mut guesser = Client::connect_raw(server.addr).await?;
        guesser.line().await?;
        let mut waits = Vec::new();
        for guess in ["a", "b", "c"] {
            let started = Instant::now();
            guesser.send(&format!("/pass {guess}")).await?;
            guesser.expect("! wrong password").await?;
            waits.push(started.elapsed());
        }
        eprintln!("waits for the 1st, 2nd and 3rd wrong /pass: {waits:?}");
        for (i, wait) in waits.iter().enumerate() {
            let at_least = DELAY * (1 << i);
            assert!(
                *wait >= at_least,
                "guess {}: {wait:?} < {at_least:?}",
                i + 1
            );
        }
        Ok(())
    })
}

#[test]
fn guesses_from_new_connections_wait_too_and_a_right_answer_is_no_quicker() -> io::Result<()> {
    const DELAY: Duration = Duration::from_millis(300);
    let server = TestServer::start(Config {
        password_delay: DELAY,
        ..private()
    });
    let guesser: std::net::IpAddr = "127.0.0.2".parse().expect("an address");
    smol::block_on(async {
        let mut first = Client::connect_raw_from(server.addr, guesser).await?;
        first.line().await?;
        first.send("/pass wrong").await?;
        first.expect("! wrong password").await?;
        // A fresh connection from the same address: its wrong guess waits twice as long, and
        // even the right password is answered no sooner than a wrong one would be, so a
        // guesser cannot hang up on silence and try again at once.
        let mut second = Client::connect_raw_from(server.addr, guesser).await?;
        second.line().await?;
        let started = Instant::now();
        second.send("/pass still wrong").await?;
        second.expect("! wrong password").await?;
        assert!(started.elapsed() >= 2 * DELAY, "{:?}", started.elapsed());
        let mut third = Client::connect_raw_from(server.addr, guesser).await?;
        third.line().await?;
        let started = Instant::now();
        third.send(&format!("/pass {PASSWORD}")).await?;
        third.read_welcome().await?;
        assert!(started.elapsed() >= 2 * DELAY, "{:?}", started.elapsed());
        // A right password clears nothing, so it can neither reset a guesser's wait nor tell
        // another connection that it was right.
        let mut fourth = Client::connect_raw_from(server.addr, guesser).await?;
        fourth.line().await?;
        let started = Instant::now();
        fourth.send("/pass wrong again").await?;
        fourth.expect("! wrong password").await?;
        assert!(started.elapsed() >= 4 * DELAY, "{:?}", started.elapsed());
        // Another address has guessed nothing wrong: its clients are not held up.
        let mut other =
            Client::connect_raw_from(server.addr, "127.0.0.3".parse().expect("an address")).await?;
        other.line().await?;
        other.send(&format!("/pass {PASSWORD}")).await?;
        other.read_welcome().await
    })
}

#[test]
fn shutdown_tells_and_closes_a_client_still_before_pass() -> io::Result<()> {
    // Bounds far beyond the test's wait: only shutdown itself can end the connection.
    let server = TestServer::start(Config {
        auth_timeout: Duration::from_secs(300),
        shutdown_grace: Duration::from_secs(300),
        ..private()
    });
    let mut waiting = smol::block_on(async {
        let mut client = Client::connect_raw(server.addr).await?;
        client
            .expect("*** this server is private: send /pass PASSWORD")
            .await?;
        io::Result::Ok(client)
    })?;
    server.handle.shutdown();
    smol::block_on(async {
        assert_eq!(waiting.rest().await?, "*** server is shutting down\n");
        io::Result::Ok(())
    })?;
    server.stop_within(Duration::from_secs(10)).map(drop)
}

#[test]
fn a_client_that_never_authenticates_is_dropped_after_the_bound() -> io::Result<()> {
    const BOUND: Duration = Duration::from_millis(500);
    let server = TestServer::start(Config {
        auth_timeout: BOUND,
        ..private()
    });
    smol::block_on(async {
        let started = Instant::now();
        let mut idle = Client::connect_raw(server.addr).await?;
        idle.expect("*** this server is private: send /pass PASSWORD")
            .await?;
        // Sending lines does not extend the bound.
        idle.send("hello?").await?;
        idle.expect("! send /pass PASSWORD first").await?;
        assert_eq!(
            idle.rest().await?,
            "! disconnected: no password given in time\n"
        );
        let took = started.elapsed();
        eprintln!("dropped after {took:?}");
        assert!(took >= BOUND, "{took:?}");
        eventually("the slot is free", || server.handle.stats().clients == 0).await
    })
}

#[test]
fn a_client_before_pass_holds_its_connection_slot() -> io::Result<()> {
    let server = TestServer::start(Config {
        max_clients: 1,
        ..private()
    });
    smol::block_on(async {
        let mut waiting = Client::connect_raw(server.addr).await?;
        waiting.line().await?;
        let mut refused = Client::connect_raw(server.addr).await?;
        assert_eq!(refused.rest().await?, "! server full, try again later\n");
        waiting.send("/quit").await?;
        assert_eq!(waiting.rest().await?, "*** bye\n");
        eventually("the slot is free", || server.handle.stats().clients == 0).await?;
        member(&server).await.map(drop)
    })
}

#[test]
fn pass_on_an_open_server_or_after_joining_is_an_error() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.connect().await?;
        c.send("/pass whatever").await?;
        c.expect("! no password is needed now").await
    })
}
