//! The DNS server: sockets and protocol, no Kubernetes types.
//!
//! - [`handler`]: the request router ([`handler::Engine`]) shared by all transports.
//! - [`udp`]: clusterdns's own UDP loop, one `SO_REUSEPORT` socket per worker, answering from
//!   the snapshot without spawning a task; only forwarded queries become tasks.
//! - [`tcp`]: TCP (and UDP when the fast path is off) through hickory-server's `Server`, with
//!   our `RequestHandler`.

pub mod handler;
pub mod tcp;
pub mod udp;

pub use handler::{Engine, Facts, Local, Pending, QueryLogger, Upstream};

/// The engine in force: replaced as a whole on a config reload, so a query sees either the old
/// settings or the new ones, never a mix, and none is lost in between.
pub type SharedEngine = std::sync::Arc<arc_swap::ArcSwap<Engine>>;
