//! The seams between `serve` and the resolver and operator endpoints.

use std::sync::Arc;

use crate::Error;
use crate::config::Config;
use crate::server::{QueryLogger, Upstream};

/// The sampled query log, when the config turns it on.
pub fn querylog(cfg: &Config) -> Option<Arc<dyn QueryLogger>> {
    cfg.querylog.enabled.then(|| {
        Arc::new(crate::ops::querylog::QueryLog::new(&cfg.querylog)) as Arc<dyn QueryLogger>
    })
}

/// The resolver for names outside the zone, when forwarding is on. Its background work
/// (health checks, hosts reload, critical names, prefetch) starts on the current runtime.
pub fn resolver(cfg: &Config) -> Result<Option<Arc<crate::resolve::Resolver>>, Error> {
    if !cfg.forward.enabled {
        return Ok(None);
    }
    let r = crate::resolve::Resolver::new(cfg)?;
    r.start();
    Ok(Some(r))
}

/// The resolver as the server sees it.
pub fn as_upstream(r: &Option<Arc<crate::resolve::Resolver>>) -> Option<Arc<dyn Upstream>> {
    r.clone().map(|r| r as Arc<dyn Upstream>)
}

/// Work that needs the DNS sockets open: the loop probes (as CoreDNS's `loop` plugin). An
/// upstream that sends our own probe back to us is taken out of use until the loop is gone;
/// the server keeps serving (see [`crate::resolve::looping`]).
pub fn after_listen(r: &Option<Arc<crate::resolve::Resolver>>) {
    if let Some(r) = r.clone() {
        tokio::spawn(async move { r.send_loop_probe().await });
    }
}
