//! Converting a CoreDNS Corefile into a clusterdns config (`clusterdns convert-corefile`).
//!
//! The steps, one file each:
//! - `lexer`: Corefile text into tokens (Caddyfile syntax: `#` comments, quoted strings);
//! - `import`: snippets `(name) { ... }` and `import` of snippets or of files by glob, resolved
//!   against a base folder as CoreDNS does for AKS's `import custom/*.server` /
//!   `custom/*.override`;
//! - `parser`: tokens into server blocks `zone:port { ... }` of directives with arguments and
//!   nested blocks ([`parse`] runs these three);
//! - `convert/`: what the server blocks do, mapped onto a [`crate::config::Config`] value, one
//!   file per plugin family, with notes on everything that changed meaning on the way;
//! - `output`: the config written as YAML by the YAML library, only the keys that differ
//!   from clusterdns's defaults, and read back as a check.
//!
//! Errors ([`CorefileError`]) name the file and line, the server block, the directive (and its
//! option) and the reason.
//!
//! The rule the converter follows: **what clients get back must not change silently.**
//! - A directive that changes answers and that clusterdns cannot express (`file`, `acl`,
//!   `dnssec`, ...) is a [`CorefileError::Unsupported`] naming the directive,
//!   its server block and line, and why.
//! - A directive that only concerns tuning or observability and has no clusterdns equivalent
//!   (`reload`, `debug`, a cache option, `log` formats) is dropped with a note.
//! - Defaults follow the Corefile, not clusterdns: a Corefile without `cache` converts to
//!   `cache.enabled: false`, one without `loadbalance` to `cluster.loadbalance: false`, and
//!   prefetch and serve-stale stay off unless the Corefile turns them on. Where CoreDNS's
//!   default differs from clusterdns's, the converter sets CoreDNS's; everything the Corefile
//!   cannot say keeps the default of [`crate::config`], the one place defaults live.
//!
//! How server blocks map:
//! | Corefile | clusterdns |
//! |---|---|
//! | the `.` block and the block holding `kubernetes` | the whole config (`listen`, `cluster`, `forward`, `cache`, ...) |
//! | a block for another zone with `forward . IPs` (coredns-custom `*.server`) | `forward.stub_domains` |
//! | the same with `forward` options, `tls://` upstreams or a `cache` unlike the `.` block's | `forward.domains.<zone>` with those options and cache |
//! | a block for another zone with `forward . /etc/resolv.conf`, while `.` forwards there too | nothing: ordinary forwarding (a `forward.domains` entry without upstreams when it has options) |
//! | `import custom/*.override` in the `.` block | its directives, as if written there |
//! | `health`, `ready`, `prometheus` in any block | process-wide listeners, as in CoreDNS |
//! | a stub domain inside the cluster zone (kube-dns's `my.cluster.local`) | forwarded, not answered from the cluster |
//! | `hosts /etc/coredns/<key>` (k3s's `NodeHosts`) | that ConfigMap key, carried over as a file |
//!
//! Inputs (`input`): a Corefile, or a ConfigMap's YAML — CoreDNS's (its `Corefile` and the
//! files mounted beside it), `coredns-custom` (for imports), kube-dns's (`stubDomains`,
//! `upstreamNameservers`, converted as CoreDNS's migration does); NodeLocal DNSCache's
//! `__PILLAR__` placeholders filled from [`Options::pillars`].

// Errors carry the position, block, directive and reason as owned strings; they are built once,
// on the cold path of a one-shot command, so their size does not matter.
#![allow(clippy::result_large_err)]

mod convert;
mod error;
mod import;
mod input;
mod lexer;
mod output;
mod parser;
mod zones;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::Config;

pub use error::{CorefileError, Pos};
pub use parser::{Corefile, Directive, ServerBlock, parse};

/// Where the converted config expects files the conversion generates (the ConfigMap's mount).
pub const CONFIG_DIR: &str = "/etc/clusterdns";

/// The result of a conversion.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// The clusterdns config as YAML: the keys whose values differ from clusterdns's defaults
    /// (and the few an operator looks for first: listen addresses, the cluster zone, what is
    /// on), under a short header. The notes are not in it: the CLI prints them on stderr.
    pub config_yaml: String,
    /// What changed meaning or was dropped, one sentence each, with the Corefile line.
    pub notes: Vec<String>,
    /// The converted and validated config (what `config_yaml` reads back as).
    pub config: Config,
    /// Files the config refers to that the conversion wrote itself, by ConfigMap key: e.g. the
    /// inline entries of a `hosts { ... }` block become key `hosts`, read from
    /// `/etc/clusterdns/hosts` when the ConfigMap is mounted at [`CONFIG_DIR`].
    pub files: BTreeMap<String, String>,
}

/// How a conversion finds imported files.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Relative `import` paths are resolved against this folder (the Corefile's folder;
    /// `/etc/coredns` in a CoreDNS pod).
    pub base_dir: PathBuf,
    /// If set, `import custom/...` (and `import /etc/coredns/custom/...`) read from this folder
    /// instead: where the coredns-custom ConfigMap was saved (`kubectl get cm coredns-custom`).
    pub custom_dir: Option<PathBuf>,
    /// The coredns-custom ConfigMap's files by key, when it was given as YAML
    /// (`kubectl get cm coredns-custom -o yaml`): `import custom/...` (and
    /// `/etc/coredns/custom/...`) read these instead of a folder.
    pub custom_files: Option<BTreeMap<String, String>>,
    /// The other keys of the CoreDNS ConfigMap (mounted beside the Corefile at `/etc/coredns`),
    /// e.g. k3s's `NodeHosts`: a `hosts /etc/coredns/<key>` carries the file over as a key of
    /// clusterdns's ConfigMap. Files beside the Corefile in `base_dir` count too.
    pub mounted: BTreeMap<String, String>,
    /// Values for NodeLocal DNSCache's `__PILLAR__...__` placeholders, by name (with or without
    /// the underscores around it): `LOCAL__DNS`, `DNS__SERVER`, `DNS__DOMAIN`, `CLUSTER__DNS`,
    /// `UPSTREAM__SERVERS`.
    pub pillars: BTreeMap<String, String>,
    /// The Corefile's name in positions and messages; `Corefile` if empty.
    pub file_name: String,
    /// The cluster domain of a kube-dns ConfigMap (kube-dns's `--domain`, the kubelets'
    /// `--cluster-domain`); `cluster.local` if not given. A Corefile names its zone itself.
    pub cluster_domain: Option<String>,
}

/// Options for unit tests: imports resolve against a folder that does not exist.
#[cfg(test)]
fn test_options() -> Options {
    Options {
        base_dir: PathBuf::from("/nonexistent"),
        ..Options::default()
    }
}

/// Convert Corefile text; relative imports are resolved against `base_dir`.
pub fn convert(corefile_text: &str, base_dir: &Path) -> Result<Conversion, CorefileError> {
    convert_with(
        corefile_text,
        &Options {
            base_dir: base_dir.to_path_buf(),
            ..Options::default()
        },
    )
}

/// Convert Corefile text with [`Options`] (e.g. a separate folder for `import custom/...`).
///
/// `text` may also be a ConfigMap as `kubectl get cm -o yaml` prints it: CoreDNS's (its
/// `Corefile` key is converted, its other keys are the files mounted beside it, e.g. k3s's
/// `NodeHosts`), or kube-dns's with `stubDomains` / `upstreamNameservers` (converted as the
/// Corefile CoreDNS's migration makes of it, for [`Options::cluster_domain`]).
/// NodeLocal DNSCache's `__PILLAR__...__` placeholders are filled from [`Options::pillars`].
pub fn convert_with(text: &str, opts: &Options) -> Result<Conversion, CorefileError> {
    let mut opts = opts.clone();
    let mut notes = Vec::new();
    let name = if opts.file_name.is_empty() {
        "Corefile".to_string()
    } else {
        opts.file_name.clone()
    };
    let mut corefile_text = match input::configmap_data(text) {
        None => text.to_string(),
        Some(mut data) => match data.remove("Corefile") {
            Some(corefile) => {
                opts.mounted.extend(data);
                opts.file_name = format!("{name} (data.Corefile)");
                corefile
            }
            None if data.contains_key("stubDomains")
                || data.contains_key("upstreamNameservers") =>
            {
                opts.file_name = format!("{name} (kube-dns as Corefile)");
                let domain = match &opts.cluster_domain {
                    Some(d) => {
                        crate::names::parse_served_zone(d).map_err(|e| CorefileError::Syntax {
                            at: Pos {
                                file: name.clone(),
                                line: 1,
                            },
                            message: format!("cluster domain: {e}"),
                        })?
                    }
                    None => "cluster.local".to_string(),
                };
                notes.push(format!(
                    "{name}: kube-dns's ConfigMap, converted as the Corefile CoreDNS's migration makes of it (cluster domain {domain}{})",
                    if opts.cluster_domain.is_some() {
                        ""
                    } else {
                        ", kube-dns's default --domain; --cluster-domain gives another"
                    }
                ));
                input::kube_dns_corefile(&data, &domain, &name)?
            }
            None => {
                return Err(CorefileError::Syntax {
                    at: Pos {
                        file: name,
                        line: 1,
                    },
                    message: "a ConfigMap without a `Corefile` key (CoreDNS) or `stubDomains` / `upstreamNameservers` keys (kube-dns)".into(),
                });
            }
        },
    };
    if corefile_text.contains("__PILLAR__") {
        let file = if opts.file_name.is_empty() {
            "Corefile"
        } else {
            opts.file_name.as_str()
        };
        corefile_text = input::fill_pillars(&corefile_text, &opts.pillars, file, &mut notes)?;
    }
    let mut corefile = parse(&corefile_text, &opts)?;
    notes.append(&mut corefile.notes);
    corefile.notes = notes;
    let converted = convert::convert(corefile, &opts)?;
    output::write(converted)
}

/// The data of a ConfigMap given as YAML (`kubectl get cm coredns-custom -o yaml`), for
/// [`Options::custom_files`]; None if `text` is not a ConfigMap.
pub fn configmap_data(text: &str) -> Option<BTreeMap<String, String>> {
    input::configmap_data(text)
}
