//! The `template` plugin: each block becomes one `shape.templates` entry, in order.

use super::{Converter, Ctx};
use crate::config::TemplateRule;
use crate::corefile::CorefileError;
use crate::corefile::zones::{Zone, parse_zone};

impl Converter {
    pub(super) fn template(&mut self, ctx: &Ctx<'_>) -> Result<(), CorefileError> {
        let d = ctx.d;
        let (class, qtype, zone_args) = match d.args.as_slice() {
            [class, qtype, zones @ ..] => (class, qtype, zones),
            _ => {
                return Err(ctx
                    .invalid("needs a class and a type (`template CLASS TYPE [ZONE...]`)".into()));
            }
        };
        // Zones default to the server block's, as CoreDNS's `OriginsFromArgsOrServerBlock`.
        let zones: Vec<String> = if zone_args.is_empty() {
            ctx.keys.iter().map(|k| k.zone.clone()).collect()
        } else {
            zone_args
                .iter()
                .map(|z| match parse_zone(z) {
                    Ok(Zone::Root) => Ok(".".to_string()),
                    Ok(Zone::Name(n)) => Ok(n),
                    Err(e) => Err(ctx.invalid(format!("{z:?}: {e}"))),
                })
                .collect::<Result<_, _>>()?
        };
        // CoreDNS sends a name to the server block with the longest zone that holds it: names
        // of another block's zone below this block's are never this template's.
        let under = |z: &str, zone: &str| zone == "." || crate::names::in_zone(z, zone);
        let own: Vec<&str> = ctx.keys.iter().map(|k| k.zone.as_str()).collect();
        let except: Vec<String> = self
            .block_zones
            .iter()
            .filter(|z| z.as_str() != "." && !own.contains(&z.as_str()))
            .filter(|z| own.iter().any(|o| under(z, o)) && zones.iter().any(|t| under(z, t)))
            .cloned()
            .collect();
        if !except.is_empty() {
            self.note(
                &d.at,
                ctx.block,
                "template",
                &format!(
                    "not applied to {} (served by server blocks of their own in the Corefile, as CoreDNS does)",
                    except.join(", ")
                ),
            );
        }
        let mut t = TemplateRule {
            class: class.to_ascii_uppercase(),
            qtype: qtype.to_ascii_uppercase(),
            zones,
            except,
            ..TemplateRule::default()
        };
        for o in d.options() {
            let need_args = || {
                if o.args.is_empty() {
                    Err(ctx.invalid_opt(o, "needs at least one argument".into()))
                } else {
                    Ok(o.args.clone())
                }
            };
            match o.name.as_str() {
                "match" => t.matches.extend(need_args()?),
                "answer" => t.answer.extend(need_args()?),
                "additional" => t.additional.extend(need_args()?),
                "authority" => t.authority.extend(need_args()?),
                "rcode" => t.rcode = ctx.one_arg(o)?.to_ascii_uppercase(),
                "fallthrough" => {
                    t.fallthrough = if o.args.is_empty() {
                        vec![".".into()]
                    } else {
                        o.args.clone()
                    };
                }
                "upstream" => {
                    self.note(&o.at, ctx.block, "template upstream", "dropped (CoreDNS ignores it too): a CNAME answer's target is resolved through clusterdns itself");
                }
                "var" | "expr" => {
                    return Err(ctx.unsupported_opt(o, "expressions (the expr language) are not evaluated by clusterdns; its templates use the regex's groups (`.Group.NAME`, `index .Match N`)".into()));
                }
                "ederror" => {
                    return Err(ctx.unsupported_opt(
                        o,
                        "extended DNS errors (RFC 8914) are not sent by clusterdns".into(),
                    ));
                }
                _ => return Err(ctx.unknown_option(o)),
            }
        }
        // Compile now, so that a template clusterdns cannot run fails here with its line.
        crate::server::shape::template::Templates::new(std::slice::from_ref(&t)).map_err(|e| {
            let msg = e
                .split_once(": ")
                .map_or(e.as_str(), |(_, m)| m)
                .to_string();
            ctx.invalid(msg)
        })?;
        self.shape.templates.push(t);
        Ok(())
    }
}
