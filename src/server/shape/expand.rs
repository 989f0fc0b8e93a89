//! The template fields of CoreDNS's `template` plugin, without a Go template engine: the subset
//! its documentation and examples use. A record text is split once, at config time, into
//! literal text and actions; each query only substitutes.
//!
//! Understood actions: `.Name`, `.Zone`, `.Class`, `.Type`, `.Remote`, `.Regex`, `.Group.NAME`,
//! `index .Match N`, `index .Group "NAME"`, `parseInt ARG BASE BITS` (Go's `strconv.ParseUint`),
//! and the `{{-` / `-}}` trim markers. Anything else (`.Meta`, `.Var`, `.Message`, pipelines,
//! variables) is refused when the config is read, with the reason.

/// A compiled record text.
#[derive(Debug, Clone)]
pub(crate) struct Expansion {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Action(Action),
}

#[derive(Debug, Clone, PartialEq)]
enum Action {
    Value(Value),
    /// `parseInt VALUE BASE BITS`.
    ParseInt(Value, u32, u32),
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Name,
    Zone,
    Class,
    Type,
    Remote,
    Regex,
    /// `.Group.x`, `index .Group "x"`: a group by name or number (missing: empty, as Go prints
    /// a missing key of a `map[string]string`).
    Group(String),
    /// `index .Match N`: out of range is an error (SERVFAIL), as in Go.
    Match(usize),
    Literal(String),
}

/// What a query gives the template.
pub(crate) struct Data<'a> {
    pub(crate) name: &'a str,
    pub(crate) zone: &'a str,
    pub(crate) class: &'a str,
    pub(crate) qtype: &'a str,
    pub(crate) remote: &'a str,
    pub(crate) regex: &'a str,
    /// The match and its groups (`None`: a group that took no part).
    pub(crate) matches: &'a [Option<&'a str>],
    /// Group names by index (None for unnamed groups).
    pub(crate) group_names: &'a [Option<&'a str>],
}

impl Expansion {
    /// Compile a record text. Errors say which action is not understood and why.
    pub(crate) fn parse(text: &str) -> Result<Expansion, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut trim_next = false;
        while let Some(open) = rest.find("{{") {
            let mut lit = &rest[..open];
            if trim_next {
                lit = lit.trim_start();
            }
            let mut inner_start = open + 2;
            let trim_before = rest[inner_start..].starts_with("- ");
            if trim_before {
                lit = lit.trim_end();
                inner_start += 1;
            }
            if !lit.is_empty() {
                parts.push(Part::Text(lit.to_string()));
            }
            let close = rest[inner_start..]
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in {text:?}"))?
                + inner_start;
            let mut inner = &rest[inner_start..close];
            trim_next = inner.ends_with(" -");
            if trim_next {
                inner = &inner[..inner.len() - 1];
            }
            parts.push(Part::Action(action(inner.trim())?));
            rest = &rest[close + 2..];
        }
        let lit = if trim_next { rest.trim_start() } else { rest };
        if !lit.is_empty() {
            parts.push(Part::Text(lit.to_string()));
        }
        Ok(Expansion { parts })
    }

    /// Substitute the query's data. Errors (an index out of range, a bad number for
    /// `parseInt`) make the reply SERVFAIL, as a failed Go template does in CoreDNS.
    pub(crate) fn expand(&self, d: &Data<'_>) -> Result<String, String> {
        let mut out = String::with_capacity(64);
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action(Action::Value(v)) => out.push_str(&value(v, d)?),
                Part::Action(Action::ParseInt(v, base, bits)) => {
                    let s = value(v, d)?;
                    let n = u64::from_str_radix(&s, *base)
                        .map_err(|_| format!("parseInt: {s:?} is not a base-{base} number"))?;
                    if *bits < 64 && n >> bits != 0 {
                        return Err(format!("parseInt: {s:?} is out of range for {bits} bits"));
                    }
                    out.push_str(&n.to_string());
                }
            }
        }
        Ok(out)
    }
}

fn value(v: &Value, d: &Data<'_>) -> Result<String, String> {
    Ok(match v {
        Value::Name => d.name.into(),
        Value::Zone => d.zone.into(),
        Value::Class => d.class.into(),
        Value::Type => d.qtype.into(),
        Value::Remote => d.remote.into(),
        Value::Regex => d.regex.into(),
        Value::Literal(s) => s.clone(),
        Value::Match(i) => match d.matches.get(*i) {
            Some(m) => m.unwrap_or("").into(),
            None => return Err(format!("index .Match {i}: index out of range")),
        },
        Value::Group(g) => {
            let by_number = g.parse::<usize>().ok().and_then(|i| d.matches.get(i));
            let by_name = d
                .group_names
                .iter()
                .position(|n| n.is_some_and(|n| n == g))
                .and_then(|i| d.matches.get(i));
            // Go fills the map with the numbers first, then the names: a name wins.
            by_name.or(by_number).and_then(|m| *m).unwrap_or("").into()
        }
    })
}

/// Split an action into words; a quoted string is one word (its quotes kept).
fn words(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += 1 + (b[i] == b'\\') as usize;
            }
            if i >= b.len() {
                return Err(format!("unterminated string in `{{{{ {s} }}}}`"));
            }
            i += 1;
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += 1;
            }
        }
        out.push(&s[start..i]);
    }
    Ok(out)
}

fn action(s: &str) -> Result<Action, String> {
    let w = words(s)?;
    match w.as_slice() {
        [one] => Ok(Action::Value(operand(one, s)?)),
        ["index", ..] => Ok(Action::Value(index(&w, s)?)),
        ["parseInt", rest @ ..] => {
            let (v, tail) = match rest {
                ["(", ..] => return Err(unsupported(s, "parenthesised arguments")),
                ["index", ..] if rest.len() == 5 => (index(&rest[..3], s)?, &rest[3..]),
                [v, tail @ ..] => (operand(v, s)?, tail),
                [] => return Err(format!("`{{{{ {s} }}}}`: parseInt needs a value")),
            };
            let [base, bits] = tail else {
                return Err(format!(
                    "`{{{{ {s} }}}}`: parseInt takes a value, a base and a bit size"
                ));
            };
            let base: u32 = base
                .parse()
                .ok()
                .filter(|b| (2..=36).contains(b))
                .ok_or_else(|| format!("`{{{{ {s} }}}}`: base {base} is not 2 to 36"))?;
            let bits: u32 = bits
                .parse()
                .ok()
                .filter(|b| (1..=64).contains(b))
                .ok_or_else(|| format!("`{{{{ {s} }}}}`: bit size {bits} is not 1 to 64"))?;
            Ok(Action::ParseInt(v, base, bits))
        }
        [first, ..] => {
            // `.Meta "x"` and friends: the field's own reason first.
            operand(first, s)?;
            Err(unsupported(s, "this action"))
        }
        [] => Err(unsupported(s, "an empty action")),
    }
}

fn index(w: &[&str], s: &str) -> Result<Value, String> {
    match w {
        ["index", ".Match", n] => n
            .parse()
            .map(Value::Match)
            .map_err(|_| format!("`{{{{ {s} }}}}`: {n} is not an index")),
        ["index", ".Group", key] => Ok(Value::Group(unquote(key).to_string())),
        _ => Err(unsupported(s, "this use of `index`")),
    }
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

fn operand(word: &str, s: &str) -> Result<Value, String> {
    Ok(match word {
        ".Name" => Value::Name,
        ".Zone" => Value::Zone,
        ".Class" => Value::Class,
        ".Type" => Value::Type,
        ".Remote" => Value::Remote,
        ".Regex" => Value::Regex,
        w if w.starts_with('"') => Value::Literal(unquote(w).to_string()),
        w if w.starts_with(".Group.") => Value::Group(w[".Group.".len()..].to_string()),
        w if w.starts_with(".Meta") => {
            return Err(format!(
                "`{{{{ {s} }}}}`: `.Meta` reads CoreDNS's plugin metadata, which clusterdns does not have"
            ));
        }
        w if w.starts_with(".Var") => {
            return Err(format!(
                "`{{{{ {s} }}}}`: `.Var` needs `var`/`expr` expressions, which clusterdns does not evaluate"
            ));
        }
        ".Message" | ".Question" => {
            return Err(format!(
                "`{{{{ {s} }}}}`: the whole message is not available to clusterdns templates; use .Name, .Type and .Class"
            ));
        }
        _ => return Err(unsupported(s, word)),
    })
}

fn unsupported(s: &str, what: &str) -> String {
    format!(
        "`{{{{ {s} }}}}`: {what} is not one of the template fields clusterdns understands (.Name, .Zone, .Class, .Type, .Remote, .Group.NAME, index .Match N, index .Group \"NAME\", parseInt)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data<'a>(m: &'a [Option<&'a str>], names: &'a [Option<&'a str>]) -> Data<'a> {
        Data {
            name: "ip-10-95-12-8.example.",
            zone: "example.",
            class: "IN",
            qtype: "A",
            remote: "10.240.0.1",
            regex: "x",
            matches: m,
            group_names: names,
        }
    }

    #[test]
    fn coredns_readme_examples() {
        let m = [
            Some("ip-10-95-12-8.example."),
            Some(""),
            Some("95"),
            Some("12"),
            Some("8"),
        ];
        let names = [None, None, Some("b"), Some("c"), Some("d")];
        let d = data(&m, &names);
        let e =
            Expansion::parse("{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}")
                .unwrap();
        assert_eq!(
            e.expand(&d).unwrap(),
            "ip-10-95-12-8.example. 60 IN A 10.95.12.8"
        );
        let e =
            Expansion::parse("{{ index .Match 2 }}-{{ index .Group \"c\" }}-{{.Group.9}}").unwrap();
        assert_eq!(e.expand(&d).unwrap(), "95-12-");
        let e = Expansion::parse("{{ index .Match 5 }}").unwrap();
        assert!(e.expand(&d).unwrap_err().contains("out of range"));
        let e =
            Expansion::parse("invalid. 60 {{ .Class }} SOA a. b. (1 60 60 60 60) {{- \" \" -}} x")
                .unwrap();
        assert_eq!(
            e.expand(&d).unwrap(),
            "invalid. 60 IN SOA a. b. (1 60 60 60 60) x"
        );
        let e =
            Expansion::parse("{{ .Name }} 60 IN A {{ .Remote }} {{ .Zone }} {{ .Type }}").unwrap();
        assert_eq!(
            e.expand(&d).unwrap(),
            "ip-10-95-12-8.example. 60 IN A 10.240.0.1 example. A"
        );
    }

    #[test]
    fn parse_int_as_go() {
        let m = [Some("x"), Some("5f"), Some("gg")];
        let names = [None, Some("b"), Some("c")];
        let d = data(&m, &names);
        let e = Expansion::parse("10.{{ parseInt .Group.b 16 8 }}").unwrap();
        assert_eq!(e.expand(&d).unwrap(), "10.95");
        let e = Expansion::parse("{{ parseInt .Group.c 16 8 }}").unwrap();
        assert!(e.expand(&d).is_err());
        let e = Expansion::parse("{{ parseInt \"1ff\" 16 8 }}").unwrap();
        assert!(e.expand(&d).unwrap_err().contains("8 bits"));
    }

    #[test]
    fn unknown_fields_are_refused_with_reason() {
        let e = Expansion::parse("{{ .Meta \"kubernetes/client-namespace\" }}").unwrap_err();
        assert!(e.contains("metadata"), "{e}");
        assert!(
            Expansion::parse("{{ .Var.ip }}")
                .unwrap_err()
                .contains("var")
        );
        assert!(Expansion::parse("{{ .Name | printf }}").is_err());
        assert!(
            Expansion::parse("{{ .Name ")
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(Expansion::parse("{{ $x := 1 }}").is_err());
    }
}
