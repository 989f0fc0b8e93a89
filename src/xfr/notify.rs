//! NOTIFY (RFC 1996): tell the secondaries a new serial is there, so they refresh at once
//! instead of at the SOA's refresh interval.
//!
//! One task per secondary in `transfer.notify`, waking on each new serial of the journal. For
//! each zone offered it sends a NOTIFY (opcode 4, AA, the zone's SOA question, the new SOA in
//! the answer section as §3.7 allows, signed when a TSIG key is configured) and waits for the
//! reply (§4.7: the secondary answers with the same ID and opcode). Coalesced: at most one
//! NOTIFY is in flight per secondary; serials published meanwhile are folded into the next one
//! (it carries the newest). Retried with backoff (1 s, doubling, 5 tries; §3.6 leaves the
//! intervals to the primary) when no reply comes, then left until the next serial (the
//! secondary's own refresh timer still runs). Any reply ends the retries: a secondary that
//! answers NOTAUTH or REFUSED is not waiting for this zone, and asking again will not change
//! that (it is logged and counted).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::tsig;
use crate::ops::metrics::Metrics;
use crate::wire::{self, CLASS_IN, rtype};
use crate::zone::xfr::Journal;
use crate::zone::xfr::records::{self, TransferZone};

/// RFC 1996 §3.1: the NOTIFY opcode.
pub const OPCODE_NOTIFY: u8 = 4;
/// Tries per NOTIFY, and the first wait for a reply (doubling after each try).
const TRIES: u32 = 5;
const FIRST_WAIT: Duration = Duration::from_secs(1);

/// Start one NOTIFY task per secondary, counting into `metrics`; they end when the journal is
/// dropped.
pub fn spawn(
    journal: Arc<Journal>,
    targets: Vec<SocketAddr>,
    key: Option<Arc<tsig::Key>>,
    metrics: Arc<Metrics>,
) {
    for target in targets {
        tokio::spawn(notify_loop(
            journal.clone(),
            target,
            key.clone(),
            metrics.clone(),
        ));
    }
}

async fn notify_loop(
    journal: Arc<Journal>,
    target: SocketAddr,
    key: Option<Arc<tsig::Key>>,
    metrics: Arc<Metrics>,
) {
    let mut serials = journal.serials();
    let label = target.to_string();
    // Per zone, the serial the secondary last acknowledged (or that its tries ran out with):
    // a zone already told of the newest serial is not told again (a serial published during
    // one zone's NOTIFY is folded into it, and the next round skips that zone).
    let apexes = journal.apexes().to_vec();
    let mut told: Vec<Option<u32>> = vec![None; apexes.len()];
    let bind: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%target, error = %e, "NOTIFY: cannot open a socket");
            return;
        }
    };
    loop {
        // Wait for a serial some zone has not been told of.
        loop {
            let s = *serials.borrow_and_update();
            if s.is_some() && told.iter().any(|t| *t != s) {
                break;
            }
            if serials.changed().await.is_err() {
                return;
            }
        }
        for (i, apex) in apexes.iter().enumerate() {
            if told[i].is_some() && told[i] == *serials.borrow() {
                continue;
            }
            let (outcome, sent) = notify_zone(&sock, &journal, apex, target, key.as_deref()).await;
            metrics.transfer().notify(&label, outcome);
            told[i] = sent;
        }
    }
}

/// Send NOTIFY for one zone until a reply comes or the tries run out; the outcome for the
/// metrics (`ok`, `rcode`, `timeout`, `error`), and the serial of the last try (None: none sent).
async fn notify_zone(
    sock: &UdpSocket,
    journal: &Journal,
    apex: &[u8],
    target: SocketAddr,
    key: Option<&tsig::Key>,
) -> (&'static str, Option<u32>) {
    let mut wait = FIRST_WAIT;
    let mut sent = None;
    let mut buf = vec![0u8; 4096];
    for attempt in 1..=TRIES {
        // Each try carries the newest serial (a serial published meanwhile is folded in).
        let Some(snap) = journal.current() else {
            return ("error", sent);
        };
        let Some(zone) = TransferZone::of(&snap, apex) else {
            return ("error", sent);
        };
        sent = Some(snap.serial);
        let id: u16 = fastrand::u16(..);
        let mut msg = message(id, &snap, &zone);
        let mac = key.map(|k| tsig::sign_request(k, &mut msg, tsig::now()));
        if let Err(e) = sock.send_to(&msg, target).await {
            tracing::debug!(%target, error = %e, "NOTIFY send");
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let r = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await;
            let (n, from) = match r {
                Err(_) => {
                    tracing::debug!(%target, zone = %wire::display_name(apex), attempt, ?wait, "NOTIFY not answered in time; trying again");
                    break;
                }
                Ok(Err(e)) => {
                    // ICMP unreachable from an earlier send shows up here: the secondary is
                    // not listening (yet); wait out the interval and try again.
                    tracing::debug!(%target, error = %e, "NOTIFY receive");
                    tokio::time::sleep_until(deadline).await;
                    break;
                }
                Ok(Ok(x)) => x,
            };
            let reply = &buf[..n];
            if from != target || !is_reply_to(reply, id, &msg) {
                continue;
            }
            if let (Some(k), Some(mac)) = (key, &mac) {
                let signed = matches!(tsig::find(reply), Ok(Some(ref rec)) if tsig::verify_reply(k, reply, rec, mac, tsig::now()));
                if !signed && wire::rcode_of(reply) == wire::rcode::NOERROR {
                    // An unsigned (or forged) acknowledgement of a signed NOTIFY: not taken.
                    tracing::debug!(%target, zone = %wire::display_name(apex), "NOTIFY reply without a valid TSIG: not taken");
                    continue;
                }
            }
            let code = wire::rcode_of(reply);
            if code != wire::rcode::NOERROR {
                tracing::info!(%target, zone = %wire::display_name(apex), rcode = code, "NOTIFY refused by the secondary");
                return ("rcode", sent);
            }
            tracing::debug!(%target, zone = %wire::display_name(apex), serial = snap.serial, attempt, "NOTIFY acknowledged");
            return ("ok", sent);
        }
        wait *= 2;
    }
    tracing::info!(%target, zone = %wire::display_name(apex), "NOTIFY not answered; the secondary will refresh on its own timer");
    ("timeout", sent)
}

/// A NOTIFY for `zone` at `snap`'s serial: header (opcode 4, AA), the question `<zone> SOA IN`,
/// the SOA in the answer section.
pub fn message(id: u16, snap: &crate::zone::snapshot::Snapshot, zone: &TransferZone) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(&id.to_be_bytes());
    m.push(OPCODE_NOTIFY << 3 | 0x04);
    m.push(0);
    m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]);
    m.extend_from_slice(&zone.apex);
    m.extend_from_slice(&rtype::SOA.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    let soa = records::soa(snap, zone, snap.serial);
    m.extend_from_slice(&[0xC0, 12]);
    m.extend_from_slice(&soa.rtype.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    m.extend_from_slice(&soa.ttl.to_be_bytes());
    m.extend_from_slice(&(soa.rdata.len() as u16).to_be_bytes());
    m.extend_from_slice(&soa.rdata);
    m
}

/// Whether `reply` answers the NOTIFY `sent`: same ID, QR set, opcode NOTIFY, same question.
fn is_reply_to(reply: &[u8], id: u16, sent: &[u8]) -> bool {
    let q_end =
        wire::HEADER_LEN + wire::name::uncompressed_len(&sent[wire::HEADER_LEN..]).unwrap_or(0) + 4;
    reply.len() >= q_end
        && wire::u16_at(reply, 0) == id
        && reply[2] & 0x80 != 0
        && (reply[2] >> 3) & 0x0F == OPCODE_NOTIFY
        && (wire::u16_at(reply, 4) == 0
            || reply[wire::HEADER_LEN..q_end].eq_ignore_ascii_case(&sent[wire::HEADER_LEN..q_end]))
}
