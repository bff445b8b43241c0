//! The cluster scenario (`cargo bench --features redis -- cluster`): the same fanout with every
//! client on one node and with the clients split over two nodes, in the same run and through
//! the same kind of Redis; then the delay of a line from a sender on one node to readers on the
//! other. Each run starts a fresh `redis-server` (so no history is replayed from an earlier
//! run) and fresh nodes.

use std::time::{Duration, Instant};

use crate::generator::{collect, send_messages};
use crate::redis_server::RedisServer;
use crate::servers::ServerProcess;
use crate::{latency, procfs, Bench, Report, Target, LATENCY_EVERY, LATENCY_FOR, RUN_DEADLINE};

impl Bench {
    /// The scenario, or one line saying why it is skipped.
    pub async fn cluster(&self, runs: usize) {
        if !cfg!(feature = "redis") {
            println!(
                "cluster: skipped: this benchmark was built without the redis feature \
                 (cargo bench --features redis -- cluster)"
            );
            return;
        }
        if let Err(e) = RedisServer::start(&[]) {
            println!("cluster: skipped: {e}");
            return;
        }
        let (n, s, m) = (
            self.options.clients.unwrap_or(100),
            self.options.senders.unwrap_or(10),
            self.options.messages.unwrap_or(2000),
        );
        self.repeat(runs * 2, |run| self.cluster_fanout(1 + run % 2, n, s, m))
            .await;
        let readers = self.options.clients.unwrap_or(100);
        self.repeat(runs * 2, |run| self.cluster_latency(1 + run % 2, readers))
            .await;
    }

    /// `n` clients split over `nodes` nodes (alternately); the first `s` clients, all on the
    /// first node, send `m` messages each.
    async fn cluster_fanout(&self, nodes: usize, n: usize, s: usize, m: usize) -> Report {
        let redis = RedisServer::start(&[]).expect("redis-server");
        let url = redis.url();
        let servers: Vec<ServerProcess> = (0..nodes)
            .map(|_| ServerProcess::spawn_in(Target::Chat, &self.options, s, m, Some(&url)))
            .collect();
        let base = Instant::now();
        // The senders first, on node one: they do not get their own lines back.
        let mut receivers = self
            .connect_and_join(
                servers[0].addr,
                s,
                64 * 1024,
                |_| ((s - 1) * m) as u64,
                |_| 0,
            )
            .await;
        for i in 0..n - s {
            let server = &servers[i % nodes];
            let mut more = self
                .connect_and_join(server.addr, 1, 64 * 1024, |_| (s * m) as u64, |_| 0)
                .await;
            receivers.append(&mut more);
        }
        // The marker goes through Redis too: once all have it, every join notice is behind.
        self.everyone_ready(Target::Chat, servers[0].addr, &receivers)
            .await;

        let cpu = |servers: &[ServerProcess]| -> Option<Duration> {
            servers.iter().map(ServerProcess::cpu).sum()
        };
        let redis_cpu = || redis.pid().and_then(|pid| procfs::cpu_time(pid).ok());
        let (nodes_before, redis_before) = (cpu(&servers), redis_cpu());
        let started = Instant::now();
        for (i, client) in receivers.iter().take(s).enumerate() {
            let stream = client.stream.clone();
            self.ex
                .spawn(async move { send_messages(&stream, i, m, base).await })
                .detach();
        }
        let (tallies, _connections) = collect(receivers).await;
        let elapsed = tallies
            .iter()
            .filter_map(|t| t.done_at)
            .max()
            .map_or(RUN_DEADLINE, |t| t - started);
        let spent = |after: Option<Duration>, before: Option<Duration>| {
            after.zip(before).map(|(a, b)| a.saturating_sub(b))
        };
        let nodes_cpu = spent(cpu(&servers), nodes_before);
        let redis_spent = spent(redis_cpu(), redis_before);

        let lines = (s * m) as u64;
        let mut report = Report::new(
            "cluster",
            format!(
                "{n} clients on {nodes} node{} x {s} senders x {m} messages",
                if nodes == 1 { "" } else { "s" }
            ),
        );
        let deliveries = report.put_deliveries(&tallies, s, elapsed);
        if let Some(cpu) = nodes_cpu {
            report.put(
                "nodes_cpu_us_per_delivery",
                cpu.as_secs_f64() * 1e6 / deliveries.max(1) as f64,
            );
        }
        if let Some(cpu) = redis_spent {
            report.put(
                "redis_cpu_us_per_line",
                cpu.as_secs_f64() * 1e6 / lines.max(1) as f64,
            );
            report.put(
                "redis_cpu_us_per_delivery",
                cpu.as_secs_f64() * 1e6 / deliveries.max(1) as f64,
            );
        }
        report
    }

    /// One sender on the first node, `readers` clients on the last; the delay of each line.
    async fn cluster_latency(&self, nodes: usize, readers: usize) -> Report {
        let redis = RedisServer::start(&[]).expect("redis-server");
        let url = redis.url();
        let servers: Vec<ServerProcess> = (0..nodes)
            .map(|_| ServerProcess::spawn_in(Target::Chat, &self.options, 1, 0, Some(&url)))
            .collect();
        let (from, to) = (servers[0].addr, servers[nodes - 1].addr);
        let (every, duration) = (LATENCY_EVERY, LATENCY_FOR);
        let delays =
            smol::unblock(move || latency::measure_across(from, to, readers + 1, every, duration))
                .await;
        let mut samples = delays.samples;
        samples.sort_unstable();
        let pick = |q: f64| {
            let at = ((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1));
            samples.get(at).copied().unwrap_or(0)
        };
        let mut report = Report::new(
            "cluster",
            format!(
                "latency: {readers} readers, {}",
                if nodes == 1 {
                    "sender on the same node"
                } else {
                    "sender on the other node"
                }
            ),
        );
        report.put("p50_us", f64::from(pick(0.50)));
        report.put("p99_us", f64::from(pick(0.99)));
        report.put("max_us", f64::from(samples.last().copied().unwrap_or(0)));
        report.put("samples", samples.len() as f64);
        report.put("lost", delays.expected.saturating_sub(samples.len()) as f64);
        drop(servers);
        drop(redis);
        report
    }
}
