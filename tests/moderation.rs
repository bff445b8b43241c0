//! Operators and what they can do: /oper, /kick, /ban, /unban, /bans, /mute, /unmute, /stats;
//! the same through the Handle; and room topics.

mod common;

use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{config, Client, TestServer};
use smolchat::{Config, Event};

const SECRET: &str = "correct horse battery";

fn with_operators() -> Config {
    Config {
        oper_password: Some(SECRET.into()),
        ..config()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

/// Renames a client and has every other client read the notice.
async fn rename(clients: &mut [&mut Client], i: usize, name: &str) -> io::Result<()> {
    let old = clients[i].name.clone();
    clients[i].nick(name).await?;
    for (j, other) in clients.iter_mut().enumerate() {
        if j != i {
            other.expect(&format!("*** {old} is now {name}")).await?;
        }
    }
    Ok(())
}

#[test]
fn non_operators_are_told_so_for_every_operator_command() -> io::Result<()> {
    let server = TestServer::start(with_operators());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        for command in [
            "/kick guest2",
            "/kick guest2 bye",
            "/ban guest2",
            "/ban 192.0.2.7 10 spam",
            "/unban 192.0.2.7",
            "/bans",
            "/mute guest2",
            "/unmute guest2",
            "/stats",
        ] {
            c[0].send(command).await?;
            c[0].expect("! you are not an operator").await?;
        }
        // Nothing happened to guest2.
        c[0].send("still here?").await?;
        c[1].expect("guest1: still here?").await?;
        assert!(server.handle.bans().is_empty());
        Ok(())
    })
}

#[test]
fn oper_needs_an_operator_password_configured() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.connect().await?;
        c.send("/oper anything").await?;
        c.expect("! this server has no operators").await?;
        c.send("/oper").await?;
        c.expect("! usage: /oper PASSWORD").await
    })
}

#[test]
fn wrong_oper_passwords_are_answered_ever_more_slowly_and_reported() -> io::Result<()> {
    const DELAY: Duration = Duration::from_millis(300);
    let server = TestServer::start(Config {
        password_delay: DELAY,
        ..with_operators()
    });
    let events = server.handle.subscribe_presence(64);
    smol::block_on(async {
        let mut c = server.connect().await?;
        let mut waits = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            // The /who behind the guess is not even read until the guess is answered.
            c.send("/oper hunter2\n/who").await?;
            c.expect("! wrong password").await?;
            waits.push(started.elapsed());
            c.expect(&format!("*** users in #lobby (1): {}", c.name))
                .await?;
        }
        eprintln!("waits for the 1st, 2nd and 3rd wrong password: {waits:?}");
        for (i, wait) in waits.iter().enumerate() {
            let at_least = DELAY * (1 << i);
            assert!(
                *wait >= at_least,
                "guess {}: {wait:?} < {at_least:?}",
                i + 1
            );
        }
        let started = Instant::now();
        c.send(&format!("/oper {SECRET}")).await?;
        c.expect("*** you are now an operator").await?;
        eprintln!("the right password: {:?}", started.elapsed());
        Ok::<_, io::Error>(())
    })?;
    let mut failed = 0;
    while let Ok(event) = events.try_recv() {
        match event {
            Event::OperFailed { name, .. } => {
                assert_eq!(&*name, "guest1");
                failed += 1;
            }
            Event::Opered { name, .. } => assert_eq!((&*name, failed), ("guest1", 3)),
            _ => {}
        }
    }
    assert_eq!(failed, 3);
    Ok(())
}

#[test]
fn an_operator_kicks_and_the_room_is_told_who_did() -> io::Result<()> {
    let server = TestServer::start(with_operators());
    smol::block_on(async {
        let mut c = server.clients(3).await?;
        let [alice, bob, carol] = &mut c[..] else {
            unreachable!()
        };
        rename(&mut [alice, bob, carol], 0, "alice").await?;
        rename(&mut [alice, bob, carol], 1, "bob").await?;
        alice.send(&format!("/oper {SECRET}")).await?;
        alice.expect("*** you are now an operator").await?;
        alice.send("/kick BOB flooding the room").await?;
        bob.expect("*** you were kicked: flooding the room (by alice)")
            .await?;
        bob.expect_eof().await?;
        alice
            .expect("*** bob left (kicked: flooding the room (by alice))")
            .await?;
        alice.expect("*** kicked bob").await?;
        carol
            .expect("*** bob left (kicked: flooding the room (by alice))")
            .await?;
        alice.send("/kick bob").await?;
        alice.expect("! no user named bob").await?;
        alice.send(&format!("/kick {}", carol.name)).await?;
        carol.expect("*** you were kicked: by alice").await?;
        carol.expect_eof().await
    })
}

#[test]
fn a_ban_disconnects_the_address_refuses_it_until_lifted_and_is_listed() -> io::Result<()> {
    let server = TestServer::start(with_operators());
    let events = server.handle.subscribe_presence(64);
    smol::block_on(async {
        let mut alice = server.connect().await?;
        alice.nick("alice").await?;
        alice.send(&format!("/oper {SECRET}")).await?;
        alice.expect("*** you are now an operator").await?;
        let mut bob = Client::connect_from(server.addr, ip("127.0.0.2")).await?;
        let guest = bob.name.clone();
        alice.expect(&format!("*** {guest} joined #lobby")).await?;
        bob.nick("bob").await?;
        alice.expect(&format!("*** {guest} is now bob")).await?;

        alice.send("/ban bob 10 spam, links").await?;
        bob.expect("! you are banned: spam, links").await?;
        bob.expect_eof().await?;
        alice.expect("*** bob left (banned: spam, links)").await?;
        alice.expect("*** banned 127.0.0.2 for 10 minutes").await?;

        let mut again = Client::connect_raw_from(server.addr, ip("127.0.0.2")).await?;
        assert_eq!(again.rest().await?, "! you are banned: spam, links\n");
        // Another address is not affected.
        let _carol = Client::connect_from(server.addr, ip("127.0.0.3")).await?;
        alice.until(|l| l.ends_with("joined #lobby")).await?;

        alice.send("/ban 2001:db8:1:2::7").await?;
        alice
            .expect("*** banned 2001:db8:1:2::/64 until unbanned")
            .await?;
        alice.send("/bans").await?;
        alice
            .expect(
                "*** bans (2): 127.0.0.2 (10 minutes left: spam, links), \
                 2001:db8:1:2::/64 (until unbanned)",
            )
            .await?;
        alice.send("/unban 127.0.0.2").await?;
        alice.expect("*** unbanned 127.0.0.2").await?;
        alice.send("/unban 127.0.0.2").await?;
        alice.expect("! 127.0.0.2 is not banned").await?;
        alice.send("/unban 2001:db8:1:2:ffff::1").await?;
        alice.expect("*** unbanned 2001:db8:1:2::/64").await?;
        alice.send("/unban nonsense").await?;
        alice
            .expect("! invalid address \"nonsense\": use an address or ADDRESS/PREFIX")
            .await?;
        alice.send("/bans").await?;
        alice.expect("*** no bans").await?;
        let back = Client::connect_from(server.addr, ip("127.0.0.2")).await?;
        alice
            .expect(&format!("*** {} joined #lobby", back.name))
            .await?;
        alice.send("/ban nobody").await?;
        alice.expect("! no user named nobody").await
    })?;
    let logged: Vec<String> = std::iter::from_fn(|| events.try_recv().ok())
        .filter_map(|event| match event {
            Event::Banned { range, by, .. } => Some(format!("{by:?} banned {range}")),
            Event::Unbanned { range, by } => Some(format!("{by:?} unbanned {range}")),
            Event::Refused { addr, reason } => Some(format!("refused {}: {reason}", addr.ip())),
            _ => None,
        })
        .collect();
    assert_eq!(
        logged,
        [
            "Some(\"alice\") banned 127.0.0.2",
            "refused 127.0.0.2: you are banned: spam, links",
            "Some(\"alice\") banned 2001:db8:1:2::/64",
            "Some(\"alice\") unbanned 127.0.0.2",
            "Some(\"alice\") unbanned 2001:db8:1:2::/64",
        ]
    );
    Ok(())
}

#[test]
fn a_ban_with_minutes_expires() -> io::Result<()> {
    // 0.05 minutes: 3 seconds.
    const BAN: Duration = Duration::from_secs(3);
    let server = TestServer::start(with_operators());
    smol::block_on(async {
        let mut op = server.connect().await?;
        op.send(&format!("/oper {SECRET}")).await?;
        op.expect("*** you are now an operator").await?;
        let banned_at = Instant::now();
        op.send("/ban 127.0.0.4 0.05 cool off").await?;
        op.expect("*** banned 127.0.0.4 for 3 seconds").await?;
        let mut early = Client::connect_raw_from(server.addr, ip("127.0.0.4")).await?;
        let first = early.line().await?;
        // Only a machine slow enough to get here after the ban ended may be let in.
        if first != "! you are banned: cool off" {
            assert!(
                banned_at.elapsed() >= BAN,
                "admitted during the ban: {first}"
            );
        }
        smol::Timer::at(banned_at + BAN).await;
        let back = Client::connect_from(server.addr, ip("127.0.0.4")).await?;
        op.expect(&format!("*** {} joined #lobby", back.name))
            .await?;
        op.send("/bans").await?;
        op.expect("*** no bans").await
    })
}

#[test]
fn a_muted_users_lines_go_nowhere_until_unmuted() -> io::Result<()> {
    let server = TestServer::start(with_operators());
    let events = server.handle.subscribe_presence(64);
    smol::block_on(async {
        let mut c = server.clients(3).await?;
        let [alice, bob, carol] = &mut c[..] else {
            unreachable!()
        };
        rename(&mut [alice, bob, carol], 0, "alice").await?;
        rename(&mut [alice, bob, carol], 1, "bob").await?;
        alice.send(&format!("/oper {SECRET}")).await?;
        alice.expect("*** you are now an operator").await?;
        alice.send("/mute bob").await?;
        alice.expect("*** muted bob").await?;
        bob.expect("*** you were muted").await?;
        for line in [
            "hello?",
            "/me shouts",
            "/msg carol psst",
            "/nick shouting",
            "/topic free stuff",
        ] {
            bob.send(line).await?;
            bob.expect("! you are muted; nothing was sent").await?;
        }
        // Reading is allowed.
        bob.send("/who").await?;
        bob.expect("*** users in #lobby (3): alice, bob, guest3")
            .await?;
        // carol got none of it: the next line she sees is what alice says now.
        alice.send("quiet now").await?;
        carol.expect("alice: quiet now").await?;
        bob.expect("alice: quiet now").await?;

        alice.send("/unmute bob").await?;
        alice.expect("*** unmuted bob").await?;
        bob.expect("*** you were unmuted").await?;
        bob.send("sorry").await?;
        carol.expect("bob: sorry").await?;
        alice.expect("bob: sorry").await?;

        // The host can do the same.
        server.handle.mute("bob").map_err(io::Error::other)?;
        bob.expect("*** you were muted").await?;
        bob.send("again?").await?;
        bob.expect("! you are muted; nothing was sent").await?;
        server.handle.unmute("BOB").map_err(io::Error::other)?;
        bob.expect("*** you were unmuted").await?;
        assert!(server.handle.mute("nobody").is_err());
        alice.send("/mute nobody").await?;
        alice.expect("! no user named nobody").await
    })?;
    let mutes: Vec<(String, bool, Option<String>)> = std::iter::from_fn(|| events.try_recv().ok())
        .filter_map(|event| match event {
            Event::Muted { name, muted, by } => {
                Some((name.to_string(), muted, by.map(|b| b.to_string())))
            }
            _ => None,
        })
        .collect();
    let by_alice = Some("alice".to_string());
    assert_eq!(
        mutes,
        [
            ("bob".into(), true, by_alice.clone()),
            ("bob".into(), false, by_alice),
            ("bob".into(), true, None),
            ("bob".into(), false, None),
        ]
    );
    Ok(())
}

#[test]
fn bans_that_would_lock_everyone_out_or_read_oddly_are_refused() -> io::Result<()> {
    let server = TestServer::start(with_operators());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        c[0].send(&format!("/oper {SECRET}")).await?;
        c[0].expect("*** you are now an operator").await?;
        for (command, answer) in [
            (
                "/ban 0.0.0.0/0 oops",
                "! 0.0.0.0/0 is too wide to ban from chat (at most /8 for IPv4, /16 for IPv6)",
            ),
            (
                "/ban 127.0.0.0/8",
                "! 127.0.0.0/8 includes your own address; not banned",
            ),
            (
                "/ban 127.0.0.11/33",
                "! invalid address \"127.0.0.11/33\": use an address or ADDRESS/PREFIX",
            ),
            (
                "/ban guest2 NaN spam",
                "! invalid number of minutes \"NaN\": use a positive number up to 525600",
            ),
        ] {
            c[0].send(command).await?;
            c[0].expect(answer).await?;
        }
        c[0].send("/bans").await?;
        c[0].expect("*** no bans").await?;
        // Nobody was banned: the other client is still here.
        c[1].send("still here").await?;
        c[0].expect("guest2: still here").await
    })
}

#[test]
fn stats_show_the_servers_counters_to_operators() -> io::Result<()> {
    let server = TestServer::start(with_operators());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        c[0].send("one").await?;
        c[1].expect("guest1: one").await?;
        c[0].send(&format!("/oper {SECRET}")).await?;
        c[0].expect("*** you are now an operator").await?;
        c[0].send("/stats").await?;
        c[0].expect(
            "*** stats: clients 2, accepted 2, refused 0, relayed 1, dropped slow 0, \
             too long 0, flood delayed 0, tls failed 0, events dropped 0, bans 0",
        )
        .await
    })
}

#[test]
fn the_host_bans_unbans_and_lists_through_the_handle() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut watcher = server.connect().await?;
        let mut bob = Client::connect_from(server.addr, ip("127.0.0.5")).await?;
        watcher
            .expect(&format!("*** {} joined #lobby", bob.name))
            .await?;
        let handle = &server.handle;
        handle
            .ban(ip("127.0.0.5"), Some(Duration::from_secs(600)), "bye")
            .map_err(io::Error::other)?;
        bob.expect("! you are banned: bye").await?;
        bob.expect_eof().await?;
        watcher
            .expect(&format!("*** {} left (banned: bye)", bob.name))
            .await?;
        let bans = handle.bans();
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].range.to_string(), "127.0.0.5");
        assert!(bans[0].remaining > Some(Duration::from_secs(590)));
        let mut refused = Client::connect_raw_from(server.addr, ip("127.0.0.5")).await?;
        assert_eq!(refused.rest().await?, "! you are banned: bye\n");
        assert!(handle.unban("127.0.0.5".parse().expect("a range")));
        assert!(handle.bans().is_empty());
        Client::connect_from(server.addr, ip("127.0.0.5"))
            .await
            .map(drop)
    })
}

#[test]
fn the_ban_list_is_bounded() -> io::Result<()> {
    let server = TestServer::start(Config {
        max_bans: 2,
        ..with_operators()
    });
    smol::block_on(async {
        let mut op = server.connect().await?;
        op.send(&format!("/oper {SECRET}")).await?;
        op.expect("*** you are now an operator").await?;
        for addr in ["192.0.2.1", "192.0.2.2"] {
            op.send(&format!("/ban {addr}")).await?;
            op.expect(&format!("*** banned {addr} until unbanned"))
                .await?;
        }
        op.send("/ban 192.0.2.3").await?;
        op.expect("! the ban list is full (2 bans); lift one first")
            .await?;
        // Banning a banned address again replaces its ban.
        op.send("/ban 192.0.2.2 5 changed my mind").await?;
        op.expect("*** banned 192.0.2.2 for 5 minutes").await?;
        assert!(server
            .handle
            .ban(ip("192.0.2.3"), None, "")
            .is_err_and(|e| e.0 == 2));
        Ok(())
    })
}

#[test]
fn topics_are_shown_on_joining_in_rooms_and_set_by_anyone_by_default() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        c[0].send("/topic").await?;
        c[0].expect("*** #lobby has no topic").await?;
        c[0].send("/topic be nice, have fun").await?;
        for client in c.iter_mut() {
            client
                .expect("*** guest1 set the topic of #lobby: be nice, have fun")
                .await?;
        }
        c[1].join("rust").await?;
        c[0].expect("*** guest2 left #lobby for #rust").await?;
        c[1].send("/topic all things \x1b[31mrust").await?;
        c[1].expect("*** guest2 set the topic of #rust: all things \u{fffd}[31mrust")
            .await?;
        c[0].send("/rooms").await?;
        c[0].expect("*** rooms: #lobby (1) \"be nice, have fun\", #rust (1) \"all things \u{fffd}[31mrust\"")
            .await?;
        let rooms = server.handle.rooms();
        let lobby = rooms.iter().find(|r| &*r.name == "lobby");
        assert_eq!(
            lobby.and_then(|r| r.topic.as_deref()),
            Some("be nice, have fun")
        );
        let mut late = Client::connect_raw(server.addr).await?;
        late.until(|l| l.starts_with("*** you are")).await?;
        late.expect("*** topic of #lobby: be nice, have fun")
            .await?;
        c[0].expect("*** guest3 joined #lobby").await?;
        c[0].send("/topic -").await?;
        c[0].expect("*** guest1 cleared the topic of #lobby")
            .await?;
        late.expect("*** guest1 cleared the topic of #lobby")
            .await?;
        late.send(&format!("/topic {}", "x".repeat(201))).await?;
        late.expect("! topic too long (over 200 characters)")
            .await?;
        late.send("/topic").await?;
        late.expect("*** #lobby has no topic").await
    })
}

#[test]
fn with_topic_ops_only_only_operators_set_topics() -> io::Result<()> {
    let server = TestServer::start(Config {
        topic_ops_only: true,
        ..with_operators()
    });
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        c[1].send("/topic mine now").await?;
        c[1].expect("! you are not an operator").await?;
        c[0].send(&format!("/oper {SECRET}")).await?;
        c[0].expect("*** you are now an operator").await?;
        c[0].send("/topic official").await?;
        c[1].expect("*** guest1 set the topic of #lobby: official")
            .await?;
        c[1].send("/topic").await?;
        c[1].expect("*** topic of #lobby: official").await
    })
}
