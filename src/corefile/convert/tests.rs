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
    let e = conv(".:53 {\n errors\n rewrite name foo.example bar.example\n forward . 8.8.8.8\n}\n")
        .unwrap_err();
    assert_eq!(e.directive(), Some("rewrite"));
    assert_eq!(e.block(), Some(".:53"));
    assert_eq!(e.pos().unwrap().line, 3);
    let msg = e.to_string();
    assert!(
        msg.starts_with("Corefile:3: `rewrite` in server block `.:53` cannot be carried over: "),
        "{msg}"
    );
}

#[test]
fn unknown_directive_and_option() {
    let e = conv(".:53 {\n frobnicate\n}\n").unwrap_err();
    assert_eq!(e.directive(), Some("frobnicate"));
    let e = conv(".:53 {\n forward . 8.8.8.8 {\n  except corp.example\n }\n}\n").unwrap_err();
    assert_eq!(
        (e.directive(), e.option()),
        (Some("forward"), Some("except"))
    );
    assert_eq!(e.pos().unwrap().line, 3);
}

#[test]
fn two_cluster_domains_rejected() {
    let e = conv(".:53 {\n kubernetes cluster.local cluster.example\n}\n").unwrap_err();
    assert!(e.to_string().contains("one cluster domain"), "{e}");
}

#[test]
fn stub_block_and_lifted_force_tcp() {
    let c = conv(
        ".:53 {\n kubernetes cluster.local\n forward . 10.0.0.2\n cache 30\n}\ncorp.example:53 {\n errors\n forward . 10.0.0.5 10.0.0.6:5353 {\n  force_tcp\n }\n}\n",
    )
    .unwrap();
    assert_eq!(
        c.config.forward.stub_domains["corp.example"],
        ["10.0.0.5", "10.0.0.6:5353"]
    );
    assert!(c.config.forward.force_tcp);
    assert!(
        c.notes
            .iter()
            .any(|n| n.contains("force_tcp") && n.contains("every forwarded name")),
        "{:?}",
        c.notes
    );
}

#[test]
fn conflicting_forward_options_rejected() {
    let e = conv(
        ".:53 {\n kubernetes cluster.local\n forward . 10.0.0.2 {\n  policy sequential\n }\n}\ncorp.example:53 {\n forward . 10.0.0.5 {\n  policy round_robin\n }\n}\n",
    )
    .unwrap_err();
    assert_eq!(
        (e.directive(), e.option()),
        (Some("forward"), Some("policy"))
    );
}

#[test]
fn different_ports_rejected() {
    let e = conv(".:53 {\n forward . 10.0.0.2\n}\ncorp.example:5353 {\n forward . 10.0.0.5\n}\n")
        .unwrap_err();
    assert!(e.to_string().contains("same port"), "{e}");
}

#[test]
fn stub_inside_cluster_zone_rejected() {
    let e = conv(".:53 {\n kubernetes cluster.local\n forward . 10.0.0.2\n}\nsvc.cluster.local:53 {\n forward . 10.0.0.5\n}\n").unwrap_err();
    assert!(e.to_string().contains("inside the cluster zone"), "{e}");
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
