//! Connected mode: the proxy's end of `routemaster.v1.Discovery/Stream`.
//!
//! This module owns the connection to the control plane: picking a replica, the
//! Hello/Ack/Nack/HealthReport/Goodbye protocol, and reconnecting with backoff. It never
//! owns the table: every snapshot that validates goes through [`ProxyState::apply`] like
//! a route file does, and nothing here ever clears it, so a proxy keeps serving its last
//! good table through invalid snapshots, control-plane restarts and network partitions.
//!
//! With a state directory ([`ControlPlaneConfig::state_dir`]) every applied snapshot is
//! also saved on disk ([`last_known_good`]); a proxy that starts while no control plane
//! answers serves the saved one after [`ControlPlaneConfig::bootstrap_timeout`], and
//! the control plane's first snapshot replaces it whatever its version.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use routemaster_common::Config;
use routemaster_common::snapshot::{Snapshot, Source};
use routemaster_proto::v1;
use routemaster_proto::v1::discovery_client::DiscoveryClient;
use routemaster_proto::v1::proxy_message::Message;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::state::{Connection, ProxyState, SourceKind};
use crate::stats::Stats;

/// TCP connect timeout per control-plane URL.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a [`v1::HealthReport`] is sent.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// First reconnect delay; doubles per failed attempt up to [`BACKOFF_MAX`].
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a starting proxy waits for a control plane's snapshot before serving its
/// last-known-good one.
pub const DEFAULT_BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(5);
/// What the Goodbye says.
pub const GOODBYE_REASON: &str = "shutting down";
/// How long a draining proxy waits for the control plane to take its Goodbye (it ends
/// the stream once the node is forgotten; that is bounded by 2 s on its side).
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(3);

/// Bounds the whole handshake (TCP, HTTP/2, opening the stream). The connect timeout
/// only covers TCP; a peer that accepts but never speaks HTTP/2 would otherwise hold a
/// proxy forever on one dead replica.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings detect a silently dead control plane (partition, power loss) that TCP
/// would take minutes to notice; without them the proxy would not fail over.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Outbound queue (Hello, Acks, Nacks, health reports). Small: the control plane reads
/// continuously, and health reports are dropped rather than queued when it is full.
const OUTBOX: usize = 16;
/// `tokio::time::interval` panics on a zero period; a caller's zero becomes this.
const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(10);

/// Who this proxy is and where its control planes are.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// Control-plane URLs (`http://host:port`), tried in order, rotating on failure.
    pub urls: Vec<String>,
    pub node_id: String,
    pub group: String,
    pub labels: HashMap<String, String>,
    pub health_interval: Duration,
    pub connect_timeout: Duration,
    /// Where applied snapshots are saved and read back at start (`--state-dir`).
    pub state_dir: Option<PathBuf>,
    /// With `state_dir`: how long to wait at start for a control plane's snapshot
    /// before serving the saved one (`--bootstrap-timeout`), counted from process start.
    pub bootstrap_timeout: Duration,
}

impl ControlPlaneConfig {
    /// A config with no labels and the default intervals.
    pub fn new(urls: Vec<String>, node_id: impl Into<String>, group: impl Into<String>) -> Self {
        Self {
            urls,
            node_id: node_id.into(),
            group: group.into(),
            labels: HashMap::new(),
            health_interval: DEFAULT_HEALTH_INTERVAL,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            state_dir: None,
            bootstrap_timeout: DEFAULT_BOOTSTRAP_TIMEOUT,
        }
    }
}

/// A `--control-plane` value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("must not be empty")]
    Empty,
    #[error("{0:?} is not a valid URL")]
    Invalid(String),
    #[error("{0:?}: only http:// is supported (this build has no TLS)")]
    Scheme(String),
}

/// Validates a control-plane URL; a bare `host:port` means `http://host:port`.
pub fn parse_url(s: &str) -> Result<String, UrlError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(UrlError::Empty);
    }
    let url = if s.contains("://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    };
    let uri: http::Uri = url.parse().map_err(|_| UrlError::Invalid(s.to_owned()))?;
    if uri.scheme_str() != Some("http") {
        return Err(UrlError::Scheme(s.to_owned()));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(UrlError::Invalid(s.to_owned()));
    }
    // Checked here so that a URL that passed the flags can always become an Endpoint.
    Endpoint::from_shared(url.clone()).map_err(|_| UrlError::Invalid(s.to_owned()))?;
    Ok(url)
}

/// Exponential backoff between connection attempts: `initial`, doubling, capped at
/// `max`. Jitter is applied separately ([`jittered`]) so the sequence stays testable.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(BACKOFF_INITIAL, BACKOFF_MAX)
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial.min(max),
        }
    }

    /// The delay before the next attempt (without jitter).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.checked_mul(2).unwrap_or(self.max).min(self.max);
        delay
    }

    /// Back to `initial`, after a session that worked.
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }
}

/// `delay` shortened by up to 10%, so a fleet of proxies that lost the same control
/// plane at the same instant does not reconnect in lockstep.
pub fn jittered(delay: Duration) -> Duration {
    // No RNG dependency in the data plane: the clock's nanoseconds through std's
    // randomly keyed hasher differ per process and per call, which is all jitter needs.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u32(nanos);
    jitter_with(delay, hasher.finish())
}

fn jitter_with(delay: Duration, random: u64) -> Duration {
    let span = u64::try_from((delay / 10).as_nanos()).unwrap_or(u64::MAX);
    let cut = random.checked_rem(span.saturating_add(1)).unwrap_or(0);
    delay.saturating_sub(Duration::from_nanos(cut))
}

/// Why a session with one control plane ended.
#[derive(Debug, thiserror::Error)]
enum Disconnect {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot open the discovery stream: {0}")]
    Open(tonic::Status),
    #[error("the control plane closed the stream")]
    Closed,
    #[error("stream failed: {0}")]
    Stream(tonic::Status),
    #[error("the outbound stream is gone")]
    Outbound,
    #[error("shutting down")]
    Shutdown,
}

/// What a session got to before it ended, for the reconnect policy.
#[derive(Debug, Default)]
struct Progress {
    /// The stream was opened.
    established: bool,
    /// At least one snapshot arrived: the replica works, so backoff starts over.
    received: bool,
}

/// Keeps this proxy connected to one of `config.urls` and applies the snapshots it is
/// sent, until `shutdown` resolves; then says Goodbye on the open stream (if any), so
/// the control plane forgets this node instead of waiting for it as `lost`. Pass the
/// start of the drain as `shutdown`, not its end.
///
/// With [`ControlPlaneConfig::state_dir`], also saves every applied snapshot and serves
/// the saved one if no snapshot arrived within the bootstrap timeout.
pub async fn run(
    config: ControlPlaneConfig,
    state: Arc<ProxyState>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    state.update_control_plane(|s| s.state = Connection::Connecting);
    let _bootstrap = config.state_dir.clone().map(|dir| {
        AbortOnDrop(tokio::spawn(bootstrap(
            dir,
            config.group.clone(),
            config.labels.clone(),
            config.bootstrap_timeout,
            Arc::clone(&state),
        )))
    });
    if config.urls.is_empty() {
        tracing::error!("no control plane URL given; serving nothing until shutdown");
        shutdown.await;
        return;
    }
    let mut backoff = Backoff::default();
    let mut index = 0usize;
    // One warning per outage: set when a failure is reported, cleared on connect.
    let mut warned = false;
    loop {
        let url = match config.urls.get(index % config.urls.len()) {
            Some(url) => url.as_str(),
            None => return,
        };
        state.update_control_plane(|s| {
            s.state = Connection::Connecting;
            s.url = Some(url.to_owned());
        });
        let mut progress = Progress::default();
        let end = session(&config, url, &state, &mut progress, shutdown.as_mut()).await;
        state.update_control_plane(|s| {
            s.state = Connection::Disconnected;
            s.last_error = Some(end.to_string());
        });
        if matches!(end, Disconnect::Shutdown) {
            // `shutdown` has resolved: it must not be polled again.
            return;
        }
        if progress.established {
            warned = false;
        }
        if progress.received {
            backoff.reset();
        }
        if !warned {
            warned = true;
            if progress.established {
                tracing::warn!(
                    control_plane = url,
                    error = %end,
                    "lost the control plane; keeping the current table and reconnecting"
                );
            } else {
                tracing::warn!(
                    control_plane = url,
                    error = %end,
                    "cannot reach the control plane; keeping the current table and retrying"
                );
            }
        } else {
            tracing::debug!(control_plane = url, error = %end, "control plane attempt failed");
        }
        index = index.wrapping_add(1);
        let delay = jittered(backoff.next_delay());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut shutdown => return,
        }
    }
}

/// Aborts a background task when its owner goes away.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads the saved snapshot at once (so a bad file is reported at start), then, if no
/// control plane's snapshot was applied by `state.started + timeout`, serves it.
async fn bootstrap(
    dir: PathBuf,
    group: String,
    labels: HashMap<String, String>,
    timeout: Duration,
    state: Arc<ProxyState>,
) {
    let deadline = tokio::time::Instant::from_std(state.started) + timeout;
    let path = last_known_good::path(&dir);
    let file = path.clone();
    let Ok(loaded) =
        tokio::task::spawn_blocking(move || last_known_good::load(&file, &group)).await
    else {
        return;
    };
    let saved = match loaded {
        Ok(Some(saved)) => saved,
        Ok(None) => {
            tracing::info!(
                path = %path.display(),
                "no last-known-good snapshot yet; waiting for the control plane"
            );
            return;
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "last-known-good snapshot ignored (it will not be served); waiting for the control plane"
            );
            return;
        }
    };
    tokio::time::sleep_until(deadline).await;
    if state.load().is_some() {
        return;
    }
    let last_known_good::Saved {
        snapshot,
        control_plane,
        saved_at,
    } = saved;
    // Saved as received: filled in for this proxy's labels like a fresh one.
    let snapshot = match localized(snapshot, &labels) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "last-known-good snapshot ignored (it will not be served)");
            return;
        }
    };
    let target = Arc::clone(&state);
    let applied = tokio::task::spawn_blocking(move || {
        // Its certificates too (read and checked first; if they no longer are usable,
        // the table is still served, without TLS certificates, and said so).
        let installed = crate::tls::prepare(snapshot.config().certificates());
        let applied = target.apply_last_known_good(Arc::new(snapshot));
        if applied.is_some() {
            match installed {
                Ok(installed) => target.tls.install(installed),
                Err(e) => tracing::warn!(error = %e, "last-known-good certificates not served"),
            }
        }
        applied
    })
    .await;
    if let Ok(Some(applied)) = applied {
        tracing::warn!(
            version = applied.version,
            routes = applied.routes,
            services = applied.services,
            saved_at = %saved_at,
            saved_from = %control_plane,
            path = %path.display(),
            "no control plane answered within {timeout:?}: serving the last-known-good snapshot \
             until one does"
        );
    }
}

/// One connection to one control plane, from connect to disconnect.
async fn session<S: Future<Output = ()>>(
    config: &ControlPlaneConfig,
    url: &str,
    state: &Arc<ProxyState>,
    progress: &mut Progress,
    mut shutdown: Pin<&mut S>,
) -> Disconnect {
    let (tx, rx) = mpsc::channel::<v1::ProxyMessage>(OUTBOX);
    let open = async {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| Disconnect::Connect(error_chain(&e)))?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| Disconnect::Connect(error_chain(&e)))?;
        // Queued before the call so Hello is the first message on the wire, whether
        // or not the server waits for it before answering.
        let hello = Message::Hello(v1::Hello {
            node_id: config.node_id.clone(),
            group: config.group.clone(),
            labels: config.labels.clone(),
            version: control_plane_version(state).unwrap_or(0),
            binary_version: env!("CARGO_PKG_VERSION").to_owned(),
        });
        tx.try_send(v1::ProxyMessage {
            message: Some(hello),
        })
        .map_err(|_| Disconnect::Outbound)?;
        // Snapshots of large route sets exceed tonic's 4 MiB default.
        let mut client = DiscoveryClient::new(channel).max_decoding_message_size(256 * 1024 * 1024);
        client
            .stream(ReceiverStream::new(rx))
            .await
            .map(tonic::Response::into_inner)
            .map_err(Disconnect::Open)
    };
    let opened = tokio::select! {
        opened = tokio::time::timeout(OPEN_TIMEOUT, open) => opened,
        () = &mut shutdown => return Disconnect::Shutdown,
    };
    let mut inbound = match opened {
        Ok(Ok(inbound)) => inbound,
        Ok(Err(e)) => return e,
        Err(_) => return Disconnect::Timeout(OPEN_TIMEOUT),
    };
    progress.established = true;
    state.update_control_plane(|s| {
        s.state = Connection::Connected;
        s.last_error = None;
    });
    tracing::info!(
        control_plane = url,
        node_id = %config.node_id,
        group = %config.group,
        "connected to the control plane"
    );

    let period = config.health_interval.max(MIN_HEALTH_INTERVAL);
    let mut health = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = inbound.message() => match received {
                Ok(Some(snapshot)) => {
                    progress.received = true;
                    state.update_control_plane(|s| s.last_snapshot_at = Some(SystemTime::now()));
                    if let Some(reply) = handle_snapshot(snapshot, config, url, state).await {
                        if matches!(reply, Message::Nack(_)) {
                            state.observe.metrics.nacks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        let reply = v1::ProxyMessage { message: Some(reply) };
                        if tx.send(reply).await.is_err() {
                            return Disconnect::Outbound;
                        }
                    }
                }
                Ok(None) => return Disconnect::Closed,
                Err(status) => return Disconnect::Stream(status),
            },
            _ = health.tick() => {
                let report = v1::ProxyMessage {
                    message: Some(Message::Health(health_report(state))),
                };
                match tx.try_send(report) {
                    Ok(()) => {}
                    // A report is only a sample; the next one supersedes it.
                    Err(TrySendError::Full(_)) => {
                        tracing::debug!("outbound queue full; health report skipped");
                    }
                    Err(TrySendError::Closed(_)) => return Disconnect::Outbound,
                }
            }
            () = &mut shutdown => {
                say_goodbye(url, tx, inbound).await;
                return Disconnect::Shutdown;
            }
        }
    }
}

/// Sends Goodbye, ends our half of the stream and waits (bounded) for the control plane
/// to end its half, which it does once it has forgotten this node: past that, the
/// process can exit without the node ever showing as `lost`.
async fn say_goodbye(
    url: &str,
    tx: mpsc::Sender<v1::ProxyMessage>,
    mut inbound: tonic::Streaming<v1::Snapshot>,
) {
    let goodbye = v1::ProxyMessage {
        message: Some(Message::Goodbye(v1::Goodbye {
            reason: GOODBYE_REASON.to_owned(),
        })),
    };
    let exchange = async move {
        tx.send(goodbye).await.map_err(|_| "the stream is gone")?;
        drop(tx);
        // Snapshots still in flight are not applied: the proxy is leaving.
        while let Ok(Some(_)) = inbound.message().await {}
        Ok::<(), &str>(())
    };
    match tokio::time::timeout(GOODBYE_TIMEOUT, exchange).await {
        Ok(Ok(())) => tracing::info!(control_plane = url, "said goodbye to the control plane"),
        Ok(Err(e)) => tracing::warn!(control_plane = url, error = e, "goodbye not sent"),
        Err(_) => tracing::warn!(
            control_plane = url,
            "the control plane did not close the stream within {GOODBYE_TIMEOUT:?} of the goodbye"
        ),
    }
}

/// Applies one snapshot if it is new and valid (and saves it, with a state directory);
/// returns the Ack/Nack to send, if any.
async fn handle_snapshot(
    snapshot: v1::Snapshot,
    config: &ControlPlaneConfig,
    url: &str,
    state: &Arc<ProxyState>,
) -> Option<Message> {
    let version = snapshot.version;
    // `None` (nothing from a control plane yet, or only the last-known-good table) is
    // older than every version, even 0: the control plane always replaces what was read
    // from disk, even if its versions went back (a restored or rebuilt etcd).
    match control_plane_version(state) {
        Some(applied) if version < applied => {
            tracing::debug!(version, applied, "ignoring an older snapshot");
            return None;
        }
        Some(applied) if version == applied => {
            return Some(Message::Ack(v1::Ack { version }));
        }
        _ => {}
    }
    if !snapshot.group.is_empty() && snapshot.group != config.group {
        // Applying another group's routes would silently serve the wrong traffic.
        let error = format!(
            "snapshot is for group {:?}, this proxy serves group {:?}",
            snapshot.group, config.group
        );
        tracing::error!(version, %error, "snapshot rejected; keeping the last good table");
        return Some(Message::Nack(v1::Nack { version, error }));
    }
    // Validation, compilation and saving are work proportional to the table; keep them
    // off the runtime's worker threads.
    let source = url.to_owned();
    let target = Arc::clone(state);
    let state_dir = config.state_dir.clone();
    let group = config.group.clone();
    let labels = config.labels.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        // `routemaster_proto::snapshot_from_proto`, keeping the spec to save: the file
        // holds exactly what was received and validated.
        let spec = routemaster_proto::config_spec_with_certificates(
            snapshot.services,
            snapshot.routes,
            snapshot.certificates,
        )
        .map_err(|e| e.to_string())?;
        let keep = state_dir.as_ref().map(|_| spec.clone());
        let validated = Config::try_from(spec).map_err(|e| e.to_string())?;
        let snapshot = Snapshot::new(version, Source::ControlPlane(source.clone()), validated);
        // `${node.NAME}`, `select` and `locality` resolved for this proxy's labels; a
        // label it lacks refuses the snapshot (NACK) naming the service and field.
        let snapshot = localized(snapshot, &labels).map_err(|e| e.to_string())?;
        // Certificates' files are read and every pair checked before anything is
        // swapped: a missing or bad `cert_file`/`key_file` NACKs the snapshot naming the
        // certificate and file, and the last good table and certificates keep serving.
        let applied = crate::tls::apply(&target, Arc::new(snapshot)).map_err(|e| e.to_string())?;
        let saved = match (state_dir, keep) {
            (Some(dir), Some(spec)) => Some(last_known_good::save(
                &dir,
                &last_known_good::Record {
                    version,
                    group,
                    control_plane: source,
                    saved_at: crate::admin::rfc3339(SystemTime::now()),
                    config: spec,
                },
            )),
            _ => None,
        };
        Ok::<_, String>((applied, saved))
    })
    .await;
    match outcome {
        Ok(Ok((applied, saved))) => {
            tracing::info!(
                version = applied.version,
                routes = applied.routes,
                services = applied.services,
                compile_ms = applied.compile_time.as_secs_f64() * 1e3,
                control_plane = url,
                "snapshot applied"
            );
            match saved {
                Some(Ok(path)) => {
                    tracing::debug!(version, path = %path.display(), "last-known-good snapshot saved");
                }
                Some(Err(e)) => {
                    tracing::warn!(version, error = %e, "cannot save the last-known-good snapshot");
                }
                None => {}
            }
            Some(Message::Ack(v1::Ack { version }))
        }
        Ok(Err(error)) => {
            tracing::error!(version, %error, "snapshot rejected; keeping the last good table");
            Some(Message::Nack(v1::Nack { version, error }))
        }
        Err(e) => {
            let error = format!("internal error while applying: {e}");
            tracing::error!(version, %error, "snapshot not applied; keeping the last good table");
            Some(Message::Nack(v1::Nack { version, error }))
        }
    }
}

/// `snapshot` as a proxy with `labels` serves it ([`routemaster_common::locality`]).
fn localized(
    snapshot: Snapshot,
    labels: &HashMap<String, String>,
) -> Result<Snapshot, routemaster_common::ValidationErrors> {
    if !routemaster_common::locality::needs_labels(snapshot.config()) {
        return Ok(snapshot);
    }
    let config = routemaster_common::locality::localize(snapshot.config(), labels)?;
    Ok(Snapshot::new(
        snapshot.version(),
        snapshot.source().clone(),
        config,
    ))
}

/// The version of the table this proxy got from a control plane, if it serves one (a
/// last-known-good table read from disk does not count: it is replaced unconditionally
/// and not announced in Hello, so the control plane sends its own).
fn control_plane_version(state: &ProxyState) -> Option<u64> {
    let (snapshot, meta) = state.current_with_meta();
    match meta.kind {
        Some(SourceKind::LastKnownGood) => None,
        _ => snapshot.map(|s| s.version()),
    }
}

fn applied_version(state: &ProxyState) -> Option<u64> {
    state.current_snapshot().map(|s| s.version())
}

fn health_report(state: &ProxyState) -> v1::HealthReport {
    let stats = &state.stats;
    v1::HealthReport {
        applied_version: applied_version(state).unwrap_or(0),
        uptime_seconds: state.started.elapsed().as_secs(),
        in_flight: Stats::get(&stats.in_flight),
        requests_total: Stats::get(&stats.requests_total),
        downstream_errors: Stats::get(&stats.downstream_errors),
        upstream_errors: Stats::get(&stats.upstream_errors),
        internal_errors: Stats::get(&stats.internal_errors),
        upstreams: state
            .load()
            .map(|c| crate::health::upstream_views(&c))
            .unwrap_or_default()
            .into_iter()
            .map(|u| v1::UpstreamHealth {
                service: u.service,
                panic: u.panic,
                endpoints: u
                    .endpoints
                    .into_iter()
                    .map(|e| v1::EndpointHealth {
                        address: e.address,
                        healthy: e.health.healthy,
                        active: e.health.active.as_str().to_owned(),
                        ejected: e.health.ejected,
                    })
                    .collect(),
            })
            .collect(),
        shadow: shadow_report(state),
    }
}

/// Shadow rules' and comparing mirrors' tallies for the health report.
fn shadow_report(state: &ProxyState) -> Vec<v1::ShadowCounts> {
    let misses = |recent: Vec<crate::shadow::MissSample>| {
        recent
            .into_iter()
            .map(|m| v1::ShadowMiss {
                at_unix_ms: m
                    .at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                request_id: m.request_id,
                method: m.method,
                path: m.path,
                expected: m.expected,
                actual: m.actual,
                node: String::new(),
            })
            .collect()
    };
    let rules = state.shadow.counts().into_iter().map(|c| v1::ShadowCounts {
        route: c.route,
        fingerprint: c.fingerprint,
        hit: c.hit,
        miss: c.miss,
        unknown: c.unknown,
        recent: misses(c.recent),
        kind: "rule".into(),
        ..Default::default()
    });
    let mirrors = state.shadow.mirror_counts().into_iter().map(|c| {
        let [matched, miss, noise, error, dropped] = c.counts;
        v1::ShadowCounts {
            route: c.route,
            fingerprint: c.fingerprint,
            hit: matched,
            miss,
            unknown: 0,
            recent: misses(c.recent),
            kind: "mirror".into(),
            noise,
            error,
            dropped,
            noise_paths: c.noise,
        }
    });
    rules.chain(mirrors).collect()
}

/// `transport::Error` displays only "transport error"; the cause is in its sources.
/// Layers of hyper/tonic repeat each other's text, so a source already included in the
/// previous message (or including it) is folded into one.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        match parts.last_mut() {
            Some(last) if last.ends_with(&text) => {}
            Some(last) if text.starts_with(last.as_str()) => *last = text,
            _ => parts.push(text),
        }
        source = s.source();
    }
    parts.join(": ")
}

pub mod last_known_good;

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let seq: Vec<_> = (0..9).map(|_| b.next_delay()).collect();
        assert_eq!(
            seq,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000].map(ms)
        );
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
        assert_eq!(b.next_delay(), ms(200));
    }

    #[test]
    fn backoff_never_overflows() {
        let mut b = Backoff::new(Duration::MAX / 2 + ms(1), Duration::MAX);
        b.next_delay();
        assert_eq!(b.next_delay(), Duration::MAX);
        assert_eq!(b.next_delay(), Duration::MAX);
    }

    #[test]
    fn jitter_shortens_by_at_most_a_tenth() {
        for random in [0, 1, 7, 10_000_000, 10_000_001, u64::MAX] {
            let d = jitter_with(ms(100), random);
            assert!(d <= ms(100) && d >= ms(90), "{random}: {d:?}");
        }
        assert_eq!(jitter_with(ms(100), 10_000_000), ms(90));
        assert_eq!(jitter_with(Duration::ZERO, 5), Duration::ZERO);
        for _ in 0..100 {
            let d = jittered(ms(5000));
            assert!(d <= ms(5000) && d >= ms(4500), "{d:?}");
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://cp-1:7000").ok().as_deref(),
            Some("http://cp-1:7000")
        );
        assert_eq!(
            parse_url(" 10.0.0.1:7000 ").ok().as_deref(),
            Some("http://10.0.0.1:7000")
        );
        assert!(matches!(parse_url(""), Err(UrlError::Empty)));
        assert!(matches!(
            parse_url("https://cp:7000"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(parse_url("http://"), Err(UrlError::Invalid(_))));
        assert!(matches!(
            parse_url("http://a b:1"),
            Err(UrlError::Invalid(_))
        ));
    }

    #[test]
    fn error_chain_folds_repeats() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "transport error",
            Some(Box::new(E(
                "tcp connect error",
                Some(Box::new(E(
                    "tcp connect error: refused",
                    Some(Box::new(E("refused", None))),
                ))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "transport error: tcp connect error: refused"
        );
    }

    #[test]
    fn health_report_reads_the_counters() {
        let state = ProxyState::new();
        state
            .stats
            .requests_total
            .store(7, std::sync::atomic::Ordering::Relaxed);
        state
            .stats
            .upstream_errors
            .store(2, std::sync::atomic::Ordering::Relaxed);
        let r = health_report(&state);
        assert_eq!(r.applied_version, 0);
        assert_eq!(r.requests_total, 7);
        assert_eq!(r.upstream_errors, 2);
        assert_eq!(r.in_flight, 0);
    }
}
