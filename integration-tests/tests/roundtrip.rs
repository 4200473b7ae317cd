//! Round trip through the real system, for generated valid route files: `routemaster
//! apply -f FILE` → protobuf → routemaster-control → etcd → watch → `routemaster get
//! routes|services NAME… -o yaml` gives back the file's objects with their defaults
//! written out (`load_balancing: round_robin` is not lost), and applying that output
//! again changes nothing.
//!
//! Cases: `PROPTEST_CASES` (default 64); seeds start at `ROUNDTRIP_SEED` (default:
//! random, printed on failure). Cases run one after another on one etcd, so later ones
//! also update objects of earlier ones that share a name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../common/tests/specgen/mod.rs"]
mod specgen;

use routemaster_common::spec::{ConfigSpec, Sources};
use routemaster_integration_tests::cluster::cli;
use routemaster_integration_tests::fleet::Fleet;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `get KIND NAMES… -o yaml`, parsed (empty when there are no names).
async fn get(url: &str, kind: &str, names: &[String]) -> ConfigSpec {
    if names.is_empty() {
        return ConfigSpec::default();
    }
    let mut args = vec!["get", kind];
    args.extend(names.iter().map(String::as_str));
    args.extend(["-o", "yaml"]);
    let (code, out, err) = cli(url, &args).await;
    assert_eq!(code, 0, "get {kind}: {err}");
    Sources::parse("get", &out)
        .unwrap_or_else(|e| panic!("{e}\n{out}"))
        .spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_files_come_back_from_etcd_with_their_defaults_written_out() {
    let fleet = Fleet::start("roundtrip", &[]).await;
    let url = fleet.cp_url();
    let cases = env_or("PROPTEST_CASES", 64);
    let first = env_or(
        "ROUNDTRIP_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    for seed in first..first.wrapping_add(cases) {
        let spec = specgen::config(seed);
        let file = fleet.dir.path().join(format!("case-{seed}.yaml"));
        let yaml = spec.to_yaml();
        std::fs::write(&file, &yaml).unwrap();
        let context =
            format!("seed {seed} (rerun: ROUNDTRIP_SEED={seed} PROPTEST_CASES=1); file:\n{yaml}");
        let (code, out, err) = cli(&url, &["apply", "-f", file.to_str().unwrap()]).await;
        assert_eq!(code, 0, "apply: {out}{err}\n{context}");

        let names: Vec<String> = spec.services.iter().map(|s| s.name.clone()).collect();
        let ids: Vec<String> = spec.routes.iter().map(|r| r.id.clone()).collect();
        let shown = ConfigSpec {
            services: get(&url, "services", &names).await.services,
            routes: get(&url, "routes", &ids).await.routes,
            tls: None,
        };
        assert_eq!(
            specgen::sorted(shown.clone()),
            specgen::sorted(spec.clone().with_defaults()),
            "{context}"
        );

        // The output applies back as it is: nothing changes.
        let back = fleet.dir.path().join(format!("back-{seed}.yaml"));
        std::fs::write(&back, shown.to_yaml()).unwrap();
        let (code, out, err) = cli(&url, &["apply", "-f", back.to_str().unwrap()]).await;
        assert_eq!(code, 0, "apply back: {out}{err}\n{context}");
        let changed: Vec<&str> = out
            .lines()
            .filter(|l| l.contains('/') && !l.ends_with(" unchanged"))
            .collect();
        assert!(changed.is_empty(), "{changed:?}\n{context}");
    }
    println!("{cases} generated route files round-tripped through etcd (seeds {first}..)");
}
