//! DNS upstreams on 127.0.0.1 for the forwarding tests: small in-test ones (UDP and TCP on one
//! port) whose behaviour a test chooses per query (answer, answer late, truncate over UDP,
//! SERVFAIL, never answer), and a real Knot DNS (`knotd`) serving `example.test`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

use super::{bind_pair, free_port, query, require, wait_for};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

/// What the upstream does with one query.
pub(crate) enum Action {
    Reply(Message),
    /// Answer after a while (the UDP side keeps serving others meanwhile).
    Delay(Duration, Message),
}

pub(crate) type Handler = Arc<dyn Fn(&Message, Transport) -> Action + Send + Sync>;

/// A running fake upstream; stopped (sockets closed) on `stop` or drop.
pub(crate) struct Fake {
    pub addr: SocketAddr,
    pub udp: Arc<AtomicUsize>,
    pub tcp: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<(Transport, Message)>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Fake {
    pub(crate) async fn start(
        handler: impl Fn(&Message, Transport) -> Action + Send + Sync + 'static,
    ) -> Fake {
        let (udp, tcp) = bind_pair();
        for s in [udp.set_nonblocking(true), tcp.set_nonblocking(true)] {
            s.unwrap();
        }
        let (udp, tcp) = (
            UdpSocket::from_std(udp).unwrap(),
            TcpListener::from_std(tcp).unwrap(),
        );
        Self::serve(udp, tcp, Arc::new(handler))
    }

    /// Start on a given address (e.g. one a stopped fake used).
    pub(crate) async fn start_on(
        addr: SocketAddr,
        handler: impl Fn(&Message, Transport) -> Action + Send + Sync + 'static,
    ) -> Fake {
        for _ in 0..50 {
            if let Ok(udp) = UdpSocket::bind(addr).await
                && let Ok(tcp) = TcpListener::bind(addr).await
            {
                return Self::serve(udp, tcp, Arc::new(handler));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot bind {addr} again");
    }

    fn serve(udp: UdpSocket, tcp: TcpListener, handler: Handler) -> Fake {
        let addr = udp.local_addr().unwrap();
        let f = Fake {
            addr,
            udp: Arc::new(AtomicUsize::new(0)),
            tcp: Arc::new(AtomicUsize::new(0)),
            seen: Arc::new(Mutex::new(Vec::new())),
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        let udp = Arc::new(udp);
        {
            let (h, count, seen, tasks) = (
                handler.clone(),
                f.udp.clone(),
                f.seen.clone(),
                f.tasks.clone(),
            );
            let t = tokio::spawn(async move {
                let mut buf = vec![0u8; 65535];
                loop {
                    let Ok((n, src)) = udp.recv_from(&mut buf).await else {
                        return;
                    };
                    let Ok(q) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    seen.lock().unwrap().push((Transport::Udp, q.clone()));
                    let action = h(&q, Transport::Udp);
                    let udp = udp.clone();
                    let t = tokio::spawn(async move {
                        let m = match action {
                            Action::Reply(m) => m,
                            Action::Delay(d, m) => {
                                tokio::time::sleep(d).await;
                                m
                            }
                        };
                        let _ = udp.send_to(&m.to_vec().unwrap(), src).await;
                    });
                    tasks.lock().unwrap().push(t);
                }
            });
            f.tasks.lock().unwrap().push(t);
        }
        {
            let (h, count, seen, tasks) = (handler, f.tcp.clone(), f.seen.clone(), f.tasks.clone());
            let tasks2 = tasks.clone();
            let t = tokio::spawn(async move {
                loop {
                    let Ok((mut s, _)) = tcp.accept().await else {
                        return;
                    };
                    let (h, count, seen) = (h.clone(), count.clone(), seen.clone());
                    let t = tokio::spawn(async move {
                        loop {
                            let mut len = [0u8; 2];
                            if s.read_exact(&mut len).await.is_err() {
                                return;
                            }
                            let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
                            if s.read_exact(&mut buf).await.is_err() {
                                return;
                            }
                            let Ok(q) = Message::from_vec(&buf) else {
                                return;
                            };
                            count.fetch_add(1, Ordering::SeqCst);
                            seen.lock().unwrap().push((Transport::Tcp, q.clone()));
                            let m = match h(&q, Transport::Tcp) {
                                Action::Reply(m) => m,
                                Action::Delay(d, m) => {
                                    tokio::time::sleep(d).await;
                                    m
                                }
                            };
                            let b = m.to_vec().unwrap();
                            let mut framed = (b.len() as u16).to_be_bytes().to_vec();
                            framed.extend_from_slice(&b);
                            if s.write_all(&framed).await.is_err() {
                                return;
                            }
                        }
                    });
                    tasks2.lock().unwrap().push(t);
                }
            });
            tasks.lock().unwrap().push(t);
        }
        f
    }

    /// Close the sockets: later queries are refused by the kernel.
    pub(crate) fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    pub(crate) fn queries(&self) -> usize {
        self.udp.load(Ordering::SeqCst) + self.tcp.load(Ordering::SeqCst)
    }
}

/// An upstream that holds a port (UDP bound, TCP listening) but never answers.
pub(crate) struct Dead {
    pub addr: SocketAddr,
    _udp: std::net::UdpSocket,
    _tcp: std::net::TcpListener,
}

impl Dead {
    pub(crate) fn new() -> Dead {
        let (udp, tcp) = bind_pair();
        Dead {
            addr: udp.local_addr().unwrap(),
            _udp: udp,
            _tcp: tcp,
        }
    }
}

/// A reply skeleton for `q`: same ID and question, RD and CD copied, RA set, OPT if the query
/// had one.
pub(crate) fn reply(q: &Message) -> Message {
    let mut m = Message::response(q.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.checking_disabled = q.metadata.checking_disabled;
    m.metadata.recursion_available = true;
    m.add_queries(q.queries.clone());
    if let Some(e) = &q.edns {
        let mut o = Edns::new();
        o.set_max_payload(1232);
        o.set_dnssec_ok(e.flags().dnssec_ok);
        m.set_edns(o);
    }
    m
}

pub(crate) fn qname(q: &Message) -> Name {
    q.queries[0].name().clone()
}

pub(crate) fn qtype(q: &Message) -> RecordType {
    q.queries[0].query_type()
}

/// A records for the question name.
pub(crate) fn a_reply(q: &Message, ips: &[Ipv4Addr], ttl: u32) -> Message {
    let mut m = reply(q);
    for ip in ips {
        m.add_answer(Record::from_rdata(qname(q), ttl, RData::A(A(*ip))));
    }
    m
}

/// An SOA for the negative answers of `zone`.
pub(crate) fn soa(zone: &str, ttl: u32, minimum: u32) -> Record {
    let z = Name::from_ascii(zone).unwrap();
    let soa = SOA::new(
        Name::from_ascii(format!("ns.{zone}")).unwrap(),
        Name::from_ascii(format!("admin.{zone}")).unwrap(),
        1,
        3600,
        600,
        86400,
        minimum,
    );
    Record::from_rdata(z, ttl, RData::SOA(soa))
}

/// NXDOMAIN with an SOA (TTL `soa_ttl`, MINIMUM `minimum`).
pub(crate) fn nx_reply(q: &Message, zone: &str, soa_ttl: u32, minimum: u32) -> Message {
    let mut m = reply(q);
    m.metadata.response_code = ResponseCode::NXDomain;
    m.add_authority(soa(zone, soa_ttl, minimum));
    m
}

/// NOERROR without answers (NODATA) with an SOA.
pub(crate) fn nodata_reply(q: &Message, zone: &str, soa_ttl: u32, minimum: u32) -> Message {
    let mut m = reply(q);
    m.add_authority(soa(zone, soa_ttl, minimum));
    m
}

pub(crate) fn servfail(q: &Message) -> Message {
    let mut m = reply(q);
    m.metadata.response_code = ResponseCode::ServFail;
    m
}

/// A reply with authority and additional sections and AA/AD set.
pub(crate) fn rich_reply(q: &Message) -> Message {
    let mut m = a_reply(
        q,
        &[Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)],
        120,
    );
    m.metadata.authoritative = true;
    m.metadata.authentic_data = true;
    let zone = Name::from_ascii("example.test.").unwrap();
    let ns = Name::from_ascii("ns1.example.test.").unwrap();
    m.add_authority(Record::from_rdata(zone, 300, RData::NS(NS(ns.clone()))));
    m.add_additional(Record::from_rdata(
        ns,
        300,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 53))),
    ));
    m
}

/// A real `knotd` serving `example.test` on a free loopback port; killed on drop.
pub(crate) struct Knot {
    child: std::process::Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts [`Knot`] and waits until it answers. `example.test` holds `www` (A and AAAA),
/// `alias` (CNAME to www), `big` (100 A records: more than a UDP answer holds) and an SOA
/// whose MINIMUM is 2 s.
pub(crate) fn start_knot() -> Knot {
    let bin = require("knotd");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let mut zone = String::from(
        "$ORIGIN example.test.\n$TTL 300\n\
         @ 300 IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 2\n\
         @ IN NS ns\nns IN A 127.0.0.1\n\
         www 60 IN A 192.0.2.10\nwww 60 IN AAAA 2001:db8::10\n\
         alias 60 IN CNAME www\n",
    );
    for i in 1..=100 {
        zone.push_str(&format!("big 60 IN A 198.51.100.{i}\n"));
    }
    std::fs::write(dir.path().join("example.test.zone"), zone).unwrap();
    let conf = format!(
        "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\n\
         database:\n    storage: {d}\n\
         log:\n  - target: stderr\n    any: error\n\
         zone:\n  - domain: example.test\n    file: {d}/example.test.zone\n"
    );
    std::fs::write(dir.path().join("knot.conf"), conf).unwrap();
    let child = std::process::Command::new(bin)
        .arg("-c")
        .arg(dir.path().join("knot.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start knotd");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let k = Knot {
        child,
        addr,
        _dir: dir,
    };
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let q = query("www.example.test.", RecordType::A, 77, None);
    let mut buf = [0u8; 512];
    let answers = wait_for(Duration::from_secs(10), || {
        let _ = sock.send_to(&q, addr);
        sock.recv_from(&mut buf).is_ok()
    });
    assert!(answers, "knotd did not start answering on {addr}");
    k
}
