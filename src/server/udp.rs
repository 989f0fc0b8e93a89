//! clusterdns's own UDP loop: one `SO_REUSEPORT` socket per worker, so the kernel spreads
//! clients across workers and a reply leaves from the worker that received the query — no
//! cross-thread hop. Answers from the snapshot (and cache hits) are written into one reused
//! buffer and sent at once: no task, no allocation per query. Only queries that wait for an
//! upstream become tasks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use socket2::{Domain, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::{Engine, Local};
use crate::ops::metrics::Proto;

/// Create a UDP socket bound to `addr` with `SO_REUSEPORT`, so several can share the port.
pub fn bind_reuseport(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // A deeper receive queue absorbs bursts (the kernel caps it at rmem_max).
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Bind `workers` sockets on `addr` (port 0 picks one port for all of them).
pub fn bind_workers(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<std::net::UdpSocket>> {
    let first = bind_reuseport(addr)?;
    let actual = first.local_addr()?;
    let mut v = vec![first];
    for _ in 1..workers.max(1) {
        v.push(bind_reuseport(actual)?);
    }
    Ok(v)
}

/// Queries waiting for upstream answers, for a graceful stop.
#[derive(Default)]
pub struct InFlight(AtomicUsize);

impl InFlight {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Run one worker until `stop` turns true; then return (forwarded queries still in flight
/// finish in their own tasks and are counted in `inflight`).
pub async fn worker(sock: std::net::UdpSocket, engine: Arc<Engine>, mut stop: watch::Receiver<bool>, inflight: Arc<InFlight>) {
    let sock = match UdpSocket::from_std(sock) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %e, "udp socket");
            return;
        }
    };
    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    loop {
        let (len, src) = tokio::select! {
            biased;
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP port-unreachable from an earlier reply surfaces here on Linux:
                    // nothing to do but go on.
                    tracing::debug!(error = %e, "udp recv");
                    continue;
                }
            },
            _ = stop.changed() => {
                if *stop.borrow() { return; }
                continue;
            }
        };
        let start = Instant::now();
        let msg = &buf[..len];
        match engine.answer_local(msg, Proto::Udp, &mut out) {
            Local::Reply(source) => {
                if let Err(e) = sock.try_send_to(&out, src) {
                    if e.kind() == std::io::ErrorKind::WouldBlock {
                        let _ = sock.send_to(&out, src).await;
                    } else {
                        tracing::debug!(error = %e, "udp send");
                    }
                }
                engine.observe(msg, &out, Proto::Udp, src, source, start);
            }
            Local::Drop => {}
            Local::Forward(q) => {
                let msg = msg.to_vec();
                let engine = engine.clone();
                let sock = sock.clone();
                let inflight = inflight.clone();
                inflight.0.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(async move {
                    let (reply, source) = engine.forward(&msg, &q, Proto::Udp).await;
                    let _ = sock.send_to(&reply, src).await;
                    engine.observe(&msg, &reply, Proto::Udp, src, source, start);
                    inflight.0.fetch_sub(1, Ordering::AcqRel);
                });
            }
        }
    }
}
