//! cargo-fuzz target `list_page`: the logic and its invariants live in
//! `clusterdns::fuzzing::list_page`, which `cargo test` also runs on every corpus file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clusterdns::fuzzing::list_page(data));
