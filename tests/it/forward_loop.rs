//! A loop never stops the server. A small relay forwarder on loopback sends clusterdns's
//! queries back to it (clusterdns → relay → clusterdns, as a misconfigured node resolver does),
//! once before clusterdns starts and once after it is up; another relay does the same for a
//! stub domain. The looping names get SERVFAIL within 2 seconds (the clients here wait no
//! longer), the loop is logged once per loop with the relay's address and counted in
//! `clusterdns_forward_loops_total`, the cluster zone and the other upstreams keep serving, and
//! forwarding comes back by itself once the relay answers instead of looping.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::Message;

use crate::forward::fake_upstream::{Action, Fake, a_reply};
use crate::support::*;

const LOOP: u8 = 0;
const ANSWER: u8 = 1;
/// Loop, with a message ID of the relay's own (as dnsmasq or systemd-resolved would).
const LOOP_NEW_ID: u8 = 2;

/// The relay: every query it gets goes to `target` (clusterdns) unchanged, and the reply back
/// to the asker; or, in ANSWER mode, it answers 192.0.2.77 itself.
struct Relay {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    relayed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Relay {
    fn start(target: SocketAddr, mode: u8) -> Relay {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let r = Relay {
            addr: sock.local_addr().unwrap(),
            mode: Arc::new(AtomicU8::new(mode)),
            relayed: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (mode, relayed, stop) = (r.mode.clone(), r.relayed.clone(), r.stop.clone());
        std::thread::spawn(move || {
            let sock = Arc::new(sock);
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Acquire) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let msg = buf[..n].to_vec();
                if mode.load(Ordering::Acquire) == ANSWER {
                    if let Ok(q) = Message::from_vec(&msg) {
                        let r = a_reply(&q, &[Ipv4Addr::new(192, 0, 2, 77)], 60);
                        let _ = sock.send_to(&r.to_vec().unwrap(), from);
                    }
                    continue;
                }
                relayed.fetch_add(1, Ordering::AcqRel);
                let sock = sock.clone();
                let new_id = mode.load(Ordering::Acquire) == LOOP_NEW_ID;
                std::thread::spawn(move || {
                    let mut msg = msg;
                    let id = [msg[0], msg[1]];
                    if new_id {
                        msg[0] ^= 0x5A;
                        msg[1] ^= 0xA5;
                    }
                    let out = UdpSocket::bind("127.0.0.1:0").unwrap();
                    out.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    out.connect(target).unwrap();
                    let _ = out.send(&msg);
                    let mut b = [0u8; 4096];
                    if let Ok(n) = out.recv(&mut b) {
                        b[0..2].copy_from_slice(&id);
                        let _ = sock.send_to(&b[..n], from);
                    }
                });
            }
        });
        r
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::Release);
    }
}

/// A free loopback port for clusterdns (UDP and TCP), known before it starts so the relays
/// can point at it.
fn free_dns_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `dig` waiting at most 2 seconds, one try: the status and the answer addresses.
fn ask(s: &Server, name: &str) -> (String, Vec<String>) {
    let out = s.dig(&["+time=2", "+tries=1", name, "A"]);
    let status = dig_status(&out)
        .unwrap_or_else(|| panic!("{name}: no answer within 2 s:\n{out}"))
        .to_string();
    let ips = out
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains("\tA\t"))
        .filter_map(|l| l.rsplit('\t').next().map(str::to_string))
        .collect();
    (status, ips)
}

fn loops_metric(s: &Server, to: SocketAddr) -> f64 {
    s.metric_sum(
        &format!("clusterdns_forward_loops_total{{to=\"{to}\"}}"),
        &[],
    )
}

/// Start the binary at info level (the loop lines are what this test reads): its log, every
/// line from the start (the loop found at start-up is reported among the start-up lines), is
/// [`Server::log`].
fn start_logged(cfg: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Server::command(&dir, cfg, &[]);
    cmd.env("CLUSTERDNS_LOG", "info");
    Server::spawn(cmd, dir)
}

/// Log lines reporting a loop through `to`.
fn loop_lines(log: &Mutex<Vec<String>>, to: SocketAddr) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("forwarding loop:") && l.contains(&to.to_string()))
        .count()
}

#[test]
fn loops_through_a_relay_fail_fast_and_heal() {
    let port = free_dns_port();
    let me = SocketAddr::from(([127, 0, 0, 1], port));
    // Started before clusterdns: the default upstream and a stub domain's loop back to it.
    let relay = Relay::start(me, LOOP);
    let stub_relay = Relay::start(me, LOOP);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let good = rt.block_on(Fake::start(|q, _| {
        Action::Reply(a_reply(q, &[Ipv4Addr::new(192, 0, 2, 55)], 60))
    }));
    let dir = tempfile::tempdir().unwrap();
    let objects = write_objects(dir.path(), ONE_SERVICE);
    let extra = format!(
        "forward:\n  upstreams: [\"{}\"]\n  stub_domains:\n    good.example: [\"{}\"]\n    loopy.example: [\"{}\"]\n",
        relay.addr, good.addr, stub_relay.addr
    );
    let cfg = base_config(&objects, &extra).replace("127.0.0.1:0\"]", &format!("{me}\"]"));
    let mut s = start_logged(&cfg);
    let log = s.log.clone();
    assert_eq!(s.dns, me);

    // The loop at start-up: found by the start-up probes.
    assert!(
        wait_for(Duration::from_secs(10), || loops_metric(&s, relay.addr)
            == 1.0
            && loops_metric(&s, stub_relay.addr) == 1.0),
        "both loops counted"
    );
    for i in 0..3 {
        assert_eq!(ask(&s, &format!("start{i}.example")).0, "SERVFAIL");
        assert_eq!(ask(&s, &format!("n{i}.loopy.example")).0, "SERVFAIL");
        // Everything else keeps being served.
        assert_eq!(ask(&s, "a.x.svc.cluster.local").1, ["10.9.0.1"]);
        assert_eq!(ask(&s, &format!("n{i}.good.example")).1, ["192.0.2.55"]);
    }
    assert_eq!(
        loop_lines(&log, relay.addr),
        1,
        "logged once: {:#?}",
        log.lock().unwrap()
    );
    assert_eq!(
        loop_lines(&log, stub_relay.addr),
        1,
        "{:#?}",
        log.lock().unwrap()
    );
    assert_eq!(loops_metric(&s, relay.addr), 1.0, "counted once");

    // The relay answers instead: forwarding comes back by itself.
    relay.set(ANSWER);
    stub_relay.set(ANSWER);
    assert!(
        wait_for(Duration::from_secs(10), || ask(&s, "back.example").1
            == ["192.0.2.77"]),
        "forwarding recovered"
    );
    assert!(wait_for(Duration::from_secs(10), || {
        ask(&s, "back.loopy.example").1 == ["192.0.2.77"]
    }));

    // A loop that forms while clusterdns is up.
    relay.set(LOOP);
    let before = relay.relayed.load(Ordering::Acquire);
    assert_eq!(ask(&s, "later.example").0, "SERVFAIL", "within 2 s");
    assert!(
        relay.relayed.load(Ordering::Acquire) > before,
        "the query went round"
    );
    assert_eq!(ask(&s, "later2.example").0, "SERVFAIL");
    assert_eq!(ask(&s, "a.x.svc.cluster.local").1, ["10.9.0.1"]);
    assert_eq!(ask(&s, "later.good.example").1, ["192.0.2.55"]);
    assert_eq!(
        ask(&s, "later.loopy.example").1,
        ["192.0.2.77"],
        "the other relay is fine"
    );
    assert!(wait_for(Duration::from_secs(5), || loops_metric(
        &s, relay.addr
    ) == 2.0));
    assert_eq!(
        loop_lines(&log, relay.addr),
        2,
        "one line per loop: {:#?}",
        log.lock().unwrap()
    );
    relay.set(ANSWER);
    assert!(wait_for(Duration::from_secs(10), || {
        ask(&s, "healed.example").1 == ["192.0.2.77"]
    }));

    // A relay that gives our queries IDs of its own: found by the slow try, still within 2 s.
    relay.set(LOOP_NEW_ID);
    assert_eq!(ask(&s, "renamed.example").0, "SERVFAIL", "within 2 s");
    assert!(wait_for(Duration::from_secs(5), || loops_metric(
        &s, relay.addr
    ) == 3.0));
    assert_eq!(ask(&s, "a.x.svc.cluster.local").1, ["10.9.0.1"]);
    relay.set(ANSWER);
    assert!(wait_for(Duration::from_secs(10), || {
        ask(&s, "healed2.example").1 == ["192.0.2.77"]
    }));
    // The server never exited.
    assert!(s.child.try_wait().unwrap().is_none());
}
