//! Round trip of generated valid route files through every conversion between the file
//! and `routemaster get -o yaml`, in process and through the same code the binaries run:
//! the CLI's reading and validation → protobuf on the wire → the control plane's
//! conversion and normalisation → the JSON stored in etcd → the watch's catalog → `List`
//! on the wire → the CLI's rendering. What comes back must equal the file with its
//! defaults written out (`load_balancing: round_robin` included), and apply back as the
//! same configuration. (The real-etcd version, through the binaries, is
//! `integration-tests/tests/roundtrip.rs`.)
//!
//! Cases: `PROPTEST_CASES` (default 256); seeds start at `ROUNDTRIP_SEED` (default:
//! random, printed on failure).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../common/tests/specgen/mod.rs"]
mod specgen;

use std::collections::BTreeMap;

use prost::Message;
use routemaster_common::Config;
use routemaster_common::spec::{ConfigSpec, RouteSpec, ServiceSpec, Sources};
use routemaster_control_plane::catalog::Catalog;
use routemaster_control_plane::cli::commands::{listed_routes, listed_services};
use routemaster_control_plane::cli::output::{RoutesDoc, ServicesDoc, to_yaml};
use routemaster_control_plane::store;
use routemaster_proto::{ListParts, v1};

fn cases() -> u64 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn first_seed() -> u64 {
    std::env::var("ROUNDTRIP_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}

/// Through the wire: encode and decode.
fn wire<M: Message + Default>(m: &M) -> M {
    M::decode(m.encode_to_vec().as_slice()).unwrap()
}

/// What `routemaster get services,routes -o yaml` prints after `apply -f` of `yaml`.
fn round_trip(yaml: &str) -> ConfigSpec {
    // CLI: read, validate each object, convert through the model.
    let sources = Sources::parse("gen.yaml", yaml).unwrap();
    let (services, routes) = sources.validate_objects().unwrap();
    let request = wire(&v1::ApplyRequest {
        services: services.iter().map(v1::Service::from).collect(),
        routes: routes.iter().map(v1::Route::from).collect(),
        certificates: Vec::new(),
        dry_run: false,
    });
    // Control plane: convert (refusing what no file could say), validate the whole,
    // store the normalised objects as JSON.
    let spec = routemaster_proto::config_spec(request.services, request.routes).unwrap();
    let normal = ConfigSpec::from(&Config::try_from(spec).unwrap());
    let stored_services: BTreeMap<String, ServiceSpec> = normal
        .services
        .iter()
        .map(|s| {
            let back: ServiceSpec = store::decode("svc", store::encode(s).as_bytes()).unwrap();
            (back.name.clone(), back)
        })
        .collect();
    let stored_routes: BTreeMap<String, RouteSpec> = normal
        .routes
        .iter()
        .map(|r| {
            let back: RouteSpec = store::decode("route", store::encode(r).as_bytes()).unwrap();
            (back.id.clone(), back)
        })
        .collect();
    // Watch: the catalog; Admin.List from it.
    let (catalog, problems) = Catalog::build(7, &stored_services, &stored_routes);
    assert!(problems.is_empty(), "{problems:?}");
    let parts = ListParts::from(catalog.config.as_ref().unwrap());
    let list = wire(&v1::ListResponse {
        version: catalog.version,
        services: parts.services,
        routes: parts.routes,
        certificates: Vec::new(),
        stale_reason: String::new(),
    });
    // CLI: `get services -o yaml`, `get routes -o yaml`.
    let services = listed_services(list.services).unwrap();
    let routes = listed_routes(list.routes).unwrap();
    let mut shown = to_yaml(&ServicesDoc {
        services: &services,
    })
    .unwrap();
    shown.push_str(&to_yaml(&RoutesDoc { routes: &routes }).unwrap());
    let back = Sources::parse("get.yaml", &shown)
        .unwrap_or_else(|e| panic!("{e}\n{shown}"))
        .spec;
    // The status API's /v1/routes and /v1/services show the same.
    assert_eq!(
        specgen::sorted(catalog.spec()),
        specgen::sorted(back.clone())
    );
    back
}

#[test]
fn generated_files_come_back_from_get_with_their_defaults_written_out() {
    let first = first_seed();
    let n = cases();
    for seed in first..first.wrapping_add(n) {
        let spec = specgen::config(seed);
        let yaml = spec.to_yaml();
        let result = std::panic::catch_unwind(|| {
            let shown = round_trip(&yaml);
            assert_eq!(
                specgen::sorted(shown.clone()),
                specgen::sorted(spec.clone().with_defaults()),
            );
            // What `get` printed applies back as the same configuration.
            let again = round_trip(&shown.to_yaml());
            assert_eq!(specgen::sorted(again), specgen::sorted(shown));
        });
        if let Err(e) = result {
            panic!(
                "round trip failed for seed {seed} (rerun: ROUNDTRIP_SEED={seed} PROPTEST_CASES=1); file:\n{yaml}\n{e:?}"
            );
        }
    }
    println!("{n} generated route files round-tripped (seeds {first}..)");
}

#[test]
fn the_round_trip_keeps_explicit_defaults_and_refuses_ambiguity() {
    let shown = round_trip(
        "services:\n  - { name: a, instances: [{ address: \"h:1\" }], load_balancing: round_robin }\nroutes:\n  - { id: r, forward: { service: a } }\n",
    );
    let yaml = shown.to_yaml();
    assert!(yaml.contains("load_balancing: round_robin"), "{yaml}");
    assert!(yaml.contains("weight: 1"), "{yaml}");
    assert!(yaml.contains("prefix: /"), "{yaml}");
    let both = Sources::parse(
        "both.yaml",
        "routes:\n  - { id: r, forward: { service: a }, redirect: { path: /x } }\n",
    )
    .unwrap();
    let err = both.validate_objects().unwrap_err().to_string();
    assert!(err.contains("set both forward and redirect"), "{err}");
}
