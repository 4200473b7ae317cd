//! `tls.certificates`: the pure certificate checks (key matches, validity, host
//! coverage with one-label wildcards) and the route-file validation around them, with
//! certificates made by rcgen at test time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::SystemTime;

use rcgen::{CertificateParams, KeyPair, PKCS_ED25519, date_time_ymd};
use routemaster_common::Config;
use routemaster_common::spec::{ConfigSpec, Sources};
use routemaster_common::tls::{REDACTED, check_pair};

/// Ok, or the field and a fragment of the reason.
type Want = Result<(), (&'static str, &'static str)>;

struct Pem {
    cert: String,
    key: String,
}

fn make(names: &[&str], key: &KeyPair, window: Option<(i32, i32)>) -> String {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    if let Some((from, to)) = window {
        params.not_before = date_time_ymd(from, 1, 1);
        params.not_after = date_time_ymd(to, 1, 1);
    }
    params.self_signed(key).expect("self-signed").pem()
}

fn pair(names: &[&str]) -> Pem {
    let key = KeyPair::generate().expect("key");
    Pem {
        cert: make(names, &key, None),
        key: key.serialize_pem(),
    }
}

fn hosts(h: &[&str]) -> Vec<String> {
    h.iter().map(|s| s.to_string()).collect()
}

#[test]
fn pairs_are_checked_field_by_field() {
    let good = pair(&["www.example.com", "*.example.org"]);
    let other = pair(&["www.example.com"]);
    let ed_key = KeyPair::generate_for(&PKCS_ED25519).expect("ed25519");
    let ed = Pem {
        cert: make(&["ed.example.com"], &ed_key, None),
        key: ed_key.serialize_pem(),
    };
    let expired_key = KeyPair::generate().expect("key");
    let expired = make(&["www.example.com"], &expired_key, Some((2000, 2001)));
    let future = make(&["www.example.com"], &expired_key, Some((2090, 2091)));
    let now = SystemTime::now();
    let broken = good.cert.replace('A', "!");
    // (case, cert, key, hosts, Ok or (field, reason fragment))
    let cases: Vec<(&str, &str, String, Vec<String>, Want)> = vec![
        (
            "matching ECDSA pair",
            &good.cert,
            good.key.clone(),
            hosts(&["www.example.com"]),
            Ok(()),
        ),
        (
            "wildcard covers one label",
            &good.cert,
            good.key.clone(),
            hosts(&["a.example.org"]),
            Ok(()),
        ),
        (
            "declared wildcard is covered",
            &good.cert,
            good.key.clone(),
            hosts(&["*.example.org"]),
            Ok(()),
        ),
        (
            "Ed25519 pair",
            &ed.cert,
            ed.key.clone(),
            hosts(&["ed.example.com"]),
            Ok(()),
        ),
        (
            "wildcard is one label only",
            &good.cert,
            good.key.clone(),
            hosts(&["a.b.example.org"]),
            Err(("hosts", "\"a.b.example.org\" is not covered")),
        ),
        (
            "host not in the certificate",
            &good.cert,
            good.key.clone(),
            hosts(&["api.example.com", "www.example.com"]),
            Err((
                "hosts",
                "\"api.example.com\" is not covered by the certificate, which names www.example.com, *.example.org",
            )),
        ),
        (
            "another key",
            &good.cert,
            other.key.clone(),
            hosts(&["www.example.com"]),
            Err(("key_pem", "does not match the certificate")),
        ),
        (
            "expired",
            &expired,
            expired_key.serialize_pem(),
            hosts(&["www.example.com"]),
            Err(("cert_pem", "expired at 2001-01-01T00:00:00.000Z")),
        ),
        (
            "not yet valid",
            &future,
            expired_key.serialize_pem(),
            hosts(&["www.example.com"]),
            Err(("cert_pem", "not valid before 2090-01-01")),
        ),
        (
            "no certificate block",
            "hello",
            good.key.clone(),
            hosts(&["www.example.com"]),
            Err(("cert_pem", "holds no certificate")),
        ),
        (
            "key where the cert goes",
            &good.key,
            good.key.clone(),
            hosts(&["www.example.com"]),
            Err(("cert_pem", "holds no certificate")),
        ),
        (
            "cert where the key goes",
            &good.cert,
            good.cert.clone(),
            hosts(&["www.example.com"]),
            Err(("key_pem", "holds no private key")),
        ),
        (
            "broken base64",
            &broken,
            good.key.clone(),
            hosts(&["www.example.com"]),
            Err(("cert_pem", "")),
        ),
    ];
    for (case, cert, key, hosts, want) in cases {
        let got = check_pair(cert, &key, &hosts, now);
        match (got, want) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err((field, fragment))) => {
                assert_eq!(e.field, field, "{case}: {e}");
                assert!(e.reason.contains(fragment), "{case}: {e}");
                assert!(
                    !e.reason.contains("PRIVATE"),
                    "{case}: no key material in {e}"
                );
            }
            (got, want) => panic!("{case}: got {got:?}, want {want:?}"),
        }
    }
}

fn tls_yaml(entries: &str) -> String {
    format!("tls:\n  certificates:\n{entries}")
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("        {l}\n")).collect()
}

fn inline(name: &str, hosts: &str, p: &Pem, extra: &str) -> String {
    format!(
        "    - name: {name}\n      hosts: {hosts}\n{extra}      cert_pem: |\n{}      key_pem: |\n{}",
        indent(&p.cert),
        indent(&p.key)
    )
}

fn validate(yaml: &str) -> Result<Config, String> {
    let sources = Sources::parse("routes.yaml", yaml).map_err(|e| e.to_string())?;
    sources.into_config().map_err(|e| e.to_string())
}

#[test]
fn route_file_validation_names_the_certificate_and_field() {
    let a = pair(&["a.example.com"]);
    let b = pair(&["b.example.com", "*.example.net"]);
    let ok = validate(&tls_yaml(&format!(
        "{}{}",
        inline("zeta", "[a.example.com]", &a, "      default: true\n"),
        inline("alpha", "[b.example.com, \"*.example.net\"]", &b, "")
    )))
    .expect("valid");
    let names: Vec<&str> = ok.certificates().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["alpha", "zeta"], "sorted by name");
    assert!(ok.certificates()[1].is_default());

    let files = "    - name: files\n      hosts: [f.example.com]\n      cert_file: /etc/f.pem\n      key_file: /etc/f.key\n";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "key of another certificate",
            tls_yaml(&format!(
                "    - name: mixed\n      hosts: [a.example.com]\n      cert_pem: |\n{}      key_pem: |\n{}",
                indent(&a.cert),
                indent(&b.key)
            )),
            "routes.yaml:3: certificate \"mixed\": key_pem: does not match the certificate",
        ),
        (
            "hosts not covered",
            tls_yaml(&inline("a", "[x.example.com]", &a, "")),
            "certificate \"a\": hosts: \"x.example.com\" is not covered",
        ),
        (
            "no hosts",
            tls_yaml(&inline("a", "[]", &a, "")),
            "certificate \"a\": hosts: must list at least one",
        ),
        (
            "bad host",
            tls_yaml(&inline("a", "[\"a.example.com:443\"]", &a, "")),
            "certificate \"a\": hosts[0]: \"a.example.com:443\" is not a DNS name",
        ),
        (
            "bad name",
            tls_yaml(&inline("A_B", "[a.example.com]", &a, "")),
            "certificate \"A_B\": name: \"A_B\" has 'A'",
        ),
        (
            "both pem and file",
            tls_yaml(&inline(
                "a",
                "[a.example.com]",
                &a,
                "      cert_file: /x.pem\n",
            )),
            "certificate \"a\": cert_pem: give either cert_pem or cert_file, not both",
        ),
        (
            "no key",
            tls_yaml("    - name: a\n      hosts: [a.example.com]\n      cert_file: /x.pem\n"),
            "certificate \"a\": key_pem: is required (or key_file)",
        ),
        (
            "two defaults",
            tls_yaml(&format!(
                "{}{}",
                inline("a", "[a.example.com]", &a, "      default: true\n"),
                inline("b", "[b.example.com]", &b, "      default: true\n")
            )),
            "certificate \"b\": default: another certificate is already the default",
        ),
        (
            "host listed twice",
            tls_yaml(&format!(
                "{}{}",
                inline("a", "[a.example.com]", &a, ""),
                "    - name: c\n      hosts: [a.example.com]\n      cert_file: /c.pem\n      key_file: /c.key\n"
            )),
            "certificate \"c\": hosts: \"a.example.com\" is also listed by certificate \"a\"",
        ),
        (
            "declared twice",
            tls_yaml(&format!("{files}{files}")),
            "certificate \"files\" is declared twice: at routes.yaml:3 and at routes.yaml:7",
        ),
        (
            "unknown field",
            tls_yaml("    - name: a\n      hosts: [a.example.com]\n      cert: x\n"),
            "unknown field `cert`",
        ),
    ];
    for (case, yaml, want) in cases {
        let got = validate(&yaml).expect_err(case);
        assert!(got.contains(want), "{case}: {got}");
        assert!(
            !got.contains("PRIVATE KEY"),
            "{case}: key material in {got}"
        );
    }
    // Files are accepted as written: the proxy reads and checks them.
    let c = validate(&tls_yaml(files)).expect("files");
    assert_eq!(c.certificates()[0].cert().file(), Some("/etc/f.pem"));
}

#[test]
fn keys_are_redacted_when_shown_and_kept_on_the_wire() {
    let a = pair(&["a.example.com"]);
    let config = validate(&tls_yaml(&inline("a", "[a.example.com]", &a, ""))).expect("valid");
    let wire = ConfigSpec::from(&config);
    let back = Config::try_from(ConfigSpec::from_yaml(&wire.to_yaml()).expect("parse"))
        .expect("the wire form validates again");
    assert_eq!(ConfigSpec::from(&back), wire);

    let shown = wire.clone().redacted().to_yaml();
    assert!(shown.contains(REDACTED), "{shown}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    assert!(
        shown.contains("BEGIN CERTIFICATE"),
        "the certificate is public: {shown}"
    );
    for debug in [format!("{config:?}"), format!("{wire:?}")] {
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }
}
