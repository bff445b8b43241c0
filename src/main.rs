//! The `smolchat` binary: parses flags, runs the library's server, logs to stderr.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_signal::{Signal, Signals};
use futures_lite::StreamExt;
use smol::Executor;
use smolchat::{Config, Event, Server, Tls};

const DEFAULT_HOST: &str = "0.0.0.0";
const DEFAULT_PORT: u16 = 8888;
const DEFAULT_TLS_PORT: u16 = 8889;

/// What the command line asked for.
struct Options {
    host: String,
    /// The port given inside `--bind`, if any.
    bind_port: Option<u16>,
    port: Option<u16>,
    threads: usize,
    quiet: bool,
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

fn usage() -> String {
    let d = Config::default();
    let secs = |t: Duration| t.as_secs_f64();
    format!(
        "\
Usage: smolchat [OPTIONS]

A line-based chat server: connect with `nc HOST PORT` and type.

Options:
      --bind ADDR                  address to listen on: host, host:port, IPv6 in [brackets] with a port [default: {DEFAULT_HOST}]
      --port N                     port to listen on [default: {DEFAULT_PORT}]
      --threads N                  executor threads [default: available cores]
      --max-line BYTES             longest accepted line [default: {}]
      --queue-lines N              most lines queued for one client [default: {}]
      --queue-bytes BYTES          most bytes queued for one client [default: {}]
      --max-clients N              most clients at once [default: {}]
      --max-per-ip N               most clients from one address [default: {}]
      --limit-loopback             apply --max-per-ip to loopback clients too
      --flood-burst N              lines a client may send at once [default: {}]
      --flood-rate LINES_PER_SEC   sustained lines per second, 0 turns flood control off [default: {}]
      --write-timeout SECS         drop a client whose socket accepts nothing this long [default: {}]
      --partial-line-timeout SECS  drop a client whose line stays unfinished this long [default: {}]
      --shutdown-grace SECS        time to flush queued lines on shutdown [default: {}]
      --keepalive SECS             TCP keepalive idle time, 0 for the system default [default: {}]
      --history N                  messages each room replays to newcomers, 0 disables [default: {}]
      --announce-limit N           largest room whose joins and leaves are announced [default: {}]
      --motd TEXT                  message of the day shown on connect
      --motd-file PATH             read the message of the day from a file
      --backlog N                  listen backlog [default: {}]
      --tls-cert PEM               serve TLS with this certificate chain (needs --tls-key){}
      --tls-key PEM                the certificate's private key
      --tls-port N                 port for TLS clients [default: {DEFAULT_TLS_PORT}]
      --tls-only                   serve TLS alone: no plain port
      --tls-handshake-timeout SECS drop a client whose TLS handshake takes this long [default: {}]
  -q, --quiet                      do not log joins and leaves
  -h, --help                       print this help
  -V, --version                    print the version
",
        d.max_line,
        d.queue_lines,
        d.queue_bytes,
        d.max_clients,
        d.max_per_ip,
        d.flood_burst,
        d.flood_rate,
        secs(d.write_timeout),
        secs(d.partial_line_timeout),
        secs(d.shutdown_grace),
        d.keepalive.map_or(0.0, secs),
        d.history,
        d.announce_limit,
        d.backlog,
        if cfg!(feature = "tls") {
            ""
        } else {
            " [this build has no TLS: rebuild with --features tls]"
        },
        secs(Tls::new("", "", ([0, 0, 0, 0], 0).into()).handshake_timeout),
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

/// A limit of zero would refuse everything, so limits must be positive.
fn positive(parser: &mut lexopt::Parser, flag: &str) -> Result<usize, UsageError> {
    value::<NonZeroUsize>(parser, flag, "a positive number").map(NonZeroUsize::get)
}

fn seconds(parser: &mut lexopt::Parser, flag: &str) -> Result<Duration, UsageError> {
    let valid = |secs: &f64| Duration::try_from_secs_f64(*secs).is_ok();
    checked(parser, flag, "a number of seconds", valid).map(Duration::from_secs_f64)
}

/// Parses the flags. `Ok(None)` means help or version was printed.
fn parse_args() -> Result<Option<Options>, UsageError> {
    use lexopt::prelude::*;
    let mut options = Options {
        host: DEFAULT_HOST.into(),
        bind_port: None,
        port: None,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        quiet: false,
        config: Config::default(),
        tls: TlsOptions::default(),
    };
    let c = &mut options.config;
    let tls = &mut options.tls;
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("bind") => {
                let bind: String = value(&mut parser, "--bind", "an address")?;
                (options.host, options.bind_port) = split_bind(&bind)?;
            }
            Long("port") => {
                options.port = Some(value(&mut parser, "--port", "a port number (0-65535)")?)
            }
            Long("threads") => options.threads = positive(&mut parser, "--threads")?,
            Long("max-line") => c.max_line = positive(&mut parser, "--max-line")?,
            Long("queue-lines") => c.queue_lines = positive(&mut parser, "--queue-lines")?,
            Long("queue-bytes") => c.queue_bytes = positive(&mut parser, "--queue-bytes")?,
            Long("max-clients") => c.max_clients = positive(&mut parser, "--max-clients")?,
            Long("max-per-ip") => c.max_per_ip = positive(&mut parser, "--max-per-ip")?,
            Long("limit-loopback") => c.limit_loopback = true,
            Long("flood-burst") => {
                c.flood_burst =
                    value::<NonZeroU32>(&mut parser, "--flood-burst", "a positive number")?.get()
            }
            Long("flood-rate") => {
                let valid = |rate: &f64| rate.is_finite() && *rate >= 0.0;
                c.flood_rate = checked(&mut parser, "--flood-rate", "lines per second", valid)?
            }
            Long("write-timeout") => c.write_timeout = seconds(&mut parser, "--write-timeout")?,
            Long("partial-line-timeout") => {
                c.partial_line_timeout = seconds(&mut parser, "--partial-line-timeout")?
            }
            Long("shutdown-grace") => c.shutdown_grace = seconds(&mut parser, "--shutdown-grace")?,
            Long("keepalive") => {
                c.keepalive = Some(seconds(&mut parser, "--keepalive")?).filter(|d| !d.is_zero())
            }
            Long("history") => c.history = value(&mut parser, "--history", "a number")?,
            Long("announce-limit") => {
                c.announce_limit = value(&mut parser, "--announce-limit", "a number")?
            }
            Long("motd") => c.motd = Some(value(&mut parser, "--motd", "text")?),
            Long("motd-file") => {
                let path: String = value(&mut parser, "--motd-file", "a path")?;
                let motd = std::fs::read_to_string(&path)
                    .map_err(|e| UsageError(format!("cannot read --motd-file '{path}': {e}")))?;
                c.motd = Some(motd);
            }
            Long("backlog") => {
                c.backlog =
                    value::<NonZeroU32>(&mut parser, "--backlog", "a positive number")?.get()
            }
            Long("tls-cert") => {
                tls.first_flag.get_or_insert("--tls-cert");
                tls.cert = Some(parser.value()?.into());
            }
            Long("tls-key") => {
                tls.first_flag.get_or_insert("--tls-key");
                tls.key = Some(parser.value()?.into());
            }
            Long("tls-port") => {
                tls.first_flag.get_or_insert("--tls-port");
                tls.port = Some(value(&mut parser, "--tls-port", "a port number (0-65535)")?);
            }
            Long("tls-only") => {
                tls.first_flag.get_or_insert("--tls-only");
                tls.only = true;
            }
            Long("tls-handshake-timeout") => {
                tls.first_flag.get_or_insert("--tls-handshake-timeout");
                let valid = |secs: &f64| *secs > 0.0 && Duration::try_from_secs_f64(*secs).is_ok();
                let flag = "--tls-handshake-timeout";
                let secs = checked(&mut parser, flag, "a positive number of seconds", valid)?;
                tls.handshake_timeout = Some(Duration::from_secs_f64(secs));
            }
            Short('q') | Long("quiet") => options.quiet = true,
            Short('h') | Long("help") => {
                print!("{}", usage());
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("smolchat {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    check_tls(&options)?;
    Ok(Some(options))
}

/// Checks that the TLS flags make sense together, and that this build can serve TLS.
fn check_tls(options: &Options) -> Result<(), UsageError> {
    let tls = &options.tls;
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
    if tls.only && (options.port.is_some() || options.bind_port.is_some()) {
        return Err(UsageError(
            "'--tls-only' serves no plain port: give its port with '--tls-port', not '--port' or '--bind'"
                .into(),
        ));
    }
    Ok(())
}

/// Splits `--bind` into host and optional port: `host`, `host:port`, `::1`, `[::1]:port`.
fn split_bind(bind: &str) -> Result<(String, Option<u16>), UsageError> {
    if bind.parse::<IpAddr>().is_ok() {
        return Ok((bind.into(), None));
    }
    if let Ok(addr) = bind.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), Some(addr.port())));
    }
    let bad = || {
        UsageError(format!(
            "invalid value '{bind}' for '--bind': expected host, host:port or [ipv6]:port"
        ))
    };
    let bracketed = bind.strip_prefix('[').and_then(|b| b.strip_suffix(']'));
    if let Some(ip) = bracketed {
        return ip
            .parse::<IpAddr>()
            .map(|_| (ip.into(), None))
            .map_err(|_| bad());
    }
    match bind.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            Ok((host.into(), Some(port.parse().map_err(|_| bad())?)))
        }
        None if !bind.is_empty() => Ok((bind.into(), None)),
        _ => Err(bad()),
    }
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(Some(options)) => options,
        Ok(None) => return ExitCode::SUCCESS,
        Err(UsageError(message)) => {
            eprintln!("smolchat: {message}\nTry 'smolchat --help' for the list of options.");
            return ExitCode::from(2);
        }
    };
    let port = options.port.or(options.bind_port).unwrap_or(DEFAULT_PORT);
    let shown = if options.host.contains(':') {
        format!("[{}]:{port}", options.host)
    } else {
        format!("{}:{port}", options.host)
    };
    let addrs: Vec<SocketAddr> = match (options.host.as_str(), port).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            eprintln!("smolchat: cannot resolve {shown}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(first) = addrs.first() else {
        eprintln!("smolchat: {shown} resolves to no address");
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
    raise_fd_limit(options.quiet);
    let server = match Server::bind(&addrs[..], config) {
        Ok(server) => server,
        // A certificate or key that cannot be used, named with its problem.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            eprintln!("smolchat: {e}");
            return ExitCode::from(2);
        }
        // The message names the address.
        Err(e) => {
            eprintln!("smolchat: {e}");
            return ExitCode::FAILURE;
        }
    };
    let version = env!("CARGO_PKG_VERSION");
    let addr = server.local_addr();
    match server.tls_addr() {
        Some(tls) if tls == addr => eprintln!(
            "smolchat {version} listening on {tls}; TLS only, connect with: \
             openssl s_client -quiet -connect {}",
            shown_addr(tls)
        ),
        tls => {
            eprintln!(
                "smolchat {version} listening on {addr}; connect with: nc {} {}",
                shown_host(addr),
                addr.port()
            );
            if let Some(tls) = tls {
                eprintln!(
                    "smolchat: TLS on {tls}; connect with: openssl s_client -quiet -connect {}",
                    shown_addr(tls)
                );
            }
        }
    }
    run(server, options.threads, options.quiet)
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

fn run(server: Server, threads: usize, quiet: bool) -> ExitCode {
    let handle = server.handle();
    let signals = match Signals::new([Signal::Int, Signal::Term]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("smolchat: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ex = Arc::new(Executor::new());
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let workers: Vec<_> = (1..threads)
        .map(|_| {
            let (ex, stopped) = (ex.clone(), stopped.clone());
            std::thread::spawn(move || smol::block_on(ex.run(stopped.recv())))
        })
        .collect();
    let events = (!quiet).then(|| handle.subscribe_presence(4096));
    smol::block_on(ex.run(async {
        ex.spawn(async move {
            let mut signals = signals;
            if signals.next().await.is_some() {
                eprintln!("smolchat: shutting down (press Ctrl-C again to quit at once)");
                handle.shutdown();
            }
            if signals.next().await.is_some() {
                eprintln!("smolchat: quitting");
                std::process::exit(130);
            }
        })
        .detach();
        if let Some(events) = events {
            ex.spawn(async move {
                while let Ok(event) = events.recv().await {
                    log(&event);
                }
            })
            .detach();
        }
        server.run(&ex, std::future::pending()).await;
    }));
    drop(stop);
    for worker in workers {
        let _ = worker.join();
    }
    eprintln!("smolchat: stopped");
    ExitCode::SUCCESS
}

fn log(event: &Event) {
    match event {
        Event::Joined { name, addr } => eprintln!("{name} joined from {addr}"),
        Event::Left { name, reason } => eprintln!("{name} left ({reason})"),
        Event::Refused { addr, reason } => eprintln!("refused {addr}: {reason}"),
        Event::Renamed { old, new } => eprintln!("{old} is now {new}"),
        _ => {}
    }
}

/// Raises the soft open-file limit to the hard one: each client needs a descriptor.
fn raise_fd_limit(quiet: bool) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) if !quiet => eprintln!(
                "smolchat: open-file limit raised to {}",
                limit.maximum.map_or("unlimited".into(), |m| m.to_string())
            ),
            Ok(()) => {}
            Err(e) => eprintln!(
                "smolchat: cannot raise the open-file limit above {}: {e}",
                limit.current.unwrap_or(0)
            ),
        }
    }
}
