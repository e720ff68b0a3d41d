#![no_main]
//! `yurthub::fuzz::request_info` under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| yurthub::fuzz::request_info(data));
