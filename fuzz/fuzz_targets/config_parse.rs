//! Configuration parsing: any text is a config or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = sluice::config::Config::from_yaml(text) {
            assert!(!e.to_string().is_empty());
        }
    }
});
