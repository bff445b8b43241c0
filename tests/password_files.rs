//! The binary's password files and address-list flags: read at start, refused clearly when
//! unusable, and never a password on the command line.

mod common;

use std::io;
use std::path::PathBuf;

use common::process::{run, Binary};
use common::Client;

/// A file in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, content: &str) -> io::Result<TempFile> {
        let path = std::env::temp_dir().join(format!("smolchat-{name}-{}.txt", std::process::id()));
        std::fs::write(&path, content)?;
        Ok(TempFile(path))
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn the_oper_password_file_loses_its_line_ending_and_wrong_guesses_are_logged() -> io::Result<()> {
    let file = TempFile::new("oper", "s3cret pass\r\n")?;
    let mut server = Binary::start(&[
        "--bind",
        "127.0.0.1:0",
        "--password-delay",
        "0.05",
        "--oper-password-file",
        file.path(),
    ])?;
    smol::block_on(async {
        let mut client = Client::connect(server.addr).await?;
        client.send("/oper s3cret").await?;
        client.expect("! wrong password").await?;
        server.stderr_until(|l| {
            l.contains(&format!(" {} (127.0.0.1:", client.name))
                && l.ends_with(") gave a wrong operator password")
        })?;
        client.send("/oper s3cret pass").await?;
        client.expect("*** you are now an operator").await?;
        server.stderr_until(|l| l.ends_with(") became an operator"))?;
        client.send("/topic hello").await?;
        client.until(|l| l.contains("set the topic")).await?;
        server.stderr_until(|l| l.ends_with("set the topic of #lobby: hello"))?;
        Ok(())
    })
}

#[test]
fn unusable_password_files_and_ranges_name_the_flag_and_exit_2() -> io::Result<()> {
    let empty = TempFile::new("empty", "\n")?;
    let spaced = TempFile::new("spaced", "secret \n")?;
    for (args, flag) in [
        (
            &["--oper-password-file", empty.path()][..],
            "--oper-password-file",
        ),
        (&["--password-file", spaced.path()], "--password-file"),
        (
            &["--password-file", "/nonexistent/password"],
            "--password-file",
        ),
        (&["--allow", "10.0.0.0/33"], "--allow"),
        (&["--deny", "example.com"], "--deny"),
        (&["--max-bans", "0"], "--max-bans"),
    ] {
        let (code, stdout, stderr) = run(args)?;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stdout.is_empty());
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("smolchat: ") && first.contains(flag),
            "{args:?}: {first}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    Ok(())
}

#[test]
fn a_private_server_with_a_deny_list_from_the_command_line() -> io::Result<()> {
    let file = TempFile::new("pass", "letmein\n")?;
    let mut server = Binary::start(&[
        "--bind",
        "127.0.0.1:0",
        "--password-file",
        file.path(),
        "--deny",
        "127.0.0.2",
    ])?;
    smol::block_on(async {
        let from = "127.0.0.2".parse().expect("an address");
        let mut denied = Client::connect_raw_from(server.addr, from).await?;
        assert_eq!(denied.rest().await?, "");
        server.stderr_until(|l| l.contains(" refused 127.0.0.2:"))?;
        let mut client = Client::connect_raw(server.addr).await?;
        client
            .expect("*** this server is private: send /pass PASSWORD")
            .await?;
        client.send("/pass letmein").await?;
        client.read_welcome().await
    })
}
