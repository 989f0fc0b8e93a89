//! What the query path tells the operator side about a query: the words both speak.
//!
//! The query path (`server/`, `resolve/`) produces a [`QueryObservation`] for every answered
//! query; the metrics (`ops::metrics`) count it and the query log (`ops::querylog`) writes it.
//! This module sits below both, so neither imports the other for it: `ops/` never reaches into
//! the query path, and the query path hands its observations to whatever [`QueryLogger`] or
//! metrics handle it was given.

use std::net::SocketAddr;
use std::time::Duration;

/// Transport a query came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    /// The `proto` label value: `udp` or `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
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

/// The `plugin` label of each [`AnswerSource`], indexed by `source as usize`.
pub const PLUGIN_LABELS: [&str; 5] = ["kubernetes", "hosts", "cache", "forward", ""];

impl AnswerSource {
    /// How many sources there are (the length of [`PLUGIN_LABELS`]).
    pub const COUNT: usize = PLUGIN_LABELS.len();

    /// The `plugin` label value of `coredns_dns_responses_total`: `kubernetes`, `hosts`,
    /// `cache`, `forward`, or empty for answers the server wrote itself.
    pub fn plugin_label(self) -> &'static str {
        PLUGIN_LABELS[self as usize]
    }
    /// The query log's `source` value: `zone`, `hosts`, `cache`, `forward` or `server`.
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerSource::Zone => "zone",
            AnswerSource::Hosts => "hosts",
            AnswerSource::Cache => "cache",
            AnswerSource::Forward => "forward",
            AnswerSource::Server => "server",
        }
    }
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

/// Something that logs sampled queries (the query log, `ops::querylog::QueryLog`).
pub trait QueryLogger: Send + Sync + 'static {
    /// `qname`: the question name in wire form, as the client wrote it.
    fn log(
        &self,
        src: SocketAddr,
        qname: &[u8],
        upstream: Option<SocketAddr>,
        o: &QueryObservation,
    );
    fn enabled(&self) -> bool;
}
