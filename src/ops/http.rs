//! The three operator endpoints, each a small hyper HTTP/1 server, as CoreDNS has them:
//!
//! | config | default | path | answer |
//! |---|---|---|---|
//! | `metrics.listen` | `:9153` | `/metrics` | the exposition (Prometheus text 0.0.4), gzip when asked |
//! | `health.listen` | `:8080` | `/health` | always `200 OK` while the process runs (lameduck included) |
//! | `ready.listen` | `:8181` | `/ready` | `503` + comma-joined names not ready (`kubernetes`), then `200 OK`; `503` from the start of shutdown |
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
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{Config, parse_http_listen};
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
    metrics: &'static Metrics,
    readiness: Readiness,
}

/// Bind every configured endpoint (`None` listen = off) and serve until `signal` reaches
/// [`Phase::Stopped`]. Binding happens before this returns, so the addresses are live.
pub async fn start(
    cfg: &Config,
    metrics: &'static Metrics,
    readiness: Readiness,
    signal: ShutdownSignal,
) -> Result<OpsHttp, BindError> {
    let state = Arc::new(State { metrics, readiness });
    let mut out = OpsHttp {
        metrics: None,
        health: None,
        ready: None,
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
        let addr = parse_http_listen(listen)
            .map_err(|m| bind_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, m)))?;
        let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        tracing::info!(endpoint = ?ep, addr = %local, "listening");
        match ep {
            Endpoint::Metrics => out.metrics = Some(local),
            Endpoint::Health => out.health = Some(local),
            Endpoint::Ready => out.ready = Some(local),
        }
        out.tasks.push(tokio::spawn(serve(
            listener,
            ep,
            state.clone(),
            signal.clone(),
        )));
        if ep == Endpoint::Health {
            out.tasks.push(tokio::spawn(health_self_check(
                local,
                metrics,
                signal.clone(),
            )));
        }
    }
    Ok(out)
}

/// Serve one endpoint on an already bound listener until [`Phase::Stopped`].
pub async fn serve_listener(
    listener: TcpListener,
    ep: Endpoint,
    metrics: &'static Metrics,
    readiness: Readiness,
    signal: ShutdownSignal,
) {
    serve(listener, ep, Arc::new(State { metrics, readiness }), signal).await
}

async fn serve(listener: TcpListener, ep: Endpoint, state: Arc<State>, mut signal: ShutdownSignal) {
    loop {
        let (stream, _) = tokio::select! {
            _ = signal.stopped() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(endpoint = ?ep, error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let mut sig = signal.clone();
        tokio::spawn(async move {
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
        });
    }
    tracing::debug!(endpoint = ?ep, "closed");
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
async fn health_self_check(
    addr: SocketAddr,
    metrics: &'static Metrics,
    mut signal: ShutdownSignal,
) {
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = signal.reached(Phase::Stopped) => return,
            _ = tick.tick() => {}
        }
        let start = Instant::now();
        let ok = tokio::time::timeout(Duration::from_secs(3), get_ok(target, "/health"))
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

async fn get_ok(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::with_capacity(256);
    if s.read_to_end(&mut buf).await.is_err() {
        return false;
    }
    buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200")
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
