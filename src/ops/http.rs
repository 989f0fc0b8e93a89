//! The three operator endpoints, each a small hyper HTTP/1 server, as CoreDNS has them:
//!
//! | config | default | path | answer |
//! |---|---|---|---|
//! | `metrics.listen` | `:9153` | `/metrics` | the exposition (Prometheus text 0.0.4), gzip when asked |
//! | `health.listen` | `:8080` | `/health` | always `200 OK` while the process runs (lameduck included) |
//! | `ready.listen` | `:8181` | `/ready` | `503` + comma-joined names not ready (`kubernetes`), then `200 OK`; `503` from the start of shutdown |
//!
//! Each `listen` is `host:port`, `:port`, or `unix:/path`: a unix socket reaches only this
//! process, which is what node-local mode's exec probes need (two pods of a rolling update share
//! the node's network, so a TCP probe could be answered by the other pod's process; see
//! [`probe`]). In node-local mode a TCP port that the other pod still holds is not an error:
//! the endpoint binds as soon as the port is free (the old pod exits), checked once a second.
//!
//! Other paths get `404`. Each listener is closed at [`Phase::Stopped`]; open connections are
//! shut down gracefully. While the health endpoint runs, a task requests it once a second and
//! records the time in `coredns_health_request_duration_seconds` (failures in
//! `coredns_health_request_failures_total`), as CoreDNS's `health` plugin does.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;

use crate::config::{Config, OpsListen, parse_ops_listen};
use crate::ops::lifecycle::{Phase, Readiness, ShutdownSignal};
use crate::ops::metrics::{CONTENT_TYPE, Metrics};

/// Which endpoint a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Metrics,
    Health,
    Ready,
}

/// The bound addresses (a port 0 in the config is the real port here) and the server tasks.
#[derive(Debug)]
pub struct OpsHttp {
    pub metrics: Option<SocketAddr>,
    pub health: Option<SocketAddr>,
    pub ready: Option<SocketAddr>,
    /// Endpoints on unix sockets.
    pub unix: Vec<(Endpoint, std::path::PathBuf)>,
    tasks: Vec<JoinHandle<()>>,
}

impl OpsHttp {
    /// Wait until every endpoint has closed (after [`Phase::Stopped`]).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// An error binding one endpoint, naming the config key and address.
#[derive(Debug, thiserror::Error)]
#[error("{key}: cannot listen on {addr}: {source}")]
pub struct BindError {
    pub key: &'static str,
    pub addr: String,
    #[source]
    pub source: std::io::Error,
}

struct State {
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

/// Bind every configured endpoint (`None` listen = off) and serve until `signal` reaches
/// [`Phase::Stopped`]. Binding happens before this returns, so the addresses are live.
pub async fn start(
    cfg: &Config,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    signal: ShutdownSignal,
) -> Result<OpsHttp, BindError> {
    let state = Arc::new(State {
        metrics: metrics.clone(),
        readiness,
    });
    let mut out = OpsHttp {
        metrics: None,
        health: None,
        ready: None,
        unix: Vec::new(),
        tasks: Vec::new(),
    };
    for (key, listen, ep) in [
        ("metrics.listen", &cfg.metrics.listen, Endpoint::Metrics),
        ("health.listen", &cfg.health.listen, Endpoint::Health),
        ("ready.listen", &cfg.ready.listen, Endpoint::Ready),
    ] {
        let Some(listen) = listen else { continue };
        let bind_err = |source| BindError {
            key,
            addr: listen.clone(),
            source,
        };
        let addr = match parse_ops_listen(listen)
            .map_err(|m| bind_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, m)))?
        {
            OpsListen::Tcp(addr) => addr,
            OpsListen::Unix(path) => {
                let listener = bind_unix(&path).map_err(bind_err)?;
                tracing::info!(endpoint = ?ep, path = %path.display(), "listening");
                out.unix.push((ep, path.clone()));
                let target = Target::Unix(path.clone());
                out.tasks.push(tokio::spawn(serve(
                    Listener::Unix(listener, path),
                    ep,
                    state.clone(),
                    signal.clone(),
                )));
                if ep == Endpoint::Health {
                    out.tasks.push(tokio::spawn(health_self_check(
                        target,
                        metrics.clone(),
                        signal.clone(),
                    )));
                }
                continue;
            }
        };
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && cfg.nodelocal.enabled => {
                tracing::info!(endpoint = ?ep, %addr, "port held by another node-local instance: binding once it is free");
                out.tasks.push(tokio::spawn(bind_when_free(
                    addr,
                    ep,
                    state.clone(),
                    signal.clone(),
                )));
                continue;
            }
            Err(e) => return Err(bind_err(e)),
        };
        let local = listener.local_addr().map_err(bind_err)?;
        tracing::info!(endpoint = ?ep, addr = %local, "listening");
        match ep {
            Endpoint::Metrics => out.metrics = Some(local),
            Endpoint::Health => out.health = Some(local),
            Endpoint::Ready => out.ready = Some(local),
        }
        out.tasks.push(tokio::spawn(serve(
            Listener::Tcp(listener),
            ep,
            state.clone(),
            signal.clone(),
        )));
        if ep == Endpoint::Health {
            out.tasks.push(tokio::spawn(health_self_check(
                Target::Tcp(local),
                metrics.clone(),
                signal.clone(),
            )));
        }
    }
    Ok(out)
}

impl Endpoint {
    /// The name in the `clusterdns: listening <name>=<addr>` start-up lines.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Metrics => "metrics",
            Endpoint::Health => "health",
            Endpoint::Ready => "ready",
        }
    }
}

/// A unix socket at `path`; a socket file left by an earlier run of this container goes first.
fn bind_unix(path: &std::path::Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if let Ok(m) = std::fs::symlink_metadata(path)
        && m.file_type().is_socket()
    {
        std::fs::remove_file(path)?;
    }
    UnixListener::bind(path)
}

/// Node-local mode: bind `addr` once the other instance has let go of it, then serve.
async fn bind_when_free(
    addr: SocketAddr,
    ep: Endpoint,
    state: Arc<State>,
    mut signal: ShutdownSignal,
) {
    let listener = loop {
        tokio::select! {
            _ = signal.reached(Phase::Draining) => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => {
                tracing::error!(endpoint = ?ep, %addr, error = %e, "cannot listen");
                return;
            }
        }
    };
    let Ok(local) = listener.local_addr() else {
        return;
    };
    tracing::info!(endpoint = ?ep, addr = %local, "listening");
    eprintln!("clusterdns: listening {}={local}", ep.name());
    let metrics = state.metrics.clone();
    let served = serve(Listener::Tcp(listener), ep, state, signal.clone());
    if ep == Endpoint::Health {
        tokio::join!(
            served,
            health_self_check(Target::Tcp(local), metrics, signal)
        );
    } else {
        served.await;
    }
}

/// A bound endpoint socket.
enum Listener {
    Tcp(TcpListener),
    /// The path is removed when the endpoint closes.
    Unix(UnixListener, std::path::PathBuf),
}

/// Serve one endpoint on an already bound listener until [`Phase::Stopped`].
pub async fn serve_listener(
    listener: TcpListener,
    ep: Endpoint,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    signal: ShutdownSignal,
) {
    serve(
        Listener::Tcp(listener),
        ep,
        Arc::new(State { metrics, readiness }),
        signal,
    )
    .await
}

async fn serve(listener: Listener, ep: Endpoint, state: Arc<State>, signal: ShutdownSignal) {
    let mut stop = signal.clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.stopped() => break,
            r = async {
                match &listener {
                    Listener::Tcp(l) => l.accept().await.map(|(s, _)| {
                        tokio::spawn(serve_conn(s, ep, state.clone(), signal.clone()));
                    }),
                    Listener::Unix(l, _) => l.accept().await.map(|(s, _)| {
                        tokio::spawn(serve_conn(s, ep, state.clone(), signal.clone()));
                    }),
                }
            } => r,
        };
        if let Err(e) = accepted {
            // EMFILE and friends: back off instead of spinning.
            tracing::warn!(endpoint = ?ep, error = %e, "accept");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
    tracing::debug!(endpoint = ?ep, "closed");
}

async fn serve_conn<S>(stream: S, ep: Endpoint, state: Arc<State>, mut sig: ShutdownSignal)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(ep, &state, &req)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = sig.stopped() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn handle(ep: Endpoint, state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    match (ep, path) {
        (Endpoint::Health, "/health") => text(StatusCode::OK, "OK"),
        (Endpoint::Ready, "/ready") => match state.readiness.status() {
            Ok(()) => text(StatusCode::OK, "OK"),
            Err(body) => text(StatusCode::SERVICE_UNAVAILABLE, body),
        },
        (Endpoint::Metrics, "/metrics") => {
            let gzip = accepts_gzip(req.headers().get_all(header::ACCEPT_ENCODING).iter());
            let body = if gzip {
                Bytes::from(state.metrics.render_gzip())
            } else {
                Bytes::from(state.metrics.render())
            };
            let mut r = Response::new(Full::new(body));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            if gzip {
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            r
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

/// `Accept-Encoding` lists `gzip` (or `*`) with a non-zero q-value.
fn accepts_gzip<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> bool {
    values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            if !(coding.eq_ignore_ascii_case("gzip") || coding == "*") {
                return false;
            }
            parts.all(|p| {
                let p = p.trim();
                match p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                    Some(q) => q.trim().parse::<f32>().map(|q| q > 0.0).unwrap_or(true),
                    None => true,
                }
            })
        })
}

/// Request our own `/health` once a second, as CoreDNS's health plugin does.
async fn health_self_check(target: Target, metrics: Arc<Metrics>, mut signal: ShutdownSignal) {
    let target = target.connectable();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = signal.reached(Phase::Stopped) => return,
            _ = tick.tick() => {}
        }
        let start = Instant::now();
        let ok = tokio::time::timeout(Duration::from_secs(3), get_ok(&target, "/health"))
            .await
            .unwrap_or(false);
        let took = start.elapsed();
        metrics.health_check(took, ok);
        if !ok {
            tracing::warn!(%target, "local health request failed");
        } else if took > Duration::from_secs(1) {
            tracing::warn!(%target, ?took, "local health request took more than 1s");
        }
    }
}

/// Where an endpoint is asked.
#[derive(Debug, Clone)]
enum Target {
    Tcp(SocketAddr),
    Unix(std::path::PathBuf),
}

impl Target {
    /// A wildcard listen address is asked on loopback.
    fn connectable(self) -> Target {
        match self {
            Target::Tcp(addr) => Target::Tcp(match addr.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => {
                    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
                }
                IpAddr::V6(ip) if ip.is_unspecified() => {
                    SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
                }
                _ => addr,
            }),
            t => t,
        }
    }

    fn request(&self, path: &str) -> String {
        let host = match self {
            Target::Tcp(a) => a.to_string(),
            Target::Unix(_) => "localhost".into(),
        };
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "{a}"),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

async fn get_ok(target: &Target, path: &str) -> bool {
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, req: &str) -> Option<Vec<u8>> {
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::with_capacity(256);
        s.read_to_end(&mut buf).await.ok()?;
        Some(buf)
    }
    let req = target.request(path);
    let reply = match target {
        Target::Tcp(a) => match tokio::net::TcpStream::connect(a).await {
            Ok(s) => exchange(s, &req).await,
            Err(_) => None,
        },
        Target::Unix(p) => match tokio::net::UnixStream::connect(p).await {
            Ok(s) => exchange(s, &req).await,
            Err(_) => None,
        },
    };
    reply.is_some_and(|buf| buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200"))
}

/// `clusterdns probe`: GET `path` from the endpoint at `listen` (`unix:/path`, `host:port` or
/// `:port`), as an exec probe does. `Ok(body)` on 200; `Err(what went wrong)` otherwise.
pub fn probe(listen: &str, path: &str, timeout: Duration) -> Result<String, String> {
    use std::io::{Read, Write};
    fn exchange<S: Read + Write>(mut s: S, req: &str) -> std::io::Result<Vec<u8>> {
        s.write_all(req.as_bytes())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        Ok(buf)
    }
    let target = match parse_ops_listen(listen)? {
        OpsListen::Tcp(a) => Target::Tcp(a),
        OpsListen::Unix(p) => Target::Unix(p),
    }
    .connectable();
    let req = target.request(path);
    let reply = match &target {
        Target::Tcp(a) => std::net::TcpStream::connect_timeout(a, timeout).and_then(|s| {
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            exchange(s, &req)
        }),
        Target::Unix(p) => std::os::unix::net::UnixStream::connect(p).and_then(|s| {
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            exchange(s, &req)
        }),
    }
    .map_err(|e| format!("{target}: {e}"))?;
    let text = String::from_utf8_lossy(&reply);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or("");
    if status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200") {
        Ok(body.to_string())
    } else {
        Err(format!("{target}{path}: {status} {}", body.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(v: &'static str) -> HeaderValue {
        HeaderValue::from_static(v)
    }

    #[test]
    fn accept_encoding() {
        assert!(accepts_gzip([hv("gzip")].iter()));
        assert!(accepts_gzip([hv("identity, GZIP;q=0.5")].iter()));
        assert!(accepts_gzip([hv("br"), hv("gzip")].iter()));
        assert!(accepts_gzip([hv("*")].iter()));
        assert!(!accepts_gzip([hv("gzip;q=0")].iter()));
        assert!(!accepts_gzip([hv("identity")].iter()));
        assert!(!accepts_gzip(std::iter::empty()));
        assert!(!accepts_gzip([hv("x-gzip2")].iter()));
    }
}
