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

/// The resolver for names outside the zone, when forwarding is on.
pub fn resolver(_cfg: &Config) -> Result<Option<Arc<dyn Upstream>>, Error> {
    Ok(None)
}

/// Work that needs the DNS sockets open (the loop probe).
pub async fn after_listen(_engine: &Arc<crate::server::Engine>) {}
