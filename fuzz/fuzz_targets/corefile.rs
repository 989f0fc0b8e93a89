//! cargo-fuzz target `corefile`: the logic and its invariants live in
//! `clusterdns::fuzzing::corefile`, which `cargo test` also runs on every corpus file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clusterdns::fuzzing::corefile(data));
