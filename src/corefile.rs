//! Converting a CoreDNS Corefile into a clusterdns config (`clusterdns convert-corefile`).
