//! clusterdns: a cluster DNS server for Kubernetes that replaces CoreDNS as `kube-dns`.
//!
//! # Layout
//!
//! The folders follow the data flow, left to right:
//!
//! ```text
//! cluster objects ──> cluster state ──> zone snapshot ──(arc-swap)──> query path ──> answer
//!  source/            cluster/          zone/                         server/
//!  (file | API)       (compact indexes) (records, wire answers)       (UDP/TCP)
//!                                                                       │ not in the zone
//!                                                                       v
//!                                                         resolve/: hosts ──> cache ──> upstreams
//! ops/: metrics, health, readiness, query log — off the query path, reading counters it bumps.
//! ```
//!
//! The folders are also layers: a module imports only the ones below it (ARCHITECTURE.md's
//! "Layers" list, checked by `tests/it/layers.rs`).
//!
//! - [`config`]: the YAML configuration, defaults (only there) and validation; below it only
//!   [`names`] (the domain-name validator) and [`selector`] (label selectors).
//! - [`source`]: where cluster objects come from (a watched file, or kube-rs watchers).
//! - [`cluster`]: the DNS-relevant part of each object, and the per-kind indexes.
//! - [`zone`]: the Kubernetes DNS specification: names, the immutable snapshot, answers.
//! - [`server`]: sockets and the DNS protocol (EDNS, truncation, rcodes); no Kubernetes types.
//! - [`resolve`]: names outside the cluster: hosts file, cache, forwarding.
//! - [`wire`]: the DNS wire format, the one layer that parses queries (once) and writes and
//!   rewrites replies, for the zone, the resolver and the cache.
//! - [`ops`]: metrics, health and readiness endpoints, query log, lifecycle (the one drain).
//! - [`observe`]: what the query path tells the metrics and the query log (below both).
//! - [`clock`]: time for the resolver and cache, injectable (tests move it by hand).
//! - [`filewatch`]: has a file changed? (the config, hosts and cluster-objects files).
//! - [`reload`]: config reload on SIGHUP or a changed config file.
//! - [`nodelocal`]: node-local mode: the interface, node-cache's interception rules, the
//!   handover lease between two instances, the periodic check.
//! - [`xfr`]: zone transfers out (AXFR, IXFR, TSIG, NOTIFY): clusterdns as the primary of its
//!   cluster zone for secondaries outside the cluster; beside the query path, which routes
//!   transfer requests to it.
//! - [`corefile`]: converting a CoreDNS Corefile into a clusterdns config: lexer, imports,
//!   parser, a converter per plugin family that builds a [`config::Config`], and its YAML.
//! - `fuzzing` (hidden): one function per parser of untrusted bytes with its invariants, called
//!   by the cargo-fuzz targets in `fuzz/` and by `cargo test`, which replays the corpora.
//!
//! # Public surface
//!
//! clusterdns is a binary; the library exists for it, its integration tests (`tests/it/`),
//! benchmarks (`benches/`) and fuzz targets (`fuzz/`). The modules those use are `pub`; the
//! rest (`app_ops`, `filewatch`, `memory`, `names`, `nodelocal`) are `pub(crate)`, and every
//! item reachable from outside is one of them on purpose (`unreachable_pub` is on).

pub mod app;
pub(crate) mod app_ops;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod corefile;
pub mod error;
pub(crate) mod filewatch;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod memory;
pub(crate) mod names;
pub(crate) mod nodelocal;
pub mod observe;
pub mod ops;
pub mod reload;
pub mod resolve;
pub mod selector;
pub mod server;
pub mod source;
#[doc(hidden)]
pub mod testkit;
pub mod wire;
pub mod xfr;
pub mod zone;

pub use error::Error;
