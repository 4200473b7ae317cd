//! The control plane's view of the configuration at one version: validated objects and
//! each group's snapshot message. Immutable; a new version is a new `Catalog`, published
//! to discovery streams, the admin API and the status API through a `watch` channel.
//!
//! Certificates (`tls.certificates`) are not grouped: every group's snapshot carries all
//! of them (a proxy serves TLS for whatever hosts its listener is asked for).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use routemaster_common::registry::{self, Registration};
use routemaster_common::spec::{CertificateSpec, ConfigSpec, RouteSpec, ServiceSpec};
use routemaster_common::{Config, Route, Service};

use crate::controller::Registered;
use routemaster_proto::{EncodedSnapshot, v1};

#[derive(Debug, Default)]
pub struct Catalog {
    /// The etcd revision of the last configuration write; 0 before the first load.
    pub version: u64,
    pub config: Option<Config>,
    /// Each group that has routes → its snapshot (without the version, which is stamped
    /// per send so an unchanged group still hears of every new version).
    groups: HashMap<String, Arc<GroupContent>>,
    /// Registered instances (validated), per service in id order, with their leases.
    /// Not part of `config`: `apply` and `get -o yaml` see only static instances.
    registered: BTreeMap<String, Vec<(Registration, i64)>>,
    /// Each group's snapshot encoded at this version, built by the first stream that
    /// needs it and shared by all the others.
    encoded: std::sync::Mutex<HashMap<String, EncodedSnapshot>>,
    /// Every certificate, as messages with their keys (in every group's snapshot).
    certificates: Vec<v1::Certificate>,
}

/// The routes of one group and the services they use, as messages.
#[derive(Debug, Default)]
pub struct GroupContent {
    pub services: Vec<v1::Service>,
    pub routes: Vec<v1::Route>,
}

impl Catalog {
    /// Builds a catalog from stored specs. Objects that fail validation (only possible
    /// if etcd was edited by hand) are left out and reported, never served.
    pub fn build(
        version: u64,
        services: &BTreeMap<String, ServiceSpec>,
        routes: &BTreeMap<String, RouteSpec>,
    ) -> (Self, Vec<String>) {
        Self::build_with(version, services, routes, &Registered::new())
    }

    /// [`Catalog::build`] with registered instances, which join their services' static
    /// instances in the snapshots (not in `config`). Registrations of services that do
    /// not exist (deleted since) are left out until their leases expire.
    pub fn build_with(
        version: u64,
        services: &BTreeMap<String, ServiceSpec>,
        routes: &BTreeMap<String, RouteSpec>,
        registered: &Registered,
    ) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let services: Vec<Service> = services
            .values()
            .filter_map(|s| {
                Service::try_from(s.clone())
                    .map_err(|e| problems.push(e.to_string()))
                    .ok()
            })
            .collect();
        let known: BTreeSet<&str> = services.iter().map(|s| s.name().as_str()).collect();
        let mut valid_routes = Vec::with_capacity(routes.len());
        for spec in routes.values() {
            match Route::try_from(spec.clone()) {
                Ok(r) if r.services().all(|s| known.contains(s.as_str())) => valid_routes.push(r),
                Ok(r) => problems.push(format!(
                    "route {:?} names an unknown service",
                    r.id().as_str()
                )),
                Err(e) => problems.push(e.to_string()),
            }
        }
        let config = match Config::new(services, valid_routes) {
            Ok(c) => c,
            Err(e) => {
                problems.push(e.to_string());
                Config::empty()
            }
        };
        let registered = validate_registered(&config, registered, &mut problems);
        let groups = group_contents(&config, &registered, &mut problems);
        (
            Self {
                version,
                config: Some(config),
                registered,
                groups,
                encoded: std::sync::Mutex::default(),
                certificates: Vec::new(),
            },
            problems,
        )
    }

    /// The same catalog with the stored certificates: each validated alone, then as a
    /// set; one that fails (etcd edited by hand, or an inline certificate that has
    /// expired since it was applied) is left out and reported, the others served.
    pub fn with_certificates(
        mut self,
        stored: &BTreeMap<String, CertificateSpec>,
    ) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let mut valid = Vec::with_capacity(stored.len());
        for spec in stored.values() {
            match routemaster_common::tls::Certificate::try_from(spec.clone()) {
                Ok(c) => valid.push(c),
                Err(e) => problems.push(e.to_string()),
            }
        }
        if let Some(config) = self.config.take() {
            let fallback = config.clone();
            self.config = Some(match config.with_certificates(valid) {
                Ok(c) => c,
                Err(e) => {
                    problems.push(e.to_string());
                    fallback
                }
            });
        }
        self.certificates = self
            .config
            .as_ref()
            .map(|c| {
                c.certificates()
                    .iter()
                    .map(|c| v1::Certificate::from(&CertificateSpec::from(c)))
                    .collect()
            })
            .unwrap_or_default();
        (self, problems)
    }

    pub fn is_loaded(&self) -> bool {
        self.config.is_some()
    }

    /// The snapshot message for `group` at this version (empty for a group without
    /// routes: such proxies still converge on the version).
    pub fn snapshot(&self, group: &str) -> v1::Snapshot {
        let content = self.groups.get(group).cloned().unwrap_or_default();
        v1::Snapshot {
            version: self.version,
            group: group.to_owned(),
            services: content.services.clone(),
            routes: content.routes.clone(),
            certificates: self.certificates.clone(),
        }
    }

    /// [`Catalog::snapshot`], encoded once per group and version.
    pub fn encoded_snapshot(&self, group: &str) -> EncodedSnapshot {
        self.encoded_snapshot_with(group, |_, _| {})
    }

    /// [`Catalog::encoded_snapshot`], calling `observe(time taken, bytes)` when it
    /// encodes (not when the group's encoding is already cached).
    pub fn encoded_snapshot_with(
        &self,
        group: &str,
        observe: impl FnOnce(std::time::Duration, usize),
    ) -> EncodedSnapshot {
        let encode = || {
            let start = std::time::Instant::now();
            let encoded = EncodedSnapshot::new(&self.snapshot(group));
            observe(start.elapsed(), encoded.len());
            encoded
        };
        let Ok(mut cache) = self.encoded.lock() else {
            // Poisoned only if an encode panicked; encoding afresh is always correct.
            return encode();
        };
        cache.entry(group.to_owned()).or_insert_with(encode).clone()
    }

    /// The configuration as route-file objects with their defaults written out (what
    /// `/v1/routes`, `/v1/services` and `routemaster get -o yaml` show).
    pub fn spec(&self) -> ConfigSpec {
        self.config
            .as_ref()
            .map(ConfigSpec::from)
            .unwrap_or_default()
            .with_defaults()
            // What the status API shows: never a key.
            .redacted()
    }

    /// The registered instances of `service` (id order) with their leases.
    pub fn registered(&self, service: &str) -> &[(Registration, i64)] {
        self.registered.get(service).map_or(&[], Vec::as_slice)
    }

    pub fn route_count(&self) -> usize {
        self.config.as_ref().map_or(0, |c| c.routes().len())
    }

    pub fn service_count(&self) -> usize {
        self.config.as_ref().map_or(0, |c| c.services().len())
    }
}

/// The registrations that validate and whose service exists, per service.
fn validate_registered(
    config: &Config,
    registered: &Registered,
    problems: &mut Vec<String>,
) -> BTreeMap<String, Vec<(Registration, i64)>> {
    let known: BTreeSet<&str> = config
        .services()
        .iter()
        .map(|s| s.name().as_str())
        .collect();
    let mut out = BTreeMap::new();
    for (service, ids) in registered {
        if !known.contains(service.as_str()) {
            continue;
        }
        let valid: Vec<(Registration, i64)> = ids
            .iter()
            .filter_map(|(id, r)| {
                Registration::new(service, id, &r.spec)
                    .map(|reg| (reg, r.lease))
                    .map_err(|e| problems.push(e.to_string()))
                    .ok()
            })
            .collect();
        out.insert(service.clone(), valid);
    }
    out
}

fn group_contents(
    config: &Config,
    registered: &BTreeMap<String, Vec<(Registration, i64)>>,
    problems: &mut Vec<String>,
) -> HashMap<String, Arc<GroupContent>> {
    // Each used service once, with its registered instances, whatever groups use it.
    let mut merged: HashMap<&str, v1::Service> = HashMap::new();
    let mut by_group: BTreeMap<&str, Vec<&Route>> = BTreeMap::new();
    for r in config.routes() {
        by_group.entry(r.group().as_str()).or_default().push(r);
    }
    by_group
        .into_iter()
        .map(|(group, routes)| {
            let used: BTreeSet<&str> = routes
                .iter()
                .flat_map(|r| r.services())
                .map(|n| n.as_str())
                .collect();
            let content = GroupContent {
                services: config
                    .services()
                    .iter()
                    .filter(|s| used.contains(s.name().as_str()))
                    .map(|s| {
                        merged
                            .entry(s.name().as_str())
                            .or_insert_with(|| match registered.get(s.name().as_str()) {
                                Some(regs) if !regs.is_empty() => {
                                    let (with, skipped) =
                                        registry::merge(s, regs.iter().map(|(r, _)| r));
                                    problems.extend(skipped);
                                    v1::Service::from(&with)
                                }
                                _ => v1::Service::from(s),
                            })
                            .clone()
                    })
                    .collect(),
                routes: routes.iter().map(|r| v1::Route::from(*r)).collect(),
            };
            (group.to_owned(), Arc::new(content))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_get_their_routes_and_only_the_services_they_use() {
        let spec = ConfigSpec::from_yaml(
            r#"
services:
  - { name: a, instances: [{ address: "127.0.0.1:1" }] }
  - { name: b, instances: [{ address: "127.0.0.1:2" }] }
routes:
  - { id: r1, forward: { service: a } }
  - { id: r2, group: edge, forward: { service: b } }
"#,
        )
        .unwrap();
        let services = spec
            .services
            .iter()
            .map(|s| (s.name.clone(), s.clone()))
            .collect();
        let routes = spec
            .routes
            .iter()
            .map(|r| (r.id.clone(), r.clone()))
            .collect();
        let (catalog, problems) = Catalog::build(7, &services, &routes);
        assert!(problems.is_empty(), "{problems:?}");
        let edge = catalog.snapshot("edge");
        assert_eq!(edge.version, 7);
        assert_eq!(edge.routes.len(), 1);
        assert_eq!(edge.services.len(), 1);
        assert_eq!(edge.services[0].name, "b");
        let default = catalog.snapshot("default");
        assert_eq!(default.routes[0].id, "r1");
        let empty = catalog.snapshot("nobody");
        assert_eq!((empty.version, empty.routes.len()), (7, 0));
        // The encoded form is the same message, built once and then shared.
        use prost::Message;
        let encoded = catalog.encoded_snapshot("edge");
        let mut wire = Vec::new();
        encoded.encode(&mut wire).unwrap();
        assert_eq!(v1::Snapshot::decode(&wire[..]).unwrap(), edge);
        assert_eq!(catalog.encoded_snapshot("edge"), encoded);
    }

    #[test]
    fn hand_edited_bad_objects_are_left_out() {
        let spec = ConfigSpec::from_yaml(
            "routes:\n  - { id: r1, forward: { service: ghost } }\n  - { id: BAD, forward: { service: ghost } }\n",
        )
        .unwrap();
        let routes = spec
            .routes
            .iter()
            .map(|r| (r.id.clone(), r.clone()))
            .collect();
        let (catalog, problems) = Catalog::build(3, &BTreeMap::new(), &routes);
        assert_eq!(catalog.route_count(), 0);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
