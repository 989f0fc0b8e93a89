//! The one integration-test binary: the real `clusterdns` binary on loopback, real clients.

mod support;
mod differential;
mod serve_forward;
mod kube_dns;
mod reload;
mod ops_e2e;
mod alerts_e2e;
mod zone_dig;
mod corefile;
mod apiserver;
mod kube;
mod ops;
mod prom;
mod forward;
mod manifests;
