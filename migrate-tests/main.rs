//! Integration tests: real containers, as root. Each test uses its own
//! state root and removes everything it created when it ends, pass or fail.

mod bench_smoke;
mod checkpoint;
mod common;
mod fuzz_corpus;
mod migration;
mod network;
mod oci;
mod programs;
mod reliability;
mod runtime;
mod upgrade;
