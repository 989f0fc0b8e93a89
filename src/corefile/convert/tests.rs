//! The converter on small Corefiles: what each plugin becomes, and what is refused where.

use std::path::Path;
use std::time::Duration;

use crate::config::{
    CacheConfig, ClusterConfig, ForwardConfig, ForwardPolicy, HostsConfig, KubernetesSourceConfig,
    PodsMode,
};
use crate::corefile::{Conversion, CorefileError, convert_with, test_options};

fn conv(text: &str) -> Result<Conversion, CorefileError> {
    convert_with(text, &test_options())
}

/// The converter leaves these to the config's defaults because CoreDNS's are the same (its
/// plugin documentation's values): if a clusterdns default changes, the converter must set
/// CoreDNS's value itself.
#[test]
fn defaults_the_converter_relies_on_are_coredns_defaults() {
    let forward = ForwardConfig::default();
    assert_eq!(forward.policy, ForwardPolicy::Random);
    assert_eq!(forward.max_fails, 2);
    assert_eq!(forward.health_check, Duration::from_millis(500));
    let cache = CacheConfig::default();
    assert_eq!((cache.max_ttl, cache.min_ttl), (3600, 5));
    assert_eq!((cache.max_negative_ttl, cache.min_negative_ttl), (1800, 5));
    let hosts = HostsConfig::default();
    assert_eq!((hosts.ttl, hosts.reload), (3600, Duration::from_secs(5)));
    assert_eq!(
        KubernetesSourceConfig::default().startup_timeout,
        Duration::from_secs(5)
    );
    let cluster = ClusterConfig::default();
    assert!(!cluster.endpoint_pod_names && !cluster.noendpoints && !cluster.ignore_empty_service);
    assert!(cluster.namespaces.is_empty());
    assert_eq!((cluster.labels, cluster.namespace_labels), (None, None));
}

#[test]
fn minimal_corefile_converts_and_validates() {
    let c = conv(
        ".:53 {\n kubernetes cluster.local in-addr.arpa ip6.arpa\n forward . /etc/resolv.conf\n}\n",
    )
    .unwrap();
    assert_eq!(c.config.cluster.zone, "cluster.local");
    assert_eq!(c.config.cluster.reverse_zones, ["in-addr.arpa", "ip6.arpa"]);
    assert!(c.config.cluster.fallthrough.is_empty());
    assert_eq!(c.config.cluster.pods, PodsMode::Disabled);
    assert_eq!(c.config.cluster.ttl, 5);
    assert!(!c.config.cache.enabled);
    assert!(!c.config.cluster.loadbalance);
    assert_eq!(c.config.metrics.listen, None);
    assert!(c.config.source.kubernetes.is_some());
}

#[test]
fn unsupported_directive_names_block_line_and_reason() {
    let e = conv(".:53 {\n errors\n dns64\n forward . 8.8.8.8\n}\n").unwrap_err();
    assert_eq!(e.directive(), Some("dns64"));
    assert_eq!(e.block(), Some(".:53"));
    assert_eq!(e.pos().unwrap().line, 3);
    let msg = e.to_string();
    assert!(
        msg.starts_with("Corefile:3: `dns64` in server block `.:53` cannot be carried over: "),
        "{msg}"
    );
}

#[test]
fn unknown_directive_and_option() {
    let e = conv(".:53 {\n frobnicate\n}\n").unwrap_err();
    assert_eq!(e.directive(), Some("frobnicate"));
    let e = conv(".:53 {\n forward . 8.8.8.8 {\n  next NXDOMAIN\n }\n}\n").unwrap_err();
    assert_eq!((e.directive(), e.option()), (Some("forward"), Some("next")));
    assert_eq!(e.pos().unwrap().line, 3);
}

#[test]
fn two_cluster_domains_rejected() {
    let e = conv(".:53 {\n kubernetes cluster.local cluster.example\n}\n").unwrap_err();
    assert!(e.to_string().contains("one cluster domain"), "{e}");
}

#[test]
fn stub_blocks_keep_their_own_forward_options() {
    let c = conv(
        ".:53 {\n kubernetes cluster.local\n forward . 10.0.0.2 {\n  policy sequential\n  except blocked.example\n  expire 30s\n  read_timeout 1500ms\n }\n cache 30\n}\ncorp.example:53 {\n errors\n forward . 10.0.0.5 10.0.0.6:5353 {\n  force_tcp\n  policy round_robin\n  max_concurrent 50\n  except secret.corp.example\n }\n}\nplain.example:53 {\n forward . 10.0.0.7\n}\ndot.example:53 {\n forward . tls://10.0.0.8 tls://10.0.0.9:8853 {\n  tls_servername dns.dot.example\n  tls ca.pem\n }\n}\n",
    )
    .unwrap();
    let f = &c.config.forward;
    // The main block's options are the section's.
    assert_eq!(f.policy, ForwardPolicy::Sequential);
    assert_eq!(f.except, ["blocked.example"]);
    assert_eq!(f.expire, Duration::from_secs(30));
    assert_eq!(f.timeout, Duration::from_millis(1500), "read_timeout");
    assert!(!f.force_tcp, "a zone block's force_tcp stays its own");
    // A zone block with options: a domain with exactly those.
    let corp = &f.domains["corp.example"];
    assert_eq!(corp.upstreams, ["10.0.0.5", "10.0.0.6:5353"]);
    assert_eq!(corp.force_tcp, Some(true));
    assert_eq!(corp.policy, Some(ForwardPolicy::RoundRobin));
    assert_eq!(corp.max_concurrent, Some(50));
    assert_eq!(
        corp.except.as_deref(),
        Some(&["secret.corp.example".to_string()][..])
    );
    assert_eq!(corp.health_check, None, "unset: the section's");
    // Without options: a plain stub domain.
    assert_eq!(f.stub_domains["plain.example"], ["10.0.0.7"]);
    // DNS over TLS.
    let dot = &f.domains["dot.example"];
    assert_eq!(dot.upstreams, ["tls://10.0.0.8", "tls://10.0.0.9:8853"]);
    assert_eq!(dot.tls_servername.as_deref(), Some("dns.dot.example"));
    assert_eq!(dot.tls_ca.as_deref(), Some(Path::new("ca.pem")));
    c.config.validate().unwrap();
    // A client certificate is not offered.
    let e =
        conv(".:53 {\n forward . tls://10.0.0.8 {\n  tls cert.pem key.pem\n }\n}\n").unwrap_err();
    assert_eq!((e.directive(), e.option()), (Some("forward"), Some("tls")));
}

#[test]
fn different_ports_rejected() {
    let e = conv(".:53 {\n forward . 10.0.0.2\n}\ncorp.example:5353 {\n forward . 10.0.0.5\n}\n")
        .unwrap_err();
    assert!(e.to_string().contains("same port"), "{e}");
}

#[test]
fn stub_inside_cluster_zone_is_forwarded() {
    let c = conv(".:53 {\n kubernetes cluster.local\n forward . 10.0.0.2\n}\nmy.cluster.local:53 {\n forward . 10.0.0.5\n}\n").unwrap();
    assert_eq!(
        c.config.forward.stub_domains["my.cluster.local"],
        ["10.0.0.5"]
    );
    assert!(
        c.notes
            .iter()
            .any(|n| n.contains("inside the cluster zone")),
        "{:#?}",
        c.notes
    );
}

#[test]
fn inline_hosts_become_a_file() {
    let c = conv(".:53 {\n kubernetes cluster.local\n hosts {\n  10.0.0.1 example1.org\n  10.0.0.2 example2.org www.example2.org\n  fallthrough\n }\n forward . /etc/resolv.conf\n}\n").unwrap();
    let h = c.config.hosts.as_ref().unwrap();
    assert_eq!(h.file.as_deref(), Some(Path::new("/etc/clusterdns/hosts")));
    assert!(h.fallthrough);
    assert!(c.files["hosts"].contains("10.0.0.2 example2.org www.example2.org\n"));
}

#[test]
fn bind_lines_add_up_and_must_agree_across_blocks() {
    let c =
        conv(".:53 {\n bind 10.0.0.1\n bind 127.0.0.1 10.0.0.1\n forward . 8.8.8.8\n}\n").unwrap();
    assert_eq!(
        c.config.listen,
        vec![
            "10.0.0.1:53".parse().unwrap(),
            "127.0.0.1:53".parse().unwrap()
        ]
    );
    let e = conv(".:53 {\n bind 10.0.0.1\n forward . 8.8.8.8\n}\ncorp.example:53 {\n bind 10.0.0.2\n forward . 10.0.0.5\n}\n").unwrap_err();
    assert_eq!(e.directive(), Some("bind"));
    assert_eq!(e.block(), Some("corp.example:53"));
    let e = conv(".:53 {\n bind eth0\n}\n").unwrap_err();
    assert!(e.to_string().contains("not interface names"), "{e}");
    let e = conv(".:53 {\n cache 30\n cache 60\n}\n").unwrap_err();
    assert!(e.to_string().contains("appears twice"), "{e}");
}

#[test]
fn no_root_block_turns_forwarding_off() {
    let c = conv("cluster.local:53 {\n kubernetes\n}\n").unwrap();
    assert!(!c.config.forward.enabled);
    assert_eq!(c.config.cluster.zone, "cluster.local");
}

/// A cluster zone is served with an SOA, so `hostmaster.<zone>` must fit 255 bytes: a longer
/// `kubernetes` zone is an error about the directive (found by fuzzing: it used to end in a
/// converted config that did not load). A long zone that fits converts.
#[test]
fn kubernetes_zone_too_long_for_its_soa_is_invalid() {
    let label = "a".repeat(60);
    let at_max = format!("{label}.{label}.{label}.{}", "b".repeat(59));
    let corefile = |zone: &str| format!(".:53 {{\n    kubernetes {zone}\n}}\n");
    let c = conv(&corefile(&at_max)).unwrap();
    assert_eq!(c.config.cluster.zone, at_max);
    match conv(&corefile(&format!("x{at_max}"))) {
        Err(CorefileError::Invalid {
            directive, message, ..
        }) => {
            assert_eq!(directive, "kubernetes");
            assert!(message.contains("hostmaster"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn transfer_to_becomes_allow_and_notify() {
    let c = conv(".:53 {\n kubernetes cluster.local 10.in-addr.arpa in-addr.arpa\n transfer {\n  to 192.0.2.7 [2001:db8::5]:5300\n }\n forward . 10.0.0.2\n}\n").unwrap();
    let t = &c.config.transfer;
    assert_eq!(t.allow, ["192.0.2.7", "2001:db8::5"]);
    assert_eq!(t.notify, ["192.0.2.7:53", "[2001:db8::5]:5300"]);
    // `.` holds the cluster zone; the block's reverse zones are not its keys.
    assert!(t.zones.is_empty(), "{:?}", t.zones);
    assert_eq!(c.config.transfer_zones(), ["cluster.local"]);

    // Named zones: a narrow reverse zone is offered, the wide one is not (with a note).
    let c = conv(".:53 {\n kubernetes cluster.local 10.in-addr.arpa in-addr.arpa\n transfer cluster.local 10.in-addr.arpa in-addr.arpa {\n  to 192.0.2.7\n }\n forward . 10.0.0.2\n}\n").unwrap();
    assert_eq!(
        c.config.transfer.zones,
        ["cluster.local", "10.in-addr.arpa"]
    );
    assert!(
        c.notes
            .iter()
            .any(|n| n.contains("in-addr.arpa: not offered")),
        "{:?}",
        c.notes
    );

    // `to *`: everyone may transfer, nobody is notified, and the notes say so.
    let c = conv(".:53 {\n kubernetes cluster.local\n transfer {\n  to *\n }\n}\n").unwrap();
    assert_eq!(c.config.transfer.allow, ["0.0.0.0/0", "::/0"]);
    assert!(c.config.transfer.notify.is_empty());
    assert!(c.notes.iter().any(|n| n.contains("transfer to *")));

    // A zone clusterdns does not serve: nothing offered, transfers stay off.
    let c =
        conv(".:53 {\n kubernetes cluster.local\n transfer example.org {\n  to 192.0.2.7\n }\n}\n")
            .unwrap();
    assert!(c.config.transfer.allow.is_empty() && c.config.transfer.notify.is_empty());

    for (text, why) in [
        (
            ".:53 {\n kubernetes cluster.local\n transfer\n}\n",
            "`to` is required",
        ),
        (
            ".:53 {\n kubernetes cluster.local\n transfer {\n  to\n }\n}\n",
            "at least one",
        ),
        (
            ".:53 {\n kubernetes cluster.local\n transfer {\n  to ns1.example\n }\n}\n",
            "not an address",
        ),
        (
            ".:53 {\n kubernetes cluster.local\n transfer {\n  from 192.0.2.7\n }\n}\n",
            "no option `from`",
        ),
    ] {
        let e = conv(text).unwrap_err();
        assert!(e.to_string().contains(why), "{text}: {e}");
    }
}

const KUBE: &str = " kubernetes cluster.local in-addr.arpa ip6.arpa\n forward . 10.0.0.2\n";

fn conv_main(body: &str) -> Result<Conversion, CorefileError> {
    conv(&format!(".:53 {{\n{KUBE}{body}}}\n"))
}

#[test]
fn template_blocks_convert_in_order_with_their_options() {
    let c = conv_main(
        " template IN A example {\n  match ^ip-(?P<a>[0-9]+)[.]example[.]$ \"^x[.]example[.]$\"\n  answer \"{{ .Name }} 60 IN A 10.0.0.{{ .Group.a }}\"\n  additional \"ns.example. 60 IN A 10.0.0.1\"\n  authority \"example. 60 IN NS ns.example.\"\n  fallthrough example\n }\n template ANY ANY {\n  rcode REFUSED\n }\n",
    )
    .unwrap();
    let t = &c.config.shape.templates;
    assert_eq!(t.len(), 2);
    assert_eq!((t[0].class.as_str(), t[0].qtype.as_str()), ("IN", "A"));
    assert_eq!(t[0].zones, ["example"]);
    assert_eq!(t[0].matches.len(), 2);
    assert_eq!(
        (
            t[0].answer.len(),
            t[0].additional.len(),
            t[0].authority.len()
        ),
        (1, 1, 1)
    );
    assert_eq!(t[0].fallthrough, ["example"]);
    // Without zones: the server block's.
    assert_eq!(t[1].zones, ["."]);
    assert_eq!(t[1].rcode, "REFUSED");
}

/// A `.`-block template for every name leaves the names of another server block's zone to
/// that block (CoreDNS picks the block with the longest zone): `except` holds them, and a note
/// says so. A template whose zones hold no other block gets none.
#[test]
fn a_root_template_leaves_other_blocks_zones_alone() {
    let c = conv(&format!(
        ".:53 {{\n{KUBE} template ANY AAAA {{\n  rcode NOERROR\n }}\n template IN A example.org {{\n  rcode NXDOMAIN\n }}\n}}\nconsul.local:53 {{\n forward . 10.0.0.5\n}}\n"
    ))
    .unwrap();
    let t = &c.config.shape.templates;
    assert_eq!(t[0].zones, ["."]);
    assert_eq!(t[0].except, ["consul.local"]);
    assert!(t[1].except.is_empty(), "{:?}", t[1].except);
    assert!(
        c.notes
            .iter()
            .any(|n| n.contains("not applied to consul.local")),
        "{:#?}",
        c.notes
    );
}

#[test]
fn template_options_clusterdns_cannot_run_are_refused_with_the_reason() {
    let e = conv_main(" template IN A example {\n  answer \"{{ .Meta \\\"kubernetes/client-namespace\\\" }}.example. 60 IN A 10.0.0.1\"\n }\n")
        .unwrap_err();
    assert_eq!(e.directive(), Some("template"));
    assert!(e.to_string().contains("metadata"), "{e}");
    let e = conv_main(" template IN A example {\n  var ip group('x')\n }\n").unwrap_err();
    assert_eq!((e.directive(), e.option()), (Some("template"), Some("var")));
    let e = conv_main(" template IN A example {\n  ederror 21\n }\n").unwrap_err();
    assert_eq!(e.option(), Some("ederror"));
    let e = conv_main(" template IN A example {\n  match ([a\n }\n").unwrap_err();
    assert!(matches!(e, CorefileError::Invalid { .. }), "{e:?}");
    let e = conv_main(" template IN BOGUS example\n").unwrap_err();
    assert!(e.to_string().contains("record type"), "{e}");
    let e = conv_main(" template IN\n").unwrap_err();
    assert!(matches!(e, CorefileError::Invalid { .. }), "{e:?}");
}

#[test]
fn rewrite_rules_convert_inline_and_as_blocks() {
    use crate::config::{NameMatch, RewriteField};
    let c = conv_main(
        " rewrite continue name suffix .corp.example .svc.cluster.local answer auto\n rewrite stop {\n  name regex (.*)-(us-west-1)\\.example\\.org {1}.service.{2}.consul\n  answer name (.*)\\.service\\.(us-west-1)\\.consul {1}-{2}.example.org\n  answer value (.*)\\.consul {1}.example.org\n }\n rewrite type ANY HINFO\n rewrite class CH IN\n rewrite name a.example b.example\n",
    )
    .unwrap();
    let r = &c.config.shape.rewrites;
    assert_eq!(r.len(), 5);
    assert!(r[0].continue_ && r[0].answer_auto);
    assert_eq!(r[0].match_, NameMatch::Suffix);
    assert_eq!(r[1].match_, NameMatch::Regex);
    assert_eq!(r[1].answer_name.len(), 1);
    assert_eq!(r[1].answer_value[0].to, "{1}.example.org");
    assert_eq!(
        (r[2].field, r[2].from.as_str(), r[2].to.as_str()),
        (RewriteField::Type, "ANY", "HINFO")
    );
    assert_eq!(r[3].field, RewriteField::Class);
    assert_eq!(
        (r[4].match_, r[4].from.as_str()),
        (NameMatch::Exact, "a.example")
    );
}

#[test]
fn rewrite_forms_clusterdns_cannot_run_are_refused() {
    let e = conv_main(" rewrite edns0 local set 0xffee abcd\n").unwrap_err();
    assert!(matches!(e, CorefileError::Unsupported { .. }), "{e:?}");
    let e = conv_main(" rewrite ttl example.com. 10\n").unwrap_err();
    assert!(e.to_string().contains("TTL"), "{e}");
    let e = conv_main(" rewrite name regex ([a]\\.com new-{1}.com\n").unwrap_err();
    assert!(matches!(e, CorefileError::Invalid { .. }), "{e:?}");
    let e = conv_main(" rewrite name a.com\n").unwrap_err();
    assert!(matches!(e, CorefileError::Invalid { .. }), "{e:?}");
    let e = conv_main(" rewrite name suffix a b answer auto answer name x y\n").unwrap_err();
    assert!(e.to_string().contains("auto"), "{e}");
}

#[test]
fn autopath_and_k8s_external_convert() {
    let c = conv_main(" autopath @kubernetes\n").unwrap();
    assert!(c.config.shape.autopath.enabled);
    let e = conv_main(" autopath /etc/resolv.conf\n").unwrap_err();
    assert!(matches!(e, CorefileError::Unsupported { .. }), "{e:?}");
    let c = conv_main(" k8s_external example.org example.net {\n  apex ns\n  ttl 10\n  headless\n  fallthrough\n }\n").unwrap();
    let x = c.config.shape.external.unwrap();
    assert_eq!(x.zones, ["example.org", "example.net"]);
    assert_eq!((x.apex.as_str(), x.ttl, x.headless), ("ns", 10, true));
    assert_eq!(x.fallthrough, ["."]);
}

#[test]
fn cache_options_map_one_to_one() {
    let c = conv(".:53 {\n forward . 10.0.0.2\n cache 300 {\n  success 5000 600 10\n  denial 2000\n  serve_stale 2h immediate 30s\n  servfail 10s\n  keepttl\n }\n}\n").unwrap();
    let k = &c.config.cache;
    assert_eq!(
        (k.success_capacity, k.denial_capacity),
        (Some(5000), Some(2000))
    );
    assert_eq!((k.max_ttl, k.min_ttl), (600, 10));
    assert_eq!(k.serve_stale, Duration::from_secs(7200));
    assert_eq!(
        k.serve_stale_refresh,
        crate::config::StaleRefresh::Immediate
    );
    assert_eq!(k.serve_stale_ttl, 30);
    assert_eq!(k.servfail_ttl, Duration::from_secs(10));
    assert!(k.keepttl);
    // `verify`, and CoreDNS's default mode (`immediate`) when none is given.
    let c = conv(".:53 {\n forward . 10.0.0.2\n cache {\n  serve_stale 1h verify 0 5s\n }\n}\n")
        .unwrap();
    assert_eq!(
        c.config.cache.serve_stale_refresh,
        crate::config::StaleRefresh::Verify
    );
    assert_eq!(c.config.cache.serve_stale_ttl, 5);
    let c = conv(".:53 {\n forward . 10.0.0.2\n cache {\n  serve_stale\n }\n}\n").unwrap();
    assert_eq!(
        c.config.cache.serve_stale_refresh,
        crate::config::StaleRefresh::Immediate
    );
    assert!(conv(".:53 {\n forward . 10.0.0.2\n cache {\n  servfail 6m\n }\n}\n").is_err());
}
