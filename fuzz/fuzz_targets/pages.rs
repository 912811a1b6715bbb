//! Fuzz target: the page store reader, as `decoders::pages` (fuzz/decoders.rs) says;
//! the integration tests run the same code on the committed corpus.

#![no_main]

#[allow(dead_code)]
#[path = "../decoders.rs"]
mod decoders;

libfuzzer_sys::fuzz_target!(|data: &[u8]| decoders::pages::run(data));
