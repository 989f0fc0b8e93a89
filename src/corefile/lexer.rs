//! Corefile text into tokens, as Caddy's lexer splits a Caddyfile.

use std::rc::Rc;

use super::{CorefileError, Pos};

/// One word of the Corefile, with where it stands.
#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) text: String,
    /// Written in quotes: never a brace or a keyword.
    pub(super) quoted: bool,
    pub(super) file: Rc<str>,
    pub(super) line: usize,
}

impl Token {
    pub(super) fn pos(&self) -> Pos {
        Pos {
            file: self.file.to_string(),
            line: self.line,
        }
    }
    /// The unquoted word `s` (a brace, `import`).
    pub(super) fn is(&self, s: &str) -> bool {
        !self.quoted && self.text == s
    }
    pub(super) fn same_line(&self, other: &Token) -> bool {
        self.line == other.line && Rc::ptr_eq(&self.file, &other.file)
    }
}

/// Split text into tokens as Caddy's lexer does: whitespace separates, `"..."` quotes (with
/// `\"`), `#` starts a comment to the end of the line.
pub(super) fn lex(text: &str, file: &Rc<str>) -> Result<Vec<Token>, CorefileError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
