//! One TCP connection: RFC 7766 framing (a two-byte length before each message, §8), queries
//! read one after another and answered concurrently — answers from the zone and the cache at
//! once, forwarded ones when their upstream replies, so replies may leave in another order than
//! their queries came (§6.2.1.1: "the server MAY process the queries in parallel ... and send
//! responses as soon as they are available") — and closing after the idle timeout (§6.2.3),
//! when a message stalls part-way (`limits.tcp.message_timeout`: a slowloris client holds a
//! connection by sending a message a byte at a time, or never finishing it), or when the gate
//! asks it to make room (then only once nothing is in flight).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

use super::{Admitted, TcpSettings, stopped};
use crate::observe::Proto;
use crate::ops::lifecycle::DrainGuard;
use crate::ops::metrics::DropReason;
use crate::server::handler::{TCP_MAX, forwarded_facts};
use crate::server::{Admission, Engine, ForwardSlot, Local, Pending, Resolved, SharedEngine};

/// A connection accepted and admitted, ready to [`run`](Connection::run).
pub struct Connection {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) engine: SharedEngine,
    pub(super) settings: TcpSettings,
    /// Turns true when the server stops accepting: answer what has been read, then close.
    pub(super) stop: watch::Receiver<bool>,
    pub(super) admitted: Admitted,
    /// Held until the connection closes: the shutdown's drain waits for it.
    pub(super) drain: DrainGuard,
}

/// A forwarded query answered: the reply, the query, when it arrived, and the engine that
/// answered it (for its metrics).
type Done = (Resolved, Box<Pending>, Instant, Arc<Engine>);

impl Connection {
    /// Serve the connection until the client closes it, it idles out, a write fails, or the
    /// server stops (then what has been read is still answered).
    pub async fn run(self) {
        let Connection {
            stream,
            peer,
            engine: shared,
            settings,
            mut stop,
            admitted,
            drain,
        } = self;
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let idle = settings.idle_timeout;
        let tracked = admitted.tracked.clone();
        let mut frames = Frames::default();
        let mut in_flight: FuturesUnordered<
            std::pin::Pin<Box<dyn std::future::Future<Output = Done> + Send>>,
        > = FuturesUnordered::new();
        let mut out = Vec::with_capacity(512);
        let mut reading = true;
        let mut deadline = tokio::time::Instant::now() + idle;
        // Whether the client asked for a zone transfer on this connection: a secondary, not a
        // resolver. Limits meant for resolvers (#17) must not apply from then on.
        let mut transfer = false;
        loop {
            if !reading && in_flight.is_empty() {
                break;
            }
            tracked.set_busy(in_flight.len());
            // A message begun must be whole by `stall_at`; without one, the idle deadline.
            let stall_at = frames.started.map(|t| t + settings.message_timeout);
            let wake = stall_at.map_or(deadline, |s| s.min(deadline));
            tokio::select! {
                biased;
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    let (r, p, start, engine): Done = done;
                    if !write_frame(&mut wr, &r.reply, idle).await {
                        break;
                    }
                    let f = forwarded_facts(&p.query, &r);
                    engine.observe(&f, p.query.size, &r.reply, Proto::Tcp, peer, start);
                    deadline = tokio::time::Instant::now() + idle;
                    tracked.touch();
                }
                _ = stopped(&mut stop), if reading => reading = false,
                // Asked to make room for a new connection: it has nothing in flight now.
                _ = tracked.evict.notified(), if reading => reading = false,
                frame = frames.next(&mut rd), if reading && in_flight.len() < settings.max_in_flight => {
                    let msg = match frame {
                        Ok(Read::Message(msg)) => msg,
                        // A message has begun: the stall deadline applies from now.
                        Ok(Read::Begun) => continue,
                        // The client is done sending: answer what is in flight, then close.
                        Ok(Read::End) => {
                            reading = false;
                            continue;
                        }
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "tcp read");
                            reading = false;
                            continue;
                        }
                    };
                    deadline = tokio::time::Instant::now() + idle;
                    tracked.touch();
                    let start = Instant::now();
                    let engine = shared.load_full();
                    match engine.admit(peer.ip(), &msg, Proto::Tcp, start, false, &mut out) {
                        Admission::Serve => {}
                        Admission::Drop => continue,
                        Admission::Reply => {
                            if !write_frame(&mut wr, &out, idle).await {
                                break;
                            }
                            continue;
                        }
                    }
                    match engine.answer_from(&msg, Proto::Tcp, Some(peer.ip()), &mut out) {
                        Local::Reply(f) => {
                            if !write_frame(&mut wr, &out, idle).await {
                                break;
                            }
                            engine.observe(&f, msg.len(), &out, Proto::Tcp, peer, start);
                        }
                        // Not a query (a response, a runt): no reply, the connection goes on.
                        Local::Drop => {}
                        Local::Forward(p) => match engine.forward_slot() {
                            Some(slot) => in_flight.push(Box::pin(forward(engine, p, start, slot))),
                            None => {
                                let f = engine.shed(&p, &mut out);
                                if !write_frame(&mut wr, &out, idle).await {
                                    break;
                                }
                                engine.observe(&f, msg.len(), &out, Proto::Tcp, peer, start);
                            }
                        },
                        Local::Transfer(req) => {
                            // From here on this is a transfer connection (`serve_transfer`).
                            transfer = true;
                            if !serve_transfer(&engine, *req, peer, &mut wr, &mut out, idle, start).await {
                                break;
                            }
                            deadline = tokio::time::Instant::now() + idle;
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake), if reading && (in_flight.is_empty() || stall_at.is_some()) => {
                    let now = tokio::time::Instant::now();
                    if stall_at.is_some_and(|s| now >= s) {
                        // Slowloris: what was read of the message is dropped with the connection.
                        shared.load().metrics().dropped(DropReason::TcpStalled);
                        tracing::debug!(%peer, "tcp message stalled");
                        reading = false;
                    } else if in_flight.is_empty() && now >= deadline {
                        break;
                    }
                }
            }
        }
        let _ = wr.shutdown().await;
        if transfer {
            tracing::debug!(%peer, "transfer connection closed");
        }
        drop(admitted);
        drop(drain);
    }
}

/// Answer a transfer request: one reply, or every message of a transfer, each written within
/// the transfer's own write timeout (`transfer.write_timeout`) instead of the resolvers'. Other
/// queries of the connection wait meanwhile (a secondary sends nothing else during a
/// transfer). False when the connection must close.
async fn serve_transfer(
    engine: &Arc<Engine>,
    req: crate::xfr::Request,
    peer: SocketAddr,
    wr: &mut OwnedWriteHalf,
    out: &mut Vec<u8>,
    idle: Duration,
    start: Instant,
) -> bool {
    let Some(x) = engine.xfr().cloned() else {
        return true;
    };
    let size = req.raw.len();
    let facts_of = |rcode| crate::server::handler::transfer_facts(&req.query, rcode);
    let f = facts_of(0);
    match x.answer_tcp(&req, peer.ip(), out) {
        crate::xfr::TcpAnswer::Reply(rcode) => {
            let ok = write_frame(wr, out, idle).await;
            engine.observe(&facts_of(rcode), size, out, Proto::Tcp, peer, start);
            ok
        }
        crate::xfr::TcpAnswer::Stream(mut t) => {
            let timeout = t.write_timeout();
            let mut complete = true;
            while t.next(out) {
                if !write_frame(wr, out, timeout).await {
                    complete = false;
                    break;
                }
            }
            t.finish(complete);
            engine.observe(&f, size, out, Proto::Tcp, peer, start);
            complete
        }
    }
}

async fn forward(engine: Arc<Engine>, p: Box<Pending>, start: Instant, slot: ForwardSlot) -> Done {
    let r = engine.forward(&p, Proto::Tcp).await;
    drop(slot);
    (r, p, start, engine)
}

/// Send one message with its length prefix, in one write; false when the client is gone or
/// does not read it within `timeout`.
async fn write_frame(wr: &mut OwnedWriteHalf, msg: &[u8], timeout: Duration) -> bool {
    let Ok(len) = u16::try_from(msg.len()) else {
        // The engine never makes a reply over TCP_MAX: a bug, not a reason to send garbage.
        debug_assert!(msg.len() <= TCP_MAX);
        return false;
    };
    let mut framed = Vec::with_capacity(2 + msg.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    matches!(
        tokio::time::timeout(timeout, wr.write_all(&framed)).await,
        Ok(Ok(()))
    )
}

/// What [`Frames::next`] found.
enum Read {
    /// A whole message, without its length prefix.
    Message(BytesMut),
    /// The first bytes of a message arrived (its stall deadline starts).
    Begun,
    /// The end of the stream (a message cut off by it is dropped).
    End,
}

/// The messages of a stream: bytes read are kept until a whole message is there, so waiting
/// for the next one can be given up (in a `select!`) without losing any.
#[derive(Default)]
struct Frames {
    buf: BytesMut,
    /// When the message now in `buf` began arriving; None when `buf` holds no part of one.
    started: Option<tokio::time::Instant>,
}

impl Frames {
    /// The next message, or word that one has begun, or the end of the stream.
    async fn next(&mut self, rd: &mut OwnedReadHalf) -> io::Result<Read> {
        loop {
            if self.buf.len() >= 2 {
                let len = u16::from_be_bytes([self.buf[0], self.buf[1]]) as usize;
                if self.buf.len() >= 2 + len {
                    let mut frame = self.buf.split_to(2 + len);
                    let _ = frame.split_to(2);
                    // Pipelined bytes behind it are the next message, begun now.
                    self.started = (!self.buf.is_empty()).then(tokio::time::Instant::now);
                    return Ok(Read::Message(frame));
                }
                self.buf.reserve(2 + len - self.buf.len());
            } else {
                self.buf.reserve(512);
            }
            // Cancel-safe: what it reads is in `buf` even if the caller stops waiting.
            if rd.read_buf(&mut self.buf).await? == 0 {
                return Ok(Read::End);
            }
            if self.started.is_none() && !self.buf.is_empty() && !self.whole() {
                self.started = Some(tokio::time::Instant::now());
                return Ok(Read::Begun);
            }
        }
    }

    /// Whether `buf` holds at least one whole message.
    fn whole(&self) -> bool {
        self.buf.len() >= 2
            && self.buf.len() >= 2 + u16::from_be_bytes([self.buf[0], self.buf[1]]) as usize
    }
}
