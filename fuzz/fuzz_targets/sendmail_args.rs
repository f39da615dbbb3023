#![no_main]
// The property lives in smarthost::fuzzing::sendmail_args, shared with the stable tests.
libfuzzer_sys::fuzz_target!(|data: &[u8]| smarthost::fuzzing::sendmail_args(data));
