//! The one integration-test binary: the real `clusterdns` binary on loopback, real clients.

mod alerts_e2e;
mod apiserver;
mod config_reference;
mod corefile;
mod differential;
mod dual_stack;
mod forward;
mod forward_edns;
mod forward_loop;
mod kube;
mod kube_dns;
mod layers;
mod manifests;
mod netns;
mod nodelocal;
mod ops;
mod ops_e2e;
mod prom;
mod readme;
mod reload;
mod serve_forward;
mod support;
mod wire_hostile;
mod wire_large;
mod xfr_secondaries;
mod zone_dig;
