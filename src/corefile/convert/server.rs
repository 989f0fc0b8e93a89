//! The plugins that set up the server process rather than answer names: `bind` and the block's
//! port (the listen addresses), `bufsize`, `health`, `ready` and `prometheus` (process-wide
//! listeners, as in CoreDNS), `log`, `errors` and `loadbalance`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{Converter, Ctx, Role, Set};
use crate::config::{self, Config};
use crate::corefile::CorefileError;

/// The operational settings read from every block.
#[derive(Default)]
pub(super) struct Ops {
    metrics: Option<Set<String>>,
    health: Option<Set<String>>,
    ready: Option<Set<String>>,
    lameduck: Option<Duration>,
    querylog: bool,
    loadbalance: bool,
    max_udp_size: Option<u16>,
}

/// The addresses of one `bind` line.
pub(super) fn bind_addresses(ctx: &Ctx<'_>) -> Result<Vec<IpAddr>, CorefileError> {
    let d = ctx.d;
    if d.args.is_empty() {
        return Err(ctx.invalid("needs at least one address".into()));
    }
    if d.block.is_some() {
        return Err(ctx.unsupported(
            "`bind { except ... }` excludes addresses of an interface; clusterdns listens on the addresses it is given: list them".into(),
        ));
    }
    d.args
        .iter()
        .map(|a| {
            a.parse::<IpAddr>().map_err(|_| {
                ctx.unsupported(format!(
                    "{a:?} is not an IP address: clusterdns listens on addresses, not interface names; write the interface's address"
                ))
            })
        })
        .collect()
}

impl Converter {
    /// `prometheus`, `health` and `ready`: one listener each for the whole process.
    pub(super) fn listener(&mut self, ctx: &Ctx<'_>) -> Result<(), CorefileError> {
        let d = ctx.d;
        ctx.max_args(1)?;
        // CoreDNS's default addresses.
        let default_addr = match d.name.as_str() {
            "prometheus" => "localhost:9153",
            "health" => ":8080",
            _ => ":8181",
        };
        let addr = d.args.first().map(String::as_str).unwrap_or(default_addr);
        match d.name.as_str() {
            "prometheus" => ctx.no_block()?,
            "health" => {
                for o in d.options() {
                    match o.name.as_str() {
                        "lameduck" => {
                            let v = ctx.one_arg(o)?;
                            self.ops.lameduck = Some(ctx.duration(o, v)?);
                        }
                        _ => return Err(ctx.unknown_option(o)),
                    }
                }
            }
            _ => {
                if !d.options().is_empty() {
                    self.note(&d.at, ctx.block, "ready", "options of `ready` (e.g. `monitor until-ready|continuously`) are dropped: clusterdns's /ready turns 200 once the first sync is done");
                }
            }
        }
        let addr = addr.strip_prefix("http://").unwrap_or(addr).to_string();
        config::parse_http_listen(&addr).map_err(|e| {
            ctx.invalid(format!(
                "{e}; clusterdns listens on an IP address or on every address (`:PORT`)"
            ))
        })?;
        let slot = match d.name.as_str() {
            "prometheus" => &mut self.ops.metrics,
            "health" => &mut self.ops.health,
            _ => &mut self.ops.ready,
        };
        let kept = match slot {
            Some(prev) if prev.value != addr => Some(format!(
                "listens on {addr} here but on {} in `{}` ({}); clusterdns has one {} listener: it keeps {}",
                prev.value, prev.block, prev.at, d.name, prev.value
            )),
            Some(_) => None,
            None => {
                *slot = Some(Set::new(addr, &d.at, ctx.block));
                None
            }
        };
        if let Some(text) = kept {
            self.note(&d.at, ctx.block, &d.name, &text);
        }
        Ok(())
    }

    pub(super) fn errors(&mut self, ctx: &Ctx<'_>) {
        let d = ctx.d;
        if !d.args.is_empty() || d.block.is_some() {
            self.note(&d.at, ctx.block, "errors", "options (`consolidate`, `stacktrace`) are dropped; clusterdns logs errors at warn level, rate-limited by itself");
        }
    }

    pub(super) fn log(&mut self, ctx: &Ctx<'_>) {
        let d = ctx.d;
        if ctx.role == Role::Main {
            self.ops.querylog = true;
            if !d.args.is_empty() || d.block.is_some() {
                self.note(&d.at, ctx.block, "log", "names, formats and `class` filters are dropped: clusterdns's querylog logs every query (querylog.sample: 1.0) as a structured line");
            }
        } else {
            self.note(&d.at, ctx.block, "log", "logs only this zone's queries in CoreDNS; clusterdns's querylog is all or a sample of every query, so it stays off: set querylog.enabled: true to log everything");
        }
    }

    pub(super) fn loadbalance(&mut self, ctx: &Ctx<'_>) -> Result<(), CorefileError> {
        let d = ctx.d;
        if let Some(mode) = d.args.first()
            && mode != "round_robin"
        {
            return Err(ctx.unsupported(format!("`loadbalance {mode}` weighs answers from a weights file; clusterdns only rotates records (round_robin)")));
        }
        if ctx.role == Role::Main {
            self.ops.loadbalance = true;
        } else {
            self.note(&d.at, ctx.block, "loadbalance", "applies to this zone only in CoreDNS; clusterdns rotates the address records of every answer or none (cluster.loadbalance follows the `.` block)");
        }
        Ok(())
    }

    pub(super) fn bufsize(&mut self, ctx: &Ctx<'_>) -> Result<(), CorefileError> {
        let v = ctx.one_arg(ctx.d)?;
        let n = ctx.number(ctx.d, v, 512..=4096, "a size between 512 and 4096")?;
        self.ops.max_udp_size = Some(n);
        Ok(())
    }

    /// `listen`: the blocks' port on the `bind` addresses, or on every address of both
    /// families, as CoreDNS's `.:53` (`0.0.0.0:PORT` and `[::]:PORT`, one socket each).
    pub(super) fn write_listen(&mut self, cfg: &mut Config) {
        let port = self.port.as_ref().map(|p| p.value).unwrap_or(53);
        cfg.listen = match &self.binds {
            Some(b) => b
                .value
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect(),
            None => vec![
                SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port),
                SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port),
            ],
        };
    }

    /// `metrics`, `health`, `ready`, `querylog` and `server`: a listener the Corefile does not
    /// open stays off, as in CoreDNS.
    pub(super) fn write_ops(&mut self, cfg: &mut Config) {
        let ops = &self.ops;
        let value = |s: &Option<Set<String>>| s.as_ref().map(|s| s.value.clone());
        cfg.metrics.listen = value(&ops.metrics);
        cfg.health.listen = value(&ops.health);
        // CoreDNS's health has no lameduck unless told, and without health there is none.
        cfg.health.lameduck = match ops.health {
            Some(_) => ops.lameduck.unwrap_or(Duration::ZERO),
            None => Duration::ZERO,
        };
        cfg.ready.listen = value(&ops.ready);
        cfg.querylog.enabled = ops.querylog;
        // CoreDNS's `log` logs every query.
        cfg.querylog.sample = 1.0;
        if let Some(n) = ops.max_udp_size {
            cfg.server.max_udp_size = n;
        }
        for (what, key, set) in [
            ("prometheus", "metrics", ops.metrics.is_some()),
            ("health", "health", ops.health.is_some()),
            ("ready", "ready", ops.ready.is_some()),
        ] {
            if !set {
                self.notes.push(format!(
                    "{what}: not in the Corefile, so its endpoint is off ({key}.listen: null); the manifests' probes and scrape annotations expect it"
                ));
            }
        }
    }

    /// `cluster.loadbalance` follows the main block's `loadbalance`.
    pub(super) fn loadbalance_on(&self) -> bool {
        self.ops.loadbalance
    }
}
