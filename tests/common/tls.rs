//! TLS helpers: a certificate authority and server certificate made at test time with the
//! `openssl` command, and a line client over rustls whose every read times out.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::TIMEOUT;

/// Whether the `openssl` command can be run.
pub fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Files made for one test in a directory of their own; removed on drop.
pub struct Certs {
    dir: PathBuf,
    /// The server's certificate followed by the authority's, as a `fullchain.pem`.
    pub chain: PathBuf,
    /// The server certificate's private key.
    pub key: PathBuf,
    /// A private key that belongs to no certificate here.
    pub other_key: PathBuf,
    /// The authority that signed the server's certificate, for clients to trust.
    pub ca: PathBuf,
}

impl Certs {
    /// Makes a certificate authority and a server certificate for 127.0.0.1 and localhost.
    ///
    /// `None` (with a message) when `openssl` is missing outside CI; in CI it must be there.
    pub fn make() -> io::Result<Option<Certs>> {
        if !openssl_available() {
            assert!(
                std::env::var_os("CI").is_none(),
                "openssl is missing: .ci/run must install it"
            );
            eprintln!("openssl not installed; skipping this TLS test");
            return Ok(None);
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "smolchat-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let certs = Certs {
            chain: dir.join("chain.pem"),
            key: dir.join("key.pem"),
            other_key: dir.join("other-key.pem"),
            ca: dir.join("ca.pem"),
            dir,
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        certs.openssl(
            &["req", "-x509"],
            &ec,
            "-keyout ca.key -out ca.pem -days 2 -subj /CN=smolchat-test-ca",
        )?;
        certs.openssl(
            &["req"],
            &ec,
            "-keyout key.pem -out leaf.csr -subj /CN=localhost",
        )?;
        std::fs::write(
            certs.dir.join("leaf.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
             basicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        )?;
        certs.openssl(
            &["x509", "-req"],
            &[],
            "-in leaf.csr -CA ca.pem -CAkey ca.key -set_serial 1 -days 2 -extfile leaf.ext -out leaf.pem",
        )?;
        certs.openssl(
            &["genpkey"],
            &[],
            "-algorithm ec -pkeyopt ec_paramgen_curve:prime256v1 -out other-key.pem",
        )?;
        let mut chain = std::fs::read(certs.dir.join("leaf.pem"))?;
        chain.extend(std::fs::read(&certs.ca)?);
        std::fs::write(&certs.chain, chain)?;
        Ok(Some(certs))
    }

    /// Runs `openssl` in the directory.
    fn openssl(&self, command: &[&str], options: &[&str], rest: &str) -> io::Result<()> {
        let output = Command::new("openssl")
            .args(command)
            .args(options)
            .args(rest.split(' '))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "openssl {command:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(())
    }

    /// A file path in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A chat client over TLS that trusts only the test's authority. Blocking, with a read
/// timeout of [`TIMEOUT`] on its socket.
pub struct TlsClient {
    pub name: String,
    stream: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsClient {
    /// Connects, completes the handshake, and reads the welcome up to the line that names the
    /// client.
    pub fn connect(addr: SocketAddr, ca: &Path) -> io::Result<TlsClient> {
        let mut client = TlsClient::connect_raw(addr, ca)?;
        client.handshake()?;
        loop {
            let line = client.line()?;
            if let Some(rest) = line.strip_prefix("*** you are ") {
                client.name = rest.split(' ').next().unwrap_or_default().to_string();
                return Ok(client);
            }
        }
    }

    /// Connects without starting the handshake.
    pub fn connect_raw(addr: SocketAddr, ca: &Path) -> io::Result<TlsClient> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).map_err(io::Error::other)? {
            roots
                .add(cert.map_err(io::Error::other)?)
                .map_err(io::Error::other)?;
        }
        let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let session = ClientConnection::new(Arc::new(config), ServerName::from(addr.ip()))
            .map_err(io::Error::other)?;
        let socket = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        socket.set_read_timeout(Some(TIMEOUT))?;
        socket.set_write_timeout(Some(TIMEOUT))?;
        Ok(TlsClient {
            name: String::new(),
            stream: BufReader::new(StreamOwned::new(session, socket)),
        })
    }

    /// Completes the handshake (certificate checked).
    pub fn handshake(&mut self) -> io::Result<()> {
        let stream = self.stream.get_mut();
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(())
    }

    /// Sends one line (a `\n` is added).
    pub fn send(&mut self, line: &str) -> io::Result<()> {
        self.send_raw(format!("{line}\n").as_bytes())
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stream = self.stream.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// Reads the next line, without its `\n`. End of stream is an `UnexpectedEof` error.
    pub fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.stream.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        assert!(
            line.ends_with('\n'),
            "server line without newline: {line:?}"
        );
        line.pop();
        Ok(line)
    }

    /// Reads the next line and checks it is exactly `expected`.
    pub fn expect(&mut self, expected: &str) -> io::Result<()> {
        let line = self.line()?;
        if line != expected {
            return Err(io::Error::other(format!(
                "{}: expected {expected:?}, got {line:?}",
                self.name
            )));
        }
        Ok(())
    }

    /// Reads lines until one satisfies `pred`, returning it.
    pub fn until(&mut self, pred: impl Fn(&str) -> bool) -> io::Result<String> {
        loop {
            let line = self.line()?;
            if pred(&line) {
                return Ok(line);
            }
        }
    }

    /// Reads everything until the server ends the session with a close_notify.
    pub fn rest(&mut self) -> io::Result<String> {
        let mut rest = Vec::new();
        self.stream.read_to_end(&mut rest)?;
        Ok(String::from_utf8_lossy(&rest).into_owned())
    }

    /// Checks that the server ends the session next, cleanly (with a close_notify).
    pub fn expect_eof(&mut self) -> io::Result<()> {
        let rest = self.rest()?;
        if !rest.is_empty() {
            return Err(io::Error::other(format!(
                "expected end of stream, got {rest:?}"
            )));
        }
        Ok(())
    }
}
