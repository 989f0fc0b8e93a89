//! Converting a CoreDNS Corefile into a clusterdns config (`clusterdns convert-corefile`).
//!
//! Two steps: [`parse`] reads the Corefile (Caddyfile syntax: server blocks `zone:port { ... }`,
//! directives with arguments and nested blocks, `#` comments, quoted strings, snippets
//! `(name) { ... }`, and `import` of snippets or of files by glob, resolved against a base
//! folder as CoreDNS does for AKS's `import custom/*.server` / `custom/*.override`); then
//! [`convert`] maps what the server blocks do onto [`crate::config::Config`] and writes it as
//! YAML, with notes on everything that changed meaning on the way.
//!
//! The rule the converter follows: **what clients get back must not change silently.**
//! - A directive that changes answers and that clusterdns cannot express (`rewrite`, `template`,
//!   `autopath`, `file`, `acl`, ...) is a [`CorefileError::Unsupported`] naming the directive,
//!   its server block and line, and why.
//! - A directive that only concerns tuning or observability and has no clusterdns equivalent
//!   (`reload`, `debug`, a cache option, `log` formats) is dropped with a note.
//! - Defaults follow the Corefile, not clusterdns: a Corefile without `cache` converts to
//!   `cache.enabled: false`, one without `loadbalance` to `cluster.loadbalance: false`, and
//!   prefetch and serve-stale stay off unless the Corefile turns them on.
//!
//! How server blocks map:
//! | Corefile | clusterdns |
//! |---|---|
//! | the `.` block and the block holding `kubernetes` | the whole config (`listen`, `cluster`, `forward`, `cache`, ...) |
//! | a block for another zone with `forward . IPs` (coredns-custom `*.server`) | `forward.stub_domains` |
//! | a block for another zone with `forward . /etc/resolv.conf`, while `.` forwards there too | nothing: ordinary forwarding |
//! | `import custom/*.override` in the `.` block | its directives, as if written there |
//! | `health`, `ready`, `prometheus` in any block | process-wide listeners, as in CoreDNS |

// Errors carry the position, block, directive and reason as owned strings; they are built once,
// on the cold path of a one-shot command, so their size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use crate::config::{self, Config};
use crate::zone::names::parse_domain;

/// Where the converted config expects files the conversion generates (the ConfigMap's mount).
pub const CONFIG_DIR: &str = "/etc/clusterdns";

/// The result of a conversion.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// The clusterdns config, YAML, with the notes repeated as comments at the top.
    pub config_yaml: String,
    /// What changed meaning or was dropped, one sentence each, with the Corefile line.
    pub notes: Vec<String>,
    /// The parsed and validated config (what `config_yaml` parses to).
    pub config: Config,
    /// Files the config refers to that the conversion wrote itself, by ConfigMap key: e.g. the
    /// inline entries of a `hosts { ... }` block become key `hosts`, read from
    /// `/etc/clusterdns/hosts` when the ConfigMap is mounted at [`CONFIG_DIR`].
    pub files: BTreeMap<String, String>,
}

/// How a conversion finds imported files.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Relative `import` paths are resolved against this folder (the Corefile's folder;
    /// `/etc/coredns` in a CoreDNS pod).
    pub base_dir: PathBuf,
    /// If set, `import custom/...` (and `import /etc/coredns/custom/...`) read from this folder
    /// instead: where the coredns-custom ConfigMap was saved (`kubectl get cm coredns-custom`).
    pub custom_dir: Option<PathBuf>,
    /// The Corefile's name in positions and messages; `Corefile` if empty.
    pub file_name: String,
}

/// A position in the Corefile or in a file it imports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Why a Corefile cannot be converted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CorefileError {
    /// The text is not a well-formed Corefile.
    #[error("{at}: {message}")]
    Syntax { at: Pos, message: String },
    /// An `import` that cannot be resolved.
    #[error("{at}: import {pattern:?}: {message}")]
    Import {
        at: Pos,
        pattern: String,
        message: String,
    },
    /// A directive (or one option of it) that clusterdns cannot carry over.
    #[error(
        "{at}: {} in server block `{block}` cannot be carried over: {reason}",
        what(directive, option)
    )]
    Unsupported {
        at: Pos,
        /// The server block's keys, e.g. `.:53`.
        block: String,
        /// The plugin, e.g. `rewrite` or `forward`.
        directive: String,
        /// The option inside the plugin's block, e.g. `except` of `forward`.
        option: Option<String>,
        reason: String,
    },
    /// A directive whose arguments are wrong.
    #[error(
        "{at}: {} in server block `{block}`: {message}",
        what(directive, option)
    )]
    Invalid {
        at: Pos,
        block: String,
        directive: String,
        option: Option<String>,
        message: String,
    },
    /// The converted config does not pass [`Config::validate`] (a converter bug if it happens).
    #[error("the converted config is not valid: {0}")]
    Config(String),
}

fn what(directive: &str, option: &Option<String>) -> String {
    match option {
        Some(o) => format!("`{directive}` option `{o}`"),
        None => format!("`{directive}`"),
    }
}

impl CorefileError {
    /// The directive the error is about, if any.
    pub fn directive(&self) -> Option<&str> {
        match self {
            CorefileError::Unsupported { directive, .. }
            | CorefileError::Invalid { directive, .. } => Some(directive),
            _ => None,
        }
    }

    /// The option of the directive the error is about, if any.
    pub fn option(&self) -> Option<&str> {
        match self {
            CorefileError::Unsupported { option, .. } | CorefileError::Invalid { option, .. } => {
                option.as_deref()
            }
            _ => None,
        }
    }

    /// The server block (its keys) the error is in, if any.
    pub fn block(&self) -> Option<&str> {
        match self {
            CorefileError::Unsupported { block, .. } | CorefileError::Invalid { block, .. } => {
                Some(block)
            }
            _ => None,
        }
    }

    /// The position the error is about, if any.
    pub fn pos(&self) -> Option<&Pos> {
        match self {
            CorefileError::Syntax { at, .. }
            | CorefileError::Import { at, .. }
            | CorefileError::Unsupported { at, .. }
            | CorefileError::Invalid { at, .. } => Some(at),
            CorefileError::Config(_) => None,
        }
    }
}

/// Convert Corefile text; relative imports are resolved against `base_dir`.
pub fn convert(corefile_text: &str, base_dir: &Path) -> Result<Conversion, CorefileError> {
    convert_with(
        corefile_text,
        &Options {
            base_dir: base_dir.to_path_buf(),
            ..Options::default()
        },
    )
}

/// Convert Corefile text with [`Options`] (e.g. a separate folder for `import custom/...`).
pub fn convert_with(corefile_text: &str, opts: &Options) -> Result<Conversion, CorefileError> {
    let corefile = parse(corefile_text, opts)?;
    Converter::default().run(corefile)
}

// ---------------------------------------------------------------------------------------------
// Syntax tree and parser
// ---------------------------------------------------------------------------------------------

/// A parsed Corefile with its imports expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct Corefile {
    pub blocks: Vec<ServerBlock>,
    /// Notes from parsing (e.g. an import glob that matched no file).
    pub notes: Vec<String>,
}

/// One server block: `keys { directives }`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerBlock {
    /// As written, e.g. `.:53`, `dns://corp.example:53`.
    pub keys: Vec<String>,
    pub directives: Vec<Directive>,
    pub at: Pos,
}

impl ServerBlock {
    /// The keys as one label, e.g. `.:53` or `a.example:53 b.example:53`.
    pub fn label(&self) -> String {
        self.keys.join(" ")
    }
}

/// One directive: a name, arguments on the same line, and an optional `{ }` block of
/// sub-directives (a plugin's options).
#[derive(Debug, Clone, PartialEq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Directive>>,
    pub at: Pos,
}

impl Directive {
    fn options(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }
}

#[derive(Debug, Clone)]
struct Token {
    text: String,
    quoted: bool,
    file: Rc<str>,
    line: usize,
}

impl Token {
    fn pos(&self) -> Pos {
        Pos {
            file: self.file.to_string(),
            line: self.line,
        }
    }
    fn is(&self, s: &str) -> bool {
        !self.quoted && self.text == s
    }
    fn same_line(&self, other: &Token) -> bool {
        self.line == other.line && Rc::ptr_eq(&self.file, &other.file)
    }
}

/// Split text into tokens as Caddy's lexer does: whitespace separates, `"..."` quotes (with
/// `\"`), `#` starts a comment to the end of the line.
fn lex(text: &str, file: &Rc<str>) -> Result<Vec<Token>, CorefileError> {
    let mut tokens = Vec::new();
    let mut line = 1usize;
    let mut cur = String::new();
    let mut cur_line = 0usize;
    let mut quoted = false;
    let mut was_quoted = false;
    let mut escaped = false;
    let mut comment = false;
    let push = |cur: &mut String, cur_line: usize, was_quoted: bool, tokens: &mut Vec<Token>| {
        tokens.push(Token {
            text: std::mem::take(cur),
            quoted: was_quoted,
            file: file.clone(),
            line: cur_line,
        });
    };
    for ch in text.chars() {
        if quoted {
            if !escaped && ch == '\\' {
                escaped = true;
                continue;
            }
            if !escaped && ch == '"' {
                quoted = false;
                push(&mut cur, cur_line, true, &mut tokens);
                was_quoted = false;
                continue;
            }
            if ch == '\n' {
                line += 1;
            }
            if escaped && ch != '"' {
                cur.push('\\');
            }
            escaped = false;
            cur.push(ch);
            continue;
        }
        if ch.is_whitespace() {
            if ch == '\n' {
                if !cur.is_empty() {
                    push(&mut cur, cur_line, was_quoted, &mut tokens);
                    was_quoted = false;
                }
                line += 1;
                comment = false;
                continue;
            }
            if !cur.is_empty() {
                push(&mut cur, cur_line, was_quoted, &mut tokens);
                was_quoted = false;
            }
            continue;
        }
        if ch == '#' {
            comment = true;
        }
        if comment {
            continue;
        }
        if cur.is_empty() {
            cur_line = line;
            if ch == '"' {
                quoted = true;
                was_quoted = true;
                continue;
            }
        }
        cur.push(ch);
    }
    if quoted {
        return Err(CorefileError::Syntax {
            at: Pos {
                file: file.to_string(),
                line: cur_line,
            },
            message: "a quoted string is not closed".into(),
        });
    }
    if !cur.is_empty() {
        push(&mut cur, cur_line, was_quoted, &mut tokens);
    }
    for t in &tokens {
        if !t.quoted && (t.text.contains("{$") || t.text.contains("{%")) {
            return Err(CorefileError::Syntax {
                at: t.pos(),
                message: format!(
                    "{:?} is an environment placeholder that CoreDNS fills in from its own \
                     environment when it starts; write the value itself",
                    t.text
                ),
            });
        }
    }
    Ok(tokens)
}

/// Parse Corefile text, expanding snippets and imports.
pub fn parse(corefile_text: &str, opts: &Options) -> Result<Corefile, CorefileError> {
    let name = if opts.file_name.is_empty() {
        "Corefile".to_string()
    } else {
        opts.file_name.clone()
    };
    let file: Rc<str> = Rc::from(name.as_str());
    let tokens = lex(corefile_text, &file)?;
    let mut ex = Expander {
        opts,
        snippets: BTreeMap::new(),
        notes: Vec::new(),
    };
    let tokens = ex.expand(tokens, 0)?;
    let blocks = parse_server_blocks(&tokens, &file)?;
    Ok(Corefile {
        blocks,
        notes: ex.notes,
    })
}

struct Expander<'a> {
    opts: &'a Options,
    snippets: BTreeMap<String, Vec<Token>>,
    notes: Vec<String>,
}

const MAX_IMPORT_DEPTH: usize = 10;

impl Expander<'_> {
    /// Take snippet definitions out of `tokens` and replace every `import` with what it names.
    fn expand(&mut self, tokens: Vec<Token>, depth: usize) -> Result<Vec<Token>, CorefileError> {
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
                    // Re-anchor the snippet's tokens on the import's line so that they group as
                    // written inside the snippet but report the snippet's own lines.
                    out.extend(self.expand(snippet, depth + 1)?);
                    continue;
                }
                for path in self.resolve(arg)? {
                    let text =
                        std::fs::read_to_string(&path).map_err(|e| CorefileError::Import {
                            at: t.pos(),
                            pattern: arg.text.clone(),
                            message: format!("cannot read {}: {e}", path.display()),
                        })?;
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

    /// The files an import pattern names, sorted; a glob may match none (a note, as CoreDNS
    /// only warns), a plain path must exist.
    fn resolve(&mut self, arg: &Token) -> Result<Vec<PathBuf>, CorefileError> {
        let pattern = arg.text.as_str();
        let err = |message: String| CorefileError::Import {
            at: arg.pos(),
            pattern: pattern.to_string(),
            message,
        };
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

fn parse_server_blocks(
    tokens: &[Token],
    file: &Rc<str>,
) -> Result<Vec<ServerBlock>, CorefileError> {
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let first = &tokens[i];
        if first.is("{") || first.is("}") {
            return Err(CorefileError::Syntax {
                at: first.pos(),
                message: format!(
                    "unexpected `{}` where a server block's zone was expected",
                    first.text
                ),
            });
        }
        // Keys: the tokens on the first line, continued while a line ends with a comma.
        let mut keys = Vec::new();
        let mut last = first.clone();
        while i < tokens.len() && !tokens[i].is("{") {
            let t = &tokens[i];
            if !keys.is_empty() && !t.same_line(&last) && !last.text.ends_with(',') {
                break;
            }
            for k in t.text.split(',').map(str::trim).filter(|k| !k.is_empty()) {
                keys.push(k.to_string());
            }
            last = t.clone();
            i += 1;
        }
        let at = first.pos();
        if i < tokens.len() && tokens[i].is("{") {
            i += 1;
            let directives = parse_directives(tokens, &mut i, true, &at)?;
            blocks.push(ServerBlock {
                keys,
                directives,
                at,
            });
        } else {
            // Only a Corefile's one and only server block may omit its braces: then the rest
            // of the file is its body.
            if !blocks.is_empty() || keys.iter().any(|k| !looks_like_key(k)) {
                return Err(CorefileError::Syntax {
                    at,
                    message: format!("`{}` is not followed by a `{{` block", keys.join(" ")),
                });
            }
            let directives = parse_directives(tokens, &mut i, false, &at)?;
            blocks.push(ServerBlock {
                keys,
                directives,
                at,
            });
        }
    }
    if blocks.is_empty() {
        return Err(CorefileError::Syntax {
            at: Pos {
                file: file.to_string(),
                line: 1,
            },
            message: "no server block".into(),
        });
    }
    Ok(blocks)
}

fn looks_like_key(k: &str) -> bool {
    k.contains(':') || k.contains('.')
}

/// The addresses of one `bind` line.
fn bind_addresses(ctx: &Ctx<'_>) -> Result<Vec<IpAddr>, CorefileError> {
    let d = ctx.d;
    if d.args.is_empty() {
        return Err(ctx.invalid("needs at least one address".into()));
    }
    if d.block.is_some() {
        return Err(ctx.unsupported(
            "`bind { except ... }` excludes addresses of an interface; clusterdns listens on the addresses it is given: list them".into(),
        ));
    }
    d.args
        .iter()
        .map(|a| {
            a.parse::<IpAddr>().map_err(|_| {
                ctx.unsupported(format!(
                    "{a:?} is not an IP address: clusterdns listens on addresses, not interface names; write the interface's address"
                ))
            })
        })
        .collect()
}

fn set_at<T>(value: T, o: &Directive, block: &str) -> Option<Set<T>> {
    Some(Set {
        value,
        at: o.at.clone(),
        block: block.to_string(),
    })
}

fn parse_directives(
    tokens: &[Token],
    i: &mut usize,
    until_close: bool,
    open: &Pos,
) -> Result<Vec<Directive>, CorefileError> {
    let mut out = Vec::new();
    loop {
        let Some(t) = tokens.get(*i) else {
            if until_close {
                return Err(CorefileError::Syntax {
                    at: open.clone(),
                    message: "this block is not closed with `}`".into(),
                });
            }
            return Ok(out);
        };
        if t.is("}") {
            if until_close {
                *i += 1;
                return Ok(out);
            }
            return Err(CorefileError::Syntax {
                at: t.pos(),
                message: "`}` without a matching `{`".into(),
            });
        }
        if t.is("{") {
            return Err(CorefileError::Syntax {
                at: t.pos(),
                message: "`{` must follow a directive on the same line".into(),
            });
        }
        *i += 1;
        let mut d = Directive {
            name: t.text.clone(),
            args: Vec::new(),
            block: None,
            at: t.pos(),
        };
        while let Some(a) = tokens.get(*i) {
            if !a.same_line(t) || a.is("}") {
                break;
            }
            *i += 1;
            if a.is("{") {
                d.block = Some(parse_directives(tokens, i, true, &a.pos())?);
                break;
            }
            d.args.push(a.text.clone());
        }
        out.push(d);
    }
}

// ---------------------------------------------------------------------------------------------
// Conversion
// ---------------------------------------------------------------------------------------------

/// A server block's zone and port.
#[derive(Debug, Clone, PartialEq)]
struct Key {
    zone: String,
    port: u16,
}

fn parse_key(raw: &str, block: &ServerBlock) -> Result<Key, CorefileError> {
    let unsupported = |reason: String| CorefileError::Unsupported {
        at: block.at.clone(),
        block: block.label(),
        directive: "server block".into(),
        option: None,
        reason,
    };
    let mut s = raw.to_ascii_lowercase();
    if let Some((scheme, rest)) = s.split_once("://") {
        if scheme != "dns" {
            return Err(unsupported(format!(
                "`{raw}` serves DNS over {scheme}:// (TLS, HTTPS, gRPC or QUIC); clusterdns serves plain DNS over UDP and TCP only"
            )));
        }
        s = rest.to_string();
    }
    let (zone, port) = match s.rsplit_once(':') {
        Some((z, p)) => {
            let port: u16 = p.parse().map_err(|_| CorefileError::Syntax {
                at: block.at.clone(),
                message: format!("`{raw}`: {p:?} is not a port"),
            })?;
            (z.to_string(), port)
        }
        None => (s.clone(), 53),
    };
    let zone = if zone.contains('/') {
        cidr_to_reverse_zone(&zone).ok_or_else(|| {
            unsupported(format!(
                "`{raw}`: only octet-aligned IPv4 networks (/8, /16, /24, /32) convert to a reverse zone; write the in-addr.arpa or ip6.arpa zone instead"
            ))
        })?
    } else {
        zone
    };
    let zone = zone.trim_end_matches('.').to_string();
    let zone = if zone.is_empty() {
        ".".to_string()
    } else {
        zone
    };
    if zone != "." {
        parse_domain(&zone).map_err(|e| CorefileError::Syntax {
            at: block.at.clone(),
            message: format!("`{raw}`: {e}"),
        })?;
    }
    Ok(Key { zone, port })
}

fn cidr_to_reverse_zone(s: &str) -> Option<String> {
    let (ip, bits) = s.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    if !bits.is_multiple_of(8) || bits == 0 || bits > 32 {
        return None;
    }
    let octets = ip.octets();
    let n = (bits / 8) as usize;
    let mut labels: Vec<String> = octets[..n].iter().rev().map(|o| o.to_string()).collect();
    labels.push("in-addr.arpa".into());
    Some(labels.join("."))
}

/// A value set in one place, remembered with where, so a second, different setting is reported.
#[derive(Debug, Clone)]
struct Set<T> {
    value: T,
    at: Pos,
    block: String,
}

#[derive(Debug, Clone, Default)]
struct Kube {
    zone: String,
    reverse_zones: Vec<String>,
    fallthrough: Vec<String>,
    ttl: u32,
    pods: Option<config::PodsMode>,
    endpoint_pod_names: bool,
    namespaces: Vec<String>,
    labels: Option<String>,
    namespace_labels: Option<String>,
    noendpoints: bool,
    ignore_empty_service: bool,
    kubeconfig: Option<String>,
    startup_timeout: Option<Duration>,
    at: Option<Pos>,
}

/// The forward options clusterdns holds once for all forwarding.
#[derive(Debug, Clone, Default)]
struct ForwardOpts {
    policy: Option<Set<config::ForwardPolicy>>,
    max_fails: Option<Set<u32>>,
    health_check: Option<Set<Duration>>,
    force_tcp: Option<Set<bool>>,
    prefer_udp: Option<Set<bool>>,
    max_concurrent: Option<Set<usize>>,
}

#[derive(Debug, Clone)]
enum Upstreams {
    ResolvConf(String),
    Addrs(Vec<String>),
}

#[derive(Debug, Clone)]
struct CacheOpts {
    max_entries: usize,
    max_ttl: u32,
    min_ttl: u32,
    max_negative_ttl: u32,
    min_negative_ttl: u32,
    prefetch: u32,
    serve_stale: Duration,
}

#[derive(Debug, Clone)]
struct HostsOpts {
    file: String,
    fallthrough: bool,
    ttl: u32,
    reload: Duration,
}

#[derive(Default)]
struct Converter {
    notes: Vec<String>,
    files: BTreeMap<String, String>,
    port: Option<Set<u16>>,
    binds: Option<Set<Vec<IpAddr>>>,
    kube: Option<Kube>,
    forward: Option<Set<Upstreams>>,
    forward_opts: ForwardOpts,
    /// Forward options of stub blocks, applied after the main block's (which take precedence).
    stub_forward_opts: Vec<(ForwardOpts, Pos, String)>,
    stubs: BTreeMap<String, Set<Vec<String>>>,
    /// Zones of blocks that forward to the same resolv.conf as `.`: plain forwarding.
    resolv_conf_zones: Vec<(String, Set<String>)>,
    /// A `.` block exists (names outside every zone are forwarded only if it forwards).
    has_root: bool,
    cache: Option<Set<CacheOpts>>,
    hosts: Option<Set<HostsOpts>>,
    metrics: Option<Set<String>>,
    health: Option<Set<String>>,
    lameduck: Option<Duration>,
    ready: Option<Set<String>>,
    querylog: bool,
    loadbalance: bool,
    max_udp_size: Option<u16>,
    /// `cache { disable ... }` lines, judged once the cluster zone is known.
    cache_disable: Vec<(Pos, String, Vec<String>)>,
}

/// What kind of server block: the main one(s) map onto the whole config, the others become
/// stub domains.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Main,
    Zone,
}

/// Directives that change answers in ways clusterdns cannot reproduce, and why.
fn unsupported_reason(name: &str) -> Option<&'static str> {
    Some(match name {
        "rewrite" => {
            "it rewrites query or answer names and types before lookup; clusterdns answers names as asked and has no rewrite stage. For an alias of a Service use an ExternalName Service (a CNAME); for another domain use a server block with `forward` (a stub domain)"
        }
        "template" => {
            "it synthesises answers (or NXDOMAIN) from regular expressions; clusterdns has no template stage. AKS's `internal.cloudapp.net` / `reddog.microsoft.com` templates only short-cut search-path queries with NXDOMAIN: without them those queries are forwarded and answered NXDOMAIN upstream, so the answers stay the same but cost an upstream round trip; remove the template to convert"
        }
        "autopath" => {
            "server-side search-path completion needs the client pod's namespace from its IP and answers with CNAMEs; clusterdns does not implement it. Clients then walk their resolv.conf search list themselves: the final answers are the same, with more queries per lookup; remove the line to convert"
        }
        "dnssec" => "it signs answers on the fly with zone keys; clusterdns does not sign",
        "sign" => "it signs zone files; clusterdns serves no zone files and does not sign",
        "file" => {
            "it serves an authoritative zone from a zone file; clusterdns serves only the cluster zone, a hosts file and forwarding. Serve the zone elsewhere and forward to it from a server block (a stub domain)"
        }
        "auto" => {
            "it serves authoritative zones from a folder of zone files; clusterdns serves no zone files"
        }
        "secondary" => {
            "it serves zones transferred from a primary (AXFR); clusterdns serves no secondary zones. Forward the zone to the primary instead (a stub domain)"
        }
        "etcd" => "it serves records from etcd (SkyDNS); clusterdns reads only Kubernetes objects",
        "k8s_external" => {
            "it answers for Services' external and LoadBalancer IPs under an external zone; clusterdns serves the cluster zone only"
        }
        "transfer" => "it allows zone transfers (AXFR/IXFR) out; clusterdns refuses zone transfers",
        "tsig" => "it checks TSIG signatures on queries; clusterdns does not verify TSIG",
        "acl" => {
            "it blocks or filters clients by source address; clusterdns has no per-client policy, and dropping it would open access the Corefile denies. Use a NetworkPolicy for the clusterdns pods instead"
        }
        "any" => {
            "it answers ANY queries with a minimal HINFO (RFC 8482); clusterdns answers ANY queries from what it holds"
        }
        "chaos" => {
            "it answers CH-class queries such as version.bind and authors.bind; clusterdns answers no CH-class names"
        }
        "whoami" => {
            "it answers every query with the client's address and port; clusterdns has no such answer"
        }
        "header" => {
            "it sets or clears header flags in answers; clusterdns writes the flags the DNS specification asks for"
        }
        "minimal" => {
            "it strips the authority and additional sections from answers; clusterdns writes complete answers"
        }
        "nsid" => {
            "it adds an NSID (RFC 5001) identifier to answers that ask for one; clusterdns does not send NSID. If nothing reads NSID, remove the line to convert"
        }
        "local" => {
            "it answers localhost names itself (localhost., localhost.<zone>, 127.in-addr.arpa); clusterdns forwards them instead. Put them in the hosts file if they must be answered locally"
        }
        "dns64" => {
            "it synthesises AAAA records from A records (DNS64); clusterdns does not synthesise"
        }
        "grpc" => "it forwards over gRPC; clusterdns forwards over plain DNS (UDP/TCP) only",
        "route53" => {
            "it serves zones from AWS Route 53; clusterdns serves no cloud zones. Forward the zone to the VPC resolver instead (a stub domain)"
        }
        "azure" => {
            "it serves zones from Azure DNS; clusterdns serves no cloud zones. Forward the zone to 168.63.129.16 instead (a stub domain)"
        }
        "clouddns" => {
            "it serves zones from Google Cloud DNS; clusterdns serves no cloud zones. Forward the zone to the metadata resolver instead (a stub domain)"
        }
        "erratic" => {
            "it deliberately drops and delays answers for testing; clusterdns has no such mode"
        }
        "geoip" => {
            "it looks up client locations for other plugins; clusterdns has no per-client answers"
        }
        "view" => {
            "it selects server blocks by client address or query; clusterdns answers every client the same"
        }
        "alternate" => {
            "it re-sends queries elsewhere when the answer has a given rcode; clusterdns has no rcode-based fallback"
        }
        _ => return None,
    })
}

/// Directives dropped with a note: they only concern operation, not answers.
fn dropped_note(name: &str) -> Option<&'static str> {
    Some(match name {
        "reload" => {
            "not needed: clusterdns re-reads its config file when it changes (a ConfigMap update included) and on SIGHUP; an invalid new config is rejected and the running one stays"
        }
        "debug" => {
            "debug mode (panics not recovered) has no clusterdns equivalent; set RUST_LOG=debug for more logging"
        }
        "pprof" => "Go profiling endpoints have no clusterdns equivalent",
        "trace" => "OpenTracing/Zipkin spans have no clusterdns equivalent",
        "dnstap" => {
            "dnstap output has no clusterdns equivalent; `querylog` logs queries as structured log lines"
        }
        "metadata" => "plugin metadata only feeds other plugins' log formats",
        "cancel" => "clusterdns bounds upstream queries with forward.timeout",
        "root" => "the root folder only matters to zone-file plugins",
        "multisocket" => "clusterdns opens one UDP socket per CPU by default (server.udp_workers)",
        "timeouts" => {
            "read/write/idle timeouts of DoT/DoH/gRPC servers; clusterdns closes idle TCP connections after server.tcp_idle_timeout"
        }
        "on" => "event hooks have no clusterdns equivalent",
        _ => return None,
    })
}

impl Converter {
    fn run(mut self, corefile: Corefile) -> Result<Conversion, CorefileError> {
        self.notes.extend(corefile.notes.iter().cloned());
        let blocks = &corefile.blocks;

        // Keys, and which zone is served by which block.
        let mut keyed: Vec<(Vec<Key>, &ServerBlock)> = Vec::new();
        let mut seen: BTreeMap<(String, u16), Pos> = BTreeMap::new();
        for b in blocks {
            if b.keys.is_empty() {
                return Err(CorefileError::Syntax {
                    at: b.at.clone(),
                    message: "a server block without zones".into(),
                });
            }
            let mut keys = Vec::new();
            for raw in &b.keys {
                let k = parse_key(raw, b)?;
                if let Some(prev) = seen.insert((k.zone.clone(), k.port), b.at.clone()) {
                    return Err(CorefileError::Syntax {
                        at: b.at.clone(),
                        message: format!(
                            "zone `{}` on port {} is already served by the block at {prev}",
                            k.zone, k.port
                        ),
                    });
                }
                keys.push(k);
            }
            keyed.push((keys, b));
        }

        // One port for everything: clusterdns serves all zones on the same listen addresses.
        for (keys, b) in &keyed {
            for k in keys {
                self.set_once(
                    |c| &mut c.port,
                    k.port,
                    &b.at,
                    &b.label(),
                    "server block",
                    None,
                    "clusterdns serves every zone on the same listen addresses, so all server blocks must use the same port",
                )?;
            }
        }

        // The main blocks: `.` and the one holding `kubernetes`; the rest are zone blocks.
        for (keys, b) in &keyed {
            let is_root = keys.iter().any(|k| k.zone == ".");
            let has_kube = b.directives.iter().any(|d| d.name == "kubernetes");
            if is_root && keys.len() > 1 {
                return Err(CorefileError::Unsupported {
                    at: b.at.clone(),
                    block: b.label(),
                    directive: "server block".into(),
                    option: None,
                    reason: "it serves `.` together with other zones; write the other zones as their own server blocks".into(),
                });
            }
            self.has_root |= is_root;
            let role = if is_root || has_kube {
                Role::Main
            } else {
                Role::Zone
            };
            self.block(b, keys, role)?;
        }
        self.finish_forwarding()?;
        self.build()
    }

    #[allow(clippy::too_many_arguments)]
    fn set_once<T: Clone + PartialEq + fmt::Debug>(
        &mut self,
        slot: impl FnOnce(&mut Self) -> &mut Option<Set<T>>,
        value: T,
        at: &Pos,
        block: &str,
        directive: &str,
        option: Option<&str>,
        why: &str,
    ) -> Result<(), CorefileError> {
        let slot = slot(self);
        match slot {
            Some(prev) if prev.value != value => Err(CorefileError::Unsupported {
                at: at.clone(),
                block: block.to_string(),
                directive: directive.to_string(),
                option: option.map(str::to_string),
                reason: format!(
                    "it sets {value:?} here but {:?} in block `{}` ({}); {why}",
                    prev.value, prev.block, prev.at
                ),
            }),
            Some(_) => Ok(()),
            None => {
                *slot = Some(Set {
                    value,
                    at: at.clone(),
                    block: block.to_string(),
                });
                Ok(())
            }
        }
    }

    fn note(&mut self, at: &Pos, block: &str, what: &str, text: &str) {
        self.notes.push(format!("{at} (`{block}`) {what}: {text}"));
    }

    fn block(&mut self, b: &ServerBlock, keys: &[Key], role: Role) -> Result<(), CorefileError> {
        let label = b.label();
        let mut forwards = 0usize;
        let mut seen_names: BTreeMap<&str, &Pos> = BTreeMap::new();
        let mut block_binds: Option<(Vec<IpAddr>, Pos)> = None;
        for d in &b.directives {
            // CoreDNS takes several `forward` (different FROM), `bind` (addresses add up),
            // `log` and `errors` lines in one block; every other plugin once.
            if let Some(prev) = seen_names.insert(d.name.as_str(), &d.at)
                && !matches!(d.name.as_str(), "forward" | "bind" | "log" | "errors")
            {
                return Err(CorefileError::Invalid {
                    at: d.at.clone(),
                    block: label.clone(),
                    directive: d.name.clone(),
                    option: None,
                    message: format!(
                        "appears twice in this block (also at {prev}); CoreDNS would refuse this Corefile"
                    ),
                });
            }
            let ctx = Ctx {
                block: &label,
                d,
                role,
                keys,
            };
            match d.name.as_str() {
                "kubernetes" => self.kubernetes(&ctx)?,
                "forward" => {
                    forwards += 1;
                    self.forward(&ctx)?
                }
                "cache" => self.cache(&ctx)?,
                "hosts" => self.hosts(&ctx)?,
                "prometheus" => {
                    let addr = d
                        .args
                        .first()
                        .cloned()
                        .unwrap_or_else(|| "localhost:9153".into());
                    ctx.max_args(1)?;
                    ctx.no_block()?;
                    self.http_listen(&ctx, addr, |c| &mut c.metrics)?
                }
                "health" => {
                    let addr = d.args.first().cloned().unwrap_or_else(|| ":8080".into());
                    ctx.max_args(1)?;
                    for o in d.options() {
                        match o.name.as_str() {
                            "lameduck" => {
                                let v = ctx.one_arg(o)?;
                                let dur = ctx.duration(o, v)?;
                                self.lameduck = Some(dur);
                            }
                            _ => return Err(ctx.unknown_option(o)),
                        }
                    }
                    self.http_listen(&ctx, addr, |c| &mut c.health)?
                }
                "ready" => {
                    let addr = d.args.first().cloned().unwrap_or_else(|| ":8181".into());
                    ctx.max_args(1)?;
                    if !d.options().is_empty() {
                        self.note(&d.at, &label, "ready", "options of `ready` (e.g. `monitor until-ready|continuously`) are dropped: clusterdns's /ready turns 200 once the first sync is done");
                    }
                    self.http_listen(&ctx, addr, |c| &mut c.ready)?
                }
                "errors" => {
                    if !d.args.is_empty() || d.block.is_some() {
                        self.note(&d.at, &label, "errors", "options (`consolidate`, `stacktrace`) are dropped; clusterdns logs errors at warn level, rate-limited by itself");
                    }
                }
                "log" => {
                    if role == Role::Main {
                        self.querylog = true;
                        if !d.args.is_empty() || d.block.is_some() {
                            self.note(&d.at, &label, "log", "names, formats and `class` filters are dropped: clusterdns's querylog logs every query (querylog.sample: 1.0) as a structured line");
                        }
                    } else {
                        self.note(&d.at, &label, "log", "logs only this zone's queries in CoreDNS; clusterdns's querylog is all or a sample of every query, so it stays off: set querylog.enabled: true to log everything");
                    }
                }
                "loop" => {}
                "loadbalance" => {
                    if let Some(mode) = d.args.first()
                        && mode != "round_robin"
                    {
                        return Err(ctx.unsupported(format!("`loadbalance {mode}` weighs answers from a weights file; clusterdns only rotates records (round_robin)")));
                    }
                    if role == Role::Main {
                        self.loadbalance = true;
                    } else {
                        self.note(&d.at, &label, "loadbalance", "applies to this zone only in CoreDNS; clusterdns rotates cluster records only (cluster.loadbalance follows the `.` block)");
                    }
                }
                "bind" => {
                    let (ips, _) = block_binds.get_or_insert_with(|| (Vec::new(), d.at.clone()));
                    ips.extend(bind_addresses(&ctx)?);
                }
                "bufsize" => {
                    let v = ctx.one_arg(d)?;
                    let n: u16 = v
                        .parse()
                        .ok()
                        .filter(|n| (512..=4096).contains(n))
                        .ok_or_else(|| {
                            ctx.invalid(format!("{v:?} is not a size between 512 and 4096"))
                        })?;
                    self.max_udp_size = Some(n);
                }
                name => {
                    if let Some(reason) = unsupported_reason(name) {
                        return Err(ctx.unsupported(reason.to_string()));
                    }
                    if let Some(note) = dropped_note(name) {
                        self.note(&d.at, &label, name, &format!("dropped: {note}"));
                        continue;
                    }
                    return Err(ctx.unsupported(
                        "clusterdns does not know this directive (not a CoreDNS plugin it can convert, or an external plugin)".into(),
                    ));
                }
            }
        }
        if let Some((mut ips, at)) = block_binds {
            ips.sort();
            ips.dedup();
            self.set_once(
                |c| &mut c.binds,
                ips,
                &at,
                &label,
                "bind",
                None,
                "clusterdns listens on the same addresses for every zone",
            )?;
        }
        if role == Role::Zone && forwards == 0 {
            return Err(CorefileError::Unsupported {
                at: b.at.clone(),
                block: label,
                directive: "server block".into(),
                option: None,
                reason: "a block for a zone other than `.` and the cluster zone converts only when it forwards (a stub domain); this one has no `forward`, and clusterdns serves no other zones itself".into(),
            });
        }
        Ok(())
    }

    fn http_listen(
        &mut self,
        ctx: &Ctx<'_>,
        addr: String,
        slot: fn(&mut Self) -> &mut Option<Set<String>>,
    ) -> Result<(), CorefileError> {
        let addr = addr.strip_prefix("http://").unwrap_or(&addr).to_string();
        config::parse_http_listen(&addr).map_err(|e| {
            ctx.invalid(format!(
                "{e}; clusterdns listens on an IP address or on every address (`:PORT`)"
            ))
        })?;
        let d = ctx.d;
        match slot(self) {
            Some(prev) if prev.value != addr => {
                let (pv, pb, pa) = (prev.value.clone(), prev.block.clone(), prev.at.clone());
                self.note(&d.at, ctx.block, &d.name, &format!("listens on {addr} here but on {pv} in `{pb}` ({pa}); clusterdns has one {} listener: it keeps {pv}", d.name));
            }
            Some(_) => {}
            None => {
                *slot(self) = Some(Set {
                    value: addr,
                    at: d.at.clone(),
                    block: ctx.block.to_string(),
                })
            }
        }
        Ok(())
    }

    fn kubernetes(&mut self, ctx: &Ctx<'_>) -> Result<(), CorefileError> {
        let d = ctx.d;
        if let Some(prev) = &self.kube {
            return Err(ctx.unsupported(format!(
                "a second `kubernetes` (the first is at {}); clusterdns serves one cluster zone from one cluster",
                prev.at.as_ref().expect("set")
            )));
        }
        let zones: Vec<String> = if d.args.is_empty() {
            ctx.keys.iter().map(|k| k.zone.clone()).collect()
        } else {
            d.args.clone()
        };
        let mut forward_zones = Vec::new();
        let mut reverse = Vec::new();
        for z in &zones {
            let z = z.trim_end_matches('.');
            if z.is_empty() {
                return Err(ctx.unsupported("it serves the root zone `.`; name the cluster domain, e.g. `kubernetes cluster.local in-addr.arpa ip6.arpa`".into()));
            }
            let z = if z.contains('/') {
                cidr_to_reverse_zone(z).ok_or_else(|| {
                    ctx.unsupported(format!(
                        "{z:?}: only octet-aligned IPv4 networks convert to a reverse zone"
                    ))
                })?
            } else {
                parse_domain(z).map_err(|e| ctx.invalid(e))?
            };
            if z == "in-addr.arpa"
                || z.ends_with(".in-addr.arpa")
                || z == "ip6.arpa"
                || z.ends_with(".ip6.arpa")
            {
                reverse.push(z);
            } else {
                forward_zones.push(z);
            }
        }
        let zone = match forward_zones.as_slice() {
            [z] => z.clone(),
            [] => return Err(ctx.unsupported("it names only reverse zones; clusterdns needs the cluster domain (e.g. cluster.local)".into())),
            many => {
                return Err(ctx.unsupported(format!(
                    "it serves several cluster domains ({}); clusterdns serves one cluster domain: keep one (the kubelet's --cluster-domain)",
                    many.join(", ")
                )));
            }
        };
        let mut k = Kube {
            zone,
            reverse_zones: reverse,
            ttl: 5,
            at: Some(d.at.clone()),
            ..Kube::default()
        };
        let all_zones: Vec<String> = std::iter::once(k.zone.clone())
            .chain(k.reverse_zones.iter().cloned())
            .collect();
        for o in d.options() {
            match o.name.as_str() {
                "pods" => {
                    let v = ctx.one_arg(o)?;
                    k.pods = Some(match v.as_str() {
                        "disabled" => config::PodsMode::Disabled,
                        "insecure" => config::PodsMode::Insecure,
                        "verified" => {
                            self.note(&o.at, ctx.block, "kubernetes pods verified", "clusterdns watches Pods for this: its ClusterRole needs list and watch on pods (see manifests/)");
                            config::PodsMode::Verified
                        }
                        _ => {
                            return Err(ctx.invalid_opt(
                                o,
                                format!("{v:?} is not disabled, insecure or verified"),
                            ));
                        }
                    });
                }
                "endpoint_pod_names" => {
                    ctx.opt_no_args(o)?;
                    k.endpoint_pod_names = true;
                }
                "ttl" => {
                    let v = ctx.one_arg(o)?;
                    k.ttl = v.parse().ok().filter(|t| *t <= 3600).ok_or_else(|| {
                        ctx.invalid_opt(o, format!("{v:?} is not a TTL from 0 to 3600"))
                    })?;
                }
                "namespaces" => {
                    if o.args.is_empty() {
                        return Err(ctx.invalid_opt(o, "needs at least one namespace".into()));
                    }
                    k.namespaces.extend(o.args.iter().cloned());
                }
                "labels" | "namespace_labels" => {
                    let sel = o.args.join(" ");
                    if sel.is_empty() {
                        return Err(ctx.invalid_opt(o, "needs a label selector".into()));
                    }
                    crate::cluster::selector::Selector::parse(&sel)
                        .map_err(|e| ctx.invalid_opt(o, e))?;
                    if o.name == "labels" {
                        k.labels = Some(sel);
                    } else {
                        k.namespace_labels = Some(sel);
                    }
                }
                "noendpoints" => {
                    ctx.opt_no_args(o)?;
                    k.noendpoints = true;
                }
                "ignore" => {
                    if o.args != ["empty_service"] {
                        return Err(ctx.invalid_opt(o, "only `ignore empty_service` exists".into()));
                    }
                    k.ignore_empty_service = true;
                }
                "fallthrough" => {
                    if o.args.is_empty() {
                        k.fallthrough = all_zones.clone();
                    } else {
                        for z in &o.args {
                            if z.trim_end_matches('.').is_empty() {
                                k.fallthrough = all_zones.clone();
                                continue;
                            }
                            k.fallthrough
                                .push(parse_domain(z).map_err(|e| ctx.invalid_opt(o, e))?);
                        }
                    }
                }
                "kubeconfig" => {
                    match o.args.as_slice() {
                        [path] => k.kubeconfig = Some(path.clone()),
                        [_, context] => {
                            return Err(ctx.unsupported_opt(o, format!(
                                "it selects context {context:?}; clusterdns uses the kubeconfig's current context: make {context:?} the current context of that file"
                            )));
                        }
                        _ => return Err(ctx.invalid_opt(o, "needs a kubeconfig path".into())),
                    }
                    self.note(&o.at, ctx.block, "kubernetes kubeconfig", "the path is CoreDNS's; mount the kubeconfig into the clusterdns pod at the same path");
                }
                "startup_timeout" => {
                    let v = ctx.one_arg(o)?;
                    k.startup_timeout = Some(ctx.duration(o, v)?);
                }
                "resyncperiod" => {
                    self.note(&o.at, ctx.block, "kubernetes resyncperiod", "dropped: clusterdns keeps watches open and relists when they break; there is no periodic resync");
                }
                "endpoint" => {
                    return Err(ctx.unsupported_opt(o, "it connects to the API server at a URL without credentials; clusterdns connects in-cluster or through a kubeconfig: write a kubeconfig whose server is that URL and give it with `kubeconfig`".into()));
                }
                "tls" => {
                    return Err(ctx.unsupported_opt(o, "client certificates are given through a kubeconfig in clusterdns: write one with these files and use `kubeconfig`".into()));
                }
                "multicluster" => {
                    return Err(ctx.unsupported_opt(
                        o,
                        "multicluster DNS (MCS-API ServiceImports) is not served by clusterdns"
                            .into(),
                    ));
                }
                "transfer" => {
                    return Err(ctx.unsupported_opt(
                        o,
                        "zone transfers of the cluster zone are refused by clusterdns".into(),
                    ));
                }
                "apiserver_qps" | "apiserver_burst" | "apiserver_max_inflight" => {
                    self.note(
                        &o.at,
                        ctx.block,
                        &format!("kubernetes {}", o.name),
                        "dropped: clusterdns opens one watch per kind and does not throttle itself",
                    );
                }
                _ => return Err(ctx.unknown_option(o)),
            }
        }
        self.kube = Some(k);
        Ok(())
    }

    fn forward(&mut self, ctx: &Ctx<'_>) -> Result<(), CorefileError> {
        let d = ctx.d;
        let [from, to @ ..] = d.args.as_slice() else {
            return Err(ctx.invalid(
                "needs FROM and at least one upstream (`forward . /etc/resolv.conf`)".into(),
            ));
        };
        if to.is_empty() {
            return Err(ctx.invalid("needs at least one upstream after FROM".into()));
        }
        // The upstreams: IPs, or one resolv.conf.
        let mut files = Vec::new();
        let mut addrs = Vec::new();
        for t in to {
            let lower = t.to_ascii_lowercase();
            if lower.starts_with("tls://")
                || lower.starts_with("https://")
                || lower.starts_with("grpc://")
                || lower.starts_with("quic://")
            {
                return Err(ctx.unsupported(format!("upstream {t:?} is reached over TLS/HTTPS/gRPC/QUIC; clusterdns forwards over plain DNS (UDP/TCP) only")));
            }
            if t.starts_with('/') || t.starts_with('.') {
                files.push(t.clone());
                continue;
            }
            let addr = config::parse_upstream(t).map_err(|e| {
                ctx.invalid(format!(
                    "{e}; upstreams are IP addresses (with an optional port) or a resolv.conf path"
                ))
            })?;
            addrs.push(format_upstream(addr));
        }
        let upstreams = match (files.as_slice(), addrs.is_empty()) {
            ([file], true) => Upstreams::ResolvConf(file.clone()),
            ([], false) => Upstreams::Addrs(addrs),
            _ => {
                return Err(ctx.unsupported("it mixes resolv.conf files and addresses (or names several files); clusterdns forwards to either one resolv.conf's nameservers or a list of addresses: list the addresses".into()));
            }
        };
        // Options.
        let mut opts = ForwardOpts::default();
        for o in d.options() {
            match o.name.as_str() {
                "force_tcp" => {
                    ctx.opt_no_args(o)?;
                    opts.force_tcp = set_at(true, o, ctx.block);
                }
                "prefer_udp" => {
                    ctx.opt_no_args(o)?;
                    opts.prefer_udp = set_at(true, o, ctx.block);
                }
                "policy" => {
                    let v = ctx.one_arg(o)?;
                    let p = match v.as_str() {
                        "random" => config::ForwardPolicy::Random,
                        "round_robin" => config::ForwardPolicy::RoundRobin,
                        "sequential" => config::ForwardPolicy::Sequential,
                        _ => {
                            return Err(ctx.invalid_opt(
                                o,
                                format!("{v:?} is not random, round_robin or sequential"),
                            ));
                        }
                    };
                    opts.policy = set_at(p, o, ctx.block);
                }
                "max_fails" => {
                    let v = ctx.one_arg(o)?;
                    let n: u32 = v
                        .parse()
                        .map_err(|_| ctx.invalid_opt(o, format!("{v:?} is not a number")))?;
                    opts.max_fails = set_at(n, o, ctx.block);
                }
                "health_check" => {
                    let Some(v) = o.args.first() else {
                        return Err(ctx.invalid_opt(o, "needs an interval, e.g. 0.5s".into()));
                    };
                    let dur = ctx.duration(o, v)?;
                    if o.args.len() > 1 {
                        self.note(
                            &o.at,
                            ctx.block,
                            "forward health_check",
                            &format!(
                                "`{}` dropped: clusterdns probes upstreams its own way",
                                o.args[1..].join(" ")
                            ),
                        );
                    }
                    opts.health_check = set_at(dur, o, ctx.block);
                }
                "max_concurrent" => {
                    let v = ctx.one_arg(o)?;
                    let n: usize = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        ctx.invalid_opt(o, format!("{v:?} is not a number above 0"))
                    })?;
                    opts.max_concurrent = set_at(n, o, ctx.block);
                }
                "expire" => {
                    let v = ctx.one_arg(o)?;
                    ctx.duration(o, v)?;
                    self.note(
                        &o.at,
                        ctx.block,
                        "forward expire",
                        "dropped: clusterdns manages upstream TCP connections itself",
                    );
                }
                "failfast_all_unhealthy_upstreams" => {
                    self.note(&o.at, ctx.block, "forward failfast_all_unhealthy_upstreams", "dropped: when every upstream is down clusterdns still tries one (as CoreDNS does without this option)");
                }
                "max_age" => {
                    self.note(
                        &o.at,
                        ctx.block,
                        "forward max_age",
                        "dropped: clusterdns manages upstream TCP connections itself",
                    );
                }
                "except" => {
                    return Err(ctx.unsupported_opt(o, "it keeps some subdomains out of this forward; clusterdns forwards whole domains: give each excepted domain its own server block (a stub domain) instead".into()));
                }
                "tls" | "tls_servername" => {
                    return Err(ctx.unsupported_opt(
                        o,
                        "DNS over TLS to upstreams is not supported by clusterdns".into(),
                    ));
                }
                "next" => {
                    return Err(ctx.unsupported_opt(o, "it passes answers with some rcodes on to the next plugin; clusterdns returns the upstream's answer".into()));
                }
                _ => return Err(ctx.unknown_option(o)),
            }
        }
        if opts.force_tcp.is_some() && opts.prefer_udp.is_some() {
            return Err(
                ctx.invalid("force_tcp and prefer_udp together: CoreDNS refuses this too".into())
            );
        }

        // Where it applies: `.` in a main block is the default; anything else a stub domain.
        let from = from.trim_end_matches('.').to_ascii_lowercase();
        let zones: Vec<String> = if from.is_empty() {
            match ctx.role {
                Role::Main => Vec::new(),
                Role::Zone => ctx.keys.iter().map(|k| k.zone.clone()).collect(),
            }
        } else {
            vec![parse_domain(&from).map_err(|e| ctx.invalid(format!("FROM: {e}")))?]
        };
        if zones.is_empty() {
            if let Some(prev) = &self.forward {
                return Err(ctx.unsupported(format!(
                    "a second `forward .` (the first is in `{}` at {}); clusterdns has one default upstream list",
                    prev.block, prev.at
                )));
            }
            self.forward = Some(Set {
                value: upstreams,
                at: d.at.clone(),
                block: ctx.block.to_string(),
            });
            // The default forward's options are the config's; they win over any stub block's.
            for (slot, val) in [
                (&mut self.forward_opts.force_tcp, opts.force_tcp),
                (&mut self.forward_opts.prefer_udp, opts.prefer_udp),
            ] {
                if val.is_some() {
                    *slot = val;
                }
            }
            self.forward_opts.policy = opts.policy.or(self.forward_opts.policy.take());
            self.forward_opts.max_fails = opts.max_fails.or(self.forward_opts.max_fails.take());
            self.forward_opts.health_check =
                opts.health_check.or(self.forward_opts.health_check.take());
            self.forward_opts.max_concurrent = opts
                .max_concurrent
                .or(self.forward_opts.max_concurrent.take());
            return Ok(());
        }
        if let Some(mc) = &opts.max_concurrent {
            let (at, block) = (mc.at.clone(), mc.block.clone());
            self.note(&at, &block, "forward max_concurrent", "dropped for this zone: clusterdns bounds all forwarding with one limit (forward.max_concurrent)");
            opts.max_concurrent = None;
        }
        for z in zones {
            match &upstreams {
                Upstreams::Addrs(a) => {
                    if let Some(prev) = self.stubs.get(&z) {
                        return Err(ctx.unsupported(format!(
                            "`{z}` is already forwarded in `{}` ({})",
                            prev.block, prev.at
                        )));
                    }
                    self.stubs.insert(
                        z,
                        Set {
                            value: a.clone(),
                            at: d.at.clone(),
                            block: ctx.block.to_string(),
                        },
                    );
                }
                Upstreams::ResolvConf(f) => {
                    self.resolv_conf_zones.push((
                        z,
                        Set {
                            value: f.clone(),
                            at: d.at.clone(),
                            block: ctx.block.to_string(),
                        },
                    ));
                }
            }
        }
        self.stub_forward_opts
            .push((opts, d.at.clone(), ctx.block.to_string()));
        Ok(())
    }

    /// Once every block is read: stub domains against the cluster zone and the default
    /// forward, and stub blocks' options lifted to the one forward section.
    fn finish_forwarding(&mut self) -> Result<(), CorefileError> {
        // Zones sent to a resolv.conf: plain forwarding if `.` forwards to the same file.
        for (zone, set) in std::mem::take(&mut self.resolv_conf_zones) {
            match self.forward.as_ref().map(|f| &f.value) {
                Some(Upstreams::ResolvConf(main)) if *main == set.value => {
                    self.note(&set.at, &set.block, "forward", &format!(
                        "`{zone}` goes to the nameservers of {} like every other name: no stub domain needed",
                        set.value
                    ));
                }
                _ => {
                    return Err(CorefileError::Unsupported {
                        at: set.at.clone(),
                        block: set.block.clone(),
                        directive: "forward".into(),
                        option: None,
                        reason: format!(
                            "it sends `{zone}` to the nameservers of {} while other names go elsewhere; clusterdns stub domains take addresses: list the nameservers' addresses instead",
                            set.value
                        ),
                    });
                }
            }
        }
        if let Some(k) = &self.kube {
            for (zone, set) in &self.stubs {
                let inside = |z: &str| zone == z || zone.ends_with(&format!(".{z}"));
                if inside(&k.zone) {
                    return Err(CorefileError::Unsupported {
                        at: set.at.clone(),
                        block: set.block.clone(),
                        directive: "forward".into(),
                        option: None,
                        reason: format!(
                            "`{zone}` is inside the cluster zone `{}`, which clusterdns answers itself from the cluster",
                            k.zone
                        ),
                    });
                }
                if k.reverse_zones
                    .iter()
                    .any(|r| inside(r) || r.ends_with(&format!(".{zone}")))
                {
                    let (at, block) = (set.at.clone(), set.block.clone());
                    self.notes.push(format!(
                        "{at} (`{block}`) forward: `{zone}` overlaps the cluster's reverse zones; check which answers PTR queries for cluster IPs in clusterdns (in CoreDNS the more specific server block wins)"
                    ));
                }
            }
        }
        // `cache { disable success|denial ZONES }`: for the cluster zone that is what clusterdns
        // does anyway (cluster answers are never cached).
        let cluster_zone = self.kube.as_ref().map(|k| k.zone.clone());
        for (at, block, args) in std::mem::take(&mut self.cache_disable) {
            let zones = &args[1..];
            let only_cluster = !zones.is_empty()
                && cluster_zone.as_ref().is_some_and(|cz| {
                    zones.iter().all(|z| {
                        let z = z.trim_end_matches('.').to_ascii_lowercase();
                        z == *cz || z.ends_with(&format!(".{cz}"))
                    })
                });
            if !only_cluster {
                self.note(&at, &block, "cache disable", &format!(
                    "`disable {}` dropped: clusterdns caches every forwarded answer up to cache.max_ttl (it never caches the cluster zone, answered from memory)",
                    args.join(" ")
                ));
            }
        }

        // Stub blocks' transport options: clusterdns has them once, for all forwarding.
        for (opts, _at, block) in std::mem::take(&mut self.stub_forward_opts) {
            macro_rules! lift {
                ($field:ident, $name:literal) => {
                    if let Some(v) = opts.$field {
                        match &self.forward_opts.$field {
                            Some(prev) if prev.value != v.value => {
                                return Err(CorefileError::Unsupported {
                                    at: v.at.clone(),
                                    block: block.clone(),
                                    directive: "forward".into(),
                                    option: Some($name.into()),
                                    reason: format!(
                                        "clusterdns has one `{}` for all forwarding, and `{}` ({}) sets it differently; make them agree",
                                        $name, prev.block, prev.at
                                    ),
                                });
                            }
                            Some(_) => {}
                            None => {
                                self.notes.push(format!(
                                    "{} (`{}`) forward {}: clusterdns has one forward.{} for all forwarding: it now applies to every forwarded name, not only this zone's",
                                    v.at, block, $name, $name
                                ));
                                self.forward_opts.$field = Some(v);
                            }
                        }
                    }
                };
            }
            lift!(force_tcp, "force_tcp");
            lift!(prefer_udp, "prefer_udp");
            lift!(policy, "policy");
            lift!(max_fails, "max_fails");
            lift!(health_check, "health_check");
        }
        if let Some(f) = &self.forward_opts.force_tcp
            && self.forward_opts.prefer_udp.is_some()
        {
            return Err(CorefileError::Unsupported {
                at: f.at.clone(),
                block: f.block.clone(),
                directive: "forward".into(),
                option: Some("force_tcp".into()),
                reason: "another block sets prefer_udp; clusterdns has one transport choice for all forwarding".into(),
            });
        }
        Ok(())
    }

    fn cache(&mut self, ctx: &Ctx<'_>) -> Result<(), CorefileError> {
        let d = ctx.d;
        // CoreDNS defaults: capacity 9984 per type, TTL caps 3600 (success) and 1800 (denial),
        // floors 5, no prefetch, no serve_stale.
        let mut c = CacheOpts {
            max_entries: 0,
            max_ttl: 3600,
            min_ttl: 5,
            max_negative_ttl: 1800,
            min_negative_ttl: 5,
            prefetch: 0,
            serve_stale: Duration::ZERO,
        };
        let (mut success_cap, mut denial_cap) = (9984usize, 9984usize);
        let mut args = d.args.iter();
        let mut zones = Vec::new();
        if let Some(first) = d.args.first()
            && let Ok(ttl) = first.parse::<u32>()
        {
            args.next();
            if ttl == 0 {
                return Err(
                    ctx.invalid("a TTL of 0 would cache nothing; remove `cache` instead".into())
                );
            }
            c.max_ttl = ttl;
            c.max_negative_ttl = ttl;
        }
        zones.extend(args.cloned());
        for o in d.options() {
            match o.name.as_str() {
                "success" | "denial" => {
                    let nums: Result<Vec<u32>, _> =
                        o.args.iter().map(|a| a.parse::<u32>()).collect();
                    let nums = nums.map_err(|_| {
                        ctx.invalid_opt(o, "takes CAPACITY [TTL [MINTTL]] as numbers".into())
                    })?;
                    let (cap, max, min) = match nums.as_slice() {
                        [cap] => (*cap, None, None),
                        [cap, ttl] => (*cap, Some(*ttl), None),
                        [cap, ttl, min] => (*cap, Some(*ttl), Some(*min)),
                        _ => return Err(ctx.invalid_opt(o, "takes CAPACITY [TTL [MINTTL]]".into())),
                    };
                    if o.name == "success" {
                        success_cap = cap as usize;
                        if let Some(m) = max {
                            c.max_ttl = m;
                        }
                        if let Some(m) = min {
                            c.min_ttl = m;
                        }
                    } else {
                        denial_cap = cap as usize;
                        if let Some(m) = max {
                            c.max_negative_ttl = m;
                        }
                        if let Some(m) = min {
                            c.min_negative_ttl = m;
                        }
                    }
                }
                "prefetch" => {
                    let Some(n) = o.args.first() else {
                        return Err(ctx.invalid_opt(o, "needs AMOUNT".into()));
                    };
                    c.prefetch = n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        ctx.invalid_opt(o, format!("{n:?} is not a number above 0"))
                    })?;
                    if o.args.len() > 1 {
                        self.note(&o.at, ctx.block, "cache prefetch", &format!("`{}` dropped: clusterdns refreshes an entry asked {} times within its TTL shortly before it expires", o.args[1..].join(" "), c.prefetch));
                    }
                }
                "serve_stale" => {
                    c.serve_stale = match o.args.first() {
                        Some(v) => ctx.duration(o, v)?,
                        None => Duration::from_secs(3600),
                    };
                    if o.args.get(1).is_some_and(|m| m == "verify") {
                        self.note(&o.at, ctx.block, "cache serve_stale verify", "clusterdns serves stale entries only when every upstream fails (RFC 8767), which is what `verify` aims at");
                    }
                }
                "disable" => {
                    let [kind, dzones @ ..] = o.args.as_slice() else {
                        return Err(ctx.invalid_opt(o, "needs success or denial".into()));
                    };
                    if kind != "success" && kind != "denial" {
                        return Err(
                            ctx.invalid_opt(o, format!("{kind:?} is not success or denial"))
                        );
                    }
                    let _ = dzones;
                    self.cache_disable
                        .push((o.at.clone(), ctx.block.to_string(), o.args.clone()));
                }
                "keepttl" => self.note(
                    &o.at,
                    ctx.block,
                    "cache keepttl",
                    "dropped: clusterdns answers from the cache with the remaining TTL",
                ),
                "servfail" => self.note(
                    &o.at,
                    ctx.block,
                    "cache servfail",
                    "dropped: clusterdns does not cache SERVFAIL answers this way",
                ),
                _ => return Err(ctx.unknown_option(o)),
            }
        }
        c.min_ttl = c.min_ttl.min(c.max_ttl);
        c.min_negative_ttl = c.min_negative_ttl.min(c.max_negative_ttl);
        c.max_entries = success_cap + denial_cap;

        let cluster_only_block = ctx.role == Role::Main
            && !ctx.keys.iter().any(|k| k.zone == ".")
            && ctx.keys.iter().all(|k| {
                let kz = &k.zone;
                self.kube
                    .as_ref()
                    .is_some_and(|kube| *kz == kube.zone || kube.reverse_zones.contains(kz))
            });
        if cluster_only_block {
            self.note(&d.at, ctx.block, "cache", "dropped: clusterdns answers the cluster zone from memory and caches only forwarded names (the `.` block's cache)");
            return Ok(());
        }
        if ctx.role == Role::Zone {
            let text = match &self.cache {
                Some(main) if main.value.max_ttl == c.max_ttl && main.value.max_negative_ttl == c.max_negative_ttl => {
                    "this zone's answers go through the one clusterdns cache".to_string()
                }
                Some(main) => format!(
                    "clusterdns has one cache for all forwarded names: this zone's answers are cached with the `{}` block's settings",
                    main.block
                ),
                None => "clusterdns has one cache for all forwarded names; it follows the `.` block (this zone's cache settings are dropped)".to_string(),
            };
            self.note(&d.at, ctx.block, "cache", &text);
            return Ok(());
        }
        if !zones.is_empty() && !zones.iter().any(|z| z == ".") {
            self.note(
                &d.at,
                ctx.block,
                "cache",
                &format!(
                    "cached only {} in CoreDNS; clusterdns caches every forwarded name",
                    zones.join(", ")
                ),
            );
        }
        if let Some(prev) = &self.cache {
            return Err(ctx.unsupported(format!(
                "a second cache (the first is in `{}` at {}); clusterdns has one cache",
                prev.block, prev.at
            )));
        }
        self.cache = Some(Set {
            value: c,
            at: d.at.clone(),
            block: ctx.block.to_string(),
        });
        Ok(())
    }

    fn hosts(&mut self, ctx: &Ctx<'_>) -> Result<(), CorefileError> {
        let d = ctx.d;
        if ctx.role == Role::Zone {
            return Err(ctx.unsupported("a hosts file for one zone's block: clusterdns has one hosts file, consulted for every name before forwarding; move it to the `.` block".into()));
        }
        if let Some(prev) = &self.hosts {
            return Err(ctx.unsupported(format!(
                "a second `hosts` (the first is at {}); clusterdns reads one hosts file",
                prev.at
            )));
        }
        let file_arg = d.args.first().cloned();
        if d.args.len() > 1 {
            let zones = d.args[1..].join(" ");
            if !d.args[1..].iter().all(|z| z == ".") {
                self.note(&d.at, ctx.block, "hosts", &format!("answered only names in {zones} in CoreDNS; clusterdns consults the hosts file for every name it forwards"));
            }
        }
        let mut h = HostsOpts {
            file: file_arg.clone().unwrap_or_else(|| "/etc/hosts".into()),
            fallthrough: false,
            ttl: 3600,
            reload: Duration::from_secs(5),
        };
        let mut inline = Vec::new();
        for o in d.options() {
            match o.name.as_str() {
                "ttl" => {
                    let v = ctx.one_arg(o)?;
                    h.ttl = v.parse().ok().filter(|t| *t <= 65535).ok_or_else(|| {
                        ctx.invalid_opt(o, format!("{v:?} is not a TTL in seconds"))
                    })?;
                }
                "reload" => {
                    let v = ctx.one_arg(o)?;
                    h.reload = ctx.duration(o, v)?;
                    if h.reload.is_zero() {
                        self.note(&o.at, ctx.block, "hosts reload 0", "turns reloading off in CoreDNS; clusterdns checks the file every 5s instead (a ConfigMap file only changes when the ConfigMap does)");
                        h.reload = Duration::from_secs(5);
                    }
                }
                "fallthrough" => {
                    h.fallthrough = true;
                    if !o.args.is_empty() && !o.args.iter().all(|z| z == ".") {
                        self.note(&o.at, ctx.block, "hosts fallthrough", &format!("fell through only for {} in CoreDNS; clusterdns falls through for every name", o.args.join(" ")));
                    }
                }
                "no_reverse" => {
                    self.note(&o.at, ctx.block, "hosts no_reverse", "dropped: clusterdns decides itself whether the hosts file answers PTR queries");
                }
                name if name.parse::<IpAddr>().is_ok() => {
                    if o.args.is_empty() {
                        return Err(
                            ctx.invalid_opt(o, "a hosts entry needs at least one name".into())
                        );
                    }
                    for n in &o.args {
                        parse_domain(n).map_err(|e| ctx.invalid_opt(o, e))?;
                    }
                    inline.push(format!("{} {}", o.name, o.args.join(" ")));
                }
                _ => return Err(ctx.unknown_option(o)),
            }
        }
        if !inline.is_empty() {
            if let Some(f) = &file_arg
                && f != "/etc/hosts"
            {
                return Err(ctx.unsupported(format!(
                    "it has inline entries as well as the file {f}; clusterdns reads one hosts file: put the inline entries into {f}"
                )));
            }
            let mut content = String::from(
                "# hosts entries converted from the Corefile's inline `hosts { ... }` block\n",
            );
            for l in &inline {
                content.push_str(l);
                content.push('\n');
            }
            self.files.insert("hosts".into(), content);
            h.file = format!("{CONFIG_DIR}/hosts");
            self.note(&d.at, ctx.block, "hosts", &format!(
                "the inline entries become the file {CONFIG_DIR}/hosts: add it to the clusterdns ConfigMap as key `hosts` (its content is at the end of the converted config){}",
                if file_arg.is_none() { "; the CoreDNS pod's own /etc/hosts (localhost, its pod name) is no longer consulted" } else { "" }
            ));
        } else if h.file == "/etc/hosts" {
            self.note(&d.at, ctx.block, "hosts", "reads the pod's own /etc/hosts, which in a pod holds only localhost and the pod's name; clusterdns reads the same path in its own pod");
        } else {
            self.note(&d.at, ctx.block, "hosts", &format!("{} is a path in the CoreDNS pod: make the same file available in the clusterdns pod (e.g. as a key of its ConfigMap, then use {CONFIG_DIR}/<key>)", h.file));
        }
        if !h.fallthrough {
            self.note(&d.at, ctx.block, "hosts", "no `fallthrough`: in CoreDNS names missing from the file then fail (SERVFAIL) instead of being forwarded; clusterdns gets hosts.fallthrough: false, check this is what you want");
        }
        self.note(&d.at, ctx.block, "hosts", "CoreDNS consults hosts before the cluster zone; clusterdns consults it after the cluster zone and before forwarding, so entries inside the cluster zone are not used");
        self.hosts = Some(Set {
            value: h,
            at: d.at.clone(),
            block: ctx.block.to_string(),
        });
        Ok(())
    }

    /// Write the config.
    fn build(mut self) -> Result<Conversion, CorefileError> {
        let mut y = String::new();
        let port = self.port.as_ref().map(|p| p.value).unwrap_or(53);
        let listen: Vec<String> = match &self.binds {
            Some(b) => b
                .value
                .iter()
                .map(|ip| SocketAddr::new(*ip, port).to_string())
                .collect(),
            // Every address of both families, as CoreDNS's `.:53`.
            None => vec![format!(":{port}")],
        };
        y.push_str("listen:\n");
        for l in &listen {
            y.push_str(&format!("  - {}\n", q(l)));
        }

        // The cluster zone and where it comes from.
        y.push_str("cluster:\n");
        match &self.kube {
            Some(k) => {
                y.push_str("  enabled: true\n");
                y.push_str(&format!("  zone: {}\n", q(&k.zone)));
                y.push_str(&format!("  reverse_zones: {}\n", list(&k.reverse_zones)));
                y.push_str(&format!("  fallthrough: {}\n", list(&k.fallthrough)));
                y.push_str(&format!("  ttl: {}\n", k.ttl));
                let pods = match k.pods.unwrap_or(config::PodsMode::Disabled) {
                    config::PodsMode::Disabled => "disabled",
                    config::PodsMode::Insecure => "insecure",
                    config::PodsMode::Verified => "verified",
                };
                y.push_str(&format!("  pods: {pods}\n"));
                y.push_str(&format!("  endpoint_pod_names: {}\n", k.endpoint_pod_names));
                y.push_str(&format!("  namespaces: {}\n", list(&k.namespaces)));
                if let Some(l) = &k.labels {
                    y.push_str(&format!("  labels: {}\n", q(l)));
                }
                if let Some(l) = &k.namespace_labels {
                    y.push_str(&format!("  namespace_labels: {}\n", q(l)));
                }
                y.push_str(&format!("  noendpoints: {}\n", k.noendpoints));
                y.push_str(&format!(
                    "  ignore_empty_service: {}\n",
                    k.ignore_empty_service
                ));
                y.push_str(&format!("  loadbalance: {}\n", self.loadbalance));
                y.push_str("source:\n  kubernetes:\n");
                if let Some(kc) = &k.kubeconfig {
                    y.push_str(&format!("    kubeconfig: {}\n", q(kc)));
                }
                y.push_str(&format!(
                    "    startup_timeout: {}\n",
                    dur(k.startup_timeout.unwrap_or(Duration::from_secs(5)))
                ));
            }
            None => {
                // No `kubernetes`: nothing is answered from the cluster (e.g. a node-local
                // cache that forwards the cluster zone to kube-dns as a stub domain).
                y.push_str("  enabled: false\n");
                y.push_str(&format!("  loadbalance: {}\n", self.loadbalance));
                self.notes.push(
                    "no `kubernetes` plugin: cluster.enabled: false, so clusterdns watches no API and answers only from its hosts file, cache and upstreams (stub domains included)".into(),
                );
            }
        }

        // Forwarding.
        y.push_str("forward:\n");
        match &self.forward {
            Some(f) => {
                y.push_str("  enabled: true\n");
                match &f.value {
                    Upstreams::ResolvConf(path) => {
                        y.push_str("  upstreams: []\n");
                        y.push_str(&format!("  resolv_conf: {}\n", q(path)));
                    }
                    Upstreams::Addrs(a) => {
                        y.push_str(&format!("  upstreams: {}\n", list(a)));
                    }
                }
            }
            None => {
                y.push_str("  enabled: false\n");
                let why = if self.has_root {
                    "the `.` block has no `forward`"
                } else {
                    "there is no `.` server block"
                };
                self.notes.push(format!(
                    "forward: {why}, so names outside the cluster and stub zones are not forwarded (forward.enabled: false): clusterdns answers them REFUSED{}",
                    if self.has_root { " where CoreDNS answered SERVFAIL" } else { "" }
                ));
            }
        }
        if self.stubs.is_empty() {
            y.push_str("  stub_domains: {}\n");
        } else {
            y.push_str("  stub_domains:\n");
            for (zone, ups) in &self.stubs {
                y.push_str(&format!("    {}: {}\n", q(zone), list(&ups.value)));
            }
        }
        let fo = &self.forward_opts;
        let policy = match fo
            .policy
            .as_ref()
            .map(|p| p.value)
            .unwrap_or(config::ForwardPolicy::Random)
        {
            config::ForwardPolicy::Random => "random",
            config::ForwardPolicy::RoundRobin => "round_robin",
            config::ForwardPolicy::Sequential => "sequential",
        };
        y.push_str(&format!("  policy: {policy}\n"));
        y.push_str(&format!(
            "  max_fails: {}\n",
            fo.max_fails.as_ref().map(|v| v.value).unwrap_or(2)
        ));
        y.push_str(&format!(
            "  health_check: {}\n",
            dur(fo
                .health_check
                .as_ref()
                .map(|v| v.value)
                .unwrap_or(Duration::from_millis(500)))
        ));
        y.push_str(&format!("  force_tcp: {}\n", fo.force_tcp.is_some()));
        y.push_str(&format!("  prefer_udp: {}\n", fo.prefer_udp.is_some()));
        let max_concurrent = match &fo.max_concurrent {
            Some(m) => m.value,
            None => {
                if self.forward.is_some() || !self.stubs.is_empty() {
                    self.notes.push(
                        "forward: CoreDNS's forward has no concurrency bound without `max_concurrent`; clusterdns needs one: forward.max_concurrent: 1000 (kubeadm's value)".into(),
                    );
                }
                1000
            }
        };
        y.push_str(&format!("  max_concurrent: {max_concurrent}\n"));

        // Cache.
        y.push_str("cache:\n");
        match &self.cache {
            Some(c) => {
                let c = &c.value;
                y.push_str("  enabled: true\n");
                y.push_str(&format!("  max_entries: {}\n", c.max_entries));
                y.push_str(&format!("  max_ttl: {}\n", c.max_ttl));
                y.push_str(&format!("  min_ttl: {}\n", c.min_ttl));
                y.push_str(&format!("  max_negative_ttl: {}\n", c.max_negative_ttl));
                y.push_str(&format!("  min_negative_ttl: {}\n", c.min_negative_ttl));
                y.push_str(&format!("  prefetch: {}\n", c.prefetch));
                y.push_str(&format!("  serve_stale: {}\n", dur(c.serve_stale)));
            }
            None => {
                y.push_str("  enabled: false\n");
                if self.forward.is_some() {
                    self.notes.push("cache: the Corefile has no `cache` in the `.` block, so forwarded answers are not cached (cache.enabled: false); clusterdns's own default would cache them".into());
                }
            }
        }

        // Hosts.
        if let Some(h) = &self.hosts {
            let h = &h.value;
            y.push_str("hosts:\n");
            y.push_str(&format!("  file: {}\n", q(&h.file)));
            y.push_str(&format!("  fallthrough: {}\n", h.fallthrough));
            y.push_str(&format!("  ttl: {}\n", h.ttl));
            y.push_str(&format!("  reload: {}\n", dur(h.reload)));
        }

        // Operations.
        let listener = |s: &Option<Set<String>>| {
            s.as_ref()
                .map(|s| q(&s.value))
                .unwrap_or_else(|| "null".into())
        };
        y.push_str(&format!(
            "metrics:\n  listen: {}\n",
            listener(&self.metrics)
        ));
        y.push_str(&format!("health:\n  listen: {}\n", listener(&self.health)));
        y.push_str(&format!(
            "  lameduck: {}\n",
            dur(if self.health.is_some() {
                self.lameduck.unwrap_or(Duration::ZERO)
            } else {
                Duration::ZERO
            })
        ));
        y.push_str(&format!("ready:\n  listen: {}\n", listener(&self.ready)));
        y.push_str(&format!(
            "querylog:\n  enabled: {}\n  sample: 1.0\n",
            self.querylog
        ));
        if let Some(n) = self.max_udp_size {
            y.push_str(&format!("server:\n  max_udp_size: {n}\n"));
        }
        for (what, set) in [
            ("prometheus", &self.metrics),
            ("health", &self.health),
            ("ready", &self.ready),
        ] {
            if set.is_none() {
                self.notes.push(format!(
                    "{what}: not in the Corefile, so its endpoint is off ({}.listen: null); the manifests' probes and scrape annotations expect it",
                    match what { "prometheus" => "metrics", w => w }
                ));
            }
        }

        // Header: what this is and the notes.
        let mut out = String::from(
            "# clusterdns config converted from a CoreDNS Corefile by `clusterdns convert-corefile`.\n",
        );
        if !self.notes.is_empty() {
            out.push_str("# Notes:\n");
            for n in &self.notes {
                out.push_str(&format!("# - {}\n", n.replace('\n', " ")));
            }
        }
        out.push_str(&y);
        for (key, content) in &self.files {
            out.push_str(&format!(
                "\n# ConfigMap key `{key}` (read from {CONFIG_DIR}/{key}):\n"
            ));
            for l in content.lines() {
                out.push_str(&format!("#   {l}\n"));
            }
        }

        let config = Config::from_yaml(&out, Path::new("converted config"))
            .map_err(|e| CorefileError::Config(e.to_string()))?;
        config
            .validate()
            .map_err(|e| CorefileError::Config(e.to_string()))?;
        Ok(Conversion {
            config_yaml: out,
            notes: self.notes,
            config,
            files: self.files,
        })
    }
}

/// One directive being converted, for error construction.
struct Ctx<'a> {
    block: &'a str,
    d: &'a Directive,
    role: Role,
    keys: &'a [Key],
}

impl Ctx<'_> {
    fn unsupported(&self, reason: String) -> CorefileError {
        CorefileError::Unsupported {
            at: self.d.at.clone(),
            block: self.block.to_string(),
            directive: self.d.name.clone(),
            option: None,
            reason,
        }
    }
    fn unsupported_opt(&self, o: &Directive, reason: String) -> CorefileError {
        CorefileError::Unsupported {
            at: o.at.clone(),
            block: self.block.to_string(),
            directive: self.d.name.clone(),
            option: Some(o.name.clone()),
            reason,
        }
    }
    fn invalid(&self, message: String) -> CorefileError {
        CorefileError::Invalid {
            at: self.d.at.clone(),
            block: self.block.to_string(),
            directive: self.d.name.clone(),
            option: None,
            message,
        }
    }
    fn invalid_opt(&self, o: &Directive, message: String) -> CorefileError {
        CorefileError::Invalid {
            at: o.at.clone(),
            block: self.block.to_string(),
            directive: self.d.name.clone(),
            option: Some(o.name.clone()),
            message,
        }
    }
    fn unknown_option(&self, o: &Directive) -> CorefileError {
        CorefileError::Unsupported {
            at: o.at.clone(),
            block: self.block.to_string(),
            directive: self.d.name.clone(),
            option: Some(o.name.clone()),
            reason: format!(
                "`{}` has no option `{}` that clusterdns knows how to convert",
                self.d.name, o.name
            ),
        }
    }
    fn max_args(&self, n: usize) -> Result<(), CorefileError> {
        if self.d.args.len() > n {
            return Err(self.invalid(format!(
                "takes at most {n} argument(s), got {}",
                self.d.args.len()
            )));
        }
        Ok(())
    }
    fn no_block(&self) -> Result<(), CorefileError> {
        if let Some(o) = self.d.options().first() {
            return Err(self.unknown_option(o));
        }
        Ok(())
    }
    fn one_arg<'d>(&self, o: &'d Directive) -> Result<&'d String, CorefileError> {
        match o.args.as_slice() {
            [v] => Ok(v),
            _ => Err(CorefileError::Invalid {
                at: o.at.clone(),
                block: self.block.to_string(),
                directive: self.d.name.clone(),
                option: (o.name != self.d.name).then(|| o.name.clone()),
                message: format!("takes exactly one argument, got {}", o.args.len()),
            }),
        }
    }
    fn opt_no_args(&self, o: &Directive) -> Result<(), CorefileError> {
        if !o.args.is_empty() {
            return Err(self.invalid_opt(o, "takes no arguments".into()));
        }
        Ok(())
    }
    fn duration(&self, o: &Directive, v: &str) -> Result<Duration, CorefileError> {
        parse_go_duration(v).map_err(|e| self.invalid_opt(o, e))
    }
}

/// Go's `time.ParseDuration`: `300ms`, `1.5h`, `2h45m`, `0`.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 500ms, 5s, 1m30s)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_end == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// A duration as the config writes it: whole seconds as `5s`, else milliseconds.
fn dur(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ms", d.as_secs_f64() * 1000.0)
    }
}

fn format_upstream(a: SocketAddr) -> String {
    if a.port() == 53 {
        a.ip().to_string()
    } else {
        a.to_string()
    }
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

fn list(items: &[String]) -> String {
    format!(
        "[{}]",
        items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            base_dir: PathBuf::from("/nonexistent"),
            ..Options::default()
        }
    }

    fn conv(text: &str) -> Result<Conversion, CorefileError> {
        convert_with(text, &opts())
    }

    #[test]
    fn lexer_comments_quotes_and_lines() {
        let f: Rc<str> = Rc::from("Corefile");
        let t = lex(
            ".:53 { # comment { not a brace\n  log \"a b # c\" x#y\n}\n",
            &f,
        )
        .unwrap();
        let texts: Vec<_> = t
            .iter()
            .map(|t| (t.text.as_str(), t.line, t.quoted))
            .collect();
        assert_eq!(
            texts,
            vec![
                (".:53", 1, false),
                ("{", 1, false),
                ("log", 2, false),
                ("a b # c", 2, true),
                ("x", 2, false),
                ("}", 3, false)
            ]
        );
    }

    #[test]
    fn lexer_rejects_unclosed_quote_and_env_placeholders() {
        let f: Rc<str> = Rc::from("Corefile");
        assert!(matches!(
            lex("a \"b\n", &f),
            Err(CorefileError::Syntax { .. })
        ));
        let e = lex("forward . {$UPSTREAM}\n", &f).unwrap_err().to_string();
        assert!(e.contains("environment placeholder"), "{e}");
    }

    #[test]
    fn parser_nested_blocks_and_one_liners() {
        let c = parse(
            ".:53 {\n health { lameduck 5s }\n forward . 1.1.1.1 {\n  force_tcp\n }\n errors\n}\n",
            &opts(),
        )
        .unwrap();
        assert_eq!(c.blocks.len(), 1);
        let ds = &c.blocks[0].directives;
        assert_eq!(
            ds.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            ["health", "forward", "errors"]
        );
        assert_eq!(ds[0].block.as_ref().unwrap()[0].args, ["5s"]);
        assert_eq!(ds[1].args, [".", "1.1.1.1"]);
        assert_eq!(ds[1].block.as_ref().unwrap()[0].name, "force_tcp");
        assert_eq!(ds[2].at.line, 6);
    }

    #[test]
    fn parser_multiple_keys_and_braceless_single_block() {
        let c = parse(
            "a.example:53, b.example:53 {\n forward . 10.0.0.1\n}\n",
            &opts(),
        )
        .unwrap();
        assert_eq!(c.blocks[0].keys, ["a.example:53", "b.example:53"]);
        let c = parse(".:53\nforward . 10.0.0.1\nerrors\n", &opts()).unwrap();
        assert_eq!(c.blocks[0].directives.len(), 2);
    }

    #[test]
    fn parser_errors_name_the_line() {
        let e = parse(".:53 {\n errors\n", &opts()).unwrap_err();
        assert!(
            matches!(e, CorefileError::Syntax { ref at, .. } if at.line == 1),
            "{e}"
        );
        let e = parse(".:53 {\n errors\n}\n}\n", &opts()).unwrap_err();
        assert!(e.to_string().contains("Corefile:4"), "{e}");
    }

    #[test]
    fn snippets_expand() {
        let c = parse(
            "(common) {\n errors\n log\n}\n.:53 {\n import common\n forward . 10.0.0.1\n}\n",
            &opts(),
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

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(
            parse_go_duration("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("5 s").is_err());
        assert_eq!(dur(Duration::from_millis(500)), "500ms");
        assert_eq!(dur(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn keys_and_reverse_cidrs() {
        assert_eq!(
            cidr_to_reverse_zone("10.0.0.0/8").unwrap(),
            "10.in-addr.arpa"
        );
        assert_eq!(
            cidr_to_reverse_zone("172.16.0.0/16").unwrap(),
            "16.172.in-addr.arpa"
        );
        assert!(cidr_to_reverse_zone("10.0.0.0/12").is_none());
    }

    #[test]
    fn minimal_corefile_converts_and_validates() {
        let c = conv(".:53 {\n kubernetes cluster.local in-addr.arpa ip6.arpa\n forward . /etc/resolv.conf\n}\n").unwrap();
        assert_eq!(c.config.cluster.zone, "cluster.local");
        assert_eq!(c.config.cluster.reverse_zones, ["in-addr.arpa", "ip6.arpa"]);
        assert!(c.config.cluster.fallthrough.is_empty());
        assert_eq!(c.config.cluster.pods, config::PodsMode::Disabled);
        assert_eq!(c.config.cluster.ttl, 5);
        assert!(!c.config.cache.enabled);
        assert!(!c.config.cluster.loadbalance);
        assert_eq!(c.config.metrics.listen, None);
        assert!(c.config.source.kubernetes.is_some());
    }

    #[test]
    fn unsupported_directive_names_block_line_and_reason() {
        let e =
            conv(".:53 {\n errors\n rewrite name foo.example bar.example\n forward . 8.8.8.8\n}\n")
                .unwrap_err();
        assert_eq!(e.directive(), Some("rewrite"));
        assert_eq!(e.block(), Some(".:53"));
        assert_eq!(e.pos().unwrap().line, 3);
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "Corefile:3: `rewrite` in server block `.:53` cannot be carried over: "
            ),
            "{msg}"
        );
    }

    #[test]
    fn unknown_directive_and_option() {
        let e = conv(".:53 {\n frobnicate\n}\n").unwrap_err();
        assert_eq!(e.directive(), Some("frobnicate"));
        let e = conv(".:53 {\n forward . 8.8.8.8 {\n  except corp.example\n }\n}\n").unwrap_err();
        assert_eq!(
            (e.directive(), e.option()),
            (Some("forward"), Some("except"))
        );
        assert_eq!(e.pos().unwrap().line, 3);
    }

    #[test]
    fn two_cluster_domains_rejected() {
        let e = conv(".:53 {\n kubernetes cluster.local cluster.example\n}\n").unwrap_err();
        assert!(e.to_string().contains("one cluster domain"), "{e}");
    }

    #[test]
    fn stub_block_and_lifted_force_tcp() {
        let c = conv(
            ".:53 {\n kubernetes cluster.local\n forward . 10.0.0.2\n cache 30\n}\ncorp.example:53 {\n errors\n forward . 10.0.0.5 10.0.0.6:5353 {\n  force_tcp\n }\n}\n",
        )
        .unwrap();
        assert_eq!(
            c.config.forward.stub_domains["corp.example"],
            ["10.0.0.5", "10.0.0.6:5353"]
        );
        assert!(c.config.forward.force_tcp);
        assert!(
            c.notes
                .iter()
                .any(|n| n.contains("force_tcp") && n.contains("every forwarded name")),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn conflicting_forward_options_rejected() {
        let e = conv(
            ".:53 {\n kubernetes cluster.local\n forward . 10.0.0.2 {\n  policy sequential\n }\n}\ncorp.example:53 {\n forward . 10.0.0.5 {\n  policy round_robin\n }\n}\n",
        )
        .unwrap_err();
        assert_eq!(
            (e.directive(), e.option()),
            (Some("forward"), Some("policy"))
        );
    }

    #[test]
    fn different_ports_rejected() {
        let e =
            conv(".:53 {\n forward . 10.0.0.2\n}\ncorp.example:5353 {\n forward . 10.0.0.5\n}\n")
                .unwrap_err();
        assert!(e.to_string().contains("same port"), "{e}");
    }

    #[test]
    fn stub_inside_cluster_zone_rejected() {
        let e = conv(".:53 {\n kubernetes cluster.local\n forward . 10.0.0.2\n}\nsvc.cluster.local:53 {\n forward . 10.0.0.5\n}\n").unwrap_err();
        assert!(e.to_string().contains("inside the cluster zone"), "{e}");
    }

    #[test]
    fn inline_hosts_become_a_file() {
        let c = conv(".:53 {\n kubernetes cluster.local\n hosts {\n  10.0.0.1 example1.org\n  10.0.0.2 example2.org www.example2.org\n  fallthrough\n }\n forward . /etc/resolv.conf\n}\n").unwrap();
        let h = c.config.hosts.as_ref().unwrap();
        assert_eq!(h.file.as_deref(), Some(Path::new("/etc/clusterdns/hosts")));
        assert!(h.fallthrough);
        assert!(c.files["hosts"].contains("10.0.0.2 example2.org www.example2.org\n"));
    }

    #[test]
    fn bind_lines_add_up_and_must_agree_across_blocks() {
        let c = conv(".:53 {\n bind 10.0.0.1\n bind 127.0.0.1 10.0.0.1\n forward . 8.8.8.8\n}\n")
            .unwrap();
        assert_eq!(
            c.config.listen,
            vec![
                "10.0.0.1:53".parse().unwrap(),
                "127.0.0.1:53".parse().unwrap()
            ]
        );
        let e = conv(".:53 {\n bind 10.0.0.1\n forward . 8.8.8.8\n}\ncorp.example:53 {\n bind 10.0.0.2\n forward . 10.0.0.5\n}\n").unwrap_err();
        assert_eq!(e.directive(), Some("bind"));
        assert_eq!(e.block(), Some("corp.example:53"));
        let e = conv(".:53 {\n bind eth0\n}\n").unwrap_err();
        assert!(e.to_string().contains("not interface names"), "{e}");
        let e = conv(".:53 {\n cache 30\n cache 60\n}\n").unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
    }

    #[test]
    fn no_root_block_turns_forwarding_off() {
        let c = conv("cluster.local:53 {\n kubernetes\n}\n").unwrap();
        assert!(!c.config.forward.enabled);
        assert_eq!(c.config.cluster.zone, "cluster.local");
    }
}
