//! Certificates through the control plane: `routemaster apply -f` of a file with `tls:`
//! stores them in etcd, every connected proxy with `--tls-listen` serves them (curl
//! `--resolve`, real handshakes), a new certificate rotates new handshakes, a bad
//! `cert_file` is NACKed naming the certificate and file while the old certificate keeps
//! serving, and `get certificates` never shows key material (its YAML re-applies as
//! `unchanged`). Real etcd, control plane, proxy and CLI; certificates made by rcgen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod certs;

use certs::{Pem, ecdsa};

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use routemaster_integration_tests::backend::EchoBackend;
use routemaster_integration_tests::client::HttpClient;
use routemaster_integration_tests::cluster::{ControlPlane, Etcd, cli, spawn_reporting};
use routemaster_integration_tests::process::binary;
use routemaster_integration_tests::{TempDir, eventually};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(15);

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("        {l}\n")).collect()
}

/// One inline certificate `site` for a.example.test, and a service and route.
fn file(app: SocketAddr, site: &Pem) -> String {
    format!(
        "tls:\n  certificates:\n    - name: site\n      hosts: [a.example.test]\n      cert_pem: |\n{}      key_pem: |\n{}services:\n  - {{ name: app, instances: [{{ address: \"{app}\" }}] }}\nroutes:\n  - id: all\n    forward: {{ service: app }}\n",
        indent(&site.cert),
        indent(&site.key),
    )
}

/// curl over TLS to a.example.test on the proxy, trusting `ca` only: Some(status).
async fn curl(tls: SocketAddr, ca: &Path) -> Option<u16> {
    let port = tls.port();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "--max-time",
            "5",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(ca)
        .args(["--resolve", &format!("a.example.test:{port}:127.0.0.1")])
        .arg(format!("https://a.example.test:{port}/"))
        .output()
        .await
        .unwrap();
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

async fn apply(cp: &str, dir: &Path, name: &str, yaml: &str) -> (i32, String, String) {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    cli(cp, &["apply", "-f", path.to_str().unwrap()]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_applied_to_the_control_plane_are_served_rotated_nacked_and_never_shown() {
    let dir = TempDir::new("tls-cp");
    let etcd = Etcd::start(dir.path()).await;
    let control = ControlPlane::start(&etcd.url(), "/routemaster").await;
    let cp = control.grpc_url();
    let app = EchoBackend::start("app").await;

    let mut cmd = Command::new(binary("routemaster-proxy"));
    cmd.args(["--control-plane", &cp, "--node-id", "edge-1"])
        .args(["--group", "default"])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--tls-listen", "127.0.0.1:0", "--workers", "1"]);
    let (_proxy, line) = spawn_reporting(cmd).await;
    // "routemaster-proxy listening on ADDR admin ADDR tls ADDR"
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.get(6), Some(&"tls"), "{line}");
    let tls: SocketAddr = words[7].parse().unwrap();

    // Apply: the certificate is stored and served.
    let v1 = ecdsa(&["a.example.test"]);
    let ca1 = dir.path().join("v1.pem");
    std::fs::write(&ca1, &v1.cert).unwrap();
    let (code, out, err) = apply(&cp, dir.path(), "v1.yaml", &file(app.addr, &v1)).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("certificate/site created"), "{out}");
    eventually(WAIT, "the proxy to serve certificate v1", || async {
        (curl(tls, &ca1).await == Some(200)).then_some(())
    })
    .await;

    // `get certificates`: the table, and YAML with the key redacted that re-applies
    // as unchanged.
    let (code, table, err) = cli(&cp, &["get", "certificates"]).await;
    assert_eq!(code, 0, "{err}");
    for want in ["NAME", "NOT AFTER", "site", "a.example.test", "inline"] {
        assert!(table.contains(want), "{want:?} in {table}");
    }
    for format in ["yaml", "json"] {
        let (code, shown, err) = cli(&cp, &["get", "cert", "site", "-o", format]).await;
        assert_eq!(code, 0, "{err}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(
            !shown.contains("PRIVATE KEY"),
            "key material shown: {shown}"
        );
        assert!(shown.contains("BEGIN CERTIFICATE"), "{shown}");
        let (code, out, err) = apply(&cp, dir.path(), &format!("shown.{format}"), &shown).await;
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(
            out.lines().next(),
            Some("certificate/site unchanged"),
            "{out}"
        );
    }
    // `diff` compares without printing keys.
    let path = dir.path().join("v1.yaml");
    let (code, out, err) = cli(&cp, &["diff", "-f", path.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("0 to create, 0 to update, 3 unchanged"),
        "{out}"
    );

    // The status API's view: the certificate, never its key.
    let shown = HttpClient::new()
        .get(&control.http_url("/v1/certificates"), &[])
        .await
        .unwrap();
    assert_eq!(shown.status.as_u16(), 200);
    let shown = shown.json();
    assert_eq!(shown[0]["name"], "site", "{shown}");
    assert_eq!(shown[0]["key_pem"], "<redacted>", "{shown}");
    assert!(!shown.to_string().contains("PRIVATE KEY"), "{shown}");

    // Rotation: a new certificate for the same name; new handshakes see it.
    let v2 = ecdsa(&["a.example.test"]);
    let ca2 = dir.path().join("v2.pem");
    std::fs::write(&ca2, &v2.cert).unwrap();
    let (code, out, err) = apply(&cp, dir.path(), "v2.yaml", &file(app.addr, &v2)).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("certificate/site updated"), "{out}");
    let diffed = cli(&cp, &["diff", "-f", path.to_str().unwrap()]).await;
    assert_eq!(diffed.0, 3, "differences: {diffed:?}");
    assert!(diffed.1.contains("~ certificate/site"), "{}", diffed.1);
    assert!(!diffed.1.contains("PRIVATE KEY"), "{}", diffed.1);
    eventually(WAIT, "the proxy to serve certificate v2", || async {
        (curl(tls, &ca2).await == Some(200)).then_some(())
    })
    .await;
    assert_eq!(curl(tls, &ca1).await, None, "v1 no longer served");

    // A cert_file the proxy cannot read: the control plane stores it (only the proxy
    // reads files), the proxy NACKs naming the certificate and the file, v2 keeps serving.
    let missing = dir.path().join("missing.pem");
    let bad = format!(
        "tls:\n  certificates:\n    - name: files\n      hosts: [b.example.test]\n      cert_file: {0}\n      key_file: {0}\n",
        missing.display()
    );
    let (code, out, err) = apply(&cp, dir.path(), "bad.yaml", &bad).await;
    assert_eq!(code, 0, "{out}{err}");
    let client = HttpClient::new();
    let nack = eventually(
        WAIT,
        "the proxy to NACK the unreadable cert_file",
        || async {
            let nodes = client
                .get(&control.http_url("/v1/nodes"), &[])
                .await
                .ok()?
                .json();
            nodes["nodes"][0]["last_nack"]
                .as_str()
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
        },
    )
    .await;
    assert!(
        nack.contains("certificate \"files\"")
            && nack.contains("cert_file")
            && nack.contains(&missing.display().to_string()),
        "{nack}"
    );
    let (code, nodes, err) = cli(&cp, &["get", "nodes", "-o", "json"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(nodes.contains("certificate \\\"files\\\""), "{nodes}");
    assert_eq!(
        curl(tls, &ca2).await,
        Some(200),
        "the last good certificate serves"
    );

    // Delete the bad one: the next snapshot applies again.
    let (code, out, err) = cli(&cp, &["delete", "certificate", "files"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("certificate/files deleted"), "{out}");
    let (code, _, err) = cli(&cp, &["delete", "cert", "files"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("certificate \"files\" not found"), "{err}");

    // Validation errors name the certificate (and the file and line, from the CLI).
    let other = ecdsa(&["a.example.test"]);
    let mismatched = file(
        app.addr,
        &Pem {
            cert: v2.cert.clone(),
            key: other.key,
        },
    );
    let (code, out, err) = apply(&cp, dir.path(), "mismatch.yaml", &mismatched).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("certificate \"site\"")
            && err.contains("key_pem")
            && err.contains("does not match"),
        "{err}"
    );
    // A redacted key with no stored certificate to take it from.
    let orphan = "tls:\n  certificates:\n    - name: orphan\n      hosts: [c.example.test]\n      cert_pem: |\n"
        .to_owned()
        + &indent(&v2.cert)
        + "      key_pem: <redacted>\n";
    let (code, out, err) = apply(&cp, dir.path(), "orphan.yaml", &orphan).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("certificate \"orphan\"")
            && err.contains("key_pem")
            && err.contains("give the key"),
        "{err}"
    );
    // Still serving v2 after all that.
    assert_eq!(curl(tls, &ca2).await, Some(200));
}
