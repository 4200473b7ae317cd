//! A whole system on loopback for tests and the propagation benchmark: real etcd, one or
//! more control planes, connected proxies, echo backends, and the CLI.

use std::time::Duration;

use tokio::process::Command;

use crate::backend::EchoBackend;
use crate::client::{HttpClient, Reply};
use crate::cluster::{ControlPlane, Etcd, cli};
use crate::process::{ProxyProcess, binary};
use crate::{TempDir, eventually};

#[derive(Debug)]
pub struct Fleet {
    pub dir: TempDir,
    pub etcd: Etcd,
    pub control: Vec<ControlPlane>,
    pub proxies: Vec<ProxyProcess>,
    pub client: HttpClient,
}

/// Starts a connected proxy: `routemaster-proxy --control-plane URLS --node-id ID --group G`.
pub async fn start_proxy(control_urls: &str, node: &str, group: &str) -> ProxyProcess {
    start_proxy_with(control_urls, node, group, &[]).await
}

/// [`start_proxy`] with extra flags (`--state-dir`, `--drain-delay`, …).
pub async fn start_proxy_with(
    control_urls: &str,
    node: &str,
    group: &str,
    extra: &[&str],
) -> ProxyProcess {
    let mut cmd = Command::new(binary("routemaster-proxy"));
    cmd.args([
        "--control-plane",
        control_urls,
        "--node-id",
        node,
        "--group",
        group,
    ])
    .args(["--label", "zone=test"])
    .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
    .args(["--health-interval", "1s"])
    .args(extra);
    ProxyProcess::spawn(cmd).await.unwrap()
}

impl Fleet {
    /// etcd + one control plane + proxies `(node id, group)` connected to it.
    pub async fn start(tag: &str, proxies: &[(&str, &str)]) -> Self {
        let dir = TempDir::new(tag);
        let etcd = Etcd::start(dir.path()).await;
        let control = ControlPlane::start(&etcd.url(), "/routemaster").await;
        let url = control.grpc_url();
        let mut procs = Vec::new();
        for (node, group) in proxies {
            procs.push(start_proxy(&url, node, group).await);
        }
        Self {
            dir,
            etcd,
            control: vec![control],
            proxies: procs,
            client: HttpClient::new(),
        }
    }

    pub fn cp_url(&self) -> String {
        self.control[0].grpc_url()
    }

    /// Writes `yaml` to a file and runs `routemaster apply -f` against control plane `i`.
    pub async fn apply(&self, i: usize, yaml: &str) -> (i32, String, String) {
        let file = self.dir.path().join(format!("apply-{}.yaml", fastish_id()));
        std::fs::write(&file, yaml).unwrap();
        cli(
            &self.control[i].grpc_url(),
            &["apply", "-f", file.to_str().unwrap()],
        )
        .await
    }

    pub async fn get(&self, proxy: usize, path: &str, host: &str) -> Option<Reply> {
        self.client
            .get(&self.proxies[proxy].url(path), &[("host", host)])
            .await
            .ok()
    }

    /// Waits until every proxy answers `path` with `status` (and, if given, the backend).
    pub async fn wait_all(&self, path: &str, status: u16, backend: Option<&str>) {
        for i in 0..self.proxies.len() {
            self.wait_one(i, path, status, backend).await;
        }
    }

    pub async fn wait_one(&self, i: usize, path: &str, status: u16, backend: Option<&str>) {
        eventually(
            Duration::from_secs(10),
            &format!("proxy {i} to answer {path} with {status} {backend:?}"),
            || async move {
                let r = self.get(i, path, "example.com").await?;
                (r.status.as_u16() == status
                    && backend.is_none_or(|b| r.header("x-backend") == Some(b)))
                .then_some(())
            },
        )
        .await;
    }

    /// The control plane's `/v1/status` JSON.
    pub async fn status(&self, i: usize) -> serde_json::Value {
        self.client
            .get(&self.control[i].http_url("/v1/status"), &[])
            .await
            .unwrap()
            .json()
    }
}

fn fastish_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A route file with one service per backend (`svc-N` → backend N) and the given routes.
pub fn route_file(backends: &[&EchoBackend], routes: &str) -> String {
    let mut out = String::from("services:\n");
    for (i, b) in backends.iter().enumerate() {
        out.push_str(&format!(
            "  - {{ name: svc-{i}, instances: [{{ address: \"{}\" }}] }}\n",
            b.addr
        ));
    }
    out.push_str("routes:\n");
    out.push_str(routes);
    out
}
