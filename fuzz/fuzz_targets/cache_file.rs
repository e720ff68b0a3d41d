#![no_main]
//! `yurthub::fuzz::cache_file` under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| yurthub::fuzz::cache_file(data));
