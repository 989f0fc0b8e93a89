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
pub mod gate;

pub use gate::{Admitted, Decision, Gate, Refusal, TcpLimits, fd_budget};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::SharedEngine;
use crate::ops::lifecycle::DrainGuard;
use crate::ops::metrics::DropReason;

/// Per-connection limits.
#[derive(Debug, Clone)]
pub struct TcpSettings {
    /// RFC 7766 §6.2.3: a connection with no query under way and nothing received for this
    /// long is closed (`server.tcp_idle_timeout`). Also the longest a reply may take to write.
    pub idle_timeout: Duration,
    /// Queries of one connection answered at the same time; past it, reading pauses until one
    /// is answered (a client cannot make a connection hold unbounded work).
    pub max_in_flight: usize,
    /// A message whose first byte has arrived must be whole within this long
    /// (`limits.tcp.message_timeout`; slowloris).
    pub message_timeout: Duration,
}

impl TcpSettings {
    pub fn new(idle_timeout: Duration) -> Self {
        TcpSettings {
            idle_timeout,
            max_in_flight: 64,
            message_timeout: crate::config::TcpLimitsConfig::default().message_timeout,
        }
    }
}

/// How long the accept loop waits for a connection asked to make room to close, per try.
const ROOM_WAIT: Duration = Duration::from_millis(500);
/// Tries before the new connection is closed instead (the one asked is answering a query).
const ROOM_TRIES: usize = 4;

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
/// them. `gate` (shared by every listener) admits each connection under the engine's
/// [`TcpLimits`]; while it makes room, accepting pauses.
pub async fn serve(
    listener: TcpListener,
    engine: SharedEngine,
    settings: TcpSettings,
    gate: Arc<Gate>,
    mut stop: watch::Receiver<bool>,
    drain: DrainGuard,
) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let current = engine.load_full();
                    let limits = current.tcp_limits();
                    let Some(admitted) = admit(&gate, peer, limits, &current, &mut stop).await else {
                        continue;
                    };
                    let c = conn::Connection {
                        stream,
                        peer,
                        engine: engine.clone(),
                        settings: TcpSettings {
                            message_timeout: limits.message_timeout,
                            ..settings.clone()
                        },
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

/// Ask the gate until it serves the connection or refuses it, waiting (a bounded while) for
/// connections it asked to make room to close. Evictions and refusals are counted.
async fn admit(
    gate: &Arc<Gate>,
    peer: SocketAddr,
    limits: &TcpLimits,
    engine: &super::Engine,
    stop: &mut watch::Receiver<bool>,
) -> Option<Admitted> {
    let metrics = engine.metrics();
    for _ in 0..ROOM_TRIES {
        let (decision, asked) = gate.admit(peer.ip(), limits);
        if asked {
            metrics.dropped(DropReason::TcpEvicted);
        }
        match decision {
            Decision::Serve(a) => return Some(a),
            Decision::Refuse(why) => {
                metrics.dropped(match why {
                    Refusal::Total => DropReason::TcpConnLimit,
                    Refusal::PerClient => DropReason::TcpClientLimit,
                });
                return None;
            }
            Decision::Wait => tokio::select! {
                _ = gate.wait_closed(ROOM_WAIT) => {}
                _ = stopped(stop) => return None,
            },
        }
    }
    metrics.dropped(DropReason::TcpConnLimit);
    None
}
