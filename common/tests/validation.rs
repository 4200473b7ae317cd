//! The route file: parsing and validation errors name the object and the field.

use routemaster_common::model::Protocol;
use routemaster_common::spec::ConfigSpec;
use routemaster_common::{Config, ValidationErrors};

fn validate(yaml: &str) -> Result<Config, String> {
    let spec = ConfigSpec::from_yaml(yaml).map_err(|e| format!("parse: {e}"))?;
    Config::try_from(spec).map_err(|e: ValidationErrors| e.to_string())
}

const EXAMPLE: &str = r#"
services:
  - name: lms
    instances:
      - address: 127.0.0.1:9001
      - address: 127.0.0.1:9002
        weight: 2
    load_balancing: round_robin
  - name: lms-v2
    instances: [{ address: "localhost:9003" }]
    load_balancing: least_request
    protocol: h2c
routes:
  - id: lms-courses
    hosts: [www.example.com, "*.example.org"]
    path: { prefix: /courses }
    methods: [GET, HEAD]
    headers:
      - { name: x-env, exact: beta }
    priority: 0
    group: default
    forward:
      service: lms
      rewrite_prefix: /api
      host_rewrite: lms.internal
      timeout: 30s
    filters:
      request_headers:  { set: { x-team: lms }, add: { x-via: routemaster }, remove: [x-internal] }
      response_headers: { set: { strict-transport-security: "max-age=63072000" }, remove: [server] }
  - id: split
    path: { regex: "/course/[0-9]+" }
    forward:
      backends: [{ service: lms, weight: 90 }, { service: lms-v2, weight: 10 }]
      rewrite_path: /v2/course
  - id: old-courses
    path: { prefix: /old-courses }
    redirect: { prefix: /courses, code: 301 }
"#;

#[test]
fn the_documented_example_is_valid_and_round_trips() {
    let config = validate(EXAMPLE).unwrap();
    assert_eq!(config.services().len(), 2);
    assert_eq!(config.routes().len(), 3);
    let spec = ConfigSpec::from(&config);
    let again = Config::try_from(ConfigSpec::from_yaml(&spec.to_yaml()).unwrap()).unwrap();
    assert_eq!(ConfigSpec::from(&again), spec);
}

#[test]
fn bad_input_names_object_and_field() {
    let svc = "services:\n  - name: lms\n    instances: [{ address: 127.0.0.1:9001 }]\n";
    let cases: &[(&str, &str)] = &[
        (
            "routes:\n  - { id: Bad_Id, forward: { service: lms } }",
            r#"route "Bad_Id": id: "Bad_Id" has 'B'"#,
        ),
        (
            "routes:\n  - { id: a, forward: { service: lms } }\n  - { id: a, forward: { service: lms } }",
            r#"route "a": id: is declared more than once"#,
        ),
        (
            "routes:\n  - { id: a, forward: { service: nope } }",
            r#"route "a": forward.service: unknown service "nope""#,
        ),
        (
            "routes:\n  - { id: a, forward: { backends: [{ service: lms }, { service: nope }] } }",
            r#"route "a": forward.backends: unknown service "nope""#,
        ),
        (
            "routes:\n  - { id: a, path: { regex: \"(\" }, forward: { service: lms } }",
            r#"route "a": path.regex: invalid regex"#,
        ),
        (
            "routes:\n  - { id: a, path: { prefix: courses }, forward: { service: lms } }",
            r#"route "a": path.prefix: "courses" must start with '/'"#,
        ),
        (
            "routes:\n  - { id: a, path: { exact: about }, forward: { service: lms } }",
            r#"route "a": path.exact: "about" must start with '/'"#,
        ),
        (
            "routes:\n  - { id: a, path: { prefix: /a/../b }, forward: { service: lms } }",
            r#"route "a": path.prefix: "/a/../b" is not a normalised path"#,
        ),
        (
            "routes:\n  - { id: a, path: { prefix: /a, exact: /b }, forward: { service: lms } }",
            r#"route "a": path: set exactly one of prefix, exact or regex"#,
        ),
        (
            "routes:\n  - { id: a, redirect: { path: /x, code: 304 } }",
            r#"route "a": redirect.code: 304 is not one of 301, 302, 303, 307, 308"#,
        ),
        (
            "routes:\n  - { id: a, forward: { backends: [{ service: lms, weight: 0 }] } }",
            r#"route "a": forward.backends: all weights are 0"#,
        ),
        (
            "routes:\n  - { id: a }",
            r#"route "a": forward: missing; a route needs exactly one of forward or redirect"#,
        ),
        (
            "routes:\n  - { id: a, forward: { service: lms }, redirect: { path: /x } }",
            r#"route "a": forward: set both forward and redirect"#,
        ),
        (
            "routes:\n  - { id: a, hosts: [\"www.example.com:80\"], forward: { service: lms } }",
            r#"route "a": hosts[0]: "www.example.com:80" is not a host name"#,
        ),
        (
            "routes:\n  - { id: a, methods: [get], forward: { service: lms } }",
            r#"route "a": methods[0]: "get" is not an HTTP method"#,
        ),
        (
            "routes:\n  - { id: a, headers: [{ name: x, exact: a, present: true }], forward: { service: lms } }",
            r#"route "a": headers[0]: set exactly one of exact, regex or present: true"#,
        ),
        (
            "routes:\n  - { id: a, forward: { service: lms, timeout: 30 } }",
            r#"route "a": forward.timeout: "30" is not a duration"#,
        ),
        (
            "routes:\n  - { id: a, path: { regex: /x }, forward: { service: lms, rewrite_prefix: /y } }",
            r#"route "a": forward.rewrite_prefix: needs a prefix or exact path match"#,
        ),
        (
            "routes:\n  - { id: a, redirect: { scheme: ftp } }",
            r#"route "a": redirect.scheme: "ftp" must be http or https"#,
        ),
        (
            "routes:\n  - { id: a, forward: { service: lms, rewrite_prefix: /a, rewrite_path: /b } }",
            r#"route "a": forward.rewrite_path: set at most one of rewrite_prefix or rewrite_path"#,
        ),
        (
            "routes:\n  - { id: a, forward: { service: lms, rewrite_path: b } }",
            r#"route "a": forward.rewrite_path: "b" must start with '/'"#,
        ),
        (
            "routes:\n  - { id: a, forward: { service: lms, rewrite_path: \"/b?x=1\" } }",
            r#"route "a": forward.rewrite_path: "/b?x=1" must not contain '?' or '#'"#,
        ),
        (
            "routes:\n  - { id: a, redirect: { path: /x }, filters: { response_headers: { remove: [server] } } }",
            r#"route "a": filters: apply to forwarded requests; a redirect route cannot have them"#,
        ),
        (
            "routes:\n  - { id: a, forward: { service: lms }, filters: { request_headers: { set: { content-length: \"5\" } } } }",
            r#"route "a": filters.request_headers.set.content-length: "content-length" is managed by the proxy"#,
        ),
        (
            "routes:\n  - { id: a, forward: { service: lms }, filters: { request_headers: { remove: [Transfer-Encoding] } } }",
            r#"route "a": filters.request_headers.remove[0]: "Transfer-Encoding" is managed by the proxy"#,
        ),
        (
            "routes:\n  - { id: a, forward: { service: lms }, filters: { response_headers: { set: { x-a: \"1\" }, remove: [X-A] } } }",
            r#"route "a": filters.response_headers.remove[0]: "X-A" appears twice"#,
        ),
        (
            "routes:\n  - { id: a, forward: { service: lms }, filters: { response_headers: { add: { \"bad name\": \"1\" } } } }",
            r#"route "a": filters.response_headers.add.bad name: "bad name" is not a header name"#,
        ),
        (
            "routes:\n  - { id: a, forward: { service: lms }, filters: { request_headers: { set: { x-a: \"line\\nbreak\" } } } }",
            r#"route "a": filters.request_headers.set.x-a: "line\nbreak" is not a header value"#,
        ),
        (
            "routes:\n  - { id: a, forward: { service: lms }, filters: { request_headers: { rename: {} } } }",
            "parse: ",
        ),
    ];
    for (routes, want) in cases {
        let err = validate(&format!("{svc}{routes}")).expect_err(routes);
        assert!(
            err.contains(want),
            "for {routes}\n got: {err}\nwant: {want}"
        );
    }
}

#[test]
fn bad_services_are_named() {
    let cases: &[(&str, &str)] = &[
        (
            "services:\n  - { name: lms, instances: [{ address: 127.0.0.1 }] }",
            r#"service "lms": instances[0].address: "127.0.0.1" has no port"#,
        ),
        (
            "services:\n  - { name: lms }\n  - { name: lms }",
            r#"service "lms": name: is declared more than once"#,
        ),
        (
            "services:\n  - { name: lms, instances: [{ address: \"a:1\", weight: 0 }] }",
            r#"service "lms": instances: all weights are 0"#,
        ),
        (
            "services:\n  - { name: LMS }",
            r#"service "LMS": name: "LMS" has 'L'"#,
        ),
        (
            "services:\n  - { name: lms, load_balancing: fastest }",
            "parse: ",
        ),
        (
            "services:\n  - { name: web, protocol: http1, tls: { server_name: a.example } }",
            r#"service "web": tls: only for protocol h2 or https (this service's protocol is "http1")"#,
        ),
        (
            "services:\n  - { name: grpc, protocol: h2c, tls: {} }",
            r#"service "grpc": tls: only for protocol h2 or https (this service's protocol is "h2c")"#,
        ),
        (
            "services:\n  - { name: web, protocol: https, tls: { server_name: \"a b\" } }",
            r#"service "web": tls.server_name: "a b" is not a DNS name or an IP address"#,
        ),
        (
            "services:\n  - { name: web, protocol: https, tls: { ca_pem: \"not pem\" } }",
            r#"service "web": tls.ca_pem: no PEM certificate (-----BEGIN CERTIFICATE-----) in it"#,
        ),
        (
            "services:\n  - { name: web, protocol: h2, tls: { ca_pem: \"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n\" } }",
            r#"service "web": tls.ca_pem: certificate 1: not an X.509 certificate"#,
        ),
        (
            "services:\n  - { name: web, protocol: h2, tls: { sni: x } }",
            "parse: ",
        ),
        ("services:\n  - { name: lms, protocol: http3 }", "parse: "),
    ];
    for (yaml, want) in cases {
        let err = validate(yaml).expect_err(yaml);
        assert!(err.contains(want), "for {yaml}\n got: {err}\nwant: {want}");
    }
}

#[test]
fn tls_upstreams_are_accepted_with_their_settings() {
    let cert = rcgen::generate_simple_self_signed(vec!["users.internal".into()])
        .expect("certificate")
        .cert
        .pem();
    let yaml = format!(
        "services:\n  - name: users\n    protocol: h2\n    tls:\n      server_name: users.internal\n      ca_pem: |\n{}  - {{ name: web, protocol: https, tls: {{ server_name: 10.0.0.1 }} }}\n  - {{ name: plain, protocol: https }}\n",
        cert.lines()
            .map(|l| format!("        {l}\n"))
            .collect::<String>()
    );
    let config = validate(&yaml).expect("valid");
    let [users, web, plain] = config.services() else {
        panic!("three services")
    };
    assert_eq!(users.protocol(), Protocol::H2);
    let tls = users.tls().expect("tls");
    assert_eq!(tls.server_name(), Some("users.internal"));
    assert!(tls.ca_pem().expect("ca_pem").contains("BEGIN CERTIFICATE"));
    assert_eq!(web.protocol(), Protocol::Https);
    assert_eq!(web.tls().and_then(|t| t.server_name()), Some("10.0.0.1"));
    assert_eq!(web.tls().and_then(|t| t.ca_pem()), None);
    assert!(plain.tls().is_none());
}

#[test]
fn unknown_fields_are_errors_with_a_location() {
    let err = validate("routes:\n  - id: a\n    forward: { service: lms }\n    prefix: /x\n")
        .expect_err("unknown field");
    assert!(err.contains("prefix"), "{err}");
    assert!(err.contains("line") || err.contains('4'), "{err}");
    let err = validate("servces: []\n").expect_err("unknown top-level field");
    assert!(err.contains("servces"), "{err}");
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let err = validate(
        "routes:\n  - { id: a, forward: { service: x } }\n  - { id: b, forward: { service: y } }",
    )
    .unwrap_err();
    assert!(
        err.contains(r#"route "a""#) && err.contains(r#"route "b""#),
        "{err}"
    );
}

#[test]
fn regex_errors_fit_on_one_line() {
    let err = validate(
        "services: [{ name: s }]\nroutes:\n  - { id: a, path: { regex: \"(\" }, forward: { service: s } }",
    )
    .unwrap_err();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unclosed group"), "{err}");
}

#[test]
fn large_route_files_parse() {
    let mut yaml = String::from("services: [{ name: s }]\nroutes:\n");
    for i in 0..20_000 {
        yaml.push_str(&format!(
            "  - {{ id: r{i}, hosts: [h{i}.example.com], path: {{ prefix: /p{i} }}, methods: [GET], forward: {{ service: s }} }}\n"
        ));
    }
    let config = validate(&yaml).unwrap();
    assert_eq!(config.routes().len(), 20_000);
}
