//! The DNS server: sockets and protocol.
