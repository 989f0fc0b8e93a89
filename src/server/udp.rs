//! clusterdns's own UDP loop: one `SO_REUSEPORT` socket per worker thread, so the kernel
//! spreads clients across workers and a reply leaves from the thread that received the query —
//! no cross-thread hop, no async runtime in between. Each wake-up takes a batch of datagrams
//! with one `recvmmsg` and sends the batch's replies with one `sendmmsg`. Answers from the
//! snapshot (and hosts/cache hits) are written into per-slot buffers that live as long as the
//! worker: no task and no allocation per query. Only queries that wait for an upstream become
//! tasks on the tokio runtime, at most every route's `max_concurrent` together (past it, REFUSED);
//! their replies are sent from there. Each query first passes its client's rate limit
//! ([`Engine::admit`](super::Engine::admit)), before it is parsed.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::handler::forwarded_facts;
use super::{Admission, Local, SharedEngine};
use crate::observe::Proto;
use crate::ops::lifecycle::DrainGuard;
use crate::ops::metrics::DropReason;

/// Datagrams taken per `recvmmsg`.
const BATCH: usize = 32;
/// Largest datagram read (a DNS query over UDP with EDNS is far smaller; anything longer is
/// truncated by the kernel and then fails to parse).
const DGRAM: usize = 4096;
/// How often a blocked worker wakes to look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Run one worker on the calling thread until `stop` is set. Queries received before the stop
/// are answered; forwarded ones finish on the runtime. The worker holds `drain` until its
/// socket's queue is answered, and each forwarded query a clone of it until its reply is sent,
/// so the shutdown's drain waits for both.
pub fn worker(
    sock: std::net::UdpSocket,
    shared: SharedEngine,
    stop: Arc<AtomicBool>,
    drain: DrainGuard,
    rt: tokio::runtime::Handle,
) {
    if let Err(e) = sock
        .set_nonblocking(false)
        .and_then(|_| sock.set_read_timeout(Some(STOP_POLL)))
    {
        tracing::error!(error = %e, "udp socket setup");
        return;
    }
    let sock = Arc::new(sock);
    let mut batch = Batch::new();
    let mut draining = false;
    // Whether the last batch filled every slot.
    let mut full = false;
    loop {
        if !draining && stop.load(Ordering::Acquire) {
            // Stopping: answer what the kernel already queued for us, then close. A query that
            // reached the socket is answered, not dropped with it.
            draining = true;
            // Connecting the socket to an address no client uses stops the kernel from queueing
            // new datagrams on it (clients get port-unreachable at once, and retry elsewhere);
            // what is already queued is still read below and answered.
            let nowhere: SocketAddr = match sock.local_addr() {
                Ok(SocketAddr::V6(_)) => (std::net::Ipv6Addr::LOCALHOST, 9).into(),
                _ => (std::net::Ipv4Addr::LOCALHOST, 9).into(),
            };
            let _ = sock.connect(nowhere);
            let _ = sock.set_nonblocking(true);
        }
        let n = match batch.recv(&sock) {
            Ok(0) if draining => return,
            Err(e) if draining && e.kind() == io::ErrorKind::WouldBlock => return,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                // ICMP errors from earlier replies surface here on Linux: go on.
                tracing::debug!(error = %e, "udp recv");
                continue;
            }
        };
        let start = Instant::now();
        // Two full batches in a row: the socket's queue is not draining, so limited clients
        // get no TC replies until it does (their cost goes to the clients within their rate).
        let overloaded = n == BATCH && full;
        full = n == BATCH;
        // One load per batch: a reload takes effect at the next batch.
        let engine = shared.load();
        let mut replies = 0;
        for i in 0..n {
            let (msg, src, out) = batch.slot(i);
            if src.port() == 0 {
                // A reply to port 0 cannot arrive; such a source is spoofed (reflection).
                engine.metrics().dropped(DropReason::Malformed);
                continue;
            }
            match engine.admit(src.ip(), msg, Proto::Udp, start, overloaded, out) {
                Admission::Serve => {}
                Admission::Drop => continue,
                Admission::Reply => {
                    batch.mark_reply(i);
                    replies += 1;
                    continue;
                }
            }
            match engine.answer_from(msg, Proto::Udp, Some(src.ip()), out) {
                Local::Reply(f) => {
                    engine.observe(&f, msg.len(), out, Proto::Udp, src, start);
                    batch.mark_reply(i);
                    replies += 1;
                }
                Local::Drop => {}
                Local::Transfer(req) => {
                    // IXFR over UDP and signed SOA queries: one message, answered here.
                    if let Some(x) = engine.xfr() {
                        let code = x.answer_udp(&req, src.ip(), out);
                        let f = super::handler::transfer_facts(&req.query, code);
                        engine.observe(&f, msg.len(), out, Proto::Udp, src, start);
                        batch.mark_reply(i);
                        replies += 1;
                    }
                }
                Local::Forward(p) => {
                    // Bounded: past the routes' `max_concurrent` waiting queries, REFUSED at once
                    // instead of another task.
                    let Some(slot) = engine.forward_slot() else {
                        let f = engine.shed(&p, out);
                        engine.observe(&f, msg.len(), out, Proto::Udp, src, start);
                        batch.mark_reply(i);
                        replies += 1;
                        continue;
                    };
                    let engine = arc_swap::Guard::into_inner(shared.load());
                    let sock = sock.clone();
                    let held = drain.clone();
                    rt.spawn(async move {
                        let r = engine.forward(&p, Proto::Udp).await;
                        drop(slot);
                        if let Err(e) = sock.send_to(&r.reply, src) {
                            tracing::debug!(error = %e, "udp send");
                        }
                        let f = forwarded_facts(&p.query, &r);
                        engine.observe(&f, p.query.size, &r.reply, Proto::Udp, src, start);
                        drop(held);
                    });
                }
            }
        }
        if replies > 0 {
            batch.send(&sock, n);
        }
    }
}

/// The buffers of one worker: `BATCH` receive slots with their source addresses, and a reply
/// buffer per slot.
struct Batch {
    bufs: Vec<[u8; DGRAM]>,
    lens: [usize; BATCH],
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: [libc::socklen_t; BATCH],
    outs: Vec<Vec<u8>>,
    reply: [bool; BATCH],
}

impl Batch {
    fn new() -> Self {
        Batch {
            bufs: vec![[0u8; DGRAM]; BATCH],
            lens: [0; BATCH],
            // SAFETY: an all-zero sockaddr_storage is a valid (unspecified) address.
            addrs: vec![unsafe { std::mem::zeroed() }; BATCH],
            addr_lens: [0; BATCH],
            outs: (0..BATCH).map(|_| Vec::with_capacity(1232)).collect(),
            reply: [false; BATCH],
        }
    }

    /// One `recvmmsg`: blocks for the first datagram (up to the socket's read timeout), then
    /// takes whatever else is already queued (MSG_WAITFORONE).
    #[allow(clippy::needless_range_loop)] // slot i of five parallel arrays
    fn recv(&mut self, sock: &std::net::UdpSocket) -> io::Result<usize> {
        // SAFETY: all-zero iovec and mmsghdr are valid (null pointers, zero lengths); every
        // pointer is set below before the kernel reads it.
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..BATCH {
            iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: DGRAM,
            };
            hdrs[i].msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at live buffers of the stated sizes owned by `self`
        // and the local `iovs`, which outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = hdrs[i].msg_len as usize;
            self.addr_lens[i] = hdrs[i].msg_hdr.msg_namelen;
            self.reply[i] = false;
        }
        Ok(n)
    }

    fn slot(&mut self, i: usize) -> (&[u8], SocketAddr, &mut Vec<u8>) {
        let src = sockaddr_to_std(&self.addrs[i], self.addr_lens[i])
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        (&self.bufs[i][..self.lens[i]], src, &mut self.outs[i])
    }

    fn mark_reply(&mut self, i: usize) {
        self.reply[i] = true;
    }

    /// One `sendmmsg` for the replies of slots `0..n`; what the kernel does not take at once
    /// is sent one by one.
    fn send(&mut self, sock: &std::net::UdpSocket, n: usize) {
        // SAFETY: all-zero iovec and mmsghdr are valid (null pointers, zero lengths); the
        // first `m` are filled below before the kernel reads them.
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let mut m = 0;
        for i in 0..n {
            if !self.reply[i] {
                continue;
            }
            iovs[m] = libc::iovec {
                iov_base: self.outs[i].as_mut_ptr().cast(),
                iov_len: self.outs[i].len(),
            };
            hdrs[m].msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[m].msg_hdr.msg_namelen = self.addr_lens[i];
            hdrs[m].msg_hdr.msg_iov = &mut iovs[m];
            hdrs[m].msg_hdr.msg_iovlen = 1;
            m += 1;
        }
        let mut sent = 0usize;
        while sent < m {
            // SAFETY: headers point at live reply buffers and addresses owned by `self`.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    hdrs[sent..].as_mut_ptr(),
                    (m - sent) as libc::c_uint,
                    0,
                )
            };
            if r <= 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Skip the datagram that failed (e.g. an unreachable client) and go on.
                tracing::debug!(error = %e, "udp sendmmsg");
                sent += 1;
                continue;
            }
            sent += r as usize;
        }
    }
}

/// The source address the kernel wrote into a slot (`len` bytes, recvmmsg's `msg_namelen`),
/// read through socket2 (which checks the family and does the byte order).
fn sockaddr_to_std(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let mut storage = socket2::SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_storage` is one of this platform's `sockaddr_*` types (view_as's
    // contract); the storage is socket2's repr(transparent) wrapper of it.
    unsafe { *storage.view_as::<libc::sockaddr_storage>() = *ss };
    // SAFETY: the kernel initialised `len` bytes of a socket address in it, at most the
    // storage's size (it was offered that much as msg_namelen).
    let addr = unsafe { socket2::SockAddr::new(storage, len) };
    addr.as_socket()
}
