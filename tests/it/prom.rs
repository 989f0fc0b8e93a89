//! The HTTP client and Prometheus server now live in `crate::support`; these names stay for
//! test files written against this module on other branches (remove once nothing uses them).

#[allow(unused_imports)]
pub(crate) use crate::support::{Prometheus, Resp, get, urlencode};
