//! The Kubernetes DNS specification (schema 1.1.0), and only it: query names, the immutable
//! zone snapshot built from cluster state, and answers written as DNS wire bytes.

pub mod answer;
pub mod build;
pub mod feed;
pub mod names;
pub mod pmap;
pub mod serial;
pub mod snapshot;
pub mod xfr;

#[cfg(test)]
mod tests;
