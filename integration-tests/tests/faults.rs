//! Faults under load, end to end: a 3-member etcd cluster, two control-plane replicas
//! given all three etcd endpoints, two connected proxies in fixed port slots
//! (`--drain-delay 500ms`) behind HAProxy (health checks on `/readyz`, retries), and two
//! echo backends. Four client tasks send a steady stream of keep-alive requests through
//! HAProxy (and a fifth, slow one: 700 ms at the backend, so requests are in flight
//! whenever something stops) while faults are injected one after another:
//!
//! - a. 100 route changes (of other routes), alternating between the replicas;
//! - b. each control plane killed and restarted (the proxies fail over and reconverge);
//! - c. the etcd leader killed during a stream of writes and kept down for a while after
//!   the election, then restarted: acknowledged versions only grow, every write the CLI
//!   acknowledged is present afterwards (on both replicas), a refused write says etcd is
//!   unreachable in one line, writes are refused only during the election, and every
//!   proxy converges on the last version;
//! - d. the whole etcd cluster stopped and restarted: traffic keeps flowing, writes are
//!   refused clearly meanwhile and accepted again after;
//! - e. a rolling restart of both proxies (SIGTERM, drain, exit 0, start again in the
//!   same slot, HAProxy sees it UP), which must cost no request; the drain contract is
//!   checked on the way: `/readyz` 503 at once, `connection: close` during the drain
//!   delay, HAProxy takes the proxy out before it exits, a request in flight across the
//!   end of the delay is answered, exit 0 no sooner than the delay;
//! - f. a backend instance killed with SIGKILL and removed by an apply two seconds later:
//!   its failed requests are reported, not asserted, until health checks and outlier
//!   ejection land (the resilience issue).
//!
//! Every request is counted per fault; the test asserts that none failed and prints a
//! table (`cargo test -p routemaster-integration-tests --test faults -- --nocapture`).
//!
//! `soak` (ignored) runs the same system for `SOAK_SECONDS` (default 600) at moderate
//! load with a route change every few seconds and reports RSS and open file descriptors
//! of every process at start and end (`scripts/soak.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use routemaster_integration_tests::backend::EchoBackend;
use routemaster_integration_tests::client::HttpClient;
use routemaster_integration_tests::cluster::{ControlPlane, cli};
use routemaster_integration_tests::etcd_cluster::{EtcdCluster, restartable_port};
use routemaster_integration_tests::haproxy::{HaProxy, Slot};
use routemaster_integration_tests::process::{ProxyProcess, binary};
use routemaster_integration_tests::{TempDir, eventually};
use tokio::process::Command;
use tokio::task::JoinHandle;

const PREFIX: &str = "/routemaster";
/// What a refused write must say while etcd has no quorum.
const ETCD_UNREACHABLE: &str = "etcd is unreachable";

// ---------------------------------------------------------------------------------
// The system under test
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct System {
    dir: TempDir,
    etcd: EtcdCluster,
    control: Vec<ControlPlane>,
    /// `(grpc, http)` of each control plane, kept for restarts on the same ports.
    control_addrs: Vec<(String, String)>,
    slots: Vec<Slot>,
    /// `None` while the slot's proxy is stopped.
    proxies: Vec<Option<ProxyProcess>>,
    haproxy: HaProxy,
    backends: Vec<EchoBackend>,
    http: HttpClient,
}

impl System {
    async fn start(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let etcd = EtcdCluster::start(dir.path(), 3).await;
        // Control planes restart on their ports: take them below the ephemeral range.
        let mut taken = Vec::new();
        let mut control = Vec::new();
        for _ in 0..2 {
            let grpc = format!("127.0.0.1:{}", restartable_port(&mut taken));
            let http = format!("127.0.0.1:{}", restartable_port(&mut taken));
            control.push(ControlPlane::start_on(&etcd.endpoints(), PREFIX, &grpc, &http).await);
        }
        let control_addrs = control
            .iter()
            .map(|c| (c.grpc.to_string(), c.http.to_string()))
            .collect();
        let backends = vec![EchoBackend::start("a").await, EchoBackend::start("b").await];
        let addrs: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
        let base = load_route(&addrs);
        let slots = Slot::many(2);
        let haproxy = HaProxy::start(dir.path(), &slots).await;
        let mut sys = Self {
            dir,
            etcd,
            control,
            control_addrs,
            slots,
            proxies: Vec::new(),
            haproxy,
            backends,
            http: HttpClient::new(),
        };
        let write = sys.apply(0, &base).await;
        let version = write
            .acked()
            .unwrap_or_else(|| panic!("base apply: {write:?}"));
        for i in 0..sys.slots.len() {
            let proxy = sys.start_proxy(i).await;
            sys.proxies.push(Some(proxy));
        }
        sys.haproxy.wait_up(Duration::from_secs(20)).await;
        sys.wait_converged(version).await;
        let url = sys.haproxy.url("/load/ready");
        routemaster_integration_tests::wait_http(
            &url,
            "the load route through haproxy",
            Duration::from_secs(10),
            |r| r.status.is_success(),
        )
        .await;
        sys
    }

    fn control_urls(&self) -> String {
        self.control_addrs
            .iter()
            .map(|(grpc, _)| format!("http://{grpc}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn cp_grpc(&self, i: usize) -> String {
        format!("http://{}", self.control_addrs[i].0)
    }

    fn cp_http(&self, i: usize, path: &str) -> String {
        format!("http://{}{path}", self.control_addrs[i].1)
    }

    /// Starts the proxy of slot `i` on the slot's fixed ports.
    async fn start_proxy(&self, i: usize) -> ProxyProcess {
        let slot = self.slots[i];
        let mut cmd = Command::new(binary("routemaster-proxy"));
        cmd.args(["--control-plane", &self.control_urls()])
            .args(["--node-id", &format!("p{i}"), "--group", "default"])
            .args(["--listen", &format!("127.0.0.1:{}", slot.listen)])
            .args(["--admin-listen", &format!("127.0.0.1:{}", slot.admin)])
            .args(["--health-interval", "1s"])
            .args(["--drain-delay", "500ms"]);
        ProxyProcess::spawn(cmd).await.unwrap_or_else(|e| {
            panic!("proxy p{i} did not start (does routemaster-proxy have --drain-delay?): {e:#}")
        })
    }

    async fn kill_control(&mut self, i: usize) {
        self.control[i].kill().await;
    }

    async fn restart_control(&mut self, i: usize) {
        let (grpc, http) = self.control_addrs[i].clone();
        self.control[i] =
            ControlPlane::start_on(&self.etcd.endpoints(), PREFIX, &grpc, &http).await;
    }

    async fn apply(&self, cp: usize, yaml: &str) -> Write {
        apply(self.dir.path(), &self.cp_grpc(cp), yaml).await
    }

    /// Control plane `i`'s published version (`/v1/status`), if it answers.
    async fn cp_version(&self, i: usize) -> Option<u64> {
        let r = self
            .http
            .get(&self.cp_http(i, "/v1/status"), &[])
            .await
            .ok()?;
        serde_json::from_str::<serde_json::Value>(&r.body).ok()?["version"].as_u64()
    }

    /// The version proxy `i` serves (`/config` on its admin API), if it answers.
    async fn proxy_version(&self, i: usize) -> Option<u64> {
        let p = self.proxies[i].as_ref()?;
        let r = self.http.get(&p.admin_url("/config"), &[]).await.ok()?;
        serde_json::from_str::<serde_json::Value>(&r.body).ok()?["version"].as_u64()
    }

    /// Waits until both replicas publish one version ≥ `at_least` and every running
    /// proxy serves exactly that version; returns it.
    async fn wait_converged(&self, at_least: u64) -> u64 {
        eventually(
            Duration::from_secs(20),
            &format!("control planes and proxies converged on a version >= {at_least}"),
            || async {
                let v = self.cp_version(0).await?;
                if v < at_least || self.cp_version(1).await? != v {
                    return None;
                }
                for i in 0..self.proxies.len() {
                    if self.proxies[i].is_some() && self.proxy_version(i).await? != v {
                        return None;
                    }
                }
                Some(v)
            },
        )
        .await
    }
}

/// The outcome of one `routemaster apply`.
#[derive(Debug, Clone)]
struct Write {
    code: i32,
    stdout: String,
    stderr: String,
    started: Instant,
    ended: Instant,
}

impl Write {
    /// The version the CLI acknowledged (exit 0 and a `version N` line).
    fn acked(&self) -> Option<u64> {
        if self.code != 0 {
            return None;
        }
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("version "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Refused the way a write must be refused while etcd cannot take it: exit 1 and
    /// one line saying etcd is unreachable.
    fn refused_clearly(&self) -> bool {
        self.code == 1
            && self.stderr.contains(ETCD_UNREACHABLE)
            && self.stderr.trim().lines().count() == 1
    }
}

/// Writes `yaml` to a new file under `dir` and runs `routemaster apply -f` against `cp`.
async fn apply(dir: &Path, cp: &str, yaml: &str) -> Write {
    static N: AtomicU64 = AtomicU64::new(0);
    let file: PathBuf = dir.join(format!("apply-{}.yaml", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&file, yaml).unwrap();
    let started = Instant::now();
    let (code, stdout, stderr) = cli(cp, &["apply", "-f", file.to_str().unwrap()]).await;
    Write {
        code,
        stdout,
        stderr,
        started,
        ended: Instant::now(),
    }
}

/// A route of its own that no load request matches.
fn other_route(id: &str, path: &str) -> String {
    format!(
        "routes:\n  - {{ id: {id}, path: {{ prefix: {path} }}, forward: {{ service: web }} }}\n"
    )
}

// ---------------------------------------------------------------------------------
// Load: client tasks through HAProxy, every request counted against the current fault
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct Phase {
    name: String,
    sent: u64,
    failed: u64,
    /// The first failures, described.
    failures: Vec<String>,
    started: Instant,
    ended: Option<Instant>,
}

#[derive(Debug)]
struct Load {
    stop: Arc<AtomicBool>,
    current: Arc<AtomicUsize>,
    /// Per client task: the phase its latest request was counted under.
    latest: Arc<Vec<AtomicUsize>>,
    phases: Arc<Mutex<Vec<Phase>>>,
    tasks: Vec<JoinHandle<()>>,
    t0: Instant,
}

impl Load {
    /// `fast + slow` keep-alive clients, each sending `GET /load/...` to `url_base` with
    /// a pause of `pause` between requests; the slow ones' requests take 700 ms at the
    /// backend (so some are in flight whenever a proxy drains). Counted under `first`.
    fn start(url_base: &str, fast: usize, slow: usize, pause: Duration, first: &str) -> Self {
        let t0 = Instant::now();
        let phases = Arc::new(Mutex::new(vec![Phase::new(first)]));
        let current = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let latest: Arc<Vec<AtomicUsize>> =
            Arc::new((0..fast + slow).map(|_| AtomicUsize::new(0)).collect());
        let tasks = (0..fast + slow)
            .map(|w| {
                let query = if w < fast { "" } else { "?sleep_ms=700" };
                let (phases, current, stop, latest) = (
                    Arc::clone(&phases),
                    Arc::clone(&current),
                    Arc::clone(&stop),
                    Arc::clone(&latest),
                );
                let base = url_base.to_owned();
                tokio::spawn(async move {
                    let client = HttpClient::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let phase = current.load(Ordering::Relaxed);
                        latest[w].store(phase, Ordering::Relaxed);
                        let url = format!("{base}/load/{w}/{n}{query}");
                        let result = client.get(&url, &[("host", "example.com")]).await;
                        let failure = match &result {
                            Ok(r) if r.status.is_success() && r.header("x-backend").is_some() => {
                                None
                            }
                            Ok(r) => Some(format!(
                                "status {} x-request-id {:?} body {:?}",
                                r.status,
                                r.header("x-request-id"),
                                r.body.chars().take(160).collect::<String>()
                            )),
                            Err(e) => Some(format!("error: {e:#}")),
                        };
                        {
                            let mut phases = phases.lock().unwrap();
                            let p = &mut phases[phase];
                            p.sent += 1;
                            if let Some(f) = failure {
                                p.failed += 1;
                                if p.failures.len() < 20 {
                                    let at = t0.elapsed().as_secs_f64();
                                    p.failures.push(format!("{at:.3}s worker {w} {url}: {f}"));
                                }
                            }
                        }
                        n += 1;
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            current,
            latest,
            phases,
            tasks,
            t0,
        }
    }

    /// Waits (bounded) until every client has finished its request from an earlier
    /// phase, so what happens next is counted only under the current one.
    async fn settle(&self) {
        let now = self.current.load(Ordering::Relaxed);
        eventually(
            Duration::from_secs(5),
            "requests of the last phase to end",
            || async {
                self.latest
                    .iter()
                    .all(|l| l.load(Ordering::Relaxed) == now)
                    .then_some(())
            },
        )
        .await;
    }

    /// Requests started from now on count against `name`.
    fn phase(&self, name: &str) {
        let mut phases = self.phases.lock().unwrap();
        if let Some(last) = phases.last_mut() {
            last.ended = Some(Instant::now());
        }
        phases.push(Phase::new(name));
        self.current.store(phases.len() - 1, Ordering::Relaxed);
    }

    fn table(&self) -> String {
        table(&self.phases.lock().unwrap())
    }

    /// Stops the clients and returns every phase.
    async fn finish(mut self) -> Vec<Phase> {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            tokio::time::timeout(Duration::from_secs(15), t)
                .await
                .expect("a load task did not stop")
                .unwrap();
        }
        let mut phases = std::mem::take(&mut *self.phases.lock().unwrap());
        if let Some(last) = phases.last_mut() {
            last.ended = Some(Instant::now());
        }
        eprintln!("load ran {:.1}s", self.t0.elapsed().as_secs_f64());
        phases
    }
}

impl Drop for Load {
    /// A fault that fails an assertion midway still shows what the load saw.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if !std::thread::panicking() {
            return;
        }
        if let Ok(phases) = self.phases.lock() {
            eprintln!("load so far:\n{}", table(&phases));
            for p in phases.iter() {
                for f in &p.failures {
                    eprintln!("  [{}] {f}", p.name);
                }
            }
        }
    }
}

impl Phase {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            sent: 0,
            failed: 0,
            failures: Vec::new(),
            started: Instant::now(),
            ended: None,
        }
    }
}

fn table(phases: &[Phase]) -> String {
    let mut out = format!(
        "| {:<44} | {:>8} | {:>8} | {:>6} | {:>6} |\n|{:-<46}|{:->10}|{:->10}|{:->8}|{:->8}|\n",
        "fault", "requests", "failed", "secs", "req/s", "", "", "", "", ""
    );
    for p in phases {
        let secs = p
            .ended
            .unwrap_or_else(Instant::now)
            .duration_since(p.started)
            .as_secs_f64();
        let _ = writeln!(
            out,
            "| {:<44} | {:>8} | {:>8} | {:>6.1} | {:>6.0} |",
            p.name,
            p.sent,
            p.failed,
            secs,
            p.sent as f64 / secs.max(1e-3)
        );
    }
    out
}

// ---------------------------------------------------------------------------------
// The faults
// ---------------------------------------------------------------------------------

/// The load route over these instances of the `web` service.
fn load_route(instances: &[String]) -> String {
    let list: Vec<String> = instances
        .iter()
        .map(|a| format!("      - address: \"{a}\"\n"))
        .collect();
    format!(
        "services:\n  - name: web\n    instances:\n{}routes:\n  - {{ id: load, path: {{ prefix: /load }}, forward: {{ service: web }} }}\n",
        list.concat()
    )
}

/// f. A third instance (a real process) joins `web`, is killed with SIGKILL while serving
/// and left in the configuration for two seconds, then removed with an apply. Nothing
/// takes a dead instance out by itself yet (health checks and outlier ejection are the
/// resilience issue's), so its share of requests fails until the apply: the figure is
/// reported, not asserted. Returns how long the instance was dead before the fleet
/// stopped sending to it.
async fn backend_kill(sys: &System, load: &Load) -> Duration {
    let mut cmd = tokio::process::Command::new(binary("routemaster-demo-backend"));
    cmd.args(["c", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = line.rsplit(' ').next().unwrap().to_owned();
    let mut instances: Vec<String> = sys.backends.iter().map(|b| b.addr.to_string()).collect();
    let two = load_route(&instances);
    instances.push(addr);
    let w = sys.apply(0, &load_route(&instances)).await;
    sys.wait_converged(w.acked().unwrap()).await;

    load.phase("f. backend SIGKILLed, removed after 2 s");
    load.settle().await;
    child.start_kill().unwrap();
    let killed = Instant::now();
    while killed.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(100)).await; // the measured window
    }
    let w = sys.apply(1, &two).await;
    sys.wait_converged(w.acked().unwrap()).await;
    let dead_for = killed.elapsed();
    eprintln!(
        "f. backend killed; removed by apply after {:.2}s",
        dead_for.as_secs_f64()
    );
    dead_for
}

/// a. 100 route changes of another route, alternating between the two replicas.
async fn route_changes(sys: &System) {
    let mut last = 0;
    for k in 0..100 {
        let w = sys
            .apply(k % 2, &other_route("churn", &format!("/churn/{k}")))
            .await;
        last = w
            .acked()
            .unwrap_or_else(|| panic!("change {k} failed: {w:?}"));
    }
    let v = sys.wait_converged(last).await;
    eprintln!("a. 100 route changes: converged on version {v}");
}

/// b. Kill each control plane in turn: the proxies fail over to the other replica (a
/// change applied there reaches them), then the replica restarts on its ports.
async fn control_plane_restarts(sys: &mut System) {
    for (dead, alive) in [(0, 1), (1, 0)] {
        sys.kill_control(dead).await;
        let w = sys
            .apply(
                alive,
                &other_route("cp-fault", &format!("/cp-fault/{dead}")),
            )
            .await;
        let v = w
            .acked()
            .unwrap_or_else(|| panic!("apply via cp{alive}: {w:?}"));
        eventually(
            Duration::from_secs(20),
            &format!("proxies to reach version {v} through cp{alive}"),
            || async {
                for i in 0..sys.proxies.len() {
                    if sys.proxy_version(i).await? < v {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
        sys.restart_control(dead).await;
        let w = sys
            .apply(
                dead,
                &other_route("cp-fault", &format!("/cp-fault/back-{dead}")),
            )
            .await;
        let v = w
            .acked()
            .unwrap_or_else(|| panic!("apply via restarted cp{dead}: {w:?}"));
        sys.wait_converged(v).await;
    }
    eprintln!("b. both control planes killed and restarted in turn; fleet reconverged");
}

/// What phase c saw, for the report.
#[derive(Debug, Default)]
struct LeaderKill {
    acked: usize,
    /// Refused between the kill and the moment the new leader was seen.
    refused_in_election: usize,
    /// Refused after the new leader was seen, while the old one was still down.
    refused_after_election: usize,
    acked_after_election: usize,
    /// Refused after every member was healthy again.
    refused_after_restart: usize,
}

/// A writer that applies a new route (`w-0`, `w-1`, ...) after each answer, until stopped.
#[derive(Debug)]
struct Writer {
    writes: Arc<Mutex<Vec<(usize, Write)>>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Writer {
    fn start(dir: &Path, cp: &str) -> Self {
        let writes: Arc<Mutex<Vec<(usize, Write)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (writes, stop) = (Arc::clone(&writes), Arc::clone(&stop));
            let (dir, cp) = (dir.to_owned(), cp.to_owned());
            tokio::spawn(async move {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    let yaml = other_route(&format!("w-{k}"), &format!("/w/{k}"));
                    let w = apply(&dir, &cp, &yaml).await;
                    let failed = w.acked().is_none();
                    writes.lock().unwrap().push((k, w));
                    k += 1;
                    if failed {
                        // No tight loop through an election.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        };
        Self { writes, stop, task }
    }

    /// Acknowledged writes that started at or after `since`.
    fn acked_since(&self, since: Instant) -> usize {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, w)| w.started >= since && w.acked().is_some())
            .count()
    }

    async fn wait_acked_since(&self, since: Instant, n: usize, what: &str) {
        eventually(Duration::from_secs(30), what, || async {
            (self.acked_since(since) >= n).then_some(())
        })
        .await;
    }

    async fn finish(self) -> Vec<(usize, Write)> {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(40), self.task)
            .await
            .expect("writer did not stop")
            .unwrap();
        std::mem::take(&mut *self.writes.lock().unwrap())
    }
}

/// c. Kill the etcd leader while a writer applies a new route after each answer; keep it
/// down for a while after the election, then restart it.
async fn leader_kill_during_writes(sys: &mut System) -> LeaderKill {
    let t0 = Instant::now();
    let writer = Writer::start(sys.dir.path(), &sys.cp_grpc(0));
    writer
        .wait_acked_since(t0, 3, "3 writes before the leader dies")
        .await;
    let leader = sys.etcd.wait_leader(Duration::from_secs(10)).await;
    let killed = Instant::now();
    sys.etcd.kill(leader).await;
    let new_leader = sys.etcd.wait_leader(Duration::from_secs(20)).await;
    let elected = Instant::now();
    assert_ne!(new_leader, leader);
    // Quorum is back: the old leader stays down while 10 more writes are acknowledged.
    writer
        .wait_acked_since(elected, 10, "10 writes acknowledged after the election")
        .await;
    sys.etcd.restart(leader);
    sys.etcd.wait_healthy(Duration::from_secs(30)).await;
    let healthy = Instant::now();
    writer
        .wait_acked_since(healthy, 5, "5 writes acknowledged after the restart")
        .await;
    let writes = writer.finish().await;
    let secs = |t: Instant| t.duration_since(t0).as_secs_f64();
    eprintln!(
        "c. etcd leader m{leader} killed at {:.2}s; m{new_leader} seen leading at {:.2}s; m{leader} healthy again at {:.2}s; {} writes",
        secs(killed),
        secs(elected),
        secs(healthy),
        writes.len()
    );

    // Acknowledged versions only grow; refused writes say why, in one line, and only
    // happen during the election (asserted below).
    let mut report = LeaderKill::default();
    let mut last = 0;
    for (k, w) in &writes {
        if let Some(v) = w.acked() {
            assert!(
                v > last,
                "write w-{k} acknowledged version {v} after {last}"
            );
            last = v;
            report.acked += 1;
            if w.started >= elected && w.started < healthy {
                report.acked_after_election += 1;
            }
            continue;
        }
        let when = if w.started < elected {
            report.refused_in_election += 1;
            "during the election"
        } else if w.started < healthy {
            report.refused_after_election += 1;
            "AFTER the election, one member down"
        } else {
            report.refused_after_restart += 1;
            "AFTER every member was healthy again"
        };
        eprintln!(
            "   w-{k} {:.3}s..{:.3}s refused {when} (exit {}): {}",
            secs(w.started),
            secs(w.ended),
            w.code,
            w.stderr.trim()
        );
        assert!(
            w.refused_clearly(),
            "write w-{k} was refused without saying etcd is unreachable: {w:?}"
        );
    }

    // Every acknowledged write is there, on both replicas, and the fleet converges.
    let v = sys.wait_converged(last).await;
    let (code, listing, err) = cli(&sys.cp_grpc(1), &["get", "routes", "-o", "json"]).await;
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&listing).unwrap();
    let listed = listed.to_string();
    let mut landed_unacked = 0;
    for (k, w) in &writes {
        let id = format!("w-{k}");
        let quoted = format!("\"{id}\"");
        if w.acked().is_some() {
            let (code, out, err) = cli(&sys.cp_grpc(0), &["get", "route", &id]).await;
            assert!(
                code == 0 && out.contains(&id),
                "acknowledged write {id} (version {:?}) is missing: exit {code} {out}{err}",
                w.acked()
            );
            assert!(
                listed.contains(&quoted),
                "cp1 does not list acknowledged {id}"
            );
        } else if listed.contains(&quoted) {
            landed_unacked += 1;
        }
    }
    let refused = writes.len() - report.acked;
    assert_eq!(
        report.refused_after_election + report.refused_after_restart,
        0,
        "writes were refused outside the election"
    );
    eprintln!(
        "   {} acknowledged, all present (fleet on version {v}); {refused} refused ({} during the election, {} after it with m{leader} still down, {} after m{leader} was back; {landed_unacked} landed anyway)",
        report.acked,
        report.refused_in_election,
        report.refused_after_election,
        report.refused_after_restart
    );
    report
}

/// d. Stop every etcd member: traffic flows on, writes are refused with a clear error;
/// start them again: writes are accepted and the fleet converges.
async fn whole_etcd_restart(sys: &mut System) {
    for i in 0..sys.etcd.size() {
        sys.etcd.kill(i).await;
    }
    let down = Instant::now();
    let w = sys.apply(0, &other_route("outage", "/outage/during")).await;
    assert!(
        w.refused_clearly(),
        "a write with etcd down must be refused with one clear line: {w:?}"
    );
    // The proxies keep serving while etcd is away (the load is counting); hold the outage
    // long enough for the control planes' watches to notice.
    eventually(
        Duration::from_secs(20),
        "control planes see etcd down",
        || async {
            let mut down = 0;
            for i in 0..2 {
                let r = sys
                    .http
                    .get(&sys.cp_http(i, "/v1/status"), &[])
                    .await
                    .ok()?;
                let s: serde_json::Value = serde_json::from_str(&r.body).ok()?;
                if s["etcd"]["connected"] == false {
                    down += 1;
                }
            }
            (down == 2).then_some(())
        },
    )
    .await;
    // Reads are answered from the last snapshot meanwhile.
    let (code, out, err) = cli(&sys.cp_grpc(1), &["get", "route", "load"]).await;
    assert!(
        code == 0 && out.contains("load"),
        "read during the outage: {out}{err}"
    );
    // The outage lasts a while under load (the proxies must keep serving), not just the
    // moment it takes to notice it.
    let hold = Duration::from_secs(3);
    if let Some(rest) = hold.checked_sub(down.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let outage = down.elapsed();
    for i in 0..sys.etcd.size() {
        sys.etcd.restart(i);
    }
    sys.etcd.wait_healthy(Duration::from_secs(30)).await;
    let back = Instant::now();
    let refused = Mutex::new(Vec::new());
    let v = eventually(Duration::from_secs(30), "writes accepted again", || async {
        let w = sys.apply(0, &other_route("outage", "/outage/after")).await;
        if w.acked().is_none() {
            refused.lock().unwrap().push(w.stderr.trim().to_owned());
        }
        w.acked()
    })
    .await;
    let accepted_after = back.elapsed();
    let v = sys.wait_converged(v).await;
    let refused = refused.into_inner().unwrap();
    eprintln!(
        "d. etcd down {:.1}s; first write accepted {:.2}s after every member was healthy ({} refused before it{}); fleet on version {v}",
        outage.as_secs_f64(),
        accepted_after.as_secs_f64(),
        refused.len(),
        refused
            .first()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default()
    );
}

/// e. Rolling restart: SIGTERM each proxy in turn, check the drain contract (`/readyz`
/// 503 at once, `connection: close`, HAProxy takes it out before it exits, exit 0 after
/// the drain delay), start it again in the same slot and wait until HAProxy sees it UP.
async fn rolling_restart(sys: &mut System) {
    let version = sys.cp_version(0).await.unwrap();
    for i in 0..sys.slots.len() {
        let mut proxy = sys.proxies[i].take().unwrap();
        let admin = proxy.admin_url("/readyz");
        let direct = proxy.url("/load/direct");
        // A request sent straight to the proxy that outlasts the drain delay: it is in
        // flight when the proxy stops accepting and must still be answered.
        let stats = proxy.admin_url("/stats");
        let in_flight = {
            let url = proxy.url("/load/in-flight?sleep_ms=1000");
            tokio::spawn(async move {
                let r = HttpClient::new()
                    .get(&url, &[("host", "example.com")])
                    .await;
                (r, Instant::now())
            })
        };
        eventually(
            Duration::from_secs(5),
            "the slow request in flight",
            || async {
                let r = sys.http.get(&stats, &[]).await.ok()?;
                let s: serde_json::Value = serde_json::from_str(&r.body).ok()?;
                (s["in_flight"].as_u64()? >= 1).then_some(())
            },
        )
        .await;
        let signalled = Instant::now();
        proxy.signal("TERM");
        let client = HttpClient::new();
        let mut readyz_503: Option<Duration> = None;
        let mut closing: Option<Duration> = None;
        let mut haproxy_down: Option<Duration> = None;
        let exited = loop {
            if let Some(status) = proxy.child.try_wait().unwrap() {
                break (signalled.elapsed(), status);
            }
            assert!(
                signalled.elapsed() < Duration::from_secs(15),
                "proxy p{i} did not exit within 15s of SIGTERM"
            );
            if readyz_503.is_none() && client.get(&admin, &[]).await.is_ok_and(|r| r.status == 503)
            {
                readyz_503 = Some(signalled.elapsed());
            }
            if closing.is_none() {
                // A fresh connection each time: the proxy closes the previous one.
                let once = HttpClient::new();
                let reply = once.get(&direct, &[("host", "example.com")]).await;
                if reply.is_ok_and(|r| {
                    r.status.is_success()
                        && r.header("connection")
                            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
                }) {
                    closing = Some(signalled.elapsed());
                }
            }
            if haproxy_down.is_none() && !sys.haproxy.is_up(i).await {
                haproxy_down = Some(signalled.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let (exit_after, status) = exited;
        let (reply, answered) = tokio::time::timeout(Duration::from_secs(5), in_flight)
            .await
            .expect("the in-flight request did not finish")
            .unwrap();
        let reply = reply
            .unwrap_or_else(|e| panic!("p{i}: a request in flight during the drain failed: {e:#}"));
        assert_eq!(reply.status, 200, "p{i}: in-flight request: {}", reply.body);
        let answered_after = answered.duration_since(signalled);
        eprintln!(
            "   p{i}: request in flight since before SIGTERM answered after {answered_after:?}"
        );
        eprintln!(
            "e. p{i}: /readyz 503 after {readyz_503:?}, `connection: close` after {closing:?}, haproxy DOWN after {haproxy_down:?}, exit {status} after {exit_after:?}"
        );
        assert_eq!(status.code(), Some(0), "p{i} must exit 0 after draining");
        assert!(
            readyz_503.is_some_and(|t| t < Duration::from_millis(400)),
            "p{i}: /readyz must turn 503 at once on SIGTERM (saw 503 after {readyz_503:?})"
        );
        assert!(
            closing.is_some(),
            "p{i}: responses during the drain delay must carry `connection: close`"
        );
        assert!(
            exit_after >= Duration::from_millis(450),
            "p{i} exited {exit_after:?} after SIGTERM, before its 500ms drain delay"
        );
        assert!(
            haproxy_down.is_some_and(|t| t < exit_after),
            "haproxy must take p{i} out before it exits (DOWN after {haproxy_down:?}, exit after {exit_after:?})"
        );
        drop(proxy);
        let started = Instant::now();
        sys.proxies[i] = Some(sys.start_proxy(i).await);
        sys.haproxy.wait_slot_up(i, Duration::from_secs(20)).await;
        eprintln!(
            "   p{i} back in its slot; haproxy sees it UP after {:.2}s",
            started.elapsed().as_secs_f64()
        );
    }
    sys.wait_converged(version).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_under_load_fail_no_request() {
    let started = Instant::now();
    let mut sys = System::start("faults").await;
    eprintln!("system up in {:.1}s", started.elapsed().as_secs_f64());
    let load = Load::start(
        &sys.haproxy.url(""),
        4,
        1,
        Duration::from_millis(4),
        "baseline",
    );
    // A baseline with nothing going on, so the table shows the rate without faults.
    tokio::time::sleep(Duration::from_secs(1)).await;

    load.phase("a. 100 route changes");
    route_changes(&sys).await;
    load.phase("b. control-plane kill + restart (x2)");
    control_plane_restarts(&mut sys).await;
    load.phase("c. etcd leader kill during writes + restart");
    let c = leader_kill_during_writes(&mut sys).await;
    load.phase("d. whole etcd cluster stop + restart");
    whole_etcd_restart(&mut sys).await;
    load.phase("e. rolling restart of both proxies");
    rolling_restart(&mut sys).await;
    backend_kill(&sys, &load).await;
    load.phase("after");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let phases = load.finish().await;
    eprintln!(
        "\nfaults under load (4 + 1 slow keep-alive clients through HAProxy):\n{}\
         c. writes: {} acknowledged (all present afterwards); refused: {} during the election, \
         {} after it while the old leader was down ({} acknowledged in that window), \
         {} after every member was healthy again\n\
         total run time {:.1}s",
        table(&phases),
        c.acked,
        c.refused_in_election,
        c.refused_after_election,
        c.acked_after_election,
        c.refused_after_restart,
        started.elapsed().as_secs_f64()
    );
    for p in &phases {
        for f in &p.failures {
            eprintln!("  [{}] {f}", p.name);
        }
    }
    for p in &phases {
        assert!(p.sent > 0, "no load during {}", p.name);
        if p.name.starts_with("f.") {
            continue; // reported, not asserted: see `backend_kill`
        }
        assert_eq!(
            p.failed, 0,
            "{} failed request(s) during {}",
            p.failed, p.name
        );
    }
}

// ---------------------------------------------------------------------------------
// Soak (not in CI): scripts/soak.sh
// ---------------------------------------------------------------------------------

/// `(VmRSS in KiB, open file descriptors)` of a process.
fn footprint(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

fn footprints(sys: &System) -> Vec<(String, Option<(u64, usize)>)> {
    let mut out = Vec::new();
    for (i, p) in sys.proxies.iter().enumerate() {
        let pid = p.as_ref().and_then(|p| p.child.id());
        out.push((format!("proxy p{i}"), pid.and_then(footprint)));
    }
    for (i, c) in sys.control.iter().enumerate() {
        out.push((format!("control cp{i}"), c.child.id().and_then(footprint)));
    }
    for i in 0..sys.etcd.size() {
        out.push((format!("etcd m{i}"), sys.etcd.pid(i).and_then(footprint)));
    }
    out.push(("haproxy".to_owned(), sys.haproxy.pid().and_then(footprint)));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long-running; scripts/soak.sh"]
async fn soak() {
    let secs: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let sys = System::start("soak").await;
    let load = Load::start(
        &sys.haproxy.url(""),
        4,
        1,
        Duration::from_millis(10),
        "soak",
    );
    // Warm up (pools, buffers) before the first measurement.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let start = footprints(&sys);
    let began = Instant::now();
    let mut changes = 0u64;
    let mut last_report = Instant::now();
    while began.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let w = sys
            .apply(
                (changes % 2) as usize,
                &other_route("soak", &format!("/soak/{changes}")),
            )
            .await;
        assert!(w.acked().is_some(), "route change failed: {w:?}");
        changes += 1;
        if last_report.elapsed() >= Duration::from_secs(60) {
            last_report = Instant::now();
            eprintln!(
                "soak {:>5}s: {}",
                began.elapsed().as_secs(),
                load.table().lines().last().unwrap_or_default()
            );
        }
    }
    sys.wait_converged(0).await;
    let end = footprints(&sys);
    let phases = load.finish().await;
    eprintln!(
        "\nsoak: {secs}s, {changes} route changes\n{}",
        table(&phases)
    );
    eprintln!(
        "| {:<12} | {:>12} | {:>12} | {:>9} | {:>9} |",
        "process", "RSS start", "RSS end", "FDs start", "FDs end"
    );
    eprintln!(
        "|{:-<14}|{:->14}|{:->14}|{:->11}|{:->11}|",
        "", "", "", "", ""
    );
    for ((name, a), (_, b)) in start.iter().zip(&end) {
        let kib = |x: &Option<(u64, usize)>| x.map_or("-".to_owned(), |(r, _)| format!("{r} KiB"));
        let fds = |x: &Option<(u64, usize)>| x.map_or("-".to_owned(), |(_, f)| f.to_string());
        eprintln!(
            "| {name:<12} | {:>12} | {:>12} | {:>9} | {:>9} |",
            kib(a),
            kib(b),
            fds(a),
            fds(b)
        );
    }
    for p in &phases {
        for f in &p.failures {
            eprintln!("  [{}] {f}", p.name);
        }
        assert_eq!(p.failed, 0, "{} of {} requests failed", p.failed, p.sent);
    }
}

/// With one etcd member down and a healthy quorum (leader alive), etcd accepts every
/// write, so the control plane must too. (It did not while the etcd client balanced
/// requests over all endpoints with tonic's `balance_list`, which kept sending some to
/// the dead member: about half of all writes were refused. The store now keeps one
/// client per endpoint and moves on from an unreachable one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_etcd_follower_refuses_no_write() {
    let mut sys = System::start("follower-down").await;
    let leader = sys.etcd.wait_leader(Duration::from_secs(10)).await;
    let follower = (leader + 1) % sys.etcd.size();
    sys.etcd.kill(follower).await;
    let refused = refused_writes(&sys, 0..40).await;
    assert!(
        refused.is_empty(),
        "{} of 40 writes refused with etcd follower m{follower} down and leader m{leader} up:\n{}",
        refused.len(),
        refused.join("\n")
    );
    // Nor once the member is back.
    sys.etcd.restart(follower);
    sys.etcd.wait_healthy(Duration::from_secs(30)).await;
    let refused = refused_writes(&sys, 40..60).await;
    assert!(
        refused.is_empty(),
        "{} of 20 writes refused after etcd member m{follower} was healthy again:\n{}",
        refused.len(),
        refused.join("\n")
    );
}

/// Applies one route per `k` in `ks`; the refused ones, described.
async fn refused_writes(sys: &System, ks: std::ops::Range<usize>) -> Vec<String> {
    let mut refused = Vec::new();
    for k in ks {
        let w = sys
            .apply(0, &other_route(&format!("f-{k}"), &format!("/f/{k}")))
            .await;
        if w.acked().is_none() {
            refused.push(format!("f-{k}: exit {} {}", w.code, w.stderr.trim()));
        }
    }
    refused
}
