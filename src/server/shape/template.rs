//! CoreDNS's `template` plugin: answers made from the question name by regular expressions.
//!
//! As CoreDNS decides (plugin/template/template.go):
//! - A name in none of the templates' zones is not the plugin's business: it goes on.
//! - Templates are tried in order. One whose zones do not hold the name (or whose `except` zones
//!   do: another server block's, in the Corefile it came from), or whose class or type differ
//!   from the question's (ANY on either side matches), is skipped.
//! - The first of its regexes that matches the lowercase name (with its trailing dot) makes the
//!   answer: the `rcode`, the AA bit, and the `answer`, `authority` and `additional` records,
//!   each a zone-file line with template fields filled in. A template whose rcode is SERVFAIL
//!   answers a plain SERVFAIL.
//! - No regex matching: the name goes on to the next template if it is in one of the
//!   `fallthrough` zones, else the answer is SERVFAIL.
//! - A record text that does not expand (an index out of range) or does not parse: SERVFAIL.
//!
//! A template whose answer is a CNAME, asked for A or AAAA, is followed by the target's records
//! (CoreDNS asks itself through its `upstream`); the engine does that with the same machinery as
//! an ExternalName's CNAME.

use std::net::IpAddr;

use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, Record, RecordType};
use regex::Regex;

use super::expand::{Data, Expansion};
use super::{Zones, dotted_lower, rr};
use crate::config::TemplateRule;
use crate::wire::{self, Query, Writer, rcode};

/// One compiled `template` block.
pub(crate) struct Template {
    class: u16,
    qtype: u16,
    zones: Zones,
    except: Zones,
    regexes: Vec<Regex>,
    answer: Vec<Expansion>,
    additional: Vec<Expansion>,
    authority: Vec<Expansion>,
    rcode: u16,
    fallthrough: Zones,
}

/// The templates, in order.
pub(crate) struct Templates {
    list: Vec<Template>,
    /// Every template's zones: names outside them are not looked at further.
    zones: Zones,
}

/// What the templates made of a question.
pub(crate) enum Outcome {
    /// Not theirs: go on.
    Next,
    /// A reply is in the buffer.
    Answered { rcode: u16 },
    /// A reply is in the buffer with a CNAME to this target (absolute wire name) first in the
    /// answer: its records may be appended.
    Cname { rcode: u16, target: Vec<u8> },
}

/// The longest regex CoreDNS compiles.
const MAX_REGEX: usize = 10_000;

impl Templates {
    pub(crate) fn new(rules: &[TemplateRule]) -> Result<Templates, String> {
        let mut list = Vec::new();
        let mut all = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let key = |k: &str| format!("shape.templates[{i}].{k}");
            let class = class_code(&r.class).ok_or_else(|| {
                format!("{}: {:?} is not IN, CH, HS or ANY", key("class"), r.class)
            })?;
            let qtype = type_code(&r.qtype)
                .ok_or_else(|| format!("{}: {:?} is not a record type", key("type"), r.qtype))?;
            let zones = Zones::parse(&r.zones).map_err(|e| format!("{}: {e}", key("zones")))?;
            all.extend(r.zones.iter().cloned());
            let mut regexes = Vec::new();
            for (j, m) in r.matches.iter().enumerate() {
                if m.len() > MAX_REGEX {
                    return Err(format!(
                        "{}[{j}]: longer than {MAX_REGEX} characters",
                        key("match")
                    ));
                }
                regexes.push(Regex::new(m).map_err(|e| format!("{}[{j}]: {e}", key("match")))?);
            }
            if regexes.is_empty() {
                // Once per template, when the config is compiled: not on the query path.
                #[allow(clippy::regex_creation_in_loops)]
                regexes.push(Regex::new(".*").expect("static regex"));
            }
            let exps = |k: &str, v: &[String]| -> Result<Vec<Expansion>, String> {
                v.iter()
                    .enumerate()
                    .map(|(j, t)| Expansion::parse(t).map_err(|e| format!("{}[{j}]: {e}", key(k))))
                    .collect()
            };
            let rc = rcode_code(&r.rcode)
                .ok_or_else(|| format!("{}: {:?} is not an rcode", key("rcode"), r.rcode))?;
            list.push(Template {
                class,
                qtype,
                zones,
                except: Zones::parse(&r.except).map_err(|e| format!("{}: {e}", key("except")))?,
                regexes,
                answer: exps("answer", &r.answer)?,
                additional: exps("additional", &r.additional)?,
                authority: exps("authority", &r.authority)?,
                rcode: rc,
                fallthrough: Zones::parse(&r.fallthrough)
                    .map_err(|e| format!("{}: {e}", key("fallthrough")))?,
            });
        }
        let zones = Zones::parse(&all).map_err(|e| format!("shape.templates: {e}"))?;
        Ok(Templates { list, zones })
    }

    /// Answer `q` if a template is for it.
    pub(crate) fn answer(
        &self,
        q: &Query<'_>,
        remote: Option<IpAddr>,
        max: usize,
        max_udp: u16,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let qname = q.qname_lower();
        if self.zones.matches(qname).is_none() {
            return Outcome::Next;
        }
        let name = dotted_lower(qname);
        for t in &self.list {
            let Some(zone) = t.zones.matches(qname) else {
                continue;
            };
            if t.except.matches(qname).is_some() {
                continue;
            }
            if t.class != wire::CLASS_ANY && q.qclass != wire::CLASS_ANY && q.qclass != t.class {
                continue;
            }
            if t.qtype != wire::rtype::ANY && q.qtype != wire::rtype::ANY && q.qtype != t.qtype {
                continue;
            }
            let Some((regex, caps)) = t
                .regexes
                .iter()
                .find_map(|r| r.captures(&name).map(|c| (r, c)))
            else {
                if t.fallthrough.matches(qname).is_some() {
                    continue;
                }
                return servfail(q, max_udp, out);
            };
            if t.rcode == rcode::SERVFAIL {
                return servfail(q, max_udp, out);
            }
            let matches: Vec<Option<&str>> = caps.iter().map(|m| m.map(|m| m.as_str())).collect();
            let group_names: Vec<Option<&str>> = regex.capture_names().collect();
            let remote = remote.map(|r| r.to_string()).unwrap_or_default();
            let class = if q.qclass != wire::CLASS_ANY {
                q.qclass
            } else {
                t.class
            };
            let qtype = if q.qtype != wire::rtype::ANY {
                q.qtype
            } else {
                t.qtype
            };
            let class = DNSClass::from(class).to_string();
            let qtype = RecordType::from(qtype).to_string();
            let zone = t.zones.name(zone);
            let data = Data {
                name: &name,
                zone,
                class: &class,
                qtype: &qtype,
                remote: &remote,
                regex: regex.as_str(),
                matches: &matches,
                group_names: &group_names,
            };
            return match write(t, &data, q, max, max_udp, out) {
                Ok(o) => o,
                Err(e) => {
                    tracing::debug!(name = %name, error = %e, "template failed");
                    servfail(q, max_udp, out)
                }
            };
        }
        Outcome::Next
    }
}

fn servfail(q: &Query<'_>, max_udp: u16, out: &mut Vec<u8>) -> Outcome {
    wire::rcode_reply(out, q, rcode::SERVFAIL, false, max_udp);
    Outcome::Answered {
        rcode: rcode::SERVFAIL,
    }
}

/// The reply of a matching template: header and question written directly; the records, when
/// there are any, through hickory (they are few and arbitrary types).
fn write(
    t: &Template,
    d: &Data<'_>,
    q: &Query<'_>,
    max: usize,
    max_udp: u16,
    out: &mut Vec<u8>,
) -> Result<Outcome, String> {
    let records = |v: &[Expansion]| -> Result<Vec<Record>, String> {
        v.iter().map(|e| rr::parse(&e.expand(d)?)).collect()
    };
    let (answer, authority, additional) = (
        records(&t.answer)?,
        records(&t.authority)?,
        records(&t.additional)?,
    );
    Writer::new(out, q, usize::MAX).finish(q, t.rcode, true, false, max_udp);
    if answer.is_empty() && authority.is_empty() && additional.is_empty() {
        return Ok(Outcome::Answered { rcode: t.rcode });
    }
    let mut m = Message::from_vec(out).map_err(|e| e.to_string())?;
    let cname = match answer.first().map(|r| &r.data) {
        Some(hickory_proto::rr::RData::CNAME(c))
            if q.qtype == wire::rtype::A || q.qtype == wire::rtype::AAAA =>
        {
            let mut w = Vec::new();
            wire::encode_name(&c.0.to_ascii(), &mut w)?;
            Some(w)
        }
        _ => None,
    };
    m.answers = answer;
    m.authorities = authority;
    m.additionals = additional;
    *out = m.to_vec().map_err(|e| e.to_string())?;
    wire::fit(out, max);
    Ok(match cname {
        Some(target) => Outcome::Cname {
            rcode: t.rcode,
            target,
        },
        None => Outcome::Answered { rcode: t.rcode },
    })
}

fn class_code(s: &str) -> Option<u16> {
    Some(match s.to_ascii_uppercase().as_str() {
        "IN" => wire::CLASS_IN,
        "CH" => 3,
        "HS" => 4,
        "ANY" => wire::CLASS_ANY,
        _ => return None,
    })
}

/// A record type by name (as miekg/dns's `StringToType`), or `TYPEnnn`.
pub(crate) fn type_code(s: &str) -> Option<u16> {
    let up = s.to_ascii_uppercase();
    if let Some(n) = up.strip_prefix("TYPE") {
        return n.parse().ok();
    }
    match up.parse::<RecordType>() {
        Ok(RecordType::Unknown(_)) | Err(_) => None,
        Ok(t) => Some(u16::from(t)),
    }
}

/// An rcode by name, as miekg/dns's `StringToRcode`.
fn rcode_code(s: &str) -> Option<u16> {
    Some(match s.to_ascii_uppercase().as_str() {
        "NOERROR" => 0,
        "FORMERR" => 1,
        "SERVFAIL" => 2,
        "NXDOMAIN" => 3,
        "NOTIMP" => 4,
        "REFUSED" => 5,
        "YXDOMAIN" => 6,
        "YXRRSET" => 7,
        "NXRRSET" => 8,
        "NOTAUTH" => 9,
        "NOTZONE" => 10,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(t: &Templates, name: &str) -> Option<u16> {
        let wire_name = wire::dotted_to_wire(name).unwrap();
        let msg = wire::query::build(1, &wire_name, wire::rtype::AAAA, true, None);
        let q = Query::parse(&msg).unwrap();
        let mut out = Vec::new();
        match t.answer(&q, None, 512, 1232, &mut out) {
            Outcome::Next => None,
            Outcome::Answered { rcode } | Outcome::Cname { rcode, .. } => Some(rcode),
        }
    }

    /// `except` zones (another server block's, in the Corefile) are left alone; the rest of
    /// the template's zones are answered.
    #[test]
    fn except_zones_are_left_to_the_next_step() {
        let rule = TemplateRule {
            qtype: "AAAA".into(),
            except: vec!["consul.local".into()],
            ..TemplateRule::default()
        };
        let t = Templates::new(&[rule]).unwrap();
        assert_eq!(outcome(&t, "www.example.com"), Some(rcode::NOERROR));
        assert_eq!(outcome(&t, "consul.local"), None);
        assert_eq!(outcome(&t, "web.service.CONSUL.local"), None);
        assert_eq!(outcome(&t, "notconsul.local"), Some(rcode::NOERROR));
    }
}
