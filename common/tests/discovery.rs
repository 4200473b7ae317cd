//! `services[].instances[].discovery` and `dns_refresh`: defaults, the values in force,
//! and errors naming the field.

use std::time::Duration;

use routemaster_common::model::{DEFAULT_DNS_REFRESH, Discovery};
use routemaster_common::spec::ConfigSpec;
use routemaster_common::{Config, ValidationErrors};

fn validate(yaml: &str) -> Result<Config, String> {
    let spec = ConfigSpec::from_yaml(yaml).map_err(|e| format!("parse: {e}"))?;
    Config::try_from(spec).map_err(|e: ValidationErrors| e.to_string())
}

fn instance(block: &str) -> String {
    format!("services:\n  - name: s\n    instances: [{{ {block} }}]\n")
}

#[test]
fn discovery_reads_as_written_with_defaults() {
    let cases = [
        ("address: lms.internal:8080", Discovery::Static),
        (
            "address: lms.internal:8080, discovery: static",
            Discovery::Static,
        ),
        ("address: 10.0.0.1:8080", Discovery::Static),
        (
            "address: lms.internal:8080, discovery: dns",
            Discovery::Dns {
                refresh: DEFAULT_DNS_REFRESH,
            },
        ),
        (
            "address: localhost:80, discovery: dns, dns_refresh: 1s",
            Discovery::Dns {
                refresh: Duration::from_secs(1),
            },
        ),
        (
            "address: lms.internal:8080, discovery: dns, dns_refresh: 5m",
            Discovery::Dns {
                refresh: Duration::from_secs(300),
            },
        ),
    ];
    assert_eq!(DEFAULT_DNS_REFRESH, Duration::from_secs(30));
    for (block, want) in cases {
        let config = validate(&instance(block)).unwrap_or_else(|e| panic!("{block}: {e}"));
        let got = config.services()[0].instances()[0].discovery();
        assert_eq!(got, want, "{block}");
    }
}

#[test]
fn bad_discovery_names_the_object_and_field() {
    let cases = [
        (
            "address: 10.0.0.1:8080, discovery: dns",
            r#"service "s": instances[0].discovery: dns needs a host name, but "10.0.0.1:8080" is an IP address"#,
        ),
        (
            "address: '[::1]:8080', discovery: dns",
            r#"service "s": instances[0].discovery: dns needs a host name, but "[::1]:8080" is an IP address"#,
        ),
        (
            "address: lms.internal:8080, discovery: dns, dns_refresh: 500ms",
            r#"service "s": instances[0].dns_refresh: must be at least 1s"#,
        ),
        (
            "address: lms.internal:8080, discovery: dns, dns_refresh: 0s",
            r#"service "s": instances[0].dns_refresh: must be at least 1s"#,
        ),
        (
            "address: lms.internal:8080, discovery: dns, dns_refresh: 30",
            r#"service "s": instances[0].dns_refresh: "30" is not a duration; expected a whole number with a unit: ms, s, m or h (e.g. 30s)"#,
        ),
        (
            "address: lms.internal:8080, dns_refresh: 10s",
            r#"service "s": instances[0].dns_refresh: only applies with discovery: dns"#,
        ),
        (
            "address: lms.internal:8080, discovery: static, dns_refresh: 10s",
            r#"service "s": instances[0].dns_refresh: only applies with discovery: dns"#,
        ),
    ];
    for (block, want) in cases {
        assert_eq!(validate(&instance(block)).unwrap_err(), want, "{block}");
    }
    // A TLS service checks certificates against tls.server_name, never a resolved IP.
    let https = |tls: &str| {
        format!(
            "services:\n  - name: s\n    protocol: https\n{tls}    instances: [{{ address: lms.internal:443, discovery: dns }}]\n"
        )
    };
    assert_eq!(
        validate(&https("")).unwrap_err(),
        r#"service "s": instances[0].discovery: dns on an h2/https service needs tls.server_name (the name certificates are checked against)"#
    );
    assert!(validate(&https("    tls: { server_name: lms.internal }\n")).is_ok());
    let err = validate(&instance("address: a.b:1, discovery: srv")).unwrap_err();
    assert!(err.starts_with("parse: ") && err.contains("srv"), "{err}");
}

#[test]
fn dns_instances_write_back_their_refresh() {
    let yaml = instance("address: lms.internal:8080, discovery: dns");
    let config = validate(&yaml).unwrap();
    let shown = ConfigSpec::from(&config).with_defaults();
    let i = &shown.services[0].instances[0];
    assert_eq!(
        i.discovery,
        Some(routemaster_common::spec::DiscoverySpec::Dns)
    );
    assert_eq!(i.dns_refresh.as_deref(), Some("30s"));
    // ...and applies back unchanged.
    let again = Config::try_from(ConfigSpec::from_yaml(&shown.to_yaml()).unwrap()).unwrap();
    assert_eq!(
        again.services()[0].instances()[0].discovery(),
        config.services()[0].instances()[0].discovery()
    );
}
