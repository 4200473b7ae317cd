//! `--log-format` on all three programs, against the real binaries:
//! - stderr a pipe, no flag: JSON lines, every one an object with `timestamp`, `level`
//!   and the event's fields flattened (`message`…), and not one ANSI escape;
//! - `--log-format text` on a pipe: plain lines, no escapes either;
//! - a fatal error of the proxy or the control plane in JSON mode is one JSON `ERROR`
//!   line naming the program (in text mode the plain `PROGRAM: error` line);
//! - stderr a terminal (a pty from util-linux `script`), no flag: coloured text, and
//!   plain with `NO_COLOR`.
//!
//! The CLI logs diagnostics only (`RUST_LOG`, default warn); its `error: …` line is its
//! own output, not a log line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use routemaster_integration_tests::cluster::Etcd;
use routemaster_integration_tests::process::binary;
use routemaster_integration_tests::{TempDir, wait_http};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

const ROUTES: &str = "services:\n  - { name: app, instances: [{ address: \"127.0.0.1:9\" }] }\nroutes:\n  - { id: r, forward: { service: app } }\n";
/// The CLI's own debug line (the control plane it is pointed at is not there).
const CLI_DEBUG: &str = "routemaster_control_plane=debug";
const NOWHERE: &str = "http://127.0.0.1:1";

/// One program run: its binary, arguments, `RUST_LOG`, whether it is a server (stopped
/// with SIGTERM once healthy) or runs to its exit, the exit code, and a message it must
/// log.
struct Program {
    name: &'static str,
    args: Vec<String>,
    rust_log: Option<&'static str>,
    server: bool,
    exit: i32,
    logs: &'static str,
}

/// Runs `program` with `--log-format format` (none: the default) and stderr a pipe;
/// returns stderr.
async fn stderr_of(program: &Program, format: Option<&str>) -> String {
    let mut cmd = Command::new(binary(program.name));
    cmd.args(&program.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .kill_on_drop(true);
    if let Some(format) = format {
        cmd.args(["--log-format", format]);
    }
    if let Some(filter) = program.rust_log {
        cmd.env("RUST_LOG", filter);
    }
    let mut child = cmd.spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut buf = Vec::new();
        err.read_to_end(&mut buf).await.unwrap();
        buf
    });
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    if program.server {
        // "… listening on ADDR admin|http ADDR": the second address serves /healthz.
        let line = tokio::time::timeout(Duration::from_secs(20), out.next_line())
            .await
            .expect("no listening line within 20s")
            .unwrap()
            .expect("exited before listening");
        let health = line.split_whitespace().nth(5).expect("an address line");
        wait_http(
            &format!("http://{health}/healthz"),
            "healthy",
            Duration::from_secs(20),
            |r| r.status.is_success(),
        )
        .await;
        let pid = child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-s", "TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
    }
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("did not exit within 20s")
        .unwrap();
    let stderr = tokio::time::timeout(Duration::from_secs(5), stderr)
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8(stderr).expect("stderr is UTF-8");
    assert_eq!(
        status.code(),
        Some(program.exit),
        "{} {format:?}: exit status; stderr:\n{stderr}",
        program.name
    );
    stderr
}

fn as_object(line: &str) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_str(line) {
        Ok(Value::Object(o)) => Some(o),
        _ => None,
    }
}

/// The lines that are logs: all of them, but the CLI's own `error: …` message.
fn log_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.starts_with("error: "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_program_logs_json_lines_to_a_pipe_and_text_on_request_never_coloured() {
    let dir = TempDir::new("logging");
    let routes = dir.path().join("routes.yaml");
    std::fs::write(&routes, ROUTES).unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let programs = [
        Program {
            name: "routemaster-proxy",
            args: vec![
                "--config".into(),
                routes.display().to_string(),
                "--listen=127.0.0.1:0".into(),
                "--admin-listen=127.0.0.1:0".into(),
                "--workers=1".into(),
            ],
            rust_log: None,
            server: true,
            exit: 0,
            logs: "route file loaded",
        },
        Program {
            name: "routemaster-control",
            args: vec![
                format!("--etcd={}", etcd.url()),
                "--grpc-listen=127.0.0.1:0".into(),
                "--http-listen=127.0.0.1:0".into(),
            ],
            rust_log: None,
            server: true,
            exit: 0,
            logs: "shutting down",
        },
        Program {
            name: "routemaster",
            args: vec![
                format!("--control-plane={NOWHERE}"),
                "get".into(),
                "routes".into(),
            ],
            rust_log: Some(CLI_DEBUG),
            server: false,
            exit: 1,
            logs: "connecting to the control plane",
        },
    ];
    for program in &programs {
        for format in [None, Some("json")] {
            let what = format!("{} --log-format {format:?}", program.name);
            let stderr = stderr_of(program, format).await;
            assert!(
                !stderr.contains('\x1b'),
                "{what}: ANSI escape in:\n{stderr}"
            );
            let lines = log_lines(&stderr);
            assert!(!lines.is_empty(), "{what}: no log lines");
            let objects: Vec<_> = lines
                .iter()
                .map(|l| as_object(l).unwrap_or_else(|| panic!("{what}: not a JSON object: {l}")))
                .collect();
            for o in &objects {
                assert!(
                    o["timestamp"].is_string() && o["level"].is_string(),
                    "{what}: {o:?}"
                );
            }
            assert!(
                objects
                    .iter()
                    .any(|o| o.get("message").and_then(Value::as_str) == Some(program.logs)),
                "{what}: no {:?} message in:\n{stderr}",
                program.logs
            );
        }
        let what = format!("{} --log-format text", program.name);
        let stderr = stderr_of(program, Some("text")).await;
        assert!(
            !stderr.contains('\x1b'),
            "{what}: ANSI escape in:\n{stderr}"
        );
        let lines = log_lines(&stderr);
        assert!(
            lines.iter().all(|l| as_object(l).is_none()),
            "{what}: JSON in:\n{stderr}"
        );
        assert!(
            lines.iter().any(|l| l.contains(program.logs)),
            "{what}: no {:?} in:\n{stderr}",
            program.logs
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_error_is_one_json_error_line_or_one_plain_line() {
    let dir = TempDir::new("logging-fatal");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "routes:\n  - id: hop\n    redirect: { code: 200 }\n").unwrap();
    let programs = [
        (
            Program {
                name: "routemaster-proxy",
                args: vec![
                    "--config".into(),
                    bad.display().to_string(),
                    "--listen=127.0.0.1:0".into(),
                    "--admin-listen=127.0.0.1:0".into(),
                ],
                rust_log: None,
                server: false,
                exit: 1,
                logs: "",
            },
            "route \"hop\": redirect.code",
        ),
        (
            Program {
                name: "routemaster-control",
                args: vec![format!("--etcd={NOWHERE}"), "--prefix=nope".into()],
                rust_log: None,
                server: false,
                exit: 1,
                logs: "",
            },
            "--prefix must start with '/'",
        ),
    ];
    for (program, error) in &programs {
        let stderr = stderr_of(program, None).await;
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{}: one line:\n{stderr}", program.name);
        let o =
            as_object(lines[0]).unwrap_or_else(|| panic!("{}: not JSON: {stderr}", program.name));
        assert_eq!(o["level"], "ERROR", "{o:?}");
        assert_eq!(o["program"], program.name, "{o:?}");
        let message = o["message"].as_str().unwrap();
        assert!(message.contains(error), "{}: {message}", program.name);

        let stderr = stderr_of(program, Some("text")).await;
        assert_eq!(
            stderr.lines().count(),
            1,
            "{}: one line:\n{stderr}",
            program.name
        );
        assert!(
            stderr.starts_with(&format!("{}: ", program.name)) && stderr.contains(error),
            "{stderr}"
        );
    }
}

/// Runs the CLI (with its debug line) on a pseudo-terminal: what the terminal shows.
async fn on_a_terminal(no_color: bool) -> String {
    let cli = binary("routemaster");
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c"])
        .arg(format!(
            "'{}' --control-plane {NOWHERE} get routes",
            cli.display()
        ))
        .arg("/dev/null")
        .env("RUST_LOG", CLI_DEBUG)
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("script did not finish in 20s")
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_default_is_coloured_text_unless_no_color() {
    for (no_color, coloured) in [(false, true), (true, false)] {
        let shown = on_a_terminal(no_color).await;
        let debug = shown
            .lines()
            .find(|l| l.contains("connecting to the control plane"))
            .unwrap_or_else(|| panic!("no debug line on the terminal:\n{shown}"));
        assert!(
            as_object(debug.trim_end()).is_none(),
            "JSON on a terminal: {debug}"
        );
        assert_eq!(
            debug.contains('\x1b'),
            coloured,
            "NO_COLOR {no_color}: {debug:?}"
        );
        assert!(
            shown.contains("error: cannot reach the control plane"),
            "{shown}"
        );
    }
}
