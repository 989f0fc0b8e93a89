//! The `autopath` plugin: `autopath @kubernetes` (the search path of the asking pod's
//! namespace, then the host's search domains) becomes `shape.autopath`.

use super::{Converter, Ctx};
use crate::corefile::CorefileError;

/// Where CoreDNS's `kubernetes` plugin reads the host search domains it appends.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

impl Converter {
    pub(super) fn autopath(&mut self, ctx: &Ctx<'_>) -> Result<(), CorefileError> {
        let d = ctx.d;
        ctx.no_block()?;
        match d.args.last().map(String::as_str) {
            Some("@kubernetes") => {}
            Some(other) if other.starts_with('@') => {
                return Err(ctx.unsupported(format!("{other}: only the kubernetes plugin gives a search path in clusterdns (`autopath @kubernetes`)")));
            }
            Some(file) => {
                return Err(ctx.unsupported(format!("a fixed search list from {file:?}: clusterdns completes search paths per pod namespace (`autopath @kubernetes`); without it clients walk their own search list (same answers, more queries)")));
            }
            None => {
                return Err(
                    ctx.invalid("needs a search path source, e.g. `autopath @kubernetes`".into())
                );
            }
        }
        if d.args.len() > 1 {
            self.note(&d.at, ctx.block, "autopath", "its zones are dropped: clusterdns completes search paths for names of the cluster zone's search list only, as `@kubernetes` does");
        }
        self.shape.autopath.enabled = true;
        self.shape.autopath.resolv_conf = Some(HOST_RESOLV_CONF.into());
        self.note(&d.at, ctx.block, "autopath", "clusterdns watches Pods (IP, namespace, hostNetwork only) to know each client's namespace: its ClusterRole needs list and watch on pods (see manifests/); behind a node-local cache the client is the cache, so autopath does nothing there");
        Ok(())
    }
}
