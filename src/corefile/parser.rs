//! Tokens into server blocks: keys (`zone:port`, comma-separated, possibly over several lines),
//! then a `{ }` body of directives, each with its arguments on the same line and an optional
//! `{ }` block of options.

use std::rc::Rc;

use super::import::Expander;
use super::lexer::{Token, lex};
use super::{CorefileError, Options, Pos};

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
    /// The sub-directives of its `{ }` block (none without one).
    pub fn options(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }
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
    let mut ex = Expander::new(opts);
    let tokens = ex.expand(tokens, 0)?;
    let blocks = parse_server_blocks(&tokens, &file)?;
    Ok(Corefile {
        blocks,
        notes: ex.notes,
    })
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

/// Whether a word can be a server block's key (`.:53`, `cluster.local`), for the one block that
/// may be written without braces.
fn looks_like_key(k: &str) -> bool {
    k.contains(':') || k.contains('.')
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

#[cfg(test)]
mod tests {
    use super::super::test_options;
    use super::*;

    #[test]
    fn parser_nested_blocks_and_one_liners() {
        let c = parse(
            ".:53 {\n health { lameduck 5s }\n forward . 1.1.1.1 {\n  force_tcp\n }\n errors\n}\n",
            &test_options(),
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
            &test_options(),
        )
        .unwrap();
        assert_eq!(c.blocks[0].keys, ["a.example:53", "b.example:53"]);
        let c = parse(".:53\nforward . 10.0.0.1\nerrors\n", &test_options()).unwrap();
        assert_eq!(c.blocks[0].directives.len(), 2);
    }

    #[test]
    fn parser_errors_name_the_line() {
        let e = parse(".:53 {\n errors\n", &test_options()).unwrap_err();
        assert!(
            matches!(e, CorefileError::Syntax { ref at, .. } if at.line == 1),
            "{e}"
        );
        let e = parse(".:53 {\n errors\n}\n}\n", &test_options()).unwrap_err();
        assert!(e.to_string().contains("Corefile:4"), "{e}");
    }
}
