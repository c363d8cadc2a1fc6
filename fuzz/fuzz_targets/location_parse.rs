//! URI parsing: never panics; what is accepted is plain and stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::location::{DefaultScheme, Location};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let default = DefaultScheme::parse("memory://default/base/").unwrap();
    for dir in [false, true] {
        let parsed = if dir {
            Location::resolve_dir(raw, &default)
        } else {
            Location::resolve(raw, &default)
        };
        let Ok(location) = parsed else { continue };
        assert!(!location.path.chars().any(char::is_control));
        if !location.path.is_empty() {
            assert!(
                location
                    .path
                    .split('/')
                    .all(|s| !matches!(s, "" | "." | ".."))
            );
        }
        let again = if dir {
            Location::resolve_dir(&location.to_string(), &default)
        } else {
            Location::resolve(&location.to_string(), &default)
        };
        assert_eq!(again.unwrap(), location);
    }
    let _ = DefaultScheme::parse(raw);
});
