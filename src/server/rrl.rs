//! Response rate limiting per client, decided per query before any work is done for it (as
//! Knot 3.4's `rrl` module): a fixed table of token buckets keyed by the client's address (or
//! its /24, /56 when aggregation is configured), no allocation per query but a chunk's first
//! (the table's chunks are made as clients first fall into them), memory bounded by its size.
//!
//! Each bucket is a GCRA (generic cell rate algorithm) cell: one "theoretical arrival time" per
//! client. A response is due every `1/rate`; a client may be up to `burst` responses ahead of
//! that schedule. That is a token bucket of `burst` tokens refilled at `rate`, kept in one
//! integer.
//!
//! The table is split into sets of [`WAYS`] entries, each behind its own lock (uncontended
//! unless two workers serve clients of the same set at the same instant). A client not in its
//! set replaces the entry furthest behind schedule: an idle client's entry holds a full bucket,
//! the same as no entry, so nothing is lost by reusing it; only a churn of more busy clients
//! than the table holds can make a limited client start over with a full bucket.
//!
//! Limited UDP responses slip (BIND's `slip`): every `slip`-th one goes out empty with TC set
//! (RFC 1035 §4.1.1: "TC ... this message was truncated"), so a real client retries over TCP
//! at once instead of waiting for its timeout; the others are dropped. The counter is per
//! client, so "every Nth" is exact, not a probability.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::{IpPrefix, RateLimitConfig};

/// Entries per set.
const WAYS: usize = 4;
/// Clients named in the periodic log line.
const TOP: usize = 5;

/// What to do with one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the client's rate: answer it.
    Answer,
    /// Over the rate: no reply.
    Drop,
    /// Over the rate, and this one slips: an empty reply with TC set (UDP only).
    Slip,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// The client (see [`key_of`]); meaningful only when [`Entry::used`].
    key: u128,
    /// When the client's next response is due on its schedule (ns since the table's epoch;
    /// never 0 once used, so 0 marks an entry never used).
    tat: u64,
    /// Limited responses, for the slip counter.
    limited: u32,
    /// Limited responses since the last log line.
    window: u32,
}

impl Entry {
    fn used(&self) -> bool {
        self.tat != 0
    }
}

/// One set of [`WAYS`] entries under one lock.
type Set = Mutex<[Entry; WAYS]>;

/// Sets per chunk of the table. Chunks are made when a client first falls into one, so a server
/// with few clients keeps few pages of the table resident (a chunk is 9 KiB).
const CHUNK: usize = 64;

/// The bucket table: sized once, shared across reloads that keep its shape.
pub struct Table {
    /// The sets, [`CHUNK`] to a chunk, each chunk made on first use.
    chunks: Box<[std::sync::OnceLock<Box<[Set]>>]>,
    /// Sets in a chunk (fewer than [`CHUNK`] in a small table).
    chunk: usize,
    mask: usize,
    seed: u64,
    epoch: Instant,
    /// When the last log line was written (ns since `epoch`; the table's making counts as one,
    /// so a report covers a whole interval).
    last_log: AtomicU64,
    /// The shape the table was made for: prefix lengths and size.
    shape: (u8, u8, usize),
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("entries", &self.entries())
            .finish()
    }
}

/// The rate limiter of one engine: its settings and the (possibly inherited) table.
#[derive(Debug)]
pub struct RateLimiter {
    table: std::sync::Arc<Table>,
    /// Nanoseconds between two responses at the sustained rate.
    interval: u64,
    /// How far ahead of schedule a client may be: `burst` intervals.
    tolerance: u64,
    slip: u32,
    exempt: Vec<IpPrefix>,
    log_interval: Duration,
}

/// The table key of a client: its address cut to the configured prefix. IPv4 keys live in
/// the IPv4-mapped range, which no IPv6 client has (our IPv6 sockets are `IPV6_V6ONLY`).
fn key_of(ip: IpAddr, v4_len: u8, v6_len: u8) -> u128 {
    match ip {
        IpAddr::V4(a) => {
            let host = 32 - u32::from(v4_len);
            let bits = if host >= 32 {
                0
            } else {
                u32::from(a) >> host << host
            };
            0xffff_0000_0000 | u128::from(bits)
        }
        IpAddr::V6(a) => {
            let host = 128 - u32::from(v6_len);
            let bits = u128::from(a);
            if host >= 128 { 0 } else { bits >> host << host }
        }
    }
}

/// The client a key stands for, as a prefix when aggregated.
fn show_key(key: u128, v4_len: u8, v6_len: u8) -> String {
    if key >> 32 == 0xffff {
        let a = Ipv4Addr::from(key as u32);
        if v4_len == 32 {
            a.to_string()
        } else {
            format!("{a}/{v4_len}")
        }
    } else {
        let a = Ipv6Addr::from(key);
        if v6_len == 128 {
            a.to_string()
        } else {
            format!("{a}/{v6_len}")
        }
    }
}

impl Table {
    fn new(c: &RateLimitConfig) -> Table {
        let sets = (c.table_size / WAYS).max(1).next_power_of_two();
        let chunk = sets.min(CHUNK);
        Table {
            chunks: (0..sets / chunk)
                .map(|_| std::sync::OnceLock::new())
                .collect(),
            chunk,
            mask: sets - 1,
            seed: fastrand::u64(..),
            epoch: Instant::now(),
            last_log: AtomicU64::new(1),
            shape: (c.ipv4_prefix, c.ipv6_prefix, c.table_size),
        }
    }

    /// Entries the table holds at the most.
    fn entries(&self) -> usize {
        self.chunks.len() * self.chunk * WAYS
    }

    /// Set `i`, its chunk made if it is the first use.
    fn set(&self, i: usize) -> &Set {
        let chunk = self.chunks[i / self.chunk].get_or_init(|| {
            (0..self.chunk)
                .map(|_| Mutex::new([Entry::default(); WAYS]))
                .collect()
        });
        &chunk[i % self.chunk]
    }

    fn set_of(&self, key: u128) -> usize {
        // A keyed mix (splitmix64's finaliser): clients cannot aim at one set.
        let mut x = (key as u64) ^ ((key >> 64) as u64).rotate_left(29) ^ self.seed;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        (x as usize) & self.mask
    }
}

impl RateLimiter {
    /// The limiter `c` asks for, keeping `prev`'s table (the clients' state) when its shape
    /// is the same, so a reload does not hand every flooder a fresh burst.
    pub fn new(c: &RateLimitConfig, exempt: &[IpPrefix], prev: Option<&RateLimiter>) -> Self {
        let shape = (c.ipv4_prefix, c.ipv6_prefix, c.table_size);
        let table = match prev {
            Some(p) if p.table.shape == shape => p.table.clone(),
            _ => std::sync::Arc::new(Table::new(c)),
        };
        let interval = 1_000_000_000 / u64::from(c.responses_per_second.max(1));
        RateLimiter {
            table,
            interval,
            tolerance: interval * u64::from(c.burst.max(1)),
            slip: c.slip,
            exempt: exempt.to_vec(),
            log_interval: c.log_interval,
        }
    }

    /// `new`'s settings on `prev`'s table when the shapes match (a reload), else `new` as is.
    pub(crate) fn new_like(new: &RateLimiter, prev: &RateLimiter) -> RateLimiter {
        let table = if new.table.shape == prev.table.shape {
            prev.table.clone()
        } else {
            new.table.clone()
        };
        RateLimiter {
            table,
            interval: new.interval,
            tolerance: new.tolerance,
            slip: new.slip,
            exempt: new.exempt.clone(),
            log_interval: new.log_interval,
        }
    }

    /// The verdict on one response to `ip` at `now`. Takes one set's lock; allocates nothing.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Verdict {
        if self.exempt.iter().any(|p| p.contains(ip)) {
            return Verdict::Answer;
        }
        let t = &*self.table;
        let key = key_of(ip, t.shape.0, t.shape.1);
        let now_ns = u64::try_from(now.saturating_duration_since(t.epoch).as_nanos())
            .unwrap_or(u64::MAX)
            // Never 0: a schedule at 0 is a bucket that was never used.
            .max(1);
        let mut set = t
            .set(t.set_of(key))
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let slot = match set.iter().position(|e| e.used() && e.key == key) {
            Some(i) => i,
            None => {
                // The entry furthest behind schedule: unused, or idle (a full bucket).
                let i = (0..WAYS).min_by_key(|&i| set[i].tat).unwrap_or(0);
                set[i] = Entry {
                    key,
                    tat: now_ns,
                    limited: 0,
                    window: 0,
                };
                i
            }
        };
        let e = &mut set[slot];
        let next = e.tat.max(now_ns) + self.interval;
        if next <= now_ns + self.tolerance {
            e.tat = next;
            return Verdict::Answer;
        }
        e.limited = e.limited.wrapping_add(1);
        e.window = e.window.saturating_add(1);
        let slip = self.slip != 0 && e.limited.is_multiple_of(self.slip);
        drop(set);
        self.maybe_log(now_ns);
        if slip { Verdict::Slip } else { Verdict::Drop }
    }

    /// At most once per `log_interval`: one line naming the most limited clients since the
    /// last one (called only on the limited path, so a quiet server never scans).
    fn maybe_log(&self, now_ns: u64) {
        let t = &*self.table;
        let last = t.last_log.load(Ordering::Relaxed);
        let every = u64::try_from(self.log_interval.as_nanos()).unwrap_or(u64::MAX);
        if now_ns.saturating_sub(last) < every {
            return;
        }
        if t.last_log
            .compare_exchange(last, now_ns, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let (top, total) = self.take_top();
        if total == 0 {
            return;
        }
        let (v4, v6) = (t.shape.0, t.shape.1);
        let clients: Vec<String> = top
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, k)| format!("{} ({n})", show_key(*k, v4, v6)))
            .collect();
        tracing::warn!(
            limited = total,
            clients = %clients.join(", "),
            "rate limited clients (responses dropped or truncated since the last report)"
        );
    }

    /// The [`TOP`] clients with the most limited responses since the last call, and the
    /// total; their counts start over.
    fn take_top(&self) -> ([(u32, u128); TOP], u64) {
        let mut top = [(0u32, 0u128); TOP];
        let mut total = 0u64;
        // Chunks never made hold no client.
        let made = self.table.chunks.iter().filter_map(|c| c.get());
        for set in made.flat_map(|c| c.iter()) {
            let mut set = set.lock().unwrap_or_else(|e| e.into_inner());
            for e in set.iter_mut().filter(|e| e.used() && e.window > 0) {
                total += u64::from(e.window);
                if let Some(min) = (0..TOP).min_by_key(|&i| top[i].0)
                    && top[min].0 < e.window
                {
                    top[min] = (e.window, e.key);
                }
                e.window = 0;
            }
        }
        top.sort_by_key(|t| std::cmp::Reverse(t.0));
        (top, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, burst: u32, slip: u32) -> RateLimiter {
        let c = RateLimitConfig {
            responses_per_second: rate,
            burst,
            slip,
            table_size: 64,
            ..Default::default()
        };
        RateLimiter::new(&c, &[], None)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_rate() {
        let l = limiter(100, 10, 0);
        let t0 = l.table.epoch + Duration::from_secs(1);
        let a = ip("10.0.0.1");
        for i in 0..10 {
            assert_eq!(l.check(a, t0), Verdict::Answer, "burst {i}");
        }
        assert_eq!(l.check(a, t0), Verdict::Drop);
        // Another client is not affected.
        assert_eq!(l.check(ip("10.0.0.2"), t0), Verdict::Answer);
        // 10 ms later one more response is due (100/s).
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(l.check(a, t1), Verdict::Answer);
        assert_eq!(l.check(a, t1), Verdict::Drop);
        // Over one second at the rate: about 100 answered of 1,000 offered.
        let mut answered = 0;
        for i in 0..1000u64 {
            let t = t1 + Duration::from_millis(1) * (i as u32);
            if l.check(a, t) == Verdict::Answer {
                answered += 1;
            }
        }
        assert!((99..=101).contains(&answered), "{answered}");
        // A pause refills the bucket to `burst`, no more.
        let later = t1 + Duration::from_secs(60);
        let n = (0..100)
            .filter(|_| l.check(a, later) == Verdict::Answer)
            .count();
        assert_eq!(n, 10);
    }

    #[test]
    fn slip_is_every_nth() {
        let l = limiter(1, 1, 3);
        let t = l.table.epoch + Duration::from_secs(1);
        let a = ip("192.0.2.7");
        assert_eq!(l.check(a, t), Verdict::Answer);
        let v: Vec<Verdict> = (0..9).map(|_| l.check(a, t)).collect();
        let slips = v.iter().filter(|v| **v == Verdict::Slip).count();
        assert_eq!(slips, 3, "{v:?}");
        assert_eq!(v[2], Verdict::Slip);
        let all = limiter(1, 1, 1);
        assert_eq!(all.check(a, t), Verdict::Answer);
        assert!((0..5).all(|_| all.check(a, t) == Verdict::Slip));
    }

    #[test]
    fn aggregation_and_exemption() {
        let c = RateLimitConfig {
            responses_per_second: 1,
            burst: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            table_size: 64,
            slip: 0,
            ..Default::default()
        };
        let exempt = [IpPrefix::parse("10.9.0.0/16").unwrap()];
        let l = RateLimiter::new(&c, &exempt, None);
        let t = l.table.epoch + Duration::from_secs(1);
        assert_eq!(l.check(ip("10.1.1.1"), t), Verdict::Answer);
        assert_eq!(l.check(ip("10.1.1.2"), t), Verdict::Answer);
        // Same /24: the bucket is shared.
        assert_eq!(l.check(ip("10.1.1.3"), t), Verdict::Drop);
        assert_eq!(l.check(ip("10.1.2.3"), t), Verdict::Answer);
        assert_eq!(l.check(ip("fd00::1"), t), Verdict::Answer);
        assert_eq!(l.check(ip("fd00:0:0:ff::1"), t), Verdict::Answer);
        assert_eq!(l.check(ip("fd00:0:0:fe::2"), t), Verdict::Drop);
        assert!((0..100).all(|_| l.check(ip("10.9.3.3"), t) == Verdict::Answer));
        assert_eq!(
            show_key(key_of(ip("10.1.1.3"), 24, 56), 24, 56),
            "10.1.1.0/24"
        );
        assert_eq!(
            show_key(key_of(ip("10.1.1.3"), 32, 128), 32, 128),
            "10.1.1.3"
        );
        assert_eq!(show_key(key_of(ip("fd00::9"), 32, 56), 32, 56), "fd00::/56");
        assert_eq!(key_of(ip("1.2.3.4"), 1, 1) >> 32, 0xffff);
    }

    /// The default table (65,536 entries) makes its chunks as clients arrive: one client, one
    /// chunk; every chunk once clients fall into all of them, and never more.
    #[test]
    fn table_chunks_are_made_as_clients_arrive() {
        let c = RateLimitConfig::default();
        let l = RateLimiter::new(&c, &[], None);
        let made = |l: &RateLimiter| l.table.chunks.iter().filter(|c| c.get().is_some()).count();
        assert_eq!(l.table.entries(), 65_536);
        assert_eq!(made(&l), 0);
        let t = l.table.epoch + Duration::from_secs(1);
        l.check(ip("10.0.0.1"), t);
        assert_eq!(made(&l), 1);
        for i in 0..100_000u32 {
            l.check(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), t);
        }
        assert_eq!(made(&l), l.table.chunks.len());
        assert_eq!(l.table.chunks.len() * CHUNK * WAYS, 65_536);
    }

    #[test]
    fn table_stays_fixed_and_keeps_busy_clients() {
        let l = limiter(1, 5, 0);
        let t = l.table.epoch + Duration::from_secs(1);
        let flooder = ip("10.0.0.1");
        for _ in 0..5 {
            assert_eq!(l.check(flooder, t), Verdict::Answer);
        }
        assert_eq!(l.check(flooder, t), Verdict::Drop);
        // Thousands of other clients pass by once each: the flooder's entry, furthest ahead
        // of schedule, is the last one its set gives up.
        for i in 0..5000u32 {
            let other = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i));
            l.check(other, t);
            assert_eq!(l.check(flooder, t), Verdict::Drop, "after {i}");
        }
        assert_eq!(l.table.entries(), 64);
    }

    #[test]
    fn reload_keeps_state_of_same_shape() {
        let l = limiter(1, 1, 0);
        let t = l.table.epoch + Duration::from_secs(1);
        let a = ip("10.0.0.1");
        assert_eq!(l.check(a, t), Verdict::Answer);
        let c = RateLimitConfig {
            responses_per_second: 2,
            burst: 1,
            slip: 0,
            table_size: 64,
            ..Default::default()
        };
        let kept = RateLimiter::new(&c, &[], Some(&l));
        assert_eq!(kept.check(a, t), Verdict::Drop);
        let other = RateLimitConfig {
            table_size: 128,
            ..c
        };
        let fresh = RateLimiter::new(&other, &[], Some(&l));
        assert_eq!(fresh.check(a, t), Verdict::Answer);
    }

    #[test]
    fn top_clients() {
        let l = limiter(1, 1, 0);
        let t = l.table.epoch + Duration::from_secs(1);
        for (i, n) in [(1u8, 5), (2, 50), (3, 20)] {
            let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, i));
            for _ in 0..=n {
                l.check(a, t);
            }
        }
        let (top, total) = l.take_top();
        assert_eq!(total, 75);
        assert_eq!(top[0], (50, key_of(ip("10.0.0.2"), 32, 128)));
        assert_eq!(top[1].0, 20);
        assert_eq!(l.take_top().1, 0, "counts start over");
    }
}
