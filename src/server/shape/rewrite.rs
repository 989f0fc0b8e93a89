//! CoreDNS's `rewrite` plugin for the question: `name` (exact, prefix, suffix, substring,
//! regex), `type` and `class`, with `continue`/`stop`, and the reply turned back so the client
//! sees the question it asked (`answer auto`, `answer name`, `answer value`).
//!
//! As CoreDNS does it (plugin/rewrite/name.go, reverter.go):
//! - Names are compared as lowercase text with a trailing dot. `from`/`to` of exact, prefix,
//!   suffix and substring rules are lowercased and get a trailing dot (CoreDNS's `Normalize`),
//!   so `prefix foo bar` rewrites `foo.example.com.` to `bar.example.com.`. A regex's `to` gets
//!   `{N}` replaced by group N, then the same normalising.
//! - Rules apply in order; a rule that matched ends the walk unless it says `continue`.
//! - The reply carries the client's question again. Reply rules run last rule first over every
//!   section: `answer auto` maps the rewritten name (and names ending in `.<it>`) back to the
//!   asked one, for owner names and names inside records; for a suffix rule it swaps the
//!   suffixes back; an exact rule always does this.
//! - A rewritten name that is not a domain name: SERVFAIL.

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RData, Record};
use regex::Regex;

use super::template::type_code;
use crate::config::{NameMatch, RegexRewrite, RewriteField, RewriteRule};
use crate::wire::{self, Query};

/// The longest regex CoreDNS compiles.
const MAX_REGEX: usize = 10_000;

pub(crate) struct Rewrites {
    rules: Vec<Rule>,
}

struct Rule {
    cont: bool,
    kind: Kind,
    /// Owner-name rules for the reply (`answer name`).
    names: Vec<Replace>,
    /// Record-value rules for the reply (`answer value`).
    values: Vec<Replace>,
    /// `answer auto` (always for exact rules).
    auto: bool,
}

enum Kind {
    Exact(String, String),
    Prefix(String, String),
    Suffix(String, String),
    Substring(String, String),
    Regex(Regex, String),
    Type(u16, u16),
    Class(u16, u16),
}

/// A regex and its replacement with `{N}` groups.
#[derive(Clone)]
struct Replace {
    re: Regex,
    to: String,
}

impl Replace {
    fn new(r: &RegexRewrite) -> Result<Replace, String> {
        Ok(Replace {
            re: regex(&r.from)?,
            to: normalize(&r.to),
        })
    }

    fn apply(&self, s: &str) -> Option<String> {
        let caps = self.re.captures(s)?;
        Some(groups(&self.to, &caps))
    }
}

/// One way of turning a reply name back.
#[derive(Clone)]
enum Back {
    /// The rewritten name, or a name ending in `.<it>`, becomes the original (`answer auto`).
    Remap {
        rewritten: String,
        original: String,
    },
    /// A suffix swapped back (`answer auto` of a suffix rule).
    Suffix {
        from: String,
        to: String,
    },
    Regex(Replace),
}

impl Back {
    fn apply(&self, s: &str) -> Option<String> {
        match self {
            Back::Remap {
                rewritten,
                original,
            } => {
                if s == rewritten {
                    return Some(original.clone());
                }
                let i = s.len().checked_sub(rewritten.len())?;
                (i > 0 && s.as_bytes()[i - 1] == b'.' && &s[i..] == rewritten)
                    .then(|| format!("{}{original}", &s[..i]))
            }
            Back::Suffix { from, to } => s.strip_suffix(from.as_str()).map(|b| format!("{b}{to}")),
            Back::Regex(r) => r.apply(s),
        }
    }
}

/// How to give the client back its question: the original question bytes and the reply rules,
/// last rule first.
pub(crate) struct Undo {
    question: Box<[u8]>,
    /// (rule, applies to owner names, applies to record values)
    back: Vec<(Back, bool, bool)>,
}

fn normalize(s: &str) -> String {
    let mut s = s.to_ascii_lowercase();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

fn regex(s: &str) -> Result<Regex, String> {
    if s.len() > MAX_REGEX {
        return Err(format!("longer than {MAX_REGEX} characters"));
    }
    Regex::new(s).map_err(|e| e.to_string())
}

/// `{N}` replaced by group N of `caps`.
fn groups(to: &str, caps: &regex::Captures<'_>) -> String {
    let mut s = to.to_string();
    for (i, g) in caps.iter().enumerate() {
        s = s.replace(&format!("{{{i}}}"), g.map_or("", |m| m.as_str()));
    }
    s
}

fn class_code(s: &str) -> Option<u16> {
    Some(match s.to_ascii_uppercase().as_str() {
        "IN" => wire::CLASS_IN,
        "CH" => 3,
        "HS" => 4,
        _ => return None,
    })
}

impl Rewrites {
    pub(crate) fn new(rules: &[RewriteRule]) -> Result<Rewrites, String> {
        let mut out = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let key = |k: &str| format!("shape.rewrites[{i}].{k}");
            let kind = match r.field {
                RewriteField::Type => {
                    let t = |s: &str, k: &str| {
                        type_code(s).ok_or_else(|| format!("{}: {s:?} is not a type", key(k)))
                    };
                    Kind::Type(t(&r.from, "from")?, t(&r.to, "to")?)
                }
                RewriteField::Class => {
                    let c = |s: &str, k: &str| {
                        class_code(s)
                            .ok_or_else(|| format!("{}: {s:?} is not IN, CH or HS", key(k)))
                    };
                    Kind::Class(c(&r.from, "from")?, c(&r.to, "to")?)
                }
                RewriteField::Name => {
                    if r.from.is_empty() || r.to.is_empty() {
                        return Err(format!(
                            "{}: a name rule needs `from` and `to`",
                            key("from")
                        ));
                    }
                    let (f, t) = (normalize(&r.from), normalize(&r.to));
                    match r.match_ {
                        NameMatch::Exact => Kind::Exact(f, t),
                        NameMatch::Prefix => Kind::Prefix(f, t),
                        NameMatch::Suffix => Kind::Suffix(f, t),
                        NameMatch::Substring => Kind::Substring(f, t),
                        NameMatch::Regex => {
                            let re = regex(&r.from).map_err(|e| format!("{}: {e}", key("from")))?;
                            let used = (0..=100)
                                .filter(|n| r.to.contains(&format!("{{{n}}}")))
                                .count();
                            if used > re.captures_len() - 1 {
                                return Err(format!(
                                    "{}: uses more groups than `from` has",
                                    key("to")
                                ));
                            }
                            Kind::Regex(re, t)
                        }
                    }
                }
            };
            let is_name = r.field == RewriteField::Name;
            if !is_name
                && (r.answer_auto || !r.answer_name.is_empty() || !r.answer_value.is_empty())
            {
                return Err(format!(
                    "{}: only name rules rewrite the reply",
                    key("answer_auto")
                ));
            }
            if r.answer_auto && !r.answer_name.is_empty() {
                return Err(format!(
                    "{}: `answer auto` cannot be combined with `answer name` rules",
                    key("answer_name")
                ));
            }
            let rs = |v: &[RegexRewrite], k: &str| -> Result<Vec<Replace>, String> {
                v.iter()
                    .enumerate()
                    .map(|(j, x)| Replace::new(x).map_err(|e| format!("{}[{j}]: {e}", key(k))))
                    .collect()
            };
            out.push(Rule {
                cont: r.continue_,
                auto: r.answer_auto || (is_name && r.match_ == NameMatch::Exact),
                kind,
                names: rs(&r.answer_name, "answer_name")?,
                values: rs(&r.answer_value, "answer_value")?,
            });
        }
        Ok(Rewrites { rules: out })
    }

    /// Rewrite the question of `q`: the rewritten query (its own message) and how to undo it in
    /// the reply; `Err(())` when a rewritten name is not a domain name (SERVFAIL); `Ok(None)`
    /// when no rule matched.
    #[allow(clippy::result_unit_err)]
    pub(crate) fn apply(&self, q: &Query<'_>) -> Result<Option<(Query<'static>, Undo)>, ()> {
        let original = wire::display_name(q.qname_lower());
        let mut name = original.clone();
        let (mut qtype, mut qclass) = (q.qtype, q.qclass);
        let mut back = Vec::new();
        let mut any = false;
        for r in &self.rules {
            let before = name.clone();
            let hit = match &r.kind {
                Kind::Exact(f, t) => (name == *f).then(|| t.clone()),
                Kind::Prefix(f, t) => name.strip_prefix(f.as_str()).map(|a| format!("{t}{a}")),
                Kind::Suffix(f, t) => name.strip_suffix(f.as_str()).map(|b| format!("{b}{t}")),
                Kind::Substring(f, t) => name.contains(f.as_str()).then(|| name.replace(f, t)),
                Kind::Regex(re, t) => re.captures(&name).map(|c| normalize(&groups(t, &c))),
                Kind::Type(f, t) => {
                    if qtype == *f {
                        qtype = *t;
                        Some(name.clone())
                    } else {
                        None
                    }
                }
                Kind::Class(f, t) => {
                    if qclass == *f {
                        qclass = *t;
                        Some(name.clone())
                    } else {
                        None
                    }
                }
            };
            let Some(new) = hit else { continue };
            any = true;
            name = new;
            if matches!(r.kind, Kind::Suffix(..)) && r.auto {
                if let Kind::Suffix(f, t) = &r.kind {
                    back.push((
                        Back::Suffix {
                            from: t.clone(),
                            to: f.clone(),
                        },
                        true,
                        true,
                    ));
                }
            } else if r.auto {
                // CoreDNS maps the rewritten name back to the name the client asked.
                back.push((
                    Back::Remap {
                        rewritten: name.clone(),
                        original: original.clone(),
                    },
                    true,
                    true,
                ));
            }
            back.extend(
                r.names
                    .iter()
                    .map(|x| (Back::Regex(x.clone()), true, false)),
            );
            back.extend(
                r.values
                    .iter()
                    .map(|x| (Back::Regex(x.clone()), false, true)),
            );
            let _ = before;
            if !r.cont {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        let mut wname = Vec::with_capacity(name.len() + 1);
        if name.len() > 1 {
            wire::encode_name(&name, &mut wname).map_err(|_| ())?;
        } else {
            wname.push(0);
        }
        // The client's message with the new question: header, question, then its OPT record.
        let msg = q.message();
        let mut m = Vec::with_capacity(msg.len() + wname.len());
        m.extend_from_slice(&msg[..wire::HEADER_LEN]);
        m.extend_from_slice(&wname);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&qclass.to_be_bytes());
        m.extend_from_slice(&msg[q.question_end()..]);
        let rewritten = Query::from_vec(m).map_err(|_| ())?;
        back.reverse();
        Ok(Some((
            rewritten,
            Undo {
                question: q.question().into(),
                back,
            },
        )))
    }
}

impl Undo {
    /// Give the client its question back, and apply the reply rules. Replies that cannot be
    /// read are left as they are (they carry the rewritten question).
    pub(crate) fn apply(&self, reply: &mut Vec<u8>, max: usize) {
        if reply.len() < wire::HEADER_LEN || wire::u16_at(reply, 4) != 1 {
            return;
        }
        if self.back.is_empty() {
            // Only the question changes: splice it in.
            let Some(n) = wire::name::uncompressed_len(&reply[wire::HEADER_LEN..]) else {
                return;
            };
            let end = wire::HEADER_LEN + n + 4;
            if end > reply.len() || reply.len() - end > 0 && has_pointers(reply, end) {
                self.apply_decoded(reply, max);
                return;
            }
            reply.splice(wire::HEADER_LEN..end, self.question.iter().copied());
            return;
        }
        self.apply_decoded(reply, max);
    }

    fn apply_decoded(&self, reply: &mut Vec<u8>, max: usize) {
        let Ok(mut m) = Message::from_vec(reply) else {
            return;
        };
        let mut qm = reply[..wire::HEADER_LEN].to_vec();
        qm[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        qm.extend_from_slice(&self.question);
        let Ok(orig) = Message::from_vec(&qm) else {
            return;
        };
        m.queries = orig.queries;
        for rec in m
            .answers
            .iter_mut()
            .chain(m.authorities.iter_mut())
            .chain(m.additionals.iter_mut())
        {
            for (b, names, values) in &self.back {
                if *names {
                    let owner = rec.name.to_ascii().to_ascii_lowercase();
                    if let Some(n) = b.apply(&owner).and_then(|s| Name::from_ascii(s).ok()) {
                        rec.name = n;
                    }
                }
                if *values {
                    rewrite_value(rec, b);
                }
            }
        }
        if let Ok(v) = m.to_vec() {
            *reply = v;
            wire::fit(reply, max);
        }
    }
}

/// Whether anything after `from` may point into the message (a compression pointer anywhere
/// past the question): then the question cannot be swapped for one of another length.
fn has_pointers(reply: &[u8], from: usize) -> bool {
    let _ = from;
    wire::u16_at(reply, 6) != 0 || wire::u16_at(reply, 8) != 0 || {
        // Only an OPT record (owned by the root, no names) is safe to move.
        let ar = wire::u16_at(reply, 10);
        ar > 1 || (ar == 1 && reply.get(from) != Some(&0))
    }
}

/// The name inside a record that `answer value` rules rewrite (CoreDNS's
/// `getRecordValueForRewrite`).
fn rewrite_value(rec: &mut Record, b: &Back) {
    let apply = |n: &mut Name| {
        let s = n.to_ascii().to_ascii_lowercase();
        if let Some(new) = b.apply(&s).and_then(|s| Name::from_ascii(s).ok()) {
            *n = new;
        }
    };
    match &mut rec.data {
        RData::CNAME(c) => apply(&mut c.0),
        RData::NS(n) => apply(&mut n.0),
        RData::PTR(p) => apply(&mut p.0),
        RData::MX(m) => apply(&mut m.exchange),
        RData::SRV(s) => apply(&mut s.target),
        RData::SOA(s) => apply(&mut s.mname),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RewriteRule;

    fn name_rule(m: NameMatch, from: &str, to: &str, cont: bool) -> RewriteRule {
        RewriteRule {
            continue_: cont,
            field: RewriteField::Name,
            match_: m,
            from: from.into(),
            to: to.into(),
            ..Default::default()
        }
    }

    fn other(field: RewriteField, from: &str, to: &str, cont: bool) -> RewriteRule {
        RewriteRule {
            continue_: cont,
            field,
            from: from.into(),
            to: to.into(),
            ..Default::default()
        }
    }

    /// CoreDNS's TestRewrite table (plugin/rewrite/rewrite_test.go): the rules, then
    /// (name, type, class) asked → (name, type, class) looked up.
    #[test]
    fn coredns_rewrite_table() {
        use NameMatch::*;
        let mut regex_answer = name_rule(
            Regex,
            r"(core)\.(dns)\.(rocks)\.(nl)",
            "{2}.{1}.{3}.{4}",
            false,
        );
        regex_answer.answer_name = vec![RegexRewrite {
            from: r"(dns)\.(core)\.(rocks)\.(nl)".into(),
            to: "{2}.{1}.{3}.{4}".into(),
        }];
        let rules = vec![
            name_rule(Exact, "from.nl.", "to.nl.", false),
            regex_answer,
            name_rule(Exact, "from.exact.nl.", "to.nl.", false),
            name_rule(Prefix, "prefix", "to", false),
            name_rule(Suffix, ".suffix.", ".nl.", false),
            name_rule(Substring, "from.substring", "to", false),
            name_rule(Regex, r"(f.*m)\.regex\.(nl)", "to.{2}", false),
            name_rule(Regex, r"consul\.(rocks)", "core.dns.{1}", true),
            name_rule(Exact, "core.dns.rocks", "to.nl.", false),
            other(RewriteField::Class, "HS", "CH", true),
            other(RewriteField::Class, "CH", "IN", false),
            other(RewriteField::Type, "ANY", "HINFO", false),
        ];
        let rw = Rewrites::new(&rules).unwrap();
        const CH: u16 = 3;
        const HS: u16 = 4;
        const IN: u16 = 1;
        const A: u16 = 1;
        const ANY: u16 = 255;
        const HINFO: u16 = 13;
        for (from, ft, fc, to, tt, tc) in [
            ("from.nl.", A, IN, "to.nl.", A, IN),
            ("a.nl.", A, IN, "a.nl.", A, IN),
            ("a.nl.", A, CH, "a.nl.", A, IN),
            ("a.nl.", ANY, IN, "a.nl.", HINFO, IN),
            ("from.nl.", ANY, IN, "to.nl.", ANY, IN),
            ("from.exact.nl.", A, IN, "to.nl.", A, IN),
            ("prefix.nl.", A, IN, "to.nl.", A, IN),
            ("to.suffix.", A, IN, "to.nl.", A, IN),
            ("from.substring.nl.", A, IN, "to.nl.", A, IN),
            ("from.regex.nl.", A, IN, "to.nl.", A, IN),
            ("consul.rocks.", A, IN, "to.nl.", A, IN),
            ("a.nl.", ANY, CH, "a.nl.", ANY, IN),
            ("a.nl.", ANY, HS, "a.nl.", ANY, IN),
            ("core.dns.rocks.nl.", A, IN, "dns.core.rocks.nl.", A, IN),
        ] {
            let mut wname = Vec::new();
            wire::encode_name(from, &mut wname).unwrap();
            let mut m = wire::query::build(7, &wname, ft, true, None);
            m[wire::HEADER_LEN + wname.len() + 2..][..2].copy_from_slice(&fc.to_be_bytes());
            let q = Query::parse(&m).unwrap();
            let got = match rw.apply(&q).unwrap() {
                Some((r, _)) => (wire::display_name(r.qname()), r.qtype, r.qclass),
                None => (from.to_string(), ft, fc),
            };
            assert_eq!(got, (to.to_string(), tt, tc), "{from} {ft} {fc}");
        }
    }

    /// CoreDNS's TestRewriteNamePrefixSuffixAutoAnswer: (rule, question, rewritten, the answer
    /// owner the client sees).
    #[test]
    fn auto_answer_names() {
        use NameMatch::*;
        for (m, f, t, q, rewritten, back) in [
            (
                Prefix,
                "foo",
                "bar",
                "foo.example.com.",
                "bar.example.com.",
                "foo.example.com.",
            ),
            (
                Prefix,
                "foo.",
                "bar.",
                "foo.example.com.",
                "bar.example.com.",
                "foo.example.com.",
            ),
            (
                Suffix,
                "com",
                "org",
                "foo.example.com.",
                "foo.example.org.",
                "foo.example.com.",
            ),
            (
                Suffix,
                ".com",
                ".org",
                "foo.example.com.",
                "foo.example.org.",
                "foo.example.com.",
            ),
            (
                Suffix,
                ".ingress.coredns.rocks",
                "nginx.coredns.rocks",
                "coredns.ingress.coredns.rocks.",
                "corednsnginx.coredns.rocks.",
                "coredns.ingress.coredns.rocks.",
            ),
        ] {
            let mut r = name_rule(m, f, t, false);
            r.answer_auto = true;
            let rw = Rewrites::new(&[r]).unwrap();
            let q = Query::new(q, 1).unwrap();
            let (nq, undo) = rw.apply(&q).unwrap().unwrap();
            assert_eq!(wire::display_name(nq.qname()), rewritten);
            // The reply to the rewritten question, with an A owned by the rewritten name.
            let mut reply = Vec::new();
            let mut w = wire::Writer::new(&mut reply, &nq, 512);
            w.record(|w| {
                w.owner_qname();
                w.a(5, std::net::Ipv4Addr::new(10, 0, 0, 1));
            });
            w.finish(&nq, 0, true, false, 1232);
            undo.apply(&mut reply, 512);
            let m = Message::from_vec(&reply).unwrap();
            assert_eq!(m.queries[0].name().to_ascii(), q.to_string_name());
            assert_eq!(m.answers[0].name.to_ascii(), back);
        }
    }

    #[test]
    fn bad_rules_are_errors_naming_the_key() {
        let e = Rewrites::new(&[name_rule(NameMatch::Regex, "([a]\\.com", "x", false)])
            .err()
            .unwrap();
        assert!(e.contains("shape.rewrites[0].from"), "{e}");
        let e = Rewrites::new(&[name_rule(NameMatch::Regex, "(a)", "{1}{2}", false)])
            .err()
            .unwrap();
        assert!(e.contains("more groups"), "{e}");
        let e = Rewrites::new(&[other(RewriteField::Type, "XY", "A", false)])
            .err()
            .unwrap();
        assert!(e.contains("not a type"), "{e}");
    }

    trait Dotted {
        fn to_string_name(&self) -> String;
    }
    impl Dotted for Query<'_> {
        fn to_string_name(&self) -> String {
            wire::display_name(self.qname())
        }
    }
}
