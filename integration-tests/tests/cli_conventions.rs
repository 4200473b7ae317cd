//! The CLI as teams script it (kubectl conventions), against a real etcd, control plane
//! and proxies: inputs (`-f -`, `-f DIR`, several documents), errors that name the file
//! and line, `get` forms and formats, output that applies back, exit codes (0 ok, 1
//! error, 2 usage, 3 diff differences), `status` that CI can wait on, and nodes that
//! are lost rather than silently gone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use routemaster_integration_tests::backend::EchoBackend;
use routemaster_integration_tests::cluster::cli;
use routemaster_integration_tests::eventually;
use routemaster_integration_tests::fleet::Fleet;
use routemaster_integration_tests::process::binary;
use tokio::io::AsyncWriteExt;

/// `routemaster --control-plane URL ARGS` with `stdin` fed in: (exit code, stdout, stderr).
async fn cli_stdin(url: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = tokio::process::Command::new(binary("routemaster"))
        .arg("--control-plane")
        .arg(url)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("CLI did not finish in 30s")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn no_jargon(err: &str) {
    for word in [
        "from_str_multiple",
        "batch",
        "-->",
        "<input>",
        "struct Document",
    ] {
        assert!(!err.contains(word), "library jargon {word:?} in: {err}");
    }
}

const SERVICES: &str = "services:
  - name: lms
    instances: [{ address: \"127.0.0.1:9001\" }]
  - name: web
    instances: [{ address: \"127.0.0.1:9002\", weight: 2 }]
    load_balancing: least_request
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_outputs_errors_and_exit_codes() {
    let fleet = Fleet::start("cli-conventions", &[]).await;
    let url = fleet.cp_url();
    let dir = fleet.dir.path();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };

    // `-f -`: standard input.
    let (code, out, err) = cli_stdin(&url, &["apply", "-f", "-"], SERVICES).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("service/lms created") && out.contains("service/web created"),
        "{out}"
    );

    // `-f DIR`: every *.yaml/*.yml in it, several documents per file.
    write(
        "teams/a.yaml",
        "routes:\n  - id: courses\n    path: { prefix: /courses }\n    forward: { service: lms }\n",
    );
    write(
        "teams/b.yml",
        "routes:\n  - id: about\n    path: { exact: /about }\n    forward: { service: web }\n---\nroutes:\n  - id: old\n    path: { prefix: /old }\n    redirect: { prefix: /courses }\n",
    );
    write("teams/notes.txt", "not a route file");
    let teams = dir.join("teams");
    let teams = teams.to_str().unwrap();
    let (code, out, err) = cli(&url, &["apply", "-f", teams]).await;
    assert_eq!(code, 0, "{out}{err}");
    for id in ["courses", "about", "old"] {
        assert!(out.contains(&format!("route/{id} created")), "{out}");
    }

    // diff: 0 when nothing differs, 3 when something does, with the new object's content.
    let (code, out, err) = cli(&url, &["diff", "-f", teams]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "0 to create, 0 to update, 3 unchanged\n"),
        "{err}"
    );
    let new = write(
        "new.yaml",
        "routes:\n  - id: new\n    path: { prefix: /new }\n    forward: { service: lms }\n",
    );
    let (code, out, err) = cli(&url, &["diff", "-f", &new]).await;
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.starts_with("+ route/new\n  + id: new\n  + path:\n  +   prefix: /new\n"),
        "{out}"
    );

    // get: every spelling of one object, and the formats.
    for args in [
        vec!["get", "route", "courses"],
        vec!["get", "route/courses"],
        vec!["get", "routes", "courses"],
        vec!["get", "rt", "courses"],
        vec!["get", "rt/courses"],
    ] {
        let (code, out, err) = cli(&url, &args).await;
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            out.starts_with("ID ") && out.contains("courses"),
            "{args:?}: {out}"
        );
        assert!(!out.contains("about"), "{args:?}: {out}");
    }
    let (_, out, _) = cli(&url, &["get", "routes", "-o", "name"]).await;
    assert_eq!(out, "route/about\nroute/courses\nroute/old\n");
    let (_, out, _) = cli(&url, &["get", "svc", "-o", "name"]).await;
    assert_eq!(out, "service/lms\nservice/web\n");
    let (_, out, _) = cli(&url, &["get", "svc", "-o", "wide"]).await;
    assert!(out.lines().next().unwrap().ends_with("ROUTES"), "{out}");
    assert!(out.contains("courses"), "{out}");
    let (_, out, _) = cli(&url, &["get", "rt", "-o", "wide"]).await;
    assert!(out.contains("TIMEOUT"), "{out}");
    let (code, out, err) = cli(&url, &["get", "routes", "courses", "nope"]).await;
    assert_eq!(code, 1);
    assert!(out.contains("courses"), "what exists is still shown: {out}");
    assert_eq!(err, "error: route \"nope\" not found\n");

    // -o yaml is a route file with defaults written out, and applies back unchanged.
    let (code, yaml, _) = cli(&url, &["get", "route", "courses", "-o", "yaml"]).await;
    assert_eq!(code, 0);
    assert!(yaml.starts_with("routes:\n- id: courses\n"), "{yaml}");
    assert!(
        yaml.contains("group: default") && yaml.contains("priority: 0"),
        "{yaml}"
    );
    let back = write("back.yaml", &yaml);
    let (code, out, err) = cli(&url, &["apply", "-f", &back]).await;
    assert_eq!(
        (code, out.lines().next()),
        (0, Some("route/courses unchanged")),
        "{err}"
    );
    let (_, yaml, _) = cli(&url, &["get", "services", "-o", "yaml"]).await;
    assert!(
        yaml.contains("load_balancing: round_robin"),
        "the default is shown: {yaml}"
    );
    assert!(yaml.contains("weight: 1"), "{yaml}");
    let (code, json, _) = cli(&url, &["get", "service/web", "-o", "json"]).await;
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["services"][0]["load_balancing"], "least_request");

    // Errors name the file and line; nothing is half-applied or silently dropped.
    let bad = [
        ("empty.yaml", String::new(), "no objects in ".to_owned()),
        (
            "text.yaml",
            "just some words\n".to_owned(),
            "text.yaml:1:1: not a YAML mapping".to_owned(),
        ),
        (
            "bare.yaml",
            "id: x\nforward: { service: lms }\n".to_owned(),
            "bare.yaml:1:1: unknown field `id` at the top level".to_owned(),
        ),
        (
            "both.yaml",
            "routes:\n  - id: both\n    path: { prefix: /both }\n    forward: { service: lms }\n    redirect: { path: /x }\n".to_owned(),
            "both.yaml:2: route \"both\": forward: set both forward and redirect".to_owned(),
        ),
        (
            "paths.yaml",
            "routes:\n  - id: both\n    path: { prefix: /a, exact: /a }\n    forward: { service: lms }\n".to_owned(),
            "paths.yaml:2: route \"both\": path: set exactly one of prefix, exact or regex".to_owned(),
        ),
        (
            "dup.yaml",
            "routes:\n  - { id: d, forward: { service: lms } }\n---\nroutes:\n  - { id: d, forward: { service: web } }\n".to_owned(),
            "route \"d\" is declared twice: at ".to_owned(),
        ),
        (
            "ghost.yaml",
            "# uses a service nobody declared\nroutes:\n  - { id: g, forward: { service: ghost } }\n".to_owned(),
            "ghost.yaml:3: route \"g\": forward.service: unknown service \"ghost\"".to_owned(),
        ),
    ];
    for (name, text, want) in bad {
        let path = write(name, &text);
        let (code, out, err) = cli(&url, &["apply", "-f", &path]).await;
        assert_eq!(code, 1, "{name}: {out}{err}");
        assert!(
            err.starts_with("error: ") && err.contains(&want),
            "{name}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{name}: one line: {err}");
        no_jargon(&err);
    }
    let (_, out, _) = cli(&url, &["get", "routes", "-o", "name"]).await;
    assert!(
        !out.contains("both") && !out.contains("route/d\n") && !out.contains("route/g\n"),
        "{out}"
    );
    let (_, _, err) = cli(
        &url,
        &["apply", "-f", &dir.join("dup.yaml").display().to_string()],
    )
    .await;
    assert!(
        err.contains("dup.yaml:2 and at ") && err.ends_with("dup.yaml:5\n"),
        "{err}"
    );

    // Deleting a service in use lists every route that uses it.
    write(
        "also.yaml",
        "routes:\n  - { id: also, path: { prefix: /also }, forward: { backends: [{ service: lms }] } }\n",
    );
    let (code, _, err) = cli(
        &url,
        &["apply", "-f", &dir.join("also.yaml").display().to_string()],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&url, &["delete", "service", "lms"]).await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "error: service \"lms\" is used by routes \"also\", \"courses\"; delete or change them first\n"
    );
    let (code, out, err) = cli(&url, &["delete", "rt/also"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("route/also deleted\nversion "), "{out}");
    let (code, _, err) = cli(&url, &["delete", "route", "also"]).await;
    assert_eq!(
        (code, err.as_str()),
        (1, "error: route \"also\" not found\n")
    );

    // Usage errors exit 2.
    for args in [
        vec!["get", "pods"],
        vec!["get", "route/x", "svc/y"],
        vec!["apply"],
        vec!["delete", "route"],
        vec!["status", "--wait-converged", "soon"],
    ] {
        let (code, _, err) = cli(&url, &args).await;
        assert_eq!(code, 2, "{args:?}: {err}");
    }

    // The control plane itself refuses messages no valid file could produce (another
    // client than this CLI), rather than reading a default into them.
    let mut admin = routemaster_proto::v1::admin_client::AdminClient::connect(url.clone())
        .await
        .unwrap();
    use routemaster_proto::v1;
    let forward = Some(v1::route::Action::Forward(v1::Forward {
        target: Some(v1::forward::Target::Service("lms".into())),
        ..Default::default()
    }));
    let requests = [
        (
            v1::ApplyRequest {
                routes: vec![v1::Route {
                    id: "wide-open".into(),
                    path: Some(v1::PathMatch { kind: None }),
                    action: forward.clone(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            "route \"wide-open\": path: is set but empty",
        ),
        (
            v1::ApplyRequest {
                services: vec![v1::Service {
                    name: "future".into(),
                    load_balancing: 42,
                    ..Default::default()
                }],
                ..Default::default()
            },
            "service \"future\": load_balancing: unknown value 42",
        ),
        (
            v1::ApplyRequest {
                routes: vec![v1::Route {
                    id: "no-action".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            "route \"no-action\": forward: missing",
        ),
    ];
    for (request, want) in requests {
        let status = admin.apply(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(want), "{}", status.message());
    }
    let (_, out, _) = cli(&url, &["get", "routes", "-o", "name"]).await;
    assert!(
        !out.contains("wide-open") && !out.contains("no-action"),
        "{out}"
    );

    // Pointed at the wrong thing, the CLI says what it is.
    let status_port = fleet.control[0].http_url("");
    let (code, _, err) = cli(&status_port, &["get", "routes"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("this looks like the HTTP status port: the CLI talks gRPC, usually :7000"),
        "{err}"
    );
    let https = url.replace("http://", "https://");
    let (code, _, err) = cli(&https, &["get", "routes"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("https is not supported"), "{err}");
    no_jargon(&err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_nodes_tell_the_truth_and_ci_can_wait_on_them() {
    let a = EchoBackend::start("a").await;
    let mut fleet = Fleet::start("cli-status", &[("p1", "default"), ("p2", "default")]).await;
    let url = fleet.cp_url();
    let yaml = format!(
        "services:\n  - {{ name: a, instances: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ id: r, path: {{ prefix: /r }}, forward: {{ service: a }} }}\n",
        a.addr
    );
    let (code, _, err) = fleet.apply(0, &yaml).await;
    assert_eq!(code, 0, "{err}");

    // CI waits for convergence.
    let (code, out, err) = cli(&url, &["status", "--wait-converged", "20s"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("fleet           2/2 nodes converged\n"),
        "{out}"
    );
    let (code, json, _) = cli(&url, &["status", "-o", "json"]).await;
    assert_eq!(code, 0);
    let s: serde_json::Value = serde_json::from_str(&json).unwrap();
    let api = fleet.status(0).await;
    for field in ["version", "routes", "services", "etcd", "nodes"] {
        assert_eq!(
            s[field], api[field],
            "{field}: the CLI and /v1/status agree"
        );
    }
    assert_eq!(s["converged"], true);
    let (code, yaml_out, _) = cli(&url, &["status", "-o", "yaml"]).await;
    assert_eq!(code, 0);
    assert!(yaml_out.contains("converged: true"), "{yaml_out}");

    // get nodes: the status API's envelope in JSON, the shared states in the table.
    let (_, json, _) = cli(&url, &["get", "nodes", "-o", "json"]).await;
    let nodes: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(nodes["version"], s["version"]);
    assert_eq!(nodes["nodes"][0]["state"], "connected");
    let (_, one, _) = cli(&url, &["get", "no/p1", "-o", "json"]).await;
    let one: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert_eq!(
        (one["id"].as_str(), one["state"].as_str()),
        (Some("p1"), Some("connected"))
    );

    // A proxy killed with SIGKILL is lost, not gone, and keeps the fleet unconverged.
    fleet.proxies[1].child.kill().await.unwrap();
    let out = eventually(Duration::from_secs(20), "p2 reported lost", || async {
        let (code, out, _) = cli(&url, &["status"]).await;
        (code == 1 && out.contains("lost: p2 (last seen ")).then_some(out)
    })
    .await;
    assert!(
        out.contains("fleet           1/2 nodes converged; lost: p2 (last seen "),
        "{out}"
    );
    let (code, _, err) = cli(&url, &["status", "--wait-converged", "1s"]).await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with(
            "error: the fleet has not converged: 1/2 nodes converged; lost: p2 (last seen "
        ) && err.trim_end().ends_with("(waited 1s)"),
        "{err}"
    );
    let (_, table, _) = cli(&url, &["get", "nodes"]).await;
    let p2 = table.lines().find(|l| l.starts_with("p2 ")).unwrap();
    assert!(p2.contains(" lost ") && p2.contains(" ago"), "{table}");

    // Removing it by hand settles the fleet.
    let (code, out, err) = cli(&url, &["delete", "node", "p2"]).await;
    assert_eq!((code, out.as_str()), (0, "node/p2 deleted\n"), "{err}");
    let (code, out, err) = cli(&url, &["status"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1/1 nodes converged"), "{out}");
    let (code, _, err) = cli(&url, &["delete", "no/p2"]).await;
    assert_eq!((code, err.as_str()), (1, "error: node \"p2\" not found\n"));

    // etcd away: status says so and fails; reads answer from the last snapshot, with a
    // warning.
    fleet.etcd.stop().await;
    let (code, out, err) = eventually(Duration::from_secs(20), "etcd seen down", || async {
        let r = cli(&url, &["status"]).await;
        r.1.contains("etcd connected  no").then_some(r)
    })
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("error: etcd is unreachable: the control plane serves its last snapshot"),
        "{err}"
    );
    let (code, out, err) = cli(&url, &["get", "routes"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("r "), "{out}");
    assert!(err.starts_with("warning: etcd is unreachable"), "{err}");
}
