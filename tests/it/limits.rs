//! Per-client limits and bounded work on the real binary (issue 17): a flooder on 127.0.0.2 is
//! rate limited (its forwarded queries reach the upstream at its limit, its limited replies slip
//! out as TC at the slip rate) while a well-behaved client on 127.0.0.3 is answered; thousands
//! of idle and slowloris TCP connections keep the server's file descriptors under the cap while
//! others are answered over UDP and TCP; a water-torture flood keeps the cache and the waiting
//! queries within their bounds; the limits reload.
//!
//! Margins are generous and nothing is timed: the assertions are about counts (answered,
//! limited, seen upstream, open descriptors), with the flood paced so that the shared test
//! machine is not what decides them.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::support::upstream::{Action, Fake, nx_reply};
use crate::support::*;

const FLOODER: &str = "127.0.0.2";
const CLIENT: &str = "127.0.0.3";
const CLUSTER_NAME: &str = "kubernetes.default.svc.cluster.local";

fn metrics(s: &Server) -> String {
    let addr = s.listen("metrics").expect("metrics address");
    status_body(addr, "/metrics").expect("metrics").1
}

/// A labelled sample's value (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    metric_value(text, series).unwrap_or(0.0)
}

fn dropped(text: &str, reason: &str) -> f64 {
    sample(
        text,
        &format!("clusterdns_dropped_total{{reason=\"{reason}\"}}"),
    )
}

/// A UDP socket on `ip` (any port).
fn udp_from(ip: &str) -> UdpSocket {
    UdpSocket::bind((ip.parse::<IpAddr>().unwrap(), 0)).unwrap()
}

/// Sends `per_tick` queries for random names under `zone` every millisecond from `ip` until
/// `stop`; counts replies (all, and those with TC set) on another thread.
struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    replies: Arc<AtomicUsize>,
    truncated: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Flood {
    fn start(ip: &str, server: SocketAddr, zone: &str, per_tick: usize) -> Flood {
        let sock = Arc::new(udp_from(ip));
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let f = Flood {
            stop: Arc::new(AtomicBool::new(false)),
            sent: Arc::new(AtomicUsize::new(0)),
            replies: Arc::new(AtomicUsize::new(0)),
            truncated: Arc::new(AtomicUsize::new(0)),
            threads: vec![],
        };
        let (stop, sent, zone) = (f.stop.clone(), f.sent.clone(), zone.to_string());
        let tx = sock.clone();
        let sender = std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..per_tick {
                    n = n.wrapping_add(1);
                    let name = format!("r{:08x}{n}.{zone}", fastrand::u32(..));
                    let q = query(&name, RecordType::A, n as u16, Some(1232));
                    if tx.send_to(&q, server).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let (stop, replies, truncated) = (f.stop.clone(), f.replies.clone(), f.truncated.clone());
        let receiver = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Replies still on their way after the stop are counted for a moment longer.
            let mut until: Option<Instant> = None;
            loop {
                if stop.load(Ordering::Relaxed) {
                    let end = *until.get_or_insert_with(|| Instant::now() + Duration::from_secs(1));
                    if Instant::now() > end {
                        return;
                    }
                }
                if let Ok(n) = sock.recv(&mut buf)
                    && n >= 4
                {
                    replies.fetch_add(1, Ordering::Relaxed);
                    if buf[2] & 0x02 != 0 {
                        truncated.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Flood {
            threads: vec![sender, receiver],
            ..f
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

/// `n` queries for `name` from `ip`, one at a time, `gap` apart; how many were answered
/// NOERROR (each waits up to 1 s).
fn well_behaved(ip: &str, server: SocketAddr, name: &str, n: usize, gap: Duration) -> usize {
    let s = udp_from(ip);
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut ok = 0;
    let mut buf = [0u8; 4096];
    for i in 0..n {
        let id = (i as u16).wrapping_add(7);
        s.send_to(&query(name, RecordType::A, id, Some(1232)), server)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            let Ok(len) = s.recv(&mut buf) else { break };
            let m = decode(&buf[..len]);
            if m.metadata.id == id {
                if m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty() {
                    ok += 1;
                }
                break;
            }
        }
        std::thread::sleep(gap);
    }
    ok
}

/// A slow upstream answering NXDOMAIN for everything under `flood.test` after 20 ms.
async fn slow_upstream() -> Fake {
    Fake::start(|q: &Message, _| {
        Action::Delay(
            Duration::from_millis(20),
            nx_reply(q, "flood.test.", 60, 60),
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_is_limited_and_others_are_answered() {
    let up = slow_upstream().await;
    // 200 responses a second with a burst of 100 for each client; every 2nd limited one slips.
    let s = Server::sample(&format!(
        "forward:\n  upstreams: [\"{}\"]\n  timeout: 1s\nlimits:\n  rate:\n    responses_per_second: 200\n    burst: 100\n    slip: 2\n    log_interval: 1s\n",
        up.addr
    ));
    let dns = s.dns;
    // 10,000 queries a second of names that all miss, for 3 s.
    let mut flood = Flood::start(FLOODER, dns, "flood.test", 10);
    let started = Instant::now();
    let ok = tokio::task::spawn_blocking(move || {
        well_behaved(CLIENT, dns, CLUSTER_NAME, 200, Duration::from_millis(10))
    })
    .await
    .unwrap();
    // dig from the flooder's address while it floods: limited replies come back truncated at
    // the slip rate (one in two here), so a few tries see one.
    let mut tc = false;
    for _ in 0..10 {
        let out = dig_at(
            dns,
            &["-b", FLOODER, "+ignore", "+notcp", "x.flood.test", "A"],
        );
        if out.contains(" tc") && out.contains("flags:") {
            tc = true;
            break;
        }
    }
    while started.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let flood_time = started.elapsed();
    flood.stop();
    let sent = flood.sent.load(Ordering::Relaxed);
    let replies = flood.replies.load(Ordering::Relaxed);
    let truncated = flood.truncated.load(Ordering::Relaxed);
    let m = metrics(&s);
    let (limited, slipped) = (
        dropped(&m, "rate_limited"),
        dropped(&m, "rate_limited_slip"),
    );
    let seen_upstream = up.queries();
    eprintln!(
        "sent {sent} in {flood_time:?}, replies {replies} (TC {truncated}), upstream {seen_upstream}, limited {limited} slipped {slipped}, well-behaved {ok}/200"
    );
    assert!(sent > 10_000, "the flood ran: {sent}");
    // The well-behaved client is answered (all 200 in practice; a generous margin).
    assert!(ok >= 190, "well-behaved client answered {ok}/200");
    // The flooder gets no more than its limit: 200/s for the flood's length plus the burst
    // (and the well-behaved client's dig tries); the upstream sees no more than that.
    let allowed = 200.0 * flood_time.as_secs_f64() + 100.0;
    let answered = replies - truncated;
    assert!(
        (answered as f64) < allowed * 1.5,
        "flooder answered {answered}, limit {allowed}"
    );
    assert!(
        (seen_upstream as f64) < allowed * 1.5,
        "upstream saw {seen_upstream}, limit {allowed}"
    );
    assert!(limited + slipped > sent as f64 / 2.0, "most were limited");
    // Every 2nd limited reply slips (a per-client counter: exact up to the digs).
    let ratio = slipped / (limited + slipped);
    assert!((0.45..=0.55).contains(&ratio), "slip ratio {ratio}");
    assert!(truncated > 0 && tc, "TC replies reach the flooder and dig");
    // Bounded metric: reasons, never clients; the flooder is named in the log instead.
    assert!(!m.contains(FLOODER), "no client address in the metrics");
    let log = s.log_until(Duration::from_secs(5), |l| {
        l.contains("rate limited clients") && l.contains(FLOODER)
    });
    assert!(
        log.iter()
            .any(|l| l.contains("rate limited clients") && l.contains(FLOODER)),
        "the top limited clients are logged: {:?}",
        log.iter().rev().take(3).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn water_torture_keeps_cache_and_waiting_queries_bounded() {
    let up = slow_upstream().await;
    // Rate limiting off for this one: the bounds behind it are what is tested.
    let s = Server::sample(&format!(
        "forward:\n  upstreams: [\"{}\"]\n  timeout: 1s\n  max_concurrent: 20\ncache:\n  max_entries: 100\nlimits:\n  rate:\n    enabled: false\n",
        up.addr
    ));
    let dns = s.dns;
    let mut flood = Flood::start(FLOODER, dns, "flood.test", 5);
    let ok = tokio::task::spawn_blocking(move || {
        well_behaved(CLIENT, dns, CLUSTER_NAME, 100, Duration::from_millis(10))
    })
    .await
    .unwrap();
    let m = metrics(&s);
    flood.stop();
    let sent = flood.sent.load(Ordering::Relaxed);
    let entries = metric_sum(&m, "coredns_cache_entries{", &[]);
    let shed = dropped(&m, "max_concurrent");
    eprintln!("sent {sent}, cache entries {entries}, shed {shed}, well-behaved {ok}/100");
    assert!(sent > 2000, "{sent}");
    assert!(ok >= 95, "cluster answers unaffected: {ok}/100");
    assert!(entries <= 100.0, "cache within max_entries: {entries}");
    // 20 waiting at most, each 20 ms: about 1,000 a second reach the upstream; the rest of
    // the 5,000 a second are shed (REFUSED at once), not queued.
    assert!(shed > 0.0, "load was shed");
    assert!(
        (up.queries() as f64) < sent as f64 * 0.8,
        "upstream saw {} of {sent}",
        up.queries()
    );
}

/// Open descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain rlimit calls on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = want.min(lim.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// Open up to `n` TCP connections from `ip`, all at once; those that connected.
async fn connect_many(ip: &str, server: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let ip: IpAddr = ip.parse().unwrap();
    let tries = (0..n).map(|_| async move {
        let sock = tokio::net::TcpSocket::new_v4().ok()?;
        sock.bind(SocketAddr::new(ip, 0)).ok()?;
        tokio::time::timeout(Duration::from_secs(3), sock.connect(server))
            .await
            .ok()?
            .ok()
    });
    futures::future::join_all(tries)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slowloris_tcp_keep_descriptors_under_the_cap() {
    use tokio::io::AsyncWriteExt;
    raise_nofile(20_000);
    const CAP: usize = 300;
    let s = Server::sample(&format!(
        "limits:\n  tcp:\n    max_connections: {CAP}\n    max_connections_per_client: 100000\n    message_timeout: 1s\n"
    ));
    let (dns, pid) = (s.dns, s.child.id());
    // Settled: the workers and endpoints are open.
    assert_eq!(s.status(&[CLUSTER_NAME]), "NOERROR");
    let base = fds(pid);
    // 10,000 idle connections at once from one client.
    let idle = connect_many(FLOODER, dns, 10_000).await;
    let after_idle = fds(pid);
    // Let the server work through its accept queue first (accepting pauses while the oldest
    // idle connection closes), so that the slowloris connections below reach it rather than
    // an overflowing queue: until the evictions stop growing (bounded).
    let mut last = -1.0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = dropped(&metrics(&s), "tcp_evicted");
        if now == last {
            break;
        }
        last = now;
    }
    // 1,000 slowloris connections: a length prefix and part of a message, then nothing.
    let mut slow = connect_many(FLOODER, dns, 1000).await;
    for c in slow.iter_mut() {
        let _ = c.write_all(&[0, 40, 0x12, 0x34]).await;
    }
    let after_slow = fds(pid);
    // Another client is answered over UDP and over TCP meanwhile.
    let udp = dig_at(dns, &["-b", CLIENT, "+short", CLUSTER_NAME]);
    let tcp = dig_at(dns, &["-b", CLIENT, "+tcp", "+short", CLUSTER_NAME]);
    let peak = fds(pid);
    // Past the message timeout the stalled ones are closed. On a busy machine the last of the
    // flood may still wait in the accept queue (accepting pauses while the oldest idle
    // connection closes): wait for them, bounded.
    let mut m = String::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        m = metrics(&s);
        if dropped(&m, "tcp_stalled") > 0.0 || dropped(&m, "tcp_evicted") > 10_000.0 {
            break;
        }
    }
    eprintln!(
        "fds: base {base}, 10k idle {after_idle}, +1k slowloris {after_slow}, peak {peak}; connected {} idle, {} slow; evicted {}, stalled {}",
        idle.len(),
        slow.len(),
        dropped(&m, "tcp_evicted"),
        dropped(&m, "tcp_stalled")
    );
    assert!(idle.len() > 2000, "the flood connected: {}", idle.len());
    for n in [after_idle, after_slow, peak] {
        assert!(
            n <= base + CAP + 8,
            "{n} descriptors, cap {CAP} over {base}"
        );
    }
    assert!(!udp.trim().is_empty(), "UDP answered: {udp}");
    assert!(!tcp.trim().is_empty(), "TCP answered: {tcp}");
    assert!(
        dropped(&m, "tcp_evicted") > 1000.0,
        "idle connections evicted"
    );
    // That the slowloris connections themselves are closed is checked without the flood
    // before them (below): after 10,000 connections at once the kernel's accept queue may have
    // dropped some, and what it drops never reaches the server.
    drop(idle);
    drop(slow);
}

#[test]
fn limits_reload() {
    let s = Server::sample("limits:\n  rate:\n    responses_per_second: 1000\n");
    let dns = s.dns;
    let burst = |n: usize| {
        let sock = udp_from(FLOODER);
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        for i in 0..n {
            let _ = sock.send_to(&query(CLUSTER_NAME, RecordType::A, i as u16, None), dns);
        }
        let mut buf = [0u8; 1024];
        let mut got = 0;
        while sock.recv(&mut buf).is_ok() {
            got += 1;
        }
        got
    };
    // The default burst (2,000) takes 50 back to back.
    assert_eq!(burst(50), 50);
    let cfg = s.path("clusterdns.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "responses_per_second: 1000\n",
        "responses_per_second: 1\n    burst: 5\n    slip: 0\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let log = s.log_until(Duration::from_secs(10), |l| l.contains("config reloaded"));
    assert!(log.iter().any(|l| l.contains("config reloaded")), "{log:?}");
    // Now the new burst, 5, at most.
    let got = burst(50);
    assert!(got <= 5, "{got} answered after the reload");
    // Another client has its own bucket.
    assert_eq!(s.status(&["-b", CLIENT, CLUSTER_NAME]), "NOERROR");
}

/// 1,000 slowloris connections (a length prefix and part of a message, then nothing) are
/// closed: past the cap by eviction, the rest by the message timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    raise_nofile(20_000);
    const CAP: usize = 300;
    let s = Server::sample(&format!(
        "limits:\n  tcp:\n    max_connections: {CAP}\n    max_connections_per_client: 100000\n    message_timeout: 1s\n"
    ));
    let dns = s.dns;
    assert_eq!(s.status(&[CLUSTER_NAME]), "NOERROR");
    let mut slow = connect_many(FLOODER, dns, 1000).await;
    for c in slow.iter_mut() {
        let _ = c.write_all(&[0, 40, 0x12, 0x34]).await;
    }
    let mut m = String::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        m = metrics(&s);
        if dropped(&m, "tcp_stalled") > 0.0 {
            break;
        }
    }
    assert!(
        slow.len() > 500,
        "the slowloris clients connected: {}",
        slow.len()
    );
    assert!(
        dropped(&m, "tcp_stalled") > 0.0,
        "stalled connections closed"
    );
}
