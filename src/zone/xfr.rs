//! The zone side of zone transfers: the zones as sets of records ([`records`]), and the
//! journal of differences between published snapshots that IXFR answers from ([`journal`]).
//!
//! A transferred zone holds exactly what [`super::answer`] answers for names that exist in it,
//! record for record (a test asks the answer path for every name and type of every record it
//! generates): the apex SOA and NS (with the address of `ns.dns.<zone>`), `dns-version`, and
//! per service its A/AAAA, SRV (the service's and per named port), the endpoints' own names,
//! the CNAME of an ExternalName; PTR records in the reverse zones offered; pod records only in
//! `pods: verified` mode. In `insecure` mode every well-formed `a-b-c-d.<ns>.pod.<zone>` name
//! answers with the address it spells: names synthesised from the query, not records that
//! could be listed, so they are left out (a secondary answers NXDOMAIN for them).
//!
//! Names clusterdns answers without holding records for them are not in the zone either:
//! empty non-terminals (`svc.<zone>`, `<ns>.svc.<zone>`) exist on a secondary only when a name
//! lies below them, and alternative spellings (`http.tcp.<svc>...` without underscores) are not
//! listed.

pub mod journal;
pub mod records;
#[cfg(test)]
mod tests;

pub use journal::{Journal, JournalLimits, Plan, Step};
pub use records::{Rr, TransferZone};
