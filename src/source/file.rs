//! A file of Kubernetes objects as the source: what `kubectl get svc,endpointslices,pods,namespaces
//! -A -o yaml` prints (a `kind: List`), or several YAML documents of single objects or lists.
//!
//! The file is polled for changes (size, modification time, inode): an editor's rename-into-place
//! and a ConfigMap's symlink swap both count. A new file that does not parse leaves the previous
//! snapshot serving, and the error is logged with its line and column. Single objects that cannot
//! become DNS records (an unparsable IP, a missing name) are skipped with a log line naming them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::cluster::ClusterEvent;
use crate::cluster::objects::{NamespaceInfo, Object, PodInfo, ServiceInfo, SliceInfo};
use crate::error::{ObjectError, SourceError};
use crate::ops::metrics::Metrics;

/// The sample cluster compiled into the binary: what `serve` answers with no source at all.
pub const EMBEDDED_SAMPLE: &str = include_str!("../../config/cluster.yaml");

/// Objects read from a file, and the ones skipped.
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<Object>,
    pub skipped: Vec<ObjectError>,
}

/// Parse YAML text (one or more documents; objects or `List`s) into objects.
pub fn parse_objects(text: &str, origin: &Path) -> Result<Loaded, SourceError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| SourceError::Parse {
        path: origin.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut out = Loaded::default();
    for doc in docs {
        collect(doc, &mut out);
    }
    Ok(out)
}

fn collect(v: Value, out: &mut Loaded) {
    if v.is_null() {
        return;
    }
    let kind = v
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if kind == "List" || kind.ends_with("List") {
        if let Some(Value::Array(items)) = v.get("items").cloned() {
            for mut item in items {
                // `kubectl get -o yaml` lists keep each item's kind; typed lists (ServiceList)
                // may not: fill it in.
                if item.get("kind").is_none()
                    && kind != "List"
                    && let Some(obj) = item.as_object_mut()
                {
                    obj.insert(
                        "kind".into(),
                        Value::String(kind.trim_end_matches("List").into()),
                    );
                }
                collect(item, out);
            }
        }
        return;
    }
    let id = {
        let m = v.get("metadata");
        (
            m.and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            m.and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("<unnamed>")
                .to_string(),
        )
    };
    fn conv<T, I>(
        v: Value,
        kind: &'static str,
        (ns, name): (String, String),
        f: fn(I) -> Object,
    ) -> Result<Object, ObjectError>
    where
        T: serde::de::DeserializeOwned,
        for<'a> I: TryFrom<&'a T, Error = ObjectError>,
    {
        let t: T = serde_json::from_value(v).map_err(|e| ObjectError {
            kind,
            namespace: ns,
            name,
            message: e.to_string(),
        })?;
        I::try_from(&t).map(f)
    }
    let r = match kind.as_str() {
        "Service" => conv::<Service, ServiceInfo>(v, "Service", id, Object::Service),
        "EndpointSlice" => conv::<EndpointSlice, SliceInfo>(v, "EndpointSlice", id, Object::Slice),
        "Pod" => conv::<Pod, PodInfo>(v, "Pod", id, Object::Pod),
        "Namespace" => conv::<Namespace, NamespaceInfo>(v, "Namespace", id, Object::Namespace),
        _ => return, // Endpoints, ConfigMaps, ...: not used for DNS
    };
    match r {
        Ok(o) => out.objects.push(o),
        Err(e) => out.skipped.push(e),
    }
}

/// Read and parse a file.
pub fn load(path: &Path) -> Result<Loaded, SourceError> {
    let text = std::fs::read_to_string(path).map_err(|e| SourceError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    parse_objects(&text, path)
}

fn log_skipped(l: &Loaded) {
    for e in &l.skipped {
        tracing::warn!(object = %e, "skipping object");
    }
}

/// Identity of a file's current version: changes when it is rewritten or replaced.
fn stamp(path: &Path) -> Option<(u64, std::time::SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?, m.ino()))
}

/// Emit the file's objects, then watch it and emit them again whenever it changes. A new
/// version that cannot be read is counted in `metrics` (`coredns_reload_failed_total`).
pub async fn run(
    path: Option<PathBuf>,
    tx: mpsc::UnboundedSender<ClusterEvent>,
    mut shutdown: watch::Receiver<bool>,
    poll: Duration,
    metrics: Arc<Metrics>,
) {
    let Some(path) = path else {
        // The embedded sample: parsed once, never changes.
        match parse_objects(EMBEDDED_SAMPLE, Path::new("<embedded sample>")) {
            Ok(l) => {
                log_skipped(&l);
                let _ = tx.send(ClusterEvent::ReplaceAll { objects: l.objects });
            }
            Err(e) => tracing::error!(error = %e, "embedded sample"),
        }
        return;
    };
    let mut last = None;
    loop {
        let now = stamp(&path);
        if now != last {
            last = now;
            match load(&path) {
                Ok(l) => {
                    log_skipped(&l);
                    tracing::info!(file = %path.display(), objects = l.objects.len(), skipped = l.skipped.len(), "loaded cluster objects");
                    if tx
                        .send(ClusterEvent::ReplaceAll { objects: l.objects })
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    metrics.reload_failed();
                    tracing::error!(error = %e, "cluster objects file is invalid; still serving the previous snapshot");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.changed() => if *shutdown.borrow() { return },
        }
    }
}
