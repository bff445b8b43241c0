//! The cluster link against a real redis-server: each test starts its own.
#![cfg(feature = "redis")]

mod common;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::Receiver;
use futures_lite::future::FutureExt;
use smol::{Executor, Timer};
use smolchat::cluster::{
    Claim, Command, Connection, Incoming, Link, LinkConfig, LinkError, RedisUrl, Reply,
};

use common::process::signal;
use common::redis_server::RedisServer;

/// Short timings so a test sees expiries and lost nodes in seconds, not minutes.
fn fast() -> LinkConfig {
    LinkConfig {
        heartbeat: Duration::from_millis(200),
        node_timeout: Duration::from_secs(1),
        name_ttl: Duration::from_secs(3),
        max_backoff: Duration::from_millis(300),
        ..LinkConfig::default()
    }
}

/// Far longer than any step takes, even on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

fn url(redis: &RedisServer) -> RedisUrl {
    redis.url().parse().expect("a valid URL")
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> io::Result<T> {
    async { Ok(fut.await) }
        .or(async {
            Timer::after(PATIENCE).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out: {what}"),
            ))
        })
        .await
}

/// Receives until `pick` accepts a message, skipping others (at most 100,000 of them).
async fn until<T>(
    incoming: &Receiver<Incoming>,
    what: &str,
    mut pick: impl FnMut(Incoming) -> Option<T>,
) -> io::Result<T> {
    within(what, async {
        for _ in 0..100_000 {
            let message = incoming
                .recv()
                .await
                .map_err(|_| io::Error::other("link stopped"))?;
            if let Some(found) = pick(message) {
                return Ok(found);
            }
        }
        Err(io::Error::other(format!("never came: {what}")))
    })
    .await?
}

/// The next room line, skipping everything else.
async fn next_line(incoming: &Receiver<Incoming>) -> io::Result<(String, String)> {
    until(incoming, "a room line", |m| match m {
        Incoming::Room { room, line, .. } => Some((room, line)),
        _ => None,
    })
    .await
}

async fn call(conn: &mut Connection, args: &[&str]) -> io::Result<Reply> {
    let mut cmd = Command::new(args[0]);
    for arg in &args[1..] {
        cmd = cmd.arg(arg);
    }
    within("a reply", conn.call(&cmd)).await?
}

/// Runs `test` on an executor that the links' tasks run on too; dropping the executor at the
/// end drops those tasks and their connections.
fn run<F: Future<Output = io::Result<()>>>(
    test: impl FnOnce(Arc<Executor<'static>>) -> F,
) -> io::Result<()> {
    let ex = Arc::new(Executor::new());
    smol::block_on(ex.run(test(ex.clone())))
}

#[test]
fn commands_round_trip_every_reply_kind() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    smol::block_on(async {
        let mut conn = Connection::open(&url(&redis), 1 << 20).await?;
        assert_eq!(
            call(&mut conn, &["PING"]).await?,
            Reply::Simple("PONG".into())
        );
        let binary = "a\r\nb\0c";
        assert_eq!(
            call(&mut conn, &["SET", "k", binary]).await?,
            Reply::Simple("OK".into())
        );
        assert_eq!(
            call(&mut conn, &["GET", "k"]).await?,
            Reply::Bulk(binary.into())
        );
        assert_eq!(call(&mut conn, &["GET", "missing"]).await?, Reply::Nil);
        assert_eq!(call(&mut conn, &["INCR", "n"]).await?, Reply::Integer(1));
        assert_eq!(
            call(&mut conn, &["RPUSH", "l", "x", ""]).await?,
            Reply::Integer(2)
        );
        assert_eq!(
            call(&mut conn, &["LRANGE", "l", "0", "-1"]).await?,
            Reply::Array(vec![Reply::Bulk(b"x".to_vec()), Reply::Bulk(Vec::new())])
        );
        let Reply::Error(e) = call(&mut conn, &["INCR", "k"]).await? else {
            panic!("INCR of a non-number must fail");
        };
        assert!(e.starts_with("ERR"), "{e}");
        // The connection is still in step after an error.
        assert_eq!(call(&mut conn, &["INCR", "n"]).await?, Reply::Integer(2));
        Ok(())
    })
}

#[test]
fn the_url_logs_in_as_its_user_and_selects_its_database() -> io::Result<()> {
    let redis = RedisServer::start(&[
        "--user", "chat", "on", ">s3cret", "~*", "&*", "+@all", "--user", "bot", "on", "nopass",
        "~*", "&*", "+@all",
    ])?;
    smol::block_on(async {
        let good: RedisUrl = format!("redis://chat:s3cret@127.0.0.1:{}/3", redis.port)
            .parse()
            .expect("a valid URL");
        let mut conn = Connection::open(&good, 1 << 20).await?;
        let info = call(&mut conn, &["CLIENT", "INFO"]).await?;
        let info = info.text().expect("text").to_owned();
        assert!(info.contains(" user=chat "), "{info}");
        assert!(info.contains(" db=3 "), "{info}");

        let bad: RedisUrl = format!("redis://chat:wrong-pass@127.0.0.1:{}/3", redis.port)
            .parse()
            .expect("a valid URL");
        let Err(e) = Connection::open(&bad, 1 << 20).await else {
            panic!("a wrong password must be refused");
        };
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(!e.to_string().contains("wrong-pass"), "{e}");

        // A user without a password: an ACL `nopass` user.
        let nopass: RedisUrl = format!("redis://bot@127.0.0.1:{}", redis.port)
            .parse()
            .expect("a valid URL");
        let mut conn = Connection::open(&nopass, 1 << 20).await?;
        let info = call(&mut conn, &["CLIENT", "INFO"]).await?;
        assert!(
            info.text().expect("text").contains(" user=bot "),
            "{info:?}"
        );

        let no_db: RedisUrl = format!("redis://chat:s3cret@127.0.0.1:{}/99", redis.port)
            .parse()
            .expect("a valid URL");
        assert!(Connection::open(&no_db, 1 << 20).await.is_err());
        Ok(())
    })
}

#[test]
fn a_reply_over_the_limit_is_a_protocol_error() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    smol::block_on(async {
        let mut conn = Connection::open(&url(&redis), 1024).await?;
        call(&mut conn, &["SET", "big", &"x".repeat(4096)]).await?;
        let err = call(&mut conn, &["GET", "big"])
            .await
            .expect_err("over the limit");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        Ok(())
    })
}

#[test]
fn an_oversized_reply_drops_the_link_which_comes_back() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    run(|ex| async move {
        let config = LinkConfig {
            max_reply: 1024,
            ..fast()
        };
        let (link, incoming) = Link::connect(&ex, url(&redis), config).await?;
        let line = format!("{}\n", "y".repeat(600));
        link.publish("big", None, &line).expect("up");
        link.publish("big", None, &line).expect("up");
        // The history reply holds both lines: over the limit.
        assert_eq!(link.history("big").await, Err(LinkError::Down));
        until(&incoming, "down", |m| (m == Incoming::Down).then_some(())).await?;
        until(&incoming, "up", |m| (m == Incoming::Up).then_some(())).await?;
        assert!(link.is_up());
        Ok(())
    })
}

#[test]
fn every_node_sees_a_rooms_lines_in_one_order() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    run(|ex| async move {
        let (a, a_in) = Link::connect(&ex, url(&redis), fast()).await?;
        let (b, b_in) = Link::connect(&ex, url(&redis), fast()).await?;
        a.enter("lobby", 1, "alice");
        b.enter("lobby", 1, "bob");
        a.synced().await.expect("up");
        b.synced().await.expect("up");

        for i in 0..200 {
            a.publish("lobby", Some(1), &format!("alice {i}"))
                .expect("up");
            b.publish("lobby", Some(1), &format!("bob {i}"))
                .expect("up");
        }
        let mut seen = Vec::new();
        for incoming in [&a_in, &b_in] {
            let mut lines = Vec::new();
            while lines.len() < 400 {
                let (room, origin, sender, seq, line) =
                    until(incoming, "a room line", |m| match m {
                        Incoming::Room {
                            room,
                            origin,
                            sender,
                            seq,
                            line,
                        } => Some((room, origin, sender, seq, line)),
                        _ => None,
                    })
                    .await?;
                assert_eq!((room.as_str(), seq), ("lobby", lines.len() as u64 + 1));
                let from = if line.starts_with("alice") { &a } else { &b };
                assert_eq!((&origin, sender), (from.node(), Some(1)));
                lines.push(line);
            }
            seen.push(lines);
        }
        assert_eq!(seen[0], seen[1], "both nodes see one order");
        for who in ["alice", "bob"] {
            let own: Vec<&String> = seen[0].iter().filter(|l| l.starts_with(who)).collect();
            let expected: Vec<String> = (0..200).map(|i| format!("{who} {i}")).collect();
            assert_eq!(
                own,
                expected.iter().collect::<Vec<_>>(),
                "{who}'s lines in order"
            );
        }
        // History holds the last lines in the same order, with the same numbers and senders.
        let history = a.history("lobby").await.expect("up");
        let kept: Vec<(u64, String)> = history.iter().map(|h| (h.seq, h.line.clone())).collect();
        let expected: Vec<(u64, String)> = (381..=400).zip(seen[0][380..].to_vec()).collect();
        assert_eq!(kept, expected);
        for said in &history {
            let from = if said.line.starts_with("alice") {
                &a
            } else {
                &b
            };
            assert_eq!((&said.origin, said.sender), (from.node(), Some(1)));
        }
        Ok(())
    })
}

#[test]
fn a_node_receives_only_the_rooms_it_has_members_in() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    run(|ex| async move {
        let (a, a_in) = Link::connect(&ex, url(&redis), fast()).await?;
        let (b, b_in) = Link::connect(&ex, url(&redis), fast()).await?;
        a.enter("lobby", 1, "alice");
        a.enter("attic", 2, "carol");
        b.enter("lobby", 1, "bob");
        a.synced().await.expect("up");
        b.synced().await.expect("up");

        a.publish("attic", None, "secret\n").expect("up");
        a.publish("lobby", None, "public\n").expect("up");
        assert_eq!(next_line(&b_in).await?, ("lobby".into(), "public\n".into()));
        until(&a_in, "the attic line", |m| {
            matches!(m, Incoming::Room { line, .. } if line == "secret\n").then_some(())
        })
        .await?;

        // The last member out unsubscribes the node.
        b.exit("lobby", 1);
        b.enter("attic", 1, "bob");
        b.synced().await.expect("up");
        a.publish("lobby", None, "lobby again\n").expect("up");
        a.publish("attic", None, "attic again\n").expect("up");
        assert_eq!(
            next_line(&b_in).await?,
            ("attic".into(), "attic again\n".into())
        );
        drop(a_in);
        Ok(())
    })
}

#[test]
fn a_reserved_room_is_received_before_its_first_member_enters_and_until_released() -> io::Result<()>
{
    let redis = RedisServer::start(&[])?;
    run(|ex| async move {
        let (a, _a_in) = Link::connect(&ex, url(&redis), fast()).await?;
        let (b, b_in) = Link::connect(&ex, url(&redis), fast()).await?;
        b.enter("lobby", 1, "bob");
        let reserved = b.reserve("attic");
        assert!(reserved.is_fresh());
        // Subscribed, but maybe not in effect yet: a second newcomer must wait too.
        assert!(b.reserve("attic").is_fresh(), "no member yet");
        b.synced().await.expect("up");
        a.publish("attic", None, "before anyone entered\n")
            .expect("up");
        assert_eq!(
            next_line(&b_in).await?,
            ("attic".into(), "before anyone entered\n".into())
        );

        // A member keeps the subscription after the reservation; the last one out ends it.
        b.enter("attic", 2, "carol");
        assert!(!b.reserve("attic").is_fresh(), "a member entered");
        drop(reserved);
        a.publish("attic", None, "carol is here\n").expect("up");
        assert_eq!(
            next_line(&b_in).await?,
            ("attic".into(), "carol is here\n".into())
        );
        b.exit("attic", 2);
        // Released without a member: unsubscribed too.
        drop(b.reserve("cellar"));
        b.synced().await.expect("up");
        a.publish("attic", None, "attic again\n").expect("up");
        a.publish("cellar", None, "cellar\n").expect("up");
        a.publish("lobby", None, "lobby\n").expect("up");
        assert_eq!(next_line(&b_in).await?, ("lobby".into(), "lobby\n".into()));
        Ok(())
    })
}

#[test]
fn a_congested_link_wakes_whoever_waits_for_it_once_it_has_drained() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    let pid = redis
        .pid()
        .ok_or_else(|| io::Error::other("redis is not running"))?;
    run(|ex| async move {
        // Default timings: Redis stopped for a moment is no lost link.
        let config = LinkConfig::default();
        let (a, _a_in) = Link::connect(&ex, url(&redis), config.clone()).await?;
        a.synced().await.expect("up");
        signal(pid, "STOP")?;
        let filled = (|| {
            for i in 0..=config.queue / 2 + 1 {
                a.publish("lobby", Some(1), &format!("{i}\n"))
                    .map_err(|e| io::Error::other(format!("line {i}: {e:?}")))?;
            }
            Ok::<_, io::Error>(a.congested())
        })();
        let waiting = a.drained();
        let mut waiting = std::pin::pin!(waiting);
        // Not drained while Redis cannot answer.
        let early = async {
            waiting.as_mut().await;
            true
        }
        .or(async {
            Timer::after(Duration::from_millis(200)).await;
            false
        })
        .await;
        signal(pid, "CONT")?;
        assert!(filled?, "over half the queue is congested");
        assert!(!early, "drained while Redis was stopped");
        within("drained", waiting).await?;
        assert!(a.is_up() && !a.congested());
        Ok(())
    })
}

#[test]
fn names_are_claimed_once_across_nodes_whatever_their_case() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    run(|ex| async move {
        let (a, _a_in) = Link::connect(&ex, url(&redis), fast()).await?;
        let (b, _b_in) = Link::connect(&ex, url(&redis), fast()).await?;
        assert_eq!(a.claim("Alice", 7).await, Ok(Claim::Claimed));
        assert_eq!(b.claim("aLiCe", 1).await, Ok(Claim::Taken));
        let owner = b.lookup("ALICE").await.expect("up").expect("an owner");
        assert_eq!(
            (&owner.node, owner.id, owner.name.as_str()),
            (a.node(), 7, "Alice")
        );

        // Releasing someone else's name does nothing.
        b.release("alice", 1);
        assert_eq!(b.claim("alice", 1).await, Ok(Claim::Taken));

        // Renewed past its expiry while the owner lives.
        Timer::after(fast().name_ttl + Duration::from_secs(1)).await;
        assert_eq!(b.claim("alice", 1).await, Ok(Claim::Taken));

        a.release("Alice", 7);
        // The release goes out without a reply; a's next request follows it on its connection.
        assert_eq!(a.lookup("alice").await, Ok(None));
        assert_eq!(b.claim("alice", 1).await, Ok(Claim::Claimed));

        let (g1, g2) = (
            a.next_guest().await.expect("up"),
            b.next_guest().await.expect("up"),
        );
        assert_ne!(g1, g2);
        Ok(())
    })
}

#[test]
fn presence_lists_every_nodes_members() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    run(|ex| async move {
        let (a, _a_in) = Link::connect(&ex, url(&redis), fast()).await?;
        let (b, _b_in) = Link::connect(&ex, url(&redis), fast()).await?;
        a.enter("lobby", 1, "alice");
        b.enter("lobby", 1, "bob");
        b.enter("attic", 2, "carol");
        // A rename is an enter with the new name.
        b.enter("attic", 2, "Caroline");
        // A node's commands run in order, so a reply to A comes after A's writes.
        a.who("lobby").await.expect("up");
        let mut who = b.who("lobby").await.expect("up");
        who.sort();
        assert_eq!(who, ["alice", "bob"]);
        let mut rooms = a.rooms().await.expect("up");
        rooms.sort();
        assert_eq!(rooms, [("attic".to_owned(), 1), ("lobby".to_owned(), 2)]);
        assert_eq!(a.who("attic").await.expect("up"), ["Caroline"]);

        b.exit("attic", 2);
        a.exit("lobby", 1);
        assert_eq!(a.who("lobby").await.expect("up"), ["bob"]);
        assert_eq!(b.rooms().await.expect("up"), [("lobby".to_owned(), 1)]);
        Ok(())
    })
}

#[test]
fn direct_payloads_reach_the_named_node() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    run(|ex| async move {
        let (a, _a_in) = Link::connect(&ex, url(&redis), fast()).await?;
        let (b, b_in) = Link::connect(&ex, url(&redis), fast()).await?;
        a.direct(b.node(), "pm 1 alice psst").expect("up");
        let (origin, payload) = until(&b_in, "a direct payload", |m| match m {
            Incoming::Direct { origin, payload } => Some((origin, payload)),
            _ => None,
        })
        .await?;
        assert_eq!((&origin, payload.as_str()), (a.node(), "pm 1 alice psst"));
        Ok(())
    })
}

#[test]
fn a_killed_nodes_users_leave_and_its_names_become_free() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    run(|ex| async move {
        let (a, a_in) = Link::connect(&ex, url(&redis), fast()).await?;
        let (b, b_in) = Link::connect(&ex, url(&redis), fast()).await?;
        assert_eq!(a.claim("carol", 3).await, Ok(Claim::Claimed));
        a.enter("lobby", 3, "carol");
        b.enter("lobby", 1, "bob");
        within("b hears a", async {
            while b.nodes_seen() == 0 {
                Timer::after(Duration::from_millis(20)).await;
            }
        })
        .await?;
        let a_node = a.node().clone();
        // Dropping every handle stops the link without a goodbye, as SIGKILL would.
        let started = Instant::now();
        drop((a, a_in));

        let (node, members) = until(&b_in, "node lost", |m| match m {
            Incoming::NodeLost { node, members } => Some((node, members)),
            _ => None,
        })
        .await?;
        assert_eq!(node, a_node);
        assert_eq!(members, [("lobby".to_owned(), "carol".to_owned())]);
        assert_eq!(b.nodes_seen(), 0);
        assert_eq!(b.who("lobby").await.expect("up"), ["bob"]);

        // The name is free within its expiry (3 s here, 30 s by default).
        within("carol free", async {
            while b.claim("carol", 1).await != Ok(Claim::Claimed) {
                Timer::after(Duration::from_millis(100)).await;
            }
        })
        .await?;
        let took = started.elapsed();
        assert!(took <= fast().name_ttl + Duration::from_secs(5), "{took:?}");
        Ok(())
    })
}

#[test]
fn closing_a_link_frees_its_names_and_presence_at_once() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    run(|ex| async move {
        let (a, _a_in) = Link::connect(&ex, url(&redis), fast()).await?;
        let (b, _b_in) = Link::connect(&ex, url(&redis), fast()).await?;
        assert_eq!(a.claim("dave", 1).await, Ok(Claim::Claimed));
        a.enter("lobby", 1, "dave");
        let a2 = a.clone();
        within("close", a.close()).await?;
        assert!(!a2.is_up(), "closed for every handle");
        assert_eq!(a2.publish("lobby", Some(1), "late\n"), Err(LinkError::Down));
        assert_eq!(b.claim("dave", 2).await, Ok(Claim::Claimed));
        assert_eq!(b.who("lobby").await.expect("up"), Vec::<String>::new());
        Ok(())
    })
}

#[test]
fn the_link_comes_back_after_redis_restarts() -> io::Result<()> {
    let mut redis = RedisServer::start(&[])?;
    let url = url(&redis);
    run(|ex| async move {
        let (a, a_in) = Link::connect(&ex, url.clone(), fast()).await?;
        let (b, b_in) = Link::connect(&ex, url, fast()).await?;
        assert_eq!(a.claim("erin", 5).await, Ok(Claim::Claimed));
        a.enter("lobby", 5, "erin");
        b.enter("lobby", 1, "bob");

        redis.stop();
        until(&a_in, "a down", |m| (m == Incoming::Down).then_some(())).await?;
        until(&b_in, "b down", |m| (m == Incoming::Down).then_some(())).await?;
        assert_eq!(a.publish("lobby", Some(5), "lost\n"), Err(LinkError::Down));
        assert_eq!(a.claim("frank", 6).await, Ok(Claim::Offline));

        redis.restart()?;
        until(&a_in, "a up", |m| (m == Incoming::Up).then_some(())).await?;
        until(&b_in, "b up", |m| (m == Incoming::Up).then_some(())).await?;
        // The empty Redis learnt the names again, the one claimed offline too.
        for (name, id) in [("erin", 5), ("frank", 6)] {
            let owner = b.lookup(name).await.expect("up").expect("claimed again");
            assert_eq!((&owner.node, owner.id), (a.node(), id));
        }
        let mut who = b.who("lobby").await.expect("up");
        who.sort();
        assert_eq!(who, ["bob", "erin"]);
        // Both nodes subscribed again.
        a.publish("lobby", Some(5), "back\n").expect("up");
        assert_eq!(next_line(&b_in).await?.1, "back\n");
        Ok(())
    })
}

#[test]
fn a_name_someone_else_holds_now_is_reported_lost() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    let url = url(&redis);
    run(|ex| async move {
        let (a, a_in) = Link::connect(&ex, url.clone(), fast()).await?;
        assert_eq!(a.claim("gina", 9).await, Ok(Claim::Claimed));
        // As if the name had expired while Redis was unreachable and another node took it:
        // the next renewal (or the claim after a reconnect, the same script) finds it gone.
        let mut other = Connection::open(&url, 1 << 20).await?;
        call(&mut other, &["SET", "smolchat:name:gina", "x"]).await?;
        let lost = until(&a_in, "name lost", |m| match m {
            Incoming::NameLost { id, name } => Some((id, name)),
            _ => None,
        })
        .await?;
        assert_eq!(lost, (9, "gina".to_owned()));
        Ok(())
    })
}

#[test]
fn redis_dropping_a_slow_subscriber_is_a_lost_link_not_a_crash() -> io::Result<()> {
    let redis = RedisServer::start(&["--client-output-buffer-limit", "pubsub", "64kb", "0", "0"])?;
    run(|ex| async move {
        let (a, _a_in) = Link::connect(&ex, url(&redis), fast()).await?;
        let slow = LinkConfig {
            incoming: 1,
            ..fast()
        };
        let (b, b_in) = Link::connect(&ex, url(&redis), slow).await?;
        b.enter("lobby", 1, "bob");
        b.synced().await.expect("up");
        let mut watcher = Connection::open(&url(&redis), 1 << 20).await?;
        let subscribers = |list: Reply| list.text().map_or(0, |l| l.lines().count());
        let pubsub = ["CLIENT", "LIST", "TYPE", "pubsub"];
        let before = subscribers(call(&mut watcher, &pubsub).await?);
        assert_eq!(before, 2, "both nodes subscribed");
        // B takes nothing meanwhile. The kernel's socket buffers absorb megabytes before Redis
        // buffers anything, so keep going (up to 100 MB) until Redis has dropped B.
        let line = format!("{}\n", "z".repeat(2000));
        let mut dropped = false;
        for _ in 0..100 {
            for _ in 0..500 {
                a.publish("lobby", Some(1), &line).expect("up");
            }
            // Replies come in order: once this one is here, every line was published.
            a.history("lobby").await.expect("up");
            if subscribers(call(&mut watcher, &pubsub).await?) < before {
                dropped = true;
                break;
            }
        }
        assert!(dropped, "redis never dropped the slow subscriber");
        until(&b_in, "b down", |m| (m == Incoming::Down).then_some(())).await?;
        until(&b_in, "b up", |m| (m == Incoming::Up).then_some(())).await?;
        assert!(b.is_up());
        Ok(())
    })
}

#[test]
fn timings_that_do_not_fit_together_are_refused() -> io::Result<()> {
    // Checked before connecting: no Redis needed, and none is at this address.
    let url: RedisUrl = "redis://127.0.0.1:1".parse().expect("a valid URL");
    run(|ex| async move {
        for config in [
            LinkConfig {
                node_timeout: Duration::from_millis(300),
                ..fast()
            },
            LinkConfig {
                node_timeout: Duration::from_secs(6),
                ..fast()
            },
            LinkConfig { queue: 0, ..fast() },
        ] {
            let err = Link::connect(&ex, url.clone(), config)
                .await
                .expect_err("refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        }
        Ok(())
    })
}

#[test]
fn debug_output_never_shows_the_password() -> io::Result<()> {
    let redis = RedisServer::start(&["--requirepass", "hunter2"])?;
    run(|ex| async move {
        let url: RedisUrl = format!("redis://:hunter2@127.0.0.1:{}", redis.port)
            .parse()
            .expect("a valid URL");
        let conn = Connection::open(&url, 1 << 20).await?;
        let (link, _incoming) = Link::connect(&ex, url.clone(), fast()).await?;
        for shown in [
            format!("{url:?}"),
            format!("{url}"),
            format!("{link:?}"),
            format!("{conn:?}"),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        let wrong: RedisUrl = format!("redis://:hunter3@127.0.0.1:{}", redis.port)
            .parse()
            .expect("a valid URL");
        let err = Link::connect(&ex, wrong, fast())
            .await
            .expect_err("refused");
        assert!(!format!("{err} {err:?}").contains("hunter3"), "{err}");
        Ok(())
    })
}

#[test]
fn a_member_who_left_while_the_link_was_lost_is_not_listed_once_it_is_back() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    let pid = redis
        .pid()
        .ok_or_else(|| io::Error::other("redis is not running"))?;
    run(|ex| async move {
        // Lost after a second without an answer, well before presence expires (6 s).
        let config = LinkConfig {
            reply_timeout: Duration::from_secs(1),
            ..fast()
        };
        let (a, a_in) = Link::connect(&ex, url(&redis), config).await?;
        a.enter("lobby", 1, "alice");
        a.enter("lobby", 2, "bob");
        a.synced().await.expect("up");
        signal(pid, "STOP")?;
        // Once a heartbeat waits in Redis's socket, bob's exit waits behind it in the link's
        // queue, and is dropped with the link when the heartbeat stalls.
        let stalled = within("a heartbeat sent to the stopped Redis", async {
            for _ in 0..10_000 {
                if common::procfs::unread_from(std::process::id(), redis.port)? > 0 {
                    return Ok(());
                }
                Timer::after(Duration::from_millis(2)).await;
            }
            Err(io::Error::other("nothing ever reached the stopped Redis"))
        })
        .await
        .and_then(|sent| sent);
        a.exit("lobby", 2);
        let down = until(&a_in, "a down", |m| (m == Incoming::Down).then_some(())).await;
        signal(pid, "CONT")?;
        stalled?;
        down?;
        until(&a_in, "a up", |m| (m == Incoming::Up).then_some(())).await?;
        assert_eq!(a.who("lobby").await.expect("up"), ["alice"]);
        Ok(())
    })
}

#[test]
fn members_who_come_and_go_while_the_link_comes_back_are_listed_as_they_are() -> io::Result<()> {
    let redis = RedisServer::start(&[])?;
    // The node reaches Redis through a relay that can hold back its subscriber connection:
    // the link's return stops there, its presence being written, for as long as the test
    // needs (well under the 10 s Redis may take to answer).
    let relay = common::relay::Relay::start(redis.port, b"SUBSCRIBE")?;
    let via_relay: RedisUrl = format!("redis://127.0.0.1:{}", relay.port)
        .parse()
        .expect("a valid URL");
    run(|ex| async move {
        let (a, a_in) = Link::connect(&ex, via_relay, fast()).await?;
        a.enter("lobby", 1, "alice");
        a.enter("lobby", 2, "bob");
        a.synced().await.expect("up");
        relay.hold(true);
        let mut admin = Connection::open(&url(&redis), 1 << 20).await?;
        call(&mut admin, &["CLIENT", "KILL", "TYPE", "pubsub"]).await?;
        until(&a_in, "a down", |m| (m == Incoming::Down).then_some(())).await?;
        within("the link's return to resubscribe", async {
            for _ in 0..10_000 {
                if relay.holding() {
                    return Ok(());
                }
                Timer::after(Duration::from_millis(2)).await;
            }
            Err(io::Error::other("the link never came back"))
        })
        .await??;
        a.exit("lobby", 2);
        a.enter("lobby", 3, "carol");
        relay.hold(false);
        until(&a_in, "a up", |m| (m == Incoming::Up).then_some(())).await?;
        // Answered after whatever was queued before it: one connection, in order.
        let mut who = a.who("lobby").await.expect("up");
        who.sort();
        assert_eq!(who, ["alice", "carol"]);
        Ok(())
    })
}
