//! DNS over TCP (RFC 7766), clusterdns's own: an accept loop per listener, and a task per
//! connection ([`conn::Connection`]) that reads length-prefixed messages, answers them through
//! the same [`Engine`](super::Engine) as UDP — several at once when a client pipelines, each
//! reply sent as soon as it is ready, possibly out of order (§6.2.1.1) — and sends the engine's
//! bytes unchanged.
//!
//! Limits live in two places: [`Gate`] decides whether a new connection is served at all (one
//! place for connection caps and per-client limits), and [`TcpSettings`] holds the per-connection
//! ones that [`conn::Connection`] applies (idle and write timeouts, queries in flight).

pub mod conn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::SharedEngine;
use crate::ops::lifecycle::DrainGuard;

/// Per-connection limits.
#[derive(Debug, Clone)]
pub struct TcpSettings {
    /// RFC 7766 §6.2.3: a connection with no query under way and nothing received for this
    /// long is closed (`server.tcp_idle_timeout`). Also the longest a reply may take to write.
    pub idle_timeout: Duration,
    /// Queries of one connection answered at the same time; past it, reading pauses until one
    /// is answered (a client cannot make a connection hold unbounded work).
    pub max_in_flight: usize,
}

impl TcpSettings {
    pub fn new(idle_timeout: Duration) -> Self {
        TcpSettings {
            idle_timeout,
            max_in_flight: 64,
        }
    }
}

/// Admission of new connections: the one place that decides whether a connection is served.
/// It counts the open ones; caps and per-client limits belong here.
#[derive(Debug, Default)]
pub struct Gate {
    open: AtomicUsize,
}

/// An admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct Admitted(Arc<Gate>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    /// Whether a connection from `peer` is served.
    pub fn admit(self: &Arc<Self>, _peer: SocketAddr) -> Option<Admitted> {
        self.open.fetch_add(1, Ordering::AcqRel);
        Some(Admitted(self.clone()))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// Resolves when `stop` is (or turns) true, or its sender is gone.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Accept and serve connections until `stop` turns true; then stop accepting and return.
/// Each connection runs on as its own task, answering what it has read, and holds a clone of
/// `drain` until it closes: the shutdown's drain (bounded by `health.drain_timeout`) waits for
/// them.
pub async fn serve(
    listener: TcpListener,
    engine: SharedEngine,
    settings: TcpSettings,
    mut stop: watch::Receiver<bool>,
    drain: DrainGuard,
) {
    let gate = Arc::new(Gate::default());
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let Some(admitted) = gate.admit(peer) else {
                        continue;
                    };
                    let c = conn::Connection {
                        stream,
                        peer,
                        engine: engine.clone(),
                        settings: settings.clone(),
                        stop: stop.clone(),
                        admitted,
                        drain: drain.clone(),
                    };
                    tokio::spawn(c.run());
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off a little, go on.
                    tracing::debug!(error = %e, "tcp accept");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = stopped(&mut stop) => break,
        }
    }
}
