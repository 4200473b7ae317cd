//! Real `routemaster-*` processes for tests: started from the workspace's target dir,
//! addresses learned from their first stdout line (they bind port 0), killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Path of a workspace binary. The test command builds them first
/// (`cargo build --workspace --bins`).
pub fn binary(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests",
        path.display()
    );
    path
}

#[derive(Debug)]
pub struct ProxyProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl ProxyProcess {
    /// Starts `routemaster-proxy --config FILE` on 127.0.0.1:0 (both listeners).
    pub async fn start(config: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(binary("routemaster-proxy"));
        cmd.arg("--config")
            .arg(config)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(extra);
        Self::spawn(cmd).await
    }

    pub async fn spawn(mut cmd: Command) -> anyhow::Result<Self> {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("proxy did not report its addresses within 20s"))??
            .ok_or_else(|| anyhow::anyhow!("proxy exited before listening"))?;
        // "routemaster-proxy listening on ADDR admin ADDR"
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(addr), Some(admin)) = (words.get(3), words.get(5)) else {
            anyhow::bail!("unexpected first line: {line}");
        };
        let (addr, admin) = (addr.parse()?, admin.parse()?);
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, addr, admin })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .expect("process did not exit in time")
            .ok()
            .and_then(|s| s.code())
    }
}
