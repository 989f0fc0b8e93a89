//! Zone transfers' rules, with `kdig`, `dig` and raw messages against the real binary watching
//! the test API server: who may transfer (prefixes, TSIG) and what everyone else gets; IXFR's
//! answers (current, ahead, beyond the journal, over UDP); the serial that replicas share and a
//! restart keeps; NOTIFY coalesced and retried.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::{MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::apiserver::*;
use crate::support::secondary::dig_axfr;
use crate::support::*;

const KEY_NAME: &str = "xfr-key";
const KEY: &str = "x8Qm0qE6u1pT8v0zq1bq3aQJ1g4xVdJ9cYz7rX2kLmA=";
/// Same name, another secret.
const WRONG: &str = "AAAAAAE6u1pT8v0zq1bq3aQJ1g4xVdJ9cYz7rX2kLmA=";

fn key(secret: &str) -> String {
    format!("hmac-sha256:{KEY_NAME}:{secret}")
}

fn cluster(api: &ApiServer, services: usize) {
    api.create(namespace("prod"));
    for i in 0..services {
        let name = format!("svc-{i}");
        api.create(
            svc("prod", &name)
                .cluster_ip(&format!("10.96.{}.{}", i / 200, i % 200 + 1))
                .port("http", 80, "TCP"),
        );
        api.create(
            slice("prod", &format!("{name}-x"), &name)
                .port("http", 8080, "TCP")
                .endpoint(ep(&[&format!("10.1.{}.{}", i / 200, i % 200 + 1)])),
        );
    }
}

/// `kdig @addr -p port args...` (no retries); stdout and stderr together.
fn kdig(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new(require("kdig"))
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+time=2", "+retry=0"])
        .args(args)
        .output()
        .expect("run kdig");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The records kdig printed (no comments, no TSIG).
fn records(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter(|l| !l.split_whitespace().any(|f| f == "TSIG"))
        .collect()
}

/// The serial clusterdns's transfers are at: its SOA.
fn serial(s: &Server) -> u32 {
    soa_serial(s.dns, "cluster.local").expect("SOA answered")
}

/// One request over TCP from `from` (a loopback address), every message of the answer.
fn tcp_transfer(server: SocketAddr, from: [u8; 4], msg: &[u8]) -> Vec<hickory_proto::op::Message> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    sock.connect(&server.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    s.write_all(&framed).unwrap();
    let mut out = Vec::new();
    loop {
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).is_err() {
            break;
        }
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).unwrap();
        let m = decode(&buf);
        let error = m.response_code != ResponseCode::NoError;
        out.push(m);
        let soas = out
            .iter()
            .flat_map(|m| &m.answers)
            .filter(|r| r.record_type() == RecordType::SOA)
            .count();
        if error || soas >= 2 {
            break;
        }
    }
    out
}

#[test]
fn only_allowed_and_signed_clients_transfer_everyone_else_gets_the_rcode_alone() {
    let (api, _) = ApiServer::start_blocking();
    cluster(&api, 3);
    // Transfers from 127.0.0.2 only, signed.
    let s = Server::start_kube(
        &api,
        &format!(
            "transfer:\n  allow: [127.0.0.2/32]\n  tsig:\n    name: {KEY_NAME}\n    secret: \"{KEY}\"\n"
        ),
    );
    assert!(wait_for(Duration::from_secs(20), || s
        .status(&["svc-2.prod.svc.cluster.local"])
        == "NOERROR"));
    let good = key(KEY);
    let from2 = ["-b", "127.0.0.2"];

    // The allowed, signed client gets the zone (kdig checks every message's MAC).
    let out = kdig(
        s.dns,
        &[&from2[..], &["-y", &good, "cluster.local", "AXFR"]].concat(),
    );
    let recs = records(&out);
    assert!(
        recs.len() > 10 && !out.contains(";; ERROR") && !out.contains("WARNING"),
        "{out}"
    );
    assert!(recs.first().unwrap().contains("SOA") && recs.last().unwrap().contains("SOA"));

    // Another address, even with the key: REFUSED, one message, no record.
    let q = query_rd("cluster.local", RecordType::AXFR, 7, false, None);
    let m = tcp_transfer(s.dns, [127, 0, 0, 1], &q);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].response_code, ResponseCode::Refused);
    assert!(m[0].answers.is_empty() && m[0].authorities.is_empty());
    let out = kdig(s.dns, &["-y", &good, "cluster.local", "AXFR"]);
    assert!(out.contains("REFUSED") && records(&out).is_empty(), "{out}");
    // The allowed address unsigned: REFUSED alone.
    let m = tcp_transfer(s.dns, [127, 0, 0, 2], &q);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].response_code, ResponseCode::Refused);
    assert!(m[0].answers.is_empty());
    // A wrong secret: NOTAUTH with TSIG error BADSIG; an unknown key: BADKEY. No records.
    let out = kdig(
        s.dns,
        &[&from2[..], &["-y", &key(WRONG), "cluster.local", "AXFR"]].concat(),
    );
    assert!(out.contains("BADSIG") && records(&out).is_empty(), "{out}");
    let other = format!("hmac-sha256:other-key:{KEY}");
    let out = kdig(
        s.dns,
        &[&from2[..], &["-y", &other, "cluster.local", "AXFR"]].concat(),
    );
    assert!(out.contains("BADKEY") && records(&out).is_empty(), "{out}");
    let out = dig_at(
        s.dns,
        &[&from2[..], &["-y", &key(WRONG), "cluster.local", "AXFR"]].concat(),
    );
    assert!(
        out.contains("Transfer failed") && !out.contains("\tA\t"),
        "{out}"
    );

    // IXFR for a serial from the future: NOERROR and the current SOA, nothing else (RFC 1995
    // §4: "same or newer version ... replied to with a single SOA record"), over TCP and UDP.
    let now = serial(&s);
    let ahead = format!("IXFR={}", now.wrapping_add(1000));
    for transport in ["+tcp", "+notcp"] {
        let out = kdig(
            s.dns,
            &[
                &from2[..],
                &["-y", &good, transport, "cluster.local", &ahead],
            ]
            .concat(),
        );
        let recs = records(&out);
        assert_eq!(recs.len(), 1, "{transport}: {out}");
        assert!(
            recs[0].contains("SOA") && recs[0].contains(&now.to_string()),
            "{out}"
        );
        assert!(
            !out.contains(";; ERROR") && !out.contains("WARNING"),
            "{out}"
        );
    }
    // AXFR over UDP: FORMERR (RFC 5936 §4.2).
    let out = kdig(
        s.dns,
        &[
            &from2[..],
            &["-y", &good, "+notcp", "cluster.local", "AXFR"],
        ]
        .concat(),
    );
    assert!(out.contains("FORMERR") && records(&out).is_empty(), "{out}");
    // An ordinary query from anyone is still answered.
    assert_eq!(s.status(&["svc-1.prod.svc.cluster.local"]), "NOERROR");

    let metrics = s.metrics();
    let count = |r: &str, t: &str| {
        metric_value(
            &metrics,
            &format!("clusterdns_transfers_total{{result=\"{r}\",type=\"{t}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert!(count("refused", "axfr") >= 3.0, "{metrics}");
    assert!(count("notauth", "axfr") >= 3.0);
    assert!(count("current", "ixfr") >= 2.0);
    assert!(count("formerr", "axfr") >= 1.0);
    assert!(count("full", "axfr") >= 1.0);
}

#[test]
fn ixfr_answers_from_the_journal_and_falls_back_to_the_whole_zone() {
    let (api, _) = ApiServer::start_blocking();
    cluster(&api, 5);
    // A journal of two differences.
    let s = Server::start_kube(
        &api,
        "transfer:\n  allow: [127.0.0.0/8]\n  journal_entries: 2\n",
    );
    assert!(wait_for(Duration::from_secs(20), || s
        .status(&["svc-4.prod.svc.cluster.local"])
        == "NOERROR"));
    let first = serial(&s);
    let full: BTreeSet<String> = dig_axfr(&require("dig"), s.dns, &["cluster.local"], None)
        .remove("cluster.local")
        .unwrap();

    // Current: the SOA alone, over UDP too.
    let out = dig_at(
        s.dns,
        &["+notcp", "cluster.local", &format!("IXFR={first}")],
    );
    let recs: Vec<&str> = records(&out);
    assert_eq!(recs.len(), 1, "{out}");

    // One change: IXFR from `first` is the difference, SOA-framed (RFC 1995 §4: new SOA, old
    // SOA, removed, SOA, added, new SOA).
    api.create(
        svc("prod", "late")
            .cluster_ip("10.96.9.9")
            .port("http", 80, "TCP"),
    );
    assert!(wait_for(Duration::from_secs(10), || serial(&s) != first));
    let second = serial(&s);
    let out = kdig(s.dns, &["cluster.local", &format!("IXFR={first}")]);
    let recs = records(&out);
    assert!(
        recs.iter()
            .any(|r| r.contains("late.prod.svc.cluster.local.") && r.contains("10.96.9.9")),
        "{out}"
    );
    assert!(recs.len() < full.len(), "a difference, not the zone: {out}");
    let soas: Vec<&&str> = recs.iter().filter(|r| r.contains("\tSOA\t")).collect();
    assert!(
        soas.len() >= 3
            && soas[0].contains(&second.to_string())
            && soas[1].contains(&first.to_string()),
        "{out}"
    );
    // Over UDP it fits in one message: the same records.
    let udp = dig_at(
        s.dns,
        &["+notcp", "cluster.local", &format!("IXFR={first}")],
    );
    assert!(udp.contains("10.96.9.9"), "{udp}");

    // Two more changes: the journal (two entries) no longer reaches `first`: the whole zone.
    api.create(
        svc("prod", "later")
            .cluster_ip("10.96.9.10")
            .port("http", 80, "TCP"),
    );
    assert!(wait_for(Duration::from_secs(10), || serial(&s) != second));
    let third = serial(&s);
    api.delete_named("Service", "prod", "late");
    assert!(wait_for(Duration::from_secs(10), || serial(&s) != third));
    let out = kdig(s.dns, &["cluster.local", &format!("IXFR={first}")]);
    let recs = records(&out);
    assert!(recs.len() >= full.len(), "the whole zone: {out}");
    assert!(
        recs.iter().any(|r| r.contains("later.prod"))
            && !recs.iter().any(|r| r.contains("late.prod.svc")),
        "{out}"
    );
    // From `second` it still reaches: a difference.
    let out = kdig(s.dns, &["cluster.local", &format!("IXFR={second}")]);
    assert!(records(&out).len() < full.len(), "{out}");
}

#[test]
fn replicas_share_the_serial_and_a_restart_keeps_it() {
    let (api, _) = ApiServer::start_blocking();
    cluster(&api, 5);
    let cfg = "transfer:\n  allow: [127.0.0.0/8]\n";
    let a = Server::start_kube(&api, cfg);
    assert!(wait_for(Duration::from_secs(20), || a
        .status(&["svc-4.prod.svc.cluster.local"])
        == "NOERROR"));
    // A burst of changes within a second.
    let before = serial(&a);
    for i in 0..5 {
        api.create(
            svc("prod", &format!("burst-{i}"))
                .cluster_ip(&format!("10.96.8.{}", i + 1))
                .port("http", 80, "TCP"),
        );
    }
    let want = (api.resource_version() * 4) as u32;
    assert!(
        wait_for(Duration::from_secs(10), || serial(&a) == want),
        "serial {} for revision {}",
        serial(&a),
        api.resource_version()
    );
    assert!(
        want.wrapping_sub(before) > 0 && want.wrapping_sub(before) < 1 << 31,
        "RFC 1982 increase"
    );

    // A second replica started now publishes the same serial and the same records.
    let b = Server::start_kube(&api, cfg);
    assert!(wait_for(Duration::from_secs(20), || soa_serial(
        b.dns,
        "cluster.local"
    ) == Some(want)));
    let dig = require("dig");
    assert_eq!(
        dig_axfr(&dig, a.dns, &["cluster.local"], None),
        dig_axfr(&dig, b.dns, &["cluster.local"], None)
    );

    // A restart without storage, after a deletion: the serial goes on rising, and matches.
    drop(a);
    api.delete_named("Service", "prod", "burst-0");
    let after = (api.resource_version() * 4) as u32;
    assert!(wait_for(Duration::from_secs(10), || soa_serial(
        b.dns,
        "cluster.local"
    ) == Some(after)));
    let a = Server::start_kube(&api, cfg);
    assert!(wait_for(Duration::from_secs(20), || soa_serial(
        a.dns,
        "cluster.local"
    ) == Some(after)));
    assert!(after.wrapping_sub(want) > 0 && after.wrapping_sub(want) < 1 << 31);
    assert_eq!(
        dig_axfr(&dig, a.dns, &["cluster.local"], None),
        dig_axfr(&dig, b.dns, &["cluster.local"], None)
    );
}

/// The serial a NOTIFY carries (its answer section's SOA), and the reply a secondary sends.
fn notify_of(msg: &[u8]) -> (u32, Vec<u8>) {
    let m = decode(msg);
    assert_eq!(m.op_code, OpCode::Notify);
    assert_eq!(m.message_type, MessageType::Query);
    let serial = match &m.answers[0].data {
        RData::SOA(soa) => soa.serial,
        other => panic!("NOTIFY without its SOA: {other:?}"),
    };
    // The reply: the header with QR set and no answer, and the question.
    let q_end = 12 + name_wire("cluster.local").len() + 4;
    let mut reply = msg[..q_end].to_vec();
    reply[2] |= 0x80;
    reply[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
    (serial, reply)
}

#[test]
fn notify_is_one_at_a_time_carries_the_newest_serial_and_is_retried() {
    let (api, _) = ApiServer::start_blocking();
    cluster(&api, 2);
    let secondary = UdpSocket::bind("127.0.0.1:0").unwrap();
    secondary
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let s = Server::start_kube(
        &api,
        &format!(
            "transfer:\n  allow: [127.0.0.0/8]\n  notify: [\"{}\"]\n",
            secondary.local_addr().unwrap()
        ),
    );
    let mut buf = [0u8; 1500];
    // The first serial, once synced: left unanswered.
    let (n, from) = secondary
        .recv_from(&mut buf)
        .expect("a NOTIFY after the first sync");
    let (first, _) = notify_of(&buf[..n]);
    assert_eq!(first, serial(&s));
    // Three changes while that NOTIFY waits for its reply.
    for i in 0..3 {
        api.create(
            svc("prod", &format!("n-{i}"))
                .cluster_ip(&format!("10.96.7.{}", i + 1))
                .port("http", 80, "TCP"),
        );
    }
    let newest = (api.resource_version() * 4) as u32;
    assert!(wait_for(Duration::from_secs(10), || serial(&s) == newest));
    // The next NOTIFY is the retry (after its wait, 1 s), carrying the newest serial: no
    // NOTIFY per change, none while one is in flight.
    // NOTIFYs until one carries the newest serial, each answered: the retry of the first (after
    // its wait, 1 s) folds the three changes into one, so it is the first or (on a machine so
    // slow that a change came after the retry) the second; never one per change.
    let mut told = Vec::new();
    loop {
        let (n, _) = secondary.recv_from(&mut buf).expect("the retry");
        let (serial, reply) = notify_of(&buf[..n]);
        told.push(serial);
        secondary.send_to(&reply, from).unwrap();
        if serial == newest {
            break;
        }
    }
    assert!(told.len() <= 2, "NOTIFY per change: {told:?}");
    // Acknowledged: nothing more until the next change, which is told at once.
    api.create(
        svc("prod", "n-last")
            .cluster_ip("10.96.7.9")
            .port("http", 80, "TCP"),
    );
    let last = (api.resource_version() * 4) as u32;
    let (n, _) = secondary
        .recv_from(&mut buf)
        .expect("a NOTIFY for the next change");
    let (next, reply) = notify_of(&buf[..n]);
    assert_eq!(
        next, last,
        "no NOTIFY for {newest} again, the next one is {last}"
    );
    secondary.send_to(&reply, from).unwrap();

    let metrics = s.metrics();
    let label = format!(
        "clusterdns_notify_total{{result=\"ok\",to=\"{}\"}}",
        secondary.local_addr().unwrap()
    );
    assert!(
        wait_for(Duration::from_secs(5), || {
            let m = s.metrics();
            metric_value(&m, &label).is_some_and(|v| v >= 2.0)
        }),
        "{metrics}"
    );
}
