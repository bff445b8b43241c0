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

/// Bytes that arrived on loopback TCP connections to `port` from sockets of process `pid`,
/// not yet read by whoever listens on `port` (`rx_queue` in `/proc/net/tcp`): what `pid` sent
/// to a stopped server.
pub fn unread_from(pid: u32, port: u16) -> io::Result<u64> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let target = std::fs::read_link(fd?.path()).unwrap_or_default();
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
        {
            inodes.insert(inode.to_owned());
        }
    }
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    // local port, remote port, unread bytes, inode
    let rows: Vec<(u16, u16, u64, &str)> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = |addr: &str| u16::from_str_radix(addr.split_once(':')?.1, 16).ok();
            let rx = fields.get(4)?.split_once(':')?.1;
            Some((
                port(fields.get(1)?)?,
                port(fields.get(2)?)?,
                u64::from_str_radix(rx, 16).ok()?,
                *fields.get(9)?,
            ))
        })
        .collect();
    let ours: std::collections::HashSet<u16> = rows
        .iter()
        .filter(|(_, remote, _, inode)| *remote == port && inodes.contains(*inode))
        .map(|(local, ..)| *local)
        .collect();
    Ok(rows
        .iter()
        .filter(|(local, remote, ..)| *local == port && ours.contains(remote))
        .map(|(_, _, rx, _)| rx)
        .sum())
}
