use super::*;
use routemaster_common::spec::{ConfigSpec, InstanceSpec};

fn route(yaml: &str) -> RouteSpec {
    let spec = ConfigSpec::from_yaml(&format!("routes:\n  - {yaml}\n")).unwrap();
    spec.routes.into_iter().next().unwrap()
}

#[test]
fn action_column() {
    let cases = [
        ("{ id: a, forward: { service: lms } }", "→ lms"),
        (
            "{ id: a, forward: { backends: [{ service: a, weight: 90 }, { service: b, weight: 10 }] } }",
            "→ a 90%, b 10%",
        ),
        (
            "{ id: a, forward: { backends: [{ service: a }, { service: b, weight: 2 }] } }",
            "→ a 33%, b 67%",
        ),
        (
            "{ id: a, forward: { backends: [{ service: a, weight: 0 }] } }",
            "→ a",
        ),
        (
            "{ id: a, redirect: { prefix: /courses, code: 301 } }",
            "redirect 301 → /courses",
        ),
        ("{ id: a, redirect: { path: /x } }", "redirect 301 → /x"),
        (
            "{ id: a, redirect: { scheme: https, code: 308 } }",
            "redirect 308 → https://*",
        ),
        (
            "{ id: a, redirect: { scheme: https, host: x.example.com, port: 8443, prefix: /new } }",
            "redirect 301 → https://x.example.com:8443/new",
        ),
        (
            "{ id: a, redirect: { code: 302 } }",
            "redirect 302 → (same URL)",
        ),
        ("{ id: a }", "-"),
    ];
    for (yaml, want) in cases {
        assert_eq!(action_summary(&route(yaml)), want, "{yaml}");
    }
}

#[test]
fn path_column() {
    let cases = [
        ("{ id: a }", "prefix /"),
        ("{ id: a, path: { prefix: /courses } }", "prefix /courses"),
        ("{ id: a, path: { exact: /about } }", "exact /about"),
        ("{ id: a, path: { regex: '/c/[0-9]+' } }", "regex /c/[0-9]+"),
    ];
    for (yaml, want) in cases {
        assert_eq!(path_summary(route(yaml).path.as_ref()), want, "{yaml}");
    }
}

#[test]
fn routes_table_is_aligned_with_defaults_filled_in() {
    let routes = vec![
        route(
            "{ id: lms-courses, hosts: [www.example.com, '*.example.org'], path: { prefix: /courses }, methods: [GET, HEAD], forward: { service: lms } }",
        ),
        route(
            "{ id: old, group: edge, priority: 5, path: { prefix: /old }, redirect: { prefix: /courses } }",
        ),
    ];
    let got = routes_table(&routes, None, false);
    let want = "\
ID            GROUP     HOSTS                            PATH              METHODS    ACTION                    PRIORITY
lms-courses   default   www.example.com, *.example.org   prefix /courses   GET,HEAD   → lms                     0
old           edge      *                                prefix /old       *          redirect 301 → /courses   5
";
    assert_eq!(got, want, "\n{got}");
    assert_eq!(routes_table(&[], None, false), "no routes\n");
}

#[test]
fn services_table_shows_counts_weights_and_balancing() {
    let services = vec![
        ServiceSpec {
            name: "lms".into(),
            instances: vec![
                InstanceSpec {
                    address: "127.0.0.1:9001".into(),
                    weight: None,
                    ..Default::default()
                },
                InstanceSpec {
                    address: "127.0.0.1:9002".into(),
                    weight: Some(2),
                    ..Default::default()
                },
                InstanceSpec {
                    address: "127.0.0.1:9003".into(),
                    weight: Some(0),
                    ..Default::default()
                },
            ],
            load_balancing: Some(LoadBalancing::LeastRequest),
            protocol: None,
            ..Default::default()
        },
        ServiceSpec {
            name: "empty".into(),
            instances: vec![],
            load_balancing: None,
            protocol: None,
            ..Default::default()
        },
    ];
    let got = services_table(&services, &[], None, false);
    let want = "\
NAME    INSTANCES   ADDRESSES                                                             LB
lms     3           127.0.0.1:9001, 127.0.0.1:9002 (weight 2), 127.0.0.1:9003 (drained)   least_request
empty   0           -                                                                     round_robin
";
    assert_eq!(got, want, "\n{got}");
}

#[test]
fn narrow_terminal_wraps_instead_of_overflowing() {
    let services = vec![ServiceSpec {
        name: "lms".into(),
        instances: (1..=6)
            .map(|i| InstanceSpec {
                address: format!("10.0.0.{i}:9000"),
                weight: None,
                ..Default::default()
            })
            .collect(),
        load_balancing: None,
        protocol: None,
        ..Default::default()
    }];
    let got = services_table(&services, &[], Some(60), false);
    assert!(got.lines().count() > 2, "\n{got}");
    assert!(got.lines().all(|l| l.chars().count() <= 60), "\n{got}");
}

fn node(id: &str, applied: u64, state: &str, nack: Option<(u64, &str)>) -> v1::NodeStatus {
    v1::NodeStatus {
        id: id.into(),
        group: "default".into(),
        applied_version: applied,
        healthy: state == "connected",
        state: state.into(),
        last_nack: nack.map(|(_, e)| e.to_owned()).unwrap_or_default(),
        last_nack_version: nack.map(|(v, _)| v).unwrap_or_default(),
        last_seen_unix_ms: 1_000_000,
        ..Default::default()
    }
}

#[test]
fn status_uses_the_shared_node_states_and_counts_lost_nodes() {
    let nodes = vec![
        node("p1", 10, "connected", None),
        node("p2", 8, "connected", None),
        node(
            "p3",
            9,
            "connected",
            Some((10, "route \"x\": path.regex: bad")),
        ),
        node("p4", 10, "lost", None),
        node("p5", 7, "left", None),
    ];
    let resp = v1::StatusResponse {
        version: 10,
        routes: 4,
        services: 2,
        etcd_connected: true,
        nodes,
        stale_reason: String::new(),
    };
    let doc = StatusDoc::new(&resp);
    assert_eq!(
        (
            doc.status.nodes.total,
            doc.status.nodes.converged,
            doc.status.nodes.lost
        ),
        (4, 1, 1),
        "left nodes do not count, lost ones do"
    );
    assert!(!doc.converged && !doc.healthy());
    let now = 1_040_000;
    let want = "\
version         10
routes          4
services        2
etcd connected  yes
fleet           1/4 nodes converged; lost: p4 (last seen 40s ago)
behind:
  p2  applied version 8
  p3  applied version 9
NACKs:
  p3  version 10: route \"x\": path.regex: bad
";
    assert_eq!(render_status(&doc, now), want);
    assert_eq!(
        doc.problem(now).unwrap(),
        "the fleet has not converged: 1/4 nodes converged; lost: p4 (last seen 40s ago)"
    );
    let json: serde_json::Value = serde_json::from_str(&to_json(&doc).unwrap()).unwrap();
    // The status API's fields, then the details.
    assert_eq!(json["version"], 10);
    assert_eq!(json["routes"], 4);
    assert_eq!(json["etcd"]["connected"], true);
    assert_eq!(json["nodes"]["total"], 4);
    assert_eq!(json["nodes"]["converged"], 1);
    assert_eq!(json["nodes"]["lost"], 1);
    assert_eq!(json["converged"], false);
    assert_eq!(json["behind"][0]["id"], "p2");
    assert_eq!(json["nacked"][0]["version"], 10);
    assert_eq!(json["lost"][0]["id"], "p4");
    assert_eq!(json["lost"][0]["last_seen"], "1970-01-01T00:16:40.000Z");
    assert!(json.get("stale_reason").is_none());
    let yaml = to_yaml(&doc).unwrap();
    assert!(yaml.starts_with("version: 10\n"), "{yaml}");

    let healthy = StatusDoc::new(&v1::StatusResponse {
        version: 3,
        etcd_connected: true,
        nodes: vec![
            node("p1", 3, "connected", None),
            node("p2", 1, "left", None),
        ],
        ..Default::default()
    });
    assert!(healthy.healthy() && healthy.problem(now).is_none());
    let empty = StatusDoc::new(&v1::StatusResponse::default());
    assert!(
        render_status(&empty, now)
            .contains("etcd connected  no\nfleet           0/0 nodes converged\n")
    );
    assert_eq!(
        empty.problem(now).unwrap(),
        "etcd is unreachable: the control plane serves its last snapshot and refuses writes"
    );
}

#[test]
fn last_seen() {
    let now = 1_000_000_000;
    let cases = [
        (0, "never"),
        (now, "0s ago"),
        (now + 5_000, "0s ago"),
        (now - 3_400, "3s ago"),
        (now - 59_999, "59s ago"),
        (now - 60_000, "1m ago"),
        (now - 7_200_000, "2h ago"),
        (now - 3 * 86_400_000, "3d ago"),
    ];
    for (then, want) in cases {
        assert_eq!(ago(now, then), want, "{then}");
    }
}

#[test]
fn nodes_table_columns() {
    let mut n = node("proxy-1", 10, "connected", None);
    n.labels.insert("zone".into(), "b".into());
    n.labels.insert("az".into(), "1".into());
    let mut lost = node("proxy-3", 10, "lost", None);
    lost.last_seen_unix_ms = 1_003_000 - 125_000;
    let nodes: Vec<crate::nodes::Node> = [
        n,
        node("proxy-2", 9, "connected", Some((10, "x"))),
        lost,
        node("proxy-4", 9, "connected", None),
    ]
    .iter()
    .map(crate::nodes::Node::from)
    .collect();
    let got = nodes_table(&nodes, 10, 1_003_000, None, false);
    let want = "\
ID        GROUP     VERSION   STATE       LAST SEEN   LABELS
proxy-1   default   10        connected   3s ago      az=1,zone=b
proxy-2   default   9         nacked      3s ago      -
proxy-3   default   10        lost        2m ago      -
proxy-4   default   9         behind      3s ago      -
";
    assert_eq!(got, want, "\n{got}");
    let wide = nodes_table(&nodes[1..2], 10, 1_003_000, None, true);
    assert!(
        wide.starts_with("ID        GROUP     VERSION   STATE    LAST SEEN   LABELS   CONTROL PLANE   BINARY   UPTIME   IN FLIGHT   REQUESTS   ERRORS   LAST NACK\n"),
        "\n{wide}"
    );
    assert!(wide.contains("version 10: x"), "\n{wide}");
}

#[test]
fn node_json_matches_the_status_api() {
    let mut n = node("p1", 7, "connected", None);
    n.labels.insert("zone".into(), "a".into());
    let doc = NodesDoc::new(&[crate::nodes::Node::from(&n)], 7);
    let json: serde_json::Value = serde_json::from_str(&to_json(&doc).unwrap()).unwrap();
    assert_eq!(json["version"], 7);
    let first = &json["nodes"][0];
    assert_eq!(first["id"], "p1");
    assert_eq!(first["group"], "default");
    assert_eq!(first["labels"]["zone"], "a");
    assert_eq!(first["applied_version"], 7);
    assert_eq!(first["last_nack"], serde_json::Value::Null);
    assert_eq!(first["last_seen"], "1970-01-01T00:16:40.000Z");
    assert_eq!(first["healthy"], true);
    assert_eq!(first["state"], "connected");
}

#[test]
fn list_documents_read_back_as_route_files() {
    let routes = vec![route(
        "{ id: a, path: { prefix: /a }, forward: { service: lms } }",
    )];
    let services = vec![ServiceSpec {
        name: "lms".into(),
        instances: vec![InstanceSpec {
            address: "127.0.0.1:9001".into(),
            weight: None,
            ..Default::default()
        }],
        load_balancing: None,
        protocol: None,
        ..Default::default()
    }];
    for text in [
        to_yaml(&RoutesDoc { routes: &routes }).unwrap(),
        to_json(&RoutesDoc { routes: &routes }).unwrap(),
    ] {
        assert_eq!(
            ConfigSpec::from_yaml(&text).unwrap().routes,
            routes,
            "{text}"
        );
    }
    let yaml = to_yaml(&ServicesDoc {
        services: &services,
    })
    .unwrap();
    assert_eq!(ConfigSpec::from_yaml(&yaml).unwrap().services, services);
    let json = to_json(&routes[0]).unwrap();
    assert!(json.contains("\"forward\": {"), "{json}");
}

#[test]
fn apply_lines() {
    let change = |kind: v1::Kind, name: &str, change: v1::Change| v1::ObjectChange {
        kind: kind as i32,
        name: name.into(),
        change: change as i32,
    };
    let resp = v1::ApplyResponse {
        changes: vec![
            change(v1::Kind::Service, "lms", v1::Change::Created),
            change(v1::Kind::Route, "a", v1::Change::Updated),
            change(v1::Kind::Route, "b", v1::Change::Unchanged),
        ],
        version: 42,
        dry_run: false,
    };
    assert_eq!(
        render_apply(&resp, false),
        "service/lms created\nroute/a updated\nroute/b unchanged\nversion 42\n"
    );
    assert_eq!(
        render_apply(&resp, true),
        "(dry run)\nservice/lms would be created\nroute/a would be updated\nroute/b unchanged\nversion 42\n"
    );
    assert_eq!(
        render_delete(v1::Kind::Route, "x", 43),
        "route/x deleted\nversion 43\n"
    );
}
