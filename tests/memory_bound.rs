//! Memory stays bounded whatever a client sends: 200 MB without a newline leave the server's
//! memory flat.

mod common;

use std::io;

use common::process::Binary;
use common::procfs::rss_kib;
use common::Client;

#[test]
fn two_hundred_megabytes_without_a_newline_keep_memory_flat() -> io::Result<()> {
    let server = Binary::start(&["--bind", "127.0.0.1:0", "--flood-rate", "0", "-q"])?;
    let pid = server.child.id();
    smol::block_on(async {
        let mut c = Vec::new();
        for _ in 0..2 {
            c.push(Client::connect(server.addr).await?);
        }
        c[0].until(|l| l.ends_with(" joined #lobby")).await?;
        // Warm up the code paths (and allocator) once with a short line.
        c[0].send("warm up").await?;
        c[1].until(|l| l.ends_with(": warm up")).await?;
        let before = rss_kib(pid)?;

        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..200 {
            c[0].send_raw(&chunk).await?;
        }
        c[0].send_raw(b"\nafter the flood\n").await?;
        c[0].expect("! line too long (over 2048 bytes); it was not sent")
            .await?;
        c[1].until(|l| l.ends_with(": after the flood")).await?;

        let grown = rss_kib(pid)?.saturating_sub(before);
        // Measured: 8-28 KiB. A server that buffered the unfinished line would grow by the
        // 200 MiB it was sent; 16 MiB leaves the allocator and a busy machine room to spare.
        assert!(grown < 16 * 1024, "RSS grew by {grown} KiB");
        eprintln!("RSS grew by {grown} KiB after 200 MB without a newline");
        Ok(())
    })
}
