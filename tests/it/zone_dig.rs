//! The cluster zone through the real binary, asked with real clients: dig, kdig, nslookup,
//! over UDP and TCP, and raw messages for the protocol corners.

use std::time::Duration;

use crate::support::*;

/// dig output with runs of blanks folded to one space (dig aligns columns with tabs).
fn squash(s: &str) -> String {
    s.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn dig_service_a_and_aaaa() {
    let s = Server::sample("");
    assert_eq!(
        s.dig(&["+short", "kubernetes.default.svc.cluster.local"])
            .trim(),
        "10.96.0.1"
    );
    assert_eq!(
        s.dig(&["+short", "web.demo.svc.cluster.local", "A"]).trim(),
        "10.96.100.10"
    );
    assert_eq!(
        s.dig(&["+short", "web.demo.svc.cluster.local", "AAAA"])
            .trim(),
        "fd00:10:96::100a"
    );
    let full = s.dig(&["kubernetes.default.svc.cluster.local"]);
    assert!(full.contains("status: NOERROR"), "{full}");
    assert!(
        full.contains("flags: qr aa rd;"),
        "authoritative, no RA: {full}"
    );
    assert!(
        squash(&full).contains("kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1"),
        "{full}"
    );
}

#[test]
fn dig_over_tcp_and_kdig() {
    let s = Server::sample("");
    assert_eq!(
        s.dig(&["+tcp", "+short", "kubernetes.default.svc.cluster.local"])
            .trim(),
        "10.96.0.1"
    );
    let out = std::process::Command::new(require("kdig"))
        .arg(format!("@{}", s.dns.ip()))
        .arg("-p")
        .arg(s.dns.port().to_string())
        .args(["+tcp", "+short", "db.demo.svc.cluster.local", "A"])
        .output()
        .unwrap();
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec!["10.244.1.20", "10.244.2.21"],
        "ready endpoints only"
    );
}

#[test]
fn nslookup_works() {
    let s = Server::sample("");
    let nslookup = require("nslookup");
    let out = std::process::Command::new(&nslookup)
        .arg(format!("-port={}", s.dns.port()))
        .arg("kubernetes.default.svc.cluster.local")
        .arg(s.dns.ip().to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Name:\tkubernetes.default.svc.cluster.local"),
        "{text}"
    );
    assert!(text.contains("Address: 10.96.0.1"), "{text}");
    let out = std::process::Command::new(&nslookup)
        .arg(format!("-port={}", s.dns.port()))
        .arg("nope.default.svc.cluster.local")
        .arg(s.dns.ip().to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NXDOMAIN"), "{text}");
}

#[test]
fn nxdomain_and_nodata_carry_the_soa() {
    let s = Server::sample("");
    let nx = s.dig(&["nope.demo.svc.cluster.local", "A"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(nx.contains("AUTHORITY: 1"), "{nx}");
    assert!(
        squash(&nx)
            .contains("cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local."),
        "{nx}"
    );
    let nodata = s.dig(&["kubernetes.default.svc.cluster.local", "AAAA"]);
    assert!(
        nodata.contains("status: NOERROR")
            && nodata.contains("ANSWER: 0")
            && nodata.contains("AUTHORITY: 1"),
        "{nodata}"
    );
    let ent = s.dig(&["demo.svc.cluster.local", "A"]);
    assert!(
        ent.contains("status: NOERROR")
            && ent.contains("ANSWER: 0")
            && squash(&ent).contains("IN SOA"),
        "{ent}"
    );
    let ent = s.dig(&["svc.cluster.local", "A"]);
    assert!(
        ent.contains("status: NOERROR") && ent.contains("ANSWER: 0"),
        "{ent}"
    );
    let nons = s.dig(&["nonexistent-ns.svc.cluster.local", "A"]);
    assert!(nons.contains("status: NXDOMAIN"), "{nons}");
}

#[test]
fn mixed_case_question_is_echoed() {
    let s = Server::sample("");
    let out = s.dig(&["KuBeRnEtEs.DeFaUlT.sVc.ClUsTeR.lOcAl", "A"]);
    assert!(
        squash(&out).contains(";KuBeRnEtEs.DeFaUlT.sVc.ClUsTeR.lOcAl. IN A"),
        "{out}"
    );
    assert!(
        squash(&out).contains("KuBeRnEtEs.DeFaUlT.sVc.ClUsTeR.lOcAl. 30 IN A 10.96.0.1"),
        "{out}"
    );
    // dig's own 0x20 check
    let out = s.dig(&["+short", "KUBERNETES.default.SVC.cluster.LOCAL"]);
    assert_eq!(out.trim(), "10.96.0.1");
}

#[test]
fn srv_headless_and_external() {
    let s = Server::sample("");
    let srv = s.dig(&["+short", "_postgres._tcp.db.demo.svc.cluster.local", "SRV"]);
    let mut lines: Vec<&str> = srv.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "0 50 5432 db-0.db.demo.svc.cluster.local.",
            "0 50 5432 db-1.db.demo.svc.cluster.local."
        ],
        "{srv}"
    );
    let full = s.dig(&["_postgres._tcp.db.demo.svc.cluster.local", "SRV"]);
    assert!(
        squash(&full).contains("db-0.db.demo.svc.cluster.local. 30 IN A 10.244.1.20"),
        "additional A: {full}"
    );
    assert_eq!(
        s.dig(&["+short", "db-1.db.demo.svc.cluster.local"]).trim(),
        "10.244.2.21"
    );
    assert_eq!(
        s.dig(&["+short", "10-244-1-30.workers.demo.svc.cluster.local"])
            .trim(),
        "10.244.1.30"
    );
    assert_eq!(
        s.dig(&["+short", "search.demo.svc.cluster.local", "CNAME"])
            .trim(),
        "search.example.com."
    );
    assert_eq!(
        s.dig(&["+short", "dns-version.cluster.local", "TXT"])
            .trim(),
        "\"1.1.0\""
    );
    assert_eq!(
        s.dig(&["+short", "-x", "10.96.0.10"]).trim(),
        "kube-dns.kube-system.svc.cluster.local."
    );
    assert_eq!(
        s.dig(&["+short", "-x", "10.244.1.20"]).trim(),
        "db-0.db.demo.svc.cluster.local."
    );
    assert_eq!(
        s.dig(&["+short", "-x", "fd00:10:96::100a"]).trim(),
        "web.demo.svc.cluster.local."
    );
    assert_eq!(
        s.dig(&["+short", "10-244-1-10.demo.pod.cluster.local"])
            .trim(),
        "10.244.1.10"
    );
    assert_eq!(
        s.dig(&["+short", "ns.dns.cluster.local"]).trim(),
        "10.96.0.10"
    );
    let soa = s.dig(&["+short", "cluster.local", "SOA"]);
    assert!(
        soa.starts_with("ns.dns.cluster.local. hostmaster.cluster.local. "),
        "{soa}"
    );
}

#[test]
fn truncation_then_tcp_retry() {
    let mut y = String::from(
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: big}}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: many, namespace: big}\n  spec: {clusterIP: None, ports: [{name: http, port: 80}]}\n- apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n  metadata: {name: many-1, namespace: big, labels: {kubernetes.io/service-name: many}}\n  addressType: IPv4\n  ports: [{name: http, port: 80, protocol: TCP}]\n  endpoints:\n",
    );
    for i in 1..=80 {
        y.push_str(&format!("  - addresses: [10.3.0.{i}]\n"));
    }
    let s = Server::with_objects(&y, "");
    // dig without EDNS: 512 bytes, TC set; dig retries over TCP by itself and gets all 80
    let out = s.dig(&["+noedns", "many.big.svc.cluster.local", "A"]);
    assert!(out.contains("Truncated, retrying in TCP mode"), "{out}");
    assert!(out.contains("ANSWER: 80"), "{out}");
    let raw = s.ask_raw(&query("many.big.svc.cluster.local", 1, 7, None));
    let m = decode(&raw);
    assert!(
        m.metadata.truncation && raw.len() <= 512 && !m.answers.is_empty(),
        "len {}",
        raw.len()
    );
    // EDNS 4096 is capped at 1232
    let raw = s.ask_raw(&query("many.big.svc.cluster.local", 1, 8, Some(4096)));
    let m = decode(&raw);
    assert!(
        raw.len() <= 1232 && m.metadata.truncation,
        "len {}",
        raw.len()
    );
    assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    let out = s.dig(&[
        "+ignore",
        "+bufsize=4096",
        "many.big.svc.cluster.local",
        "A",
    ]);
    assert!(out.contains("flags: qr aa tc rd"), "{out}");
}

#[test]
fn tcp_pipelining_several_queries_on_one_connection() {
    let s = Server::sample("");
    let msgs: Vec<Vec<u8>> = (0..5u16)
        .map(|i| query("kubernetes.default.svc.cluster.local", 1, 100 + i, None))
        .collect();
    let replies = tcp_exchange(s.dns, &msgs);
    let mut ids: Vec<u16> = replies.iter().map(|r| decode(r).metadata.id).collect();
    ids.sort();
    assert_eq!(ids, vec![100, 101, 102, 103, 104]);
}

#[test]
fn protocol_errors() {
    let s = Server::sample("");
    // two questions: FORMERR
    let mut m = query("kubernetes.default.svc.cluster.local", 1, 9, None);
    m[5] = 2;
    let r = s.ask_raw(&m);
    assert_eq!(r[3] & 0x0F, 1, "FORMERR");
    assert_eq!(&r[0..2], &[0, 9]);
    // NOTIFY opcode: NOTIMP
    let mut m = query("cluster.local", 6, 10, None);
    m[2] = (4 << 3) | 0x01;
    let r = s.ask_raw(&m);
    assert_eq!(r[3] & 0x0F, 4, "NOTIMP");
    // AXFR: REFUSED
    let out = s.dig(&["+tcp", "cluster.local", "AXFR"]);
    assert!(
        out.contains("Transfer failed") || out.contains("REFUSED"),
        "{out}"
    );
    // outside the zone with forwarding off: REFUSED
    let out = s.dig(&["example.com", "A"]);
    assert!(out.contains("status: REFUSED"), "{out}");
    // EDNS version 1: BADVERS
    let mut m = query("kubernetes.default.svc.cluster.local", 1, 11, Some(1232));
    let n = m.len();
    m[n - 5] = 1; // version byte of the OPT TTL
    let r = s.ask_raw(&m);
    let d = decode(&r);
    // hickory decodes extended rcode 16 as BADSIG (it shares the number with BADVERS)
    assert_eq!(u16::from(d.metadata.response_code), 16, "BADVERS");
    assert_eq!(d.edns.as_ref().map(|e| e.version()), Some(0));
    // a response (QR=1) gets no answer at all (RFC 1035: a server only answers queries; an
    // answer would let two servers loop): nothing comes back within udp_exchange's 2 s, while
    // the query right after it on the same socket is answered
    let mut m = query("kubernetes.default.svc.cluster.local", 1, 12, None);
    m[2] |= 0x80;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(&m, s.dns).unwrap();
    sock.send_to(
        &query("kubernetes.default.svc.cluster.local", 1, 13, None),
        s.dns,
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = sock
        .recv_from(&mut buf)
        .expect("the query after it is answered");
    assert_eq!(
        decode(&buf[..n]).metadata.id,
        13,
        "only the query is answered"
    );
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(sock.recv_from(&mut buf).is_err(), "nothing else comes back");
    // garbage: no crash, the server still answers afterwards
    for junk in [
        &b"\x00\x01"[..],
        &[0xff; 40][..],
        &[0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63, b'a'][..],
    ] {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.send_to(junk, s.dns).unwrap();
    }
    assert_eq!(
        s.dig(&["+short", "kubernetes.default.svc.cluster.local"])
            .trim(),
        "10.96.0.1"
    );
}

#[test]
fn file_changes_are_served_and_bad_files_keep_the_old_snapshot() {
    let y = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a, namespace: x}\n  spec: {clusterIP: 10.9.0.1}\n";
    let s = Server::with_objects(y, "");
    assert_eq!(
        s.dig(&["+short", "a.x.svc.cluster.local"]).trim(),
        "10.9.0.1"
    );
    let file = s.path("objects.yaml");
    std::fs::write(&file, y.replace("10.9.0.1", "10.9.0.2")).unwrap();
    let out = s.wait_for(
        &["+short", "a.x.svc.cluster.local"],
        |o| o.trim() == "10.9.0.2",
        Duration::from_secs(5),
    );
    assert_eq!(out.trim(), "10.9.0.2");
    // an invalid file: the old answers stay, the error names the position
    std::fs::write(&file, "items: [\n  - {bad yaml").unwrap();
    let logs = s.log_until(Duration::from_secs(10), |l| {
        l.contains("invalid") && l.contains("line")
    });
    assert!(
        logs.iter()
            .any(|l| l.contains("invalid") && l.contains("line")),
        "{logs:?}"
    );
    assert_eq!(
        s.dig(&["+short", "a.x.svc.cluster.local"]).trim(),
        "10.9.0.2"
    );
    // a bad object is skipped, the others are served
    let bad = format!(
        "{}\n- apiVersion: v1\n  kind: Service\n  metadata: {{name: b, namespace: x}}\n  spec: {{clusterIP: not-an-ip}}\n",
        y.trim_end()
    );
    std::fs::write(&file, bad).unwrap();
    let out = s.wait_for(
        &["+short", "a.x.svc.cluster.local"],
        |o| o.trim() == "10.9.0.1",
        Duration::from_secs(5),
    );
    assert_eq!(out.trim(), "10.9.0.1");
    let logs = s.log_until(Duration::from_secs(10), |l| {
        l.contains("Service x/b") && l.contains("not-an-ip")
    });
    assert!(
        logs.iter()
            .any(|l| l.contains("Service x/b") && l.contains("not-an-ip")),
        "{logs:?}"
    );
}

#[test]
fn command_line_flags_override_the_config() {
    // The README's "without any config file" flags, over a config that only turns forwarding
    // off (this machine's resolv.conf is not on loopback).
    let objects = repo().join("config/cluster.yaml");
    let s = Server::start(
        "forward: {enabled: false}\n",
        &[
            "--listen",
            "127.0.0.1:0",
            "--objects",
            objects.to_str().unwrap(),
            "--metrics-listen",
            "127.0.0.1:0",
            "--health-listen",
            "127.0.0.1:0",
            "--ready-listen",
            "127.0.0.1:0",
        ],
    );
    assert!(s.dns.ip().is_loopback());
    for what in ["metrics", "health", "ready"] {
        let addr = s
            .listen(what)
            .unwrap_or_else(|| panic!("no {what} listener"));
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{what} {addr}");
    }
    assert_eq!(
        s.dig(&["+short", "kubernetes.default.svc.cluster.local"])
            .trim(),
        "10.96.0.1"
    );
}
