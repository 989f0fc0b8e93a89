//! `config/clusterdns.yaml` is the reference of every config key: it parses to exactly
//! `Config::default()`, its commented-out sections (those that are off unless given) hold their
//! own defaults, and it names every key the config has, so it cannot drift from `src/config.rs`.

use std::collections::BTreeSet;
use std::path::Path;

use clusterdns::config::{Config, ExternalConfig, HostsConfig, KubernetesSourceConfig, TsigConfig};

use crate::support::repo;

fn reference() -> String {
    std::fs::read_to_string(repo().join("config/clusterdns.yaml")).unwrap()
}

fn parse(text: &str) -> Config {
    Config::from_yaml(text, Path::new("config/clusterdns.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

/// The reference with its commented-out keys turned on: a comment line whose text after `# `
/// is a `key:` line (prose comments never start with a lowercase `word:`).
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| {
            let indent = l.len() - l.trim_start().len();
            match l.trim_start().strip_prefix("# ") {
                Some(rest) if is_key_line(rest) => format!("{}{rest}", &l[..indent]),
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_key_line(s: &str) -> bool {
    let s = s.trim_start();
    s.split_once(':').is_some_and(|(k, rest)| {
        !k.is_empty()
            && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            && (rest.is_empty() || rest.starts_with(' '))
    })
}

/// Every key path of the config (`cluster.zone`, `hosts.state_file`, ...), as the config's own
/// parser knows them: a section given an unknown key answers with the keys it expects (serde's
/// "unknown field `x`, expected one of a, b"), and a key is a section when it does too.
fn config_keys() -> BTreeSet<String> {
    fn nested(path: &[String], leaf: &str) -> String {
        let mut y = String::new();
        for (depth, k) in path.iter().enumerate() {
            y += &format!("{}{k}:\n", "  ".repeat(depth));
        }
        y + &format!("{}{leaf}", "  ".repeat(path.len()))
    }
    fn expected_keys(path: &[String]) -> Option<Vec<String>> {
        let err = Config::from_yaml(&nested(path, "zz_probe: 1\n"), Path::new("probe.yaml"))
            .err()?
            .to_string();
        let list = err.split("unknown field `zz_probe`, expected ").nth(1)?;
        let list = list.lines().next().unwrap();
        let list = list.strip_prefix("one of ").unwrap_or(list);
        Some(
            list.split(", ")
                .map(|k| k.trim().trim_matches('`').to_string())
                .collect(),
        )
    }
    fn walk(path: &mut Vec<String>, out: &mut BTreeSet<String>) {
        let keys = expected_keys(path)
            .unwrap_or_else(|| panic!("no key list for section {}", path.join(".")));
        for k in keys {
            path.push(k);
            out.insert(path.join("."));
            if expected_keys(path).is_some() {
                walk(path, out);
            }
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(&mut Vec::new(), &mut out);
    out
}

/// The key paths a YAML text writes, down to the config's leaves (a map-valued leaf such as
/// `forward.stub_domains` holds names, not keys).
fn yaml_keys(text: &str, sections: &BTreeSet<String>) -> BTreeSet<String> {
    fn walk(
        v: &serde_json::Value,
        prefix: &str,
        sections: &BTreeSet<String>,
        out: &mut BTreeSet<String>,
    ) {
        let Some(map) = v.as_object() else { return };
        for (k, child) in map {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.insert(path.clone());
            if sections.contains(&path) {
                walk(child, &path, sections, out);
            }
        }
    }
    let v: serde_json::Value = serde_saphyr::from_str(text).unwrap();
    let mut out = BTreeSet::new();
    walk(&v, "", sections, &mut out);
    out
}

#[test]
fn config_reference_is_exactly_the_defaults() {
    assert_eq!(parse(&reference()), Config::default());
}

#[test]
fn config_reference_commented_sections_hold_their_defaults() {
    let on = parse(&uncommented(&reference()));
    let mut want = Config {
        hosts: Some(HostsConfig::default()),
        ..Config::default()
    };
    want.source.kubernetes = Some(KubernetesSourceConfig::default());
    want.transfer.tsig = Some(TsigConfig {
        secret_file: Some("/etc/clusterdns/tsig/secret".into()),
        ..TsigConfig::default()
    });
    want.shape.external = Some(ExternalConfig::default());
    assert_eq!(on, want);
}

#[test]
fn config_reference_names_every_key() {
    let keys = config_keys();
    // The probe itself: it found the nested sections and their keys.
    for k in [
        "listen",
        "cluster.zone",
        "source.kubernetes.startup_timeout",
        "hosts.state_file",
        "health.drain_timeout",
    ] {
        assert!(keys.contains(k), "{k} not among {keys:?}");
    }
    // A key that holds keys of its own is a section: walk into it, not into maps of names.
    let sections: BTreeSet<String> = keys
        .iter()
        .filter(|k| keys.iter().any(|o| o.starts_with(&format!("{k}."))))
        .cloned()
        .collect();
    let written = yaml_keys(&uncommented(&reference()), &sections);
    let missing: Vec<&String> = keys.difference(&written).collect();
    assert!(
        missing.is_empty(),
        "config/clusterdns.yaml does not name {missing:?}"
    );
    assert_eq!(
        written, keys,
        "config/clusterdns.yaml names keys the config does not have"
    );
}
