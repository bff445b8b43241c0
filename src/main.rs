//! The `smolchat` binary: parses flags, runs the library's server, logs to stderr.

use std::io::{IsTerminal, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_signal::{Signal, Signals};
use futures_lite::StreamExt;
use smol::Executor;
use smolchat::{Cidr, Config, ConfigError, Event, Handle, Server, Tls};

mod fd_limit;

use fd_limit::FdLimit;

const DEFAULT_HOST: &str = "0.0.0.0";
const DEFAULT_PORT: u16 = 8888;
const DEFAULT_TLS_PORT: u16 = 8889;

/// Most executor threads: far more than any machine has cores, few enough that starting them
/// cannot exhaust the process's threads (`--threads 100000` would abort).
const MAX_THREADS: usize = 1024;

/// Log lines waiting for stderr. Beyond this they are dropped and counted, so a stderr that
/// blocks (a full pipe nobody reads) never stalls the server.
const LOG_QUEUE: usize = 4096;

/// How long the process waits at exit for its last log lines to reach stderr.
const LOG_FLUSH: Duration = Duration::from_secs(1);

/// What the command line asked for.
struct Options {
    host: String,
    port: u16,
    threads: usize,
    level: Level,
    /// Re-read on SIGHUP.
    motd_file: Option<String>,
    config: Config,
    tls: TlsOptions,
}

/// The TLS flags, checked together once all flags are read.
#[derive(Default)]
struct TlsOptions {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    port: Option<u16>,
    only: bool,
    handshake_timeout: Option<Duration>,
    /// The first TLS flag given, named in errors.
    first_flag: Option<&'static str>,
}

/// How much the binary logs; each level includes the ones before it (syslog's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Error,
    Warn,
    /// The server's own life: listening, signals, MOTD reloads, stopped.
    Notice,
    /// One line per join, leave (with the reason), refusal and rename.
    Info,
    /// Also one line per chat line, by size only.
    Debug,
}

impl Level {
    const NAMES: [(&'static str, Level); 5] = [
        ("error", Level::Error),
        ("warn", Level::Warn),
        ("notice", Level::Notice),
        ("info", Level::Info),
        ("debug", Level::Debug),
    ];

    fn name(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Notice => "NOTICE",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

fn usage() -> String {
    let d = Config::default();
    let secs = |t: Duration| t.as_secs_f64();
    format!(
        "\
Usage: smolchat [OPTIONS]

A line-based chat server: connect with `nc HOST PORT` and type.

Options:
      --bind ADDR                  address to listen on: an IP address or host name, with :PORT or not, IPv6 in [brackets] with a port [default: {DEFAULT_HOST}]
      --port N                     port to listen on, if --bind has none [default: {DEFAULT_PORT}]
      --threads N                  executor threads [default: available cores]
      --max-line BYTES             longest accepted line [default: {max_line}]
      --queue-lines N              most lines queued for one client [default: {queue_lines}]
      --queue-bytes BYTES          most bytes queued for one client [default: {queue_bytes}]
      --max-clients N              most clients at once [default: {max_clients}]
      --max-per-ip N               most clients from one address [default: {max_per_ip}]
      --limit-loopback             apply --max-per-ip to loopback clients too
      --flood-burst N              lines a client may send at once [default: {flood_burst}]
      --flood-rate LINES_PER_SEC   sustained lines per second, 0 turns flood control off [default: {flood_rate}]
      --write-timeout SECS         drop a client whose socket accepts nothing this long [default: {write_timeout}]
      --stall-timeout SECS         longest one slow reader may hold its senders back [default: {stall_timeout}]
      --partial-line-timeout SECS  drop a client whose line stays unfinished this long [default: {partial_line_timeout}]
      --shutdown-grace SECS        time to flush queued lines on shutdown [default: {shutdown_grace}]
      --keepalive SECS             TCP keepalive idle time, 0 for the system default [default: {keepalive}]
      --history N                  messages each room replays to newcomers, 0 disables [default: {history}]
      --announce-limit N           largest room whose joins and leaves are announced [default: {announce_limit}]
      --timestamps                 start every client with timestamps on (HH:MM UTC before each line)
      --motd TEXT                  message of the day shown on connect (at most {max_motd} bytes)
      --motd-file PATH             read the message of the day from a file; SIGHUP re-reads it
      --backlog N                  listen backlog [default: {backlog}]
      --oper-password-file PATH    read the /oper password from a file; no operators without it
      --password-file PATH         make the server private: clients must /pass the password in this file
      --auth-timeout SECS          drop a client that has not given the /pass password this long [default: {auth_timeout}]
      --password-delay SECS        hold up the answer to a wrong password, doubling per failure [default: {password_delay}]
      --topic-ops-only             only operators may set room topics
      --allow CIDR                 accept only these addresses (repeatable; e.g. 192.0.2.0/24, 2001:db8::/32)
      --deny CIDR                  refuse these addresses, silently (repeatable; wins over --allow)
      --max-bans N                 most bans in force at once [default: {max_bans}]
      --tls-cert PEM               serve TLS with this certificate chain (needs --tls-key){tls_note}
      --tls-key PEM                the private key of the certificate
      --tls-port N                 port for TLS clients [default: {DEFAULT_TLS_PORT}]
      --tls-only                   serve TLS alone: no plain port
      --tls-handshake-timeout SECS drop a client whose TLS handshake takes this long [default: {tls_handshake_timeout}]
      --redis URL                  join a cluster of servers through Redis: redis://[USER:PASSWORD@]HOST:PORT[/DB]{redis_note}
      --log-level LEVEL            error, warn, notice (start, stop, signals), info (also joins, leaves, refusals) or debug (also chat lines) [default: info]
  -v, --verbose                    same as --log-level debug
  -q, --quiet                      same as --log-level notice: do not log joins and leaves
  -h, --help                       print this help
  -V, --version                    print the version
",
        max_line = d.max_line,
        queue_lines = d.queue_lines,
        queue_bytes = d.queue_bytes,
        max_clients = d.max_clients,
        max_per_ip = d.max_per_ip,
        flood_burst = d.flood_burst,
        flood_rate = d.flood_rate,
        write_timeout = secs(d.write_timeout),
        stall_timeout = secs(d.stall_timeout),
        partial_line_timeout = secs(d.partial_line_timeout),
        shutdown_grace = secs(d.shutdown_grace),
        keepalive = d.keepalive.map_or(0.0, secs),
        history = d.history,
        announce_limit = d.announce_limit,
        max_motd = Config::MAX_MOTD,
        backlog = d.backlog,
        auth_timeout = secs(d.auth_timeout),
        password_delay = secs(d.password_delay),
        max_bans = d.max_bans,
        redis_note = if cfg!(feature = "redis") {
            ""
        } else {
            " [this build has no Redis: rebuild with --features redis]"
        },
        tls_note = if cfg!(feature = "tls") {
            ""
        } else {
            " [this build has no TLS: rebuild with --features tls]"
        },
        tls_handshake_timeout = secs(Tls::new("", "", ([0, 0, 0, 0], 0).into()).handshake_timeout),
    )
}

/// A command-line mistake: the message names the flag.
struct UsageError(String);

impl From<lexopt::Error> for UsageError {
    fn from(e: lexopt::Error) -> UsageError {
        UsageError(e.to_string())
    }
}

/// Parses the flag's value as `T`, accepting it only if `valid`; the error names the flag.
fn checked<T: std::str::FromStr>(
    parser: &mut lexopt::Parser,
    flag: &str,
    what: &str,
    valid: impl Fn(&T) -> bool,
) -> Result<T, UsageError> {
    let raw = parser.value()?;
    let text = raw.to_string_lossy();
    text.parse().ok().filter(|v| valid(v)).ok_or_else(|| {
        UsageError(format!(
            "invalid value '{text}' for '{flag}': expected {what}"
        ))
    })
}

fn value<T: std::str::FromStr>(
    parser: &mut lexopt::Parser,
    flag: &str,
    what: &str,
) -> Result<T, UsageError> {
    checked(parser, flag, what, |_| true)
}

/// A number; whether it is in range is [`Config::validate`]'s call.
fn number(parser: &mut lexopt::Parser, flag: &str) -> Result<usize, UsageError> {
    value(parser, flag, "a number")
}

fn cidr(parser: &mut lexopt::Parser, flag: &str) -> Result<Cidr, UsageError> {
    value(parser, flag, "an address or ADDRESS/PREFIX")
}

fn seconds(parser: &mut lexopt::Parser, flag: &str) -> Result<Duration, UsageError> {
    let valid = |secs: &f64| Duration::try_from_secs_f64(*secs).is_ok();
    checked(parser, flag, "a number of seconds", valid).map(Duration::from_secs_f64)
}

/// Reads a password file: its content without one trailing line ending.
fn password_file(parser: &mut lexopt::Parser, flag: &str) -> Result<String, UsageError> {
    let path: String = value(parser, flag, "a path")?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| UsageError(format!("cannot read {flag} '{path}': {e}")))?;
    let password = text
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&text);
    if password.is_empty() {
        return Err(UsageError(format!("{flag} '{path}' is empty")));
    }
    // Clients' lines are trimmed and their control characters replaced: such a password
    // could never be typed right.
    if password.trim() != password || password.chars().any(char::is_control) {
        return Err(UsageError(format!(
            "the password in {flag} '{path}' starts or ends with a space or holds a control \
             character, so no client could send it"
        )));
    }
    Ok(password.into())
}

/// Parses the flags. `Ok(None)` means help or version was printed.
fn parse_args() -> Result<Option<Options>, UsageError> {
    use lexopt::prelude::*;
    let mut options = Options {
        host: DEFAULT_HOST.into(),
        port: DEFAULT_PORT,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        level: Level::Info,
        motd_file: None,
        config: Config::default(),
        tls: TlsOptions::default(),
    };
    let c = &mut options.config;
    // Every flag given, with its value as typed, to refuse repeats and conflicts.
    let mut given: Vec<(String, String)> = Vec::new();
    let mut bind_port = None;
    let tls = &mut options.tls;
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        let flag = match arg {
            Short('q') => "--quiet".to_string(),
            Short('v') => "--verbose".to_string(),
            Short('h') => "--help".to_string(),
            Short('V') => "--version".to_string(),
            Long(name) => format!("--{name}"),
            _ => return Err(arg.unexpected().into()),
        };
        if given.iter().any(|(seen, _)| *seen == flag) {
            return Err(UsageError(format!("'{flag}' is given more than once")));
        }
        let mut shown = String::new();
        match flag.as_str() {
            "--bind" => {
                let bind: String = value(&mut parser, "--bind", "an address")?;
                (options.host, bind_port) = split_bind(&bind)?;
                shown = bind;
            }
            "--port" => {
                options.port = value(&mut parser, "--port", "a port number (0-65535)")?;
                shown = options.port.to_string();
            }
            "--threads" => {
                let valid = |n: &usize| (1..=MAX_THREADS).contains(n);
                let what = format!("a number from 1 to {MAX_THREADS}");
                options.threads = checked(&mut parser, &flag, &what, valid)?;
            }
            "--max-line" => c.max_line = number(&mut parser, &flag)?,
            "--queue-lines" => c.queue_lines = number(&mut parser, &flag)?,
            "--queue-bytes" => c.queue_bytes = number(&mut parser, &flag)?,
            "--max-clients" => c.max_clients = number(&mut parser, &flag)?,
            "--max-per-ip" => c.max_per_ip = number(&mut parser, &flag)?,
            "--limit-loopback" => c.limit_loopback = true,
            "--flood-burst" => c.flood_burst = value(&mut parser, &flag, "a number")?,
            "--flood-rate" => c.flood_rate = value(&mut parser, &flag, "lines per second")?,
            "--write-timeout" => c.write_timeout = seconds(&mut parser, &flag)?,
            "--stall-timeout" => c.stall_timeout = seconds(&mut parser, &flag)?,
            "--partial-line-timeout" => c.partial_line_timeout = seconds(&mut parser, &flag)?,
            "--shutdown-grace" => c.shutdown_grace = seconds(&mut parser, &flag)?,
            "--keepalive" => {
                c.keepalive = Some(seconds(&mut parser, &flag)?).filter(|d| !d.is_zero())
            }
            "--history" => c.history = number(&mut parser, &flag)?,
            "--announce-limit" => c.announce_limit = number(&mut parser, &flag)?,
            "--timestamps" => c.timestamps = true,
            "--motd" => c.motd = Some(value(&mut parser, &flag, "text")?),
            "--motd-file" => {
                let path: String = value(&mut parser, &flag, "a path")?;
                c.motd = Some(read_motd(&path).map_err(UsageError)?);
                options.motd_file = Some(path);
            }
            "--backlog" => c.backlog = value(&mut parser, &flag, "a number")?,
            "--log-level" => {
                let name: String = value(&mut parser, &flag, "a level")?;
                options.level = Level::NAMES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|&(_, level)| level)
                    .ok_or_else(|| {
                        UsageError(format!(
                            "invalid value '{name}' for '--log-level': expected error, warn, notice, info or debug"
                        ))
                    })?;
                shown = name;
            }
            "--oper-password-file" => c.oper_password = Some(password_file(&mut parser, &flag)?),
            "--password-file" => c.password = Some(password_file(&mut parser, &flag)?),
            "--auth-timeout" => c.auth_timeout = seconds(&mut parser, &flag)?,
            "--password-delay" => c.password_delay = seconds(&mut parser, &flag)?,
            "--topic-ops-only" => c.topic_ops_only = true,
            "--redis" => c.redis = Some(value(&mut parser, &flag, "a URL")?),
            "--allow" => c.allow.push(cidr(&mut parser, &flag)?),
            "--deny" => c.deny.push(cidr(&mut parser, &flag)?),
            "--max-bans" => c.max_bans = number(&mut parser, &flag)?,
            "--tls-cert" => {
                tls.first_flag.get_or_insert("--tls-cert");
                tls.cert = Some(parser.value()?.into());
            }
            "--tls-key" => {
                tls.first_flag.get_or_insert("--tls-key");
                tls.key = Some(parser.value()?.into());
            }
            "--tls-port" => {
                tls.first_flag.get_or_insert("--tls-port");
                tls.port = Some(value(&mut parser, &flag, "a port number (0-65535)")?);
            }
            "--tls-only" => {
                tls.first_flag.get_or_insert("--tls-only");
                tls.only = true;
            }
            "--tls-handshake-timeout" => {
                tls.first_flag.get_or_insert("--tls-handshake-timeout");
                let valid = |secs: &f64| *secs > 0.0 && Duration::try_from_secs_f64(*secs).is_ok();
                let secs = checked(&mut parser, &flag, "a positive number of seconds", valid)?;
                tls.handshake_timeout = Some(Duration::from_secs_f64(secs));
            }
            "--verbose" => options.level = Level::Debug,
            "--quiet" => options.level = Level::Notice,
            "--help" => {
                print!("{}", usage());
                return Ok(None);
            }
            "--version" => {
                println!("smolchat {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            _ => return Err(Long(&flag[2..]).unexpected().into()),
        }
        given.push((flag, shown));
    }
    let find = |flag: &str| given.iter().find(|(f, _)| f == flag);
    let with_value = |(flag, value): &(String, String)| match value.is_empty() {
        true => format!("'{flag}'"),
        false => format!("'{flag} {value}'"),
    };
    let conflicts = [
        ("--motd", "--motd-file"),
        ("--quiet", "--verbose"),
        ("--quiet", "--log-level"),
        ("--verbose", "--log-level"),
    ];
    for (a, b) in conflicts {
        if let (Some(a), Some(b)) = (find(a), find(b)) {
            return Err(UsageError(format!(
                "{} conflicts with {}: give one of them",
                with_value(a),
                with_value(b)
            )));
        }
    }
    if let Some(bind_port) = bind_port {
        if let (Some(bind), Some(port)) = (find("--bind"), find("--port")) {
            return Err(UsageError(format!(
                "{} conflicts with {}: give the port once",
                with_value(bind),
                with_value(port)
            )));
        }
        options.port = bind_port;
    }
    check_tls(
        &options.tls,
        find("--port").is_some() || bind_port.is_some(),
    )?;
    options.config.validate().map_err(|e| {
        let motd_flag = find("--motd-file").map_or("--motd", |_| "--motd-file");
        UsageError(config_error(&e, motd_flag))
    })?;
    Ok(Some(options))
}

/// Checks that the TLS flags make sense together, and that this build can serve TLS.
fn check_tls(tls: &TlsOptions, plain_address_given: bool) -> Result<(), UsageError> {
    let Some(first) = tls.first_flag else {
        return Ok(());
    };
    if !cfg!(feature = "tls") {
        return Err(UsageError(format!(
            "'{first}': this smolchat was built without TLS support \
             (rebuild it with `cargo build --release --features tls`)"
        )));
    }
    match (&tls.cert, &tls.key) {
        (Some(_), Some(_)) => {}
        (Some(_), None) => return Err(UsageError("'--tls-cert' needs '--tls-key'".into())),
        (None, Some(_)) => return Err(UsageError("'--tls-key' needs '--tls-cert'".into())),
        (None, None) => {
            return Err(UsageError(format!(
                "'{first}' needs '--tls-cert' and '--tls-key'"
            )))
        }
    }
    if tls.only && plain_address_given {
        return Err(UsageError(
            "'--tls-only' serves no plain port: give its port with '--tls-port', not '--port' or '--bind'"
                .into(),
        ));
    }
    Ok(())
}

/// Says what [`Config::validate`] refused in the words of the command line: `max_line` is
/// `--max-line`.
fn config_error(error: &ConfigError, motd_flag: &str) -> String {
    let flag = |field: &str| match field {
        "motd" => motd_flag.to_string(),
        field => format!("--{}", field.replace('_', "-")),
    };
    const FIELDS: [&str; 17] = [
        "max_line",
        "queue_lines",
        "queue_bytes",
        "max_clients",
        "max_per_ip",
        "flood_burst",
        "flood_rate",
        "write_timeout",
        "stall_timeout",
        "partial_line_timeout",
        "shutdown_grace",
        "auth_timeout",
        "password_delay",
        "max_bans",
        "keepalive",
        "backlog",
        "motd",
    ];
    let message = error.to_string();
    let words: Vec<String> = message
        .split(' ')
        .map(|word| match FIELDS.contains(&word) {
            true => flag(word),
            false => word.to_string(),
        })
        .collect();
    words.join(" ")
}

/// Reads a message of the day, refusing one over the limit before it is held in memory whole.
fn read_motd(path: &str) -> Result<String, String> {
    let cannot = |e: &dyn std::fmt::Display| format!("cannot read --motd-file '{path}': {e}");
    let len = std::fs::metadata(path).map_err(|e| cannot(&e))?.len();
    if len > Config::MAX_MOTD as u64 {
        let e = ConfigError::MotdTooLong(usize::try_from(len).unwrap_or(usize::MAX));
        return Err(cannot(&e));
    }
    // A device, a pipe or a growing file has no honest length: read no further than the limit.
    let mut motd = String::new();
    std::fs::File::open(path)
        .and_then(|file| {
            file.take(Config::MAX_MOTD as u64 + 1)
                .read_to_string(&mut motd)
        })
        .map_err(|e| cannot(&e))?;
    if motd.len() > Config::MAX_MOTD {
        return Err(cannot(&format_args!(
            "more than the limit of {} bytes",
            Config::MAX_MOTD
        )));
    }
    Ok(motd)
}

/// Splits `--bind` into host and optional port: `host`, `host:port`, `::1`, `[::1]:port`.
///
/// What looks like an IP address must be one: `256.1.1.1` is a typo, not a host name to look
/// up. A host name is letters, digits, `-` and `.`.
fn split_bind(bind: &str) -> Result<(String, Option<u16>), UsageError> {
    let bad = || {
        UsageError(format!(
            "invalid value '{bind}' for '--bind': expected an IP address or host name, \
             with :PORT or not, IPv6 in [brackets] with a port"
        ))
    };
    if bind.parse::<Ipv6Addr>().is_ok() {
        return Ok((bind.into(), None));
    }
    let (host, port) = if let Some(rest) = bind.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or_else(bad)?;
        ip.parse::<Ipv6Addr>().map_err(|_| bad())?;
        match after {
            "" => (ip, None),
            _ => (ip, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match bind.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (bind, None),
        }
    };
    let port = port
        .map(|p| p.parse::<u16>().map_err(|_| bad()))
        .transpose()?;
    let looks_like_ipv4 = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let hostname = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let valid = if host.contains(':') {
        true // checked above, in brackets
    } else if looks_like_ipv4 {
        host.parse::<Ipv4Addr>().is_ok()
    } else {
        hostname && !host.is_empty() && !host.starts_with(['-', '.'])
    };
    if !valid {
        return Err(bad());
    }
    Ok((host.into(), port))
}

/// The binary's log: timestamped lines with a level, written to stderr by a thread of its own.
///
/// Nothing here can fail or block: a line that does not fit the queue is dropped and counted,
/// and the writer ignores errors, so a closed or stuck stderr never stops the server or its
/// shutdown.
#[derive(Clone)]
struct Log {
    level: Level,
    /// `None` asks the writer to report that everything before it was written.
    tx: SyncSender<Option<String>>,
    /// Signalled each time the writer reaches a flush request.
    flushed: Arc<Mutex<Receiver<()>>>,
    dropped: Arc<AtomicU64>,
}

impl Log {
    /// Starts the writer thread.
    fn start(level: Level) -> Log {
        let (tx, rx) = mpsc::sync_channel::<Option<String>>(LOG_QUEUE);
        let (flushed_tx, flushed) = mpsc::channel();
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = dropped.clone();
        std::thread::spawn(move || {
            let mut stderr = std::io::stderr();
            for line in rx {
                let Some(line) = line else {
                    let _ = flushed_tx.send(());
                    continue;
                };
                let lost = lost.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    let note = stamp(Level::Warn, format_args!("{lost} log lines dropped"));
                    let _ = stderr.write_all(note.as_bytes());
                }
                let _ = stderr.write_all(line.as_bytes());
            }
        });
        Log {
            level,
            tx,
            flushed: Arc::new(Mutex::new(flushed)),
            dropped,
        }
    }

    fn log(&self, level: Level, message: std::fmt::Arguments<'_>) {
        if level > self.level {
            return;
        }
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Some(stamp(level, message))) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn error(&self, message: std::fmt::Arguments<'_>) {
        self.log(Level::Error, message);
    }

    fn warn(&self, message: std::fmt::Arguments<'_>) {
        self.log(Level::Warn, message);
    }

    fn notice(&self, message: std::fmt::Arguments<'_>) {
        self.log(Level::Notice, message);
    }

    fn info(&self, message: std::fmt::Arguments<'_>) {
        self.log(Level::Info, message);
    }

    fn debug(&self, message: std::fmt::Arguments<'_>) {
        self.log(Level::Debug, message);
    }

    /// Waits, at most [`LOG_FLUSH`], until what was logged so far reached stderr.
    fn flush(&self) {
        let flushed = self.flushed.lock().unwrap_or_else(PoisonError::into_inner);
        let deadline = Instant::now() + LOG_FLUSH;
        while Instant::now() < deadline {
            match self.tx.try_send(None) {
                Ok(()) => {
                    let _ =
                        flushed.recv_timeout(deadline.saturating_duration_since(Instant::now()));
                    return;
                }
                Err(TrySendError::Full(_)) => std::thread::sleep(Duration::from_millis(10)),
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

/// One log line: `2026-01-02T03:04:05.678Z INFO message`.
fn stamp(level: Level, message: std::fmt::Arguments<'_>) -> String {
    format!(
        "{} {} {message}\n",
        rfc3339(SystemTime::now()),
        level.name()
    )
}

/// A UTC time in RFC 3339 with milliseconds, e.g. `2024-02-29T00:00:00.000Z`.
fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        day_secs / 3600,
        day_secs % 3600 / 60,
        day_secs % 60,
        since.subsec_millis()
    )
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(Some(options)) => options,
        Ok(None) => return ExitCode::SUCCESS,
        Err(UsageError(message)) => {
            // One line, so it reads whole in a log; the hint rides along.
            let _ = writeln!(
                std::io::stderr(),
                "smolchat: {message} (see 'smolchat --help')"
            );
            return ExitCode::from(2);
        }
    };
    let log = Log::start(options.level);
    let code = serve(options, &log);
    log.flush();
    code
}

fn serve(options: Options, log: &Log) -> ExitCode {
    // First, so that no signal meant for a graceful shutdown or a reload kills the process
    // while it starts.
    let signals = match Signals::new([Signal::Int, Signal::Term, Signal::Hup]) {
        Ok(signals) => signals,
        Err(e) => {
            log.error(format_args!("cannot handle signals: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let port = options.port;
    let shown = if options.host.contains(':') {
        format!("[{}]:{port}", options.host)
    } else {
        format!("{}:{port}", options.host)
    };
    let addrs: Vec<SocketAddr> = match options.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => match (options.host.as_str(), port).to_socket_addrs() {
            Ok(addrs) => addrs.collect(),
            Err(e) => {
                log.error(format_args!("cannot resolve {shown}: {e}"));
                return ExitCode::FAILURE;
            }
        },
    };
    let Some(first) = addrs.first() else {
        log.error(format_args!("{shown} resolves to no address"));
        return ExitCode::FAILURE;
    };
    let mut config = options.config;
    if let (Some(cert), Some(key)) = (options.tls.cert, options.tls.key) {
        // The host resolved once already; the TLS listener takes its first address.
        let tls_port = options.tls.port.unwrap_or(DEFAULT_TLS_PORT);
        let mut tls = Tls::new(cert, key, SocketAddr::new(first.ip(), tls_port));
        tls.plain = !options.tls.only;
        if let Some(timeout) = options.tls.handshake_timeout {
            tls.handshake_timeout = timeout;
        }
        config.tls = Some(tls);
    }
    raise_fd_limit(log);
    let server = match Server::bind(&addrs[..], config) {
        Ok(server) => server,
        // A certificate or key that cannot be used, named with its problem.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            eprintln!("smolchat: {e}");
            return ExitCode::from(2);
        }
        // The message names the address.
        Err(e) => {
            log.error(format_args!("{e}"));
            return ExitCode::FAILURE;
        }
    };
    let version = env!("CARGO_PKG_VERSION");
    let addr = server.local_addr();
    match server.tls_addr() {
        Some(tls) if tls == addr => log.notice(format_args!(
            "smolchat {version} listening on {tls}; TLS only, connect with: \
             openssl s_client -quiet -connect {}",
            shown_addr(tls)
        )),
        tls => {
            log.notice(format_args!(
                "smolchat {version} listening on {addr}; connect with: nc {} {}",
                shown_host(addr),
                addr.port()
            ));
            if let Some(tls) = tls {
                log.notice(format_args!(
                    "TLS on {tls}; connect with: openssl s_client -quiet -connect {}",
                    shown_addr(tls)
                ));
            }
        }
    }
    let handle = server.handle();
    let ex = Executor::new();
    // Unreachable Redis at start: stop, rather than run a node that is silently not part of
    // the cluster. Later losses are survived (docs/CLUSTER.md).
    #[cfg(feature = "redis")]
    if let Err(e) = smol::block_on(server.connect_cluster(&ex)) {
        log.error(format_args!("{e}"));
        return ExitCode::FAILURE;
    }
    #[cfg(feature = "redis")]
    if let Some(cluster) = handle.stats().cluster {
        log.notice(format_args!(
            "joined the cluster as node {:016x}",
            cluster.node
        ));
    }
    let events = match options.level {
        Level::Debug => Some(handle.subscribe(LOG_QUEUE)),
        Level::Info => Some(handle.subscribe_presence(LOG_QUEUE)),
        Level::Notice | Level::Warn | Level::Error => None,
    };
    let (stop, stopped) = async_channel::bounded::<()>(1);
    // The server runs on this thread and `threads - 1` more; they end when `stop` is dropped.
    std::thread::scope(|scope| {
        for _ in 1..options.threads {
            scope.spawn(|| smol::block_on(ex.run(stopped.recv())));
        }
        smol::block_on(ex.run(async {
            ex.spawn(on_signals(signals, handle, options.motd_file, log.clone()))
                .detach();
            if let Some(events) = events {
                let log = log.clone();
                ex.spawn(async move {
                    while let Ok(event) = events.recv().await {
                        log_event(&log, &event);
                    }
                })
                .detach();
            }
            server.run(&ex, std::future::pending()).await;
        }));
        drop(stop);
    });
    log.notice(format_args!("stopped"));
    ExitCode::SUCCESS
}

/// SIGINT and SIGTERM start one graceful shutdown, however many arrive (a supervisor or GNU
/// `timeout` may signal the whole process group). Only a person at a terminal can cut it
/// short: a second Ctrl-C when stdin is a terminal quits at once. SIGHUP re-reads
/// `--motd-file`.
async fn on_signals(mut signals: Signals, handle: Handle, motd_file: Option<String>, log: Log) {
    let interactive = std::io::stdin().is_terminal();
    let mut shutting_down = false;
    while let Some(signal) = signals.next().await {
        let Ok(signal) = signal else { continue };
        let name = match signal {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
            _ => "SIGHUP",
        };
        match signal {
            Signal::Hup => reload_motd(&handle, motd_file.as_deref(), &log),
            Signal::Int if shutting_down && interactive => {
                log.warn(format_args!("{name} again: quitting at once"));
                log.flush();
                std::process::exit(130);
            }
            _ if shutting_down => log.notice(format_args!("{name}: already shutting down")),
            _ => {
                shutting_down = true;
                let hint = match interactive {
                    true => " (press Ctrl-C again to quit at once)",
                    false => "",
                };
                log.notice(format_args!("{name}: shutting down{hint}"));
                handle.shutdown();
            }
        }
    }
}

/// Re-reads the message of the day; on any error the old one stays.
fn reload_motd(handle: &Handle, path: Option<&str>, log: &Log) {
    let Some(path) = path else {
        log.notice(format_args!("SIGHUP: no --motd-file to re-read"));
        return;
    };
    // Reading a pipe or a device here would block this executor thread, and with it the
    // server, until it ended: only a regular file is re-read.
    let regular = std::fs::metadata(path).map_or(true, |m| m.is_file());
    if !regular {
        log.error(format_args!(
            "SIGHUP: --motd-file '{path}' is not a regular file; the old message of the day stays"
        ));
        return;
    }
    match read_motd(path).and_then(|motd| {
        let lines = motd.lines().count();
        handle.set_motd(Some(&motd)).map_err(|e| e.to_string())?;
        Ok(lines)
    }) {
        Ok(lines) => log.notice(format_args!(
            "SIGHUP: message of the day re-read from {path} ({lines} lines)"
        )),
        Err(e) => log.error(format_args!(
            "SIGHUP: {e}; the old message of the day stays"
        )),
    }
}

/// The server's host as `nc` takes it; a placeholder when it listens on every address.
fn shown_host(addr: SocketAddr) -> String {
    match addr.ip() {
        ip if ip.is_unspecified() => "<host>".into(),
        ip => ip.to_string(),
    }
}

/// The server's `host:port` as `openssl s_client -connect` takes it.
fn shown_addr(addr: SocketAddr) -> String {
    match addr.ip() {
        ip if ip.is_unspecified() => format!("<host>:{}", addr.port()),
        _ => addr.to_string(),
    }
}

/// Joins, leaves (with the reason) and refusals are one line each at `info`; chat lines are
/// logged at `debug`, by size only, so the log never holds what people wrote.
fn log_event(log: &Log, event: &Event) {
    match event {
        Event::Joined { name, addr } => log.info(format_args!("{name} joined from {addr}")),
        Event::Left { name, reason } => log.info(format_args!("{name} left ({reason})")),
        Event::Refused { addr, reason } => log.info(format_args!("refused {addr}: {reason}")),
        Event::Renamed { old, new } => log.info(format_args!("{old} is now {new}")),
        Event::RoomChanged { name, from, to } => {
            log.debug(format_args!("{name} moved from #{from} to #{to}"))
        }
        Event::Message {
            name, room, text, ..
        } => log.debug(format_args!("{name} sent {} bytes to #{room}", text.len())),
        Event::Private { from, to, text } => log.debug(format_args!(
            "{from} sent {} bytes privately to {to}",
            text.len()
        )),
        Event::Opered { name, addr } => {
            log.info(format_args!("{name} ({addr}) became an operator"))
        }
        Event::OperFailed { name, addr } => log.warn(format_args!(
            "{name} ({addr}) gave a wrong operator password"
        )),
        Event::PassFailed { addr } => log.warn(format_args!("{addr} gave a wrong server password")),
        Event::TlsFailed { addr, error } => {
            log.info(format_args!("{addr} failed the TLS handshake: {error}"))
        }
        Event::Banned {
            range,
            duration,
            reason,
            by,
        } => log.info(format_args!(
            "{} banned {range} {}{}{reason}",
            by.as_deref().unwrap_or("the host"),
            duration.map_or("until unbanned".into(), |d| format!(
                "for {} s",
                d.as_secs_f64()
            )),
            if reason.is_empty() { "" } else { ": " }
        )),
        Event::Unbanned { range, by } => log.info(format_args!(
            "{} unbanned {range}",
            by.as_deref().unwrap_or("the host")
        )),
        Event::Muted { name, muted, by } => log.info(format_args!(
            "{} {}muted {name}",
            by.as_deref().unwrap_or("the host"),
            if *muted { "" } else { "un" }
        )),
        Event::TopicChanged { room, topic, by } => match topic {
            Some(topic) => log.info(format_args!("{by} set the topic of #{room}: {topic}")),
            None => log.info(format_args!("{by} cleared the topic of #{room}")),
        },
        #[cfg(feature = "redis")]
        Event::ClusterDown => log.warn(format_args!(
            "cluster link lost; serving this server's users alone until it is back"
        )),
        #[cfg(feature = "redis")]
        Event::ClusterUp => log.notice(format_args!("cluster link restored")),
        _ => {}
    }
}

/// Raises the soft open-file limit to the hard one: each client needs a descriptor.
fn raise_fd_limit(log: &Log) {
    match fd_limit::raise_fd_limit() {
        FdLimit::Unchanged => {}
        FdLimit::Raised(limit) => log.notice(format_args!(
            "open-file limit raised to {}",
            limit.map_or("unlimited".into(), |m| m.to_string())
        )),
        FdLimit::Kept(current, e) => log.warn(format_args!(
            "cannot raise the open-file limit above {}: {e}",
            current.unwrap_or(0)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |secs: u64, millis: u64| {
            rfc3339(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1_709_164_800, 5), "2024-02-29T00:00:00.005Z");
        assert_eq!(at(4_102_444_799, 999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn bind_values_that_look_like_ip_addresses_must_be_ones() {
        let ok = |bind: &str| split_bind(bind).ok();
        assert_eq!(ok("127.0.0.1"), Some(("127.0.0.1".into(), None)));
        assert_eq!(ok("10.0.0.1:80"), Some(("10.0.0.1".into(), Some(80))));
        assert_eq!(ok("::1"), Some(("::1".into(), None)));
        assert_eq!(ok("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(ok("[::1]"), Some(("::1".into(), None)));
        assert_eq!(ok("localhost:80"), Some(("localhost".into(), Some(80))));
        assert_eq!(
            ok("chat-1.example.org"),
            Some(("chat-1.example.org".into(), None))
        );
        for bad in [
            "256.1.1.1:80",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "[::1",
            "[1.2.3.4]:80",
            "[::1]80",
            "::g",
            "host:port",
            "host:",
            ":80",
            "",
            "a b",
            "-x",
        ] {
            assert!(split_bind(bad).is_err(), "{bad}");
        }
    }
}
