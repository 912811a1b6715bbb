//! Fuzz target: pre-copy batches, as `decoders::precopy` (fuzz/decoders.rs) says;
//! the integration tests run the same code on the committed corpus.

#![no_main]

#[allow(dead_code)]
#[path = "../decoders.rs"]
mod decoders;

libfuzzer_sys::fuzz_target!(|data: &[u8]| decoders::precopy::run(data));
