//! One error enum per layer, with `thiserror`. Each names what it is about: the config key,
//! the object, the file position, the upstream.

use std::path::PathBuf;

/// Configuration errors: reported at start (or on reload) with the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// A cluster object that cannot be turned into DNS records; it is skipped and logged.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{kind} {namespace}/{name}: {message}")]
pub struct ObjectError {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub message: String,
}

/// Errors of an object source (file or API).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("kubernetes: {0}")]
    Kube(String),
}

/// The crate's top-level error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("forwarding loop: {0}")]
    Loop(String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// A bounded label value for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Source(_) => "source",
            Error::Listen { .. } => "listen",
            Error::Loop(_) => "loop",
            Error::Other(_) => "other",
        }
    }
}
