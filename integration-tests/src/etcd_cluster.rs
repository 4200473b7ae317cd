//! A real multi-member etcd cluster on loopback for fault-injection tests: members
//! `m0..mN` with their own client and peer ports and data dirs, a unique cluster token,
//! the leader found through etcd's HTTP gateway (`POST /v3/maintenance/status`, so no
//! `etcdctl` is needed), and members killed and restarted on the same ports and data.
//! Every member is killed on drop; every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::client::HttpClient;
use crate::eventually;

/// One member: fixed ports and data dir, a process while it runs.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// `size` etcd members forming one cluster.
#[derive(Debug)]
pub struct EtcdCluster {
    dir: PathBuf,
    token: String,
    members: Vec<Member>,
    http: HttpClient,
}

impl EtcdCluster {
    /// Starts `size` members with their data under `dir` and waits (bounded) until every
    /// one of them reports healthy (which in etcd 3.4 means it sees a leader).
    pub async fn start(dir: &Path, size: usize) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut taken = Vec::new();
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: restartable_port(&mut taken),
                peer_port: restartable_port(&mut taken),
                child: None,
            })
            .collect();
        let mut cluster = Self {
            dir: dir.to_owned(),
            token: format!("routemaster-{}-{n}", std::process::id()),
            members,
            http: HttpClient::new(),
        };
        for i in 0..size {
            cluster.spawn(i, "new");
        }
        cluster.wait_healthy(Duration::from_secs(30)).await;
        cluster
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        // etcd's own log, kept next to its data for post-mortems.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))
            .unwrap();
        let child = Command::new(which_etcd())
            .arg("--data-dir")
            .arg(self.dir.join(format!("{}.etcd", m.name)))
            .args(["--name", &m.name])
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            // One apply is one transaction: allow batches of many objects.
            .args([
                "--max-txn-ops",
                "100000",
                "--max-request-bytes",
                "134217728",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect(
                "etcd could not start: is etcd-server installed? (scripts/test.sh installs it)",
            );
        self.members[i].child = Some(child);
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Member `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every member's client URL, comma-joined (what `routemaster-control --etcd` takes).
    pub fn endpoints(&self) -> String {
        (0..self.size())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// Whether member `i` answers `/health` with `true` (it runs and sees a leader).
    pub async fn is_healthy(&self, i: usize) -> bool {
        match self.http.get(&format!("{}/health", self.url(i)), &[]).await {
            Ok(r) => r.status.is_success() && r.body.contains("\"true\""),
            Err(_) => false,
        }
    }

    /// Waits until every running member is healthy.
    pub async fn wait_healthy(&self, timeout: Duration) {
        eventually(timeout, "every running etcd member healthy", || async {
            for i in 0..self.size() {
                if self.is_running(i) && !self.is_healthy(i).await {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }

    /// `(this member's id, the leader it knows of)` from the member's status, or `None`
    /// when it does not answer or knows no leader.
    async fn status(&self, i: usize) -> Option<(String, String)> {
        let url = format!("{}/v3/maintenance/status", self.url(i));
        let req = http::Request::post(url)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
            .ok()?;
        let reply = tokio::time::timeout(Duration::from_secs(2), self.http.send(req))
            .await
            .ok()?
            .ok()?;
        if !reply.status.is_success() {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
        let id = json["header"]["member_id"].as_str()?.to_owned();
        let leader = json["leader"].as_str()?.to_owned();
        (leader != "0").then_some((id, leader))
    }

    /// The index of the current leader, as the running members report it: `None` when
    /// no running member knows one, or they disagree (an election is under way).
    pub async fn leader(&self) -> Option<usize> {
        let mut statuses = Vec::new();
        for i in 0..self.size() {
            if self.is_running(i) {
                statuses.push((i, self.status(i).await));
            }
        }
        let mut leader_id: Option<&str> = None;
        for (_, status) in &statuses {
            let (_, leader) = status.as_ref()?;
            match leader_id {
                None => leader_id = Some(leader),
                Some(l) if l == leader => {}
                Some(_) => return None,
            }
        }
        let leader_id = leader_id?;
        statuses
            .iter()
            .find(|(_, s)| s.as_ref().is_some_and(|(id, _)| id == leader_id))
            .map(|(i, _)| *i)
    }

    /// Waits until the running members agree on a leader and returns its index.
    pub async fn wait_leader(&self, timeout: Duration) -> usize {
        eventually(timeout, "an etcd leader", || self.leader()).await
    }

    /// Kills member `i` (SIGKILL; its data is kept) and waits for it to be gone.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts member `i` again on the same ports and data dir
    /// (`--initial-cluster-state existing`). Does not wait: a lone member of a stopped
    /// cluster cannot become healthy until a quorum is back; see [`Self::wait_healthy`].
    pub fn restart(&mut self, i: usize) {
        assert!(!self.is_running(i), "member {i} is still running");
        self.spawn(i, "existing");
    }

    /// OS process id of member `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().and_then(Child::id)
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

/// A loopback port in 20000..32000, free now and not in `taken` (then added to it).
///
/// For processes that restart on the same port: the kernel hands out ephemeral ports
/// for outgoing connections from 32768 up (`net.ipv4.ip_local_port_range`), so a port
/// below that range cannot be taken by some connection while its owner is down, which
/// a port from binding port 0 could.
pub fn restartable_port(taken: &mut Vec<u16>) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..1000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.push(port);
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}
