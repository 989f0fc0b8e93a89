//! Rcode-only templates (`templates` in the config; CoreDNS's `template` plugin with `rcode`
//! and no records): answers decided by the query name alone, before the cluster zone and
//! forwarding, as `template` sits before `kubernetes` and `forward` in CoreDNS's plugin order.
//!
//! CoreDNS's `template` (plugin/template/template.go): a query in a template's zone whose
//! class and type match and whose name matches one of its regular expressions gets the
//! template's answer; one that matches none gets NXDOMAIN, unless the template has
//! `fallthrough`, when the next template, then the next plugin, is asked.

use crate::config::{TemplateConfig, template_qtype, template_rcode};
use crate::names::in_zone;
use crate::wire::{Query, name::display_name};

/// One template, compiled.
struct Template {
    zone: String,
    qtype: Option<u16>,
    matches: Vec<regex::Regex>,
    rcode: u16,
    fallthrough: bool,
}

/// The config's templates, in order.
pub(crate) struct Templates(Vec<Template>);

impl Templates {
    /// Compile the templates of a validated config (None when there are none); a template that
    /// does not compile (not validated) is left out.
    pub(crate) fn new(cfg: &[TemplateConfig]) -> Option<Templates> {
        let list: Vec<Template> = cfg
            .iter()
            .filter_map(|t| {
                Some(Template {
                    zone: crate::names::parse_domain(&t.zone).ok()?,
                    qtype: match &t.qtype {
                        Some(q) => Some(template_qtype(q)?),
                        None => None,
                    },
                    matches: t
                        .matches
                        .iter()
                        .map(|m| regex::Regex::new(m).ok())
                        .collect::<Option<_>>()?,
                    rcode: template_rcode(&t.rcode)?,
                    fallthrough: t.fallthrough,
                })
            })
            .collect();
        (!list.is_empty()).then_some(Templates(list))
    }

    /// The rcode the templates answer `q` with, or None when they let it go on.
    pub(crate) fn rcode(&self, q: &Query<'_>) -> Option<u16> {
        // The name as the regular expressions see it: lowercase, with the trailing dot.
        let shown = display_name(q.qname_lower());
        let name = shown.trim_end_matches('.');
        for t in &self.0 {
            if !in_zone(name, &t.zone) || t.qtype.is_some_and(|ty| ty != q.qtype) {
                continue;
            }
            if t.matches.is_empty() || t.matches.iter().any(|r| r.is_match(&shown)) {
                return Some(t.rcode);
            }
            if !t.fallthrough {
                return Some(crate::wire::rcode::NXDOMAIN);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(zone: &str, m: &[&str], rcode: &str, fallthrough: bool) -> TemplateConfig {
        TemplateConfig {
            zone: zone.into(),
            qtype: None,
            matches: m.iter().map(|s| s.to_string()).collect(),
            rcode: rcode.into(),
            fallthrough,
        }
    }

    #[test]
    fn aks_templates() {
        let ts = Templates::new(&[
            t(
                "internal.cloudapp.net",
                &[r"^(?:[^.]+\.){4,}internal\.cloudapp\.net\.$"],
                "NXDOMAIN",
                true,
            ),
            t("reddog.microsoft.com", &[], "NXDOMAIN", false),
        ])
        .unwrap();
        let rc = |n: &str| ts.rcode(&Query::new(n, 1).unwrap());
        assert_eq!(rc("a.b.c.d.internal.cloudapp.net"), Some(3));
        assert_eq!(rc("A.B.C.D.Internal.Cloudapp.NET"), Some(3));
        assert_eq!(rc("vm1.internal.cloudapp.net"), None, "fallthrough");
        assert_eq!(rc("x.reddog.microsoft.com"), Some(3));
        assert_eq!(rc("reddog.microsoft.com"), Some(3));
        assert_eq!(rc("notreddog.microsoft.com"), None);
        assert_eq!(rc("example.com"), None);
    }

    #[test]
    fn no_match_without_fallthrough_is_nxdomain() {
        let ts = Templates::new(&[t("corp.example", &["^www\\."], "NOERROR", false)]).unwrap();
        assert_eq!(
            ts.rcode(&Query::new("www.corp.example", 1).unwrap()),
            Some(0)
        );
        assert_eq!(
            ts.rcode(&Query::new("db.corp.example", 1).unwrap()),
            Some(3)
        );
    }
}
