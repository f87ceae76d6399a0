//! libFuzzer entry for [`kpool_fuzz::kafka_response`]; `scripts/fuzz` runs it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kpool_fuzz::kafka_response(data));
