//! The per-query families, sharded per thread.
//!
//! Every query bumps the same few series (`type="A"`, `rcode="NOERROR"`, the one duration
//! histogram of `zone="."`) from every worker thread. With one set of atomics, two threads
//! answering at once spend most of their metrics time moving those cache lines between cores
//! (measured: 37 ns per query on one thread, 310 ns on each of two). Here each thread adds into
//! its own shard (a cache-aligned block of plain atomic counters, picked once per thread), and
//! the collector sums the shards at scrape time. A query is then about ten uncontended
//! `fetch_add`s: no lock, no CAS loop, no allocation, no lookup.
//!
//! Histograms keep per-bucket (not cumulative) counts; the count is the sum of the buckets, so
//! `_count` always equals the `+Inf` bucket. Duration sums are kept in nanoseconds and sizes in
//! bytes, both integers, so they add exactly.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};

use super::{
    CACHE_KINDS, FAMILIES, NRCODES, NSOURCES, NTYPES, PLUGIN_LABELS, PROTOS, QTYPE_LABELS,
    RCODE_NAMES, SIZE_BUCKETS, TIME_BUCKETS, ZONES, rcode_label,
};

const NREQ: usize = 2 * 2 * 2 * NTYPES; // zone, proto, family, type
const NRESP: usize = NRCODES * NSOURCES; // rcode, source (the source decides the zone)
const TB: usize = TIME_BUCKETS.len() + 1; // + the +Inf bucket
const SB: usize = SIZE_BUCKETS.len() + 1;

/// One thread's counters. Aligned so two shards never share a cache line.
#[repr(align(128))]
pub(super) struct Shard {
    requests: [AtomicU64; NREQ],
    responses: [AtomicU64; NRESP],
    do_requests: [AtomicU64; 2],
    duration: [[AtomicU64; TB]; 2],
    duration_sum_ns: [AtomicU64; 2],
    req_size: [[AtomicU64; SB]; 4], // zone * 2 + proto
    req_size_sum: [AtomicU64; 4],
    resp_size: [[AtomicU64; SB]; 4],
    resp_size_sum: [AtomicU64; 4],
    cache_hits: [AtomicU64; 2],
    cache_misses: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

impl Shard {
    fn new() -> Shard {
        Shard {
            requests: [ZERO; NREQ],
            responses: [ZERO; NRESP],
            do_requests: [ZERO; 2],
            duration: [const { [ZERO; TB] }; 2],
            duration_sum_ns: [ZERO; 2],
            req_size: [const { [ZERO; SB] }; 4],
            req_size_sum: [ZERO; 4],
            resp_size: [const { [ZERO; SB] }; 4],
            resp_size_sum: [ZERO; 4],
            cache_hits: [ZERO; 2],
            cache_misses: ZERO,
        }
    }
}

/// Index of the time bucket of `ns` nanoseconds: the smallest `i` with
/// `ns <= 250 µs * 2^i` (`TIME_BUCKETS[i]`), else the `+Inf` bucket.
#[inline]
pub(super) fn time_bucket(ns: u64) -> usize {
    let q = ns.div_ceil(250_000);
    if q <= 1 {
        return 0;
    }
    ((64 - (q - 1).leading_zeros()) as usize).min(TB - 1)
}

/// Index of the size bucket of `n` bytes (`SIZE_BUCKETS`: 0 100 200 300 400 511 1023 2047 4095
/// 8291 16000 32000 48000 64000), else the `+Inf` bucket.
#[inline]
pub(super) fn size_bucket(n: u64) -> usize {
    match n {
        0 => 0,
        1..=100 => 1,
        101..=200 => 2,
        201..=300 => 3,
        301..=400 => 4,
        401..=511 => 5,
        512..=1023 => 6,
        1024..=2047 => 7,
        2048..=4095 => 8,
        4096..=8291 => 9,
        8292..=16000 => 10,
        16001..=32000 => 11,
        32001..=48000 => 12,
        48001..=64000 => 13,
        _ => 14,
    }
}

/// The sharded per-query families and the cache counters.
pub(super) struct Hot {
    server: String,
    shards: Box<[Shard]>,
    /// Responses with an rcode above 23 (nothing sends them in practice): (rcode, source).
    rare_responses: Mutex<BTreeMap<(u16, usize), u64>>,
    descs: Vec<Desc>,
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

impl Hot {
    pub(super) fn new(server: &str) -> Hot {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(4)
            .next_power_of_two()
            .clamp(4, 64);
        let descs = FAMILY_META
            .iter()
            .map(|(name, help, _, labels)| {
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    labels.iter().map(|l| l.to_string()).collect(),
                    Default::default(),
                )
                .expect("valid desc")
            })
            .collect();
        Hot {
            server: server.to_string(),
            shards: (0..n).map(|_| Shard::new()).collect(),
            rare_responses: Mutex::new(BTreeMap::new()),
            descs,
        }
    }

    /// This thread's shard.
    #[inline]
    pub(super) fn shard(&self) -> &Shard {
        let mut i = SHARD.with(Cell::get);
        if i == usize::MAX {
            i = NEXT_SHARD.fetch_add(1, Relaxed);
            SHARD.with(|c| c.set(i));
        }
        // The shard count is a power of two.
        &self.shards[i & (self.shards.len() - 1)]
    }

    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn observe(
        &self,
        zone: usize,
        proto: usize,
        family: usize,
        qtype: usize,
        rcode: u16,
        source: usize,
        duration_ns: u64,
        request_size: u64,
        response_size: u64,
        do_bit: bool,
    ) {
        let s = self.shard();
        s.requests[((zone * 2 + proto) * 2 + family) * NTYPES + qtype].fetch_add(1, Relaxed);
        if (rcode as usize) < NRCODES {
            s.responses[rcode as usize * NSOURCES + source].fetch_add(1, Relaxed);
        } else {
            *self
                .rare_responses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry((rcode, source))
                .or_default() += 1;
        }
        if do_bit {
            s.do_requests[zone].fetch_add(1, Relaxed);
        }
        s.duration[zone][time_bucket(duration_ns)].fetch_add(1, Relaxed);
        s.duration_sum_ns[zone].fetch_add(duration_ns, Relaxed);
        let zp = zone * 2 + proto;
        s.req_size[zp][size_bucket(request_size)].fetch_add(1, Relaxed);
        s.req_size_sum[zp].fetch_add(request_size, Relaxed);
        s.resp_size[zp][size_bucket(response_size)].fetch_add(1, Relaxed);
        s.resp_size_sum[zp].fetch_add(response_size, Relaxed);
    }

    #[inline]
    pub(super) fn cache_hit(&self, kind: usize) {
        self.shard().cache_hits[kind].fetch_add(1, Relaxed);
    }

    #[inline]
    pub(super) fn cache_miss(&self) {
        self.shard().cache_misses.fetch_add(1, Relaxed);
    }

    fn sum(&self, f: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|s| f(s).load(Relaxed)).sum()
    }
}

const REQ_LABELS: &[&str] = &["family", "proto", "server", "type", "view", "zone"];
const RESP_LABELS: &[&str] = &["plugin", "rcode", "server", "view", "zone"];
const ZONE_LABELS: &[&str] = &["server", "view", "zone"];
const SIZE_LABELS: &[&str] = &["proto", "server", "view", "zone"];
const CACHE_KIND_LABELS: &[&str] = &["server", "type", "view", "zones"];
const CACHE_LABELS: &[&str] = &["server", "view", "zones"];

/// (name, help, type, label names in sorted order), in the order `collect` returns them.
const FAMILY_META: [(&str, &str, MetricType, &[&str]); 9] = [
    (
        "coredns_dns_requests_total",
        "Counter of DNS requests made per zone, protocol and family.",
        MetricType::COUNTER,
        REQ_LABELS,
    ),
    (
        "coredns_dns_responses_total",
        "Counter of response status codes.",
        MetricType::COUNTER,
        RESP_LABELS,
    ),
    (
        "coredns_dns_do_requests_total",
        "Counter of DNS requests with DO bit set per zone.",
        MetricType::COUNTER,
        ZONE_LABELS,
    ),
    (
        "coredns_dns_request_duration_seconds",
        "Histogram of the time (in seconds) each request took per zone.",
        MetricType::HISTOGRAM,
        ZONE_LABELS,
    ),
    (
        "coredns_dns_request_size_bytes",
        "Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and protocol.",
        MetricType::HISTOGRAM,
        SIZE_LABELS,
    ),
    (
        "coredns_dns_response_size_bytes",
        "Size of the returned response in bytes.",
        MetricType::HISTOGRAM,
        SIZE_LABELS,
    ),
    (
        "coredns_cache_hits_total",
        "The count of cache hits.",
        MetricType::COUNTER,
        CACHE_KIND_LABELS,
    ),
    (
        "coredns_cache_misses_total",
        "The count of cache misses. Deprecated, derive misses from cache hits/requests counters.",
        MetricType::COUNTER,
        CACHE_LABELS,
    ),
    (
        "coredns_cache_requests_total",
        "The count of cache requests.",
        MetricType::COUNTER,
        CACHE_LABELS,
    ),
];

fn labels(names: &[&str], values: &[&str]) -> Vec<LabelPair> {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| {
            let mut p = LabelPair::default();
            p.set_name(n.to_string());
            p.set_value(v.to_string());
            p
        })
        .collect()
}

fn counter(names: &[&str], values: &[&str], v: u64) -> proto::Metric {
    let mut m = proto::Metric::from_label(labels(names, values));
    let mut c = proto::Counter::default();
    c.set_value(v as f64);
    m.set_counter(c);
    m
}

/// `counts`: per bucket, the last one `+Inf`.
fn histogram(
    names: &[&str],
    values: &[&str],
    bounds: &[f64],
    counts: &[u64],
    sum: f64,
) -> proto::Metric {
    let mut m = proto::Metric::from_label(labels(names, values));
    let mut h = proto::Histogram::default();
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(bounds.len());
    for (b, c) in bounds.iter().zip(counts) {
        cumulative += c;
        let mut bucket = proto::Bucket::default();
        bucket.set_upper_bound(*b);
        bucket.set_cumulative_count(cumulative);
        buckets.push(bucket);
    }
    h.set_bucket(buckets);
    h.set_sample_count(counts.iter().sum());
    h.set_sample_sum(sum);
    m.set_histogram(h);
    m
}

/// The registry's handle on [`Hot`].
pub(super) struct HotCollector(pub(super) std::sync::Arc<Hot>);

impl Collector for HotCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.0.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

impl Hot {
    // The loops walk label positions that also index the flat shard arrays.
    #[allow(clippy::needless_range_loop)]
    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.server.as_str();
        let mut fams: Vec<Vec<proto::Metric>> = vec![Vec::new(); FAMILY_META.len()];

        for zone in 0..2 {
            for proto in 0..2 {
                for family in 0..2 {
                    for t in 0..NTYPES {
                        let i = ((zone * 2 + proto) * 2 + family) * NTYPES + t;
                        let v = self.sum(|sh| &sh.requests[i]);
                        if v > 0 {
                            let vals = [
                                FAMILIES[family],
                                PROTOS[proto],
                                s,
                                QTYPE_LABELS[t],
                                "",
                                ZONES[zone],
                            ];
                            fams[0].push(counter(REQ_LABELS, &vals, v));
                        }
                    }
                }
            }
        }
        let zone_of = |src: usize| {
            if src == NSOURCES - 1 {
                ZONES[1]
            } else {
                ZONES[0]
            }
        };
        for rc in 0..NRCODES {
            for src in 0..NSOURCES {
                let v = self.sum(|sh| &sh.responses[rc * NSOURCES + src]);
                if v > 0 {
                    let vals = [PLUGIN_LABELS[src], RCODE_NAMES[rc], s, "", zone_of(src)];
                    fams[1].push(counter(RESP_LABELS, &vals, v));
                }
            }
        }
        for ((rc, src), v) in self
            .rare_responses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let vals = [PLUGIN_LABELS[*src], &rcode_label(*rc), s, "", zone_of(*src)];
            fams[1].push(counter(RESP_LABELS, &vals, *v));
        }
        for zone in 0..2 {
            let v = self.sum(|sh| &sh.do_requests[zone]);
            if v > 0 {
                fams[2].push(counter(ZONE_LABELS, &[s, "", ZONES[zone]], v));
            }
            let counts: Vec<u64> = (0..TB)
                .map(|b| self.sum(|sh| &sh.duration[zone][b]))
                .collect();
            if counts.iter().any(|c| *c > 0) {
                let sum = self.sum(|sh| &sh.duration_sum_ns[zone]) as f64 / 1e9;
                fams[3].push(histogram(
                    ZONE_LABELS,
                    &[s, "", ZONES[zone]],
                    &TIME_BUCKETS,
                    &counts,
                    sum,
                ));
            }
            for proto in 0..2 {
                let zp = zone * 2 + proto;
                let vals = [PROTOS[proto], s, "", ZONES[zone]];
                let counts: Vec<u64> = (0..SB)
                    .map(|b| self.sum(|sh| &sh.req_size[zp][b]))
                    .collect();
                if counts.iter().any(|c| *c > 0) {
                    let sum = self.sum(|sh| &sh.req_size_sum[zp]) as f64;
                    fams[4].push(histogram(SIZE_LABELS, &vals, &SIZE_BUCKETS, &counts, sum));
                }
                let counts: Vec<u64> = (0..SB)
                    .map(|b| self.sum(|sh| &sh.resp_size[zp][b]))
                    .collect();
                if counts.iter().any(|c| *c > 0) {
                    let sum = self.sum(|sh| &sh.resp_size_sum[zp]) as f64;
                    fams[5].push(histogram(SIZE_LABELS, &vals, &SIZE_BUCKETS, &counts, sum));
                }
            }
        }
        // The cache counters are always there (CoreDNS creates them with the cache).
        let hits = [0, 1].map(|k| self.sum(|sh| &sh.cache_hits[k]));
        let misses = self.sum(|sh| &sh.cache_misses);
        for (k, kind) in CACHE_KINDS.iter().enumerate() {
            fams[6].push(counter(CACHE_KIND_LABELS, &[s, kind, "", "."], hits[k]));
        }
        fams[7].push(counter(CACHE_LABELS, &[s, "", "."], misses));
        fams[8].push(counter(
            CACHE_LABELS,
            &[s, "", "."],
            hits[0] + hits[1] + misses,
        ));

        FAMILY_META
            .iter()
            .zip(fams)
            .filter(|(_, m)| !m.is_empty())
            .map(|((name, help, ty, _), metrics)| {
                let mut mf = MetricFamily::default();
                mf.set_name(name.to_string());
                mf.set_help(help.to_string());
                mf.set_field_type(*ty);
                mf.set_metric(metrics);
                mf
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_buckets_match_the_float_bounds() {
        let by_float = |ns: u64| {
            let secs = std::time::Duration::from_nanos(ns).as_secs_f64();
            TIME_BUCKETS
                .iter()
                .position(|b| secs <= *b)
                .unwrap_or(TIME_BUCKETS.len())
        };
        let mut probes = vec![
            0,
            1,
            249_999,
            250_000,
            250_001,
            8_192_000_000,
            8_192_000_001,
            60_000_000_000,
            u64::MAX / 2,
        ];
        for b in TIME_BUCKETS {
            let ns = (b * 1e9).round() as u64;
            probes.extend([ns - 1, ns, ns + 1]);
        }
        for k in 0..20_000u64 {
            probes.push(k * k * 997);
        }
        for ns in probes {
            assert_eq!(time_bucket(ns), by_float(ns), "{ns} ns");
        }
    }

    #[test]
    fn size_buckets_match_the_bounds() {
        for n in 0..70_000u64 {
            let want = SIZE_BUCKETS
                .iter()
                .position(|b| n as f64 <= *b)
                .unwrap_or(SIZE_BUCKETS.len());
            assert_eq!(size_bucket(n), want, "{n} bytes");
        }
    }

    #[test]
    fn shards_add_up_across_threads() {
        let h = Hot::new("dns://:53");
        std::thread::scope(|sc| {
            for _ in 0..8 {
                sc.spawn(|| {
                    for _ in 0..1000 {
                        h.observe(0, 0, 0, 0, 0, 0, 1_000_000, 40, 100, true);
                        h.cache_hit(0);
                    }
                });
            }
        });
        let fams = h.collect();
        let req = fams
            .iter()
            .find(|f| f.name() == "coredns_dns_requests_total")
            .unwrap();
        assert_eq!(req.get_metric()[0].get_counter().get_value(), 8000.0);
        let dur = fams
            .iter()
            .find(|f| f.name() == "coredns_dns_request_duration_seconds")
            .unwrap();
        let hist = dur.get_metric()[0].get_histogram();
        assert_eq!(hist.get_sample_count(), 8000);
        assert!((hist.get_sample_sum() - 8.0).abs() < 1e-9);
        let cache = fams
            .iter()
            .find(|f| f.name() == "coredns_cache_requests_total")
            .unwrap();
        assert_eq!(cache.get_metric()[0].get_counter().get_value(), 8000.0);
    }
}
