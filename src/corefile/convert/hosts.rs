//! The `hosts` plugin: one hosts file, consulted after the cluster zone and before forwarding;
//! inline entries become a file of the ConfigMap.

use std::net::IpAddr;

use super::{Converter, Ctx, Role, Set};
use crate::config::{Config, HostsConfig, format_duration};
use crate::corefile::{CONFIG_DIR, CorefileError};
use crate::names::parse_domain;

/// The file CoreDNS's `hosts` reads when it names none.
const COREDNS_HOSTS_FILE: &str = "/etc/hosts";

impl Converter {
    pub(super) fn hosts(&mut self, ctx: &Ctx<'_>) -> Result<(), CorefileError> {
        let d = ctx.d;
        if ctx.role == Role::Zone {
            return Err(ctx.unsupported("a hosts file for one zone's block: clusterdns has one hosts file, consulted for every name before forwarding; move it to the `.` block".into()));
        }
        if let Some(prev) = &self.hosts {
            return Err(ctx.unsupported(format!(
                "a second `hosts` (the first is at {}); clusterdns reads one hosts file",
                prev.at
            )));
        }
        let file_arg = d.args.first().cloned();
        if d.args.len() > 1 {
            let zones = d.args[1..].join(" ");
            if !d.args[1..].iter().all(|z| z == ".") {
                self.note(&d.at, ctx.block, "hosts", &format!("answered only names in {zones} in CoreDNS; clusterdns consults the hosts file for every name it forwards"));
            }
        }
        // CoreDNS's TTL (3600) and reload interval (5s) are clusterdns's defaults; its hosts
        // plugin answers NXDOMAIN for missing names unless it falls through.
        let mut file = file_arg
            .clone()
            .unwrap_or_else(|| COREDNS_HOSTS_FILE.into());
        let mut h = HostsConfig {
            fallthrough: false,
            ..HostsConfig::default()
        };
        let mut inline = Vec::new();
        for o in d.options() {
            match o.name.as_str() {
                "ttl" => {
                    let v = ctx.one_arg(o)?;
                    h.ttl = ctx.number(o, v, 0..=65535, "a TTL in seconds")?;
                }
                "reload" => {
                    let v = ctx.one_arg(o)?;
                    h.reload = ctx.duration(o, v)?;
                    if h.reload.is_zero() {
                        h.reload = HostsConfig::default().reload;
                        let text = format!(
                            "turns reloading off in CoreDNS; clusterdns checks the file every {} instead (a ConfigMap file only changes when the ConfigMap does)",
                            format_duration(h.reload)
                        );
                        self.note(&o.at, ctx.block, "hosts reload 0", &text);
                    }
                }
                "fallthrough" => {
                    h.fallthrough = true;
                    if !o.args.is_empty() && !o.args.iter().all(|z| z == ".") {
                        self.note(&o.at, ctx.block, "hosts fallthrough", &format!("fell through only for {} in CoreDNS; clusterdns falls through for every name", o.args.join(" ")));
                    }
                }
                "no_reverse" => {
                    self.note(&o.at, ctx.block, "hosts no_reverse", "dropped: clusterdns decides itself whether the hosts file answers PTR queries");
                }
                name if name.parse::<IpAddr>().is_ok() => {
                    if o.args.is_empty() {
                        return Err(
                            ctx.invalid_opt(o, "a hosts entry needs at least one name".into())
                        );
                    }
                    for n in &o.args {
                        parse_domain(n).map_err(|e| ctx.invalid_opt(o, e))?;
                    }
                    inline.push(format!("{} {}", o.name, o.args.join(" ")));
                }
                _ => return Err(ctx.unknown_option(o)),
            }
        }
        if !inline.is_empty() {
            if let Some(f) = &file_arg
                && f != COREDNS_HOSTS_FILE
            {
                return Err(ctx.unsupported(format!(
                    "it has inline entries as well as the file {f}; clusterdns reads one hosts file: put the inline entries into {f}"
                )));
            }
            let mut content = String::from(
                "# hosts entries converted from the Corefile's inline `hosts { ... }` block\n",
            );
            for l in &inline {
                content.push_str(l);
                content.push('\n');
            }
            self.files.insert("hosts".into(), content);
            file = format!("{CONFIG_DIR}/hosts");
            self.note(&d.at, ctx.block, "hosts", &format!(
                "the inline entries become the file {CONFIG_DIR}/hosts: add it to the clusterdns ConfigMap as key `hosts` (`convert-corefile --files-dir DIR` writes it, else it is printed after these notes){}",
                if file_arg.is_none() { "; the CoreDNS pod's own /etc/hosts (localhost, its pod name) is no longer consulted" } else { "" }
            ));
        } else if file == COREDNS_HOSTS_FILE {
            self.note(&d.at, ctx.block, "hosts", "reads the pod's own /etc/hosts, which in a pod holds only localhost and the pod's name; clusterdns reads the same path in its own pod");
        } else if let Some((key, content)) = self.mounted_file(&file) {
            self.note(&d.at, ctx.block, "hosts", &format!(
                "{file} is the CoreDNS ConfigMap's key `{key}`: it becomes {CONFIG_DIR}/{key}, a key of the clusterdns ConfigMap (`convert-corefile --files-dir DIR` writes it); keep it up to date there as its owner (k3s's NodeHosts: the k3s server) does in CoreDNS's"
            ));
            self.files.insert(key.clone(), content);
            file = format!("{CONFIG_DIR}/{key}");
        } else {
            self.note(&d.at, ctx.block, "hosts", &format!("{file} is a path in the CoreDNS pod: make the same file available in the clusterdns pod (e.g. as a key of its ConfigMap, then use {CONFIG_DIR}/<key>)"));
        }
        if !h.fallthrough {
            self.note(&d.at, ctx.block, "hosts", "no `fallthrough`: in CoreDNS names missing from the file then fail (SERVFAIL) instead of being forwarded; clusterdns gets hosts.fallthrough: false, check this is what you want");
        }
        self.note(&d.at, ctx.block, "hosts", "CoreDNS consults hosts before the cluster zone; clusterdns consults it after the cluster zone and before forwarding, so entries inside the cluster zone are not used");
        h.file = Some(file.into());
        self.hosts = Some(Set::new(h, &d.at, ctx.block));
        Ok(())
    }

    /// A file of the CoreDNS ConfigMap (mounted at `/etc/coredns`) that the conversion was
    /// given ([`crate::corefile::Options::mounted`]) or that sits beside the Corefile.
    fn mounted_file(&self, path: &str) -> Option<(String, String)> {
        let key = path.strip_prefix("/etc/coredns/")?;
        if key.is_empty() || key.contains('/') {
            return None;
        }
        if let Some(content) = self.mounted.get(key) {
            return Some((key.to_string(), content.clone()));
        }
        let beside = self.base_dir.as_ref()?.join(key);
        let content = std::fs::read_to_string(beside).ok()?;
        Some((key.to_string(), content))
    }

    /// `hosts`: only if the Corefile has one.
    pub(super) fn write_hosts(&mut self, cfg: &mut Config) {
        cfg.hosts = self.hosts.as_ref().map(|h| h.value.clone());
    }
}
