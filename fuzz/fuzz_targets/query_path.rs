//! cargo-fuzz target `query_path`: the logic and its invariants live in
//! `clusterdns::fuzzing::query_path`, which `cargo test` also runs on every corpus file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clusterdns::fuzzing::query_path(data));
