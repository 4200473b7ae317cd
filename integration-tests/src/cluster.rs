//! Real etcd and control-plane processes for the system tests.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::process::binary;

/// A free loopback port (etcd needs explicit ports; the tiny window between closing this
/// listener and etcd binding it is the price of a real etcd).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A single-member etcd with its data in `dir`, killed on drop.
#[derive(Debug)]
pub struct Etcd {
    pub child: Child,
    pub client_port: u16,
    peer_port: u16,
    dir: std::path::PathBuf,
}

impl Etcd {
    pub async fn start(dir: &Path) -> Self {
        let client_port = free_port();
        let peer_port = free_port();
        let child = Self::spawn(dir, client_port, peer_port);
        let etcd = Self {
            child,
            client_port,
            peer_port,
            dir: dir.to_owned(),
        };
        etcd.wait_ready().await;
        etcd
    }

    fn spawn(dir: &Path, client_port: u16, peer_port: u16) -> Child {
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        Command::new(which_etcd())
            .arg("--data-dir")
            .arg(dir.join("etcd-data"))
            .args(["--name", "default"])
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            // One apply is one transaction: allow batches of many objects.
            .args([
                "--max-txn-ops",
                "100000",
                "--max-request-bytes",
                "134217728",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("etcd could not start: is etcd-server installed? (scripts/test.sh installs it)")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    async fn wait_ready(&self) {
        crate::wait_http(
            &format!("{}/health", self.url()),
            "etcd to become healthy",
            Duration::from_secs(20),
            |r| r.status.is_success() && r.body.contains("true"),
        )
        .await;
    }

    /// Kills etcd (data kept), for outage tests.
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Starts etcd again on the same ports and data.
    pub async fn restart(&mut self) {
        self.child = Self::spawn(&self.dir, self.client_port, self.peer_port);
        self.wait_ready().await;
    }
}

fn which_etcd() -> String {
    for candidate in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if Path::new(candidate).exists() {
            return candidate.to_owned();
        }
    }
    "etcd".to_owned()
}

/// A `routemaster-control` replica on loopback port 0, killed on drop.
#[derive(Debug)]
pub struct ControlPlane {
    pub child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl ControlPlane {
    pub async fn start(etcd_url: &str, prefix: &str) -> Self {
        Self::start_on(etcd_url, prefix, "127.0.0.1:0", "127.0.0.1:0").await
    }

    pub async fn start_on(etcd_url: &str, prefix: &str, grpc: &str, http: &str) -> Self {
        Self::start_with(etcd_url, prefix, grpc, http, &["--node-ttl", "6s"]).await
    }

    /// Like [`ControlPlane::start_on`], with extra flags (`--node-ttl`, …).
    pub async fn start_with(
        etcd_url: &str,
        prefix: &str,
        grpc: &str,
        http: &str,
        extra: &[&str],
    ) -> Self {
        let mut cmd = Command::new(binary("routemaster-control"));
        cmd.args(["--etcd", etcd_url, "--prefix", prefix])
            .args(["--grpc-listen", grpc, "--http-listen", http])
            .args(extra);
        let (child, line) = spawn_reporting(cmd).await;
        // "routemaster-control listening on ADDR http ADDR"
        let words: Vec<&str> = line.split_whitespace().collect();
        let cp = Self {
            child,
            grpc: words[3].parse().unwrap(),
            http: words[5].parse().unwrap(),
        };
        crate::wait_http(
            &cp.http_url("/readyz"),
            "control plane ready",
            Duration::from_secs(20),
            |r| r.status.is_success(),
        )
        .await;
        cp
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// Spawns `cmd` (stdout piped, killed on drop) and returns its first stdout line.
pub async fn spawn_reporting(mut cmd: Command) -> (Child, String) {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("no address line within 20s")
        .unwrap()
        .expect("process exited before listening");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, line)
}

/// Runs the `routemaster` CLI against `control_plane`; returns (exit code, stdout, stderr).
pub async fn cli(control_plane: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(binary("routemaster"))
            .arg("--control-plane")
            .arg(control_plane)
            .args(args)
            // The tests read stderr as the CLI's own messages: no log lines, whatever the
            // environment running them asks for.
            .env_remove("RUST_LOG")
            .output(),
    )
    .await
    .expect("CLI did not finish in 30s")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
