//! The Kubernetes DNS specification (schema 1.1.0), and only it: query names, the immutable
//! zone snapshot built from cluster state, and answers written as DNS wire bytes.

pub mod names;
pub mod build;
pub mod snapshot;
pub mod pmap;
pub mod answer;
pub mod feed;

#[cfg(test)]
mod tests;
