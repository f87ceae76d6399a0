//! libFuzzer entry for [`kpool_fuzz::admission`]; `scripts/fuzz` runs it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kpool_fuzz::admission(data));
