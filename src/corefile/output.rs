//! The converted config, written as YAML by the YAML library: only the keys whose values differ
//! from clusterdns's defaults, plus the few an operator looks for first, under a short header.
//! The notes go to the caller (the CLI prints them on stderr). The text is read back before it
//! is handed out: what the operator gets is exactly the converted config.

use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::convert::Converted;
use super::{Conversion, CorefileError};
use crate::config::{Config, HostsConfig, KubernetesSourceConfig, SourceConfig};

/// Keys written even where they hold the default: what is on, and where it listens.
const ALWAYS_WRITTEN: &[&str] = &[
    "listen",
    "cluster.enabled",
    "forward.enabled",
    "cache.enabled",
    "metrics.listen",
    "health.listen",
    "ready.listen",
];

/// Validate the converted config, write it, and check the text reads back as the same config.
pub(super) fn write(converted: Converted) -> Result<Conversion, CorefileError> {
    let Converted {
        config,
        notes,
        files,
    } = converted;
    let invalid = |e: String| CorefileError::Config(e);
    config.validate().map_err(|e| invalid(e.to_string()))?;
    let body = serde_saphyr::to_string(&minimal(&config)?).map_err(|e| invalid(e.to_string()))?;
    let mut yaml = String::from(
        "# clusterdns config converted from a CoreDNS Corefile by `clusterdns convert-corefile`.\n\
         # Keys not written here keep clusterdns's defaults.\n",
    );
    if !notes.is_empty() {
        yaml.push_str(&format!(
            "# The {} notes on what changed meaning were printed on stderr.\n",
            notes.len()
        ));
    }
    yaml.push_str(&body);
    if !yaml.ends_with('\n') {
        yaml.push('\n');
    }
    let read_back = Config::from_yaml(&yaml, Path::new("converted config"))
        .map_err(|e| invalid(e.to_string()))?;
    if read_back != config {
        return Err(invalid(format!(
            "the YAML written does not read back as the converted config:\n{yaml}"
        )));
    }
    Ok(Conversion {
        config_yaml: yaml,
        notes,
        config,
        files,
    })
}

/// `config` as a YAML tree without the keys that hold their default.
fn minimal(config: &Config) -> Result<Node, CorefileError> {
    let defaults = Config::default();
    // Sections that are off by default (`hosts: null`) are compared, when on, with their own
    // defaults.
    let mut sections_on = Config {
        hosts: Some(HostsConfig::default()),
        source: SourceConfig {
            kubernetes: Some(KubernetesSourceConfig::default()),
            ..SourceConfig::default()
        },
        shape: crate::config::ShapeConfig {
            external: Some(crate::config::ExternalConfig::default()),
            ..Default::default()
        },
        ..Config::default()
    };
    // A domain's own cache is compared with the cache defaults.
    for zone in config.forward.domains.keys() {
        sections_on.forward.domains.insert(
            zone.clone(),
            crate::config::DomainForwardConfig {
                cache: Some(crate::config::CacheConfig::default()),
                ..Default::default()
            },
        );
    }
    let mut always: Vec<&str> = ALWAYS_WRITTEN.to_vec();
    if config.cluster.enabled {
        always.push("cluster.zone");
    }
    let pruned = prune(
        Node::of(config)?,
        Some(&Node::of(&defaults)?),
        Some(&Node::of(&sections_on)?),
        "",
        &always,
    );
    Ok(pruned.unwrap_or(Node::Map(Vec::new())))
}

/// `node` without the entries equal to `default` (`None`: dropped altogether). `sections_on` is
/// the default with every optional section present, for a section that is null by default.
fn prune(
    node: Node,
    default: Option<&Node>,
    sections_on: Option<&Node>,
    path: &str,
    always: &[&str],
) -> Option<Node> {
    if always.contains(&path) {
        return Some(node);
    }
    let holds_always_written = path.is_empty()
        || always.iter().any(|a| {
            a.strip_prefix(path)
                .is_some_and(|rest| rest.starts_with('.'))
        });
    if default == Some(&node) && !holds_always_written {
        return None;
    }
    // The items of a list of rules (templates, rewrites) hold only what differs from a rule's
    // defaults.
    if let Node::Seq(items) = &node
        && let Some(item_default) = list_item_default(path)
    {
        let items = items
            .iter()
            .map(|i| {
                prune(i.clone(), Some(&item_default), None, "", &[])
                    .unwrap_or(Node::Map(Vec::new()))
            })
            .collect();
        return Some(Node::Seq(items));
    }
    let Node::Map(entries) = node else {
        return Some(node);
    };
    let reference = match default {
        Some(Node::Map(_)) => default,
        _ => sections_on,
    };
    let kept = entries
        .into_iter()
        .filter_map(|(key, value)| {
            let child = match path {
                "" => key.clone(),
                _ => format!("{path}.{key}"),
            };
            let d = reference.and_then(|r| r.get(&key));
            let on = sections_on.and_then(|r| r.get(&key));
            prune(value, d, on, &child, always).map(|v| (key, v))
        })
        .collect();
    Some(Node::Map(kept))
}

/// The defaults of one item of the lists of rules the config has.
fn list_item_default(path: &str) -> Option<Node> {
    match path {
        "shape.templates" => Node::of(&crate::config::TemplateRule::default()).ok(),
        "shape.rewrites" => Node::of(&crate::config::RewriteRule::default()).ok(),
        _ => None,
    }
}

/// A YAML (or JSON) value whose mappings keep their keys in order, so the config is written in
/// the order its types declare (`serde_json::Value` would sort the keys).
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl Node {
    /// A value as a tree: serde_json writes struct fields in declaration order, and reading the
    /// text back into a `Node` keeps it.
    fn of<T: Serialize>(value: &T) -> Result<Node, CorefileError> {
        let text =
            serde_json::to_string(value).map_err(|e| CorefileError::Config(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| CorefileError::Config(e.to_string()))
    }

    fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Int(n) => s.serialize_i64(*n),
            Node::UInt(n) => s.serialize_u64(*n),
            Node::Float(f) => s.serialize_f64(*f),
            Node::Str(t) => s.serialize_str(t),
            Node::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Node, E> {
        Ok(Node::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Node, E> {
        Ok(Node::Int(n))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Node, E> {
        Ok(Node::UInt(n))
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Node, E> {
        Ok(Node::Float(f))
    }
    fn visit_str<E: de::Error>(self, t: &str) -> Result<Node, E> {
        Ok(Node::Str(t.to_string()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corefile::{convert_with, test_options};

    /// The dotted paths of the leaves a YAML text writes.
    fn written_paths(yaml: &str) -> Vec<String> {
        fn walk(node: &Node, path: String, out: &mut Vec<String>) {
            match node {
                Node::Map(entries) if !entries.is_empty() => {
                    for (k, v) in entries {
                        let child = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        walk(v, child, out);
                    }
                }
                _ => out.push(path),
            }
        }
        let node: Node = serde_saphyr::from_str(yaml).unwrap();
        let mut out = Vec::new();
        walk(&node, String::new(), &mut out);
        out
    }

    fn convert(text: &str) -> Conversion {
        convert_with(text, &test_options()).unwrap()
    }

    #[test]
    fn only_keys_that_differ_from_the_defaults_are_written() {
        let c = convert(
            ".:53 {\n errors\n health {\n  lameduck 5s\n }\n ready\n kubernetes cluster.local in-addr.arpa ip6.arpa {\n  pods insecure\n  fallthrough in-addr.arpa ip6.arpa\n  ttl 30\n }\n prometheus :9153\n forward . /etc/resolv.conf {\n  max_concurrent 1000\n }\n cache 30\n loop\n reload\n loadbalance\n}\n",
        );
        assert_eq!(
            written_paths(&c.config_yaml),
            [
                "listen",
                "cluster.enabled",
                "cluster.zone",
                "source.kubernetes",
                "forward.enabled",
                "cache.enabled",
                "cache.max_entries",
                "cache.max_ttl",
                "cache.max_negative_ttl",
                "cache.prefetch",
                "cache.serve_stale",
                "cache.success_capacity",
                "cache.denial_capacity",
                "metrics.listen",
                "health.listen",
                "ready.listen",
            ],
            "{}",
            c.config_yaml
        );
        assert!(
            c.config_yaml.contains("serve_stale: 0s"),
            "{}",
            c.config_yaml
        );
        assert!(
            c.config_yaml.contains("kubernetes: {}"),
            "{}",
            c.config_yaml
        );
    }

    #[test]
    fn a_section_off_by_default_is_compared_with_its_own_defaults() {
        let c = convert(
            ".:53 {\n hosts /etc/coredns/hosts.db {\n  ttl 60\n  fallthrough\n }\n forward . 10.0.0.1\n}\n",
        );
        let paths = written_paths(&c.config_yaml);
        assert!(paths.contains(&"hosts.file".to_string()), "{paths:?}");
        assert!(paths.contains(&"hosts.ttl".to_string()), "{paths:?}");
        // fallthrough: true and reload: 5s are HostsConfig's defaults.
        assert!(
            !paths
                .iter()
                .any(|p| p == "hosts.fallthrough" || p == "hosts.reload")
        );
        // Turned off where CoreDNS has no such thing: written, since it differs.
        assert!(paths.contains(&"cluster.enabled".to_string()));
        assert!(!paths.contains(&"cluster.zone".to_string()), "{paths:?}");
        assert!(c.config_yaml.contains("listen: null"), "{}", c.config_yaml);
    }

    #[test]
    fn sections_keep_the_order_of_the_config_types() {
        let c = convert(
            ".:53 {\n bind 127.0.0.1\n kubernetes cluster.local\n forward . 10.0.0.1\n cache\n log\n}\n",
        );
        let at = |key: &str| {
            c.config_yaml
                .find(&format!("\n{key}:"))
                .unwrap_or_else(|| panic!("{key}\n{}", c.config_yaml))
        };
        assert!(at("listen") < at("cluster"));
        assert!(at("cluster") < at("source"));
        assert!(at("source") < at("forward"));
        assert!(at("forward") < at("cache"));
        assert!(at("cache") < at("metrics"));
        assert!(at("ready") < at("querylog"));
    }
}
