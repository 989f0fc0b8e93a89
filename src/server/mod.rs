//! The DNS server: sockets and protocol, no Kubernetes types.
//!
//! - [`handler`]: the request router ([`handler::Engine`]) shared by all transports: one parse
//!   per query ([`crate::wire::Query`]), handed on to the zone and the resolver.
//! - [`udp`]: clusterdns's own UDP loop, one `SO_REUSEPORT` socket per worker, answering from
//!   the snapshot without spawning a task; only forwarded queries become tasks.
//! - [`tcp`]: clusterdns's own TCP accept loop and connections (RFC 7766 framing, pipelined
//!   queries answered as they complete, idle timeout); the engine's bytes are sent unchanged.
//! - [`rrl`]: per-client response rate limiting, decided per query before any work.
//! - [`listen`]: binding the listen addresses, one socket per address family.
//! - [`shape`]: answer shaping between the sockets and the zone/resolver: CoreDNS's `rewrite`,
//!   `autopath`, `template`, `k8s_external`, and the AAAA filter for forwarded names.

pub mod handler;
pub mod listen;
pub mod rrl;
pub mod shape;
pub mod tcp;
pub mod udp;

pub use crate::observe::QueryLogger;
pub use handler::{Admission, Engine, Facts, ForwardSlot, Local, Pending, Resolved, Upstream};

/// The engine in force: replaced as a whole on a config reload, so a query sees either the old
/// settings or the new ones, never a mix, and none is lost in between.
pub type SharedEngine = std::sync::Arc<arc_swap::ArcSwap<Engine>>;
