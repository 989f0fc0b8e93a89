//! The one wire layer against hickory-proto. A large generated set of queries — mixed case,
//! compression pointers in the question, EDNS options, unknown classes and types, QDCOUNT other
//! than 1, names of the cluster zone and names forwarded to a loopback upstream — is sent as is.
//! hickory-proto decodes each query and encodes it again in its own plain form; that form is
//! sent too. Whatever the bytes, a query means what hickory reads in it, so both must get the
//! same answer, compared decoded: ID, flags, rcode, the question (case), every record of every
//! section with its TTL, EDNS. A query hickory cannot read (or with other than one question)
//! must get FORMERR without a question. Over TCP every query must get the UDP answer (or, where
//! UDP truncated, more of it).

use std::net::{Ipv4Addr, SocketAddr};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::forward::fake_upstream::{Action, Fake, reply};
use crate::support::*;

/// The sample cluster, forwarding everything else to `upstream` (no cache: every forwarded
/// answer is the upstream's own, TTLs included).
fn start(upstream: SocketAddr) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("cluster.yaml");
    std::fs::copy(repo().join("config/cluster.yaml"), &objects).unwrap();
    let extra = format!(
        "forward:\n  upstreams: [\"{upstream}\"]\n  policy: sequential\ncache:\n  enabled: false\n"
    );
    let s = Server::start(&base_config(&objects, &extra), &[]);
    std::mem::forget(dir);
    s
}

/// A deterministic upstream: A records made from the name, NXDOMAIN for `nx*`, NODATA with an
/// SOA for other types, a TXT for TXT.
fn upstream_answer(q: &Message) -> Message {
    let mut m = reply(q);
    let Some(question) = q.queries.first() else {
        return m;
    };
    let name = question.name().clone();
    let lower = name.to_ascii().to_ascii_lowercase();
    let zone = Name::from_ascii("example.").unwrap();
    let soa = Record::from_rdata(
        zone.clone(),
        300,
        RData::SOA(SOA::new(
            Name::from_ascii("ns.example.").unwrap(),
            Name::from_ascii("admin.example.").unwrap(),
            7,
            3600,
            600,
            86400,
            60,
        )),
    );
    if lower.starts_with("nx") {
        m.metadata.response_code = ResponseCode::NXDomain;
        m.add_authority(soa);
        return m;
    }
    let h = lower
        .bytes()
        .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    match question.query_type() {
        RecordType::A => {
            for i in 0..3 {
                m.add_answer(Record::from_rdata(
                    name.clone(),
                    600 + u32::from(i),
                    RData::A(Ipv4Addr::new(192, 0, 2, h.wrapping_add(i)).into()),
                ));
            }
        }
        RecordType::TXT => {
            m.add_answer(Record::from_rdata(
                name,
                120,
                RData::TXT(TXT::new(vec![format!("for {lower}")])),
            ));
        }
        _ => {
            m.add_authority(soa);
        }
    }
    m
}

/// Everything a client can see in a reply, in comparable form.
fn view(raw: &[u8]) -> String {
    let m = decode(raw);
    let md = &m.metadata;
    let mut s = format!(
        "id={} qr={:?} op={:?} aa={} tc={} rd={} ra={} ad={} cd={} rcode={}\n",
        md.id,
        md.message_type,
        md.op_code,
        md.authoritative,
        md.truncation,
        md.recursion_desired,
        md.recursion_available,
        md.authentic_data,
        md.checking_disabled,
        u16::from(md.response_code)
    );
    for q in &m.queries {
        s += &format!("Q {} {} {}\n", q.name(), q.query_type(), q.query_class());
    }
    for (sec, rs) in [
        ("AN", &m.answers),
        ("NS", &m.authorities),
        ("AR", &m.additionals),
    ] {
        // `loadbalance` rotates A/AAAA order from query to query: compare sets, CNAMEs first.
        let mut v: Vec<(bool, String)> = rs
            .iter()
            .map(|r| (r.record_type() != RecordType::CNAME, r.to_string()))
            .collect();
        v.sort();
        for (_, r) in v {
            s += &format!("{sec} {r}\n");
        }
    }
    if let Some(e) = &m.edns {
        s += &format!(
            "EDNS payload={} version={} do={} options={:?}\n",
            e.max_payload(),
            e.version(),
            e.flags().dnssec_ok,
            e.options().as_ref()
        );
    }
    s
}

/// A deterministic pseudo-random source (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[(self.next() % v.len() as u64) as usize]
    }
}

fn random_case(r: &mut Rng, s: &str) -> String {
    s.chars()
        .map(|c| {
            if r.next().is_multiple_of(2) {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// The question name written with a compression pointer. A question is the first thing after
/// the header, so a pointer in it can only point into the header or back into itself; the
/// header's QDCOUNT high byte (offset 4) is 0, the root: `labels` + pointer(4) spells `labels.`.
fn compressed_question(name: &str) -> Vec<u8> {
    let mut w = name_wire(name);
    w.pop();
    w.extend_from_slice(&[0xC0, 4]);
    w
}

fn generated_queries(n: usize) -> Vec<Vec<u8>> {
    let names = [
        "kubernetes.default.svc.cluster.local",
        "kube-dns.kube-system.svc.cluster.local",
        "web.demo.svc.cluster.local",
        "db.demo.svc.cluster.local",
        "db-0.db.demo.svc.cluster.local",
        "db-2.db.demo.svc.cluster.local",
        "workers.demo.svc.cluster.local",
        "10-244-1-30.workers.demo.svc.cluster.local",
        "_postgres._tcp.db.demo.svc.cluster.local",
        "_http._tcp.web.demo.svc.cluster.local",
        "_tcp.web.demo.svc.cluster.local",
        "_dns._udp.kube-dns.kube-system.svc.cluster.local",
        "search.demo.svc.cluster.local",
        "demo.svc.cluster.local",
        "svc.cluster.local",
        "pod.cluster.local",
        "cluster.local",
        "dns-version.cluster.local",
        "ns.dns.cluster.local",
        "10-244-1-10.demo.pod.cluster.local",
        "nope.demo.svc.cluster.local",
        "www.example.com.demo.svc.cluster.local",
        "redis.cache.svc.cluster.local.demo.svc.cluster.local",
        "a.b.c.d.e.f.g.h.i.svc.cluster.local",
        "10.0.96.10.in-addr.arpa",
        "20.1.244.10.in-addr.arpa",
        "a.0.0.1.6.9.0.0.0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa",
        "in-addr.arpa",
        // Forwarded to the upstream:
        "www.example",
        "api.v2.example",
        "nxdomain.example",
        "9.9.9.9.in-addr.arpa",
        "x",
    ];
    let types: [u16; 14] = [1, 28, 33, 12, 16, 5, 6, 2, 255, 15, 13, 99, 65280, 41];
    let classes: [u16; 6] = [1, 1, 1, 255, 3, 254];
    let mut r = Rng(0x9E3779B97F4A7C15);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let base = r.pick(&names).to_string();
        let name = random_case(&mut r, &base);
        let qtype = *r.pick(&types);
        let qclass = if r.next().is_multiple_of(8) {
            *r.pick(&classes)
        } else {
            1
        };
        let id = (i as u16).wrapping_mul(7919);
        let flags: u16 = match r.next() % 5 {
            0 => 0x0000, // RD=0
            1 => 0x0110, // RD + CD
            2 => 0x0120, // RD + AD
            _ => 0x0100, // RD
        };
        let edns = match r.next() % 6 {
            0 => None,
            1 => Some((512u16, false, 0u8)),
            2 => Some((4096, true, 1)),  // a cookie
            3 => Some((1232, false, 2)), // a client subnet and an NSID
            4 => Some((100, false, 3)),  // below 512, an unknown option
            _ => Some((600, false, 0)),
        };
        let compressed = r.next().is_multiple_of(10);
        let qdcount: u16 = match r.next() % 40 {
            0 => 0,
            1 => 2,
            _ => 1,
        };
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&qdcount.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0, 0, edns.is_some() as u8]);
        if qdcount >= 1 {
            if compressed {
                m.extend_from_slice(&compressed_question(&name));
            } else {
                m.extend_from_slice(&name_wire(&name));
            }
            m.extend_from_slice(&qtype.to_be_bytes());
            m.extend_from_slice(&qclass.to_be_bytes());
        }
        if qdcount == 2 {
            // The second question compressed against the first.
            m.extend_from_slice(&[0xC0, 12, 0, 28, 0, 1]);
        }
        if let Some((size, dobit, opts)) = edns {
            let rdata: &[u8] = match opts {
                1 => &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8],
                2 => &[0, 8, 0, 7, 0, 1, 24, 0, 198, 51, 100, 0, 3, 0, 0],
                3 => &[0xFD, 0xE9, 0, 3, b'a', b'b', b'c'],
                _ => &[],
            };
            m.extend_from_slice(&[0, 0, 41]);
            m.extend_from_slice(&size.to_be_bytes());
            m.extend_from_slice(&[0, 0, if dobit { 0x80 } else { 0 }, 0]);
            m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            m.extend_from_slice(rdata);
        }
        out.push(m);
    }
    // A pointer to itself: a loop.
    let mut m = vec![0xAB, 0xCE, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&[1, b'x', 0xC0, 12, 0, 1, 0, 1]);
    out.push(m);
    // A label of a reserved type; a name cut short.
    let mut m = vec![0xAB, 0xD1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&[0x41, b'x', 0, 0, 1, 0, 1]);
    out.push(m);
    out.push(vec![
        0xAB, 0xD2, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, b'a', b'b',
    ]);
    // EDNS version 1.
    let mut m = query(
        "kubernetes.default.svc.cluster.local",
        1,
        0x1113,
        Some(1232),
    );
    let n = m.len();
    m[n - 5] = 1;
    out.push(m);
    out
}

/// The largest UDP reply the client of `q` takes: 512 bytes without EDNS, else its payload size
/// (at least 512) capped at the server's 1232.
fn client_limit(q: &[u8]) -> usize {
    match Message::from_vec(q).ok().and_then(|m| m.edns) {
        Some(e) => usize::from(e.max_payload().clamp(512, 1232)),
        None => 512,
    }
}

/// What the query means to hickory-proto, written in hickory's plain form; None when hickory
/// cannot read it as a query with one question.
fn hickory_form(q: &[u8]) -> Option<Vec<u8>> {
    let m = Message::from_vec(q).ok()?;
    if m.queries.len() != 1 {
        return None;
    }
    m.to_vec().ok()
}

#[test]
fn answers_match_what_hickory_reads_in_the_query() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(Fake::start(|q, _| Action::Reply(upstream_answer(q))));
    let s = start(up.addr);
    let queries = generated_queries(1500);
    let (mut same, mut formerr, mut forwarded, mut compressed) = (0, 0, 0, 0);
    for q in &queries {
        let a = udp_exchange(s.dns, q).unwrap_or_else(|| panic!("no answer to {q:?}"));
        assert!(a.len() <= client_limit(q), "{} bytes to {q:02x?}", a.len());
        let va = view(&a);
        match hickory_form(q) {
            Some(plain) => {
                let b = udp_exchange(s.dns, &plain).expect("answer to hickory's form");
                assert_eq!(va, view(&b), "query {q:02x?}\nhickory's form {plain:02x?}");
                same += 1;
                if q.len() > 14 && q[12..].windows(2).any(|w| w == [0xC0, 4]) {
                    compressed += 1;
                }
                if va.contains("ra=true") {
                    forwarded += 1;
                }
            }
            None => {
                let m = Message::from_vec(&a).unwrap();
                assert_eq!(
                    (m.metadata.response_code, m.queries.len()),
                    (ResponseCode::FormErr, 0),
                    "query {q:02x?} is not one question to hickory: {va}"
                );
                assert_eq!(&a[0..2], &q[0..2], "ID");
                formerr += 1;
            }
        }
        // TCP: the same answer, not truncated.
        let t = tcp_exchange(s.dns, std::slice::from_ref(q)).remove(0);
        let vt = view(&t);
        if va.contains(" tc=true ") {
            let mt = Message::from_vec(&t).unwrap();
            let ma = Message::from_vec(&a).unwrap();
            assert!(
                !mt.metadata.truncation && mt.answers.len() >= ma.answers.len(),
                "{vt}"
            );
        } else {
            assert_eq!(va, vt, "TCP and UDP disagree on {q:02x?}");
        }
    }
    // The generator covers what it claims to.
    assert!(same > 1000, "{same}");
    assert!(formerr > 30, "{formerr}");
    assert!(forwarded > 100, "{forwarded}");
    assert!(compressed > 50, "{compressed}");
}

#[test]
fn question_bytes_are_echoed_verbatim() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(Fake::start(|q, _| Action::Reply(upstream_answer(q))));
    let s = start(up.addr);
    let mut checked = 0;
    for q in generated_queries(300) {
        let a = udp_exchange(s.dns, &q).expect("answered");
        if a[5] == 1
            && q[5] == 1
            && let Some(n) = name_len(&q[12..])
        {
            // the question starts at 12 in both and ends at the same offset
            let end = 12 + n + 4;
            assert_eq!(&a[12..end], &q[12..end], "question echoed as sent");
            assert_eq!(&a[0..2], &q[0..2], "ID");
            checked += 1;
        }
    }
    assert!(checked > 200, "{checked}");
}

/// Length of an uncompressed name; None when it holds a compression pointer.
fn name_len(b: &[u8]) -> Option<usize> {
    let mut p = 0;
    while *b.get(p)? != 0 {
        if b[p] & 0xC0 != 0 {
            return None;
        }
        p += 1 + b[p] as usize;
    }
    Some(p + 1)
}
