//! `discovery: dns` on a real proxy process, independent of the machine's DNS: the
//! instance is `localhost:PORT` (the system resolver answers from `/etc/hosts`), with a
//! backend on 127.0.0.1 and, when the machine has IPv6 loopback, on [::1] at the same
//! port. Every address `localhost` resolves to must become an endpoint (shown by its
//! address in `/config`, not the name) and receive traffic.
//!
//! Re-resolution needs a name whose answer the test controls: the proxy runs in an
//! unprivileged user+mount namespace (`unshare -rm`) with the test's own file
//! bind-mounted over `/etc/hosts`, so `lms.dnstest` resolves to loopback addresses the
//! test picks (127.0.0.2-4, each with a backend) and changes while the proxy runs.
//! Where user namespaces are not allowed that test says so and checks nothing; the
//! refresh logic is also tested in process (`data-plane/src/dns.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use routemaster_integration_tests::backend::serve;
use routemaster_integration_tests::process::{ProxyProcess, binary};
use routemaster_integration_tests::{TempDir, eventually, metric_sample};
use support::{Running, start};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A backend's hit counter, and its stop signal (it serves until this is dropped).
type Backend = (Arc<AtomicUsize>, oneshot::Sender<()>);

/// An echo backend on `listener` until the sender is dropped.
fn backend(listener: TcpListener, name: &str) -> Backend {
    let hits = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, name.to_owned(), Arc::clone(&hits), async {
        let _ = stopped.await;
    }));
    (hits, stop)
}

/// The service's endpoints as `/config` shows them.
async fn endpoints(p: &Running, service: &str) -> Option<BTreeSet<String>> {
    let config = p.admin("/config").await.json();
    let up = config["upstreams"]
        .as_array()?
        .iter()
        .find(|u| u["service"] == service)?
        .clone();
    Some(
        up["endpoints"]
            .as_array()?
            .iter()
            .filter_map(|e| e["address"].as_str().map(str::to_owned))
            .collect(),
    )
}

#[tokio::test]
async fn every_address_localhost_resolves_to_gets_traffic() {
    let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = v4.local_addr().unwrap().port();
    // The same port on [::1], when the machine has IPv6 loopback.
    let v6 = TcpListener::bind(("::1", port)).await.ok();
    let mut backends = vec![(v4.local_addr().unwrap(), backend(v4, "v4"))];
    if let Some(l) = v6 {
        backends.push((l.local_addr().unwrap(), backend(l, "v6")));
    }
    // What the proxy's resolver will see (same system resolver).
    let resolved: BTreeSet<SocketAddr> = tokio::net::lookup_host(("localhost", port))
        .await
        .unwrap()
        .collect();
    let served: Vec<SocketAddr> = backends
        .iter()
        .map(|(a, _)| *a)
        .filter(|a| resolved.contains(a))
        .collect();
    assert!(
        served.contains(&SocketAddr::from(([127, 0, 0, 1], port))),
        "localhost resolves to {resolved:?}"
    );
    eprintln!("localhost:{port} resolves to {resolved:?}; backends on {served:?}");

    let yaml = format!(
        "services:\n  - name: s\n    instances:\n      - {{ address: \"localhost:{port}\", discovery: dns, dns_refresh: 1s }}\nroutes:\n  - {{ id: r, forward: {{ service: s }} }}\n"
    );
    let p = start("dns-discovery", &yaml, &[]).await;
    // The resolved addresses replace the name as the service's endpoints.
    let want: BTreeSet<String> = resolved.iter().map(ToString::to_string).collect();
    eventually(Duration::from_secs(10), "resolved endpoints", || async {
        (endpoints(&p, "s").await? == want).then_some(())
    })
    .await;

    for _ in 0..40 {
        let r = p.get("/x", &[]).await;
        assert_eq!(r.status, 200);
    }
    for (addr, (hits, _)) in &backends {
        let n = hits.load(Ordering::Relaxed);
        if served.contains(addr) {
            assert!(n >= 10, "{addr} got {n} of 40 requests");
        } else {
            assert_eq!(n, 0, "{addr} is not an address of localhost");
        }
    }
    let scrape = p.admin("/metrics").await.body;
    assert_eq!(
        metric_sample(&scrape, "routemaster_dns_lookup_failures_total", &[]),
        Some(0.0),
        "{scrape}"
    );
}

/// `sh -c` script run by `unshare -rm`: mount `$0` over /etc/hosts and `$1` over
/// /etc/nsswitch.conf (`hosts: files`, so a name missing from the file fails at once,
/// never asking the machine's DNS), then exec the rest.
const WITH_HOSTS: &str = "mount --bind \"$0\" /etc/hosts && mount --bind \"$1\" /etc/nsswitch.conf && shift && exec \"$@\"";

#[tokio::test]
async fn a_changed_answer_replaces_the_endpoints_and_a_failed_one_keeps_them() {
    let probe = std::process::Command::new("unshare")
        .args([
            "-rm",
            "sh",
            "-c",
            WITH_HOSTS,
            "/etc/hosts",
            "/etc/nsswitch.conf",
            "true",
        ])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: unprivileged user namespaces (unshare -rm) are not available here");
        return;
    }
    // One port on three loopback addresses, a backend on each.
    let first = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = first.local_addr().unwrap().port();
    let mut listeners = vec![first];
    for ip in ["127.0.0.3", "127.0.0.4"] {
        listeners.push(TcpListener::bind((ip, port)).await.unwrap());
    }
    let backends: Vec<(String, Backend)> = listeners
        .into_iter()
        .map(|l| {
            let addr = l.local_addr().unwrap().to_string();
            let b = backend(l, &addr);
            (addr, b)
        })
        .collect();
    let hits = |addr: &str| {
        backends
            .iter()
            .find(|(a, _)| a == addr)
            .map_or(0, |(_, (h, _))| h.load(Ordering::Relaxed))
    };
    let at = |ip: &str| format!("{ip}:{port}");

    let dir = TempDir::new("dns-refresh");
    let hosts = dir.path().join("hosts");
    // Rewritten in place (same inode): the bind mount shows the new content.
    let answer = |ips: &[&str]| {
        let text: String = ips.iter().map(|ip| format!("{ip} lms.dnstest\n")).collect();
        std::fs::write(&hosts, format!("127.0.0.1 localhost\n{text}")).unwrap();
    };
    answer(&["127.0.0.2", "127.0.0.3"]);
    let nsswitch = dir.path().join("nsswitch.conf");
    std::fs::write(&nsswitch, "hosts: files\n").unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        format!(
            "services:\n  - name: s\n    instances:\n      - {{ address: \"lms.dnstest:{port}\", weight: 2, discovery: dns, dns_refresh: 1s }}\nroutes:\n  - {{ id: r, forward: {{ service: s }} }}\n"
        ),
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args(["-rm", "sh", "-c", WITH_HOSTS])
        .arg(&hosts)
        .arg(&nsswitch)
        .arg(binary("routemaster-proxy"))
        .arg("--config")
        .arg(&file)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
    let p = Running {
        proxy: ProxyProcess::spawn(cmd).await.unwrap(),
        client: routemaster_integration_tests::client::HttpClient::new(),
        file,
        dir,
    };
    let set = |ips: &[&str]| -> BTreeSet<String> { ips.iter().map(|ip| at(ip)).collect() };

    eventually(Duration::from_secs(10), "the first answer", || async {
        (endpoints(&p, "s").await? == set(&["127.0.0.2", "127.0.0.3"])).then_some(())
    })
    .await;
    for _ in 0..20 {
        assert_eq!(p.get("/x", &[]).await.status, 200);
    }
    assert!(hits(&at("127.0.0.2")) >= 5 && hits(&at("127.0.0.3")) >= 5);
    assert_eq!(hits(&at("127.0.0.4")), 0);

    // A changed answer: .2 leaves, .4 joins, within a refresh (1s ±10 %) or so.
    answer(&["127.0.0.3", "127.0.0.4"]);
    let t0 = std::time::Instant::now();
    eventually(Duration::from_secs(10), "the changed answer", || async {
        (endpoints(&p, "s").await? == set(&["127.0.0.3", "127.0.0.4"])).then_some(())
    })
    .await;
    eprintln!("dns refresh: endpoints changed after {:?}", t0.elapsed());
    let before = hits(&at("127.0.0.2"));
    for _ in 0..20 {
        assert_eq!(p.get("/x", &[]).await.status, 200);
    }
    assert_eq!(
        hits(&at("127.0.0.2")),
        before,
        "no traffic to a gone address"
    );
    assert!(hits(&at("127.0.0.4")) >= 5);

    // The name stops resolving: the last good set stays and serves; the failure counts.
    answer(&[]);
    eventually(
        Duration::from_secs(10),
        "a failed lookup counted",
        || async {
            let scrape = p.admin("/metrics").await.body;
            (metric_sample(&scrape, "routemaster_dns_lookup_failures_total", &[])? >= 1.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        endpoints(&p, "s").await.unwrap(),
        set(&["127.0.0.3", "127.0.0.4"])
    );
    for _ in 0..10 {
        assert_eq!(p.get("/x", &[]).await.status, 200);
    }
}
