//! Every command's exact wire lines: names, actions, private messages, rooms, history, MOTD.

mod common;

use std::io;

use common::{config, Client, TestServer};
use smolchat::Config;

#[test]
fn welcome_names_the_client_and_its_room_and_shows_the_motd() -> io::Result<()> {
    let server = TestServer::start(Config {
        motd: Some("be nice\nhave fun".into()),
        ..config()
    });
    smol::block_on(async {
        let mut c = Client::connect_raw(server.addr).await?;
        c.expect("*** welcome to smolchat, guest1! /help lists the commands")
            .await?;
        c.expect("*** motd: be nice").await?;
        c.expect("*** motd: have fun").await?;
        c.expect("*** you are guest1 in #lobby; users here: 1")
            .await?;
        let mut d = Client::connect_raw(server.addr).await?;
        d.expect("*** welcome to smolchat, guest2! /help lists the commands")
            .await?;
        d.until(|l| l.starts_with("*** you are"))
            .await
            .map(|l| assert_eq!(l, "*** you are guest2 in #lobby; users here: 2"))?;
        c.expect("*** guest2 joined #lobby").await
    })
}

#[test]
fn nick_renames_and_tells_the_room() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        c[0].send("/nick alice").await?;
        c[0].expect("*** you are now alice").await?;
        c[1].expect("*** guest1 is now alice").await?;
        c[0].send("hi").await?;
        c[1].expect("alice: hi").await?;
        // Changing only the case of your own name is allowed.
        c[0].send("/nick Alice").await?;
        c[0].expect("*** you are now Alice").await?;
        c[1].expect("*** alice is now Alice").await
    })
}

#[test]
fn nick_errors_say_exactly_why_and_keep_the_old_name() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        c[0].nick("alice").await?;
        c[1].expect("*** guest1 is now alice").await?;
        let cases = [
            ("/nick ALICE", "! the name ALICE is taken"),
            ("/nick server", "! the name server is reserved"),
            (
                "/nick a b",
                "! invalid name \"a b\": use 1-16 letters, digits, _ or -",
            ),
            (
                "/nick abcdefghijklmnopq",
                "! invalid name \"abcdefghijklmnopq\": use 1-16 letters, digits, _ or -",
            ),
            (
                "/nick émile",
                "! invalid name \"émile\": use 1-16 letters, digits, _ or -",
            ),
            ("/nick", "! usage: /nick NAME"),
            ("/nick guest2", "! you are already guest2"),
        ];
        for (command, error) in cases {
            c[1].send(command).await?;
            c[1].expect(error).await?;
        }
        c[1].send("still me").await?;
        c[0].expect("guest2: still me").await
    })
}

#[test]
fn me_sends_an_action() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.named(&["alice", "bob", "carol"]).await?;
        c[0].send("/me waves").await?;
        c[1].expect("* alice waves").await?;
        c[2].expect("* alice waves").await?;
        c[0].send("/me").await?;
        c[0].expect("! usage: /me TEXT").await
    })
}

#[test]
fn msg_reaches_only_its_recipient_in_any_room() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.named(&["alice", "bob", "carol"]).await?;
        c[1].send("/join #den").await?;
        c[1].expect("*** you are bob in #den; users here: 1")
            .await?;
        c[0].expect("*** bob left #lobby for #den").await?;
        c[2].expect("*** bob left #lobby for #den").await?;

        c[0].send("/msg BOB psst, over here").await?;
        c[0].expect("[pm to bob] psst, over here").await?;
        c[1].expect("[pm from alice] psst, over here").await?;
        c[0].send("/msg zed hello?").await?;
        c[0].expect("! no user named zed").await?;
        c[0].send("/msg bob").await?;
        c[0].expect("! usage: /msg NAME TEXT").await?;
        // carol saw none of it: her next line is the reply to her own command.
        c[2].send("/who").await?;
        c[2].expect("*** users in #lobby (2): alice, carol").await
    })
}

#[test]
fn join_moves_between_rooms_and_rooms_lists_them() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.named(&["alice", "bob", "carol"]).await?;
        c[0].send("/join #Rust").await?;
        c[0].expect("*** you are alice in #rust; users here: 1")
            .await?;
        c[1].expect("*** alice left #lobby for #rust").await?;
        c[2].expect("*** alice left #lobby for #rust").await?;
        c[1].send("/join rust").await?;
        c[1].expect("*** you are bob in #rust; users here: 2")
            .await?;
        c[0].expect("*** bob joined #rust").await?;
        c[2].expect("*** bob left #lobby for #rust").await?;

        c[2].send("/rooms").await?;
        c[2].expect("*** rooms: #lobby (1), #rust (2)").await?;
        c[0].send("/who").await?;
        c[0].expect("*** users in #rust (2): alice, bob").await?;
        c[0].send("/join rust").await?;
        c[0].expect("! you are already in #rust").await?;
        c[0].send("/join no#pe").await?;
        c[0].expect("! invalid room name \"no#pe\": use 1-16 letters, digits, _ or -")
            .await?;

        // An empty room other than the lobby disappears; the empty lobby stays.
        for client in &mut c[..2] {
            client.join("lobby").await?;
        }
        c[2].join("side").await?;
        c[2].send("/rooms").await?;
        c[2].until(|l| l.starts_with("*** rooms:"))
            .await
            .map(|l| assert_eq!(l, "*** rooms: #lobby (2), #side (1)"))
    })
}

#[test]
fn messages_never_leave_their_room() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.named(&["alice", "bob", "carol"]).await?;
        for client in &mut c[..2] {
            client.join("#attic").await?;
        }
        c[0].sync().await?;
        c[1].sync().await?;
        c[2].sync().await?;
        c[0].send("attic secret").await?;
        c[1].expect("alice: attic secret").await?;
        c[2].send("lobby news").await?;
        // Each side's next line is its own command's reply: nothing crossed over.
        for client in &mut c {
            client.send("/who").await?;
            let reply = client.line().await?;
            assert!(
                reply.starts_with("*** users in #"),
                "{} got {reply:?}",
                client.name
            );
        }
        Ok(())
    })
}

#[test]
fn quit_says_goodbye_with_the_reason() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.named(&["alice", "bob", "carol"]).await?;
        c[0].send("/quit gone fishing").await?;
        c[0].expect("*** bye").await?;
        c[0].expect_eof().await?;
        c[1].expect("*** alice left (quit: gone fishing)").await?;
        c[1].send("/quit").await?;
        c[1].expect("*** bye").await?;
        c[2].expect("*** alice left (quit: gone fishing)").await?;
        c[2].expect("*** bob left (quit)").await
    })
}

#[test]
fn unknown_commands_slashes_and_help() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        c[0].send("/dance wildly").await?;
        c[0].expect("! unknown command /dance; /help lists the commands")
            .await?;
        c[0].send("//etc/motd is a file").await?;
        c[1].expect("guest1: /etc/motd is a file").await?;
        c[0].send("/help").await?;
        c[0].expect("*** commands:").await?;
        let mut help = Vec::new();
        loop {
            let line = c[0].line().await?;
            let last = line.starts_with("***   //TEXT ");
            help.push(line);
            if last {
                break;
            }
        }
        let commands = [
            "/nick NAME",
            "/me TEXT",
            "/msg NAME TEXT",
            "/join ROOM",
            "/who",
            "/rooms",
            "/topic [TEXT]",
            "/whois NAME",
            "/away [MESSAGE]",
            "/back",
            "/ignore [NAME]",
            "/unignore NAME",
            "/timestamps on|off",
            "/oper PASSWORD",
            "/quit [REASON]",
            "/help",
            "//TEXT",
        ];
        assert_eq!(help.len(), commands.len(), "one line each: {help:#?}");
        for (line, command) in help.iter().zip(commands) {
            assert!(
                line.starts_with(&format!("***   {command} ")),
                "/help lists {command} as {line:?}"
            );
        }
        Ok(())
    })
}

/// Reads a replayed line, `[history HH:MM] ` then `text` (tests/timestamps.rs checks the time).
async fn expect_history(client: &mut Client, text: &str) -> io::Result<()> {
    let line = client.line().await?;
    let said = line
        .strip_prefix("[history ")
        .and_then(|l| l.split_at_checked(5))
        .and_then(|(_, rest)| rest.strip_prefix("] "));
    assert_eq!(said, Some(text), "{line}");
    Ok(())
}

#[test]
fn joining_a_room_replays_its_recent_history_but_no_private_messages() -> io::Result<()> {
    let server = TestServer::start(Config {
        history: 3,
        ..config()
    });
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        c[0].nick("alice").await?;
        c[1].expect("*** guest1 is now alice").await?;
        for text in ["one", "two", "three", "/me four", "/msg guest2 private"] {
            c[0].send(text).await?;
        }
        c[1].until(|l| l == "[pm from alice] private").await?;
        let mut late = server.connect().await?;
        expect_history(&mut late, "alice: two").await?;
        expect_history(&mut late, "alice: three").await?;
        expect_history(&mut late, "* alice four").await?;
        late.send("/rooms").await?;
        late.expect("*** rooms: #lobby (3)").await?;

        // Each room has its own history, replayed on /join.
        c[0].join("den").await?;
        c[0].send("in the den").await?;
        // Handled before bob joins: the server answers commands in order.
        c[0].sync().await?;
        c[1].send("/join den").await?;
        c[1].until(|l| l.starts_with("*** you are guest2 in #den"))
            .await?;
        expect_history(&mut c[1], "alice: in the den").await
    })
}

#[test]
fn history_zero_replays_nothing() -> io::Result<()> {
    let server = TestServer::start(Config {
        history: 0,
        ..config()
    });
    smol::block_on(async {
        let mut c = server.clients(1).await?;
        c[0].send("forgotten").await?;
        c[0].sync().await?;
        let mut late = server.connect().await?;
        late.send("/rooms").await?;
        late.expect("*** rooms: #lobby (2)").await
    })
}
