//! libFuzzer entry for [`kpool_fuzz::policy`]; `scripts/fuzz` runs it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kpool_fuzz::policy(data));
