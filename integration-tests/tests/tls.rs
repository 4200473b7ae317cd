//! TLS termination on `--tls-listen`, with real clients: curl (`--resolve` for SNI, over
//! HTTP/1.1 and `--http2`), `openssl s_client` (SNI, ALPN, no SNI, TLS 1.1 refused),
//! and a rustls client holding a keep-alive connection across a certificate rotation.
//! Certificates are made at test time (rcgen for ECDSA, the openssl CLI for RSA).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod certs;

use certs::{Pem, ecdsa};

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use routemaster_integration_tests::backend::EchoBackend;
use routemaster_integration_tests::process::binary;
use routemaster_integration_tests::{TempDir, eventually, write_atomic};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(10);

/// An RSA certificate from the openssl CLI (PKCS#8 key), for the RSA key check.
fn rsa(dir: &Path, name: &str) -> Pem {
    let (cert, key) = (dir.join("rsa.pem"), dir.join("rsa.key"));
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN={name}")])
        .args(["-addext", &format!("subjectAltName=DNS:{name}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    Pem {
        cert: std::fs::read_to_string(cert).unwrap(),
        key: std::fs::read_to_string(key).unwrap(),
    }
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("        {l}\n")).collect()
}

/// The route file: `alpha` inline (ECDSA), `star` from files, `zdefault` inline RSA
/// and the default; one echo service; `/old` redirects without naming a scheme.
fn routes(app: SocketAddr, alpha: &Pem, rsa: &Pem, dir: &Path) -> String {
    format!(
        r#"tls:
  certificates:
    - name: alpha
      hosts: [a.example.test]
      cert_pem: |
{}      key_pem: |
{}    - name: star
      hosts: ["*.wild.test"]
      cert_file: {}
      key_file: {}
    - name: zdefault
      default: true
      hosts: [d.example.test]
      cert_pem: |
{}      key_pem: |
{}services:
  - {{ name: app, instances: [{{ address: "{app}" }}] }}
routes:
  - id: old
    path: {{ prefix: /old }}
    redirect: {{ prefix: /new }}
  - id: all
    forward: {{ service: app }}
"#,
        indent(&alpha.cert),
        indent(&alpha.key),
        dir.join("star.pem").display(),
        dir.join("star.key").display(),
        indent(&rsa.cert),
        indent(&rsa.key),
    )
}

#[derive(Clone, Default)]
struct Stderr(Arc<Mutex<String>>);

impl Stderr {
    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

struct Proxy {
    _child: Child,
    tls: SocketAddr,
    admin: SocketAddr,
    stderr: Stderr,
}

async fn spawn(config: &Path) -> anyhow::Result<Proxy> {
    let mut cmd = Command::new(binary("routemaster-proxy"));
    cmd.arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--tls-listen", "127.0.0.1:0", "--watch-interval", "50ms"])
        .args(["--workers", "2", "--log-format", "text"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let stderr = Stderr::default();
    let sink = stderr.clone();
    let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let reader = tokio::spawn(async move {
        while let Ok(Some(line)) = err_lines.next_line().await {
            let mut t = sink.0.lock().unwrap();
            t.push_str(&line);
            t.push('\n');
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let Some(line) = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await??
    else {
        // Exited: everything it wrote to stderr, once the reader reached its end.
        let _ = tokio::time::timeout(WAIT, reader).await;
        anyhow::bail!("proxy exited: {}", stderr.text());
    };
    // "routemaster-proxy listening on ADDR admin ADDR tls ADDR"
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.get(6), Some(&"tls"), "{line}");
    let admin = words[5].parse()?;
    let tls = words[7].parse()?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Proxy {
        _child: child,
        tls,
        admin,
        stderr,
    })
}

struct Setup {
    dir: TempDir,
    proxy: Proxy,
    alpha: Pem,
    rsa: Pem,
    star: Pem,
    _app: EchoBackend,
}

async fn setup(tag: &str) -> Setup {
    let dir = TempDir::new(tag);
    let app = EchoBackend::start("app").await;
    let alpha = ecdsa(&["a.example.test"]);
    let star = ecdsa(&["*.wild.test"]);
    let rsa = rsa(dir.path(), "d.example.test");
    write_atomic(&dir.path().join("star.pem"), &star.cert);
    write_atomic(&dir.path().join("star.key"), &star.key);
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, routes(app.addr, &alpha, &rsa, dir.path())).unwrap();
    let proxy = spawn(&file).await.unwrap();
    Setup {
        dir,
        proxy,
        alpha,
        rsa,
        star,
        _app: app,
    }
}

impl Setup {
    fn ca(&self, name: &str, pem: &str) -> String {
        let path = self.dir.path().join(format!("{name}.ca.pem"));
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    }

    /// curl over TLS to `name` (resolved to the proxy), trusting `ca`; returns
    /// (status, http version, body).
    async fn curl(
        &self,
        name: &str,
        ca: &str,
        path: &str,
        extra: &[&str],
    ) -> (u16, String, String) {
        let port = self.proxy.tls.port();
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert", ca])
            .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
            .args(["-w", "\n%{http_code} %{http_version}"])
            .args(extra)
            .arg(format!("https://{name}:{port}{path}"))
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, last) = text.rsplit_once('\n').unwrap_or(("", &text));
        let (code, version) = last.split_once(' ').unwrap_or((last, ""));
        assert!(
            out.status.success(),
            "curl {name}{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (code.parse().unwrap(), version.to_owned(), body.to_owned())
    }

    /// `openssl s_client` against the TLS listener; returns (exit ok, stdout).
    async fn s_client(&self, args: &[&str]) -> (bool, String) {
        let mut child = Command::new("openssl")
            .arg("s_client")
            .args(["-connect", &self.proxy.tls.to_string()])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        drop(child.stdin.take());
        let out = tokio::time::timeout(WAIT, child.wait_with_output())
            .await
            .expect("s_client finished")
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }
}

/// The base64 body of a PEM certificate, as s_client prints it.
fn der_lines(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn served_cert(s_client_out: &str) -> String {
    let start = s_client_out
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = s_client_out
        .find("-----END CERTIFICATE-----")
        .expect("its end");
    der_lines(&s_client_out[start..end])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_alpn_versions_421_and_forwarded_proto() {
    let s = setup("tls-sni").await;
    let alpha_ca = s.ca("alpha", &s.alpha.cert);
    let star_ca = s.ca("star", &s.star.cert);
    let rsa_ca = s.ca("rsa", &s.rsa.cert);

    // curl with SNI, both HTTP versions: the exact name's certificate, the request
    // proxied with x-forwarded-proto: https.
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (code, v, body) = s.curl("a.example.test", &alpha_ca, "/x", &[flag]).await;
        assert_eq!((code, v.as_str()), (200, version), "{flag}: {body}");
        let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            echo["headers"]["x-forwarded-proto"],
            serde_json::json!(["https"]),
            "{flag}: {echo}"
        );
        // The one-label wildcard and the RSA default, verified by curl against each.
        let (code, _, _) = s.curl("x.wild.test", &star_ca, "/x", &[flag]).await;
        assert_eq!(code, 200, "{flag} wildcard");
        let (code, _, _) = s.curl("d.example.test", &rsa_ca, "/x", &[flag]).await;
        assert_eq!(code, 200, "{flag} rsa");
        // A redirect that names no scheme keeps https.
        let (code, _, _) = s
            .curl(
                "a.example.test",
                &alpha_ca,
                "/old/y",
                &[flag, "-o", "/dev/null", "-D", "-"],
            )
            .await;
        assert_eq!(code, 301, "{flag} redirect");
        // 421: the Host is another certificate's; a Host no certificate lists is routed.
        let (code, _, body) = s
            .curl(
                "a.example.test",
                &alpha_ca,
                "/x",
                &[flag, "-H", "Host: d.example.test"],
            )
            .await;
        assert_eq!(code, 421, "{flag}: {body}");
        let (code, _, _) = s
            .curl(
                "a.example.test",
                &alpha_ca,
                "/x",
                &[flag, "-H", "Host: unlisted.test"],
            )
            .await;
        assert_eq!(code, 200, "{flag} unlisted host");
        let (code, _, _) = s
            .curl(
                "a.example.test",
                &alpha_ca,
                "/x",
                &[flag, "-H", "Host: a.example.test:443"],
            )
            .await;
        assert_eq!(code, 200, "{flag} same host with a port");
    }
    let port = s.proxy.tls.port();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{redirect_url}",
            "--cacert",
            &alpha_ca,
        ])
        .args(["--resolve", &format!("a.example.test:{port}:127.0.0.1")])
        .arg(format!("https://a.example.test:{port}/old/y"))
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("https://a.example.test:{port}/new/y")
    );

    // openssl s_client: which certificate each SNI gets (exact, one-label wildcard,
    // default for unlisted names, two labels under a wildcard and no SNI), and ALPN.
    let cases: [(&[&str], &Pem); 5] = [
        (&["-servername", "a.example.test"], &s.alpha),
        (&["-servername", "b.wild.test"], &s.star),
        (&["-servername", "a.b.wild.test"], &s.rsa),
        (&["-servername", "nobody.test"], &s.rsa),
        (&["-noservername"], &s.rsa),
    ];
    for (args, want) in cases {
        let (ok, out) = s.s_client(args).await;
        assert!(ok, "{args:?}: {out}");
        assert_eq!(served_cert(&out), der_lines(&want.cert), "{args:?}");
    }
    for alpn in ["h2", "http/1.1"] {
        let (ok, out) = s
            .s_client(&["-servername", "a.example.test", "-alpn", alpn])
            .await;
        assert!(
            ok && out.contains(&format!("ALPN protocol: {alpn}")),
            "{alpn}: {out}"
        );
    }
    // TLS 1.2 and 1.3 only: a client willing to speak TLS 1.1 (security level 0, so
    // the refusal is the proxy's) fails the handshake.
    for (version, accepted) in [("-tls1_3", true), ("-tls1_2", true), ("-tls1_1", false)] {
        let (ok, out) = s
            .s_client(&[
                "-servername",
                "a.example.test",
                version,
                "-cipher",
                "DEFAULT:@SECLEVEL=0",
            ])
            .await;
        let shook = ok && out.contains("-----BEGIN CERTIFICATE-----");
        assert_eq!(shook, accepted, "{version}: {out}");
    }
    // s_client over HTTP/1.1: a Host another certificate lists is a 421.
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &s.proxy.tls.to_string()])
        .args(["-servername", "a.example.test", "-alpn", "http/1.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"GET /x HTTP/1.1\r\nHost: b.wild.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    tokio::time::timeout(WAIT, stdout.read_to_string(&mut out))
        .await
        .expect("answer")
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 421 "), "{out}");
    drop(stdin);
}

/// A rustls client connection to the proxy for `name`, trusting `roots`.
async fn connect(
    addr: SocketAddr,
    name: &str,
    roots: &[&str],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        store.add(der).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name.to_owned().try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// One keep-alive GET; returns the status.
async fn get(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    host: &str,
) -> u16 {
    stream
        .write_all(format!("GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("response")
            .unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if buf.len() >= end + 4 + len {
                return text[9..12].parse().unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_by_rewriting_cert_files_keeps_open_connections() {
    let s = setup("tls-rotate").await;
    let next = ecdsa(&["*.wild.test"]);
    let roots = [s.star.cert.as_str(), next.cert.as_str()];
    let mut open = connect(s.proxy.tls, "x.wild.test", &roots).await;
    assert_eq!(get(&mut open, "x.wild.test").await, 200);

    // Rotate: new handshakes get the new certificate...
    write_atomic(&s.dir.path().join("star.key"), &next.key);
    write_atomic(&s.dir.path().join("star.pem"), &next.cert);
    eventually(
        WAIT,
        "new handshakes see the rotated certificate",
        || async {
            let (ok, out) = s.s_client(&["-servername", "y.wild.test"]).await;
            (ok && served_cert(&out) == der_lines(&next.cert)).then_some(())
        },
    )
    .await;
    // ...and the connection made before it still serves.
    assert_eq!(get(&mut open, "x.wild.test").await, 200);

    // A bad certificate file (a key that is not the certificate's) is refused, naming
    // the file; the last good certificate keeps serving.
    let stranger = ecdsa(&["*.wild.test"]);
    let before = s.proxy.stderr.text().len();
    write_atomic(&s.dir.path().join("star.key"), &stranger.key);
    let key_file = s.dir.path().join("star.key").display().to_string();
    eventually(WAIT, "the bad key file is reported", || async {
        let err = s.proxy.stderr.text();
        err[before..]
            .lines()
            .any(|l| {
                l.contains("certificate files rejected")
                    && l.contains("star")
                    && l.contains("key_file")
                    && l.contains(&key_file)
                    && l.contains("does not match the certificate")
            })
            .then_some(())
    })
    .await;
    let (ok, out) = s.s_client(&["-servername", "y.wild.test"]).await;
    assert!(ok, "{out}");
    assert_eq!(served_cert(&out), der_lines(&next.cert));
    let mut fresh = connect(s.proxy.tls, "z.wild.test", &roots).await;
    assert_eq!(get(&mut fresh, "z.wild.test").await, 200);
    assert_eq!(get(&mut open, "x.wild.test").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_inline_certificates_are_refused_and_keys_never_shown() {
    let s = setup("tls-refuse").await;
    // /config never shows key material.
    let port = s.proxy.admin.port();
    let out = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{port}/config?full=1")])
        .output()
        .await
        .unwrap();
    let config = String::from_utf8_lossy(&out.stdout);
    assert!(config.contains("<redacted>"), "{config}");
    assert!(config.contains("BEGIN CERTIFICATE"), "{config}");
    assert!(!config.contains("PRIVATE KEY"), "{config}");
    assert!(!s.proxy.stderr.text().contains("PRIVATE KEY"));

    // A proxy whose route file has an inline key of another certificate does not start,
    // naming the certificate and field.
    let other = ecdsa(&["a.example.test"]);
    let app: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let bad = routes(
        app,
        &Pem {
            cert: s.alpha.cert.clone(),
            key: other.key.clone(),
        },
        &s.rsa,
        s.dir.path(),
    );
    let file = s.dir.path().join("bad.yaml");
    std::fs::write(&file, bad).unwrap();
    let err = match spawn(&file).await {
        Ok(_) => panic!("a proxy started with a mismatched key"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("certificate \"alpha\"")
            && err.contains("key_pem: does not match the certificate"),
        "{err}"
    );
    assert!(!err.contains("PRIVATE KEY"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_checks_certificates_before_connecting() {
    use routemaster_integration_tests::cluster::cli;
    let dir = TempDir::new("tls-apply");
    let alpha = ecdsa(&["a.example.test"]);
    let other = ecdsa(&["a.example.test"]);
    let rsa = rsa(dir.path(), "d.example.test");
    let app: SocketAddr = "127.0.0.1:9".parse().unwrap();
    // Nothing listens there: both answers come before the CLI connects.
    let url = "http://127.0.0.1:9";
    let mismatched = Pem {
        cert: alpha.cert.clone(),
        key: other.key.clone(),
    };
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, routes(app, &mismatched, &rsa, dir.path())).unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, routes(app, &alpha, &rsa, dir.path())).unwrap();
    for verb in ["apply", "diff"] {
        let (code, _, err) = cli(url, &[verb, "-f", bad.to_str().unwrap()]).await;
        assert_ne!(code, 0, "{verb}: {err}");
        assert!(
            err.contains(
                "bad.yaml:3: certificate \"alpha\": key_pem: does not match the certificate"
            ),
            "{verb}: {err}"
        );
        assert!(!err.contains("PRIVATE KEY"), "{err}");
        // Valid certificates are sent (see tls_control_plane.rs): this one gets as far
        // as connecting.
        let (code, _, err) = cli(url, &[verb, "-f", good.to_str().unwrap()]).await;
        assert_ne!(code, 0, "{verb}: {err}");
        assert!(err.contains("127.0.0.1:9"), "{verb}: {err}");
        assert!(!err.contains("certificate"), "{verb}: {err}");
    }
}
