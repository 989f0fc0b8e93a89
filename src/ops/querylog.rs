//! The sampled, structured query log.
//!
//! Off by default (`querylog.enabled`). When on, a fraction `querylog.sample` of queries is
//! logged as one tracing event at INFO with target [`TARGET`] (`clusterdns::querylog`), with the
//! fields `client`, `qname`, `qtype`, `rcode`, `duration_us`, `source`, `upstream` (forwarded
//! answers) and `proto`. [`layer`] writes exactly those events as JSON lines; keep them out of
//! the ordinary log layer with [`is_querylog`].
//!
//! Cost: when disabled, [`QueryLog::sampled`] is one load of a bool; when enabled, a thread-local
//! random number (`fastrand`) and a compare. Build the entry (the qname string) only after
//! [`QueryLog::sampled`] said yes, then call [`QueryLog::log`]; or call
//! [`QueryLog::maybe_log`] with an entry that is already cheap to build.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::QueryLogConfig;
use crate::observe::{AnswerSource, Proto, QueryLogger, QueryObservation};
use crate::ops::metrics::rcode_label;

/// The tracing target of query log events.
pub const TARGET: &str = "clusterdns::querylog";

/// One query as logged.
#[derive(Debug, Clone, Copy)]
pub struct QueryLogEntry<'a> {
    pub client: SocketAddr,
    /// The question name as the client wrote it (presentation form, e.g. `kubernetes.default.svc.cluster.local.`).
    pub qname: &'a str,
    pub qtype: u16,
    /// The response code, extended bits included.
    pub rcode: u16,
    pub duration: Duration,
    pub source: AnswerSource,
    /// The upstream that answered, when `source` is [`AnswerSource::Forward`].
    pub upstream: Option<SocketAddr>,
    pub proto: Proto,
}

/// The sampling decision and the emitter.
#[derive(Debug, Clone)]
pub struct QueryLog {
    enabled: bool,
    /// Log when a random u64 is below this; `u64::MAX` with `always` means every query.
    threshold: u64,
    always: bool,
}

impl QueryLog {
    pub fn new(cfg: &QueryLogConfig) -> QueryLog {
        let sample = if cfg.sample.is_finite() {
            cfg.sample.clamp(0.0, 1.0)
        } else {
            0.0
        };
        QueryLog {
            enabled: cfg.enabled && sample > 0.0,
            threshold: (sample * u64::MAX as f64) as u64,
            always: sample >= 1.0,
        }
    }

    pub fn disabled() -> QueryLog {
        QueryLog {
            enabled: false,
            threshold: 0,
            always: false,
        }
    }

    /// Whether any query can be logged.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The sampling decision for one query.
    #[inline]
    pub fn sampled(&self) -> bool {
        self.enabled && (self.always || fastrand::u64(..) < self.threshold)
    }

    /// Log `entry` if this query is sampled.
    #[inline]
    pub fn maybe_log(&self, entry: &QueryLogEntry<'_>) {
        if self.sampled() {
            self.log(entry);
        }
    }

    /// Log `e` (the caller already sampled).
    pub fn log(&self, e: &QueryLogEntry<'_>) {
        tracing::info!(
            target: "clusterdns::querylog",
            client = %e.client,
            qname = e.qname,
            qtype = %QType(e.qtype),
            rcode = %rcode_label(e.rcode),
            duration_us = e.duration.as_micros() as u64,
            source = e.source.as_str(),
            upstream = e.upstream.map(display),
            proto = e.proto.as_str(),
            "query"
        );
    }
}

/// A query type in presentation form: its mnemonic, else `TYPE<n>` (RFC 3597).
pub struct QType(pub u16);

impl fmt::Display for QType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use hickory_proto::rr::RecordType;
        match RecordType::from(self.0) {
            RecordType::Unknown(n) => write!(f, "TYPE{n}"),
            t => f.write_str(<&'static str>::from(t)),
        }
    }
}

/// Whether a tracing event is a query log line (to filter it out of the ordinary log).
pub fn is_querylog(meta: &tracing::Metadata<'_>) -> bool {
    meta.target() == TARGET
}

/// A layer that writes query log events, and only them, as JSON lines to stdout:
/// `{"timestamp":…,"level":"INFO","message":"query","client":"10.1.2.3:41000","qname":…}`.
pub fn layer<S>() -> impl tracing_subscriber::Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    layer_to(std::io::stdout)
}

/// [`layer`] writing to `make_writer` (a file, a test buffer).
pub fn layer_to<S, W>(make_writer: W) -> impl tracing_subscriber::Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer as _;
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_writer(make_writer)
        .with_filter(
            tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::INFO),
        )
}

/// The query path's query-log seam: every observed query goes through the sampling decision;
/// the qname string is built only for sampled ones.
impl QueryLogger for QueryLog {
    fn log(
        &self,
        src: SocketAddr,
        qname: &[u8],
        upstream: Option<SocketAddr>,
        o: &QueryObservation,
    ) {
        if !self.sampled() {
            return;
        }
        let qname = crate::wire::display_name(qname);
        QueryLog::log(
            self,
            &QueryLogEntry {
                client: src,
                qname: &qname,
                qtype: o.qtype,
                rcode: o.rcode,
                duration: o.duration,
                source: o.source,
                upstream,
                proto: o.proto,
            },
        );
    }
    fn enabled(&self) -> bool {
        self.enabled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt as _;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn entry(qname: &str) -> QueryLogEntry<'_> {
        QueryLogEntry {
            client: "10.244.1.7:41000".parse().unwrap(),
            qname,
            qtype: 28,
            rcode: 2,
            duration: Duration::from_micros(1234),
            source: AnswerSource::Forward,
            upstream: Some("10.0.0.10:53".parse().unwrap()),
            proto: Proto::Udp,
        }
    }

    fn lines(buf: &Buf) -> Vec<serde_json::Value> {
        String::from_utf8(buf.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn json_fields() {
        let buf = Buf::default();
        let sub = tracing_subscriber::registry().with(layer_to(buf.clone()));
        tracing::subscriber::with_default(sub, || {
            let ql = QueryLog::new(&QueryLogConfig {
                enabled: true,
                sample: 1.0,
            });
            assert!(ql.enabled() && ql.sampled());
            ql.maybe_log(&entry("example.com."));
            let mut e = entry("kubernetes.default.svc.cluster.local.");
            e.qtype = 65280;
            e.rcode = 0;
            e.source = AnswerSource::Zone;
            e.upstream = None;
            e.proto = Proto::Tcp;
            ql.maybe_log(&e);
            tracing::info!("an ordinary log line, not in the query log");
        });
        let l = lines(&buf);
        assert_eq!(l.len(), 2, "{l:?}");
        let j = &l[0];
        assert_eq!(j["client"], "10.244.1.7:41000");
        assert_eq!(j["qname"], "example.com.");
        assert_eq!(j["qtype"], "AAAA");
        assert_eq!(j["rcode"], "SERVFAIL");
        assert_eq!(j["duration_us"], 1234);
        assert_eq!(j["source"], "forward");
        assert_eq!(j["upstream"], "10.0.0.10:53");
        assert_eq!(j["proto"], "udp");
        assert_eq!(j["message"], "query");
        assert_eq!(j["level"], "INFO");
        let k = &l[1];
        assert_eq!(k["qtype"], "TYPE65280");
        assert_eq!(k["rcode"], "NOERROR");
        assert_eq!(k["source"], "zone");
        assert_eq!(k["proto"], "tcp");
        assert!(k.get("upstream").is_none(), "{k}");
    }

    #[test]
    fn sampling() {
        assert!(
            !QueryLog::new(&QueryLogConfig::default()).enabled(),
            "off by default"
        );
        assert!(
            !QueryLog::new(&QueryLogConfig {
                enabled: true,
                sample: 0.0
            })
            .enabled()
        );
        assert!(
            !QueryLog::new(&QueryLogConfig {
                enabled: false,
                sample: 1.0
            })
            .sampled()
        );
        assert!(!QueryLog::disabled().sampled());
        let ql = QueryLog::new(&QueryLogConfig {
            enabled: true,
            sample: 0.25,
        });
        let n = 40_000;
        let hits = (0..n).filter(|_| ql.sampled()).count();
        assert!((8_000..12_000).contains(&hits), "{hits} of {n}");
        let all = QueryLog::new(&QueryLogConfig {
            enabled: true,
            sample: 1.0,
        });
        assert!((0..1000).all(|_| all.sampled()));
    }

    #[test]
    fn disabled_emits_nothing() {
        let buf = Buf::default();
        let sub = tracing_subscriber::registry().with(layer_to(buf.clone()));
        tracing::subscriber::with_default(sub, || {
            let ql = QueryLog::new(&QueryLogConfig::default());
            for _ in 0..100 {
                ql.maybe_log(&entry("example.com."));
            }
        });
        assert!(lines(&buf).is_empty());
    }
}
