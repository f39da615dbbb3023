#![no_main]
// The property lives in smarthost::fuzzing::header_rewrite, shared with the stable tests.
libfuzzer_sys::fuzz_target!(|data: &[u8]| smarthost::fuzzing::header_rewrite(data));
