//! `/ignore NAME` hides that user's lines, actions and private messages, whatever they are
//! called later; `/unignore NAME` undoes it; `/ignore` lists; at most 100 at once.

mod common;

use std::io;

use common::{config, TestServer};

#[test]
fn ignore_hides_lines_actions_and_private_messages_even_after_a_rename() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.named(&["alice", "bob", "carol"]).await?;
        c[0].send("/ignore BOB").await?;
        c[0].expect("*** you now ignore bob").await?;

        c[1].send("can anyone hear me").await?;
        c[1].send("/me shouts").await?;
        // Bob cannot tell: his private message looks sent.
        c[1].send("/msg alice psst").await?;
        c[1].expect("[pm to alice] psst").await?;
        c[2].expect("bob: can anyone hear me").await?;
        c[2].expect("* bob shouts").await?;
        c[1].sync().await?;
        c[0].expect_nothing_more().await?;

        // Renames are still announced, and the ignore follows bob to his new name.
        c[1].nick("rob").await?;
        c[0].expect("*** bob is now rob").await?;
        c[2].expect("*** bob is now rob").await?;
        c[1].send("it is me again").await?;
        c[2].expect("rob: it is me again").await?;
        c[1].sync().await?;
        c[0].expect_nothing_more().await?;
        c[0].send("/ignore").await?;
        c[0].expect("*** you ignore (1): rob").await?;

        // Nor does his line come back in a room's history.
        c[1].join("den").await?;
        c[1].send("den secret").await?;
        c[1].sync().await?;
        c[2].join("den").await?;
        let replayed = c[2].line().await?;
        assert!(
            replayed.starts_with("[history ") && replayed.ends_with("] rob: den secret"),
            "{replayed}"
        );
        c[0].expect("*** rob left #lobby for #den").await?;
        c[0].expect("*** carol left #lobby for #den").await?;
        c[0].send("/join den").await?;
        c[0].expect("*** you are alice in #den; users here: 3")
            .await?;
        c[0].expect_nothing_more().await?;

        c[0].send("/unignore rob").await?;
        c[0].expect("*** you no longer ignore rob").await?;
        c[1].send("heard now?").await?;
        c[0].until(|l| l == "rob: heard now?").await?;
        c[0].send("/ignore").await?;
        c[0].expect("*** you ignore nobody").await
    })
}

#[test]
fn ignore_errors_say_why_and_a_leaving_user_leaves_the_list() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.named(&["alice", "bob", "carol"]).await?;
        let cases = [
            ("/ignore zed", "! no user named zed"),
            ("/ignore alice", "! you cannot ignore yourself"),
            ("/unignore bob", "! you do not ignore bob"),
            ("/unignore zed", "! no user named zed"),
            ("/unignore", "! usage: /unignore NAME"),
        ];
        for (command, error) in cases {
            c[0].send(command).await?;
            c[0].expect(error).await?;
        }
        c[0].send("/ignore bob").await?;
        c[0].expect("*** you now ignore bob").await?;
        c[0].send("/ignore Bob").await?;
        c[0].expect("! you already ignore bob").await?;
        c[0].send("/ignore carol").await?;
        c[0].expect("*** you now ignore carol").await?;
        c[0].send("/ignore").await?;
        c[0].expect("*** you ignore (2): bob, carol").await?;

        // Someone new under the same name is someone else.
        c[1].send("/quit").await?;
        c[1].expect("*** bye").await?;
        c[0].expect("*** bob left (quit)").await?;
        c[0].send("/ignore").await?;
        c[0].expect("*** you ignore (1): carol").await
    })
}

#[test]
fn ignoring_is_bounded_at_a_hundred_users() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut alice = server.connect().await?;
        alice.nick("alice").await?;
        // Everyone else waits in another room, so alice reads nothing but her replies.
        let mut others = Vec::new();
        for _ in 0..101 {
            let mut other = server.connect().await?;
            other.join("elsewhere").await?;
            others.push(other);
        }
        alice.sync().await?;
        let names: Vec<String> = others.iter().map(|o| o.name.clone()).collect();
        for name in &names[..100] {
            alice.send(&format!("/ignore {name}")).await?;
            alice.expect(&format!("*** you now ignore {name}")).await?;
        }
        alice.send(&format!("/ignore {}", names[100])).await?;
        alice
            .expect("! you already ignore 100 users; /unignore one first")
            .await?;
        alice.send("/ignore").await?;
        let listing = alice.line().await?;
        assert!(
            listing.starts_with("*** you ignore (100): guest2, guest3, "),
            "{listing}"
        );
        assert!(listing.ends_with(", guest101"), "{listing}");
        alice.send(&format!("/unignore {}", names[0])).await?;
        alice
            .expect(&format!("*** you no longer ignore {}", names[0]))
            .await?;
        alice.send(&format!("/ignore {}", names[100])).await?;
        alice
            .expect(&format!("*** you now ignore {}", names[100]))
            .await
    })
}
