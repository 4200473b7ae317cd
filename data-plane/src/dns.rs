//! DNS discovery (`discovery: dns` instances): one resolver task per name, per proxy,
//! on the main runtime, each looking its `host:port` up every `dns_refresh` (±10 %
//! jitter) and keeping the last good set of addresses in [`Dns`].
//!
//! The request path never sees any of this: when a set changes, [`Dns`] wakes the
//! refresher ([`crate::state::ProxyState::run_dns_refresher`]), which recompiles the
//! current snapshot with the new sets through the one change path
//! ([`crate::state::ProxyState::refresh`]); [`crate::compile`] turns each resolved
//! address into an endpoint (the instance's weight and labels, health keyed by the
//! address so unchanged endpoints keep theirs). A failed or empty lookup keeps the last
//! good set (logged, counted in `routemaster_dns_lookup_failures_total`); until a name
//! has resolved once its instance is served as written (the name resolved at connect
//! time), so a slow first lookup never takes the service away.
//!
//! Lookups go through [`Resolve`]: the system resolver (`tokio::net::lookup_host`) in
//! the proxy, a table in tests.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

/// Resolved sets by the instance's address as written (`host:port`).
pub type Resolved = HashMap<Box<str>, Arc<[SocketAddr]>>;

/// A lookup in progress.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// A name lookup: every address of `host`, with `port`.
pub trait Resolve: Send + Sync + std::fmt::Debug {
    fn lookup<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a>;
}

/// The system resolver (getaddrinfo on a blocking thread: `/etc/hosts`, then DNS).
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// One wanted name: the instance's address as written and how often to look it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedName {
    pub address: http::uri::Authority,
    pub refresh: Duration,
}

/// The `discovery: dns` names of a (localized) configuration, each once (the shortest
/// refresh wins when two instances share a name).
pub fn wanted(config: &routemaster_common::Config) -> Vec<WantedName> {
    use routemaster_common::model::Discovery;
    let mut out: Vec<WantedName> = Vec::new();
    for i in config.services().iter().flat_map(|s| s.instances()) {
        let Discovery::Dns { refresh } = i.discovery() else {
            continue;
        };
        if i.template().is_some() {
            continue;
        }
        match out.iter_mut().find(|w| w.address == *i.address()) {
            Some(w) => w.refresh = w.refresh.min(refresh),
            None => out.push(WantedName {
                address: i.address().clone(),
                refresh,
            }),
        }
    }
    out
}

#[derive(Debug)]
struct Task {
    refresh: Duration,
    /// `None` without a runtime (unit tests).
    handle: Option<tokio::task::AbortHandle>,
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(h) = &self.handle {
            h.abort();
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    resolved: Resolved,
    tasks: HashMap<Box<str>, Task>,
}

/// The resolved sets and the tasks that keep them fresh (one per [`ProxyState`]).
///
/// [`ProxyState`]: crate::state::ProxyState
#[derive(Debug)]
pub struct Dns {
    inner: Mutex<Inner>,
    resolver: Arc<dyn Resolve>,
    /// Bumped on every change of a resolved set.
    generation: AtomicU64,
    changed: Notify,
    /// Lookups that failed or found nothing (the last good set was kept).
    pub failures: AtomicU64,
}

impl Default for Dns {
    fn default() -> Self {
        Self::with_resolver(Arc::new(SystemResolver))
    }
}

impl Dns {
    pub fn with_resolver(resolver: Arc<dyn Resolve>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            resolver,
            generation: AtomicU64::new(0),
            changed: Notify::new(),
            failures: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current sets (for compile) and the generation they belong to.
    pub fn resolved(&self) -> (Resolved, u64) {
        let inner = self.lock();
        (
            inner.resolved.clone(),
            self.generation.load(Ordering::Acquire),
        )
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Waits until a resolved set changed since the last wake-up.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Records a lookup's outcome; true when the set changed. A failure or an empty
    /// answer keeps the last good set.
    pub fn record(&self, address: &str, outcome: std::io::Result<Vec<SocketAddr>>) -> bool {
        let mut addrs = match outcome {
            Ok(addrs) if !addrs.is_empty() => addrs,
            Ok(_) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%address, "DNS lookup found no addresses; keeping the last good set");
                return false;
            }
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%address, %error, "DNS lookup failed; keeping the last good set");
                return false;
            }
        };
        addrs.sort_unstable();
        addrs.dedup();
        let mut inner = self.lock();
        // A name no longer wanted (its task was stopped mid-lookup) is not brought back.
        if !inner.tasks.contains_key(address) {
            return false;
        }
        if inner
            .resolved
            .get(address)
            .is_some_and(|old| **old == *addrs)
        {
            return false;
        }
        tracing::info!(%address, resolved = ?addrs, "DNS discovery: the set changed");
        inner.resolved.insert(address.into(), addrs.into());
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(inner);
        self.changed.notify_one();
        true
    }

    /// After an apply: a task for every wanted name (restarted when its refresh
    /// changed), none for the others, whose sets are forgotten. Without a tokio runtime
    /// (unit tests) no task starts.
    pub fn reconcile(self: &Arc<Self>, wanted: impl Iterator<Item = WantedName>) {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let mut inner = self.lock();
        let mut tasks = HashMap::new();
        for w in wanted {
            let key: Box<str> = w.address.as_str().into();
            if tasks.contains_key(&key) {
                continue;
            }
            match inner.tasks.remove(&key) {
                Some(t) if t.refresh == w.refresh => {
                    tasks.insert(key, t);
                }
                _ => {
                    let handle = runtime.as_ref().map(|rt| {
                        rt.spawn(run(Arc::clone(self), w.address.clone(), w.refresh))
                            .abort_handle()
                    });
                    tasks.insert(
                        key,
                        Task {
                            refresh: w.refresh,
                            handle,
                        },
                    );
                }
            }
        }
        // Dropping the rest aborts their tasks.
        inner.tasks = tasks;
        let Inner { resolved, tasks } = &mut *inner;
        resolved.retain(|k, _| tasks.contains_key(k));
    }

    /// Starts tracking `address` without a task (tests drive [`Dns::record`] by hand).
    #[cfg(test)]
    pub(crate) fn track(&self, address: &str) {
        self.lock().tasks.insert(
            address.into(),
            Task {
                refresh: Duration::from_secs(30),
                handle: None,
            },
        );
    }
}

/// Looks `address` up now and then every `refresh` (±10 %) until aborted.
async fn run(dns: Arc<Dns>, address: http::uri::Authority, refresh: Duration) {
    let host = address.host().to_owned();
    let port = address.port_u16().unwrap_or(80);
    loop {
        let outcome = dns.resolver.lookup(&host, port).await;
        dns.record(address.as_str(), outcome);
        let jitter = 0.9 + 0.2 * fastrand::f64();
        tokio::time::sleep(refresh.mul_f64(jitter)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn a_set_changes_only_on_a_different_good_answer() {
        let dns = Dns::default();
        dns.track("svc.test:80");
        // A lookup's outcome, whether the set changes, the set after it.
        type Step = (std::io::Result<Vec<SocketAddr>>, bool, Vec<&'static str>);
        let steps: Vec<Step> = vec![
            (
                Ok(addrs(&["10.0.0.2:80", "10.0.0.1:80"])),
                true,
                vec!["10.0.0.1:80", "10.0.0.2:80"],
            ),
            // Same set in another order, with a duplicate: no change.
            (
                Ok(addrs(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.1:80"])),
                false,
                vec!["10.0.0.1:80", "10.0.0.2:80"],
            ),
            // A failure and an empty answer keep the last good set.
            (
                Err(std::io::Error::other("SERVFAIL")),
                false,
                vec!["10.0.0.1:80", "10.0.0.2:80"],
            ),
            (Ok(Vec::new()), false, vec!["10.0.0.1:80", "10.0.0.2:80"]),
            (Ok(addrs(&["[::1]:80"])), true, vec!["[::1]:80"]),
        ];
        let mut generation = dns.generation();
        for (k, (outcome, changed, want)) in steps.into_iter().enumerate() {
            assert_eq!(dns.record("svc.test:80", outcome), changed, "step {k}");
            let (resolved, g) = dns.resolved();
            assert_eq!(*resolved["svc.test:80"], *addrs(&want), "step {k}");
            assert_eq!(g != generation, changed, "step {k}");
            generation = g;
        }
        assert_eq!(dns.failures.load(Ordering::Relaxed), 2);
        // An untracked name is never recorded.
        assert!(!dns.record("other.test:80", Ok(addrs(&["10.0.0.9:80"]))));
        assert!(!dns.resolved().0.contains_key("other.test:80"));
    }

    /// Answers from a table the test changes.
    #[derive(Debug, Default)]
    struct Table(Mutex<HashMap<String, Vec<SocketAddr>>>);

    impl Resolve for Table {
        fn lookup<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a> {
            let answer = self
                .0
                .lock()
                .unwrap()
                .get(&format!("{host}:{port}"))
                .cloned();
            Box::pin(async move { answer.ok_or_else(|| std::io::Error::other("no such name")) })
        }
    }

    fn endpoints(state: &crate::state::ProxyState) -> Vec<String> {
        let compiled = state.load().unwrap();
        let cluster = compiled.clusters().find(|c| c.name() == "lms").unwrap();
        cluster
            .endpoints()
            .map(|e| e.authority.to_string())
            .collect()
    }

    fn health_of(
        state: &crate::state::ProxyState,
        endpoint: &str,
    ) -> Arc<crate::health::EndpointHealth> {
        let compiled = state.load().unwrap();
        let cluster = compiled.clusters().find(|c| c.name() == "lms").unwrap();
        let e = cluster
            .endpoints()
            .find(|e| e.authority == endpoint)
            .unwrap();
        Arc::clone(&e.health)
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn resolved_sets_become_endpoints_and_unchanged_ones_keep_their_health() {
        use routemaster_common::snapshot::{Snapshot, Source};
        let yaml = "services:\n  - name: lms\n    instances:\n      - { address: lms.test:8080, weight: 3, discovery: dns, dns_refresh: 1s }\n      - { address: 10.9.9.9:80 }\nroutes:\n  - { id: r, forward: { service: lms } }\n";
        let spec = routemaster_common::spec::ConfigSpec::from_yaml(yaml).unwrap();
        let config = routemaster_common::Config::try_from(spec).unwrap();
        let table = Arc::new(Table::default());
        table.0.lock().unwrap().insert(
            "lms.test:8080".into(),
            addrs(&["10.0.0.2:8080", "10.0.0.1:8080"]),
        );
        let mut state = crate::state::ProxyState::new();
        state.dns = Arc::new(Dns::with_resolver(Arc::clone(&table) as Arc<dyn Resolve>));
        let state = Arc::new(state);
        let refresher = tokio::spawn(Arc::clone(&state).run_dns_refresher());
        state.apply(Arc::new(Snapshot::new(
            1,
            Source::File("r.yaml".into()),
            config,
        )));
        // Before the first lookup: the name as written (resolved at connect time).
        assert_eq!(endpoints(&state), ["lms.test:8080", "10.9.9.9:80"]);

        until("the first lookup", || endpoints(&state).len() == 3).await;
        assert_eq!(
            endpoints(&state),
            ["10.0.0.1:8080", "10.0.0.2:8080", "10.9.9.9:80"]
        );
        let kept = health_of(&state, "10.0.0.1:8080");
        let compiled = state.load().unwrap();
        let weights: Vec<u32> = compiled
            .clusters()
            .find(|c| c.name() == "lms")
            .unwrap()
            .endpoints()
            .map(|e| e.weight())
            .collect();
        assert_eq!(
            weights,
            [3, 3, 1],
            "each address keeps the instance's weight"
        );

        // The next lookup (within 1s ±10 %) finds a changed set.
        table.0.lock().unwrap().insert(
            "lms.test:8080".into(),
            addrs(&["10.0.0.1:8080", "[::1]:8080"]),
        );
        until("the changed set", || {
            endpoints(&state).contains(&"[::1]:8080".to_owned())
        })
        .await;
        assert_eq!(
            endpoints(&state),
            ["10.0.0.1:8080", "[::1]:8080", "10.9.9.9:80"]
        );
        assert!(
            Arc::ptr_eq(&kept, &health_of(&state, "10.0.0.1:8080")),
            "an endpoint still resolved keeps its health state"
        );

        // The name stops resolving: the last good set stays, the failure is counted.
        table.0.lock().unwrap().clear();
        until("a failed lookup", || {
            state.dns.failures.load(Ordering::Relaxed) > 0
        })
        .await;
        assert_eq!(
            endpoints(&state),
            ["10.0.0.1:8080", "[::1]:8080", "10.9.9.9:80"]
        );
        refresher.abort();
    }
}
