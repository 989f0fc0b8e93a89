//! Zone transfer metrics (`clusterdns_transfer*`, `clusterdns_notify_total`, the journal and
//! the zone serial), registered with the rest; every label takes a few fixed values (`to`:
//! the secondaries of the config).

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry};

use super::{TIME_BUCKETS, counter, counter_vec, gauge, histogram_vec};

/// What was asked: `type` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    Axfr,
    Ixfr,
}

const KINDS: [&str; 2] = ["axfr", "ixfr"];

/// What came of it: `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferResult {
    /// The whole zone was sent.
    Full,
    /// The differences since the secondary's serial were sent.
    Incremental,
    /// The secondary is current (or ahead): one SOA.
    Current,
    /// Not allowed (address, or unsigned where a key is required).
    Refused,
    /// TSIG failed (unknown key, bad signature, clock skew).
    NotAuth,
    /// Nothing to serve yet, or too many transfers at once.
    ServFail,
    /// A malformed request (AXFR over UDP, IXFR without the secondary's SOA).
    FormErr,
    /// The connection broke or the secondary stopped reading part way.
    Broken,
}

const RESULTS: [&str; 8] = [
    "full",
    "incremental",
    "current",
    "refused",
    "notauth",
    "servfail",
    "formerr",
    "broken",
];

/// The handles, resolved once.
pub struct TransferMetrics {
    results: [[IntCounter; 8]; 2],
    messages: IntCounter,
    bytes: IntCounter,
    in_progress: IntGauge,
    duration: [Histogram; 2],
    notify: IntCounterVec,
    journal_entries: IntGauge,
    journal_bytes: IntGauge,
    serial: IntGauge,
}

impl TransferMetrics {
    pub(super) fn new(r: &Registry) -> TransferMetrics {
        let results = counter_vec(
            r,
            "clusterdns_transfers_total",
            "Zone transfer requests (AXFR, IXFR) by type and what was answered.",
            &["type", "result"],
        );
        let duration: HistogramVec = histogram_vec(
            r,
            "clusterdns_transfer_duration_seconds",
            "Time to send a zone transfer, from the request to the last message written.",
            &["type"],
            &TIME_BUCKETS,
        );
        TransferMetrics {
            results: KINDS.map(|k| RESULTS.map(|res| results.with_label_values(&[k, res]))),
            messages: counter(
                r,
                "clusterdns_transfer_messages_total",
                "Messages sent in zone transfers.",
            ),
            bytes: counter(
                r,
                "clusterdns_transfer_bytes_total",
                "Bytes sent in zone transfers (messages without their TCP length prefix).",
            ),
            in_progress: gauge(
                r,
                "clusterdns_transfers_in_progress",
                "Zone transfers being sent now.",
            ),
            duration: KINDS.map(|k| duration.with_label_values(&[k])),
            notify: counter_vec(
                r,
                "clusterdns_notify_total",
                "NOTIFY messages sent to secondaries, by secondary and outcome (ok, rcode, timeout, error).",
                &["to", "result"],
            ),
            journal_entries: gauge(
                r,
                "clusterdns_transfer_journal_entries",
                "Differences between serials held for IXFR.",
            ),
            journal_bytes: gauge(
                r,
                "clusterdns_transfer_journal_bytes",
                "Bytes of records held in the IXFR journal.",
            ),
            serial: gauge(
                r,
                "clusterdns_zone_serial",
                "The SOA serial of the zone offered for transfer (the newest synced snapshot).",
            ),
        }
    }

    /// One request answered (the result known).
    pub fn result(&self, kind: TransferKind, result: TransferResult) {
        self.results[kind as usize][result as usize].inc();
    }

    /// A transfer starts streaming; [`Self::finished`] when it ends.
    pub fn started(&self) {
        self.in_progress.inc();
    }

    pub fn finished(&self, kind: TransferKind, duration: std::time::Duration) {
        self.in_progress.dec();
        self.duration[kind as usize].observe(duration.as_secs_f64());
    }

    /// One message of a transfer sent.
    pub fn message(&self, bytes: usize) {
        self.messages.inc();
        self.bytes.inc_by(bytes as u64);
    }

    /// A NOTIFY to `to` ended with `result` (`ok`, `rcode`, `timeout`, `error`).
    pub fn notify(&self, to: &str, result: &str) {
        self.notify.with_label_values(&[to, result]).inc();
    }

    /// The journal after a publish.
    pub fn journal(&self, entries: usize, bytes: usize, serial: u32) {
        self.journal_entries.set(entries as i64);
        self.journal_bytes.set(bytes as i64);
        self.serial.set(serial as i64);
    }
}
