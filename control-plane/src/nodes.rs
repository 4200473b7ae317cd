//! Proxy node status, the fleet's truth for the status API and `routemaster status`.
//!
//! Each replica writes the status of the proxies streaming to it into etcd
//! (`{prefix}/nodes/{id}`, **no lease**), so every replica shows the whole fleet. A node's
//! state is derived when it is read, never stored by a timer:
//!
//! - `left`: it said Goodbye (SIGTERM drain); its record is deleted, so it is gone at once;
//! - `lost`: nothing heard from it for the node TTL (killed, stopped, partitioned); it
//!   stays listed, with when it was last seen, for the retention period (or until
//!   `routemaster delete node ID`), and counts against convergence;
//! - otherwise connected, and then `behind` or `nacked` against the current version.
//!
//! Etcd being away changes nothing of that: this replica's own live sessions are kept in
//! memory and override what etcd says about those nodes, and node records carry no lease
//! that an outage could expire.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use routemaster_proto::v1;
use serde::{Deserialize, Serialize};

use crate::store::Store;

/// One proxy as stored (JSON in etcd).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeRecord {
    pub id: String,
    pub group: String,
    pub labels: BTreeMap<String, String>,
    pub applied_version: u64,
    /// The last NACK's error, if the node rejected a snapshot.
    pub last_nack: Option<String>,
    pub last_nack_version: Option<u64>,
    /// Unix time in milliseconds of the last message from the node.
    pub last_seen: u64,
    /// Unix time in milliseconds when its current stream opened.
    #[serde(default)]
    pub connected_since: u64,
    #[serde(default)]
    pub binary_version: String,
    pub uptime_seconds: u64,
    pub in_flight: u64,
    pub requests_total: u64,
    pub errors_total: u64,
    /// The control-plane replica the node is connected to.
    pub control_plane: String,
    /// Its shadow routes' tallies, from its last health report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadow: Vec<crate::shadow::NodeShadow>,
    /// Each service's endpoints as this node sees them, from its last health report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<NodeUpstream>,
}

/// A service's endpoints as one proxy sees them (its health report).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeUpstream {
    pub service: String,
    /// Fewer than half its endpoints are healthy: the proxy balances over all.
    pub panic: bool,
    pub endpoints: Vec<NodeEndpoint>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeEndpoint {
    pub address: String,
    /// Takes new requests: up (or unchecked) and not ejected.
    pub healthy: bool,
    /// The active checks' verdict: `unknown`, `up` or `down`.
    pub active: String,
    /// Ejected by outlier detection right now.
    pub ejected: bool,
}

impl From<routemaster_proto::v1::UpstreamHealth> for NodeUpstream {
    fn from(u: routemaster_proto::v1::UpstreamHealth) -> Self {
        NodeUpstream {
            service: u.service,
            panic: u.panic,
            endpoints: u
                .endpoints
                .into_iter()
                .map(|e| NodeEndpoint {
                    address: e.address,
                    healthy: e.healthy,
                    active: e.active,
                    ejected: e.ejected,
                })
                .collect(),
        }
    }
}

/// A node's state as the status API and the CLI show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Reporting, at the current version.
    Connected,
    /// Reporting, at an older version.
    Behind,
    /// Reporting, and it rejected the current version.
    Nacked,
    /// Not heard from for the node TTL.
    Lost,
    /// Said goodbye (only ever seen in the instant before its record goes).
    Left,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Connected => "connected",
            NodeState::Behind => "behind",
            NodeState::Nacked => "nacked",
            NodeState::Lost => "lost",
            NodeState::Left => "left",
        }
    }

    /// The stored liveness part of a state (`behind`/`nacked` are derived from versions).
    fn parse_liveness(s: &str) -> Option<Self> {
        match s {
            "connected" => Some(NodeState::Connected),
            "lost" => Some(NodeState::Lost),
            "left" => Some(NodeState::Left),
            _ => None,
        }
    }
}

/// A node with its liveness settled: what `Admin.Status` carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub record: NodeRecord,
    /// `Connected`, `Lost` or `Left`.
    pub liveness: NodeState,
}

impl Node {
    /// The state against the current configuration `version`.
    pub fn state(&self, version: u64) -> NodeState {
        if self.liveness != NodeState::Connected {
            return self.liveness;
        }
        let r = &self.record;
        // A NACK stands while the rejected version is newer than the one served (a
        // later successful apply supersedes it).
        if r.last_nack.is_some() && r.last_nack_version.is_some_and(|v| v > r.applied_version) {
            NodeState::Nacked
        } else if r.applied_version < version {
            NodeState::Behind
        } else {
            NodeState::Connected
        }
    }

    pub fn healthy(&self) -> bool {
        self.liveness == NodeState::Connected
    }
}

impl From<Node> for v1::NodeStatus {
    fn from(n: Node) -> Self {
        let healthy = n.healthy();
        let r = n.record;
        v1::NodeStatus {
            id: r.id,
            group: r.group,
            labels: r.labels.into_iter().collect(),
            applied_version: r.applied_version,
            last_nack: r.last_nack.unwrap_or_default(),
            last_nack_version: r.last_nack_version.unwrap_or_default(),
            last_seen_unix_ms: r.last_seen,
            healthy,
            uptime_seconds: r.uptime_seconds,
            in_flight: r.in_flight,
            requests_total: r.requests_total,
            errors_total: r.errors_total,
            control_plane: r.control_plane,
            state: n.liveness.as_str().to_owned(),
            connected_since_unix_ms: r.connected_since,
            binary_version: r.binary_version,
        }
    }
}

impl From<&v1::NodeStatus> for Node {
    fn from(n: &v1::NodeStatus) -> Self {
        let liveness = NodeState::parse_liveness(&n.state).unwrap_or(if n.healthy {
            NodeState::Connected
        } else {
            NodeState::Lost
        });
        Node {
            record: NodeRecord {
                id: n.id.clone(),
                group: n.group.clone(),
                labels: n
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                applied_version: n.applied_version,
                last_nack: (!n.last_nack.is_empty()).then(|| n.last_nack.clone()),
                last_nack_version: (!n.last_nack.is_empty()).then_some(n.last_nack_version),
                last_seen: n.last_seen_unix_ms,
                connected_since: n.connected_since_unix_ms,
                binary_version: n.binary_version.clone(),
                uptime_seconds: n.uptime_seconds,
                in_flight: n.in_flight,
                requests_total: n.requests_total,
                errors_total: n.errors_total,
                control_plane: n.control_plane.clone(),
                shadow: Vec::new(),
                upstreams: Vec::new(),
            },
            liveness,
        }
    }
}

/// One node in the JSON that dashboards (`GET /v1/nodes`) and `routemaster get nodes -o
/// json` show: the same shape in both, times in RFC 3339 (UTC).
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub id: String,
    pub group: String,
    pub labels: BTreeMap<String, String>,
    /// `connected | behind | nacked | lost | left`.
    pub state: NodeState,
    pub healthy: bool,
    pub applied_version: u64,
    pub last_nack: Option<String>,
    pub last_nack_version: Option<u64>,
    pub last_seen: String,
    pub connected_since: Option<String>,
    pub binary_version: String,
    pub uptime_seconds: u64,
    pub in_flight: u64,
    pub requests_total: u64,
    pub errors_total: u64,
    pub control_plane: String,
}

/// The envelope around a node list: the configuration version the states are against.
#[derive(Debug, Clone, Serialize)]
pub struct NodesView {
    pub version: u64,
    pub nodes: Vec<NodeView>,
}

impl NodeView {
    pub fn new(node: &Node, version: u64) -> Self {
        let r = &node.record;
        NodeView {
            id: r.id.clone(),
            group: r.group.clone(),
            labels: r.labels.clone(),
            state: node.state(version),
            healthy: node.healthy(),
            applied_version: r.applied_version,
            last_nack: r.last_nack.clone(),
            last_nack_version: r.last_nack_version,
            last_seen: rfc3339(r.last_seen),
            connected_since: (r.connected_since > 0).then(|| rfc3339(r.connected_since)),
            binary_version: r.binary_version.clone(),
            uptime_seconds: r.uptime_seconds,
            in_flight: r.in_flight,
            requests_total: r.requests_total,
            errors_total: r.errors_total,
            control_plane: r.control_plane.clone(),
        }
    }
}

impl NodesView {
    pub fn new(nodes: &[Node], version: u64) -> Self {
        NodesView {
            version,
            nodes: nodes.iter().map(|n| NodeView::new(n, version)).collect(),
        }
    }
}

/// Fleet convergence against `version`: nodes that count (every node but those that
/// left) and those among them serving `version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Convergence {
    pub total: usize,
    pub converged: usize,
    pub lost: usize,
}

pub fn convergence(nodes: &[Node], version: u64) -> Convergence {
    let mut c = Convergence::default();
    for n in nodes {
        match n.state(version) {
            NodeState::Left => continue,
            NodeState::Connected => c.converged += 1,
            NodeState::Lost => c.lost += 1,
            NodeState::Behind | NodeState::Nacked => {}
        }
        c.total += 1;
    }
    c
}

pub use routemaster_common::time::rfc3339_ms as rfc3339;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Debug)]
pub struct Nodes {
    store: Store,
    /// A node not heard from for this long is `lost` (about three health intervals).
    pub ttl: Duration,
    /// A lost node is listed this long after it was last seen, then forgotten.
    pub retention: Duration,
    /// The nodes streaming to this replica right now, by id.
    local: Mutex<HashMap<String, NodeRecord>>,
    /// Woken by every report (the convergence metric re-checks the fleet).
    reported: tokio::sync::Notify,
}

impl Nodes {
    pub fn new(store: Store, ttl: Duration, retention: Duration) -> Self {
        Self {
            store,
            ttl,
            retention,
            local: Mutex::new(HashMap::new()),
            reported: tokio::sync::Notify::new(),
        }
    }

    /// Records `node` (on its stream here) in memory and in etcd.
    pub async fn report(&self, node: &NodeRecord) {
        if let Ok(mut local) = self.local.lock() {
            local.insert(node.id.clone(), node.clone());
        }
        let json = serde_json::to_string(node).unwrap_or_default();
        if let Err(e) = self.store.put_node(&node.id, json).await {
            tracing::debug!(error = %e, node = %node.id, "node status not stored");
        }
        self.reported.notify_waiters();
    }

    /// Resolves at the next [`Nodes::report`] on this replica.
    pub async fn next_report(&self) {
        self.reported.notified().await;
    }

    /// The node's stream here ended. Without a goodbye the record stays in etcd and ages
    /// into `lost` (the node may also be reconnecting to another replica, whose reports
    /// then keep it connected).
    pub fn disconnected(&self, id: &str) {
        if let Ok(mut local) = self.local.lock() {
            local.remove(id);
        }
    }

    /// The node said goodbye, or an operator removed it: forget it everywhere.
    /// Returns whether it was known.
    pub async fn forget(&self, id: &str) -> Result<bool, crate::store::StoreError> {
        let here = self
            .local
            .lock()
            .map(|mut l| l.remove(id).is_some())
            .unwrap_or(false);
        let stored = self.store.delete_node(id).await?;
        Ok(here || stored)
    }

    /// The whole fleet: etcd's records, with this replica's live sessions overriding
    /// theirs (fresher, and still right while etcd is away). Lost nodes past retention
    /// are dropped (and deleted from etcd, best effort).
    pub async fn list(&self) -> Vec<Node> {
        let mut records: BTreeMap<String, NodeRecord> = match self.store.list_nodes().await {
            Ok(values) => values
                .iter()
                .filter_map(|v| serde_json::from_slice::<NodeRecord>(v).ok())
                .map(|r| (r.id.clone(), r))
                .collect(),
            Err(_) => BTreeMap::new(),
        };
        if let Ok(local) = self.local.lock() {
            for (id, r) in local.iter() {
                records.insert(id.clone(), r.clone());
            }
        }
        let now = now_ms();
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let retention = u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX);
        let mut nodes = Vec::with_capacity(records.len());
        for (id, record) in records {
            let silent = now.saturating_sub(record.last_seen);
            if silent > retention {
                if let Err(e) = self.store.delete_node(&id).await {
                    tracing::debug!(error = %e, node = %id, "expired node not deleted");
                }
                continue;
            }
            let liveness = if silent <= ttl {
                NodeState::Connected
            } else {
                NodeState::Lost
            };
            nodes.push(Node { record, liveness });
        }
        nodes
    }

    /// One node by id.
    pub async fn get(&self, id: &str) -> Option<Node> {
        self.list().await.into_iter().find(|n| n.record.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(applied: u64, nack: Option<u64>, liveness: NodeState) -> Node {
        Node {
            record: NodeRecord {
                id: "n".into(),
                applied_version: applied,
                last_nack: nack.map(|_| "bad".into()),
                last_nack_version: nack,
                ..NodeRecord::default()
            },
            liveness,
        }
    }

    #[test]
    fn states_against_the_current_version() {
        use NodeState::*;
        // (applied, nacked version, liveness, state at version 10)
        let cases = [
            (10, None, Connected, Connected),
            (11, None, Connected, Connected),
            (9, None, Connected, Behind),
            (9, Some(10), Connected, Nacked),
            (10, Some(11), Connected, Nacked),
            (9, Some(8), Connected, Behind),
            (10, Some(9), Connected, Connected),
            (10, None, Lost, Lost),
            (9, None, Left, Left),
        ];
        for (applied, nack, liveness, want) in cases {
            assert_eq!(
                node(applied, nack, liveness).state(10),
                want,
                "{applied} {nack:?} {liveness:?}"
            );
        }
    }

    #[test]
    fn lost_nodes_count_against_convergence_and_left_ones_do_not() {
        let nodes = [
            node(10, None, NodeState::Connected),
            node(9, None, NodeState::Connected),
            node(10, None, NodeState::Lost),
            node(10, None, NodeState::Left),
        ];
        assert_eq!(
            convergence(&nodes, 10),
            Convergence {
                total: 3,
                converged: 1,
                lost: 1
            }
        );
    }

    #[test]
    fn the_proto_round_trip_keeps_the_state() {
        for liveness in [NodeState::Connected, NodeState::Lost, NodeState::Left] {
            let n = node(3, Some(2), liveness);
            let back = Node::from(&v1::NodeStatus::from(n.clone()));
            assert_eq!(back, n);
        }
    }
}
