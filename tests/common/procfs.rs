//! What Linux's `/proc` says about a process: memory, CPU time, descriptors, threads. Shared by
//! the tests and the benchmark (`benches/load.rs` includes this file).

use std::io;
use std::time::Duration;

/// Resident memory of a process, in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    status_field(pid, "VmRSS:")
}

/// Threads of a process (`Threads` in `/proc/PID/status`).
pub fn threads(pid: u32) -> io::Result<u64> {
    status_field(pid, "Threads:")
}

/// User plus system CPU time of a process, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses, and may hold spaces): utime and
    // stime are the 14th and 15th of the line.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| io::Error::other(format!("no CPU time in /proc/{pid}/stat")))
    };
    // Linux reports in clock ticks of 1/100 s on every platform it runs on.
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// Open file descriptors of a process.
pub fn open_descriptors(pid: u32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The number after `name` in `/proc/PID/status`.
fn status_field(pid: u32, name: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no {name} in /proc/{pid}/status")))
}
