//! The `forward` plugin: the default upstreams (`forward .` of the main block), stub domains
//! (a zone block's `forward . IPs`, or `forward ZONE IPs`), and each `forward`'s options: the
//! main block's are the `forward` section's; a zone block's that sets options (or forwards
//! over TLS) becomes a `forward.domains` entry with those options, one to one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{Converter, Ctx, Role, Set};
use crate::config::{self, Config, DomainForwardConfig, ForwardConfig, ForwardPolicy};
use crate::corefile::CorefileError;
use crate::corefile::zones::{Zone, parse_zone};
use crate::names::in_zone;

/// What `forward` lines say, across all blocks.
#[derive(Default)]
pub(super) struct Forwarding {
    /// `forward .` of a main block: the default upstreams.
    default: Option<Set<Upstreams>>,
    /// The default forward's options: the `forward` section's.
    opts: ForwardOpts,
    /// Stub zones' own options (a `forward.domains` entry each when any is set).
    stub_opts: BTreeMap<String, ForwardOpts>,
    stubs: BTreeMap<String, Set<Vec<String>>>,
    /// Zones of blocks that forward to a resolv.conf: plain forwarding if `.` forwards to the
    /// same file (a domain of its own, with no upstreams, when it has options).
    resolv_conf_zones: Vec<(String, Set<String>, ForwardOpts)>,
}

#[derive(Debug, Clone)]
enum Upstreams {
    ResolvConf(String),
    Addrs(Vec<String>),
}

/// The options of one `forward`, each with where it was set.
#[derive(Debug, Clone, Default)]
struct ForwardOpts {
    policy: Option<Set<ForwardPolicy>>,
    max_fails: Option<Set<u32>>,
    health_check: Option<Set<Duration>>,
    force_tcp: Option<Set<bool>>,
    prefer_udp: Option<Set<bool>>,
    max_concurrent: Option<Set<usize>>,
    expire: Option<Set<Duration>>,
    read_timeout: Option<Set<Duration>>,
    except: Option<Set<Vec<String>>>,
    tls_servername: Option<Set<String>>,
    tls_ca: Option<Set<PathBuf>>,
}

impl ForwardOpts {
    /// Whether any option is set.
    fn any(&self) -> bool {
        self.policy.is_some()
            || self.max_fails.is_some()
            || self.health_check.is_some()
            || self.force_tcp.is_some()
            || self.prefer_udp.is_some()
            || self.max_concurrent.is_some()
            || self.expire.is_some()
            || self.read_timeout.is_some()
            || self.except.is_some()
            || self.tls_servername.is_some()
            || self.tls_ca.is_some()
    }

    /// The options `other` sets replace these.
    fn override_with(&mut self, other: ForwardOpts) {
        fn take<T>(slot: &mut Option<Set<T>>, new: Option<Set<T>>) {
            if new.is_some() {
                *slot = new;
            }
        }
        take(&mut self.policy, other.policy);
        take(&mut self.max_fails, other.max_fails);
        take(&mut self.health_check, other.health_check);
        take(&mut self.force_tcp, other.force_tcp);
        take(&mut self.prefer_udp, other.prefer_udp);
        take(&mut self.max_concurrent, other.max_concurrent);
        take(&mut self.expire, other.expire);
        take(&mut self.read_timeout, other.read_timeout);
        take(&mut self.except, other.except);
        take(&mut self.tls_servername, other.tls_servername);
        take(&mut self.tls_ca, other.tls_ca);
    }
}

impl Converter {
    pub(super) fn forward(&mut self, ctx: &Ctx<'_>) -> Result<(), CorefileError> {
        let d = ctx.d;
        let [from, to @ ..] = d.args.as_slice() else {
            return Err(ctx.invalid(
                "needs FROM and at least one upstream (`forward . /etc/resolv.conf`)".into(),
            ));
        };
        if to.is_empty() {
            return Err(ctx.invalid("needs at least one upstream after FROM".into()));
        }
        let upstreams = upstreams(ctx, to)?;
        let opts = self.forward_options(ctx)?;

        // Where it applies: `.` in a main block is the default; anything else a stub domain.
        let zones: Vec<String> = match parse_zone(from) {
            Ok(Zone::Root) => match ctx.role {
                Role::Main => Vec::new(),
                Role::Zone => ctx.keys.iter().map(|k| k.zone.clone()).collect(),
            },
            Ok(Zone::Name(z)) => vec![z],
            Err(e) => return Err(ctx.invalid(format!("FROM: {e}"))),
        };
        let block = ctx.block;
        if zones.is_empty() {
            if let Some(prev) = &self.forwarding.default {
                return Err(ctx.unsupported(format!(
                    "a second `forward .` (the first is in `{}` at {}); clusterdns has one default upstream list",
                    prev.block, prev.at
                )));
            }
            self.forwarding.default = Some(Set::new(upstreams, &d.at, block));
            // The default forward's options are the config's; they win over any stub block's.
            self.forwarding.opts.override_with(opts);
            return Ok(());
        }
        for z in zones {
            match &upstreams {
                Upstreams::Addrs(a) => {
                    if let Some(prev) = self.forwarding.stubs.get(&z) {
                        return Err(ctx.unsupported(format!(
                            "`{z}` is already forwarded in `{}` ({})",
                            prev.block, prev.at
                        )));
                    }
                    let set = Set::new(a.clone(), &d.at, block);
                    self.forwarding.stubs.insert(z.clone(), set);
                    self.forwarding.stub_opts.insert(z, opts.clone());
                }
                Upstreams::ResolvConf(f) => {
                    let set = Set::new(f.clone(), &d.at, block);
                    self.forwarding
                        .resolv_conf_zones
                        .push((z, set, opts.clone()));
                }
            }
        }
        Ok(())
    }

    fn forward_options(&mut self, ctx: &Ctx<'_>) -> Result<ForwardOpts, CorefileError> {
        let mut opts = ForwardOpts::default();
        for o in ctx.d.options() {
            match o.name.as_str() {
                "force_tcp" => {
                    ctx.opt_no_args(o)?;
                    opts.force_tcp = Some(Set::new(true, &o.at, ctx.block));
                }
                "prefer_udp" => {
                    ctx.opt_no_args(o)?;
                    opts.prefer_udp = Some(Set::new(true, &o.at, ctx.block));
                }
                "policy" => {
                    let v = ctx.one_arg(o)?;
                    let p = match v.as_str() {
                        "random" => ForwardPolicy::Random,
                        "round_robin" => ForwardPolicy::RoundRobin,
                        "sequential" => ForwardPolicy::Sequential,
                        _ => {
                            return Err(ctx.invalid_opt(
                                o,
                                format!("{v:?} is not random, round_robin or sequential"),
                            ));
                        }
                    };
                    opts.policy = Some(Set::new(p, &o.at, ctx.block));
                }
                "max_fails" => {
                    let v = ctx.one_arg(o)?;
                    let n = ctx.number(o, v, 0..=u32::MAX, "a number")?;
                    opts.max_fails = Some(Set::new(n, &o.at, ctx.block));
                }
                "health_check" => {
                    let Some(v) = o.args.first() else {
                        return Err(ctx.invalid_opt(o, "needs an interval, e.g. 0.5s".into()));
                    };
                    let dur = ctx.duration(o, v)?;
                    if o.args.len() > 1 {
                        self.note(
                            &o.at,
                            ctx.block,
                            "forward health_check",
                            &format!(
                                "`{}` dropped: clusterdns probes upstreams its own way",
                                o.args[1..].join(" ")
                            ),
                        );
                    }
                    opts.health_check = Some(Set::new(dur, &o.at, ctx.block));
                }
                "max_concurrent" => {
                    let v = ctx.one_arg(o)?;
                    let n = ctx.number(o, v, 1..=usize::MAX, "a number above 0")?;
                    opts.max_concurrent = Some(Set::new(n, &o.at, ctx.block));
                }
                "expire" => {
                    let v = ctx.one_arg(o)?;
                    let dur = ctx.duration(o, v)?;
                    opts.expire = Some(Set::new(dur, &o.at, ctx.block));
                }
                "read_timeout" => {
                    let v = ctx.one_arg(o)?;
                    let dur = ctx.duration(o, v)?;
                    if dur.is_zero() {
                        return Err(ctx.invalid_opt(o, "must be above zero".into()));
                    }
                    opts.read_timeout = Some(Set::new(dur, &o.at, ctx.block));
                }
                "failfast_all_unhealthy_upstreams" => {
                    self.note(&o.at, ctx.block, "forward failfast_all_unhealthy_upstreams", "dropped: when every upstream is down clusterdns still tries one (as CoreDNS does without this option)");
                }
                "max_age" => {
                    self.note(
                        &o.at,
                        ctx.block,
                        "forward max_age",
                        "dropped: clusterdns manages upstream TCP connections itself",
                    );
                }
                "except" => {
                    if o.args.is_empty() {
                        return Err(ctx.invalid_opt(o, "needs at least one domain".into()));
                    }
                    let mut names = Vec::new();
                    for a in &o.args {
                        match parse_zone(a) {
                            Ok(Zone::Name(z)) => names.push(z),
                            Ok(Zone::Root) => {
                                return Err(ctx.invalid_opt(
                                    o,
                                    "`.` would except every name: remove the forward instead"
                                        .into(),
                                ));
                            }
                            Err(e) => return Err(ctx.invalid_opt(o, format!("{a:?}: {e}"))),
                        }
                    }
                    opts.except = Some(Set::new(names, &o.at, ctx.block));
                }
                "tls_servername" => {
                    let v = ctx.one_arg(o)?;
                    crate::names::parse_domain(v)
                        .map_err(|e| ctx.invalid_opt(o, format!("{v:?}: {e}")))?;
                    opts.tls_servername = Some(Set::new(v.clone(), &o.at, ctx.block));
                }
                // `tls` (system CAs) or `tls CA`; a client certificate (`tls CERT KEY [CA]`) is
                // not offered by clusterdns.
                "tls" => match o.args.as_slice() {
                    [] => {}
                    [ca] => opts.tls_ca = Some(Set::new(PathBuf::from(ca), &o.at, ctx.block)),
                    _ => {
                        return Err(ctx.unsupported_opt(o, "a client certificate (CERT KEY) for upstreams is not supported by clusterdns; `tls` or `tls CA` is".into()));
                    }
                },
                "next" => {
                    return Err(ctx.unsupported_opt(o, "it passes answers with some rcodes on to the next plugin; clusterdns returns the upstream's answer".into()));
                }
                _ => return Err(ctx.unknown_option(o)),
            }
        }
        if opts.force_tcp.is_some() && opts.prefer_udp.is_some() {
            return Err(
                ctx.invalid("force_tcp and prefer_udp together: CoreDNS refuses this too".into())
            );
        }
        Ok(opts)
    }

    /// Once every block is read: stub domains against the cluster zone and the default
    /// forward, and stub blocks' options lifted to the one forward section.
    pub(super) fn finish_forwarding(&mut self) -> Result<(), CorefileError> {
        // Zones sent to a resolv.conf: plain forwarding if `.` forwards to the same file.
        for (zone, set, opts) in std::mem::take(&mut self.forwarding.resolv_conf_zones) {
            match self.forwarding.default.as_ref().map(|f| &f.value) {
                Some(Upstreams::ResolvConf(main)) if *main == set.value && opts.any() => {
                    // Its own options over the same nameservers: a domain with no upstreams.
                    self.forwarding
                        .stubs
                        .insert(zone.clone(), Set::new(Vec::new(), &set.at, &set.block));
                    self.forwarding.stub_opts.insert(zone, opts);
                }
                Some(Upstreams::ResolvConf(main)) if *main == set.value => {
                    self.note(&set.at, &set.block, "forward", &format!(
                        "`{zone}` goes to the nameservers of {} like every other name: no stub domain needed",
                        set.value
                    ));
                }
                _ => {
                    return Err(set.unsupported("forward", None, format!(
                        "it sends `{zone}` to the nameservers of {} while other names go elsewhere; clusterdns stub domains take addresses: list the nameservers' addresses instead",
                        set.value
                    )));
                }
            }
        }
        if let Some(k) = &self.kube {
            let cluster = &k.cluster;
            for (zone, set) in &self.forwarding.stubs {
                if zone == &cluster.zone {
                    return Err(set.unsupported("forward", None, format!(
                        "`{zone}` is the cluster zone, which clusterdns answers itself from the cluster"
                    )));
                }
                if in_zone(zone, &cluster.zone) {
                    self.notes.push(format!(
                        "{} (`{}`) forward: `{zone}` is inside the cluster zone: its names are forwarded, not answered from the cluster, as in CoreDNS (the more specific server block wins) and kube-dns's stubDomains",
                        set.at, set.block
                    ));
                }
                if cluster
                    .reverse_zones
                    .iter()
                    .any(|r| in_zone(zone, r) || in_zone(r, zone))
                {
                    self.notes.push(format!(
                        "{} (`{}`) forward: `{zone}` overlaps the cluster's reverse zones; check which answers PTR queries for cluster IPs in clusterdns (in CoreDNS the more specific server block wins)",
                        set.at, set.block
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether names outside every zone are forwarded (a `forward .` in a main block).
    pub(super) fn forwarding_on(&self) -> bool {
        self.forwarding.default.is_some()
    }

    /// `forward`: the default upstreams, the stub domains and the options.
    pub(super) fn write_forward(&mut self, cfg: &mut Config) {
        let fw = &self.forwarding;
        let f = &mut cfg.forward;
        match fw.default.as_ref().map(|s| &s.value) {
            Some(Upstreams::ResolvConf(path)) => {
                f.enabled = true;
                f.upstreams = Vec::new();
                f.resolv_conf = path.into();
            }
            Some(Upstreams::Addrs(addrs)) => {
                f.enabled = true;
                f.upstreams = addrs.clone();
            }
            None => {
                f.enabled = false;
                let why = if self.has_root {
                    "the `.` block has no `forward`"
                } else {
                    "there is no `.` server block"
                };
                self.notes.push(format!(
                    "forward: {why}, so names outside the cluster and stub zones are not forwarded (forward.enabled: false): clusterdns answers them REFUSED{}",
                    if self.has_root { " where CoreDNS answered SERVFAIL" } else { "" }
                ));
            }
        }
        // A zone block's forward with options of its own (or over TLS) is a domain of its own;
        // one with none a plain stub domain (kube-dns's form).
        for (zone, ups) in &fw.stubs {
            let own = fw.stub_opts.get(zone).cloned().unwrap_or_default();
            let tls = ups.value.iter().any(|u| u.starts_with("tls://"));
            if !own.any() && !tls && !ups.value.is_empty() {
                f.stub_domains.insert(zone.clone(), ups.value.clone());
                continue;
            }
            f.domains.insert(
                zone.clone(),
                DomainForwardConfig {
                    upstreams: ups.value.clone(),
                    except: own.except.as_ref().map(|s| s.value.clone()),
                    policy: v(&own.policy),
                    force_tcp: own.force_tcp.as_ref().map(|_| true),
                    prefer_udp: own.prefer_udp.as_ref().map(|_| true),
                    max_concurrent: v(&own.max_concurrent),
                    health_check: v(&own.health_check),
                    max_fails: v(&own.max_fails),
                    expire: v(&own.expire),
                    timeout: v(&own.read_timeout),
                    tls_servername: own.tls_servername.as_ref().map(|s| s.value.clone()),
                    tls_ca: own.tls_ca.as_ref().map(|s| s.value.clone()),
                    cache: None,
                },
            );
        }
        // CoreDNS's forward defaults are clusterdns's (a test holds them so): an option the
        // Corefile does not set keeps the config's default.
        let opts = &fw.opts;
        if let Some(p) = &opts.policy {
            f.policy = p.value;
        }
        if let Some(n) = &opts.max_fails {
            f.max_fails = n.value;
        }
        if let Some(h) = &opts.health_check {
            f.health_check = h.value;
        }
        f.force_tcp = opts.force_tcp.is_some();
        f.prefer_udp = opts.prefer_udp.is_some();
        if let Some(e) = &opts.expire {
            f.expire = e.value;
        }
        if let Some(t) = &opts.read_timeout {
            f.timeout = t.value;
        }
        if let Some(e) = &opts.except {
            f.except = e.value.clone();
        }
        f.tls_servername = opts.tls_servername.as_ref().map(|s| s.value.clone());
        f.tls_ca = opts.tls_ca.as_ref().map(|s| s.value.clone());
        match &opts.max_concurrent {
            Some(m) => f.max_concurrent = m.value,
            None if fw.default.is_some() || !fw.stubs.is_empty() => {
                self.notes.push(format!(
                    "forward: CoreDNS's forward has no concurrency bound without `max_concurrent`; clusterdns needs one: forward.max_concurrent: {} (kubeadm's value)",
                    ForwardConfig::default().max_concurrent
                ));
            }
            None => {}
        }
    }
}

/// The upstreams of one `forward`: IP addresses, or one resolv.conf.
fn upstreams(ctx: &Ctx<'_>, to: &[String]) -> Result<Upstreams, CorefileError> {
    let mut files = Vec::new();
    let mut addrs = Vec::new();
    for t in to {
        let lower = t.to_ascii_lowercase();
        if ["https://", "grpc://", "quic://"]
            .iter()
            .any(|scheme| lower.starts_with(scheme))
        {
            return Err(ctx.unsupported(format!("upstream {t:?} is reached over HTTPS/gRPC/QUIC; clusterdns forwards over plain DNS (UDP/TCP) and DNS over TLS (tls://) only")));
        }
        if lower.starts_with("tls://") {
            if t.contains('%') {
                return Err(ctx.unsupported(format!("upstream {t:?} names its TLS server after `%`; clusterdns takes one `tls_servername` per forward: use that")));
            }
            let target = config::parse_upstream_target(t).map_err(|e| ctx.invalid(e))?;
            addrs.push(if target.addr.port() == 853 {
                format!("tls://{}", target.addr.ip())
            } else {
                format!("tls://{}", target.addr)
            });
            continue;
        }
        if t.starts_with('/') || t.starts_with('.') {
            files.push(t.clone());
            continue;
        }
        let addr = config::parse_upstream(t).map_err(|e| {
            ctx.invalid(format!(
                "{e}; upstreams are IP addresses (with an optional port) or a resolv.conf path"
            ))
        })?;
        addrs.push(format_upstream(addr));
    }
    match (files.as_slice(), addrs.is_empty()) {
        ([file], true) => Ok(Upstreams::ResolvConf(file.clone())),
        ([], false) => Ok(Upstreams::Addrs(addrs)),
        _ => Err(ctx.unsupported("it mixes resolv.conf files and addresses (or names several files); clusterdns forwards to either one resolv.conf's nameservers or a list of addresses: list the addresses".into())),
    }
}

/// The value of a set option.
fn v<T: Copy>(o: &Option<Set<T>>) -> Option<T> {
    o.as_ref().map(|s| s.value)
}

/// An upstream as the config writes it: the port only when it is not 53.
fn format_upstream(a: SocketAddr) -> String {
    if a.port() == 53 {
        a.ip().to_string()
    } else {
        a.to_string()
    }
}
