//! `/away` and `/back`: `/who` marks away users, and a private message to one gets the away
//! message back once per sender for each `/away`.

mod common;

use std::io;

use common::{config, TestServer};

#[test]
fn a_private_message_to_an_away_user_gets_the_away_message_once_per_sender() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.named(&["alice", "bob", "carol"]).await?;
        c[0].send("/away lunch, back at 2").await?;
        c[0].expect("*** you are away: lunch, back at 2").await?;

        c[1].send("/msg alice are you there?").await?;
        c[1].expect("[pm to alice] are you there?").await?;
        c[1].expect("*** alice is away: lunch, back at 2").await?;
        // Still delivered: away is a notice to senders, not a block.
        c[0].expect("[pm from bob] are you there?").await?;

        c[1].send("/msg alice hello?").await?;
        c[1].expect("[pm to alice] hello?").await?;
        // Told once.
        c[1].expect_nothing_more().await?;
        c[0].expect("[pm from bob] hello?").await?;

        // Once per sender: carol is told too.
        c[2].send("/msg alice hi").await?;
        c[2].expect("[pm to alice] hi").await?;
        c[2].expect("*** alice is away: lunch, back at 2").await?;
        c[0].expect("[pm from carol] hi").await?;

        // A new /away tells everyone again, even with no message.
        c[0].send("/away").await?;
        c[0].expect("*** you are away").await?;
        c[1].send("/msg alice now?").await?;
        c[1].expect("[pm to alice] now?").await?;
        c[1].expect("*** alice is away").await?;
        c[0].expect("[pm from bob] now?").await?;

        c[0].send("/back").await?;
        c[0].expect("*** you are back").await?;
        c[1].send("/msg alice welcome back").await?;
        c[1].expect("[pm to alice] welcome back").await?;
        c[1].expect_nothing_more().await?;
        c[0].expect("[pm from bob] welcome back").await?;
        c[0].send("/back").await?;
        c[0].expect("! you are not away").await
    })
}

#[test]
fn who_marks_away_users_and_the_handle_shows_the_away_message() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.named(&["alice", "bob", "carol"]).await?;
        c[1].send("/away gone fishing").await?;
        c[1].expect("*** you are away: gone fishing").await?;
        c[2].send("/away").await?;
        c[2].expect("*** you are away").await?;
        c[0].send("/who").await?;
        c[0].expect("*** users in #lobby (3): alice, bob (away), carol (away)")
            .await?;

        let mut users = server.handle.users();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        let away: Vec<Option<&str>> = users.iter().map(|u| u.away.as_deref()).collect();
        assert_eq!(away, [None, Some("gone fishing"), Some("")]);
        assert!(users.iter().all(|u| u.idle_for <= u.connected_for));

        c[1].send("/back").await?;
        c[1].expect("*** you are back").await?;
        c[0].send("/who").await?;
        c[0].expect("*** users in #lobby (3): alice, bob, carol (away)")
            .await
    })
}
