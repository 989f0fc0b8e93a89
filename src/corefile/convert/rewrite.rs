//! The `rewrite` plugin: `name` (exact, prefix, suffix, substring, regex, with `answer auto`,
//! `answer name`, `answer value`), `type` and `class` rules, each one `shape.rewrites` entry.

use super::{Converter, Ctx, Role};
use crate::config::{NameMatch, RegexRewrite, RewriteField, RewriteRule};
use crate::corefile::CorefileError;
use crate::corefile::parser::Directive;

impl Converter {
    pub(super) fn rewrite(&mut self, ctx: &Ctx<'_>) -> Result<(), CorefileError> {
        let d = ctx.d;
        if ctx.role == Role::Zone {
            return Err(ctx.unsupported("a rewrite in a block for one zone: clusterdns's rewrites apply to every name; move it to the `.` block and match the zone in the rule".into()));
        }
        // `rewrite [continue|stop] { name ... \n answer ... }`: the lines make one rule.
        let mut args = d.args.clone();
        if d.block.is_some() {
            for o in d.options() {
                args.push(o.name.clone());
                args.extend(o.args.iter().cloned());
            }
        }
        let rule = parse_rule(ctx, d, &args)?;
        crate::server::shape::rewrite::Rewrites::new(std::slice::from_ref(&rule)).map_err(|e| {
            ctx.invalid(
                e.split_once(": ")
                    .map_or(e.as_str(), |(_, m)| m)
                    .to_string(),
            )
        })?;
        self.shape.rewrites.push(rule);
        Ok(())
    }
}

fn parse_rule(ctx: &Ctx<'_>, d: &Directive, args: &[String]) -> Result<RewriteRule, CorefileError> {
    let mut rest = args;
    let mut rule = RewriteRule::default();
    match rest.first().map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("continue") => {
            rule.continue_ = true;
            rest = &rest[1..];
        }
        Some("stop") => rest = &rest[1..],
        _ => {}
    }
    let Some((field, rest)) = rest.split_first() else {
        return Err(ctx.invalid("needs a rule (`rewrite [continue|stop] FIELD ...`)".into()));
    };
    let two = |rest: &[String]| -> Result<(String, String), CorefileError> {
        match rest {
            [f, t] => Ok((f.clone(), t.clone())),
            _ => Err(ctx.invalid(format!(
                "`{field}` takes FROM and TO, got {} argument(s)",
                rest.len()
            ))),
        }
    };
    match field.to_ascii_lowercase().as_str() {
        "type" => {
            rule.field = RewriteField::Type;
            (rule.from, rule.to) = two(rest)?;
        }
        "class" => {
            rule.field = RewriteField::Class;
            (rule.from, rule.to) = two(rest)?;
        }
        "name" => {
            rule.field = RewriteField::Name;
            let (m, tail) = match rest {
                [from, to] => {
                    rule.from = from.clone();
                    rule.to = to.clone();
                    (NameMatch::Exact, &rest[2..])
                }
                [kind, from, to, tail @ ..] => {
                    let m = match kind.to_ascii_lowercase().as_str() {
                        "exact" => NameMatch::Exact,
                        "prefix" => NameMatch::Prefix,
                        "suffix" => NameMatch::Suffix,
                        "substring" => NameMatch::Substring,
                        "regex" => NameMatch::Regex,
                        other => {
                            return Err(ctx.invalid(format!("{other:?} is not exact, prefix, suffix, substring or regex (with options, the match type must be given)")));
                        }
                    };
                    rule.from = from.clone();
                    rule.to = to.clone();
                    (m, tail)
                }
                _ => return Err(ctx.invalid("`name` takes [TYPE] FROM TO [answer ...]".into())),
            };
            rule.match_ = m;
            answer_rules(ctx, tail, &mut rule)?;
        }
        "edns0" | "ttl" | "cname" | "rcode" => {
            return Err(ctx.unsupported(format!(
                "`rewrite {field}` rewrites {} ; clusterdns rewrites the question's name, type and class only",
                match field.as_str() {
                    "edns0" => "EDNS0 options of the query",
                    "ttl" => "TTLs of the answer",
                    "cname" => "CNAME targets of the answer",
                    _ => "the rcode of the answer",
                }
            )));
        }
        other => {
            let _ = d;
            return Err(ctx.invalid(format!(
                "{other:?} is not a rewrite field (name, type, class, ...)"
            )));
        }
    }
    Ok(rule)
}

/// `answer auto`, `answer name FROM TO`, `answer value FROM TO`, as many as given.
fn answer_rules(
    ctx: &Ctx<'_>,
    mut rest: &[String],
    rule: &mut RewriteRule,
) -> Result<(), CorefileError> {
    while let Some((first, tail)) = rest.split_first() {
        if first != "answer" {
            return Err(ctx.invalid(format!(
                "{first:?}: only `answer auto|name|value` options follow a name rule"
            )));
        }
        match tail {
            [a, tail @ ..] if a == "auto" => {
                rule.answer_auto = true;
                rest = tail;
            }
            [k, from, to, tail @ ..] if k == "name" || k == "value" => {
                let r = RegexRewrite {
                    from: from.clone(),
                    to: to.clone(),
                };
                if k == "name" {
                    rule.answer_name.push(r);
                } else {
                    rule.answer_value.push(r);
                }
                rest = tail;
            }
            _ => {
                return Err(
                    ctx.invalid("`answer` takes `auto`, `name FROM TO` or `value FROM TO`".into())
                );
            }
        }
    }
    Ok(())
}
