//! Every `Config` value is checked where the library takes it, and the MOTD can change at run
//! time.

mod common;

use std::io;
use std::time::Duration;

use common::{Client, TestServer};
use smolchat::{Config, Server};

/// Each value seen to misbehave when accepted, and the field the error must name.
fn bad_configs() -> Vec<(Config, &'static str)> {
    let d = Config::default;
    let huge = Duration::from_secs(10_000_000_000_000_000_000);
    vec![
        (Config { max_line: 0, ..d() }, "max_line"),
        (
            Config {
                max_line: usize::MAX,
                ..d()
            },
            "queue_bytes",
        ),
        (
            Config {
                queue_lines: 0,
                ..d()
            },
            "queue_lines",
        ),
        (
            Config {
                queue_bytes: 0,
                ..d()
            },
            "queue_bytes",
        ),
        (
            Config {
                queue_bytes: 1000,
                ..d()
            },
            "queue_bytes",
        ),
        (
            Config {
                max_clients: 0,
                ..d()
            },
            "max_clients",
        ),
        (
            Config {
                max_per_ip: 0,
                ..d()
            },
            "max_per_ip",
        ),
        (
            Config {
                flood_burst: 0,
                ..d()
            },
            "flood_burst",
        ),
        (
            Config {
                flood_rate: 1e-300,
                ..d()
            },
            "flood_rate",
        ),
        (
            Config {
                flood_rate: -1.0,
                ..d()
            },
            "flood_rate",
        ),
        (
            Config {
                flood_rate: f64::NAN,
                ..d()
            },
            "flood_rate",
        ),
        (
            Config {
                flood_rate: f64::INFINITY,
                ..d()
            },
            "flood_rate",
        ),
        (
            Config {
                write_timeout: Duration::ZERO,
                ..d()
            },
            "write_timeout",
        ),
        (
            Config {
                write_timeout: huge,
                ..d()
            },
            "write_timeout",
        ),
        (
            Config {
                partial_line_timeout: Duration::ZERO,
                ..d()
            },
            "partial_line_timeout",
        ),
        (
            Config {
                partial_line_timeout: huge,
                ..d()
            },
            "partial_line_timeout",
        ),
        (
            Config {
                shutdown_grace: Duration::ZERO,
                ..d()
            },
            "shutdown_grace",
        ),
        (
            Config {
                shutdown_grace: huge,
                ..d()
            },
            "shutdown_grace",
        ),
        (
            Config {
                keepalive: Some(Duration::ZERO),
                ..d()
            },
            "keepalive",
        ),
        (
            Config {
                keepalive: Some(Duration::from_millis(1500)),
                ..d()
            },
            "keepalive",
        ),
        (
            Config {
                keepalive: Some(huge),
                ..d()
            },
            "keepalive",
        ),
        (Config { backlog: 0, ..d() }, "backlog"),
        (
            Config {
                motd: Some("x".repeat(Config::MAX_MOTD + 1)),
                ..d()
            },
            "motd",
        ),
    ]
}

#[test]
fn bind_refuses_every_out_of_range_value_naming_the_field() {
    for (config, field) in bad_configs() {
        let debug = format!("{config:?}");
        let error = Server::bind("127.0.0.1:0", config).expect_err(&debug);
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{debug}");
        assert!(
            error.to_string().starts_with(&format!("{field} must"))
                || error.to_string().starts_with(&format!("{field} is")),
            "{field}: {error}"
        );
    }
}

#[test]
fn from_listener_refuses_every_out_of_range_value_naming_the_field() -> io::Result<()> {
    for (config, field) in bad_configs() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let error = Server::from_listener(listener, config).expect_err(field);
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            error
                .get_ref()
                .and_then(|e| e.downcast_ref::<smolchat::ConfigError>())
                .map(|e| e.field()),
            Some(field)
        );
    }
    Ok(())
}

#[test]
fn limits_at_their_edges_are_accepted() -> io::Result<()> {
    let edge = Config {
        max_line: 1,
        queue_lines: 1,
        queue_bytes: 259,
        max_clients: 1,
        max_per_ip: 1,
        flood_burst: 1,
        flood_rate: Config::MIN_FLOOD_RATE,
        write_timeout: Config::MAX_TIMEOUT,
        partial_line_timeout: Config::MIN_TIMEOUT,
        shutdown_grace: Config::MAX_TIMEOUT,
        keepalive: Some(Config::MAX_KEEPALIVE),
        backlog: 1,
        motd: Some("x".repeat(Config::MAX_MOTD)),
        ..Config::default()
    };
    Server::bind("127.0.0.1:0", edge)?;
    let off = Config {
        flood_rate: 0.0,
        keepalive: None,
        ..Config::default()
    };
    Server::bind("127.0.0.1:0", off).map(drop)
}

#[test]
fn set_motd_changes_what_new_clients_see() -> io::Result<()> {
    let server = TestServer::start(Config {
        motd: Some("first".into()),
        ..common::config()
    });
    smol::block_on(async {
        let mut before = Client::connect_raw(server.addr).await?;
        before.until(|l| l.starts_with("*** welcome")).await?;
        before.expect("*** motd: first").await?;

        server.handle.set_motd(Some("second\nand more"))?;
        let mut after = Client::connect_raw(server.addr).await?;
        after.until(|l| l.starts_with("*** welcome")).await?;
        after.expect("*** motd: second").await?;
        after.expect("*** motd: and more").await?;
        after.until(|l| l.starts_with("*** you are")).await?;

        let too_long = "x".repeat(Config::MAX_MOTD + 1);
        assert!(server.handle.set_motd(Some(&too_long)).is_err());
        server.handle.set_motd(None)?;
        let mut none = Client::connect_raw(server.addr).await?;
        none.until(|l| l.starts_with("*** welcome")).await?;
        let next = none.line().await?;
        assert!(next.starts_with("*** you are"), "{next}");
        Ok(())
    })
}

#[test]
fn redis_needs_the_feature_and_a_valid_url_and_never_shows_its_password() {
    let with = |url: &str| Config {
        redis: Some(url.into()),
        ..Config::default()
    };
    let good = with("redis://user:hunter2@127.0.0.1:6379/2");
    assert!(!format!("{good:?}").contains("hunter2"));
    // Binding checks the URL; it does not connect (`Server::run` or `connect_cluster` do).
    let bound = Server::bind("127.0.0.1:0", good);
    assert_eq!(bound.is_ok(), cfg!(feature = "redis"), "{bound:?}");
    if let Err(e) = bound {
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("no Redis support"), "{e}");
    }
    let bad = Server::bind("127.0.0.1:0", with("http://127.0.0.1:6379")).unwrap_err();
    assert_eq!(bad.kind(), io::ErrorKind::InvalidInput);
    assert!(bad.to_string().starts_with("redis: "), "{bad}");
}
