//! Setup shared by `tests/proxy.rs` and `tests/reload.rs`: route-file snippets, a running
//! proxy with its route file, admin shortcuts, a raw HTTP/1.1 client for requests hyper
//! will not send, and a proxy spawn that captures stderr. Every wait is bounded.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use routemaster_integration_tests::client::HttpClient;
use routemaster_integration_tests::process::{ProxyProcess, binary};
use routemaster_integration_tests::{TempDir, eventually, write_atomic};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

/// One `services:` list item (flow style) with weight-1 instances.
pub fn svc(name: &str, addrs: &[SocketAddr]) -> String {
    let weighted: Vec<(SocketAddr, u32)> = addrs.iter().map(|a| (*a, 1)).collect();
    svc_weighted(name, &weighted)
}

/// One `services:` list item with explicit instance weights.
pub fn svc_weighted(name: &str, instances: &[(SocketAddr, u32)]) -> String {
    let list: Vec<String> = instances
        .iter()
        .map(|(a, w)| format!("{{ address: \"{a}\", weight: {w} }}"))
        .collect();
    format!("  - {{ name: {name}, instances: [{}] }}\n", list.join(", "))
}

/// A proxy process serving a route file in its own temp dir, plus a client.
#[derive(Debug)]
pub struct Running {
    pub proxy: ProxyProcess,
    pub client: HttpClient,
    pub file: PathBuf,
    pub dir: TempDir,
}

/// Writes `yaml` to a fresh route file and starts `routemaster-proxy` on it.
pub async fn start(tag: &str, yaml: &str, extra: &[&str]) -> Running {
    let dir = TempDir::new(tag);
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, yaml).unwrap();
    let proxy = ProxyProcess::start(&file, extra)
        .await
        .unwrap_or_else(|e| panic!("proxy did not start on\n{yaml}\n{e:#}"));
    Running {
        proxy,
        client: HttpClient::new(),
        file,
        dir,
    }
}

impl Running {
    /// GET through the proxy; panics on transport errors (statuses are returned).
    pub async fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> routemaster_integration_tests::client::Reply {
        self.client
            .get(&self.proxy.url(path), headers)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
    }

    pub async fn admin(&self, path: &str) -> routemaster_integration_tests::client::Reply {
        self.client
            .get(&self.proxy.admin_url(path), &[])
            .await
            .unwrap_or_else(|e| panic!("admin GET {path}: {e:#}"))
    }

    /// The applied snapshot version from `/config`.
    pub async fn version(&self) -> u64 {
        let config = self.admin("/config").await.json();
        config["version"]
            .as_u64()
            .unwrap_or_else(|| panic!("no version in {config}"))
    }

    /// Waits (bounded) until `/config` reports `version`.
    pub async fn wait_version(&self, version: u64, timeout: Duration) {
        eventually(timeout, &format!("/config version {version}"), || async {
            let config = self.admin("/config").await.json();
            (config["version"].as_u64() == Some(version)).then_some(())
        })
        .await;
    }

    /// Makes a harmless edit (appends a comment) and waits until `/config` shows the
    /// reload, so a test starts from a version bumped by the watcher. Returns it.
    pub async fn ensure_watching(&self) -> u64 {
        let base = self.version().await;
        let original = std::fs::read_to_string(&self.file).unwrap();
        write_atomic(&self.file, &format!("{original}# watcher check\n"));
        self.wait_version_at_least(base + 1, Duration::from_secs(1))
            .await
    }

    /// Waits (bounded) until `/config` reports `version` or later; returns it.
    pub async fn wait_version_at_least(&self, version: u64, timeout: Duration) -> u64 {
        eventually(
            timeout,
            &format!("/config version >= {version}"),
            || async {
                let config = self.admin("/config").await.json();
                config["version"].as_u64().filter(|v| *v >= version)
            },
        )
        .await
    }
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// Lowercased names, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` verbatim on a new connection and reads one response (bounded).
/// Write errors are ignored: the server may answer and close before reading it all.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> anyhow::Result<RawReply> {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut stream = TcpStream::connect(addr).await?;
        let _ = stream.write_all(request).await;
        read_reply(&mut stream).await
    })
    .await?
}

/// Reads one HTTP/1.1 response: head, then a `content-length` body (or up to EOF).
pub async fn read_reply(stream: &mut TcpStream) -> anyhow::Result<RawReply> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(
            n > 0,
            "closed before a full response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[head_end..].to_vec();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    anyhow::ensure!(
        length.is_some() || !headers.iter().any(|(k, _)| k == "transfer-encoding"),
        "chunked responses are not supported by this test client"
    );
    loop {
        if length.is_some_and(|len| body.len() >= len) {
            break;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            anyhow::ensure!(length.is_none(), "closed mid-body");
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(RawReply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Everything a process wrote to stderr so far.
#[derive(Debug, Clone, Default)]
pub struct Stderr(Arc<Mutex<String>>);

impl Stderr {
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
    pub fn contains(&self, needle: &str) -> bool {
        self.0.lock().unwrap().contains(needle)
    }
}

/// Like [`ProxyProcess::start`], but with stderr captured and text logs (for log
/// assertions).
pub async fn start_capturing(
    config: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<(ProxyProcess, Stderr)> {
    let mut cmd = Command::new(binary("routemaster-proxy"));
    cmd.arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        // Assertions read log lines as people do (no JSON escaping of quotes).
        .args(["--log-format", "text"])
        .args(extra);
    spawn_capturing(cmd).await
}

/// Spawns a proxy command (which may wrap the binary, e.g. in `sh -c 'ulimit …; exec'`)
/// with stderr captured; its first stdout line gives the addresses.
pub async fn spawn_capturing(mut cmd: Command) -> anyhow::Result<(ProxyProcess, Stderr)> {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let stderr = Stderr::default();
    let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = stderr.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = err_lines.next_line().await {
            let mut text = sink.0.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await??
        .ok_or_else(|| anyhow::anyhow!("proxy exited before listening: {}", stderr.text()))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let (Some(addr), Some(admin)) = (words.get(3), words.get(5)) else {
        anyhow::bail!("unexpected first line: {line}");
    };
    let (addr, admin) = (addr.parse()?, admin.parse()?);
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((ProxyProcess { child, addr, admin }, stderr))
}

/// Sends `n` GETs over `tasks` concurrent clients; counts answers by `x-backend`.
pub async fn spread(p: &Running, path: &str, n: usize, tasks: usize) -> BTreeMap<String, usize> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (client, url, next) = (p.client.clone(), p.proxy.url(path), next.clone());
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let reply = client.get(&url, &[]).await.unwrap();
                assert_eq!(reply.status, 200, "{}", reply.body);
                mine.push(reply.header("x-backend").unwrap().to_owned());
            }
            mine
        }));
    }
    let mut counts = BTreeMap::new();
    for h in handles {
        for name in h.await.unwrap() {
            *counts.entry(name).or_insert(0) += 1;
        }
    }
    counts
}

/// A port on which nothing listens (bound, then released).
pub fn dead_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// True for a lowercase hyphenated UUID (`8-4-4-4-12` hex digits).
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    s.len() == 36
        && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| {
            g.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// The values the echo backend saw for header `name` (empty when absent).
pub fn seen(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echo["headers"][name]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The single value the echo backend saw for header `name`.
pub fn seen_one(echo: &serde_json::Value, name: &str) -> Option<String> {
    let mut values = seen(echo, name);
    assert!(
        values.len() <= 1,
        "{name} sent {} times: {values:?}",
        values.len()
    );
    values.pop()
}
