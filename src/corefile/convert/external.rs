//! The `k8s_external` plugin: Services' external and LoadBalancer IPs under other zones
//! (`shape.external`).

use super::{Converter, Ctx};
use crate::config::ExternalConfig;
use crate::corefile::CorefileError;
use crate::corefile::zones::{Zone, parse_zone};

impl Converter {
    pub(super) fn k8s_external(&mut self, ctx: &Ctx<'_>) -> Result<(), CorefileError> {
        let d = ctx.d;
        if self.shape.external.is_some() {
            return Err(ctx.unsupported(
                "a second `k8s_external`: clusterdns has one, list all its zones there".into(),
            ));
        }
        let args: Vec<String> = if d.args.is_empty() {
            ctx.keys.iter().map(|k| k.zone.clone()).collect()
        } else {
            d.args.clone()
        };
        let mut e = ExternalConfig::default();
        for z in &args {
            match parse_zone(z) {
                Ok(Zone::Name(n)) => e.zones.push(n),
                Ok(Zone::Root) => return Err(ctx.unsupported("it serves the root zone `.`: name the external zone, e.g. `k8s_external example.org`".into())),
                Err(err) => return Err(ctx.invalid(format!("{z:?}: {err}"))),
            }
        }
        for o in d.options() {
            match o.name.as_str() {
                "apex" => e.apex = ctx.one_arg(o)?.to_ascii_lowercase(),
                "ttl" => {
                    let v = ctx.one_arg(o)?;
                    e.ttl = ctx.number(o, v, 0..=3600, "a TTL from 0 to 3600")?;
                }
                "headless" => {
                    ctx.opt_no_args(o)?;
                    e.headless = true;
                }
                "fallthrough" => {
                    e.fallthrough = if o.args.is_empty() {
                        vec![".".into()]
                    } else {
                        o.args.clone()
                    };
                }
                _ => return Err(ctx.unknown_option(o)),
            }
        }
        self.shape.external = Some(e);
        Ok(())
    }
}
