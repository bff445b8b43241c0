//! A client that stops reading is disconnected with a reason; everyone else gets everything.

mod common;

use std::io;
use std::time::Duration;

use common::{config, eventually, TestServer};
use smolchat::Config;

#[test]
fn client_that_stops_reading_is_dropped_while_others_get_every_line() -> io::Result<()> {
    // 20 MB is far more than the kernel buffers for one stalled socket on loopback.
    const LINES: usize = 20_000;
    let server = TestServer::start(Config {
        queue_bytes: 64 * 1024,
        ..config()
    });
    smol::block_on(async {
        let mut c = server.clients(4).await?;
        let mut stalled = c.pop().expect("four clients");
        let readers: Vec<_> = c.drain(1..).collect();
        let mut sender = c.pop().expect("a sender");
        let sender_name = sender.name.clone();
        let stalled_name = stalled.name.clone();

        let reading: Vec<_> = readers
            .into_iter()
            .map(|mut reader| {
                let (from, stalled) = (sender_name.clone(), stalled_name.clone());
                smol::spawn(async move {
                    let mut next = 0;
                    let mut saw_drop = false;
                    while next < LINES {
                        let line = reader.line().await?;
                        if line == format!("*** {stalled} left (too slow)") {
                            saw_drop = true;
                            continue;
                        }
                        let expected = format!("{from}: {next:05} {}", "x".repeat(1000));
                        assert_eq!(line, expected, "line {next} lost, changed or out of order");
                        next += 1;
                    }
                    io::Result::Ok(saw_drop)
                })
            })
            .collect();

        let payload = "x".repeat(1000);
        for chunk in 0..LINES / 100 {
            let batch: String = (chunk * 100..(chunk + 1) * 100)
                .map(|i| format!("{i:05} {payload}\n"))
                .collect();
            sender.send_raw(batch.as_bytes()).await?;
        }
        for task in reading {
            assert!(task.await?, "the others were told the stalled client left");
        }
        assert_eq!(server.handle.stats().dropped_slow, 1);

        // The stalled client finally reads: what was queued, then the reason, then the end.
        let rest = stalled.rest().await?;
        assert!(
            rest.ends_with("! disconnected: you fell too far behind (queue full)\n"),
            "last line was {:?}",
            rest.lines().last()
        );
        eventually("the stalled client is gone", || {
            server.handle.stats().clients == 1
        })
        .await
    })
}

#[test]
fn client_whose_socket_accepts_nothing_is_dropped_after_the_write_timeout() -> io::Result<()> {
    let server = TestServer::start(Config {
        write_timeout: Duration::from_millis(300),
        // Room enough that the queue never overflows first: only the timeout can drop it.
        queue_bytes: 1 << 30,
        queue_lines: 1 << 20,
        ..config()
    });
    smol::block_on(async {
        let mut c = server.clients(3).await?;
        let stalled = c.pop().expect("three clients");
        let name = stalled.name.clone();
        // Fill the stalled client's socket until the server gives up on it.
        let payload = "y".repeat(1500);
        let line = format!("{payload}\n");
        let mut sent = 0;
        let found = loop {
            c[0].send(&payload).await?;
            sent += 1;
            let got = c[1].line().await?;
            if got.ends_with(&format!("{name} left (write timeout)")) {
                break true;
            }
            assert!(got.ends_with(&line[..payload.len()]), "unexpected {got:?}");
            if sent > 20_000 {
                break false;
            }
        };
        assert!(found, "the stalled client was never dropped");
        drop(stalled);
        Ok(())
    })
}

#[test]
fn switching_rooms_without_reading_cannot_pile_up_greetings() -> io::Result<()> {
    let server = TestServer::start(Config {
        queue_bytes: 16 * 1024,
        history: 5,
        ..config()
    });
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        // Give room "a" a full history, so each greeting there is about 5 KB.
        c[0].join("a").await?;
        for _ in 0..5 {
            c[0].send(&"h".repeat(1000)).await?;
        }
        c[0].sync().await?;
        // The other client never reads, and hops between rooms: 20 MB of greetings if unbounded.
        let hops = "/join a\n/join b\n".repeat(2000);
        c[1].send_raw(hops.as_bytes()).await?;
        eventually("the hopper is dropped as too slow", || {
            server.handle.stats().dropped_slow == 1
        })
        .await
    })
}
