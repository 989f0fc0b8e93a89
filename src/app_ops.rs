//! The seams between `serve` and the resolver and operator endpoints.

use std::sync::Arc;

use crate::config::Config;
use crate::server::{QueryLogger, Upstream};
use crate::Error;

/// Readiness, HTTP endpoints and the query log, as `serve` uses them.
#[derive(Clone)]
pub struct OpsHooks {
    ready: Arc<std::sync::atomic::AtomicBool>,
}

impl OpsHooks {
    pub fn new(_cfg: &Config) -> Self {
        OpsHooks { ready: Arc::new(std::sync::atomic::AtomicBool::new(false)) }
    }
    pub fn on_synced(&self) -> Box<dyn Fn() + Send> {
        let r = self.ready.clone();
        Box::new(move || r.store(true, std::sync::atomic::Ordering::Release))
    }
    pub fn querylog(&self, _cfg: &Config) -> Option<Arc<dyn QueryLogger>> {
        None
    }
    pub async fn start_http(&self, _cfg: &Config) -> Result<(), Error> {
        Ok(())
    }
    pub fn shutting_down(&self) {
        self.ready.store(false, std::sync::atomic::Ordering::Release);
    }
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

/// Work that needs the DNS sockets open: the loop probe (CoreDNS's `loop` plugin). If our
/// upstreams send our own probe back to us, the server sees it arrive and exits.
pub async fn after_listen(r: &Option<Arc<crate::resolve::Resolver>>) {
    if let Some(r) = r.clone() {
        tokio::spawn(async move { r.send_loop_probe().await });
    }
}
