//! Out of file descriptors, the accept loop backs off instead of spinning, and recovers.

mod common;

use std::io;
use std::process::Command;
use std::time::Duration;

use common::process::Binary;
use common::procfs::{cpu_time, open_descriptors};
use common::Client;

#[test]
fn accept_loop_survives_running_out_of_descriptors() -> io::Result<()> {
    const LIMIT: usize = 40;
    let server = Binary::start_with(Command::new("sh").arg("-c").arg(format!(
        "ulimit -n {LIMIT} && exec {} --bind 127.0.0.1:0 --flood-rate 0 -q",
        env!("CARGO_BIN_EXE_smolchat")
    )))?;
    let pid = server.child.id();
    smol::block_on(async {
        // Fill every descriptor the server has with welcomed clients.
        let mut welcomed = Vec::new();
        while open_descriptors(pid)? < LIMIT {
            welcomed.push(Client::connect(server.addr).await?);
            assert!(
                welcomed.len() <= LIMIT,
                "the descriptor limit did not apply"
            );
        }
        // These complete the TCP handshake in the backlog, but accept fails with EMFILE.
        let mut waiting = Vec::new();
        for _ in 0..3 {
            waiting.push(Client::connect_raw(server.addr).await?);
        }
        let before = cpu_time(pid)?;
        std::thread::sleep(Duration::from_secs(2));
        let spent = cpu_time(pid)? - before;
        // Backing off, the server wakes about ten times in 2 s: measured 0-10 ms of CPU, and a
        // busy machine does not make a sleeping process use more. A loop that spins on EMFILE
        // uses a whole core, 2 s, or its share of one on a busy machine: a quarter still
        // exceeds the bound.
        eprintln!("{spent:?} of server CPU in 2 s out of descriptors");
        assert!(
            spent < Duration::from_millis(500),
            "accept loop spun: {spent:?} of CPU in 2 s"
        );

        // Free descriptors: the waiting clients are accepted and welcomed.
        welcomed.truncate(welcomed.len() - 5);
        for client in &mut waiting {
            client.until(|l| l.starts_with("*** you are")).await?;
        }
        welcomed[0].send("/who").await?;
        welcomed[0]
            .until(|l| l.starts_with("*** users in #lobby"))
            .await
            .map(drop)
    })
}
