//! cargo-fuzz target `objects_file`: the logic and its invariants live in
//! `clusterdns::fuzzing::objects_file`, which `cargo test` also runs on every corpus file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clusterdns::fuzzing::objects_file(data));
