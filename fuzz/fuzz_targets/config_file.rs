//! cargo-fuzz target `config_file`: the logic and its invariants live in
//! `clusterdns::fuzzing::config_file`, which `cargo test` also runs on every corpus file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clusterdns::fuzzing::config_file(data));
