//! The discovery client against an in-process `Discovery` stub: snapshots are applied,
//! Acked and Nacked as the protocol says, an invalid snapshot never replaces the last
//! good table, and the client reconnects (rotating past a dead URL), says Goodbye and
//! stops on shutdown, reports its connection state, and saves and serves the
//! last-known-good snapshot. The real control plane is tested elsewhere.

// Test helpers panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use routemaster_common::snapshot::Source;
use routemaster_data_plane::control_plane::{self, ControlPlaneConfig, last_known_good};
use routemaster_data_plane::state::{Connection, ProxyState, SourceKind};
use routemaster_proto::v1;
use routemaster_proto::v1::discovery_server::{Discovery, DiscoveryServer};
use routemaster_proto::v1::proxy_message::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// Generous: only ever reached when something is broken.
const WAIT: Duration = Duration::from_secs(10);

/// One accepted `Discovery.Stream`: what the proxy sent, and a handle to send it
/// snapshots. Dropping `snapshots` ends the stream from the server side.
struct Session {
    from_proxy: mpsc::UnboundedReceiver<v1::ProxyMessage>,
    snapshots: mpsc::Sender<Result<v1::Snapshot, Status>>,
}

/// Hands every stream it accepts to the test, which scripts it.
struct Stub {
    sessions: mpsc::UnboundedSender<Session>,
}

#[tonic::async_trait]
impl Discovery for Stub {
    type StreamStream = ReceiverStream<Result<v1::Snapshot, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<v1::ProxyMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (to_test, from_proxy) = mpsc::unbounded_channel();
        let (snapshots, outbound) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                if to_test.send(message).is_err() {
                    break;
                }
            }
        });
        self.sessions
            .send(Session {
                from_proxy,
                snapshots,
            })
            .map_err(|_| Status::unavailable("test is gone"))?;
        Ok(Response::new(ReceiverStream::new(outbound)))
    }
}

async fn start_stub() -> (
    String,
    mpsc::UnboundedReceiver<Session>,
    oneshot::Sender<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (sessions_tx, sessions) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(DiscoveryServer::new(Stub {
                sessions: sessions_tx,
            }))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (url, sessions, stop)
}

/// A URL nothing listens on: bind a port, then free it.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

async fn next_session(sessions: &mut mpsc::UnboundedReceiver<Session>) -> Session {
    timeout(WAIT, sessions.recv())
        .await
        .expect("no discovery stream opened in time")
        .expect("stub stopped")
}

impl Session {
    async fn next(&mut self) -> Message {
        timeout(WAIT, self.from_proxy.recv())
            .await
            .expect("nothing from the proxy in time")
            .expect("proxy closed its stream")
            .message
            .expect("empty ProxyMessage")
    }

    /// The next Ack/Nack, skipping health reports (they come on their own clock).
    async fn next_reply(&mut self) -> Message {
        loop {
            match self.next().await {
                Message::Health(_) => continue,
                other => return other,
            }
        }
    }

    async fn next_health(&mut self) -> v1::HealthReport {
        loop {
            if let Message::Health(h) = self.next().await {
                return h;
            }
        }
    }

    async fn send(&self, snapshot: v1::Snapshot) {
        self.snapshots.send(Ok(snapshot)).await.unwrap();
    }
}

fn service() -> v1::Service {
    v1::Service {
        name: "lms".into(),
        instances: vec![v1::Instance {
            address: "127.0.0.1:9".into(),
            weight: None,
            labels: Default::default(),
            ..Default::default()
        }],
        load_balancing: 0,
        protocol: 0,
        ..Default::default()
    }
}

fn route(id: &str, path: v1::path_match::Kind) -> v1::Route {
    v1::Route {
        id: id.into(),
        path: Some(v1::PathMatch { kind: Some(path) }),
        action: Some(v1::route::Action::Forward(v1::Forward {
            target: Some(v1::forward::Target::Service("lms".into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn valid(version: u64) -> v1::Snapshot {
    v1::Snapshot {
        version,
        group: "edge".into(),
        services: vec![service()],
        routes: vec![route("home", v1::path_match::Kind::Prefix("/".into()))],
        certificates: Vec::new(),
    }
}

fn invalid(version: u64) -> v1::Snapshot {
    let mut s = valid(version);
    s.routes
        .push(route("bad", v1::path_match::Kind::Regex("(".into())));
    s
}

fn applied(state: &ProxyState) -> Option<u64> {
    state.current_snapshot().map(|s| s.version())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_acks_nacks_keeps_the_last_good_table_and_reconnects() {
    let (url, mut sessions, stop_stub) = start_stub().await;
    let state = Arc::new(ProxyState::new());
    let mut config = ControlPlaneConfig::new(vec![dead_url().await, url.clone()], "node-1", "edge");
    config.labels.insert("zone".into(), "eu-1".into());
    config.health_interval = Duration::from_millis(50);
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let client = tokio::spawn(control_plane::run(config, Arc::clone(&state), async {
        let _ = shutdown_rx.await;
    }));

    // The dead first URL is skipped; Hello comes first and says "nothing applied yet".
    let mut session = next_session(&mut sessions).await;
    match session.next().await {
        Message::Hello(h) => {
            assert_eq!(h.node_id, "node-1");
            assert_eq!(h.group, "edge");
            assert_eq!(h.labels.get("zone").map(String::as_str), Some("eu-1"));
            assert_eq!(h.version, 0);
        }
        other => panic!("expected Hello first, got {other:?}"),
    }
    assert!(
        state.load().is_none(),
        "nothing may be served before a snapshot"
    );

    // A valid snapshot is applied before it is Acked.
    session.send(valid(5)).await;
    assert_eq!(
        session.next_reply().await,
        Message::Ack(v1::Ack { version: 5 })
    );
    assert_eq!(applied(&state), Some(5));
    let snapshot = state.current_snapshot().unwrap();
    assert_eq!(snapshot.source(), &Source::ControlPlane(url.clone()));
    assert_eq!(snapshot.config().routes().len(), 1);

    // An invalid one is Nacked with the route and field, and the table stays.
    session.send(invalid(6)).await;
    match session.next_reply().await {
        Message::Nack(n) => {
            assert_eq!(n.version, 6);
            assert!(
                n.error.contains(r#"route "bad": path.regex"#),
                "{}",
                n.error
            );
        }
        other => panic!("expected a Nack, got {other:?}"),
    }
    assert_eq!(applied(&state), Some(5));
    assert!(state.load().is_some());
    // The proxy's /metrics: the NACK counted, the stream connected, version 5 served.
    let scrape = routemaster_data_plane::observe::metrics::render(&state).unwrap();
    for line in [
        "routemaster_snapshot_nacks_total 1",
        r#"routemaster_control_plane_state{state="connected"} 1"#,
        r#"routemaster_control_plane_state{state="disconnected"} 0"#,
        "routemaster_snapshot_version 5",
    ] {
        assert!(scrape.lines().any(|l| l == line), "{line} not in\n{scrape}");
    }

    // Older: ignored without a reply. Same version: Ack only. The Ack for 5 being the
    // very next reply proves 3 got none.
    session.send(valid(3)).await;
    session.send(valid(5)).await;
    assert_eq!(
        session.next_reply().await,
        Message::Ack(v1::Ack { version: 5 })
    );
    assert_eq!(applied(&state), Some(5));

    let health = session.next_health().await;
    assert_eq!(health.applied_version, 5);

    // The control plane ends the stream: the proxy keeps serving and comes back (past
    // the dead URL again) announcing the version it serves.
    drop(session);
    let mut session = next_session(&mut sessions).await;
    match session.next().await {
        Message::Hello(h) => assert_eq!(h.version, 5),
        other => panic!("expected Hello first, got {other:?}"),
    }
    assert_eq!(applied(&state), Some(5));
    session.send(valid(7)).await;
    assert_eq!(
        session.next_reply().await,
        Message::Ack(v1::Ack { version: 7 })
    );
    assert_eq!(applied(&state), Some(7));

    // Shutdown with the stream open: Goodbye, then a bounded wait for the control plane
    // to end the stream (this stub never does), then run() returns.
    shutdown.send(()).unwrap();
    timeout(WAIT, client)
        .await
        .expect("control_plane::run did not stop on shutdown")
        .unwrap();
    let _ = stop_stub.send(());
}

#[tokio::test]
async fn a_snapshot_for_another_group_is_nacked() {
    let (url, mut sessions, stop_stub) = start_stub().await;
    let state = Arc::new(ProxyState::new());
    let config = ControlPlaneConfig::new(vec![url], "node-2", "edge");
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let client = tokio::spawn(control_plane::run(config, Arc::clone(&state), async {
        let _ = shutdown_rx.await;
    }));
    let mut session = next_session(&mut sessions).await;
    assert!(matches!(session.next().await, Message::Hello(_)));
    let mut other = valid(9);
    other.group = "internal".into();
    session.send(other).await;
    match session.next_reply().await {
        Message::Nack(n) => {
            assert_eq!(n.version, 9);
            assert!(n.error.contains("internal"), "{}", n.error);
        }
        other => panic!("expected a Nack, got {other:?}"),
    }
    assert!(state.load().is_none());
    shutdown.send(()).unwrap();
    timeout(WAIT, client).await.unwrap().unwrap();
    let _ = stop_stub.send(());
}

#[tokio::test]
async fn shutdown_is_prompt_while_no_control_plane_is_reachable() {
    let state = Arc::new(ProxyState::new());
    let config = ControlPlaneConfig::new(vec![dead_url().await], "node-3", "default");
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let mut client = tokio::spawn(control_plane::run(config, Arc::clone(&state), async {
        let _ = shutdown_rx.await;
    }));
    // Failing to connect is not a reason to stop: it keeps retrying (in backoff).
    assert!(
        timeout(Duration::from_millis(300), &mut client)
            .await
            .is_err(),
        "run() returned without a shutdown"
    );
    shutdown.send(()).unwrap();
    timeout(Duration::from_secs(2), client)
        .await
        .expect("control_plane::run did not stop on shutdown")
        .unwrap();
    assert!(state.load().is_none());
}

/// Polls `check` every 10 ms until it holds or `within` passes; returns whether it held.
async fn holds_within(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn connection(state: &ProxyState) -> Option<Connection> {
    state.control_plane().map(|c| c.state)
}

struct StateDir(std::path::PathBuf);

impl StateDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "routemaster-discovery-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self) -> std::path::PathBuf {
        last_known_good::path(&self.0)
    }

    fn saved_version(&self) -> Option<u64> {
        last_known_good::load(&self.file(), "edge")
            .unwrap()
            .map(|s| s.snapshot.version())
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn with_state_dir(url: String, dir: &StateDir, bootstrap: Duration) -> ControlPlaneConfig {
    let mut config = ControlPlaneConfig::new(vec![url], "node-lkg", "edge");
    config.state_dir = Some(dir.0.clone());
    config.bootstrap_timeout = bootstrap;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn says_goodbye_at_shutdown_and_reports_its_connection() {
    let (url, mut sessions, stop_stub) = start_stub().await;
    let state = Arc::new(ProxyState::new());
    let config = ControlPlaneConfig::new(vec![url.clone()], "node-4", "edge");
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let client = tokio::spawn(control_plane::run(config, Arc::clone(&state), async {
        let _ = shutdown_rx.await;
    }));
    let mut session = next_session(&mut sessions).await;
    assert!(matches!(session.next().await, Message::Hello(_)));
    assert!(
        holds_within(WAIT, || connection(&state) == Some(Connection::Connected)).await,
        "{:?}",
        state.control_plane()
    );
    let status = state.control_plane().unwrap();
    assert_eq!(status.url.as_deref(), Some(url.as_str()));
    assert_eq!(status.last_snapshot_at, None);

    session.send(valid(5)).await;
    assert_eq!(
        session.next_reply().await,
        Message::Ack(v1::Ack { version: 5 })
    );
    assert!(state.control_plane().unwrap().last_snapshot_at.is_some());

    // Shutdown: Goodbye is the next thing on the stream, then the proxy's half ends.
    shutdown.send(()).unwrap();
    assert_eq!(
        session.next_reply().await,
        Message::Goodbye(v1::Goodbye {
            reason: "shutting down".into()
        })
    );
    assert!(
        timeout(WAIT, session.from_proxy.recv())
            .await
            .unwrap()
            .is_none(),
        "the proxy's stream must end after Goodbye"
    );
    // The control plane ends its half once it has taken the Goodbye; the client waits
    // for that (bounded), then stops.
    drop(session.snapshots);
    timeout(WAIT, client)
        .await
        .expect("control_plane::run did not stop after the goodbye")
        .unwrap();
    assert_eq!(connection(&state), Some(Connection::Disconnected));
    assert_eq!(applied(&state), Some(5), "the table outlives the stream");
    let _ = stop_stub.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_state_follows_an_outage() {
    let (url, mut sessions, stop_stub) = start_stub().await;
    let state = Arc::new(ProxyState::new());
    let config = ControlPlaneConfig::new(vec![url], "node-5", "edge");
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let client = tokio::spawn(control_plane::run(config, Arc::clone(&state), async {
        let _ = shutdown_rx.await;
    }));
    let mut session = next_session(&mut sessions).await;
    assert!(matches!(session.next().await, Message::Hello(_)));
    session.send(valid(5)).await;
    assert!(matches!(session.next_reply().await, Message::Ack(_)));
    assert_eq!(connection(&state), Some(Connection::Connected));

    // The stub stops: the state leaves `connected` (retrying), the table stays.
    let _ = stop_stub.send(());
    drop(session);
    assert!(
        holds_within(WAIT, || connection(&state) != Some(Connection::Connected)).await,
        "{:?}",
        state.control_plane()
    );
    let status = state.control_plane().unwrap();
    assert!(status.last_error.is_some(), "{status:?}");
    assert!(status.last_snapshot_at.is_some());
    assert_eq!(applied(&state), Some(5));
    shutdown.send(()).unwrap();
    timeout(WAIT, client).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_applied_snapshots_serves_them_when_alone_and_yields_to_the_control_plane() {
    let dir = StateDir::new("serve");
    let (url, mut sessions, stop_stub) = start_stub().await;

    // First life: every applied snapshot is saved; a rejected one is not.
    let state = Arc::new(ProxyState::new());
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let client = tokio::spawn(control_plane::run(
        with_state_dir(url.clone(), &dir, Duration::from_secs(5)),
        Arc::clone(&state),
        async {
            let _ = shutdown_rx.await;
        },
    ));
    let mut session = next_session(&mut sessions).await;
    assert!(matches!(session.next().await, Message::Hello(_)));
    session.send(valid(5)).await;
    assert!(matches!(session.next_reply().await, Message::Ack(_)));
    assert_eq!(dir.saved_version(), Some(5));
    session.send(invalid(6)).await;
    assert!(matches!(session.next_reply().await, Message::Nack(_)));
    assert_eq!(dir.saved_version(), Some(5));
    shutdown.send(()).unwrap();
    drop(session);
    timeout(WAIT, client).await.unwrap().unwrap();
    let _ = stop_stub.send(());

    // Second life, no control plane: after the bootstrap timeout the saved table serves.
    let (url, mut sessions, stop_stub) = start_stub().await;
    let state = Arc::new(ProxyState::new());
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let bootstrap = Duration::from_millis(300);
    let client = tokio::spawn(control_plane::run(
        with_state_dir(url, &dir, bootstrap),
        Arc::clone(&state),
        async {
            let _ = shutdown_rx.await;
        },
    ));
    // The stub accepts the stream but sends nothing: that is not an answer.
    let mut session = next_session(&mut sessions).await;
    match session.next().await {
        // Nothing served yet, and a saved table is never announced.
        Message::Hello(h) => assert_eq!(h.version, 0),
        other => panic!("expected Hello first, got {other:?}"),
    }
    assert!(
        holds_within(WAIT, || state.load().is_some()).await,
        "the saved snapshot was not served"
    );
    assert!(
        state.started.elapsed() >= bootstrap,
        "served before the bootstrap timeout"
    );
    assert_eq!(applied(&state), Some(5));
    assert_eq!(state.source_kind(), Some(SourceKind::LastKnownGood));
    assert_eq!(
        state.current_snapshot().unwrap().source(),
        &Source::File(dir.file().display().to_string())
    );

    // The control plane answers, with a lower version (a rebuilt etcd): it wins anyway.
    session.send(valid(3)).await;
    assert_eq!(
        session.next_reply().await,
        Message::Ack(v1::Ack { version: 3 })
    );
    assert_eq!(applied(&state), Some(3));
    assert_eq!(state.source_kind(), Some(SourceKind::ControlPlane));
    assert_eq!(dir.saved_version(), Some(3));
    shutdown.send(()).unwrap();
    drop(session);
    timeout(WAIT, client).await.unwrap().unwrap();
    let _ = stop_stub.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_snapshot_before_the_bootstrap_timeout_wins() {
    let dir = StateDir::new("race");
    let mut saved = valid(9);
    saved.routes.clear();
    last_known_good::save(
        &dir.0,
        &last_known_good::Record {
            version: 9,
            group: "edge".into(),
            control_plane: "http://old".into(),
            saved_at: "2026-01-01T00:00:00.000Z".into(),
            config: routemaster_proto::config_spec(saved.services, saved.routes).unwrap(),
        },
    )
    .unwrap();
    let (url, mut sessions, stop_stub) = start_stub().await;
    let state = Arc::new(ProxyState::new());
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let bootstrap = Duration::from_millis(300);
    let client = tokio::spawn(control_plane::run(
        with_state_dir(url, &dir, bootstrap),
        Arc::clone(&state),
        async {
            let _ = shutdown_rx.await;
        },
    ));
    let mut session = next_session(&mut sessions).await;
    assert!(matches!(session.next().await, Message::Hello(_)));
    session.send(valid(4)).await;
    assert!(matches!(session.next_reply().await, Message::Ack(_)));
    // Past the bootstrap timeout (with a margin), the control plane's table still serves.
    let until = bootstrap.saturating_sub(state.started.elapsed()) + Duration::from_millis(500);
    assert!(
        !holds_within(until, || state.source_kind()
            != Some(SourceKind::ControlPlane))
        .await,
        "the saved snapshot replaced the control plane's"
    );
    assert_eq!(applied(&state), Some(4));
    shutdown.send(()).unwrap();
    drop(session);
    timeout(WAIT, client).await.unwrap().unwrap();
    let _ = stop_stub.send(());
}

#[tokio::test]
async fn damaged_saved_snapshots_are_never_served() {
    let good = {
        let s = valid(5);
        last_known_good::encode(&last_known_good::Record {
            version: 5,
            group: "edge".into(),
            control_plane: "http://old".into(),
            saved_at: "2026-01-01T00:00:00.000Z".into(),
            config: routemaster_proto::config_spec(s.services, s.routes).unwrap(),
        })
        .unwrap()
    };
    let mut flipped = good.clone();
    let middle = flipped.len() - 20;
    flipped[middle] ^= 0x04;
    let cases: [(&str, Vec<u8>); 4] = [
        ("flipped", flipped),
        ("truncated", good[..good.len() - 1].to_vec()),
        ("empty", Vec::new()),
        ("garbage", b"{\"routes\": []}".to_vec()),
    ];
    let bootstrap = Duration::from_millis(100);
    for (name, bytes) in cases {
        let dir = StateDir::new(name);
        std::fs::write(dir.file(), &bytes).unwrap();
        let state = Arc::new(ProxyState::new());
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let client = tokio::spawn(control_plane::run(
            with_state_dir(dead_url().await, &dir, bootstrap),
            Arc::clone(&state),
            async {
                let _ = shutdown_rx.await;
            },
        ));
        assert!(
            !holds_within(bootstrap + Duration::from_millis(400), || state
                .load()
                .is_some())
            .await,
            "{name}: a damaged snapshot was served"
        );
        shutdown.send(()).unwrap();
        timeout(WAIT, client).await.unwrap().unwrap();
    }
}
