//! Critical names: names clusterdns resolves itself (A and AAAA via the upstreams), keeps fresh
//! by their TTLs, and keeps answering from the last good answer when the upstreams fail — also
//! across restarts, through a state file written atomically (temp file, fsync, rename).
//!
//! This is the AKS LocalDNS "critical FQDNs in a hosts file" design done inside the server: no
//! timer, no script, TTL-aware, and the addresses come back as A/AAAA answers (CNAME chains are
//! flattened to the final addresses, as the hosts-file design does).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::wire::{self, CLASS_IN, EDNS_SIZE, Query, Writer, rcode, rtype};

/// TTL cap of answers served from a set past its TTL (refreshes are failing).
pub const STALE_TTL: u32 = 30;
/// Longest wait between retries of a failing refresh.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The last good answer for one name and type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordSet {
    /// Addresses (empty: the name has no records of this type).
    pub ips: Vec<IpAddr>,
    /// TTL of the answer, seconds.
    pub ttl: u32,
    /// When it was fetched, milliseconds since the Unix epoch.
    pub fetched_ms: u64,
}

impl RecordSet {
    /// TTL to answer with at `now_ms`: what is left of the TTL, or (past it) at most
    /// [`STALE_TTL`].
    pub fn ttl_at(&self, now_ms: u64) -> u32 {
        let expires = self.fetched_ms + u64::from(self.ttl) * 1000;
        if now_ms < expires {
            (expires - now_ms).div_ceil(1000).max(1) as u32
        } else {
            self.ttl.clamp(1, STALE_TTL)
        }
    }
}

/// The state file's contents.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StateFile {
    pub version: u32,
    /// name -> ("A" | "AAAA") -> set.
    pub names: BTreeMap<String, BTreeMap<String, RecordSet>>,
}

/// Unix time in milliseconds on `clock` (the state file outlives the process: wall time).
fn unix_ms(clock: &Clock) -> u64 {
    clock
        .wall()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The two types kept per name.
pub const TYPES: [u16; 2] = [rtype::A, rtype::AAAA];

fn type_index(qtype: u16) -> Option<usize> {
    TYPES.iter().position(|&t| t == qtype)
}

fn type_name(qtype: u16) -> &'static str {
    if qtype == rtype::A { "A" } else { "AAAA" }
}

struct Sched {
    next: Instant,
    backoff: Duration,
}

/// One critical name.
pub struct Name {
    /// Lowercase, no trailing dot.
    pub name: String,
    /// Lowercase wire format.
    pub wire: Vec<u8>,
    sets: [ArcSwapOption<RecordSet>; 2],
}

/// All critical names.
pub struct Critical {
    pub names: Vec<Name>,
    index: HashMap<String, usize>,
    pub state_file: Option<PathBuf>,
    min_ttl: u32,
    max_ttl: u32,
    sched: Mutex<Vec<[Sched; 2]>>,
    last_saved: Mutex<Option<StateFile>>,
    /// When refreshes are due, and the age of the last good answers.
    clock: Clock,
}

/// The result of one refresh query.
pub enum Fetch {
    /// A usable answer (NOERROR): the addresses of the asked type and the TTL.
    Good(Vec<IpAddr>, u32),
    /// No usable answer (timeout, SERVFAIL, NXDOMAIN, ...).
    Failed(String),
}

impl Critical {
    /// `names` must already be validated domain names. Loads the state file if there is one.
    /// Every name is due for a refresh at once; time is `clock`'s.
    pub fn new(
        names: &[String],
        state_file: Option<PathBuf>,
        min_ttl: u32,
        max_ttl: u32,
        clock: Clock,
    ) -> Self {
        let now = clock.now();
        let mut list = Vec::new();
        let mut index = HashMap::new();
        for n in names {
            let Ok(name) = crate::names::parse_domain(n) else {
                continue;
            };
            if index.contains_key(&name) {
                continue;
            }
            let Ok(w) = wire::dotted_to_wire(&name) else {
                continue;
            };
            index.insert(name.clone(), list.len());
            list.push(Name {
                name,
                wire: w,
                sets: [ArcSwapOption::empty(), ArcSwapOption::empty()],
            });
        }
        let sched = list
            .iter()
            .map(|_| {
                std::array::from_fn(|_| Sched {
                    next: now,
                    backoff: Duration::from_secs(1),
                })
            })
            .collect();
        let c = Critical {
            names: list,
            index,
            state_file,
            min_ttl: min_ttl.max(1),
            max_ttl: max_ttl.max(1),
            sched: Mutex::new(sched),
            last_saved: Mutex::new(None),
            clock,
        };
        c.load();
        c
    }

    fn load(&self) {
        let Some(path) = &self.state_file else { return };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read critical-names state");
                return;
            }
        };
        let state: StateFile = match serde_json::from_str(&text) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "ignoring unreadable critical-names state");
                return;
            }
        };
        let mut loaded = 0;
        for (name, sets) in &state.names {
            let Some(&i) = self.index.get(name.trim_end_matches('.')) else {
                continue;
            };
            for (ti, &t) in TYPES.iter().enumerate() {
                if let Some(s) = sets.get(type_name(t)) {
                    self.names[i].sets[ti].store(Some(std::sync::Arc::new(s.clone())));
                    loaded += 1;
                }
            }
        }
        tracing::info!(file = %path.display(), sets = loaded, "critical-names state loaded");
        *self.last_saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(state);
    }

    /// The current set for a name and type.
    pub fn get(&self, name: &str, qtype: u16) -> Option<std::sync::Arc<RecordSet>> {
        let i = *self.index.get(name)?;
        self.names[i].sets[type_index(qtype)?].load_full()
    }

    /// Answer an A/AAAA question for a critical name from its last good answer. `name` is the
    /// lowercase dotted question name without the trailing dot.
    pub fn answer(&self, q: &Query<'_>, name: &str, out: &mut Vec<u8>) -> bool {
        if q.qclass != CLASS_IN {
            return false;
        }
        let Some(ti) = type_index(q.qtype) else {
            return false;
        };
        let Some(&i) = self.index.get(name) else {
            return false;
        };
        let guard = self.names[i].sets[ti].load();
        let Some(set) = guard.as_ref() else {
            return false;
        };
        let ttl = set.ttl_at(unix_ms(&self.clock));
        let mut w = Writer::new(out, q, usize::MAX);
        for ip in &set.ips {
            match ip {
                IpAddr::V4(v4) if q.qtype == rtype::A => w.rr(rtype::A, ttl, &v4.octets()),
                IpAddr::V6(v6) if q.qtype == rtype::AAAA => w.rr(rtype::AAAA, ttl, &v6.octets()),
                _ => false,
            };
        }
        w.finish(q, rcode::NOERROR, false, true, EDNS_SIZE);
        true
    }

    /// (name index, type) pairs due for a refresh now, and when the next one after them is due.
    pub fn due(&self) -> (Vec<(usize, u16)>, Option<Instant>) {
        let now = self.clock.now();
        let sched = self.sched.lock().unwrap_or_else(|e| e.into_inner());
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for (i, s) in sched.iter().enumerate() {
            for (ti, st) in s.iter().enumerate() {
                if st.next <= now {
                    due.push((i, TYPES[ti]));
                } else {
                    next = Some(next.map_or(st.next, |n| n.min(st.next)));
                }
            }
        }
        (due, next)
    }

    /// Record the result of a refresh and schedule the next one: at 90% of the TTL after a good
    /// answer; after a failure, with a backoff doubling from 1 s to 30 s (the last good answer
    /// stays in use meanwhile). Returns true if the set changed.
    pub fn update(&self, i: usize, qtype: u16, fetch: Fetch) -> bool {
        let now = self.clock.now();
        let Some(ti) = type_index(qtype) else {
            return false;
        };
        let mut sched = self.sched.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut sched[i][ti];
        match fetch {
            Fetch::Good(mut ips, ttl) => {
                let ttl = ttl.clamp(self.min_ttl, self.max_ttl);
                ips.sort();
                ips.dedup();
                let set = RecordSet {
                    ips,
                    ttl,
                    fetched_ms: unix_ms(&self.clock),
                };
                let old = self.names[i].sets[ti].swap(Some(std::sync::Arc::new(set.clone())));
                let refresh =
                    Duration::from_millis(u64::from(ttl) * 900).max(Duration::from_secs(1));
                st.next = now + refresh;
                st.backoff = Duration::from_secs(1);
                let changed = old.as_deref().map(|o| &o.ips) != Some(&set.ips);
                if changed {
                    tracing::info!(name = %self.names[i].name, qtype = type_name(qtype), ips = ?set.ips, "critical name updated");
                }
                changed
            }
            Fetch::Failed(why) => {
                tracing::warn!(name = %self.names[i].name, qtype = type_name(qtype), error = %why,
                    has_last_good = self.names[i].sets[ti].load().is_some(), "critical name refresh failed");
                st.next = now + st.backoff;
                st.backoff = (st.backoff * 2).min(MAX_BACKOFF);
                false
            }
        }
    }

    /// The current contents as a state file.
    pub fn snapshot(&self) -> StateFile {
        let mut s = StateFile {
            version: 1,
            names: BTreeMap::new(),
        };
        for n in &self.names {
            let mut sets = BTreeMap::new();
            for (ti, &t) in TYPES.iter().enumerate() {
                if let Some(set) = n.sets[ti].load_full() {
                    sets.insert(type_name(t).to_string(), (*set).clone());
                }
            }
            if !sets.is_empty() {
                s.names.insert(n.name.clone(), sets);
            }
        }
        s
    }

    /// Write the state file if the addresses changed since it was last written, or it is older
    /// than `max_age`.
    pub fn save(&self, max_age: Duration) {
        let Some(path) = &self.state_file else { return };
        let snap = self.snapshot();
        let mut last = self.last_saved.lock().unwrap_or_else(|e| e.into_inner());
        let stale = |old: &StateFile| {
            let newest = |s: &StateFile| {
                s.names
                    .values()
                    .flat_map(|m| m.values())
                    .map(|r| r.fetched_ms)
                    .max()
                    .unwrap_or(0)
            };
            newest(&snap).saturating_sub(newest(old)) >= max_age.as_millis() as u64
        };
        let same_ips = |old: &StateFile| {
            old.names.len() == snap.names.len()
                && old.names.iter().zip(&snap.names).all(|((ka, a), (kb, b))| {
                    ka == kb
                        && a.len() == b.len()
                        && a.iter()
                            .zip(b)
                            .all(|((ta, x), (tb, y))| ta == tb && x.ips == y.ips)
                })
        };
        if let Some(old) = last.as_ref()
            && same_ips(old)
            && !stale(old)
        {
            return;
        }
        match write_atomic(path, &serde_json::to_vec_pretty(&snap).unwrap_or_default()) {
            Ok(()) => *last = Some(snap),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot write critical-names state")
            }
        }
    }
}

/// Write a file atomically: a temp file in the same folder, fsync, rename over the target,
/// fsync the folder.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Extract the result of a refresh query from an upstream reply: NOERROR gives the addresses
/// of `qtype` anywhere in the answer section (following the CNAME chain implicitly) and the
/// smallest answer TTL (for NODATA: the SOA-derived negative TTL, else 30 s).
pub fn extract(reply: &[u8], qtype: u16) -> Fetch {
    let rc = wire::rcode_of(reply);
    if rc != rcode::NOERROR {
        return Fetch::Failed(format!("rcode {rc}"));
    }
    if reply.len() < wire::HEADER_LEN || reply[2] & wire::F_TC != 0 {
        return Fetch::Failed("truncated".into());
    }
    let Ok(lay) = wire::layout(reply) else {
        return Fetch::Failed("malformed reply".into());
    };
    let mut ips = Vec::new();
    let mut ttl = u32::MAX;
    let mut cname = false;
    for r in lay
        .records
        .iter()
        .filter(|r| r.section == wire::Section::Answer)
    {
        let rd = &reply[r.rdata..r.end];
        match (r.rtype, rd.len()) {
            (rtype::A, 4) if qtype == rtype::A => {
                ips.push(IpAddr::from(<[u8; 4]>::try_from(rd).unwrap_or_default()));
            }
            (rtype::AAAA, 16) if qtype == rtype::AAAA => {
                ips.push(IpAddr::from(<[u8; 16]>::try_from(rd).unwrap_or_default()));
            }
            (rtype::CNAME, _) => cname = true,
            _ => continue,
        }
        ttl = ttl.min(wire::u32_at(reply, r.ttl_off));
    }
    if ips.is_empty() && cname {
        // An alias whose target the upstream did not resolve: not an answer to keep.
        return Fetch::Failed("CNAME without addresses".into());
    }
    if ips.is_empty() {
        let soa = lay
            .records
            .iter()
            .find(|r| r.section == wire::Section::Authority && r.rtype == rtype::SOA);
        ttl = soa
            .filter(|r| r.end >= r.rdata + 20)
            .map(|r| wire::u32_at(reply, r.ttl_off).min(wire::u32_at(reply, r.end - 4)))
            .unwrap_or(30);
    }
    Fetch::Good(ips, ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn ttl_countdown_and_stale() {
        let s = RecordSet {
            ips: vec![],
            ttl: 60,
            fetched_ms: 1_000_000,
        };
        assert_eq!(s.ttl_at(1_000_000), 60);
        assert_eq!(s.ttl_at(1_010_500), 50);
        assert_eq!(s.ttl_at(1_060_000), 30);
        let s = RecordSet {
            ips: vec![],
            ttl: 5,
            fetched_ms: 0,
        };
        assert_eq!(s.ttl_at(10_000_000), 5);
    }

    #[test]
    fn update_schedule_and_state_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let names = vec!["Crit.Example.".to_string(), "other.example".to_string()];
        let m = ManualClock::new();
        let t0 = m.now();
        let c = Critical::new(&names, Some(state.clone()), 1, 3600, m.clock());
        assert_eq!(c.names[0].name, "crit.example");
        assert_eq!(c.due().0.len(), 4);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(c.update(0, rtype::A, Fetch::Good(vec![ip], 100)));
        assert!(
            !c.update(0, rtype::A, Fetch::Good(vec![ip], 100)),
            "same addresses"
        );
        c.update(0, rtype::AAAA, Fetch::Failed("timeout".into()));
        let (due, next) = c.due();
        assert_eq!(due.len(), 2, "other.example A and AAAA");
        assert_eq!(
            next,
            Some(t0 + Duration::from_secs(1)),
            "failed AAAA retried after 1 s"
        );
        m.advance(Duration::from_secs(89));
        assert!(c.due().0.iter().all(|&(i, t)| !(i == 0 && t == rtype::A)));
        m.advance(Duration::from_secs(1));
        assert!(c.due().0.contains(&(0, rtype::A)), "due at 90% of its TTL");
        c.save(Duration::from_secs(60));
        assert!(state.exists());
        // A restart reads it back.
        let c2 = Critical::new(&names, Some(state.clone()), 1, 3600, m.clock());
        assert_eq!(c2.get("crit.example", rtype::A).unwrap().ips, vec![ip]);
        assert!(c2.get("crit.example", rtype::AAAA).is_none());
        // A corrupt state file is ignored.
        std::fs::write(&state, "{not json").unwrap();
        let c3 = Critical::new(&names, Some(state), 1, 3600, m.clock());
        assert!(c3.get("crit.example", rtype::A).is_none());
    }

    #[test]
    fn answers_from_last_good() {
        let m = ManualClock::new();
        let c = Critical::new(&["crit.example".into()], None, 1, 3600, m.clock());
        let q = wire::query::build(
            9,
            &wire::dotted_to_wire("CRIT.example").unwrap(),
            rtype::A,
            true,
            Some(1232),
        );
        let pq = Query::parse(&q).unwrap();
        let mut out = Vec::new();
        assert!(
            !c.answer(&pq, "crit.example", &mut out),
            "nothing known yet"
        );
        c.update(
            0,
            rtype::A,
            Fetch::Good(
                vec!["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()],
                300,
            ),
        );
        assert!(c.answer(&pq, "crit.example", &mut out));
        let lay = wire::layout(&out).unwrap();
        assert_eq!(wire::u16_at(&out, 6), 2);
        assert!(lay.opt.is_some());
        assert_eq!(&out[12..pq.question_end()], pq.question());
        let ttl = |out: &[u8]| wire::u32_at(out, wire::layout(out).unwrap().records[0].ttl_off);
        assert_eq!(ttl(&out), 300);
        // The TTL counts down with the clock.
        m.advance(Duration::from_secs(100));
        assert!(c.answer(&pq, "crit.example", &mut out));
        assert_eq!(ttl(&out), 200);
    }

    #[test]
    fn extract_follows_cnames() {
        let q = wire::query::build(
            1,
            &wire::dotted_to_wire("alias.example").unwrap(),
            rtype::A,
            true,
            None,
        );
        let pq = Query::parse(&q).unwrap();
        let target = wire::dotted_to_wire("target.example").unwrap();
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, &pq, usize::MAX);
        w.rr(rtype::CNAME, 300, &target);
        w.rr(rtype::A, 60, &[192, 0, 2, 1]);
        w.finish(&pq, 0, false, true, EDNS_SIZE);
        match extract(&out, rtype::A) {
            Fetch::Good(ips, ttl) => {
                assert_eq!((ips, ttl), (vec!["192.0.2.1".parse().unwrap()], 60))
            }
            Fetch::Failed(e) => panic!("{e}"),
        }
        let mut w = Writer::new(&mut out, &pq, usize::MAX);
        w.rr(rtype::CNAME, 300, &target);
        w.finish(&pq, 0, false, true, EDNS_SIZE);
        assert!(
            matches!(extract(&out, rtype::A), Fetch::Failed(_)),
            "dangling alias"
        );
        wire::rcode_reply(&mut out, &pq, rcode::NXDOMAIN, true, EDNS_SIZE);
        assert!(matches!(extract(&out, rtype::A), Fetch::Failed(_)));
        wire::rcode_reply(&mut out, &pq, 0, true, EDNS_SIZE);
        assert!(matches!(extract(&out, rtype::A), Fetch::Good(ips, 30) if ips.is_empty()));
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
