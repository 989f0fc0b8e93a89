//! Upstream servers: exchanges over UDP and TCP, health, loop state, and the selection policy.
//!
//! UDP: a new socket on a random port per try, connected to the upstream (so the kernel drops
//! datagrams from anyone else), and a random message ID; replies must echo the ID and the
//! question. TCP: queries are pipelined (RFC 7766 §6.2.1.1) over a few kept connections per
//! upstream ([`super::pipe`]), each closed once idle longer than `expire` (CoreDNS's `expire`;
//! 0: a connection per exchange); `coredns_proxy_conn_cache_{hits,misses}_total` count queries
//! sent on a kept connection and queries that opened one (every UDP exchange opens a new
//! socket: a miss). A `tls://` upstream is DNS over TLS (RFC 7858): every exchange goes over TLS
//! on TCP ("DNS over TLS... MUST use TCP"), pipelined the same way; rustls checks its
//! certificate against the system's roots or the configured CA file.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Notify;

use super::pipe::Pipe;

use crate::config::ForwardPolicy;
use crate::ops::metrics::{ConnProto, Metrics, UpstreamMetrics};
use crate::wire::{self, F_QR, F_TC, HEADER_LEN, rcode};

/// The opcode bits of header byte 2.
const F_OPCODE: u8 = 0x78;
/// Receive buffer of one UDP exchange.
const UDP_BUF: usize = 4096;
/// Stream connections kept per upstream at the most. RFC 7766 §6.2.2: "DNS clients MUST take
/// care to minimize the number of concurrent TCP connections made to any individual server."
const MAX_PIPES: usize = 8;
/// Once [`MAX_PIPES`] are open and busy, a connection with queries in flight and no reply for
/// this long gets new ones only if every other one is stalled too (a peer answering in order,
/// stuck behind a slow query).
const PIPE_STALL: Duration = Duration::from_millis(100);

/// How a `tls://` upstream is reached: the client config (roots) and the name its certificate
/// must hold.
#[derive(Clone)]
pub struct TlsTarget {
    pub connector: tokio_rustls::TlsConnector,
    pub name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTarget")
            .field("name", &self.name)
            .finish()
    }
}

/// One upstream server.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// Consecutive failures.
    fails: AtomicU32,
    down: AtomicBool,
    /// Queries sent here come back to clusterdns (see `super::looping`).
    looping: AtomicBool,
    /// Woken when a loop through this upstream is found: tries under way give up at once.
    loop_found: Notify,
    /// When a loop probe was last sent here (weak suspicions are probed at most once a
    /// second), and whether one is under way.
    pub(super) last_probe: Mutex<Option<Instant>>,
    pub(super) probing: AtomicBool,
    pub metrics: UpstreamMetrics,
    /// Kept stream connections, each carrying many queries at once.
    pipes: Mutex<Vec<Arc<Pipe>>>,
    /// Held while a stream connection is opened: a burst of queries opens one, not one each.
    dialing: tokio::sync::Mutex<()>,
    /// Connections idle this long are closed (CoreDNS's `expire`; 0: none is kept).
    expire: Duration,
    /// Set for a `tls://` upstream: every exchange goes over TLS.
    tls: Option<TlsTarget>,
}

/// How an exchange with an upstream travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What an exchange is for: a client's query (counted in
/// `coredns_proxy_conn_cache_{hits,misses}_total`, as CoreDNS counts its proxied queries), or
/// one of our own health or loop probes (not counted: CoreDNS's health checks use their own
/// client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Query,
    Probe,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("timeout")]
    Timeout,
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The upstream sends our queries back to us.
    #[error("forwarding loop")]
    Loop,
    /// A reply to our query that is not a well-formed message ([`wire::reply::check`]).
    #[error("malformed reply: {0}")]
    Malformed(wire::WireError),
}

/// Is `r` a reply to `query` (same ID, QR set, the same opcode, the same question ignoring
/// case)? The question must be written in full, as in the query: the client's question bytes
/// replace it later. RFC 1035 §4.1.1: the opcode "is copied into the response"; a reply with
/// another one answers some other message.
pub fn is_reply_to(r: &[u8], query: &[u8], question_end: usize) -> bool {
    if r.len() < HEADER_LEN
        || r[0..2] != query[0..2]
        || r[2] & F_QR == 0
        || (r[2] ^ query[2]) & F_OPCODE != 0
    {
        return false;
    }
    let qd = wire::u16_at(r, 4);
    if qd == 0 {
        // Some servers drop the question from FORMERR/REFUSED/NOTIMP replies.
        return wire::rcode_of(r) != rcode::NOERROR;
    }
    qd == 1
        && r.len() >= question_end
        && wire::eq_ignore_case(
            &r[HEADER_LEN..question_end],
            &query[HEADER_LEN..question_end],
        )
}

impl Upstream {
    /// The upstream at `addr`, counting into its series of `metrics`, plain DNS, idle
    /// connections kept 10 s.
    pub fn new(addr: SocketAddr, metrics: &Metrics) -> Self {
        Self::with_options(addr, metrics, Duration::from_secs(10), None)
    }

    /// [`Upstream::new`] with idle connections kept `expire`, and over TLS when `tls`.
    pub fn with_options(
        addr: SocketAddr,
        metrics: &Metrics,
        expire: Duration,
        tls: Option<TlsTarget>,
    ) -> Self {
        let m = metrics.upstream(addr);
        m.set_healthy(true);
        Upstream {
            addr,
            fails: AtomicU32::new(0),
            down: AtomicBool::new(false),
            looping: AtomicBool::new(false),
            loop_found: Notify::new(),
            last_probe: Mutex::new(None),
            probing: AtomicBool::new(false),
            metrics: m,
            pipes: Mutex::new(Vec::new()),
            dialing: tokio::sync::Mutex::new(()),
            expire,
            tls,
        }
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    pub fn fails(&self) -> u32 {
        self.fails.load(Ordering::Relaxed)
    }

    /// Whether queries sent here are known to come back to us.
    pub fn is_looping(&self) -> bool {
        self.looping.load(Ordering::Acquire)
    }

    /// Record whether a loop runs through this upstream; true when that changed. Finding one
    /// ends the tries under way to it.
    pub(super) fn set_looping(&self, looping: bool) -> bool {
        let was = self.looping.swap(looping, Ordering::AcqRel);
        if looping {
            self.loop_found.notify_waiters();
        }
        was != looping
    }

    /// An exchange or health check succeeded.
    pub fn succeeded(&self) {
        if self.fails.swap(0, Ordering::Relaxed) != 0 && self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(upstream = %self.addr, "upstream is up again");
            self.metrics.set_healthy(true);
        }
    }

    /// An exchange or health check failed; after `max_fails` in a row the upstream is down
    /// (0: never).
    pub fn failed(&self, max_fails: u32) {
        self.metrics.healthcheck_failure();
        let n = self.fails.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if max_fails > 0 && n >= max_fails && !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(upstream = %self.addr, fails = n, "upstream marked down");
            self.metrics.set_healthy(false);
        }
    }

    /// Run one exchange unless a loop through this upstream is (or becomes) known.
    pub async fn guarded<F>(&self, exchange: F) -> Result<Vec<u8>, ExchangeError>
    where
        F: Future<Output = Result<Vec<u8>, ExchangeError>>,
    {
        let found = self.loop_found.notified();
        tokio::pin!(found);
        // Registered before the check: a loop found in between still wakes it.
        found.as_mut().enable();
        if self.is_looping() {
            return Err(ExchangeError::Loop);
        }
        tokio::select! {
            r = exchange => r,
            _ = found => Err(ExchangeError::Loop),
        }
    }

    /// One exchange: `query` (its ID already set) to the upstream over `via`, given up after
    /// `timeout` (the upstream's time on a real socket: tokio's timer, not the resolver's
    /// clock).
    pub async fn exchange(
        &self,
        via: Transport,
        query: &[u8],
        question_end: usize,
        timeout: Duration,
        purpose: Purpose,
    ) -> Result<Vec<u8>, ExchangeError> {
        let exchange = async {
            match via {
                _ if self.tls.is_some() => self.stream(query, question_end, purpose).await,
                Transport::Udp => self.udp(query, question_end, purpose).await,
                Transport::Tcp => self.stream(query, question_end, purpose).await,
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(ExchangeError::Timeout))
    }

    /// One UDP exchange, on a new socket.
    async fn udp(
        &self,
        query: &[u8],
        question_end: usize,
        purpose: Purpose,
    ) -> Result<Vec<u8>, ExchangeError> {
        let bind: SocketAddr = if self.addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        if purpose == Purpose::Query {
            self.metrics.conn_cache_miss(ConnProto::Udp);
        }
        let sock = UdpSocket::bind(bind).await?;
        sock.connect(self.addr).await?;
        sock.send(query).await?;
        // We advertise at most 1232 bytes (512 without EDNS); a datagram that fills this buffer
        // may have been cut by the kernel, and is treated as truncated (TC), so the answer is
        // fetched again over TCP.
        let mut buf = [0u8; UDP_BUF];
        loop {
            let n = sock.recv(&mut buf).await?;
            if is_reply_to(&buf[..n], query, question_end) {
                return udp_reply(&buf[..n], question_end);
            }
        }
    }

    /// Whether this upstream speaks DNS over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The kept connection for one more query: one with nothing in flight; else, while fewer
    /// than [`MAX_PIPES`] are open, none (a new one is opened); else the least loaded of those
    /// not stalled, or of all. A peer that answers a connection's queries one at a time
    /// (CoreDNS: Go's miekg/dns serves each connection in order) thus never holds a query
    /// behind a slow one while it could have a connection of its own.
    fn kept_pipe(&self) -> Option<Arc<Pipe>> {
        let mut pipes = self.pipes.lock().unwrap_or_else(|e| e.into_inner());
        pipes.retain(|p| !p.is_closed());
        // One pass: the least loaded not stalled, and the least loaded of all.
        let (mut fresh, mut any): (Option<(usize, usize)>, Option<(usize, usize)>) = (None, None);
        for (i, p) in pipes.iter().enumerate() {
            let (n, stalled) = p.load(PIPE_STALL);
            if n == 0 {
                return Some(p.clone());
            }
            if !stalled && fresh.is_none_or(|(m, _)| n < m) {
                fresh = Some((n, i));
            }
            if any.is_none_or(|(m, _)| n < m) {
                any = Some((n, i));
            }
        }
        if pipes.len() < MAX_PIPES {
            return None;
        }
        fresh.or(any).map(|(_, i)| pipes[i].clone())
    }

    /// A new stream connection (TCP, or TLS on TCP).
    async fn open_pipe(&self) -> Result<Pipe, ExchangeError> {
        let s = TcpStream::connect(self.addr).await?;
        let _ = s.set_nodelay(true);
        Ok(match &self.tls {
            None => Pipe::open(s, self.expire),
            Some(t) => Pipe::open(t.connector.connect(t.name.clone(), s).await?, self.expire),
        })
    }

    /// A connection for one more query, and whether it was kept (else opened for it).
    async fn pipe(&self) -> Result<(Arc<Pipe>, bool), ExchangeError> {
        if let Some(p) = self.kept_pipe() {
            return Ok((p, true));
        }
        let _dialing = self.dialing.lock().await;
        // Opened by another query while this one waited?
        if let Some(p) = self.kept_pipe() {
            return Ok((p, true));
        }
        let p = Arc::new(self.open_pipe().await?);
        self.pipes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(p.clone());
        Ok((p, false))
    }

    /// One exchange over a stream (TCP, or TLS for a `tls://` upstream), pipelined on a kept
    /// connection. One closed under it (the upstream closes idle connections too) is retried
    /// once on another.
    async fn stream(
        &self,
        query: &[u8],
        question_end: usize,
        purpose: Purpose,
    ) -> Result<Vec<u8>, ExchangeError> {
        let counted = purpose == Purpose::Query;
        let proto = if self.tls.is_some() {
            ConnProto::TcpTls
        } else {
            ConnProto::Tcp
        };
        let count = |kept: bool| match (counted, kept) {
            (false, _) => {}
            (true, true) => self.metrics.conn_cache_hit(proto),
            (true, false) => self.metrics.conn_cache_miss(proto),
        };
        if self.expire.is_zero() {
            count(false);
            return self.open_pipe().await?.ask(query, question_end).await;
        }
        let (p, kept) = self.pipe().await?;
        count(kept);
        match p.ask(query, question_end).await {
            Err(ExchangeError::Io(_)) if kept && p.is_closed() => {}
            r => return r,
        }
        let (p, kept) = self.pipe().await?;
        count(kept);
        p.ask(query, question_end).await
    }
}

/// A UDP reply as the resolver takes it. A datagram that fills the receive buffer may have
/// been cut by the kernel, and is treated as truncated (TC), so the answer is fetched again
/// over TCP. A truncated reply that is not well-formed (cut mid-record) is kept as what it
/// says, "ask over TCP": header and question with TC set and no records. Any other reply that
/// is not well-formed is the upstream's failure.
fn udp_reply(r: &[u8], question_end: usize) -> Result<Vec<u8>, ExchangeError> {
    let mut r = r.to_vec();
    if r.len() == UDP_BUF {
        r[2] |= F_TC;
    }
    if let Err(e) = wire::reply::check(&r) {
        if r[2] & F_TC == 0 {
            return Err(ExchangeError::Malformed(e));
        }
        r.truncate(question_end);
        r[6..HEADER_LEN].fill(0);
    }
    Ok(r)
}

/// The TLS client settings of a route's `tls://` upstreams: the CAs of `ca_file` (PEM), else
/// the system's roots; TLS 1.2 at least, as CoreDNS.
pub fn tls_connector(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{} holds no PEM certificate", path.display()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err("no system root certificates found (give a CA file)".into());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// A set of upstreams with a selection policy (the default upstreams, or a stub domain's).
#[derive(Debug)]
pub struct Pool {
    pub upstreams: Vec<Arc<Upstream>>,
    pub policy: ForwardPolicy,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(addrs: &[SocketAddr], policy: ForwardPolicy, metrics: &Metrics) -> Self {
        Self::of(
            addrs
                .iter()
                .map(|a| Arc::new(Upstream::new(*a, metrics)))
                .collect(),
            policy,
        )
    }

    /// A pool of upstreams made by the caller.
    pub fn of(upstreams: Vec<Arc<Upstream>>, policy: ForwardPolicy) -> Self {
        Pool {
            upstreams,
            policy,
            next: AtomicUsize::new(0),
        }
    }

    /// The order to try upstreams in for one query: the policy's order, healthy ones first,
    /// looping ones left out. The second value is true when every upstream is down.
    pub fn order(&self) -> (Vec<&Arc<Upstream>>, bool) {
        let n = self.upstreams.len();
        let mut v: Vec<&Arc<Upstream>> = Vec::with_capacity(n);
        match self.policy {
            ForwardPolicy::Sequential => v.extend(self.upstreams.iter()),
            ForwardPolicy::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                v.extend((0..n).map(|i| &self.upstreams[(start + i) % n]));
            }
            ForwardPolicy::Random => {
                v.extend(self.upstreams.iter());
                fastrand::shuffle(&mut v);
            }
        }
        v.retain(|u| !u.is_looping());
        let all_down = !v.is_empty() && v.iter().all(|u| u.is_down());
        // Stable: keeps the policy's order within healthy and within down upstreams.
        v.sort_by_key(|u| u.is_down());
        (v, all_down)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rtype;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 40000 + i)))
            .collect()
    }

    #[test]
    fn sequential_puts_down_upstreams_last() {
        let p = Pool::new(&addrs(3), ForwardPolicy::Sequential, &Metrics::default());
        let order: Vec<u16> = p.order().0.iter().map(|u| u.addr.port()).collect();
        assert_eq!(order, vec![40000, 40001, 40002]);
        p.upstreams[0].failed(2);
        assert!(!p.upstreams[0].is_down());
        p.upstreams[0].failed(2);
        assert!(p.upstreams[0].is_down());
        let (o, all_down) = p.order();
        let order: Vec<u16> = o.iter().map(|u| u.addr.port()).collect();
        assert_eq!(order, vec![40001, 40002, 40000]);
        assert!(!all_down);
        p.upstreams[0].succeeded();
        assert!(!p.upstreams[0].is_down());
        assert_eq!(p.upstreams[0].fails(), 0);
    }

    #[test]
    fn looping_upstreams_are_left_out() {
        let p = Pool::new(&addrs(2), ForwardPolicy::Sequential, &Metrics::default());
        assert!(p.upstreams[1].set_looping(true));
        assert!(!p.upstreams[1].set_looping(true), "no change");
        let order: Vec<u16> = p.order().0.iter().map(|u| u.addr.port()).collect();
        assert_eq!(order, vec![40000]);
        p.upstreams[0].set_looping(true);
        assert!(p.order().0.is_empty());
        assert!(p.upstreams[0].set_looping(false));
        assert_eq!(p.order().0.len(), 1);
    }

    #[tokio::test]
    async fn a_loop_found_ends_the_tries_under_way() {
        let u = Arc::new(Upstream::new(
            "127.0.0.1:40100".parse().unwrap(),
            &Metrics::default(),
        ));
        let u2 = u.clone();
        let t = tokio::spawn(async move {
            u2.guarded(std::future::pending::<Result<Vec<u8>, ExchangeError>>())
                .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        u.set_looping(true);
        let r = tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(r, Err(ExchangeError::Loop)));
        assert!(matches!(
            u.guarded(async { Ok(vec![]) }).await,
            Err(ExchangeError::Loop)
        ));
    }

    #[test]
    fn round_robin_rotates_and_random_covers() {
        let p = Pool::new(&addrs(3), ForwardPolicy::RoundRobin, &Metrics::default());
        let firsts: Vec<u16> = (0..6).map(|_| p.order().0[0].addr.port()).collect();
        assert_eq!(firsts, vec![40000, 40001, 40002, 40000, 40001, 40002]);
        let p = Pool::new(&addrs(3), ForwardPolicy::Random, &Metrics::default());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let o = p.order().0;
            assert_eq!(o.len(), 3);
            seen.insert(o[0].addr.port());
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn all_down_reported() {
        let p = Pool::new(&addrs(2), ForwardPolicy::Sequential, &Metrics::default());
        for u in &p.upstreams {
            u.failed(1);
        }
        assert!(p.order().1);
    }

    /// A query for `a.example` A with `id`, where its question ends, and its bare reply.
    fn query_and_reply(id: u16) -> (Vec<u8>, usize, Vec<u8>) {
        let q = wire::query::build(
            id,
            &wire::dotted_to_wire("a.example").unwrap(),
            rtype::A,
            true,
            None,
        );
        let qe = wire::Query::parse(&q).unwrap().question_end();
        let mut r = q.clone();
        r[2] |= F_QR;
        (q, qe, r)
    }

    #[test]
    fn reply_matching() {
        let (q, qe, r) = query_and_reply(0x4242);
        assert!(is_reply_to(&r, &q, qe));
        let mut upper = r.clone();
        upper[13] = b'A';
        assert!(is_reply_to(&upper, &q, qe));
        let mut other_id = r.clone();
        other_id[1] ^= 1;
        assert!(!is_reply_to(&other_id, &q, qe));
        let mut other_name = r.clone();
        other_name[13] = b'b';
        assert!(!is_reply_to(&other_name, &q, qe));
        assert!(!is_reply_to(&q, &q, qe), "a query is not a reply");
        assert!(!is_reply_to(&r[..qe - 1], &q, qe), "cut short");
        let mut other_opcode = r.clone();
        other_opcode[2] |= 2 << 3;
        assert!(!is_reply_to(&other_opcode, &q, qe), "opcode not copied");
    }

    #[test]
    fn malformed_udp_replies() {
        let (_, qe, mut r) = query_and_reply(7);
        r[7] = 1;
        // An A record of 3 bytes.
        r.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 3, 1, 2, 3]);
        assert!(matches!(
            udp_reply(&r, qe),
            Err(ExchangeError::Malformed(wire::WireError::BadRdata))
        ));
        // Truncated: kept as "ask over TCP", without the broken record.
        r[2] |= F_TC;
        let t = udp_reply(&r, qe).unwrap();
        assert_eq!(t.len(), qe);
        assert_eq!(&t[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert!(t[2] & F_TC != 0);
        // A full receive buffer is truncated, whatever it holds.
        let mut full = r.clone();
        full[2] &= !F_TC;
        full.resize(UDP_BUF, 0);
        assert!(udp_reply(&full, qe).unwrap()[2] & F_TC != 0);
    }
}
