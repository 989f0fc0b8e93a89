//! The `cache` plugin: the `.` block's `cache` is the shared cache in front of forwarding (the
//! cluster zone is answered from memory and never cached); a zone block's `cache` that differs
//! from it becomes that forwarded domain's own (`forward.domains.<zone>.cache`), as each CoreDNS
//! server block has its own cache.

use std::time::Duration;

use super::{Converter, Ctx, Role, Set};
use crate::config::{CacheConfig, Config, StaleRefresh};
use crate::corefile::{CorefileError, Pos};
use crate::names::in_zone;

/// CoreDNS's capacity of each of its two caches (success and denial), in entries.
const COREDNS_CAPACITY: usize = 9984;

/// What `cache` lines say.
#[derive(Default)]
pub(super) struct Caching {
    cache: Option<Set<CacheConfig>>,
    /// `cache { disable ... }` lines, judged once the cluster zone is known.
    disable: Vec<(Pos, String, Vec<String>)>,
    /// Zone blocks' caches, with the block's zones: placed once forwarding is known.
    zone_caches: Vec<(Vec<String>, Set<CacheConfig>)>,
}

impl Converter {
    pub(super) fn cache(&mut self, ctx: &Ctx<'_>) -> Result<(), CorefileError> {
        let d = ctx.d;
        // CoreDNS's cache defaults: TTL caps 3600 (success) and 1800 (denial) and floors 5 are
        // clusterdns's too; CoreDNS neither prefetches nor serves stale entries unless told.
        let mut c = CacheConfig {
            enabled: true,
            prefetch: 0,
            serve_stale: Duration::ZERO,
            ..CacheConfig::default()
        };
        let (mut success_cap, mut denial_cap) = (COREDNS_CAPACITY, COREDNS_CAPACITY);
        let mut args = d.args.iter();
        if let Some(first) = d.args.first()
            && let Ok(ttl) = first.parse::<u32>()
        {
            args.next();
            if ttl == 0 {
                return Err(
                    ctx.invalid("a TTL of 0 would cache nothing; remove `cache` instead".into())
                );
            }
            c.max_ttl = ttl;
            c.max_negative_ttl = ttl;
        }
        let zones: Vec<String> = args.cloned().collect();
        for o in d.options() {
            match o.name.as_str() {
                "success" | "denial" => {
                    let nums: Result<Vec<u32>, _> =
                        o.args.iter().map(|a| a.parse::<u32>()).collect();
                    let nums = nums.map_err(|_| {
                        ctx.invalid_opt(o, "takes CAPACITY [TTL [MINTTL]] as numbers".into())
                    })?;
                    let (cap, max, min) = match nums.as_slice() {
                        [cap] => (*cap, None, None),
                        [cap, ttl] => (*cap, Some(*ttl), None),
                        [cap, ttl, min] => (*cap, Some(*ttl), Some(*min)),
                        _ => return Err(ctx.invalid_opt(o, "takes CAPACITY [TTL [MINTTL]]".into())),
                    };
                    let (capacity, max_ttl, min_ttl) = if o.name == "success" {
                        (&mut success_cap, &mut c.max_ttl, &mut c.min_ttl)
                    } else {
                        (
                            &mut denial_cap,
                            &mut c.max_negative_ttl,
                            &mut c.min_negative_ttl,
                        )
                    };
                    *capacity = cap as usize;
                    if let Some(m) = max {
                        *max_ttl = m;
                    }
                    if let Some(m) = min {
                        *min_ttl = m;
                    }
                }
                "prefetch" => {
                    let Some(n) = o.args.first() else {
                        return Err(ctx.invalid_opt(o, "needs AMOUNT".into()));
                    };
                    c.prefetch = ctx.number(o, n, 1..=u32::MAX, "a number above 0")?;
                    if o.args.len() > 1 {
                        self.note(&o.at, ctx.block, "cache prefetch", &format!("`{}` dropped: clusterdns refreshes an entry asked {} times within its TTL shortly before it expires", o.args[1..].join(" "), c.prefetch));
                    }
                }
                // serve_stale [DURATION] [immediate [RESPONSE_TTL [RECHECK]] |
                // verify [VERIFY_TIMEOUT [RESPONSE_TTL [RECHECK]]]]
                "serve_stale" => {
                    c.serve_stale = match o.args.first() {
                        Some(v) => ctx.duration(o, v)?,
                        // CoreDNS's default: an hour.
                        None => Duration::from_secs(3600),
                    };
                    // CoreDNS's default mode is `immediate`.
                    c.serve_stale_refresh = StaleRefresh::Immediate;
                    let ttl_arg = match o.args.get(1).map(String::as_str) {
                        None => None,
                        Some("immediate") => o.args.get(2),
                        Some("verify") => {
                            c.serve_stale_refresh = StaleRefresh::Verify;
                            if let Some(t) = o.args.get(2)
                                && !ctx.duration(o, t)?.is_zero()
                            {
                                self.note(&o.at, ctx.block, "cache serve_stale verify", &format!("VERIFY_TIMEOUT {t} dropped: clusterdns waits for the upstreams' own timeout (CoreDNS's `verify` with 0)"));
                            }
                            o.args.get(3)
                        }
                        Some(m) => {
                            return Err(
                                ctx.invalid_opt(o, format!("{m:?} is not immediate or verify"))
                            );
                        }
                    };
                    if let Some(t) = ttl_arg {
                        c.serve_stale_ttl =
                            ctx.duration(o, t)?.as_secs().min(u64::from(u32::MAX)) as u32;
                    }
                }
                "disable" => {
                    let [kind, ..] = o.args.as_slice() else {
                        return Err(ctx.invalid_opt(o, "needs success or denial".into()));
                    };
                    if kind != "success" && kind != "denial" {
                        return Err(
                            ctx.invalid_opt(o, format!("{kind:?} is not success or denial"))
                        );
                    }
                    self.caching.disable.push((
                        o.at.clone(),
                        ctx.block.to_string(),
                        o.args.clone(),
                    ));
                }
                "keepttl" => c.keepttl = true,
                "servfail" => {
                    let [v] = o.args.as_slice() else {
                        return Err(ctx.invalid_opt(o, "takes DURATION".into()));
                    };
                    c.servfail_ttl = ctx.duration(o, v)?;
                    if c.servfail_ttl > Duration::from_secs(300) {
                        return Err(ctx.invalid_opt(o, "may not be greater than 5 minutes".into()));
                    }
                }
                _ => return Err(ctx.unknown_option(o)),
            }
        }
        c.min_ttl = c.min_ttl.min(c.max_ttl);
        c.min_negative_ttl = c.min_negative_ttl.min(c.max_negative_ttl);
        c.max_entries = success_cap + denial_cap;
        c.success_capacity = Some(success_cap);
        c.denial_capacity = Some(denial_cap);

        let cluster_only_block = ctx.role == Role::Main
            && !ctx.keys.iter().any(|k| k.is_root())
            && ctx.keys.iter().all(|k| {
                self.kube.as_ref().is_some_and(|kube| {
                    k.zone == kube.cluster.zone || kube.cluster.reverse_zones.contains(&k.zone)
                })
            });
        if cluster_only_block {
            self.note(&d.at, ctx.block, "cache", "dropped: clusterdns answers the cluster zone from memory and caches only forwarded names (the `.` block's cache)");
            return Ok(());
        }
        if ctx.role == Role::Zone {
            let zones = ctx.keys.iter().map(|k| k.zone.clone()).collect();
            self.caching
                .zone_caches
                .push((zones, Set::new(c, &d.at, ctx.block)));
            return Ok(());
        }
        if !zones.is_empty() && !zones.iter().any(|z| z == ".") {
            self.note(
                &d.at,
                ctx.block,
                "cache",
                &format!(
                    "cached only {} in CoreDNS; clusterdns caches every forwarded name",
                    zones.join(", ")
                ),
            );
        }
        if let Some(prev) = &self.caching.cache {
            return Err(ctx.unsupported(format!(
                "a second cache (the first is in `{}` at {}); clusterdns has one cache",
                prev.block, prev.at
            )));
        }
        self.caching.cache = Some(Set::new(c, &d.at, ctx.block));
        Ok(())
    }

    /// `cache { disable success|denial ZONES }`: for the cluster zone that is what clusterdns
    /// does anyway (cluster answers are never cached); anything else is dropped with a note.
    pub(super) fn finish_caching(&mut self) {
        let cluster_zone = self.kube.as_ref().map(|k| k.cluster.zone.clone());
        for (at, block, args) in std::mem::take(&mut self.caching.disable) {
            let zones = &args[1..];
            let only_cluster = !zones.is_empty()
                && cluster_zone.as_ref().is_some_and(|cz| {
                    zones.iter().all(|z| {
                        let z = z.trim_end_matches('.').to_ascii_lowercase();
                        in_zone(&z, cz)
                    })
                });
            if !only_cluster {
                self.note(&at, &block, "cache disable", &format!(
                    "`disable {}` dropped: clusterdns caches every forwarded answer up to cache.max_ttl (it never caches the cluster zone, answered from memory)",
                    args.join(" ")
                ));
            }
        }
    }

    /// `cache`: without a `cache` in the `.` block, nothing is cached, as in CoreDNS.
    pub(super) fn write_cache(&mut self, cfg: &mut Config) {
        for (zones, set) in std::mem::take(&mut self.caching.zone_caches) {
            let same = self
                .caching
                .cache
                .as_ref()
                .is_some_and(|m| m.value == set.value);
            for zone in zones {
                let f = &mut cfg.forward;
                if same {
                    self.note(&set.at, &set.block, "cache", &format!("`{zone}` answers go through the shared cache (the same settings as the `.` block's)"));
                } else if let Some(d) = f.domains.get_mut(&zone) {
                    d.cache = Some(set.value.clone());
                } else if let Some(ups) = f.stub_domains.remove(&zone) {
                    f.domains.insert(
                        zone,
                        crate::config::DomainForwardConfig {
                            upstreams: ups,
                            cache: Some(set.value.clone()),
                            ..Default::default()
                        },
                    );
                } else {
                    self.note(&set.at, &set.block, "cache", &format!("dropped: `{zone}` is not forwarded, and clusterdns caches only forwarded names"));
                }
            }
        }
        match &self.caching.cache {
            Some(c) => cfg.cache = c.value.clone(),
            None => {
                cfg.cache.enabled = false;
                if self.forwarding_on() {
                    self.notes.push("cache: the Corefile has no `cache` in the `.` block, so forwarded answers are not cached (cache.enabled: false); clusterdns's own default would cache them".into());
                }
            }
        }
    }
}
