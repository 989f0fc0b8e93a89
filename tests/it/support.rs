//! What the integration tests share, once: starting the real `clusterdns` binary on ephemeral
//! ports (reading the addresses it prints) and asking it with real clients (`dig`, `kdig`,
//! `nslookup`), and in the submodules DNS messages built and decoded with hickory-proto
//! (`dns`), HTTP for the operator endpoints (`http`), upstreams on loopback (`upstream`: small
//! fakes and a real Knot), a real Prometheus (`prometheus`), the test Kubernetes API server as a
//! source (`kubeapi`), real zone-transfer secondaries (`secondary`: Knot and BIND) and the
//! outside tools (`tools`). Every item is re-exported here: test
//! files `use crate::support::*`.

mod dns;
mod http;
mod kubeapi;
mod prometheus;
pub(crate) mod secondary;
mod tools;
pub(crate) mod upstream;

pub(crate) use dns::*;
pub(crate) use http::*;
pub(crate) use kubeapi::*;
pub(crate) use prometheus::*;
pub(crate) use secondary::{Flavor, Follow, Secondary, soa_serial};
pub(crate) use tools::*;
pub(crate) use upstream::start_knot;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// A running `clusterdns serve`; killed on drop.
pub(crate) struct Server {
    pub child: Child,
    pub dns: SocketAddr,
    /// The server's stderr, line by line (from the first line after the listen lines).
    pub lines: mpsc::Receiver<String>,
    /// Every line of the server's stderr so far, the start-up lines too (`lines` hands out the
    /// same lines once each, to a test waiting for one).
    pub log: Arc<Mutex<Vec<String>>>,
    /// The server's own folder: its config, and any files the test gives it.
    pub dir: tempfile::TempDir,
    /// Every listen line the server printed (`metrics=...`, `health=...`, `ready=...`).
    pub listens: Vec<(String, SocketAddr)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `clusterdns` binary cargo built for these tests.
pub(crate) fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_clusterdns"))
}

/// The repository's folder (for config/, manifests/ and fixtures).
pub(crate) fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Polls `cond` every 10 ms until it holds or `limit` has passed; whether it held. For
/// blocking tests; a tokio test whose condition needs the runtime's tasks uses
/// [`wait_for_async`].
pub(crate) fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while !cond() {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// [`wait_for`] inside a tokio runtime: sleeps without blocking the runtime's other tasks.
pub(crate) async fn wait_for_async(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while !cond() {
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

impl Server {
    /// Start with a config text (YAML) written into a temp dir; extra args appended. The
    /// config should listen on 127.0.0.1:0 — the real port is read from the server's output.
    pub(crate) fn start(config_yaml: &str, args: &[&str]) -> Server {
        Self::start_in(tempfile::tempdir().unwrap(), config_yaml, args)
    }

    /// [`Server::start`] in a folder the caller has already put files in.
    pub(crate) fn start_in(dir: tempfile::TempDir, config_yaml: &str, args: &[&str]) -> Server {
        let cmd = Self::command(&dir, config_yaml, args);
        Self::spawn(cmd, dir)
    }

    /// The command [`Server::start_in`] runs: `clusterdns serve` with `config_yaml` written as
    /// `clusterdns.yaml` into `dir`, `args` appended. For a test that sets more on it (its
    /// `CLUSTERDNS_LOG`, a network namespace) before [`Server::spawn`] or
    /// [`Server::spawn_with`].
    pub(crate) fn command(dir: &tempfile::TempDir, config_yaml: &str, args: &[&str]) -> Command {
        let cfg = dir.path().join("clusterdns.yaml");
        std::fs::write(&cfg, config_yaml).unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("serve").arg("--config").arg(&cfg).args(args);
        cmd
    }

    /// Serving `objects_yaml` (Kubernetes objects, kept as `objects.yaml` in the server's
    /// folder, where the test may change it) with [`base_config`] plus `extra`.
    pub(crate) fn with_objects(objects_yaml: &str, extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let objects = write_objects(dir.path(), objects_yaml);
        let cfg = base_config(&objects, extra);
        let server = Self::start_in(dir, &cfg, &[]);
        server.wait_ready();
        server
    }

    /// Wait (at most 20 s) until `/ready` says 200: the sockets open before the first state
    /// is loaded, and on a busy machine a query sent at once may find no zone yet.
    pub(crate) fn wait_ready(&self) {
        let Some(ready) = self.listen("ready") else {
            return;
        };
        let ok = wait_for(Duration::from_secs(20), || {
            matches!(status_body(ready, "/ready"), Some((200, _)))
        });
        assert!(ok, "server not ready within 20 s");
    }

    /// Serving the sample cluster of `config/cluster.yaml`, with [`base_config`] plus `extra`.
    pub(crate) fn sample(extra: &str) -> Server {
        let objects = std::fs::read_to_string(repo().join("config/cluster.yaml")).unwrap();
        Self::with_objects(&objects, extra)
    }

    /// Runs `cmd` (a `clusterdns serve`, see [`Server::command`]) with its stdout discarded;
    /// see [`Server::spawn_with`].
    pub(crate) fn spawn(cmd: Command, dir: tempfile::TempDir) -> Server {
        Self::spawn_with(cmd, dir, Stdio::null())
    }

    /// Runs `cmd` and reads its stderr until it has printed its listen lines (the one way the
    /// tests learn the server's addresses); `stdout` says where its stdout goes
    /// (`Stdio::piped()`: the test reads it from `server.child.stdout`, e.g. the query log).
    /// The log level is `cmd`'s own `CLUSTERDNS_LOG` if it sets one, else the test's
    /// environment's, else `info,hickory_server=warn`.
    pub(crate) fn spawn_with(mut cmd: Command, dir: tempfile::TempDir, stdout: Stdio) -> Server {
        cmd.stdout(stdout).stderr(Stdio::piped());
        if !cmd.get_envs().any(|(k, _)| k == "CLUSTERDNS_LOG") {
            cmd.env(
                "CLUSTERDNS_LOG",
                std::env::var("CLUSTERDNS_LOG")
                    .unwrap_or_else(|_| "info,hickory_server=warn".into()),
            );
        }
        let mut child = cmd.spawn().expect("start clusterdns");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("CLUSTERDNS_TEST_ECHO").is_some() {
                    eprintln!("[server] {line}");
                }
                keep.lock().unwrap().push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut listens = Vec::new();
        let mut dns = None;
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("clusterdns: listening ")
                        && let Some((k, v)) = rest.split_once('=')
                        && let Ok(a) = v.trim().parse::<SocketAddr>()
                    {
                        listens.push((k.to_string(), a));
                        if k == "dns" && dns.is_none() {
                            dns = Some(a);
                        }
                    }
                    if line.starts_with("clusterdns: ")
                        && !line.starts_with("clusterdns: listening")
                    {
                        panic!("server failed: {line}");
                    }
                }
                // Every listen line is printed at once: a pause after the DNS one ends them.
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if dns.is_some() {
                        break;
                    }
                    if let Ok(Some(st)) = child.try_wait() {
                        panic!("server exited early: {st}");
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let dns = dns.expect("server printed its DNS address");
        Server {
            child,
            dns,
            lines: rx,
            log,
            dir,
            listens,
        }
    }

    pub(crate) fn listen(&self, what: &str) -> Option<SocketAddr> {
        self.listens
            .iter()
            .find(|(k, _)| k == what)
            .map(|(_, a)| *a)
    }

    /// The server's `/metrics` exposition, scraped now.
    pub(crate) fn metrics(&self) -> String {
        get(self.listen("metrics").unwrap(), "/metrics", &[])
            .unwrap()
            .text()
    }

    /// [`metric_sum`] of a fresh scrape of the server's `/metrics`.
    pub(crate) fn metric_sum(&self, prefix: &str, labels: &[&str]) -> f64 {
        metric_sum(&self.metrics(), prefix, labels)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `dig` against this server; returns stdout.
    pub(crate) fn dig(&self, args: &[&str]) -> String {
        dig_at(self.dns, args)
    }

    /// The `status:` of a `dig` answer (`NOERROR`, `NXDOMAIN`, ...; `none` without an answer).
    pub(crate) fn status(&self, args: &[&str]) -> String {
        dig_status(&self.dig(args)).unwrap_or("none").to_string()
    }

    /// `dig +short name` against this server: the answer's lines, sorted and comma-joined.
    pub(crate) fn short(&self, name: &str) -> String {
        let mut v: Vec<String> = self
            .dig(&["+short", name])
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v.join(",")
    }

    /// Waits until [`Server::short`] of `name` is `want`, at most `within`; how long it took.
    pub(crate) fn converge(&self, name: &str, want: &str, within: Duration) -> Duration {
        let t0 = Instant::now();
        let done = wait_for(within, || self.short(name) == want);
        assert!(done, "{name}: still {:?}, want {want:?}", self.short(name));
        t0.elapsed()
    }

    /// Ask over UDP with a raw message; the reply's bytes.
    pub(crate) fn ask_raw(&self, msg: &[u8]) -> Vec<u8> {
        udp_exchange(self.dns, msg).expect("reply")
    }

    /// Wait until `cond` holds for the output of `dig args` (bounded); the last output.
    pub(crate) fn wait_for(
        &self,
        args: &[&str],
        cond: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> String {
        let mut out = String::new();
        wait_for(timeout, || {
            out = self.dig(args);
            cond(&out)
        });
        out
    }

    /// Reads the server's log until a line matches `pred` or `limit` passes; every line read.
    pub(crate) fn log_until(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let end = Instant::now() + limit;
        let mut seen = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            let hit = pred(&line);
            seen.push(line);
            if hit {
                break;
            }
        }
        seen
    }
}

/// The Corefile fixtures' folder (`tests/fixtures/corefiles`).
pub(crate) fn corefile_fixtures() -> PathBuf {
    repo().join("tests/fixtures/corefiles")
}

/// The text of a Corefile fixture.
pub(crate) fn fixture_text(rel: &str) -> String {
    std::fs::read_to_string(corefile_fixtures().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A Corefile fixture converted with its imports resolved against its own folder, as the CLI
/// does.
#[allow(clippy::result_large_err)]
pub(crate) fn convert_fixture(
    rel: &str,
) -> Result<clusterdns::corefile::Conversion, clusterdns::corefile::CorefileError> {
    let path = corefile_fixtures().join(rel);
    clusterdns::corefile::convert(&fixture_text(rel), path.parent().unwrap())
}

/// `dig @addr -p port +time=2 +tries=1 args...`; its stdout.
pub(crate) fn dig_at(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new(require("dig"))
        .arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One namespace `x` with one ClusterIP service `a` at 10.9.0.1: the cluster of the tests
/// about something else (forwarding, listening) that want a cluster name to ask.
pub(crate) const ONE_SERVICE: &str = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: x}}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a, namespace: x}\n  spec: {clusterIP: 10.9.0.1}\n";

/// Writes `objects_yaml` as `objects.yaml` into `dir`; its path, for [`base_config`].
pub(crate) fn write_objects(dir: &Path, objects_yaml: &str) -> PathBuf {
    let path = dir.join("objects.yaml");
    std::fs::write(&path, objects_yaml).unwrap();
    path
}

/// Asserts that `clusterdns check --config config` accepts the config file (run as outside a
/// pod: no `KUBERNETES_SERVICE_HOST`); a failure names `what` and shows check's output and the
/// config.
pub(crate) fn assert_check_accepts(config: &Path, what: &str) {
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(config)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run clusterdns check");
    assert!(
        out.status.success(),
        "clusterdns check of {what}: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(config).unwrap_or_default()
    );
}

/// The `status:` of `dig`'s output (`NOERROR`, `NXDOMAIN`, ...); None when it has none (no
/// answer came).
pub(crate) fn dig_status(out: &str) -> Option<&str> {
    out.split("status: ").nth(1)?.split(',').next()
}

/// A config for tests: DNS on an ephemeral port, HTTP endpoints on ephemeral ports, the
/// objects from a file, no forwarding unless the test adds upstreams.
pub(crate) fn base_config(objects: &Path, extra: &str) -> String {
    config_with_source(&format!("source:\n  file: {}\n", objects.display()), extra)
}

/// [`base_config`] with any `source:` section.
pub(crate) fn config_with_source(source: &str, extra: &str) -> String {
    // Never forward to this machine's resolv.conf (not on loopback): forwarding is off unless
    // the test names its own loopback upstreams.
    let forward = if extra.contains("forward:") {
        ""
    } else {
        "forward:\n  enabled: false\n"
    };
    // The tests' own client, 127.0.0.1, asks at machine speed: it is exempt from the per-client
    // limits unless the test sets `limits:` (the limits' tests send from 127.0.0.2 and .3).
    let limits = if extra.contains("limits:") {
        ""
    } else {
        "limits:\n  exempt: [\"127.0.0.1/32\"]\n"
    };
    format!(
        "listen: [\"127.0.0.1:0\"]\n{source}metrics:\n  listen: \"127.0.0.1:0\"\nhealth:\n  listen: \"127.0.0.1:0\"\n  lameduck: 1s\nready:\n  listen: \"127.0.0.1:0\"\n{forward}{limits}{extra}"
    )
}
