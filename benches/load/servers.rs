//! The servers under load, each in a child process (this executable with `--serve`): smolchat,
//! a trivial one that sends pre-formatted lines (the generator's ceiling), and a naive baseline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use smol::{Async, Executor};

use crate::counting::message;
use crate::workers::Workers;
use crate::{procfs, Options};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Chat,
    /// A trivial server that sends pre-formatted lines: the most the generator can count.
    Ceiling,
    /// A server in the shape of smol's chat example, for comparison in the same run.
    Naive,
}

/// A server child process: this executable with `--serve chat|ceiling|naive`.
pub struct ServerProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// A server that is already running elsewhere: no CPU or memory figures.
    pub fn running(addr: SocketAddr) -> ServerProcess {
        ServerProcess { child: None, addr }
    }

    pub fn spawn(
        target: Target,
        options: &Options,
        senders: usize,
        messages: usize,
    ) -> ServerProcess {
        ServerProcess::spawn_in(target, options, senders, messages, None)
    }

    /// [`spawn`](Self::spawn), as a node of the cluster on `redis` (a URL) if given.
    pub fn spawn_in(
        target: Target,
        options: &Options,
        senders: usize,
        messages: usize,
        redis: Option<&str>,
    ) -> ServerProcess {
        let mode = match target {
            Target::Chat => "chat",
            Target::Ceiling => "ceiling",
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
            .args(redis)
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

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// User plus system CPU time (in clock ticks of 10 ms).
    pub fn cpu(&self) -> Option<Duration> {
        procfs::cpu_time(self.pid()?).ok()
    }

    pub fn rss_kib(&self) -> Option<u64> {
        procfs::rss_kib(self.pid()?).ok()
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

/// Samples a process's RSS every 5 ms on a thread, keeping the peak.
pub struct PeakRss {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Option<u64>>>,
}

impl PeakRss {
    pub fn watch(pid: Option<u32>) -> PeakRss {
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
                peak = peak.max(procfs::rss_kib(pid).ok());
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

    pub fn stop(mut self) -> Option<u64> {
        drop(self.stop.take());
        self.thread.take()?.join().ok()?
    }
}

/// The server side, in the child process.
pub fn serve(args: &[String]) {
    let threads: usize = args.get(1).and_then(|t| t.parse().ok()).unwrap_or(1);
    let ex = Arc::new(Executor::new());
    let _workers = Workers::spawn(&ex, threads.saturating_sub(1));
    // The parent closes our stdin to stop us.
    let (stop, stopped) = async_channel::bounded::<()>(1);
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        drop(stop);
    });
    let stopped = async move {
        let _ = stopped.recv().await;
    };
    if args.first().map(String::as_str) == Some("ceiling") {
        let number = |i: usize| args.get(i).and_then(|n| n.parse().ok()).unwrap_or(1);
        return smol::block_on(ex.run(ceiling(&ex, number(2), number(3), stopped)));
    }
    if args.first().map(String::as_str) == Some("naive") {
        return smol::block_on(ex.run(naive(&ex, stopped)));
    }
    let config = smolchat::Config {
        flood_rate: 0.0,
        max_clients: 1_000_000,
        nodelay: args.get(4).map(String::as_str) != Some("delay"),
        redis: args.get(5).cloned(),
        ..smolchat::Config::default()
    };
    let server = smolchat::Server::bind("127.0.0.1:0", config).expect("bind");
    #[cfg(feature = "redis")]
    smol::block_on(server.connect_cluster(&ex)).expect("reach redis");
    println!("{}", server.local_addr());
    let _ = std::io::stdout().flush();
    smol::block_on(ex.run(server.run(&ex, stopped)));
}

/// A trivial server that sends every client the same pre-formatted lines a chat server would
/// (`senders` x `messages`), to measure the load generator alone.
async fn ceiling(
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
