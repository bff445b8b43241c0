//! The library as a host application sees it: the handle, events, filters, several servers.

mod common;

use std::io;
use std::sync::Arc;

use common::{config, eventually, Client, TestServer};
use smolchat::{Config, Event, LeaveReason, NotFound, Server, Verdict};

#[test]
fn handle_lists_users_and_rooms() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        c[0].nick("alice").await?;
        c[0].join("den").await?;
        let mut users = server.handle.users();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            users
                .iter()
                .map(|u| (&*u.name, &*u.room))
                .collect::<Vec<_>>(),
            [("alice", "den"), ("guest2", "lobby")]
        );
        assert!(users.iter().all(|u| u.addr.ip().is_loopback()));
        let mut rooms: Vec<(String, usize)> = server
            .handle
            .rooms()
            .into_iter()
            .map(|r| (r.name.to_string(), r.members))
            .collect();
        rooms.sort();
        assert_eq!(rooms, [("den".to_string(), 1), ("lobby".to_string(), 1)]);
        assert_eq!(server.handle.local_addr(), server.addr);
        Ok(())
    })
}

#[test]
fn handle_sends_notices_to_everyone_a_room_or_one_user() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.clients(3).await?;
        c[2].join("den").await?;
        for client in &mut c[..2] {
            client
                .until(|l| l.ends_with("left #lobby for #den"))
                .await?;
        }
        server.handle.announce("to all\u{1b}[2J");
        for client in &mut c {
            client.expect("*** to all\u{fffd}[2J").await?;
        }
        server
            .handle
            .announce_room("#den", "to the den")
            .expect("den exists");
        c[2].expect("*** to the den").await?;
        server
            .handle
            .tell("GUEST1", "to you")
            .expect("guest1 exists");
        c[0].expect("*** to you").await?;
        // Nobody else got the room or user notice: their next line is the reply to /rooms.
        c[1].sync().await?;
        assert_eq!(
            server.handle.announce_room("attic", "x"),
            Err(NotFound::Room("attic".into()))
        );
        assert_eq!(
            server.handle.tell("zed", "x"),
            Err(NotFound::User("zed".into()))
        );
        assert_eq!(
            NotFound::User("zed".into()).to_string(),
            "no user named zed"
        );
        Ok(())
    })
}

#[test]
fn kick_disconnects_with_the_reason() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        let events = server.handle.subscribe(16);
        server
            .handle
            .kick("guest2", "spamming")
            .expect("guest2 exists");
        c[1].expect("*** you were kicked: spamming").await?;
        c[1].expect_eof().await?;
        c[0].expect("*** guest2 left (kicked: spamming)").await?;
        let event =
            common::timeout(async { events.recv().await.map_err(io::Error::other) }).await?;
        assert_eq!(
            event,
            Event::Left {
                name: "guest2".into(),
                reason: LeaveReason::Kicked("spamming".into())
            }
        );
        assert_eq!(
            server.handle.kick("guest2", "again"),
            Err(NotFound::User("guest2".into()))
        );
        Ok(())
    })
}

#[test]
fn events_report_everything_in_order() -> io::Result<()> {
    let server = TestServer::start(config());
    let events = server.handle.subscribe(64);
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        c[0].nick("alice").await?;
        c[0].send("hello").await?;
        c[0].send("/me waves").await?;
        c[0].send("/msg guest2 psst").await?;
        c[0].send("/join den").await?;
        c[0].send("/quit bye all").await?;
        c[0].until(|l| l == "*** bye").await?;
        let mut got = Vec::new();
        while got.len() < 8 {
            got.push(
                common::timeout(async { events.recv().await.map_err(io::Error::other) }).await?,
            );
        }
        let s = |t: &str| -> Arc<str> { t.into() };
        assert!(
            matches!(&got[0], Event::Joined { name, addr } if **name == *"guest1" && addr.ip().is_loopback())
        );
        assert!(matches!(&got[1], Event::Joined { name, .. } if **name == *"guest2"));
        assert_eq!(
            got[2..],
            [
                Event::Renamed {
                    old: s("guest1"),
                    new: s("alice")
                },
                Event::Message {
                    name: s("alice"),
                    room: s("lobby"),
                    text: s("hello"),
                    action: false
                },
                Event::Message {
                    name: s("alice"),
                    room: s("lobby"),
                    text: s("waves"),
                    action: true
                },
                Event::Private {
                    from: s("alice"),
                    to: s("guest2"),
                    text: s("psst")
                },
                Event::RoomChanged {
                    name: s("alice"),
                    from: s("lobby"),
                    to: s("den")
                },
                Event::Left {
                    name: s("alice"),
                    reason: LeaveReason::Quit(Some("bye all".into()))
                },
            ]
        );
        Ok(())
    })
}

#[test]
fn subscriber_that_never_reads_does_not_stall_the_chat() -> io::Result<()> {
    let server = TestServer::start(config());
    let stuck = server.handle.subscribe(4);
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        for i in 0..500 {
            c[0].send(&format!("line {i}")).await?;
        }
        for i in 0..500 {
            c[1].expect(&format!("guest1: line {i}")).await?;
        }
        let stats = server.handle.stats();
        assert_eq!(stats.lines_relayed, 500);
        assert_eq!(
            stats.events_dropped,
            502 - 4,
            "two joins and 500 messages, 4 kept"
        );
        // What it did keep are the oldest events, intact.
        assert!(matches!(stuck.try_recv(), Ok(Event::Joined { .. })));
        Ok(())
    })
}

#[test]
fn presence_subscription_misses_no_join_or_leave_however_busy_the_chat() -> io::Result<()> {
    let server = TestServer::start(config());
    // Room for exactly the three events that matter: two joins and a leave.
    let presence = server.handle.subscribe_presence(3);
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        for i in 0..500 {
            c[0].send(&format!("busy {i}")).await?;
        }
        c[1].until(|l| l == "guest1: busy 499").await?;
        c[0].send("/quit").await?;
        c[1].expect("*** guest1 left (quit)").await?;
        let next = || common::timeout(async { presence.recv().await.map_err(io::Error::other) });
        assert!(matches!(next().await?, Event::Joined { .. }));
        assert!(matches!(next().await?, Event::Joined { .. }));
        let left = next().await?;
        assert_eq!(
            left,
            Event::Left {
                name: "guest1".into(),
                reason: LeaveReason::Quit(None)
            }
        );
        assert_eq!(server.handle.stats().events_dropped, 0);
        Ok(())
    })
}

#[test]
fn filter_can_rewrite_or_reject_lines() -> io::Result<()> {
    let server = TestServer::start(Config {
        filter: Some(Arc::new(|draft: &smolchat::Draft<'_>| {
            if draft.text.contains("spam") {
                Verdict::Reject("no spam here".into())
            } else if draft.to.is_none() && draft.text.contains("darn") {
                Verdict::Rewrite(draft.text.replace("darn", "d**n"))
            } else {
                Verdict::Relay
            }
        })),
        ..config()
    });
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        c[0].send("darn it").await?;
        c[1].expect("guest1: d**n it").await?;
        c[0].send("buy spam").await?;
        c[0].expect("! message not sent: no spam here").await?;
        c[0].send("/msg guest2 spam?").await?;
        c[0].expect("! message not sent: no spam here").await?;
        c[0].send("/msg guest2 darn").await?;
        c[1].expect("[pm from guest1] darn").await
    })
}

#[test]
fn two_servers_in_one_process_do_not_interfere() -> io::Result<()> {
    let first = TestServer::start(config());
    let second = TestServer::start(config());
    smol::block_on(async {
        let mut a = first.clients(2).await?;
        let mut b = second.clients(2).await?;
        // Both number their guests independently.
        assert_eq!(
            (a[0].name.as_str(), b[0].name.as_str()),
            ("guest1", "guest1")
        );
        a[0].send("on the first").await?;
        a[1].expect("guest1: on the first").await?;
        b[1].sync().await?;
        first.stop();
        a[1].expect("*** server is shutting down").await?;
        b[0].send("second still up").await?;
        b[1].expect("guest1: second still up").await?;
        assert_eq!(second.handle.stats().lines_relayed, 1);
        Ok(())
    })
}

#[test]
fn runs_on_a_multi_threaded_executor() -> io::Result<()> {
    let server = Server::bind("127.0.0.1:0", config())?;
    let (addr, handle) = (server.local_addr(), server.handle());
    let ex = Arc::new(smol::Executor::new());
    let workers = common::workers::Workers::spawn(&ex, 2);
    let serving = ex.spawn({
        let ex = ex.clone();
        async move { server.run(&ex, std::future::pending()).await }
    });
    smol::block_on(async {
        let mut c = Vec::new();
        for _ in 0..4 {
            c.push(Client::connect(addr).await?);
        }
        for i in 0..100 {
            c[i % 4].send(&format!("n{i}")).await?;
        }
        for client in &mut c {
            client.send("done").await?;
        }
        // One sender's lines arrive in order, so once a client has seen the three others'
        // `done`, every line they sent before it has arrived too.
        for (k, client) in c.iter_mut().enumerate() {
            let (mut got, mut done) = (Vec::new(), 0);
            while done < 3 {
                let line = client.line().await?;
                if line.ends_with(": done") {
                    done += 1;
                } else if let Some((_, n)) = line.split_once(": n") {
                    got.push(n.parse::<usize>().map_err(io::Error::other)?);
                }
            }
            got.sort_unstable();
            let expected: Vec<usize> = (0..100).filter(|i| i % 4 != k).collect();
            assert_eq!(
                got, expected,
                "client {k} got each other client's line once"
            );
        }
        handle.shutdown();
        common::timeout(async {
            serving.await;
            Ok(())
        })
        .await?;
        eventually("all clients released", || handle.stats().clients == 0).await
    })?;
    workers.stop().expect("worker thread");
    Ok(())
}

/// Serves two clients through `run_server`, shuts down, and checks that `run` returned.
fn serves_and_returns_after_shutdown(run_server: fn(Server)) -> io::Result<()> {
    let server = Server::bind("127.0.0.1:0", config())?;
    let (addr, handle) = (server.local_addr(), server.handle());
    let (returned, has_returned) = async_channel::bounded::<()>(1);
    let thread = std::thread::spawn(move || {
        run_server(server);
        let _ = returned.try_send(());
    });
    smol::block_on(async {
        // `connect` reads the welcome up to `*** you are …`: the connection is served.
        let mut alice = Client::connect(addr).await?;
        let mut bob = Client::connect(addr).await?;
        alice.expect("*** guest2 joined #lobby").await?;
        alice.send("hello").await?;
        bob.expect("guest1: hello").await?;
        handle.shutdown();
        bob.expect("*** server is shutting down").await?;
        common::timeout(async { has_returned.recv().await.map_err(io::Error::other) }).await
    })?;
    thread
        .join()
        .map_err(|_| io::Error::other("server thread panicked"))
}

#[test]
fn run_serves_when_block_on_is_all_that_drives_it() -> io::Result<()> {
    serves_and_returns_after_shutdown(|server| {
        let ex = smol::Executor::new();
        smol::block_on(server.run(&ex, std::future::pending()));
    })
}

#[test]
fn run_serves_on_an_executor_the_application_already_runs() -> io::Result<()> {
    serves_and_returns_after_shutdown(|server| {
        let ex = smol::Executor::new();
        smol::block_on(ex.run(server.run(&ex, std::future::pending())));
    })
}
