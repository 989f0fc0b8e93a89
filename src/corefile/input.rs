//! What `convert-corefile` reads besides a bare Corefile: a ConfigMap as `kubectl get cm -o
//! yaml` prints it (CoreDNS's `coredns` ConfigMap with its `Corefile` and files such as k3s's
//! `NodeHosts`, a `coredns-custom` ConfigMap, or kube-dns's `stubDomains` /
//! `upstreamNameservers` ConfigMap), and NodeLocal DNSCache's `__PILLAR__...__` placeholders.

use std::collections::BTreeMap;

use super::{CorefileError, Pos};

/// A ConfigMap document: only its kind and data matter here.
#[derive(serde::Deserialize)]
struct ConfigMapDoc {
    kind: String,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// The data of `text` if it is a ConfigMap in YAML (or JSON), else None (a Corefile).
pub(super) fn configmap_data(text: &str) -> Option<BTreeMap<String, String>> {
    let doc: ConfigMapDoc = serde_saphyr::from_str(text).ok()?;
    (doc.kind == "ConfigMap").then_some(doc.data)
}

/// The values node-cache fills in itself at run time when none is given: the upstream servers
/// are the node's `/etc/resolv.conf` (node-cache's own `-upstreamsvc` fills
/// `CLUSTER__DNS`, which only the operator knows here).
const PILLAR_DEFAULTS: &[(&str, &str)] = &[("UPSTREAM__SERVERS", "/etc/resolv.conf")];

/// Replace `__PILLAR__NAME__` placeholders with `values` (keyed `NAME`, with or without the
/// surrounding `__PILLAR__`/`__`); a placeholder left without a value is an error at its line.
pub(super) fn fill_pillars(
    text: &str,
    values: &BTreeMap<String, String>,
    file: &str,
    notes: &mut Vec<String>,
) -> Result<String, CorefileError> {
    let key = |k: &str| {
        k.trim_start_matches("__PILLAR__")
            .trim_end_matches("__")
            .to_string()
    };
    let mut values: BTreeMap<String, String> =
        values.iter().map(|(k, v)| (key(k), v.clone())).collect();
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        // Placeholders in comments stay as they are (a filled-in Corefile may name them).
        let (code, comment) = line.split_at(line.find('#').unwrap_or(line.len()));
        let mut line = code.to_string();
        while let Some(start) = line.find("__PILLAR__") {
            let rest = &line[start + "__PILLAR__".len()..];
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let placeholder = line[start..start + "__PILLAR__".len() + len].to_string();
            let name = key(&placeholder);
            if !values.contains_key(&name)
                && let Some((_, v)) = PILLAR_DEFAULTS.iter().find(|(n, _)| *n == name)
            {
                notes.push(format!(
                    "{file}:{}: {placeholder} is {v}, as node-cache fills it in",
                    i + 1
                ));
                values.insert(name.clone(), v.to_string());
            }
            let Some(value) = values.get(&name) else {
                let hint = match name.as_str() {
                    "CLUSTER__DNS" => {
                        " (node-cache fills it with the kube-dns-upstream Service's ClusterIP)"
                    }
                    "LOCAL__DNS" => " (the node-local address, e.g. 169.254.20.10)",
                    "DNS__SERVER" => " (the kube-dns Service's ClusterIP)",
                    "DNS__DOMAIN" => " (the cluster domain, e.g. cluster.local)",
                    _ => "",
                };
                return Err(CorefileError::Syntax {
                    at: Pos {
                        file: file.to_string(),
                        line: i + 1,
                    },
                    message: format!(
                        "{placeholder} is a NodeLocal DNSCache placeholder without a value: pass --pillar {name}=VALUE{hint}"
                    ),
                });
            };
            line.replace_range(start..start + placeholder.len(), value);
        }
        out.push_str(&line);
        out.push_str(comment);
    }
    Ok(out)
}

/// kube-dns's ConfigMap as the Corefile that CoreDNS's own migration makes of it (the one
/// kubeadm wrote when it moved clusters from kube-dns, and the Kubernetes documentation's
/// "CoreDNS configuration equivalent to kube-dns"): the cluster zone, each stub domain its own
/// block forwarding to its servers, everything else to `upstreamNameservers` or the node's
/// resolv.conf. `domain` is kube-dns's `--domain`.
pub(super) fn kube_dns_corefile(
    data: &BTreeMap<String, String>,
    domain: &str,
    file: &str,
) -> Result<String, CorefileError> {
    let at = |key: &str| Pos {
        file: format!("{file} (data.{key})"),
        line: 1,
    };
    let bad = |key: &str, message: String| CorefileError::Syntax {
        at: at(key),
        message,
    };
    for key in data.keys() {
        if !["stubDomains", "upstreamNameservers"].contains(&key.as_str()) {
            return Err(bad(
                key,
                format!(
                    "kube-dns ConfigMap key `{key}` cannot be carried over: clusterdns converts `stubDomains` and `upstreamNameservers` (`federations` was removed from kube-dns in Kubernetes 1.13)"
                ),
            ));
        }
    }
    let stub: BTreeMap<String, Vec<String>> = match data.get("stubDomains") {
        Some(t) if !t.trim().is_empty() => serde_json::from_str(t).map_err(|e| {
            bad(
                "stubDomains",
                format!("not a JSON object of domain to server list: {e}"),
            )
        })?,
        _ => BTreeMap::new(),
    };
    let upstreams: Vec<String> = match data.get("upstreamNameservers") {
        Some(t) if !t.trim().is_empty() => serde_json::from_str(t).map_err(|e| {
            bad(
                "upstreamNameservers",
                format!("not a JSON list of servers: {e}"),
            )
        })?,
        _ => Vec::new(),
    };
    if upstreams.len() > 3 {
        return Err(bad(
            "upstreamNameservers",
            format!(
                "{} servers: kube-dns takes at most 3, and so does this conversion",
                upstreams.len()
            ),
        ));
    }
    let upstream = if upstreams.is_empty() {
        "/etc/resolv.conf".to_string()
    } else {
        upstreams.join(" ")
    };
    let mut text = format!(
        ".:53 {{
    errors
    health {{
        lameduck 5s
    }}
    ready
    kubernetes {domain} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    prometheus :9153
    forward . {upstream} {{
        max_concurrent 1000
    }}
    cache 30
    loop
    reload
    loadbalance
}}
"
    );
    for (zone, servers) in &stub {
        if servers.is_empty() {
            return Err(bad(
                "stubDomains",
                format!("stub domain {zone} has no servers"),
            ));
        }
        text.push_str(&format!(
            "{zone}:53 {{\n    errors\n    cache 30\n    loop\n    forward . {}\n}}\n",
            servers.join(" ")
        ));
    }
    Ok(text)
}
