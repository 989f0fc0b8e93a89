//! The service on its own: how many transfers stream at once, and what the rest get.

use std::net::IpAddr;
use std::sync::Arc;

use super::{Request, TcpAnswer, Transfers};
use crate::cluster::ClusterEvent;
use crate::config::Config;
use crate::ops::metrics::Metrics;
use crate::wire::{Query, rcode, rtype};
use crate::zone::build::{ZoneBuilder, required_kinds};

/// An AXFR request for `cluster.local` (no RD, no EDNS).
fn axfr(id: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(b"\x07cluster\x05local\x00");
    m.extend_from_slice(&rtype::AXFR.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

fn request(raw: &[u8]) -> Request {
    Request::new(&Query::parse(raw).unwrap(), raw)
}

/// A service offering the (empty) cluster zone to 127.0.0.0/8, at most `max` at once.
fn service(max: usize) -> Arc<Transfers> {
    let mut cfg = Config::default();
    cfg.transfer.allow = vec!["127.0.0.0/8".into()];
    cfg.transfer.max_transfers = max;
    let t = Transfers::from_config(&cfg, &Arc::new(Metrics::default()))
        .unwrap()
        .expect("transfers on");
    let mut b = ZoneBuilder::new(&cfg.cluster, &required_kinds(&cfg.cluster));
    b.apply(ClusterEvent::ReplaceAll { objects: vec![] });
    t.journal().publish(&b.publish().0);
    t
}

fn rcode_of(out: &[u8]) -> u16 {
    crate::wire::rcode_of(out)
}

#[test]
fn transfers_past_the_limit_get_servfail_until_one_ends() {
    let t = service(2);
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    let mut out = Vec::new();
    let start = |out: &mut Vec<u8>| match t.answer_tcp(&request(&axfr(1)), peer, out) {
        TcpAnswer::Stream(s) => Some(s),
        TcpAnswer::Reply(_) => None,
    };
    let first = start(&mut out).expect("first transfer streams");
    let second = start(&mut out).expect("second transfer streams");
    // The third waits for a place: SERVFAIL, which a secondary retries.
    assert!(start(&mut out).is_none());
    assert_eq!(rcode_of(&out), rcode::SERVFAIL);
    // One ends (written to the end): its place is free again.
    let mut first = first;
    while first.next(&mut out) {}
    first.finish(true);
    let third = start(&mut out).expect("a place is free again");
    drop((second, third));
    // A transfer dropped half-way (the connection broke) gives its place back too.
    let a = start(&mut out).expect("streams");
    let b = start(&mut out).expect("streams");
    drop(a);
    assert!(start(&mut out).is_some());
    drop(b);
}

#[test]
fn outside_the_prefixes_is_refused_before_any_limit() {
    let t = service(1);
    let mut out = Vec::new();
    let held = match t.answer_tcp(&request(&axfr(1)), "127.0.0.1".parse().unwrap(), &mut out) {
        TcpAnswer::Stream(s) => s,
        TcpAnswer::Reply(c) => panic!("rcode {c}"),
    };
    match t.answer_tcp(&request(&axfr(2)), "192.0.2.1".parse().unwrap(), &mut out) {
        TcpAnswer::Reply(code) => assert_eq!(code, rcode::REFUSED),
        TcpAnswer::Stream(_) => panic!("a stranger got a transfer"),
    }
    assert_eq!(rcode_of(&out), rcode::REFUSED);
    drop(held);
}
