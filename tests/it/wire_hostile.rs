//! Hostile and broken packets against the real binary, over UDP and TCP: the answer the RFCs
//! give each (FORMERR, NOTIMP, REFUSED, BADVERS) or silence (a response, a runt, a spoofed
//! source port 0), never a reply larger than the client takes, never a crash; and TCP itself
//! (RFC 7766): pipelined queries answered as they complete, out of order, messages that are not
//! queries skipped, the idle timeout.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::forward::fake_upstream::{Action, Fake, a_reply};
use crate::support::*;

/// A namespace with a ClusterIP service and a headless service of 100 endpoints (an A answer
/// of 1.6 KB: larger than any UDP client takes).
fn objects() -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: h}}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: one, namespace: h}\n  spec: {clusterIP: 10.9.0.1}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: many, namespace: h}\n  spec: {clusterIP: None}\n- apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n  metadata: {name: many-1, namespace: h, labels: {kubernetes.io/service-name: many}}\n  addressType: IPv4\n  endpoints:\n",
    );
    for i in 0..100 {
        y += &format!(
            "  - {{addresses: [\"10.9.1.{}\"], conditions: {{ready: true}}}}\n",
            i + 1
        );
    }
    y
}

fn start(extra: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("objects.yaml");
    std::fs::write(&path, objects()).unwrap();
    let s = Server::start(&base_config(&path, extra), &[]);
    std::mem::forget(dir);
    s
}

/// Send over UDP and wait at most `wait` for a reply.
fn udp_try(dns: SocketAddr, msg: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.send_to(msg, dns).unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    let mut m = Vec::new();
    for v in [id, flags, qd, an, ns, ar] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    m
}

const NAME: &[u8] = b"\x03one\x01h\x03svc\x07cluster\x05local\x00";

/// The question "one.h.svc.cluster.local A IN".
fn question() -> Vec<u8> {
    let mut q = NAME.to_vec();
    q.extend_from_slice(&[0, 1, 0, 1]);
    q
}

/// An OPT record (payload 1232) with `options`.
fn opt(version: u8, options: &[u8]) -> Vec<u8> {
    let mut o = vec![0, 0, 41, 0x04, 0xD0, 0, version, 0, 0];
    o.extend_from_slice(&(options.len() as u16).to_be_bytes());
    o.extend_from_slice(options);
    o
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Silence,
    /// This rcode; the question echoed or not; an OPT record or not.
    Rcode(u16, bool, bool),
}

fn cases() -> Vec<(&'static str, Vec<u8>, Want)> {
    use Want::*;
    let q = question();
    let with = |h: Vec<u8>, rest: &[&[u8]]| {
        let mut m = h;
        for r in rest {
            m.extend_from_slice(r);
        }
        m
    };
    vec![
        ("empty", vec![], Silence),
        ("runt", vec![0x12, 0x34, 1, 0, 0, 1], Silence),
        (
            "a response (QR=1)",
            with(header(1, 0x8180, 1, 0, 0, 0), &[&q]),
            Silence,
        ),
        (
            "a response with an error",
            with(header(1, 0x8183, 1, 0, 0, 0), &[&q]),
            Silence,
        ),
        (
            "a good query",
            with(header(2, 0x0100, 1, 0, 0, 0), &[&q]),
            Rcode(0, true, false),
        ),
        (
            "IQUERY",
            with(header(3, 0x0900, 1, 0, 0, 0), &[&q]),
            Rcode(4, true, false),
        ),
        (
            "STATUS",
            with(header(4, 0x1100, 1, 0, 0, 0), &[&q]),
            Rcode(4, true, false),
        ),
        (
            "NOTIFY",
            with(header(5, 0x2000, 1, 0, 0, 0), &[&q]),
            Rcode(4, true, false),
        ),
        (
            "UPDATE",
            with(header(6, 0x2800, 1, 0, 0, 0), &[&q]),
            Rcode(4, true, false),
        ),
        (
            "opcode 15",
            with(header(7, 0x7800, 1, 0, 0, 0), &[&q]),
            Rcode(4, true, false),
        ),
        (
            "no question",
            header(8, 0x0100, 0, 0, 0, 0),
            Rcode(1, false, false),
        ),
        (
            "two questions",
            with(header(9, 0x0100, 2, 0, 0, 0), &[&q, &q]),
            Rcode(1, false, false),
        ),
        (
            "QDCOUNT 65535",
            with(header(10, 0x0100, 65535, 0, 0, 0), &[&q]),
            Rcode(1, false, false),
        ),
        (
            "question cut short",
            with(header(11, 0x0100, 1, 0, 0, 0), &[&q[..10]]),
            Rcode(1, false, false),
        ),
        (
            "type and class missing",
            with(header(12, 0x0100, 1, 0, 0, 0), &[NAME]),
            Rcode(1, false, false),
        ),
        (
            "pointer loop",
            with(
                header(13, 0x0100, 1, 0, 0, 0),
                &[&[1, b'x', 0xC0, 12, 0, 1, 0, 1]],
            ),
            Rcode(1, false, false),
        ),
        (
            "forward pointer",
            with(
                header(14, 0x0100, 1, 0, 0, 0),
                &[&[0xC0, 14, 1, b'x', 0, 0, 1, 0, 1]],
            ),
            Rcode(1, false, false),
        ),
        (
            "label type 0x80",
            with(
                header(15, 0x0100, 1, 0, 0, 0),
                &[&[0x81, b'x', 0, 0, 1, 0, 1]],
            ),
            Rcode(1, false, false),
        ),
        (
            "label past the end",
            with(header(16, 0x0100, 1, 0, 0, 0), &[&[63, b'x', b'y']]),
            Rcode(1, false, false),
        ),
        (
            "name over 255 bytes",
            with(
                header(17, 0x0100, 1, 0, 0, 0),
                &[
                    &[[63u8; 1].as_slice(), &[b'a'; 63]].concat().repeat(5),
                    &[0, 0, 1, 0, 1],
                ],
            ),
            Rcode(1, false, false),
        ),
        (
            "ANCOUNT beyond the message",
            with(header(18, 0x0100, 1, 3, 0, 0), &[&q]),
            Rcode(1, true, false),
        ),
        (
            "ARCOUNT 65535",
            with(header(19, 0x0100, 1, 0, 0, 65535), &[&q, &opt(0, &[])]),
            Rcode(1, true, false),
        ),
        (
            "two OPT records",
            with(
                header(20, 0x0100, 1, 0, 0, 2),
                &[&q, &opt(0, &[]), &opt(0, &[])],
            ),
            Rcode(1, true, false),
        ),
        (
            "OPT in the answer section",
            with(header(21, 0x0100, 1, 1, 0, 0), &[&q, &opt(0, &[])]),
            Rcode(1, true, false),
        ),
        (
            "OPT owned by a name",
            with(
                header(22, 0x0100, 1, 0, 0, 1),
                &[&q, &[1, b'a'], &opt(0, &[])[1..]],
            ),
            Rcode(1, true, false),
        ),
        (
            "options overrun the OPT",
            with(
                header(23, 0x0100, 1, 0, 0, 1),
                &[&q, &opt(0, &[0, 10, 0, 50, 1, 2])],
            ),
            Rcode(1, true, false),
        ),
        (
            "a question for OPT",
            with(header(24, 0x0100, 1, 0, 0, 0), &[NAME, &[0, 41, 0, 1]]),
            Rcode(1, true, false),
        ),
        (
            "EDNS version 1",
            with(header(25, 0x0100, 1, 0, 0, 1), &[&q, &opt(1, &[])]),
            Rcode(16, true, true),
        ),
        (
            "EDNS version 255",
            with(header(26, 0x0100, 1, 0, 0, 1), &[&q, &opt(255, &[])]),
            Rcode(16, true, true),
        ),
        (
            "class CHAOS",
            with(header(27, 0x0100, 1, 0, 0, 0), &[NAME, &[0, 16, 0, 3]]),
            Rcode(5, true, false),
        ),
        (
            "class NONE",
            with(header(28, 0x0100, 1, 0, 0, 0), &[NAME, &[0, 1, 0, 254]]),
            Rcode(5, true, false),
        ),
        (
            "class 4711",
            with(
                header(29, 0x0100, 1, 0, 0, 1),
                &[NAME, &[0, 1, 0x12, 0x67], &opt(0, &[])],
            ),
            Rcode(5, true, true),
        ),
        (
            "AXFR of the zone",
            with(
                header(30, 0x0000, 1, 0, 0, 0),
                &[b"\x07cluster\x05local\x00", &[0, 252, 0, 1]],
            ),
            Rcode(5, true, false),
        ),
        (
            "IXFR of the zone",
            with(
                header(31, 0x0000, 1, 0, 0, 0),
                &[b"\x07cluster\x05local\x00", &[0, 251, 0, 1]],
            ),
            Rcode(5, true, false),
        ),
        (
            "AXFR of another zone",
            with(
                header(32, 0x0000, 1, 0, 0, 0),
                &[b"\x07example\x00", &[0, 252, 0, 1]],
            ),
            Rcode(5, true, false),
        ),
        (
            "unknown type",
            with(header(33, 0x0100, 1, 0, 0, 0), &[NAME, &[0xFF, 0x00, 0, 1]]),
            Rcode(0, true, false),
        ),
        (
            "trailing garbage",
            with(header(34, 0x0100, 1, 0, 0, 0), &[&q, &[0xde, 0xad]]),
            Rcode(0, true, false),
        ),
        (
            "unknown options",
            with(
                header(35, 0x0100, 1, 0, 0, 1),
                &[&q, &opt(0, &[0xFD, 0xE9, 0, 2, 1, 2, 0, 8, 0, 0])],
            ),
            Rcode(0, true, true),
        ),
    ]
}

fn check_reply(what: &str, msg: &[u8], r: &[u8], want: Want) {
    let Want::Rcode(rcode, echo, with_opt) = want else {
        panic!("{what}: a reply where silence was due: {r:02x?}");
    };
    let m = Message::from_vec(r).unwrap_or_else(|e| panic!("{what}: undecodable reply: {e}"));
    assert_eq!(&r[0..2], &msg[0..2], "{what}: ID");
    assert_eq!(r[2] & 0x80, 0x80, "{what}: QR");
    assert_eq!(r[2] & 0x78, msg[2] & 0x78, "{what}: opcode copied");
    let full_rcode = u16::from(r[3] & 0x0F)
        | m.edns
            .as_ref()
            .map_or(0, |e| u16::from(e.rcode_high()) << 4);
    assert_eq!(full_rcode, rcode, "{what}: rcode of {r:02x?}");
    assert_eq!(m.queries.len(), echo as usize, "{what}: question echoed");
    assert_eq!(m.edns.is_some(), with_opt, "{what}: OPT");
    if echo {
        let n = question_len(msg);
        assert_eq!(
            &r[12..12 + n],
            &msg[12..12 + n],
            "{what}: the question as sent"
        );
    }
}

#[test]
fn each_broken_packet_gets_the_rfc_answer_over_udp_and_tcp() {
    let s = start("");
    let dropped_before = s.metric_sum("clusterdns_dropped_total{reason=\"malformed\"}", &[]);
    let mut silent = 0;
    for (what, msg, want) in cases() {
        // UDP: silence is waited for briefly; replies come at once.
        let wait = if want == Want::Silence {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(3)
        };
        match (udp_try(s.dns, &msg, wait), want) {
            (None, Want::Silence) => silent += 1,
            (None, _) => panic!("{what}: no reply over UDP"),
            (Some(r), want) => {
                assert!(
                    r.len() <= 512,
                    "{what}: a reply larger than the client takes"
                );
                check_reply(&format!("{what} (udp)"), &msg, &r, want);
            }
        }
        // TCP: the same, and the connection goes on after it (silence included).
        let mut c = TcpStream::connect(s.dns).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let follow = with_id(query("one.h.svc.cluster.local", 1, 0, None), 0xF0F0);
        let mut framed = Vec::new();
        for m in [&msg, &follow] {
            framed.extend_from_slice(&(m.len() as u16).to_be_bytes());
            framed.extend_from_slice(m);
        }
        c.write_all(&framed).unwrap();
        let first = read_frame(&mut c).unwrap_or_else(|| panic!("{what}: connection closed"));
        if want == Want::Silence {
            assert_eq!(
                &first[0..2],
                &[0xF0, 0xF0],
                "{what}: only the follow-up is answered"
            );
        } else {
            check_reply(&format!("{what} (tcp)"), &msg, &first, want);
            let second = read_frame(&mut c).expect("follow-up answered");
            assert_eq!(&second[0..2], &[0xF0, 0xF0]);
        }
    }
    // Every message that got silence, over UDP and over TCP, was counted as dropped.
    let dropped =
        s.metric_sum("clusterdns_dropped_total{reason=\"malformed\"}", &[]) - dropped_before;
    assert_eq!(
        dropped,
        silent as f64 * 2.0,
        "drops for {silent} silent messages (UDP and TCP)"
    );
    // Still serving.
    assert_eq!(
        s.dig(&["+short", "one.h.svc.cluster.local"]).trim(),
        "10.9.0.1"
    );
}

/// Length of the (uncompressed) question of a message.
fn question_len(msg: &[u8]) -> usize {
    let mut p = 12;
    while msg[p] != 0 {
        p += 1 + msg[p] as usize;
    }
    p + 1 + 4 - 12
}

fn with_id(mut m: Vec<u8>, id: u16) -> Vec<u8> {
    m[0..2].copy_from_slice(&id.to_be_bytes());
    m
}

fn read_frame(c: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    c.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    c.read_exact(&mut buf).ok()?;
    Some(buf)
}

#[test]
fn replies_never_exceed_what_the_client_takes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // An upstream with a 2 KB answer, over UDP truncated by itself to what we advertise.
    let up = rt.block_on(Fake::start(|q, _| {
        let ips: Vec<Ipv4Addr> = (0..120).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect();
        Action::Reply(a_reply(q, &ips, 300))
    }));
    let s = start(&format!("forward:\n  upstreams: [\"{}\"]\n", up.addr));
    for name in ["many.h.svc.cluster.local", "big.example"] {
        for (edns, limit) in [
            (None, 512),
            (Some(0u16), 512),
            (Some(100), 512),
            (Some(512), 512),
            (Some(800), 800),
            (Some(1232), 1232),
            (Some(4096), 1232),
            (Some(65535), 1232),
        ] {
            let q = query(name, 1, 0x7777, edns);
            let r = udp_exchange(s.dns, &q).expect("answered");
            assert!(r.len() <= limit, "{name} {edns:?}: {} bytes", r.len());
            let m = Message::from_vec(&r).unwrap();
            assert!(m.metadata.truncation, "{name} {edns:?}: cut, so TC");
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert!(
                !m.answers.is_empty(),
                "{name} {edns:?}: whole records that fit"
            );
            assert_eq!(
                m.edns.is_some(),
                edns.is_some(),
                "{name} {edns:?}: OPT kept"
            );
            // Over TCP the whole answer.
            let t = tcp_exchange(s.dns, &[q]).remove(0);
            let mt = Message::from_vec(&t).unwrap();
            assert!(
                !mt.metadata.truncation && mt.answers.len() >= 100,
                "{name} over TCP"
            );
        }
    }
}

#[test]
fn mutated_queries_never_break_it() {
    let s = start("");
    let seeds: Vec<Vec<u8>> = cases()
        .into_iter()
        .map(|(_, m, _)| m)
        .filter(|m| m.len() >= 12)
        .collect();
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut answered = 0;
    for i in 0..3000u32 {
        let mut m = seeds[(next() % seeds.len() as u64) as usize].clone();
        for _ in 0..1 + next() % 4 {
            match next() % 4 {
                0 if !m.is_empty() => {
                    let at = (next() % m.len() as u64) as usize;
                    m[at] = next() as u8;
                }
                1 => m.truncate((next() % (m.len() as u64 + 1)) as usize),
                2 => m.push(next() as u8),
                _ if m.len() >= 12 => {
                    let at = 4 + 2 * (next() % 4) as usize;
                    m[at..at + 2].copy_from_slice(&(next() as u16 % 4).to_be_bytes());
                }
                _ => {}
            }
        }
        if m.len() >= 2 {
            m[0..2].copy_from_slice(&(i as u16).to_be_bytes());
        }
        sock.send_to(&m, s.dns).unwrap();
        if m.len() < 12 || m[2] & 0x80 != 0 {
            continue; // silence is due; checked at the end
        }
        let mut buf = [0u8; 4096];
        let (n, _) = sock
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no reply to {m:02x?}: {e}"));
        let r = &buf[..n];
        assert_eq!(&r[0..2], &m[0..2], "a reply to this query, not another");
        let reply =
            Message::from_vec(r).unwrap_or_else(|e| panic!("undecodable reply to {m:02x?}: {e}"));
        assert!(r.len() <= 512 || reply.edns.is_some(), "size");
        answered += 1;
    }
    assert!(answered > 1000, "{answered}");
    // Nothing answered the responses and runts.
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 4096];
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "a reply to a response or a runt"
    );
    assert_eq!(
        s.dig(&["+short", "one.h.svc.cluster.local"]).trim(),
        "10.9.0.1"
    );
}

/// A datagram from 127.0.0.1 port 0 (a spoofed source: no reply can reach it) is dropped, not
/// answered. Needs a raw socket (root).
#[test]
fn source_port_zero_is_never_answered() {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = start("");
    let raw = match Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    ) {
        Ok(r) => r,
        Err(e) => panic!("a raw socket needs root (the tests run as root in CI): {e}"),
    };
    let dns = match s.dns {
        SocketAddr::V4(a) => a,
        _ => unreachable!(),
    };
    let payload = query("one.h.svc.cluster.local", 1, 0x0A0A, None);
    let udp_len = 8 + payload.len();
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1];
    p.extend_from_slice(&dns.ip().octets());
    p[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]); // source port 0
    p.extend_from_slice(&dns.port().to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]); // no checksum (IPv4 allows it)
    p.extend_from_slice(&payload);
    let requests = "coredns_dns_requests_total";
    let dropped = "clusterdns_dropped_total{reason=\"malformed\"}";
    let (r0, d0) = (s.metric_sum(requests, &[]), s.metric_sum(dropped, &[]));
    raw.send_to(&p, &SocketAddr::V4(dns).into()).unwrap();
    // The same query from a real port is answered and counted.
    let r = udp_exchange(s.dns, &payload).expect("answered from a real port");
    assert_eq!(Message::from_vec(&r).unwrap().answers.len(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while s.metric_sum(dropped, &[]) < d0 + 1.0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        s.metric_sum(dropped, &[]),
        d0 + 1.0,
        "the port-0 datagram was dropped"
    );
    assert_eq!(
        s.metric_sum(requests, &[]),
        r0 + 1.0,
        "only the real query was answered"
    );
}

#[test]
fn tcp_pipelined_queries_are_answered_as_they_complete() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(Fake::start(|q, _| {
        let name = q.queries[0].name().to_ascii();
        let r = a_reply(q, &[Ipv4Addr::new(192, 0, 2, 1)], 60);
        if name.starts_with("slow") {
            Action::Delay(Duration::from_millis(800), r)
        } else {
            Action::Reply(r)
        }
    }));
    let s = start(&format!("forward:\n  upstreams: [\"{}\"]\n", up.addr));
    let mut c = TcpStream::connect(s.dns).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let msgs = [
        with_id(query("slow.example", 1, 0, None), 1),
        with_id(query("one.h.svc.cluster.local", 1, 0, None), 2),
        with_id(query("fast.example", 1, 0, None), 3),
        with_id(header(9, 0x8180, 0, 0, 0, 0), 4), // a response: skipped
        vec![],                                    // an empty message: skipped
        with_id(query("many.h.svc.cluster.local", 28, 0, None), 5),
    ];
    let mut framed = Vec::new();
    for m in &msgs {
        framed.extend_from_slice(&(m.len() as u16).to_be_bytes());
        framed.extend_from_slice(m);
    }
    c.write_all(&framed).unwrap();
    let mut order = Vec::new();
    for _ in 0..4 {
        let r = read_frame(&mut c).expect("reply");
        let m = Message::from_vec(&r).unwrap();
        order.push(m.metadata.id);
        if m.metadata.id == 1 {
            assert_eq!(m.answers[0].record_type(), RecordType::A);
        }
    }
    assert_eq!(
        order.last(),
        Some(&1),
        "the slow upstream's answer comes last: {order:?}"
    );
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, vec![1, 2, 3, 5]);
}

#[test]
fn tcp_idle_connections_are_closed_busy_ones_kept() {
    let s = start("server:\n  tcp_idle_timeout: 1s\n");
    // Busy: a query every 300 ms for 2 s keeps it open.
    let mut c = TcpStream::connect(s.dns).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for i in 0..7u16 {
        let q = with_id(query("one.h.svc.cluster.local", 1, 0, None), i);
        let mut f = (q.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(&q);
        c.write_all(&f).unwrap();
        assert_eq!(
            &read_frame(&mut c).expect("answered")[0..2],
            &i.to_be_bytes()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Idle: closed by the server (EOF), well before the 10 s the test waits.
    let mut idle = TcpStream::connect(s.dns).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 1];
    assert_eq!(idle.read(&mut b).expect("closed, not timed out"), 0);
    // A message cut off by the client's close does no harm.
    let mut cut = TcpStream::connect(s.dns).unwrap();
    cut.write_all(&[0, 100, 1, 2, 3]).unwrap();
    drop(cut);
    assert_eq!(
        s.dig(&["+tcp", "+short", "one.h.svc.cluster.local"]).trim(),
        "10.9.0.1"
    );
}
