//! Property tests of the three parsers that take hostile input: handle
//! decoding, URI parsing and configuration parsing. The same entry points
//! are the cargo-fuzz targets in `fuzz/` (see README, "Security"); here each
//! property runs a bounded number of cases in the normal suite.

use proptest::prelude::*;
use sluice::config::Config;
use sluice::handle::HandleKeys;
use sluice::location::{DefaultScheme, Location};
use sluice::proto::{FileStaging, HandleBody, handle_body};

fn keys() -> HandleKeys {
    HandleKeys::new(vec![7; 32], Some("prop".into()))
}

prop_compose! {
    fn bodies()(
        kind in 0i32..4,
        target in "\\PC{0,40}",
        position in any::<u64>(),
        crc32c in any::<u32>(),
        staging_id in "\\PC{0,20}",
        epoch in any::<u64>(),
        temp in proptest::option::of("\\PC{0,30}"),
        principal in "[a-z]{0,8}",
    ) -> HandleBody {
        HandleBody {
            kind,
            target,
            position,
            crc32c,
            staging_id,
            epoch,
            generation: epoch.rotate_left(17),
            session_id: String::new(),
            principal,
            staging: temp.map(|temp_path| handle_body::Staging::File(FileStaging { temp_path })),
        }
    }
}

/// Paths shaped like URIs, with the characters that matter to a parser
/// (dots, slashes, '@', '?', '%', NUL, newlines, non-ASCII), plus noise.
fn paths() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => "\\PC{0,60}",
        1 => any::<String>(),
        3 => "(file:///|memory://[a-z]{1,5}/|/)[a-z]{1,4}(/[a-z0-9.\u{0430}%-]{1,5}){0,5}",
        2 => "(file|memory|s3|S3|gs|abfss|1x|)(://|:/|:|)[a-z@.:%]{0,10}(/([a-z]{1,3}|\\.|\\.\\.|%2e|\u{0430}|\u{0000}|\n|)){0,6}/?(\\?[a-z=]{0,4})?",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random bytes are never a handle, and never a panic.
    #[test]
    fn noise_is_never_a_handle(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        prop_assert!(keys().open(&bytes).is_err());
    }

    /// What the gateway seals it opens again, identical; any changed byte
    /// or shortened handle is refused.
    #[test]
    fn sealed_handles_round_trip_and_resist_tampering(
        body in bodies(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        cut in any::<prop::sample::Index>(),
    ) {
        let keys = keys();
        let sealed = keys.seal(&body);
        prop_assert_eq!(keys.open(&sealed).unwrap(), body);
        let mut tampered = sealed.clone();
        let i = at.index(tampered.len());
        tampered[i] ^= flip;
        prop_assert!(keys.open(&tampered).is_err(), "byte {} changed unnoticed", i);
        let n = cut.index(sealed.len());
        prop_assert!(keys.open(&sealed[..n]).is_err(), "cut to {} accepted", n);
    }

    /// Parsing never panics; what it accepts is plain (no dot or empty
    /// segment, no control character, no query), and prints to a URI that
    /// parses back to the same location.
    #[test]
    fn accepted_paths_are_plain_and_stable(raw in paths(), dir in any::<bool>()) {
        let default = DefaultScheme::parse("memory://default/base/").unwrap();
        let parsed = if dir {
            Location::resolve_dir(&raw, &default)
        } else {
            Location::resolve(&raw, &default)
        };
        if let Ok(location) = parsed {
            prop_assert!(!location.path.chars().any(char::is_control));
            prop_assert!(!location.path.contains(['?', '#']));
            if !location.path.is_empty() {
                for segment in location.path.split('/') {
                    prop_assert!(!matches!(segment, "" | "." | ".."), "segment {:?} in {:?}", segment, location);
                }
            }
            let again = if dir {
                Location::resolve_dir(&location.to_string(), &default)
            } else {
                Location::resolve(&location.to_string(), &default)
            };
            prop_assert_eq!(again.unwrap(), location);
        }
    }

    /// Any YAML text: a config or an error that says why, never a panic.
    #[test]
    fn any_yaml_is_a_config_or_an_error(text in "\\PC{0,200}") {
        if let Err(e) = Config::from_yaml(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    /// Known keys with arbitrary values: every rejection is an
    /// INVALID_ARGUMENT-class error naming the problem, never a panic.
    #[test]
    fn known_keys_with_any_values_never_panic(
        entries in proptest::collection::btree_map(
            prop_oneof![
                proptest::sample::select(sluice::config::known_keys().iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>()),
                "(fs\\.((s3|file|memory)\\.)?limit\\.(total|timeout|bogus)?|auth\\.principals\\.[a-z.]{0,6}\\.(token-sha256|prefixes|max-sessions)|handle\\.verification\\.[a-z.]{0,4}\\.key(-file)?|[a-z]{1,4}\\.entropy\\.(key|length))",
            ],
            prop_oneof!["\\PC{0,20}", "-?[0-9]{1,22}", "[0-9a-f]{64}", "(true|false|1s|5mb|-1|0)"],
            0..8,
        )
    ) {
        match Config::from_map(entries) {
            Ok(_) => {}
            Err(sluice::error::StartError::Config(msg)) => prop_assert!(!msg.is_empty()),
            Err(other) => prop_assert!(false, "not a configuration error: {other:?}"),
        }
    }
}

/// The path strategy reaches the accepting side of the parser often
/// enough for the property above to mean something.
#[test]
fn the_path_strategy_is_not_vacuous() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let default = DefaultScheme::parse("memory://default/base/").unwrap();
    let strategy = paths();
    let (mut accepted, total) = (0, 2000);
    for _ in 0..total {
        let raw = strategy.new_tree(&mut runner).unwrap().current();
        accepted += Location::resolve(&raw, &default).is_ok() as usize;
    }
    assert!(
        accepted * 10 >= total && accepted < total,
        "{accepted} of {total} accepted"
    );
    eprintln!("{accepted} of {total} generated paths accepted");
}
