//! The `kubernetes` plugin: the cluster zone (`cluster`) and the API connection
//! (`source.kubernetes`).

use super::{Converter, Ctx};
use crate::config::{ClusterConfig, Config, KubernetesSourceConfig, PodsMode};
use crate::corefile::zones::{BadZone, Zone, parse_zone};
use crate::corefile::{CorefileError, Pos};
use crate::selector::Selector;

/// CoreDNS's `kubernetes` default TTL, where clusterdns's is longer.
const COREDNS_TTL: u32 = 5;

/// What `kubernetes` says.
pub(super) struct Kube {
    pub(super) cluster: ClusterConfig,
    source: KubernetesSourceConfig,
    at: Pos,
}

impl Converter {
    pub(super) fn kubernetes(&mut self, ctx: &Ctx<'_>) -> Result<(), CorefileError> {
        let d = ctx.d;
        if let Some(prev) = &self.kube {
            return Err(ctx.unsupported(format!(
                "a second `kubernetes` (the first is at {}); clusterdns serves one cluster zone from one cluster",
                prev.at
            )));
        }
        let zones: Vec<String> = if d.args.is_empty() {
            ctx.keys.iter().map(|k| k.zone.clone()).collect()
        } else {
            d.args.clone()
        };
        let mut forward_zones = Vec::new();
        let mut reverse = Vec::new();
        for z in &zones {
            let z = match parse_zone(z) {
                Ok(Zone::Name(z)) => z,
                Ok(Zone::Root) => {
                    return Err(ctx.unsupported("it serves the root zone `.`; name the cluster domain, e.g. `kubernetes cluster.local in-addr.arpa ip6.arpa`".into()));
                }
                Err(BadZone::Network) => {
                    return Err(ctx.unsupported(format!("{z:?}: {}", BadZone::Network)));
                }
                Err(BadZone::Name(e)) => return Err(ctx.invalid(e)),
            };
            // Served with an SOA: the config's limit, named here rather than as a converter bug.
            crate::names::parse_served_zone(&z).map_err(|e| ctx.invalid(e))?;
            // RKE2's chart writes the cluster domain twice (`kubernetes  cluster.local
            // cluster.local in-addr.arpa ip6.arpa`): CoreDNS serves the zone once, so do we.
            let list = if is_reverse_zone(&z) {
                &mut reverse
            } else {
                &mut forward_zones
            };
            if list.contains(&z) {
                self.note(
                    &d.at,
                    ctx.block,
                    "kubernetes",
                    &format!("{z} is named twice; it is one zone"),
                );
            } else {
                list.push(z);
            }
        }
        let zone = match forward_zones.as_slice() {
            [z] => z.clone(),
            [] => return Err(ctx.unsupported("it names only reverse zones; clusterdns needs the cluster domain (e.g. cluster.local)".into())),
            many => {
                return Err(ctx.unsupported(format!(
                    "it serves several cluster domains ({}); clusterdns serves one cluster domain: keep one (the kubelet's --cluster-domain)",
                    many.join(", ")
                )));
            }
        };
        let all_zones: Vec<String> = std::iter::once(zone.clone())
            .chain(reverse.iter().cloned())
            .collect();
        // The plugin's defaults where they differ from clusterdns's: no fallthrough, a short
        // TTL, no pod records.
        let mut cluster = ClusterConfig {
            enabled: true,
            zone,
            reverse_zones: reverse,
            fallthrough: Vec::new(),
            ttl: COREDNS_TTL,
            pods: PodsMode::Disabled,
            ..ClusterConfig::default()
        };
        let mut source = KubernetesSourceConfig::default();
        for o in d.options() {
            match o.name.as_str() {
                "pods" => {
                    let v = ctx.one_arg(o)?;
                    cluster.pods = match v.as_str() {
                        "disabled" => PodsMode::Disabled,
                        "insecure" => PodsMode::Insecure,
                        "verified" => {
                            self.note(&o.at, ctx.block, "kubernetes pods verified", "clusterdns watches Pods for this: its ClusterRole needs list and watch on pods (see manifests/)");
                            PodsMode::Verified
                        }
                        _ => {
                            return Err(ctx.invalid_opt(
                                o,
                                format!("{v:?} is not disabled, insecure or verified"),
                            ));
                        }
                    };
                }
                "endpoint_pod_names" => {
                    ctx.opt_no_args(o)?;
                    cluster.endpoint_pod_names = true;
                }
                "ttl" => {
                    let v = ctx.one_arg(o)?;
                    cluster.ttl = ctx.number(o, v, 0..=3600, "a TTL from 0 to 3600")?;
                }
                "namespaces" => {
                    if o.args.is_empty() {
                        return Err(ctx.invalid_opt(o, "needs at least one namespace".into()));
                    }
                    cluster.namespaces.extend(o.args.iter().cloned());
                }
                "labels" | "namespace_labels" => {
                    let sel = o.args.join(" ");
                    if sel.is_empty() {
                        return Err(ctx.invalid_opt(o, "needs a label selector".into()));
                    }
                    Selector::parse(&sel).map_err(|e| ctx.invalid_opt(o, e))?;
                    if o.name == "labels" {
                        cluster.labels = Some(sel);
                    } else {
                        cluster.namespace_labels = Some(sel);
                    }
                }
                "noendpoints" => {
                    ctx.opt_no_args(o)?;
                    cluster.noendpoints = true;
                }
                "ignore" => {
                    if o.args != ["empty_service"] {
                        return Err(ctx.invalid_opt(o, "only `ignore empty_service` exists".into()));
                    }
                    cluster.ignore_empty_service = true;
                }
                "fallthrough" => {
                    if o.args.is_empty() {
                        cluster.fallthrough = all_zones.clone();
                    }
                    for z in &o.args {
                        match parse_zone(z) {
                            Ok(Zone::Root) => cluster.fallthrough = all_zones.clone(),
                            Ok(Zone::Name(z)) => cluster.fallthrough.push(z),
                            Err(e) => return Err(ctx.invalid_opt(o, e.to_string())),
                        }
                    }
                }
                "kubeconfig" => {
                    match o.args.as_slice() {
                        [path] => source.kubeconfig = Some(path.into()),
                        [_, context] => {
                            return Err(ctx.unsupported_opt(o, format!(
                                "it selects context {context:?}; clusterdns uses the kubeconfig's current context: make {context:?} the current context of that file"
                            )));
                        }
                        _ => return Err(ctx.invalid_opt(o, "needs a kubeconfig path".into())),
                    }
                    self.note(&o.at, ctx.block, "kubernetes kubeconfig", "the path is CoreDNS's; mount the kubeconfig into the clusterdns pod at the same path");
                }
                "startup_timeout" => {
                    let v = ctx.one_arg(o)?;
                    source.startup_timeout = ctx.duration(o, v)?;
                }
                "resyncperiod" => {
                    self.note(&o.at, ctx.block, "kubernetes resyncperiod", "dropped: clusterdns keeps watches open and relists when they break; there is no periodic resync");
                }
                "endpoint" => {
                    return Err(ctx.unsupported_opt(o, "it connects to the API server at a URL without credentials; clusterdns connects in-cluster or through a kubeconfig: write a kubeconfig whose server is that URL and give it with `kubeconfig`".into()));
                }
                "tls" => {
                    return Err(ctx.unsupported_opt(o, "client certificates are given through a kubeconfig in clusterdns: write one with these files and use `kubeconfig`".into()));
                }
                "multicluster" => {
                    return Err(ctx.unsupported_opt(
                        o,
                        "multicluster DNS (MCS-API ServiceImports) is not served by clusterdns"
                            .into(),
                    ));
                }
                "transfer" => {
                    return Err(ctx.unsupported_opt(
                        o,
                        "the `transfer` option of CoreDNS before 1.7; write it as the `transfer` plugin (`transfer { to ADDRESS... }`), which converts".into(),
                    ));
                }
                "apiserver_qps" | "apiserver_burst" | "apiserver_max_inflight" => {
                    self.note(
                        &o.at,
                        ctx.block,
                        &format!("kubernetes {}", o.name),
                        "dropped: clusterdns opens one watch per kind and does not throttle itself",
                    );
                }
                _ => return Err(ctx.unknown_option(o)),
            }
        }
        self.kube = Some(Kube {
            cluster,
            source,
            at: d.at.clone(),
        });
        Ok(())
    }

    /// `cluster` and `source`: without `kubernetes` nothing is answered from the cluster (e.g. a
    /// node-local cache that forwards the cluster zone to kube-dns as a stub domain).
    pub(super) fn write_cluster(&mut self, cfg: &mut Config) {
        match &self.kube {
            Some(k) => {
                cfg.cluster = k.cluster.clone();
                cfg.source.kubernetes = Some(k.source.clone());
            }
            None => {
                cfg.cluster.enabled = false;
                self.notes.push(
                    "no `kubernetes` plugin: cluster.enabled: false, so clusterdns watches no API and answers only from its hosts file, cache and upstreams (stub domains included)".into(),
                );
            }
        }
        cfg.cluster.loadbalance = self.loadbalance_on();
    }
}

fn is_reverse_zone(z: &str) -> bool {
    crate::names::in_zone(z, "in-addr.arpa") || crate::names::in_zone(z, "ip6.arpa")
}
