//! Everything an operator looks at, off the query path: metrics, health and readiness, query log.
pub mod metrics;
