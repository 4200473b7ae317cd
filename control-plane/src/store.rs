//! etcd as the only source of truth. Key layout (under `--prefix`, default `/routemaster`):
//!
//! - `{prefix}/config/services/{name}` — JSON of the service, same fields as the route file
//! - `{prefix}/config/routes/{id}`     — JSON of the route, same fields as the route file
//! - `{prefix}/config/certificates/{name}` — JSON of a `tls.certificates[]` entry, same
//!   fields as the route file (inline `key_pem` included: etcd holds the key, so access
//!   to etcd is access to the keys; `cert_file`/`key_file` entries hold only paths)
//! - `{prefix}/config/instances/{service}/{id}` — JSON of a registered instance
//!   (`RegistrationSpec`), attached to its own lease: lease expiry deletes it (see
//!   [`leases`])
//! - `{prefix}/config/meta`            — written by every change, so its `mod_revision` is the
//!   revision of the last write (deletes included) and doubles as the write fence
//! - `{prefix}/nodes/{node-id}`        — JSON node status (no lease; see `nodes`)
//!
//! Snapshot version = the largest `mod_revision` under `{prefix}/config/`, which every
//! replica computes identically from the same etcd.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions,
    Txn, TxnOp, WatchOptions, WatchStream,
};
use routemaster_common::registry::RegistrationSpec;
use routemaster_common::spec::{CertificateSpec, RouteSpec, ServiceSpec};

use crate::metrics::Metrics;

pub mod leases;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd is unreachable ({0})")]
    Unavailable(#[source] etcd_client::Error),
    /// etcd answered but refused the request (e.g. a batch above `--max-txn-ops` or
    /// `--max-request-bytes`).
    #[error("etcd refused the request: {0}")]
    Rejected(String),
    #[error("etcd data under {key} is not valid: {reason}")]
    Corrupt { key: String, reason: String },
}

impl From<etcd_client::Error> for StoreError {
    fn from(e: etcd_client::Error) -> Self {
        use tonic::Code;
        match &e {
            etcd_client::Error::GRpcStatus(status)
                if matches!(
                    status.code(),
                    Code::InvalidArgument | Code::FailedPrecondition | Code::ResourceExhausted
                ) =>
            {
                StoreError::Rejected(status.message().to_owned())
            }
            _ => StoreError::Unavailable(e),
        }
    }
}

/// Everything under `{prefix}/config/` at one revision.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// The store revision the read was made at.
    pub revision: i64,
    /// Revision of the last configuration write (the snapshot version).
    pub version: i64,
    /// `mod_revision` of the meta key (0 when absent): the write fence.
    pub meta_revision: i64,
    pub services: BTreeMap<String, ServiceSpec>,
    pub routes: BTreeMap<String, RouteSpec>,
    pub certificates: BTreeMap<String, CertificateSpec>,
    /// Registered instances: service → id → registration.
    pub registered: BTreeMap<String, BTreeMap<String, StoredRegistration>>,
}

/// A registered instance as stored: its body and the lease it is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRegistration {
    pub spec: RegistrationSpec,
    pub lease: i64,
}

/// One decoded configuration change from the watch.
#[derive(Debug)]
pub enum Change {
    PutService(ServiceSpec),
    PutRoute(Box<RouteSpec>),
    DeleteService(String),
    DeleteRoute(String),
    PutCertificate(Box<CertificateSpec>),
    DeleteCertificate(String),
    PutInstance {
        service: String,
        id: String,
        registration: StoredRegistration,
    },
    /// A registered instance deregistered, or its lease expired (then no write of ours
    /// touched the meta key in the same revision).
    DeleteInstance {
        service: String,
        id: String,
    },
    Meta,
}

/// One etcd client per endpoint, not one balanced over all of them: tonic's balancer
/// keeps picking an endpoint whose connection is refused, so with one member of three
/// dead about half the requests failed. Requests go to the endpoint that last answered
/// and move on to the next when that one is unreachable.
#[derive(Clone)]
pub struct Store {
    clients: Arc<[Client]>,
    /// Index into `clients` of the endpoint to try first.
    preferred: Arc<AtomicUsize>,
    prefix: String,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .finish()
    }
}

enum Key<'a> {
    Service(&'a str),
    Route(&'a str),
    Certificate(&'a str),
    Instance(&'a str, &'a str),
    Meta,
    Other,
}

impl Store {
    /// Connects lazily (etcd may be down at start); `require_leader` makes a watch on a
    /// member cut off from the quorum fail instead of hanging.
    /// Every request is timed and counted in `metrics`.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let mut clients = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            clients.push(Client::connect([endpoint], Some(options.clone())).await?);
        }
        if clients.is_empty() {
            return Err(StoreError::Rejected("no etcd endpoints given".into()));
        }
        Ok(Self {
            clients: clients.into(),
            preferred: Arc::new(AtomicUsize::new(0)),
            prefix: prefix.trim_end_matches('/').to_owned(),
            metrics,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Runs `op` on the preferred endpoint's client, then on each other one in turn
    /// while the answer is "unreachable" (connection refused, no leader, timeout). Safe
    /// for every request we make: reads and lease calls are idempotent, and the write
    /// transaction is fenced (a retry of one that had landed fails the fence and the
    /// caller re-reads).
    /// `operation` names the request in the metrics (time covers the failover too).
    async fn call<T, F, Fut>(&self, operation: &str, op: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let start = std::time::Instant::now();
        let result = self.call_any(op).await;
        let error = match &result {
            Ok(_) => None,
            Err(StoreError::Unavailable(_)) => Some("unavailable"),
            Err(StoreError::Rejected(_)) => Some("rejected"),
            Err(StoreError::Corrupt { .. }) => Some("corrupt"),
        };
        self.metrics.etcd_request(operation, start.elapsed(), error);
        result
    }

    async fn call_any<T, F, Fut>(&self, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.clients.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut last = None;
        for i in 0..n {
            let at = (first + i) % n;
            match op(self.clients[at].clone()).await.map_err(StoreError::from) {
                Ok(v) => {
                    if i > 0 {
                        self.preferred.store(at, Ordering::Relaxed);
                    }
                    return Ok(v);
                }
                Err(e @ StoreError::Unavailable(_)) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| StoreError::Rejected("no etcd endpoints".into())))
    }

    fn config_prefix(&self) -> String {
        format!("{}/config/", self.prefix)
    }
    fn meta_key(&self) -> String {
        format!("{}/config/meta", self.prefix)
    }
    pub fn service_key(&self, name: &str) -> String {
        format!("{}/config/services/{name}", self.prefix)
    }
    pub fn route_key(&self, id: &str) -> String {
        format!("{}/config/routes/{id}", self.prefix)
    }
    pub fn certificate_key(&self, name: &str) -> String {
        format!("{}/config/certificates/{name}", self.prefix)
    }
    fn nodes_prefix(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }
    pub fn node_key(&self, id: &str) -> String {
        format!("{}/nodes/{id}", self.prefix)
    }

    fn classify<'a>(&self, key: &'a str) -> Key<'a> {
        let Some(rest) = key.strip_prefix(&self.prefix) else {
            return Key::Other;
        };
        if rest == "/config/meta" {
            Key::Meta
        } else if let Some(name) = rest.strip_prefix("/config/services/") {
            Key::Service(name)
        } else if let Some(id) = rest.strip_prefix("/config/routes/") {
            Key::Route(id)
        } else if let Some(name) = rest.strip_prefix("/config/certificates/") {
            Key::Certificate(name)
        } else if let Some((service, id)) = rest
            .strip_prefix("/config/instances/")
            .and_then(|r| r.split_once('/'))
        {
            Key::Instance(service, id)
        } else {
            Key::Other
        }
    }

    /// Reads the whole configuration at one revision.
    pub async fn load(&self) -> Result<Stored, StoreError> {
        let prefix = self.config_prefix();
        let resp = self
            .call("load", |mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let mut stored = Stored {
            revision: resp.header().map_or(0, |h| h.revision()),
            ..Stored::default()
        };
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            stored.version = stored.version.max(kv.mod_revision());
            match self.classify(&key) {
                Key::Service(_) => {
                    let spec: ServiceSpec = decode(&key, kv.value())?;
                    stored.services.insert(spec.name.clone(), spec);
                }
                Key::Route(_) => {
                    let spec: RouteSpec = decode(&key, kv.value())?;
                    stored.routes.insert(spec.id.clone(), spec);
                }
                Key::Certificate(_) => {
                    let spec: CertificateSpec = decode(&key, kv.value())?;
                    stored.certificates.insert(spec.name.clone(), spec);
                }
                Key::Instance(service, id) => {
                    let spec: RegistrationSpec = decode(&key, kv.value())?;
                    stored
                        .registered
                        .entry(service.to_owned())
                        .or_default()
                        .insert(
                            id.to_owned(),
                            StoredRegistration {
                                spec,
                                lease: kv.lease(),
                            },
                        );
                }
                Key::Meta => stored.meta_revision = kv.mod_revision(),
                Key::Other => {}
            }
        }
        Ok(stored)
    }

    /// The configuration version etcd is at now: the `mod_revision` of the meta key, which
    /// every configuration write rewrites (0 before the first write). One key, one
    /// linearizable read, so a replica can tell whether its catalog has every write etcd
    /// has acknowledged — node records, which bump etcd's revision but not the
    /// configuration, do not count.
    pub async fn config_version(&self) -> Result<i64, StoreError> {
        let meta = self.meta_key();
        let resp = self
            .call("config_version", |mut c| {
                let meta = meta.clone();
                async move { c.get(meta, Some(GetOptions::new().with_keys_only())).await }
            })
            .await?;
        Ok(resp.kvs().first().map_or(0, |kv| kv.mod_revision()))
    }

    /// Writes `puts` and `deletes` in one transaction, fenced on the meta key: it lands
    /// only if no other write happened since `meta_revision` was read. `Ok(None)` means
    /// someone else wrote first (re-read and retry).
    pub async fn commit(
        &self,
        meta_revision: i64,
        puts: Vec<(String, String)>,
        deletes: Vec<String>,
    ) -> Result<Option<i64>, StoreError> {
        let ops = puts
            .into_iter()
            .map(|(k, v)| TxnOp::put(k, v, None))
            .collect();
        self.commit_ops(meta_revision, ops, deletes).await
    }

    /// `ops`, then `deletes`, then the meta key's rewrite, in one transaction fenced on
    /// the meta key (the body of [`Store::commit`] and `commit_leased`).
    pub(crate) async fn commit_ops(
        &self,
        meta_revision: i64,
        mut ops: Vec<TxnOp>,
        deletes: Vec<String>,
    ) -> Result<Option<i64>, StoreError> {
        let meta = self.meta_key();
        ops.extend(deletes.into_iter().map(|k| TxnOp::delete(k, None)));
        ops.push(TxnOp::put(meta.clone(), "{}", None));
        let txn = Txn::new()
            .when([Compare::mod_revision(meta, CompareOp::Equal, meta_revision)])
            .and_then(ops);
        let resp = self
            .call("txn", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map_or(0, |h| h.revision())))
    }

    /// Watches configuration keys from `revision` (inclusive).
    pub async fn watch(&self, revision: i64) -> Result<WatchStream, StoreError> {
        let prefix = self.config_prefix();
        self.call("watch", |mut c| {
            let prefix = prefix.clone();
            async move {
                c.watch(
                    prefix,
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(revision),
                    ),
                )
                .await
            }
        })
        .await
    }

    /// Decodes one watch event. Returns the change and its revision.
    pub fn decode_event(&self, event: &etcd_client::Event) -> Result<(Change, i64), StoreError> {
        let Some(kv) = event.kv() else {
            return Ok((Change::Meta, 0));
        };
        let key = String::from_utf8_lossy(kv.key());
        let rev = kv.mod_revision();
        let change = match (event.event_type(), self.classify(&key)) {
            (EventType::Put, Key::Service(_)) => Change::PutService(decode(&key, kv.value())?),
            (EventType::Put, Key::Route(_)) => {
                Change::PutRoute(Box::new(decode(&key, kv.value())?))
            }
            (EventType::Delete, Key::Service(name)) => Change::DeleteService(name.to_owned()),
            (EventType::Delete, Key::Route(id)) => Change::DeleteRoute(id.to_owned()),
            (EventType::Put, Key::Certificate(_)) => {
                Change::PutCertificate(Box::new(decode(&key, kv.value())?))
            }
            (EventType::Delete, Key::Certificate(name)) => {
                Change::DeleteCertificate(name.to_owned())
            }
            (EventType::Put, Key::Instance(service, id)) => Change::PutInstance {
                service: service.to_owned(),
                id: id.to_owned(),
                registration: StoredRegistration {
                    spec: decode(&key, kv.value())?,
                    lease: kv.lease(),
                },
            },
            (EventType::Delete, Key::Instance(service, id)) => Change::DeleteInstance {
                service: service.to_owned(),
                id: id.to_owned(),
            },
            _ => Change::Meta,
        };
        Ok((change, rev))
    }

    // ---- node status ----

    /// Stores a node's status (no lease: a node's liveness is judged from its
    /// `last_seen`, so an etcd outage cannot expire it).
    pub async fn put_node(&self, id: &str, json: String) -> Result<(), StoreError> {
        let key = self.node_key(id);
        self.call("put_node", |mut c| {
            let (key, json) = (key.clone(), json.clone());
            async move { c.put(key, json, None::<PutOptions>).await }
        })
        .await?;
        Ok(())
    }

    /// Deletes a node's status; whether there was one.
    pub async fn delete_node(&self, id: &str) -> Result<bool, StoreError> {
        let key = self.node_key(id);
        let resp = self
            .call("delete_node", |mut c| {
                let key = key.clone();
                async move { c.delete(key, None::<DeleteOptions>).await }
            })
            .await?;
        Ok(resp.deleted() > 0)
    }

    /// Raw JSON values of every node status in etcd.
    pub async fn list_nodes(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let prefix = self.nodes_prefix();
        let resp = self
            .call("list_nodes", |mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        Ok(resp.kvs().iter().map(|kv| kv.value().to_vec()).collect())
    }
}

/// How an object is stored: its normalised spec as JSON, with the route file's field
/// names.
pub fn encode<T: serde::Serialize>(value: &T) -> String {
    // Plain structs of strings and numbers always serialise.
    serde_json::to_string(value).unwrap_or_default()
}

/// Reads back what [`encode`] stored under `key`.
pub fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}
