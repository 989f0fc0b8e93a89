//! Kubernetes label selectors in their string form (`k=v,k2!=v,k3 in (a,b),k4 notin (c),k5,!k6`),
//! as CoreDNS's `labels` and `namespace_labels` options take them. Pure text, below the config
//! (which validates `cluster.labels` with it) and the zone builder (which matches with it).

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; an empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector(Vec<Req>);

impl Selector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        // split on commas that are not inside parentheses
        let mut depth = 0;
        let mut start = 0;
        let mut parts = Vec::new();
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        for p in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            reqs.push(parse_req(p)?);
        }
        Ok(Selector(reqs))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => labels.get(k) == Some(v),
            Req::NotEq(k, v) => labels.get(k) != Some(v),
            Req::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Req::NotIn(k, vs) => !labels.get(k).is_some_and(|l| vs.contains(l)),
            Req::Exists(k) => labels.contains_key(k),
            Req::NotExists(k) => !labels.contains_key(k),
        })
    }
}

fn valid_key(k: &str) -> Result<String, String> {
    if k.is_empty()
        || !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        return Err(format!("bad label key {k:?}"));
    }
    Ok(k.to_string())
}

fn parse_req(p: &str) -> Result<Req, String> {
    if let Some(k) = p.strip_prefix('!') {
        return Ok(Req::NotExists(valid_key(k.trim())?));
    }
    if let Some((k, v)) = p.split_once("!=") {
        return Ok(Req::NotEq(valid_key(k.trim())?, v.trim().into()));
    }
    if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
        return Ok(Req::Eq(valid_key(k.trim())?, v.trim().into()));
    }
    let words: Vec<&str> = p.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let rest = words[1].trim();
        let (op, list) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let list = list.trim();
        let list = list
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or_else(|| format!("expected (values) in {p:?}"))?;
        let vals: Vec<String> = list
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        return match op {
            "in" => Ok(Req::In(valid_key(words[0])?, vals)),
            "notin" => Ok(Req::NotIn(valid_key(words[0])?, vals)),
            _ => Err(format!("unknown operator {op:?} in {p:?}")),
        };
    }
    Ok(Req::Exists(valid_key(p)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_forms() {
        let s = Selector::parse("app=web, tier in (a, b),!legacy,env!=dev").unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a"), ("legacy", "")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a"), ("env", "dev")])));
        assert!(Selector::parse("").unwrap().matches(&labels(&[])));
        assert!(Selector::parse("a in b").is_err());
        assert!(
            Selector::parse("x notin (1),y")
                .unwrap()
                .matches(&labels(&[("y", "")]))
        );
    }
}
