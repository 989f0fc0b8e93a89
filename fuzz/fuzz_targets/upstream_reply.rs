//! cargo-fuzz target `upstream_reply`: the logic and its invariants live in
//! `clusterdns::fuzzing::upstream_reply`, which `cargo test` also runs on every corpus file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clusterdns::fuzzing::upstream_reply(data));
