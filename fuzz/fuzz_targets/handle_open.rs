//! Handle decoding: whatever the bytes, `open` returns (never panics), and
//! nothing but a handle this key sealed is accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::handle::HandleKeys;

fuzz_target!(|data: &[u8]| {
    let keys = HandleKeys::new(vec![7; 32], Some("fuzz".into()));
    if let Ok(body) = keys.open(data) {
        // Only a sealed handle verifies; sealing it again must verify too.
        assert_eq!(keys.open(&keys.seal(&body)).unwrap(), body);
    }
});
