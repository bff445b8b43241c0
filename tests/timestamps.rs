//! `/timestamps`: an `HH:MM ` UTC prefix on every line a client gets, off unless asked for;
//! history lines always say when they were said.

mod common;

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{config, Client, TestServer};
use smolchat::Config;

/// `HH:MM` UTC, as the server writes it.
fn hh_mm(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    format!("{:02}:{:02}", secs / 3600 % 24, secs / 60 % 60)
}

/// Checks that `text` starts with a time between `since` and now (a minute may turn while the
/// test runs), and returns what follows it.
fn after_time(text: &str, since: SystemTime) -> io::Result<&str> {
    let now = SystemTime::now();
    let mut times = vec![hh_mm(now)];
    let mut t = since;
    while t < now {
        times.push(hh_mm(t));
        t += Duration::from_secs(60);
    }
    match text.split_at_checked(5) {
        Some((time, rest)) if times.iter().any(|t| t == time) => Ok(rest),
        _ => Err(io::Error::other(format!(
            "expected one of {times:?} to start {text:?}"
        ))),
    }
}

/// The line without its `HH:MM ` timestamp, which must be between `since` and now.
fn unstamped(line: &str, since: SystemTime) -> io::Result<&str> {
    let rest = after_time(line, since)?;
    rest.strip_prefix(' ')
        .ok_or_else(|| io::Error::other(format!("no space after the time in {line:?}")))
}

/// Reads a line that must be `expected` with a timestamp between `since` and now.
async fn expect_stamped(client: &mut Client, since: SystemTime, expected: &str) -> io::Result<()> {
    let line = client.line().await?;
    assert_eq!(unstamped(&line, since)?, expected);
    Ok(())
}

/// Reads a history line that must be `[history HH:MM] ` (a time between `since` and now),
/// then `expected`.
fn check_history(line: &str, since: SystemTime, expected: &str) -> io::Result<()> {
    let time = line
        .strip_prefix("[history ")
        .ok_or_else(|| io::Error::other(format!("not a history line: {line:?}")))?;
    assert_eq!(after_time(time, since)?.strip_prefix("] "), Some(expected));
    Ok(())
}

#[test]
fn timestamps_are_per_user_and_off_by_default() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let since = SystemTime::now();
        let mut c = server.clients(3).await?;
        c[0].send("/timestamps on").await?;
        expect_stamped(&mut c[0], since, "*** timestamps on").await?;

        c[1].send("hi").await?;
        expect_stamped(&mut c[0], since, "guest2: hi").await?;
        c[2].expect("guest2: hi").await?;
        c[1].send("/me waves").await?;
        expect_stamped(&mut c[0], since, "* guest2 waves").await?;
        c[2].expect("* guest2 waves").await?;
        c[1].send("/msg guest1 psst").await?;
        c[1].expect("[pm to guest1] psst").await?;
        expect_stamped(&mut c[0], since, "[pm from guest2] psst").await?;
        c[2].send("/nick carol").await?;
        c[2].expect("*** you are now carol").await?;
        expect_stamped(&mut c[0], since, "*** guest3 is now carol").await?;
        c[1].expect("*** guest3 is now carol").await?;
        c[0].send("/nick server").await?;
        expect_stamped(&mut c[0], since, "! the name server is reserved").await?;

        // Every line of a reply of several lines.
        c[0].send("/help").await?;
        expect_stamped(&mut c[0], since, "*** commands:").await?;
        loop {
            let line = c[0].line().await?;
            if unstamped(&line, since)?.starts_with("***   /unban ADDRESS") {
                break;
            }
        }

        c[0].send("/timestamps OFF").await?;
        c[0].expect("*** timestamps off").await?;
        c[1].send("plain again").await?;
        c[0].expect("guest2: plain again").await?;
        c[0].send("/timestamps").await?;
        c[0].expect("! usage: /timestamps on|off").await?;
        c[0].send("/timestamps maybe").await?;
        c[0].expect("! usage: /timestamps on|off").await
    })
}

#[test]
fn history_lines_always_say_when_they_were_said() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let since = SystemTime::now();
        let mut c = server.clients(1).await?;
        c[0].send("one").await?;
        c[0].send("/me two").await?;
        c[0].sync().await?;
        let mut late = server.connect().await?;
        check_history(&late.line().await?, since, "guest1: one")?;
        check_history(&late.line().await?, since, "* guest1 two")?;

        // A room's history on /join too; with timestamps on, stamped like any line.
        c[0].join("den").await?;
        c[0].send("in the den").await?;
        c[0].sync().await?;
        late.expect("*** guest1 left #lobby for #den").await?;
        late.send("/timestamps on").await?;
        expect_stamped(&mut late, since, "*** timestamps on").await?;
        late.send("/join den").await?;
        expect_stamped(
            &mut late,
            since,
            "*** you are guest2 in #den; users here: 2",
        )
        .await?;
        let line = late.line().await?;
        check_history(unstamped(&line, since)?, since, "guest1: in the den")
    })
}

#[test]
fn the_server_default_turns_timestamps_on_from_the_welcome() -> io::Result<()> {
    let server = TestServer::start(Config {
        timestamps: true,
        ..config()
    });
    smol::block_on(async {
        let since = SystemTime::now();
        let mut c = Client::connect_raw(server.addr).await?;
        let welcome = "*** welcome to smolchat, guest1! /help lists the commands";
        expect_stamped(&mut c, since, welcome).await?;
        expect_stamped(&mut c, since, "*** you are guest1 in #lobby; users here: 1").await?;
        c.send("/timestamps off").await?;
        c.expect("*** timestamps off").await?;
        c.send("/timestamps on").await?;
        expect_stamped(&mut c, since, "*** timestamps on").await?;
        // The last line before closing too.
        c.send("/quit").await?;
        expect_stamped(&mut c, since, "*** bye").await?;
        c.expect_eof().await
    })
}
