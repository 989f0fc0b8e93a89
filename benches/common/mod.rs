//! Helpers the benchmarks share: command-line arguments, DNS questions and the A records of
//! their answers, percentiles, and the memory figures of `/proc`. Each bench includes this
//! module (`mod common;`) and uses what it needs.

use std::fmt::Display;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// Whether `cargo bench` started this bench: it passes `--bench`, `cargo test --all-targets`
/// does not (there a long measurement is only built, not run). When not, says so: `bench`, run
/// it with `how`.
pub(crate) fn bench_requested(bench: &str, how: &str) -> bool {
    if std::env::args().any(|a| a == "--bench") {
        return true;
    }
    eprintln!("{bench}: run it with `{how}`");
    false
}

/// The value after `name` on the command line (`-- --services 100`).
pub(crate) fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The number after `name` on the command line, or `default`.
pub(crate) fn num(name: &str, default: usize) -> usize {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Header flag bits (the second 16-bit word): recursion desired.
pub(crate) const RD: u16 = 0x0100;

/// A DNS question for `name` (class IN) with header `flags`.
pub(crate) fn question(id: u16, flags: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

/// The A records of a reply whose answers are written with a compressed owner (two bytes), as
/// clusterdns, Knot and BIND write theirs.
pub(crate) fn answer_ips(reply: &[u8], qlen: usize) -> Vec<[u8; 4]> {
    if reply.len() < 12 {
        return vec![];
    }
    let an = u16::from_be_bytes([reply[6], reply[7]]) as usize;
    let mut p = qlen;
    let mut v = Vec::new();
    for _ in 0..an {
        if p + 12 > reply.len() {
            break;
        }
        // pointer owner (2) type class ttl rdlen (10) rdata
        let rdlen = u16::from_be_bytes([reply[p + 10], reply[p + 11]]) as usize;
        if rdlen == 4 && p + 16 <= reply.len() {
            v.push([reply[p + 12], reply[p + 13], reply[p + 14], reply[p + 15]]);
        }
        p += 12 + rdlen;
    }
    v
}

/// Asks `to` for the A records of `name`; replies to earlier questions are skipped. None when
/// no reply came within the socket's read timeout.
pub(crate) fn ask(sock: &UdpSocket, to: SocketAddr, name: &str, id: u16) -> Option<Vec<[u8; 4]>> {
    let q = question(id, 0, name, 1);
    sock.send_to(&q, to).ok()?;
    let mut buf = [0u8; 1500];
    loop {
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        if n >= 2 && buf[..2] == q[..2] {
            return Some(answer_ips(&buf[..n], q.len()));
        }
    }
}

/// The `p` quantile (0.0 to 1.0) of sorted `v`.
pub(crate) fn pct(v: &[Duration], p: f64) -> Duration {
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// `p50 …, p90 …, p99 …, max …` of the latencies `v` (sorted here) in milliseconds, two
/// decimals: the latency line the benches print.
pub(crate) fn percentiles_ms(v: &mut [Duration]) -> String {
    percentiles(v, "ms", |d| format!("{:.2}", d.as_secs_f64() * 1e3))
}

/// [`percentiles_ms`] in microseconds, one decimal.
pub(crate) fn percentiles_us(v: &mut [Duration]) -> String {
    percentiles(v, "µs", |d| format!("{:.1}", d.as_secs_f64() * 1e6))
}

fn percentiles(v: &mut [Duration], unit: &str, fmt: impl Fn(Duration) -> String) -> String {
    v.sort();
    format!(
        "p50 {} {unit}, p90 {} {unit}, p99 {} {unit}, max {} {unit}",
        fmt(pct(v, 0.5)),
        fmt(pct(v, 0.9)),
        fmt(pct(v, 0.99)),
        fmt(*v.last().unwrap())
    )
}

/// One `/proc/<pid>/status` figure in KiB (`field` with its colon, e.g. `"VmRSS:"`); `pid`
/// may be `"self"`. 0 when it cannot be read.
pub(crate) fn status_kib(pid: impl Display, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
