//! Names outside the cluster zones: hosts file, cache, forwarding to upstreams.
