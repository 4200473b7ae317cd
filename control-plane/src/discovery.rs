//! `Discovery.Stream`: one bidirectional stream per proxy. The proxy says Hello (node
//! id, group, labels, the version it has); we send its group's snapshot whenever the
//! published version differs from what it last got; it answers Ack/Nack and sends
//! health reports, which become node status, and says Goodbye when it drains. A NACKed
//! version is not resent: the next version is.

use std::sync::Arc;

use routemaster_proto::v1::proxy_message::Message;
use routemaster_proto::{EncodedSnapshot, shared, v1};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::controller::Controller;
use crate::nodes::{NodeRecord, Nodes, now_ms};

const NODE_REPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug)]
pub struct DiscoveryService {
    controller: Arc<Controller>,
    nodes: Arc<Nodes>,
    /// This replica's gRPC address, recorded in node status.
    replica: String,
    /// The least time between two snapshots sent on one stream (flood control).
    pace: std::time::Duration,
}

/// `--max-snapshots-per-second`'s default.
pub const DEFAULT_MAX_SNAPSHOTS_PER_SECOND: u32 = 10;

impl DiscoveryService {
    pub fn new(controller: Arc<Controller>, nodes: Arc<Nodes>, replica: String) -> Self {
        Self {
            controller,
            nodes,
            replica,
            pace: pace(DEFAULT_MAX_SNAPSHOTS_PER_SECOND),
        }
    }

    /// Coalesces versions so that each proxy of a group gets at most `per_second`
    /// snapshots a second: a version published sooner than that after the last send
    /// waits, and only the newest waiting one is sent. A registration flood then costs
    /// the fleet `per_second` snapshots a second, however many versions it makes.
    pub fn with_max_snapshots_per_second(mut self, per_second: u32) -> Self {
        self.pace = pace(per_second);
        self
    }
}

fn pace(per_second: u32) -> std::time::Duration {
    std::time::Duration::from_secs(1) / per_second.max(1)
}

#[tonic::async_trait]
impl shared::discovery_server::Discovery for DiscoveryService {
    type StreamStream = ReceiverStream<Result<EncodedSnapshot, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<v1::ProxyMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(v1::ProxyMessage {
                message: Some(Message::Hello(h)),
            }) => h,
            _ => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        if hello.node_id.is_empty() {
            return Err(Status::invalid_argument("Hello.node_id must not be empty"));
        }
        let group = if hello.group.is_empty() {
            "default".to_owned()
        } else {
            hello.group.clone()
        };
        let (tx, rx) = mpsc::channel(4);
        let session = Session {
            controller: Arc::clone(&self.controller),
            nodes: Arc::clone(&self.nodes),
            record: NodeRecord {
                id: hello.node_id.clone(),
                group,
                labels: hello.labels.into_iter().collect(),
                applied_version: hello.version,
                last_seen: now_ms(),
                connected_since: now_ms(),
                binary_version: hello.binary_version,
                control_plane: self.replica.clone(),
                ..NodeRecord::default()
            },
            // A proxy without a table (version 0) needs the current one even if it is
            // version 0 (an empty store): otherwise it would never become ready.
            last_sent: (hello.version > 0).then_some(hello.version),
            left: false,
            pace: self.pace,
        };
        tracing::info!(node = %hello.node_id, group = %session.record.group, version = hello.version, "proxy connected");
        tokio::spawn(session.run(inbound, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Session {
    controller: Arc<Controller>,
    nodes: Arc<Nodes>,
    record: NodeRecord,
    last_sent: Option<u64>,
    /// The node said goodbye: its record is gone and must not be written again.
    left: bool,
    /// The least time between two sends ([`DiscoveryService::with_max_snapshots_per_second`]).
    pace: std::time::Duration,
}

impl Session {
    async fn run(
        mut self,
        mut inbound: Streaming<v1::ProxyMessage>,
        tx: mpsc::Sender<Result<EncodedSnapshot, Status>>,
    ) {
        self.report().await;
        let streams = self.controller.metrics().streams.clone();
        let open = streams.with_label_values(&[self.record.group.as_str()]);
        open.inc();
        // Decremented however the session ends.
        struct Open(prometheus::IntGauge);
        impl Drop for Open {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        let _open = Open(open);
        let mut catalogs = self.controller.subscribe();
        catalogs.mark_changed();
        // When the last snapshot went out, and when the next may (a newer version is
        // waiting for it).
        let mut sent_at: Option<tokio::time::Instant> = None;
        let mut due: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                changed = catalogs.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let now = tokio::time::Instant::now();
                    let at = sent_at.map_or(now, |t| (t + self.pace).max(now));
                    due.get_or_insert(at);
                }
                () = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                    due = None;
                    let catalog = catalogs.borrow_and_update().clone();
                    if catalog.is_loaded() && Some(catalog.version) != self.last_sent {
                        let metrics = self.controller.metrics();
                        let snapshot = catalog.encoded_snapshot_with(&self.record.group, |took, bytes| {
                            metrics.encode_duration.observe(took.as_secs_f64());
                            metrics.snapshot_bytes.observe(bytes as f64);
                        });
                        self.last_sent = Some(catalog.version);
                        sent_at = Some(tokio::time::Instant::now());
                        if tx.send(Ok(snapshot)).await.is_err() {
                            break;
                        }
                    }
                }
                message = inbound.message() => {
                    match message {
                        Ok(Some(m)) => {
                            self.on_message(m).await;
                            if self.left {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(node = %self.record.id, %status, "stream error");
                            break;
                        }
                    }
                }
            }
        }
        if self.left {
            tracing::info!(node = %self.record.id, "proxy left");
        } else {
            // No goodbye: killed, stopped or cut off. Its record ages into `lost`.
            tracing::info!(node = %self.record.id, "proxy disconnected");
            self.nodes.disconnected(&self.record.id);
        }
    }

    async fn on_message(&mut self, message: v1::ProxyMessage) {
        let record = &mut self.record;
        record.last_seen = now_ms();
        match message.message {
            Some(Message::Ack(ack)) => {
                record.applied_version = ack.version;
            }
            Some(Message::Nack(nack)) => {
                tracing::warn!(node = %record.id, version = nack.version, error = %nack.error, "snapshot rejected by proxy");
                record.last_nack = Some(nack.error);
                record.last_nack_version = Some(nack.version);
            }
            Some(Message::Health(h)) => {
                record.applied_version = h.applied_version;
                record.uptime_seconds = h.uptime_seconds;
                record.in_flight = h.in_flight;
                record.requests_total = h.requests_total;
                record.errors_total = h.downstream_errors + h.upstream_errors + h.internal_errors;
                record.shadow = h.shadow.into_iter().map(Into::into).collect();
                record.upstreams = h.upstreams.into_iter().map(Into::into).collect();
            }
            Some(Message::Goodbye(bye)) => {
                tracing::info!(node = %record.id, reason = %bye.reason, "proxy says goodbye");
                self.left = true;
                let forget = self.nodes.forget(&record.id);
                if let Err(e) = tokio::time::timeout(NODE_REPORT_TIMEOUT, forget).await {
                    tracing::debug!(error = %e, node = %record.id, "goodbye not recorded");
                }
                return;
            }
            Some(Message::Hello(_)) | None => return,
        }
        self.report().await;
    }

    /// Stores the node's status. Bounded: a slow etcd must not hold up this proxy's
    /// snapshots (the next report retries; the lease outlives a few misses).
    async fn report(&mut self) {
        let report = self.nodes.report(&self.record);
        if tokio::time::timeout(NODE_REPORT_TIMEOUT, report)
            .await
            .is_err()
        {
            tracing::debug!(node = %self.record.id, "node status report timed out");
        }
    }
}
