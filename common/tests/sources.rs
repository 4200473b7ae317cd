//! Route files as teams keep them: several YAML documents per file, several files per
//! directory. Every error names the file (and the line: of the text, or of the object).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use routemaster_common::model::LoadBalancing;
use routemaster_common::spec::{ConfigSpec, Sources};

const SVC: &str = "services:\n  - name: lms\n    instances: [{ address: \"127.0.0.1:9001\" }]\n";

#[test]
fn files_that_are_not_route_files_say_why_and_where() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "plain text",
            "hello world\n",
            "f.yaml:1:1: not a YAML mapping",
        ),
        (
            "ini",
            "[section]\nk = v\n",
            "f.yaml:1:1: not a YAML mapping",
        ),
        ("html", "<html>\n<body>\n", "f.yaml:1:1: not a YAML mapping"),
        (
            "list at the top",
            "- id: a\n  forward: { service: x }\n",
            "f.yaml:1:1: not a YAML mapping",
        ),
        (
            "second document is not a mapping",
            "routes: []\n---\njust words\n",
            "f.yaml:3:1: not a YAML mapping",
        ),
        (
            "a bare route",
            "id: b\nforward: { service: x }\n",
            "f.yaml:1:1: unknown field `id` at the top level; a route file has only `services:`, `routes:` and `tls:`",
        ),
        (
            "markdown",
            "# Title\n\nSome text: here\n",
            "f.yaml:3:1: unknown field `Some text` at the top level",
        ),
        (
            "route entry not a mapping",
            "routes:\n- x\n",
            "f.yaml:2:3: expected a mapping (`field: value` lines) here",
        ),
        (
            "routes not a list",
            "routes: x\n",
            "f.yaml:1:9: expected a list",
        ),
        (
            "unknown field in a route",
            "routes:\n  - id: a\n    bogus: 1\n",
            "f.yaml:3:5: unknown field `bogus`, expected one of id, hosts",
        ),
        (
            "wrong type",
            "routes:\n  - id: a\n    priority: high\n",
            "f.yaml:3:15: invalid i32",
        ),
        ("unclosed", "routes: [\n", "f.yaml:1:9: unclosed bracket"),
        (
            "control characters are shown escaped",
            "\u{1}routes: []\n",
            "f.yaml:1:1: unexpected character: `\\u{1}'",
        ),
    ];
    for (name, text, want) in cases {
        let err = Sources::parse("f.yaml", text).unwrap_err().to_string();
        assert!(err.starts_with(want), "{name}: got {err:?}, want {want:?}…");
        for jargon in ["from_str_multiple", "-->", "<input>", "struct Document"] {
            assert!(
                !err.contains(jargon),
                "{name}: jargon {jargon:?} in {err:?}"
            );
        }
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
    }
}

#[test]
fn documents_and_files_add_up() {
    let cases: &[(&str, &[&str], usize, usize)] = &[
        ("empty file", &[""], 0, 0),
        ("only comments", &["# nothing yet\n"], 0, 0),
        ("only separators", &["---\n---\n"], 0, 0),
        ("empty lists", &["routes: []\nservices: []\n"], 0, 0),
        ("one document", &[SVC], 1, 0),
        (
            "two documents",
            &["services: [{ name: a }]\n---\nroutes: [{ id: r, forward: { service: a } }]\n"],
            1,
            1,
        ),
        (
            "two files",
            &[
                "services: [{ name: a }]\n",
                "routes: [{ id: r, forward: { service: a } }]\n",
            ],
            1,
            1,
        ),
    ];
    for (name, files, services, routes) in cases {
        let mut all = Sources::default();
        for (i, text) in files.iter().enumerate() {
            all.extend(Sources::parse(&format!("f{i}.yaml"), text).unwrap());
        }
        assert_eq!(all.spec.services.len(), *services, "{name}");
        assert_eq!(all.spec.routes.len(), *routes, "{name}");
        assert_eq!(all.is_empty(), services + routes == 0, "{name}");
        // What the proxy serves: references may cross files and documents.
        all.into_config().unwrap();
    }
}

#[test]
fn duplicates_name_both_places() {
    let a = "services:\n  - name: lms\n  - name: web\nroutes:\n  - id: r1\n    forward: { service: lms }\n";
    let b = "# team b\nroutes:\n  - id: r2\n    forward: { service: web }\n  - id: r1\n    forward: { service: web }\n---\nservices:\n  - name: lms\n";
    let mut all = Sources::parse("team-a.yaml", a).unwrap();
    all.extend(Sources::parse("team-b.yaml", b).unwrap());
    let errors: Vec<String> = all.duplicates().iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            r#"service "lms" is declared twice: at team-a.yaml:2 and at team-b.yaml:9"#,
            r#"route "r1" is declared twice: at team-a.yaml:5 and at team-b.yaml:5"#,
        ]
    );
    let err = all.clone().into_config().unwrap_err().to_string();
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(all.validate_objects().is_err());
}

#[test]
fn validation_errors_carry_the_file_and_line_of_their_object() {
    let a = format!("{SVC}routes:\n  - id: good\n    forward: {{ service: lms }}\n");
    let b = "routes:\n  - id: bad\n    path: { prefix: nope }\n    forward: { service: lms }\n  - id: orphan\n    forward: { service: ghost }\n";
    let mut all = Sources::parse("a.yaml", &a).unwrap();
    all.extend(Sources::parse("b.yaml", b).unwrap());
    let err = all.clone().into_config().unwrap_err().to_string();
    assert_eq!(
        err,
        "b.yaml:2: route \"bad\": path.prefix: \"nope\" must start with '/'"
    );
    // References are checked once every object is valid on its own.
    let mut fixed = Sources::parse("a.yaml", &a).unwrap();
    fixed.extend(Sources::parse("b.yaml", &b.replace("nope", "/nope")).unwrap());
    let err = fixed.into_config().unwrap_err().to_string();
    assert_eq!(
        err,
        "b.yaml:5: route \"orphan\": forward.service: unknown service \"ghost\""
    );
    // Each object on its own: the unknown service is the control plane's to judge.
    let err = all.validate_objects().unwrap_err().to_string();
    assert_eq!(
        err,
        "b.yaml:2: route \"bad\": path.prefix: \"nope\" must start with '/'"
    );
}

#[test]
fn both_sides_of_a_choice_are_an_error_not_a_silent_pick() {
    let cases = [
        (
            "routes: [{ id: both, path: { prefix: /a }, forward: { service: lms }, redirect: { path: /b } }]",
            r#"route "both": forward: set both forward and redirect"#,
        ),
        (
            "routes: [{ id: both, path: { prefix: /a, exact: /a }, forward: { service: lms } }]",
            r#"route "both": path: set exactly one of prefix, exact or regex"#,
        ),
        (
            "routes: [{ id: both, forward: { service: lms, backends: [{ service: lms }] } }]",
            r#"route "both": forward: set exactly one of service or backends"#,
        ),
        (
            "routes: [{ id: both, headers: [{ name: x, exact: a, present: true }], forward: { service: lms } }]",
            r#"route "both": headers[0]: set exactly one of exact, regex or present: true"#,
        ),
    ];
    for (routes, want) in cases {
        let sources = Sources::parse("r.yaml", &format!("{SVC}{routes}\n")).unwrap();
        let err = sources.validate_objects().unwrap_err().to_string();
        assert!(err.contains(want), "{routes}: {err}");
        assert!(err.starts_with("r.yaml:"), "{err}");
    }
}

#[test]
fn defaults_written_out() {
    let spec = ConfigSpec::from_yaml(
        "services: [{ name: a, instances: [{ address: \"h:1\" }] }]\nroutes:\n  - { id: f, forward: { backends: [{ service: a }] } }\n  - { id: r, redirect: { path: /x } }\n",
    )
    .unwrap()
    .with_defaults();
    assert_eq!(
        spec.services[0].load_balancing,
        Some(LoadBalancing::RoundRobin)
    );
    assert_eq!(spec.services[0].instances[0].weight, Some(1));
    let f = &spec.routes[0];
    assert_eq!(f.path.as_ref().unwrap().prefix.as_deref(), Some("/"));
    assert_eq!((f.priority, f.group.as_deref()), (Some(0), Some("default")));
    assert_eq!(
        f.forward.as_ref().unwrap().backends.as_ref().unwrap()[0].weight,
        Some(1)
    );
    assert_eq!(spec.routes[1].redirect.as_ref().unwrap().code, Some(301));
    assert!(f.hosts.is_none() && f.methods.is_none() && f.headers.is_none());
    let yaml = spec.to_yaml();
    assert!(yaml.contains("load_balancing: round_robin"), "{yaml}");
}
