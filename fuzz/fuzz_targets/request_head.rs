#![no_main]
//! `yurthub::fuzz::request_head` under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| yurthub::fuzz::request_head(data));
