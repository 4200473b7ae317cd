//! `routemaster-proxy --config DIR`: one route file per team, merged (every `*.yaml` /
//! `*.yml` in DIR), watched as a whole; every error names the file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use routemaster_integration_tests::backend::EchoBackend;
use routemaster_integration_tests::client::HttpClient;
use routemaster_integration_tests::process::{ProxyProcess, binary};
use routemaster_integration_tests::{TempDir, eventually, write_atomic};
use support::{start_capturing, svc};

fn route(id: &str, prefix: &str, service: &str) -> String {
    format!("  - {{ id: {id}, path: {{ prefix: {prefix} }}, forward: {{ service: {service} }} }}\n")
}

/// Waits until `path` is answered with `status` (and, when given, by `backend`).
async fn wait_for(proxy: &ProxyProcess, path: &str, status: u16, backend: Option<&str>) {
    let http = HttpClient::new();
    eventually(
        Duration::from_secs(5),
        &format!("{path} → {status} {backend:?}"),
        || async {
            let r = http.get(&proxy.url(path), &[]).await.ok()?;
            (r.status.as_u16() == status
                && backend.is_none_or(|b| r.header("x-backend") == Some(b)))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_team_files_is_served_merged_and_reloaded_as_a_whole() {
    let a = EchoBackend::start("a").await;
    let b = EchoBackend::start("b").await;
    let dir = TempDir::new("config-dir");
    let path = dir.path();
    std::fs::write(
        path.join("00-services.yaml"),
        format!("services:\n{}{}", svc("a", &[a.addr]), svc("b", &[b.addr])),
    )
    .unwrap();
    // Several documents in one file.
    std::fs::write(
        path.join("team-a.yaml"),
        format!(
            "routes:\n{}---\nroutes:\n{}",
            route("a1", "/a1", "a"),
            route("a2", "/a2", "a")
        ),
    )
    .unwrap();
    std::fs::write(path.join("README.md"), "# not a route file: ignored\n").unwrap();
    let (proxy, stderr) = start_capturing(path, &["--watch-interval", "50ms"])
        .await
        .unwrap();
    wait_for(&proxy, "/a1", 200, Some("a")).await;
    wait_for(&proxy, "/a2", 200, Some("a")).await;

    // A new team file is picked up.
    write_atomic(
        &path.join("team-b.yml"),
        &format!("routes:\n{}", route("b1", "/b1", "b")),
    );
    wait_for(&proxy, "/b1", 200, Some("b")).await;

    // An edit of one file (rename-over) reloads the whole directory.
    write_atomic(
        &path.join("team-a.yaml"),
        &format!("routes:\n{}", route("a1", "/a1", "b")),
    );
    wait_for(&proxy, "/a1", 200, Some("b")).await;
    wait_for(&proxy, "/a2", 404, None).await;
    wait_for(&proxy, "/b1", 200, Some("b")).await;

    // An invalid file is rejected, named, and the last good table keeps serving.
    write_atomic(
        &path.join("team-b.yml"),
        &format!("routes:\n{}", route("b1", "/b1", "ghost")),
    );
    eventually(Duration::from_secs(5), "rejection logged", || async {
        stderr.contains("route file rejected").then_some(())
    })
    .await;
    let log = stderr.text();
    assert!(
        log.contains("team-b.yml:2: route \\\"b1\\\": forward.service: unknown service")
            || log.contains("team-b.yml:2: route \"b1\": forward.service: unknown service"),
        "{log}"
    );
    wait_for(&proxy, "/b1", 200, Some("b")).await;

    // A route declared in two files: both places named, last good table kept.
    write_atomic(
        &path.join("team-b.yml"),
        &format!("routes:\n{}", route("a1", "/dup", "a")),
    );
    eventually(Duration::from_secs(5), "duplicate logged", || async {
        stderr.contains("is declared twice").then_some(())
    })
    .await;
    let log = stderr.text();
    assert!(
        log.contains("team-a.yaml:2 and at ") && log.contains("team-b.yml:2"),
        "{log}"
    );

    // Removing a team's file removes its routes.
    std::fs::remove_file(path.join("team-b.yml")).unwrap();
    wait_for(&proxy, "/b1", 404, None).await;
    wait_for(&proxy, "/a1", 200, Some("b")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_directory_at_start_exits_non_zero_naming_the_file() {
    let dup = format!("routes:\n{}", route("x", "/x", "app"));
    let app = "services:\n  - { name: app, instances: [{ address: \"127.0.0.1:9\" }] }\n";
    type Files<'a> = Vec<(&'a str, String)>;
    let cases: Vec<(&str, Files, Vec<&str>)> = vec![
        (
            "duplicate across files",
            vec![
                ("app.yaml", app.into()),
                ("a.yaml", dup.clone()),
                ("b.yaml", dup),
            ],
            vec![
                "route \"x\" is declared twice: at ",
                "a.yaml:2 and at ",
                "b.yaml:2",
            ],
        ),
        (
            "not YAML",
            vec![
                ("app.yaml", app.into()),
                ("notes.yaml", "some notes\n".into()),
            ],
            vec!["notes.yaml:1:1: not a YAML mapping"],
        ),
        (
            "invalid route",
            vec![
                ("app.yaml", app.into()),
                (
                    "r.yaml",
                    format!("# r\nroutes:\n{}", route("bad", "nope", "app")),
                ),
            ],
            vec!["r.yaml:3: route \"bad\": path.prefix"],
        ),
        (
            "no route files",
            vec![("notes.txt", "x".into())],
            vec!["has no route files (*.yaml or *.yml)"],
        ),
    ];
    for (name, files, needles) in cases {
        let dir = TempDir::new("config-dir-bad");
        for (file, text) in &files {
            std::fs::write(dir.path().join(file), text).unwrap();
        }
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::process::Command::new(binary("routemaster-proxy"))
                .arg("--config")
                .arg(dir.path())
                .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
                .args(["--log-format", "text"])
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("a bad directory must make the proxy exit")
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{name}: {needle:?} not in:\n{stderr}"
            );
        }
    }
}
