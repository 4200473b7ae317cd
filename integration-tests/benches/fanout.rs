//! Control-plane fan-out: N simulated proxies (lightweight discovery-stream clients in
//! this process, multiplexed over a few HTTP/2 connections) on a real etcd + control
//! plane; measures the time from one `apply` returning to the last stream receiving (and
//! ACKing) the new version, plus the control plane's CPU time and RSS.
//!
//!     cargo build --release --workspace --bins
//!     cargo bench -p routemaster-integration-tests --bench fanout
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use routemaster_integration_tests::fleet::Fleet;
use routemaster_proto::v1;
use routemaster_proto::v1::discovery_client::DiscoveryClient;
use routemaster_proto::v1::proxy_message::Message;
use tokio::sync::{Barrier, mpsc};
use tokio_stream::wrappers::ReceiverStream;

const CHANNELS: usize = 16;

fn route_file(routes: usize, tag: usize) -> String {
    let mut out = String::from(
        "services:\n  - { name: svc, instances: [{ address: \"127.0.0.1:9\" }] }\nroutes:\n",
    );
    for i in 0..routes {
        out.push_str(&format!(
            "  - {{ id: r{i}, hosts: [h{}.example.com], path: {{ prefix: /p{i}/v{tag} }}, forward: {{ service: svc }} }}\n",
            i % 100
        ));
    }
    out
}

/// (utime+stime seconds, VmRSS MiB, VmHWM MiB) of a process.
fn usage(pid: u32) -> (f64, f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (ticks / 100.0, kb("VmRSS:"), kb("VmHWM:"))
}

async fn run(streams: usize, routes: usize) {
    let fleet = Fleet::start(&format!("fanout-{streams}-{routes}"), &[]).await;
    let (code, _, err) = fleet.apply(0, &route_file(routes, 0)).await;
    assert_eq!(code, 0, "{err}");
    let url = fleet.cp_url();
    let mut channels = Vec::new();
    for _ in 0..CHANNELS {
        channels.push(
            tonic::transport::Endpoint::from_shared(url.clone())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    // Each simulated proxy reports (version, when) for every snapshot it ACKs.
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let ready = Arc::new(Barrier::new(streams + 1));
    for i in 0..streams {
        let mut client = DiscoveryClient::new(channels[i % CHANNELS].clone())
            .max_decoding_message_size(256 * 1024 * 1024);
        let seen_tx = seen_tx.clone();
        let ready = Arc::clone(&ready);
        tokio::spawn(async move {
            let (tx, rx) = mpsc::channel(4);
            tx.send(v1::ProxyMessage {
                message: Some(Message::Hello(v1::Hello {
                    node_id: format!("sim-{i}"),
                    group: "default".into(),
                    ..Default::default()
                })),
            })
            .await
            .unwrap();
            let mut inbound = client
                .stream(ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            let mut first = true;
            while let Ok(Some(snapshot)) = inbound.message().await {
                let version = snapshot.version;
                let _ = tx
                    .send(v1::ProxyMessage {
                        message: Some(Message::Ack(v1::Ack { version })),
                    })
                    .await;
                if first {
                    first = false;
                    ready.wait().await;
                } else {
                    let _ = seen_tx.send((version, Instant::now()));
                }
            }
        });
    }
    ready.wait().await;
    let pid = fleet.control[0].child.id().unwrap();
    let before = usage(pid);
    let (code, out, err) = fleet.apply(0, &route_file(routes, 1)).await;
    let applied = Instant::now();
    assert_eq!(code, 0, "{err}");
    let version: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("version "))
        .and_then(|v| v.trim().parse().ok())
        .expect("apply prints the version");
    let mut last = applied;
    let mut acked = 0;
    while acked < streams {
        let (v, at) = tokio::time::timeout(Duration::from_secs(60), seen_rx.recv())
            .await
            .expect("every stream hears of the new version within 60 s")
            .unwrap();
        if v >= version {
            acked += 1;
            last = last.max(at);
        }
    }
    let after = usage(pid);
    println!(
        "{streams:>5} streams, {routes:>6} routes: last ACK {:>7.1} ms after apply returned; control plane CPU {:.2} s, RSS {:.1} MiB (peak {:.1} MiB)",
        last.duration_since(applied).as_secs_f64() * 1e3,
        after.0 - before.0,
        after.1,
        after.2,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    for (streams, routes) in [(100, 10), (1_000, 10), (1_000, 10_000)] {
        run(streams, routes).await;
    }
}
