//! Property tests for the parts of request handling whose inputs are open-ended: path
//! normalisation and authority (host) checking. The number of cases is proptest's
//! default (256) in the test command; `PROPTEST_CASES=100000 cargo test -p
//! routemaster-common --test properties` is the longer run for a bench machine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use routemaster_common::host::{authority_port, check_authority, normalize_host};
use routemaster_common::path::normalize_path;

/// Path-like strings: mostly the characters that matter (separators, dots, escapes,
/// `;`, `\`, `#`), with arbitrary characters mixed in.
fn pathish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E".to_owned()),
        Just("%2f".to_owned()),
        Just("%2F".to_owned()),
        Just("%5c".to_owned()),
        Just("%00".to_owned()),
        Just("%c0%ae".to_owned()),
        Just("%25".to_owned()),
        Just(";".to_owned()),
        Just("\\".to_owned()),
        Just("#".to_owned()),
        Just("%".to_owned()),
        "[a-z]{1,3}",
        "%[0-9a-fA-F]{2}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
}

proptest! {
    #[test]
    fn normalize_path_never_panics(raw in any::<String>()) {
        let _ = normalize_path(&raw);
    }

    /// What we route on and send up is already normal: normalising it again changes
    /// nothing, and it holds nothing a backend could resolve differently.
    #[test]
    fn normalised_paths_are_fixed_points(raw in pathish()) {
        if let Ok(p) = normalize_path(&raw) {
            let p = p.into_owned();
            prop_assert!(p.starts_with('/'), "{raw:?} -> {p:?}");
            prop_assert!(!p.contains("//"), "{raw:?} -> {p:?}");
            prop_assert!(!p.contains('\\') && !p.contains('#'), "{raw:?} -> {p:?}");
            for seg in p.split('/') {
                prop_assert!(seg != "." && seg != "..", "{raw:?} -> {p:?}");
                for piece in seg.split("%2F") {
                    let head = piece.split(';').next().unwrap_or(piece);
                    prop_assert!(head != "." && head != "..", "{raw:?} -> {p:?}");
                }
            }
            let again = normalize_path(&p).unwrap();
            prop_assert_eq!(again.as_ref(), p.as_str(), "not a fixed point: {:?}", raw);
        }
    }

    #[test]
    fn check_authority_never_panics(raw in any::<String>()) {
        let _ = check_authority(&raw);
    }

    /// Differential: every authority we accept is one the `http` crate (hyper's URI
    /// parser) reads as the same host and port.
    #[test]
    fn accepted_authorities_read_the_same_to_the_http_crate(
        raw in prop_oneof![
            "[a-zA-Z0-9._~,@:;%\\[\\] -]{0,24}",
            "\\[[0-9a-fA-F:.]{0,20}\\](:[0-9]{0,6})?",
            "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}\\.?(:[0-9]{0,6})?",
        ]
    ) {
        if check_authority(&raw).is_ok() {
            let theirs: http::uri::Authority = raw.parse().map_err(|e| {
                TestCaseError::fail(format!("{raw:?} accepted by us, refused by http: {e}"))
            })?;
            let their_host = theirs.host().to_ascii_lowercase();
            let ours = normalize_host(&raw);
            prop_assert_eq!(
                ours.as_ref(),
                their_host.strip_suffix('.').unwrap_or(&their_host),
                "host of {:?}", raw
            );
            prop_assert_eq!(authority_port(&raw), theirs.port_u16(), "port of {:?}", raw);
        }
    }
}
