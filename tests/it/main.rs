//! The one integration-test binary: the real `clusterdns` binary on loopback, real clients.

mod alerts_e2e;
mod apiserver;
mod corefile;
mod differential;
mod forward;
mod kube;
mod kube_dns;
mod manifests;
mod objects_file;
mod ops;
mod ops_e2e;
mod prom;
mod reload;
mod serve_forward;
mod support;
mod zone_dig;
