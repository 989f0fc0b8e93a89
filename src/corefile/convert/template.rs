//! The `template` plugin, as far as it answers with an rcode and no records (AKS's stock
//! `internal.cloudapp.net` / `reddog.microsoft.com` templates): `templates` in the config.
//! Templates that synthesise records (`answer`, `additional`, `authority`) are refused.

use super::{Converter, Ctx, Role, Set};
use crate::config::{Config, TemplateConfig, template_qtype, template_rcode};
use crate::corefile::CorefileError;
use crate::corefile::zones::{BadZone, Zone, parse_zone};
use crate::names::in_zone;

impl Converter {
    pub(super) fn template(&mut self, ctx: &Ctx<'_>) -> Result<(), CorefileError> {
        let d = ctx.d;
        let (class, qtype) = match d.args.as_slice() {
            [c, t, ..] => (c.to_ascii_uppercase(), t.to_ascii_uppercase()),
            _ => {
                return Err(
                    ctx.invalid("needs a class and a type: `template CLASS TYPE [ZONE...]`".into())
                );
            }
        };
        if class != "ANY" && class != "IN" {
            return Err(ctx.unsupported(format!(
                "class {class}: clusterdns answers class IN (and ANY) only"
            )));
        }
        let qtype = match qtype.as_str() {
            "ANY" => None,
            t if template_qtype(t).is_some() => Some(t.to_string()),
            t => return Err(ctx.unsupported(format!("type {t}: templates here match A, AAAA, CNAME, PTR, SRV, TXT, MX, NS, SOA, SVCB, HTTPS or ANY"))),
        };
        // The zones: the arguments after the type, else the server block's own.
        let mut zones = Vec::new();
        let block_zones: Vec<&str> = ctx.keys.iter().map(|k| k.zone.as_str()).collect();
        let named: Vec<String> = if d.args.len() > 2 {
            d.args[2..].to_vec()
        } else {
            block_zones.iter().map(|z| z.to_string()).collect()
        };
        for z in &named {
            match parse_zone(z) {
                Ok(Zone::Name(z)) => {
                    if ctx.role == Role::Zone && !block_zones.iter().any(|b| in_zone(&z, b)) {
                        return Err(ctx.unsupported(format!("zone {z} is outside this server block's zones, so CoreDNS never asks this template for it")));
                    }
                    zones.push(z)
                }
                Ok(Zone::Root) => return Err(ctx.unsupported("a template for the root zone `.` answers every name the same way; clusterdns templates are for one zone each: name it".into())),
                Err(BadZone::Network) => return Err(ctx.unsupported(format!("{z:?}: {}", BadZone::Network))),
                Err(BadZone::Name(e)) => return Err(ctx.invalid(e)),
            }
        }
        let mut t = TemplateConfig {
            zone: String::new(),
            qtype,
            matches: Vec::new(),
            rcode: "NOERROR".into(),
            fallthrough: false,
        };
        for o in d.options() {
            match o.name.as_str() {
                "match" => {
                    if o.args.is_empty() {
                        return Err(ctx.invalid_opt(o, "needs a regular expression".into()));
                    }
                    for m in &o.args {
                        regex::Regex::new(m).map_err(|e| ctx.invalid_opt(o, e.to_string()))?;
                        t.matches.push(m.clone());
                    }
                }
                "rcode" => {
                    let v = ctx.one_arg(o)?.to_ascii_uppercase();
                    if template_rcode(&v).is_none() {
                        return Err(ctx.unsupported_opt(o, format!("rcode {v}: clusterdns templates answer NXDOMAIN, NOERROR, SERVFAIL or REFUSED")));
                    }
                    t.rcode = v;
                }
                "fallthrough" => {
                    t.fallthrough = true;
                    if !o.args.is_empty() {
                        self.note(&o.at, ctx.block, "template fallthrough", &format!("fell through only for {} in CoreDNS; clusterdns's template falls through for every name of its zone that no `match` matches", o.args.join(" ")));
                    }
                }
                "answer" | "additional" | "authority" => {
                    return Err(ctx.unsupported_opt(o, format!("it synthesises records ({}) from Go templates; clusterdns's templates answer an rcode only. For fixed records use a hosts file, for a Service alias an ExternalName Service", o.name)));
                }
                "ederror" => {
                    return Err(ctx.unsupported_opt(
                        o,
                        "extended DNS errors are not written by clusterdns's templates".into(),
                    ));
                }
                _ => return Err(ctx.unknown_option(o)),
            }
        }
        for zone in zones {
            let one = TemplateConfig { zone, ..t.clone() };
            self.templates
                .push((Set::new(one, &d.at, ctx.block), ctx.role));
        }
        Ok(())
    }

    /// A template in a main block whose zone overlaps a zone block's: CoreDNS sends that
    /// block's names to the block, never to this template, while clusterdns's templates apply
    /// to every name of their zone; refused rather than answered differently.
    pub(super) fn check_templates(&self, zone_blocks: &[String]) -> Result<(), CorefileError> {
        for (t, role) in &self.templates {
            if *role != Role::Main {
                continue;
            }
            let z = &t.value.zone;
            if let Some(b) = zone_blocks.iter().find(|b| in_zone(b, z) || in_zone(z, b)) {
                return Err(t.unsupported("template", None, format!("names in {b} go to the `{b}` server block in CoreDNS and never reach this template, but clusterdns's templates apply to every name of their zone ({z}); move the template into the `{b}` block, or narrow its zone")));
            }
        }
        Ok(())
    }

    /// `templates`: in the order of the Corefile, as CoreDNS asks them.
    pub(super) fn write_templates(&mut self, cfg: &mut Config) {
        cfg.templates = std::mem::take(&mut self.templates)
            .into_iter()
            .map(|(t, _)| t.value)
            .collect();
    }
}
