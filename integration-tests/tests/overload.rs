//! The proxy at its limits, as an SRE running it behind a load balancer meets them:
//! SIGTERM with `--drain-delay` (readiness fails first, traffic still served, then a
//! clean exit), `--max-connections` under a flood of 20 000 connections (503 and close
//! beyond the limit, never a hang or a crash), and running out of file descriptors
//! (accept backs off instead of spinning, one log line per interval, recovery after).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use routemaster_integration_tests::backend::EchoBackend;
use routemaster_integration_tests::eventually;
use routemaster_integration_tests::process::binary;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

fn routes(backend: SocketAddr) -> String {
    format!(
        "services:\n{}routes:\n  - id: all\n    forward: {{ service: up }}\n",
        svc("up", &[backend])
    )
}

/// Reads whatever the proxy sends on a fresh connection until it closes (bounded).
async fn first_bytes(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut out)).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_drain_delay_fails_readiness_first_and_keeps_serving() {
    let backend = EchoBackend::start("b").await;
    let mut p = start(
        "drain-delay",
        &routes(backend.addr),
        &["--drain-delay", "1s"],
    )
    .await;
    assert_eq!(p.admin("/readyz").await.status.as_u16(), 200);

    p.proxy.signal("TERM");
    let signalled = Instant::now();
    eventually(Duration::from_millis(800), "readyz to fail", || async {
        (p.admin("/readyz").await.status.as_u16() == 503).then_some(())
    })
    .await;
    // Still serving inside the delay, asking clients to go elsewhere next time.
    let reply = raw_request(
        p.proxy.addr,
        b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: keep-alive\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(
        signalled.elapsed() < Duration::from_secs(1),
        "test too slow to observe the delay"
    );

    assert_eq!(p.proxy.wait_exit(Duration::from_secs(10)).await, Some(0));
    assert!(
        signalled.elapsed() >= Duration::from_secs(1),
        "exited before the drain delay: {:?}",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_get_503_and_close_under_a_flood() {
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let backend = EchoBackend::start("b").await;
    let p = start(
        "max-conns",
        &routes(backend.addr),
        &["--max-connections", "50"],
    )
    .await;
    let addr = p.proxy.addr;

    // Fill the limit with idle connections, proving each is admitted.
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let reply = read_reply(&mut s).await.unwrap();
        assert_eq!(reply.status, 200);
        held.push(s);
    }

    // 20 000 more connections, 500 at a time: each is refused with a 503 or (when the
    // refusal raced its request) reset; none hangs.
    let started = Instant::now();
    let (mut refused, mut reset) = (0usize, 0usize);
    for _ in 0..40 {
        let batch: Vec<_> = (0..500)
            .map(|_| {
                tokio::spawn(async move {
                    let mut s = TcpStream::connect(addr).await.ok()?;
                    Some(first_bytes(&mut s, Duration::from_secs(5)).await)
                })
            })
            .collect();
        for task in batch {
            match task.await.unwrap() {
                Some(bytes) if bytes.starts_with(b"HTTP/1.1 503 ") => refused += 1,
                Some(bytes) => {
                    assert!(
                        bytes.is_empty(),
                        "unexpected answer: {:?}",
                        String::from_utf8_lossy(&bytes)
                    );
                    reset += 1;
                }
                None => reset += 1,
            }
        }
    }
    let elapsed = started.elapsed();
    eprintln!("flood: 20000 connections in {elapsed:?}: {refused} got 503, {reset} reset");
    assert!(
        refused >= 19_000,
        "{refused} of 20000 got a 503 ({reset} reset)"
    );

    // The held connections still work, and once they go, new ones are admitted.
    let mut s = held.pop().unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_reply(&mut s).await.unwrap().status, 200);
    drop(held);
    drop(s);
    eventually(
        Duration::from_secs(5),
        "a new connection to be admitted",
        || async {
            let r = raw_request(addr, b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
                .await
                .ok()?;
            (r.status == 200).then_some(())
        },
    )
    .await;
    let stats = p.admin("/stats").await.json();
    assert!(
        stats["refused_connections"].as_u64().unwrap() >= 19_000,
        "{stats}"
    );
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses): utime is 14th, stime 15th.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_accept_backs_off_and_recovers() {
    let backend = EchoBackend::start("b").await;
    let dir = routemaster_integration_tests::TempDir::new("emfile");
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, routes(backend.addr)).unwrap();
    // 64 descriptors, and a connection limit far above them: only EMFILE stops accepts.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" \"$@\"")
        .arg(binary("routemaster-proxy"))
        .arg("--config")
        .arg(&file)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--workers", "1", "--max-connections", "100000"]);
    let (proxy, stderr) = spawn_capturing(cmd).await.unwrap();
    let pid = proxy.child.id().unwrap();

    // 200 connections: the kernel completes them (backlog) but the proxy cannot take
    // them all.
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    eventually(
        Duration::from_secs(5),
        "the proxy to run out of descriptors",
        || async { stderr.contains("accept failed").then_some(()) },
    )
    .await;
    // Out of descriptors for two seconds: no spinning, one log line.
    let cpu_before = cpu_seconds(pid);
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu = cpu_seconds(pid) - cpu_before;
    assert!(
        cpu < 0.5,
        "proxy used {cpu:.2}s of CPU in 2s while out of descriptors"
    );
    let logged = stderr.text().matches("accept failed").count();
    assert!(
        logged <= 2,
        "accept failure logged {logged} times:\n{}",
        stderr.text()
    );

    drop(held);
    eventually(
        Duration::from_secs(10),
        "the proxy to serve again",
        || async {
            let r = raw_request(proxy.addr, b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
                .await
                .ok()?;
            (r.status == 200).then_some(())
        },
    )
    .await;
}
