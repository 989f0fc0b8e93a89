//! One stream connection (TCP, or TLS on TCP) to an upstream that carries many queries at once.
//!
//! RFC 7766 §6.2.1.1: "In order to achieve performance on par with UDP, DNS clients SHOULD
//! pipeline their queries. When a DNS client sends multiple queries to a server, it SHOULD NOT
//! wait for an outstanding reply before sending the next query." And §6.2.2: "To mitigate the
//! risk of unintentional server overload, DNS clients MUST take care to minimize the number of
//! concurrent TCP connections made to any individual server." A burst of cache misses forwarded
//! over TCP (a node-local cache's `force_tcp` route to kube-dns) must not open a connection per
//! query: the upstream's listen backlog overflows (knotd's is 10), the kernel drops the SYNs,
//! and the queries time out into SERVFAIL.
//!
//! So each query is written into a shared connection under an ID of the connection's own (two
//! queries in flight never share one, whatever IDs their callers chose), and its reply is found
//! by that ID and the question, in whatever order replies come (§7: "the response ... MUST
//! match on both message ID and query"); the caller gets the reply with its own ID back.
//!
//! A writer task owns the write half, so a caller that gives up (its timeout, a loop found)
//! never cuts a frame in half; a reader task owns the read half and hands each reply to its
//! waiter. The connection closes when the upstream closes it, on any I/O or framing error, once
//! it has had nothing in flight for `expire` (CoreDNS's `expire`), or when the last handle to it
//! is dropped; queries still waiting then fail at once (the caller may retry on a new one).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

use super::upstream::{ExchangeError, is_reply_to};
use crate::wire;

/// Most frames written in one `write` (a burst of queries goes out together).
const WRITE_BATCH: usize = 64 * 1024;
/// A reply whose first bytes have come must be complete within this long, else the connection
/// is broken (a peer that stalls mid-frame).
const FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// Queries in flight on one connection at the most: half the ID space, so that a free ID is
/// always found at once.
const MAX_IN_FLIGHT: usize = 1 << 15;

type Answer = Result<Vec<u8>, ExchangeError>;

/// A query waiting for its reply.
struct Waiter {
    /// The query as sent (our ID) up to the end of its question: what the reply must match.
    sent: Vec<u8>,
    /// The caller's ID, put back into the reply.
    id: [u8; 2],
    tx: oneshot::Sender<Answer>,
}

/// What the reader and the callers share.
struct InFlight {
    by_id: HashMap<u16, Waiter>,
    next_id: u16,
    /// Since when the oldest unanswered query has waited without any reply coming (`None`
    /// when nothing is in flight).
    quiet_since: Option<Instant>,
    /// When the last query was answered or given up (for `expire`).
    last_active: Instant,
}

struct Shared {
    in_flight: Mutex<InFlight>,
    closed: AtomicBool,
    /// Set once to end both tasks.
    close: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Close the connection: both tasks end, waiting queries fail now.
    fn shut(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.close.send(true);
        // Dropping the senders wakes every waiter with an error.
        self.lock().by_id.clear();
    }
}

/// A pipelined stream connection to one upstream.
pub(super) struct Pipe {
    frames: mpsc::UnboundedSender<Vec<u8>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Pipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipe")
            .field("in_flight", &self.shared.lock().by_id.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.shared.shut();
    }
}

/// Removes a waiter whose caller gave up (timeout, loop found), so its ID can be used again.
struct Forget<'a> {
    shared: &'a Shared,
    id: u16,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let mut f = self.shared.lock();
        if f.by_id.remove(&self.id).is_some() {
            f.last_active = Instant::now();
            if f.by_id.is_empty() {
                f.quiet_since = None;
            }
        }
    }
}

impl Pipe {
    /// Start serving `stream` (connected); idle for `expire`, it closes.
    pub(super) fn open<S>(stream: S, expire: Duration) -> Pipe
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(stream);
        let (frames, rx) = mpsc::unbounded_channel();
        let (close, closing) = watch::channel(false);
        let shared = Arc::new(Shared {
            in_flight: Mutex::new(InFlight {
                by_id: HashMap::new(),
                next_id: fastrand::u16(..),
                quiet_since: None,
                last_active: Instant::now(),
            }),
            closed: AtomicBool::new(false),
            close,
        });
        tokio::spawn(write_frames(wr, rx, closing.clone(), shared.clone()));
        tokio::spawn(read_replies(rd, closing, shared.clone(), expire));
        Pipe { frames, shared }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Queries now in flight, and whether the connection has gone `stall` without any reply
    /// while some were (a peer that answers one query at a time, stuck on a slow one).
    pub(super) fn load(&self, stall: Duration) -> (usize, bool) {
        let f = self.shared.lock();
        let stalled = f.quiet_since.is_some_and(|t| t.elapsed() >= stall);
        (f.by_id.len(), stalled)
    }

    /// Send `query` (whole message; `question_end` where its question ends) and wait for its
    /// reply, which comes back with the query's own ID. Fails at once if the connection is or
    /// becomes closed.
    pub(super) async fn ask(&self, query: &[u8], question_end: usize) -> Answer {
        if query.len() < wire::HEADER_LEN || question_end > query.len() {
            return Err(ExchangeError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a query",
            )));
        }
        let (tx, rx) = oneshot::channel();
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
        framed.extend_from_slice(query);
        let id = {
            let mut f = self.shared.lock();
            if self.is_closed() {
                return Err(closed());
            }
            if f.by_id.len() >= MAX_IN_FLIGHT {
                return Err(ExchangeError::Io(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "too many queries in flight on one connection",
                )));
            }
            let mut id = f.next_id;
            while f.by_id.contains_key(&id) {
                id = id.wrapping_add(1);
            }
            f.next_id = id.wrapping_add(1);
            framed[2..4].copy_from_slice(&id.to_be_bytes());
            let waiter = Waiter {
                sent: framed[2..2 + question_end].to_vec(),
                id: [query[0], query[1]],
                tx,
            };
            f.by_id.insert(id, waiter);
            f.quiet_since.get_or_insert_with(Instant::now);
            id
        };
        let _forget = Forget {
            shared: &self.shared,
            id,
        };
        if self.frames.send(framed).is_err() {
            return Err(closed());
        }
        rx.await.unwrap_or_else(|_| Err(closed()))
    }
}

fn closed() -> ExchangeError {
    ExchangeError::Io(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "upstream connection closed",
    ))
}

/// The writer task: frames in the order they were sent, as many at once as are waiting.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    mut closing: watch::Receiver<bool>,
    shared: Arc<Shared>,
) {
    let mut buf = Vec::new();
    loop {
        let first = tokio::select! {
            f = rx.recv() => f,
            _ = closing.wait_for(|c| *c) => None,
        };
        let Some(first) = first else { break };
        buf.clear();
        buf.extend_from_slice(&first);
        while buf.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(f) => buf.extend_from_slice(&f),
                Err(_) => break,
            }
        }
        let written = async {
            wr.write_all(&buf).await?;
            wr.flush().await
        };
        let ok = tokio::select! {
            r = written => r.is_ok(),
            _ = closing.wait_for(|c| *c) => false,
        };
        if !ok {
            break;
        }
    }
    shared.shut();
    let _ = wr.shutdown().await;
}

/// The reader task: each reply to its waiter; the connection ends on EOF, an error, a frame
/// left unfinished, or `expire` with nothing in flight.
async fn read_replies<R: AsyncRead + Unpin>(
    rd: R,
    mut closing: watch::Receiver<bool>,
    shared: Arc<Shared>,
    expire: Duration,
) {
    let mut rd = BufReader::with_capacity(16 * 1024, rd);
    loop {
        // Idle: closes at `expire` after the last answer (0: kept until its handle is
        // dropped, for one exchange). In flight: look again after a while (the last query may
        // be given up meanwhile without any byte arriving).
        let idles_out = !expire.is_zero();
        let recheck = {
            let f = shared.lock();
            if f.by_id.is_empty() && idles_out {
                f.last_active + expire
            } else {
                Instant::now() + expire.max(Duration::from_millis(100))
            }
        };
        enum Next {
            Frame,
            End,
            Recheck,
        }
        let next = tokio::select! {
            // `fill_buf` is cancel safe: nothing is consumed when another branch wins.
            r = rd.fill_buf() => match r {
                Ok(b) if !b.is_empty() => Next::Frame,
                _ => Next::End,
            },
            _ = closing.wait_for(|c| *c) => Next::End,
            _ = tokio::time::sleep_until(recheck.into()) => Next::Recheck,
        };
        match next {
            Next::Frame => {}
            Next::End => break,
            Next::Recheck => {
                let f = shared.lock();
                if idles_out && f.by_id.is_empty() && f.last_active.elapsed() >= expire {
                    break;
                }
                continue;
            }
        }
        let frame = async {
            let mut len = [0u8; 2];
            rd.read_exact(&mut len).await?;
            let mut r = vec![0u8; u16::from_be_bytes(len) as usize];
            rd.read_exact(&mut r).await?;
            Ok::<_, io::Error>(r)
        };
        let Ok(Ok(r)) = tokio::time::timeout(FRAME_TIMEOUT, frame).await else {
            break;
        };
        deliver(&shared, r);
    }
    shared.shut();
}

/// Hand reply `r` to the query it answers; a reply to nothing waiting (a query given up) is
/// dropped.
fn deliver(shared: &Shared, mut r: Vec<u8>) {
    if r.len() < wire::HEADER_LEN {
        return;
    }
    let id = wire::u16_at(&r, 0);
    let mut f = shared.lock();
    let Some(w) = f.by_id.get(&id) else { return };
    if !is_reply_to(&r, &w.sent, w.sent.len()) {
        return;
    }
    let Some(w) = f.by_id.remove(&id) else { return };
    let now = Instant::now();
    f.last_active = now;
    f.quiet_since = (!f.by_id.is_empty()).then_some(now);
    drop(f);
    let answer = match wire::reply::check(&r) {
        Ok(()) => {
            r[0..2].copy_from_slice(&w.id);
            Ok(r)
        }
        Err(e) => Err(ExchangeError::Malformed(e)),
    };
    let _ = w.tx.send(answer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rtype;
    use tokio::net::{TcpListener, TcpStream};

    /// A query for `name` A with message ID `id`, and where its question ends.
    fn query(id: u16, name: &str) -> (Vec<u8>, usize) {
        let mut q = vec![0u8; 12];
        q[0..2].copy_from_slice(&id.to_be_bytes());
        q[2] = 0x01;
        q[5] = 1;
        for l in name.split('.').filter(|l| !l.is_empty()) {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&rtype::A.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        let end = q.len();
        (q, end)
    }

    /// The reply to `q`: QR set, no records.
    fn reply_to(q: &[u8]) -> Vec<u8> {
        let mut r = q.to_vec();
        r[2] |= 0x80;
        r
    }

    async fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.ok()?;
        let mut b = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut b).await.ok()?;
        Some(b)
    }

    async fn write_frame(s: &mut TcpStream, b: &[u8]) {
        let mut f = (b.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(b);
        s.write_all(&f).await.unwrap();
    }

    /// A server that reads `batch` queries, then answers them in reverse order, on one
    /// connection only; it reports how many connections it accepted.
    async fn reversing_server(batch: usize) -> (std::net::SocketAddr, Arc<Mutex<usize>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(0));
        let a = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                *a.lock().unwrap() += 1;
                tokio::spawn(async move {
                    loop {
                        let mut got = Vec::new();
                        for _ in 0..batch {
                            match read_frame(&mut s).await {
                                Some(q) => got.push(q),
                                None => return,
                            }
                        }
                        for q in got.iter().rev() {
                            write_frame(&mut s, &reply_to(q)).await;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn many_queries_share_one_connection_and_get_their_own_replies() {
        let (addr, accepted) = reversing_server(50).await;
        let pipe = Arc::new(Pipe::open(
            TcpStream::connect(addr).await.unwrap(),
            Duration::from_secs(10),
        ));
        // 200 queries at once, all with the same caller ID: the connection's own IDs keep
        // them apart, and each reply carries its caller's ID and question back.
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let pipe = pipe.clone();
                tokio::spawn(async move {
                    let (q, end) = query(7, &format!("n{i}.example."));
                    let r = pipe.ask(&q, end).await.unwrap();
                    assert_eq!(&r[0..2], &7u16.to_be_bytes());
                    assert_eq!(&r[12..end], &q[12..end], "the reply to its own question");
                })
            })
            .collect();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(*accepted.lock().unwrap(), 1);
        assert_eq!(pipe.load(Duration::ZERO).0, 0, "nothing left in flight");
    }

    /// A pipe (idle `expire`) to a server that accepts one connection and runs `serve` on it.
    async fn pipe_to<F, Fut>(expire: Duration, serve: F) -> Pipe
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            serve(s).await;
        });
        Pipe::open(TcpStream::connect(addr).await.unwrap(), expire)
    }

    #[tokio::test]
    async fn a_reply_to_another_question_under_the_same_id_is_not_taken() {
        let pipe = pipe_to(Duration::from_secs(10), |mut s| async move {
            let q = read_frame(&mut s).await.unwrap();
            // First a forged reply: our ID, another question; then the real one.
            let (other, _) = query(u16::from_be_bytes([q[0], q[1]]), "other.example.");
            write_frame(&mut s, &reply_to(&other)).await;
            write_frame(&mut s, &reply_to(&q)).await;
            let _ = read_frame(&mut s).await;
        })
        .await;
        let (q, end) = query(9, "asked.example.");
        let r = tokio::time::timeout(Duration::from_secs(10), pipe.ask(&q, end))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&r[12..end], &q[12..end]);
    }

    #[tokio::test]
    async fn a_closed_connection_fails_its_waiters_at_once() {
        let pipe = pipe_to(Duration::from_secs(10), |mut s| async move {
            // Read one query, answer nothing, close.
            let _ = read_frame(&mut s).await;
        })
        .await;
        let (q, end) = query(1, "a.example.");
        let r = tokio::time::timeout(Duration::from_secs(10), pipe.ask(&q, end))
            .await
            .expect("the close ends the wait, not a timeout");
        assert!(matches!(r, Err(ExchangeError::Io(_))), "{r:?}");
        assert!(pipe.is_closed());
        assert!(
            pipe.ask(&q, end).await.is_err(),
            "a closed pipe takes nothing"
        );
    }

    #[tokio::test]
    async fn an_idle_connection_closes_after_expire() {
        let (eof_tx, eof_rx) = oneshot::channel();
        let pipe = pipe_to(Duration::from_millis(100), |mut s| async move {
            let q = read_frame(&mut s).await.unwrap();
            write_frame(&mut s, &reply_to(&q)).await;
            // The client closes the idle connection: EOF.
            let _ = eof_tx.send(read_frame(&mut s).await.is_none());
        })
        .await;
        let (q, end) = query(1, "a.example.");
        pipe.ask(&q, end).await.unwrap();
        let eof = tokio::time::timeout(Duration::from_secs(10), eof_rx)
            .await
            .expect("closed after expire")
            .unwrap();
        assert!(eof);
        assert!(pipe.is_closed());
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_frees_its_id_and_its_late_reply_is_dropped() {
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let pipe = pipe_to(Duration::from_secs(10), |mut s| async move {
            let first = read_frame(&mut s).await.unwrap();
            let _ = go_rx.await;
            // The late reply to the abandoned query, then the next query's.
            write_frame(&mut s, &reply_to(&first)).await;
            let second = read_frame(&mut s).await.unwrap();
            write_frame(&mut s, &reply_to(&second)).await;
        })
        .await;
        let (q, end) = query(1, "slow.example.");
        let given_up = tokio::time::timeout(Duration::from_millis(50), pipe.ask(&q, end)).await;
        assert!(given_up.is_err());
        assert_eq!(
            pipe.load(Duration::ZERO).0,
            0,
            "the abandoned query is forgotten"
        );
        go_tx.send(()).unwrap();
        let (q2, end2) = query(2, "next.example.");
        let r = tokio::time::timeout(Duration::from_secs(10), pipe.ask(&q2, end2))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&r[12..end2], &q2[12..end2]);
        assert_eq!(&r[0..2], &2u16.to_be_bytes());
    }
}
