//! The CoreDNS mixin's alerts against the real binary: a real Prometheus scrapes clusterdns as
//! `job="kube-dns"` while clients query the cluster zone and names forwarded to a loopback
//! upstream that answers SERVFAIL; the alert expressions evaluate as they would in a cluster.

use crate::support::upstream::{Action, Fake, servfail};
use crate::support::*;

#[test]
fn mixin_alerts_fire_on_real_traffic() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fake = rt.block_on(Fake::start(|q, _| Action::Reply(servfail(q))));
    let extra = format!(
        "forward:\n  upstreams: [\"{}\"]\n  timeout: 300ms\ncache:\n  enabled: false\n",
        fake.addr
    );
    let s = Server::sample(&extra);
    let prom = Prometheus::start(&[s.listen("metrics").unwrap()]);
    let one = |expr: &str| -> Vec<f64> { prom.query(expr).into_iter().map(|(_, v)| v).collect() };
    let errors_high = r#"sum without (pod, instance, server, zone, view, rcode, plugin) (rate(coredns_dns_responses_total{job="kube-dns",rcode="SERVFAIL"}[5m])) / sum without (pod, instance, server, zone, view, rcode, plugin) (rate(coredns_dns_responses_total{job="kube-dns"}[5m]))"#;
    // Identical batches between scrapes: every ratio below is exact. Go on until Prometheus
    // holds at least a few scrapes with traffic in them (its first scrape has a random offset).
    let mut ratio = vec![];
    for round in 0..20 {
        for i in 0..10 {
            s.ask_raw(&query("kubernetes.default.svc.cluster.local", 1, i, None));
            s.ask_raw(&query(&format!("n{i}.broken.test"), 1, 100 + i, None));
        }
        prom.next_scrape();
        if round >= 4 && prom.scrapes() >= 5.0 {
            ratio = one(errors_high);
            if ratio.first().is_some_and(|v| !v.is_nan()) {
                break;
            }
        }
    }
    // CoreDNSErrorsHigh: half the answers are SERVFAIL
    assert_eq!(ratio.len(), 1, "{}", prom.log());

    assert!((ratio[0] - 0.5).abs() < 0.01, "SERVFAIL share {ratio:?}");
    assert!(ratio[0] > 0.03, "CoreDNSErrorsHigh (critical) fires");
    // CoreDNSForwardErrorsHigh, on the pre-1.11 names clusterdns keeps exporting
    let fwd = one(
        r#"sum without (pod, instance, rcode) (rate(coredns_forward_responses_total{job="kube-dns",rcode="SERVFAIL"}[5m])) / sum without (pod, instance, rcode) (rate(coredns_forward_responses_total{job="kube-dns"}[5m]))"#,
    );
    assert_eq!(fwd.len(), 1, "one upstream");
    assert!(fwd[0] > 0.03, "CoreDNSForwardErrorsHigh fires: {fwd:?}");
    // CoreDNSLatencyHigh does not fire: p99 well under 4 s
    let p99 = one(
        r#"histogram_quantile(0.99, sum(rate(coredns_dns_request_duration_seconds_bucket{job="kube-dns"}[5m])) without (instance,pod))"#,
    );
    assert_eq!(p99.len(), 1);
    assert!(p99[0] < 4.0, "{p99:?}");
    // CoreDNSForwardLatencyHigh evaluates on the legacy name, and does not fire
    let fp99 = one(
        r#"histogram_quantile(0.99, sum(rate(coredns_forward_request_duration_seconds_bucket{job="kube-dns"}[5m])) without (pod, instance, rcode))"#,
    );
    assert!(
        !fp99.is_empty() && fp99.iter().all(|v| *v < 4.0),
        "{fp99:?}"
    );
    // CoreDNSDown does not fire
    assert!(one(r#"absent(up{job="kube-dns"} == 1)"#).is_empty());
    drop(fake);
}
