//! Load generator and benchmark for smolchat.
//!
//! `cargo bench` runs the default set in well under a minute and prints, for every run, a human
//! line and a JSON line, then the medians. Pick scenarios and sizes after `--`:
//!
//! ```text
//! cargo bench -- fanout --clients 1000 --senders 10 --messages 100 --runs 5
//! cargo bench -- latency | idle | slow | ceiling | all
//! cargo bench -- fanout --addr 127.0.0.1:8888     # a running server (no CPU or memory figures)
//! cargo bench -- --threads 1                      # server executor threads (default: cores)
//! ```
//!
//! The server runs in a child process (this executable with `--serve`), started on
//! 127.0.0.1:0 with flood control off and every other default on, so its CPU time and memory
//! come from /proc apart from the load generator's. `ceiling` replaces the chat server with a
//! trivial one that only blasts pre-formatted lines, to show the most this generator can count.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use smol::{Async, Executor, Timer};

#[path = "load/counting.rs"]
mod counting;
#[path = "load/latency.rs"]
mod latency;
use counting::{message, parse, Lines, Tally};

/// The latency scenario: clients, and one message every 10 ms for 1.5 s.
const LATENCY_CLIENTS: usize = 200;
const LATENCY_EVERY: Duration = Duration::from_millis(10);
const LATENCY_FOR: Duration = Duration::from_millis(1500);

/// How long one scenario run may take before it is reported with what it lost.
const RUN_DEADLINE: Duration = Duration::from_secs(30);

fn main() {
    raise_fd_limit();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--serve") {
        return serve(&args[1..]);
    }
    let options = Options::parse(&args);
    let ex: &'static Executor<'static> = Box::leak(Box::new(Executor::new()));
    for _ in 0..options.gen_threads {
        std::thread::spawn(move || smol::block_on(ex.run(future::pending::<()>())));
    }
    let bench = Bench { ex, options };
    smol::block_on(bench.ex.run(bench.main()));
}

#[derive(Debug, Clone)]
struct Options {
    scenarios: Vec<String>,
    addr: Option<SocketAddr>,
    clients: Option<usize>,
    senders: Option<usize>,
    messages: Option<usize>,
    runs: usize,
    /// Whether `--runs` was given (the idle scenario runs once unless asked).
    runs_given: bool,
    threads: usize,
    gen_threads: usize,
    /// Whether the server sets TCP_NODELAY (`--no-nodelay` measures the lever).
    nodelay: bool,
}

impl Options {
    fn parse(args: &[String]) -> Options {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut o = Options {
            scenarios: Vec::new(),
            addr: None,
            clients: None,
            senders: None,
            messages: None,
            runs: 5,
            runs_given: false,
            threads: cores,
            gen_threads: cores,
            nodelay: true,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut number = |name: &str| -> usize {
                it.next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{name} needs a number"))
            };
            match arg.as_str() {
                "--clients" => o.clients = Some(number("--clients")),
                "--senders" => o.senders = Some(number("--senders")),
                "--messages" => o.messages = Some(number("--messages")),
                "--runs" => {
                    o.runs = number("--runs").max(1);
                    o.runs_given = true;
                }
                "--threads" => o.threads = number("--threads").max(1),
                "--gen-threads" => o.gen_threads = number("--gen-threads").max(1),
                "--no-nodelay" => o.nodelay = false,
                "--addr" => o.addr = it.next().and_then(|a| a.parse().ok()),
                s if !s.starts_with('-') => o.scenarios.push(s.to_string()),
                other => panic!("unknown option {other}"),
            }
        }
        if o.scenarios.is_empty() || o.scenarios.iter().any(|s| s == "all") {
            o.scenarios = [
                "ceiling", "fanout", "naive", "latency", "idle", "slow", "worst",
            ]
            .map(String::from)
            .to_vec();
        }
        o
    }
}

struct Bench {
    ex: &'static Executor<'static>,
    options: Options,
}

impl Bench {
    async fn main(&self) {
        let o = &self.options;
        println!(
            "smolchat load generator: {} cores, server threads {}, generator threads {}, {}",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            o.threads,
            o.gen_threads,
            o.addr
                .map_or("server in a child process".into(), |a| format!(
                    "server at {a}"
                )),
        );
        for scenario in o.scenarios.clone() {
            match scenario.as_str() {
                "fanout" => {
                    let workloads = match (o.clients, o.senders, o.messages) {
                        (None, None, None) => vec![(100, 10, 1000), (1000, 10, 100)],
                        _ => vec![self.workload(1000)],
                    };
                    for (n, s, m) in workloads {
                        self.repeat(o.runs, |_| self.fanout(Target::Chat, n, s, m, false))
                            .await;
                    }
                }
                "naive" => {
                    // Only 100 clients: at 1000 its 128-entry listen backlog (std's) overflows and
                    // connects stall in SYN retries for longer than a run may take.
                    let (n, s, m) = self.workload(1000);
                    let runs = o.runs.min(3);
                    self.repeat(runs, |_| self.fanout(Target::Naive, n, s, m, false))
                        .await;
                    self.repeat(runs, |_| self.latency(Target::Naive, LATENCY_CLIENTS))
                        .await;
                }
                // Not in the default set: the baseline stalls until the run's deadline.
                "naive-slow" => {
                    self.repeat(1, |_| self.fanout(Target::Naive, 100, 10, 6000, true))
                        .await;
                }
                "ceiling" => {
                    let (n, s, m) = self.workload(1000);
                    self.repeat(o.runs.min(3), |_| {
                        self.fanout(Target::Blast, n, s, m, false)
                    })
                    .await;
                }
                "latency" => {
                    let n = o.clients.unwrap_or(LATENCY_CLIENTS);
                    self.repeat(o.runs, |_| self.latency(Target::Chat, n)).await;
                }
                "idle" => {
                    let n = o.clients.unwrap_or(10_000);
                    let runs = if o.runs_given { o.runs } else { 1 };
                    self.repeat(runs, |_| self.idle(n)).await;
                }
                "slow" => {
                    // Pairs of runs, without and with a client that never reads.
                    let (n, s, m) = self.workload(6000);
                    self.repeat(o.runs.min(3) * 2, |run| {
                        self.fanout(Target::Chat, n, s, m, run % 2 == 1)
                    })
                    .await;
                }
                "worst" => {
                    let k = o.clients.unwrap_or(20);
                    self.repeat(1, |_| self.worst(k)).await;
                }
                other => eprintln!("unknown scenario {other}"),
            }
        }
    }

    /// Clients, senders and messages: as given, else 100 × 10 × `messages`.
    fn workload(&self, messages: usize) -> (usize, usize, usize) {
        let o = &self.options;
        (
            o.clients.unwrap_or(100),
            o.senders.unwrap_or(10),
            o.messages.unwrap_or(messages),
        )
    }

    /// Runs a scenario `runs` times and prints each run, then the medians of each workload.
    async fn repeat<F: std::future::Future<Output = Report>>(
        &self,
        runs: usize,
        run: impl Fn(usize) -> F,
    ) {
        let mut reports = Vec::new();
        for i in 0..runs {
            let report = run(i).await;
            println!("{}", report.human());
            println!("{}", report.json());
            reports.push(report);
        }
        if runs > 1 {
            for group in Report::group(&reports) {
                println!("{}", group.human_median());
                println!("{}", group.json_median());
            }
        }
    }

    /// Starts a fresh server, unless a running one was given.
    fn server(&self, target: Target, senders: usize, messages: usize) -> ServerProcess {
        match (target, self.options.addr) {
            (Target::Chat, Some(addr)) => ServerProcess { child: None, addr },
            _ => ServerProcess::spawn(target, &self.options, senders, messages),
        }
    }

    /// N clients, S of them sending M messages each as fast as they can.
    async fn fanout(
        &self,
        target: Target,
        n: usize,
        s: usize,
        m: usize,
        with_stalled: bool,
    ) -> Report {
        let server = self.server(target, s, m);
        let base = Instant::now();
        let receivers = self
            .connect_and_join(server.addr, n, 64 * 1024, |i| match target {
                Target::Chat if i < s => ((s - 1) * m) as u64,
                // Blast sends everyone everything; the naive server echoes to the sender too.
                _ => (s * m) as u64,
            })
            .await;
        // A client that never reads past its welcome: it must not slow the others.
        let stalled = if with_stalled {
            Some(self.stalled_client(server.addr).await.0)
        } else {
            None
        };
        let rss_before = server.rss_kib();
        self.everyone_ready(target, server.addr, &receivers).await;

        let peak = PeakRss::watch(server.pid());
        let cpu_before = server.cpu();
        let started = Instant::now();
        match target {
            Target::Chat | Target::Naive => {
                for (i, client) in receivers.iter().take(s).enumerate() {
                    let stream = client.stream.clone();
                    self.ex
                        .spawn(async move { send_messages(&stream, i, m, base).await })
                        .detach();
                }
            }
            Target::Blast => {
                for client in &receivers {
                    let _ = (&*client.stream).write_all(b"go\n").await;
                }
            }
        }
        let (tallies, _connections) = collect(receivers).await;
        let elapsed = tallies
            .iter()
            .filter_map(|t| t.done_at)
            .max()
            .map_or(RUN_DEADLINE, |t| t - started);
        let cpu = server
            .cpu()
            .zip(cpu_before)
            .map(|(a, b)| a.saturating_sub(b));
        let peak_growth = peak
            .stop()
            .zip(rss_before)
            .map(|(p, b)| p.saturating_sub(b));
        let stalled_dropped = match stalled {
            Some(stream) => Some(was_dropped_as_slow(stream).await),
            None => None,
        };

        let deliveries: u64 = tallies.iter().map(|t| t.payloads).sum();
        let pure: Vec<u64> = tallies
            .iter()
            .skip(if target == Target::Blast { 0 } else { s })
            .map(|t| t.order_hash)
            .collect();
        let mut report = Report::new(match (target, with_stalled) {
            (Target::Blast, _) => "ceiling",
            (Target::Chat, false) => "fanout",
            (Target::Chat, true) => "slow",
            (Target::Naive, _) => "naive",
        });
        report.workload = format!("{n} clients x {s} senders x {m} messages");
        report.put(
            "deliveries_per_sec",
            deliveries as f64 / elapsed.as_secs_f64(),
        );
        report.put("deliveries", deliveries as f64);
        report.put("lost", tallies.iter().map(Tally::lost).sum::<u64>() as f64);
        report.put(
            "duplicated_or_reordered",
            tallies.iter().map(|t| t.out_of_order).sum::<u64>() as f64,
        );
        report.put(
            "same_total_order",
            f64::from(u8::from(pure.windows(2).all(|w| w[0] == w[1]))),
        );
        report.put("seconds", elapsed.as_secs_f64());
        if let Some(cpu) = cpu {
            report.put(
                "server_cpu_us_per_delivery",
                cpu.as_secs_f64() * 1e6 / deliveries.max(1) as f64,
            );
        }
        if let Some(growth) = peak_growth {
            report.put("server_peak_rss_growth_kib", growth as f64);
        }
        if let Some(dropped) = stalled_dropped {
            report.put("stalled_client_dropped", f64::from(u8::from(dropped)));
        }
        report
    }

    /// N clients; one sends a timestamped message every [`LATENCY_EVERY`] for
    /// [`LATENCY_FOR`]; everyone measures its delay.
    async fn latency(&self, target: Target, n: usize) -> Report {
        let (every, duration) = (LATENCY_EVERY, LATENCY_FOR);
        let server = self.server(target, 1, 0);
        let cpu_before = server.cpu();
        let addr = server.addr;
        let delays = smol::unblock(move || latency::measure(addr, n, every, duration)).await;
        let cpu = server
            .cpu()
            .zip(cpu_before)
            .map(|(a, b)| a.saturating_sub(b));
        let mut samples = delays.samples;
        samples.sort_unstable();
        let pick = |q: f64| {
            let at = ((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1));
            samples.get(at).copied().unwrap_or(0)
        };
        let name = if target == Target::Naive {
            "naive"
        } else {
            "latency"
        };
        let mut report = Report::new(name);
        report.workload = format!(
            "latency: {n} clients, 1 message every {} ms for {} s",
            every.as_millis(),
            duration.as_secs_f64()
        );
        report.put("p50_us", f64::from(pick(0.50)));
        report.put("p99_us", f64::from(pick(0.99)));
        report.put("max_us", f64::from(samples.last().copied().unwrap_or(0)));
        report.put("samples", samples.len() as f64);
        report.put("lost", delays.expected.saturating_sub(samples.len()) as f64);
        if let Some(cpu) = cpu {
            // Includes connecting and joining the clients: an upper bound.
            report.put(
                "server_cpu_us_per_delivery",
                cpu.as_secs_f64() * 1e6 / samples.len().max(1) as f64,
            );
        }
        report
    }

    /// N idle clients: server memory per connection, and how long one broadcast takes to reach all.
    async fn idle(&self, n: usize) -> Report {
        let server = self.server(Target::Chat, 1, 0);
        let base = Instant::now();
        // Warm the server up, so the baseline includes its steady allocations.
        drop(self.connect_and_join(server.addr, 100, 1024, |_| 0).await);
        Timer::after(Duration::from_millis(300)).await;
        let rss_before = server.rss_kib();
        let mut report = Report::new("idle");
        report.workload = format!("{n} idle clients");

        let burst = n.min(5000);
        let started = Instant::now();
        let mut receivers = self
            .connect_and_join(server.addr, burst, 1024, |i| u64::from(i != 0))
            .await;
        report.put("burst_connects", burst as f64);
        report.put("burst_connect_seconds", started.elapsed().as_secs_f64());
        while receivers.len() < n {
            let more = (n - receivers.len()).min(5000);
            receivers.extend(self.connect_and_join(server.addr, more, 1024, |_| 1).await);
        }
        Timer::after(Duration::from_millis(300)).await;
        let rss_after = server.rss_kib();
        if let Some((after, before)) = rss_after.zip(rss_before) {
            report.put(
                "server_bytes_per_connection",
                (after.saturating_sub(before) * 1024) as f64 / n as f64,
            );
        }
        self.everyone_ready(Target::Chat, server.addr, &receivers)
            .await;
        let started = Instant::now();
        let _ = (&*receivers[0].stream)
            .write_all(&message(0, 0, base))
            .await;
        let (tallies, _connections) = collect(receivers).await;
        let reached = tallies
            .iter()
            .filter(|t| t.expected > 0 && t.payloads == t.expected)
            .count();
        let last = tallies
            .iter()
            .filter_map(|t| t.done_at)
            .max()
            .map_or(RUN_DEADLINE, |t| t - started);
        // Now every client has had a line through its queue, as clients of a live chat have.
        if let Some((after, before)) = server.rss_kib().zip(rss_before) {
            report.put(
                "server_bytes_per_connection_after_broadcast",
                (after.saturating_sub(before) * 1024) as f64 / n as f64,
            );
        }
        report.put("broadcast_reached", reached as f64);
        report.put("broadcast_ms", last.as_secs_f64() * 1e3);
        report
    }

    /// Connects `n` clients concurrently and waits until each has read its welcome.
    async fn connect_and_join(
        &self,
        addr: SocketAddr,
        n: usize,
        buffer: usize,
        expected: impl Fn(usize) -> u64,
    ) -> Vec<Receiver> {
        let (joined_tx, joined) = async_channel::unbounded();
        let mut receivers = Vec::with_capacity(n);
        let connecting: Vec<_> = (0..n)
            .map(|_| {
                self.ex
                    .spawn(async move { Async::<TcpStream>::connect(addr).await })
            })
            .collect();
        for (i, connect) in connecting.into_iter().enumerate() {
            let stream = Arc::new(connect.await.expect("connect to the server"));
            let _ = stream.get_ref().set_nodelay(true);
            let (ready_tx, ready) = async_channel::bounded(1);
            let reader = Reader {
                stream: stream.clone(),
                expected: expected(i),
                buffer,
                joined: joined_tx.clone(),
                ready: ready_tx,
            };
            let task = self.ex.spawn(reader.run());
            receivers.push(Receiver {
                stream,
                task,
                ready,
            });
        }
        drop(joined_tx);
        for _ in 0..n {
            let _ = joined.recv().await;
        }
        receivers
    }

    /// Makes sure every receiver has read everything sent before the measurement starts: a marker
    /// line broadcast after all joins arrives after all their notices.
    async fn everyone_ready(&self, target: Target, addr: SocketAddr, receivers: &[Receiver]) {
        // The control client sends the marker, then reads (and discards) until all have seen it.
        let mut ctl = None;
        if target != Target::Blast {
            let mut stream = Async::<TcpStream>::connect(addr)
                .await
                .expect("control client");
            stream.write_all(b"READY\n").await.expect("marker");
            ctl = Some(self.ex.spawn(async move {
                let mut sink = [0; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            }));
        }
        for receiver in receivers {
            let _ = receiver.ready.recv().await;
        }
        drop(ctl);
    }

    /// Clients that stop reading, each sent distinct private lines until it is dropped: the
    /// worst case for server memory. Compares the peak with the README's formula.
    async fn worst(&self, k: usize) -> Report {
        let server = self.server(Target::Chat, 1, 0);
        let mut stalled = Vec::new();
        for _ in 0..k {
            stalled.push(self.stalled_client(server.addr).await);
        }
        let names: Vec<String> = stalled.iter().map(|(_, name)| name.clone()).collect();
        let mut sender = Async::<TcpStream>::connect(server.addr)
            .await
            .expect("sender");
        let reader =
            Async::new(sender.get_ref().try_clone().expect("clone")).expect("non-blocking");
        // The sender reads everything it gets back, so only the stalled clients fall behind.
        let (synced, is_synced) = async_channel::bounded::<()>(1);
        let drain = self.ex.spawn(async move {
            let mut lines = futures_lite::io::BufReader::new(reader).lines();
            while let Some(Ok(line)) = futures_lite::StreamExt::next(&mut lines).await {
                if line.starts_with("*** rooms:") {
                    let _ = synced.try_send(());
                }
            }
        });
        Timer::after(Duration::from_millis(200)).await;
        let rss_before = server.rss_kib();
        let peak = PeakRss::watch(server.pid());
        // More than the kernel buffers for a stalled socket (about 4 MB here), then the queue.
        let text = "w".repeat(1900);
        for _ in 0..(6 << 20) / text.len() {
            let batch: String = names
                .iter()
                .map(|name| format!("/msg {name} {text}\n"))
                .collect();
            if sender.write_all(batch.as_bytes()).await.is_err() {
                break;
            }
        }
        sender.write_all(b"/rooms\n").await.expect("sync");
        let _ = future::or(async { is_synced.recv().await.map_err(drop) }, async {
            Timer::after(RUN_DEADLINE).await;
            Err(())
        })
        .await;
        let peak_growth = peak
            .stop()
            .zip(rss_before)
            .map(|(p, b)| p.saturating_sub(b));
        let checks: Vec<_> = stalled
            .into_iter()
            .map(|(stream, _)| self.ex.spawn(was_dropped_as_slow(stream)))
            .collect();
        let mut dropped = 0;
        for check in checks {
            dropped += usize::from(check.await);
        }
        drop(drain);

        let c = smolchat::Config::default();
        // The README's formula: queue, one greeting past the bound, framer, fixed costs.
        let per_client =
            c.queue_bytes + c.history * (c.max_line + 60) + 2 * (c.max_line + 4096) + 8192;
        let formula = k * per_client + (k + 1) * c.history * (c.max_line + 60);
        let mut report = Report::new("worst");
        report.workload = format!("{k} stalled clients, 6 MB of private lines each");
        report.put("stalled_clients_dropped", dropped as f64);
        if let Some(growth) = peak_growth {
            report.put("server_peak_rss_growth_kib", growth as f64);
        }
        report.put("formula_kib", (formula / 1024) as f64);
        report
    }

    async fn stalled_client(&self, addr: SocketAddr) -> (Async<TcpStream>, String) {
        // A small receive buffer, set before connecting so the window starts small: the kernel
        // then absorbs little of what the server sends, and its queue must take the rest.
        let family = if addr.is_ipv4() {
            rustix::net::AddressFamily::INET
        } else {
            rustix::net::AddressFamily::INET6
        };
        let socket =
            rustix::net::socket(family, rustix::net::SocketType::STREAM, None).expect("socket");
        rustix::net::sockopt::set_socket_recv_buffer_size(&socket, 4096).expect("SO_RCVBUF");
        rustix::net::connect(&socket, &addr).expect("stalled client");
        let mut stream = Async::new(TcpStream::from(socket)).expect("non-blocking");
        let mut welcome = Vec::new();
        let mut byte = [0];
        while !welcome.ends_with(b"users here: ") {
            stream.read_exact(&mut byte).await.expect("welcome");
            welcome.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&welcome);
        let name = text
            .rsplit("*** you are ")
            .next()
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_default();
        (stream, name.to_string())
    }
}

/// Reads what the server sent a stalled client, to see whether it was disconnected as too slow.
async fn was_dropped_as_slow(mut stream: Async<TcpStream>) -> bool {
    let mut rest = Vec::new();
    let read = future::or(stream.read_to_end(&mut rest), async {
        Timer::after(Duration::from_secs(2)).await;
        Ok(0)
    });
    let _ = read.await;
    rest.windows(19).any(|w| w == b"fell too far behind")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Chat,
    Blast,
    /// A server in the shape of smol's chat example, for comparison in the same run.
    Naive,
}

async fn send_messages(stream: &Async<TcpStream>, sender: usize, m: usize, base: Instant) {
    let mut seq = 0;
    while seq < m {
        let batch: Vec<u8> = (seq..(seq + 256).min(m))
            .flat_map(|i| message(sender, i, base))
            .collect();
        if (&*stream).write_all(&batch).await.is_err() {
            return;
        }
        seq = (seq + 256).min(m);
    }
}

struct Receiver {
    stream: Arc<Async<TcpStream>>,
    task: smol::Task<Tally>,
    ready: async_channel::Receiver<()>,
}

struct Reader {
    stream: Arc<Async<TcpStream>>,
    expected: u64,
    buffer: usize,
    joined: async_channel::Sender<()>,
    ready: async_channel::Sender<()>,
}

impl Reader {
    async fn run(self) -> Tally {
        let mut tally = Tally::new(self.expected);
        let (mut joined, mut ready) = (false, false);
        let mut buf = vec![0; self.buffer];
        let mut lines = Lines::default();
        // One timer for the whole run: registering a fresh one per read would cost more than the read.
        let mut deadline = Timer::at(Instant::now() + RUN_DEADLINE);
        let mut drained = true;
        while !(ready && tally.payloads >= tally.expected) {
            // After a short read the socket is most likely empty: wait for readiness instead of
            // paying for a read that fails with WouldBlock.
            if drained {
                let ready = future::or(self.stream.readable(), async {
                    (&mut deadline).await;
                    Err(std::io::ErrorKind::TimedOut.into())
                });
                if ready.await.is_err() {
                    break;
                }
            }
            let n = match self.stream.get_ref().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    drained = true;
                    continue;
                }
                Err(_) => break,
            };
            drained = n < buf.len();
            lines.feed(&buf[..n], |line| {
                if let Some((sender, seq, _)) = parse(line) {
                    tally.count(sender, seq);
                } else if !joined && line.starts_with(b"*** you are ") {
                    joined = true;
                    let _ = self.joined.try_send(());
                } else if !ready && line.ends_with(b": READY") {
                    ready = true;
                    let _ = self.ready.try_send(());
                }
            });
            if tally.payloads >= tally.expected && tally.done_at.is_none() && ready {
                tally.done_at = Some(Instant::now());
            }
        }
        if tally.payloads >= tally.expected && tally.done_at.is_none() {
            tally.done_at = Some(Instant::now());
        }
        tally
    }
}

async fn collect(receivers: Vec<Receiver>) -> (Vec<Tally>, Vec<Arc<Async<TcpStream>>>) {
    let mut tallies = Vec::with_capacity(receivers.len());
    let mut streams = Vec::with_capacity(receivers.len());
    for receiver in receivers {
        tallies.push(receiver.task.await);
        // Keep every connection open until all have finished, so no one leaves mid-run.
        streams.push(receiver.stream);
    }
    (tallies, streams)
}

/// A server child process: this executable with `--serve chat|blast`.
struct ServerProcess {
    child: Option<Child>,
    addr: SocketAddr,
}

impl ServerProcess {
    fn spawn(target: Target, options: &Options, senders: usize, messages: usize) -> ServerProcess {
        let mode = match target {
            Target::Chat => "chat",
            Target::Blast => "blast",
            Target::Naive => "naive",
        };
        let exe = std::env::current_exe().expect("own path");
        let mut child = Command::new(exe)
            .args([
                "--serve",
                mode,
                &options.threads.to_string(),
                &senders.to_string(),
                &messages.to_string(),
                if options.nodelay { "nodelay" } else { "delay" },
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server process");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("server address");
        let addr = line.trim().parse().expect("server address");
        ServerProcess {
            child: Some(child),
            addr,
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// User plus system CPU time, from /proc (clock ticks of 10 ms).
    fn cpu(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(Duration::from_millis(ticks * 10))
    }

    fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid()?)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take()); // the server shuts down when its stdin closes
            let _ = child.wait();
        }
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Samples a process's RSS every 5 ms on a thread, keeping the peak.
struct PeakRss {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Option<u64>>>,
}

impl PeakRss {
    fn watch(pid: Option<u32>) -> PeakRss {
        let Some(pid) = pid else {
            return PeakRss {
                stop: None,
                thread: None,
            };
        };
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut peak = None;
            loop {
                peak = peak.max(rss_kib(pid));
                match stopped.recv_timeout(Duration::from_millis(5)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return peak,
                }
            }
        });
        PeakRss {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> Option<u64> {
        drop(self.stop.take());
        self.thread.take()?.join().ok()?
    }
}

/// One run's figures.
#[derive(Debug, Clone)]
struct Report {
    scenario: &'static str,
    workload: String,
    figures: Vec<(&'static str, f64)>,
}

impl Report {
    fn new(scenario: &'static str) -> Report {
        Report {
            scenario,
            workload: String::new(),
            figures: Vec::new(),
        }
    }

    fn put(&mut self, name: &'static str, value: f64) {
        self.figures.push((name, value));
    }

    fn human(&self) -> String {
        let figures: Vec<String> = self
            .figures
            .iter()
            .map(|(k, v)| format!("{k}={}", pretty(*v)))
            .collect();
        format!(
            "{:8} {:42} {}",
            self.scenario,
            self.workload,
            figures.join(" ")
        )
    }

    fn json(&self) -> String {
        let figures: Vec<String> = self
            .figures
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!(
            "{{\"scenario\":\"{}\",\"workload\":\"{}\",{}}}",
            self.scenario,
            self.workload,
            figures.join(",")
        )
    }

    /// Groups runs by scenario and workload, in order of first appearance.
    fn group(reports: &[Report]) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        for report in reports {
            match groups.iter_mut().find(|g| {
                g.runs[0].scenario == report.scenario && g.runs[0].workload == report.workload
            }) {
                Some(group) => group.runs.push(report.clone()),
                None => groups.push(Group {
                    runs: vec![report.clone()],
                }),
            }
        }
        groups
    }
}

struct Group {
    runs: Vec<Report>,
}

impl Group {
    fn medians(&self) -> Vec<(&'static str, f64)> {
        self.runs[0]
            .figures
            .iter()
            .map(|(name, _)| {
                let mut values: Vec<f64> = self
                    .runs
                    .iter()
                    .filter_map(|r| r.figures.iter().find(|(n, _)| n == name))
                    .map(|(_, v)| *v)
                    .collect();
                values.sort_by(f64::total_cmp);
                (*name, values[values.len() / 2])
            })
            .collect()
    }

    fn human_median(&self) -> String {
        let figures: Vec<String> = self
            .medians()
            .iter()
            .map(|(k, v)| format!("{k}={}", pretty(*v)))
            .collect();
        format!(
            "MEDIAN of {} {} {}: {}",
            self.runs.len(),
            self.runs[0].scenario,
            self.runs[0].workload,
            figures.join(" ")
        )
    }

    fn json_median(&self) -> String {
        let figures: Vec<String> = self
            .medians()
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!(
            "{{\"median_of\":{},\"scenario\":\"{}\",\"workload\":\"{}\",{}}}",
            self.runs.len(),
            self.runs[0].scenario,
            self.runs[0].workload,
            figures.join(",")
        )
    }
}

fn pretty(v: f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// The server side, in the child process.
fn serve(args: &[String]) {
    let threads: usize = args.get(1).and_then(|t| t.parse().ok()).unwrap_or(1);
    let ex = Arc::new(Executor::new());
    for _ in 1..threads {
        let ex = ex.clone();
        std::thread::spawn(move || smol::block_on(ex.run(future::pending::<()>())));
    }
    // The parent closes our stdin to stop us.
    let (stop, stopped) = async_channel::bounded::<()>(1);
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        drop(stop);
    });
    let stopped = async move {
        let _ = stopped.recv().await;
    };
    if args.first().map(String::as_str) == Some("blast") {
        let number = |i: usize| args.get(i).and_then(|n| n.parse().ok()).unwrap_or(1);
        return smol::block_on(ex.run(blast(&ex, number(2), number(3), stopped)));
    }
    if args.first().map(String::as_str) == Some("naive") {
        return smol::block_on(ex.run(naive(&ex, stopped)));
    }
    let config = smolchat::Config {
        flood_rate: 0.0,
        max_clients: 1_000_000,
        nodelay: args.get(4).map(String::as_str) != Some("delay"),
        ..smolchat::Config::default()
    };
    let server = smolchat::Server::bind("127.0.0.1:0", config).expect("bind");
    println!("{}", server.local_addr());
    let _ = std::io::stdout().flush();
    smol::block_on(ex.run(server.run(&ex, stopped)));
}

/// A trivial server that sends every client the same pre-formatted lines a chat server would
/// (`senders` x `messages`), to measure the load generator alone.
async fn blast(
    ex: &Executor<'_>,
    senders: usize,
    messages: usize,
    stopped: impl std::future::Future<Output = ()>,
) {
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).expect("bind");
    println!("{}", listener.get_ref().local_addr().expect("address"));
    let _ = std::io::stdout().flush();
    let base = Instant::now();
    let lines: Vec<u8> = (0..messages)
        .flat_map(|seq| (0..senders).map(move |sender| (sender, seq)))
        .flat_map(|(sender, seq)| {
            [
                format!("guest{sender}: ").into_bytes(),
                message(sender, seq, base),
            ]
            .concat()
        })
        .collect();
    let lines = Arc::new(lines);
    let accept = async {
        let mut n = 0;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            n += 1;
            let lines = lines.clone();
            ex.spawn(async move {
                let hello = format!("*** you are blast{n} in #lobby; users here: 1\nctl: READY\n");
                stream.write_all(hello.as_bytes()).await?;
                let mut go = [0; 3];
                stream.read_exact(&mut go).await?;
                stream.write_all(&lines).await?;
                let mut rest = Vec::new();
                stream.read_to_end(&mut rest).await.map(drop)
            })
            .detach();
        }
    };
    future::or(accept, stopped).await;
}

/// What a naive server's connection tasks tell its broker.
enum NaiveEvent {
    Join(usize, Arc<Async<TcpStream>>),
    Leave(usize),
    Message(usize, String),
}

/// A server in the shape of smol's chat example: one broker task owns every socket and writes
/// each line to each client in turn, awaiting every write. Same line format as smolchat.
async fn naive(ex: &Executor<'_>, stopped: impl std::future::Future<Output = ()>) {
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).expect("bind");
    println!("{}", listener.get_ref().local_addr().expect("address"));
    let _ = std::io::stdout().flush();
    let (events, broker_events) = async_channel::bounded::<NaiveEvent>(100);
    ex.spawn(async move {
        let mut clients = std::collections::HashMap::new();
        while let Ok(event) = broker_events.recv().await {
            let line = match event {
                NaiveEvent::Join(id, stream) => {
                    let welcome = format!("*** you are guest{id} in #lobby; users here: 1\n");
                    let _ = (&*stream).write_all(welcome.as_bytes()).await;
                    clients.insert(id, stream);
                    format!("*** guest{id} joined\n")
                }
                NaiveEvent::Leave(id) => {
                    clients.remove(&id);
                    format!("*** guest{id} left\n")
                }
                NaiveEvent::Message(id, text) => format!("guest{id}: {text}\n"),
            };
            for stream in clients.values() {
                let _ = (&**stream).write_all(line.as_bytes()).await;
            }
        }
    })
    .detach();
    let accept = async {
        let mut id = 0;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            id += 1;
            let (stream, events) = (Arc::new(stream), events.clone());
            ex.spawn(async move {
                let _ = events.send(NaiveEvent::Join(id, stream.clone())).await;
                let mut lines = futures_lite::io::BufReader::new(&*stream).lines();
                while let Some(Ok(line)) = futures_lite::StreamExt::next(&mut lines).await {
                    let _ = events.send(NaiveEvent::Message(id, line)).await;
                }
                let _ = events.send(NaiveEvent::Leave(id)).await;
            })
            .detach();
        }
    };
    future::or(accept, stopped).await;
}

/// Raises the soft open-file limit to the hard one: the idle scenario opens thousands of sockets.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )
    .is_err()
    {
        eprintln!(
            "could not raise the open-file limit above {:?}",
            limit.current
        );
    }
}
