#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| authgate_fuzz::check_path_normalise(data));
