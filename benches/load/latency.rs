//! The latency scenario's receivers: one plain thread reading every client through
//! level-triggered epoll, one read per ready socket. It costs far less per delivery than an async
//! reader per client (measured: p99 about a quarter lower on the same server), so on two shared
//! cores more of each measured delay is the server's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::epoll;

use crate::counting::{message, parse, Lines};

/// Gives up waiting for the clients to be ready after this long.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// Delays measured by [`measure`], in microseconds, and how many were due.
pub struct Delays {
    pub samples: Vec<u32>,
    pub expected: usize,
}

/// Connects `n` clients; the first sends a timestamped message every `every` for `duration`;
/// the others record how long each took to arrive.
pub fn measure(addr: SocketAddr, n: usize, every: Duration, duration: Duration) -> Delays {
    measure_across(addr, addr, n, every, duration)
}

/// [`measure`] with the sender on `from` and the others on `to` (two nodes of a cluster).
pub fn measure_across(
    from: SocketAddr,
    to: SocketAddr,
    n: usize,
    every: Duration,
    duration: Duration,
) -> Delays {
    let addr = from;
    let base = Instant::now();
    let count = (duration.as_micros() / every.as_micros()) as usize;
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let addr = if i == 0 { from } else { to };
        let stream = TcpStream::connect(addr).expect("connect to the server");
        let _ = stream.set_nodelay(true);
        // Each reads its welcome before the next connects, so all have joined.
        let mut reader = BufReader::new(stream.try_clone().expect("clone a socket"));
        let mut line = String::new();
        while !line.starts_with("*** you are") {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("the server closed a connection during its welcome");
            }
        }
        let mut lines = Lines::default();
        lines.feed(reader.buffer(), |_| {});
        clients.push((stream, lines));
    }
    let mut sender = clients.remove(0).0;

    let ready = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (ready, stop) = (ready.clone(), stop.clone());
        std::thread::spawn(move || read_all(clients, base, &ready, &stop))
    };
    // A marker broadcast after every join: once all have seen it, nothing older is in flight.
    let mut ctl = TcpStream::connect(addr).expect("control client");
    ctl.write_all(b"READY\n").expect("marker");
    let deadline = Instant::now() + READY_DEADLINE;
    while ready.load(Ordering::Relaxed) < n - 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let start = Instant::now();
    for seq in 0..count {
        std::thread::sleep((start + every * seq as u32).saturating_duration_since(Instant::now()));
        if sender.write_all(&message(0, seq, base)).is_err() {
            break;
        }
    }
    // The last message's deliveries.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let samples = reader.join().unwrap_or_default();
    drop(ctl);
    Delays {
        samples,
        expected: count * (n - 1),
    }
}

fn read_all(
    mut clients: Vec<(TcpStream, Lines)>,
    base: Instant,
    ready: &AtomicUsize,
    stop: &AtomicBool,
) -> Vec<u32> {
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll");
    for (i, (stream, _)) in clients.iter().enumerate() {
        stream.set_nonblocking(true).expect("non-blocking");
        epoll::add(
            &ep,
            stream,
            epoll::EventData::new_u64(i as u64),
            epoll::EventFlags::IN,
        )
        .expect("epoll add");
    }
    let mut is_ready = vec![false; clients.len()];
    let mut samples = Vec::new();
    let mut events = Vec::with_capacity(512);
    let mut buf = vec![0; 64 * 1024];
    let timeout = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 50_000_000,
    };
    while !stop.load(Ordering::Relaxed) {
        events.clear();
        if epoll::wait(
            &ep,
            rustix::buffer::spare_capacity(&mut events),
            Some(&timeout),
        )
        .is_err()
        {
            continue;
        }
        for event in &events {
            let i = event.data.u64() as usize;
            let (stream, lines) = &mut clients[i];
            // Level-triggered: one read now; anything left makes the socket ready again.
            let Ok(got) = stream.read(&mut buf) else {
                continue;
            };
            let now_ns = base.elapsed().as_nanos() as u64;
            lines.feed(&buf[..got], |line| {
                if let Some((_, _, sent_ns)) = parse(line) {
                    samples.push((now_ns.saturating_sub(sent_ns) / 1000) as u32);
                } else if !is_ready[i] && line.ends_with(b": READY") {
                    is_ready[i] = true;
                    ready.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
    samples
}
