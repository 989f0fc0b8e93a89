//! The `transfer` plugin (`transfer [ZONE...] { to ADDRESS... }`): zone transfers out
//! (`transfer`). CoreDNS lets every `to` address transfer the zones and sends each of them a
//! NOTIFY (all but `*`, which allows everyone and notifies no one); clusterdns's `transfer.allow`
//! and `transfer.notify` hold the same. Only zones clusterdns serves itself can be transferred:
//! the cluster zone, and reverse zones of `cluster.reverse_zones` narrower than `in-addr.arpa`
//! and `ip6.arpa`.

use std::net::{IpAddr, SocketAddr};

use super::{Converter, Ctx, Role};
use crate::config::Config;
use crate::corefile::zones::{BadZone, Zone, parse_zone};
use crate::corefile::{CorefileError, Pos};
use crate::names::in_zone;

/// One `transfer` directive.
pub(super) struct TransferLine {
    /// Its zones (the server block's when it names none).
    zones: Vec<Zone>,
    /// `to *`.
    anyone: bool,
    /// `to` addresses: allowed to transfer, and notified (port 53 unless given).
    to: Vec<SocketAddr>,
    at: Pos,
    block: String,
}

impl Converter {
    pub(super) fn transfer(&mut self, ctx: &Ctx<'_>) -> Result<(), CorefileError> {
        let d = ctx.d;
        if ctx.role == Role::Zone {
            self.note(&d.at, ctx.block, "transfer", "dropped: this block forwards its zones, and clusterdns transfers only zones it serves itself (the cluster zone and its reverse zones)");
            return Ok(());
        }
        let names: Vec<String> = if d.args.is_empty() {
            ctx.keys.iter().map(|k| k.zone.clone()).collect()
        } else {
            d.args.clone()
        };
        let mut zones = Vec::new();
        for z in &names {
            match parse_zone(z) {
                Ok(z) => zones.push(z),
                Err(BadZone::Network) => {
                    return Err(ctx.unsupported(format!("{z:?}: {}", BadZone::Network)));
                }
                Err(BadZone::Name(e)) => return Err(ctx.invalid(e)),
            }
        }
        let mut line = TransferLine {
            zones,
            anyone: false,
            to: Vec::new(),
            at: d.at.clone(),
            block: ctx.block.to_string(),
        };
        for o in d.options() {
            if o.name != "to" {
                return Err(ctx.unknown_option(o));
            }
            if o.args.is_empty() {
                return Err(ctx.invalid_opt(o, "`to` needs at least one address or `*`".into()));
            }
            for a in &o.args {
                if a == "*" {
                    line.anyone = true;
                    continue;
                }
                let addr = a
                    .parse::<SocketAddr>()
                    .or_else(|_| a.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| {
                        ctx.unsupported_opt(
                            o,
                            format!("{a:?} is not an address (IP or IP:PORT); clusterdns takes secondaries by address"),
                        )
                    })?;
                line.to.push(addr);
            }
        }
        if !line.anyone && line.to.is_empty() {
            return Err(
                ctx.invalid("`to` is required (CoreDNS refuses a `transfer` without it)".into())
            );
        }
        self.transfers.push(line);
        Ok(())
    }

    /// `transfer`: the zones clusterdns serves among those the Corefile offers, who may
    /// transfer them, and who is notified. Written after `cluster` (it names its zones).
    pub(super) fn write_transfer(&mut self, cfg: &mut Config) {
        let lines = std::mem::take(&mut self.transfers);
        if lines.is_empty() {
            return;
        }
        if !cfg.cluster.enabled {
            for l in &lines {
                self.note(
                    &l.at,
                    &l.block,
                    "transfer",
                    "dropped: without `kubernetes` there is no cluster zone to transfer",
                );
            }
            return;
        }
        let t = &mut cfg.transfer;
        let mut zones: Vec<String> = Vec::new();
        let add = |z: &str, zones: &mut Vec<String>| {
            if !zones.iter().any(|o| o == z) {
                zones.push(z.to_string());
            }
        };
        for l in &lines {
            for z in &l.zones {
                let name = match z {
                    Zone::Root => ".".to_string(),
                    Zone::Name(n) => n.clone(),
                };
                let covers_cluster = match z {
                    Zone::Root => true,
                    Zone::Name(n) => in_zone(&cfg.cluster.zone, n),
                };
                if covers_cluster {
                    add(&cfg.cluster.zone, &mut zones);
                } else if name == "in-addr.arpa" || name == "ip6.arpa" {
                    self.notes.push(format!("{} (`{}`) transfer {name}: not offered: a secondary holding all of {name} would answer NXDOMAIN for every address outside the cluster; add the service and pod ranges' reverse zones (e.g. 10.in-addr.arpa) to cluster.reverse_zones, before {name}, and to transfer.zones", l.at, l.block));
                } else if cfg.cluster.reverse_zones.contains(&name) {
                    add(&name, &mut zones);
                } else {
                    self.notes.push(format!("{} (`{}`) transfer {name}: not offered: clusterdns serves no such zone itself", l.at, l.block));
                }
            }
            if l.anyone {
                for p in ["0.0.0.0/0", "::/0"] {
                    if !t.allow.iter().any(|a| a == p) {
                        t.allow.push(p.into());
                    }
                }
                self.notes.push(format!("{} (`{}`) transfer to *: every client may transfer the cluster zone (the list of every service): restrict transfer.allow to the secondaries, and set transfer.tsig", l.at, l.block));
            }
            for a in &l.to {
                let ip = a.ip().to_string();
                if !t.allow.contains(&ip) {
                    t.allow.push(ip);
                }
                let n = a.to_string();
                if !t.notify.contains(&n) {
                    t.notify.push(n);
                }
            }
        }
        if zones.is_empty() {
            // Nothing the Corefile offers is served here: transfers stay off.
            t.allow.clear();
            t.notify.clear();
        } else if zones != [cfg.cluster.zone.clone()] {
            // (An empty `transfer.zones` is the cluster zone alone.)
            t.zones = zones;
        }
    }
}
