//! Fuzz target: CRIU's RPC messages, as `decoders::criu_rpc` (fuzz/decoders.rs) says;
//! the integration tests run the same code on the committed corpus.

#![no_main]

#[allow(dead_code)]
#[path = "../decoders.rs"]
mod decoders;

libfuzzer_sys::fuzz_target!(|data: &[u8]| decoders::criu_rpc::run(data));
