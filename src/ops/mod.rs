//! Everything an operator looks at, off the query path: metrics, health and readiness, query log.
//! Below the query path: it imports only `config`, `observe` and `wire`, so it can read what the
//! query path counts but never call into it.
//!
//! - [`metrics`]: the CoreDNS-named Prometheus metrics (plus clusterdns's own), handles resolved
//!   once; `app::serve` makes the process's one registry and passes it to whatever counts.
//! - [`http`]: the `/metrics` (`:9153`), `/health` (`:8080`) and `/ready` (`:8181`) endpoints.
//! - [`lifecycle`]: readiness state, the SIGTERM → lameduck → drain → stop sequence (the one
//!   drain mechanism, [`lifecycle::DrainGuard`]).
//! - [`querylog`]: the sampled, structured (JSON) query log.
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod querylog;
