//! CPU time and resident memory of processes, from /proc/PID/stat and
//! /proc/PID/status, read through the I/O seam.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use sluice::io::{Io, TokioIo};

/// Clock ticks per second of /proc's utime and stime: `USER_HZ`, which is
/// 100 on every Linux architecture the broker runs on (`getconf CLK_TCK`).
const TICKS_PER_SECOND: u64 = 100;

/// Which process: a pid, or this one.
#[derive(Debug, Clone, Copy)]
pub enum Pid {
    /// Another process.
    Other(u32),
    /// The benchmark itself.
    Myself,
}

/// User plus system CPU time a process has used so far.
pub async fn cpu_time(io: &TokioIo, pid: Pid) -> io::Result<Duration> {
    let path = match pid {
        Pid::Other(pid) => PathBuf::from(format!("/proc/{pid}/stat")),
        Pid::Myself => PathBuf::from("/proc/self/stat"),
    };
    let stat = io.read_file(&path).await?;
    let ticks = parse_stat(&String::from_utf8_lossy(&stat)).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: unexpected format", path.display()),
        )
    })?;
    Ok(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

/// utime + stime, in ticks, from the text of /proc/PID/stat. The command
/// name (field 2) is in parentheses and may hold spaces, so fields are
/// counted from the last `)`.
fn parse_stat(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A process's resident memory (`VmRSS`), bytes.
pub async fn rss_bytes(io: &TokioIo, pid: u32) -> io::Result<u64> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let status = io.read_file(&path).await?;
    parse_rss_kib(&String::from_utf8_lossy(&status))
        .map(|kib| kib * 1024)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: no VmRSS line", path.display()),
            )
        })
}

/// The `VmRSS:   1234 kB` line of /proc/PID/status, in KiB.
fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// The CPU time of several processes together.
pub async fn total(io: &TokioIo, pids: &[Pid]) -> io::Result<Duration> {
    Ok(each(io, pids).await?.into_iter().sum())
}

/// The CPU time of each of several processes, in order.
pub async fn each(io: &TokioIo, pids: &[Pid]) -> io::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(pids.len());
    for pid in pids {
        times.push(cpu_time(io, *pid).await?);
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        let line = "1234 (beam.smp (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 30 0";
        assert_eq!(parse_stat(line), Some(300));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_rss_from_status() {
        let status = "Name:\tsluice\nVmPeak:\t  9000 kB\nVmRSS:\t   4321 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status), Some(4321));
        assert_eq!(parse_rss_kib("Name:\tx\n"), None);
    }
}
