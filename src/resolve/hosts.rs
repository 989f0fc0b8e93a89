//! A hosts file (/etc/hosts format), as CoreDNS's `hosts` plugin: A, AAAA and PTR for its
//! addresses, NODATA for other types of its names, and NXDOMAIN for other names unless
//! `fallthrough`. The file is polled for changes ([`crate::filewatch`]) and swapped in whole.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::filewatch::{Change, FileWatch};
use crate::ops::metrics::Metrics;
use crate::wire::{self, CLASS_IN, EDNS_SIZE, Query, Writer, rcode, rtype};

/// The parsed contents of a hosts file.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Table {
    /// Lowercase names without trailing dot.
    pub v4: HashMap<String, Vec<Ipv4Addr>>,
    pub v6: HashMap<String, Vec<Ipv6Addr>>,
    /// Address -> names, in file order.
    pub rev: HashMap<IpAddr, Vec<String>>,
    /// (address, name) pairs in the file.
    pub entries: usize,
}

impl Table {
    /// Parse hosts-file text. Bad lines are skipped (and counted in the returned number).
    pub fn parse(text: &str) -> (Table, usize) {
        let mut t = Table::default();
        let mut bad = 0;
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut fields = line.split_whitespace();
            let Some(addr) = fields.next() else { continue };
            // Zone indexes (fe80::1%eth0) have no meaning in DNS.
            let Ok(ip) = addr.parse::<IpAddr>() else {
                bad += 1;
                continue;
            };
            let mut any = false;
            for name in fields {
                let Ok(name) = crate::names::parse_domain(name) else {
                    bad += 1;
                    continue;
                };
                any = true;
                // IPv4-mapped IPv6 addresses answer A queries, as Go's hosts parsing does.
                let ip = match ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
                    v4 => v4,
                };
                let added = match ip {
                    IpAddr::V4(v4) => push_unique(t.v4.entry(name.clone()).or_default(), v4),
                    IpAddr::V6(v6) => push_unique(t.v6.entry(name.clone()).or_default(), v6),
                };
                if added {
                    t.entries += 1;
                    push_unique(t.rev.entry(ip).or_default(), name);
                }
            }
            if !any {
                bad += 1;
            }
        }
        (t, bad)
    }

    fn holds(&self, name: &str) -> bool {
        self.v4.contains_key(name) || self.v6.contains_key(name)
    }
}

fn push_unique<T: PartialEq>(v: &mut Vec<T>, x: T) -> bool {
    if v.contains(&x) {
        false
    } else {
        v.push(x);
        true
    }
}

/// The hosts file and its current table.
pub struct Hosts {
    pub file: Option<PathBuf>,
    pub fallthrough: bool,
    pub ttl: u32,
    table: ArcSwap<Table>,
    watch: Mutex<Option<FileWatch>>,
    metrics: Arc<Metrics>,
}

/// What the hosts file says about a question.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An answer was written.
    Answered,
    /// Not the file's to answer: go on.
    Pass,
}

impl Hosts {
    /// The hosts file `file` (read now, if it exists), counting its entries in `metrics`.
    pub fn new(file: Option<PathBuf>, fallthrough: bool, ttl: u32, metrics: Arc<Metrics>) -> Self {
        let h = Hosts {
            watch: Mutex::new(file.as_ref().map(FileWatch::new)),
            file,
            fallthrough,
            ttl,
            table: ArcSwap::from_pointee(Table::default()),
            metrics,
        };
        h.reload_if_changed();
        h
    }

    /// The current table.
    pub fn table(&self) -> arc_swap::Guard<Arc<Table>> {
        self.table.load()
    }

    /// Re-read the file if it changed (see [`crate::filewatch`]). Returns true when it was
    /// re-read. A file that disappears keeps the last table (as CoreDNS does); one that cannot
    /// be read is logged, and read again at the next call.
    pub fn reload_if_changed(&self) -> bool {
        let mut guard = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        let Some(watch) = guard.as_mut() else {
            return false;
        };
        let path = watch.path().to_path_buf();
        match watch.check() {
            None => return false,
            Some(Change::Removed) => {
                tracing::warn!(file = %path.display(), "hosts file missing; serving its last contents until it is back");
                return false;
            }
            Some(Change::Updated) => {}
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let (t, bad) = Table::parse(&text);
                if bad > 0 {
                    tracing::warn!(file = %path.display(), bad, "hosts file: lines or names skipped");
                }
                tracing::info!(file = %path.display(), entries = t.entries, "hosts file loaded");
                self.metrics
                    .set_hosts_entries(&path.to_string_lossy(), t.entries);
                self.table.store(Arc::new(t));
                true
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read hosts file");
                watch.retry();
                false
            }
        }
    }

    /// Look the question up. `name` is the lowercase dotted question name without trailing dot.
    /// Writes the reply into `out` when answered. With `decide_missing` false, names the file
    /// does not hold always pass (used before critical names are consulted).
    pub fn answer(
        &self,
        q: &Query<'_>,
        name: &str,
        out: &mut Vec<u8>,
        decide_missing: bool,
    ) -> Outcome {
        if q.qclass != CLASS_IN {
            return Outcome::Pass;
        }
        let t = self.table.load();
        if q.qtype == rtype::PTR
            && let Some(ip) = wire::reverse_ip(q.qname())
        {
            // Addresses not in the file always go on, as in CoreDNS.
            let Some(names) = t.rev.get(&ip) else {
                return Outcome::Pass;
            };
            let mut w = Writer::new(out, q, usize::MAX);
            for n in names {
                if let Ok(target) = wire::dotted_to_wire(n) {
                    w.rr(rtype::PTR, self.ttl, &target);
                }
            }
            w.finish(q, rcode::NOERROR, true, true, EDNS_SIZE);
            return Outcome::Answered;
        }
        if !t.holds(name) {
            if !decide_missing || self.fallthrough {
                return Outcome::Pass;
            }
            Writer::new(out, q, usize::MAX).finish(q, rcode::NXDOMAIN, true, true, EDNS_SIZE);
            return Outcome::Answered;
        }
        let mut w = Writer::new(out, q, usize::MAX);
        match q.qtype {
            rtype::A => {
                for ip in t.v4.get(name).into_iter().flatten() {
                    w.rr(rtype::A, self.ttl, &ip.octets());
                }
            }
            rtype::AAAA => {
                for ip in t.v6.get(name).into_iter().flatten() {
                    w.rr(rtype::AAAA, self.ttl, &ip.octets());
                }
            }
            // Any other type of a name in the file: NODATA.
            _ => {}
        }
        w.finish(q, rcode::NOERROR, true, true, EDNS_SIZE);
        Outcome::Answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# comment
127.0.0.1   localhost
192.0.2.10  www.Example.test  www   # trailing comment
2001:db8::10 www.example.test
192.0.2.11  other.example.test
::ffff:192.0.2.12 mapped.example.test
not-an-ip   bad.example.test
192.0.2.13
";

    fn q(name: &str, qtype: u16) -> Vec<u8> {
        wire::query::build(1, &wire::dotted_to_wire(name).unwrap(), qtype, true, None)
    }

    fn ask(h: &Hosts, name: &str, qtype: u16) -> Option<(u16, Vec<Vec<u8>>)> {
        let m = q(name, qtype);
        let p = Query::parse(&m).unwrap();
        let mut buf = [0u8; 256];
        let dotted = wire::wire_to_dotted(p.qname(), &mut buf)
            .unwrap()
            .to_string();
        let mut out = Vec::new();
        match h.answer(&p, &dotted, &mut out, true) {
            Outcome::Pass => None,
            Outcome::Answered => {
                let lay = wire::layout(&out).unwrap();
                assert!(out[2] & wire::F_AA != 0);
                let rdatas = lay
                    .records
                    .iter()
                    .map(|r| out[r.rdata..r.end].to_vec())
                    .collect();
                Some((wire::rcode_of(&out), rdatas))
            }
        }
    }

    #[test]
    fn parse_table() {
        let (t, bad) = Table::parse(TEXT);
        assert_eq!(bad, 2);
        assert_eq!(t.v4["www.example.test"], vec![Ipv4Addr::new(192, 0, 2, 10)]);
        assert_eq!(t.v4["www"], vec![Ipv4Addr::new(192, 0, 2, 10)]);
        assert_eq!(
            t.v6["www.example.test"],
            vec!["2001:db8::10".parse::<Ipv6Addr>().unwrap()]
        );
        assert_eq!(
            t.v4["mapped.example.test"],
            vec![Ipv4Addr::new(192, 0, 2, 12)]
        );
        assert_eq!(
            t.rev[&"192.0.2.10".parse::<IpAddr>().unwrap()],
            vec!["www.example.test", "www"]
        );
        assert_eq!(t.entries, 6);
    }

    #[test]
    fn answers() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hosts");
        std::fs::write(&f, TEXT).unwrap();
        let h = Hosts::new(Some(f.clone()), true, 3600, Arc::new(Metrics::default()));
        let (rc, rd) = ask(&h, "WWW.example.test", rtype::A).unwrap();
        assert_eq!(rc, 0);
        assert_eq!(rd, vec![vec![192, 0, 2, 10]]);
        let (_, rd) = ask(&h, "www.example.test", rtype::AAAA).unwrap();
        assert_eq!(rd.len(), 1);
        // NODATA for another type of a known name.
        let (rc, rd) = ask(&h, "www.example.test", 15).unwrap();
        assert_eq!((rc, rd.len()), (0, 0));
        // A name with only an A record asked for AAAA: NODATA.
        let (rc, rd) = ask(&h, "other.example.test", rtype::AAAA).unwrap();
        assert_eq!((rc, rd.len()), (0, 0));
        // PTR.
        let (_, rd) = ask(&h, "10.2.0.192.in-addr.arpa", rtype::PTR).unwrap();
        assert_eq!(rd[0], wire::dotted_to_wire("www.example.test").unwrap());
        assert_eq!(rd.len(), 2);
        assert!(ask(&h, "99.2.0.192.in-addr.arpa", rtype::PTR).is_none());
        // Fallthrough.
        assert!(ask(&h, "elsewhere.example", rtype::A).is_none());
        let strict = Hosts::new(Some(f), false, 3600, Arc::new(Metrics::default()));
        assert_eq!(
            ask(&strict, "elsewhere.example", rtype::A).unwrap().0,
            rcode::NXDOMAIN
        );
        // Unknown PTR passes even without fallthrough.
        assert!(ask(&strict, "99.2.0.192.in-addr.arpa", rtype::PTR).is_none());
    }

    #[test]
    fn reload_on_change_and_keep_on_delete() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hosts");
        std::fs::write(&f, "192.0.2.1 a.test\n").unwrap();
        let h = Hosts::new(Some(f.clone()), true, 60, Arc::new(Metrics::default()));
        assert!(!h.reload_if_changed());
        assert_eq!(h.table().v4["a.test"], vec![Ipv4Addr::new(192, 0, 2, 1)]);
        // Atomic replace (new inode), same size.
        let tmp = dir.path().join("hosts.new");
        std::fs::write(&tmp, "192.0.2.2 a.test\n").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert!(h.reload_if_changed());
        assert_eq!(h.table().v4["a.test"], vec![Ipv4Addr::new(192, 0, 2, 2)]);
        std::fs::remove_file(&f).unwrap();
        assert!(!h.reload_if_changed());
        assert_eq!(h.table().v4["a.test"], vec![Ipv4Addr::new(192, 0, 2, 2)]);
    }
}
