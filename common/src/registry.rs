//! Registered instances (service discovery): what an instance says when it registers
//! itself (`PUT /v1/services/{svc}/instances/{id}`, the `Registry` gRPC service,
//! `routemaster register`), its validation, and how registered instances join a
//! service's static ones in the snapshot proxies get.
//!
//! A registration is not part of the route file: `apply -f` owns a service's static
//! `instances` list only, and registered instances live beside it (in etcd, under a
//! lease, see the control plane's `store`). Proxies see one list: static instances
//! first, then registered ones in id order.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration;
use crate::model::{Instance, Service};
use crate::name::Name;
use crate::validate::{MAX_WEIGHT, check_label, parse_address};

/// The shortest lease a registration may ask for.
pub const MIN_TTL: Duration = Duration::from_secs(5);
/// The longest lease a registration may ask for.
pub const MAX_TTL: Duration = Duration::from_secs(300);
/// The lease of a registration that names no `ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// The longest instance id.
pub const MAX_ID_LEN: usize = 128;

/// The body of a registration, as sent over HTTP (JSON) and stored in etcd (with `ttl`
/// written out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationSpec {
    /// `host:port`.
    pub address: String,
    /// 1 to 10000; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// A duration string from 5s to 300s in whole seconds; default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// A validated registration of instance `id` of `service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    service: Name,
    id: String,
    instance: Instance,
    ttl: Duration,
}

/// Every problem with one registration, each naming its field (`address`, `weight`,
/// `labels`, `ttl`, `id`, `service`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationError {
    pub service: String,
    pub id: String,
    /// (field, reason), never empty.
    pub problems: Vec<(String, String)>,
}

impl RegistrationError {
    /// The first field named (for gRPC details and HTTP bodies that want one).
    pub fn field(&self) -> &str {
        self.problems.first().map_or("", |(f, _)| f.as_str())
    }
}

impl fmt::Display for RegistrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "instance {:?} of service {:?}: ", self.id, self.service)?;
        for (i, (field, reason)) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{field}: {reason}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RegistrationError {}

/// Whether `id` is a legal instance id: 1-128 of `A-Z a-z 0-9 . _ : -`, starting with a
/// letter or digit (ids appear in URL paths and etcd keys).
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} must be 1-{MAX_ID_LEN} of A-Z a-z 0-9 . _ : -, starting with a letter or digit"
        ))
    }
}

/// Reads a registration's `ttl`: whole seconds from [`MIN_TTL`] to [`MAX_TTL`].
pub fn parse_ttl(ttl: &str) -> Result<Duration, String> {
    let d = duration::parse(ttl).map_err(|e| e.to_string())?;
    if d.subsec_nanos() != 0 {
        return Err(format!("{ttl:?} is not a whole number of seconds"));
    }
    if d < MIN_TTL || d > MAX_TTL {
        return Err(format!(
            "{ttl:?} is out of range; a lease lasts from {} to {}",
            duration::format(MIN_TTL),
            duration::format(MAX_TTL)
        ));
    }
    Ok(d)
}

impl Registration {
    /// Validates `spec` as instance `id` of `service`, collecting every problem.
    pub fn new(
        service: &str,
        id: &str,
        spec: &RegistrationSpec,
    ) -> Result<Self, RegistrationError> {
        let mut problems: Vec<(String, String)> = Vec::new();
        let mut add = |field: &str, reason: String| problems.push((field.to_owned(), reason));
        let name = Name::new(service)
            .map_err(|e| add("service", format!("{service:?} {e}")))
            .ok();
        if let Err(reason) = check_id(id) {
            add("id", reason);
        }
        let address = parse_address(&spec.address)
            .map_err(|reason| add("address", reason))
            .ok();
        let weight = spec.weight.unwrap_or(1);
        if weight == 0 || weight > MAX_WEIGHT {
            add(
                "weight",
                format!(
                    "{weight} is out of range; expected 1 to {MAX_WEIGHT} (deregister to stop traffic)"
                ),
            );
        }
        for (key, value) in &spec.labels {
            if let Err(reason) = check_label(key, value) {
                add("labels", reason);
            }
        }
        let ttl = match &spec.ttl {
            None => Some(DEFAULT_TTL),
            Some(t) => parse_ttl(t).map_err(|reason| add("ttl", reason)).ok(),
        };
        match (name, address, ttl) {
            (Some(service), Some(address), Some(ttl)) if problems.is_empty() => Ok(Self {
                service,
                id: id.to_owned(),
                instance: Instance {
                    address,
                    weight,
                    labels: spec.labels.clone(),
                    template: None,
                    level: 0,
                    discovery: crate::model::Discovery::Static,
                },
                ttl,
            }),
            _ => Err(RegistrationError {
                service: service.to_owned(),
                id: id.to_owned(),
                problems,
            }),
        }
    }

    pub fn service(&self) -> &Name {
        &self.service
    }
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The instance proxies get.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The normalised body (every field written out), as stored.
    pub fn spec(&self) -> RegistrationSpec {
        RegistrationSpec {
            address: self.instance.address.to_string(),
            weight: Some(self.instance.weight),
            labels: self.instance.labels.clone(),
            ttl: Some(duration::format(self.ttl)),
        }
    }
}

/// `service` with `registered` appended to its static instances, in the order given.
/// A registered instance whose address a static one (or an earlier registration)
/// already has is left out and reported: one address is one endpoint.
pub fn merge<'a>(
    service: &Service,
    registered: impl IntoIterator<Item = &'a Registration>,
) -> (Service, Vec<String>) {
    let mut merged = service.clone();
    let mut seen: HashSet<http::uri::Authority> = service
        .instances
        .iter()
        .map(|i| i.address.clone())
        .collect();
    let mut skipped = Vec::new();
    for r in registered {
        if seen.insert(r.instance.address.clone()) {
            merged.instances.push(r.instance.clone());
        } else {
            skipped.push(format!(
                "instance {:?} of service {:?}: address {} is already an instance of the service; left out",
                r.id,
                service.name.as_str(),
                r.instance.address
            ));
        }
    }
    (merged, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(address: &str, weight: Option<u32>, ttl: Option<&str>) -> RegistrationSpec {
        RegistrationSpec {
            address: address.into(),
            weight,
            labels: BTreeMap::new(),
            ttl: ttl.map(str::to_owned),
        }
    }

    #[test]
    fn registrations_are_validated_field_by_field() {
        // (service, id, body, Some((field, words of the error)) or None: valid)
        type Case<'a> = (
            &'a str,
            &'a str,
            RegistrationSpec,
            Option<(&'a str, &'a str)>,
        );
        let cases: &[Case<'_>] = &[
            ("lms", "i-1", spec("10.0.0.1:80", None, None), None),
            (
                "lms",
                "i-1",
                spec("10.0.0.1:80", Some(10_000), Some("300s")),
                None,
            ),
            (
                "lms",
                "10.0.0.1:80",
                spec("h.example:80", Some(1), Some("5s")),
                None,
            ),
            (
                "lms",
                "i",
                spec("10.0.0.1", None, None),
                Some(("address", "no port")),
            ),
            (
                "lms",
                "i",
                spec("a@b:1", None, None),
                Some(("address", "not host:port")),
            ),
            (
                "lms",
                "i",
                spec("10.0.0.1:80", Some(0), None),
                Some(("weight", "out of range")),
            ),
            (
                "lms",
                "i",
                spec("10.0.0.1:80", Some(10_001), None),
                Some(("weight", "out of range")),
            ),
            (
                "lms",
                "i",
                spec("10.0.0.1:80", None, Some("4s")),
                Some(("ttl", "out of range")),
            ),
            (
                "lms",
                "i",
                spec("10.0.0.1:80", None, Some("301s")),
                Some(("ttl", "out of range")),
            ),
            (
                "lms",
                "i",
                spec("10.0.0.1:80", None, Some("5500ms")),
                Some(("ttl", "whole number")),
            ),
            (
                "lms",
                "i",
                spec("10.0.0.1:80", None, Some("ten")),
                Some(("ttl", "not a duration")),
            ),
            (
                "LMS",
                "i",
                spec("10.0.0.1:80", None, None),
                Some(("service", "lowercase")),
            ),
            (
                "lms",
                "",
                spec("10.0.0.1:80", None, None),
                Some(("id", "must be 1-128")),
            ),
            (
                "lms",
                "a/b",
                spec("10.0.0.1:80", None, None),
                Some(("id", "must be 1-128")),
            ),
            (
                "lms",
                "-a",
                spec("10.0.0.1:80", None, None),
                Some(("id", "starting with")),
            ),
        ];
        for (service, id, body, want) in cases {
            let got = Registration::new(service, id, body);
            match (want, got) {
                (None, Ok(r)) => {
                    assert_eq!(r.id(), *id);
                    let again = Registration::new(service, id, &r.spec()).unwrap();
                    assert_eq!(again, r, "the stored form reads back the same");
                }
                (Some((field, words)), Err(e)) => {
                    assert_eq!(e.field(), *field, "{e}");
                    let text = e.to_string();
                    assert!(text.contains(words), "{text}");
                    assert!(
                        text.starts_with(&format!(
                            "instance {id:?} of service {service:?}: {field}: "
                        )),
                        "{text}"
                    );
                }
                (want, got) => panic!("{service}/{id} {body:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn bad_labels_are_named() {
        let mut body = spec("10.0.0.1:80", None, None);
        body.labels.insert("region".into(), "eu west".into());
        let e = Registration::new("lms", "i", &body).unwrap_err();
        assert_eq!(e.field(), "labels");
        assert!(e.to_string().contains("\"eu west\""), "{e}");
    }

    #[test]
    fn merge_appends_registered_instances_and_skips_taken_addresses() {
        let config = crate::Config::try_from(
            crate::spec::ConfigSpec::from_yaml(
                "services:\n  - { name: lms, instances: [{ address: \"10.0.0.1:80\" }] }\n",
            )
            .unwrap(),
        )
        .unwrap();
        let service = &config.services()[0];
        let a = Registration::new("lms", "a", &spec("10.0.0.2:80", Some(3), None)).unwrap();
        let dup = Registration::new("lms", "b", &spec("10.0.0.1:80", None, None)).unwrap();
        let (merged, skipped) = merge(service, [&a, &dup]);
        let addrs: Vec<String> = merged
            .instances()
            .iter()
            .map(|i| format!("{}/{}", i.address(), i.weight()))
            .collect();
        assert_eq!(addrs, ["10.0.0.1:80/1", "10.0.0.2:80/3"]);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("\"b\""), "{skipped:?}");
    }
}
