//! What the server blocks do, mapped onto a [`Config`].
//!
//! The blocks are read one directive at a time into the converter's state, each value kept with
//! where it was set (a [`Set`]), so that a second, different setting elsewhere is an error that
//! names both places. Then the state is written into a `Config` that starts from clusterdns's
//! defaults ([`Config::default`]): the converter sets what the Corefile says, and CoreDNS's
//! default where CoreDNS's and clusterdns's differ (a Corefile without `cache` caches nothing);
//! where they agree, it relies on the config's default, which a test here holds to CoreDNS's.
//!
//! One file per plugin family: [`kubernetes`], [`forward`], [`cache`], [`hosts`], [`server`]
//! (bind, bufsize, health, ready, prometheus, log, errors, loadbalance), the answer-shaping
//! plugins [`template`], [`rewrite`], [`autopath`] and [`external`] (`k8s_external`),
//! [`transfer`], and [`refused`] (plugins refused or dropped, and why).

mod autopath;
mod cache;
mod ctx;
mod external;
mod forward;
mod hosts;
mod kubernetes;
mod refused;
mod rewrite;
mod server;
mod template;
#[cfg(test)]
mod tests;
mod transfer;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ctx::Ctx;

use super::parser::{Corefile, ServerBlock};
use super::zones::{Key, parse_key};
use super::{CorefileError, Options, Pos};
use crate::config::Config;

/// A converted Corefile, before it is written out.
pub(super) struct Converted {
    pub(super) config: Config,
    /// What changed meaning or was dropped, one sentence each, with the Corefile line.
    pub(super) notes: Vec<String>,
    /// Files the config refers to, by ConfigMap key.
    pub(super) files: BTreeMap<String, String>,
}

/// Convert parsed server blocks into a config.
pub(super) fn convert(corefile: Corefile, opts: &Options) -> Result<Converted, CorefileError> {
    Converter {
        mounted: opts.mounted.clone(),
        base_dir: Some(opts.base_dir.clone()),
        ..Converter::default()
    }
    .run(corefile)
}

/// A value set in one place, remembered with where, so a second, different setting is reported.
#[derive(Debug, Clone)]
struct Set<T> {
    value: T,
    at: Pos,
    block: String,
}

impl<T> Set<T> {
    fn new(value: T, at: &Pos, block: &str) -> Self {
        Set {
            value,
            at: at.clone(),
            block: block.to_string(),
        }
    }

    /// The setting cannot be carried over: an error at the place it was set.
    fn unsupported(&self, directive: &str, option: Option<&str>, reason: String) -> CorefileError {
        CorefileError::Unsupported {
            at: self.at.clone(),
            block: self.block.clone(),
            directive: directive.to_string(),
            option: option.map(str::to_string),
            reason,
        }
    }
}

/// What kind of server block: the main one(s) map onto the whole config, the others become
/// stub domains.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Main,
    Zone,
}

#[derive(Default)]
struct Converter {
    notes: Vec<String>,
    files: BTreeMap<String, String>,
    port: Option<Set<u16>>,
    binds: Option<Set<Vec<IpAddr>>>,
    /// A `.` block exists (names outside every zone are forwarded only if it forwards).
    has_root: bool,
    kube: Option<kubernetes::Kube>,
    forwarding: forward::Forwarding,
    caching: cache::Caching,
    hosts: Option<Set<crate::config::HostsConfig>>,
    ops: server::Ops,
    transfers: Vec<transfer::TransferLine>,
    /// `template`, `rewrite`, `autopath`, `k8s_external`, in Corefile order.
    shape: crate::config::ShapeConfig,
    /// The CoreDNS ConfigMap's other keys, mounted beside the Corefile ([`Options::mounted`]).
    mounted: BTreeMap<String, String>,
    /// The Corefile's folder, where such files may sit too.
    base_dir: Option<std::path::PathBuf>,
    /// Every server block's zones (`.` for the root), for what one block leaves to another.
    block_zones: Vec<String>,
}

impl Converter {
    fn run(mut self, corefile: Corefile) -> Result<Converted, CorefileError> {
        self.notes.extend(corefile.notes.iter().cloned());
        let blocks = &corefile.blocks;

        // Keys, and which zone is served by which block.
        let mut keyed: Vec<(Vec<Key>, &ServerBlock)> = Vec::new();
        let mut seen: BTreeMap<(String, u16), Pos> = BTreeMap::new();
        for b in blocks {
            if b.keys.is_empty() {
                return Err(CorefileError::Syntax {
                    at: b.at.clone(),
                    message: "a server block without zones".into(),
                });
            }
            let mut keys = Vec::new();
            for raw in &b.keys {
                let k = parse_key(raw, b)?;
                if let Some(prev) = seen.insert((k.zone.clone(), k.port), b.at.clone()) {
                    return Err(CorefileError::Syntax {
                        at: b.at.clone(),
                        message: format!(
                            "zone `{}` on port {} is already served by the block at {prev}",
                            k.zone, k.port
                        ),
                    });
                }
                keys.push(k);
            }
            keyed.push((keys, b));
        }
        self.block_zones = keyed
            .iter()
            .flat_map(|(keys, _)| keys.iter().map(|k| k.zone.clone()))
            .collect();

        // One port for everything: clusterdns serves all zones on the same listen addresses.
        for (keys, b) in &keyed {
            for k in keys {
                set_once(
                    &mut self.port,
                    Set::new(k.port, &b.at, &b.label()),
                    "server block",
                    "clusterdns serves every zone on the same listen addresses, so all server blocks must use the same port",
                )?;
            }
        }

        // The main blocks: `.` and the one holding `kubernetes`; the rest are zone blocks.
        for (keys, b) in &keyed {
            let is_root = keys.iter().any(Key::is_root);
            let has_kube = b.directives.iter().any(|d| d.name == "kubernetes");
            if is_root && keys.len() > 1 {
                return Err(CorefileError::Unsupported {
                    at: b.at.clone(),
                    block: b.label(),
                    directive: "server block".into(),
                    option: None,
                    reason: "it serves `.` together with other zones; write the other zones as their own server blocks".into(),
                });
            }
            self.has_root |= is_root;
            let role = if is_root || has_kube {
                Role::Main
            } else {
                Role::Zone
            };
            self.block(b, keys, role)?;
        }
        self.finish_forwarding()?;
        self.finish_caching();
        Ok(self.write())
    }

    fn note(&mut self, at: &Pos, block: &str, what: &str, text: &str) {
        self.notes.push(format!("{at} (`{block}`) {what}: {text}"));
    }

    fn block(&mut self, b: &ServerBlock, keys: &[Key], role: Role) -> Result<(), CorefileError> {
        let label = b.label();
        let mut forwards = 0usize;
        let mut seen_names: BTreeMap<&str, &Pos> = BTreeMap::new();
        let mut block_binds: Option<(Vec<IpAddr>, Pos)> = None;
        for d in &b.directives {
            // CoreDNS takes several `forward` (different FROM), `bind` (addresses add up),
            // `log`, `errors` and `template` lines in one block; every other plugin once.
            if let Some(prev) = seen_names.insert(d.name.as_str(), &d.at)
                && !matches!(
                    d.name.as_str(),
                    "forward" | "bind" | "log" | "errors" | "template" | "rewrite"
                )
            {
                return Err(CorefileError::Invalid {
                    at: d.at.clone(),
                    block: label.clone(),
                    directive: d.name.clone(),
                    option: None,
                    message: format!(
                        "appears twice in this block (also at {prev}); CoreDNS would refuse this Corefile"
                    ),
                });
            }
            let ctx = Ctx {
                block: &label,
                d,
                role,
                keys,
            };
            match d.name.as_str() {
                "kubernetes" => self.kubernetes(&ctx)?,
                "forward" => {
                    forwards += 1;
                    self.forward(&ctx)?
                }
                "cache" => self.cache(&ctx)?,
                "hosts" => self.hosts(&ctx)?,
                "prometheus" | "health" | "ready" => self.listener(&ctx)?,
                "errors" => self.errors(&ctx),
                "log" => self.log(&ctx),
                "loop" => {}
                "loadbalance" => self.loadbalance(&ctx)?,
                "bind" => {
                    let (ips, _) = block_binds.get_or_insert_with(|| (Vec::new(), d.at.clone()));
                    ips.extend(server::bind_addresses(&ctx)?);
                }
                "bufsize" => self.bufsize(&ctx)?,
                "transfer" => self.transfer(&ctx)?,
                "template" => self.template(&ctx)?,
                "rewrite" => self.rewrite(&ctx)?,
                "autopath" => self.autopath(&ctx)?,
                "k8s_external" => self.k8s_external(&ctx)?,
                name => {
                    if let Some(reason) = refused::unsupported_reason(name) {
                        return Err(ctx.unsupported(reason.to_string()));
                    }
                    if let Some(note) = refused::dropped_note(name) {
                        self.note(&d.at, &label, name, &format!("dropped: {note}"));
                        continue;
                    }
                    return Err(ctx.unsupported(
                        "clusterdns does not know this directive (not a CoreDNS plugin it can convert, or an external plugin)".into(),
                    ));
                }
            }
        }
        if let Some((mut ips, at)) = block_binds {
            ips.sort();
            ips.dedup();
            set_once(
                &mut self.binds,
                Set::new(ips, &at, &label),
                "bind",
                "clusterdns listens on the same addresses for every zone",
            )?;
        }
        if role == Role::Zone && forwards == 0 {
            return Err(CorefileError::Unsupported {
                at: b.at.clone(),
                block: label,
                directive: "server block".into(),
                option: None,
                reason: "a block for a zone other than `.` and the cluster zone converts only when it forwards (a stub domain); this one has no `forward`, and clusterdns serves no other zones itself".into(),
            });
        }
        Ok(())
    }

    /// The config: clusterdns's defaults with what the Corefile says written over them.
    fn write(mut self) -> Converted {
        let mut config = Config::default();
        self.write_listen(&mut config);
        self.write_cluster(&mut config);
        self.write_transfer(&mut config);
        self.write_forward(&mut config);
        self.write_cache(&mut config);
        self.write_hosts(&mut config);
        self.write_ops(&mut config);
        config.shape = std::mem::take(&mut self.shape);
        Converted {
            config,
            notes: self.notes,
            files: self.files,
        }
    }
}

/// Keep `new` in `slot`, or check it agrees with what another block set there: clusterdns
/// holds it once where CoreDNS holds it per block (`why`).
fn set_once<T: PartialEq + fmt::Debug>(
    slot: &mut Option<Set<T>>,
    new: Set<T>,
    directive: &str,
    why: &str,
) -> Result<(), CorefileError> {
    match slot {
        Some(prev) if prev.value != new.value => Err(new.unsupported(
            directive,
            None,
            format!(
                "it sets {:?} here but {:?} in block `{}` ({}); {why}",
                new.value, prev.value, prev.block, prev.at
            ),
        )),
        Some(_) => Ok(()),
        None => {
            *slot = Some(new);
            Ok(())
        }
    }
}
