//! The control plane's core: the one write path ([`Controller::dispatch`]) and the one
//! read path (the etcd watch loop that publishes [`Catalog`]s).
//!
//! Writes never touch the in-memory catalog: they validate against a fresh read of
//! etcd and commit one fenced transaction. Every replica — this one included — then
//! learns of the change from its watch, so all replicas publish the same versions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use routemaster_common::spec::{CertificateSpec, ConfigSpec, RouteSpec, ServiceSpec, TlsSpec};
use routemaster_common::{Config, ValidationErrors};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::catalog::Catalog;
use crate::metrics::Metrics;
use crate::store::{Change, Store, StoreError, Stored, StoredRegistration, encode};

/// A write, as the admin API receives it.
#[derive(Debug, Clone)]
pub enum Command {
    Apply {
        services: Vec<ServiceSpec>,
        routes: Vec<RouteSpec>,
        /// `tls.certificates`; a `key_pem` of [`routemaster_common::tls::REDACTED`]
        /// (what `get -o yaml` prints) keeps the stored certificate's key.
        certificates: Vec<CertificateSpec>,
        dry_run: bool,
    },
    DeleteService(String),
    DeleteRoute(String),
    DeleteCertificate(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Service,
    Route,
    Certificate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Updated,
    Unchanged,
    Deleted,
}

#[derive(Debug, Clone)]
pub struct ObjectChange {
    pub kind: Kind,
    pub name: String,
    pub change: ChangeKind,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub changes: Vec<ObjectChange>,
    /// The version after the write (the current one for dry runs and no-ops).
    pub version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error(
        "service {service:?} is used by {}; delete or change {} first",
        routes_named(.routes),
        if .routes.len() == 1 { "it" } else { "them" }
    )]
    InUse {
        service: String,
        /// Every route that uses it, by id.
        routes: Vec<String>,
    },
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} is declared twice in one apply")]
    Duplicate { kind: &'static str, name: String },
    #[error("etcd is unreachable; writes are refused until it is back (reads still work)")]
    Unavailable(#[source] StoreError),
    #[error(
        "{0}; apply fewer objects at a time, or raise etcd's --max-txn-ops / --max-request-bytes"
    )]
    TooLarge(String),
    #[error("too many concurrent writes; try again")]
    Contended,
}

/// `route "a"` / `routes "a", "b"`.
fn routes_named(ids: &[String]) -> String {
    let quoted: Vec<String> = ids.iter().map(|id| format!("{id:?}")).collect();
    match quoted.len() {
        1 => format!("route {}", quoted[0]),
        _ => format!("routes {}", quoted.join(", ")),
    }
}

impl DispatchError {
    /// The `result` label of `routemaster_control_writes_total`.
    pub fn result_label(&self) -> &'static str {
        match self {
            DispatchError::Invalid(_) | DispatchError::Duplicate { .. } => "invalid",
            DispatchError::InUse { .. } => "in_use",
            DispatchError::NotFound { .. } => "not_found",
            DispatchError::Unavailable(_) => "unavailable",
            DispatchError::TooLarge(_) => "too_large",
            DispatchError::Contended => "contended",
        }
    }
}

impl From<StoreError> for DispatchError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(reason) => {
                DispatchError::TooLarge(format!("etcd refused the write: {reason}"))
            }
            other => DispatchError::Unavailable(other),
        }
    }
}

/// How long a read waits for this replica to catch up with etcd, and a write for its own
/// revision to reach this replica's catalog, before answering anyway.
pub const CATCH_UP: Duration = Duration::from_secs(5);

const ETCD_AWAY: &str = "etcd is unreachable; this is the control plane's last known configuration";

/// Whether an answer includes every write etcd had acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    Current,
    /// It may not; why.
    Stale(String),
}

impl Freshness {
    /// The `stale_reason` of the admin API (empty when current).
    pub fn reason(&self) -> String {
        match self {
            Freshness::Current => String::new(),
            Freshness::Stale(why) => why.clone(),
        }
    }
}

/// One version this replica published: when, and which objects changed (as the watch
/// saw them; a full reload lists none).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Published {
    pub version: u64,
    /// RFC 3339, UTC.
    pub published_at: String,
    /// `true` for a full load (start, or after the watch was lost), which lists no changes.
    pub reload: bool,
    pub routes: usize,
    pub services: usize,
    /// At most [`MAX_CHANGES_LISTED`]; `more` counts the rest.
    pub changes: Vec<ObjectEvent>,
    pub more: usize,
}

/// One object write seen by the watch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectEvent {
    /// `service`, `route`, `certificate` or `instance` (a registered one, named
    /// `service/id`).
    pub kind: &'static str,
    pub name: String,
    /// `created`, `updated` or `deleted`; `expired` for an instance whose lease ran out.
    pub change: &'static str,
}

/// Versions kept for `/v1/changes`.
pub const HISTORY: usize = 20;
/// Object changes listed per version.
pub const MAX_CHANGES_LISTED: usize = 50;

#[derive(Debug)]
pub struct Controller {
    store: Store,
    /// The last [`HISTORY`] published versions, oldest first.
    history: std::sync::Mutex<std::collections::VecDeque<Published>>,
    catalog: watch::Sender<Arc<Catalog>>,
    etcd_connected: AtomicBool,
    /// Coalescing window for bursts of watch events.
    coalesce: Duration,
}

impl Controller {
    pub fn new(store: Store) -> Arc<Self> {
        let (catalog, _) = watch::channel(Arc::new(Catalog::default()));
        Arc::new(Self {
            store,
            catalog,
            etcd_connected: AtomicBool::new(false),
            history: std::sync::Mutex::default(),
            coalesce: Duration::from_millis(5),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Catalog>> {
        self.catalog.subscribe()
    }

    /// Waits until the published catalog is loaded at `version` or later; false if
    /// `deadline` came first.
    pub async fn wait_for_version(&self, version: u64, deadline: Instant) -> bool {
        let mut rx = self.catalog.subscribe();
        let reached = |c: &Arc<Catalog>| c.is_loaded() && c.version >= version;
        matches!(
            tokio::time::timeout_at(deadline, rx.wait_for(reached)).await,
            Ok(Ok(_))
        )
    }

    /// The read barrier: waits (at most `within`) until this replica's catalog has every
    /// configuration write etcd had acknowledged when the call began, whichever replica
    /// made it. etcd's configuration version is one linearizable read of the meta key
    /// (see [`Store::config_version`]); the catalog's version is the last configuration
    /// write it has folded in, so `catalog ≥ etcd's` means nothing acknowledged is missing.
    ///
    /// Reads never fail for want of etcd: when it cannot be asked, or the watch does not
    /// catch up in time, the answer is [`Freshness::Stale`] and the caller serves its last
    /// snapshot, saying so.
    pub async fn catch_up(&self, within: Duration) -> Freshness {
        let start = Instant::now();
        // While etcd is known to be away, ask it only briefly: reads stay fast.
        let ask_for = if self.etcd_connected() {
            within
        } else {
            within.min(Duration::from_secs(1))
        };
        let target =
            match tokio::time::timeout_at(start + ask_for, self.store.config_version()).await {
                Ok(Ok(v)) => v.max(0) as u64,
                Ok(Err(_)) | Err(_) => return Freshness::Stale(ETCD_AWAY.into()),
            };
        if self.wait_for_version(target, start + within).await {
            Freshness::Current
        } else if !self.etcd_connected() {
            Freshness::Stale(ETCD_AWAY.into())
        } else {
            Freshness::Stale(format!(
                "this replica is still catching up with etcd (at version {}, etcd at {target})",
                self.catalog().version
            ))
        }
    }

    pub fn etcd_connected(&self) -> bool {
        self.etcd_connected.load(Ordering::Relaxed)
    }

    fn set_connected(&self, up: bool) {
        if self.etcd_connected.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("etcd connected");
            } else {
                tracing::warn!("etcd unreachable; serving the last snapshot, refusing writes");
            }
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        self.store.metrics()
    }

    /// The configuration versions this replica published most recently, newest first.
    pub fn recent_changes(&self) -> Vec<Published> {
        self.history
            .lock()
            .map(|h| h.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// The single write path: validate against a fresh read, then one fenced etcd
    /// transaction (retried if another writer got in between). Counted in
    /// `routemaster_control_writes_total` by operation and result.
    pub async fn dispatch(&self, command: Command) -> Result<Outcome, DispatchError> {
        let operation = match &command {
            Command::Apply { dry_run: true, .. } => "dry_run",
            Command::Apply { .. } => "apply",
            Command::DeleteService(_) | Command::DeleteRoute(_) | Command::DeleteCertificate(_) => {
                "delete"
            }
        };
        let result = self.dispatch_once(command).await;
        let label = match &result {
            Ok(o) if o.changes.iter().all(|c| c.change == ChangeKind::Unchanged) => "unchanged",
            Ok(_) => "ok",
            Err(e) => e.result_label(),
        };
        self.metrics()
            .writes
            .with_label_values(&[operation, label])
            .inc();
        result
    }

    async fn dispatch_once(&self, command: Command) -> Result<Outcome, DispatchError> {
        for _ in 0..5 {
            let stored = match self.store.load().await {
                Ok(s) => s,
                Err(e) => {
                    if matches!(e, StoreError::Unavailable(_)) {
                        self.set_connected(false);
                    }
                    return Err(e.into());
                }
            };
            let plan = plan(&self.store, &stored, &command)?;
            let dry_run = matches!(command, Command::Apply { dry_run: true, .. });
            let nothing_to_do = plan.puts.is_empty() && plan.deletes.is_empty();
            let version = if dry_run || nothing_to_do {
                stored.version.max(0) as u64
            } else {
                match self
                    .store
                    .commit(stored.meta_revision, plan.puts, plan.deletes)
                    .await?
                {
                    Some(revision) => revision.max(0) as u64,
                    None => continue,
                }
            };
            // Answer once this replica's catalog has the write, so the caller's next read
            // (here, or anywhere: see `catch_up`) sees it.
            if !self
                .wait_for_version(version, Instant::now() + CATCH_UP)
                .await
            {
                tracing::warn!(
                    version,
                    "write committed, but the catalog has not caught up within {CATCH_UP:?}"
                );
            }
            return Ok(Outcome {
                changes: plan.changes,
                version,
            });
        }
        Err(DispatchError::Contended)
    }

    /// Keeps the published catalog in step with etcd until `shutdown`: load at R, watch
    /// from R+1, apply coalesced events; on a compacted or lost watch, reload in full.
    pub async fn run_watch(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        loop {
            if !first {
                self.metrics().watch_restarts.inc();
            }
            first = false;
            tokio::select! {
                result = self.watch_once() => {
                    if let Err(e) = result {
                        self.set_connected(false);
                        tracing::debug!(error = %e, "watch ended; reloading");
                    }
                }
                () = &mut shutdown => return,
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = &mut shutdown => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            if self.etcd_connected() {
                backoff = Duration::from_millis(100);
            }
        }
    }

    /// One load + watch cycle. Returns when the watch dies.
    async fn watch_once(&self) -> Result<(), StoreError> {
        let stored = self.store.load().await?;
        self.set_connected(true);
        let Stored {
            revision,
            version,
            mut services,
            mut routes,
            mut certificates,
            mut registered,
            ..
        } = stored;
        let mut version = version.max(0) as u64;
        self.publish(
            version,
            &services,
            &routes,
            &certificates,
            &registered,
            None,
        );
        let mut stream = self.store.watch(revision + 1).await?;
        loop {
            let Some(resp) = stream.message().await? else {
                return Ok(());
            };
            if resp.canceled() || resp.compact_revision() > 0 {
                tracing::warn!(
                    compact_revision = resp.compact_revision(),
                    "watch cancelled (compacted?); reloading in full"
                );
                return Ok(());
            }
            let mut events = Vec::new();
            let mut expired = None;
            let mut state = (
                &mut services,
                &mut routes,
                &mut certificates,
                &mut registered,
                &mut expired,
            );
            if !self.fold(&resp, &mut version, &mut state, &mut events)? {
                continue; // watch created / progress notifications
            }
            // Coalesce a burst: take whatever else arrives within the window.
            let deadline = tokio::time::Instant::now() + self.coalesce;
            loop {
                match tokio::time::timeout_at(deadline, stream.message()).await {
                    Ok(Ok(Some(more))) => {
                        if more.canceled() || more.compact_revision() > 0 {
                            return Ok(());
                        }
                        self.fold(&more, &mut version, &mut state, &mut events)?;
                    }
                    Ok(Ok(None)) => return Ok(()),
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => break,
                }
            }
            self.publish(
                version,
                &services,
                &routes,
                &certificates,
                &registered,
                Some(events),
            );
            if let Some(revision) = expired {
                self.fence_expiry(revision);
            }
        }
    }

    /// A lease expiry deleted a registered instance at `revision` without touching the
    /// meta key: rewrite it (once, whichever replica is first), so the version is the
    /// meta key's again and every replica computes it alike after a reload.
    fn fence_expiry(&self, revision: i64) {
        let store = self.store.clone();
        tokio::spawn(async move {
            match store.fence_expiry(revision).await {
                Ok(wrote) => tracing::debug!(revision, wrote, "lease expiry fenced"),
                Err(e) => tracing::warn!(error = %e, revision, "lease expiry not fenced"),
            }
        });
    }

    fn fold(
        &self,
        resp: &etcd_client::WatchResponse,
        version: &mut u64,
        (services, routes, certificates, registered, expired): &mut WatchState<'_>,
        events: &mut Vec<ObjectEvent>,
    ) -> Result<bool, StoreError> {
        // A fenced write rewrites the meta key in its own revision; an instance deleted
        // in a revision without one had its lease expire.
        let fenced: std::collections::HashSet<i64> = resp
            .events()
            .iter()
            .filter_map(|e| e.kv())
            .filter(|kv| kv.key().ends_with(&b"/config/meta"[..]))
            .map(|kv| kv.mod_revision())
            .collect();
        let mut note = |kind, name: &str, change| {
            events.push(ObjectEvent {
                kind,
                name: name.to_owned(),
                change,
            });
        };
        let mut changed = false;
        for event in resp.events() {
            let (change, rev) = match self.store.decode_event(event) {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(error = %e, "ignoring an undecodable etcd value");
                    continue;
                }
            };
            *version = (*version).max(rev.max(0) as u64);
            changed = true;
            match change {
                Change::PutService(s) => {
                    let name = s.name.clone();
                    let old = services.insert(name.clone(), s);
                    note("service", &name, put_change(old.is_some()));
                }
                Change::PutRoute(r) => {
                    let id = r.id.clone();
                    let old = routes.insert(id.clone(), *r);
                    note("route", &id, put_change(old.is_some()));
                }
                Change::DeleteService(name) => {
                    if services.remove(&name).is_some() {
                        note("service", &name, "deleted");
                    }
                }
                Change::DeleteRoute(id) => {
                    if routes.remove(&id).is_some() {
                        note("route", &id, "deleted");
                    }
                }
                Change::PutCertificate(c) => {
                    let name = c.name.clone();
                    let old = certificates.insert(name.clone(), *c);
                    note("certificate", &name, put_change(old.is_some()));
                }
                Change::DeleteCertificate(name) => {
                    if certificates.remove(&name).is_some() {
                        note("certificate", &name, "deleted");
                    }
                }
                Change::PutInstance {
                    service,
                    id,
                    registration,
                } => {
                    let name = format!("{service}/{id}");
                    let old = registered
                        .entry(service)
                        .or_default()
                        .insert(id, registration);
                    note("instance", &name, put_change(old.is_some()));
                }
                Change::DeleteInstance { service, id } => {
                    let ids = registered.get_mut(&service);
                    if ids.and_then(|ids| ids.remove(&id)).is_some() {
                        let lapsed = !fenced.contains(&rev);
                        if lapsed {
                            **expired = Some(expired.map_or(rev, |r: i64| r.max(rev)));
                        }
                        let change = if lapsed { "expired" } else { "deleted" };
                        note("instance", &format!("{service}/{id}"), change);
                    }
                    registered.retain(|_, ids| !ids.is_empty());
                }
                Change::Meta => {}
            }
        }
        Ok(changed)
    }

    fn publish(
        &self,
        version: u64,
        services: &BTreeMap<String, ServiceSpec>,
        routes: &BTreeMap<String, RouteSpec>,
        certificates: &BTreeMap<String, CertificateSpec>,
        registered: &Registered,
        events: Option<Vec<ObjectEvent>>,
    ) {
        let (catalog, mut problems) = Catalog::build_with(version, services, routes, registered);
        let (catalog, more) = catalog.with_certificates(certificates);
        problems.extend(more);
        for p in problems {
            tracing::error!(problem = %p, "stored object skipped");
        }
        tracing::info!(
            version,
            routes = catalog.route_count(),
            services = catalog.service_count(),
            "snapshot published"
        );
        let mut changes = events.clone().unwrap_or_default();
        let more = changes.len().saturating_sub(MAX_CHANGES_LISTED);
        changes.truncate(MAX_CHANGES_LISTED);
        let entry = Published {
            version,
            published_at: crate::nodes::rfc3339(crate::nodes::now_ms()),
            reload: events.is_none(),
            routes: catalog.route_count(),
            services: catalog.service_count(),
            changes,
            more,
        };
        if let Ok(mut history) = self.history.lock() {
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(entry);
        }
        self.metrics().versions_published.inc();
        self.catalog.send_replace(Arc::new(catalog));
    }
}

/// Registered instances: service → id → registration.
pub type Registered = BTreeMap<String, BTreeMap<String, StoredRegistration>>;

/// What the watch keeps between versions: services, routes, certificates, registered
/// instances, and the latest revision in which a lease expiry deleted an instance (to
/// fence).
type WatchState<'a> = (
    &'a mut BTreeMap<String, ServiceSpec>,
    &'a mut BTreeMap<String, RouteSpec>,
    &'a mut BTreeMap<String, CertificateSpec>,
    &'a mut Registered,
    &'a mut Option<i64>,
);

fn put_change(existed: bool) -> &'static str {
    if existed { "updated" } else { "created" }
}

/// What a command would write, computed from one consistent read.
struct Plan {
    changes: Vec<ObjectChange>,
    puts: Vec<(String, String)>,
    deletes: Vec<String>,
}

impl Plan {
    /// Deletes the object stored at `key`, recorded as `kind` `name` deleted.
    fn delete(&mut self, kind: Kind, key: String, name: &str) {
        self.deletes.push(key);
        self.changes.push(ObjectChange {
            kind,
            name: name.to_owned(),
            change: ChangeKind::Deleted,
        });
    }
}

fn plan(store: &Store, stored: &Stored, command: &Command) -> Result<Plan, DispatchError> {
    let mut plan = Plan {
        changes: Vec::new(),
        puts: Vec::new(),
        deletes: Vec::new(),
    };
    let mut services = stored.services.clone();
    let mut routes = stored.routes.clone();
    let mut certificates = stored.certificates.clone();
    match command {
        Command::Apply {
            services: new_services,
            routes: new_routes,
            certificates: new_certificates,
            ..
        } => {
            let mut seen = std::collections::HashSet::new();
            for s in new_services {
                if !seen.insert(("service", s.name.as_str())) {
                    return Err(DispatchError::Duplicate {
                        kind: "service",
                        name: s.name.clone(),
                    });
                }
            }
            for r in new_routes {
                if !seen.insert(("route", r.id.as_str())) {
                    return Err(DispatchError::Duplicate {
                        kind: "route",
                        name: r.id.clone(),
                    });
                }
            }
            for c in new_certificates {
                if !seen.insert(("certificate", c.name.as_str())) {
                    return Err(DispatchError::Duplicate {
                        kind: "certificate",
                        name: c.name.clone(),
                    });
                }
            }
            let new_certificates = keep_redacted_keys(new_certificates, &stored.certificates)?;
            // Validate the whole resulting configuration, not just the batch: a route
            // may name a service that already exists, and names must stay unique.
            for s in new_services {
                services.insert(s.name.clone(), s.clone());
            }
            for r in new_routes {
                routes.insert(r.id.clone(), r.clone());
            }
            for c in &new_certificates {
                certificates.insert(c.name.clone(), c.clone());
            }
            let merged = ConfigSpec {
                services: services.values().cloned().collect(),
                routes: routes.values().cloned().collect(),
                tls: (!certificates.is_empty()).then(|| TlsSpec {
                    certificates: certificates.values().cloned().collect(),
                }),
            };
            let config = Config::try_from(merged).map_err(DispatchError::Invalid)?;
            // Compare normalised forms so `weight: 1` and no weight are "unchanged".
            let normal = ConfigSpec::from(&config);
            let normal_services: BTreeMap<&str, &ServiceSpec> = normal
                .services
                .iter()
                .map(|s| (s.name.as_str(), s))
                .collect();
            let normal_routes: BTreeMap<&str, &RouteSpec> =
                normal.routes.iter().map(|r| (r.id.as_str(), r)).collect();
            for s in new_services {
                // Every batch object is in the validated config, so the lookups succeed.
                let Some(&new) = normal_services.get(s.name.as_str()) else {
                    continue;
                };
                let change = classify(stored.services.get(&s.name).map(normalise_service), new);
                record(&mut plan, change, Kind::Service, &s.name, || {
                    (store.service_key(&s.name), encode(new))
                });
            }
            for r in new_routes {
                let Some(&new) = normal_routes.get(r.id.as_str()) else {
                    continue;
                };
                let change = classify(stored.routes.get(&r.id).map(normalise_route), new);
                record(&mut plan, change, Kind::Route, &r.id, || {
                    (store.route_key(&r.id), encode(new))
                });
            }
            let normal_certificates: BTreeMap<&str, CertificateSpec> = config
                .certificates()
                .iter()
                .map(|c| (c.name(), CertificateSpec::from(c)))
                .collect();
            for c in &new_certificates {
                let Some(new) = normal_certificates.get(c.name.as_str()) else {
                    continue;
                };
                let change = classify(
                    stored.certificates.get(&c.name).map(normalise_certificate),
                    new,
                );
                record(&mut plan, change, Kind::Certificate, &c.name, || {
                    (store.certificate_key(&c.name), encode(new))
                });
            }
        }
        Command::DeleteCertificate(name) => {
            if certificates.remove(name).is_none() {
                return Err(DispatchError::NotFound {
                    kind: "certificate",
                    name: name.clone(),
                });
            }
            plan.delete(Kind::Certificate, store.certificate_key(name), name);
        }
        Command::DeleteService(name) => {
            if !services.contains_key(name) {
                return Err(DispatchError::NotFound {
                    kind: "service",
                    name: name.clone(),
                });
            }
            let users: Vec<String> = routes
                .values()
                .filter(|r| {
                    r.forward.as_ref().is_some_and(|f| {
                        f.service.as_deref() == Some(name.as_str())
                            || f.backends.iter().flatten().any(|b| &b.service == name)
                    })
                })
                .map(|r| r.id.clone())
                .collect();
            if !users.is_empty() {
                return Err(DispatchError::InUse {
                    service: name.clone(),
                    routes: users,
                });
            }
            plan.delete(Kind::Service, store.service_key(name), name);
        }
        Command::DeleteRoute(id) => {
            if routes.remove(id).is_none() {
                return Err(DispatchError::NotFound {
                    kind: "route",
                    name: id.clone(),
                });
            }
            plan.delete(Kind::Route, store.route_key(id), id);
        }
    }
    Ok(plan)
}

fn normalise_service(s: &ServiceSpec) -> Option<ServiceSpec> {
    routemaster_common::Service::try_from(s.clone())
        .ok()
        .map(|v| ServiceSpec::from(&v))
}

fn normalise_route(r: &RouteSpec) -> Option<RouteSpec> {
    routemaster_common::Route::try_from(r.clone())
        .ok()
        .map(|v| RouteSpec::from(&v))
}

/// The stored form of a certificate, compared by its validated form (so hosts' case and
/// `default: false` vs none do not count as changes). A stored certificate that no
/// longer validates (expired) compares as changed.
fn normalise_certificate(c: &CertificateSpec) -> Option<CertificateSpec> {
    routemaster_common::tls::Certificate::try_from(c.clone())
        .ok()
        .map(|v| CertificateSpec::from(&v))
}

/// A `key_pem` of [`routemaster_common::tls::REDACTED`] (what `get -o yaml` prints) stands
/// for the stored certificate's key, so a listed certificate re-applies as `unchanged`.
/// Without a stored certificate of that name there is no key to keep: refused, naming it.
fn keep_redacted_keys(
    batch: &[CertificateSpec],
    stored: &BTreeMap<String, CertificateSpec>,
) -> Result<Vec<CertificateSpec>, DispatchError> {
    let mut out = Vec::with_capacity(batch.len());
    let mut errors = Vec::new();
    for c in batch {
        let mut c = c.clone();
        if c.key_pem.as_deref() == Some(routemaster_common::tls::REDACTED) {
            match stored.get(&c.name).and_then(|s| s.key_pem.clone()) {
                Some(key) => c.key_pem = Some(key),
                None => errors.push(routemaster_common::ValidationError {
                    object: routemaster_common::ObjectRef::Certificate(c.name.clone()),
                    field: "key_pem".into(),
                    reason: format!(
                        "{} keeps the stored certificate's inline key, but the control plane stores no certificate {:?} with one; give the key (key_pem or key_file)",
                        routemaster_common::tls::REDACTED,
                        c.name
                    ),
                }),
            }
        }
        out.push(c);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(DispatchError::Invalid(ValidationErrors(errors)))
    }
}

fn classify<T: PartialEq>(old: Option<Option<T>>, new: &T) -> ChangeKind {
    match old {
        None => ChangeKind::Created,
        Some(Some(old)) if &old == new => ChangeKind::Unchanged,
        Some(_) => ChangeKind::Updated,
    }
}

fn record(
    plan: &mut Plan,
    change: ChangeKind,
    kind: Kind,
    name: &str,
    put: impl FnOnce() -> (String, String),
) {
    if change != ChangeKind::Unchanged {
        plan.puts.push(put());
    }
    plan.changes.push(ObjectChange {
        kind,
        name: name.to_owned(),
        change,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redacted_key_keeps_the_stored_inline_key_or_is_refused_by_name() {
        use routemaster_common::tls::REDACTED;
        let cert = |name: &str, key_pem: Option<&str>, key_file: Option<&str>| CertificateSpec {
            name: name.into(),
            hosts: vec!["a.example.test".into()],
            cert_pem: Some("CERT".into()),
            cert_file: None,
            key_pem: key_pem.map(Into::into),
            key_file: key_file.map(Into::into),
            default: None,
        };
        let stored: BTreeMap<String, CertificateSpec> = [
            (
                "inline".to_owned(),
                cert("inline", Some("STORED KEY"), None),
            ),
            ("filed".to_owned(), cert("filed", None, Some("/k.pem"))),
        ]
        .into();
        // (applied, Ok(key_pem it is stored with) | Err(text in the error))
        let cases: [(CertificateSpec, Result<Option<&str>, &str>); 4] = [
            (cert("inline", Some(REDACTED), None), Ok(Some("STORED KEY"))),
            (cert("inline", Some("NEW KEY"), None), Ok(Some("NEW KEY"))),
            (
                cert("filed", Some(REDACTED), None),
                Err(r#"certificate "filed": key_pem: <redacted> keeps the stored"#),
            ),
            (
                cert("fresh", Some(REDACTED), None),
                Err(r#"certificate "fresh": key_pem: "#),
            ),
        ];
        for (applied, want) in cases {
            let got = keep_redacted_keys(std::slice::from_ref(&applied), &stored);
            match (got, want) {
                (Ok(out), Ok(key)) => assert_eq!(out[0].key_pem.as_deref(), key, "{applied:?}"),
                (Err(e), Err(text)) => {
                    let e = e.to_string();
                    assert!(e.contains(text) && e.contains("give the key"), "{e}");
                    assert!(!e.contains("STORED KEY"), "{e}");
                }
                (got, want) => panic!("{applied:?}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn errors_are_in_the_users_terms() {
        let cases = [
            (
                DispatchError::InUse {
                    service: "lms".into(),
                    routes: vec!["a".into()],
                },
                r#"service "lms" is used by route "a"; delete or change it first"#,
            ),
            (
                DispatchError::InUse {
                    service: "lms".into(),
                    routes: vec!["a".into(), "b".into(), "c".into()],
                },
                r#"service "lms" is used by routes "a", "b", "c"; delete or change them first"#,
            ),
            (
                DispatchError::Duplicate {
                    kind: "route",
                    name: "x".into(),
                },
                r#"route "x" is declared twice in one apply"#,
            ),
            (
                DispatchError::from(StoreError::Rejected(
                    "too many operations in txn request".into(),
                )),
                "etcd refused the write: too many operations in txn request; apply fewer objects at a time, or raise etcd's --max-txn-ops / --max-request-bytes",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
            assert!(!want.contains("batch"));
        }
    }
}
