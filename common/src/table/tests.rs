use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{RequestHead, RouteTable};
use crate::snapshot::{Snapshot, Source};
use crate::spec::ConfigSpec;
use crate::{Config, host::normalize_host, path::normalize_path};

fn table(routes_yaml: &str) -> RouteTable<()> {
    let text = format!("services:\n  - name: svc\nroutes:\n{routes_yaml}");
    let spec = ConfigSpec::from_yaml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let config = Config::try_from(spec).unwrap_or_else(|e| panic!("{e}"));
    RouteTable::build(
        Arc::new(Snapshot::new(1, Source::File("test".into()), config)),
        |_| (),
    )
}

/// (method, authority, raw path, headers, expected route id)
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    Option<&'a str>,
);

fn check(t: &RouteTable<()>, cases: &[Case<'_>]) {
    for (method, authority, raw_path, headers, want) in cases {
        let mut map = HeaderMap::new();
        for (k, v) in *headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let host = normalize_host(authority);
        let (raw_path, query) = match raw_path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (*raw_path, None),
        };
        let path = normalize_path(raw_path).unwrap();
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let req = RequestHead {
            host: &host,
            path: &path,
            method: &method,
            headers: &map,
            query,
        };
        let got = t.lookup(&req).map(|m| m.route.id().as_str());
        assert_eq!(
            got, *want,
            "{method} {authority}{raw_path} headers={headers:?}"
        );
    }
}

#[test]
fn host_matching_and_buckets() {
    let t = table(
        r#"
  - { id: exact, hosts: [www.example.com], path: { prefix: /a }, forward: { service: svc } }
  - { id: wild, hosts: ["*.example.com"], forward: { service: svc } }
  - { id: wild-deep, hosts: ["*.b.example.com"], forward: { service: svc } }
  - { id: org, hosts: ["*.example.org"], forward: { service: svc } }
  - { id: any, path: { prefix: /any }, forward: { service: svc } }
"#,
    );
    check(
        &t,
        &[
            ("GET", "www.example.com", "/a/x", &[], Some("exact")),
            ("GET", "WWW.EXAMPLE.COM:8080", "/a", &[], Some("exact")),
            ("GET", "www.example.com.", "/a", &[], Some("exact")),
            // falls through the exact bucket to the wildcard when nothing matches there
            ("GET", "www.example.com", "/b", &[], Some("wild")),
            ("GET", "a.b.example.com", "/", &[], Some("wild-deep")),
            ("GET", "x.a.b.example.com", "/", &[], Some("wild-deep")),
            ("GET", "c.example.com", "/", &[], Some("wild")),
            ("GET", "x.y.example.org", "/", &[], Some("org")),
            // a wildcard does not match its bare suffix
            ("GET", "example.org", "/any/1", &[], Some("any")),
            ("GET", "example.org", "/", &[], None),
            ("GET", "other.net", "/any", &[], Some("any")),
            ("GET", "other.net", "/anything", &[], None),
            // a more specific bucket wins even with a longer path match elsewhere
            ("GET", "www.example.com", "/any/1", &[], Some("wild")),
        ],
    );
}

#[test]
fn path_kinds() {
    let t = table(
        r#"
  - { id: exact-about, path: { exact: /about }, forward: { service: svc } }
  - { id: foo, path: { prefix: /foo }, forward: { service: svc } }
  - { id: foo-slash, path: { prefix: /bar/ }, forward: { service: svc } }
  - { id: course, path: { regex: "/course/[0-9]+" }, forward: { service: svc } }
  - { id: root, path: { prefix: / }, methods: [POST], forward: { service: svc } }
"#,
    );
    check(
        &t,
        &[
            ("GET", "h", "/about", &[], Some("exact-about")),
            ("GET", "h", "/about/", &[], None),
            ("GET", "h", "/About", &[], None),
            ("GET", "h", "/foo", &[], Some("foo")),
            ("GET", "h", "/foo/", &[], Some("foo")),
            ("GET", "h", "/foo/x/y", &[], Some("foo")),
            ("GET", "h", "/foobar", &[], None),
            ("GET", "h", "/bar", &[], Some("foo-slash")),
            ("GET", "h", "/bar/x", &[], Some("foo-slash")),
            ("GET", "h", "/course/123", &[], Some("course")),
            ("GET", "h", "/course/123/x", &[], None),
            ("GET", "h", "/course/abc", &[], None),
            ("GET", "h", "/x/course/1", &[], None),
            // normalisation happens before matching
            ("GET", "h", "/%66oo", &[], Some("foo")),
            ("GET", "h", "//foo//x", &[], Some("foo")),
            ("GET", "h", "/x/../foo", &[], Some("foo")),
            ("GET", "h", "/foo%2Fx", &[], None),
            ("POST", "h", "/anything", &[], Some("root")),
        ],
    );
}

#[test]
fn headers_and_methods() {
    let t = table(
        r#"
  - { id: beta, path: { prefix: /app }, headers: [{ name: X-Env, exact: beta }], forward: { service: svc } }
  - { id: canary, path: { prefix: /app }, headers: [{ name: x-canary, regex: "1|yes" }], forward: { service: svc } }
  - { id: traced, path: { prefix: /app }, headers: [{ name: x-trace, present: true }], forward: { service: svc } }
  - { id: two, path: { prefix: /app }, headers: [{ name: x-env, exact: beta }, { name: x-trace, present: true }], forward: { service: svc } }
  - { id: get-only, path: { prefix: /app }, methods: [GET, HEAD], forward: { service: svc } }
  - { id: fallback, path: { prefix: /app }, forward: { service: svc } }
"#,
    );
    check(
        &t,
        &[
            ("POST", "h", "/app", &[("x-env", "beta")], Some("beta")),
            ("POST", "h", "/app", &[("X-ENV", "beta")], Some("beta")),
            // the method condition outranks the header count
            ("GET", "h", "/app", &[("x-env", "beta")], Some("get-only")),
            ("GET", "h", "/app", &[("x-env", "Beta")], Some("get-only")),
            ("POST", "h", "/app", &[("x-env", "Beta")], Some("fallback")),
            ("POST", "h", "/app", &[("x-canary", "yes")], Some("canary")),
            (
                "GET",
                "h",
                "/app",
                &[("x-canary", "yes!")],
                Some("get-only"),
            ),
            ("POST", "h", "/app", &[("x-trace", "")], Some("traced")),
            (
                "POST",
                "h",
                "/app",
                &[("x-env", "beta"), ("x-trace", "1")],
                Some("two"),
            ),
            ("HEAD", "h", "/app", &[], Some("get-only")),
            ("DELETE", "h", "/app", &[], Some("fallback")),
            // any value of a repeated header may match
            (
                "POST",
                "h",
                "/app",
                &[("x-env", "prod"), ("x-env", "beta")],
                Some("beta"),
            ),
        ],
    );
}

#[test]
fn ordering_within_a_bucket() {
    let t = table(
        r#"
  - { id: z-regex-high, path: { regex: "/p/.*" }, priority: 10, forward: { service: svc } }
  - { id: a-prefix, path: { prefix: /p }, forward: { service: svc } }
  - { id: b-prefix-long, path: { prefix: /p/q }, forward: { service: svc } }
  - { id: c-exact, path: { exact: /p/q/r }, forward: { service: svc } }
  - { id: d-regex, path: { regex: "/s/.*" }, forward: { service: svc } }
  - { id: e-prefix, path: { prefix: /s }, forward: { service: svc } }
  - { id: tie-b, path: { prefix: /t }, forward: { service: svc } }
  - { id: tie-a, path: { prefix: /t }, forward: { service: svc } }
  - { id: m-any, path: { prefix: /m }, forward: { service: svc } }
  - { id: m-get, path: { prefix: /m }, methods: [GET], forward: { service: svc } }
  - { id: h-one, path: { prefix: /h }, headers: [{ name: a, present: true }], forward: { service: svc } }
  - { id: h-method, path: { prefix: /h }, methods: [GET], forward: { service: svc } }
"#,
    );
    check(
        &t,
        &[
            // priority beats every other criterion
            ("GET", "h", "/p/q/r", &[], Some("z-regex-high")),
            ("GET", "h", "/p", &[], Some("a-prefix")),
            // exact before prefix, longest prefix first, prefix before regex
            ("GET", "h", "/s/x", &[], Some("e-prefix")),
            // last: route id order
            ("GET", "h", "/t", &[], Some("tie-a")),
            // method match before no method condition
            ("GET", "h", "/m", &[], Some("m-get")),
            ("PUT", "h", "/m", &[], Some("m-any")),
            // a method condition before more header conditions (Gateway API order)
            ("GET", "h", "/h", &[("a", "1")], Some("h-method")),
            ("GET", "h", "/h", &[], Some("h-method")),
            ("POST", "h", "/h", &[("a", "1")], Some("h-one")),
        ],
    );
    let t = table(
        r#"
  - { id: a-prefix, path: { prefix: /p }, forward: { service: svc } }
  - { id: b-prefix-long, path: { prefix: /p/q }, forward: { service: svc } }
  - { id: c-exact, path: { exact: /p/q/r }, forward: { service: svc } }
"#,
    );
    check(
        &t,
        &[
            ("GET", "h", "/p/q/r", &[], Some("c-exact")),
            ("GET", "h", "/p/q/r/s", &[], Some("b-prefix-long")),
            ("GET", "h", "/p/qq", &[], Some("a-prefix")),
        ],
    );
}

#[test]
fn empty_table_matches_nothing() {
    let t = table("  []\n");
    check(&t, &[("GET", "h", "/", &[], None)]);
}

#[test]
fn regex_anchors_are_conservative() {
    let cases = [
        ("/course/[0-9]+", Some("/course")),
        ("/a/b/c", Some("/a/b")),
        ("/a/b?", Some("/a")),
        ("/a/?x", None),
        ("/a/b*", Some("/a")),
        ("/a/b+", Some("/a")),
        ("/v1.0/x", None),
        ("/api/v1/x|/other/y", None),
        ("(?i)/a/b", None),
        ("/[a-z]+/x", None),
        (".*", None),
        ("/x", None),
        ("/x/\\d+", Some("/x")),
    ];
    for (regex, want) in cases {
        assert_eq!(super::regex_anchor(regex), want, "{regex}");
    }
}

#[test]
fn many_regex_routes_are_found_through_their_anchor() {
    let mut yaml = String::new();
    for i in 0..200 {
        yaml.push_str(&format!(
            "  - {{ id: r{i}, path: {{ regex: \"/r{i}/[0-9]+\" }}, forward: {{ service: svc }} }}\n"
        ));
    }
    yaml.push_str("  - { id: loose, path: { regex: \"/(x|y)/.*\" }, forward: { service: svc } }\n");
    let t = table(&yaml);
    check(
        &t,
        &[
            ("GET", "h", "/r0/1", &[], Some("r0")),
            ("GET", "h", "/r199/42", &[], Some("r199")),
            ("GET", "h", "/r199/x", &[], None),
            ("GET", "h", "/r19/1/2", &[], None),
            ("GET", "h", "/y/anything", &[], Some("loose")),
        ],
    );
}

#[test]
fn query_conditions() {
    let t = table(
        r#"
  - { id: debug, path: { prefix: /q }, query: [{ name: debug, exact: "1" }], forward: { service: svc } }
  - { id: two, path: { prefix: /q }, query: [{ name: debug, exact: "1" }, { name: v, regex: "^[0-9]+$" }], forward: { service: svc } }
  - { id: spaced, path: { prefix: /q }, query: [{ name: "a b", exact: "c d" }], forward: { service: svc } }
  - { id: present, path: { prefix: /q }, query: [{ name: flag, present: true }], forward: { service: svc } }
  - { id: get, path: { prefix: /q }, methods: [GET], forward: { service: svc } }
  - { id: fallback, path: { prefix: /q }, forward: { service: svc } }
"#,
    );
    check(
        &t,
        &[
            ("POST", "h", "/q?debug=1", &[], Some("debug")),
            // more query conditions first
            ("POST", "h", "/q?debug=1&v=42", &[], Some("two")),
            ("POST", "h", "/q?v=42&debug=1", &[], Some("two")),
            ("POST", "h", "/q?debug=1&v=x", &[], Some("debug")),
            // the first occurrence counts; values are case-sensitive
            ("POST", "h", "/q?debug=0&debug=1", &[], Some("fallback")),
            ("POST", "h", "/q?debug=1&debug=0", &[], Some("debug")),
            ("POST", "h", "/q?DEBUG=1", &[], Some("fallback")),
            // names and values are decoded (%XX and +)
            ("POST", "h", "/q?%64ebug=%31", &[], Some("debug")),
            ("POST", "h", "/q?a+b=c%20d", &[], Some("spaced")),
            ("POST", "h", "/q?flag", &[], Some("present")),
            ("POST", "h", "/q?flag=", &[], Some("present")),
            ("POST", "h", "/q", &[], Some("fallback")),
            // a method condition outranks query conditions
            ("GET", "h", "/q?debug=1", &[], Some("get")),
        ],
    );
}

#[test]
fn shadow_routes_never_serve_and_are_reported_when_they_would_win() {
    let t = table(
        r#"
  - {id: catch-all, forward: {service: svc}}
  - {id: old-exact, path: {exact: /old}, mode: shadow, redirect: {path: /new}}
  - {id: shop, hosts: [shop.example], path: {prefix: /}, forward: {service: svc}}
  - {id: shop-shadow, hosts: ["*.example"], path: {prefix: /sale}, mode: shadow, redirect: {path: /deals}}
  - {id: api, path: {prefix: /api}, forward: {service: svc}}
  - {id: api-v1-shadow, path: {prefix: /api/v1}, mode: shadow, forward: {service: svc, rewrite_prefix: /v1}}
  - {id: low-shadow, path: {prefix: /api/v2}, priority: -1, mode: shadow, redirect: {path: /x}}
  - {id: only-shadow, hosts: [nothing.example], path: {exact: /s}, mode: shadow, redirect: {path: /t}}
"#,
    );
    // (host, path, active route, shadow route)
    let cases: [(&str, &str, Option<&str>, Option<&str>); 8] = [
        ("a.example", "/old", Some("catch-all"), Some("old-exact")),
        ("a.example", "/other", Some("catch-all"), None),
        ("a.example", "/api/v1/x", Some("api"), Some("api-v1-shadow")),
        // Ranked below the active route (lower priority): it would not have won.
        ("a.example", "/api/v2/x", Some("api"), None),
        // An exact-host active route beats a wildcard-host shadow route.
        ("shop.example", "/sale", Some("shop"), None),
        // A wildcard-host shadow route beats the any-host catch-all.
        ("b.example", "/sale", Some("catch-all"), Some("shop-shadow")),
        // A shadow route is reported even where the active route is the catch-all.
        (
            "nothing.example",
            "/s",
            Some("catch-all"),
            Some("only-shadow"),
        ),
        (
            "nothing.example",
            "/old",
            Some("catch-all"),
            Some("old-exact"),
        ),
    ];
    let get = Method::GET;
    let map = HeaderMap::new();
    for (host, path, active, shadow) in cases {
        let req = RequestHead {
            host,
            path,
            method: &get,
            headers: &map,
            query: None,
        };
        let found = t.lookup_shadowed(&req);
        assert_eq!(
            found.active.map(|m| m.route.id().as_str()),
            active,
            "{host}{path}"
        );
        assert_eq!(
            found.shadow.map(|m| m.route.id().as_str()),
            shadow,
            "{host}{path}"
        );
        assert_eq!(
            t.lookup(&req).map(|m| m.route.id().as_str()),
            active,
            "{host}{path}"
        );
    }
}

#[test]
fn a_table_of_only_shadow_routes_serves_nothing() {
    let t = table("  - {id: s, mode: shadow, redirect: {path: /x}}\n");
    let get = Method::GET;
    let map = HeaderMap::new();
    let req = RequestHead {
        host: "a",
        path: "/",
        method: &get,
        headers: &map,
        query: None,
    };
    let found = t.lookup_shadowed(&req);
    assert!(found.active.is_none());
    assert_eq!(found.shadow.map(|m| m.route.id().as_str()), Some("s"));
}
