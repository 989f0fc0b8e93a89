//! Answers of any size: headless services of 600, 1,000 and 5,000 ready endpoints (dual-stack,
//! half with hostnames), asked over TCP for A, AAAA, SRV (targets' addresses in the additional
//! section) and PTR. Every answer is decoded by hickory-proto, `kdig +tcp` and `dig +tcp`, and
//! checked record by record against what the objects file defines. What does not fit in 65,535
//! bytes is left out in whole records: additional records first (no TC, RFC 2181 §9), answer
//! records only when the answer section itself does not fit (TC).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;

use hickory_proto::op::Message;
use hickory_proto::rr::{RData, Record};

use crate::support::*;

const SIZES: [usize; 3] = [600, 1000, 5000];
const TTL: u32 = 30;

/// One endpoint of a big service: its name (hostname, or the dashed address) and address.
struct Ep {
    name: String,
    ip: IpAddr,
}

fn v4(s: usize, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, s as u8 + 1, (i / 250) as u8, (i % 250) as u8 + 1)
}

fn v6(s: usize, i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, s as u16 + 1, 0, 0, 0, 0, 0, i as u16 + 1)
}

/// The Kubernetes DNS specification's name of an endpoint without a hostname: its address
/// with `-` for `.` and `:`.
fn dashed(ip: IpAddr) -> String {
    let s = ip.to_string().replace([':', '.'], "-");
    if s.ends_with('-') { format!("{s}0") } else { s }
}

fn svc_name(n: usize) -> String {
    format!("big{n}")
}

/// The endpoints of service `s` (index into SIZES): an IPv4 and an IPv6 endpoint per pod;
/// even pods have the hostname `pod-<i>` (both families share it), odd ones none.
fn endpoints(s: usize) -> Vec<Ep> {
    let mut v = Vec::new();
    for i in 0..SIZES[s] {
        for ip in [IpAddr::V4(v4(s, i)), IpAddr::V6(v6(s, i))] {
            let name = if i % 2 == 0 {
                format!("pod-{i}")
            } else {
                dashed(ip)
            };
            v.push(Ep { name, ip });
        }
    }
    v
}

/// The objects file: namespace `big`, one headless service per size, its endpoints in slices
/// of at most 1,000 per family (the EndpointSlice API's limit).
fn objects_yaml() -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: big}\n",
    );
    for (s, &n) in SIZES.iter().enumerate() {
        let svc = svc_name(n);
        y += &format!(
            "- apiVersion: v1\n  kind: Service\n  metadata: {{name: {svc}, namespace: big}}\n  spec:\n    clusterIP: None\n    ports: [{{name: http, port: 80, protocol: TCP}}]\n"
        );
        for (family, v6fam) in [("IPv4", false), ("IPv6", true)] {
            for chunk in 0..n.div_ceil(1000) {
                y += &format!(
                    "- apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n  metadata:\n    name: {svc}-{}-{chunk}\n    namespace: big\n    labels: {{kubernetes.io/service-name: {svc}}}\n  addressType: {family}\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n  endpoints:\n",
                    family.to_lowercase()
                );
                for i in chunk * 1000..((chunk + 1) * 1000).min(n) {
                    let ip = if v6fam {
                        IpAddr::V6(v6(s, i))
                    } else {
                        IpAddr::V4(v4(s, i))
                    };
                    y += &format!("  - addresses: [\"{ip}\"]\n    conditions: {{ready: true}}\n");
                    if i % 2 == 0 {
                        y += &format!("    hostname: pod-{i}\n");
                    }
                }
            }
        }
    }
    y
}

/// A record in comparable form: `owner TTL TYPE rdata`, names lowercase and absolute,
/// addresses in Rust's canonical text.
type Rr = String;

fn rr(owner: &str, ttl: u32, typ: &str, rdata: &str) -> Rr {
    format!(
        "{} {ttl} {typ} {rdata}",
        owner.to_ascii_lowercase().trim_end_matches('.')
    )
}

fn from_hickory(r: &Record) -> Rr {
    let owner = r.name.to_ascii();
    let (typ, rdata) = match &r.data {
        RData::A(a) => ("A", a.0.to_string()),
        RData::AAAA(a) => ("AAAA", a.0.to_string()),
        RData::SRV(s) => (
            "SRV",
            format!(
                "{} {} {} {}",
                s.priority,
                s.weight,
                s.port,
                s.target
                    .to_ascii()
                    .to_ascii_lowercase()
                    .trim_end_matches('.')
            ),
        ),
        RData::PTR(p) => (
            "PTR",
            p.0.to_ascii()
                .to_ascii_lowercase()
                .trim_end_matches('.')
                .to_string(),
        ),
        other => panic!("unexpected record {other:?}"),
    };
    rr(&owner, r.ttl, typ, &rdata)
}

/// A record line of `dig`/`kdig` output (`owner TTL IN TYPE rdata...`).
fn from_text(line: &str) -> Option<Rr> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 5 || f[0].starts_with(';') || f[2] != "IN" {
        return None;
    }
    let ttl: u32 = f[1].parse().ok()?;
    let rdata = match f[3] {
        "A" | "AAAA" => f[4].parse::<IpAddr>().ok()?.to_string(),
        "SRV" => format!(
            "{} {} {} {}",
            f[4],
            f[5],
            f[6],
            f[7].to_ascii_lowercase().trim_end_matches('.')
        ),
        "PTR" => f[4].to_ascii_lowercase().trim_end_matches('.').to_string(),
        _ => return None,
    };
    Some(rr(f[0], ttl, f[3], &rdata))
}

/// What a client saw: answer and additional records, and TC.
#[derive(Debug)]
struct Seen {
    answers: Vec<Rr>,
    additional: Vec<Rr>,
    tc: bool,
    /// The message length (hickory's view only).
    len: usize,
}

fn ask_hickory(dns: SocketAddr, name: &str, qtype: u16) -> Seen {
    let raw = tcp_exchange(dns, &[query(name, qtype, 0x5151, Some(1232))]).remove(0);
    let m = Message::from_vec(&raw).unwrap_or_else(|e| panic!("{name}: undecodable: {e}"));
    assert_eq!(u16::from(m.metadata.response_code), 0, "{name}");
    Seen {
        answers: m.answers.iter().map(from_hickory).collect(),
        additional: m.additionals.iter().map(from_hickory).collect(),
        tc: m.metadata.truncation,
        len: raw.len(),
    }
}

/// Run `tool` (`dig` or `kdig`) over TCP and split its output into sections.
fn ask_tool(tool: &str, dns: SocketAddr, name: &str, qtype: &str) -> Seen {
    require(tool);
    let patience: &[&str] = if tool == "kdig" {
        &["+timeout=5", "+retry=0", "+header"]
    } else {
        &["+time=5", "+tries=1"]
    };
    let out = Command::new(tool)
        .arg(format!("@{}", dns.ip()))
        .arg("-p")
        .arg(dns.port().to_string())
        .args(["+tcp", "+noall", "+comments", "+answer", "+additional"])
        .args(patience)
        .arg(name)
        .arg(qtype)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut answers = Vec::new();
    let mut additional = Vec::new();
    let mut section = "";
    let mut tc = false;
    let mut status_ok = false;
    for line in text.lines() {
        let l = line.trim();
        let lower = l.to_ascii_lowercase();
        if lower.contains("answer section") {
            section = "an";
        } else if lower.contains("additional section") {
            section = "ar";
        } else if lower.contains("authority section")
            || lower.contains("opt pseudosection")
            || lower.contains("edns pseudosection")
        {
            section = "";
        }
        if lower.contains("flags:") && !lower.contains("edns") {
            // `;; flags: qr tc aa rd; QUERY: ...` (dig) / `;; Flags: qr tc aa rd; QUERY: ...` (kdig)
            let flags = lower.split("flags:").nth(1).unwrap_or("");
            let flags = flags.split(';').next().unwrap_or("");
            tc |= flags.split_whitespace().any(|f| f == "tc");
        }
        if lower.contains("noerror") {
            status_ok = true;
        }
        if let Some(r) = from_text(l) {
            match section {
                "an" => answers.push(r),
                "ar" => additional.push(r),
                _ => {}
            }
        }
    }
    assert!(status_ok, "{tool} {name} {qtype}: no NOERROR in\n{text}");
    Seen {
        answers,
        additional,
        tc,
        len: 0,
    }
}

fn no_duplicates(what: &str, v: &[Rr]) {
    let set: BTreeSet<&Rr> = v.iter().collect();
    assert_eq!(set.len(), v.len(), "{what}: duplicate records");
}

/// Check one client's view of an answer against the expected records. Returns whether it was
/// truncated (then every answer record is an expected one, and there are no additional ones).
fn check(what: &str, seen: &Seen, answers: &BTreeSet<Rr>, additional: &BTreeMap<Rr, ()>) -> bool {
    no_duplicates(what, &seen.answers);
    no_duplicates(what, &seen.additional);
    for r in &seen.answers {
        assert!(
            answers.contains(r),
            "{what}: answer record {r} is not defined"
        );
    }
    for r in &seen.additional {
        assert!(
            additional.contains_key(r),
            "{what}: additional record {r} is not defined"
        );
    }
    if seen.tc {
        assert!(
            seen.answers.len() < answers.len(),
            "{what}: TC with a whole answer"
        );
        assert!(
            seen.additional.is_empty(),
            "{what}: additional records after a cut answer"
        );
    } else {
        assert_eq!(
            seen.answers.len(),
            answers.len(),
            "{what}: records missing without TC"
        );
    }
    seen.tc
}

#[test]
fn headless_services_of_600_1000_and_5000_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("big.yaml");
    std::fs::write(&objects, objects_yaml()).unwrap();
    let s = Server::start(&base_config(&objects, ""), &[]);
    let dns = s.dns;
    let zone = "big.svc.cluster.local";
    let mut largest = (0usize, String::new());
    for (si, &n) in SIZES.iter().enumerate() {
        let svc = svc_name(n);
        let fqdn = format!("{svc}.{zone}");
        let eps = endpoints(si);
        // Wait for the snapshot to hold the service (the file source loads it at start).
        s.wait_for(
            &["+short", &fqdn, "A"],
            |o| !o.trim().is_empty(),
            std::time::Duration::from_secs(20),
        );

        // A and AAAA: every endpoint address of the family.
        for (qtype, qt, is_v6) in [(1u16, "A", false), (28, "AAAA", true)] {
            let want: BTreeSet<Rr> = eps
                .iter()
                .filter(|e| e.ip.is_ipv6() == is_v6)
                .map(|e| rr(&fqdn, TTL, qt, &e.ip.to_string()))
                .collect();
            let record_len = if is_v6 { 28 } else { 16 };
            let h = ask_hickory(dns, &fqdn, qtype);
            let tc = check(&format!("hickory {fqdn} {qt}"), &h, &want, &BTreeMap::new());
            // Whole records until the next would not fit; TC exactly when one was left out.
            assert_eq!(tc, want.len() * record_len + 100 > 65535, "{fqdn} {qt}");
            if tc {
                assert!(
                    h.len + record_len > 65535,
                    "{fqdn} {qt}: stopped early at {} bytes",
                    h.len
                );
            }
            largest = largest.max((h.len, format!("{fqdn} {qt}")));
            for tool in ["dig", "kdig"] {
                let t = ask_tool(tool, dns, &fqdn, qt);
                // (How many records fit depends a little on the tool's own query: its OPT.)
                assert_eq!(
                    check(&format!("{tool} {fqdn} {qt}"), &t, &want, &BTreeMap::new()),
                    tc
                );
            }
        }

        // SRV: one record per endpoint name; the targets' addresses as additional records.
        let srv = format!("_http._tcp.{fqdn}");
        let weight = (100 / eps.len()).max(1);
        let mut names: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
        for e in &eps {
            names.entry(&e.name).or_default().push(e.ip);
        }
        let want: BTreeSet<Rr> = names
            .keys()
            .map(|name| rr(&srv, TTL, "SRV", &format!("0 {weight} 80 {name}.{fqdn}")))
            .collect();
        let mut additional = BTreeMap::new();
        for (name, ips) in &names {
            for ip in ips {
                let t = if ip.is_ipv6() { "AAAA" } else { "A" };
                additional.insert(rr(&format!("{name}.{fqdn}"), TTL, t, &ip.to_string()), ());
            }
        }
        let h = ask_hickory(dns, &srv, 33);
        let tc = check(&format!("hickory {srv} SRV"), &h, &want, &additional);
        if n == 600 {
            // 900 SRV records fit (about 55 KB); their targets lie far past 16 KiB, so the
            // additional records there name them in full. Not all fit: dropped, no TC.
            assert!(!tc, "{srv}");
            assert!(!h.additional.is_empty() && h.additional.len() < additional.len());
            assert!(h.len > 0x4000 * 3);
        } else {
            assert!(tc, "{srv}: {} SRV records cannot fit", want.len());
            // Owner pointer, type..rdlength, priority/weight/port, the target in full.
            let longest = 2
                + 10
                + 6
                + names
                    .keys()
                    .map(|k| k.len() + fqdn.len() + 3)
                    .max()
                    .unwrap();
            assert!(
                h.len + longest > 65535,
                "{srv}: stopped early at {} bytes",
                h.len
            );
        }
        largest = largest.max((h.len, format!("{srv} SRV")));
        for tool in ["dig", "kdig"] {
            let t = ask_tool(tool, dns, &srv, "SRV");
            assert_eq!(check(&format!("{tool} {srv}"), &t, &want, &additional), tc);
            assert_eq!(
                t.additional.is_empty(),
                h.additional.is_empty(),
                "{tool} {srv}"
            );
        }

        // PTR of endpoints at the start, middle and end, of both families.
        for i in [0, 1, n / 2 + 1, n - 1] {
            for ip in [IpAddr::V4(v4(si, i)), IpAddr::V6(v6(si, i))] {
                let rev = reverse_name(ip);
                let e = eps.iter().find(|e| e.ip == ip).unwrap();
                let want: BTreeSet<Rr> =
                    [rr(&rev, TTL, "PTR", &format!("{}.{fqdn}", e.name))].into();
                let h = ask_hickory(dns, &rev, 12);
                check(&format!("hickory {rev}"), &h, &want, &BTreeMap::new());
                for tool in ["dig", "kdig"] {
                    let t = ask_tool(tool, dns, &rev, "PTR");
                    check(&format!("{tool} {rev}"), &t, &want, &BTreeMap::new());
                }
            }
        }
    }
    assert!(largest.0 > 65000, "the largest answer: {largest:?}");
    eprintln!(
        "largest answer verified: {} bytes ({})",
        largest.0, largest.1
    );
}

fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(a) => {
            let mut s = String::new();
            for b in a.octets().iter().rev() {
                s += &format!("{:x}.{:x}.", b & 0xF, b >> 4);
            }
            s + "ip6.arpa"
        }
    }
}
