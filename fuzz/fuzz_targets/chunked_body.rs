#![no_main]
//! `yurthub::fuzz::chunked_body` under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| yurthub::fuzz::chunked_body(data));
