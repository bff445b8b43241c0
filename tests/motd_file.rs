//! `--motd-file` that is not an ordinary small file: a device, a pipe.

mod common;

use std::io;
use std::process::Command;

use common::process::{log_message, run, Binary};
use common::Client;

#[test]
fn an_endless_motd_file_is_refused_at_start_after_reading_only_the_limit() -> io::Result<()> {
    // /dev/zero reports a length of 0 and never ends: only a bounded read can refuse it.
    let (code, _, stderr) = run(&["--bind", "127.0.0.1:0", "--motd-file", "/dev/zero"])?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with("smolchat: cannot read --motd-file '/dev/zero': more than the limit"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn sighup_with_the_motd_file_turned_into_a_pipe_keeps_the_server_serving() -> io::Result<()> {
    let path = std::env::temp_dir().join(format!("smolchat-hup-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, "old news\n")?;
    let path_str = path.to_str().expect("utf-8 path");
    let result = (|| {
        let mut server = Binary::start(&["--bind", "127.0.0.1:0", "--motd-file", path_str])?;
        // A pipe nobody writes to: opening it to read would wait for a writer forever.
        std::fs::remove_file(&path)?;
        assert!(Command::new("mkfifo").arg(&path).status()?.success());
        server.signal("HUP")?;
        server.stderr_until(|l| {
            log_message(l, "ERROR").is_some_and(|m| m.ends_with("the old message of the day stays"))
        })?;
        smol::block_on(async {
            let mut client = Client::connect_raw(server.addr).await?;
            client.until(|l| l.starts_with("*** welcome")).await?;
            client.expect("*** motd: old news").await
        })?;
        server.signal("TERM")?;
        assert_eq!(server.wait()?.code(), Some(0));
        io::Result::Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    result
}
