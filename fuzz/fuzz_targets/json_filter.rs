#![no_main]
//! `yurthub::fuzz::json_filter` under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| yurthub::fuzz::json_filter(data));
