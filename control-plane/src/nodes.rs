//! Proxy node status: kept in etcd under a per-node lease (so every replica's status API
//! shows the whole fleet and dead nodes disappear when their lease expires), with a local
//! copy of this replica's own nodes for when etcd is unreachable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::store::Store;

/// One proxy as the status API shows it (`GET /v1/nodes`).
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
    #[serde(default)]
    pub healthy: bool,
    pub uptime_seconds: u64,
    pub in_flight: u64,
    pub requests_total: u64,
    pub errors_total: u64,
    /// The control-plane replica the node is connected to.
    pub control_plane: String,
}

impl From<&routemaster_proto::v1::NodeStatus> for NodeRecord {
    fn from(n: &routemaster_proto::v1::NodeStatus) -> Self {
        NodeRecord {
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
            healthy: n.healthy,
            uptime_seconds: n.uptime_seconds,
            in_flight: n.in_flight,
            requests_total: n.requests_total,
            errors_total: n.errors_total,
            control_plane: n.control_plane.clone(),
        }
    }
}

impl From<NodeRecord> for routemaster_proto::v1::NodeStatus {
    fn from(n: NodeRecord) -> Self {
        routemaster_proto::v1::NodeStatus {
            id: n.id,
            group: n.group,
            labels: n.labels.into_iter().collect(),
            applied_version: n.applied_version,
            last_nack: n.last_nack.unwrap_or_default(),
            last_nack_version: n.last_nack_version.unwrap_or_default(),
            last_seen_unix_ms: n.last_seen,
            healthy: n.healthy,
            uptime_seconds: n.uptime_seconds,
            in_flight: n.in_flight,
            requests_total: n.requests_total,
            errors_total: n.errors_total,
            control_plane: n.control_plane,
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug)]
pub struct Nodes {
    store: Store,
    /// Node TTL: about three health intervals.
    pub ttl: Duration,
    local: Mutex<HashMap<String, NodeRecord>>,
}

impl Nodes {
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            local: Mutex::new(HashMap::new()),
        }
    }

    /// Records `node` locally and in etcd (granting its lease on first success).
    pub async fn report(&self, node: &NodeRecord, lease: &mut Option<i64>) {
        if let Ok(mut local) = self.local.lock() {
            local.insert(node.id.clone(), node.clone());
        }
        if lease.is_none() {
            *lease = self.store.grant_lease(self.ttl).await.ok();
        } else if let Some(id) = *lease
            && self.store.keep_alive(id).await.is_err()
        {
            // Expired (etcd was away longer than the TTL) or unreachable: start over.
            *lease = self.store.grant_lease(self.ttl).await.ok();
        }
        if let Some(id) = *lease {
            let json = serde_json::to_string(node).unwrap_or_default();
            if let Err(e) = self.store.put_node(&node.id, json, id).await {
                tracing::debug!(error = %e, node = %node.id, "node status not stored");
            }
        }
    }

    /// The node's stream ended: forget it here and in etcd.
    pub async fn remove(&self, id: &str, lease: Option<i64>) {
        if let Ok(mut local) = self.local.lock() {
            local.remove(id);
        }
        let result = match lease {
            Some(lease) => self.store.revoke(lease).await,
            None => self.store.delete_node(id).await,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, node = id, "node status not removed (its lease will expire)");
        }
    }

    /// The whole fleet from etcd, or this replica's nodes when etcd is unreachable;
    /// `healthy` is recomputed from `last_seen`.
    pub async fn list(&self) -> Vec<NodeRecord> {
        let mut nodes: Vec<NodeRecord> = match self.store.list_nodes().await {
            Ok(values) => values
                .iter()
                .filter_map(|v| serde_json::from_slice(v).ok())
                .collect(),
            Err(_) => self
                .local
                .lock()
                .map(|l| l.values().cloned().collect())
                .unwrap_or_default(),
        };
        let now = now_ms();
        let ttl = self.ttl.as_millis() as u64;
        for n in &mut nodes {
            n.healthy = now.saturating_sub(n.last_seen) <= ttl;
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes
    }
}
