//! Everything an operator looks at, off the query path: metrics, health and readiness, query log.
//!
//! - [`metrics`]: the CoreDNS-named Prometheus metrics (plus clusterdns's own), handles resolved
//!   once; [`metrics::global`] is the process's registry.
//! - [`http`]: the `/metrics` (`:9153`), `/health` (`:8080`) and `/ready` (`:8181`) endpoints.
//! - [`lifecycle`]: readiness state, the SIGTERM → lameduck → drain → stop sequence, SIGHUP
//!   reloads.
//! - [`querylog`]: the sampled, structured (JSON) query log.
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod querylog;
