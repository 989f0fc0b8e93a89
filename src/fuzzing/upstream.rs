//! A hostile upstream on loopback, for the `upstream_reply` target: the resolver forwards a
//! client's query to it over real UDP/TCP sockets, and it answers with the fuzzer's bytes.
//!
//! After the hostile reply it always sends a well-formed REFUSED (the *closer*): a resolver that
//! rightly ignores the hostile bytes takes the closer at once instead of waiting for its
//! timeout, so every input runs in microseconds and the outcome says which reply was taken.

use std::net::SocketAddr;

use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::runtime::Runtime;

use super::check;

/// REFUSED, the closer's rcode.
const REFUSED: u8 = 5;

/// How one input drives the exchange: the control byte, then the reply template.
///
/// | control bits | meaning |
/// |---|---|
/// | 0-1 | which client query ([`client_query`]) |
/// | 2 | the client came over TCP (limit 65535, forwarded over TCP first) |
/// | 3 | the reply carries a wrong ID |
/// | 4-5 | the question: 0 the template's own; 1 the query's; 2 the query's with case swapped; 3 the query's with QR and QDCOUNT=1 forced |
/// | 6 | over TCP, the length prefix claims 7 bytes more than are sent, then the connection closes |
/// | 7 | over UDP, the datagram is padded with zeros to 4096 bytes (a full receive buffer) |
#[derive(Debug, Clone, Copy)]
pub(super) struct Spec<'a> {
    control: u8,
    template: &'a [u8],
}

impl<'a> Spec<'a> {
    pub(super) fn parse(data: &'a [u8]) -> Option<Spec<'a>> {
        let (&control, template) = data.split_first()?;
        Some(Spec { control, template })
    }

    /// The client came over TCP.
    pub(super) fn client_tcp(&self) -> bool {
        self.control & 0x04 != 0
    }

    /// The reply to the forwarded `query` as sent over UDP: [`Spec::reply_to`], padded when
    /// the control byte says so.
    pub(super) fn udp_reply_to(&self, query: &[u8]) -> Vec<u8> {
        let mut r = self.reply_to(query);
        if self.control & 0x80 != 0 && r.len() < 4096 {
            r.resize(4096, 0);
        }
        r
    }

    /// The reply to the forwarded `query`, built from the template (as sent over TCP).
    pub(super) fn reply_to(&self, query: &[u8]) -> Vec<u8> {
        let t = self.template;
        let mut r = match (self.control >> 4) & 3 {
            0 => t.to_vec(),
            mode => {
                let mut r = t[..t.len().min(12)].to_vec();
                r.resize(12, 0);
                let mut question = check::question_bytes(query).to_vec();
                if mode == 2 {
                    for b in &mut question {
                        if b.is_ascii_alphabetic() {
                            *b ^= 0x20;
                        }
                    }
                }
                if mode == 3 {
                    r[2] |= 0x80;
                    r[4..6].copy_from_slice(&[0, 1]);
                }
                r.extend_from_slice(&question);
                r.extend_from_slice(t.get(12..).unwrap_or_default());
                r
            }
        };
        if r.len() >= 2 {
            let mut id = [query[0], query[1]];
            if self.control & 0x08 != 0 {
                id[0] ^= 0x5A;
                id[1] ^= 0xA5;
            }
            r[..2].copy_from_slice(&id);
        }
        r
    }
}

/// The four client queries: plain, EDNS with DO, CD with an odd payload size, and a DNS cookie
/// (which the resolver strips before forwarding).
pub(super) fn client_query(which: u8, id: u16, swap_case: bool) -> Vec<u8> {
    let (name, qtype, cd, edns): (&str, RecordType, bool, Option<(u16, bool, &[u8])>) =
        match which & 3 {
            0 => ("www.Example.COM.", RecordType::A, false, None),
            1 => (
                "example.org.",
                RecordType::AAAA,
                false,
                Some((4096, true, &[])),
            ),
            2 => (
                "_sip._udp.Voip.example.",
                RecordType::SRV,
                true,
                Some((700, false, &[])),
            ),
            _ => (
                "mail.example.net.",
                RecordType::MX,
                false,
                Some((1400, false, &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8])),
            ),
        };
    let name: String = if swap_case {
        name.chars()
            .map(|c| {
                if c.is_ascii_uppercase() {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                }
            })
            .collect()
    } else {
        name.into()
    };
    let name = Name::from_ascii(&name).expect("static name");
    check::build_query(id, &name, qtype, cd, edns)
}

/// The closer: REFUSED, question echoed, same ID.
fn closer(query: &[u8]) -> Vec<u8> {
    let mut r = query[..12].to_vec();
    r[2] = 0x80 | (query[2] & 0x79);
    r[3] = REFUSED;
    r[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    r.extend_from_slice(check::question_bytes(query));
    r
}

/// The upstream's sockets (UDP and TCP on one loopback port) and the runtime they live on.
pub(super) struct Hostile {
    pub(super) rt: Runtime,
    udp: UdpSocket,
    tcp: TcpListener,
    pub(super) addr: SocketAddr,
}

impl Hostile {
    pub(super) fn bind() -> Hostile {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (udp, tcp) = rt.block_on(async {
            for _ in 0..100 {
                let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
                let addr = udp.local_addr().expect("local addr");
                if let Ok(tcp) = TcpListener::bind(addr).await {
                    return (udp, tcp);
                }
            }
            panic!("no loopback port free for both UDP and TCP");
        });
        let addr = udp.local_addr().expect("local addr");
        Hostile { rt, udp, tcp, addr }
    }

    /// Forget datagrams a previous input left behind.
    pub(super) fn drain(&self) {
        let mut buf = [0u8; 4096];
        while self.udp.try_recv_from(&mut buf).is_ok() {}
    }

    /// Answer every query that arrives, forever (the caller stops polling when the client is
    /// done). Returns nothing: dropped when the exchange is over.
    pub(super) async fn serve(&self, spec: Spec<'_>) {
        let udp = async {
            let mut buf = vec![0u8; 65535];
            loop {
                let Ok((n, from)) = self.udp.recv_from(&mut buf).await else {
                    continue;
                };
                let query = &buf[..n];
                if n < 12 || check::Sent::read(query).is_none() {
                    continue;
                }
                let _ = self.udp.send_to(&spec.udp_reply_to(query), from).await;
                let _ = self.udp.send_to(&closer(query), from).await;
            }
        };
        let tcp = async {
            let mut conns = futures::stream::FuturesUnordered::new();
            loop {
                tokio::select! {
                    Ok((s, _)) = self.tcp.accept() => conns.push(serve_tcp(s, spec)),
                    Some(()) = futures::StreamExt::next(&mut conns) => {}
                }
            }
        };
        tokio::join!(udp, tcp);
    }
}

/// One TCP connection: each framed query gets the hostile reply and the closer.
async fn serve_tcp(mut s: TcpStream, spec: Spec<'_>) {
    loop {
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if s.read_exact(&mut query).await.is_err() || query.len() < 12 {
            return;
        }
        let r = spec.reply_to(&query);
        let r = &r[..r.len().min(65535)];
        let lie = spec.control & 0x40 != 0;
        let claimed = if lie {
            (r.len() + 7).min(65535)
        } else {
            r.len()
        };
        let mut framed = (claimed as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(r);
        if s.write_all(&framed).await.is_err() {
            return;
        }
        if lie {
            return;
        }
        let c = closer(&query);
        let mut framed = (c.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&c);
        if s.write_all(&framed).await.is_err() {
            return;
        }
    }
}

impl Spec<'_> {
    /// Which of the four client queries to send.
    pub(super) fn which_query(&self) -> u8 {
        self.control & 3
    }
}
