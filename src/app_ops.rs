//! The seams between `serve` (and a config reload) and the resolver.

use std::sync::Arc;

use crate::Error;
use crate::clock::Clock;
use crate::config::Config;
use crate::ops::metrics::Metrics;
use crate::resolve::Resolver;
use crate::server::Upstream;

/// The resolver for names outside the zone, when forwarding is on, counting into `metrics` and
/// on the system clock. Its background work (health checks, hosts reload, critical names,
/// prefetch) starts on the current runtime. The one place a running server builds a resolver
/// (at start and on a reload; then the caches of `previous` whose config is unchanged are
/// kept).
pub(crate) fn resolver(
    cfg: &Config,
    metrics: &Arc<Metrics>,
    previous: Option<&Resolver>,
) -> Result<Option<Arc<Resolver>>, Error> {
    if !cfg.forward.enabled {
        return Ok(None);
    }
    let r = Resolver::build(cfg, metrics.clone(), Clock::system(), previous)?;
    r.start();
    Ok(Some(r))
}

/// The resolver as the server sees it.
pub(crate) fn as_upstream(r: &Option<Arc<Resolver>>) -> Option<Arc<dyn Upstream>> {
    r.clone().map(|r| r as Arc<dyn Upstream>)
}

/// Work that needs the DNS sockets open: the loop probes (as CoreDNS's `loop` plugin). An
/// upstream that sends our own probe back to us is taken out of use until the loop is gone;
/// the server keeps serving (see [`crate::resolve::looping`]).
pub(crate) fn after_listen(r: &Option<Arc<Resolver>>) {
    if let Some(r) = r.clone() {
        tokio::spawn(async move { r.send_loop_probe().await });
    }
}
