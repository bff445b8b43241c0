//! A peer that vanishes without a FIN or reset (cable pulled, NAT entry gone) is removed within
//! a bound, whether its room is quiet or busy.
//!
//! Runs the real binary and the peers in two network namespaces joined by a veth pair, created
//! here (so it needs root), and makes the peer vanish by taking its end of the link down.
//! Where namespaces cannot be created the tests say so and pass, unless
//! `SMOLCHAT_REQUIRE_NETNS=1` (set by `.ci/run`) makes that a failure.

mod common;

use std::io::{self, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{log_message, Binary};

/// The keepalive and write timeout the server runs with: the bound is twice the longer.
const KEEPALIVE_SECS: &str = "2";
const WRITE_TIMEOUT_SECS: &str = "2";
const BOUND: Duration = Duration::from_secs(4);

/// Slack for a loaded machine: the kernel's timers, the log line, scheduling. Without the user
/// timeout a busy peer stays 930 s or more, so this still tells the two apart.
const SLACK: Duration = Duration::from_secs(20);

/// Two namespaces joined by a veth pair: the server's side (`server`, 10.213.N.1) and the
/// peer's (`peer`, 10.213.N.2). Deleted on drop, which also deletes the link.
struct Namespaces {
    server: String,
    peer: String,
    peer_dev: String,
    server_ip: String,
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl Namespaces {
    /// Creates the pair, or says why it cannot (not root, no `ip`, no namespaces).
    fn create(case: u8) -> io::Result<Namespaces> {
        let id = format!("{}-{case}", std::process::id());
        let namespaces = Namespaces {
            server: format!("smolchat-s-{id}"),
            peer: format!("smolchat-p-{id}"),
            // Interface names have at most 15 bytes.
            peer_dev: format!("scp{case}"),
            server_ip: format!("10.213.{case}.1"),
        };
        let n = &namespaces;
        ip(&["netns", "add", &n.server])?;
        ip(&["netns", "add", &n.peer])?;
        let server_dev = format!("scs{case}");
        ip(&[
            "link",
            "add",
            &server_dev,
            "netns",
            &n.server,
            "type",
            "veth",
            "peer",
            "name",
            &n.peer_dev,
            "netns",
            &n.peer,
        ])?;
        let peer_ip = format!("10.213.{case}.2/24");
        let server_ip = format!("{}/24", n.server_ip);
        ip(&[
            "-n",
            &n.server,
            "addr",
            "add",
            &server_ip,
            "dev",
            &server_dev,
        ])?;
        ip(&["-n", &n.peer, "addr", "add", &peer_ip, "dev", &n.peer_dev])?;
        for (ns, dev) in [
            (&n.server, server_dev.as_str()),
            (&n.server, "lo"),
            (&n.peer, n.peer_dev.as_str()),
        ] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(namespaces)
    }

    /// `program args…` run inside namespace `ns`.
    fn command(ns: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns, program]);
        command
    }

    /// Pulls the cable: the peer's end goes down, so nothing reaches it and nothing comes back.
    fn vanish_peer(&self) -> io::Result<()> {
        ip(&["-n", &self.peer, "link", "set", &self.peer_dev, "down"])
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.peer]);
        let _ = ip(&["netns", "del", &self.server]);
    }
}

/// Kills the child on drop, so no `nc` outlives its test.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nc(ns: &str, host: &str, port: u16) -> io::Result<Killed> {
    Namespaces::command(ns, "nc")
        .args([host, &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Killed)
}

/// Sets up, or returns `None` after a line saying why the test is skipped.
fn namespaces(case: u8) -> io::Result<Option<Namespaces>> {
    let has_nc = Command::new("sh")
        .args(["-c", "command -v nc"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let created = match has_nc {
        true => Namespaces::create(case),
        false => Err(io::Error::other("nc is not installed")),
    };
    match created {
        Ok(namespaces) => Ok(Some(namespaces)),
        Err(e) if std::env::var_os("SMOLCHAT_REQUIRE_NETNS").is_some() => Err(e),
        Err(e) => {
            eprintln!("skipping: cannot create network namespaces here ({e}); needs root");
            Ok(None)
        }
    }
}

/// Starts the server in its namespace with a peer connected from the other; `busy` adds a
/// member on the server's side that talks to the room twice a second. Returns how long after
/// the peer vanished the server logged that it left, and the log line.
fn time_to_remove_vanished_peer(case: u8, busy: bool) -> io::Result<Option<(Duration, String)>> {
    let Some(ns) = namespaces(case)? else {
        return Ok(None);
    };
    let mut command = Namespaces::command(&ns.server, env!("CARGO_BIN_EXE_smolchat"));
    command.args([
        "--bind",
        &format!("{}:0", ns.server_ip),
        "--keepalive",
        KEEPALIVE_SECS,
        "--write-timeout",
        WRITE_TIMEOUT_SECS,
        "--flood-rate",
        "0",
    ]);
    let mut server = Binary::start_with(&mut command)?;
    let port = server.addr.port();
    let joined = |l: &str, from: &str| {
        log_message(l, "INFO")
            .and_then(|m| m.split_once(&format!(" joined from {from}:")))
            .map(|(name, _)| name.to_string())
    };
    let _peer = nc(&ns.peer, &ns.server_ip, port)?;
    let peer_ip = format!("10.213.{case}.2");
    let line = server.stderr_until(|l| joined(l, &peer_ip).is_some())?;
    let peer = joined(&line, &peer_ip).expect("matched above");
    let mut talker = match busy {
        true => {
            let talker = nc(&ns.server, &ns.server_ip, port)?;
            server.stderr_until(|l| joined(l, &ns.server_ip).is_some())?;
            Some(talker)
        }
        false => None,
    };

    ns.vanish_peer()?;
    let vanished = Instant::now();
    let left = format!("{peer} left (");
    while vanished.elapsed() < BOUND + SLACK {
        if let Some(Killed(talker)) = &mut talker {
            let stdin = talker.stdin.as_mut().expect("piped stdin");
            stdin.write_all(b"anyone there?\n")?;
            stdin.flush()?;
        }
        let Some(line) = server.stderr_next(Duration::from_millis(500)) else {
            continue;
        };
        if let Some(message) = log_message(&line, "INFO").filter(|m| m.starts_with(&left)) {
            return Ok(Some((vanished.elapsed(), message.to_string())));
        }
    }
    Err(io::Error::other(format!(
        "{peer} still there {:?} after it vanished",
        vanished.elapsed()
    )))
}

fn check(case: u8, busy: bool) -> io::Result<()> {
    if let Some((took, left)) = time_to_remove_vanished_peer(case, busy)? {
        eprintln!("{left} after {took:?} (busy: {busy}; bound {BOUND:?})");
        // Not before the bound: it was the user timeout or keepalive, not some other error.
        assert!(took >= BOUND - Duration::from_millis(500), "{took:?}");
    }
    Ok(())
}

#[test]
fn vanished_idle_peer_is_removed_within_twice_the_keepalive() -> io::Result<()> {
    check(1, false)
}

#[test]
fn vanished_peer_in_a_busy_room_is_removed_within_the_same_bound() -> io::Result<()> {
    check(2, true)
}
