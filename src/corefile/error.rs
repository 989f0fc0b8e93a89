//! Why a Corefile cannot be converted, and where.

use std::fmt;

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
    /// The converted config does not pass [`crate::config::Config::validate`], or its YAML does
    /// not read back as the same config (a converter bug if it happens).
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
