//! The UDP fast path against hickory's path: the same objects served twice, once with
//! clusterdns's own UDP loop and once through hickory-server's `Server` (which re-encodes every
//! reply with hickory's encoder). A large generated set of queries, odd ones included, must get
//! the same answers: IDs, flags, rcode, question bytes (case), every record, TC, EDNS.

use crate::support::*;

fn start(fast: bool) -> Server {
    Server::sample(&format!("server:\n  udp_fast_path: {fast}\n"))
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
            .map(|r| {
                (
                    r.record_type() != hickory_proto::rr::RecordType::CNAME,
                    without_serial(r),
                )
            })
            .collect();
        v.sort();
        let v: Vec<String> = v.into_iter().map(|(_, r)| r).collect();
        let _ = sec;
        for r in v {
            s += &format!("{sec} {r}\n");
        }
    }
    if let Some(e) = &m.edns {
        s += &format!(
            "EDNS payload={} version={} do={}\n",
            e.max_payload(),
            e.version(),
            e.flags().dnssec_ok
        );
    }
    s
}

/// A record as text, an SOA's serial blanked: the serial is the second of the snapshot's
/// last change (as CoreDNS's), and the two servers compared here start in different seconds.
/// Everything else about the SOA must match.
fn without_serial(r: &hickory_proto::rr::Record) -> String {
    use hickory_proto::rr::RData;
    match &r.data {
        RData::SOA(soa) => {
            assert!(soa.serial > 0, "a served SOA has a serial: {r}");
            r.to_string()
                .replacen(&format!(" {} ", soa.serial), " SERIAL ", 1)
        }
        _ => r.to_string(),
    }
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
            if r.next() % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
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
    ];
    let types: [u16; 12] = [1, 28, 33, 12, 16, 5, 6, 2, 255, 15, 13, 99];
    let mut r = Rng(0x9E3779B97F4A7C15);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let base = r.pick(&names).to_string();
        let name = random_case(&mut r, &base);
        let qtype = *r.pick(&types);
        let id = (i as u16).wrapping_mul(7919);
        let flags: u16 = match r.next() % 4 {
            0 => 0x0000, // RD=0
            1 => 0x0110, // RD + CD
            _ => 0x0100, // RD
        };
        let edns = match r.next() % 5 {
            0 => None,
            1 => Some((512u16, false, false)),
            2 => Some((4096, true, false)),
            3 => Some((1232, false, true)), // with a cookie option
            _ => Some((600, false, false)),
        };
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, edns.is_some() as u8]);
        m.extend_from_slice(&name_wire(&name));
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        if let Some((size, dobit, cookie)) = edns {
            m.extend_from_slice(&[0, 0, 41]);
            m.extend_from_slice(&size.to_be_bytes());
            m.extend_from_slice(&[0, 0, if dobit { 0x80 } else { 0 }, 0]);
            if cookie {
                m.extend_from_slice(&[0, 12, 0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
            } else {
                m.extend_from_slice(&[0, 0]);
            }
        }
        out.push(m);
    }
    // odd ones: compression pointers in the question. With one question the only earlier
    // bytes are the header: a pointer to offset 4 reads QDCOUNT's high byte (0) as the root,
    // so "x" + pointer(4) spells "x."; a pointer to itself is a loop.
    let mut m = vec![0xAB, 0xCD, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&[1, b'x', 0xC0, 4, 0, 1, 0, 1]);
    out.push(m);
    let mut m = vec![0xAB, 0xCE, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&[1, b'x', 0xC0, 12, 0, 1, 0, 1]);
    out.push(m);
    // two questions, the second compressed against the first
    let mut m = vec![0xAB, 0xCF, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&name_wire("web.demo.svc.cluster.local"));
    m.extend_from_slice(&[0, 1, 0, 1, 0xC0, 12, 0, 28, 0, 1]);
    out.push(m);
    // no question at all
    out.push(vec![0xAB, 0xD0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    // unknown class (CHAOS), class ANY
    let mut m = query("kubernetes.default.svc.cluster.local", 1, 0x1111, None);
    let n = m.len();
    m[n - 1] = 3;
    out.push(m);
    let mut m = query("kubernetes.default.svc.cluster.local", 1, 0x1112, None);
    let n = m.len();
    m[n - 1] = 255;
    out.push(m);
    // EDNS version 1
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

#[test]
fn fast_path_matches_hickory_path() {
    let fast = start(true);
    let slow = start(false);
    let queries = generated_queries(1500);
    let mut compared = 0;
    for q in &queries {
        let a = udp_exchange(fast.dns, q).expect("fast path answered");
        let b = udp_exchange(slow.dns, q).unwrap_or_else(|| {
            panic!(
                "hickory path did not answer {q:?} (fast path: {})",
                view(&a)
            )
        });
        let (va, vb) = (view(&a), view(&b));
        assert_eq!(va, vb, "query {q:?}");
        compared += 1;
    }
    assert_eq!(compared, queries.len());
}

#[test]
fn question_bytes_are_echoed_verbatim() {
    let fast = start(true);
    for q in generated_queries(300) {
        let a = udp_exchange(fast.dns, &q).expect("answered");
        if a[5] == 1
            && q[5] == 1
            && let Some(n) = name_len(&q[12..])
        {
            // the question starts at 12 in both and ends at the same offset
            let end = 12 + n + 4;
            assert_eq!(&a[12..end], &q[12..end], "question echoed as sent");
            assert_eq!(&a[0..2], &q[0..2], "ID");
        }
    }
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
