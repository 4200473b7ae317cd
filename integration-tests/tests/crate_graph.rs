//! Crates point one way: `common` ← `proto`, `common` ← `runtime`, then the planes; the
//! control plane never depends on the data plane (ARCHITECTURE.md, Invariants). Read
//! from the manifests, normal, dev and build dependencies alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

/// The `routemaster-*` crates a manifest depends on, in any dependency table.
fn routemaster_deps(dir: &str) -> BTreeSet<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(dir)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut deps = BTreeSet::new();
    let mut in_deps = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line.contains("dependencies");
            // `[dependencies.routemaster-x]`
            if let Some(name) = line
                .trim_matches(|c| c == '[' || c == ']')
                .rsplit('.')
                .next()
                .filter(|n| in_deps && n.starts_with("routemaster-"))
            {
                deps.insert(name.to_owned());
            }
            continue;
        }
        if in_deps && line.starts_with("routemaster-") {
            let name = line.split(['.', ' ', '=']).next().unwrap();
            deps.insert(name.to_owned());
        }
    }
    deps
}

#[test]
fn crates_point_one_way() {
    let cases: [(&str, &[&str]); 5] = [
        ("common", &[]),
        ("proto", &["routemaster-common"]),
        ("runtime", &["routemaster-common"]),
        (
            "data-plane",
            &[
                "routemaster-common",
                "routemaster-proto",
                "routemaster-runtime",
            ],
        ),
        (
            "control-plane",
            &[
                "routemaster-common",
                "routemaster-proto",
                "routemaster-runtime",
            ],
        ),
    ];
    for (dir, want) in cases {
        let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(routemaster_deps(dir), want, "{dir}/Cargo.toml");
    }
}
