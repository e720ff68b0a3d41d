#![no_main]
//! `yurthub::fuzz::kubeconfig` under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| yurthub::fuzz::kubeconfig(data));
