//! Snippets `(name) { ... }` and `import` lines: an import names a snippet, a file, or a glob of
//! files (`custom/*.server`), read and lexed in place, as CoreDNS does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::lexer::{Token, lex};
use super::{CorefileError, Options};

/// Expands snippets and imports in a token stream.
pub(super) struct Expander<'a> {
    opts: &'a Options,
    snippets: BTreeMap<String, Vec<Token>>,
    /// Notes for the conversion (an import glob that matched no file).
    pub(super) notes: Vec<String>,
}

/// Where keys of a coredns-custom ConfigMap given as YAML appear in positions (`custom/x.server`).
const CUSTOM_PREFIX: &str = "custom";

/// Imports nested deeper than this are a cycle, as CoreDNS (Caddy) treats them.
const MAX_IMPORT_DEPTH: usize = 10;

impl<'a> Expander<'a> {
    pub(super) fn new(opts: &'a Options) -> Self {
        Expander {
            opts,
            snippets: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// Take snippet definitions out of `tokens` and replace every `import` with what it names.
    pub(super) fn expand(
        &mut self,
        tokens: Vec<Token>,
        depth: usize,
    ) -> Result<Vec<Token>, CorefileError> {
        let tokens = self.take_snippets(tokens)?;
        let mut out = Vec::with_capacity(tokens.len());
        let mut i = 0;
        while i < tokens.len() {
            let t = &tokens[i];
            let line_start = i == 0 || !tokens[i - 1].same_line(t) || tokens[i - 1].is("{");
            if !(t.is("import") && line_start) {
                out.push(t.clone());
                i += 1;
                continue;
            }
            let mut j = i + 1;
            let mut args = Vec::new();
            while j < tokens.len()
                && tokens[j].same_line(t)
                && !tokens[j].is("}")
                && !tokens[j].is("{")
            {
                args.push(tokens[j].clone());
                j += 1;
            }
            if args.is_empty() {
                return Err(CorefileError::Syntax {
                    at: t.pos(),
                    message: "import needs a file, a glob or a snippet name".into(),
                });
            }
            if depth >= MAX_IMPORT_DEPTH {
                return Err(CorefileError::Import {
                    at: t.pos(),
                    pattern: args[0].text.clone(),
                    message: format!(
                        "imports nest deeper than {MAX_IMPORT_DEPTH} (an import cycle?)"
                    ),
                });
            }
            for arg in &args {
                if let Some(snippet) = self.snippets.get(&arg.text).cloned() {
                    // The snippet's tokens keep their own lines: they group as written inside
                    // the snippet, and errors point there.
                    out.extend(self.expand(snippet, depth + 1)?);
                    continue;
                }
                for path in self.resolve(arg)? {
                    let text = match self.custom_file(&path) {
                        Some(text) => text.to_string(),
                        None => {
                            std::fs::read_to_string(&path).map_err(|e| CorefileError::Import {
                                at: t.pos(),
                                pattern: arg.text.clone(),
                                message: format!("cannot read {}: {e}", path.display()),
                            })?
                        }
                    };
                    let display = self.display_path(&path);
                    let file: Rc<str> = Rc::from(display.as_str());
                    let imported = lex(&text, &file)?;
                    out.extend(self.expand(imported, depth + 1)?);
                }
            }
            i = j;
        }
        Ok(out)
    }

    /// Remove `(name) { ... }` definitions at the top level and remember them.
    fn take_snippets(&mut self, tokens: Vec<Token>) -> Result<Vec<Token>, CorefileError> {
        let mut out = Vec::with_capacity(tokens.len());
        let mut depth = 0usize;
        let mut i = 0;
        while i < tokens.len() {
            let t = &tokens[i];
            let is_def = depth == 0
                && !t.quoted
                && t.text.len() > 2
                && t.text.starts_with('(')
                && t.text.ends_with(')')
                && tokens.get(i + 1).is_some_and(|n| n.is("{"));
            if is_def {
                let name = t.text[1..t.text.len() - 1].to_string();
                let mut level = 0usize;
                let mut j = i + 1;
                let mut body = Vec::new();
                loop {
                    let Some(u) = tokens.get(j) else {
                        return Err(CorefileError::Syntax {
                            at: t.pos(),
                            message: format!("snippet ({name}) is not closed with }}"),
                        });
                    };
                    if u.is("{") {
                        level += 1;
                        if level > 1 {
                            body.push(u.clone());
                        }
                    } else if u.is("}") {
                        level -= 1;
                        if level == 0 {
                            break;
                        }
                        body.push(u.clone());
                    } else {
                        body.push(u.clone());
                    }
                    j += 1;
                }
                self.snippets.insert(name, body);
                i = j + 1;
                continue;
            }
            if t.is("{") {
                depth += 1;
            } else if t.is("}") {
                depth = depth.saturating_sub(1);
            }
            out.push(t.clone());
            i += 1;
        }
        Ok(out)
    }

    fn display_path(&self, path: &Path) -> String {
        for base in [
            self.opts.custom_dir.as_deref(),
            Some(self.opts.base_dir.as_path()),
        ]
        .into_iter()
        .flatten()
        {
            if let Ok(rel) = path.strip_prefix(base) {
                let rel = rel.display().to_string();
                if Some(base) == self.opts.custom_dir.as_deref() {
                    return format!("custom/{rel}");
                }
                return rel;
            }
        }
        path.display().to_string()
    }

    /// A file of the coredns-custom ConfigMap given as YAML ([`Options::custom_files`]), by
    /// the `custom/<key>` path [`Self::resolve`] gave it.
    fn custom_file(&self, path: &Path) -> Option<&str> {
        let files = self.opts.custom_files.as_ref()?;
        let key = path.strip_prefix(CUSTOM_PREFIX).ok()?.to_str()?;
        files.get(key).map(String::as_str)
    }

    /// The files an import pattern names, sorted; a glob may match none (a note, as CoreDNS
    /// only warns), a plain path must exist.
    fn resolve(&mut self, arg: &Token) -> Result<Vec<PathBuf>, CorefileError> {
        let pattern = arg.text.as_str();
        let err = |message: String| CorefileError::Import {
            at: arg.pos(),
            pattern: pattern.to_string(),
            message,
        };
        if let Some(files) = &self.opts.custom_files
            && let Some(rest) = ["custom/", "./custom/", "/etc/coredns/custom/"]
                .iter()
                .find_map(|p| pattern.strip_prefix(p))
        {
            let found: Vec<PathBuf> = files
                .keys()
                .filter(|k| !k.starts_with("..") && glob_match(rest, k))
                .map(|k| Path::new(CUSTOM_PREFIX).join(k))
                .collect();
            if found.is_empty() && !rest.contains(['*', '?']) {
                return Err(err(format!(
                    "the coredns-custom ConfigMap has no key {rest}"
                )));
            }
            if found.is_empty() {
                self.notes.push(format!(
                    "{}: `import {pattern}` matched no key of the coredns-custom ConfigMap; nothing imported, as CoreDNS does",
                    arg.pos()
                ));
            }
            return Ok(found);
        }
        let mut path = PathBuf::from(pattern);
        if let Some(custom) = &self.opts.custom_dir {
            for prefix in ["custom/", "./custom/", "/etc/coredns/custom/"] {
                if let Some(rest) = pattern.strip_prefix(prefix) {
                    path = custom.join(rest);
                }
            }
        }
        if path.is_relative() {
            path = self.opts.base_dir.join(path);
        }
        let is_glob = |s: &str| s.contains(['*', '?', '[']);
        let file_pat = path
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if is_glob(&dir.to_string_lossy()) {
            return Err(err(
                "globs are supported in the file name only, not in folders".into(),
            ));
        }
        if !is_glob(&file_pat) {
            if !path.is_file() {
                return Err(err(format!("{} does not exist", path.display())));
            }
            return Ok(vec![path]);
        }
        if file_pat.contains('[') {
            return Err(err(
                "character classes `[...]` are not supported in import globs; use * and ?".into(),
            ));
        }
        let mut found = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                // A mounted ConfigMap keeps its data under `..data` and `..<timestamp>`.
                if name.starts_with("..") {
                    continue;
                }
                if glob_match(&file_pat, &name) && e.path().is_file() {
                    found.push(e.path());
                }
            }
        }
        found.sort();
        if found.is_empty() {
            self.notes.push(format!(
                "{}: `import {pattern}` matched no file in {} (an empty coredns-custom ConfigMap?); \
                 nothing imported, as CoreDNS does",
                arg.pos(),
                dir.display()
            ));
        }
        Ok(found)
    }
}

/// `*` matches any run of characters, `?` one character.
fn glob_match(pat: &str, name: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::super::{parse, test_options};
    use super::*;

    #[test]
    fn snippets_expand() {
        let c = parse(
            "(common) {\n errors\n log\n}\n.:53 {\n import common\n forward . 10.0.0.1\n}\n",
            &test_options(),
        )
        .unwrap();
        assert_eq!(c.blocks.len(), 1);
        let names: Vec<_> = c.blocks[0]
            .directives
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(names, ["errors", "log", "forward"]);
    }

    #[test]
    fn glob_matching() {
        assert!(glob_match("*.server", "corp.server"));
        assert!(!glob_match("*.server", "corp.override"));
        assert!(glob_match("a?c*", "abcdef"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("*.server", "..data"));
    }
}
