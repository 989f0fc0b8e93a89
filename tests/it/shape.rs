//! Answer shaping through the real binary, asked with `dig` over UDP and TCP: CoreDNS's
//! `template` (AKS's stock templates, the examples of the plugin's documentation and the cases
//! of its `template_test.go`), `rewrite` (its documented cluster alias, `answer auto`), the
//! AAAA filter for forwarded names, and `loadbalance` on forwarded and cached answers. The
//! upstream is a fake on loopback that counts what reaches it.

use std::net::Ipv4Addr;

use crate::support::upstream::{Action, Fake, a_reply};
use crate::support::*;

/// An upstream answering every A question with 192.0.2.9 (and `multi.example` with three
/// addresses), every other type with NOERROR and no records.
fn upstream(rt: &tokio::runtime::Runtime) -> Fake {
    rt.block_on(Fake::start(|q, _| {
        let name = q.queries[0].name().to_ascii();
        let t = q.queries[0].query_type();
        if t != hickory_proto::rr::RecordType::A {
            return Action::Reply(a_reply(q, &[], 300));
        }
        if name.starts_with("multi.") {
            let ips = [1, 2, 3].map(|i| Ipv4Addr::new(192, 0, 2, i));
            return Action::Reply(a_reply(q, &ips, 300));
        }
        Action::Reply(a_reply(q, &[Ipv4Addr::new(192, 0, 2, 9)], 300))
    }))
}

/// Queries that reached the upstream, less clusterdns's loop probes (HINFO of a random name,
/// sent once at start-up).
fn asked(up: &Fake) -> usize {
    up.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, m)| m.queries[0].query_type() != hickory_proto::rr::RecordType::HINFO)
        .count()
}

fn sample_with(extra: &str) -> Server {
    Server::sample(extra)
}

/// The flags and counts line of a dig answer, e.g. `flags: qr aa rd; QUERY: 1, ANSWER: 0, ...`.
fn flags(out: &str) -> String {
    out.lines()
        .find(|l| l.contains(";; flags:"))
        .unwrap_or("")
        .to_string()
}

/// AKS's stock Corefile, converted: its two templates as clusterdns runs them.
fn aks_shape_yaml() -> String {
    let c = convert_fixture("aks-full/Corefile").unwrap();
    let mut y = String::from("shape:\n  templates:\n");
    for t in &c.config.shape.templates {
        let item = serde_saphyr::to_string(t).unwrap();
        let mut first = true;
        for line in item.lines() {
            y += if first { "  - " } else { "    " };
            y += line;
            y += "\n";
            first = false;
        }
    }
    y
}

#[test]
fn aks_templates_answer_search_path_expansions_without_an_upstream_query() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = upstream(&rt);
    let extra = format!(
        "{}forward:\n  upstreams: [\"{}\"]\n  timeout: 500ms\n",
        aks_shape_yaml(),
        up.addr
    );
    let s = sample_with(&extra);
    // The expansion seed 003 captured on the wire: four labels before internal.cloudapp.net.
    let expansion = "openai.com.l13s53dgmqzeng4qvhnihfn1bc.gvxx.internal.cloudapp.net";
    for proto in ["+notcp", "+tcp"] {
        for t in ["A", "AAAA"] {
            let out = s.dig(&[proto, expansion, t]);
            assert!(out.contains("status: NXDOMAIN"), "{out}");
            // CoreDNS's answer on the wire: `NXDomain*- 0/0/0` (AA, no RA, no records).
            let f = flags(&out);
            assert!(f.contains(" aa") && !f.contains(" ra"), "{f}");
            assert!(f.contains("ANSWER: 0, AUTHORITY: 0"), "{f}");
        }
    }
    // reddog.microsoft.com: the whole zone, apex included.
    for name in ["reddog.microsoft.com", "x.y.reddog.microsoft.com"] {
        assert_eq!(s.status(&[name]), "NXDOMAIN", "{name}");
        assert_eq!(s.status(&["+tcp", name, "TXT"]), "NXDOMAIN", "{name}");
    }
    assert_eq!(asked(&up), 0, "none of these went upstream");
    // A node's host name (one label before the zone) falls through and is forwarded.
    let node = "aks-nodepool1-16317344-vmss000001.internal.cloudapp.net";
    assert_eq!(s.dig(&["+short", node]).trim(), "192.0.2.9");
    assert_eq!(asked(&up), 1);
    // Three labels: still forwarded (the regex wants four or more).
    assert_eq!(
        s.dig(&["+short", "a.b.c.internal.cloudapp.net"]).trim(),
        "192.0.2.9"
    );
    // Cluster names are untouched.
    assert_eq!(
        s.dig(&["+short", "kubernetes.default.svc.cluster.local"])
            .trim(),
        "10.96.0.1"
    );
}

/// The examples of CoreDNS's template documentation and the cases of `template_test.go`,
/// answered by the real binary.
const DOC_TEMPLATES: &str = r#"shape:
  templates:
  - zones: [invalid]
    rcode: NXDOMAIN
    authority: ["invalid. 60 {{ .Class }} SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)"]
  - class: IN
    type: A
    zones: [example]
    match: ['(^|[.])ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$']
    answer: ["{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"]
    authority: ["example. 60 IN NS ns0.example."]
    additional: ["ns0.example. 60 IN A 203.0.113.8"]
    fallthrough: ["."]
  - class: IN
    type: A
    zones: [example]
    match: ['^ip0a(?P<b>[a-f0-9]{2})(?P<c>[a-f0-9]{2})(?P<d>[a-f0-9]{2})[.]example[.]$']
    answer: ["{{ .Name }} 60 IN A 10.{{ parseInt .Group.b 16 8 }}.{{ parseInt .Group.c 16 8 }}.{{ parseInt .Group.d 16 8 }}"]
    fallthrough: ["."]
  - class: IN
    type: MX
    zones: [example]
    match: ['^ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$']
    answer: ["{{ .Name }} 60 MX 10 {{ .Name }}"]
    additional: ["{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"]
    fallthrough: ["."]
  - class: IN
    type: PTR
    zones: [in-addr.arpa]
    match: ['^(?P<d>[0-9]*)[.](?P<c>[0-9]*)[.](?P<b>[0-9]*)[.](?P<a>[0-9]*)[.]in-addr[.]arpa[.]$']
    answer: ["{{ .Name }} 60 IN PTR ip-{{ .Group.a }}-{{ .Group.b }}-{{ .Group.c }}-{{ .Group.d }}.example."]
    fallthrough: ["."]
  - zones: [broken.example]
    match: ['[.]example[.]$']
    answer: ["{{ .Name }} 60 IN TXT \"{{ index .Match 2 }}\""]
  - zones: [nonrr.example]
    answer: ["{{ .Name }}"]
  - class: IN
    type: A
    zones: [remote.example]
    answer: ["{{ .Name }} 60 IN A {{ .Remote }}"]
  - zones: [servfail.example]
    rcode: SERVFAIL
  - zones: [foogle.com]
    match: ['^foogle\.com\.$']
    answer: ["foogle.com 60 IN CNAME www.upstream.test"]
  - class: IN
    type: TXT
    zones: [example]
    match: ["$^"]
    rcode: SERVFAIL
    fallthrough: [example]
  - zones: [strict.example]
    match: ['^only[.]strict[.]example[.]$']
    answer: ["{{ .Name }} 60 IN TXT \"{{ .Zone }} {{ .Type }} {{ .Class }}\""]
"#;

#[test]
fn template_documentation_examples_answer_as_coredns() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = upstream(&rt);
    let extra = format!(
        "{DOC_TEMPLATES}forward:\n  upstreams: [\"{}\"]\n  timeout: 500ms\n",
        up.addr
    );
    let s = sample_with(&extra);
    for proto in ["+notcp", "+tcp"] {
        let ask = |args: &[&str]| {
            let mut a = vec![proto];
            a.extend_from_slice(args);
            s.dig(&a)
        };
        // ExampleDomainANSMatch: answer, authority NS, additional A.
        let out = ask(&["ip-10-95-12-8.example", "A"]);
        assert!(out.contains("status: NOERROR"), "{out}");
        assert!(
            ws(&out).contains("ip-10-95-12-8.example. 60 IN A 10.95.12.8"),
            "{out}"
        );
        assert!(ws(&out).contains("example. 60 IN NS ns0.example."), "{out}");
        assert!(
            ws(&out).contains("ns0.example. 60 IN A 203.0.113.8"),
            "{out}"
        );
        assert!(flags(&out).contains(" aa"), "{out}");
        // ExampleDomainMatchHexIp: parseInt.
        assert_eq!(
            ask(&["+short", "ip0a5f0c09.example", "A"]).trim(),
            "10.95.12.9"
        );
        // ExampleDomainMXMatch: MX with the A in the additional section.
        let out = ask(&["ip-10-95-12-8.example", "MX"]);
        assert!(
            ws(&out).contains("MX 10 ip-10-95-12-8.example.") && out.contains("ADDITIONAL: 2"),
            "{out}"
        );
        // ExampleInvalidNXDOMAIN: NXDOMAIN with the templated SOA, for any type.
        let out = ask(&["test.invalid", "MX"]);
        assert!(out.contains("status: NXDOMAIN"), "{out}");
        assert!(
            ws(&out).contains("invalid. 60 IN SOA ns.invalid. hostmaster.invalid. 1 60 60 60 60"),
            "{out}"
        );
        // The PTR example.
        assert_eq!(
            ask(&["+short", "-x", "10.1.2.3"]).trim(),
            "ip-10-1-2-3.example."
        );
        // BrokenTemplate (`index .Match 2` out of range) and NonRRTemplate: SERVFAIL.
        assert_eq!(
            dig_status(&ask(&["a.broken.example", "TXT"])).unwrap_or("none"),
            "SERVFAIL"
        );
        assert_eq!(
            dig_status(&ask(&["a.nonrr.example", "A"])).unwrap_or("none"),
            "SERVFAIL"
        );
        // RcodeServFail.
        assert_eq!(
            dig_status(&ask(&["x.servfail.example", "A"])).unwrap_or("none"),
            "SERVFAIL"
        );
        // ExampleIPMatch: `.Remote` is the client's address.
        assert_eq!(
            ask(&["+short", "test.remote.example", "A"]).trim(),
            "127.0.0.1"
        );
        // TestMultiSection: `match "$^"` with fallthrough goes on (to forwarding here).
        assert_eq!(
            dig_status(&ask(&["anything.example", "TXT"])).unwrap_or("none"),
            "NOERROR"
        );
        // No regex matches and no fallthrough: SERVFAIL; a match: .Zone/.Type/.Class.
        assert_eq!(
            dig_status(&ask(&["other.strict.example", "A"])).unwrap_or("none"),
            "SERVFAIL"
        );
        assert_eq!(
            ask(&["+short", "only.strict.example", "TXT"]).trim(),
            "\"strict.example. TXT IN\""
        );
        // Fabricate a CNAME: the target's records follow, resolved upstream.
        let out = ask(&["+short", "foogle.com", "A"]);
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            ["www.upstream.test.", "192.0.2.9"],
            "{out}"
        );
        // A type the template does not take falls through: ip-… AAAA goes upstream.
        assert_eq!(
            dig_status(&ask(&["ip-10-95-12-8.example", "AAAA"])).unwrap_or("none"),
            "NOERROR"
        );
    }
}

/// Whitespace runs as one space: dig pads columns with tabs by name length.
fn ws(out: &str) -> String {
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A template on the cluster zone answers from the UDP worker with no resolver at all (the
/// fast path: no task, no upstream), and over TCP; names it does not match still get the
/// zone's own answers.
#[test]
fn template_on_the_cluster_zone_without_forwarding() {
    let s = sample_with(
        "shape:\n  templates:\n  - class: IN\n    type: A\n    zones: [cluster.local]\n    match: ['^canary[.]default[.]svc[.]cluster[.]local[.]$']\n    answer: [\"{{ .Name }} 5 IN A 10.99.0.1\"]\n    fallthrough: [\".\"]\n",
    );
    for proto in ["+notcp", "+tcp"] {
        assert_eq!(
            s.dig(&[proto, "+short", "canary.default.svc.cluster.local"])
                .trim(),
            "10.99.0.1"
        );
        assert_eq!(
            s.dig(&[proto, "+short", "kubernetes.default.svc.cluster.local"])
                .trim(),
            "10.96.0.1"
        );
        assert_eq!(
            s.status(&[proto, "nope.default.svc.cluster.local"]),
            "NXDOMAIN"
        );
    }
}

/// CoreDNS's documented cluster alias: `rewrite name regex (.*)\.corp\.example\.com
/// {1}.default.svc.cluster.local answer auto`. The client sees the name it asked, over UDP (no
/// resolver: the fast path) and TCP.
#[test]
fn rewrite_alias_to_the_cluster_zone_answers_the_asked_name() {
    let s = sample_with(
        "shape:\n  rewrites:\n  - field: name\n    match: regex\n    from: '(.*)\\.corp\\.example\\.com'\n    to: '{1}.default.svc.cluster.local'\n    answer_auto: true\n  - field: name\n    match: suffix\n    from: .svc.demo.example\n    to: .demo.svc.cluster.local\n    answer_auto: true\n",
    );
    for proto in ["+notcp", "+tcp"] {
        let out = s.dig(&[proto, "Kubernetes.Corp.Example.Com", "A"]);
        assert!(out.contains("status: NOERROR"), "{out}");
        assert!(
            ws(&out).contains(";Kubernetes.Corp.Example.Com. IN A"),
            "the question as asked: {out}"
        );
        assert!(
            ws(&out).contains("kubernetes.corp.example.com. 30 IN A 10.96.0.1"),
            "the answer owned by the asked name: {out}"
        );
        // A name that does not exist: NXDOMAIN, with the cluster zone's SOA.
        let out = s.dig(&[proto, "nope.corp.example.com", "A"]);
        assert!(out.contains("status: NXDOMAIN"), "{out}");
        assert!(ws(&out).contains(";nope.corp.example.com. IN A"), "{out}");
        // SRV through a suffix rule: owner and target names map back.
        let out = s.dig(&[proto, "_http._tcp.web.svc.demo.example", "SRV"]);
        assert!(out.contains("status: NOERROR"), "{out}");
        assert!(
            ws(&out).contains("_http._tcp.web.svc.demo.example. 30 IN SRV"),
            "{out}"
        );
        assert!(out.contains("web.svc.demo.example."), "{out}");
        assert!(
            !out.contains("cluster.local"),
            "nothing of the rewritten name: {out}"
        );
    }
    // Names no rule matches are answered as before.
    assert_eq!(
        s.dig(&["+short", "kubernetes.default.svc.cluster.local"])
            .trim(),
        "10.96.0.1"
    );
}

/// A rewrite to a forwarded name: the upstream is asked the rewritten name, the client gets
/// its own back (`exact` rules always map the answer back).
#[test]
fn rewrite_to_a_forwarded_name() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = upstream(&rt);
    let s = sample_with(&format!(
        "shape:\n  rewrites:\n  - {{field: name, from: alias.example, to: www.upstream.test}}\n  - {{field: type, from: ANY, to: HINFO}}\nforward:\n  upstreams: [\"{}\"]\n  timeout: 500ms\n",
        up.addr
    ));
    let out = s.dig(&["alias.example", "A"]);
    assert!(
        ws(&out).contains("alias.example. 300 IN A 192.0.2.9"),
        "{out}"
    );
    let seen = up.seen.lock().unwrap().clone();
    let names: Vec<String> = seen
        .iter()
        .map(|(_, m)| m.queries[0].name().to_ascii())
        .collect();
    assert!(names.iter().any(|n| n == "www.upstream.test."), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("alias")), "{names:?}");
    // `type ANY HINFO`: the upstream is asked HINFO, the client sees its ANY question.
    let out = s.dig(&["x.example", "ANY"]);
    assert!(ws(&out).contains(";x.example. IN ANY"), "{out}");
    let seen = up.seen.lock().unwrap().clone();
    let x: Vec<_> = seen
        .iter()
        .map(|(_, m)| &m.queries[0])
        .filter(|q| q.name().to_ascii() == "x.example.")
        .map(|q| q.query_type())
        .collect();
    assert_eq!(x, [hickory_proto::rr::RecordType::HINFO]);
}

#[test]
fn filter_aaaa_answers_forwarded_aaaa_at_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = upstream(&rt);
    let s = sample_with(&format!(
        "forward:\n  upstreams: [\"{}\"]\n  timeout: 500ms\n  filter_aaaa: true\n",
        up.addr
    ));
    for proto in ["+notcp", "+tcp"] {
        let out = s.dig(&[proto, "openai.com", "AAAA"]);
        assert!(out.contains("status: NOERROR"), "{out}");
        assert!(flags(&out).contains("ANSWER: 0"), "{out}");
    }
    assert_eq!(asked(&up), 0, "no AAAA left the node");
    // A questions still go upstream; the cluster zone's AAAA answers are the zone's own
    // (NODATA with the zone's SOA here: no IPv6 service).
    assert_eq!(s.dig(&["+short", "openai.com", "A"]).trim(), "192.0.2.9");
    assert_eq!(asked(&up), 1);
    let out = s.dig(&["kubernetes.default.svc.cluster.local", "AAAA"]);
    assert!(out.contains("AUTHORITY: 1"), "{out}");
    // Off by default: AAAA goes upstream.
    let s2 = sample_with(&format!(
        "forward:\n  upstreams: [\"{}\"]\n  timeout: 500ms\n",
        up.addr
    ));
    s2.dig(&["openai.com", "AAAA"]);
    assert_eq!(asked(&up), 2);
}

/// `loadbalance` rotates forwarded answers and the cache's, not only the cluster zone's; off,
/// the upstream's order is kept.
#[test]
fn loadbalance_rotates_forwarded_and_cached_answers() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = upstream(&rt);
    let firsts = |s: &Server| {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..24 {
            let out = s.dig(&["+short", "multi.example", "A"]);
            let ips: Vec<&str> = out.lines().collect();
            assert_eq!(ips.len(), 3, "{out}");
            seen.insert(ips[0].to_string());
        }
        seen
    };
    let on = sample_with(&format!(
        "forward:\n  upstreams: [\"{}\"]\n  timeout: 500ms\n",
        up.addr
    ));
    let seen = firsts(&on);
    assert!(seen.len() >= 2, "rotated: {seen:?}");
    assert!(asked(&up) <= 2, "served from the cache after the first");
    let off = sample_with(&format!(
        "cluster:\n  loadbalance: false\nforward:\n  upstreams: [\"{}\"]\n  timeout: 500ms\n",
        up.addr
    ));
    assert_eq!(firsts(&off).into_iter().collect::<Vec<_>>(), ["192.0.2.1"]);
}

/// Pods for the autopath tests, on loopback addresses `dig -b` can send from: a client in
/// `default` (127.0.0.5), one in `demo` (127.0.0.6), a host-network pod of `default` (127.0.0.7, the node's
/// address), and `extra` (more pod items).
fn autopath_objects(extra: &str) -> String {
    let base = std::fs::read_to_string(repo().join("config/cluster.yaml")).unwrap();
    let pod = |name: &str, ns: &str, ip: &str, host: bool| {
        let spec = if host {
            "  spec: {hostNetwork: true}\n"
        } else {
            ""
        };
        format!(
            "- apiVersion: v1\n  kind: Pod\n  metadata: {{name: {name}, namespace: {ns}}}\n{spec}  status: {{podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n"
        )
    };
    format!(
        "{base}{}{}{}{extra}",
        pod("client-a", "default", "127.0.0.5", false),
        pod("client-b", "demo", "127.0.0.6", false),
        pod("node-agent", "default", "127.0.0.7", true),
    )
}

fn pod_item(name: &str, ns: &str, ip: &str) -> String {
    format!(
        "- apiVersion: v1\n  kind: Pod\n  metadata: {{name: {name}, namespace: {ns}}}\n  status: {{podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n"
    )
}

/// `dig -b <from>`: the question asked from a pod's address.
fn dig_from(s: &Server, from: &str, args: &[&str]) -> String {
    let mut a = vec!["-b", from];
    a.extend_from_slice(args);
    s.dig(&a)
}

/// The answer records of a dig output, whitespace-normalised, in order.
fn answers(out: &str) -> Vec<String> {
    let mut in_answer = false;
    let mut v = Vec::new();
    for l in out.lines() {
        if l.starts_with(";; ANSWER SECTION") {
            in_answer = true;
            continue;
        }
        if in_answer {
            if l.trim().is_empty() {
                break;
            }
            v.push(ws(l));
        }
    }
    v
}

/// CoreDNS's `autopath @kubernetes` as a pod sees it: its first search-path expansion answered
/// with the first expansion that exists, a CNAME from the asked name to it put first (CoreDNS's
/// `cnamer`), over UDP and TCP; clients that are not pods (unknown addresses, host-network
/// pods) and names outside the client's first search domain are answered as asked.
#[test]
fn autopath_walks_a_pods_search_path() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = upstream(&rt);
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\nsearch corp.internal\n").unwrap();
    let s = Server::with_objects(
        &autopath_objects(""),
        &format!(
            "shape:\n  autopath:\n    enabled: true\n    resolv_conf: {}\nforward:\n  upstreams: [\"{}\"]\n  timeout: 500ms\n",
            resolv.display(),
            up.addr
        ),
    );
    // `web.demo` from a pod in `default`: ndots:5 makes its first try
    // web.demo.default.svc.cluster.local; the second expansion exists.
    for proto in ["+notcp", "+tcp"] {
        let out = dig_from(
            &s,
            "127.0.0.5",
            &[proto, "web.demo.default.svc.cluster.local", "A"],
        );
        assert!(out.contains("status: NOERROR"), "{out}");
        assert!(
            ws(&out).contains(";web.demo.default.svc.cluster.local. IN A"),
            "the question as asked: {out}"
        );
        assert_eq!(
            answers(&out),
            [
                "web.demo.default.svc.cluster.local. 30 IN CNAME web.demo.svc.cluster.local.",
                "web.demo.svc.cluster.local. 30 IN A 10.96.100.10",
            ],
            "{out}"
        );
    }
    // The first expansion exists: its answer, no CNAME.
    let out = dig_from(&s, "127.0.0.5", &["kubernetes.default.svc.cluster.local"]);
    assert_eq!(
        answers(&out),
        ["kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1"]
    );
    // From a pod in `demo` the same name is not its first expansion: as asked, NXDOMAIN.
    assert_eq!(
        dig_status(&dig_from(
            &s,
            "127.0.0.6",
            &["web.demo.default.svc.cluster.local"]
        ))
        .unwrap_or("none"),
        "NXDOMAIN"
    );
    // ... and its own first expansion of `kubernetes.default` walks to the second.
    let out = dig_from(
        &s,
        "127.0.0.6",
        &["kubernetes.default.demo.svc.cluster.local"],
    );
    assert_eq!(
        answers(&out)[0],
        "kubernetes.default.demo.svc.cluster.local. 30 IN CNAME kubernetes.default.svc.cluster.local."
    );
    // A host-network pod (the node's address) and an address no pod holds: no autopath.
    for from in ["127.0.0.7", "127.0.0.1"] {
        assert_eq!(
            dig_status(&dig_from(&s, from, &["web.demo.default.svc.cluster.local"]))
                .unwrap_or("none"),
            "NXDOMAIN",
            "{from}"
        );
    }
    assert_eq!(asked(&up), 0, "every walk so far ended in the cluster zone");
    // A name outside the cluster: the cluster expansions are NXDOMAIN, the host search domain
    // from resolv.conf is forwarded and exists; the walk goes on after the forwarded reply.
    let out = dig_from(
        &s,
        "127.0.0.5",
        &["openai.com.default.svc.cluster.local", "A"],
    );
    assert_eq!(
        answers(&out),
        [
            "openai.com.default.svc.cluster.local. 300 IN CNAME openai.com.corp.internal.",
            "openai.com.corp.internal. 300 IN A 192.0.2.9",
        ],
        "{out}"
    );
    let names: Vec<String> = up
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, m)| m.queries[0].query_type() == hickory_proto::rr::RecordType::A)
        .map(|(_, m)| m.queries[0].name().to_ascii())
        .collect();
    assert_eq!(names, ["openai.com.corp.internal."], "one query upstream");
    // Counted as CoreDNS counts it: the walks that answered from a later expansion (the
    // first-expansion hit counts too: CoreDNS counts every answer the walk writes).
    let body = s.metrics();
    let n = metric_sum(&body, "coredns_autopath_success_total", &[]);
    assert_eq!(n, 5.0, "{body}");
}

/// An address given to a pod of another namespace while the old pod is still listed (deleted
/// late): the pod that came last is the client; the old pod's removal leaves it so.
#[test]
fn autopath_follows_a_reused_pod_address_into_its_new_namespace() {
    let s = Server::with_objects(
        &autopath_objects(&pod_item("old", "demo", "127.0.0.8")),
        "shape:\n  autopath:\n    enabled: true\n    resolv_conf: null\n",
    );
    let demo_first = "kubernetes.default.demo.svc.cluster.local";
    let default_first = "web.demo.default.svc.cluster.local";
    // Polled: a loaded machine may let the first dig time out.
    let out = s.wait_for(
        &["-b", "127.0.0.8", demo_first],
        |o| o.contains("status: NOERROR"),
        std::time::Duration::from_secs(10),
    );
    assert_eq!(dig_status(&out).unwrap_or("none"), "NOERROR", "{out}");
    assert_eq!(
        dig_status(&dig_from(&s, "127.0.0.8", &[default_first])).unwrap_or("none"),
        "NXDOMAIN"
    );
    // The address reused in `default`, the old pod still there.
    let objects = s.path("objects.yaml");
    std::fs::write(
        &objects,
        autopath_objects(&format!(
            "{}{}",
            pod_item("old", "demo", "127.0.0.8"),
            pod_item("new", "default", "127.0.0.8")
        )),
    )
    .unwrap();
    let out = s.wait_for(
        &["-b", "127.0.0.8", default_first],
        |o| o.contains("status: NOERROR"),
        std::time::Duration::from_secs(10),
    );
    assert!(out.contains("status: NOERROR"), "{out}");
    assert_eq!(
        dig_status(&dig_from(&s, "127.0.0.8", &[demo_first])).unwrap_or("none"),
        "NXDOMAIN"
    );
    // The old pod goes: the new one is still the client. A marker pod added in the same
    // write shows when the change is served.
    std::fs::write(
        &objects,
        autopath_objects(&format!(
            "{}{}",
            pod_item("new", "default", "127.0.0.8"),
            pod_item("marker", "demo", "127.0.0.9")
        )),
    )
    .unwrap();
    let out = s.wait_for(
        &["-b", "127.0.0.9", demo_first],
        |o| o.contains("status: NOERROR"),
        std::time::Duration::from_secs(10),
    );
    assert!(out.contains("status: NOERROR"), "{out}");
    assert_eq!(
        dig_status(&dig_from(&s, "127.0.0.8", &[default_first])).unwrap_or("none"),
        "NOERROR"
    );
    assert_eq!(
        dig_status(&dig_from(&s, "127.0.0.8", &[demo_first])).unwrap_or("none"),
        "NXDOMAIN"
    );
}

/// The objects of CoreDNS's `k8s_external` tests (plugin/k8s_external/external_test.go), and
/// a kube-dns Service with the external address its apex test gives the name server.
const EXTERNAL_OBJECTS: &str = r#"apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: testns}}
- {apiVersion: v1, kind: Namespace, metadata: {name: kube-system}}
- apiVersion: v1
  kind: Service
  metadata: {name: kube-dns, namespace: kube-system}
  spec: {clusterIP: 10.0.0.10, externalIPs: [127.0.0.1], ports: [{name: dns, port: 53, protocol: UDP}]}
- apiVersion: v1
  kind: Service
  metadata: {name: svc1, namespace: testns}
  spec: {type: ClusterIP, clusterIP: 10.0.0.1, externalIPs: [1.2.3.4], ports: [{name: http, port: 80, protocol: TCP}]}
- apiVersion: v1
  kind: Service
  metadata: {name: svc6, namespace: testns}
  spec: {type: ClusterIP, clusterIP: 10.0.0.3, externalIPs: ["1:2::5"], ports: [{name: http, port: 80, protocol: TCP}]}
- apiVersion: v1
  kind: Service
  metadata: {name: svc11, namespace: testns}
  spec: {type: LoadBalancer, clusterIP: 10.0.0.4, ports: [{name: http, port: 80, protocol: TCP}]}
  status: {loadBalancer: {ingress: [{ip: 2.3.4.5}]}}
- apiVersion: v1
  kind: Service
  metadata: {name: svc12, namespace: testns}
  spec: {type: LoadBalancer, clusterIP: 10.0.0.5, ports: [{name: http, port: 80, protocol: TCP}]}
  status: {loadBalancer: {ingress: [{hostname: dummy.hostname}]}}
- apiVersion: v1
  kind: Service
  metadata: {name: svc-headless, namespace: testns}
  spec: {clusterIP: None, ports: [{name: http, port: 80, protocol: TCP}]}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: svc-headless-x, namespace: testns, labels: {kubernetes.io/service-name: svc-headless}}
  addressType: IPv4
  endpoints:
  - {addresses: [1.2.3.4], hostname: endpoint-svc-0, conditions: {ready: true}}
  - {addresses: [1.2.3.5], hostname: endpoint-svc-1, conditions: {ready: true}}
  ports: [{name: http, port: 80, protocol: TCP}]
"#;

/// A dig answer's sections, each as sorted whitespace-normalised lines (CoreDNS's
/// `SortAndCheck`), with the SOA serial left out (CoreDNS's test stubs it; ours changes with
/// each snapshot).
fn sections(out: &str) -> [Vec<String>; 3] {
    let mut v: [Vec<String>; 3] = Default::default();
    let mut cur: Option<usize> = None;
    for l in out.lines() {
        cur = match l {
            _ if l.starts_with(";; ANSWER SECTION") => Some(0),
            _ if l.starts_with(";; AUTHORITY SECTION") => Some(1),
            _ if l.starts_with(";; ADDITIONAL SECTION") => Some(2),
            _ if l.trim().is_empty() => None,
            _ => cur,
        };
        if let Some(i) = cur
            && !l.starts_with(";;")
        {
            let mut f: Vec<&str> = l.split_whitespace().collect();
            if f.get(3) == Some(&"SOA") && f.len() > 6 {
                f[6] = "SERIAL";
            }
            v[i].push(f.join(" "));
        }
    }
    for s in &mut v {
        s.sort();
    }
    v
}

#[test]
fn k8s_external_answers_as_corednss_test_tables() {
    let s = Server::with_objects(
        EXTERNAL_OBJECTS,
        "shape:\n  external:\n    zones: [example.com, in-addr.arpa]\n    headless: true\n",
    );
    let soa = "example.com. 5 IN SOA ns1.dns.example.com. hostmaster.dns.example.com. SERIAL 7200 1800 86400 5";
    let none: &[&str] = &[];
    // (name, type, rcode, answer, authority, additional): external_test.go and apex_test.go.
    #[allow(clippy::type_complexity)]
    let cases: &[(&str, &str, &str, &[&str], &[&str], &[&str])] = &[
        (
            "4.3.2.1.in-addr.arpa",
            "PTR",
            "NOERROR",
            &["4.3.2.1.in-addr.arpa. 5 IN PTR svc1.testns.example.com."],
            none,
            none,
        ),
        (
            "svc1.testns.example.com",
            "PTR",
            "NOERROR",
            none,
            &[soa],
            none,
        ),
        (
            "not-existing.testns.example.com",
            "PTR",
            "NXDOMAIN",
            none,
            &[soa],
            none,
        ),
        (
            "svc1.testns.example.com",
            "A",
            "NOERROR",
            &["svc1.testns.example.com. 5 IN A 1.2.3.4"],
            none,
            none,
        ),
        (
            "svc1.testns.example.com",
            "SRV",
            "NOERROR",
            &["svc1.testns.example.com. 5 IN SRV 0 100 80 svc1.testns.example.com."],
            none,
            &["svc1.testns.example.com. 5 IN A 1.2.3.4"],
        ),
        (
            "*._not-udp-or-tcp.svc1.testns.example.com",
            "SRV",
            "NXDOMAIN",
            none,
            &[soa],
            none,
        ),
        (
            "_http._tcp.svc1.testns.example.com",
            "SRV",
            "NOERROR",
            &["_http._tcp.svc1.testns.example.com. 5 IN SRV 0 100 80 svc1.testns.example.com."],
            none,
            &["svc1.testns.example.com. 5 IN A 1.2.3.4"],
        ),
        (
            "svc1.testns.example.com",
            "AAAA",
            "NOERROR",
            none,
            &[soa],
            none,
        ),
        (
            "svc0.testns.example.com",
            "AAAA",
            "NXDOMAIN",
            none,
            &[soa],
            none,
        ),
        (
            "svc0.testns.example.com",
            "A",
            "NXDOMAIN",
            none,
            &[soa],
            none,
        ),
        (
            "svc0.svc-nons.example.com",
            "A",
            "NXDOMAIN",
            none,
            &[soa],
            none,
        ),
        (
            "svc6.testns.example.com",
            "AAAA",
            "NOERROR",
            &["svc6.testns.example.com. 5 IN AAAA 1:2::5"],
            none,
            none,
        ),
        (
            "_http._tcp.svc6.testns.example.com",
            "SRV",
            "NOERROR",
            &["_http._tcp.svc6.testns.example.com. 5 IN SRV 0 100 80 svc6.testns.example.com."],
            none,
            &["svc6.testns.example.com. 5 IN AAAA 1:2::5"],
        ),
        (
            "svc6.testns.example.com",
            "SRV",
            "NOERROR",
            &["svc6.testns.example.com. 5 IN SRV 0 100 80 svc6.testns.example.com."],
            none,
            &["svc6.testns.example.com. 5 IN AAAA 1:2::5"],
        ),
        ("testns.example.com", "A", "NOERROR", none, &[soa], none),
        ("testns.example.com", "SOA", "NOERROR", none, &[soa], none),
        (
            "svc11.testns.example.com",
            "A",
            "NOERROR",
            &["svc11.testns.example.com. 5 IN A 2.3.4.5"],
            none,
            none,
        ),
        (
            "_http._tcp.svc11.testns.example.com",
            "SRV",
            "NOERROR",
            &["_http._tcp.svc11.testns.example.com. 5 IN SRV 0 100 80 svc11.testns.example.com."],
            none,
            &["svc11.testns.example.com. 5 IN A 2.3.4.5"],
        ),
        (
            "svc11.testns.example.com",
            "SRV",
            "NOERROR",
            &["svc11.testns.example.com. 5 IN SRV 0 100 80 svc11.testns.example.com."],
            none,
            &["svc11.testns.example.com. 5 IN A 2.3.4.5"],
        ),
        (
            "svc12.testns.example.com",
            "A",
            "NOERROR",
            &["svc12.testns.example.com. 5 IN CNAME dummy.hostname."],
            none,
            none,
        ),
        (
            "_http._tcp.svc12.testns.example.com",
            "SRV",
            "NOERROR",
            &["_http._tcp.svc12.testns.example.com. 5 IN SRV 0 100 80 dummy.hostname."],
            none,
            none,
        ),
        (
            "svc12.testns.example.com",
            "SRV",
            "NOERROR",
            &["svc12.testns.example.com. 5 IN SRV 0 100 80 dummy.hostname."],
            none,
            none,
        ),
        (
            "svc-headless.testns.example.com",
            "A",
            "NOERROR",
            &[
                "svc-headless.testns.example.com. 5 IN A 1.2.3.4",
                "svc-headless.testns.example.com. 5 IN A 1.2.3.5",
            ],
            none,
            none,
        ),
        (
            "svc-headless.testns.example.com",
            "SRV",
            "NOERROR",
            &[
                "svc-headless.testns.example.com. 5 IN SRV 0 50 80 endpoint-svc-0.svc-headless.testns.example.com.",
                "svc-headless.testns.example.com. 5 IN SRV 0 50 80 endpoint-svc-1.svc-headless.testns.example.com.",
            ],
            none,
            &[
                "endpoint-svc-0.svc-headless.testns.example.com. 5 IN A 1.2.3.4",
                "endpoint-svc-1.svc-headless.testns.example.com. 5 IN A 1.2.3.5",
            ],
        ),
        (
            "_http._tcp.svc-headless.testns.example.com",
            "SRV",
            "NOERROR",
            &[
                "_http._tcp.svc-headless.testns.example.com. 5 IN SRV 0 50 80 endpoint-svc-0.svc-headless.testns.example.com.",
                "_http._tcp.svc-headless.testns.example.com. 5 IN SRV 0 50 80 endpoint-svc-1.svc-headless.testns.example.com.",
            ],
            none,
            &[
                "endpoint-svc-0.svc-headless.testns.example.com. 5 IN A 1.2.3.4",
                "endpoint-svc-1.svc-headless.testns.example.com. 5 IN A 1.2.3.5",
            ],
        ),
        (
            "endpoint-svc-0.svc-headless.testns.example.com",
            "SRV",
            "NOERROR",
            &[
                "endpoint-svc-0.svc-headless.testns.example.com. 5 IN SRV 0 100 80 endpoint-svc-0.svc-headless.testns.example.com.",
            ],
            none,
            &["endpoint-svc-0.svc-headless.testns.example.com. 5 IN A 1.2.3.4"],
        ),
        (
            "endpoint-svc-1.svc-headless.testns.example.com",
            "A",
            "NOERROR",
            &["endpoint-svc-1.svc-headless.testns.example.com. 5 IN A 1.2.3.5"],
            none,
            none,
        ),
        // apex_test.go
        ("example.com", "SOA", "NOERROR", &[soa], none, none),
        (
            "example.com",
            "NS",
            "NOERROR",
            &["example.com. 5 IN NS ns1.dns.example.com."],
            none,
            &["ns1.dns.example.com. 5 IN A 127.0.0.1"],
        ),
        ("example.com", "SRV", "NOERROR", none, &[soa], none),
        ("dns.example.com", "SRV", "NOERROR", none, &[soa], none),
        ("dns.example.com", "NS", "NOERROR", none, &[soa], none),
        ("ns1.dns.example.com", "SRV", "NOERROR", none, &[soa], none),
        ("ns1.dns.example.com", "AAAA", "NOERROR", none, &[soa], none),
        (
            "ns1.dns.example.com",
            "A",
            "NOERROR",
            &["ns1.dns.example.com. 5 IN A 127.0.0.1"],
            none,
            none,
        ),
        ("ns2.dns.example.com", "A", "NXDOMAIN", none, &[soa], none),
    ];
    let owned = |v: &[&str]| {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    for proto in ["+notcp", "+tcp"] {
        for (name, qtype, rc, answer, authority, additional) in cases {
            let out = s.dig(&[proto, "+noedns", name, qtype]);
            assert_eq!(
                dig_status(&out).unwrap_or("none"),
                *rc,
                "{name} {qtype}: {out}"
            );
            assert!(flags(&out).contains(" aa"), "{name} {qtype}: {out}");
            let [a, n, x] = sections(&out);
            assert_eq!(a, owned(answer), "{name} {qtype} answer: {out}");
            assert_eq!(n, owned(authority), "{name} {qtype} authority: {out}");
            assert_eq!(x, owned(additional), "{name} {qtype} additional: {out}");
        }
    }
    // The cluster zone is untouched.
    assert_eq!(
        s.dig(&["+short", "svc1.testns.svc.cluster.local"]).trim(),
        "10.0.0.1"
    );
}

/// `fallthrough`: a name of the zone that does not exist goes on (to forwarding here); one that
/// does is answered.
#[test]
fn k8s_external_fallthrough_forwards_missing_names() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = upstream(&rt);
    let s = Server::with_objects(
        EXTERNAL_OBJECTS,
        &format!(
            "shape:\n  external:\n    zones: [example.com]\n    fallthrough: [example.com]\nforward:\n  upstreams: [\"{}\"]\n  timeout: 500ms\n",
            up.addr
        ),
    );
    assert_eq!(s.dig(&["+short", "www.example.com"]).trim(), "192.0.2.9");
    assert_eq!(
        s.dig(&["+short", "svc1.testns.example.com"]).trim(),
        "1.2.3.4"
    );
    assert_eq!(asked(&up), 1);
    // Without `headless`, a headless service without external IPs has nothing: NXDOMAIN,
    // and so it falls through too.
    s.dig(&["svc-headless.testns.example.com"]);
    assert_eq!(asked(&up), 2);
}

/// No port or protocol names under an ExternalName service, as CoreDNS answers
/// (`_http._tcp.<externalname svc>` NXDOMAIN; clusterdns used to answer an SRV record pointing
/// at the external name), while the service's own name is still its CNAME.
#[test]
fn no_port_names_under_an_externalname_service() {
    let s = sample_with("");
    for proto in ["+notcp", "+tcp"] {
        for (name, t) in [
            ("_http._tcp.search.demo.svc.cluster.local", "SRV"),
            ("_http._tcp.search.demo.svc.cluster.local", "A"),
            ("_tcp.search.demo.svc.cluster.local", "SRV"),
            ("x.search.demo.svc.cluster.local", "A"),
        ] {
            let out = s.dig(&[proto, name, t]);
            assert_eq!(
                dig_status(&out).unwrap_or("none"),
                "NXDOMAIN",
                "{name} {t}: {out}"
            );
            assert!(answers(&out).is_empty(), "{out}");
        }
        let out = s.dig(&[proto, "search.demo.svc.cluster.local", "CNAME"]);
        assert!(
            ws(&out).contains("search.demo.svc.cluster.local. 30 IN CNAME search.example.com."),
            "{out}"
        );
    }
}

/// CoreDNS's TestRewrite table (plugin/rewrite/rewrite_test.go) through the binary: each
/// question asked with dig, the question the upstream receives compared with the table's, and
/// the client given back its own question.
#[test]
fn rewrite_table_of_coredns_through_the_binary() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = upstream(&rt);
    let rules = r#"shape:
  rewrites:
  - {field: name, match: exact, from: from.nl., to: to.nl.}
  - {field: name, match: regex, from: '(core)\.(dns)\.(rocks)\.(nl)', to: '{2}.{1}.{3}.{4}', answer_name: [{from: '(dns)\.(core)\.(rocks)\.(nl)', to: '{2}.{1}.{3}.{4}'}]}
  - {field: name, match: exact, from: from.exact.nl., to: to.nl.}
  - {field: name, match: prefix, from: prefix, to: to}
  - {field: name, match: suffix, from: .suffix., to: .nl.}
  - {field: name, match: substring, from: from.substring, to: to}
  - {field: name, match: regex, from: '(f.*m)\.regex\.(nl)', to: 'to.{2}'}
  - {field: name, match: regex, from: 'consul\.(rocks)', to: 'core.dns.{1}', continue: true}
  - {field: name, match: exact, from: core.dns.rocks, to: to.nl.}
  - {field: class, from: HS, to: CH, continue: true}
  - {field: class, from: CH, to: IN}
  - {field: type, from: ANY, to: HINFO}
"#;
    let s = Server::with_objects(
        &std::fs::read_to_string(repo().join("config/cluster.yaml")).unwrap(),
        &format!(
            "{rules}cache:\n  enabled: false\nforward:\n  upstreams: [\"{}\"]\n  timeout: 500ms\n",
            up.addr
        ),
    );
    use hickory_proto::rr::{DNSClass, RecordType};
    let last_seen = || {
        let seen = up.seen.lock().unwrap();
        let q = &seen.last().expect("a query upstream").1.queries[0];
        (q.name().to_ascii(), q.query_type(), q.query_class())
    };
    let (a, any, hinfo) = (RecordType::A, RecordType::ANY, RecordType::HINFO);
    let (inet, ch, hs) = (DNSClass::IN, DNSClass::CH, DNSClass::HS);
    for (from, ft, fc, to, tt, tc) in [
        ("from.nl.", a, inet, "to.nl.", a, inet),
        ("a.nl.", a, inet, "a.nl.", a, inet),
        ("a.nl.", a, ch, "a.nl.", a, inet),
        ("a.nl.", any, inet, "a.nl.", hinfo, inet),
        ("from.nl.", any, inet, "to.nl.", any, inet),
        ("from.exact.nl.", a, inet, "to.nl.", a, inet),
        ("prefix.nl.", a, inet, "to.nl.", a, inet),
        ("to.suffix.", a, inet, "to.nl.", a, inet),
        ("from.substring.nl.", a, inet, "to.nl.", a, inet),
        ("from.regex.nl.", a, inet, "to.nl.", a, inet),
        ("consul.rocks.", a, inet, "to.nl.", a, inet),
        ("a.nl.", any, ch, "a.nl.", any, inet),
        ("a.nl.", any, hs, "a.nl.", any, inet),
        ("core.dns.rocks.nl.", a, inet, "dns.core.rocks.nl.", a, inet),
    ] {
        let before = up.seen.lock().unwrap().len();
        let (t, c) = (ft.to_string(), fc.to_string());
        let out = s.dig(&["+noedns", "-c", &c, "-t", &t, "-q", from]);
        let names: Vec<String> = up.seen.lock().unwrap()[before..]
            .iter()
            .map(|(_, m)| m.queries[0].to_string())
            .collect();
        assert_eq!(names.len(), 1, "{from}: {names:?}");
        assert_eq!(last_seen(), (to.to_string(), tt, tc), "{from} {t} {c}");
        // The client sees its own question.
        assert!(
            ws(&out).contains(&format!(";{from} {c} {t}")),
            "{from} {t} {c}: {out}"
        );
    }
}
