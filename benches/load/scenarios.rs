//! What each scenario does and reports.

use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::{AsyncBufReadExt, AsyncWriteExt};
use smol::{Async, Timer};
use std::net::TcpStream;

use crate::counting::{message, Tally};
use crate::generator::{
    collect, send_messages, send_padded, was_dropped_as_slow, HeldBack, SENDER_NAME,
};
use crate::servers::PeakRss;
use crate::{latency, Bench, Report, Target, LATENCY_EVERY, LATENCY_FOR, RUN_DEADLINE};

/// The blast scenario: senders, readers, the bytes of each line's text (padding, then a counted
/// message), and the lines each sender writes unless `--messages` says otherwise (10 MB).
const BLAST_SENDERS: usize = 2;
const BLAST_READERS: usize = 10;
const BLAST_LINE: usize = 200;
pub const BLAST_LINES: usize = 50_000;

impl Bench {
    /// N clients, S of them sending M messages each as fast as they can.
    pub async fn fanout(
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
            .connect_and_join(
                server.addr,
                n,
                64 * 1024,
                |i| match target {
                    Target::Chat if i < s => ((s - 1) * m) as u64,
                    // The ceiling sends everyone everything; the naive server echoes to the sender too.
                    _ => (s * m) as u64,
                },
                |_| 0,
            )
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
            Target::Ceiling => {
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

        let mut report = Report::new(
            match (target, with_stalled) {
                (Target::Ceiling, _) => "ceiling",
                (Target::Chat, false) => "fanout",
                (Target::Chat, true) => "slow",
                (Target::Naive, _) => "naive",
            },
            format!("{n} clients x {s} senders x {m} messages"),
        );
        let receivers = if target == Target::Ceiling { 0 } else { s };
        let deliveries = report.put_deliveries(&tallies, receivers, elapsed);
        report.put("deliveries", deliveries as f64);
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
    pub async fn latency(&self, target: Target, n: usize) -> Report {
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
        let mut report = Report::new(
            name,
            format!(
                "latency: {n} clients, 1 message every {} ms for {} s",
                every.as_millis(),
                duration.as_secs_f64()
            ),
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
    pub async fn idle(&self, n: usize) -> Report {
        let server = self.server(Target::Chat, 1, 0);
        let base = Instant::now();
        // Warm the server up, so the baseline includes its steady allocations.
        drop(
            self.connect_and_join(server.addr, 100, 1024, |_| 0, |_| 0)
                .await,
        );
        Timer::after(Duration::from_millis(300)).await;
        let rss_before = server.rss_kib();
        let mut report = Report::new("idle", format!("{n} idle clients"));

        let burst = n.min(5000);
        let started = Instant::now();
        let mut receivers = self
            .connect_and_join(server.addr, burst, 1024, |i| u64::from(i != 0), |_| 0)
            .await;
        report.put("burst_connects", burst as f64);
        report.put("burst_connect_seconds", started.elapsed().as_secs_f64());
        while receivers.len() < n {
            let more = (n - receivers.len()).min(5000);
            receivers.extend(
                self.connect_and_join(server.addr, more, 1024, |_| 1, |_| 0)
                    .await,
            );
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

    /// worst case for server memory. Compares the peak with the README's formula.
    pub async fn worst(&self, k: usize) -> Report {
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
        let mut report = Report::new(
            "worst",
            format!("{k} stalled clients, 6 MB of private lines each"),
        );
        report.put("stalled_clients_dropped", dropped as f64);
        if let Some(growth) = peak_growth {
            report.put("server_peak_rss_growth_kib", growth as f64);
        }
        report.put("formula_kib", (formula / 1024) as f64);
        report
    }

    /// [`BLAST_SENDERS`] clients write `m` lines of [`BLAST_LINE`] bytes each as fast as their
    /// sockets take them, to a room whose [`BLAST_READERS`] other members read as fast as they
    /// can; with `with_stalled`, one more member never reads. Whether everyone who keeps
    /// reading gets every line, and what that costs: clients disconnected, server memory, and
    /// how long the senders were held back.
    pub async fn blast(&self, m: usize, with_stalled: bool) -> Report {
        let (s, n) = (BLAST_SENDERS, BLAST_SENDERS + BLAST_READERS);
        let server = self.server(Target::Chat, s, m);
        let base = Instant::now();
        // The senders read too (each other's lines), so only the stalled client falls behind.
        // Everyone reads until each sender has ended: sent all its lines, or been disconnected.
        let receivers = self
            .connect_and_join(
                server.addr,
                n,
                64 * 1024,
                |i| (if i < s { (s - 1) * m } else { s * m }) as u64,
                |i| if i < s { s - 1 } else { s },
            )
            .await;
        for (i, sender) in receivers.iter().take(s).enumerate() {
            let rename = format!("/nick {SENDER_NAME}{i}\n");
            (&*sender.stream)
                .write_all(rename.as_bytes())
                .await
                .expect("rename a sender");
        }
        let stalled = if with_stalled {
            Some(self.stalled_client(server.addr).await.0)
        } else {
            None
        };
        let rss_before = server.rss_kib();
        self.everyone_ready(Target::Chat, server.addr, &receivers)
            .await;

        let peak = PeakRss::watch(server.pid());
        let started = Instant::now();
        let mut senders = Vec::new();
        for (i, client) in receivers.iter().take(s).enumerate() {
            let stream = client.stream.clone();
            let held = std::sync::Arc::new(HeldBack::starting_now());
            senders.push(held.clone());
            let pad = BLAST_LINE - crate::counting::PAYLOAD;
            self.ex
                .spawn(async move { send_padded(&stream, i, m, pad, base, &held).await })
                .detach();
        }
        let (tallies, _connections) = collect(receivers).await;
        let held_back = senders
            .iter()
            .map(|h| h.longest())
            .max()
            .unwrap_or_default();
        let elapsed = tallies
            .iter()
            .filter_map(|t| t.done_at)
            .max()
            .map_or(RUN_DEADLINE, |t| t - started);
        let peak_growth = peak
            .stop()
            .zip(rss_before)
            .map(|(p, b)| p.saturating_sub(b));
        let stalled_dropped = match stalled {
            Some(stream) => Some(was_dropped_as_slow(stream).await),
            None => None,
        };

        let mut delivered: Vec<f64> = tallies[s..]
            .iter()
            .map(|t| 100.0 * t.payloads as f64 / t.expected.max(1) as f64)
            .collect();
        delivered.sort_by(f64::total_cmp);
        let mut report = Report::new(
            "blast",
            format!(
                "{s} senders x {m} lines of {BLAST_LINE} bytes, {BLAST_READERS} readers{}",
                if with_stalled { ", 1 never reads" } else { "" }
            ),
        );
        report.put("delivered_pct_min", delivered[0]);
        report.put("delivered_pct_median", delivered[delivered.len() / 2]);
        let disconnected = |tallies: &[Tally]| tallies.iter().filter(|t| t.disconnected).count();
        report.put("readers_disconnected", disconnected(&tallies[s..]) as f64);
        report.put("senders_disconnected", disconnected(&tallies[..s]) as f64);
        if let Some(dropped) = stalled_dropped {
            report.put("stalled_client_dropped", f64::from(u8::from(dropped)));
        }
        if let Some(growth) = peak_growth {
            report.put("server_peak_rss_growth_kib", growth as f64);
        }
        report.put("senders_held_back_ms", held_back.as_secs_f64() * 1e3);
        report.put("seconds", elapsed.as_secs_f64());
        report
    }
}
