//! Test harness shared by the integration tests (`tests/`) and the demo backend:
//! an echo backend on a real socket, a handle on a real `routemaster-proxy` process,
//! and a small HTTP client. Every wait here is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod backend;
pub mod browser;
pub mod client;
pub mod cluster;
pub mod etcd_cluster;
pub mod fleet;
pub mod haproxy;
pub mod process;

use std::path::Path;
use std::time::Duration;

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `GET url` until `accept` likes the reply, or panics after `timeout`.
pub async fn wait_http(
    url: &str,
    what: &str,
    timeout: Duration,
    accept: impl Fn(&client::Reply) -> bool,
) {
    let http = client::HttpClient::new();
    eventually(timeout, what, || async {
        let reply = http.get(url, &[]).await.ok()?;
        accept(&reply).then_some(())
    })
    .await;
}

/// Replaces `path` atomically (write a sibling, then rename over), as config
/// management tools do.
pub fn write_atomic(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("routemaster-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The value of metric `name` whose labels include every `(label, value)` of `labels`
/// (in any order) in a Prometheus text scrape.
pub fn metric_sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?;
        let ok = (rest.is_empty() && labels.is_empty())
            || (rest.starts_with('{')
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))));
        ok.then(|| value.parse().ok())?
    })
}
