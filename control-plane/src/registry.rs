//! The registry's write path: registrations, heartbeats and deregistrations from the
//! HTTP API (`PUT /v1/services/{svc}/instances/{id}`) and the `Registry` gRPC service,
//! committed the way `apply` is — validated against a fresh read of etcd, one
//! transaction fenced on the meta key, answered once this replica's catalog has it.
//!
//! One task per replica ([`Registrar`]) takes the calls from a queue and commits
//! whatever has queued up as one transaction (group commit, at most [`MAX_BATCH`]
//! calls): a thousand instances registering at once cost a handful of etcd
//! transactions, not a thousand contending for the fence. Each instance still gets a
//! lease of its own (granted concurrently); a renewal of an unchanged registration is a
//! keep-alive and writes nothing, so heartbeats never make a new version.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use routemaster_common::registry::{Registration, RegistrationError, RegistrationSpec};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::controller::{CATCH_UP, ChangeKind, Controller};
use crate::store::leases::Put;
use crate::store::{Store, StoreError, Stored, encode};

/// Calls committed together at most (each is one or two transaction operations; etcd's
/// default `--max-txn-ops` is 128).
pub const MAX_BATCH: usize = 100;
/// Calls waiting for the registry task at most; more are refused (503) rather than
/// queued without bound.
const QUEUE: usize = 4096;
/// Fence conflicts (another writer got in between) a batch retries.
const ATTEMPTS: usize = 10;

/// A registry call.
#[derive(Debug, Clone)]
pub enum RegistryOp {
    Register {
        service: String,
        id: String,
        spec: RegistrationSpec,
    },
    Heartbeat {
        service: String,
        id: String,
    },
    Deregister {
        service: String,
        id: String,
    },
}

impl RegistryOp {
    fn key(&self) -> (&str, &str) {
        match self {
            RegistryOp::Register { service, id, .. }
            | RegistryOp::Heartbeat { service, id }
            | RegistryOp::Deregister { service, id } => (service, id),
        }
    }
}

/// What a call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOutcome {
    pub change: ChangeKind,
    /// The configuration version after the call.
    pub version: u64,
    /// The lease's length.
    pub ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(RegistrationError),
    #[error("service {0:?} not found; instances register with a service that `apply` created")]
    UnknownService(String),
    #[error(
        "instance {id:?} of service {service:?} is not registered (its lease may have expired; register it again)"
    )]
    NotRegistered { service: String, id: String },
    #[error(
        "instance {id:?} of service {service:?}: address: {address} is already instance {holder} of the service"
    )]
    AddressTaken {
        service: String,
        id: String,
        address: String,
        /// `"x"` for a registered one, `static` (from the route file) otherwise.
        holder: String,
    },
    #[error("etcd is unreachable; registrations are refused until it is back ({0})")]
    Unavailable(String),
    #[error("etcd refused the registration: {0}")]
    Rejected(String),
    #[error("too many concurrent registrations; try again")]
    Busy,
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(reason) => RegistryError::Rejected(reason),
            other => RegistryError::Unavailable(other.to_string()),
        }
    }
}

impl RegistryError {
    /// The field an invalid call got wrong, for clients that want it apart.
    pub fn field(&self) -> Option<&str> {
        match self {
            RegistryError::Invalid(e) => Some(e.field()),
            RegistryError::UnknownService(_) => Some("service"),
            RegistryError::NotRegistered { .. } => Some("id"),
            RegistryError::AddressTaken { .. } => Some("address"),
            _ => None,
        }
    }
}

type Reply = oneshot::Sender<Result<RegistryOutcome, RegistryError>>;

/// The registry's write path; cheap to share.
#[derive(Debug)]
pub struct Registrar {
    controller: Arc<Controller>,
    queue: mpsc::Sender<Queued>,
}

/// A call waiting for the registry task, with the lease granted for it on arrival.
type Queued = (RegistryOp, Option<i64>, Reply);

impl Registrar {
    /// Starts the registry task; it ends when `shutdown` resolves.
    pub fn start(
        controller: Arc<Controller>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Arc<Self> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let task = Arc::clone(&controller);
        tokio::spawn(async move {
            tokio::select! {
                () = run(task, rx) => {}
                () = shutdown => {}
            }
        });
        Arc::new(Self { controller, queue })
    }

    pub async fn submit(&self, op: RegistryOp) -> Result<RegistryOutcome, RegistryError> {
        let lease = self.lease_ahead(&op).await;
        let (tx, rx) = oneshot::channel();
        if self.queue.try_send((op, lease, tx)).is_err() {
            if let Some(l) = lease {
                revoke_all(self.controller.store(), vec![l]).await;
            }
            return Err(RegistryError::Busy);
        }
        rx.await.unwrap_or(Err(RegistryError::Busy))
    }

    /// A new instance's lease, granted as its call arrives rather than in its batch:
    /// etcd grants leases one at a time, so a flood of registrations gets its leases
    /// while it is still arriving. Only for a valid registration of a known service
    /// that this replica does not know yet (a renewal keeps its lease); the batch
    /// grants whatever this missed and revokes what it does not use.
    async fn lease_ahead(&self, op: &RegistryOp) -> Option<i64> {
        let RegistryOp::Register { service, id, spec } = op else {
            return None;
        };
        let registration = Registration::new(service, id, spec).ok()?;
        let catalog = self.controller.catalog();
        let known = catalog
            .config
            .as_ref()?
            .services()
            .iter()
            .any(|s| s.name().as_str() == service.as_str());
        let registered = catalog
            .registered(service)
            .iter()
            .any(|(r, _)| r.id() == id);
        if !known || registered {
            return None;
        }
        let ttl = registration.ttl().as_secs() as i64;
        self.controller.store().grant_lease(ttl).await.ok()
    }
}

async fn run(controller: Arc<Controller>, mut rx: mpsc::Receiver<Queued>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let mut ops = Vec::with_capacity(batch.len());
        let mut leases = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for (op, lease, reply) in batch {
            ops.push(op);
            leases.push(lease);
            replies.push(reply);
        }
        let started = Instant::now();
        let results = commit(&controller, &ops, &leases).await;
        tracing::debug!(calls = ops.len(), took = ?started.elapsed(), "registry batch committed");
        // Answer once this replica's catalog has the write (so a read that follows sees
        // it), without holding up the next batch meanwhile.
        let version = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|o| o.version)
            .max();
        let controller = Arc::clone(&controller);
        tokio::spawn(async move {
            if let Some(version) = version
                && !controller
                    .wait_for_version(version, Instant::now() + CATCH_UP)
                    .await
            {
                tracing::warn!(
                    version,
                    "registration committed, but the catalog has not caught up within {CATCH_UP:?}"
                );
            }
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        });
    }
}

/// What one call comes to against one read of etcd.
enum Decision {
    Done(Result<RegistryOutcome, RegistryError>),
    /// Write (or not) and answer with `change` once committed.
    Write {
        change: ChangeKind,
        ttl: Duration,
    },
}

/// Commits `ops` together; one result per op, in order.
async fn commit(
    controller: &Controller,
    ops: &[RegistryOp],
    ahead: &[Option<i64>],
) -> Vec<Result<RegistryOutcome, RegistryError>> {
    let store = controller.store();
    // Leases granted for ops of this batch (on arrival, or here), kept across fence
    // retries; those no op uses are revoked.
    let mut granted: HashMap<usize, i64> = ahead
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.map(|l| (i, l)))
        .collect();
    let mut outcome = None;
    for _ in 0..ATTEMPTS {
        let stored = match store.load().await {
            Ok(s) => s,
            Err(e) => {
                outcome = Some(Err(e));
                break;
            }
        };
        // Renew the leases of the instances this batch touches first: a lease that
        // turns out gone means the instance is (about to be) gone too.
        let dead = renew(store, &stored, ops).await;
        let mut plan = plan(store, &stored, ops, &dead);
        // New leases, concurrently.
        let wanted: Vec<(usize, i64)> = plan
            .new_leases
            .iter()
            .filter(|(i, _)| !granted.contains_key(i))
            .copied()
            .collect();
        let grants = all(wanted.iter().map(|&(_, ttl)| {
            let store = store.clone();
            async move { store.grant_lease(ttl).await }
        }))
        .await;
        let mut failed = None;
        for ((i, _), lease) in wanted.into_iter().zip(grants) {
            match lease {
                Some(Ok(l)) => {
                    granted.insert(i, l);
                }
                Some(Err(e)) => failed = Some(e),
                None => failed = Some(StoreError::Rejected("a lease grant did not finish".into())),
            }
        }
        if let Some(e) = failed {
            outcome = Some(Err(e));
            break;
        }
        let puts: Vec<Put> = plan
            .puts
            .drain(..)
            .map(|(i, key, value, lease)| Put {
                key,
                value,
                lease: lease.or_else(|| granted.get(&i).copied()),
            })
            .collect();
        let version = if puts.is_empty() && plan.deletes.is_empty() {
            Ok(Some(stored.version.max(0) as u64))
        } else {
            store
                .commit_leased(stored.meta_revision, puts, plan.deletes.clone())
                .await
                .map(|r| r.map(|v| v.max(0) as u64))
        };
        match version {
            Ok(None) => continue, // someone else wrote first: re-read
            Err(e) => {
                outcome = Some(Err(e));
                break;
            }
            Ok(Some(version)) => {
                // Leases nobody uses any more: deregistered, replaced, or granted for an
                // op that failed. Revoking one never deletes a key re-attached elsewhere.
                let used: HashSet<usize> = plan.used_new_leases.iter().copied().collect();
                let mut revoke = plan.revoke.clone();
                revoke.extend(
                    granted
                        .iter()
                        .filter(|(i, _)| !used.contains(i))
                        .map(|(_, l)| *l),
                );
                granted.clear();
                revoke_all(store, revoke).await;
                outcome = Some(Ok((version, plan.decisions)));
                break;
            }
        }
    }
    revoke_all(store, granted.into_values().collect()).await;
    match outcome {
        Some(Ok((version, decisions))) => decisions
            .into_iter()
            .map(|d| match d {
                Decision::Done(r) => r,
                Decision::Write { change, ttl } => Ok(RegistryOutcome {
                    change,
                    version,
                    ttl,
                }),
            })
            .collect(),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "registrations refused");
            ops.iter()
                .map(|_| {
                    Err(match &e {
                        StoreError::Rejected(r) => RegistryError::Rejected(r.clone()),
                        other => RegistryError::Unavailable(other.to_string()),
                    })
                })
                .collect()
        }
        None => ops.iter().map(|_| Err(RegistryError::Busy)).collect(),
    }
}

/// Runs `futures` concurrently (each on its own task); their outputs in order, `None`
/// for one whose task did not finish (it panicked).
async fn all<T: Send + 'static>(
    futures: impl IntoIterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<Option<T>> {
    let mut set = tokio::task::JoinSet::new();
    let mut n = 0;
    for (i, f) in futures.into_iter().enumerate() {
        set.spawn(async move { (i, f.await) });
        n += 1;
    }
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, v)) = joined {
            out[i] = Some(v);
        }
    }
    out
}

async fn revoke_all(store: &Store, leases: Vec<i64>) {
    let results = all(leases.into_iter().map(|l| {
        let store = store.clone();
        async move { store.revoke_lease(l).await }
    }))
    .await;
    for r in results.into_iter().flatten() {
        if let Err(e) = r {
            tracing::debug!(error = %e, "lease not revoked (it expires by itself)");
        }
    }
}

/// Keep-alives for every existing registration a call of `ops` names (concurrently):
/// the leases found gone.
async fn renew(store: &Store, stored: &Stored, ops: &[RegistryOp]) -> HashSet<i64> {
    let leases: HashSet<i64> = ops
        .iter()
        .filter(|op| !matches!(op, RegistryOp::Deregister { .. }))
        .filter(|op| stored.services.contains_key(op.key().0))
        .filter_map(|op| {
            let (service, id) = op.key();
            stored.registered.get(service)?.get(id).map(|r| r.lease)
        })
        .collect();
    let results = all(leases.into_iter().map(|l| {
        let store = store.clone();
        async move { (l, store.keep_alive(l).await) }
    }))
    .await;
    results
        .into_iter()
        .flatten()
        .filter_map(|(l, r)| matches!(r, Ok(None)).then_some(l))
        .collect()
}

#[derive(Default)]
struct Plan {
    decisions: Vec<Decision>,
    /// (op index, key, value, existing lease; `None`: the op's new lease).
    puts: Vec<(usize, String, String, Option<i64>)>,
    deletes: Vec<String>,
    /// (op index, ttl seconds) of the ops that need a new lease.
    new_leases: Vec<(usize, i64)>,
    used_new_leases: Vec<usize>,
    /// Leases to revoke once committed.
    revoke: Vec<i64>,
}

/// Decides every op against `stored`, in order (a later op sees an earlier one's
/// effect).
fn plan(store: &Store, stored: &Stored, ops: &[RegistryOp], dead: &HashSet<i64>) -> Plan {
    let mut plan = Plan::default();
    // The registrations as this batch leaves them: service → id → (spec, lease or op
    // index of a new lease).
    let mut state: BTreeMap<String, BTreeMap<String, (RegistrationSpec, Lease)>> = stored
        .registered
        .iter()
        .map(|(s, ids)| {
            let ids = ids
                .iter()
                .filter(|(_, r)| !dead.contains(&r.lease))
                .map(|(id, r)| (id.clone(), (r.spec.clone(), Lease::Existing(r.lease))))
                .collect();
            (s.clone(), ids)
        })
        .collect();
    // Keys written by this batch (the last op on a key decides its value).
    let mut writes: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let decision = match op {
            RegistryOp::Register { service, id, spec } => {
                register(stored, &mut state, &mut plan, i, service, id, spec)
            }
            // A deleted service's registrations are renewed no more: they expire.
            RegistryOp::Heartbeat { service, .. }
                if !stored.services.contains_key(service.as_str()) =>
            {
                Decision::Done(Err(RegistryError::UnknownService(service.clone())))
            }
            RegistryOp::Heartbeat { service, id } => {
                match state.get(service.as_str()).and_then(|m| m.get(id.as_str())) {
                    Some((spec, _)) => Decision::Write {
                        change: ChangeKind::Unchanged,
                        ttl: ttl_of(spec),
                    },
                    None => Decision::Done(Err(RegistryError::NotRegistered {
                        service: service.clone(),
                        id: id.clone(),
                    })),
                }
            }
            RegistryOp::Deregister { service, id } => {
                match state
                    .get_mut(service.as_str())
                    .and_then(|m| m.remove(id.as_str()))
                {
                    Some((spec, lease)) => {
                        if let Lease::Existing(l) = lease {
                            plan.revoke.push(l);
                        }
                        Decision::Write {
                            change: ChangeKind::Deleted,
                            ttl: ttl_of(&spec),
                        }
                    }
                    None => Decision::Done(Err(RegistryError::NotRegistered {
                        service: service.clone(),
                        id: id.clone(),
                    })),
                }
            }
        };
        if matches!(decision, Decision::Write { .. }) {
            let (s, id) = op.key();
            writes.insert((s.to_owned(), id.to_owned()), i);
        }
        plan.decisions.push(decision);
    }
    // Turn the final state of every key the batch wrote into puts and deletes.
    for ((service, id), _) in writes {
        let before = stored.registered.get(&service).and_then(|m| m.get(&id));
        let after = state.get(&service).and_then(|m| m.get(&id));
        let key = store.instance_key(&service, &id);
        match (before, after) {
            (_, Some((spec, lease))) => {
                let unchanged = matches!((before, lease), (Some(b), Lease::Existing(l)) if b.lease == *l && &b.spec == spec);
                if !unchanged {
                    let (existing, new) = match lease {
                        Lease::Existing(l) => (Some(*l), None),
                        Lease::New(i) => (None, Some(*i)),
                    };
                    if let Some(i) = new {
                        plan.used_new_leases.push(i);
                    }
                    let i = new.unwrap_or(usize::MAX);
                    plan.puts.push((i, key, encode(spec), existing));
                }
            }
            (Some(_), None) => plan.deletes.push(key),
            (None, None) => {}
        }
    }
    plan
}

#[derive(Debug, Clone, Copy)]
enum Lease {
    Existing(i64),
    /// The new lease of op `i`.
    New(usize),
}

fn ttl_of(spec: &RegistrationSpec) -> Duration {
    spec.ttl
        .as_deref()
        .and_then(|t| routemaster_common::registry::parse_ttl(t).ok())
        .unwrap_or(routemaster_common::registry::DEFAULT_TTL)
}

fn register(
    stored: &Stored,
    state: &mut BTreeMap<String, BTreeMap<String, (RegistrationSpec, Lease)>>,
    plan: &mut Plan,
    i: usize,
    service: &str,
    id: &str,
    spec: &RegistrationSpec,
) -> Decision {
    let registration = match Registration::new(service, id, spec) {
        Ok(r) => r,
        Err(e) => return Decision::Done(Err(RegistryError::Invalid(e))),
    };
    let Some(static_service) = stored.services.get(service) else {
        return Decision::Done(Err(RegistryError::UnknownService(service.to_owned())));
    };
    let address = registration.instance().address();
    let taken_static = static_service.instances.iter().any(|s| {
        s.address
            .parse::<http::uri::Authority>()
            .is_ok_and(|a| &a == address)
    });
    let taken_by = state.get(service).and_then(|ids| {
        ids.iter().find_map(|(other, (s, _))| {
            (other != id
                && s.address
                    .parse::<http::uri::Authority>()
                    .is_ok_and(|a| &a == address))
            .then(|| format!("{other:?}"))
        })
    });
    if let Some(holder) = taken_by.or_else(|| taken_static.then(|| "static".to_owned())) {
        return Decision::Done(Err(RegistryError::AddressTaken {
            service: service.to_owned(),
            id: id.to_owned(),
            address: address.to_string(),
            holder,
        }));
    }
    let normal = registration.spec();
    let ttl = registration.ttl();
    let ids = state.entry(service.to_owned()).or_default();
    let (change, lease) = match ids.get(id) {
        Some((old, lease)) if ttl_of(old) == ttl => {
            let change = if *old == normal {
                ChangeKind::Unchanged
            } else {
                ChangeKind::Updated
            };
            (change, *lease)
        }
        Some((_, lease)) => {
            if let Lease::Existing(l) = lease {
                plan.revoke.push(*l);
            }
            plan.new_leases.push((i, ttl.as_secs() as i64));
            (ChangeKind::Updated, Lease::New(i))
        }
        None => {
            plan.new_leases.push((i, ttl.as_secs() as i64));
            (ChangeKind::Created, Lease::New(i))
        }
    };
    ids.insert(id.to_owned(), (normal, lease));
    Decision::Write { change, ttl }
}

/// One instance of a service as `get instances` and the HTTP API list it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstanceView {
    /// `static` (the route file's `instances`) or `registered`.
    pub source: &'static str,
    /// Registered only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub address: String,
    pub weight: u32,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Registered only: the lease's length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Registered only: seconds the lease has left (`None` if etcd could not say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<i64>,
}

/// The registered instances of `service` in the published catalog (id order), without
/// the lease lookups of [`instances`]: what `/v1/services` lists beside each service.
pub fn registered_views(controller: &Controller, service: &str) -> Vec<InstanceView> {
    controller
        .catalog()
        .registered(service)
        .iter()
        .map(|(r, _)| registered_view(r, None))
        .collect()
}

fn registered_view(r: &Registration, expires_in_seconds: Option<i64>) -> InstanceView {
    InstanceView {
        source: "registered",
        id: Some(r.id().to_owned()),
        address: r.instance().address().to_string(),
        weight: r.instance().weight(),
        labels: r.instance().labels().clone(),
        ttl: Some(routemaster_common::duration::format(r.ttl())),
        expires_in_seconds,
    }
}

/// How long a listing waits for lease times from etcd before leaving them out.
const LEASE_LOOKUP: Duration = Duration::from_secs(2);

/// Every instance of `service` in the published catalog: static ones first, then the
/// registered ones (id order) with the time their leases have left. `None`: no such
/// service.
pub async fn instances(controller: &Controller, service: &str) -> Option<Vec<InstanceView>> {
    let catalog = controller.catalog();
    let config = catalog.config.as_ref()?;
    let svc = config
        .services()
        .iter()
        .find(|s| s.name().as_str() == service)?;
    let mut out: Vec<InstanceView> = svc
        .instances()
        .iter()
        .map(|i| InstanceView {
            source: "static",
            id: None,
            address: i.address().to_string(),
            weight: i.weight(),
            labels: i.labels().clone(),
            ttl: None,
            expires_in_seconds: None,
        })
        .collect();
    let registered = catalog.registered(service);
    let store = controller.store();
    let lookups = all(registered.iter().map(|&(_, lease)| {
        let store = store.clone();
        async move {
            tokio::time::timeout(LEASE_LOOKUP, store.lease_remaining(lease))
                .await
                .ok()
                .and_then(Result::ok)
        }
    }))
    .await;
    for ((r, _), left) in registered.iter().zip(lookups) {
        // Gone (expired, deletion not seen yet): 0.
        out.push(registered_view(r, left.flatten().map(|l| l.unwrap_or(0))));
    }
    Some(out)
}
