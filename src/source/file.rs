//! A file of Kubernetes objects as the source: what `kubectl get svc,endpointslices,pods,namespaces
//! -A -o yaml` (or `-o json`) prints (a `kind: List`), or several YAML documents of single
//! objects or lists, or several JSON documents one after the other.
//!
//! A file is read as a stream, object by object, in bounded memory whatever its size: a dump of
//! a 5,000-node cluster is hundreds of MB. YAML documents are split at their `---` markers, and
//! inside a document the `items` of a list are deserialized one at a time, as are the items of
//! a JSON list; only one item is ever held as a tree. Each object goes on to the zone builder
//! as soon as it is read, as part of one list of every kind ([`ClusterEvent::ListBegin`],
//! [`ClusterEvent::Listed`], [`ClusterEvent::ListEnd`]), so the builder holds no second copy
//! either. (YAML's own limits on the size of a document are lifted for this: a dump's
//! single `List` document has millions of nodes. Its limits on nesting and on aliases stay.)
//!
//! The file is polled for changes through [`crate::filewatch`], the watcher of the config and
//! hosts files too (device, inode, size, modification time, through symlinks): an editor's
//! rename-into-place and a ConfigMap's symlink swap both count. A new version is read twice: once to check that it
//! parses to its end, then again to apply it. A version that does not parse leaves the previous
//! snapshot serving (nothing of it is applied), and the error is logged with its line and column.
//! Single objects that cannot become DNS records (an unparsable IP, a missing name) are skipped
//! with a log line naming them.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::trimmed::{
    Converted, TrimPod, TrimService, TrimSlice, convert_namespace, convert_pod, convert_service,
    convert_slice,
};
use crate::cluster::objects::Kind;
use crate::cluster::{ClusterEvent, Object};
use crate::error::{ObjectError, SourceError};
use crate::filewatch::{Change, FileWatch};
use crate::ops::metrics::Metrics;

/// The sample cluster compiled into the binary: what `serve` answers with no source at all.
pub const EMBEDDED_SAMPLE: &str = include_str!("../../config/cluster.yaml");

/// Objects read from a file, and the ones skipped.
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<Object>,
    pub skipped: Vec<ObjectError>,
}

/// Parse a small text (the embedded sample, tests) into objects, all held at once.
pub fn parse_objects(text: &str, origin: &Path) -> Result<Loaded, SourceError> {
    let mut out = Loaded::default();
    read_objects(text.as_bytes(), origin, &mut |item| {
        match item {
            Ok(o) => out.objects.push(o),
            Err(e) => out.skipped.push(e),
        }
        true
    })?;
    Ok(out)
}

/// What the reader is told about each object, in file order: the object, or why it is skipped.
/// It returns whether to read on.
pub type Each<'a> = dyn FnMut(Result<Object, ObjectError>) -> bool + 'a;

/// Reads every object of `reader` (YAML or JSON, see the module doc), handing each to `each`
/// as soon as it is read. Returns `Ok(true)` at the end of the input, `Ok(false)` when `each`
/// asked to stop, and an error naming `origin` (with the line, for YAML) if the input does not
/// parse: objects before the error have been handed on by then.
pub fn read_objects(
    reader: impl Read,
    origin: &Path,
    each: &mut Each<'_>,
) -> Result<bool, SourceError> {
    let mut input = BufReader::with_capacity(256 * 1024, reader);
    let io = |source| SourceError::Io {
        path: origin.to_path_buf(),
        source,
    };
    match first_byte(&mut input).map_err(io)? {
        None => Ok(true),
        Some(b'{' | b'[') => read_json(&mut input, origin, each),
        Some(_) => read_yaml(&mut input, origin, each),
    }
}

/// The first byte that is not whitespace (after a UTF-8 byte order mark), not consumed.
fn first_byte(input: &mut impl BufRead) -> std::io::Result<Option<u8>> {
    let mut start = true;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(None);
        }
        if start && buf.starts_with(b"\xEF\xBB\xBF") {
            input.consume(3);
            start = false;
            continue;
        }
        start = false;
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                let b = buf[i];
                input.consume(i);
                return Ok(Some(b));
            }
            None => {
                let n = buf.len();
                input.consume(n);
            }
        }
    }
}

/// Set by [`Sink`] when `each` asked to stop: the parse is abandoned with this message.
const STOPPED: &str = "clusterdns: reading stopped";

fn read_json(
    input: &mut impl BufRead,
    origin: &Path,
    each: &mut Each<'_>,
) -> Result<bool, SourceError> {
    let mut sink = Sink {
        each,
        stopped: false,
    };
    // One document after another, each streamed by its own deserializer over the same buffered
    // reader (a deserializer reads nothing past the end of an object or array).
    while first_byte(input)
        .map_err(|source| SourceError::Io {
            path: origin.to_path_buf(),
            source,
        })?
        .is_some()
    {
        let mut de = serde_json::Deserializer::from_reader(&mut *input);
        let parsed = DocSeed { sink: &mut sink }.deserialize(&mut de);
        if let Err(e) = parsed {
            if sink.stopped {
                return Ok(false);
            }
            return Err(SourceError::Parse {
                path: origin.to_path_buf(),
                message: e.to_string(),
            });
        }
    }
    Ok(true)
}

fn read_yaml(
    input: &mut impl BufRead,
    origin: &Path,
    each: &mut Each<'_>,
) -> Result<bool, SourceError> {
    let mut sink = Sink {
        each,
        stopped: false,
    };
    let mut docs = Documents::new(input);
    while let Some(first_line) = docs.next_document() {
        let mut options = serde_saphyr::Options::default();
        let mut budget = serde_saphyr::Budget::default();
        // The document is streamed, never held: its size needs no limit of its own. Nesting
        // depth and the alias limits stay as they are.
        budget.max_reader_input_bytes = None;
        budget.max_events = usize::MAX;
        budget.max_nodes = usize::MAX;
        budget.max_total_scalar_bytes = usize::MAX;
        options.budget = Some(budget);
        let seed = DocSeed { sink: &mut sink };
        let parsed =
            serde_saphyr::with_deserializer_from_reader_with_options(&mut docs, options, |de| {
                seed.deserialize(de)
            });
        if let Some(source) = docs.error.take() {
            return Err(SourceError::Io {
                path: origin.to_path_buf(),
                source,
            });
        }
        if let Err(e) = parsed {
            if sink.stopped {
                return Ok(false);
            }
            return Err(SourceError::Parse {
                path: origin.to_path_buf(),
                message: format!("in the YAML document from line {first_line}: {e}"),
            });
        }
    }
    Ok(true)
}

/// The YAML documents of a stream, one at a time, as readers: a document ends where a line
/// starts with the `---` marker (YAML forbids that at the start of a line inside a document)
/// or is the `...` end marker.
struct Documents<'a, R> {
    input: &'a mut R,
    /// The current line, and how much of it was read.
    line: Vec<u8>,
    at: usize,
    /// Line number (from 1) of `line`.
    line_no: usize,
    /// The current document has ended; `line` holds the next one's first line (if any).
    ended: bool,
    /// The current document has at least one line.
    started: bool,
    eof: bool,
    /// An I/O error, kept for the caller (the YAML reader only sees the end of the input).
    error: Option<std::io::Error>,
}

impl<'a, R: BufRead> Documents<'a, R> {
    fn new(input: &'a mut R) -> Self {
        Documents {
            input,
            line: Vec::new(),
            at: 0,
            line_no: 0,
            ended: true,
            started: false,
            eof: false,
            error: None,
        }
    }

    /// Moves to the next document; `None` at the end of the input. Returns the line number its
    /// first line has.
    fn next_document(&mut self) -> Option<usize> {
        // Skip what the previous document's reader did not consume.
        while !self.ended {
            let mut sink = [0u8; 4096];
            match self.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if self.at >= self.line.len() && !self.next_line() {
            return None;
        }
        self.ended = false;
        self.started = false;
        Some(self.line_no)
    }

    /// Reads the next line into `line`; false at the end of the input.
    fn next_line(&mut self) -> bool {
        self.line.clear();
        self.at = 0;
        if self.eof {
            return false;
        }
        match self.input.read_until(b'\n', &mut self.line) {
            Ok(0) => {
                self.eof = true;
                false
            }
            Ok(_) => {
                self.line_no += 1;
                true
            }
            Err(e) => {
                self.error = Some(e);
                self.eof = true;
                false
            }
        }
    }

    fn is_marker(line: &[u8], marker: &[u8; 3]) -> bool {
        line.starts_with(marker)
            && line
                .get(3)
                .is_none_or(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    }
}

impl<R: BufRead> Read for Documents<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.ended {
            return Ok(0);
        }
        if self.at >= self.line.len() {
            if !self.next_line() {
                self.ended = true;
                return Ok(0);
            }
            if self.started && Self::is_marker(&self.line, b"---") {
                // The next document's first line: kept for it.
                self.ended = true;
                return Ok(0);
            }
            if Self::is_marker(&self.line, b"...") {
                self.line.clear();
                self.ended = true;
                return Ok(0);
            }
        }
        self.started = true;
        let n = buf.len().min(self.line.len() - self.at);
        buf[..n].copy_from_slice(&self.line[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Where a document's objects go.
struct Sink<'a, 'b> {
    each: &'a mut Each<'b>,
    stopped: bool,
}

impl Sink<'_, '_> {
    /// One item: an object, or a list of them already in memory (a list inside a list).
    fn item<E: serde::de::Error>(&mut self, v: Value, list_kind: Option<&str>) -> Result<(), E> {
        let Value::Object(mut map) = v else {
            return Ok(()); // a scalar or null document or item: nothing to serve
        };
        if !map.contains_key("kind")
            && let Some(k) = list_kind.filter(|k| *k != "List")
        {
            // `kubectl get -o yaml` lists keep each item's kind; typed lists (ServiceList)
            // may not: fill it in.
            map.insert(
                "kind".into(),
                Value::String(k.trim_end_matches("List").into()),
            );
        }
        let kind = map
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if kind.ends_with("List") {
            if let Some(Value::Array(items)) = map.remove("items") {
                for item in items {
                    self.item::<E>(item, Some(&kind))?;
                }
            }
            return Ok(());
        }
        let Some(result) = convert(&kind, Value::Object(map)) else {
            return Ok(()); // Endpoints, ConfigMaps, ...: not used for DNS
        };
        if (self.each)(result) {
            Ok(())
        } else {
            self.stopped = true;
            Err(E::custom(STOPPED))
        }
    }
}

/// One object as its DNS form, through the same trimmed types as the API's objects; `None` for a
/// kind DNS does not use.
fn convert(kind: &str, v: Value) -> Option<Result<Object, ObjectError>> {
    fn via<T: serde::de::DeserializeOwned>(
        kind: &'static str,
        v: Value,
        f: fn(T) -> Converted,
    ) -> Result<Object, ObjectError> {
        let id = |field: &str| {
            v.pointer(&format!("/metadata/{field}"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let (namespace, name) = (id("namespace").unwrap_or_default(), id("name"));
        match serde_json::from_value::<T>(v) {
            Ok(t) => f(t).object,
            Err(e) => Err(ObjectError {
                kind,
                namespace,
                name: name.unwrap_or_else(|| "<unnamed>".into()),
                message: e.to_string(),
            }),
        }
    }
    Some(match kind {
        "Service" => via::<TrimService>("Service", v, convert_service),
        "EndpointSlice" => via::<TrimSlice>("EndpointSlice", v, convert_slice),
        "Pod" => via::<TrimPod>("Pod", v, convert_pod),
        "Namespace" => via::<PartialObjectMeta<Namespace>>("Namespace", v, convert_namespace),
        _ => return None,
    })
}

/// A whole document: one object, a list whose `items` stream one by one, or a sequence of
/// either.
struct DocSeed<'s, 'a, 'b> {
    sink: &'s mut Sink<'a, 'b>,
}

impl<'de> DeserializeSeed<'de> for DocSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DocSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Kubernetes object or a list of them")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(v) = seq.next_element::<Value>()? {
            self.sink.item(v, None)?;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut fields = serde_json::Map::new();
        // Items without a kind, read before the list's own kind (typed lists).
        let mut unkinded = Vec::new();
        let mut is_list = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "items" {
                is_list = true;
                let kind = fields
                    .get("kind")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                map.next_value_seed(ItemsSeed {
                    sink: &mut *self.sink,
                    kind: kind.as_deref(),
                    unkinded: &mut unkinded,
                })?;
            } else {
                let v: Value = map.next_value()?;
                fields.insert(key, v);
            }
        }
        if !is_list {
            return self.sink.item(Value::Object(fields), None);
        }
        let kind = fields.get("kind").and_then(Value::as_str);
        for item in unkinded {
            self.sink.item(item, kind)?;
        }
        Ok(())
    }
}

/// A list's `items`, one at a time.
struct ItemsSeed<'s, 'a, 'b, 'k> {
    sink: &'s mut Sink<'a, 'b>,
    /// The list's kind, if it came before its items.
    kind: Option<&'k str>,
    unkinded: &'s mut Vec<Value>,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_, '_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_, '_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of Kubernetes objects")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(v) = seq.next_element::<Value>()? {
            if self.kind.is_none() && v.get("kind").is_none() {
                self.unkinded.push(v);
            } else {
                self.sink.item(v, self.kind)?;
            }
        }
        Ok(())
    }
}

/// How many objects a read handed on, and how many it skipped.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadCounts {
    pub objects: usize,
    pub skipped: usize,
}

/// Sends every object of `reader` to the zone builder as one list of every kind. The lists end
/// only if the whole input parsed; otherwise they stay open (what they applied is held back, the
/// served snapshot does not change) until the next complete read begins them again.
pub fn send_objects(
    reader: impl Read,
    origin: &Path,
    tx: &mpsc::Sender<ClusterEvent>,
) -> Result<ReadCounts, SourceError> {
    let closed = || SourceError::Parse {
        path: origin.to_path_buf(),
        message: "the zone builder is gone".into(),
    };
    for kind in Kind::ALL {
        tx.blocking_send(ClusterEvent::ListBegin { kind })
            .map_err(|_| closed())?;
    }
    let mut counts = ReadCounts::default();
    let complete = read_objects(reader, origin, &mut |item| match item {
        Ok(object) => {
            counts.objects += 1;
            tx.blocking_send(ClusterEvent::Listed { object }).is_ok()
        }
        Err(e) => {
            counts.skipped += 1;
            tracing::warn!(object = %e, "skipping object");
            true
        }
    })?;
    if !complete {
        return Err(closed());
    }
    for kind in Kind::ALL {
        tx.blocking_send(ClusterEvent::ListEnd { kind })
            .map_err(|_| closed())?;
    }
    Ok(counts)
}

/// Reads a file to its end without applying anything: whether it parses.
fn check_file(file: &File, path: &Path) -> Result<(), SourceError> {
    read_objects(file, path, &mut |_| true).map(drop)
}

/// Loads `path` into the builder; with `verify`, checks first that the whole file parses.
fn load(
    path: &Path,
    tx: &mpsc::Sender<ClusterEvent>,
    verify: bool,
) -> Result<ReadCounts, SourceError> {
    let io = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    if verify {
        check_file(&file, path)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
    }
    send_objects(&file, path, tx)
}

/// Emit the file's objects, then watch it (through [`FileWatch`], the one file watcher: size,
/// modification time, inode, through symlinks) every `poll` and emit them again whenever it
/// changes. A version that cannot be read, and a file that disappears, are counted in `metrics`
/// (`coredns_reload_failed_total`) and leave the last snapshot serving.
pub async fn run(
    path: Option<PathBuf>,
    tx: mpsc::Sender<ClusterEvent>,
    mut shutdown: watch::Receiver<bool>,
    poll: Duration,
    metrics: Arc<Metrics>,
) {
    let Some(path) = path else {
        // The embedded sample: read once, never changes.
        let read = tokio::task::spawn_blocking(move || {
            send_objects(
                EMBEDDED_SAMPLE.as_bytes(),
                Path::new("<embedded sample>"),
                &tx,
            )
        })
        .await;
        if let Ok(Err(e)) = read {
            tracing::error!(error = %e, "embedded sample");
        }
        return;
    };
    let mut file = FileWatch::new(&path);
    // Until a version has loaded, there is nothing to protect: read each once, no check first.
    let mut loaded_once = false;
    loop {
        match file.check() {
            None => {}
            Some(Change::Removed) => {
                // A file missing from the start is reported here too (the first look).
                metrics.reload_failed();
                tracing::error!(file = %path.display(), "cluster objects file is missing; still serving the previous snapshot");
            }
            Some(Change::Updated) => {
                let t0 = Instant::now();
                let (p, txc) = (path.clone(), tx.clone());
                let verify = loaded_once;
                let read = tokio::task::spawn_blocking(move || load(&p, &txc, verify)).await;
                match read {
                    Ok(Ok(counts)) => {
                        loaded_once = true;
                        tracing::info!(
                            file = %path.display(),
                            objects = counts.objects,
                            skipped = counts.skipped,
                            ms = t0.elapsed().as_secs_f64() * 1e3,
                            "loaded cluster objects"
                        );
                    }
                    Ok(Err(e)) => {
                        if tx.is_closed() {
                            return;
                        }
                        metrics.reload_failed();
                        // A version that did not parse is not read again until it changes; one
                        // that could not be opened (replaced between the look and the open,
                        // unreadable) is retried at the next poll.
                        if matches!(e, SourceError::Io { .. }) {
                            file.retry();
                        }
                        tracing::error!(error = %e, "cluster objects file is invalid; still serving the previous snapshot");
                    }
                    Err(e) => tracing::error!(error = %e, "reading the cluster objects file"),
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.changed() => if *shutdown.borrow() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Result<Vec<String>, SourceError> {
        parse_objects(text, Path::new("t")).map(|l| {
            l.objects
                .iter()
                .map(|o| {
                    let k = o.key();
                    format!("{:?} {}/{}", k.kind, k.namespace, k.name)
                })
                .collect()
        })
    }

    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {clusterIP: 10.0.0.1}\n";

    #[test]
    fn yaml_documents_and_lists() {
        let text = format!(
            "# leading comment\n{SVC}---\n---\napiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: x\n- kind: Pod\n  metadata: {{name: p, namespace: x}}\n  status: {{podIP: 10.1.0.1}}\nkind: List\nmetadata:\n  resourceVersion: \"\"\n...\n--- # a comment\nkind: ServiceList\napiVersion: v1\nitems:\n- metadata: {{name: b, namespace: yy}}\n  spec:\n    clusterIP: 10.0.0.2\n    ports:\n    - {{port: 53, protocol: UDP, name: dns}}\n"
        );
        assert_eq!(
            names(&text).unwrap(),
            ["Service x/a", "Namespace /x", "Pod x/p", "Service yy/b"]
        );
    }

    #[test]
    fn typed_list_with_its_kind_after_the_items() {
        let text = "items:\n- metadata: {name: b, namespace: yy}\n  spec: {clusterIP: 10.0.0.2}\nkind: ServiceList\n";
        assert_eq!(names(text).unwrap(), ["Service yy/b"]);
    }

    #[test]
    fn json_list_and_concatenated_documents() {
        let text = r#"{"apiVersion":"v1","items":[{"kind":"Service","metadata":{"name":"a","namespace":"x"},"spec":{"clusterIP":"10.0.0.1"}},
            {"kind":"ConfigMap","metadata":{"name":"c"},"data":{"items":"x"}}],"kind":"List"}
            {"kind":"Namespace","metadata":{"name":"x"}}
            [{"kind":"Pod","metadata":{"name":"p","namespace":"x"},"status":{"podIP":"10.1.0.1"}}]"#;
        assert_eq!(
            names(text).unwrap(),
            ["Service x/a", "Namespace /x", "Pod x/p"]
        );
    }

    #[test]
    fn bad_objects_are_skipped_bad_syntax_is_an_error() {
        let text = format!(
            "{SVC}---\nkind: Service\nmetadata: {{name: bad, namespace: x}}\nspec: {{ports: [{{port: eighty}}]}}\n"
        );
        let l = parse_objects(&text, Path::new("t")).unwrap();
        assert_eq!(l.objects.len(), 1);
        assert_eq!(l.skipped.len(), 1);
        assert_eq!(l.skipped[0].name, "bad");

        let e = names(&format!("{SVC}---\nkind: Service\nmetadata: [unclosed\n")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("from line 5") && msg.contains("line 3 column 11"),
            "{msg}"
        );
        let e = names(r#"{"kind":"List","items":[{"kind":"Namespace","metadata":{"name":"x"}},"#)
            .unwrap_err();
        assert!(matches!(e, SourceError::Parse { .. }), "{e}");
    }

    #[test]
    fn empty_and_comment_only_inputs() {
        assert!(names("").unwrap().is_empty());
        assert!(
            names("# nothing\n---\n# still nothing\n")
                .unwrap()
                .is_empty()
        );
        assert!(names("\u{feff}  \n").unwrap().is_empty());
    }

    #[test]
    fn stopping_early() {
        let text = format!("{SVC}---\n{SVC}");
        let mut n = 0;
        let done = read_objects(text.as_bytes(), Path::new("t"), &mut |_| {
            n += 1;
            false
        })
        .unwrap();
        assert!(!done);
        assert_eq!(n, 1);
    }
}
