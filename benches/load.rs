//! Load generator and benchmark for smolchat.
//!
//! `cargo bench` runs the default set in well under a minute and prints, for every run, a human
//! line and a JSON line, then the medians. Pick scenarios and sizes after `--`:
//!
//! ```text
//! cargo bench -- fanout --clients 1000 --senders 10 --messages 100 --runs 5
//! cargo bench -- latency | idle | slow | blast | ceiling | worst | all
//! cargo bench --features redis -- cluster        # 1 node against 2 through a redis-server
//! cargo bench -- fanout --addr 127.0.0.1:8888     # a running server (no CPU or memory figures)
//! cargo bench -- --threads 1                      # server executor threads (default: cores)
//! ```
//!
//! The server runs in a child process (this executable with `--serve`), started on
//! 127.0.0.1:0 with flood control off and every other default on, so its CPU time and memory
//! come from /proc apart from the load generator's. `ceiling` replaces the chat server with a
//! trivial one that only blasts pre-formatted lines, to show the most this generator can count.
//! `blast` floods one room from two senders, to show what happens to the members who keep
//! reading (and to one that does not).
//!
//! Layout: this file reads the options and runs the scenarios; `load/scenarios.rs` holds what
//! each scenario does and reports, `load/generator.rs` the clients that send and count,
//! `load/counting.rs` the message format, `load/latency.rs` the latency readers,
//! `load/servers.rs` the server processes (smolchat, the ceiling and the naive baseline),
//! `load/cluster.rs` the cluster scenario, `load/report.rs` the output; `/proc` readers and the executor's threads are shared with the
//! tests (`tests/common/`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smol::Executor;

#[path = "load/cluster.rs"]
mod cluster;
#[path = "load/counting.rs"]
mod counting;
#[allow(dead_code)] // reason: the benchmark reports only a limit it could not raise
#[path = "../src/fd_limit.rs"]
mod fd_limit;
#[path = "load/generator.rs"]
mod generator;
#[path = "load/latency.rs"]
mod latency;
#[allow(dead_code)] // reason: the tests use readers the benchmark does not
#[path = "../tests/common/procfs.rs"]
mod procfs;
#[allow(dead_code)] // reason: the cluster scenario starts and stops Redis, nothing more
#[path = "../tests/common/redis_server.rs"]
mod redis_server;
#[path = "load/report.rs"]
mod report;
#[path = "load/scenarios.rs"]
mod scenarios;
#[path = "load/servers.rs"]
mod servers;
#[allow(dead_code)] // reason: the benchmark lets its threads stop on drop, unchecked
#[path = "../tests/common/workers.rs"]
mod workers;

use report::Report;
use servers::{serve, ServerProcess, Target};

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
    let ex = Arc::new(Executor::new());
    let _workers = workers::Workers::spawn(&ex, options.gen_threads);
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
                "ceiling", "fanout", "naive", "latency", "idle", "slow", "blast", "worst",
            ]
            .map(String::from)
            .to_vec();
        }
        o
    }
}

struct Bench {
    ex: Arc<Executor<'static>>,
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
                        self.fanout(Target::Ceiling, n, s, m, false)
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
                "blast" => {
                    // Pairs of runs, without and with a client that never reads.
                    let m = o.messages.unwrap_or(scenarios::BLAST_LINES);
                    self.repeat(o.runs.min(3) * 2, |run| self.blast(m, run % 2 == 1))
                        .await;
                }
                "worst" => {
                    let k = o.clients.unwrap_or(20);
                    self.repeat(1, |_| self.worst(k)).await;
                }
                // Not in the default set: it needs the redis feature and a redis-server.
                "cluster" => self.cluster(o.runs.min(3)).await,
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
            (Target::Chat, Some(addr)) => ServerProcess::running(addr),
            _ => ServerProcess::spawn(target, &self.options, senders, messages),
        }
    }
}

/// Raises the soft open-file limit to the hard one: the idle scenario opens thousands of sockets.
fn raise_fd_limit() {
    if let fd_limit::FdLimit::Kept(current, e) = fd_limit::raise_fd_limit() {
        eprintln!("could not raise the open-file limit above {current:?}: {e}");
    }
}
