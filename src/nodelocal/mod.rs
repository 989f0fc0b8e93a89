//! Node-local mode: what NodeLocal DNSCache's node-cache does around its cache, without its
//! upgrade gap.
//!
//! | step | when | what |
//! |---|---|---|
//! | [`NodeLocal::prepare`] | start, before binding | take the node's lease (`lease.rs`, shared), put `nodelocal.addresses` on the link (`dummy`/`ifb` named `nodelocal.interface`, or `lo`) |
//! | [`NodeLocal::ensure`] | once the DNS sockets are bound, then every `sync_interval` | re-create link, addresses and rules (`rules.rs`) that something else removed; failures count in `coredns_nodecache_setup_errors_total{errortype}` |
//! | [`NodeLocal::finish`] | after the DNS drain | if no other instance holds the lease and `teardown` is on: rules, then the link (node-cache's order); otherwise leave them to the newer instance |
//!
//! Two instances (the old and the new pod of a rolling update with `maxSurge: 1`) hold the same
//! addresses at once: every DNS socket has `SO_REUSEPORT` and both run as the same user, so
//! the kernel spreads queries over both until the old one drains (its UDP sockets connect away,
//! so nothing new is queued on them) and exits — leaving link and rules in place, because the
//! new instance holds the lease.
//!
//! Links and addresses go through rtnetlink from Rust (`netlink.rs`); rules through the node's
//! own tool (`iptables-legacy`, `iptables-nft` or `nft`, `backend.rs`), which the image ships.

mod backend;
mod lease;
mod netlink;
mod rules;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, LinkKind, NodeLocalConfig, OpsListen, parse_ops_listen};
use crate::ops::lifecycle::ShutdownSignal;
use crate::ops::metrics::Metrics;

use backend::Backend;
use lease::Lease;
use netlink::Netlink;
use rules::Rule;

/// Every `errortype` of node-cache's counter, shown at 0 from the start as node-cache does
/// (`configmap` is node-cache's Corefile templating, which clusterdns does not have; it stays 0).
pub(crate) const SETUP_ERROR_TYPES: [&str; 5] = [
    "iptables",
    "iptables_lock",
    "interface_add",
    "interface_check",
    "configmap",
];

/// Why node-local mode cannot start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NodeLocalError {
    #[error("node-local lock file {path}: {source}")]
    Lease {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Interface(#[from] InterfaceError),
}

/// A failed step on the link or its addresses, by node-cache's `errortype`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InterfaceError {
    #[error("cannot add {what}: {source}")]
    Add {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot check {what}: {source}")]
    Check {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl InterfaceError {
    fn errortype(&self) -> &'static str {
        match self {
            InterfaceError::Add { .. } => "interface_add",
            InterfaceError::Check { .. } => "interface_check",
        }
    }
}

/// The node-local setup of this process.
pub(crate) struct NodeLocal {
    cfg: NodeLocalConfig,
    lease: Lease,
    backend: Option<Backend>,
    rules: Vec<Rule>,
}

impl NodeLocal {
    /// Take the lease and put the addresses on the link: the DNS sockets cannot bind before.
    pub(crate) async fn prepare(cfg: &Config) -> Result<NodeLocal, NodeLocalError> {
        let n = cfg.nodelocal.clone();
        let lease = Lease::acquire(&n.lock_file)
            .await
            .map_err(|source| NodeLocalError::Lease {
                path: n.lock_file.clone(),
                source,
            })?;
        // The liveness endpoint's port gets node-cache's NOTRACK rules when it is TCP.
        let health_port = match cfg.health.listen.as_deref().map(parse_ops_listen) {
            Some(Ok(OpsListen::Tcp(a))) => Some(a.port()),
            _ => None,
        };
        let rules = rules::node_cache_rules(&n.addresses, n.port, health_port, n.fail_open);
        let (ensured, me) = tokio::task::spawn_blocking(move || {
            let backend = backend::choose(n.rules);
            let me = NodeLocal {
                cfg: n,
                lease,
                backend,
                rules,
            };
            let r = me.ensure_interface().map(|_| ());
            (r, me)
        })
        .await
        .map_err(|e| InterfaceError::Check {
            what: "the interface".into(),
            source: io::Error::other(e.to_string()),
        })?;
        ensured?;
        tracing::info!(
            addresses = ?me.cfg.addresses,
            link = %me.link_name(),
            rules = me.backend.map(|b| b.name()).unwrap_or("none"),
            fail_open = me.cfg.fail_open,
            lock = %me.lease.path().display(),
            "node-local mode"
        );
        Ok(me)
    }

    fn link_name(&self) -> &str {
        match self.cfg.link_kind {
            LinkKind::Lo => "lo",
            _ => &self.cfg.interface,
        }
    }

    /// Link up and every address on it. Ok(true): something had to be (re)created.
    fn ensure_interface(&self) -> Result<bool, InterfaceError> {
        if !self.cfg.setup_interface {
            return Ok(false);
        }
        let name = self.link_name();
        let check = |source| InterfaceError::Check {
            what: format!("link {name}"),
            source,
        };
        let mut nl = Netlink::open().map_err(check)?;
        let mut changed = false;
        let index = match nl.link(name).map_err(check)? {
            Some(l) => {
                if !l.up {
                    nl.set_up(l.index).map_err(check)?;
                    changed = true;
                }
                l.index
            }
            None if self.cfg.link_kind == LinkKind::Lo => {
                return Err(check(io::Error::other("no lo link")));
            }
            None => {
                let kind = match self.cfg.link_kind {
                    LinkKind::Ifb => "ifb",
                    _ => "dummy",
                };
                let add = |source| InterfaceError::Add {
                    what: format!("{kind} link {name}"),
                    source,
                };
                nl.create_link(name, kind).map_err(add)?;
                let l = nl
                    .link(name)
                    .map_err(check)?
                    .ok_or_else(|| add(io::Error::other("gone right after creation")))?;
                nl.set_up(l.index).map_err(add)?;
                tracing::info!(link = name, kind, "added interface");
                changed = true;
                l.index
            }
        };
        let have = nl.addresses(index).map_err(check)?;
        for ip in self.cfg.addresses.iter().filter(|ip| !have.contains(ip)) {
            nl.add_address(index, *ip)
                .map_err(|source| InterfaceError::Add {
                    what: format!("{ip} on {name}"),
                    source,
                })?;
            tracing::info!(%ip, link = name, "added address");
            changed = true;
        }
        Ok(changed)
    }

    /// Link, addresses and rules, each re-created if missing; failures logged and counted.
    /// Returns whether everything is in place. Blocking (netlink and tool runs).
    pub(crate) fn ensure(&self, metrics: &Metrics) -> bool {
        let mut ok = true;
        match self.ensure_interface() {
            Ok(true) => {
                tracing::warn!(link = %self.link_name(), "re-created the node-local interface or its addresses")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "node-local interface");
                metrics.nodecache_setup_error(e.errortype());
                ok = false;
            }
        }
        if let Some(b) = self.backend {
            let (added, errors) = b.ensure(&self.rules);
            if added > 0 {
                tracing::info!(added, tool = b.name(), "added node-local rules");
            }
            for e in &errors {
                tracing::error!(error = %e, "node-local rule");
                metrics.nodecache_setup_error(e.errortype());
            }
            ok &= errors.is_empty();
        }
        ok
    }

    /// After the sockets are bound: ensure everything, retrying (1 s, doubling up to
    /// `sync_interval`) until it is all in place, then call `on_ready` and keep checking every
    /// `sync_interval` until the drain starts.
    pub(crate) async fn run(
        self: Arc<Self>,
        metrics: Arc<Metrics>,
        on_ready: Box<dyn Fn() + Send + Sync>,
        mut signal: ShutdownSignal,
    ) {
        let mut ready = false;
        let mut wait = Duration::from_secs(1);
        loop {
            let (me, metrics) = (self.clone(), metrics.clone());
            let ok = tokio::task::spawn_blocking(move || {
                let ok = me.ensure(&metrics);
                crate::memory::release_free_memory();
                ok
            })
            .await
            .unwrap_or(false);
            if ok && !ready {
                ready = true;
                on_ready();
            }
            let next = if ready {
                self.cfg.sync_interval
            } else {
                let w = wait;
                wait = (wait * 2).min(self.cfg.sync_interval);
                w
            };
            tokio::select! {
                _ = signal.draining() => return,
                _ = tokio::time::sleep(next) => {}
            }
        }
    }

    /// On exit, after the DNS sockets are closed: tear down if this is the last instance on
    /// the node (and `teardown` is on); otherwise leave everything to the instance that runs.
    /// Blocking.
    pub(crate) fn finish(&self) {
        if !self.cfg.teardown {
            tracing::info!("node-local teardown skipped (nodelocal.teardown: false)");
            return;
        }
        if !self.lease.is_last() {
            tracing::info!(
                "another node-local instance holds the node: leaving interface and rules to it"
            );
            return;
        }
        tracing::info!("last node-local instance: removing rules and interface");
        if let Some(b) = self.backend {
            for e in b.remove(&self.rules) {
                tracing::error!(error = %e, "removing a node-local rule");
            }
        }
        if self.cfg.setup_interface
            && let Err(e) = self.remove_interface()
        {
            tracing::error!(error = %e, link = %self.link_name(), "removing the node-local interface");
        }
    }

    fn remove_interface(&self) -> io::Result<()> {
        let mut nl = Netlink::open()?;
        let Some(link) = nl.link(self.link_name())? else {
            return Ok(());
        };
        match self.cfg.link_kind {
            // lo is not ours: only our addresses go.
            LinkKind::Lo => {
                for ip in &self.cfg.addresses {
                    nl.delete_address(link.index, *ip)?;
                }
                Ok(())
            }
            _ => nl.delete_link(link.index),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, OpsListen, parse_ops_listen};

    fn config(yaml: &str) -> Result<Config, String> {
        let c = Config::from_yaml(yaml, Path::new("c.yaml")).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn node_local_mode_listens_on_exactly_its_addresses() {
        let c = config(
            "nodelocal:\n  enabled: true\n  addresses: [169.254.20.10, 10.96.0.10]\n  link_kind: ifb\n  sync_interval: 30s\n",
        )
        .unwrap();
        assert_eq!(
            c.dns_listen(),
            vec![
                "169.254.20.10:53".parse().unwrap(),
                "10.96.0.10:53".parse().unwrap()
            ]
        );
        assert_eq!(
            c.nodelocal.sync_interval,
            std::time::Duration::from_secs(30)
        );
        // Off: `listen` as before.
        let c = config("listen: [\"127.0.0.1:5300\"]\n").unwrap();
        assert_eq!(c.dns_listen(), vec!["127.0.0.1:5300".parse().unwrap()]);
    }

    #[test]
    fn bad_node_local_settings_name_their_key() {
        for (yaml, key) in [
            (
                "listen: [\"127.0.0.1:53\"]\nnodelocal: {enabled: true}\n",
                "`listen`",
            ),
            (
                "nodelocal: {enabled: true, addresses: []}\n",
                "nodelocal.addresses",
            ),
            (
                "nodelocal: {enabled: true, addresses: [0.0.0.0]}\n",
                "nodelocal.addresses[0]",
            ),
            (
                "nodelocal: {enabled: true, addresses: [169.254.20.10, 169.254.20.10]}\n",
                "nodelocal.addresses[1]",
            ),
            ("nodelocal: {enabled: true, port: 0}\n", "nodelocal.port"),
            (
                "nodelocal: {enabled: true, interface: a-name-far-too-long}\n",
                "nodelocal.interface",
            ),
            (
                "nodelocal: {enabled: true, interface: lo}\n",
                "nodelocal.interface",
            ),
            (
                "nodelocal: {enabled: true, sync_interval: 0s}\n",
                "nodelocal.sync_interval",
            ),
            ("nodelocal: {enabled: true, link_kind: veth}\n", "veth"),
            ("nodelocal: {enabled: true, rules: ipchains}\n", "ipchains"),
            (
                "health: {listen: \"unix:relative.sock\"}\n",
                "health.listen",
            ),
        ] {
            let e = config(yaml).unwrap_err();
            assert!(e.contains(key), "{yaml}: {e}");
        }
        // Names that are fine with `lo` (the interface is not used there).
        config("nodelocal: {enabled: true, link_kind: lo, interface: \"\"}\n").unwrap();
    }

    #[test]
    fn ops_listen_forms() {
        assert_eq!(
            parse_ops_listen("unix:/run/clusterdns/ready.sock").unwrap(),
            OpsListen::Unix("/run/clusterdns/ready.sock".into())
        );
        assert_eq!(
            parse_ops_listen(":8080").unwrap(),
            OpsListen::Tcp("0.0.0.0:8080".parse().unwrap())
        );
        assert!(parse_ops_listen("unix:").is_err());
    }
}
