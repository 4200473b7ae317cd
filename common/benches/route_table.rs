//! Route-table benchmarks: lookup latency and build time at 1, 1k, 10k and 100k routes.
//!
//! The table mixes exact hosts, wildcard hosts and host-less routes, prefix and exact
//! paths and 1% regex routes, like a large shared gateway. Lookups cycle through 1024
//! requests that each hit a different route, always including the last-declared one.
//!
//!     cargo bench -p routemaster-common --bench route_table
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use divan::Bencher;
use http::{HeaderMap, Method};
use routemaster_common::Config;
use routemaster_common::snapshot::{Snapshot, Source};
use routemaster_common::spec::{ConfigSpec, ForwardSpec, PathSpec, RouteSpec, ServiceSpec};
use routemaster_common::table::{RequestHead, RouteTable};

fn main() {
    divan::main();
}

const SIZES: &[usize] = &[1, 1_000, 10_000, 100_000];

/// Route `i` of `n`, and a (host, path) that it should win.
fn route(i: usize, n: usize) -> (RouteSpec, String, String) {
    let hosts_in_use = n / 20 + 1;
    let (hosts, req_host) = match i % 10 {
        0 => (None, "unlisted.example.net".to_owned()),
        1 => {
            let suffix = format!("tenant{}.example.org", i % 100);
            (Some(vec![format!("*.{suffix}")]), format!("x.{suffix}"))
        }
        _ => {
            let h = format!("app{}.example.com", i % hosts_in_use);
            (Some(vec![h.clone()]), h)
        }
    };
    let (path, req_path) = if i % 100 == 50 {
        (
            PathSpec {
                regex: Some(format!("/r{i}/[0-9]+")),
                ..Default::default()
            },
            format!("/r{i}/12345"),
        )
    } else if i.is_multiple_of(3) {
        let p = format!("/svc{i}/status");
        (
            PathSpec {
                exact: Some(p.clone()),
                ..Default::default()
            },
            p,
        )
    } else {
        (
            PathSpec {
                prefix: Some(format!("/svc{i}/api")),
                ..Default::default()
            },
            format!("/svc{i}/api/v1/items/42"),
        )
    };
    let spec = RouteSpec {
        id: format!("route-{i}"),
        hosts,
        path: Some(path),
        methods: None,
        headers: None,
        priority: None,
        group: None,
        filters: None,
        query: None,
        forward: Some(ForwardSpec {
            service: Some(format!("s{}", i % 10)),
            ..Default::default()
        }),
        redirect: None,
        mode: None,
        shadow: None,
    };
    (spec, req_host, req_path)
}

struct Fixture {
    spec: ConfigSpec,
    requests: Vec<(String, String, String)>,
}

fn fixture(n: usize) -> Fixture {
    let services = (0..10)
        .map(|s| ServiceSpec {
            name: format!("s{s}"),
            instances: Vec::new(),
            load_balancing: None,
            protocol: None,
            ..Default::default()
        })
        .collect();
    let mut routes = Vec::with_capacity(n);
    let mut requests = Vec::new();
    let step = (n / 1023).max(1);
    for i in 0..n {
        let (spec, host, path) = route(i, n);
        if i % step == 0 || i == n - 1 {
            requests.push((host, path, spec.id.clone()));
        }
        routes.push(spec);
    }
    Fixture {
        spec: ConfigSpec {
            services,
            routes,
            tls: None,
        },
        requests,
    }
}

fn snapshot(spec: ConfigSpec) -> Arc<Snapshot> {
    let config = Config::try_from(spec).unwrap();
    Arc::new(Snapshot::new(1, Source::File("bench".into()), config))
}

#[divan::bench(args = SIZES)]
fn lookup(bencher: Bencher, n: usize) {
    let f = fixture(n);
    let table = RouteTable::build(snapshot(f.spec), |_| ());
    let headers = HeaderMap::new();
    let method = Method::GET;
    // Every request must hit the route it was generated for.
    for (host, path, id) in &f.requests {
        let req = RequestHead {
            host,
            path,
            method: &method,
            headers: &headers,
            query: None,
        };
        assert_eq!(
            table.lookup(&req).map(|m| m.route.id().as_str()),
            Some(id.as_str())
        );
    }
    let mut i = 0;
    bencher.bench_local(|| {
        let (host, path, _) = &f.requests[i % f.requests.len()];
        i += 1;
        let req = RequestHead {
            host,
            path,
            method: &method,
            headers: &headers,
            query: None,
        };
        divan::black_box(table.lookup(divan::black_box(&req)).is_some())
    });
}

#[divan::bench(args = SIZES)]
fn lookup_miss(bencher: Bencher, n: usize) {
    let f = fixture(n);
    let table = RouteTable::build(snapshot(f.spec), |_| ());
    let headers = HeaderMap::new();
    let method = Method::GET;
    bencher.bench_local(|| {
        let req = RequestHead {
            host: "app1.example.com",
            path: "/no/such/route/here",
            method: &method,
            headers: &headers,
            query: None,
        };
        divan::black_box(table.lookup(divan::black_box(&req)).is_some())
    });
}

/// Table build from an already validated snapshot (what a swap costs).
#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
fn build(bencher: Bencher, n: usize) {
    let snap = snapshot(fixture(n).spec);
    bencher.bench_local(|| RouteTable::build(Arc::clone(&snap), |_| ()));
}

/// Validation of a parsed file (regex compilation included).
#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
fn validate(bencher: Bencher, n: usize) {
    let spec = fixture(n).spec;
    bencher
        .with_inputs(|| spec.clone())
        .bench_local_values(|s| Config::try_from(s).unwrap());
}
