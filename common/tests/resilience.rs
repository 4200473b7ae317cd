//! `services[].health_check`, `outlier`, `limits` and `routes[].forward.retry`: the
//! issue's example as written, the documented defaults, and errors naming the field.

use std::time::Duration;

use routemaster_common::model::{Action, RetryOn};
use routemaster_common::spec::ConfigSpec;
use routemaster_common::{Config, ValidationErrors};

fn validate(yaml: &str) -> Result<Config, String> {
    let spec = ConfigSpec::from_yaml(yaml).map_err(|e| format!("parse: {e}"))?;
    Config::try_from(spec).map_err(|e: ValidationErrors| e.to_string())
}

#[test]
fn the_issue_example_reads_as_written() {
    let config = validate(
        r#"
services:
  - name: lms
    instances: [{ address: "127.0.0.1:9001" }]
    health_check: { path: /healthz, interval: 5s, timeout: 1s, healthy: 2, unhealthy: 3, expect: [200-399] }
    outlier: { consecutive_failures: 5, base_ejection: 30s, max_ejected_percent: 50 }
    limits: { max_connections: 1024, max_pending: 256 }
routes:
  - id: lms
    forward:
      service: lms
      retry: { attempts: 2, on: [connect-failure, reset, 502, 503, 504], per_try_timeout: 2s, backoff: 25ms, non_idempotent: false }
"#,
    )
    .unwrap();
    let s = &config.services()[0];
    let h = s.health_check().unwrap();
    assert_eq!(h.path(), "/healthz");
    assert_eq!(h.interval(), Duration::from_secs(5));
    assert_eq!(h.timeout(), Duration::from_secs(1));
    assert_eq!((h.healthy(), h.unhealthy()), (2, 3));
    assert!(h.expects(200) && h.expects(399) && !h.expects(400) && !h.expects(199));
    let o = s.outlier().unwrap();
    assert_eq!(o.consecutive_failures(), 5);
    assert_eq!(o.base_ejection(), Duration::from_secs(30));
    assert_eq!(o.max_ejected_percent(), 50);
    let l = s.limits().unwrap();
    assert_eq!((l.max_connections(), l.max_pending()), (1024, 256));
    let Action::Forward(f) = config.routes()[0].action() else {
        panic!("forward")
    };
    let r = f.retry().unwrap();
    assert_eq!(r.attempts(), 2);
    assert_eq!(
        r.on(),
        &[
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::Status(502),
            RetryOn::Status(503),
            RetryOn::Status(504)
        ]
    );
    assert_eq!(r.per_try_timeout(), Some(Duration::from_secs(2)));
    assert_eq!(r.backoff(), Duration::from_millis(25));
    assert!(!r.non_idempotent());
}

#[test]
fn empty_blocks_take_the_documented_defaults() {
    let config = validate(
        r#"
services:
  - { name: s, health_check: {}, outlier: {}, limits: {} }
routes:
  - { id: r, forward: { service: s, retry: {} } }
"#,
    )
    .unwrap();
    let s = &config.services()[0];
    let h = s.health_check().unwrap();
    assert_eq!(
        (
            h.path(),
            h.interval(),
            h.timeout(),
            h.healthy(),
            h.unhealthy()
        ),
        (
            "/healthz",
            Duration::from_secs(5),
            Duration::from_secs(1),
            2,
            3
        )
    );
    assert!(h.expects(200) && h.expects(399) && !h.expects(500));
    let o = s.outlier().unwrap();
    assert_eq!(
        (
            o.consecutive_failures(),
            o.base_ejection(),
            o.max_ejected_percent()
        ),
        (5, Duration::from_secs(30), 50)
    );
    let l = s.limits().unwrap();
    assert_eq!((l.max_connections(), l.max_pending()), (1024, 256));
    let Action::Forward(f) = config.routes()[0].action() else {
        panic!("forward")
    };
    let r = f.retry().unwrap();
    assert_eq!(r.attempts(), 2);
    assert_eq!(
        r.on(),
        &[
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::Status(503)
        ]
    );
    assert_eq!(r.per_try_timeout(), None);
    assert_eq!(r.backoff(), Duration::from_millis(25));
    assert!(!r.non_idempotent());
    // Left out, the blocks mean: no checks, no ejection, no limits, no retries.
    let bare =
        validate("services: [{ name: s }]\nroutes: [{ id: r, forward: { service: s } }]").unwrap();
    let s = &bare.services()[0];
    assert!(s.health_check().is_none() && s.outlier().is_none() && s.limits().is_none());
}

#[test]
fn bad_values_name_the_object_and_field() {
    let service = |block: &str| format!("services:\n  - {{ name: s, {block} }}\n");
    let route = |retry: &str| {
        format!(
            "services: [{{ name: s }}]\nroutes:\n  - {{ id: r, forward: {{ service: s, retry: {retry} }} }}\n"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            service("health_check: { path: healthz }"),
            r#"service "s": health_check.path: "healthz" must start with '/'"#,
        ),
        (
            service("health_check: { interval: 0s }"),
            r#"service "s": health_check.interval: must be greater than 0"#,
        ),
        (
            service("health_check: { interval: 1s, timeout: 2s }"),
            r#"service "s": health_check.timeout: 2s is longer than the interval (1s)"#,
        ),
        (
            service("health_check: { healthy: 0 }"),
            r#"service "s": health_check.healthy: 0 must be 1-100"#,
        ),
        (
            service("health_check: { expect: [] }"),
            r#"service "s": health_check.expect: is empty; list at least one status or range"#,
        ),
        (
            service("health_check: { expect: [200-99] }"),
            r#"service "s": health_check.expect[0]: "200-99" is not a status code or range of them (e.g. 200 or 200-399, within 100-599)"#,
        ),
        (
            service("health_check: { expect: [600] }"),
            r#"service "s": health_check.expect[0]: 600 is not a status code or range of them (e.g. 200 or 200-399, within 100-599)"#,
        ),
        (
            service("outlier: { consecutive_failures: 0 }"),
            r#"service "s": outlier.consecutive_failures: 0 must be 1-1000"#,
        ),
        (
            service("outlier: { base_ejection: 30 }"),
            r#"service "s": outlier.base_ejection: "30" is not a duration; expected a whole number with a unit: ms, s, m or h (e.g. 30s)"#,
        ),
        (
            service("outlier: { max_ejected_percent: 101 }"),
            r#"service "s": outlier.max_ejected_percent: 101 must be 0-100"#,
        ),
        (
            service("limits: { max_connections: 0 }"),
            r#"service "s": limits.max_connections: 0 must be 1-1000000"#,
        ),
        (
            service("limits: { max_pending: 0 }"),
            r#"service "s": limits.max_pending: 0 must be 1-1000000"#,
        ),
        (
            route("{ attempts: 0 }"),
            r#"route "r": forward.retry.attempts: 0 must be 1-10"#,
        ),
        (
            route("{ attempts: 11 }"),
            r#"route "r": forward.retry.attempts: 11 must be 1-10"#,
        ),
        (
            route("{ on: [gateway-error] }"),
            r#"route "r": forward.retry.on[0]: "gateway-error" is not a retry condition (expected connect-failure, reset, per-try-timeout or a status 400-599)"#,
        ),
        (
            route("{ on: [200] }"),
            r#"route "r": forward.retry.on[0]: 200 is not a retry condition (expected connect-failure, reset, per-try-timeout or a status 400-599)"#,
        ),
        (
            route("{ on: [503, reset, 503] }"),
            r#"route "r": forward.retry.on[2]: 503 is listed twice"#,
        ),
        (
            route("{ on: [] }"),
            r#"route "r": forward.retry.on: is empty; list at least one condition"#,
        ),
        (
            route("{ on: [per-try-timeout] }"),
            r#"route "r": forward.retry.on: per-try-timeout needs forward.retry.per_try_timeout"#,
        ),
        (
            route("{ per_try_timeout: 0ms }"),
            r#"route "r": forward.retry.per_try_timeout: must be greater than 0"#,
        ),
        (
            route("{ backoff: 11s }"),
            r#"route "r": forward.retry.backoff: must be at most 10s"#,
        ),
    ];
    for (yaml, want) in cases {
        assert_eq!(validate(&yaml).unwrap_err(), want, "\n{yaml}");
    }
    // Unknown fields inside the blocks are parse errors.
    for yaml in [
        service("health_check: { paht: /x }"),
        service("outlier: { interval: 1s }"),
        route("{ tries: 2 }"),
    ] {
        let err = validate(&yaml).unwrap_err();
        assert!(
            err.starts_with("parse: ") && err.contains("unknown field"),
            "{err}"
        );
    }
}

#[test]
fn defaults_are_written_out_and_apply_back_unchanged() {
    let spec = ConfigSpec::from_yaml(
        "services: [{ name: s, health_check: { expect: [204] }, outlier: {}, limits: {} }]\nroutes: [{ id: r, forward: { service: s, retry: { on: [reset, 502] } } }]",
    )
    .unwrap();
    let shown = ConfigSpec::from(&Config::try_from(spec.clone()).unwrap()).with_defaults();
    assert_eq!(shown, spec.with_defaults());
    let yaml = shown.to_yaml();
    for line in [
        "path: /healthz",
        "interval: 5s",
        "timeout: 1s",
        "healthy: 2",
        "unhealthy: 3",
        "- 204",
        "consecutive_failures: 5",
        "base_ejection: 30s",
        "max_ejected_percent: 50",
        "max_connections: 1024",
        "max_pending: 256",
        "attempts: 2",
        "backoff: 25ms",
        "non_idempotent: false",
    ] {
        assert!(yaml.contains(line), "{line:?} missing from\n{yaml}");
    }
    let again = ConfigSpec::from(&Config::try_from(ConfigSpec::from_yaml(&yaml).unwrap()).unwrap())
        .with_defaults();
    assert_eq!(again, shown);
}
