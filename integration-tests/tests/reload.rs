//! Route-file lifecycle of the standalone proxy: invalid files at start, hot reload by
//! symlink swap, rename-over and in-place edit, rejected reloads, zero failed requests
//! while the file changes under load, and graceful drain on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use routemaster_integration_tests::backend::EchoBackend;
use routemaster_integration_tests::client::HttpClient;
use routemaster_integration_tests::process::binary;
use routemaster_integration_tests::{TempDir, eventually, write_atomic};
use support::{Running, start, start_capturing, svc};

/// Runs the proxy on `yaml` (text logs), expecting it to refuse to start; returns (exit
/// code, stdout, stderr).
async fn start_expecting_failure(yaml: Option<&str>) -> (Option<i32>, String, String) {
    let dir = TempDir::new("bad-start");
    let file = dir.path().join("routes.yaml");
    if let Some(yaml) = yaml {
        std::fs::write(&file, yaml).unwrap();
    }
    let mut cmd = tokio::process::Command::new(binary("routemaster-proxy"));
    cmd.arg("--config")
        .arg(&file)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        // The message a person starting it by hand reads (JSON is `logging.rs`'s).
        .args(["--log-format", "text"])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .expect("an invalid file must make the proxy exit, not serve")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const ROUTE_TO_APP: &str = "
  - id: ok
    path: { prefix: /ok }
    forward: { service: app }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_file_at_start_exits_non_zero_naming_route_and_field() {
    let app = "services:\n  - { name: app, instances: [{ address: \"127.0.0.1:9\" }] }\n";
    let cases: Vec<(&str, Option<String>, &[&str])> = vec![
        (
            "zero timeout",
            Some(format!(
                "{app}routes:{ROUTE_TO_APP}\n  - id: slow-route\n    path: {{ prefix: /s }}\n    forward: {{ service: app, timeout: 0s }}\n"
            )),
            &["route \"slow-route\"", "forward.timeout", "greater than 0"],
        ),
        (
            "relative prefix",
            Some(format!(
                "{app}routes:\n  - id: rel\n    path: {{ prefix: courses }}\n    forward: {{ service: app }}\n"
            )),
            &["route \"rel\"", "path.prefix", "must start with '/'"],
        ),
        (
            "undeclared service",
            Some(format!(
                "{app}routes:\n  - id: orphan\n    forward: {{ service: nowhere }}\n"
            )),
            &["route \"orphan\"", "forward.service", "nowhere"],
        ),
        (
            "address without port",
            Some("services:\n  - { name: lms, instances: [{ address: \"10.0.0.1\" }] }\n".into()),
            &["service \"lms\"", "instances[0].address", "no port"],
        ),
        (
            "bad redirect code",
            Some("routes:\n  - id: hop\n    redirect: { code: 200 }\n".into()),
            &["route \"hop\"", "redirect.code", "200"],
        ),
        (
            "unknown field",
            Some(format!(
                "{app}routes:\n  - id: typo\n    forward: {{ service: app, timout: 5s }}\n"
            )),
            &["timout"],
        ),
        ("missing file", None, &["cannot read"]),
    ];
    for (name, yaml, needles) in cases {
        let (code, stdout, stderr) = start_expecting_failure(yaml.as_deref()).await;
        assert_eq!(code, Some(1), "{name}: exit code; stderr: {stderr}");
        assert!(
            !stdout.contains("listening"),
            "{name}: it listened: {stdout}"
        );
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{name}: stderr lacks {needle:?}:\n{stderr}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_error_is_reported_once() {
    let yaml = "routes:\n  - id: hop\n    redirect: { code: 200 }\n";
    let (code, _, stderr) = start_expecting_failure(Some(yaml)).await;
    assert_eq!(code, Some(1));
    let line = stderr
        .lines()
        .find(|l| l.starts_with("routemaster-proxy:"))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"));
    assert_eq!(line.matches("redirect.code").count(), 1, "{line}");
}

/// A route file sending `/svc` to `service` (both `old` and `new` are declared).
fn svc_file(old: &EchoBackend, new: &EchoBackend, service: &str) -> String {
    format!(
        "services:\n{}{}routes:\n  - id: svc\n    path: {{ prefix: /svc }}\n    forward: {{ service: {service} }}\n",
        svc("old", &[old.addr]),
        svc("new", &[new.addr]),
    )
}

/// The backend that answers `/svc` now.
async fn serving(p: &Running, path: &str) -> String {
    let reply = p.get(path, &[]).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    reply.header("x-backend").unwrap().to_owned()
}

/// How a route file gets changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit {
    /// A new file renamed over the old one (`write_atomic`).
    RenameOver,
    /// A symlink pointed at a new file (Kubernetes ConfigMap volumes).
    SymlinkSwap,
    /// Same inode, rewritten from offset 0 and then cut to size: never empty.
    Overwrite,
    /// `std::fs::write`: truncate, then write; a reader can catch the empty file.
    Truncate,
}

fn edit(path: &Path, how: Edit, contents: &str) {
    match how {
        Edit::RenameOver => write_atomic(path, contents),
        Edit::SymlinkSwap => swap_symlink(path, contents),
        Edit::Overwrite => {
            let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            f.write_all(contents.as_bytes()).unwrap();
            f.set_len(contents.len() as u64).unwrap();
        }
        Edit::Truncate => std::fs::write(path, contents).unwrap(),
    }
}

/// Replaces `path` by a symlink to a new file holding `contents`.
fn swap_symlink(path: &Path, contents: &str) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = path.parent().unwrap();
    let target = dir.join(format!("data-{}.yaml", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&target, contents).unwrap();
    let link = dir.join("link.tmp");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    std::fs::rename(&link, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_are_served_within_a_second() {
    let (old, new) = (
        EchoBackend::start("old").await,
        EchoBackend::start("new").await,
    );
    let p = start("hot-reload", &svc_file(&old, &new, "old"), &[]).await;
    assert_eq!(serving(&p, "/svc").await, "old");
    assert_eq!(p.version().await, 1);
    let mut version = p.ensure_watching().await;
    // (how the file changes, where /svc goes afterwards, declare a third service?)
    // In-place edits keep the size here; `Edit::Truncate` has its own (ignored) tests.
    // The third step edits the symlink's target in place.
    let steps = [
        (Edit::SymlinkSwap, "new", false),
        (Edit::SymlinkSwap, "old", true),
        (Edit::Overwrite, "new", true),
        (Edit::RenameOver, "new", false),
        (Edit::Overwrite, "old", false),
    ];
    for (how, service, extra) in steps {
        let mut yaml = svc_file(&old, &new, service);
        if extra {
            yaml = yaml.replace("routes:", &format!("{}routes:", svc("extra", &[old.addr])));
        }
        let written = Instant::now();
        edit(&p.file, how, &yaml);
        version += 1;
        p.wait_version(version, Duration::from_secs(2)).await;
        let took = written.elapsed();
        println!("{how:?}: version {version} applied after {took:?}");
        assert!(took < Duration::from_secs(2), "{how:?}: took {took:?}");
        assert_eq!(serving(&p, "/svc").await, service, "{how:?}");
        let config = p.admin("/config").await.json();
        assert_eq!(
            config["services"],
            if extra { 3 } else { 2 },
            "{how:?}: {config}"
        );
    }
    assert_eq!(p.version().await, version, "no spurious reloads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_reload_is_rejected_and_the_last_good_table_keeps_serving() {
    let (old, new) = (
        EchoBackend::start("old").await,
        EchoBackend::start("new").await,
    );
    let dir = TempDir::new("rejected");
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, svc_file(&old, &new, "old")).unwrap();
    let (proxy, stderr) = start_capturing(&file, &["--watch-interval", "50ms"])
        .await
        .unwrap();
    let p = Running {
        proxy,
        client: HttpClient::new(),
        file,
        dir,
    };
    assert_eq!(serving(&p, "/svc").await, "old");
    let base = p.ensure_watching().await;
    let valid = svc_file(&old, &new, "new");
    // (how it is written, bad contents, what the rejection log must name)
    let bad: [(Edit, String, &[&str]); 3] = [
        (
            Edit::RenameOver,
            valid.replace("prefix: /svc", "prefix: svc"),
            &["route \"svc\"", "path.prefix"],
        ),
        (
            Edit::Overwrite,
            valid.replace("service: new }", "service: gone }"),
            &["route \"svc\"", "forward.service"],
        ),
        (
            Edit::Overwrite,
            valid.replace("routes:", "routes: [oops"),
            &["routes.yaml"],
        ),
    ];
    for (n, (how, yaml, needles)) in bad.into_iter().enumerate() {
        edit(&p.file, how, &yaml);
        let rejections = || stderr.text().matches("route file rejected").count();
        let deadline = Instant::now() + Duration::from_secs(2);
        while rejections() <= n {
            assert!(
                Instant::now() < deadline,
                "{how:?} #{n}: rejection not logged within 2s; stderr:\n{}",
                stderr.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            rejections(),
            n + 1,
            "{how:?}: one rejection per bad file:\n{}",
            stderr.text()
        );
        let log = stderr.text();
        for needle in needles {
            assert!(
                log.contains(needle),
                "{how:?}: log lacks {needle:?}:\n{log}"
            );
        }
        assert_eq!(
            p.version().await,
            base,
            "{how:?}: a rejected file must not be applied"
        );
        for _ in 0..5 {
            assert_eq!(serving(&p, "/svc").await, "old", "{how:?}: last good table");
        }
    }
    edit(&p.file, Edit::RenameOver, &valid);
    p.wait_version(base + 1, Duration::from_secs(2)).await;
    assert_eq!(serving(&p, "/svc").await, "new");
    assert_eq!(p.admin("/readyz").await.status, 200);
}

/// On filesystems with coarse timestamps (1-2 s on FAT, HFS+, some NFS; one jiffy on
/// kernels before 6.13), a same-size in-place edit soon after the watcher's last `stat`
/// keeps the old mtime. Simulated here by putting the old mtime back after the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_size_in_place_edit_within_one_mtime_tick_is_applied() {
    let (old, new) = (
        EchoBackend::start("old").await,
        EchoBackend::start("new").await,
    );
    let p = start(
        "coarse-mtime",
        &svc_file(&old, &new, "old"),
        &["--watch-interval", "50ms"],
    )
    .await;
    assert_eq!(serving(&p, "/svc").await, "old");
    let base = p.ensure_watching().await;
    let before = std::fs::metadata(&p.file).unwrap();
    let edited = std::fs::read_to_string(&p.file)
        .unwrap()
        .replace("service: old }", "service: new }");
    assert_eq!(
        edited.len() as u64,
        before.len(),
        "the edit must keep the size"
    );
    edit(&p.file, Edit::Overwrite, &edited);
    let file = std::fs::File::options().write(true).open(&p.file).unwrap();
    file.set_modified(before.modified().unwrap()).unwrap();
    drop(file);
    p.wait_version(base + 1, Duration::from_secs(2)).await;
    assert_eq!(serving(&p, "/svc").await, "new");
}

/// Route A never changes; route B alternates between services `b1` and `b2`.
fn load_file(a: &EchoBackend, b1: &EchoBackend, b2: &EchoBackend, b: &str) -> String {
    format!(
        "services:\n{}{}{}routes:
  - id: route-a
    path: {{ prefix: /a }}
    forward: {{ service: a }}
  - id: route-b
    path: {{ prefix: /b }}
    forward: {{ service: {b} }}\n",
        svc("a", &[a.addr]),
        svc("b1", &[b1.addr]),
        svc("b2", &[b2.addr]),
    )
}

#[derive(Debug, Default)]
struct Tally {
    by_backend: BTreeMap<String, usize>,
    failures: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_the_file_is_rewritten_under_load() {
    rewrite_under_load("under-load", [Edit::RenameOver, Edit::Overwrite]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_the_file_is_truncated_and_rewritten_under_load() {
    rewrite_under_load("under-load-trunc", [Edit::RenameOver, Edit::Truncate]).await;
}

/// `CLIENTS` tasks hammer routes A and B while the file is rewritten `REWRITES` times,
/// toggling B's service; edits alternate between the two kinds, two of each in a row so
/// each kind sees both directions of the toggle. Every response must be a 200.
async fn rewrite_under_load(tag: &str, edits: [Edit; 2]) {
    const CLIENTS: usize = 8;
    const REWRITES: usize = 40;
    let a = EchoBackend::start("a").await;
    let (b1, b2) = (
        EchoBackend::start("b1").await,
        EchoBackend::start("b2").await,
    );
    let p = start(
        tag,
        &load_file(&a, &b1, &b2, "b1"),
        &["--watch-interval", "50ms"],
    )
    .await;
    let base = p.ensure_watching().await;

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
        let urls = [p.proxy.url("/a/x"), p.proxy.url("/b/y")];
        clients.push(tokio::spawn(async move {
            let client = HttpClient::new();
            while !stop.load(Ordering::Relaxed) {
                for url in &urls {
                    let outcome = match client.get(url, &[]).await {
                        Ok(r) if r.status == 200 => {
                            Ok(r.header("x-backend").unwrap_or("?").to_owned())
                        }
                        Ok(r) => Err(format!("{url}: {} {}", r.status, r.body.trim())),
                        Err(e) => Err(format!("{url}: {e:#}")),
                    };
                    let mut t = tally.lock().unwrap();
                    match outcome {
                        Ok(backend) => *t.by_backend.entry(backend).or_insert(0) += 1,
                        Err(e) => t.failures.push(e),
                    }
                }
            }
        }));
    }
    let total = |t: &Tally| t.by_backend.values().sum::<usize>() + t.failures.len();
    eventually(Duration::from_secs(5), "load to get going", || async {
        (total(&tally.lock().unwrap()) >= 200).then_some(())
    })
    .await;

    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut stale = Vec::new();
    for i in 0..REWRITES {
        let b = if i % 2 == 0 { "b2" } else { "b1" };
        let yaml = load_file(&a, &b1, &b2, b);
        let written = Instant::now();
        let how = edits[(i / 2) % 2];
        edit(&p.file, how, &yaml);
        let version = p
            .wait_version_at_least(base + 1 + i as u64, Duration::from_secs(5))
            .await;
        slowest = slowest.max(written.elapsed());
        // Applied means every request routed from now on sees the new table.
        let reply = p.get("/b/z", &[]).await;
        if reply.status != 200 || reply.header("x-backend") != Some(b) {
            let got = (reply.status, reply.header("x-backend"), reply.body.trim());
            stale.push(format!("rewrite {i} ({how:?}, version {version}): {got:?}"));
        }
    }
    let reload_time = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        tokio::time::timeout(Duration::from_secs(15), c)
            .await
            .unwrap()
            .unwrap();
    }

    let t = std::mem::take(&mut *tally.lock().unwrap());
    println!(
        "{REWRITES} rewrites in {reload_time:?} (slowest {slowest:?}); {} requests from {CLIENTS} clients: {:?}, {} failed",
        total(&t),
        t.by_backend,
        t.failures.len()
    );
    assert!(
        t.failures.is_empty(),
        "{} of {} requests failed; first: {:#?}",
        t.failures.len(),
        total(&t),
        &t.failures[..t.failures.len().min(10)]
    );
    assert!(stale.is_empty(), "/b after a reload: {stale:#?}");
    for backend in ["a", "b1", "b2"] {
        assert!(
            t.by_backend.get(backend).copied().unwrap_or(0) > 0,
            "{backend} never served: {:?}",
            t.by_backend
        );
    }
    assert_eq!(
        p.version().await,
        base + REWRITES as u64,
        "spurious reloads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let app = EchoBackend::start("app").await;
    let yaml = format!(
        "services:\n{}routes:\n  - id: app\n    forward: {{ service: app }}\n",
        svc("app", &[app.addr])
    );
    let mut p = start("drain", &yaml, &[]).await;
    // An idle keep-alive connection must not hold the drain up.
    assert_eq!(p.get("/warm-up", &[]).await.status, 200);
    let hits_before = app.hits();

    // A separate client, so the warm-up connection stays idle in p.client's pool.
    let (client, url) = (HttpClient::new(), p.proxy.url("/slow?sleep_ms=1500"));
    let slow = tokio::spawn(async move {
        let reply = client.get(&url, &[]).await;
        (reply, Instant::now())
    });
    eventually(
        Duration::from_secs(5),
        "the backend to receive the slow request",
        || async { (app.hits() > hits_before).then_some(()) },
    )
    .await;
    p.proxy.signal("TERM");
    let signalled = Instant::now();

    let (addr, admin) = (p.proxy.addr, p.proxy.admin);
    eventually(
        Duration::from_secs(2),
        "new connections to be refused",
        || async {
            let proxy_closed = tokio::net::TcpStream::connect(addr).await.is_err();
            let admin_closed = tokio::net::TcpStream::connect(admin).await.is_err();
            (proxy_closed && admin_closed).then_some(())
        },
    )
    .await;
    assert!(
        !slow.is_finished(),
        "listeners must close while the slow request is still in flight"
    );

    let (reply, finished) = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .unwrap()
        .unwrap();
    let reply = reply.expect("the in-flight request must complete");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-backend"), Some("app"));

    let code = p.proxy.wait_exit(Duration::from_secs(10)).await;
    let exited = Instant::now();
    assert_eq!(code, Some(0), "exit code after SIGTERM");
    println!(
        "slow request finished {:?} after SIGTERM; process exited {:?} after that",
        finished - signalled,
        exited - finished
    );
    assert!(
        exited - finished < Duration::from_secs(5),
        "drain waited for idle connections"
    );
}

/// What `std::fs::write` does, with the moment between truncating and writing stretched
/// over a few watch intervals: the empty file must not replace the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_caught_between_truncate_and_write_is_not_applied() {
    let (old, new) = (
        EchoBackend::start("old").await,
        EchoBackend::start("new").await,
    );
    let p = start(
        "mid-write",
        &svc_file(&old, &new, "old"),
        &["--watch-interval", "50ms"],
    )
    .await;
    let base = p.ensure_watching().await;
    let mut file = std::fs::File::create(&p.file).unwrap();
    let until = Instant::now() + Duration::from_millis(150);
    while Instant::now() < until {
        assert_eq!(serving(&p, "/svc").await, "old", "while the file is empty");
    }
    file.write_all(svc_file(&old, &new, "new").as_bytes())
        .unwrap();
    drop(file);
    p.wait_version(base + 1, Duration::from_secs(2)).await;
    assert_eq!(serving(&p, "/svc").await, "new");
}

/// The watcher takes its baseline (fingerprint and content hash) when its task first
/// runs, after the startup load and the "listening" line; an edit in between becomes
/// the baseline although the table still holds the file as loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_right_after_startup_is_applied() {
    let (old, new) = (
        EchoBackend::start("old").await,
        EchoBackend::start("new").await,
    );
    let p = start(
        "startup-race",
        &svc_file(&old, &new, "old"),
        &["--watch-interval", "50ms"],
    )
    .await;
    edit(&p.file, Edit::RenameOver, &svc_file(&old, &new, "new"));
    p.wait_version(2, Duration::from_secs(2)).await;
    assert_eq!(serving(&p, "/svc").await, "new");
}
