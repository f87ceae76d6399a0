//! libFuzzer entry for [`kpool_fuzz::kafka_exchange`]; `scripts/fuzz` runs it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kpool_fuzz::kafka_exchange(data));
