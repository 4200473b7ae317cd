//! HAProxy (the Debian `haproxy` package) in front of a set of proxy *slots*, as a
//! production load balancer would sit in front of a Routemaster fleet.
//!
//! A slot is a fixed pair of loopback ports (traffic, admin). The proxy in a slot can be
//! restarted on the same ports, so HAProxy's configuration never changes. HAProxy checks
//! each slot with `GET /readyz` on its admin port every 100 ms (`fall 1 rise 2`), retries
//! failed connections and empty responses on another slot (`retries 3`, `retry-on
//! conn-failure empty-response response-timeout`, `option redispatch`), and reuses
//! server connections (`http-reuse safe`). It runs in the foreground (`haproxy -db`),
//! killed on drop, and its stats socket tells the test which slots it sees UP.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use crate::cluster::free_port;
use crate::etcd_cluster::restartable_port;
use crate::eventually;

/// The loopback ports of one proxy slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Proxied traffic (`routemaster-proxy --listen`).
    pub listen: u16,
    /// Admin API (`--admin-listen`), where HAProxy checks `/readyz`.
    pub admin: u16,
}

impl Slot {
    /// `n` slots on distinct free ports below the kernel's ephemeral range (32768 and
    /// up on Linux), so that while a slot's proxy restarts no outgoing connection can be
    /// given its port.
    pub fn many(n: usize) -> Vec<Self> {
        let mut taken = Vec::new();
        (0..n)
            .map(|_| Self {
                listen: restartable_port(&mut taken),
                admin: restartable_port(&mut taken),
            })
            .collect()
    }
}

/// The name HAProxy gives slot `i` (`p0`, `p1`, ...), as shown in its stats.
pub fn server_name(i: usize) -> String {
    format!("p{i}")
}

#[derive(Debug)]
pub struct HaProxy {
    child: Child,
    /// HAProxy's frontend port on 127.0.0.1.
    pub port: u16,
    socket: PathBuf,
    slots: usize,
}

/// HAProxy's configuration for `slots`, listening on `port`, stats socket at `socket`.
pub fn config(port: u16, socket: &Path, slots: &[Slot]) -> String {
    let mut cfg = format!(
        "global
    maxconn 4096
    stats socket {socket} mode 600 level admin

defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    timeout http-request 10s
    timeout check 1s
    retries 3
    retry-on conn-failure empty-response response-timeout
    option redispatch
    http-reuse safe

frontend fe
    bind 127.0.0.1:{port}
    default_backend proxies

backend proxies
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr host localhost
    http-check expect status 200
    default-server inter 100ms fall 1 rise 2
",
        socket = socket.display()
    );
    for (i, slot) in slots.iter().enumerate() {
        cfg.push_str(&format!(
            "    server {} 127.0.0.1:{} check port {}\n",
            server_name(i),
            slot.listen,
            slot.admin
        ));
    }
    cfg
}

impl HaProxy {
    /// Writes the configuration under `dir` and starts HAProxy on a free port. Returns
    /// once its stats socket answers (the servers may still be DOWN: see
    /// [`Self::wait_up`]).
    pub async fn start(dir: &Path, slots: &[Slot]) -> Self {
        let port = free_port();
        let socket = dir.join("haproxy.sock");
        let cfg_path = dir.join("haproxy.cfg");
        std::fs::write(&cfg_path, config(port, &socket, slots)).unwrap();
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        let child = Command::new(which_haproxy())
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("haproxy could not start: is the haproxy package installed?");
        let haproxy = Self {
            child,
            port,
            socket,
            slots: slots.len(),
        };
        eventually(Duration::from_secs(10), "haproxy stats socket", || async {
            haproxy.stats().await.ok().map(|_| ())
        })
        .await;
        haproxy
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Runs one command on the stats socket and returns its answer.
    pub async fn command(&self, command: &str) -> std::io::Result<String> {
        let io = async {
            let mut stream = UnixStream::connect(&self.socket).await?;
            stream.write_all(format!("{command}\n").as_bytes()).await?;
            let mut out = String::new();
            stream.read_to_string(&mut out).await?;
            Ok(out)
        };
        tokio::time::timeout(Duration::from_secs(2), io)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    }

    /// `show stat` as rows of named fields.
    async fn stats(&self) -> std::io::Result<Vec<std::collections::HashMap<String, String>>> {
        let csv = self.command("show stat").await?;
        let mut lines = csv.lines();
        let header = lines
            .next()
            .and_then(|h| h.strip_prefix("# "))
            .ok_or_else(|| std::io::Error::other(format!("unexpected stats: {csv:?}")))?;
        let names: Vec<&str> = header.split(',').collect();
        Ok(lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                names
                    .iter()
                    .zip(l.split(','))
                    .map(|(k, v)| ((*k).to_owned(), v.to_owned()))
                    .collect()
            })
            .collect())
    }

    /// Slot `i`'s check state as HAProxy reports it: `UP`, `DOWN`, `UP 1/2`, `no check`...
    pub async fn server_status(&self, i: usize) -> Option<String> {
        let name = server_name(i);
        self.stats()
            .await
            .ok()?
            .into_iter()
            .find(|row| {
                row.get("pxname").map(String::as_str) == Some("proxies")
                    && row.get("svname") == Some(&name)
            })
            .and_then(|row| row.get("status").cloned())
    }

    /// Whether HAProxy currently sends traffic to slot `i` (fully `UP`).
    pub async fn is_up(&self, i: usize) -> bool {
        self.server_status(i).await.as_deref() == Some("UP")
    }

    /// Waits until HAProxy sees every slot `UP`.
    pub async fn wait_up(&self, timeout: Duration) {
        for i in 0..self.slots {
            self.wait_slot_up(i, timeout).await;
        }
    }

    /// Waits until HAProxy sees slot `i` `UP`.
    pub async fn wait_slot_up(&self, i: usize, timeout: Duration) {
        eventually(timeout, &format!("haproxy to see slot {i} UP"), || async {
            self.is_up(i).await.then_some(())
        })
        .await;
    }
}

fn which_haproxy() -> String {
    for candidate in ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"] {
        if Path::new(candidate).exists() {
            return candidate.to_owned();
        }
    }
    "haproxy".to_owned()
}
