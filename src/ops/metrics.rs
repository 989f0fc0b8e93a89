//! CoreDNS-compatible Prometheus metrics, with label handles resolved once.
//!
//! SKELETON: the API below is the contract the query path, the resolver and the sources call.
//! The ops owner fills in the bodies (prometheus crate, text format 0.0.4).

use std::net::SocketAddr;
use std::time::Duration;

/// Transport a query came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

/// Who wrote the answer (CoreDNS's `plugin` label, and the query log's `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerSource {
    /// The cluster zone snapshot (`kubernetes`).
    Zone,
    /// The hosts file or critical names (`hosts`).
    Hosts,
    /// The cache (`cache`).
    Cache,
    /// An upstream (`forward`).
    Forward,
    /// The server itself (FORMERR, NOTIMP, REFUSED, ...): no plugin.
    Server,
}

/// Kind of cache entry, CoreDNS's `type` label on cache metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    Success,
    Denial,
}

/// CoreDNS's `service_kind` on `coredns_kubernetes_dns_programming_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    ClusterIp,
    HeadlessWithSelector,
    HeadlessWithoutSelector,
}

/// Why a query was dropped or shed (`clusterdns_dropped_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not a DNS query at all (short, QR set).
    Malformed,
    /// Forwarding concurrency bound reached.
    MaxConcurrent,
    /// TCP connection limit reached.
    TcpConnLimit,
}

/// Everything measured about one answered query.
#[derive(Debug, Clone, Copy)]
pub struct QueryObservation {
    pub proto: Proto,
    /// Client address family: true for IPv6.
    pub ipv6: bool,
    pub qtype: u16,
    /// The response code including EDNS extended bits (e.g. 16 for BADVERS).
    pub rcode: u16,
    pub source: AnswerSource,
    pub request_size: usize,
    pub response_size: usize,
    pub duration: Duration,
    pub do_bit: bool,
}

/// Per-upstream handles, created once per configured upstream.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    pub addr: SocketAddr,
}

impl UpstreamMetrics {
    /// A completed exchange with this upstream (`coredns_proxy_request_duration_seconds` and the
    /// legacy `coredns_forward_*` names).
    pub fn request(&self, _rcode: u16, _duration: Duration) {}
    /// A failed health check or failed try (`coredns_proxy_healthcheck_failures_total`).
    pub fn healthcheck_failure(&self) {}
    /// Upstream up (true) or down (false), for `clusterdns_upstream_healthy`.
    pub fn set_healthy(&self, _healthy: bool) {}
}

/// The process-wide metrics.
#[derive(Debug, Default)]
pub struct Metrics {}

impl Metrics {
    pub fn observe_query(&self, _o: &QueryObservation) {}
    pub fn dropped(&self, _reason: DropReason) {}
    pub fn upstream(&self, addr: SocketAddr) -> UpstreamMetrics {
        UpstreamMetrics { addr }
    }
    pub fn forward_broken(&self) {}
    pub fn forward_max_concurrent_reject(&self) {}
    pub fn cache_hit(&self, _kind: CacheKind) {}
    pub fn cache_miss(&self) {}
    pub fn cache_prefetch(&self) {}
    pub fn cache_served_stale(&self) {}
    pub fn cache_eviction(&self, _kind: CacheKind) {}
    pub fn set_cache_entries(&self, _kind: CacheKind, _n: usize) {}
    pub fn set_hosts_entries(&self, _file: &str, _n: usize) {}
    pub fn dns_programming(&self, _kind: ServiceKind, _duration: Duration) {}
    pub fn watch_restart(&self, _kind: &'static str) {}
    pub fn relist(&self, _kind: &'static str) {}
    /// Snapshot contents: `clusterdns_snapshot_objects{kind}`, `clusterdns_snapshot_records`,
    /// and the time it was published (for `clusterdns_snapshot_age_seconds`).
    pub fn snapshot_published(&self, _services: usize, _endpoints: usize, _pods: usize, _records: usize) {}
    pub fn reload_failed(&self) {}
}

/// The one registry of this process.
pub fn global() -> &'static Metrics {
    static M: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    M.get_or_init(Metrics::default)
}
