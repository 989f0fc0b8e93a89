//! DNS messages for the tests, built and decoded with hickory-proto: queries as clients send
//! them, one exchange over UDP or TCP, and the parts of a reply the tests look at.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};
use hickory_proto::serialize::binary::BinEncodable as _;

/// A query as a stub resolver sends it: RD set, the name's case kept, an OPT record with
/// `edns` as the UDP payload size when given. `qtype` is a `RecordType` or its number.
pub(crate) fn query(
    name: &str,
    qtype: impl Into<RecordType>,
    id: u16,
    edns: Option<u16>,
) -> Vec<u8> {
    query_rd(name, qtype, id, true, edns)
}

/// [`query`] with the RD bit of the caller's choice: `query_rd(name, qtype, id, rd, edns)`.
pub(crate) use clusterdns::testkit::query as query_rd;

/// A name in uncompressed wire form.
pub(crate) fn name_wire(name: &str) -> Vec<u8> {
    clusterdns::testkit::name(name)
        .to_bytes()
        .expect("encodable name")
}

/// Decode a reply; a reply hickory cannot decode fails the test, bytes shown.
pub(crate) fn decode(b: &[u8]) -> Message {
    Message::from_vec(b).unwrap_or_else(|e| panic!("undecodable reply ({e}): {b:02x?}"))
}

/// One query over UDP from a fresh loopback socket; `None` when nothing comes back in 2 s.
pub(crate) fn udp_exchange(addr: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(msg, addr).unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Several queries pipelined on one TCP connection; the replies in the order they came.
pub(crate) fn tcp_exchange(addr: SocketAddr, msgs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    for m in msgs {
        let mut framed = (m.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(m);
        s.write_all(&framed).unwrap();
    }
    let mut out = Vec::new();
    for _ in msgs {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).unwrap();
        out.push(buf);
    }
    out
}

/// The A addresses in a reply's answer section, in order.
pub(crate) fn a_addrs(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// The TTLs of the answer and authority sections, in order.
pub(crate) fn ttls(m: &Message) -> Vec<u32> {
    m.answers
        .iter()
        .chain(m.authorities.iter())
        .map(|r| r.ttl)
        .collect()
}
