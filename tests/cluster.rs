//! Several smolchat processes as one chat through a real redis-server: each test starts its own
//! Redis and its own nodes, and talks to them over TCP like any client.
#![cfg(feature = "redis")]

mod common;
#[allow(dead_code)] // reason: only the raise is needed here
#[path = "../src/fd_limit.rs"]
mod fd_limit;

use std::collections::HashSet;
use std::io;
use std::time::{Duration, Instant};

use common::process::{self, signal, Binary};
use common::redis_server::RedisServer;
use common::Client;

/// A node detects a lost node after its `node_timeout` (10 s) plus a heartbeat (2 s), and a
/// lost node's names expire 30 s after their last renewal: the bounds docs/CLUSTER.md states,
/// with room for a loaded machine.
const NODE_LOST_WITHIN: Duration = Duration::from_secs(30);
const NAME_FREE_WITHIN: Duration = Duration::from_secs(50);
/// Reconnection backoff tops out at 5 s.
const LINK_BACK_WITHIN: Duration = Duration::from_secs(30);

/// A node on a free loopback port, in the cluster of `redis`.
fn node(redis: &RedisServer) -> io::Result<Binary> {
    node_with(redis, &[])
}

fn node_with(redis: &RedisServer, flags: &[&str]) -> io::Result<Binary> {
    let url = redis.url();
    let mut args = vec!["--bind", "127.0.0.1:0", "--redis", &url, "-q"];
    args.extend_from_slice(flags);
    Binary::start(&args)
}

/// A client on `node` called `name`, with everything it was sent so far read.
async fn named(node: &Binary, name: &str) -> io::Result<Client> {
    let mut client = Client::connect(node.addr).await?;
    client.send(&format!("/nick {name}")).await?;
    // Notices from other nodes may come before the answer.
    let answer = format!("*** you are now {name}");
    let got = client.until(|l| l == answer || l.starts_with("! ")).await?;
    if got != answer {
        return Err(io::Error::other(format!("/nick {name}: {got}")));
    }
    client.name = name.to_string();
    Ok(client)
}

/// Reads the client's lines for up to `within`, asking `/rooms` between reads so that a read
/// never waits long for nothing, until one satisfies `pred`; returns every line read (but the
/// `/rooms` replies), that one last.
async fn within(
    client: &mut Client,
    within: Duration,
    pred: impl Fn(&str) -> bool,
) -> io::Result<Vec<String>> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        client.send("/rooms").await?;
        let mut found = None;
        loop {
            let line = client.line().await?;
            if line.starts_with("*** rooms: ") {
                break;
            }
            if found.is_some() {
                continue;
            }
            if pred(&line) {
                found = Some(line);
            } else {
                seen.push(line);
            }
        }
        // Returned after the reply, so the next read is the next line.
        if let Some(line) = found {
            seen.push(line);
            return Ok(seen);
        }
        smol::Timer::after(Duration::from_millis(250)).await;
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "{}: nothing matched within {within:?}: {seen:?}",
            client.name
        ),
    ))
}

/// The names in a `/who` reply.
async fn who(client: &mut Client) -> io::Result<HashSet<String>> {
    client.send("/who").await?;
    let line = client.until(|l| l.starts_with("*** users in ")).await?;
    let names = line.split_once("): ").map_or("", |(_, names)| names);
    Ok(names
        .split(", ")
        .map(|n| n.trim_end_matches(" (away)").to_string())
        .collect())
}

/// `/who` until its names satisfy `pred` (another node records a change in Redis on its own
/// time), at most 40 times a quarter of a second apart; returns the last names.
async fn who_until(
    client: &mut Client,
    pred: impl Fn(&HashSet<String>) -> bool,
) -> io::Result<HashSet<String>> {
    let mut names = who(client).await?;
    for _ in 0..40 {
        if pred(&names) {
            break;
        }
        smol::Timer::after(Duration::from_millis(250)).await;
        names = who(client).await?;
    }
    Ok(names)
}

#[test]
fn room_lines_reach_every_node_in_one_order() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    let (one, two) = (node(&redis)?, node(&redis)?);
    smol::block_on(async {
        let mut alice = named(&one, "alice").await?;
        let mut bob = named(&two, "bob").await?;
        let mut carol = named(&one, "carol").await?;
        let mut dave = named(&two, "dave").await?;
        for client in [&mut alice, &mut bob, &mut carol, &mut dave] {
            client.sync().await?;
        }
        // Both senders at once, so their lines interleave differently on each node unless
        // the nodes keep Redis's order.
        for i in 0..10 {
            alice.send(&format!("a{i}")).await?;
            bob.send(&format!("b{i}")).await?;
        }
        let mut seen = Vec::new();
        for observer in [&mut carol, &mut dave] {
            let mut lines = Vec::new();
            while lines.len() < 20 {
                let line = observer.line().await?;
                if line.starts_with("alice: ") || line.starts_with("bob: ") {
                    lines.push(line);
                }
            }
            seen.push(lines);
        }
        assert_eq!(seen[0], seen[1], "one order on both nodes");
        for (who, prefix) in [("alice", "a"), ("bob", "b")] {
            let own: Vec<&String> = seen[0]
                .iter()
                .filter(|l| l.starts_with(&format!("{who}: ")))
                .collect();
            let sent: Vec<String> = (0..10).map(|i| format!("{who}: {prefix}{i}")).collect();
            assert_eq!(own, sent.iter().collect::<Vec<_>>(), "in the order sent");
        }
        // Each sees the other's lines, once, and not its own.
        let mut got = Vec::new();
        while got.len() < 10 {
            let line = alice.line().await?;
            assert!(!line.starts_with("alice: "), "no echo: {line}");
            if line.starts_with("bob: ") {
                got.push(line);
            }
        }
        alice.expect_nothing_more().await?;
        carol.expect_nothing_more().await?;
        io::Result::Ok(())
    })
}

#[test]
fn names_are_unique_across_nodes_whatever_their_case() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    let (one, two) = (node(&redis)?, node(&redis)?);
    smol::block_on(async {
        let mut guests = Vec::new();
        for _ in 0..3 {
            guests.push(Client::connect(one.addr).await?);
            guests.push(Client::connect(two.addr).await?);
        }
        let names: HashSet<&str> = guests.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(
            names.len(),
            6,
            "guest numbers are unique across nodes: {names:?}"
        );

        let mut alice = named(&one, "Alice").await?;
        let mut bob = Client::connect(two.addr).await?;
        // Notices from the other node may come between a command and its answer.
        let answer = |l: &str| l.starts_with("! ") || l.starts_with("*** you are now ");
        bob.send("/nick ALICE").await?;
        assert_eq!(bob.until(answer).await?, "! the name ALICE is taken");
        bob.send(&format!("/nick {}", guests[0].name)).await?;
        assert_eq!(
            bob.until(answer).await?,
            format!("! the name {} is taken", guests[0].name)
        );
        // Freed when its holder takes another name: by the time anyone on another node reads
        // the rename, Redis has the name released (one connection carries both, in order).
        alice.send("/nick alice2").await?;
        alice.until(|l| l == "*** you are now alice2").await?;
        bob.until(|l| l == "*** Alice is now alice2").await?;
        bob.send("/nick alice").await?;
        bob.until(|l| l == "*** you are now alice").await?;
        io::Result::Ok(())
    })
}

#[test]
fn who_rooms_and_joins_span_every_node() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    let (one, two) = (node(&redis)?, node(&redis)?);
    smol::block_on(async {
        let mut alice = named(&one, "alice").await?;
        let mut bob = named(&two, "bob").await?;
        let both = HashSet::from(["alice".to_string(), "bob".to_string()]);
        assert_eq!(who_until(&mut alice, |n| *n == both).await?, both);
        bob.join("attic").await?;
        // Bob's join and rename notices may come first.
        alice
            .until(|l| l == "*** bob left #lobby for #attic")
            .await?;
        alice.send("/rooms").await?;
        alice.expect("*** rooms: #attic (1), #lobby (1)").await?;
        alice.join("attic").await?;
        bob.expect("*** alice joined #attic").await?;
        alice.send("/nick alicia").await?;
        alice.expect("*** you are now alicia").await?;
        bob.expect("*** alice is now alicia").await?;
        alice.send("/quit").await?;
        bob.expect("*** alicia left (quit)").await?;
        let alone = HashSet::from(["bob".to_string()]);
        assert_eq!(who_until(&mut bob, |n| *n == alone).await?, alone);
        io::Result::Ok(())
    })
}

#[test]
fn a_newcomer_on_one_node_sees_what_was_said_on_another() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    let flags = ["--history", "3", "--flood-rate", "0"];
    let (one, two) = (node_with(&redis, &flags)?, node_with(&redis, &flags)?);
    smol::block_on(async {
        // Said at once, likely before her own history is read: never replayed to her.
        let mut alice = Client::connect_raw(one.addr).await?;
        alice.send_raw(b"/nick alice\nfirst\nsecond\n").await?;
        let mut greeting = Vec::new();
        while greeting.last().is_none_or(|l| l != "*** you are now alice") {
            greeting.push(alice.line().await?);
        }
        assert!(
            !greeting.iter().any(|l| l.starts_with("[history")),
            "{greeting:?}"
        );
        alice.name = "alice".into();
        // Notices are not replayed, so they take no place in the history.
        for n in 0..4 {
            alice.nick(&format!("alice{n}")).await?;
        }
        alice.nick("alice").await?;
        alice.expect_nothing_more().await?;
        let mut bob = Client::connect_raw(two.addr).await?;
        bob.until(|l| l.starts_with("*** you are ")).await?;
        let first = bob.line().await?;
        assert!(
            first.starts_with("[history ") && first.ends_with("] alice: first"),
            "{first}"
        );
        let second = bob.line().await?;
        assert!(second.ends_with("] alice: second"), "{second}");
        alice.send("third").await?;
        bob.expect("alice: third").await?;
        bob.expect_nothing_more().await?;
        io::Result::Ok(())
    })
}

#[test]
fn private_messages_reach_users_on_other_nodes() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    let (one, two) = (node(&redis)?, node(&redis)?);
    smol::block_on(async {
        let mut alice = named(&one, "alice").await?;
        let mut bob = named(&two, "bob").await?;
        alice.send("/msg BOB psst").await?;
        alice
            .until(|l| l.starts_with("[pm to "))
            .await
            .and_then(|l| {
                (l == "[pm to bob] psst")
                    .then_some(())
                    .ok_or_else(|| io::Error::other(l))
            })?;
        bob.until(|l| l.starts_with("[pm")).await.and_then(|l| {
            (l == "[pm from alice] psst")
                .then_some(())
                .ok_or_else(|| io::Error::other(l))
        })?;
        alice.send("/msg nobody hello").await?;
        alice.until(|l| l.starts_with("! ")).await?;
        io::Result::Ok(())
    })
}

#[test]
fn users_of_a_killed_node_leave_and_their_names_come_free() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    let (one, mut two) = (node(&redis)?, node(&redis)?);
    smol::block_on(async {
        let mut alice = named(&one, "alice").await?;
        let _bob = named(&two, "bob").await?;
        let names = who_until(&mut alice, |n| n.contains("bob")).await?;
        assert!(names.contains("bob"), "{names:?}");
        // SIGKILL, by PID: no goodbye, no released names.
        two.child.kill()?;
        two.wait()?;
        let started = Instant::now();
        within(&mut alice, NODE_LOST_WITHIN, |l| {
            l == "*** bob left (server lost)"
        })
        .await?;
        let names = who_until(&mut alice, |n| !n.contains("bob")).await?;
        assert!(!names.contains("bob"), "{names:?}");
        let mut carol = Client::connect(one.addr).await?;
        let deadline = started + NAME_FREE_WITHIN;
        loop {
            carol.send("/nick bob").await?;
            let answer = carol.until(|l| l.contains("bob")).await?;
            if answer == "*** you are now bob" {
                break;
            }
            assert_eq!(answer, "! the name bob is taken");
            assert!(Instant::now() < deadline, "bob never came free");
            smol::Timer::after(Duration::from_secs(1)).await;
        }
        io::Result::Ok(())
    })
}

#[test]
fn losing_redis_leaves_local_chat_working_and_recovers() -> io::Result<()> {
    let mut redis = RedisServer::start(&[])?;
    let (one, two) = (node(&redis)?, node(&redis)?);
    smol::block_on(async {
        let mut alice = named(&one, "alice").await?;
        let mut bob = named(&one, "bob").await?;
        let mut carol = named(&two, "carol").await?;
        bob.sync().await?;
        redis.stop();
        let lost = "*** cluster link lost; only users on this server see you";
        // Join notices from Redis may still come first.
        for client in [&mut alice, &mut bob, &mut carol] {
            client.until(|l| l == lost).await?;
        }
        alice.send("still here").await?;
        bob.expect("alice: still here").await?;
        // Each node keeps names while the link is down, claimed when it is back.
        carol.send("/nick alice").await?;
        carol.expect("*** you are now alice").await?;

        redis.restart()?;
        let restored = "*** cluster link restored";
        let alice_saw = within(&mut alice, LINK_BACK_WITHIN, |l| l == restored).await?;
        let carol_saw = within(&mut carol, LINK_BACK_WITHIN, |l| l == restored).await?;
        assert!(
            !alice_saw.iter().any(|l| l == lost),
            "told once: {alice_saw:?}"
        );
        // Redis came back empty: each node claimed its names again, and one of the two
        // alices lost hers, before its node said the link was back.
        let renamed =
            "*** the name alice was taken while the cluster link was down; you are now guest";
        let lost_name = |seen: &[String]| seen.iter().any(|l| l.starts_with(renamed));
        let loser = match (lost_name(&alice_saw), lost_name(&carol_saw)) {
            (true, false) => "alice",
            (false, true) => "carol",
            other => panic!("one alice renamed, not {other:?}: {alice_saw:?} {carol_saw:?}"),
        };
        let names = who_until(&mut bob, |n| n.len() == 3).await?;
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(
            names.contains("alice") && names.contains("bob"),
            "{names:?}"
        );
        if loser == "carol" {
            alice.send("back").await?;
        } else {
            carol.send("back").await?;
        }
        let listener = if loser == "carol" {
            &mut carol
        } else {
            &mut alice
        };
        listener.until(|l| l == "alice: back").await?;
        io::Result::Ok(())
    })
}

#[test]
fn an_unreachable_redis_stops_the_binary_with_one_line_and_no_password() -> io::Result<()> {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("redis://user:hunter2@127.0.0.1:{port}");
    let (code, _, stderr) = process::run(&["--bind", "127.0.0.1:0", "--redis", &url])?;
    assert_eq!(code, Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter_map(|l| process::log_message(l, "ERROR"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!("cannot reach redis://user:***@127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let (code, _, stderr) = process::run(&["--redis", "http://127.0.0.1:1"])?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("redis"), "{stderr}");
    Ok(())
}

#[test]
fn embedders_see_the_cluster_in_stats_and_events() -> io::Result<()> {
    let mut redis = RedisServer::start(&[])?;
    let config = smolchat::Config {
        redis: Some(redis.url()),
        ..common::config()
    };
    let server = smolchat::Server::bind("127.0.0.1:0", config)?;
    let handle = server.handle();
    let ex = smol::Executor::new();
    smol::block_on(server.connect_cluster(&ex))?;
    let cluster = handle.stats().cluster.expect("in a cluster");
    assert!(cluster.up);
    assert_ne!(cluster.node, 0);
    let events = handle.subscribe_presence(16);
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let running = std::thread::spawn(move || {
        smol::block_on(server.run(&ex, async {
            let _ = stopped.recv().await;
        }))
    });
    let result = smol::block_on(common::timeout(async {
        redis.stop();
        assert_eq!(events.recv().await, Ok(smolchat::Event::ClusterDown));
        assert!(!handle.stats().cluster.is_some_and(|c| c.up));
        redis.restart()?;
        assert_eq!(events.recv().await, Ok(smolchat::Event::ClusterUp));
        assert!(handle.stats().cluster.is_some_and(|c| c.up));
        Ok(())
    }));
    drop(stop);
    let _ = running.join();
    result
}

/// Reads until a line for which `last` holds (said after everything the test waits for, live
/// or as history), bounded; returns every line read, that one included.
async fn lines_through(
    client: &mut Client,
    last: impl Fn(&str) -> bool,
) -> io::Result<Vec<String>> {
    let mut seen = Vec::new();
    for _ in 0..200 {
        let line = client.line().await?;
        let done = last(&line);
        seen.push(line);
        if done {
            return Ok(seen);
        }
    }
    Err(io::Error::other(format!(
        "{}: the last line never came: {seen:?}",
        client.name
    )))
}

#[test]
fn a_member_back_in_a_room_sees_its_own_earlier_lines_in_the_history() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    let (one, two) = (node(&redis)?, node(&redis)?);
    smol::block_on(async {
        let mut alice = named(&one, "alice").await?;
        let mut bob = named(&two, "bob").await?;
        alice.join("attic").await?;
        bob.join("attic").await?;
        bob.send("hello").await?;
        // Alice reads it once it is in the room's history: Redis appends and publishes a line
        // in one step.
        alice.until(|l| l == "bob: hello").await?;
        bob.join("lobby").await?;
        bob.join("attic").await?;
        // As on a single server: the history shows what bob said before he left.
        alice.send("again").await?;
        let seen = lines_through(&mut bob, |l| l.ends_with("alice: again")).await?;
        let hello: Vec<&String> = seen
            .iter()
            .filter(|l| l.ends_with("] bob: hello"))
            .collect();
        assert_eq!(hello.len(), 1, "{seen:?}");
        assert!(hello[0].starts_with("[history "), "{seen:?}");
        io::Result::Ok(())
    })
}

/// Waits (bounded) until at least `bytes` that `node` sent sit unread in a stopped Redis's
/// socket.
async fn waiting_in_redis(node: &Binary, redis: &RedisServer, bytes: u64) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let unread = common::procfs::unread_from(node.child.id(), redis.port)?;
        if unread >= bytes {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "only {unread} bytes ever reached Redis"
            )));
        }
        smol::Timer::after(Duration::from_millis(10)).await;
    }
}

#[test]
fn a_line_said_while_a_newcomers_history_is_read_reaches_it_live() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    let flags = ["--flood-rate", "0"];
    let (one, two) = (node_with(&redis, &flags)?, node_with(&redis, &flags)?);
    let pid = redis
        .pid()
        .ok_or_else(|| io::Error::other("redis is not running"))?;
    smol::block_on(async {
        let mut alice = named(&one, "alice").await?;
        let mut bob = named(&two, "bob").await?;
        // Keeps the attic subscribed on bob's node, so bob enters it at once.
        let mut erin = named(&two, "erin").await?;
        alice.join("attic").await?;
        erin.join("attic").await?;
        alice.send("before").await?;
        erin.until(|l| l == "alice: before").await?;
        bob.sync().await?;
        // Redis stopped: bob's history cannot be read until it runs again, and what alice
        // says after bob came in waits in Redis's socket.
        signal(pid, "STOP")?;
        let entered = bob
            .join("attic")
            .await
            .map_err(|e| io::Error::other(format!("join: {e}")));
        let said = format!("after bob came in {}", "x".repeat(1500));
        let sent = alice
            .send(&said)
            .await
            .map_err(|e| io::Error::other(format!("said: {e}")));
        let queued = waiting_in_redis(&one, &redis, 1500).await;
        signal(pid, "CONT")?;
        entered?;
        sent?;
        queued?;
        let seen = lines_through(&mut bob, |l| l.ends_with(&format!("alice: {said}"))).await?;
        // Said after bob's greeting: a live line, after the history, not in it.
        assert_eq!(seen.last(), Some(&format!("alice: {said}")), "{seen:?}");
        assert!(
            seen.iter()
                .any(|l| l.starts_with("[history") && l.ends_with("alice: before")),
            "{seen:?}"
        );
        io::Result::Ok(())
    })
}

#[test]
fn lines_said_while_many_newcomers_histories_are_read_reach_each_once_in_order() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    let flags = ["--flood-rate", "0", "--max-per-ip", "200"];
    let (one, two) = (node_with(&redis, &flags)?, node_with(&redis, &flags)?);
    const ROOMS: usize = 30;
    smol::block_on(async {
        let mut alice = named(&one, "alice").await?;
        let mut users = Vec::new();
        for i in 0..2 * ROOMS {
            users.push(named(&two, &format!("u{i}")).await?);
        }
        // All at once: their histories are read one after another while alice talks.
        for (i, user) in users.iter_mut().enumerate() {
            user.send(&format!("/join room{}", i % ROOMS)).await?;
        }
        for (i, user) in users.iter_mut().enumerate() {
            let greeting = format!("*** you are u{i} in #room{}", i % ROOMS);
            user.until(|l| l.starts_with(&greeting)).await?;
        }
        for room in 0..ROOMS {
            alice.join(&format!("room{room}")).await?;
            alice.send(&format!("hi room{room}")).await?;
        }
        alice.send("/join lobby").await?;
        alice
            .until(|l| l.starts_with("*** you are alice in #lobby"))
            .await?;
        alice.send("done").await?;
        for (i, user) in users.iter_mut().enumerate() {
            let room = i % ROOMS;
            // Alice's last line in the room: every line of hers there comes before it.
            let left = format!("*** alice left #room{room} for #room");
            let last = if room + 1 < ROOMS {
                left
            } else {
                "*** alice left #room".into()
            };
            let seen = lines_through(user, |l| l.starts_with(&last)).await?;
            let hi = format!("alice: hi room{room}");
            // Said after the user was greeted, so its node was subscribed by then: her join
            // and her line come live, once, after any history.
            let said: Vec<&String> = seen.iter().filter(|l| l.ends_with(&hi)).collect();
            assert_eq!(said, [&hi], "{seen:?}");
            let joined = format!("*** alice joined #room{room}");
            let joined_at = seen.iter().position(|l| *l == joined);
            let live_at = seen.iter().position(|l| *l == hi);
            assert!(joined_at.is_some() && joined_at < live_at, "{seen:?}");
            let history_at = seen.iter().rposition(|l| l.starts_with("[history"));
            if let (Some(h), Some(l)) = (history_at, live_at) {
                assert!(h < l, "{seen:?}");
            }
        }
        io::Result::Ok(())
    })
}

#[test]
fn a_newcomer_sees_a_line_before_the_notice_that_followed_it() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    let flags = ["--flood-rate", "0"];
    let (one, two) = (node_with(&redis, &flags)?, node_with(&redis, &flags)?);
    let pid = redis
        .pid()
        .ok_or_else(|| io::Error::other("redis is not running"))?;
    smol::block_on(async {
        let mut alice = named(&one, "alice").await?;
        // Keeps the lobby subscribed on alice's node, the attic and the cellar on carol's, so
        // that bob and carol enter them at once.
        let mut dave = named(&one, "dave").await?;
        let mut erin = named(&two, "erin").await?;
        let mut frank = named(&two, "frank").await?;
        let mut bob = named(&two, "bob").await?;
        let mut carol = named(&two, "carol").await?;
        alice.join("attic").await?;
        erin.join("attic").await?;
        frank.join("cellar").await?;
        for client in [&mut dave, &mut bob, &mut carol] {
            client.sync().await?;
        }
        signal(pid, "STOP")?;
        // Bob's history is read first, and waits for Redis; carol waits for hers behind it,
        // while alice talks and leaves.
        let result = async {
            bob.join("cellar").await?;
            carol.join("attic").await?;
            alice.send(&format!("hi {}", "x".repeat(1500))).await?;
            alice.join("lobby").await?;
            waiting_in_redis(&one, &redis, 1500).await
        }
        .await;
        signal(pid, "CONT")?;
        result?;
        let seen = lines_through(&mut carol, |l| l.starts_with("*** alice left #attic")).await?;
        assert!(seen.iter().any(|l| l.starts_with("alice: hi ")), "{seen:?}");
        io::Result::Ok(())
    })
}

/// Reads `client`'s lines up to the reply to a `/rooms` it asks for, returning those before it.
async fn lines_until_rooms(client: &mut Client) -> io::Result<Vec<String>> {
    client.send("/rooms").await?;
    let mut seen = Vec::new();
    for _ in 0..200 {
        let line = client.line().await?;
        if line.starts_with("*** rooms: ") {
            return Ok(seen);
        }
        seen.push(line);
    }
    Err(io::Error::other(format!(
        "{}: no /rooms reply",
        client.name
    )))
}

#[test]
fn two_clients_entering_a_new_room_at_once_both_hear_whoever_answers_them() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    // Node one reaches Redis through a relay that can hold back its subscriber connection
    // (the one that sends SUBSCRIBE): a subscription that takes long to be in effect.
    let relay = common::relay::Relay::start(redis.port, b"SUBSCRIBE")?;
    let url = format!("redis://127.0.0.1:{}", relay.port);
    let one = Binary::start(&["--bind", "127.0.0.1:0", "--redis", &url, "-q"])?;
    let two = node(&redis)?;
    smol::block_on(async {
        let mut alice = named(&one, "alice").await?;
        let mut bob = named(&one, "bob").await?;
        let mut carol = named(&two, "carol").await?;
        carol.join("attic").await?;
        alice.sync().await?;
        bob.sync().await?;
        relay.hold(true);
        let held = Instant::now();
        // The attic is new on node one: whichever comes first subscribes the node to it.
        alice.send("/join attic").await?;
        bob.send("/join attic").await?;
        // For a while, well under the 2 s a newcomer waits at most, no one may enter before
        // the node hears the attic; then the subscription is let through.
        let mut entered = Vec::new();
        while held.elapsed() < Duration::from_millis(800) && entered.is_empty() {
            let seen = lines_until_rooms(&mut carol).await?;
            entered.extend(seen.into_iter().filter(|l| l.ends_with(" joined #attic")));
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        if entered.is_empty() {
            relay.hold(false);
            for _ in 0..2 {
                entered.push(carol.until(|l| l.ends_with(" joined #attic")).await?);
            }
        }
        // Carol answers whoever she saw come in: each of them must hear it.
        carol.join("cellar").await?;
        relay.hold(false);
        for client in [&mut alice, &mut bob] {
            if entered.contains(&format!("*** {} joined #attic", client.name)) {
                within(client, Duration::from_secs(10), |l| {
                    l == "*** carol left #attic for #cellar"
                })
                .await?;
            }
        }
        io::Result::Ok(())
    })
}

#[test]
fn a_crowd_entering_new_rooms_at_once_keeps_the_link_up() -> io::Result<()> {
    // Each entry queues a few commands for Redis: far more at once than the link's queue
    // holds (4096), were the entries not paced.
    const CROWD: usize = 1500;
    fd_limit::raise_fd_limit();
    let redis = RedisServer::start(&[])?;
    let one = node_with(&redis, &["--flood-rate", "0"])?;
    smol::block_on(async {
        let mut crowd = Vec::with_capacity(CROWD);
        for _ in 0..CROWD {
            crowd.push(Client::connect_raw(one.addr).await?);
        }
        for client in &mut crowd {
            client.read_welcome().await?;
        }
        for (i, client) in crowd.iter_mut().enumerate() {
            client.send(&format!("/join r{i}")).await?;
        }
        for (i, client) in crowd.iter_mut().enumerate() {
            let greeting = format!("*** you are {} in #r{i}", client.name);
            let seen = client
                .until(|l| l.starts_with(&greeting) || l.starts_with("*** cluster link"))
                .await?;
            assert!(seen.starts_with(&greeting), "{seen}");
        }
        // Nobody was told the link was lost meanwhile.
        let first = &mut crowd[0];
        first.send("/rooms").await?;
        let rooms = first
            .until(|l| l.starts_with("*** rooms") || l.starts_with("*** cluster link"))
            .await?;
        assert!(rooms.starts_with("*** rooms"), "{rooms}");
        io::Result::Ok(())
    })
}
