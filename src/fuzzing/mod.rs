//! Fuzz targets: one function per parser of untrusted bytes, each with the invariants its
//! output must keep. Not part of the server; `#[doc(hidden)]`, and kept to this one surface.
//!
//! | function | untrusted input | invariants (a broken one panics) |
//! |---|---|---|
//! | [`query_path`] | a DNS message from a client | never a panic; no reply to a response (QR=1); every reply decodes with hickory-proto, has the query's ID, opcode and RD, echoes the question (case kept) wherever an answer is given, carries none in a FORMERR for an unreadable question, carries an OPT when the query had one, owns its answers by the question or a CNAME chain, and is no larger than the client's limit (512 without EDNS, else min(payload, `max_udp`); 65535 over TCP) |
//! | [`upstream_reply`] | an upstream's reply to a forwarded query (over real loopback UDP and TCP) | never a panic; what the client gets decodes, has its ID and question, fits its limit; a reply with a wrong ID or question is never taken and nothing of it is cached; a cache hit carries the new client's ID and question and the upstream's rcode |
//! | [`config_file`] | a config file | never a panic; a config that passes `validate` builds a zone (of the sample cluster, with its cluster settings) whose answers about its SOA, NS and the sample's names pass the [`query_path`] checks |
//! | [`corefile`] | a Corefile | never a panic; a conversion never fails with [`crate::corefile::CorefileError::Config`] (the converter's own output must load) |
//! | [`objects_file`] | a file of Kubernetes objects | never a panic; whatever objects it yields build a zone whose answers to the names and addresses in those objects pass the [`query_path`] checks |
//! | [`list_page`] | the body of a list response from the API server, in chunks | never a panic; for a body that is a JSON object with one `items` key (as written) and an array there, the items read are that array's elements, in order, and the list without them is that object with `items` empty |
//!
//! The targets in `fuzz/fuzz_targets/` (cargo-fuzz, libFuzzer) call these functions, and
//! `cargo test` replays every file of `fuzz/corpus/<target>/` through them on stable (the
//! `replay` tests below). `glue.rs` is the only code that knows how the query path and the
//! resolver are called today; `check.rs` is the oracle (hickory-proto and the RFCs, never the
//! code under test).

mod check;
mod glue;
mod upstream;

use std::cell::RefCell;
use std::path::Path;
use std::sync::OnceLock;

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RecordType};

use crate::cluster::Object;
use crate::cluster::objects::ServiceKind;
use check::Sent;
use glue::{MAX_UDP, Outcome, Server};

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`.
pub const TARGETS: [(&str, fn(&[u8])); 6] = [
    ("query_path", query_path),
    ("upstream_reply", upstream_reply),
    ("config_file", config_file),
    ("corefile", corefile),
    ("objects_file", objects_file),
    ("list_page", list_page),
];

/// Largest TCP message (RFC 1035 §4.2.2).
const TCP_MAX: usize = 65535;

/// The cluster every query-path input is asked about: the sample cluster
/// (`config/cluster.yaml`: ClusterIP dual-stack, headless with and without hostnames,
/// ExternalName, pods) plus `svc-0.team-0`, a headless service of 40 endpoints (its A answer
/// does not fit 512 bytes), and a hosts file in front of a never-contacted upstream.
fn sample_server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let mut objects = sample_objects().to_vec();
        objects.extend(crate::testkit::synthetic_cluster(1, 1, 40, 1, 0));
        Server::new(
            &crate::config::ClusterConfig::default(),
            objects,
            Some(hosts_file()),
        )
    })
}

fn sample_objects() -> &'static [Object] {
    static OBJECTS: OnceLock<Vec<Object>> = OnceLock::new();
    OBJECTS.get_or_init(|| {
        crate::source::file::parse_objects(
            crate::source::file::EMBEDDED_SAMPLE,
            Path::new("config/cluster.yaml"),
        )
        .expect("the embedded sample parses")
        .objects
    })
}

/// A small hosts file in the temp folder (written once per process, atomically).
fn hosts_file() -> std::path::PathBuf {
    const HOSTS: &str = "# clusterdns fuzzing\n10.0.0.1 gateway.example.internal gateway\n\
                         2001:db8::1 v6host.example.internal\n192.0.2.10 legacy-db.corp.example db\n";
    let path = std::env::temp_dir().join("clusterdns-fuzz.hosts");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(HOSTS) {
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        std::fs::write(&tmp, HOSTS).expect("write the fuzzing hosts file");
        std::fs::rename(&tmp, &path).expect("rename the fuzzing hosts file");
    }
    path
}

/// One client message through the query path, over UDP and over TCP.
pub fn query_path(data: &[u8]) {
    ask(sample_server(), data);
}

/// Ask `server` one message over both transports and check what comes back.
fn ask(server: &Server, msg: &[u8]) {
    let sent = Sent::read(msg);
    for tcp in [false, true] {
        match server.answer(msg, tcp) {
            Outcome::Silent => {}
            Outcome::Forwarded | Outcome::Reply(_)
                if sent.as_ref().is_none_or(Sent::is_response) =>
            {
                check::fail("a response (QR=1) or a runt was answered", msg, &[])
            }
            Outcome::Forwarded => {}
            Outcome::Reply(r) => {
                let sent = sent.as_ref().expect("checked above");
                let limit = if tcp {
                    TCP_MAX
                } else {
                    sent.udp_limit(MAX_UDP)
                };
                check::query_reply(msg, sent, &r, limit);
            }
        }
    }
}

thread_local! {
    static HOSTILE: RefCell<Option<upstream::Hostile>> = const { RefCell::new(None) };
}

/// A hostile upstream's reply (see [`upstream::Spec`] for how the input is laid out) through
/// the resolver's forwarding path, then the same question again from another client (a cache
/// hit if the reply was cached).
pub fn upstream_reply(data: &[u8]) {
    let Some(spec) = upstream::Spec::parse(data) else {
        return;
    };
    HOSTILE.with_borrow_mut(|h| {
        let h = h.get_or_insert_with(upstream::Hostile::bind);
        h.drain();
        let resolver = glue::forwarding_resolver(h.addr);
        let client = upstream::client_query(spec.which_query(), 0x1234, false);
        let sent = Sent::read(&client).expect("harness query");
        let max = if spec.client_tcp() {
            TCP_MAX
        } else {
            sent.udp_limit(MAX_UDP)
        };
        let reply = h.rt.block_on(async {
            tokio::select! {
                biased;
                r = glue::resolve(&resolver, &client, max) => r,
                () = h.serve(spec) => unreachable!("the hostile upstream serves forever"),
            }
        });
        // The upstream's reply as the resolver saw it (over UDP, padded or not, or over TCP),
        // but with the client's ID in place of the forwarded query's (the question bytes are
        // the client's in both).
        let hostile = [spec.udp_reply_to(&client), spec.reply_to(&client)];
        let acceptable = hostile.iter().any(|h| check::matches_query(&client, h));
        // RDATA clusterdns does not interpret may be garbage that only hickory's full decode
        // notices; then the client's reply need only be well framed.
        let garbage_rdata = hostile.iter().any(|h| Message::from_vec(h).is_err());
        let hostile = &hostile[1];
        forwarded_reply(&client, &reply, max, garbage_rdata);
        let rcode = reply[3] & 0x0F;
        if !acceptable && rcode != 5 && rcode != 2 {
            check::fail(
                "a reply with a wrong ID, opcode or question, or a malformed one, was taken \
                 (client reply shown)",
                hostile,
                &reply,
            );
        }
        let again = upstream::client_query(spec.which_query(), 0x4321, true);
        if let Some(cached) = glue::from_cache(&resolver, &again, max) {
            // A failed fetch is itself cached for a while (RFC 2308 §7.1, CoreDNS's `cache`
            // `servfail`): the upstream's own SERVFAIL as it came (checked below like any
            // reply), or, when its reply was refused, our SERVFAIL and nothing more.
            let upstream_servfail = acceptable && hostile.get(3).is_some_and(|b| b & 0x0F == 2);
            if cached[3] & 0x0F == 2 && rcode == 2 && !upstream_servfail {
                forwarded_reply(&again, &cached, max, false);
                let m = check::decode(&again, &cached);
                if !(m.answers.is_empty() && m.authorities.is_empty() && m.additionals.is_empty()) {
                    check::fail("a cached failure carries records", hostile, &cached);
                }
                return;
            }
            if !acceptable {
                check::fail(
                    "a reply with a wrong ID, opcode or question, or a malformed one, was cached \
                     (cache hit shown)",
                    hostile,
                    &cached,
                );
            }
            forwarded_reply(&again, &cached, max, garbage_rdata);
            if cached[3] & 0x0F != hostile.get(3).map_or(0xFF, |b| b & 0x0F) {
                check::fail(
                    "cache hit with another rcode than the upstream's",
                    hostile,
                    &cached,
                );
            }
        }
    });
}

/// What a client gets for a forwarded query: within `max`, its ID, QR set, its opcode, its
/// question bytes, well framed ([`check::framing`]), and, unless the upstream's RDATA was
/// garbage (`garbage_rdata`), decoded whole by hickory-proto.
#[track_caller]
fn forwarded_reply(client: &[u8], reply: &[u8], max: usize, garbage_rdata: bool) {
    if reply.len() > max {
        check::fail(&format!("reply larger than {max} bytes"), client, reply);
    }
    if reply.len() < 12 || reply[..2] != client[..2] || reply[2] & 0x80 == 0 {
        check::fail("reply lacks the client's ID or QR", client, reply);
    }
    if (reply[2] >> 3) & 0x0F != (client[2] >> 3) & 0x0F {
        check::fail("reply opcode differs from the client's", client, reply);
    }
    if let Err(e) = check::framing(reply) {
        check::fail(&format!("reply is not well framed: {e}"), client, reply);
    }
    if !garbage_rdata {
        check::decode(client, reply);
    }
    let q = check::question_bytes(client);
    if reply[4..6] != [0, 1] || reply.get(12..12 + q.len()) != Some(q) {
        check::fail("reply lacks the client's question", client, reply);
    }
}

/// A config file: parse, validate, and, when valid, build the zone (from the sample cluster)
/// with its cluster settings and ask it about its own records and the sample's names.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = crate::config::Config::from_yaml(text, Path::new("fuzz.yaml")) else {
        return;
    };
    if cfg.validate().is_err() || !cfg.cluster.enabled {
        return;
    }
    let server = Server::new(&cfg.cluster, sample_objects().to_vec(), None);
    let Ok(zone) = Name::from_ascii(format!("{}.", cfg.cluster.zone.trim_end_matches('.'))) else {
        return;
    };
    // The zone's own records, and names the sample cluster puts under it (SRV and PTR
    // targets are longer than the question).
    let mut queries = vec![
        (zone.clone(), RecordType::SOA),
        (zone.clone(), RecordType::NS),
    ];
    for (prefix, qtype) in [
        ("ns.dns.", RecordType::A),
        ("kubernetes.default.svc.", RecordType::A),
        ("db.demo.svc.", RecordType::SRV),
        ("_postgres._tcp.db.demo.svc.", RecordType::SRV),
        ("nothere.demo.svc.", RecordType::A),
    ] {
        if let Ok(n) = Name::from_ascii(prefix).and_then(|n| n.append_domain(&zone)) {
            queries.push((n, qtype));
        }
    }
    for ptr in ["20.1.244.10.in-addr.arpa.", "10.100.96.10.in-addr.arpa."] {
        queries.push((Name::from_ascii(ptr).expect("static name"), RecordType::PTR));
    }
    for (name, qtype) in queries {
        ask(
            &server,
            &check::build_query(7, &name, qtype, false, Some((1232, false, &[]))),
        );
    }
}

/// A Corefile through the converter. Imports resolve against a folder that does not exist.
pub fn corefile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let opts = crate::corefile::Options {
        base_dir: "/nonexistent/clusterdns-fuzz".into(),
        file_name: "Corefile".into(),
        ..crate::corefile::Options::default()
    };
    if let Err(e @ crate::corefile::CorefileError::Config(_)) =
        crate::corefile::convert_with(text, &opts)
    {
        panic!("the converter wrote a config it cannot load: {e}\n  Corefile: {text:?}");
    }
}

/// At most this many queries per objects input (keeps an input under a millisecond or so).
const MAX_OBJECT_QUERIES: usize = 48;

/// A file of cluster objects: parse, build the zone, and ask it about what the objects name.
pub fn objects_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(loaded) = crate::source::file::parse_objects(text, Path::new("fuzz.yaml")) else {
        return;
    };
    let queries = object_queries(&loaded.objects);
    let server = Server::new(
        &crate::config::ClusterConfig::default(),
        loaded.objects,
        None,
    );
    for (i, (name, qtype)) in queries.iter().enumerate() {
        let edns = (i % 2 == 0).then_some((1232u16, false, &[][..]));
        ask(
            &server,
            &check::build_query(i as u16, name, qtype.to_owned(), false, edns),
        );
    }
}

/// Questions about the names and addresses the objects hold: services (A, AAAA, SRV, and SRV
/// per named port), endpoint hostnames, pods, and the PTR of every address.
fn object_queries(objects: &[Object]) -> Vec<(Name, RecordType)> {
    let zone = "cluster.local.";
    let mut out = Vec::new();
    let mut push = |name: String, t: RecordType| {
        if let Ok(n) = Name::from_ascii(&name) {
            out.push((n, t));
        }
    };
    let ptr = |ip: &std::net::IpAddr| Name::from(*ip).to_ascii();
    for o in objects {
        match o {
            Object::Service(s) => {
                let base = format!("{}.{}.svc.{zone}", s.name, s.namespace);
                for t in [
                    RecordType::A,
                    RecordType::AAAA,
                    RecordType::SRV,
                    RecordType::CNAME,
                ] {
                    push(base.clone(), t);
                }
                for p in s.ports.iter().filter(|p| !p.name.is_empty()) {
                    push(
                        format!("_{}._{}.{base}", p.name, p.protocol.label()),
                        RecordType::SRV,
                    );
                }
                if let ServiceKind::ClusterIp(ips) = &s.kind {
                    ips.iter().for_each(|ip| push(ptr(ip), RecordType::PTR));
                }
            }
            Object::Slice(sl) => {
                for ep in &sl.endpoints {
                    for ip in &ep.addresses {
                        push(ptr(ip), RecordType::PTR);
                    }
                    if let (Some(h), Some(svc)) = (&ep.hostname, &sl.service) {
                        push(
                            format!("{h}.{svc}.{}.svc.{zone}", sl.namespace),
                            RecordType::A,
                        );
                    }
                }
            }
            Object::Pod(p) => {
                for ip in &p.ips {
                    let dashed = ip.to_string().replace(['.', ':'], "-");
                    let t = if ip.is_ipv4() {
                        RecordType::A
                    } else {
                        RecordType::AAAA
                    };
                    push(format!("{dashed}.{}.pod.{zone}", p.namespace), t);
                }
            }
            Object::Namespace(n) => push(format!("{}.svc.{zone}", n.name), RecordType::SOA),
        }
    }
    out.truncate(MAX_OBJECT_QUERIES);
    out
}

/// A list response's body as the Kubernetes source reads it (`src/source/pages.rs`): the
/// first byte picks the size of the chunks it arrives in (1 to 256 bytes), the rest is the body.
/// The oracle is serde_json reading the whole body at once.
pub fn list_page(data: &[u8]) {
    use serde_json::Value;
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let mut page = crate::source::pages::ListBody::default();
    let mut items = Vec::new();
    // The end of the body comes as an empty chunk, as from `fill_buf`.
    for chunk in body.chunks(usize::from(seed) + 1).chain([&[][..]]) {
        // An element serde_json skips but cannot read as a Value (a string that is not UTF-8)
        // comes back as `Err`; in a body that is JSON there is none.
        page.feed::<Value>(chunk, |item| {
            items.push(item.map_err(|(_, e)| e.to_string()))
        });
    }
    let rest = page.finish();
    let Ok(Value::Object(mut list)) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    // The reader finds the key `items` as written: compared only when the body holds the string
    // "items" once in all, written plainly, and that is the list's key (no escaped spelling of
    // it, no other key or value of that name anywhere).
    fn named_items(v: &Value) -> usize {
        match v {
            Value::String(s) => usize::from(s == "items"),
            Value::Array(a) => a.iter().map(named_items).sum(),
            Value::Object(o) => o
                .iter()
                .map(|(k, v)| usize::from(k == "items") + named_items(v))
                .sum(),
            _ => 0,
        }
    }
    let written = body.windows(7).filter(|w| w == b"\"items\"").count();
    let Some(Value::Array(want)) = list.get("items").cloned() else {
        return;
    };
    if written != 1 || named_items(&Value::Object(list.clone())) != 1 {
        return;
    }
    let items: Vec<Value> = items
        .into_iter()
        .map(|i| i.expect("every element of a JSON list reads as a Value"))
        .collect();
    assert_eq!(items, want, "the items read");
    let rest = rest.expect("a JSON list reads to its end");
    let rest: Value = serde_json::from_slice(&rest).expect("the list without its items is JSON");
    list.insert("items".into(), Value::Array(Vec::new()));
    assert_eq!(rest, Value::Object(list), "the list without its items");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run every file under `fuzz/<dir>/<target>/` through its target; the failures, named.
    fn replay(dir: &str, must_exist: bool) -> Vec<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir);
        let mut broken = Vec::new();
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let mut files: Vec<_> = match std::fs::read_dir(&dir) {
                Ok(rd) => rd.map(|e| e.expect("corpus entry").path()).collect(),
                Err(_) if !must_exist => continue,
                Err(e) => panic!("{}: {e}", dir.display()),
            };
            files.sort();
            assert!(
                !must_exist || !files.is_empty(),
                "{}: empty corpus",
                dir.display()
            );
            for f in files {
                let data = std::fs::read(&f).expect("read corpus file");
                if let Err(e) = std::panic::catch_unwind(|| target(&data)) {
                    let why = e
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| e.downcast_ref::<&str>().copied())
                        .unwrap_or("panic");
                    broken.push(format!("{name}: {}: {why}", f.display()));
                }
            }
        }
        broken
    }

    /// Every checked-in corpus file of every target, through the same functions the fuzzers
    /// call.
    #[test]
    fn replay_corpora() {
        let broken = replay("corpus", true);
        assert!(broken.is_empty(), "{}", broken.join("\n"));
    }

    /// Every input a fuzzer found a bug with (`fuzz/regressions/<target>/`, named after the
    /// bug), fixed: each passes its target's invariants now.
    #[test]
    fn replay_regressions() {
        let broken = replay("regressions", false);
        assert!(broken.is_empty(), "{}", broken.join("\n"));
    }
}
