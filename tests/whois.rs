//! `/whois NAME`: room, time connected and idle, away message; the address only for the user
//! themself.

mod common;

use std::io;

use common::{config, TestServer};

/// Checks a `/whois` reply's shape and returns what follows the times.
fn after_times<'a>(line: &'a str, name: &str, room: &str) -> io::Result<&'a str> {
    let bad = || io::Error::other(format!("unexpected /whois reply {line:?}"));
    let rest = line
        .strip_prefix(&format!("*** {name} is in #{room}; connected for "))
        .ok_or_else(bad)?;
    let (connected, rest) = rest.split_once("; idle for ").ok_or_else(bad)?;
    let (idle, rest) = rest.split_once(';').unwrap_or((rest, ""));
    // A loaded machine may take seconds, never minutes, over this test.
    for time in [connected, idle] {
        let seconds = time.strip_suffix('s').and_then(|s| s.parse::<u64>().ok());
        if seconds.is_none_or(|s| s >= 60) {
            return Err(bad());
        }
    }
    Ok(rest)
}

#[test]
fn whois_shows_the_address_only_to_the_user_themself() -> io::Result<()> {
    let server = TestServer::start(config());
    smol::block_on(async {
        let mut c = server.clients(2).await?;
        c[0].nick("alice").await?;
        c[1].expect("*** guest1 is now alice").await?;
        c[0].join("den").await?;

        c[1].send("/whois ALICE").await?;
        let line = c[1].until(|l| l.starts_with("*** alice is in")).await?;
        assert_eq!(after_times(&line, "alice", "den")?, "");

        c[0].send("/whois alice").await?;
        let line = c[0].line().await?;
        let address = format!(" address {}", c[0].local_addr()?);
        assert_eq!(after_times(&line, "alice", "den")?, address);

        c[0].send("/away out; back soon").await?;
        c[0].expect("*** you are away: out; back soon").await?;
        c[1].send("/whois alice").await?;
        let line = c[1].line().await?;
        assert_eq!(after_times(&line, "alice", "den")?, " away: out; back soon");
        c[0].send("/whois alice").await?;
        let line = c[0].line().await?;
        assert_eq!(
            after_times(&line, "alice", "den")?,
            format!("{address}; away: out; back soon")
        );

        c[1].send("/whois zed").await?;
        c[1].expect("! no user named zed").await?;
        c[1].send("/whois").await?;
        c[1].expect("! usage: /whois NAME").await
    })
}
