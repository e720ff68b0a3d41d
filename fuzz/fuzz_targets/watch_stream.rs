#![no_main]
//! `yurthub::fuzz::watch_stream` under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| yurthub::fuzz::watch_stream(data));
